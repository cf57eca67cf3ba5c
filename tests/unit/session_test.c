/* session_test.c - the public session API: prefill, logits, greedy and sampled generation,
 * bad input leaves the session unchanged. Checked against the tiny-dense fixture's
 * transformers outputs (float64 run, f32 rotary frequencies as from_pretrained uses). */
#include "core/safetensors.h"
#include "qtest.h"
#include "qvlm.h"

#define FX QVLM_FIXTURES "/tiny-dense"

static qvlm_model *model;
static qvlm_st_file ref, ref64;
static int32_t ids[256];
static int64_t n_ids;

static void load_prompt(const char *name) {
    char key[64];
    snprintf(key, sizeof(key), "%s.input_ids", name);
    const qvlm_st_tensor *t = qvlm_st_file_find(&ref, key);
    n_ids = t ? t->n_elements : 0;
    for (int64_t i = 0; i < n_ids; i++) ids[i] = (int32_t)((const int64_t *)t->data)[i];
}

struct collect {
    int32_t tok[64];
    int n;
};
static int on_token(void *u, int32_t t) {
    struct collect *c = u;
    c->tok[c->n++] = t;
    return 0;
}

static void test_prefill_matches_reference(void) {
    qvlm_error err;
    qvlm_session *s;
    ASSERT_OK(qvlm_session_create(model, NULL, &s, &err), &err);
    load_prompt("text_only");
    ASSERT_TRUE(qvlm_session_logits(s) == NULL);
    ASSERT_OK(qvlm_session_feed_tokens(s, ids, (size_t)n_ids, &err), &err);
    ASSERT_EQ_INT(qvlm_session_n_tokens(s), n_ids);
    const float *lg = qvlm_session_logits(s);
    const qvlm_st_tensor *r = qvlm_st_file_find(&ref64, "text_only.logits_f64");
    ASSERT_TRUE(lg && r);
    int32_t V = qvlm_model_vocab_size(model);
    const double *last = (const double *)r->data + (n_ids - 1) * V;
    double mx = 0;
    for (int32_t i = 0; i < V; i++) mx = fmax(mx, fabs(lg[i] - last[i]));
    ASSERT_TRUE(mx <= 1e-3);
    /* Greedy generation reproduces transformers' 12 tokens. */
    struct collect c = {0};
    qvlm_sampling greedy = {0};
    ASSERT_OK(qvlm_session_generate(s, &greedy, 12, on_token, &c, &err), &err);
    const qvlm_st_tensor *g = qvlm_st_file_find(&ref, "text_only.greedy");
    ASSERT_EQ_INT(c.n, 12);
    for (int k = 0; k < 12; k++) ASSERT_EQ_INT(c.tok[k], ((const int64_t *)g->data)[k]);
    ASSERT_EQ_INT(qvlm_session_n_tokens(s), n_ids + 12);
    qvlm_session_destroy(s);
}

static void test_split_feeding_agrees(void) {
    qvlm_error err;
    qvlm_session *a, *b;
    qvlm_session_params small = {.max_batch = 64};
    ASSERT_OK(qvlm_session_create(model, NULL, &a, &err), &err);
    ASSERT_OK(qvlm_session_create(model, &small, &b, &err), &err);
    load_prompt("text_only");
    memcpy(ids + n_ids, ids, (size_t)n_ids * sizeof(int32_t)); /* 66 tokens: two batches of 64 in b */
    n_ids *= 2;
    ASSERT_OK(qvlm_session_feed_tokens(a, ids, (size_t)n_ids, &err), &err);
    ASSERT_OK(qvlm_session_feed_tokens(b, ids, 10, &err), &err);
    ASSERT_OK(qvlm_session_feed_tokens(b, ids + 10, 1, &err), &err);
    ASSERT_OK(qvlm_session_feed_tokens(b, ids + 11, (size_t)n_ids - 11, &err), &err);
    const float *la = qvlm_session_logits(a), *lb = qvlm_session_logits(b);
    double mx = 0;
    for (int32_t i = 0; i < qvlm_model_vocab_size(model); i++) mx = fmax(mx, fabs(la[i] - lb[i]));
    printf("  split vs whole prefill: max |diff| %.3g\n", mx);
    ASSERT_TRUE(mx <= 1e-4);
    qvlm_session_destroy(a);
    qvlm_session_destroy(b);
}

static void test_sampling(void) {
    qvlm_error err;
    qvlm_session *s;
    ASSERT_OK(qvlm_session_create(model, NULL, &s, &err), &err);
    load_prompt("text_only");
    struct collect c1 = {0}, c2 = {0}, c3 = {0};
    qvlm_sampling hot = {1.5f, 0, 0.9f, 0.0f, 42};
    for (int rep = 0; rep < 2; rep++) {
        qvlm_session_reset(s);
        ASSERT_OK(qvlm_session_feed_tokens(s, ids, (size_t)n_ids, &err), &err);
        ASSERT_OK(qvlm_session_generate(s, &hot, 16, on_token, rep ? (void *)&c2 : (void *)&c1, &err), &err);
    }
    ASSERT_EQ_INT(c1.n, c2.n);
    for (int k = 0; k < c1.n; k++) ASSERT_EQ_INT(c1.tok[k], c2.tok[k]); /* same seed, same tokens */
    /* top_k = 1 at any temperature is greedy */
    qvlm_sampling k1 = {2.0f, 1, 1.0f, 0.0f, 7};
    qvlm_session_reset(s);
    ASSERT_OK(qvlm_session_feed_tokens(s, ids, (size_t)n_ids, &err), &err);
    ASSERT_OK(qvlm_session_generate(s, &k1, 12, on_token, &c3, &err), &err);
    const qvlm_st_tensor *g = qvlm_st_file_find(&ref, "text_only.greedy");
    for (int k = 0; k < 12; k++) ASSERT_EQ_INT(c3.tok[k], ((const int64_t *)g->data)[k]);
    qvlm_sampling bad = {0.7f, 0, 1.5f, 0.0f, 0};
    ASSERT_FAILS(qvlm_session_generate(s, &bad, 4, NULL, NULL, &err), QVLM_E_INVALID, &err, "top_p 1.5");
    qvlm_session_destroy(s);
}

static void test_bad_ids_leave_session_unchanged(void) {
    qvlm_error err;
    qvlm_session *s;
    ASSERT_OK(qvlm_session_create(model, NULL, &s, &err), &err);
    int32_t good[3] = {1, 2, 3}, bad[3] = {1, 5000, 3};
    ASSERT_OK(qvlm_session_feed_tokens(s, good, 3, &err), &err);
    ASSERT_FAILS(qvlm_session_feed_tokens(s, bad, 3, &err), QVLM_E_INVALID, &err, "id 5000 is outside the vocabulary");
    ASSERT_EQ_INT(qvlm_session_n_tokens(s), 3);
    qvlm_session_params odd = {.max_batch = 100};
    qvlm_session *t = NULL;
    ASSERT_FAILS(qvlm_session_create(model, &odd, &t, &err), QVLM_E_INVALID, &err, "multiple of 64");
    qvlm_session_destroy(s);
}

/* turn4 of the fixture through the public multimodal API: images from their files (PNG and
 * JPEG), pads already expanded in the reference ids; last-position logits vs transformers'
 * float64 run and the 12 greedy tokens. */
static void test_multimodal_feed(void) {
    qvlm_error err;
    qvlm_session *s;
    ASSERT_OK(qvlm_session_create(model, NULL, &s, &err), &err);
    load_prompt("turn4");
    qvlm_image_input imgs[4] = {{.path = FX "/images/img0.png"}, {.path = FX "/images/img1.png"},
                                {.path = FX "/images/img2.png"}, {.path = FX "/images/img3.jpg"}};
    ASSERT_OK(qvlm_session_feed(s, ids, (size_t)n_ids, imgs, 4, &err), &err);
    ASSERT_EQ_INT(qvlm_session_n_tokens(s), n_ids);
    const float *lg = qvlm_session_logits(s);
    const qvlm_st_tensor *r = qvlm_st_file_find(&ref64, "turn4.logits_f64");
    int32_t V = qvlm_model_vocab_size(model);
    double mx = 0;
    for (int32_t i = 0; i < V; i++) mx = fmax(mx, fabs(lg[i] - ((const double *)r->data)[(n_ids - 1) * V + i]));
    printf("  turn4 last logits vs f64: %.3g\n", mx);
    ASSERT_TRUE(mx <= 1e-3);
    struct collect c = {0};
    qvlm_sampling greedy = {0};
    ASSERT_OK(qvlm_session_generate(s, &greedy, 12, on_token, &c, &err), &err);
    const qvlm_st_tensor *g = qvlm_st_file_find(&ref, "turn4.greedy");
    for (int k = 0; k < 12; k++) ASSERT_EQ_INT(c.tok[k], ((const int64_t *)g->data)[k]);
    /* Placeholders and images must agree; a broken image is named; nothing is fed either way. */
    qvlm_session_reset(s);
    ASSERT_FAILS(qvlm_session_feed(s, ids, (size_t)n_ids, imgs, 3, &err), QVLM_E_MISMATCH, &err,
                 "more image placeholders than the 3 image(s) given");
    static const uint8_t junk[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    qvlm_image_input bad[4] = {imgs[0], {.data = junk, .n_bytes = sizeof(junk)}, imgs[2], imgs[3]};
    ASSERT_FAILS(qvlm_session_feed(s, ids, (size_t)n_ids, bad, 4, &err), QVLM_E_CORRUPT, &err, "image 1");
    ASSERT_EQ_INT(qvlm_session_n_tokens(s), 0);
    /* A single pad per image (as a chat template writes it) is expanded to the grid. */
    int32_t one[5] = {7, 1002, 1004, 1003, 9};
    ASSERT_OK(qvlm_session_feed(s, one, 5, imgs, 1, &err), &err);
    ASSERT_EQ_INT(qvlm_session_n_tokens(s), 4 + 4); /* img0: 4x4 patches = 4 merged tokens */
    qvlm_session_destroy(s);
}

int main(void) {
    qvlm_error err;
    qvlm_model_params mp;
    qvlm_model_params_default(&mp);
    mp.n_threads = 2;
    if (qvlm_model_load(FX "/model", &mp, &model, &err) || qvlm_st_open(FX "/reference.safetensors", &ref, &err) ||
        qvlm_st_open(FX "/reference_f64.safetensors", &ref64, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return 1;
    }
    RUN(test_prefill_matches_reference);
    RUN(test_split_feeding_agrees);
    RUN(test_sampling);
    RUN(test_bad_ids_leave_session_unchanged);
    RUN(test_multimodal_feed);
    qvlm_st_close(&ref);
    qvlm_st_close(&ref64);
    qvlm_model_destroy(model);
    return qtest_done();
}
