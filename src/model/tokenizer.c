/* tokenizer.c - loading tokenizer.json into a qvlm_tokenizer, and the lookups (see tokenizer.h;
 * qwen35-arch.md §1.5).
 *
 * Loading reads every section the pipeline depends on and refuses what it does not implement,
 * so a file is either tokenized exactly as HF tokenizers would, or not loaded at all. The file
 * is hostile until proven otherwise: every id is range-checked before it indexes anything, every
 * merge must name vocabulary tokens, and every message names the file and the field.
 *
 * Added-token ids: HF ignores the "id" written in added_tokens and assigns ids itself (the
 * vocabulary id when the content is a vocabulary token, else one past the largest added id, or
 * the vocabulary size). A file whose ids disagree would be tokenized with ids other than the
 * ones it shows, so it is refused instead.
 *
 * Invariants after a successful load: entries[id] is PRESENT for every id either map yields;
 * merges only produce ids of model tokens; all strings are valid UTF-8 (jansson checks).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/fileio.h"
#include "core/json.h"
#include "model/tok_internal.h"

#define MAX_MERGES ((size_t)1 << 22) /* 16x the largest real tokenizer */
#define MATCH_LIMIT 10000000 /* PCRE2 steps per regex match: bounds a pathological pattern */

/* The GPT-2 pre-tokenizer regex ByteLevel runs when its use_regex is true (HF byte_level.rs). */
static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

typedef struct loader {
    qvlm_tokenizer *tok;
    const char *name;
    qvlm_error *err;
    size_t n_vocab; /* entries in model.vocab: HF's model.get_vocab_size() */
} loader;

/* An added_tokens entry as read from the file. */
typedef struct added_in {
    int32_t id;
    const char *content;
    size_t len;
    tok_added flags;
} added_in;

/* A token for a message: at most 60 bytes, control bytes shown as '?'. */
static const char *show(char buf[64], const char *s, size_t n) {
    size_t k = 0;
    for (; k < n && k < 60; k++) buf[k] = (unsigned char)s[k] < 0x20 ? '?' : s[k];
    if (k < n) { /* cut: end on a whole character, then mark the cut */
        while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
        buf[k++] = '~';
    }
    buf[k] = '\0';
    return buf;
}

static const char *type_of(const json_t *obj) {
    json_t *t = json_object_get(obj, "type");
    return json_is_string(t) ? json_string_value(t) : NULL;
}

/* ---- normalizer --------------------------------------------------------------------------- */

static qvlm_status add_normalizer(loader *L, json_t *n, const char *where, int depth) {
    if (!json_is_object(n))
        return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: %s is %s (must be an object)", L->name, where,
                           qvlm_json_type_name(n));
    const char *type = type_of(n);
    if (!type)
        return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: %s.type is missing", L->name, where);
    static const struct {
        const char *name;
        int opts;
    } forms[] = {
        {"NFC", TOK_UTF8PROC_NFC},
        {"NFD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE},
        {"NFKC", UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT},
        {"NFKD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT},
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        if (strcmp(type, forms[i].name) != 0) continue;
        if (L->tok->n_norm == TOK_MAX_NORMALIZERS)
            return qvlm_errorf(L->err, QVLM_E_LIMIT, "%s: %s: more than %d normalizers", L->name,
                               where, TOK_MAX_NORMALIZERS);
        L->tok->norm_opts[L->tok->n_norm++] = forms[i].opts;
        return QVLM_OK;
    }
    if (strcmp(type, "Sequence") != 0 || depth > 4)
        return qvlm_errorf(L->err, QVLM_E_UNSUPPORTED,
                           "%s: %s.type = \"%s\" is not supported (NFC, NFD, NFKC, NFKD, Sequence)",
                           L->name, where, type);
    json_t *list = json_object_get(n, "normalizers");
    if (!json_is_array(list))
        return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: %s.normalizers is %s (must be an array)",
                           L->name, where, qvlm_json_type_name(list));
    for (size_t i = 0; i < json_array_size(list); i++) {
        char sub[200];
        snprintf(sub, sizeof(sub), "%s.normalizers[%zu]", where, i);
        qvlm_status rc = add_normalizer(L, json_array_get(list, i), sub, depth + 1);
        if (rc) return rc;
    }
    return QVLM_OK;
}

/* ---- pre-tokenizer ------------------------------------------------------------------------ */

static qvlm_status add_stage(loader *L, const char *where, tok_stage **out) {
    qvlm_tokenizer *tok = L->tok;
    if (tok->n_stages > 0 && tok->stages[tok->n_stages - 1].byte_level)
        return qvlm_errorf(L->err, QVLM_E_UNSUPPORTED,
                           "%s: %s comes after ByteLevel; only Split steps before one final "
                           "ByteLevel are supported", L->name, where);
    if (tok->n_stages == TOK_MAX_STAGES)
        return qvlm_errorf(L->err, QVLM_E_LIMIT, "%s: %s: more than %d pre-tokenizer steps",
                           L->name, where, TOK_MAX_STAGES);
    *out = &tok->stages[tok->n_stages++];
    **out = (tok_stage){.behavior = TOK_SPLIT_ISOLATED};
    return QVLM_OK;
}

static qvlm_status parse_behavior(loader *L, json_t *p, const char *where, tok_split_behavior *out) {
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                  "Contiguous"};
    static const tok_split_behavior values[] = {TOK_SPLIT_REMOVED, TOK_SPLIT_ISOLATED,
                                                TOK_SPLIT_MERGED_WITH_PREVIOUS,
                                                TOK_SPLIT_MERGED_WITH_NEXT, TOK_SPLIT_CONTIGUOUS};
    char w[240];
    snprintf(w, sizeof(w), "%s: %s", L->name, where);
    const char *b;
    qvlm_status rc = qvlm_json_str(p, "behavior", w, &b, L->err);
    if (rc) return rc;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(b, names[i]) == 0) return *out = values[i], QVLM_OK;
    return qvlm_errorf(L->err, QVLM_E_UNSUPPORTED, "%s: %s.behavior = \"%s\" is not a known behaviour",
                       L->name, where, b);
}

static qvlm_status add_split(loader *L, json_t *p, const char *where) {
    tok_stage *st;
    qvlm_status rc = add_stage(L, where, &st);
    if (rc) return rc;
    char w[240];
    snprintf(w, sizeof(w), "%s: %s", L->name, where);
    if ((rc = parse_behavior(L, p, where, &st->behavior))) return rc;
    if ((rc = qvlm_json_bool_opt(p, "invert", w, false, &st->invert, L->err))) return rc;
    json_t *pat = json_object_get(p, "pattern");
    json_t *re = json_is_object(pat) ? json_object_get(pat, "Regex") : NULL;
    json_t *lit = json_is_object(pat) ? json_object_get(pat, "String") : NULL;
    json_t *v = re ? re : lit;
    if (!json_is_string(v))
        return qvlm_errorf(L->err, QVLM_E_CORRUPT,
                           "%s: %s.pattern must be {\"Regex\": string} or {\"String\": string}",
                           L->name, where);
    char field[240];
    snprintf(field, sizeof(field), "%s: %s.pattern.%s", L->name, where, re ? "Regex" : "String");
    return qvlm_tok_regex_compile(json_string_value(v), json_string_length(v), !re, field, &st->re,
                                  L->err);
}

static qvlm_status add_byte_level(loader *L, json_t *p, const char *where) {
    tok_stage *st;
    qvlm_status rc = add_stage(L, where, &st);
    if (rc) return rc;
    char w[240];
    snprintf(w, sizeof(w), "%s: %s", L->name, where);
    bool use_regex;
    st->byte_level = true;
    /* Defaults are HF's ByteLevel::default(). */
    if ((rc = qvlm_json_bool_opt(p, "add_prefix_space", w, true, &st->add_prefix_space, L->err)) ||
        (rc = qvlm_json_bool_opt(p, "use_regex", w, true, &use_regex, L->err)))
        return rc;
    if (!use_regex) return QVLM_OK;
    char field[240];
    snprintf(field, sizeof(field), "%s: %s (built-in GPT-2 regex)", L->name, where);
    return qvlm_tok_regex_compile(GPT2_REGEX, sizeof(GPT2_REGEX) - 1, false, field, &st->re, L->err);
}

static qvlm_status add_pre_tokenizer(loader *L, json_t *p, const char *where, int depth) {
    if (!json_is_object(p))
        return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: %s is %s (must be an object)", L->name, where,
                           qvlm_json_type_name(p));
    const char *type = type_of(p);
    if (!type) return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: %s.type is missing", L->name, where);
    if (strcmp(type, "Split") == 0) return add_split(L, p, where);
    if (strcmp(type, "ByteLevel") == 0) return add_byte_level(L, p, where);
    if (strcmp(type, "Sequence") != 0 || depth > 4)
        return qvlm_errorf(L->err, QVLM_E_UNSUPPORTED,
                           "%s: %s.type = \"%s\" is not supported (Split, ByteLevel, Sequence)",
                           L->name, where, type);
    json_t *list = json_object_get(p, "pretokenizers");
    if (!json_is_array(list))
        return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: %s.pretokenizers is %s (must be an array)",
                           L->name, where, qvlm_json_type_name(list));
    for (size_t i = 0; i < json_array_size(list); i++) {
        char sub[200];
        snprintf(sub, sizeof(sub), "%s.pretokenizers[%zu]", where, i);
        qvlm_status rc = add_pre_tokenizer(L, json_array_get(list, i), sub, depth + 1);
        if (rc) return rc;
    }
    return QVLM_OK;
}

static qvlm_status load_pre_tokenizer(loader *L, json_t *root) {
    json_t *p = json_object_get(root, "pre_tokenizer");
    if (!p || json_is_null(p))
        return qvlm_errorf(L->err, QVLM_E_UNSUPPORTED,
                           "%s: pre_tokenizer is missing (only byte-level BPE is supported)", L->name);
    qvlm_status rc = add_pre_tokenizer(L, p, "pre_tokenizer", 0);
    if (rc) return rc;
    const qvlm_tokenizer *tok = L->tok;
    if (tok->n_stages == 0 || !tok->stages[tok->n_stages - 1].byte_level)
        return qvlm_errorf(L->err, QVLM_E_UNSUPPORTED,
                           "%s: pre_tokenizer has no ByteLevel step (only byte-level BPE is supported)",
                           L->name);
    return QVLM_OK;
}

/* ---- decoder, top level -------------------------------------------------------------------- */

static qvlm_status check_decoder(loader *L, json_t *root) {
    json_t *d = json_object_get(root, "decoder");
    if (json_is_object(d) && type_of(d) && strcmp(type_of(d), "Sequence") == 0) {
        json_t *list = json_object_get(d, "decoders");
        if (json_is_array(list) && json_array_size(list) == 1) d = json_array_get(list, 0);
    }
    if (!d || json_is_null(d))
        return qvlm_errorf(L->err, QVLM_E_UNSUPPORTED, "%s: decoder is missing (ByteLevel is required)",
                           L->name);
    if (!json_is_object(d) || !type_of(d) || strcmp(type_of(d), "ByteLevel") != 0)
        return qvlm_errorf(L->err, QVLM_E_UNSUPPORTED,
                           "%s: decoder.type = \"%s\" is not supported (ByteLevel)", L->name,
                           json_is_object(d) && type_of(d) ? type_of(d) : qvlm_json_type_name(d));
    return QVLM_OK;
}

static qvlm_status check_top(loader *L, json_t *root) {
    static const char *must_be_null[] = {"truncation", "padding"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(root, must_be_null[i]);
        if (v && !json_is_null(v))
            return qvlm_errorf(L->err, QVLM_E_UNSUPPORTED,
                               "%s: %s is set; encode never truncates or pads (it must be null)",
                               L->name, must_be_null[i]);
    }
    json_t *n = json_object_get(root, "normalizer");
    if (!n || json_is_null(n)) return QVLM_OK;
    qvlm_status rc = add_normalizer(L, n, "normalizer", 0);
    for (int k = 0; k < L->tok->n_norm && !rc; k++)
        if (L->tok->norm_opts[k] == TOK_UTF8PROC_NFC) return qvlm_tok_nfc_table_build(L->tok, L->err);
    return rc;
}

/* ---- model: options ------------------------------------------------------------------------ */

static qvlm_status check_model_options(loader *L, json_t *m) {
    char w[200];
    snprintf(w, sizeof(w), "%s: model", L->name);
    const char *type, *pfx, *sfx;
    double dropout;
    qvlm_status rc;
    if ((rc = qvlm_json_str_opt(m, "type", w, "BPE", &type, L->err)) ||
        (rc = qvlm_json_num_opt(m, "dropout", w, 0.0, 1.0, 0.0, &dropout, L->err)) ||
        (rc = qvlm_json_str_opt(m, "continuing_subword_prefix", w, "", &pfx, L->err)) ||
        (rc = qvlm_json_str_opt(m, "end_of_word_suffix", w, "", &sfx, L->err)) ||
        (rc = qvlm_json_bool_opt(m, "fuse_unk", w, false, &L->tok->fuse_unk, L->err)) ||
        (rc = qvlm_json_bool_opt(m, "byte_fallback", w, false, &L->tok->byte_fallback, L->err)) ||
        (rc = qvlm_json_bool_opt(m, "ignore_merges", w, false, &L->tok->ignore_merges, L->err)))
        return rc;
    if (strcmp(type, "BPE") != 0)
        return qvlm_errorf(L->err, QVLM_E_UNSUPPORTED, "%s: model.type = \"%s\" is not supported (BPE)",
                           L->name, type);
    if (dropout != 0.0)
        return qvlm_errorf(L->err, QVLM_E_UNSUPPORTED,
                           "%s: model.dropout = %g is not supported (random merges)", L->name, dropout);
    if (*pfx || *sfx)
        return qvlm_errorf(L->err, QVLM_E_UNSUPPORTED,
                           "%s: model.%s is not supported (must be empty or null)", L->name,
                           *pfx ? "continuing_subword_prefix" : "end_of_word_suffix");
    return QVLM_OK;
}

/* ---- vocabulary and added tokens: sizes ----------------------------------------------------- */

static qvlm_status scan_vocab(loader *L, json_t *vocab, int32_t *max_id, size_t *n_bytes) {
    char b[64];
    for (void *it = json_object_iter(vocab); it; it = json_object_iter_next(vocab, it)) {
        const char *key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        json_t *v = json_object_iter_value(it);
        if (!json_is_integer(v))
            return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: model.vocab[\"%s\"] is %s (must be an integer id)",
                               L->name, show(b, key, klen), qvlm_json_type_name(v));
        json_int_t id = json_integer_value(v);
        if (id < 0 || id > QVLM_TOKENIZER_MAX_ID)
            return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: model.vocab[\"%s\"] = %lld (must be in 0..%d)",
                               L->name, show(b, key, klen), (long long)id, QVLM_TOKENIZER_MAX_ID);
        if (id > *max_id) *max_id = (int32_t)id;
        *n_bytes += klen + 1;
        L->n_vocab++;
    }
    return QVLM_OK;
}

static qvlm_status read_added(loader *L, json_t *a, size_t i, added_in *out) {
    char w[200];
    snprintf(w, sizeof(w), "%s: added_tokens[%zu]", L->name, i);
    if (!json_is_object(a))
        return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s is %s (must be an object)", w, qvlm_json_type_name(a));
    int64_t id;
    const char *content;
    tok_added *f = &out->flags;
    qvlm_status rc;
    /* Flag defaults are HF's AddedToken::default(). */
    if ((rc = qvlm_json_int(a, "id", w, 0, QVLM_TOKENIZER_MAX_ID, &id, L->err)) ||
        (rc = qvlm_json_str(a, "content", w, &content, L->err)) ||
        (rc = qvlm_json_bool_opt(a, "single_word", w, false, &f->single_word, L->err)) ||
        (rc = qvlm_json_bool_opt(a, "lstrip", w, false, &f->lstrip, L->err)) ||
        (rc = qvlm_json_bool_opt(a, "rstrip", w, false, &f->rstrip, L->err)) ||
        (rc = qvlm_json_bool_opt(a, "normalized", w, true, &f->normalized, L->err)) ||
        (rc = qvlm_json_bool_opt(a, "special", w, false, &f->special, L->err)))
        return rc;
    out->len = json_string_length(json_object_get(a, "content"));
    if (out->len == 0) return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s.content is empty", w);
    if (out->len > TOK_MAX_ADDED_BYTES)
        return qvlm_errorf(L->err, QVLM_E_LIMIT, "%s.content is %zu bytes (limit %d)", w, out->len,
                           TOK_MAX_ADDED_BYTES);
    out->id = f->id = (int32_t)id;
    out->content = content;
    return QVLM_OK;
}

static qvlm_status scan_added(loader *L, json_t *list, added_in *in, int32_t *max_id, size_t *n_bytes) {
    size_t total = 0;
    for (size_t i = 0; i < json_array_size(list); i++) {
        qvlm_status rc = read_added(L, json_array_get(list, i), i, &in[i]);
        if (rc) return rc;
        if (in[i].id > *max_id) *max_id = in[i].id;
        *n_bytes += in[i].len + 1;
        if ((total += in[i].len) > TOK_MAX_ADDED_TOTAL_BYTES)
            return qvlm_errorf(L->err, QVLM_E_LIMIT, "%s: added_tokens: contents exceed %d bytes in all",
                               L->name, TOK_MAX_ADDED_TOTAL_BYTES);
    }
    return QVLM_OK;
}

/* ---- vocabulary and merges ------------------------------------------------------------------ */

static void put_string(qvlm_tokenizer *tok, tok_entry *e, const char *s, size_t n) {
    e->raw_off = (uint32_t)tok->n_strs_bytes;
    e->raw_len = (uint32_t)n;
    memcpy(tok->strs + tok->n_strs_bytes, s, n);
    tok->strs[tok->n_strs_bytes + n] = '\0';
    tok->n_strs_bytes += n + 1;
}

static qvlm_status fill_vocab(loader *L, json_t *vocab) {
    qvlm_tokenizer *tok = L->tok;
    char b1[64], b2[64];
    qvlm_status rc = qvlm_tok_strmap_init(&tok->vocab_map, L->n_vocab, L->err);
    if (rc) return rc;
    for (void *it = json_object_iter(vocab); it; it = json_object_iter_next(vocab, it)) {
        const char *key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        int32_t id = (int32_t)json_integer_value(json_object_iter_value(it));
        tok_entry *e = &tok->entries[id];
        if (e->flags & TOK_F_PRESENT)
            return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: model.vocab: id %d is given to both \"%s\" and \"%s\"",
                               L->name, (int)id, show(b1, tok->strs + e->raw_off, e->raw_len),
                               show(b2, key, klen));
        put_string(tok, e, key, klen);
        e->flags = TOK_F_PRESENT | TOK_F_MODEL;
        if (qvlm_tok_strmap_put(tok, &tok->vocab_map, id) >= 0)
            return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: model.vocab: \"%s\" appears twice", L->name,
                               show(b1, key, klen));
    }
    return QVLM_OK;
}

static qvlm_status merge_token(loader *L, size_t i, const char *merge, const char *s, size_t n,
                               int32_t *id) {
    char b2[64];
    *id = qvlm_tok_strmap_get(L->tok, &L->tok->vocab_map, s, n);
    if (*id < 0)
        return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: model.merges[%zu]: \"%s\" names \"%s\", which is not in model.vocab",
                           L->name, i, merge, show(b2, s, n));
    return QVLM_OK;
}

/* One merge: the two parts of merges[i] -> (a, b) -> a+b. `buf` holds a+b (room for both). */
static qvlm_status add_merge(loader *L, size_t i, uint32_t rank, const char *a, size_t na,
                             const char *b, size_t nb, char *buf) {
    char shown[64], m[130];
    snprintf(m, sizeof(m), "%s", show(shown, a, na));
    snprintf(m + strlen(m), sizeof(m) - strlen(m), " %s", show(shown, b, nb));
    int32_t ia, ib, inew;
    qvlm_status rc;
    if ((rc = merge_token(L, i, m, a, na, &ia)) || (rc = merge_token(L, i, m, b, nb, &ib))) return rc;
    memcpy(buf, a, na);
    memcpy(buf + na, b, nb);
    if ((rc = merge_token(L, i, m, buf, na + nb, &inew))) return rc;
    qvlm_tok_merges_put(L->tok, ia, ib, rank, inew);
    return QVLM_OK;
}

/* Split merges[i] into its two tokens; *skip for HF's "#version" header lines. */
static qvlm_status merge_parts(loader *L, json_t *v, size_t i, bool legacy, const char **a,
                               size_t *na, const char **b, size_t *nb, bool *skip) {
    *skip = false;
    if (legacy) {
        if (!json_is_string(v))
            return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: model.merges[%zu] is %s (earlier merges are strings)",
                               L->name, i, qvlm_json_type_name(v));
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (n >= 8 && memcmp(s, "#version", 8) == 0) return *skip = true, QVLM_OK;
        const char *sp = memchr(s, ' ', n);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s)))
            return qvlm_errorf(L->err, QVLM_E_CORRUPT,
                               "%s: model.merges[%zu] is not two tokens separated by one space", L->name, i);
        *a = s, *na = (size_t)(sp - s), *b = sp + 1, *nb = n - *na - 1;
        return QVLM_OK;
    }
    if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_string(json_array_get(v, 0)) ||
        !json_is_string(json_array_get(v, 1)))
        return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: model.merges[%zu] must be a pair of strings",
                           L->name, i);
    *a = json_string_value(json_array_get(v, 0)), *na = json_string_length(json_array_get(v, 0));
    *b = json_string_value(json_array_get(v, 1)), *nb = json_string_length(json_array_get(v, 1));
    return QVLM_OK;
}

static qvlm_status load_merges(loader *L, json_t *merges) {
    size_t n = json_array_size(merges);
    if (n > MAX_MERGES)
        return qvlm_errorf(L->err, QVLM_E_LIMIT, "%s: model.merges has %zu entries (limit %zu)", L->name,
                           n, MAX_MERGES);
    qvlm_status rc = qvlm_tok_merges_init(L->tok, n, L->err);
    if (rc) return rc;
    bool legacy = n > 0 && json_is_string(json_array_get(merges, 0));
    char *buf = NULL;
    size_t cap = 0;
    uint32_t rank = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        bool skip;
        rc = merge_parts(L, json_array_get(merges, i), i, legacy, &a, &na, &b, &nb, &skip);
        if (rc || skip) continue;
        if (na + nb + 1 > cap) { /* +1: never a NULL buffer, even for two empty tokens */
            char *p = realloc(buf, na + nb + 1);
            if (!p) {
                rc = qvlm_errorf(L->err, QVLM_E_NOMEM, "%s: out of memory", L->name);
                break;
            }
            buf = p, cap = na + nb + 1;
        }
        rc = add_merge(L, i, rank++, a, na, b, nb, buf);
    }
    free(buf);
    return rc;
}

/* byte_id, fallback ids and unk_id: the model's view of single characters. */
static qvlm_status load_char_ids(loader *L, json_t *model) {
    qvlm_tokenizer *tok = L->tok;
    for (int byte = 0; byte < 256; byte++) {
        char c[4], name[8];
        size_t n = qvlm_tok_utf8_put(qvlm_tok_byte_char((uint8_t)byte), c);
        tok->byte_id[byte] = qvlm_tok_strmap_get(tok, &tok->vocab_map, c, n);
        tok->n_fallback[byte] = (uint8_t)n;
        for (size_t k = 0; k < n; k++) {
            snprintf(name, sizeof(name), "<0x%02X>", (unsigned char)c[k]);
            tok->fallback_id[byte][k] = qvlm_tok_strmap_get(tok, &tok->vocab_map, name, strlen(name));
            if (tok->fallback_id[byte][k] < 0) tok->n_fallback[byte] = 0;
        }
    }
    tok->unk_id = -1;
    json_t *unk = json_object_get(model, "unk_token");
    if (!unk || json_is_null(unk)) return QVLM_OK;
    char b[64];
    if (!json_is_string(unk))
        return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: model.unk_token is %s (must be a string)", L->name,
                           qvlm_json_type_name(unk));
    tok->unk_id = qvlm_tok_strmap_get(tok, &tok->vocab_map, json_string_value(unk), json_string_length(unk));
    if (tok->unk_id < 0)
        return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: model.unk_token \"%s\" is not in model.vocab",
                           L->name, show(b, json_string_value(unk), json_string_length(unk)));
    return QVLM_OK;
}

/* ---- added tokens ---------------------------------------------------------------------------- */

/* The id HF's AddedVocabulary::add_tokens gives the next added token. */
static int64_t hf_added_id(const loader *L, int32_t model_id, int32_t max_added) {
    int64_t vocab_size = (int64_t)L->n_vocab;
    if (model_id >= 0) return model_id;
    if (max_added < 0) return vocab_size;
    if (max_added >= vocab_size || vocab_size == 0) return (int64_t)max_added + 1;
    return vocab_size;
}

static qvlm_status fill_added(loader *L, const added_in *in, size_t n) {
    qvlm_tokenizer *tok = L->tok;
    char b1[64], b2[64];
    int32_t max_added = -1;
    for (size_t i = 0; i < n; i++) {
        const added_in *a = &in[i];
        int32_t prev = qvlm_tok_strmap_get(tok, &tok->added_map, a->content, a->len);
        if (prev >= 0)
            return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: added_tokens[%zu].content \"%s\" is already added (id %d)",
                               L->name, i, show(b1, a->content, a->len), (int)prev);
        int32_t model_id = qvlm_tok_strmap_get(tok, &tok->vocab_map, a->content, a->len);
        int64_t want = hf_added_id(L, model_id, max_added);
        if (a->id != want)
            return qvlm_errorf(L->err, QVLM_E_CORRUPT,
                               "%s: added_tokens[%zu].id = %d, but Hugging Face tokenizers gives \"%s\" id %lld "
                               "(added tokens must follow model.vocab in order)",
                               L->name, i, (int)a->id, show(b1, a->content, a->len), (long long)want);
        tok_entry *e = &tok->entries[a->id];
        if (model_id < 0) {
            if (e->flags & TOK_F_PRESENT)
                return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: added_tokens[%zu].id = %d is already model.vocab \"%s\"",
                                   L->name, i, (int)a->id, show(b2, tok->strs + e->raw_off, e->raw_len));
            put_string(tok, e, a->content, a->len);
            e->flags = TOK_F_PRESENT;
        }
        e->flags |= TOK_F_ADDED | (a->flags.special ? TOK_F_SPECIAL : 0);
        qvlm_tok_strmap_put(tok, &tok->added_map, a->id);
        tok->added[i] = a->flags;
        if (a->id > max_added) max_added = a->id;
    }
    tok->n_added = n;
    return QVLM_OK;
}

/* HF matches special tokens first, then the others, each in file order; identical patterns
 * resolve to the first. Normalized ones are matched in their normalised form. */
static qvlm_status build_tries(loader *L, const added_in *in, size_t n) {
    qvlm_tokenizer *tok = L->tok;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            if (in[i].flags.special != (pass == 0)) continue;
            const uint8_t *p = (const uint8_t *)in[i].content;
            if (!in[i].flags.normalized) {
                qvlm_status rc = qvlm_tok_trie_add(&tok->raw_trie, p, in[i].len, (int32_t)i, L->err);
                if (rc) return rc;
                continue;
            }
            uint8_t *np;
            size_t nn;
            bool owned;
            qvlm_status rc = qvlm_tok_normalize(tok, p, in[i].len, &np, &nn, &owned, L->err);
            if (!rc) rc = qvlm_tok_trie_add(&tok->norm_trie, np, nn, (int32_t)i, L->err);
            if (owned) free(np);
            if (rc) return qvlm_error_prefix(L->err, rc, "%s: added_tokens[%zu]", L->name, i);
        }
    }
    return QVLM_OK;
}

/* ---- assembling ------------------------------------------------------------------------------ */

static qvlm_status alloc_tables(loader *L, int32_t max_id, size_t n_bytes, size_t n_added) {
    qvlm_tokenizer *tok = L->tok;
    if (n_bytes >= UINT32_MAX)
        return qvlm_errorf(L->err, QVLM_E_LIMIT, "%s: token strings total %zu bytes", L->name, n_bytes);
    tok->n_ids = max_id + 1;
    tok->entries = calloc((size_t)tok->n_ids + 1, sizeof(*tok->entries));
    tok->strs = malloc(n_bytes + 1);
    tok->added = calloc(n_added + 1, sizeof(*tok->added));
    if (!tok->entries || !tok->strs || !tok->added)
        return qvlm_errorf(L->err, QVLM_E_NOMEM, "%s: cannot allocate tables for %d ids", L->name,
                           (int)tok->n_ids);
    return qvlm_tok_strmap_init(&tok->added_map, n_added, L->err);
}

/* The ByteLevel decoder's bytes for each id. HF (0.22+) decodes an added token with
 * "normalized": true from its normalizer output when that differs from its content
 * (AddedVocabulary::normalized_cache), so those are normalised first; `in` is the file's
 * added_tokens list. The arena gets room for every raw string plus those forms, since
 * decoding never lengthens a string. */
static qvlm_status build_decoded(loader *L, const added_in *in, size_t n_added) {
    qvlm_tokenizer *tok = L->tok;
    uint8_t **norm = calloc(n_added + 1, sizeof(*norm));
    size_t *n_norm = calloc(n_added + 1, sizeof(*n_norm)), room = tok->n_strs_bytes + 1;
    qvlm_status rc = norm && n_norm ? QVLM_OK : qvlm_errorf(L->err, QVLM_E_NOMEM, "%s: out of memory", L->name);
    for (size_t i = 0; i < n_added && !rc; i++) {
        bool owned = false;
        if (!in[i].flags.normalized || tok->n_norm == 0) continue;
        rc = qvlm_tok_normalize(tok, (const uint8_t *)in[i].content, in[i].len, &norm[i], &n_norm[i], &owned, L->err);
        if (!owned) norm[i] = NULL; /* unchanged: the raw string serves */
        if (norm[i]) room += n_norm[i];
    }
    if (!rc && !(tok->dec = malloc(room))) rc = qvlm_errorf(L->err, QVLM_E_NOMEM, "%s: out of memory", L->name);
    size_t k = 0;
    for (int32_t id = 0; !rc && id < tok->n_ids; id++) {
        tok_entry *e = &tok->entries[id];
        if (!(e->flags & TOK_F_PRESENT)) continue;
        e->dec_off = (uint32_t)k;
        e->dec_len = (uint32_t)qvlm_tok_bytelevel_decode(tok->strs + e->raw_off, e->raw_len, tok->dec + k);
        k += e->dec_len;
    }
    for (size_t i = 0; !rc && i < n_added; i++) {
        if (!norm[i]) continue;
        tok_entry *e = &tok->entries[in[i].id];
        e->dec_off = (uint32_t)k;
        e->dec_len = (uint32_t)qvlm_tok_bytelevel_decode((const char *)norm[i], n_norm[i], tok->dec + k);
        k += e->dec_len;
    }
    tok->n_dec_bytes = k;
    for (size_t i = 0; norm && i < n_added; i++) free(norm[i]);
    free(norm);
    free(n_norm);
    return rc;
}

static qvlm_status build_runtime(loader *L) {
    qvlm_tokenizer *tok = L->tok;
    /* Rust regex's \w and char::is_whitespace, which HF uses for single_word / lstrip / rstrip. */
    static const char word[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]";
    static const char space[] = "\\p{White_Space}";
    int code;
    PCRE2_SIZE off;
    tok->word_re = pcre2_compile((PCRE2_SPTR)word, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
    tok->space_re = pcre2_compile((PCRE2_SPTR)space, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
    tok->mctx = pcre2_match_context_create(NULL);
    if (!tok->word_re || !tok->space_re || !tok->mctx)
        return qvlm_errorf(L->err, QVLM_E_INTERNAL, "%s: cannot set up PCRE2 (needs 10.40+)", L->name);
    pcre2_set_match_limit(tok->mctx, MATCH_LIMIT);
    return qvlm_tok_cache_create(&tok->cache, L->err);
}

static qvlm_status get_model(loader *L, json_t *root, json_t **model, json_t **vocab, json_t **merges) {
    *model = json_object_get(root, "model");
    if (!json_is_object(*model))
        return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: model is %s (must be an object)", L->name,
                           qvlm_json_type_name(*model));
    *vocab = json_object_get(*model, "vocab");
    *merges = json_object_get(*model, "merges");
    if (!json_is_object(*vocab))
        return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: model.vocab is %s (must be an object)", L->name,
                           qvlm_json_type_name(*vocab));
    if (!json_is_array(*merges))
        return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: model.merges is %s (must be an array)", L->name,
                           qvlm_json_type_name(*merges));
    return check_model_options(L, *model);
}

static qvlm_status build(loader *L, json_t *root) {
    json_t *model = NULL, *vocab = NULL, *merges = NULL, *added = json_object_get(root, "added_tokens");
    qvlm_status rc;
    if ((rc = check_top(L, root)) || (rc = load_pre_tokenizer(L, root)) || (rc = check_decoder(L, root)) ||
        (rc = get_model(L, root, &model, &vocab, &merges)))
        return rc;
    if (added && !json_is_null(added) && !json_is_array(added))
        return qvlm_errorf(L->err, QVLM_E_CORRUPT, "%s: added_tokens is %s (must be an array)", L->name,
                           qvlm_json_type_name(added));
    size_t n_added = added ? json_array_size(added) : 0;
    added_in *in = calloc(n_added + 1, sizeof(*in));
    if (!in) return qvlm_errorf(L->err, QVLM_E_NOMEM, "%s: out of memory", L->name);
    int32_t max_id = -1;
    size_t n_bytes = 0;
    if (!(rc = scan_vocab(L, vocab, &max_id, &n_bytes)) && !(rc = scan_added(L, added, in, &max_id, &n_bytes)) &&
        !(rc = alloc_tables(L, max_id, n_bytes, n_added)) && !(rc = fill_vocab(L, vocab)) &&
        !(rc = load_merges(L, merges)) && !(rc = load_char_ids(L, model)) &&
        !(rc = fill_added(L, in, n_added)) && !(rc = build_tries(L, in, n_added)) &&
        !(rc = build_decoded(L, in, n_added)))
        rc = build_runtime(L);
    free(in);
    return rc;
}

/* ---- public ---------------------------------------------------------------------------------- */

qvlm_status qvlm_tokenizer_load_buffer(const char *json, size_t n_bytes, const char *name,
                                       qvlm_tokenizer **out, qvlm_error *err) {
    *out = NULL;
    if (!name) name = "tokenizer.json";
    if (n_bytes > QVLM_TOKENIZER_MAX_FILE_BYTES)
        return qvlm_errorf(err, QVLM_E_LIMIT, "%s: %zu bytes is over the limit of %zu", name, n_bytes,
                           QVLM_TOKENIZER_MAX_FILE_BYTES);
    json_t *root;
    qvlm_status rc = qvlm_json_parse(json, n_bytes, name, &root, err);
    if (rc) return rc;
    qvlm_tokenizer *tok = calloc(1, sizeof(*tok));
    if (tok) tok->name = strdup(name);
    if (!tok || !tok->name) {
        free(tok);
        json_decref(root);
        return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", name);
    }
    qvlm_tok_trie_init(&tok->raw_trie);
    qvlm_tok_trie_init(&tok->norm_trie);
    loader L = {.tok = tok, .name = tok->name, .err = err};
    if (!json_is_object(root))
        rc = qvlm_errorf(err, QVLM_E_CORRUPT, "%s: top level is %s (must be an object)", name,
                         qvlm_json_type_name(root));
    else
        rc = build(&L, root);
    json_decref(root);
    if (rc) {
        qvlm_tokenizer_destroy(tok);
        return rc;
    }
    *out = tok;
    return QVLM_OK;
}

qvlm_status qvlm_tokenizer_load(const char *path, qvlm_tokenizer **out, qvlm_error *err) {
    *out = NULL;
    char *buf;
    size_t n;
    qvlm_status rc = qvlm_file_read(path, QVLM_TOKENIZER_MAX_FILE_BYTES, &buf, &n, err);
    if (rc) return rc;
    rc = qvlm_tokenizer_load_buffer(buf, n, path, out, err);
    free(buf);
    return rc;
}

void qvlm_tokenizer_destroy(qvlm_tokenizer *tok) {
    if (!tok) return;
    for (int k = 0; k < tok->n_stages; k++) pcre2_code_free(tok->stages[k].re);
    pcre2_code_free(tok->word_re);
    pcre2_code_free(tok->space_re);
    pcre2_match_context_free(tok->mctx);
    qvlm_tok_trie_free(&tok->raw_trie);
    qvlm_tok_trie_free(&tok->norm_trie);
    qvlm_tok_strmap_free(&tok->vocab_map);
    qvlm_tok_strmap_free(&tok->added_map);
    qvlm_tok_cache_destroy(tok->cache);
    free(tok->merges);
    free(tok->added);
    free(tok->entries);
    free(tok->strs);
    free(tok->dec);
    free(tok->nfc_inert);
    free(tok->name);
    free(tok);
}

int32_t qvlm_tokenizer_find(const qvlm_tokenizer *tok, const char *token) {
    if (!token) return -1;
    size_t n = strlen(token);
    int32_t id = qvlm_tok_strmap_get(tok, &tok->added_map, token, n);
    return id >= 0 ? id : qvlm_tok_strmap_get(tok, &tok->vocab_map, token, n);
}

const char *qvlm_tokenizer_token(const qvlm_tokenizer *tok, int32_t id) {
    if (id < 0 || id >= tok->n_ids || !(tok->entries[id].flags & TOK_F_PRESENT)) return NULL;
    return tok->strs + tok->entries[id].raw_off;
}

bool qvlm_tokenizer_is_special(const qvlm_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_ids && (tok->entries[id].flags & TOK_F_SPECIAL);
}

int32_t qvlm_tokenizer_vocab_size(const qvlm_tokenizer *tok) { return tok->n_ids; }
