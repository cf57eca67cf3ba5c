/* matmul_i8_kernels.h - the I8 matrix products (Q8_0 weights at BF16 precision), written once
 * and compiled twice: by matmul_i8_avx512.c with I8_VNNI 1 (vpdpbusd) and by matmul_i8_avx2.c
 * with I8_VNNI 0 (vpmaddubsw + vpmaddwd).
 *
 * The numbers (cpu.h): activations are quantised per block of 32 to int8 with an f32 scale; the
 * dot of a block is an exact int32 sum D; each output folds its blocks in order,
 * acc = fma(f32(dw) * dx, (float)D, acc). Integer sums are exact whatever the order, so the
 * shapes of work below, and the scalar reference, agree bit for bit.
 *
 * The weights are Q8_0X8 panels (quant.h): 8 rows interleaved in groups of 4 elements, so a
 * broadcast of 4 activation bytes and one vpdpbusd give 4 products of each of 8 rows, a lane
 * per row, and the block's 8 dots D come out of 8 such steps with no reduction. Q8_0X8 weights
 * (what `--quant q8_0` makes on the CPU at BF16 precision) are read as stored; Q8_0 rows are
 * first packed into panels in the thread's scratch, a block of rows at a time.
 *  - direct (a thread with <= 4 tokens: decode): one token takes one panel from each of 4
 *    sequential streams per step (the prefetchers follow 4 long streams); 2-4 tokens take
 *    I8_PANELS consecutive panels;
 *  - blocked (prefill): panels of jb_rows rows stay in L2 while every group of 4 tokens
 *    passes over them; tiles are 4 tokens x I8_PANELS panels.
 * The weights are read at 1.06 bytes per element, half the bytes of bf16, with ~3 instructions
 * per 32 products where widening int8 to bf16 took ~10: decode becomes memory-bound again.
 */
#if defined(__x86_64__)
#include <float.h>
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/matmul_impl.h"
#include "kernels/cpu/quant.h"

#define AI static inline __attribute__((always_inline))

#if I8_VNNI
#define I8_FN(name) name##_avx512
#define I8_PANELS 2 /* 32 ymm registers: 4 tokens x 2 panels of int and float sums */
#else
#define I8_FN(name) name##_avx2
#define I8_PANELS 1 /* 16 ymm registers */
#endif

/* ---- activations ------------------------------------------------------------------------------ */

/* One block of 32: the SIMD twin of qvlm_ref_quantize_x_i8 (same IEEE operations, so the same
 * bits): amax over finite values, d = amax / 127, q = rint(clamp(x * (127 / amax))). */
AI void quantize_block(const float *x, int8_t *q, float *d, int32_t *corr) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4], amax = _mm256_setzero_ps();
    int bad = 0;
    for (int i = 0; i < 4; i++) {
        v[i] = _mm256_loadu_ps(x + 8 * i);
        __m256 a = _mm256_andnot_ps(sign, v[i]);
        bad |= _mm256_movemask_ps(_mm256_cmp_ps(a, _mm256_set1_ps(FLT_MAX), _CMP_NLE_UQ)); /* inf, NaN */
        amax = _mm256_max_ps(amax, a);
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    float am = _mm_cvtss_f32(m4);
    if (bad || am < 0x1p-100f) {
        memset(q, 0, 32);
        *d = bad ? __builtin_nanf("") : 0.0f;
        *corr = 0;
        return;
    }
    *d = am / 127.0f;
    __m256 id = _mm256_set1_ps(127.0f / am), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    __m256i qi[4];
    for (int i = 0; i < 4; i++) /* the clamp first: x * id may round past 127 by an ulp */
        qi[i] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v[i], id), lo), hi));
    /* 32 int32 -> 32 int8 (packs work per 128-bit lane: undo the interleave) */
    __m256i w01 = _mm256_packs_epi32(qi[0], qi[1]), w23 = _mm256_packs_epi32(qi[2], qi[3]);
    __m256i b = _mm256_packs_epi16(w01, w23);
    b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)q, b);
    /* sum of q: |q| <= 127, so 16-bit pair sums cannot overflow */
    __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), b);
    __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    *corr = -128 * _mm_cvtsi128_si32(s);
}

void I8_FN(qvlm_mm_i8_pack_x)(const qvlm_mm_ctx *c, int64_t t0, int64_t t1) {
    int64_t nb = c->k / 32;
    for (int64_t t = t0; t < t1; t++) {
        const float *xs = c->x + t * c->ldx;
        uint8_t *dst = qvlm_mm_i8_x_at(c, t);
        float *d = (float *)(dst + c->k);
        int32_t *corr = (int32_t *)(d + nb);
        for (int64_t b = 0; b < nb; b++) quantize_block(xs + 32 * b, (int8_t *)dst + 32 * b, d + b, corr + b);
    }
}

/* ---- integer dots ------------------------------------------------------------------------------ */

/* acc += 4 products per row of a panel group w (8 rows x 4 bytes, each + 128) and 4
 * activations xb (broadcast to every dword). VNNI: vpdpbusd takes the weights as uint8, so
 * the sums carry 128 * (sum of x) too; the caller starts them at corr to cancel it. AVX2:
 * back to int8, then |x| times w with x's sign, exact (|pair| <= 2 * 127^2 < 2^15). */
AI __m256i group_madd(__m256i acc, __m256i w, __m256i xb) {
#if I8_VNNI
    return _mm256_dpbusd_epi32(acc, w, xb);
#else
    __m256i ws = _mm256_xor_si256(w, _mm256_set1_epi8((char)0x80));
    __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(xb), _mm256_sign_epi8(ws, xb));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
#endif
}

/* ---- tiles ------------------------------------------------------------------------------------------ */

/* out[p][t][r] = the unbiased output of token t (xr[t]: packed) and row r of panel pn[p], for
 * T tokens and P panels (both literals: the sums stay in registers). */
AI void tile(const int T, const int P, const uint8_t *const *xr, const uint8_t *const *pn, int64_t nb,
             float out[4][4][8]) {
    __m256 acc[4][4];
    const float *dx[4];
    for (int t = 0; t < T; t++) dx[t] = (const float *)(xr[t] + nb * 32);
    for (int p = 0; p < P; p++)
        for (int t = 0; t < T; t++) acc[p][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256i ai[4][4];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
#if I8_VNNI
            __m256i c0 = _mm256_set1_epi32(((const int32_t *)(dx[t] + nb))[b]);
#else
            __m256i c0 = _mm256_setzero_si256();
#endif
#pragma GCC unroll 4
            for (int p = 0; p < P; p++) ai[p][t] = c0;
        }
        const uint8_t *blk[4];
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) blk[p] = pn[p] + (size_t)b * QVLM_Q8_0X8_BLOCK_BYTES;
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            __m256i w[4];
#pragma GCC unroll 4
            for (int p = 0; p < P; p++) w[p] = _mm256_loadu_si256((const __m256i *)(blk[p] + 16 + 32 * g));
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                int32_t x4;
                memcpy(&x4, xr[t] + 32 * b + 4 * g, 4);
                __m256i xb = _mm256_set1_epi32(x4);
#pragma GCC unroll 4
                for (int p = 0; p < P; p++) ai[p][t] = group_madd(ai[p][t], w[p], xb);
            }
        }
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) {
            __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk[p]));
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                acc[p][t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(dx[t][b])), _mm256_cvtepi32_ps(ai[p][t]), acc[p][t]);
        }
    }
    for (int p = 0; p < P; p++)
        for (int t = 0; t < T; t++) _mm256_storeu_ps(out[p][t], acc[p][t]);
}

typedef void (*tile_fn)(const uint8_t *const *xr, const uint8_t *const *pn, int64_t nb, float out[4][4][8]);
static void tile_1x4(const uint8_t *const *xr, const uint8_t *const *pn, int64_t nb, float out[4][4][8]) {
    tile(1, 4, xr, pn, nb, out);
}
static void tile_4xp(const uint8_t *const *xr, const uint8_t *const *pn, int64_t nb, float out[4][4][8]) {
    tile(4, I8_PANELS, xr, pn, nb, out);
}

/* ---- walking the panels ---------------------------------------------------------------------------- */

/* Panels [p0, p1) of a Q8_0X8 matrix at base: panel p holds rows row0 + 8p .. + 7, of which
 * those < j1 are stored. */
typedef struct panels {
    const uint8_t *base;
    int64_t nb, row0, j1;
} panels;

static const uint8_t *panel_at(const panels *pp, int64_t p) {
    return pp->base + (size_t)p * (size_t)pp->nb * QVLM_Q8_0X8_BLOCK_BYTES;
}

static void store_panel(const qvlm_mm_ctx *c, const panels *pp, int64_t p, int64_t t, int nt, float out[4][8]) {
    int64_t j0 = pp->row0 + 8 * p;
    int nr = pp->j1 - j0 < 8 ? (int)(pp->j1 - j0) : 8;
    for (int i = 0; i < nt; i++)
        for (int r = 0; r < nr; r++)
            c->y[(t + i) * c->ldy + j0 + r] = c->bias ? out[i][r] + c->bias[j0 + r] : out[i][r];
}

/* x rows for tokens t..t+3, the ones past t1 repeating the last (their outputs are dropped). */
static void x_rows(const qvlm_mm_ctx *c, int64_t t, int64_t t1, const uint8_t *xr[4]) {
    for (int i = 0; i < 4; i++) xr[i] = qvlm_mm_i8_x_at(c, t + i < t1 ? t + i : t1 - 1);
}

/* Tokens [t0, t1) (at most 4) x panels [p0, p1), each weight byte read once. */
static void run_direct(const qvlm_mm_ctx *c, const panels *pp, int64_t p0, int64_t p1, int64_t t0, int64_t t1) {
    const uint8_t *xr[4], *pn[4];
    x_rows(c, t0, t1, xr);
    float out[4][4][8];
    if (t1 - t0 == 1) { /* 4 streams: panel i of each quarter */
        int64_t q = (p1 - p0 + 3) / 4;
        for (int64_t i = 0; i < q; i++) {
            int64_t ps[4];
            int np = 0;
            for (int s = 0; s < 4; s++)
                if (p0 + s * q + i < p1) ps[np++] = p0 + s * q + i;
            for (int s = 0; s < 4; s++) pn[s] = panel_at(pp, ps[s < np ? s : np - 1]);
            tile_1x4(xr, pn, pp->nb, out);
            for (int s = 0; s < np; s++) store_panel(c, pp, ps[s], t0, 1, out[s]);
        }
        return;
    }
    for (int64_t p = p0; p < p1; p += I8_PANELS) {
        for (int s = 0; s < I8_PANELS; s++) pn[s] = panel_at(pp, p + s < p1 ? p + s : p1 - 1);
        tile_4xp(xr, pn, pp->nb, out);
        for (int s = 0; s < I8_PANELS && p + s < p1; s++) store_panel(c, pp, p + s, t0, (int)(t1 - t0), out[s]);
    }
}

/* Tokens [t0, t1) x panels [p0, p1): L2-sized blocks of panels, every token group over each. */
static void run_blocked(const qvlm_mm_ctx *c, const panels *pp, int64_t p0, int64_t p1, int64_t t0, int64_t t1) {
    int64_t pb = c->jb_rows / 8;
    float out[4][4][8];
    for (int64_t q0 = p0; q0 < p1; q0 += pb) {
        int64_t q1 = q0 + pb < p1 ? q0 + pb : p1;
        for (int64_t t = t0; t < t1; t += 4) {
            const uint8_t *xr[4], *pn[4];
            x_rows(c, t, t1, xr);
            int nt = t1 - t < 4 ? (int)(t1 - t) : 4;
            for (int64_t p = q0; p < q1; p += I8_PANELS) {
                for (int s = 0; s < I8_PANELS; s++) pn[s] = panel_at(pp, p + s < q1 ? p + s : q1 - 1);
                tile_4xp(xr, pn, pp->nb, out);
                for (int s = 0; s < I8_PANELS && p + s < q1; s++) store_panel(c, pp, p + s, t, nt, out[s]);
            }
        }
    }
}

static void run(const qvlm_mm_ctx *c, const panels *pp, int64_t p0, int64_t p1, int64_t t0, int64_t t1) {
    if (t1 - t0 <= QVLM_MM_DIRECT_MAX) run_direct(c, pp, p0, p1, t0, t1);
    else run_blocked(c, pp, p0, p1, t0, t1);
}

void I8_FN(qvlm_mm_i8_compute)(const qvlm_mm_ctx *c, int64_t t0, int64_t t1, int64_t j0, int64_t j1, void *scratch) {
    int64_t nb = c->k / 32;
    if (c->wt == QVLM_DTYPE_Q8_0X8) { /* j0 is a multiple of 16 (matmul.c's split points) */
        panels pp = {c->w, nb, 0, j1};
        run(c, &pp, j0 / 8, (j1 + 7) / 8, t0, t1);
        return;
    }
    /* Q8_0 rows: pack a block of rows into panels in the scratch, then the same walk */
    for (int64_t jb = j0; jb < j1; jb += c->jb_rows) {
        int64_t nr = j1 - jb < c->jb_rows ? j1 - jb : c->jb_rows, np = (nr + 7) / 8;
        for (int64_t p = 0; p < np; p++) {
            const uint8_t *rows[8];
            for (int r = 0; r < 8; r++) rows[r] = p * 8 + r < nr ? c->w + (size_t)(jb + p * 8 + r) * c->w_row_bytes : NULL;
            qvlm_q8_0x8_pack_panel((uint8_t *)scratch + (size_t)p * nb * QVLM_Q8_0X8_BLOCK_BYTES, rows, nb);
        }
        panels pp = {scratch, nb, jb, jb + nr};
        run(c, &pp, 0, np, t0, t1);
    }
}

/* ---- peak probe ------------------------------------------------------------------------------------ */

double I8_FN(qvlm_mm_i8_peak)(int64_t iters) {
    /* The kernels' own step (group_madd: 32 int8 multiply-adds) on 12 independent sums. */
    volatile int seed = 3;
    const __m256i w = _mm256_set1_epi8((char)(seed + 128)), xb = _mm256_set1_epi8((char)seed);
    __m256i a[12];
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_epi32(seed + i);
    for (int64_t it = 0; it < iters; it++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = group_madd(a[i], w, xb);
    __m256i s = a[0];
    for (int i = 1; i < 12; i++) s = _mm256_xor_si256(s, a[i]);
    volatile int sink = _mm256_extract_epi32(s, 0);
    (void)sink;
    return (double)iters * 12 * 32 * 2;
}

#endif /* __x86_64__ */
