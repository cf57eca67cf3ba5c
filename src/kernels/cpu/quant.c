/* quant.c - Q8_0 row quantisation (see quant.h for the block layout and the error bound). */
#include "kernels/cpu/quant.h"

#include <math.h>
#include <string.h>

#include <stdlib.h>

#include "core/threads.h"
#include "kernels/backend.h"

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
            float a = fabsf(v[i]);
            amax = a > amax ? a : amax; /* fmaxf for finite values, without the libm call */
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
            qf = qf < -127.0f ? -127.0f : qf > 127.0f ? 127.0f : qf; /* finite: |x| <= amax */
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

/* ---- many rows, on a pool ------------------------------------------------------------------ */

struct qrows_job {
    uint8_t *dst;
    const uint8_t *src;
    qvlm_dtype src_type;
    int64_t rows, k;
    qvlm_status rc[64]; /* per thread (threads past 64 share the last slot's fate: see below) */
    int64_t bad_row[64];
    qvlm_error err[64];
};

static void qrows_task(void *p, int ith, int nth) {
    struct qrows_job *j = p;
    long r0, r1;
    qvlm_split_rows((long)j->rows, ith, nth, &r0, &r1);
    const size_t in_row = qvlm_dtype_row_bytes(j->src_type, j->k), out_row = qvlm_dtype_row_bytes(QVLM_DTYPE_Q8_0, j->k);
    for (long r = r0; r < r1; r++) {
        qvlm_status rc = qvlm_quantize_q8_0(j->dst + (size_t)r * out_row, j->src + (size_t)r * in_row, j->src_type, j->k,
                                            &j->err[ith]);
        if (rc) {
            j->rc[ith] = rc;
            j->bad_row[ith] = r;
            return;
        }
    }
}

qvlm_status qvlm_quantize_rows_q8_0(void *dst, const void *src, qvlm_dtype src_type, int64_t rows, int64_t k,
                                   struct qvlm_pool *pool, qvlm_error *err) {
    if (k <= 0 || k % QVLM_Q8_0_BLOCK != 0)
        return qvlm_errorf(err, QVLM_E_INVALID, "q8_0: row length %lld is not a positive multiple of 32", (long long)k);
    struct qrows_job *j = calloc(1, sizeof(*j));
    if (!j) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    *j = (struct qrows_job){.dst = dst, .src = src, .src_type = src_type, .rows = rows, .k = k};
    int nth = qvlm_pool_size(pool) < 64 ? qvlm_pool_size(pool) : 64;
    qvlm_pool_run_n(pool, qrows_task, j, rows * k >= (1 << 16) ? nth : 1);
    qvlm_status rc = QVLM_OK;
    for (int i = 0; i < nth && !rc; i++)
        if (j->rc[i]) rc = qvlm_errorf(err, j->rc[i], "row %lld: %s", (long long)j->bad_row[i], j->err[i].msg);
    free(j);
    return rc;
}
