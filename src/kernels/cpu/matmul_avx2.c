/* matmul_avx2.c - AVX2 matrix products: F32 (vfmadd231ps ymm) and BF16 emulated with f32 FMAs
 * under MXCSR.FTZ|DAZ (AVX2 has no bf16 dot instruction).
 *
 * The 16 lanes of cpu.h are two ymm per output: lanes 0..7 take the pairs of elements 0..15
 * of a unit, lanes 8..15 those of 16..31; the first reduction step (lane l + lane l+8) is the
 * add of the two. Packed x and panels have the same OE layout as the AVX-512 kernels.
 * With 16 ymm registers the micro-kernels are 1 token x 4 rows (decode) and 2 x 2 (prefill,
 * 8 accumulators + 4 x + 2 w registers). ref_matmul.c is the oracle.
 */
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/matmul_impl.h"

#define AI static inline __attribute__((always_inline))
#define MXCSR_FTZ_DAZ 0x8040u

/* ---- conversions ----------------------------------------------------------------------------- */

/* qvlm_ref_round_bf16 per lane, as f32 bit patterns (see the AVX-512 twin). */
AI __m256 round_bf16(__m256 f) {
    __m256i u = _mm256_castps_si256(f);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb));
    r = _mm256_and_si256(r, _mm256_set1_epi32((int)0xffff0000u));
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
    __m256i sub = _mm256_cmpeq_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7f800000)), _mm256_setzero_si256());
    __m256i qnan = _mm256_and_si256(_mm256_or_si256(u, _mm256_set1_epi32(0x00400000)), _mm256_set1_epi32((int)0xffff0000u));
    r = _mm256_blendv_epi8(r, qnan, nan);
    r = _mm256_blendv_epi8(r, _mm256_and_si256(u, _mm256_set1_epi32((int)0x80000000u)), sub);
    return _mm256_castsi256_ps(r);
}

/* (a, b) = elements 0..7, 8..15 -> odd (1, 3, ..., 15) and even (0, 2, ..., 14). */
AI void deinterleave(__m256 a, __m256 b, __m256 *o, __m256 *e) {
    *o = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))),
                                                _MM_SHUFFLE(3, 1, 2, 0)));
    *e = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))),
                                                _MM_SHUFFLE(3, 1, 2, 0)));
}

/* Elements 16h .. 16h+15 of unit u of a weight row (whole units only: the caller copies a
 * partial last unit into a zero-padded buffer) as (odd, even) f32 for lanes 8h .. 8h+7. */
AI void w_oe8(qvlm_dtype wt, int emu, const uint8_t *row, int64_t u, int h, __m256 *o, __m256 *e) {
    __m256 a, b;
    if (wt == QVLM_DTYPE_BF16) {
        /* dword = even | odd << 16 */
        __m256i v = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + u * QVLM_MM_UNIT + 16 * h));
        *o = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xffff0000u)));
        *e = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        return;
    } else if (wt == QVLM_DTYPE_F32) {
        const float *p = (const float *)row + u * QVLM_MM_UNIT + 16 * h;
        a = _mm256_loadu_ps(p);
        b = _mm256_loadu_ps(p + 8);
    } else if (wt == QVLM_DTYPE_F16) {
        const uint16_t *p = (const uint16_t *)row + u * QVLM_MM_UNIT + 16 * h;
        a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8)));
    } else { /* Q8_0: scale * q, exact */
        const uint8_t *blk = row + u * 34;
        uint16_t hs;
        memcpy(&hs, blk, 2);
        __m256 s = _mm256_set1_ps(_cvtsh_ss(hs));
        __m128i q = _mm_loadu_si128((const __m128i *)(blk + 2 + 16 * h));
        a = _mm256_mul_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
        b = _mm256_mul_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8))));
    }
    if (emu) {
        a = round_bf16(a);
        b = round_bf16(b);
    }
    deinterleave(a, b, o, e);
}

/* ---- reduction and store ----------------------------------------------------------------------- */

/* Where a tile's outputs go: y[t*ldy + rows[j]] (+ bias[rows[j]]) for t < nt, j < nj. */
typedef struct tile_out {
    float *y; /* the first token's output row */
    int64_t ldy;
    const float *bias; /* [d] or NULL */
    int64_t rows[4];   /* output columns; past nj, copies of a valid one */
    int nt, nj;
} tile_out;

/* Scalar twin: for w in 8,4,2,1: acc[l] += acc[l + w] (l < w). */
AI float reduce16(__m256 lo, __m256 hi) {
    __m256 s8 = _mm256_add_ps(lo, hi);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}

AI void finish(const int T, const int J, __m256 acc[2][4][2], const tile_out *o) {
    for (int t = 0; t < T; t++)
        for (int j = 0; j < J; j++) {
            if (t >= o->nt || j >= o->nj) continue;
            float s = reduce16(acc[t][j][0], acc[t][j][1]);
            int64_t r = o->rows[j];
            o->y[t * o->ldy + r] = o->bias ? s + o->bias[r] : s; /* an SSE add: follows MXCSR like the rest */
        }
}

/* ---- micro-kernels ------------------------------------------------------------------------------
 * acc[t][j][h] for T tokens, J rows, lane halves h, then reduced and stored. Scalar twin per output:
 *     acc[l] = fma(x[32u+2l+1], w[32u+2l+1], acc[l]); acc[l] = fma(x[32u+2l], w[32u+2l], acc[l]);
 * pn: panel with rows 4 apart (see matmul_impl.h), already offset to the first row. Accumulators
 * and pointers live in locals, so nothing is stored inside the loop. */
AI void step(const int T, const int J, qvlm_dtype wt, int emu, const int panel, const float *const *xr,
             const uint8_t *const *wr, const float *pn, int64_t u, __m256 acc[2][4][2]) {
    if (panel) {
        /* Odd products of every output, then even ones (still odd before even for each
         * accumulator): 8 accumulators + 2 x + 2 w registers, so nothing is loaded twice. */
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++)
#pragma GCC unroll 2
            for (int par = 0; par < 2; par++) {
                __m256 xv[2], wv[4];
#pragma GCC unroll 2
                for (int t = 0; t < T; t++) {
                    xv[t] = _mm256_loadu_ps(xr[t] + u * QVLM_MM_X_UNIT_STRIDE + 16 * par + 8 * h);
                    __asm__("" : "+x"(xv[t]));
                }
#pragma GCC unroll 4
                for (int j = 0; j < J; j++) {
                    wv[j] = _mm256_loadu_ps(pn + (u * 4 + j) * QVLM_MM_UNIT + 16 * par + 8 * h);
                    /* keep x and w in registers: GCC folds such loads into every FMA that uses
                     * them, which doubles the loads of this load-bound loop */
                    __asm__("" : "+x"(wv[j]));
                }
#pragma GCC unroll 4
                for (int j = 0; j < J; j++)
#pragma GCC unroll 2
                    for (int t = 0; t < T; t++) acc[t][j][h] = _mm256_fmadd_ps(xv[t], wv[j], acc[t][j][h]);
            }
        return;
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m256 xo[2], xe[2];
#pragma GCC unroll 2
        for (int t = 0; t < T; t++) {
            xo[t] = _mm256_loadu_ps(xr[t] + u * QVLM_MM_X_UNIT_STRIDE + 8 * h);
            xe[t] = _mm256_loadu_ps(xr[t] + u * QVLM_MM_X_UNIT_STRIDE + 16 + 8 * h);
        }
#pragma GCC unroll 4
        for (int j = 0; j < J; j++) {
            __m256 wo, we;
            w_oe8(wt, emu, wr[j], u, h, &wo, &we);
#pragma GCC unroll 2
            for (int t = 0; t < T; t++) acc[t][j][h] = _mm256_fmadd_ps(xo[t], wo, acc[t][j][h]);
#pragma GCC unroll 2
            for (int t = 0; t < T; t++) acc[t][j][h] = _mm256_fmadd_ps(xe[t], we, acc[t][j][h]);
        }
    }
}

AI void tile(const int T, const int J, qvlm_dtype wt, int emu, const int panel, const float *const *xr_in,
             const uint8_t *const *wr_in, const float *pn, int64_t nu, int tail, const tile_out *o) {
    const float *xr[2] = {xr_in[0], xr_in[1]};
    const uint8_t *wr[4] = {0};
    if (!panel) wr[0] = wr_in[0], wr[1] = wr_in[1], wr[2] = wr_in[2], wr[3] = wr_in[3];
    __m256 acc[2][4][2];
    for (int t = 0; t < 2; t++)
        for (int j = 0; j < 4; j++) acc[t][j][0] = acc[t][j][1] = _mm256_setzero_ps();
    int64_t nfull = panel || tail == QVLM_MM_UNIT ? nu : nu - 1;
    for (int64_t u = 0; u < nfull; u++) step(T, J, wt, emu, panel, xr, wr, pn, u, acc);
    if (!panel && nfull < nu) {
        /* The partial last unit of stored rows: copy it into zeroed buffers (AVX2 has no
         * masked 16-bit loads), so the loaders see whole units. Q8_0 never gets here. */
        size_t esz = qvlm_dtype_size(wt), nb = (size_t)tail * esz;
        uint8_t buf[4][QVLM_MM_UNIT * sizeof(float)];
        const uint8_t *br[4];
        for (int j = 0; j < J; j++) {
            memset(buf[j], 0, sizeof(buf[j]));
            memcpy(buf[j], wr[j] + (size_t)(nu - 1) * QVLM_MM_UNIT * esz, nb);
            br[j] = buf[j];
        }
        /* x is padded; shift it so unit 0 of the call is its last unit */
        const float *xl[2];
        for (int t = 0; t < T; t++) xl[t] = xr[t] + (nu - 1) * QVLM_MM_X_UNIT_STRIDE;
        step(T, J, wt, emu, 0, xl, br, NULL, 0, acc);
    }
    finish(T, J, acc, o);
}

typedef void (*tile_fn)(const float *const *xr, const uint8_t *const *wr, const float *pn, int64_t nu, int tail,
                        const tile_out *o);

/* T, J, the dtype, EMU and PANEL are literals: each instantiation folds its loaders. */
#define DEF_TILE(NAME, T, J, WT, EMU, PANEL)                                                                \
    static void NAME(const float *const *xr, const uint8_t *const *wr, const float *pn, int64_t nu, int tail, \
                     const tile_out *o) {                                                                    \
        tile(T, J, WT, EMU, PANEL, xr, wr, pn, nu, tail, o);                                                \
    }

DEF_TILE(t14_f32, 1, 4, QVLM_DTYPE_F32, 0, 0)
DEF_TILE(t22_f32, 2, 2, QVLM_DTYPE_F32, 0, 0)
DEF_TILE(t14_f16, 1, 4, QVLM_DTYPE_F16, 0, 0)
DEF_TILE(t22_f16, 2, 2, QVLM_DTYPE_F16, 0, 0)
DEF_TILE(t14_bf16, 1, 4, QVLM_DTYPE_BF16, 0, 0)
DEF_TILE(t22_bf16, 2, 2, QVLM_DTYPE_BF16, 0, 0)
DEF_TILE(t14_q8, 1, 4, QVLM_DTYPE_Q8_0, 0, 0)
DEF_TILE(t22_q8, 2, 2, QVLM_DTYPE_Q8_0, 0, 0)
DEF_TILE(e14_f32, 1, 4, QVLM_DTYPE_F32, 1, 0)
DEF_TILE(e22_f32, 2, 2, QVLM_DTYPE_F32, 1, 0)
DEF_TILE(e14_f16, 1, 4, QVLM_DTYPE_F16, 1, 0)
DEF_TILE(e22_f16, 2, 2, QVLM_DTYPE_F16, 1, 0)
DEF_TILE(e14_q8, 1, 4, QVLM_DTYPE_Q8_0, 1, 0)
DEF_TILE(e22_q8, 2, 2, QVLM_DTYPE_Q8_0, 1, 0)
DEF_TILE(t22_panel, 2, 2, QVLM_DTYPE_F32, 0, 1)

static tile_fn direct_fn(qvlm_mm_mode mode, qvlm_dtype wt, int one) {
    int emu = mode == QVLM_MM_EMU;
    switch (wt) {
    case QVLM_DTYPE_F32: return emu ? (one ? e14_f32 : e22_f32) : (one ? t14_f32 : t22_f32);
    case QVLM_DTYPE_F16: return emu ? (one ? e14_f16 : e22_f16) : (one ? t14_f16 : t22_f16);
    case QVLM_DTYPE_Q8_0: return emu ? (one ? e14_q8 : e22_q8) : (one ? t14_q8 : t22_q8);
    default: return one ? t14_bf16 : t22_bf16; /* bf16 weights need no rounding in EMU */
    }
}

/* ---- packing ------------------------------------------------------------------------------------ */

void qvlm_mm_pack_x_avx2(const qvlm_mm_ctx *c, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
        const float *xs = c->x + t * c->ldx;
        float *dst = (float *)qvlm_mm_x_at(c, t);
        for (int64_t u = 0; u < c->nu; u++) {
            const float *src = xs + u * QVLM_MM_UNIT;
            float buf[QVLM_MM_UNIT];
            if (u == c->nu - 1 && c->tail < QVLM_MM_UNIT) {
                memset(buf, 0, sizeof(buf));
                memcpy(buf, src, (size_t)c->tail * sizeof(float));
                src = buf;
            }
            for (int h = 0; h < 2; h++) {
                __m256 a = _mm256_loadu_ps(src + 16 * h), b = _mm256_loadu_ps(src + 16 * h + 8), o, e;
                if (c->mode == QVLM_MM_EMU) {
                    a = round_bf16(a);
                    b = round_bf16(b);
                }
                deinterleave(a, b, &o, &e);
                _mm256_storeu_ps(dst + u * QVLM_MM_X_UNIT_STRIDE + 8 * h, o);
                _mm256_storeu_ps(dst + u * QVLM_MM_X_UNIT_STRIDE + 16 + 8 * h, e);
            }
        }
    }
}

static void pack_panels(const qvlm_mm_ctx *c, int64_t j0, int64_t nr, float *dst) {
    int emu = c->mode == QVLM_MM_EMU;
    size_t esz = c->wt == QVLM_DTYPE_Q8_0 ? 0 : qvlm_dtype_size(c->wt);
    int64_t n_panels = (nr + 3) / 4;
    for (int64_t p = 0; p < n_panels; p++)
        for (int r = 0; r < 4; r++) {
            int64_t j = p * 4 + r;
            const uint8_t *row = c->w + (size_t)(j0 + j) * c->w_row_bytes;
            for (int64_t u = 0; u < c->nu; u++) {
                float *out = dst + ((p * c->nu + u) * 4 + r) * QVLM_MM_UNIT;
                if (j >= nr) {
                    memset(out, 0, QVLM_MM_UNIT * sizeof(float));
                    continue;
                }
                const uint8_t *src = row;
                int64_t su = u;
                uint8_t buf[QVLM_MM_UNIT * sizeof(float)];
                if (u == c->nu - 1 && c->tail < QVLM_MM_UNIT) {
                    memset(buf, 0, sizeof(buf));
                    memcpy(buf, row + (size_t)u * QVLM_MM_UNIT * esz, (size_t)c->tail * esz);
                    src = buf;
                    su = 0;
                }
                for (int h = 0; h < 2; h++) {
                    __m256 o, e;
                    switch (c->wt) { /* constant dtypes let each loader inline its own code */
                    case QVLM_DTYPE_F32: w_oe8(QVLM_DTYPE_F32, emu, src, su, h, &o, &e); break;
                    case QVLM_DTYPE_F16: w_oe8(QVLM_DTYPE_F16, emu, src, su, h, &o, &e); break;
                    case QVLM_DTYPE_Q8_0: w_oe8(QVLM_DTYPE_Q8_0, emu, src, su, h, &o, &e); break;
                    default: w_oe8(QVLM_DTYPE_BF16, 0, src, su, h, &o, &e); break;
                    }
                    _mm256_storeu_ps(out + 8 * h, o);
                    _mm256_storeu_ps(out + 16 + 8 * h, e);
                }
            }
        }
}

/* ---- compute ------------------------------------------------------------------------------------ */

static const float *x_row(const qvlm_mm_ctx *c, int64_t t) {
    return (const float *)qvlm_mm_x_at(c, t);
}

/* Decode: the thread's rows are cut into J contiguous streams and a tile takes one row of
 * each, so memory sees J long sequential streams (see the AVX-512 twin for why). */
static void compute_direct(const qvlm_mm_ctx *c, int64_t t0, int64_t t1, int64_t j0, int64_t j1) {
    int one = t1 - t0 == 1;
    tile_fn fn = direct_fn(c->mode, c->wt, one);
    int T = one ? 1 : 2, J = one ? 4 : 2;
    int64_t q = (j1 - j0 + J - 1) / J; /* rows per stream */
    for (int64_t t = t0; t < t1; t += T) {
        tile_out o = {.y = c->y + t * c->ldy, .ldy = c->ldy, .bias = c->bias};
        o.nt = t1 - t < T ? (int)(t1 - t) : T;
        const float *xr[2] = {x_row(c, t), x_row(c, t + o.nt - 1)};
        for (int64_t i = 0; i < q; i++) {
            o.nj = 0;
            for (int r = 0; r < J; r++)
                if (j0 + r * q + i < j1) o.rows[o.nj++] = j0 + r * q + i;
            const uint8_t *wr[4];
            for (int r = 0; r < 4; r++) wr[r] = c->w + (size_t)o.rows[r < o.nj ? r : o.nj - 1] * c->w_row_bytes;
            fn(xr, wr, NULL, c->nu, c->tail, &o);
        }
    }
}

static void compute_panels(const qvlm_mm_ctx *c, int64_t t0, int64_t t1, int64_t j0, int64_t j1, float *scratch) {
    size_t panel_floats = (size_t)c->nu * 4 * QVLM_MM_UNIT;
    for (int64_t jb = j0; jb < j1; jb += c->jb_rows) {
        int64_t nr = j1 - jb < c->jb_rows ? j1 - jb : c->jb_rows;
        pack_panels(c, jb, nr, scratch);
        for (int64_t t = t0; t < t1; t += 2) {
            tile_out o = {.y = c->y + t * c->ldy, .ldy = c->ldy, .bias = c->bias};
            o.nt = t1 - t < 2 ? (int)(t1 - t) : 2;
            const float *xr[2] = {x_row(c, t), x_row(c, t + o.nt - 1)};
            for (int64_t j = jb; j < jb + nr; j += 2) { /* two rows of a 4-row panel at a time */
                o.rows[0] = j;
                o.rows[1] = j + 1;
                o.nj = jb + nr - j < 2 ? 1 : 2;
                int64_t p = (j - jb) / 4, half = (j - jb) % 4 / 2;
                t22_panel(xr, NULL, scratch + p * panel_floats + half * 2 * QVLM_MM_UNIT, c->nu, QVLM_MM_UNIT, &o);
            }
        }
    }
}

void qvlm_mm_compute_avx2(const qvlm_mm_ctx *c, int64_t t0, int64_t t1, int64_t j0, int64_t j1, void *scratch) {
    unsigned csr = _mm_getcsr();
    if (c->mode == QVLM_MM_EMU) _mm_setcsr(csr | MXCSR_FTZ_DAZ); /* see the AVX-512 twin */
    if (t1 - t0 <= QVLM_MM_DIRECT_MAX) compute_direct(c, t0, t1, j0, j1);
    else compute_panels(c, t0, t1, j0, j1, scratch);
    if (c->mode == QVLM_MM_EMU) _mm_setcsr(csr);
}

/* ---- peak probe ---------------------------------------------------------------------------------- */

double qvlm_mm_peak_avx2(int64_t iters) {
    /* Distinct starting values: identical chains would be merged by the compiler. */
    volatile float seed = 1e-3f;
    __m256 a0 = _mm256_set1_ps(seed * 1), a1 = _mm256_set1_ps(seed * 2), a2 = _mm256_set1_ps(seed * 3), a3 = _mm256_set1_ps(seed * 4),
           a4 = _mm256_set1_ps(seed * 5), a5 = _mm256_set1_ps(seed * 6), a6 = _mm256_set1_ps(seed * 7), a7 = _mm256_set1_ps(seed * 8),
           a8 = _mm256_set1_ps(seed * 9), a9 = _mm256_set1_ps(seed * 10), a10 = _mm256_set1_ps(seed * 11), a11 = _mm256_set1_ps(seed * 12);
    __m256 m = _mm256_set1_ps(seed), c = _mm256_set1_ps(seed * seed);
    for (int64_t i = 0; i < iters; i++) {
        a0 = _mm256_fmadd_ps(a0, m, c); a1 = _mm256_fmadd_ps(a1, m, c); a2 = _mm256_fmadd_ps(a2, m, c);
        a3 = _mm256_fmadd_ps(a3, m, c); a4 = _mm256_fmadd_ps(a4, m, c); a5 = _mm256_fmadd_ps(a5, m, c);
        a6 = _mm256_fmadd_ps(a6, m, c); a7 = _mm256_fmadd_ps(a7, m, c); a8 = _mm256_fmadd_ps(a8, m, c);
        a9 = _mm256_fmadd_ps(a9, m, c); a10 = _mm256_fmadd_ps(a10, m, c); a11 = _mm256_fmadd_ps(a11, m, c);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    volatile float sink = lanes[0] + lanes[7];
    (void)sink;
    return (double)iters * 12 * 8 * 2;
}

uint64_t qvlm_mm_read_avx2(const void *p, size_t bytes) {
    size_t q = bytes / 4;
    const uint8_t *s0 = p, *s1 = s0 + q, *s2 = s1 + q, *s3 = s2 + q;
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i + 64 <= q; i += 64) {
        a = _mm256_xor_si256(a, _mm256_xor_si256(_mm256_load_si256((const __m256i *)(s0 + i)),
                                                 _mm256_load_si256((const __m256i *)(s0 + i + 32))));
        b = _mm256_xor_si256(b, _mm256_xor_si256(_mm256_load_si256((const __m256i *)(s1 + i)),
                                                 _mm256_load_si256((const __m256i *)(s1 + i + 32))));
        c = _mm256_xor_si256(c, _mm256_xor_si256(_mm256_load_si256((const __m256i *)(s2 + i)),
                                                 _mm256_load_si256((const __m256i *)(s2 + i + 32))));
        d = _mm256_xor_si256(d, _mm256_xor_si256(_mm256_load_si256((const __m256i *)(s3 + i)),
                                                 _mm256_load_si256((const __m256i *)(s3 + i + 32))));
    }
    __m256i x = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
    return (uint64_t)_mm256_extract_epi64(x, 0) ^ (uint64_t)_mm256_extract_epi64(x, 3);
}

#endif /* __x86_64__ */
