/* image_test.c - Qwen3.5 image preprocessing against the transformers fixtures, smart_resize,
 * preprocessor_config.json parsing, the resize kernel's invariants and the content hash's
 * dependence on preprocessing parameters.
 *
 * The fixtures (tests/fixtures/tiny-{dense,moe}) were made by /work/shared/tools/gen_reference.py
 * with transformers' Qwen2VLImageProcessor: `imageN.pixel_values` is the default (torchvision)
 * backend, `imageN.pixel_values_fast` the "fast" class; both are compared and reported. */
#include <jansson.h>
#include <stdint.h>

#include "core/fileio.h"
#include "core/safetensors.h"
#include "core/threads.h"
#include "model/image.h"
#include "model/image_preprocess.h"
#include "model/image_resize.h"
#include "qtest.h"

/* The project's stated bounds for pixel_values (never widened to pass). */
#define MAX_ABS_TOL 0.02
#define MEAN_ABS_TOL 2e-3

/* ---- fixtures ---------------------------------------------------------------------------- */

struct diff {
    double max_abs, mean_abs;
    int64_t n_exact, n;
};

static struct diff compare(const float *got, const qvlm_st_tensor *ref) {
    struct diff d = {0};
    const float *r = (const float *)ref->data;
    double sum = 0;
    for (int64_t i = 0; i < ref->n_elements; i++) {
        double e = fabs((double)got[i] - (double)r[i]);
        if (e > d.max_abs) d.max_abs = e;
        sum += e;
        d.n_exact += got[i] == r[i];
    }
    d.n = ref->n_elements;
    d.mean_abs = d.n ? sum / (double)d.n : 0;
    return d;
}

static void check_fixture(const char *fixture, qvlm_pool *pool) {
    char dir[512], path[600];
    qvlm_error err = {0};
    snprintf(dir, sizeof(dir), "%s/%s", QVLM_FIXTURES, fixture);
    snprintf(path, sizeof(path), "%s/model", dir);
    qvlm_preprocess_config cfg;
    ASSERT_OK(qvlm_preprocess_config_load(path, &cfg, &err), &err);

    snprintf(path, sizeof(path), "%s/reference.json", dir);
    json_t *meta = NULL;
    ASSERT_OK(qvlm_json_load_file(path, 1 << 20, &meta, &err), &err);
    snprintf(path, sizeof(path), "%s/reference.safetensors", dir);
    qvlm_st_file ref;
    if (qvlm_st_open(path, &ref, &err) != QVLM_OK) {
        json_decref(meta);
        QTEST_FAIL("%s", err.msg);
    }
    json_t *images = json_object_get(meta, "images");
    int failed = !json_is_array(images) || json_array_size(images) != 4;
    for (size_t i = 0; !failed && i < json_array_size(images); i++) {
        json_t *e = json_array_get(images, i);
        char name[64];
        snprintf(path, sizeof(path), "%s/%s", dir, json_string_value(json_object_get(e, "path")));
        qvlm_image img;
        qvlm_pixels px = {0};
        if (qvlm_image_load(path, NULL, &img, &err) != QVLM_OK ||
            qvlm_image_preprocess(&img, &cfg, pool, &px, &err) != QVLM_OK) {
            fprintf(stderr, "  %s: %s\n", path, err.msg);
            failed = 1;
        }
        json_t *size = json_object_get(e, "size"), *grid = json_object_get(e, "grid_thw");
        if (!failed && (img.width != json_integer_value(json_array_get(size, 0)) ||
                        img.height != json_integer_value(json_array_get(size, 1)) ||
                        px.grid_t != json_integer_value(json_array_get(grid, 0)) ||
                        px.grid_h != json_integer_value(json_array_get(grid, 1)) ||
                        px.grid_w != json_integer_value(json_array_get(grid, 2)))) {
            fprintf(stderr, "  %s: size %dx%d grid %d,%d,%d differ from reference.json\n", path, img.width,
                    img.height, px.grid_t, px.grid_h, px.grid_w);
            failed = 1;
        }
        snprintf(name, sizeof(name), "image%zu.grid_thw", i);
        const qvlm_st_tensor *g = qvlm_st_file_find(&ref, name);
        const int64_t *gv = g ? (const int64_t *)g->data : NULL;
        if (!failed && (!g || g->n_elements != 3 || gv[0] != px.grid_t || gv[1] != px.grid_h || gv[2] != px.grid_w)) {
            fprintf(stderr, "  %s: grid_thw differs from the reference tensor\n", name);
            failed = 1;
        }
        for (int fast = 0; !failed && fast < 2; fast++) {
            snprintf(name, sizeof(name), "image%zu.pixel_values%s", i, fast ? "_fast" : "");
            const qvlm_st_tensor *t = qvlm_st_file_find(&ref, name);
            if (!t || t->n_dims != 2 || t->shape[0] != px.n_patches || t->shape[1] != px.patch_dim) {
                fprintf(stderr, "  %s: missing or shape differs from [%lld][%lld]\n", name,
                        (long long)px.n_patches, (long long)px.patch_dim);
                failed = 1;
                break;
            }
            struct diff d = compare(px.values, t);
            printf("  %s %-26s %dx%d -> grid %d,%d,%d  max %.3g  mean %.3g  exact %lld/%lld\n", fixture, name,
                   img.width, img.height, px.grid_t, px.grid_h, px.grid_w, d.max_abs, d.mean_abs,
                   (long long)d.n_exact, (long long)d.n);
            if (!(d.max_abs <= MAX_ABS_TOL && d.mean_abs <= MEAN_ABS_TOL)) failed = 1;
        }
        qvlm_pixels_free(&px);
        qvlm_image_free(&img);
    }
    qvlm_st_close(&ref);
    json_decref(meta);
    if (failed) QTEST_FAIL("%s: preprocessing differs from the reference (see above)", fixture);
}

static void test_fixture_dense(void) { check_fixture("tiny-dense", NULL); }
static void test_fixture_moe(void) { check_fixture("tiny-moe", NULL); }

/* The same with a thread pool: the result must not depend on the split. */
static void test_fixture_pooled(void) {
    qvlm_error err;
    qvlm_pool *pool;
    ASSERT_OK(qvlm_pool_create(3, &pool, &err), &err);
    check_fixture("tiny-dense", pool);
    check_fixture("tiny-moe", pool);
    qvlm_pool_destroy(pool);
}

/* ---- smart_resize ------------------------------------------------------------------------ */

/* Qwen3.5's real preprocessor_config.json values (qwen35-arch.md §6). */
static qvlm_preprocess_config qwen35_config(void) {
    qvlm_preprocess_config c;
    qvlm_preprocess_config_default(&c);
    c.min_pixels = 65536;
    c.max_pixels = 16777216;
    c.patch_size = 16;
    c.image_mean[0] = c.image_mean[1] = c.image_mean[2] = 0.5f;
    c.image_std[0] = c.image_std[1] = c.image_std[2] = 0.5f;
    return c;
}

#define ASSERT_RESIZE(cfg, w, h, want_w, want_h)                                                   \
    do {                                                                                           \
        int rh_ = -1, rw_ = -1;                                                                    \
        ASSERT_OK(qvlm_smart_resize((h), (w), &(cfg), &rh_, &rw_, &err), &err);                   \
        if (rw_ != (want_w) || rh_ != (want_h))                                                    \
            QTEST_FAIL("smart_resize %dx%d -> %dx%d, expected %dx%d", (w), (h), rw_, rh_, (want_w), \
                       (want_h));                                                                  \
    } while (0)

static void test_smart_resize_spec_examples(void) {
    qvlm_error err;
    qvlm_preprocess_config c = qwen35_config();
    ASSERT_RESIZE(c, 640, 480, 640, 480);     /* grid 30x40, 300 tokens */
    ASSERT_RESIZE(c, 100, 100, 256, 256);     /* min clamp: grid 16x16 */
    ASSERT_RESIZE(c, 1920, 1080, 1920, 1088); /* 1080/32 = 33.75 -> 34 */
    ASSERT_RESIZE(c, 5000, 5000, 4096, 4096); /* max clamp */
    int rh, rw;
    ASSERT_OK(qvlm_smart_resize(480, 640, &c, &rh, &rw, &err), &err);
    ASSERT_EQ_INT((rh / 16) * (rw / 16) / 4, 300);
}

static void test_smart_resize_half_to_even(void) {
    qvlm_error err;
    qvlm_preprocess_config c = qwen35_config();
    c.min_pixels = 1; /* keep the rounding branch */
    ASSERT_RESIZE(c, 80, 480, 64, 480);   /* 80/32 = 2.5 -> 2 (C round() would give 3 -> 96) */
    ASSERT_RESIZE(c, 112, 480, 128, 480); /* 3.5 -> 4 */
    ASSERT_RESIZE(c, 144, 480, 128, 480); /* 4.5 -> 4 */
    ASSERT_RESIZE(c, 48, 48, 64, 64);     /* 1.5 -> 2 */
    ASSERT_RESIZE(c, 16, 100, 32, 32);    /* 0.5 -> 0: area 0 < min, so the ceil branch */
    /* The fixture's JPEG: 80x60 -> 64x64 (its reference grid is 4x4). */
    qvlm_preprocess_config f = qwen35_config();
    f.min_pixels = 1024;
    f.max_pixels = 16384;
    ASSERT_RESIZE(f, 80, 60, 64, 64);
}

static void test_smart_resize_clamps(void) {
    qvlm_error err;
    qvlm_preprocess_config c = qwen35_config();
    ASSERT_RESIZE(c, 1, 1, 256, 256);         /* min branch from 0x0 rounding */
    ASSERT_RESIZE(c, 200, 1, 3648, 32);       /* aspect exactly 200 is allowed */
    ASSERT_RESIZE(c, 8000, 6000, 4704, 3520); /* max branch: floor */
    /* floor branch clamped to >= factor (transformers 5): floor(40/10.8/32) = 0 -> 32 */
    c.min_pixels = 1;
    c.max_pixels = 2048;
    ASSERT_RESIZE(c, 6000, 40, 544, 32);
    /* every result is a multiple of 32 within the bounds (up to rounding) */
    qvlm_preprocess_config q = qwen35_config();
    for (int w = 1; w < 3000; w += 37)
        for (int h = 1; h < 3000; h += 41) {
            int rh, rw;
            if ((double)(w > h ? w : h) / (w > h ? h : w) > 200) continue;
            ASSERT_OK(qvlm_smart_resize(h, w, &q, &rh, &rw, &err), &err);
            if (rh % 32 || rw % 32 || (int64_t)rh * rw > q.max_pixels || (int64_t)rh * rw < q.min_pixels)
                QTEST_FAIL("%dx%d -> %dx%d breaks the bounds", w, h, rw, rh);
        }
}

static void test_smart_resize_refuses(void) {
    qvlm_error err;
    qvlm_preprocess_config c = qwen35_config();
    int rh = 7, rw = 7;
    ASSERT_FAILS(qvlm_smart_resize(1, 201, &c, &rh, &rw, &err), QVLM_E_INVALID, &err, "aspect ratio 201.0 is over 200");
    ASSERT_FAILS(qvlm_smart_resize(10000, 20, &c, &rh, &rw, &err), QVLM_E_INVALID, &err, "aspect ratio");
    ASSERT_FAILS(qvlm_smart_resize(0, 20, &c, &rh, &rw, &err), QVLM_E_INVALID, &err, "sides must be >= 1");
    ASSERT_EQ_INT(rh, 7); /* untouched on failure */
    ASSERT_EQ_INT(rw, 7);
    c.patch_size = 0;
    ASSERT_FAILS(qvlm_smart_resize(100, 100, &c, &rh, &rw, &err), QVLM_E_INVALID, &err, "invalid configuration");
}

/* ---- preprocessor_config.json ------------------------------------------------------------ */

static qvlm_status parse_text(const char *text, qvlm_preprocess_config *cfg, qvlm_error *err) {
    json_t *doc;
    qvlm_status rc = qvlm_json_parse(text, strlen(text), "pp.json", &doc, err);
    if (rc) return rc;
    rc = qvlm_preprocess_config_parse(doc, "pp.json", cfg, err);
    json_decref(doc);
    return rc;
}

static void test_config_fixture_values(void) {
    qvlm_error err;
    qvlm_preprocess_config c;
    ASSERT_OK(qvlm_preprocess_config_load(QVLM_FIXTURES "/tiny-dense/model", &c, &err), &err);
    ASSERT_EQ_INT(c.min_pixels, 1024);
    ASSERT_EQ_INT(c.max_pixels, 16384);
    ASSERT_EQ_INT(c.patch_size, 16);
    ASSERT_EQ_INT(c.temporal_patch_size, 2);
    ASSERT_EQ_INT(c.merge_size, 2);
    ASSERT_EQ_INT(c.resample, QVLM_RESAMPLE_BICUBIC);
    ASSERT_NEAR(c.image_mean[1], 0.5, 0);
    ASSERT_NEAR(c.image_std[2], 0.5, 0);
    ASSERT_NEAR(c.rescale_factor, 1.0 / 255.0, 1e-18);
    ASSERT_TRUE(c.do_resize && c.do_rescale && c.do_normalize && c.do_convert_rgb);
}

static void test_config_keys_and_defaults(void) {
    qvlm_error err;
    qvlm_preprocess_config c;
    ASSERT_OK(parse_text("{}", &c, &err), &err);
    ASSERT_EQ_INT(c.min_pixels, 56 * 56); /* transformers' class defaults */
    ASSERT_EQ_INT(c.max_pixels, 28 * 28 * 1280);
    ASSERT_EQ_INT(c.patch_size, 14);
    ASSERT_NEAR(c.image_mean[0], 0.48145466f, 0);
    ASSERT_OK(parse_text("{\"size\": {\"min_pixels\": 100, \"max_pixels\": 2000}}", &c, &err), &err);
    ASSERT_EQ_INT(c.min_pixels, 100);
    ASSERT_EQ_INT(c.max_pixels, 2000);
    ASSERT_OK(parse_text("{\"size\": {\"shortest_edge\": 65536, \"longest_edge\": 16777216},"
                         " \"min_pixels\": 4096, \"image_mean\": 0.25, \"do_rescale\": false}",
                         &c, &err), &err);
    ASSERT_EQ_INT(c.min_pixels, 4096); /* top level wins */
    ASSERT_EQ_INT(c.max_pixels, 16777216);
    ASSERT_NEAR(c.image_mean[2], 0.25, 0);
    ASSERT_TRUE(!c.do_rescale);
}

static void test_config_bad_values(void) {
    qvlm_error err;
    qvlm_preprocess_config c;
    ASSERT_FAILS(parse_text("{\"patch_size\": 0}", &c, &err), QVLM_E_CORRUPT, &err, "pp.json.patch_size = 0");
    ASSERT_FAILS(parse_text("{\"size\": {\"longest_edge\": \"big\"}}", &c, &err), QVLM_E_CORRUPT, &err,
                 "size.longest_edge is string");
    ASSERT_FAILS(parse_text("{\"image_std\": [0.5, 0, 0.5]}", &c, &err), QVLM_E_CORRUPT, &err, "image_std[1]");
    ASSERT_FAILS(parse_text("{\"image_mean\": [0.5, 0.5]}", &c, &err), QVLM_E_CORRUPT, &err, "list of 3");
    ASSERT_FAILS(parse_text("{\"resample\": 0}", &c, &err), QVLM_E_UNSUPPORTED, &err, "resample = 0");
    ASSERT_FAILS(parse_text("{\"min_pixels\": 5000, \"max_pixels\": 10}", &c, &err), QVLM_E_CORRUPT, &err,
                 "min pixels 5000 > max pixels 10");
    ASSERT_FAILS(parse_text("[1]", &c, &err), QVLM_E_CORRUPT, &err, "not an object");
    ASSERT_EQ_INT(c.patch_size, 14); /* defaults on failure */
    ASSERT_FAILS(qvlm_preprocess_config_load("/nonexistent-dir", &c, &err), QVLM_E_IO, &err,
                 "/nonexistent-dir/preprocessor_config.json");
}

/* ---- resize kernel invariants ------------------------------------------------------------ */

static uint8_t *noise_image(int w, int h, uint32_t seed) {
    uint8_t *p = malloc((size_t)w * h * 3);
    for (size_t i = 0; p && i < (size_t)w * h * 3; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (uint8_t)(seed >> 24);
    }
    return p;
}

static void test_resize_invariants(void) {
    qvlm_error err;
    const int sizes[][4] = {{53, 77, 64, 64}, {4096, 9, 128, 32}, {7, 300, 96, 32}, {33, 33, 32, 32}, {1, 1, 64, 96}};
    qvlm_pool *pool;
    ASSERT_OK(qvlm_pool_create(4, &pool, &err), &err);
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        int sw = sizes[s][0], sh = sizes[s][1], dw = sizes[s][2], dh = sizes[s][3];
        uint8_t *src = noise_image(sw, sh, (uint32_t)s), *a = malloc((size_t)dw * dh * 3),
                *b = malloc((size_t)dw * dh * 3), *flat = malloc((size_t)sw * sh * 3);
        int ok = src && a && b && flat;
        /* single-threaded and pooled results are identical */
        ok = ok && qvlm_resize_rgb_u8(src, sw, sh, a, dw, dh, QVLM_FILTER_BICUBIC, NULL, &err) == QVLM_OK &&
             qvlm_resize_rgb_u8(src, sw, sh, b, dw, dh, QVLM_FILTER_BICUBIC, pool, &err) == QVLM_OK &&
             memcmp(a, b, (size_t)dw * dh * 3) == 0;
        /* a constant image stays exactly constant (weights are normalised) */
        if (ok) memset(flat, 200, (size_t)sw * sh * 3);
        ok = ok && qvlm_resize_rgb_u8(flat, sw, sh, a, dw, dh, QVLM_FILTER_BICUBIC, pool, &err) == QVLM_OK;
        for (size_t i = 0; ok && i < (size_t)dw * dh * 3; i++) ok = a[i] == 200;
        free(src), free(a), free(b), free(flat);
        if (!ok) {
            qvlm_pool_destroy(pool);
            QTEST_FAIL("resize %dx%d -> %dx%d: pooled/constant invariant broken", sw, sh, dw, dh);
        }
    }
    qvlm_pool_destroy(pool);
    uint8_t px[3] = {1, 2, 3}, out[3];
    ASSERT_FAILS(qvlm_resize_rgb_u8(px, 1, 1, out, 0, 1, QVLM_FILTER_BICUBIC, NULL, &err), QVLM_E_INVALID, &err,
                 "sides must be >= 1");
}

/* A plain scalar version of the algorithm in image_resize.h (one dimension at a time, one
 * output sample at a time), to check the blocked/planar kernels on many shapes. */
static void ref_resize_1d(const uint8_t *src, int n_in, size_t in_step, uint8_t *dst, int n_out, size_t out_step,
                          int n_lines, size_t in_line, size_t out_line, int bicubic) {
    double scale = (double)n_in / n_out, half = bicubic ? 2.0 : 1.0;
    double support = scale >= 1.0 ? half * scale : half, inv = scale >= 1.0 ? 1.0 / scale : 1.0;
    int max_taps = (int)ceil(support) * 2 + 1;
    double *w = calloc((size_t)n_out * max_taps, sizeof(*w)), w_max = 0;
    int *lo = calloc((size_t)n_out, sizeof(int)), *cnt = calloc((size_t)n_out, sizeof(int));
    for (int i = 0; i < n_out; i++) {
        double center = scale * (i + 0.5), total = 0;
        int64_t a = (int64_t)(center - support + 0.5), b = (int64_t)(center + support + 0.5);
        if (a < 0) a = 0;
        if (b > n_in) b = n_in;
        if (b - a > max_taps) b = a + max_taps;
        lo[i] = (int)a, cnt[i] = (int)(b - a);
        for (int j = 0; j < cnt[i]; j++) {
            double x = fabs(((double)(j + a) - center + 0.5) * inv), v;
            if (bicubic)
                v = x < 1 ? (1.5 * x - 2.5) * x * x + 1 : x < 2 ? ((-0.5 * x + 2.5) * x - 4) * x + 2 : 0;
            else
                v = x < 1 ? 1 - x : 0;
            w[i * max_taps + j] = v, total += v;
        }
        for (int j = 0; j < cnt[i]; j++) {
            w[i * max_taps + j] /= total;
            if (w[i * max_taps + j] > w_max) w_max = w[i * max_taps + j];
        }
    }
    int p = 0;
    while (p < 22 && (int)(0.5 + w_max * (1 << (p + 1))) < 32768) p++;
    for (int l = 0; l < n_lines; l++)
        for (int i = 0; i < n_out; i++) {
            long acc = 1L << (p - 1);
            for (int j = 0; j < cnt[i]; j++) {
                double v = w[i * max_taps + j] * (1 << p);
                acc += (long)(v < 0 ? (int)(v - 0.5) : (int)(v + 0.5)) * src[l * in_line + (size_t)(lo[i] + j) * in_step];
            }
            long q = acc < 0 ? 0 : acc >> p;
            dst[l * out_line + (size_t)i * out_step] = (uint8_t)(q > 255 ? 255 : q);
        }
    free(w), free(lo), free(cnt);
}

static void test_resize_matches_scalar_reference(void) {
    qvlm_error err;
    qvlm_pool *pool;
    ASSERT_OK(qvlm_pool_create(3, &pool, &err), &err);
    uint32_t seed = 12345;
    int bad = 0;
    for (int it = 0; it < 60 && !bad; it++) {
        seed = seed * 1664525u + 1013904223u;
        int sw = 1 + (int)(seed >> 8) % 300, sh = 1 + (int)(seed >> 20) % 200;
        seed = seed * 1664525u + 1013904223u;
        int dw = 1 + (int)(seed >> 8) % 160, dh = 1 + (int)(seed >> 20) % 160;
        if (it % 5 == 0) dw = sw; /* one dimension only */
        if (it % 7 == 0) dh = sh;
        if (it == 1) sw = 2000, dw = 7; /* heavy downscale: many tap blocks */
        int bicubic = it % 3 != 0;
        uint8_t *src = noise_image(sw, sh, seed), *got = malloc((size_t)dw * dh * 3),
                *mid = malloc((size_t)sh * dw * 3), *want = malloc((size_t)dw * dh * 3);
        qvlm_status rc = qvlm_resize_rgb_u8(src, sw, sh, got, dw, dh,
                                            bicubic ? QVLM_FILTER_BICUBIC : QVLM_FILTER_BILINEAR, pool, &err);
        /* reference: horizontal (if the width changes), then vertical (if the height does) */
        const uint8_t *h_out = src;
        if (dw != sw) {
            for (int ch = 0; ch < 3; ch++)
                ref_resize_1d(src + ch, sw, 3, mid + ch, dw, 3, sh, (size_t)sw * 3, (size_t)dw * 3, bicubic);
            h_out = mid;
        }
        if (dh != sh) {
            for (size_t col = 0; col < (size_t)dw * 3; col++)
                ref_resize_1d(h_out + col, sh, (size_t)dw * 3, want + col, dh, (size_t)dw * 3, 1, 0, 0, bicubic);
        } else {
            memcpy(want, h_out, (size_t)dw * dh * 3);
        }
        if (rc != QVLM_OK || memcmp(got, want, (size_t)dw * dh * 3) != 0) {
            fprintf(stderr, "  %s %dx%d -> %dx%d differs from the scalar reference\n",
                    bicubic ? "bicubic" : "bilinear", sw, sh, dw, dh);
            bad = 1;
        }
        free(src), free(got), free(mid), free(want);
    }
    qvlm_pool_destroy(pool);
    ASSERT_TRUE(!bad);
}

/* ---- preprocessing edge cases ------------------------------------------------------------ */

static void test_preprocess_layout(void) {
    /* do_resize off on a 64x32 image with distinct values: check the row/column mapping of §6
     * directly (rows in merge-block order; inside a row channel, temporal, y, x). */
    qvlm_error err;
    qvlm_preprocess_config c = qwen35_config();
    c.do_resize = false;
    c.do_rescale = c.do_normalize = false; /* values are the raw pixels */
    qvlm_image img = {.width = 64, .height = 32, .rgb = noise_image(64, 32, 7)};
    qvlm_pixels px;
    ASSERT_OK(qvlm_image_preprocess(&img, &c, NULL, &px, &err), &err);
    ASSERT_EQ_INT(px.grid_h, 2);
    ASSERT_EQ_INT(px.grid_w, 4);
    ASSERT_EQ_INT(px.patch_dim, 1536);
    int bad = 0;
    for (int r = 0; r < 8 && !bad; r++) {
        int block = r / 4, ib = r % 4, py = (block / 2) * 2 + ib / 2, px_ = (block % 2) * 2 + ib % 2;
        for (int ch = 0; ch < 3; ch++)
            for (int t = 0; t < 2; t++)
                for (int y = 0; y < 16; y++)
                    for (int x = 0; x < 16; x++) {
                        float want = img.rgb[((py * 16 + y) * 64 + px_ * 16 + x) * 3 + ch];
                        if (px.values[(size_t)r * 1536 + ((ch * 2 + t) * 16 + y) * 16 + x] != want) bad = 1;
                    }
    }
    qvlm_pixels_free(&px);
    qvlm_image_free(&img);
    ASSERT_TRUE(!bad);
}

static void test_preprocess_refuses(void) {
    qvlm_error err;
    qvlm_preprocess_config c = qwen35_config();
    qvlm_image img = {.width = 402, .height = 2, .rgb = noise_image(402, 2, 1)};
    qvlm_pixels px = {.n_patches = 5};
    ASSERT_FAILS(qvlm_image_preprocess(&img, &c, NULL, &px, &err), QVLM_E_INVALID, &err, "aspect ratio");
    ASSERT_TRUE(px.values == NULL && px.n_patches == 0);
    c.do_resize = false;
    img.width = 40;
    ASSERT_FAILS(qvlm_image_preprocess(&img, &c, NULL, &px, &err), QVLM_E_INVALID, &err, "multiples of 32");
    qvlm_image_free(&img);
    ASSERT_FAILS(qvlm_image_preprocess(&img, &c, NULL, &px, &err), QVLM_E_INVALID, &err, "empty image");
}

/* ---- hash: parameters -------------------------------------------------------------------- */

static void test_hash_parameters(void) {
    qvlm_preprocess_config c = qwen35_config();
    qvlm_image img = {.width = 300, .height = 200, .rgb = noise_image(300, 200, 3)};
    qvlm_hash128 h0 = qvlm_image_hash(&img, &c);
    ASSERT_TRUE(qvlm_hash128_eq(h0, qvlm_image_hash(&img, &c))); /* deterministic */
    qvlm_preprocess_config v[8];
    for (int i = 0; i < 8; i++) v[i] = c;
    v[0].min_pixels = 100000;      /* changes the resize target of a 300x200 image */
    v[1].image_mean[1] = 0.25f;
    v[2].image_std[0] = 0.26f;
    v[3].patch_size = 14;
    v[4].merge_size = 1;
    v[5].resample = QVLM_RESAMPLE_BILINEAR;
    v[6].do_normalize = false;
    v[7].temporal_patch_size = 1;
    for (int i = 0; i < 8; i++)
        if (qvlm_hash128_eq(h0, qvlm_image_hash(&img, &v[i]))) {
            qvlm_image_free(&img);
            QTEST_FAIL("changing parameter set %d does not change the hash", i);
        }
    /* A parameter that does not change pixel_values for this image keeps the key:
     * max_pixels far above the image, and lanczos (which the reference runs as bicubic). */
    qvlm_preprocess_config same = c;
    same.max_pixels = c.max_pixels / 2;
    same.resample = QVLM_RESAMPLE_LANCZOS;
    ASSERT_TRUE(qvlm_hash128_eq(h0, qvlm_image_hash(&img, &same)));
    qvlm_image_free(&img);
}

int main(void) {
    RUN(test_fixture_dense);
    RUN(test_fixture_moe);
    RUN(test_fixture_pooled);
    RUN(test_smart_resize_spec_examples);
    RUN(test_smart_resize_half_to_even);
    RUN(test_smart_resize_clamps);
    RUN(test_smart_resize_refuses);
    RUN(test_config_fixture_values);
    RUN(test_config_keys_and_defaults);
    RUN(test_config_bad_values);
    RUN(test_resize_invariants);
    RUN(test_resize_matches_scalar_reference);
    RUN(test_preprocess_layout);
    RUN(test_preprocess_refuses);
    RUN(test_hash_parameters);
    return qtest_done();
}
