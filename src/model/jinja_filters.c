/* jinja_filters.c - Jinja's builtin filters and tests (jinja2/filters.py, jinja2/tests.py),
 * with transformers' tojson (json.dumps, non-ASCII kept, ", " / ": " separators).
 *
 * Filters that return generators in Jinja (map, select, reject, items, reverse...) return
 * lists here: iterating, joining, `|list` and tojson give the same result; only printing
 * the generator object itself ("<generator object ...>") differs. `safe` and `escape` return
 * plain strings (the environment has no autoescaping, so Markup only matters when a Markup
 * value is concatenated with `+`, which this interpreter does not model).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "model/jinja.h"

#define BIND(name, ...)                                                                                      \
    static const char *const params_[] = {__VA_ARGS__};                                                      \
    const jinja_value *arg[sizeof(params_) / sizeof(params_[0])];                                            \
    qvlm_status rc = jinja_bind(rt, name, a, params_, sizeof(params_) / sizeof(params_[0]), arg)

#define NO_ARGS(name)                                                                                        \
    const jinja_value *arg[1];                                                                               \
    qvlm_status rc = jinja_bind(rt, name, a, NULL, 0, arg);                                                  \
    (void)arg;                                                                                               \
    if (rc) return rc

static bool jinja_list_of_tuple(const jinja_value *v) {
    return v->kind == JV_LIST && jinja_list_of(v)->is_tuple;
}

static bool str_is(const jinja_value *v, const char *s) {
    return jinja_is_str(v) && v->u.s.n == strlen(s) && memcmp(v->u.s.p, s, v->u.s.n) == 0;
}

static bool truthy_arg(const jinja_value *v, bool dflt) { return v ? jinja_truthy(v) : dflt; }

/* soft_str: str(value) as a value (strings pass through). */
static qvlm_status soft_str(jinja_rt *rt, const jinja_value *v, jinja_value *out) {
    return jinja_to_str(rt, v, out);
}

static qvlm_status need_int_arg(jinja_rt *rt, const jinja_value *v, const char *what, int64_t *out) {
    if (!jinja_is_int(v))
        return jinja_fail(rt, QVLM_E_INVALID, "%s must be an integer, not %s", what, jinja_type_name(v));
    *out = jinja_as_int(v);
    return QVLM_OK;
}

/* ==== Attribute paths and sort keys ============================================================= */

/* make_attrgetter: "a.b.0" walks item lookups (digit parts are indices). */
static qvlm_status get_path(jinja_rt *rt, const jinja_value *item, const jinja_value *attr,
                            const jinja_value *dflt, jinja_value *out) {
    *out = jinja_ref(item);
    if (!attr || attr->kind == JV_NONE) return QVLM_OK;
    if (!jinja_is_str(attr)) {
        jinja_value v = JINJA_UNSET;
        qvlm_status rc = jinja_getitem(rt, out, attr, &v);
        jinja_release(rt, out);
        if (rc == QVLM_OK) *out = v;
        return rc;
    }
    const char *p = attr->u.s.p, *end = p + attr->u.s.n;
    qvlm_status rc = QVLM_OK;
    while (rc == QVLM_OK) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        int64_t idx;
        bool digits = n > 0 && strspn(p, "0123456789") >= n;
        jinja_value key = digits && jinja_parse_int(p, n, 10, &idx) ? jinja_int(idx) : jinja_strv(p, n), v;
        rc = jinja_getitem(rt, out, &key, &v);
        jinja_release(rt, out);
        if (rc) return rc;
        *out = v;
        if (!dot) break;
        p = dot + 1;
    }
    if (dflt && jinja_is_undef(out)) {
        jinja_release(rt, out);
        *out = jinja_ref(dflt);
    }
    return rc;
}

/* ignore_case: strings compare lower-cased unless case_sensitive. */
static qvlm_status sort_key(jinja_rt *rt, const jinja_value *item, const jinja_value *attr,
                            bool case_sensitive, jinja_value *out) {
    jinja_value v = JINJA_UNSET;
    qvlm_status rc = get_path(rt, item, attr, NULL, &v);
    if (rc || case_sensitive || !jinja_is_str(&v)) {
        if (rc == QVLM_OK) *out = v;
        return rc;
    }
    rc = jinja_case_map(rt, &v, JC_LOWER, out);
    jinja_release(rt, &v);
    return rc;
}

/* Stable merge sort of idx[0..n) by keys[idx[i]] (Python's sort is stable). */
static qvlm_status merge_sort(jinja_rt *rt, const jinja_value *keys, size_t *idx, size_t *tmp, size_t n,
                              bool reverse) {
    if (n < 2) return QVLM_OK;
    size_t h = n / 2;
    qvlm_status rc = merge_sort(rt, keys, idx, tmp, h, reverse);
    if (rc == QVLM_OK) rc = merge_sort(rt, keys, idx + h, tmp, n - h, reverse);
    size_t i = 0, j = h, k = 0;
    while (rc == QVLM_OK && i < h && j < n) {
        int c;
        rc = jinja_cmp(rt, &keys[idx[j]], &keys[idx[i]], "<", &c);
        bool take_right = reverse ? c > 0 : c < 0;
        tmp[k++] = take_right ? idx[j++] : idx[i++];
    }
    if (rc) return rc;
    while (i < h) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, n * sizeof(size_t));
    return jinja_step(rt, n);
}

/* Sort `items` (a sequence) by key; *out is a new list. */
static qvlm_status sort_by(jinja_rt *rt, const jinja_value *items, const jinja_value *attr,
                           bool case_sensitive, bool reverse, jinja_value *out) {
    size_t n = jinja_seq_len(items);
    jinja_value *keys = calloc(n + 1, sizeof(*keys));
    size_t *idx = calloc(2 * n + 1, sizeof(size_t));
    qvlm_status rc =
        keys && idx ? jinja_mem_take(rt, n * (sizeof(*keys) + 2 * sizeof(size_t))) : QVLM_E_NOMEM;
    if (rc == QVLM_E_NOMEM) rc = jinja_fail(rt, QVLM_E_NOMEM, "out of memory rendering the template");
    bool taken = rc == QVLM_OK;
    size_t made = 0;
    for (; rc == QVLM_OK && made < n; made++) {
        jinja_value x = jinja_seq_at(items, made);
        idx[made] = made;
        rc = sort_key(rt, &x, attr, case_sensitive, &keys[made]);
    }
    if (rc == QVLM_OK) rc = merge_sort(rt, keys, idx, idx + n, n, reverse);
    if (rc == QVLM_OK) rc = jinja_list_new(rt, n, false, out);
    for (size_t i = 0; rc == QVLM_OK && i < n; i++) {
        jinja_value x = jinja_seq_at(items, idx[i]);
        x = jinja_ref(&x);
        rc = jinja_list_push(rt, out, &x);
        if (rc) jinja_release(rt, out);
    }
    for (size_t i = 0; i < made && keys; i++) jinja_release(rt, &keys[i]);
    if (taken) jinja_mem_give(rt, n * (sizeof(*keys) + 2 * sizeof(size_t)));
    free(keys);
    free(idx);
    return rc;
}

/* ==== Filters: strings ========================================================================== */

static qvlm_status f_string(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    NO_ARGS("string");
    return soft_str(rt, v, out);
}

static qvlm_status f_trim(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    BIND("trim", "chars");
    jinja_value s = JINJA_UNSET;
    if (rc == QVLM_OK) rc = soft_str(rt, v, &s);
    if (rc) return rc;
    const char *chars = NULL;
    size_t chars_n = 0, off, len;
    if (arg[0] && arg[0]->kind != JV_NONE) {
        if (!jinja_is_str(arg[0]))
            rc = jinja_fail(rt, QVLM_E_INVALID, "strip arg must be None or str");
        else
            chars = arg[0]->u.s.p, chars_n = arg[0]->u.s.n;
    }
    if (rc == QVLM_OK) {
        jinja_strip(s.u.s.p, s.u.s.n, chars, chars_n, true, true, &off, &len);
        rc = jinja_step(rt, (s.u.s.n - len) * (1 + chars_n / 16) / 2); /* per-character walk */
        if (rc == QVLM_OK) *out = jinja_str_sub(&s, off, len);
    }
    jinja_release(rt, &s);
    return rc;
}

static qvlm_status case_filter(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out,
                               jinja_case mode, const char *name) {
    NO_ARGS(name);
    jinja_value s = JINJA_UNSET;
    rc = soft_str(rt, v, &s);
    if (rc) return rc;
    rc = jinja_case_map(rt, &s, mode, out);
    jinja_release(rt, &s);
    return rc;
}

static qvlm_status f_upper(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *o) {
    return case_filter(rt, v, a, o, JC_UPPER, "upper");
}
static qvlm_status f_lower(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *o) {
    return case_filter(rt, v, a, o, JC_LOWER, "lower");
}
static qvlm_status f_capitalize(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *o) {
    return case_filter(rt, v, a, o, JC_CAPITALIZE, "capitalize");
}

/* do_title: upper-case the first character of each word, where words start after
 * whitespace or one of -({[< (not Python's str.title). */
static qvlm_status f_title(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    NO_ARGS("title");
    jinja_value s = JINJA_UNSET;
    rc = soft_str(rt, v, &s);
    if (rc) return rc;
    jinja_buf b = {0};
    size_t i = 0, n = s.u.s.n;
    bool start = true;
    while (rc == QVLM_OK && i < n) {
        size_t at = i;
        int32_t cp = jinja_utf8_next(s.u.s.p, n, &i);
        bool sep = jinja_py_isspace(cp) || (cp < 0x80 && strchr("-({[<", (char)cp) && cp != 0);
        char enc[4];
        if (sep)
            rc = jinja_buf_put(rt, &b, s.u.s.p + at, i - at);
        else if (start)
            rc = jinja_buf_put(rt, &b, enc, jinja_utf8_encode(utf8proc_toupper(cp), enc));
        else
            rc = jinja_buf_put(rt, &b, enc, jinja_utf8_encode(utf8proc_tolower(cp), enc));
        start = sep;
    }
    if (rc == QVLM_OK) rc = jinja_buf_to_str(rt, &b, out);
    jinja_buf_free(rt, &b);
    jinja_release(rt, &s);
    return rc;
}

static qvlm_status f_replace(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    BIND("replace", "old", "new", "count");
    jinja_value s = jinja_undefined(), old = jinja_undefined(), new_ = jinja_undefined();
    int64_t count = -1;
    if (rc == QVLM_OK && (!arg[0] || !arg[1]))
        rc = jinja_fail(rt, QVLM_E_INVALID, "replace() missing required arguments");
    if (rc == QVLM_OK && arg[2] && arg[2]->kind != JV_NONE) rc = need_int_arg(rt, arg[2], "count", &count);
    if (rc == QVLM_OK) rc = soft_str(rt, v, &s);
    if (rc == QVLM_OK) rc = soft_str(rt, arg[0], &old);
    if (rc == QVLM_OK) rc = soft_str(rt, arg[1], &new_);
    if (rc == QVLM_OK) rc = jinja_str_replace(rt, &s, &old, &new_, count < 0 ? -1 : count, out);
    jinja_release(rt, &s);
    jinja_release(rt, &old);
    jinja_release(rt, &new_);
    return rc;
}

static qvlm_status f_center(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    BIND("center", "width");
    jinja_value s, width = arg[0] ? *arg[0] : jinja_int(80);
    if (rc == QVLM_OK) rc = soft_str(rt, v, &s);
    if (rc) return rc;
    jinja_args ca = {.n_pos = 1, .pos = &width};
    rc = jinja_str_center(rt, &s, &ca, out);
    jinja_release(rt, &s);
    return rc;
}

/* markupsafe.escape: & < > " ' */
static qvlm_status f_escape(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    NO_ARGS("escape");
    jinja_value s = JINJA_UNSET;
    rc = soft_str(rt, v, &s);
    jinja_buf b = {0};
    for (size_t i = 0; rc == QVLM_OK && i < s.u.s.n; i++) {
        char c = s.u.s.p[i];
        const char *rep = c == '&'    ? "&amp;"
                          : c == '<'  ? "&lt;"
                          : c == '>'  ? "&gt;"
                          : c == '"'  ? "&#34;"
                          : c == '\'' ? "&#39;"
                                      : NULL;
        rc = rep ? jinja_buf_put(rt, &b, rep, strlen(rep)) : jinja_buf_putc(rt, &b, c);
    }
    if (rc == QVLM_OK) rc = jinja_buf_to_str(rt, &b, out);
    jinja_buf_free(rt, &b);
    jinja_release(rt, &s);
    return rc;
}

static qvlm_status f_indent(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    BIND("indent", "width", "first", "blank");
    jinja_value s = JINJA_UNSET, lines = JINJA_UNSET, ind = JINJA_UNSET;
    int64_t width = 4;
    if (rc == QVLM_OK && arg[0] && !jinja_is_str(arg[0])) rc = need_int_arg(rt, arg[0], "width", &width);
    if (rc) return rc;
    if (width > 4096) width = 4096;
    if (arg[0] && jinja_is_str(arg[0]))
        ind = jinja_ref(arg[0]);
    else {
        char *buf;
        rc = jinja_str_alloc(rt, width > 0 ? (size_t)width : 0, &buf, &ind);
        if (rc) return rc;
        memset(buf, ' ', width > 0 ? (size_t)width : 0);
    }
    jinja_buf b = {0};
    /* do_indent does `s += "\n"` then s.splitlines(): Python's errors for what is not a str */
    if (jinja_is_undef(v))
        rc = jinja_undef_fail(rt, v);
    else if (jinja_is_seq(v) && !jinja_list_of_tuple(v))
        rc = jinja_fail(rt, QVLM_E_INVALID, "'list' object has no attribute 'splitlines'");
    else if (jinja_is_seq(v))
        rc = jinja_fail(rt, QVLM_E_INVALID, "can only concatenate tuple (not \"str\") to tuple");
    else if (!jinja_is_str(v))
        rc = jinja_fail(rt, QVLM_E_INVALID, "unsupported operand type(s) for +=: '%s' and 'str'",
                        jinja_type_name(v));
    if (rc == QVLM_OK) rc = jinja_str(rt, v, &b);
    if (rc == QVLM_OK)
        rc = jinja_buf_putc(rt, &b, '\n'); /* Jinja's quirk so splitlines keeps a last empty line */
    if (rc == QVLM_OK) rc = jinja_buf_to_str(rt, &b, &s);
    if (rc == QVLM_OK) {
        rc = jinja_splitlines(rt, &s, false, &lines);
        jinja_release(rt, &s);
    }
    bool blank = truthy_arg(arg[2], false), first = truthy_arg(arg[1], false);
    for (size_t i = 0; rc == QVLM_OK && i < jinja_seq_len(&lines); i++) {
        jinja_value line = jinja_seq_at(&lines, i);
        if (i) rc = jinja_buf_putc(rt, &b, '\n');
        if (rc == QVLM_OK && ((i == 0 && first) || (i > 0 && (blank || line.u.s.n > 0))))
            rc = jinja_buf_put(rt, &b, ind.u.s.p, ind.u.s.n);
        if (rc == QVLM_OK) rc = jinja_buf_put(rt, &b, line.u.s.p, line.u.s.n);
    }
    if (rc == QVLM_OK) rc = jinja_buf_to_str(rt, &b, out);
    jinja_release(rt, &lines);
    jinja_buf_free(rt, &b);
    jinja_release(rt, &ind);
    return rc;
}

static qvlm_status f_wordcount(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    NO_ARGS("wordcount");
    jinja_value s = JINJA_UNSET;
    rc = soft_str(rt, v, &s);
    if (rc == QVLM_OK) rc = jinja_step(rt, s.u.s.n / 2); /* a category lookup per character */
    if (rc) return jinja_release(rt, &s), rc;
    int64_t words = 0;
    bool in_word = false;
    for (size_t i = 0; i < s.u.s.n;) {
        int32_t cp = jinja_utf8_next(s.u.s.p, s.u.s.n, &i);
        utf8proc_category_t c = utf8proc_category(cp);
        bool w = cp == '_' || (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
                 (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO); /* regex \w */
        words += w && !in_word;
        in_word = w;
    }
    jinja_release(rt, &s);
    *out = jinja_int(words);
    return QVLM_OK;
}

static qvlm_status f_format(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    if (a->n_kw && a->n_pos)
        return jinja_fail(rt, QVLM_E_INVALID,
                          "can't handle positional and keyword arguments at the same time");
    if (a->n_kw)
        return jinja_fail(rt, QVLM_E_UNSUPPORTED, "%s:%u: format() with keyword arguments is not supported",
                          rt->tpl->name, rt->line);
    jinja_value s = JINJA_UNSET, args = JINJA_UNSET;
    qvlm_status rc = soft_str(rt, v, &s);
    if (rc == QVLM_OK) rc = jinja_list_new(rt, a->n_pos, true, &args);
    for (size_t i = 0; rc == QVLM_OK && i < a->n_pos; i++) {
        jinja_value x = jinja_ref(&a->pos[i]);
        rc = jinja_list_push(rt, &args, &x);
    }
    if (rc == QVLM_OK) rc = jinja_percent_format(rt, &s, &args, out);
    jinja_release(rt, &args);
    jinja_release(rt, &s);
    return rc;
}

/* transformers: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) */
static qvlm_status f_tojson(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    BIND("tojson", "ensure_ascii", "indent", "separators", "sort_keys");
    if (rc) return rc;
    jinja_json_opts o = {.ensure_ascii = truthy_arg(arg[0], false),
                         .sort_keys = truthy_arg(arg[3], false),
                         .item_sep = ", ",
                         .key_sep = ": ",
                         .item_sep_n = 2,
                         .key_sep_n = 2};
    char spaces[64];
    if (arg[1] && arg[1]->kind != JV_NONE) {
        o.has_indent = true;
        o.item_sep = ",";
        o.item_sep_n = 1;
        if (jinja_is_str(arg[1])) {
            o.indent = arg[1]->u.s.p;
            o.indent_n = arg[1]->u.s.n;
        } else if (jinja_is_int(arg[1])) {
            int64_t k = jinja_as_int(arg[1]);
            o.indent_n = k < 0 ? 0 : (size_t)QVLM_MIN(k, (int64_t)sizeof(spaces));
            memset(spaces, ' ', sizeof(spaces));
            o.indent = spaces;
        } else {
            return jinja_fail(rt, QVLM_E_INVALID, "indent must be an int or a str, not %s",
                              jinja_type_name(arg[1]));
        }
    }
    if (arg[2] && arg[2]->kind != JV_NONE) {
        jinja_value x = JINJA_UNSET, y = JINJA_UNSET;
        if (!jinja_is_seq(arg[2]) || jinja_seq_len(arg[2]) != 2 ||
            (x = jinja_seq_at(arg[2], 0), !jinja_is_str(&x)) ||
            (y = jinja_seq_at(arg[2], 1), !jinja_is_str(&y)))
            return jinja_fail(rt, QVLM_E_INVALID, "separators must be a pair of strings");
        o.item_sep = x.u.s.p, o.item_sep_n = x.u.s.n, o.key_sep = y.u.s.p, o.key_sep_n = y.u.s.n;
    }
    jinja_buf b = {0};
    rc = jinja_tojson(rt, v, &o, &b, 0);
    if (rc == QVLM_OK) rc = jinja_buf_to_str(rt, &b, out);
    jinja_buf_free(rt, &b);
    return rc;
}

/* ==== Filters: values and sequences ============================================================= */

static qvlm_status f_default(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    BIND("default", "default_value", "boolean");
    if (rc) return rc;
    bool use_default = jinja_is_undef(v) || (truthy_arg(arg[1], false) && !jinja_truthy(v));
    if (!use_default)
        *out = jinja_ref(v);
    else
        *out = arg[0] ? jinja_ref(arg[0]) : jinja_strv("", 0);
    return QVLM_OK;
}

static qvlm_status f_length(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    NO_ARGS("length");
    size_t n;
    if (!jinja_len(v, &n))
        return jinja_fail(rt, QVLM_E_INVALID, "object of type '%s' has no len()", jinja_type_name(v));
    *out = jinja_int((int64_t)n);
    return jinja_is_str(v) ? jinja_step(rt, v->u.s.n / 16) : QVLM_OK; /* code points are counted */
}

static qvlm_status f_list(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    NO_ARGS("list");
    jinja_value items, all[3] = {jinja_none(), jinja_none(), jinja_none()};
    rc = jinja_iterate(rt, v, &items);
    if (rc) return rc;
    jinja_value plain = items; /* list(x) is a plain list, whatever x was (tuple, dict view) */
    if (plain.kind == JV_LIST) {
        jinja_list *l = jinja_list_of(&plain);
        rc = jinja_list_new(rt, l->n, false, out);
        for (size_t i = 0; rc == QVLM_OK && i < l->n; i++) {
            jinja_value x = jinja_ref(&l->items[i]);
            rc = jinja_list_push(rt, out, &x);
            if (rc) jinja_release(rt, out);
        }
    } else {
        rc = jinja_slice(rt, &items, all, out);
    }
    jinja_release(rt, &items);
    return rc;
}

static qvlm_status f_items(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    NO_ARGS("items");
    if (jinja_is_undef(v)) return jinja_list_new(rt, 0, false, out);
    if (!jinja_is_mapping(v))
        return jinja_fail(rt, QVLM_E_INVALID, "Can only get item pairs from a mapping.");
    return jinja_map_items(rt, v, out);
}

static qvlm_status first_last(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out,
                              bool last) {
    NO_ARGS(last ? "last" : "first");
    jinja_value items = JINJA_UNSET;
    if (last && !jinja_is_str(v) && !jinja_is_seq(v) && !jinja_is_mapping(v) && !jinja_is_undef(v))
        return jinja_fail(rt, QVLM_E_INVALID, "'%s' object is not reversible", jinja_type_name(v));
    rc = jinja_iterate(rt, v, &items);
    if (rc) return rc;
    size_t n = jinja_seq_len(&items);
    if (n == 0)
        rc = jinja_undef_new(rt, out, "No %s item, sequence was empty.", last ? "last" : "first");
    else {
        jinja_value x = jinja_seq_at(&items, last ? n - 1 : 0);
        *out = jinja_ref(&x);
    }
    jinja_release(rt, &items);
    return rc;
}

static qvlm_status f_first(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *o) {
    return first_last(rt, v, a, o, false);
}
static qvlm_status f_last(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *o) {
    return first_last(rt, v, a, o, true);
}

static qvlm_status f_join(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    BIND("join", "d", "attribute");
    jinja_value items = JINJA_UNSET;
    if (rc == QVLM_OK) rc = jinja_iterate(rt, v, &items);
    if (rc) return rc;
    jinja_buf b = {0};
    for (size_t i = 0; rc == QVLM_OK && i < jinja_seq_len(&items); i++) {
        jinja_value x = jinja_seq_at(&items, i), y;
        if (i && arg[0]) rc = jinja_str(rt, arg[0], &b);
        if (rc == QVLM_OK) rc = get_path(rt, &x, arg[1], NULL, &y);
        if (rc == QVLM_OK) {
            rc = jinja_str(rt, &y, &b);
            jinja_release(rt, &y);
        }
    }
    if (rc == QVLM_OK) rc = jinja_buf_to_str(rt, &b, out);
    jinja_buf_free(rt, &b);
    jinja_release(rt, &items);
    return rc;
}

static qvlm_status f_reverse(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    NO_ARGS("reverse");
    jinja_value items, parts[3] = {jinja_none(), jinja_none(), jinja_int(-1)};
    if (jinja_is_str(v)) return jinja_slice(rt, v, parts, out);
    if (!jinja_is_seq(v) && !jinja_is_mapping(v) && !jinja_is_undef(v))
        return jinja_fail(rt, QVLM_E_INVALID, "argument must be iterable");
    rc = jinja_iterate(rt, v, &items);
    if (rc) return rc;
    rc = jinja_slice(rt, &items, parts, out);
    if (rc == QVLM_OK) jinja_list_of(out)->is_tuple = false;
    jinja_release(rt, &items);
    return rc;
}

static qvlm_status f_sort(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    BIND("sort", "reverse", "case_sensitive", "attribute");
    jinja_value items = JINJA_UNSET;
    if (rc == QVLM_OK) rc = jinja_iterate(rt, v, &items);
    if (rc) return rc;
    rc = sort_by(rt, &items, arg[2], truthy_arg(arg[1], false), truthy_arg(arg[0], false), out);
    jinja_release(rt, &items);
    return rc;
}

static qvlm_status f_dictsort(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    BIND("dictsort", "case_sensitive", "by", "reverse");
    int pos = 0;
    if (rc == QVLM_OK && arg[1]) {
        if (str_is(arg[1], "value"))
            pos = 1;
        else if (!str_is(arg[1], "key"))
            rc = jinja_fail(rt, QVLM_E_INVALID, "You can only sort by either \"key\" or \"value\"");
    }
    if (rc == QVLM_OK && jinja_is_undef(v)) rc = jinja_undef_fail(rt, v); /* value.items() on Undefined */
    if (rc == QVLM_OK && !jinja_is_mapping(v))
        rc = jinja_fail(rt, QVLM_E_INVALID, "'%s' object has no attribute 'items'", jinja_type_name(v));
    jinja_value items, key = jinja_int(pos);
    if (rc == QVLM_OK) rc = jinja_map_items(rt, v, &items);
    if (rc) return rc;
    rc = sort_by(rt, &items, &key, truthy_arg(arg[0], false), truthy_arg(arg[2], false), out);
    jinja_release(rt, &items);
    return rc;
}

static qvlm_status f_unique(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    BIND("unique", "case_sensitive", "attribute");
    jinja_value items = JINJA_UNSET, seen = JINJA_UNSET;
    if (rc == QVLM_OK) rc = jinja_iterate(rt, v, &items);
    if (rc) return rc;
    rc = jinja_list_new(rt, 0, false, out);
    if (rc == QVLM_OK)
        rc = jinja_list_new(rt, 0, false, &seen);
    else
        seen = jinja_undefined();
    for (size_t i = 0; rc == QVLM_OK && i < jinja_seq_len(&items); i++) {
        jinja_value x = jinja_seq_at(&items, i), k = JINJA_UNSET;
        rc = sort_key(rt, &x, arg[1], truthy_arg(arg[0], false), &k);
        bool dup = false;
        for (size_t j = 0; rc == QVLM_OK && !dup && j < jinja_seq_len(&seen); j++) {
            jinja_value s = jinja_seq_at(&seen, j);
            rc = jinja_eq(rt, &s, &k, &dup);
        }
        if (rc == QVLM_OK && !dup) {
            jinja_value keep = jinja_ref(&x);
            rc = jinja_list_push(rt, &seen, &k);
            if (rc == QVLM_OK)
                rc = jinja_list_push(rt, out, &keep);
            else
                jinja_release(rt, &keep);
        } else {
            jinja_release(rt, &k);
        }
    }
    if (rc) jinja_release(rt, out);
    jinja_release(rt, &seen);
    jinja_release(rt, &items);
    return rc;
}

/* Python's max() / min(): one pass keeping the first best item, comparing item > best (or
 * item < best) on the keys, so a TypeError names the operands in that order. */
static qvlm_status min_max(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out,
                           bool max) {
    BIND(max ? "max" : "min", "case_sensitive", "attribute");
    jinja_value items = JINJA_UNSET, best_key = JINJA_UNSET;
    if (rc == QVLM_OK) rc = jinja_iterate(rt, v, &items);
    if (rc) return rc;
    size_t n = jinja_seq_len(&items), best = 0;
    bool cs = truthy_arg(arg[0], false);
    jinja_value first = n ? jinja_seq_at(&items, 0) : jinja_undefined();
    if (n == 0)
        rc = jinja_undef_new(rt, out, "No aggregated item, sequence was empty.");
    else
        rc = sort_key(rt, &first, arg[1], cs, &best_key);
    for (size_t i = 1; rc == QVLM_OK && i < n; i++) {
        jinja_value x = jinja_seq_at(&items, i), k = JINJA_UNSET;
        int c = 0;
        rc = sort_key(rt, &x, arg[1], cs, &k);
        if (rc == QVLM_OK) rc = jinja_cmp(rt, &k, &best_key, max ? ">" : "<", &c);
        if (rc == QVLM_OK && (max ? c > 0 : c < 0)) {
            jinja_release(rt, &best_key);
            best_key = k;
            best = i;
        } else {
            jinja_release(rt, &k);
        }
    }
    if (rc == QVLM_OK && n) {
        jinja_value x = jinja_seq_at(&items, best);
        *out = jinja_ref(&x);
    }
    jinja_release(rt, &best_key);
    jinja_release(rt, &items);
    return rc;
}

static qvlm_status f_max(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *o) {
    return min_max(rt, v, a, o, true);
}
static qvlm_status f_min(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *o) {
    return min_max(rt, v, a, o, false);
}

static qvlm_status f_sum(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    BIND("sum", "attribute", "start");
    jinja_value items, acc = arg[1] ? jinja_ref(arg[1]) : jinja_int(0);
    if (rc == QVLM_OK) rc = jinja_iterate(rt, v, &items);
    if (rc) return jinja_release(rt, &acc), rc;
    for (size_t i = 0; rc == QVLM_OK && i < jinja_seq_len(&items); i++) {
        jinja_value x = jinja_seq_at(&items, i), y, next;
        rc = get_path(rt, &x, arg[0], NULL, &y);
        if (rc == QVLM_OK) {
            rc = jinja_binop(rt, JO_ADD, &acc, &y, &next);
            jinja_release(rt, &y);
        }
        if (rc == QVLM_OK) {
            jinja_release(rt, &acc);
            acc = next;
        }
    }
    jinja_release(rt, &items);
    if (rc)
        jinja_release(rt, &acc);
    else
        *out = acc;
    return rc;
}

/* map(filter, *args) or map(attribute=..., default=...). */
static qvlm_status f_map(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    const jinja_value *attr = NULL, *dflt = NULL;
    for (size_t k = 0; k < a->n_kw && a->n_pos == 0; k++) {
        if (strcmp(a->kw_names[k], "attribute") == 0)
            attr = &a->kw[k];
        else if (strcmp(a->kw_names[k], "default") == 0)
            dflt = &a->kw[k];
        else
            return jinja_fail(rt, QVLM_E_INVALID, "Unexpected keyword argument '%s'", a->kw_names[k]);
    }
    if (!jinja_truthy(v)) return jinja_list_new(rt, 0, false, out); /* sync_do_map starts with `if value:` */
    if (!attr && a->n_pos == 0) return jinja_fail(rt, QVLM_E_INVALID, "map requires a filter argument");
    if (!attr && !jinja_is_str(&a->pos[0]))
        return jinja_fail(rt, QVLM_E_INVALID, "map requires a filter name");
    jinja_value items = JINJA_UNSET;
    qvlm_status rc = jinja_iterate(rt, v, &items);
    if (rc) return rc;
    jinja_args rest = {a->n_pos ? a->n_pos - 1 : 0, a->pos + (a->n_pos ? 1 : 0), a->n_kw, a->kw_names, a->kw};
    rc = jinja_list_new(rt, jinja_seq_len(&items), false, out);
    for (size_t i = 0; rc == QVLM_OK && i < jinja_seq_len(&items); i++) {
        jinja_value x = jinja_seq_at(&items, i), y;
        rc = attr ? get_path(rt, &x, attr, dflt, &y)
                  : jinja_apply_filter(rt, a->pos[0].u.s.p, a->pos[0].u.s.n, &x, &rest, &y);
        if (rc == QVLM_OK) rc = jinja_list_push(rt, out, &y);
    }
    if (rc) jinja_release(rt, out);
    jinja_release(rt, &items);
    return rc;
}

/* select / reject / selectattr / rejectattr */
static qvlm_status select_common(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out,
                                 bool by_attr, bool keep_if) {
    size_t off = by_attr ? 1 : 0;
    if (!jinja_truthy(v)) return jinja_list_new(rt, 0, false, out); /* select_or_reject: `if value:` */
    if (by_attr && a->n_pos < 1)
        return jinja_fail(rt, QVLM_E_INVALID, "Missing parameter for attribute name");
    const jinja_value *test = a->n_pos > off ? &a->pos[off] : NULL;
    if (test && !jinja_is_str(test)) return jinja_fail(rt, QVLM_E_INVALID, "test name must be a string");
    jinja_args rest = {test ? a->n_pos - off - 1 : 0, a->pos + off + 1, a->n_kw, a->kw_names, a->kw};
    jinja_value items = JINJA_UNSET;
    qvlm_status rc = jinja_iterate(rt, v, &items);
    if (rc) return rc;
    rc = jinja_list_new(rt, 0, false, out);
    for (size_t i = 0; rc == QVLM_OK && i < jinja_seq_len(&items); i++) {
        jinja_value x = jinja_seq_at(&items, i), y;
        bool r;
        rc = get_path(rt, &x, by_attr ? &a->pos[0] : NULL, NULL, &y);
        if (rc) break;
        if (test)
            rc = jinja_apply_test(rt, test->u.s.p, test->u.s.n, &y, &rest, &r);
        else
            r = jinja_truthy(&y);
        jinja_release(rt, &y);
        if (rc == QVLM_OK && r == keep_if) {
            jinja_value keep = jinja_ref(&x);
            rc = jinja_list_push(rt, out, &keep);
        }
    }
    if (rc) jinja_release(rt, out);
    jinja_release(rt, &items);
    return rc;
}

static qvlm_status f_select(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *o) {
    return select_common(rt, v, a, o, false, true);
}
static qvlm_status f_reject(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *o) {
    return select_common(rt, v, a, o, false, false);
}
static qvlm_status f_selectattr(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *o) {
    return select_common(rt, v, a, o, true, true);
}
static qvlm_status f_rejectattr(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *o) {
    return select_common(rt, v, a, o, true, false);
}

static qvlm_status f_attr(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    BIND("attr", "name");
    if (rc == QVLM_OK && (!arg[0] || !jinja_is_str(arg[0])))
        rc = jinja_fail(rt, QVLM_E_INVALID, "attr() needs a name");
    if (rc) return rc;
    /* do_attr uses getattr only: a dict key is not an attribute */
    if (jinja_is_mapping(v) && !jinja_is_undef(v)) {
        jinja_value probe = JINJA_UNSET;
        rc = jinja_getitem(rt, v, arg[0], &probe);
        if (rc) return rc;
        bool is_method = probe.kind == JV_FUNC;
        if (is_method) return *out = probe, QVLM_OK;
        jinja_release(rt, &probe);
        return jinja_undef_missing(rt, v, arg[0], out);
    }
    return jinja_getattr(rt, v, arg[0]->u.s.p, arg[0]->u.s.n, out);
}

/* ==== Filters: numbers ========================================================================== */

static qvlm_status f_abs(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    NO_ARGS("abs");
    if (v->kind == JV_FLOAT)
        *out = jinja_float(fabs(v->u.f));
    else if (jinja_is_int(v) && jinja_as_int(v) != INT64_MIN)
        *out = jinja_int(llabs(jinja_as_int(v)));
    else if (jinja_is_int(v))
        return jinja_fail(rt, QVLM_E_UNSUPPORTED, "integer overflow (Python would use a big integer)");
    else /* Undefined has no __abs__ either */
        return jinja_fail(rt, QVLM_E_INVALID, "bad operand type for abs(): '%s'", jinja_type_name(v));
    return QVLM_OK;
}

static qvlm_status f_int(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    BIND("int", "default", "base");
    int64_t base = 10, i;
    double d;
    if (rc == QVLM_OK && arg[1]) rc = need_int_arg(rt, arg[1], "base", &base);
    if (rc == QVLM_OK && jinja_is_str(v)) rc = jinja_step(rt, v->u.s.n / 2); /* whitespace is stripped */
    if (rc == QVLM_OK && jinja_is_undef(v)) rc = jinja_undef_fail(rt, v); /* int(Undefined) raises */
    if (rc) return rc;
    if (jinja_is_int(v)) return *out = jinja_int(jinja_as_int(v)), QVLM_OK;
    if (v->kind == JV_FLOAT && fabs(v->u.f) < 9.2e18) return *out = jinja_int((int64_t)v->u.f), QVLM_OK;
    if (jinja_is_str(v) && jinja_parse_int(v->u.s.p, v->u.s.n, (int)base, &i))
        return *out = jinja_int(i), QVLM_OK;
    /* "42.23"|int gives 42 through float() */
    if (jinja_is_str(v) && jinja_parse_float(v->u.s.p, v->u.s.n, &d) && fabs(d) < 9.2e18)
        return *out = jinja_int((int64_t)d), QVLM_OK;
    *out = arg[0] ? jinja_ref(arg[0]) : jinja_int(0);
    return QVLM_OK;
}

static qvlm_status f_float(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    BIND("float", "default");
    double d;
    if (rc == QVLM_OK && jinja_is_str(v)) rc = jinja_step(rt, v->u.s.n / 2); /* whitespace is stripped */
    if (rc == QVLM_OK && jinja_is_undef(v)) rc = jinja_undef_fail(rt, v); /* float(Undefined) raises */
    if (rc) return rc;
    if (jinja_is_num(v))
        *out = jinja_float(jinja_as_float(v));
    else if (jinja_is_str(v) && jinja_parse_float(v->u.s.p, v->u.s.n, &d))
        *out = jinja_float(d);
    else
        *out = arg[0] ? jinja_ref(arg[0]) : jinja_float(0.0);
    return QVLM_OK;
}

/* round(value, precision): Python's round is correctly rounded, as printf's %.*f is. */
static qvlm_status f_round(jinja_rt *rt, const jinja_value *v, const jinja_args *a, jinja_value *out) {
    BIND("round", "precision", "method");
    int64_t prec = 0;
    if (rc == QVLM_OK && arg[0]) rc = need_int_arg(rt, arg[0], "precision", &prec);
    enum { COMMON, CEIL, FLOOR } method = COMMON;
    if (rc == QVLM_OK && arg[1]) {
        if (str_is(arg[1], "ceil"))
            method = CEIL;
        else if (str_is(arg[1], "floor"))
            method = FLOOR;
        else if (!str_is(arg[1], "common"))
            rc = jinja_fail(rt, QVLM_E_INVALID, "method must be common, ceil or floor");
    }
    if (rc) return rc;
    if (!jinja_is_num(v) && method == COMMON) /* round(value, precision) */
        return jinja_fail(rt, QVLM_E_INVALID, "type %s doesn't define __round__ method", jinja_type_name(v));
    if (!jinja_is_num(v)) { /* math.ceil / floor(value * 10 ** precision) */
        jinja_value scale = jinja_int(1), tmp = JINJA_UNSET;
        rc = jinja_binop(rt, JO_MUL, v, &scale, &tmp); /* raises Python's TypeError (or the undefined's) */
        jinja_release(rt, &tmp);
        return rc ? rc : jinja_fail(rt, QVLM_E_INVALID, "must be real number, not %s", jinja_type_name(v));
    }
    if (prec > 300) prec = 300;
    if (prec < -300) prec = -300;
    double x = jinja_as_float(v), scale = pow(10.0, (double)prec);
    if (method == CEIL) return *out = jinja_float(ceil(x * scale) / scale), QVLM_OK;
    if (method == FLOOR) return *out = jinja_float(floor(x * scale) / scale), QVLM_OK;
    if (v->kind != JV_FLOAT && prec >= 0)
        return *out = jinja_int(jinja_as_int(v)), QVLM_OK; /* round(int) is int */
    char buf[512];
    if (prec >= 0)
        snprintf(buf, sizeof(buf), "%.*f", (int)prec, x);
    else
        snprintf(buf, sizeof(buf), "%.0f", x / pow(10.0, (double)-prec));
    double r = strtod(buf, NULL);
    if (prec < 0) r *= pow(10.0, (double)-prec);
    *out = v->kind == JV_FLOAT ? jinja_float(r) : jinja_int((int64_t)r);
    return QVLM_OK;
}

static const jinja_filter_def FILTERS[] = {
    {"abs", f_abs},
    {"attr", f_attr},
    {"capitalize", f_capitalize},
    {"center", f_center},
    {"count", f_length},
    {"d", f_default},
    {"default", f_default},
    {"dictsort", f_dictsort},
    {"e", f_escape},
    {"escape", f_escape},
    {"first", f_first},
    {"float", f_float},
    {"format", f_format},
    {"indent", f_indent},
    {"int", f_int},
    {"items", f_items},
    {"join", f_join},
    {"last", f_last},
    {"length", f_length},
    {"list", f_list},
    {"lower", f_lower},
    {"map", f_map},
    {"max", f_max},
    {"min", f_min},
    {"reject", f_reject},
    {"rejectattr", f_rejectattr},
    {"replace", f_replace},
    {"reverse", f_reverse},
    {"round", f_round},
    {"safe", f_string},
    {"select", f_select},
    {"selectattr", f_selectattr},
    {"sort", f_sort},
    {"string", f_string},
    {"sum", f_sum},
    {"title", f_title},
    {"tojson", f_tojson},
    {"trim", f_trim},
    {"unique", f_unique},
    {"upper", f_upper},
    {"wordcount", f_wordcount},
};

/* ==== Tests ===================================================================================== */

static qvlm_status one_arg(jinja_rt *rt, const char *name, const jinja_args *a, const jinja_value **x) {
    static const char *const params[] = {"other"};
    qvlm_status rc = jinja_bind(rt, name, a, params, 1, x);
    if (rc == QVLM_OK && !x[0])
        rc = jinja_fail(rt, QVLM_E_INVALID, "%s() missing 1 required positional argument", name);
    return rc;
}

static qvlm_status t_no_args(jinja_rt *rt, const char *name, const jinja_args *a) {
    const jinja_value *arg[1];
    return jinja_bind(rt, name, a, NULL, 0, arg);
}

#define SIMPLE_TEST(fn, name, expr)                                                                          \
    static qvlm_status fn(jinja_rt *rt, const jinja_value *v, const jinja_args *a, bool *out) {              \
        qvlm_status rc = t_no_args(rt, name, a);                                                             \
        *out = (expr);                                                                                       \
        return rc;                                                                                           \
    }

SIMPLE_TEST(t_defined, "defined", !jinja_is_undef(v))
SIMPLE_TEST(t_undefined, "undefined", jinja_is_undef(v))
SIMPLE_TEST(t_none, "none", v->kind == JV_NONE)
SIMPLE_TEST(t_boolean, "boolean", v->kind == JV_BOOL)
SIMPLE_TEST(t_true, "true", v->kind == JV_BOOL && v->u.b)
SIMPLE_TEST(t_false, "false", v->kind == JV_BOOL && !v->u.b)
SIMPLE_TEST(t_string, "string", jinja_is_str(v))
SIMPLE_TEST(t_number, "number", jinja_is_num(v))
SIMPLE_TEST(t_integer, "integer", v->kind == JV_INT)
SIMPLE_TEST(t_float, "float", v->kind == JV_FLOAT)
SIMPLE_TEST(t_mapping, "mapping", jinja_is_mapping(v))
SIMPLE_TEST(t_callable, "callable", v->kind == JV_MACRO || v->kind == JV_FUNC)
SIMPLE_TEST(t_escaped, "escaped", false)
/* iter() works on these: Undefined iterates as empty; a namespace has no __iter__. */
SIMPLE_TEST(t_iterable, "iterable",
            jinja_is_str(v) || jinja_is_seq(v) || jinja_is_mapping(v) || jinja_is_undef(v) ||
                v->kind == JV_LOOP)
/* len() and __getitem__: str, list, tuple, dict, and Undefined (whose __getitem__ raises). */
SIMPLE_TEST(t_sequence, "sequence",
            jinja_is_str(v) || (jinja_is_seq(v) && !jinja_is_view(v)) || jinja_is_mapping(v) ||
                jinja_is_undef(v))

static qvlm_status compare_test(jinja_rt *rt, const jinja_value *v, const jinja_args *a, bool *out,
                                const char *name, jinja_op op) {
    const jinja_value *x[1];
    qvlm_status rc = one_arg(rt, name, a, x);
    if (rc) return rc;
    int c;
    if (op == JO_EQ || op == JO_NE) {
        rc = jinja_eq(rt, v, x[0], out);
        if (op == JO_NE) *out = !*out;
        return rc;
    }
    static const char *const sym[] = {[JO_LT] = "<", [JO_LTEQ] = "<=", [JO_GT] = ">", [JO_GTEQ] = ">="};
    rc = jinja_cmp(rt, v, x[0], sym[op], &c);
    *out = op == JO_LT ? c < 0 : op == JO_LTEQ ? c <= 0 : op == JO_GT ? c > 0 : c >= 0;
    return rc;
}

#define CMP_TEST(fn, name, op)                                                                               \
    static qvlm_status fn(jinja_rt *rt, const jinja_value *v, const jinja_args *a, bool *o) {                \
        return compare_test(rt, v, a, o, name, op);                                                          \
    }
CMP_TEST(t_eq, "eq", JO_EQ)
CMP_TEST(t_ne, "ne", JO_NE)
CMP_TEST(t_lt, "lt", JO_LT)
CMP_TEST(t_le, "le", JO_LTEQ)
CMP_TEST(t_gt, "gt", JO_GT)
CMP_TEST(t_ge, "ge", JO_GTEQ)

static qvlm_status t_in(jinja_rt *rt, const jinja_value *v, const jinja_args *a, bool *out) {
    const jinja_value *x[1];
    qvlm_status rc = one_arg(rt, "in", a, x);
    return rc ? rc : jinja_contains(rt, x[0], v, out);
}

/* value % n == 0 with Python's %: numbers only. */
static qvlm_status divisible(jinja_rt *rt, const jinja_value *v, const jinja_value *n, bool *out) {
    jinja_value m, zero = jinja_int(0);
    qvlm_status rc = jinja_binop(rt, JO_MOD, v, n, &m);
    if (rc == QVLM_OK) {
        rc = jinja_eq(rt, &m, &zero, out);
        jinja_release(rt, &m);
    }
    return rc;
}

static qvlm_status t_divisibleby(jinja_rt *rt, const jinja_value *v, const jinja_args *a, bool *out) {
    const jinja_value *x[1];
    qvlm_status rc = one_arg(rt, "divisibleby", a, x);
    return rc ? rc : divisible(rt, v, x[0], out);
}

static qvlm_status t_even(jinja_rt *rt, const jinja_value *v, const jinja_args *a, bool *out) {
    jinja_value two = jinja_int(2);
    qvlm_status rc = t_no_args(rt, "even", a);
    return rc ? rc : divisible(rt, v, &two, out);
}

/* value % 2 == 1: 0.5 is neither odd nor even */
static qvlm_status t_odd(jinja_rt *rt, const jinja_value *v, const jinja_args *a, bool *out) {
    jinja_value two = jinja_int(2), one = jinja_int(1), m = JINJA_UNSET;
    qvlm_status rc = t_no_args(rt, "odd", a);
    if (rc == QVLM_OK) rc = jinja_binop(rt, JO_MOD, v, &two, &m);
    if (rc == QVLM_OK) rc = jinja_eq(rt, &m, &one, out);
    jinja_release(rt, &m);
    return rc;
}

static qvlm_status case_test(jinja_rt *rt, const jinja_value *v, const jinja_args *a, bool *out,
                             const char *method) {
    jinja_value s = JINJA_UNSET, fn = JINJA_UNSET, r = JINJA_UNSET;
    qvlm_status rc = t_no_args(rt, method, a);
    if (rc == QVLM_OK) rc = jinja_to_str(rt, v, &s);
    if (rc) return rc;
    rc = jinja_getattr(rt, &s, method, strlen(method), &fn);
    jinja_args none = {0};
    if (rc == QVLM_OK) {
        rc = jinja_call(rt, &fn, &none, &r);
        jinja_release(rt, &fn);
    }
    if (rc == QVLM_OK) *out = jinja_truthy(&r);
    jinja_release(rt, &s);
    return rc;
}

static qvlm_status t_lower(jinja_rt *rt, const jinja_value *v, const jinja_args *a, bool *o) {
    return case_test(rt, v, a, o, "islower");
}
static qvlm_status t_upper(jinja_rt *rt, const jinja_value *v, const jinja_args *a, bool *o) {
    return case_test(rt, v, a, o, "isupper");
}

/* `x is sameas y`: identity. Singletons and small ints are identical in CPython. */
static qvlm_status t_sameas(jinja_rt *rt, const jinja_value *v, const jinja_args *a, bool *out) {
    const jinja_value *x[1];
    qvlm_status rc = one_arg(rt, "sameas", a, x);
    if (rc) return rc;
    const jinja_value *y = x[0];
    if (v->kind != y->kind)
        *out = false;
    else if (v->kind == JV_NONE || v->kind == JV_UNDEF)
        *out = v->kind == JV_NONE || v->u.o == y->u.o;
    else if (v->kind == JV_BOOL)
        *out = v->u.b == y->u.b;
    else if (v->kind == JV_INT)
        *out = v->u.i == y->u.i && v->u.i >= -5 && v->u.i <= 256;
    else if (v->kind == JV_FLOAT)
        *out = false;
    else if (v->kind == JV_STR)
        *out = v->u.s.p == y->u.s.p && v->u.s.n == y->u.s.n;
    else if (v->kind == JV_JARR || v->kind == JV_JOBJ)
        *out = v->u.j == y->u.j;
    else
        *out = v->u.o == y->u.o;
    return QVLM_OK;
}

static qvlm_status t_filter(jinja_rt *rt, const jinja_value *v, const jinja_args *a, bool *out) {
    qvlm_status rc = t_no_args(rt, "filter", a);
    *out = jinja_is_str(v) && jinja_filter_find(v->u.s.p, v->u.s.n) != NULL;
    return rc;
}

static qvlm_status t_test(jinja_rt *rt, const jinja_value *v, const jinja_args *a, bool *out) {
    qvlm_status rc = t_no_args(rt, "test", a);
    *out = jinja_is_str(v) && jinja_test_find(v->u.s.p, v->u.s.n) != NULL;
    return rc;
}

static const jinja_test_def TESTS[] = {
    {"boolean", t_boolean},
    {"callable", t_callable},
    {"defined", t_defined},
    {"divisibleby", t_divisibleby},
    {"eq", t_eq},
    {"equalto", t_eq},
    {"==", t_eq},
    {"escaped", t_escaped},
    {"even", t_even},
    {"false", t_false},
    {"filter", t_filter},
    {"float", t_float},
    {"ge", t_ge},
    {">=", t_ge},
    {"gt", t_gt},
    {"greaterthan", t_gt},
    {">", t_gt},
    {"in", t_in},
    {"integer", t_integer},
    {"iterable", t_iterable},
    {"le", t_le},
    {"<=", t_le},
    {"lower", t_lower},
    {"lt", t_lt},
    {"lessthan", t_lt},
    {"<", t_lt},
    {"mapping", t_mapping},
    {"ne", t_ne},
    {"!=", t_ne},
    {"none", t_none},
    {"number", t_number},
    {"odd", t_odd},
    {"sameas", t_sameas},
    {"sequence", t_sequence},
    {"string", t_string},
    {"test", t_test},
    {"true", t_true},
    {"undefined", t_undefined},
    {"upper", t_upper},
};

/* ==== Lookup ==================================================================================== */

const jinja_filter_def *jinja_filter_find(const char *name, size_t n) {
    for (size_t i = 0; i < sizeof(FILTERS) / sizeof(FILTERS[0]); i++)
        if (strlen(FILTERS[i].name) == n && memcmp(FILTERS[i].name, name, n) == 0) return &FILTERS[i];
    return NULL;
}

const jinja_test_def *jinja_test_find(const char *name, size_t n) {
    for (size_t i = 0; i < sizeof(TESTS) / sizeof(TESTS[0]); i++)
        if (strlen(TESTS[i].name) == n && memcmp(TESTS[i].name, name, n) == 0) return &TESTS[i];
    return NULL;
}

qvlm_status jinja_apply_test(jinja_rt *rt, const char *name, size_t n, const jinja_value *v,
                             const jinja_args *a, bool *out) {
    const jinja_test_def *t = jinja_test_find(name, n);
    if (!t)
        return jinja_fail(rt, QVLM_E_UNSUPPORTED, "%s:%u: no test named '%.*s'", rt->tpl->name, rt->line,
                          (int)QVLM_MIN(n, 100), name);
    return t->fn(rt, v, a, out);
}

qvlm_status jinja_apply_filter(jinja_rt *rt, const char *name, size_t n, const jinja_value *v,
                               const jinja_args *a, jinja_value *out) {
    const jinja_filter_def *f = jinja_filter_find(name, n);
    if (!f)
        return jinja_fail(rt, QVLM_E_UNSUPPORTED, "%s:%u: no filter named '%.*s'", rt->tpl->name, rt->line,
                          (int)QVLM_MIN(n, 100), name);
    return f->fn(rt, v, a, out);
}
