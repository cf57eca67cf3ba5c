/* gemv.cu - matrix products of few rows (decode): memory-bound, so every weight byte is read
 * once, with 16-byte loads, by one warp per pair of output rows; up to QCU_GEMV_MAX matrices
 * that share the input go in one launch (q/k/v, the four GDN projections), and the SwiGLU form
 * computes gate and up rows together and writes silu(gate) * up.
 *
 * Each output element is a function of its own row and x only: lane l sums the chunks
 * l, l+32, ... of the row in order, then the warp adds the 32 partial sums in a fixed tree, so
 * the result does not depend on n, on the other matrices of the launch or on the grid. */
#include <stdlib.h>

#include "kernels/cuda/cuda_common.cuh"

#define WARPS 8

/* A unit is four weight rows: four output rows (plain), or gate and up of two output rows
 * (swiglu). KS warps share a unit, warp ks of the group taking the 16-byte chunks
 * ks*32+lane, +32*KS, ...; their sums meet in shared memory in a fixed order. KS depends only on
 * the matrix shapes and the device, so a row's result never depends on n. */
template <int WDT, int NR, bool VEC, int NW>
__global__ void __launch_bounds__(WARPS * 32) k_gemv(qcu_gemv_args a, int64_t n_units, int KS) {
    __shared__ float red[WARPS][NW][NR];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, ul = warp / KS, ks = warp % KS;
    const int64_t unit = (int64_t)blockIdx.x * (WARPS / KS) + ul;
    const bool uvalid = unit < n_units;
    const int64_t k = a.k;
    const char *wr[NW];
    int mi[NW];
    int64_t jr[NW];
    bool live[NW];
#pragma unroll
    for (int u = 0; u < NW; u++) {
        wr[u] = NULL, mi[u] = 0, jr[u] = 0, live[u] = false;
        if (!uvalid) continue;
        if (a.mode == 1) { /* rows: gate j, up j, gate j+1, up j+1, ... */
            const int64_t j = unit * (NW / 2) + u / 2;
            mi[u] = u & 1, jr[u] = j, live[u] = j < a.m[0].d;
        } else {
            int64_t g = unit * NW + u;
            int mm = 0;
            while (mm < a.n_mats && g >= a.m[mm].d) g -= a.m[mm].d, mm++;
            live[u] = mm < a.n_mats;
            mi[u] = live[u] ? mm : 0, jr[u] = g;
        }
        if (live[u]) wr[u] = (const char *)a.m[mi[u]].w + jr[u] * k * wtraits<WDT>::esize;
    }
    float acc[NW][NR];
#pragma unroll
    for (int u = 0; u < NW; u++)
#pragma unroll
        for (int t = 0; t < NR; t++) acc[u][t] = 0.0f;
    if (VEC) {
        /* Software pipelined: the loads of the next chunk are issued before the current one is
         * used, and the first ones before waiting for the previous kernel (weights are never
         * written during a step, so they may be read early). */
        const int P = wtraits<WDT>::per16;
        const int64_t nch = uvalid ? k / P : 0, step = 32 * (int64_t)KS;
        int64_t c = (int64_t)ks * 32 + lane;
        uint4 nx[NW];
#pragma unroll
        for (int u = 0; u < NW; u++) {
            nx[u] = make_uint4(0, 0, 0, 0);
            if (live[u] && c < nch) nx[u] = __ldg((const uint4 *)wr[u] + c);
        }
        pdl_wait();
        pdl_trigger();
        for (; c < nch; c += step) {
            uint4 v[NW];
#pragma unroll
            for (int u = 0; u < NW; u++) {
                v[u] = nx[u];
                if (live[u] && c + step < nch) nx[u] = __ldg((const uint4 *)wr[u] + c + step);
            }
#pragma unroll
            for (int t = 0; t < NR; t++) {
                if (t >= a.n) break;
                const float4 *xp = (const float4 *)(a.x + t * a.ldx) + c * (P / 4);
                float xv[8];
                const float4 x0 = __ldg(xp);
                xv[0] = xval(x0.x, a.round_bf16), xv[1] = xval(x0.y, a.round_bf16);
                xv[2] = xval(x0.z, a.round_bf16), xv[3] = xval(x0.w, a.round_bf16);
                if (P == 8) {
                    const float4 x1 = __ldg(xp + 1);
                    xv[4] = xval(x1.x, a.round_bf16), xv[5] = xval(x1.y, a.round_bf16);
                    xv[6] = xval(x1.z, a.round_bf16), xv[7] = xval(x1.w, a.round_bf16);
                }
#pragma unroll
                for (int u = 0; u < NW; u++) {
                    float w[8];
                    unpack<WDT>(v[u], w);
#pragma unroll
                    for (int e = 0; e < P; e++) acc[u][t] += wval<WDT>(w[e], a.round_bf16) * xv[e];
                }
            }
        }
    } else {
        pdl_wait();
        pdl_trigger();
        const int64_t kk = uvalid ? k : 0;
        for (int64_t i = (int64_t)ks * 32 + lane; i < kk; i += 32 * KS) {
            float w[NW];
#pragma unroll
            for (int u = 0; u < NW; u++) w[u] = live[u] ? wval<WDT>(wload(wr[u], WDT, i), a.round_bf16) : 0.0f;
#pragma unroll
            for (int t = 0; t < NR; t++) {
                if (t >= a.n) break;
                const float xv = xval(a.x[t * a.ldx + i], a.round_bf16);
#pragma unroll
                for (int u = 0; u < NW; u++) acc[u][t] += w[u] * xv;
            }
        }
    }
#pragma unroll
    for (int u = 0; u < NW; u++)
#pragma unroll
        for (int t = 0; t < NR; t++) acc[u][t] = warp_sum(acc[u][t]);
    if (KS > 1) {
        if (lane == 0)
#pragma unroll
            for (int u = 0; u < NW; u++)
#pragma unroll
                for (int t = 0; t < NR; t++) red[warp][u][t] = acc[u][t];
        __syncthreads();
        if (ks != 0) return;
#pragma unroll
        for (int u = 0; u < NW; u++)
#pragma unroll
            for (int t = 0; t < NR; t++) {
                float v = red[warp][u][t];
                for (int j = 1; j < KS; j++) v += red[warp + j][u][t];
                acc[u][t] = v;
            }
    }
    if (lane != 0 || !uvalid) return;
    for (int t = 0; t < NR && t < a.n; t++) {
        if (a.mode == 1) {
            for (int u = 0; u < NW; u += 2) {
                if (!live[u]) continue;
                const int64_t j = jr[u];
                float g = acc[u][t], up = acc[u + 1][t];
                if (a.m[0].bias) g += a.m[0].bias[j];
                if (a.m[1].bias) up += a.m[1].bias[j];
                a.m[0].y[t * a.m[0].ldy + j] = silu_f(g) * up;
            }
        } else {
            for (int u = 0; u < NW; u++) {
                if (!live[u]) continue;
                const qcu_gemv_mat &M = a.m[mi[u]];
                M.y[t * M.ldy + jr[u]] = M.bias ? acc[u][t] + M.bias[jr[u]] : acc[u][t];
            }
        }
    }
}

typedef void (*gemv_kernel)(qcu_gemv_args, int64_t, int);

static int g_n_sm = 132;
/* Measurement knobs (tests/unit/cuda_ops_test.c, QVLM_CUDA_PERF): QVLM_CUDA_GEMV_ROWS = 2 or 4
 * rows per warp instead of the size rule, QVLM_CUDA_GEMV_SPLITK = 0 to never split k,
 * QVLM_CUDA_GEMV_SMWARPS = the warps per SM that splitting k aims at (16). Read at
 * initialisation and by qcu_gemv_knobs, not at every launch. */
static int g_rows_forced = 0, g_split_k = 1, g_sm_warps = 16;

extern "C" void qcu_gemv_knobs(void) {
    const char *r = getenv("QVLM_CUDA_GEMV_ROWS"), *k = getenv("QVLM_CUDA_GEMV_SPLITK");
    const char *w = getenv("QVLM_CUDA_GEMV_SMWARPS");
    g_rows_forced = r && *r ? atoi(r) : 0;
    g_split_k = k && *k ? atoi(k) : 1;
    g_sm_warps = w && atoi(w) > 0 ? atoi(w) : 16;
}

template <int WDT, bool VEC, int NW>
static gemv_kernel pick_nr(int64_t n) {
    if (n <= 1) return k_gemv<WDT, 1, VEC, NW>;
    if (n <= 2) return k_gemv<WDT, 2, VEC, NW>;
    if (n <= 4) return k_gemv<WDT, 4, VEC, NW>;
    return k_gemv<WDT, 8, VEC, NW>;
}

template <int WDT>
static gemv_kernel pick_vec(int64_t n, bool vec, int nw) {
    if (nw == 2) return vec ? pick_nr<WDT, true, 2>(n) : pick_nr<WDT, false, 2>(n);
    return vec ? pick_nr<WDT, true, 4>(n) : pick_nr<WDT, false, 4>(n);
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

extern "C" int qcu_gemv(void *st, const void *ap) {
    const qcu_gemv_args *a = (const qcu_gemv_args *)ap;
    if (a->n < 1 || a->n > QCU_GEMV_MAX_ROWS || a->n_mats < 1 || a->n_mats > QCU_GEMV_MAX) return 1;
    if (a->mode == 1 && (a->n_mats != 2 || a->m[0].d != a->m[1].d || a->m[0].wdt != a->m[1].wdt)) return 1;
    const int wdt = a->m[0].wdt;
    bool same = true;
    for (int i = 1; i < a->n_mats; i++) same &= a->m[i].wdt == wdt;
    if (!same) { /* one launch per matrix */
        for (int i = 0; i < a->n_mats; i++) {
            qcu_gemv_args b = *a;
            b.m[0] = a->m[i];
            b.n_mats = 1;
            int e = qcu_gemv(st, &b);
            if (e) return e;
        }
        return 0;
    }
    const int esize = wdt == QCU_F32 ? 4 : 2;
    bool vec = ((a->k * esize) % 16 == 0) && aligned16(a->x) && (a->ldx % 4 == 0);
    for (int i = 0; i < a->n_mats; i++) vec &= aligned16(a->m[i].w);
    int64_t rows = 0;
    for (int i = 0; i < a->n_mats; i++) rows += a->m[i].d;
    /* Two rows per warp for matrices of fewer than 10000 weight rows (more warps in flight),
     * four for larger ones (x read once for more rows); measured on an H100. */
    int64_t wrows = 0;
    for (int i = 0; i < a->n_mats; i++) wrows += a->m[i].d;
    const int NW = g_rows_forced == 2 || g_rows_forced == 4 ? g_rows_forced : wrows < 10000 ? 2 : 4;
    const int64_t units = a->mode == 1 ? (a->m[0].d + NW / 2 - 1) / (NW / 2) : (rows + NW - 1) / NW;
    if (units <= 0) return 0;
    gemv_kernel k = wdt == QCU_BF16 ? pick_vec<QCU_BF16>(a->n, vec, NW)
                    : wdt == QCU_F16 ? pick_vec<QCU_F16>(a->n, vec, NW)
                                     : pick_vec<QCU_F32>(a->n, vec, NW);
    /* Split k over KS warps until about 16 warps per SM are busy, each still with at least
     * one 16-byte chunk per lane. */
    const int64_t chunks = vec ? a->k / (16 / esize) : a->k;
    int KS = 1;
    while (g_split_k && KS < WARPS && units * KS < (int64_t)g_n_sm * g_sm_warps && chunks >= (int64_t)32 * KS * 2) KS *= 2;
    QVLM_LAUNCH(k, qcu_blocks(units * KS, WARPS), WARPS * 32, 0, st, *a, units, KS);
    QCU_DONE();
}

extern "C" int qcu_gemv_init(size_t smem_optin, int n_sm) {
    (void)smem_optin;
    if (n_sm > 0) g_n_sm = n_sm;
    qcu_gemv_knobs();
    return 0;
}
