/* model.h - a loaded Qwen3.5 checkpoint: config + weights bound to a backend.
 *
 * Weights are read from the Hub layout as is (qwen35-arch §2): `model.language_model.*`,
 * `model.visual.*`, `lm_head.weight` only when untied, `mtp.*` ignored; MoE experts fused
 * (`mlp.experts.gate_up_proj` [E][2I][H], `mlp.experts.down_proj` [E][H][I]) or per expert.
 * Every tensor's presence, dtype and shape is checked against the config at load time; ops
 * never see a wrong shape. The model is immutable after load and shared by all sessions.
 * (CPU backend: weights are used in place from the mapping, so freeing needs no per-tensor
 * backend calls; a device backend's uploads are released with the backend.) */
#ifndef QVLM_MODEL_MODEL_H
#define QVLM_MODEL_MODEL_H

#include "core/safetensors.h"
#include "qvlm.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "model/image_preprocess.h"

typedef struct qvlm_gdn_weights {
    qvlm_tensor in_proj_qkv; /* [conv_dim][hidden]   rows = q | k | v */
    qvlm_tensor in_proj_z;   /* [value_dim][hidden] */
    qvlm_tensor in_proj_b;   /* [Hv][hidden] */
    qvlm_tensor in_proj_a;   /* [Hv][hidden] */
    qvlm_tensor conv1d;      /* [conv_dim][K] (stored [conv_dim][1][K]) */
    qvlm_tensor dt_bias;     /* [Hv] */
    qvlm_tensor A_log;       /* [Hv] (f32 on the Hub) */
    qvlm_tensor norm;        /* [dv] ordinary (not zero-centred) */
    qvlm_tensor out_proj;    /* [hidden][value_dim] */
} qvlm_gdn_weights;

typedef struct qvlm_attn_weights {
    qvlm_tensor q_proj; /* [Hq*2*D][hidden]  per head: query | gate */
    qvlm_tensor k_proj; /* [Hkv*D][hidden] */
    qvlm_tensor v_proj; /* [Hkv*D][hidden] */
    qvlm_tensor o_proj; /* [hidden][Hq*D] */
    qvlm_tensor q_norm; /* [D] zero-centred */
    qvlm_tensor k_norm; /* [D] zero-centred */
} qvlm_attn_weights;

typedef struct qvlm_mlp_weights {
    qvlm_tensor gate_proj; /* [I][hidden] */
    qvlm_tensor up_proj;   /* [I][hidden] */
    qvlm_tensor down_proj; /* [hidden][I] */
} qvlm_mlp_weights;

typedef struct qvlm_moe_weights {
    qvlm_tensor router;      /* [E][hidden] (mlp.gate.weight) */
    qvlm_mlp_weights *expert; /* [E]; views into fused tensors or per-expert tensors */
    qvlm_mlp_weights shared;  /* shared expert, [Is] wide */
    qvlm_tensor shared_gate; /* [1][hidden] */
} qvlm_moe_weights;

typedef struct qvlm_layer {
    bool is_full;
    qvlm_tensor input_layernorm;          /* [hidden] zero-centred */
    qvlm_tensor post_attention_layernorm; /* [hidden] zero-centred */
    qvlm_gdn_weights gdn;                 /* when !is_full */
    qvlm_attn_weights attn;               /* when is_full */
    qvlm_mlp_weights mlp;                 /* dense models */
    qvlm_moe_weights moe;                 /* MoE models */
} qvlm_layer;

typedef struct qvlm_vision_block {
    qvlm_tensor norm1_w, norm1_b;     /* [Hvis] */
    qvlm_tensor qkv_w, qkv_b;         /* [3*Hvis][Hvis], [3*Hvis] */
    qvlm_tensor proj_w, proj_b;       /* [Hvis][Hvis], [Hvis] */
    qvlm_tensor norm2_w, norm2_b;     /* [Hvis] */
    qvlm_tensor fc1_w, fc1_b;         /* [Ivis][Hvis], [Ivis] */
    qvlm_tensor fc2_w, fc2_b;         /* [Hvis][Ivis], [Hvis] */
} qvlm_vision_block;

typedef struct qvlm_vision_weights {
    qvlm_tensor patch_w, patch_b;     /* [Hvis][C*T*P*P] (Conv3d weight flattened), [Hvis] */
    qvlm_tensor pos_embed;            /* [side*side][Hvis] */
    qvlm_vision_block *blocks;        /* [depth] */
    qvlm_tensor merger_norm_w, merger_norm_b; /* [Hvis] */
    qvlm_tensor merger_fc1_w, merger_fc1_b;   /* [4*Hvis][4*Hvis], [4*Hvis] */
    qvlm_tensor merger_fc2_w, merger_fc2_b;   /* [out_hidden][4*Hvis], [out_hidden] */
} qvlm_vision_weights;

/* Load-time choices. */
typedef struct qvlm_model_opts {
    bool rope_freq_bf16;     /* see qvlm_rope_params.freq_bf16; false for real use */
    qvlm_weight_quant quant; /* QVLM_QUANT_Q8_0: every 2-D matrix weight of the text tower whose
                                rows are a multiple of 32 long (the embedding / lm_head, projections,
                                MLPs, experts, router) is replaced at load by a Q8_0 copy the model
                                owns; the vision tower and 1-D weights stay as stored */
    bool mmap_weights;       /* CPU, no quantisation: keep those matrices in the mapped checkpoint
                                rather than copying them into huge-page memory the model owns
                                (made only when they fit in available memory) */
    qvlm_progress_fn progress; /* optional: "load", tensor bytes bound / total */
    void *progress_user;
} qvlm_model_opts;

typedef struct qvlm_model {
    char *dir;
    qvlm_model_opts opts;
    qvlm_config cfg;
    qvlm_st_set st;      /* the mapped checkpoint; weights point into it */
    qvlm_backend *be;    /* borrowed: must outlive the model */
    qvlm_backend *owned_be; /* == be when qvlm_model_load made it; freed with the model */
    qvlm_tensor embed_tokens; /* [vocab][hidden] */
    qvlm_tensor norm;         /* [hidden] final, zero-centred */
    qvlm_tensor lm_head;      /* [vocab][hidden]; == embed_tokens when tied */
    bool tied;
    qvlm_layer *layers;       /* [num_hidden_layers] */
    qvlm_vision_weights vision;
    qvlm_preprocess_config preprocess; /* preprocessor_config.json (vision models) */
    struct qvlm_tokenizer *tokenizer;         /* tokenizer.json, or NULL when absent */
    struct qvlm_chat_template *chat_template; /* the model's template, or NULL when absent */
    void **owned;             /* host buffers the weights point into (widened, quantised) */
    size_t n_owned, cap_owned;
    int64_t n_params;         /* text + vision parameters bound */
    size_t weight_bytes;      /* their bytes as stored */
    size_t copy_bytes;        /* bytes of the load-time copies of weights (quantised or as stored) */
} qvlm_model;

/* Load the checkpoint in `dir` onto backend `be` (borrowed; it must outlive the model).
 * `opts` may be NULL for the defaults.
 * Errors name the file and tensor: missing files or tensors, wrong shapes or dtypes, lying
 * headers. On failure *out is NULL and nothing leaks. */
qvlm_status qvlm_model_load_dir(const char *dir, qvlm_backend *be, const qvlm_model_opts *opts, qvlm_model **out,
                                qvlm_error *err);
void qvlm_model_free(qvlm_model *m); /* NULL is a no-op */

/* Bytes of one weight tensor as stored (0 for absent ones). */
size_t qvlm_tensor_bytes(const qvlm_tensor *t);

#endif /* QVLM_MODEL_MODEL_H */
