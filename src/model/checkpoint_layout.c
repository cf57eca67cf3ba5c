/* checkpoint_layout.c - the tensor list of a Hub checkpoint (see checkpoint_layout.h). */
#include "model/checkpoint_layout.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct list {
    qvlm_layout_tensor *t;
    int64_t n, cap;
    bool oom;
} list;

static void add(list *l, qvlm_dtype dt, int init, int n_dims, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void add(list *l, qvlm_dtype dt, int init, int n_dims, const int64_t *shape, const char *fmt, ...) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        qvlm_layout_tensor *n = realloc(l->t, (size_t)l->cap * sizeof(*n));
        if (!n) {
            l->oom = true;
            return;
        }
        l->t = n;
    }
    qvlm_layout_tensor *t = &l->t[l->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof(t->name), fmt, ap);
    va_end(ap);
    t->dtype = dt;
    t->init = init;
    t->n_dims = n_dims;
    for (int i = 0; i < n_dims; i++) t->shape[i] = shape[i];
    t->fan_in = shape[n_dims - 1];
    if (n_dims == 5) t->fan_in = shape[1] * shape[2] * shape[3] * shape[4];
}

#define S1(a) ((const int64_t[]){a})
#define S2(a, b) ((const int64_t[]){a, b})
#define S3(a, b, c) ((const int64_t[]){a, b, c})
#define BF QVLM_DTYPE_BF16
#define F32 QVLM_DTYPE_F32
#define L "model.language_model.layers.%lld."

static void text_layer(list *l, const qvlm_config *cfg, long long i) {
    const qvlm_text_config *t = &cfg->text;
    const int64_t H = t->hidden_size, D = t->head_dim, Hq = t->num_attention_heads, Hkv = t->num_key_value_heads;
    const int64_t cd = qvlm_gdn_conv_dim(t), vd = qvlm_gdn_value_dim(t), Hv = t->linear_num_value_heads;
    add(l, BF, 1, 1, S1(H), L "input_layernorm.weight", i);
    add(l, BF, 1, 1, S1(H), L "post_attention_layernorm.weight", i);
    if (t->layer_is_full[i]) {
        add(l, BF, 0, 2, S2(2 * Hq * D, H), L "self_attn.q_proj.weight", i);
        add(l, BF, 0, 2, S2(Hkv * D, H), L "self_attn.k_proj.weight", i);
        add(l, BF, 0, 2, S2(Hkv * D, H), L "self_attn.v_proj.weight", i);
        add(l, BF, 0, 2, S2(H, Hq * D), L "self_attn.o_proj.weight", i);
        add(l, BF, 1, 1, S1(D), L "self_attn.q_norm.weight", i);
        add(l, BF, 1, 1, S1(D), L "self_attn.k_norm.weight", i);
    } else {
        add(l, BF, 0, 2, S2(cd, H), L "linear_attn.in_proj_qkv.weight", i);
        add(l, BF, 0, 2, S2(vd, H), L "linear_attn.in_proj_z.weight", i);
        add(l, BF, 0, 2, S2(Hv, H), L "linear_attn.in_proj_b.weight", i);
        add(l, BF, 0, 2, S2(Hv, H), L "linear_attn.in_proj_a.weight", i);
        add(l, BF, 0, 3, S3(cd, 1, t->linear_conv_kernel_dim), L "linear_attn.conv1d.weight", i);
        add(l, BF, 3, 1, S1(Hv), L "linear_attn.dt_bias", i);
        add(l, F32, 4, 1, S1(Hv), L "linear_attn.A_log", i);
        add(l, F32, 2, 1, S1(t->linear_value_head_dim), L "linear_attn.norm.weight", i);
        add(l, BF, 0, 2, S2(H, vd), L "linear_attn.out_proj.weight", i);
    }
    if (cfg->model_type == QVLM_MODEL_QWEN3_5_MOE) {
        const int64_t E = t->num_experts, Im = t->moe_intermediate_size, Is = t->shared_expert_intermediate_size;
        add(l, BF, 0, 2, S2(E, H), L "mlp.gate.weight", i);
        add(l, BF, 0, 3, S3(E, 2 * Im, H), L "mlp.experts.gate_up_proj", i);
        add(l, BF, 0, 3, S3(E, H, Im), L "mlp.experts.down_proj", i);
        add(l, BF, 0, 2, S2(Is, H), L "mlp.shared_expert.gate_proj.weight", i);
        add(l, BF, 0, 2, S2(Is, H), L "mlp.shared_expert.up_proj.weight", i);
        add(l, BF, 0, 2, S2(H, Is), L "mlp.shared_expert.down_proj.weight", i);
        add(l, BF, 0, 2, S2(1, H), L "mlp.shared_expert_gate.weight", i);
    } else {
        const int64_t I = t->intermediate_size;
        add(l, BF, 0, 2, S2(I, H), L "mlp.gate_proj.weight", i);
        add(l, BF, 0, 2, S2(I, H), L "mlp.up_proj.weight", i);
        add(l, BF, 0, 2, S2(H, I), L "mlp.down_proj.weight", i);
    }
}

#define VB "model.visual.blocks.%lld."

static void vision(list *l, const qvlm_vision_config *v) {
    const int64_t Hv = v->hidden_size, I = v->intermediate_size, P = v->patch_size;
    const int64_t m4 = Hv * v->spatial_merge_size * v->spatial_merge_size;
    add(l, BF, 0, 5, ((const int64_t[]){Hv, v->in_channels, v->temporal_patch_size, P, P}), "model.visual.patch_embed.proj.weight");
    add(l, BF, 3, 1, S1(Hv), "model.visual.patch_embed.proj.bias");
    add(l, BF, 5, 2, S2(v->num_position_embeddings, Hv), "model.visual.pos_embed.weight");
    for (long long j = 0; j < v->depth; j++) {
        add(l, BF, 2, 1, S1(Hv), VB "norm1.weight", j);
        add(l, BF, 3, 1, S1(Hv), VB "norm1.bias", j);
        add(l, BF, 0, 2, S2(3 * Hv, Hv), VB "attn.qkv.weight", j);
        add(l, BF, 3, 1, S1(3 * Hv), VB "attn.qkv.bias", j);
        add(l, BF, 0, 2, S2(Hv, Hv), VB "attn.proj.weight", j);
        add(l, BF, 3, 1, S1(Hv), VB "attn.proj.bias", j);
        add(l, BF, 2, 1, S1(Hv), VB "norm2.weight", j);
        add(l, BF, 3, 1, S1(Hv), VB "norm2.bias", j);
        add(l, BF, 0, 2, S2(I, Hv), VB "mlp.linear_fc1.weight", j);
        add(l, BF, 3, 1, S1(I), VB "mlp.linear_fc1.bias", j);
        add(l, BF, 0, 2, S2(Hv, I), VB "mlp.linear_fc2.weight", j);
        add(l, BF, 3, 1, S1(Hv), VB "mlp.linear_fc2.bias", j);
    }
    add(l, BF, 2, 1, S1(Hv), "model.visual.merger.norm.weight");
    add(l, BF, 3, 1, S1(Hv), "model.visual.merger.norm.bias");
    add(l, BF, 0, 2, S2(m4, m4), "model.visual.merger.linear_fc1.weight");
    add(l, BF, 3, 1, S1(m4), "model.visual.merger.linear_fc1.bias");
    add(l, BF, 0, 2, S2(v->out_hidden_size, m4), "model.visual.merger.linear_fc2.weight");
    add(l, BF, 3, 1, S1(v->out_hidden_size), "model.visual.merger.linear_fc2.bias");
}

int64_t qvlm_checkpoint_layout(const qvlm_config *cfg, bool tied, qvlm_layout_tensor **out) {
    list l = {0};
    const qvlm_text_config *t = &cfg->text;
    add(&l, BF, 5, 2, S2(t->vocab_size, t->hidden_size), "model.language_model.embed_tokens.weight");
    for (long long i = 0; i < t->num_hidden_layers; i++) text_layer(&l, cfg, i);
    add(&l, BF, 1, 1, S1(t->hidden_size), "model.language_model.norm.weight");
    if (!tied) add(&l, BF, 0, 2, S2(t->vocab_size, t->hidden_size), "lm_head.weight");
    if (cfg->vision.present) vision(&l, &cfg->vision);
    if (l.oom) {
        free(l.t);
        return -1;
    }
    *out = l.t;
    return l.n;
}
