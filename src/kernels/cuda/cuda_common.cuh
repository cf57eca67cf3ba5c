/* cuda_common.cuh - what every kernel file shares: the launch macro (real CUDA or the CPU
 * emulator), bf16/f16 conversions that match core/dtype.h bit for bit, weight-vector reads of
 * any float dtype, and warp/block reductions. Kernels handle bf16 as raw uint16_t so they
 * need no cuda_bf16.h and compile unchanged under the emulator. */
#ifndef QVLM_KERNELS_CUDA_COMMON_CUH
#define QVLM_KERNELS_CUDA_COMMON_CUH

#include <stdint.h>
#include <string.h>

#ifdef QVLM_CUDA_EMU
#include "kernels/cuda/emu/emu_device.h"
#define QVLM_LAUNCH(k, g, b, smem, st, ...) emu_launch((g), (b), (smem), (cudaStream_t)(st), k, __VA_ARGS__)
static inline void pdl_wait() {}
static inline void pdl_trigger() {}
#else
#include <cuda_runtime.h>
#define QVLM_DYN_SMEM(type, name) extern __shared__ __align__(16) unsigned char qvlm_dyn_smem_[]; type *name = (type *)qvlm_dyn_smem_

/* Programmatic dependent launch (sm_90): a kernel may be scheduled while the one before it in
 * the stream is finishing, so launch latency and a GEMV's first weight loads overlap the
 * previous kernel. Every kernel therefore starts with pdl_wait() (the previous kernel has
 * completed and its writes are visible) before it reads or writes anything another kernel
 * touches; only reads of weights may come first. pdl_trigger() lets the next kernel be
 * scheduled. Set by qcu_init; both are no-ops where the launch did not ask for it. */
extern int qcu_pdl;
template <typename... KA, typename... A>
static inline void qcu_launch_kernel(void (*k)(KA...), dim3 g, dim3 b, size_t smem, cudaStream_t st, A... args) {
    cudaLaunchConfig_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.gridDim = g, cfg.blockDim = b, cfg.dynamicSmemBytes = smem, cfg.stream = st;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = qcu_pdl ? 1 : 0;
    cudaLaunchKernelEx(&cfg, k, ((KA)args)...);
}
#define QVLM_LAUNCH(k, g, b, smem, st, ...) qcu_launch_kernel(k, dim3(g), dim3(b), (smem), (cudaStream_t)(st), __VA_ARGS__)
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
#endif
#define QCU_PDL_ENTRY() \
    do {                \
        pdl_wait();     \
        pdl_trigger();  \
    } while (0)

#include "kernels/cuda/launch.h"

/* Per-file attribute set-up, called by qcu_init (attention.cu). */
extern "C" int qcu_gdn_init(size_t smem_optin);
extern "C" int qcu_attn_init(size_t smem_optin);
extern "C" int qcu_gemv_init(size_t smem_optin, int n_sm);

/* Launchers end with this: the launch's own error (bad configuration), as an int. */
#define QCU_DONE() return (int)cudaGetLastError()

static inline unsigned qcu_blocks(int64_t n, int per) { return n > 0 ? (unsigned)((n + per - 1) / per) : 1u; }

/* ---- scalar conversions (same results as core/dtype.h) ------------------------------------- */

__device__ __forceinline__ float bf16_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

__device__ __forceinline__ uint16_t f32_to_bf16(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

__device__ __forceinline__ float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

__device__ __forceinline__ float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else {
            int e = -1;
            do {
                man <<= 1;
                e++;
            } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    return __uint_as_float(u);
}

/* Element i of a weight vector or table of dtype dt (QCU_F32 / QCU_F16 / QCU_BF16). */
__device__ __forceinline__ float wload(const void *p, int dt, int64_t i) {
    if (dt == QCU_BF16) return bf16_to_f32(((const uint16_t *)p)[i]);
    if (dt == QCU_F16) return f16_to_f32(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

/* ---- 16-byte weight chunks and the BF16 precision mode (gemv.cu, moe.cu) ------------------- */

template <int WDT>
struct wtraits {
    static const int per16 = WDT == QCU_F32 ? 4 : 8; /* elements per 16-byte load */
    static const int esize = WDT == QCU_F32 ? 4 : 2;
};

template <int WDT>
__device__ __forceinline__ void unpack(const uint4 &v, float *w) {
    if (WDT == QCU_F32) {
        w[0] = __uint_as_float(v.x), w[1] = __uint_as_float(v.y), w[2] = __uint_as_float(v.z), w[3] = __uint_as_float(v.w);
    } else {
        const unsigned u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if (WDT == QCU_BF16) {
                w[2 * i] = __uint_as_float(u[i] << 16);
                w[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
            } else {
                w[2 * i] = f16_to_f32((uint16_t)(u[i] & 0xffffu));
                w[2 * i + 1] = f16_to_f32((uint16_t)(u[i] >> 16));
            }
        }
    }
}

/* BF16 precision: activations meet the weights rounded to bf16 (kernels/cpu/ref_matmul.c). */
__device__ __forceinline__ float xval(float v, int round) { return round ? round_bf16(v) : v; }

/* BF16 precision rounds non-bf16 weights to bf16 too (kernels/cpu/ref_matmul.c). */
template <int WDT>
__device__ __forceinline__ float wval(float v, int round) { return WDT != QCU_BF16 && round ? round_bf16(v) : v; }

/* ---- reductions ----------------------------------------------------------------------------- */

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
 * result. `red` is __shared__ float[32]. */
__device__ __forceinline__ float block_sum(float v, float *red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* red may still be read by a previous call */
    if (lane == 0) red[w] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : 0.0f;
    return warp_sum(t);
}

__device__ __forceinline__ float silu_f(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }
/* x * sigmoid(g), the product rounded on its own (never fused into an add that follows): the
 * value of qvlm_op_sigmoid_mul, which its fused forms (the attention output gate, add_gated,
 * the MoE shared expert) reproduce bit for bit. */
__device__ __forceinline__ float sigmoid_gate(float x, float g) { return __fmul_rn(x, sigmoid_f(g)); }

/* ---- rotary embeddings (rope.cu, attn_heads.cu) -------------------------------------------- */

/* Text M-RoPE: frequency i follows the H axis (1) if i%3==1 && i<3*s1, W (2) if i%3==2 &&
 * i<3*s2, else T (0). */
__device__ __forceinline__ int mrope_axis(int64_t i, int s1, int s2) {
    return (i % 3 == 1 && i < 3 * (int64_t)s1) ? 1 : (i % 3 == 2 && i < 3 * (int64_t)s2) ? 2 : 0;
}

/* Rotate the pair (xr[i], xr[i + half]) by ang; cos and sin in f32. */
__device__ __forceinline__ void rotate_pair(float *xr, int64_t i, int64_t half, float ang) {
    const float c = cosf(ang), s = sinf(ang);
    const float a = xr[i], b = xr[i + half];
    xr[i] = a * c - b * s;
    xr[i + half] = b * c + a * s;
}

#endif /* QVLM_KERNELS_CUDA_COMMON_CUH */
