/* reply_generate_test.c - qvlm_session_generate_reply on the tiny MoE model (whose random
 * weights write varied text): the deltas add up to the reply, the same seed gives the same
 * reply, and each way of ending says so (length, an aborting callback, a cancel, a stop
 * string). */
#include "qtest.h"
#include "qvlm.h"

#define FX QVLM_FIXTURES "/tiny-moe"

static qvlm_model *model;

typedef struct seen {
    char text[65536];
    size_t n;
    int calls, abort_after;
    bool cancel;              /* cancel the session from inside the callback */
    qvlm_session *session;
} seen;

static int on_delta(void *user, const qvlm_reply_delta *d) {
    seen *s = user;
    s->calls++;
    memcpy(s->text + s->n, d->reasoning, d->n_reasoning), s->n += d->n_reasoning;
    memcpy(s->text + s->n, d->content, d->n_content), s->n += d->n_content;
    if (s->cancel && s->calls == 2) qvlm_session_cancel(s->session);
    return s->abort_after && s->calls >= s->abort_after;
}

static qvlm_session *prompted(bool think) {
    qvlm_session *s;
    qvlm_error err;
    if (qvlm_session_create(model, NULL, &s, &err)) return NULL;
    const char *m = "[{\"role\":\"user\",\"content\":\"Tell me something.\"}]";
    qvlm_chat_options o = {.enable_thinking = think ? -1 : 0};
    if (qvlm_session_chat(s, m, strlen(m), &o, &err)) return qvlm_session_destroy(s), NULL;
    return s;
}

/* Generate with fresh state; returns the stats, the reply and what the callback saw. */
static qvlm_status gen(bool think, const qvlm_reply_options *ro, int max, seen *sn, qvlm_reply **out, qvlm_reply_stats *st) {
    qvlm_session *s = prompted(think);
    qvlm_error err;
    if (!s || qvlm_reply_create(ro, out, &err)) return QVLM_E_INTERNAL;
    qvlm_sampling sp = {.temperature = 1.0f, .top_p = 1.0f, .seed = 21};
    sn->session = s;
    qvlm_status rc = qvlm_session_generate_reply(s, &sp, max, *out, on_delta, sn, st, &err);
    qvlm_session_destroy(s);
    return rc;
}

static void test_deltas_and_endings(void) {
    qvlm_reply_options ro = {.in_thinking = false, .parse_tool_calls = true};
    seen a = {0}, b = {0};
    qvlm_reply *ra, *rb;
    qvlm_reply_stats sa, sb;
    ASSERT_OK(gen(false, &ro, 40, &a, &ra, &sa), &(qvlm_error){0});
    size_t nr, nc;
    const char *R = qvlm_reply_reasoning(ra, &nr), *C = qvlm_reply_content(ra, &nc);
    ASSERT_EQ_INT(a.n, nr + nc); /* the deltas are the reply */
    if (nr == 0) ASSERT_TRUE(memcmp(a.text, C, nc) == 0);
    (void)R;
    ASSERT_TRUE(nc > 0);
    ASSERT_TRUE(sa.n_tokens > 0 && sa.n_tokens <= 40);
    ASSERT_TRUE(sa.finish == QVLM_FINISH_LENGTH || sa.finish == QVLM_FINISH_STOP);
    ASSERT_TRUE(sa.first_token_ms >= 0 && sa.generate_ms >= sa.first_token_ms);
    ASSERT_OK(gen(false, &ro, 40, &b, &rb, &sb), &(qvlm_error){0});
    ASSERT_EQ_INT(a.n, b.n);
    ASSERT_TRUE(memcmp(a.text, b.text, a.n) == 0); /* same seed, same reply */
    qvlm_reply_destroy(rb);

    /* A callback that asks to stop. */
    seen c = {.abort_after = 2};
    ASSERT_OK(gen(false, &ro, 40, &c, &rb, &sb), &(qvlm_error){0});
    ASSERT_EQ_INT(sb.finish, QVLM_FINISH_ABORTED);
    ASSERT_TRUE(sb.n_tokens < sa.n_tokens);
    qvlm_reply_destroy(rb);

    /* A cancel: not an error; what was generated stays. */
    seen d = {.cancel = true};
    ASSERT_OK(gen(false, &ro, 40, &d, &rb, &sb), &(qvlm_error){0});
    ASSERT_EQ_INT(sb.finish, QVLM_FINISH_CANCELLED);
    ASSERT_TRUE(d.n > 0 && sb.n_tokens < sa.n_tokens);
    qvlm_reply_destroy(rb);

    /* A stop string taken from the unstopped reply ends it there. */
    ASSERT_TRUE(nc > 4);
    char stop[8] = {0};
    memcpy(stop, C + 2, 2);
    const char *stops[] = {stop};
    qvlm_reply_options rs = {.parse_tool_calls = true, .stop = stops, .n_stop = 1};
    seen e = {0};
    ASSERT_OK(gen(false, &rs, 40, &e, &rb, &sb), &(qvlm_error){0});
    ASSERT_EQ_INT(sb.finish, QVLM_FINISH_STOP);
    size_t n_cut;
    const char *cut = qvlm_reply_content(rb, &n_cut);
    ASSERT_TRUE(n_cut <= 2 && memcmp(cut, C, n_cut) == 0 && !strstr(cut, stop));
    qvlm_reply_destroy(rb);
    qvlm_reply_destroy(ra);
}

int main(void) {
    qvlm_error err;
    qvlm_model_params mp;
    qvlm_model_params_default(&mp);
    mp.n_threads = 1;
    if (qvlm_model_load(FX "/model", &mp, &model, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return 1;
    }
    RUN(test_deltas_and_endings);
    qvlm_model_destroy(model);
    return qtest_done();
}
