/* sequence.h - the state of one token sequence on a backend: Gated DeltaNet recurrent state,
 * the KV blocks of the attention layers, how many tokens are in it (P) and the next M-RoPE
 * position. This is exactly what a cache checkpoint at P must hold (qwen35-arch §4). */
#ifndef QVLM_ENGINE_SEQUENCE_H
#define QVLM_ENGINE_SEQUENCE_H

#include "engine/kv_pool.h"
#include "model/text.h"

/* Tokens per KV block, everywhere: sessions and the cache exchange blocks by reference. */
#define QVLM_KV_BLOCK_TOKENS 64

typedef struct qvlm_sequence {
    const qvlm_config *cfg;
    qvlm_kv_pool *pool;   /* borrowed */
    qvlm_kv_block **blocks; /* [n_blocks] one reference each */
    void **block_data;    /* [n_blocks] their data pointers, for the forward pass */
    int64_t n_blocks, cap_blocks;
    void *recurrent;      /* backend memory, qvlm_text_recurrent_bytes */
    int64_t n_past;       /* P: tokens folded into the state */
    int64_t next_pos;     /* M-RoPE position of the next text token */
} qvlm_sequence;

qvlm_status qvlm_sequence_init(qvlm_sequence *q, const qvlm_config *cfg, qvlm_kv_pool *pool, qvlm_stream *s,
                               qvlm_error *err);
void qvlm_sequence_free(qvlm_sequence *q);
/* Back to the empty sequence (drops all blocks, zeroes the recurrent state). */
void qvlm_sequence_clear(qvlm_sequence *q, qvlm_stream *s);
/* Make room to append n more tokens: enough blocks, and a private copy of a shared block the
 * next token would be written into. On failure the sequence is unchanged. */
qvlm_status qvlm_sequence_reserve(qvlm_sequence *q, qvlm_stream *s, int64_t n, qvlm_error *err);
/* The forward pass's view of the sequence. */
qvlm_seq_state qvlm_sequence_state(qvlm_sequence *q);

#endif /* QVLM_ENGINE_SEQUENCE_H */
