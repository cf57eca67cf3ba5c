/* cpu_ops.h - internals of the CPU backend: its device and stream structs and the op
 * functions that fill the ops table (kernels/backend_impl.h). */
#ifndef QVLM_KERNELS_CPU_OPS_H
#define QVLM_KERNELS_CPU_OPS_H

#include "kernels/backend_impl.h"
#include "kernels/cpu/cpu.h"

typedef struct cpu_backend {
    struct qvlm_backend base;
    qvlm_pool *pool;
    qvlm_cpu cpu;
    char name[128];
    _Atomic size_t mem_current, mem_peak; /* bytes from cpu_alloc */
} cpu_backend;

typedef struct cpu_stream {
    struct qvlm_stream base;
    cpu_backend *be;
    void *mm_work; /* matmul scratch (qvlm_cpu_matmul's `work`) */
    size_t mm_work_bytes;
    void *scratch; /* per-thread scratch of the other ops, grow-only */
    size_t scratch_bytes;
} cpu_stream;

static inline cpu_stream *cpu_stream_of(qvlm_stream *s) { return (cpu_stream *)s; }
static inline qvlm_pool *cpu_pool(qvlm_stream *s) { return ((cpu_stream *)s)->be->pool; }

/* Per-thread scratch of per_thread bytes each (64-byte aligned slices); grows once, then is
 * reused, so ops do not allocate after the first call of a given size. NULL on failure. */
void *cpu_scratch(qvlm_stream *s, size_t per_thread, int n_threads);

/* Run fn over n_rows rows split across threads; small jobs run on fewer threads. */
void cpu_parallel(qvlm_stream *s, int64_t n_rows, int64_t min_rows_per_thread, qvlm_task_fn fn, void *ctx);

/* Read element i of a weight vector of any float dtype as f32. */
float cpu_weight_at(const qvlm_tensor *w, int64_t i);

void cpu_rms_norm(qvlm_stream *s, float *y, int64_t ldy, const float *x, int64_t ldx, const qvlm_tensor *w,
                  float w_offset, float eps, int64_t n_rows, int64_t dim);
void cpu_add_rms_norm(qvlm_stream *s, float *y, float *x, const float *delta, const qvlm_tensor *w, float w_offset,
                      float eps, int64_t n_rows, int64_t dim);
void cpu_add_layer_norm(qvlm_stream *s, float *y, float *x, const float *delta, const qvlm_tensor *w,
                        const qvlm_tensor *b, float eps, int64_t n_rows, int64_t dim);
void cpu_layer_norm(qvlm_stream *s, float *y, const float *x, const qvlm_tensor *w, const qvlm_tensor *b,
                    float eps, int64_t n_rows, int64_t dim);
void cpu_gated_rms_norm(qvlm_stream *s, float *y, const float *x, const float *z, const qvlm_tensor *w, float eps,
                        int64_t n_rows, int64_t dim);
void cpu_add(qvlm_stream *s, float *y, const float *a, const float *b, int64_t n);
void cpu_silu_mul(qvlm_stream *s, float *y, int64_t ldy, const float *gate, int64_t ldg, const float *up,
                  int64_t ldu, int64_t n_rows, int64_t dim);
void cpu_gelu(qvlm_stream *s, float *x, int64_t n, bool tanh_approx);
void cpu_sigmoid_mul(qvlm_stream *s, float *y, int64_t ldy, const float *x, int64_t ldx, const float *gate,
                     int64_t ldg, int64_t gate_cols, int64_t n_rows, int64_t dim);
void cpu_conv1d_silu(qvlm_stream *s, float *y, const float *x, int64_t ldx, float *state, const qvlm_tensor *w,
                     int64_t T, int64_t C, int64_t K);
void cpu_gated_delta(qvlm_stream *s, float *out, const float *qkv, int64_t ldqkv, const float *a, const float *b,
                     int64_t ldab, const qvlm_tensor *A_log, const qvlm_tensor *dt_bias, float *S,
                     const qvlm_gdn_dims *d, int64_t T, bool chunked);
void cpu_rope_multimodal(qvlm_stream *s, float *x, int64_t ldx, int64_t n_heads, int64_t head_stride,
                         const int32_t *pos, int64_t T, const qvlm_rope_params *p);
void cpu_rope_vision(qvlm_stream *s, float *x, int64_t ldx, int64_t n_heads, int64_t head_stride,
                     int64_t head_dim, const int32_t *rc, int64_t N, double theta, bool freq_bf16);
void cpu_kv_store(qvlm_stream *s, const qvlm_kv_view *kv, const float *k, int64_t ldk, const float *v, int64_t ldv,
                  int64_t pos0, int64_t T, int64_t n_kv_heads, int64_t head_dim);
void cpu_attention(qvlm_stream *s, float *out, const float *q, int64_t ldq, const qvlm_kv_view *kv, int64_t pos0,
                   int64_t T, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale);
void cpu_attention_segments(qvlm_stream *s, float *out, const float *qkv, const int64_t *seg, int64_t n_seg,
                            int64_t n_heads, int64_t head_dim, float scale);
void cpu_moe_route(qvlm_stream *s, int32_t *idx, float *weight, const float *logits, int64_t n_rows,
                   int64_t n_experts, int64_t k);
void cpu_gather_rows(qvlm_stream *s, float *y, const float *x, const int32_t *rows, int64_t n, int64_t dim);
void cpu_scatter_add_rows(qvlm_stream *s, float *y, const float *x, const int32_t *rows, const float *scale,
                          int64_t n, int64_t dim);

#endif /* QVLM_KERNELS_CPU_OPS_H */
