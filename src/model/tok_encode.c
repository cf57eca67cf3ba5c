/* tok_encode.c - text -> ids, in the order HF Tokenizer.encode(add_special_tokens=False) runs
 * its steps (qwen35-arch.md §1.5):
 *
 *   raw text --(added tokens, normalized=false)--> pieces
 *     piece --normalizer--> --(added tokens, normalized=true)--> pieces
 *       piece --Split regex steps--> --ByteLevel--> words --BPE--> ids
 *
 * Each call has its own scratch (match data, split lists, BPE buffers), so calls on one
 * tokenizer never share mutable state except the locked word cache.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "model/tok_internal.h"

/* ---- normalizer --------------------------------------------------------------------------
 * NFC through utf8proc costs a decomposition and a recomposition of every character, yet most
 * text (CJK, Cyrillic, ASCII, emoji...) comes out unchanged. A character is "inert" when NFC
 * provably leaves it alone whatever its neighbours: canonical combining class 0 (nothing is
 * reordered across it), NFC maps it to itself, and it is never the second half of a canonical
 * composition (it appears past position 0 in no character's canonical decomposition). Then NFC
 * of a string equals NFC of the pieces obtained by cutting before any inert character, so only
 * the stretches around non-inert characters (from the inert character before them, which they
 * may compose with, up to the next inert one) go through utf8proc. */

static bool bit_get(const uint8_t *bits, uint32_t i) { return bits[i / 8] >> (i % 8) & 1; }
static void bit_clear(uint8_t *bits, uint32_t i) { bits[i / 8] &= (uint8_t)~(1u << (i % 8)); }

qvlm_status qvlm_tok_nfc_table_build(qvlm_tokenizer *tok, qvlm_error *err) {
    uint8_t *bits = malloc(TOK_NFC_TABLE_CPS / 8);
    if (!bits) return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", tok->name);
    memset(bits, 0xFF, TOK_NFC_TABLE_CPS / 8);
    for (uint32_t cp = 0; cp < TOK_NFC_TABLE_CPS; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF) {
            bit_clear(bits, cp);
            continue;
        }
        if (utf8proc_get_property((utf8proc_int32_t)cp)->combining_class != 0) bit_clear(bits, cp);
        utf8proc_int32_t d[32];
        utf8proc_ssize_t n = utf8proc_decompose_char((utf8proc_int32_t)cp, d, 32, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE, NULL);
        if (n == 1 && d[0] == (utf8proc_int32_t)cp) continue; /* no canonical decomposition */
        if (n < 1 || n > 32) {
            bit_clear(bits, cp);
            continue;
        }
        for (utf8proc_ssize_t k = 1; k < n; k++)
            if ((uint32_t)d[k] < TOK_NFC_TABLE_CPS) bit_clear(bits, (uint32_t)d[k]);
        if (utf8proc_normalize_utf32(d, n, TOK_UTF8PROC_NFC) != 1 || d[0] != (utf8proc_int32_t)cp)
            bit_clear(bits, cp);
    }
    tok->nfc_inert = bits;
    return QVLM_OK;
}

/* Length of the character at s[0] (valid UTF-8) and whether it is inert. */
static size_t char_at(const uint8_t *bits, const uint8_t *s, bool *inert) {
    if (s[0] < 0x80) return *inert = true, 1; /* ASCII is inert (and the common case) */
    size_t len = s[0] < 0xE0 ? 2 : s[0] < 0xF0 ? 3 : 4;
    uint32_t cp = s[0] & (0x7Fu >> len);
    for (size_t k = 1; k < len; k++) cp = (cp << 6) | (s[k] & 0x3F);
    *inert = cp < TOK_NFC_TABLE_CPS && bit_get(bits, cp);
    return len;
}

typedef struct norm_buf {
    uint8_t *p;
    size_t n, cap;
} norm_buf;

static bool nb_add(norm_buf *b, const void *s, size_t n) {
    if (n == 0) return true;
    if (b->cap - b->n < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->n < n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) return false;
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return true;
}

static qvlm_status map_utf8proc(const uint8_t *s, size_t n, int opts, uint8_t **out, size_t *out_n,
                                qvlm_error *err) {
    if (n > (size_t)PTRDIFF_MAX / 8) /* utf8proc works in 4-byte code points */
        return qvlm_errorf(err, QVLM_E_LIMIT, "encode: %zu bytes is too long to normalize", n);
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map(s, (utf8proc_ssize_t)n, &dst, (utf8proc_option_t)opts);
    if (r < 0)
        return qvlm_errorf(err, r == UTF8PROC_ERROR_NOMEM ? QVLM_E_NOMEM : QVLM_E_INVALID,
                           "encode: normalizer failed: %s", utf8proc_errmsg(r));
    *out = dst;
    *out_n = (size_t)r;
    return QVLM_OK;
}

/* NFC of s[0..n), running utf8proc only where a non-inert character is. *out is NULL when
 * the text is unchanged. */
static qvlm_status nfc_runs(const uint8_t *bits, const uint8_t *s, size_t n, uint8_t **out,
                            size_t *out_n, qvlm_error *err) {
    norm_buf b = {0};
    size_t done = 0, prev = 0; /* text before `done` is in b; prev: start of the last character */
    qvlm_status rc = QVLM_OK;
    for (size_t p = 0; p < n && !rc;) {
        bool inert;
        size_t len = char_at(bits, s + p, &inert);
        if (inert) {
            prev = p;
            p += len;
            continue;
        }
        size_t start = p > done ? prev : p; /* the starter it may compose with */
        size_t end = p + len;
        while (end < n && (len = char_at(bits, s + end, &inert), !inert)) end += len;
        uint8_t *seg = NULL;
        size_t n_seg = 0;
        rc = map_utf8proc(s + start, end - start, TOK_UTF8PROC_NFC, &seg, &n_seg, err);
        if (!rc && (!nb_add(&b, s + done, start - done) || !nb_add(&b, seg, n_seg)))
            rc = qvlm_errorf(err, QVLM_E_NOMEM, "encode: out of memory normalizing");
        if (!rc) free(seg);
        done = p = end;
    }
    if (!rc && b.p && !nb_add(&b, s + done, n - done))
        rc = qvlm_errorf(err, QVLM_E_NOMEM, "encode: out of memory normalizing");
    if (rc) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    *out_n = b.n;
    return QVLM_OK;
}

qvlm_status qvlm_tok_normalize(const qvlm_tokenizer *tok, const uint8_t *s, size_t n,
                               uint8_t **out, size_t *out_n, bool *owned, qvlm_error *err) {
    *out = (uint8_t *)s;
    *out_n = n;
    *owned = false;
    for (int k = 0; k < tok->n_norm; k++) {
        if (*out_n == 0) break;
        uint8_t *next = NULL;
        size_t n_next = 0;
        qvlm_status rc;
        if (tok->norm_opts[k] == TOK_UTF8PROC_NFC && tok->nfc_inert)
            rc = nfc_runs(tok->nfc_inert, *out, *out_n, &next, &n_next, err);
        else
            rc = map_utf8proc(*out, *out_n, tok->norm_opts[k], &next, &n_next, err);
        if (rc || next) {
            if (*owned) free(*out);
            *owned = false;
        }
        if (rc) return rc;
        if (next) *out = next, *out_n = n_next, *owned = true;
    }
    return QVLM_OK;
}

/* ---- pipeline ---------------------------------------------------------------------------- */

typedef struct enc_ctx {
    const qvlm_tokenizer *tok;
    tok_ids ids;
    tok_bpe_scratch bpe;
    pcre2_match_data *md;
    tok_spans spans[TOK_MAX_STAGES]; /* one per pre-tokenizer step: steps nest */
    tok_segs segs_raw, segs_norm;
    uint8_t *prefixed; /* ByteLevel add_prefix_space: " " + piece */
    size_t cap_prefixed;
    qvlm_error *err;
} enc_ctx;

static void ctx_free(enc_ctx *c) {
    free(c->ids.v);
    qvlm_tok_bpe_scratch_free(&c->bpe);
    pcre2_match_data_free(c->md);
    for (int k = 0; k < TOK_MAX_STAGES; k++) free(c->spans[k].v);
    free(c->segs_raw.v);
    free(c->segs_norm.v);
    free(c->prefixed);
}

/* " " + s, in the context's buffer (only the last step, ByteLevel, uses it). */
static qvlm_status prefix_space(enc_ctx *c, const uint8_t **s, size_t *n) {
    if (*n + 1 > c->cap_prefixed) {
        uint8_t *p = realloc(c->prefixed, *n + 1);
        if (!p) return qvlm_errorf(c->err, QVLM_E_NOMEM, "encode: out of memory");
        c->prefixed = p;
        c->cap_prefixed = *n + 1;
    }
    c->prefixed[0] = ' ';
    memcpy(c->prefixed + 1, *s, *n);
    *s = c->prefixed;
    (*n)++;
    return QVLM_OK;
}

/* Pre-tokenizer step k on a non-empty piece; past the last step, BPE. */
static qvlm_status run_stage(enc_ctx *c, int k, const uint8_t *s, size_t n) {
    const qvlm_tokenizer *tok = c->tok;
    if (k == tok->n_stages) return qvlm_tok_bpe_word(tok, &c->bpe, s, n, &c->ids, c->err);
    const tok_stage *st = &tok->stages[k];
    qvlm_status rc = QVLM_OK;
    if (st->byte_level && st->add_prefix_space && s[0] != ' ' && (rc = prefix_space(c, &s, &n)))
        return rc;
    if (!st->re) return run_stage(c, k + 1, s, n);
    tok_spans *sp = &c->spans[k];
    rc = qvlm_tok_regex_split(st, tok->mctx, c->md, s, n, sp, c->err);
    for (size_t i = 0; i < sp->n && !rc; i++)
        rc = run_stage(c, k + 1, s + sp->v[i].start, sp->v[i].end - sp->v[i].start);
    return rc;
}

/* A piece between raw-matched added tokens: normalise, match the normalised added tokens,
 * pre-tokenize and BPE the rest. */
static qvlm_status encode_piece(enc_ctx *c, const uint8_t *s, size_t n) {
    uint8_t *t;
    size_t tn;
    bool owned;
    qvlm_status rc = qvlm_tok_normalize(c->tok, s, n, &t, &tn, &owned, c->err);
    if (rc) return rc;
    c->segs_norm.n = 0;
    rc = qvlm_tok_added_split(c->tok, &c->tok->norm_trie, c->md, t, tn, &c->segs_norm, c->err);
    for (size_t i = 0; i < c->segs_norm.n && !rc; i++) {
        const tok_seg *g = &c->segs_norm.v[i];
        rc = g->id >= 0 ? qvlm_tok_ids_push(&c->ids, g->id, c->err)
                        : run_stage(c, 0, t + g->start, g->end - g->start);
    }
    if (owned) free(t);
    return rc;
}

qvlm_status qvlm_tokenizer_encode(const qvlm_tokenizer *tok, const char *text, size_t n_bytes,
                                  int32_t **ids, size_t *n_ids, qvlm_error *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && n_bytes) return qvlm_errorf(err, QVLM_E_INVALID, "encode: text is NULL");
    const uint8_t *s = (const uint8_t *)text;
    size_t bad = qvlm_tok_utf8_valid_prefix(s, n_bytes);
    if (bad < n_bytes)
        return qvlm_errorf(err, QVLM_E_INVALID, "encode: text is not valid UTF-8 at byte %zu (0x%02X)",
                           bad, s[bad]);
    enc_ctx c = {.tok = tok, .err = err};
    qvlm_status rc = QVLM_OK;
    c.md = pcre2_match_data_create(1, NULL);
    if (!c.md) {
        rc = qvlm_errorf(err, QVLM_E_NOMEM, "encode: out of memory");
        goto out_free;
    }
    rc = qvlm_tok_added_split(tok, &tok->raw_trie, c.md, s, n_bytes, &c.segs_raw, err);
    for (size_t i = 0; i < c.segs_raw.n && !rc; i++) {
        const tok_seg *g = &c.segs_raw.v[i];
        rc = g->id >= 0 ? qvlm_tok_ids_push(&c.ids, g->id, err)
                        : encode_piece(&c, s + g->start, g->end - g->start);
    }
    if (rc == QVLM_OK && c.ids.n > 0) {
        int32_t *v = realloc(c.ids.v, c.ids.n * sizeof(*v));
        *ids = v ? v : c.ids.v;
        *n_ids = c.ids.n;
        c.ids.v = NULL;
    }
out_free:
    ctx_free(&c);
    return rc;
}
