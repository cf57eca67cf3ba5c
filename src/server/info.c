/* info.c - the small read-only routes: GET /health, GET /v1/models, GET /metrics. */
#include <time.h>

#include "server/server.h"
#include "server/slots.h"

void srv_info_health(srv_server *s, srv_response *out) {
    bool draining = atomic_load(&s->draining);
    int busy = 0, queued = 0;
    srv_slots_counts(s->slots, &busy, &queued);
    srv_respond_json(out, draining ? 503 : 200,
                     json_pack("{s:s, s:i, s:i, s:i}", "status", draining ? "draining" : "ok", "slots", s->cfg.parallel,
                               "slots_busy", busy, "queued", queued));
}

void srv_info_models(srv_server *s, srv_response *out) {
    srv_respond_json(out, 200,
                     json_pack("{s:s, s:[{s:s, s:s, s:I, s:s, s:I}]}", "object", "list", "data", "id", s->cfg.model_name,
                               "object", "model", "created", (json_int_t)time(NULL), "owned_by", "qvlm", "context_length",
                               (json_int_t)s->cfg.n_ctx));
}

void srv_info_metrics(srv_server *s, srv_response *out) {
    int busy = 0, queued = 0;
    srv_slots_counts(s->slots, &busy, &queued);
    qvlm_error err;
    if (srv_metrics_render(&s->metrics, s->cache, busy, queued, &out->body, &err)) {
        qvlm_buf_free(&out->body);
        srv_error e;
        srv_error_set(&e, 503, "server_error", "overloaded", NULL, "%s", err.msg);
        srv_respond_error(out, &e);
        return;
    }
    out->status = 200;
    out->content_type = "text/plain; version=0.0.4; charset=utf-8";
}
