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

/* ---- normalizer -------------------------------------------------------------------------- */

/* NFC leaves text below U+0300 alone: no such character has a decomposition that NFC keeps
 * apart, and every character that composes with a preceding one is U+0300 or above. Lead
 * bytes 0xCC and up start exactly the characters from U+0300. */
static bool nfc_inert(int opts, const uint8_t *s, size_t n) {
    if (opts != (UTF8PROC_STABLE | UTF8PROC_COMPOSE)) return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 0xCC) return false;
    return true;
}

qvlm_status qvlm_tok_normalize(const qvlm_tokenizer *tok, const uint8_t *s, size_t n,
                               uint8_t **out, size_t *out_n, bool *owned, qvlm_error *err) {
    *out = (uint8_t *)s;
    *out_n = n;
    *owned = false;
    for (int k = 0; k < tok->n_norm; k++) {
        if (*out_n == 0 || nfc_inert(tok->norm_opts[k], *out, *out_n)) continue;
        if (*out_n > (size_t)PTRDIFF_MAX / 8) /* utf8proc works in 4-byte code points */
            return qvlm_errorf(err, QVLM_E_LIMIT, "encode: %zu bytes is too long to normalize", *out_n);
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t r = utf8proc_map(*out, (utf8proc_ssize_t)*out_n, &dst,
                                          (utf8proc_option_t)tok->norm_opts[k]);
        if (r < 0) {
            if (*owned) free(*out);
            *owned = false;
            return qvlm_errorf(err, r == UTF8PROC_ERROR_NOMEM ? QVLM_E_NOMEM : QVLM_E_INVALID,
                               "encode: normalizer failed: %s", utf8proc_errmsg(r));
        }
        if (*owned) free(*out);
        *out = dst;
        *out_n = (size_t)r;
        *owned = true;
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
