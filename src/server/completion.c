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
 * SSE chunks or one chat.completion body (response.c). */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/job.h"
#include "server/request.h"
#include "server/response.h"
#include "server/server.h"
#include "server/slots.h"
#include "server/sse.h"

#define WAIT_SLICE_MS 200

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

/* ==== worker side ============================================================================== */

typedef struct run_ctx {
    srv_server *srv;
    srv_job *job;
    qvlm_session *s;
    qvlm_reply *reply;
    srv_answer_id ans;
    qvlm_error err;
} run_ctx;

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
    json_t *delta = c->job->req.stream ? srv_delta_json(c->reply, d) : NULL;
    if (delta) emit(c, srv_chunk_json(&c->ans, delta, NULL));
    return srv_job_is_cancelled(c->job);
}

/* Cancels that land before qvlm_session_prompt starts are lost by it (it clears the flag):
 * repeat them at every progress report. */
static void on_progress(void *user, const char *stage, int64_t done, int64_t total) {
    (void)stage, (void)done, (void)total;
    run_ctx *c = user;
    if (srv_job_is_cancelled(c->job)) qvlm_session_cancel(c->s);
}

/* The end of a successful answer: the final chunk(s) and [DONE], or the whole body. */
static void finish(run_ctx *c, const qvlm_prompt_stats *ps, const qvlm_reply_stats *rs) {
    srv_job *job = c->job;
    if (job->req.stream) {
        json_t *last = srv_chunk_json(&c->ans, json_object(), srv_finish_reason(c->reply, rs->finish));
        json_object_set_new(last, "timings", srv_timings_json(ps, rs));
        emit(c, last);
        if (job->req.include_usage) emit(c, srv_usage_chunk_json(&c->ans, ps, rs));
        pthread_mutex_lock(&job->mu);
        srv_sse_done(&job->out, NULL);
        pthread_mutex_unlock(&job->mu);
        return;
    }
    json_t *body = srv_completion_json(&c->ans, c->reply, ps, rs);
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
    if (r->stream) emit(c, srv_chunk_json(&c->ans, json_pack("{s:s, s:s}", "role", "assistant", "content", ""), NULL));
    *t_gen = now_ms();
    return qvlm_session_generate_reply(c->s, &sp, max, c->reply, on_delta, c, rs, &c->err);
}

void srv_completion_run(void *server, srv_job *job, qvlm_session *s) {
    run_ctx c = {.srv = server, .job = job, .s = s};
    srv_metrics *mt = &c.srv->metrics;
    /* A client that left while its request waited in the queue: the connection notices within
     * a polling slice, but a short answer could be finished by then. Look before starting. */
    if (!srv_job_is_cancelled(job) && job->client_fd >= 0 && srv_client_gone(job->client_fd)) srv_job_cancel(job);
    if (srv_job_is_cancelled(job)) {
        srv_metrics_count(mt, &mt->completions_cancelled);
        srv_job_set_state(job, SRV_JOB_DONE, NULL);
        return;
    }
    srv_answer_id_init(&c.ans, c.srv->cfg.model_name);
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
    job->client_fd = client_fd;
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
