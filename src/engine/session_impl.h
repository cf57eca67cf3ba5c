/* session_impl.h - the session's insides, shared by session.c (feeding, generation) and
 * conversation.c (whole prompts through the cache). */
#ifndef QVLM_ENGINE_SESSION_IMPL_H
#define QVLM_ENGINE_SESSION_IMPL_H

#include <stdatomic.h>

#include "engine/cache.h"
#include "engine/prompt.h"
#include "engine/sequence.h"
#include "model/image.h"
#include "model/model.h"
#include "model/text.h"

struct qvlm_session {
    qvlm_model *model;
    qvlm_stream *stream;
    qvlm_text_ctx *text;
    qvlm_kv_pool pool;
    qvlm_sequence seq;
    int64_t max_batch;
    int64_t n_ctx;  /* prompt + generation limit in tokens; 0 = none */
    qvlm_image_limits image_limits;
    float *logits; /* host [vocab] after the last token fed (see logits_in_ctx) */
    bool have_logits;
    /* A greedy decode step leaves its logits in the text context and brings back only their
     * argmax (`greedy`): s->logits is then stale until session_host_logits fetches it. */
    bool logits_in_ctx, have_greedy;
    int32_t greedy;
    int32_t *pos;  /* host [3][max_batch] */

    /* The cache and what the session knows about its own state. */
    qvlm_cache *cache; /* borrowed, may be NULL */
    uint64_t salt;
    int64_t checkpoint_interval;
    qvlm_key *keys;    /* [n_keys] keys of positions [0, seq.n_past) */
    int64_t n_keys, cap_keys;
    int64_t *splits;   /* prefill split positions of the current conversation, ascending */
    int64_t n_splits, cap_splits;
    qvlm_key *prompt_keys; /* keys of the last prompt (without generated tokens) */
    int64_t n_prompt_keys;
    int64_t divergence; /* a split point the chat layer found for the next prompt, or -1; in
                           expanded-token positions only when the prompt has no images before it */
    qvlm_prompt_stats stats;
    _Atomic int cancel;          /* set by qvlm_session_cancel */
    qvlm_progress_fn progress;   /* optional */
    void *progress_user;
    int64_t progress_done, progress_total; /* prefill tokens of the current prompt */
    qvlm_image_span_info *spans;
    int64_t n_spans;
};

/* An image ready for the tower: decoded, grid known, hash computed; pixels made on demand. */
typedef struct session_image {
    qvlm_image img;
    qvlm_pixels px;
    qvlm_grid grid;
    qvlm_hash128 hash;
} session_image;

qvlm_status session_decode_image(qvlm_session *s, const qvlm_image_input *in, size_t i, session_image *out,
                                 qvlm_error *err);
void session_image_free(session_image *im);
/* Vision features of one image into `out` (backend [tokens][hidden]). */
qvlm_status session_encode_image(qvlm_session *s, session_image *im, float *out, qvlm_error *err);
/* Prefill n tokens (ids, optional replacement rows, positions [3][n]) in batches; on success
 * next_pos becomes next_pos_after and the logits are those of the last token. */
/* *out = the logits after the last token fed, in s->logits (fetched from the text context if a
 * greedy step left them there); an error when there are none or the fetch fails. */
qvlm_status session_host_logits(qvlm_session *s, const float **out, qvlm_error *err);
/* The logits after the last token are in s->logits (have: restored from a checkpoint) or absent. */
void session_set_host_logits(qvlm_session *s, bool have);
/* greedy: bring back only the argmax of the last position's logits (s->greedy), not the logits. */
qvlm_status session_prefill(qvlm_session *s, const int32_t *ids, const float *const *rows, const int32_t *pos,
                            int64_t n, int64_t next_pos_after, bool greedy, qvlm_error *err);
qvlm_status session_check_ids(const qvlm_session *s, const int32_t *ids, int64_t n, qvlm_error *err);
/* Append keys for positions being added to the state. */
qvlm_status session_push_keys(qvlm_session *s, const qvlm_key *k, int64_t n, qvlm_error *err);
/* Forget the state's keys and split history (after a reset). */
void session_forget(qvlm_session *s);

#endif /* QVLM_ENGINE_SESSION_IMPL_H */
