/* conv1d.cu - causal depthwise conv1d + SiLU with a rolling state (kernels/cpu/conv1d.c is the
 * reference, same arithmetic order). One thread per channel walks the tokens in order; reads
 * and writes of a token row are coalesced across the channels. */
#include "kernels/cuda/cuda_common.cuh"

#define MAX_K 16 /* config validation bounds linear_conv_kernel_dim */

__global__ void k_conv1d_silu(float *y, const float *x, float *state, const void *w, int wdt, int64_t ldx, int64_t T,
                              int64_t C, int64_t K) {
    /* The weights and the state are read before waiting for the previous kernel: only this op
     * writes the state (copies aside, which are not kernels), and the kernel just before it in
     * a stream is never this op on the same state (the layer's input projection is between). */
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    float wk[MAX_K], win[MAX_K];
#pragma unroll
    for (int k = 0; k < MAX_K; k++) {
        wk[k] = c < C && k < K ? wload(w, wdt, c * K + k) : 0.0f;
        win[k] = c < C && k < K - 1 ? state[k * C + c] : 0.0f;
    }
    QCU_PDL_ENTRY();
    if (c >= C) return;
    for (int64_t t = 0; t < T; t++) {
        const float xv = x[t * ldx + c];
        float acc = 0.0f;
#pragma unroll
        for (int k = 0; k < MAX_K; k++) {
            if (k < K - 1) acc += wk[k] * win[k];
            else if (k == K - 1) acc += wk[k] * xv;
        }
        y[t * C + c] = silu_f(acc);
#pragma unroll
        for (int k = 0; k + 1 < MAX_K; k++)
            if (k + 1 < K - 1) win[k] = win[k + 1];
            else if (k + 1 == K - 1) win[k] = xv;
    }
#pragma unroll
    for (int k = 0; k < MAX_K; k++)
        if (k < K - 1) state[k * C + c] = win[k];
}

extern "C" int qcu_conv1d_silu(void *st, const void *p) {
    const qcu_conv1d_args *a = (const qcu_conv1d_args *)p;
    if (a->C > 0 && a->K >= 1 && a->K <= MAX_K)
        QVLM_LAUNCH(k_conv1d_silu, qcu_blocks(a->C, 128), 128, 0, st, a->y, a->x, a->state, a->w, a->wdt, a->ldx, a->T, a->C,
                    a->K);
    else if (a->K > MAX_K)
        return 1; /* cudaErrorInvalidValue: the config check should have refused it */
    QCU_DONE();
}
