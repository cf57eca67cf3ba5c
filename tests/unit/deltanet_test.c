/* deltanet_test.c - the Gated DeltaNet op: the chunked prefill form and the token-by-token
 * recurrence compute the same function (issue: agree to <= 1e-4), with the state carried
 * across calls split at any position, with grouped value heads, and independent of threads. */
#include <math.h>

#include "core/dtype.h"
#include "kernels/backend.h"
#include "qtest.h"

typedef struct {
    qvlm_gdn_dims d;
    int64_t T;
    float *qkv, *a, *b, A_log[64], dt_bias[64];
    qvlm_tensor tA, tdt;
} problem;

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static void make(problem *p, int64_t Hk, int64_t Hv, int64_t dk, int64_t dv, int64_t T) {
    p->d = (qvlm_gdn_dims){Hk, Hv, dk, dv};
    p->T = T;
    int64_t cd = 2 * Hk * dk + Hv * dv;
    p->qkv = malloc((size_t)(T * cd) * sizeof(float));
    p->a = malloc((size_t)(T * Hv) * sizeof(float));
    p->b = malloc((size_t)(T * Hv) * sizeof(float));
    for (int64_t i = 0; i < T * cd; i++) p->qkv[i] = frand();
    for (int64_t i = 0; i < T * Hv; i++) p->a[i] = 2 * frand(), p->b[i] = 2 * frand();
    for (int64_t h = 0; h < Hv; h++) {
        p->A_log[h] = logf(1.0f + 15.0f * (frand() + 1) / 2); /* A in [1, 16] like the fixtures */
        p->dt_bias[h] = frand();
    }
    p->tA = (qvlm_tensor){QVLM_DTYPE_F32, 1, {Hv}, p->A_log};
    p->tdt = (qvlm_tensor){QVLM_DTYPE_F32, 1, {Hv}, p->dt_bias};
}

static void unmake(problem *p) {
    free(p->qkv);
    free(p->a);
    free(p->b);
}

/* Run tokens [0, T) as calls split at the given cut points; chunked or recurrent. */
static void run(qvlm_stream *s, problem *p, const int64_t *cuts, int n_cuts, bool chunked, float *out, float *S) {
    const int64_t cd = 2 * p->d.n_k_heads * p->d.k_dim + p->d.n_v_heads * p->d.v_dim, Hv = p->d.n_v_heads;
    memset(S, 0, (size_t)(Hv * p->d.k_dim * p->d.v_dim) * sizeof(float));
    int64_t t0 = 0;
    for (int c = 0; c <= n_cuts; c++) {
        int64_t t1 = c < n_cuts ? cuts[c] : p->T;
        if (!chunked) {
            for (int64_t t = t0; t < t1; t++)
                qvlm_op_gated_delta(s, out + t * Hv * p->d.v_dim, p->qkv + t * cd, cd, p->a + t * Hv, p->b + t * Hv, Hv,
                                    &p->tA, &p->tdt, S, &p->d, 1, false);
        } else if (t1 > t0) {
            qvlm_op_gated_delta(s, out + t0 * Hv * p->d.v_dim, p->qkv + t0 * cd, cd, p->a + t0 * Hv, p->b + t0 * Hv, Hv,
                                &p->tA, &p->tdt, S, &p->d, t1 - t0, true);
        }
        t0 = t1;
    }
}

static double max_diff(const float *x, const float *y, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)x[i] - y[i]);
        if (isnan(d)) return INFINITY;
        if (d > m) m = d;
    }
    return m;
}

static void check_forms(int threads, int64_t Hk, int64_t Hv, int64_t dk, int64_t dv, int64_t T, const int64_t *cuts,
                        int n_cuts) {
    qvlm_error err;
    qvlm_backend *be;
    qvlm_stream *s;
    qvlm_backend_params bp = {QVLM_BACKEND_CPU, threads, QVLM_COMPUTE_F32};
    ASSERT_OK(qvlm_backend_create(&bp, &be, &err), &err);
    ASSERT_OK(qvlm_stream_create(be, &s, &err), &err);
    problem p;
    make(&p, Hk, Hv, dk, dv, T);
    size_t n_out = (size_t)(T * Hv * dv), n_s = (size_t)(Hv * dk * dv);
    float *o_rec = malloc(n_out * 4), *o_chk = malloc(n_out * 4), *o_cut = malloc(n_out * 4);
    float *s_rec = malloc(n_s * 4), *s_chk = malloc(n_s * 4), *s_cut = malloc(n_s * 4);
    run(s, &p, NULL, 0, false, o_rec, s_rec);
    run(s, &p, NULL, 0, true, o_chk, s_chk);
    run(s, &p, cuts, n_cuts, true, o_cut, s_cut);
    double d_out = max_diff(o_rec, o_chk, (int64_t)n_out), d_state = max_diff(s_rec, s_chk, (int64_t)n_s);
    double d_cut = max_diff(o_rec, o_cut, (int64_t)n_out), d_cut_state = max_diff(s_rec, s_cut, (int64_t)n_s);
    double mag = 0;
    for (size_t i = 0; i < n_out; i++) mag = fmax(mag, fabs(o_rec[i]));
    unmake(&p);
    free(o_rec), free(o_chk), free(o_cut), free(s_rec), free(s_chk), free(s_cut);
    qvlm_stream_destroy(s);
    qvlm_backend_destroy(be);
    printf("  Hk %lld Hv %lld dk %lld dv %lld T %lld: |out| <= %.3g, chunked-recurrent out %.3g state %.3g, "
           "split chunked out %.3g state %.3g\n",
           (long long)Hk, (long long)Hv, (long long)dk, (long long)dv, (long long)T, mag, d_out, d_state, d_cut,
           d_cut_state);
    ASSERT_TRUE(mag > 1e-2); /* the outputs are not trivially zero */
    ASSERT_TRUE(d_out <= 1e-4 && d_state <= 1e-4);
    ASSERT_TRUE(d_cut <= 1e-4 && d_cut_state <= 1e-4);
}

static void test_tiny_shapes(void) {
    int64_t cuts[] = {5, 27};
    check_forms(2, 2, 4, 16, 24, 40, cuts, 2); /* the dense fixture's GDN shape, GQA 1:2 */
}

static void test_multi_chunk_gqa(void) {
    int64_t cuts[] = {1, 64, 100, 191};
    check_forms(2, 2, 6, 16, 16, 200, cuts, 4); /* the MoE fixture's shape, GQA 1:3, 4 chunks */
}

static void test_real_head_dims(void) {
    int64_t cuts[] = {63, 130};
    check_forms(3, 2, 4, 128, 128, 150, cuts, 2); /* dk = dv = 128 as in every Qwen3.5 size */
}

/* The chunked form's bits depend only on where calls start, never on the thread count. */
static void test_thread_independent(void) {
    qvlm_error err;
    problem p;
    make(&p, 2, 4, 32, 32, 130);
    float *o[3], *st[3];
    int threads[3] = {1, 2, 3};
    for (int k = 0; k < 3; k++) {
        qvlm_backend *be;
        qvlm_stream *s;
        qvlm_backend_params bp = {QVLM_BACKEND_CPU, threads[k], QVLM_COMPUTE_F32};
        ASSERT_OK(qvlm_backend_create(&bp, &be, &err), &err);
        ASSERT_OK(qvlm_stream_create(be, &s, &err), &err);
        o[k] = malloc(130 * 4 * 32 * 4);
        st[k] = malloc(4 * 32 * 32 * 4);
        int64_t cuts[] = {70};
        run(s, &p, cuts, 1, true, o[k], st[k]);
        qvlm_stream_destroy(s);
        qvlm_backend_destroy(be);
    }
    bool same = memcmp(o[0], o[1], 130 * 4 * 32 * 4) == 0 && memcmp(o[0], o[2], 130 * 4 * 32 * 4) == 0 &&
                memcmp(st[0], st[1], 4 * 32 * 32 * 4) == 0 && memcmp(st[0], st[2], 4 * 32 * 32 * 4) == 0;
    for (int k = 0; k < 3; k++) free(o[k]), free(st[k]);
    unmake(&p);
    ASSERT_TRUE(same);
}

/* One run of the op on a fresh backend capped at `isa` ("scalar" or NULL for the best). */
static void run_isa(const char *isa, int threads, problem *p, const int64_t *cuts, int n_cuts, bool chunked,
                    float *out, float *S) {
    qvlm_error err;
    qvlm_backend *be = NULL;
    qvlm_stream *s = NULL;
    if (isa) setenv("QVLM_ISA", isa, 1);
    qvlm_backend_params bp = {QVLM_BACKEND_CPU, threads, QVLM_COMPUTE_F32};
    int rc = qvlm_backend_create(&bp, &be, &err);
    unsetenv("QVLM_ISA");
    if (rc == 0) rc = qvlm_stream_create(be, &s, &err);
    /* The scalar run must really be scalar, or the comparison proves nothing. */
    if (rc == 0 && isa && !strstr(qvlm_backend_name(be), isa)) rc = -1;
    if (rc == 0) run(s, p, cuts, n_cuts, chunked, out, S);
    else memset(out, 0xff, 4), memset(S, 0xff, 4);
    qvlm_stream_destroy(s);
    qvlm_backend_destroy(be);
}

/* The optimised kernel (AVX-512 where the CPU has it) against the scalar reference: the same
 * bits, both forms, on odd sizes (vector tails), 1 token, a partial last chunk, several chunks,
 * and the real head size; and the same bits with 1 or 3 threads. */
static void test_isa_bitwise(void) {
    static const int64_t shapes[][5] = {
        /* Hk, Hv, dk, dv, T */
        {2, 4, 16, 24, 40}, {1, 2, 20, 33, 1}, {1, 3, 7, 5, 65}, {2, 2, 40, 70, 200}, {1, 2, 128, 128, 130},
        {1, 1, 17, 129, 64},
    };
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        const int64_t *sh = shapes[si];
        problem p;
        make(&p, sh[0], sh[1], sh[2], sh[3], sh[4]);
        size_t n_out = (size_t)(sh[4] * sh[1] * sh[3]), n_s = (size_t)(sh[1] * sh[2] * sh[3]);
        float *o_ref = calloc(n_out, 4), *o_opt = calloc(n_out, 4), *s_ref = calloc(n_s, 4), *s_opt = calloc(n_s, 4);
        int64_t cuts[] = {sh[4] / 3};
        for (int chunked = 0; chunked < 2; chunked++) {
            for (int th = 1; th <= 3; th += 2) {
                run_isa("scalar", 2, &p, cuts, 1, chunked, o_ref, s_ref);
                run_isa(NULL, th, &p, cuts, 1, chunked, o_opt, s_opt);
                bool same = memcmp(o_ref, o_opt, n_out * 4) == 0 && memcmp(s_ref, s_opt, n_s * 4) == 0;
                if (!same) {
                    printf("  shape %zu (dk %lld dv %lld T %lld) chunked %d threads %d: out diff %.3g state diff %.3g\n",
                           si, (long long)sh[2], (long long)sh[3], (long long)sh[4], chunked, th,
                           max_diff(o_ref, o_opt, (int64_t)n_out), max_diff(s_ref, s_opt, (int64_t)n_s));
                    free(o_ref), free(o_opt), free(s_ref), free(s_opt);
                    unmake(&p);
                    ASSERT_TRUE(same);
                }
            }
        }
        free(o_ref), free(o_opt), free(s_ref), free(s_opt);
        unmake(&p);
    }
}

int main(void) {
    RUN(test_isa_bitwise);
    RUN(test_tiny_shapes);
    RUN(test_multi_chunk_gqa);
    RUN(test_real_head_dims);
    RUN(test_thread_independent);
    return qtest_done();
}
