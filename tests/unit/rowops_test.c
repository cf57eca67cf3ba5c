/* rowops_test.c - the elementwise, norm and conv ops: the optimised kernels (AVX-512 where
 * the CPU has it) give the scalar reference's bits on random and edge shapes (odd sizes for
 * the vector tails, one row, long rows), whatever the thread count or how a conv sequence is
 * cut into calls; the fused add+norm ops give the unfused ops' bits; vmath.h's functions are
 * within their stated error of libm / double precision, and its AVX-512 twins of the same bits. */
#include <math.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/vmath.h"
#include "qtest.h"

static uint64_t rng = 0x853c49e6748fea9bull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static qvlm_backend *backend(const char *isa, int threads) {
    qvlm_error err;
    qvlm_backend *be = NULL;
    if (isa) setenv("QVLM_ISA", isa, 1);
    qvlm_backend_params bp = {QVLM_BACKEND_CPU, threads, QVLM_COMPUTE_F32};
    int rc = qvlm_backend_create(&bp, &be, &err);
    unsetenv("QVLM_ISA");
    if (rc) return NULL;
    if (isa && !strstr(qvlm_backend_name(be), isa)) {
        qvlm_backend_destroy(be);
        return NULL;
    }
    return be;
}

/* ---- vmath ------------------------------------------------------------------------------------- */

static double ulp_err(float got, double want) {
    if (want == 0) return got == 0 ? 0 : INFINITY;
    double ulp = ldexp(1.0, ilogb(want) - 23);
    if (fabs(want) < 1.1754943508222875e-38) ulp = ldexp(1.0, -149);
    return fabs((double)got - want) / ulp;
}

static void test_vexp_accuracy(void) {
    double worst = 0;
    for (float x = -103.0f; x < 88.7f; x += 0.0137f) worst = fmax(worst, ulp_err(qvlm_vexp(x), exp((double)x)));
    for (int i = 0; i < 200000; i++) {
        float x = frand() * 2.0f;
        worst = fmax(worst, ulp_err(qvlm_vexp(x), exp((double)x)));
    }
    printf("  vexp: worst %.2f ulp\n", worst);
    ASSERT_TRUE(worst <= 2.0);
    ASSERT_TRUE(qvlm_vexp(-INFINITY) == 0.0f && qvlm_vexp(-200.0f) == 0.0f);
    ASSERT_TRUE(isinf(qvlm_vexp(100.0f)) && isinf(qvlm_vexp(INFINITY)));
    ASSERT_TRUE(isnan(qvlm_vexp(NAN)));
    ASSERT_TRUE(qvlm_vexp(0.0f) == 1.0f && qvlm_vexp(-0.0f) == 1.0f);
    /* subnormal results are rounded, not flushed */
    ASSERT_TRUE(qvlm_vexp(-100.0f) > 0.0f && ulp_err(qvlm_vexp(-100.0f), exp(-100.0)) <= 2.0);
    /* the activations, against double */
    double ws = 0, wg = 0;
    for (float x = -30.0f; x < 30.0f; x += 0.00731f) {
        /* gelu_tanh = 0.5 x (1 + tanh u) = x sigmoid(2u), the latter without cancellation */
        double xd = x, sg = 1 / (1 + exp(-xd)), u = 0.7978845608028654 * (xd + 0.044715 * xd * xd * xd);
        double gl = xd / (1 + exp(-2 * u));
        ws = fmax(ws, fabs(qvlm_vsilu(x) - xd * sg) / fmax(fabs(xd * sg), 1e-30));
        /* relative to the conditioning of exp(-2u): an f32 u carries ~6e-8 |u| absolute error */
        wg = fmax(wg, fabs(qvlm_vgelu_tanh(x) - gl) / fmax(fabs(gl), 1e-30) / (1 + 2 * fabs(u)));
    }
    printf("  silu rel err %.3g, gelu_tanh rel err %.3g\n", ws, wg);
    fflush(stdout);
    ASSERT_TRUE(ws < 1e-6 && wg < 2e-6);
}

/* ---- the ops, reference vs optimised ------------------------------------------------------------ */

typedef struct bufs {
    float *x, *x2, *d, *z, *y;
    qvlm_bf16 *w, *b;
    qvlm_tensor tw, tb;
} bufs;

static void fill(float *p, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) p[i] = scale * frand();
}

/* Run every op on backend be with inputs derived from seed; outputs concatenated into out. */
static int64_t run_ops(qvlm_backend *be, int64_t rows, int64_t dim, uint64_t seed, float *out) {
    qvlm_error err;
    qvlm_stream *s;
    if (qvlm_stream_create(be, &s, &err)) return -1;
    rng = seed;
    const int64_t n = rows * dim;
    float *x = malloc((size_t)n * 4), *x2 = malloc((size_t)n * 4), *d = malloc((size_t)n * 4),
          *z = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
    qvlm_bf16 *w = malloc((size_t)dim * 2), *b = malloc((size_t)dim * 2);
    fill(x, n, 4), fill(d, n, 1), fill(z, n, 6);
    for (int64_t i = 0; i < dim; i++) w[i] = qvlm_f32_to_bf16(frand()), b[i] = qvlm_f32_to_bf16(frand());
    qvlm_tensor tw = {QVLM_DTYPE_BF16, 1, {dim}, w}, tb = {QVLM_DTYPE_BF16, 1, {dim}, b};
    int64_t o = 0;
#define EMIT(buf)                                                                                          \
    do {                                                                                                   \
        memcpy(out + o, buf, (size_t)n * 4);                                                               \
        o += n;                                                                                            \
    } while (0)
    qvlm_op_rms_norm(s, y, dim, x, dim, &tw, 1.0f, 1e-6f, rows, dim);
    EMIT(y);
    qvlm_op_gated_rms_norm(s, y, x, z, &tw, 1e-6f, rows, dim);
    EMIT(y);
    qvlm_op_layer_norm(s, y, x, &tw, &tb, 1e-6f, rows, dim);
    EMIT(y);
    qvlm_op_add(s, y, x, d, n);
    EMIT(y);
    qvlm_op_silu_mul(s, y, dim, z, dim, x, dim, rows, dim);
    EMIT(y);
    qvlm_op_sigmoid_mul(s, y, dim, x, dim, z, dim, dim, rows, dim);
    EMIT(y);
    qvlm_op_sigmoid_mul(s, y, dim, x, dim, z, dim, 1, rows, dim);
    EMIT(y);
    memcpy(y, z, (size_t)n * 4);
    qvlm_op_gelu(s, y, n, true);
    EMIT(y);
    memcpy(y, x, (size_t)n * 4);
    qvlm_op_gelu(s, y, n, false);
    EMIT(y);
    /* fused add + norm: equal to add then norm, on this backend too */
    memcpy(x2, x, (size_t)n * 4);
    qvlm_op_add_rms_norm(s, y, x2, d, &tw, 1.0f, 1e-6f, rows, dim);
    EMIT(y);
    EMIT(x2);
    float *y2 = malloc((size_t)n * 4), *x3 = malloc((size_t)n * 4);
    qvlm_op_add(s, x3, x, d, n);
    qvlm_op_rms_norm(s, y2, dim, x3, dim, &tw, 1.0f, 1e-6f, rows, dim);
    bool fused_same = memcmp(y, y2, (size_t)n * 4) == 0 && memcmp(x2, x3, (size_t)n * 4) == 0;
    memcpy(x2, x, (size_t)n * 4);
    qvlm_op_add_layer_norm(s, y, x2, d, &tw, &tb, 1e-6f, rows, dim);
    EMIT(y);
    qvlm_op_layer_norm(s, y2, x3, &tw, &tb, 1e-6f, rows, dim);
    fused_same &= memcmp(y, y2, (size_t)n * 4) == 0;
    free(y2), free(x3);
    free(x), free(x2), free(d), free(z), free(y), free(w), free(b);
    qvlm_stream_destroy(s);
    return fused_same ? o : -2;
#undef EMIT
}

static void test_ops_bitwise(void) {
    static const int64_t shapes[][2] = {{1, 1024}, {33, 1024}, {3, 17}, {5, 7}, {2, 16}, {1, 3584}, {64, 100}, {4, 768}};
    qvlm_backend *ref = backend("scalar", 2), *opt[2] = {backend(NULL, 1), backend(NULL, 3)};
    ASSERT_TRUE(ref && opt[0] && opt[1]);
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        const int64_t rows = shapes[si][0], dim = shapes[si][1], total = 12 * rows * dim;
        float *a = malloc((size_t)total * 4), *b = malloc((size_t)total * 4);
        int64_t na = run_ops(ref, rows, dim, 1234 + si, a);
        bool ok = na == total;
        for (int th = 0; th < 2 && ok; th++) {
            int64_t nb = run_ops(opt[th], rows, dim, 1234 + si, b);
            ok = nb == total && memcmp(a, b, (size_t)total * 4) == 0;
            if (!ok) {
                int64_t first = 0;
                while (nb == total && first < total && memcmp(a + first, b + first, 4) == 0) first++;
                printf("  %lld x %lld, threads %d: op %lld element %lld: %a vs %a (ops returned %lld/%lld)\n",
                       (long long)rows, (long long)dim, th ? 3 : 1, (long long)(first / (rows * dim)),
                       (long long)(first % (rows * dim)), first < total ? a[first] : 0, first < total ? b[first] : 0,
                       (long long)na, (long long)nb);
            }
        }
        free(a), free(b);
        ASSERT_TRUE(ok);
    }
    qvlm_backend_destroy(ref), qvlm_backend_destroy(opt[0]), qvlm_backend_destroy(opt[1]);
}

/* conv1d + SiLU over a sequence cut into calls: the same bits as one call, on every ISA and
 * thread count (the state carries exactly the last K-1 inputs). */
static void conv_run(qvlm_backend *be, const float *x, int64_t T, int64_t C, int64_t K, const qvlm_tensor *w,
                     const int64_t *cuts, int n_cuts, float *y, float *state) {
    qvlm_error err;
    qvlm_stream *s;
    if (qvlm_stream_create(be, &s, &err)) return;
    memset(state, 0, (size_t)((K - 1) * C) * 4);
    int64_t t0 = 0;
    for (int c = 0; c <= n_cuts; c++) {
        int64_t t1 = c < n_cuts ? cuts[c] : T;
        if (t1 > t0) qvlm_op_conv1d_silu(s, y + t0 * C, x + t0 * (C + 3), C + 3, state, w, t1 - t0, C, K);
        t0 = t1;
    }
    qvlm_stream_destroy(s);
}

static void test_conv_bitwise(void) {
    static const int64_t shapes[][3] = {{70, 6144, 4}, {1, 40, 4}, {5, 17, 3}, {130, 96, 4}, {2, 33, 5}};
    qvlm_backend *ref = backend("scalar", 2), *opt[2] = {backend(NULL, 1), backend(NULL, 3)};
    ASSERT_TRUE(ref && opt[0] && opt[1]);
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        const int64_t T = shapes[si][0], C = shapes[si][1], K = shapes[si][2];
        float *x = malloc((size_t)(T * (C + 3)) * 4), *ya = malloc((size_t)(T * C) * 4), *yb = malloc((size_t)(T * C) * 4);
        float *sa = malloc((size_t)((K - 1) * C) * 4), *sb = malloc((size_t)((K - 1) * C) * 4);
        qvlm_bf16 *w = malloc((size_t)(C * K) * 2);
        fill(x, T * (C + 3), 3);
        for (int64_t i = 0; i < C * K; i++) w[i] = qvlm_f32_to_bf16(frand());
        qvlm_tensor tw = {QVLM_DTYPE_BF16, 2, {C, K}, w};
        int64_t one[1] = {T}, cuts[3] = {1, QVLM_MAX(T / 2, 1), QVLM_MIN(QVLM_MAX(T / 2, 1) + 1, T)};
        conv_run(ref, x, T, C, K, &tw, one, 0, ya, sa);
        bool ok = true;
        for (int v = 0; v < 3 && ok; v++) {
            qvlm_backend *be = v == 0 ? ref : opt[v - 1];
            conv_run(be, x, T, C, K, &tw, cuts, 3, yb, sb);
            ok = memcmp(ya, yb, (size_t)(T * C) * 4) == 0 && memcmp(sa, sb, (size_t)((K - 1) * C) * 4) == 0;
            if (!ok) printf("  conv T %lld C %lld K %lld: variant %d differs\n", (long long)T, (long long)C, (long long)K, v);
        }
        free(x), free(ya), free(yb), free(sa), free(sb), free(w);
        ASSERT_TRUE(ok);
    }
    qvlm_backend_destroy(ref), qvlm_backend_destroy(opt[0]), qvlm_backend_destroy(opt[1]);
}

/* qvlm_op_argmax's default (the row read in pieces) against the scan that defines it, on rows
 * longer than a piece: the maximum repeated across pieces, NaN at 0 (the scan stays at 0) and
 * later (never chosen), all -inf, a tie at the start. */
static void test_argmax(void) {
    enum { R = 5, N = 5000 };
    float *x = malloc((size_t)R * N * sizeof(float));
    fill(x, R * N, 7);
    x[3000] = 9.0f, x[4999] = 9.0f, x[2047] = 9.0f;    /* row 0: 2047, the last of the first piece */
    x[N] = NAN, x[N + 4000] = 50.0f;                   /* row 1: 0 */
    x[2 * N + 1] = NAN, x[2 * N + 2048] = 50.0f;       /* row 2: 2048 */
    for (int i = 0; i < N; i++) x[3 * N + i] = -INFINITY; /* row 3: 0 */
    x[4 * N] = 60.0f, x[4 * N + 1] = 60.0f;            /* row 4: 0 */
    const int32_t want[R] = {2047, 0, 2048, 0, 0};
    qvlm_backend *be = backend(NULL, 2);
    qvlm_stream *s = NULL;
    qvlm_error err;
    ASSERT_TRUE(be && qvlm_stream_create(be, &s, &err) == QVLM_OK);
    int32_t ids[R];
    qvlm_op_argmax(s, ids, x, R, N);
    for (int r = 0; r < R; r++) {
        ASSERT_EQ_INT(ids[r], want[r]);
        ASSERT_EQ_INT(ids[r], (int)qvlm_argmax_scan(x + (size_t)r * N, N));
    }
    qvlm_op_argmax(s, ids, x + N, 1, 1); /* a row of one NaN */
    ASSERT_EQ_INT(ids[0], 0);
    qvlm_stream_destroy(s);
    qvlm_backend_destroy(be);
    free(x);
}

int main(void) {
    RUN(test_vexp_accuracy);
    RUN(test_argmax);
    RUN(test_ops_bitwise);
    RUN(test_conv_bitwise);
    return qtest_done();
}
