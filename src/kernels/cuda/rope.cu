/* rope.cu - rotary embeddings in place (kernels/cpu/rope.c is the reference). The inverse
 * frequencies come from the host, computed by the same C code as the CPU's, so both backends
 * rotate by the same angles; cos and sin are taken in f32 per element. */
#include "kernels/cuda/cuda_common.cuh"

/* Text M-RoPE (mrope_axis picks each frequency's position axis); one block per token. */
__global__ void k_rope_text(float *x, const int32_t *pos, const float *inv, int64_t ldx, int64_t n_heads, int64_t hs,
                            int64_t T, int64_t half, int s1, int s2) {
    QCU_PDL_ENTRY();
    const int64_t t = blockIdx.x;
    for (int64_t w = threadIdx.x; w < n_heads * half; w += blockDim.x) {
        const int64_t h = w / half, i = w % half;
        rotate_pair(x + t * ldx + h * hs, i, half, (float)pos[mrope_axis(i, s1, s2) * T + t] * inv[i]);
    }
}

/* Vision 2-D RoPE over the whole head: the first half of the frequencies follow the row,
 * the second half the column; one block per patch. */
__global__ void k_rope_vision(float *x, const int32_t *rc, const float *inv, int64_t ldx, int64_t n_heads, int64_t hs,
                              int64_t half) {
    QCU_PDL_ENTRY();
    const int64_t r = blockIdx.x, quarter = half / 2;
    for (int64_t w = threadIdx.x; w < n_heads * half; w += blockDim.x) {
        const int64_t h = w / half, i = w % half;
        rotate_pair(x + r * ldx + h * hs, i, half, (float)rc[r * 2 + (i < quarter ? 0 : 1)] * inv[i % quarter]);
    }
}

extern "C" int qcu_rope_text(void *st, const void *p) {
    const qcu_rope_text_args *a = (const qcu_rope_text_args *)p;
    const int64_t half = a->rot_dim / 2;
    if (a->T > 0 && half > 0)
        QVLM_LAUNCH(k_rope_text, (unsigned)a->T, 128, 0, st, a->x, a->pos, a->inv_freq, a->ldx, a->n_heads, a->head_stride,
                    a->T, half, a->section1, a->section2);
    QCU_DONE();
}

extern "C" int qcu_rope_vision(void *st, const void *p) {
    const qcu_rope_vision_args *a = (const qcu_rope_vision_args *)p;
    if (a->N > 0 && a->head_dim >= 4)
        QVLM_LAUNCH(k_rope_vision, (unsigned)a->N, 128, 0, st, a->x, a->rc, a->inv_freq, a->ldx, a->n_heads, a->head_stride,
                    a->head_dim / 2);
    QCU_DONE();
}
