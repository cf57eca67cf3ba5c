/* vmath_avx512.h - the AVX-512 twins of vmath.h (include only from *_avx512.c files).
 * Every function performs, per lane, exactly the f32 operations of its scalar twin, so the
 * results are bitwise equal; tails use masked loads and stores, never a scalar loop. */
#ifndef QVLM_KERNELS_CPU_VMATH_AVX512_H
#define QVLM_KERNELS_CPU_VMATH_AVX512_H

#include <immintrin.h>

#include "kernels/cpu/vmath.h"

#define QVLM_AI static inline __attribute__((always_inline))

QVLM_AI __mmask16 qvlm_mask16(long n) {
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* qvlm_vexp per lane. */
QVLM_AI __m512 qvlm_vexp16(__m512 x) {
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(QVLM_VEXP_LO)), _mm512_set1_ps(QVLM_VEXP_HI));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(QVLM_VEXP_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-QVLM_VEXP_C1), xc);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(-QVLM_VEXP_C2), r);
    __m512 z = _mm512_mul_ps(r, r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(QVLM_VEXP_P0), r, _mm512_set1_ps(QVLM_VEXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(QVLM_VEXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(QVLM_VEXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(QVLM_VEXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(QVLM_VEXP_P5));
    __m512 y = _mm512_fmadd_ps(p, z, r);
    y = _mm512_add_ps(y, _mm512_set1_ps(1.0f));
    y = _mm512_scalef_ps(y, n);
    return _mm512_mask_mov_ps(y, nan, x);
}

QVLM_AI __m512 qvlm_vsigmoid16(__m512 x) {
    __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, qvlm_vexp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

/* -x is exact, so 0 - x is the scalar's unary minus except for x = +0 (0 - 0 = +0, -(+0) =
 * -0); exp(+-0) = 1 either way, so the results agree. */
QVLM_AI __m512 qvlm_vsilu16(__m512 x) {
    __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(x, _mm512_add_ps(one, qvlm_vexp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

QVLM_AI __m512 qvlm_vgelu_tanh16(__m512 x) {
    __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
    __m512 u = _mm512_fmadd_ps(_mm512_set1_ps(QVLM_GELU_A), x3, x);
    __m512 e = qvlm_vexp16(_mm512_mul_ps(_mm512_set1_ps(QVLM_GELU_C), u));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/* qvlm_vtree16 of the 16 lanes. */
QVLM_AI float qvlm_vtree16x(__m512 v) {
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}

/* qvlm_vsumsq: lane l takes x[l], x[l+16], ... in order. */
QVLM_AI float qvlm_vsumsq16(const float *x, long n) {
    __m512 acc = _mm512_setzero_ps();
    for (long i = 0; i < n; i += 16) {
        __m512 v = _mm512_maskz_loadu_ps(qvlm_mask16(n - i), x + i);
        acc = _mm512_fmadd_ps(v, v, acc);
    }
    return qvlm_vtree16x(acc);
}

QVLM_AI float qvlm_vsum16(const float *x, long n) {
    __m512 acc = _mm512_setzero_ps();
    for (long i = 0; i < n; i += 16) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(qvlm_mask16(n - i), x + i));
    return qvlm_vtree16x(acc);
}

#endif /* QVLM_KERNELS_CPU_VMATH_AVX512_H */
