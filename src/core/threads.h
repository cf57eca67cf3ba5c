/* threads.h - a small fork-join thread pool used by every heavy op.
 *
 * qvlm_pool_run(pool, fn, ctx) calls fn(ctx, ith, nth) once for every ith in [0, nth) and
 * returns when all calls have finished. Ops split their rows by (ith, nth) the way ggml does,
 * so no two calls write the same row, and index per-call scratch by ith (two calls with the
 * same ith never run at once).
 *
 * The calls ("slots") are claimed dynamically: the calling thread and every awake worker
 * take the next unclaimed slot until none is left. A worker that the OS has descheduled (the
 * machine is shared, or has as many busy threads as cores) therefore never holds a job up
 * unless it has already started a slot: the other threads run its share. Which thread runs a
 * slot is not fixed, so fn must not depend on the thread (our kernels' results depend only on
 * ith and nth).
 *
 * Workers spin briefly after a job (decode issues hundreds of small jobs per token and a
 * condition-variable wake costs microseconds), then sleep. One job runs at a time: callers
 * from several threads are serialised by a lock, so sessions may share one pool.
 */
#ifndef QVLM_CORE_THREADS_H
#define QVLM_CORE_THREADS_H

#include <stddef.h>

#include "core/status.h"

typedef struct qvlm_pool qvlm_pool;
typedef void (*qvlm_task_fn)(void *ctx, int ith, int nth);

/* Create a pool of n_threads (including the caller's own thread); n_threads <= 0 picks the
 * number of online CPUs. */
qvlm_status qvlm_pool_create(int n_threads, qvlm_pool **out, qvlm_error *err);
void qvlm_pool_destroy(qvlm_pool *pool); /* NULL is a no-op; must not be running a job */
int qvlm_pool_size(const qvlm_pool *pool);

/* Run fn on all threads of the pool. pool == NULL runs fn(ctx, 0, 1) inline. */
void qvlm_pool_run(qvlm_pool *pool, qvlm_task_fn fn, void *ctx);
/* Same with at most max_threads threads (small jobs are not worth waking everybody). */
void qvlm_pool_run_n(qvlm_pool *pool, qvlm_task_fn fn, void *ctx, int max_threads);

/* memcpy(dst, src, n) split over the pool's threads in 4 KiB pieces (a memory-bound copy
 * goes faster on more cores; pool == NULL copies inline). */
void qvlm_pool_memcpy(qvlm_pool *pool, void *dst, const void *src, size_t n);

/* Rows [*r0, *r1) of n_rows for thread ith of nth, in contiguous slices. */
static inline void qvlm_split_rows(long n_rows, int ith, int nth, long *r0, long *r1) {
    long per = (n_rows + nth - 1) / nth;
    long a = per * ith, b = a + per;
    *r0 = a < n_rows ? a : n_rows;
    *r1 = b < n_rows ? b : n_rows;
}

/* Number of online CPUs (at least 1). */
int qvlm_cpu_count(void);

#endif /* QVLM_CORE_THREADS_H */
