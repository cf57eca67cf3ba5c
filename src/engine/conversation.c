/* conversation.c - whole prompts through the cross-turn cache (qvlm_session_prompt).
 *
 * A chat client resends the entire conversation each turn. For the new prompt:
 *  1. decode and hash its images; expand placeholders; key every position;
 *  2. resume from the deepest exact state available: the session's own state when the prompt
 *     extends it, else the deepest cache checkpoint on the prompt's key path;
 *  3. images inside the resumed prefix are not touched; later ones come from the
 *     vision-feature cache or, on a miss, the vision tower;
 *  4. prefill the rest in segments that end at the split points (after every image, log-spaced
 *     near the prompt's end, every `checkpoint_interval` tokens, at the end), checkpointing at
 *     each.
 * The split points of a conversation are remembered even without a cache, so a cached and an
 * uncached run cut their prefills at the same places: the Gated DeltaNet's chunked form then
 * sees the same chunks, and the two runs agree bit for bit. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/session_impl.h"
#include "model/mrope.h"
#include "model/vision.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static int64_t lcp(const qvlm_key *a, int64_t na, const qvlm_key *b, int64_t nb) {
    int64_t n = QVLM_MIN(na, nb), i = 0;
    while (i < n && qvlm_key_eq(a[i], b[i])) i++;
    return i;
}

/* Is position p strictly inside an image span (where no state may be cut)? */
static bool inside_span(const qvlm_prompt *pr, int64_t p) {
    for (int64_t k = 0; k < pr->n_spans; k++)
        if (p > pr->spans[k].start && p < pr->spans[k].end) return true;
    return false;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The split points in (floor, n]: after each image, n - 2, n - 8, n - 32, ... (dense near the
 * end, where the next turn's prompt diverges: the template re-renders the previous answer
 * without its thinking, a few tokens before the end; or a client edits the last words), every
 * `interval` tokens, and n. Never inside an image. Each is a snapshot of the whole recurrent
 * state (18 MiB for the 0.8B model), so they are spaced by 4x rather than 2x. */
static int64_t new_splits(const qvlm_prompt *pr, int64_t floor, int64_t n, int64_t interval, int64_t min_seg,
                          int64_t *out) {
    int64_t k = 0;
    for (int64_t i = 0; i < pr->n_spans; i++)
        if (pr->spans[i].end > floor && pr->spans[i].end <= n) out[k++] = pr->spans[i].end;
    /* n - 2 is where the next turn resumes (the template drops "<think>\n"); the points further
     * back serve edits of the last message, and each costs one more forward pass, so where a
     * pass has a fixed cost (min_seg tokens' worth) the ones that would make short segments
     * are skipped. */
    for (int64_t d = 2; n - d > floor; d *= 4)
        if (d == 2 || 3 * d / 4 >= min_seg) out[k++] = n - d;
    for (int64_t p = (floor / interval + 1) * interval; p < n; p += interval) out[k++] = p;
    out[k++] = n;
    int64_t m = 0;
    qsort(out, (size_t)k, sizeof(*out), cmp_i64);
    for (int64_t i = 0; i < k; i++)
        if ((m == 0 || out[i] != out[m - 1]) && !inside_span(pr, out[i])) out[m++] = out[i];
    return m;
}

/* Upper bound on how many split points new_splits can produce. */
static int64_t max_splits(const qvlm_prompt *pr, int64_t n, int64_t interval) {
    return pr->n_spans + 64 + n / interval + 3;
}

static qvlm_status set_splits(qvlm_session *s, const int64_t *keep, int64_t n_keep, const int64_t *add, int64_t n_add,
                              qvlm_error *err) {
    int64_t n = n_keep + n_add;
    if (n > s->cap_splits) {
        int64_t *ns = malloc((size_t)n * sizeof(*ns));
        if (!ns) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
        if (n_keep) memcpy(ns, keep, (size_t)n_keep * sizeof(*ns));
        free(s->splits);
        s->splits = ns;
        s->cap_splits = n;
    } else {
        if (n_keep) memmove(s->splits, keep, (size_t)n_keep * sizeof(*keep));
    }
    if (n_add) memcpy(s->splits + n_keep, add, (size_t)n_add * sizeof(*add));
    s->n_splits = n;
    return QVLM_OK;
}

typedef struct turn {
    qvlm_prompt pr;
    session_image *imgs;
    qvlm_grid *grids;
    qvlm_hash128 *hashes;
    qvlm_key *keys;
    int32_t *pos;
    const float **rows;
    float *feat;                 /* backend: features of images encoded now */
    qvlm_vision_entry **held;    /* feature-cache entries in use */
    int64_t *splits;
    size_t n_images;
} turn;

static void turn_free(qvlm_session *s, turn *t) {
    for (size_t i = 0; t->imgs && i < t->n_images; i++) {
        session_image_free(&t->imgs[i]);
        if (t->held && t->held[i]) qvlm_vision_entry_release(s->cache, t->held[i]);
    }
    qvlm_backend_free(s->model->be, t->feat);
    qvlm_prompt_free(&t->pr);
    free(t->imgs), free(t->grids), free(t->hashes), free(t->keys), free(t->pos), free(t->rows), free(t->held),
        free(t->splits);
}

/* Step 1: images decoded and hashed, placeholders expanded, every position keyed. */
static qvlm_status turn_prepare(qvlm_session *s, turn *t, const int32_t *ids, size_t n,
                                const qvlm_image_input *images, size_t n_images, qvlm_error *err) {
    const qvlm_model *m = s->model;
    t->n_images = n_images;
    size_t ni = n_images ? n_images : 1;
    t->imgs = calloc(ni, sizeof(*t->imgs));
    t->grids = calloc(ni, sizeof(*t->grids));
    t->hashes = calloc(ni, sizeof(*t->hashes));
    t->held = calloc(ni, sizeof(*t->held));
    if (!t->imgs || !t->grids || !t->hashes || !t->held) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    qvlm_status rc = QVLM_OK;
    for (size_t i = 0; !rc && i < n_images; i++) {
        rc = session_decode_image(s, &images[i], i, &t->imgs[i], err);
        if (!rc) t->grids[i] = t->imgs[i].grid, t->hashes[i] = t->imgs[i].hash;
    }
    if (!rc) rc = qvlm_prompt_expand(ids, (int64_t)n, &m->cfg, t->grids, t->hashes, (int64_t)n_images, &t->pr, err);
    if (rc) return rc;
    const int64_t N = t->pr.n;
    t->keys = malloc((size_t)N * sizeof(*t->keys));
    t->pos = malloc((size_t)(3 * N) * sizeof(int32_t));
    t->rows = calloc((size_t)N, sizeof(*t->rows));
    t->splits = malloc((size_t)(max_splits(&t->pr, N, s->checkpoint_interval) + s->n_splits) * sizeof(int64_t));
    if (!t->keys || !t->pos || !t->rows || !t->splits) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    for (int64_t i = 0; i < N; i++) t->keys[i] = qvlm_key_text(t->pr.ids[i]);
    for (int64_t k = 0; k < t->pr.n_spans; k++)
        for (int64_t i = t->pr.spans[k].pad_start; i < t->pr.spans[k].pad_end; i++)
            t->keys[i] = qvlm_key_image(t->pr.spans[k].hash, i - t->pr.spans[k].pad_start);
    return QVLM_OK;
}

/* Step 2: make the session's state the deepest exact prefix available. Returns P. */
static qvlm_status turn_resume(qvlm_session *s, turn *t, int64_t *P, qvlm_error *err) {
    const int64_t N = t->pr.n;
    int64_t own = lcp(s->keys, s->n_keys, t->keys, N);
    /* The own state is usable only where it stands: the recurrent state cannot be cut back.
     * With all N positions in it, it also needs the logits of position N-1 (it has them). */
    bool own_ok = own == s->seq.n_past && s->n_keys == s->seq.n_past && (own < N || s->have_logits);
    int64_t from_own = own_ok ? own : 0;
    qvlm_checkpoint *ck = NULL;
    if (s->cache) {
        ck = qvlm_cache_lookup(s->cache, s->salt, t->keys, N, N, NULL, s->stream);
        if (ck && qvlm_checkpoint_pos(ck) <= from_own) {
            qvlm_checkpoint_release(s->cache, ck);
            ck = NULL;
        }
    }
    qvlm_status rc = QVLM_OK;
    if (ck) {
        rc = qvlm_checkpoint_restore(s->cache, ck, &s->seq, s->stream, s->logits, err);
        if (!rc) {
            session_set_host_logits(s, qvlm_checkpoint_pos(ck) == N);
            s->n_keys = 0;
            rc = session_push_keys(s, t->keys, qvlm_checkpoint_pos(ck), err);
        }
        *P = qvlm_checkpoint_pos(ck);
        qvlm_checkpoint_release(s->cache, ck);
    } else if (from_own > 0) {
        *P = from_own;
    } else {
        qvlm_sequence_clear(&s->seq, s->stream);
        session_set_host_logits(s, false);
        s->n_keys = 0;
        *P = 0;
    }
    if (s->cache) qvlm_cache_note_lookup(s->cache, *P > 0, *P);
    return rc;
}

/* Step 3: features for the images after P, from the feature cache or the tower. */
static qvlm_status turn_images(qvlm_session *s, turn *t, int64_t P, qvlm_error *err) {
    const qvlm_model *m = s->model;
    const int64_t H = m->cfg.text.hidden_size, merge = m->cfg.vision.present ? m->cfg.vision.spatial_merge_size : 2;
    int64_t rows_needed = 0;
    for (int64_t k = 0; k < t->pr.n_spans; k++)
        if (t->pr.spans[k].pad_start >= P) rows_needed += qvlm_grid_tokens(t->pr.spans[k].grid, merge);
    if (rows_needed) {
        t->feat = qvlm_backend_alloc(m->be, (size_t)(rows_needed * H) * sizeof(float));
        if (!t->feat) return qvlm_errorf(err, QVLM_E_NOMEM, "image features: out of memory");
    }
    double t0 = now_ms();
    qvlm_status rc = QVLM_OK;
    int64_t r = 0;
    for (int64_t k = 0; !rc && k < t->pr.n_spans; k++) {
        const qvlm_image_span *sp = &t->pr.spans[k];
        if (sp->pad_start < P) {
            s->stats.images_in_prefix++;
            continue;
        }
        const int64_t cnt = sp->pad_end - sp->pad_start;
        const float *src = NULL;
        qvlm_vision_entry *e = s->cache ? qvlm_cache_vision_get(s->cache, sp->hash, s->stream) : NULL;
        if (e && qvlm_vision_entry_n_rows(e) == cnt) {
            t->held[sp->image] = e;
            src = qvlm_vision_entry_rows(e);
            s->stats.images_from_feature_cache++;
        } else {
            if (e) qvlm_vision_entry_release(s->cache, e);
            float *dst = t->feat + r * H;
            rc = session_encode_image(s, &t->imgs[sp->image], dst, err);
            if (rc) break;
            if (s->cache) rc = qvlm_cache_vision_put(s->cache, sp->hash, dst, cnt, s->stream, err);
            src = dst;
            r += cnt;
            s->stats.images_encoded++;
            if (s->progress) s->progress(s->progress_user, "vision", s->stats.images_encoded, t->pr.n_spans);
        }
        for (int64_t i = 0; i < cnt; i++) t->rows[sp->pad_start + i] = src + i * H;
    }
    s->stats.vision_ms = now_ms() - t0;
    return rc;
}

/* Step 4: prefill [P, N) in segments ending at the split points, checkpointing at each. */
static qvlm_status turn_prefill(qvlm_session *s, turn *t, int64_t P, const int64_t *splits, int64_t n_splits,
                                qvlm_error *err) {
    const qvlm_model *m = s->model;
    const int64_t N = t->pr.n, merge = m->cfg.vision.present ? m->cfg.vision.spatial_merge_size : 2;
    /* Positions of the suffix, continuing the restored state's M-RoPE position. */
    int64_t first_img = 0;
    while (first_img < t->pr.n_spans && t->pr.spans[first_img].pad_start < P) first_img++;
    int64_t next_pos = 0, n_suffix = N - P;
    int32_t *pos = t->pos;
    qvlm_status rc = QVLM_OK;
    if (n_suffix > 0) {
        qvlm_grid *g = malloc((size_t)(t->pr.n_spans - first_img + 1) * sizeof(*g));
        if (!g) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
        for (int64_t k = first_img; k < t->pr.n_spans; k++) g[k - first_img] = t->pr.spans[k].grid;
        rc = qvlm_mrope_positions(t->pr.ids + P, n_suffix, m->cfg.image_token_id, g, t->pr.n_spans - first_img, merge,
                                  s->seq.next_pos, pos, &next_pos, err);
        free(g);
    }
    double t0 = now_ms();
    int64_t at = P;
    s->progress_done = 0;
    s->progress_total = N - P;
    int32_t *seg_pos = NULL;
    if (!rc && n_suffix > 0) seg_pos = malloc((size_t)(3 * n_suffix) * sizeof(int32_t));
    if (!rc && n_suffix > 0 && !seg_pos) rc = qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    for (int64_t k = 0; !rc && k < n_splits; k++) {
        int64_t end = splits[k];
        if (end <= at) continue;
        int64_t len = end - at, off = at - P;
        for (int a = 0; a < 3; a++) memcpy(seg_pos + a * len, pos + a * n_suffix + off, (size_t)len * sizeof(int32_t));
        /* next_pos after the segment: one past its largest position (images may end it). */
        int64_t after = next_pos;
        if (end < N) {
            after = 0;
            for (int a = 0; a < 3; a++)
                for (int64_t i = 0; i < len; i++) after = QVLM_MAX(after, (int64_t)seg_pos[a * len + i] + 1);
        }
        rc = session_push_keys(s, t->keys + at, len, err);
        if (!rc) rc = session_prefill(s, t->pr.ids + at, t->rows + at, seg_pos, len, after, false, err);
        if (rc) break;
        at = end;
        if (s->cache && !qvlm_cache_contains(s->cache, s->salt, t->keys, at)) {
            qvlm_error e2;
            /* A checkpoint the budget cannot hold is simply not kept. */
            if (qvlm_cache_insert(s->cache, s->salt, t->keys, &s->seq, s->stream, at == N ? s->logits : NULL, &e2) ==
                QVLM_OK)
                s->stats.checkpoints_made++;
        }
    }
    free(seg_pos);
    s->stats.prefill_ms = now_ms() - t0;
    return rc;
}

static qvlm_status record_spans(qvlm_session *s, const qvlm_prompt *pr, qvlm_error *err) {
    free(s->spans);
    s->n_spans = 0;
    s->spans = calloc((size_t)(pr->n_spans ? pr->n_spans : 1), sizeof(*s->spans));
    if (!s->spans) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    for (int64_t k = 0; k < pr->n_spans; k++) {
        const qvlm_image_span *sp = &pr->spans[k];
        s->spans[k] = (qvlm_image_span_info){sp->start, sp->end, sp->grid.t, sp->grid.h, sp->grid.w, sp->hash.lo, sp->hash.hi};
    }
    s->n_spans = pr->n_spans;
    return QVLM_OK;
}

qvlm_status qvlm_session_prompt(qvlm_session *s, const int32_t *ids, size_t n, const qvlm_image_input *images,
                                size_t n_images, qvlm_error *err) {
    const qvlm_model *m = s->model;
    double t0 = now_ms();
    memset(&s->stats, 0, sizeof(s->stats));
    atomic_store(&s->cancel, 0);
    if (n == 0) return qvlm_errorf(err, QVLM_E_INVALID, "empty prompt");
    if (n_images && !m->cfg.vision.present)
        return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s: this model has no vision tower", m->dir);
    qvlm_status rc = session_check_ids(s, ids, (int64_t)n, err);
    if (rc) return rc;
    turn t = {0};
    rc = turn_prepare(s, &t, ids, n, images, n_images, err);
    /* Refuse before any image is encoded or token prefilled; one token must still fit. */
    if (!rc && s->n_ctx > 0 && t.pr.n >= s->n_ctx)
        rc = qvlm_errorf(err, QVLM_E_LIMIT, "prompt: %lld tokens (images expanded) do not fit the context of %lld tokens",
                         (long long)t.pr.n, (long long)s->n_ctx);
    int64_t P = 0;
    if (!rc) rc = turn_resume(s, &t, &P, err);
    if (!rc) rc = turn_images(s, &t, P, err);
    int64_t n_splits = 0;
    if (!rc) {
        /* The conversation's earlier split points that still lie on this prompt's path, then
         * new ones past them. */
        const int64_t N = t.pr.n, same = lcp(s->prompt_keys, s->n_prompt_keys, t.keys, N);
        int64_t keep = 0;
        while (keep < s->n_splits && s->splits[keep] <= same) keep++;
        int64_t floor = keep ? s->splits[keep - 1] : 0;
        int64_t *fresh = t.splits + keep;
        if (keep) memcpy(t.splits, s->splits, (size_t)keep * sizeof(int64_t));
        int64_t n_new = N > floor ? new_splits(&t.pr, floor, N, s->checkpoint_interval, qvlm_backend_forward_floor_tokens(m->be), fresh) : 0;
        /* The chat layer's divergence point (in unexpanded tokens): shift it past the images. */
        int64_t dv = s->divergence;
        s->divergence = -1;
        if (dv > 0) {
            for (int64_t k = 0; k < t.pr.n_spans; k++)
                if (t.pr.spans[k].pad_start < dv) dv += (t.pr.spans[k].pad_end - t.pr.spans[k].pad_start) - 1;
            bool have = false;
            for (int64_t k = 0; k < n_new; k++) have |= fresh[k] == dv;
            if (!have && dv > floor && dv < N && !inside_span(&t.pr, dv)) {
                fresh[n_new++] = dv;
                qsort(fresh, (size_t)n_new, sizeof(*fresh), cmp_i64);
            }
        }
        n_splits = keep + n_new;
        rc = set_splits(s, t.splits, keep, fresh, n_new, err);
    }
    if (!rc) rc = turn_prefill(s, &t, P, t.splits, n_splits, err);
    if (!rc) rc = record_spans(s, &t.pr, err);
    if (!rc) {
        free(s->prompt_keys);
        s->prompt_keys = t.keys;
        s->n_prompt_keys = t.pr.n;
        t.keys = NULL;
        s->stats.prompt_tokens = t.pr.n;
        s->stats.reused_tokens = P;
        s->stats.prefilled_tokens = t.pr.n - P;
        s->stats.images_total = (int)t.pr.n_spans;
    }
    turn_free(s, &t);
    if (rc) qvlm_session_reset(s);
    s->stats.total_ms = now_ms() - t0;
    return rc;
}

void qvlm_session_prompt_stats(const qvlm_session *s, qvlm_prompt_stats *out) { *out = s->stats; }

int64_t qvlm_session_image_spans(const qvlm_session *s, const qvlm_image_span_info **spans) {
    *spans = s->spans;
    return s->n_spans;
}

/* ---- the public cache handle -------------------------------------------------------------------- */

qvlm_status qvlm_model_cache_create(qvlm_model *m, const qvlm_cache_config *cfg, qvlm_cache **out, qvlm_error *err) {
    qvlm_cache_params p = {cfg ? cfg->budget_bytes : (size_t)4 << 30, cfg ? cfg->dir : NULL,
                           cfg ? cfg->disk_budget_bytes : 0, cfg ? cfg->host_budget_bytes : 0};
    return qvlm_cache_create(m, &p, out, err);
}

void qvlm_cache_counters_get(qvlm_cache *c, qvlm_cache_counters *out) {
    qvlm_cache_stats st;
    qvlm_cache_stats_get(c, &st);
    *out = (qvlm_cache_counters){st.lookups, st.hits, st.reused_tokens, st.snapshots, st.evictions, st.vision_hits,
                                 st.vision_misses, st.disk_hits, st.disk_writes, st.disk_skipped, st.bytes,
                                 st.budget_bytes, st.disk_bytes, st.n_checkpoints, st.n_vision, st.host_hits,
                                 st.host_bytes};
}
