/* quant.h - Q8_0 row quantisation (load-time `--quant q8_0`).
 *
 * A Q8_0 row of k elements (k % 32 == 0) is k/32 blocks of 34 bytes:
 *     offset 0  size 2   scale d, IEEE half (little-endian)
 *     offset 2  size 32  q[0..31], int8 in [-127, 127]
 * and element i of a block is d * q[i] (exact in f32: 11 x 7 significant bits).
 * The quantiser picks d = f16(amax / 127) (amax = max |x| of the block; the smallest positive
 * half when that rounds to 0 but amax > 0) and q = round_half_even(x / d) clamped to
 * [-127, 127], dividing by the stored (rounded) d, so |x - d*q| <= d/2 up to one f32
 * rounding of the quotient (the clamp only moves q by < 0.07 when d was rounded down).
 */
#ifndef QVLM_KERNELS_CPU_QUANT_H
#define QVLM_KERNELS_CPU_QUANT_H

#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"

#define QVLM_Q8_0_BLOCK 32
#define QVLM_Q8_0_BLOCK_BYTES 34

/* Quantise one row of k elements of src (F32, BF16 or F16) into dst
 * (qvlm_dtype_row_bytes(QVLM_DTYPE_Q8_0, k) bytes).
 * Returns QVLM_E_INVALID when k is not a positive multiple of 32 or src_type is not a float
 * type, QVLM_E_CORRUPT when a value is not finite or a block's scale overflows a half
 * (|x| > 65504 * 127), naming the element. On failure dst is partly written. */
qvlm_status qvlm_quantize_q8_0(void *dst, const void *src, qvlm_dtype src_type, int64_t k,
                               qvlm_error *err);

/* Widen one Q8_0 row of k elements (k % 32 == 0) to f32: dst[i] = d * q[i]. */
void qvlm_dequantize_q8_0(float *dst, const void *src, int64_t k);

#endif /* QVLM_KERNELS_CPU_QUANT_H */
