/* chat_test.c - OpenAI-style messages through the model's template and the cache: a 3-turn
 * image chat reuses every earlier turn and image exactly (cached == uncached, bit for bit),
 * images come from data: URIs or allowed files only, and every bad request part is named. */
#include <sodium.h>

#include "core/fileio.h"
#include "qtest.h"
#include "qvlm.h"

#define FX QVLM_FIXTURES "/tiny-dense"

static qvlm_model *model;
static char *uri[4];

static char *data_uri(const char *path) {
    char *buf;
    size_t n;
    qvlm_error err;
    if (qvlm_file_read(path, 1 << 24, &buf, &n, &err)) return NULL;
    size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
    char *out = malloc(cap + 32);
    strcpy(out, "data:image/png;base64,");
    sodium_bin2base64(out + strlen(out), cap, (const unsigned char *)buf, n, sodium_base64_VARIANT_ORIGINAL);
    free(buf);
    return out;
}

/* A 3-turn conversation's message arrays, as a client resends them each turn. */
static char *turn_messages(int t) {
    char *s = malloc(1 << 20);
    int k = sprintf(s, "[{\"role\":\"system\",\"content\":\"You describe images.\"},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"%s\"}},"
                       "{\"type\":\"text\",\"text\":\"What is this?\"}]}",
                    uri[0]);
    if (t >= 2)
        k += sprintf(s + k, ",{\"role\":\"assistant\",\"content\":\"<think>\\nhmm\\n</think>\\n\\nA cat.\"},"
                            "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"And this?\"},"
                            "{\"type\":\"image\",\"image\":\"%s\"}]}",
                     uri[1]);
    if (t >= 3)
        k += sprintf(s + k, ",{\"role\":\"assistant\",\"content\":\"A dog.\"},"
                            "{\"role\":\"user\",\"content\":\"Which one is cuter?\"}");
    strcpy(s + k, "]");
    return s;
}

static void run_chat(qvlm_cache *cache, float **last, qvlm_prompt_stats *st) {
    qvlm_error err;
    qvlm_session *s;
    qvlm_session_params sp = {.cache = cache};
    if (qvlm_session_create(model, &sp, &s, &err)) return;
    int32_t V = qvlm_model_vocab_size(model);
    for (int t = 1; t <= 3; t++) {
        char *m = turn_messages(t);
        qvlm_status rc = qvlm_session_chat(s, m, strlen(m), NULL, &err);
        free(m);
        if (rc) {
            fprintf(stderr, "turn %d: %s\n", t, err.msg);
            break;
        }
        last[t - 1] = malloc((size_t)V * sizeof(float));
        memcpy(last[t - 1], qvlm_session_logits(s), (size_t)V * sizeof(float));
        qvlm_session_prompt_stats(s, &st[t - 1]);
        qvlm_sampling g = {0};
        qvlm_session_generate(s, &g, 5, NULL, NULL, &err);
    }
    qvlm_session_destroy(s);
}

static void test_three_turn_image_chat(void) {
    qvlm_error err;
    qvlm_cache *c;
    qvlm_cache_config cc = {(size_t)256 << 20, NULL, 0, 0};
    ASSERT_OK(qvlm_model_cache_create(model, &cc, &c, &err), &err);
    float *a[3] = {0}, *b[3] = {0};
    qvlm_prompt_stats sa[3], sb[3];
    run_chat(c, a, sa);
    run_chat(NULL, b, sb);
    int32_t V = qvlm_model_vocab_size(model);
    for (int t = 0; t < 3; t++) {
        ASSERT_TRUE(a[t] && b[t]);
        ASSERT_TRUE(memcmp(a[t], b[t], (size_t)V * sizeof(float)) == 0); /* cached == uncached, bitwise */
        printf("  turn %d: %lld tokens, reused %lld, images %d (encoded %d, in prefix %d)\n", t + 1,
               (long long)sa[t].prompt_tokens, (long long)sa[t].reused_tokens, sa[t].images_total, sa[t].images_encoded,
               sa[t].images_in_prefix);
    }
    /* Turn 2 reuses all of turn 1's prompt but its "<think>\n" (the template drops past
     * thinking), and encodes only the new image; turn 3 encodes none. */
    ASSERT_TRUE(sa[1].reused_tokens >= sa[0].prompt_tokens - 2);
    ASSERT_EQ_INT(sa[1].images_encoded, 1);
    ASSERT_EQ_INT(sa[2].images_encoded, 0);
    ASSERT_TRUE(sa[2].reused_tokens >= sa[1].prompt_tokens - 2);
    for (int t = 0; t < 3; t++) free(a[t]), free(b[t]);
    qvlm_cache_destroy(c);
}

static void expect_error(const char *json, const qvlm_chat_options *o, qvlm_status code, const char *needle) {
    qvlm_error err;
    qvlm_session *s;
    if (qvlm_session_create(model, NULL, &s, &err)) QTEST_FAIL("session: %s", err.msg);
    err.msg[0] = 0;
    qvlm_status rc = qvlm_session_chat(s, json, strlen(json), o, &err);
    qvlm_session_destroy(s);
    if (rc != code || !strstr(err.msg, needle)) QTEST_FAIL("%s\n    -> %d \"%s\", expected %d with \"%s\"", json, rc, err.msg, code, needle);
}

static void test_bad_requests_named(void) {
    expect_error("[{\"role\":\"user\",\"content\":", NULL, QVLM_E_INVALID, "invalid JSON");
    expect_error("[]", NULL, QVLM_E_INVALID, "non-empty array");
    expect_error("[{\"content\":\"hi\"}]", NULL, QVLM_E_INVALID, "messages[0].role");
    expect_error("[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,@@@\"}}]}]",
                 NULL, QVLM_E_INVALID, "messages[0].content[0].image_url.url: invalid base64");
    expect_error("[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]}]",
                 NULL, QVLM_E_UNSUPPORTED, "image 0: unknown image format");
    expect_error("[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAABnYXJiYWdl\"}}]}]",
                 NULL, QVLM_E_CORRUPT, "image 0");
    expect_error("[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x.org/a.png\"}}]}]",
                 NULL, QVLM_E_UNSUPPORTED, "remote image URLs are not fetched");
    expect_error("[{\"role\":\"user\",\"content\":[{\"type\":\"image\",\"image\":\"" FX "/images/img0.png\"}]}]", NULL,
                 QVLM_E_INVALID, "local image files are not allowed");
    qvlm_chat_options o = {.enable_thinking = -1, .allow_dir = FX "/model"};
    expect_error("[{\"role\":\"user\",\"content\":[{\"type\":\"image\",\"image\":\"" FX "/images/img0.png\"}]}]", &o,
                 QVLM_E_INVALID, "outside the allowed directory");
    expect_error("[{\"role\":\"user\",\"content\":[{\"type\":\"video\",\"video\":\"x.mp4\"}]}]", NULL, QVLM_E_UNSUPPORTED,
                 "video input is not supported");
    expect_error("[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"system\",\"content\":\"b\"}]", NULL, QVLM_E_INVALID,
                 "System message must be at the beginning.");
    expect_error("[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":\"[1\"}}]},"
                 "{\"role\":\"user\",\"content\":\"x\"}]",
                 NULL, QVLM_E_INVALID, "messages[0].tool_calls[0].function.arguments");
}

static void test_allowed_file_and_tool_call(void) {
    qvlm_error err;
    qvlm_session *s;
    ASSERT_OK(qvlm_session_create(model, NULL, &s, &err), &err);
    qvlm_chat_options o = {.enable_thinking = 0, .allow_dir = FX};
    const char *m = "[{\"role\":\"user\",\"content\":[{\"type\":\"image\",\"image\":\"" FX "/images/img3.jpg\"},"
                    "{\"type\":\"text\",\"text\":\"hi\"}]},"
                    "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"type\":\"function\",\"function\":"
                    "{\"name\":\"get\",\"arguments\":\"{\\\"city\\\": \\\"Oslo\\\"}\"}}]},"
                    "{\"role\":\"tool\",\"content\":\"cold\"}]";
    ASSERT_OK(qvlm_session_chat(s, m, strlen(m), &o, &err), &err);
    const qvlm_image_span_info *sp;
    ASSERT_EQ_INT(qvlm_session_image_spans(s, &sp), 1);
    ASSERT_TRUE(sp[0].end > sp[0].start);
    qvlm_session_destroy(s);
}


/* n_ctx: a prompt that does not fit is refused before its image is encoded; generation stops
 * when the context is full. */
static void test_context_limit(void) {
    qvlm_error err;
    qvlm_session *s;
    qvlm_session_params sp = {.n_ctx = 40};
    ASSERT_OK(qvlm_session_create(model, &sp, &s, &err), &err);
    char *m = turn_messages(1);
    ASSERT_FAILS(qvlm_session_chat(s, m, strlen(m), NULL, &err), QVLM_E_LIMIT, &err, "do not fit the context of 40");
    qvlm_prompt_stats st;
    qvlm_session_prompt_stats(s, &st);
    ASSERT_EQ_INT(st.images_encoded, 0);
    free(m);
    const char *small = "[{\"role\":\"user\",\"content\":\"hi\"}]";
    ASSERT_OK(qvlm_session_chat(s, small, strlen(small), NULL, &err), &err);
    qvlm_session_prompt_stats(s, &st);
    ASSERT_TRUE(st.prompt_tokens < 40);
    const int32_t *eos;
    ASSERT_EQ_INT(qvlm_model_eos_ids(model, &eos), 1);
    qvlm_sampling g = {.temperature = 1.0f, .top_p = 1.0f, .seed = 7};
    ASSERT_OK(qvlm_session_generate(s, &g, 1000, NULL, NULL, &err), &err);
    /* Either the context filled or the model ended; a random model rarely picks EOS. */
    ASSERT_TRUE(qvlm_session_n_tokens(s) <= 40);
    ASSERT_EQ_INT(qvlm_model_n_ctx_train(model), 4096);
    qvlm_session_destroy(s);
}

int main(void) {
    qvlm_error err;
    qvlm_model_params mp;
    qvlm_model_params_default(&mp);
    mp.n_threads = 2;
    if (sodium_init() < 0 || qvlm_model_load(FX "/model", &mp, &model, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return 1;
    }
    uri[0] = data_uri(FX "/images/img0.png");
    uri[1] = data_uri(FX "/images/img1.png");
    RUN(test_three_turn_image_chat);
    RUN(test_bad_requests_named);
    RUN(test_allowed_file_and_tool_call);
    RUN(test_context_limit);
    free(uri[0]), free(uri[1]);
    qvlm_model_destroy(model);
    return qtest_done();
}
