/* text.c - the Qwen3.5 text decoder (qwen35-arch §3), written against kernels/backend.h.
 *
 *   h = embed(ids)  (image-pad rows replaced by vision features)
 *   for each layer:  h += mixer(rms1p(h))   mixer = Gated DeltaNet or gated attention
 *                    h += mlp(rms1p(h))     mlp = SwiGLU or mixture of experts
 *   logits = lm_head(rms1p(h))
 */
#include "model/text.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct qvlm_text_ctx {
    const qvlm_model *m;
    qvlm_stream *s;
    int64_t max_tokens;
    int64_t width; /* columns of the scratch matrices a..d */
    /* activations, all [max_tokens][...] backend memory */
    float *x;       /* [T][hidden] residual stream */
    float *xn;      /* [T][hidden] normed input of a sub-layer */
    float *out;     /* [T][hidden] sub-layer output */
    float *acc;     /* [T][hidden] MoE routed-expert sum */
    float *sgate;   /* [T] MoE shared expert's gate logit */
    float *a, *b, *c, *d; /* [T][width] projections and intermediates */
    float *gates;   /* [T][2*Hv] GDN a | b projections */
    float *logits;  /* [n][vocab], grows on demand (verify asks for every position) */
    int64_t logits_rows;
    int64_t last_logits; /* rows of `logits` the last forward wrote */
    /* host arrays of the default MoE path (qvlm_moe_scratch) */
    int32_t *route_idx; /* [T][k] */
    float *route_w;     /* [T][k] */
    int32_t *rows;      /* [T*k] token rows of one expert */
    float *row_w;       /* [T*k] their routing weights */
};

/* ---- sizes --------------------------------------------------------------------------------- */

static int64_t n_gdn_layers(const qvlm_text_config *t) {
    int64_t n = 0;
    for (int64_t i = 0; i < t->num_hidden_layers; i++) n += !t->layer_is_full[i];
    return n;
}

static size_t conv_state_bytes(const qvlm_text_config *t) {
    return (size_t)(t->linear_conv_kernel_dim - 1) * (size_t)qvlm_gdn_conv_dim(t) * sizeof(float);
}

static size_t rec_state_bytes(const qvlm_text_config *t) {
    return (size_t)(t->linear_num_value_heads * t->linear_key_head_dim * t->linear_value_head_dim) * sizeof(float);
}

size_t qvlm_text_recurrent_bytes(const qvlm_config *cfg) {
    const qvlm_text_config *t = &cfg->text;
    return (size_t)n_gdn_layers(t) * (conv_state_bytes(t) + rec_state_bytes(t));
}

static size_t kv_layer_bytes(const qvlm_text_config *t, int64_t block_tokens) {
    return (size_t)(t->num_key_value_heads * block_tokens * t->head_dim) * sizeof(float);
}

size_t qvlm_text_kv_block_bytes(const qvlm_config *cfg, int64_t block_tokens) {
    const qvlm_text_config *t = &cfg->text;
    return (size_t)(t->num_hidden_layers - n_gdn_layers(t)) * 2 * kv_layer_bytes(t, block_tokens);
}

void qvlm_text_state_reset(qvlm_stream *s, const qvlm_config *cfg, void *recurrent) {
    qvlm_op_zero(s, recurrent, qvlm_text_recurrent_bytes(cfg));
}

/* ---- scratch ------------------------------------------------------------------------------- */

static int64_t scratch_width(const qvlm_text_config *t) {
    int64_t w = qvlm_gdn_conv_dim(t);
    w = QVLM_MAX(w, 2 * t->num_attention_heads * t->head_dim);
    w = QVLM_MAX(w, t->intermediate_size);
    w = QVLM_MAX(w, t->moe_intermediate_size);
    w = QVLM_MAX(w, t->shared_expert_intermediate_size);
    w = QVLM_MAX(w, t->num_experts);
    w = QVLM_MAX(w, t->hidden_size);
    return w;
}

void qvlm_text_ctx_destroy(qvlm_text_ctx *c) {
    if (!c) return;
    qvlm_backend *be = qvlm_stream_backend(c->s);
    float *bufs[] = {c->x, c->xn, c->out, c->acc, c->sgate, c->a, c->b, c->c, c->d, c->gates, c->logits};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) qvlm_backend_free(be, bufs[i]);
    free(c->route_idx);
    free(c->route_w);
    free(c->rows);
    free(c->row_w);
    free(c);
}

qvlm_status qvlm_text_ctx_create(const qvlm_model *m, qvlm_stream *s, int64_t max_tokens, qvlm_text_ctx **out,
                                 qvlm_error *err) {
    *out = NULL;
    const qvlm_text_config *t = &m->cfg.text;
    qvlm_text_ctx *c = calloc(1, sizeof(*c));
    if (!c) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    c->m = m;
    c->s = s;
    c->max_tokens = max_tokens;
    c->width = scratch_width(t);
    qvlm_backend *be = qvlm_stream_backend(s);
    const size_t T = (size_t)max_tokens, H = (size_t)t->hidden_size, W = (size_t)c->width;
    float **hid[] = {&c->x, &c->xn, &c->out, &c->acc};
    float **wide[] = {&c->a, &c->b, &c->c, &c->d};
    bool ok = true;
    for (int i = 0; i < 4; i++) ok &= (*hid[i] = qvlm_backend_alloc(be, T * H * sizeof(float))) != NULL;
    for (int i = 0; i < 4; i++) ok &= (*wide[i] = qvlm_backend_alloc(be, T * W * sizeof(float))) != NULL;
    ok &= (c->gates = qvlm_backend_alloc(be, T * 2 * (size_t)t->linear_num_value_heads * sizeof(float))) != NULL;
    ok &= (c->sgate = qvlm_backend_alloc(be, T * sizeof(float))) != NULL;
    const size_t k = (size_t)QVLM_MAX(t->num_experts_per_tok, 1);
    ok &= (c->route_idx = malloc(T * k * sizeof(int32_t))) != NULL;
    ok &= (c->route_w = malloc(T * k * sizeof(float))) != NULL;
    ok &= (c->rows = malloc(T * k * sizeof(int32_t))) != NULL;
    ok &= (c->row_w = malloc(T * k * sizeof(float))) != NULL;
    qvlm_status rc = ok ? qvlm_stream_reserve_matmul(s, max_tokens, QVLM_MAX((int64_t)W, (int64_t)H), err)
                        : qvlm_errorf(err, QVLM_E_NOMEM, "text scratch for %lld tokens: out of memory", (long long)max_tokens);
    if (rc) {
        qvlm_text_ctx_destroy(c);
        return rc;
    }
    *out = c;
    return QVLM_OK;
}

int64_t qvlm_text_ctx_max_tokens(const qvlm_text_ctx *c) { return c->max_tokens; }

/* ---- Gated DeltaNet layer (§3.3) -------------------------------------------------------------- */

static void gdn_layer(qvlm_text_ctx *c, const qvlm_gdn_weights *w, void *state, int64_t T) {
    const qvlm_text_config *t = &c->m->cfg.text;
    const int64_t cd = qvlm_gdn_conv_dim(t), vd = qvlm_gdn_value_dim(t), Hv = t->linear_num_value_heads;
    const int64_t H = t->hidden_size, K = t->linear_conv_kernel_dim;
    float *conv_state = state;
    float *S = (float *)((uint8_t *)state + conv_state_bytes(t));
    /* normed overwrites z, not qkv: each element of z is read only for the element of normed at
     * its index, while a backend that fuses the conv into the delta rule reads qkv until its
     * last head is done, and over qkv would have to take the unfused ops (backend.h). */
    float *qkv = c->a, *z = c->b, *conv = c->c, *core = c->d, *normed = c->b;
    const qvlm_matmul_part in_proj[4] = {{qkv, cd, &w->in_proj_qkv, NULL},
                                         {z, vd, &w->in_proj_z, NULL},
                                         {c->gates, 2 * Hv, &w->in_proj_a, NULL},
                                         {c->gates + Hv, 2 * Hv, &w->in_proj_b, NULL}};
    qvlm_op_matmul_multi(c->s, 4, in_proj, c->xn, H, T);
    qvlm_gdn_dims d = {t->linear_num_key_heads, Hv, t->linear_key_head_dim, t->linear_value_head_dim};
    /* The causal conv and SiLU, then the delta rule: transformers runs the chunked form for
     * every multi-token call and the recurrence for single-token decode; the two agree to
     * rounding (tests/unit/deltanet_test.c). The gated RMSNorm follows (normed = norm(core) *
     * silu(z)). */
    const qvlm_gdn_conv cv = {qkv, cd, conv, conv_state, &w->conv1d, K};
    qvlm_op_gated_delta_conv_norm(c->s, normed, core, z, &w->norm, t->rms_norm_eps, &cv, c->gates, c->gates + Hv,
                                  2 * Hv, &w->A_log, &w->dt_bias, S, &d, T, T > 1);
    qvlm_op_matmul(c->s, c->out, H, normed, vd, &w->out_proj, NULL, T);
}

/* ---- gated full attention (§3.4) ----------------------------------------------------------- */

static void attn_layer(qvlm_text_ctx *c, const qvlm_attn_weights *w, const qvlm_kv_view *kv, int64_t pos0,
                       const int32_t *pos, int64_t T) {
    const qvlm_text_config *t = &c->m->cfg.text;
    const int64_t D = t->head_dim, Hq = t->num_attention_heads, Hkv = t->num_key_value_heads, H = t->hidden_size;
    float *qg = c->a, *k = c->b, *v = c->c, *q = c->d, *o = c->c;
    const qvlm_matmul_part proj[3] = {{qg, 2 * Hq * D, &w->q_proj, NULL},
                                      {k, Hkv * D, &w->k_proj, NULL},
                                      {v, Hkv * D, &w->v_proj, NULL}};
    qvlm_op_matmul_multi(c->s, 3, proj, c->xn, H, T);
    /* Per head, the first D values of q_proj are the query and the last D the gate. q and k
     * are normalised per head and rotated (M-RoPE), then k and v go into the KV blocks. */
    qvlm_rope_params rp = {t->rotary_dim, t->rope_theta, {t->mrope_section[0], t->mrope_section[1], t->mrope_section[2]},
                           c->m->opts.rope_freq_bf16};
    const qvlm_attn_heads heads = {q, qg, k, v, &w->q_norm, &w->k_norm, t->rms_norm_eps, Hq, Hkv, D};
    qvlm_op_attn_heads(c->s, &heads, pos, T, &rp, kv, pos0);
    qvlm_op_attention_gated(c->s, o, q, Hq * D, kv, pos0, T, Hq, Hkv, D, 1.0f / sqrtf((float)D), qg + D, 2 * D);
    qvlm_op_matmul(c->s, c->out, H, o, Hq * D, &w->o_proj, NULL, T);
}

/* ---- MLPs (§3.5, §3.6) ------------------------------------------------------------------------ */

/* out[n][H] = down(silu(gate x) * up x) for x [n][H] at row stride H. */
static void swiglu(qvlm_text_ctx *c, const qvlm_mlp_weights *w, float *out, const float *x, int64_t n) {
    const int64_t H = c->m->cfg.text.hidden_size, I = w->gate_proj.ne[0];
    qvlm_op_matmul_swiglu(c->s, c->a, I, c->b, x, H, &w->gate_proj, &w->up_proj, n);
    qvlm_op_matmul(c->s, out, H, c->a, I, &w->down_proj, NULL, n);
}

static void moe_layer(qvlm_text_ctx *c, const qvlm_moe_weights *w, int64_t T) {
    const qvlm_text_config *t = &c->m->cfg.text;
    const int64_t H = t->hidden_size, E = t->num_experts, k = t->num_experts_per_tok;
    /* The router's logits and the shared expert's gate logit: both read xn, one pass. */
    const qvlm_matmul_part gates[2] = {{c->c, E, &w->router, NULL}, {c->sgate, 1, &w->shared_gate, NULL}};
    qvlm_op_matmul_multi(c->s, 2, gates, c->xn, H, T);
    /* out = routed + sigmoid(xn W_sg) * shared(xn). Routed experts: softmax over all experts,
     * top-k renormalised; each row's experts are weighted and summed in expert order
     * (transformers' index_add_ order). */
    const qvlm_moe_experts ex = {E, k, &w->expert[0].gate_proj, &w->expert[0].up_proj, &w->expert[0].down_proj,
                                 sizeof(qvlm_mlp_weights)};
    const qvlm_moe_shared sh = {&w->shared.gate_proj, &w->shared.up_proj, &w->shared.down_proj, c->sgate};
    const qvlm_moe_scratch scr = {c->d, c->c, c->a, c->b, c->route_idx, c->rows, c->route_w, c->row_w};
    qvlm_op_moe_block(c->s, c->out, c->acc, c->xn, T, c->c, &ex, &sh, &scr);
}

/* ---- the whole decoder ------------------------------------------------------------------------ */

static qvlm_status ensure_logits(qvlm_text_ctx *c, int64_t n, qvlm_error *err) {
    if (n <= c->logits_rows) return QVLM_OK;
    qvlm_backend *be = qvlm_stream_backend(c->s);
    qvlm_backend_free(be, c->logits);
    c->logits = qvlm_backend_alloc(be, (size_t)n * (size_t)c->m->cfg.text.vocab_size * sizeof(float));
    c->logits_rows = c->logits ? n : 0;
    return c->logits ? QVLM_OK : qvlm_errorf(err, QVLM_E_NOMEM, "logits for %lld positions: out of memory", (long long)n);
}

qvlm_status qvlm_text_forward(qvlm_text_ctx *c, qvlm_seq_state *st, const qvlm_text_batch *b, qvlm_error *err) {
    const qvlm_model *m = c->m;
    const qvlm_text_config *t = &m->cfg.text;
    const int64_t T = b->T, H = t->hidden_size, pos0 = st->n_past;
    if (T < 1 || T > c->max_tokens)
        return qvlm_errorf(err, QVLM_E_INVALID, "batch of %lld tokens (1..%lld)", (long long)T, (long long)c->max_tokens);
    if (b->n_logits < 0 || b->n_logits > T)
        return qvlm_errorf(err, QVLM_E_INVALID, "n_logits %lld for %lld tokens", (long long)b->n_logits, (long long)T);
    if ((pos0 + T + st->kv_block_tokens - 1) / st->kv_block_tokens > st->n_kv_blocks &&
        qvlm_text_kv_block_bytes(&m->cfg, 1) > 0)
        return qvlm_errorf(err, QVLM_E_INVALID, "KV blocks cover %lld tokens, %lld needed",
                           (long long)(st->n_kv_blocks * st->kv_block_tokens), (long long)(pos0 + T));
    for (int64_t i = 0; i < T; i++)
        if (b->ids[i] < 0 || b->ids[i] >= t->vocab_size)
            return qvlm_errorf(err, QVLM_E_INVALID, "token id %d at index %lld is outside the vocabulary (0..%lld)",
                               b->ids[i], (long long)i, (long long)(t->vocab_size - 1));
    c->last_logits = 0; /* overwritten from here on */
    qvlm_status rc = b->n_logits ? ensure_logits(c, b->n_logits, err) : QVLM_OK;
    if (rc) return rc;

    /* A decode step (one plain token, nothing read back in the middle) is the same op sequence
     * every token: let the backend record it once and replay it (CUDA graphs). A backend that
     * routes MoE layers on the host (the default of qvlm_op_moe_experts) reads the routing back
     * and so finishes such a step op by op. */
    const bool step = T == 1 && !b->embed_rows && !b->trace && qvlm_stream_step_begin(c->s);
    qvlm_op_get_rows(c->s, c->x, &m->embed_tokens, b->ids, T);
    if (b->embed_rows)
        for (int64_t i = 0; i < T; i++)
            if (b->embed_rows[i]) qvlm_op_copy(c->s, c->x + i * H, b->embed_rows[i], (size_t)H * sizeof(float));
    if (b->trace) b->trace(b->trace_user, 0, c->x, T, H);

    const size_t per_gdn = conv_state_bytes(t) + rec_state_bytes(t), kvl = kv_layer_bytes(t, st->kv_block_tokens);
    int64_t g = 0, a = 0;
    const int64_t L = t->num_hidden_layers;
    /* Each residual add is fused with the norm that reads its result (the next sub-layer's
     * input norm); only the last layer's final add stands alone. */
    qvlm_op_rms_norm(c->s, c->xn, H, c->x, H, &m->layers[0].input_layernorm, 1.0f, t->rms_norm_eps, T, H);
    for (int64_t i = 0; i < L; i++) {
        const qvlm_layer *l = &m->layers[i];
        if (l->is_full) {
            qvlm_kv_view kv = {st->kv_blocks, st->n_kv_blocks, st->kv_block_tokens, (size_t)(2 * a) * kvl,
                               (size_t)(2 * a + 1) * kvl};
            attn_layer(c, &l->attn, &kv, pos0, b->pos, T);
            a++;
        } else {
            gdn_layer(c, &l->gdn, (uint8_t *)st->recurrent + (size_t)g * per_gdn, T);
            g++;
        }
        qvlm_op_add_rms_norm(c->s, c->xn, c->x, c->out, &l->post_attention_layernorm, 1.0f, t->rms_norm_eps, T, H);
        if (m->cfg.model_type == QVLM_MODEL_QWEN3_5_MOE) moe_layer(c, &l->moe, T);
        else swiglu(c, &l->mlp, c->out, c->xn, T);
        if (i + 1 < L)
            qvlm_op_add_rms_norm(c->s, c->xn, c->x, c->out, &m->layers[i + 1].input_layernorm, 1.0f, t->rms_norm_eps, T, H);
        else
            qvlm_op_add(c->s, c->x, c->x, c->out, T * H);
        if (b->trace && i + 1 < L) b->trace(b->trace_user, i + 1, c->x, T, H);
    }
    if (b->trace) { /* transformers reports the last hidden state after the final norm */
        qvlm_op_rms_norm(c->s, c->xn, H, c->x, H, &m->norm, 1.0f, t->rms_norm_eps, T, H);
        b->trace(b->trace_user, t->num_hidden_layers, c->xn, T, H);
    }
    st->n_past += T;
    const int64_t n = b->n_logits, V = t->vocab_size;
    if (n) {
        qvlm_op_rms_norm(c->s, c->xn, H, c->x + (T - n) * H, H, &m->norm, 1.0f, t->rms_norm_eps, n, H);
        qvlm_op_matmul(c->s, c->logits, V, c->xn, H, &m->lm_head, NULL, n);
    }
    if (step) qvlm_stream_step_end(c->s);
    if (n && b->argmax) qvlm_op_argmax(c->s, b->argmax, c->logits, n, V);
    if (n && b->logits) qvlm_op_download(c->s, b->logits, c->logits, (size_t)(n * V) * sizeof(float));
    rc = qvlm_stream_status(c->s, err);
    if (!rc) c->last_logits = n;
    return rc;
}

qvlm_status qvlm_text_logits(qvlm_text_ctx *c, float *host, int64_t n, qvlm_error *err) {
    if (n < 1 || n > c->last_logits)
        return qvlm_errorf(err, QVLM_E_INVALID, "%lld logits rows asked, the last forward made %lld", (long long)n,
                           (long long)c->last_logits);
    qvlm_op_download(c->s, host, c->logits, (size_t)(n * c->m->cfg.text.vocab_size) * sizeof(float));
    return qvlm_stream_status(c->s, err);
}
