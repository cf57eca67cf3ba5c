/* image_hash.c - the content key of an image for the cross-turn cache (see image_preprocess.h).
 *
 * Two images must share a key exactly when they give the same pixel_values, whatever file
 * they came from. So the key covers the decoded pixels and their size, plus the preprocessing
 * as it acts on pixels: the resize target and filter, P, T, m, and the 3×256 table of f32
 * output values (which folds mean, std, rescale factor and the do_* flags into exactly what
 * they change; two configs writing the same numbers share keys, as they should).
 *
 * Layout: a fixed little-endian parameter record is hashed with XXH3-64; that hash seeds
 * XXH3-128 over the RGB bytes. No allocation, so the function cannot fail.
 */
#include <string.h>
#include <xxhash.h>

#include "model/image_preprocess_impl.h"

#define HASH_TAG "qvlm-image-v1"

struct record {
    uint8_t bytes[64 + 3 * 256 * 4];
    size_t n;
};

static void put_u32(struct record *r, uint32_t v) {
    for (int i = 0; i < 4; i++) r->bytes[r->n++] = (uint8_t)(v >> (8 * i));
}

qvlm_hash128 qvlm_image_hash(const qvlm_image *img, const qvlm_preprocess_config *cfg) {
    struct record r = {.n = 0};
    memcpy(r.bytes, HASH_TAG, sizeof(HASH_TAG) - 1);
    r.n = sizeof(HASH_TAG) - 1;
    put_u32(&r, (uint32_t)img->width);
    put_u32(&r, (uint32_t)img->height);

    /* A target that cannot be computed (refused aspect ratio) is recorded as 0 x 0. */
    int th = 0, tw = 0;
    qvlm_error ignored;
    if (qvlm_preprocess_target(img->height, img->width, cfg, &th, &tw, &ignored) != QVLM_OK) th = tw = 0;
    put_u32(&r, (uint32_t)th);
    put_u32(&r, (uint32_t)tw);
    put_u32(&r, (uint32_t)(cfg->resample == QVLM_RESAMPLE_BILINEAR)); /* lanczos runs bicubic */
    put_u32(&r, (uint32_t)cfg->patch_size);
    put_u32(&r, (uint32_t)cfg->temporal_patch_size);
    put_u32(&r, (uint32_t)cfg->merge_size);

    float lut[3][256];
    qvlm_preprocess_lut(cfg, lut);
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            uint32_t bits;
            memcpy(&bits, &lut[c][v], sizeof(bits));
            put_u32(&r, bits);
        }

    XXH64_hash_t seed = XXH3_64bits(r.bytes, r.n);
    size_t n_bytes = img->rgb ? (size_t)img->width * (size_t)img->height * 3 : 0;
    XXH128_hash_t h = XXH3_128bits_withSeed(img->rgb, n_bytes, seed);
    return (qvlm_hash128){.lo = h.low64, .hi = h.high64};
}
