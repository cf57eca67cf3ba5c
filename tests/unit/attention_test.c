/* attention_test.c - the attention ops: the optimised kernels (AVX-512 where the CPU has it)
 * give the scalar reference's bits on random and edge shapes (odd head sizes, 1 token, tiles
 * cut by KV blocks, long prompts, several segments), a query's bits do not depend on how many
 * queries are computed together (decode vs prefill) or on the thread count, and the
 * reference agrees with a plain double-precision softmax attention. */
#include <math.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "qtest.h"

static uint64_t rng = 0x243f6a8885a308d3ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* A backend capped at `isa` ("scalar"), or the best ISA for NULL; NULL if the cap failed. */
static qvlm_compute_precision g_prec = QVLM_COMPUTE_F32;

static qvlm_backend *backend(const char *isa, int threads) {
    qvlm_error err;
    qvlm_backend *be = NULL;
    if (isa) setenv("QVLM_ISA", isa, 1);
    qvlm_backend_params bp = {QVLM_BACKEND_CPU, threads, g_prec};
    int rc = qvlm_backend_create(&bp, &be, &err);
    unsetenv("QVLM_ISA");
    if (rc) return NULL;
    if (isa && !strstr(qvlm_backend_name(be), isa)) {
        qvlm_backend_destroy(be);
        return NULL;
    }
    return be;
}

/* ---- text: causal over paged KV ---------------------------------------------------------------- */

typedef struct text_case {
    int64_t n_heads, n_kv, d, bt, n_tok; /* n_tok tokens in the sequence */
} text_case;

typedef struct text_data {
    text_case c;
    float *q, *k, *v; /* [n_tok][heads][d] */
    int64_t n_blocks;
} text_data;

static void text_make(text_data *x, text_case c) {
    x->c = c;
    x->q = malloc((size_t)(c.n_tok * c.n_heads * c.d) * 4);
    x->k = malloc((size_t)(c.n_tok * c.n_kv * c.d) * 4);
    x->v = malloc((size_t)(c.n_tok * c.n_kv * c.d) * 4);
    for (int64_t i = 0; i < c.n_tok * c.n_heads * c.d; i++) x->q[i] = 2 * frand();
    for (int64_t i = 0; i < c.n_tok * c.n_kv * c.d; i++) x->k[i] = 2 * frand(), x->v[i] = frand();
    x->n_blocks = (c.n_tok + c.bt - 1) / c.bt;
}

static void text_free(text_data *x) { free(x->q), free(x->k), free(x->v); }

/* Run the sequence as calls of the given sizes (sum = n_tok): store K/V, attend. */
static void text_run(qvlm_backend *be, const text_data *x, const int64_t *calls, int n_calls, float *out) {
    qvlm_error err;
    qvlm_stream *s;
    if (qvlm_stream_create(be, &s, &err)) return;
    const text_case *c = &x->c;
    size_t layer = (size_t)(c->n_kv * c->bt * c->d) * 4;
    void **blocks = calloc((size_t)x->n_blocks, sizeof(void *));
    for (int64_t b = 0; b < x->n_blocks; b++) {
        blocks[b] = qvlm_backend_alloc(be, 2 * layer);
        memset(blocks[b], 0x7f, 2 * layer); /* unwritten keys are huge: reading one would show */
    }
    qvlm_kv_view kv = {blocks, x->n_blocks, c->bt, 0, layer};
    int64_t pos = 0;
    for (int i = 0; i < n_calls; i++) {
        int64_t T = calls[i];
        qvlm_op_kv_store(s, &kv, x->k + pos * c->n_kv * c->d, c->n_kv * c->d, x->v + pos * c->n_kv * c->d, c->n_kv * c->d,
                         pos, T, c->n_kv, c->d);
        qvlm_op_attention(s, out + pos * c->n_heads * c->d, x->q + pos * c->n_heads * c->d, c->n_heads * c->d, &kv, pos, T,
                          c->n_heads, c->n_kv, c->d, 1.0f / sqrtf((float)c->d));
        pos += T;
    }
    for (int64_t b = 0; b < x->n_blocks; b++) qvlm_backend_free(be, blocks[b]);
    free(blocks);
    qvlm_stream_destroy(s);
}

/* Plain attention in double for query t, head h. */
static void text_naive(const text_data *x, int64_t t, int64_t h, double *o) {
    const text_case *c = &x->c;
    const int64_t kvh = h / (c->n_heads / c->n_kv), d = c->d;
    double *w = malloc((size_t)(t + 1) * sizeof(double)), mx = -INFINITY, sum = 0;
    for (int64_t i = 0; i <= t; i++) {
        double s = 0;
        for (int64_t e = 0; e < d; e++) s += (double)x->q[(t * c->n_heads + h) * d + e] * x->k[(i * c->n_kv + kvh) * d + e];
        w[i] = s / sqrt((double)d);
        mx = fmax(mx, w[i]);
    }
    for (int64_t i = 0; i <= t; i++) sum += (w[i] = exp(w[i] - mx));
    for (int64_t e = 0; e < d; e++) {
        o[e] = 0;
        for (int64_t i = 0; i <= t; i++) o[e] += w[i] * x->v[(i * c->n_kv + kvh) * d + e];
        o[e] /= sum;
    }
    free(w);
}

static void test_text_bitwise(void) {
    static const text_case cases[] = {
        {8, 2, 256, 64, 300}, /* Qwen3.5-0.8B: GQA 4, head 256, long prompt */
        {4, 4, 16, 16, 70},   /* small blocks cut every tile */
        {6, 2, 33, 64, 67},   /* odd head size (vector tail), GQA 3 */
        {2, 1, 8, 128, 130},  /* tiny head, big blocks */
        {3, 3, 24, 32, 1},    /* one token */
    };
    qvlm_backend *ref = backend("scalar", 2), *opt[2] = {backend(NULL, 1), backend(NULL, 3)};
    ASSERT_TRUE(ref && opt[0] && opt[1]);
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        text_data x;
        text_make(&x, cases[ci]);
        const text_case *c = &x.c;
        size_t n_out = (size_t)(c->n_tok * c->n_heads * c->d);
        float *o_ref = malloc(n_out * 4), *o_opt = malloc(n_out * 4), *o_dec = malloc(n_out * 4);
        /* prefill in two calls (the second one not starting at a tile boundary) vs one token at a time */
        int64_t split[2] = {c->n_tok / 3, c->n_tok - c->n_tok / 3};
        int64_t *ones = malloc((size_t)c->n_tok * sizeof(int64_t));
        for (int64_t i = 0; i < c->n_tok; i++) ones[i] = 1;
        text_run(ref, &x, split[0] ? split : split + 1, split[0] ? 2 : 1, o_ref);
        bool ok = true;
        for (int th = 0; th < 2 && ok; th++) {
            text_run(opt[th], &x, split[0] ? split : split + 1, split[0] ? 2 : 1, o_opt);
            text_run(opt[th], &x, ones, (int)c->n_tok, o_dec);
            ok = memcmp(o_ref, o_opt, n_out * 4) == 0 && memcmp(o_ref, o_dec, n_out * 4) == 0;
            if (!ok) printf("  case %zu threads %d: optimised %s the reference, decode %s\n", ci, th ? 3 : 1,
                            memcmp(o_ref, o_opt, n_out * 4) ? "differs from" : "equals",
                            memcmp(o_ref, o_dec, n_out * 4) ? "differs" : "equal");
        }
        /* and the reference is attention: a few rows against double precision */
        double worst = 0, o64[512];
        for (int64_t t = 0; t < c->n_tok; t += 1 + c->n_tok / 5)
            for (int64_t h = 0; h < c->n_heads; h++) {
                text_naive(&x, t, h, o64);
                for (int64_t e = 0; e < c->d; e++) worst = fmax(worst, fabs(o64[e] - o_ref[(t * c->n_heads + h) * c->d + e]));
            }
        free(o_ref), free(o_opt), free(o_dec), free(ones);
        text_free(&x);
        if (!(worst < 2e-6)) printf("  case %zu: reference vs double %.3g\n", ci, worst);
        ASSERT_TRUE(ok);
        ASSERT_TRUE(worst < 2e-6);
    }
    qvlm_backend_destroy(ref), qvlm_backend_destroy(opt[0]), qvlm_backend_destroy(opt[1]);
}

/* ---- vision: segments ---------------------------------------------------------------------------- */

static void seg_run(qvlm_backend *be, const float *qkv, const int64_t *seg, int64_t n_seg, int64_t H, int64_t d, float *out) {
    qvlm_error err;
    qvlm_stream *s;
    if (qvlm_stream_create(be, &s, &err)) return;
    qvlm_op_attention_segments(s, out, qkv, seg, n_seg, H, d, 1.0f / sqrtf((float)d));
    qvlm_stream_destroy(s);
}

static double g_seg_tol = 2e-6;

static void test_segments_bitwise(void) {
    static const int64_t lens[][4] = {{1, 0, 0, 0}, {63, 64, 65, 0}, {200, 3, 0, 0}, {130, 0, 0, 0}};
    static const int64_t dims[][2] = {{2, 64}, {3, 20}, {1, 16}, {2, 7}}; /* heads, head_dim */
    qvlm_backend *ref = backend("scalar", 2), *opt[2] = {backend(NULL, 1), backend(NULL, 3)};
    ASSERT_TRUE(ref && opt[0] && opt[1]);
    for (size_t ci = 0; ci < 4; ci++) {
        int64_t seg[5] = {0}, n_seg = 0;
        for (int i = 0; i < 4 && lens[ci][i]; i++, n_seg++) seg[n_seg + 1] = seg[n_seg] + lens[ci][i];
        const int64_t N = seg[n_seg], H = dims[ci][0], d = dims[ci][1];
        float *qkv = malloc((size_t)(N * 3 * H * d) * 4), *o_ref = malloc((size_t)(N * H * d) * 4),
              *o_opt = malloc((size_t)(N * H * d) * 4);
        for (int64_t i = 0; i < N * 3 * H * d; i++) qkv[i] = 2 * frand();
        seg_run(ref, qkv, seg, n_seg, H, d, o_ref);
        bool ok = true;
        for (int th = 0; th < 2 && ok; th++) {
            seg_run(opt[th], qkv, seg, n_seg, H, d, o_opt);
            ok = memcmp(o_ref, o_opt, (size_t)(N * H * d) * 4) == 0;
            if (!ok) printf("  case %zu threads %d differs\n", ci, th ? 3 : 1);
        }
        /* the reference against double precision, first row of every segment */
        double worst = 0;
        for (int64_t si = 0; si < n_seg; si++)
            for (int64_t h = 0; h < H; h++) {
                const int64_t r = seg[si], ld = 3 * H * d;
                double w[256], mx = -INFINITY, sum = 0;
                for (int64_t i = seg[si]; i < seg[si + 1]; i++) {
                    double s = 0;
                    for (int64_t e = 0; e < d; e++) s += (double)qkv[r * ld + h * d + e] * qkv[i * ld + H * d + h * d + e];
                    w[i - seg[si]] = s / sqrt((double)d);
                    mx = fmax(mx, w[i - seg[si]]);
                }
                for (int64_t i = 0; i < seg[si + 1] - seg[si]; i++) sum += (w[i] = exp(w[i] - mx));
                for (int64_t e = 0; e < d; e++) {
                    double o = 0;
                    for (int64_t i = seg[si]; i < seg[si + 1]; i++) o += w[i - seg[si]] * qkv[i * ld + 2 * H * d + h * d + e];
                    worst = fmax(worst, fabs(o / sum - o_ref[r * H * d + h * d + e]));
                }
            }
        free(qkv), free(o_ref), free(o_opt);
        printf("  case %zu: reference vs double %.3g\n", ci, worst);
        ASSERT_TRUE(ok);
        ASSERT_TRUE(worst < g_seg_tol);
    }
    qvlm_backend_destroy(ref), qvlm_backend_destroy(opt[0]), qvlm_backend_destroy(opt[1]);
}

/* BF16 precision (vdpbf16ps products, bf16 operands): the same bits on every ISA, within the
 * error of bf16 operands (|q.k| up to ~d/3 here, so |s| errors ~ 2^-8 d/3 * scale) of double. */
static void test_segments_bf16_bitwise(void) {
    g_prec = QVLM_COMPUTE_BF16;
    g_seg_tol = 3e-2;
    test_segments_bitwise();
    g_prec = QVLM_COMPUTE_F32;
    g_seg_tol = 2e-6;
}

int main(void) {
    RUN(test_text_bitwise);
    RUN(test_segments_bitwise);
    RUN(test_segments_bf16_bitwise);
    return qtest_done();
}
