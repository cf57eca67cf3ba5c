/* fileio.h - reading files whole, memory-mapping them, and writing them atomically.
 *
 * Everything read here may be corrupt or hostile: sizes are checked against limits before
 * any allocation, and every error names the path.
 */
#ifndef QVLM_CORE_FILEIO_H
#define QVLM_CORE_FILEIO_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* Read the whole file at `path` into a fresh buffer (NUL-terminated, the NUL not counted).
 * Files larger than max_bytes are refused with QVLM_E_LIMIT before reading.
 * On success the caller owns *out (free()). */
qvlm_status qvlm_file_read(const char *path, size_t max_bytes, char **out, size_t *out_bytes,
                           qvlm_error *err);

/* A read-only memory map of a whole file. */
typedef struct qvlm_mmap {
    const uint8_t *data; /* [n_bytes] */
    size_t n_bytes;
} qvlm_mmap;

/* Map `path` read-only. An empty file maps to data == NULL, n_bytes == 0. */
qvlm_status qvlm_mmap_open(qvlm_mmap *m, const char *path, qvlm_error *err);
void qvlm_mmap_close(qvlm_mmap *m); /* no-op on a zeroed struct */
/* The whole pages of [p, p + n_bytes) inside a read-only mapping are not needed for now: drop
 * them from the process (the page cache keeps them while memory allows; a later read re-reads
 * the file). Used once a mapped weight has been copied elsewhere. */
void qvlm_mmap_forget(const void *p, size_t n_bytes);
/* Bytes of memory available for new allocations without swapping (Linux: MemAvailable of
 * /proc/meminfo, which counts reclaimable page cache), or -1 when unknown. */
int64_t qvlm_mem_available(void);

/* Write `data` to `path` atomically: write to "path.tmp.<pid>.<n>", fsync, rename, fsync
 * the directory. A crash leaves either the old file or the new one, never a torn one. */
qvlm_status qvlm_file_write_atomic(const char *path, const void *data, size_t n_bytes,
                                   qvlm_error *err);

/* Does `path` exist (any type)? */
int qvlm_path_exists(const char *path);

/* Join dir and name into a fresh string (malloc); NULL on allocation failure. */
char *qvlm_path_join(const char *dir, const char *name);

/* Ask the kernel to back [p, p + bytes) with transparent huge pages (p 2 MiB aligned); a hint:
 * nothing happens where THP is off or unsupported. */
void qvlm_advise_hugepages(void *p, size_t bytes);

#endif /* QVLM_CORE_FILEIO_H */
