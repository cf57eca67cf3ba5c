/* backend_cuda.c - the CUDA backend: device memory, streams, and the ops table
 * (kernels/backend_impl.h) filled with the launchers of the kernel files (kernels/cuda/ *.cu).
 *
 * Invariants:
 *  - Every op is one or more "commands" {launcher, args}: run at once, or, between
 *    step_begin and step_end, recorded. A recorded decode step that matches the previous one
 *    byte for byte replays its CUDA graph; otherwise the commands are captured into a new graph
 *    (cudaGraphExecUpdate when the topology allows). Host arrays (ids, positions, pos0, the KV
 *    block table) are "staged": copied into pinned memory and from there to device memory; in a
 *    recorded step they sit at fixed offsets of the step buffer, which the graph's first node
 *    copies, so new positions need no new graph.
 *  - Work is ordered across streams in the order the host enqueues it: when a stream enqueues
 *    after another one did, it first waits for an event recorded on that one. KV blocks,
 *    snapshots and image features made by one session and read by another (or by the cache's
 *    disk writer) are therefore complete when read. Sessions do not overlap on the device.
 *  - Ops return nothing: the first failure is kept on the stream (qvlm_stream_status) and
 *    later ops are skipped. Every CUDA call goes through QVLM_CU, which names the call and line.
 *  - Weights are uploaded once; in F32 precision (and for non-bf16 weights in BF16 precision)
 *    products of many rows use an f32 copy of the weight made on first use (SGEMM), products of
 *    few rows read the stored dtype and widen it exactly (gemv.cu).
 */
#include <math.h>
#include <pthread.h>
#include <time.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/threads.h"
#include "kernels/backend_impl.h"
#include "kernels/cuda/cuda_rt.h"
#include "kernels/cuda/launch.h"

#define RING_BYTES ((size_t)8 << 20)  /* staging of host arrays, op by op */
#define STEP_BYTES ((size_t)1 << 20)  /* staging of a recorded step */
#define DL_BYTES ((size_t)8 << 20)    /* pinned bounce buffer for downloads */
#define BLAS_WS_BYTES ((size_t)32 << 20)
#define STAGE_ALIGN 256
#define MAX_HALF 256 /* rotary frequencies a rotation may have */

/* ==== errors ======================================================================================= */

static qvlm_status cu_status(cudaError_t e, const char *what, int line, qvlm_error *err) {
    if (e == cudaSuccess) return QVLM_OK;
    return qvlm_errorf(err, e == cudaErrorMemoryAllocation ? QVLM_E_NOMEM : QVLM_E_INTERNAL,
                       "cuda: %s (backend_cuda.c:%d): %s", what, line, cudaGetErrorString(e));
}
/* Evaluates to a qvlm_status; records the call's text and line in err on failure. */
#define QVLM_CU(err, call) cu_status((call), #call, __LINE__, (err))

/* ==== a small map from device pointers to sizes ========================================================== */

typedef struct ptr_map {
    uintptr_t *keys; /* 0 empty, 1 deleted */
    uint64_t *vals;
    size_t cap, used;
} ptr_map;

static size_t pm_slot(const ptr_map *m, uintptr_t k) {
    uint64_t h = (uint64_t)k * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 20) & (m->cap - 1);
}

static bool pm_grow(ptr_map *m) {
    ptr_map n = {calloc(m->cap ? m->cap * 2 : 1024, sizeof(uintptr_t)), calloc(m->cap ? m->cap * 2 : 1024, sizeof(uint64_t)),
                 m->cap ? m->cap * 2 : 1024, 0};
    if (!n.keys || !n.vals) {
        free(n.keys), free(n.vals);
        return false;
    }
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i] > 1) {
            size_t j = pm_slot(&n, m->keys[i]);
            while (n.keys[j]) j = (j + 1) & (n.cap - 1);
            n.keys[j] = m->keys[i], n.vals[j] = m->vals[i], n.used++;
        }
    free(m->keys), free(m->vals);
    *m = n;
    return true;
}

static bool pm_put(ptr_map *m, uintptr_t k, uint64_t v) {
    if ((m->used + 1) * 2 > m->cap && !pm_grow(m)) return false;
    size_t j = pm_slot(m, k);
    while (m->keys[j] > 1 && m->keys[j] != k) j = (j + 1) & (m->cap - 1);
    if (m->keys[j] <= 1) m->used++;
    m->keys[j] = k, m->vals[j] = v;
    return true;
}

static bool pm_take(ptr_map *m, uintptr_t k, uint64_t *v) {
    if (!m->cap) return false;
    size_t j = pm_slot(m, k);
    while (m->keys[j]) {
        if (m->keys[j] == k) {
            if (v) *v = m->vals[j];
            m->keys[j] = 1;
            return true;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return false;
}

static bool pm_get(const ptr_map *m, uintptr_t k, uint64_t *v) {
    if (!m->cap) return false;
    size_t j = pm_slot(m, k);
    while (m->keys[j]) {
        if (m->keys[j] == k) {
            *v = m->vals[j];
            return true;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return false;
}

/* The value of cuda_backend.moe for experts the device kernels do not take (mixed dtypes or
 * shapes, unaligned data): such layers run the default. */
#define MOE_NO_TABLE 1u

/* ==== device and stream structs ======================================================================== */

typedef struct cuda_stream cuda_stream;

typedef struct cuda_backend {
    struct qvlm_backend base;
    qvlm_pool *pool;
    char name[400];
    int n_sm;
    size_t smem_optin;
    bool graphs, sync_each, stats, profile, pdl, moe_batched, moe_shared, gdn_fused;
    pthread_mutex_t mu;           /* allocs, weights, f32 copies, stats, the stream order */
    ptr_map allocs;               /* qvlm_backend_alloc: ptr -> bytes */
    ptr_map weights;              /* weight data -> bytes */
    ptr_map f32;                  /* weight data -> its f32 copy */
    ptr_map moe;                  /* first expert's gate data -> device expert table (moe_table) */
    size_t mem_current, mem_peak;
    /* Freed device blocks kept for reuse (see cu_alloc): sessions, KV blocks and cache
     * checkpoints come and go every turn in a few recurring sizes, and cudaMalloc/cudaFree cost
     * tens to hundreds of microseconds each, cudaFree also a device-wide synchronisation. */
    struct free_block { void *p; size_t n; } *free_blocks;
    size_t n_free, cap_free, free_bytes;
    _Atomic(cuda_stream *) last;  /* the stream that enqueued last */
} cuda_backend;

struct cuda_stream {
    struct qvlm_stream base;
    cuda_backend *be;
    cudaStream_t cs;  /* where ops run */
    cudaStream_t cap; /* where a step is captured */
    cudaEvent_t ev_order, ev_step;
    void *blas;
    void *blas_ws;
    uint8_t *h_ring, *d_ring;
    size_t ring_off;
    uint8_t *h_step, *d_step;
    size_t step_off;
    uint8_t *h_dl;
    void *sync; /* QCU_SYNC_BYTES, zero between kernels */
    void *scratch;
    size_t scratch_bytes;
    void **grave; /* scratch buffers replaced while recording, freed after the step */
    int n_grave, cap_grave;
    qvlm_status status;
    qvlm_error err;
    /* recording */
    bool recording, step_pending;
    uint8_t *cmd;
    size_t cmd_len, cmd_cap;
    uint8_t *g_cmd; /* the commands the graph holds */
    size_t g_cmd_len, g_cmd_cap, g_step_used, g_nodes;
    cudaGraphExec_t gexec;
    long n_captures, n_replays;
    cudaEvent_t ev_g0, ev_g1; /* QVLM_CUDA_STATS: GPU time of replayed steps */
    bool timing;
    double replay_ms;
    long n_timed;
    double host_rec_us, host_end_us, host_dl_us; /* QVLM_CUDA_STATS: host time per step */
    double t_begin;
    long n_dl;
    /* QVLM_CUDA_PROFILE: GPU time per launcher, each op timed alone (slow; for analysis) */
    cudaEvent_t ev_a, ev_b;
    struct prof_entry {
        const char *name;
        long n;
        double ms;
    } prof[64];
    int n_prof;
    /* The last rotation's inverse frequencies (stage_inv_freq): every attention layer of every
     * decode step asks for the same table. */
    double inv_theta;
    int64_t inv_dim; /* 0: none yet */
    int inv_bf16;
    float inv[MAX_HALF];
};

static cuda_stream *cs_of(qvlm_stream *s) { return (cuda_stream *)s; }

static void fail(cuda_stream *s, qvlm_status rc, const qvlm_error *e) {
    if (rc && !s->status) {
        s->status = rc;
        s->err = *e;
    }
}
/* A CUDA call on behalf of an op: failures stick to the stream. */
#define SCU(s, call)                                          \
    do {                                                      \
        qvlm_error e_;                                        \
        qvlm_status r_ = QVLM_CU(&e_, call);                  \
        if (r_) fail((s), r_, &e_);                           \
    } while (0)

static void fail_launch(cuda_stream *s, int e, const char *what) {
    qvlm_error err;
    if (e >= 10000) qvlm_errorf(&err, QVLM_E_INTERNAL, "cuda: %s: cuBLAS status %d", what, e - 10000);
    else qvlm_errorf(&err, QVLM_E_INTERNAL, "cuda: %s: %s", what, cudaGetErrorString((cudaError_t)e));
    fail(s, QVLM_E_INTERNAL, &err);
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e6 * (double)ts.tv_sec + 1e-3 * (double)ts.tv_nsec;
}

/* ==== ordering across streams ============================================================================ */

/* Make s wait for everything other streams enqueued before this call (see the file head). */
static void order(cuda_stream *s) {
    cuda_backend *be = s->be;
    if (atomic_load(&be->last) == s) return;
    pthread_mutex_lock(&be->mu);
    cuda_stream *last = atomic_load(&be->last);
    if (last && last != s) {
        SCU(s, cudaEventRecord(last->ev_order, last->cs));
        SCU(s, cudaStreamWaitEvent(s->cs, last->ev_order, 0));
    }
    atomic_store(&be->last, s);
    pthread_mutex_unlock(&be->mu);
}

/* ==== commands ============================================================================================ */

typedef struct cmd_hdr {
    qcu_launch_fn fn;
    const char *name;
    uint64_t size;
} cmd_hdr;

static void profile_add(cuda_stream *s, const char *name, float ms) {
    int i = 0;
    while (i < s->n_prof && strcmp(s->prof[i].name, name) != 0) i++;
    if (i == s->n_prof) {
        if (i == 64) return;
        s->prof[s->n_prof++] = (struct prof_entry){name, 0, 0};
    }
    s->prof[i].n++;
    s->prof[i].ms += ms;
}

static void run_cmd(cuda_stream *s, cudaStream_t st, qcu_launch_fn fn, const void *args, const char *name) {
    const bool prof = s->be->profile && st == s->cs && s->ev_a;
    if (prof) SCU(s, cudaEventRecord(s->ev_a, st));
    int e = fn((void *)st, args);
    if (e) fail_launch(s, e, name);
    if (!e && prof) {
        float ms = 0;
        SCU(s, cudaEventRecord(s->ev_b, st));
        SCU(s, cudaEventSynchronize(s->ev_b));
        SCU(s, cudaEventElapsedTime(&ms, s->ev_a, s->ev_b));
        profile_add(s, name, ms);
    }
    if (!e && s->be->sync_each && st == s->cs) SCU(s, cudaStreamSynchronize(s->cs));
}

static void submit(cuda_stream *s, qcu_launch_fn fn, const void *args, size_t size, const char *name) {
    if (s->status) return;
    if (!s->recording) {
        order(s);
        run_cmd(s, s->cs, fn, args, name);
        return;
    }
    size_t need = sizeof(cmd_hdr) + ((size + 7) & ~(size_t)7);
    if (s->cmd_len + need > s->cmd_cap) {
        size_t cap = s->cmd_cap ? 2 * s->cmd_cap : 64 << 10;
        while (cap < s->cmd_len + need) cap *= 2;
        uint8_t *n = realloc(s->cmd, cap);
        if (!n) {
            qvlm_error e;
            fail(s, qvlm_errorf(&e, QVLM_E_NOMEM, "cuda: recording a step: out of memory"), &e);
            return;
        }
        s->cmd = n, s->cmd_cap = cap;
    }
    cmd_hdr h = {fn, name, size};
    memcpy(s->cmd + s->cmd_len, &h, sizeof(h));
    memset(s->cmd + s->cmd_len + sizeof(h), 0, need - sizeof(h));
    memcpy(s->cmd + s->cmd_len + sizeof(h), args, size);
    s->cmd_len += need;
}
#define SUBMIT(s, fn, args) submit((s), (fn), &(args), sizeof(args), #fn)

static void run_cmds(cuda_stream *s, cudaStream_t st, const uint8_t *buf, size_t len) {
    for (size_t off = 0; off < len && !s->status;) {
        cmd_hdr h;
        memcpy(&h, buf + off, sizeof(h));
        run_cmd(s, st, h.fn, buf + off + sizeof(h), h.name);
        off += sizeof(h) + ((h.size + 7) & ~(size_t)7);
    }
}

static void free_grave(cuda_stream *s) {
    if (s->n_grave) cudaStreamSynchronize(s->cs);
    for (int i = 0; i < s->n_grave; i++) cudaFree(s->grave[i]);
    s->n_grave = 0;
}

/* Leave recording: run what was recorded, op by op, and finish the step that way. */
static void flush_recording(cuda_stream *s) {
    if (!s->recording) return;
    s->recording = false;
    if (s->status) return;
    order(s);
    if (s->step_off) SCU(s, cudaMemcpyAsync(s->d_step, s->h_step, s->step_off, cudaMemcpyHostToDevice, s->cs));
    run_cmds(s, s->cs, s->cmd, s->cmd_len);
    s->cmd_len = 0;
    SCU(s, cudaEventRecord(s->ev_step, s->cs)); /* h_step is read until this point */
    s->step_pending = true;
}

/* ==== staging of host arrays ============================================================================ */

/* Copy n bytes of host memory to device memory the ops of this stream can read; returns the
 * device address (NULL after a failure). */
static void *stage(cuda_stream *s, const void *host, size_t n) {
    const size_t al = (n + STAGE_ALIGN - 1) / STAGE_ALIGN * STAGE_ALIGN + STAGE_ALIGN;
    if (s->status) return NULL;
    if (s->recording) {
        if (s->step_off + al > STEP_BYTES) flush_recording(s); /* too big for a step: run op by op */
        else {
            memcpy(s->h_step + s->step_off, host, n);
            void *d = s->d_step + s->step_off;
            s->step_off += al;
            return d;
        }
    }
    if (al > RING_BYTES) {
        qvlm_error e;
        fail(s, qvlm_errorf(&e, QVLM_E_LIMIT, "cuda: %zu bytes of op arguments (at most %zu)", n, RING_BYTES), &e);
        return NULL;
    }
    if (s->ring_off + al > RING_BYTES) { /* wrap: every earlier use of the ring must be done */
        SCU(s, cudaStreamSynchronize(s->cs));
        s->ring_off = 0;
    }
    memcpy(s->h_ring + s->ring_off, host, n);
    order(s);
    void *d = s->d_ring + s->ring_off;
    SCU(s, cudaMemcpyAsync(d, s->h_ring + s->ring_off, n, cudaMemcpyHostToDevice, s->cs));
    s->ring_off += al;
    return s->status ? NULL : d;
}

/* Device scratch of at least n bytes, valid until the next op of this stream. */
static void *scratch(cuda_stream *s, size_t n) {
    if (s->status) return NULL;
    if (n <= s->scratch_bytes && s->scratch) return s->scratch;
    size_t want = (n + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
    void *p = NULL;
    qvlm_error e;
    qvlm_status rc = QVLM_CU(&e, cudaMalloc(&p, want));
    if (rc) {
        fail(s, rc, &e);
        return NULL;
    }
    if (s->scratch) {
        if (s->recording) { /* recorded commands may still point at it */
            if (s->n_grave == s->cap_grave) {
                int cap = s->cap_grave ? 2 * s->cap_grave : 8;
                void **g = realloc(s->grave, (size_t)cap * sizeof(*g));
                if (!g) {
                    cudaFree(p);
                    fail(s, qvlm_errorf(&e, QVLM_E_NOMEM, "cuda: out of memory"), &e);
                    return NULL;
                }
                s->grave = g, s->cap_grave = cap;
            }
            s->grave[s->n_grave++] = s->scratch;
        } else {
            cudaStreamSynchronize(s->cs); /* earlier users of the old buffer are done */
            cudaFree(s->scratch);
        }
    }
    s->scratch = p, s->scratch_bytes = want;
    return p;
}

/* ==== the device ============================================================================================ */

static cuda_backend *cb_of(qvlm_backend *be) { return (cuda_backend *)be; }

static const char *cu_name(const qvlm_backend *be) { return ((const cuda_backend *)be)->name; }
static struct qvlm_pool *cu_host_pool(qvlm_backend *be) { return cb_of(be)->pool; }

/* Most device memory a backend keeps in freed blocks for reuse. */
#define FREE_KEEP_BYTES ((size_t)2 << 30)
#define FREE_KEEP_BLOCKS 8192

/* A kept block of exactly n bytes, or NULL. Caller holds be->mu. */
static void *take_free_block(cuda_backend *be, size_t n) {
    for (size_t i = be->n_free; i-- > 0;)
        if (be->free_blocks[i].n == n) {
            void *p = be->free_blocks[i].p;
            be->free_blocks[i] = be->free_blocks[--be->n_free];
            be->free_bytes -= n;
            return p;
        }
    return NULL;
}

/* Give every kept block back to the driver (before a retry of a failed cudaMalloc, at exit). */
static void release_free_blocks(cuda_backend *be) {
    pthread_mutex_lock(&be->mu);
    for (size_t i = 0; i < be->n_free; i++) cudaFree(be->free_blocks[i].p);
    be->n_free = 0, be->free_bytes = 0;
    pthread_mutex_unlock(&be->mu);
}

static void *cu_alloc(qvlm_backend *bep, size_t n) {
    cuda_backend *be = cb_of(bep);
    n = n ? n : 64;
    pthread_mutex_lock(&be->mu);
    void *p = take_free_block(be, n);
    pthread_mutex_unlock(&be->mu);
    if (!p && cudaMalloc(&p, n) != cudaSuccess) {
        cudaGetLastError(); /* not sticky: leave no stale error for the next launch check */
        release_free_blocks(be);
        p = NULL;
        if (cudaMalloc(&p, n) != cudaSuccess) {
            cudaGetLastError();
            return NULL;
        }
    }
    pthread_mutex_lock(&be->mu);
    bool ok = pm_put(&be->allocs, (uintptr_t)p, n);
    if (ok) {
        be->mem_current += n;
        if (be->mem_current > be->mem_peak) be->mem_peak = be->mem_current;
    }
    pthread_mutex_unlock(&be->mu);
    if (!ok) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cu_free(qvlm_backend *bep, void *p) {
    cuda_backend *be = cb_of(bep);
    if (!p) return;
    uint64_t n = 0;
    pthread_mutex_lock(&be->mu);
    if (pm_take(&be->allocs, (uintptr_t)p, &n)) be->mem_current -= n;
    pthread_mutex_unlock(&be->mu);
    /* No queued op of any stream may still read it, nor write it once it is handed out
     * again: wait for the device. Frees are rare (KV blocks, snapshots, session scratch),
     * never inside a decode step, and a synchronisation of an idle device is cheap. */
    cudaDeviceSynchronize();
    pthread_mutex_lock(&be->mu);
    bool keep = n && be->free_bytes + n <= FREE_KEEP_BYTES;
    if (keep && be->n_free == be->cap_free) {
        size_t cap = be->cap_free ? 2 * be->cap_free : 64;
        struct free_block *fb = cap <= FREE_KEEP_BLOCKS ? realloc(be->free_blocks, cap * sizeof(*fb)) : NULL;
        if (fb) be->free_blocks = fb, be->cap_free = cap;
        else keep = false;
    }
    if (keep) {
        be->free_blocks[be->n_free++] = (struct free_block){p, (size_t)n};
        be->free_bytes += n;
    }
    pthread_mutex_unlock(&be->mu);
    if (!keep) cudaFree(p);
}

static void cu_mem_stats(qvlm_backend *bep, size_t *cur, size_t *peak) {
    cuda_backend *be = cb_of(bep);
    pthread_mutex_lock(&be->mu);
    if (cur) *cur = be->mem_current;
    if (peak) *peak = be->mem_peak;
    pthread_mutex_unlock(&be->mu);
}

static void cu_mem_reset_peak(qvlm_backend *bep) {
    cuda_backend *be = cb_of(bep);
    pthread_mutex_lock(&be->mu);
    be->mem_peak = be->mem_current;
    pthread_mutex_unlock(&be->mu);
}

static qvlm_status cu_weight(qvlm_backend *bep, const void *host, qvlm_dtype dtype, int n_dims, const int64_t *ne,
                             qvlm_tensor *out, qvlm_error *err) {
    cuda_backend *be = cb_of(bep);
    memset(out, 0, sizeof(*out));
    if (n_dims < 0 || n_dims > 4) return qvlm_errorf(err, QVLM_E_INVALID, "weight rank %d (at most 4)", n_dims);
    if (dtype != QVLM_DTYPE_F32 && dtype != QVLM_DTYPE_F16 && dtype != QVLM_DTYPE_BF16)
        return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "cuda: weights of dtype %s", qvlm_dtype_name(dtype));
    int64_t rows = 1;
    for (int i = 0; i + 1 < n_dims; i++) rows *= ne[i];
    const size_t bytes = (size_t)rows * qvlm_dtype_row_bytes(dtype, n_dims ? ne[n_dims - 1] : 1);
    void *d = NULL;
    qvlm_status rc = QVLM_CU(err, cudaMalloc(&d, bytes ? bytes : 64));
    if (!rc && bytes) rc = QVLM_CU(err, cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    if (!rc) {
        pthread_mutex_lock(&be->mu);
        if (!pm_put(&be->weights, (uintptr_t)d, bytes)) rc = qvlm_errorf(err, QVLM_E_NOMEM, "cuda: out of memory");
        pthread_mutex_unlock(&be->mu);
    }
    if (rc) {
        cudaFree(d);
        cudaGetLastError();
        return rc;
    }
    out->dtype = dtype;
    out->n_dims = n_dims;
    for (int i = 0; i < n_dims; i++) out->ne[i] = ne[i];
    out->data = d;
    return QVLM_OK;
}

static void cu_weight_free(qvlm_backend *bep, qvlm_tensor *t) {
    cuda_backend *be = cb_of(bep);
    uint64_t f = 0;
    pthread_mutex_lock(&be->mu);
    bool mine = pm_take(&be->weights, (uintptr_t)t->data, NULL);
    bool has_f32 = pm_take(&be->f32, (uintptr_t)t->data, &f);
    uint64_t mt = 0;
    bool has_moe = pm_take(&be->moe, (uintptr_t)t->data, &mt);
    pthread_mutex_unlock(&be->mu);
    if (has_f32) cudaFree((void *)(uintptr_t)f);
    if (has_moe && mt > MOE_NO_TABLE) cudaFree((void *)(uintptr_t)mt);
    if (mine) cudaFree(t->data);
    t->data = NULL;
}

static void cu_destroy(qvlm_backend *bep) {
    cuda_backend *be = cb_of(bep);
    /* Models never free their weights one by one (the CPU's are mmapped): free them here. */
    for (size_t i = 0; i < be->f32.cap; i++)
        if (be->f32.keys[i] > 1) cudaFree((void *)(uintptr_t)be->f32.vals[i]);
    for (size_t i = 0; i < be->moe.cap; i++)
        if (be->moe.keys[i] > 1 && be->moe.vals[i] > MOE_NO_TABLE) cudaFree((void *)(uintptr_t)be->moe.vals[i]);
    for (size_t i = 0; i < be->weights.cap; i++)
        if (be->weights.keys[i] > 1) cudaFree((void *)be->weights.keys[i]);
    free(be->allocs.keys), free(be->allocs.vals), free(be->weights.keys), free(be->weights.vals);
    free(be->f32.keys), free(be->f32.vals), free(be->moe.keys), free(be->moe.vals);
    release_free_blocks(be);
    free(be->free_blocks);
    qvlm_pool_destroy(be->pool);
    pthread_mutex_destroy(&be->mu);
    free(be);
}

/* The f32 copy of a weight for SGEMM (the weight itself when it is f32). Made on first use,
 * on the stream, outside any recording. */
/* w as f32 for cuBLAS: the weight itself when it is f32, else a cached copy. In BF16 precision
 * the copy holds the bf16-rounded values (kernels/cpu/ref_matmul.c rounds non-bf16 weights so). */
static const float *weight_f32(cuda_stream *s, const qvlm_tensor *w, int64_t n_elems) {
    cuda_backend *be = s->be;
    const bool rnd = be->base.precision == QVLM_COMPUTE_BF16;
    if (w->dtype == QVLM_DTYPE_F32 && !rnd) return w->data;
    uint64_t v = 0;
    pthread_mutex_lock(&be->mu);
    bool have = pm_get(&be->f32, (uintptr_t)w->data, &v);
    pthread_mutex_unlock(&be->mu);
    if (have) return (const float *)(uintptr_t)v;
    flush_recording(s);
    void *p = NULL;
    qvlm_error e;
    qvlm_status rc = QVLM_CU(&e, cudaMalloc(&p, (size_t)n_elems * sizeof(float)));
    if (rc) {
        fail(s, rc, &e);
        return NULL;
    }
    qcu_to_f32_args a;
    memset(&a, 0, sizeof(a));
    a.y = p, a.x = w->data, a.n = n_elems, a.dt = (int32_t)w->dtype, a.round_bf16 = rnd;
    SUBMIT(s, qcu_to_f32, a);
    pthread_mutex_lock(&be->mu);
    if (pm_get(&be->f32, (uintptr_t)w->data, &v)) { /* another stream made it meanwhile */
        pthread_mutex_unlock(&be->mu);
        SCU(s, cudaStreamSynchronize(s->cs));
        cudaFree(p);
        return (const float *)(uintptr_t)v;
    }
    bool ok = pm_put(&be->f32, (uintptr_t)w->data, (uint64_t)(uintptr_t)p);
    pthread_mutex_unlock(&be->mu);
    if (!ok) {
        cudaFree(p);
        fail(s, qvlm_errorf(&e, QVLM_E_NOMEM, "cuda: out of memory"), &e);
        return NULL;
    }
    return p;
}

/* ==== streams ============================================================================================= */

static void cu_stream_destroy(qvlm_stream *st) {
    cuda_stream *s = cs_of(st);
    cuda_backend *be = s->be;
    if (s->cs) cudaStreamSynchronize(s->cs);
    if (be->stats && (s->n_captures || s->n_replays))
        fprintf(stderr, "qvlm: cuda stream: %ld decode-step graphs captured, %ld replayed, %.3f ms of GPU time per replay\n",
                s->n_captures, s->n_replays, s->n_timed ? s->replay_ms / (double)s->n_timed : 0.0);
    if (be->stats && s->n_replays)
        fprintf(stderr, "qvlm: cuda stream: host us per step: recording %.1f, compare+launch %.1f, wait+download %.1f\n",
                s->host_rec_us / (double)(s->n_replays + s->n_captures), s->host_end_us / (double)(s->n_replays + s->n_captures),
                s->n_dl ? s->host_dl_us / (double)s->n_dl : 0.0);
    if (s->ev_g0) cudaEventDestroy(s->ev_g0);
    if (s->ev_g1) cudaEventDestroy(s->ev_g1);
    double tot = 0;
    for (int i = 0; i < s->n_prof; i++) tot += s->prof[i].ms;
    for (int i = 0; tot > 0 && i < s->n_prof; i++)
        fprintf(stderr, "qvlm: cuda profile: %-24s %8ld calls %10.3f ms %9.2f us/call %5.1f%%\n", s->prof[i].name,
                s->prof[i].n, s->prof[i].ms, 1e3 * s->prof[i].ms / (double)s->prof[i].n, 100.0 * s->prof[i].ms / tot);
    if (s->ev_a) cudaEventDestroy(s->ev_a);
    if (s->ev_b) cudaEventDestroy(s->ev_b);
    pthread_mutex_lock(&be->mu);
    if (atomic_load(&be->last) == s) atomic_store(&be->last, NULL);
    pthread_mutex_unlock(&be->mu);
    if (s->gexec) cudaGraphExecDestroy(s->gexec);
    qcu_blas_destroy(s->blas);
    cudaFree(s->blas_ws);
    cudaFree(s->scratch);
    free_grave(s);
    cudaFree(s->d_ring);
    cudaFree(s->d_step);
    cudaFree(s->sync);
    cudaFreeHost(s->h_ring);
    cudaFreeHost(s->h_step);
    cudaFreeHost(s->h_dl);
    if (s->ev_order) cudaEventDestroy(s->ev_order);
    if (s->ev_step) cudaEventDestroy(s->ev_step);
    if (s->cs) cudaStreamDestroy(s->cs);
    if (s->cap) cudaStreamDestroy(s->cap);
    free(s->cmd);
    free(s->g_cmd);
    free(s->grave);
    free(s);
}

static qvlm_status cu_stream_create(qvlm_backend *bep, qvlm_stream **out, qvlm_error *err) {
    cuda_stream *s = calloc(1, sizeof(*s));
    if (!s) return qvlm_errorf(err, QVLM_E_NOMEM, "cuda stream: out of memory");
    s->base.be = bep;
    s->be = cb_of(bep);
    qvlm_status rc = QVLM_CU(err, cudaStreamCreateWithFlags(&s->cs, cudaStreamNonBlocking));
    if (!rc) rc = QVLM_CU(err, cudaStreamCreateWithFlags(&s->cap, cudaStreamNonBlocking));
    if (!rc) rc = QVLM_CU(err, cudaEventCreateWithFlags(&s->ev_order, cudaEventDisableTiming));
    if (!rc) rc = QVLM_CU(err, cudaEventCreateWithFlags(&s->ev_step, cudaEventDisableTiming));
    if (!rc && s->be->stats) rc = QVLM_CU(err, cudaEventCreateWithFlags(&s->ev_g0, cudaEventDefault));
    if (!rc && s->be->stats) rc = QVLM_CU(err, cudaEventCreateWithFlags(&s->ev_g1, cudaEventDefault));
    if (!rc && s->be->profile) rc = QVLM_CU(err, cudaEventCreateWithFlags(&s->ev_a, cudaEventDefault));
    if (!rc && s->be->profile) rc = QVLM_CU(err, cudaEventCreateWithFlags(&s->ev_b, cudaEventDefault));
    if (!rc) rc = QVLM_CU(err, cudaMallocHost((void **)&s->h_ring, RING_BYTES));
    if (!rc) rc = QVLM_CU(err, cudaMalloc((void **)&s->d_ring, RING_BYTES));
    if (!rc) rc = QVLM_CU(err, cudaMallocHost((void **)&s->h_step, STEP_BYTES));
    if (!rc) rc = QVLM_CU(err, cudaMalloc((void **)&s->d_step, STEP_BYTES));
    if (!rc) rc = QVLM_CU(err, cudaMallocHost((void **)&s->h_dl, DL_BYTES));
    if (!rc) rc = QVLM_CU(err, cudaMalloc(&s->sync, QCU_SYNC_BYTES));
    if (!rc) rc = QVLM_CU(err, cudaMemsetAsync(s->sync, 0, QCU_SYNC_BYTES, s->cs));
    if (!rc) rc = QVLM_CU(err, cudaStreamSynchronize(s->cs));
    if (rc) {
        cudaGetLastError();
        cu_stream_destroy(&s->base);
        return qvlm_error_prefix(err, rc, "cuda stream");
    }
    *out = &s->base;
    return QVLM_OK;
}

static qvlm_status cu_reserve_matmul(qvlm_stream *st, int64_t n_rows, int64_t k, qvlm_error *err) {
    cuda_stream *s = cs_of(st);
    if (!scratch(s, (size_t)n_rows * (size_t)k * sizeof(float))) {
        qvlm_status rc = s->status ? s->status : QVLM_E_NOMEM;
        *err = s->err;
        s->status = QVLM_OK;
        return rc;
    }
    return QVLM_OK;
}

static void cu_sync(qvlm_stream *st) {
    cuda_stream *s = cs_of(st);
    flush_recording(s);
    SCU(s, cudaStreamSynchronize(s->cs));
}

static qvlm_status cu_status_op(qvlm_stream *st, qvlm_error *err) {
    cuda_stream *s = cs_of(st);
    qvlm_status rc = s->status;
    if (rc) {
        if (err) *err = s->err;
        s->status = QVLM_OK;
        cudaGetLastError();
    }
    return rc;
}

/* ---- recorded decode steps --------------------------------------------------------------------------- */

static bool cu_step_begin(qvlm_stream *st) {
    cuda_stream *s = cs_of(st);
    if (!s->be->graphs || s->status || s->recording) return false;
    if (s->step_pending) { /* the last step's graph may still be reading h_step */
        SCU(s, cudaEventSynchronize(s->ev_step));
        s->step_pending = false;
    }
    if (s->timing) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, s->ev_g0, s->ev_g1) == cudaSuccess) s->replay_ms += ms, s->n_timed++;
        cudaGetLastError();
        s->timing = false;
    }
    s->recording = true;
    s->cmd_len = 0;
    s->step_off = 0;
    if (s->be->stats) s->t_begin = now_us();
    return true;
}

static bool same_launchers(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    size_t i = 0, j = 0;
    while (i < na && j < nb) {
        cmd_hdr x, y;
        memcpy(&x, a + i, sizeof(x));
        memcpy(&y, b + j, sizeof(y));
        if (x.fn != y.fn) return false;
        i += sizeof(x) + ((x.size + 7) & ~(size_t)7);
        j += sizeof(y) + ((y.size + 7) & ~(size_t)7);
    }
    return i == na && j == nb;
}

/* Capture the recorded commands into s->gexec. false: could not (the caller runs them). */
static bool capture(cuda_stream *s) {
    qvlm_error e;
    cudaGraph_t g = NULL;
    if (QVLM_CU(&e, cudaStreamBeginCapture(s->cap, cudaStreamCaptureModeThreadLocal))) {
        cudaGetLastError();
        return false;
    }
    bool ok = true;
    if (s->step_off && cudaMemcpyAsync(s->d_step, s->h_step, s->step_off, cudaMemcpyHostToDevice, s->cap) != cudaSuccess)
        ok = false;
    for (size_t off = 0; ok && off < s->cmd_len;) {
        cmd_hdr h;
        memcpy(&h, s->cmd + off, sizeof(h));
        ok = h.fn((void *)s->cap, s->cmd + off + sizeof(h)) == 0;
        off += sizeof(h) + ((h.size + 7) & ~(size_t)7);
    }
    if (cudaStreamEndCapture(s->cap, &g) != cudaSuccess) ok = false;
    size_t n_nodes = 0;
    if (ok && cudaGraphGetNodes(g, NULL, &n_nodes) != cudaSuccess) ok = false;
    /* Update the executable graph in place only when the topology is the same (same launchers
     * in the same order, same node count); otherwise instantiate a new one. */
    if (ok && s->gexec && !(n_nodes == s->g_nodes && same_launchers(s->g_cmd, s->g_cmd_len, s->cmd, s->cmd_len))) {
        cudaGraphExecDestroy(s->gexec);
        s->gexec = NULL;
    }
    if (ok && s->gexec) {
        cudaGraphExecUpdateResultInfo info;
        if (cudaGraphExecUpdate(s->gexec, g, &info) != cudaSuccess) {
            cudaGetLastError();
            cudaGraphExecDestroy(s->gexec);
            s->gexec = NULL;
        }
    }
    if (ok && !s->gexec && cudaGraphInstantiate(&s->gexec, g, 0) != cudaSuccess) {
        s->gexec = NULL;
        ok = false;
    }
    if (g) cudaGraphDestroy(g);
    cudaGetLastError(); /* a failed capture leaves nothing sticky behind */
    if (!ok) return false;
    if (s->g_cmd_cap < s->cmd_len) {
        uint8_t *n = realloc(s->g_cmd, s->cmd_len);
        if (!n) return false;
        s->g_cmd = n, s->g_cmd_cap = s->cmd_len;
    }
    memcpy(s->g_cmd, s->cmd, s->cmd_len);
    s->g_cmd_len = s->cmd_len;
    s->g_step_used = s->step_off;
    s->g_nodes = n_nodes;
    s->n_captures++;
    return true;
}

static void cu_step_end(qvlm_stream *st) {
    cuda_stream *s = cs_of(st);
    const double t0 = s->be->stats ? now_us() : 0;
    if (s->be->stats && s->recording) s->host_rec_us += t0 - s->t_begin;
    if (!s->recording) { /* the step was finished op by op */
        free_grave(s);
        return;
    }
    if (s->status) {
        s->recording = false;
        free_grave(s);
        return;
    }
    bool same = s->gexec && s->g_cmd_len == s->cmd_len && s->g_step_used == s->step_off &&
                memcmp(s->g_cmd, s->cmd, s->cmd_len) == 0;
    if (!same && !capture(s)) {
        if (s->gexec) cudaGraphExecDestroy(s->gexec);
        s->gexec = NULL, s->g_cmd_len = 0;
        flush_recording(s);
        free_grave(s);
        return;
    }
    s->recording = false;
    order(s);
    s->timing = same && s->ev_g0;
    if (s->timing) SCU(s, cudaEventRecord(s->ev_g0, s->cs));
    SCU(s, cudaGraphLaunch(s->gexec, s->cs));
    if (s->timing) SCU(s, cudaEventRecord(s->ev_g1, s->cs));
    SCU(s, cudaEventRecord(s->ev_step, s->cs));
    s->step_pending = true;
    s->n_replays += same;
    if (s->be->sync_each) SCU(s, cudaStreamSynchronize(s->cs));
    free_grave(s);
    if (s->be->stats) s->host_end_us += now_us() - t0;
}

/* ==== copies ==================================================================================================== */

typedef struct {
    void *dst;
    const void *src;
    int64_t n, value;
} copy_args;

static int cmd_copy(void *st, const void *p) {
    const copy_args *a = p;
    return (int)cudaMemcpyAsync(a->dst, a->src, (size_t)a->n, cudaMemcpyDeviceToDevice, (cudaStream_t)st);
}
static int cmd_zero(void *st, const void *p) {
    const copy_args *a = p;
    return (int)cudaMemsetAsync(a->dst, (int)a->value, (size_t)a->n, (cudaStream_t)st);
}

static void cu_upload(qvlm_stream *st, void *dst, const void *src, size_t n) {
    cuda_stream *s = cs_of(st);
    if (!n || s->status) return;
    flush_recording(s);
    order(s);
    /* From pageable memory the call returns once src has been consumed. */
    SCU(s, cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, s->cs));
}

static void cu_download(qvlm_stream *st, void *dst, const void *src, size_t n) {
    cuda_stream *s = cs_of(st);
    flush_recording(s);
    if (!n || s->status) return;
    const double t0 = s->be->stats ? now_us() : 0;
    order(s);
    if (n <= DL_BYTES) { /* pinned bounce: faster than a pageable transfer */
        SCU(s, cudaMemcpyAsync(s->h_dl, src, n, cudaMemcpyDeviceToHost, s->cs));
        SCU(s, cudaStreamSynchronize(s->cs));
        if (!s->status) memcpy(dst, s->h_dl, n);
    } else {
        SCU(s, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, s->cs));
        SCU(s, cudaStreamSynchronize(s->cs));
    }
    if (s->be->stats && s->step_pending) s->host_dl_us += now_us() - t0, s->n_dl++;
}

static void cu_copy(qvlm_stream *st, void *dst, const void *src, size_t n) {
    if (!n) return;
    copy_args a;
    memset(&a, 0, sizeof(a));
    a.dst = dst, a.src = src, a.n = (int64_t)n;
    SUBMIT(cs_of(st), cmd_copy, a);
}

static void cu_zero(qvlm_stream *st, void *dst, size_t n) {
    if (!n) return;
    copy_args a;
    memset(&a, 0, sizeof(a));
    a.dst = dst, a.n = (int64_t)n;
    SUBMIT(cs_of(st), cmd_zero, a);
}

/* ==== ops =========================================================================================================== */

#define ARGS(type, name) \
    type name;           \
    memset(&name, 0, sizeof(name))

static int32_t dt_of(const qvlm_tensor *t) { return (int32_t)t->dtype; } /* QCU_* == qvlm_dtype */

static void cu_get_rows(qvlm_stream *st, float *y, const qvlm_tensor *table, const int32_t *ids, int64_t n) {
    cuda_stream *s = cs_of(st);
    ARGS(qcu_get_rows_args, a);
    a.y = y, a.table = table->data, a.dim = qvlm_tensor_cols(table), a.n = n, a.dt = dt_of(table);
    a.ids = stage(s, ids, (size_t)n * sizeof(int32_t));
    if (a.ids) SUBMIT(s, qcu_get_rows, a);
}

static void cu_add_weighted_rows(qvlm_stream *st, float *y, const qvlm_tensor *table, const int32_t *idx, const float *w,
                                 int64_t n, int64_t taps) {
    cuda_stream *s = cs_of(st);
    ARGS(qcu_add_weighted_rows_args, a);
    a.y = y, a.table = table->data, a.dim = qvlm_tensor_cols(table), a.n = n, a.taps = taps, a.dt = dt_of(table);
    a.idx = stage(s, idx, (size_t)(n * taps) * sizeof(int32_t));
    a.w = stage(s, w, (size_t)(n * taps) * sizeof(float));
    if (a.idx && a.w) SUBMIT(s, qcu_add_weighted_rows, a);
}

/* ---- matrix products ---------------------------------------------------------------------------------- */

static int64_t mm_rows(const qvlm_tensor *w) { return w->n_dims == 3 ? w->ne[1] : w->ne[0]; }

static void gemv_mat(qcu_gemv_mat *m, float *y, int64_t ldy, const qvlm_tensor *w, const qvlm_tensor *bias) {
    m->w = w->data, m->y = y, m->ldy = ldy, m->d = mm_rows(w), m->wdt = dt_of(w);
    m->bias = bias ? (const float *)bias->data : NULL;
}

/* The stream's cuBLAS handle, made on first use; false (the failure recorded) when it cannot be. */
static bool blas_ready(cuda_stream *s) {
    flush_recording(s); /* cuBLAS setup and first-use copies are not for a graph */
    if (s->status) return false;
    if (!s->blas) {
        const char *what = "cublas";
        int e = qcu_blas_create(&s->blas, &what);
        qvlm_error err;
        if (e) {
            fail(s, qvlm_errorf(&err, QVLM_E_INTERNAL, "cuda: %s failed (status %d)", what, e), &err);
            return false;
        }
        if (QVLM_CU(&err, cudaMalloc(&s->blas_ws, BLAS_WS_BYTES))) s->blas_ws = NULL, cudaGetLastError();
    }
    return true;
}

/* Many rows: cuBLAS, bf16 or f32 (see the file head). */
static void gemm(cuda_stream *s, float *y, int64_t ldy, const float *x, int64_t ldx, const qvlm_tensor *w,
                 const qvlm_tensor *bias, int64_t n) {
    const int64_t d = mm_rows(w), k = qvlm_tensor_cols(w);
    const bool bf16 = s->be->base.precision == QVLM_COMPUTE_BF16;
    if (!blas_ready(s)) return;
    ARGS(qcu_gemm_args, g);
    g.handle = s->blas, g.workspace = s->blas_ws, g.workspace_bytes = s->blas_ws ? (int64_t)BLAS_WS_BYTES : 0;
    g.y = y, g.ldy = ldy, g.n = n, g.k = k, g.d = d;
    if (bf16 && w->dtype == QVLM_DTYPE_BF16) {
        void *xb = scratch(s, (size_t)(n * k) * 2);
        if (!xb) return;
        ARGS(qcu_round_args, r);
        r.y = xb, r.x = x, r.ldx = ldx, r.n_rows = n, r.cols = k, r.to_bf16 = 1;
        SUBMIT(s, qcu_round, r);
        g.x = xb, g.ldx = k, g.w = w->data, g.bf16 = 1;
    } else {
        const float *wf = weight_f32(s, w, d * k);
        if (!wf) return;
        g.w = wf, g.x = x, g.ldx = ldx;
        if (bf16) { /* the CPU's BF16 mode rounds activations for every weight dtype */
            float *xr = scratch(s, (size_t)(n * k) * sizeof(float));
            if (!xr) return;
            ARGS(qcu_round_args, r);
            r.y = xr, r.x = x, r.ldx = ldx, r.n_rows = n, r.cols = k, r.to_bf16 = 0;
            SUBMIT(s, qcu_round, r);
            g.x = xr, g.ldx = k;
        }
    }
    SUBMIT(s, qcu_gemm, g);
    if (bias) {
        ARGS(qcu_bias_add_args, b);
        b.y = y, b.bias = bias->data, b.ldy = ldy, b.n_rows = n, b.cols = d;
        SUBMIT(s, qcu_bias_add, b);
    }
}

static void cu_matmul(qvlm_stream *st, float *y, int64_t ldy, const float *x, int64_t ldx, const qvlm_tensor *w,
                      const qvlm_tensor *bias, int64_t n) {
    cuda_stream *s = cs_of(st);
    if (n <= 0) return;
    if (n <= QCU_GEMV_MAX_ROWS) {
        ARGS(qcu_gemv_args, a);
        gemv_mat(&a.m[0], y, ldy, w, bias);
        a.n_mats = 1, a.x = x, a.ldx = ldx, a.k = qvlm_tensor_cols(w), a.n = n;
        a.round_bf16 = s->be->base.precision == QVLM_COMPUTE_BF16;
        SUBMIT(s, qcu_gemv, a);
        return;
    }
    gemm(s, y, ldy, x, ldx, w, bias, n);
}

static void cu_matmul_multi(qvlm_stream *st, int n_parts, const qvlm_matmul_part *parts, const float *x, int64_t ldx,
                            int64_t n) {
    cuda_stream *s = cs_of(st);
    bool fuse = n <= QCU_GEMV_MAX_ROWS && n_parts <= QCU_GEMV_MAX;
    for (int i = 1; fuse && i < n_parts; i++) fuse = qvlm_tensor_cols(parts[i].w) == qvlm_tensor_cols(parts[0].w);
    if (!fuse || n <= 0) {
        for (int i = 0; i < n_parts; i++) cu_matmul(st, parts[i].y, parts[i].ldy, x, ldx, parts[i].w, parts[i].bias, n);
        return;
    }
    ARGS(qcu_gemv_args, a);
    for (int i = 0; i < n_parts; i++) gemv_mat(&a.m[i], parts[i].y, parts[i].ldy, parts[i].w, parts[i].bias);
    a.n_mats = n_parts, a.x = x, a.ldx = ldx, a.k = qvlm_tensor_cols(parts[0].w), a.n = n;
    a.round_bf16 = s->be->base.precision == QVLM_COMPUTE_BF16;
    SUBMIT(s, qcu_gemv, a);
}

static void cu_silu_mul(qvlm_stream *st, float *y, int64_t ldy, const float *gate, int64_t ldg, const float *up,
                        int64_t ldu, int64_t n_rows, int64_t dim);

static void cu_matmul_swiglu(qvlm_stream *st, float *y, int64_t ldy, float *tmp, const float *x, int64_t ldx,
                             const qvlm_tensor *wg, const qvlm_tensor *wu, int64_t n) {
    cuda_stream *s = cs_of(st);
    if (n <= 0) return;
    if (n <= QCU_GEMV_MAX_ROWS && wg->dtype == wu->dtype && mm_rows(wg) == mm_rows(wu)) {
        ARGS(qcu_gemv_args, a);
        gemv_mat(&a.m[0], y, ldy, wg, NULL);
        gemv_mat(&a.m[1], tmp, ldy, wu, NULL);
        a.n_mats = 2, a.mode = 1, a.x = x, a.ldx = ldx, a.k = qvlm_tensor_cols(wg), a.n = n;
        a.round_bf16 = s->be->base.precision == QVLM_COMPUTE_BF16;
        SUBMIT(s, qcu_gemv, a);
        return;
    }
    cu_matmul(st, y, ldy, x, ldx, wg, NULL, n);
    cu_matmul(st, tmp, ldy, x, ldx, wu, NULL, n);
    cu_silu_mul(st, y, ldy, y, ldy, tmp, ldy, n, mm_rows(wg));
}

/* ---- norms and elementwise ------------------------------------------------------------------------------- */

static void cu_rms_norm(qvlm_stream *st, float *y, int64_t ldy, const float *x, int64_t ldx, const qvlm_tensor *w,
                        float w_offset, float eps, int64_t n_rows, int64_t dim) {
    ARGS(qcu_rms_norm_args, a);
    a.y = y, a.x = x, a.w = w->data, a.ldy = ldy, a.ldx = ldx, a.n_rows = n_rows, a.dim = dim, a.w_offset = w_offset;
    a.eps = eps, a.wdt = dt_of(w);
    SUBMIT(cs_of(st), qcu_rms_norm, a);
}

static void cu_add_rms_norm(qvlm_stream *st, float *xn, float *x, const float *delta, const qvlm_tensor *w,
                            float w_offset, float eps, int64_t n_rows, int64_t dim) {
    ARGS(qcu_add_rms_norm_args, a);
    a.x = x, a.delta = delta, a.xn = xn, a.w = w->data, a.n_rows = n_rows, a.dim = dim, a.w_offset = w_offset;
    a.eps = eps, a.wdt = dt_of(w);
    SUBMIT(cs_of(st), qcu_add_rms_norm, a);
}

static void cu_layer_norm(qvlm_stream *st, float *y, const float *x, const qvlm_tensor *w, const qvlm_tensor *b,
                          float eps, int64_t n_rows, int64_t dim) {
    ARGS(qcu_layer_norm_args, a);
    a.y = y, a.x = x, a.w = w->data, a.b = b->data, a.n_rows = n_rows, a.dim = dim, a.eps = eps, a.wdt = dt_of(w);
    a.bdt = dt_of(b);
    SUBMIT(cs_of(st), qcu_layer_norm, a);
}

static void cu_gated_rms_norm(qvlm_stream *st, float *y, const float *x, const float *z, const qvlm_tensor *w,
                              float eps, int64_t n_rows, int64_t dim) {
    ARGS(qcu_gated_rms_norm_args, a);
    a.y = y, a.x = x, a.z = z, a.w = w->data, a.n_rows = n_rows, a.dim = dim, a.eps = eps, a.wdt = dt_of(w);
    SUBMIT(cs_of(st), qcu_gated_rms_norm, a);
}

static void cu_add(qvlm_stream *st, float *y, const float *x, const float *b, int64_t n) {
    ARGS(qcu_add_args, a);
    a.y = y, a.a = x, a.b = b, a.n = n;
    SUBMIT(cs_of(st), qcu_add, a);
}

static void cu_silu_mul(qvlm_stream *st, float *y, int64_t ldy, const float *gate, int64_t ldg, const float *up,
                        int64_t ldu, int64_t n_rows, int64_t dim) {
    ARGS(qcu_silu_mul_args, a);
    a.y = y, a.gate = gate, a.up = up, a.ldy = ldy, a.ldg = ldg, a.ldu = ldu, a.n_rows = n_rows, a.dim = dim;
    SUBMIT(cs_of(st), qcu_silu_mul, a);
}

static void cu_gelu(qvlm_stream *st, float *x, int64_t n, bool tanh_approx) {
    ARGS(qcu_gelu_args, a);
    a.x = x, a.n = n, a.tanh_approx = tanh_approx;
    SUBMIT(cs_of(st), qcu_gelu, a);
}

static void cu_sigmoid_mul(qvlm_stream *st, float *y, int64_t ldy, const float *x, int64_t ldx, const float *gate,
                           int64_t ldg, int64_t gate_cols, int64_t n_rows, int64_t dim) {
    ARGS(qcu_sigmoid_mul_args, a);
    a.y = y, a.x = x, a.gate = gate, a.ldy = ldy, a.ldx = ldx, a.ldg = ldg, a.gate_cols = gate_cols;
    a.n_rows = n_rows, a.dim = dim;
    SUBMIT(cs_of(st), qcu_sigmoid_mul, a);
}

static void cu_add_gated(qvlm_stream *st, float *y, const float *a_in, const float *x, const float *gate, int64_t n_rows,
                         int64_t dim) {
    ARGS(qcu_sigmoid_mul_args, a);
    a.y = y, a.x = x, a.gate = gate, a.add = a_in, a.ldy = dim, a.ldx = dim, a.ldg = 1, a.gate_cols = 1;
    a.n_rows = n_rows, a.dim = dim;
    SUBMIT(cs_of(st), qcu_sigmoid_mul, a);
}

static void cu_conv1d_silu(qvlm_stream *st, float *y, const float *x, int64_t ldx, float *state, const qvlm_tensor *w,
                           int64_t T, int64_t C, int64_t K) {
    ARGS(qcu_conv1d_args, a);
    a.y = y, a.x = x, a.state = state, a.w = w->data, a.ldx = ldx, a.T = T, a.C = C, a.K = K, a.wdt = dt_of(w);
    SUBMIT(cs_of(st), qcu_conv1d_silu, a);
}

/* ---- Gated DeltaNet ------------------------------------------------------------------------------------- */

static void gdn(cuda_stream *s, float *out, float *y_norm, const float *z, const qvlm_tensor *norm_w, float eps,
                const float *qkv, int64_t ldqkv, const float *ga, const float *gb, int64_t ldab, const qvlm_tensor *A_log,
                const qvlm_tensor *dt_bias, float *S, const qvlm_gdn_dims *d, int64_t T, bool chunked) {
    if (T <= 0) return;
    if (chunked && qcu_gdn_chunked_smem(d->k_dim, d->v_dim) > 0) {
        ARGS(qcu_gdn_chunked_args, a);
        a.out = out, a.qkv = qkv, a.a = ga, a.b = gb, a.A_log = A_log->data, a.dt_bias = dt_bias->data, a.S = S;
        a.ldqkv = ldqkv, a.ldab = ldab, a.Hk = d->n_k_heads, a.Hv = d->n_v_heads, a.dk = d->k_dim, a.dv = d->v_dim;
        a.T = T, a.adt = dt_of(A_log), a.ddt = dt_of(dt_bias);
        a.work = scratch(s, qcu_gdn_chunked_work_bytes(d->n_v_heads, d->k_dim, d->v_dim, T));
        if (!a.work) return;
        SUBMIT(s, qcu_gdn_chunked, a);
        if (y_norm) cu_gated_rms_norm(&s->base, y_norm, out, z, norm_w, eps, T * d->n_v_heads, d->v_dim);
        return;
    }
    /* The recurrence (decode, or a chunk geometry beyond the shared memory): same function. */
    ARGS(qcu_gdn_recurrent_args, a);
    a.out = out, a.qkv = qkv, a.a = ga, a.b = gb, a.A_log = A_log->data, a.dt_bias = dt_bias->data, a.S = S;
    a.ldqkv = ldqkv, a.ldab = ldab, a.Hk = d->n_k_heads, a.Hv = d->n_v_heads, a.dk = d->k_dim, a.dv = d->v_dim;
    a.T = T, a.adt = dt_of(A_log), a.ddt = dt_of(dt_bias);
    if (y_norm) a.y_norm = y_norm, a.z = z, a.norm_w = norm_w->data, a.nwdt = dt_of(norm_w), a.norm_eps = eps;
    a.sync = s->sync;
    SUBMIT(s, qcu_gdn_recurrent, a);
}

static void cu_gated_delta(qvlm_stream *st, float *out, const float *qkv, int64_t ldqkv, const float *a, const float *b,
                           int64_t ldab, const qvlm_tensor *A_log, const qvlm_tensor *dt_bias, float *S,
                           const qvlm_gdn_dims *d, int64_t T, bool chunked) {
    gdn(cs_of(st), out, NULL, NULL, NULL, 0.0f, qkv, ldqkv, a, b, ldab, A_log, dt_bias, S, d, T, chunked);
}

static void cu_gated_delta_norm(qvlm_stream *st, float *y, float *core, const float *z, const qvlm_tensor *norm_w,
                                float eps, const float *qkv, int64_t ldqkv, const float *a, const float *b,
                                int64_t ldab, const qvlm_tensor *A_log, const qvlm_tensor *dt_bias, float *S,
                                const qvlm_gdn_dims *d, int64_t T, bool chunked) {
    gdn(cs_of(st), core, y, z, norm_w, eps, qkv, ldqkv, a, b, ldab, A_log, dt_bias, S, d, T, chunked);
}

/* Whether [a, a + na) and [b, b + nb) (floats) share memory. */
static bool overlap(const float *a, int64_t na, const float *b, int64_t nb) {
    const uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
    return a0 < b0 + (uintptr_t)nb * sizeof(float) && b0 < a0 + (uintptr_t)na * sizeof(float);
}

/* One decode token: conv, recurrence and norm in one kernel (gated_delta.cu k_gdn_decode, the
 * bits of the default's two ops). Other shapes, QVLM_CUDA_GDN_FUSED=0 and an output over the
 * projections take the default: the kernel's blocks read all of x while they write y, so
 * there one head's output could replace the input of a head still to come. */
static void cu_gated_delta_conv_norm(qvlm_stream *st, float *y, float *core, const float *z, const qvlm_tensor *norm_w,
                                     float eps, const qvlm_gdn_conv *conv, const float *a, const float *b, int64_t ldab,
                                     const qvlm_tensor *A_log, const qvlm_tensor *dt_bias, float *S,
                                     const qvlm_gdn_dims *d, int64_t T, bool chunked) {
    cuda_stream *s = cs_of(st);
    const int64_t C = qvlm_gdn_qkv_dim(d);
    if (T != 1 || chunked || !s->be->gdn_fused || !s->sync ||
        !qcu_gdn_decode_fits(d->n_k_heads, d->n_v_heads, d->k_dim, d->v_dim, conv->K) ||
        overlap(y, d->n_v_heads * d->v_dim, conv->x, C)) {
        qvlm_gated_delta_conv_norm_default(st, y, core, z, norm_w, eps, conv, a, b, ldab, A_log, dt_bias, S, d, T,
                                           chunked);
        return;
    }
    ARGS(qcu_gdn_decode_args, g);
    g.y = y, g.S = S, g.conv_state = conv->state, g.x = conv->x, g.a = a, g.b = b, g.z = z;
    g.count = (unsigned *)s->sync;
    g.conv_w = conv->w->data, g.A_log = A_log->data, g.dt_bias = dt_bias->data, g.norm_w = norm_w->data;
    g.Hk = d->n_k_heads, g.Hv = d->n_v_heads, g.dk = d->k_dim, g.dv = d->v_dim, g.K = conv->K, g.norm_eps = eps;
    g.cwdt = dt_of(conv->w), g.adt = dt_of(A_log), g.ddt = dt_of(dt_bias), g.nwdt = dt_of(norm_w);
    SUBMIT(s, qcu_gdn_decode, g);
}

/* ---- rotary embeddings -------------------------------------------------------------------------------------- */

/* torch: 1 / base^(arange(0, dim, 2) / dim) in f32, as kernels/cpu/rope.c computes it. */
static float inv_freq(double theta, int64_t i, int64_t dim, bool round_bf16) {
    float e = (float)(2 * i) / (float)dim;
    float f = 1.0f / powf((float)theta, e);
    return round_bf16 ? qvlm_bf16_to_f32(qvlm_f32_to_bf16(f)) : f;
}

/* The dim / 2 (<= MAX_HALF) inverse frequencies of a rotation over dim values, staged for a
 * kernel (NULL on failure, recorded on the stream); computed again only when the rotation
 * changes. */
static const float *stage_inv_freq(cuda_stream *s, double theta, int64_t dim, bool round_bf16) {
    const int64_t n = dim / 2;
    if (s->inv_bf16 != (int)round_bf16 || s->inv_theta != theta || s->inv_dim != dim) {
        for (int64_t i = 0; i < n; i++) s->inv[i] = inv_freq(theta, i, dim, round_bf16);
        s->inv_theta = theta, s->inv_dim = dim, s->inv_bf16 = round_bf16;
    }
    return stage(s, s->inv, (size_t)n * sizeof(float));
}

static void cu_rope_multimodal(qvlm_stream *st, float *x, int64_t ldx, int64_t n_heads, int64_t head_stride,
                               const int32_t *pos, int64_t T, const qvlm_rope_params *p) {
    cuda_stream *s = cs_of(st);
    const int64_t half = p->rot_dim / 2;
    if (half <= 0 || half > MAX_HALF || T <= 0) return;
    ARGS(qcu_rope_text_args, a);
    a.x = x, a.ldx = ldx, a.n_heads = n_heads, a.head_stride = head_stride, a.T = T, a.rot_dim = p->rot_dim;
    a.section1 = p->section[1], a.section2 = p->section[2];
    a.inv_freq = stage_inv_freq(s, p->theta, p->rot_dim, p->freq_bf16);
    a.pos = stage(s, pos, (size_t)(3 * T) * sizeof(int32_t));
    if (a.inv_freq && a.pos) SUBMIT(s, qcu_rope_text, a);
}

static void cu_rope_vision(qvlm_stream *st, float *x, int64_t ldx, int64_t n_heads, int64_t head_stride,
                           int64_t head_dim, const int32_t *rc, int64_t N, double theta, bool freq_bf16) {
    cuda_stream *s = cs_of(st);
    const int64_t half = head_dim / 2, quarter = head_dim / 4; /* quarter == half / 2 */
    if (quarter <= 0 || quarter > MAX_HALF || N <= 0) return;
    ARGS(qcu_rope_vision_args, a);
    a.x = x, a.ldx = ldx, a.n_heads = n_heads, a.head_stride = head_stride, a.head_dim = head_dim, a.N = N;
    a.inv_freq = stage_inv_freq(s, theta, half, freq_bf16);
    a.rc = stage(s, rc, (size_t)(2 * N) * sizeof(int32_t));
    if (a.inv_freq && a.rc) SUBMIT(s, qcu_rope_vision, a);
}

/* ---- attention ------------------------------------------------------------------------------------------------ */

/* pos0 and the block table, staged together: [pos0][table...]. */
static const int64_t *stage_kv(cuda_stream *s, const qvlm_kv_view *kv, int64_t pos0, void *const **table) {
    size_t n = (size_t)(1 + kv->n_blocks) * sizeof(int64_t);
    int64_t buf[1 + 256];
    int64_t *h = kv->n_blocks <= 256 ? buf : malloc(n);
    if (!h) {
        qvlm_error e;
        fail(s, qvlm_errorf(&e, QVLM_E_NOMEM, "cuda: out of memory"), &e);
        return NULL;
    }
    h[0] = pos0;
    for (int64_t b = 0; b < kv->n_blocks; b++) h[1 + b] = (int64_t)(uintptr_t)kv->blocks[b];
    int64_t *d = stage(s, h, n);
    if (h != buf) free(h);
    *table = d ? (void *const *)(d + 1) : NULL;
    return d;
}

static void cu_kv_store(qvlm_stream *st, const qvlm_kv_view *kv, const float *k, int64_t ldk, const float *v,
                        int64_t ldv, int64_t pos0, int64_t T, int64_t n_kv_heads, int64_t head_dim) {
    cuda_stream *s = cs_of(st);
    ARGS(qcu_kv_store_args, a);
    a.k = k, a.v = v, a.ldk = ldk, a.ldv = ldv, a.block_tokens = kv->block_tokens, a.k_off = (int64_t)kv->k_offset;
    a.v_off = (int64_t)kv->v_offset, a.T = T, a.n_kv_heads = n_kv_heads, a.head_dim = head_dim;
    a.pos0 = stage_kv(s, kv, pos0, &a.blocks);
    if (a.pos0) SUBMIT(s, qcu_kv_store, a);
}

static void cu_attn_heads(qvlm_stream *st, const qvlm_attn_heads *h, const int32_t *pos, int64_t T,
                          const qvlm_rope_params *rp, const qvlm_kv_view *kv, int64_t pos0) {
    cuda_stream *s = cs_of(st);
    const int64_t D = h->D, half = rp->rot_dim / 2;
    if (D > QCU_ATTN_HEADS_MAX_D || half <= 0 || half > MAX_HALF || rp->rot_dim > D) { /* the ops one by one */
        qvlm_attn_heads_default(st, h, pos, T, rp, kv, pos0);
        return;
    }
    ARGS(qcu_attn_heads_args, a);
    a.q = h->q, a.k = h->k, a.qg = h->qg, a.v = h->v, a.q_norm = h->q_norm->data, a.k_norm = h->k_norm->data;
    a.q_wdt = dt_of(h->q_norm), a.k_wdt = dt_of(h->k_norm), a.eps = h->eps;
    a.T = T, a.Hq = h->Hq, a.Hkv = h->Hkv, a.D = D, a.rot_dim = rp->rot_dim;
    a.section1 = rp->section[1], a.section2 = rp->section[2];
    a.block_tokens = kv->block_tokens, a.k_off = (int64_t)kv->k_offset, a.v_off = (int64_t)kv->v_offset;
    a.inv_freq = stage_inv_freq(s, rp->theta, rp->rot_dim, rp->freq_bf16);
    a.pos = stage(s, pos, (size_t)(3 * T) * sizeof(int32_t));
    a.pos0 = stage_kv(s, kv, pos0, &a.blocks);
    if (a.inv_freq && a.pos && a.pos0) SUBMIT(s, qcu_attn_heads, a);
}

/* Split the keys over blocks when the query tiles alone do not fill the device. */
static void choose_splits(const cuda_stream *s, int64_t base_blocks, int64_t max_keys, int64_t *n_splits, int64_t *kps) {
    int64_t want = base_blocks >= s->be->n_sm ? 1 : (2 * s->be->n_sm + base_blocks - 1) / base_blocks;
    int64_t most = (max_keys + 63) / 64;
    if (want > most) want = most;
    if (want < 1) want = 1;
    int64_t per = (max_keys + want - 1) / want;
    per = (per + 31) / 32 * 32;
    *kps = per > 0 ? per : 32;
    *n_splits = want > 1 ? (max_keys + *kps - 1) / *kps : 1;
}

static void cu_attention_gated(qvlm_stream *st, float *out, const float *q, int64_t ldq, const qvlm_kv_view *kv,
                               int64_t pos0, int64_t T, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                               float scale, const float *gate, int64_t ldg) {
    cuda_stream *s = cs_of(st);
    if (head_dim > QCU_ATTN_MAX_HEAD_DIM) {
        qvlm_error e;
        fail(s, qvlm_errorf(&e, QVLM_E_UNSUPPORTED, "cuda: attention head_dim %lld (at most %d)", (long long)head_dim,
                            QCU_ATTN_MAX_HEAD_DIM), &e);
        return;
    }
    ARGS(qcu_attention_args, a);
    a.out = out, a.q = q, a.ldq = ldq, a.n_blocks = kv->n_blocks, a.block_tokens = kv->block_tokens;
    a.k_off = (int64_t)kv->k_offset, a.v_off = (int64_t)kv->v_offset, a.T = T, a.n_heads = n_heads;
    a.n_kv_heads = n_kv_heads, a.head_dim = head_dim, a.scale = scale, a.gate = gate, a.ldg = ldg;
    /* The split depends on the table's capacity, not on pos0, so recorded steps keep their shape
     * until the sequence needs another block. */
    qcu_attention_plan(T, n_heads, n_kv_heads, head_dim, kv->n_blocks * kv->block_tokens, s->be->n_sm, &a.n_splits,
                       &a.keys_per_split);
    if (a.n_splits > 1) {
        a.partial = scratch(s, qcu_attention_partial_bytes(T * n_heads, a.n_splits, head_dim));
        if (!a.partial) return;
    }
    a.pos0 = stage_kv(s, kv, pos0, &a.blocks);
    if (a.pos0) SUBMIT(s, qcu_attention, a);
}

static void cu_attention(qvlm_stream *st, float *out, const float *q, int64_t ldq, const qvlm_kv_view *kv, int64_t pos0,
                         int64_t T, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float scale) {
    cu_attention_gated(st, out, q, ldq, kv, pos0, T, n_heads, n_kv_heads, head_dim, scale, NULL, 0);
}

static void cu_attention_segments(qvlm_stream *st, float *out, const float *qkv, const int64_t *seg, int64_t n_seg,
                                  int64_t n_heads, int64_t head_dim, float scale) {
    cuda_stream *s = cs_of(st);
    if (head_dim > QCU_ATTN_MAX_HEAD_DIM) {
        qvlm_error e;
        fail(s, qvlm_errorf(&e, QVLM_E_UNSUPPORTED, "cuda: attention head_dim %lld (at most %d)", (long long)head_dim,
                            QCU_ATTN_MAX_HEAD_DIM), &e);
        return;
    }
    ARGS(qcu_attention_segments_args, a);
    a.out = out, a.qkv = qkv, a.n_seg = n_seg, a.n_rows = seg[n_seg], a.n_heads = n_heads, a.head_dim = head_dim;
    a.scale = scale;
    int64_t longest = 0;
    for (int64_t i = 0; i < n_seg; i++) longest = QVLM_MAX(longest, seg[i + 1] - seg[i]);
    choose_splits(s, ((a.n_rows + 31) / 32) * n_heads, a.n_rows, &a.n_splits, &a.keys_per_split);
    (void)longest;
    if (a.n_splits > 1) {
        a.partial = scratch(s, qcu_attention_partial_bytes(a.n_rows * n_heads, a.n_splits, head_dim));
        if (!a.partial) return;
    }
    a.seg = stage(s, seg, (size_t)(n_seg + 1) * sizeof(int64_t));
    if (a.seg) SUBMIT(s, qcu_attention_segments, a);
}

/* ---- mixture of experts ---------------------------------------------------------------------------------------- */

static void cu_moe_route(qvlm_stream *st, int32_t *idx, float *weight, const float *logits, int64_t n_rows,
                         int64_t n_experts, int64_t k) {
    cuda_stream *s = cs_of(st);
    const size_t nb = (size_t)(n_rows * k) * sizeof(int32_t), al = (nb + 255) & ~(size_t)255;
    uint8_t *buf = scratch(s, 2 * al);
    if (!buf) return;
    ARGS(qcu_moe_route_args, a);
    a.idx = (int32_t *)buf, a.weight = (float *)(buf + al), a.logits = logits, a.n_rows = n_rows;
    a.n_experts = n_experts, a.k = k;
    SUBMIT(s, qcu_moe_route, a);
    cu_download(st, idx, buf, nb);
    cu_download(st, weight, buf + al, nb);
}

/* ---- greedy choice --------------------------------------------------------------------------------------------- */

/* The kernel leaves each row's per-slice bests in scratch; they come back (a few hundred bytes a
 * row, not the row) and are merged here in slice order, strictly greater winning: the scan's
 * first-maximum rule across slices. */
static void cu_argmax(qvlm_stream *st, int32_t *ids, const float *x, int64_t n_rows, int64_t n) {
    cuda_stream *s = cs_of(st);
    qcu_argmax_best best[2048]; /* rows come back in groups that fit */
    const int64_t nb = qcu_argmax_blocks(n), per_chunk = (int64_t)(sizeof(best) / sizeof(best[0])) / nb;
    for (int64_t r0 = 0; r0 < n_rows && !s->status; r0 += per_chunk) {
        const int64_t rows = n_rows - r0 < per_chunk ? n_rows - r0 : per_chunk;
        const size_t bytes = (size_t)(rows * nb) * sizeof(qcu_argmax_best);
        qcu_argmax_best *dev = scratch(s, bytes);
        if (!dev) return;
        ARGS(qcu_argmax_args, a);
        a.x = x + r0 * n, a.best = dev, a.n_rows = rows, a.n = n;
        SUBMIT(s, qcu_argmax, a);
        cu_download(st, best, dev, bytes);
        if (s->status) return;
        const qcu_argmax_best *b = best;
        for (int64_t r = 0; r < rows; r++, b += nb) {
            int64_t k = -1;
            for (int64_t j = 0; j < nb && b[0].i != -2; j++)
                if (b[j].i >= 0 && (k < 0 || b[j].v > b[k].v)) k = j;
            ids[r0 + r] = k >= 0 ? b[k].i : 0;
        }
    }
}

static const qvlm_tensor *expert_t(const qvlm_tensor *t0, size_t stride, int64_t e) {
    return (const qvlm_tensor *)((const char *)t0 + (size_t)e * stride);
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* Whether tensor t is a [rows][cols] matrix of dtype dt with 16-byte aligned data. */
static bool matrix_like(const qvlm_tensor *t, int64_t rows, int64_t cols, qvlm_dtype dt) {
    return t->n_dims == 2 && t->ne[0] == rows && t->ne[1] == cols && t->dtype == dt && aligned16(t->data);
}

/* Whether every expert has expert 0's dtypes and shapes and 16-byte aligned data (the
 * kernels address all experts alike). */
static bool experts_uniform(const qvlm_moe_experts *ex) {
    const qvlm_tensor *g0 = ex->gate, *d0 = ex->down;
    const int64_t I = mm_rows(g0), H = qvlm_tensor_cols(g0);
    bool ok = g0->n_dims == 2 && d0->n_dims == 2;
    for (int64_t e = 0; ok && e < ex->n_experts; e++) {
        const qvlm_tensor *t[3] = {expert_t(ex->gate, ex->stride, e), expert_t(ex->up, ex->stride, e),
                                   expert_t(ex->down, ex->stride, e)};
        for (int i = 0; i < 3; i++) ok &= matrix_like(t[i], i < 2 ? I : H, i < 2 ? H : I, i < 2 ? g0->dtype : d0->dtype);
    }
    return ok;
}

/* A layer's device table of expert weight pointers, [E][3] {gate, up, down}, made on first
 * use and kept until the first expert's gate weight is freed (or the backend is); NULL when the
 * experts are not uniform or on failure (then recorded on the stream). */
static const void *const *moe_table(cuda_stream *s, const qvlm_moe_experts *ex) {
    cuda_backend *be = s->be;
    const uintptr_t key = (uintptr_t)ex->gate->data;
    uint64_t v = 0;
    pthread_mutex_lock(&be->mu);
    bool have = pm_get(&be->moe, key, &v);
    pthread_mutex_unlock(&be->mu);
    if (have) return v == MOE_NO_TABLE ? NULL : (const void *const *)(uintptr_t)v;
    void *d = NULL;
    qvlm_error e;
    if (experts_uniform(ex)) {
        const size_t n = (size_t)(3 * ex->n_experts);
        const void **h = malloc(n * sizeof(*h));
        if (!h) {
            fail(s, qvlm_errorf(&e, QVLM_E_NOMEM, "cuda: out of memory"), &e);
            return NULL;
        }
        for (int64_t x = 0; x < ex->n_experts; x++) {
            h[3 * x] = expert_t(ex->gate, ex->stride, x)->data;
            h[3 * x + 1] = expert_t(ex->up, ex->stride, x)->data;
            h[3 * x + 2] = expert_t(ex->down, ex->stride, x)->data;
        }
        /* A blocking copy on the legacy stream: the non-blocking streams do not wait for it, and
         * nothing of theirs reads the table before this returns. */
        qvlm_status rc = QVLM_CU(&e, cudaMalloc(&d, n * sizeof(*h)));
        if (!rc) rc = QVLM_CU(&e, cudaMemcpy(d, h, n * sizeof(*h), cudaMemcpyHostToDevice));
        free(h);
        if (rc) {
            cudaFree(d);
            fail(s, rc, &e);
            return NULL;
        }
    }
    pthread_mutex_lock(&be->mu);
    if (pm_get(&be->moe, key, &v)) { /* another stream made it meanwhile */
        pthread_mutex_unlock(&be->mu);
        cudaFree(d);
        return v == MOE_NO_TABLE ? NULL : (const void *const *)(uintptr_t)v;
    }
    bool ok = pm_put(&be->moe, key, d ? (uint64_t)(uintptr_t)d : MOE_NO_TABLE);
    pthread_mutex_unlock(&be->mu);
    if (!ok) {
        cudaFree(d);
        fail(s, qvlm_errorf(&e, QVLM_E_NOMEM, "cuda: out of memory"), &e);
        return NULL;
    }
    return d;
}

/* One batched product over the active experts (qcu_gemm_batched_args). */
static void gemm_batched(cuda_stream *s, const void *const *w, const void *const *x, float *const *y, int64_t n,
                         int64_t k, int64_t d, int64_t batch, bool bf16) {
    if (!w || !x || !y || !blas_ready(s)) return;
    ARGS(qcu_gemm_batched_args, g);
    g.handle = s->blas, g.workspace = s->blas_ws, g.workspace_bytes = s->blas_ws ? (int64_t)BLAS_WS_BYTES : 0;
    g.w = w, g.x = x, g.y = y, g.n = n, g.k = k, g.d = d, g.batch = batch, g.bf16 = bf16;
    SUBMIT(s, qcu_gemm_batched, g);
}

/* What moe_batched works out on the host from the routing. */
typedef struct moe_plan {
    int64_t n_act, n_max;  /* active experts; most rows routed to one */
    int32_t *act;          /* [n_act] their ids, ascending */
    int32_t *src;          /* [n_act * n_max] slot -> row, -1 for padding */
    int32_t *pos;          /* [T][k] slots of each row's experts, in ascending expert id */
    float *w;              /* [T][k] their weights, in the same order */
} moe_plan;

static void moe_plan_free(moe_plan *p) { free(p->act), free(p->src), free(p->pos), free(p->w); }

/* Slots from the routed ids: expert a's rows in ascending row order (the default's order).
 * false on an impossible id or out of memory. */
static bool moe_plan_make(moe_plan *p, const int32_t *idx, const float *wt, int64_t T, int64_t k, int64_t E) {
    memset(p, 0, sizeof(*p));
    int32_t *cnt = calloc((size_t)E, sizeof(int32_t)), *slot = calloc((size_t)E, sizeof(int32_t));
    p->act = malloc((size_t)E * sizeof(int32_t));
    p->pos = malloc((size_t)(T * k) * sizeof(int32_t));
    p->w = malloc((size_t)(T * k) * sizeof(float));
    bool ok = cnt && slot && p->act && p->pos && p->w && k <= 64;
    for (int64_t i = 0; ok && i < T * k; i++) ok = idx[i] >= 0 && idx[i] < E && ++cnt[idx[i]] > 0;
    for (int64_t e = 0; ok && e < E; e++)
        if (cnt[e]) {
            slot[e] = (int32_t)p->n_act; /* the expert's batch, for now */
            p->act[p->n_act++] = (int32_t)e;
            p->n_max = cnt[e] > p->n_max ? cnt[e] : p->n_max;
        }
    if (ok) p->src = malloc((size_t)(p->n_act * p->n_max) * sizeof(int32_t));
    ok = ok && p->src;
    for (int64_t i = 0; ok && i < p->n_act * p->n_max; i++) p->src[i] = -1;
    for (int64_t e = 0; ok && e < E; e++) cnt[e] = 0; /* rows placed so far */
    for (int64_t r = 0; ok && r < T; r++) {
        int32_t pe[64], pa[64];
        float pw[64];
        for (int64_t j = 0; j < k; j++) { /* the row's experts by ascending id (insertion: k is small) */
            const int32_t e = idx[r * k + j], at = (int32_t)(slot[e] * p->n_max + cnt[e]++);
            p->src[at] = (int32_t)r;
            int64_t m = j;
            for (; m > 0 && pe[m - 1] > e; m--) pe[m] = pe[m - 1], pa[m] = pa[m - 1], pw[m] = pw[m - 1];
            pe[m] = e, pa[m] = at, pw[m] = wt[r * k + j];
        }
        memcpy(p->pos + r * k, pa, (size_t)k * sizeof(int32_t));
        memcpy(p->w + r * k, pw, (size_t)k * sizeof(float));
    }
    free(cnt), free(slot);
    if (!ok) moe_plan_free(p);
    return ok;
}

/* Many rows (prefill): routing on the host as in the default, then each active expert's rows
 * gathered into one zero-padded batch, three batched cuBLAS products (gate, up, down) and one
 * combine: ~8 launches a layer, where the default makes ~9 per active expert (a 35B-A3B
 * prefill of 512 tokens touches every one of its 256). The numbers are the default's: x
 * rounded to bf16 once, bf16 products with f32 sums (or f32 throughout at f32 precision),
 * SiLU in f32, the experts added in ascending id with each term rounded first. false: not
 * taken (non-uniform experts, non-bf16 weights at bf16 precision, or a batch too large for
 * 2 GiB of scratch); the caller runs the default. */
static bool moe_batched(qvlm_stream *st, float *acc, const float *x, int64_t T, const float *logits,
                        const qvlm_moe_experts *ex, const qvlm_moe_scratch *scr) {
    cuda_stream *s = cs_of(st);
    const bool bf16 = s->be->base.precision == QVLM_COMPUTE_BF16;
    if (!experts_uniform(ex) || (bf16 && (ex->gate->dtype != QVLM_DTYPE_BF16 || ex->down->dtype != QVLM_DTYPE_BF16)))
        return false;
    const int64_t E = ex->n_experts, k = ex->k, H = qvlm_tensor_cols(ex->gate), I = mm_rows(ex->gate);
    cu_moe_route(st, scr->idx, scr->w, logits, T, E, k);
    if (s->status) return true;
    moe_plan p;
    qvlm_error err;
    if (!moe_plan_make(&p, scr->idx, scr->w, T, k, E)) {
        fail(s, qvlm_errorf(&err, QVLM_E_NOMEM, "cuda: routing plan for %lld rows", (long long)T), &err);
        return true;
    }
    const int64_t ns = p.n_act * p.n_max, xs = bf16 ? 2 : 4;
    const size_t al = 256, b_x = ((size_t)(ns * H * xs) + al) & ~(al - 1), b_h = ((size_t)(ns * I) * 4 + al) & ~(al - 1);
    const size_t b_hb = bf16 ? ((size_t)(ns * I) * 2 + al) & ~(al - 1) : 0, b_y = ((size_t)(ns * H) * 4 + al) & ~(al - 1);
    if (b_x + 2 * b_h + b_hb + b_y > ((size_t)2 << 30)) {
        moe_plan_free(&p);
        return false; /* NEVER on the models' shapes below ~16k rows a prompt */
    }
    uint8_t *buf = scratch(s, b_x + 2 * b_h + b_hb + b_y);
    const void **ptr = malloc((size_t)(8 * p.n_act) * sizeof(void *));
    if (!buf || !ptr) {
        if (!ptr) fail(s, qvlm_errorf(&err, QVLM_E_NOMEM, "cuda: out of memory"), &err);
        free(ptr), moe_plan_free(&p);
        return true;
    }
    uint8_t *xg = buf, *hg = xg + b_x, *tg = hg + b_h, *hb = bf16 ? tg + b_h : hg, *yg = tg + b_h + b_hb;
    for (int64_t a = 0; a < p.n_act && !s->status; a++) {
        const int64_t e = p.act[a];
        const qvlm_tensor *t[3] = {expert_t(ex->gate, ex->stride, e), expert_t(ex->up, ex->stride, e),
                                   expert_t(ex->down, ex->stride, e)};
        for (int i = 0; i < 3; i++) ptr[i * p.n_act + a] = bf16 ? t[i]->data : weight_f32(s, t[i], H * I);
        ptr[3 * p.n_act + a] = xg + (size_t)(a * p.n_max * H * xs);               /* gate/up x */
        ptr[4 * p.n_act + a] = hg + (size_t)(a * p.n_max * I) * 4;                /* gate out */
        ptr[5 * p.n_act + a] = tg + (size_t)(a * p.n_max * I) * 4;                /* up out */
        ptr[6 * p.n_act + a] = hb + (size_t)(a * p.n_max * I) * (bf16 ? 2 : 4);   /* down x */
        ptr[7 * p.n_act + a] = yg + (size_t)(a * p.n_max * H) * 4;                /* down out */
    }
    const void *const *dp = s->status ? NULL : stage(s, ptr, (size_t)(8 * p.n_act) * sizeof(void *));
    ARGS(qcu_moe_gather_args, g);
    g.y = xg, g.x = x, g.n_slots = ns, g.H = H, g.to_bf16 = bf16;
    g.src = dp ? stage(s, p.src, (size_t)ns * sizeof(int32_t)) : NULL;
    if (g.src) SUBMIT(s, qcu_moe_gather, g);
    const int64_t na = p.n_act;
    if (dp) {
        gemm_batched(s, dp, dp + 3 * na, (float *const *)(dp + 4 * na), p.n_max, H, I, na, bf16);
        gemm_batched(s, dp + na, dp + 3 * na, (float *const *)(dp + 5 * na), p.n_max, H, I, na, bf16);
        cu_silu_mul(st, (float *)hg, I, (const float *)hg, I, (const float *)tg, I, ns, I);
        if (bf16) {
            ARGS(qcu_round_args, r);
            r.y = hb, r.x = (const float *)hg, r.ldx = I, r.n_rows = ns, r.cols = I, r.to_bf16 = 1;
            SUBMIT(s, qcu_round, r);
        }
        gemm_batched(s, dp + 2 * na, dp + 6 * na, (float *const *)(dp + 7 * na), p.n_max, I, H, na, bf16);
        ARGS(qcu_moe_combine_args, c);
        c.acc = acc, c.y = (const float *)yg, c.T = T, c.k = k, c.H = H;
        c.pos = stage(s, p.pos, (size_t)(T * k) * sizeof(int32_t));
        c.weight = stage(s, p.w, (size_t)(T * k) * sizeof(float));
        if (c.pos && c.weight) SUBMIT(s, qcu_moe_combine, c);
    }
    free(ptr), moe_plan_free(&p);
    return true;
}

/* The routed experts of few rows on the device (moe.cu), and with sh the shared expert as one
 * more slot, writing out instead of acc. false: not this path (nothing enqueued, or a
 * failure recorded on the stream). */
static bool moe_few_rows(cuda_stream *s, float *acc, const float *x, int64_t T, const float *logits,
                         const qvlm_moe_experts *ex, const qvlm_moe_shared *sh, float *out) {
    const void *const *tab = T <= QCU_GEMV_MAX_ROWS ? moe_table(s, ex) : NULL;
    if (!tab) return false;
    const int64_t k = ex->k, H = qvlm_tensor_cols(ex->gate), I = mm_rows(ex->gate);
    const int64_t Is = sh ? sh->gate->ne[0] : 0;
    if (sh && !(matrix_like(sh->gate, Is, H, ex->gate->dtype) && matrix_like(sh->up, Is, H, ex->gate->dtype) &&
                matrix_like(sh->down, H, Is, ex->down->dtype)))
        return false;
    const size_t nb = ((size_t)(T * k) * sizeof(int32_t) + 255) & ~(size_t)255;
    uint8_t *buf = scratch(s, 2 * nb + (size_t)(T * k * I + T * Is) * sizeof(float));
    if (!buf) return false;
    ARGS(qcu_moe_route_args, r);
    r.idx = (int32_t *)buf, r.weight = (float *)(buf + nb), r.logits = logits, r.n_rows = T;
    r.n_experts = ex->n_experts, r.k = k;
    SUBMIT(s, qcu_moe_route, r);
    ARGS(qcu_moe_experts_args, a);
    a.acc = acc, a.h = (float *)(buf + 2 * nb), a.x = x, a.idx = r.idx, a.weight = r.weight, a.experts = tab;
    a.T = T, a.k = k, a.H = H, a.I = I, a.wdt = dt_of(ex->gate), a.ddt = dt_of(ex->down);
    const int64_t wsize = ex->gate->dtype == QVLM_DTYPE_F32 ? 4 : 2, dsize = ex->down->dtype == QVLM_DTYPE_F32 ? 4 : 2;
    a.vec = (H * wsize) % 16 == 0 && (I * dsize) % 16 == 0 && (Is * dsize) % 16 == 0 && aligned16(x);
    a.round_bf16 = s->be->base.precision == QVLM_COMPUTE_BF16;
    if (sh) a.sh_gate = sh->gate->data, a.sh_up = sh->up->data, a.sh_down = sh->down->data, a.sh_logit = sh->gate_logit;
    a.out = out, a.Is = Is;
    SUBMIT(s, qcu_moe_experts, a);
    return true;
}

/* Decode (T <= QCU_GEMV_MAX_ROWS): routing, experts and their sum on the device, no host
 * round trip, so a decode step stays one graph. More rows: moe_batched. Experts neither
 * takes: the default (host routing, per-expert products through cuBLAS). */
static void cu_moe_experts(qvlm_stream *st, float *acc, const float *x, int64_t T, const float *logits,
                           const qvlm_moe_experts *ex, const qvlm_moe_scratch *scr) {
    cuda_stream *s = cs_of(st);
    if (s->status || T <= 0) return;
    if (T > QCU_GEMV_MAX_ROWS && s->be->moe_batched && moe_batched(st, acc, x, T, logits, ex, scr)) return;
    if (!moe_few_rows(s, acc, x, T, logits, ex, NULL, NULL) && !s->status)
        qvlm_moe_experts_default(st, acc, x, T, logits, ex, scr);
}

/* Few rows: the shared expert runs inside the routed experts' two kernels, which saves its
 * two GEMVs and the gated add (three launches a layer in a decode step). */
static void cu_moe_block(qvlm_stream *st, float *out, float *acc, const float *x, int64_t T, const float *logits,
                         const qvlm_moe_experts *ex, const qvlm_moe_shared *sh, const qvlm_moe_scratch *scr) {
    cuda_stream *s = cs_of(st);
    if (s->status || T <= 0) return;
    if (s->be->moe_shared && moe_few_rows(s, acc, x, T, logits, ex, sh, out)) return;
    if (!s->status) qvlm_moe_block_default(st, out, acc, x, T, logits, ex, sh, scr);
}

static void cu_gather_rows(qvlm_stream *st, float *y, const float *x, const int32_t *rows, int64_t n, int64_t dim) {
    cuda_stream *s = cs_of(st);
    ARGS(qcu_gather_rows_args, a);
    a.y = y, a.x = x, a.n = n, a.dim = dim;
    a.rows = stage(s, rows, (size_t)n * sizeof(int32_t));
    if (a.rows) SUBMIT(s, qcu_gather_rows, a);
}

static void cu_scatter_add_rows(qvlm_stream *st, float *y, const float *x, const int32_t *rows, const float *scale,
                                int64_t n, int64_t dim) {
    cuda_stream *s = cs_of(st);
    ARGS(qcu_scatter_add_rows_args, a);
    a.y = y, a.x = x, a.n = n, a.dim = dim;
    a.rows = stage(s, rows, (size_t)n * sizeof(int32_t));
    a.scale = stage(s, scale, (size_t)n * sizeof(float));
    if (a.rows && a.scale) SUBMIT(s, qcu_scatter_add_rows, a);
}

/* ==== the table and creation ========================================================================================= */

static const qvlm_backend_ops CUDA_OPS = {
    .name = cu_name,
    .destroy = cu_destroy,
    .host_pool = cu_host_pool,
    .alloc = cu_alloc,
    .free = cu_free,
    .mem_stats = cu_mem_stats,
    .mem_reset_peak = cu_mem_reset_peak,
    .weight = cu_weight,
    .weight_free = cu_weight_free,
    .stream_create = cu_stream_create,
    .stream_destroy = cu_stream_destroy,
    .reserve_matmul = cu_reserve_matmul,
    .sync = cu_sync,
    .upload = cu_upload,
    .download = cu_download,
    .copy = cu_copy,
    .zero = cu_zero,
    .get_rows = cu_get_rows,
    .add_weighted_rows = cu_add_weighted_rows,
    .matmul = cu_matmul,
    .rms_norm = cu_rms_norm,
    .layer_norm = cu_layer_norm,
    .add = cu_add,
    .silu_mul = cu_silu_mul,
    .gelu = cu_gelu,
    .sigmoid_mul = cu_sigmoid_mul,
    .conv1d_silu = cu_conv1d_silu,
    .gated_delta = cu_gated_delta,
    .gated_rms_norm = cu_gated_rms_norm,
    .rope_multimodal = cu_rope_multimodal,
    .rope_vision = cu_rope_vision,
    .kv_store = cu_kv_store,
    .attention = cu_attention,
    .attention_segments = cu_attention_segments,
    .moe_route = cu_moe_route,
    .gather_rows = cu_gather_rows,
    .scatter_add_rows = cu_scatter_add_rows,
    .status = cu_status_op,
    .step_begin = cu_step_begin,
    .step_end = cu_step_end,
    .matmul_multi = cu_matmul_multi,
    .matmul_swiglu = cu_matmul_swiglu,
    .attn_heads = cu_attn_heads,
    .attention_gated = cu_attention_gated,
    .add_gated = cu_add_gated,
    .add_rms_norm = cu_add_rms_norm,
    .gated_delta_norm = cu_gated_delta_norm,
    .gated_delta_conv_norm = cu_gated_delta_conv_norm,
    .moe_experts = cu_moe_experts,
    .argmax = cu_argmax,
    .moe_block = cu_moe_block,
};

static bool env_flag(const char *name, bool dflt) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    return strcmp(v, "0") != 0 && strcmp(v, "off") != 0;
}

qvlm_status qvlm_backend_cuda_create(const qvlm_backend_params *p, qvlm_backend **out, qvlm_error *err) {
    *out = NULL;
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev < 1) {
        cudaGetLastError();
        return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "cuda: no CUDA device is available");
    }
    struct cudaDeviceProp prop;
    qvlm_status rc = QVLM_CU(err, cudaGetDeviceProperties(&prop, 0));
    if (rc) return rc;
    cuda_backend *be = calloc(1, sizeof(*be));
    if (!be) return qvlm_errorf(err, QVLM_E_NOMEM, "cuda backend: out of memory");
    pthread_mutex_init(&be->mu, NULL);
    be->base.ops = &CUDA_OPS;
    be->base.kind = QVLM_BACKEND_CUDA;
    /* Measured on an H100 (Qwen3.5-0.8B shapes): a prefill pass over a handful of tokens takes
     * ~5 ms, about as long as a pass over 100-250 tokens. */
    be->base.forward_floor_tokens = 256;
    be->base.precision = p->precision;
    be->n_sm = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
    be->smem_optin = prop.sharedMemPerBlockOptin;
    be->graphs = env_flag("QVLM_CUDA_GRAPHS", true);
    be->moe_batched = env_flag("QVLM_CUDA_MOE_BATCHED", true); /* 0: the per-expert default, to compare */
    be->moe_shared = env_flag("QVLM_CUDA_MOE_SHARED", true);   /* 0: the shared expert on its own, to compare */
    be->gdn_fused = env_flag("QVLM_CUDA_GDN_FUSED", true);     /* 0: conv1d and the recurrence apart, to compare */
    be->sync_each = env_flag("QVLM_CUDA_SYNC", false);
    be->stats = env_flag("QVLM_CUDA_STATS", false);
    be->profile = env_flag("QVLM_CUDA_PROFILE", false);
    if (be->profile) be->graphs = false; /* op by op, each timed */
    be->pdl = prop.major >= 9 && env_flag("QVLM_CUDA_PDL", true);
    int e = qcu_init(be->smem_optin, be->n_sm, be->pdl);
    if (e) rc = qvlm_errorf(err, QVLM_E_UNSUPPORTED, "cuda: kernel set-up on %s failed: %s", prop.name,
                            cudaGetErrorString((cudaError_t)e));
    if (!rc) rc = qvlm_pool_create(p->n_threads, &be->pool, err);
    if (rc) {
        cudaGetLastError();
        pthread_mutex_destroy(&be->mu);
        free(be);
        return rc;
    }
    snprintf(be->name, sizeof(be->name), "cuda (%s, sm_%d%d, %d SMs, %s%s%s)", prop.name, prop.major, prop.minor, be->n_sm,
             p->precision == QVLM_COMPUTE_BF16 ? "bf16" : "f32", be->graphs ? ", graphs" : "", be->pdl ? ", pdl" : "");
    *out = &be->base;
    return QVLM_OK;
}
