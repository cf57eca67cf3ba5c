/* session.c - the public model and session API (include/qvlm.h): a session owns one stream,
 * the forward-pass scratch and one sequence; feeding tokens prefills them in batches. */
#include <stdlib.h>
#include <string.h>

#include "engine/sampler.h"
#include "engine/sequence.h"
#include "model/model.h"
#include "model/text.h"

#define DEFAULT_BATCH 512
#define KV_BLOCK_TOKENS 64

struct qvlm_session {
    qvlm_model *model;
    qvlm_stream *stream;
    qvlm_text_ctx *text;
    qvlm_kv_pool pool;
    qvlm_sequence seq;
    int64_t max_batch;
    float *logits; /* host [vocab] after the last token fed */
    bool have_logits;
    int32_t *pos;  /* host [3][max_batch] */
};

/* ---- models ----------------------------------------------------------------------------------- */

void qvlm_model_params_default(qvlm_model_params *p) {
    memset(p, 0, sizeof(*p));
    p->device = QVLM_DEVICE_CPU;
    p->precision = QVLM_PRECISION_F32;
}

qvlm_status qvlm_model_load(const char *dir, const qvlm_model_params *p, qvlm_model **out, qvlm_error *err) {
    *out = NULL;
    qvlm_model_params def;
    if (!p) qvlm_model_params_default(&def), p = &def;
    qvlm_backend_params bp = {p->device == QVLM_DEVICE_CUDA ? QVLM_BACKEND_CUDA : QVLM_BACKEND_CPU, p->n_threads,
                              p->precision == QVLM_PRECISION_BF16 ? QVLM_COMPUTE_BF16 : QVLM_COMPUTE_F32};
    qvlm_backend *be;
    qvlm_status rc = qvlm_backend_create(&bp, &be, err);
    if (rc) return rc;
    rc = qvlm_model_load_dir(dir, be, NULL, out, err);
    if (rc) {
        qvlm_backend_destroy(be);
        return rc;
    }
    (*out)->owned_be = be;
    return QVLM_OK;
}

void qvlm_model_destroy(qvlm_model *m) {
    if (!m) return;
    qvlm_backend *be = m->owned_be;
    qvlm_model_free(m);
    qvlm_backend_destroy(be);
}

int32_t qvlm_model_vocab_size(const qvlm_model *m) { return (int32_t)m->cfg.text.vocab_size; }

int qvlm_model_eos_ids(const qvlm_model *m, const int32_t **ids) {
    *ids = m->cfg.eos_ids;
    return m->cfg.n_eos;
}

/* ---- sessions ---------------------------------------------------------------------------------- */

void qvlm_session_destroy(qvlm_session *s) {
    if (!s) return;
    qvlm_sequence_free(&s->seq);
    qvlm_text_ctx_destroy(s->text);
    qvlm_stream_destroy(s->stream);
    free(s->logits);
    free(s->pos);
    free(s);
}

qvlm_status qvlm_session_create(qvlm_model *m, const qvlm_session_params *p, qvlm_session **out, qvlm_error *err) {
    *out = NULL;
    int64_t batch = p && p->max_batch > 0 ? p->max_batch : DEFAULT_BATCH;
    /* Batches are cut at multiples of the Gated DeltaNet chunk (64), so splitting a prefill
     * into batches never changes its chunk boundaries, and so never its bits. */
    if (batch % 64 != 0) return qvlm_errorf(err, QVLM_E_INVALID, "max_batch %lld is not a multiple of 64", (long long)batch);
    qvlm_session *s = calloc(1, sizeof(*s));
    if (!s) return qvlm_errorf(err, QVLM_E_NOMEM, "session: out of memory");
    s->model = m;
    s->max_batch = batch;
    qvlm_kv_pool_init(&s->pool, m->be, KV_BLOCK_TOKENS, qvlm_text_kv_block_bytes(&m->cfg, KV_BLOCK_TOKENS));
    s->logits = malloc((size_t)m->cfg.text.vocab_size * sizeof(float));
    s->pos = malloc((size_t)(3 * batch) * sizeof(int32_t));
    qvlm_status rc = (s->logits && s->pos) ? QVLM_OK : qvlm_errorf(err, QVLM_E_NOMEM, "session: out of memory");
    if (!rc) rc = qvlm_stream_create(m->be, &s->stream, err);
    if (!rc) rc = qvlm_text_ctx_create(m, s->stream, batch, &s->text, err);
    if (!rc) rc = qvlm_sequence_init(&s->seq, &m->cfg, &s->pool, s->stream, err);
    if (rc) {
        qvlm_session_destroy(s);
        return rc;
    }
    *out = s;
    return QVLM_OK;
}

void qvlm_session_reset(qvlm_session *s) {
    qvlm_sequence_clear(&s->seq, s->stream);
    s->have_logits = false;
}

const float *qvlm_session_logits(const qvlm_session *s) { return s->have_logits ? s->logits : NULL; }
int64_t qvlm_session_n_tokens(const qvlm_session *s) { return s->seq.n_past; }

qvlm_status qvlm_session_feed_tokens(qvlm_session *s, const int32_t *ids, size_t n, qvlm_error *err) {
    const int64_t V = s->model->cfg.text.vocab_size;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return qvlm_errorf(err, QVLM_E_INVALID, "token %zu: id %d is outside the vocabulary (0..%lld)", i, ids[i],
                               (long long)(V - 1));
    qvlm_status rc = qvlm_sequence_reserve(&s->seq, s->stream, (int64_t)n, err);
    for (size_t done = 0; !rc && done < n;) {
        int64_t T = (int64_t)(n - done) < s->max_batch ? (int64_t)(n - done) : s->max_batch;
        for (int64_t i = 0; i < T; i++) {
            int32_t p = (int32_t)(s->seq.next_pos + i);
            s->pos[i] = s->pos[T + i] = s->pos[2 * T + i] = p;
        }
        qvlm_seq_state st = qvlm_sequence_state(&s->seq);
        bool last = done + (size_t)T == n;
        qvlm_text_batch b = {ids + done, NULL, s->pos, T, last ? 1 : 0, s->logits, NULL, NULL};
        rc = qvlm_text_forward(s->text, &st, &b, err);
        if (rc) break;
        s->seq.n_past = st.n_past;
        s->seq.next_pos += T;
        s->have_logits = last;
        done += (size_t)T;
    }
    return rc;
}

static bool is_eos(const qvlm_model *m, int32_t t) {
    for (int i = 0; i < m->cfg.n_eos; i++)
        if (m->cfg.eos_ids[i] == t) return true;
    return false;
}

qvlm_status qvlm_session_generate(qvlm_session *s, const qvlm_sampling *p, int max_tokens, qvlm_token_fn on_token,
                                  void *user, qvlm_error *err) {
    if (!s->have_logits) return qvlm_errorf(err, QVLM_E_INVALID, "generate: nothing was fed to the session yet");
    qvlm_sampling greedy = QVLM_SAMPLING_GREEDY;
    qvlm_sampler smp;
    qvlm_status rc = qvlm_sampler_init(&smp, p ? p : &greedy, err);
    for (int k = 0; !rc && k < max_tokens; k++) {
        int32_t tok = qvlm_sampler_sample(&smp, s->logits, s->model->cfg.text.vocab_size);
        rc = qvlm_session_feed_tokens(s, &tok, 1, err);
        int stop = on_token ? on_token(user, tok) : 0;
        if (stop || is_eos(s->model, tok)) break;
    }
    qvlm_sampler_free(&smp);
    return rc;
}
