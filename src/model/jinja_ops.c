/* jinja_ops.c - Python's operators on template values: + - * / // % **, slicing and
 * printf-style `%` formatting, with Python's results and exception texts.
 *
 * Integers are 64-bit; where Python would grow a big integer we stop with
 * QVLM_E_UNSUPPORTED instead of wrapping. A complex result ((-8) ** 0.5) is refused the same
 * way. Sequence repetition is bounded by the render's memory limit before anything is built.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/jinja.h"

static const char *op_symbol(jinja_op op) {
    switch (op) {
    case JO_ADD: return "+";
    case JO_SUB: return "-";
    case JO_MUL: return "*";
    case JO_DIV: return "/";
    case JO_FLOORDIV: return "//";
    case JO_MOD: return "%";
    case JO_POW: return "** or pow()";
    default: return "?";
    }
}

static qvlm_status unsupported(jinja_rt *rt, jinja_op op, const jinja_value *a, const jinja_value *b) {
    return jinja_fail(rt, QVLM_E_INVALID, "unsupported operand type(s) for %s: '%s' and '%s'", op_symbol(op),
                      jinja_type_name(a), jinja_type_name(b));
}

static qvlm_status overflow(jinja_rt *rt) {
    return jinja_fail(rt, QVLM_E_UNSUPPORTED, "%s:%u: integer overflow (Python would use a big integer)",
                      rt->tpl->name, rt->line);
}

/* ==== Numbers =================================================================================== */

static int64_t floordiv_i(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

static int64_t mod_i(int64_t a, int64_t b) {
    int64_t m = a % b;
    if (m != 0 && ((m < 0) != (b < 0))) m += b;
    return m;
}

/* CPython's float_divmod: a - b*floor(a/b) computed through fmod so signs follow b. */
static void divmod_f(double a, double b, double *div, double *mod) {
    double m = fmod(a, b), d = (a - m) / b;
    if (m != 0.0) {
        if ((b < 0) != (m < 0)) {
            m += b;
            d -= 1.0;
        }
    } else {
        m = copysign(0.0, b);
    }
    double fd;
    if (d != 0.0) {
        fd = floor(d);
        if (d - fd > 0.5) fd += 1.0;
    } else {
        fd = copysign(0.0, a / b);
    }
    *div = fd;
    *mod = m;
}

static qvlm_status int_pow(jinja_rt *rt, int64_t base, int64_t exp, jinja_value *out) {
    if (exp < 0) {
        if (base == 0) return jinja_fail(rt, QVLM_E_INVALID, "0.0 cannot be raised to a negative power");
        *out = jinja_float(pow((double)base, (double)exp));
        return QVLM_OK;
    }
    int64_t r = 1;
    while (exp > 0) {
        if ((exp & 1) && __builtin_mul_overflow(r, base, &r)) return overflow(rt);
        exp >>= 1;
        if (exp > 0 && __builtin_mul_overflow(base, base, &base)) return overflow(rt);
    }
    *out = jinja_int(r);
    return QVLM_OK;
}

static qvlm_status num_op(jinja_rt *rt, jinja_op op, const jinja_value *a, const jinja_value *b,
                          jinja_value *out) {
    bool ints = a->kind != JV_FLOAT && b->kind != JV_FLOAT;
    int64_t x = jinja_as_int(a), y = jinja_as_int(b), r;
    double fx = jinja_as_float(a), fy = jinja_as_float(b), d, m;
    switch (op) {
    case JO_ADD:
    case JO_SUB:
    case JO_MUL:
        if (!ints) {
            *out = jinja_float(op == JO_ADD ? fx + fy : op == JO_SUB ? fx - fy : fx * fy);
            return QVLM_OK;
        }
        if (op == JO_ADD   ? __builtin_add_overflow(x, y, &r)
            : op == JO_SUB ? __builtin_sub_overflow(x, y, &r)
                           : __builtin_mul_overflow(x, y, &r))
            return overflow(rt);
        *out = jinja_int(r);
        return QVLM_OK;
    case JO_DIV:
        if (fy == 0.0)
            return jinja_fail(rt, QVLM_E_INVALID, ints ? "division by zero" : "float division by zero");
        *out = jinja_float(fx / fy);
        return QVLM_OK;
    case JO_FLOORDIV:
    case JO_MOD:
        if (ints) {
            if (y == 0)
                return jinja_fail(rt, QVLM_E_INVALID,
                                  op == JO_MOD ? "integer modulo by zero"
                                               : "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) return overflow(rt);
            *out = jinja_int(op == JO_MOD ? mod_i(x, y) : floordiv_i(x, y));
            return QVLM_OK;
        }
        if (fy == 0.0)
            return jinja_fail(rt, QVLM_E_INVALID,
                              op == JO_MOD ? "float modulo" : "float floor division by zero");
        divmod_f(fx, fy, &d, &m);
        *out = jinja_float(op == JO_MOD ? m : d);
        return QVLM_OK;
    case JO_POW:
        if (ints) return int_pow(rt, x, y, out);
        if (fx == 0.0 && fy < 0)
            return jinja_fail(rt, QVLM_E_INVALID, "0.0 cannot be raised to a negative power");
        if (fx < 0 && fy != floor(fy))
            return jinja_fail(rt, QVLM_E_UNSUPPORTED, "%s:%u: complex numbers are not supported",
                              rt->tpl->name, rt->line);
        *out = jinja_float(pow(fx, fy));
        return QVLM_OK;
    default: return unsupported(rt, op, a, b);
    }
}

/* ==== Sequences ================================================================================= */

static bool listlike(const jinja_value *v) {
    return v->kind == JV_JARR || (v->kind == JV_LIST && !jinja_list_of(v)->is_tuple && !jinja_is_view(v));
}
static bool tuple(const jinja_value *v) { return v->kind == JV_LIST && jinja_list_of(v)->is_tuple; }

static qvlm_status seq_concat(jinja_rt *rt, const jinja_value *a, const jinja_value *b, bool is_tuple,
                              jinja_value *out) {
    size_t na = jinja_seq_len(a), nb = jinja_seq_len(b);
    qvlm_status rc = jinja_list_new(rt, na + nb, is_tuple, out);
    for (size_t i = 0; rc == QVLM_OK && i < na + nb; i++) {
        jinja_value x = i < na ? jinja_seq_at(a, i) : jinja_seq_at(b, i - na);
        x = jinja_ref(&x);
        rc = jinja_list_push(rt, out, &x);
    }
    if (rc) jinja_release(rt, out);
    return rc;
}

static qvlm_status str_concat(jinja_rt *rt, const jinja_value *a, const jinja_value *b, jinja_value *out) {
    if (b->u.s.n == 0) return *out = jinja_ref(a), QVLM_OK;
    if (a->u.s.n == 0) return *out = jinja_ref(b), QVLM_OK;
    char *buf;
    qvlm_status rc = jinja_str_alloc(rt, a->u.s.n + b->u.s.n, &buf, out);
    if (rc) return rc;
    memcpy(buf, a->u.s.p, a->u.s.n);
    memcpy(buf + a->u.s.n, b->u.s.p, b->u.s.n);
    return QVLM_OK;
}

static qvlm_status add(jinja_rt *rt, const jinja_value *a, const jinja_value *b, jinja_value *out) {
    if (jinja_is_str(a) && jinja_is_str(b)) return str_concat(rt, a, b, out);
    if (listlike(a) && listlike(b)) return seq_concat(rt, a, b, false, out);
    if (tuple(a) && tuple(b)) return seq_concat(rt, a, b, true, out);
    const char *kind = jinja_is_str(a) ? "str" : listlike(a) ? "list" : tuple(a) ? "tuple" : NULL;
    if (kind)
        return jinja_fail(rt, QVLM_E_INVALID, "can only concatenate %s (not \"%s\") to %s", kind,
                          jinja_type_name(b), kind);
    return unsupported(rt, JO_ADD, a, b);
}

/* seq * n for a str, list or tuple `seq` (n may be negative: empty). */
static qvlm_status repeat(jinja_rt *rt, const jinja_value *seq, int64_t n, jinja_value *out) {
    size_t count = n > 0 ? (size_t)n : 0, total;
    if (jinja_is_str(seq)) {
        char *buf;
        if (qvlm_mul_overflow(seq->u.s.n, count, &total) || total > rt->lim.max_memory_bytes)
            return jinja_fail(rt, QVLM_E_LIMIT, "%s:%u: repeated string exceeds the memory limit",
                              rt->tpl->name, rt->line);
        qvlm_status rc = jinja_str_alloc(rt, total, &buf, out);
        for (size_t i = 0; rc == QVLM_OK && i < count; i++)
            memcpy(buf + i * seq->u.s.n, seq->u.s.p, seq->u.s.n);
        return rc;
    }
    size_t len = jinja_seq_len(seq);
    if (qvlm_mul_overflow(len, count, &total) || total > rt->lim.max_memory_bytes / sizeof(jinja_value))
        return jinja_fail(rt, QVLM_E_LIMIT, "%s:%u: repeated list exceeds the memory limit", rt->tpl->name,
                          rt->line);
    qvlm_status rc = jinja_list_new(rt, total, tuple(seq), out);
    for (size_t i = 0; rc == QVLM_OK && i < total; i++) {
        jinja_value x = jinja_seq_at(seq, i % len);
        x = jinja_ref(&x);
        rc = jinja_list_push(rt, out, &x);
    }
    if (rc) jinja_release(rt, out);
    return rc;
}

static qvlm_status mul(jinja_rt *rt, const jinja_value *a, const jinja_value *b, jinja_value *out) {
    const jinja_value *seq = NULL, *count = NULL;
    if (jinja_is_str(a) || jinja_is_seq(a))
        seq = a, count = b;
    else if (jinja_is_str(b) || jinja_is_seq(b))
        seq = b, count = a;
    if (!seq || jinja_is_view(seq)) return unsupported(rt, JO_MUL, a, b);
    if (!jinja_is_int(count))
        return jinja_fail(rt, QVLM_E_INVALID, "can't multiply sequence by non-int of type '%s'",
                          jinja_type_name(count));
    return repeat(rt, seq, jinja_as_int(count), out);
}

qvlm_status jinja_binop(jinja_rt *rt, jinja_op op, const jinja_value *a, const jinja_value *b,
                        jinja_value *out) {
    /* Undefined's operators raise before Python tries the other operand. */
    if (jinja_is_undef(a)) return jinja_undef_fail(rt, a);
    if (jinja_is_undef(b)) return jinja_undef_fail(rt, b);
    if (jinja_is_num(a) && jinja_is_num(b)) return num_op(rt, op, a, b, out);
    switch (op) {
    case JO_ADD: return add(rt, a, b, out);
    case JO_MUL: return mul(rt, a, b, out);
    case JO_MOD:
        if (jinja_is_str(a)) return jinja_percent_format(rt, a, b, out);
        return unsupported(rt, op, a, b);
    default: return unsupported(rt, op, a, b);
    }
}

/* ==== Slicing =================================================================================== */

/* PySlice_AdjustIndices: clamp start / stop to [0, len] (or [-1, len-1] going backwards) and
 * return how many items the slice selects. */
static size_t adjust_slice(int64_t len, int64_t *start, int64_t *stop, int64_t step, bool has_start,
                           bool has_stop) {
    if (!has_start)
        *start = step < 0 ? len - 1 : 0;
    else if (*start < 0)
        *start = *start + len < 0 ? (step < 0 ? -1 : 0) : *start + len;
    else if (*start >= len)
        *start = step < 0 ? len - 1 : len;
    if (!has_stop)
        *stop = step < 0 ? -1 : len;
    else if (*stop < 0)
        *stop = *stop + len < 0 ? (step < 0 ? -1 : 0) : *stop + len;
    else if (*stop >= len)
        *stop = step < 0 ? len - 1 : len;
    if (step < 0) return *stop < *start ? (size_t)((*start - *stop - 1) / -step + 1) : 0;
    return *start < *stop ? (size_t)((*stop - *start - 1) / step + 1) : 0;
}

/* Code point slicing. With a step, the byte offset of every code point is found once
 * (a walk per selected character would be quadratic on long non-ASCII text). */
static qvlm_status slice_str(jinja_rt *rt, const jinja_value *s, int64_t start, int64_t step, size_t count,
                             jinja_value *out) {
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, n_cp = jinja_utf8_count(p, n);
    qvlm_status rc = jinja_step(rt, n / 16); /* code point walks */
    if (rc) return rc;
    if (step == 1) {
        size_t off = n_cp == n ? (size_t)start : jinja_utf8_offset(p, n, (size_t)start);
        size_t end = n_cp == n ? off + count : off + jinja_utf8_offset(p + off, n - off, count);
        *out = jinja_str_sub(s, off, end - off);
        return QVLM_OK;
    }
    size_t *offs = NULL, offs_bytes = (n_cp + 1) * sizeof(size_t);
    if (n_cp != n) {
        rc = jinja_mem_take(rt, offs_bytes);
        if (rc) return rc;
        offs = malloc(offs_bytes);
        if (!offs) {
            jinja_mem_give(rt, offs_bytes);
            return jinja_fail(rt, QVLM_E_NOMEM, "out of memory rendering the template");
        }
        for (size_t i = 0, k = 0; k <= n_cp; k++) {
            offs[k] = i;
            if (i < n) jinja_utf8_next(p, n, &i);
        }
    }
    jinja_buf b = {0};
    for (size_t i = 0; rc == QVLM_OK && i < count; i++) {
        size_t cp = (size_t)(start + (int64_t)i * step);
        size_t off = offs ? offs[cp] : cp, end = offs ? offs[cp + 1] : cp + 1;
        rc = jinja_buf_put(rt, &b, p + off, end - off);
    }
    if (rc == QVLM_OK) rc = jinja_buf_to_str(rt, &b, out);
    jinja_buf_free(rt, &b);
    if (offs) {
        free(offs);
        jinja_mem_give(rt, offs_bytes);
    }
    return rc;
}

/* Jinja compiles obj[a:b] to Python's own subscription (slices bypass environment.getitem),
 * so what cannot be sliced raises Python's TypeError instead of giving an Undefined. */
qvlm_status jinja_slice(jinja_rt *rt, const jinja_value *obj, const jinja_value parts[3], jinja_value *out) {
    if (jinja_is_undef(obj)) return jinja_undef_fail(rt, obj);
    if (jinja_is_mapping(obj)) return jinja_fail(rt, QVLM_E_INVALID, "unhashable type: 'slice'");
    if (!jinja_is_str(obj) && !jinja_is_seq(obj))
        return jinja_fail(rt, QVLM_E_INVALID, "'%s' object is not subscriptable", jinja_type_name(obj));
    for (int k = 0; k < 3; k++)
        if (parts[k].kind != JV_NONE && !jinja_is_int(&parts[k]))
            return jinja_fail(rt, QVLM_E_INVALID,
                              "slice indices must be integers or None or have an __index__ method");
    int64_t start = jinja_as_int(&parts[0]), stop = jinja_as_int(&parts[1]);
    int64_t step = parts[2].kind == JV_NONE ? 1 : jinja_as_int(&parts[2]);
    if (step == 0) return jinja_fail(rt, QVLM_E_INVALID, "slice step cannot be zero");
    if (step == INT64_MIN) step = -INT64_MAX;
    size_t len;
    jinja_len(obj, &len);
    size_t count =
        adjust_slice((int64_t)len, &start, &stop, step, parts[0].kind != JV_NONE, parts[1].kind != JV_NONE);
    if (jinja_is_str(obj)) return slice_str(rt, obj, start, step, count, out);
    qvlm_status rc = jinja_list_new(rt, count, obj->kind == JV_LIST && jinja_list_of(obj)->is_tuple, out);
    for (size_t i = 0; rc == QVLM_OK && i < count; i++) {
        jinja_value x = jinja_seq_at(obj, (size_t)(start + (int64_t)i * step));
        x = jinja_ref(&x);
        rc = jinja_list_push(rt, out, &x);
    }
    if (rc) jinja_release(rt, out);
    return rc;
}

/* ==== printf-style formatting =================================================================== */

typedef struct spec {
    char flags[8];
    int width, prec; /* -1: absent */
    char conv;
} spec;

/* Pad `text` (n bytes) to spec->width code points, left-justified with '-'. */
static qvlm_status put_padded(jinja_rt *rt, jinja_buf *b, const spec *sp, const char *text, size_t n) {
    size_t cps = jinja_utf8_count(text, n),
           pad = sp->width > 0 && (size_t)sp->width > cps ? (size_t)sp->width - cps : 0;
    bool left = strchr(sp->flags, '-') != NULL;
    qvlm_status rc = QVLM_OK;
    for (size_t i = 0; rc == QVLM_OK && !left && i < pad; i++) rc = jinja_buf_putc(rt, b, ' ');
    if (rc == QVLM_OK) rc = jinja_buf_put(rt, b, text, n);
    for (size_t i = 0; rc == QVLM_OK && left && i < pad; i++) rc = jinja_buf_putc(rt, b, ' ');
    return rc;
}

static qvlm_status fmt_text(jinja_rt *rt, jinja_buf *b, const spec *sp, const jinja_value *v) {
    jinja_buf t = {0};
    qvlm_status rc = sp->conv == 's' ? jinja_str(rt, v, &t) : jinja_repr(rt, v, &t, 0);
    if (rc == QVLM_OK) {
        size_t n = t.n;
        if (sp->prec >= 0) n = jinja_utf8_offset(t.p, t.n, (size_t)sp->prec);
        rc = put_padded(rt, b, sp, t.p ? t.p : "", n);
    }
    jinja_buf_free(rt, &t);
    return rc;
}

static qvlm_status fmt_number(jinja_rt *rt, jinja_buf *b, const spec *sp, const jinja_value *v) {
    char cfmt[32], out[512];
    bool integral = strchr("diuxXoc", sp->conv) != NULL;
    if (!jinja_is_num(v) || (strchr("xXoc", sp->conv) && v->kind == JV_FLOAT)) {
        if (sp->conv == 'c' && jinja_is_str(v) && jinja_utf8_count(v->u.s.p, v->u.s.n) == 1)
            return put_padded(rt, b, sp, v->u.s.p, v->u.s.n);
        if (jinja_is_undef(v)) return jinja_undef_fail(rt, v);
        const char *need = strchr("xXoc", sp->conv) ? "an integer" : "a real number";
        if (sp->conv == 'c') return jinja_fail(rt, QVLM_E_INVALID, "%%c requires int or char");
        return jinja_fail(rt, QVLM_E_INVALID, "%%%c format: %s is required, not %s", sp->conv, need,
                          jinja_type_name(v));
    }
    if (sp->conv == 'c') {
        char enc[4];
        int64_t cp = jinja_as_int(v);
        if (cp < 0 || cp > 0x10FFFF) return jinja_fail(rt, QVLM_E_INVALID, "%%c arg not in range(0x110000)");
        return put_padded(rt, b, sp, enc, jinja_utf8_encode((int32_t)cp, enc));
    }
    char conv = sp->conv == 'i' || sp->conv == 'u' ? 'd' : sp->conv;
    int k = snprintf(cfmt, sizeof(cfmt), "%%%s", sp->flags);
    if (sp->width >= 0) k += snprintf(cfmt + k, sizeof(cfmt) - (size_t)k, "%d", QVLM_MIN(sp->width, 400));
    if (sp->prec >= 0) k += snprintf(cfmt + k, sizeof(cfmt) - (size_t)k, ".%d", QVLM_MIN(sp->prec, 400));
/* The format was assembled above from a whitelist of flags and conversions. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    if (integral) {
        double f = jinja_as_float(v);
        if (v->kind == JV_FLOAT && !(fabs(f) < 9.2e18))
            return jinja_fail(rt, QVLM_E_UNSUPPORTED, "integer overflow");
        long long x = v->kind == JV_FLOAT ? (long long)f : (long long)jinja_as_int(v);
        snprintf(cfmt + k, sizeof(cfmt) - (size_t)k, "ll%c", conv);
        if ((conv == 'x' || conv == 'X' || conv == 'o') && x < 0) { /* Python: sign, then magnitude */
            char tmp[500];
            snprintf(tmp, sizeof(tmp), cfmt, -x);
            snprintf(out, sizeof(out), "-%s", tmp);
        } else {
            snprintf(out, sizeof(out), cfmt, x);
        }
        if (conv == 'o' && strchr(sp->flags, '#')) { /* Python writes 0o17, C writes 017 */
            char *z = strchr(out, '0');
            if (z) memmove(z + 2, z + 1, strlen(z + 1) + 1), z[1] = 'o';
        }
    } else {
        snprintf(cfmt + k, sizeof(cfmt) - (size_t)k, "%c", conv);
        snprintf(out, sizeof(out), cfmt, jinja_as_float(v));
    }
#pragma GCC diagnostic pop
    return jinja_buf_put(rt, b, out, strlen(out));
}

/* Parse one conversion spec after '%' at fmt[*i]; QVLM_E_INVALID on Python's ValueErrors. */
static qvlm_status parse_spec(jinja_rt *rt, const char *f, size_t n, size_t *i, size_t start, spec *sp) {
    size_t nf = 0;
    sp->width = sp->prec = -1;
    if (*i < n && f[*i] == '(')
        return jinja_fail(rt, QVLM_E_UNSUPPORTED, "%s:%u: %%(name) formatting is not supported",
                          rt->tpl->name, rt->line);
    while (*i < n && strchr("-+ #0", f[*i]) && nf < sizeof(sp->flags) - 1) sp->flags[nf++] = f[(*i)++];
    sp->flags[nf] = '\0';
    for (; *i < n && f[*i] >= '0' && f[*i] <= '9'; (*i)++)
        sp->width = (sp->width < 0 ? 0 : sp->width * 10 % 100000) + (f[*i] - '0');
    if (*i < n && f[*i] == '.') {
        sp->prec = 0;
        for ((*i)++; *i < n && f[*i] >= '0' && f[*i] <= '9'; (*i)++)
            sp->prec = sp->prec * 10 % 100000 + (f[*i] - '0');
    }
    if (*i < n && (f[*i] == 'h' || f[*i] == 'l' || f[*i] == 'L')) (*i)++;
    if (*i >= n) return jinja_fail(rt, QVLM_E_INVALID, "incomplete format");
    sp->conv = f[(*i)++];
    if (!strchr("sradiuxXoeEfFgGc%", sp->conv) || (unsigned char)sp->conv >= 0x80)
        return jinja_fail(rt, QVLM_E_INVALID, "unsupported format character '%c' (0x%x) at index %zu",
                          sp->conv, (unsigned char)sp->conv, jinja_utf8_count(f, *i - 1));
    (void)start;
    return QVLM_OK;
}

qvlm_status jinja_percent_format(jinja_rt *rt, const jinja_value *fmt, const jinja_value *args,
                                 jinja_value *out) {
    const char *f = fmt->u.s.p;
    size_t n = fmt->u.s.n, used = 0, n_args = tuple(args) ? jinja_seq_len(args) : 1;
    jinja_buf b = {0};
    qvlm_status rc = QVLM_OK;
    for (size_t i = 0; rc == QVLM_OK && i < n;) {
        const char *pct = memchr(f + i, '%', n - i);
        size_t lit = pct ? (size_t)(pct - f) - i : n - i;
        rc = jinja_buf_put(rt, &b, f + i, lit);
        i += lit;
        if (rc || i >= n) break;
        spec sp;
        size_t start = i++;
        rc = parse_spec(rt, f, n, &i, start, &sp);
        if (rc) break;
        if (sp.conv == '%') {
            rc = jinja_buf_putc(rt, &b, '%');
            continue;
        }
        if (used >= n_args) {
            rc = jinja_fail(rt, QVLM_E_INVALID, "not enough arguments for format string");
            break;
        }
        jinja_value v = tuple(args) ? jinja_seq_at(args, used) : *args;
        used++;
        rc = strchr("sra", sp.conv) ? fmt_text(rt, &b, &sp, &v) : fmt_number(rt, &b, &sp, &v);
    }
    /* A lone non-tuple mapping argument may go unused (Python allows "%%" % {}). */
    if (rc == QVLM_OK && used < n_args && !(used == 0 && !tuple(args) && jinja_is_mapping(args)))
        rc = jinja_fail(rt, QVLM_E_INVALID, "not all arguments converted during string formatting");
    if (rc == QVLM_OK) rc = jinja_buf_to_str(rt, &b, out);
    jinja_buf_free(rt, &b);
    return rc;
}
