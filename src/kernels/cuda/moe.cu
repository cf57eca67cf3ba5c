/* moe.cu - mixture of experts on the device (kernels/cpu/moe.c and the default of
 * qvlm_op_moe_experts in kernels/backend.c are the reference).
 *
 * Routing: softmax over all experts in f32, top-k by repeated maximum of the logits (ties to
 * the lower index), weights renormalised. One thread per token row runs the CPU's loop
 * unchanged, so the choices and weights are the CPU's bit for bit (up to expf).
 *
 * Experts of a few rows (decode): the routed ids stay in device memory and the kernels find
 * each expert's weights through a device table of pointers, so a layer is three launches and
 * no host round trip (and can sit in a recorded decode step). GEMV-style like gemv.cu: a warp
 * per output element, 16-byte weight loads, lane sums in chunk order, then a fixed warp tree,
 * so a result depends on its own row only. The down projection adds a row's experts in
 * ascending expert id, each as acc + w * y with the product rounded first, which is the order
 * and rounding of the CPU's zero-then-scatter_add sequence. A MoE layer's shared expert
 * (qvlm_op_moe_block) can ride along: its rows are more gate/up units, and the down kernel adds
 * its gated product last, as qvlm_op_add_gated does; a decode step then runs a MoE layer's
 * experts in three launches instead of six.
 *
 * The row shuffles of the host-routed path are in elementwise.cu. */
#include "kernels/cuda/cuda_common.cuh"

#define MAX_K 32

/* One warp per row. The arithmetic is the serial loop's, in the same order (the max, the
 * sum of exp in ascending expert order, top-k by strictly greater logits with the lowest id
 * winning ties, weights renormalised by their sum in slot order): only the work is spread over
 * the lanes, so the choices and the bits match the CPU's qvlm_op_moe_route. A thread per row
 * scanning 256 experts 8 times took ~330 us a layer on an H100 (most of a 35B-A3B decode step).
 * The row's logits live in registers (expert lane + 32 i in v[i] of lane `lane`): the serial
 * sum is 32 * NV shuffles unrolled (each lane's exps computed once, in parallel) and a top-k
 * round is a register scan and a warp arg-max. Re-reading the logits from memory in every
 * round, with the sum's shuffles in a loop of run-time length, took 17 us a row (H200). */
#define ROUTE_WARPS 4
template <int NV>
__device__ __forceinline__ void route_row(int32_t *idx, float *weight, const float *l, int64_t r, int64_t E, int64_t k,
                                          int lane, float *sx) {
    float v[NV], ex[NV];
    float mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const int64_t e = lane + 32 * i;
        v[i] = e < E ? l[e] : -INFINITY;
        mx = e < E && v[i] > mx ? v[i] : mx;
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float t = __shfl_xor_sync(0xffffffffu, mx, o);
        mx = t > mx ? t : mx;
    }
#pragma unroll
    for (int i = 0; i < NV; i++) ex[i] = lane + 32 * i < E ? expf(v[i] - mx) : 0.0f;
    /* Every lane adds the same values in the same order (expert 0, 1, ...): the same sum
     * everywhere. Through shared memory (a broadcast read each) rather than 32 * NV shuffles
     * between the adds: the kernel 7.6 -> 7.2 us alone on an H200 at 256 experts. */
#pragma unroll
    for (int i = 0; i < NV; i++) sx[lane + 32 * i] = ex[i];
    __syncwarp();
    float sum = 0.0f;
#pragma unroll 32
    for (int64_t e = 0; e < E; e++) sum += sx[e];
    uint32_t taken = 0; /* bit i: this lane's expert lane + 32 i is chosen */
    int32_t ir[MAX_K];
    float wr[MAX_K];
    for (int64_t j = 0; j < k; j++) {
        int32_t best = -1;
        float bv = 0.0f;
#pragma unroll
        for (int i = 0; i < NV; i++) { /* ascending expert id within the lane */
            const int32_t e = lane + 32 * i;
            if (e < E && !(taken >> i & 1) && (best < 0 || v[i] > bv)) best = e, bv = v[i];
        }
        for (int o = 16; o > 0; o >>= 1) {
            const int32_t ob = __shfl_xor_sync(0xffffffffu, best, o);
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            if (ob >= 0 && (best < 0 || ov > bv || (ov == bv && ob < best))) best = ob, bv = ov;
        }
        if ((best & 31) == lane) taken |= 1u << (best >> 5);
        ir[j] = best;
        wr[j] = expf(bv - mx) / sum;
    }
    float tot = 0.0f;
    for (int64_t j = 0; j < k; j++) tot += wr[j];
    if (lane == 0)
        for (int64_t j = 0; j < k; j++) {
            idx[r * k + j] = ir[j];
            weight[r * k + j] = wr[j] / tot;
        }
}

__global__ void k_moe_route(int32_t *idx, float *weight, const float *logits, int64_t n_rows, int64_t E, int64_t k) {
    QCU_PDL_ENTRY();
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * ROUTE_WARPS + threadIdx.x / 32;
    if (r >= n_rows) return; /* the whole warp */
    const float *l = logits + r * E;
    __shared__ float sx[ROUTE_WARPS][512]; /* a warp's exps, E <= 512 */
    float *x = sx[threadIdx.x / 32];
    if (E <= 64) route_row<2>(idx, weight, l, r, E, k, lane, x);
    else if (E <= 128) route_row<4>(idx, weight, l, r, E, k, lane, x);
    else if (E <= 256) route_row<8>(idx, weight, l, r, E, k, lane, x);
    else route_row<16>(idx, weight, l, r, E, k, lane, x); /* E <= 512: checked by the launcher */
}

extern "C" int qcu_moe_route(void *st, const void *ap) {
    const qcu_moe_route_args *a = (const qcu_moe_route_args *)ap;
    if (a->k < 1 || a->k > MAX_K || a->k > a->n_experts || a->n_experts > 512) return 1;
    if (a->n_rows > 0)
        QVLM_LAUNCH(k_moe_route, qcu_blocks(a->n_rows, ROUTE_WARPS), ROUTE_WARPS * 32, 0, st, a->idx, a->weight, a->logits,
                    a->n_rows, a->n_experts, a->k);
    QCU_DONE();
}

#define WARPS 8
#define DOWN_BATCH 8 /* experts whose loads a down-projection warp has in flight together (4: ~2 us more a layer) */

/* Dot products of NW weight rows w[i] (dtype WDT) with one activation row x over n elements,
 * this lane's share: chunks lane, lane+32, ... (16 bytes of weights each) or, unvectorised,
 * elements; the rows' loads are in flight together and each sum keeps its own order. round:
 * round weights and x to bf16 values (xround 0: x holds such values already). */
template <int WDT, bool VEC, int NW>
__device__ __forceinline__ void lane_dots(const void *const *w, const float *x, int64_t n, int round, int xround,
                                          int lane, float *d) {
    float acc[NW];
#pragma unroll
    for (int r = 0; r < NW; r++) acc[r] = 0.0f;
    if (VEC) {
        const int P = wtraits<WDT>::per16;
        const int64_t nch = n / P;
#pragma unroll 4
        for (int64_t c = lane; c < nch; c += 32) {
            float wv[NW][8], xv[8];
#pragma unroll
            for (int r = 0; r < NW; r++) unpack<WDT>(__ldg((const uint4 *)w[r] + c), wv[r]);
            const float4 *xp = (const float4 *)x + c * (P / 4);
            const float4 x0 = __ldg(xp);
            xv[0] = x0.x, xv[1] = x0.y, xv[2] = x0.z, xv[3] = x0.w;
            if (P == 8) {
                const float4 x1 = __ldg(xp + 1);
                xv[4] = x1.x, xv[5] = x1.y, xv[6] = x1.z, xv[7] = x1.w;
            }
#pragma unroll
            for (int e = 0; e < P; e++) {
                const float xe = xval(xv[e], xround);
#pragma unroll
                for (int r = 0; r < NW; r++) acc[r] += wval<WDT>(wv[r][e], round) * xe;
            }
        }
    } else {
        for (int64_t i = lane; i < n; i += 32) {
            const float xe = xval(x[i], xround);
#pragma unroll
            for (int r = 0; r < NW; r++) acc[r] += wval<WDT>(wload(w[r], WDT, i), round) * xe;
        }
    }
#pragma unroll
    for (int r = 0; r < NW; r++) d[r] = acc[r];
}

/* h[p][j] = silu(gate_e[j] . x[r]) * (up_e[j] . x[r]) for slot p = r*k + s, e = idx[p] (and the
 * shared expert's rows after all T*k of those, when there is one), stored
 * rounded to a bf16 value in BF16 precision (what the down product would round it to anyway,
 * once instead of in each of its H warps): one warp per (p, j), the gate and up rows' loads in
 * flight together. The expert comes from the
 * routing kernel, so nothing is read before the wait. (Staging x in shared memory per block, so
 * the warps of a block read it once, measured slower on an H200: 41 -> 47 us a layer.) */
template <int WDT, bool VEC>
__global__ void __launch_bounds__(WARPS * 32) k_moe_gate_up(qcu_moe_experts_args a) {
    QCU_PDL_ENTRY();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t unit = (int64_t)blockIdx.x * WARPS + warp, routed = a.T * a.k * a.I;
    if (unit >= routed + (a.sh_gate ? a.T * a.Is : 0)) return;
    /* units past the routed ones: the shared expert's rows, h row r at routed + r * Is */
    const bool shared = unit >= routed;
    const int64_t ni = shared ? a.Is : a.I, u = shared ? unit - routed : unit, p = u / ni, j = u % ni;
    const int64_t r = shared ? p : p / a.k;
    const size_t row = (size_t)(j * a.H) * wtraits<WDT>::esize;
    const void *g0 = a.sh_gate, *u0 = a.sh_up;
    if (!shared) {
        const int64_t e = a.idx[p];
        g0 = a.experts[3 * e], u0 = a.experts[3 * e + 1];
    }
    float *hp = a.h + (shared ? routed + r * a.Is : p * a.I) + j;
    const char *wg = (const char *)g0 + row, *wu = (const char *)u0 + row;
    const void *const w2[2] = {wg, wu};
    float gu[2];
    lane_dots<WDT, VEC, 2>(w2, a.x + r * a.H, a.H, a.round_bf16, a.round_bf16, lane, gu);
    const float g = warp_sum(gu[0]), up = warp_sum(gu[1]);
    if (lane == 0) *hp = xval(silu_f(g) * up, a.round_bf16);
}

/* acc[r][i] = sum over the k slots of row r, in ascending expert id, of
 * weight * (down_e[i] . h[slot]): one warp per (r, i), DOWN_BATCH experts' loads at a time.
 * The order comes from registers: lane s holds slot s's expert id, its rank among the row's
 * ids (distinct: the router never picks an expert twice) is its place, and lane b learns the
 * slot of rank b. (Scanning the ids in memory for the next larger one, k times per warp, was
 * the largest share of this kernel's instructions.) h holds bf16 values already in BF16
 * precision (k_moe_gate_up), so only the weights are rounded here. */
template <int DDT, bool VEC>
__global__ void __launch_bounds__(WARPS * 32) k_moe_down(qcu_moe_experts_args a) {
    QCU_PDL_ENTRY();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t unit = (int64_t)blockIdx.x * WARPS + warp;
    if (unit >= a.T * a.H) return;
    const int64_t r = unit / a.H, i = unit % a.H;
    const int k = (int)a.k; /* <= MAX_K = 32: one lane per slot */
    const float *h = a.h + r * a.k * a.I;
    const int32_t id = lane < k ? a.idx[r * a.k + lane] : INT32_MAX;
    int rank = 0, by_rank = -1;
    for (int s = 0; s < k; s++) { /* equal ids (never routed) would take their slot order */
        const int32_t o = __shfl_sync(0xffffffffu, id, s);
        rank += o < id || (o == id && s < lane);
    }
    for (int s = 0; s < k; s++)
        if (__shfl_sync(0xffffffffu, rank, s) == lane) by_rank = s;
    float acc = 0.0f;
    for (int b0 = 0; b0 < k; b0 += DOWN_BATCH) {
        int slot[DOWN_BATCH];
        float part[DOWN_BATCH];
#pragma unroll
        for (int b = 0; b < DOWN_BATCH; b++) {
            slot[b] = __shfl_sync(0xffffffffu, by_rank, (b0 + b) & 31);
            const int32_t e = __shfl_sync(0xffffffffu, id, slot[b] & 31);
            part[b] = 0.0f;
            if (b0 + b >= k) continue; /* the same for the whole warp */
            const void *w = (const char *)a.experts[3 * (int64_t)e + 2] + (size_t)(i * a.I) * wtraits<DDT>::esize;
            lane_dots<DDT, VEC, 1>(&w, h + (int64_t)slot[b] * a.I, a.I, a.round_bf16, 0, lane, &part[b]);
        }
#pragma unroll
        for (int b = 0; b < DOWN_BATCH; b++) {
            if (b0 + b >= k) continue;
            acc += __fmul_rn(a.weight[r * a.k + slot[b]], warp_sum(part[b]));
        }
    }
    if (a.sh_gate) { /* the shared expert's product, gated, added last: qvlm_op_add_gated */
        const void *w = (const char *)a.sh_down + (size_t)(i * a.Is) * wtraits<DDT>::esize;
        float part;
        lane_dots<DDT, VEC, 1>(&w, a.h + a.T * a.k * a.I + r * a.Is, a.Is, a.round_bf16, 0, lane, &part);
        const float sh = warp_sum(part);
        if (lane == 0) a.out[r * a.H + i] = acc + sigmoid_gate(sh, a.sh_logit[r]);
        return;
    }
    if (lane == 0) a.acc[r * a.H + i] = acc;
}

/* ---- many rows: the gather and combine around the batched products ---------------------------- */

__global__ void k_moe_gather(qcu_moe_gather_args a) {
    QCU_PDL_ENTRY();
    const int64_t s = blockIdx.y, c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= a.H) return;
    const int32_t r = a.src[s];
    const float v = r >= 0 ? a.x[(int64_t)r * a.H + c] : 0.0f;
    if (a.to_bf16) ((uint16_t *)a.y)[s * a.H + c] = f32_to_bf16(v);
    else ((float *)a.y)[s * a.H + c] = v;
}

__global__ void k_moe_combine(qcu_moe_combine_args a) {
    QCU_PDL_ENTRY();
    const int64_t r = blockIdx.y, c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= a.H) return;
    float acc = 0.0f;
    for (int64_t j = 0; j < a.k; j++)
        acc += __fmul_rn(a.weight[r * a.k + j], a.y[(int64_t)a.pos[r * a.k + j] * a.H + c]);
    a.acc[r * a.H + c] = acc;
}

extern "C" int qcu_moe_gather(void *st, const void *ap) {
    const qcu_moe_gather_args *a = (const qcu_moe_gather_args *)ap;
    for (int64_t s0 = 0; s0 < a->n_slots; s0 += 65535) {
        qcu_moe_gather_args b = *a;
        const int64_t n = a->n_slots - s0 < 65535 ? a->n_slots - s0 : 65535;
        b.src = a->src + s0;
        b.y = (char *)a->y + s0 * a->H * (a->to_bf16 ? 2 : 4);
        QVLM_LAUNCH(k_moe_gather, dim3(qcu_blocks(a->H, 256), (unsigned)n), 256, 0, st, b);
    }
    QCU_DONE();
}

extern "C" int qcu_moe_combine(void *st, const void *ap) {
    const qcu_moe_combine_args *a = (const qcu_moe_combine_args *)ap;
    for (int64_t r0 = 0; r0 < a->T; r0 += 65535) {
        qcu_moe_combine_args b = *a;
        const int64_t n = a->T - r0 < 65535 ? a->T - r0 : 65535;
        b.acc = a->acc + r0 * a->H, b.pos = a->pos + r0 * a->k, b.weight = a->weight + r0 * a->k;
        QVLM_LAUNCH(k_moe_combine, dim3(qcu_blocks(a->H, 256), (unsigned)n), 256, 0, st, b);
    }
    QCU_DONE();
}

typedef void (*moe_kernel)(qcu_moe_experts_args);

template <int DT>
static moe_kernel pick(bool gate_up, bool vec) {
    if (gate_up) return vec ? k_moe_gate_up<DT, true> : k_moe_gate_up<DT, false>;
    return vec ? k_moe_down<DT, true> : k_moe_down<DT, false>;
}

static moe_kernel pick_dt(int dt, bool gate_up, bool vec) {
    return dt == QCU_BF16 ? pick<QCU_BF16>(gate_up, vec)
           : dt == QCU_F16 ? pick<QCU_F16>(gate_up, vec)
                           : pick<QCU_F32>(gate_up, vec);
}

extern "C" int qcu_moe_experts(void *st, const void *ap) {
    const qcu_moe_experts_args *a = (const qcu_moe_experts_args *)ap;
    if (a->T < 1 || a->T > QCU_GEMV_MAX_ROWS || a->k < 1 || a->k > MAX_K || a->H < 1 || a->I < 1) return 1;
    if (a->sh_gate && a->Is < 1) return 1;
    const int64_t units = a->T * a->k * a->I + (a->sh_gate ? a->T * a->Is : 0);
    QVLM_LAUNCH(pick_dt(a->wdt, true, a->vec), qcu_blocks(units, WARPS), WARPS * 32, 0, st, *a);
    QVLM_LAUNCH(pick_dt(a->ddt, false, a->vec), qcu_blocks(a->T * a->H, WARPS), WARPS * 32, 0, st, *a);
    QCU_DONE();
}
