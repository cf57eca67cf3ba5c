/* norm.cu - RMSNorm (plain, fused with the residual add, gated) and LayerNorm
 * (kernels/cpu/norm.c is the reference: mean of squares in f32, then (x * rsqrt) * w in that
 * order; LayerNorm's mean and variance in f64). Rows of fewer than 1024 values are reduced by
 * one warp, longer rows by a block of 256 threads. */
#include "kernels/cuda/cuda_common.cuh"

/* ==== kernels ==================================================================================== */

/* RPB rows per block: 4 (a warp each, 128 threads) or 1 (the whole block).
 * delta != NULL: x += delta first (x rows at stride ldx, written back).
 * z != NULL: the gated form, y *= silu(z) (z rows at stride dim). */
template <int RPB>
__global__ void k_rms(float *y, int64_t ldy, float *x, int64_t ldx, const float *delta, const float *z, const void *w,
                      int wdt, float off, float eps, int64_t n_rows, int64_t dim) {
    QCU_PDL_ENTRY();
    __shared__ float red[32];
    int64_t r;
    int tid, nt;
    if (RPB == 1) {
        r = blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
    } else {
        r = (int64_t)blockIdx.x * RPB + (threadIdx.x >> 5), tid = threadIdx.x & 31, nt = 32;
    }
    if (r >= n_rows) return; /* uniform per warp (RPB > 1) or per block (RPB == 1) */
    float *xr = x + r * ldx;
    float ss = 0.0f;
    for (int64_t c = tid; c < dim; c += nt) {
        float v = xr[c];
        if (delta) {
            v += delta[r * dim + c];
            xr[c] = v;
        }
        ss += v * v;
    }
    ss = RPB == 1 ? block_sum(ss, red) : warp_sum(ss);
    const float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int64_t c = tid; c < dim; c += nt) {
        float v = (xr[c] * inv) * (off + wload(w, wdt, c));
        if (z) {
            float g = z[r * dim + c];
            v = v * silu_f(g);
        }
        y[r * ldy + c] = v;
    }
}

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ double block_sum_d(double v, double *red) {
    const int lane = threadIdx.x & 31, wi = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) red[wi] = v;
    __syncthreads();
    double t = lane < nw ? red[lane] : 0.0;
    return warp_sum_d(t);
}

__global__ void k_layer_norm(float *y, const float *x, const void *w, int wdt, const void *b, int bdt, float eps,
                             int64_t dim) {
    QCU_PDL_ENTRY();
    __shared__ double red[32];
    const int64_t r = blockIdx.x;
    const float *xr = x + r * dim;
    double s = 0;
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) s += xr[c];
    s = block_sum_d(s, red);
    const float mean = (float)(s / (double)dim);
    double v = 0;
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) v += (double)(xr[c] - mean) * (xr[c] - mean);
    v = block_sum_d(v, red);
    const float inv = 1.0f / sqrtf((float)(v / (double)dim) + eps);
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x)
        y[r * dim + c] = (xr[c] - mean) * inv * wload(w, wdt, c) + wload(b, bdt, c);
}

/* ==== launchers ================================================================================== */

/* One row of up to 4096 values (a decode token), 1024 threads, each holding a float4 of the
 * row in registers between the reduction and the scaling. The weights are read before the wait:
 * in a decode step they come from memory (the products in between evict them from L2), and read
 * after the reduction, as the generic kernel does, that was one more memory round trip. */
__global__ void __launch_bounds__(1024) k_rms_row4(float *y, float *x, const float *delta, const void *w, int wdt,
                                                   float off, float eps, int dim) {
    __shared__ float red[32];
    const int c = threadIdx.x * 4;
    float wo[4] = {0.0f, 0.0f, 0.0f, 0.0f}; /* off + w, as the scaling below adds them */
    if (c < dim)
#pragma unroll
        for (int i = 0; i < 4; i++) wo[i] = off + wload(w, wdt, c + i);
    QCU_PDL_ENTRY();
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (c < dim) {
        v = *(const float4 *)(x + c);
        if (delta) {
            const float4 d = *(const float4 *)(delta + c);
            v.x += d.x, v.y += d.y, v.z += d.z, v.w += d.w;
            *(float4 *)(x + c) = v;
        }
    }
    const float ss = block_sum(v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w, red);
    const float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    if (c < dim) {
        float4 o;
        o.x = (v.x * inv) * wo[0];
        o.y = (v.y * inv) * wo[1];
        o.z = (v.z * inv) * wo[2];
        o.w = (v.w * inv) * wo[3];
        *(float4 *)(y + c) = o;
    }
}

static int rms_launch(void *st, float *y, int64_t ldy, float *x, int64_t ldx, const float *delta, const float *z,
                      const void *w, int wdt, float off, float eps, int64_t n_rows, int64_t dim) {
    if (n_rows <= 0) return 0;
    const bool al = (((uintptr_t)x | (uintptr_t)y | (uintptr_t)delta) & 15) == 0;
    if (n_rows == 1 && !z && dim >= 1024 && dim <= 4096 && dim % 4 == 0 && al) {
        QVLM_LAUNCH(k_rms_row4, 1, (unsigned)((dim / 4 + 31) / 32 * 32), 0, st, y, x, delta, w, wdt, off, eps, (int)dim);
        QCU_DONE();
    }
    if (dim >= 1024) {
        for (int64_t r0 = 0; r0 < n_rows; r0 += 1 << 30) {
            int64_t n = n_rows - r0 < (1 << 30) ? n_rows - r0 : (1 << 30);
            QVLM_LAUNCH(k_rms<1>, (unsigned)n, 256, 0, st, y + r0 * ldy, ldy, x + r0 * ldx, ldx,
                        delta ? delta + r0 * dim : delta, z ? z + r0 * dim : z, w, wdt, off, eps, n, dim);
        }
    } else {
        QVLM_LAUNCH(k_rms<4>, qcu_blocks(n_rows, 4), 128, 0, st, y, ldy, x, ldx, delta, z, w, wdt, off, eps, n_rows, dim);
    }
    QCU_DONE();
}

extern "C" int qcu_rms_norm(void *st, const void *p) {
    const qcu_rms_norm_args *a = (const qcu_rms_norm_args *)p;
    return rms_launch(st, a->y, a->ldy, (float *)a->x, a->ldx, NULL, NULL, a->w, a->wdt, a->w_offset, a->eps, a->n_rows,
                      a->dim);
}

extern "C" int qcu_add_rms_norm(void *st, const void *p) {
    const qcu_add_rms_norm_args *a = (const qcu_add_rms_norm_args *)p;
    return rms_launch(st, a->xn, a->dim, a->x, a->dim, a->delta, NULL, a->w, a->wdt, a->w_offset, a->eps, a->n_rows,
                      a->dim);
}

extern "C" int qcu_gated_rms_norm(void *st, const void *p) {
    const qcu_gated_rms_norm_args *a = (const qcu_gated_rms_norm_args *)p;
    return rms_launch(st, a->y, a->dim, (float *)a->x, a->dim, NULL, a->z, a->w, a->wdt, 0.0f, a->eps, a->n_rows, a->dim);
}

extern "C" int qcu_layer_norm(void *st, const void *p) {
    const qcu_layer_norm_args *a = (const qcu_layer_norm_args *)p;
    for (int64_t r0 = 0; r0 < a->n_rows; r0 += 1 << 30) {
        int64_t n = a->n_rows - r0 < (1 << 30) ? a->n_rows - r0 : (1 << 30);
        QVLM_LAUNCH(k_layer_norm, (unsigned)n, 128, 0, st, a->y + r0 * a->dim, a->x + r0 * a->dim, a->w, a->wdt, a->b,
                    a->bdt, a->eps, a->dim);
    }
    QCU_DONE();
}
