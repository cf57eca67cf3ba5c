/* gated_delta_impl.h - internals shared by the Gated DeltaNet kernels of each ISA
 * (gated_delta.c: dispatcher and scalar reference; gated_delta_avx512.c).
 *
 * The arithmetic, step by step, is defined by the scalar reference; the AVX-512 kernel
 * vectorises over the value (or key) columns and performs, per element, the same f32
 * operations in the same order, so the two agree bit for bit (tests/unit/deltanet_test.c).
 * Every reduction runs over one index in increasing order (an fma chain), never across lanes.
 */
#ifndef QVLM_KERNELS_CPU_GATED_DELTA_IMPL_H
#define QVLM_KERNELS_CPU_GATED_DELTA_IMPL_H

#include "kernels/cpu/cpu_ops.h"

#define QVLM_GDN_CHUNK 64

typedef struct qvlm_gdn_job {
    float *out;               /* [T][Hv][dv] */
    const float *qkv, *a, *b; /* rows at ldqkv / ldab */
    int64_t ldqkv, ldab;
    const qvlm_tensor *A_log, *dt_bias;
    float *S;                 /* [Hv][dk][dv] */
    qvlm_gdn_dims d;
    int64_t T;
    bool chunked;
    float *scratch;           /* per thread: scratch_per_thread floats */
    size_t scratch_per_thread;
} qvlm_gdn_job;

/* Row strides of the chunk workspace: dims rounded up to 16 floats (one zmm). */
static inline int64_t qvlm_gdn_pad(int64_t n) { return (n + 15) & ~(int64_t)15; }

/* Floats of per-thread workspace for one head's chunk (both ISAs use this layout):
 *   Q, K, KB, QE, WK [C][dkp];  UK [C][dvp + dkp] (U | KC side by side);  V, VN, O [C][dvp];
 *   Kt [dkp][C];  A, QK [C][C];  cum, beta, ec, wk [C];  tmp [dkp + dvp] x 4 (recurrence). */
static inline size_t qvlm_gdn_work_floats(int64_t dk, int64_t dv) {
    const size_t C = QVLM_GDN_CHUNK, dkp = (size_t)qvlm_gdn_pad(dk), dvp = (size_t)qvlm_gdn_pad(dv);
    return C * (5 * dkp + (dvp + dkp) + 3 * dvp) + dkp * C + 2 * C * C + 4 * C + 4 * (dkp + dvp) + 64;
}

/* Gates of token t, value head h (scalar libm code, shared by every ISA):
 *   beta = sigmoid(b),  g = -exp(A_log) * softplus(a + dt_bias). */
static inline void qvlm_gdn_gates(const qvlm_gdn_job *j, int64_t h, int64_t t, float *beta, float *g) {
    float bb = j->b[t * j->ldab + h], aa = j->a[t * j->ldab + h];
    float x = aa + cpu_weight_at(j->dt_bias, h);
    float sp = x > 20.0f ? x : log1pf(expf(x));
    *beta = 1.0f / (1.0f + expf(-bb));
    *g = -expf(cpu_weight_at(j->A_log, h)) * sp;
}

/* The pointers of token t, value head h in the qkv row. */
static inline void qvlm_gdn_rows(const qvlm_gdn_job *j, int64_t h, int64_t t, const float **q, const float **k,
                                 const float **v) {
    const int64_t dk = j->d.k_dim, dv = j->d.v_dim, Hk = j->d.n_k_heads, Hv = j->d.n_v_heads;
    const int64_t kh = h / (Hv / Hk);
    const float *row = j->qkv + t * j->ldqkv;
    *q = row + kh * dk;
    *k = row + Hk * dk + kh * dk;
    *v = row + 2 * Hk * dk + h * dv;
}

#if defined(__x86_64__)
/* One head, all of the job's tokens: chunked (prefill) or recurrent (decode). */
void qvlm_gdn_head_avx512(const qvlm_gdn_job *j, int64_t h, float *work);
#endif

#endif /* QVLM_KERNELS_CPU_GATED_DELTA_IMPL_H */
