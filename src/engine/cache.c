/* cache.c - the cross-turn cache: a radix tree of checkpoints, vision features, one budget
 * (see cache.h). One mutex guards the index; reference counts keep entries alive while a
 * request uses them, so the long copies (snapshots, restores) run outside the lock. */
#include "engine/cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/disk_cache.h"

/* ---- structures ---------------------------------------------------------------------------- */

struct qvlm_checkpoint {
    _Atomic int refs;         /* the tree's reference + one per request holding it */
    int64_t pos;              /* P */
    int64_t next_pos;         /* M-RoPE position of the token at P */
    void *recurrent;          /* backend copy of the Gated DeltaNet state at P */
    qvlm_kv_block **blocks;   /* [n_blocks] references covering positions [0, P) */
    int64_t n_blocks;
    float *logits;            /* host [vocab] after position P-1, or NULL */
    size_t bytes;             /* snapshot + logits bytes (blocks are counted per block) */
    struct node *node;        /* where it hangs; NULL once evicted */
    uint64_t last_use;
    /* Disk tier. A checkpoint is resident (recurrent != NULL) or only on disk (disk_id != 0,
     * loaded on demand); evicting a resident one that is also on disk only drops the memory. */
    uint64_t disk_id;
    bool has_logits;          /* known for disk-only ones too */
    bool writing;             /* queued for the disk writer */
};

typedef struct node {
    struct node *parent;
    qvlm_key *edge;           /* keys from the parent's depth to this depth */
    int64_t edge_len, depth;
    struct node **kids;
    int n_kids, cap_kids;
    qvlm_checkpoint *ck;
} node;

typedef struct root {
    uint64_t salt;
    node n;
} root;

struct qvlm_vision_entry {
    _Atomic int refs;
    qvlm_hash128 hash;
    float *rows;              /* backend [n_rows][hidden] */
    int64_t n_rows;
    size_t bytes;
    uint64_t last_use;
    bool live;                /* in the index (false once evicted) */
};

typedef struct job {
    struct job *next;
    qvlm_checkpoint *ck;      /* held */
    qvlm_key *keys;           /* [ck->pos] */
    uint64_t salt;
    qvlm_vision_entry *vis;   /* held */
} job;

struct qvlm_cache {
    const qvlm_model *m;
    qvlm_kv_pool *pool;
    qvlm_kv_pool own_pool; /* blocks it frees go back to the backend like any session's */
    qvlm_backend *be;
    pthread_mutex_t mu;
    root *roots;
    int n_roots, cap_roots;
    qvlm_checkpoint **cks;    /* every checkpoint in the tree, for eviction scans */
    int64_t n_cks, cap_cks;
    qvlm_vision_entry **vis;
    int64_t n_vis, cap_vis;
    uint64_t clock;           /* LRU time */
    size_t budget, snap_bytes, kv_bytes, vis_bytes;
    qvlm_cache_stats st;
    qvlm_disk_cache *disk;    /* NULL without a directory */
    /* The disk writer: a thread draining a queue, so requests never wait on the disk. */
    pthread_t writer;
    bool writer_started, stop;
    pthread_mutex_t qmu;
    pthread_cond_t qcv, qdone;
    job *head, *tail;
    int in_flight;
    qvlm_stream *wstream;
};

static size_t total_bytes(const qvlm_cache *c) { return c->snap_bytes + c->kv_bytes + c->vis_bytes; }

/* ---- checkpoints: life and death ---------------------------------------------------------------- */

/* Drop a checkpoint's memory (blocks, state, logits); it stays usable if it is in a lower tier
 * ("disk" below means disk_cache.h's store: host RAM and/or the directory). */
static void ck_drop_memory(qvlm_cache *c, qvlm_checkpoint *ck) {
    for (int64_t i = 0; i < ck->n_blocks; i++) qvlm_kv_block_unref(c->pool, ck->blocks[i]);
    free(ck->blocks);
    qvlm_backend_free(c->be, ck->recurrent);
    free(ck->logits);
    ck->blocks = NULL, ck->n_blocks = 0, ck->recurrent = NULL, ck->logits = NULL, ck->bytes = 0;
}

static void ck_free(qvlm_cache *c, qvlm_checkpoint *ck) {
    ck_drop_memory(c, ck);
    free(ck);
}

static void ck_unref(qvlm_cache *c, qvlm_checkpoint *ck) {
    if (atomic_fetch_sub_explicit(&ck->refs, 1, memory_order_acq_rel) == 1) ck_free(c, ck);
}

/* Account for (sign = +1) or release (sign = -1) a checkpoint's bytes; under the lock. */
static void ck_account(qvlm_cache *c, qvlm_checkpoint *ck, int sign) {
    c->snap_bytes = sign > 0 ? c->snap_bytes + ck->bytes : c->snap_bytes - ck->bytes;
    for (int64_t i = 0; i < ck->n_blocks; i++) {
        qvlm_kv_block *b = ck->blocks[i];
        if (sign > 0 && b->cache_refs++ == 0) c->kv_bytes += c->pool->block_bytes;
        if (sign < 0 && --b->cache_refs == 0) c->kv_bytes -= c->pool->block_bytes;
    }
}

/* ---- the tree ------------------------------------------------------------------------------- */

static root *find_root(qvlm_cache *c, uint64_t salt, bool create) {
    for (int i = 0; i < c->n_roots; i++)
        if (c->roots[i].salt == salt) return &c->roots[i];
    if (!create) return NULL;
    if (c->n_roots == c->cap_roots) {
        /* Roots hold nodes that children point back to: grow by moving, then re-parent. */
        int cap = c->cap_roots ? 2 * c->cap_roots : 4;
        root *n = calloc((size_t)cap, sizeof(*n));
        if (!n) return NULL;
        if (c->n_roots) memcpy(n, c->roots, (size_t)c->n_roots * sizeof(*n));
        for (int i = 0; i < c->n_roots; i++)
            for (int k = 0; k < n[i].n.n_kids; k++) n[i].n.kids[k]->parent = &n[i].n;
        free(c->roots);
        c->roots = n;
        c->cap_roots = cap;
    }
    root *r = &c->roots[c->n_roots++];
    memset(r, 0, sizeof(*r));
    r->salt = salt;
    return r;
}

static int64_t common(const qvlm_key *a, const qvlm_key *b, int64_t n) {
    int64_t i = 0;
    while (i < n && qvlm_key_eq(a[i], b[i])) i++;
    return i;
}

static node *child_starting(node *x, qvlm_key k) {
    for (int i = 0; i < x->n_kids; i++)
        if (qvlm_key_eq(x->kids[i]->edge[0], k)) return x->kids[i];
    return NULL;
}

static bool add_child(node *x, node *kid) {
    if (x->n_kids == x->cap_kids) {
        int cap = x->cap_kids ? 2 * x->cap_kids : 2;
        node **k = realloc(x->kids, (size_t)cap * sizeof(*k));
        if (!k) return false;
        x->kids = k;
        x->cap_kids = cap;
    }
    x->kids[x->n_kids++] = kid;
    kid->parent = x;
    return true;
}

static void remove_child(node *x, node *kid) {
    for (int i = 0; i < x->n_kids; i++)
        if (x->kids[i] == kid) {
            x->kids[i] = x->kids[--x->n_kids];
            return;
        }
}

/* Split x's edge after `at` keys: a new node takes the first part and becomes x's parent. */
static node *split(node *x, int64_t at) {
    node *mid = calloc(1, sizeof(*mid));
    qvlm_key *head = mid ? malloc((size_t)at * sizeof(qvlm_key)) : NULL;
    qvlm_key *tail = head ? malloc((size_t)(x->edge_len - at) * sizeof(qvlm_key)) : NULL;
    if (!tail) {
        free(mid);
        free(head);
        return NULL;
    }
    memcpy(head, x->edge, (size_t)at * sizeof(qvlm_key));
    memcpy(tail, x->edge + at, (size_t)(x->edge_len - at) * sizeof(qvlm_key));
    node *p = x->parent;
    mid->edge = head;
    mid->edge_len = at;
    mid->depth = x->depth - x->edge_len + at;
    remove_child(p, x);
    if (!add_child(p, mid) || !add_child(mid, x)) { /* NEVER in practice: tiny reallocs */
        free(head);
        free(tail);
        free(mid);
        return NULL;
    }
    free(x->edge);
    x->edge = tail;
    x->edge_len -= at;
    return mid;
}

/* The node at exactly depth n along keys, creating (and splitting) as needed; NULL on OOM. */
static node *node_at(node *r, const qvlm_key *keys, int64_t n) {
    node *x = r;
    while (x->depth < n) {
        node *k = child_starting(x, keys[x->depth]);
        if (!k) {
            node *leaf = calloc(1, sizeof(*leaf));
            qvlm_key *e = leaf ? malloc((size_t)(n - x->depth) * sizeof(qvlm_key)) : NULL;
            if (!e || !add_child(x, leaf)) {
                free(e);
                free(leaf);
                return NULL;
            }
            memcpy(e, keys + x->depth, (size_t)(n - x->depth) * sizeof(qvlm_key));
            leaf->edge = e;
            leaf->edge_len = n - x->depth;
            leaf->depth = n;
            return leaf;
        }
        /* m >= 1: the first key matched. Diverging (or ending) inside k's edge splits it. */
        int64_t m = common(k->edge, keys + x->depth, QVLM_MIN(k->edge_len, n - x->depth));
        x = m < k->edge_len ? split(k, m) : k;
        if (!x) return NULL;
    }
    return x;
}

/* Drop empty leaves upward from x (no checkpoint, no children). */
static void prune(node *x) {
    while (x->parent && !x->ck && x->n_kids == 0) {
        node *p = x->parent;
        remove_child(p, x);
        free(x->edge);
        free(x->kids);
        free(x);
        x = p;
    }
}

static void free_subtree(qvlm_cache *c, node *x) {
    for (int i = 0; i < x->n_kids; i++) {
        free_subtree(c, x->kids[i]);
        free(x->kids[i]);
    }
    free(x->kids);
    free(x->edge);
    x->kids = NULL;
    x->edge = NULL;
    x->n_kids = 0;
    if (x->ck) {
        x->ck->node = NULL;
        ck_unref(c, x->ck);
        x->ck = NULL;
    }
}

/* ---- eviction -------------------------------------------------------------------------------- */

/* Out of memory but on disk: keep it in the tree as disk-only. Under the lock. */
static void demote_ck(qvlm_cache *c, qvlm_checkpoint *ck) {
    ck_account(c, ck, -1);
    ck_drop_memory(c, ck);
}

static void detach_ck(qvlm_cache *c, qvlm_checkpoint *ck) {
    for (int64_t i = 0; i < c->n_cks; i++)
        if (c->cks[i] == ck) {
            c->cks[i] = c->cks[--c->n_cks];
            break;
        }
    ck_account(c, ck, -1);
    node *x = ck->node;
    ck->node = NULL;
    x->ck = NULL;
    prune(x);
    ck_unref(c, ck);
}

static void detach_vis(qvlm_cache *c, int64_t i) {
    qvlm_vision_entry *e = c->vis[i];
    c->vis[i] = c->vis[--c->n_vis];
    c->vis_bytes -= e->bytes;
    e->live = false;
    qvlm_vision_entry_release(c, e);
}

/* Evict least-recently-used entries until within budget, at most max_steps of them (bounded
 * work per call, so a request never stalls on a large cleanup). Held entries are skipped. */
static void evict(qvlm_cache *c, int max_steps) {
    for (int step = 0; step < max_steps && total_bytes(c) > c->budget; step++) {
        int64_t best_ck = -1, best_vis = -1;
        uint64_t best_t = UINT64_MAX;
        for (int64_t i = 0; i < c->n_cks; i++) {
            qvlm_checkpoint *ck = c->cks[i];
            /* Leaves first: an inner checkpoint's descendants resume later than it. Disk-only
             * ones hold no memory; ones being written stay until the writer is done. */
            if (ck->recurrent && !ck->writing && ck->node->n_kids == 0 && atomic_load(&ck->refs) == 1 &&
                ck->last_use < best_t)
                best_t = ck->last_use, best_ck = i;
        }
        for (int64_t i = 0; i < c->n_vis; i++)
            if (atomic_load(&c->vis[i]->refs) == 1 && c->vis[i]->last_use < best_t)
                best_t = c->vis[i]->last_use, best_vis = i, best_ck = -1;
        if (best_vis >= 0) {
            detach_vis(c, best_vis);
        } else {
            if (best_ck < 0) {
                /* Only inner checkpoints are left unheld: take the oldest of those. */
                for (int64_t i = 0; i < c->n_cks; i++) {
                    qvlm_checkpoint *ck = c->cks[i];
                    if (ck->recurrent && !ck->writing && atomic_load(&ck->refs) == 1 && ck->last_use < best_t)
                        best_t = ck->last_use, best_ck = i;
                }
            }
            if (best_ck < 0) return;
            qvlm_checkpoint *ck = c->cks[best_ck];
            if (ck->disk_id) demote_ck(c, ck);
            else detach_ck(c, ck);
        }
        c->st.evictions++;
    }
}

/* ---- the disk writer ------------------------------------------------------------------------------- */

static void enqueue(qvlm_cache *c, job *j) {
    pthread_mutex_lock(&c->qmu);
    if (c->tail) c->tail->next = j;
    else c->head = j;
    c->tail = j;
    pthread_cond_signal(&c->qcv);
    pthread_mutex_unlock(&c->qmu);
}

static void write_ck_job(qvlm_cache *c, job *j) {
    qvlm_checkpoint *ck = j->ck;
    const size_t bb = c->pool->block_bytes ? c->pool->block_bytes : 64, rb = qvlm_text_recurrent_bytes(&c->m->cfg);
    void **blocks = calloc((size_t)(ck->n_blocks ? ck->n_blocks : 1), sizeof(void *));
    void *rec = malloc(rb ? rb : 64);
    bool ok = blocks && rec;
    for (int64_t i = 0; ok && i < ck->n_blocks; i++) {
        ok = (blocks[i] = malloc(bb)) != NULL;
        if (ok) qvlm_op_download(c->wstream, blocks[i], ck->blocks[i]->data, bb);
    }
    uint64_t id = 0;
    qvlm_error err;
    if (ok) {
        qvlm_op_download(c->wstream, rec, ck->recurrent, rb);
        qvlm_disk_ck d = {j->salt, ck->pos, ck->next_pos, c->pool->block_tokens, bb, rb,
                          ck->logits ? c->m->cfg.text.vocab_size : 0, (const uint64_t *)j->keys,
                          (const void *const *)blocks, rec, ck->logits};
        if (qvlm_disk_put_checkpoint(c->disk, &d, &id, &err) != QVLM_OK)
            fprintf(stderr, "qvlm: cache: writing a checkpoint failed: %s\n", err.msg), id = 0;
    }
    for (int64_t i = 0; blocks && i < ck->n_blocks; i++) free(blocks[i]);
    free(blocks);
    free(rec);
    pthread_mutex_lock(&c->mu);
    ck->writing = false;
    if (id) {
        ck->disk_id = id;
        c->st.disk_writes++;
    }
    evict(c, 64); /* it may leave memory now: the budget holds between requests too */
    pthread_mutex_unlock(&c->mu);
}

static void write_vis_job(qvlm_cache *c, job *j) {
    const int64_t H = c->m->cfg.text.hidden_size;
    size_t n = (size_t)(j->vis->n_rows * H) * sizeof(float);
    float *host = malloc(n ? n : 4);
    qvlm_error err;
    if (host) {
        qvlm_op_download(c->wstream, host, j->vis->rows, n);
        if (qvlm_disk_put_vision(c->disk, j->vis->hash, host, j->vis->n_rows, H, &err) == QVLM_OK) {
            pthread_mutex_lock(&c->mu);
            c->st.disk_writes++;
            pthread_mutex_unlock(&c->mu);
        } else {
            fprintf(stderr, "qvlm: cache: writing image features failed: %s\n", err.msg);
        }
    }
    free(host);
}

static void *writer_main(void *arg) {
    qvlm_cache *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->qmu);
        while (!c->head && !c->stop) pthread_cond_wait(&c->qcv, &c->qmu);
        job *j = c->head;
        if (j) {
            c->head = j->next;
            if (!c->head) c->tail = NULL;
            c->in_flight++;
        }
        pthread_mutex_unlock(&c->qmu);
        if (!j) break; /* stop requested and nothing left */
        if (j->ck) write_ck_job(c, j), ck_unref(c, j->ck);
        if (j->vis) write_vis_job(c, j), qvlm_vision_entry_release(c, j->vis);
        free(j->keys);
        free(j);
        pthread_mutex_lock(&c->qmu);
        c->in_flight--;
        pthread_cond_broadcast(&c->qdone);
        pthread_mutex_unlock(&c->qmu);
    }
    return NULL;
}

/* ---- disk-only checkpoints: the index at start-up and loading on demand ---------------------------- */

static void on_disk_ck(void *user, uint64_t salt, const uint64_t *keys, int64_t pos, int64_t next_pos,
                       bool has_logits, uint64_t id) {
    qvlm_cache *c = user;
    qvlm_checkpoint *ck = calloc(1, sizeof(*ck));
    if (!ck) return;
    atomic_store(&ck->refs, 1);
    ck->pos = pos, ck->next_pos = next_pos, ck->has_logits = has_logits, ck->disk_id = id;
    pthread_mutex_lock(&c->mu);
    root *r = find_root(c, salt, true);
    node *x = r ? node_at(&r->n, (const qvlm_key *)keys, pos) : NULL;
    if (x && !x->ck && c->n_cks == c->cap_cks) {
        int64_t cap = c->cap_cks ? 2 * c->cap_cks : 64;
        qvlm_checkpoint **n = realloc(c->cks, (size_t)cap * sizeof(*n));
        if (n) c->cks = n, c->cap_cks = cap;
    }
    if (x && !x->ck && c->n_cks < c->cap_cks) {
        x->ck = ck, ck->node = x, c->cks[c->n_cks++] = ck;
        ck = NULL;
    }
    if (x) prune(x);
    pthread_mutex_unlock(&c->mu);
    free(ck);
}

typedef struct loading {
    qvlm_cache *c;
    qvlm_stream *s;
    qvlm_checkpoint tmp; /* filled here, moved into the real one on success */
} loading;

static qvlm_status ld_header(void *u, int64_t pos, int64_t next_pos, bool has_logits, qvlm_error *err) {
    loading *l = u;
    const int64_t bt = l->c->pool->block_tokens, nb = (pos + bt - 1) / bt;
    l->tmp.pos = pos, l->tmp.next_pos = next_pos;
    l->tmp.blocks = calloc((size_t)(nb ? nb : 1), sizeof(*l->tmp.blocks));
    size_t rb = qvlm_text_recurrent_bytes(&l->c->m->cfg), lb = (size_t)l->c->m->cfg.text.vocab_size * sizeof(float);
    l->tmp.recurrent = qvlm_backend_alloc(l->c->be, rb ? rb : 64);
    l->tmp.logits = has_logits ? malloc(lb) : NULL;
    l->tmp.bytes = rb + (has_logits ? lb : 0);
    if (!l->tmp.blocks || !l->tmp.recurrent || (has_logits && !l->tmp.logits))
        return qvlm_errorf(err, QVLM_E_NOMEM, "cache: out of memory loading a checkpoint");
    return QVLM_OK;
}

static qvlm_status ld_block(void *u, int64_t i, const void *data, qvlm_error *err) {
    loading *l = u;
    qvlm_kv_block *b = qvlm_kv_block_new(l->c->pool);
    if (!b) return qvlm_errorf(err, QVLM_E_NOMEM, "cache: out of memory loading a checkpoint");
    qvlm_op_upload(l->s, b->data, data, l->c->pool->block_bytes);
    l->tmp.blocks[i] = b;
    l->tmp.n_blocks = i + 1;
    return QVLM_OK;
}

static qvlm_status ld_recurrent(void *u, const void *data, qvlm_error *err) {
    loading *l = u;
    qvlm_op_upload(l->s, l->tmp.recurrent, data, qvlm_text_recurrent_bytes(&l->c->m->cfg));
    return QVLM_OK;
}

static qvlm_status ld_logits(void *u, const float *data, qvlm_error *err) {
    loading *l = u;
    if (l->tmp.logits) memcpy(l->tmp.logits, data, (size_t)l->c->m->cfg.text.vocab_size * sizeof(float));
    return QVLM_OK;
}

/* Bring a held disk-only checkpoint into memory. On failure it is removed from the tree. */
static qvlm_status load_ck(qvlm_cache *c, qvlm_checkpoint *ck, qvlm_stream *s, qvlm_error *err) {
    loading l = {c, s, {0}};
    qvlm_disk_loader ld = {&l, ld_header, ld_block, ld_recurrent, ld_logits};
    qvlm_status rc = qvlm_disk_load_checkpoint(c->disk, ck->disk_id, &ld, err);
    if (!rc && l.tmp.pos != ck->pos) rc = qvlm_errorf(err, QVLM_E_CORRUPT, "cache: checkpoint file changed under us");
    pthread_mutex_lock(&c->mu);
    if (!rc && !ck->recurrent && ck->node) {
        ck->blocks = l.tmp.blocks, ck->n_blocks = l.tmp.n_blocks, ck->recurrent = l.tmp.recurrent;
        ck->logits = l.tmp.logits, ck->bytes = l.tmp.bytes, ck->next_pos = l.tmp.next_pos;
        ck_account(c, ck, +1);
        c->st.disk_hits++;
        memset(&l.tmp, 0, sizeof(l.tmp));
        evict(c, 64);
    } else if (rc && ck->node) {
        c->st.disk_skipped++;
        ck->disk_id = 0;
        detach_ck(c, ck);
    }
    pthread_mutex_unlock(&c->mu);
    ck_drop_memory(c, &l.tmp);
    return rc;
}

/* ---- public: life cycle ------------------------------------------------------------------------ */

qvlm_status qvlm_cache_create(const qvlm_model *m, const qvlm_cache_params *p, qvlm_cache **out, qvlm_error *err) {
    *out = NULL;
    qvlm_cache *c = calloc(1, sizeof(*c));
    if (!c) return qvlm_errorf(err, QVLM_E_NOMEM, "cache: out of memory");
    c->m = m;
    qvlm_kv_pool_init(&c->own_pool, m->be, QVLM_KV_BLOCK_TOKENS, qvlm_text_kv_block_bytes(&m->cfg, QVLM_KV_BLOCK_TOKENS));
    c->pool = &c->own_pool;
    c->be = m->be;
    c->budget = p->budget_bytes;
    pthread_mutex_init(&c->mu, NULL);
    qvlm_status rc = QVLM_OK;
    if (p->dir || p->host_budget_bytes)
        rc = qvlm_disk_cache_open(m, p->dir, p->disk_budget_bytes ? p->disk_budget_bytes : 4 * QVLM_MAX(p->budget_bytes, p->host_budget_bytes),
                                  p->host_budget_bytes, &c->disk, err);
    pthread_mutex_init(&c->qmu, NULL);
    pthread_cond_init(&c->qcv, NULL);
    pthread_cond_init(&c->qdone, NULL);
    if (!rc && c->disk) {
        rc = qvlm_stream_create(c->be, &c->wstream, err);
        if (!rc) qvlm_disk_list_checkpoints(c->disk, on_disk_ck, c);
        if (!rc && pthread_create(&c->writer, NULL, writer_main, c) != 0)
            rc = qvlm_errorf(err, QVLM_E_INTERNAL, "cache: cannot start the disk writer");
        c->writer_started = rc == QVLM_OK;
    }
    if (rc) {
        qvlm_cache_destroy(c);
        return rc;
    }
    *out = c;
    return QVLM_OK;
}

void qvlm_cache_destroy(qvlm_cache *c) {
    if (!c) return;
    if (c->writer_started) {
        pthread_mutex_lock(&c->qmu);
        c->stop = true;
        pthread_cond_signal(&c->qcv);
        pthread_mutex_unlock(&c->qmu);
        pthread_join(c->writer, NULL); /* drains the queue first */
    }
    qvlm_stream_destroy(c->wstream);
    pthread_cond_destroy(&c->qcv);
    pthread_cond_destroy(&c->qdone);
    pthread_mutex_destroy(&c->qmu);
    for (int i = 0; i < c->n_roots; i++) free_subtree(c, &c->roots[i].n);
    free(c->roots);
    free(c->cks);
    for (int64_t i = 0; i < c->n_vis; i++) qvlm_vision_entry_release(c, c->vis[i]);
    free(c->vis);
    qvlm_disk_cache_close(c->disk);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ---- public: checkpoints -------------------------------------------------------------------------- */

static qvlm_checkpoint *find_deepest(qvlm_cache *c, uint64_t salt, const qvlm_key *keys, int64_t n, int64_t max_pos,
                                     int64_t *matched) {
    root *r = find_root(c, salt, false);
    qvlm_checkpoint *best = NULL;
    int64_t depth = 0;
    for (node *x = r ? &r->n : NULL; x;) {
        if (x->ck && x->depth <= max_pos && (x->depth < n || x->ck->has_logits)) best = x->ck;
        if (x->depth >= n) break;
        node *k = child_starting(x, keys[x->depth]);
        if (!k) break;
        int64_t m = common(k->edge, keys + x->depth, QVLM_MIN(k->edge_len, n - x->depth));
        depth = x->depth + m;
        x = m == k->edge_len ? k : NULL;
    }
    if (matched) *matched = depth;
    return best;
}

qvlm_checkpoint *qvlm_cache_lookup(qvlm_cache *c, uint64_t salt, const qvlm_key *keys, int64_t n, int64_t max_pos,
                                   int64_t *matched, qvlm_stream *s) {
    for (int attempt = 0; attempt < 8; attempt++) {
        pthread_mutex_lock(&c->mu);
        qvlm_checkpoint *best = find_deepest(c, salt, keys, n, max_pos, matched);
        if (best) {
            atomic_fetch_add(&best->refs, 1);
            best->last_use = ++c->clock;
        }
        bool resident = best && best->recurrent;
        pthread_mutex_unlock(&c->mu);
        if (!best || resident) return best;
        /* On disk only: load it (outside the lock). A bad file drops out of the tree and the
         * next best checkpoint is tried. */
        qvlm_error err;
        qvlm_status rc = load_ck(c, best, s, &err);
        if (rc == QVLM_OK) return best;
        qvlm_checkpoint_release(c, best);
        if (rc == QVLM_E_NOMEM) return NULL;
    }
    return NULL;
}

void qvlm_checkpoint_release(qvlm_cache *c, qvlm_checkpoint *ck) {
    if (ck) ck_unref(c, ck);
}
int64_t qvlm_checkpoint_pos(const qvlm_checkpoint *ck) { return ck->pos; }
bool qvlm_checkpoint_has_logits(const qvlm_checkpoint *ck) { return ck->logits != NULL; }

qvlm_status qvlm_checkpoint_restore(qvlm_cache *c, qvlm_checkpoint *ck, qvlm_sequence *q, qvlm_stream *s,
                                    float *logits, qvlm_error *err) {
    if (ck->n_blocks > q->cap_blocks) {
        qvlm_kv_block **nb = realloc(q->blocks, (size_t)ck->n_blocks * sizeof(*nb));
        if (!nb) return qvlm_errorf(err, QVLM_E_NOMEM, "restore: out of memory");
        q->blocks = nb;
        void **nd = realloc(q->block_data, (size_t)ck->n_blocks * sizeof(*nd));
        if (!nd) return qvlm_errorf(err, QVLM_E_NOMEM, "restore: out of memory");
        q->block_data = nd;
        q->cap_blocks = ck->n_blocks;
    }
    for (int64_t i = 0; i < q->n_blocks; i++) qvlm_kv_block_unref(c->pool, q->blocks[i]);
    for (int64_t i = 0; i < ck->n_blocks; i++) {
        qvlm_kv_block_ref(ck->blocks[i]);
        q->blocks[i] = ck->blocks[i];
        q->block_data[i] = ck->blocks[i]->data;
    }
    q->n_blocks = ck->n_blocks;
    qvlm_op_copy(s, q->recurrent, ck->recurrent, qvlm_text_recurrent_bytes(&c->m->cfg));
    q->n_past = ck->pos;
    q->next_pos = ck->next_pos;
    if (logits && ck->logits) memcpy(logits, ck->logits, (size_t)c->m->cfg.text.vocab_size * sizeof(float));
    return QVLM_OK;
}

bool qvlm_cache_contains(qvlm_cache *c, uint64_t salt, const qvlm_key *keys, int64_t n) {
    pthread_mutex_lock(&c->mu);
    root *r = find_root(c, salt, false);
    bool found = false;
    for (node *x = r ? &r->n : NULL; x && !found;) {
        if (x->depth == n) {
            found = x->ck != NULL;
            break;
        }
        node *k = child_starting(x, keys[x->depth]);
        if (!k || k->depth > n || common(k->edge, keys + x->depth, k->edge_len) < k->edge_len) break;
        x = k;
    }
    pthread_mutex_unlock(&c->mu);
    return found;
}

/* A snapshot of q as a free-standing checkpoint (not yet in the tree). */
static qvlm_checkpoint *snapshot(qvlm_cache *c, qvlm_sequence *q, qvlm_stream *s, const float *logits) {
    const qvlm_config *cfg = &c->m->cfg;
    const int64_t bt = c->pool->block_tokens, nb = (q->n_past + bt - 1) / bt;
    const size_t rb = qvlm_text_recurrent_bytes(cfg), lb = (size_t)cfg->text.vocab_size * sizeof(float);
    qvlm_checkpoint *ck = calloc(1, sizeof(*ck));
    if (!ck) return NULL;
    ck->recurrent = qvlm_backend_alloc(c->be, rb ? rb : 64);
    ck->blocks = malloc((size_t)(nb ? nb : 1) * sizeof(*ck->blocks));
    ck->logits = logits ? malloc(lb) : NULL;
    if (!ck->recurrent || !ck->blocks || (logits && !ck->logits)) {
        ck_free(c, ck);
        return NULL;
    }
    qvlm_op_copy(s, ck->recurrent, q->recurrent, rb);
    for (int64_t i = 0; i < nb; i++) {
        qvlm_kv_block_ref(q->blocks[i]);
        ck->blocks[i] = q->blocks[i];
    }
    ck->n_blocks = nb;
    if (logits) memcpy(ck->logits, logits, lb);
    atomic_store(&ck->refs, 1);
    ck->pos = q->n_past;
    ck->next_pos = q->next_pos;
    ck->bytes = rb + (logits ? lb : 0);
    ck->has_logits = logits != NULL;
    return ck;
}

qvlm_status qvlm_cache_insert(qvlm_cache *c, uint64_t salt, const qvlm_key *keys, qvlm_sequence *q, qvlm_stream *s,
                              const float *logits, qvlm_error *err) {
    if (q->n_past <= 0) return QVLM_OK;
    qvlm_checkpoint *ck = snapshot(c, q, s, logits);
    if (!ck) return qvlm_errorf(err, QVLM_E_NOMEM, "cache: cannot snapshot %lld tokens", (long long)q->n_past);
    job *to_write = NULL;
    pthread_mutex_lock(&c->mu);
    root *r = find_root(c, salt, true);
    node *x = r ? node_at(&r->n, keys, q->n_past) : NULL;
    qvlm_status rc = QVLM_OK;
    if (!x) {
        rc = qvlm_errorf(err, QVLM_E_NOMEM, "cache: out of memory for the index");
    } else if (x->ck && (x->ck->has_logits || !logits)) {
        x->ck->last_use = ++c->clock; /* already there (in memory or on disk): keep the old one */
    } else {
        if (x->ck) detach_ck(c, x->ck); /* the new one also has logits */
        x = node_at(&r->n, keys, q->n_past);
        if (x && c->n_cks == c->cap_cks) {
            int64_t cap = c->cap_cks ? 2 * c->cap_cks : 64;
            qvlm_checkpoint **n = realloc(c->cks, (size_t)cap * sizeof(*n));
            if (n) c->cks = n, c->cap_cks = cap;
        }
        if (!x || c->n_cks == c->cap_cks) {
            rc = qvlm_errorf(err, QVLM_E_NOMEM, "cache: out of memory for the index");
            if (x) prune(x);
        } else {
            x->ck = ck;
            ck->node = x;
            ck->last_use = ++c->clock;
            c->cks[c->n_cks++] = ck;
            ck_account(c, ck, +1);
            c->st.snapshots++;
            if (c->disk) {
                job *j = calloc(1, sizeof(*j));
                if (j) j->keys = malloc((size_t)ck->pos * sizeof(qvlm_key));
                if (j && j->keys) {
                    memcpy(j->keys, keys, (size_t)ck->pos * sizeof(qvlm_key));
                    j->salt = salt;
                    j->ck = ck;
                    atomic_fetch_add(&ck->refs, 1);
                    ck->writing = true;
                    to_write = j;
                } else if (j) {
                    free(j);
                }
            }
            ck = NULL;
            evict(c, 64);
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (to_write) enqueue(c, to_write);
    if (ck) ck_free(c, ck);
    return rc;
}

static qvlm_status vision_put_host(qvlm_cache *c, qvlm_hash128 h, const float *rows, int64_t n_rows, qvlm_stream *s,
                                   qvlm_error *err);

/* ---- public: vision features ----------------------------------------------------------------------- */

qvlm_vision_entry *qvlm_cache_vision_get(qvlm_cache *c, qvlm_hash128 h, qvlm_stream *s) {
    qvlm_vision_entry *e = NULL;
    pthread_mutex_lock(&c->mu);
    for (int64_t i = 0; i < c->n_vis && !e; i++)
        if (qvlm_hash128_eq(c->vis[i]->hash, h)) e = c->vis[i];
    if (e) {
        atomic_fetch_add(&e->refs, 1);
        e->last_use = ++c->clock;
        c->st.vision_hits++;
    }
    pthread_mutex_unlock(&c->mu);
    if (!e && c->disk && qvlm_disk_has_vision(c->disk, h)) {
        float *rows = NULL;
        int64_t n_rows = 0;
        qvlm_error err;
        if (qvlm_disk_get_vision(c->disk, h, c->m->cfg.text.hidden_size, &rows, &n_rows, &err) == QVLM_OK &&
            vision_put_host(c, h, rows, n_rows, s, &err) == QVLM_OK) {
            pthread_mutex_lock(&c->mu);
            c->st.disk_hits++;
            for (int64_t i = 0; i < c->n_vis && !e; i++)
                if (qvlm_hash128_eq(c->vis[i]->hash, h)) e = c->vis[i];
            if (e) atomic_fetch_add(&e->refs, 1), e->last_use = ++c->clock, c->st.vision_hits++;
            pthread_mutex_unlock(&c->mu);
        } else if (rows == NULL) {
            pthread_mutex_lock(&c->mu);
            c->st.disk_skipped++;
            pthread_mutex_unlock(&c->mu);
        }
        free(rows);
    }
    if (!e) {
        pthread_mutex_lock(&c->mu);
        c->st.vision_misses++;
        pthread_mutex_unlock(&c->mu);
    }
    return e;
}

const float *qvlm_vision_entry_rows(const qvlm_vision_entry *e) { return e->rows; }
int64_t qvlm_vision_entry_n_rows(const qvlm_vision_entry *e) { return e->n_rows; }

void qvlm_vision_entry_release(qvlm_cache *c, qvlm_vision_entry *e) {
    if (e && atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1) {
        qvlm_backend_free(c->be, e->rows);
        free(e);
    }
}

/* Insert features (already copied into `e->rows`); queue them for the disk unless they came
 * from it. */
static void vision_insert(qvlm_cache *c, qvlm_vision_entry *e, bool from_disk) {
    job *to_write = NULL;
    pthread_mutex_lock(&c->mu);
    bool dup = false;
    for (int64_t i = 0; i < c->n_vis && !dup; i++) dup = qvlm_hash128_eq(c->vis[i]->hash, e->hash);
    if (!dup && c->n_vis == c->cap_vis) {
        int64_t cap = c->cap_vis ? 2 * c->cap_vis : 32;
        qvlm_vision_entry **n = realloc(c->vis, (size_t)cap * sizeof(*n));
        if (n) c->vis = n, c->cap_vis = cap;
    }
    if (!dup && c->n_vis < c->cap_vis) {
        e->last_use = ++c->clock;
        c->vis[c->n_vis++] = e;
        c->vis_bytes += e->bytes;
        if (c->disk && !from_disk && (to_write = calloc(1, sizeof(*to_write))) != NULL) {
            atomic_fetch_add(&e->refs, 1);
            to_write->vis = e;
        }
        e = NULL;
        evict(c, 64);
    }
    pthread_mutex_unlock(&c->mu);
    if (to_write) enqueue(c, to_write);
    if (e) qvlm_vision_entry_release(c, e);
}

static qvlm_vision_entry *vision_new(qvlm_cache *c, qvlm_hash128 h, int64_t n_rows) {
    const size_t bytes = (size_t)(n_rows * c->m->cfg.text.hidden_size) * sizeof(float);
    qvlm_vision_entry *e = calloc(1, sizeof(*e));
    if (e) e->rows = qvlm_backend_alloc(c->be, bytes ? bytes : 64);
    if (!e || !e->rows) {
        free(e);
        return NULL;
    }
    atomic_store(&e->refs, 1);
    e->hash = h;
    e->n_rows = n_rows;
    e->bytes = bytes;
    e->live = true;
    return e;
}

qvlm_status qvlm_cache_vision_put(qvlm_cache *c, qvlm_hash128 h, const float *rows, int64_t n_rows, qvlm_stream *s,
                                  qvlm_error *err) {
    qvlm_vision_entry *e = vision_new(c, h, n_rows);
    if (!e) return qvlm_errorf(err, QVLM_E_NOMEM, "cache: out of memory for image features");
    qvlm_op_copy(s, e->rows, rows, e->bytes);
    vision_insert(c, e, false);
    return QVLM_OK;
}

static qvlm_status vision_put_host(qvlm_cache *c, qvlm_hash128 h, const float *rows, int64_t n_rows, qvlm_stream *s,
                                   qvlm_error *err) {
    qvlm_vision_entry *e = vision_new(c, h, n_rows);
    if (!e) return qvlm_errorf(err, QVLM_E_NOMEM, "cache: out of memory for image features");
    qvlm_op_upload(s, e->rows, rows, e->bytes);
    vision_insert(c, e, true);
    return QVLM_OK;
}

/* ---- public: upkeep ----------------------------------------------------------------------------- */

void qvlm_cache_note_lookup(qvlm_cache *c, bool hit, int64_t reused_tokens) {
    pthread_mutex_lock(&c->mu);
    c->st.lookups++;
    c->st.hits += hit;
    c->st.reused_tokens += (uint64_t)reused_tokens;
    pthread_mutex_unlock(&c->mu);
}

void qvlm_cache_stats_get(qvlm_cache *c, qvlm_cache_stats *out) {
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    out->bytes = total_bytes(c);
    out->budget_bytes = c->budget;
    out->snapshot_bytes = c->snap_bytes;
    out->kv_bytes = c->kv_bytes;
    out->vision_bytes = c->vis_bytes;
    out->n_checkpoints = c->n_cks;
    out->n_vision = c->n_vis;
    pthread_mutex_unlock(&c->mu);
    if (c->disk) {
        out->disk_bytes = qvlm_disk_cache_bytes(c->disk);
        out->disk_skipped += qvlm_disk_skipped(c->disk);
        qvlm_disk_cache_host_stats(c->disk, &out->host_bytes, &out->host_hits);
    }
}

qvlm_status qvlm_cache_flush(qvlm_cache *c, qvlm_error *err) {
    (void)err;
    if (!c->writer_started) return QVLM_OK;
    pthread_mutex_lock(&c->qmu);
    while (c->head || c->in_flight) pthread_cond_wait(&c->qdone, &c->qmu);
    pthread_mutex_unlock(&c->qmu);
    pthread_mutex_lock(&c->mu);
    evict(c, 1 << 20); /* what waited for the writer may go down a tier now */
    pthread_mutex_unlock(&c->mu);
    qvlm_disk_cache_sync(c->disk);
    return QVLM_OK;
}
