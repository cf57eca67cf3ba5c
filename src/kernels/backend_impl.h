/* backend_impl.h - the table of functions a backend fills in (kernels/ only; model code never
 * includes this). The dispatchers in backend.c forward each qvlm_op_* to it. */
#ifndef QVLM_KERNELS_BACKEND_IMPL_H
#define QVLM_KERNELS_BACKEND_IMPL_H

#include "kernels/backend.h"

typedef struct qvlm_backend_ops {
    const char *(*name)(const qvlm_backend *be);
    void (*destroy)(qvlm_backend *be);
    struct qvlm_pool *(*host_pool)(qvlm_backend *be);
    void *(*alloc)(qvlm_backend *be, size_t n_bytes);
    void (*free)(qvlm_backend *be, void *p);
    void (*mem_stats)(qvlm_backend *be, size_t *current_bytes, size_t *peak_bytes);
    void (*mem_reset_peak)(qvlm_backend *be);
    qvlm_status (*weight)(qvlm_backend *be, const void *host, qvlm_dtype dtype, int n_dims, const int64_t *ne,
                          qvlm_tensor *out, qvlm_error *err);
    void (*weight_free)(qvlm_backend *be, qvlm_tensor *t);
    qvlm_status (*stream_create)(qvlm_backend *be, qvlm_stream **out, qvlm_error *err);
    void (*stream_destroy)(qvlm_stream *s);
    qvlm_status (*reserve_matmul)(qvlm_stream *s, int64_t n_rows, int64_t k, qvlm_error *err);
    void (*sync)(qvlm_stream *s);

    void (*upload)(qvlm_stream *s, void *dst, const void *src, size_t n);
    void (*download)(qvlm_stream *s, void *dst, const void *src, size_t n);
    void (*copy)(qvlm_stream *s, void *dst, const void *src, size_t n);
    void (*zero)(qvlm_stream *s, void *dst, size_t n);

    void (*get_rows)(qvlm_stream *s, float *y, const qvlm_tensor *table, const int32_t *ids, int64_t n);
    void (*add_weighted_rows)(qvlm_stream *s, float *y, const qvlm_tensor *table, const int32_t *idx, const float *w,
                              int64_t n, int64_t taps);
    void (*matmul)(qvlm_stream *s, float *y, int64_t ldy, const float *x, int64_t ldx, const qvlm_tensor *w,
                   const qvlm_tensor *bias, int64_t n);
    void (*rms_norm)(qvlm_stream *s, float *y, int64_t ldy, const float *x, int64_t ldx, const qvlm_tensor *w,
                     float w_offset, float eps, int64_t n_rows, int64_t dim);
    void (*layer_norm)(qvlm_stream *s, float *y, const float *x, const qvlm_tensor *w, const qvlm_tensor *b,
                       float eps, int64_t n_rows, int64_t dim);
    void (*add)(qvlm_stream *s, float *y, const float *a, const float *b, int64_t n);
    void (*silu_mul)(qvlm_stream *s, float *y, int64_t ldy, const float *gate, int64_t ldg, const float *up,
                     int64_t ldu, int64_t n_rows, int64_t dim);
    void (*gelu)(qvlm_stream *s, float *x, int64_t n, bool tanh_approx);
    void (*sigmoid_mul)(qvlm_stream *s, float *y, int64_t ldy, const float *x, int64_t ldx, const float *gate,
                        int64_t ldg, int64_t gate_cols, int64_t n_rows, int64_t dim);
    void (*conv1d_silu)(qvlm_stream *s, float *y, const float *x, int64_t ldx, float *state, const qvlm_tensor *w,
                        int64_t T, int64_t C, int64_t K);
    void (*gated_delta)(qvlm_stream *s, float *out, const float *qkv, int64_t ldqkv, const float *a,
                        const float *b, int64_t ldab, const qvlm_tensor *A_log, const qvlm_tensor *dt_bias,
                        float *S, const qvlm_gdn_dims *d, int64_t T, bool chunked);
    void (*gated_rms_norm)(qvlm_stream *s, float *y, const float *x, const float *z, const qvlm_tensor *w,
                           float eps, int64_t n_rows, int64_t dim);
    void (*rope_multimodal)(qvlm_stream *s, float *x, int64_t ldx, int64_t n_heads, int64_t head_stride,
                            const int32_t *pos, int64_t T, const qvlm_rope_params *p);
    void (*rope_vision)(qvlm_stream *s, float *x, int64_t ldx, int64_t n_heads, int64_t head_stride,
                        int64_t head_dim, const int32_t *rc, int64_t N, double theta, bool freq_bf16);
    void (*kv_store)(qvlm_stream *s, const qvlm_kv_view *kv, const float *k, int64_t ldk, const float *v,
                     int64_t ldv, int64_t pos0, int64_t T, int64_t n_kv_heads, int64_t head_dim);
    void (*attention)(qvlm_stream *s, float *out, const float *q, int64_t ldq, const qvlm_kv_view *kv,
                      int64_t pos0, int64_t T, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                      float scale);
    void (*attention_segments)(qvlm_stream *s, float *out, const float *qkv, const int64_t *seg, int64_t n_seg,
                               int64_t n_heads, int64_t head_dim, float scale);
    void (*moe_route)(qvlm_stream *s, int32_t *idx, float *weight, const float *logits, int64_t n_rows,
                      int64_t n_experts, int64_t k);
    void (*gather_rows)(qvlm_stream *s, float *y, const float *x, const int32_t *rows, int64_t n, int64_t dim);
    void (*scatter_add_rows)(qvlm_stream *s, float *y, const float *x, const int32_t *rows, const float *scale,
                             int64_t n, int64_t dim);

    /* Optional (NULL: the default in backend.c, written with the ops above). */
    void (*add_rms_norm)(qvlm_stream *s, float *y, float *x, const float *delta, const qvlm_tensor *w,
                         float w_offset, float eps, int64_t n_rows, int64_t dim);
    void (*matmul_multi)(qvlm_stream *s, int n_parts, const qvlm_matmul_part *parts, const float *x, int64_t ldx,
                         int64_t n);
    void (*add_layer_norm)(qvlm_stream *s, float *y, float *x, const float *delta, const qvlm_tensor *w,
                           const qvlm_tensor *b, float eps, int64_t n_rows, int64_t dim);
    qvlm_status (*status)(qvlm_stream *s, qvlm_error *err);        /* default: QVLM_OK */
    bool (*step_begin)(qvlm_stream *s);                             /* default: false */
    void (*step_end)(qvlm_stream *s);                               /* default: nothing */
    void (*matmul_swiglu)(qvlm_stream *s, float *y, int64_t ldy, float *tmp, const float *x, int64_t ldx,
                          const qvlm_tensor *wg, const qvlm_tensor *wu, int64_t n);
    void (*attn_heads)(qvlm_stream *s, const qvlm_attn_heads *h, const int32_t *pos, int64_t T,
                       const qvlm_rope_params *rp, const qvlm_kv_view *kv, int64_t pos0);
    void (*attention_gated)(qvlm_stream *s, float *out, const float *q, int64_t ldq, const qvlm_kv_view *kv,
                            int64_t pos0, int64_t T, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                            float scale, const float *gate, int64_t ldg);
    void (*add_gated)(qvlm_stream *s, float *y, const float *a, const float *x, const float *gate, int64_t n_rows,
                      int64_t dim);
    void (*gated_delta_norm)(qvlm_stream *s, float *y, float *core, const float *z, const qvlm_tensor *norm_w,
                             float eps, const float *qkv, int64_t ldqkv, const float *a, const float *b,
                             int64_t ldab, const qvlm_tensor *A_log, const qvlm_tensor *dt_bias, float *S,
                             const qvlm_gdn_dims *d, int64_t T, bool chunked);
    void (*gated_delta_conv_norm)(qvlm_stream *s, float *y, float *core, const float *z, const qvlm_tensor *norm_w,
                                  float eps, const qvlm_gdn_conv *conv, const float *a, const float *b, int64_t ldab,
                                  const qvlm_tensor *A_log, const qvlm_tensor *dt_bias, float *S,
                                  const qvlm_gdn_dims *d, int64_t T, bool chunked);
    void (*moe_experts)(qvlm_stream *s, float *acc, const float *x, int64_t T, const float *logits,
                        const qvlm_moe_experts *ex, const qvlm_moe_scratch *scr);
    void (*argmax)(qvlm_stream *s, int32_t *ids, const float *x, int64_t n_rows, int64_t n); /* optional */
    void (*moe_block)(qvlm_stream *s, float *out, float *acc, const float *x, int64_t T, const float *logits,
                      const qvlm_moe_experts *ex, const qvlm_moe_shared *sh, const qvlm_moe_scratch *scr);
} qvlm_backend_ops;

/* The defaults of qvlm_op_attn_heads, qvlm_op_moe_block, qvlm_op_moe_experts and
 * qvlm_op_gated_delta_conv_norm (backend.c), for a backend that runs only some shapes itself. */
void qvlm_gated_delta_conv_norm_default(qvlm_stream *s, float *y, float *core, const float *z,
                                        const qvlm_tensor *norm_w, float eps, const qvlm_gdn_conv *conv,
                                        const float *a, const float *b, int64_t ldab, const qvlm_tensor *A_log,
                                        const qvlm_tensor *dt_bias, float *S, const qvlm_gdn_dims *d, int64_t T,
                                        bool chunked);
void qvlm_attn_heads_default(qvlm_stream *s, const qvlm_attn_heads *h, const int32_t *pos, int64_t T,
                             const qvlm_rope_params *rp, const qvlm_kv_view *kv, int64_t pos0);
void qvlm_moe_block_default(qvlm_stream *s, float *out, float *acc, const float *x, int64_t T, const float *logits,
                            const qvlm_moe_experts *ex, const qvlm_moe_shared *sh, const qvlm_moe_scratch *scr);
void qvlm_moe_experts_default(qvlm_stream *s, float *acc, const float *x, int64_t T, const float *logits,
                              const qvlm_moe_experts *ex, const qvlm_moe_scratch *scr);

/* Every backend struct starts with this header. */
struct qvlm_backend {
    const qvlm_backend_ops *ops;
    qvlm_backend_kind kind;
    qvlm_compute_precision precision;
    int64_t forward_floor_tokens; /* see qvlm_backend_forward_floor_tokens; 0 unless set */
    int q8_panels;                /* 1: qvlm_backend_q8_dtype is Q8_0X8 */
};
struct qvlm_stream {
    qvlm_backend *be;
};

qvlm_status qvlm_backend_cpu_create(const qvlm_backend_params *p, qvlm_backend **out, qvlm_error *err);

#ifdef QVLM_CUDA
/* kernels/cuda/backend_cuda.c. QVLM_E_UNSUPPORTED when no device is present. */
qvlm_status qvlm_backend_cuda_create(const qvlm_backend_params *p, qvlm_backend **out, qvlm_error *err);
#else
static inline qvlm_status qvlm_backend_cuda_create(const qvlm_backend_params *p, qvlm_backend **out,
                                                   qvlm_error *err) {
    (void)p, (void)out;
    return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "backend: this build has no CUDA support");
}
#endif /* QVLM_CUDA */

#endif /* QVLM_KERNELS_BACKEND_IMPL_H */
