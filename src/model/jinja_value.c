/* jinja_value.c - the values a template computes with, as the Python objects Jinja would see.
 *
 * Strings, lists, dicts and the JSON context behave like str, list/tuple and dict: str() and
 * repr() print the Python way, tojson is json.dumps, == and < follow Python (including the
 * TypeError texts). JSON values of the render context are borrowed, never copied.
 *
 * Memory: heap objects are refcounted; every byte is accounted against the render's
 * max_memory_bytes. Freeing walks a worklist instead of recursing, so a long chain of nested
 * values cannot overflow the stack. Namespaces and scopes (the only things that can form
 * reference cycles: a namespace may hold itself, a macro holds the scope it is stored in)
 * are tracked and cleared when the render ends.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/jinja.h"

/* ==== Runtime bookkeeping ======================================================================= */

qvlm_status jinja_fail(jinja_rt *rt, qvlm_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rt->err->msg, sizeof(rt->err->msg), fmt, ap);
    va_end(ap);
    rt->err->code = code;
    return code;
}

qvlm_status jinja_step(jinja_rt *rt, uint64_t n) {
    rt->steps += n;
    if (rt->steps > rt->lim.max_steps)
        return jinja_fail(rt, QVLM_E_LIMIT, "%s:%u: template evaluation exceeds %llu steps", rt->tpl->name,
                          rt->line, (unsigned long long)rt->lim.max_steps);
    return QVLM_OK;
}

qvlm_status jinja_mem_take(jinja_rt *rt, size_t n) {
    if (n > rt->lim.max_memory_bytes - rt->mem_bytes)
        return jinja_fail(rt, QVLM_E_LIMIT, "%s:%u: template values exceed %zu bytes of memory",
                          rt->tpl->name, rt->line, rt->lim.max_memory_bytes);
    rt->mem_bytes += n;
    return QVLM_OK;
}

void jinja_mem_give(jinja_rt *rt, size_t n) { rt->mem_bytes -= n; }

qvlm_status jinja_undef_fail(jinja_rt *rt, const jinja_value *u) {
    const jinja_undef *ud = (const jinja_undef *)u->u.o;
    if (!ud) return jinja_fail(rt, QVLM_E_INVALID, "undefined value");
    return jinja_fail(rt, ud->code, "%s", ud->msg);
}

/* ==== Heap objects ============================================================================== */

qvlm_status jinja_obj_new(jinja_rt *rt, jinja_otype type, size_t n_bytes, void **out) {
    *out = NULL;
    qvlm_status rc = jinja_mem_take(rt, n_bytes);
    if (rc) return rc;
    jinja_obj *o = calloc(1, n_bytes);
    if (!o) {
        jinja_mem_give(rt, n_bytes);
        return jinja_fail(rt, QVLM_E_NOMEM, "out of memory rendering the template");
    }
    o->refs = 1;
    o->type = type;
    o->n_bytes = n_bytes;
    if (type == JO_NS || type == JO_SCOPE) {
        o->next = rt->tracked.next;
        o->prev = &rt->tracked;
        rt->tracked.next->prev = o;
        rt->tracked.next = o;
    }
    *out = o;
    return QVLM_OK;
}

static jinja_obj *value_obj(const jinja_value *v) {
    switch (v->kind) {
    case JV_STR: return v->u.s.owner;
    case JV_UNDEF:
    case JV_LIST:
    case JV_DICT:
    case JV_NS:
    case JV_MACRO:
    case JV_FUNC:
    case JV_LOOP: return v->u.o;
    default: return NULL;
    }
}

jinja_value jinja_ref(const jinja_value *v) {
    jinja_obj *o = value_obj(v);
    if (o) o->refs++;
    return *v;
}

/* Drop one reference held by a value inside an object being freed: an object that reaches
 * zero joins the worklist instead of being freed recursively. */
static void drop_child(jinja_value *v, jinja_obj **work) {
    jinja_obj *o = value_obj(v);
    *v = jinja_undefined();
    if (o && --o->refs == 0) {
        o->free_next = *work;
        *work = o;
    }
}

static void drop_child_obj(jinja_obj *o, jinja_obj **work) {
    if (o && --o->refs == 0) {
        o->free_next = *work;
        *work = o;
    }
}

/* Release what object o holds, leaving it empty (used by free and by cycle breaking). */
static void clear_contents(jinja_rt *rt, jinja_obj *o, jinja_obj **work) {
    switch (o->type) {
    case JO_LIST: {
        jinja_list *l = (jinja_list *)o;
        for (size_t i = 0; i < l->n; i++) drop_child(&l->items[i], work);
        free(l->items);
        jinja_mem_give(rt, l->cap * sizeof(jinja_value));
        l->items = NULL;
        l->n = l->cap = 0;
        break;
    }
    case JO_DICT:
    case JO_NS: {
        jinja_dict *d = (jinja_dict *)o;
        for (size_t i = 0; i < d->n; i++) {
            drop_child(&d->keys[i], work);
            drop_child(&d->vals[i], work);
        }
        free(d->keys);
        free(d->vals);
        jinja_mem_give(rt, 2 * d->cap * sizeof(jinja_value));
        d->keys = d->vals = NULL;
        d->n = d->cap = 0;
        break;
    }
    case JO_MACRO: {
        jinja_macro *m = (jinja_macro *)o;
        drop_child_obj(&m->closure->h, work);
        m->closure = NULL;
        break;
    }
    case JO_FUNC: drop_child(&((jinja_func *)o)->self, work); break;
    case JO_LOOP: {
        jinja_loop *l = (jinja_loop *)o;
        drop_child(&l->items, work);
        drop_child(&l->changed_last, work);
        break;
    }
    case JO_SCOPE: {
        jinja_scope *s = (jinja_scope *)o;
        drop_child_obj(s->parent ? &s->parent->h : NULL, work);
        s->parent = NULL;
        for (size_t i = 0; i < s->n; i++) drop_child(&s->vars[i].v, work);
        free(s->vars);
        jinja_mem_give(rt, s->cap * sizeof(jinja_var));
        s->vars = NULL;
        s->n = s->cap = 0;
        break;
    }
    case JO_STR:
    case JO_UNDEF: break;
    }
}

static void obj_free_one(jinja_rt *rt, jinja_obj *o, jinja_obj **work) {
    clear_contents(rt, o, work);
    if (o->prev) {
        o->prev->next = o->next;
        o->next->prev = o->prev;
    }
    jinja_mem_give(rt, o->n_bytes);
    free(o);
}

void jinja_obj_release(jinja_rt *rt, jinja_obj *o) {
    if (!o || --o->refs > 0) return;
    o->free_next = NULL;
    jinja_obj *work = o;
    while (work) {
        jinja_obj *cur = work;
        work = cur->free_next;
        obj_free_one(rt, cur, &work);
    }
}

void jinja_release(jinja_rt *rt, jinja_value *v) {
    jinja_obj *o = value_obj(v);
    *v = jinja_undefined();
    jinja_obj_release(rt, o);
}

/* Called once at the end of a render: hold every tracked object, empty them all (which frees
 * whatever only they kept alive), then let them go. */
void jinja_break_cycles(jinja_rt *rt) {
    for (jinja_obj *o = rt->tracked.next; o != &rt->tracked; o = o->next) o->refs++;
    for (jinja_obj *o = rt->tracked.next; o != &rt->tracked; o = o->next) {
        jinja_obj *work = NULL;
        clear_contents(rt, o, &work);
        while (work) {
            jinja_obj *cur = work;
            work = cur->free_next;
            obj_free_one(rt, cur, &work);
        }
    }
    while (rt->tracked.next != &rt->tracked) jinja_obj_release(rt, rt->tracked.next);
}

/* ==== Constructors ============================================================================== */

qvlm_status jinja_str_alloc(jinja_rt *rt, size_t n, char **buf, jinja_value *out) {
    jinja_strobj *s;
    if (n > SIZE_MAX / 2) return jinja_fail(rt, QVLM_E_LIMIT, "string too long");
    qvlm_status rc = jinja_step(rt, n / 64);
    if (rc == QVLM_OK) rc = jinja_obj_new(rt, JO_STR, sizeof(*s) + n + 1, (void **)&s);
    if (rc) return rc;
    s->n = n;
    s->data[n] = '\0';
    *buf = s->data;
    out->kind = JV_STR;
    out->u.s.p = s->data;
    out->u.s.n = n;
    out->u.s.owner = &s->h;
    return QVLM_OK;
}

qvlm_status jinja_str_new(jinja_rt *rt, const char *p, size_t n, jinja_value *out) {
    char *buf = NULL;
    qvlm_status rc = jinja_str_alloc(rt, n, &buf, out);
    if (rc == QVLM_OK && n) memcpy(buf, p, n);
    return rc;
}

jinja_value jinja_str_sub(const jinja_value *s, size_t off, size_t n) {
    jinja_value v = *s;
    v.u.s.p += off;
    v.u.s.n = n;
    if (v.u.s.owner) v.u.s.owner->refs++;
    return v;
}

qvlm_status jinja_undef_new(jinja_rt *rt, jinja_value *out, const char *fmt, ...) {
    char msg[sizeof(((qvlm_error *)0)->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t n = strlen(msg);
    jinja_undef *u;
    qvlm_status rc = jinja_obj_new(rt, JO_UNDEF, sizeof(*u) + n + 1, (void **)&u);
    if (rc) return rc;
    u->code = QVLM_E_INVALID;
    memcpy(u->msg, msg, n + 1);
    out->kind = JV_UNDEF;
    out->u.o = &u->h;
    return QVLM_OK;
}

/* jinja2.utils.object_type_repr */
static const char *object_type_repr(const jinja_value *v) {
    switch (v->kind) {
    case JV_NONE: return "None";
    case JV_NS: return "jinja2.utils.Namespace object";
    case JV_MACRO: return "jinja2.runtime.Macro object";
    case JV_LOOP: return "jinja2.runtime.LoopContext object";
    case JV_UNDEF: return "jinja2.runtime.Undefined object";
    case JV_BOOL: return "bool object";
    case JV_INT: return "int object";
    case JV_FLOAT: return "float object";
    case JV_STR: return "str object";
    case JV_LIST: {
        static const char *const views[] = {"list object", "dict_keys object", "dict_values object",
                                            "dict_items object"};
        return jinja_list_of(v)->is_tuple ? "tuple object" : views[jinja_list_of(v)->view];
    }
    case JV_JARR: return "list object";
    case JV_DICT:
    case JV_JOBJ: return "dict object";
    case JV_FUNC: return "builtin_function_or_method object";
    }
    return "object";
}

qvlm_status jinja_undef_no_element(jinja_rt *rt, const jinja_value *obj, const char *name_repr,
                                   jinja_value *out) {
    return jinja_undef_new(rt, out, "%s has no element %s", object_type_repr(obj), name_repr);
}

qvlm_status jinja_undef_missing(jinja_rt *rt, const jinja_value *obj, const jinja_value *name,
                                jinja_value *out) {
    jinja_buf b = {0};
    qvlm_status rc = jinja_repr(rt, name, &b, 0);
    if (rc == QVLM_OK) rc = jinja_buf_putc(rt, &b, '\0');
    if (rc == QVLM_OK) {
        if (jinja_is_str(name))
            rc = jinja_undef_new(rt, out, "'%s' has no attribute %s", object_type_repr(obj), b.p);
        else
            rc = jinja_undef_no_element(rt, obj, b.p, out);
    }
    jinja_buf_free(rt, &b);
    return rc;
}

qvlm_status jinja_list_new(jinja_rt *rt, size_t cap, bool is_tuple, jinja_value *out) {
    jinja_list *l;
    qvlm_status rc = jinja_obj_new(rt, JO_LIST, sizeof(*l), (void **)&l);
    if (rc) return rc;
    l->is_tuple = is_tuple;
    out->kind = JV_LIST;
    out->u.o = &l->h;
    if (cap == 0) return QVLM_OK;
    size_t n_bytes;
    if (qvlm_mul_overflow(cap, sizeof(jinja_value), &n_bytes))
        rc = jinja_fail(rt, QVLM_E_LIMIT, "list too long");
    if (rc == QVLM_OK) rc = jinja_mem_take(rt, n_bytes);
    if (rc == QVLM_OK) {
        l->items = malloc(n_bytes);
        if (!l->items) {
            jinja_mem_give(rt, n_bytes);
            rc = jinja_fail(rt, QVLM_E_NOMEM, "out of memory rendering the template");
        } else {
            l->cap = cap;
        }
    }
    if (rc) jinja_release(rt, out);
    return rc;
}

/* Grow an array of `elem` byte elements from *cap to at least need, accounting the bytes. */
static qvlm_status grow(jinja_rt *rt, void **arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return QVLM_OK;
    size_t ncap = *cap ? *cap * 2 : 4, n_bytes;
    if (ncap < need) ncap = need;
    if (qvlm_mul_overflow(ncap, elem, &n_bytes)) return jinja_fail(rt, QVLM_E_LIMIT, "container too large");
    qvlm_status rc = jinja_mem_take(rt, (ncap - *cap) * elem);
    if (rc) return rc;
    void *p = realloc(*arr, n_bytes);
    if (!p) {
        jinja_mem_give(rt, (ncap - *cap) * elem);
        return jinja_fail(rt, QVLM_E_NOMEM, "out of memory rendering the template");
    }
    *arr = p;
    *cap = ncap;
    return QVLM_OK;
}

qvlm_status jinja_list_push(jinja_rt *rt, jinja_value *list, jinja_value *item) {
    jinja_list *l = jinja_list_of(list);
    qvlm_status rc = jinja_step(rt, 1);
    if (rc == QVLM_OK) rc = grow(rt, (void **)&l->items, &l->cap, l->n + 1, sizeof(jinja_value));
    if (rc) {
        jinja_release(rt, item);
        return rc;
    }
    l->items[l->n++] = *item;
    *item = jinja_undefined();
    return QVLM_OK;
}

qvlm_status jinja_dict_new(jinja_rt *rt, jinja_otype type, jinja_value *out) {
    jinja_dict *d;
    qvlm_status rc = jinja_obj_new(rt, type, sizeof(*d), (void **)&d);
    if (rc) return rc;
    out->kind = type == JO_NS ? JV_NS : JV_DICT;
    out->u.o = &d->h;
    return QVLM_OK;
}

/* Key equality for dict lookups: hashable keys only (scalars, strings, tuples of those). */
static bool key_eq(const jinja_value *a, const jinja_value *b, int depth) {
    if (depth > JINJA_MAX_NESTING) return false;
    if (jinja_is_num(a) && jinja_is_num(b))
        return jinja_as_float(a) == jinja_as_float(b) &&
               (a->kind == JV_FLOAT || b->kind == JV_FLOAT || jinja_as_int(a) == jinja_as_int(b));
    if (a->kind != b->kind) return false;
    switch (a->kind) {
    case JV_STR: return a->u.s.n == b->u.s.n && memcmp(a->u.s.p, b->u.s.p, a->u.s.n) == 0;
    case JV_NONE:
    case JV_UNDEF: return true;
    case JV_LIST: {
        jinja_list *x = jinja_list_of(a), *y = jinja_list_of(b);
        if (x->n != y->n || !x->is_tuple || !y->is_tuple) return x == y;
        for (size_t i = 0; i < x->n; i++)
            if (!key_eq(&x->items[i], &y->items[i], depth + 1)) return false;
        return true;
    }
    default: return a->u.o == b->u.o;
    }
}

static long dict_find(const jinja_dict *d, const jinja_value *key) {
    for (size_t i = 0; i < d->n; i++)
        if (key_eq(&d->keys[i], key, 0)) return (long)i;
    return -1;
}

const jinja_value *jinja_dict_get(const jinja_dict *d, const jinja_value *key) {
    long i = dict_find(d, key);
    return i < 0 ? NULL : &d->vals[i];
}

const jinja_value *jinja_dict_get_str(const jinja_dict *d, const char *p, size_t n) {
    jinja_value k = jinja_strv(p, n);
    return jinja_dict_get(d, &k);
}

static bool hashable(const jinja_value *v) {
    return !(v->kind == JV_DICT || v->kind == JV_JOBJ || v->kind == JV_JARR ||
             (v->kind == JV_LIST && !jinja_list_of(v)->is_tuple));
}

/* Keys and values share one capacity. */
static qvlm_status dict_grow(jinja_rt *rt, jinja_dict *d, size_t need) {
    if (need <= d->cap) return QVLM_OK;
    size_t ncap = d->cap ? d->cap * 2 : 4, n_bytes;
    if (qvlm_mul_overflow(ncap, 2 * sizeof(jinja_value), &n_bytes))
        return jinja_fail(rt, QVLM_E_LIMIT, "dict too large");
    size_t extra = (ncap - d->cap) * 2 * sizeof(jinja_value);
    qvlm_status rc = jinja_mem_take(rt, extra);
    if (rc) return rc;
    jinja_value *k = realloc(d->keys, ncap * sizeof(jinja_value));
    if (k) d->keys = k; /* a larger keys array than cap is harmless if vals fails next */
    jinja_value *v = k ? realloc(d->vals, ncap * sizeof(jinja_value)) : NULL;
    if (!v) {
        jinja_mem_give(rt, extra);
        return jinja_fail(rt, QVLM_E_NOMEM, "out of memory rendering the template");
    }
    d->vals = v;
    d->cap = ncap;
    return QVLM_OK;
}

qvlm_status jinja_dict_set(jinja_rt *rt, jinja_value *dict, jinja_value *key, jinja_value *val) {
    jinja_dict *d = jinja_dict_of(dict);
    qvlm_status rc = QVLM_OK;
    if (!hashable(key)) rc = jinja_fail(rt, QVLM_E_INVALID, "unhashable type: '%s'", jinja_type_name(key));
    long i = rc ? -1 : dict_find(d, key);
    if (rc == QVLM_OK && i >= 0) {
        jinja_release(rt, &d->vals[i]);
        d->vals[i] = *val;
        *val = jinja_undefined();
        jinja_release(rt, key);
        return QVLM_OK;
    }
    if (rc == QVLM_OK) rc = jinja_step(rt, 1);
    if (rc == QVLM_OK) rc = dict_grow(rt, d, d->n + 1);
    if (rc) {
        jinja_release(rt, key);
        jinja_release(rt, val);
        return rc;
    }
    d->keys[d->n] = *key;
    d->vals[d->n] = *val;
    d->n++;
    *key = *val = jinja_undefined();
    return QVLM_OK;
}

jinja_value jinja_from_json(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_STRING: return jinja_strv(json_string_value(j), json_string_length(j));
    case JSON_INTEGER: return jinja_int(json_integer_value(j));
    case JSON_REAL: return jinja_float(json_real_value(j));
    case JSON_TRUE: return jinja_bool(true);
    case JSON_FALSE: return jinja_bool(false);
    case JSON_ARRAY: {
        jinja_value v = {.kind = JV_JARR, .u.j = j};
        return v;
    }
    case JSON_OBJECT: {
        jinja_value v = {.kind = JV_JOBJ, .u.j = j};
        return v;
    }
    default: return jinja_none();
    }
}

/* ==== Python protocol =========================================================================== */

bool jinja_truthy(const jinja_value *v) {
    switch (v->kind) {
    case JV_UNDEF:
    case JV_NONE: return false;
    case JV_BOOL: return v->u.b;
    case JV_INT: return v->u.i != 0;
    case JV_FLOAT: return v->u.f != 0.0;
    case JV_STR: return v->u.s.n > 0;
    case JV_LIST: return jinja_list_of(v)->n > 0;
    case JV_DICT: return jinja_dict_of(v)->n > 0;
    case JV_JARR: return json_array_size(v->u.j) > 0;
    case JV_JOBJ: return json_object_size(v->u.j) > 0;
    default: return true;
    }
}

const char *jinja_type_name(const jinja_value *v) {
    switch (v->kind) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: {
        static const char *const views[] = {"list", "dict_keys", "dict_values", "dict_items"};
        return jinja_list_of(v)->is_tuple ? "tuple" : views[jinja_list_of(v)->view];
    }
    case JV_JARR: return "list";
    case JV_DICT:
    case JV_JOBJ: return "dict";
    case JV_NS: return "Namespace";
    case JV_MACRO: return "Macro";
    case JV_FUNC: return "builtin_function_or_method";
    case JV_LOOP: return "LoopContext";
    }
    return "object";
}

bool jinja_is_seq(const jinja_value *v) { return v->kind == JV_LIST || v->kind == JV_JARR; }
bool jinja_is_mapping(const jinja_value *v) { return v->kind == JV_DICT || v->kind == JV_JOBJ; }

size_t jinja_seq_len(const jinja_value *v) {
    return v->kind == JV_LIST ? jinja_list_of(v)->n : json_array_size(v->u.j);
}

jinja_value jinja_seq_at(const jinja_value *v, size_t i) {
    if (v->kind == JV_LIST) return jinja_list_of(v)->items[i];
    return jinja_from_json(json_array_get(v->u.j, i));
}

bool jinja_len(const jinja_value *v, size_t *n) {
    switch (v->kind) {
    case JV_UNDEF: *n = 0; return true;
    case JV_STR: *n = jinja_utf8_count(v->u.s.p, v->u.s.n); return true;
    case JV_LIST:
    case JV_JARR: *n = jinja_seq_len(v); return true;
    case JV_DICT:
    case JV_JOBJ: *n = jinja_map_len(v); return true;
    case JV_LOOP: *n = jinja_seq_len(&((jinja_loop *)v->u.o)->items); return true;
    default: return false;
    }
}

static qvlm_status str_chars(jinja_rt *rt, const jinja_value *s, jinja_value *out) {
    qvlm_status rc = jinja_list_new(rt, jinja_utf8_count(s->u.s.p, s->u.s.n), false, out);
    size_t i = 0;
    while (rc == QVLM_OK && i < s->u.s.n) {
        size_t start = i;
        jinja_utf8_next(s->u.s.p, s->u.s.n, &i);
        jinja_value c = jinja_str_sub(s, start, i - start);
        rc = jinja_list_push(rt, out, &c);
        if (rc) jinja_release(rt, out);
    }
    return rc;
}

qvlm_status jinja_iterate(jinja_rt *rt, const jinja_value *v, jinja_value *out) {
    switch (v->kind) {
    case JV_LIST:
    case JV_JARR: *out = jinja_ref(v); return QVLM_OK;
    case JV_UNDEF: return jinja_list_new(rt, 0, false, out);
    case JV_STR: return str_chars(rt, v, out);
    case JV_DICT:
    case JV_JOBJ: return jinja_map_keys(rt, v, out);
    default: return jinja_fail(rt, QVLM_E_INVALID, "'%s' object is not iterable", jinja_type_name(v));
    }
}

/* ---- mappings ---- */

size_t jinja_map_len(const jinja_value *m) {
    return m->kind == JV_DICT ? jinja_dict_of(m)->n : json_object_size(m->u.j);
}

qvlm_status jinja_map_get(jinja_rt *rt, const jinja_value *m, const jinja_value *key, jinja_value *out,
                          bool *found) {
    (void)rt;
    *found = false;
    if (m->kind == JV_DICT) {
        const jinja_value *v = jinja_dict_get(jinja_dict_of(m), key);
        if (v) *out = jinja_ref(v), *found = true;
        return QVLM_OK;
    }
    if (!jinja_is_str(key)) return QVLM_OK;
    const json_t *j = json_object_getn(m->u.j, key->u.s.p, key->u.s.n);
    if (j) *out = jinja_from_json(j), *found = true;
    return QVLM_OK;
}

typedef enum { MAP_KEYS, MAP_VALUES, MAP_ITEMS } map_part;

static qvlm_status map_entry(jinja_rt *rt, jinja_value *k, jinja_value *v, map_part part, jinja_value *out) {
    if (part == MAP_KEYS) return *out = jinja_ref(k), QVLM_OK;
    if (part == MAP_VALUES) return *out = jinja_ref(v), QVLM_OK;
    qvlm_status rc = jinja_list_new(rt, 2, true, out);
    if (rc) return rc;
    jinja_value kr = jinja_ref(k), vr = jinja_ref(v);
    rc = jinja_list_push(rt, out, &kr);
    if (rc == QVLM_OK)
        rc = jinja_list_push(rt, out, &vr);
    else
        jinja_release(rt, &vr);
    if (rc) jinja_release(rt, out);
    return rc;
}

static qvlm_status map_list(jinja_rt *rt, const jinja_value *m, map_part part, jinja_value *out) {
    qvlm_status rc = jinja_list_new(rt, jinja_map_len(m), false, out);
    if (rc) return rc;
    if (m->kind == JV_DICT) {
        jinja_dict *d = jinja_dict_of(m);
        for (size_t i = 0; rc == QVLM_OK && i < d->n; i++) {
            jinja_value e = JINJA_UNSET;
            rc = map_entry(rt, &d->keys[i], &d->vals[i], part, &e);
            if (rc == QVLM_OK) rc = jinja_list_push(rt, out, &e);
        }
    } else {
        for (void *it = json_object_iter((json_t *)m->u.j); rc == QVLM_OK && it;
             it = json_object_iter_next((json_t *)m->u.j, it)) {
            jinja_value k = jinja_strv(json_object_iter_key(it), json_object_iter_key_len(it));
            jinja_value v = jinja_from_json(json_object_iter_value(it)), e = JINJA_UNSET;
            rc = map_entry(rt, &k, &v, part, &e);
            if (rc == QVLM_OK) rc = jinja_list_push(rt, out, &e);
        }
    }
    if (rc) jinja_release(rt, out);
    return rc;
}

qvlm_status jinja_map_keys(jinja_rt *rt, const jinja_value *m, jinja_value *out) {
    return map_list(rt, m, MAP_KEYS, out);
}
qvlm_status jinja_map_values(jinja_rt *rt, const jinja_value *m, jinja_value *out) {
    return map_list(rt, m, MAP_VALUES, out);
}
qvlm_status jinja_map_items(jinja_rt *rt, const jinja_value *m, jinja_value *out) {
    return map_list(rt, m, MAP_ITEMS, out);
}

/* ==== Comparison ================================================================================ */

static qvlm_status too_deep(jinja_rt *rt) {
    return jinja_fail(rt, QVLM_E_LIMIT, "%s:%u: values nested deeper than %d levels", rt->tpl->name, rt->line,
                      JINJA_MAX_NESTING);
}

/* Python compares int and float exactly, not through a rounded double. */
static int num_cmp(const jinja_value *a, const jinja_value *b) {
    if (a->kind != JV_FLOAT && b->kind != JV_FLOAT) {
        int64_t x = jinja_as_int(a), y = jinja_as_int(b);
        return (x > y) - (x < y);
    }
    double x = jinja_as_float(a), y = jinja_as_float(b);
    if (a->kind != JV_FLOAT && fabs(y) < 9.0e18 && y == floor(y)) {
        int64_t yi = (int64_t)y, xi = jinja_as_int(a);
        return (xi > yi) - (xi < yi);
    }
    if (b->kind != JV_FLOAT && fabs(x) < 9.0e18 && x == floor(x)) {
        int64_t xi = (int64_t)x, yi = jinja_as_int(b);
        return (xi > yi) - (xi < yi);
    }
    return (x > y) - (x < y);
}

static bool is_listlike(const jinja_value *v) {
    return v->kind == JV_JARR || (v->kind == JV_LIST && !jinja_list_of(v)->is_tuple && !jinja_is_view(v));
}
static bool is_tuple(const jinja_value *v) { return v->kind == JV_LIST && jinja_list_of(v)->is_tuple; }

static qvlm_status eq_rec(jinja_rt *rt, const jinja_value *a, const jinja_value *b, int depth, bool *eq);

static qvlm_status seq_eq(jinja_rt *rt, const jinja_value *a, const jinja_value *b, int depth, bool *eq) {
    size_t n = jinja_seq_len(a);
    *eq = n == jinja_seq_len(b);
    for (size_t i = 0; *eq && i < n; i++) {
        jinja_value x = jinja_seq_at(a, i), y = jinja_seq_at(b, i);
        qvlm_status rc = eq_rec(rt, &x, &y, depth + 1, eq);
        if (rc) return rc;
    }
    return QVLM_OK;
}

static qvlm_status map_eq(jinja_rt *rt, const jinja_value *a, const jinja_value *b, int depth, bool *eq) {
    jinja_value keys = JINJA_UNSET;
    *eq = jinja_map_len(a) == jinja_map_len(b);
    if (!*eq) return QVLM_OK;
    qvlm_status rc = jinja_map_keys(rt, a, &keys);
    for (size_t i = 0; rc == QVLM_OK && *eq && i < jinja_seq_len(&keys); i++) {
        jinja_value k = jinja_seq_at(&keys, i), va, vb;
        bool fa, fb;
        rc = jinja_map_get(rt, a, &k, &va, &fa);
        if (rc == QVLM_OK) rc = jinja_map_get(rt, b, &k, &vb, &fb);
        if (rc == QVLM_OK && !fb)
            *eq = false;
        else if (rc == QVLM_OK) {
            rc = eq_rec(rt, &va, &vb, depth + 1, eq);
            jinja_release(rt, &vb);
        }
        if (fa) jinja_release(rt, &va);
    }
    jinja_release(rt, &keys);
    return rc;
}

static qvlm_status eq_rec(jinja_rt *rt, const jinja_value *a, const jinja_value *b, int depth, bool *eq) {
    if (depth > JINJA_MAX_NESTING) return too_deep(rt);
    *eq = false;
    if (jinja_is_num(a) && jinja_is_num(b)) {
        *eq = num_cmp(a, b) == 0 && !(a->kind == JV_FLOAT && isnan(a->u.f)) &&
              !(b->kind == JV_FLOAT && isnan(b->u.f));
        return QVLM_OK;
    }
    if (is_listlike(a) && is_listlike(b)) return seq_eq(rt, a, b, depth, eq);
    if (is_tuple(a) && is_tuple(b)) return seq_eq(rt, a, b, depth, eq);
    if (jinja_is_mapping(a) && jinja_is_mapping(b)) return map_eq(rt, a, b, depth, eq);
    if (a->kind != b->kind) return QVLM_OK;
    switch (a->kind) {
    case JV_UNDEF:
    case JV_NONE: *eq = true; break;
    case JV_STR:
        *eq = a->u.s.n == b->u.s.n && memcmp(a->u.s.p, b->u.s.p, a->u.s.n) == 0;
        return jinja_step(rt, a->u.s.n / 64);
    default: *eq = a->u.o == b->u.o; break;
    }
    return QVLM_OK;
}

qvlm_status jinja_eq(jinja_rt *rt, const jinja_value *a, const jinja_value *b, bool *eq) {
    return eq_rec(rt, a, b, 0, eq);
}

static qvlm_status cmp_rec(jinja_rt *rt, const jinja_value *a, const jinja_value *b, const char *op,
                           int depth, int *res) {
    if (depth > JINJA_MAX_NESTING) return too_deep(rt);
    if (jinja_is_num(a) && jinja_is_num(b)) {
        *res = num_cmp(a, b);
        return QVLM_OK;
    }
    if (jinja_is_str(a) && jinja_is_str(b)) { /* UTF-8 byte order is code point order */
        size_t n = QVLM_MIN(a->u.s.n, b->u.s.n);
        int c = n ? memcmp(a->u.s.p, b->u.s.p, n) : 0;
        *res = c ? (c > 0) - (c < 0) : (a->u.s.n > b->u.s.n) - (a->u.s.n < b->u.s.n);
        return jinja_step(rt, n / 64);
    }
    if ((is_listlike(a) && is_listlike(b)) || (is_tuple(a) && is_tuple(b))) {
        size_t na = jinja_seq_len(a), nb = jinja_seq_len(b);
        for (size_t i = 0; i < na && i < nb; i++) {
            jinja_value x = jinja_seq_at(a, i), y = jinja_seq_at(b, i);
            bool eq;
            qvlm_status rc = eq_rec(rt, &x, &y, depth + 1, &eq);
            if (rc) return rc;
            if (!eq) return cmp_rec(rt, &x, &y, op, depth + 1, res);
        }
        *res = (na > nb) - (na < nb);
        return QVLM_OK;
    }
    if (jinja_is_undef(a)) return jinja_undef_fail(rt, a);
    if (jinja_is_undef(b)) return jinja_undef_fail(rt, b);
    return jinja_fail(rt, QVLM_E_INVALID, "'%s' not supported between instances of '%s' and '%s'", op,
                      jinja_type_name(a), jinja_type_name(b));
}

qvlm_status jinja_cmp(jinja_rt *rt, const jinja_value *a, const jinja_value *b, const char *op, int *res) {
    return cmp_rec(rt, a, b, op, 0, res);
}

qvlm_status jinja_contains(jinja_rt *rt, const jinja_value *hay, const jinja_value *needle, bool *in) {
    *in = false;
    switch (hay->kind) {
    case JV_STR:
        if (!jinja_is_str(needle)) {
            if (jinja_is_undef(needle)) return jinja_undef_fail(rt, needle);
            return jinja_fail(rt, QVLM_E_INVALID, "'in <string>' requires string as left operand, not %s",
                              jinja_type_name(needle));
        }
        *in = needle->u.s.n == 0 || memmem(hay->u.s.p, hay->u.s.n, needle->u.s.p, needle->u.s.n) != NULL;
        return jinja_step(rt, hay->u.s.n / 64); /* a scan of the whole text */
    case JV_LIST:
    case JV_JARR:
        for (size_t i = 0; i < jinja_seq_len(hay) && !*in; i++) {
            jinja_value x = jinja_seq_at(hay, i);
            qvlm_status rc = jinja_eq(rt, &x, needle, in);
            if (rc) return rc;
        }
        return jinja_step(rt, jinja_seq_len(hay) / 16);
    case JV_DICT:
    case JV_JOBJ: {
        if (!hashable(needle))
            return jinja_fail(rt, QVLM_E_INVALID, "unhashable type: '%s'", jinja_type_name(needle));
        jinja_value v = JINJA_UNSET;
        qvlm_status rc = jinja_map_get(rt, hay, needle, &v, in);
        if (*in) jinja_release(rt, &v);
        return rc;
    }
    case JV_UNDEF: return QVLM_OK; /* Undefined iterates as empty */
    default:
        return jinja_fail(rt, QVLM_E_INVALID, "argument of type '%s' is not iterable", jinja_type_name(hay));
    }
}

/* ==== Buffers =================================================================================== */

qvlm_status jinja_buf_put(jinja_rt *rt, jinja_buf *b, const char *p, size_t n) {
    if (n == 0) return QVLM_OK;
    qvlm_status rc = jinja_step(rt, 1 + n / 64);
    if (rc) return rc;
    if (b->n + n + 1 > b->cap) {
        size_t need;
        if (qvlm_add_overflow(b->n, n + 1, &need)) return jinja_fail(rt, QVLM_E_LIMIT, "text too long");
        void *arr = b->p;
        size_t cap = b->cap;
        rc = grow(rt, &arr, &cap, need < 64 ? 64 : need, 1);
        if (rc) return rc;
        b->p = arr;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = '\0';
    return QVLM_OK;
}

qvlm_status jinja_buf_putc(jinja_rt *rt, jinja_buf *b, char c) { return jinja_buf_put(rt, b, &c, 1); }

qvlm_status jinja_buf_printf(jinja_rt *rt, jinja_buf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) return jinja_fail(rt, QVLM_E_INTERNAL, "formatting failed");
    return jinja_buf_put(rt, b, tmp, QVLM_MIN((size_t)n, sizeof(tmp) - 1));
}

void jinja_buf_free(jinja_rt *rt, jinja_buf *b) {
    free(b->p);
    jinja_mem_give(rt, b->cap);
    b->p = NULL;
    b->n = b->cap = 0;
}

qvlm_status jinja_buf_to_str(jinja_rt *rt, jinja_buf *b, jinja_value *out) {
    qvlm_status rc = jinja_str_new(rt, b->p ? b->p : "", b->n, out);
    b->n = 0;
    return rc;
}

/* ==== str / repr ================================================================================ */

static qvlm_status repr_seq(jinja_rt *rt, const jinja_value *v, jinja_buf *b, int depth) {
    bool tuple = is_tuple(v), view = v->kind == JV_LIST && jinja_list_of(v)->view != JVIEW_NONE;
    size_t n = jinja_seq_len(v);
    qvlm_status rc = view ? jinja_buf_printf(rt, b, "%s(", jinja_type_name(v)) : QVLM_OK;
    if (rc == QVLM_OK) rc = jinja_buf_putc(rt, b, tuple ? '(' : '[');
    for (size_t i = 0; rc == QVLM_OK && i < n; i++) {
        jinja_value x = jinja_seq_at(v, i);
        if (i) rc = jinja_buf_put(rt, b, ", ", 2);
        if (rc == QVLM_OK) rc = jinja_repr(rt, &x, b, depth + 1);
    }
    if (rc == QVLM_OK && tuple && n == 1) rc = jinja_buf_putc(rt, b, ',');
    if (rc == QVLM_OK) rc = jinja_buf_putc(rt, b, tuple ? ')' : ']');
    if (rc == QVLM_OK && view) rc = jinja_buf_putc(rt, b, ')');
    return rc;
}

static qvlm_status repr_map(jinja_rt *rt, const jinja_value *m, jinja_buf *b, int depth) {
    jinja_value items = JINJA_UNSET;
    qvlm_status rc = jinja_map_items(rt, m, &items);
    if (rc == QVLM_OK) rc = jinja_buf_putc(rt, b, '{');
    for (size_t i = 0; rc == QVLM_OK && i < jinja_seq_len(&items); i++) {
        jinja_list *kv = jinja_list_of(&jinja_list_of(&items)->items[i]);
        if (i) rc = jinja_buf_put(rt, b, ", ", 2);
        if (rc == QVLM_OK) rc = jinja_repr(rt, &kv->items[0], b, depth + 1);
        if (rc == QVLM_OK) rc = jinja_buf_put(rt, b, ": ", 2);
        if (rc == QVLM_OK) rc = jinja_repr(rt, &kv->items[1], b, depth + 1);
    }
    if (rc == QVLM_OK) rc = jinja_buf_putc(rt, b, '}');
    jinja_release(rt, &items);
    return rc;
}

static qvlm_status str_other(jinja_rt *rt, const jinja_value *v, jinja_buf *b, int depth) {
    switch (v->kind) {
    case JV_NS: {
        jinja_value as_dict = *v;
        as_dict.kind = JV_DICT; /* same layout; Namespace.__repr__ shows its attribute dict */
        qvlm_status rc = jinja_buf_put(rt, b, "<Namespace ", 11);
        if (rc == QVLM_OK) rc = repr_map(rt, &as_dict, b, depth);
        return rc ? rc : jinja_buf_putc(rt, b, '>');
    }
    case JV_MACRO: return jinja_buf_printf(rt, b, "<Macro '%s'>", ((jinja_macro *)v->u.o)->def->name);
    case JV_FUNC: return jinja_buf_printf(rt, b, "<built-in method %s>", ((jinja_func *)v->u.o)->def->name);
    case JV_LOOP: {
        jinja_loop *l = (jinja_loop *)v->u.o;
        return jinja_buf_printf(rt, b, "<LoopContext %zu/%zu>", l->index0 + 1, jinja_seq_len(&l->items));
    }
    default: return QVLM_OK;
    }
}

qvlm_status jinja_repr(jinja_rt *rt, const jinja_value *v, jinja_buf *b, int depth) {
    if (depth > JINJA_MAX_NESTING) return too_deep(rt);
    switch (v->kind) {
    case JV_UNDEF: return jinja_buf_put(rt, b, "Undefined", 9);
    case JV_STR: return jinja_repr_str(rt, v->u.s.p, v->u.s.n, b);
    case JV_LIST:
    case JV_JARR: return repr_seq(rt, v, b, depth);
    case JV_DICT:
    case JV_JOBJ: return repr_map(rt, v, b, depth);
    case JV_NS:
    case JV_MACRO:
    case JV_FUNC:
    case JV_LOOP: return str_other(rt, v, b, depth);
    default: return jinja_str(rt, v, b);
    }
}

qvlm_status jinja_str(jinja_rt *rt, const jinja_value *v, jinja_buf *b) {
    char num[40];
    switch (v->kind) {
    case JV_UNDEF: return QVLM_OK;
    case JV_NONE: return jinja_buf_put(rt, b, "None", 4);
    case JV_BOOL: return v->u.b ? jinja_buf_put(rt, b, "True", 4) : jinja_buf_put(rt, b, "False", 5);
    case JV_INT: return jinja_buf_printf(rt, b, "%lld", (long long)v->u.i);
    case JV_FLOAT: jinja_fmt_float(v->u.f, num, sizeof(num)); return jinja_buf_put(rt, b, num, strlen(num));
    case JV_STR: return jinja_buf_put(rt, b, v->u.s.p, v->u.s.n);
    case JV_LIST:
    case JV_JARR:
    case JV_DICT:
    case JV_JOBJ: return jinja_repr(rt, v, b, 0);
    default: return str_other(rt, v, b, 0);
    }
}

qvlm_status jinja_to_str(jinja_rt *rt, const jinja_value *v, jinja_value *out) {
    if (jinja_is_str(v)) {
        *out = jinja_ref(v);
        return QVLM_OK;
    }
    jinja_buf b = {0};
    qvlm_status rc = jinja_str(rt, v, &b);
    if (rc == QVLM_OK) rc = jinja_buf_to_str(rt, &b, out);
    jinja_buf_free(rt, &b);
    return rc;
}

/* ==== json.dumps ================================================================================ */

static qvlm_status json_str_out(jinja_rt *rt, const char *p, size_t n, bool ascii, jinja_buf *b) {
    qvlm_status rc = jinja_buf_putc(rt, b, '"');
    size_t i = 0;
    while (rc == QVLM_OK && i < n) {
        size_t start = i;
        int32_t cp = jinja_utf8_next(p, n, &i);
        char esc[16];
        esc[0] = '\0';
        switch (cp) {
        case '"': snprintf(esc, sizeof(esc), "\\\""); break;
        case '\\': snprintf(esc, sizeof(esc), "\\\\"); break;
        case '\n': snprintf(esc, sizeof(esc), "\\n"); break;
        case '\r': snprintf(esc, sizeof(esc), "\\r"); break;
        case '\t': snprintf(esc, sizeof(esc), "\\t"); break;
        case '\b': snprintf(esc, sizeof(esc), "\\b"); break;
        case '\f': snprintf(esc, sizeof(esc), "\\f"); break;
        default:
            if (cp < 0x20 || (ascii && cp >= 0x7F && cp <= 0xFFFF))
                snprintf(esc, sizeof(esc), "\\u%04x", (unsigned)cp);
            else if (ascii && cp > 0xFFFF) /* a surrogate pair, as Python writes it */
                snprintf(esc, sizeof(esc), "\\u%04x\\u%04x", 0xD800u + (((unsigned)cp - 0x10000u) >> 10),
                         0xDC00u + (((unsigned)cp - 0x10000u) & 0x3FFu));
        }
        rc = esc[0] ? jinja_buf_put(rt, b, esc, strlen(esc)) : jinja_buf_put(rt, b, p + start, i - start);
    }
    return rc ? rc : jinja_buf_putc(rt, b, '"');
}

static qvlm_status json_newline(jinja_rt *rt, const jinja_json_opts *o, jinja_buf *b, int level) {
    qvlm_status rc = jinja_buf_putc(rt, b, '\n');
    for (int k = 0; rc == QVLM_OK && k < level; k++) rc = jinja_buf_put(rt, b, o->indent, o->indent_n);
    return rc;
}

static qvlm_status json_seq(jinja_rt *rt, const jinja_value *v, const jinja_json_opts *o, jinja_buf *b,
                            int depth) {
    size_t n = jinja_seq_len(v);
    if (n == 0) return jinja_buf_put(rt, b, "[]", 2);
    qvlm_status rc = jinja_buf_putc(rt, b, '[');
    for (size_t i = 0; rc == QVLM_OK && i < n; i++) {
        jinja_value x = jinja_seq_at(v, i);
        if (i) rc = jinja_buf_put(rt, b, o->item_sep, o->item_sep_n);
        if (rc == QVLM_OK && o->has_indent) rc = json_newline(rt, o, b, depth + 1);
        if (rc == QVLM_OK) rc = jinja_tojson(rt, &x, o, b, depth + 1);
    }
    if (rc == QVLM_OK && o->has_indent) rc = json_newline(rt, o, b, depth);
    return rc ? rc : jinja_buf_putc(rt, b, ']');
}

/* json.dumps turns int, float, bool and None keys into strings; anything else is a TypeError. */
static qvlm_status json_key(jinja_rt *rt, const jinja_value *k, const jinja_json_opts *o, jinja_buf *b) {
    if (jinja_is_str(k)) return json_str_out(rt, k->u.s.p, k->u.s.n, o->ensure_ascii, b);
    jinja_buf tmp = {0};
    qvlm_status rc;
    if (k->kind == JV_BOOL)
        rc = jinja_buf_put(rt, &tmp, k->u.b ? "true" : "false", k->u.b ? 4 : 5);
    else if (k->kind == JV_NONE)
        rc = jinja_buf_put(rt, &tmp, "null", 4);
    else if (k->kind == JV_INT || k->kind == JV_FLOAT)
        rc = jinja_tojson(rt, k, o, &tmp, 0);
    else
        rc = jinja_fail(rt, QVLM_E_INVALID, "keys must be str, int, float, bool or None, not %s",
                        jinja_type_name(k));
    if (rc == QVLM_OK) rc = json_str_out(rt, tmp.p, tmp.n, false, b);
    jinja_buf_free(rt, &tmp);
    return rc;
}

/* Stable insertion sort of (key, value) tuples by key; dicts in templates are small. */
static qvlm_status sort_items(jinja_rt *rt, jinja_list *items) {
    for (size_t i = 1; i < items->n; i++) {
        for (size_t j = i; j > 0; j--) {
            int c;
            qvlm_status rc = jinja_cmp(rt, &jinja_list_of(&items->items[j - 1])->items[0],
                                       &jinja_list_of(&items->items[j])->items[0], "<", &c);
            if (rc) return rc;
            if (c <= 0) break;
            jinja_value t = items->items[j];
            items->items[j] = items->items[j - 1];
            items->items[j - 1] = t;
        }
        qvlm_status rc = jinja_step(rt, i);
        if (rc) return rc;
    }
    return QVLM_OK;
}

static qvlm_status json_map(jinja_rt *rt, const jinja_value *m, const jinja_json_opts *o, jinja_buf *b,
                            int depth) {
    if (jinja_map_len(m) == 0) return jinja_buf_put(rt, b, "{}", 2);
    jinja_value items = JINJA_UNSET;
    qvlm_status rc = jinja_map_items(rt, m, &items);
    if (rc) return rc;
    jinja_list *l = jinja_list_of(&items);
    if (o->sort_keys) rc = sort_items(rt, l);
    if (rc == QVLM_OK) rc = jinja_buf_putc(rt, b, '{');
    for (size_t i = 0; rc == QVLM_OK && i < l->n; i++) {
        jinja_list *kv = jinja_list_of(&l->items[i]);
        if (i) rc = jinja_buf_put(rt, b, o->item_sep, o->item_sep_n);
        if (rc == QVLM_OK && o->has_indent) rc = json_newline(rt, o, b, depth + 1);
        if (rc == QVLM_OK) rc = json_key(rt, &kv->items[0], o, b);
        if (rc == QVLM_OK) rc = jinja_buf_put(rt, b, o->key_sep, o->key_sep_n);
        if (rc == QVLM_OK) rc = jinja_tojson(rt, &kv->items[1], o, b, depth + 1);
    }
    if (rc == QVLM_OK && o->has_indent) rc = json_newline(rt, o, b, depth);
    if (rc == QVLM_OK) rc = jinja_buf_putc(rt, b, '}');
    jinja_release(rt, &items);
    return rc;
}

qvlm_status jinja_tojson(jinja_rt *rt, const jinja_value *v, const jinja_json_opts *o, jinja_buf *b,
                         int depth) {
    if (depth > JINJA_MAX_NESTING) return too_deep(rt);
    switch (v->kind) {
    case JV_NONE: return jinja_buf_put(rt, b, "null", 4);
    case JV_BOOL: return v->u.b ? jinja_buf_put(rt, b, "true", 4) : jinja_buf_put(rt, b, "false", 5);
    case JV_INT: return jinja_str(rt, v, b);
    case JV_FLOAT:
        if (isnan(v->u.f)) return jinja_buf_put(rt, b, "NaN", 3);
        if (isinf(v->u.f))
            return v->u.f > 0 ? jinja_buf_put(rt, b, "Infinity", 8) : jinja_buf_put(rt, b, "-Infinity", 9);
        return jinja_str(rt, v, b);
    case JV_STR: return json_str_out(rt, v->u.s.p, v->u.s.n, o->ensure_ascii, b);
    case JV_LIST:
    case JV_JARR:
        if (v->kind == JV_LIST && jinja_list_of(v)->view != JVIEW_NONE)
            break; /* views are not serializable */
        return json_seq(rt, v, o, b, depth);
    case JV_DICT:
    case JV_JOBJ: return json_map(rt, v, o, b, depth);
    default: break;
    }
    return jinja_fail(rt, QVLM_E_INVALID, "Object of type %s is not JSON serializable", jinja_type_name(v));
}
