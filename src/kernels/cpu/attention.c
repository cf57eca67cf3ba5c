/* attention.c - softmax attention on the CPU: causal GQA over paged KV (text, §3.4) and
 * bidirectional attention inside segments (vision tower, §5). Dispatcher, KV store, and the
 * scalar reference of the row algorithm in attention_impl.h (the oracle of
 * attention_avx512.c, which gives the same bits, and the fallback).
 *
 * Online softmax over key tiles in a fixed order: memory does not grow with the number of
 * keys, and a query's result does not depend on which other queries are computed with it,
 * on the thread count, or on the ISA. */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "kernels/cpu/attention_impl.h"
#include "kernels/cpu/matmul_impl.h" /* qvlm_ref_fma_ftz, qvlm_ref_round_bf16: vdpbf16ps in C */
#include "kernels/cpu/vmath.h"

#define TILE QVLM_ATTN_TILE

/* ---- the row algorithm (scalar reference) --------------------------------------------------- */

typedef struct {
    float m, l;
    float acc[QVLM_ATTN_MAX_HEAD_DIM];
} online;

static void online_init(online *o, int64_t d) {
    o->m = -INFINITY;
    o->l = 0.0f;
    memset(o->acc, 0, (size_t)d * sizeof(float));
}

/* Fold n scores (already scaled) and their value rows (V_i at v + i*ldv) into the state. */
static void online_tile(online *o, const float *sc, int64_t n, const float *v, int64_t ldv, int64_t d) {
    float mt = -INFINITY;
    for (int64_t i = 0; i < n; i++) mt = sc[i] > mt ? sc[i] : mt;
    float mnew = mt > o->m ? mt : o->m;
    float corr = qvlm_vexp(o->m - mnew); /* exp(-inf) = 0 on the first tile */
    o->l = o->l * corr;
    for (int64_t c = 0; c < d; c++) o->acc[c] = o->acc[c] * corr;
    float p[TILE], lanes[16] = {0};
    for (int64_t i = 0; i < n; i++) {
        p[i] = qvlm_vexp(sc[i] - mnew);
        lanes[i & 15] += p[i];
    }
    o->l = o->l + qvlm_vtree16(lanes);
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < d; c++) o->acc[c] = fmaf(p[i], v[i * ldv + c], o->acc[c]);
    o->m = mnew;
}

static void online_finish(const online *o, float *out, int64_t d) {
    float inv = 1.0f / o->l;
    for (int64_t c = 0; c < d; c++) out[c] = o->acc[c] * inv;
}

/* Text dot: 16-lane order. */
static float dot_lanes(const float *a, const float *b, int64_t n) {
    float acc[16] = {0};
    for (int64_t i = 0; i < n; i++) acc[i & 15] = fmaf(a[i], b[i], acc[i & 15]);
    return qvlm_vtree16(acc);
}

/* Vision dot: one chain. */
static float dot_chain(const float *a, const float *b, int64_t n) {
    float acc = 0.0f;
    for (int64_t i = 0; i < n; i++) acc = fmaf(a[i], b[i], acc);
    return acc;
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

size_t qvlm_attn_text_scratch_floats(int64_t n_heads, int64_t n_kv_heads, int64_t head_dim) {
    const int64_t rows = QVLM_ATTN_TEXT_TOKENS * (n_heads / n_kv_heads), dp = (head_dim + 15) & ~(int64_t)15;
    return (size_t)(rows * (dp + 2 + TILE) + 64);
}

static void ref_text_unit(const qvlm_attn_text_job *j, int64_t kvh, int64_t t0, int64_t t1) {
    const int64_t d = j->head_dim, group = j->n_heads / j->n_kv_heads;
    online o;
    float sc[TILE];
    for (int64_t t = t0; t < t1; t++)
        for (int64_t h = kvh * group; h < (kvh + 1) * group; h++) {
            const float *q = j->q + t * j->ldq + h * d;
            const int64_t n_keys = j->pos0 + t + 1;
            online_init(&o, d);
            for (int64_t k0 = 0; k0 < n_keys;) {
                int64_t n = qvlm_attn_tile_len(j->kv, k0, n_keys);
                for (int64_t i = 0; i < n; i++) sc[i] = dot_lanes(q, qvlm_attn_k_row(j->kv, kvh, k0 + i, d), d) * j->scale;
                online_tile(&o, sc, n, qvlm_attn_v_row(j->kv, kvh, k0, d), d, d);
                k0 += n;
            }
            online_finish(&o, j->out + (t * j->n_heads + h) * d, d);
        }
}

struct text_ctx {
    qvlm_attn_text_job job;
    qvlm_isa isa;
    float *scratch;
    size_t per_thread;
    _Atomic int64_t next_unit; /* units are handed out one at a time (see text_task) */
};

/* Units (token block, KV head) are taken from a shared counter, so threads stay even whatever
 * the units cost (the causal triangle makes later blocks dearer) and whichever threads the OS
 * runs; a unit's result does not depend on the slot that computes it. */
static void text_task(void *p, int ith, int nth) {
    struct text_ctx *c = p;
    const qvlm_attn_text_job *j = &c->job;
    const int64_t TB = QVLM_ATTN_TEXT_TOKENS, n_blk = (j->T + TB - 1) / TB, units = n_blk * j->n_kv_heads;
    float *scratch = c->scratch + (size_t)ith * c->per_thread;
    (void)nth;
    for (int64_t u; (u = atomic_fetch_add_explicit(&c->next_unit, 1, memory_order_relaxed)) < units;) {
        int64_t kvh = u % j->n_kv_heads, t0 = (u / j->n_kv_heads) * TB, t1 = QVLM_MIN(t0 + TB, j->T);
#if defined(__x86_64__)
        if (c->isa >= QVLM_ISA_AVX512) {
            qvlm_attn_text_unit_avx512(j, kvh, t0, t1, scratch);
            continue;
        }
#endif
        ref_text_unit(j, kvh, t0, t1);
    }
}

void cpu_attention(qvlm_stream *s, float *out, const float *q, int64_t ldq, const qvlm_kv_view *kv, int64_t pos0,
                   int64_t T, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale) {
    int nth = qvlm_pool_size(cpu_pool(s));
    size_t per = (qvlm_attn_text_scratch_floats(n_heads, n_kv_heads, head_dim) + 15) & ~(size_t)15;
    float *scratch = cpu_scratch(s, per * sizeof(float), nth);
    if (QVLM_NEVER(scratch == NULL)) return;
    struct text_ctx c = {{out, q, ldq, kv, pos0, T, n_heads, n_kv_heads, head_dim, scale},
                         cpu_stream_of(s)->be->cpu.isa, scratch, per, 0};
    const int64_t units = (T + QVLM_ATTN_TEXT_TOKENS - 1) / QVLM_ATTN_TEXT_TOKENS * n_kv_heads;
    cpu_parallel(s, units, 1, text_task, &c);
}

/* ---- bidirectional attention inside segments ------------------------------------------------ */

size_t qvlm_attn_seg_scratch_floats(int64_t max_seg_rows, int64_t head_dim) {
    const int64_t dp = (head_dim + 15) & ~(int64_t)15, tiles = (max_seg_rows + TILE - 1) / TILE;
    /* F32 kernel: Kt tiles, V rows, Q block, acc, m, l, P. The BF16 kernel's packed forms are
     * at most as large; the BF16 reference needs 2 * Ns rows of dp + 1 row. */
    return (size_t)(tiles * TILE * dp + max_seg_rows * dp + QVLM_ATTN_SEG_ROWS * (2 * dp + 2) + 4 * TILE + 64) +
           (size_t)(2 * dp + 64);
}

static void ref_seg_unit(const qvlm_attn_seg_job *j, int64_t si, int64_t h) {
    const int64_t d = j->head_dim, H = j->n_heads, ld = 3 * H * d, s0 = j->seg[si], s1 = j->seg[si + 1];
    online o;
    float sc[TILE];
    for (int64_t r = s0; r < s1; r++) {
        const float *q = j->qkv + r * ld + h * d;
        online_init(&o, d);
        for (int64_t k0 = s0; k0 < s1; k0 += TILE) {
            int64_t n = QVLM_MIN((int64_t)TILE, s1 - k0);
            const float *K = j->qkv + k0 * ld + H * d + h * d;
            const float *V = j->qkv + k0 * ld + 2 * H * d + h * d;
            for (int64_t i = 0; i < n; i++) sc[i] = dot_chain(q, K + i * ld, d) * j->scale;
            online_tile(&o, sc, n, V, ld, d);
        }
        online_finish(&o, j->out + r * H * d + h * d, d);
    }
}

/* BF16 precision (attention_impl.h). Rows of the segment are rounded once into `work`:
 * [Ns][2*d2] for K and V each, plus one query row. */
static void ref_seg_unit_bf16(const qvlm_attn_seg_job *j, int64_t si, int64_t h, float *work) {
    const int64_t d = j->head_dim, H = j->n_heads, ld = 3 * H * d, s0 = j->seg[si], s1 = j->seg[si + 1], Ns = s1 - s0;
    const int64_t d2 = (d + 1) / 2, w = 2 * d2;
    float *kb = work, *vb = kb + Ns * w, *qb = vb + Ns * w;
    for (int64_t i = 0; i < Ns; i++)
        for (int64_t c = 0; c < w; c++) {
            const float *row = j->qkv + (s0 + i) * ld;
            kb[i * w + c] = c < d ? qvlm_ref_round_bf16(row[H * d + h * d + c]) : 0.0f;
            vb[i * w + c] = c < d ? qvlm_ref_round_bf16(row[2 * H * d + h * d + c]) : 0.0f;
        }
    static const float zero_row[QVLM_ATTN_MAX_HEAD_DIM + 2] = {0};
    for (int64_t r = s0; r < s1; r++) {
        for (int64_t c = 0; c < w; c++) qb[c] = c < d ? qvlm_ref_round_bf16(j->qkv[r * ld + h * d + c]) : 0.0f;
        float m = -INFINITY, l = 0.0f, acc[QVLM_ATTN_MAX_HEAD_DIM];
        memset(acc, 0, (size_t)d * sizeof(float));
        for (int64_t k0 = 0; k0 < Ns; k0 += TILE) {
            const int64_t n = QVLM_MIN((int64_t)TILE, Ns - k0);
            float sc[TILE], p[TILE + 1], lanes[16] = {0}, mt = -INFINITY;
            for (int64_t i = 0; i < n; i++) {
                const float *kr = kb + (k0 + i) * w;
                float s = 0.0f;
                for (int64_t mm = 0; mm < d2; mm++) {
                    s = qvlm_ref_fma_ftz(qb[2 * mm + 1], kr[2 * mm + 1], s);
                    s = qvlm_ref_fma_ftz(qb[2 * mm], kr[2 * mm], s);
                }
                sc[i] = s * j->scale;
                mt = sc[i] > mt ? sc[i] : mt;
            }
            const float mnew = mt > m ? mt : m, corr = qvlm_vexp(m - mnew);
            l = l * corr;
            for (int64_t c = 0; c < d; c++) acc[c] = acc[c] * corr;
            for (int64_t i = 0; i < n; i++) {
                p[i] = qvlm_ref_round_bf16(qvlm_vexp(sc[i] - mnew));
                lanes[i & 15] += p[i];
            }
            p[n] = 0.0f; /* the pad of an odd tile */
            l = l + qvlm_vtree16(lanes);
            for (int64_t mm = 0; 2 * mm < n; mm++) {
                const float *v0 = vb + (k0 + 2 * mm) * w, *v1 = 2 * mm + 1 < n ? v0 + w : zero_row;
                for (int64_t c = 0; c < d; c++) {
                    acc[c] = qvlm_ref_fma_ftz(p[2 * mm + 1], v1[c], acc[c]);
                    acc[c] = qvlm_ref_fma_ftz(p[2 * mm], v0[c], acc[c]);
                }
            }
            m = mnew;
        }
        const float inv = 1.0f / l;
        for (int64_t c = 0; c < d; c++) j->out[r * H * d + h * d + c] = acc[c] * inv;
    }
}

struct seg_ctx {
    qvlm_attn_seg_job job;
    qvlm_isa isa;
    float *scratch;
    size_t per_thread;
    _Atomic int64_t next_unit;
};

/* Units (segment, head) from a shared counter, as text_task: segments may differ in length. */
static void seg_task(void *p, int ith, int nth) {
    struct seg_ctx *c = p;
    const qvlm_attn_seg_job *j = &c->job;
    const int64_t units = j->n_seg * j->n_heads;
    float *scratch = c->scratch + (size_t)ith * c->per_thread;
    (void)nth;
    for (int64_t u; (u = atomic_fetch_add_explicit(&c->next_unit, 1, memory_order_relaxed)) < units;) {
        int64_t si = u / j->n_heads, h = u % j->n_heads;
        if (j->bf16) {
#if defined(__x86_64__)
            if (c->isa >= QVLM_ISA_AVX512_BF16) {
                qvlm_attn_seg_unit_avx512bf16(j, si, h, scratch);
                continue;
            }
#endif
            ref_seg_unit_bf16(j, si, h, scratch);
            continue;
        }
#if defined(__x86_64__)
        if (c->isa >= QVLM_ISA_AVX512) {
            qvlm_attn_seg_unit_avx512(j, si, h, scratch);
            continue;
        }
#endif
        ref_seg_unit(j, si, h);
    }
}

void cpu_attention_segments(qvlm_stream *s, float *out, const float *qkv, const int64_t *seg, int64_t n_seg,
                            int64_t n_heads, int64_t head_dim, float scale) {
    int nth = qvlm_pool_size(cpu_pool(s));
    int64_t longest = 0;
    for (int64_t i = 0; i < n_seg; i++) longest = QVLM_MAX(longest, seg[i + 1] - seg[i]);
    size_t per = (qvlm_attn_seg_scratch_floats(longest, head_dim) + 15) & ~(size_t)15;
    float *scratch = cpu_scratch(s, per * sizeof(float), nth);
    if (QVLM_NEVER(scratch == NULL)) return;
    const qvlm_cpu *cpu = &cpu_stream_of(s)->be->cpu;
    struct seg_ctx c = {{out, qkv, seg, n_seg, n_heads, head_dim, seg[n_seg], scale, cpu->precision == QVLM_PREC_BF16},
                        cpu->isa, scratch, per, 0};
    cpu_parallel(s, n_seg * n_heads, 1, seg_task, &c);
}
