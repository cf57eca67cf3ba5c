/* launch.h - the C-linkage launchers of the CUDA kernels (kernels/cuda/ *.cu files), for
 * backend_cuda.c. Plain C, no CUDA header: streams travel as void *.
 *
 * Every launcher has one signature, int qcu_x(void *stream, const void *args), where args
 * points to its qcu_x_args struct below; it enqueues its kernels on the stream and returns the
 * launch's cudaError_t (0 = queued). The uniform signature lets the backend keep an op as
 * {launcher, args bytes} and run it later, which is how a decode step is recorded once and
 * replayed as a CUDA graph (backend_cuda.c). So: args hold only device pointers and values,
 * and everything that changes from one decode step to the next (token ids, positions, the
 * KV block table, pos0) is read by the kernels from device memory, never passed by value.
 * Each struct is zeroed before it is filled (its bytes are compared).
 *
 * Device pointers are 16-byte aligned where the struct says "aligned"; dtype codes QCU_* equal
 * qvlm_dtype's values. Matrices are row-major, shapes outermost first as in backend.h, whose
 * op comments define the semantics; the kernels follow kernels/cpu/ and are tested against it
 * (tests/unit/cuda_ops_test.c). */
#ifndef QVLM_KERNELS_CUDA_LAUNCH_H
#define QVLM_KERNELS_CUDA_LAUNCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { QCU_F32 = 0, QCU_F16 = 1, QCU_BF16 = 2 };

typedef int (*qcu_launch_fn)(void *stream, const void *args);

/* Kernel attributes that must be set once per process before launches and never during a
 * graph capture (the large dynamic shared-memory opt-ins), and the device's size for grid
 * choices. smem_optin: the device's shared-memory limit per block; n_sm its multiprocessors;
 * pdl: launch with programmatic dependent launch (sm_90 and later). */
int qcu_init(size_t smem_optin, int n_sm, int pdl);

/* ---- rows, elementwise (elementwise.cu) ---------------------------------------------------------- */

typedef struct {
    float *y;           /* [n][dim] */
    const void *table;  /* [rows][dim] of dtype dt */
    const int32_t *ids; /* device [n] */
    int64_t dim, n;
    int32_t dt, pad;
} qcu_get_rows_args;
int qcu_get_rows(void *stream, const void *args);

typedef struct {
    float *y;           /* [n][dim], += */
    const void *table;  /* [rows][dim] of dtype dt */
    const int32_t *idx; /* device [n][taps] */
    const float *w;     /* device [n][taps] */
    int64_t dim, n, taps;
    int32_t dt, pad;
} qcu_add_weighted_rows_args;
int qcu_add_weighted_rows(void *stream, const void *args);

typedef struct {
    float *y;
    const float *a, *b;
    int64_t n;
} qcu_add_args;
int qcu_add(void *stream, const void *args);

typedef struct {
    float *y;
    const float *gate, *up;
    int64_t ldy, ldg, ldu, n_rows, dim;
} qcu_silu_mul_args;
int qcu_silu_mul(void *stream, const void *args);

typedef struct {
    float *x;
    int64_t n;
    int32_t tanh_approx, pad;
} qcu_gelu_args;
int qcu_gelu(void *stream, const void *args);

/* y = x * sigmoid(gate); with add set, y = add + that (add rows at stride ldy). */
typedef struct {
    float *y;
    const float *x, *gate, *add;
    int64_t ldy, ldx, ldg, gate_cols, n_rows, dim;
} qcu_sigmoid_mul_args;
int qcu_sigmoid_mul(void *stream, const void *args);

/* x [n_rows][cols] at stride ldx rounded to bf16: packed bf16 [n_rows][cols] when to_bf16,
 * else f32 values (exactly representable in bf16) at stride cols. */
typedef struct {
    void *y;
    const float *x;
    int64_t ldx, n_rows, cols;
    int32_t to_bf16, pad;
} qcu_round_args;
int qcu_round(void *stream, const void *args);

typedef struct {
    float *y;
    const float *bias;
    int64_t ldy, n_rows, cols;
} qcu_bias_add_args;
int qcu_bias_add(void *stream, const void *args);

/* y[i] = f32(x[i]) for n elements of dtype dt, rounded to bf16 values when round_bf16 (a
 * weight's copy for the BF16 precision, which rounds non-bf16 weights as the CPU does). */
typedef struct {
    float *y;
    const void *x;
    int64_t n;
    int32_t dt, round_bf16;
} qcu_to_f32_args;
int qcu_to_f32(void *stream, const void *args);

typedef struct {
    float *y;
    const float *x;
    const int32_t *rows; /* device [n] */
    int64_t n, dim;
} qcu_gather_rows_args;
int qcu_gather_rows(void *stream, const void *args);

typedef struct {
    float *y;
    const float *x;
    const int32_t *rows; /* device [n] */
    const float *scale;  /* device [n] */
    int64_t n, dim;
} qcu_scatter_add_rows_args;
int qcu_scatter_add_rows(void *stream, const void *args);

/* ---- norms (norm.cu) ------------------------------------------------------------------------- */

typedef struct {
    float *y;
    const float *x;
    const void *w;
    int64_t ldy, ldx, n_rows, dim;
    float w_offset, eps;
    int32_t wdt, pad;
} qcu_rms_norm_args;
int qcu_rms_norm(void *stream, const void *args);

/* x += delta; xn = rms_norm(x) (rows contiguous, stride dim). */
typedef struct {
    float *x;
    const float *delta;
    float *xn;
    const void *w;
    int64_t n_rows, dim;
    float w_offset, eps;
    int32_t wdt, pad;
} qcu_add_rms_norm_args;
int qcu_add_rms_norm(void *stream, const void *args);

typedef struct {
    float *y;
    const float *x;
    const void *w, *b;
    int64_t n_rows, dim;
    float eps;
    int32_t wdt, bdt, pad;
} qcu_layer_norm_args;
int qcu_layer_norm(void *stream, const void *args);

typedef struct {
    float *y;
    const float *x, *z;
    const void *w;
    int64_t n_rows, dim;
    float eps;
    int32_t wdt;
} qcu_gated_rms_norm_args;
int qcu_gated_rms_norm(void *stream, const void *args);

/* ---- rotary embeddings (rope.cu) -------------------------------------------------------------- */

/* inv_freq: device [rot_dim/2], computed by the host exactly as the CPU does. */
typedef struct {
    float *x;
    const int32_t *pos; /* device [3][T] */
    const float *inv_freq;
    int64_t ldx, n_heads, head_stride, T, rot_dim;
    int32_t section1, section2;
} qcu_rope_text_args;
int qcu_rope_text(void *stream, const void *args);

typedef struct {
    float *x;
    const int32_t *rc;     /* device [N][2] */
    const float *inv_freq; /* device [head_dim/4] */
    int64_t ldx, n_heads, head_stride, head_dim, N;
} qcu_rope_vision_args;
int qcu_rope_vision(void *stream, const void *args);

/* ---- causal conv1d (conv1d.cu) ---------------------------------------------------------------- */

typedef struct {
    float *y;
    const float *x;
    float *state;
    const void *w;
    int64_t ldx, T, C, K;
    int32_t wdt, pad;
} qcu_conv1d_args;
int qcu_conv1d_silu(void *stream, const void *args);

/* ---- Gated DeltaNet (gated_delta.cu) ---------------------------------------------------------- */

/* Per-stream device memory that starts zeroed and that kernels leave zeroed (cross-block
 * counters): QCU_SYNC_COUNTERS unsigned counters, then QCU_SYNC_PARTS floats. */
#define QCU_SYNC_COUNTERS 1024
#define QCU_SYNC_PARTS 15360
#define QCU_SYNC_BYTES (QCU_SYNC_COUNTERS * 4 + QCU_SYNC_PARTS * 4)

/* Token by token. With y_norm set, the gated RMSNorm of the next op is fused:
 * y_norm[t][h][:] = (w * (o * rsqrt(mean(o^2)+eps))) * silu(z[t][h][:]); out [T][Hv][dv] is
 * scratch then (written or not). sync: the stream's sync area (NULL: no cross-block fusion). */
typedef struct {
    void *sync;
    float *out;
    const float *qkv, *a, *b;
    const void *A_log, *dt_bias;
    float *S;
    const float *z;
    const void *norm_w;
    float *y_norm;
    int64_t ldqkv, ldab, Hk, Hv, dk, dv, T;
    float norm_eps;
    int32_t adt, ddt, nwdt;
} qcu_gdn_recurrent_args;
int qcu_gdn_recurrent(void *stream, const void *args);

/* One decode token of a Gated DeltaNet layer: conv1d + SiLU of x [C] (C = 2*Hk*dk + Hv*dv, with
 * conv_state [K-1][C] and conv_w [C][K] of dtype cwdt), the recurrence on S and the gated
 * RMSNorm into y [Hv][dv]: the bits of qcu_conv1d_silu then qcu_gdn_recurrent with y_norm.
 * count: the stream's sync area (Hk counters, zero between kernels). qcu_gdn_decode_fits says
 * which shapes it takes. */
typedef struct {
    unsigned *count;
    float *y, *S, *conv_state;
    const float *x, *a, *b, *z;
    const void *conv_w, *A_log, *dt_bias, *norm_w;
    int64_t Hk, Hv, dk, dv, K;
    float norm_eps;
    int32_t cwdt, adt, ddt, nwdt;
} qcu_gdn_decode_args;
int qcu_gdn_decode(void *stream, const void *args);
int qcu_gdn_decode_fits(int64_t Hk, int64_t Hv, int64_t dk, int64_t dv, int64_t K);

/* Chunked (chunks of 64): work is device scratch of qcu_gdn_chunked_work_bytes(). */
typedef struct {
    float *out;
    const float *qkv, *a, *b;
    const void *A_log, *dt_bias;
    float *S;
    float *work;
    int64_t ldqkv, ldab, Hk, Hv, dk, dv, T;
    int32_t adt, ddt;
} qcu_gdn_chunked_args;
int qcu_gdn_chunked(void *stream, const void *args);
size_t qcu_gdn_chunked_work_bytes(int64_t Hv, int64_t dk, int64_t dv, int64_t T);
/* Dynamic shared memory the chunked kernels need (0 if more than the device allows). */
size_t qcu_gdn_chunked_smem(int64_t dk, int64_t dv);

/* ---- attention (attention.cu) ----------------------------------------------------------------- */

typedef struct {
    const float *k, *v;
    void *const *blocks;  /* device [n_blocks] */
    const int64_t *pos0;  /* device [1] */
    int64_t ldk, ldv, block_tokens, k_off, v_off, T, n_kv_heads, head_dim;
} qcu_kv_store_args;
int qcu_kv_store(void *stream, const void *args);

/* Attention's query and key heads (attn_heads.cu; backend.h, qvlm_op_attn_heads): q [T][Hq*D]
 * = rope(RMSNorm(the query half of qg [T][Hq][2D]) * (1 + q_norm)), k [T][Hkv*D] likewise in
 * place with k_norm, then k and v stored at positions pos0[0].. as qcu_kv_store does. pos
 * [3][T] and inv_freq [rot_dim/2] as qcu_rope_text's. D <= QCU_ATTN_HEADS_MAX_D. */
#define QCU_ATTN_HEADS_MAX_D 1023 /* longer rows: the norm kernel reduces them otherwise */
typedef struct {
    float *q, *k;
    const float *qg, *v;
    const void *q_norm, *k_norm;
    const int32_t *pos;   /* device [3][T] */
    const float *inv_freq;
    void *const *blocks;  /* device [n_blocks] */
    const int64_t *pos0;  /* device [1] */
    int64_t T, Hq, Hkv, D, rot_dim, block_tokens, k_off, v_off;
    float eps;
    int32_t q_wdt, k_wdt, section1, section2, pad;
} qcu_attn_heads_args;
int qcu_attn_heads(void *stream, const void *args);

/* Causal GQA over paged KV. Keys are split into n_splits ranges of keys_per_split (a multiple
 * of 32) when n_splits > 1; partial is then device scratch of
 * qcu_attention_partial_bytes(T * n_heads, n_splits, head_dim). */
typedef struct {
    float *out;
    const float *q;
    void *const *blocks;  /* device [n_blocks] */
    const int64_t *pos0;  /* device [1] */
    float *partial;
    int64_t ldq, n_blocks, block_tokens, k_off, v_off, T, n_heads, n_kv_heads, head_dim, n_splits, keys_per_split;
    float scale;
    int32_t pad;
    /* NULL, or output row r (= t * n_heads + h) is multiplied by sigmoid(gate[r * ldg + d]) */
    const float *gate;
    int64_t ldg;
} qcu_attention_args;
int qcu_attention(void *stream, const void *args);

typedef struct {
    float *out;
    const float *qkv;
    const int64_t *seg; /* device [n_seg + 1] */
    float *partial;
    int64_t n_seg, n_rows, n_heads, head_dim, n_splits, keys_per_split;
    float scale;
    int32_t pad;
} qcu_attention_segments_args;
int qcu_attention_segments(void *stream, const void *args);
size_t qcu_attention_partial_bytes(int64_t n_rows, int64_t n_splits, int64_t head_dim);
/* The key split qcu_attention wants for T queries over up to max_keys keys (text). */
void qcu_attention_plan(int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t max_keys, int n_sm, int64_t *n_splits,
                        int64_t *kps);
/* Largest head_dim the attention kernels take. */
#define QCU_ATTN_MAX_HEAD_DIM 256

/* ---- argmax (argmax.cu) ----------------------------------------------------------------------- */

/* For each of n_rows rows of n floats (row stride n), qcu_argmax_blocks(n) slices of
 * per_block elements (set by the launcher): best[r][b] = the slice's largest non-NaN value and
 * its first index; index -1 when the slice is all NaN, -2 in slice 0 when x[r][0] is NaN.
 * Merging the slices in order with "strictly greater wins" gives qvlm_argmax_scan. */
typedef struct {
    float v;
    int32_t i;
} qcu_argmax_best;
typedef struct {
    const float *x;
    qcu_argmax_best *best; /* device [n_rows][qcu_argmax_blocks(n)] */
    int64_t n_rows, n, per_block;
} qcu_argmax_args;
int qcu_argmax(void *stream, const void *args);
int64_t qcu_argmax_blocks(int64_t n);

/* ---- mixture of experts (moe.cu) ------------------------------------------------------------- */

typedef struct {
    int32_t *idx;  /* device [n_rows][k] */
    float *weight; /* device [n_rows][k] */
    const float *logits;
    int64_t n_rows, n_experts, k;
} qcu_moe_route_args;
int qcu_moe_route(void *stream, const void *args);

/* The routed experts of T <= QCU_GEMV_MAX_ROWS rows (backend.h, qvlm_op_moe_experts), after
 * qcu_moe_route has written idx / weight: h[r*k+j][:] = silu(gate_e x[r]) * up_e x[r] for
 * e = idx[r][j], then acc[r][:] = sum of weight[r][j] * down_e h[r*k+j] over j in ascending
 * e. experts: device [E][3] pointers {gate [I][H], up [I][H], down [H][I]}, gate and up of
 * dtype wdt, down of ddt. vec: every expert pointer, x and h 16-byte aligned and H, I whole
 * 16-byte chunks of their dtypes. round_bf16 as in qcu_gemv_args. */
typedef struct {
    float *acc;                /* [T][H] */
    float *h;                  /* scratch [T*k][I] (see sh_gate) */
    const float *x;            /* [T][H] */
    const int32_t *idx;        /* device [T][k] */
    const float *weight;       /* device [T][k] */
    const void *const *experts;
    int64_t T, k, H, I;
    int32_t wdt, ddt, vec, round_bf16;
    /* The shared expert (qvlm_op_moe_block), or NULL: gate, up [Is][H] of dtype wdt and down
     * [H][Is] of ddt (vec: Is whole 16-byte chunks too); its h rows follow the routed ones in h
     * (scratch [T*k*I + T*Is]). Then out[r][:] = acc[r][:] + sigmoid(sh_logit[r]) * its down
     * product, the product rounded first (qvlm_op_add_gated), and acc is not written. */
    const void *sh_gate, *sh_up, *sh_down;
    const float *sh_logit; /* [T] */
    float *out;            /* [T][H] */
    int64_t Is;
} qcu_moe_experts_args;
int qcu_moe_experts(void *stream, const void *args);

/* The routed experts of many rows as batched products (backend_cuda.c, moe_batched): the
 * rows routed to each active expert sit in `slots` consecutive slots of its batch (padded with
 * zero rows to the largest count).
 * gather: y[s][:] = x[src[s]][:] (or zeros where src[s] < 0), as packed bf16 when to_bf16,
 *         else f32 (exactly), for s < n_slots.
 * combine: acc[r][:] = sum over j of weight[r*k+j] * y[pos[r*k+j]][:], j in the given order
 *         (ascending expert id), each term rounded before it is added: the CPU's
 *         zero-then-scatter_add order. */
typedef struct {
    void *y;
    const float *x;
    const int32_t *src;
    int64_t n_slots, H;
    int32_t to_bf16, pad;
} qcu_moe_gather_args;
int qcu_moe_gather(void *stream, const void *args);
typedef struct {
    float *acc;
    const float *y;
    const int32_t *pos;
    const float *weight;
    int64_t T, k, H;
} qcu_moe_combine_args;
int qcu_moe_combine(void *stream, const void *args);

/* ---- matrix products (gemv.cu, gemm.cu) -------------------------------------------------------- */

/* Few-row products read each weight once: y_m[t][j] = sum_i x[t][i] W_m[j][i] (+ bias) for up
 * to QCU_GEMV_MAX matrices sharing x, t < n <= QCU_GEMV_MAX_ROWS. mode 1 (swiglu): m[0] gate
 * and m[1] up of equal d; y of m[0] gets silu(gate) * up. round_bf16: x rounded to bf16 first. */
#define QCU_GEMV_MAX 4
#define QCU_GEMV_MAX_ROWS 8
typedef struct {
    const void *w;
    float *y;
    const float *bias;
    int64_t d, ldy;
    int32_t wdt, pad;
} qcu_gemv_mat;
typedef struct {
    qcu_gemv_mat m[QCU_GEMV_MAX];
    const float *x;
    int64_t ldx, k, n;
    int32_t n_mats, mode, round_bf16, pad;
} qcu_gemv_args;
int qcu_gemv(void *stream, const void *args);
/* Measurement only: re-read QVLM_CUDA_GEMV_ROWS and QVLM_CUDA_GEMV_SPLITK (gemv.cu). */
void qcu_gemv_knobs(void);

/* y[t][j] = sum_i x[t][i] W[j][i] through cuBLAS (f32: SGEMM, no TF32; bf16: x packed bf16
 * [n][k], W bf16, f32 accumulation and output). handle from qcu_blas_create. */
typedef struct {
    void *handle;
    void *workspace;
    float *y;
    const void *x;
    const void *w;
    int64_t ldy, ldx, n, k, d, workspace_bytes;
    int32_t bf16, pad;
} qcu_gemm_args;
int qcu_gemm(void *stream, const void *args);
/* batch products y_b[t][j] = sum_i x_b[t][i] W_b[j][i] for t < n, j < d (the same shapes,
 * device arrays of pointers w[b], x[b], y[b]; x at stride k, y at stride d), as qcu_gemm. */
typedef struct {
    void *handle;
    void *workspace;
    const void *const *w;
    const void *const *x;
    float *const *y;
    int64_t n, k, d, batch, workspace_bytes;
    int32_t bf16, pad;
} qcu_gemm_batched_args;
int qcu_gemm_batched(void *stream, const void *args);
/* 0 on success; *msg names the failing call otherwise. */
int qcu_blas_create(void **handle, const char **msg);
void qcu_blas_destroy(void *handle);
const char *qcu_blas_name(void);

#ifdef __cplusplus
}
#endif

#endif /* QVLM_KERNELS_CUDA_LAUNCH_H */
