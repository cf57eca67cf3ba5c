/* attn_heads.cu - gated attention's query and key heads in one launch (backend.h,
 * qvlm_op_attn_heads): per head the RMSNorm, the M-RoPE rotation and, for key heads, the store
 * of k and v into the KV blocks. A decode step did this in five launches of a few microseconds
 * each for a few kilobytes of work.
 *
 * The values are those of the separate kernels bit for bit: the norm's sum is norm.cu's warp
 * reduction for rows under 1024 values (lane l adds x[l], x[l+32], ... in order, then the warp
 * tree), the scaling the same expression, the rotation the same rotate_pair and mrope_axis as
 * rope.cu with the same angle, and the store a copy. */
#include "kernels/cuda/cuda_common.cuh"

/* One block per (token, head): heads 0..Hq-1 are queries, Hq.. keys. The norm's weights are read
 * before the wait (see norm.cu's k_rms_row4), up to HEAD_W per thread. */
#define HEAD_T 128 /* threads a block */
#define HEAD_W 8   /* HEAD_T x HEAD_W > QCU_ATTN_HEADS_MAX_D */
__global__ void k_attn_heads(qcu_attn_heads_args a) {
    QVLM_DYN_SMEM(float, xr); /* [D] the normalised head, rotated in place */
    __shared__ float inv_s;
    const int64_t t = blockIdx.x, hh = blockIdx.y, D = a.D, half = a.rot_dim / 2;
    const bool is_q = hh < a.Hq;
    const int64_t h = is_q ? hh : hh - a.Hq;
    const float *x = is_q ? a.qg + t * a.Hq * 2 * D + h * 2 * D : a.k + t * a.Hkv * D + h * D;
    const void *w = is_q ? a.q_norm : a.k_norm;
    const int wdt = is_q ? a.q_wdt : a.k_wdt;
    float w1[HEAD_W]; /* 1 + w of values threadIdx.x + j * HEAD_T, as the scaling adds them */
#pragma unroll
    for (int j = 0; j < HEAD_W; j++) {
        const int c = (int)threadIdx.x + j * HEAD_T;
        w1[j] = c < D ? 1.0f + wload(w, wdt, c) : 0.0f;
    }
    QCU_PDL_ENTRY();
    if (threadIdx.x < 32) { /* norm.cu's k_rms<4>: one warp per row */
        float ss = 0.0f;
        for (int64_t c = threadIdx.x; c < D; c += 32) {
            const float v = x[c];
            ss += v * v;
        }
        ss = warp_sum(ss);
        if (threadIdx.x == 0) inv_s = 1.0f / sqrtf(ss / (float)D + a.eps);
    }
    __syncthreads();
    const float inv = inv_s;
#pragma unroll
    for (int j = 0; j < HEAD_W; j++) {
        const int c = (int)threadIdx.x + j * HEAD_T;
        if (c < D) xr[c] = (x[c] * inv) * w1[j];
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) /* rope.cu's k_rope_text */
        rotate_pair(xr, i, half, (float)a.pos[mrope_axis(i, a.section1, a.section2) * a.T + t] * a.inv_freq[i]);
    __syncthreads();
    if (is_q) {
        float *q = a.q + t * a.Hq * D + h * D;
        for (int64_t c = threadIdx.x; c < D; c += blockDim.x) q[c] = xr[c];
        return;
    }
    /* attention.cu's k_kv_store */
    const int64_t p = a.pos0[0] + t, b = p / a.block_tokens, o = p % a.block_tokens;
    char *blk = (char *)a.blocks[b];
    float *K = (float *)(blk + a.k_off) + (h * a.block_tokens + o) * D;
    float *V = (float *)(blk + a.v_off) + (h * a.block_tokens + o) * D;
    float *k = a.k + t * a.Hkv * D + h * D;
    const float *v = a.v + t * a.Hkv * D + h * D;
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
        k[c] = xr[c];
        K[c] = xr[c];
        V[c] = v[c];
    }
}

extern "C" int qcu_attn_heads(void *st, const void *p) {
    const qcu_attn_heads_args *a = (const qcu_attn_heads_args *)p;
    if (a->T <= 0) return 0;
    if (a->D > QCU_ATTN_HEADS_MAX_D || a->rot_dim > a->D || a->rot_dim < 0) return 1;
    QVLM_LAUNCH(k_attn_heads, dim3((unsigned)a->T, (unsigned)(a->Hq + a->Hkv)), HEAD_T, (size_t)a->D * sizeof(float), st, *a);
    QCU_DONE();
}
