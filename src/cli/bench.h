/* bench.h - benchmark pieces shared by `qvlm bench`. */
#ifndef QVLM_CLI_BENCH_H
#define QVLM_CLI_BENCH_H

#include <jansson.h>

#include "model/model.h"

/* Run scenario `name` (multiturn, interleaved, edit, reimage, restart, tailedit) on m; *out is
 * {"scenario":..., "turns":[{turn, ttft_cached_ms, ttft_uncached_ms, new_content_ms,
 * reused_tokens, images_encoded, ...}]}. */
/* Run scenario `name` with sessions on a cache made from cc (the restart scenario needs its dir). */
qvlm_status qvlm_bench_scenario(qvlm_model *m, const char *name, const qvlm_cache_config *cc, json_t **out,
                                qvlm_error *err);

#endif
