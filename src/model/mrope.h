/* mrope.h - multimodal RoPE position ids (qwen35-arch §8).
 *
 * Walking a token run that starts at M-RoPE position `start_pos`:
 *  - a text token gets (cur, cur, cur), then cur += 1;
 *  - an image's run of gh*gw/merge^2 pad tokens gets, for merged row r and column c,
 *    (cur, cur + r, cur + c), then cur += max(gh, gw) / merge.
 * The result continues exactly where a cached prefix stopped: a checkpoint stores the next
 * position (`next_pos`), and the suffix is laid out from it whether or not it holds images. */
#ifndef QVLM_MODEL_MROPE_H
#define QVLM_MODEL_MROPE_H

#include <stdint.h>

#include "core/status.h"

typedef struct qvlm_grid {
    int32_t t, h, w; /* in patches (before the merge) */
} qvlm_grid;

/* Tokens of one image after the spatial merge. */
static inline int64_t qvlm_grid_tokens(qvlm_grid g, int64_t merge) { return (int64_t)g.t * g.h * g.w / (merge * merge); }

/* Fill pos [3][n] (rows t, h, w) for ids[0..n). Runs of `image_token_id` are matched in order
 * to grids[0..n_grids); each image's pads must be contiguous and exactly its token count.
 * *next_pos receives 1 + the largest position used (or start_pos when n == 0).
 * Fails (naming the image) when pads and grids disagree. */
qvlm_status qvlm_mrope_positions(const int32_t *ids, int64_t n, int32_t image_token_id, const qvlm_grid *grids,
                                 int64_t n_grids, int64_t merge, int64_t start_pos, int32_t *pos, int64_t *next_pos,
                                 qvlm_error *err);

#endif /* QVLM_MODEL_MROPE_H */
