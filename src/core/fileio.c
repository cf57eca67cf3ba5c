/* fileio.c - whole-file reads, read-only mmaps and atomic writes (see fileio.h). */
#include "core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

qvlm_status qvlm_file_read(const char *path, size_t max_bytes, char **out, size_t *out_bytes,
                           qvlm_error *err) {
    *out = NULL;
    if (out_bytes) *out_bytes = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return qvlm_errorf(err, QVLM_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        qvlm_errorf(err, QVLM_E_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        qvlm_errorf(err, QVLM_E_IO, "%s: not a regular file", path);
        goto out_close;
    }
    if ((uint64_t)st.st_size > max_bytes) {
        qvlm_errorf(err, QVLM_E_LIMIT, "%s: file is %lld bytes, over the limit of %zu", path,
                    (long long)st.st_size, max_bytes);
        goto out_close;
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        qvlm_errorf(err, QVLM_E_NOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
        goto out_close;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(buf);
            qvlm_errorf(err, QVLM_E_IO, "%s: read failed after %zu of %zu bytes%s%s", path, got, n,
                        r < 0 ? ": " : "", r < 0 ? strerror(errno) : "");
            goto out_close;
        }
        got += (size_t)r;
    }
    buf[n] = '\0';
    close(fd);
    *out = buf;
    if (out_bytes) *out_bytes = n;
    return QVLM_OK;
out_close:
    close(fd);
    return err ? err->code : QVLM_E_IO;
}

qvlm_status qvlm_mmap_open(qvlm_mmap *m, const char *path, qvlm_error *err) {
    m->data = NULL;
    m->n_bytes = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return qvlm_errorf(err, QVLM_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return qvlm_errorf(err, QVLM_E_IO, "%s: not a readable regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return QVLM_OK;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return qvlm_errorf(err, QVLM_E_IO, "%s: mmap failed: %s", path, strerror(errno));
    m->data = p;
    m->n_bytes = (size_t)st.st_size;
    return QVLM_OK;
}

void qvlm_mmap_close(qvlm_mmap *m) {
    if (m->data) munmap((void *)m->data, m->n_bytes);
    m->data = NULL;
    m->n_bytes = 0;
}

void qvlm_mmap_forget(const void *p, size_t n_bytes) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), a = ((uintptr_t)p + page - 1) & ~(page - 1);
    const uintptr_t b = ((uintptr_t)p + n_bytes) & ~(page - 1);
    if (b > a) (void)madvise((void *)a, b - a, MADV_DONTNEED);
}

int64_t qvlm_mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) break;
    fclose(f);
    return kb >= 0 ? (int64_t)kb * 1024 : -1;
}

static qvlm_status write_all(int fd, const void *data, size_t n, const char *path, qvlm_error *err) {
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return qvlm_errorf(err, QVLM_E_IO, "%s: write failed: %s", path, strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return QVLM_OK;
}

qvlm_status qvlm_file_write_atomic(const char *path, const void *data, size_t n_bytes,
                                   qvlm_error *err) {
    /* A per-process counter keeps two threads writing the same path from sharing a temp
     * name; the pid keeps two processes apart. */
    static atomic_uint counter;
    unsigned n = atomic_fetch_add(&counter, 1);
    size_t len = strlen(path) + 64;
    char *tmp = malloc(len);
    if (!tmp) return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", path);
    snprintf(tmp, len, "%s.tmp.%ld.%u", path, (long)getpid(), n);
    qvlm_status rc = QVLM_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = qvlm_errorf(err, QVLM_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto out_free;
    }
    rc = write_all(fd, data, n_bytes, tmp, err);
    if (rc == QVLM_OK && fsync(fd) != 0)
        rc = qvlm_errorf(err, QVLM_E_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && rc == QVLM_OK)
        rc = qvlm_errorf(err, QVLM_E_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (rc == QVLM_OK && rename(tmp, path) != 0)
        rc = qvlm_errorf(err, QVLM_E_IO, "%s: rename failed: %s", path, strerror(errno));
    if (rc != QVLM_OK) {
        unlink(tmp);
        goto out_free;
    }
    /* fsync the directory so the rename itself survives a crash. */
    char *dcopy = strdup(path);
    if (dcopy) {
        int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
        free(dcopy);
    }
out_free:
    free(tmp);
    return rc;
}

int qvlm_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

char *qvlm_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (!s) return NULL;
    memcpy(s, dir, a);
    size_t k = a;
    if (a > 0 && dir[a - 1] != '/') s[k++] = '/';
    memcpy(s + k, name, b + 1);
    return s;
}

void qvlm_advise_hugepages(void *p, size_t bytes) {
#ifdef MADV_HUGEPAGE
    if (p && bytes) (void)madvise(p, bytes, MADV_HUGEPAGE);
#else
    (void)p, (void)bytes;
#endif
}
