/* moe.c - mixture-of-experts routing and row shuffles on the CPU (qwen35-arch §3.6).
 * Router: softmax over all experts in f32, top-k, weights renormalised to sum 1. */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_moe_route(qvlm_stream *s, int32_t *idx, float *weight, const float *logits, int64_t n_rows,
                   int64_t n_experts, int64_t k) {
    for (int64_t r = 0; r < n_rows; r++) {
        const float *l = logits + r * n_experts;
        float mx = -INFINITY, sum = 0.0f;
        for (int64_t e = 0; e < n_experts; e++) mx = l[e] > mx ? l[e] : mx;
        for (int64_t e = 0; e < n_experts; e++) sum += expf(l[e] - mx);
        int32_t *ir = idx + r * k;
        float *wr = weight + r * k;
        /* Selection by repeated max: k is small (8-10), E up to 512. Ties go to the lower
         * index, as torch.topk does on the CPU for equal values in practice. */
        for (int64_t j = 0; j < k; j++) {
            int32_t best = -1;
            for (int64_t e = 0; e < n_experts; e++) {
                int taken = 0;
                for (int64_t q = 0; q < j; q++) taken |= ir[q] == e;
                if (!taken && (best < 0 || l[e] > l[best])) best = (int32_t)e;
            }
            ir[j] = best;
            wr[j] = expf(l[best] - mx) / sum;
        }
        float tot = 0.0f;
        for (int64_t j = 0; j < k; j++) tot += wr[j];
        for (int64_t j = 0; j < k; j++) wr[j] /= tot;
    }
}

void cpu_gather_rows(qvlm_stream *s, float *y, const float *x, const int32_t *rows, int64_t n, int64_t dim) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < dim; c++) y[i * dim + c] = x[(int64_t)rows[i] * dim + c];
}

void cpu_scatter_add_rows(qvlm_stream *s, float *y, const float *x, const int32_t *rows, const float *scale,
                          int64_t n, int64_t dim) {
    for (int64_t i = 0; i < n; i++) {
        float *yr = y + (int64_t)rows[i] * dim;
        for (int64_t c = 0; c < dim; c++) yr[c] += scale[i] * x[i * dim + c];
    }
}
