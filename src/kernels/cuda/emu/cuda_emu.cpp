/* cuda_emu.cpp - the CUDA emulator's runtime and fiber scheduler (see emu_runtime.h and
 * emu_device.h). Single device; device memory is host memory filled with 0xff (NaN as floats)
 * when allocated, so reads of memory nothing wrote show up in the results. */
#include <sys/mman.h>
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#include "kernels/cuda/emu/emu_device.h"

/* ==== fibers ==================================================================================== */

namespace emu {

enum { F_RUN, F_BAR_BLOCK, F_BAR_WARP, F_DONE };

struct fiber {
    ucontext_t ctx;
    uint3 tid;
    unsigned lin;
    int state;
};

struct block_ctx {
    uint3 bid;
    fiber *th;
    unsigned n;
    ucontext_t sched;
    unsigned long long xchg[1024];
    const std::function<void()> *body;
    void *smem;
};

thread_local fiber *cur;
thread_local block_ctx *cur_block;
thread_local dim3 grid_dim, block_dim;

static const size_t STACK_BYTES = 256 * 1024;
static thread_local char *stacks;
static thread_local size_t stacks_n;
static thread_local std::vector<fiber> *fibers;
static thread_local std::vector<unsigned char> *smem_buf;
static long n_launches;
static std::mutex mu;
static thread_local cudaError_t last_error = cudaSuccess;

const uint3 &thread_idx() { return cur->tid; }
const uint3 &block_idx() { return cur_block->bid; }
unsigned lane() { return cur->lin & 31u; }
void *dyn_smem() { return cur_block->smem; }

void sync_block() {
    cur->state = F_BAR_BLOCK;
    swapcontext(&cur->ctx, &cur_block->sched);
}

void sync_warp() {
    cur->state = F_BAR_WARP;
    swapcontext(&cur->ctx, &cur_block->sched);
}

unsigned long long warp_exchange(unsigned long long v, unsigned src) {
    block_ctx *b = cur_block;
    unsigned base = cur->lin & ~31u;
    b->xchg[cur->lin] = v;
    sync_warp();
    unsigned long long r = base + src < b->n ? b->xchg[base + src] : 0;
    sync_warp();
    return r;
}

static void trampoline() {
    (*cur_block->body)();
    cur->state = F_DONE;
    /* returning resumes uc_link = the scheduler */
}

static void run_block(block_ctx &b) {
    for (unsigned i = 0; i < b.n; i++) {
        fiber &f = b.th[i];
        f.lin = i;
        f.tid = {i % block_dim.x, (i / block_dim.x) % block_dim.y, i / (block_dim.x * block_dim.y)};
        f.state = F_RUN;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = stacks + (size_t)i * STACK_BYTES;
        f.ctx.uc_stack.ss_size = STACK_BYTES;
        f.ctx.uc_link = &b.sched;
        makecontext(&f.ctx, trampoline, 0);
    }
    for (;;) {
        for (unsigned i = 0; i < b.n; i++)
            if (b.th[i].state == F_RUN) {
                cur = &b.th[i];
                swapcontext(&b.sched, &b.th[i].ctx);
            }
        bool released = false;
        unsigned live_all = 0, at_block = 0;
        for (unsigned w = 0; w * 32 < b.n; w++) {
            unsigned live = 0, at_warp = 0;
            for (unsigned i = w * 32; i < b.n && i < w * 32 + 32; i++) {
                live += b.th[i].state != F_DONE;
                at_warp += b.th[i].state == F_BAR_WARP;
                at_block += b.th[i].state == F_BAR_BLOCK;
            }
            live_all += live;
            if (live && at_warp == live) {
                for (unsigned i = w * 32; i < b.n && i < w * 32 + 32; i++) b.th[i].state = F_RUN;
                released = true;
            }
        }
        if (live_all == 0) return;
        if (released) continue;
        if (at_block == live_all) {
            for (unsigned i = 0; i < b.n; i++)
                if (b.th[i].state == F_BAR_BLOCK) b.th[i].state = F_RUN;
            continue;
        }
        fprintf(stderr, "cuda emu: deadlock in block (%u,%u,%u): threads diverge across barriers\n", b.bid.x, b.bid.y,
                b.bid.z);
        abort();
    }
}

static void run_grid(dim3 g, dim3 bd, size_t smem, const std::function<void()> &body) {
    unsigned n = bd.x * bd.y * bd.z;
    if ((size_t)n > stacks_n) {
        if (stacks) munmap(stacks, stacks_n * STACK_BYTES);
        stacks = (char *)mmap(NULL, (size_t)n * STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                              -1, 0);
        if (stacks == MAP_FAILED) {
            fprintf(stderr, "cuda emu: cannot map fiber stacks\n");
            abort();
        }
        stacks_n = n;
    }
    if (!fibers) fibers = new std::vector<fiber>();
    if (!smem_buf) smem_buf = new std::vector<unsigned char>();
    fibers->resize(n);
    smem_buf->assign(smem + 16, 0xff);
    /* Save the launcher's state: a graph replay may run inside another thread's launch. */
    dim3 sg = grid_dim, sb = block_dim;
    block_ctx *sblk = cur_block;
    fiber *scur = cur;
    grid_dim = g;
    block_dim = bd;
    block_ctx *b = new block_ctx();
    b->th = fibers->data();
    b->n = n;
    b->body = &body;
    b->smem = (void *)(((uintptr_t)smem_buf->data() + 15) & ~(uintptr_t)15);
    cur_block = b;
    /* QVLM_EMU_BLOCK_ORDER=reverse runs the blocks last to first. A kernel whose blocks read
     * what other blocks of the same launch write (a race on a GPU, where the blocks run
     * together) gives other results in one order or the other. */
    const char *ord = getenv("QVLM_EMU_BLOCK_ORDER");
    const bool rev = ord && strcmp(ord, "reverse") == 0;
    const unsigned long nblk = (unsigned long)g.x * g.y * g.z;
    for (unsigned long i = 0; i < nblk; i++) {
        const unsigned long j = rev ? nblk - 1 - i : i;
        b->bid = {(unsigned)(j % g.x), (unsigned)(j / g.x % g.y), (unsigned)(j / ((unsigned long)g.x * g.y))};
        std::memset(smem_buf->data(), 0xff, smem_buf->size());
        run_block(*b);
    }
    delete b;
    grid_dim = sg, block_dim = sb, cur_block = sblk, cur = scur;
}

}  // namespace emu

/* ==== streams, events, graphs ================================================================= */

struct emu_stream {
    bool capturing;
    std::vector<std::function<void()>> ops;
};
struct emu_event {
    int dummy;
};
struct emu_graph {
    std::vector<std::function<void()>> ops;
};

static void submit(cudaStream_t s, std::function<void()> fn) {
    if (s && s->capturing) s->ops.push_back(std::move(fn));
    else fn();
}

void emu::launch(dim3 g, dim3 b, size_t smem, cudaStream_t st, std::function<void()> body) {
    unsigned n = b.x * b.y * b.z;
    if (n == 0 || n > 1024 || g.x == 0 || g.y == 0 || g.z == 0 || g.y > 65535 || g.z > 65535 || smem > 227 * 1024) {
        fprintf(stderr, "cuda emu: bad launch configuration grid (%u,%u,%u) block (%u,%u,%u) smem %zu\n", g.x, g.y, g.z,
                b.x, b.y, b.z, smem);
        last_error = cudaErrorInvalidConfiguration;
        return;
    }
    {
        std::lock_guard<std::mutex> l(mu);
        n_launches++;
    }
    submit(st, [g, b, smem, body]() { run_grid(g, b, smem, body); });
}

/* ==== memory ================================================================================= */

static std::map<uintptr_t, size_t> dev_allocs, host_allocs;
static int fail_after = -1, fail_n = 0;

static bool find(const std::map<uintptr_t, size_t> &m, const void *p) {
    auto it = m.upper_bound((uintptr_t)p);
    if (it == m.begin()) return false;
    --it;
    return (uintptr_t)p < it->first + (it->second ? it->second : 1);
}

extern "C" {

void emu_fail_mallocs(int after, int n_fail) {
    std::lock_guard<std::mutex> l(emu::mu);
    fail_after = after;
    fail_n = n_fail;
}
long emu_launch_count(void) {
    std::lock_guard<std::mutex> l(emu::mu);
    return emu::n_launches;
}

cudaError_t cudaGetDeviceCount(int *count) {
    const char *e = getenv("QVLM_EMU_NO_DEVICE");
    *count = e && *e == '1' ? 0 : 1;
    return *count ? cudaSuccess : cudaErrorNoDevice;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device) {
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "CUDA emulator");
    p->totalGlobalMem = (size_t)16 << 30;
    /* QVLM_EMU_SMS: another multiprocessor count, to run the launch shapes a real card gets. */
    const char *sms = getenv("QVLM_EMU_SMS");
    p->multiProcessorCount = sms && atoi(sms) > 0 ? atoi(sms) : 4;
    p->sharedMemPerBlockOptin = 227 * 1024;
    p->l2CacheSize = 1 << 20;
    p->major = 9;
    p->minor = 0;
    return device == 0 ? cudaSuccess : cudaErrorInvalidValue;
}
cudaError_t cudaMemGetInfo(size_t *f, size_t *t) {
    *f = (size_t)8 << 30;
    *t = (size_t)16 << 30;
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t n) {
    std::lock_guard<std::mutex> l(emu::mu);
    *p = NULL;
    if (fail_after == 0 && fail_n > 0) {
        fail_n--;
        return cudaErrorMemoryAllocation;
    }
    if (fail_after > 0) fail_after--;
    void *q = aligned_alloc(256, (n + 255) & ~(size_t)255);
    if (!q) return cudaErrorMemoryAllocation;
    memset(q, 0xff, n);
    dev_allocs[(uintptr_t)q] = n;
    *p = q;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    std::lock_guard<std::mutex> l(emu::mu);
    if (!p) return cudaSuccess;
    auto it = dev_allocs.find((uintptr_t)p);
    if (it == dev_allocs.end()) return cudaErrorInvalidDevicePointer;
    dev_allocs.erase(it);
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t n) {
    std::lock_guard<std::mutex> l(emu::mu);
    void *q = aligned_alloc(256, (n + 255) & ~(size_t)255);
    if (!q) return cudaErrorMemoryAllocation;
    host_allocs[(uintptr_t)q] = n;
    *p = q;
    return cudaSuccess;
}
cudaError_t cudaFreeHost(void *p) {
    std::lock_guard<std::mutex> l(emu::mu);
    if (!p) return cudaSuccess;
    host_allocs.erase((uintptr_t)p);
    free(p);
    return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *a, const void *p) {
    std::lock_guard<std::mutex> l(emu::mu);
    memset(a, 0, sizeof(*a));
    if (find(dev_allocs, p)) a->type = cudaMemoryTypeDevice, a->devicePointer = (void *)p;
    else if (find(host_allocs, p)) a->type = cudaMemoryTypeHost, a->hostPointer = (void *)p;
    else a->type = cudaMemoryTypeUnregistered, a->hostPointer = (void *)p;
    return cudaSuccess;
}

/* Device-side pointers of a copy must lie inside a device allocation: catches host pointers
 * handed to device ops, the commonest backend bug. */
static cudaError_t check_kind(void *dst, const void *src, size_t n, enum cudaMemcpyKind k) {
    if (n == 0) return cudaSuccess;
    std::lock_guard<std::mutex> l(emu::mu);
    bool dd = k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice;
    bool sd = k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice;
    if ((dd && (!find(dev_allocs, dst) || !find(dev_allocs, (const char *)dst + n - 1))) ||
        (sd && (!find(dev_allocs, src) || !find(dev_allocs, (const char *)src + n - 1)))) {
        fprintf(stderr, "cuda emu: memcpy kind %d with a pointer outside device memory (%p <- %p, %zu bytes)\n", (int)k,
                dst, src, n);
        return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind k) {
    cudaError_t e = check_kind(dst, src, n, k);
    if (!e && n) memcpy(dst, src, n);
    return e;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind k, cudaStream_t s) {
    cudaError_t e = check_kind(dst, src, n, k);
    if (!e && n) submit(s, [dst, src, n]() { memcpy(dst, src, n); });
    return e;
}
cudaError_t cudaMemsetAsync(void *dst, int v, size_t n, cudaStream_t s) {
    cudaError_t e = check_kind(dst, dst, n, cudaMemcpyDeviceToDevice);
    if (!e && n) submit(s, [dst, v, n]() { memset(dst, v, n); });
    return e;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
    *s = new emu_stream();
    (*s)->capturing = false;
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) { return s && s->capturing ? cudaErrorStreamCaptureInvalidated : cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags) { return cudaSuccess; }
cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode) {
    if (!s || s->capturing) return cudaErrorInvalidValue;
    s->capturing = true;
    s->ops.clear();
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g) {
    if (!s || !s->capturing) return cudaErrorInvalidValue;
    s->capturing = false;
    *g = new emu_graph();
    (*g)->ops.swap(s->ops);
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) {
    *e = new emu_event();
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t e) { return cudaSuccess; }
cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = 0;
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags) {
    *x = new emu_graph();
    (*x)->ops = g->ops;
    return cudaSuccess;
}
cudaError_t cudaGraphExecUpdate(cudaGraphExec_t x, cudaGraph_t g, cudaGraphExecUpdateResultInfo *info) {
    if (x->ops.size() != g->ops.size()) return cudaErrorInvalidValue; /* like a topology change */
    x->ops = g->ops;
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s) {
    for (auto &op : x->ops) submit(s, op);
    return cudaSuccess;
}
cudaError_t cudaGraphGetNodes(cudaGraph_t g, void **nodes, size_t *n) {
    (void)nodes;
    *n = g->ops.size();
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    delete g;
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x) {
    delete x;
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaGetLastError(void) {
    cudaError_t e = emu::last_error;
    emu::last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return emu::last_error; }
const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorStreamCaptureInvalidated: return "operation not permitted when stream is capturing";
    default: return "unknown error";
    }
}
const char *cudaGetErrorName(cudaError_t e) { return cudaGetErrorString(e); }

}  /* extern "C" */
