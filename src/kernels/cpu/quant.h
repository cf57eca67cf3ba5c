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

/* Q8_0X8: the same blocks with the rows of each panel of 8 interleaved, the layout the I8
 * matrix products read (one vpdpbusd takes 4 elements of 8 rows; matmul_i8_kernels.h):
 * panel p (rows 8p .. 8p+7, rows past the end zero) is k/32 blocks of 272 bytes; block b:
 *     offset 0   size 16   the 8 rows' scales, f16
 *     offset 16  size 256  for group g = 0..7, for row r = 0..7: q[r][32b + 4g .. + 3] + 128 (uint8)
 * (+128 makes the weights vpdpbusd's unsigned operand). Same size per row as Q8_0. */
#define QVLM_Q8_0X8_ROWS 8
#define QVLM_Q8_0X8_BLOCK_BYTES (QVLM_Q8_0X8_ROWS * QVLM_Q8_0_BLOCK_BYTES)

static inline size_t qvlm_q8_0x8_bytes(int64_t rows, int64_t k) {
    return (size_t)((rows + 7) / 8) * 8 * (size_t)(k / 32) * QVLM_Q8_0_BLOCK_BYTES;
}

/* Quantise one row of k elements of src (F32, BF16 or F16) into dst
 * (qvlm_dtype_row_bytes(QVLM_DTYPE_Q8_0, k) bytes).
 * Returns QVLM_E_INVALID when k is not a positive multiple of 32 or src_type is not a float
 * type, QVLM_E_CORRUPT when a value is not finite or a block's scale overflows a half
 * (|x| > 65504 * 127), naming the element. On failure dst is partly written. */
qvlm_status qvlm_quantize_q8_0(void *dst, const void *src, qvlm_dtype src_type, int64_t k,
                               qvlm_error *err);

/* Widen one Q8_0 row of k elements (k % 32 == 0) to f32: dst[i] = d * q[i]. */
void qvlm_dequantize_q8_0(float *dst, const void *src, int64_t k);

/* Block b of row j of a Q8_0X8 matrix of k columns: its scale and its 32 int8. */
void qvlm_q8_0x8_block(const void *w, int64_t j, int64_t b, int64_t k, qvlm_f16 *scale, int8_t q[32]);
/* Widen row j of a Q8_0X8 matrix of k columns to f32 (as qvlm_dequantize_q8_0 the same row). */
void qvlm_dequantize_q8_0x8_row(float *dst, const void *w, int64_t j, int64_t k);
/* Interleave 8 Q8_0 rows of nb blocks (NULL: a zero row) into one Q8_0X8 panel. */
void qvlm_q8_0x8_pack_panel(uint8_t *dst, const uint8_t *const rows[8], int64_t nb);

#endif /* QVLM_KERNELS_CPU_QUANT_H */
