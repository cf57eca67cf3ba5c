/* dtype.c - element type table and scalar conversions (see dtype.h). */
#include "core/dtype.h"

#include <math.h>

static const struct {
    const char *name;
    size_t size;
} DTYPES[QVLM_DTYPE_COUNT] = {
    [QVLM_DTYPE_F32] = {"F32", 4},  [QVLM_DTYPE_F16] = {"F16", 2},   [QVLM_DTYPE_BF16] = {"BF16", 2},
    [QVLM_DTYPE_I64] = {"I64", 8},  [QVLM_DTYPE_I32] = {"I32", 4},   [QVLM_DTYPE_I16] = {"I16", 2},
    [QVLM_DTYPE_I8] = {"I8", 1},    [QVLM_DTYPE_U8] = {"U8", 1},     [QVLM_DTYPE_BOOL] = {"BOOL", 1},
    [QVLM_DTYPE_F64] = {"F64", 8},  [QVLM_DTYPE_Q8_0] = {"Q8_0", 0},
    [QVLM_DTYPE_Q8_0X8] = {"Q8_0X8", 0},
};

size_t qvlm_dtype_size(qvlm_dtype t) { return (unsigned)t < QVLM_DTYPE_COUNT ? DTYPES[t].size : 0; }

size_t qvlm_dtype_row_bytes(qvlm_dtype t, int64_t n) {
    if (t == QVLM_DTYPE_Q8_0 || t == QVLM_DTYPE_Q8_0X8) return (size_t)(n / 32) * (2 + 32);
    return (size_t)n * qvlm_dtype_size(t);
}

const char *qvlm_dtype_name(qvlm_dtype t) {
    return (unsigned)t < QVLM_DTYPE_COUNT ? DTYPES[t].name : "?";
}

int qvlm_dtype_from_name(const char *s) {
    for (int i = 0; i < QVLM_DTYPE_COUNT; i++)
        if (i != QVLM_DTYPE_Q8_0 && i != QVLM_DTYPE_Q8_0X8 && strcmp(s, DTYPES[i].name) == 0) return i;
    return -1;
}

float qvlm_f16_to_f32(qvlm_f16 h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do {
                man <<= 1;
                e++;
            } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

qvlm_f16 qvlm_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffffu;
    if (((u >> 23) & 0xff) == 0xff) return (qvlm_f16)(sign | 0x7c00u | (man ? 0x200u : 0));
    if (exp >= 31) return (qvlm_f16)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10) return (qvlm_f16)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = 1u << (shift - 1);
        uint32_t r = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (qvlm_f16)(sign | r);
    }
    uint32_t r = ((uint32_t)exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) r++;
    return (qvlm_f16)(sign | r);
}

void qvlm_to_f32(float *dst, const void *src, qvlm_dtype t, size_t n) {
    switch (t) {
    case QVLM_DTYPE_F32: memcpy(dst, src, n * 4); break;
    case QVLM_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = qvlm_bf16_to_f32(((const qvlm_bf16 *)src)[i]);
        break;
    case QVLM_DTYPE_F16:
        for (size_t i = 0; i < n; i++) dst[i] = qvlm_f16_to_f32(((const qvlm_f16 *)src)[i]);
        break;
    case QVLM_DTYPE_F64:
        for (size_t i = 0; i < n; i++) dst[i] = (float)((const double *)src)[i];
        break;
    default:
        for (size_t i = 0; i < n; i++) dst[i] = NAN;
        break;
    }
}
