/* ref_matmul.c - scalar reference matrix product: the oracle for the SIMD kernels, and the
 * portable fallback (QVLM_ISA_SCALAR).
 *
 * It spells out the numbers cpu.h defines: 16 lanes, lane l takes elements 2l+1 then 2l of
 * each unit of 32, a pairwise 8+8, 4+4, 2+2, 1+1 reduction, then the bias. F32 precision is
 * plain IEEE (fmaf, correctly rounded); BF16 precision rounds both operands to bf16 and
 * applies vdpbf16ps' denormal flushes with explicit code, so it does not depend on MXCSR.
 * Invariant: every SIMD kernel reproduces these functions bit for bit (tests/unit/matmul_test.c).
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/matmul_impl.h"
#include "kernels/cpu/quant.h"

/* ---- bf16 precision: operands and flushes ------------------------------------------------ */

/* Denormal -> zero of the same sign (DAZ on inputs, FTZ on results that are already tiny). */
static float flush(float v) { return fabsf(v) < FLT_MIN ? copysignf(0.0f, v) : v; }

float qvlm_ref_fma_ftz(float a, float b, float c) {
    a = flush(a);
    b = flush(b);
    c = flush(c);
    float r = fmaf(a, b, c);
    float ar = fabsf(r);
    if (!(ar <= FLT_MIN)) return r; /* normal, infinite or NaN (NaN fails the compare) */
    if (ar < FLT_MIN) return copysignf(0.0f, r);
    /* |r| == FLT_MIN. fmaf rounded at the subnormal grid (2^-149), but the hardware decides
     * "tiny" after rounding to 24 bits with an unbounded exponent, which differs for exact
     * results in [FLT_MIN - 2^-150, FLT_MIN). Redo the sum scaled by 2^24, where the 24-bit
     * rounding is the ordinary one. It is exact: |r| == FLT_MIN needs |c| <= 2^-78 (a larger c
     * puts the exact sum on a grid coarser than FLT_MIN), so |a*b| is tiny too and the smaller
     * factor is < 1; scaling it and c by 2^24 neither overflows nor rounds. */
    if (fabsf(a) > fabsf(b)) {
        float t = a;
        a = b;
        b = t;
    }
    float r24 = fmaf(a * 0x1p24f, b, c * 0x1p24f);
    return fabsf(r24) < 0x1p-102f ? copysignf(0.0f, r) : r;
}

float qvlm_ref_round_bf16(float f) {
    if (fabsf(f) < FLT_MIN) return copysignf(0.0f, f); /* vcvtneps2bf16 flushes subnormals */
    return qvlm_bf16_to_f32(qvlm_f32_to_bf16(f));      /* RNE; NaN quietened */
}

/* ---- operands ------------------------------------------------------------------------------ */

void qvlm_ref_weight_operands(float *dst, const void *w, qvlm_dtype wt, int64_t j, int64_t k,
                              qvlm_precision precision) {
    const uint8_t *row = (const uint8_t *)w + (size_t)j * qvlm_dtype_row_bytes(wt, k);
    int64_t kp = (k + QVLM_MM_UNIT - 1) / QVLM_MM_UNIT * QVLM_MM_UNIT;
    if (wt == QVLM_DTYPE_Q8_0) {
        for (int64_t b = 0; b < k / 32; b++) {
            const uint8_t *blk = row + b * 34;
            qvlm_f16 s;
            memcpy(&s, blk, 2);
            float scale = qvlm_f16_to_f32(s);
            for (int i = 0; i < 32; i++) dst[b * 32 + i] = scale * (float)(int8_t)blk[2 + i]; /* exact */
        }
    } else {
        qvlm_to_f32(dst, row, wt, (size_t)k);
    }
    if (precision == QVLM_PREC_BF16) {
        /* BF16 weights are already bf16 (their subnormals are read as zero by the fma);
         * the others are rounded like the activations. */
        if (wt != QVLM_DTYPE_BF16)
            for (int64_t i = 0; i < k; i++) dst[i] = qvlm_ref_round_bf16(dst[i]);
    }
    for (int64_t i = k; i < kp; i++) dst[i] = 0.0f;
}

static void x_operands(float *dst, const float *x, int64_t k, int64_t kp, qvlm_precision precision) {
    for (int64_t i = 0; i < k; i++) dst[i] = precision == QVLM_PREC_BF16 ? qvlm_ref_round_bf16(x[i]) : x[i];
    for (int64_t i = k; i < kp; i++) dst[i] = 0.0f;
}

/* ---- the dot product ------------------------------------------------------------------------ */

float qvlm_ref_dot(const float *xo, const float *wo, int64_t nu, int has_bias, float bias_j,
                   qvlm_precision precision) {
    float acc[16] = {0};
    if (precision == QVLM_PREC_BF16) {
        for (int64_t u = 0; u < nu; u++)
            for (int l = 0; l < 16; l++) {
                int64_t i = u * QVLM_MM_UNIT + 2 * l;
                acc[l] = qvlm_ref_fma_ftz(xo[i + 1], wo[i + 1], acc[l]); /* odd first, as vdpbf16ps */
                acc[l] = qvlm_ref_fma_ftz(xo[i], wo[i], acc[l]);
            }
        /* Sums of two normal floats that land below FLT_MIN are exact, so a plain add and a
         * flush of the result is exactly what an add under MXCSR.FTZ|DAZ gives. */
        for (int w = 8; w >= 1; w /= 2)
            for (int l = 0; l < w; l++) acc[l] = flush(acc[l] + acc[l + w]);
        return has_bias ? flush(acc[0] + flush(bias_j)) : acc[0];
    }
    for (int64_t u = 0; u < nu; u++)
        for (int l = 0; l < 16; l++) {
            int64_t i = u * QVLM_MM_UNIT + 2 * l;
            acc[l] = fmaf(xo[i + 1], wo[i + 1], acc[l]);
            acc[l] = fmaf(xo[i], wo[i], acc[l]);
        }
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return has_bias ? acc[0] + bias_j : acc[0];
}

/* ---- I8: Q8_0 weights at BF16 precision --------------------------------------------------- */

void qvlm_ref_quantize_x_i8(const float *x, int8_t *q, float *d, int32_t *corr) {
    float amax = 0.0f;
    int bad = 0;
    for (int i = 0; i < 32; i++) {
        float a = fabsf(x[i]);
        if (!(a <= FLT_MAX)) bad = 1; /* inf or NaN */
        else if (a > amax) amax = a;
    }
    if (bad || amax < 0x1p-100f) { /* NaN scale: the outputs become NaN, as x would make them */
        memset(q, 0, 32);
        *d = bad ? NAN : 0.0f;
        *corr = 0;
        return;
    }
    *d = amax / 127.0f;
    float id = 127.0f / amax;
    int32_t sum = 0;
    for (int i = 0; i < 32; i++) {
        float v = x[i] * id;
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        q[i] = (int8_t)nearbyintf(v); /* the default rounding: to nearest even */
        sum += q[i];
    }
    *corr = -128 * sum;
}

/* Outputs of I8 mode: scratch holds the token's q (k bytes) and block scales (k/32 floats). */
static void ref_compute_i8(const qvlm_mm_ctx *c, int64_t t0, int64_t t1, int64_t j0, int64_t j1, void *scratch) {
    int64_t nb = c->k / 32;
    int8_t *q = scratch;
    float *dx = (float *)(q + c->k);
    for (int64_t t = t0; t < t1; t++) {
        int32_t corr;
        for (int64_t b = 0; b < nb; b++) qvlm_ref_quantize_x_i8(c->x + t * c->ldx + 32 * b, q + 32 * b, dx + b, &corr);
        for (int64_t j = j0; j < j1; j++) {
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                qvlm_f16 h;
                int8_t qw[32];
                if (c->wt == QVLM_DTYPE_Q8_0X8) {
                    qvlm_q8_0x8_block(c->w, j, b, c->k, &h, qw);
                } else {
                    const uint8_t *blk = c->w + (size_t)j * c->w_row_bytes + b * QVLM_Q8_0_BLOCK_BYTES;
                    memcpy(&h, blk, 2);
                    memcpy(qw, blk + 2, 32);
                }
                int32_t dot = 0;
                for (int i = 0; i < 32; i++) dot += (int32_t)qw[i] * q[32 * b + i];
                float s = qvlm_f16_to_f32(h) * dx[b];
                acc = fmaf(s, (float)dot, acc);
            }
            c->y[t * c->ldy + j] = c->bias ? acc + c->bias[j] : acc;
        }
    }
}

void qvlm_ref_compute(const qvlm_mm_ctx *c, int64_t t0, int64_t t1, int64_t j0, int64_t j1,
                      void *scratch) {
    if ((c->wt == QVLM_DTYPE_Q8_0 && c->precision == QVLM_PREC_BF16) || c->wt == QVLM_DTYPE_Q8_0X8) {
        ref_compute_i8(c, t0, t1, j0, j1, scratch);
        return;
    }
    int64_t kp = c->nu * QVLM_MM_UNIT;
    float *wo = scratch, *xo = wo + kp;
    for (int64_t j = j0; j < j1; j++) {
        qvlm_ref_weight_operands(wo, c->w, c->wt, j, c->k, c->precision);
        for (int64_t t = t0; t < t1; t++) {
            x_operands(xo, c->x + t * c->ldx, c->k, kp, c->precision);
            c->y[t * c->ldy + j] =
                qvlm_ref_dot(xo, wo, c->nu, c->bias != NULL, c->bias ? c->bias[j] : 0.0f, c->precision);
        }
    }
}
