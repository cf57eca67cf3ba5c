/* vmath.h - f32 elementary functions and reductions with one definition for every ISA.
 *
 * The CPU kernels other than the matrix products (Gated DeltaNet, attention, norms,
 * activations) compute exp, sigmoid, SiLU and the tanh-GELU through these definitions. Each is
 * a fixed sequence of IEEE f32 operations (fmaf where a fused multiply-add is meant), so the
 * scalar functions below and their AVX-512 twins in vmath_avx512.h give the same bits for
 * every input, and a kernel built from them gives the same bits whether its elements are
 * computed one at a time, 16 per register, or in a masked tail (cpu.h's determinism contract).
 * The scalar versions are the reference (and the fallback on CPUs without AVX-512).
 *
 * Accuracy: exp within 2 ulp of the true value over the f32 range (Cephes' expf reduction and
 * polynomial); the others inherit it.
 */
#ifndef QVLM_KERNELS_CPU_VMATH_H
#define QVLM_KERNELS_CPU_VMATH_H

#include <math.h>

/* Constants shared with vmath_avx512.h. */
#define QVLM_VEXP_LO (-104.0f)          /* exp(-104) rounds to +0 */
#define QVLM_VEXP_HI 89.0f              /* exp(89) overflows to +inf */
#define QVLM_VEXP_LOG2E 1.44269504088896341f
#define QVLM_VEXP_C1 0.693359375f       /* ln 2 = C1 - C2, C1 with 9 significant bits */
#define QVLM_VEXP_C2 (-2.12194440e-4f)
#define QVLM_VEXP_P0 1.9875691500e-4f
#define QVLM_VEXP_P1 1.3981999507e-3f
#define QVLM_VEXP_P2 8.3334519073e-3f
#define QVLM_VEXP_P3 4.1665795894e-2f
#define QVLM_VEXP_P4 1.6666665459e-1f
#define QVLM_VEXP_P5 5.0000001201e-1f
#define QVLM_GELU_C (-1.5957691216057308f) /* -2 sqrt(2/pi) */
#define QVLM_GELU_A 0.044715f

/* exp(x): n = rint(x log2 e), r = x - n ln2 (two fmas), y = 1 + r + r^2 P(r), y * 2^n.
 * x is clamped to [LO, HI] first (so the scaling under- or overflows to 0 / inf on both
 * sides); NaN is returned unchanged. */
static inline float qvlm_vexp(float x) {
    if (x != x) return x;
    x = x < QVLM_VEXP_LO ? QVLM_VEXP_LO : x > QVLM_VEXP_HI ? QVLM_VEXP_HI : x;
    float n = rintf(x * QVLM_VEXP_LOG2E);
    float r = fmaf(n, -QVLM_VEXP_C1, x);
    r = fmaf(n, -QVLM_VEXP_C2, r);
    float z = r * r;
    float p = fmaf(QVLM_VEXP_P0, r, QVLM_VEXP_P1);
    p = fmaf(p, r, QVLM_VEXP_P2);
    p = fmaf(p, r, QVLM_VEXP_P3);
    p = fmaf(p, r, QVLM_VEXP_P4);
    p = fmaf(p, r, QVLM_VEXP_P5);
    float y = fmaf(p, z, r);
    y = y + 1.0f;
    return ldexpf(y, (int)n); /* correctly rounded, like vscalefps */
}

static inline float qvlm_vsigmoid(float x) { return 1.0f / (1.0f + qvlm_vexp(-x)); }
static inline float qvlm_vsilu(float x) { return x / (1.0f + qvlm_vexp(-x)); }

/* PyTorch's gelu(approximate="tanh"), 0.5 x (1 + tanh(u)) with u = sqrt(2/pi)(x + 0.044715 x^3),
 * written as x * sigmoid(2u) = x / (1 + exp(-2u)): the same function, and accurate at both
 * ends (no 1 - 1 cancellation for very negative x). */
static inline float qvlm_vgelu_tanh(float x) {
    float x3 = (x * x) * x;
    float u = fmaf(QVLM_GELU_A, x3, x);
    return x / (1.0f + qvlm_vexp(QVLM_GELU_C * u));
}

/* Sum of 16 lanes in the fixed tree of cpu.h: a[l] += a[l+8], then +4, +2, +1. */
static inline float qvlm_vtree16(float a[16]) {
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) a[l] += a[l + w];
    return a[0];
}

/* Sum of squares of x[0..n) in the 16-lane order: lane i%16 takes x[i] in increasing i
 * (acc = fmaf(x, x, acc)), then qvlm_vtree16. */
static inline float qvlm_vsumsq(const float *x, long n) {
    float a[16] = {0};
    for (long i = 0; i < n; i++) a[i & 15] = fmaf(x[i], x[i], a[i & 15]);
    return qvlm_vtree16(a);
}

/* Sum of x[0..n) in the same 16-lane order (acc = acc + x). */
static inline float qvlm_vsum(const float *x, long n) {
    float a[16] = {0};
    for (long i = 0; i < n; i++) a[i & 15] += x[i];
    return qvlm_vtree16(a);
}

#endif /* QVLM_KERNELS_CPU_VMATH_H */
