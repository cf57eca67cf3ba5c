/* metrics.c - counters and the TTFT histogram in Prometheus text format (see metrics.h). */
#include "server/metrics.h"

#include <string.h>

/* Upper bounds of the time-to-first-token buckets, in seconds; the last is +Inf. */
static const double TTFT_LE[SRV_TTFT_BUCKETS - 1] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

void srv_metrics_init(srv_metrics *m) {
    memset(m, 0, sizeof(*m));
    pthread_mutex_init(&m->mu, NULL);
}

void srv_metrics_free(srv_metrics *m) { pthread_mutex_destroy(&m->mu); }

void srv_metrics_http(srv_metrics *m, unsigned status) {
    pthread_mutex_lock(&m->mu);
    m->http_by_status[status / 100 < 6 ? status / 100 : 5]++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_count(srv_metrics *m, uint64_t *field) {
    pthread_mutex_lock(&m->mu);
    (*field)++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_completion(srv_metrics *m, const qvlm_prompt_stats *ps, int n_generated, double ttft_s,
                            double generate_s) {
    pthread_mutex_lock(&m->mu);
    m->completions++;
    m->prompt_tokens += (uint64_t)ps->prompt_tokens;
    m->reused_tokens += (uint64_t)ps->reused_tokens;
    m->generated_tokens += (uint64_t)n_generated;
    m->images_encoded += (uint64_t)ps->images_encoded;
    m->images_reused += (uint64_t)(ps->images_in_prefix + ps->images_from_feature_cache);
    m->prompt_seconds += ps->total_ms / 1e3;
    m->generate_seconds += generate_s;
    if (ttft_s >= 0) {
        int b = 0;
        while (b < SRV_TTFT_BUCKETS - 1 && ttft_s > TTFT_LE[b]) b++;
        m->ttft_buckets[b]++;
        m->ttft_count++;
        m->ttft_sum_s += ttft_s;
    }
    pthread_mutex_unlock(&m->mu);
}

static void metric(qvlm_buf *o, const char *name, const char *type, const char *help, double v) {
    qvlm_buf_printf(o, NULL, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

static void render_cache(qvlm_cache *cache, qvlm_buf *o) {
    if (!cache) return;
    qvlm_cache_counters c;
    qvlm_cache_counters_get(cache, &c);
    metric(o, "qvlm_cache_lookups_total", "counter", "Prompt lookups in the cross-turn cache.", (double)c.lookups);
    metric(o, "qvlm_cache_hits_total", "counter", "Lookups that resumed from a cached state.", (double)c.hits);
    metric(o, "qvlm_cache_reused_tokens_total", "counter", "Prompt tokens restored from the cache.", (double)c.reused_tokens);
    metric(o, "qvlm_cache_image_hits_total", "counter", "Images whose vision features came from the cache.",
           (double)c.vision_hits);
    metric(o, "qvlm_cache_image_misses_total", "counter", "Images not in the feature cache.", (double)c.vision_misses);
    metric(o, "qvlm_cache_evictions_total", "counter", "Cache entries evicted.", (double)c.evictions);
    metric(o, "qvlm_cache_bytes", "gauge", "Memory held by the cache.", (double)c.bytes);
    metric(o, "qvlm_cache_budget_bytes", "gauge", "The cache's memory budget.", (double)c.budget_bytes);
    metric(o, "qvlm_cache_disk_bytes", "gauge", "Bytes in the disk tier.", (double)c.disk_bytes);
    metric(o, "qvlm_cache_checkpoints", "gauge", "Checkpoints held.", (double)c.checkpoints);
    metric(o, "qvlm_cache_images", "gauge", "Images whose features are held.", (double)c.images);
}

static void render_ttft(const srv_metrics *m, qvlm_buf *o) {
    const char *n = "qvlm_time_to_first_token_seconds";
    qvlm_buf_printf(o, NULL, "# HELP %s From a request's arrival to its first generated token.\n# TYPE %s histogram\n", n, n);
    uint64_t cum = 0;
    for (int b = 0; b < SRV_TTFT_BUCKETS; b++) {
        cum += m->ttft_buckets[b];
        if (b < SRV_TTFT_BUCKETS - 1) qvlm_buf_printf(o, NULL, "%s_bucket{le=\"%g\"} %llu\n", n, TTFT_LE[b], (unsigned long long)cum);
        else qvlm_buf_printf(o, NULL, "%s_bucket{le=\"+Inf\"} %llu\n", n, (unsigned long long)cum);
    }
    qvlm_buf_printf(o, NULL, "%s_sum %.17g\n%s_count %llu\n", n, m->ttft_sum_s, n, (unsigned long long)m->ttft_count);
}

qvlm_status srv_metrics_render(srv_metrics *m, qvlm_cache *cache, int slots_busy, int queued, qvlm_buf *o,
                               qvlm_error *err) {
    pthread_mutex_lock(&m->mu);
    srv_metrics s = *m; /* a consistent copy; the lock is not held while formatting */
    pthread_mutex_unlock(&m->mu);
    qvlm_buf_puts(o, "# HELP qvlm_http_responses_total HTTP responses by status class.\n"
                     "# TYPE qvlm_http_responses_total counter\n", NULL);
    for (int k = 1; k < 6; k++)
        qvlm_buf_printf(o, NULL, "qvlm_http_responses_total{class=\"%dxx\"} %llu\n", k, (unsigned long long)s.http_by_status[k]);
    metric(o, "qvlm_requests_total", "counter", "Chat completions answered.", (double)s.completions);
    metric(o, "qvlm_requests_failed_total", "counter", "Chat completions that failed after being queued.",
           (double)s.completions_failed);
    metric(o, "qvlm_requests_cancelled_total", "counter", "Chat completions cancelled (client left or shutdown).",
           (double)s.completions_cancelled);
    metric(o, "qvlm_requests_rejected_busy_total", "counter", "Requests refused with 503 (queue full).", (double)s.rejected_busy);
    metric(o, "qvlm_prompt_tokens_total", "counter", "Prompt tokens (images expanded).", (double)s.prompt_tokens);
    metric(o, "qvlm_prompt_tokens_reused_total", "counter", "Prompt tokens reused, not recomputed.", (double)s.reused_tokens);
    metric(o, "qvlm_generated_tokens_total", "counter", "Tokens generated.", (double)s.generated_tokens);
    metric(o, "qvlm_images_encoded_total", "counter", "Images run through the vision tower.", (double)s.images_encoded);
    metric(o, "qvlm_images_reused_total", "counter", "Images reused (in a cached prefix or from the feature cache).",
           (double)s.images_reused);
    metric(o, "qvlm_prompt_seconds_total", "counter", "Time spent on prompts.", s.prompt_seconds);
    metric(o, "qvlm_generate_seconds_total", "counter", "Time spent generating.", s.generate_seconds);
    render_ttft(&s, o);
    render_cache(cache, o);
    metric(o, "qvlm_slots_busy", "gauge", "Slots generating now.", slots_busy);
    metric(o, "qvlm_queue_length", "gauge", "Requests waiting for a slot.", queued);
    /* The appends above are unchecked: the buffer's sticky flag says whether all fit. */
    return o->failed ? qvlm_errorf(err, QVLM_E_NOMEM, "metrics: out of memory") : QVLM_OK;
}
