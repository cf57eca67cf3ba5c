// decode_chain_bench.cu - what a chain of dependent decode ops costs on the GPU, five ways:
// (a) one kernel per op in a CUDA graph with programmatic dependent launch (PDL), as qvlm's
// decode steps run; (b) one persistent kernel with a grid barrier between the ops; (c) one
// kernel per op whose weights stream through a shared-memory ring fed by bulk copies, the first
// stages issued before the wait on the kernel before; (d) one persistent kernel whose producer
// warp streams every op's weights through such a ring in step order, across the grid barriers
// its consumer warps wait on; (e) one persistent kernel whose every warp streams its own rows
// through a private ring, across the barriers. Two chains: 200 ops of no work (what a boundary
// costs), and the 96 weight products of a qwen3.5-0.8b decode step (bf16, the real shapes; with
// argument 1 also its 508 MB lm_head), against the bound of their bytes over the measured copy
// bandwidth. (c) and (d) are checked bit for bit against (a), (e) against a float64 sum.
// Not part of the build (docs/cuda.md gives the numbers):
//   nvcc -O3 -arch=sm_90 -std=c++17 -o decode_chain_bench tools/decode_chain_bench.cu
//   ./decode_chain_bench 0; ./decode_chain_bench 1
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstring>
#include <cmath>
#include <vector>
#define CK(x)                                                                                                          \
    do {                                                                                                               \
        cudaError_t e_ = (x);                                                                                          \
        if (e_ != cudaSuccess) {                                                                                       \
            printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));                                          \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ unsigned ld_acq(const unsigned *p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void red_rel(unsigned *p, unsigned v) {
    asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

struct Op {
    const __nv_bfloat16 *w;
    const float *x;
    float *y;
    int m, k, KS;
    long units;
};
struct Ops {
    Op op[128];
    int n;
};

#define WARPS 8
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ void unpack(uint4 v, float *w) {
    const unsigned u[4] = {v.x, v.y, v.z, v.w};
    for (int i = 0; i < 4; i++) {
        w[2 * i] = __uint_as_float(u[i] << 16);
        w[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    }
}
// This lane's part of a row's dot product with x: chunks c0, c0 + step, ... of the row (16-byte
// bf16 chunks), each one's 8 products added in order. (c), (d) and (e) share it, so their sums
// are (a)'s where their lanes take (a)'s chunks.
__device__ __forceinline__ float row_dot(const uint4 *row, const float *x, int c0, int nch, int step) {
    float acc = 0;
    for (int c = c0; c < nch; c += step) {
        const float4 *xp = (const float4 *)x + c * 2;
        const float4 x0 = xp[0], x1 = xp[1];
        const float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
        float w[8];
        unpack(row[c], w);
        for (int e = 0; e < 8; e++)
            acc += w[e] * xv[e];
    }
    return acc;
}
// mode 0: kernel (pdl wait); mode 1: persistent (barrier wait on ctr >= target)
template <int MODE>
__device__ __forceinline__ void gemv_vblock(const Op &a, long vb, float (*red)[2], unsigned *ctr, unsigned target,
                                            bool first) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, KS = a.KS, ul = warp / KS, ks = warp % KS;
    const long unit = vb * (WARPS / KS) + ul;
    const bool uvalid = unit < a.units;
    const long nch = uvalid ? a.k / 8 : 0, step = 32L * KS;
    const char *wr[2];
    bool live[2];
    for (int u = 0; u < 2; u++) {
        long r = unit * 2 + u;
        live[u] = uvalid && r < a.m;
        wr[u] = (const char *)(a.w + (live[u] ? r : 0) * (long)a.k);
    }
    long c = (long)ks * 32 + lane;
    uint4 nx[2];
    for (int u = 0; u < 2; u++) {
        nx[u] = make_uint4(0, 0, 0, 0);
        if (live[u] && c < nch)
            nx[u] = __ldg((const uint4 *)wr[u] + c);
    }
    if (MODE == 0) {
        pdl_wait();
        pdl_trigger();
    } else if (first) {
        if (threadIdx.x == 0)
            while (ld_acq(ctr) < target) {
            }
        __syncthreads();
    }
    float acc[2] = {0, 0};
    for (; c < nch; c += step) {
        uint4 v[2];
        for (int u = 0; u < 2; u++) {
            v[u] = nx[u];
            if (live[u] && c + step < nch)
                nx[u] = __ldg((const uint4 *)wr[u] + c + step);
        }
        const float4 *xp = (const float4 *)a.x + c * 2;
        float4 x0 = xp[0], x1 = xp[1];
        float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
        for (int u = 0; u < 2; u++) {
            float w[8];
            unpack(v[u], w);
            for (int e = 0; e < 8; e++)
                acc[u] += w[e] * xv[e];
        }
    }
    for (int u = 0; u < 2; u++)
        acc[u] = warp_sum(acc[u]);
    if (KS > 1) {
        if (lane == 0) {
            red[warp][0] = acc[0];
            red[warp][1] = acc[1];
        }
        __syncthreads();
        if (ks == 0)
            for (int u = 0; u < 2; u++) {
                float s = red[warp][u];
                for (int j = 1; j < KS; j++)
                    s += red[warp + j][u];
                acc[u] = s;
            }
        __syncthreads();
        if (ks != 0)
            return;
    }
    if (lane == 0)
        for (int u = 0; u < 2; u++)
            if (live[u])
                a.y[unit * 2 + u] = acc[u];
}
__global__ void __launch_bounds__(256) k_gemv(Op a) {
    __shared__ float red[WARPS][2];
    gemv_vblock<0>(a, blockIdx.x, red, nullptr, 0, true);
}
__global__ void __launch_bounds__(256) k_persist(const Ops *ops, unsigned *ctr) {
    __shared__ float red[WARPS][2];
    const int n = ops->n;
    for (int i = 0; i < n; i++) {
        const Op a = ops->op[i];
        const long nvb = (a.units * a.KS + WARPS - 1) / WARPS;
        bool first = true;
        for (long vb = blockIdx.x; vb < nvb; vb += gridDim.x) {
            gemv_vblock<1>(a, vb, red, ctr, (unsigned)i * gridDim.x, first);
            first = false;
        }
        if (first) {
            if (threadIdx.x == 0)
                while (ld_acq(ctr) < (unsigned)i * gridDim.x) {
                }
        } // no work: still keep order
        __syncthreads();
        if (threadIdx.x == 0)
            red_rel(ctr, 1);
    }
}

// (c) one kernel per product, its weights streamed through a shared-memory ring by bulk copies
// (cp.async.bulk into an mbarrier), the first STAGES issued before griddepcontrol.wait so they
// overlap the kernel before. A block takes a contiguous range of rows; a stage holds whole rows.
__device__ __forceinline__ unsigned smem_u32(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(unsigned bar) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void bulk_load(unsigned dst, const void *src, unsigned bytes, unsigned bar) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
                 "l"(src), "r"(bytes), "r"(bar)
                 : "memory");
}
__device__ __forceinline__ void mbar_wait(unsigned bar, unsigned parity) {
    unsigned ok = 0;
    while (!ok)
        asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                     : "=r"(ok)
                     : "r"(bar), "r"(parity)
                     : "memory");
}
struct BulkCfg {
    int stages, stage_bytes, rows_per_block, trig_early;
};
__global__ void __launch_bounds__(256, 1) k_gemv_bulk(Op a, BulkCfg cf) {
    extern __shared__ __align__(128) unsigned char sm[];
    unsigned long long *bars = (unsigned long long *)sm;
    float *red = (float *)(sm + 128);                 // [2][64 rows][8 ks]
    unsigned char *ring = sm + 128 + 2 * 64 * 8 * 4; // stages x stage_bytes
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, KS = a.KS;
    const long rowb = (long)a.k * 2;
    const int SR = (int)(cf.stage_bytes / rowb);
    const long r0 = (long)blockIdx.x * cf.rows_per_block;
    const long r1 = r0 + cf.rows_per_block < a.m ? r0 + cf.rows_per_block : a.m;
    const int nst = r1 > r0 ? (int)((r1 - r0 + SR - 1) / SR) : 0;
    if (threadIdx.x == 0) {
        for (int i = 0; i < cf.stages; i++)
            mbar_init(smem_u32(&bars[i]));
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        for (int s = 0; s < nst && s < cf.stages; s++) {
            const long rs = r0 + (long)s * SR, nr = r1 - rs < SR ? r1 - rs : SR;
            bulk_load(smem_u32(ring + (long)s * cf.stage_bytes), (const char *)a.w + rs * rowb, (unsigned)(nr * rowb),
                      smem_u32(&bars[s]));
        }
    }
    __syncthreads();
    if (cf.trig_early)
        pdl_trigger();
    pdl_wait();
    if (!cf.trig_early)
        pdl_trigger();
    const int nch = a.k / 8;
    for (int s = 0; s < nst; s++) {
        const int slot = s % cf.stages;
        const long rs = r0 + (long)s * SR;
        const int nr = (int)(r1 - rs < SR ? r1 - rs : SR);
        mbar_wait(smem_u32(&bars[slot]), (unsigned)(s / cf.stages) & 1u);
        const uint4 *buf = (const uint4 *)(ring + (long)slot * cf.stage_bytes);
        float *rd = red + (s & 1) * 64 * 8;
        for (int it = warp; it < nr * KS; it += WARPS) {
            const int r = it / KS, ks = it % KS;
            const float acc = warp_sum(row_dot(buf + (long)r * nch, a.x, ks * 32 + lane, nch, 32 * KS));
            if (lane == 0)
                rd[r * 8 + ks] = acc;
        }
        __syncthreads();
        if (threadIdx.x == 0 && s + cf.stages < nst) {
            const long rn = r0 + (long)(s + cf.stages) * SR, nn = r1 - rn < SR ? r1 - rn : SR;
            bulk_load(smem_u32(ring + (long)slot * cf.stage_bytes), (const char *)a.w + rn * rowb,
                      (unsigned)(nn * rowb), smem_u32(&bars[slot]));
        }
        if (threadIdx.x < nr) {
            float v = rd[threadIdx.x * 8];
            for (int j = 1; j < KS; j++)
                v += rd[threadIdx.x * 8 + j];
            a.y[rs + threadIdx.x] = v;
        }
    }
}

// (d) one persistent kernel whose producer warp streams every product's weights, in step order,
// through a shared-memory ring (bulk copies into mbarriers), independently of the grid barriers
// that the 8 consumer warps wait on between products: HBM keeps streaming while they wait.
__device__ __forceinline__ void mbar_init_n(unsigned bar, unsigned n) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(n) : "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void cons_sync() { asm volatile("bar.sync 1, 256;" ::: "memory"); }
// Before product i of a persistent kernel's consumers (threads 0-255): every block has finished
// product i - 1 (the grid barrier), then x goes into shared memory once per block (L2 loads:
// other blocks wrote it in this kernel).
__device__ __forceinline__ void await_product(int i, int nb, unsigned *ctr, const Op &a, float *xs) {
    if (i > 0) {
        if (threadIdx.x == 0)
            while (ld_acq(ctr) < (unsigned)i * nb) {
            }
        cons_sync();
    }
    for (int e = threadIdx.x; e < a.k / 4; e += 256)
        ((float4 *)xs)[e] = __ldcg((const float4 *)a.x + e);
    cons_sync();
}
struct RingCfg {
    int stages, stage_bytes;
};
__global__ void __launch_bounds__(288, 1) k_ring(const Ops *ops, unsigned *ctr, RingCfg cf) {
    extern __shared__ __align__(128) unsigned char sm[];
    unsigned long long *full = (unsigned long long *)sm, *empty = full + 32;
    float *red = (float *)(sm + 512);
    float *xs = (float *)(sm + 512 + 2 * 64 * 8 * 4); // 4096 floats
    unsigned char *ring = sm + 512 + 2 * 64 * 8 * 4 + 16384;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n = ops->n, NS = cf.stages;
    const int nb = gridDim.x;
    if (threadIdx.x == 0) {
        for (int i = 0; i < NS; i++) {
            mbar_init_n(smem_u32(&full[i]), 1);
            mbar_init_n(smem_u32(&empty[i]), 1);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (warp == WARPS) { // producer
        if (lane != 0)
            return;
        long g = 0;
        for (int i = 0; i < n; i++) {
            const Op a = ops->op[i];
            const long rowb = (long)a.k * 2, rpb = (a.m + nb - 1) / nb;
            const int SR = (int)(cf.stage_bytes / rowb);
            const long r0 = (long)blockIdx.x * rpb, r1 = r0 + rpb < a.m ? r0 + rpb : a.m;
            for (long rs = r0; rs < r1; rs += SR, g++) {
                const int slot = (int)(g % NS);
                if (g >= NS)
                    mbar_wait(smem_u32(&empty[slot]), (unsigned)((g / NS - 1) & 1));
                const long nr = r1 - rs < SR ? r1 - rs : SR;
                bulk_load(smem_u32(ring + (long)slot * cf.stage_bytes), (const char *)a.w + rs * rowb,
                          (unsigned)(nr * rowb), smem_u32(&full[slot]));
            }
        }
        return;
    }
    long g = 0;
    for (int i = 0; i < n; i++) {
        const Op a = ops->op[i];
        const long rowb = (long)a.k * 2, rpb = (a.m + nb - 1) / nb;
        const int SR = (int)(cf.stage_bytes / rowb), KS = a.KS, nch = a.k / 8;
        const long r0 = (long)blockIdx.x * rpb, r1 = r0 + rpb < a.m ? r0 + rpb : a.m;
        await_product(i, nb, ctr, a, xs);
        for (long rs = r0; rs < r1; rs += SR, g++) {
            const int slot = (int)(g % NS), nr = (int)(r1 - rs < SR ? r1 - rs : SR);
            mbar_wait(smem_u32(&full[slot]), (unsigned)((g / NS) & 1));
            const uint4 *buf = (const uint4 *)(ring + (long)slot * cf.stage_bytes);
            float *rd = red + (g & 1) * 64 * 8;
            for (int it = warp; it < nr * KS; it += WARPS) {
                const int r = it / KS, ks = it % KS;
                const float acc = warp_sum(row_dot(buf + (long)r * nch, xs, ks * 32 + lane, nch, 32 * KS));
                if (lane == 0)
                    rd[r * 8 + ks] = acc;
            }
            cons_sync();
            if (threadIdx.x == 0)
                mbar_arrive(smem_u32(&empty[slot]));
            if (threadIdx.x < nr) {
                float v = rd[threadIdx.x * 8];
                for (int j = 1; j < KS; j++)
                    v += rd[threadIdx.x * 8 + j];
                a.y[rs + threadIdx.x] = v;
            }
        }
        cons_sync();
        if (threadIdx.x == 0) {
            __threadfence();
            red_rel(ctr, 1);
        }
    }
}

// (e) persistent, every warp streaming its own rows through a private ring of bulk copies, in
// step order across the products: after consuming a stage a warp refills the slot with its next
// stage, which near a product's end is the next product's, so the next rows are in shared memory
// before the grid barrier releases. x is staged in shared memory once per product and block.
#define WR_MAXNS 4
__global__ void __launch_bounds__(256, 1) k_warp_ring(const Ops *ops, unsigned *ctr, int NS, int SB) {
    extern __shared__ __align__(128) unsigned char sm[];
    unsigned long long *bars = (unsigned long long *)sm; // [8][WR_MAXNS]
    float *xs = (float *)(sm + 512);                     // 4096 floats
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n = ops->n, nb = gridDim.x;
    const long NWT = (long)nb * WARPS, gw = (long)blockIdx.x * WARPS + warp;
    unsigned char *ring = sm + 512 + 16384 + (size_t)warp * NS * SB;
    unsigned long long *wb = bars + warp * WR_MAXNS;
    if (lane == 0) {
        for (int i = 0; i < NS; i++)
            mbar_init(smem_u32(&wb[i]));
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncwarp();
    // the producer's cursor: product po, stage ps of this warp's rows in it
    int po = 0;
    long ps = 0, gp = 0;
    auto produce = [&]() { // lane 0 only: issue the next stage of the stream, if any
        while (po < n) {
            const Op &a = ops->op[po];
            const long rowb = (long)a.k * 2, rpw = (a.m + NWT - 1) / NWT, SR = SB / rowb;
            const long r0 = gw * rpw, r1 = r0 + rpw < a.m ? r0 + rpw : a.m;
            const long rs = r0 + ps * SR;
            if (rs >= r1) {
                po++, ps = 0;
                continue;
            }
            const long nr = r1 - rs < SR ? r1 - rs : SR;
            const int slot = (int)(gp % NS);
            bulk_load(smem_u32(ring + (size_t)slot * SB), (const char *)a.w + rs * rowb, (unsigned)(nr * rowb),
                      smem_u32(&wb[slot]));
            ps++, gp++;
            return;
        }
    };
    if (lane == 0)
        for (int i = 0; i < NS; i++)
            produce();
    long gc = 0;
    for (int i = 0; i < n; i++) {
        const Op a = ops->op[i];
        const long rowb = (long)a.k * 2, rpw = (a.m + NWT - 1) / NWT, SR = SB / rowb;
        const long r0 = gw * rpw, r1 = r0 + rpw < a.m ? r0 + rpw : a.m;
        const int nch = a.k / 8;
        await_product(i, nb, ctr, a, xs);
        for (long rs = r0; rs < r1; rs += SR, gc++) {
            const int slot = (int)(gc % NS), nr = (int)(r1 - rs < SR ? r1 - rs : SR);
            mbar_wait(smem_u32(&wb[slot]), (unsigned)((gc / NS) & 1));
            const uint4 *buf = (const uint4 *)(ring + (size_t)slot * SB);
            for (int r = 0; r < nr; r++) {
                const float acc = warp_sum(row_dot(buf + (long)r * nch, xs, lane, nch, 32));
                if (lane == 0)
                    a.y[rs + r] = acc;
            }
            __syncwarp();
            if (lane == 0)
                produce();
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            __threadfence();
            red_rel(ctr, 1);
        }
    }
}
// tiny chain
__global__ void k_tiny(float *b, int i) {
    pdl_wait();
    pdl_trigger();
    if (threadIdx.x == 0)
        b[(blockIdx.x + 1) % gridDim.x + (i & 1) * 4096] = b[blockIdx.x + ((i + 1) & 1) * 4096] + 1.0f;
}
__global__ void k_tiny_persist(float *b, int n, unsigned *ctr) {
    for (int i = 0; i < n; i++) {
        if (threadIdx.x == 0) {
            while (ld_acq(ctr) < (unsigned)i * gridDim.x) {
            }
            b[(blockIdx.x + 1) % gridDim.x + (i & 1) * 4096] = b[blockIdx.x + ((i + 1) & 1) * 4096] + 1.0f;
        }
        __syncthreads();
        if (threadIdx.x == 0)
            red_rel(ctr, 1);
    }
}

/* A launch with programmatic dependent launch allowed, as qvlm's kernels are launched. */
template <typename... KA, typename... A>
static void launch_pdl(void (*k)(KA...), dim3 g, dim3 b, size_t smem, cudaStream_t s, A... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = g;
    cfg.blockDim = b;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    CK(cudaLaunchKernelEx(&cfg, k, ((KA)args)...));
}
static float time_graph(cudaGraphExec_t ge, cudaStream_t s, int reps) {
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    for (int i = 0; i < 3; i++)
        CK(cudaGraphLaunch(ge, s));
    CK(cudaEventRecord(a, s));
    for (int i = 0; i < reps; i++)
        CK(cudaGraphLaunch(ge, s));
    CK(cudaEventRecord(b, s));
    CK(cudaEventSynchronize(b));
    float ms;
    cudaEventElapsedTime(&ms, a, b);
    return ms * 1000.f / reps;
}

// The split over k of gemv.cu for a product of `units` pairs of rows.
static int split_k(long units, int k, int nsm) {
    int KS = 1;
    while (KS < WARPS && units * KS < (long)nsm * 16 && k / 8 >= 64L * KS)
        KS *= 2;
    return KS;
}
// The chain's products over the weights W, each reading the activation the one before wrote.
struct Sh {
    int m, k;
};
static Ops chain(const std::vector<Sh> &shapes, const __nv_bfloat16 *W, float *act, int nsm) {
    Ops h = {};
    h.n = (int)shapes.size();
    size_t off = 0;
    for (int i = 0; i < h.n; i++) {
        Op &o = h.op[i];
        o.m = shapes[i].m;
        o.k = shapes[i].k;
        o.w = W + off;
        off += (size_t)o.m * o.k;
        o.x = act + (i & 1) * 300000;
        o.y = act + ((i + 1) & 1) * 300000;
        o.units = (o.m + 1) / 2;
        o.KS = split_k(o.units, o.k, nsm);
    }
    return h;
}
int main(int argc, char **argv) {
    int dev = 0;
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, dev));
    const int nsm = p.multiProcessorCount;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("%s, %d SMs\n", p.name, nsm);
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    unsigned *ctr;
    CK(cudaMalloc(&ctr, 4));
    float *tb;
    CK(cudaMalloc(&tb, 8192 * 4));
    CK(cudaMemset(tb, 0, 8192 * 4));
    // --- tiny chain, 200 ops
    for (int bps = 1; bps <= 4; bps *= 2) {
        const int N = 200;
        dim3 g(nsm * bps);
        {
            int occ = 0;
            CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k_tiny_persist, 256, 0));
            if (occ < bps)
                continue;
        }
        cudaGraph_t gr;
        cudaGraphExec_t ge;
        CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        for (int i = 0; i < N; i++)
            launch_pdl(k_tiny, g, dim3(256), 0, s, tb, i);
        CK(cudaStreamEndCapture(s, &gr));
        CK(cudaGraphInstantiate(&ge, gr, 0));
        float t1 = time_graph(ge, s, 50);
        CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        CK(cudaMemsetAsync(ctr, 0, 4, s));
        k_tiny_persist<<<g, 256, 0, s>>>(tb, N, ctr);
        CK(cudaStreamEndCapture(s, &gr));
        CK(cudaGraphInstantiate(&ge, gr, 0));
        float t2 = time_graph(ge, s, 50);
        printf("tiny chain of %d, %d blocks: graph+PDL %.1f us (%.2f us/op), persistent %.1f us (%.2f us/op)\n", N, g.x,
               t1, t1 / N, t2, t2 / N);
    }
    // --- 0.8B GEMV chain
    std::vector<Sh> shapes;
    for (int l = 0; l < 24; l++) {
        shapes.push_back({8224, 1024});
        shapes.push_back({1024, 2048});
        shapes.push_back({7168, 1024});
        shapes.push_back({1024, 3584});
    }
    const bool lm = argc > 1 && atoi(argv[1]);
    if (lm)
        shapes.push_back({248320, 1024});
    size_t wtot = 0;
    for (auto &x : shapes)
        wtot += (size_t)x.m * x.k;
    __nv_bfloat16 *W;
    CK(cudaMalloc(&W, wtot * 2));
    CK(cudaMemset(W, 0, wtot * 2));
    float *act;
    CK(cudaMalloc(&act, 2 * 300000 * 4));
    CK(cudaMemset(act, 0, 2 * 300000 * 4));
    // copy bandwidth
    {
        void *a, *b;
        size_t n = (size_t)1 << 30;
        CK(cudaMalloc(&a, n));
        CK(cudaMalloc(&b, n));
        cudaEvent_t e0, e1;
        cudaEventCreate(&e0);
        cudaEventCreate(&e1);
        for (int i = 0; i < 2; i++)
            CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, s));
        cudaEventRecord(e0, s);
        for (int i = 0; i < 10; i++)
            CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, s));
        cudaEventRecord(e1, s);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        double bw = 2.0 * n * 10 / (ms * 1e-3);
        printf("copy bandwidth %.0f GB/s; weights %.1f MB, bound %.1f us\n", bw / 1e9, wtot * 2 / 1e6,
               wtot * 2 / bw * 1e6);
        cudaFree(a);
        cudaFree(b);
    }
    for (int bps = 2; bps <= 8; bps *= 2) {
        const int nblk = nsm * bps;
        int occ = 0;
        CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k_persist, 256, 0));
        if (occ < bps) {
            printf("persistent %d blocks/SM: only %d fit, skipped\n", bps, occ);
            continue;
        }
        Ops h = chain(shapes, W, act, nsm);
        Ops *d;
        CK(cudaMalloc(&d, sizeof(Ops)));
        CK(cudaMemcpy(d, &h, sizeof(Ops), cudaMemcpyHostToDevice));
        cudaGraph_t gr;
        cudaGraphExec_t ge;
        float t1 = 0;
        if (bps == 2) {
            CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
            for (int i = 0; i < h.n; i++)
                launch_pdl(k_gemv, dim3((unsigned)((h.op[i].units * h.op[i].KS + WARPS - 1) / WARPS)), dim3(256), 0, s,
                           h.op[i]);
            CK(cudaStreamEndCapture(s, &gr));
            CK(cudaGraphInstantiate(&ge, gr, 0));
            t1 = time_graph(ge, s, 20);
            printf("GEMV chain (%d ops%s): kernels in graph+PDL %.1f us\n", h.n, lm ? " + lm_head" : "", t1);
        }
        CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        CK(cudaMemsetAsync(ctr, 0, 4, s));
        k_persist<<<nblk, 256, 0, s>>>(d, ctr);
        CK(cudaStreamEndCapture(s, &gr));
        CK(cudaGraphInstantiate(&ge, gr, 0));
        float t2 = time_graph(ge, s, 20);
        printf("GEMV chain: persistent %d blocks/SM: %.1f us\n", bps, t2);
    }

    // --- (c) bulk-copy ring kernels, several configurations
    {
        int cfgs[][4] = {{4, 16384, 1, 1}, {4, 16384, 1, 0}, {6, 16384, 1, 1}, {3, 32768, 1, 1},
                         {2, 16384, 2, 1}, {3, 16384, 2, 1}, {8, 8192, 1, 1}, {2, 32768, 2, 1}};
        CK(cudaFuncSetAttribute(k_gemv_bulk, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
        for (auto &c : cfgs) {
            const int stages = c[0], sb = c[1], bps = c[2];
            const size_t smem = 128 + 2 * 64 * 8 * 4 + (size_t)stages * sb;
            cudaGraph_t gr;
            cudaGraphExec_t ge;
            CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
            const Ops h = chain(shapes, W, act, nsm);
            for (int i = 0; i < h.n; i++) {
                const Op &o = h.op[i];
                long nb = (long)nsm * bps;
                long rpb = (o.m + nb - 1) / nb;
                nb = (o.m + rpb - 1) / rpb;
                BulkCfg cf = {stages, sb, (int)rpb, c[3]};
                launch_pdl(k_gemv_bulk, dim3((unsigned)nb), dim3(256), smem, s, o, cf);
            }
            CK(cudaStreamEndCapture(s, &gr));
            CK(cudaGraphInstantiate(&ge, gr, 0));
            float t = time_graph(ge, s, 20);
            printf("GEMV chain: bulk ring %d x %d KB, %d blocks/SM, trigger %s: %.1f us\n", stages, sb / 1024, bps,
                   c[3] ? "early" : "after wait", t);
        }
    }
    // correctness of the bulk kernel on one product against the plain one
    {
        const int m = 1024, k = 3584;
        std::vector<__nv_bfloat16> hw((size_t)m * k);
        std::vector<float> hx(k);
        for (size_t i = 0; i < hw.size(); i++)
            hw[i] = __float2bfloat16((float)((i * 2654435761u) % 1000) / 1000.f - 0.5f);
        for (int i = 0; i < k; i++)
            hx[i] = (float)((i * 40503u) % 1000) / 1000.f - 0.5f;
        __nv_bfloat16 *dw;
        float *dx, *dy1, *dy2;
        CK(cudaMalloc(&dw, hw.size() * 2));
        CK(cudaMalloc(&dx, k * 4));
        CK(cudaMalloc(&dy1, m * 4));
        CK(cudaMalloc(&dy2, m * 4));
        CK(cudaMemcpy(dw, hw.data(), hw.size() * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dx, hx.data(), k * 4, cudaMemcpyHostToDevice));
        Op o = {dw, dx, dy1, m, k, split_k((m + 1) / 2, k, nsm), (m + 1) / 2};
        k_gemv<<<(unsigned)((o.units * o.KS + WARPS - 1) / WARPS), 256>>>(o);
        Op o2 = o;
        o2.y = dy2;
        long rpb = (m + nsm - 1) / nsm;
        BulkCfg cf = {4, 16384, (int)rpb, 1};
        k_gemv_bulk<<<(unsigned)((m + rpb - 1) / rpb), 256, 128 + 2 * 64 * 8 * 4 + 4 * 16384>>>(o2, cf);
        CK(cudaDeviceSynchronize());
        std::vector<float> y1(m), y2(m);
        CK(cudaMemcpy(y1.data(), dy1, m * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(y2.data(), dy2, m * 4, cudaMemcpyDeviceToHost));
        int diff = 0;
        for (int i = 0; i < m; i++)
            diff += memcmp(&y1[i], &y2[i], 4) != 0;
        printf("bulk vs plain: %d of %d rows differ (KS %d)\n", diff, m, o.KS);
    }

    // --- (d) persistent kernel with a producer-fed ring
    {
        Ops h = chain(shapes, W, act, nsm);
        Ops *d;
        CK(cudaMalloc(&d, sizeof(Ops)));
        CK(cudaMemcpy(d, &h, sizeof(Ops), cudaMemcpyHostToDevice));
        CK(cudaFuncSetAttribute(k_ring, cudaFuncAttributeMaxDynamicSharedMemorySize, 220 * 1024));
        int rc[][2] = {{4, 16384}, {8, 16384}, {11, 16384}, {5, 32768}, {22, 8192}};
        for (auto &c : rc) {
            const size_t smem = 512 + 2 * 64 * 8 * 4 + 16384 + (size_t)c[0] * c[1];
            RingCfg cf = {c[0], c[1]};
            cudaGraph_t gr;
            cudaGraphExec_t ge;
            CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
            CK(cudaMemsetAsync(ctr, 0, 4, s));
            k_ring<<<nsm, 288, smem, s>>>(d, ctr, cf);
            CK(cudaStreamEndCapture(s, &gr));
            CK(cudaGraphInstantiate(&ge, gr, 0));
            float t = time_graph(ge, s, 20);
            printf("GEMV chain: persistent, producer ring %d x %d KB: %.1f us\n", c[0], c[1] / 1024, t);
        }
        // correctness: the chain's final output against the kernel-per-op chain, on random data
        std::vector<__nv_bfloat16> hw(wtot);
        for (size_t i = 0, o = 0; o < shapes.size(); o++) { // uniform, variance 1/k: values stay O(1)
            const float a = sqrtf(3.f / shapes[o].k);
            for (size_t e = 0; e < (size_t)shapes[o].m * shapes[o].k; e++, i++)
                hw[i] = __float2bfloat16(a * ((float)((i * 2654435761u) % 1000) / 500.f - 1.f));
        }
        CK(cudaMemcpy(W, hw.data(), wtot * 2, cudaMemcpyHostToDevice));
        std::vector<float> hx(300000);
        for (int i = 0; i < 300000; i++)
            hx[i] = (float)((i * 40503u) % 1000) / 1000.f - 0.5f;
        std::vector<float> out[2];
        for (int v = 0; v < 2; v++) {
            CK(cudaMemcpy(act, hx.data(), 300000 * 4, cudaMemcpyHostToDevice));
            if (v == 0) {
                for (int i = 0; i < h.n; i++)
                    k_gemv<<<(unsigned)((h.op[i].units * h.op[i].KS + WARPS - 1) / WARPS), 256>>>(h.op[i]);
            } else {
                CK(cudaMemset(ctr, 0, 4));
                RingCfg cf = {8, 16384};
                k_ring<<<nsm, 288, 512 + 2 * 64 * 8 * 4 + 16384 + 8 * 16384>>>(d, ctr, cf);
            }
            CK(cudaDeviceSynchronize());
            out[v].resize(h.op[h.n - 1].m);
            CK(cudaMemcpy(out[v].data(), h.op[h.n - 1].y, out[v].size() * 4, cudaMemcpyDeviceToHost));
        }
        int diff = 0;
        for (size_t i = 0; i < out[0].size(); i++)
            diff += memcmp(&out[0][i], &out[1][i], 4) != 0;
        printf("ring vs kernels, final output: %d of %zu differ (e.g. %g %g)\n", diff, out[0].size(), out[0][0],
               out[1][0]);
    // --- (e) persistent, a ring per warp
    {
        Ops h = chain(shapes, W, act, nsm);
        for (int i = 0; i < h.n; i++)
            h.op[i].KS = 1; // (e): a warp per row
        Ops *d;
        CK(cudaMalloc(&d, sizeof(Ops)));
        CK(cudaMemcpy(d, &h, sizeof(Ops), cudaMemcpyHostToDevice));
        CK(cudaFuncSetAttribute(k_warp_ring, cudaFuncAttributeMaxDynamicSharedMemorySize, 220 * 1024));
        int rc[][2] = {{3, 8192}, {2, 8192}, {1, 8192}}; // a stage holds a whole row (7 KB at most)
        for (auto &c : rc) {
            const size_t smem = 512 + 16384 + (size_t)WARPS * c[0] * c[1];
            cudaGraph_t gr;
            cudaGraphExec_t ge;
            CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
            CK(cudaMemsetAsync(ctr, 0, 4, s));
            k_warp_ring<<<nsm, 256, smem, s>>>(d, ctr, c[0], c[1]);
            CK(cudaStreamEndCapture(s, &gr));
            CK(cudaGraphInstantiate(&ge, gr, 0));
            float t = time_graph(ge, s, 20);
            printf("GEMV chain: persistent, a ring per warp %d x %d KB: %.1f us\n", c[0], c[1] / 1024, t);
        }
        // one product against a float64 sum on the host
        CK(cudaMemcpy(act, hx.data(), 300000 * 4, cudaMemcpyHostToDevice));
        CK(cudaMemset(ctr, 0, 4));
        Ops h1 = h;
        h1.n = 1;
        CK(cudaMemcpy(d, &h1, sizeof(Ops), cudaMemcpyHostToDevice));
        k_warp_ring<<<nsm, 256, 512 + 16384 + WARPS * 3 * 8192>>>(d, ctr, 3, 8192);
        CK(cudaDeviceSynchronize());
        const int m = h.op[0].m, k = h.op[0].k;
        std::vector<float> y(m);
        CK(cudaMemcpy(y.data(), h.op[0].y, m * 4, cudaMemcpyDeviceToHost));
        double worst = 0;
        for (int r = 0; r < m; r++) {
            double ref = 0, mag = 0;
            for (int j = 0; j < k; j++) {
                const double p = (double)__bfloat162float(hw[(size_t)r * k + j]) * hx[j];
                ref += p, mag += fabs(p);
            }
            worst = fmax(worst, fabs(y[r] - ref) / (mag + 1e-30));
        }
        printf("ring per warp, first product: worst |y - exact| / sum|terms| = %.2e (%d rows)\n", worst, m);
    }
    }
    CK(cudaDeviceSynchronize());
    return 0;
}
