/* jinja_eval.c - the tree-walking interpreter: statements, expressions, scopes, macros, loops.
 *
 * Scoping follows Jinja's compiled frames: the top level, each loop iteration, each macro
 * call, `with`, `{% set %}...{% endset %}` and `{% filter %}` bodies get a new scope whose
 * parent is where they appear; `if` does not. A macro closes over the scope it was defined
 * in and reads it when called (late binding, as Python closures). Names fall back to the
 * render context, then the template defaults, then the globals; a missing name is an
 * Undefined that is falsy and prints as "" but raises when used for anything else.
 *
 * Work is bounded: every statement and expression costs a step and a level of depth (the
 * C stack), and output is capped (see jinja.h). `break` / `continue` travel up as the
 * positive statuses FLOW_BREAK / FLOW_CONTINUE, which never leave a loop body (the parser
 * rejects them outside loops).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/jinja.h"

#define FLOW_BREAK ((qvlm_status)1)
#define FLOW_CONTINUE ((qvlm_status)2)

static qvlm_status eval(jinja_rt *rt, jinja_scope *sc, const jinja_expr *e, jinja_value *out);
static qvlm_status exec_body(jinja_rt *rt, jinja_scope *sc, const jinja_body *b);

/* ==== Scopes ==================================================================================== */

static qvlm_status scope_new(jinja_rt *rt, jinja_scope *parent, jinja_scope **out) {
    jinja_scope *s = NULL;
    *out = NULL;
    qvlm_status rc = jinja_obj_new(rt, JO_SCOPE, sizeof(*s), (void **)&s);
    if (rc) return rc;
    s->parent = parent;
    if (parent) parent->h.refs++;
    *out = s;
    return QVLM_OK;
}

static void scope_release(jinja_rt *rt, jinja_scope *s) {
    if (s) jinja_obj_release(rt, &s->h);
}

static jinja_var *scope_find(jinja_scope *s, const char *name, size_t n) {
    for (size_t i = 0; i < s->n; i++)
        if (s->vars[i].n == n && memcmp(s->vars[i].name, name, n) == 0) return &s->vars[i];
    return NULL;
}

/* Bind name in this scope, taking over the reference in *v. */
static qvlm_status scope_set(jinja_rt *rt, jinja_scope *s, const char *name, size_t n, jinja_value *v) {
    jinja_var *var = scope_find(s, name, n);
    if (var) {
        jinja_value old = var->v;
        var->v = *v;
        *v = jinja_undefined();
        jinja_release(rt, &old);
        return QVLM_OK;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        qvlm_status rc = jinja_mem_take(rt, (cap - s->cap) * sizeof(jinja_var));
        jinja_var *p = rc ? NULL : realloc(s->vars, cap * sizeof(jinja_var));
        if (!p) {
            if (rc == QVLM_OK) {
                jinja_mem_give(rt, (cap - s->cap) * sizeof(jinja_var));
                rc = jinja_fail(rt, QVLM_E_NOMEM, "out of memory rendering the template");
            }
            jinja_release(rt, v);
            return rc;
        }
        s->vars = p;
        s->cap = cap;
    }
    s->vars[s->n++] = (jinja_var){name, n, *v};
    *v = jinja_undefined();
    return QVLM_OK;
}

static qvlm_status lookup(jinja_rt *rt, jinja_scope *sc, const char *name, size_t n, jinja_value *out) {
    for (jinja_scope *s = sc; s; s = s->parent) {
        jinja_var *var = scope_find(s, name, n);
        if (var) {
            *out = jinja_ref(&var->v);
            return QVLM_OK;
        }
    }
    const json_t *j = rt->ctx ? json_object_getn(rt->ctx, name, n) : NULL;
    if (!j && rt->defaults) j = json_object_getn(rt->defaults, name, n);
    if (j) {
        *out = jinja_from_json(j);
        return QVLM_OK;
    }
    const jinja_func_def *g = jinja_global_find(name, n);
    if (g) return jinja_func_new(rt, g, NULL, out);
    return jinja_undef_new(rt, out, "'%.*s' is undefined", (int)QVLM_MIN(n, 200), name);
}

/* ==== Output ==================================================================================== */

static qvlm_status check_output(jinja_rt *rt) {
    if (rt->out->n > rt->lim.max_output_bytes)
        return jinja_fail(rt, QVLM_E_LIMIT, "%s:%u: rendered text exceeds %zu bytes", rt->tpl->name, rt->line,
                          rt->lim.max_output_bytes);
    return QVLM_OK;
}

static qvlm_status emit_value(jinja_rt *rt, const jinja_value *v) {
    qvlm_status rc = jinja_str(rt, v, rt->out);
    return rc ? rc : check_output(rt);
}

/* Run a body in a new scope with its output captured into a string (macros, set blocks,
 * filter blocks). */
static qvlm_status capture(jinja_rt *rt, jinja_scope *sc, const jinja_body *body, jinja_value *out) {
    jinja_buf buf = {0}, *saved = rt->out;
    rt->out = &buf;
    qvlm_status rc = exec_body(rt, sc, body);
    rt->out = saved;
    if (rc == QVLM_OK) rc = jinja_buf_to_str(rt, &buf, out);
    jinja_buf_free(rt, &buf);
    return rc;
}

/* ==== Assignment ================================================================================ */

static qvlm_status assign(jinja_rt *rt, jinja_scope *sc, const jinja_target *t, const jinja_value *v);

static qvlm_status unpack(jinja_rt *rt, jinja_scope *sc, const jinja_target *t, const jinja_value *v) {
    jinja_value items = JINJA_UNSET;
    qvlm_status rc = jinja_iterate(rt, v, &items);
    if (rc) return rc;
    size_t n = jinja_seq_len(&items);
    if (n < t->n)
        rc = jinja_fail(rt, QVLM_E_INVALID, "not enough values to unpack (expected %zu, got %zu)", t->n, n);
    else if (n > t->n)
        rc = jinja_fail(rt, QVLM_E_INVALID, "too many values to unpack (expected %zu)", t->n);
    for (size_t i = 0; rc == QVLM_OK && i < n; i++) {
        jinja_value x = jinja_seq_at(&items, i);
        rc = assign(rt, sc, &t->items[i], &x);
    }
    jinja_release(rt, &items);
    return rc;
}

static qvlm_status assign(jinja_rt *rt, jinja_scope *sc, const jinja_target *t, const jinja_value *v) {
    if (t->kind == JTG_TUPLE) return unpack(rt, sc, t, v);
    jinja_value copy = jinja_ref(v);
    if (t->kind == JTG_NAME) return scope_set(rt, sc, t->name, strlen(t->name), &copy);
    jinja_value ns = JINJA_UNSET;
    qvlm_status rc = lookup(rt, sc, t->name, strlen(t->name), &ns);
    if (rc == QVLM_OK && ns.kind != JV_NS)
        rc = jinja_fail(rt, QVLM_E_INVALID, "cannot assign attribute on non-namespace object");
    if (rc == QVLM_OK) {
        jinja_value key = jinja_strv(t->attr, strlen(t->attr));
        rc = jinja_dict_set(rt, &ns, &key, &copy);
    } else {
        jinja_release(rt, &copy);
    }
    jinja_release(rt, &ns);
    return rc;
}

/* ==== Calls ===================================================================================== */

static void args_free(jinja_rt *rt, jinja_args *a) {
    for (size_t i = 0; i < a->n_pos; i++) jinja_release(rt, &a->pos[i]);
    for (size_t i = 0; i < a->n_kw; i++) jinja_release(rt, &a->kw[i]);
    free(a->pos);
    free(a->kw);
    free(a->kw_names);
}

/* Evaluate call arguments; `extra` reserves keyword slots the caller fills in afterwards. */
static qvlm_status eval_args(jinja_rt *rt, jinja_scope *sc, const jinja_callargs *ca, size_t extra,
                             jinja_args *a) {
    memset(a, 0, sizeof(*a));
    a->pos = calloc(ca->n_pos + 1, sizeof(jinja_value));
    a->kw = calloc(ca->n_kw + extra + 1, sizeof(jinja_value));
    a->kw_names = calloc(ca->n_kw + extra + 1, sizeof(char *));
    if (!a->pos || !a->kw || !a->kw_names) {
        args_free(rt, a);
        return jinja_fail(rt, QVLM_E_NOMEM, "out of memory rendering the template");
    }
    qvlm_status rc = QVLM_OK;
    for (size_t i = 0; rc == QVLM_OK && i < ca->n_pos; i++, a->n_pos++)
        rc = eval(rt, sc, ca->pos[i], &a->pos[i]);
    for (size_t i = 0; rc == QVLM_OK && i < ca->n_kw; i++, a->n_kw++) {
        a->kw_names[i] = ca->kw_names[i];
        rc = eval(rt, sc, ca->kw[i], &a->kw[i]);
    }
    if (rc) args_free(rt, a);
    return rc;
}

qvlm_status jinja_call(jinja_rt *rt, const jinja_value *fn, const jinja_args *a, jinja_value *out) {
    switch (fn->kind) {
    case JV_MACRO: return jinja_macro_call(rt, fn, a, out);
    case JV_FUNC: {
        const jinja_func *f = (const jinja_func *)fn->u.o;
        return f->def->fn(rt, &f->self, a, out);
    }
    case JV_UNDEF: return jinja_undef_fail(rt, fn);
    default: return jinja_fail(rt, QVLM_E_INVALID, "'%s' object is not callable", jinja_type_name(fn));
    }
}

static long kw_index(const jinja_args *a, const char *name, const bool *used) {
    for (size_t k = 0; k < a->n_kw; k++)
        if (!used[k] && strcmp(a->kw_names[k], name) == 0) return (long)k;
    return -1;
}

/* Bind a macro call's arguments into scope `s` as jinja2.runtime.Macro.__call__ does. */
static qvlm_status bind_macro_args(jinja_rt *rt, const jinja_macro *m, const jinja_args *a, bool *used,
                                   jinja_scope *s) {
    const jinja_macro_def *d = m->def;
    qvlm_status rc = QVLM_OK;
    bool found_caller = false;
    for (size_t i = 0; rc == QVLM_OK && i < d->n_params; i++) {
        const char *pname = d->params[i];
        long k = i < a->n_pos ? -1 : kw_index(a, pname, used);
        jinja_value v = JINJA_UNSET;
        if (strcmp(pname, "caller") == 0 && i >= a->n_pos) found_caller = true;
        if (i < a->n_pos)
            v = jinja_ref(&a->pos[i]);
        else if (k >= 0)
            used[k] = true, v = jinja_ref(&a->kw[k]);
        else if (d->defaults[i])
            rc = eval(rt, s, d->defaults[i], &v);
        else
            rc = jinja_undef_new(rt, &v, "parameter '%s' was not provided", pname);
        if (rc == QVLM_OK) rc = scope_set(rt, s, pname, strlen(pname), &v);
    }
    if (rc == QVLM_OK && d->takes_caller && !found_caller) {
        long k = kw_index(a, "caller", used);
        jinja_value v = JINJA_UNSET;
        if (k >= 0)
            used[k] = true, v = jinja_ref(&a->kw[k]);
        else
            rc = jinja_undef_new(rt, &v, "No caller defined");
        if (rc == QVLM_OK) rc = scope_set(rt, s, "caller", 6, &v);
    }
    return rc;
}

/* What the macro does with arguments it has no parameter for: varargs / kwargs or an error. */
static qvlm_status bind_macro_extra(jinja_rt *rt, const jinja_macro_def *d, const jinja_args *a,
                                    const bool *used, jinja_scope *s) {
    jinja_value extra = JINJA_UNSET;
    qvlm_status rc = QVLM_OK;
    if (d->catch_kwargs) {
        rc = jinja_dict_new(rt, JO_DICT, &extra);
        for (size_t k = 0; rc == QVLM_OK && k < a->n_kw; k++) {
            if (used[k]) continue;
            jinja_value key = jinja_strv(a->kw_names[k], strlen(a->kw_names[k])), v = jinja_ref(&a->kw[k]);
            rc = jinja_dict_set(rt, &extra, &key, &v);
        }
        if (rc == QVLM_OK)
            rc = scope_set(rt, s, "kwargs", 6, &extra);
        else
            jinja_release(rt, &extra);
    } else {
        for (size_t k = 0; rc == QVLM_OK && k < a->n_kw; k++) {
            if (used[k]) continue;
            if (strcmp(a->kw_names[k], "caller") == 0)
                return jinja_fail(rt, QVLM_E_INVALID,
                                  "macro '%s' was invoked with two values for the special"
                                  " caller argument. This is most likely a bug.",
                                  d->name);
            return jinja_fail(rt, QVLM_E_INVALID, "macro '%s' takes no keyword argument '%s'", d->name,
                              a->kw_names[k]);
        }
    }
    if (rc) return rc;
    if (d->catch_varargs) {
        rc = jinja_list_new(rt, 0, true, &extra);
        for (size_t i = d->n_params; rc == QVLM_OK && i < a->n_pos; i++) {
            jinja_value v = jinja_ref(&a->pos[i]);
            rc = jinja_list_push(rt, &extra, &v);
        }
        if (rc == QVLM_OK)
            rc = scope_set(rt, s, "varargs", 7, &extra);
        else
            jinja_release(rt, &extra);
    } else if (a->n_pos > d->n_params) {
        rc = jinja_fail(rt, QVLM_E_INVALID, "macro '%s' takes not more than %zu argument(s)", d->name,
                        d->n_params);
    }
    return rc;
}

qvlm_status jinja_macro_call(jinja_rt *rt, const jinja_value *macro, const jinja_args *a, jinja_value *out) {
    const jinja_macro *m = (const jinja_macro *)macro->u.o;
    bool *used = calloc(a->n_kw + 1, sizeof(bool));
    if (!used) return jinja_fail(rt, QVLM_E_NOMEM, "out of memory rendering the template");
    jinja_scope *s = NULL;
    qvlm_status rc = scope_new(rt, m->closure, &s);
    if (rc == QVLM_OK) rc = bind_macro_args(rt, m, a, used, s);
    if (rc == QVLM_OK) rc = bind_macro_extra(rt, m->def, a, used, s);
    if (rc == QVLM_OK) rc = capture(rt, s, &m->def->body, out);
    free(used);
    scope_release(rt, s);
    return rc;
}

static qvlm_status macro_new(jinja_rt *rt, const jinja_macro_def *d, jinja_scope *closure, jinja_value *out) {
    jinja_macro *m;
    qvlm_status rc = jinja_obj_new(rt, JO_MACRO, sizeof(*m), (void **)&m);
    if (rc) return rc;
    m->def = d;
    m->closure = closure;
    closure->h.refs++;
    out->kind = JV_MACRO;
    out->u.o = &m->h;
    return QVLM_OK;
}

/* ==== The loop object =========================================================================== */

static qvlm_status loop_cycle(jinja_rt *rt, const jinja_value *self, const jinja_args *a, jinja_value *out) {
    const jinja_loop *l = (const jinja_loop *)self->u.o;
    if (a->n_pos == 0) return jinja_fail(rt, QVLM_E_INVALID, "no items for cycling given");
    *out = jinja_ref(&a->pos[l->index0 % a->n_pos]);
    return QVLM_OK;
}

static qvlm_status loop_changed(jinja_rt *rt, const jinja_value *self, const jinja_args *a,
                                jinja_value *out) {
    jinja_loop *l = (jinja_loop *)self->u.o;
    jinja_value now = JINJA_UNSET;
    qvlm_status rc = jinja_list_new(rt, a->n_pos, true, &now);
    for (size_t i = 0; rc == QVLM_OK && i < a->n_pos; i++) {
        jinja_value v = jinja_ref(&a->pos[i]);
        rc = jinja_list_push(rt, &now, &v);
    }
    bool same = false;
    if (rc == QVLM_OK && l->changed_seen) rc = jinja_eq(rt, &now, &l->changed_last, &same);
    if (rc) {
        jinja_release(rt, &now);
        return rc;
    }
    *out = jinja_bool(!same);
    jinja_release(rt, &l->changed_last);
    l->changed_last = now;
    l->changed_seen = true;
    return QVLM_OK;
}

static const jinja_func_def LOOP_CYCLE = {"cycle", loop_cycle}, LOOP_CHANGED = {"changed", loop_changed};

static bool name_is(const char *name, size_t n, const char *s) {
    return strlen(s) == n && memcmp(name, s, n) == 0;
}

qvlm_status jinja_loop_getattr(jinja_rt *rt, const jinja_value *loop, const char *name, size_t n,
                               jinja_value *out) {
    const jinja_loop *l = (const jinja_loop *)loop->u.o;
    size_t len = jinja_seq_len(&l->items), i = l->index0;
    if (name_is(name, n, "index0"))
        *out = jinja_int((int64_t)i);
    else if (name_is(name, n, "index"))
        *out = jinja_int((int64_t)i + 1);
    else if (name_is(name, n, "revindex"))
        *out = jinja_int((int64_t)(len - i));
    else if (name_is(name, n, "revindex0"))
        *out = jinja_int((int64_t)(len - i - 1));
    else if (name_is(name, n, "first"))
        *out = jinja_bool(i == 0);
    else if (name_is(name, n, "last"))
        *out = jinja_bool(i + 1 == len);
    else if (name_is(name, n, "length"))
        *out = jinja_int((int64_t)len);
    else if (name_is(name, n, "depth"))
        *out = jinja_int((int64_t)l->depth0 + 1);
    else if (name_is(name, n, "depth0"))
        *out = jinja_int((int64_t)l->depth0);
    else if (name_is(name, n, "previtem")) {
        if (i == 0) return jinja_undef_new(rt, out, "there is no previous item");
        jinja_value v = jinja_seq_at(&l->items, i - 1);
        *out = jinja_ref(&v);
    } else if (name_is(name, n, "nextitem")) {
        if (i + 1 >= len) return jinja_undef_new(rt, out, "there is no next item");
        jinja_value v = jinja_seq_at(&l->items, i + 1);
        *out = jinja_ref(&v);
    } else if (name_is(name, n, "cycle"))
        return jinja_func_new(rt, &LOOP_CYCLE, loop, out);
    else if (name_is(name, n, "changed"))
        return jinja_func_new(rt, &LOOP_CHANGED, loop, out);
    else {
        jinja_value key = jinja_strv(name, n);
        return jinja_undef_missing(rt, loop, &key, out);
    }
    return QVLM_OK;
}

/* ==== Expressions =============================================================================== */

static qvlm_status eval_seq(jinja_rt *rt, jinja_scope *sc, const jinja_expr *e, jinja_value *out) {
    qvlm_status rc = jinja_list_new(rt, e->u.seq.n, e->kind == JE_TUPLE, out);
    for (size_t i = 0; rc == QVLM_OK && i < e->u.seq.n; i++) {
        jinja_value v = JINJA_UNSET;
        rc = eval(rt, sc, e->u.seq.items[i], &v);
        if (rc == QVLM_OK) rc = jinja_list_push(rt, out, &v);
    }
    if (rc) jinja_release(rt, out);
    return rc;
}

static qvlm_status eval_dict(jinja_rt *rt, jinja_scope *sc, const jinja_expr *e, jinja_value *out) {
    qvlm_status rc = jinja_dict_new(rt, JO_DICT, out);
    for (size_t i = 0; rc == QVLM_OK && i + 1 < e->u.seq.n; i += 2) {
        jinja_value k = JINJA_UNSET, v = JINJA_UNSET;
        rc = eval(rt, sc, e->u.seq.items[i], &k);
        if (rc) break;
        rc = eval(rt, sc, e->u.seq.items[i + 1], &v);
        if (rc) {
            jinja_release(rt, &k);
            break;
        }
        rc = jinja_dict_set(rt, out, &k, &v);
    }
    if (rc) jinja_release(rt, out);
    return rc;
}

static qvlm_status eval_attr(jinja_rt *rt, jinja_scope *sc, const jinja_expr *e, jinja_value *out) {
    jinja_value obj = JINJA_UNSET;
    qvlm_status rc = eval(rt, sc, e->u.attr.obj, &obj);
    if (rc) return rc;
    rc = jinja_getattr(rt, &obj, e->u.attr.p, e->u.attr.n, out);
    jinja_release(rt, &obj);
    return rc;
}

static qvlm_status eval_item(jinja_rt *rt, jinja_scope *sc, const jinja_expr *e, jinja_value *out) {
    jinja_value obj = JINJA_UNSET, key = JINJA_UNSET;
    qvlm_status rc = eval(rt, sc, e->u.item.obj, &obj);
    if (rc) return rc;
    rc = eval(rt, sc, e->u.item.index, &key);
    if (rc == QVLM_OK) {
        rc = jinja_getitem(rt, &obj, &key, out);
        jinja_release(rt, &key);
    }
    jinja_release(rt, &obj);
    return rc;
}

/* Evaluate an optional slice part: NULL means None. */
static qvlm_status eval_opt(jinja_rt *rt, jinja_scope *sc, const jinja_expr *e, jinja_value *out) {
    if (!e) {
        *out = jinja_none();
        return QVLM_OK;
    }
    return eval(rt, sc, e, out);
}

static qvlm_status eval_slice(jinja_rt *rt, jinja_scope *sc, const jinja_expr *e, jinja_value *out) {
    jinja_value obj, parts[3] = {jinja_none(), jinja_none(), jinja_none()};
    const jinja_expr *pe[3] = {e->u.slice.start, e->u.slice.stop, e->u.slice.step};
    qvlm_status rc = eval(rt, sc, e->u.slice.obj, &obj);
    if (rc) return rc;
    for (int k = 0; rc == QVLM_OK && k < 3; k++) rc = eval_opt(rt, sc, pe[k], &parts[k]);
    if (rc == QVLM_OK && jinja_is_view(&obj))
        rc = jinja_fail(rt, QVLM_E_INVALID, "'%s' object is not subscriptable", jinja_type_name(&obj));
    if (rc == QVLM_OK) rc = jinja_slice(rt, &obj, parts, out);
    for (int k = 0; k < 3; k++) jinja_release(rt, &parts[k]);
    jinja_release(rt, &obj);
    return rc;
}

static qvlm_status eval_call(jinja_rt *rt, jinja_scope *sc, const jinja_expr *e, const jinja_value *caller,
                             jinja_value *out) {
    jinja_value fn = JINJA_UNSET;
    jinja_args a;
    qvlm_status rc = eval(rt, sc, e->u.call.fn, &fn);
    if (rc) return rc;
    rc = eval_args(rt, sc, &e->u.call.args, caller ? 1 : 0, &a);
    if (rc == QVLM_OK) {
        if (caller) {
            a.kw_names[a.n_kw] = "caller";
            a.kw[a.n_kw++] = jinja_ref(caller);
        }
        rc = jinja_call(rt, &fn, &a, out);
        args_free(rt, &a);
    }
    jinja_release(rt, &fn);
    return rc;
}

/* A filter node applied to `in` (the block text when the node has no operand). */
static qvlm_status apply_filter_node(jinja_rt *rt, jinja_scope *sc, const jinja_expr *e,
                                     const jinja_value *in, jinja_value *out) {
    jinja_value operand = JINJA_UNSET;
    jinja_args a;
    qvlm_status rc;
    if (!e->u.filter.operand)
        rc = (operand = jinja_ref(in), QVLM_OK);
    else if (e->u.filter.operand->kind == JE_FILTER && in)
        rc = apply_filter_node(rt, sc, e->u.filter.operand, in, &operand);
    else
        rc = eval(rt, sc, e->u.filter.operand, &operand);
    if (rc) return rc;
    rt->line = e->line;
    if (!e->u.filter.def) {
        jinja_release(rt, &operand);
        return jinja_fail(rt, QVLM_E_UNSUPPORTED, "%s:%u: no filter named '%s'", rt->tpl->name, e->line,
                          e->u.filter.name);
    }
    rc = eval_args(rt, sc, &e->u.filter.args, 0, &a);
    if (rc == QVLM_OK) {
        rc = e->u.filter.def->fn(rt, &operand, &a, out);
        args_free(rt, &a);
    }
    jinja_release(rt, &operand);
    return rc;
}

static qvlm_status eval_test(jinja_rt *rt, jinja_scope *sc, const jinja_expr *e, jinja_value *out) {
    jinja_value operand = JINJA_UNSET;
    jinja_args a;
    qvlm_status rc = eval(rt, sc, e->u.test.operand, &operand);
    if (rc) return rc;
    if (!e->u.test.def) {
        jinja_release(rt, &operand);
        return jinja_fail(rt, QVLM_E_UNSUPPORTED, "%s:%u: no test named '%s'", rt->tpl->name, e->line,
                          e->u.test.name);
    }
    rc = eval_args(rt, sc, &e->u.test.args, 0, &a);
    if (rc == QVLM_OK) {
        bool r = false;
        rc = e->u.test.def->fn(rt, &operand, &a, &r);
        *out = jinja_bool(r);
        args_free(rt, &a);
    }
    jinja_release(rt, &operand);
    return rc;
}

static qvlm_status eval_unary(jinja_rt *rt, jinja_scope *sc, const jinja_expr *e, jinja_value *out) {
    jinja_value v = JINJA_UNSET;
    qvlm_status rc = eval(rt, sc, e->u.bin.a, &v);
    if (rc) return rc;
    if (e->kind == JE_NOT)
        *out = jinja_bool(!jinja_truthy(&v));
    else if (v.kind == JV_UNDEF)
        rc = jinja_undef_fail(rt, &v);
    else if (!jinja_is_num(&v))
        rc = jinja_fail(rt, QVLM_E_INVALID, "bad operand type for unary %c: '%s'",
                        e->kind == JE_NEG ? '-' : '+', jinja_type_name(&v));
    else if (e->kind == JE_POS)
        *out = v.kind == JV_BOOL ? jinja_int(v.u.b) : v;
    else if (v.kind == JV_FLOAT)
        *out = jinja_float(-v.u.f);
    else if (jinja_as_int(&v) == INT64_MIN)
        rc = jinja_fail(rt, QVLM_E_UNSUPPORTED, "integer overflow");
    else
        *out = jinja_int(-jinja_as_int(&v));
    jinja_release(rt, &v);
    return rc;
}

static qvlm_status eval_concat(jinja_rt *rt, const jinja_value *a, const jinja_value *b, jinja_value *out) {
    jinja_buf buf = {0};
    qvlm_status rc = jinja_str(rt, a, &buf);
    if (rc == QVLM_OK) rc = jinja_str(rt, b, &buf);
    if (rc == QVLM_OK) rc = jinja_buf_to_str(rt, &buf, out);
    jinja_buf_free(rt, &buf);
    return rc;
}

static qvlm_status eval_bin(jinja_rt *rt, jinja_scope *sc, const jinja_expr *e, jinja_value *out) {
    jinja_value a = JINJA_UNSET, b = JINJA_UNSET;
    qvlm_status rc = eval(rt, sc, e->u.bin.a, &a);
    if (rc) return rc;
    bool is_and = e->kind == JE_AND;
    if (e->kind == JE_AND || e->kind == JE_OR) { /* Python: the deciding operand itself */
        if (jinja_truthy(&a) != is_and) {
            *out = a;
            return QVLM_OK;
        }
        jinja_release(rt, &a);
        return eval(rt, sc, e->u.bin.b, out);
    }
    rc = eval(rt, sc, e->u.bin.b, &b);
    if (rc == QVLM_OK) {
        rt->line = e->line;
        rc = e->u.bin.op == JO_TILDE ? eval_concat(rt, &a, &b, out)
                                     : jinja_binop(rt, e->u.bin.op, &a, &b, out);
        jinja_release(rt, &b);
    }
    jinja_release(rt, &a);
    return rc;
}

static qvlm_status compare(jinja_rt *rt, jinja_op op, const jinja_value *a, const jinja_value *b, bool *res) {
    static const char *const names[] = {[JO_LT] = "<", [JO_LTEQ] = "<=", [JO_GT] = ">", [JO_GTEQ] = ">="};
    qvlm_status rc;
    int c;
    switch (op) {
    case JO_EQ: return jinja_eq(rt, a, b, res);
    case JO_NE:
        rc = jinja_eq(rt, a, b, res);
        *res = !*res;
        return rc;
    case JO_IN: return jinja_contains(rt, b, a, res);
    case JO_NOTIN:
        rc = jinja_contains(rt, b, a, res);
        *res = !*res;
        return rc;
    default:
        rc = jinja_cmp(rt, a, b, names[op], &c);
        if (op == JO_LT)
            *res = c < 0;
        else if (op == JO_LTEQ)
            *res = c <= 0;
        else if (op == JO_GT)
            *res = c > 0;
        else
            *res = c >= 0;
        return rc;
    }
}

static qvlm_status eval_cmp(jinja_rt *rt, jinja_scope *sc, const jinja_expr *e, jinja_value *out) {
    jinja_value left = JINJA_UNSET;
    qvlm_status rc = eval(rt, sc, e->u.cmp.first, &left);
    bool res = true;
    for (size_t i = 0; rc == QVLM_OK && res && i < e->u.cmp.n; i++) {
        jinja_value right = JINJA_UNSET;
        rc = eval(rt, sc, e->u.cmp.rhs[i], &right);
        if (rc) break;
        rt->line = e->line;
        rc = compare(rt, e->u.cmp.ops[i], &left, &right, &res);
        jinja_release(rt, &left);
        left = right;
    }
    jinja_release(rt, &left);
    if (rc == QVLM_OK) *out = jinja_bool(res);
    return rc;
}

static qvlm_status eval_cond(jinja_rt *rt, jinja_scope *sc, const jinja_expr *e, jinja_value *out) {
    jinja_value t = JINJA_UNSET;
    qvlm_status rc = eval(rt, sc, e->u.cond.test, &t);
    if (rc) return rc;
    bool yes = jinja_truthy(&t);
    jinja_release(rt, &t);
    if (yes) return eval(rt, sc, e->u.cond.then, out);
    if (e->u.cond.else_) return eval(rt, sc, e->u.cond.else_, out);
    return jinja_undef_new(rt, out,
                           "the inline if-expression on line %u evaluated to false and no else section"
                           " was defined.",
                           e->line);
}

static qvlm_status enter(jinja_rt *rt, uint32_t line) {
    rt->line = line;
    if (++rt->depth > rt->lim.max_depth) {
        rt->depth--;
        return jinja_fail(rt, QVLM_E_LIMIT, "%s:%u: template recursion deeper than %u levels", rt->tpl->name,
                          line, rt->lim.max_depth);
    }
    qvlm_status rc = jinja_step(rt, 1);
    if (rc) rt->depth--;
    return rc;
}

static qvlm_status eval_inner(jinja_rt *rt, jinja_scope *sc, const jinja_expr *e, jinja_value *out) {
    switch (e->kind) {
    case JE_CONST: *out = e->u.cst; return QVLM_OK;
    case JE_NAME: return lookup(rt, sc, e->u.name.p, e->u.name.n, out);
    case JE_LIST:
    case JE_TUPLE: return eval_seq(rt, sc, e, out);
    case JE_DICT: return eval_dict(rt, sc, e, out);
    case JE_ATTR: return eval_attr(rt, sc, e, out);
    case JE_ITEM: return eval_item(rt, sc, e, out);
    case JE_SLICE: return eval_slice(rt, sc, e, out);
    case JE_CALL: return eval_call(rt, sc, e, NULL, out);
    case JE_FILTER: return apply_filter_node(rt, sc, e, NULL, out);
    case JE_TEST: return eval_test(rt, sc, e, out);
    case JE_NOT:
    case JE_NEG:
    case JE_POS: return eval_unary(rt, sc, e, out);
    case JE_BIN:
    case JE_AND:
    case JE_OR: return eval_bin(rt, sc, e, out);
    case JE_CMP: return eval_cmp(rt, sc, e, out);
    case JE_COND: return eval_cond(rt, sc, e, out);
    }
    return jinja_fail(rt, QVLM_E_INTERNAL, "unknown expression kind %d", (int)e->kind);
}

/* Every evaluation returns a new reference in *out on success and leaves *out untouched on
 * failure. */
static qvlm_status eval(jinja_rt *rt, jinja_scope *sc, const jinja_expr *e, jinja_value *out) {
    qvlm_status rc = enter(rt, e->line);
    if (rc) return rc;
    rc = eval_inner(rt, sc, e, out);
    rt->depth--;
    return rc;
}

/* ==== Statements ================================================================================ */

static qvlm_status exec_if(jinja_rt *rt, jinja_scope *sc, const jinja_stmt *s) {
    for (size_t i = 0; i < s->u.if_.n; i++) {
        jinja_value c = JINJA_UNSET;
        qvlm_status rc = eval(rt, sc, s->u.if_.conds[i], &c);
        if (rc) return rc;
        bool yes = jinja_truthy(&c);
        jinja_release(rt, &c);
        if (yes) return exec_body(rt, sc, &s->u.if_.bodies[i]);
    }
    return exec_body(rt, sc, &s->u.if_.else_);
}

/* `for x in items if cond`: the filter sees the loop variable, not `loop`. */
static qvlm_status filter_items(jinja_rt *rt, jinja_scope *sc, const jinja_stmt *s, jinja_value *items) {
    jinja_value kept = JINJA_UNSET;
    qvlm_status rc = jinja_list_new(rt, 0, false, &kept);
    for (size_t i = 0; rc == QVLM_OK && i < jinja_seq_len(items); i++) {
        jinja_value item = jinja_seq_at(items, i), c;
        jinja_scope *it;
        rc = scope_new(rt, sc, &it);
        if (rc) break;
        rc = assign(rt, it, &s->u.for_.target, &item);
        if (rc == QVLM_OK) rc = eval(rt, it, s->u.for_.filter, &c);
        scope_release(rt, it);
        if (rc) break;
        if (jinja_truthy(&c)) {
            jinja_value keep = jinja_ref(&item);
            rc = jinja_list_push(rt, &kept, &keep);
        }
        jinja_release(rt, &c);
    }
    jinja_release(rt, items);
    if (rc)
        jinja_release(rt, &kept);
    else
        *items = kept;
    return rc;
}

static qvlm_status loop_new(jinja_rt *rt, const jinja_value *items, jinja_value *out) {
    jinja_loop *l;
    qvlm_status rc = jinja_obj_new(rt, JO_LOOP, sizeof(*l), (void **)&l);
    if (rc) return rc;
    l->items = jinja_ref(items);
    l->changed_last = jinja_undefined();
    out->kind = JV_LOOP;
    out->u.o = &l->h;
    return QVLM_OK;
}

static qvlm_status run_iteration(jinja_rt *rt, jinja_scope *sc, const jinja_stmt *s, jinja_value *loop,
                                 size_t i) {
    jinja_scope *it;
    jinja_loop *l = (jinja_loop *)loop->u.o;
    l->index0 = i;
    qvlm_status rc = jinja_step(rt, 1);
    if (rc == QVLM_OK) rc = scope_new(rt, sc, &it);
    if (rc) return rc;
    jinja_value item = jinja_seq_at(&l->items, i), lv = jinja_ref(loop);
    rc = assign(rt, it, &s->u.for_.target, &item);
    if (rc == QVLM_OK)
        rc = scope_set(rt, it, "loop", 4, &lv);
    else
        jinja_release(rt, &lv);
    if (rc == QVLM_OK) rc = exec_body(rt, it, &s->u.for_.body);
    scope_release(rt, it);
    return rc;
}

static qvlm_status exec_for(jinja_rt *rt, jinja_scope *sc, const jinja_stmt *s) {
    jinja_value iter = JINJA_UNSET, items = JINJA_UNSET, loop = JINJA_UNSET;
    qvlm_status rc = eval(rt, sc, s->u.for_.iter, &iter);
    if (rc) return rc;
    rc = jinja_iterate(rt, &iter, &items);
    jinja_release(rt, &iter);
    if (rc) return rc;
    if (s->u.for_.filter) rc = filter_items(rt, sc, s, &items);
    if (rc) return rc;
    size_t n = jinja_seq_len(&items);
    if (n == 0) {
        jinja_scope *es = NULL;
        jinja_release(rt, &items);
        rc = scope_new(rt, sc, &es);
        if (rc == QVLM_OK) rc = exec_body(rt, es, &s->u.for_.else_);
        scope_release(rt, es);
        return rc;
    }
    rc = loop_new(rt, &items, &loop);
    jinja_release(rt, &items);
    for (size_t i = 0; rc == QVLM_OK && i < n; i++) {
        rc = run_iteration(rt, sc, s, &loop, i);
        if (rc == FLOW_CONTINUE) rc = QVLM_OK;
    }
    if (rc == FLOW_BREAK) rc = QVLM_OK;
    jinja_release(rt, &loop);
    return rc;
}

static qvlm_status exec_set(jinja_rt *rt, jinja_scope *sc, const jinja_stmt *s) {
    jinja_value v = JINJA_UNSET;
    qvlm_status rc = eval(rt, sc, s->u.set.value, &v);
    if (rc) return rc;
    rc = assign(rt, sc, &s->u.set.target, &v);
    jinja_release(rt, &v);
    return rc;
}

/* Render body in a new scope; with `filter`, pass the text through the filter chain. */
static qvlm_status render_block(jinja_rt *rt, jinja_scope *sc, const jinja_body *body,
                                const jinja_expr *filter, jinja_value *out) {
    jinja_scope *inner;
    jinja_value text = JINJA_UNSET;
    qvlm_status rc = scope_new(rt, sc, &inner);
    if (rc) return rc;
    rc = capture(rt, inner, body, &text);
    if (rc == QVLM_OK && filter) {
        rc = apply_filter_node(rt, inner, filter, &text, out);
        jinja_release(rt, &text);
    } else if (rc == QVLM_OK) {
        *out = text;
    }
    scope_release(rt, inner);
    return rc;
}

static qvlm_status exec_set_block(jinja_rt *rt, jinja_scope *sc, const jinja_stmt *s) {
    jinja_value v = JINJA_UNSET;
    qvlm_status rc = render_block(rt, sc, &s->u.set_block.body, s->u.set_block.filter, &v);
    if (rc) return rc;
    rc = assign(rt, sc, &s->u.set_block.target, &v);
    jinja_release(rt, &v);
    return rc;
}

static qvlm_status exec_filter_block(jinja_rt *rt, jinja_scope *sc, const jinja_stmt *s) {
    jinja_value v = JINJA_UNSET;
    qvlm_status rc = render_block(rt, sc, &s->u.filter_block.body, s->u.filter_block.filter, &v);
    if (rc) return rc;
    rc = emit_value(rt, &v);
    jinja_release(rt, &v);
    return rc;
}

static qvlm_status exec_macro(jinja_rt *rt, jinja_scope *sc, const jinja_stmt *s) {
    jinja_value m = JINJA_UNSET;
    qvlm_status rc = macro_new(rt, &s->u.macro, sc, &m);
    if (rc) return rc;
    return scope_set(rt, sc, s->u.macro.name, strlen(s->u.macro.name), &m);
}

static qvlm_status exec_call_block(jinja_rt *rt, jinja_scope *sc, const jinja_stmt *s) {
    jinja_value caller = JINJA_UNSET, result = JINJA_UNSET;
    qvlm_status rc = macro_new(rt, &s->u.call_block.caller, sc, &caller);
    if (rc) return rc;
    rc = eval_call(rt, sc, s->u.call_block.call, &caller, &result);
    jinja_release(rt, &caller);
    if (rc) return rc;
    rc = emit_value(rt, &result);
    jinja_release(rt, &result);
    return rc;
}

static qvlm_status exec_with(jinja_rt *rt, jinja_scope *sc, const jinja_stmt *s) {
    jinja_scope *inner = NULL;
    qvlm_status rc = scope_new(rt, sc, &inner);
    for (size_t i = 0; rc == QVLM_OK && i < s->u.with.n; i++) {
        jinja_value v = JINJA_UNSET;
        rc = eval(rt, sc, s->u.with.values[i], &v);
        if (rc == QVLM_OK) {
            rc = assign(rt, inner, &s->u.with.targets[i], &v);
            jinja_release(rt, &v);
        }
    }
    if (rc == QVLM_OK) rc = exec_body(rt, inner, &s->u.with.body);
    scope_release(rt, inner);
    return rc;
}

static qvlm_status exec_generation(jinja_rt *rt, jinja_scope *sc, const jinja_stmt *s) {
    jinja_value v = JINJA_UNSET;
    qvlm_status rc = render_block(rt, sc, &s->u.generation, NULL, &v);
    if (rc) return rc;
    rc = emit_value(rt, &v);
    jinja_release(rt, &v);
    return rc;
}

static qvlm_status exec(jinja_rt *rt, jinja_scope *sc, const jinja_stmt *s) {
    qvlm_status rc = enter(rt, s->line);
    if (rc) return rc;
    switch (s->kind) {
    case JS_TEXT:
        rc = jinja_buf_put(rt, rt->out, s->u.text.p, s->u.text.n);
        if (rc == QVLM_OK) rc = check_output(rt);
        break;
    case JS_OUT: {
        jinja_value v = JINJA_UNSET;
        rc = eval(rt, sc, s->u.out, &v);
        if (rc == QVLM_OK) {
            rc = emit_value(rt, &v);
            jinja_release(rt, &v);
        }
        break;
    }
    case JS_IF: rc = exec_if(rt, sc, s); break;
    case JS_FOR: rc = exec_for(rt, sc, s); break;
    case JS_SET: rc = exec_set(rt, sc, s); break;
    case JS_SET_BLOCK: rc = exec_set_block(rt, sc, s); break;
    case JS_MACRO: rc = exec_macro(rt, sc, s); break;
    case JS_CALL_BLOCK: rc = exec_call_block(rt, sc, s); break;
    case JS_FILTER_BLOCK: rc = exec_filter_block(rt, sc, s); break;
    case JS_WITH: rc = exec_with(rt, sc, s); break;
    case JS_BREAK: rc = FLOW_BREAK; break;
    case JS_CONTINUE: rc = FLOW_CONTINUE; break;
    case JS_GENERATION: rc = exec_generation(rt, sc, s); break;
    }
    rt->depth--;
    return rc;
}

static qvlm_status exec_body(jinja_rt *rt, jinja_scope *sc, const jinja_body *b) {
    for (size_t i = 0; i < b->n; i++) {
        qvlm_status rc = exec(rt, sc, b->items[i]);
        if (rc) return rc;
    }
    return QVLM_OK;
}

/* ==== Entry point =============================================================================== */

qvlm_status jinja_render(const jinja_template *t, const json_t *ctx, const json_t *defaults,
                         const jinja_limits *lim, char **out, size_t *n_bytes, qvlm_error *err) {
    qvlm_error local = {0};
    jinja_buf buf = {0};
    jinja_rt rt = {
        .tpl = t, .ctx = ctx, .defaults = defaults, .lim = *lim, .out = &buf, .err = &local, .line = 1};
    rt.tracked.next = rt.tracked.prev = &rt.tracked;
    *out = NULL;
    if (n_bytes) *n_bytes = 0;
    jinja_scope *root;
    qvlm_status rc = scope_new(&rt, NULL, &root);
    if (rc == QVLM_OK) {
        rc = exec_body(&rt, root, &t->body);
        scope_release(&rt, root);
    }
    jinja_break_cycles(&rt);
    assert(rt.mem_bytes == buf.cap); /* every value was released: only the output remains */
    if (rc == QVLM_OK && !buf.p) {
        buf.p = calloc(1, 1);
        if (!buf.p) rc = jinja_fail(&rt, QVLM_E_NOMEM, "out of memory rendering the template");
    }
    if (rc) {
        free(buf.p);
        if (err) *err = local;
        return local.code ? local.code : rc;
    }
    *out = buf.p;
    if (n_bytes) *n_bytes = buf.n;
    return QVLM_OK;
}
