/* rowops_avx512.c - AVX-512 twins of the row kernels in rowops.c: the same f32 operations per
 * element (tails by masked loads and stores), so the same bits. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/rowops.h"
#include "kernels/cpu/vmath_avx512.h"

#define AI QVLM_AI

/* Elements [c, c+16) of a weight vector (F32, BF16, F16) as f32, zero past the mask. */
AI __m512 load_w(const qvlm_tensor *w, int64_t c, __mmask16 m) {
    switch (w->dtype) {
    case QVLM_DTYPE_F32: return _mm512_maskz_loadu_ps(m, (const float *)w->data + c);
    case QVLM_DTYPE_BF16: {
        __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w->data + c);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case QVLM_DTYPE_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w->data + c));
    default: return _mm512_setzero_ps();
    }
}

static void add_delta(float *x, const float *delta, int64_t dim) {
    if (!delta) return;
    for (int64_t c = 0; c < dim; c += 16) {
        __mmask16 m = qvlm_mask16(dim - c);
        _mm512_mask_storeu_ps(x + c, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + c), _mm512_maskz_loadu_ps(m, delta + c)));
    }
}

void qvlm_row_rms_avx512(float *y, float *x, const float *delta, const float *z, const qvlm_tensor *w, float w_offset,
                         float eps, int64_t dim) {
    add_delta(x, delta, dim);
    const __m512 inv = _mm512_set1_ps(1.0f / sqrtf(qvlm_vsumsq16(x, dim) / (float)dim + eps));
    const __m512 off = _mm512_set1_ps(w_offset);
    for (int64_t c = 0; c < dim; c += 16) {
        __mmask16 m = qvlm_mask16(dim - c);
        __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + c), inv), _mm512_add_ps(off, load_w(w, c, m)));
        if (z) v = _mm512_mul_ps(v, qvlm_vsilu16(_mm512_maskz_loadu_ps(m, z + c)));
        _mm512_mask_storeu_ps(y + c, m, v);
    }
}

void qvlm_row_ln_avx512(float *y, float *x, const float *delta, const qvlm_tensor *w, const qvlm_tensor *b, float eps,
                        int64_t dim) {
    add_delta(x, delta, dim);
    const float mean = qvlm_vsum16(x, dim) / (float)dim;
    const __m512 mv = _mm512_set1_ps(mean);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t c = 0; c < dim; c += 16) {
        __mmask16 m = qvlm_mask16(dim - c);
        __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + c), mv);
        acc = _mm512_fmadd_ps(d, d, acc);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / sqrtf(qvlm_vtree16x(acc) / (float)dim + eps));
    for (int64_t c = 0; c < dim; c += 16) {
        __mmask16 m = qvlm_mask16(dim - c);
        __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + c), mv), inv);
        _mm512_mask_storeu_ps(y + c, m, _mm512_fmadd_ps(d, load_w(w, c, m), load_w(b, c, m)));
    }
}

/* Token-major: for each t, channels [c0, c1) 16 at a time; row j of the input sequence is
 * state row K-1+j for j < 0, else x row j. Rows are read contiguously (x rows are far apart;
 * walking one channel block down all T rows would cross a page per load). */
void qvlm_conv_avx512(const qvlm_conv_args *a, int64_t c0, int64_t c1) {
    const int64_t K = a->K, T = a->T, C = a->C;
    for (int64_t t = 0; t < T; t++) {
        const float *rows[QVLM_CONV_MAX_K];
        for (int64_t k = 0; k < K; k++) {
            int64_t jj = t - (K - 1) + k;
            rows[k] = jj < 0 ? a->state + (K - 1 + jj) * C : a->x + jj * a->ldx;
        }
        for (int64_t c = c0; c < c1; c += 16) {
            __mmask16 m = qvlm_mask16(c1 - c);
            __m512 acc = _mm512_setzero_ps();
            for (int64_t k = 0; k < K; k++)
                acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a->wt + k * C + c), _mm512_maskz_loadu_ps(m, rows[k] + c), acc);
            _mm512_mask_storeu_ps(a->y + t * C + c, m, qvlm_vsilu16(acc));
        }
    }
    /* New state row k = input row T-(K-1)+k; reading old state rows T+k > k before they are
     * overwritten (increasing k). */
    for (int64_t k = 0; k < K - 1; k++) {
        int64_t jj = T - (K - 1) + k;
        const float *src = jj < 0 ? a->state + (K - 1 + jj) * C : a->x + jj * a->ldx;
        for (int64_t c = c0; c < c1; c += 16) {
            __mmask16 m = qvlm_mask16(c1 - c);
            _mm512_mask_storeu_ps(a->state + k * C + c, m, _mm512_maskz_loadu_ps(m, src + c));
        }
    }
}

void qvlm_vadd_avx512(float *y, const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = qvlm_mask16(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i)));
    }
}

void qvlm_vsilu_mul_avx512(float *y, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = qvlm_mask16(n - i);
        __m512 v = _mm512_mul_ps(qvlm_vsilu16(_mm512_maskz_loadu_ps(m, g + i)), _mm512_maskz_loadu_ps(m, u + i));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

void qvlm_vsigmoid_mul_avx512(float *y, const float *x, const float *g, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = qvlm_mask16(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), qvlm_vsigmoid16(_mm512_maskz_loadu_ps(m, g + i)));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

void qvlm_vgelu_tanh_avx512(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = qvlm_mask16(n - i);
        _mm512_mask_storeu_ps(x + i, m, qvlm_vgelu_tanh16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

#endif /* __x86_64__ */
