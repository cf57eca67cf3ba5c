/* matmul_avx512.c - AVX-512 matrix products: F32 (vfmadd231ps), BF16 native (vdpbf16ps) and
 * BF16 emulated with f32 FMAs under MXCSR.FTZ|DAZ (AVX-512 CPUs without AVX512_BF16).
 *
 * One zmm accumulator per output holds the 16 lanes of cpu.h: a unit of 32 elements is either
 * 32 bf16 pairs for vdpbf16ps (which adds the odd element's product, then the even one's), or,
 * in the f32 modes, the 16 odd elements then the 16 even ones, two FMAs in the same order.
 * ref_matmul.c is the oracle; the scalar twin of each step is in the comment above it.
 *
 * Shapes of work:
 *  - direct (a thread with <= 4 tokens: decode): weights are read as stored and converted in
 *    registers, one row from each of 4 sequential streams at a time, so each weight byte is
 *    streamed from DRAM exactly once;
 *  - panels (prefill): blocks of jb_rows weight rows are converted once into L2-resident
 *    panels, then a 4-token x 4-row micro-kernel (16 accumulators, 8 loads per 16 multiply-
 *    adds) runs over them; the group of 4 packed tokens stays in L1 while the panels stream
 *    from L2. The reduction follows in registers (a butterfly over the 16 outputs).
 * Built with -mavx512f/bw/vl/dq/bf16/vnni -mfma -mf16c; vdpbf16ps and vcvtne2ps2bf16 run only
 * in QVLM_MM_NATIVE mode, which the dispatcher picks only when cpuid reports AVX512_BF16.
 */
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/matmul_impl.h"

#define AI static inline __attribute__((always_inline))
#define MXCSR_FTZ_DAZ 0x8040u

/* ---- masks and lane shuffles --------------------------------------------------------------- */

AI __mmask16 mask16(int n) { return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }
AI __mmask32 mask32(int n) { return n >= 32 ? (__mmask32)0xffffffffu : n <= 0 ? 0 : (__mmask32)((1u << n) - 1); }

/* Indices picking the odd / even elements out of the 32 of (lo, hi). */
AI __m512i idx_odd(void) { return _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1); }
AI __m512i idx_even(void) { return _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0); }

/* f = qvlm_ref_round_bf16(f) per lane, kept as f32 bit patterns (the low 16 bits zero):
 * RNE via the integer add of 0x7fff + lsb, subnormals to a signed zero, NaN quietened. */
AI __m512 round_bf16(__m512 f) {
    __m512i u = _mm512_castps_si512(f);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
    r = _mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u));
    __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    __mmask16 sub = _mm512_testn_epi32_mask(u, _mm512_set1_epi32(0x7f800000));
    __m512i qnan = _mm512_and_si512(_mm512_or_si512(u, _mm512_set1_epi32(0x00400000)),
                                    _mm512_set1_epi32((int)0xffff0000u));
    r = _mm512_mask_mov_epi32(r, nan, qnan);
    r = _mm512_mask_mov_epi32(r, sub, _mm512_and_si512(u, _mm512_set1_epi32((int)0x80000000u)));
    return _mm512_castsi512_ps(r);
}

/* ---- weight loaders -------------------------------------------------------------------------- */

/* Elements [32u, 32u + len) of a weight row as f32 in natural order (lo: 0..15, hi: 16..31),
 * zero past len. Scalar twin: qvlm_ref_weight_operands(..., QVLM_PREC_F32). */
AI void w_nat(qvlm_dtype wt, const uint8_t *row, int64_t u, int len, __m512 *lo, __m512 *hi) {
    if (wt == QVLM_DTYPE_F32) {
        const float *p = (const float *)row + u * QVLM_MM_UNIT;
        *lo = _mm512_maskz_loadu_ps(mask16(len), p);
        *hi = _mm512_maskz_loadu_ps(mask16(len - 16), p + 16);
    } else if (wt == QVLM_DTYPE_F16) {
        const uint16_t *p = (const uint16_t *)row + u * QVLM_MM_UNIT;
        *lo = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask16(len), p));
        *hi = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask16(len - 16), p + 16));
    } else if (wt == QVLM_DTYPE_Q8_0) {
        /* dst[i] = scale * (float)q[i]: exact (k % 32 == 0, so never a partial unit) */
        const uint8_t *blk = row + u * 34;
        uint16_t h;
        memcpy(&h, blk, 2);
        __m512 s = _mm512_set1_ps(_cvtsh_ss(h));
        __m128i q0 = _mm_loadu_si128((const __m128i *)(blk + 2));
        __m128i q1 = _mm_loadu_si128((const __m128i *)(blk + 18));
        *lo = _mm512_mul_ps(s, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)));
        *hi = _mm512_mul_ps(s, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)));
    } else { /* BF16: widening is a 16-bit shift */
        const uint16_t *p = (const uint16_t *)row + u * QVLM_MM_UNIT;
        __m512i a = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask16(len), p));
        __m512i b = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask16(len - 16), p + 16));
        *lo = _mm512_castsi512_ps(_mm512_slli_epi32(a, 16));
        *hi = _mm512_castsi512_ps(_mm512_slli_epi32(b, 16));
    }
}

/* Unit u of a weight row as (odd, even) f32 halves for the F32 / EMU micro-kernels.
 * EMU rounds non-bf16 weights to bf16 first (BF16 weights are used as stored; their
 * subnormals are zeroed by the FMA under DAZ). */
AI void w_oe(qvlm_dtype wt, int emu, const uint8_t *row, int64_t u, int len, __m512 *o, __m512 *e) {
    if (wt == QVLM_DTYPE_BF16) {
        /* a dword holds (even | odd << 16): odd = v & 0xffff0000, even = v << 16 */
        const uint16_t *p = (const uint16_t *)row + u * QVLM_MM_UNIT;
        __m512i v = len == QVLM_MM_UNIT ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi16(mask32(len), p);
        *o = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xffff0000u)));
        *e = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        return;
    }
    __m512 lo, hi;
    w_nat(wt, row, u, len, &lo, &hi);
    if (emu) {
        lo = round_bf16(lo);
        hi = round_bf16(hi);
    }
    *o = _mm512_permutex2var_ps(lo, idx_odd(), hi);
    *e = _mm512_permutex2var_ps(lo, idx_even(), hi);
}

/* Unit u of a weight row as 32 bf16 for vdpbf16ps (others rounded by vcvtne2ps2bf16, which
 * is qvlm_ref_round_bf16). */
AI __m512bh w_bh(qvlm_dtype wt, const uint8_t *row, int64_t u, int len) {
    if (wt == QVLM_DTYPE_BF16) {
        const uint16_t *p = (const uint16_t *)row + u * QVLM_MM_UNIT;
        __m512i v = len == QVLM_MM_UNIT ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi16(mask32(len), p);
        return (__m512bh)v;
    }
    __m512 lo, hi;
    w_nat(wt, row, u, len, &lo, &hi);
    return _mm512_cvtne2ps_pbh(hi, lo); /* low 16 bf16 from the second operand */
}

/* ---- reduction and store ----------------------------------------------------------------------
 * Reduce each output's 16 lanes in the order of cpu.h and store it. Scalar twin:
 *     for w in 8,4,2,1: acc[l] += acc[l + w] (l < w);  y = acc[0] + bias
 * A butterfly does it for 16 (or 4) outputs at once: every add is lane l + lane l+w of one
 * output, as in the scalar twin, and no accumulator leaves the registers. */

/* Where a tile's outputs go: y[t*ldy + rows[j]] (+ bias[rows[j]]) for t < nt, j < nj. */
typedef struct tile_out {
    float *y;          /* the first token's output row */
    int64_t ldy;
    const float *bias; /* [d] or NULL */
    int64_t rows[4];   /* output columns; past nj, copies of a valid one */
    int nt, nj;
    int consecutive;   /* rows[j] == rows[0] + j: one masked store per token */
} tile_out;

/* 8+8 | 4+4 | 2+2 | 1+1 of two accumulators (or pairs of them) at once. */
#define R8(A, B) _mm512_add_ps(_mm512_shuffle_f32x4(A, B, 0x44), _mm512_shuffle_f32x4(A, B, 0xEE))
#define R4(A, B) _mm512_add_ps(_mm512_shuffle_f32x4(A, B, 0x88), _mm512_shuffle_f32x4(A, B, 0xDD))
#define R2(A, B) _mm512_add_ps(_mm512_shuffle_ps(A, B, 0x44), _mm512_shuffle_ps(A, B, 0xEE))
#define R1(A, B) _mm512_add_ps(_mm512_shuffle_ps(A, B, 0x88), _mm512_shuffle_ps(A, B, 0xDD))

AI void finish(const int T, __m512 a[4][4], const tile_out *o) {
    if (T == 1) { /* output j ends in lane 4j */
        __m512 q = R4(R8(a[0][0], a[0][1]), R8(a[0][2], a[0][3]));
        __m512 h = R2(q, q);
        float out[16];
        _mm512_storeu_ps(out, R1(h, h));
        for (int j = 0; j < o->nj; j++) {
            int64_t r = o->rows[j];
            o->y[r] = o->bias ? out[4 * j] + o->bias[r] : out[4 * j]; /* SSE add: follows MXCSR */
        }
        return;
    }
    /* output (t, j) ends in lane 4t + j (token t's 4 outputs in 128-bit block t) */
    __m512 q0 = R4(R8(a[0][0], a[1][0]), R8(a[2][0], a[3][0]));
    __m512 q1 = R4(R8(a[0][1], a[1][1]), R8(a[2][1], a[3][1]));
    __m512 q2 = R4(R8(a[0][2], a[1][2]), R8(a[2][2], a[3][2]));
    __m512 q3 = R4(R8(a[0][3], a[1][3]), R8(a[2][3], a[3][3]));
    __m512 s = R1(R2(q0, q1), R2(q2, q3));
    if (o->consecutive) {
        __mmask8 m = (__mmask8)((1u << o->nj) - 1);
        if (o->bias) s = _mm512_add_ps(s, _mm512_broadcast_f32x4(_mm_maskz_loadu_ps(m, o->bias + o->rows[0])));
        float *y = o->y + o->rows[0];
        _mm_mask_storeu_ps(y, m, _mm512_castps512_ps128(s));
        if (o->nt > 1) _mm_mask_storeu_ps(y + o->ldy, m, _mm512_extractf32x4_ps(s, 1));
        if (o->nt > 2) _mm_mask_storeu_ps(y + 2 * o->ldy, m, _mm512_extractf32x4_ps(s, 2));
        if (o->nt > 3) _mm_mask_storeu_ps(y + 3 * o->ldy, m, _mm512_extractf32x4_ps(s, 3));
        return;
    }
    if (o->bias) {
        const float *b = o->bias;
        s = _mm512_add_ps(s, _mm512_broadcast_f32x4(_mm_setr_ps(b[o->rows[0]], b[o->rows[1]], b[o->rows[2]], b[o->rows[3]])));
    }
    float out[16];
    _mm512_storeu_ps(out, s);
    for (int t = 0; t < o->nt; t++)
        for (int j = 0; j < o->nj; j++) o->y[t * o->ldy + o->rows[j]] = out[4 * t + j];
}

/* ---- micro-kernels ------------------------------------------------------------------------------
 * Outputs of T tokens (xr[t]: packed x rows) x 4 weight rows: either rows as stored (wr[j], the
 * last unit `tail` long) or one panel (pn). Scalar twin (per output):
 *     for u, l: acc[l] = fma(x[32u+2l+1], w[32u+2l+1], acc[l]); acc[l] = fma(x[32u+2l], w[32u+2l], acc[l]);
 * Accumulators and pointers live in locals (written through a parameter inside the loop, GCC
 * would store them every step), and the reduction follows in registers. */

AI void step_oe(const int T, qvlm_dtype wt, int emu, const int panel, const float *const *xr,
                const uint8_t *const *wr, const float *pn, int64_t u, int len, __m512 acc[4][4]) {
    __m512 xo[4], xe[4];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        xo[t] = _mm512_loadu_ps(xr[t] + u * QVLM_MM_X_UNIT_STRIDE);
        xe[t] = _mm512_loadu_ps(xr[t] + u * QVLM_MM_X_UNIT_STRIDE + 16);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        __m512 wo, we;
        if (panel) {
            wo = _mm512_loadu_ps(pn + (u * 4 + j) * QVLM_MM_UNIT);
            we = _mm512_loadu_ps(pn + (u * 4 + j) * QVLM_MM_UNIT + 16);
        } else {
            w_oe(wt, emu, wr[j], u, len, &wo, &we);
        }
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[t][j] = _mm512_fmadd_ps(xo[t], wo, acc[t][j]);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[t][j] = _mm512_fmadd_ps(xe[t], we, acc[t][j]);
    }
}

AI void tile_oe(const int T, qvlm_dtype wt, int emu, const int panel, const float *const *xr_in,
                const uint8_t *const *wr_in, const float *pn, int64_t nu, int tail, const tile_out *o) {
    const float *xr[4] = {xr_in[0], xr_in[1], xr_in[2], xr_in[3]};
    const uint8_t *wr[4] = {0};
    if (!panel) wr[0] = wr_in[0], wr[1] = wr_in[1], wr[2] = wr_in[2], wr[3] = wr_in[3];
    __m512 a[4][4];
#pragma GCC unroll 4
    for (int t = 0; t < 4; t++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) a[t][j] = _mm512_setzero_ps();
    /* Whole units with a constant length (no masks), then the partial one of a stored row. */
    int64_t nfull = panel || tail == QVLM_MM_UNIT ? nu : nu - 1;
    for (int64_t u = 0; u < nfull; u++) step_oe(T, wt, emu, panel, xr, wr, pn, u, QVLM_MM_UNIT, a);
    if (!panel && nfull < nu) step_oe(T, wt, emu, panel, xr, wr, pn, nu - 1, tail, a);
    finish(T, a, o);
}

AI void step_bh(const int T, qvlm_dtype wt, const int panel, const uint16_t *const *xr,
                const uint8_t *const *wr, const uint16_t *pn, int64_t u, int len, __m512 acc[4][4]) {
    __m512bh xb[4];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) xb[t] = (__m512bh)_mm512_loadu_si512(xr[t] + u * QVLM_MM_X_UNIT_STRIDE);
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        __m512bh wb = panel ? (__m512bh)_mm512_loadu_si512(pn + (u * 4 + j) * QVLM_MM_UNIT) : w_bh(wt, wr[j], u, len);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[t][j] = _mm512_dpbf16_ps(acc[t][j], xb[t], wb);
    }
}

AI void tile_bh(const int T, qvlm_dtype wt, const int panel, const uint16_t *const *xr_in,
                const uint8_t *const *wr_in, const uint16_t *pn, int64_t nu, int tail, const tile_out *o) {
    const uint16_t *xr[4] = {xr_in[0], xr_in[1], xr_in[2], xr_in[3]};
    const uint8_t *wr[4] = {0};
    if (!panel) wr[0] = wr_in[0], wr[1] = wr_in[1], wr[2] = wr_in[2], wr[3] = wr_in[3];
    __m512 a[4][4];
#pragma GCC unroll 4
    for (int t = 0; t < 4; t++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) a[t][j] = _mm512_setzero_ps();
    int64_t nfull = panel || tail == QVLM_MM_UNIT ? nu : nu - 1;
    for (int64_t u = 0; u < nfull; u++) step_bh(T, wt, panel, xr, wr, pn, u, QVLM_MM_UNIT, a);
    if (!panel && nfull < nu) step_bh(T, wt, panel, xr, wr, pn, nu - 1, tail, a);
    finish(T, a, o);
}

/* The instantiations the dispatcher needs (T and the loaders must be constants). */
typedef void (*tile_fn)(const void *const *xr, const uint8_t *const *wr, const void *pn, int64_t nu, int tail,
                        const tile_out *o);

/* T, the dtype, EMU and PANEL are literals: each instantiation folds its loaders. */
#define DEF_OE(NAME, T, WT, EMU, PANEL)                                                            \
    static void NAME(const void *const *xr, const uint8_t *const *wr, const void *pn, int64_t nu, \
                     int tail, const tile_out *o) {                                                \
        tile_oe(T, WT, EMU, PANEL, (const float *const *)xr, wr, (const float *)pn, nu, tail, o);  \
    }
#define DEF_BH(NAME, T, WT, PANEL)                                                                 \
    static void NAME(const void *const *xr, const uint8_t *const *wr, const void *pn, int64_t nu, \
                     int tail, const tile_out *o) {                                                \
        tile_bh(T, WT, PANEL, (const uint16_t *const *)xr, wr, (const uint16_t *)pn, nu, tail, o); \
    }

DEF_OE(oe1_f32, 1, QVLM_DTYPE_F32, 0, 0)
DEF_OE(oe4_f32, 4, QVLM_DTYPE_F32, 0, 0)
DEF_OE(oe1_f16, 1, QVLM_DTYPE_F16, 0, 0)
DEF_OE(oe4_f16, 4, QVLM_DTYPE_F16, 0, 0)
DEF_OE(oe1_bf16, 1, QVLM_DTYPE_BF16, 0, 0)
DEF_OE(oe4_bf16, 4, QVLM_DTYPE_BF16, 0, 0)
DEF_OE(oe1_q8, 1, QVLM_DTYPE_Q8_0, 0, 0)
DEF_OE(oe4_q8, 4, QVLM_DTYPE_Q8_0, 0, 0)
DEF_OE(emu1_f32, 1, QVLM_DTYPE_F32, 1, 0)
DEF_OE(emu4_f32, 4, QVLM_DTYPE_F32, 1, 0)
DEF_OE(emu1_f16, 1, QVLM_DTYPE_F16, 1, 0)
DEF_OE(emu4_f16, 4, QVLM_DTYPE_F16, 1, 0)
DEF_OE(emu1_q8, 1, QVLM_DTYPE_Q8_0, 1, 0)
DEF_OE(emu4_q8, 4, QVLM_DTYPE_Q8_0, 1, 0)
DEF_OE(oe4_panel, 4, QVLM_DTYPE_F32, 0, 1) /* wt unused with a panel */
DEF_BH(bh1_f32, 1, QVLM_DTYPE_F32, 0)
DEF_BH(bh4_f32, 4, QVLM_DTYPE_F32, 0)
DEF_BH(bh1_f16, 1, QVLM_DTYPE_F16, 0)
DEF_BH(bh4_f16, 4, QVLM_DTYPE_F16, 0)
DEF_BH(bh1_bf16, 1, QVLM_DTYPE_BF16, 0)
DEF_BH(bh4_bf16, 4, QVLM_DTYPE_BF16, 0)
DEF_BH(bh1_q8, 1, QVLM_DTYPE_Q8_0, 0)
DEF_BH(bh4_q8, 4, QVLM_DTYPE_Q8_0, 0)
DEF_BH(bh4_panel, 4, QVLM_DTYPE_BF16, 1)

/* Direct-path kernel for (mode, wt, one token or four). */
static tile_fn direct_fn(qvlm_mm_mode mode, qvlm_dtype wt, int one) {
    switch (mode) {
    case QVLM_MM_NATIVE:
        switch (wt) {
        case QVLM_DTYPE_F32: return one ? bh1_f32 : bh4_f32;
        case QVLM_DTYPE_F16: return one ? bh1_f16 : bh4_f16;
        case QVLM_DTYPE_Q8_0: return one ? bh1_q8 : bh4_q8;
        default: return one ? bh1_bf16 : bh4_bf16;
        }
    case QVLM_MM_EMU:
        switch (wt) {
        case QVLM_DTYPE_F32: return one ? emu1_f32 : emu4_f32;
        case QVLM_DTYPE_F16: return one ? emu1_f16 : emu4_f16;
        case QVLM_DTYPE_Q8_0: return one ? emu1_q8 : emu4_q8;
        default: return one ? oe1_bf16 : oe4_bf16; /* bf16 weights need no rounding */
        }
    default:
        switch (wt) {
        case QVLM_DTYPE_F32: return one ? oe1_f32 : oe4_f32;
        case QVLM_DTYPE_F16: return one ? oe1_f16 : oe4_f16;
        case QVLM_DTYPE_Q8_0: return one ? oe1_q8 : oe4_q8;
        default: return one ? oe1_bf16 : oe4_bf16;
        }
    }
}

/* ---- packing ---------------------------------------------------------------------------------- */

void qvlm_mm_pack_x_avx512(const qvlm_mm_ctx *c, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
        const float *xs = c->x + t * c->ldx;
        uint8_t *dst = qvlm_mm_x_at(c, t);
        for (int64_t u = 0; u < c->nu; u++) {
            int len = u == c->nu - 1 ? c->tail : QVLM_MM_UNIT;
            __m512 lo = _mm512_maskz_loadu_ps(mask16(len), xs + u * QVLM_MM_UNIT);
            __m512 hi = _mm512_maskz_loadu_ps(mask16(len - 16), xs + u * QVLM_MM_UNIT + 16);
            if (c->mode == QVLM_MM_NATIVE) {
                _mm512_storeu_si512((uint16_t *)dst + u * QVLM_MM_X_UNIT_STRIDE, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
                continue;
            }
            if (c->mode == QVLM_MM_EMU) {
                lo = round_bf16(lo);
                hi = round_bf16(hi);
            }
            float *o = (float *)dst + u * QVLM_MM_X_UNIT_STRIDE;
            _mm512_storeu_ps(o, _mm512_permutex2var_ps(lo, idx_odd(), hi));
            _mm512_storeu_ps(o + 16, _mm512_permutex2var_ps(lo, idx_even(), hi));
        }
    }
}

/* Weight rows [j0, j0 + nr) into panels of 4 (layout in matmul_impl.h); rows past nr are zero. */
static void pack_panels(const qvlm_mm_ctx *c, int64_t j0, int64_t nr, void *dst) {
    int64_t n_panels = (nr + 3) / 4;
    for (int64_t p = 0; p < n_panels; p++)
        for (int r = 0; r < 4; r++) {
            int64_t j = p * 4 + r;
            const uint8_t *row = c->w + (size_t)(j0 + j) * c->w_row_bytes;
            for (int64_t u = 0; u < c->nu; u++) {
                int len = u == c->nu - 1 ? c->tail : QVLM_MM_UNIT;
                size_t at = (size_t)((p * c->nu + u) * 4 + r) * QVLM_MM_UNIT;
                if (c->mode == QVLM_MM_NATIVE) {
                    __m512bh b = (__m512bh)_mm512_setzero_si512();
                    if (j < nr) switch (c->wt) { /* constant wt lets each loader inline its own code */
                        case QVLM_DTYPE_F32: b = w_bh(QVLM_DTYPE_F32, row, u, len); break;
                        case QVLM_DTYPE_F16: b = w_bh(QVLM_DTYPE_F16, row, u, len); break;
                        case QVLM_DTYPE_Q8_0: b = w_bh(QVLM_DTYPE_Q8_0, row, u, len); break;
                        default: b = w_bh(QVLM_DTYPE_BF16, row, u, len); break;
                        }
                    _mm512_storeu_si512((uint16_t *)dst + at, (__m512i)b);
                    continue;
                }
                __m512 o = _mm512_setzero_ps(), e = _mm512_setzero_ps();
                if (j < nr) {
                    if (c->mode == QVLM_MM_EMU) {
                        switch (c->wt) {
                        case QVLM_DTYPE_F32: w_oe(QVLM_DTYPE_F32, 1, row, u, len, &o, &e); break;
                        case QVLM_DTYPE_F16: w_oe(QVLM_DTYPE_F16, 1, row, u, len, &o, &e); break;
                        case QVLM_DTYPE_Q8_0: w_oe(QVLM_DTYPE_Q8_0, 1, row, u, len, &o, &e); break;
                        default: w_oe(QVLM_DTYPE_BF16, 1, row, u, len, &o, &e); break;
                        }
                    } else {
                        switch (c->wt) {
                        case QVLM_DTYPE_F32: w_oe(QVLM_DTYPE_F32, 0, row, u, len, &o, &e); break;
                        case QVLM_DTYPE_F16: w_oe(QVLM_DTYPE_F16, 0, row, u, len, &o, &e); break;
                        case QVLM_DTYPE_Q8_0: w_oe(QVLM_DTYPE_Q8_0, 0, row, u, len, &o, &e); break;
                        default: w_oe(QVLM_DTYPE_BF16, 0, row, u, len, &o, &e); break;
                        }
                    }
                }
                _mm512_storeu_ps((float *)dst + at, o);
                _mm512_storeu_ps((float *)dst + at + 16, e);
            }
        }
}

/* ---- compute ---------------------------------------------------------------------------------- */

/* x rows for tokens t..t+3, the ones past t1 repeating the last (their outputs are dropped). */
static void x_rows(const qvlm_mm_ctx *c, int64_t t, int64_t t1, const void *xr[4]) {
    for (int i = 0; i < 4; i++) {
        int64_t ti = t + i < t1 ? t + i : t1 - 1;
        xr[i] = qvlm_mm_x_at(c, ti);
    }
}

/* Decode: each weight byte is read once, from DRAM. The thread's rows are cut into 4
 * contiguous streams and a tile takes one row of each, so memory sees 4 long sequential
 * streams (measured: ~24 GB/s on one core here) rather than 4 short rows side by side
 * (~11 GB/s: the prefetchers lose track of 2 KB rows read in lock step). */
static void compute_direct(const qvlm_mm_ctx *c, int64_t t0, int64_t t1, int64_t j0, int64_t j1) {
    int nt = (int)(t1 - t0);
    tile_fn fn = direct_fn(c->mode, c->wt, nt == 1);
    const void *xr[4];
    x_rows(c, t0, t1, xr);
    tile_out o = {.y = c->y + t0 * c->ldy, .ldy = c->ldy, .bias = c->bias, .nt = nt};
    int64_t q = (j1 - j0 + 3) / 4; /* rows per stream */
    for (int64_t i = 0; i < q; i++) {
        o.nj = 0;
        for (int r = 0; r < 4; r++)
            if (j0 + r * q + i < j1) o.rows[o.nj++] = j0 + r * q + i;
        const uint8_t *wr[4];
        for (int r = 0; r < 4; r++) {
            if (r >= o.nj) o.rows[r] = o.rows[o.nj - 1]; /* computed again, not stored */
            wr[r] = c->w + (size_t)o.rows[r] * c->w_row_bytes;
        }
        fn(xr, wr, NULL, c->nu, c->tail, &o);
    }
}

static void compute_panels(const qvlm_mm_ctx *c, int64_t t0, int64_t t1, int64_t j0, int64_t j1, void *scratch) {
    tile_fn fn = c->mode == QVLM_MM_NATIVE ? bh4_panel : oe4_panel;
    size_t elem = c->mode == QVLM_MM_NATIVE ? sizeof(uint16_t) : sizeof(float);
    size_t panel_bytes = (size_t)c->nu * 4 * QVLM_MM_UNIT * elem;
    tile_out o = {.ldy = c->ldy, .bias = c->bias, .consecutive = 1};
    for (int64_t jb = j0; jb < j1; jb += c->jb_rows) {
        int64_t nr = j1 - jb < c->jb_rows ? j1 - jb : c->jb_rows;
        pack_panels(c, jb, nr, scratch);
        for (int64_t t = t0; t < t1; t += 4) {
            const void *xr[4];
            x_rows(c, t, t1, xr);
            o.y = c->y + t * c->ldy;
            o.nt = t1 - t < 4 ? (int)(t1 - t) : 4;
            for (int64_t p = 0; p * 4 < nr; p++) {
                o.rows[0] = jb + p * 4;
                o.nj = nr - p * 4 < 4 ? (int)(nr - p * 4) : 4;
                fn(xr, NULL, (const uint8_t *)scratch + p * panel_bytes, c->nu, QVLM_MM_UNIT, &o);
            }
        }
    }
}

void qvlm_mm_compute_avx512(const qvlm_mm_ctx *c, int64_t t0, int64_t t1, int64_t j0, int64_t j1,
                            void *scratch) {
    /* BF16 precision: every f32 op of the kernel flushes like vdpbf16ps (cpu.h). MXCSR is
     * per thread, so each thread sets and restores its own. */
    unsigned csr = _mm_getcsr();
    if (c->mode != QVLM_MM_F32) _mm_setcsr(csr | MXCSR_FTZ_DAZ);
    if (t1 - t0 <= QVLM_MM_DIRECT_MAX) compute_direct(c, t0, t1, j0, j1);
    else compute_panels(c, t0, t1, j0, j1, scratch);
    if (c->mode != QVLM_MM_F32) _mm_setcsr(csr);
}

/* ---- peak probe --------------------------------------------------------------------------------- */

double qvlm_mm_peak_avx512(int native_bf16, int64_t iters) {
    /* 12 independent chains cover the 4-6 cycle latency of both instructions at 1 per cycle. */
    /* Distinct starting values: identical chains would be merged by the compiler. */
    volatile float seed = 1e-3f;
    __m512 a0 = _mm512_set1_ps(seed * 1), a1 = _mm512_set1_ps(seed * 2), a2 = _mm512_set1_ps(seed * 3), a3 = _mm512_set1_ps(seed * 4),
           a4 = _mm512_set1_ps(seed * 5), a5 = _mm512_set1_ps(seed * 6), a6 = _mm512_set1_ps(seed * 7), a7 = _mm512_set1_ps(seed * 8),
           a8 = _mm512_set1_ps(seed * 9), a9 = _mm512_set1_ps(seed * 10), a10 = _mm512_set1_ps(seed * 11), a11 = _mm512_set1_ps(seed * 12);
    if (native_bf16) {
        __m512bh m = (__m512bh)_mm512_set1_epi16((short)qvlm_f32_to_bf16(seed));
        for (int64_t i = 0; i < iters; i++) {
            a0 = _mm512_dpbf16_ps(a0, m, m); a1 = _mm512_dpbf16_ps(a1, m, m); a2 = _mm512_dpbf16_ps(a2, m, m);
            a3 = _mm512_dpbf16_ps(a3, m, m); a4 = _mm512_dpbf16_ps(a4, m, m); a5 = _mm512_dpbf16_ps(a5, m, m);
            a6 = _mm512_dpbf16_ps(a6, m, m); a7 = _mm512_dpbf16_ps(a7, m, m); a8 = _mm512_dpbf16_ps(a8, m, m);
            a9 = _mm512_dpbf16_ps(a9, m, m); a10 = _mm512_dpbf16_ps(a10, m, m); a11 = _mm512_dpbf16_ps(a11, m, m);
        }
    } else {
        __m512 m = _mm512_set1_ps(seed), c = _mm512_set1_ps(seed * seed);
        for (int64_t i = 0; i < iters; i++) {
            a0 = _mm512_fmadd_ps(a0, m, c); a1 = _mm512_fmadd_ps(a1, m, c); a2 = _mm512_fmadd_ps(a2, m, c);
            a3 = _mm512_fmadd_ps(a3, m, c); a4 = _mm512_fmadd_ps(a4, m, c); a5 = _mm512_fmadd_ps(a5, m, c);
            a6 = _mm512_fmadd_ps(a6, m, c); a7 = _mm512_fmadd_ps(a7, m, c); a8 = _mm512_fmadd_ps(a8, m, c);
            a9 = _mm512_fmadd_ps(a9, m, c); a10 = _mm512_fmadd_ps(a10, m, c); a11 = _mm512_fmadd_ps(a11, m, c);
        }
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return (double)iters * 12 * 16 * (native_bf16 ? 4 : 2);
}

uint64_t qvlm_mm_read_avx512(const void *p, size_t bytes) {
    size_t q = bytes / 4;
    const uint8_t *s0 = p, *s1 = s0 + q, *s2 = s1 + q, *s3 = s2 + q;
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    for (size_t i = 0; i + 64 <= q; i += 64) {
        a = _mm512_xor_si512(a, _mm512_load_si512(s0 + i));
        b = _mm512_xor_si512(b, _mm512_load_si512(s1 + i));
        c = _mm512_xor_si512(c, _mm512_load_si512(s2 + i));
        d = _mm512_xor_si512(d, _mm512_load_si512(s3 + i));
    }
    uint64_t lanes[8], sum = 0; /* xor, not the intrinsic's signed add: it overflows (UB) */
    _mm512_storeu_si512(lanes, _mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d)));
    for (int i = 0; i < 8; i++) sum ^= lanes[i];
    return sum;
}

#endif /* __x86_64__ */
