/* kv_pool.h - fixed-size attention KV blocks, reference counted so that every sequence and
 * cache entry that contains a prefix shares its blocks instead of copying them.
 *
 * A block holds `block_tokens` consecutive tokens of every full-attention layer (see
 * model/text.h for the layout inside). A block is immutable for the tokens it already holds:
 * sequences only append, and a sequence that wants to append into a block someone else also
 * holds copies it first (copy-on-write, qvlm_sequence_reserve). */
#ifndef QVLM_ENGINE_KV_POOL_H
#define QVLM_ENGINE_KV_POOL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "kernels/backend.h"

typedef struct qvlm_kv_block {
    _Atomic int refs;
    int cache_refs; /* how many cache checkpoints hold it (under the cache's lock): its bytes
                       count against the cache budget once, while this is > 0 */
    void *data;     /* backend memory, qvlm_kv_pool.block_bytes */
} qvlm_kv_block;

typedef struct qvlm_kv_pool {
    qvlm_backend *be;
    int64_t block_tokens;
    size_t block_bytes;
    _Atomic int64_t n_live; /* blocks allocated and not yet freed */
} qvlm_kv_pool;

void qvlm_kv_pool_init(qvlm_kv_pool *p, qvlm_backend *be, int64_t block_tokens, size_t block_bytes);
/* A new block with one reference, or NULL when out of memory. */
qvlm_kv_block *qvlm_kv_block_new(qvlm_kv_pool *p);
/* Take / drop a reference. Dropping the last frees the block. Thread-safe. */
void qvlm_kv_block_ref(qvlm_kv_block *b);
void qvlm_kv_block_unref(qvlm_kv_pool *p, qvlm_kv_block *b);
static inline size_t qvlm_kv_pool_live_bytes(qvlm_kv_pool *p) {
    return (size_t)atomic_load(&p->n_live) * p->block_bytes;
}

#endif /* QVLM_ENGINE_KV_POOL_H */
