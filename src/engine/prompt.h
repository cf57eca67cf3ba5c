/* prompt.h - a prompt's token ids with its images placed: each image's placeholder (one
 * <|image_pad|>, as the chat template writes it, or a run already as long as the image needs)
 * expanded to its grid's token count, and the span of every image recorded (qwen35-arch §7).
 *
 * A span runs from its <|vision_start|> to the first token after its <|vision_end|>
 * (mlx-vlm's image_end_index): a cached prefix may end at a span's `end` (a checkpoint
 * right after the image) but never inside a span. */
#ifndef QVLM_ENGINE_PROMPT_H
#define QVLM_ENGINE_PROMPT_H

#include <stdint.h>

#include "core/status.h"
#include "model/config.h"
#include "model/image_preprocess.h"
#include "model/mrope.h"

typedef struct qvlm_image_span {
    int64_t start;              /* <|vision_start|> (or the first pad if none precedes it) */
    int64_t pad_start, pad_end; /* the pad run [pad_start, pad_end) */
    int64_t end;                /* first index after <|vision_end|> (or after the pads) */
    qvlm_grid grid;
    qvlm_hash128 hash;          /* content hash of the image */
    int64_t image;              /* index into the request's images */
} qvlm_image_span;

typedef struct qvlm_prompt {
    int32_t *ids; /* [n] expanded */
    int64_t n;
    qvlm_image_span *spans; /* [n_spans] in order */
    int64_t n_spans;
} qvlm_prompt;

/* Expand `ids` (n tokens) for images 0..n_images-1 in order of appearance. Errors
 * (QVLM_E_MISMATCH) name the image: more or fewer placeholders than images, a pad run whose
 * length is neither 1 nor the image's token count. On failure *out is empty. */
qvlm_status qvlm_prompt_expand(const int32_t *ids, int64_t n, const qvlm_config *cfg, const qvlm_grid *grids,
                               const qvlm_hash128 *hashes, int64_t n_images, qvlm_prompt *out, qvlm_error *err);
void qvlm_prompt_free(qvlm_prompt *p);

#endif /* QVLM_ENGINE_PROMPT_H */
