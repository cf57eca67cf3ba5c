/* jinja_arena.c - the bump allocator holding a parsed template: AST nodes, decoded string
 * literals and the normalized source. Everything is freed at once with the template, so the
 * parser never frees a node on its error paths. Allocations are zeroed and 16-byte aligned.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/jinja.h"

struct jinja_arena_block {
    jinja_arena_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void *jinja_arena_alloc(jinja_arena *a, size_t n_bytes) {
    if (n_bytes > SIZE_MAX / 4) return NULL; /* sizes derive from the source, which is bounded */
    n_bytes = (n_bytes + 15) & ~(size_t)15;
    jinja_arena_block *b = a->head;
    if (!b || b->cap - b->used < n_bytes) {
        size_t cap = n_bytes > 65536 ? n_bytes : 65536;
        b = malloc(sizeof(*b) + cap);
        if (!b) return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n_bytes;
    memset(p, 0, n_bytes);
    return p;
}

void jinja_arena_free(jinja_arena *a) {
    for (jinja_arena_block *b = a->head, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    a->head = NULL;
}
