/* server.c - the server's life: start (slots, metrics, daemon), drain, free. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "server/server.h"
#include "server/slots.h"

qvlm_status srv_server_start(srv_server *s, const srv_config *cfg, qvlm_model *m, qvlm_cache *cache, qvlm_error *err) {
    memset(s, 0, sizeof(*s));
    s->cfg = *cfg;
    s->model = m;
    s->cache = cache;
    srv_metrics_init(&s->metrics);
    qvlm_session_params sp = {.cache = cache, .n_ctx = cfg->n_ctx, .max_image_pixels = cfg->max_image_pixels};
    qvlm_status rc = srv_slots_create(m, &sp, cfg->parallel, cfg->queue_max, srv_completion_run, s, &s->slots, err);
    if (!rc) rc = srv_http_start(s, err);
    if (rc) srv_server_free(s);
    return rc;
}

/* Wait until no request is in flight or `seconds` pass; true if none is left. */
static bool wait_idle(srv_server *s, double seconds) {
    const struct timespec tick = {0, 20 * 1000 * 1000};
    for (double waited = 0; atomic_load(&s->in_flight) > 0; waited += 0.02) {
        if (waited >= seconds) return false;
        nanosleep(&tick, NULL);
    }
    return true;
}

void srv_server_drain(srv_server *s) {
    atomic_store(&s->draining, true);
    srv_http_quiesce(s);
    if (!wait_idle(s, s->cfg.drain_timeout_s)) {
        fprintf(stderr, "qvlm serve: %d requests still running after %.0f s; cancelling them\n", atomic_load(&s->in_flight),
                s->cfg.drain_timeout_s);
        srv_slots_cancel_all(s->slots);
        wait_idle(s, 10);
    }
    srv_http_stop(s);
}

void srv_server_free(srv_server *s) {
    srv_http_stop(s);
    srv_slots_destroy(s->slots);
    s->slots = NULL;
    srv_metrics_free(&s->metrics);
}
