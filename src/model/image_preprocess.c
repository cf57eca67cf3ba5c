/* image_preprocess.c - decoded RGB -> pixel_values [n_patches][C·T·P·P] (qwen35-arch.md §6).
 *
 * Steps, as transformers 5's Qwen2VLImageProcessor (torchvision backend) runs them:
 *   1. target size: smart_resize (smart_resize.c);
 *   2. resize on uint8 with antialiased bicubic (image_resize.c), skipped when sizes match;
 *   3. rescale + normalise in f32. Every output value depends only on (channel, uint8 value),
 *      so a 3×256 table computed with the reference's exact f32 operations gives bit-identical
 *      values at the cost of a lookup;
 *   4. temporal duplication: a still image is T identical frames, so grid_t = 1;
 *   5. patchify in merge-block order; inside a row: channel, temporal, y, x.
 */
#include <stdlib.h>
#include <string.h>

#include "model/image_preprocess_impl.h"
#include "model/image_resize.h"

/* ---- helpers shared with image_hash.c -------------------------------------------------- */

qvlm_status qvlm_preprocess_target(int h, int w, const qvlm_preprocess_config *cfg, int *h_out,
                                   int *w_out, qvlm_error *err) {
    if (cfg->do_resize) return qvlm_smart_resize(h, w, cfg, h_out, w_out, err);
    int f = cfg->patch_size * cfg->merge_size;
    if (h % f != 0 || w % f != 0)
        return qvlm_errorf(err, QVLM_E_INVALID,
                           "image is %d x %d: with do_resize = false both sides must be multiples of %d",
                           w, h, f);
    *h_out = h;
    *w_out = w;
    return QVLM_OK;
}

void qvlm_preprocess_lut(const qvlm_preprocess_config *cfg, float lut[3][256]) {
    for (int c = 0; c < 3; c++) {
        float mean = cfg->image_mean[c], std = cfg->image_std[c];
        float r = (float)cfg->rescale_factor;
        if (cfg->do_rescale && cfg->do_normalize) {
            /* transformers fuses the two: mean and std (f32 tensors) times 1/r (a Python
             * float, cast to f32 by the multiply), then (x - mean) / std on f32 pixels. */
            float inv = (float)(1.0 / cfg->rescale_factor);
            mean = mean * inv;
            std = std * inv;
        }
        for (int v = 0; v < 256; v++) {
            float x = (float)v;
            if (cfg->do_normalize)
                x = (x - mean) / std;
            else if (cfg->do_rescale)
                x = x * r;
            lut[c][v] = x;
        }
    }
}

/* ---- patchify -------------------------------------------------------------------------- */

struct patch_ctx {
    const uint8_t *rgb; /* [h][w][3], the resized image */
    int width;
    int grid_w;         /* patches per row */
    int P, T, m;
    int64_t n_patches;
    int64_t patch_dim;
    float (*lut)[256];
    float *out;
};

/* Row r of pixel_values is the patch at (py, px) with
 *   r = ((by·(gw/m) + bx)·m + iy)·m + ix,  py = by·m + iy,  px = bx·m + ix. */
static void patch_task(void *arg, int ith, int nth) {
    const struct patch_ctx *c = arg;
    const int P = c->P, T = c->T, m = c->m, blocks_w = c->grid_w / m;
    const size_t plane = (size_t)P * (size_t)P;
    long r0, r1;
    qvlm_split_rows((long)c->n_patches, ith, nth, &r0, &r1);
    for (long r = r0; r < r1; r++) {
        long block = r / (m * m), in_block = r % (m * m);
        int py = (int)(block / blocks_w) * m + (int)(in_block / m);
        int px = (int)(block % blocks_w) * m + (int)(in_block % m);
        float *row = c->out + (size_t)r * (size_t)c->patch_dim;
        /* Planes (channel, frame) of P·P values; every frame of a still image is the same. */
        float *red = row, *green = row + (size_t)T * plane, *blue = row + (size_t)2 * T * plane;
        for (int y = 0; y < P; y++) {
            const uint8_t *src = c->rgb + ((size_t)(py * P + y) * (size_t)c->width + (size_t)px * P) * 3;
            for (int x = 0; x < P; x++, src += 3) {
                float vr = c->lut[0][src[0]], vg = c->lut[1][src[1]], vb = c->lut[2][src[2]];
                size_t at = (size_t)y * P + x;
                for (int t = 0; t < T; t++, at += plane) {
                    red[at] = vr;
                    green[at] = vg;
                    blue[at] = vb;
                }
            }
        }
    }
}

/* ---- entry points ---------------------------------------------------------------------- */

static qvlm_status check_config(const qvlm_preprocess_config *cfg, qvlm_error *err) {
    if (cfg->patch_size < 1 || cfg->patch_size > 256 || cfg->temporal_patch_size < 1 ||
        cfg->temporal_patch_size > 16 || cfg->merge_size < 1 || cfg->merge_size > 16 || cfg->min_pixels < 1 ||
        cfg->max_pixels < cfg->min_pixels || cfg->max_pixels > ((int64_t)1 << 30))
        return qvlm_errorf(err, QVLM_E_INVALID, "preprocess: invalid configuration (patch %d, temporal %d, "
                           "merge %d, pixels %lld..%lld)", cfg->patch_size, cfg->temporal_patch_size,
                           cfg->merge_size, (long long)cfg->min_pixels, (long long)cfg->max_pixels);
    return QVLM_OK;
}

/* The resized image: the input itself when no resize is needed, else a new buffer (*owned). */
static qvlm_status resized_pixels(const qvlm_image *img, int rh, int rw, const qvlm_preprocess_config *cfg,
                                  qvlm_pool *pool, const uint8_t **pix, uint8_t **owned, qvlm_error *err) {
    *owned = NULL;
    *pix = img->rgb;
    if (rh == img->height && rw == img->width) return QVLM_OK;
    *owned = malloc((size_t)rh * (size_t)rw * 3);
    if (!*owned) return qvlm_errorf(err, QVLM_E_NOMEM, "preprocess: out of memory for %d x %d", rw, rh);
    qvlm_resize_filter f = cfg->resample == QVLM_RESAMPLE_BILINEAR ? QVLM_FILTER_BILINEAR : QVLM_FILTER_BICUBIC;
    qvlm_status rc = qvlm_resize_rgb_u8(img->rgb, img->width, img->height, *owned, rw, rh, f, pool, err);
    if (rc) {
        free(*owned);
        *owned = NULL;
        return rc;
    }
    *pix = *owned;
    return QVLM_OK;
}

qvlm_status qvlm_image_preprocess(const qvlm_image *img, const qvlm_preprocess_config *cfg, qvlm_pool *pool,
                                  qvlm_pixels *out, qvlm_error *err) {
    memset(out, 0, sizeof(*out));
    if (!img || !img->rgb || img->width < 1 || img->height < 1)
        return qvlm_errorf(err, QVLM_E_INVALID, "preprocess: empty image");
    qvlm_status rc = check_config(cfg, err);
    int rh, rw;
    if (!rc) rc = qvlm_preprocess_target(img->height, img->width, cfg, &rh, &rw, err);
    if (rc) return rc;

    const int P = cfg->patch_size, T = cfg->temporal_patch_size, m = cfg->merge_size;
    const int gh = rh / P, gw = rw / P;
    const int64_t n_patches = (int64_t)gh * gw, patch_dim = (int64_t)3 * T * P * P;
    size_t n_floats;
    if (qvlm_mul_overflow((size_t)n_patches, (size_t)patch_dim, &n_floats) ||
        qvlm_mul_overflow(n_floats, sizeof(float), &n_floats))
        return qvlm_errorf(err, QVLM_E_LIMIT, "preprocess: %d x %d patches overflow", gw, gh);
    float *values = malloc(n_floats);
    if (!values)
        return qvlm_errorf(err, QVLM_E_NOMEM, "preprocess: out of memory for %lld patches",
                           (long long)n_patches);

    const uint8_t *pix;
    uint8_t *owned;
    rc = resized_pixels(img, rh, rw, cfg, pool, &pix, &owned, err);
    if (rc) {
        free(values);
        return rc;
    }
    float lut[3][256];
    qvlm_preprocess_lut(cfg, lut);
    struct patch_ctx c = {.rgb = pix, .width = rw, .grid_w = gw, .P = P, .T = T, .m = m,
                          .n_patches = n_patches, .patch_dim = patch_dim, .lut = lut, .out = values};
    qvlm_pool_run(pool, patch_task, &c);
    free(owned);

    *out = (qvlm_pixels){.values = values, .n_patches = n_patches, .patch_dim = patch_dim,
                         .grid_t = 1, .grid_h = gh, .grid_w = gw};
    return QVLM_OK;
}

void qvlm_pixels_free(qvlm_pixels *p) {
    if (!p) return;
    free(p->values);
    memset(p, 0, sizeof(*p));
}
