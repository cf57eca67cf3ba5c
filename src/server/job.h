/* job.h - one chat completion request's state, shared by the connection thread that received
 * it and the worker (slot) that answers it. Refcounted: both hold a reference; whoever drops
 * the last one frees it. `mu` guards everything below it; `cv` is broadcast on every change
 * (state, new output, cancel). */
#ifndef QVLM_SERVER_JOB_H
#define QVLM_SERVER_JOB_H

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include "core/strbuf.h"
#include "qvlm.h"
#include "server/api_error.h"
#include "server/request.h"

typedef enum srv_job_state {
    SRV_JOB_QUEUED = 0, /* waiting for a slot */
    SRV_JOB_PROMPT,     /* a slot is making the prompt */
    SRV_JOB_ANSWER,     /* generating: for a stream, `out` fills with SSE events */
    SRV_JOB_DONE        /* finished, failed or cancelled; `out` holds the rest */
} srv_job_state;

typedef struct srv_job {
    srv_request req;      /* immutable once submitted */
    double arrival_ms;    /* for the time to first token */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    srv_job_state state;
    bool cancelled;       /* the client left, or the server is stopping */
    qvlm_session *session; /* the slot's session while it runs this job, else NULL */
    bool failed;          /* `error` holds why; before ANSWER the connection answers with it */
    srv_error error;
    qvlm_buf out;         /* stream: SSE bytes not yet sent; otherwise the response body at DONE */
    int client_fd;        /* the connection's socket, or -1; open while the connection waits for
                             the job to start answering, so the worker may look at it then */
} srv_job;

/* A job for `req` (moved into the job: *req is left empty). One reference, the caller's. */
srv_job *srv_job_create(srv_request *req, double arrival_ms);
void srv_job_ref(srv_job *j);
void srv_job_unref(srv_job *j);
/* Ask the job to stop: a queued job is skipped, a running one is cancelled in its session. */
void srv_job_cancel(srv_job *j);
bool srv_job_is_cancelled(srv_job *j);
/* Wait up to timeout_ms for the state to reach `at_least`; returns the state then. */
srv_job_state srv_job_wait(srv_job *j, srv_job_state at_least, int timeout_ms);
/* The monotonic-clock deadline timeout_ms from now, for timed waits on `cv`. */
void srv_job_deadline(struct timespec *until, int timeout_ms);
/* Worker side: set the state (and the session, NULL when done) and wake the connection. */
void srv_job_set_state(srv_job *j, srv_job_state st, qvlm_session *s);

#endif /* QVLM_SERVER_JOB_H */
