/* sequence.c - a sequence's recurrent state and KV block table (see sequence.h). */
#include "engine/sequence.h"

#include <stdlib.h>
#include <string.h>

qvlm_status qvlm_sequence_init(qvlm_sequence *q, const qvlm_config *cfg, qvlm_kv_pool *pool, qvlm_stream *s,
                               qvlm_error *err) {
    memset(q, 0, sizeof(*q));
    q->cfg = cfg;
    q->pool = pool;
    size_t rb = qvlm_text_recurrent_bytes(cfg);
    q->recurrent = qvlm_backend_alloc(pool->be, rb ? rb : 64);
    if (!q->recurrent) return qvlm_errorf(err, QVLM_E_NOMEM, "sequence state (%zu bytes): out of memory", rb);
    qvlm_text_state_reset(s, cfg, q->recurrent);
    return QVLM_OK;
}

static void drop_blocks(qvlm_sequence *q) {
    for (int64_t i = 0; i < q->n_blocks; i++) qvlm_kv_block_unref(q->pool, q->blocks[i]);
    q->n_blocks = 0;
}

void qvlm_sequence_free(qvlm_sequence *q) {
    if (!q->pool) return;
    drop_blocks(q);
    free(q->blocks);
    free(q->block_data);
    qvlm_backend_free(q->pool->be, q->recurrent);
    memset(q, 0, sizeof(*q));
}

void qvlm_sequence_clear(qvlm_sequence *q, qvlm_stream *s) {
    drop_blocks(q);
    qvlm_text_state_reset(s, q->cfg, q->recurrent);
    q->n_past = 0;
    q->next_pos = 0;
}

qvlm_status qvlm_sequence_reserve(qvlm_sequence *q, qvlm_stream *s, int64_t n, qvlm_error *err) {
    const int64_t bt = q->pool->block_tokens, need = (q->n_past + n + bt - 1) / bt;
    if (need > q->cap_blocks) {
        int64_t cap = need > 2 * q->cap_blocks ? need : 2 * q->cap_blocks;
        qvlm_kv_block **nb = realloc(q->blocks, (size_t)cap * sizeof(*nb));
        if (!nb) return qvlm_errorf(err, QVLM_E_NOMEM, "KV block table: out of memory");
        q->blocks = nb;
        void **nd = realloc(q->block_data, (size_t)cap * sizeof(*nd));
        if (!nd) return qvlm_errorf(err, QVLM_E_NOMEM, "KV block table: out of memory");
        q->block_data = nd;
        q->cap_blocks = cap;
    }
    /* Copy-on-write: the block holding position n_past may be shared with a cache entry. */
    int64_t cur = q->n_past / bt;
    if (n > 0 && cur < q->n_blocks && atomic_load(&q->blocks[cur]->refs) > 1) {
        qvlm_kv_block *copy = qvlm_kv_block_new(q->pool);
        if (!copy) return qvlm_errorf(err, QVLM_E_NOMEM, "KV block copy: out of memory");
        qvlm_op_copy(s, copy->data, q->blocks[cur]->data, q->pool->block_bytes);
        qvlm_kv_block_unref(q->pool, q->blocks[cur]);
        q->blocks[cur] = copy;
        q->block_data[cur] = copy->data;
    }
    int64_t first_new = q->n_blocks;
    while (q->n_blocks < need) {
        qvlm_kv_block *b = qvlm_kv_block_new(q->pool);
        if (!b) {
            while (q->n_blocks > first_new) qvlm_kv_block_unref(q->pool, q->blocks[--q->n_blocks]);
            return qvlm_errorf(err, QVLM_E_NOMEM, "KV blocks for %lld tokens: out of memory", (long long)(q->n_past + n));
        }
        /* Zeroed, so that the rows past n_past are defined bytes: a copy-on-write (above) or
         * a checkpoint copies whole blocks, and a copy of never-written memory is what
         * compute-sanitizer's initcheck reports (a block's worth once per block_tokens). */
        qvlm_op_zero(s, b->data, q->pool->block_bytes);
        q->blocks[q->n_blocks] = b;
        q->block_data[q->n_blocks++] = b->data;
    }
    return QVLM_OK;
}

qvlm_seq_state qvlm_sequence_state(qvlm_sequence *q) {
    return (qvlm_seq_state){q->recurrent, q->block_data, q->n_blocks, q->pool->block_tokens, q->n_past};
}
