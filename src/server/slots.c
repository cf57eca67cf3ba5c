/* slots.c - worker threads with a session each, and the bounded queue (see slots.h). */
#include "server/slots.h"

#include <stdlib.h>

#include "core/status.h"

typedef struct slot {
    srv_slots *owner;
    qvlm_session *session;
    pthread_t thread;
    bool started;
    srv_job *current; /* guarded by owner->mu */
} slot;

struct srv_slots {
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* a job was queued, or closing */
    srv_job **queue;        /* ring of [cap] */
    int cap, head, n_queued;
    int n_slots, n_busy;
    bool closing;
    slot *slots;            /* [n_slots] */
    srv_run_fn run;
    void *ctx;
};

static srv_job *pop(srv_slots *sl) {
    srv_job *j = sl->queue[sl->head];
    sl->head = (sl->head + 1) % sl->cap;
    sl->n_queued--;
    return j;
}

static void *worker(void *arg) {
    slot *me = arg;
    srv_slots *sl = me->owner;
    pthread_mutex_lock(&sl->mu);
    for (;;) {
        while (!sl->closing && sl->n_queued == 0) pthread_cond_wait(&sl->cv, &sl->mu);
        if (sl->n_queued == 0) break; /* closing, and nothing left */
        srv_job *j = pop(sl);
        me->current = j;
        sl->n_busy++;
        pthread_mutex_unlock(&sl->mu);
        sl->run(sl->ctx, j, me->session);
        pthread_mutex_lock(&sl->mu);
        sl->n_busy--;
        me->current = NULL;
        pthread_mutex_unlock(&sl->mu);
        srv_job_unref(j);
        pthread_mutex_lock(&sl->mu);
    }
    pthread_mutex_unlock(&sl->mu);
    return NULL;
}

qvlm_status srv_slots_create(qvlm_model *m, const qvlm_session_params *sp, int n, int queue_max, srv_run_fn run, void *ctx,
                             srv_slots **out, qvlm_error *err) {
    *out = NULL;
    srv_slots *sl = calloc(1, sizeof(*sl));
    if (!sl) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    pthread_mutex_init(&sl->mu, NULL);
    pthread_cond_init(&sl->cv, NULL);
    /* Room for the waiting jobs plus one per idle worker between a submit and its wake-up. */
    sl->cap = queue_max + n;
    sl->queue = calloc((size_t)sl->cap, sizeof(*sl->queue));
    sl->slots = calloc((size_t)n, sizeof(*sl->slots));
    sl->run = run;
    sl->ctx = ctx;
    qvlm_status rc = sl->queue && sl->slots ? QVLM_OK : qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    for (int i = 0; !rc && i < n; i++, sl->n_slots++) {
        sl->slots[i].owner = sl;
        rc = qvlm_session_create(m, sp, &sl->slots[i].session, err);
    }
    for (int i = 0; !rc && i < sl->n_slots; i++) {
        if (pthread_create(&sl->slots[i].thread, NULL, worker, &sl->slots[i]) != 0)
            rc = qvlm_errorf(err, QVLM_E_NOMEM, "cannot start worker thread %d", i);
        else
            sl->slots[i].started = true;
    }
    if (rc) {
        srv_slots_destroy(sl);
        return rc;
    }
    *out = sl;
    return QVLM_OK;
}

qvlm_status srv_slots_submit(srv_slots *sl, srv_job *job, qvlm_error *err) {
    pthread_mutex_lock(&sl->mu);
    int idle = sl->n_slots - sl->n_busy;
    /* Waiting jobs beyond the idle workers count against the queue. */
    bool full = sl->closing || sl->n_queued >= sl->cap || sl->n_queued - idle >= sl->cap - sl->n_slots;
    if (!full) {
        srv_job_ref(job);
        sl->queue[(sl->head + sl->n_queued) % sl->cap] = job;
        sl->n_queued++;
        pthread_cond_signal(&sl->cv);
    }
    pthread_mutex_unlock(&sl->mu);
    return full ? qvlm_errorf(err, QVLM_E_BUSY, "all %d slots are busy and %d requests are waiting; try again later",
                              sl->n_slots, sl->cap - sl->n_slots)
                : QVLM_OK;
}

void srv_slots_counts(srv_slots *sl, int *busy, int *queued) {
    pthread_mutex_lock(&sl->mu);
    *busy = sl->n_busy;
    *queued = sl->n_queued;
    pthread_mutex_unlock(&sl->mu);
}

void srv_slots_cancel_all(srv_slots *sl) {
    pthread_mutex_lock(&sl->mu);
    for (int k = 0; k < sl->n_queued; k++) srv_job_cancel(sl->queue[(sl->head + k) % sl->cap]);
    for (int i = 0; i < sl->n_slots; i++)
        if (sl->slots[i].current) srv_job_cancel(sl->slots[i].current);
    pthread_mutex_unlock(&sl->mu);
}

void srv_slots_destroy(srv_slots *sl) {
    if (!sl) return;
    pthread_mutex_lock(&sl->mu);
    sl->closing = true;
    pthread_cond_broadcast(&sl->cv);
    pthread_mutex_unlock(&sl->mu);
    srv_slots_cancel_all(sl);
    for (int i = 0; i < sl->n_slots; i++)
        if (sl->slots[i].started) pthread_join(sl->slots[i].thread, NULL);
    /* Workers that never started leave their queued jobs behind. */
    while (sl->n_queued) srv_job_unref(pop(sl));
    for (int i = 0; i < sl->n_slots; i++) qvlm_session_destroy(sl->slots[i].session);
    free(sl->slots);
    free(sl->queue);
    pthread_cond_destroy(&sl->cv);
    pthread_mutex_destroy(&sl->mu);
    free(sl);
}
