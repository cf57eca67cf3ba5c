/* fuzz_tokenizer.c - tokenizer.json loading, then encode and decode, on arbitrary bytes.
 *
 * Input: a tokenizer.json document, optionally followed by a NUL byte and a text to encode
 * (JSON text never contains a raw NUL, so the split is unambiguous); without one a fixed
 * mixed-script text is used. Any input must give QVLM_OK or an error code with a message,
 * never a crash, a hang or a leak; and whatever encodes must decode, in one call and through
 * the stream, to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"

static const char DEFAULT_TEXT[] = "Hello, w\xc3\xb6rld! <|im_start|>user\nI'm 123 \xf0\x9f\x98\x80"
                                   "\xe4\xb8\xad\xe6\x96\x87 caf\x65\xcc\x81  \t\n<think>x</think>";

static void check(int ok) {
    if (!ok) __builtin_trap();
}

/* Decode in one call and through a stream: both must agree. */
static void decode_both_ways(const qvlm_tokenizer *tok, const int32_t *ids, size_t n) {
    qvlm_error err;
    err.msg[0] = '\0';
    char *text;
    size_t n_text;
    if (qvlm_tokenizer_decode(tok, ids, n, &text, &n_text, &err) != QVLM_OK) {
        check(err.msg[0] != '\0');
        return;
    }
    qvlm_detok_stream s;
    qvlm_detok_stream_init(&s, tok);
    size_t k = 0;
    for (size_t i = 0; i <= n; i++) {
        const char *p;
        size_t np;
        qvlm_status rc = i < n ? qvlm_detok_stream_push(&s, ids[i], &p, &np, &err)
                               : qvlm_detok_stream_flush(&s, &p, &np, &err);
        check(rc == QVLM_OK && k + np <= n_text && memcmp(text + k, p, np) == 0);
        k += np;
    }
    check(k == n_text);
    qvlm_detok_stream_free(&s);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, '\0', size);
    size_t n_json = nul ? (size_t)(nul - data) : size;
    const char *text = nul ? (const char *)nul + 1 : DEFAULT_TEXT;
    size_t n_text = nul ? size - n_json - 1 : sizeof(DEFAULT_TEXT) - 1;

    qvlm_tokenizer *tok;
    qvlm_error err;
    err.msg[0] = '\0';
    if (qvlm_tokenizer_load_buffer((const char *)data, n_json, "fuzz.json", &tok, &err) != QVLM_OK) {
        check(err.msg[0] != '\0' && tok == NULL); /* an error without a message is a bug */
        return 0;
    }
    int32_t *ids;
    size_t n_ids;
    err.msg[0] = '\0';
    if (qvlm_tokenizer_encode(tok, text, n_text, &ids, &n_ids, &err) == QVLM_OK) {
        for (size_t i = 0; i < n_ids; i++) check(qvlm_tokenizer_token(tok, ids[i]) != NULL);
        decode_both_ways(tok, ids, n_ids);
        free(ids);
    } else {
        check(err.msg[0] != '\0');
    }
    /* Ids from the input bytes: most are out of range and must be refused cleanly. */
    int32_t raw[16];
    size_t n_raw = QVLM_MIN(n_text / 4, sizeof(raw) / sizeof(raw[0]));
    memcpy(raw, text, n_raw * 4);
    for (size_t i = 0; i < n_raw; i++) raw[i] %= qvlm_tokenizer_vocab_size(tok) + 2;
    decode_both_ways(tok, raw, n_raw);
    qvlm_tokenizer_destroy(tok);
    return 0;
}
