/* sse.h - server-sent events for streamed completions: framing ("data: <json>\n\n", and
 * "data: [DONE]\n\n" at the end), and the libmicrohttpd content reader that sends a job's
 * events as the worker appends them. */
#ifndef QVLM_SERVER_SSE_H
#define QVLM_SERVER_SSE_H

#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/strbuf.h"
#include "server/job.h"

/* Append one event carrying `j` (compact JSON). QVLM_E_NOMEM on failure. */
qvlm_status srv_sse_event(qvlm_buf *out, const json_t *j, qvlm_error *err);
qvlm_status srv_sse_done(qvlm_buf *out, qvlm_error *err);

/* The reader's state: the job (a reference owned by the stream) and the client's socket,
 * watched for a hang-up while no event is ready. */
typedef struct srv_stream {
    srv_job *job;
    int fd;
} srv_stream;

srv_stream *srv_stream_create(srv_job *job, int fd); /* takes its own job reference */
/* libmicrohttpd callbacks (MHD_ContentReaderCallback, MHD_ContentReaderFreeCallback). A client
 * that left cancels the job. */
ssize_t srv_stream_read(void *cls, uint64_t pos, char *buf, size_t max);
void srv_stream_free(void *cls);

#endif /* QVLM_SERVER_SSE_H */
