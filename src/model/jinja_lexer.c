/* jinja_lexer.c - template source -> tokens, with Jinja's whitespace control.
 *
 * Mirrors jinja2.lexer.Lexer.tokeniter with trim_blocks=True and lstrip_blocks=True:
 *  - `{%-` / `{{-` / `{#-` strip all whitespace before the tag; `-%}` / `-}}` / `-#}` all after.
 *  - lstrip_blocks: spaces and tabs between the start of a line and a `{%` or `{#` tag are
 *    removed, unless the tag is `{%+`. Never for `{{`.
 *  - trim_blocks: the first newline after `%}` or `#}` is removed, unless the tag ends `+%}`.
 *  - Newlines are normalized to "\n" first and one trailing newline is dropped.
 * Inside tags, `%}` / `}}` only end the tag when no bracket is open, as in Jinja.
 * Identifiers are ASCII ([a-zA-Z_][a-zA-Z0-9_]*); Jinja also accepts Unicode identifiers.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/jinja.h"

typedef struct lexer {
    jinja_arena *a;
    const char *src; /* normalized source, in the arena */
    size_t n, pos;
    uint32_t line;
    bool line_starting; /* the last thing consumed ended with a newline */
    const char *name;
    qvlm_error *err;
    jinja_token *toks; /* malloc'd, grows */
    size_t n_toks, cap;
    char brackets[JINJA_MAX_PARSE_DEPTH]; /* closers expected, innermost last */
    size_t n_brackets;
} lexer;

static qvlm_status lex_fail(lexer *lx, uint32_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static qvlm_status lex_fail(lexer *lx, uint32_t line, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return qvlm_errorf(lx->err, QVLM_E_CORRUPT, "%s:%u: %s", lx->name, line, msg);
}

static bool is_space_at(const lexer *lx, size_t i, size_t *next) {
    size_t j = i;
    if (j >= lx->n) return false;
    int32_t cp = jinja_utf8_next(lx->src, lx->n, &j);
    if (!jinja_py_isspace(cp)) return false;
    *next = j;
    return true;
}

static size_t skip_space(const lexer *lx, size_t i) {
    size_t next;
    while (is_space_at(lx, i, &next)) i = next;
    return i;
}

static bool starts(const lexer *lx, size_t i, const char *s) {
    size_t k = strlen(s);
    return i <= lx->n && lx->n - i >= k && memcmp(lx->src + i, s, k) == 0;
}

/* Move to `to`, counting the newlines passed. */
static void advance(lexer *lx, size_t to) {
    for (size_t i = lx->pos; i < to; i++) lx->line += lx->src[i] == '\n';
    lx->pos = to;
}

static qvlm_status push(lexer *lx, jinja_token t) {
    if (lx->n_toks == lx->cap) {
        size_t cap = lx->cap ? lx->cap * 2 : 256;
        jinja_token *p = realloc(lx->toks, cap * sizeof(*p));
        if (!p) return qvlm_errorf(lx->err, QVLM_E_NOMEM, "%s: out of memory", lx->name);
        lx->toks = p;
        lx->cap = cap;
    }
    lx->toks[lx->n_toks++] = t;
    return QVLM_OK;
}

static qvlm_status push_simple(lexer *lx, jinja_tok_type type, uint32_t line) {
    jinja_token t = {.type = type, .line = line};
    return push(lx, t);
}

/* ==== Template text ============================================================================= */

/* Emit the text before a tag, applying the tag's whitespace control (`mod` is '-', '+' or 0). */
static qvlm_status emit_text(lexer *lx, size_t start, size_t end, char mod, bool is_var) {
    const char *text = lx->src + start;
    size_t len = end - start;
    if (mod == '-') {
        size_t off, keep;
        jinja_strip(text, len, NULL, 0, false, true, &off, &keep);
        len = keep;
    } else if (mod != '+' && !is_var) {
        size_t l_pos = len;
        while (l_pos > 0 && text[l_pos - 1] != '\n') l_pos--;
        if (l_pos > 0 || lx->line_starting) {
            size_t i = start + l_pos;
            bool all_ws = i < end;
            size_t next;
            while (i < end && is_space_at(lx, i, &next)) i = next;
            if (all_ws && i == end) len = l_pos;
        }
    }
    if (len == 0) return QVLM_OK;
    jinja_token t = {.type = JT_DATA, .line = lx->line, .p = text, .n = len};
    return push(lx, t);
}

/* Where a tag starts at or after pos: "{{", "{%" or "{#"; n when there is none. */
static size_t find_tag(const lexer *lx, size_t pos) {
    for (size_t i = pos; i + 1 < lx->n; i++) {
        const char *c = memchr(lx->src + i, '{', lx->n - i - 1);
        if (!c) return lx->n;
        i = (size_t)(c - lx->src);
        char k = lx->src[i + 1];
        if (k == '{' || k == '%' || k == '#') return i;
    }
    return lx->n;
}

/* `{%[-+]?\s*raw\s*(-%}\s*|%})` at i: the end of the raw-begin tag, or 0. */
static size_t match_raw_begin(const lexer *lx, size_t i) {
    size_t j = i + 2;
    if (j < lx->n && (lx->src[j] == '-' || lx->src[j] == '+')) j++;
    j = skip_space(lx, j);
    if (!starts(lx, j, "raw")) return 0;
    j = skip_space(lx, j + 3);
    if (starts(lx, j, "-%}")) return skip_space(lx, j + 3);
    if (starts(lx, j, "%}")) return j + 2;
    return 0;
}

/* `{%([-+]?)\s*endraw\s*(+%}|-%}\s*|%}\n?)` at i: the end of the tag, or 0; *mod gets the sign. */
static size_t match_raw_end(const lexer *lx, size_t i, char *mod) {
    if (!starts(lx, i, "{%")) return 0;
    size_t j = i + 2;
    *mod = 0;
    if (j < lx->n && (lx->src[j] == '-' || lx->src[j] == '+')) *mod = lx->src[j++];
    j = skip_space(lx, j);
    if (!starts(lx, j, "endraw")) return 0;
    j = skip_space(lx, j + 6);
    if (starts(lx, j, "+%}")) return j + 3;
    if (starts(lx, j, "-%}")) return skip_space(lx, j + 3);
    if (starts(lx, j, "%}")) return j + 2 + (starts(lx, j + 2, "\n") ? 1 : 0);
    return 0;
}

static qvlm_status lex_raw(lexer *lx, uint32_t line) {
    for (size_t i = lx->pos; i < lx->n; i++) {
        char mod;
        size_t end = lx->src[i] == '{' ? match_raw_end(lx, i, &mod) : 0;
        if (!end) continue;
        qvlm_status rc = emit_text(lx, lx->pos, i, mod, false);
        if (rc) return rc;
        advance(lx, end);
        lx->line_starting = lx->src[end - 1] == '\n';
        return QVLM_OK;
    }
    return lex_fail(lx, line, "Missing end of raw directive");
}

static qvlm_status lex_comment(lexer *lx, uint32_t line) {
    for (size_t i = lx->pos; i + 1 < lx->n; i++) {
        if (lx->src[i] != '#' || lx->src[i + 1] != '}') continue;
        size_t end = i + 2;
        char mod = i > lx->pos ? lx->src[i - 1] : 0;
        if (mod == '-')
            end = skip_space(lx, end);
        else if (mod != '+' && end < lx->n && lx->src[end] == '\n')
            end++;
        advance(lx, end);
        lx->line_starting = lx->src[end - 1] == '\n';
        return QVLM_OK;
    }
    return lex_fail(lx, line, "Missing end of comment tag");
}

/* ==== Inside tags =============================================================================== */

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

/* `(\d+_)*\d+` at i: the end, or i when absent. */
static size_t scan_digits(const lexer *lx, size_t i) {
    size_t j = i;
    while (j < lx->n && is_digit(lx->src[j])) {
        while (j < lx->n && is_digit(lx->src[j])) j++;
        if (j + 1 < lx->n && lx->src[j] == '_' && is_digit(lx->src[j + 1])) j++;
    }
    return j;
}

/* Jinja's float_re: digits, then either [.digits] e[+-]digits, or .digits; not after a '.'. */
static size_t scan_float(const lexer *lx, size_t i) {
    if (i > 0 && lx->src[i - 1] == '.') return i;
    size_t j = scan_digits(lx, i);
    if (j == i) return i;
    size_t frac = j;
    if (frac < lx->n && lx->src[frac] == '.') {
        size_t f = scan_digits(lx, frac + 1);
        frac = f > frac + 1 ? f : j;
    }
    size_t e = frac;
    if (e < lx->n && (lx->src[e] == 'e' || lx->src[e] == 'E')) {
        size_t k = e + 1;
        if (k < lx->n && (lx->src[k] == '+' || lx->src[k] == '-')) k++;
        size_t d = scan_digits(lx, k);
        if (d > k) return d;
    }
    return frac > j ? frac : i;
}

static qvlm_status lex_number(lexer *lx, size_t end, bool is_float) {
    char buf[96];
    size_t k = 0;
    for (size_t i = lx->pos; i < end && k + 1 < sizeof(buf); i++)
        if (lx->src[i] != '_') buf[k++] = lx->src[i];
    buf[k] = '\0';
    jinja_token t = {.type = is_float ? JT_FLOAT : JT_INT, .line = lx->line};
    if (end - lx->pos >= sizeof(buf) - 1) return lex_fail(lx, lx->line, "number literal too long: %s", buf);
    if (is_float) {
        t.f = strtod(buf, NULL);
    } else if (!jinja_parse_int(buf, k, 0, &t.i)) {
        return lex_fail(lx, lx->line, "integer literal out of range: %s", buf);
    }
    advance(lx, end);
    return push(lx, t);
}

static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c; }

/* Jinja's integer_re: 0b.., 0o.., 0x.., [1-9](_?\d)*, 0(_?0)* (case-insensitive). */
static size_t scan_int(const lexer *lx, size_t i) {
    const char *s = lx->src;
    if (s[i] == '0' && i + 1 < lx->n) {
        char p = lower(s[i + 1]);
        const char *set = p == 'b' ? "01" : p == 'o' ? "01234567" : p == 'x' ? "0123456789abcdef" : NULL;
        if (set) {
            size_t j = i + 2, last = i;
            while (j < lx->n) {
                size_t k = j + (s[j] == '_');
                if (k >= lx->n || s[k] == '\0' || !strchr(set, lower(s[k]))) break;
                j = last = k + 1;
            }
            if (last > i) return last;
        }
    }
    if (!is_digit(s[i])) return i;
    if (s[i] == '0') {
        size_t j = i + 1;
        while (j < lx->n && (s[j] == '0' || (s[j] == '_' && j + 1 < lx->n && s[j + 1] == '0')))
            j += s[j] == '_' ? 2 : 1;
        return j;
    }
    return scan_digits(lx, i);
}

/* Decode a string literal as Python's unicode-escape codec would after Jinja's
 * backslashreplace step: \n \t \\ \' \" \xhh \uhhhh \Uhhhhhhhh \ooo \a \b \f \v \r,
 * backslash-newline dropped, unknown escapes kept. */
static qvlm_status decode_escape(lexer *lx, const char *s, size_t n, size_t *i, char *out, size_t *k) {
    char c = s[*i];
    const char *simple = "n\nt\tr\r\\\\''\"\"a\ab\bf\fv\v";
    for (const char *p = simple; *p; p += 2)
        if (c == p[0]) {
            out[(*k)++] = p[1];
            (*i)++;
            return QVLM_OK;
        }
    if (c == '\n') {
        (*i)++;
        return QVLM_OK;
    }
    int32_t cp = -1;
    if (c >= '0' && c <= '7') {
        cp = 0;
        for (int d = 0; d < 3 && *i < n && s[*i] >= '0' && s[*i] <= '7'; d++) cp = cp * 8 + (s[(*i)++] - '0');
    } else if (c == 'x' || c == 'u' || c == 'U') {
        int digits = c == 'x' ? 2 : c == 'u' ? 4 : 8;
        char hex[9];
        if (n - *i - 1 < (size_t)digits) return lex_fail(lx, lx->line, "truncated \\%c escape in string", c);
        memcpy(hex, s + *i + 1, (size_t)digits);
        hex[digits] = '\0';
        char *end;
        unsigned long v = strtoul(hex, &end, 16);
        if (*end != '\0' || hex[0] == '+' || hex[0] == '-' || hex[0] == ' ')
            return lex_fail(lx, lx->line, "truncated \\%c escape in string", c);
        if (v > 0x10FFFF) return lex_fail(lx, lx->line, "illegal Unicode character in string");
        cp = (int32_t)v;
        *i += 1 + (size_t)digits;
    }
    if (cp < 0) { /* unknown escape: Python keeps the backslash */
        out[(*k)++] = '\\';
        return QVLM_OK;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF)
        return lex_fail(lx, lx->line, "surrogate code point in string literal is not supported");
    *k += jinja_utf8_encode(cp, out + *k);
    return QVLM_OK;
}

static qvlm_status lex_string(lexer *lx) {
    char q = lx->src[lx->pos];
    size_t i = lx->pos + 1;
    while (i < lx->n && lx->src[i] != q) i += lx->src[i] == '\\' ? 2 : 1;
    if (i >= lx->n) return lex_fail(lx, lx->line, "unexpected char '%s'", q == '"' ? "\"" : "'");
    const char *s = lx->src + lx->pos + 1;
    size_t n = i - lx->pos - 1, k = 0;
    char *out = jinja_arena_alloc(lx->a, 4 * n + 1); /* a 1-byte escape may grow to 4 bytes */
    if (!out) return qvlm_errorf(lx->err, QVLM_E_NOMEM, "%s: out of memory", lx->name);
    for (size_t j = 0; j < n;) {
        unsigned char c = (unsigned char)s[j];
        if (c != '\\') {
            out[k++] = s[j++];
            continue;
        }
        j++;
        if ((unsigned char)s[j] >= 0x80) { /* backslashreplace made this "\\xNN"-style text */
            size_t at = j;
            int32_t cp = jinja_utf8_next(s, n, &at);
            k += (size_t)snprintf(out + k, 12, "\\%s", cp < 0x100 ? "x" : cp < 0x10000 ? "u" : "U");
            k += (size_t)snprintf(out + k, 10,
                                  cp < 0x100     ? "%02x"
                                  : cp < 0x10000 ? "%04x"
                                                 : "%08x",
                                  (unsigned)cp);
            j = at;
            continue;
        }
        qvlm_status rc = decode_escape(lx, s, n, &j, out, &k);
        if (rc) return rc;
    }
    jinja_token t = {.type = JT_STRING, .line = lx->line, .p = out, .n = k};
    advance(lx, i + 1);
    return push(lx, t);
}

static const struct {
    const char *text;
    jinja_op op;
} OPS[] = {
    {"//", JO_FLOORDIV}, {"**", JO_POW},   {"==", JO_EQ},      {"!=", JO_NE},      {">=", JO_GTEQ},
    {"<=", JO_LTEQ},     {"+", JO_ADD},    {"-", JO_SUB},      {"/", JO_DIV},      {"*", JO_MUL},
    {"%", JO_MOD},       {"~", JO_TILDE},  {"[", JO_LBRACKET}, {"]", JO_RBRACKET}, {"(", JO_LPAREN},
    {")", JO_RPAREN},    {"{", JO_LBRACE}, {"}", JO_RBRACE},   {">", JO_GT},       {"<", JO_LT},
    {"=", JO_ASSIGN},    {".", JO_DOT},    {":", JO_COLON},    {"|", JO_PIPE},     {",", JO_COMMA},
    {";", JO_SEMICOLON},
};

static qvlm_status balance(lexer *lx, char c) {
    char want = c == '{' ? '}' : c == '(' ? ')' : c == '[' ? ']' : 0;
    if (want) {
        if (lx->n_brackets == sizeof(lx->brackets))
            return qvlm_errorf(lx->err, QVLM_E_LIMIT, "%s:%u: brackets nested deeper than %d levels",
                               lx->name, lx->line, JINJA_MAX_PARSE_DEPTH);
        lx->brackets[lx->n_brackets++] = want;
        return QVLM_OK;
    }
    if (c != '}' && c != ')' && c != ']') return QVLM_OK;
    if (lx->n_brackets == 0) return lex_fail(lx, lx->line, "unexpected '%c'", c);
    if (lx->brackets[--lx->n_brackets] != c)
        return lex_fail(lx, lx->line, "unexpected '%c', expected '%c'", c, lx->brackets[lx->n_brackets]);
    return QVLM_OK;
}

static qvlm_status lex_operator(lexer *lx) {
    for (size_t k = 0; k < sizeof(OPS) / sizeof(OPS[0]); k++) {
        if (!starts(lx, lx->pos, OPS[k].text)) continue;
        qvlm_status rc = balance(lx, OPS[k].text[0]);
        if (rc) return rc;
        jinja_token t = {.type = JT_OP, .op = OPS[k].op, .line = lx->line};
        advance(lx, lx->pos + strlen(OPS[k].text));
        return push(lx, t);
    }
    char c[8] = {0};
    size_t i = lx->pos;
    jinja_utf8_next(lx->src, lx->n, &i);
    memcpy(c, lx->src + lx->pos, i - lx->pos);
    return lex_fail(lx, lx->line, "unexpected char '%s'", c);
}

/* One token inside a tag: whitespace is skipped, as Jinja ignores whitespace tokens. */
static qvlm_status lex_tag_token(lexer *lx) {
    size_t next;
    if (is_space_at(lx, lx->pos, &next)) {
        advance(lx, skip_space(lx, lx->pos));
        return QVLM_OK;
    }
    size_t end = scan_float(lx, lx->pos);
    if (end > lx->pos) return lex_number(lx, end, true);
    end = scan_int(lx, lx->pos);
    if (end > lx->pos) return lex_number(lx, end, false);
    char c = lx->src[lx->pos];
    if (is_name_start(c)) {
        end = lx->pos;
        while (end < lx->n && is_name_char(lx->src[end])) end++;
        jinja_token t = {.type = JT_NAME, .line = lx->line, .p = lx->src + lx->pos, .n = end - lx->pos};
        advance(lx, end);
        return push(lx, t);
    }
    if (c == '\'' || c == '"') return lex_string(lx);
    return lex_operator(lx);
}

/* The end of a `{%` / `{{` tag at pos, if it is there and no bracket is open: 0 otherwise. */
static size_t match_tag_end(lexer *lx, bool is_var) {
    if (lx->n_brackets) return 0;
    size_t p = lx->pos;
    const char *close = is_var ? "}}" : "%}";
    if (!is_var && starts(lx, p, "+%}")) return p + 3;
    if (starts(lx, p, "-") && starts(lx, p + 1, close)) return skip_space(lx, p + 3);
    if (starts(lx, p, close)) return p + 2 + (!is_var && starts(lx, p + 2, "\n") ? 1 : 0);
    return 0;
}

static qvlm_status lex_tag(lexer *lx, bool is_var, uint32_t line) {
    qvlm_status rc = push_simple(lx, is_var ? JT_VAR_BEGIN : JT_BLOCK_BEGIN, line);
    while (rc == QVLM_OK) {
        if (lx->pos >= lx->n)
            return lex_fail(lx, line, "unexpected end of template: '%s' is never closed",
                            is_var ? "{{" : "{%");
        size_t end = match_tag_end(lx, is_var);
        if (end) {
            rc = push_simple(lx, is_var ? JT_VAR_END : JT_BLOCK_END, lx->line);
            advance(lx, end);
            lx->line_starting = lx->src[end - 1] == '\n';
            return rc;
        }
        rc = lex_tag_token(lx);
    }
    return rc;
}

/* ==== Driver ==================================================================================== */

/* Copy src with "\r\n" and "\r" turned into "\n" and one trailing newline removed. */
static char *normalize(jinja_arena *a, const char *src, size_t n, size_t *out_n) {
    char *dst = jinja_arena_alloc(a, n + 1);
    if (!dst) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            dst[k++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n') i++;
        } else {
            dst[k++] = src[i];
        }
    }
    if (k > 0 && dst[k - 1] == '\n') k--;
    dst[k] = '\0';
    *out_n = k;
    return dst;
}

static qvlm_status lex_root(lexer *lx) {
    while (lx->pos < lx->n) {
        size_t tag = find_tag(lx, lx->pos);
        if (tag == lx->n) {
            qvlm_status rc = emit_text(lx, lx->pos, lx->n, '+', true);
            advance(lx, lx->n);
            return rc;
        }
        char kind = lx->src[tag + 1];
        char mod =
            tag + 2 < lx->n && (lx->src[tag + 2] == '-' || lx->src[tag + 2] == '+') ? lx->src[tag + 2] : 0;
        size_t raw_end = kind == '%' ? match_raw_begin(lx, tag) : 0;
        qvlm_status rc = emit_text(lx, lx->pos, tag, mod, kind == '{');
        if (rc) return rc;
        advance(lx, tag);
        uint32_t line = lx->line;
        if (raw_end) {
            advance(lx, raw_end);
            lx->line_starting = lx->src[raw_end - 1] == '\n';
            rc = lex_raw(lx, line);
        } else {
            advance(lx, tag + 2 + (mod ? 1 : 0));
            lx->line_starting = false;
            rc = kind == '#' ? lex_comment(lx, line) : lex_tag(lx, kind == '{', line);
        }
        if (rc) return rc;
    }
    return QVLM_OK;
}

qvlm_status jinja_lex(jinja_arena *a, const char *src, size_t n_bytes, const char *name, jinja_token **toks,
                      size_t *n_toks, qvlm_error *err) {
    lexer lx = {.a = a, .line = 1, .line_starting = true, .name = name, .err = err};
    *toks = NULL;
    *n_toks = 0;
    char *norm = normalize(a, src, n_bytes, &lx.n);
    if (!norm) return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", name);
    lx.src = norm;
    qvlm_status rc = lex_root(&lx);
    if (rc == QVLM_OK) rc = push_simple(&lx, JT_EOF, lx.line);
    if (rc) {
        free(lx.toks);
        return rc;
    }
    *toks = lx.toks;
    *n_toks = lx.n_toks;
    return QVLM_OK;
}
