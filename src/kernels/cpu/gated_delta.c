/* gated_delta.c - the Gated DeltaNet recurrence on the CPU (qwen35-arch §3.3 steps 3-7).
 *
 * Per value head h (key head h / (Hv/Hk)), with S [dk][dv] the recurrent state:
 *   q, k  L2-normalised over dk (eps inside the root), q scaled by dk^-1/2
 *   beta = sigmoid(b),  g = -exp(A_log) * softplus(a + dt_bias)   (log of the decay)
 * Recurrent form, one token at a time (decode):
 *   S = exp(g) S;  delta = beta (v - S^T k);  S += k delta^T;  o = S^T q
 * Chunked form (prefill), chunks of 64 tokens, the same function written as matrix work
 * (transformers' torch_chunk_gated_delta_rule): see chunk_step below.
 * Heads are independent: threads split heads, and each head's arithmetic happens in one fixed
 * order, so results do not depend on the thread count. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

#define CHUNK 64

static inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

static void l2norm(float *x, int64_t n) {
    float ss = 0.0f;
    for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
    float inv = 1.0f / sqrtf(ss + 1e-6f);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

struct gdn_job {
    float *out;
    const float *qkv, *a, *b;
    int64_t ldqkv, ldab;
    const qvlm_tensor *A_log, *dt_bias;
    float *S;
    qvlm_gdn_dims d;
    int64_t T;
    bool chunked;
    float *scratch;
    size_t scratch_per_thread; /* floats */
};

/* Load token t of head h: normalised q (scaled when scale != 0), k, raw v, gates. */
static void load_token(const struct gdn_job *j, int64_t h, int64_t t, float *q, float *k, float *v, float *beta,
                       float *g) {
    const int64_t dk = j->d.k_dim, dv = j->d.v_dim, Hk = j->d.n_k_heads, Hv = j->d.n_v_heads;
    const int64_t kh = h / (Hv / Hk);
    const float *row = j->qkv + t * j->ldqkv;
    memcpy(q, row + kh * dk, (size_t)dk * sizeof(float));
    memcpy(k, row + Hk * dk + kh * dk, (size_t)dk * sizeof(float));
    memcpy(v, row + 2 * Hk * dk + h * dv, (size_t)dv * sizeof(float));
    l2norm(q, dk);
    l2norm(k, dk);
    float bb = j->b[t * j->ldab + h], aa = j->a[t * j->ldab + h];
    *beta = 1.0f / (1.0f + expf(-bb));
    *g = -expf(cpu_weight_at(j->A_log, h)) * softplus(aa + cpu_weight_at(j->dt_bias, h));
}

static void recurrent_head(const struct gdn_job *j, int64_t h, float *work) {
    const int64_t dk = j->d.k_dim, dv = j->d.v_dim, Hv = j->d.n_v_heads;
    float *S = j->S + h * dk * dv;
    float *q = work, *k = q + dk, *v = k + dk, *m = v + dv;
    const float qdiv = sqrtf((float)dk);
    for (int64_t t = 0; t < j->T; t++) {
        float beta, g;
        load_token(j, h, t, q, k, v, &beta, &g);
        for (int64_t i = 0; i < dk; i++) q[i] /= qdiv;
        const float decay = expf(g);
        for (int64_t x = 0; x < dk * dv; x++) S[x] *= decay;
        for (int64_t c = 0; c < dv; c++) m[c] = 0.0f;
        for (int64_t i = 0; i < dk; i++)
            for (int64_t c = 0; c < dv; c++) m[c] += S[i * dv + c] * k[i];
        for (int64_t c = 0; c < dv; c++) m[c] = (v[c] - m[c]) * beta;
        for (int64_t i = 0; i < dk; i++)
            for (int64_t c = 0; c < dv; c++) S[i * dv + c] += k[i] * m[c];
        float *o = j->out + (t * Hv + h) * dv;
        for (int64_t c = 0; c < dv; c++) o[c] = 0.0f;
        for (int64_t i = 0; i < dk; i++)
            for (int64_t c = 0; c < dv; c++) o[c] += S[i * dv + c] * q[i];
    }
}

/* Floats of chunk workspace per thread. */
static size_t chunk_work_floats(int64_t dk, int64_t dv) {
    return (size_t)CHUNK * (size_t)(5 * dk + 4 * dv) + 3 * CHUNK * CHUNK + CHUNK * 2;
}

/* One chunk of n <= CHUNK tokens starting at t0 (rows n..CHUNK-1 behave as zero padding).
 * With cumulative log-decay c_i inside the chunk and G[i][j] = exp(c_i - c_j) for j <= i:
 *   A  = (diag(beta) K K^T) o G, strictly lower part;  L = I + A
 *   U  = L^-1 diag(beta) V;   W = L^-1 diag(beta exp(c)) K
 *   Vn = U - W S;   O = diag(exp c) Q S + ((Q K^T) o G) Vn
 *   S  = exp(c_last) S + (diag(exp(c_last - c)) K)^T Vn */
static void chunk_step(const struct gdn_job *j, int64_t h, int64_t t0, int64_t n, float *w) {
    const int64_t dk = j->d.k_dim, dv = j->d.v_dim, Hv = j->d.n_v_heads;
    float *S = j->S + h * dk * dv;
    float *Q = w, *K = Q + CHUNK * dk, *KB = K + CHUNK * dk, *KC = KB + CHUNK * dk, *WK = KC + CHUNK * dk;
    float *V = WK + CHUNK * dk, *U = V + CHUNK * dv, *VN = U + CHUNK * dv, *O = VN + CHUNK * dv;
    float *G = O + CHUNK * dv, *A = G + CHUNK * CHUNK, *QK = A + CHUNK * CHUNK;
    float *cum = QK + CHUNK * CHUNK, *beta = cum + CHUNK;
    const float qscale = 1.0f / sqrtf((float)dk);
    /* Load; the padded rows are zero, as transformers pads. */
    float acc = 0.0f;
    for (int64_t i = 0; i < CHUNK; i++) {
        float g = 0.0f, b = 0.0f;
        if (i < n) {
            load_token(j, h, t0 + i, Q + i * dk, K + i * dk, V + i * dv, &b, &g);
            for (int64_t x = 0; x < dk; x++) Q[i * dk + x] *= qscale;
        } else {
            memset(Q + i * dk, 0, (size_t)dk * sizeof(float));
            memset(K + i * dk, 0, (size_t)dk * sizeof(float));
            memset(V + i * dv, 0, (size_t)dv * sizeof(float));
        }
        acc += g;
        cum[i] = acc;
        beta[i] = b;
    }
    const int64_t m = n; /* rows past n are zero: skip them where it changes nothing */
    for (int64_t i = 0; i < m; i++) {
        for (int64_t x = 0; x < dk; x++) KB[i * dk + x] = K[i * dk + x] * beta[i];
        for (int64_t x = 0; x < dk; x++) KC[i * dk + x] = KB[i * dk + x] * expf(cum[i]);
        for (int64_t c = 0; c < dv; c++) U[i * dv + c] = V[i * dv + c] * beta[i];
        for (int64_t jj = 0; jj <= i; jj++) {
            G[i * CHUNK + jj] = expf(cum[i] - cum[jj]);
            float kk = 0.0f, qk = 0.0f;
            for (int64_t x = 0; x < dk; x++) {
                kk += KB[i * dk + x] * K[jj * dk + x];
                qk += Q[i * dk + x] * K[jj * dk + x];
            }
            A[i * CHUNK + jj] = kk * G[i * CHUNK + jj];
            QK[i * CHUNK + jj] = qk * G[i * CHUNK + jj];
        }
    }
    /* Forward substitution with the unit lower-triangular L = I + strictly_lower(A):
     * U <- L^-1 U and KC <- L^-1 KC, row by row. */
    for (int64_t i = 1; i < m; i++)
        for (int64_t jj = 0; jj < i; jj++) {
            const float a = A[i * CHUNK + jj];
            for (int64_t c = 0; c < dv; c++) U[i * dv + c] -= a * U[jj * dv + c];
            for (int64_t x = 0; x < dk; x++) KC[i * dk + x] -= a * KC[jj * dk + x];
        }
    /* Vn = U - KC S;  O = (Q exp c) S */
    for (int64_t i = 0; i < m; i++) {
        const float ec = expf(cum[i]);
        for (int64_t c = 0; c < dv; c++) {
            VN[i * dv + c] = U[i * dv + c];
            O[i * dv + c] = 0.0f;
        }
        for (int64_t x = 0; x < dk; x++) {
            const float kc = KC[i * dk + x], qe = Q[i * dk + x] * ec;
            const float *Sr = S + x * dv;
            for (int64_t c = 0; c < dv; c++) {
                VN[i * dv + c] -= kc * Sr[c];
                O[i * dv + c] += qe * Sr[c];
            }
        }
    }
    /* O += (QK o G) Vn, written out for the valid rows. */
    for (int64_t i = 0; i < m; i++) {
        for (int64_t jj = 0; jj <= i; jj++) {
            const float a = QK[i * CHUNK + jj];
            for (int64_t c = 0; c < dv; c++) O[i * dv + c] += a * VN[jj * dv + c];
        }
        memcpy(j->out + ((t0 + i) * Hv + h) * dv, O + i * dv, (size_t)dv * sizeof(float));
    }
    /* S = exp(c_last) S + (K exp(c_last - c))^T Vn; c_last includes the padded g = 0. */
    const float clast = cum[CHUNK - 1], cd = expf(clast);
    for (int64_t i = 0; i < m; i++)
        for (int64_t x = 0; x < dk; x++) WK[i * dk + x] = K[i * dk + x] * expf(clast - cum[i]);
    for (int64_t x = 0; x < dk; x++) {
        float *Sr = S + x * dv;
        for (int64_t c = 0; c < dv; c++) Sr[c] *= cd;
        for (int64_t i = 0; i < m; i++) {
            const float wk = WK[i * dk + x];
            for (int64_t c = 0; c < dv; c++) Sr[c] += wk * VN[i * dv + c];
        }
    }
}

static void gdn_task(void *p, int ith, int nth) {
    struct gdn_job *j = p;
    long h0, h1;
    qvlm_split_rows(j->d.n_v_heads, ith, nth, &h0, &h1);
    float *work = j->scratch + (size_t)ith * j->scratch_per_thread;
    for (long h = h0; h < h1; h++) {
        if (!j->chunked) {
            recurrent_head(j, h, work);
            continue;
        }
        for (int64_t t0 = 0; t0 < j->T; t0 += CHUNK) chunk_step(j, h, t0, QVLM_MIN(CHUNK, j->T - t0), work);
    }
}

void cpu_gated_delta(qvlm_stream *s, float *out, const float *qkv, int64_t ldqkv, const float *a, const float *b,
                     int64_t ldab, const qvlm_tensor *A_log, const qvlm_tensor *dt_bias, float *S,
                     const qvlm_gdn_dims *d, int64_t T, bool chunked) {
    int nth = qvlm_pool_size(cpu_pool(s));
    size_t per = (chunk_work_floats(d->k_dim, d->v_dim) + 15) & ~(size_t)15;
    float *scratch = cpu_scratch(s, per * sizeof(float), nth);
    if (QVLM_NEVER(scratch == NULL)) return;
    struct gdn_job j = {out, qkv, a, b, ldqkv, ldab, A_log, dt_bias, S, *d, T, chunked, scratch, per};
    cpu_parallel(s, d->n_v_heads, 1, gdn_task, &j);
}
