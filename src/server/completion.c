/* completion.c - POST /v1/chat/completions.
 *
 * Connection side (srv_completion_handle): parse and check the body, queue a job, wait for it
 * while watching the client's socket (a client that leaves cancels its job), then answer:
 * an error with its status if the prompt failed, the whole JSON body, or an SSE stream.
 * Headers go out only once the prompt is made, so a bad image or an over-long prompt gets a
 * proper 400 even when streaming.
 *
 * Worker side (srv_completion_run): the whole conversation through qvlm_session_chat (the
 * cache reuses what earlier turns computed), then qvlm_session_generate_reply; deltas become
 * SSE chunks (reasoning_content, content, tool_calls) or one chat.completion body, with
 * `usage` (prompt_tokens_details.cached_tokens) and llama.cpp-style `timings`. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/job.h"
#include "server/request.h"
#include "server/server.h"
#include "server/slots.h"
#include "server/sse.h"

#define WAIT_SLICE_MS 200

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static void random_hex(char *out, size_t n_hex) {
    static const char hex[] = "0123456789abcdef";
    unsigned char b[32];
    randombytes_buf(b, sizeof(b));
    for (size_t i = 0; i < n_hex && i < 64; i++) out[i] = hex[(b[i / 2] >> (i % 2 ? 0 : 4)) & 15];
    out[n_hex < 64 ? n_hex : 64] = 0;
}

/* ==== worker side ============================================================================== */

typedef struct run_ctx {
    srv_server *srv;
    srv_job *job;
    qvlm_session *s;
    qvlm_reply *reply;
    char id[48];
    json_int_t created;
    qvlm_error err;
} run_ctx;

static json_t *tool_call_json(const qvlm_tool_call *c, int index) {
    char id[40] = "call_";
    random_hex(id + 5, 24);
    return json_pack("{s:i, s:s, s:s, s:{s:s, s:s}}", "index", index, "id", id, "type", "function", "function", "name",
                     c->name, "arguments", c->arguments);
}

static json_t *chunk(const run_ctx *c, json_t *delta, const char *finish) {
    return json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:s?}]}", "id", c->id, "object", "chat.completion.chunk",
                     "created", c->created, "model", c->srv->cfg.model_name, "choices", "index", 0, "delta", delta,
                     "logprobs", "finish_reason", finish);
}

/* Append an SSE event to the job and wake its connection. */
static void emit(run_ctx *c, json_t *j) {
    srv_job *job = c->job;
    pthread_mutex_lock(&job->mu);
    if (j) srv_sse_event(&job->out, j, NULL);
    pthread_cond_broadcast(&job->cv);
    pthread_mutex_unlock(&job->mu);
    json_decref(j);
}

static int on_delta(void *user, const qvlm_reply_delta *d) {
    run_ctx *c = user;
    if (!c->job->req.stream) return srv_job_is_cancelled(c->job);
    json_t *delta = json_object();
    if (d->n_reasoning) json_object_set_new(delta, "reasoning_content", srv_json_text(d->reasoning, d->n_reasoning));
    if (d->n_content) json_object_set_new(delta, "content", srv_json_text(d->content, d->n_content));
    if (d->n_tool_calls) {
        const qvlm_tool_call *calls;
        qvlm_reply_tool_calls(c->reply, &calls);
        json_t *arr = json_array();
        for (int i = d->first_tool_call; i < d->first_tool_call + d->n_tool_calls; i++)
            json_array_append_new(arr, tool_call_json(&calls[i], i));
        json_object_set_new(delta, "tool_calls", arr);
    }
    if (json_object_size(delta)) emit(c, chunk(c, delta, NULL));
    else json_decref(delta);
    return srv_job_is_cancelled(c->job);
}

/* Cancels that land before qvlm_session_prompt starts are lost by it (it clears the flag):
 * repeat them at every progress report. */
static void on_progress(void *user, const char *stage, int64_t done, int64_t total) {
    (void)stage, (void)done, (void)total;
    run_ctx *c = user;
    if (srv_job_is_cancelled(c->job)) qvlm_session_cancel(c->s);
}

static json_t *usage_json(const qvlm_prompt_stats *ps, const qvlm_reply_stats *rs) {
    return json_pack("{s:I, s:i, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)ps->prompt_tokens, "completion_tokens",
                     rs->n_tokens, "total_tokens", (json_int_t)ps->prompt_tokens + rs->n_tokens, "prompt_tokens_details",
                     "cached_tokens", (json_int_t)ps->reused_tokens);
}

static json_t *timings_json(const qvlm_prompt_stats *ps, const qvlm_reply_stats *rs) {
    double gen_ms = rs->generate_ms;
    return json_pack("{s:I, s:f, s:I, s:i, s:i, s:f, s:i, s:f, s:f, s:f}", "prompt_n", (json_int_t)ps->prefilled_tokens,
                     "prompt_ms", ps->total_ms, "cached_n", (json_int_t)ps->reused_tokens, "images_encoded",
                     ps->images_encoded, "images_cached", ps->images_in_prefix + ps->images_from_feature_cache,
                     "vision_ms", ps->vision_ms, "predicted_n", rs->n_tokens, "predicted_ms", gen_ms,
                     "prompt_per_second", ps->total_ms > 0 ? 1e3 * (double)ps->prefilled_tokens / ps->total_ms : 0.0,
                     "predicted_per_second", gen_ms > 0 ? 1e3 * rs->n_tokens / gen_ms : 0.0);
}

static const char *finish_reason(const run_ctx *c, const qvlm_reply_stats *rs) {
    const qvlm_tool_call *calls;
    if (qvlm_reply_tool_calls(c->reply, &calls) > 0) return "tool_calls";
    return rs->finish == QVLM_FINISH_LENGTH ? "length" : "stop";
}

static json_t *message_json(const run_ctx *c) {
    size_t n_c, n_r;
    const char *content = qvlm_reply_content(c->reply, &n_c), *reasoning = qvlm_reply_reasoning(c->reply, &n_r);
    const qvlm_tool_call *calls;
    int n_calls = qvlm_reply_tool_calls(c->reply, &calls);
    json_t *m = json_pack("{s:s}", "role", "assistant");
    /* OpenAI sends content null beside tool calls when there is no text. */
    json_object_set_new(m, "content", n_c || !n_calls ? srv_json_text(content, n_c) : json_null());
    if (n_r) json_object_set_new(m, "reasoning_content", srv_json_text(reasoning, n_r));
    if (n_calls) {
        json_t *arr = json_array();
        for (int i = 0; i < n_calls; i++) {
            json_t *t = tool_call_json(&calls[i], i);
            json_object_del(t, "index"); /* only chunks carry an index */
            json_array_append_new(arr, t);
        }
        json_object_set_new(m, "tool_calls", arr);
    }
    return m;
}

/* The end of a successful answer: the final chunk(s) and [DONE], or the whole body. */
static void finish(run_ctx *c, const qvlm_prompt_stats *ps, const qvlm_reply_stats *rs) {
    srv_job *job = c->job;
    const char *why = finish_reason(c, rs);
    if (job->req.stream) {
        json_t *last = chunk(c, json_object(), why);
        json_object_set_new(last, "timings", timings_json(ps, rs));
        emit(c, last);
        if (job->req.include_usage) {
            json_t *u = json_pack("{s:s, s:s, s:I, s:s, s:[], s:o, s:o}", "id", c->id, "object", "chat.completion.chunk",
                                  "created", c->created, "model", c->srv->cfg.model_name, "choices", "usage",
                                  usage_json(ps, rs), "timings", timings_json(ps, rs));
            emit(c, u);
        }
        pthread_mutex_lock(&job->mu);
        srv_sse_done(&job->out, NULL);
        pthread_mutex_unlock(&job->mu);
        return;
    }
    json_t *body = json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:s}], s:o, s:o}", "id", c->id, "object",
                             "chat.completion", "created", c->created, "model", c->srv->cfg.model_name, "choices", "index",
                             0, "message", message_json(c), "logprobs", "finish_reason", why, "usage", usage_json(ps, rs),
                             "timings", timings_json(ps, rs));
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    pthread_mutex_lock(&job->mu);
    if (text) qvlm_buf_puts(&job->out, text, NULL);
    if (!text || job->out.failed) {
        job->failed = true;
        srv_error_set(&job->error, 503, "server_error", "overloaded", NULL, "out of memory building the response");
    }
    pthread_mutex_unlock(&job->mu);
    free(text);
    json_decref(body);
}

/* A failure: before the answer (or for a whole-body request) the connection answers with it;
 * in a stream that has begun, it becomes an error event. */
static void fail(run_ctx *c, qvlm_status rc) {
    srv_job *job = c->job;
    srv_error e;
    c->err.code = rc;
    srv_error_from_engine(&e, &c->err, job->req.image_params, job->req.n_images);
    pthread_mutex_lock(&job->mu);
    bool streaming = job->req.stream && job->state == SRV_JOB_ANSWER;
    if (streaming) {
        json_t *ej = srv_error_json(&e);
        srv_sse_event(&job->out, ej, NULL);
        srv_sse_done(&job->out, NULL);
        json_decref(ej);
    } else {
        job->failed = true;
        job->error = e;
    }
    pthread_mutex_unlock(&job->mu);
}

static qvlm_status prompt(run_ctx *c) {
    const srv_request *r = &c->job->req;
    qvlm_chat_options co = {.tools_json = r->tools_json,
                            .enable_thinking = r->enable_thinking,
                            .allow_dir = c->srv->cfg.allow_dir,
                            .extra_json = r->extra_json};
    qvlm_session_set_progress(c->s, on_progress, c);
    return qvlm_session_chat(c->s, r->messages_json, strlen(r->messages_json), &co, &c->err);
}

static qvlm_status answer(run_ctx *c, const qvlm_prompt_stats *ps, qvlm_reply_stats *rs, double *t_gen) {
    const srv_request *r = &c->job->req;
    qvlm_reply_options ro = {.in_thinking = r->enable_thinking != 0, /* Qwen3.5's prompt opens <think> */
                             .parse_tool_calls = r->parse_tools,
                             .tools_json = r->tools_json,
                             .stop = (const char *const *)r->stop,
                             .n_stop = r->n_stop};
    qvlm_status rc = qvlm_reply_create(&ro, &c->reply, &c->err);
    if (rc) return rc;
    int64_t room = c->srv->cfg.n_ctx - ps->prompt_tokens;
    int max = r->max_tokens > 0 && r->max_tokens < room ? r->max_tokens : (int)QVLM_MIN(room, 1 << 30);
    qvlm_sampling sp = r->sampling;
    if (!r->seed_given) randombytes_buf(&sp.seed, sizeof(sp.seed));
    srv_job_set_state(c->job, SRV_JOB_ANSWER, c->s);
    if (r->stream) emit(c, chunk(c, json_pack("{s:s, s:s}", "role", "assistant", "content", ""), NULL));
    *t_gen = now_ms();
    return qvlm_session_generate_reply(c->s, &sp, max, c->reply, on_delta, c, rs, &c->err);
}

void srv_completion_run(void *server, srv_job *job, qvlm_session *s) {
    run_ctx c = {.srv = server, .job = job, .s = s, .created = (json_int_t)time(NULL)};
    srv_metrics *mt = &c.srv->metrics;
    if (srv_job_is_cancelled(job)) {
        srv_metrics_count(mt, &mt->completions_cancelled);
        srv_job_set_state(job, SRV_JOB_DONE, NULL);
        return;
    }
    strcpy(c.id, "chatcmpl-");
    random_hex(c.id + 9, 24);
    srv_job_set_state(job, SRV_JOB_PROMPT, s);
    qvlm_prompt_stats ps = {0};
    qvlm_reply_stats rs = {0};
    double t_gen = 0;
    qvlm_status rc = prompt(&c);
    if (!rc) {
        qvlm_session_prompt_stats(s, &ps);
        rc = answer(&c, &ps, &rs, &t_gen);
    }
    bool cancelled = srv_job_is_cancelled(job) || rc == QVLM_E_CANCELLED;
    if (cancelled) {
        srv_metrics_count(mt, &mt->completions_cancelled);
    } else if (rc) {
        fail(&c, rc);
        srv_metrics_count(mt, &mt->completions_failed);
    } else {
        finish(&c, &ps, &rs);
        double ttft_s = rs.n_tokens ? (t_gen - job->arrival_ms + rs.first_token_ms) / 1e3 : -1;
        srv_metrics_completion(mt, &ps, rs.n_tokens, ttft_s, rs.generate_ms / 1e3);
    }
    qvlm_session_set_progress(s, NULL, NULL);
    qvlm_reply_destroy(c.reply);
    srv_job_set_state(job, SRV_JOB_DONE, NULL);
}

/* ==== connection side ============================================================================ */

/* Wait for the job to reach `st`, watching the client. false: the client left (job cancelled). */
static bool wait_for(srv_job *job, srv_job_state st, int client_fd) {
    while (srv_job_wait(job, st, WAIT_SLICE_MS) < st) {
        if (srv_client_gone(client_fd)) {
            srv_job_cancel(job);
            return false;
        }
    }
    return true;
}

void srv_completion_handle(srv_server *s, const char *body, size_t n, int client_fd, srv_response *out) {
    srv_request req;
    srv_error e;
    srv_request_limits lim = {s->cfg.max_images, &s->cfg.sampling, s->cfg.max_tokens_default};
    if (!srv_request_parse(body, n, &lim, &req, &e)) {
        srv_respond_error(out, &e);
        return;
    }
    srv_job *job = srv_job_create(&req, now_ms());
    qvlm_error err;
    if (!job) {
        srv_request_free(&req);
        srv_error_set(&e, 503, "server_error", "overloaded", NULL, "out of memory");
        srv_respond_error(out, &e);
        return;
    }
    if (srv_slots_submit(s->slots, job, &err)) {
        srv_metrics_count(&s->metrics, &s->metrics.rejected_busy);
        srv_error_set(&e, 503, "server_error", "overloaded", NULL, "%s", err.msg);
        srv_respond_error(out, &e);
        srv_job_unref(job);
        return;
    }
    bool stream = job->req.stream;
    if (!wait_for(job, stream ? SRV_JOB_ANSWER : SRV_JOB_DONE, client_fd)) {
        out->hang_up = true;
        srv_job_unref(job);
        return;
    }
    pthread_mutex_lock(&job->mu);
    if (job->failed) {
        srv_respond_error(out, &job->error);
    } else if (job->cancelled) {
        srv_error_set(&e, 503, "server_error", "shutting_down", NULL, "the server is shutting down");
        srv_respond_error(out, &e);
    } else if (stream) {
        out->status = 200;
        out->content_type = "text/event-stream";
        out->stream_job = job;
        job->refs++; /* srv_job_ref would take the lock held here */
    } else {
        out->status = 200;
        out->content_type = "application/json";
        out->body = job->out;
        job->out = (qvlm_buf){0};
    }
    pthread_mutex_unlock(&job->mu);
    srv_job_unref(job);
}
