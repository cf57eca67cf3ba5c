/* rowops.c - the scalar reference of the row kernels (definitions in rowops.h). */
#include "kernels/cpu/rowops.h"

#include <math.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/vmath.h"

static void add_delta(float *x, const float *delta, int64_t dim) {
    if (delta)
        for (int64_t c = 0; c < dim; c++) x[c] = x[c] + delta[c];
}

void qvlm_row_rms_ref(float *y, float *x, const float *delta, const float *z, const qvlm_tensor *w, float w_offset,
                      float eps, int64_t dim) {
    add_delta(x, delta, dim);
    float inv = 1.0f / sqrtf(qvlm_vsumsq(x, dim) / (float)dim + eps);
    for (int64_t c = 0; c < dim; c++) {
        float v = (x[c] * inv) * (w_offset + cpu_weight_at(w, c));
        y[c] = z ? v * qvlm_vsilu(z[c]) : v;
    }
}

void qvlm_row_ln_ref(float *y, float *x, const float *delta, const qvlm_tensor *w, const qvlm_tensor *b, float eps,
                     int64_t dim) {
    add_delta(x, delta, dim);
    const float mean = qvlm_vsum(x, dim) / (float)dim;
    float lanes[16] = {0};
    for (int64_t c = 0; c < dim; c++) {
        float d = x[c] - mean;
        lanes[c & 15] = fmaf(d, d, lanes[c & 15]);
    }
    const float inv = 1.0f / sqrtf(qvlm_vtree16(lanes) / (float)dim + eps);
    for (int64_t c = 0; c < dim; c++) y[c] = fmaf((x[c] - mean) * inv, cpu_weight_at(w, c), cpu_weight_at(b, c));
}

void qvlm_conv_ref(const qvlm_conv_args *a, int64_t c0, int64_t c1) {
    const int64_t K = a->K, T = a->T, C = a->C;
    for (int64_t c = c0; c < c1; c++) {
        float win[2 * QVLM_CONV_MAX_K];
        for (int64_t k = 0; k < K - 1; k++) win[k] = a->state[k * C + c];
        for (int64_t t = 0; t < T; t++) {
            win[K - 1] = a->x[t * a->ldx + c];
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc = fmaf(a->wt[k * C + c], win[k], acc);
            a->y[t * C + c] = qvlm_vsilu(acc);
            for (int64_t k = 0; k + 1 < K; k++) win[k] = win[k + 1];
        }
        for (int64_t k = 0; k < K - 1; k++) a->state[k * C + c] = win[k];
    }
}

void qvlm_vadd_ref(float *y, const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void qvlm_vsilu_mul_ref(float *y, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = qvlm_vsilu(g[i]) * u[i];
}

void qvlm_vsigmoid_mul_ref(float *y, const float *x, const float *g, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * qvlm_vsigmoid(g[i]);
}

void qvlm_vgelu_tanh_ref(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = qvlm_vgelu_tanh(x[i]);
}
