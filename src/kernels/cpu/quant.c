/* quant.c - Q8_0 row quantisation (see quant.h for the block layout and the error bound). */
#include "kernels/cpu/quant.h"

#include <math.h>
#include <string.h>

/* Element i of a float row of type t, as f32 (exact for F32/BF16/F16). */
static float src_at(const void *src, qvlm_dtype t, int64_t i) {
    switch (t) {
    case QVLM_DTYPE_BF16: return qvlm_bf16_to_f32(((const qvlm_bf16 *)src)[i]);
    case QVLM_DTYPE_F16: return qvlm_f16_to_f32(((const qvlm_f16 *)src)[i]);
    default: return ((const float *)src)[i];
    }
}

qvlm_status qvlm_quantize_q8_0(void *dst, const void *src, qvlm_dtype src_type, int64_t k,
                               qvlm_error *err) {
    if (k <= 0 || k % QVLM_Q8_0_BLOCK != 0)
        return qvlm_errorf(err, QVLM_E_INVALID, "q8_0: row length %lld is not a positive multiple of 32",
                           (long long)k);
    if (src_type != QVLM_DTYPE_F32 && src_type != QVLM_DTYPE_BF16 && src_type != QVLM_DTYPE_F16)
        return qvlm_errorf(err, QVLM_E_INVALID, "q8_0: cannot quantise %s rows", qvlm_dtype_name(src_type));
    uint8_t *out = dst;
    for (int64_t b = 0; b < k / QVLM_Q8_0_BLOCK; b++) {
        float v[QVLM_Q8_0_BLOCK], amax = 0.0f;
        for (int i = 0; i < QVLM_Q8_0_BLOCK; i++) {
            v[i] = src_at(src, src_type, b * QVLM_Q8_0_BLOCK + i);
            if (!isfinite(v[i]))
                return qvlm_errorf(err, QVLM_E_CORRUPT, "q8_0: element %lld is not finite",
                                   (long long)(b * QVLM_Q8_0_BLOCK + i));
            amax = fmaxf(amax, fabsf(v[i]));
        }
        qvlm_f16 dh = qvlm_f32_to_f16(amax / 127.0f);
        if ((dh & 0x7c00u) == 0x7c00u)
            return qvlm_errorf(err, QVLM_E_CORRUPT, "q8_0: block %lld: max |x| = %g overflows the half scale",
                               (long long)b, (double)amax);
        if (dh == 0 && amax > 0.0f) dh = 1; /* smallest subnormal half: keeps |x - d*q| <= d/2 */
        float d = qvlm_f16_to_f32(dh);
        uint8_t *blk = out + b * QVLM_Q8_0_BLOCK_BYTES;
        memcpy(blk, &dh, 2);
        for (int i = 0; i < QVLM_Q8_0_BLOCK; i++) {
            /* Divide by the stored d (not its unrounded value) so the error bound holds for
             * what the kernels will multiply back. */
            float qf = d > 0.0f ? nearbyintf(v[i] / d) : 0.0f;
            qf = fminf(fmaxf(qf, -127.0f), 127.0f);
            blk[2 + i] = (uint8_t)(int8_t)qf;
        }
    }
    return QVLM_OK;
}

void qvlm_dequantize_q8_0(float *dst, const void *src, int64_t k) {
    const uint8_t *in = src;
    for (int64_t b = 0; b < k / QVLM_Q8_0_BLOCK; b++) {
        const uint8_t *blk = in + b * QVLM_Q8_0_BLOCK_BYTES;
        qvlm_f16 dh;
        memcpy(&dh, blk, 2);
        float d = qvlm_f16_to_f32(dh);
        for (int i = 0; i < QVLM_Q8_0_BLOCK; i++) dst[b * QVLM_Q8_0_BLOCK + i] = d * (float)(int8_t)blk[2 + i];
    }
}
