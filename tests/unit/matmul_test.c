/* matmul_test.c - the CPU matrix products against the scalar reference, and the reference
 * against double precision.
 *
 *  - every ISA this CPU has (capped through qvlm_cpu.isa) x F32/F16/BF16/Q8_0 weights x both
 *    precisions x random and edge shapes: bitwise equal to the reference;
 *  - the reference within a bound derived from k and the dtype's epsilon of a double dot;
 *  - vdpbf16ps itself (when the CPU has it) against qvlm_ref_fma_ftz on crafted edge cases;
 *  - determinism: the same rows with n = 1, 7, 512 and 1/2/3 threads are bitwise equal;
 *  - Q8_0 quantise/dequantise round trip within scale/2 per element.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/threads.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/matmul_impl.h"
#include "kernels/cpu/quant.h"
#include "qtest.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng_next(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}
/* Uniform in [-1, 1), times a magnitude spread over 2^-6 .. 2^5 so sums mix exponents. */
static float rnd(void) {
    float u = (float)((rng_next() >> 40) * 0x1p-24) * 2.0f - 1.0f;
    return ldexpf(u, (int)(rng_next() % 12) - 6);
}

static const qvlm_dtype DTYPES[] = {QVLM_DTYPE_F32, QVLM_DTYPE_F16, QVLM_DTYPE_BF16, QVLM_DTYPE_Q8_0, QVLM_DTYPE_Q8_0X8};
static const qvlm_precision PRECS[] = {QVLM_PREC_F32, QVLM_PREC_BF16};
static const char *prec_name(qvlm_precision p) { return p == QVLM_PREC_F32 ? "f32" : "bf16"; }

/* d x k weights of type wt from f32 values (Q8_0, Q8_0X8: quantised; k % 32 == 0). */
static void *make_weights(const float *wf, qvlm_dtype wt, int64_t d, int64_t k) {
    if (wt == QVLM_DTYPE_Q8_0X8) {
        void *w = malloc(qvlm_quantized_bytes(QVLM_DTYPE_Q8_0X8, d, k));
        if (qvlm_quantize_rows(w, QVLM_DTYPE_Q8_0X8, wf, QVLM_DTYPE_F32, d, k, NULL, NULL) != QVLM_OK) {
            free(w);
            return NULL;
        }
        return w;
    }
    size_t rb = qvlm_dtype_row_bytes(wt, k);
    uint8_t *w = malloc(rb * (size_t)d + 1);
    for (int64_t j = 0; j < d; j++) {
        uint8_t *row = w + (size_t)j * rb;
        const float *src = wf + j * k;
        for (int64_t i = 0; i < k; i++) {
            if (wt == QVLM_DTYPE_F32) memcpy(row + 4 * i, &src[i], 4);
            if (wt == QVLM_DTYPE_BF16) {
                qvlm_bf16 h = qvlm_f32_to_bf16(src[i]);
                memcpy(row + 2 * i, &h, 2);
            }
            if (wt == QVLM_DTYPE_F16) {
                qvlm_f16 h = qvlm_f32_to_f16(src[i]);
                memcpy(row + 2 * i, &h, 2);
            }
        }
        if (wt == QVLM_DTYPE_Q8_0 && qvlm_quantize_q8_0(row, src, QVLM_DTYPE_F32, k, NULL) != QVLM_OK) {
            free(w);
            return NULL;
        }
    }
    return w;
}

/* I8 (Q8_0 weights at BF16 precision, cpu.h), written out here from the block bytes: the
 * library's quantiser, then the integer dots and the fold in block order. */
static void ref_matmul_i8(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w, int x8,
                          const float *bias, int64_t n, int64_t k, int64_t d) {
    int64_t nb = k / 32;
    int8_t *q = malloc((size_t)k);
    float *dx = malloc(sizeof(float) * (size_t)nb);
    for (int64_t t = 0; t < n; t++) {
        for (int64_t b = 0; b < nb; b++) {
            int32_t corr;
            qvlm_ref_quantize_x_i8(x + t * ldx + 32 * b, q + 32 * b, &dx[b], &corr);
        }
        for (int64_t j = 0; j < d; j++) {
            const uint8_t *row = (const uint8_t *)w + (size_t)j * qvlm_dtype_row_bytes(QVLM_DTYPE_Q8_0, k);
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                qvlm_f16 h;
                int8_t qw[32];
                if (x8) {
                    qvlm_q8_0x8_block(w, j, b, k, &h, qw);
                } else {
                    memcpy(&h, row + 34 * b, 2);
                    memcpy(qw, row + 34 * b + 2, 32);
                }
                long dot = 0;
                for (int i = 0; i < 32; i++) dot += (long)qw[i] * q[32 * b + i];
                acc = fmaf(qvlm_f16_to_f32(h) * dx[b], (float)dot, acc);
            }
            y[t * ldy + j] = bias ? acc + bias[j] : acc;
        }
    }
    free(q);
    free(dx);
}

/* y_ref[t][j] straight from the reference's dot (no dispatch code involved). */
static void ref_matmul(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w, qvlm_dtype wt,
                       const float *bias, int64_t n, int64_t k, int64_t d, qvlm_precision p) {
    if ((wt == QVLM_DTYPE_Q8_0 && p == QVLM_PREC_BF16) || wt == QVLM_DTYPE_Q8_0X8) {
        ref_matmul_i8(y, ldy, x, ldx, w, wt == QVLM_DTYPE_Q8_0X8, bias, n, k, d);
        return;
    }
    int64_t nu = (k + 31) / 32, kp = nu * 32;
    float *wo = malloc(sizeof(float) * (size_t)kp), *xo = malloc(sizeof(float) * (size_t)kp);
    for (int64_t j = 0; j < d; j++) {
        qvlm_ref_weight_operands(wo, w, wt, j, k, p);
        for (int64_t t = 0; t < n; t++) {
            for (int64_t i = 0; i < kp; i++)
                xo[i] = i >= k ? 0.0f : p == QVLM_PREC_BF16 ? qvlm_ref_round_bf16(x[t * ldx + i]) : x[t * ldx + i];
            y[t * ldy + j] = qvlm_ref_dot(xo, wo, nu, bias != NULL, bias ? bias[j] : 0.0f, p);
        }
    }
    free(wo);
    free(xo);
}

static int same_bits(float a, float b) {
    if (isnan(a) && isnan(b)) return 1; /* NaN payloads are not specified */
    uint32_t ua, ub;
    memcpy(&ua, &a, 4);
    memcpy(&ub, &b, 4);
    return ua == ub;
}

/* Index of the first output that differs bitwise, or -1. */
static int64_t first_diff(const float *a, const float *b, int64_t n, int64_t d, int64_t ld) {
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < d; j++)
            if (!same_bits(a[t * ld + j], b[t * ld + j])) return t * ld + j;
    return -1;
}

static void *work_for(const qvlm_cpu *cpu, int64_t n, int64_t k) {
    size_t bytes = qvlm_cpu_matmul_work_bytes(cpu, n, k, QVLM_DTYPE_BF16);
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

/* One case: every ISA up to the CPU's, one dtype and precision, bitwise against ref_matmul. */
struct mm_case {
    int64_t n, k, d, ldx, ldy;
    int with_bias;
};

static int check_case(const struct mm_case *c, const float *x, const float *wf, const float *bias, qvlm_dtype wt,
                      qvlm_precision p, qvlm_pool *pool, char *why, size_t why_len) {
    int64_t k = c->k;
    void *w = make_weights(wf, wt, c->d, k);
    if (!w) {
        snprintf(why, why_len, "cannot build %s weights", qvlm_dtype_name(wt));
        return 0;
    }
    size_t ybytes = sizeof(float) * (size_t)(c->n * c->ldy);
    float *yr = malloc(ybytes), *y = malloc(ybytes);
    ref_matmul(yr, c->ldy, x, c->ldx, w, wt, c->with_bias ? bias : NULL, c->n, k, c->d, p);
    int ok = 1;
    qvlm_isa best = qvlm_cpu_detect_isa();
    for (int isa = QVLM_ISA_SCALAR; isa <= (int)best && ok; isa++) {
        qvlm_cpu cpu = {pool, (qvlm_isa)isa, p};
        void *work = work_for(&cpu, c->n, k);
        for (size_t i = 0; i < (size_t)(c->n * c->ldy); i++) y[i] = -12345.0f; /* catch unwritten outputs */
        qvlm_cpu_matmul(&cpu, y, c->ldy, x, c->ldx, w, wt, c->with_bias ? bias : NULL, c->n, k, c->d, work);
        int64_t at = first_diff(y, yr, c->n, c->d, c->ldy);
        if (at >= 0) {
            snprintf(why, why_len, "isa %s %s w=%s n=%lld k=%lld d=%lld bias=%d: y[%lld][%lld] = %a, reference %a",
                     qvlm_isa_name((qvlm_isa)isa), prec_name(p), qvlm_dtype_name(wt), (long long)c->n, (long long)k,
                     (long long)c->d, c->with_bias, (long long)(at / c->ldy), (long long)(at % c->ldy), y[at], yr[at]);
            ok = 0;
        }
        /* padding columns between d and ldy must stay untouched */
        for (int64_t t = 0; t < c->n && ok; t++)
            for (int64_t j = c->d; j < c->ldy; j++)
                if (y[t * c->ldy + j] != -12345.0f) {
                    snprintf(why, why_len, "isa %s wrote y[%lld][%lld] past d", qvlm_isa_name((qvlm_isa)isa),
                             (long long)t, (long long)j);
                    ok = 0;
                    break;
                }
        free(work);
    }
    free(y);
    free(yr);
    free(w);
    return ok;
}

static void fill(float *v, size_t n) {
    for (size_t i = 0; i < n; i++) v[i] = rnd();
}

/* ---- every ISA x dtype x precision x shape, bitwise --------------------------------------------- */

static void test_isas_bitwise_random_and_edge_shapes(void) {
    static const struct mm_case CASES[] = {
        {1, 1, 1, 1, 1, 1},       {1, 24, 1, 24, 1, 0},     {1, 48, 3, 50, 3, 1},    {2, 80, 5, 80, 8, 1},
        {3, 96, 7, 96, 7, 0},     {4, 31, 9, 33, 9, 1},     {5, 33, 4, 33, 4, 1},    {7, 1000, 13, 1000, 16, 1},
        {1, 4096, 6, 4096, 6, 1}, {9, 4096, 5, 4100, 5, 0}, {513, 96, 17, 96, 17, 1}, {513, 64, 67, 64, 67, 0},
        {17, 64, 130, 70, 130, 1}, {1, 1024, 140, 1024, 140, 1}, {300, 40, 21, 40, 21, 1}, {6, 16, 2, 16, 2, 1},
    };
    qvlm_error err;
    qvlm_pool *pool;
    ASSERT_OK(qvlm_pool_create(2, &pool, &err), &err);
    char why[512];
    int failed = 0;
    for (size_t ci = 0; ci < sizeof(CASES) / sizeof(CASES[0]) && !failed; ci++)
        for (size_t di = 0; di < 5 && !failed; di++) {
            struct mm_case c = CASES[ci];
            if (DTYPES[di] == QVLM_DTYPE_Q8_0 || DTYPES[di] == QVLM_DTYPE_Q8_0X8) { /* rows are whole blocks */
                c.k = (c.k + 31) / 32 * 32;
                if (c.ldx < c.k) c.ldx = c.k;
            }
            float *x = malloc(sizeof(float) * (size_t)(c.n * c.ldx));
            float *wf = malloc(sizeof(float) * (size_t)(c.d * c.k));
            float *bias = malloc(sizeof(float) * (size_t)c.d);
            fill(x, (size_t)(c.n * c.ldx));
            fill(wf, (size_t)(c.d * c.k));
            fill(bias, (size_t)c.d);
            for (size_t pi = 0; pi < 2 && !failed; pi++)
                if (!check_case(&c, x, wf, bias, DTYPES[di], PRECS[pi], pool, why, sizeof(why))) failed = 1;
            free(x);
            free(wf);
            free(bias);
        }
    qvlm_pool_destroy(pool);
    if (failed) QTEST_FAIL("%s", why);
}

/* Denormals, signed zeros, tiny products (flushed in BF16), huge values, and sums that land
 * just below FLT_MIN, where "tiny after rounding" matters. */
static void test_isas_bitwise_special_values(void) {
    enum { N = 12, K = 70, D = 9 };
    float x[N * K], wf[D * K], bias[D];
    fill(x, N * K);
    fill(wf, D * K);
    fill(bias, D);
    const float specials[] = {0x1p-130f, -0x1p-140f, -0.0f, 0.0f, 0x1p-63f, -0x1p-63f, 0x1p-75f,
                              0x1p-100f, 1e30f, -3e-39f, FLT_MIN, -FLT_MIN, 0x1p-70f, 0x1p-60f,
                              0x1.fffffcp-127f /* the largest subnormal: RNE would give FLT_MIN */};
    size_t ns = sizeof(specials) / sizeof(specials[0]);
    for (int i = 0; i < N * K; i++)
        if (rng_next() % 3 == 0) x[i] = specials[rng_next() % ns];
    for (int i = 0; i < D * K; i++)
        if (rng_next() % 3 == 0) wf[i] = specials[rng_next() % ns];
    bias[0] = 0x1p-140f; /* a subnormal bias: read as zero in BF16 precision */
    bias[1] = -0.0f;
    /* Token 0 x row 0, lane 0: fma(2^-63, 2^-63, 0) = FLT_MIN, then + 2^-75 * -2^-75: the exact
     * sum FLT_MIN - 2^-150 is tiny after rounding (flushed) although fmaf gives FLT_MIN.
     * Token 1 x row 1: FLT_MIN - 1.5 * 2^-151 (flushed); token 2 x row 2: FLT_MIN - 2^-151
     * (rounds to FLT_MIN, kept). Everything else in those rows is zero. */
    const float crafted[3][2] = {{0x1p-75f, 0x1p-63f}, {0x1.8p-76f, 0x1p-63f}, {0x1p-76f, 0x1p-63f}};
    for (int c = 0; c < 3; c++) {
        memset(x + c * K, 0, sizeof(float) * K);
        memset(wf + c * K, 0, sizeof(float) * K);
        x[c * K + 0] = crafted[c][0];
        wf[c * K + 0] = -0x1p-75f;
        x[c * K + 1] = crafted[c][1];
        wf[c * K + 1] = 0x1p-63f;
    }
    qvlm_error err;
    qvlm_pool *pool;
    ASSERT_OK(qvlm_pool_create(2, &pool, &err), &err);
    char why[512];
    struct mm_case c = {N, K, D, K, D, 1};
    int ok = 1;
    for (size_t di = 0; di < 3 && ok; di++) /* F32, F16, BF16 (Q8_0 needs k % 32 == 0) */
        for (size_t pi = 0; pi < 2 && ok; pi++) ok = check_case(&c, x, wf, bias, DTYPES[di], PRECS[pi], pool, why, sizeof(why));
    struct mm_case c1 = {1, K, D, K, D, 0}; /* the direct (decode) path on the same rows */
    for (size_t pi = 0; pi < 2 && ok; pi++) ok = check_case(&c1, x, wf, bias, QVLM_DTYPE_BF16, PRECS[pi], pool, why, sizeof(why));
    qvlm_pool_destroy(pool);
    if (!ok) QTEST_FAIL("%s", why);

    /* The crafted outputs themselves: BF16 precision flushes the first two, keeps the third. */
    qvlm_bf16 wb[D * K];
    for (int i = 0; i < D * K; i++) wb[i] = qvlm_f32_to_bf16(wf[i]);
    float y[3][D];
    ref_matmul(&y[0][0], D, x, K, wb, QVLM_DTYPE_BF16, NULL, 3, K, D, QVLM_PREC_BF16);
    ASSERT_TRUE(y[0][0] == 0.0f);
    ASSERT_TRUE(y[1][1] == 0.0f);
    ASSERT_TRUE(y[2][2] == FLT_MIN);
    ref_matmul(&y[0][0], D, x, K, wb, QVLM_DTYPE_BF16, NULL, 3, K, D, QVLM_PREC_F32);
    ASSERT_TRUE(y[0][0] == FLT_MIN); /* IEEE keeps the subnormal grid */
}

/* ---- the reference against double precision ------------------------------------------------------ */

/* |ref - exact| bound. Each lane adds m = 2*nu exact products with one rounding each, the
 * reduction and the bias add 5 more: gamma(m + 5) * (sum |x w| + |b|), u = 2^-24, plus
 * FLT_MIN-sized absolute terms for underflow. BF16 precision first rounds each operand to
 * 8 significant bits (relative 2^-9 each): products move by <= (2^-8 + 2^-18) |x w|. */
static double bound(int64_t k, double sum_abs, double abs_b, qvlm_precision p, double max_abs_x, double max_abs_w) {
    int64_t m = 2 * ((k + 31) / 32) + 5;
    double u = 0x1p-24, g = m * u / (1 - m * u);
    double rel = p == QVLM_PREC_BF16 ? 0x1p-8 + 0x1p-18 : 0.0;
    double tol = rel * sum_abs + g * ((1 + rel) * sum_abs + abs_b);
    tol += (double)m * FLT_MIN;                                /* flushed / subnormal results */
    if (p == QVLM_PREC_BF16) tol += (double)k * FLT_MIN * (max_abs_x + max_abs_w); /* flushed operands */
    tol += (double)k * 0x1p-53 * sum_abs;                       /* the double sum itself */
    return tol;
}

/* I8 (cpu.h): each activation is off by at most d_b (1/2 + 2^-13) after quantisation
 * (d_b = amax_b / 127; the slack covers the f32 roundings of 127 / amax, x * id and d), so
 * the products are off by at most sum_b d_b (1/2 + 2^-13) sum_{i in b} |w_i|. The fold is
 * nb + 1 f32 roundings (the scale products and the fmas) of terms summing to at most
 * sum |x w| plus that error, and the bias add one more. */
static double bound_i8(const float *x, const float *wx, int64_t k, double sum_abs, double abs_b) {
    double qerr = 0;
    for (int64_t b = 0; b < k / 32; b++) {
        double amax = 0, sw = 0;
        for (int i = 0; i < 32; i++) {
            amax = fmax(amax, fabs(x[32 * b + i]));
            sw += fabs(wx[32 * b + i]);
        }
        qerr += amax / 127 * (0.5 + 0x1p-13) * sw;
    }
    int64_t m = k / 32 + 3;
    double u = 0x1p-24, g = m * u / (1 - m * u);
    return qerr + g * (sum_abs + qerr + abs_b) + (double)k * 0x1p-53 * sum_abs;
}

static void test_reference_within_derived_bound_of_double(void) {
    static const int64_t KS[] = {1, 24, 33, 96, 1000, 4096};
    enum { D = 5 };
    int checked = 0;
    for (size_t ki = 0; ki < sizeof(KS) / sizeof(KS[0]); ki++)
        for (size_t di = 0; di < 4; di++) {
            int64_t k = DTYPES[di] == QVLM_DTYPE_Q8_0 ? (KS[ki] + 31) / 32 * 32 : KS[ki];
            float *x = malloc(sizeof(float) * (size_t)k), *wf = malloc(sizeof(float) * (size_t)(D * k));
            float *wx = malloc(sizeof(float) * (size_t)k), bias[D], y[D];
            fill(x, (size_t)k);
            fill(wf, (size_t)(D * k));
            fill(bias, D);
            void *w = make_weights(wf, DTYPES[di], D, k);
            ASSERT_TRUE(w != NULL);
            for (size_t pi = 0; pi < 2; pi++) {
                qvlm_precision p = PRECS[pi];
                ref_matmul(y, D, x, k, w, DTYPES[di], bias, 1, k, D, p);
                for (int j = 0; j < D; j++) {
                    /* exact weights as stored, widened independently of the reference */
                    const uint8_t *row = (const uint8_t *)w + (size_t)j * qvlm_dtype_row_bytes(DTYPES[di], k);
                    if (DTYPES[di] == QVLM_DTYPE_Q8_0) qvlm_dequantize_q8_0(wx, row, k);
                    else qvlm_to_f32(wx, row, DTYPES[di], (size_t)k);
                    double exact = bias[j], sum_abs = 0, mx = 0, mw = 0;
                    for (int64_t i = 0; i < k; i++) {
                        exact += (double)x[i] * wx[i];
                        sum_abs += fabs((double)x[i] * wx[i]);
                        mx = fmax(mx, fabs(x[i]));
                        mw = fmax(mw, fabs(wx[i]));
                    }
                    double tol = DTYPES[di] == QVLM_DTYPE_Q8_0 && p == QVLM_PREC_BF16
                                     ? bound_i8(x, wx, k, sum_abs, fabs(bias[j]))
                                     : bound(k, sum_abs, fabs(bias[j]), p, mx, mw);
                    if (!(fabs(y[j] - exact) <= tol)) {
                        free(x), free(wf), free(wx), free(w);
                        QTEST_FAIL("%s w=%s k=%lld j=%d: ref %.9g exact %.9g |diff| %.3g > bound %.3g", prec_name(p),
                                   qvlm_dtype_name(DTYPES[di]), (long long)k, j, y[j], exact, fabs(y[j] - exact), tol);
                    }
                    checked++;
                }
            }
            free(x), free(wf), free(wx), free(w);
        }
    ASSERT_EQ_INT(checked, 6 * 4 * 2 * D);
}

/* The bound is not vacuous: the same check rejects a dot that drops its largest term (at
 * least sum|x w| / k, far above gamma(2k/32 + 5) * sum|x w|). */
static void test_bound_rejects_a_wrong_sum(void) {
    enum { K = 1000 };
    float x[K], w[K];
    fill(x, K);
    fill(w, K);
    double exact = 0, sum_abs = 0, biggest = 0;
    for (int i = 0; i < K; i++) {
        double p = (double)x[i] * w[i];
        exact += p;
        sum_abs += fabs(p);
        if (fabs(p) > fabs(biggest)) biggest = p;
    }
    double wrong = exact - biggest;
    ASSERT_TRUE(fabs(wrong - exact) > bound(K, sum_abs, 0, QVLM_PREC_F32, 1, 1));
}

/* ---- vdpbf16ps itself -------------------------------------------------------------------------- */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
__attribute__((target("avx512f,avx512bf16"))) static float hw_dpbf16(float acc, qvlm_bf16 x0, qvlm_bf16 x1,
                                                                     qvlm_bf16 w0, qvlm_bf16 w1) {
    __m512i xv = _mm512_set1_epi32((int)((uint32_t)x0 | (uint32_t)x1 << 16));
    __m512i wv = _mm512_set1_epi32((int)((uint32_t)w0 | (uint32_t)w1 << 16));
    return _mm512_cvtss_f32(_mm512_dpbf16_ps(_mm512_set1_ps(acc), (__m512bh)xv, (__m512bh)wv));
}
#endif

static void test_ref_fma_ftz_matches_vdpbf16ps(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512bf16")) {
        printf("  (skipped: no AVX512_BF16)\n");
        return;
    }
    long n = 0;
    for (long it = 0; it < 400000; it++) {
        qvlm_bf16 b[4];
        float acc;
        if (it % 2) { /* any bit patterns, denormals and all */
            for (int i = 0; i < 4; i++) b[i] = (qvlm_bf16)rng_next();
            uint32_t u = (uint32_t)rng_next();
            memcpy(&acc, &u, 4);
        } else { /* small magnitudes, so results straddle FLT_MIN */
            for (int i = 0; i < 4; i++)
                b[i] = qvlm_f32_to_bf16(ldexpf(1.0f + (float)(rng_next() % 256) / 256, -(int)(rng_next() % 80))) |
                       (qvlm_bf16)(rng_next() % 2 ? 0x8000 : 0);
            acc = ldexpf((float)(rng_next() % (1u << 24)) / (1 << 24) + 0.5f, -100 - (int)(rng_next() % 40)) *
                  (rng_next() % 2 ? 1.0f : -1.0f);
        }
        if (isnan(acc)) continue;
        float hw = hw_dpbf16(acc, b[0], b[1], b[2], b[3]);
        float ref = qvlm_ref_fma_ftz(qvlm_bf16_to_f32(b[1]), qvlm_bf16_to_f32(b[3]), acc); /* odd first */
        ref = qvlm_ref_fma_ftz(qvlm_bf16_to_f32(b[0]), qvlm_bf16_to_f32(b[2]), ref);
        if (!same_bits(hw, ref))
            QTEST_FAIL("acc %a x (%04x, %04x) w (%04x, %04x): vdpbf16ps %a, reference %a", acc, b[0], b[1], b[2], b[3],
                       hw, ref);
        n++;
    }
    ASSERT_TRUE(n > 300000);
    /* The crafted boundary cases of the special-values test, one step each. */
    ASSERT_TRUE(same_bits(hw_dpbf16(FLT_MIN, qvlm_f32_to_bf16(0x1p-75f), 0, qvlm_f32_to_bf16(-0x1p-75f), 0),
                          qvlm_ref_fma_ftz(0x1p-75f, -0x1p-75f, FLT_MIN)));
    ASSERT_TRUE(qvlm_ref_fma_ftz(0x1p-75f, -0x1p-75f, FLT_MIN) == 0.0f);
    ASSERT_TRUE(qvlm_ref_fma_ftz(0x1p-76f, -0x1p-75f, FLT_MIN) == FLT_MIN);
#else
    printf("  (skipped: not x86-64)\n");
#endif
}

/* ---- determinism: n, threads, split ---------------------------------------------------------------- */

static void test_rows_identical_for_any_n_and_thread_count(void) {
    enum { NMAX = 512, K = 1000 };
    qvlm_error err;
    qvlm_pool *pools[3];
    for (int i = 0; i < 3; i++) ASSERT_OK(qvlm_pool_create(i + 1, &pools[i], &err), &err);
    float *x = malloc(sizeof(float) * NMAX * K);
    fill(x, (size_t)NMAX * K);
    char why[256] = "";
    qvlm_isa best = qvlm_cpu_detect_isa();
    static const int64_t DS[] = {200, 16}; /* rows split across threads / tokens split */
    static const qvlm_dtype WT[] = {QVLM_DTYPE_BF16, QVLM_DTYPE_Q8_0X8};
    for (int isa = QVLM_ISA_SCALAR; isa <= (int)best && !why[0]; isa++)
        for (size_t di = 0; di < 4 && !why[0]; di++) {
            int64_t d = isa == QVLM_ISA_SCALAR ? DS[di % 2] / 4 : DS[di % 2]; /* the scalar path is slow */
            qvlm_dtype wt = WT[di / 2];
            int64_t k = wt == QVLM_DTYPE_Q8_0X8 ? K / 32 * 32 : K; /* x rows stay K apart */
            float *wf = malloc(sizeof(float) * (size_t)(d * k)), *bias = malloc(sizeof(float) * (size_t)d);
            fill(wf, (size_t)(d * k));
            fill(bias, (size_t)d);
            void *w = make_weights(wf, wt, d, k);
            float *y_all = malloc(sizeof(float) * (size_t)(NMAX * d)), *y = malloc(sizeof(float) * (size_t)(NMAX * d));
            for (size_t pi = 0; pi < 2 && !why[0]; pi++) {
                qvlm_cpu cpu = {pools[0], (qvlm_isa)isa, PRECS[pi]};
                void *work = work_for(&cpu, NMAX, K); /* reserved for 1 thread; re-sized below */
                free(work);
                cpu.pool = pools[2];
                work = work_for(&cpu, NMAX, K); /* 3 threads: the largest of the three */
                cpu.pool = pools[0];
                qvlm_cpu_matmul(&cpu, y_all, d, x, K, w, wt, bias, NMAX, k, d, work);
                for (int th = 0; th < 3 && !why[0]; th++) {
                    cpu.pool = pools[th];
                    qvlm_cpu_matmul(&cpu, y, d, x, K, w, wt, bias, NMAX, k, d, work);
                    if (first_diff(y, y_all, NMAX, d, d) >= 0)
                        snprintf(why, sizeof(why), "%s %s %s d=%lld: n=512 with %d threads differs", qvlm_isa_name((qvlm_isa)isa),
                                 prec_name(PRECS[pi]), qvlm_dtype_name(wt), (long long)d, th + 1);
                    for (int64_t t0 = 0; t0 + 7 <= NMAX && !why[0]; t0 += 101) { /* n = 7 windows */
                        qvlm_cpu_matmul(&cpu, y, d, x + t0 * K, K, w, wt, bias, 7, k, d, work);
                        if (first_diff(y, y_all + t0 * d, 7, d, d) >= 0)
                            snprintf(why, sizeof(why), "%s %s d=%lld: n=7 at token %lld with %d threads differs",
                                     qvlm_isa_name((qvlm_isa)isa), prec_name(PRECS[pi]), (long long)d, (long long)t0, th + 1);
                    }
                    for (int64_t t = 0; t < NMAX && !why[0]; t += 37) { /* n = 1: the decode GEMV */
                        qvlm_cpu_matmul(&cpu, y, d, x + t * K, K, w, wt, bias, 1, k, d, work);
                        if (first_diff(y, y_all + t * d, 1, d, d) >= 0)
                            snprintf(why, sizeof(why), "%s %s d=%lld: n=1 token %lld with %d threads differs",
                                     qvlm_isa_name((qvlm_isa)isa), prec_name(PRECS[pi]), (long long)d, (long long)t, th + 1);
                    }
                }
                free(work);
            }
            free(wf), free(bias), free(w), free(y_all), free(y);
        }
    free(x);
    for (int i = 0; i < 3; i++) qvlm_pool_destroy(pools[i]);
    if (why[0]) QTEST_FAIL("%s", why);
}

/* ---- several products of one x ------------------------------------------------------------------- */

/* qvlm_cpu_matmul_multi gives every part the bits of its own qvlm_cpu_matmul call: parts of
 * mixed dtypes and sizes (not multiples of 16), with and without bias, n = 1 / 5 / 300,
 * 1-3 threads, both precisions. */
static void test_multi_equals_separate_calls(void) {
    enum { K = 96, NMAX = 300 };
    qvlm_error err;
    qvlm_pool *pools[3];
    for (int i = 0; i < 3; i++) ASSERT_OK(qvlm_pool_create(i + 1, &pools[i], &err), &err);
    static const int64_t DS[4] = {200, 16, 37, 5};
    static const qvlm_dtype WT[4] = {QVLM_DTYPE_BF16, QVLM_DTYPE_Q8_0, QVLM_DTYPE_F32, QVLM_DTYPE_Q8_0X8};
    float *x = malloc(sizeof(float) * NMAX * K), *wf[4], *bias[4], *ya[4], *yb[4];
    void *w[4];
    fill(x, (size_t)NMAX * K);
    for (int i = 0; i < 4; i++) {
        wf[i] = malloc(sizeof(float) * (size_t)(DS[i] * K));
        bias[i] = malloc(sizeof(float) * (size_t)DS[i]);
        fill(wf[i], (size_t)(DS[i] * K));
        fill(bias[i], (size_t)DS[i]);
        w[i] = make_weights(wf[i], WT[i], DS[i], K);
        ya[i] = malloc(sizeof(float) * (size_t)(NMAX * DS[i]));
        yb[i] = malloc(sizeof(float) * (size_t)(NMAX * DS[i]));
    }
    char why[256] = "";
    static const int64_t NS[3] = {1, 5, NMAX};
    for (int th = 0; th < 3 && !why[0]; th++)
        for (size_t pi = 0; pi < 2 && !why[0]; pi++)
            for (int ni = 0; ni < 3 && !why[0]; ni++) {
                qvlm_cpu cpu = {pools[th], qvlm_cpu_detect_isa(), PRECS[pi]};
                void *work = work_for(&cpu, NMAX, K);
                qvlm_mm_part parts[4];
                for (int i = 0; i < 4; i++) {
                    qvlm_cpu_matmul(&cpu, ya[i], DS[i], x, K, w[i], WT[i], i == 2 ? NULL : bias[i], NS[ni], K, DS[i], work);
                    parts[i] = (qvlm_mm_part){yb[i], DS[i], w[i], WT[i], i == 2 ? NULL : bias[i], DS[i]};
                }
                qvlm_cpu_matmul_multi(&cpu, 4, parts, x, K, NS[ni], K, work);
                for (int i = 0; i < 4 && !why[0]; i++)
                    if (first_diff(yb[i], ya[i], NS[ni], DS[i], DS[i]) >= 0)
                        snprintf(why, sizeof(why), "%s n=%lld threads %d: part %d differs", prec_name(PRECS[pi]),
                                 (long long)NS[ni], th + 1, i);
                free(work);
            }
    for (int i = 0; i < 4; i++) free(wf[i]), free(bias[i]), free(w[i]), free(ya[i]), free(yb[i]);
    free(x);
    for (int i = 0; i < 3; i++) qvlm_pool_destroy(pools[i]);
    if (why[0]) QTEST_FAIL("%s", why);
}

/* ---- work size ------------------------------------------------------------------------------------- */

static void test_work_bytes_monotone_and_dtype_free(void) {
    qvlm_cpu cpu = {NULL, qvlm_cpu_detect_isa(), QVLM_PREC_BF16};
    size_t prev = 0;
    for (int64_t n = 1; n <= 1024; n *= 2) {
        size_t b = qvlm_cpu_matmul_work_bytes(&cpu, n, 3584, QVLM_DTYPE_BF16);
        ASSERT_TRUE(b >= prev);
        prev = b;
        ASSERT_EQ_INT(b, qvlm_cpu_matmul_work_bytes(&cpu, n, 3584, QVLM_DTYPE_Q8_0));
        ASSERT_EQ_INT(b, qvlm_cpu_matmul_work_bytes(&cpu, n, 3584, QVLM_DTYPE_F32));
        cpu.precision = QVLM_PREC_F32;
        ASSERT_EQ_INT(b, qvlm_cpu_matmul_work_bytes(&cpu, n, 3584, QVLM_DTYPE_F16));
        cpu.precision = QVLM_PREC_BF16;
        ASSERT_TRUE(qvlm_cpu_matmul_work_bytes(&cpu, n, 1024, QVLM_DTYPE_BF16) <= b);
    }
}

/* ---- Q8_0 ------------------------------------------------------------------------------------------- */

/* Q8_0X8 holds the blocks Q8_0 holds: every row widens to the same floats, the padding rows
 * of the last panel are zero, and the size is the padded row count's. */
static void test_q8_0x8_rows_equal_q8_0_rows(void) {
    enum { D = 13, K = 96 };
    float wf[D * K], a[K], b[K];
    fill(wf, D * K);
    uint8_t *q = make_weights(wf, QVLM_DTYPE_Q8_0, D, K), *x8 = make_weights(wf, QVLM_DTYPE_Q8_0X8, D, K);
    ASSERT_TRUE(q && x8);
    ASSERT_EQ_INT((long long)qvlm_q8_0x8_bytes(D, K), 16LL * qvlm_dtype_row_bytes(QVLM_DTYPE_Q8_0, K));
    for (int64_t j = 0; j < 16; j++) {
        qvlm_dequantize_q8_0x8_row(b, x8, j, K);
        if (j < D) qvlm_dequantize_q8_0(a, q + j * qvlm_dtype_row_bytes(QVLM_DTYPE_Q8_0, K), K);
        else memset(a, 0, sizeof(a));
        ASSERT_TRUE(memcmp(a, b, sizeof(a)) == 0);
    }
    free(q);
    free(x8);
}

/* The I8 activation quantiser on crafted blocks: what cpu.h promises (zero, tiny, NaN and inf
 * blocks; the largest element at +-127; ties to even; every q within d/2 of x), and each SIMD
 * quantiser this CPU runs bitwise equal to the reference one. */
static void test_i8_quantiser_special_blocks(void) {
    enum { NB = 8, K = 32 * NB };
    float x[K];
    for (int i = 0; i < K; i++) x[i] = rnd();
    for (int i = 0; i < 32; i++) x[i] = 0.0f;                      /* 0: all zero */
    for (int i = 32; i < 64; i++) x[i] = (i & 1 ? -1 : 1) * 0x1p-110f; /* 1: tiny */
    x[64 + 5] = NAN;                                                /* 2: NaN */
    x[96 + 31] = -INFINITY;                                         /* 3: inf */
    for (int i = 128; i < 160; i++) x[i] = (float)(i - 144) * 0.5f; /* 4: halves -> ties (amax 8, id 127/8) */
    x[160] = 127.0f, x[161] = -63.5f, x[162] = 62.5f, x[163] = 1e-30f; /* 5: exact ties at d = 1 */
    for (int i = 164; i < 192; i++) x[i] = 0.0f;
    for (int i = 192; i < 224; i++) x[i] = 0.0f;
    x[192 + 7] = -0x1p-100f;                                        /* 6: amax exactly 2^-100 */
    int8_t q[K];
    float d[NB];
    int32_t corr[NB];
    for (int b = 0; b < NB; b++) qvlm_ref_quantize_x_i8(x + 32 * b, q + 32 * b, &d[b], &corr[b]);
    ASSERT_TRUE(d[0] == 0.0f && d[1] == 0.0f && isnan(d[2]) && isnan(d[3]));
    for (int i = 0; i < 128; i++) ASSERT_EQ_INT(q[i], 0);
    ASSERT_EQ_INT(q[161], -64); /* -63.5 and 62.5 round to even */
    ASSERT_EQ_INT(q[162], 62);
    ASSERT_EQ_INT(q[160], 127);
    ASSERT_EQ_INT(q[163], 0);
    ASSERT_TRUE(d[5] == 1.0f && d[6] == 0x1p-100f / 127.0f && q[199] == -127);
    for (int b = 4; b < NB; b++) {
        int32_t sum = 0, amax_q = 0;
        for (int i = 0; i < 32; i++) {
            sum += q[32 * b + i];
            amax_q = abs(q[32 * b + i]) > amax_q ? abs(q[32 * b + i]) : amax_q;
            ASSERT_TRUE(fabsf(x[32 * b + i] - d[b] * q[32 * b + i]) <= d[b] * (0.5f + 0x1p-13f));
        }
        ASSERT_EQ_INT(amax_q, 127);
        ASSERT_EQ_INT(corr[b], -128 * sum);
    }
    /* the SIMD quantisers, through the packed x of a matmul context */
    size_t stride = qvlm_mm_i8_stride(K);
    uint8_t *xp = aligned_alloc(64, stride);
    qvlm_mm_ctx c = {.mode = QVLM_MM_I8, .x = x, .ldx = K, .xp = xp, .k = K, .i8_stride = stride};
    qvlm_isa best = qvlm_cpu_detect_isa();
    for (int isa = QVLM_ISA_AVX2; isa <= (int)best; isa++) {
#if defined(__x86_64__)
        memset(xp, 0x5a, stride);
        if (isa >= QVLM_ISA_AVX512_BF16) qvlm_mm_i8_pack_x_avx512(&c, 0, 1);
        else qvlm_mm_i8_pack_x_avx2(&c, 0, 1);
        ASSERT_TRUE(memcmp(xp, q, K) == 0);
        for (int b = 0; b < NB; b++) {
            float ds;
            int32_t cs;
            memcpy(&ds, xp + K + 4 * b, 4);
            memcpy(&cs, xp + K + 4 * NB + 4 * b, 4);
            ASSERT_TRUE(isnan(d[b]) ? isnan(ds) : ds == d[b]);
            ASSERT_EQ_INT(cs, corr[b]);
        }
#endif
    }
    free(xp);
}

static void test_q8_0_round_trip_within_half_scale(void) {
    enum { K = 32 * 64 };
    float x[K], back[K];
    fill(x, K);
    for (int i = 0; i < 32; i++) x[i] = 0.0f;           /* an all-zero block */
    for (int i = 32; i < 64; i++) x[i] = 1e-9f * (float)(i - 40); /* a subnormal-half scale */
    x[64] = 1000.0f;                                     /* a block with one outlier */
    uint8_t q[K / 32 * 34];
    qvlm_error err;
    ASSERT_OK(qvlm_quantize_q8_0(q, x, QVLM_DTYPE_F32, K, &err), &err);
    qvlm_dequantize_q8_0(back, q, K);
    for (int b = 0; b < K / 32; b++) {
        qvlm_f16 dh;
        memcpy(&dh, q + b * 34, 2);
        double d = qvlm_f16_to_f32(dh);
        /* d/2 for rounding to the nearest integer, plus one f32 rounding of x/d (|x/d| <= 128) */
        double tol = d * (0.5 + 128 * 0x1p-24);
        for (int i = 0; i < 32; i++) {
            double e = fabs((double)x[b * 32 + i] - (double)back[b * 32 + i]);
            if (!(e <= tol)) QTEST_FAIL("block %d elem %d: x %.9g back %.9g err %.3g > %.3g", b, i, x[b * 32 + i], back[b * 32 + i], e, tol);
            ASSERT_TRUE((int8_t)q[b * 34 + 2 + i] >= -127);
        }
    }
    ASSERT_TRUE(back[0] == 0.0f);
    ASSERT_EQ_INT((int8_t)q[2 * 34 + 2], 127); /* a block's max maps to 127 */
    /* bf16 storage quantises like the same values in f32 */
    qvlm_bf16 xb[K];
    float xw[K];
    uint8_t q2[K / 32 * 34];
    for (int i = 0; i < K; i++) xb[i] = qvlm_f32_to_bf16(x[i]), xw[i] = qvlm_bf16_to_f32(xb[i]);
    ASSERT_OK(qvlm_quantize_q8_0(q, xb, QVLM_DTYPE_BF16, K, &err), &err);
    ASSERT_OK(qvlm_quantize_q8_0(q2, xw, QVLM_DTYPE_F32, K, &err), &err);
    ASSERT_TRUE(memcmp(q, q2, sizeof(q)) == 0);
    /* invalid inputs */
    ASSERT_FAILS(qvlm_quantize_q8_0(q, x, QVLM_DTYPE_F32, 40, &err), QVLM_E_INVALID, &err, "multiple of 32");
    x[5] = INFINITY;
    ASSERT_FAILS(qvlm_quantize_q8_0(q, x, QVLM_DTYPE_F32, K, &err), QVLM_E_CORRUPT, &err, "element 5");
    x[5] = 1e10f;
    ASSERT_FAILS(qvlm_quantize_q8_0(q, x, QVLM_DTYPE_F32, K, &err), QVLM_E_CORRUPT, &err, "overflows");
}

int main(void) {
    RUN(test_ref_fma_ftz_matches_vdpbf16ps);
    RUN(test_reference_within_derived_bound_of_double);
    RUN(test_bound_rejects_a_wrong_sum);
    RUN(test_isas_bitwise_random_and_edge_shapes);
    RUN(test_isas_bitwise_special_values);
    RUN(test_rows_identical_for_any_n_and_thread_count);
    RUN(test_multi_equals_separate_calls);
    RUN(test_work_bytes_monotone_and_dtype_free);
    RUN(test_q8_0_round_trip_within_half_scale);
    RUN(test_i8_quantiser_special_blocks);
    RUN(test_q8_0x8_rows_equal_q8_0_rows);
    return qtest_done();
}
