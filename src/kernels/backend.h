/* backend.h - the ops the model needs, independent of where they run (CPU now, CUDA later).
 *
 * Model code (src/model) calls only what this header declares and never includes a
 * backend's own header: the split follows ggml's. A backend is a device (CPU thread pool, a
 * GPU); a stream is one in-order sequence of ops on it with its own scratch memory; every
 * session owns one stream, so two sessions never share scratch.
 *
 * Tensors are dense and row-major; shapes are written outermost first like PyTorch. Ops take
 * the output first. Small integer inputs (token ids, positions, segment lengths, expert
 * choices) are passed as host arrays; a device backend copies them itself.
 * Activations are F32 on the CPU backend. Weights keep their stored dtype.
 */
#ifndef QVLM_KERNELS_BACKEND_H
#define QVLM_KERNELS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"

typedef struct qvlm_backend qvlm_backend;
typedef struct qvlm_stream qvlm_stream;

typedef enum qvlm_backend_kind { QVLM_BACKEND_CPU = 0, QVLM_BACKEND_CUDA } qvlm_backend_kind;

/* Same values as qvlm_precision in kernels/cpu/cpu.h. */
typedef enum qvlm_compute_precision { QVLM_COMPUTE_F32 = 0, QVLM_COMPUTE_BF16 = 1 } qvlm_compute_precision;

typedef struct qvlm_backend_params {
    qvlm_backend_kind kind;
    int n_threads;                      /* CPU: 0 = all online CPUs */
    qvlm_compute_precision precision;   /* how activations meet weights in matmuls */
} qvlm_backend_params;

/* A tensor in a backend's memory. ne[] are element counts, outermost first; unused trailing
 * dims are absent (n_dims says how many). */
typedef struct qvlm_tensor {
    qvlm_dtype dtype;
    int n_dims;
    int64_t ne[4];
    void *data;
} qvlm_tensor;

static inline int64_t qvlm_tensor_rows(const qvlm_tensor *t) {
    int64_t r = 1;
    for (int i = 0; i + 1 < t->n_dims; i++) r *= t->ne[i];
    return r;
}
static inline int64_t qvlm_tensor_cols(const qvlm_tensor *t) { return t->n_dims ? t->ne[t->n_dims - 1] : 1; }

/* ---- devices, streams, memory ---------------------------------------------------------- */

qvlm_status qvlm_backend_create(const qvlm_backend_params *p, qvlm_backend **out, qvlm_error *err);
void qvlm_backend_destroy(qvlm_backend *be);
const char *qvlm_backend_name(const qvlm_backend *be); /* "cpu (avx512bf16, 2 threads, f32)" */
qvlm_backend_kind qvlm_backend_kind_of(const qvlm_backend *be);
/* About how many tokens a forward pass over a few tokens costs as much as (launch and
 * synchronisation overheads; 0 where the cost is proportional to the tokens): callers that
 * may split a prefill into segments avoid segments shorter than this. */
int64_t qvlm_backend_forward_floor_tokens(const qvlm_backend *be);
qvlm_compute_precision qvlm_backend_precision(const qvlm_backend *be);
/* The dtype load-time Q8_0 quantisation should produce for this backend: QVLM_DTYPE_Q8_0X8
 * (the I8 kernels' interleaved panels, read as stored) on the CPU at BF16 precision,
 * QVLM_DTYPE_Q8_0 otherwise. */
qvlm_dtype qvlm_backend_q8_dtype(const qvlm_backend *be);

/* The backend's host thread pool for CPU-side work such as image preprocessing (may be NULL). */
struct qvlm_pool *qvlm_backend_host_pool(qvlm_backend *be);

/* Memory in the backend. alloc returns NULL on failure; the memory is 64-byte aligned and
 * uninitialised. */
void *qvlm_backend_alloc(qvlm_backend *be, size_t n_bytes);
void qvlm_backend_free(qvlm_backend *be, void *p);
/* Bytes of backend memory currently allocated through qvlm_backend_alloc, and the most
 * there has been since the last reset (weights used in place are not counted). */
void qvlm_backend_mem_stats(qvlm_backend *be, size_t *current_bytes, size_t *peak_bytes);
void qvlm_backend_mem_reset_peak(qvlm_backend *be);
/* Make a weight usable by this backend. CPU: points at the (mmapped) host bytes, no copy.
 * A GPU backend uploads. `host` must outlive the model. */
qvlm_status qvlm_backend_weight(qvlm_backend *be, const void *host, qvlm_dtype dtype, int n_dims,
                                const int64_t *ne, qvlm_tensor *out, qvlm_error *err);
void qvlm_backend_weight_free(qvlm_backend *be, qvlm_tensor *t);

/* A stream owns scratch sized for the largest op it will run; reserve it once (per-session
 * set-up), never on the hot path. */
qvlm_status qvlm_stream_create(qvlm_backend *be, qvlm_stream **out, qvlm_error *err);
void qvlm_stream_destroy(qvlm_stream *s);
qvlm_backend *qvlm_stream_backend(qvlm_stream *s);
/* Ensure matmul scratch for products of up to n_rows rows of k columns. */
qvlm_status qvlm_stream_reserve_matmul(qvlm_stream *s, int64_t n_rows, int64_t k, qvlm_error *err);
/* Wait until all queued ops have finished (no-op on the CPU). */
void qvlm_stream_sync(qvlm_stream *s);
/* Ops return nothing; a device backend records the first failure (a launch, a copy, an
 * allocation of scratch) on the stream and skips later ops. Returns that failure (message in
 * err) and clears it, or QVLM_OK. CPU: always QVLM_OK. After a device fault the device may stay
 * unusable; the message says what failed first. */
qvlm_status qvlm_stream_status(qvlm_stream *s, qvlm_error *err);

/* Optional decode-step recording. A caller that runs the same sequence of ops with the same
 * buffers and shapes once per generated token (only host-array contents such as ids,
 * positions, pos0 and the KV block table change) may bracket it with step_begin / step_end.
 * If step_begin returns true the backend may record the ops and run them at step_end (CUDA:
 * replay one CUDA graph instead of hundreds of launches; a changed sequence is re-captured).
 * Between the two, results are not visible to the host: the bracket must not contain
 * downloads, syncs or callbacks that read backend memory (a backend that meets one runs what
 * it has recorded and finishes the step op by op). CPU: begin returns false, end does nothing. */
bool qvlm_stream_step_begin(qvlm_stream *s);
void qvlm_stream_step_end(qvlm_stream *s);

/* ---- load-time weight conversion (host memory, for any backend) -------------------------------
 * Quantise `rows` rows of k elements of src (F32, BF16 or F16) to `to`: QVLM_DTYPE_Q8_0 or its
 * interleaved layout QVLM_DTYPE_Q8_0X8 (kernels/cpu/quant.h's format and rounding; which one a
 * backend wants: qvlm_backend_q8_dtype) into dst, qvlm_quantized_bytes(to, rows, k) bytes, split
 * over the threads of `pool` (NULL: the calling thread). QVLM_E_INVALID when k is not a
 * positive multiple of 32, `to` is neither or src_type is not a float type; QVLM_E_CORRUPT
 * naming the row when a value is not finite or overflows the half scale. On failure dst is
 * partly written. */
size_t qvlm_quantized_bytes(qvlm_dtype to, int64_t rows, int64_t k);
qvlm_status qvlm_quantize_rows(void *dst, qvlm_dtype to, const void *src, qvlm_dtype src_type, int64_t rows, int64_t k,
                               struct qvlm_pool *pool, qvlm_error *err);

/* Copies between host and backend memory, and within the backend. */
void qvlm_op_upload(qvlm_stream *s, void *dst, const void *host_src, size_t n_bytes);
void qvlm_op_download(qvlm_stream *s, void *host_dst, const void *src, size_t n_bytes);
void qvlm_op_copy(qvlm_stream *s, void *dst, const void *src, size_t n_bytes);
void qvlm_op_zero(qvlm_stream *s, void *dst, size_t n_bytes);

/* ---- the ops ----------------------------------------------------------------------------- */

/* y[t][:] = f32(table[ids[t]][:]) for t < n. ids must be < table rows (caller checks). */
void qvlm_op_get_rows(qvlm_stream *s, float *y, const qvlm_tensor *table, const int32_t *ids, int64_t n);

/* y[i][:] += sum_j w[i][j] * f32(table[idx[i][j]][:]) for j < taps (the weighted taps are summed
 * first, then added): bilinear resampling of a learned position table. idx/w host [n][taps]. */
void qvlm_op_add_weighted_rows(qvlm_stream *s, float *y, const qvlm_tensor *table, const int32_t *idx, const float *w,
                               int64_t n, int64_t taps);

/* y[t][j] = sum_i x[t][i] W[j][i] (+ bias[j]); W [d][k]; x rows at stride ldx, y rows at ldy.
 * Each output element is bitwise independent of n (see kernels/cpu/cpu.h). */
void qvlm_op_matmul(qvlm_stream *s, float *y, int64_t ldy, const float *x, int64_t ldx, const qvlm_tensor *w,
                    const qvlm_tensor *bias, int64_t n);

/* Several products of the same x, all W with the same k: part i is exactly
 * qvlm_op_matmul(s, y_i, ldy_i, x, ldx, W_i, bias_i, n), run in one pass (one thread
 * fork-join instead of one per product, x prepared once). At most 8 parts. */
typedef struct qvlm_matmul_part {
    float *y;
    int64_t ldy;
    const qvlm_tensor *w;    /* [d_i][k] */
    const qvlm_tensor *bias; /* [d_i] or NULL */
} qvlm_matmul_part;
void qvlm_op_matmul_multi(qvlm_stream *s, int n_parts, const qvlm_matmul_part *parts, const float *x, int64_t ldx,
                          int64_t n);
/* SwiGLU's first half: y = silu(x Wg^T) * (x Wu^T), rows at ldy. tmp (rows at ldy, the size
 * of y) is scratch the default (one matmul_multi and silu_mul) uses; a backend may fuse. */
void qvlm_op_matmul_swiglu(qvlm_stream *s, float *y, int64_t ldy, float *tmp, const float *x, int64_t ldx,
                           const qvlm_tensor *wg, const qvlm_tensor *wu, int64_t n);

/* RMSNorm per row: y = x * rsqrt(mean(x^2) + eps) * (w_offset + w). w_offset = 1 for the
 * zero-centred norms of the text tower (qwen35-arch §3.2), 0 for ordinary ones. */
void qvlm_op_rms_norm(qvlm_stream *s, float *y, int64_t ldy, const float *x, int64_t ldx, const qvlm_tensor *w,
                      float w_offset, float eps, int64_t n_rows, int64_t dim);
/* The residual add fused with the norm after it: x[r][:] += delta[r][:] (x written), then
 * y[r][:] = RMSNorm(x[r][:]) exactly as qvlm_op_rms_norm. Rows at stride dim; y may alias delta. */
void qvlm_op_add_rms_norm(qvlm_stream *s, float *y, float *x, const float *delta, const qvlm_tensor *w, float w_offset,
                          float eps, int64_t n_rows, int64_t dim);
/* Likewise with LayerNorm. */
void qvlm_op_add_layer_norm(qvlm_stream *s, float *y, float *x, const float *delta, const qvlm_tensor *w,
                            const qvlm_tensor *b, float eps, int64_t n_rows, int64_t dim);
/* LayerNorm per row with weight and bias (biased variance). */
void qvlm_op_layer_norm(qvlm_stream *s, float *y, const float *x, const qvlm_tensor *w, const qvlm_tensor *b,
                        float eps, int64_t n_rows, int64_t dim);
/* y = a + b, n elements (y may alias a or b). */
void qvlm_op_add(qvlm_stream *s, float *y, const float *a, const float *b, int64_t n);
/* y[r][c] = silu(gate[r][c]) * up[r][c]. */
void qvlm_op_silu_mul(qvlm_stream *s, float *y, int64_t ldy, const float *gate, int64_t ldg, const float *up,
                      int64_t ldu, int64_t n_rows, int64_t dim);
/* In place, n elements: GELU with the tanh approximation, or the exact erf form. */
void qvlm_op_gelu(qvlm_stream *s, float *x, int64_t n, bool tanh_approx);
/* y[r][c] = x[r][c] * sigmoid(gate[r][c]) (gate_cols == dim), or * sigmoid(gate[r][0]) when
 * gate_cols == 1 (the MoE shared-expert gate). y may alias x. */
void qvlm_op_sigmoid_mul(qvlm_stream *s, float *y, int64_t ldy, const float *x, int64_t ldx, const float *gate,
                         int64_t ldg, int64_t gate_cols, int64_t n_rows, int64_t dim);
/* y = a + x * sigmoid(gate[r]) for n_rows rows of dim values (all rows at stride dim, one gate
 * value per row), exactly as qvlm_op_sigmoid_mul(y, dim, x, dim, gate, 1, 1, n_rows, dim) and
 * then qvlm_op_add(y, a, y, n_rows * dim), which the default runs. y may alias x. */
void qvlm_op_add_gated(qvlm_stream *s, float *y, const float *a, const float *x, const float *gate, int64_t n_rows,
                       int64_t dim);

/* Causal depthwise conv1d over time, then SiLU (qwen35-arch §3.3 step 2).
 * x [T][C] are this call's inputs, state [K-1][C] the inputs of the K-1 tokens before them
 * (zeros at the start of a sequence); w [C][K] (HF [C,1,K]), tap K-1 multiplies the current
 * token. Writes y [T][C] and replaces state with the last K-1 inputs. */
void qvlm_op_conv1d_silu(qvlm_stream *s, float *y, const float *x, int64_t ldx, float *state, const qvlm_tensor *w,
                         int64_t T, int64_t C, int64_t K);

/* Gated DeltaNet core (qwen35-arch §3.3 steps 3-7) for T tokens of one sequence.
 * qkv [T][2*Hk*dk + Hv*dv] (after conv+SiLU, row stride ldqkv), a/b [T][Hv] (raw projections,
 * row stride ldab), A_log/dt_bias [Hv]. State S [Hv][dk][dv] f32 is read and updated.
 * out [T][Hv][dv]. chunked = the chunk-parallel form (chunk 64, used for prefill);
 * otherwise the token-by-token recurrence (decode). Both compute the same function. */
typedef struct qvlm_gdn_dims {
    int64_t n_k_heads, n_v_heads, k_dim, v_dim;
} qvlm_gdn_dims;
/* Channels of the qkv projection (and of the conv): q and k of every key head, v of every value head. */
static inline int64_t qvlm_gdn_qkv_dim(const qvlm_gdn_dims *d) {
    return 2 * d->n_k_heads * d->k_dim + d->n_v_heads * d->v_dim;
}
void qvlm_op_gated_delta(qvlm_stream *s, float *out, const float *qkv, int64_t ldqkv, const float *a,
                         const float *b, int64_t ldab, const qvlm_tensor *A_log, const qvlm_tensor *dt_bias,
                         float *S, const qvlm_gdn_dims *d, int64_t T, bool chunked);

/* Gated RMSNorm per row of dim: y = (w * (x * rsqrt(mean(x^2)+eps))) * silu(z). */
void qvlm_op_gated_rms_norm(qvlm_stream *s, float *y, const float *x, const float *z, const qvlm_tensor *w,
                            float eps, int64_t n_rows, int64_t dim);
/* qvlm_op_gated_delta into core [T][Hv][dv], then qvlm_op_gated_rms_norm(y, core, z, norm_w)
 * over rows of dv (the default). A backend may fuse the two and leave core unwritten. */
void qvlm_op_gated_delta_norm(qvlm_stream *s, float *y, float *core, const float *z, const qvlm_tensor *norm_w,
                              float eps, const float *qkv, int64_t ldqkv, const float *a, const float *b,
                              int64_t ldab, const qvlm_tensor *A_log, const qvlm_tensor *dt_bias, float *S,
                              const qvlm_gdn_dims *d, int64_t T, bool chunked);

/* A Gated DeltaNet layer from its projections to the normed output (qwen35-arch §3.3 steps
 * 2-7): qvlm_op_conv1d_silu(conv->y, conv->x, conv->ldx, conv->state, conv->w, T, C, conv->K)
 * with C = 2*Hk*dk + Hv*dv, then qvlm_op_gated_delta_norm reading conv->y (the default).
 * A backend may fuse them and leave conv->y and core unwritten. y may alias z (each element of
 * z is read only for the element of y at its index) or conv->x; a fused form that reads x for
 * every head while it writes the heads' outputs must then take the default. */
typedef struct qvlm_gdn_conv {
    const float *x; /* the qkv projection [T][C] at row stride ldx */
    int64_t ldx;
    float *y;     /* [T][C], after the conv and SiLU */
    float *state; /* [K-1][C] */
    const qvlm_tensor *w;
    int64_t K;
} qvlm_gdn_conv;
void qvlm_op_gated_delta_conv_norm(qvlm_stream *s, float *y, float *core, const float *z, const qvlm_tensor *norm_w,
                                   float eps, const qvlm_gdn_conv *conv, const float *a, const float *b, int64_t ldab,
                                   const qvlm_tensor *A_log, const qvlm_tensor *dt_bias, float *S,
                                   const qvlm_gdn_dims *d, int64_t T, bool chunked);

/* Interleaved multimodal RoPE on the first rot_dim dims of each head, in place (§3.4 step 3).
 * x: T rows at stride ldx, each with n_heads heads at stride head_stride. pos [3][T] (t, h, w).
 * Frequency i uses axis H if i%3==1 && i<3*section[1], W if i%3==2 && i<3*section[2], else T. */
typedef struct qvlm_rope_params {
    int64_t rot_dim;
    double theta;
    int section[3];
    /* Round the inverse frequencies to bf16, as a model converted with .to(bfloat16) and back
     * does (its non-persistent inv_freq buffers are rounded). Not what from_pretrained
     * computes, but what the test fixtures' generator did (see `qvlm verify --rope-freq`). */
    bool freq_bf16;
} qvlm_rope_params;
void qvlm_op_rope_multimodal(qvlm_stream *s, float *x, int64_t ldx, int64_t n_heads, int64_t head_stride,
                             const int32_t *pos, int64_t T, const qvlm_rope_params *p);

/* 2D rotary of the vision tower over the whole head (qwen35-arch §5 step 3), in place.
 * x: N rows at stride ldx, n_heads heads of head_dim at stride head_stride; rc [N][2] (row, col). */
void qvlm_op_rope_vision(qvlm_stream *s, float *x, int64_t ldx, int64_t n_heads, int64_t head_stride,
                         int64_t head_dim, const int32_t *rc, int64_t N, double theta, bool freq_bf16);

/* Paged attention KV: a sequence's keys and values live in fixed-size blocks. Block b holds
 * tokens [b*block_tokens, (b+1)*block_tokens); inside a block, for this layer,
 * K at blocks[b] + k_offset: [n_kv_heads][block_tokens][head_dim] f32, V likewise at v_offset. */
typedef struct qvlm_kv_view {
    void *const *blocks; /* [n_blocks] backend pointers */
    int64_t n_blocks;
    int64_t block_tokens;
    size_t k_offset, v_offset; /* bytes from a block's start to this layer's K / V */
} qvlm_kv_view;

/* Write k/v of T tokens (rows at stride ldk / ldv, n_kv_heads*head_dim values each) at
 * sequence positions pos0 .. pos0+T-1. */
void qvlm_op_kv_store(qvlm_stream *s, const qvlm_kv_view *kv, const float *k, int64_t ldk, const float *v,
                      int64_t ldv, int64_t pos0, int64_t T, int64_t n_kv_heads, int64_t head_dim);

/* Gated attention's query and key heads, ready for the product (qwen35-arch §3.4), as one op:
 *   qvlm_op_rms_norm(q, D, qg, 2 * D, q_norm, 1, eps, T * Hq, D)   the query half of each qg head
 *   qvlm_op_rms_norm(k, D, k, D, k_norm, 1, eps, T * Hkv, D)        in place
 *   qvlm_op_rope_multimodal(q, Hq * D, Hq, D, pos, T, rp), then the same for k
 *   qvlm_op_kv_store(kv, k, Hkv * D, v, Hkv * D, pos0, T, Hkv, D)
 * The default runs exactly these; a backend may do them in one pass (decode: one launch for
 * five tiny ones). */
typedef struct qvlm_attn_heads {
    float *q;         /* [T][Hq * D], written */
    const float *qg;  /* [T][Hq][2 * D]: each head's query then its gate */
    float *k;         /* [T][Hkv * D], normalised and rotated in place */
    const float *v;   /* [T][Hkv * D] */
    const qvlm_tensor *q_norm, *k_norm;
    float eps;
    int64_t Hq, Hkv, D;
} qvlm_attn_heads;
void qvlm_op_attn_heads(qvlm_stream *s, const qvlm_attn_heads *h, const int32_t *pos, int64_t T,
                        const qvlm_rope_params *rp, const qvlm_kv_view *kv, int64_t pos0);

/* Causal GQA attention of T queries at sequence positions pos0.. over the keys 0..pos0+t.
 * q: rows at stride ldq, n_heads heads at stride head_dim. out [T][n_heads][head_dim].
 * Query head h reads KV head h / (n_heads / n_kv_heads). Softmax in f32, online over blocks
 * in a fixed order, so a query's result does not depend on T. */
void qvlm_op_attention(qvlm_stream *s, float *out, const float *q, int64_t ldq, const qvlm_kv_view *kv,
                       int64_t pos0, int64_t T, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                       float scale);
/* The same, then each output head gated: out[r] *= sigmoid(gate[r]) for the T * n_heads rows
 * of head_dim values (gate rows at stride ldg), exactly as qvlm_op_sigmoid_mul(out, head_dim,
 * out, head_dim, gate, ldg, head_dim, T * n_heads, head_dim) after it, which the default runs. */
void qvlm_op_attention_gated(qvlm_stream *s, float *out, const float *q, int64_t ldq, const qvlm_kv_view *kv,
                             int64_t pos0, int64_t T, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                             float scale, const float *gate, int64_t ldg);

/* Bidirectional attention inside segments (the vision tower): seg [n_seg + 1] holds cumulative
 * row offsets, and rows [seg[i], seg[i+1]) attend only to each other. qkv [N][3][n_heads][head_dim] (one row per patch); out [N][n_heads*head_dim].
 * Tiled with an online softmax: memory does not grow with the segment length squared. */
void qvlm_op_attention_segments(qvlm_stream *s, float *out, const float *qkv, const int64_t *seg, int64_t n_seg,
                                int64_t n_heads, int64_t head_dim, float scale);

/* Greedy choice: ids[r] (host [n_rows], filled when the call returns) = the index of the largest
 * value of row r of x (backend memory [n_rows][n]), exactly what qvlm_argmax_scan returns for
 * the row: the first index of the maximum of the non-NaN values, or 0 when x[r][0] is NaN. The
 * default downloads the rows and scans them; a device backend reads back only the ids, which
 * is what lets a greedy decode step skip downloading the vocabulary's logits. */
void qvlm_op_argmax(qvlm_stream *s, int32_t *ids, const float *x, int64_t n_rows, int64_t n);
/* The host scan that defines it: b = 0, then b = i wherever x[i] > x[b]. */
int64_t qvlm_argmax_scan(const float *x, int64_t n);

/* Mixture of experts (qwen35-arch §3.6). */
/* probs = softmax over E of logits (f32, backend memory [n_rows][E]), then the top k per row,
 * renormalised. idx/weight are host arrays [n_rows][k], filled when the call returns (a device
 * backend waits for them). Ties break toward the lower expert index. */
void qvlm_op_moe_route(qvlm_stream *s, int32_t *idx, float *weight, const float *logits, int64_t n_rows,
                       int64_t n_experts, int64_t k);
/* The routed experts of one MoE layer, for T rows x [T][H] (row stride H, backend memory):
 *   acc[r][:] = sum over the k experts e routed to row r of w[r][e] * down_e(silu(gate_e x[r]) * up_e x[r])
 * routed as qvlm_op_moe_route routes logits [T][E] (backend memory). acc starts at zero and the
 * experts of a row are added in ascending e, each as acc += w * (its product). The default runs
 * qvlm_op_moe_route, then per expert in ascending order gather_rows, matmul_swiglu, matmul and
 * scatter_add_rows; a device backend may route and run the experts without the host. */
typedef struct qvlm_moe_experts {
    int64_t n_experts, k;    /* E experts, k routed per row */
    /* Expert e's tensors are at (const char *)gate + e * stride (likewise up, down): gate and
     * up [I][H], down [H][I]; views into fused tensors or separate ones. */
    const qvlm_tensor *gate, *up, *down;
    size_t stride;
} qvlm_moe_experts;
/* What the default needs: backend memory xg, y [T][H] and h, tmp [T][I]; host arrays idx, rows
 * [T][k] int32 and w, row_w [T][k] float. logits may share memory with y (they are read
 * before y is written). */
typedef struct qvlm_moe_scratch {
    float *xg, *y, *h, *tmp;
    int32_t *idx, *rows;
    float *w, *row_w;
} qvlm_moe_scratch;
void qvlm_op_moe_experts(qvlm_stream *s, float *acc, const float *x, int64_t T, const float *logits,
                         const qvlm_moe_experts *ex, const qvlm_moe_scratch *scr);
/* A MoE layer's experts (§3.6): out = routed + sigmoid(gate_logit) * shared, where shared is
 * the shared expert's SwiGLU of x and routed the qvlm_op_moe_experts sum. Exactly
 *   qvlm_op_matmul_swiglu(s, scr->h, Is, scr->tmp, x, H, sh->gate, sh->up, T);
 *   qvlm_op_matmul(s, out, H, scr->h, Is, sh->down, NULL, T);
 *   qvlm_op_moe_experts(s, acc, x, T, logits, ex, scr);
 *   qvlm_op_add_gated(s, out, acc, out, sh->gate_logit, T, H);
 * which the default runs (Is: the shared expert's intermediate size; acc [T][H] is scratch,
 * and scr->h, scr->tmp must hold [T][Is] too).
 * A device backend may run the shared expert as one more expert of the routed kernels. */
typedef struct qvlm_moe_shared {
    const qvlm_tensor *gate, *up, *down; /* [Is][H], [Is][H], [H][Is] */
    const float *gate_logit;             /* [T] backend memory, before the sigmoid */
} qvlm_moe_shared;
void qvlm_op_moe_block(qvlm_stream *s, float *out, float *acc, const float *x, int64_t T, const float *logits,
                       const qvlm_moe_experts *ex, const qvlm_moe_shared *sh, const qvlm_moe_scratch *scr);
/* y[i][:] = x[rows[i]][:] for i < n (row length dim). */
void qvlm_op_gather_rows(qvlm_stream *s, float *y, const float *x, const int32_t *rows, int64_t n, int64_t dim);
/* y[rows[i]][:] += scale[i] * x[i][:] for i < n, applied in order of i. */
void qvlm_op_scatter_add_rows(qvlm_stream *s, float *y, const float *x, const int32_t *rows, const float *scale,
                              int64_t n, int64_t dim);

#endif /* QVLM_KERNELS_BACKEND_H */
