/* quant.c - Q8_0 row quantisation (see quant.h for the block layout and the error bound). */
#include "kernels/cpu/quant.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include <stdlib.h>

#include "core/threads.h"
#include "kernels/backend.h"

qvlm_status qvlm_quantize_q8_0(void *dst, const void *src, qvlm_dtype src_type, int64_t k,
                               qvlm_error *err) {
    if (k <= 0 || k % QVLM_Q8_0_BLOCK != 0)
        return qvlm_errorf(err, QVLM_E_INVALID, "q8_0: row length %lld is not a positive multiple of 32",
                           (long long)k);
    if (src_type != QVLM_DTYPE_F32 && src_type != QVLM_DTYPE_BF16 && src_type != QVLM_DTYPE_F16)
        return qvlm_errorf(err, QVLM_E_INVALID, "q8_0: cannot quantise %s rows", qvlm_dtype_name(src_type));
    uint8_t *out = dst;
    const size_t esz = qvlm_dtype_size(src_type);
    for (int64_t b = 0; b < k / QVLM_Q8_0_BLOCK; b++) {
        /* Loops without calls or early exits, so the compiler vectorises them (loading a 0.8B
         * model's text tower took ~20 s with a per-element conversion switch and libm calls). */
        float v[QVLM_Q8_0_BLOCK], amax = 0.0f;
        int finite = 1;
        qvlm_to_f32(v, (const uint8_t *)src + (size_t)b * QVLM_Q8_0_BLOCK * esz, src_type, QVLM_Q8_0_BLOCK);
        for (int i = 0; i < QVLM_Q8_0_BLOCK; i++) {
            float a = fabsf(v[i]);
            finite &= a <= FLT_MAX; /* false for inf and NaN */
            amax = a > amax ? a : amax;
        }
        if (!finite)
            for (int i = 0; i < QVLM_Q8_0_BLOCK; i++)
                if (!isfinite(v[i]))
                    return qvlm_errorf(err, QVLM_E_CORRUPT, "q8_0: element %lld is not finite",
                                       (long long)(b * QVLM_Q8_0_BLOCK + i));
        qvlm_f16 dh = qvlm_f32_to_f16(amax / 127.0f);
        if ((dh & 0x7c00u) == 0x7c00u)
            return qvlm_errorf(err, QVLM_E_CORRUPT, "q8_0: block %lld: max |x| = %g overflows the half scale",
                               (long long)b, (double)amax);
        if (dh == 0 && amax > 0.0f) dh = 1; /* smallest subnormal half: keeps |x - d*q| <= d/2 */
        float d = qvlm_f16_to_f32(dh);
        uint8_t *blk = out + b * QVLM_Q8_0_BLOCK_BYTES;
        memcpy(blk, &dh, 2);
        if (d == 0.0f) { /* an all-zero block */
            memset(blk + 2, 0, QVLM_Q8_0_BLOCK);
            continue;
        }
        for (int i = 0; i < QVLM_Q8_0_BLOCK; i++) {
            /* Divide by the stored d (not its unrounded value) so the error bound holds for
             * what the kernels will multiply back. |x / d| < 2^22, where adding and taking
             * away 1.5 * 2^23 rounds to the nearest integer, ties to even: nearbyintf. */
            float qf = v[i] / d;
            qf = (qf + 0x1.8p23f) - 0x1.8p23f;
            qf = qf < -127.0f ? -127.0f : qf > 127.0f ? 127.0f : qf; /* finite: |x| <= amax */
            blk[2 + i] = (uint8_t)(int8_t)(int)qf;
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

/* ---- Q8_0X8 ----------------------------------------------------------------------------------- */

void qvlm_q8_0x8_pack_panel(uint8_t *dst, const uint8_t *const rows[8], int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *o = dst + b * QVLM_Q8_0X8_BLOCK_BYTES;
        for (int r = 0; r < 8; r++) {
            const uint8_t *blk = rows[r] ? rows[r] + b * QVLM_Q8_0_BLOCK_BYTES : NULL;
            if (blk) memcpy(o + 2 * r, blk, 2);
            else memset(o + 2 * r, 0, 2);
            for (int i = 0; i < QVLM_Q8_0_BLOCK; i++)
                o[16 + 32 * (i / 4) + 4 * r + i % 4] = (uint8_t)((blk ? (int)(int8_t)blk[2 + i] : 0) + 128);
        }
    }
}

void qvlm_q8_0x8_block(const void *w, int64_t j, int64_t b, int64_t k, qvlm_f16 *scale, int8_t q[32]) {
    int64_t nb = k / QVLM_Q8_0_BLOCK, r = j % 8;
    const uint8_t *o = (const uint8_t *)w + (size_t)((j / 8) * nb + b) * QVLM_Q8_0X8_BLOCK_BYTES;
    memcpy(scale, o + 2 * r, 2);
    for (int i = 0; i < QVLM_Q8_0_BLOCK; i++) q[i] = (int8_t)(o[16 + 32 * (i / 4) + 4 * r + i % 4] - 128);
}

void qvlm_dequantize_q8_0x8_row(float *dst, const void *w, int64_t j, int64_t k) {
    for (int64_t b = 0; b < k / QVLM_Q8_0_BLOCK; b++) {
        qvlm_f16 h;
        int8_t q[32];
        qvlm_q8_0x8_block(w, j, b, k, &h, q);
        float d = qvlm_f16_to_f32(h);
        for (int i = 0; i < QVLM_Q8_0_BLOCK; i++) dst[b * QVLM_Q8_0_BLOCK + i] = d * (float)q[i];
    }
}

/* ---- many rows, on a pool ------------------------------------------------------------------ */

struct qrows_job {
    uint8_t *dst;
    const uint8_t *src;
    qvlm_dtype src_type;
    int64_t rows, k;
    int x8;             /* write Q8_0X8 panels (a unit of work is 8 rows) */
    qvlm_status rc[64]; /* per thread (threads past 64 share the last slot's fate: see below) */
    int64_t bad_row[64];
    qvlm_error err[64];
};

/* Rows [r0, r1) to Q8_0 at dst (row r at dst + (r - r0) * out_row); 0 or the failure. */
static qvlm_status quantize_range(struct qrows_job *j, int ith, long r0, long r1, uint8_t *dst) {
    const size_t in_row = qvlm_dtype_row_bytes(j->src_type, j->k), out_row = qvlm_dtype_row_bytes(QVLM_DTYPE_Q8_0, j->k);
    for (long r = r0; r < r1; r++) {
        qvlm_status rc = qvlm_quantize_q8_0(dst + (size_t)(r - r0) * out_row, j->src + (size_t)r * in_row, j->src_type,
                                            j->k, &j->err[ith]);
        if (rc) {
            j->rc[ith] = rc;
            j->bad_row[ith] = r;
            return rc;
        }
    }
    return QVLM_OK;
}

static void qrows_task(void *p, int ith, int nth) {
    struct qrows_job *j = p;
    long r0, r1;
    if (!j->x8) {
        qvlm_split_rows((long)j->rows, ith, nth, &r0, &r1);
        quantize_range(j, ith, r0, r1, j->dst + (size_t)r0 * qvlm_dtype_row_bytes(QVLM_DTYPE_Q8_0, j->k));
        return;
    }
    /* panels: quantise 8 rows to Q8_0 in a buffer, then interleave them */
    const size_t out_row = qvlm_dtype_row_bytes(QVLM_DTYPE_Q8_0, j->k);
    uint8_t *tmp = malloc(8 * out_row);
    if (!tmp) {
        j->rc[ith] = qvlm_errorf(&j->err[ith], QVLM_E_NOMEM, "out of memory");
        j->bad_row[ith] = 0;
        return;
    }
    qvlm_split_rows((long)((j->rows + 7) / 8), ith, nth, &r0, &r1);
    for (long pn = r0; pn < r1; pn++) {
        long a = pn * 8, e = a + 8 < j->rows ? a + 8 : (long)j->rows;
        if (quantize_range(j, ith, a, e, tmp)) break;
        const uint8_t *rows[8];
        for (int r = 0; r < 8; r++) rows[r] = a + r < e ? tmp + (size_t)r * out_row : NULL;
        qvlm_q8_0x8_pack_panel(j->dst + (size_t)pn * 8 * out_row, rows, j->k / QVLM_Q8_0_BLOCK);
    }
    free(tmp);
}

size_t qvlm_quantized_bytes(qvlm_dtype to, int64_t rows, int64_t k) {
    return to == QVLM_DTYPE_Q8_0X8 ? qvlm_q8_0x8_bytes(rows, k) : (size_t)rows * qvlm_dtype_row_bytes(to, k);
}

qvlm_status qvlm_quantize_rows(void *dst, qvlm_dtype to, const void *src, qvlm_dtype src_type, int64_t rows, int64_t k,
                               struct qvlm_pool *pool, qvlm_error *err) {
    if (to != QVLM_DTYPE_Q8_0 && to != QVLM_DTYPE_Q8_0X8)
        return qvlm_errorf(err, QVLM_E_INVALID, "cannot quantise to %s", qvlm_dtype_name(to));
    const int x8 = to == QVLM_DTYPE_Q8_0X8;
    if (k <= 0 || k % QVLM_Q8_0_BLOCK != 0)
        return qvlm_errorf(err, QVLM_E_INVALID, "q8_0: row length %lld is not a positive multiple of 32", (long long)k);
    struct qrows_job *j = calloc(1, sizeof(*j));
    if (!j) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    *j = (struct qrows_job){.dst = dst, .src = src, .src_type = src_type, .rows = rows, .k = k, .x8 = x8};
    int nth = qvlm_pool_size(pool) < 64 ? qvlm_pool_size(pool) : 64;
    qvlm_pool_run_n(pool, qrows_task, j, rows * k >= (1 << 16) ? nth : 1);
    qvlm_status rc = QVLM_OK;
    for (int i = 0; i < nth && !rc; i++)
        if (j->rc[i]) rc = qvlm_errorf(err, j->rc[i], "row %lld: %s", (long long)j->bad_row[i], j->err[i].msg);
    free(j);
    return rc;
}
