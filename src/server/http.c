/* http.c - the libmicrohttpd daemon: routing, request bodies, the API key, size limits, and
 * turning srv_response into HTTP.
 *
 * One thread per connection (libmicrohttpd's own), so handlers may block: a completion waits
 * for its slot on the connection's thread, and a stream's reader waits for the next event.
 * Checks that need no body (route, method, key, draining, declared size) answer on the first
 * call, before the body is read. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/job.h"
#include "server/server.h"
#include "server/sse.h"

#define STREAM_BLOCK_BYTES (32 * 1024)
#define CONNECTION_MEMORY_BYTES (256 * 1024)
#define IDLE_TIMEOUT_S 120

typedef enum route_id { R_PAGE, R_HEALTH, R_MODELS, R_METRICS, R_CHAT } route_id;

static const struct route {
    const char *path;
    const char *method;
    route_id id;
    bool needs_key;
} ROUTES[] = {
    {"/", "GET", R_PAGE, false},
    {"/index.html", "GET", R_PAGE, false},
    {"/health", "GET", R_HEALTH, false},
    {"/v1/models", "GET", R_MODELS, true},
    {"/metrics", "GET", R_METRICS, true},
    {"/v1/chat/completions", "POST", R_CHAT, true},
};

/* Per request: the body as it arrives. */
typedef struct conn_req {
    const struct route *rt;
    qvlm_buf body;
    bool too_big;
    bool answered; /* a response went out on the first call */
} conn_req;

/* ==== responses ================================================================================ */

void srv_respond_json(srv_response *r, unsigned status, json_t *body) {
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    r->status = s ? status : 503;
    r->content_type = "application/json";
    qvlm_buf_clear(&r->body);
    qvlm_buf_puts(&r->body, s ? s : "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}", NULL);
    free(s);
}

void srv_respond_error(srv_response *r, const srv_error *e) { srv_respond_json(r, e->status, srv_error_json(e)); }

void srv_respond_text(srv_response *r, unsigned status, const char *content_type, const char *text, size_t n) {
    r->status = status;
    r->content_type = content_type;
    qvlm_buf_clear(&r->body);
    qvlm_buf_append(&r->body, text, n, NULL);
}

static void respond_error(srv_response *r, unsigned status, const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void respond_error(srv_response *r, unsigned status, const char *type, const char *code, const char *fmt, ...) {
    srv_error e;
    srv_error_set(&e, status, type, code, NULL, NULL);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof(e.message), fmt, ap);
    va_end(ap);
    srv_respond_error(r, &e);
}

bool srv_client_gone(int fd) {
    if (fd < 0) return false;
    /* POLLRDHUP: the peer closed its end. POLLIN alone may be a pipelined request. */
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static int client_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

static struct MHD_Response *make_response(srv_server *s, struct MHD_Connection *c, srv_response *r) {
    if (r->stream_job) {
        srv_stream *st = srv_stream_create(r->stream_job, client_fd(c));
        srv_job_unref(r->stream_job);
        r->stream_job = NULL;
        struct MHD_Response *resp =
            st ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK_BYTES, srv_stream_read, st, srv_stream_free)
               : NULL;
        if (!resp) {
            if (st) srv_stream_free(st);
            respond_error(r, 503, "server_error", "overloaded", "%s", "out of memory");
            return make_response(s, c, r);
        }
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
        return resp;
    }
    return MHD_create_response_from_buffer(r->body.len, r->body.data ? r->body.data : (void *)"", MHD_RESPMEM_MUST_COPY);
}

static enum MHD_Result send_response(srv_server *s, struct MHD_Connection *c, srv_response *r) {
    if (r->hang_up) {
        qvlm_buf_free(&r->body);
        return MHD_NO; /* close: nobody is listening */
    }
    struct MHD_Response *resp = make_response(s, c, r);
    qvlm_buf_free(&r->body);
    if (!resp) return MHD_NO;
    if (r->content_type) MHD_add_response_header(resp, "Content-Type", r->content_type);
    if (r->allow) MHD_add_response_header(resp, "Allow", r->allow);
    if (r->status == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    if (r->status == 503) MHD_add_response_header(resp, "Retry-After", "1");
    if (atomic_load(&s->draining)) MHD_add_response_header(resp, "Connection", "close");
    enum MHD_Result ok = MHD_queue_response(c, r->status, resp);
    MHD_destroy_response(resp);
    srv_metrics_http(&s->metrics, r->status);
    if (s->cfg.verbose) fprintf(stderr, "qvlm serve: %u\n", r->status);
    return ok;
}

/* ==== checks before the body ======================================================================== */

static bool key_ok(srv_server *s, struct MHD_Connection *c) {
    if (!s->cfg.api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
    h += 7;
    size_t n = strlen(h), want = strlen(s->cfg.api_key);
    /* Constant time, so the key cannot be guessed byte by byte from response times. */
    return n == want && sodium_memcmp(h, s->cfg.api_key, n) == 0;
}

/* Fill r and return true if the request is answered without its body. */
static bool early_answer(srv_server *s, struct MHD_Connection *c, const char *url, const char *method, conn_req *cr,
                         srv_response *r) {
    const struct route *path_match = NULL;
    bool is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    for (size_t i = 0; i < sizeof(ROUTES) / sizeof(ROUTES[0]); i++) {
        if (strcmp(url, ROUTES[i].path) != 0) continue;
        path_match = &ROUTES[i];
        if (strcmp(method, ROUTES[i].method) == 0 || (is_get && strcmp(ROUTES[i].method, "GET") == 0)) cr->rt = &ROUTES[i];
    }
    if (!path_match) {
        respond_error(r, 404, "invalid_request_error", "not_found", "no route %s", url);
        return true;
    }
    if (!cr->rt) {
        respond_error(r, 405, "invalid_request_error", "method_not_allowed", "this route takes %s", path_match->method);
        r->allow = path_match->method;
        return true;
    }
    if (cr->rt->needs_key && !key_ok(s, c)) {
        respond_error(r, 401, "authentication_error", "invalid_api_key", "%s",
                      "missing or wrong API key (send Authorization: Bearer KEY)");
        return true;
    }
    if (atomic_load(&s->draining) && cr->rt->id != R_HEALTH) {
        respond_error(r, 503, "server_error", "shutting_down", "%s", "the server is shutting down");
        return true;
    }
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > s->cfg.max_body_bytes) {
        char lim[32];
        snprintf(lim, sizeof(lim), "%zu", s->cfg.max_body_bytes);
        respond_error(r, 413, "invalid_request_error", "request_too_large", "the body is larger than %s bytes (--max-body)",
                      lim);
        return true;
    }
    return false;
}

/* ==== the handler ==================================================================================== */

static void dispatch(srv_server *s, struct MHD_Connection *c, conn_req *cr, srv_response *r) {
    if (cr->too_big) {
        char lim[32];
        snprintf(lim, sizeof(lim), "%zu", s->cfg.max_body_bytes);
        respond_error(r, 413, "invalid_request_error", "request_too_large", "the body is larger than %s bytes (--max-body)", lim);
        return;
    }
    switch (cr->rt->id) {
    case R_PAGE: srv_static_page(r); break;
    case R_HEALTH: srv_info_health(s, r); break;
    case R_MODELS: srv_info_models(s, r); break;
    case R_METRICS: srv_info_metrics(s, r); break;
    case R_CHAT: srv_completion_handle(s, qvlm_buf_str(&cr->body), cr->body.len, client_fd(c), r); break;
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_bytes, void **con_cls) {
    (void)version;
    srv_server *s = cls;
    conn_req *cr = *con_cls;
    srv_response r = {0};
    if (!cr) {
        if (!(cr = calloc(1, sizeof(*cr)))) return MHD_NO;
        *con_cls = cr;
        atomic_fetch_add(&s->in_flight, 1); /* until on_completed */
        if (!early_answer(s, c, url, method, cr, &r)) return MHD_YES;
        cr->answered = true;
        return send_response(s, c, &r);
    }
    if (*upload_bytes) {
        /* Past the limit the rest is read and dropped, then answered with 413. */
        if (!cr->answered && !cr->too_big) {
            if (cr->body.len + *upload_bytes > s->cfg.max_body_bytes) cr->too_big = true, qvlm_buf_free(&cr->body);
            else if (qvlm_buf_append(&cr->body, upload, *upload_bytes, NULL)) return MHD_NO;
        }
        *upload_bytes = 0;
        return MHD_YES;
    }
    if (cr->answered) return MHD_YES;
    cr->answered = true;
    dispatch(s, c, cr, &r);
    return send_response(s, c, &r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why) {
    (void)c, (void)why;
    srv_server *s = cls;
    conn_req *cr = *con_cls;
    if (!cr) return;
    qvlm_buf_free(&cr->body);
    free(cr);
    *con_cls = NULL;
    atomic_fetch_sub(&s->in_flight, 1);
}

/* ==== the daemon ===================================================================================== */

static qvlm_status resolve(const srv_config *cfg, struct sockaddr_storage *ss, bool *ipv6, qvlm_error *err) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", cfg->port);
    int rc = getaddrinfo(cfg->host, port, &hints, &res);
    if (rc != 0) return qvlm_errorf(err, QVLM_E_INVALID, "--host %s: %s", cfg->host, gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *ipv6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return QVLM_OK;
}

qvlm_status srv_http_start(srv_server *s, qvlm_error *err) {
    bool ipv6 = false;
    qvlm_status rc = resolve(&s->cfg, &s->addr, &ipv6, err);
    if (rc) return rc;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (ipv6) flags |= MHD_USE_IPv6;
    /* Every slot and queued request holds a connection; a few more for /health and /metrics. */
    unsigned limit = (unsigned)(s->cfg.parallel + s->cfg.queue_max + 64);
    s->daemon = MHD_start_daemon(flags, (uint16_t)s->cfg.port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &s->addr,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_LIMIT, limit,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S,
                                 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY_BYTES, MHD_OPTION_END);
    if (!s->daemon) return qvlm_errorf(err, QVLM_E_IO, "cannot listen on %s:%d (in use, or not an address here?)", s->cfg.host, s->cfg.port);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : s->cfg.port;
    return QVLM_OK;
}

void srv_http_quiesce(srv_server *s) {
    MHD_socket fd = MHD_quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET) close(fd); /* new connections are now refused */
}

void srv_http_stop(srv_server *s) {
    if (s->daemon) MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
}
