/* safetensors.h - reading safetensors checkpoints, single-file or sharded.
 *
 * Format (https://github.com/huggingface/safetensors): 8 bytes little-endian header length N,
 * N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
 * then the data region; offsets are relative to the start of the data region.
 *
 * Every header is treated as hostile: offsets past the end, overlapping tensors, shape ×
 * dtype size != byte length, unknown dtypes, absurd ranks or sizes are all errors that name
 * the file and the tensor. Files are memory-mapped; tensor data is used in place unless it
 * is misaligned for its element type, in which case it is copied once.
 */
#ifndef QVLM_CORE_SAFETENSORS_H
#define QVLM_CORE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/fileio.h"
#include "core/status.h"

#define QVLM_ST_MAX_DIMS 8
#define QVLM_ST_MAX_HEADER_BYTES ((size_t)100 << 20) /* the reference implementation's cap */

typedef struct qvlm_st_tensor {
    char *name;
    qvlm_dtype dtype;
    int n_dims;
    int64_t shape[QVLM_ST_MAX_DIMS]; /* outermost first */
    int64_t n_elements;
    const uint8_t *data; /* [n_bytes]; into the mapping, or into `owned` */
    size_t n_bytes;
    size_t offset;   /* of the data in the file, for messages */
    int file_idx;    /* which file of the set */
    void *owned;     /* aligned copy when the mapped data was misaligned, else NULL */
} qvlm_st_tensor;

typedef struct qvlm_st_file {
    char *path;
    qvlm_mmap map;
    qvlm_st_tensor *tensors; /* [n_tensors], sorted by name */
    size_t n_tensors;
} qvlm_st_file;

/* Parse and validate the header of a safetensors file held whole in buf[0..n_bytes).
 * Pure (no I/O): this is the fuzz entry point. Tensor data pointers point into buf.
 * On failure *out is left empty. `path` is used in messages only. */
qvlm_status qvlm_st_parse(const uint8_t *buf, size_t n_bytes, const char *path, qvlm_st_file *out,
                          qvlm_error *err);
/* Map `path` and parse it. */
qvlm_status qvlm_st_open(const char *path, qvlm_st_file *out, qvlm_error *err);
void qvlm_st_close(qvlm_st_file *f); /* no-op on a zeroed struct */

/* Find a tensor by name in one file; NULL if absent. */
const qvlm_st_tensor *qvlm_st_file_find(const qvlm_st_file *f, const char *name);

/* A checkpoint directory: model.safetensors, or model.safetensors.index.json and its shards. */
typedef struct qvlm_st_set {
    char *dir;
    qvlm_st_file *files; /* [n_files] */
    size_t n_files;
    const qvlm_st_tensor **index; /* [n_index] every tensor of every file, sorted by name */
    size_t n_index;
} qvlm_st_set;

/* Open the checkpoint in `dir`. A sharded index must map every tensor to a shard that
 * exists and holds it, and shard names may not leave the directory. The same tensor name
 * in two shards is an error. */
qvlm_status qvlm_st_set_open(const char *dir, qvlm_st_set *out, qvlm_error *err);
void qvlm_st_set_close(qvlm_st_set *s);
const qvlm_st_tensor *qvlm_st_set_find(const qvlm_st_set *s, const char *name);
/* Path of the file that holds t (for messages). */
const char *qvlm_st_set_path(const qvlm_st_set *s, const qvlm_st_tensor *t);



/* ---- writing ------------------------------------------------------------------------------- */

typedef struct qvlm_st_out {
    const char *name;
    qvlm_dtype dtype;
    int n_dims;
    int64_t shape[QVLM_ST_MAX_DIMS];
    const void *data; /* [product(shape)] elements, host memory */
} qvlm_st_out;

/* Write tensors[0..n) as one safetensors file (atomically: temp file, fsync, rename). */
qvlm_status qvlm_st_write(const char *path, const qvlm_st_out *tensors, size_t n, qvlm_error *err);
#endif /* QVLM_CORE_SAFETENSORS_H */
