/* job.c - a request's state shared by its connection and its worker (see job.h). */
#include "server/job.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

srv_job *srv_job_create(srv_request *req, double arrival_ms) {
    srv_job *j = calloc(1, sizeof(*j));
    if (!j) return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* timed waits immune to clock changes */
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);
    j->req = *req;
    *req = (srv_request){0};
    j->arrival_ms = arrival_ms;
    j->refs = 1;
    j->client_fd = -1;
    return j;
}

void srv_job_ref(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    j->refs++;
    pthread_mutex_unlock(&j->mu);
}

void srv_job_unref(srv_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left) return;
    srv_request_free(&j->req);
    qvlm_buf_free(&j->out);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

void srv_job_cancel(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    j->cancelled = true;
    /* Under the lock, so the session cannot be released between the test and the call. */
    if (j->session) qvlm_session_cancel(j->session);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

bool srv_job_is_cancelled(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    bool c = j->cancelled;
    pthread_mutex_unlock(&j->mu);
    return c;
}

void srv_job_deadline(struct timespec *until, int timeout_ms) {
    clock_gettime(CLOCK_MONOTONIC, until);
    until->tv_sec += timeout_ms / 1000;
    until->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until->tv_nsec >= 1000000000L) until->tv_sec++, until->tv_nsec -= 1000000000L;
}

srv_job_state srv_job_wait(srv_job *j, srv_job_state at_least, int timeout_ms) {
    struct timespec until;
    srv_job_deadline(&until, timeout_ms);
    pthread_mutex_lock(&j->mu);
    while (j->state < at_least)
        if (pthread_cond_timedwait(&j->cv, &j->mu, &until) == ETIMEDOUT) break;
    srv_job_state st = j->state;
    pthread_mutex_unlock(&j->mu);
    return st;
}

void srv_job_set_state(srv_job *j, srv_job_state st, qvlm_session *s) {
    pthread_mutex_lock(&j->mu);
    j->state = st;
    j->session = st == SRV_JOB_DONE ? NULL : s;
    /* A cancel that came before the session was known is passed on now. */
    if (j->cancelled && j->session) qvlm_session_cancel(j->session);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}
