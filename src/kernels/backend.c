/* backend.c - the qvlm_op_* entry points: forward each op to the stream's backend. */
#include "kernels/backend_impl.h"

#include <stdlib.h>

qvlm_status qvlm_backend_create(const qvlm_backend_params *p, qvlm_backend **out, qvlm_error *err) {
    *out = NULL;
    switch (p->kind) {
    case QVLM_BACKEND_CPU: return qvlm_backend_cpu_create(p, out, err);
    case QVLM_BACKEND_CUDA: return qvlm_backend_cuda_create(p, out, err);
    }
    return qvlm_errorf(err, QVLM_E_INVALID, "backend: unknown kind %d", (int)p->kind);
}

void qvlm_backend_destroy(qvlm_backend *be) {
    if (be) be->ops->destroy(be);
}
struct qvlm_pool *qvlm_backend_host_pool(qvlm_backend *be) { return be->ops->host_pool ? be->ops->host_pool(be) : NULL; }
const char *qvlm_backend_name(const qvlm_backend *be) { return be->ops->name(be); }
qvlm_backend_kind qvlm_backend_kind_of(const qvlm_backend *be) { return be->kind; }
qvlm_compute_precision qvlm_backend_precision(const qvlm_backend *be) { return be->precision; }
void *qvlm_backend_alloc(qvlm_backend *be, size_t n_bytes) { return be->ops->alloc(be, n_bytes); }
void qvlm_backend_free(qvlm_backend *be, void *p) {
    if (p) be->ops->free(be, p);
}
void qvlm_backend_mem_stats(qvlm_backend *be, size_t *current_bytes, size_t *peak_bytes) {
    be->ops->mem_stats(be, current_bytes, peak_bytes);
}
void qvlm_backend_mem_reset_peak(qvlm_backend *be) { be->ops->mem_reset_peak(be); }
qvlm_status qvlm_backend_weight(qvlm_backend *be, const void *host, qvlm_dtype dtype, int n_dims,
                                const int64_t *ne, qvlm_tensor *out, qvlm_error *err) {
    return be->ops->weight(be, host, dtype, n_dims, ne, out, err);
}
void qvlm_backend_weight_free(qvlm_backend *be, qvlm_tensor *t) {
    if (t && t->data) be->ops->weight_free(be, t);
}
qvlm_status qvlm_stream_create(qvlm_backend *be, qvlm_stream **out, qvlm_error *err) {
    return be->ops->stream_create(be, out, err);
}
void qvlm_stream_destroy(qvlm_stream *s) {
    if (s) s->be->ops->stream_destroy(s);
}
qvlm_backend *qvlm_stream_backend(qvlm_stream *s) { return s->be; }
qvlm_status qvlm_stream_reserve_matmul(qvlm_stream *s, int64_t n_rows, int64_t k, qvlm_error *err) {
    return s->be->ops->reserve_matmul(s, n_rows, k, err);
}
void qvlm_stream_sync(qvlm_stream *s) {
    if (s->be->ops->sync) s->be->ops->sync(s);
}
qvlm_status qvlm_stream_status(qvlm_stream *s, qvlm_error *err) {
    return s->be->ops->status ? s->be->ops->status(s, err) : QVLM_OK;
}
bool qvlm_stream_step_begin(qvlm_stream *s) { return s->be->ops->step_begin ? s->be->ops->step_begin(s) : false; }
void qvlm_stream_step_end(qvlm_stream *s) {
    if (s->be->ops->step_end) s->be->ops->step_end(s);
}

void qvlm_op_upload(qvlm_stream *s, void *dst, const void *src, size_t n) {
    s->be->ops->upload(s, dst, src, n);
}

void qvlm_op_download(qvlm_stream *s, void *dst, const void *src, size_t n) {
    s->be->ops->download(s, dst, src, n);
}

void qvlm_op_copy(qvlm_stream *s, void *dst, const void *src, size_t n) {
    s->be->ops->copy(s, dst, src, n);
}

void qvlm_op_zero(qvlm_stream *s, void *dst, size_t n) {
    s->be->ops->zero(s, dst, n);
}

void qvlm_op_get_rows(qvlm_stream *s, float *y, const qvlm_tensor *table, const int32_t *ids, int64_t n) {
    s->be->ops->get_rows(s, y, table, ids, n);
}

void qvlm_op_matmul(qvlm_stream *s, float *y, int64_t ldy, const float *x, int64_t ldx, const qvlm_tensor *w, const qvlm_tensor *bias, int64_t n) {
    s->be->ops->matmul(s, y, ldy, x, ldx, w, bias, n);
}

void qvlm_op_rms_norm(qvlm_stream *s, float *y, int64_t ldy, const float *x, int64_t ldx, const qvlm_tensor *w, float w_offset, float eps, int64_t n_rows, int64_t dim) {
    s->be->ops->rms_norm(s, y, ldy, x, ldx, w, w_offset, eps, n_rows, dim);
}

void qvlm_op_matmul_multi(qvlm_stream *s, int n_parts, const qvlm_matmul_part *parts, const float *x, int64_t ldx,
                          int64_t n) {
    if (s->be->ops->matmul_multi) {
        s->be->ops->matmul_multi(s, n_parts, parts, x, ldx, n);
        return;
    }
    for (int i = 0; i < n_parts; i++) qvlm_op_matmul(s, parts[i].y, parts[i].ldy, x, ldx, parts[i].w, parts[i].bias, n);
}

void qvlm_op_add_rms_norm(qvlm_stream *s, float *y, float *x, const float *delta, const qvlm_tensor *w, float w_offset,
                          float eps, int64_t n_rows, int64_t dim) {
    if (s->be->ops->add_rms_norm) {
        s->be->ops->add_rms_norm(s, y, x, delta, w, w_offset, eps, n_rows, dim);
        return;
    }
    qvlm_op_add(s, x, x, delta, n_rows * dim);
    qvlm_op_rms_norm(s, y, dim, x, dim, w, w_offset, eps, n_rows, dim);
}

void qvlm_op_add_layer_norm(qvlm_stream *s, float *y, float *x, const float *delta, const qvlm_tensor *w,
                            const qvlm_tensor *b, float eps, int64_t n_rows, int64_t dim) {
    if (s->be->ops->add_layer_norm) {
        s->be->ops->add_layer_norm(s, y, x, delta, w, b, eps, n_rows, dim);
        return;
    }
    qvlm_op_add(s, x, x, delta, n_rows * dim);
    qvlm_op_layer_norm(s, y, x, w, b, eps, n_rows, dim);
}

void qvlm_op_layer_norm(qvlm_stream *s, float *y, const float *x, const qvlm_tensor *w, const qvlm_tensor *b, float eps, int64_t n_rows, int64_t dim) {
    s->be->ops->layer_norm(s, y, x, w, b, eps, n_rows, dim);
}

void qvlm_op_add(qvlm_stream *s, float *y, const float *a, const float *b, int64_t n) {
    s->be->ops->add(s, y, a, b, n);
}

void qvlm_op_silu_mul(qvlm_stream *s, float *y, int64_t ldy, const float *gate, int64_t ldg, const float *up, int64_t ldu, int64_t n_rows, int64_t dim) {
    s->be->ops->silu_mul(s, y, ldy, gate, ldg, up, ldu, n_rows, dim);
}

void qvlm_op_gelu(qvlm_stream *s, float *x, int64_t n, bool tanh_approx) {
    s->be->ops->gelu(s, x, n, tanh_approx);
}

void qvlm_op_sigmoid_mul(qvlm_stream *s, float *y, int64_t ldy, const float *x, int64_t ldx, const float *gate, int64_t ldg, int64_t gate_cols, int64_t n_rows, int64_t dim) {
    s->be->ops->sigmoid_mul(s, y, ldy, x, ldx, gate, ldg, gate_cols, n_rows, dim);
}

void qvlm_op_conv1d_silu(qvlm_stream *s, float *y, const float *x, int64_t ldx, float *state, const qvlm_tensor *w, int64_t T, int64_t C, int64_t K) {
    s->be->ops->conv1d_silu(s, y, x, ldx, state, w, T, C, K);
}

void qvlm_op_gated_delta(qvlm_stream *s, float *out, const float *qkv, int64_t ldqkv, const float *a, const float *b, int64_t ldab, const qvlm_tensor *A_log, const qvlm_tensor *dt_bias, float *S, const qvlm_gdn_dims *d, int64_t T, bool chunked) {
    s->be->ops->gated_delta(s, out, qkv, ldqkv, a, b, ldab, A_log, dt_bias, S, d, T, chunked);
}

void qvlm_op_gated_rms_norm(qvlm_stream *s, float *y, const float *x, const float *z, const qvlm_tensor *w, float eps, int64_t n_rows, int64_t dim) {
    s->be->ops->gated_rms_norm(s, y, x, z, w, eps, n_rows, dim);
}

void qvlm_op_rope_multimodal(qvlm_stream *s, float *x, int64_t ldx, int64_t n_heads, int64_t head_stride, const int32_t *pos, int64_t T, const qvlm_rope_params *p) {
    s->be->ops->rope_multimodal(s, x, ldx, n_heads, head_stride, pos, T, p);
}

void qvlm_op_rope_vision(qvlm_stream *s, float *x, int64_t ldx, int64_t n_heads, int64_t head_stride, int64_t head_dim, const int32_t *rc, int64_t N, double theta, bool freq_bf16) {
    s->be->ops->rope_vision(s, x, ldx, n_heads, head_stride, head_dim, rc, N, theta, freq_bf16);
}

void qvlm_op_kv_store(qvlm_stream *s, const qvlm_kv_view *kv, const float *k, int64_t ldk, const float *v, int64_t ldv, int64_t pos0, int64_t T, int64_t n_kv_heads, int64_t head_dim) {
    s->be->ops->kv_store(s, kv, k, ldk, v, ldv, pos0, T, n_kv_heads, head_dim);
}

void qvlm_op_attention(qvlm_stream *s, float *out, const float *q, int64_t ldq, const qvlm_kv_view *kv, int64_t pos0, int64_t T, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale) {
    s->be->ops->attention(s, out, q, ldq, kv, pos0, T, n_heads, n_kv_heads, head_dim, scale);
}

void qvlm_op_attention_segments(qvlm_stream *s, float *out, const float *qkv, const int64_t *seg, int64_t n_seg, int64_t n_heads, int64_t head_dim, float scale) {
    s->be->ops->attention_segments(s, out, qkv, seg, n_seg, n_heads, head_dim, scale);
}

void qvlm_op_moe_route(qvlm_stream *s, int32_t *idx, float *weight, const float *logits, int64_t n_rows, int64_t n_experts, int64_t k) {
    s->be->ops->moe_route(s, idx, weight, logits, n_rows, n_experts, k);
}

void qvlm_op_gather_rows(qvlm_stream *s, float *y, const float *x, const int32_t *rows, int64_t n, int64_t dim) {
    s->be->ops->gather_rows(s, y, x, rows, n, dim);
}

void qvlm_op_scatter_add_rows(qvlm_stream *s, float *y, const float *x, const int32_t *rows, const float *scale, int64_t n, int64_t dim) {
    s->be->ops->scatter_add_rows(s, y, x, rows, scale, n, dim);
}

void qvlm_op_add_weighted_rows(qvlm_stream *s, float *y, const qvlm_tensor *table, const int32_t *idx, const float *w,
                               int64_t n, int64_t taps) {
    s->be->ops->add_weighted_rows(s, y, table, idx, w, n, taps);
}

/* ---- fused ops: the defaults are the unfused sequences ------------------------------------------ */

void qvlm_op_matmul_swiglu(qvlm_stream *s, float *y, int64_t ldy, float *tmp, const float *x, int64_t ldx,
                           const qvlm_tensor *wg, const qvlm_tensor *wu, int64_t n) {
    if (s->be->ops->matmul_swiglu) {
        s->be->ops->matmul_swiglu(s, y, ldy, tmp, x, ldx, wg, wu, n);
        return;
    }
    const int64_t I = wg->ne[wg->n_dims == 3 ? 1 : 0];
    const qvlm_matmul_part parts[2] = {{y, ldy, wg, NULL}, {tmp, ldy, wu, NULL}};
    qvlm_op_matmul_multi(s, 2, parts, x, ldx, n);
    qvlm_op_silu_mul(s, y, ldy, y, ldy, tmp, ldy, n, I);
}

void qvlm_op_attn_heads(qvlm_stream *s, const qvlm_attn_heads *h, const int32_t *pos, int64_t T,
                        const qvlm_rope_params *rp, const qvlm_kv_view *kv, int64_t pos0) {
    if (s->be->ops->attn_heads) s->be->ops->attn_heads(s, h, pos, T, rp, kv, pos0);
    else qvlm_attn_heads_default(s, h, pos, T, rp, kv, pos0);
}

void qvlm_attn_heads_default(qvlm_stream *s, const qvlm_attn_heads *h, const int32_t *pos, int64_t T,
                             const qvlm_rope_params *rp, const qvlm_kv_view *kv, int64_t pos0) {
    const int64_t D = h->D, Hq = h->Hq, Hkv = h->Hkv;
    qvlm_op_rms_norm(s, h->q, D, h->qg, 2 * D, h->q_norm, 1.0f, h->eps, T * Hq, D);
    qvlm_op_rms_norm(s, h->k, D, h->k, D, h->k_norm, 1.0f, h->eps, T * Hkv, D);
    qvlm_op_rope_multimodal(s, h->q, Hq * D, Hq, D, pos, T, rp);
    qvlm_op_rope_multimodal(s, h->k, Hkv * D, Hkv, D, pos, T, rp);
    qvlm_op_kv_store(s, kv, h->k, Hkv * D, h->v, Hkv * D, pos0, T, Hkv, D);
}

void qvlm_op_attention_gated(qvlm_stream *s, float *out, const float *q, int64_t ldq, const qvlm_kv_view *kv,
                             int64_t pos0, int64_t T, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                             float scale, const float *gate, int64_t ldg) {
    if (s->be->ops->attention_gated) {
        s->be->ops->attention_gated(s, out, q, ldq, kv, pos0, T, n_heads, n_kv_heads, head_dim, scale, gate, ldg);
        return;
    }
    qvlm_op_attention(s, out, q, ldq, kv, pos0, T, n_heads, n_kv_heads, head_dim, scale);
    qvlm_op_sigmoid_mul(s, out, head_dim, out, head_dim, gate, ldg, head_dim, T * n_heads, head_dim);
}

void qvlm_op_add_gated(qvlm_stream *s, float *y, const float *a, const float *x, const float *gate, int64_t n_rows,
                       int64_t dim) {
    if (s->be->ops->add_gated) {
        s->be->ops->add_gated(s, y, a, x, gate, n_rows, dim);
        return;
    }
    qvlm_op_sigmoid_mul(s, y, dim, x, dim, gate, 1, 1, n_rows, dim);
    qvlm_op_add(s, y, a, y, n_rows * dim);
}

void qvlm_op_gated_delta_norm(qvlm_stream *s, float *y, float *core, const float *z, const qvlm_tensor *norm_w,
                              float eps, const float *qkv, int64_t ldqkv, const float *a, const float *b,
                              int64_t ldab, const qvlm_tensor *A_log, const qvlm_tensor *dt_bias, float *S,
                              const qvlm_gdn_dims *d, int64_t T, bool chunked) {
    if (s->be->ops->gated_delta_norm) {
        s->be->ops->gated_delta_norm(s, y, core, z, norm_w, eps, qkv, ldqkv, a, b, ldab, A_log, dt_bias, S, d, T,
                                     chunked);
        return;
    }
    qvlm_op_gated_delta(s, core, qkv, ldqkv, a, b, ldab, A_log, dt_bias, S, d, T, chunked);
    qvlm_op_gated_rms_norm(s, y, core, z, norm_w, eps, T * d->n_v_heads, d->v_dim);
}

void qvlm_gated_delta_conv_norm_default(qvlm_stream *s, float *y, float *core, const float *z,
                                        const qvlm_tensor *norm_w, float eps, const qvlm_gdn_conv *conv,
                                        const float *a, const float *b, int64_t ldab, const qvlm_tensor *A_log,
                                        const qvlm_tensor *dt_bias, float *S, const qvlm_gdn_dims *d, int64_t T,
                                        bool chunked) {
    const int64_t C = qvlm_gdn_qkv_dim(d);
    qvlm_op_conv1d_silu(s, conv->y, conv->x, conv->ldx, conv->state, conv->w, T, C, conv->K);
    qvlm_op_gated_delta_norm(s, y, core, z, norm_w, eps, conv->y, C, a, b, ldab, A_log, dt_bias, S, d, T, chunked);
}

void qvlm_op_gated_delta_conv_norm(qvlm_stream *s, float *y, float *core, const float *z, const qvlm_tensor *norm_w,
                                   float eps, const qvlm_gdn_conv *conv, const float *a, const float *b, int64_t ldab,
                                   const qvlm_tensor *A_log, const qvlm_tensor *dt_bias, float *S,
                                   const qvlm_gdn_dims *d, int64_t T, bool chunked) {
    if (s->be->ops->gated_delta_conv_norm)
        s->be->ops->gated_delta_conv_norm(s, y, core, z, norm_w, eps, conv, a, b, ldab, A_log, dt_bias, S, d, T,
                                          chunked);
    else
        qvlm_gated_delta_conv_norm_default(s, y, core, z, norm_w, eps, conv, a, b, ldab, A_log, dt_bias, S, d, T,
                                           chunked);
}

static const qvlm_tensor *expert_tensor(const qvlm_tensor *t0, size_t stride, int64_t e) {
    return (const qvlm_tensor *)((const char *)t0 + (size_t)e * stride);
}

/* Route on the host, then each expert's rows in ascending expert order: gathered, run, weighted
 * and added back (transformers' index_add_ order). */
void qvlm_moe_experts_default(qvlm_stream *s, float *acc, const float *x, int64_t T, const float *logits,
                              const qvlm_moe_experts *ex, const qvlm_moe_scratch *scr) {
    const int64_t E = ex->n_experts, k = ex->k, H = qvlm_tensor_cols(ex->gate);
    qvlm_op_moe_route(s, scr->idx, scr->w, logits, T, E, k);
    qvlm_op_zero(s, acc, (size_t)(T * H) * sizeof(float));
    for (int64_t e = 0; e < E; e++) {
        int64_t n = 0;
        for (int64_t r = 0; r < T; r++)
            for (int64_t j = 0; j < k; j++)
                if (scr->idx[r * k + j] == e) {
                    scr->rows[n] = (int32_t)r;
                    scr->row_w[n++] = scr->w[r * k + j];
                }
        if (n == 0) continue;
        const qvlm_tensor *down = expert_tensor(ex->down, ex->stride, e);
        const int64_t I = qvlm_tensor_cols(down);
        qvlm_op_gather_rows(s, scr->xg, x, scr->rows, n, H);
        qvlm_op_matmul_swiglu(s, scr->h, I, scr->tmp, scr->xg, H, expert_tensor(ex->gate, ex->stride, e),
                              expert_tensor(ex->up, ex->stride, e), n);
        qvlm_op_matmul(s, scr->y, H, scr->h, I, down, NULL, n);
        qvlm_op_scatter_add_rows(s, acc, scr->y, scr->rows, scr->row_w, n, H);
    }
}

void qvlm_op_moe_experts(qvlm_stream *s, float *acc, const float *x, int64_t T, const float *logits,
                         const qvlm_moe_experts *ex, const qvlm_moe_scratch *scr) {
    if (s->be->ops->moe_experts) s->be->ops->moe_experts(s, acc, x, T, logits, ex, scr);
    else qvlm_moe_experts_default(s, acc, x, T, logits, ex, scr);
}

void qvlm_moe_block_default(qvlm_stream *s, float *out, float *acc, const float *x, int64_t T, const float *logits,
                            const qvlm_moe_experts *ex, const qvlm_moe_shared *sh, const qvlm_moe_scratch *scr) {
    const int64_t H = qvlm_tensor_cols(sh->gate), Is = qvlm_tensor_rows(sh->gate);
    qvlm_op_matmul_swiglu(s, scr->h, Is, scr->tmp, x, H, sh->gate, sh->up, T);
    qvlm_op_matmul(s, out, H, scr->h, Is, sh->down, NULL, T);
    qvlm_op_moe_experts(s, acc, x, T, logits, ex, scr);
    qvlm_op_add_gated(s, out, acc, out, sh->gate_logit, T, H);
}

void qvlm_op_moe_block(qvlm_stream *s, float *out, float *acc, const float *x, int64_t T, const float *logits,
                       const qvlm_moe_experts *ex, const qvlm_moe_shared *sh, const qvlm_moe_scratch *scr) {
    if (s->be->ops->moe_block) s->be->ops->moe_block(s, out, acc, x, T, logits, ex, sh, scr);
    else qvlm_moe_block_default(s, out, acc, x, T, logits, ex, sh, scr);
}

int64_t qvlm_argmax_scan(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Default: the scan over the row downloaded in pieces (on the CPU backend a download is a copy). */
void qvlm_op_argmax(qvlm_stream *s, int32_t *ids, const float *x, int64_t n_rows, int64_t n) {
    if (s->be->ops->argmax) {
        s->be->ops->argmax(s, ids, x, n_rows, n);
        return;
    }
    float buf[2048];
    for (int64_t r = 0; r < n_rows; r++) {
        float best = 0.0f;
        int64_t b = 0;
        for (int64_t i0 = 0; i0 < n; i0 += 2048) {
            const int64_t m = n - i0 < 2048 ? n - i0 : 2048;
            qvlm_op_download(s, buf, x + r * n + i0, (size_t)m * sizeof(float));
            if (i0 == 0) best = buf[0];
            for (int64_t i = 0; i < m; i++) /* x[b] is `best`: the same comparisons as the scan */
                if (buf[i] > best) best = buf[i], b = i0 + i;
        }
        ids[r] = (int32_t)b;
    }
}

int64_t qvlm_backend_forward_floor_tokens(const qvlm_backend *be) { return be->forward_floor_tokens; }
qvlm_dtype qvlm_backend_q8_dtype(const qvlm_backend *be) { return be->q8_panels ? QVLM_DTYPE_Q8_0X8 : QVLM_DTYPE_Q8_0; }
