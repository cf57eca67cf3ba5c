/* tok_added.c - finding added tokens (<|im_start|>, <think>, ...) in text before BPE, as HF
 * AddedVocabulary::find_matches does (qwen35-arch.md §1.5: special tokens are matched first).
 *
 * HF scans with an aho-corasick automaton in MatchKind::LeftmostLongest: the match that starts
 * leftmost wins, and among those the longest; scanning resumes after it. A byte trie walked from
 * each position gives the same matches. Then, per match and in this order:
 *   single_word  the match is dropped (scanning still resumes after it) unless it is not
 *                preceded and not followed by a word character (Rust regex \w);
 *   lstrip       the token also takes the whitespace before it, but never text a previous
 *                match already took;
 *   rstrip       the token also takes the whitespace after it.
 * Patterns are valid UTF-8 and so is the text, so matches always start on a character.
 */
#include <stdlib.h>
#include <string.h>

#include "model/tok_internal.h"

void qvlm_tok_trie_init(tok_trie *t) {
    memset(t, 0, sizeof(*t));
    memset(t->root, 0xFF, sizeof(t->root)); /* -1 */
}

void qvlm_tok_trie_free(tok_trie *t) {
    free(t->nodes);
    qvlm_tok_trie_init(t);
}

static int32_t new_node(tok_trie *t, uint8_t byte, qvlm_error *err) {
    if (t->n_nodes == t->cap_nodes) {
        size_t cap = t->cap_nodes ? 2 * t->cap_nodes : 64;
        if (cap > INT32_MAX) {
            qvlm_errorf(err, QVLM_E_LIMIT, "added_tokens: too many bytes in patterns");
            return -1;
        }
        tok_trie_node *v = realloc(t->nodes, cap * sizeof(*v));
        if (!v) {
            qvlm_errorf(err, QVLM_E_NOMEM, "added_tokens: out of memory");
            return -1;
        }
        t->nodes = v;
        t->cap_nodes = cap;
    }
    t->nodes[t->n_nodes] = (tok_trie_node){.first_child = -1, .next_sibling = -1, .added_idx = -1, .byte = byte};
    return (int32_t)t->n_nodes++;
}

static int32_t find_child(const tok_trie *t, int32_t node, uint8_t byte) {
    for (int32_t c = t->nodes[node].first_child; c >= 0; c = t->nodes[c].next_sibling)
        if (t->nodes[c].byte == byte) return c;
    return -1;
}

qvlm_status qvlm_tok_trie_add(tok_trie *t, const uint8_t *p, size_t n, int32_t added_idx,
                              qvlm_error *err) {
    if (n == 0) return QVLM_OK; /* an empty pattern would match everywhere; HF skips it too */
    int32_t node = t->root[p[0]];
    if (node < 0) {
        if ((node = new_node(t, p[0], err)) < 0) return err ? err->code : QVLM_E_NOMEM;
        t->root[p[0]] = node;
    }
    for (size_t i = 1; i < n; i++) {
        int32_t c = find_child(t, node, p[i]);
        if (c < 0) {
            if ((c = new_node(t, p[i], err)) < 0) return err ? err->code : QVLM_E_NOMEM;
            t->nodes[c].next_sibling = t->nodes[node].first_child;
            t->nodes[node].first_child = c;
        }
        node = c;
    }
    if (t->nodes[node].added_idx < 0) t->nodes[node].added_idx = added_idx;
    t->n_patterns++;
    return QVLM_OK;
}

/* Longest pattern starting at s[i]; returns its end (> i) and *added_idx, or i if none. */
static size_t longest_at(const tok_trie *t, const uint8_t *s, size_t n, size_t i, int32_t *added_idx) {
    size_t best = i;
    int32_t node = t->root[s[i]];
    for (size_t j = i + 1; node >= 0; j++) {
        if (t->nodes[node].added_idx >= 0) best = j, *added_idx = t->nodes[node].added_idx;
        if (j == n) break;
        node = find_child(t, node, s[j]);
    }
    return best;
}

static qvlm_status segs_push(tok_segs *sg, size_t start, size_t end, int32_t id, qvlm_error *err) {
    if (sg->n == sg->cap) {
        size_t cap = sg->cap ? 2 * sg->cap : 16;
        tok_seg *v = realloc(sg->v, cap * sizeof(*v));
        if (!v) return qvlm_errorf(err, QVLM_E_NOMEM, "encode: out of memory");
        sg->v = v;
        sg->cap = cap;
    }
    sg->v[sg->n++] = (tok_seg){.start = start, .end = end, .id = id};
    return QVLM_OK;
}

static size_t prev_char(const uint8_t *s, size_t i) {
    do i--;
    while (i > 0 && (s[i] & 0xC0) == 0x80);
    return i;
}

/* single_word: not glued to a word character on either side. */
static bool stands_alone(const qvlm_tokenizer *tok, pcre2_match_data *md, const uint8_t *s,
                         size_t n, size_t start, size_t stop) {
    if (start > 0 && qvlm_tok_char_is(tok->word_re, md, s, start, prev_char(s, start))) return false;
    if (stop < n && qvlm_tok_char_is(tok->word_re, md, s, n, stop)) return false;
    return true;
}

static size_t strip_left(const qvlm_tokenizer *tok, pcre2_match_data *md, const uint8_t *s, size_t start) {
    while (start > 0) {
        size_t p = prev_char(s, start);
        if (!qvlm_tok_char_is(tok->space_re, md, s, start, p)) break;
        start = p;
    }
    return start;
}

static size_t strip_right(const qvlm_tokenizer *tok, pcre2_match_data *md, const uint8_t *s,
                          size_t n, size_t stop) {
    while (stop < n && qvlm_tok_char_is(tok->space_re, md, s, n, stop)) {
        int len = qvlm_tok_utf8_check(s + stop, n - stop);
        stop += len > 0 ? (size_t)len : 1;
    }
    return stop;
}

qvlm_status qvlm_tok_added_split(const qvlm_tokenizer *tok, const tok_trie *trie,
                                 pcre2_match_data *md, const uint8_t *s, size_t n,
                                 tok_segs *out, qvlm_error *err) {
    if (trie->n_patterns == 0) return n ? segs_push(out, 0, n, -1, err) : QVLM_OK;
    size_t cursor = 0; /* end of the text already assigned to a segment */
    size_t i = 0;      /* where the automaton resumes */
    qvlm_status rc = QVLM_OK;
    while (i < n && !rc) {
        int32_t idx = -1;
        size_t stop = longest_at(trie, s, n, i, &idx);
        if (stop == i) {
            i++;
            continue;
        }
        size_t start = i;
        i = stop;
        const tok_added *a = &tok->added[idx];
        if (a->single_word && !stands_alone(tok, md, s, n, start, stop)) continue;
        if (a->lstrip) {
            size_t ls = strip_left(tok, md, s, start);
            start = ls > cursor ? ls : cursor;
        }
        if (a->rstrip) stop = strip_right(tok, md, s, n, stop);
        if (cursor < start) rc = segs_push(out, cursor, start, -1, err);
        if (!rc) rc = segs_push(out, start, stop, a->id, err);
        cursor = stop;
    }
    if (!rc && cursor < n) rc = segs_push(out, cursor, n, -1, err);
    return rc;
}
