/* metrics.h - the server's counters and the time-to-first-token histogram, rendered in the
 * Prometheus text format for GET /metrics. One lock; updates are a few per request. */
#ifndef QVLM_SERVER_METRICS_H
#define QVLM_SERVER_METRICS_H

#include <pthread.h>
#include <stdint.h>

#include "core/strbuf.h"
#include "qvlm.h"

#define SRV_TTFT_BUCKETS 12

typedef struct srv_metrics {
    pthread_mutex_t mu;
    uint64_t http_by_status[6];       /* 1xx..5xx, indexed by status / 100 */
    uint64_t completions, completions_failed, completions_cancelled, rejected_busy;
    uint64_t prompt_tokens, reused_tokens, generated_tokens;
    uint64_t images_encoded, images_reused;
    uint64_t ttft_buckets[SRV_TTFT_BUCKETS]; /* cumulative counts are made when rendering */
    uint64_t ttft_count;
    double ttft_sum_s;
    double prompt_seconds, generate_seconds;
} srv_metrics;

void srv_metrics_init(srv_metrics *m);
void srv_metrics_free(srv_metrics *m);
void srv_metrics_http(srv_metrics *m, unsigned status);
/* One finished completion: its prompt numbers, tokens generated, time to first token (< 0:
 * none was generated). */
void srv_metrics_completion(srv_metrics *m, const qvlm_prompt_stats *ps, int n_generated, double ttft_s,
                            double generate_s);
void srv_metrics_count(srv_metrics *m, uint64_t *field); /* ++field under the lock */
/* The Prometheus text, with the cache's counters and the slot gauges. */
qvlm_status srv_metrics_render(srv_metrics *m, qvlm_cache *cache, int slots_busy, int queued, qvlm_buf *out,
                               qvlm_error *err);

#endif /* QVLM_SERVER_METRICS_H */
