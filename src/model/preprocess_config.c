/* preprocess_config.c - preprocessor_config.json -> qvlm_preprocess_config (qwen35-arch.md §6).
 *
 * Absent keys take transformers' Qwen2VLImageProcessor class defaults, so a file means here
 * what it means to the reference. Pixel bounds: `size.shortest_edge`/`size.longest_edge` are
 * pixel COUNTS (min/max pixels), the older `size.min_pixels`/`size.max_pixels` are read too,
 * and top-level `min_pixels`/`max_pixels` override both (transformers' __init__ order).
 */
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/json.h"
#include "model/image_preprocess.h"

#define MAX_CONFIG_BYTES ((size_t)1 << 20)
/* Up to 32768² pixels after resize: beyond that the f32 output alone is > 25 GB. */
#define MAX_PIXEL_BOUND ((int64_t)1 << 30)

void qvlm_preprocess_config_default(qvlm_preprocess_config *cfg) {
    *cfg = (qvlm_preprocess_config){
        .min_pixels = 56 * 56,
        .max_pixels = 28 * 28 * 1280,
        .patch_size = 14,
        .temporal_patch_size = 2,
        .merge_size = 2,
        .image_mean = {0.48145466f, 0.4578275f, 0.40821073f}, /* OPENAI_CLIP_MEAN */
        .image_std = {0.26862954f, 0.26130258f, 0.27577711f}, /* OPENAI_CLIP_STD */
        .rescale_factor = 1.0 / 255.0,
        .resample = QVLM_RESAMPLE_BICUBIC,
        .do_resize = true,
        .do_rescale = true,
        .do_normalize = true,
        .do_convert_rgb = true,
    };
}

/* image_mean / image_std: a list of 3 numbers, or one number for every channel. */
static qvlm_status read_triplet(const json_t *doc, const char *key, const char *src, bool nonzero,
                                float out[3], qvlm_error *err) {
    json_t *v = json_object_get(doc, key);
    if (!v || json_is_null(v)) return QVLM_OK;
    double d[3];
    if (json_is_number(v)) {
        d[0] = d[1] = d[2] = json_number_value(v);
    } else if (json_is_array(v) && json_array_size(v) == 3) {
        for (size_t i = 0; i < 3; i++) {
            json_t *e = json_array_get(v, i);
            if (!json_is_number(e))
                return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: %s[%zu] is %s (must be a number)", src, key, i,
                                   qvlm_json_type_name(e));
            d[i] = json_number_value(e);
        }
    } else {
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: %s must be a number or a list of 3 numbers", src, key);
    }
    for (int i = 0; i < 3; i++) {
        if (!(d[i] > -1e6 && d[i] < 1e6) || (nonzero && (float)d[i] == 0.0f))
            return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: %s[%d] = %g (must be %sfinite)", src, key, i, d[i],
                               nonzero ? "non-zero and " : "");
        out[i] = (float)d[i]; /* torch.tensor(list) holds float32 */
    }
    return QVLM_OK;
}

static qvlm_status read_pixel_bounds(const json_t *doc, const char *src, qvlm_preprocess_config *cfg,
                                     qvlm_error *err) {
    char where[512];
    json_t *size;
    qvlm_status rc = qvlm_json_obj_opt(doc, "size", src, &size, err);
    if (rc) return rc;
    snprintf(where, sizeof(where), "%s: size", src);
    if (size) {
        const char *lo_keys[] = {"min_pixels", "shortest_edge"}, *hi_keys[] = {"max_pixels", "longest_edge"};
        for (int i = 0; i < 2; i++) {
            if ((rc = qvlm_json_int_opt(size, lo_keys[i], where, 1, MAX_PIXEL_BOUND, cfg->min_pixels,
                                        &cfg->min_pixels, err)) ||
                (rc = qvlm_json_int_opt(size, hi_keys[i], where, 1, MAX_PIXEL_BOUND, cfg->max_pixels,
                                        &cfg->max_pixels, err)))
                return rc;
        }
    }
    snprintf(where, sizeof(where), "%s", src);
    if ((rc = qvlm_json_int_opt(doc, "min_pixels", where, 1, MAX_PIXEL_BOUND, cfg->min_pixels,
                                &cfg->min_pixels, err)) ||
        (rc = qvlm_json_int_opt(doc, "max_pixels", where, 1, MAX_PIXEL_BOUND, cfg->max_pixels,
                                &cfg->max_pixels, err)))
        return rc;
    if (cfg->min_pixels > cfg->max_pixels)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: min pixels %lld > max pixels %lld", src,
                           (long long)cfg->min_pixels, (long long)cfg->max_pixels);
    return QVLM_OK;
}

static qvlm_status read_ints(const json_t *doc, const char *src, qvlm_preprocess_config *cfg,
                             qvlm_error *err) {
    int64_t p, t, m, r;
    qvlm_status rc;
    if ((rc = qvlm_json_int_opt(doc, "patch_size", src, 1, 256, cfg->patch_size, &p, err)) ||
        (rc = qvlm_json_int_opt(doc, "temporal_patch_size", src, 1, 16, cfg->temporal_patch_size, &t, err)) ||
        (rc = qvlm_json_int_opt(doc, "merge_size", src, 1, 16, cfg->merge_size, &m, err)) ||
        (rc = qvlm_json_int_opt(doc, "resample", src, 0, 5, cfg->resample, &r, err)))
        return rc;
    cfg->patch_size = (int)p;
    cfg->temporal_patch_size = (int)t;
    cfg->merge_size = (int)m;
    cfg->resample = (int)r;
    /* transformers' torchvision backend maps PIL codes to torchvision modes and runs LANCZOS
     * as BICUBIC; NEAREST, BOX and HAMMING have other kernels we do not implement. */
    if (r != QVLM_RESAMPLE_BICUBIC && r != QVLM_RESAMPLE_BILINEAR && r != QVLM_RESAMPLE_LANCZOS)
        return qvlm_errorf(err, QVLM_E_UNSUPPORTED,
                           "%s: resample = %lld is not supported (2 bilinear, 3 bicubic, 1 lanczos)", src,
                           (long long)r);
    return QVLM_OK;
}

qvlm_status qvlm_preprocess_config_parse(const json_t *doc, const char *src, qvlm_preprocess_config *cfg,
                                         qvlm_error *err) {
    qvlm_preprocess_config_default(cfg);
    if (!json_is_object(doc))
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: top level is %s, not an object", src,
                           qvlm_json_type_name(doc));
    qvlm_preprocess_config c = *cfg;
    qvlm_status rc;
    if ((rc = read_pixel_bounds(doc, src, &c, err)) || (rc = read_ints(doc, src, &c, err)) ||
        (rc = read_triplet(doc, "image_mean", src, false, c.image_mean, err)) ||
        (rc = read_triplet(doc, "image_std", src, true, c.image_std, err)) ||
        (rc = qvlm_json_num_opt(doc, "rescale_factor", src, 1e-12, 1e12, c.rescale_factor,
                                &c.rescale_factor, err)) ||
        (rc = qvlm_json_bool_opt(doc, "do_resize", src, c.do_resize, &c.do_resize, err)) ||
        (rc = qvlm_json_bool_opt(doc, "do_rescale", src, c.do_rescale, &c.do_rescale, err)) ||
        (rc = qvlm_json_bool_opt(doc, "do_normalize", src, c.do_normalize, &c.do_normalize, err)) ||
        (rc = qvlm_json_bool_opt(doc, "do_convert_rgb", src, c.do_convert_rgb, &c.do_convert_rgb, err)))
        return rc;
    *cfg = c;
    return QVLM_OK;
}

qvlm_status qvlm_preprocess_config_load(const char *model_dir, qvlm_preprocess_config *cfg,
                                        qvlm_error *err) {
    qvlm_preprocess_config_default(cfg);
    char *path = qvlm_path_join(model_dir, "preprocessor_config.json");
    if (!path) return qvlm_errorf(err, QVLM_E_NOMEM, "preprocessor_config.json: out of memory");
    json_t *doc = NULL;
    qvlm_status rc = qvlm_json_load_file(path, MAX_CONFIG_BYTES, &doc, err);
    if (!rc) rc = qvlm_preprocess_config_parse(doc, path, cfg, err);
    json_decref(doc);
    free(path);
    return rc;
}
