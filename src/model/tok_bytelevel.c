/* tok_bytelevel.c - the GPT-2 byte alphabet, UTF-8 checking, lossy decoding and the streaming
 * decoder (qwen35-arch.md §1.5: byte-level BPE).
 *
 * Byte-level BPE never sees raw bytes: each byte b is written as one printable code point
 * (GPT-2's bytes_to_unicode): printable Latin-1 bytes stand for themselves, the other 68
 * (controls, space, 0x7F-0xA0, soft hyphen) become U+0100.. in byte order. So ' ' is 'Ġ'.
 *
 * Decoding reverses that per token (HF's ByteLevel decoder: a token with any character outside
 * the alphabet contributes its raw UTF-8 instead), concatenates, and repairs ill-formed UTF-8
 * the way Rust's String::from_utf8_lossy does: each maximal ill-formed subpart (Unicode §3.9)
 * becomes one U+FFFD. The streaming decoder applies the same rule incrementally and holds back
 * only a character that is valid so far but incomplete, so its output equals the batch one.
 */
#include <stdlib.h>
#include <string.h>

#include "model/tok_internal.h"

/* ---- byte alphabet ------------------------------------------------------------------------ */

static bool byte_is_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

uint32_t qvlm_tok_byte_char(uint8_t b) {
    if (byte_is_printable(b)) return b;
    /* The n-th non-printable byte (in byte order) maps to U+0100 + n. */
    if (b <= 0x20) return 0x100u + b;                /* 0x00..0x20: n = 0..32 */
    if (b >= 0x7F && b <= 0xA0) return 0x100u + 33 + (b - 0x7Fu); /* n = 33..66 */
    return 0x100u + 67;                              /* 0xAD */
}

int qvlm_tok_char_byte(uint32_t cp) {
    if (cp < 0x100) return byte_is_printable(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68) return -1;
    unsigned n = cp - 0x100;
    if (n <= 32) return (int)n;
    if (n <= 66) return (int)(0x7F + (n - 33));
    return 0xAD;
}

/* ---- UTF-8 ------------------------------------------------------------------------------- */

size_t qvlm_tok_utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

int qvlm_tok_utf8_check(const uint8_t *s, size_t n) {
    if (n == 0) return 0;
    uint8_t b = s[0];
    if (b < 0x80) return 1;
    /* Table 3-7 of the Unicode standard: the second byte's range depends on the lead byte,
     * which excludes overlongs (E0, F0), surrogates (ED) and code points past U+10FFFF (F4). */
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) need = 1;
    else if (b == 0xE0) need = 2, lo = 0xA0;
    else if (b == 0xED) need = 2, hi = 0x9F;
    else if (b >= 0xE1 && b <= 0xEF) need = 2;
    else if (b == 0xF0) need = 3, lo = 0x90;
    else if (b >= 0xF1 && b <= 0xF3) need = 3;
    else if (b == 0xF4) need = 3, hi = 0x8F;
    else return -1;
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n) return 0;
        if (s[i] < lo || s[i] > hi) return -i;
        lo = 0x80, hi = 0xBF;
    }
    return need + 1;
}

size_t qvlm_tok_utf8_valid_prefix(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int r = qvlm_tok_utf8_check(s + i, n - i);
        if (r <= 0) return i;
        i += (size_t)r;
    }
    return n;
}

size_t qvlm_tok_utf8_lossy(const uint8_t *in, size_t n, bool final, char *out, size_t *n_out) {
    static const char fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    size_t i = 0, o = 0;
    while (i < n) {
        if (in[i] < 0x80) {
            out[o++] = (char)in[i++];
            continue;
        }
        int r = qvlm_tok_utf8_check(in + i, n - i);
        if (r > 0) {
            memcpy(out + o, in + i, (size_t)r);
            o += (size_t)r;
            i += (size_t)r;
            continue;
        }
        if (r == 0 && !final) break; /* may still be completed by the next token */
        memcpy(out + o, fffd, 3);
        o += 3;
        i += r < 0 ? (size_t)-r : n - i;
    }
    *n_out = o;
    return i;
}

size_t qvlm_tok_bytelevel_decode(const char *raw, size_t len, uint8_t *out) {
    const uint8_t *s = (const uint8_t *)raw;
    size_t i = 0, k = 0;
    while (i < len) {
        int r = qvlm_tok_utf8_check(s + i, len - i);
        if (r <= 0) break;
        uint32_t cp = s[i];
        if (r > 1) {
            cp &= 0x7Fu >> r;
            for (int j = 1; j < r; j++) cp = (cp << 6) | (s[i + (size_t)j] & 0x3F);
        }
        int b = qvlm_tok_char_byte(cp);
        if (b < 0) break;
        out[k++] = (uint8_t)b;
        i += (size_t)r;
    }
    if (i == len) return k;
    /* HF: a token with a character outside the alphabet is passed through as its UTF-8. */
    memcpy(out, raw, len);
    return len;
}

/* ---- decoding ---------------------------------------------------------------------------- */

static bool id_ok(const qvlm_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_ids && (tok->entries[id].flags & TOK_F_PRESENT);
}

static qvlm_status bad_id(const qvlm_tokenizer *tok, qvlm_error *err, const char *what, size_t idx,
                          int32_t id) {
    return qvlm_errorf(err, QVLM_E_INVALID, "%s: %s[%zu] = %d is not a token id of %s (0..%d)",
                       "decode", what, idx, (int)id, tok->name, (int)tok->n_ids - 1);
}

qvlm_status qvlm_tokenizer_decode(const qvlm_tokenizer *tok, const int32_t *ids, size_t n_ids,
                                  char **text, size_t *n_bytes, qvlm_error *err) {
    *text = NULL;
    if (n_bytes) *n_bytes = 0;
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (!id_ok(tok, ids[i])) return bad_id(tok, err, "ids", i, ids[i]);
        total += tok->entries[ids[i]].dec_len; /* each <= the file size: cannot overflow */
    }
    size_t out_cap;
    if (qvlm_mul_overflow(total, 3, &out_cap) || qvlm_add_overflow(out_cap, 1, &out_cap))
        return qvlm_errorf(err, QVLM_E_LIMIT, "decode: %zu ids decode to too many bytes", n_ids);
    uint8_t *bytes = malloc(total ? total : 1);
    char *out = malloc(out_cap);
    if (!bytes || !out) {
        free(bytes);
        free(out);
        return qvlm_errorf(err, QVLM_E_NOMEM, "decode: cannot allocate %zu bytes", out_cap);
    }
    size_t k = 0;
    for (size_t i = 0; i < n_ids; i++) {
        const tok_entry *e = &tok->entries[ids[i]];
        memcpy(bytes + k, tok->dec + e->dec_off, e->dec_len);
        k += e->dec_len;
    }
    size_t n_out;
    qvlm_tok_utf8_lossy(bytes, total, true, out, &n_out);
    free(bytes);
    out[n_out] = '\0';
    char *shrunk = realloc(out, n_out + 1);
    *text = shrunk ? shrunk : out;
    if (n_bytes) *n_bytes = n_out;
    return QVLM_OK;
}

/* ---- streaming decode -------------------------------------------------------------------- */

void qvlm_detok_stream_init(qvlm_detok_stream *s, const qvlm_tokenizer *tok) {
    memset(s, 0, sizeof(*s));
    s->tok = tok;
}

void qvlm_detok_stream_free(qvlm_detok_stream *s) {
    free(s->buf);
    s->buf = NULL;
    s->cap_bytes = 0;
    s->n_pending = 0;
}

/* Make room for n input bytes: the input is staged after 3n bytes of output room. */
static qvlm_status stream_reserve(qvlm_detok_stream *s, size_t n, qvlm_error *err) {
    size_t need;
    if (qvlm_mul_overflow(n, 4, &need) || qvlm_add_overflow(need, 1, &need))
        return qvlm_errorf(err, QVLM_E_LIMIT, "detok stream: token too long");
    if (need <= s->cap_bytes) return QVLM_OK;
    char *p = realloc(s->buf, need);
    if (!p) return qvlm_errorf(err, QVLM_E_NOMEM, "detok stream: cannot allocate %zu bytes", need);
    s->buf = p;
    s->cap_bytes = need;
    return QVLM_OK;
}

/* Run pending + bytes[0..n) through the lossy converter; keep an unfinished tail pending. */
static qvlm_status stream_feed(qvlm_detok_stream *s, const uint8_t *bytes, size_t n, bool final,
                               const char **out, size_t *n_out, qvlm_error *err) {
    size_t total = s->n_pending + n;
    qvlm_status rc = stream_reserve(s, total, err);
    if (rc) return rc;
    uint8_t *in = (uint8_t *)s->buf + 3 * total;
    memcpy(in, s->pending, s->n_pending);
    if (n) memcpy(in + s->n_pending, bytes, n);
    size_t used = qvlm_tok_utf8_lossy(in, total, final, s->buf, n_out);
    s->n_pending = total - used; /* an incomplete character: at most 3 bytes */
    memmove(s->pending, in + used, s->n_pending);
    s->buf[*n_out] = '\0';
    *out = s->buf;
    return QVLM_OK;
}

qvlm_status qvlm_detok_stream_push(qvlm_detok_stream *s, int32_t id, const char **out,
                                   size_t *n_out, qvlm_error *err) {
    *out = "";
    *n_out = 0;
    if (!id_ok(s->tok, id))
        return qvlm_errorf(err, QVLM_E_INVALID, "detok stream: id %d is not a token id of %s (0..%d)",
                           (int)id, s->tok->name, (int)s->tok->n_ids - 1);
    const tok_entry *e = &s->tok->entries[id];
    return stream_feed(s, s->tok->dec + e->dec_off, e->dec_len, false, out, n_out, err);
}

qvlm_status qvlm_detok_stream_flush(qvlm_detok_stream *s, const char **out, size_t *n_out,
                                    qvlm_error *err) {
    *out = "";
    *n_out = 0;
    return stream_feed(s, NULL, 0, true, out, n_out, err);
}
