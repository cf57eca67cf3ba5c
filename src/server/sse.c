/* sse.c - event-stream framing and the content reader of streamed completions (see sse.h). */
#include "server/sse.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>

#include "server/server.h"

#define WAIT_SLICE_MS 200 /* how often a waiting reader looks at the client's socket */

qvlm_status srv_sse_event(qvlm_buf *out, const json_t *j, qvlm_error *err) {
    char *s = json_dumps(j, JSON_COMPACT);
    if (!s) return qvlm_errorf(err, QVLM_E_NOMEM, "event: cannot encode");
    /* One append for the whole event, so a reader never sees half of one. */
    qvlm_status rc = qvlm_buf_printf(out, err, "data: %s\n\n", s);
    free(s);
    return rc;
}

qvlm_status srv_sse_done(qvlm_buf *out, qvlm_error *err) { return qvlm_buf_puts(out, "data: [DONE]\n\n", err); }

srv_stream *srv_stream_create(srv_job *job, int fd) {
    srv_stream *st = malloc(sizeof(*st));
    if (!st) return NULL;
    srv_job_ref(job);
    *st = (srv_stream){job, fd};
    return st;
}

ssize_t srv_stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    srv_stream *st = cls;
    srv_job *j = st->job;
    pthread_mutex_lock(&j->mu);
    while (j->out.len == 0 && j->state != SRV_JOB_DONE) {
        struct timespec until;
        srv_job_deadline(&until, WAIT_SLICE_MS);
        if (pthread_cond_timedwait(&j->cv, &j->mu, &until) != ETIMEDOUT) continue; /* new output, or done */
        pthread_mutex_unlock(&j->mu);
        if (srv_client_gone(st->fd)) {
            srv_job_cancel(j);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        pthread_mutex_lock(&j->mu);
    }
    ssize_t n;
    if (j->out.len) {
        n = (ssize_t)(j->out.len < max ? j->out.len : max);
        memcpy(buf, j->out.data, (size_t)n);
        qvlm_buf_consume(&j->out, (size_t)n);
    } else {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    }
    pthread_mutex_unlock(&j->mu);
    return n;
}

void srv_stream_free(void *cls) {
    srv_stream *st = cls;
    /* Freed early (the client left, a write failed): the generation has no reader; stop it. */
    if (srv_job_wait(st->job, SRV_JOB_DONE, 0) != SRV_JOB_DONE) srv_job_cancel(st->job);
    srv_job_unref(st->job);
    free(st);
}
