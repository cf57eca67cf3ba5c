/* tokenizer_test.c - the tokenizer against Hugging Face `tokenizers` references.
 *
 * Expected ids come from the Python library (tests/fixtures/<model>/tokenizer_reference.json,
 * made by gen_tokenizer.py) or, for the small hand-built tokenizers below, from HF's own unit
 * tests and the algorithm in its source (added_vocabulary.rs, bpe/model.rs, byte_level.rs).
 * The real Qwen3 tokenizer.json is fetched by scripts/fetch-real-tokenizer.sh (a CTest
 * fixture); without it the real-vocabulary tests fail, they do not skip.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#include "core/fileio.h"
#include "model/tokenizer.h"
#include "qtest.h"

#define REAL_TOKENIZER QVLM_FIXTURES "/real-tokenizer/tokenizer.json"

/* ---- helpers -------------------------------------------------------------------------------- */

static json_t *load_json(const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, JSON_ALLOW_NUL, &je);
    if (!j) fprintf(stderr, "  %s: %s (line %d)\n", path, je.text, je.line);
    return j;
}

/* Print ids next to the expected ones, for a failing case. */
static void show_ids(const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "    %s (%zu):", what, n);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", (int)ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Encode text and compare with the JSON array `want`; on mismatch print both. */
static int ids_match(const qvlm_tokenizer *tok, const char *text, size_t n, const json_t *want,
                     const char *label) {
    qvlm_error err = {0};
    int32_t *ids;
    size_t n_ids;
    if (qvlm_tokenizer_encode(tok, text, n, &ids, &n_ids, &err) != QVLM_OK) {
        fprintf(stderr, "  %s: encode failed: %s\n", label, err.msg);
        return 0;
    }
    int ok = n_ids == json_array_size(want);
    for (size_t i = 0; ok && i < n_ids; i++) ok = ids[i] == json_integer_value(json_array_get(want, i));
    if (!ok) {
        int32_t w[4096];
        size_t nw = json_array_size(want) < 4096 ? json_array_size(want) : 4096;
        for (size_t i = 0; i < nw; i++) w[i] = (int32_t)json_integer_value(json_array_get(want, i));
        fprintf(stderr, "  %s: ids differ for \"%.80s\"\n", label, text);
        show_ids("got", ids, n_ids);
        show_ids("want", w, nw);
    }
    free(ids);
    return ok;
}

/* Decode ids in one call and token by token through a stream; both must give `want`. */
static int decode_matches(const qvlm_tokenizer *tok, const json_t *ids_json, const char *want,
                          size_t want_n, const char *label) {
    size_t n = json_array_size(ids_json);
    int32_t *ids = malloc((n + 1) * sizeof(*ids));
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(ids_json, i));
    qvlm_error err = {0};
    char *text;
    size_t n_text;
    int ok = qvlm_tokenizer_decode(tok, ids, n, &text, &n_text, &err) == QVLM_OK;
    if (!ok) fprintf(stderr, "  %s: decode failed: %s\n", label, err.msg);
    if (ok && (n_text != want_n || memcmp(text, want, want_n) != 0)) {
        fprintf(stderr, "  %s: decode gave \"%.80s\", want \"%.80s\"\n", label, text, want);
        ok = 0;
    }
    if (ok) free(text);
    /* The stream must give the same bytes. */
    qvlm_detok_stream s;
    qvlm_detok_stream_init(&s, tok);
    char *acc = malloc(3 * want_n + 64);
    size_t k = 0;
    for (size_t i = 0; ok && i < n; i++) {
        const char *p;
        size_t np;
        ok = qvlm_detok_stream_push(&s, ids[i], &p, &np, &err) == QVLM_OK && k + np <= 3 * want_n + 64;
        if (ok) memcpy(acc + k, p, np), k += np;
    }
    const char *p;
    size_t np;
    if (ok && qvlm_detok_stream_flush(&s, &p, &np, &err) == QVLM_OK && k + np <= 3 * want_n + 64)
        memcpy(acc + k, p, np), k += np;
    if (ok && (k != want_n || memcmp(acc, want, want_n) != 0)) {
        fprintf(stderr, "  %s: stream gave \"%.*s\", want \"%.80s\"\n", label, (int)(k < 80 ? k : 80), acc, want);
        ok = 0;
    }
    qvlm_detok_stream_free(&s);
    free(acc);
    free(ids);
    return ok;
}

/* Run every case of ref[key] through tok; returns the number of failures. */
static int run_cases(const qvlm_tokenizer *tok, const json_t *ref, const char *key, const char *label) {
    const json_t *cases = json_object_get(ref, key);
    int failures = 0;
    for (size_t i = 0; i < json_array_size(cases); i++) {
        const json_t *c = json_array_get(cases, i);
        const json_t *text = json_object_get(c, "text"), *dec = json_object_get(c, "decoded");
        char lab[96];
        snprintf(lab, sizeof(lab), "%s %s[%zu]", label, key, i);
        if (!ids_match(tok, json_string_value(text), json_string_length(text), json_object_get(c, "ids"), lab) ||
            !decode_matches(tok, json_object_get(c, "ids"), json_string_value(dec), json_string_length(dec), lab))
            failures++;
    }
    return failures;
}

static __attribute__((unused)) qvlm_tokenizer *load_text(const char *json) {
    qvlm_error err = {0};
    qvlm_tokenizer *tok = NULL;
    if (qvlm_tokenizer_load_buffer(json, strlen(json), "test.json", &tok, &err) != QVLM_OK)
        fprintf(stderr, "  load failed: %s\n", err.msg);
    return tok;
}

/* ---- the Hugging Face references -------------------------------------------------------------- */

static void check_fixture(const char *model) {
    char path[512];
    snprintf(path, sizeof(path), "%s/%s/tokenizer_reference.json", QVLM_FIXTURES, model);
    json_t *ref = load_json(path);
    ASSERT_TRUE(ref != NULL);
    ASSERT_TRUE(json_array_size(json_object_get(ref, "cases")) >= 70);
    snprintf(path, sizeof(path), "%s/%s/model/tokenizer.json", QVLM_FIXTURES, model);
    qvlm_error err = {0};
    qvlm_tokenizer *tok;
    int rc = qvlm_tokenizer_load(path, &tok, &err);
    if (rc) json_decref(ref);
    ASSERT_OK(rc, &err);
    int failures = run_cases(tok, ref, "cases", model);
    /* The specials sit where the fixture says. */
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(ref, "specials"), k, v) {
        if (qvlm_tokenizer_find(tok, k) != json_integer_value(v)) {
            fprintf(stderr, "  %s: find(%s) = %d, want %lld\n", model, k, qvlm_tokenizer_find(tok, k),
                    (long long)json_integer_value(v));
            failures++;
        }
    }
    qvlm_tokenizer_destroy(tok);
    json_decref(ref);
    ASSERT_EQ_INT(failures, 0);
}

static void test_tiny_dense_cases(void) { check_fixture("tiny-dense"); }
static void test_tiny_moe_cases(void) { check_fixture("tiny-moe"); }

static void check_real(const char *model) {
    char path[512];
    snprintf(path, sizeof(path), "%s/%s/tokenizer_reference.json", QVLM_FIXTURES, model);
    json_t *ref = load_json(path);
    ASSERT_TRUE(ref != NULL);
    ASSERT_TRUE(json_array_size(json_object_get(ref, "real_cases")) >= 70);
    qvlm_error err = {0};
    qvlm_tokenizer *tok;
    int rc = qvlm_tokenizer_load(REAL_TOKENIZER, &tok, &err);
    if (rc) json_decref(ref);
    ASSERT_OK(rc, &err); /* missing file: run scripts/fetch-real-tokenizer.sh */
    int failures = run_cases(tok, ref, "real_cases", model);
    qvlm_tokenizer_destroy(tok);
    json_decref(ref);
    ASSERT_EQ_INT(failures, 0);
}

static void test_real_cases_dense(void) { check_real("tiny-dense"); }
static void test_real_cases_moe(void) { check_real("tiny-moe"); }

int main(void) {
    RUN(test_tiny_dense_cases);
    RUN(test_tiny_moe_cases);
    RUN(test_real_cases_dense);
    RUN(test_real_cases_moe);
    return qtest_done();
}
