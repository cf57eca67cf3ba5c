/* response.c - OpenAI chat completion bodies from a parsed reply (see response.h). */
#include "server/response.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "server/api_error.h"

static void random_hex(char *out, size_t n_hex) {
    static const char hex[] = "0123456789abcdef";
    unsigned char b[32];
    randombytes_buf(b, sizeof(b));
    for (size_t i = 0; i < n_hex && i < 64; i++) out[i] = hex[(b[i / 2] >> (i % 2 ? 0 : 4)) & 15];
    out[n_hex < 64 ? n_hex : 64] = 0;
}

void srv_answer_id_init(srv_answer_id *a, const char *model) {
    strcpy(a->id, "chatcmpl-");
    random_hex(a->id + 9, 24);
    a->created = (json_int_t)time(NULL);
    a->model = model;
}

const char *srv_finish_reason(const qvlm_reply *r, qvlm_finish finish) {
    const qvlm_tool_call *calls;
    if (qvlm_reply_tool_calls(r, &calls) > 0) return "tool_calls";
    return finish == QVLM_FINISH_LENGTH ? "length" : "stop";
}

json_t *srv_usage_json(const qvlm_prompt_stats *ps, const qvlm_reply_stats *rs) {
    return json_pack("{s:I, s:i, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)ps->prompt_tokens, "completion_tokens",
                     rs->n_tokens, "total_tokens", (json_int_t)ps->prompt_tokens + rs->n_tokens, "prompt_tokens_details",
                     "cached_tokens", (json_int_t)ps->reused_tokens);
}

json_t *srv_timings_json(const qvlm_prompt_stats *ps, const qvlm_reply_stats *rs) {
    double gen_ms = rs->generate_ms;
    return json_pack("{s:I, s:f, s:I, s:i, s:i, s:f, s:i, s:f, s:f, s:f}", "prompt_n", (json_int_t)ps->prefilled_tokens,
                     "prompt_ms", ps->total_ms, "cached_n", (json_int_t)ps->reused_tokens, "images_encoded",
                     ps->images_encoded, "images_cached", ps->images_in_prefix + ps->images_from_feature_cache,
                     "vision_ms", ps->vision_ms, "predicted_n", rs->n_tokens, "predicted_ms", gen_ms,
                     "prompt_per_second", ps->total_ms > 0 ? 1e3 * (double)ps->prefilled_tokens / ps->total_ms : 0.0,
                     "predicted_per_second", gen_ms > 0 ? 1e3 * rs->n_tokens / gen_ms : 0.0);
}

json_t *srv_chunk_json(const srv_answer_id *a, json_t *delta, const char *finish) {
    return json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:s?}]}", "id", a->id, "object", "chat.completion.chunk",
                     "created", a->created, "model", a->model, "choices", "index", 0, "delta", delta, "logprobs",
                     "finish_reason", finish);
}

/* A tool call as OpenAI sends it; chunks add its index. Ids are fresh per answer. */
static json_t *tool_call_json(const qvlm_tool_call *c, int index) {
    char id[40] = "call_";
    random_hex(id + 5, 24);
    json_t *t = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", id, "type", "function", "function", "name", c->name,
                          "arguments", c->arguments);
    if (t && index >= 0) json_object_set_new(t, "index", json_integer(index));
    return t;
}

json_t *srv_delta_json(const qvlm_reply *r, const qvlm_reply_delta *d) {
    json_t *delta = json_object();
    if (d->n_reasoning) json_object_set_new(delta, "reasoning_content", srv_json_text(d->reasoning, d->n_reasoning));
    if (d->n_content) json_object_set_new(delta, "content", srv_json_text(d->content, d->n_content));
    if (d->n_tool_calls) {
        const qvlm_tool_call *calls;
        qvlm_reply_tool_calls(r, &calls);
        json_t *arr = json_array();
        for (int i = d->first_tool_call; i < d->first_tool_call + d->n_tool_calls; i++)
            json_array_append_new(arr, tool_call_json(&calls[i], i));
        json_object_set_new(delta, "tool_calls", arr);
    }
    if (json_object_size(delta)) return delta;
    json_decref(delta);
    return NULL;
}

json_t *srv_usage_chunk_json(const srv_answer_id *a, const qvlm_prompt_stats *ps, const qvlm_reply_stats *rs) {
    return json_pack("{s:s, s:s, s:I, s:s, s:[], s:o, s:o}", "id", a->id, "object", "chat.completion.chunk", "created",
                     a->created, "model", a->model, "choices", "usage", srv_usage_json(ps, rs), "timings",
                     srv_timings_json(ps, rs));
}

static json_t *message_json(const qvlm_reply *r) {
    size_t n_c, n_r;
    const char *content = qvlm_reply_content(r, &n_c), *reasoning = qvlm_reply_reasoning(r, &n_r);
    const qvlm_tool_call *calls;
    int n_calls = qvlm_reply_tool_calls(r, &calls);
    json_t *m = json_pack("{s:s}", "role", "assistant");
    /* OpenAI sends content null beside tool calls when there is no text. */
    json_object_set_new(m, "content", n_c || !n_calls ? srv_json_text(content, n_c) : json_null());
    if (n_r) json_object_set_new(m, "reasoning_content", srv_json_text(reasoning, n_r));
    if (n_calls) {
        json_t *arr = json_array();
        for (int i = 0; i < n_calls; i++) json_array_append_new(arr, tool_call_json(&calls[i], -1));
        json_object_set_new(m, "tool_calls", arr);
    }
    return m;
}

json_t *srv_completion_json(const srv_answer_id *a, const qvlm_reply *r, const qvlm_prompt_stats *ps,
                            const qvlm_reply_stats *rs) {
    return json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:s}], s:o, s:o}", "id", a->id, "object", "chat.completion",
                     "created", a->created, "model", a->model, "choices", "index", 0, "message", message_json(r), "logprobs",
                     "finish_reason", srv_finish_reason(r, rs->finish), "usage", srv_usage_json(ps, rs), "timings",
                     srv_timings_json(ps, rs));
}
