/* text.h - the Qwen3.5 text decoder forward pass (qwen35-arch §3).
 *
 * The state a sequence carries between calls (what a cache checkpoint must hold, §4):
 *  - for every Gated DeltaNet layer: the conv state (inputs of the last K-1 tokens) and the
 *    recurrent matrix S; together in one backend buffer so a snapshot is one copy;
 *  - for every full-attention layer: K (after k_norm and RoPE) and V of all past tokens, in
 *    fixed-size blocks (one block covers `block_tokens` tokens of every attention layer), so
 *    that a prefix's blocks can be shared by reference.
 * This file knows the math; who owns and shares the buffers is the engine's business. */
#ifndef QVLM_MODEL_TEXT_H
#define QVLM_MODEL_TEXT_H

#include "kernels/backend.h"
#include "model/model.h"

/* Bytes of the recurrent (GDN) state of one sequence, and of one KV block. */
size_t qvlm_text_recurrent_bytes(const qvlm_config *cfg);
size_t qvlm_text_kv_block_bytes(const qvlm_config *cfg, int64_t block_tokens);

/* A sequence's state as the forward pass sees it. Buffers are backend memory, owned by the
 * caller. Before a call with T tokens, kv_blocks must cover positions 0 .. n_past+T-1. */
typedef struct qvlm_seq_state {
    void *recurrent;      /* [qvlm_text_recurrent_bytes] */
    void *const *kv_blocks; /* [n_kv_blocks], each qvlm_text_kv_block_bytes */
    int64_t n_kv_blocks;
    int64_t kv_block_tokens;
    int64_t n_past;       /* tokens already folded into the state */
} qvlm_seq_state;

/* Zero the recurrent state (the start of a sequence). */
void qvlm_text_state_reset(qvlm_stream *s, const qvlm_config *cfg, void *recurrent);

/* Per-session scratch for batches of up to max_tokens tokens (allocated once). */
typedef struct qvlm_text_ctx qvlm_text_ctx;
qvlm_status qvlm_text_ctx_create(const qvlm_model *m, qvlm_stream *s, int64_t max_tokens, qvlm_text_ctx **out,
                                 qvlm_error *err);
void qvlm_text_ctx_destroy(qvlm_text_ctx *c);
int64_t qvlm_text_ctx_max_tokens(const qvlm_text_ctx *c);

/* Called with the hidden state [T][hidden] (backend memory) after the embeddings (k = 0)
 * and after each layer k = 1..L-1, and k = L after the final norm (as transformers reports). */
typedef void (*qvlm_trace_fn)(void *user, int64_t k, const float *h, int64_t T, int64_t hidden);

typedef struct qvlm_text_batch {
    const int32_t *ids;          /* [T] token ids (host) */
    const float *const *embed_rows; /* [T] or NULL: where non-NULL, that row (backend memory,
                                    [hidden]) replaces the token embedding (image features) */
    const int32_t *pos;          /* [3][T] M-RoPE positions (host) */
    int64_t T;                   /* 1 .. max_tokens */
    int64_t n_logits;            /* logits for the last n_logits tokens (0: none) */
    float *logits;               /* host [n_logits][vocab], or NULL: left in the context for
                                    qvlm_text_logits */
    qvlm_trace_fn trace;         /* optional */
    void *trace_user;
    int32_t *argmax;             /* host [n_logits] or NULL: each logits row's qvlm_op_argmax
                                    (greedy decoding without downloading the logits) */
} qvlm_text_batch;

/* Run the batch on top of `st`, advancing st->n_past by T. Ids must be < vocab (checked). */
qvlm_status qvlm_text_forward(qvlm_text_ctx *c, qvlm_seq_state *st, const qvlm_text_batch *b, qvlm_error *err);

/* The last forward's n logits rows (its n_logits, not more) into host [n][vocab]: for a batch
 * that left them in the context. Valid until the next forward on c. */
qvlm_status qvlm_text_logits(qvlm_text_ctx *c, float *host, int64_t n, qvlm_error *err);

#endif /* QVLM_MODEL_TEXT_H */
