/* norm.c - RMSNorm, gated RMSNorm and LayerNorm on the CPU (qwen35-arch §3.2, §5).
 * Numerics follow transformers in f32: the mean of squares in f32, then
 * (x * rsqrt(mean + eps)) * (offset + w) in that order. */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

static float mean_sq(const float *x, int64_t n) {
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += x[i + l] * x[i + l];
    for (; i < n; i++) acc[0] += x[i] * x[i];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    return s / (float)n;
}

struct rms_job {
    float *y;
    int64_t ldy;
    const float *x;
    int64_t ldx;
    const qvlm_tensor *w;
    const float *z; /* gate of the gated form, or NULL */
    float w_offset, eps;
    int64_t n_rows, dim;
};

static void rms_task(void *p, int ith, int nth) {
    struct rms_job *j = p;
    long r0, r1;
    qvlm_split_rows(j->n_rows, ith, nth, &r0, &r1);
    for (long r = r0; r < r1; r++) {
        const float *x = j->x + r * j->ldx;
        float *y = j->y + r * j->ldy;
        float inv = 1.0f / sqrtf(mean_sq(x, j->dim) + j->eps);
        for (int64_t c = 0; c < j->dim; c++) {
            float v = (x[c] * inv) * (j->w_offset + cpu_weight_at(j->w, c));
            if (j->z) {
                float g = j->z[r * j->dim + c];
                v = v * (g / (1.0f + expf(-g)));
            }
            y[c] = v;
        }
    }
}

void cpu_rms_norm(qvlm_stream *s, float *y, int64_t ldy, const float *x, int64_t ldx, const qvlm_tensor *w,
                  float w_offset, float eps, int64_t n_rows, int64_t dim) {
    struct rms_job j = {y, ldy, x, ldx, w, NULL, w_offset, eps, n_rows, dim};
    cpu_parallel(s, n_rows, 16, rms_task, &j);
}

/* transformers: w * bf16(x̂) * silu(f32 z); in f32 the cast is exact, so (w * x̂) * silu(z). */
void cpu_gated_rms_norm(qvlm_stream *s, float *y, const float *x, const float *z, const qvlm_tensor *w, float eps,
                        int64_t n_rows, int64_t dim) {
    struct rms_job j = {y, dim, x, dim, w, z, 0.0f, eps, n_rows, dim};
    cpu_parallel(s, n_rows, 16, rms_task, &j);
}

struct ln_job {
    float *y;
    const float *x;
    const qvlm_tensor *w, *b;
    float eps;
    int64_t n_rows, dim;
};

static void ln_task(void *p, int ith, int nth) {
    struct ln_job *j = p;
    long r0, r1;
    qvlm_split_rows(j->n_rows, ith, nth, &r0, &r1);
    for (long r = r0; r < r1; r++) {
        const float *x = j->x + r * j->dim;
        float *y = j->y + r * j->dim;
        double sum = 0;
        for (int64_t c = 0; c < j->dim; c++) sum += x[c];
        float mean = (float)(sum / (double)j->dim);
        double var = 0;
        for (int64_t c = 0; c < j->dim; c++) var += (double)(x[c] - mean) * (x[c] - mean);
        float inv = 1.0f / sqrtf((float)(var / (double)j->dim) + j->eps);
        for (int64_t c = 0; c < j->dim; c++)
            y[c] = (x[c] - mean) * inv * cpu_weight_at(j->w, c) + cpu_weight_at(j->b, c);
    }
}

void cpu_layer_norm(qvlm_stream *s, float *y, const float *x, const qvlm_tensor *w, const qvlm_tensor *b, float eps,
                    int64_t n_rows, int64_t dim) {
    struct ln_job j = {y, x, w, b, eps, n_rows, dim};
    cpu_parallel(s, n_rows, 16, ln_task, &j);
}
