/* cache.c - the cross-turn cache: a radix tree of checkpoints, vision features, one budget
 * (see cache.h). One mutex guards the index; reference counts keep entries alive while a
 * request uses them, so the long copies (snapshots, restores) run outside the lock. */
#include "engine/cache.h"

#include <pthread.h>
#include <stdatomic.h>
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
};

static size_t total_bytes(const qvlm_cache *c) { return c->snap_bytes + c->kv_bytes + c->vis_bytes; }

/* ---- checkpoints: life and death ---------------------------------------------------------------- */

static void ck_free(qvlm_cache *c, qvlm_checkpoint *ck) {
    for (int64_t i = 0; i < ck->n_blocks; i++) qvlm_kv_block_unref(c->pool, ck->blocks[i]);
    free(ck->blocks);
    qvlm_backend_free(c->be, ck->recurrent);
    free(ck->logits);
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
        memcpy(n, c->roots, (size_t)c->n_roots * sizeof(*n));
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
            /* Leaves first: an inner checkpoint's descendants resume later than it. */
            if (ck->node->n_kids == 0 && atomic_load(&ck->refs) == 1 && ck->last_use < best_t)
                best_t = ck->last_use, best_ck = i;
        }
        for (int64_t i = 0; i < c->n_vis; i++)
            if (atomic_load(&c->vis[i]->refs) == 1 && c->vis[i]->last_use < best_t)
                best_t = c->vis[i]->last_use, best_vis = i, best_ck = -1;
        if (best_vis >= 0) detach_vis(c, best_vis);
        else if (best_ck >= 0) detach_ck(c, c->cks[best_ck]);
        else {
            /* Only inner checkpoints are left unheld: take the oldest of those. */
            for (int64_t i = 0; i < c->n_cks; i++)
                if (atomic_load(&c->cks[i]->refs) == 1 && c->cks[i]->last_use < best_t)
                    best_t = c->cks[i]->last_use, best_ck = i;
            if (best_ck < 0) return;
            detach_ck(c, c->cks[best_ck]);
        }
        c->st.evictions++;
    }
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
    if (p->dir) rc = qvlm_disk_cache_open(m, p->dir, p->disk_budget_bytes ? p->disk_budget_bytes : 4 * p->budget_bytes,
                                          &c->disk, err);
    if (rc) {
        qvlm_cache_destroy(c);
        return rc;
    }
    *out = c;
    return QVLM_OK;
}

void qvlm_cache_destroy(qvlm_cache *c) {
    if (!c) return;
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

qvlm_checkpoint *qvlm_cache_lookup(qvlm_cache *c, uint64_t salt, const qvlm_key *keys, int64_t n, int64_t max_pos,
                                   int64_t *matched) {
    pthread_mutex_lock(&c->mu);
    root *r = find_root(c, salt, false);
    qvlm_checkpoint *best = NULL;
    int64_t depth = 0;
    for (node *x = r ? &r->n : NULL; x;) {
        if (x->ck && x->depth <= max_pos && (x->depth < n || x->ck->logits)) best = x->ck;
        if (x->depth >= n) break;
        node *k = child_starting(x, keys[x->depth]);
        if (!k) break;
        int64_t m = common(k->edge, keys + x->depth, QVLM_MIN(k->edge_len, n - x->depth));
        depth = x->depth + m;
        x = m == k->edge_len ? k : NULL;
    }
    if (best) {
        atomic_fetch_add(&best->refs, 1);
        best->last_use = ++c->clock;
    }
    pthread_mutex_unlock(&c->mu);
    if (matched) *matched = depth;
    return best;
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
    return ck;
}

qvlm_status qvlm_cache_insert(qvlm_cache *c, uint64_t salt, const qvlm_key *keys, qvlm_sequence *q, qvlm_stream *s,
                              const float *logits, qvlm_error *err) {
    if (q->n_past <= 0) return QVLM_OK;
    qvlm_checkpoint *ck = snapshot(c, q, s, logits);
    if (!ck) return qvlm_errorf(err, QVLM_E_NOMEM, "cache: cannot snapshot %lld tokens", (long long)q->n_past);
    pthread_mutex_lock(&c->mu);
    root *r = find_root(c, salt, true);
    node *x = r ? node_at(&r->n, keys, q->n_past) : NULL;
    qvlm_status rc = QVLM_OK;
    if (!x) {
        rc = qvlm_errorf(err, QVLM_E_NOMEM, "cache: out of memory for the index");
    } else if (x->ck && (x->ck->logits || !logits)) {
        x->ck->last_use = ++c->clock; /* already there: keep the old one */
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
        } else {
            x->ck = ck;
            ck->node = x;
            ck->last_use = ++c->clock;
            c->cks[c->n_cks++] = ck;
            ck_account(c, ck, +1);
            c->st.snapshots++;
            ck = NULL;
            evict(c, 64);
        }
    }
    if (x) prune(x);
    pthread_mutex_unlock(&c->mu);
    if (ck) ck_free(c, ck);
    return rc;
}

/* ---- public: vision features ----------------------------------------------------------------------- */

qvlm_vision_entry *qvlm_cache_vision_get(qvlm_cache *c, qvlm_hash128 h) {
    qvlm_vision_entry *e = NULL;
    pthread_mutex_lock(&c->mu);
    for (int64_t i = 0; i < c->n_vis && !e; i++)
        if (qvlm_hash128_eq(c->vis[i]->hash, h)) e = c->vis[i];
    if (e) {
        atomic_fetch_add(&e->refs, 1);
        e->last_use = ++c->clock;
        c->st.vision_hits++;
    } else {
        c->st.vision_misses++;
    }
    pthread_mutex_unlock(&c->mu);
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

qvlm_status qvlm_cache_vision_put(qvlm_cache *c, qvlm_hash128 h, const float *rows, int64_t n_rows, qvlm_stream *s,
                                  qvlm_error *err) {
    const size_t bytes = (size_t)(n_rows * c->m->cfg.text.hidden_size) * sizeof(float);
    qvlm_vision_entry *e = calloc(1, sizeof(*e));
    if (e) e->rows = qvlm_backend_alloc(c->be, bytes ? bytes : 64);
    if (!e || !e->rows) {
        free(e);
        return qvlm_errorf(err, QVLM_E_NOMEM, "cache: out of memory for image features");
    }
    qvlm_op_copy(s, e->rows, rows, bytes);
    atomic_store(&e->refs, 1);
    e->hash = h;
    e->n_rows = n_rows;
    e->bytes = bytes;
    e->live = true;
    pthread_mutex_lock(&c->mu);
    bool dup = false;
    for (int64_t i = 0; i < c->n_vis && !dup; i++) dup = qvlm_hash128_eq(c->vis[i]->hash, h);
    if (!dup && c->n_vis == c->cap_vis) {
        int64_t cap = c->cap_vis ? 2 * c->cap_vis : 32;
        qvlm_vision_entry **n = realloc(c->vis, (size_t)cap * sizeof(*n));
        if (n) c->vis = n, c->cap_vis = cap;
    }
    if (!dup && c->n_vis < c->cap_vis) {
        e->last_use = ++c->clock;
        c->vis[c->n_vis++] = e;
        c->vis_bytes += bytes;
        e = NULL;
        evict(c, 64);
    }
    pthread_mutex_unlock(&c->mu);
    if (e) qvlm_vision_entry_release(c, e);
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
}

qvlm_status qvlm_cache_flush(qvlm_cache *c, qvlm_error *err) {
    (void)c;
    (void)err;
    return QVLM_OK;
}
