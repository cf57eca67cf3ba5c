/* image_preprocess.h - Qwen3.5 image preprocessing: smart_resize, antialiased bicubic resize,
 * rescale + normalise, temporal duplication and patchify (qwen35-arch.md §6), matching
 * transformers' Qwen2VLImageProcessor (torchvision backend, transformers 5.x) bit for bit.
 *
 *   decoded RGB u8 --smart_resize--> (hb, wb) --resize (u8, AA bicubic)--> RGB u8
 *     --(x - mean·255)/(std·255) in f32--> duplicate T times --patchify--> [n_patches][C·T·P·P]
 *
 * Rows of pixel_values are patches in merge-block order: for each merge block (row-major over
 * the (gh/m)×(gw/m) block grid), its m×m patches row-major; inside a row: channel, then
 * temporal, then y, then x. grid_thw = [1, hb/P, wb/P] for a still image.
 */
#ifndef QVLM_MODEL_IMAGE_PREPROCESS_H
#define QVLM_MODEL_IMAGE_PREPROCESS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/json.h"
#include "core/status.h"
#include "core/threads.h"
#include "model/image.h"

/* PIL resample codes as written in preprocessor_config.json. */
enum {
    QVLM_RESAMPLE_NEAREST = 0,
    QVLM_RESAMPLE_LANCZOS = 1,
    QVLM_RESAMPLE_BILINEAR = 2,
    QVLM_RESAMPLE_BICUBIC = 3,
    QVLM_RESAMPLE_BOX = 4,
    QVLM_RESAMPLE_HAMMING = 5,
};

/* preprocessor_config.json, with transformers' Qwen2VLImageProcessor defaults for absent keys. */
typedef struct qvlm_preprocess_config {
    int64_t min_pixels;       /* size.shortest_edge (a pixel count, not an edge!); default 56·56 */
    int64_t max_pixels;       /* size.longest_edge (a pixel count); default 28·28·1280 */
    int patch_size;           /* P, default 14 (Qwen3.5 files say 16) */
    int temporal_patch_size;  /* T, default 2 */
    int merge_size;           /* m, default 2 */
    float image_mean[3];      /* per channel, default OPENAI_CLIP_MEAN */
    float image_std[3];       /* per channel, default OPENAI_CLIP_STD */
    double rescale_factor;    /* default 1/255 */
    int resample;             /* QVLM_RESAMPLE_*; bicubic (3) or bilinear (2); lanczos runs bicubic */
    bool do_resize;           /* default true */
    bool do_rescale;          /* default true */
    bool do_normalize;        /* default true */
    bool do_convert_rgb;      /* default true; decoded images are always RGB already */
} qvlm_preprocess_config;

/* transformers' class defaults (what an empty preprocessor_config.json means). */
void qvlm_preprocess_config_default(qvlm_preprocess_config *cfg);

/* Read <model_dir>/preprocessor_config.json. Pixel bounds come from `size.shortest_edge` /
 * `size.longest_edge`, or the older `size.min_pixels` / `size.max_pixels`; top-level
 * `min_pixels` / `max_pixels` override both, as in transformers. Absent keys keep the
 * defaults. Returns QVLM_E_IO/QVLM_E_NOT_FOUND for an unreadable file, QVLM_E_CORRUPT for a bad
 * value (the message names the field), QVLM_E_UNSUPPORTED for a resample mode other than
 * bicubic, bilinear or lanczos (which transformers' torchvision backend runs as bicubic).
 * On failure *cfg holds the defaults. */
qvlm_status qvlm_preprocess_config_load(const char *model_dir, qvlm_preprocess_config *cfg,
                                        qvlm_error *err);
/* The same from a parsed document; `source` names it in messages. */
qvlm_status qvlm_preprocess_config_parse(const json_t *doc, const char *source,
                                         qvlm_preprocess_config *cfg, qvlm_error *err);

/* The reference's smart_resize for an h×w image: sides rounded to multiples of
 * factor = patch_size·merge_size with Python's half-to-even round(), then scaled into
 * [min_pixels, max_pixels] with the same double arithmetic (floor branch clamped to >= factor,
 * as in transformers 5). Returns QVLM_E_INVALID (h_out, w_out untouched) when a side is < 1,
 * or max(h,w)/min(h,w) > 200, or the result does not fit an int. */
qvlm_status qvlm_smart_resize(int h, int w, const qvlm_preprocess_config *cfg, int *h_out, int *w_out,
                              qvlm_error *err);

/* The model input for one image. Caller-storage struct; release with qvlm_pixels_free. */
typedef struct qvlm_pixels {
    float *values;     /* [n_patches][patch_dim], owned (malloc) */
    int64_t n_patches; /* grid_t·grid_h·grid_w */
    int64_t patch_dim; /* 3·T·P·P (1536 for Qwen3.5) */
    int grid_t, grid_h, grid_w; /* grid_thw, in patches */
} qvlm_pixels;

/* Preprocess a decoded image. `pool` (may be NULL: run on the calling thread) is used for the
 * resize and the normalise/patchify passes.
 * Returns QVLM_E_INVALID (bad aspect ratio, or do_resize = false with sides that are not
 * multiples of P·m), QVLM_E_NOMEM; on failure *out is zeroed. Thread-safe; the pool serialises
 * concurrent callers. */
qvlm_status qvlm_image_preprocess(const qvlm_image *img, const qvlm_preprocess_config *cfg,
                                  qvlm_pool *pool, qvlm_pixels *out, qvlm_error *err);
void qvlm_pixels_free(qvlm_pixels *p); /* NULL and zeroed structs are no-ops */

/* Content key for the cross-turn image cache: XXH3-128 over the RGB pixels, width, height and
 * every preprocessing parameter that changes pixel_values (the smart_resize target, P, T, m,
 * mean, std, rescale factor, resample mode, do_* flags). Equal pixels hash equal however they
 * were encoded (PNG vs lossless WebP); any pixel or parameter change changes the hash. */
typedef struct qvlm_hash128 {
    uint64_t lo, hi;
} qvlm_hash128;
qvlm_hash128 qvlm_image_hash(const qvlm_image *img, const qvlm_preprocess_config *cfg);
static inline bool qvlm_hash128_eq(qvlm_hash128 a, qvlm_hash128 b) {
    return a.lo == b.lo && a.hi == b.hi;
}

#endif /* QVLM_MODEL_IMAGE_PREPROCESS_H */
