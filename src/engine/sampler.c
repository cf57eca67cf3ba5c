/* sampler.c - token sampling (see sampler.h).
 *
 * With top-k off, a vocabulary of 248k would need a full sort for top-p; instead the best
 * CAND_MAX candidates are selected with a heap (their probabilities are exact, computed with
 * the softmax sum over the whole vocabulary), and top-p / min-p act on those. The mass
 * outside the first 1024 tokens is negligible for any practical top-p. */
#include "engine/sampler.h"

#include "kernels/backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CAND_MAX 1024

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(uint64_t s[4]) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    return r;
}

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

qvlm_status qvlm_sampling_check(const qvlm_sampling *p, qvlm_error *err) {
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return qvlm_errorf(err, QVLM_E_INVALID, "temperature %g must be in 0..100", p->temperature);
    if (p->temperature == 0.0f) return QVLM_OK; /* greedy: the filters do not apply */
    if (p->top_k < 0) return qvlm_errorf(err, QVLM_E_INVALID, "top_k %d must be >= 0", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return qvlm_errorf(err, QVLM_E_INVALID, "top_p %g must be in (0, 1]", p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return qvlm_errorf(err, QVLM_E_INVALID, "min_p %g must be in [0, 1]", p->min_p);
    return QVLM_OK;
}

qvlm_status qvlm_sampler_init(qvlm_sampler *s, const qvlm_sampling *p, qvlm_error *err) {
    memset(s, 0, sizeof(*s));
    qvlm_status rc = qvlm_sampling_check(p, err);
    if (rc) return rc;
    s->p = *p;
    if (p->temperature == 0.0f) return QVLM_OK;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++) s->state[i] = splitmix(&x);
    s->cap = p->top_k > 0 ? p->top_k : CAND_MAX;
    s->cand_id = malloc((size_t)s->cap * sizeof(int32_t));
    s->cand_p = malloc((size_t)s->cap * sizeof(float));
    if (!s->cand_id || !s->cand_p) {
        qvlm_sampler_free(s);
        return qvlm_errorf(err, QVLM_E_NOMEM, "sampler: out of memory");
    }
    return QVLM_OK;
}

void qvlm_sampler_free(qvlm_sampler *s) {
    free(s->cand_id);
    free(s->cand_p);
    memset(s, 0, sizeof(*s));
}


/* Min-heap on cand_p (by logit value here), keeping the k largest. */
static void sift_down(float *v, int32_t *id, int64_t n, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && (v[l] < v[m] || (v[l] == v[m] && id[l] > id[m]))) m = l;
        if (r < n && (v[r] < v[m] || (v[r] == v[m] && id[r] > id[m]))) m = r;
        if (m == i) return;
        float tv = v[i];
        v[i] = v[m], v[m] = tv;
        int32_t ti = id[i];
        id[i] = id[m], id[m] = ti;
        i = m;
    }
}

int32_t qvlm_sampler_sample(qvlm_sampler *s, const float *logits, int64_t vocab) {
    if (qvlm_sampler_is_greedy(s)) return (int32_t)qvlm_argmax_scan(logits, vocab);
    const float inv_t = 1.0f / s->p.temperature;
    int64_t k = s->cap < vocab ? s->cap : vocab, n = 0;
    float *v = s->cand_p;
    int32_t *id = s->cand_id;
    /* Select the k best logits (scaled by 1/T, which keeps their order). */
    float mx = -INFINITY;
    for (int64_t i = 0; i < vocab; i++) {
        float x = logits[i] * inv_t;
        if (x > mx) mx = x;
        if (n < k) {
            v[n] = x, id[n] = (int32_t)i;
            if (++n == k)
                for (int64_t j = k / 2; j-- > 0;) sift_down(v, id, k, j);
        } else if (x > v[0]) {
            v[0] = x, id[0] = (int32_t)i;
            sift_down(v, id, k, 0);
        }
    }
    /* Softmax denominator over what survives top-k (everything when top-k is off). */
    double z = 0;
    if (s->p.top_k > 0) {
        for (int64_t i = 0; i < n; i++) z += exp((double)v[i] - mx);
    } else {
        for (int64_t i = 0; i < vocab; i++) z += exp((double)logits[i] * inv_t - mx);
    }
    /* Heap-sort the candidates into descending order of probability. */
    for (int64_t end = n - 1; end > 0; end--) {
        float tv = v[0];
        v[0] = v[end], v[end] = tv;
        int32_t ti = id[0];
        id[0] = id[end], id[end] = ti;
        sift_down(v, id, end, 0);
    }
    for (int64_t i = 0; i < n; i++) v[i] = (float)(exp((double)v[i] - mx) / z);
    /* top-p: the smallest prefix whose mass reaches p (at least one token). */
    int64_t keep = n;
    if (s->p.top_p < 1.0f) {
        double cum = 0;
        for (int64_t i = 0; i < n; i++) {
            cum += v[i];
            if (cum >= s->p.top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    if (s->p.min_p > 0.0f) {
        float floor_p = s->p.min_p * v[0];
        int64_t m = 1;
        while (m < keep && v[m] >= floor_p) m++;
        keep = m;
    }
    double mass = 0;
    for (int64_t i = 0; i < keep; i++) mass += v[i];
    double u = (double)(next_u64(s->state) >> 11) * (1.0 / 9007199254740992.0) * mass;
    for (int64_t i = 0; i < keep; i++) {
        u -= v[i];
        if (u < 0) return id[i];
    }
    return id[keep - 1];
}
