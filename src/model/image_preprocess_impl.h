/* image_preprocess_impl.h - helpers shared by image_preprocess.c and image_hash.c (internal). */
#ifndef QVLM_MODEL_IMAGE_PREPROCESS_IMPL_H
#define QVLM_MODEL_IMAGE_PREPROCESS_IMPL_H

#include "model/image_preprocess.h"

/* The size the image is resized to: smart_resize's result when do_resize, else the image's own
 * size, which must then be a multiple of patch_size·merge_size (QVLM_E_INVALID otherwise). */
qvlm_status qvlm_preprocess_target(int height, int width, const qvlm_preprocess_config *cfg, int *h_out,
                                   int *w_out, qvlm_error *err);

/* lut[c][v] = the f32 pixel value the reference computes for channel c and uint8 value v:
 *   rescale+normalise (fused, as transformers does): (v - mean·(1/r)) / (std·(1/r)) in f32
 *   normalise only: (v - mean) / std;   rescale only: v · r;   neither: v. */
void qvlm_preprocess_lut(const qvlm_preprocess_config *cfg, float lut[3][256]);

#endif /* QVLM_MODEL_IMAGE_PREPROCESS_IMPL_H */
