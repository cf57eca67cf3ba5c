/* gated_delta.cu - the Gated DeltaNet core (qwen35-arch §3.3 steps 3-7; kernels/cpu/gated_delta.c
 * is the reference and its comment has the math).
 *
 * Columns of the state are independent: with S [dk][dv], column c of S, of delta, of the
 * output and of the chunk quantities Vn, O depends only on column c (and on q, k, beta, g,
 * which all columns share). So blocks split a head's value columns, and the per-chunk work
 * that does not involve S (normalisation, the decay matrix, the triangular solve) is done once
 * per (chunk, head) by a separate, fully parallel kernel.
 *
 *  recurrent (decode): block = CB columns x 8 row groups; each thread keeps its rows of its
 *    column of S in registers across the tokens of the call; optionally the gated RMSNorm of
 *    the output over dv is fused (when one block covers all dv columns).
 *  chunked (prefill): k_gdn_prep per (chunk, head) writes W = L^-1 diag(beta e^c) K,
 *    U = L^-1 diag(beta) V, Qe = diag(e^c) Q, Kd = diag(e^(c_last - c)) K, QKG = (Q K^T) o G
 *    and e^(c_last); k_gdn_scan per (head, 32 columns) walks the chunks in order with S in
 *    shared memory: Vn = U - W S, O = Qe S + QKG Vn, S = e^(c_last) S + Kd^T Vn.
 * Per element the sums run in the CPU's order, except that the reductions over dk in the
 * recurrent form are split over 8 row groups. */
#include "kernels/cuda/cuda_common.cuh"

#define CHUNK 64
#define RG 8 /* row groups of the recurrent kernel */

__device__ __forceinline__ float softplus_f(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* The log of a token's decay, g = -exp(A_log) * softplus(a + dt_bias); its beta is sigmoid_f(b).
 * One expression for every kernel here, so that they agree bit for bit. */
__device__ __forceinline__ float gdn_log_decay(float a, float A_log, float dt_bias) {
    return -expf(A_log) * softplus_f(a + dt_bias);
}

/* 1 / |v| (+1e-6 under the root) over n values: lane l adds v[l], v[l + 32], ... in order, then
 * the warp tree; every lane gets it. How the recurrent kernels normalise q and k. */
__device__ __forceinline__ float inv_l2(const float *v, int64_t n, int lane) {
    float ss = 0.0f;
    for (int64_t x = lane; x < n; x += 32) ss += v[x] * v[x];
    return 1.0f / sqrtf(warp_sum(ss) + 1e-6f);
}

/* ==== recurrent ===================================================================================== */

template <int MAXR>
__global__ void __launch_bounds__(1024, 1)
    k_gdn_rec(float *out, const float *qkv, const float *ga, const float *gb, const void *A_log, int adt,
              const void *dt_bias, int ddt, float *S, const float *z, const void *nw, int nwdt, float *y_norm,
              float norm_eps, int64_t ldqkv, int64_t ldab, int64_t Hk, int64_t Hv, int64_t dk, int64_t dv, int64_t T,
              int CB, float *part, unsigned *count) {
    QVLM_DYN_SMEM(float, sm);
    float *q = sm, *k = q + dk, *red = k + dk, *misc = red + RG * CB, *bred = misc + 4;
    const int64_t h = blockIdx.x, kh = h / (Hv / Hk);
    const int cx = threadIdx.x % CB, ry = threadIdx.x / CB, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t c = (int64_t)blockIdx.y * CB + cx;
    const bool cvalid = c < dv;
    float *Sh = S + h * dk * dv;
    float s[MAXR];
    /* The state is read before waiting for the previous kernel: only this op writes it (copies
     * aside, which are not kernels), and the kernel just before it is never this op on the same
     * state (the layer's conv1d is between). */
#pragma unroll
    for (int j = 0; j < MAXR; j++) {
        const int64_t i = ry + RG * j;
        s[j] = (i < dk && cvalid) ? Sh[i * dv + c] : 0.0f;
    }
    QCU_PDL_ENTRY();
    const float qdiv = sqrtf((float)dk);
    for (int64_t t = 0; t < T; t++) {
        const float *row = qkv + t * ldqkv;
        for (int64_t x = threadIdx.x; x < dk; x += blockDim.x) {
            q[x] = row[kh * dk + x];
            k[x] = row[Hk * dk + kh * dk + x];
        }
        __syncthreads();
        if (warp < 2) {
            const float inv = inv_l2(warp == 0 ? q : k, dk, lane);
            if (lane == 0) misc[warp] = inv;
        } else if (warp == 2 && lane == 0) {
            misc[2] = sigmoid_f(gb[t * ldab + h]);
            misc[3] = expf(gdn_log_decay(ga[t * ldab + h], wload(A_log, adt, h), wload(dt_bias, ddt, h)));
        }
        __syncthreads();
        const float invq = misc[0], invk = misc[1], beta = misc[2], decay = misc[3];
        float pm = 0.0f;
#pragma unroll
        for (int j = 0; j < MAXR; j++) {
            const int64_t i = ry + RG * j;
            if (i < dk) {
                s[j] *= decay;
                pm += s[j] * (k[i] * invk);
            }
        }
        red[ry * CB + cx] = pm;
        __syncthreads();
        float m = 0.0f;
#pragma unroll
        for (int r = 0; r < RG; r++) m += red[r * CB + cx];
        const float v = cvalid ? row[2 * Hk * dk + h * dv + c] : 0.0f;
        m = (v - m) * beta;
        __syncthreads();
        float po = 0.0f;
#pragma unroll
        for (int j = 0; j < MAXR; j++) {
            const int64_t i = ry + RG * j;
            if (i < dk) {
                s[j] += (k[i] * invk) * m;
                po += s[j] * ((q[i] * invq) / qdiv);
            }
        }
        red[ry * CB + cx] = po;
        __syncthreads();
        float o = 0.0f;
#pragma unroll
        for (int r = 0; r < RG; r++) o += red[r * CB + cx];
        if (y_norm && part) {
            /* T == 1 and the head's columns spread over gridDim.y blocks: each block leaves its
             * outputs and its sum of squares; the last block of the head to finish normalises
             * all of them (sums in block order, so the result does not depend on timing). */
            __shared__ bool last;
            if (ry == 0 && cvalid) out[h * dv + c] = o;
            const float ss = block_sum((ry == 0 && cvalid) ? o * o : 0.0f, bred);
            if (threadIdx.x == 0) part[h * gridDim.y + blockIdx.y] = ss;
            __threadfence();
            __syncthreads();
            if (threadIdx.x == 0) last = atomicAdd(&count[h], 1u) == gridDim.y - 1;
            __syncthreads();
            if (last) {
                __threadfence();
                float tot = 0.0f;
                for (unsigned b = 0; b < gridDim.y; b++) tot += __ldcg(&part[h * gridDim.y + b]);
                const float inv = 1.0f / sqrtf(tot / (float)dv + norm_eps);
                for (int64_t cc = threadIdx.x; cc < dv; cc += blockDim.x) {
                    const float g = z[h * dv + cc];
                    y_norm[h * dv + cc] = ((__ldcg(&out[h * dv + cc]) * inv) * wload(nw, nwdt, cc)) * silu_f(g);
                }
                if (threadIdx.x == 0) count[h] = 0; /* ready for the next call */
            }
        } else if (!y_norm) {
            if (ry == 0 && cvalid) out[(t * Hv + h) * dv + c] = o;
        } else {
            /* gated RMSNorm over the dv outputs of this head (this block holds all of them) */
            const float tot = block_sum((ry == 0 && cvalid) ? o * o : 0.0f, bred);
            const float inv = 1.0f / sqrtf(tot / (float)dv + norm_eps);
            if (ry == 0 && cvalid) {
                const int64_t e = (t * Hv + h) * dv + c;
                const float g = z[e];
                y_norm[e] = ((o * inv) * wload(nw, nwdt, c)) * silu_f(g);
            }
        }
        __syncthreads(); /* q, k, red are rewritten by the next token */
    }
#pragma unroll
    for (int j = 0; j < MAXR; j++) {
        const int64_t i = ry + RG * j;
        if (i < dk && cvalid) Sh[i * dv + c] = s[j];
    }
}

/* ==== one decode token, from the projections (conv1d + recurrence + gated norm) ================== */

/* The conv1d_silu kernel, the recurrent kernel and its fused gated RMSNorm of one token in one
 * launch, with their bits: every value below is the same expression, in the same order, as in
 * k_conv1d_silu (conv1d.cu) and k_gdn_rec above (its cross-block form for dv > 32, where the
 * norm's sum adds the sums of 32 columns in column order).
 *
 * Block h is value head h, one warp per 8 columns. Lane (ry, cq) = (lane / 4, lane % 4) holds
 * rows ry, ry + 8, ... of columns c0 + 2cq and c0 + 2cq + 1 in registers (two adjacent floats:
 * each load instruction reads whole 32-byte sectors), which is k_gdn_rec's split of a column
 * into 8 row groups; the sums over the groups, k_gdn_rec's trip through shared memory and two
 * barriers, are eight shuffles here, and the norm needs no other block. q and k are normalised
 * once per block into shared memory instead of in every thread's loops (a division per row).
 * Why: a decode step waits on this kernel in every DeltaNet layer, and k_gdn_rec is a long chain
 * of dependent instructions per warp (ncu: ~1,600 a warp, 2 warps a scheduler) behind a conv
 * kernel of its own. In a graph on an H200: conv + recurrence 1.86 + 7.02 us at the 0.8B's
 * 16 x 128 x 128, this kernel 5.25 us; at 16/32 heads 10.22 us against 5.61.
 *
 * The conv: the block convolves the channels it reads, q and k of its key head and v of its own
 * columns, and writes their conv state. Where a key head has several value heads, their blocks
 * share q and k: each counts itself in (the stream's sync area) once it has used the old
 * window, and the last one writes the shared channels' new window, so none is overwritten
 * before every block has read it; the last also zeroes the counter. */
#define DEC_K 4 /* the conv's taps: Qwen3.5's linear_conv_kernel_dim */

/* One channel of k_conv1d_silu at T = 1 with DEC_K taps (its expressions, in its order), its
 * weights and window read before the wait (init), the token convolved and the window written
 * after it (run). */
struct conv_ch {
    int64_t ch;  /* -1: none */
    bool shared; /* q or k: read by every value head of the key head */
    float wk[DEC_K], win[DEC_K - 1], xn;
    __device__ __forceinline__ void init(const qcu_gdn_decode_args &a, int x, int kh, int h, int64_t C) {
        const int dk = (int)a.dk, nch = 2 * dk + (int)a.dv;
        shared = x < 2 * dk;
        ch = x < dk ? (int64_t)kh * dk + x
             : x < 2 * dk ? a.Hk * dk + (int64_t)kh * dk + (x - dk)
             : x < nch ? 2 * a.Hk * dk + (int64_t)h * a.dv + (x - 2 * dk) : -1;
        const bool live = ch >= 0;
#pragma unroll
        for (int k = 0; k < DEC_K; k++) wk[k] = live ? wload(a.conv_w, a.cwdt, ch * DEC_K + k) : 0.0f;
#pragma unroll
        for (int k = 0; k < DEC_K - 1; k++) win[k] = live ? a.conv_state[k * C + ch] : 0.0f;
    }
    /* defer: leave the window of a shared channel to store() */
    __device__ __forceinline__ void run(const qcu_gdn_decode_args &a, float *out, int64_t C, bool defer) {
        if (ch < 0) return;
        const float xv = a.x[ch];
        float acc = 0.0f;
#pragma unroll
        for (int k = 0; k < DEC_K - 1; k++) acc += wk[k] * win[k];
        acc += wk[DEC_K - 1] * xv;
        *out = silu_f(acc);
        xn = xv;
        if (!(defer && shared)) store(a, C);
    }
    __device__ __forceinline__ void store(const qcu_gdn_decode_args &a, int64_t C) {
        if (ch < 0) return;
#pragma unroll
        for (int k = 0; k < DEC_K - 2; k++) a.conv_state[k * C + ch] = win[k + 1];
        a.conv_state[(DEC_K - 2) * C + ch] = xn;
    }
};

/* The sum over the 8 row groups of a column (lanes cq, cq + 4, ..., cq + 28), in group order:
 * k_gdn_rec's loop over red[r * CB + cx]. */
__device__ __forceinline__ float row_groups_sum(float v, int cq) {
    float s = 0.0f;
#pragma unroll
    for (int r = 0; r < 8; r++) s += __shfl_sync(0xffffffffu, v, r * 4 + cq);
    return s;
}

template <int MAXR>
__global__ void __launch_bounds__(512, 1) k_gdn_decode(qcu_gdn_decode_args a) {
    QVLM_DYN_SMEM(float, sm);
    /* Sizes as int: a head's state is at most 128 x 128 here (qcu_gdn_decode_fits). */
    const int Hk = (int)a.Hk, Hv = (int)a.Hv, dk = (int)a.dk, dv = (int)a.dv;
    const int64_t C = 2 * a.Hk * a.dk + a.Hv * a.dv;
    const int h = blockIdx.x, kh = h / (Hv / Hk), tid = threadIdx.x;
    float *qs = sm, *ks = qs + dk, *vs = ks + dk, *os = vs + dv, *misc = os + dv; /* 4 gates, 4 parts, last */
    const int warp = tid >> 5, lane = tid & 31, ry = lane >> 2, cq = lane & 3, ca = warp * 8 + 2 * cq;
    float *Sh = a.S + (int64_t)h * dk * dv;

    /* Before the wait: the state, the conv weights and window, the small weights. Only this op
     * writes S and the conv state, and the kernel before it is the layer's input projection. */
    float s0[MAXR], s1[MAXR];
#pragma unroll
    for (int j = 0; j < MAXR; j++) {
        const int i = ry + 8 * j;
        float2 v = make_float2(0.0f, 0.0f);
        if (i < dk) v = *(const float2 *)(Sh + i * dv + ca);
        s0[j] = v.x, s1[j] = v.y;
    }
    /* thread x convolves channels x and x + blockDim of q | k | v */
    conv_ch c0, c1;
    c0.init(a, tid, kh, h, C), c1.init(a, tid + (int)blockDim.x, kh, h, C);
    const int nw = (int)(blockDim.x >> 5);
    const bool gates = warp == 2 % nw && lane == 0; /* the thread of task 2 below */
    const float Al = gates ? wload(a.A_log, a.adt, h) : 0.0f, dtb = gates ? wload(a.dt_bias, a.ddt, h) : 0.0f;
    const float nwa = wload(a.norm_w, a.nwdt, ca), nwb = wload(a.norm_w, a.nwdt, ca + 1);
    QCU_PDL_ENTRY();
    const float bb = gates ? a.b[h] : 0.0f, aa = gates ? a.a[h] : 0.0f;
    const float za = ry == 0 ? a.z[h * dv + ca] : 0.0f, zb = ry == 0 ? a.z[h * dv + ca + 1] : 0.0f;

    /* conv1d + SiLU of the block's channels; qs, ks, vs are consecutive */
    const bool defer = Hv != Hk;
    c0.run(a, sm + tid, C, defer), c1.run(a, sm + tid + blockDim.x, C, defer);
    __syncthreads();
    if (defer && tid == 0) { /* every thread of the block has used its old window */
        const bool last = atomicAdd(a.count + kh, 1u) == (unsigned)(Hv / Hk - 1);
        if (last) a.count[kh] = 0;
        misc[8] = last ? 1.0f : 0.0f;
    }

    /* k_gdn_rec, T = 1: tasks 0 and 1 the norms of q and k (its warps 0 and 1), task 2 the
     * gates (its warp 2); a block of fewer warps takes them in turn */
    for (int t = warp; t < 3; t += nw) {
        if (t < 2) {
            const float inv = inv_l2(t == 0 ? qs : ks, dk, lane);
            if (lane == 0) misc[t] = inv;
        } else if (gates) {
            misc[2] = sigmoid_f(bb);
            misc[3] = expf(gdn_log_decay(aa, Al, dtb));
        }
    }
    __syncthreads();
    if (defer && misc[8] != 0.0f) { /* the last block of the key head: the shared windows */
        if (c0.shared) c0.store(a, C);
        if (c1.shared) c1.store(a, C);
    }
    const float invq = misc[0], invk = misc[1], beta = misc[2], decay = misc[3], qdiv = sqrtf((float)dk);
    /* k and q as the sums use them, each computed once (k_gdn_rec computes them in its loops) */
    for (int x = tid; x < dk; x += (int)blockDim.x) ks[x] = ks[x] * invk, qs[x] = (qs[x] * invq) / qdiv;
    __syncthreads();
    float pa = 0.0f, pb = 0.0f;
#pragma unroll
    for (int j = 0; j < MAXR; j++) {
        const int i = ry + 8 * j;
        if (i < dk) {
            s0[j] *= decay;
            pa += s0[j] * ks[i];
            s1[j] *= decay;
            pb += s1[j] * ks[i];
        }
    }
    const float ma = (vs[ca] - row_groups_sum(pa, cq)) * beta, mb = (vs[ca + 1] - row_groups_sum(pb, cq)) * beta;
    float oa = 0.0f, ob = 0.0f;
#pragma unroll
    for (int j = 0; j < MAXR; j++) {
        const int i = ry + 8 * j;
        if (i < dk) {
            s0[j] += ks[i] * ma;
            oa += s0[j] * qs[i];
            s1[j] += ks[i] * mb;
            ob += s1[j] * qs[i];
        }
    }
    const float o0 = row_groups_sum(oa, cq), o1 = row_groups_sum(ob, cq);
#pragma unroll
    for (int j = 0; j < MAXR; j++) {
        const int i = ry + 8 * j;
        if (i < dk) *(float2 *)(Sh + i * dv + ca) = make_float2(s0[j], s1[j]);
    }

    /* gated RMSNorm over the head's dv outputs: sums of 32 columns, added in column order */
    if (ry == 0) os[ca] = o0, os[ca + 1] = o1;
    __syncthreads();
    const int n_parts = (dv + 31) / 32;
    if (warp < n_parts) {
        const int c = warp * 32 + lane;
        const float p = warp_sum(c < dv ? os[c] * os[c] : 0.0f);
        if (lane == 0) misc[4 + warp] = p;
    }
    __syncthreads();
    if (ry != 0) return;
    float tot = 0.0f;
    for (int p = 0; p < n_parts; p++) tot += misc[4 + p];
    const float inv = 1.0f / sqrtf(tot / (float)dv + a.norm_eps);
    a.y[h * dv + ca] = ((o0 * inv) * nwa) * silu_f(za);
    a.y[h * dv + ca + 1] = ((o1 * inv) * nwb) * silu_f(zb);
}

typedef void (*dec_kernel)(qcu_gdn_decode_args);

extern "C" int qcu_gdn_decode_fits(int64_t Hk, int64_t Hv, int64_t dk, int64_t dv, int64_t K) {
    return Hk > 0 && Hk <= QCU_SYNC_COUNTERS && Hv % Hk == 0 && dk >= 1 && dk <= 128 && dv >= 8 && dv <= 128 &&
           dv % 8 == 0 && K == DEC_K && 2 * dk + dv <= 2 * (dv / 8) * 32;
}

extern "C" int qcu_gdn_decode(void *st, const void *p) {
    const qcu_gdn_decode_args *a = (const qcu_gdn_decode_args *)p;
    if (!qcu_gdn_decode_fits(a->Hk, a->Hv, a->dk, a->dv, a->K) || !a->count) return 1;
    const int64_t r = (a->dk + 7) / 8;
    dec_kernel k = r <= 2 ? k_gdn_decode<2> : r <= 4 ? k_gdn_decode<4> : r <= 8 ? k_gdn_decode<8> : k_gdn_decode<16>;
    const size_t smem = (size_t)(2 * a->dk + 2 * a->dv + 12) * sizeof(float);
    QVLM_LAUNCH(k, (unsigned)a->Hv, (unsigned)(a->dv / 8 * 32), smem, st, *a);
    QCU_DONE();
}

/* ==== chunked: per (chunk, head) preparation ======================================================= */

static __host__ __device__ inline int64_t chunk_floats(int64_t dk, int64_t dv) {
    return 3 * CHUNK * dk + CHUNK * dv + CHUNK * CHUNK + 4;
}

__global__ void __launch_bounds__(256) k_gdn_prep(float *work, const float *qkv, const float *ga, const float *gb,
                                                  const void *A_log, int adt, const void *dt_bias, int ddt,
                                                  int64_t ldqkv, int64_t ldab, int64_t Hk, int64_t Hv, int64_t dk,
                                                  int64_t dv, int64_t T) {
    QCU_PDL_ENTRY();
    QVLM_DYN_SMEM(float, sm);
    const int64_t ld = dk + 1; /* padded rows: the pair dots read K rows across lanes */
    float *Q = sm, *K = Q + CHUNK * ld, *KC = K + CHUNK * ld, *U = KC + CHUNK * ld, *A = U + CHUNK * dv;
    float *cum = A + CHUNK * CHUNK, *beta = cum + CHUNK, *gg = beta + CHUNK;
    const int64_t ci = blockIdx.x, h = blockIdx.y, kh = h / (Hv / Hk), t0 = ci * CHUNK;
    const int64_t n = T - t0 < CHUNK ? T - t0 : CHUNK;
    const int tid = threadIdx.x, nt = blockDim.x, warp = tid >> 5, lane = tid & 31, nw = nt >> 5;
    const float qscale = 1.0f / sqrtf((float)dk);

    for (int64_t e = tid; e < CHUNK * dk; e += nt) {
        const int64_t i = e / dk, x = e % dk;
        const float *row = qkv + (t0 + i) * ldqkv;
        Q[i * ld + x] = i < n ? row[kh * dk + x] : 0.0f;
        K[i * ld + x] = i < n ? row[Hk * dk + kh * dk + x] : 0.0f;
    }
    for (int64_t e = tid; e < CHUNK * dv; e += nt) {
        const int64_t i = e / dv, cc = e % dv;
        U[e] = i < n ? qkv[(t0 + i) * ldqkv + 2 * Hk * dk + h * dv + cc] : 0.0f;
    }
    __syncthreads();
    /* l2-normalise q and k rows (q then scaled), and the gates */
    for (int64_t i = warp; i < n; i += nw) {
        float sq = 0.0f, sk = 0.0f;
        for (int64_t x = lane; x < dk; x += 32) {
            sq += Q[i * ld + x] * Q[i * ld + x];
            sk += K[i * ld + x] * K[i * ld + x];
        }
        sq = warp_sum(sq);
        sk = warp_sum(sk);
        const float iq = 1.0f / sqrtf(sq + 1e-6f), ik = 1.0f / sqrtf(sk + 1e-6f);
        for (int64_t x = lane; x < dk; x += 32) {
            Q[i * ld + x] = (Q[i * ld + x] * iq) * qscale;
            K[i * ld + x] *= ik;
        }
        if (lane == 0) {
            const float bb = gb[(t0 + i) * ldab + h], aa = ga[(t0 + i) * ldab + h];
            beta[i] = sigmoid_f(bb);
            gg[i] = gdn_log_decay(aa, wload(A_log, adt, h), wload(dt_bias, ddt, h));
        }
    }
    for (int64_t i = n + tid; i < CHUNK; i += nt) beta[i] = 0.0f, gg[i] = 0.0f;
    __syncthreads();
    if (tid == 0) {
        float acc = 0.0f;
        for (int i = 0; i < CHUNK; i++) {
            acc += gg[i];
            cum[i] = acc;
        }
    }
    __syncthreads();
    float *base = work + (ci * Hv + h) * chunk_floats(dk, dv);
    float *gW = base, *gU = gW + CHUNK * dk, *gQe = gU + CHUNK * dv, *gKd = gQe + CHUNK * dk, *gQK = gKd + CHUNK * dk;
    float *gdl = gQK + CHUNK * CHUNK;
    /* A (strictly lower part used) and QKG = (Q K^T) o G, lower with the diagonal */
    for (int64_t p = tid; p < CHUNK * CHUNK; p += nt) {
        const int64_t i = p / CHUNK, j = p % CHUNK;
        float qkg = 0.0f;
        if (j <= i && i < n) {
            const float G = expf(cum[i] - cum[j]);
            float kk = 0.0f, qk = 0.0f;
            for (int64_t x = 0; x < dk; x++) {
                kk += (K[i * ld + x] * beta[i]) * K[j * ld + x];
                qk += Q[i * ld + x] * K[j * ld + x];
            }
            A[p] = kk * G;
            qkg = qk * G;
        }
        gQK[p] = qkg;
    }
    for (int64_t e = tid; e < CHUNK * dk; e += nt) {
        const int64_t i = e / dk, x = e % dk;
        KC[i * ld + x] = i < n ? (K[i * ld + x] * beta[i]) * expf(cum[i]) : 0.0f;
    }
    for (int64_t e = tid; e < CHUNK * dv; e += nt) {
        const int64_t i = e / dv;
        U[e] = i < n ? U[e] * beta[i] : 0.0f;
    }
    __syncthreads();
    /* Forward substitution with L = I + strictly_lower(A), row by row in the CPU's order.
     * Columns of [KC | U] are independent: each thread owns whole columns, so no barrier is
     * needed between rows. */
    const int64_t cols = dk + dv;
    for (int64_t col = tid; col < cols; col += nt) {
        float *X = col < dk ? KC + col : U + (col - dk);
        const int64_t ldx = col < dk ? ld : dv;
        for (int64_t i = 1; i < n; i++) {
            float v = X[i * ldx];
            for (int64_t j = 0; j < i; j++) v -= A[i * CHUNK + j] * X[j * ldx];
            X[i * ldx] = v;
        }
    }
    __syncthreads();
    const float clast = cum[CHUNK - 1];
    for (int64_t e = tid; e < CHUNK * dk; e += nt) {
        const int64_t i = e / dk, x = e % dk;
        gW[e] = KC[i * ld + x];
        gQe[e] = i < n ? Q[i * ld + x] * expf(cum[i]) : 0.0f;
        gKd[e] = i < n ? K[i * ld + x] * expf(clast - cum[i]) : 0.0f;
    }
    for (int64_t e = tid; e < CHUNK * dv; e += nt) gU[e] = U[e];
    if (tid == 0) gdl[0] = expf(clast);
}

/* ==== chunked: the sequential scan over chunks ===================================================== */

#define CBS 32 /* columns per scan block */

__global__ void __launch_bounds__(256) k_gdn_scan(float *out, float *S, const float *work, int64_t Hv, int64_t dk,
                                                  int64_t dv, int64_t T) {
    QCU_PDL_ENTRY();
    QVLM_DYN_SMEM(float, sm);
    float *Ss = sm, *VN = Ss + dk * CBS, *W = VN + CHUNK * CBS, *Qe = W + CHUNK * dk, *Kd = Qe + CHUNK * dk;
    float *QK = Kd + CHUNK * dk;
    const int64_t h = blockIdx.x, c0 = (int64_t)blockIdx.y * CBS;
    const int tid = threadIdx.x, cx = tid % CBS, r0 = tid / CBS, nr = blockDim.x / CBS; /* nr = 8 */
    const int64_t c = c0 + cx;
    const bool cvalid = c < dv;
    float *Sh = S + h * dk * dv;
    for (int64_t x = r0; x < dk; x += nr) Ss[x * CBS + cx] = cvalid ? Sh[x * dv + c] : 0.0f;
    const int64_t n_chunks = (T + CHUNK - 1) / CHUNK;
    for (int64_t ci = 0; ci < n_chunks; ci++) {
        const int64_t t0 = ci * CHUNK, n = T - t0 < CHUNK ? T - t0 : CHUNK;
        const float *base = work + (ci * Hv + h) * chunk_floats(dk, dv);
        const float *gU = base + CHUNK * dk;
        __syncthreads();
        for (int64_t e = tid; e < CHUNK * dk; e += blockDim.x) {
            W[e] = base[e];
            Qe[e] = base[CHUNK * dk + CHUNK * dv + e];
            Kd[e] = base[2 * CHUNK * dk + CHUNK * dv + e];
        }
        for (int64_t e = tid; e < CHUNK * CHUNK; e += blockDim.x) QK[e] = base[3 * CHUNK * dk + CHUNK * dv + e];
        const float dl = base[3 * CHUNK * dk + CHUNK * dv + CHUNK * CHUNK];
        __syncthreads();
        /* Vn = U - W S */
        for (int64_t i = r0; i < CHUNK; i += nr) {
            float v = 0.0f;
            if (i < n && cvalid) {
                v = gU[i * dv + c];
                for (int64_t x = 0; x < dk; x++) v -= W[i * dk + x] * Ss[x * CBS + cx];
            }
            VN[i * CBS + cx] = v;
        }
        __syncthreads();
        /* O = Qe S + QKG Vn */
        for (int64_t i = r0; i < n; i += nr) {
            float o = 0.0f;
            for (int64_t x = 0; x < dk; x++) o += Qe[i * dk + x] * Ss[x * CBS + cx];
            for (int64_t j = 0; j <= i; j++) o += QK[i * CHUNK + j] * VN[j * CBS + cx];
            if (cvalid) out[((t0 + i) * Hv + h) * dv + c] = o;
        }
        __syncthreads();
        /* S = e^(c_last) S + Kd^T Vn */
        for (int64_t x = r0; x < dk; x += nr) {
            float sv = Ss[x * CBS + cx] * dl;
            for (int64_t i = 0; i < n; i++) sv += Kd[i * dk + x] * VN[i * CBS + cx];
            Ss[x * CBS + cx] = sv;
        }
    }
    __syncthreads();
    for (int64_t x = r0; x < dk; x += nr)
        if (cvalid) Sh[x * dv + c] = Ss[x * CBS + cx];
}

/* ==== launchers ===================================================================================== */

static size_t prep_smem(int64_t dk, int64_t dv) {
    return (size_t)(3 * CHUNK * (dk + 1) + CHUNK * dv + CHUNK * CHUNK + 3 * CHUNK) * sizeof(float);
}
static size_t scan_smem(int64_t dk) { return (size_t)(dk * CBS + CHUNK * CBS + 3 * CHUNK * dk + CHUNK * CHUNK) * sizeof(float); }

static size_t g_smem_optin = 48 * 1024;

extern "C" size_t qcu_gdn_chunked_smem(int64_t dk, int64_t dv) {
    size_t a = prep_smem(dk, dv), b = scan_smem(dk), m = a > b ? a : b;
    return m <= g_smem_optin ? m : 0;
}

extern "C" size_t qcu_gdn_chunked_work_bytes(int64_t Hv, int64_t dk, int64_t dv, int64_t T) {
    return (size_t)((T + CHUNK - 1) / CHUNK) * (size_t)Hv * (size_t)chunk_floats(dk, dv) * sizeof(float);
}

extern "C" int qcu_gdn_chunked(void *st, const void *p) {
    const qcu_gdn_chunked_args *a = (const qcu_gdn_chunked_args *)p;
    if (a->T <= 0) return 0;
    if (qcu_gdn_chunked_smem(a->dk, a->dv) == 0) return 1; /* cudaErrorInvalidValue */
    dim3 gp((unsigned)((a->T + CHUNK - 1) / CHUNK), (unsigned)a->Hv);
    QVLM_LAUNCH(k_gdn_prep, gp, 256, prep_smem(a->dk, a->dv), st, a->work, a->qkv, a->a, a->b, a->A_log, a->adt,
                a->dt_bias, a->ddt, a->ldqkv, a->ldab, a->Hk, a->Hv, a->dk, a->dv, a->T);
    dim3 gs((unsigned)a->Hv, qcu_blocks(a->dv, CBS));
    QVLM_LAUNCH(k_gdn_scan, gs, 256, scan_smem(a->dk), st, a->out, a->S, a->work, a->Hv, a->dk, a->dv, a->T);
    QCU_DONE();
}

typedef void (*rec_kernel)(float *, const float *, const float *, const float *, const void *, int, const void *, int,
                           float *, const float *, const void *, int, float *, float, int64_t, int64_t, int64_t,
                           int64_t, int64_t, int64_t, int64_t, int, float *, unsigned *);

static rec_kernel rec_for(int64_t dk) {
    int64_t r = (dk + RG - 1) / RG;
    if (r <= 2) return k_gdn_rec<2>;
    if (r <= 4) return k_gdn_rec<4>;
    if (r <= 8) return k_gdn_rec<8>;
    if (r <= 16) return k_gdn_rec<16>;
    if (r <= 32) return k_gdn_rec<32>;
    return NULL;
}

extern "C" int qcu_gdn_recurrent(void *st, const void *p) {
    const qcu_gdn_recurrent_args *a = (const qcu_gdn_recurrent_args *)p;
    rec_kernel k = rec_for(a->dk);
    if (!k) return 1;
    if (a->T <= 0) return 0;
    /* Columns per block: 32 (a head's state over 4 SMs for dv = 128), unless the norm must be
     * fused within one block (T > 1, or no sync area). */
    const int64_t ncb32 = (a->dv + 31) / 32;
    const bool cross = a->y_norm && a->T == 1 && a->sync && ncb32 > 1 && a->Hv <= QCU_SYNC_COUNTERS &&
                       a->Hv * ncb32 <= QCU_SYNC_PARTS;
    const int CB = cross || !a->y_norm ? 32 : a->dv <= 128 ? (int)(ncb32 * 32) : 128;
    const bool fuse = a->y_norm && (cross || a->dv <= 128);
    dim3 g((unsigned)a->Hv, qcu_blocks(a->dv, CB));
    size_t smem = (size_t)(2 * a->dk + RG * CB + 4 + 32) * sizeof(float);
    unsigned *count = cross ? (unsigned *)a->sync : (unsigned *)NULL;
    float *part = cross ? (float *)((char *)a->sync + QCU_SYNC_COUNTERS * sizeof(unsigned)) : (float *)NULL;
    QVLM_LAUNCH(k, g, CB * RG, smem, st, a->out, a->qkv, a->a, a->b, a->A_log, a->adt, a->dt_bias, a->ddt, a->S, a->z,
                a->norm_w, a->nwdt, fuse ? a->y_norm : (float *)NULL, a->norm_eps, a->ldqkv, a->ldab, a->Hk, a->Hv,
                a->dk, a->dv, a->T, CB, part, count);
    if (a->y_norm && !fuse) {
        int e = (int)cudaGetLastError();
        if (e) return e;
        qcu_gated_rms_norm_args n;
        memset(&n, 0, sizeof(n));
        n.y = a->y_norm, n.x = a->out, n.z = a->z, n.w = a->norm_w, n.n_rows = a->T * a->Hv, n.dim = a->dv;
        n.eps = a->norm_eps, n.wdt = a->nwdt;
        return qcu_gated_rms_norm(st, &n);
    }
    QCU_DONE();
}

/* ==== attributes ====================================================================================== */

extern "C" int qcu_gdn_init(size_t smem_optin) {
    g_smem_optin = smem_optin;
    int e = (int)cudaFuncSetAttribute(k_gdn_prep, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_optin);
    if (!e) e = (int)cudaFuncSetAttribute(k_gdn_scan, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_optin);
    return e;
}
