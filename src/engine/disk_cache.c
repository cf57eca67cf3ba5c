/* disk_cache.c - content-addressed cache files (format in disk_cache.h). */
#include "engine/disk_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/fileio.h"
#include "engine/sequence.h"
#include "model/text.h"

#define MAGIC "QVLMCACH"
#define VERSION 1u
#define HDR 64
#define CK_FIXED 56
#define KIND_CK 1u
#define KIND_KV 2u
#define KIND_IM 3u
#define MAX_FILE ((size_t)16 << 30)

typedef struct ckfile {
    uint64_t id;
    char name[48];
} ckfile;

/* A file of the host-RAM tier: header + payload as it would be on disk. */
typedef struct memfile {
    char name[48];
    uint8_t *data;
    size_t n;
    uint64_t last_use;
    bool spilling; /* being moved to the directory: readable, and freed only by the mover */
} memfile;

struct qvlm_disk_cache {
    char *dir;                /* NULL: the host tier only */
    /* Host-RAM tier (mem_budget > 0): files are written here first and read from here first;
     * past the budget the least recently used move to the directory (or are dropped without
     * one). Checkpoint ids name files wherever they are. */
    memfile *mem;
    int64_t n_mem, cap_mem;
    size_t mem_budget, mem_bytes;
    uint64_t mem_clock, mem_hits;
    uint64_t fp[2];
    /* The model's geometry: a file must agree with it exactly before anything is copied. */
    uint64_t block_tokens, block_bytes, recurrent_bytes, vocab, hidden;
    size_t budget, bytes;
    pthread_mutex_t mu;
    ckfile *cks;
    int64_t n_cks, cap_cks;
    uint64_t next_id, skipped;
};

/* ---- little helpers ----------------------------------------------------------------------------- */

static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); } /* little-endian hosts only (checked at open) */
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void hex128(char *out, uint64_t lo, uint64_t hi) { snprintf(out, 33, "%016llx%016llx", (unsigned long long)hi, (unsigned long long)lo); }

static void file_name(char *out, size_t n, const char *prefix, uint64_t lo, uint64_t hi, const char *ext) {
    char h[33];
    hex128(h, lo, hi);
    snprintf(out, n, "%s%s%s", prefix, h, ext);
}

static void warn_skip(qvlm_disk_cache *d, const char *name, const char *why) {
    fprintf(stderr, "qvlm: cache: skipping %s/%s: %s\n", d->dir ? d->dir : "(host memory)", name, why);
    d->skipped++;
}

/* Header for a payload. */
static void make_header(uint8_t *h, uint32_t kind, const uint64_t fp[2], const uint8_t *payload, size_t n) {
    memset(h, 0, HDR);
    memcpy(h, MAGIC, 8);
    uint32_t v = VERSION;
    memcpy(h + 8, &v, 4);
    memcpy(h + 12, &kind, 4);
    put_u64(h + 16, fp[0]);
    put_u64(h + 24, fp[1]);
    put_u64(h + 32, (uint64_t)n);
    XXH128_hash_t c = XXH3_128bits(payload, n);
    put_u64(h + 40, c.low64);
    put_u64(h + 48, c.high64);
}

qvlm_status qvlm_disk_check_file(const uint8_t *data, size_t n, uint32_t kind, const uint64_t fp[2], const char *name,
                                 qvlm_error *err) {
    uint32_t v, k;
    if (n < HDR || memcmp(data, MAGIC, 8) != 0) return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: not a qvlm cache file", name);
    memcpy(&v, data + 8, 4);
    memcpy(&k, data + 12, 4);
    if (v != VERSION) return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s: format version %u (this qvlm reads %u)", name, v, VERSION);
    if (k != kind) return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: kind %u, expected %u", name, k, kind);
    if (get_u64(data + 16) != fp[0] || get_u64(data + 24) != fp[1])
        return qvlm_errorf(err, QVLM_E_MISMATCH, "%s: made for another model or precision", name);
    uint64_t len = get_u64(data + 32);
    if (len != n - HDR) return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: payload is %zu bytes, header says %llu (truncated?)", name, n - HDR, (unsigned long long)len);
    XXH128_hash_t c = XXH3_128bits(data + HDR, (size_t)len);
    if (c.low64 != get_u64(data + 40) || c.high64 != get_u64(data + 48))
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: checksum mismatch", name);
    return QVLM_OK;
}

static char *path_of(qvlm_disk_cache *d, const char *name) { return qvlm_path_join(d->dir, name); }

static bool kind_is_ck(const char *name) { return strncmp(name, "ck-", 3) == 0; }

/* ---- the two tiers: host memory, then the directory --------------------------------------------------- */

/* Write header + payload (buf) to the directory atomically; accounts the bytes. Existing files
 * are left alone (their name is their content). */
static qvlm_status disk_write(qvlm_disk_cache *d, const char *name, const uint8_t *buf, size_t payload, qvlm_error *err) {
    char *p = path_of(d, name);
    if (!p) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    qvlm_status rc = QVLM_OK;
    /* The name is the content, so an existing file of the right size is kept; one of another
     * size (truncated by a crash or a full disk) is replaced. A same-size file with flipped
     * bits fails its checksum when read, is deleted then, and is rewritten the next time. */
    struct stat st;
    bool keep = stat(p, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size == HDR + payload;
    if (!keep) {
        rc = qvlm_file_write_atomic(p, buf, HDR + payload, err);
        if (!rc) {
            pthread_mutex_lock(&d->mu);
            d->bytes += HDR + payload;
            pthread_mutex_unlock(&d->mu);
        }
    }
    free(p);
    return rc;
}

static int64_t mem_find(const qvlm_disk_cache *d, const char *name) {
    for (int64_t i = 0; i < d->n_mem; i++)
        if (strcmp(d->mem[i].name, name) == 0) return i;
    return -1;
}

/* Take entry i out of the host tier (under the lock); the caller owns its data. */
static memfile mem_take(qvlm_disk_cache *d, int64_t i) {
    memfile f = d->mem[i];
    d->mem[i] = d->mem[--d->n_mem];
    d->mem_bytes -= f.n;
    return f;
}

/* Forget checkpoint file `name` in the index (under the lock). */
static void forget_ck(qvlm_disk_cache *d, const char *name) {
    for (int64_t k = 0; k < d->n_cks; k++)
        if (strcmp(d->cks[k].name, name) == 0) {
            d->cks[k] = d->cks[--d->n_cks];
            return;
        }
}

/* Move the least recently used host files to the directory until the tier fits its budget
 * (without a directory they are dropped, and so are the checkpoints they hold). A file stays
 * readable here until it is on disk, so a request loading it meanwhile never misses it; the
 * disk write runs outside the lock, so readers never wait for the disk. Only the writer thread
 * (the one caller of mem_write) spills, one file at a time. */
static void mem_spill(qvlm_disk_cache *d) {
    for (;;) {
        pthread_mutex_lock(&d->mu);
        int64_t lru = -1;
        for (int64_t i = 0; d->mem_bytes > d->mem_budget && i < d->n_mem; i++)
            if (!d->mem[i].spilling && (lru < 0 || d->mem[i].last_use < d->mem[lru].last_use)) lru = i;
        if (lru < 0) {
            pthread_mutex_unlock(&d->mu);
            return;
        }
        memfile f = d->mem[lru];
        d->mem[lru].spilling = true;
        if (!d->dir && kind_is_ck(f.name)) forget_ck(d, f.name);
        pthread_mutex_unlock(&d->mu);
        if (d->dir) {
            qvlm_error err;
            if (disk_write(d, f.name, f.data, f.n - HDR, &err) != QVLM_OK)
                fprintf(stderr, "qvlm: cache: moving %s to disk failed: %s\n", f.name, err.msg);
        }
        pthread_mutex_lock(&d->mu);
        int64_t i = mem_find(d, f.name); /* still there: nobody else removes a spilling file */
        if (i >= 0) free(mem_take(d, i).data);
        pthread_mutex_unlock(&d->mu);
    }
}

/* Header + payload (*buf, malloc'd, HDR + payload bytes) into the host tier, which takes the
 * buffer itself (*buf becomes NULL) rather than a copy: no copy of a whole checkpoint while
 * readers wait for the lock. A file already there is kept (the name is the content) and *buf
 * left to the caller. Then spill past the budget. */
static qvlm_status mem_write(qvlm_disk_cache *d, const char *name, uint8_t **buf, size_t payload, qvlm_error *err) {
    pthread_mutex_lock(&d->mu);
    int64_t i = mem_find(d, name);
    if (i >= 0) d->mem[i].last_use = ++d->mem_clock;
    if (i < 0 && d->n_mem == d->cap_mem) {
        int64_t cap = d->cap_mem ? 2 * d->cap_mem : 64;
        memfile *n = realloc(d->mem, (size_t)cap * sizeof(*n));
        if (n) d->mem = n, d->cap_mem = cap;
    }
    const bool added = i < 0 && d->n_mem < d->cap_mem;
    if (added) {
        memfile *f = &d->mem[d->n_mem++];
        snprintf(f->name, sizeof(f->name), "%s", name);
        f->data = *buf, f->n = HDR + payload, f->last_use = ++d->mem_clock, f->spilling = false;
        d->mem_bytes += f->n;
        *buf = NULL;
    }
    pthread_mutex_unlock(&d->mu);
    if (i < 0 && !added) return qvlm_errorf(err, QVLM_E_NOMEM, "cache: out of host memory for %s", name);
    mem_spill(d);
    return QVLM_OK;
}

/* Header + payload (in *buf, malloc'd, header space first) into the first tier. The host tier
 * may keep the buffer (then *buf is NULL); the caller frees what is left. */
static qvlm_status write_file(qvlm_disk_cache *d, const char *name, uint32_t kind, uint8_t **buf, size_t payload,
                              qvlm_error *err) {
    make_header(*buf, kind, d->fp, *buf + HDR, payload);
    return d->mem_budget ? mem_write(d, name, buf, payload, err) : disk_write(d, name, *buf, payload, err);
}

/* A copy of the file from the host tier, if it is there. */
static bool mem_read(qvlm_disk_cache *d, const char *name, char **buf, size_t *n) {
    pthread_mutex_lock(&d->mu);
    int64_t i = mem_find(d, name);
    *buf = i >= 0 ? malloc(d->mem[i].n) : NULL;
    if (*buf) {
        memcpy(*buf, d->mem[i].data, d->mem[i].n);
        *n = d->mem[i].n;
        d->mem[i].last_use = ++d->mem_clock;
        d->mem_hits += kind_is_ck(name);
    }
    pthread_mutex_unlock(&d->mu);
    return *buf != NULL;
}

static qvlm_status read_file(qvlm_disk_cache *d, const char *name, uint32_t kind, char **buf, size_t *n,
                             qvlm_error *err) {
    /* The host tier holds what this process wrote: no checksum to verify. */
    if (mem_read(d, name, buf, n)) return QVLM_OK;
    if (!d->dir) return qvlm_errorf(err, QVLM_E_NOT_FOUND, "%s: no longer cached", name);
    char *p = path_of(d, name);
    if (!p) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    qvlm_status rc = qvlm_file_read(p, MAX_FILE, buf, n, err);
    if (!rc) rc = qvlm_disk_check_file((const uint8_t *)*buf, *n, kind, d->fp, name, err);
    if (!rc) {
        /* Recently used: garbage collection goes by modification time. */
        (void)utimensat(AT_FDCWD, p, NULL, 0);
    } else if (rc != QVLM_E_IO) {
        warn_skip(d, name, err->msg);
        unlink(p);
        free(*buf);
        *buf = NULL;
    }
    free(p);
    return rc;
}

/* ---- fingerprint --------------------------------------------------------------------------------- */

static qvlm_status fingerprint(const qvlm_model *m, uint64_t fp[2], qvlm_error *err) {
    char *cp = qvlm_path_join(m->dir, "config.json"), *cfg = NULL;
    size_t n = 0;
    qvlm_status rc = cp ? qvlm_file_read(cp, (size_t)16 << 20, &cfg, &n, err) : qvlm_errorf(err, QVLM_E_NOMEM, "oom");
    free(cp);
    if (rc) return rc;
    XXH3_state_t *st = XXH3_createState();
    if (!st) {
        free(cfg);
        return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    }
    XXH3_128bits_reset(st);
    /* v2: the CPU kernels' numerics changed (vectorised exp, norms, DeltaNet and attention
     * orders), so states saved by v1 builds are not the bits this build computes. */
    XXH3_128bits_update(st, "qvlm-cache-v2", 13);
    XXH3_128bits_update(st, cfg, n);
    for (size_t i = 0; i < m->st.n_index; i++) {
        const qvlm_st_tensor *t = m->st.index[i];
        XXH3_128bits_update(st, t->name, strlen(t->name) + 1);
        XXH3_128bits_update(st, &t->dtype, sizeof(t->dtype));
        XXH3_128bits_update(st, t->shape, sizeof(int64_t) * (size_t)t->n_dims);
        XXH3_128bits_update(st, &t->n_bytes, sizeof(t->n_bytes));
    }
    /* Numerics that change the state: the compute precision and the RoPE frequency rounding. */
    int opts[3] = {(int)qvlm_backend_kind_of(m->be), (int)qvlm_backend_precision(m->be), m->opts.rope_freq_bf16};
    XXH3_128bits_update(st, opts, sizeof(opts));
    if (m->opts.quant != QVLM_QUANT_NONE) { /* load-time quantised weights are other weights */
        /* and the layout they take says which products run: Q8_0X8 is the I8 kernels' int8
         * activations (kernels/cpu/cpu.h), whose states builds with the widening kernels did
         * not compute */
        int q[2] = {(int)m->opts.quant, (int)qvlm_backend_q8_dtype(m->be)};
        XXH3_128bits_update(st, "quant", 5);
        XXH3_128bits_update(st, q, sizeof(q));
    }
    XXH128_hash_t h = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    free(cfg);
    fp[0] = h.low64, fp[1] = h.high64;
    return QVLM_OK;
}

/* ---- open / scan / gc ------------------------------------------------------------------------------- */

static qvlm_status add_ck(qvlm_disk_cache *d, const char *name, uint64_t *id) {
    if (d->n_cks == d->cap_cks) {
        int64_t cap = d->cap_cks ? 2 * d->cap_cks : 64;
        ckfile *n = realloc(d->cks, (size_t)cap * sizeof(*n));
        if (!n) return QVLM_E_NOMEM;
        d->cks = n;
        d->cap_cks = cap;
    }
    ckfile *c = &d->cks[d->n_cks++];
    c->id = ++d->next_id;
    snprintf(c->name, sizeof(c->name), "%s", name);
    if (id) *id = c->id;
    return QVLM_OK;
}

static bool has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static void scan(qvlm_disk_cache *d) {
    DIR *dir = opendir(d->dir);
    struct dirent *e;
    while (dir && (e = readdir(dir))) {
        if (e->d_name[0] == '.') continue;
        char *p = path_of(d, e->d_name);
        struct stat st;
        if (p && stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            if (strstr(e->d_name, ".tmp.")) {
                /* A crash between write and rename leaves these; an hour is plenty for a live one. */
                if (st.st_mtime + 3600 < time(NULL)) unlink(p);
            } else {
                d->bytes += (size_t)st.st_size;
                if (strncmp(e->d_name, "ck-", 3) == 0 && has_suffix(e->d_name, ".qvc") && strlen(e->d_name) < 48)
                    add_ck(d, e->d_name, NULL);
            }
        }
        free(p);
    }
    if (dir) closedir(dir);
}

typedef struct gcfile {
    char name[64];
    time_t mtime;
    size_t size;
} gcfile;

static int cmp_mtime(const void *a, const void *b) {
    const gcfile *x = a, *y = b;
    return (x->mtime > y->mtime) - (x->mtime < y->mtime);
}

/* Delete least recently used files until the directory fits its budget. */
static void gc(qvlm_disk_cache *d) {
    if (!d->dir || d->bytes <= d->budget) return;
    DIR *dir = opendir(d->dir);
    gcfile *f = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while (dir && (e = readdir(dir))) {
        if (e->d_name[0] == '.' || strstr(e->d_name, ".tmp.") || strlen(e->d_name) >= 64) continue;
        char *p = path_of(d, e->d_name);
        struct stat st;
        if (p && stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            if (n == cap) {
                cap = cap ? 2 * cap : 256;
                gcfile *g = realloc(f, cap * sizeof(*g));
                if (!g) {
                    free(p);
                    break;
                }
                f = g;
            }
            snprintf(f[n].name, sizeof(f[n].name), "%s", e->d_name);
            f[n].mtime = st.st_mtime;
            f[n++].size = (size_t)st.st_size;
        }
        free(p);
    }
    if (dir) closedir(dir);
    qsort(f, n, sizeof(*f), cmp_mtime);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += f[i].size;
    for (size_t i = 0; i < n && total > d->budget; i++) {
        char *p = path_of(d, f[i].name);
        if (p && unlink(p) == 0) total -= f[i].size;
        free(p);
        if (mem_find(d, f[i].name) < 0) forget_ck(d, f[i].name); /* still in host memory: kept */
    }
    d->bytes = total;
    free(f);
}

qvlm_status qvlm_disk_cache_open(const qvlm_model *m, const char *dir, size_t budget_bytes, size_t host_budget_bytes,
                                 qvlm_disk_cache **out, qvlm_error *err) {
    *out = NULL;
    const uint32_t one = 1;
    if (*(const uint8_t *)&one != 1) return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "the disk cache needs a little-endian host");
    qvlm_disk_cache *d = calloc(1, sizeof(*d));
    if (!d) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    pthread_mutex_init(&d->mu, NULL);
    d->budget = budget_bytes;
    d->mem_budget = host_budget_bytes;
    qvlm_status rc = fingerprint(m, d->fp, err);
    char sub[40];
    hex128(sub, d->fp[0], d->fp[1]);
    if (!rc && dir && mkdir(dir, 0755) != 0 && errno != EEXIST)
        rc = qvlm_errorf(err, QVLM_E_IO, "%s: cannot create: %s", dir, strerror(errno));
    if (!rc && dir) {
        d->dir = qvlm_path_join(dir, sub);
        if (!d->dir) rc = qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
        else if (mkdir(d->dir, 0755) != 0 && errno != EEXIST)
            rc = qvlm_errorf(err, QVLM_E_IO, "%s: cannot create: %s", d->dir, strerror(errno));
    }
    if (rc) {
        qvlm_disk_cache_close(d);
        return rc;
    }
    d->block_tokens = QVLM_KV_BLOCK_TOKENS;
    d->block_bytes = qvlm_text_kv_block_bytes(&m->cfg, QVLM_KV_BLOCK_TOKENS);
    if (d->block_bytes == 0) d->block_bytes = 64; /* no attention layers: blocks are placeholders */
    d->recurrent_bytes = qvlm_text_recurrent_bytes(&m->cfg);
    d->vocab = (uint64_t)m->cfg.text.vocab_size;
    d->hidden = (uint64_t)m->cfg.text.hidden_size;
    if (d->dir) scan(d);
    gc(d);
    *out = d;
    return QVLM_OK;
}

void qvlm_disk_cache_sync(qvlm_disk_cache *d) {
    if (!d->dir) return;
    for (int64_t i = 0;; i++) { /* one file at a time, copied out under the lock */
        pthread_mutex_lock(&d->mu);
        if (i >= d->n_mem) {
            pthread_mutex_unlock(&d->mu);
            break;
        }
        memfile f = d->mem[i];
        uint8_t *copy = malloc(f.n);
        if (copy) memcpy(copy, f.data, f.n);
        pthread_mutex_unlock(&d->mu);
        qvlm_error err;
        if (copy && disk_write(d, f.name, copy, f.n - HDR, &err) != QVLM_OK)
            fprintf(stderr, "qvlm: cache: writing %s to disk failed: %s\n", f.name, err.msg);
        free(copy);
    }
    pthread_mutex_lock(&d->mu);
    gc(d);
    pthread_mutex_unlock(&d->mu);
}

void qvlm_disk_cache_close(qvlm_disk_cache *d) {
    if (!d) return;
    qvlm_disk_cache_sync(d); /* what only the host tier held survives the process */
    for (int64_t i = 0; i < d->n_mem; i++) free(d->mem[i].data);
    free(d->mem);
    pthread_mutex_destroy(&d->mu);
    free(d->cks);
    free(d->dir);
    free(d);
}

size_t qvlm_disk_cache_bytes(qvlm_disk_cache *d) {
    pthread_mutex_lock(&d->mu);
    size_t b = d->bytes;
    pthread_mutex_unlock(&d->mu);
    return b;
}

uint64_t qvlm_disk_skipped(qvlm_disk_cache *d) { return d->skipped; }

void qvlm_disk_cache_host_stats(qvlm_disk_cache *d, size_t *bytes, uint64_t *ck_hits) {
    pthread_mutex_lock(&d->mu);
    *bytes = d->mem_bytes;
    *ck_hits = d->mem_hits;
    pthread_mutex_unlock(&d->mu);
}

/* ---- checkpoints ------------------------------------------------------------------------------------ */

/* Hash of (salt, keys[0..n)); the content address of a prefix. */
static XXH128_hash_t prefix_hash(uint64_t salt, const uint64_t *keys, int64_t n) {
    /* XXH3 of salt || keys, via the seed (the salt) to stay on the one-shot API. */
    return XXH3_128bits_withSeed(keys, (size_t)n * 16, salt);
}

qvlm_status qvlm_disk_put_checkpoint(qvlm_disk_cache *d, const qvlm_disk_ck *ck, uint64_t *id, qvlm_error *err) {
    const int64_t bt = ck->block_tokens, full = ck->pos / bt, partial = ck->pos % bt != 0;
    qvlm_status rc = QVLM_OK;
    uint8_t *kv = NULL; /* a block's file; the host tier may keep it, then the next is new */
    uint64_t *bh = malloc((size_t)(full ? full : 1) * 16);
    for (int64_t b = 0; !rc && bh && b < full; b++) {
        XXH128_hash_t h = prefix_hash(ck->salt, ck->keys, (b + 1) * bt);
        bh[2 * b] = h.low64, bh[2 * b + 1] = h.high64;
        char name[64];
        file_name(name, sizeof(name), "kv-", h.low64, h.high64, ".qvk");
        if (!kv && !(kv = malloc(HDR + ck->block_bytes))) rc = qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
        if (rc) break;
        memcpy(kv + HDR, ck->blocks[b], ck->block_bytes);
        rc = write_file(d, name, KIND_KV, &kv, ck->block_bytes, err);
    }
    free(kv);
    if (!bh) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    size_t lb = ck->vocab ? (size_t)ck->vocab * sizeof(float) : 0;
    size_t payload = CK_FIXED + (size_t)ck->pos * 16 + (size_t)full * 16 + (partial ? ck->block_bytes : 0) +
                     ck->recurrent_bytes + lb;
    uint8_t *buf = rc ? NULL : malloc(HDR + payload);
    if (!rc && !buf) rc = qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    if (!rc) {
        uint8_t *p = buf + HDR;
        put_u64(p, ck->salt), put_u64(p + 8, (uint64_t)ck->pos), put_u64(p + 16, (uint64_t)ck->next_pos);
        put_u64(p + 24, (uint64_t)bt), put_u64(p + 32, ck->block_bytes), put_u64(p + 40, ck->recurrent_bytes);
        put_u64(p + 48, (uint64_t)ck->vocab);
        p += CK_FIXED;
        memcpy(p, ck->keys, (size_t)ck->pos * 16), p += ck->pos * 16;
        memcpy(p, bh, (size_t)full * 16), p += full * 16;
        if (partial) memcpy(p, ck->blocks[full], ck->block_bytes), p += ck->block_bytes;
        memcpy(p, ck->recurrent, ck->recurrent_bytes), p += ck->recurrent_bytes;
        if (lb) memcpy(p, ck->logits, lb);
        XXH128_hash_t h = prefix_hash(ck->salt, ck->keys, ck->pos);
        char name[64];
        file_name(name, sizeof(name), "ck-", h.low64, h.high64, ".qvc");
        uint64_t had = 0;
        pthread_mutex_lock(&d->mu);
        for (int64_t i = 0; i < d->n_cks && !had; i++)
            if (strcmp(d->cks[i].name, name) == 0) had = d->cks[i].id;
        pthread_mutex_unlock(&d->mu);
        rc = write_file(d, name, KIND_CK, &buf, payload, err);
        pthread_mutex_lock(&d->mu);
        if (!rc && !had && add_ck(d, name, &had) != QVLM_OK) rc = qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
        if (!rc && id) *id = had;
        gc(d);
        pthread_mutex_unlock(&d->mu);
    }
    free(buf);
    free(bh);
    return rc;
}

static const ckfile *find_ck(qvlm_disk_cache *d, uint64_t id) {
    for (int64_t i = 0; i < d->n_cks; i++)
        if (d->cks[i].id == id) return &d->cks[i];
    return NULL;
}

void qvlm_disk_list_checkpoints(qvlm_disk_cache *d, qvlm_disk_ck_fn fn, void *user) {
    if (!d->dir) return;
    pthread_mutex_lock(&d->mu);
    int64_t n = d->n_cks;
    ckfile *copy = malloc((size_t)(n ? n : 1) * sizeof(*copy));
    if (copy && n) memcpy(copy, d->cks, (size_t)n * sizeof(*copy));
    pthread_mutex_unlock(&d->mu);
    for (int64_t i = 0; copy && i < n; i++) {
        /* Only the keys are needed here; the checksum is verified when the checkpoint is loaded. */
        char *buf = NULL, *p = path_of(d, copy[i].name);
        size_t len = 0;
        qvlm_error err;
        if (p && qvlm_file_read(p, MAX_FILE, &buf, &len, &err) == QVLM_OK) {
            bool sized = len >= HDR + CK_FIXED;
            const uint8_t *q = (const uint8_t *)buf + HDR;
            uint64_t salt = sized ? get_u64(q) : 0, pos = sized ? get_u64(q + 8) : 0;
            uint64_t next_pos = sized ? get_u64(q + 16) : 0, vocab = sized ? get_u64(q + 48) : 0;
            qvlm_status rc = sized && pos > 0 && pos < ((uint64_t)1 << 32) && HDR + CK_FIXED + pos * 16 <= len
                                 ? qvlm_disk_check_file((const uint8_t *)buf, len, KIND_CK, d->fp, copy[i].name, &err)
                                 : qvlm_errorf(&err, QVLM_E_CORRUPT, "impossible position count");
            if (rc == QVLM_OK)
                fn(user, salt, (const uint64_t *)(q + CK_FIXED), (int64_t)pos, (int64_t)next_pos, vocab != 0, copy[i].id);
            else
                warn_skip(d, copy[i].name, err.msg), qvlm_disk_drop_checkpoint(d, copy[i].id);
        }
        free(buf);
        free(p);
    }
    free(copy);
}

void qvlm_disk_drop_checkpoint(qvlm_disk_cache *d, uint64_t id) {
    pthread_mutex_lock(&d->mu);
    for (int64_t i = 0; i < d->n_cks; i++)
        if (d->cks[i].id == id) {
            int64_t m = mem_find(d, d->cks[i].name);
            if (m >= 0 && !d->mem[m].spilling) free(mem_take(d, m).data); /* else its mover frees it */
            char *p = d->dir ? path_of(d, d->cks[i].name) : NULL;
            if (p) unlink(p);
            free(p);
            d->cks[i] = d->cks[--d->n_cks];
            break;
        }
    pthread_mutex_unlock(&d->mu);
}

qvlm_status qvlm_disk_parse_checkpoint(const uint8_t *p, size_t n, const char *name, qvlm_disk_ck_view *v,
                                       qvlm_error *err) {
    memset(v, 0, sizeof(*v));
    if (n < CK_FIXED) return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: checkpoint payload too short", name);
    v->salt = get_u64(p), v->pos = get_u64(p + 8), v->next_pos = get_u64(p + 16), v->block_tokens = get_u64(p + 24);
    v->block_bytes = get_u64(p + 32), v->recurrent_bytes = get_u64(p + 40), v->vocab = get_u64(p + 48);
    /* Bounds first, so the size sum below cannot overflow. */
    if (v->block_tokens == 0 || v->block_tokens > (1u << 20) || v->pos == 0 || v->pos >= ((uint64_t)1 << 32) ||
        v->block_bytes >= ((uint64_t)1 << 32) || v->recurrent_bytes >= ((uint64_t)1 << 36) ||
        v->vocab >= ((uint64_t)1 << 26) || v->next_pos >= ((uint64_t)1 << 40))
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: impossible sizes in the checkpoint header", name);
    v->full_blocks = v->pos / v->block_tokens;
    bool partial = v->pos % v->block_tokens != 0;
    uint64_t need = CK_FIXED + v->pos * 16 + v->full_blocks * 16 + (partial ? v->block_bytes : 0) + v->recurrent_bytes +
                    v->vocab * 4;
    if (need != n) return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: payload is %zu bytes, its header adds up to %llu", name, n, (unsigned long long)need);
    const uint8_t *q = p + CK_FIXED;
    v->keys = q, q += v->pos * 16;
    v->block_hashes = q, q += v->full_blocks * 16;
    v->partial = partial ? q : NULL, q += partial ? v->block_bytes : 0;
    v->recurrent = q, q += v->recurrent_bytes;
    v->logits = v->vocab ? q : NULL;
    return QVLM_OK;
}

qvlm_status qvlm_disk_load_checkpoint(qvlm_disk_cache *d, uint64_t id, const qvlm_disk_loader *l, qvlm_error *err) {
    char name[48];
    pthread_mutex_lock(&d->mu);
    const ckfile *f = find_ck(d, id);
    if (f) snprintf(name, sizeof(name), "%s", f->name);
    pthread_mutex_unlock(&d->mu);
    if (!f) return qvlm_errorf(err, QVLM_E_NOT_FOUND, "cache: checkpoint %llu is gone", (unsigned long long)id);
    char *buf = NULL;
    size_t n = 0;
    qvlm_status rc = read_file(d, name, KIND_CK, &buf, &n, err);
    if (rc) return rc;
    qvlm_disk_ck_view v;
    rc = qvlm_disk_parse_checkpoint((const uint8_t *)buf + HDR, n - HDR, name, &v, err);
    if (rc) {
        warn_skip(d, name, err->msg);
        free(buf);
        qvlm_disk_drop_checkpoint(d, id);
        return rc;
    }
    const uint8_t *p = (const uint8_t *)buf + HDR;
    uint64_t salt = v.salt, pos = v.pos, next_pos = v.next_pos, bb = v.block_bytes, rb = v.recurrent_bytes;
    uint64_t vocab = v.vocab, full = v.full_blocks, partial = v.partial != NULL;
    if (v.block_tokens != d->block_tokens || bb != d->block_bytes || rb != d->recurrent_bytes ||
        (vocab != 0 && vocab != d->vocab)) {
        warn_skip(d, name, "geometry differs from this model's");
        free(buf);
        qvlm_disk_drop_checkpoint(d, id);
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: geometry differs from this model's", name);
    }
    XXH128_hash_t h = prefix_hash(salt, (const uint64_t *)(p + CK_FIXED), (int64_t)pos);
    char expect[64];
    file_name(expect, sizeof(expect), "ck-", h.low64, h.high64, ".qvc");
    rc = strcmp(expect, name) == 0 ? QVLM_OK : qvlm_errorf(err, QVLM_E_CORRUPT, "%s: contents do not match its name", name);
    if (!rc) rc = l->header(l->user, (int64_t)pos, (int64_t)next_pos, vocab != 0, err);
    const uint8_t *q = p + CK_FIXED + pos * 16;
    for (uint64_t b = 0; !rc && b < full; b++) {
        char kname[64], *kbuf = NULL;
        size_t kn = 0;
        file_name(kname, sizeof(kname), "kv-", get_u64(q + 16 * b), get_u64(q + 16 * b + 8), ".qvk");
        rc = read_file(d, kname, KIND_KV, &kbuf, &kn, err);
        if (!rc && kn != HDR + bb) rc = qvlm_errorf(err, QVLM_E_CORRUPT, "%s: wrong block size", kname);
        if (!rc) rc = l->block(l->user, (int64_t)b, kbuf + HDR, err);
        free(kbuf);
    }
    q += full * 16;
    if (!rc && partial) rc = l->block(l->user, (int64_t)full, q, err);
    q += partial ? bb : 0;
    if (!rc) rc = l->recurrent(l->user, q, err);
    q += rb;
    if (!rc && vocab) rc = l->logits(l->user, (const float *)q, err);
    free(buf);
    if (rc && rc != QVLM_E_NOMEM) qvlm_disk_drop_checkpoint(d, id);
    return rc;
}

/* ---- vision features ----------------------------------------------------------------------------------- */

qvlm_status qvlm_disk_put_vision(qvlm_disk_cache *d, qvlm_hash128 h, const float *rows, int64_t n_rows, int64_t hidden,
                                 qvlm_error *err) {
    char name[64];
    file_name(name, sizeof(name), "im-", h.lo, h.hi, ".qvv");
    size_t payload = 16 + (size_t)(n_rows * hidden) * sizeof(float);
    uint8_t *buf = malloc(HDR + payload);
    if (!buf) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    put_u64(buf + HDR, (uint64_t)n_rows);
    put_u64(buf + HDR + 8, (uint64_t)hidden);
    memcpy(buf + HDR + 16, rows, payload - 16);
    qvlm_status rc = write_file(d, name, KIND_IM, &buf, payload, err);
    free(buf);
    pthread_mutex_lock(&d->mu);
    gc(d);
    pthread_mutex_unlock(&d->mu);
    return rc;
}

bool qvlm_disk_has_vision(qvlm_disk_cache *d, qvlm_hash128 h) {
    char name[64];
    file_name(name, sizeof(name), "im-", h.lo, h.hi, ".qvv");
    pthread_mutex_lock(&d->mu);
    bool in_mem = mem_find(d, name) >= 0;
    pthread_mutex_unlock(&d->mu);
    if (in_mem) return true;
    char *p = d->dir ? path_of(d, name) : NULL;
    bool r = p && qvlm_path_exists(p);
    free(p);
    return r;
}

qvlm_status qvlm_disk_get_vision(qvlm_disk_cache *d, qvlm_hash128 h, int64_t hidden, float **rows, int64_t *n_rows,
                                 qvlm_error *err) {
    char name[64], *buf = NULL;
    size_t n = 0;
    file_name(name, sizeof(name), "im-", h.lo, h.hi, ".qvv");
    *rows = NULL;
    if (!qvlm_disk_has_vision(d, h)) return qvlm_errorf(err, QVLM_E_NOT_FOUND, "%s: not cached", name);
    qvlm_status rc = read_file(d, name, KIND_IM, &buf, &n, err);
    if (rc) return rc;
    uint64_t r = get_u64((const uint8_t *)buf + HDR), hd = get_u64((const uint8_t *)buf + HDR + 8);
    if ((int64_t)hd != hidden || r == 0 || r > ((uint64_t)1 << 28) || n != HDR + 16 + r * hd * sizeof(float)) {
        warn_skip(d, name, "wrong shape");
        free(buf);
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: wrong shape", name);
    }
    *rows = malloc(n - HDR - 16);
    if (!*rows) {
        free(buf);
        return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    }
    memcpy(*rows, buf + HDR + 16, n - HDR - 16);
    *n_rows = (int64_t)r;
    free(buf);
    return QVLM_OK;
}
