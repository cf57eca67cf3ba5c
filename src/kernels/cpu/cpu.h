/* cpu.h - CPU kernel entry points shared by the CPU backend.
 *
 * Every kernel here has a scalar reference (ref_*.c, always built, selectable with
 * QVLM_ISA_SCALAR) and optional AVX2 / AVX-512 variants chosen once at start-up.
 *
 * Determinism contract (the cross-turn cache depends on it): every output element is a
 * function of its own inputs only, computed in a fixed order. It must not depend on how
 * many rows are computed together (n = 1 decode vs n = 512 prefill), on the thread count
 * or on the split between threads. Cached and uncached runs then agree bit for bit.
 */
#ifndef QVLM_KERNELS_CPU_H
#define QVLM_KERNELS_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/threads.h"

typedef enum qvlm_isa {
    QVLM_ISA_SCALAR = 0,
    QVLM_ISA_AVX2,        /* AVX2 + FMA + F16C */
    QVLM_ISA_AVX512,      /* AVX-512 F/BW/VL/DQ */
    QVLM_ISA_AVX512_BF16, /* AVX-512 + vdpbf16ps */
} qvlm_isa;

/* How activations meet the weights in matrix products. Both precisions share one summation
 * order (below); they differ in the operands and in the arithmetic.
 *  F32:  activations stay f32; F16/BF16 weights are widened exactly and Q8_0 weights are
 *        dequantised exactly (scale * q fits in 19 bits); every multiply-add is an IEEE f32
 *        fused multiply-add (fmaf), round to nearest even, subnormals kept. The verification
 *        mode: matches transformers' float32 run up to the summation order.
 *  BF16: both operands are rounded to bf16 once: activations with RNE, f32 subnormals
 *        flushed to a signed zero, NaN quietened (vcvtneps2bf16); BF16 weights are used as
 *        stored, F32/F16 weights are rounded the same way. Products and sums then follow
 *        vdpbf16ps: each step is an f32 fma with denormal inputs read as zero and tiny results
 *        (|r| < FLT_MIN after rounding to 24 bits with an unbounded exponent) flushed to a
 *        signed zero; the final reduction and the bias add use the same flush (the kernels
 *        run them with MXCSR.FTZ|DAZ). The fast mode: AVX512_BF16 uses vdpbf16ps; AVX-512 and
 *        AVX2 emulate it bit for bit with f32 FMAs under MXCSR.FTZ|DAZ; the scalar reference
 *        spells the flushes out in C. (This is what vdpbf16ps does on AMD Zen 4, checked case
 *        by case, denormals and the FLT_MIN boundary included, by tests/unit/matmul_test.c on
 *        every CPU that has it.)
 *        Q8_0 weights at BF16 precision (I8) meet int8 activations instead, as llama.cpp's
 *        q8_0 does: each token's x is quantised per block of 32 (k % 32 == 0):
 *            amax = max |x_i|; a block with a non-finite x_i gets d = NaN, q = 0 (its
 *            outputs become NaN), one with amax < 2^-100 gets d = 0, q = 0; otherwise
 *            d = amax / 127, q_i = rint(clamp(x_i * (127 / amax), -127, 127))   (f32, RNE)
 *        and each output folds its blocks in order, in plain IEEE f32 (no flushes):
 *            acc = +0; for each block b: acc = fma(f32(dw_b) * d_b, (float) D_b, acc);
 *            y = bias ? acc + bias : acc
 *        where D_b = sum of q_w * q_x over the block is an exact int32 (|D_b| < 2^24, so the
 *        conversion is exact too). The weights are then read at 1.06 bytes per element with
 *        one integer multiply-add per 4 products (vpdpbusd), where widening them to bf16 cost
 *        ~10 instructions per 32 and made decode compute-bound; the price is the activations'
 *        rounding error, at most d/2 per element (measured on the fixtures: docs/perf.md).
 *
 * Summation order of F32 and BF16 (I8: above), for each output y[t][j] (x, W zero-padded to a
 * multiple of 32 in k):
 *     acc[l] = +0 for the 16 lanes l;
 *     for each unit u of 32 elements, for each lane l, with i = 32u + 2l:
 *         acc[l] = fma(x[i+1], W[j][i+1], acc[l]);   odd element first (vdpbf16ps order)
 *         acc[l] = fma(x[i],   W[j][i],   acc[l]);
 *     s = pairwise: acc[l] += acc[l+8] (l<8), += acc[l+4] (l<4), += acc[l+2], += acc[l+1];
 *     y[t][j] = bias ? s + bias[j] : s.
 * The layout is the one an AVX-512 register of 16 f32 lanes gets from 32 bf16 pairs, so every
 * ISA (AVX-512: one zmm per output; AVX2: two ymm) and the scalar reference agree bit for bit
 * in both precisions, for any n, thread count or split. NaN payloads are not specified. */
typedef enum qvlm_precision { QVLM_PREC_F32 = 0, QVLM_PREC_BF16 } qvlm_precision;

/* The best ISA this CPU supports (cpuid), capped by the QVLM_ISA environment variable
 * ("scalar", "avx2", "avx512", "avx512bf16") when set. */
qvlm_isa qvlm_cpu_detect_isa(void);
const char *qvlm_isa_name(qvlm_isa isa);

typedef struct qvlm_cpu {
    qvlm_pool *pool;          /* borrowed; NULL runs single-threaded */
    qvlm_isa isa;
    qvlm_precision precision;
} qvlm_cpu;

/* ---- matrix products ------------------------------------------------------------------------
 * y[t][j] = sum_i x[t][i] * W[j][i] (+ bias[j])     for t < n, j < d
 *   x    f32, row t at x + t*ldx (ldx >= k)
 *   W    [d][k] of dtype wt (F32, F16, BF16, Q8_0), rows contiguous (row bytes =
 *        qvlm_dtype_row_bytes(wt, k)); Q8_0 needs k % 32 == 0
 *   bias f32 [d] or NULL
 *   y    f32, row t at y + t*ldy (ldy >= d); must not overlap x
 * work: scratch of at least qvlm_cpu_matmul_work_bytes(...) bytes, 64-byte aligned, owned by
 * the caller (one per concurrent caller). The size does not depend on wt or on the precision,
 * and grows with n and k, so one buffer reserved for the largest n and k serves every call.
 * n == 1 is the decode GEMV, n > 1 the prefill GEMM; both give bitwise equal rows (see the
 * determinism contract above). Never allocates. */
size_t qvlm_cpu_matmul_work_bytes(const qvlm_cpu *cpu, int64_t n, int64_t k, qvlm_dtype wt);
void qvlm_cpu_matmul(const qvlm_cpu *cpu, float *y, int64_t ldy, const float *x, int64_t ldx,
                     const void *w, qvlm_dtype wt, const float *bias, int64_t n, int64_t k,
                     int64_t d, void *work);

/* Several products of the same x in one pass (one fork-join instead of one per product):
 * part i computes y_i = x W_i^T (+ bias_i) exactly as qvlm_cpu_matmul would (same bits). The
 * parts share k and the precision; each has its own dtype, d and y. At most 8 parts. */
typedef struct qvlm_mm_part {
    float *y;          /* rows at ldy */
    int64_t ldy;
    const void *w;     /* [d][k] of dtype wt */
    qvlm_dtype wt;
    const float *bias; /* [d] or NULL */
    int64_t d;
} qvlm_mm_part;
void qvlm_cpu_matmul_multi(const qvlm_cpu *cpu, int n_parts, const qvlm_mm_part *parts, const float *x, int64_t ldx,
                           int64_t n, int64_t k, void *work);

/* ---- benchmark helper ------------------------------------------------------------------------
 * Run a register-only multiply-add loop (the instruction the matmul of `isa` and `precision`
 * uses: vfmadd231ps zmm/ymm, vdpbf16ps zmm, or scalar fmaf) for `iters` iterations on the
 * calling thread and return the number of FLOPs it did (2 per multiply-add). Timing it gives
 * the core's peak, the bound for the GEMM numbers of `qvlm bench-matmul`. */
double qvlm_cpu_peak_probe(qvlm_isa isa, qvlm_precision precision, int64_t iters);
/* The same for the I8 kernels' multiply-add step (vpdpbusd, or AVX2's vpmaddubsw sequence):
 * the bound of Q8_0 products at BF16 precision. 0 on the scalar ISA. */
double qvlm_cpu_peak_probe_i8(qvlm_isa isa, int64_t iters);
/* Read `bytes` at p (64-byte aligned, a multiple of 256) as 4 sequential streams side by side,
 * the access pattern of the decode kernels, with the widest loads of `isa`; returns a checksum
 * (so the reads cannot be dropped). Timing it gives the read bandwidth the GEMV can reach. */
uint64_t qvlm_cpu_read_probe(qvlm_isa isa, const void *p, size_t bytes);

#endif /* QVLM_KERNELS_CPU_H */
