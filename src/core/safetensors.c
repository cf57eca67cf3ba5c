/* safetensors.c - validated reading of safetensors files and sharded sets (see safetensors.h). */
#include "core/safetensors.h"

#include <stdlib.h>
#include <string.h>

#include "core/json.h"

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const qvlm_st_tensor *)a)->name, ((const qvlm_st_tensor *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const qvlm_st_tensor *x = *(const qvlm_st_tensor *const *)a, *y = *(const qvlm_st_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->n_bytes != y->n_bytes) return x->n_bytes < y->n_bytes ? -1 : 1;
    return 0;
}

static void free_tensors(qvlm_st_tensor *t, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(t[i].name);
        free(t[i].owned);
    }
    free(t);
}

/* Validate one header entry and fill *t. `data_bytes` is the size of the data region. */
static qvlm_status parse_entry(const char *path, const char *name, json_t *v, const uint8_t *data,
                               size_t data_bytes, size_t data_start, qvlm_st_tensor *t,
                               qvlm_error *err) {
    if (!json_is_object(v))
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: tensor '%s': header entry is %s, not an object",
                           path, name, qvlm_json_type_name(v));
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: tensor '%s': dtype is %s, not a string", path, name,
                           qvlm_json_type_name(jd));
    int dt = qvlm_dtype_from_name(json_string_value(jd));
    if (dt < 0)
        return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s: tensor '%s': unknown dtype '%s'", path, name,
                           json_string_value(jd));
    if (!json_is_array(js))
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: tensor '%s': shape is %s, not an array", path, name,
                           qvlm_json_type_name(js));
    size_t rank = json_array_size(js);
    if (rank > QVLM_ST_MAX_DIMS)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: tensor '%s': rank %zu (at most %d)", path, name, rank,
                           QVLM_ST_MAX_DIMS);
    size_t n_el = 1;
    t->n_dims = (int)rank;
    for (size_t d = 0; d < rank; d++) {
        json_t *e = json_array_get(js, d);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: tensor '%s': shape[%zu] is not a non-negative integer",
                               path, name, d);
        t->shape[d] = json_integer_value(e);
        if (qvlm_mul_overflow(n_el, (size_t)t->shape[d], &n_el))
            return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: tensor '%s': element count overflows", path, name);
    }
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: tensor '%s': data_offsets must be [begin, end] integers",
                           path, name);
    json_int_t b = json_integer_value(json_array_get(jo, 0)), e = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || e < b)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: tensor '%s': data_offsets [%lld, %lld] are not ordered",
                           path, name, (long long)b, (long long)e);
    if ((unsigned long long)e > data_bytes)
        return qvlm_errorf(err, QVLM_E_CORRUPT,
                           "%s: tensor '%s': data ends at byte %lld of the data region, past its end (%zu bytes; "
                           "file truncated?)",
                           path, name, (long long)e, data_bytes);
    size_t want;
    if (qvlm_mul_overflow(n_el, qvlm_dtype_size((qvlm_dtype)dt), &want) || want != (size_t)(e - b))
        return qvlm_errorf(err, QVLM_E_CORRUPT,
                           "%s: tensor '%s': shape and dtype %s need %zu bytes but data_offsets give %lld", path,
                           name, qvlm_dtype_name((qvlm_dtype)dt), n_el * qvlm_dtype_size((qvlm_dtype)dt),
                           (long long)(e - b));
    t->dtype = (qvlm_dtype)dt;
    t->n_elements = (int64_t)n_el;
    t->n_bytes = (size_t)(e - b);
    t->offset = data_start + (size_t)b;
    t->data = data + b;
    return QVLM_OK;
}

/* Misaligned data would be undefined behaviour to read as float/uint16: copy it once. */
static qvlm_status align_data(const char *path, qvlm_st_tensor *t, qvlm_error *err) {
    size_t a = qvlm_dtype_size(t->dtype);
    if (a <= 1 || ((uintptr_t)t->data % a) == 0 || t->n_bytes == 0) return QVLM_OK;
    void *p = NULL;
    if (posix_memalign(&p, 64, t->n_bytes) != 0)
        return qvlm_errorf(err, QVLM_E_NOMEM, "%s: tensor '%s': out of memory (%zu bytes)", path, t->name,
                           t->n_bytes);
    memcpy(p, t->data, t->n_bytes);
    t->owned = p;
    t->data = p;
    return QVLM_OK;
}

qvlm_status qvlm_st_parse(const uint8_t *buf, size_t n_bytes, const char *path, qvlm_st_file *out,
                          qvlm_error *err) {
    memset(out, 0, sizeof(*out));
    if (n_bytes < 8)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: file is %zu bytes, too short for a safetensors header", path,
                           n_bytes);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > QVLM_ST_MAX_HEADER_BYTES)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: header length %llu is over the %zu-byte limit", path,
                           (unsigned long long)hlen, QVLM_ST_MAX_HEADER_BYTES);
    if (hlen > n_bytes - 8)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: header length %llu runs past the end of the file (%zu bytes)",
                           path, (unsigned long long)hlen, n_bytes);
    json_t *root;
    qvlm_status rc = qvlm_json_parse((const char *)buf + 8, (size_t)hlen, path, &root, err);
    if (rc) return qvlm_error_prefix(err, rc, "safetensors header");
    if (!json_is_object(root)) {
        json_decref(root);
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: header is not a JSON object", path);
    }
    size_t n = json_object_size(root), k = 0;
    qvlm_st_tensor *ts = calloc(n ? n : 1, sizeof(*ts));
    const qvlm_st_tensor **by_off = calloc(n ? n : 1, sizeof(*by_off));
    if (!ts || !by_off) {
        rc = qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", path);
        goto out_free;
    }
    size_t data_start = 8 + (size_t)hlen, data_bytes = n_bytes - data_start;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v)) {
                rc = qvlm_errorf(err, QVLM_E_CORRUPT, "%s: __metadata__ is not an object", path);
                goto out_free;
            }
            continue;
        }
        qvlm_st_tensor *t = &ts[k];
        t->name = strdup(key);
        if (!t->name) {
            rc = qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", path);
            goto out_free;
        }
        k++;
        rc = parse_entry(path, key, v, buf + data_start, data_bytes, data_start, t, err);
        if (rc) goto out_free;
    }
    /* Overlap check: sorted by offset, each tensor must start at or after the previous end. */
    for (size_t i = 0; i < k; i++) by_off[i] = &ts[i];
    qsort(by_off, k, sizeof(*by_off), cmp_tensor_offset);
    for (size_t i = 1; i < k; i++) {
        const qvlm_st_tensor *a = by_off[i - 1], *b = by_off[i];
        if (b->n_bytes > 0 && a->n_bytes > 0 && b->offset < a->offset + a->n_bytes) {
            rc = qvlm_errorf(err, QVLM_E_CORRUPT, "%s: tensors '%s' and '%s' overlap in the file", path, a->name,
                             b->name);
            goto out_free;
        }
    }
    for (size_t i = 0; i < k; i++) {
        rc = align_data(path, &ts[i], err);
        if (rc) goto out_free;
    }
    qsort(ts, k, sizeof(*ts), cmp_tensor_name);
    out->path = strdup(path);
    if (!out->path) {
        rc = qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", path);
        goto out_free;
    }
    out->tensors = ts;
    out->n_tensors = k;
    free(by_off);
    json_decref(root);
    return QVLM_OK;
out_free:
    free_tensors(ts, k);
    free(by_off);
    json_decref(root);
    memset(out, 0, sizeof(*out));
    return rc;
}

qvlm_status qvlm_st_open(const char *path, qvlm_st_file *out, qvlm_error *err) {
    qvlm_mmap m;
    memset(out, 0, sizeof(*out));
    qvlm_status rc = qvlm_mmap_open(&m, path, err);
    if (rc) return rc;
    rc = qvlm_st_parse(m.data, m.n_bytes, path, out, err);
    if (rc) {
        qvlm_mmap_close(&m);
        return rc;
    }
    out->map = m;
    return QVLM_OK;
}

void qvlm_st_close(qvlm_st_file *f) {
    if (!f) return;
    free_tensors(f->tensors, f->n_tensors);
    qvlm_mmap_close(&f->map);
    free(f->path);
    memset(f, 0, sizeof(*f));
}

const qvlm_st_tensor *qvlm_st_file_find(const qvlm_st_file *f, const char *name) {
    qvlm_st_tensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors, f->n_tensors, sizeof(key), cmp_tensor_name);
}

/* ---- sharded sets ---------------------------------------------------------------------- */

static int cmp_tensor_ptr_name(const void *a, const void *b) {
    return strcmp((*(const qvlm_st_tensor *const *)a)->name, (*(const qvlm_st_tensor *const *)b)->name);
}

static int safe_shard_name(const char *s) {
    return s[0] != '\0' && s[0] != '.' && strchr(s, '/') == NULL && strchr(s, '\\') == NULL;
}

/* Open the shards named by an index's weight_map, once each, in first-seen order. */
static qvlm_status open_shards(qvlm_st_set *s, const char *ipath, json_t *wmap, qvlm_error *err) {
    size_t cap = 0;
    const char *key;
    json_t *v;
    json_object_foreach(wmap, key, v) {
        if (!json_is_string(v))
            return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: weight_map.%s is %s, not a file name", ipath, key,
                               qvlm_json_type_name(v));
        const char *fname = json_string_value(v);
        if (!safe_shard_name(fname))
            return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: weight_map.%s names '%s', which is not a plain file name",
                               ipath, key, fname);
        int seen = 0;
        for (size_t i = 0; i < s->n_files && !seen; i++) {
            const char *base = strrchr(s->files[i].path, '/');
            seen = strcmp(base ? base + 1 : s->files[i].path, fname) == 0;
        }
        if (seen) continue;
        if (s->n_files == cap) {
            cap = cap ? cap * 2 : 8;
            qvlm_st_file *nf = realloc(s->files, cap * sizeof(*nf));
            if (!nf) return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", ipath);
            s->files = nf;
        }
        char *p = qvlm_path_join(s->dir, fname);
        if (!p) return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", ipath);
        qvlm_status rc = qvlm_st_open(p, &s->files[s->n_files], err);
        free(p);
        if (rc) return rc;
        s->n_files++;
    }
    return QVLM_OK;
}

/* Every index entry must be found in the shard it names. */
static qvlm_status check_index(qvlm_st_set *s, const char *ipath, json_t *wmap, qvlm_error *err) {
    const char *key;
    json_t *v;
    json_object_foreach(wmap, key, v) {
        const char *fname = json_string_value(v);
        const qvlm_st_file *f = NULL;
        for (size_t i = 0; i < s->n_files; i++) {
            const char *base = strrchr(s->files[i].path, '/');
            if (strcmp(base ? base + 1 : s->files[i].path, fname) == 0) f = &s->files[i];
        }
        if (!f || !qvlm_st_file_find(f, key))
            return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: tensor '%s' is mapped to %s, which does not contain it",
                               ipath, key, fname);
    }
    return QVLM_OK;
}

static qvlm_status build_index(qvlm_st_set *s, qvlm_error *err) {
    size_t n = 0;
    for (size_t i = 0; i < s->n_files; i++) n += s->files[i].n_tensors;
    s->index = calloc(n ? n : 1, sizeof(*s->index));
    if (!s->index) return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", s->dir);
    size_t k = 0;
    for (size_t i = 0; i < s->n_files; i++)
        for (size_t j = 0; j < s->files[i].n_tensors; j++) {
            s->files[i].tensors[j].file_idx = (int)i;
            s->index[k++] = &s->files[i].tensors[j];
        }
    qsort(s->index, k, sizeof(*s->index), cmp_tensor_ptr_name);
    for (size_t i = 1; i < k; i++)
        if (strcmp(s->index[i - 1]->name, s->index[i]->name) == 0)
            return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: tensor '%s' appears in both %s and %s", s->dir,
                               s->index[i]->name, s->files[s->index[i - 1]->file_idx].path,
                               s->files[s->index[i]->file_idx].path);
    s->n_index = k;
    return QVLM_OK;
}

qvlm_status qvlm_st_set_open(const char *dir, qvlm_st_set *out, qvlm_error *err) {
    memset(out, 0, sizeof(*out));
    out->dir = strdup(dir);
    char *ipath = qvlm_path_join(dir, "model.safetensors.index.json");
    char *single = qvlm_path_join(dir, "model.safetensors");
    qvlm_status rc = QVLM_OK;
    json_t *root = NULL;
    if (!out->dir || !ipath || !single) {
        rc = qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", dir);
        goto out;
    }
    if (qvlm_path_exists(ipath)) {
        rc = qvlm_json_load_file(ipath, (size_t)64 << 20, &root, err);
        if (rc) goto out;
        json_t *wmap = json_object_get(root, "weight_map");
        if (!json_is_object(wmap)) {
            rc = qvlm_errorf(err, QVLM_E_CORRUPT, "%s: weight_map is %s, not an object", ipath,
                             qvlm_json_type_name(wmap));
            goto out;
        }
        rc = open_shards(out, ipath, wmap, err);
        if (rc == QVLM_OK) rc = check_index(out, ipath, wmap, err);
    } else if (qvlm_path_exists(single)) {
        out->files = calloc(1, sizeof(*out->files));
        if (!out->files) {
            rc = qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", dir);
            goto out;
        }
        rc = qvlm_st_open(single, &out->files[0], err);
        if (rc == QVLM_OK) out->n_files = 1;
    } else {
        rc = qvlm_errorf(err, QVLM_E_NOT_FOUND, "%s: no model.safetensors or model.safetensors.index.json", dir);
    }
    if (rc == QVLM_OK) rc = build_index(out, err);
out:
    json_decref(root);
    free(ipath);
    free(single);
    if (rc) qvlm_st_set_close(out);
    return rc;
}

void qvlm_st_set_close(qvlm_st_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_files; i++) qvlm_st_close(&s->files[i]);
    free(s->files);
    free(s->index);
    free(s->dir);
    memset(s, 0, sizeof(*s));
}

const qvlm_st_tensor *qvlm_st_set_find(const qvlm_st_set *s, const char *name) {
    qvlm_st_tensor key = {.name = (char *)name};
    const qvlm_st_tensor *kp = &key;
    const qvlm_st_tensor **r = bsearch(&kp, s->index, s->n_index, sizeof(*s->index), cmp_tensor_ptr_name);
    return r ? *r : NULL;
}

const char *qvlm_st_set_path(const qvlm_st_set *s, const qvlm_st_tensor *t) {
    return (t && (size_t)t->file_idx < s->n_files) ? s->files[t->file_idx].path : s->dir;
}

/* ---- writing ------------------------------------------------------------------------------- */

qvlm_status qvlm_st_write(const char *path, const qvlm_st_out *ts, size_t n, qvlm_error *err) {
    json_t *hdr = json_object();
    size_t off = 0;
    qvlm_status rc = hdr ? QVLM_OK : qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n && !rc; i++) {
        size_t bytes = qvlm_dtype_size(ts[i].dtype);
        json_t *shape = json_array();
        for (int d = 0; d < ts[i].n_dims; d++) {
            bytes *= (size_t)ts[i].shape[d];
            json_array_append_new(shape, json_integer(ts[i].shape[d]));
        }
        json_t *e = json_pack("{s:s, s:o, s:[I, I]}", "dtype", qvlm_dtype_name(ts[i].dtype), "shape", shape,
                              "data_offsets", (json_int_t)off, (json_int_t)(off + bytes));
        if (!e || json_object_set_new(hdr, ts[i].name, e) != 0) rc = qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", path);
        off += bytes;
    }
    char *text = rc ? NULL : json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(hdr);
    if (!rc && !text) rc = qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", path);
    if (rc) return rc;
    /* Pad the header with spaces so the data region starts 8-byte aligned. */
    size_t hl = strlen(text), padded = (hl + 7) & ~(size_t)7, total = 8 + padded + off;
    uint8_t *buf = malloc(total);
    if (!buf) {
        free(text);
        return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", path);
    }
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, text, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    free(text);
    size_t p = 8 + padded;
    for (size_t i = 0; i < n; i++) {
        size_t bytes = qvlm_dtype_size(ts[i].dtype);
        for (int d = 0; d < ts[i].n_dims; d++) bytes *= (size_t)ts[i].shape[d];
        if (bytes) memcpy(buf + p, ts[i].data, bytes);
        p += bytes;
    }
    rc = qvlm_file_write_atomic(path, buf, total, err);
    free(buf);
    return rc;
}
