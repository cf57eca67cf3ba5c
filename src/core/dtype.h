/* dtype.h - element types of tensors and the scalar conversions between them.
 *
 * Weights keep the dtype they were stored in (BF16, F16, F32; later quantized types);
 * activations are F32 on the CPU. bf16 is the top half of an IEEE f32, so widening is a
 * shift; narrowing rounds to nearest-even like PyTorch's .to(torch.bfloat16).
 */
#ifndef QVLM_CORE_DTYPE_H
#define QVLM_CORE_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum qvlm_dtype {
    QVLM_DTYPE_F32 = 0,
    QVLM_DTYPE_F16,
    QVLM_DTYPE_BF16,
    QVLM_DTYPE_I64,
    QVLM_DTYPE_I32,
    QVLM_DTYPE_I16,
    QVLM_DTYPE_I8,
    QVLM_DTYPE_U8,
    QVLM_DTYPE_BOOL,
    QVLM_DTYPE_F64,
    QVLM_DTYPE_Q8_0, /* blocks of 32: one f16 scale + 32 int8 (see kernels/cpu/quant.h) */
    QVLM_DTYPE_Q8_0X8, /* Q8_0 with rows interleaved in panels of 8 (kernels/cpu/quant.h); row
                        * bytes as Q8_0, the row count padded to a multiple of 8 */
    QVLM_DTYPE_COUNT
} qvlm_dtype;

/* Bytes per element; 0 for block-quantized types (use qvlm_dtype_row_bytes). */
size_t qvlm_dtype_size(qvlm_dtype t);
/* Bytes of one row of n elements (handles block-quantized types; n must be a multiple of
 * the block size for those). */
size_t qvlm_dtype_row_bytes(qvlm_dtype t, int64_t n);
/* Name as safetensors spells it ("BF16"), or "Q8_0" / "Q8_0X8". */
const char *qvlm_dtype_name(qvlm_dtype t);
/* Parse a safetensors dtype string; returns -1 if unknown. */
int qvlm_dtype_from_name(const char *s);

typedef uint16_t qvlm_bf16;
typedef uint16_t qvlm_f16;

static inline float qvlm_bf16_to_f32(qvlm_bf16 h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline qvlm_bf16 qvlm_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (qvlm_bf16)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest, ties to even */
    return (qvlm_bf16)(u >> 16);
}

float qvlm_f16_to_f32(qvlm_f16 h);
qvlm_f16 qvlm_f32_to_f16(float f);

/* Convert n elements of type `t` at src to f32 (for non-quantized float types). */
void qvlm_to_f32(float *dst, const void *src, qvlm_dtype t, size_t n);

#endif /* QVLM_CORE_DTYPE_H */
