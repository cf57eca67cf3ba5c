/* jinja_text.c - Python's str semantics over UTF-8 bytes: code points, whitespace, printable
 * characters, repr(), float repr, case mapping and number parsing.
 *
 * Python strings are sequences of code points; ours are UTF-8 byte ranges. Everything here
 * answers in Python's terms (str.isspace(), repr(), float.__repr__) so that rendered text and
 * error messages match transformers byte for byte. Case mapping is utf8proc's simple
 * (one-to-one) mapping: Python's full mappings such as "ß".upper() == "SS" are not reproduced.
 * Number formatting and parsing go through printf / strtod, so they assume the C numeric
 * locale (qvlm never calls setlocale).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "model/jinja.h"

/* ==== UTF-8 ==================================================================================== */

int32_t jinja_utf8_next(const char *p, size_t n, size_t *i) {
    const unsigned char *s = (const unsigned char *)p + *i;
    size_t left = n - *i;
    unsigned char c = s[0];
    int32_t cp;
    size_t len;
    if (c < 0x80) {
        *i += 1;
        return c;
    }
    if ((c & 0xE0) == 0xC0)
        len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0)
        len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0)
        len = 4, cp = c & 0x07;
    else
        len = 0, cp = 0;
    if (len == 0 || len > left) {
        *i += 1;
        return 0xFFFD;
    }
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) {
            *i += 1;
            return 0xFFFD;
        }
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    *i += len;
    return cp;
}

size_t jinja_utf8_encode(int32_t cp, char out[4]) {
    utf8proc_ssize_t n = utf8proc_encode_char(cp, (utf8proc_uint8_t *)out);
    return n > 0 ? (size_t)n : 0;
}

size_t jinja_utf8_count(const char *p, size_t n) {
    size_t count = 0;
    for (size_t i = 0; i < n; i++) count += ((unsigned char)p[i] & 0xC0) != 0x80;
    return count;
}

bool jinja_utf8_valid(const char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)p + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) return false;
        i += (size_t)k;
    }
    return true;
}

size_t jinja_utf8_offset(const char *p, size_t n, size_t cp_idx) {
    size_t i = 0;
    while (cp_idx > 0 && i < n) {
        i++;
        while (i < n && ((unsigned char)p[i] & 0xC0) == 0x80) i++;
        cp_idx--;
    }
    return i;
}

/* ==== Character classes ========================================================================= */

/* Exactly the code points for which Python's str.isspace() is true. */
bool jinja_py_isspace(int32_t cp) {
    if (cp < 0x80) return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20);
    switch (cp) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000: return true;
    default: return cp >= 0x2000 && cp <= 0x200A;
    }
}

/* Python: printable unless the category is Other (Cc Cf Cs Co Cn) or Separator (Zl Zp Zs),
 * with the ASCII space as the one printable separator. */
bool jinja_py_isprintable(int32_t cp) {
    if (cp == ' ') return true;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS: return false;
    default: return true;
    }
}

/* ==== repr ====================================================================================== */

/* float.__repr__: the shortest digits that round-trip, positional for exponents in [-4, 16),
 * scientific with a two-digit exponent otherwise ("1e+16", "1.5e-05", "100.0"). */
void jinja_fmt_float(double d, char *buf, size_t n) {
    if (isnan(d)) {
        snprintf(buf, n, "nan");
        return;
    }
    if (isinf(d)) {
        snprintf(buf, n, d < 0 ? "-inf" : "inf");
        return;
    }
    char sci[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(sci, sizeof(sci), "%.*e", prec - 1, d);
        if (strtod(sci, NULL) == d) break;
    }
    /* sci = [-]D[.DDD]e(+|-)XX */
    char digits[24];
    size_t nd = 0;
    const char *s = sci;
    bool neg = *s == '-';
    if (neg) s++;
    for (; *s && *s != 'e'; s++)
        if (*s != '.' && nd < sizeof(digits) - 1) digits[nd++] = *s;
    int exp10 = atoi(s + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = '\0';
    char *o = buf, *end = buf + n - 1;
#define PUT(c)                                                                                               \
    do {                                                                                                     \
        if (o < end) *o++ = (c);                                                                             \
    } while (0)
    if (neg) PUT('-');
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 < 0) {
            PUT('0');
            PUT('.');
            for (int k = -1; k > exp10; k--) PUT('0');
            for (size_t k = 0; k < nd; k++) PUT(digits[k]);
        } else {
            for (int k = 0; k <= exp10; k++) PUT((size_t)k < nd ? digits[k] : '0');
            PUT('.');
            if ((size_t)exp10 + 1 < nd)
                for (size_t k = (size_t)exp10 + 1; k < nd; k++) PUT(digits[k]);
            else
                PUT('0');
        }
    } else {
        PUT(digits[0]);
        if (nd > 1) {
            PUT('.');
            for (size_t k = 1; k < nd; k++) PUT(digits[k]);
        }
        char e[16];
        snprintf(e, sizeof(e), "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
        for (const char *c = e; *c; c++) PUT(*c);
    }
#undef PUT
    *o = '\0';
}

qvlm_status jinja_repr_str(jinja_rt *rt, const char *p, size_t n, jinja_buf *b) {
    bool has_sq = memchr(p, '\'', n) != NULL, has_dq = memchr(p, '"', n) != NULL;
    char quote = (has_sq && !has_dq) ? '"' : '\'';
    qvlm_status rc = jinja_buf_putc(rt, b, quote);
    size_t i = 0;
    while (rc == QVLM_OK && i < n) {
        size_t start = i;
        int32_t cp = jinja_utf8_next(p, n, &i);
        char esc[16];
        if (cp == quote || cp == '\\')
            snprintf(esc, sizeof(esc), "\\%c", (char)cp);
        else if (cp == '\t')
            snprintf(esc, sizeof(esc), "\\t");
        else if (cp == '\n')
            snprintf(esc, sizeof(esc), "\\n");
        else if (cp == '\r')
            snprintf(esc, sizeof(esc), "\\r");
        else if (cp < 0x20 || cp == 0x7F)
            snprintf(esc, sizeof(esc), "\\x%02x", (unsigned)cp);
        else if (cp < 0x7F || jinja_py_isprintable(cp))
            esc[0] = '\0';
        else if (cp <= 0xFF)
            snprintf(esc, sizeof(esc), "\\x%02x", (unsigned)cp);
        else if (cp <= 0xFFFF)
            snprintf(esc, sizeof(esc), "\\u%04x", (unsigned)cp);
        else
            snprintf(esc, sizeof(esc), "\\U%08x", (unsigned)cp);
        rc = esc[0] ? jinja_buf_put(rt, b, esc, strlen(esc)) : jinja_buf_put(rt, b, p + start, i - start);
    }
    if (rc == QVLM_OK) rc = jinja_buf_putc(rt, b, quote);
    return rc;
}

/* ==== strip ===================================================================================== */

static bool in_chars(int32_t cp, const char *chars, size_t chars_n) {
    if (!chars) return jinja_py_isspace(cp);
    size_t i = 0;
    while (i < chars_n)
        if (jinja_utf8_next(chars, chars_n, &i) == cp) return true;
    return false;
}

void jinja_strip(const char *p, size_t n, const char *chars, size_t chars_n, bool left, bool right,
                 size_t *off, size_t *len) {
    size_t lo = 0, hi = n;
    while (left && lo < hi) {
        size_t next = lo;
        if (!in_chars(jinja_utf8_next(p, n, &next), chars, chars_n)) break;
        lo = next;
    }
    while (right && hi > lo) {
        size_t prev = hi - 1;
        while (prev > lo && ((unsigned char)p[prev] & 0xC0) == 0x80) prev--;
        size_t tmp = prev;
        if (!in_chars(jinja_utf8_next(p, n, &tmp), chars, chars_n)) break;
        hi = prev;
    }
    *off = lo;
    *len = hi - lo;
}

/* ==== case mapping ============================================================================== */

static bool is_cased(int32_t cp) {
    utf8proc_category_t c = utf8proc_category(cp);
    return c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT;
}

static int32_t map_one(int32_t cp, jinja_case mode, bool first, bool prev_cased) {
    switch (mode) {
    case JC_UPPER: return utf8proc_toupper(cp);
    case JC_LOWER: return utf8proc_tolower(cp);
    case JC_TITLE_WORDS: return prev_cased ? utf8proc_tolower(cp) : utf8proc_totitle(cp);
    case JC_CAPITALIZE: return first ? utf8proc_totitle(cp) : utf8proc_tolower(cp);
    case JC_SWAPCASE:
        if (utf8proc_category(cp) == UTF8PROC_CATEGORY_LU) return utf8proc_tolower(cp);
        if (utf8proc_category(cp) == UTF8PROC_CATEGORY_LL) return utf8proc_toupper(cp);
        return cp;
    }
    return cp;
}

qvlm_status jinja_case_map(jinja_rt *rt, const jinja_value *s, jinja_case mode, jinja_value *out) {
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, i = 0;
    jinja_buf b = {0};
    qvlm_status rc = QVLM_OK;
    bool prev_cased = false, first = true;
    while (rc == QVLM_OK && i < n) {
        int32_t cp = jinja_utf8_next(p, n, &i);
        char enc[4];
        size_t k = jinja_utf8_encode(map_one(cp, mode, first, prev_cased), enc);
        rc = jinja_buf_put(rt, &b, enc, k);
        prev_cased = is_cased(cp);
        first = false;
    }
    if (rc == QVLM_OK) rc = jinja_buf_to_str(rt, &b, out);
    jinja_buf_free(rt, &b);
    return rc;
}

/* ==== numbers =================================================================================== */

/* Python allows one underscore between digits ("1_000"); copy p without them into out, or
 * return false when an underscore is misplaced or the text is too long for the buffer. */
static bool drop_underscores(const char *p, size_t n, char *out, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '_') {
            bool ok = i > 0 && i + 1 < n &&
                      ((p[i - 1] >= '0' && p[i - 1] <= '9') || (p[i - 1] >= 'a' && p[i - 1] <= 'z') ||
                       (p[i - 1] >= 'A' && p[i - 1] <= 'Z')) &&
                      p[i + 1] != '_';
            if (!ok) return false;
            continue;
        }
        if (k + 1 >= cap) return false;
        out[k++] = p[i];
    }
    out[k] = '\0';
    return true;
}

static void strip_ws(const char **p, size_t *n) {
    size_t off, len;
    jinja_strip(*p, *n, NULL, 0, true, true, &off, &len);
    *p += off;
    *n = len;
}

bool jinja_parse_float(const char *p, size_t n, double *out) {
    strip_ws(&p, &n);
    char buf[128];
    if (n == 0 || !drop_underscores(p, n, buf, sizeof(buf))) return false;
    const char *s = buf + (buf[0] == '+' || buf[0] == '-');
    if (strcasecmp(s, "inf") == 0 || strcasecmp(s, "infinity") == 0 || strcasecmp(s, "nan") == 0) {
        *out = strtod(buf, NULL);
        return true;
    }
    for (const char *c = s; *c; c++) /* strtod also takes hex and "infinity"; Python does not */
        if (!strchr("0123456789.eE+-", *c)) return false;
    char *end;
    errno = 0;
    double d = strtod(buf, &end);
    if (end == buf || *end != '\0') return false;
    *out = d;
    return true;
}

bool jinja_parse_int(const char *p, size_t n, int base, int64_t *out) {
    strip_ws(&p, &n);
    char buf[128];
    if (n == 0 || !drop_underscores(p, n, buf, sizeof(buf))) return false;
    const char *s = buf;
    bool neg = false;
    if (*s == '+' || *s == '-') neg = *s++ == '-';
    if (base == 0 || base == 16 || base == 8 || base == 2) {
        int pb = 0;
        if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
            pb = 16;
        else if (s[0] == '0' && (s[1] == 'o' || s[1] == 'O'))
            pb = 8;
        else if (s[0] == '0' && (s[1] == 'b' || s[1] == 'B'))
            pb = 2;
        if (pb && (base == 0 || base == pb))
            s += 2, base = pb;
        else if (base == 0)
            base = 10;
    }
    if (base < 2 || base > 36 || *s == '\0' || *s == '+' || *s == '-' || jinja_py_isspace(*s)) return false;
    char *end;
    errno = 0;
    unsigned long long u = strtoull(s, &end, base);
    if (*end != '\0' || errno == ERANGE) return false;
    if (u > (unsigned long long)INT64_MAX + (neg ? 1u : 0u)) return false;
    *out = neg ? (int64_t)(0 - u) : (int64_t)u;
    return true;
}
