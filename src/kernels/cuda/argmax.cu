/* argmax.cu - the index of each row's largest value (greedy sampling on the device, so a
 * decode step reads back a few bytes instead of the vocabulary's logits).
 *
 * The result must be the host scan's (qvlm_argmax_scan: b = 0; if x[i] > x[b] then b = i):
 * the first index of the maximum of the non-NaN values, or 0 when x[0] is NaN. Each block takes
 * a contiguous slice of a row; a thread keeps the best of its elements (NaN never wins, equal
 * values keep the lower index), then the block merges with the same rule. The per-block bests
 * go back to the host, which merges them in slice order (backend_cuda.c). */
#include "kernels/cuda/cuda_common.cuh"

#define AM_THREADS 256

__device__ __forceinline__ void am_take(float v, int32_t i, float *bv, int32_t *bi) {
    /* NaN compares false, so it is never taken; an index of -1 is "nothing yet". */
    if (v == v && (*bi < 0 || v > *bv || (v == *bv && i < *bi))) *bv = v, *bi = i;
}

__global__ void __launch_bounds__(AM_THREADS) k_argmax(qcu_argmax_args a) {
    QCU_PDL_ENTRY();
    __shared__ float sv[AM_THREADS / 32];
    __shared__ int32_t si[AM_THREADS / 32];
    const int64_t r = blockIdx.y, per = a.per_block;
    const float *x = a.x + r * a.n;
    const int64_t lo = (int64_t)blockIdx.x * per, hi = lo + per < a.n ? lo + per : a.n;
    float bv = 0.0f;
    int32_t bi = -1;
    for (int64_t i = lo + threadIdx.x; i < hi; i += AM_THREADS) am_take(x[i], (int32_t)i, &bv, &bi);
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int32_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (oi >= 0) am_take(ov, oi, &bv, &bi);
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    if (threadIdx.x != 0) return;
    bv = 0.0f, bi = -1;
    for (int w = 0; w < AM_THREADS / 32; w++)
        if (si[w] >= 0) am_take(sv[w], si[w], &bv, &bi);
    if (blockIdx.x == 0 && x[0] != x[0]) bi = -2; /* the scan never leaves a NaN at index 0 */
    qcu_argmax_best *o = a.best + r * gridDim.x + blockIdx.x;
    o->v = bv, o->i = bi;
}

extern "C" int64_t qcu_argmax_blocks(int64_t n) {
    const int64_t b = (n + 4 * AM_THREADS - 1) / (4 * AM_THREADS); /* >= 4 elements a thread */
    return b < 1 ? 1 : b > 128 ? 128 : b;
}

extern "C" int qcu_argmax(void *st, const void *ap) {
    const qcu_argmax_args *a = (const qcu_argmax_args *)ap;
    if (a->n < 1 || a->n_rows < 1 || a->n_rows > 65535 || a->n > INT32_MAX) return 1;
    const int64_t nb = qcu_argmax_blocks(a->n);
    qcu_argmax_args b = *a;
    b.per_block = (a->n + nb - 1) / nb;
    QVLM_LAUNCH(k_argmax, dim3((unsigned)nb, (unsigned)a->n_rows), AM_THREADS, 0, st, b);
    QCU_DONE();
}
