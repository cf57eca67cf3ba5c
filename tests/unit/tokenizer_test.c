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
#include <utf8proc.h>

#include "core/fileio.h"
#include "model/tok_internal.h"
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

/* ---- small hand-built tokenizers -------------------------------------------------------------
 * byte_tokenizer(): vocabulary = the 256 byte-level characters, id b for byte b, no merges,
 * NFC, ByteLevel without its regex. BPE of a word is then its bytes, so expected ids can be
 * written down by hand. Tests add tokens, merges and added tokens with the helpers below. */

/* GPT-2 bytes_to_unicode, written out independently of the code under test. */
static unsigned byte_char(unsigned b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    unsigned n = 0;
    for (unsigned x = 0; x < b; x++)
        if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE)) n++;
    return 256 + n;
}

static void put_utf8(unsigned cp, char *out) {
    if (cp < 0x80) out[0] = (char)cp, out[1] = 0;
    else out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
}

static json_t *byte_tokenizer(void) {
    json_t *vocab = json_object();
    for (unsigned b = 0; b < 256; b++) {
        char c[4];
        put_utf8(byte_char(b), c);
        json_object_set_new(vocab, c, json_integer(b));
    }
    return json_pack("{s:s, s:n, s:n, s:[], s:{s:s}, s:{s:s, s:b, s:b}, s:n, s:{s:s}, s:{s:s, s:o, s:[]}}",
                     "version", "1.0", "truncation", "padding", "added_tokens", "normalizer", "type", "NFC",
                     "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0, "use_regex", 0,
                     "post_processor", "decoder", "type", "ByteLevel", "model", "type", "BPE", "vocab", vocab,
                     "merges");
}

static json_t *model_of(json_t *root) { return json_object_get(root, "model"); }

/* Add a model token (raw byte-level string); returns its id. */
static int add_vocab(json_t *root, const char *token) {
    json_t *vocab = json_object_get(model_of(root), "vocab");
    int id = (int)json_object_size(vocab);
    json_object_set_new(vocab, token, json_integer(id));
    return id;
}

static void add_merge(json_t *root, const char *a, const char *b) {
    json_array_append_new(json_object_get(model_of(root), "merges"), json_pack("[s,s]", a, b));
}

/* Add an added token with HF's id rule (after the vocabulary, in order); returns its id. */
static int add_added(json_t *root, const char *content, int special, int normalized, int lstrip,
                     int rstrip, int single_word) {
    json_t *list = json_object_get(root, "added_tokens");
    int id = (int)(json_object_size(json_object_get(model_of(root), "vocab")) + json_array_size(list));
    json_array_append_new(list, json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", content,
                                          "special", special, "normalized", normalized, "lstrip", lstrip,
                                          "rstrip", rstrip, "single_word", single_word));
    return id;
}

static void set_json(json_t *root, const char *key, const char *json_text) {
    json_error_t je;
    json_t *v = json_loads(json_text, JSON_DECODE_ANY, &je);
    if (!v) fprintf(stderr, "  bad test JSON %s: %s\n", json_text, je.text);
    json_object_set_new(root, key, v);
}

/* Load the tokenizer described by root (consumed); NULL with the message in *err on failure. */
static qvlm_tokenizer *load_json_tok(json_t *root, qvlm_error *err) {
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    qvlm_tokenizer *tok = NULL;
    if (qvlm_tokenizer_load_buffer(text, strlen(text), "test.json", &tok, err) != QVLM_OK) tok = NULL;
    free(text);
    return tok;
}

/* Encode text and compare with want[0..n_want); prints both on mismatch. */
static int encodes_to(const qvlm_tokenizer *tok, const char *text, const int32_t *want, size_t n_want) {
    qvlm_error err = {0};
    int32_t *ids;
    size_t n;
    if (qvlm_tokenizer_encode(tok, text, strlen(text), &ids, &n, &err) != QVLM_OK) {
        fprintf(stderr, "  encode(\"%s\") failed: %s\n", text, err.msg);
        return 0;
    }
    int ok = n == n_want && (n == 0 || memcmp(ids, want, n * sizeof(*ids)) == 0);
    if (!ok) {
        fprintf(stderr, "  encode(\"%s\"):\n", text);
        show_ids("got", ids, n);
        show_ids("want", want, n_want);
    }
    free(ids);
    return ok;
}

/* Expected ids: the bytes of s as byte ids, then -1-terminated extra ids appended by callers. */
typedef struct idv {
    int32_t v[512];
    size_t n;
} idv;
static void bytes_of(idv *x, const char *s) {
    for (; *s; s++) x->v[x->n++] = (uint8_t)*s;
}
static void id_of(idv *x, int id) { x->v[x->n++] = id; }
#define ENCODES_TO(tok, text, x) ASSERT_TRUE(encodes_to((tok), (text), (x).v, (x).n))

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


/* ---- BPE merges ------------------------------------------------------------------------------ */

/* "abc" with merges b+c (rank 0), a+b (1), ab+c (2): b+c goes first, and nothing joins a+bc. */
static json_t *abc_tokenizer(int *ab, int *bc, int *abc) {
    json_t *root = byte_tokenizer();
    *ab = add_vocab(root, "ab");
    *bc = add_vocab(root, "bc");
    *abc = add_vocab(root, "abc");
    return root;
}

static void test_merges_both_forms(void) {
    int ab, bc, abc;
    qvlm_error err = {0};
    for (int legacy = 0; legacy < 2; legacy++) {
        json_t *root = abc_tokenizer(&ab, &bc, &abc);
        json_object_set_new(model_of(root), "merges",
                            legacy ? json_pack("[s,s,s,s]", "#version: 0.2", "b c", "a b", "ab c")
                                   : json_pack("[[s,s],[s,s],[s,s]]", "b", "c", "a", "b", "ab", "c"));
        qvlm_tokenizer *tok = load_json_tok(root, &err);
        ASSERT_TRUE(tok != NULL);
        idv w1 = {0}, w2 = {0}, w3 = {0};
        id_of(&w1, 'a'), id_of(&w1, bc);             /* abc -> a bc */
        id_of(&w2, ab), id_of(&w2, 'd');             /* abd -> ab d */
        id_of(&w3, 'x'), id_of(&w3, ab), id_of(&w3, ab); /* xabab */
        int ok = encodes_to(tok, "abc", w1.v, w1.n) && encodes_to(tok, "abd", w2.v, w2.n) &&
                 encodes_to(tok, "xabab", w3.v, w3.n);
        qvlm_tokenizer_destroy(tok);
        ASSERT_TRUE(ok);
    }
}

/* A pair listed twice keeps its last rank (HF collects merges into a HashMap). */
static void test_merges_repeated_pair_takes_last_rank(void) {
    int ab, bc, abc;
    qvlm_error err = {0};
    json_t *root = abc_tokenizer(&ab, &bc, &abc);
    json_object_set_new(model_of(root), "merges", json_pack("[s,s,s,s]", "a b", "b c", "ab c", "a b"));
    qvlm_tokenizer *tok = load_json_tok(root, &err);
    ASSERT_TRUE(tok != NULL);
    idv w = {0};
    id_of(&w, 'a'), id_of(&w, bc); /* a+b now ranks after b+c */
    int ok = encodes_to(tok, "abc", w.v, w.n);
    qvlm_tokenizer_destroy(tok);
    ASSERT_TRUE(ok);
    /* Without the repeat, a+b (rank 0) wins and ab+c follows. */
    root = abc_tokenizer(&ab, &bc, &abc);
    json_object_set_new(model_of(root), "merges", json_pack("[s,s,s]", "a b", "b c", "ab c"));
    tok = load_json_tok(root, &err);
    ASSERT_TRUE(tok != NULL);
    idv w2 = {0};
    id_of(&w2, abc);
    ok = encodes_to(tok, "abc", w2.v, w2.n);
    qvlm_tokenizer_destroy(tok);
    ASSERT_TRUE(ok);
}

static void test_merges_real_words(void) {
    qvlm_error err = {0};
    qvlm_tokenizer *tok;
    ASSERT_OK(qvlm_tokenizer_load(REAL_TOKENIZER, &tok, &err), &err);
    int32_t hello = qvlm_tokenizer_find(tok, "Hello"), sp_world = qvlm_tokenizer_find(tok, "Ġworld");
    int32_t want[] = {hello, sp_world};
    int ok = hello >= 0 && sp_world >= 0 && encodes_to(tok, "Hello world", want, 2);
    qvlm_tokenizer_destroy(tok);
    ASSERT_TRUE(ok);
}

static void test_ignore_merges_unk_and_byte_fallback(void) {
    qvlm_error err = {0};
    /* ignore_merges: a word that is a vocabulary token is taken whole. */
    for (int ignore = 0; ignore < 2; ignore++) {
        json_t *root = byte_tokenizer();
        int abc = add_vocab(root, "abc");
        json_object_set_new(model_of(root), "ignore_merges", json_boolean(ignore));
        qvlm_tokenizer *tok = load_json_tok(root, &err);
        ASSERT_TRUE(tok != NULL);
        idv w = {0};
        if (ignore) id_of(&w, abc);
        else bytes_of(&w, "abc");
        int ok = encodes_to(tok, "abc", w.v, w.n);
        qvlm_tokenizer_destroy(tok);
        ASSERT_TRUE(ok);
    }
    /* Characters missing from the vocabulary: unk (fused or not), or dropped without unk. */
    for (int mode = 0; mode < 3; mode++) {
        json_t *root = json_pack("{s:n, s:n, s:{s:s, s:b, s:b}, s:{s:s}, s:{s:s, s:{s:i, s:i, s:i}, s:[]}}",
                                 "truncation", "padding", "pre_tokenizer", "type", "ByteLevel",
                                 "add_prefix_space", 0, "use_regex", 0, "decoder", "type", "ByteLevel",
                                 "model", "type", "BPE", "vocab", "a", 0, "b", 1, "<unk>", 2, "merges");
        if (mode > 0) json_object_set_new(model_of(root), "unk_token", json_string("<unk>"));
        json_object_set_new(model_of(root), "fuse_unk", json_boolean(mode == 2));
        qvlm_tokenizer *tok = load_json_tok(root, &err);
        ASSERT_TRUE(tok != NULL);
        static const int32_t dropped[] = {0, 1, 1}, unk[] = {0, 1, 2, 2, 1}, fused[] = {0, 1, 2, 1};
        const int32_t *want[] = {dropped, unk, fused};
        size_t n_want[] = {3, 5, 4};
        int ok = encodes_to(tok, "abzzb", want[mode], n_want[mode]);
        qvlm_tokenizer_destroy(tok);
        ASSERT_TRUE(ok);
    }
    /* byte_fallback looks up the UTF-8 bytes of the byte-level character: ' ' is 'Ġ' = C4 A0. */
    json_t *root = json_pack("{s:n, s:n, s:{s:s, s:b, s:b}, s:{s:s}, s:{s:s, s:b, s:{s:i, s:i, s:i, s:i}, s:[]}}",
                             "truncation", "padding", "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0,
                             "use_regex", 0, "decoder", "type", "ByteLevel", "model", "type", "BPE",
                             "byte_fallback", 1, "vocab", "a", 0, "<0x7A>", 1, "<0xC4>", 2, "<0xA0>", 3, "merges");
    qvlm_tokenizer *tok = load_json_tok(root, &err);
    ASSERT_TRUE(tok != NULL);
    static const int32_t want[] = {0, 1, 2, 3, 0};
    int ok = encodes_to(tok, "az a", want, 5);
    qvlm_tokenizer_destroy(tok);
    ASSERT_TRUE(ok);
}

/* ---- added tokens ---------------------------------------------------------------------------- */

/* Cases from HF's own tests in added_vocabulary.rs (test_single_word_is_correct,
 * test_single_word_is_unicode_correct, test_lstrip_unicode_space, options_use_cases). */
static void test_added_single_word(void) {
    qvlm_error err = {0};
    json_t *root = byte_tokenizer();
    int mask = add_added(root, "<mask>", 0, 1, 0, 0, 1);
    qvlm_tokenizer *tok = load_json_tok(root, &err);
    ASSERT_TRUE(tok != NULL);
    idv w = {0}, u = {0};
    id_of(&w, mask), bytes_of(&w, " My name "), id_of(&w, mask), bytes_of(&w, " A<mask> <mask>ony "), id_of(&w, mask);
    /* Punctuation is not a word character; a combining mark (U+0330) is. */
    id_of(&u, mask), bytes_of(&u, ", "), id_of(&u, mask), bytes_of(&u, "- \xe2\x97\x8c\xcc\xb0<mask>");
    int ok = encodes_to(tok, "<mask> My name <mask> A<mask> <mask>ony <mask>", w.v, w.n) &&
             encodes_to(tok, "<mask>, <mask>- \xe2\x97\x8c\xcc\xb0<mask>", u.v, u.n);
    qvlm_tokenizer_destroy(tok);
    ASSERT_TRUE(ok);
}

static void test_added_lstrip_rstrip(void) {
    qvlm_error err = {0};
    json_t *root = byte_tokenizer();
    int mask = add_added(root, "<mask>", 0, 1, 1, 1, 1);
    qvlm_tokenizer *tok = load_json_tok(root, &err);
    ASSERT_TRUE(tok != NULL);
    /* " <mask> ", "\t<mask>\t", then "<mask>\u2000": the tab before it was already taken. */
    idv w = {0};
    bytes_of(&w, "Hi"), id_of(&w, mask), bytes_of(&w, "there"), id_of(&w, mask), id_of(&w, mask);
    int ok = encodes_to(tok, "Hi <mask> there\t<mask>\t<mask>\xe2\x80\x80", w.v, w.n);
    qvlm_tokenizer_destroy(tok);
    ASSERT_TRUE(ok);

    root = byte_tokenizer();
    int l = add_added(root, "<l>", 1, 0, 1, 0, 0), r = add_added(root, "<r>", 1, 0, 0, 1, 0);
    tok = load_json_tok(root, &err);
    ASSERT_TRUE(tok != NULL);
    idv a = {0}, b = {0};
    bytes_of(&a, "x"), id_of(&a, l), bytes_of(&a, "y "), id_of(&a, r), bytes_of(&a, "z");
    bytes_of(&b, "x"), id_of(&b, r), id_of(&b, l), bytes_of(&b, "y"); /* <l> cannot take <r>'s spaces */
    ok = encodes_to(tok, "x  \xc2\xa0<l>y <r> \n z", a.v, a.n) && encodes_to(tok, "x<r>  <l>y", b.v, b.n);
    qvlm_tokenizer_destroy(tok);
    ASSERT_TRUE(ok);
}

static void test_added_options_use_cases(void) {
    qvlm_error err = {0};
    json_t *root = byte_tokenizer();
    int my = add_added(root, "my", 0, 1, 1, 1, 0);
    int name = add_added(root, "name", 0, 1, 0, 0, 0);
    add_added(root, "ony", 0, 1, 0, 0, 1);
    int cls = add_added(root, "[CLS]", 1, 0, 0, 0, 0), sep = add_added(root, "[SEP]", 1, 0, 0, 0, 0);
    qvlm_tokenizer *tok = load_json_tok(root, &err);
    ASSERT_TRUE(tok != NULL);
    idv w = {0};
    id_of(&w, cls), id_of(&w, my), id_of(&w, name), bytes_of(&w, " is anthony "), id_of(&w, sep);
    int ok = encodes_to(tok, "[CLS] my name is anthony [SEP]", w.v, w.n);
    ok = ok && qvlm_tokenizer_is_special(tok, cls) && !qvlm_tokenizer_is_special(tok, name) &&
         !qvlm_tokenizer_is_special(tok, 'a') && !qvlm_tokenizer_is_special(tok, 99999);
    qvlm_tokenizer_destroy(tok);
    ASSERT_TRUE(ok);
}

/* normalized=false matches the raw text; normalized=true matches the NFC form of both. */
static void test_added_normalized_flag(void) {
    static const char decomposed[] = "cafe\xcc\x81", composed[] = "caf\xc3\xa9";
    qvlm_error err = {0};
    for (int normalized = 0; normalized < 2; normalized++) {
        json_t *root = byte_tokenizer();
        int t = add_added(root, decomposed, 0, normalized, 0, 0, 0);
        qvlm_tokenizer *tok = load_json_tok(root, &err);
        ASSERT_TRUE(tok != NULL);
        idv a = {0}, b = {0};
        id_of(&a, t);
        if (normalized) id_of(&b, t);
        else bytes_of(&b, composed);
        int ok = encodes_to(tok, decomposed, a.v, a.n) && encodes_to(tok, composed, b.v, b.n);
        qvlm_tokenizer_destroy(tok);
        ASSERT_TRUE(ok);
    }
}

static void test_added_leftmost_longest(void) {
    qvlm_error err = {0};
    json_t *root = byte_tokenizer();
    int a = add_added(root, "<a>", 1, 0, 0, 0, 0), ab = add_added(root, "<a><b>", 1, 0, 0, 0, 0);
    int x = add_added(root, "a><", 0, 0, 0, 0, 0);
    qvlm_tokenizer *tok = load_json_tok(root, &err);
    ASSERT_TRUE(tok != NULL);
    idv w1 = {0}, w2 = {0};
    id_of(&w1, ab), id_of(&w1, a);
    id_of(&w2, a), bytes_of(&w2, "<c"); /* "<a>" starts left of "a><" */
    int ok = encodes_to(tok, "<a><b><a>", w1.v, w1.n) && encodes_to(tok, "<a><c", w2.v, w2.n);
    qvlm_tokenizer_destroy(tok);
    (void)x;
    ASSERT_TRUE(ok);
}

/* HF passes added tokens through the ByteLevel decoder too: a character of the byte alphabet
 * becomes its byte (tokenizers issue #1392: "ilÖveyou" decodes to "il\uFFFDveyou"), while a token
 * with a character outside it (here a space) is copied as UTF-8. */
static void test_added_decode_through_byte_level(void) {
    qvlm_error err = {0};
    json_t *root = byte_tokenizer();
    int t1 = add_added(root, "il\xc3\x96veyou", 0, 0, 0, 0, 0), t2 = add_added(root, "<x y>", 1, 0, 0, 0, 0);
    qvlm_tokenizer *tok = load_json_tok(root, &err);
    ASSERT_TRUE(tok != NULL);
    int32_t ids[] = {t1, t2};
    char *text;
    size_t n;
    int rc = qvlm_tokenizer_decode(tok, ids, 2, &text, &n, &err);
    qvlm_tokenizer_destroy(tok);
    ASSERT_OK(rc, &err);
    int ok = strcmp(text, "il\xef\xbf\xbdveyou<x y>") == 0 && n == strlen(text);
    if (!ok) fprintf(stderr, "  got \"%s\"\n", text);
    free(text);
    ASSERT_TRUE(ok);
}

/* ---- streaming decode ------------------------------------------------------------------------ */

/* Push byte ids one by one; out gets each push's output followed by '|', then the flush's. */
static void stream_trace(const qvlm_tokenizer *tok, const uint8_t *bytes, size_t n, char *out) {
    qvlm_detok_stream s;
    qvlm_error err = {0};
    qvlm_detok_stream_init(&s, tok);
    size_t k = 0;
    const char *p;
    size_t np;
    for (size_t i = 0; i <= n; i++) {
        qvlm_status rc = i < n ? qvlm_detok_stream_push(&s, bytes[i], &p, &np, &err)
                               : qvlm_detok_stream_flush(&s, &p, &np, &err);
        if (rc) np = 0;
        memcpy(out + k, p, np);
        k += np;
        if (i < n) out[k++] = '|';
    }
    out[k] = '\0';
    qvlm_detok_stream_free(&s);
}

static void test_stream_holds_back_partial_characters(void) {
    qvlm_error err = {0};
    qvlm_tokenizer *tok = load_json_tok(byte_tokenizer(), &err);
    ASSERT_TRUE(tok != NULL);
    char got[256];
    stream_trace(tok, (const uint8_t *)"\xf0\x9f\x98\x80", 4, got); /* emoji over 4 tokens */
    ASSERT_STR_EQ(got, "|||\xf0\x9f\x98\x80|");
    stream_trace(tok, (const uint8_t *)"a\xe4\xb8\xad!", 5, got); /* CJK over 3 tokens */
    ASSERT_STR_EQ(got, "a|||\xe4\xb8\xad|!|");
    stream_trace(tok, (const uint8_t *)"\xf0\x9f" "a", 3, got); /* cut short: one U+FFFD */
    ASSERT_STR_EQ(got, "||\xef\xbf\xbd" "a|");
    stream_trace(tok, (const uint8_t *)"\xed\xa0\x80", 3, got); /* surrogate: 3 x U+FFFD */
    ASSERT_STR_EQ(got, "|\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd|");
    stream_trace(tok, (const uint8_t *)"\xff\xe4\xb8", 3, got); /* unfinished at the end: flushed */
    ASSERT_STR_EQ(got, "\xef\xbf\xbd|||\xef\xbf\xbd");
    /* The example in Rust's from_utf8_lossy documentation. */
    const char *rust = "Hello \xF0\x90\x80World";
    int32_t ids[32];
    for (size_t i = 0; rust[i]; i++) ids[i] = (uint8_t)rust[i];
    char *text;
    size_t n;
    ASSERT_OK(qvlm_tokenizer_decode(tok, ids, strlen(rust), &text, &n, &err), &err);
    int ok = strcmp(text, "Hello \xef\xbf\xbdWorld") == 0;
    free(text);
    qvlm_tokenizer_destroy(tok);
    ASSERT_TRUE(ok);
}

/* Random byte sequences, rich in UTF-8 lead and continuation bytes: the stream's output is
 * always valid UTF-8 and adds up to the one-call decode. */
static void test_stream_equals_decode_random(void) {
    qvlm_error err = {0};
    qvlm_tokenizer *tok = load_json_tok(byte_tokenizer(), &err);
    ASSERT_TRUE(tok != NULL);
    static const uint8_t pool[] = {'a', ' ', 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0,
                                   0xE4, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF, 0xB8, 0xAD, 0x98};
    uint32_t seed = 12345;
    int failures = 0;
    for (int rep = 0; rep < 3000 && failures < 5; rep++) {
        int32_t ids[24];
        size_t n = 1 + rep % 24;
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            ids[i] = pool[(seed >> 16) % sizeof(pool)];
        }
        char *want;
        size_t n_want;
        if (qvlm_tokenizer_decode(tok, ids, n, &want, &n_want, &err)) {
            failures++;
            continue;
        }
        char got[24 * 3 + 8];
        size_t k = 0;
        qvlm_detok_stream s;
        qvlm_detok_stream_init(&s, tok);
        for (size_t i = 0; i <= n; i++) {
            const char *p;
            size_t np;
            qvlm_status rc = i < n ? qvlm_detok_stream_push(&s, ids[i], &p, &np, &err)
                                   : qvlm_detok_stream_flush(&s, &p, &np, &err);
            int valid = rc == QVLM_OK;
            for (size_t j = 0; valid && j < np;) { /* each output is whole characters */
                uint8_t b = (uint8_t)p[j];
                size_t len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
                valid = j + len <= np;
                j += len;
            }
            if (!valid) failures++;
            memcpy(got + k, p, rc ? 0 : np);
            k += rc ? 0 : np;
        }
        qvlm_detok_stream_free(&s);
        if (k != n_want || memcmp(got, want, k) != 0) failures++;
        free(want);
    }
    qvlm_tokenizer_destroy(tok);
    ASSERT_EQ_INT(failures, 0);
}

static void test_stream_real_tokenizer(void) {
    qvlm_error err = {0};
    qvlm_tokenizer *tok;
    ASSERT_OK(qvlm_tokenizer_load(REAL_TOKENIZER, &tok, &err), &err);
    const char *text = "emoji \xf0\x9f\x98\x80\xf0\x9f\x90\xb1 family \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9"
                       " \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae<|im_end|>\xed\x95\x9c\xea\xb5\xad";
    int32_t *ids;
    size_t n;
    int rc = qvlm_tokenizer_encode(tok, text, strlen(text), &ids, &n, &err);
    if (rc) qvlm_tokenizer_destroy(tok);
    ASSERT_OK(rc, &err);
    char got[512];
    size_t k = 0, n_held = 0;
    qvlm_detok_stream s;
    qvlm_detok_stream_init(&s, tok);
    for (size_t i = 0; i <= n; i++) {
        const char *p;
        size_t np;
        rc = i < n ? qvlm_detok_stream_push(&s, ids[i], &p, &np, &err) : qvlm_detok_stream_flush(&s, &p, &np, &err);
        if (rc || k + np >= sizeof(got)) break;
        if (np == 0) n_held++;
        memcpy(got + k, p, np);
        k += np;
    }
    got[k] = '\0';
    qvlm_detok_stream_free(&s);
    free(ids);
    qvlm_tokenizer_destroy(tok);
    ASSERT_STR_EQ(got, text);
    ASSERT_TRUE(n_held > 0); /* some characters did span tokens */
}

/* ---- invalid files ------------------------------------------------------------------------- */

/* Set root[path] (dot-separated object keys) to the JSON `value`, or delete it for NULL. */
static void set_path(json_t *root, const char *path, const char *value) {
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *obj = root;
    char *key = buf, *dot;
    while ((dot = strchr(key, '.'))) {
        *dot = '\0';
        obj = json_object_get(obj, key);
        key = dot + 1;
    }
    if (value) set_json(obj, key, value);
    else json_object_del(obj, key);
}

static void test_invalid_files_name_the_field(void) {
    static const struct {
        const char *path, *value;
        qvlm_status code;
        const char *needle;
    } cases[] = {
        {"model.type", "\"WordPiece\"", QVLM_E_UNSUPPORTED, "test.json: model.type = \"WordPiece\""},
        {"model.vocab.a", "-1", QVLM_E_CORRUPT, "model.vocab[\"a\"] = -1 (must be in 0..4194303)"},
        {"model.vocab.a", "\"x\"", QVLM_E_CORRUPT, "model.vocab[\"a\"] is string"},
        {"model.vocab.a", "99999999", QVLM_E_CORRUPT, "model.vocab[\"a\"] = 99999999"},
        {"model.vocab.zz", "98", QVLM_E_CORRUPT, "model.vocab: id 98 is given to both"},
        {"model.vocab", "[]", QVLM_E_CORRUPT, "model.vocab is array"},
        {"model.merges", "[[\"a\",\"q q\"]]", QVLM_E_CORRUPT, "model.merges[0]: \"a q q\" names \"q q\", which is not in model.vocab"},
        {"model.merges", "[\"a b\"]", QVLM_E_CORRUPT, "model.merges[0]: \"a b\" names \"ab\""},
        {"model.merges", "[\"a b c\"]", QVLM_E_CORRUPT, "model.merges[0] is not two tokens"},
        {"model.merges", "[\"#version: 0.2\", [\"a\",\"b\"]]", QVLM_E_CORRUPT, "model.merges[1] is array (earlier merges are strings)"},
        {"model.merges", "[[\"a\",\"b\",\"c\"]]", QVLM_E_CORRUPT, "model.merges[0] must be a pair of strings"},
        {"model.merges", "{}", QVLM_E_CORRUPT, "model.merges is object"},
        {"model", NULL, QVLM_E_CORRUPT, "test.json: model is missing"},
        {"model.dropout", "0.1", QVLM_E_UNSUPPORTED, "model.dropout"},
        {"model.unk_token", "\"<nope>\"", QVLM_E_CORRUPT, "model.unk_token \"<nope>\" is not in model.vocab"},
        {"model.continuing_subword_prefix", "\"##\"", QVLM_E_UNSUPPORTED, "model.continuing_subword_prefix"},
        {"model.fuse_unk", "1", QVLM_E_CORRUPT, "model.fuse_unk is integer"},
        {"normalizer", "{\"type\":\"Lowercase\"}", QVLM_E_UNSUPPORTED, "normalizer.type = \"Lowercase\""},
        {"normalizer", "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"Strip\"}]}",
         QVLM_E_UNSUPPORTED, "normalizer.normalizers[1].type = \"Strip\""},
        {"normalizer", "{\"type\":\"Sequence\"}", QVLM_E_CORRUPT, "normalizer.normalizers is missing"},
        {"normalizer", "[]", QVLM_E_CORRUPT, "normalizer is array"},
        {"pre_tokenizer", "{\"type\":\"Whitespace\"}", QVLM_E_UNSUPPORTED, "pre_tokenizer.type = \"Whitespace\""},
        {"pre_tokenizer", "null", QVLM_E_UNSUPPORTED, "pre_tokenizer is missing"},
        {"pre_tokenizer", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"ByteLevel\"},{\"type\":\"Split\","
                          "\"pattern\":{\"String\":\" \"},\"behavior\":\"Isolated\"}]}",
         QVLM_E_UNSUPPORTED, "pre_tokenizer.pretokenizers[1] comes after ByteLevel"},
        {"pre_tokenizer", "{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"Isolated\"}",
         QVLM_E_UNSUPPORTED, "pre_tokenizer has no ByteLevel step"},
        {"pre_tokenizer", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"},"
                          "\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\"}]}",
         QVLM_E_CORRUPT, "pre_tokenizer.pretokenizers[0].pattern.Regex: does not compile"},
        {"pre_tokenizer", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"x|^a\"},"
                          "\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\"}]}",
         QVLM_E_UNSUPPORTED, "pre_tokenizer.pretokenizers[0].pattern.Regex: ^ at pattern offset 2"},
        {"pre_tokenizer", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},"
                          "\"behavior\":\"Sideways\"},{\"type\":\"ByteLevel\"}]}",
         QVLM_E_UNSUPPORTED, "pre_tokenizer.pretokenizers[0].behavior = \"Sideways\""},
        {"pre_tokenizer", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Glob\":\"*\"},"
                          "\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\"}]}",
         QVLM_E_CORRUPT, "pre_tokenizer.pretokenizers[0].pattern must be"},
        {"decoder", "null", QVLM_E_UNSUPPORTED, "decoder is missing"},
        {"decoder", "{\"type\":\"WordPiece\"}", QVLM_E_UNSUPPORTED, "decoder.type = \"WordPiece\""},
        {"truncation", "{\"max_length\":5}", QVLM_E_UNSUPPORTED, "truncation is set"},
        {"padding", "{}", QVLM_E_UNSUPPORTED, "padding is set"},
        {"added_tokens", "[{\"id\":300,\"content\":\"<x>\"}]", QVLM_E_CORRUPT,
         "added_tokens[0].id = 300, but Hugging Face tokenizers gives \"<x>\" id 256"},
        {"added_tokens", "[{\"id\":256}]", QVLM_E_CORRUPT, "added_tokens[0].content is missing"},
        {"added_tokens", "[{\"id\":256,\"content\":\"\"}]", QVLM_E_CORRUPT, "added_tokens[0].content is empty"},
        {"added_tokens", "[{\"id\":256,\"content\":\"<x>\"},{\"id\":257,\"content\":\"<x>\"}]", QVLM_E_CORRUPT,
         "added_tokens[1].content \"<x>\" is already added"},
        {"added_tokens", "[\"<x>\"]", QVLM_E_CORRUPT, "added_tokens[0] is string"},
        {"added_tokens", "[{\"id\":256,\"content\":\"<x>\",\"lstrip\":\"yes\"}]", QVLM_E_CORRUPT,
         "added_tokens[0].lstrip is string"},
        {"added_tokens", "[{\"id\":-4,\"content\":\"<x>\"}]", QVLM_E_CORRUPT, "added_tokens[0].id = -4"},
        {"added_tokens", "{}", QVLM_E_CORRUPT, "test.json: added_tokens is object (must be an array)"},
    };
    int failures = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *root = byte_tokenizer();
        set_path(root, cases[i].path, cases[i].value);
        qvlm_error err = {0};
        qvlm_tokenizer *tok = load_json_tok(root, &err);
        if (tok || err.code != cases[i].code || !strstr(err.msg, cases[i].needle)) {
            fprintf(stderr, "  case %zu (%s): %s code %d, message \"%s\"; want code %d and \"%s\"\n", i,
                    cases[i].path, tok ? "loaded," : "failed,", (int)err.code, err.msg, (int)cases[i].code,
                    cases[i].needle);
            failures++;
        }
        qvlm_tokenizer_destroy(tok);
    }
    /* A Split pattern far longer than any real one is refused before it is compiled. */
    json_t *big = byte_tokenizer();
    char *pat = malloc(70001);
    memset(pat, 'a', 70000);
    pat[70000] = '\0';
    json_object_set_new(big, "pre_tokenizer",
                        json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}]}", "type", "Sequence", "pretokenizers",
                                  "type", "Split", "pattern", "Regex", pat, "behavior", "Isolated", "type",
                                  "ByteLevel"));
    free(pat);
    qvlm_error berr = {0};
    qvlm_tokenizer *btok = load_json_tok(big, &berr);
    if (btok || berr.code != QVLM_E_LIMIT || !strstr(berr.msg, "pre_tokenizer.pretokenizers[0].pattern.Regex: pattern of 70000 bytes"))
        fprintf(stderr, "  long pattern: %s\n", berr.msg), failures++;
    qvlm_tokenizer_destroy(btok);
    /* Control: an added token that is a vocabulary token keeps the vocabulary id. */
    json_t *root = byte_tokenizer();
    set_path(root, "added_tokens", "[{\"id\":97,\"content\":\"a\",\"special\":true}]");
    qvlm_error err = {0};
    qvlm_tokenizer *tok = load_json_tok(root, &err);
    if (!tok || !qvlm_tokenizer_is_special(tok, 97)) failures++;
    qvlm_tokenizer_destroy(tok);
    ASSERT_EQ_INT(failures, 0);
}

static void test_invalid_documents(void) {
    qvlm_error err = {0};
    qvlm_tokenizer *tok = (qvlm_tokenizer *)&err; /* must be reset to NULL on failure */
    ASSERT_FAILS(qvlm_tokenizer_load_buffer("not json {", 10, "t.json", &tok, &err), QVLM_E_CORRUPT, &err,
                 "t.json: invalid JSON");
    ASSERT_TRUE(tok == NULL);
    ASSERT_FAILS(qvlm_tokenizer_load_buffer("[1,2]", 5, "t.json", &tok, &err), QVLM_E_CORRUPT, &err,
                 "t.json: top level is array");
    ASSERT_FAILS(qvlm_tokenizer_load("/nonexistent/tokenizer.json", &tok, &err), QVLM_E_IO, &err,
                 "/nonexistent/tokenizer.json: cannot open");
    /* Every truncation of a real file fails cleanly. */
    char *buf;
    size_t n;
    ASSERT_OK(qvlm_file_read(QVLM_FIXTURES "/tiny-dense/model/tokenizer.json", 1 << 20, &buf, &n, &err), &err);
    int failures = 0;
    for (size_t cut = 0; cut < n; cut += 1 + cut / 3) {
        if (qvlm_tokenizer_load_buffer(buf, cut, "cut.json", &tok, &err) != QVLM_E_CORRUPT || tok) failures++;
        qvlm_tokenizer_destroy(tok);
    }
    ASSERT_OK(qvlm_tokenizer_load_buffer(buf, n, "whole.json", &tok, &err), &err);
    qvlm_tokenizer_destroy(tok);
    free(buf);
    ASSERT_EQ_INT(failures, 0);
    /* A file over the size limit is refused before it is read (sparse: costs no disk). */
    char path[128];
    snprintf(path, sizeof(path), "/tmp/qvlm_tokenizer_test_huge_%d.json", (int)getpid());
    FILE *f = fopen(path, "wb");
    ASSERT_TRUE(f != NULL);
    int trunc_rc = ftruncate(fileno(f), (off_t)QVLM_TOKENIZER_MAX_FILE_BYTES + 1);
    fclose(f);
    ASSERT_EQ_INT(trunc_rc, 0);
    qvlm_status rc = qvlm_tokenizer_load(path, &tok, &err);
    unlink(path);
    ASSERT_EQ_INT(rc, QVLM_E_LIMIT);
    ASSERT_CONTAINS(err.msg, "over the limit");
}

static void test_bad_text_and_ids(void) {
    qvlm_error err = {0};
    qvlm_tokenizer *tok = load_json_tok(byte_tokenizer(), &err);
    ASSERT_TRUE(tok != NULL);
    int32_t *ids = (int32_t *)&err;
    size_t n = 7;
    qvlm_status rc = qvlm_tokenizer_encode(tok, "ab\xc0\x80", 4, &ids, &n, &err);
    int ok = rc == QVLM_E_INVALID && ids == NULL && n == 0 && strstr(err.msg, "not valid UTF-8 at byte 2");
    rc = qvlm_tokenizer_encode(tok, "", 0, &ids, &n, &err); /* empty text: no ids */
    ok = ok && rc == QVLM_OK && n == 0 && ids == NULL;
    char *text;
    int32_t bad[] = {97, 99999999};
    rc = qvlm_tokenizer_decode(tok, bad, 2, &text, &n, &err);
    ok = ok && rc == QVLM_E_INVALID && text == NULL && strstr(err.msg, "ids[1] = 99999999");
    int32_t neg[] = {-1};
    ok = ok && qvlm_tokenizer_decode(tok, neg, 1, &text, &n, &err) == QVLM_E_INVALID;
    /* A bad id leaves the stream as it was: the held-back emoji bytes still complete. */
    qvlm_detok_stream s;
    qvlm_detok_stream_init(&s, tok);
    const char *p;
    size_t np;
    ok = ok && qvlm_detok_stream_push(&s, 0xF0, &p, &np, &err) == QVLM_OK && np == 0;
    ok = ok && qvlm_detok_stream_push(&s, 0x9F, &p, &np, &err) == QVLM_OK && np == 0;
    ok = ok && qvlm_detok_stream_push(&s, 256, &p, &np, &err) == QVLM_E_INVALID && np == 0;
    ok = ok && qvlm_detok_stream_push(&s, 0x98, &p, &np, &err) == QVLM_OK && np == 0;
    ok = ok && qvlm_detok_stream_push(&s, 0x80, &p, &np, &err) == QVLM_OK && np == 4 && memcmp(p, "\xf0\x9f\x98\x80", 4) == 0;
    ok = ok && qvlm_detok_stream_flush(&s, &p, &np, &err) == QVLM_OK && np == 0;
    qvlm_detok_stream_free(&s);
    qvlm_tokenizer_destroy(tok);
    ASSERT_TRUE(ok);
}

/* ---- lookups --------------------------------------------------------------------------------- */

static void test_lookups_real(void) {
    qvlm_error err = {0};
    qvlm_tokenizer *tok;
    ASSERT_OK(qvlm_tokenizer_load(REAL_TOKENIZER, &tok, &err), &err);
    int32_t im_end = qvlm_tokenizer_find(tok, "<|im_end|>"), think = qvlm_tokenizer_find(tok, "<think>");
    int32_t world = qvlm_tokenizer_find(tok, "\xc4\xa0world");
    int ok = im_end == 151645 && think == 151667 && qvlm_tokenizer_vocab_size(tok) == 151669 &&
             qvlm_tokenizer_is_special(tok, im_end) && !qvlm_tokenizer_is_special(tok, think) &&
             !qvlm_tokenizer_is_special(tok, world) && world >= 0 &&
             strcmp(qvlm_tokenizer_token(tok, world), "\xc4\xa0world") == 0 &&
             strcmp(qvlm_tokenizer_token(tok, im_end), "<|im_end|>") == 0 &&
             qvlm_tokenizer_token(tok, -1) == NULL && qvlm_tokenizer_token(tok, 151669) == NULL &&
             qvlm_tokenizer_find(tok, "no such token, surely") == -1;
    qvlm_tokenizer_destroy(tok);
    ASSERT_TRUE(ok);
}

/* ---- concurrency ----------------------------------------------------------------------------- */

typedef struct worker {
    const qvlm_tokenizer *tok;
    const json_t *cases;
    pthread_barrier_t *start;
    int failures;
} worker;

static void *encode_all(void *arg) {
    worker *w = arg;
    pthread_barrier_wait(w->start);
    for (int rep = 0; rep < 8; rep++) {
        for (size_t i = 0; i < json_array_size(w->cases); i++) {
            const json_t *c = json_array_get(w->cases, i), *text = json_object_get(c, "text");
            const json_t *want = json_object_get(c, "ids");
            qvlm_error err;
            int32_t *ids;
            size_t n;
            if (qvlm_tokenizer_encode(w->tok, json_string_value(text), json_string_length(text), &ids, &n, &err)) {
                w->failures++;
                continue;
            }
            int same = n == json_array_size(want);
            for (size_t k = 0; same && k < n; k++) same = ids[k] == json_integer_value(json_array_get(want, k));
            w->failures += !same;
            free(ids);
        }
    }
    return NULL;
}

/* Several threads encode at once on one tokenizer whose cache starts cold; every result must
 * equal the single-threaded reference. */
static void test_concurrent_encode(void) {
    enum { N_THREADS = 4 };
    json_t *ref = load_json(QVLM_FIXTURES "/tiny-dense/tokenizer_reference.json");
    ASSERT_TRUE(ref != NULL);
    qvlm_error err = {0};
    qvlm_tokenizer *tok;
    int rc = qvlm_tokenizer_load(REAL_TOKENIZER, &tok, &err);
    if (rc) json_decref(ref);
    ASSERT_OK(rc, &err);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_THREADS);
    pthread_t th[N_THREADS];
    worker w[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        w[t] = (worker){.tok = tok, .cases = json_object_get(ref, "real_cases"), .start = &start};
        pthread_create(&th[t], NULL, encode_all, &w[t]);
    }
    int failures = 0;
    for (int t = 0; t < N_THREADS; t++) {
        pthread_join(th[t], NULL);
        failures += w[t].failures;
    }
    pthread_barrier_destroy(&start);
    qvlm_tokenizer_destroy(tok);
    json_decref(ref);
    ASSERT_EQ_INT(failures, 0);
}

/* ---- pre-tokenizer regex and split behaviours --------------------------------------------------
 * These call the split step directly (tok_internal.h) to see the pieces, which ids hide. */

/* Split s with pattern, joining the pieces with '|' into out; returns the compile status. */
static qvlm_status split_with(const char *pattern, bool literal, tok_split_behavior b, bool invert,
                              const char *s, char *out, qvlm_error *err) {
    tok_stage st = {.behavior = b, .invert = invert};
    out[0] = '\0';
    qvlm_status rc = qvlm_tok_regex_compile(pattern, strlen(pattern), literal, "test", &st.re, err);
    if (rc) return rc;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    tok_spans sp = {0};
    rc = qvlm_tok_regex_split(&st, NULL, md, (const uint8_t *)s, strlen(s), &sp, err);
    size_t k = 0;
    for (size_t i = 0; i < sp.n; i++) {
        if (i) out[k++] = '|';
        memcpy(out + k, s + sp.v[i].start, sp.v[i].end - sp.v[i].start);
        k += sp.v[i].end - sp.v[i].start;
    }
    out[k] = '\0';
    free(sp.v);
    pcre2_match_data_free(md);
    pcre2_code_free(st.re);
    return rc;
}

/* The examples in HF's NormalizedString::split documentation. */
static void test_split_behaviors(void) {
    qvlm_error err = {0};
    char out[256];
    const char *s = "the-final--countdown";
    ASSERT_OK(split_with("-", true, TOK_SPLIT_REMOVED, false, s, out, &err), &err);
    ASSERT_STR_EQ(out, "the|final|countdown");
    ASSERT_OK(split_with("-", true, TOK_SPLIT_ISOLATED, false, s, out, &err), &err);
    ASSERT_STR_EQ(out, "the|-|final|-|-|countdown");
    ASSERT_OK(split_with("-", true, TOK_SPLIT_MERGED_WITH_PREVIOUS, false, s, out, &err), &err);
    ASSERT_STR_EQ(out, "the-|final-|-|countdown");
    ASSERT_OK(split_with("-", true, TOK_SPLIT_MERGED_WITH_NEXT, false, s, out, &err), &err);
    ASSERT_STR_EQ(out, "the|-final|-|-countdown");
    ASSERT_OK(split_with("-", true, TOK_SPLIT_CONTIGUOUS, false, s, out, &err), &err);
    ASSERT_STR_EQ(out, "the|-|final|--|countdown");
    ASSERT_OK(split_with("-", true, TOK_SPLIT_REMOVED, true, s, out, &err), &err); /* invert */
    ASSERT_STR_EQ(out, "-|-|-");
    /* onig find_iter: an empty match right after a match is skipped one character on. */
    ASSERT_OK(split_with("x*", false, TOK_SPLIT_ISOLATED, false, "abxxc", out, &err), &err);
    ASSERT_STR_EQ(out, "a|b|xx|c");
}

/* Oniguruma meanings that PCRE2 spells differently. */
static void test_regex_oniguruma_dialect(void) {
    qvlm_error err = {0};
    char out[256];
    /* \s is White_Space: NEL (U+0085) yes, MONGOLIAN VOWEL SEPARATOR (U+180E) no. */
    ASSERT_OK(split_with("\\s", false, TOK_SPLIT_REMOVED, false, "x\xe1\xa0\x8ey z\xc2\x85w", out, &err), &err);
    ASSERT_STR_EQ(out, "x\xe1\xa0\x8ey|z|w");
    ASSERT_OK(split_with("[^\\S]+", false, TOK_SPLIT_REMOVED, false, "a\xe1\xa0\x8e b", out, &err), &err);
    ASSERT_STR_EQ(out, "a\xe1\xa0\x8e|b");
    /* \w takes marks and connector punctuation. */
    ASSERT_OK(split_with("\\w+", false, TOK_SPLIT_ISOLATED, false, "ab\xcc\x81!_c", out, &err), &err);
    ASSERT_STR_EQ(out, "ab\xcc\x81|!|_c");
    ASSERT_OK(split_with("\\v", false, TOK_SPLIT_REMOVED, false, "a\x0b" "b\nc", out, &err), &err);
    ASSERT_STR_EQ(out, "a|b\nc");
    ASSERT_OK(split_with("a{,2}b", false, TOK_SPLIT_REMOVED, false, "aab a{,2}b", out, &err), &err);
    ASSERT_STR_EQ(out, " a{,2}"); /* read as a{0,2}b, not literally */
    ASSERT_OK(split_with("\\u0041", false, TOK_SPLIT_REMOVED, false, "xAy", out, &err), &err);
    ASSERT_STR_EQ(out, "x|y");
    ASSERT_OK(split_with("(?i:'s|'t)", false, TOK_SPLIT_ISOLATED, false, "it'S'T", out, &err), &err);
    ASSERT_STR_EQ(out, "it|'S|'T");
    static const char *refused[] = {"\\h", "[[:alpha:]]", "(?m:a)", "\\bx", "a$", "[a&&b]", "[\\W]", "\\Qa"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        ASSERT_FAILS(split_with(refused[i], false, TOK_SPLIT_ISOLATED, false, "a", out, &err), QVLM_E_UNSUPPORTED,
                     &err, "test: ");
}

/* ByteLevel's add_prefix_space applies to every piece the Split steps made. */
static void test_byte_level_add_prefix_space(void) {
    qvlm_error err = {0};
    json_t *root = byte_tokenizer();
    set_json(root, "pre_tokenizer",
             "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},"
             "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":true,"
             "\"use_regex\":false}]}");
    int ab = add_vocab(root, "\xc4\xa0" "a");
    add_merge(root, "\xc4\xa0", "a");
    qvlm_tokenizer *tok = load_json_tok(root, &err);
    ASSERT_TRUE(tok != NULL);
    idv w = {0};
    /* pieces "a" " " "a" " " "b" -> " a" " " " a" " " " b" */
    id_of(&w, ab), id_of(&w, ' '), id_of(&w, ab), id_of(&w, ' '), bytes_of(&w, " b");
    int ok = encodes_to(tok, "a a b", w.v, w.n);
    qvlm_tokenizer_destroy(tok);
    ASSERT_TRUE(ok);
}

/* ---- NFC shortcut ------------------------------------------------------------------------------
 * The encoder runs utf8proc only around characters NFC may change. Random strings rich in
 * combining marks, precomposed letters, Hangul jamo, singletons, exclusions and supplementary
 * compositions must normalise exactly as utf8proc_map(NFC) of the whole string. */
static void test_nfc_shortcut_equals_utf8proc(void) {
    static const uint32_t pool[] = {
        'a', 'e', 'o', ' ', 0x300, 0x301, 0x308, 0x316, 0x323, 0x327, 0x345, 0x344, 0x340, 0xE9, 0x1E69, 0x1FB4,
        0x212B, 0x2126, 0xFB01, 0xC5, 0x958, 0x915, 0x93C, 0x591, 0x5B4, 0xF71, 0xF72, 0xF73, 0xF75, 0x1DC0,
        0x1100, 0x1161, 0x11A8, 0xAC00, 0xAC01, 0xD7A3, 0x4E00, 0x3099, 0x304B, 0x304C, 0xB47, 0xB3E, 0xB57,
        0xCC6, 0xCD5, 0x1F600, 0x11099, 0x110BA, 0x1109A, 0x11347, 0x1133E, 0x1D15E, 0x1D165, 0x2F800, 0xFA10,
        0x0, 0x37E, 0x387, 0x1E0A, 0x64, 0x307, 0x31B, 0x6F, 0x31B, 0x1B05, 0x1B35, 0x1B06, 0x3A9, 0x1F7D,
    };
    qvlm_error err = {0};
    qvlm_tokenizer *tok = load_json_tok(byte_tokenizer(), &err); /* NFC */
    ASSERT_TRUE(tok != NULL);
    uint32_t seed = 777;
    int failures = 0;
    for (int rep = 0; rep < 20000 && failures < 5; rep++) {
        char s[64];
        size_t n = 0;
        int len = 1 + rep % 12;
        for (int i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            n += (size_t)utf8proc_encode_char((utf8proc_int32_t)pool[(seed >> 12) % (sizeof(pool) / sizeof(pool[0]))],
                                              (utf8proc_uint8_t *)s + n);
        }
        utf8proc_uint8_t *want = NULL;
        utf8proc_ssize_t n_want = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &want,
                                               UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        uint8_t *got;
        size_t n_got;
        bool owned;
        if (n_want < 0 || qvlm_tok_normalize(tok, (const uint8_t *)s, n, &got, &n_got, &owned, &err)) {
            failures++;
        } else if ((size_t)n_want != n_got || memcmp(want, got, n_got) != 0) {
            fprintf(stderr, "  NFC differs for:");
            for (size_t i = 0; i < n; i++) fprintf(stderr, " %02x", (uint8_t)s[i]);
            fprintf(stderr, "\n");
            failures++;
        }
        if (n_want >= 0 && owned) free(got);
        free(want);
    }
    qvlm_tokenizer_destroy(tok);
    ASSERT_EQ_INT(failures, 0);
}

/* ---- differential references from HF tokenizers 0.23.2 -------------------------------------------
 * tests/fixtures/tokenizer/hf_variants.json (tools/gen_hf_tokenizer_cases.py): the tiny-dense
 * tokenizer with other normalizers, pre-tokenizers, split behaviours and added-token flags,
 * each with hostile random texts and id lists and what HF made of them. */

static json_t *variant_tokenizer(const json_t *base, const json_t *v) {
    json_t *root = json_deep_copy(base);
    json_object_set(root, "normalizer", json_object_get(v, "normalizer"));
    json_object_set(root, "pre_tokenizer", json_object_get(v, "pre_tokenizer"));
    json_array_extend(json_object_get(root, "added_tokens"), json_object_get(v, "added_tokens_append"));
    if (json_is_true(json_object_get(v, "legacy_merges"))) { /* ["a","b"] -> "a b" */
        json_t *merges = json_object_get(model_of(root), "merges"), *m;
        size_t i;
        json_array_foreach(merges, i, m) {
            char buf[256];
            snprintf(buf, sizeof(buf), "%s %s", json_string_value(json_array_get(m, 0)),
                     json_string_value(json_array_get(m, 1)));
            json_array_set_new(merges, i, json_string(buf));
        }
    }
    return root;
}

static void test_hf_differential_variants(void) {
    json_t *ref = load_json(QVLM_FIXTURES "/tokenizer/hf_variants.json");
    json_t *base = load_json(QVLM_FIXTURES "/tiny-dense/model/tokenizer.json");
    ASSERT_TRUE(ref && base);
    int failures = 0;
    size_t n_variants = json_array_size(json_object_get(ref, "variants")), n_cases = 0;
    for (size_t i = 0; i < n_variants; i++) {
        const json_t *v = json_array_get(json_object_get(ref, "variants"), i);
        const char *name = json_string_value(json_object_get(v, "name"));
        qvlm_error err = {0};
        qvlm_tokenizer *tok = load_json_tok(variant_tokenizer(base, v), &err);
        if (!tok) {
            fprintf(stderr, "  variant %s: %s\n", name, err.msg);
            failures++;
            continue;
        }
        const json_t *cases = json_object_get(v, "cases");
        for (size_t k = 0; k < json_array_size(cases); k++, n_cases++) {
            const json_t *c = json_array_get(cases, k), *text = json_object_get(c, "text");
            const json_t *dec = json_object_get(c, "decoded");
            char lab[96];
            snprintf(lab, sizeof(lab), "%s[%zu]", name, k);
            if ((text && !ids_match(tok, json_string_value(text), json_string_length(text), json_object_get(c, "ids"), lab)) ||
                !decode_matches(tok, json_object_get(c, "ids"), json_string_value(dec), json_string_length(dec), lab))
                failures++;
        }
        qvlm_tokenizer_destroy(tok);
    }
    json_decref(ref);
    json_decref(base);
    ASSERT_TRUE(n_variants >= 9 && n_cases >= 1000);
    ASSERT_EQ_INT(failures, 0);
}

int main(void) {
    RUN(test_tiny_dense_cases);
    RUN(test_tiny_moe_cases);
    RUN(test_real_cases_dense);
    RUN(test_real_cases_moe);
    RUN(test_hf_differential_variants);
    RUN(test_merges_both_forms);
    RUN(test_merges_repeated_pair_takes_last_rank);
    RUN(test_merges_real_words);
    RUN(test_ignore_merges_unk_and_byte_fallback);
    RUN(test_added_single_word);
    RUN(test_added_lstrip_rstrip);
    RUN(test_added_options_use_cases);
    RUN(test_added_normalized_flag);
    RUN(test_added_leftmost_longest);
    RUN(test_added_decode_through_byte_level);
    RUN(test_stream_holds_back_partial_characters);
    RUN(test_stream_equals_decode_random);
    RUN(test_stream_real_tokenizer);
    RUN(test_invalid_files_name_the_field);
    RUN(test_invalid_documents);
    RUN(test_bad_text_and_ids);
    RUN(test_lookups_real);
    RUN(test_concurrent_encode);
    RUN(test_split_behaviors);
    RUN(test_regex_oniguruma_dialect);
    RUN(test_byte_level_add_prefix_space);
    RUN(test_nfc_shortcut_equals_utf8proc);
    return qtest_done();
}
