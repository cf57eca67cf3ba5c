/* kv_pool.c - reference-counted KV blocks (see kv_pool.h). */
#include "engine/kv_pool.h"

#include <stdlib.h>

void qvlm_kv_pool_init(qvlm_kv_pool *p, qvlm_backend *be, int64_t block_tokens, size_t block_bytes) {
    p->be = be;
    p->block_tokens = block_tokens;
    p->block_bytes = block_bytes;
    atomic_store(&p->n_live, 0);
}

qvlm_kv_block *qvlm_kv_block_new(qvlm_kv_pool *p) {
    qvlm_kv_block *b = malloc(sizeof(*b));
    if (!b) return NULL;
    /* Models without full-attention layers have 0-byte blocks; keep a valid pointer. */
    b->data = qvlm_backend_alloc(p->be, p->block_bytes ? p->block_bytes : 64);
    if (!b->data) {
        free(b);
        return NULL;
    }
    atomic_store(&b->refs, 1);
    b->cache_refs = 0;
    atomic_fetch_add(&p->n_live, 1);
    return b;
}

void qvlm_kv_block_ref(qvlm_kv_block *b) { atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed); }

void qvlm_kv_block_unref(qvlm_kv_pool *p, qvlm_kv_block *b) {
    if (!b) return;
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) {
        qvlm_backend_free(p->be, b->data);
        free(b);
        atomic_fetch_sub(&p->n_live, 1);
    }
}
