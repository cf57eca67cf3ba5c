/* model.c - binding a Hub checkpoint's tensors to the model's weights (qwen35-arch §2). */
#include "model/model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/threads.h"
#include "model/chat_template.h"
#include "model/tokenizer.h"

#define TEXT "model.language_model."
#define VIS "model.visual."

typedef struct binder {
    qvlm_model *m;
    char name[256];
    size_t done_bytes, total_bytes; /* for the progress callback */
} binder;

static const char *fmt_name(binder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *fmt_name(binder *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->name, sizeof(b->name), fmt, ap);
    va_end(ap);
    return b->name;
}

static void shape_str(char *buf, size_t n, int n_dims, const int64_t *ne) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < n_dims && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)ne[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* Bind tensor `name`, which must exist with exactly the given shape and a float dtype.
 * `flat` (optional) re-views it with fewer dims of the same element count (Conv3d weights). */
static qvlm_status bind_view(binder *b, const char *name, int n_dims, const int64_t *ne, int flat_dims,
                             const int64_t *flat, qvlm_tensor *out, qvlm_error *err) {
    const qvlm_st_tensor *t = qvlm_st_set_find(&b->m->st, name);
    if (!t) return qvlm_errorf(err, QVLM_E_NOT_FOUND, "%s: missing tensor '%s'", b->m->dir, name);
    const char *path = qvlm_st_set_path(&b->m->st, t);
    if (t->dtype != QVLM_DTYPE_F32 && t->dtype != QVLM_DTYPE_BF16 && t->dtype != QVLM_DTYPE_F16)
        return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s: tensor '%s' has dtype %s (expected BF16, F16 or F32)", path, name,
                           qvlm_dtype_name(t->dtype));
    bool ok = t->n_dims == n_dims;
    for (int i = 0; ok && i < n_dims; i++) ok = t->shape[i] == ne[i];
    if (!ok) {
        char got[128], want[128];
        shape_str(got, sizeof(got), t->n_dims, t->shape);
        shape_str(want, sizeof(want), n_dims, ne);
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: tensor '%s' has shape %s, expected %s from config.json", path, name,
                           got, want);
    }
    if (flat) {
        n_dims = flat_dims;
        ne = flat;
    }
    qvlm_status rc = qvlm_backend_weight(b->m->be, t->data, t->dtype, n_dims, ne, out, err);
    if (rc) return qvlm_error_prefix(err, rc, "%s: tensor '%s'", path, name);
    b->m->n_params += t->n_elements;
    b->m->weight_bytes += t->n_bytes;
    b->done_bytes += t->n_bytes;
    if (b->m->opts.progress)
        b->m->opts.progress(b->m->opts.progress_user, "load", (int64_t)QVLM_MIN(b->done_bytes, b->total_bytes),
                            (int64_t)b->total_bytes);
    return QVLM_OK;
}

static qvlm_status bind1(binder *b, const char *name, int64_t a, qvlm_tensor *out, qvlm_error *err) {
    int64_t ne[1] = {a};
    return bind_view(b, name, 1, ne, 0, NULL, out, err);
}
static qvlm_status own_host(qvlm_model *m, void *p, qvlm_error *err);

/* A bias: the matmul kernels take it as f32, so a bf16/f16 one is widened once, at load, from
 * the file's bytes (a device backend's copy is not readable from the host). */
static qvlm_status bind_bias(binder *b, const char *name, int64_t n, qvlm_tensor *out, qvlm_error *err) {
    qvlm_status rc = bind1(b, name, n, out, err);
    if (rc || out->dtype == QVLM_DTYPE_F32) return rc;
    const qvlm_st_tensor *t = qvlm_st_set_find(&b->m->st, name);
    float *host = malloc((size_t)n * sizeof(float));
    if (!host) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    qvlm_to_f32(host, t->data, t->dtype, (size_t)n);
    rc = own_host(b->m, host, err);
    if (rc) return rc;
    qvlm_backend_weight_free(b->m->be, out);
    return qvlm_backend_weight(b->m->be, host, QVLM_DTYPE_F32, 1, &n, out, err);
}

static qvlm_status bind2(binder *b, const char *name, int64_t r, int64_t c, qvlm_tensor *out, qvlm_error *err) {
    int64_t ne[2] = {r, c};
    return bind_view(b, name, 2, ne, 0, NULL, out, err);
}

/* A view of rows [r0, r0+n) of expert e of a fused [E][R][C] tensor, as a 2-D [n][C] weight. */
static qvlm_status bind_expert_rows(binder *b, const char *name, int64_t E, int64_t R, int64_t C, int64_t e,
                                    int64_t r0, int64_t n, qvlm_tensor *out, qvlm_error *err) {
    const qvlm_st_tensor *t = qvlm_st_set_find(&b->m->st, name);
    if (!t) return qvlm_errorf(err, QVLM_E_NOT_FOUND, "%s: missing tensor '%s'", b->m->dir, name);
    const char *path = qvlm_st_set_path(&b->m->st, t);
    if (t->n_dims != 3 || t->shape[0] != E || t->shape[1] != R || t->shape[2] != C) {
        char got[128], want[128];
        int64_t w[3] = {E, R, C};
        shape_str(got, sizeof(got), t->n_dims, t->shape);
        shape_str(want, sizeof(want), 3, w);
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: tensor '%s' has shape %s, expected %s from config.json", path, name,
                           got, want);
    }
    if (t->dtype != QVLM_DTYPE_F32 && t->dtype != QVLM_DTYPE_BF16 && t->dtype != QVLM_DTYPE_F16)
        return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s: tensor '%s' has dtype %s (expected BF16, F16 or F32)", path, name,
                           qvlm_dtype_name(t->dtype));
    size_t row = qvlm_dtype_row_bytes(t->dtype, C);
    const uint8_t *p = t->data + ((size_t)e * (size_t)R + (size_t)r0) * row;
    int64_t ne[2] = {n, C};
    qvlm_status rc = qvlm_backend_weight(b->m->be, p, t->dtype, 2, ne, out, err);
    if (rc) return qvlm_error_prefix(err, rc, "%s: tensor '%s'", path, name);
    if (e == 0 && r0 == 0) { /* count each fused tensor once */
        b->m->n_params += t->n_elements;
        b->m->weight_bytes += t->n_bytes;
    }
    return QVLM_OK;
}

static qvlm_status bind_gdn(binder *b, int64_t i, qvlm_gdn_weights *w, qvlm_error *err) {
    const qvlm_text_config *t = &b->m->cfg.text;
    const int64_t H = t->hidden_size, Hv = t->linear_num_value_heads, K = t->linear_conv_kernel_dim;
    const int64_t cd = qvlm_gdn_conv_dim(t), vd = qvlm_gdn_value_dim(t);
    const int64_t conv_ne[3] = {cd, 1, K}, conv_flat[2] = {cd, K};
#define P(suffix) fmt_name(b, TEXT "layers.%lld.linear_attn." suffix, (long long)i)
    qvlm_status rc = bind2(b, P("in_proj_qkv.weight"), cd, H, &w->in_proj_qkv, err);
    if (!rc) rc = bind2(b, P("in_proj_z.weight"), vd, H, &w->in_proj_z, err);
    if (!rc) rc = bind2(b, P("in_proj_b.weight"), Hv, H, &w->in_proj_b, err);
    if (!rc) rc = bind2(b, P("in_proj_a.weight"), Hv, H, &w->in_proj_a, err);
    if (!rc) rc = bind_view(b, P("conv1d.weight"), 3, conv_ne, 2, conv_flat, &w->conv1d, err);
    if (!rc) rc = bind1(b, P("dt_bias"), Hv, &w->dt_bias, err);
    if (!rc) rc = bind1(b, P("A_log"), Hv, &w->A_log, err);
    if (!rc) rc = bind1(b, P("norm.weight"), t->linear_value_head_dim, &w->norm, err);
    if (!rc) rc = bind2(b, P("out_proj.weight"), H, vd, &w->out_proj, err);
#undef P
    return rc;
}

static qvlm_status bind_attn(binder *b, int64_t i, qvlm_attn_weights *w, qvlm_error *err) {
    const qvlm_text_config *t = &b->m->cfg.text;
    const int64_t H = t->hidden_size, D = t->head_dim, Hq = t->num_attention_heads, Hkv = t->num_key_value_heads;
#define P(suffix) fmt_name(b, TEXT "layers.%lld.self_attn." suffix, (long long)i)
    qvlm_status rc = bind2(b, P("q_proj.weight"), Hq * 2 * D, H, &w->q_proj, err);
    if (!rc) rc = bind2(b, P("k_proj.weight"), Hkv * D, H, &w->k_proj, err);
    if (!rc) rc = bind2(b, P("v_proj.weight"), Hkv * D, H, &w->v_proj, err);
    if (!rc) rc = bind2(b, P("o_proj.weight"), H, Hq * D, &w->o_proj, err);
    if (!rc) rc = bind1(b, P("q_norm.weight"), D, &w->q_norm, err);
    if (!rc) rc = bind1(b, P("k_norm.weight"), D, &w->k_norm, err);
#undef P
    return rc;
}

static qvlm_status bind_mlp(binder *b, const char *prefix, int64_t I, qvlm_mlp_weights *w, qvlm_error *err) {
    const int64_t H = b->m->cfg.text.hidden_size;
    char p[200];
    snprintf(p, sizeof(p), "%s", prefix);
    qvlm_status rc = bind2(b, fmt_name(b, "%sgate_proj.weight", p), I, H, &w->gate_proj, err);
    if (!rc) rc = bind2(b, fmt_name(b, "%sup_proj.weight", p), I, H, &w->up_proj, err);
    if (!rc) rc = bind2(b, fmt_name(b, "%sdown_proj.weight", p), H, I, &w->down_proj, err);
    return rc;
}

static qvlm_status bind_moe(binder *b, int64_t i, qvlm_moe_weights *w, qvlm_error *err) {
    const qvlm_text_config *t = &b->m->cfg.text;
    const int64_t H = t->hidden_size, E = t->num_experts, Im = t->moe_intermediate_size;
    char pre[200];
    snprintf(pre, sizeof(pre), TEXT "layers.%lld.mlp.", (long long)i);
    qvlm_status rc = bind2(b, fmt_name(b, "%sgate.weight", pre), E, H, &w->router, err);
    if (!rc) rc = bind2(b, fmt_name(b, "%sshared_expert_gate.weight", pre), 1, H, &w->shared_gate, err);
    if (!rc) {
        char sp[220];
        snprintf(sp, sizeof(sp), "%sshared_expert.", pre);
        rc = bind_mlp(b, sp, t->shared_expert_intermediate_size, &w->shared, err);
    }
    if (rc) return rc;
    w->expert = calloc((size_t)E, sizeof(*w->expert));
    if (!w->expert) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    char gu[220], dn[220];
    snprintf(gu, sizeof(gu), "%sexperts.gate_up_proj", pre);
    snprintf(dn, sizeof(dn), "%sexperts.down_proj", pre);
    bool fused = qvlm_st_set_find(&b->m->st, gu) != NULL;
    for (int64_t e = 0; e < E && !rc; e++) {
        qvlm_mlp_weights *x = &w->expert[e];
        if (fused) {
            /* gate_up_proj [E][2Im][H]: rows 0..Im-1 gate, Im..2Im-1 up. */
            rc = bind_expert_rows(b, gu, E, 2 * Im, H, e, 0, Im, &x->gate_proj, err);
            if (!rc) rc = bind_expert_rows(b, gu, E, 2 * Im, H, e, Im, Im, &x->up_proj, err);
            if (!rc) rc = bind_expert_rows(b, dn, E, H, Im, e, 0, H, &x->down_proj, err);
        } else {
            char ep[240];
            snprintf(ep, sizeof(ep), "%sexperts.%lld.", pre, (long long)e);
            rc = bind_mlp(b, ep, Im, x, err);
        }
    }
    return rc;
}

static qvlm_status bind_text(binder *b, qvlm_error *err) {
    qvlm_model *m = b->m;
    const qvlm_text_config *t = &m->cfg.text;
    const int64_t H = t->hidden_size, V = t->vocab_size, L = t->num_hidden_layers;
    qvlm_status rc = bind2(b, TEXT "embed_tokens.weight", V, H, &m->embed_tokens, err);
    if (!rc) rc = bind1(b, TEXT "norm.weight", H, &m->norm, err);
    if (rc) return rc;
    /* Tying is decided by the presence of lm_head.weight, not by a config flag (pegainfer#544:
     * reusing the embedding for an untied model produces garbage). */
    m->tied = qvlm_st_set_find(&m->st, "lm_head.weight") == NULL;
    if (m->tied) m->lm_head = m->embed_tokens;
    else rc = bind2(b, "lm_head.weight", V, H, &m->lm_head, err);
    if (rc) return rc;
    m->layers = calloc((size_t)L, sizeof(*m->layers));
    if (!m->layers) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    for (int64_t i = 0; i < L && !rc; i++) {
        qvlm_layer *l = &m->layers[i];
        l->is_full = t->layer_is_full[i];
        rc = bind1(b, fmt_name(b, TEXT "layers.%lld.input_layernorm.weight", (long long)i), H, &l->input_layernorm, err);
        if (!rc)
            rc = bind1(b, fmt_name(b, TEXT "layers.%lld.post_attention_layernorm.weight", (long long)i), H,
                       &l->post_attention_layernorm, err);
        if (!rc) rc = l->is_full ? bind_attn(b, i, &l->attn, err) : bind_gdn(b, i, &l->gdn, err);
        if (rc) break;
        if (m->cfg.model_type == QVLM_MODEL_QWEN3_5_MOE) {
            rc = bind_moe(b, i, &l->moe, err);
        } else {
            char pre[200];
            snprintf(pre, sizeof(pre), TEXT "layers.%lld.mlp.", (long long)i);
            rc = bind_mlp(b, pre, t->intermediate_size, &l->mlp, err);
        }
    }
    return rc;
}

static qvlm_status bind_vision(binder *b, qvlm_error *err) {
    qvlm_model *m = b->m;
    const qvlm_vision_config *v = &m->cfg.vision;
    qvlm_vision_weights *w = &m->vision;
    const int64_t Hv = v->hidden_size, I = v->intermediate_size, P = v->patch_size, Tp = v->temporal_patch_size;
    const int64_t merged = Hv * v->spatial_merge_size * v->spatial_merge_size;
    const int64_t pe[5] = {Hv, v->in_channels, Tp, P, P}, pe_flat[2] = {Hv, v->in_channels * Tp * P * P};
    qvlm_status rc = bind_view(b, VIS "patch_embed.proj.weight", 5, pe, 2, pe_flat, &w->patch_w, err);
    if (!rc) rc = bind_bias(b, VIS "patch_embed.proj.bias", Hv, &w->patch_b, err);
    if (!rc) rc = bind2(b, VIS "pos_embed.weight", v->num_position_embeddings, Hv, &w->pos_embed, err);
    if (rc) return rc;
    w->blocks = calloc((size_t)v->depth, sizeof(*w->blocks));
    if (!w->blocks) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    for (int64_t j = 0; j < v->depth && !rc; j++) {
        qvlm_vision_block *k = &w->blocks[j];
#define P(s) fmt_name(b, VIS "blocks.%lld." s, (long long)j)
        rc = bind1(b, P("norm1.weight"), Hv, &k->norm1_w, err);
        if (!rc) rc = bind1(b, P("norm1.bias"), Hv, &k->norm1_b, err);
        if (!rc) rc = bind2(b, P("attn.qkv.weight"), 3 * Hv, Hv, &k->qkv_w, err);
        if (!rc) rc = bind_bias(b, P("attn.qkv.bias"), 3 * Hv, &k->qkv_b, err);
        if (!rc) rc = bind2(b, P("attn.proj.weight"), Hv, Hv, &k->proj_w, err);
        if (!rc) rc = bind_bias(b, P("attn.proj.bias"), Hv, &k->proj_b, err);
        if (!rc) rc = bind1(b, P("norm2.weight"), Hv, &k->norm2_w, err);
        if (!rc) rc = bind1(b, P("norm2.bias"), Hv, &k->norm2_b, err);
        if (!rc) rc = bind2(b, P("mlp.linear_fc1.weight"), I, Hv, &k->fc1_w, err);
        if (!rc) rc = bind_bias(b, P("mlp.linear_fc1.bias"), I, &k->fc1_b, err);
        if (!rc) rc = bind2(b, P("mlp.linear_fc2.weight"), Hv, I, &k->fc2_w, err);
        if (!rc) rc = bind_bias(b, P("mlp.linear_fc2.bias"), Hv, &k->fc2_b, err);
#undef P
    }
    if (!rc) rc = bind1(b, VIS "merger.norm.weight", Hv, &w->merger_norm_w, err);
    if (!rc) rc = bind1(b, VIS "merger.norm.bias", Hv, &w->merger_norm_b, err);
    if (!rc) rc = bind2(b, VIS "merger.linear_fc1.weight", merged, merged, &w->merger_fc1_w, err);
    if (!rc) rc = bind_bias(b, VIS "merger.linear_fc1.bias", merged, &w->merger_fc1_b, err);
    if (!rc) rc = bind2(b, VIS "merger.linear_fc2.weight", v->out_hidden_size, merged, &w->merger_fc2_w, err);
    if (!rc) rc = bind_bias(b, VIS "merger.linear_fc2.bias", v->out_hidden_size, &w->merger_fc2_b, err);
    return rc;
}

/* Keep a host buffer alive for the model's lifetime (widened or quantised weights). */
static qvlm_status own_host(qvlm_model *m, void *p, qvlm_error *err) {
    if (m->n_owned == m->cap_owned) {
        size_t cap = m->cap_owned ? m->cap_owned * 2 : 16;
        void **n = realloc(m->owned, cap * sizeof(*n));
        if (!n) {
            free(p);
            return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
        }
        m->owned = n;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return QVLM_OK;
}

/* ---- load-time quantisation ------------------------------------------------------------------- */

/* Host memory for a converted weight: 2 MiB aligned and backed by huge pages when large (the
 * decode kernels stream it; 4 KiB pages stop the hardware prefetchers at every page). */
static void *alloc_weight(size_t bytes) {
    const size_t huge = (size_t)2 << 20;
    void *p = NULL;
    if (bytes >= huge) {
        size_t rounded = (bytes + huge - 1) & ~(huge - 1);
        if (posix_memalign(&p, huge, rounded) != 0) return NULL;
        qvlm_advise_hugepages(p, rounded);
        return p;
    }
    return posix_memalign(&p, 64, bytes ? bytes : 64) == 0 ? p : NULL;
}

/* Replace weight t (2-D, rows a multiple of 32 long, a float dtype) by a copy owned by the model:
 * Q8_0 (quantised), or the same bytes in huge-page memory (copy); other weights are left as they
 * are. */
static qvlm_status convert_weight(qvlm_model *m, qvlm_tensor *t, const char *what, bool copy, qvlm_error *err) {
    if (!t->data || t->n_dims != 2 || t->ne[1] % 32 != 0 ||
        (t->dtype != QVLM_DTYPE_BF16 && t->dtype != QVLM_DTYPE_F16 && t->dtype != QVLM_DTYPE_F32))
        return QVLM_OK;
    const int64_t rows = t->ne[0], k = t->ne[1];
    /* Q8: the backend's layout of the same numbers */
    const qvlm_dtype qt = copy ? t->dtype : qvlm_backend_q8_dtype(m->be);
    const size_t bytes = copy ? (size_t)rows * qvlm_dtype_row_bytes(t->dtype, k) : qvlm_quantized_bytes(qt, rows, k);
    void *p = alloc_weight(bytes);
    if (!p) return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory for a %zu-byte copy", what, bytes);
    qvlm_status rc = QVLM_OK;
    if (copy) {
        qvlm_pool_memcpy(qvlm_backend_host_pool(m->be), p, t->data, bytes);
        qvlm_mmap_forget(t->data, bytes); /* the mapped pages are not read again */
    } else {
        rc = qvlm_quantize_rows(p, qt, t->data, t->dtype, rows, k, qvlm_backend_host_pool(m->be), err);
    }
    if (rc) {
        free(p);
        return qvlm_error_prefix(err, rc, "%s: %s", m->dir, what);
    }
    rc = own_host(m, p, err);
    if (rc) return rc;
    int64_t ne[2] = {rows, k};
    qvlm_backend_weight_free(m->be, t);
    m->copy_bytes += bytes;
    return qvlm_backend_weight(m->be, p, qt, 2, ne, t, err);
}

static qvlm_status convert_mlp(qvlm_model *m, qvlm_mlp_weights *w, const char *what, bool copy, qvlm_error *err) {
    char name[96];
    snprintf(name, sizeof(name), "%s gate_proj", what);
    qvlm_status rc = convert_weight(m, &w->gate_proj, name, copy, err);
    snprintf(name, sizeof(name), "%s up_proj", what);
    if (!rc) rc = convert_weight(m, &w->up_proj, name, copy, err);
    snprintf(name, sizeof(name), "%s down_proj", what);
    if (!rc) rc = convert_weight(m, &w->down_proj, name, copy, err);
    return rc;
}

/* Every matrix of the text tower quantised (copy false) or copied into huge-page memory. */
static qvlm_status convert_text(qvlm_model *m, bool copy, qvlm_error *err) {
    if (qvlm_backend_kind_of(m->be) != QVLM_BACKEND_CPU)
        return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "load-time q8_0 quantisation is implemented for the CPU backend only");
    const qvlm_text_config *t = &m->cfg.text;
    qvlm_status rc = convert_weight(m, &m->embed_tokens, "embed_tokens", copy, err);
    if (!rc && m->tied) m->lm_head = m->embed_tokens; /* one converted matrix serves both */
    else if (!rc) rc = convert_weight(m, &m->lm_head, "lm_head", copy, err);
    for (int64_t i = 0; i < t->num_hidden_layers && !rc; i++) {
        qvlm_layer *l = &m->layers[i];
        char what[64];
#define Q(field, label)                                                                                 \
    do {                                                                                                \
        snprintf(what, sizeof(what), "layer %lld %s", (long long)i, label);                             \
        if (!rc) rc = convert_weight(m, &(field), what, copy, err);                                     \
    } while (0)
        if (l->is_full) {
            Q(l->attn.q_proj, "q_proj");
            Q(l->attn.k_proj, "k_proj");
            Q(l->attn.v_proj, "v_proj");
            Q(l->attn.o_proj, "o_proj");
        } else {
            Q(l->gdn.in_proj_qkv, "in_proj_qkv");
            Q(l->gdn.in_proj_z, "in_proj_z");
            Q(l->gdn.in_proj_a, "in_proj_a");
            Q(l->gdn.in_proj_b, "in_proj_b");
            Q(l->gdn.out_proj, "out_proj");
        }
        if (m->cfg.model_type == QVLM_MODEL_QWEN3_5_MOE) {
            Q(l->moe.router, "router");
            Q(l->moe.shared_gate, "shared_expert_gate");
            snprintf(what, sizeof(what), "layer %lld shared_expert", (long long)i);
            if (!rc) rc = convert_mlp(m, &l->moe.shared, what, copy, err);
            for (int64_t e = 0; e < t->num_experts && !rc; e++) {
                snprintf(what, sizeof(what), "layer %lld expert %lld", (long long)i, (long long)e);
                rc = convert_mlp(m, &l->moe.expert[e], what, copy, err);
            }
        } else {
            snprintf(what, sizeof(what), "layer %lld mlp", (long long)i);
            if (!rc) rc = convert_mlp(m, &l->mlp, what, copy, err);
        }
#undef Q
    }
    return rc;
}

/* preprocessor_config.json must agree with vision_config on the patch geometry: the patches
 * the processor cuts are what the patch embedding was trained on. */
static qvlm_status load_preprocess(qvlm_model *m, qvlm_error *err) {
    const qvlm_vision_config *v = &m->cfg.vision;
    qvlm_preprocess_config *p = &m->preprocess;
    char *path = qvlm_path_join(m->dir, "preprocessor_config.json");
    bool have = path && qvlm_path_exists(path);
    qvlm_status rc = have ? qvlm_preprocess_config_load(m->dir, p, err) : QVLM_OK;
    if (!have) {
        /* No file: the vision config's geometry with the Qwen3.5 release's values. */
        qvlm_preprocess_config_default(p);
        p->patch_size = (int)v->patch_size, p->temporal_patch_size = (int)v->temporal_patch_size;
        p->merge_size = (int)v->spatial_merge_size;
        p->min_pixels = 65536, p->max_pixels = 16777216;
        for (int c = 0; c < 3; c++) p->image_mean[c] = 0.5f, p->image_std[c] = 0.5f;
    }
    if (!rc && (p->patch_size != v->patch_size || p->temporal_patch_size != v->temporal_patch_size ||
                p->merge_size != v->spatial_merge_size))
        rc = qvlm_errorf(err, QVLM_E_CORRUPT,
                         "%s: patch_size %d / temporal_patch_size %d / merge_size %d disagree with config.json's vision_config (%lld / %lld / %lld)",
                         path, p->patch_size, p->temporal_patch_size, p->merge_size, (long long)v->patch_size,
                         (long long)v->temporal_patch_size, (long long)v->spatial_merge_size);
    free(path);
    return rc;
}

/* tokenizer.json and the chat template, when the directory has them (a file that is present
 * but broken is an error: better refused at load than at the first request). */
static qvlm_status load_text_files(qvlm_model *m, qvlm_error *err) {
    char *tp = qvlm_path_join(m->dir, "tokenizer.json");
    qvlm_status rc = tp ? QVLM_OK : qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    if (!rc && qvlm_path_exists(tp)) rc = qvlm_tokenizer_load(tp, &m->tokenizer, err);
    free(tp);
    if (!rc) {
        rc = qvlm_chat_template_load_dir(m->dir, &m->chat_template, err);
        if (rc == QVLM_E_NOT_FOUND) rc = QVLM_OK, m->chat_template = NULL;
    }
    return rc;
}

/* The CPU's decode streams every matrix of the text tower once per token. From the mapped
 * checkpoint that stream crosses a 4 KiB page every 4 KiB, where the hardware prefetchers stop
 * and the TLB misses; from 2 MiB pages it runs ~10% faster (docs/perf.md). So the matrices are
 * copied into huge-page memory at load unless asked not to or there is no room for the copy
 * next to what else the process needs (the checkpoint's own pages are reclaimable cache). */
static bool want_copy(const qvlm_model *m) {
    if (m->opts.mmap_weights || qvlm_backend_kind_of(m->be) != QVLM_BACKEND_CPU) return false;
    const int64_t avail = qvlm_mem_available();
    return avail < 0 || (int64_t)m->weight_bytes + ((int64_t)1 << 30) <= avail;
}

qvlm_status qvlm_model_load_dir(const char *dir, qvlm_backend *be, const qvlm_model_opts *opts, qvlm_model **out,
                                qvlm_error *err) {
    *out = NULL;
    qvlm_model *m = calloc(1, sizeof(*m));
    if (!m) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    m->be = be;
    if (opts) m->opts = *opts;
    m->dir = strdup(dir);
    qvlm_status rc = m->dir ? QVLM_OK : qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    if (!rc) rc = qvlm_config_load(dir, &m->cfg, err);
    if (!rc) rc = qvlm_st_set_open(dir, &m->st, err);
    binder b = {.m = m};
    for (size_t i = 0; !rc && i < m->st.n_index; i++) b.total_bytes += m->st.index[i]->n_bytes;
    if (!rc) rc = bind_text(&b, err);
    if (!rc && m->cfg.vision.present) rc = bind_vision(&b, err);
    if (!rc && m->cfg.vision.present) rc = load_preprocess(m, err);
    if (!rc) rc = load_text_files(m, err);
    if (!rc && m->opts.quant == QVLM_QUANT_Q8_0) rc = convert_text(m, false, err);
    else if (!rc && m->opts.quant != QVLM_QUANT_NONE)
        rc = qvlm_errorf(err, QVLM_E_INVALID, "unknown weight quantisation %d", (int)m->opts.quant);
    else if (!rc && want_copy(m)) rc = convert_text(m, true, err);
    if (rc) {
        qvlm_model_free(m);
        return rc;
    }
    /* Not every stored tensor is bound (e.g. multi-token-prediction heads): end at 100%. */
    if (m->opts.progress) m->opts.progress(m->opts.progress_user, "load", (int64_t)b.total_bytes, (int64_t)b.total_bytes);
    *out = m;
    return QVLM_OK;
}

void qvlm_model_free(qvlm_model *m) {
    if (!m) return;
    if (m->layers) {
        for (int64_t i = 0; i < m->cfg.text.num_hidden_layers; i++) free(m->layers[i].moe.expert);
        free(m->layers);
    }
    free(m->vision.blocks);
    qvlm_tokenizer_destroy(m->tokenizer);
    qvlm_chat_template_destroy(m->chat_template);
    for (size_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    qvlm_st_set_close(&m->st);
    qvlm_config_free(&m->cfg);
    free(m->dir);
    free(m);
}

size_t qvlm_tensor_bytes(const qvlm_tensor *t) {
    if (!t->data) return 0;
    int64_t n = 1;
    for (int i = 0; i + 1 < t->n_dims; i++) n *= t->ne[i];
    return (size_t)n * qvlm_dtype_row_bytes(t->dtype, t->n_dims ? t->ne[t->n_dims - 1] : 1);
}
