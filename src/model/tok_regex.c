/* tok_regex.c - the pre-tokenizer's Split step: its regex, read from tokenizer.json, run with
 * PCRE2 (UTF, Unicode properties, JIT), and HF's five split behaviours (qwen35-arch.md §1.5).
 *
 * HF compiles these patterns with Oniguruma. PCRE2 reads the same syntax, but a few escapes mean
 * something else there, and byte-identical ids need Oniguruma's meaning. The pattern is therefore
 * rewritten mechanically, never by hand:
 *   \s \S    Oniguruma: the White_Space property. PCRE2's \s also takes U+180E, so both become
 *            \p{White_Space} / \P{White_Space}.
 *   \w \W    Oniguruma: Letter|Mark|Number|Connector_Punctuation; PCRE2 10.42 lacks marks.
 *   \v       Oniguruma: the VT character; PCRE2: any vertical space.
 *   \uHHHH   Oniguruma only; becomes \x{HHHH}.
 *   {,n}     Oniguruma: {0,n}; PCRE2 10.42 reads it literally.
 * Constructs whose Oniguruma meaning differs and that tokenizers do not use are refused rather
 * than guessed: ^ and $ (line anchors in Oniguruma), \b \B \h \H \W-in-a-class, nested classes
 * and POSIX brackets, && in classes, the m and x options, \Q, \K, \g, \k and unknown escapes.
 *
 * Matching walks the subject the way onig's find_iter does: an empty match right where the
 * previous match ended is skipped by advancing one character.
 */
#include <stdlib.h>
#include <string.h>

#include "model/tok_internal.h"

/* ---- Oniguruma -> PCRE2 ------------------------------------------------------------------ */

typedef struct xlat {
    const char *p; /* pattern */
    size_t n, i;   /* length, read position */
    char *out;     /* written here */
    size_t o;
    bool in_class;
    const char *where;
    qvlm_error *err;
} xlat;

static void emit(xlat *x, const char *s) {
    size_t k = strlen(s);
    memcpy(x->out + x->o, s, k);
    x->o += k;
}

static void emit_n(xlat *x, const char *s, size_t k) {
    memcpy(x->out + x->o, s, k);
    x->o += k;
}

static qvlm_status refuse(xlat *x, const char *what) {
    return qvlm_errorf(x->err, QVLM_E_UNSUPPORTED,
                       "%s: %s at pattern offset %zu is not supported (its Oniguruma meaning "
                       "differs from PCRE2's)", x->where, what, x->i);
}

static bool is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Copy a {...} group that follows \p, \P or \x verbatim. */
static void copy_braces(xlat *x) {
    if (x->i < x->n && x->p[x->i] == '{') {
        const char *end = memchr(x->p + x->i, '}', x->n - x->i);
        size_t k = end ? (size_t)(end - (x->p + x->i)) + 1 : x->n - x->i;
        emit_n(x, x->p + x->i, k);
        x->i += k;
    }
}

/* x->i is at the character after a backslash. */
static qvlm_status xlat_escape(xlat *x) {
    if (x->i >= x->n) return refuse(x, "a trailing backslash");
    char c = x->p[x->i++];
    switch (c) {
    case 's': emit(x, "\\p{White_Space}"); return QVLM_OK;
    case 'S': emit(x, "\\P{White_Space}"); return QVLM_OK;
    case 'w': emit(x, x->in_class ? "\\p{L}\\p{M}\\p{N}\\p{Pc}" : "[\\p{L}\\p{M}\\p{N}\\p{Pc}]"); return QVLM_OK;
    case 'W':
        if (x->in_class) return refuse(x, "\\W inside a character class");
        emit(x, "[^\\p{L}\\p{M}\\p{N}\\p{Pc}]");
        return QVLM_OK;
    case 'v': emit(x, "\\x0B"); return QVLM_OK;
    case 'u':
        if (x->i + 4 > x->n || !is_hex(x->p[x->i]) || !is_hex(x->p[x->i + 1]) ||
            !is_hex(x->p[x->i + 2]) || !is_hex(x->p[x->i + 3]))
            return refuse(x, "\\u without 4 hex digits");
        emit(x, "\\x{");
        emit_n(x, x->p + x->i, 4);
        emit(x, "}");
        x->i += 4;
        return QVLM_OK;
    case 'p': case 'P': case 'x':
        emit_n(x, x->p + x->i - 2, 2);
        copy_braces(x);
        return QVLM_OK;
    case 'd': case 'D': case 'n': case 'r': case 't': case 'f': case 'e': case 'a':
    case 'A': case 'z': case 'Z': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        emit_n(x, x->p + x->i - 2, 2); /* same meaning in both */
        return QVLM_OK;
    default:
        break;
    }
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        x->i--;
        return refuse(x, "this escape");
    }
    emit_n(x, x->p + x->i - 2, 2); /* an escaped punctuation or non-ASCII character: literal */
    return QVLM_OK;
}

/* x->i is at "(?". Allow only option letters whose meaning is shared (i, and - to clear). */
static qvlm_status xlat_group(xlat *x) {
    size_t j = x->i + 2;
    if (j < x->n && x->p[j] == '#') { /* comment: copy it whole, it may contain anything */
        const char *end = memchr(x->p + j, ')', x->n - j);
        size_t k = end ? (size_t)(end - (x->p + x->i)) + 1 : x->n - x->i;
        emit_n(x, x->p + x->i, k);
        x->i += k;
        return QVLM_OK;
    }
    size_t k = j;
    while (k < x->n && ((x->p[k] >= 'a' && x->p[k] <= 'z') || (x->p[k] >= 'A' && x->p[k] <= 'Z') ||
                        x->p[k] == '-'))
        k++;
    if (k > j && k < x->n && (x->p[k] == ':' || x->p[k] == ')')) {
        for (size_t t = j; t < k; t++)
            if (x->p[t] != 'i' && x->p[t] != '-') {
                x->i = t;
                return refuse(x, "this inline option");
            }
    }
    emit(x, "(?");
    x->i += 2;
    return QVLM_OK;
}

static qvlm_status xlat_char(xlat *x) {
    char c = x->p[x->i];
    if (c == '\\') {
        x->i++;
        return xlat_escape(x);
    }
    if (x->in_class) {
        if (c == '[') return refuse(x, "a nested class or POSIX bracket");
        if (c == '&' && x->i + 1 < x->n && x->p[x->i + 1] == '&') return refuse(x, "&& in a class");
        if (c == ']') x->in_class = false;
        emit_n(x, &c, 1);
        x->i++;
        return QVLM_OK;
    }
    if (c == '^' || c == '$') return refuse(x, c == '^' ? "^" : "$");
    if (c == '(' && x->i + 1 < x->n && x->p[x->i + 1] == '?') return xlat_group(x);
    if (c == '{' && x->i + 1 < x->n && x->p[x->i + 1] == ',') {
        emit(x, "{0");
        x->i++;
        return QVLM_OK;
    }
    emit_n(x, &c, 1);
    x->i++;
    if (c == '[') {
        x->in_class = true;
        if (x->i < x->n && x->p[x->i] == '^') emit(x, "^"), x->i++;
        if (x->i < x->n && x->p[x->i] == ']') return refuse(x, "']' first in a class");
    }
    return QVLM_OK;
}

/* Translate; *out is a fresh NUL-terminated string. */
static qvlm_status translate(const char *pattern, size_t len, const char *where, char **out,
                             size_t *out_len, qvlm_error *err) {
    /* The longest rewrite (\w -> 22 bytes) grows a 2-byte escape 11x. */
    if (len > TOK_MAX_PATTERN_BYTES)
        return qvlm_errorf(err, QVLM_E_LIMIT, "%s: pattern of %zu bytes is too long", where, len);
    xlat x = {.p = pattern, .n = len, .out = malloc(12 * len + 1), .where = where, .err = err};
    if (!x.out) return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", where);
    while (x.i < x.n) {
        qvlm_status rc = xlat_char(&x);
        if (rc) {
            free(x.out);
            return rc;
        }
    }
    x.out[x.o] = '\0';
    *out = x.out;
    *out_len = x.o;
    return QVLM_OK;
}

qvlm_status qvlm_tok_regex_compile(const char *pattern, size_t len, bool literal,
                                   const char *where, pcre2_code **out, qvlm_error *err) {
    *out = NULL;
    char *pcre_pat = NULL;
    size_t pcre_len = len;
    if (!literal) {
        qvlm_status rc = translate(pattern, len, where, &pcre_pat, &pcre_len, err);
        if (rc) return rc;
    }
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc) {
        free(pcre_pat);
        return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", where);
    }
    /* '.' excludes only \n, as in Oniguruma. */
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    int code;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP); /* LITERAL forbids UCP */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(literal ? pattern : pcre_pat), pcre_len, opts, &code,
                                   &off, cc);
    pcre2_compile_context_free(cc);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof(msg));
        qvlm_errorf(err, QVLM_E_CORRUPT, "%s: does not compile: %s (at offset %zu of \"%.200s\")",
                    where, (const char *)msg, (size_t)off, literal ? "(literal)" : pcre_pat);
        free(pcre_pat);
        return QVLM_E_CORRUPT;
    }
    free(pcre_pat);
    /* JIT is a speed-up only: when it is unavailable the interpreter gives the same matches. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    *out = re;
    return QVLM_OK;
}

/* ---- matching ---------------------------------------------------------------------------- */

static int match_at(const pcre2_code *re, const pcre2_match_context *mctx, pcre2_match_data *md,
                    const uint8_t *s, size_t n, size_t off, uint32_t opts) {
    pcre2_match_context *mc = (pcre2_match_context *)mctx; /* read only, despite the signature */
    int rc = pcre2_match(re, s, n, off, opts | PCRE2_NO_UTF_CHECK, md, mc);
    /* The JIT's stack is small; the interpreter keeps its frames on the heap. */
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re, s, n, off, opts | PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, mc);
    return rc;
}

bool qvlm_tok_char_is(const pcre2_code *re, pcre2_match_data *md, const uint8_t *s, size_t n,
                      size_t off) {
    int len = qvlm_tok_utf8_check(s + off, n - off);
    if (len <= 0) return false;
    return match_at(re, NULL, md, s + off, (size_t)len, 0, PCRE2_ANCHORED) >= 0;
}

static qvlm_status spans_push(tok_spans *sp, size_t start, size_t end, bool is_match,
                              qvlm_error *err) {
    if (sp->n == sp->cap) {
        size_t cap = sp->cap ? 2 * sp->cap : 32;
        tok_span *v = realloc(sp->v, cap * sizeof(*v));
        if (!v) return qvlm_errorf(err, QVLM_E_NOMEM, "encode: out of memory splitting text");
        sp->v = v;
        sp->cap = cap;
    }
    sp->v[sp->n++] = (tok_span){.start = start, .end = end, .is_match = is_match};
    return QVLM_OK;
}

/* HF Pattern::find_matches: spans covering s, each flagged match / not a match. */
static qvlm_status find_matches(const tok_stage *st, const pcre2_match_context *mctx,
                                pcre2_match_data *md, const uint8_t *s, size_t n, tok_spans *out,
                                qvlm_error *err) {
    size_t prev = 0, last_end = 0, last_match = SIZE_MAX;
    qvlm_status rc = QVLM_OK;
    while (last_end <= n && rc == QVLM_OK) {
        int m = match_at(st->re, mctx, md, s, n, last_end, 0);
        if (m == PCRE2_ERROR_NOMATCH) break;
        if (m < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(m, msg, sizeof(msg));
            return qvlm_errorf(err, QVLM_E_LIMIT, "encode: pre_tokenizer regex failed at byte %zu: %s",
                               last_end, (const char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms && last_end == last_match) { /* empty match where the last one ended */
            if (last_end >= n) break;
            int len = qvlm_tok_utf8_check(s + last_end, n - last_end);
            last_end += len > 0 ? (size_t)len : 1;
            continue;
        }
        if (me < ms) me = ms; /* \K-like oddities cannot occur (refused), but stay in bounds */
        last_end = last_match = me;
        if (prev != ms) rc = spans_push(out, prev, ms, false, err);
        if (!rc) rc = spans_push(out, ms, me, true, err);
        prev = me;
    }
    if (!rc && prev != n) rc = spans_push(out, prev, n, false, err);
    return rc;
}

/* Apply a split behaviour in place over out->v (HF NormalizedString::split). */
static void apply_behavior(tok_split_behavior b, tok_spans *sp) {
    size_t k = 0;
    bool prev_match = false;
    switch (b) {
    case TOK_SPLIT_ISOLATED:
        return;
    case TOK_SPLIT_REMOVED:
        for (size_t i = 0; i < sp->n; i++)
            if (!sp->v[i].is_match) sp->v[k++] = sp->v[i];
        break;
    case TOK_SPLIT_MERGED_WITH_PREVIOUS:
        for (size_t i = 0; i < sp->n; i++) {
            tok_span cur = sp->v[i];
            if (cur.is_match && !prev_match && k > 0) sp->v[k - 1].end = cur.end;
            else sp->v[k++] = cur;
            prev_match = cur.is_match;
        }
        break;
    case TOK_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < sp->n; i++) {
            tok_span cur = sp->v[i];
            if (cur.is_match == prev_match && k > 0) sp->v[k - 1].end = cur.end;
            else sp->v[k++] = cur;
            prev_match = cur.is_match;
        }
        break;
    case TOK_SPLIT_MERGED_WITH_NEXT: /* the same fold, right to left */
        for (size_t i = sp->n; i-- > 0;) {
            tok_span cur = sp->v[i];
            if (cur.is_match && !prev_match && k > 0) sp->v[sp->n - k].start = cur.start;
            else sp->v[sp->n - 1 - k++] = cur;
            prev_match = cur.is_match;
        }
        memmove(sp->v, sp->v + sp->n - k, k * sizeof(*sp->v));
        break;
    }
    sp->n = k;
}

qvlm_status qvlm_tok_regex_split(const tok_stage *st, const pcre2_match_context *mctx,
                                 pcre2_match_data *md, const uint8_t *s, size_t n,
                                 tok_spans *out, qvlm_error *err) {
    out->n = 0;
    if (n == 0) return QVLM_OK;
    qvlm_status rc = find_matches(st, mctx, md, s, n, out, err);
    if (rc) return rc;
    if (st->invert)
        for (size_t i = 0; i < out->n; i++) out->v[i].is_match = !out->v[i].is_match;
    apply_behavior(st->behavior, out);
    size_t k = 0; /* empty pieces vanish (PreTokenizedString::split) */
    for (size_t i = 0; i < out->n; i++)
        if (out->v[i].end > out->v[i].start) out->v[k++] = out->v[i];
    out->n = k;
    return QVLM_OK;
}
