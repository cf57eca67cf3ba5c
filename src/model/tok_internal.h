/* tok_internal.h - the tokenizer's parts, shared by tokenizer.c and the tok_*.c files only.
 *
 *   tokenizer.c      loading tokenizer.json (every field validated), lookups, destroy
 *   tok_encode.c     the encode pipeline: added tokens -> normalizer -> pre-tokenizer -> BPE
 *   tok_added.c      matching added tokens (leftmost-longest, lstrip/rstrip/single_word)
 *   tok_regex.c      the Split regex: Oniguruma dialect -> PCRE2, and HF's split behaviours
 *   tok_bpe.c        merge table, BPE merging of one word, the shared word cache
 *   tok_bytelevel.c  GPT-2 byte alphabet, UTF-8 checks, lossy decode, streaming decode
 */
#ifndef QVLM_MODEL_TOK_INTERNAL_H
#define QVLM_MODEL_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/tokenizer.h"

#define TOK_MAX_STAGES 8          /* pre-tokenizer steps (Qwen uses 2) */
#define TOK_MAX_NORMALIZERS 8     /* normalizer steps (Qwen uses 1) */
#define TOK_MAX_ADDED_BYTES 4096  /* longest added token content accepted */
#define TOK_MAX_ADDED_TOTAL_BYTES (1 << 24) /* all added tokens together (trie memory) */
#define TOK_MAX_PATTERN_BYTES (1 << 16)     /* a Split regex (Qwen's is ~150 bytes) */

/* ---- token table ------------------------------------------------------------------------ */

enum {
    TOK_F_PRESENT = 1, /* some token has this id */
    TOK_F_MODEL = 2,   /* it is in model.vocab */
    TOK_F_ADDED = 4,   /* it is in added_tokens */
    TOK_F_SPECIAL = 8, /* added token with "special": true */
};

typedef struct tok_entry {
    uint32_t raw_off; /* into tok->strs: the token as written in the file, NUL-terminated */
    uint32_t raw_len;
    uint32_t dec_off; /* into tok->dec: the bytes the ByteLevel decoder gives for it */
    uint32_t dec_len;
    uint8_t flags; /* TOK_F_* */
} tok_entry;

/* Open-addressing map from a token string to its id; keys are the entries' raw strings. */
typedef struct tok_strmap {
    int32_t *slots; /* [mask + 1] id, or -1 for empty */
    uint32_t mask;
} tok_strmap;

/* ---- BPE merges ------------------------------------------------------------------------- */

typedef struct tok_merge {
    uint64_t pair; /* (left id << 32) | right id; TOK_MERGE_EMPTY when the slot is free */
    uint32_t rank; /* position in model.merges: lower merges first */
    int32_t new_id;
} tok_merge;
#define TOK_MERGE_EMPTY UINT64_MAX

typedef struct tok_cache tok_cache;

/* ---- pre-tokenizer ---------------------------------------------------------------------- */

typedef enum tok_split_behavior {
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_MERGED_WITH_PREVIOUS,
    TOK_SPLIT_MERGED_WITH_NEXT,
    TOK_SPLIT_CONTIGUOUS,
} tok_split_behavior;

typedef struct tok_stage {
    pcre2_code *re; /* NULL: ByteLevel without its regex */
    tok_split_behavior behavior;
    bool invert;
    bool byte_level;       /* the final ByteLevel step */
    bool add_prefix_space; /* ByteLevel: prepend ' ' to each piece that lacks one */
} tok_stage;

/* ---- added tokens ----------------------------------------------------------------------- */

typedef struct tok_added {
    int32_t id;
    bool single_word, lstrip, rstrip, normalized, special;
} tok_added;

typedef struct tok_trie_node {
    int32_t first_child;  /* -1: none */
    int32_t next_sibling; /* -1: none */
    int32_t added_idx;    /* index into tok->added of the pattern ending here, -1: none */
    uint8_t byte;
} tok_trie_node;

/* A byte trie of added-token patterns; a walk from each position gives HF's
 * aho-corasick MatchKind::LeftmostLongest result. */
typedef struct tok_trie {
    tok_trie_node *nodes; /* [n_nodes] */
    size_t n_nodes, cap_nodes;
    int32_t root[256]; /* first node for each first byte, -1: none */
    size_t n_patterns;
} tok_trie;

/* ---- the tokenizer ---------------------------------------------------------------------- */

struct qvlm_tokenizer {
    char *name; /* file name for messages */

    char *strs; /* raw token strings, each NUL-terminated */
    size_t n_strs_bytes;
    uint8_t *dec; /* decoded token bytes */
    size_t n_dec_bytes;
    tok_entry *entries; /* [n_ids] indexed by id */
    int32_t n_ids;      /* one past the largest id */
    tok_strmap vocab_map; /* model.vocab only: what BPE sees */
    tok_strmap added_map; /* added_tokens contents */

    tok_merge *merges; /* [merge_mask + 1] */
    uint64_t merge_mask;
    int32_t byte_id[256];        /* id of each byte's byte-level character, -1 if absent */
    int32_t fallback_id[256][2]; /* byte_fallback: "<0xNN>" ids for the character's bytes */
    uint8_t n_fallback[256];     /* 0: no complete fallback for this byte */
    int32_t unk_id;              /* -1: no unk_token */
    bool fuse_unk, byte_fallback, ignore_merges;

    int norm_opts[TOK_MAX_NORMALIZERS]; /* utf8proc option sets, applied in order */
    int n_norm;
    uint8_t *nfc_inert; /* bitmap over [0, TOK_NFC_TABLE_CPS): NFC leaves these alone; NULL
                           when no step is NFC */

    tok_stage stages[TOK_MAX_STAGES];
    int n_stages;
    pcre2_match_context *mctx; /* match limits, shared read-only by all threads */

    tok_added *added; /* [n_added] in file order */
    size_t n_added;
    tok_trie raw_trie;  /* added tokens with normalized == false, matched on raw text */
    tok_trie norm_trie; /* the others, normalised, matched on normalised text */
    pcre2_code *word_re;  /* Rust regex \w: single_word's notion of a word character */
    pcre2_code *space_re; /* Rust char::is_whitespace: lstrip / rstrip */

    tok_cache *cache;
};

/* ---- tok_bytelevel.c -------------------------------------------------------------------- */

/* GPT-2's bytes_to_unicode: the code point that stands for byte b. */
uint32_t qvlm_tok_byte_char(uint8_t b);
/* The byte a code point stands for, or -1 if it is not in the byte-level alphabet. */
int qvlm_tok_char_byte(uint32_t cp);
/* Encode cp as UTF-8 into out (4 bytes room); returns the length. */
size_t qvlm_tok_utf8_put(uint32_t cp, char *out);
/* Length of the first character of s[0..n): > 0 if valid, -(length of the maximal ill-formed
 * subpart) if invalid, 0 if s is a valid but incomplete prefix of a character (or n == 0). */
int qvlm_tok_utf8_check(const uint8_t *s, size_t n);
/* Offset of the first ill-formed byte of s[0..n), or n if s is valid UTF-8. */
size_t qvlm_tok_utf8_valid_prefix(const uint8_t *s, size_t n);
/* Convert in[0..n) to valid UTF-8 in out (room for 3 * n bytes), each maximal ill-formed
 * subpart replaced by U+FFFD. If !final, an incomplete character at the end is not consumed.
 * Returns the bytes of `in` consumed; *n_out gets the bytes written. */
size_t qvlm_tok_utf8_lossy(const uint8_t *in, size_t n, bool final, char *out, size_t *n_out);
/* The ByteLevel decoder's bytes for one raw token string (written to out, room for len bytes);
 * returns their count. */
size_t qvlm_tok_bytelevel_decode(const char *raw, size_t len, uint8_t *out);

/* ---- tok_bpe.c -------------------------------------------------------------------------- */

uint64_t qvlm_tok_hash(const void *p, size_t n);
/* Map operations. Keys are compared against tok->entries / tok->strs. */
qvlm_status qvlm_tok_strmap_init(tok_strmap *m, size_t n_keys, qvlm_error *err);
void qvlm_tok_strmap_free(tok_strmap *m);
int32_t qvlm_tok_strmap_get(const qvlm_tokenizer *tok, const tok_strmap *m, const char *key,
                            size_t len);
/* Insert id (its key is entries[id]'s raw string); returns the id already there for that
 * key, or -1 if it was new. */
int32_t qvlm_tok_strmap_put(const qvlm_tokenizer *tok, tok_strmap *m, int32_t id);

qvlm_status qvlm_tok_merges_init(qvlm_tokenizer *tok, size_t n_merges, qvlm_error *err);
/* Record merge (left, right) -> new_id at `rank`; a later rank for the same pair replaces
 * an earlier one, as HF's HashMap collect does. */
void qvlm_tok_merges_put(qvlm_tokenizer *tok, int32_t left, int32_t right, uint32_t rank,
                         int32_t new_id);

qvlm_status qvlm_tok_cache_create(tok_cache **out, qvlm_error *err);
void qvlm_tok_cache_destroy(tok_cache *c);

/* Growable id list used while encoding. */
typedef struct tok_ids {
    int32_t *v;
    size_t n, cap;
} tok_ids;
qvlm_status qvlm_tok_ids_push(tok_ids *ids, int32_t id, qvlm_error *err);

/* Per-call scratch for BPE (one per encode call, so calls never share it). */
typedef struct tok_bpe_scratch {
    void *syms, *heap;
    size_t cap_syms, cap_heap;
    char *mapped; /* byte-level form of a word, for ignore_merges */
    size_t cap_mapped;
} tok_bpe_scratch;
void qvlm_tok_bpe_scratch_free(tok_bpe_scratch *s);

/* BPE-encode one pre-tokenized word (raw bytes, before byte-level mapping) and append its
 * ids. Uses and fills the shared cache. */
qvlm_status qvlm_tok_bpe_word(const qvlm_tokenizer *tok, tok_bpe_scratch *sc, const uint8_t *w,
                              size_t n, tok_ids *out, qvlm_error *err);

/* ---- tok_regex.c ------------------------------------------------------------------------ */

/* Compile a Split pattern. Regex patterns are written for Oniguruma (what HF uses); the few
 * constructs whose meaning differs in PCRE2 are rewritten or refused. `where` names the
 * field in messages. */
qvlm_status qvlm_tok_regex_compile(const char *pattern, size_t len, bool literal,
                                   const char *where, pcre2_code **out, qvlm_error *err);

/* One piece of a split: [start, end) of the subject. */
typedef struct tok_span {
    size_t start, end;
    bool is_match;
} tok_span;
typedef struct tok_spans {
    tok_span *v;
    size_t n, cap;
} tok_spans;

/* Split s[0..n) like HF NormalizedString::split(pattern, behavior): *out gets the pieces to
 * keep, in order, empty ones dropped. md must come from pcre2_match_data_create. */
qvlm_status qvlm_tok_regex_split(const tok_stage *st, const pcre2_match_context *mctx,
                                 pcre2_match_data *md, const uint8_t *s, size_t n,
                                 tok_spans *out, qvlm_error *err);

/* Does the single character at s[off..) belong to the class `re` (anchored match)? */
bool qvlm_tok_char_is(const pcre2_code *re, pcre2_match_data *md, const uint8_t *s, size_t n,
                      size_t off);

/* ---- tok_encode.c ----------------------------------------------------------------------- */

#define TOK_NFC_TABLE_CPS 0x30000 /* planes 0-2 */
#define TOK_UTF8PROC_NFC (UTF8PROC_STABLE | UTF8PROC_COMPOSE)

/* Build tok->nfc_inert (see tok_encode.c). */
qvlm_status qvlm_tok_nfc_table_build(qvlm_tokenizer *tok, qvlm_error *err);

/* Apply the normalizer to s[0..n) (valid UTF-8). *out is s itself when nothing changes
 * (*owned false), else a fresh buffer the caller frees (*owned true). */
qvlm_status qvlm_tok_normalize(const qvlm_tokenizer *tok, const uint8_t *s, size_t n,
                               uint8_t **out, size_t *out_n, bool *owned, qvlm_error *err);

/* ---- tok_added.c ------------------------------------------------------------------------ */

void qvlm_tok_trie_init(tok_trie *t);
void qvlm_tok_trie_free(tok_trie *t);
/* Add pattern p[0..n) for added token added_idx. An identical pattern already present keeps
 * its first token (aho-corasick reports the lowest pattern index). */
qvlm_status qvlm_tok_trie_add(tok_trie *t, const uint8_t *p, size_t n, int32_t added_idx,
                              qvlm_error *err);

/* One piece of text after added-token extraction: either a token, or text to process. */
typedef struct tok_seg {
    size_t start, end;
    int32_t id; /* -1: text */
} tok_seg;
typedef struct tok_segs {
    tok_seg *v;
    size_t n, cap;
} tok_segs;

/* HF AddedVocabulary::find_matches on s[0..n): appends segments covering s to *out. */
qvlm_status qvlm_tok_added_split(const qvlm_tokenizer *tok, const tok_trie *trie,
                                 pcre2_match_data *md, const uint8_t *s, size_t n,
                                 tok_segs *out, qvlm_error *err);

#endif /* QVLM_MODEL_TOK_INTERNAL_H */
