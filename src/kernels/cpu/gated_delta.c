/* gated_delta.c - the Gated DeltaNet recurrence on the CPU (qwen35-arch §3.3 steps 3-7):
 * dispatcher and scalar reference (the oracle of gated_delta_avx512.c, and the fallback).
 *
 * Per value head h (key head h / (Hv/Hk)), with S [dk][dv] the recurrent state:
 *   q, k  L2-normalised over dk (eps inside the root), q scaled by dk^-1/2
 *   beta = sigmoid(b),  g = -exp(A_log) * softplus(a + dt_bias)   (log of the decay)
 * Recurrent form, one token at a time (decode):
 *   S = exp(g) S;  delta = beta (v - S^T k);  S += k delta^T;  o = S^T q
 * Chunked form (prefill), chunks of 64 tokens from the start of the call, the same function
 * written as matrix work (transformers' torch_chunk_gated_delta_rule): see ref_chunk below.
 * The two forms agree to rounding (tests/unit/deltanet_test.c); each is bitwise independent
 * of the thread count (threads split heads, a head runs on one thread in a fixed order) and
 * of the ISA (the AVX-512 kernel repeats the reference's operations element for element).
 * The chunked form depends on where the call starts (its chunk boundaries); callers cut
 * prefills at multiples of 64 (engine/session.c).
 *
 * exp is qvlm_vexp (vmath.h) everywhere except in the per-token gates, which use libm in
 * code shared by every ISA. Every sum is an fmaf chain over one index in increasing order. */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "kernels/cpu/gated_delta_impl.h"
#include "kernels/cpu/vmath.h"

#define C QVLM_GDN_CHUNK

/* y = x / sqrt(sum x^2 + 1e-6) (qvlm_vsumsq order), then y *= scale when scale != 0. */
static void ref_l2norm(float *y, const float *x, int64_t n, float scale) {
    float inv = 1.0f / sqrtf(qvlm_vsumsq(x, n) + 1e-6f);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * inv;
    if (scale != 0.0f)
        for (int64_t i = 0; i < n; i++) y[i] = y[i] * scale;
}

/* ---- recurrent form --------------------------------------------------------------------------
 *   decay = vexp(g)
 *   m[c]     = sum_x (S[x][c] * decay) * k[x]                 (fmaf chain over x)
 *   delta[c] = (v[c] - m[c]) * beta
 *   S[x][c]  = fmaf(k[x], delta[c], S[x][c] * decay)
 *   o[c]     = sum_x S[x][c] * q[x]       (new S; fmaf chain over x) */
static void ref_recurrent(const qvlm_gdn_job *j, int64_t h, float *work) {
    const int64_t dk = j->d.k_dim, dv = j->d.v_dim, Hv = j->d.n_v_heads;
    float *S = j->S + h * dk * dv;
    float *q = work, *k = q + dk, *m = k + dk;
    const float qscale = 1.0f / sqrtf((float)dk);
    for (int64_t t = 0; t < j->T; t++) {
        const float *qr, *kr, *v;
        float beta, g;
        qvlm_gdn_rows(j, h, t, &qr, &kr, &v);
        qvlm_gdn_gates(j, h, t, &beta, &g);
        ref_l2norm(q, qr, dk, qscale);
        ref_l2norm(k, kr, dk, 0.0f);
        const float decay = qvlm_vexp(g);
        for (int64_t c = 0; c < dv; c++) m[c] = 0.0f;
        for (int64_t x = 0; x < dk; x++)
            for (int64_t c = 0; c < dv; c++) m[c] = fmaf(S[x * dv + c] * decay, k[x], m[c]);
        for (int64_t c = 0; c < dv; c++) m[c] = (v[c] - m[c]) * beta; /* delta */
        float *o = j->out + (t * Hv + h) * dv;
        for (int64_t c = 0; c < dv; c++) o[c] = 0.0f;
        for (int64_t x = 0; x < dk; x++)
            for (int64_t c = 0; c < dv; c++) {
                float s = fmaf(k[x], m[c], S[x * dv + c] * decay);
                S[x * dv + c] = s;
                o[c] = fmaf(s, q[x], o[c]);
            }
    }
}

/* ---- chunked form ------------------------------------------------------------------------------
 * One chunk of n <= 64 tokens starting at t0, cum_i the cumulative log-decay inside it:
 *   ec_i = vexp(cum_i);  KB_i = K_i beta_i;  KC_i = KB_i ec_i;  U_i = V_i beta_i;  QE_i = Q_i ec_i
 *   for j <= i:  G = vexp(cum_i - cum_j);  A_ij = (KB_i . K_j) G;  QK_ij = (Q_i . K_j) G
 *   for i = 1.., j < i:  U_i -= A_ij U_j;  KC_i -= A_ij KC_j    (forward substitution: U <- L^-1 U,
 *                                                                KC <- L^-1 KC, L = I + A strictly lower)
 *   VN_i = U_i - sum_x KC_i[x] S[x];   O_i = sum_x QE_i[x] S[x] + sum_{j<=i} QK_ij VN_j
 *   S = vexp(c_last) S + sum_i (K_i vexp(c_last - cum_i))^T VN_i
 * Dots and sums are fmaf chains over x (or j, or i) in increasing order; subtractions are
 * fmaf(-a, b, c). */
static void ref_chunk(const qvlm_gdn_job *j, int64_t h, int64_t t0, int64_t n, float *w) {
    const int64_t dk = j->d.k_dim, dv = j->d.v_dim, Hv = j->d.n_v_heads;
    float *S = j->S + h * dk * dv;
    float *Q = w, *K = Q + C * dk, *KB = K + C * dk, *KC = KB + C * dk, *QE = KC + C * dk, *WK = QE + C * dk;
    float *U = WK + C * dk, *A = U + C * dv, *QK = A + C * C;
    float *cum = QK + C * C, *beta = cum + C, *ec = beta + C;
    const float qscale = 1.0f / sqrtf((float)dk);
    for (int64_t i = 0; i < n; i++) {
        const float *qr, *kr, *v;
        float g;
        qvlm_gdn_rows(j, h, t0 + i, &qr, &kr, &v);
        qvlm_gdn_gates(j, h, t0 + i, &beta[i], &g);
        ref_l2norm(Q + i * dk, qr, dk, qscale);
        ref_l2norm(K + i * dk, kr, dk, 0.0f);
        cum[i] = (i ? cum[i - 1] : 0.0f) + g;
        for (int64_t c = 0; c < dv; c++) U[i * dv + c] = v[c] * beta[i];
    }
    for (int64_t i = 0; i < n; i++) {
        ec[i] = qvlm_vexp(cum[i]);
        for (int64_t x = 0; x < dk; x++) {
            KB[i * dk + x] = K[i * dk + x] * beta[i];
            KC[i * dk + x] = KB[i * dk + x] * ec[i];
            QE[i * dk + x] = Q[i * dk + x] * ec[i];
        }
        for (int64_t jj = 0; jj <= i; jj++) {
            float G = qvlm_vexp(cum[i] - cum[jj]), kk = 0.0f, qk = 0.0f;
            for (int64_t x = 0; x < dk; x++) {
                kk = fmaf(KB[i * dk + x], K[jj * dk + x], kk);
                qk = fmaf(Q[i * dk + x], K[jj * dk + x], qk);
            }
            A[i * C + jj] = kk * G;
            QK[i * C + jj] = qk * G;
        }
    }
    for (int64_t i = 1; i < n; i++)
        for (int64_t jj = 0; jj < i; jj++) {
            const float a = A[i * C + jj];
            for (int64_t c = 0; c < dv; c++) U[i * dv + c] = fmaf(-a, U[jj * dv + c], U[i * dv + c]);
            for (int64_t x = 0; x < dk; x++) KC[i * dk + x] = fmaf(-a, KC[jj * dk + x], KC[i * dk + x]);
        }
    /* VN overwrites U. */
    for (int64_t i = 0; i < n; i++)
        for (int64_t x = 0; x < dk; x++)
            for (int64_t c = 0; c < dv; c++) U[i * dv + c] = fmaf(-KC[i * dk + x], S[x * dv + c], U[i * dv + c]);
    for (int64_t i = 0; i < n; i++) {
        float *o = j->out + ((t0 + i) * Hv + h) * dv;
        for (int64_t c = 0; c < dv; c++) o[c] = 0.0f;
        for (int64_t x = 0; x < dk; x++)
            for (int64_t c = 0; c < dv; c++) o[c] = fmaf(QE[i * dk + x], S[x * dv + c], o[c]);
        for (int64_t jj = 0; jj <= i; jj++)
            for (int64_t c = 0; c < dv; c++) o[c] = fmaf(QK[i * C + jj], U[jj * dv + c], o[c]);
    }
    const float clast = cum[n - 1], cd = qvlm_vexp(clast);
    for (int64_t i = 0; i < n; i++) {
        const float wk = qvlm_vexp(clast - cum[i]);
        for (int64_t x = 0; x < dk; x++) WK[i * dk + x] = K[i * dk + x] * wk;
    }
    for (int64_t x = 0; x < dk; x++)
        for (int64_t c = 0; c < dv; c++) {
            float s = S[x * dv + c] * cd;
            for (int64_t i = 0; i < n; i++) s = fmaf(WK[i * dk + x], U[i * dv + c], s);
            S[x * dv + c] = s;
        }
}

static void ref_head(const qvlm_gdn_job *j, int64_t h, float *work) {
    if (!j->chunked) {
        ref_recurrent(j, h, work);
        return;
    }
    for (int64_t t0 = 0; t0 < j->T; t0 += C) ref_chunk(j, h, t0, QVLM_MIN((int64_t)C, j->T - t0), work);
}

/* ---- dispatch ------------------------------------------------------------------------------------ */

struct gdn_task_ctx {
    qvlm_gdn_job job;
    qvlm_isa isa;
    _Atomic int64_t next_head; /* heads are handed out one at a time */
};

/* Heads come from a shared counter: threads stay even whichever the OS runs, and a head's
 * result does not depend on the slot (or scratch) that computes it. */
static void gdn_task(void *p, int ith, int nth) {
    struct gdn_task_ctx *tc = p;
    const qvlm_gdn_job *j = &tc->job;
    float *work = j->scratch + (size_t)ith * j->scratch_per_thread;
    (void)nth;
    for (int64_t h; (h = atomic_fetch_add_explicit(&tc->next_head, 1, memory_order_relaxed)) < j->d.n_v_heads;) {
#if defined(__x86_64__)
        if (tc->isa >= QVLM_ISA_AVX512) {
            qvlm_gdn_head_avx512(j, h, work);
            continue;
        }
#endif
        ref_head(j, h, work);
    }
}

void cpu_gated_delta(qvlm_stream *s, float *out, const float *qkv, int64_t ldqkv, const float *a, const float *b,
                     int64_t ldab, const qvlm_tensor *A_log, const qvlm_tensor *dt_bias, float *S,
                     const qvlm_gdn_dims *d, int64_t T, bool chunked) {
    int nth = qvlm_pool_size(cpu_pool(s));
    size_t per = (qvlm_gdn_work_floats(d->k_dim, d->v_dim) + 15) & ~(size_t)15;
    float *scratch = cpu_scratch(s, per * sizeof(float), nth);
    if (QVLM_NEVER(scratch == NULL)) return;
    struct gdn_task_ctx tc = {{out, qkv, a, b, ldqkv, ldab, A_log, dt_bias, S, *d, T, chunked, scratch, per},
                              cpu_stream_of(s)->be->cpu.isa, 0};
    cpu_parallel(s, d->n_v_heads, 1, gdn_task, &tc);
}
