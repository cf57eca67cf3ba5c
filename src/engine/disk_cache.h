/* disk_cache.h - the cache's lower tiers: checkpoints, KV blocks and vision features as
 * content-addressed files, kept in host RAM and/or in a directory (so that a new process gets
 * the same hits).
 *
 * Host-RAM tier (a host budget > 0): files are written to host memory first and read from it
 * first; past the host budget the least recently used move to the directory, or are dropped
 * when there is none. For a device backend this is the tier between device memory and disk:
 * the cache's writer thread fills it in the background (device -> host copies on its own
 * stream), spills to disk in the background, and a checkpoint found here is uploaded without
 * touching the disk. Closing (and qvlm_disk_cache_sync) writes the host files to the directory.
 *
 * Layout: DIR/<model fingerprint, 32 hex>/ holds
 *   ck-<key hash>.qvc   a checkpoint: its key prefix, state and references to KV block files
 *   kv-<key hash>.qvk   one full KV block, addressed by the hash of all keys up to its end
 *   im-<image hash>.qvv the vision features of one image
 * The fingerprint covers config.json, the tensor index (names, dtypes, shapes, sizes) and the
 * numerics options, so files of another model or precision are never even looked at.
 *
 * Every file starts with this 64-byte header (little-endian):
 *   offset size  field
 *        0    8  magic "QVLMCACH"
 *        8    4  format version (1; other versions are skipped)
 *       12    4  kind: 1 checkpoint, 2 KV block, 3 vision features
 *       16   16  model fingerprint (XXH3-128: lo, hi)
 *       32    8  payload bytes (the file is exactly 64 + this)
 *       40   16  XXH3-128 of the payload (lo, hi)
 *       56    8  zero
 * Checkpoint payload:
 *        0    8  salt
 *        8    8  P (positions covered)
 *       16    8  next M-RoPE position
 *       24    8  KV block tokens
 *       32    8  KV block bytes
 *       40    8  recurrent state bytes
 *       48    8  vocab size if logits follow, else 0
 *       56   16P keys of positions [0, P) (hi, lo each)
 *        .  16F content hashes of the F = floor(P / block tokens) full KV blocks
 *        .    . the partial last block's bytes, when P is not a multiple of block tokens
 *        .    . recurrent state bytes
 *        .    . logits, vocab f32 (when present)
 * KV block payload: block bytes. Vision payload: rows i64, hidden i64, rows x hidden f32.
 *
 * Files are written to a temporary name, fsynced and renamed. A file that is truncated,
 * fails its checksum, has another version, fingerprint or geometry, or disagrees with its name
 * is skipped with a warning (and removed) and never trusted. Over the disk budget, the least
 * recently used files go first. */
#ifndef QVLM_ENGINE_DISK_CACHE_H
#define QVLM_ENGINE_DISK_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "model/image_preprocess.h"
#include "model/model.h"

typedef struct qvlm_disk_cache qvlm_disk_cache;

/* Open (creating) DIR/<fingerprint>/ for model m; dir NULL: the host tier only (then
 * host_budget_bytes > 0). budget_bytes bounds the directory, host_budget_bytes the host tier
 * (0: none, files go straight to the directory). */
qvlm_status qvlm_disk_cache_open(const qvlm_model *m, const char *dir, size_t budget_bytes, size_t host_budget_bytes,
                                 qvlm_disk_cache **out, qvlm_error *err);
void qvlm_disk_cache_close(qvlm_disk_cache *d);
/* Write every host-tier file to the directory too (no-op without one). */
void qvlm_disk_cache_sync(qvlm_disk_cache *d);
size_t qvlm_disk_cache_bytes(qvlm_disk_cache *d); /* the directory's */
/* Bytes in the host tier, and checkpoints loaded from it. */
void qvlm_disk_cache_host_stats(qvlm_disk_cache *d, size_t *bytes, uint64_t *ck_hits);

/* A checkpoint as bytes in host memory (for writing) or to be filled (reading). */
typedef struct qvlm_disk_ck {
    uint64_t salt;
    int64_t pos, next_pos, block_tokens;
    size_t block_bytes, recurrent_bytes;
    int64_t vocab;             /* 0 when no logits */
    const uint64_t *keys;      /* [pos][2] hi, lo */
    const void *const *blocks; /* [ceil(pos / block_tokens)] host copies of the blocks */
    const void *recurrent;
    const float *logits;
} qvlm_disk_ck;

/* Write a checkpoint and the KV blocks it needs that are not on disk yet; *id (optional)
 * receives the id to load it by. */
qvlm_status qvlm_disk_put_checkpoint(qvlm_disk_cache *d, const qvlm_disk_ck *ck, uint64_t *id, qvlm_error *err);

/* Checkpoints found on disk at open: called for each valid header with its salt and keys
 * (borrowed for the call) and an id to load it by. */
typedef void (*qvlm_disk_ck_fn)(void *user, uint64_t salt, const uint64_t *keys, int64_t pos, int64_t next_pos,
                                bool has_logits, uint64_t id);
void qvlm_disk_list_checkpoints(qvlm_disk_cache *d, qvlm_disk_ck_fn fn, void *user);

/* Load checkpoint `id`: its full contents, checksums verified. The callbacks receive each part
 * (host memory, valid during the call); `block` is called for every KV block in order. */
typedef struct qvlm_disk_loader {
    void *user;
    qvlm_status (*header)(void *user, int64_t pos, int64_t next_pos, bool has_logits, qvlm_error *err);
    qvlm_status (*block)(void *user, int64_t index, const void *data, qvlm_error *err);
    qvlm_status (*recurrent)(void *user, const void *data, qvlm_error *err);
    qvlm_status (*logits)(void *user, const float *data, qvlm_error *err);
} qvlm_disk_loader;
qvlm_status qvlm_disk_load_checkpoint(qvlm_disk_cache *d, uint64_t id, const qvlm_disk_loader *l, qvlm_error *err);
/* Forget (and delete) a checkpoint file found to be bad. */
void qvlm_disk_drop_checkpoint(qvlm_disk_cache *d, uint64_t id);

/* Vision features. get: QVLM_E_NOT_FOUND when absent; *rows (malloc, caller frees). */
qvlm_status qvlm_disk_put_vision(qvlm_disk_cache *d, qvlm_hash128 h, const float *rows, int64_t n_rows, int64_t hidden,
                                 qvlm_error *err);
qvlm_status qvlm_disk_get_vision(qvlm_disk_cache *d, qvlm_hash128 h, int64_t hidden, float **rows, int64_t *n_rows,
                                 qvlm_error *err);
bool qvlm_disk_has_vision(qvlm_disk_cache *d, qvlm_hash128 h);

/* Counters: files skipped as bad since open. */
uint64_t qvlm_disk_skipped(qvlm_disk_cache *d);

/* A checkpoint file's payload, parsed: every size checked against the payload's length. The
 * pointers point into the payload. QVLM_E_CORRUPT when anything is inconsistent. Pure. */
typedef struct qvlm_disk_ck_view {
    uint64_t salt, pos, next_pos, block_tokens, block_bytes, recurrent_bytes, vocab;
    const uint8_t *keys, *block_hashes, *partial, *recurrent, *logits;
    uint64_t full_blocks;
} qvlm_disk_ck_view;
qvlm_status qvlm_disk_parse_checkpoint(const uint8_t *payload, size_t n, const char *name, qvlm_disk_ck_view *v,
                                       qvlm_error *err);

/* The file-format checks on one buffer (the fuzz entry point): QVLM_OK if `data` is a valid
 * file of `kind` for this cache. */
qvlm_status qvlm_disk_check_file(const uint8_t *data, size_t n, uint32_t kind, const uint64_t fingerprint[2],
                                 const char *name, qvlm_error *err);

#endif /* QVLM_ENGINE_DISK_CACHE_H */
