/* rowops.h - row kernels of the elementwise, norm and conv ops (norm.c, elementwise.c,
 * conv1d.c): the scalar reference (rowops.c) and its AVX-512 twin (rowops_avx512.c), bitwise
 * equal. The ops split rows (or channels) across threads and call one of the two per range.
 *
 * Definitions (all f32; sums in the 16-lane order of vmath.h):
 *   rms:    inv = 1 / sqrt(sumsq(x) / dim + eps);  y = (x * inv) * (w_offset + w)
 *           gated: y = y * silu(z);  add_rms first does x = x + delta (stored)
 *   ln:     mean = sum(x) / dim;  var = sumsq(x - mean) / dim;  inv = 1 / sqrt(var + eps)
 *           y = fmaf((x - mean) * inv, w, b);  add_ln first does x = x + delta (stored)
 *   conv:   y[t][c] = silu(sum_k w[c][k] * in[t + k][c]) (fmaf chain over k = 0..K-1), where
 *           in = the K-1 state rows, then x; the state becomes the last K-1 rows of in
 */
#ifndef QVLM_KERNELS_CPU_ROWOPS_H
#define QVLM_KERNELS_CPU_ROWOPS_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/backend.h"

#define QVLM_CONV_MAX_K 16 /* config validation bounds linear_conv_kernel_dim */

typedef struct qvlm_conv_args {
    float *y;            /* [T][C] */
    const float *x;      /* [T][ldx] */
    int64_t ldx;
    float *state;        /* [K-1][C] */
    const float *wt;     /* [K][C]: the weights transposed and widened once per call */
    int64_t T, C, K;
} qvlm_conv_args;

/* rms / gated rms of one row (z NULL: plain); delta non-NULL: x += delta first (x written). */
void qvlm_row_rms_ref(float *y, float *x, const float *delta, const float *z, const qvlm_tensor *w, float w_offset,
                      float eps, int64_t dim);
void qvlm_row_ln_ref(float *y, float *x, const float *delta, const qvlm_tensor *w, const qvlm_tensor *b, float eps,
                     int64_t dim);
void qvlm_conv_ref(const qvlm_conv_args *a, int64_t c0, int64_t c1);
/* y[i] = a[i] + b[i];  silu(g) * u;  x * sigmoid(g);  gelu_tanh(x), for n elements */
void qvlm_vadd_ref(float *y, const float *a, const float *b, int64_t n);
void qvlm_vsilu_mul_ref(float *y, const float *g, const float *u, int64_t n);
void qvlm_vsigmoid_mul_ref(float *y, const float *x, const float *g, int64_t n);
void qvlm_vgelu_tanh_ref(float *x, int64_t n);

#if defined(__x86_64__)
void qvlm_row_rms_avx512(float *y, float *x, const float *delta, const float *z, const qvlm_tensor *w, float w_offset,
                         float eps, int64_t dim);
void qvlm_row_ln_avx512(float *y, float *x, const float *delta, const qvlm_tensor *w, const qvlm_tensor *b, float eps,
                        int64_t dim);
void qvlm_conv_avx512(const qvlm_conv_args *a, int64_t c0, int64_t c1);
void qvlm_vadd_avx512(float *y, const float *a, const float *b, int64_t n);
void qvlm_vsilu_mul_avx512(float *y, const float *g, const float *u, int64_t n);
void qvlm_vsigmoid_mul_avx512(float *y, const float *x, const float *g, int64_t n);
void qvlm_vgelu_tanh_avx512(float *x, int64_t n);
#endif

#endif /* QVLM_KERNELS_CPU_ROWOPS_H */
