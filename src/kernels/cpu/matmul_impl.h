/* matmul_impl.h - internals shared by the matrix-product kernels of each ISA.
 *
 * The numbers are defined in cpu.h (summation order, the two precisions) and spelled out by
 * the scalar reference in ref_matmul.c. This header fixes the data layouts the ISA files
 * share with the dispatcher in matmul.c:
 *
 *  unit     32 consecutive elements of k; lane l (0..15) of an output's accumulator takes
 *           elements 2l+1 then 2l of each unit. k is padded with zeros to nu units.
 *  packed x the tokens of the current chunk in groups of 4, unit-interleaved: unit u of
 *           chunk token r at element ((r/4 * nu + u) * 4 + r%4) * 32, so a micro-kernel's 4
 *           tokens are one stream (4 separate rows ran ~35% slower here), with per unit:
 *             OE     (modes F32, EMU): 16 f32 odd elements then 16 f32 even elements
 *                    (EMU: already rounded to bf16, kept as f32 bit patterns);
 *             NATIVE (vdpbf16ps): 32 bf16 in natural order.
 *  panel    weight rows packed for the GEMM, 4 rows per panel, zero rows past the end:
 *           panel p, unit u, row r at element ((p*nu + u)*4 + r)*32, in the same OE / NATIVE
 *           layout as x (so the micro-kernel needs no conversion).
 */
#ifndef QVLM_KERNELS_CPU_MATMUL_IMPL_H
#define QVLM_KERNELS_CPU_MATMUL_IMPL_H

#include "kernels/cpu/cpu.h"

#define QVLM_MM_UNIT 32       /* elements of k per unit (16 lanes x a pair) */
#define QVLM_MM_PANEL_ROWS 4  /* weight rows per panel = micro-kernel rows */
#define QVLM_MM_DIRECT_MAX 4  /* a thread with <= this many tokens reads weights as stored */
#define QVLM_MM_CHUNK 256     /* tokens per pass over the weights (bounds the packed x) */
#define QVLM_MM_PANEL_TARGET_BYTES (192 * 1024) /* one thread's panel block: L2-resident */

typedef enum qvlm_mm_mode {
    QVLM_MM_SCALAR = 0, /* the reference, both precisions */
    QVLM_MM_F32,        /* F32 precision: f32 FMA, OE layout */
    QVLM_MM_EMU,        /* BF16 precision emulated with f32 FMA under MXCSR.FTZ|DAZ, OE layout */
    QVLM_MM_NATIVE,     /* BF16 precision with vdpbf16ps, NATIVE layout */
    QVLM_MM_I8,         /* Q8_0 weights at BF16 precision: int8 activations, integer dots
                         * (matmul_i8_*.c; layouts below) */
} qvlm_mm_mode;

/* One matmul call, as the ISA kernels see it. Read-only while the pool runs. */
typedef struct qvlm_mm_ctx {
    qvlm_mm_mode mode;
    qvlm_precision precision;
    float *y;          /* [n][ldy] */
    int64_t ldy;
    const float *x;    /* [n][ldx], the caller's activations */
    int64_t ldx;
    uint8_t *xp;       /* packed x of tokens [t_base, t_base + chunk), layout above */
    size_t xp_elem;    /* bytes per packed element: 4 (OE) or 2 (NATIVE) */
    int64_t t_base;
    const uint8_t *w;  /* [d] rows of w_row_bytes */
    qvlm_dtype wt;
    size_t w_row_bytes;
    const float *bias; /* [d] or NULL */
    int64_t k, d;
    int64_t nu;        /* units: ceil(k / 32) */
    int tail;          /* valid elements of the last unit, 1..32 */
    int64_t jb_rows;   /* weight rows per panel block (multiple of 4; I8: of 16) */
    size_t i8_stride;  /* I8: bytes between tokens of the packed x */
} qvlm_mm_ctx;

/* Unit 0 of chunk token t in the packed x; unit u is u * 4 * 32 elements further. */
static inline uint8_t *qvlm_mm_x_at(const qvlm_mm_ctx *c, int64_t t) {
    int64_t r = t - c->t_base;
    return c->xp + (size_t)(((r / 4) * c->nu * 4 + r % 4) * QVLM_MM_UNIT) * c->xp_elem;
}
#define QVLM_MM_X_UNIT_STRIDE (4 * QVLM_MM_UNIT) /* elements between units of one token */

/* ---- I8 mode (Q8_0 weights at BF16 precision; numbers in cpu.h) ------------------------------------
 * packed x  per token, contiguous, i8_stride = qvlm_mm_i8_stride(k) bytes apart:
 *             q[k] int8 | d[k/32] f32 (block scales) | corr[k/32] int32 (-128 * sum of the
 *             block's q: what turns a VNNI u8 x s8 dot of (q_w + 128) into the signed one)
 * panels    the weights as Q8_0X8 (kernels/cpu/quant.h): 8 rows (= the 8 f32 lanes of a ymm)
 *           interleaved in groups of 4 elements, so one vpdpbusd of a group with the token's
 *           4 elements broadcast adds 4 products to each of 8 rows' sums. Q8_0X8 weights are
 *           read as stored; Q8_0 rows are packed into that layout block by block. */
static inline size_t qvlm_mm_i8_stride(int64_t k) { return ((size_t)k + 8 * (size_t)(k / 32) + 63) & ~(size_t)63; }
static inline uint8_t *qvlm_mm_i8_x_at(const qvlm_mm_ctx *c, int64_t t) {
    return c->xp + (size_t)(t - c->t_base) * c->i8_stride;
}

/* The activation quantiser of I8 mode, the oracle of the SIMD ones: one block of 32 f32 to
 * q[32], its scale *d and *corr (cpu.h). */
void qvlm_ref_quantize_x_i8(const float *x, int8_t *q, float *d, int32_t *corr);

/* Work layout helpers (matmul.c), also used by the tests to size buffers. */
int64_t qvlm_mm_jb_rows(int64_t k, size_t elem_bytes);
size_t qvlm_mm_thread_scratch_bytes(int64_t k);

/* ---- scalar reference (ref_matmul.c): the oracle ---------------------------------------------- */
/* f32 fma with vdpbf16ps' flushes: inputs denormal -> signed zero, result flushed to a signed
 * zero when it is tiny after rounding to 24 bits with an unbounded exponent. */
float qvlm_ref_fma_ftz(float a, float b, float c);
/* RNE to bf16 with f32 subnormals flushed to a signed zero and NaN quietened
 * (vcvtneps2bf16), returned widened to f32. */
float qvlm_ref_round_bf16(float f);
/* Row j of W as the f32 operands of `precision` (F32: exact; BF16: rounded per cpu.h),
 * zero-padded to nu*32 elements. */
void qvlm_ref_weight_operands(float *dst, const void *w, qvlm_dtype wt, int64_t j, int64_t k,
                              qvlm_precision precision);
/* One output: dot of operand rows xo, wo (nu*32 elements each) in the cpu.h order, plus bias
 * (bias_j ignored when has_bias == 0). */
float qvlm_ref_dot(const float *xo, const float *wo, int64_t nu, int has_bias, float bias_j,
                   qvlm_precision precision);
/* Outputs [t0, t1) x [j0, j1); scratch holds 2*nu*32 floats. */
void qvlm_ref_compute(const qvlm_mm_ctx *c, int64_t t0, int64_t t1, int64_t j0, int64_t j1,
                      void *scratch);

/* ---- per-ISA kernels (matmul_avx512.c, matmul_avx2.c) ------------------------------------------
 * pack_x:  packed x rows of tokens [t0, t1) (absolute; chunk-relative row t - t_base).
 * compute: outputs [t0, t1) x [j0, j1); uses the direct path when t1 - t0 <= DIRECT_MAX,
 *          otherwise panels in `scratch` (qvlm_mm_thread_scratch_bytes(k), 64-byte aligned).
 *          Sets and restores MXCSR itself in EMU / NATIVE mode.
 * peak:    register-only multiply-add loop, returns FLOPs done.
 * read:    qvlm_cpu_read_probe with the ISA's loads. */
#if defined(__x86_64__)
void qvlm_mm_pack_x_avx512(const qvlm_mm_ctx *c, int64_t t0, int64_t t1);
void qvlm_mm_compute_avx512(const qvlm_mm_ctx *c, int64_t t0, int64_t t1, int64_t j0, int64_t j1,
                            void *scratch);
double qvlm_mm_peak_avx512(int native_bf16, int64_t iters);
uint64_t qvlm_mm_read_avx512(const void *p, size_t bytes);
void qvlm_mm_pack_x_avx2(const qvlm_mm_ctx *c, int64_t t0, int64_t t1);
void qvlm_mm_compute_avx2(const qvlm_mm_ctx *c, int64_t t0, int64_t t1, int64_t j0, int64_t j1,
                          void *scratch);
double qvlm_mm_peak_avx2(int64_t iters);
uint64_t qvlm_mm_read_avx2(const void *p, size_t bytes);
/* I8 mode: the same contract as pack_x / compute; the AVX-512 pair uses vpdpbusd (AVX512_VNNI,
 * on every CPU with AVX512_BF16), the AVX2 pair vpmaddubsw with the sign trick. Neither touches
 * MXCSR: I8 arithmetic is plain IEEE with the default rounding. */
void qvlm_mm_i8_pack_x_avx512(const qvlm_mm_ctx *c, int64_t t0, int64_t t1);
void qvlm_mm_i8_compute_avx512(const qvlm_mm_ctx *c, int64_t t0, int64_t t1, int64_t j0, int64_t j1,
                               void *scratch);
void qvlm_mm_i8_pack_x_avx2(const qvlm_mm_ctx *c, int64_t t0, int64_t t1);
void qvlm_mm_i8_compute_avx2(const qvlm_mm_ctx *c, int64_t t0, int64_t t1, int64_t j0, int64_t j1,
                             void *scratch);
double qvlm_mm_i8_peak_avx512(int64_t iters);
double qvlm_mm_i8_peak_avx2(int64_t iters);
#endif

#endif /* QVLM_KERNELS_CPU_MATMUL_IMPL_H */
