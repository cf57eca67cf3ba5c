/* checkpoint_layout.h - the tensors a Hub checkpoint of a given config holds: names, shapes and
 * stored dtypes (qwen35-arch §2), in the official layout (fused MoE experts, f32 A_log and
 * linear_attn.norm, bf16 elsewhere). Used to synthesise random-weight checkpoints. */
#ifndef QVLM_MODEL_CHECKPOINT_LAYOUT_H
#define QVLM_MODEL_CHECKPOINT_LAYOUT_H

#include "core/dtype.h"
#include "model/config.h"

typedef struct qvlm_layout_tensor {
    char name[128];
    qvlm_dtype dtype;
    int n_dims;
    int64_t shape[5];
    /* How to fill it with random values: 0 = normal(0, 1/sqrt(fan_in)) weights, 1 = zero-centred
     * norm (small values around 0), 2 = ordinary norm / LayerNorm weight (around 1),
     * 3 = bias (small), 4 = A_log (log of uniform 1..16), 5 = embedding (normal 0, 0.02) */
    int init;
    int64_t fan_in;
} qvlm_layout_tensor;

/* Enumerate the checkpoint's tensors; returns their count, or -1 on allocation failure.
 * The caller frees *out. */
int64_t qvlm_checkpoint_layout(const qvlm_config *cfg, bool tied, qvlm_layout_tensor **out);

#endif
