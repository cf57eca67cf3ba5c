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

/* How activations meet the weights in matrix products.
 *  F32:  activations stay f32; bf16/f16 weights are widened exactly, products and sums in f32.
 *        The verification mode: matches transformers' float32 run.
 *  BF16: activations are rounded to bf16 and multiplied with bf16 dot instructions, sums in
 *        f32 (transformers' bf16 run rounds activations the same way). The fast mode. */
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
 *        qvlm_dtype_row_bytes(wt, k))
 *   bias f32 [d] or NULL
 *   y    f32, row t at y + t*ldy (ldy >= d); must not overlap x
 * work: scratch of at least qvlm_cpu_matmul_work_bytes(...) bytes, 64-byte aligned, owned by
 * the caller (one per concurrent caller). n == 1 is the decode GEMV, n > 1 the prefill GEMM;
 * both give bitwise equal rows (see the determinism contract above). */
size_t qvlm_cpu_matmul_work_bytes(const qvlm_cpu *cpu, int64_t n, int64_t k, qvlm_dtype wt);
void qvlm_cpu_matmul(const qvlm_cpu *cpu, float *y, int64_t ldy, const float *x, int64_t ldx,
                     const void *w, qvlm_dtype wt, const float *bias, int64_t n, int64_t k,
                     int64_t d, void *work);

#endif /* QVLM_KERNELS_CPU_H */
