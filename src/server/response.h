/* response.h - the OpenAI chat completion bodies built from a parsed reply: the whole
 * `chat.completion`, the `chat.completion.chunk` events of a stream, `usage` (with
 * prompt_tokens_details.cached_tokens) and llama.cpp-style `timings` (with the cache's numbers:
 * cached_n, images_encoded, images_cached). Pure functions: no server state. */
#ifndef QVLM_SERVER_RESPONSE_H
#define QVLM_SERVER_RESPONSE_H

#include <jansson.h>

#include "qvlm.h"

/* What every body of one answer shares. */
typedef struct srv_answer_id {
    char id[48];        /* "chatcmpl-<24 hex>" */
    json_int_t created; /* Unix seconds */
    const char *model;
} srv_answer_id;

void srv_answer_id_init(srv_answer_id *a, const char *model);
/* "tool_calls" when the reply has any, else "length" or "stop". */
const char *srv_finish_reason(const qvlm_reply *r, qvlm_finish finish);
json_t *srv_usage_json(const qvlm_prompt_stats *ps, const qvlm_reply_stats *rs);
json_t *srv_timings_json(const qvlm_prompt_stats *ps, const qvlm_reply_stats *rs);
/* One chunk carrying `delta` (stolen); finish may be NULL. */
json_t *srv_chunk_json(const srv_answer_id *a, json_t *delta, const char *finish);
/* The delta of one qvlm_reply_delta (reasoning_content, content, tool_calls with their
 * index), or NULL when it carries nothing to send. */
json_t *srv_delta_json(const qvlm_reply *r, const qvlm_reply_delta *d);
/* The final usage-only chunk of a stream (stream_options.include_usage). */
json_t *srv_usage_chunk_json(const srv_answer_id *a, const qvlm_prompt_stats *ps, const qvlm_reply_stats *rs);
/* The whole non-streamed answer. */
json_t *srv_completion_json(const srv_answer_id *a, const qvlm_reply *r, const qvlm_prompt_stats *ps,
                            const qvlm_reply_stats *rs);

#endif /* QVLM_SERVER_RESPONSE_H */
