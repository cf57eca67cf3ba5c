/* response_test.c - the server's request parsing and OpenAI response bodies, in C: a reply
 * holding a Qwen3.5 tool call becomes `tool_calls` with finish_reason "tool_calls" (whole and
 * streamed), usage and timings carry the cache's numbers, request fields map to what the
 * engine takes, and engine errors name the request part. */
#include <sodium.h>

#include "qtest.h"
#include "server/api_error.h"
#include "server/request.h"
#include "server/response.h"

static qvlm_reply *parse_reply(const char *text, bool in_thinking, qvlm_reply_delta *deltas, int *n_deltas) {
    qvlm_reply_options o = {.in_thinking = in_thinking, .parse_tool_calls = true};
    qvlm_reply *r;
    qvlm_error err;
    if (qvlm_reply_create(&o, &r, &err)) return NULL;
    *n_deltas = 0;
    for (const char *p = text; *p; p += 5) { /* pieces of 5 bytes, as tokens stream */
        size_t n = strnlen(p, 5);
        qvlm_reply_push(r, p, n, &deltas[*n_deltas], &err);
        if (deltas[*n_deltas].n_tool_calls) (*n_deltas)++; /* keep the tool-call deltas */
        if (n < 5) break;
    }
    qvlm_reply_finish(r, &deltas[*n_deltas], &err);
    if (deltas[*n_deltas].n_tool_calls) (*n_deltas)++;
    return r;
}

static const char *TOOL_REPLY = "The user wants the weather.\n</think>\n\n<tool_call>\n<function=get_weather>\n"
                                "<parameter=city>\nOslo\n</parameter>\n<parameter=days>\n3\n</parameter>\n"
                                "</function>\n</tool_call>";

static void test_tool_call_body(void) {
    qvlm_reply_delta d[8];
    int n_d;
    qvlm_reply *r = parse_reply(TOOL_REPLY, true, d, &n_d);
    ASSERT_TRUE(r);
    srv_answer_id a;
    srv_answer_id_init(&a, "m");
    qvlm_prompt_stats ps = {.prompt_tokens = 100, .reused_tokens = 98, .prefilled_tokens = 2, .images_encoded = 1,
                            .images_in_prefix = 2, .images_from_feature_cache = 1, .total_ms = 12.5};
    qvlm_reply_stats rs = {.n_tokens = 30, .finish = QVLM_FINISH_STOP, .generate_ms = 60};
    json_t *body = srv_completion_json(&a, r, &ps, &rs);
    json_t *choice = json_array_get(json_object_get(body, "choices"), 0), *msg = json_object_get(choice, "message");
    ASSERT_STR_EQ(json_string_value(json_object_get(choice, "finish_reason")), "tool_calls");
    ASSERT_TRUE(json_is_null(json_object_get(msg, "content")));
    ASSERT_STR_EQ(json_string_value(json_object_get(msg, "reasoning_content")), "The user wants the weather.");
    json_t *call = json_array_get(json_object_get(msg, "tool_calls"), 0);
    ASSERT_TRUE(strncmp(json_string_value(json_object_get(call, "id")), "call_", 5) == 0);
    ASSERT_STR_EQ(json_string_value(json_object_get(call, "type")), "function");
    ASSERT_TRUE(json_object_get(call, "index") == NULL); /* only chunks carry an index */
    json_t *fn = json_object_get(call, "function");
    ASSERT_STR_EQ(json_string_value(json_object_get(fn, "name")), "get_weather");
    /* Arguments are a JSON string, as OpenAI sends them. */
    ASSERT_STR_EQ(json_string_value(json_object_get(fn, "arguments")), "{\"city\":\"Oslo\",\"days\":3}");
    json_t *usage = json_object_get(body, "usage"), *t = json_object_get(body, "timings");
    ASSERT_EQ_INT(json_integer_value(json_object_get(json_object_get(usage, "prompt_tokens_details"), "cached_tokens")), 98);
    ASSERT_EQ_INT(json_integer_value(json_object_get(usage, "total_tokens")), 130);
    ASSERT_EQ_INT(json_integer_value(json_object_get(t, "prompt_n")), 2);
    ASSERT_EQ_INT(json_integer_value(json_object_get(t, "cached_n")), 98);
    ASSERT_EQ_INT(json_integer_value(json_object_get(t, "images_encoded")), 1);
    ASSERT_EQ_INT(json_integer_value(json_object_get(t, "images_cached")), 3);
    ASSERT_EQ_INT(json_integer_value(json_object_get(t, "predicted_n")), 30);
    ASSERT_NEAR(json_real_value(json_object_get(t, "predicted_ms")), 60, 1e-9);
    /* Streamed: one delta carries the call with its index. */
    ASSERT_EQ_INT(n_d, 1);
    json_t *delta = srv_delta_json(r, &d[0]);
    json_t *dc = json_array_get(json_object_get(delta, "tool_calls"), 0);
    ASSERT_EQ_INT(json_integer_value(json_object_get(dc, "index")), 0);
    ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(dc, "function"), "name")), "get_weather");
    json_t *chunk = srv_chunk_json(&a, delta, NULL);
    ASSERT_STR_EQ(json_string_value(json_object_get(chunk, "object")), "chat.completion.chunk");
    ASSERT_TRUE(json_is_null(json_object_get(json_array_get(json_object_get(chunk, "choices"), 0), "finish_reason")));
    json_decref(chunk);
    json_decref(body);
    qvlm_reply_destroy(r);
    /* Without a tool call: "length" or "stop", and content a string. */
    r = parse_reply("just text", false, d, &n_d);
    ASSERT_STR_EQ(srv_finish_reason(r, QVLM_FINISH_LENGTH), "length");
    ASSERT_STR_EQ(srv_finish_reason(r, QVLM_FINISH_STOP), "stop");
    body = srv_completion_json(&a, r, &ps, &rs);
    msg = json_object_get(json_array_get(json_object_get(body, "choices"), 0), "message");
    ASSERT_STR_EQ(json_string_value(json_object_get(msg, "content")), "just text");
    ASSERT_TRUE(json_object_get(msg, "reasoning_content") == NULL);
    json_decref(body);
    qvlm_reply_destroy(r);
}

static const qvlm_sampling DEFAULTS = {0.6f, 20, 0.95f, 0.0f, 0};

static bool parse(const char *body, srv_request *r, srv_error *e) {
    srv_request_limits lim = {4, &DEFAULTS, 0};
    return srv_request_parse(body, strlen(body), &lim, r, e);
}

static void test_request_fields(void) {
    srv_request r;
    srv_error e;
    ASSERT_TRUE(parse("{\"messages\":[{\"role\":\"developer\",\"content\":\"be brief\"},{\"role\":\"user\",\"content\":\"hi\"}],"
                      "\"max_completion_tokens\":7,\"temperature\":0,\"top_k\":-1,\"seed\":-5,\"stop\":\"END\","
                      "\"enable_thinking\":true,\"chat_template_kwargs\":{\"enable_thinking\":false,\"add_vision_id\":true},"
                      "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a\"}},{\"type\":\"function\",\"function\":{\"name\":\"b\"}}],"
                      "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"b\"}},\"stream\":true,"
                      "\"stream_options\":{\"include_usage\":true},\"user\":\"ignored\"}",
                      &r, &e));
    ASSERT_CONTAINS(r.messages_json, "\"role\":\"system\""); /* developer is OpenAI's newer name */
    ASSERT_EQ_INT(r.max_tokens, 7);
    ASSERT_NEAR(r.sampling.temperature, 0, 0);
    ASSERT_EQ_INT(r.sampling.top_k, 0);
    ASSERT_TRUE(r.seed_given && r.sampling.seed == (uint64_t)-5);
    ASSERT_NEAR(r.sampling.top_p, 0.95f, 0); /* the server's default */
    ASSERT_EQ_INT(r.n_stop, 1);
    ASSERT_STR_EQ(r.stop[0], "END");
    ASSERT_EQ_INT(r.enable_thinking, 0); /* chat_template_kwargs wins */
    ASSERT_STR_EQ(r.extra_json, "{\"add_vision_id\":true}");
    ASSERT_STR_EQ(r.tools_json, "[{\"type\":\"function\",\"function\":{\"name\":\"b\"}}]"); /* only the chosen one */
    ASSERT_TRUE(r.parse_tools && r.stream && r.include_usage);
    srv_request_free(&r);
    ASSERT_TRUE(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\",\"function\":"
                      "{\"name\":\"a\"}}],\"tool_choice\":\"none\"}",
                      &r, &e));
    ASSERT_TRUE(r.tools_json == NULL && !r.parse_tools && !r.seed_given && r.enable_thinking == -1);
    srv_request_free(&r);
    /* Image parts are counted and each one's request part is remembered for errors. */
    ASSERT_TRUE(parse("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"image_url\","
                      "\"image_url\":{\"url\":\"data:,\"}}]},{\"role\":\"user\",\"content\":[{\"type\":\"image\",\"image\":\"x\"}]}]}",
                      &r, &e));
    ASSERT_EQ_INT(r.n_images, 2);
    ASSERT_STR_EQ(r.image_params[0], "messages[0].content[1].image_url.url");
    ASSERT_STR_EQ(r.image_params[1], "messages[1].content[0].image");
    qvlm_error ee = {QVLM_E_CORRUPT, "image 1: PNG: truncated IDAT"};
    srv_error_from_engine(&e, &ee, r.image_params, r.n_images);
    ASSERT_EQ_INT(e.status, 400);
    ASSERT_STR_EQ(e.param, "messages[1].content[0].image");
    ASSERT_STR_EQ(e.code, "invalid_image");
    srv_request_free(&r);
    ASSERT_TRUE(!parse("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\",\"image\":\"x\"},{\"type\":\"image\","
                       "\"image\":\"x\"},{\"type\":\"image\",\"image\":\"x\"},{\"type\":\"image\",\"image\":\"x\"},{\"type\":\"image\","
                       "\"image\":\"x\"}]}]}",
                       &r, &e));
    ASSERT_STR_EQ(e.code, "too_many_images");
    ASSERT_STR_EQ(e.param, "messages[0].content[4]");
}

static void test_engine_errors(void) {
    srv_error e;
    qvlm_error lim = {QVLM_E_LIMIT, "prompt: 5000 tokens (images expanded) do not fit the context of 4096 tokens"};
    srv_error_from_engine(&e, &lim, NULL, 0);
    ASSERT_EQ_INT(e.status, 400);
    ASSERT_STR_EQ(e.code, "context_length_exceeded");
    qvlm_error bad = {QVLM_E_INVALID, "messages[2].content[0].image_url.url: invalid base64 data"};
    srv_error_from_engine(&e, &bad, NULL, 0);
    ASSERT_STR_EQ(e.param, "messages[2].content[0].image_url.url");
    qvlm_error nomem = {QVLM_E_NOMEM, "out of memory"};
    srv_error_from_engine(&e, &nomem, NULL, 0);
    ASSERT_EQ_INT(e.status, 503);
    /* Messages are cut inside characters or quote odd bytes: the body is still valid JSON. */
    srv_error_set(&e, 400, "invalid_request_error", NULL, NULL, "bad \xff byte and a cut \xe2\x82");
    json_t *j = srv_error_json(&e);
    ASSERT_TRUE(j != NULL);
    ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(j, "error"), "message")), "bad ? byte and a cut ??");
    ASSERT_TRUE(json_is_null(json_object_get(json_object_get(j, "error"), "param")));
    json_decref(j);
}

int main(void) {
    if (sodium_init() < 0) return 1;
    RUN(test_tool_call_body);
    RUN(test_request_fields);
    RUN(test_engine_errors);
    return qtest_done();
}
