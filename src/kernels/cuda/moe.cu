/* moe.cu - mixture-of-experts routing on the device (kernels/cpu/moe.c is the reference):
 * softmax over all experts in f32, top-k by repeated maximum of the logits (ties to the lower
 * index), weights renormalised. One thread per token row runs the CPU's loop unchanged, so the
 * choices and weights are the CPU's bit for bit (up to expf). The row shuffles are in
 * elementwise.cu. */
#include "kernels/cuda/cuda_common.cuh"

#define MAX_K 32

__global__ void k_moe_route(int32_t *idx, float *weight, const float *logits, int64_t n_rows, int64_t E, int64_t k) {
    QCU_PDL_ENTRY();
    const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n_rows) return;
    const float *l = logits + r * E;
    float mx = -INFINITY, sum = 0.0f;
    for (int64_t e = 0; e < E; e++) mx = l[e] > mx ? l[e] : mx;
    for (int64_t e = 0; e < E; e++) sum += expf(l[e] - mx);
    int32_t ir[MAX_K];
    float wr[MAX_K];
    for (int64_t j = 0; j < k; j++) {
        int32_t best = -1;
        for (int64_t e = 0; e < E; e++) {
            int taken = 0;
            for (int64_t q = 0; q < j; q++) taken |= ir[q] == e;
            if (!taken && (best < 0 || l[e] > l[best])) best = (int32_t)e;
        }
        ir[j] = best;
        wr[j] = expf(l[best] - mx) / sum;
    }
    float tot = 0.0f;
    for (int64_t j = 0; j < k; j++) tot += wr[j];
    for (int64_t j = 0; j < k; j++) {
        idx[r * k + j] = ir[j];
        weight[r * k + j] = wr[j] / tot;
    }
}

extern "C" int qcu_moe_route(void *st, const void *ap) {
    const qcu_moe_route_args *a = (const qcu_moe_route_args *)ap;
    if (a->k < 1 || a->k > MAX_K || a->k > a->n_experts) return 1;
    if (a->n_rows > 0) QVLM_LAUNCH(k_moe_route, qcu_blocks(a->n_rows, 64), 64, 0, st, a->idx, a->weight, a->logits, a->n_rows, a->n_experts, a->k);
    QCU_DONE();
}
