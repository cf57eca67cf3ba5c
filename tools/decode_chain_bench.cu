// decode_chain_bench.cu - what a chain of dependent decode ops costs on the GPU, two ways:
// (a) one kernel per op in a CUDA graph with programmatic dependent launch (PDL), as qvlm's
// decode steps run, and (b) one persistent kernel with a grid barrier between the ops (the
// other way to build a decode step). Two chains: 200 ops of no work (what a boundary costs), and
// the 96 weight products of a qwen3.5-0.8b decode step (bf16, the real shapes; with argument 1
// also its 508 MB lm_head), against the bound of their bytes over the measured copy bandwidth.
// Not part of the build (docs/cuda.md gives the numbers):
//   nvcc -O3 -arch=sm_90 -std=c++17 -o decode_chain_bench tools/decode_chain_bench.cu
//   ./decode_chain_bench 0; ./decode_chain_bench 1
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
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
static void launch_pdl(void (*k)(KA...), dim3 g, dim3 b, cudaStream_t s, A... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = g;
    cfg.blockDim = b;
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

int main(int argc, char **argv) {
    int dev = 0;
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, dev));
    const int nsm = p.multiProcessorCount;
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
            launch_pdl(k_tiny, g, dim3(256), s, tb, i);
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
    struct Sh {
        int m, k;
    };
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
            int KS = 1;
            const long chunks = o.k / 8;
            while (KS < WARPS && o.units * KS < (long)nsm * 16 && chunks >= 64L * KS)
                KS *= 2;
            o.KS = KS;
        }
        Ops *d;
        CK(cudaMalloc(&d, sizeof(Ops)));
        CK(cudaMemcpy(d, &h, sizeof(Ops), cudaMemcpyHostToDevice));
        cudaGraph_t gr;
        cudaGraphExec_t ge;
        float t1 = 0;
        if (bps == 2) {
            CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
            for (int i = 0; i < h.n; i++)
                launch_pdl(k_gemv, dim3((unsigned)((h.op[i].units * h.op[i].KS + WARPS - 1) / WARPS)), dim3(256), s,
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
    CK(cudaDeviceSynchronize());
    return 0;
}
