/* ref_matmul.c - scalar reference matrix product (the oracle for the SIMD kernels).
 *
 * Each y[t][j] is accumulated in 16 f32 partial sums over i (lane = i mod 16), which are then
 * added pairwise 8+8, 4+4, 2+2, 1+1: the same order a 16-lane SIMD kernel uses, so the
 * reference and the vector kernels agree bit for bit in F32 precision.
 */
#include "kernels/cpu/matmul_impl.h"

#include <string.h>

float qvlm_ref_reduce16(float acc[16]) {
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

/* Widen row j of W to f32 (exact for F32/F16/BF16; dequantised for Q8_0). */
void qvlm_ref_weight_row(float *dst, const void *w, qvlm_dtype wt, int64_t j, int64_t k) {
    const uint8_t *row = (const uint8_t *)w + (size_t)j * qvlm_dtype_row_bytes(wt, k);
    if (wt == QVLM_DTYPE_Q8_0) {
        for (int64_t b = 0; b < k / 32; b++) {
            const uint8_t *blk = row + b * 34;
            qvlm_f16 s;
            memcpy(&s, blk, 2);
            float scale = qvlm_f16_to_f32(s);
            for (int i = 0; i < 32; i++) dst[b * 32 + i] = scale * (float)(int8_t)blk[2 + i];
        }
        return;
    }
    qvlm_to_f32(dst, row, wt, (size_t)k);
}

void qvlm_ref_matmul_rows(const qvlm_cpu *cpu, float *y, int64_t ldy, const float *x, int64_t ldx,
                          const void *w, qvlm_dtype wt, const float *bias, int64_t n, int64_t k, int64_t j0,
                          int64_t j1, float *wrow) {
    for (int64_t j = j0; j < j1; j++) {
        qvlm_ref_weight_row(wrow, w, wt, j, k);
        for (int64_t t = 0; t < n; t++) {
            const float *xr = x + t * ldx;
            float acc[16] = {0};
            for (int64_t i = 0; i < k; i++) {
                float xv = xr[i];
                if (cpu->precision == QVLM_PREC_BF16) xv = qvlm_bf16_to_f32(qvlm_f32_to_bf16(xv));
                acc[i % 16] += xv * wrow[i];
            }
            float s = qvlm_ref_reduce16(acc);
            y[t * ldy + j] = bias ? s + bias[j] : s;
        }
    }
}
