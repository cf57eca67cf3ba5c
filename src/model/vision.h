/* vision.h - the Qwen3.5 vision tower (qwen35-arch §5): patches in, one embedding per 2x2
 * merged patch out, ready to replace the image-pad rows of the text input.
 *
 * Images are independent: a batch of images gives exactly the rows each image gives alone
 * (attention never crosses an image or a frame), so any subset of a request's images can be
 * encoded, one at a time or together. Memory grows linearly with the number of patches: the
 * attention is tiled with an online softmax and never holds an n x n matrix. */
#ifndef QVLM_MODEL_VISION_H
#define QVLM_MODEL_VISION_H

#include "kernels/backend.h"
#include "model/model.h"
#include "model/mrope.h"

/* Patches of an image of grid g, and its output rows (after the spatial merge). */
static inline int64_t qvlm_vision_patches(qvlm_grid g) { return (int64_t)g.t * g.h * g.w; }

/* Scratch bytes that encoding n_patches patches at once needs (a pure function of the config:
 * linear in n_patches). */
size_t qvlm_vision_scratch_bytes(const qvlm_config *cfg, int64_t n_patches);

/* Encode n_images images. pixels: host f32 [sum of patches][C*T*P*P] in the processor's patch
 * order (§6); out: backend memory [sum of merged tokens][out_hidden]. Grids must be divisible
 * by the merge size (QVLM_E_INVALID otherwise). Scratch is allocated for the call and freed. */
qvlm_status qvlm_vision_encode(const qvlm_model *m, qvlm_stream *s, const float *pixels, const qvlm_grid *grids,
                               int64_t n_images, float *out, qvlm_error *err);

#endif /* QVLM_MODEL_VISION_H */
