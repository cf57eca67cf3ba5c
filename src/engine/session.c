/* session.c - the public model and session API (include/qvlm.h): a session owns one stream,
 * the forward-pass scratch and one sequence; feeding tokens prefills them in batches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sampler.h"
#include "engine/session_impl.h"
#include "model/image_codec.h"
#include "model/mrope.h"
#include "model/vision.h"

#define DEFAULT_BATCH 512

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
    qvlm_model_opts opts = {.progress = p->progress, .progress_user = p->progress_user,
                            .quant = p->quant, .mmap_weights = p->mmap_weights};
    rc = qvlm_model_load_dir(dir, be, &opts, out, err);
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

int64_t qvlm_model_n_ctx_train(const qvlm_model *m) { return m->cfg.text.max_position_embeddings; }

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
    free(s->keys);
    free(s->splits);
    free(s->prompt_keys);
    free(s->spans);
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
    s->image_limits = qvlm_image_limits_default();
    if (p && p->max_image_pixels > 0) s->image_limits.max_pixels = p->max_image_pixels;
    qvlm_kv_pool_init(&s->pool, m->be, QVLM_KV_BLOCK_TOKENS, qvlm_text_kv_block_bytes(&m->cfg, QVLM_KV_BLOCK_TOKENS));
    s->cache = p ? p->cache : NULL;
    s->salt = p ? p->cache_salt : 0;
    s->checkpoint_interval = p && p->checkpoint_interval > 0 ? p->checkpoint_interval : 1024;
    s->n_ctx = p && p->n_ctx > 0 ? p->n_ctx : 0;
    s->divergence = -1;
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

void session_forget(qvlm_session *s) {
    s->n_keys = 0;
    s->n_splits = 0;
    s->n_prompt_keys = 0;
}

void qvlm_session_reset(qvlm_session *s) {
    qvlm_sequence_clear(&s->seq, s->stream);
    session_set_host_logits(s, false);
    session_forget(s);
}

qvlm_status session_push_keys(qvlm_session *s, const qvlm_key *k, int64_t n, qvlm_error *err) {
    if (s->n_keys + n > s->cap_keys) {
        int64_t cap = QVLM_MAX(s->n_keys + n, 2 * s->cap_keys);
        qvlm_key *nk = realloc(s->keys, (size_t)cap * sizeof(*nk));
        if (!nk) return qvlm_errorf(err, QVLM_E_NOMEM, "session keys: out of memory");
        s->keys = nk;
        s->cap_keys = cap;
    }
    if (n) memcpy(s->keys + s->n_keys, k, (size_t)n * sizeof(*k));
    s->n_keys += n;
    return QVLM_OK;
}

void session_set_host_logits(qvlm_session *s, bool have) {
    s->have_logits = have;
    s->logits_in_ctx = s->have_greedy = false;
}

qvlm_status session_host_logits(qvlm_session *s, const float **out, qvlm_error *err) {
    *out = NULL;
    if (!s->have_logits) return qvlm_errorf(err, QVLM_E_INVALID, "no logits: nothing was fed to the session yet");
    if (s->logits_in_ctx) {
        qvlm_status rc = qvlm_text_logits(s->text, s->logits, 1, err);
        if (rc) return rc;
        s->logits_in_ctx = false;
    }
    *out = s->logits;
    return QVLM_OK;
}

const float *qvlm_session_logits(qvlm_session *s) {
    const float *l;
    return session_host_logits(s, &l, NULL) ? NULL : l;
}
int64_t qvlm_session_n_tokens(const qvlm_session *s) { return s->seq.n_past; }

/* Prefill n tokens (ids, optional replacement rows, positions [3][n]) in batches of at most
 * max_batch. On failure the state may have advanced by whole batches; callers that promise
 * "unchanged" check their inputs before calling. */
void qvlm_session_cancel(qvlm_session *s) { atomic_store(&s->cancel, 1); }

void qvlm_session_set_progress(qvlm_session *s, qvlm_progress_fn fn, void *user) {
    s->progress = fn;
    s->progress_user = user;
}

qvlm_status session_prefill(qvlm_session *s, const int32_t *ids, const float *const *rows, const int32_t *pos,
                           int64_t n, int64_t next_pos_after, bool greedy, qvlm_error *err) {
    qvlm_status rc = qvlm_sequence_reserve(&s->seq, s->stream, n, err);
    for (int64_t done = 0; !rc && done < n;) {
        if (atomic_exchange(&s->cancel, 0)) {
            rc = qvlm_errorf(err, QVLM_E_CANCELLED, "cancelled");
            break;
        }
        int64_t T = n - done < s->max_batch ? n - done : s->max_batch;
        for (int a = 0; a < 3; a++) memcpy(s->pos + a * T, pos + a * n + done, (size_t)T * sizeof(int32_t));
        qvlm_seq_state st = qvlm_sequence_state(&s->seq);
        bool last = done + T == n;
        const bool to_host = last && !greedy;
        qvlm_text_batch b = {ids + done, rows ? rows + done : NULL, s->pos, T, last ? 1 : 0,
                             to_host ? s->logits : NULL, NULL, NULL, last && greedy ? &s->greedy : NULL};
        session_set_host_logits(s, false);
        rc = qvlm_text_forward(s->text, &st, &b, err);
        if (rc) break;
        s->seq.n_past = st.n_past;
        s->have_logits = last;
        s->logits_in_ctx = s->have_greedy = last && greedy;
        done += T;
        s->progress_done += T;
        if (s->progress && s->progress_total > 0) s->progress(s->progress_user, "prefill", s->progress_done, s->progress_total);
    }
    if (!rc) s->seq.next_pos = next_pos_after;
    return rc;
}

qvlm_status session_check_ids(const qvlm_session *s, const int32_t *ids, int64_t n, qvlm_error *err) {
    const int64_t V = s->model->cfg.text.vocab_size;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return qvlm_errorf(err, QVLM_E_INVALID, "token %lld: id %d is outside the vocabulary (0..%lld)", (long long)i,
                               ids[i], (long long)(V - 1));
    return QVLM_OK;
}

/* Plain tokens: every id is an ordinary embedding at the next text position, image-pad ids
 * included (generation may emit one; transformers feeds it back the same way). */
static qvlm_status session_feed(qvlm_session *s, const int32_t *ids, size_t n, bool greedy, qvlm_error *err) {
    qvlm_status rc = session_check_ids(s, ids, (int64_t)n, err);
    if (rc || n == 0) return rc;
    int32_t *pos = malloc(3 * n * sizeof(int32_t));
    if (!pos) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) pos[i] = pos[n + i] = pos[2 * n + i] = (int32_t)(s->seq.next_pos + (int64_t)i);
    qvlm_key *keys = malloc(n * sizeof(*keys));
    for (size_t i = 0; keys && i < n; i++) keys[i] = qvlm_key_text(ids[i]);
    rc = keys ? session_push_keys(s, keys, (int64_t)n, err) : qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    if (!rc) {
        rc = session_prefill(s, ids, NULL, pos, (int64_t)n, s->seq.next_pos + (int64_t)n, greedy, err);
        if (rc) s->n_keys -= (int64_t)n;
    }
    free(keys);
    free(pos);
    return rc;
}

qvlm_status qvlm_session_feed_tokens(qvlm_session *s, const int32_t *ids, size_t n, qvlm_error *err) {
    return session_feed(s, ids, n, false, err);
}

qvlm_status session_decode_image(qvlm_session *s, const qvlm_image_input *in, size_t i, session_image *out,
                                 qvlm_error *err) {
    memset(out, 0, sizeof(*out));
    char name[64];
    snprintf(name, sizeof(name), "image %zu", i);
    qvlm_status rc;
    if (in->data) {
        rc = qvlm_image_decode(in->data, in->n_bytes, name, &s->image_limits, &out->img, err);
    } else if (in->rgb) {
        rc = qvlm_image_check_header(name, "RGB", in->width, in->height, &s->image_limits, err);
        if (!rc) rc = qvlm_image_alloc(&out->img, in->width, in->height, name, err);
        if (!rc) memcpy(out->img.rgb, in->rgb, (size_t)in->width * (size_t)in->height * 3);
    } else if (in->path) {
        rc = qvlm_image_load(in->path, &s->image_limits, &out->img, err);
    } else {
        rc = qvlm_errorf(err, QVLM_E_INVALID, "%s: no data, pixels or path", name);
    }
    const qvlm_preprocess_config *pp = &s->model->preprocess;
    int hb = 0, wb = 0;
    if (!rc) rc = qvlm_smart_resize(out->img.height, out->img.width, pp, &hb, &wb, err);
    if (rc) {
        if (rc != QVLM_E_NOMEM && !strstr(err->msg, name)) qvlm_error_prefix(err, rc, "%s", name);
        session_image_free(out);
        return rc;
    }
    /* A still image is one temporal patch (its frame duplicated), so grid_t = 1. */
    out->grid = (qvlm_grid){1, hb / pp->patch_size, wb / pp->patch_size};
    out->hash = qvlm_image_hash(&out->img, pp);
    return QVLM_OK;
}

void session_image_free(session_image *im) {
    qvlm_pixels_free(&im->px);
    qvlm_image_free(&im->img);
}

qvlm_status session_encode_image(qvlm_session *s, session_image *im, float *out, qvlm_error *err) {
    const qvlm_model *m = s->model;
    qvlm_status rc = QVLM_OK;
    if (!im->px.values) rc = qvlm_image_preprocess(&im->img, &m->preprocess, qvlm_backend_host_pool(m->be), &im->px, err);
    if (rc) return rc;
    qvlm_grid g = {im->px.grid_t, im->px.grid_h, im->px.grid_w};
    if (g.t != im->grid.t || g.h != im->grid.h || g.w != im->grid.w)
        return qvlm_errorf(err, QVLM_E_INTERNAL, "preprocessing gave grid %dx%dx%d, smart_resize %dx%dx%d", g.t, g.h, g.w,
                           im->grid.t, im->grid.h, im->grid.w);
    return qvlm_vision_encode(m, s->stream, im->px.values, &g, 1, out, err);
}

/* Keys of prompt positions: token ids, and for image pads their image's content keys. */
static void prompt_keys(const qvlm_prompt *pr, qvlm_key *keys) {
    for (int64_t i = 0; i < pr->n; i++) keys[i] = qvlm_key_text(pr->ids[i]);
    for (int64_t k = 0; k < pr->n_spans; k++)
        for (int64_t i = pr->spans[k].pad_start; i < pr->spans[k].pad_end; i++)
            keys[i] = qvlm_key_image(pr->spans[k].hash, i - pr->spans[k].pad_start);
}

qvlm_status qvlm_session_feed(qvlm_session *s, const int32_t *ids, size_t n, const qvlm_image_input *images,
                              size_t n_images, qvlm_error *err) {
    const qvlm_model *m = s->model;
    if (n_images && !m->cfg.vision.present)
        return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s: this model has no vision tower", m->dir);
    qvlm_status rc = session_check_ids(s, ids, (int64_t)n, err);
    if (rc || n == 0) return rc;
    const int64_t H = m->cfg.text.hidden_size, merge = m->cfg.vision.present ? m->cfg.vision.spatial_merge_size : 2;
    session_image *imgs = calloc(n_images ? n_images : 1, sizeof(*imgs));
    qvlm_grid *grids = calloc(n_images ? n_images : 1, sizeof(*grids));
    qvlm_hash128 *hashes = calloc(n_images ? n_images : 1, sizeof(*hashes));
    qvlm_prompt pr = {0};
    float *feat = NULL;
    const float **rows = NULL;
    int32_t *pos = NULL;
    qvlm_key *keys = NULL;
    if (!imgs || !grids || !hashes) rc = qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    for (size_t i = 0; !rc && i < n_images; i++) {
        rc = session_decode_image(s, &images[i], i, &imgs[i], err);
        if (!rc) grids[i] = imgs[i].grid, hashes[i] = imgs[i].hash;
    }
    if (!rc) rc = qvlm_prompt_expand(ids, (int64_t)n, &m->cfg, grids, hashes, (int64_t)n_images, &pr, err);
    int64_t n_rows = 0;
    for (size_t i = 0; i < n_images; i++) n_rows += qvlm_grid_tokens(grids[i], merge);
    if (!rc) {
        rows = calloc((size_t)pr.n, sizeof(*rows));
        pos = malloc((size_t)(3 * pr.n) * sizeof(int32_t));
        keys = malloc((size_t)pr.n * sizeof(*keys));
        feat = n_rows ? qvlm_backend_alloc(m->be, (size_t)(n_rows * H) * sizeof(float)) : NULL;
        if (!rows || !pos || !keys || (n_rows && !feat)) rc = qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    }
    int64_t next_pos = 0;
    if (!rc)
        rc = qvlm_mrope_positions(pr.ids, pr.n, m->cfg.image_token_id, grids, (int64_t)n_images, merge, s->seq.next_pos,
                                  pos, &next_pos, err);
    for (size_t i = 0, r = 0; !rc && i < n_images; r += (size_t)qvlm_grid_tokens(grids[i], merge), i++)
        rc = session_encode_image(s, &imgs[i], feat + r * (size_t)H, err);
    if (!rc && n_images) {
        /* Features replace the pad rows in order; the counts already agree (prompt_expand). */
        for (int64_t k = 0, r = 0; k < pr.n_spans; k++)
            for (int64_t i = pr.spans[k].pad_start; i < pr.spans[k].pad_end; i++) rows[i] = feat + (r++) * H;
    }
    if (!rc) {
        prompt_keys(&pr, keys);
        rc = session_push_keys(s, keys, pr.n, err);
    }
    if (!rc) {
        rc = session_prefill(s, pr.ids, n_images ? rows : NULL, pos, pr.n, next_pos, false, err);
        if (rc) s->n_keys -= pr.n;
    }
    for (size_t i = 0; imgs && i < n_images; i++) session_image_free(&imgs[i]);
    qvlm_backend_free(m->be, feat);
    qvlm_prompt_free(&pr);
    free(imgs);
    free(grids);
    free(hashes);
    free(rows);
    free(pos);
    free(keys);
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
    /* Greedy decoding reads back only each step's argmax (computed where the logits are), so
     * the host never sees the vocabulary's logits; sampling needs them all. */
    const bool argmax_only = qvlm_sampler_is_greedy(&smp);
    for (int k = 0; !rc && k < max_tokens; k++) {
        if (s->n_ctx > 0 && s->seq.n_past >= s->n_ctx) break; /* the context is full */
        if (atomic_exchange(&s->cancel, 0)) {
            rc = qvlm_errorf(err, QVLM_E_CANCELLED, "cancelled");
            break;
        }
        int32_t tok = s->greedy;
        if (!(argmax_only && s->have_greedy)) {
            const float *logits;
            rc = session_host_logits(s, &logits, err);
            if (rc) break;
            tok = qvlm_sampler_sample(&smp, logits, s->model->cfg.text.vocab_size);
        }
        rc = session_feed(s, &tok, 1, argmax_only, err);
        int stop = on_token ? on_token(user, tok) : 0;
        if (stop || is_eos(s->model, tok)) break;
    }
    qvlm_sampler_free(&smp);
    return rc;
}
