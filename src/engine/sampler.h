/* sampler.h - choosing the next token from logits: greedy, or temperature with top-k,
 * top-p (nucleus) and min-p filtering, from a seeded generator (same seed, same tokens). */
#ifndef QVLM_ENGINE_SAMPLER_H
#define QVLM_ENGINE_SAMPLER_H

#include <stdint.h>

#include "core/status.h"

/* qvlm_sampling (include/qvlm.h): temperature <= 0 is greedy (argmax, first index on ties);
 * top_k 0, top_p 1 and min_p 0 are off; min_p keeps tokens with p >= min_p * p_max. */

/* transformers' defaults when generation_config.json says nothing: greedy. */
#define QVLM_SAMPLING_GREEDY ((qvlm_sampling){0.0f, 0, 1.0f, 0.0f, 0})

typedef struct qvlm_sampler {
    qvlm_sampling p;
    uint64_t state[4]; /* xoshiro256** */
    int64_t cap;       /* candidate buffer size */
    int32_t *cand_id;
    float *cand_p;
} qvlm_sampler;

qvlm_status qvlm_sampler_init(qvlm_sampler *s, const qvlm_sampling *p, qvlm_error *err);
void qvlm_sampler_free(qvlm_sampler *s);
/* The next token for logits[0..vocab). Filters are applied in transformers' order:
 * temperature, top-k, top-p, min-p. */
int32_t qvlm_sampler_sample(qvlm_sampler *s, const float *logits, int64_t vocab);
/* Greedy: the token is qvlm_argmax_scan of the logits (kernels/backend.h), which a backend can
 * compute where the logits are (qvlm_op_argmax). */
static inline int qvlm_sampler_is_greedy(const qvlm_sampler *s) { return s->p.temperature <= 0.0f; }
/* Validate user-supplied values; the message names the field. */
qvlm_status qvlm_sampling_check(const qvlm_sampling *p, qvlm_error *err);

#endif /* QVLM_ENGINE_SAMPLER_H */
