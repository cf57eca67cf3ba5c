/* jinja_methods.c - attribute and item access, Python methods of str / dict / list, and the
 * template globals (range, dict, namespace, raise_exception, strftime_now).
 *
 * Attribute access is the sandbox's getattr: Python attributes first (so `d.items` is the
 * method even when d has an "items" key), then items; item access is obj[key] first, then
 * attributes for string keys. What is missing becomes an Undefined carrying Jinja's message
 * ("'dict object' has no attribute 'x'"). Mutating methods (list.append, dict.update...) are
 * refused as ImmutableSandboxedEnvironment does ("access to attribute 'append' of 'list'
 * object is unsafe."). dict.keys()/values()/items() return lists: they iterate, compare and
 * serialize as Python's views do, but print as lists.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "model/jinja.h"

/* ==== Arguments ================================================================================= */

qvlm_status jinja_bind(jinja_rt *rt, const char *fname, const jinja_args *a, const char *const *params,
                       size_t n_params, const jinja_value **slots) {
    for (size_t i = 0; i < n_params; i++) slots[i] = NULL;
    if (a->n_pos > n_params)
        return jinja_fail(rt, QVLM_E_INVALID, "%s() takes at most %zu argument%s (%zu given)", fname,
                          n_params, n_params == 1 ? "" : "s", a->n_pos);
    for (size_t i = 0; i < a->n_pos; i++) slots[i] = &a->pos[i];
    for (size_t k = 0; k < a->n_kw; k++) {
        size_t i = 0;
        while (i < n_params && strcmp(params[i], a->kw_names[k]) != 0) i++;
        if (i == n_params)
            return jinja_fail(rt, QVLM_E_INVALID, "%s() got an unexpected keyword argument '%s'", fname,
                              a->kw_names[k]);
        if (slots[i])
            return jinja_fail(rt, QVLM_E_INVALID, "%s() got multiple values for argument '%s'", fname,
                              a->kw_names[k]);
        slots[i] = &a->kw[k];
    }
    return QVLM_OK;
}

static qvlm_status need(jinja_rt *rt, const char *fname, const jinja_value *slot, const char *param) {
    if (slot) return QVLM_OK;
    return jinja_fail(rt, QVLM_E_INVALID, "%s() missing required argument: '%s'", fname, param);
}

static qvlm_status need_str(jinja_rt *rt, const char *what, const jinja_value *v) {
    if (jinja_is_str(v)) return QVLM_OK;
    if (jinja_is_undef(v)) return jinja_undef_fail(rt, v);
    return jinja_fail(rt, QVLM_E_INVALID, "%s must be str, not %s", what, jinja_type_name(v));
}

static qvlm_status need_int(jinja_rt *rt, const jinja_value *v, int64_t *out) {
    if (jinja_is_int(v)) {
        *out = jinja_as_int(v);
        return QVLM_OK;
    }
    if (jinja_is_undef(v)) return jinja_undef_fail(rt, v);
    return jinja_fail(rt, QVLM_E_INVALID, "'%s' object cannot be interpreted as an integer",
                      jinja_type_name(v));
}

#define BIND(name, ...)                                                                                      \
    static const char *const params_[] = {__VA_ARGS__};                                                      \
    const jinja_value *arg[sizeof(params_) / sizeof(params_[0])];                                            \
    qvlm_status rc = jinja_bind(rt, name, a, params_, sizeof(params_) / sizeof(params_[0]), arg)

qvlm_status jinja_func_new(jinja_rt *rt, const jinja_func_def *def, const jinja_value *self,
                           jinja_value *out) {
    jinja_func *f;
    qvlm_status rc = jinja_obj_new(rt, JO_FUNC, sizeof(*f), (void **)&f);
    if (rc) return rc;
    f->def = def;
    f->self = self ? jinja_ref(self) : jinja_undefined();
    out->kind = JV_FUNC;
    out->u.o = &f->h;
    return QVLM_OK;
}

/* ==== str methods =============================================================================== */

static qvlm_status case_method(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out,
                               jinja_case mode, const char *name) {
    const char *const *none = NULL;
    const jinja_value *arg[1];
    qvlm_status rc = jinja_bind(rt, name, a, none, 0, arg);
    return rc ? rc : jinja_case_map(rt, self, mode, out);
}

static qvlm_status m_upper(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return case_method(rt, s, a, o, JC_UPPER, "upper");
}
static qvlm_status m_lower(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return case_method(rt, s, a, o, JC_LOWER, "lower");
}
static qvlm_status m_title(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return case_method(rt, s, a, o, JC_TITLE_WORDS, "title");
}
static qvlm_status m_capitalize(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return case_method(rt, s, a, o, JC_CAPITALIZE, "capitalize");
}
static qvlm_status m_swapcase(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return case_method(rt, s, a, o, JC_SWAPCASE, "swapcase");
}

static qvlm_status strip_method(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out,
                                bool left, bool right, const char *name) {
    BIND(name, "chars");
    if (rc) return rc;
    const char *chars = NULL;
    size_t chars_n = 0, off, len;
    if (arg[0] && arg[0]->kind != JV_NONE) {
        if (!jinja_is_str(arg[0])) return jinja_fail(rt, QVLM_E_INVALID, "%s arg must be None or str", name);
        chars = arg[0]->u.s.p;
        chars_n = arg[0]->u.s.n;
    }
    jinja_strip(self->u.s.p, self->u.s.n, chars, chars_n, left, right, &off, &len);
    rc = jinja_step(rt, (self->u.s.n - len) * (1 + chars_n / 16) / 2); /* per-character walk */
    if (rc == QVLM_OK) *out = jinja_str_sub(self, off, len);
    return rc;
}

static qvlm_status m_strip(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return strip_method(rt, s, a, o, true, true, "strip");
}
static qvlm_status m_lstrip(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return strip_method(rt, s, a, o, true, false, "lstrip");
}
static qvlm_status m_rstrip(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return strip_method(rt, s, a, o, false, true, "rstrip");
}

static qvlm_status push_sub(jinja_rt *rt, jinja_value *list, const jinja_value *s, size_t from, size_t to) {
    jinja_value part = jinja_str_sub(s, from, to - from);
    return jinja_list_push(rt, list, &part);
}

/* str.split() without a separator: runs of whitespace, ends ignored. */
static qvlm_status split_ws(jinja_rt *rt, const jinja_value *s, int64_t maxsplit, jinja_value *out) {
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, i = 0;
    qvlm_status rc = QVLM_OK;
    while (rc == QVLM_OK && maxsplit-- != 0) {
        size_t j = i;
        while (i < n && (j = i, jinja_py_isspace(jinja_utf8_next(p, n, &j)))) i = j;
        if (i >= n) break;
        size_t start = i;
        while (i < n && (j = i, !jinja_py_isspace(jinja_utf8_next(p, n, &j)))) i = j;
        rc = push_sub(rt, out, s, start, i);
    }
    if (rc == QVLM_OK && i < n) {
        size_t j = i;
        while (i < n && (j = i, jinja_py_isspace(jinja_utf8_next(p, n, &j)))) i = j;
        if (i < n) rc = push_sub(rt, out, s, i, n);
    }
    return rc;
}

static qvlm_status split_sep(jinja_rt *rt, const jinja_value *s, const jinja_value *sep, int64_t maxsplit,
                             jinja_value *out) {
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, k = sep->u.s.n, i = 0;
    qvlm_status rc = QVLM_OK;
    while (rc == QVLM_OK && maxsplit-- != 0) {
        const char *hit = memmem(p + i, n - i, sep->u.s.p, k);
        if (!hit) break;
        rc = push_sub(rt, out, s, i, (size_t)(hit - p));
        i = (size_t)(hit - p) + k;
    }
    return rc ? rc : push_sub(rt, out, s, i, n);
}

/* rsplit: split from the right, built reversed then flipped. */
static qvlm_status rsplit_sep(jinja_rt *rt, const jinja_value *s, const jinja_value *sep, int64_t maxsplit,
                              jinja_value *out) {
    const char *p = s->u.s.p;
    size_t k = sep->u.s.n, end = s->u.s.n;
    qvlm_status rc = QVLM_OK;
    while (rc == QVLM_OK && maxsplit-- != 0 && end >= k) {
        size_t pos = end - k + 1, found = SIZE_MAX;
        while (pos-- > 0)
            if (memcmp(p + pos, sep->u.s.p, k) == 0) {
                found = pos;
                break;
            }
        if (found == SIZE_MAX) break;
        rc = push_sub(rt, out, s, found + k, end);
        end = found;
    }
    if (rc == QVLM_OK) rc = push_sub(rt, out, s, 0, end);
    jinja_list *l = jinja_list_of(out);
    for (size_t i = 0; rc == QVLM_OK && i < l->n / 2; i++) {
        jinja_value t = l->items[i];
        l->items[i] = l->items[l->n - 1 - i];
        l->items[l->n - 1 - i] = t;
    }
    return rc;
}

static qvlm_status split_method(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out,
                                bool right) {
    BIND(right ? "rsplit" : "split", "sep", "maxsplit");
    int64_t maxsplit = -1;
    if (rc == QVLM_OK && arg[1]) rc = need_int(rt, arg[1], &maxsplit);
    if (rc == QVLM_OK && arg[0] && arg[0]->kind != JV_NONE) {
        rc = need_str(rt, "sep", arg[0]);
        if (rc == QVLM_OK && arg[0]->u.s.n == 0) rc = jinja_fail(rt, QVLM_E_INVALID, "empty separator");
    }
    size_t sep_n = arg[0] && jinja_is_str(arg[0]) ? arg[0]->u.s.n : 1;
    if (rc == QVLM_OK) rc = jinja_step(rt, (self->u.s.n / 64) * (1 + sep_n / 64)); /* scans of the text */
    if (rc == QVLM_OK) rc = jinja_list_new(rt, 0, false, out);
    if (rc) return rc;
    if (maxsplit < 0) maxsplit = -1;
    bool ws = !arg[0] || arg[0]->kind == JV_NONE;
    if (ws && rc == QVLM_OK) rc = jinja_step(rt, self->u.s.n / 2); /* isspace() per character */
    if (ws && right) { /* rsplit() on whitespace: only the maxsplit=-1 case equals split() */
        if (maxsplit != -1)
            rc = jinja_fail(rt, QVLM_E_UNSUPPORTED,
                            "rsplit() with maxsplit and no separator is not supported");
        else
            rc = split_ws(rt, self, -1, out);
    } else if (ws) {
        rc = split_ws(rt, self, maxsplit, out);
    } else {
        rc = right ? rsplit_sep(rt, self, arg[0], maxsplit, out) : split_sep(rt, self, arg[0], maxsplit, out);
    }
    if (rc) jinja_release(rt, out);
    return rc;
}

static qvlm_status m_split(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return split_method(rt, s, a, o, false);
}
static qvlm_status m_rsplit(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return split_method(rt, s, a, o, true);
}

/* Python's line boundaries for str.splitlines(). */
static size_t line_break_at(const char *p, size_t n, size_t i) {
    size_t j = i;
    int32_t cp = jinja_utf8_next(p, n, &j);
    if (cp == '\r' && j < n && p[j] == '\n') return j + 1 - i;
    bool brk = cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || (cp >= 0x1C && cp <= 0x1E) ||
               cp == 0x85 || cp == 0x2028 || cp == 0x2029;
    return brk ? j - i : 0;
}

qvlm_status jinja_splitlines(jinja_rt *rt, const jinja_value *s, bool keepends, jinja_value *out) {
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, start = 0, i = 0;
    qvlm_status rc = jinja_step(rt, n / 2); /* per-character walk */
    if (rc == QVLM_OK) rc = jinja_list_new(rt, 0, false, out);
    while (rc == QVLM_OK && i < n) {
        size_t k = line_break_at(p, n, i);
        if (!k) {
            jinja_utf8_next(p, n, &i);
            continue;
        }
        rc = push_sub(rt, out, s, start, keepends ? i + k : i);
        i += k;
        start = i;
    }
    if (rc == QVLM_OK && start < n) rc = push_sub(rt, out, s, start, n);
    if (rc) jinja_release(rt, out);
    return rc;
}

static qvlm_status m_splitlines(jinja_rt *rt, const jinja_value *self, const jinja_args *a,
                                jinja_value *out) {
    BIND("splitlines", "keepends");
    return rc ? rc : jinja_splitlines(rt, self, arg[0] && jinja_truthy(arg[0]), out);
}

/* The part of s that [start:end] (code point indices, Python slice rules) selects. */
static qvlm_status sub_range(jinja_rt *rt, const jinja_value *s, const jinja_value *start,
                             const jinja_value *end, jinja_value *out) {
    jinja_value parts[3] = {start ? *start : jinja_none(), end ? *end : jinja_none(), jinja_none()};
    for (int k = 0; k < 2; k++)
        if (parts[k].kind != JV_NONE && !jinja_is_int(&parts[k]))
            return jinja_fail(rt, QVLM_E_INVALID,
                              "slice indices must be integers or None or have an __index__ method");
    return jinja_slice(rt, s, parts, out);
}

static bool affix_match(const jinja_value *s, const jinja_value *x, bool end) {
    if (x->u.s.n > s->u.s.n) return false;
    const char *at = end ? s->u.s.p + s->u.s.n - x->u.s.n : s->u.s.p;
    return memcmp(at, x->u.s.p, x->u.s.n) == 0;
}

static qvlm_status affix_method(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out,
                                bool end) {
    const char *name = end ? "endswith" : "startswith";
    BIND(name, "prefix", "start", "end");
    if (rc == QVLM_OK) rc = need(rt, name, arg[0], "prefix");
    jinja_value s = JINJA_UNSET;
    if (rc == QVLM_OK) rc = sub_range(rt, self, arg[1], arg[2], &s);
    if (rc) return rc;
    bool hit = false;
    const jinja_value *x = arg[0];
    if (jinja_is_str(x)) {
        hit = affix_match(&s, x, end);
    } else if (x->kind == JV_LIST && jinja_list_of(x)->is_tuple) {
        for (size_t i = 0; rc == QVLM_OK && i < jinja_seq_len(x) && !hit; i++) {
            jinja_value item = jinja_seq_at(x, i);
            if (!jinja_is_str(&item))
                rc = jinja_fail(rt, QVLM_E_INVALID, "tuple for %s must only contain str, not %s", name,
                                jinja_type_name(&item));
            else
                hit = affix_match(&s, &item, end);
        }
    } else {
        rc = jinja_fail(rt, QVLM_E_INVALID, "%s first arg must be str or a tuple of str, not %s", name,
                        jinja_type_name(x));
    }
    jinja_release(rt, &s);
    *out = jinja_bool(hit);
    return rc;
}

static qvlm_status m_startswith(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return affix_method(rt, s, a, o, false);
}
static qvlm_status m_endswith(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return affix_method(rt, s, a, o, true);
}

qvlm_status jinja_str_replace(jinja_rt *rt, const jinja_value *s, const jinja_value *old,
                              const jinja_value *new_, int64_t count, jinja_value *out) {
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, i = 0;
    jinja_buf b = {0};
    qvlm_status rc = QVLM_OK;
    if (old->u.s.n == 0) { /* Python inserts `new` around every character */
        while (rc == QVLM_OK && count-- != 0) {
            rc = jinja_buf_put(rt, &b, new_->u.s.p, new_->u.s.n);
            if (i >= n) break;
            size_t j = i;
            jinja_utf8_next(p, n, &j);
            if (rc == QVLM_OK) rc = jinja_buf_put(rt, &b, p + i, j - i);
            i = j;
        }
    } else {
        while (rc == QVLM_OK && count-- != 0) {
            const char *hit = memmem(p + i, n - i, old->u.s.p, old->u.s.n);
            if (!hit) break;
            rc = jinja_buf_put(rt, &b, p + i, (size_t)(hit - p) - i);
            if (rc == QVLM_OK) rc = jinja_buf_put(rt, &b, new_->u.s.p, new_->u.s.n);
            i = (size_t)(hit - p) + old->u.s.n;
        }
    }
    if (rc == QVLM_OK) rc = jinja_buf_put(rt, &b, p + i, n - i);
    if (rc == QVLM_OK) rc = jinja_buf_to_str(rt, &b, out);
    jinja_buf_free(rt, &b);
    return rc;
}

static qvlm_status m_replace(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out) {
    BIND("replace", "old", "new", "count");
    int64_t count = -1;
    if (rc == QVLM_OK) rc = need(rt, "replace", arg[0], "old");
    if (rc == QVLM_OK) rc = need(rt, "replace", arg[1], "new");
    if (rc == QVLM_OK) rc = need_str(rt, "replace() argument 1", arg[0]);
    if (rc == QVLM_OK) rc = need_str(rt, "replace() argument 2", arg[1]);
    if (rc == QVLM_OK && arg[2]) rc = need_int(rt, arg[2], &count);
    return rc ? rc : jinja_str_replace(rt, self, arg[0], arg[1], count < 0 ? -1 : count, out);
}

/* find / rfind / index / rindex / count over the whole string. */
static qvlm_status search_method(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out,
                                 const char *name) {
    BIND(name, "sub");
    if (rc == QVLM_OK) rc = need(rt, name, arg[0], "sub");
    if (rc == QVLM_OK && !jinja_is_str(arg[0]))
        rc = jinja_fail(rt, QVLM_E_INVALID, "must be str, not %s", jinja_type_name(arg[0]));
    if (rc) return rc;
    const char *p = self->u.s.p, *sub = arg[0]->u.s.p;
    size_t n = self->u.s.n, k = arg[0]->u.s.n;
    bool rev = name[0] == 'r';
    rc = jinja_step(rt, (n / (rev ? 16 : 64)) * (1 + k / 64)); /* scans of the text */
    if (rc) return rc;
    if (strcmp(name, "count") == 0) {
        int64_t count = 0;
        if (k == 0) count = (int64_t)jinja_utf8_count(p, n) + 1;
        for (size_t i = 0; k && i + k <= n;) {
            const char *hit = memmem(p + i, n - i, sub, k);
            if (!hit) break;
            count++;
            i = (size_t)(hit - p) + k;
        }
        *out = jinja_int(count);
        return QVLM_OK;
    }
    /* A valid UTF-8 needle only matches at character starts, so byte search is exact. */
    long found = -1;
    if (!rev) {
        const char *hit = memmem(p, n, sub, k);
        found = hit ? (long)(hit - p) : -1;
    } else {
        for (size_t i = n - k + 1; k <= n && i-- > 0;)
            if (memcmp(p + i, sub, k) == 0) {
                found = (long)i;
                break;
            }
    }
    if (found < 0 && name[strlen(name) - 1] == 'x')
        return jinja_fail(rt, QVLM_E_INVALID, "substring not found");
    *out = jinja_int(found < 0 ? -1 : (int64_t)jinja_utf8_count(p, (size_t)found));
    return QVLM_OK;
}

static qvlm_status m_find(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return search_method(rt, s, a, o, "find");
}
static qvlm_status m_rfind(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return search_method(rt, s, a, o, "rfind");
}
static qvlm_status m_index(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return search_method(rt, s, a, o, "index");
}
static qvlm_status m_rindex(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return search_method(rt, s, a, o, "rindex");
}
static qvlm_status m_count(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return search_method(rt, s, a, o, "count");
}

static qvlm_status m_join(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out) {
    BIND("join", "iterable");
    jinja_value items = JINJA_UNSET;
    if (rc == QVLM_OK) rc = need(rt, "join", arg[0], "iterable");
    if (rc == QVLM_OK) rc = jinja_iterate(rt, arg[0], &items);
    if (rc) return rc;
    jinja_buf b = {0};
    for (size_t i = 0; rc == QVLM_OK && i < jinja_seq_len(&items); i++) {
        jinja_value x = jinja_seq_at(&items, i);
        if (!jinja_is_str(&x)) {
            rc = jinja_fail(rt, QVLM_E_INVALID, "sequence item %zu: expected str instance, %s found", i,
                            jinja_type_name(&x));
            break;
        }
        if (i) rc = jinja_buf_put(rt, &b, self->u.s.p, self->u.s.n);
        if (rc == QVLM_OK) rc = jinja_buf_put(rt, &b, x.u.s.p, x.u.s.n);
    }
    if (rc == QVLM_OK) rc = jinja_buf_to_str(rt, &b, out);
    jinja_buf_free(rt, &b);
    jinja_release(rt, &items);
    return rc;
}

/* center / ljust / rjust / zfill: pad to `width` code points. */
static qvlm_status pad_method(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out,
                              char how) {
    const char *name = how == 'c' ? "center" : how == 'l' ? "ljust" : how == 'r' ? "rjust" : "zfill";
    BIND(name, "width", "fillchar");
    int64_t width = 0;
    if (rc == QVLM_OK) rc = need(rt, name, arg[0], "width");
    if (rc == QVLM_OK) rc = need_int(rt, arg[0], &width);
    jinja_value fill = jinja_strv(how == 'z' ? "0" : " ", 1);
    if (rc == QVLM_OK && arg[1]) {
        if (!jinja_is_str(arg[1]) || jinja_utf8_count(arg[1]->u.s.p, arg[1]->u.s.n) != 1)
            rc = jinja_fail(rt, QVLM_E_INVALID, "The fill character must be exactly one character long");
        else
            fill = *arg[1];
    }
    if (rc == QVLM_OK) rc = jinja_step(rt, self->u.s.n / 16);
    if (rc) return rc;
    size_t len = jinja_utf8_count(self->u.s.p, self->u.s.n);
    if (width <= (int64_t)len) return *out = jinja_ref(self), QVLM_OK;
    if ((uint64_t)width > rt->lim.max_memory_bytes)
        return jinja_fail(rt, QVLM_E_LIMIT, "%s() width too large", name);
    size_t marg = (size_t)width - len, left = how == 'c'   ? marg / 2 + (marg & (size_t)width & 1)
                                              : how == 'l' ? 0
                                                           : marg;
    size_t sign = how == 'z' && self->u.s.n && (self->u.s.p[0] == '+' || self->u.s.p[0] == '-') ? 1 : 0;
    jinja_buf b = {0};
    rc = jinja_buf_put(rt, &b, self->u.s.p, sign);
    for (size_t i = 0; rc == QVLM_OK && i < left; i++) rc = jinja_buf_put(rt, &b, fill.u.s.p, fill.u.s.n);
    if (rc == QVLM_OK) rc = jinja_buf_put(rt, &b, self->u.s.p + sign, self->u.s.n - sign);
    for (size_t i = left; rc == QVLM_OK && i < marg; i++) rc = jinja_buf_put(rt, &b, fill.u.s.p, fill.u.s.n);
    if (rc == QVLM_OK) rc = jinja_buf_to_str(rt, &b, out);
    jinja_buf_free(rt, &b);
    return rc;
}

qvlm_status jinja_str_center(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return pad_method(rt, s, a, o, 'c');
}
static qvlm_status m_ljust(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return pad_method(rt, s, a, o, 'l');
}
static qvlm_status m_rjust(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return pad_method(rt, s, a, o, 'r');
}
static qvlm_status m_zfill(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return pad_method(rt, s, a, o, 'z');
}

static qvlm_status affix_remove(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out,
                                bool end) {
    BIND(end ? "removesuffix" : "removeprefix", "affix");
    if (rc == QVLM_OK) rc = need(rt, "removeprefix", arg[0], "affix");
    if (rc == QVLM_OK) rc = need_str(rt, "argument", arg[0]);
    if (rc) return rc;
    size_t k = arg[0]->u.s.n;
    if (k == 0 || !affix_match(self, arg[0], end)) return *out = jinja_ref(self), QVLM_OK;
    *out = jinja_str_sub(self, end ? 0 : k, self->u.s.n - k);
    return QVLM_OK;
}

static qvlm_status m_removeprefix(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return affix_remove(rt, s, a, o, false);
}
static qvlm_status m_removesuffix(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return affix_remove(rt, s, a, o, true);
}

static qvlm_status partition_method(jinja_rt *rt, const jinja_value *self, const jinja_args *a,
                                    jinja_value *out, bool rev) {
    BIND(rev ? "rpartition" : "partition", "sep");
    if (rc == QVLM_OK) rc = need(rt, "partition", arg[0], "sep");
    if (rc == QVLM_OK) rc = need_str(rt, "sep", arg[0]);
    if (rc == QVLM_OK && arg[0]->u.s.n == 0) rc = jinja_fail(rt, QVLM_E_INVALID, "empty separator");
    if (rc == QVLM_OK) rc = jinja_step(rt, (self->u.s.n / 16) * (1 + arg[0]->u.s.n / 64));
    if (rc) return rc;
    const char *p = self->u.s.p, *hit = NULL;
    size_t n = self->u.s.n, k = arg[0]->u.s.n;
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(p + i, arg[0]->u.s.p, k) == 0) {
            hit = p + i;
            if (!rev) break;
        }
    size_t at = hit ? (size_t)(hit - p) : (rev ? 0 : n), sep_n = hit ? k : 0;
    jinja_value parts[3] = {jinja_str_sub(self, 0, at), jinja_str_sub(self, at, sep_n),
                            jinja_str_sub(self, at + sep_n, n - at - sep_n)};
    if (!hit && rev) { /* rpartition without a match: ('', '', s) */
        jinja_release(rt, &parts[2]);
        parts[2] = jinja_ref(self);
    }
    rc = jinja_list_new(rt, 3, true, out);
    for (int i = 0; i < 3; i++) {
        if (rc == QVLM_OK) {
            rc = jinja_list_push(rt, out, &parts[i]);
            if (rc) jinja_release(rt, out);
        } else {
            jinja_release(rt, &parts[i]);
        }
    }
    return rc;
}

static qvlm_status m_partition(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return partition_method(rt, s, a, o, false);
}
static qvlm_status m_rpartition(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {
    return partition_method(rt, s, a, o, true);
}

typedef enum { IS_DIGIT, IS_ALPHA, IS_ALNUM, IS_SPACE, IS_UPPER, IS_LOWER, IS_NUMERIC } is_kind;

static bool cp_is(int32_t cp, is_kind k) {
    utf8proc_category_t c = utf8proc_category(cp);
    bool letter = c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO;
    bool numeric = c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
    switch (k) {
    case IS_DIGIT: return c == UTF8PROC_CATEGORY_ND;
    case IS_NUMERIC: return numeric;
    case IS_ALPHA: return letter;
    case IS_ALNUM: return letter || numeric;
    case IS_SPACE: return jinja_py_isspace(cp);
    default: return false;
    }
}

/* str.isX(): non-empty and every character qualifies; isupper / islower: some cased
 * character and none of the other case. */
static qvlm_status is_method(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out,
                             is_kind k) {
    const jinja_value *arg[1];
    qvlm_status rc = jinja_bind(rt, "is", a, NULL, 0, arg);
    if (rc == QVLM_OK) rc = jinja_step(rt, self->u.s.n / 2); /* a category lookup per character */
    if (rc) return rc;
    const char *p = self->u.s.p;
    size_t n = self->u.s.n, i = 0;
    bool all = n > 0, cased = false;
    while (i < n) {
        int32_t cp = jinja_utf8_next(p, n, &i);
        utf8proc_category_t c = utf8proc_category(cp);
        if (k == IS_UPPER || k == IS_LOWER) {
            if (c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LT)
                all &= k == IS_UPPER && c == UTF8PROC_CATEGORY_LU, cased = true;
            if (c == UTF8PROC_CATEGORY_LL) all &= k == IS_LOWER, cased = true;
        } else {
            all &= cp_is(cp, k);
        }
    }
    *out = jinja_bool(all && (k != IS_UPPER && k != IS_LOWER ? true : cased));
    return QVLM_OK;
}

#define IS_METHOD(fn, kind)                                                                                  \
    static qvlm_status fn(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *o) {         \
        return is_method(rt, s, a, o, kind);                                                                 \
    }
IS_METHOD(m_isdigit, IS_DIGIT)
IS_METHOD(m_isnumeric, IS_NUMERIC)
IS_METHOD(m_isalpha, IS_ALPHA)
IS_METHOD(m_isalnum, IS_ALNUM)
IS_METHOD(m_isspace, IS_SPACE)
IS_METHOD(m_isupper, IS_UPPER)
IS_METHOD(m_islower, IS_LOWER)

/* str.format: {} {0} {name} with !s / !r; format specs are not supported. */
static qvlm_status format_field(jinja_rt *rt, const char *f, size_t n, const jinja_args *a, size_t *auto_idx,
                                jinja_buf *b) {
    const char *bang = memchr(f, '!', n), *colon = memchr(f, ':', n);
    size_t name_n = bang ? (size_t)(bang - f) : colon ? (size_t)(colon - f) : n;
    if (colon)
        return jinja_fail(rt, QVLM_E_UNSUPPORTED, "%s:%u: format specs in str.format are not supported",
                          rt->tpl->name, rt->line);
    const jinja_value *v = NULL;
    int64_t idx;
    if (name_n == 0) {
        idx = (int64_t)(*auto_idx)++;
        if ((size_t)idx < a->n_pos)
            v = &a->pos[idx];
        else
            return jinja_fail(rt, QVLM_E_INVALID,
                              "Replacement index %lld out of range for positional args tuple",
                              (long long)idx);
    } else if (jinja_parse_int(f, name_n, 10, &idx)) {
        if (idx < 0 || (size_t)idx >= a->n_pos)
            return jinja_fail(rt, QVLM_E_INVALID,
                              "Replacement index %lld out of range for positional args tuple",
                              (long long)idx);
        v = &a->pos[idx];
    } else {
        for (size_t k = 0; k < a->n_kw && !v; k++)
            if (strlen(a->kw_names[k]) == name_n && memcmp(a->kw_names[k], f, name_n) == 0) v = &a->kw[k];
        if (!v) return jinja_fail(rt, QVLM_E_INVALID, "'%.*s'", (int)QVLM_MIN(name_n, 100), f);
    }
    bool repr = bang && bang + 1 < f + n && bang[1] == 'r';
    return repr ? jinja_repr(rt, v, b, 0) : jinja_str(rt, v, b);
}

static qvlm_status m_format(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out) {
    const char *p = self->u.s.p;
    size_t n = self->u.s.n, auto_idx = 0;
    jinja_buf b = {0};
    qvlm_status rc = QVLM_OK;
    for (size_t i = 0; rc == QVLM_OK && i < n;) {
        if ((p[i] == '{' || p[i] == '}') && i + 1 < n && p[i + 1] == p[i]) {
            rc = jinja_buf_putc(rt, &b, p[i]);
            i += 2;
        } else if (p[i] == '{') {
            const char *close = memchr(p + i, '}', n - i);
            if (!close)
                rc = jinja_fail(rt, QVLM_E_INVALID, "expected '}' before end of string");
            else
                rc = format_field(rt, p + i + 1, (size_t)(close - p) - i - 1, a, &auto_idx, &b);
            i = close ? (size_t)(close - p) + 1 : n;
        } else if (p[i] == '}') {
            rc = jinja_fail(rt, QVLM_E_INVALID, "Single '}' encountered in format string");
        } else {
            rc = jinja_buf_putc(rt, &b, p[i++]);
        }
    }
    if (rc == QVLM_OK) rc = jinja_buf_to_str(rt, &b, out);
    jinja_buf_free(rt, &b);
    return rc;
}

static const jinja_func_def STR_METHODS[] = {
    {"upper", m_upper},
    {"lower", m_lower},
    {"casefold", m_lower},
    {"title", m_title},
    {"capitalize", m_capitalize},
    {"swapcase", m_swapcase},
    {"strip", m_strip},
    {"lstrip", m_lstrip},
    {"rstrip", m_rstrip},
    {"split", m_split},
    {"rsplit", m_rsplit},
    {"splitlines", m_splitlines},
    {"startswith", m_startswith},
    {"endswith", m_endswith},
    {"replace", m_replace},
    {"find", m_find},
    {"rfind", m_rfind},
    {"index", m_index},
    {"rindex", m_rindex},
    {"count", m_count},
    {"join", m_join},
    {"center", jinja_str_center},
    {"ljust", m_ljust},
    {"rjust", m_rjust},
    {"zfill", m_zfill},
    {"removeprefix", m_removeprefix},
    {"removesuffix", m_removesuffix},
    {"partition", m_partition},
    {"rpartition", m_rpartition},
    {"isdigit", m_isdigit},
    {"isdecimal", m_isdigit},
    {"isnumeric", m_isnumeric},
    {"isalpha", m_isalpha},
    {"isalnum", m_isalnum},
    {"isspace", m_isspace},
    {"isupper", m_isupper},
    {"islower", m_islower},
    {"format", m_format},
};

/* ==== dict and list methods ===================================================================== */

static qvlm_status d_get(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out) {
    BIND("get", "key", "default");
    if (rc == QVLM_OK) rc = need(rt, "get", arg[0], "key");
    bool found = false;
    if (rc == QVLM_OK) rc = jinja_map_get(rt, self, arg[0], out, &found);
    if (rc == QVLM_OK && !found) *out = arg[1] ? jinja_ref(arg[1]) : jinja_none();
    return rc;
}

static qvlm_status no_args(jinja_rt *rt, const char *name, const jinja_args *a) {
    const jinja_value *arg[1];
    return jinja_bind(rt, name, a, NULL, 0, arg);
}

static qvlm_status d_items(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out) {
    qvlm_status rc = no_args(rt, "items", a);
    if (rc == QVLM_OK) rc = jinja_map_items(rt, self, out);
    if (rc == QVLM_OK) jinja_list_of(out)->view = JVIEW_ITEMS;
    return rc;
}
static qvlm_status d_keys(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out) {
    qvlm_status rc = no_args(rt, "keys", a);
    if (rc == QVLM_OK) rc = jinja_map_keys(rt, self, out);
    if (rc == QVLM_OK) jinja_list_of(out)->view = JVIEW_KEYS;
    return rc;
}
static qvlm_status d_values(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out) {
    qvlm_status rc = no_args(rt, "values", a);
    if (rc == QVLM_OK) rc = jinja_map_values(rt, self, out);
    if (rc == QVLM_OK) jinja_list_of(out)->view = JVIEW_VALUES;
    return rc;
}

static qvlm_status d_copy(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out) {
    jinja_value items = JINJA_UNSET;
    qvlm_status rc = no_args(rt, "copy", a);
    if (rc == QVLM_OK) rc = jinja_map_items(rt, self, &items);
    if (rc) return rc;
    rc = jinja_dict_new(rt, JO_DICT, out);
    for (size_t i = 0; rc == QVLM_OK && i < jinja_seq_len(&items); i++) {
        jinja_list *kv = jinja_list_of(&jinja_list_of(&items)->items[i]);
        jinja_value k = jinja_ref(&kv->items[0]), v = jinja_ref(&kv->items[1]);
        rc = jinja_dict_set(rt, out, &k, &v);
    }
    jinja_release(rt, &items);
    if (rc) jinja_release(rt, out);
    return rc;
}

static qvlm_status l_index(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out) {
    BIND("index", "value");
    if (rc == QVLM_OK) rc = need(rt, "index", arg[0], "value");
    for (size_t i = 0; rc == QVLM_OK && i < jinja_seq_len(self); i++) {
        jinja_value x = jinja_seq_at(self, i);
        bool eq;
        rc = jinja_eq(rt, &x, arg[0], &eq);
        if (rc == QVLM_OK && eq) return *out = jinja_int((int64_t)i), QVLM_OK;
    }
    if (rc) return rc;
    jinja_buf b = {0};
    rc = jinja_repr(rt, arg[0], &b, 0);
    if (rc == QVLM_OK) rc = jinja_buf_putc(rt, &b, '\0');
    if (rc == QVLM_OK) rc = jinja_fail(rt, QVLM_E_INVALID, "%s is not in %s", b.p, jinja_type_name(self));
    jinja_buf_free(rt, &b);
    return rc;
}

static qvlm_status l_count(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out) {
    BIND("count", "value");
    int64_t count = 0;
    if (rc == QVLM_OK) rc = need(rt, "count", arg[0], "value");
    for (size_t i = 0; rc == QVLM_OK && i < jinja_seq_len(self); i++) {
        jinja_value x = jinja_seq_at(self, i);
        bool eq;
        rc = jinja_eq(rt, &x, arg[0], &eq);
        count += eq;
    }
    if (rc == QVLM_OK) *out = jinja_int(count);
    return rc;
}

static qvlm_status l_copy(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out) {
    qvlm_status rc = no_args(rt, "copy", a);
    jinja_value parts[3] = {jinja_none(), jinja_none(), jinja_none()};
    return rc ? rc : jinja_slice(rt, self, parts, out);
}

static const jinja_func_def DICT_METHODS[] = {
    {"get", d_get}, {"items", d_items}, {"keys", d_keys}, {"values", d_values}, {"copy", d_copy},
};
static const jinja_func_def LIST_METHODS[] = {{"index", l_index}, {"count", l_count}, {"copy", l_copy}};
static const char *const DICT_MUTATORS[] = {"clear", "pop", "popitem", "setdefault", "update", NULL};
static const char *const LIST_MUTATORS[] = {"append", "clear",   "extend", "insert", "pop",
                                            "remove", "reverse", "sort",   NULL};

/* ==== Attribute and item access ================================================================= */

static const jinja_func_def *find_def(const jinja_func_def *defs, size_t n_defs, const char *name, size_t n) {
    for (size_t i = 0; i < n_defs; i++)
        if (strlen(defs[i].name) == n && memcmp(defs[i].name, name, n) == 0) return &defs[i];
    return NULL;
}

static bool in_list(const char *const *names, const char *name, size_t n) {
    for (; *names; names++)
        if (strlen(*names) == n && memcmp(*names, name, n) == 0) return true;
    return false;
}

/* Python's methods of obj's type: a bound method, an "unsafe" undefined for mutators (and
 * dunder attributes), or false when the type has no such attribute. */
static qvlm_status method_of(jinja_rt *rt, const jinja_value *obj, const char *name, size_t n,
                             jinja_value *out, bool *found) {
    const jinja_func_def *def = NULL;
    const char *const *mutators = NULL;
    *found = true;
    if (jinja_is_str(obj))
        def = find_def(STR_METHODS, sizeof(STR_METHODS) / sizeof(STR_METHODS[0]), name, n);
    else if (jinja_is_mapping(obj)) {
        def = find_def(DICT_METHODS, sizeof(DICT_METHODS) / sizeof(DICT_METHODS[0]), name, n);
        mutators = DICT_MUTATORS;
    } else if (jinja_is_seq(obj)) {
        bool is_tuple = obj->kind == JV_LIST && jinja_list_of(obj)->is_tuple;
        def = find_def(LIST_METHODS, is_tuple ? 2 : 3, name, n);
        mutators = is_tuple ? NULL : LIST_MUTATORS;
    }
    if (def) return jinja_func_new(rt, def, obj, out);
    bool dunder = n > 4 && name[0] == '_' && name[1] == '_' && name[n - 1] == '_' && name[n - 2] == '_';
    if (dunder || (mutators && in_list(mutators, name, n)))
        return jinja_undef_new(rt, out, "access to attribute '%.*s' of '%s' object is unsafe.",
                               (int)QVLM_MIN(n, 100), name, jinja_type_name(obj));
    *found = false;
    return QVLM_OK;
}

qvlm_status jinja_getattr(jinja_rt *rt, const jinja_value *obj, const char *name, size_t n,
                          jinja_value *out) {
    if (jinja_is_undef(obj)) return jinja_undef_fail(rt, obj);
    if (obj->kind == JV_LOOP) return jinja_loop_getattr(rt, obj, name, n, out);
    bool found;
    qvlm_status rc = method_of(rt, obj, name, n, out, &found);
    if (rc || found) return rc;
    jinja_value key = jinja_strv(name, n);
    if (jinja_is_mapping(obj)) { /* getattr failed: the sandbox tries obj[name] */
        rc = jinja_map_get(rt, obj, &key, out, &found);
        if (rc || found) return rc;
    } else if (obj->kind == JV_NS) {
        const jinja_value *v = jinja_dict_get_str(jinja_dict_of(obj), name, n);
        if (v) return *out = jinja_ref(v), QVLM_OK;
    }
    return jinja_undef_missing(rt, obj, &key, out);
}

/* str[int]: walk code points from the nearer end (s[0] and s[-1] cost nothing). */
static qvlm_status index_str(jinja_rt *rt, const jinja_value *obj, const jinja_value *key, jinja_value *out) {
    const char *p = obj->u.s.p;
    size_t n = obj->u.s.n, off;
    int64_t i = jinja_as_int(key), k = 0;
    if (i >= 0) {
        for (off = 0; off < n && k < i; k++) jinja_utf8_next(p, n, &off);
    } else {
        for (off = n; off > 0 && k < -i;) {
            off--;
            if (((unsigned char)p[off] & 0xC0) != 0x80) k++;
        }
        if (k < -i) off = n; /* fewer code points than asked for */
    }
    qvlm_status rc = jinja_step(rt, (i >= 0 ? off : n - off) / 16);
    if (rc) return rc;
    if (off >= n) return jinja_undef_missing(rt, obj, key, out);
    size_t end = off;
    jinja_utf8_next(p, n, &end);
    *out = jinja_str_sub(obj, off, end - off);
    return QVLM_OK;
}

/* list / tuple / str [int]: negative indices count from the end. */
static qvlm_status index_seq(jinja_rt *rt, const jinja_value *obj, const jinja_value *key, jinja_value *out) {
    if (jinja_is_str(obj)) return index_str(rt, obj, key, out);
    size_t len = jinja_seq_len(obj);
    int64_t i = jinja_as_int(key);
    if (i < 0) i += (int64_t)len;
    if (i < 0 || (uint64_t)i >= len) return jinja_undef_missing(rt, obj, key, out);
    jinja_value v = jinja_seq_at(obj, (size_t)i);
    *out = jinja_ref(&v);
    return QVLM_OK;
}

qvlm_status jinja_getitem(jinja_rt *rt, const jinja_value *obj, const jinja_value *key, jinja_value *out) {
    if (jinja_is_undef(obj)) return jinja_undef_fail(rt, obj);
    if (jinja_is_mapping(obj)) {
        bool found;
        qvlm_status rc = jinja_map_get(rt, obj, key, out, &found);
        if (rc || found) return rc;
        if (jinja_is_str(key)) {
            rc = method_of(rt, obj, key->u.s.p, key->u.s.n, out, &found);
            if (rc || found) return rc;
        }
        return jinja_undef_missing(rt, obj, key, out);
    }
    if ((jinja_is_seq(obj) || jinja_is_str(obj)) && jinja_is_int(key) && !jinja_is_view(obj))
        return index_seq(rt, obj, key, out);
    if (jinja_is_str(key)) return jinja_getattr(rt, obj, key->u.s.p, key->u.s.n, out);
    return jinja_undef_missing(rt, obj, key, out);
}

/* ==== Globals =================================================================================== */

static qvlm_status g_range(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out) {
    int64_t v[3] = {0, 0, 1};
    qvlm_status rc = QVLM_OK;
    if (a->n_kw) return jinja_fail(rt, QVLM_E_INVALID, "range() takes no keyword arguments");
    if (a->n_pos < 1 || a->n_pos > 3)
        return jinja_fail(rt, QVLM_E_INVALID, "range expected at most 3 arguments, got %zu", a->n_pos);
    for (size_t i = 0; rc == QVLM_OK && i < a->n_pos; i++)
        rc = need_int(rt, &a->pos[i], &v[a->n_pos == 1 ? 1 : i]);
    if (rc) return rc;
    if (v[2] == 0) return jinja_fail(rt, QVLM_E_INVALID, "range() arg 3 must not be zero");
    int64_t start = v[0], stop = v[1], step = v[2];
    uint64_t count = 0;
    if (step > 0 && start < stop) count = ((uint64_t)stop - (uint64_t)start - 1) / (uint64_t)step + 1;
    if (step < 0 && start > stop) count = ((uint64_t)start - (uint64_t)stop - 1) / (0 - (uint64_t)step) + 1;
    if (count > JINJA_MAX_RANGE)
        return jinja_fail(rt, QVLM_E_LIMIT,
                          "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).",
                          JINJA_MAX_RANGE);
    rc = jinja_list_new(rt, count, false, out);
    for (size_t i = 0; rc == QVLM_OK && i < count; i++) {
        jinja_value x = jinja_int(start + (int64_t)i * step);
        rc = jinja_list_push(rt, out, &x);
    }
    if (rc) jinja_release(rt, out);
    return rc;
}

/* dict(mapping_or_pairs?, **kwargs) into a new dict / namespace. */
static qvlm_status build_dict(jinja_rt *rt, const char *fname, const jinja_args *a, jinja_otype type,
                              jinja_value *out) {
    if (a->n_pos > 1)
        return jinja_fail(rt, QVLM_E_INVALID, "%s expected at most 1 argument, got %zu", fname, a->n_pos);
    qvlm_status rc = jinja_dict_new(rt, type, out);
    if (rc == QVLM_OK && a->n_pos == 1) {
        jinja_value items = JINJA_UNSET;
        const jinja_value *src = &a->pos[0];
        rc = jinja_is_mapping(src) ? jinja_map_items(rt, src, &items) : jinja_iterate(rt, src, &items);
        for (size_t i = 0; rc == QVLM_OK && i < jinja_seq_len(&items); i++) {
            jinja_value kv = jinja_seq_at(&items, i);
            if (!jinja_is_seq(&kv) || jinja_seq_len(&kv) != 2) {
                rc = jinja_fail(rt, QVLM_E_INVALID,
                                "dictionary update sequence element #%zu has wrong length", i);
                break;
            }
            jinja_value k = jinja_seq_at(&kv, 0), v = jinja_seq_at(&kv, 1);
            k = jinja_ref(&k);
            v = jinja_ref(&v);
            rc = jinja_dict_set(rt, out, &k, &v);
        }
        jinja_release(rt, &items);
    }
    for (size_t k = 0; rc == QVLM_OK && k < a->n_kw; k++) {
        jinja_value key = jinja_strv(a->kw_names[k], strlen(a->kw_names[k])), v = jinja_ref(&a->kw[k]);
        rc = jinja_dict_set(rt, out, &key, &v);
    }
    if (rc) jinja_release(rt, out);
    return rc;
}

static qvlm_status g_dict(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out) {
    return build_dict(rt, "dict", a, JO_DICT, out);
}

static qvlm_status g_namespace(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out) {
    return build_dict(rt, "namespace", a, JO_NS, out);
}

/* transformers' raise_exception: TemplateError(message); str(e) is the message. */
static qvlm_status g_raise(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out) {
    BIND("raise_exception", "message");
    if (rc) return rc;
    jinja_buf b = {0};
    if (arg[0]) rc = jinja_str(rt, arg[0], &b);
    if (rc == QVLM_OK) rc = jinja_buf_putc(rt, &b, '\0');
    if (rc == QVLM_OK) rc = jinja_fail(rt, QVLM_E_INVALID, "%s", arg[0] ? b.p : "None");
    jinja_buf_free(rt, &b);
    return rc;
}

static qvlm_status g_strftime_now(jinja_rt *rt, const jinja_value *self, const jinja_args *a,
                                  jinja_value *out) {
    BIND("strftime_now", "format");
    if (rc == QVLM_OK) rc = need(rt, "strftime_now", arg[0], "format");
    if (rc == QVLM_OK) rc = need_str(rt, "format", arg[0]);
    if (rc) return rc;
    char fmt[256], text[512];
    snprintf(fmt, sizeof(fmt), "%.*s", (int)QVLM_MIN(arg[0]->u.s.n, sizeof(fmt) - 1), arg[0]->u.s.p);
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral" /* the template's format, as Python's strftime */
    size_t n = strftime(text, sizeof(text), fmt, &tm);
#pragma GCC diagnostic pop
    return jinja_str_new(rt, text, n, out);
}

static const jinja_func_def GLOBALS[] = {
    {"range", g_range},
    {"dict", g_dict},
    {"namespace", g_namespace},
    {"raise_exception", g_raise},
    {"strftime_now", g_strftime_now},
};

const jinja_func_def *jinja_global_find(const char *name, size_t n) {
    return find_def(GLOBALS, sizeof(GLOBALS) / sizeof(GLOBALS[0]), name, n);
}
