/* emu_device.h - the device side of the CUDA emulator (see emu_runtime.h): what a .cu file
 * compiled as plain C++ needs. Each thread block runs as blockDim fibers (ucontext) on the
 * calling thread, one block after another; __syncthreads is a barrier over the block's live
 * fibers, shuffles and __syncwarp over the warp's. __shared__ becomes `static`, which is
 * shared by the fibers of a block because blocks run one at a time. A kernel that diverges
 * across a barrier (some threads at a warp barrier, others at a block one) is reported and
 * aborts: on a GPU it would be undefined too. */
#ifndef QVLM_CUDA_EMU_DEVICE_H
#define QVLM_CUDA_EMU_DEVICE_H

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>

#include "kernels/cuda/emu/emu_runtime.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __shared__ static

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned x, y;
};
struct alignas(16) int4 {
    int x, y, z, w;
};

namespace emu {
struct fiber;
struct block_ctx;
extern thread_local fiber *cur;
extern thread_local block_ctx *cur_block;
extern thread_local dim3 grid_dim, block_dim;
const uint3 &thread_idx();
const uint3 &block_idx();
void sync_block();
void sync_warp();
unsigned lane();
/* A warp-wide exchange: every live thread of the warp deposits v, then reads slot `src`. */
unsigned long long warp_exchange(unsigned long long v, unsigned src);
void *dyn_smem();
void launch(dim3 g, dim3 b, size_t smem, cudaStream_t st, std::function<void()> body);
}  // namespace emu

#define threadIdx (emu::thread_idx())
#define blockIdx (emu::block_idx())
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
#define warpSize 32

static inline void __syncthreads() { emu::sync_block(); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    (void)mask;
    emu::sync_warp();
}
static inline void __threadfence() {}
static inline void __threadfence_block() {}

template <class T>
static inline T emu_shfl_from(T v, unsigned src) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    unsigned long long u = 0;
    std::memcpy(&u, &v, sizeof(T));
    u = emu::warp_exchange(u, src);
    T r;
    std::memcpy(&r, &u, sizeof(T));
    return r;
}
template <class T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    (void)mask;
    unsigned l = emu::lane();
    unsigned src = (l & ~(unsigned)(width - 1)) | ((l ^ (unsigned)lane_mask) & (unsigned)(width - 1));
    return emu_shfl_from(v, src);
}
template <class T>
static inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    (void)mask;
    unsigned l = emu::lane();
    unsigned src = (l & ~(unsigned)(width - 1)) | ((unsigned)src_lane & (unsigned)(width - 1));
    return emu_shfl_from(v, src);
}
template <class T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    (void)mask;
    unsigned l = emu::lane(), base = l & ~(unsigned)(width - 1), off = l - base;
    unsigned src = off + delta < (unsigned)width ? l + delta : l;
    return emu_shfl_from(v, src);
}

static inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
static inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
static inline float __int_as_float(int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
static inline int __float_as_int(float f) {
    int u;
    std::memcpy(&u, &f, 4);
    return u;
}
static inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
static inline float __fdividef(float a, float b) { return a / b; }
/* A product rounded on its own, never contracted into an FMA (volatile: GCC contracts across
 * inlining in GNU modes). */
static inline float __fmul_rn(float a, float b) {
    volatile float p = a * b;
    return p;
}
template <class T>
static inline T __ldg(const T *p) {
    return *p;
}
template <class T>
static inline T __ldcg(const T *p) {
    return *p;
}
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

static inline float atomicAdd(float *p, float v) {
    float o = *p;
    *p = o + v;
    return o;
}
static inline int atomicAdd(int *p, int v) {
    int o = *p;
    *p = o + v;
    return o;
}
static inline unsigned atomicAdd(unsigned *p, unsigned v) {
    unsigned o = *p;
    *p = o + v;
    return o;
}
static inline unsigned atomicInc(unsigned *p, unsigned lim) {
    unsigned o = *p;
    *p = o >= lim ? 0 : o + 1;
    return o;
}
static inline int atomicExch(int *p, int v) {
    int o = *p;
    *p = v;
    return o;
}

/* cudaFuncSetAttribute for a kernel: accepted and ignored (the emulator has no limit below
 * its own 227 KiB check). */
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
template <class F>
static inline cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) {
    return cudaSuccess;
}

/* kernel<<<g, b, smem, stream>>>(args...) */
template <typename... KA, typename... A>
static inline void emu_launch(dim3 g, dim3 b, size_t smem, cudaStream_t st, void (*k)(KA...), A... args) {
    std::tuple<KA...> params(static_cast<KA>(args)...);
    emu::launch(g, b, smem, st, [k, params]() { std::apply(k, params); });
}

#define QVLM_DYN_SMEM(type, name) type *name = (type *)emu::dyn_smem()

#endif /* QVLM_CUDA_EMU_DEVICE_H */
