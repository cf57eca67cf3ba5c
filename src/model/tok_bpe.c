/* tok_bpe.c - the BPE model: token-string maps, the merge table, merging one word, and the
 * word cache shared by all threads (qwen35-arch.md §1.5).
 *
 * Merging follows HF tokenizers' Word::merge_all exactly, including its quirks, because ids
 * must be byte-identical: a min-heap of candidate merges ordered by (rank, position); an entry
 * is applied only if the pair now at its position still maps to the entry's new id (so a stale
 * entry whose pair changed into another pair with the same result is applied at its old rank,
 * as HF does). Characters missing from the vocabulary go through byte_fallback, then unk_token,
 * else are dropped, in HF's order.
 *
 * The cache maps a word's raw bytes to its ids. It is direct-mapped (one entry per slot, a new
 * word replaces the old one), so memory is bounded and no eviction scan ever runs; 16 shards,
 * each behind its own mutex, keep threads from queueing on one lock.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "model/tok_internal.h"

uint64_t qvlm_tok_hash(const void *p, size_t n) { return XXH3_64bits(p, n); }

/* ---- string -> id maps ------------------------------------------------------------------- */

qvlm_status qvlm_tok_strmap_init(tok_strmap *m, size_t n_keys, qvlm_error *err) {
    size_t n = 16;
    while (n < n_keys * 2) n <<= 1; /* load factor <= 1/2 */
    m->slots = malloc(n * sizeof(*m->slots));
    if (!m->slots) return qvlm_errorf(err, QVLM_E_NOMEM, "tokenizer: cannot allocate a %zu-slot map", n);
    memset(m->slots, 0xFF, n * sizeof(*m->slots)); /* -1 everywhere */
    m->mask = (uint32_t)(n - 1);
    return QVLM_OK;
}

void qvlm_tok_strmap_free(tok_strmap *m) {
    free(m->slots);
    m->slots = NULL;
    m->mask = 0;
}

static bool key_is(const qvlm_tokenizer *tok, int32_t id, const char *key, size_t len) {
    const tok_entry *e = &tok->entries[id];
    return e->raw_len == len && memcmp(tok->strs + e->raw_off, key, len) == 0;
}

int32_t qvlm_tok_strmap_get(const qvlm_tokenizer *tok, const tok_strmap *m, const char *key,
                            size_t len) {
    if (!m->slots) return -1;
    for (uint32_t i = (uint32_t)qvlm_tok_hash(key, len) & m->mask;; i = (i + 1) & m->mask) {
        int32_t id = m->slots[i];
        if (id < 0) return -1;
        if (key_is(tok, id, key, len)) return id;
    }
}

int32_t qvlm_tok_strmap_put(const qvlm_tokenizer *tok, tok_strmap *m, int32_t id) {
    const tok_entry *e = &tok->entries[id];
    const char *key = tok->strs + e->raw_off;
    for (uint32_t i = (uint32_t)qvlm_tok_hash(key, e->raw_len) & m->mask;; i = (i + 1) & m->mask) {
        int32_t old = m->slots[i];
        if (old < 0) {
            m->slots[i] = id;
            return -1;
        }
        if (key_is(tok, old, key, e->raw_len)) return old;
    }
}

/* ---- merge table ------------------------------------------------------------------------- */

static uint64_t mix64(uint64_t x) { /* murmur3 finaliser: ids are small and dense */
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

qvlm_status qvlm_tok_merges_init(qvlm_tokenizer *tok, size_t n_merges, qvlm_error *err) {
    size_t n = 16;
    while (n < n_merges * 2) n <<= 1;
    tok->merges = malloc(n * sizeof(*tok->merges));
    if (!tok->merges)
        return qvlm_errorf(err, QVLM_E_NOMEM, "%s: cannot allocate %zu merge slots", tok->name, n);
    for (size_t i = 0; i < n; i++) tok->merges[i].pair = TOK_MERGE_EMPTY;
    tok->merge_mask = n - 1;
    return QVLM_OK;
}

void qvlm_tok_merges_put(qvlm_tokenizer *tok, int32_t left, int32_t right, uint32_t rank,
                         int32_t new_id) {
    uint64_t key = pair_key(left, right);
    for (uint64_t i = mix64(key) & tok->merge_mask;; i = (i + 1) & tok->merge_mask) {
        tok_merge *m = &tok->merges[i];
        if (m->pair == TOK_MERGE_EMPTY || m->pair == key) {
            *m = (tok_merge){.pair = key, .rank = rank, .new_id = new_id};
            return;
        }
    }
}

static const tok_merge *merge_find(const qvlm_tokenizer *tok, int32_t left, int32_t right) {
    uint64_t key = pair_key(left, right);
    for (uint64_t i = mix64(key) & tok->merge_mask;; i = (i + 1) & tok->merge_mask) {
        const tok_merge *m = &tok->merges[i];
        if (m->pair == key) return m;
        if (m->pair == TOK_MERGE_EMPTY) return NULL;
    }
}

/* ---- id lists ---------------------------------------------------------------------------- */

static qvlm_status ids_reserve(tok_ids *ids, size_t extra, qvlm_error *err) {
    if (ids->cap - ids->n >= extra) return QVLM_OK;
    size_t cap = ids->cap ? ids->cap : 64;
    while (cap - ids->n < extra) {
        if (cap > SIZE_MAX / 2 / sizeof(int32_t))
            return qvlm_errorf(err, QVLM_E_LIMIT, "encode: too many tokens");
        cap *= 2;
    }
    int32_t *v = realloc(ids->v, cap * sizeof(*v));
    if (!v) return qvlm_errorf(err, QVLM_E_NOMEM, "encode: cannot allocate %zu ids", cap);
    ids->v = v;
    ids->cap = cap;
    return QVLM_OK;
}

qvlm_status qvlm_tok_ids_push(tok_ids *ids, int32_t id, qvlm_error *err) {
    qvlm_status rc = ids_reserve(ids, 1, err);
    if (rc) return rc;
    ids->v[ids->n++] = id;
    return QVLM_OK;
}

/* ---- word cache -------------------------------------------------------------------------- */

#define CACHE_SHARDS 16
#define CACHE_SLOTS 4096        /* per shard: 64 Ki words in all */
#define CACHE_MAX_WORD_BYTES 96 /* longer words are rare and not worth keeping */

typedef struct cache_entry {
    uint64_t hash;
    uint32_t n_bytes;
    uint32_t n_ids;
    int32_t ids[]; /* [n_ids], then the word's n_bytes bytes */
} cache_entry;

typedef struct cache_shard {
    pthread_mutex_t mu;
    cache_entry *slots[CACHE_SLOTS];
    char pad[64]; /* keep neighbouring shards' locks off one cache line */
} cache_shard;

struct tok_cache {
    cache_shard shards[CACHE_SHARDS];
};

qvlm_status qvlm_tok_cache_create(tok_cache **out, qvlm_error *err) {
    tok_cache *c = calloc(1, sizeof(*c));
    if (!c) return qvlm_errorf(err, QVLM_E_NOMEM, "tokenizer: cannot allocate the BPE cache");
    for (int i = 0; i < CACHE_SHARDS; i++) {
        if (pthread_mutex_init(&c->shards[i].mu, NULL) != 0) {
            while (i-- > 0) pthread_mutex_destroy(&c->shards[i].mu);
            free(c);
            return qvlm_errorf(err, QVLM_E_NOMEM, "tokenizer: cannot create the cache locks");
        }
    }
    *out = c;
    return QVLM_OK;
}

void qvlm_tok_cache_destroy(tok_cache *c) {
    if (!c) return;
    for (int i = 0; i < CACHE_SHARDS; i++) {
        for (int j = 0; j < CACHE_SLOTS; j++) free(c->shards[i].slots[j]);
        pthread_mutex_destroy(&c->shards[i].mu);
    }
    free(c);
}

static cache_shard *shard_of(tok_cache *c, uint64_t h) { return &c->shards[h % CACHE_SHARDS]; }
static size_t slot_of(uint64_t h) { return (size_t)(h / CACHE_SHARDS) % CACHE_SLOTS; }

static const uint8_t *entry_word(const cache_entry *e) { return (const uint8_t *)(e->ids + e->n_ids); }

/* Append the cached ids of word w to out; false on a miss. out must have room for 2n ids
 * (a word never has more: at most two byte_fallback ids per byte). */
static bool cache_get(tok_cache *c, uint64_t h, const uint8_t *w, size_t n, tok_ids *out) {
    cache_shard *s = shard_of(c, h);
    bool hit = false;
    pthread_mutex_lock(&s->mu);
    const cache_entry *e = s->slots[slot_of(h)];
    if (e && e->hash == h && e->n_bytes == n && memcmp(entry_word(e), w, n) == 0) {
        memcpy(out->v + out->n, e->ids, e->n_ids * sizeof(int32_t));
        out->n += e->n_ids;
        hit = true;
    }
    pthread_mutex_unlock(&s->mu);
    return hit;
}

/* Remember w -> ids. Best effort: on allocation failure the word is simply not cached. */
static void cache_put(tok_cache *c, uint64_t h, const uint8_t *w, size_t n, const int32_t *ids,
                      size_t n_ids) {
    cache_entry *e = malloc(sizeof(*e) + n_ids * sizeof(int32_t) + n);
    if (!e) return;
    e->hash = h;
    e->n_bytes = (uint32_t)n;
    e->n_ids = (uint32_t)n_ids;
    memcpy(e->ids, ids, n_ids * sizeof(int32_t));
    memcpy((uint8_t *)(e->ids + n_ids), w, n);
    cache_shard *s = shard_of(c, h);
    pthread_mutex_lock(&s->mu);
    cache_entry *old = s->slots[slot_of(h)];
    s->slots[slot_of(h)] = e;
    pthread_mutex_unlock(&s->mu);
    free(old); /* outside the lock: nobody can reach it any more */
}

/* ---- merging one word -------------------------------------------------------------------- */

typedef struct sym {
    int32_t c;          /* token id */
    int32_t prev, next; /* neighbours still alive, -1 at the ends */
    uint32_t len;       /* 0: merged into its left neighbour */
} sym;

typedef struct cand {
    uint32_t rank, pos;
    int32_t new_id;
} cand;

static bool cand_before(const cand *a, const cand *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(cand *h, size_t *n, cand x) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&x, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static cand heap_pop(cand *h, size_t *n) {
    cand top = h[0], x = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < *n && cand_before(&h[l], &x)) m = l;
        if (l + 1 < *n && cand_before(&h[l + 1], m == i ? &x : &h[l])) m = l + 1;
        if (m == i) break;
        h[i] = h[m];
        i = m;
    }
    if (*n) h[i] = x;
    return top;
}

static qvlm_status scratch_reserve(tok_bpe_scratch *sc, size_t n_syms, qvlm_error *err) {
    if (n_syms > sc->cap_syms) {
        void *p = realloc(sc->syms, n_syms * sizeof(sym));
        if (!p) return qvlm_errorf(err, QVLM_E_NOMEM, "encode: cannot allocate %zu symbols", n_syms);
        sc->syms = p;
        sc->cap_syms = n_syms;
    }
    /* Every applied merge pushes at most two candidates: 3n bounds the heap. */
    size_t n_heap = 3 * n_syms + 1;
    if (n_heap > sc->cap_heap) {
        void *p = realloc(sc->heap, n_heap * sizeof(cand));
        if (!p) return qvlm_errorf(err, QVLM_E_NOMEM, "encode: cannot allocate %zu merges", n_heap);
        sc->heap = p;
        sc->cap_heap = n_heap;
    }
    return QVLM_OK;
}

void qvlm_tok_bpe_scratch_free(tok_bpe_scratch *s) {
    free(s->syms);
    free(s->heap);
    free(s->mapped);
    memset(s, 0, sizeof(*s));
}

static void sym_add(sym *syms, size_t *n, int32_t c, uint32_t len) {
    syms[*n] = (sym){.c = c, .prev = (int32_t)*n - 1, .next = -1, .len = len};
    if (*n > 0) syms[*n - 1].next = (int32_t)*n;
    (*n)++;
}

/* HF BPE::merge_word's first half: one symbol per character of the byte-level word. */
static size_t initial_symbols(const qvlm_tokenizer *tok, const uint8_t *w, size_t n, sym *syms) {
    size_t n_syms = 0;
    int32_t unk = -1;
    uint32_t unk_len = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = w[i];
        uint32_t ch_len = qvlm_tok_byte_char(b) < 0x80 ? 1 : 2; /* UTF-8 length of its char */
        if (tok->byte_id[b] >= 0) {
            if (unk >= 0) sym_add(syms, &n_syms, unk, unk_len), unk = -1;
            sym_add(syms, &n_syms, tok->byte_id[b], ch_len);
            continue;
        }
        if (tok->byte_fallback && tok->n_fallback[b]) {
            /* HF adds these before any pending unk, which comes out later. */
            for (int k = 0; k < tok->n_fallback[b]; k++) sym_add(syms, &n_syms, tok->fallback_id[b][k], 1);
            continue;
        }
        if (tok->unk_id < 0) continue; /* HF drops the character */
        if (unk >= 0 && tok->fuse_unk) {
            unk_len += ch_len;
        } else {
            if (unk >= 0) sym_add(syms, &n_syms, unk, unk_len);
            unk = tok->unk_id, unk_len = ch_len;
        }
    }
    if (unk >= 0) sym_add(syms, &n_syms, unk, unk_len);
    return n_syms;
}

static void push_pair(const qvlm_tokenizer *tok, const sym *syms, int32_t pos, cand *heap,
                      size_t *n_heap) {
    const tok_merge *m = merge_find(tok, syms[pos].c, syms[syms[pos].next].c);
    if (m) heap_push(heap, n_heap, (cand){.rank = m->rank, .pos = (uint32_t)pos, .new_id = m->new_id});
}

/* HF Word::merge_all (without dropout). */
static void merge_all(const qvlm_tokenizer *tok, sym *syms, size_t n_syms, cand *heap) {
    size_t n_heap = 0;
    for (size_t i = 0; i + 1 < n_syms; i++) push_pair(tok, syms, (int32_t)i, heap, &n_heap);
    while (n_heap > 0) {
        cand top = heap_pop(heap, &n_heap);
        sym *cur = &syms[top.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        sym right = syms[cur->next];
        const tok_merge *m = merge_find(tok, cur->c, right.c);
        if (!m || m->new_id != top.new_id) continue; /* stale entry */
        syms[cur->next].len = 0;
        cur->c = top.new_id;
        cur->len += right.len;
        cur->next = right.next;
        if (right.next >= 0) syms[right.next].prev = (int32_t)top.pos;
        if (cur->prev >= 0) push_pair(tok, syms, cur->prev, heap, &n_heap);
        if (cur->next >= 0) push_pair(tok, syms, (int32_t)top.pos, heap, &n_heap);
    }
}

/* ignore_merges: a word that is itself in the vocabulary is one token. */
static int32_t whole_word_id(const qvlm_tokenizer *tok, tok_bpe_scratch *sc, const uint8_t *w,
                             size_t n, qvlm_error *err, qvlm_status *rc) {
    size_t need = 2 * n; /* each byte's character is 1 or 2 UTF-8 bytes */
    if (need > sc->cap_mapped) {
        char *p = realloc(sc->mapped, need);
        if (!p) {
            *rc = qvlm_errorf(err, QVLM_E_NOMEM, "encode: cannot allocate %zu bytes", need);
            return -1;
        }
        sc->mapped = p;
        sc->cap_mapped = need;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += qvlm_tok_utf8_put(qvlm_tok_byte_char(w[i]), sc->mapped + k);
    return qvlm_tok_strmap_get(tok, &tok->vocab_map, sc->mapped, k);
}

qvlm_status qvlm_tok_bpe_word(const qvlm_tokenizer *tok, tok_bpe_scratch *sc, const uint8_t *w,
                              size_t n, tok_ids *out, qvlm_error *err) {
    if (n == 0) return QVLM_OK;
    qvlm_status rc = QVLM_OK;
    if (tok->ignore_merges) {
        int32_t id = whole_word_id(tok, sc, w, n, err, &rc);
        if (rc) return rc;
        if (id >= 0) return qvlm_tok_ids_push(out, id, err);
    }
    size_t max_syms;
    if (qvlm_mul_overflow(n, 2, &max_syms) || max_syms > UINT32_MAX / 4)
        return qvlm_errorf(err, QVLM_E_LIMIT, "encode: a %zu-byte word is too long", n);
    rc = ids_reserve(out, max_syms, err);
    if (rc) return rc;
    bool cacheable = n <= CACHE_MAX_WORD_BYTES;
    uint64_t h = cacheable ? qvlm_tok_hash(w, n) : 0;
    if (cacheable && cache_get(tok->cache, h, w, n, out)) return QVLM_OK;

    rc = scratch_reserve(sc, max_syms, err);
    if (rc) return rc;
    sym *syms = sc->syms;
    size_t n_syms = initial_symbols(tok, w, n, syms);
    merge_all(tok, syms, n_syms, sc->heap);
    size_t first = out->n;
    for (size_t i = 0; i < n_syms; i++)
        if (syms[i].len != 0) out->v[out->n++] = syms[i].c;
    if (cacheable) cache_put(tok->cache, h, w, n, out->v + first, out->n - first);
    return QVLM_OK;
}
