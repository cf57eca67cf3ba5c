/* slots.h - the workers that answer requests: `n` threads, each owning one session (all on
 * one model, sharing one cache), fed from a bounded FIFO queue. A full queue refuses at once
 * (the server answers 503), so memory and latency stay bounded under load. */
#ifndef QVLM_SERVER_SLOTS_H
#define QVLM_SERVER_SLOTS_H

#include "qvlm.h"
#include "server/job.h"

typedef struct srv_slots srv_slots;
/* Answer `job` on session `s` (the worker's thread); must end with the job DONE. */
typedef void (*srv_run_fn)(void *ctx, srv_job *job, qvlm_session *s);

/* Start n workers with a session each (params borrowed for the call; the cache in it is kept)
 * and room for queue_max waiting jobs. Errors: those of qvlm_session_create, QVLM_E_NOMEM. */
qvlm_status srv_slots_create(qvlm_model *m, const qvlm_session_params *sp, int n, int queue_max, srv_run_fn run, void *ctx,
                             srv_slots **out, qvlm_error *err);
/* Queue a job (the slots take their own reference). QVLM_E_BUSY: the queue is full or the
 * slots are closing; the job is not kept. */
qvlm_status srv_slots_submit(srv_slots *sl, srv_job *job, qvlm_error *err);
void srv_slots_counts(srv_slots *sl, int *busy, int *queued);
/* Cancel every queued and running job (shutdown after the drain timeout). */
void srv_slots_cancel_all(srv_slots *sl);
/* Refuse new jobs, finish (cancelled) queued ones, join the workers, free the sessions. */
void srv_slots_destroy(srv_slots *sl);

#endif /* QVLM_SERVER_SLOTS_H */
