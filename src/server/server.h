/* server.h - `qvlm serve`: an OpenAI-compatible HTTP server on libmicrohttpd.
 *
 * Threads: libmicrohttpd runs one thread per connection; a request's handler parses the
 * body, hands a job to the slots (slots.c: --parallel worker threads, each owning a session,
 * all sharing one cache, behind a bounded queue), and waits for it, watching the socket so a
 * client that leaves cancels its job. Streamed answers are SSE bytes the worker appends to the
 * job and the connection thread sends (sse.c).
 *
 * Files: http.c (daemon, routing, bodies, auth, limits), api_error.c (OpenAI error bodies and
 * statuses), request.c (request body -> srv_request), job.c (a request's shared state),
 * slots.c (workers and queue), completion.c (POST /v1/chat/completions), sse.c (event
 * stream), metrics.c (GET /metrics), info.c (/health, /v1/models), static_page.c (GET /). */
#ifndef QVLM_SERVER_SERVER_H
#define QVLM_SERVER_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include <jansson.h>

#include "core/strbuf.h"
#include "qvlm.h"
#include "server/api_error.h"
#include "server/metrics.h"

typedef struct srv_config {
    const char *host;           /* bind address (default loopback) */
    int port;                   /* 0: any free port */
    const char *api_key;        /* Bearer key for the /v1 routes and /metrics, or NULL */
    const char *allow_dir;      /* local image paths allowed only under this, or NULL */
    const char *model_name;     /* the id clients see */
    int parallel;               /* slots: requests generated at once */
    int queue_max;              /* requests waiting beyond those; more get 503 */
    size_t max_body_bytes;      /* larger bodies get 413 */
    int max_images;             /* per request */
    int64_t max_image_pixels;
    int64_t n_ctx;              /* prompt + answer tokens per request */
    qvlm_sampling sampling;     /* defaults for requests that do not say */
    int max_tokens_default;     /* 0: until the context is full */
    double drain_timeout_s;     /* after SIGTERM, cancel what still runs after this long */
    bool verbose;               /* log every response status to stderr */
} srv_config;

typedef struct srv_slots srv_slots;
struct MHD_Daemon;

typedef struct srv_server {
    srv_config cfg;
    qvlm_model *model;          /* borrowed */
    qvlm_cache *cache;          /* borrowed */
    srv_slots *slots;
    srv_metrics metrics;
    struct MHD_Daemon *daemon;
    struct sockaddr_storage addr; /* the bound address (libmicrohttpd keeps a pointer) */
    int port;                   /* the port bound */
    atomic_bool draining;       /* refusing new requests */
    atomic_int in_flight;       /* requests begun and not yet completed */
} srv_server;

/* Start serving `m` with `cache` (both borrowed; they must outlive the server). */
qvlm_status srv_server_start(srv_server *s, const srv_config *cfg, qvlm_model *m, qvlm_cache *cache, qvlm_error *err);
/* Stop accepting (new connections are refused, requests on open ones get 503), let running
 * requests finish (cancelling them after cfg.drain_timeout_s), then stop the daemon and the
 * workers. */
void srv_server_drain(srv_server *s);
void srv_server_free(srv_server *s);

/* ---- responses (http.c) ---------------------------------------------------------------------- */

/* What a route handler answers; http.c turns it into a libmicrohttpd response. */
typedef struct srv_job srv_job;
typedef struct srv_response {
    unsigned status;
    qvlm_buf body;
    const char *content_type; /* static */
    srv_job *stream_job;      /* an SSE response fed by this job (the reference moves to http.c) */
    bool hang_up;             /* the client left: close without answering */
    const char *allow;        /* Allow header for 405 */
} srv_response;

void srv_respond_json(srv_response *r, unsigned status, json_t *body); /* steals body */
void srv_respond_error(srv_response *r, const srv_error *e);
void srv_respond_text(srv_response *r, unsigned status, const char *content_type, const char *text, size_t n);

/* ---- route handlers -------------------------------------------------------------------------- */
/* POST /v1/chat/completions with the whole body; client_fd is watched while waiting. */
void srv_completion_handle(srv_server *s, const char *body, size_t n, int client_fd, srv_response *out);
/* The slots' run function: answer one job on a worker's session. */
void srv_completion_run(void *server, srv_job *job, qvlm_session *session);
void srv_info_health(srv_server *s, srv_response *out);
void srv_info_models(srv_server *s, srv_response *out);
void srv_info_metrics(srv_server *s, srv_response *out);
void srv_static_page(srv_response *out);

/* ---- http.c: the daemon -------------------------------------------------------------------- */
qvlm_status srv_http_start(srv_server *s, qvlm_error *err);
void srv_http_quiesce(srv_server *s); /* close the listening socket */
void srv_http_stop(srv_server *s);
/* Has the client of socket `fd` hung up? (poll for POLLRDHUP/POLLHUP, no data consumed) */
bool srv_client_gone(int fd);

#endif /* QVLM_SERVER_SERVER_H */
