/* config.h - the model's hyper-parameters, read from a Hub checkpoint's config.json
 * (qwen35-arch §1) and generation_config.json. Every field is validated: a config that lies
 * (zero heads, a rotary dim that does not split into the M-RoPE sections, ...) is refused
 * with a message naming the file and field, before any tensor is touched. */
#ifndef QVLM_MODEL_CONFIG_H
#define QVLM_MODEL_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"

#define QVLM_MAX_EOS 8

typedef enum qvlm_model_type { QVLM_MODEL_QWEN3_5 = 0, QVLM_MODEL_QWEN3_5_MOE } qvlm_model_type;

typedef struct qvlm_text_config {
    int64_t vocab_size;
    int64_t hidden_size;
    int64_t intermediate_size; /* dense MLP width (0 for MoE) */
    int64_t num_hidden_layers;
    bool *layer_is_full;       /* [num_hidden_layers]: full attention (else Gated DeltaNet) */
    /* full attention */
    int64_t num_attention_heads, num_key_value_heads, head_dim;
    /* Gated DeltaNet */
    int64_t linear_conv_kernel_dim, linear_key_head_dim, linear_value_head_dim;
    int64_t linear_num_key_heads, linear_num_value_heads;
    /* MoE (qwen3_5_moe) */
    int64_t num_experts, num_experts_per_tok, moe_intermediate_size, shared_expert_intermediate_size;
    float rms_norm_eps;
    int64_t max_position_embeddings;
    /* M-RoPE */
    double rope_theta;
    int64_t rotary_dim; /* head_dim * partial_rotary_factor */
    int mrope_section[3];
} qvlm_text_config;

typedef struct qvlm_vision_config {
    bool present;
    int64_t depth, hidden_size, intermediate_size, num_heads, in_channels;
    int64_t patch_size, temporal_patch_size, spatial_merge_size, out_hidden_size;
    int64_t num_position_embeddings; /* a square grid side^2 */
    double rope_theta;
} qvlm_vision_config;

typedef struct qvlm_config {
    qvlm_model_type model_type;
    qvlm_text_config text;
    qvlm_vision_config vision;
    int32_t image_token_id, video_token_id, vision_start_token_id, vision_end_token_id;
    int32_t eos_ids[QVLM_MAX_EOS];
    int n_eos;
} qvlm_config;

/* Derived sizes of the Gated DeltaNet layers. */
static inline int64_t qvlm_gdn_key_dim(const qvlm_text_config *t) {
    return t->linear_num_key_heads * t->linear_key_head_dim;
}
static inline int64_t qvlm_gdn_value_dim(const qvlm_text_config *t) {
    return t->linear_num_value_heads * t->linear_value_head_dim;
}
static inline int64_t qvlm_gdn_conv_dim(const qvlm_text_config *t) {
    return 2 * qvlm_gdn_key_dim(t) + qvlm_gdn_value_dim(t);
}

/* Read DIR/config.json and, when present, DIR/generation_config.json. */
qvlm_status qvlm_config_load(const char *model_dir, qvlm_config *cfg, qvlm_error *err);
/* Parse config.json text (pure; the fuzz entry point). `name` is used in messages. */
qvlm_status qvlm_config_parse(const char *json, size_t n_bytes, const char *name, qvlm_config *cfg,
                              qvlm_error *err);
void qvlm_config_free(qvlm_config *cfg);

#endif /* QVLM_MODEL_CONFIG_H */
