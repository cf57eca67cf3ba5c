/* attention.c - softmax attention on the CPU: causal GQA over paged KV (text, §3.4) and
 * bidirectional attention inside segments (vision tower, §5).
 *
 * Both use an online softmax over key tiles taken in a fixed order (running max m, running
 * sum l, running weighted sum of values), so memory does not grow with the number of keys
 * and a query's result does not depend on which other queries are computed with it. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

#define TILE 64
#define MAX_HEAD_DIM 512 /* bounded by config validation */

static inline float dot(const float *a, const float *b, int64_t n) {
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
    for (; i < n; i++) acc[i & 7] += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* Running softmax state of one query. */
typedef struct {
    float m, l;
    float acc[MAX_HEAD_DIM];
} online;

static void online_init(online *o, int64_t d) {
    o->m = -INFINITY;
    o->l = 0.0f;
    memset(o->acc, 0, (size_t)d * sizeof(float));
}

/* Fold a tile of n scores (already scaled) with their value rows into the state. */
static void online_tile(online *o, const float *sc, int64_t n, const float *v, int64_t ldv, int64_t d) {
    float mt = -INFINITY;
    for (int64_t i = 0; i < n; i++) mt = sc[i] > mt ? sc[i] : mt;
    float mnew = mt > o->m ? mt : o->m;
    float corr = expf(o->m - mnew); /* exp(-inf) = 0 on the first tile */
    o->l *= corr;
    for (int64_t c = 0; c < d; c++) o->acc[c] *= corr;
    for (int64_t i = 0; i < n; i++) {
        float p = expf(sc[i] - mnew);
        o->l += p;
        const float *vr = v + i * ldv;
        for (int64_t c = 0; c < d; c++) o->acc[c] += p * vr[c];
    }
    o->m = mnew;
}

static void online_finish(const online *o, float *out, int64_t d) {
    float inv = 1.0f / o->l;
    for (int64_t c = 0; c < d; c++) out[c] = o->acc[c] * inv;
}

/* ---- KV store ----------------------------------------------------------------------------- */

void cpu_kv_store(qvlm_stream *s, const qvlm_kv_view *kv, const float *k, int64_t ldk, const float *v, int64_t ldv,
                  int64_t pos0, int64_t T, int64_t n_kv_heads, int64_t head_dim) {
    const int64_t bt = kv->block_tokens;
    for (int64_t t = 0; t < T; t++) {
        int64_t p = pos0 + t, b = p / bt, o = p % bt;
        uint8_t *blk = kv->blocks[b];
        float *K = (float *)(blk + kv->k_offset), *V = (float *)(blk + kv->v_offset);
        for (int64_t h = 0; h < n_kv_heads; h++) {
            memcpy(K + (h * bt + o) * head_dim, k + t * ldk + h * head_dim, (size_t)head_dim * sizeof(float));
            memcpy(V + (h * bt + o) * head_dim, v + t * ldv + h * head_dim, (size_t)head_dim * sizeof(float));
        }
    }
}

/* ---- causal attention over paged KV ------------------------------------------------------- */

struct attn_job {
    float *out;
    const float *q;
    int64_t ldq;
    const qvlm_kv_view *kv;
    int64_t pos0, T, n_heads, n_kv_heads, head_dim;
    float scale;
};

static void attn_task(void *p, int ith, int nth) {
    struct attn_job *j = p;
    const int64_t d = j->head_dim, bt = j->kv->block_tokens, group = j->n_heads / j->n_kv_heads;
    long w0, w1;
    qvlm_split_rows(j->T * j->n_heads, ith, nth, &w0, &w1);
    online o;
    float sc[TILE];
    for (long w = w0; w < w1; w++) {
        const int64_t t = w / j->n_heads, h = w % j->n_heads, kvh = h / group;
        const float *q = j->q + t * j->ldq + h * d;
        const int64_t n_keys = j->pos0 + t + 1;
        online_init(&o, d);
        for (int64_t k0 = 0; k0 < n_keys;) {
            /* A tile never crosses a block: block_tokens is a multiple of TILE or smaller. */
            int64_t b = k0 / bt, off = k0 % bt;
            int64_t n = QVLM_MIN(QVLM_MIN((int64_t)TILE, n_keys - k0), bt - off);
            const uint8_t *blk = j->kv->blocks[b];
            const float *K = (const float *)(blk + j->kv->k_offset) + (kvh * bt + off) * d;
            const float *V = (const float *)(blk + j->kv->v_offset) + (kvh * bt + off) * d;
            for (int64_t i = 0; i < n; i++) sc[i] = dot(q, K + i * d, d) * j->scale;
            online_tile(&o, sc, n, V, d, d);
            k0 += n;
        }
        online_finish(&o, j->out + (t * j->n_heads + h) * d, d);
    }
}

void cpu_attention(qvlm_stream *s, float *out, const float *q, int64_t ldq, const qvlm_kv_view *kv, int64_t pos0,
                   int64_t T, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale) {
    struct attn_job j = {out, q, ldq, kv, pos0, T, n_heads, n_kv_heads, head_dim, scale};
    cpu_parallel(s, T * n_heads, 1, attn_task, &j);
}

/* ---- bidirectional attention inside segments ------------------------------------------------ */

struct seg_job {
    float *out;
    const float *qkv;
    const int64_t *seg;
    int64_t n_seg, n_heads, head_dim, n_rows;
    float scale;
};

static void seg_task(void *p, int ith, int nth) {
    struct seg_job *j = p;
    const int64_t d = j->head_dim, H = j->n_heads, ld = 3 * H * d;
    long w0, w1;
    qvlm_split_rows(j->n_rows * H, ith, nth, &w0, &w1);
    online o;
    float sc[TILE];
    int64_t si = 0;
    for (long w = w0; w < w1; w++) {
        const int64_t r = w / H, h = w % H;
        while (si + 1 < j->n_seg && r >= j->seg[si + 1]) si++;
        while (si > 0 && r < j->seg[si]) si--;
        const int64_t s0 = j->seg[si], s1 = j->seg[si + 1];
        const float *q = j->qkv + r * ld + h * d;
        online_init(&o, d);
        for (int64_t k0 = s0; k0 < s1; k0 += TILE) {
            int64_t n = QVLM_MIN((int64_t)TILE, s1 - k0);
            const float *K = j->qkv + k0 * ld + H * d + h * d;
            const float *V = j->qkv + k0 * ld + 2 * H * d + h * d;
            for (int64_t i = 0; i < n; i++) sc[i] = dot(q, K + i * ld, d) * j->scale;
            online_tile(&o, sc, n, V, ld, d);
        }
        online_finish(&o, j->out + r * H * d + h * d, d);
    }
}

void cpu_attention_segments(qvlm_stream *s, float *out, const float *qkv, const int64_t *seg, int64_t n_seg,
                            int64_t n_heads, int64_t head_dim, float scale) {
    struct seg_job j = {out, qkv, seg, n_seg, n_heads, head_dim, seg[n_seg], scale};
    cpu_parallel(s, j.n_rows * n_heads, 1, seg_task, &j);
}
