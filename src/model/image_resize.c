/* image_resize.c - antialiased separable resize of RGB u8 with int16 fixed-point weights,
 * bit-exact with PyTorch's uint8 AA interpolation (see image_resize.h for the algorithm).
 * Invariant: taps never read outside the input (start >= 0, start + count <= in_size). */
#include "model/image_resize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- filters (double, like the reference's weight computation) ------------------------- */

/* Keys' cubic convolution with a = -0.5 (Pillow's choice; PyTorch uses it when antialiasing),
 * written in the reference's operation order so the doubles round identically. */
static double filter_bicubic(double x) {
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2.0) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
    return 0.0;
}

static double filter_bilinear(double x) {
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* ---- int16 taps for one dimension ------------------------------------------------------ */

/* Taps are stored in blocks of HBLOCK (zero weights past `count`), so the horizontal pass
 * can run fixed-size dot products that the compiler vectorises. */
#define HBLOCK 8

typedef struct aa_taps {
    int n_out;
    int max_taps;     /* the reference's max_interp_size: most taps an output can have */
    int stride;       /* max_taps rounded up to HBLOCK: row length of weights */
    int precision;    /* fraction bits of the weights, 14..22 */
    int *start;       /* [n_out] first input index */
    int *count;       /* [n_out] number of taps, start + count <= in_size */
    int16_t *weights; /* [n_out][stride], zero past count */
    double *wf;       /* [n_out][stride] the double weights, scratch */
} aa_taps;

static void taps_free(aa_taps *t) {
    free(t->start);
    free(t->count);
    free(t->weights);
    free(t->wf);
    memset(t, 0, sizeof(*t));
}

/* Double weights for output index i, normalised; returns the largest. */
static double taps_one(aa_taps *t, int i, int in_size, double scale, double support,
                       double (*filter)(double)) {
    double center = scale * ((double)i + 0.5);
    double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
    int64_t xmin = (int64_t)(center - support + 0.5), xmax = (int64_t)(center + support + 0.5);
    if (xmin < 0) xmin = 0;
    if (xmax > in_size) xmax = in_size;
    int64_t xsize = xmax - xmin;
    /* Rounding can give one tap more than max_taps; the reference clips the same way. */
    if (xsize < 0) xsize = 0;
    if (xsize > t->max_taps) xsize = t->max_taps;

    double *w = t->wf + (size_t)i * (size_t)t->stride, total = 0.0, w_max = 0.0;
    for (int64_t j = 0; j < xsize; j++) {
        w[j] = filter(((double)(j + xmin) - center + 0.5) * invscale);
        total += w[j];
    }
    if (total != 0.0) {
        for (int64_t j = 0; j < xsize; j++) {
            w[j] /= total;
            if (w[j] > w_max) w_max = w[j];
        }
    }
    t->start[i] = (int)xmin;
    t->count[i] = (int)xsize;
    return w_max;
}

static qvlm_status taps_build(aa_taps *t, int in_size, int out_size, qvlm_resize_filter filter,
                              qvlm_error *err) {
    memset(t, 0, sizeof(*t));
    double scale = (double)in_size / (double)out_size;
    double half = filter == QVLM_FILTER_BICUBIC ? 2.0 : 1.0; /* interp_size / 2 */
    double support = scale >= 1.0 ? half * scale : half;
    double (*fn)(double) = filter == QVLM_FILTER_BICUBIC ? filter_bicubic : filter_bilinear;

    t->n_out = out_size;
    t->max_taps = (int)ceil(support) * 2 + 1;
    t->stride = (t->max_taps + HBLOCK - 1) / HBLOCK * HBLOCK;
    size_t n_w = (size_t)out_size * (size_t)t->stride;
    t->start = malloc((size_t)out_size * sizeof(*t->start));
    t->count = malloc((size_t)out_size * sizeof(*t->count));
    t->weights = calloc(n_w, sizeof(*t->weights));
    t->wf = calloc(n_w, sizeof(*t->wf));
    if (!t->start || !t->count || !t->weights || !t->wf) {
        taps_free(t);
        return qvlm_errorf(err, QVLM_E_NOMEM, "resize: out of memory for %zu weights", n_w);
    }
    double w_max = 0.0;
    for (int i = 0; i < out_size; i++) {
        double m = taps_one(t, i, in_size, scale, support, fn);
        if (m > w_max) w_max = m;
    }
    /* The most fraction bits at which the largest weight, with one more bit, stays < 2^15. */
    int p;
    for (p = 0; p < 22; p++)
        if ((int)(0.5 + w_max * (double)(1 << (p + 1))) >= (1 << 15)) break;
    if (QVLM_NEVER(p < 1)) p = 1; /* weights are normalised, so w_max < 2 and p >= 14 */
    t->precision = p;
    for (size_t k = 0; k < n_w; k++) {
        double v = t->wf[k] * (double)(1 << p);
        t->weights[k] = (int16_t)(v < 0 ? (int)(-0.5 + v) : (int)(0.5 + v));
    }
    free(t->wf);
    t->wf = NULL;
    return QVLM_OK;
}

static inline uint8_t round_clamp(int32_t acc, int precision) {
    int32_t v = acc < 0 ? 0 : acc >> precision; /* the reference shifts, then clamps to 0 */
    return (uint8_t)(v > 255 ? 255 : v);
}

/* ---- passes ---------------------------------------------------------------------------- */

struct pass_ctx {
    const uint8_t *src;
    uint8_t *dst;
    int src_w, dst_w;
    long n_rows;      /* rows of dst to produce */
    const aa_taps *t;
    int16_t *planes;  /* horizontal pass: [n_threads][3][src_w + stride], zeroed */
};

/* One row: out[x] = sum_j w(x)_j · in[start(x) + j] per channel. The row is first split into
 * three int16 planes, padded with HBLOCK·k zeros past the end (never written), so each output
 * is a few fixed-size dot products; zero weights past `count` make the padding harmless. */
static void horizontal_row(uint8_t *restrict out, const uint8_t *restrict in, int src_w, int dst_w,
                           const aa_taps *t, int16_t *restrict planes) {
    const size_t pw = (size_t)src_w + (size_t)t->stride;
    int16_t *restrict pr = planes, *restrict pg = planes + pw, *restrict pb = planes + 2 * pw;
    for (int x = 0; x < src_w; x++) {
        pr[x] = in[3 * x];
        pg[x] = in[3 * x + 1];
        pb[x] = in[3 * x + 2];
    }
    const int32_t bias = (int32_t)1 << (t->precision - 1);
    for (int x = 0; x < dst_w; x++) {
        const int16_t *restrict k = t->weights + (size_t)x * (size_t)t->stride;
        const int n_blocks = (t->count[x] + HBLOCK - 1) / HBLOCK;
        const size_t s0 = (size_t)t->start[x];
        int32_t r = bias, g = bias, b = bias;
        for (int blk = 0; blk < n_blocks; blk++, k += HBLOCK) {
            const size_t s = s0 + (size_t)blk * HBLOCK;
            for (int j = 0; j < HBLOCK; j++) {
                r += k[j] * pr[s + j];
                g += k[j] * pg[s + j];
                b += k[j] * pb[s + j];
            }
        }
        out[3 * x + 0] = round_clamp(r, t->precision);
        out[3 * x + 1] = round_clamp(g, t->precision);
        out[3 * x + 2] = round_clamp(b, t->precision);
    }
}

static void horizontal_task(void *arg, int ith, int nth) {
    const struct pass_ctx *c = arg;
    int16_t *planes = c->planes + (size_t)ith * 3 * ((size_t)c->src_w + (size_t)c->t->stride);
    long r0, r1;
    qvlm_split_rows(c->n_rows, ith, nth, &r0, &r1);
    for (long y = r0; y < r1; y++)
        horizontal_row(c->dst + (size_t)y * (size_t)c->dst_w * 3, c->src + (size_t)y * (size_t)c->src_w * 3,
                       c->src_w, c->dst_w, c->t, planes);
}

/* Columns [0, n) of one output row: out[i] = sum_j k[j] · src[j·row + i]. Fixed-size blocks
 * with restrict pointers let the compiler vectorise at -O2 (no epilogue, no alias check). */
#define VBLOCK 64
static void vertical_span(uint8_t *restrict out, const uint8_t *restrict src, size_t row, size_t n,
                          const int16_t *restrict k, int count, int precision) {
    const int32_t bias = (int32_t)1 << (precision - 1);
    size_t i0 = 0;
    for (; i0 + VBLOCK <= n; i0 += VBLOCK) {
        int32_t acc[VBLOCK];
        for (int i = 0; i < VBLOCK; i++) acc[i] = bias;
        for (int j = 0; j < count; j++) {
            const uint8_t *restrict in = src + (size_t)j * row + i0;
            const int32_t kj = k[j];
            for (int i = 0; i < VBLOCK; i++) acc[i] += kj * in[i];
        }
        for (int i = 0; i < VBLOCK; i++) out[i0 + i] = round_clamp(acc[i], precision);
    }
    for (size_t i = i0; i < n; i++) { /* the tail */
        int32_t acc = bias;
        for (int j = 0; j < count; j++) acc += k[j] * src[(size_t)j * row + i];
        out[i] = round_clamp(acc, precision);
    }
}

static void vertical_task(void *arg, int ith, int nth) {
    const struct pass_ctx *c = arg;
    const aa_taps *t = c->t;
    const size_t row = (size_t)c->dst_w * 3;
    long r0, r1;
    qvlm_split_rows(c->n_rows, ith, nth, &r0, &r1);
    for (long y = r0; y < r1; y++)
        vertical_span(c->dst + (size_t)y * row, c->src + (size_t)t->start[y] * row, row, row,
                      t->weights + (size_t)y * (size_t)t->stride, t->count[y], t->precision);
}

static qvlm_status run_horizontal(const uint8_t *src, int src_w, int h, uint8_t *dst, int dst_w,
                                  qvlm_resize_filter filter, qvlm_pool *pool, qvlm_error *err) {
    aa_taps t;
    qvlm_status rc = taps_build(&t, src_w, dst_w, filter, err);
    if (rc) return rc;
    size_t n_planes = (size_t)qvlm_pool_size(pool) * 3 * ((size_t)src_w + (size_t)t.stride);
    int16_t *planes = calloc(n_planes, sizeof(*planes));
    if (!planes) {
        taps_free(&t);
        return qvlm_errorf(err, QVLM_E_NOMEM, "resize: out of memory");
    }
    struct pass_ctx c = {.src = src, .dst = dst, .src_w = src_w, .dst_w = dst_w, .n_rows = h, .t = &t,
                         .planes = planes};
    qvlm_pool_run(pool, horizontal_task, &c);
    free(planes);
    taps_free(&t);
    return QVLM_OK;
}

static qvlm_status run_vertical(const uint8_t *src, int w, int src_h, uint8_t *dst, int dst_h,
                                qvlm_resize_filter filter, qvlm_pool *pool, qvlm_error *err) {
    aa_taps t;
    qvlm_status rc = taps_build(&t, src_h, dst_h, filter, err);
    if (rc) return rc;
    struct pass_ctx c = {.src = src, .dst = dst, .src_w = w, .dst_w = w, .n_rows = dst_h, .t = &t};
    qvlm_pool_run(pool, vertical_task, &c);
    taps_free(&t);
    return QVLM_OK;
}

qvlm_status qvlm_resize_rgb_u8(const uint8_t *src, int src_w, int src_h, uint8_t *dst, int dst_w,
                               int dst_h, qvlm_resize_filter filter, qvlm_pool *pool, qvlm_error *err) {
    if (src_w < 1 || src_h < 1 || dst_w < 1 || dst_h < 1)
        return qvlm_errorf(err, QVLM_E_INVALID, "resize: %d x %d -> %d x %d: sides must be >= 1", src_w,
                           src_h, dst_w, dst_h);
    size_t src_row = (size_t)src_w * 3;
    if (src_w == dst_w && src_h == dst_h) {
        memcpy(dst, src, src_row * (size_t)src_h);
        return QVLM_OK;
    }
    if (src_h == dst_h) return run_horizontal(src, src_w, src_h, dst, dst_w, filter, pool, err);
    if (src_w == dst_w) return run_vertical(src, src_w, src_h, dst, dst_h, filter, pool, err);

    /* Both: horizontal into a src_h × dst_w intermediate first, as the reference does. */
    uint8_t *mid = malloc((size_t)src_h * (size_t)dst_w * 3);
    if (!mid) return qvlm_errorf(err, QVLM_E_NOMEM, "resize: out of memory");
    qvlm_status rc = run_horizontal(src, src_w, src_h, mid, dst_w, filter, pool, err);
    if (!rc) rc = run_vertical(mid, dst_w, src_h, dst, dst_h, filter, pool, err);
    free(mid);
    return rc;
}
