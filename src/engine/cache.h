/* cache.h - the cross-turn multimodal cache: exact checkpoints of a sequence's state, found by
 * the longest cached prefix of token ids and image content hashes, and the vision features
 * of every image seen, all under one memory budget. Shared by all sessions (thread-safe).
 *
 * Keys. Every position of a prompt has a 128-bit key: a text token's is its id; an image pad's
 * is derived from the image's content hash and the pad's index in its image, with the top bit
 * set so it can never equal a token. Two different images therefore never share a prefix,
 * whatever their placeholder ids, and the same image anywhere gives the same keys.
 *
 * Checkpoints. A checkpoint at position P holds everything the forward pass needs to resume
 * there (qwen35-arch §4): a copy of the Gated DeltaNet state (which cannot be rolled back),
 * references to the KV blocks of positions [0, P) (shared, never copied), the next M-RoPE
 * position and, at a prompt's end, the logits of its last token. Checkpoints hang on the
 * nodes of a radix tree over keys; an isolation salt selects the tree.
 *
 * Budget. Checkpoint snapshots, the KV blocks they hold (each counted once) and vision
 * features share one byte budget; past it, the least recently used checkpoint at a leaf of
 * the tree or vision entry is evicted, never one a request holds. */
#ifndef QVLM_ENGINE_CACHE_H
#define QVLM_ENGINE_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/sequence.h"
#include "model/image_preprocess.h"

typedef struct qvlm_key {
    uint64_t hi, lo;
} qvlm_key;

static inline qvlm_key qvlm_key_text(int32_t id) { return (qvlm_key){0, (uint64_t)(uint32_t)id}; }
static inline qvlm_key qvlm_key_image(qvlm_hash128 h, int64_t j) {
    return (qvlm_key){h.hi | (1ull << 63), h.lo + (uint64_t)j * 0x9e3779b97f4a7c15ull};
}
static inline bool qvlm_key_eq(qvlm_key a, qvlm_key b) { return a.hi == b.hi && a.lo == b.lo; }

typedef struct qvlm_cache qvlm_cache;
typedef struct qvlm_checkpoint qvlm_checkpoint;

typedef struct qvlm_cache_params {
    size_t budget_bytes;      /* memory for snapshots + KV blocks + vision features (the
                               * backend's: device memory on a GPU) */
    const char *dir;          /* disk tier directory, or NULL */
    size_t disk_budget_bytes; /* 0 = 4x the larger of budget_bytes and host_budget_bytes */
    size_t host_budget_bytes; /* host-RAM tier between the two (disk_cache.h), 0 = none */
} qvlm_cache_params;

typedef struct qvlm_cache_stats {
    uint64_t lookups, hits;           /* prompt lookups, and those that resumed past 0 */
    uint64_t reused_tokens;           /* positions not recomputed thanks to a hit */
    uint64_t snapshots, evictions;    /* checkpoints made, entries evicted */
    uint64_t vision_hits, vision_misses;
    uint64_t disk_hits, disk_writes, disk_skipped; /* lower tiers: loads, stores, bad files ignored */
    uint64_t host_hits;               /* of disk_hits, checkpoints found in the host-RAM tier */
    size_t bytes, budget_bytes;       /* memory in use / allowed */
    size_t snapshot_bytes, kv_bytes, vision_bytes;
    int64_t n_checkpoints, n_vision;
    size_t disk_bytes, host_bytes;
} qvlm_cache_stats;

/* Create a cache for model m (borrowed; it must outlive the cache). With p->dir, checkpoints
 * and features also persist there (see disk_cache.h). */
qvlm_status qvlm_cache_create(const qvlm_model *m, const qvlm_cache_params *p, qvlm_cache **out, qvlm_error *err);
void qvlm_cache_destroy(qvlm_cache *c); /* no checkpoint may be held */

/* ---- checkpoints ---------------------------------------------------------------------------- */

/* The deepest checkpoint on the path of keys[0..n) (under `salt`) at a position P <= max_pos;
 * a checkpoint at P == n counts only if it has logits. Returns it held (release with
 * qvlm_checkpoint_release) or NULL. *matched (optional) receives the length of the longest
 * cached prefix of keys (for statistics: it can exceed the checkpoint's P). A checkpoint that is
 * only on disk is loaded first, through the caller's stream `s`. */
qvlm_checkpoint *qvlm_cache_lookup(qvlm_cache *c, uint64_t salt, const qvlm_key *keys, int64_t n, int64_t max_pos,
                                   int64_t *matched, qvlm_stream *s);
void qvlm_checkpoint_release(qvlm_cache *c, qvlm_checkpoint *ck);
int64_t qvlm_checkpoint_pos(const qvlm_checkpoint *ck);
bool qvlm_checkpoint_has_logits(const qvlm_checkpoint *ck);

/* Make `q` the state at the checkpoint: its KV blocks (by reference), its recurrent state (a
 * copy), P and next_pos; copies the logits to `logits` (host [vocab]) when it has them and
 * logits is non-NULL. On failure q is unchanged. */
qvlm_status qvlm_checkpoint_restore(qvlm_cache *c, qvlm_checkpoint *ck, qvlm_sequence *q, qvlm_stream *s,
                                    float *logits, qvlm_error *err);

/* Is there a checkpoint at exactly position n of keys (under salt)? */
bool qvlm_cache_contains(qvlm_cache *c, uint64_t salt, const qvlm_key *keys, int64_t n);

/* Checkpoint the sequence where it stands (P = q->n_past) for keys[0..P). logits (host
 * [vocab]) may be NULL. An existing checkpoint at the same place is kept (and refreshed).
 * May evict older entries to stay within the budget. QVLM_E_NOMEM when even an empty cache
 * could not hold it (then nothing is stored). */
qvlm_status qvlm_cache_insert(qvlm_cache *c, uint64_t salt, const qvlm_key *keys, qvlm_sequence *q, qvlm_stream *s,
                              const float *logits, qvlm_error *err);

/* ---- vision features -------------------------------------------------------------------------- */

typedef struct qvlm_vision_entry qvlm_vision_entry;
/* The features of image `h` if cached ([n_rows][hidden] backend memory), held; else NULL. */
qvlm_vision_entry *qvlm_cache_vision_get(qvlm_cache *c, qvlm_hash128 h, qvlm_stream *s);
const float *qvlm_vision_entry_rows(const qvlm_vision_entry *e);
int64_t qvlm_vision_entry_n_rows(const qvlm_vision_entry *e);
void qvlm_vision_entry_release(qvlm_cache *c, qvlm_vision_entry *e);
/* Store a copy of features [n_rows][hidden] (backend memory) under h. */
qvlm_status qvlm_cache_vision_put(qvlm_cache *c, qvlm_hash128 h, const float *rows, int64_t n_rows, qvlm_stream *s,
                                  qvlm_error *err);

/* ---- upkeep ------------------------------------------------------------------------------------ */

void qvlm_cache_stats_get(qvlm_cache *c, qvlm_cache_stats *out);
/* Count a lookup's outcome in the statistics. */
void qvlm_cache_note_lookup(qvlm_cache *c, bool hit, int64_t reused_tokens);
/* Write everything not yet on disk (disk tier only); called at shutdown. */
qvlm_status qvlm_cache_flush(qvlm_cache *c, qvlm_error *err);

#endif /* QVLM_ENGINE_CACHE_H */
