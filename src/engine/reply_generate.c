/* reply_generate.c - qvlm_session_generate_reply: sampled tokens -> UTF-8-safe text ->
 * the reply parser -> deltas, the loop every front end (run, chat, serve) runs after a
 * chat prompt. */
#include <string.h>
#include <time.h>

#include "engine/session_impl.h"

typedef struct gen_ctx {
    qvlm_session *s;
    qvlm_text_stream *ts;
    qvlm_reply *r;
    qvlm_reply_fn on_delta;
    void *user;
    qvlm_reply_stats *st;
    double t0;
    bool saw_eos, aborted, stopped;
    qvlm_status rc; /* a failure inside the token callback */
    qvlm_error err;
} gen_ctx;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static bool has_news(const qvlm_reply_delta *d) {
    return d->n_reasoning || d->n_content || d->n_tool_calls || d->stopped;
}

/* Text into the parser; the delta (if any) to the caller. Returns nonzero to stop. */
static int pass_text(gen_ctx *g, const char *text, size_t n) {
    qvlm_reply_delta d;
    g->rc = qvlm_reply_push(g->r, text, n, &d, &g->err);
    if (g->rc) return 1;
    g->stopped |= d.stopped;
    if (has_news(&d) && g->on_delta && g->on_delta(g->user, &d)) g->aborted = true;
    return g->aborted || d.stopped;
}

static int on_token(void *user, int32_t tok) {
    gen_ctx *g = user;
    qvlm_reply_stats *st = g->st;
    if (st->n_tokens++ == 0) st->first_token_ms = now_ms() - g->t0;
    const int32_t *eos;
    int n_eos = qvlm_model_eos_ids(g->s->model, &eos);
    for (int i = 0; i < n_eos; i++) g->saw_eos |= eos[i] == tok;
    if (g->saw_eos || qvlm_token_is_special(g->s->model, tok)) return 0;
    const char *text;
    size_t n;
    qvlm_status rc = qvlm_text_stream_push(g->ts, tok, &text, &n, &g->err);
    /* An id past the tokenizer's tokens (the embedding matrix is padded) has no text; a
     * random model does sample them. The stream is unchanged then. */
    if (rc == QVLM_E_INVALID) return 0;
    if ((g->rc = rc)) return 1;
    return n ? pass_text(g, text, n) : 0;
}

/* The end: held-back bytes and text out, the reply finished. */
static qvlm_status drain(gen_ctx *g) {
    const char *text;
    size_t n;
    qvlm_status rc = qvlm_text_stream_flush(g->ts, &text, &n, &g->err);
    if (!rc && n && !g->stopped) {
        pass_text(g, text, n);
        rc = g->rc;
    }
    qvlm_reply_delta d;
    if (!rc) rc = qvlm_reply_finish(g->r, &d, &g->err);
    if (!rc && has_news(&d) && g->on_delta) g->on_delta(g->user, &d);
    return rc;
}

qvlm_status qvlm_session_generate_reply(qvlm_session *s, const qvlm_sampling *p, int max_tokens, qvlm_reply *r,
                                        qvlm_reply_fn on_delta, void *user, qvlm_reply_stats *stats, qvlm_error *err) {
    qvlm_reply_stats local;
    gen_ctx g = {.s = s, .r = r, .on_delta = on_delta, .user = user, .st = stats ? stats : &local, .t0 = now_ms()};
    memset(g.st, 0, sizeof(*g.st));
    qvlm_status rc = qvlm_text_stream_create(s->model, &g.ts, err);
    if (rc) return rc;
    rc = qvlm_session_generate(s, p, max_tokens, on_token, &g, err);
    if (!rc && g.rc) rc = qvlm_errorf(err, g.rc, "%s", g.err.msg);
    bool cancelled = rc == QVLM_E_CANCELLED;
    if (cancelled) rc = QVLM_OK;
    if (!rc) {
        rc = drain(&g);
        if (rc) qvlm_errorf(err, rc, "%s", g.err.msg);
    }
    g.st->finish = g.stopped || g.saw_eos ? QVLM_FINISH_STOP
                   : g.aborted            ? QVLM_FINISH_ABORTED
                   : cancelled            ? QVLM_FINISH_CANCELLED
                                          : QVLM_FINISH_LENGTH;
    g.st->generate_ms = now_ms() - g.t0;
    qvlm_text_stream_destroy(g.ts);
    return rc;
}
