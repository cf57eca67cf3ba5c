/* threads.c - fork-join pool with spin-then-sleep workers (see threads.h). */
#include "core/threads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* ~50-100 us of spinning before a worker sleeps: long enough to bridge the gap between
 * the ops of one token, short enough not to burn a core while the server is idle. */
#define SPIN_ITERS 20000

struct worker {
    struct qvlm_pool *pool;
    pthread_t tid;
    int ith;
};

struct qvlm_pool {
    int n_threads;
    struct worker *workers; /* [n_threads - 1]; the caller is thread 0 */

    pthread_mutex_t run_lock; /* serialises callers of qvlm_pool_run */

    /* The current job. Written by the caller before `claim` and `generation` are published. */
    qvlm_task_fn fn;
    void *ctx;
    int nth;
    uint32_t job_id; /* under run_lock */

    /* (job id << 32) | (nth << 16) | next unclaimed slot, in one word: a claim is a
     * compare-and-swap of the whole word, so it succeeds only while that job still has an
     * unclaimed slot. Then the job cannot have finished, and fn/ctx are still its own; a
     * worker holding a finished job's word can never take a slot of the next one. */
    _Atomic uint64_t claim;
    _Atomic int n_done;          /* slots of the current job that have returned */
    _Atomic unsigned generation; /* bumped once per job: wakes the workers */
    _Atomic int stop;

    pthread_mutex_t sleep_lock;
    pthread_cond_t wake;
    int n_sleeping; /* guarded by sleep_lock */
};

int qvlm_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Run slots of job `job` until none is left unclaimed (or the job is no longer current). */
static void run_slots(struct qvlm_pool *p, uint32_t job) {
    for (;;) {
        uint64_t c = atomic_load_explicit(&p->claim, memory_order_acquire);
        int next = (int)(c & 0xffff), nth = (int)((c >> 16) & 0xffff);
        if ((uint32_t)(c >> 32) != job || next >= nth) return;
        if (!atomic_compare_exchange_weak_explicit(&p->claim, &c, c + 1, memory_order_acq_rel, memory_order_acquire))
            continue;
        /* The job cannot finish (nor fn/ctx change) before this slot returns. */
        p->fn(p->ctx, next, nth);
        atomic_fetch_add_explicit(&p->n_done, 1, memory_order_release);
    }
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct qvlm_pool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_acquire)) {
            if (++spins < SPIN_ITERS) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->sleep_lock);
            p->n_sleeping++;
            while (atomic_load(&p->generation) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->wake, &p->sleep_lock);
            p->n_sleeping--;
            pthread_mutex_unlock(&p->sleep_lock);
            spins = 0;
        }
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        seen = gen;
        run_slots(p, (uint32_t)(atomic_load_explicit(&p->claim, memory_order_acquire) >> 32));
    }
    return NULL;
}

qvlm_status qvlm_pool_create(int n_threads, qvlm_pool **out, qvlm_error *err) {
    *out = NULL;
    if (n_threads <= 0) n_threads = qvlm_cpu_count();
    if (n_threads > 1024) return qvlm_errorf(err, QVLM_E_INVALID, "threads = %d (at most 1024)", n_threads);
    struct qvlm_pool *p = calloc(1, sizeof(*p));
    if (!p) return qvlm_errorf(err, QVLM_E_NOMEM, "thread pool: out of memory");
    p->n_threads = n_threads;
    pthread_mutex_init(&p->run_lock, NULL);
    pthread_mutex_init(&p->sleep_lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof(*p->workers));
        if (!p->workers) {
            qvlm_pool_destroy(p);
            return qvlm_errorf(err, QVLM_E_NOMEM, "thread pool: out of memory");
        }
        for (int i = 0; i < n_threads - 1; i++) {
            p->workers[i].pool = p;
            p->workers[i].ith = i + 1;
            if (pthread_create(&p->workers[i].tid, NULL, worker_main, &p->workers[i]) != 0) {
                p->n_threads = i + 1; /* only join the ones that started */
                qvlm_pool_destroy(p);
                return qvlm_errorf(err, QVLM_E_INTERNAL, "thread pool: cannot start thread %d", i + 1);
            }
        }
    }
    *out = p;
    return QVLM_OK;
}

void qvlm_pool_destroy(qvlm_pool *p) {
    if (!p) return;
    atomic_store(&p->stop, 1);
    pthread_mutex_lock(&p->sleep_lock);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->sleep_lock);
    for (int i = 0; i < p->n_threads - 1 && p->workers; i++) pthread_join(p->workers[i].tid, NULL);
    free(p->workers);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->sleep_lock);
    pthread_mutex_destroy(&p->run_lock);
    free(p);
}

int qvlm_pool_size(const qvlm_pool *p) { return p ? p->n_threads : 1; }

void qvlm_pool_run_n(qvlm_pool *p, qvlm_task_fn fn, void *ctx, int max_threads) {
    if (!p || p->n_threads == 1 || max_threads <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->run_lock);
    int nth = max_threads < p->n_threads ? max_threads : p->n_threads;
    uint32_t job = ++p->job_id;
    p->fn = fn;
    p->ctx = ctx;
    p->nth = nth;
    atomic_store_explicit(&p->n_done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->claim, (uint64_t)job << 32 | (uint64_t)nth << 16, memory_order_release);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_acq_rel);
    pthread_mutex_lock(&p->sleep_lock);
    if (p->n_sleeping > 0) pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->sleep_lock);

    run_slots(p, job);

    /* Wait only for slots that workers have started; unclaimed ones were run here. */
    while (atomic_load_explicit(&p->n_done, memory_order_acquire) < nth) cpu_relax();
    pthread_mutex_unlock(&p->run_lock);
}

void qvlm_pool_run(qvlm_pool *p, qvlm_task_fn fn, void *ctx) {
    qvlm_pool_run_n(p, fn, ctx, p ? p->n_threads : 1);
}

struct copy_job {
    unsigned char *dst;
    const unsigned char *src;
    size_t n;
};

static void copy_task(void *p, int ith, int nth) {
    const struct copy_job *j = p;
    long a, b;
    qvlm_split_rows((long)((j->n + 4095) / 4096), ith, nth, &a, &b);
    const size_t lo = (size_t)a * 4096, hi = (size_t)b * 4096 < j->n ? (size_t)b * 4096 : j->n;
    if (hi > lo) memcpy(j->dst + lo, j->src + lo, hi - lo);
}

void qvlm_pool_memcpy(qvlm_pool *pool, void *dst, const void *src, size_t n) {
    struct copy_job j = {dst, src, n};
    qvlm_pool_run(pool, copy_task, &j);
}
