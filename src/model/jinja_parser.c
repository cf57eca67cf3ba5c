/* jinja_parser.c - tokens -> AST, following jinja2.parser.Parser rule for rule.
 *
 * Operator precedence is Jinja's, not Python's: `~` binds tighter than `+`, `**` is
 * left-associative, and filters / tests bind to the unary operand (`-x|abs` is `(-x)|abs`,
 * `a + b is string` is `a + (b is string)`). Filters and tests are resolved here; an unknown
 * one is a parse error, except inside an `if` (its test and bodies) or a conditional
 * expression, where Jinja defers the error until the filter is actually applied.
 * Every node lives in the template's arena (jinja_arena.c). Nesting is bounded by
 * JINJA_MAX_PARSE_DEPTH.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/jinja.h"

/* ==== Parser state ============================================================================== */

typedef struct parser {
    jinja_arena *a;
    const jinja_token *t;
    size_t n, i;
    const char *name;
    qvlm_error *err;
    int depth;
    bool soft;              /* in an if or a conditional expression: unknown filters wait */
    int loop_depth;         /* break / continue are legal above zero */
    jinja_macro_def *macro; /* innermost macro being parsed */
} parser;

static const jinja_token *cur(const parser *p) { return &p->t[p->i]; }
static const jinja_token *look(const parser *p) { return &p->t[p->i + 1 < p->n ? p->i + 1 : p->i]; }
static void next(parser *p) {
    if (p->i + 1 < p->n) p->i++;
}

static bool is_name(const jinja_token *t, const char *s) {
    return t->type == JT_NAME && t->n == strlen(s) && memcmp(t->p, s, t->n) == 0;
}
static bool is_op(const jinja_token *t, jinja_op op) { return t->type == JT_OP && t->op == op; }

static qvlm_status pfail(parser *p, qvlm_status code, uint32_t line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static qvlm_status pfail(parser *p, qvlm_status code, uint32_t line, const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return qvlm_errorf(p->err, code, "%s:%u: %s", p->name, line, msg);
}

static qvlm_status oom(parser *p) { return qvlm_errorf(p->err, QVLM_E_NOMEM, "%s: out of memory", p->name); }

/* jinja2.lexer.describe_token, for "unexpected X" messages. */
static void describe(const jinja_token *t, char *buf, size_t n) {
    static const char *const op_text[] = {
        [JO_ADD] = "+",       [JO_SUB] = "-",    [JO_MUL] = "*",    [JO_DIV] = "/",      [JO_FLOORDIV] = "//",
        [JO_MOD] = "%",       [JO_POW] = "**",   [JO_TILDE] = "~",  [JO_LBRACKET] = "[", [JO_RBRACKET] = "]",
        [JO_LPAREN] = "(",    [JO_RPAREN] = ")", [JO_LBRACE] = "{", [JO_RBRACE] = "}",   [JO_EQ] = "==",
        [JO_NE] = "!=",       [JO_GT] = ">",     [JO_GTEQ] = ">=",  [JO_LT] = "<",       [JO_LTEQ] = "<=",
        [JO_ASSIGN] = "=",    [JO_DOT] = ".",    [JO_COLON] = ":",  [JO_PIPE] = "|",     [JO_COMMA] = ",",
        [JO_SEMICOLON] = ";",
    };
    switch (t->type) {
    case JT_NAME: snprintf(buf, n, "%.*s", (int)QVLM_MIN(t->n, 64), t->p); break;
    case JT_OP: snprintf(buf, n, "%s", op_text[t->op] ? op_text[t->op] : "?"); break;
    case JT_STRING: snprintf(buf, n, "string"); break;
    case JT_INT: snprintf(buf, n, "integer"); break;
    case JT_FLOAT: snprintf(buf, n, "float"); break;
    case JT_DATA: snprintf(buf, n, "template data / text"); break;
    case JT_VAR_BEGIN: snprintf(buf, n, "begin of print statement"); break;
    case JT_VAR_END: snprintf(buf, n, "end of print statement"); break;
    case JT_BLOCK_BEGIN: snprintf(buf, n, "begin of statement block"); break;
    case JT_BLOCK_END: snprintf(buf, n, "end of statement block"); break;
    case JT_EOF: snprintf(buf, n, "end of template"); break;
    }
}

static qvlm_status unexpected(parser *p) {
    char d[80];
    describe(cur(p), d, sizeof(d));
    return pfail(p, QVLM_E_CORRUPT, cur(p)->line, "unexpected '%s'", d);
}

static qvlm_status expect_op(parser *p, jinja_op op, const char *what) {
    if (is_op(cur(p), op)) {
        next(p);
        return QVLM_OK;
    }
    char d[80];
    describe(cur(p), d, sizeof(d));
    return pfail(p, QVLM_E_CORRUPT, cur(p)->line, "expected token '%s', got '%s'", what, d);
}

static qvlm_status expect_type(parser *p, jinja_tok_type type, const char *what) {
    if (cur(p)->type == type) {
        next(p);
        return QVLM_OK;
    }
    char d[80];
    describe(cur(p), d, sizeof(d));
    return pfail(p, QVLM_E_CORRUPT, cur(p)->line, "expected token '%s', got '%s'", what, d);
}

static qvlm_status expect_name(parser *p, const char *kw) {
    if (is_name(cur(p), kw)) {
        next(p);
        return QVLM_OK;
    }
    char d[80];
    describe(cur(p), d, sizeof(d));
    return pfail(p, QVLM_E_CORRUPT, cur(p)->line, "expected token '%s', got '%s'", kw, d);
}

static qvlm_status enter(parser *p) {
    if (++p->depth > JINJA_MAX_PARSE_DEPTH)
        return pfail(p, QVLM_E_LIMIT, cur(p)->line, "template nested deeper than %d levels",
                     JINJA_MAX_PARSE_DEPTH);
    return QVLM_OK;
}

static char *dup_name(parser *p, const jinja_token *t) {
    char *s = jinja_arena_alloc(p->a, t->n + 1);
    if (s) memcpy(s, t->p, t->n);
    return s;
}

static jinja_expr *new_expr(parser *p, jinja_ekind kind, uint32_t line) {
    jinja_expr *e = jinja_arena_alloc(p->a, sizeof(*e));
    if (e) e->kind = kind, e->line = line;
    return e;
}

/* A growable array of pointers, copied into the arena when complete. */
typedef struct ptrvec {
    void **items;
    size_t n, cap;
} ptrvec;

static bool vec_push(ptrvec *v, void *item) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        void **p = realloc(v->items, cap * sizeof(*p));
        if (!p) return false;
        v->items = p;
        v->cap = cap;
    }
    v->items[v->n++] = item;
    return true;
}

static void **vec_finish(parser *p, ptrvec *v) {
    void **out = jinja_arena_alloc(p->a, (v->n ? v->n : 1) * sizeof(void *));
    if (out && v->n) memcpy(out, v->items, v->n * sizeof(void *));
    free(v->items);
    v->items = NULL;
    return out;
}

/* ==== Expressions =============================================================================== */

static qvlm_status parse_expression(parser *p, bool with_condexpr, jinja_expr **out);
static qvlm_status parse_unary(parser *p, bool with_filter, jinja_expr **out);
static qvlm_status parse_primary(parser *p, jinja_expr **out);
static qvlm_status parse_postfix(parser *p, jinja_expr **node);
static qvlm_status parse_filter(parser *p, jinja_expr **node, bool start_inline);

typedef enum { TUPLE_FULL, TUPLE_NO_COND, TUPLE_SIMPLE } tuple_mode;

static bool tuple_end(const parser *p, const char *extra_end) {
    const jinja_token *t = cur(p);
    return t->type == JT_VAR_END || t->type == JT_BLOCK_END || is_op(t, JO_RPAREN) ||
           (extra_end && is_name(t, extra_end));
}

/* parse_tuple: one expression, or a tuple when commas follow (`a, b` / `(a,)`). */
static qvlm_status parse_tuple(parser *p, tuple_mode mode, const char *extra_end, bool explicit_parens,
                               jinja_expr **out) {
    uint32_t line = cur(p)->line;
    ptrvec items = {0};
    bool is_tuple = false;
    qvlm_status rc = QVLM_OK;
    while (rc == QVLM_OK) {
        if (items.n) rc = expect_op(p, JO_COMMA, ",");
        if (rc || tuple_end(p, extra_end)) break;
        jinja_expr *e;
        rc = mode == TUPLE_SIMPLE ? parse_primary(p, &e) : parse_expression(p, mode == TUPLE_FULL, &e);
        if (rc == QVLM_OK && !vec_push(&items, e)) rc = oom(p);
        if (rc || !is_op(cur(p), JO_COMMA)) break;
        is_tuple = true;
    }
    if (rc == QVLM_OK && !is_tuple && items.n == 0 && !explicit_parens) {
        char d[80];
        describe(cur(p), d, sizeof(d));
        rc = pfail(p, QVLM_E_CORRUPT, cur(p)->line, "Expected an expression, got '%s'", d);
    }
    if (rc) {
        free(items.items);
        return rc;
    }
    if (!is_tuple && items.n == 1) {
        *out = items.items[0];
        free(items.items);
        return QVLM_OK;
    }
    jinja_expr *e = new_expr(p, JE_TUPLE, line);
    if (!e) return free(items.items), oom(p);
    e->u.seq.n = items.n;
    e->u.seq.items = (jinja_expr **)vec_finish(p, &items);
    if (!e->u.seq.items) return oom(p);
    *out = e;
    return QVLM_OK;
}

static qvlm_status parse_call_args(parser *p, jinja_callargs *args) {
    uint32_t line = cur(p)->line;
    qvlm_status rc = expect_op(p, JO_LPAREN, "(");
    ptrvec pos = {0}, kw = {0}, names = {0};
    bool need_comma = false;
    while (rc == QVLM_OK && !is_op(cur(p), JO_RPAREN)) {
        if (need_comma) {
            rc = expect_op(p, JO_COMMA, ",");
            if (rc || is_op(cur(p), JO_RPAREN)) break;
        }
        if (is_op(cur(p), JO_MUL) || is_op(cur(p), JO_POW)) {
            rc = pfail(p, QVLM_E_UNSUPPORTED, cur(p)->line, "*args / **kwargs in calls are not supported");
            break;
        }
        jinja_expr *e;
        if (cur(p)->type == JT_NAME && is_op(look(p), JO_ASSIGN)) {
            char *nm = dup_name(p, cur(p));
            next(p);
            next(p);
            rc = nm ? parse_expression(p, true, &e) : oom(p);
            if (rc == QVLM_OK && (!vec_push(&names, nm) || !vec_push(&kw, e))) rc = oom(p);
        } else {
            if (kw.n) rc = pfail(p, QVLM_E_CORRUPT, line, "invalid syntax for function call expression");
            if (rc == QVLM_OK) rc = parse_expression(p, true, &e);
            if (rc == QVLM_OK && !vec_push(&pos, e)) rc = oom(p);
        }
        need_comma = true;
    }
    if (rc == QVLM_OK) rc = expect_op(p, JO_RPAREN, ")");
    args->n_pos = pos.n;
    args->n_kw = kw.n;
    args->pos = (jinja_expr **)vec_finish(p, &pos);
    args->kw = (jinja_expr **)vec_finish(p, &kw);
    args->kw_names = (const char **)vec_finish(p, &names);
    if (rc == QVLM_OK && (!args->pos || !args->kw || !args->kw_names)) rc = oom(p);
    return rc;
}

/* Filters that Jinja has but this interpreter does not: named so the error says so. */
static bool jinja_has_filter(const char *name) {
    static const char *const known[] = {"batch",  "filesizeformat", "forceescape", "groupby",  "pprint",
                                        "random", "slice",          "striptags",   "truncate", "urlencode",
                                        "urlize", "wordwrap",       "xmlattr",     NULL};
    for (const char *const *k = known; *k; k++)
        if (strcmp(*k, name) == 0) return true;
    return false;
}

static qvlm_status resolve_filter(parser *p, jinja_expr *e) {
    e->u.filter.def = jinja_filter_find(e->u.filter.name, strlen(e->u.filter.name));
    if (e->u.filter.def || p->soft) return QVLM_OK;
    if (jinja_has_filter(e->u.filter.name))
        return pfail(p, QVLM_E_UNSUPPORTED, e->line, "filter '%s' is not supported", e->u.filter.name);
    return pfail(p, QVLM_E_UNSUPPORTED, e->line, "no filter named '%s'", e->u.filter.name);
}

static qvlm_status parse_dotted_name(parser *p, char **out) {
    if (cur(p)->type != JT_NAME) return expect_type(p, JT_NAME, "name");
    char *nm = dup_name(p, cur(p));
    next(p);
    if (!nm) return oom(p);
    if (is_op(cur(p), JO_DOT))
        return pfail(p, QVLM_E_UNSUPPORTED, cur(p)->line, "dotted filter / test names are not supported");
    *out = nm;
    return QVLM_OK;
}

static qvlm_status parse_filter(parser *p, jinja_expr **node, bool start_inline) {
    qvlm_status rc = QVLM_OK;
    while (rc == QVLM_OK && (is_op(cur(p), JO_PIPE) || start_inline)) {
        if (!start_inline) next(p);
        start_inline = false;
        jinja_expr *e = new_expr(p, JE_FILTER, cur(p)->line);
        if (!e) return oom(p);
        char *nm;
        rc = parse_dotted_name(p, &nm);
        if (rc) return rc;
        e->u.filter.name = nm;
        e->u.filter.operand = *node;
        if (is_op(cur(p), JO_LPAREN)) rc = parse_call_args(p, &e->u.filter.args);
        if (rc == QVLM_OK) rc = resolve_filter(p, e);
        *node = e;
    }
    return rc;
}

static qvlm_status parse_test(parser *p, jinja_expr **node) {
    uint32_t line = cur(p)->line;
    next(p); /* is */
    bool negated = is_name(cur(p), "not");
    if (negated) next(p);
    jinja_expr *e = new_expr(p, JE_TEST, line);
    if (!e) return oom(p);
    char *nm;
    qvlm_status rc = parse_dotted_name(p, &nm);
    if (rc) return rc;
    e->u.test.name = nm;
    e->u.test.operand = *node;
    const jinja_token *t = cur(p);
    if (is_op(t, JO_LPAREN)) {
        rc = parse_call_args(p, &e->u.test.args);
    } else if ((t->type == JT_NAME || t->type == JT_STRING || t->type == JT_INT || t->type == JT_FLOAT ||
                is_op(t, JO_LBRACKET) || is_op(t, JO_LBRACE)) &&
               !is_name(t, "else") && !is_name(t, "or") && !is_name(t, "and")) {
        if (is_name(t, "is"))
            return pfail(p, QVLM_E_CORRUPT, t->line, "You cannot chain multiple tests with is");
        jinja_expr *arg;
        rc = parse_primary(p, &arg);
        if (rc == QVLM_OK) rc = parse_postfix(p, &arg);
        if (rc == QVLM_OK) {
            e->u.test.args.n_pos = 1;
            e->u.test.args.pos = jinja_arena_alloc(p->a, sizeof(jinja_expr *));
            if (!e->u.test.args.pos) return oom(p);
            e->u.test.args.pos[0] = arg;
        }
    }
    if (rc) return rc;
    e->u.test.def = jinja_test_find(nm, strlen(nm));
    if (!e->u.test.def && !p->soft) return pfail(p, QVLM_E_UNSUPPORTED, line, "no test named '%s'", nm);
    if (negated) {
        jinja_expr *n = new_expr(p, JE_NOT, line);
        if (!n) return oom(p);
        n->u.bin.a = e;
        e = n;
    }
    *node = e;
    return QVLM_OK;
}

static qvlm_status parse_call(parser *p, jinja_expr **node) {
    jinja_expr *e = new_expr(p, JE_CALL, cur(p)->line);
    if (!e) return oom(p);
    e->u.call.fn = *node;
    *node = e;
    return parse_call_args(p, &e->u.call.args);
}

/* Inside [ ]: an expression or a slice a:b:c with any part left out. */
static qvlm_status parse_subscribed(parser *p, jinja_expr *obj, jinja_expr **out) {
    uint32_t line = cur(p)->line;
    jinja_expr *parts[3] = {NULL, NULL, NULL};
    qvlm_status rc = QVLM_OK;
    if (!is_op(cur(p), JO_COLON)) {
        rc = parse_expression(p, true, &parts[0]);
        if (rc) return rc;
        if (!is_op(cur(p), JO_COLON)) {
            jinja_expr *e = new_expr(p, JE_ITEM, line);
            if (!e) return oom(p);
            e->u.item.obj = obj;
            e->u.item.index = parts[0];
            *out = e;
            return QVLM_OK;
        }
    }
    next(p); /* first colon */
    if (!is_op(cur(p), JO_COLON) && !is_op(cur(p), JO_RBRACKET) && !is_op(cur(p), JO_COMMA))
        rc = parse_expression(p, true, &parts[1]);
    if (rc == QVLM_OK && is_op(cur(p), JO_COLON)) {
        next(p);
        if (!is_op(cur(p), JO_RBRACKET) && !is_op(cur(p), JO_COMMA))
            rc = parse_expression(p, true, &parts[2]);
    }
    if (rc) return rc;
    jinja_expr *e = new_expr(p, JE_SLICE, line);
    if (!e) return oom(p);
    e->u.slice.obj = obj;
    e->u.slice.start = parts[0];
    e->u.slice.stop = parts[1];
    e->u.slice.step = parts[2];
    *out = e;
    return QVLM_OK;
}

static qvlm_status parse_subscript(parser *p, jinja_expr **node) {
    const jinja_token *t = cur(p);
    uint32_t line = t->line;
    if (is_op(t, JO_DOT)) {
        next(p);
        const jinja_token *a = cur(p);
        next(p);
        if (a->type == JT_NAME) {
            jinja_expr *e = new_expr(p, JE_ATTR, line);
            if (!e) return oom(p);
            e->u.attr.obj = *node;
            e->u.attr.p = a->p;
            e->u.attr.n = a->n;
            *node = e;
            return QVLM_OK;
        }
        if (a->type != JT_INT) return pfail(p, QVLM_E_CORRUPT, a->line, "expected name or number");
        jinja_expr *idx = new_expr(p, JE_CONST, line), *e = new_expr(p, JE_ITEM, line);
        if (!idx || !e) return oom(p);
        idx->u.cst = jinja_int(a->i);
        e->u.item.obj = *node;
        e->u.item.index = idx;
        *node = e;
        return QVLM_OK;
    }
    next(p); /* [ */
    jinja_expr *e = NULL;
    qvlm_status rc = parse_subscribed(p, *node, &e);
    if (rc == QVLM_OK && is_op(cur(p), JO_COMMA))
        return pfail(p, QVLM_E_UNSUPPORTED, cur(p)->line, "tuple subscripts are not supported");
    if (rc == QVLM_OK) rc = expect_op(p, JO_RBRACKET, "]");
    if (rc == QVLM_OK) *node = e;
    return rc;
}

static qvlm_status parse_postfix(parser *p, jinja_expr **node) {
    qvlm_status rc = QVLM_OK;
    while (rc == QVLM_OK) {
        if (is_op(cur(p), JO_DOT) || is_op(cur(p), JO_LBRACKET))
            rc = parse_subscript(p, node);
        else if (is_op(cur(p), JO_LPAREN))
            rc = parse_call(p, node);
        else
            break;
    }
    return rc;
}

static qvlm_status parse_filter_expr(parser *p, jinja_expr **node) {
    qvlm_status rc = QVLM_OK;
    while (rc == QVLM_OK) {
        if (is_op(cur(p), JO_PIPE))
            rc = parse_filter(p, node, false);
        else if (is_name(cur(p), "is"))
            rc = parse_test(p, node);
        else if (is_op(cur(p), JO_LPAREN))
            rc = parse_call(p, node);
        else
            break;
    }
    return rc;
}

/* Mark the innermost macro when its body reads one of Jinja's special names. */
static void note_special_name(parser *p, const jinja_token *t) {
    if (!p->macro) return;
    if (is_name(t, "varargs"))
        p->macro->catch_varargs = true;
    else if (is_name(t, "kwargs"))
        p->macro->catch_kwargs = true;
    else if (is_name(t, "caller"))
        p->macro->takes_caller = true;
}

static qvlm_status parse_seq_literal(parser *p, jinja_ekind kind, jinja_op close, const char *close_s,
                                     jinja_expr **out) {
    uint32_t line = cur(p)->line;
    next(p); /* [ or { */
    ptrvec items = {0};
    qvlm_status rc = QVLM_OK;
    while (rc == QVLM_OK && !is_op(cur(p), close)) {
        if (items.n) {
            rc = expect_op(p, JO_COMMA, ",");
            if (rc || is_op(cur(p), close)) break;
        }
        jinja_expr *e;
        rc = parse_expression(p, true, &e);
        if (rc == QVLM_OK && !vec_push(&items, e)) rc = oom(p);
        if (rc == QVLM_OK && kind == JE_DICT) {
            rc = expect_op(p, JO_COLON, ":");
            if (rc == QVLM_OK) rc = parse_expression(p, true, &e);
            if (rc == QVLM_OK && !vec_push(&items, e)) rc = oom(p);
        }
    }
    if (rc == QVLM_OK) rc = expect_op(p, close, close_s);
    jinja_expr *e = rc ? NULL : new_expr(p, kind, line);
    if (rc == QVLM_OK && !e) rc = oom(p);
    if (rc) {
        free(items.items);
        return rc;
    }
    e->u.seq.n = items.n;
    e->u.seq.items = (jinja_expr **)vec_finish(p, &items);
    if (!e->u.seq.items) return oom(p);
    *out = e;
    return QVLM_OK;
}

static qvlm_status parse_string_const(parser *p, jinja_expr **out) {
    uint32_t line = cur(p)->line;
    size_t total = 0, start = p->i;
    while (cur(p)->type == JT_STRING) { /* adjacent literals concatenate: "a" "b" */
        total += cur(p)->n;
        next(p);
    }
    char *s = jinja_arena_alloc(p->a, total + 1);
    jinja_expr *e = new_expr(p, JE_CONST, line);
    if (!s || !e) return oom(p);
    size_t k = 0;
    for (size_t i = start; i < p->i; i++) {
        memcpy(s + k, p->t[i].p, p->t[i].n);
        k += p->t[i].n;
    }
    e->u.cst = jinja_strv(s, total);
    *out = e;
    return QVLM_OK;
}

static qvlm_status parse_primary(parser *p, jinja_expr **out) {
    const jinja_token *t = cur(p);
    qvlm_status rc = enter(p);
    if (rc) return rc;
    if (t->type == JT_NAME) {
        jinja_expr *e = new_expr(p, JE_CONST, t->line);
        if (!e)
            rc = oom(p);
        else if (is_name(t, "true") || is_name(t, "True"))
            e->u.cst = jinja_bool(true);
        else if (is_name(t, "false") || is_name(t, "False"))
            e->u.cst = jinja_bool(false);
        else if (is_name(t, "none") || is_name(t, "None"))
            e->u.cst = jinja_none();
        else {
            e->kind = JE_NAME;
            e->u.name.p = t->p;
            e->u.name.n = t->n;
            note_special_name(p, t);
        }
        next(p);
        *out = e;
    } else if (t->type == JT_STRING) {
        rc = parse_string_const(p, out);
    } else if (t->type == JT_INT || t->type == JT_FLOAT) {
        jinja_expr *e = new_expr(p, JE_CONST, t->line);
        if (!e)
            rc = oom(p);
        else
            e->u.cst = t->type == JT_INT ? jinja_int(t->i) : jinja_float(t->f);
        next(p);
        *out = e;
    } else if (is_op(t, JO_LPAREN)) {
        next(p);
        rc = parse_tuple(p, TUPLE_FULL, NULL, true, out);
        if (rc == QVLM_OK) rc = expect_op(p, JO_RPAREN, ")");
    } else if (is_op(t, JO_LBRACKET)) {
        rc = parse_seq_literal(p, JE_LIST, JO_RBRACKET, "]", out);
    } else if (is_op(t, JO_LBRACE)) {
        rc = parse_seq_literal(p, JE_DICT, JO_RBRACE, "}", out);
    } else {
        rc = unexpected(p);
    }
    p->depth--;
    return rc;
}

static qvlm_status parse_unary(parser *p, bool with_filter, jinja_expr **out) {
    const jinja_token *t = cur(p);
    qvlm_status rc = enter(p);
    if (rc) return rc;
    if (is_op(t, JO_SUB) || is_op(t, JO_ADD)) {
        jinja_expr *e = new_expr(p, is_op(t, JO_SUB) ? JE_NEG : JE_POS, t->line);
        next(p);
        rc = e ? parse_unary(p, false, &e->u.bin.a) : oom(p);
        *out = e;
    } else {
        rc = parse_primary(p, out);
    }
    if (rc == QVLM_OK) rc = parse_postfix(p, out);
    if (rc == QVLM_OK && with_filter) rc = parse_filter_expr(p, out);
    p->depth--;
    return rc;
}

static qvlm_status make_bin(parser *p, jinja_ekind kind, jinja_op op, uint32_t line, jinja_expr *a,
                            jinja_expr *b, jinja_expr **out) {
    jinja_expr *e = new_expr(p, kind, line);
    if (!e) return oom(p);
    e->u.bin.a = a;
    e->u.bin.b = b;
    e->u.bin.op = op;
    *out = e;
    return QVLM_OK;
}

static qvlm_status parse_pow(parser *p, jinja_expr **out) {
    qvlm_status rc = parse_unary(p, true, out);
    while (rc == QVLM_OK && is_op(cur(p), JO_POW)) {
        uint32_t line = cur(p)->line;
        jinja_expr *r;
        next(p);
        rc = parse_unary(p, true, &r);
        if (rc == QVLM_OK) rc = make_bin(p, JE_BIN, JO_POW, line, *out, r, out);
    }
    return rc;
}

static qvlm_status parse_math2(parser *p, jinja_expr **out) {
    qvlm_status rc = parse_pow(p, out);
    while (
        rc == QVLM_OK && cur(p)->type == JT_OP &&
        (cur(p)->op == JO_MUL || cur(p)->op == JO_DIV || cur(p)->op == JO_FLOORDIV || cur(p)->op == JO_MOD)) {
        jinja_op op = cur(p)->op;
        uint32_t line = cur(p)->line;
        jinja_expr *r;
        next(p);
        rc = parse_pow(p, &r);
        if (rc == QVLM_OK) rc = make_bin(p, JE_BIN, op, line, *out, r, out);
    }
    return rc;
}

static qvlm_status parse_concat(parser *p, jinja_expr **out) {
    qvlm_status rc = parse_math2(p, out);
    while (rc == QVLM_OK && is_op(cur(p), JO_TILDE)) {
        uint32_t line = cur(p)->line;
        jinja_expr *r;
        next(p);
        rc = parse_math2(p, &r);
        if (rc == QVLM_OK) rc = make_bin(p, JE_BIN, JO_TILDE, line, *out, r, out);
    }
    return rc;
}

static qvlm_status parse_math1(parser *p, jinja_expr **out) {
    qvlm_status rc = parse_concat(p, out);
    while (rc == QVLM_OK && (is_op(cur(p), JO_ADD) || is_op(cur(p), JO_SUB))) {
        jinja_op op = cur(p)->op;
        uint32_t line = cur(p)->line;
        jinja_expr *r;
        next(p);
        rc = parse_concat(p, &r);
        if (rc == QVLM_OK) rc = make_bin(p, JE_BIN, op, line, *out, r, out);
    }
    return rc;
}

static bool compare_op(parser *p, jinja_op *op) {
    const jinja_token *t = cur(p);
    if (t->type == JT_OP && (t->op == JO_EQ || t->op == JO_NE || t->op == JO_LT || t->op == JO_LTEQ ||
                             t->op == JO_GT || t->op == JO_GTEQ)) {
        *op = t->op;
        next(p);
        return true;
    }
    if (is_name(t, "in")) {
        *op = JO_IN;
        next(p);
        return true;
    }
    if (is_name(t, "not") && is_name(look(p), "in")) {
        *op = JO_NOTIN;
        next(p);
        next(p);
        return true;
    }
    return false;
}

static qvlm_status parse_compare(parser *p, jinja_expr **out) {
    uint32_t line = cur(p)->line;
    jinja_expr *first;
    qvlm_status rc = parse_math1(p, &first);
    ptrvec ops = {0}, rhs = {0};
    jinja_op op;
    while (rc == QVLM_OK && compare_op(p, &op)) {
        jinja_expr *r;
        rc = parse_math1(p, &r);
        jinja_op *slot = rc ? NULL : jinja_arena_alloc(p->a, sizeof(*slot));
        if (rc == QVLM_OK && (!slot || !vec_push(&ops, slot) || !vec_push(&rhs, r))) rc = oom(p);
        if (rc == QVLM_OK) *slot = op;
    }
    if (rc || ops.n == 0) {
        free(ops.items);
        free(rhs.items);
        *out = first;
        return rc;
    }
    jinja_expr *e = new_expr(p, JE_CMP, line);
    if (!e) return free(ops.items), free(rhs.items), oom(p);
    e->u.cmp.first = first;
    e->u.cmp.n = ops.n;
    e->u.cmp.ops = jinja_arena_alloc(p->a, ops.n * sizeof(jinja_op));
    if (!e->u.cmp.ops) return free(ops.items), free(rhs.items), oom(p);
    for (size_t i = 0; i < ops.n; i++) e->u.cmp.ops[i] = *(jinja_op *)ops.items[i];
    free(ops.items);
    e->u.cmp.rhs = (jinja_expr **)vec_finish(p, &rhs);
    if (!e->u.cmp.rhs) return oom(p);
    *out = e;
    return QVLM_OK;
}

static qvlm_status parse_not(parser *p, jinja_expr **out) {
    if (!is_name(cur(p), "not")) return parse_compare(p, out);
    uint32_t line = cur(p)->line;
    next(p);
    qvlm_status rc = enter(p);
    jinja_expr *e = rc ? NULL : new_expr(p, JE_NOT, line);
    if (rc == QVLM_OK && !e) rc = oom(p);
    if (rc == QVLM_OK) rc = parse_not(p, &e->u.bin.a);
    p->depth--;
    *out = e;
    return rc;
}

static qvlm_status parse_and(parser *p, jinja_expr **out) {
    qvlm_status rc = parse_not(p, out);
    while (rc == QVLM_OK && is_name(cur(p), "and")) {
        uint32_t line = cur(p)->line;
        jinja_expr *r;
        next(p);
        rc = parse_not(p, &r);
        if (rc == QVLM_OK) rc = make_bin(p, JE_AND, JO_NONE, line, *out, r, out);
    }
    return rc;
}

static qvlm_status parse_or(parser *p, jinja_expr **out) {
    qvlm_status rc = parse_and(p, out);
    while (rc == QVLM_OK && is_name(cur(p), "or")) {
        uint32_t line = cur(p)->line;
        jinja_expr *r;
        next(p);
        rc = parse_and(p, &r);
        if (rc == QVLM_OK) rc = make_bin(p, JE_OR, JO_NONE, line, *out, r, out);
    }
    return rc;
}

/* `a if cond [else b]`; the parts of a conditional expression are "soft" (see file head). */
static qvlm_status parse_condexpr(parser *p, jinja_expr **out) {
    qvlm_status rc = parse_or(p, out);
    bool soft = p->soft;
    while (rc == QVLM_OK && is_name(cur(p), "if")) {
        jinja_expr *e = new_expr(p, JE_COND, cur(p)->line);
        if (!e) return oom(p);
        next(p);
        p->soft = true;
        e->u.cond.then = *out;
        rc = parse_or(p, &e->u.cond.test);
        if (rc == QVLM_OK && is_name(cur(p), "else")) {
            next(p);
            rc = parse_condexpr(p, &e->u.cond.else_);
        }
        *out = e;
    }
    p->soft = soft;
    return rc;
}

static qvlm_status parse_expression(parser *p, bool with_condexpr, jinja_expr **out) {
    qvlm_status rc = enter(p);
    if (rc == QVLM_OK) rc = with_condexpr ? parse_condexpr(p, out) : parse_or(p, out);
    p->depth--;
    return rc;
}

/* ==== Statements ================================================================================ */

static qvlm_status subparse(parser *p, jinja_body *body, const char *const *ends, int *end_idx);

/* Where the innermost open block is named, for "unexpected end of template" messages. */
static qvlm_status eof_error(parser *p, const char *const *ends, const char *block) {
    char want[256] = "";
    for (size_t k = 0; ends && ends[k]; k++) {
        size_t len = strlen(want);
        snprintf(want + len, sizeof(want) - len, "%s'%s'", k ? " or " : "", ends[k]);
    }
    return pfail(p, QVLM_E_CORRUPT, cur(p)->line,
                 "Unexpected end of template. Jinja was looking for the following tags: %s. "
                 "The innermost block that needs to be closed is '%s'.",
                 want, block);
}

/* parse_statements: `%}`, the body, and the end tag it stopped at (left current). */
static qvlm_status parse_statements(parser *p, jinja_body *body, const char *const *ends, const char *block,
                                    int *end_idx) {
    qvlm_status rc = expect_type(p, JT_BLOCK_END, "end of statement block");
    if (rc == QVLM_OK) rc = subparse(p, body, ends, end_idx);
    if (rc == QVLM_OK && *end_idx < 0) rc = eof_error(p, ends, block);
    return rc;
}

static jinja_stmt *new_stmt(parser *p, jinja_skind kind, uint32_t line) {
    jinja_stmt *s = jinja_arena_alloc(p->a, sizeof(*s));
    if (s) s->kind = kind, s->line = line;
    return s;
}

/* Assignment targets: a name, a tuple of names ("a, b" / "(a, b)"), or ns.attr. */
static qvlm_status parse_target_item(parser *p, jinja_target *t) {
    qvlm_status rc = enter(p);
    if (rc) return rc;
    if (cur(p)->type == JT_NAME) {
        t->kind = JTG_NAME;
        t->name = dup_name(p, cur(p));
        rc = t->name ? QVLM_OK : oom(p);
        next(p);
    } else if (is_op(cur(p), JO_LPAREN)) {
        next(p);
        ptrvec items = {0};
        while (rc == QVLM_OK && !is_op(cur(p), JO_RPAREN)) {
            if (items.n) rc = expect_op(p, JO_COMMA, ",");
            if (rc || is_op(cur(p), JO_RPAREN)) break;
            jinja_target *it = jinja_arena_alloc(p->a, sizeof(*it));
            rc = it ? parse_target_item(p, it) : oom(p);
            if (rc == QVLM_OK && !vec_push(&items, it)) rc = oom(p);
        }
        if (rc == QVLM_OK) rc = expect_op(p, JO_RPAREN, ")");
        t->kind = JTG_TUPLE;
        t->n = items.n;
        t->items = jinja_arena_alloc(p->a, (items.n ? items.n : 1) * sizeof(jinja_target));
        if (rc == QVLM_OK && !t->items) rc = oom(p);
        for (size_t k = 0; rc == QVLM_OK && k < items.n; k++) t->items[k] = *(jinja_target *)items.items[k];
        free(items.items);
    } else {
        char d[80];
        describe(cur(p), d, sizeof(d));
        rc = pfail(p, QVLM_E_CORRUPT, cur(p)->line, "can't assign to '%s'", d);
    }
    p->depth--;
    return rc;
}

static qvlm_status parse_target(parser *p, jinja_target *t, const char *extra_end, bool with_ns) {
    if (with_ns && cur(p)->type == JT_NAME && is_op(look(p), JO_DOT)) {
        t->kind = JTG_NSATTR;
        t->name = dup_name(p, cur(p));
        next(p);
        next(p);
        if (cur(p)->type != JT_NAME) return expect_type(p, JT_NAME, "name");
        t->attr = dup_name(p, cur(p));
        next(p);
        return t->name && t->attr ? QVLM_OK : oom(p);
    }
    jinja_target first = {0};
    qvlm_status rc = parse_target_item(p, &first);
    if (rc || !is_op(cur(p), JO_COMMA)) {
        *t = first;
        return rc;
    }
    ptrvec items = {0};
    jinja_target *f = jinja_arena_alloc(p->a, sizeof(*f));
    if (!f || !vec_push(&items, f)) return free(items.items), oom(p);
    *f = first;
    while (rc == QVLM_OK && is_op(cur(p), JO_COMMA)) {
        next(p);
        if (tuple_end(p, extra_end) || is_op(cur(p), JO_ASSIGN)) break;
        jinja_target *it = jinja_arena_alloc(p->a, sizeof(*it));
        rc = it ? parse_target_item(p, it) : oom(p);
        if (rc == QVLM_OK && !vec_push(&items, it)) rc = oom(p);
    }
    t->kind = JTG_TUPLE;
    t->n = items.n;
    t->items = jinja_arena_alloc(p->a, items.n * sizeof(jinja_target));
    if (rc == QVLM_OK && !t->items) rc = oom(p);
    for (size_t k = 0; rc == QVLM_OK && k < items.n; k++) t->items[k] = *(jinja_target *)items.items[k];
    free(items.items);
    return rc;
}

/* A body in a new scope (loop, macro, with...): soft-ness ends, as Jinja's frame.inner(). */
static qvlm_status inner_statements(parser *p, jinja_body *body, const char *const *ends, const char *block,
                                    int *end_idx) {
    bool soft = p->soft;
    p->soft = false;
    qvlm_status rc = parse_statements(p, body, ends, block, end_idx);
    p->soft = soft;
    return rc;
}

static qvlm_status parse_for(parser *p, jinja_stmt *s) {
    static const char *const ends1[] = {"endfor", "else", NULL}, *const ends2[] = {"endfor", NULL};
    qvlm_status rc = parse_target(p, &s->u.for_.target, "in", false);
    if (rc == QVLM_OK) rc = expect_name(p, "in");
    if (rc == QVLM_OK) rc = parse_tuple(p, TUPLE_NO_COND, "recursive", false, &s->u.for_.iter);
    if (rc == QVLM_OK && is_name(cur(p), "if")) {
        next(p);
        rc = parse_expression(p, true, &s->u.for_.filter);
    }
    if (rc == QVLM_OK && is_name(cur(p), "recursive"))
        rc = pfail(p, QVLM_E_UNSUPPORTED, cur(p)->line, "recursive for loops are not supported");
    int end;
    p->loop_depth++;
    if (rc == QVLM_OK) rc = inner_statements(p, &s->u.for_.body, ends1, "for", &end);
    p->loop_depth--;
    if (rc == QVLM_OK && end == 1) {
        next(p);
        rc = inner_statements(p, &s->u.for_.else_, ends2, "for", &end);
    }
    if (rc == QVLM_OK) next(p); /* endfor */
    return rc;
}

static qvlm_status parse_if(parser *p, jinja_stmt *s) {
    static const char *const ends[] = {"elif", "else", "endif", NULL}, *const ends_else[] = {"endif", NULL};
    ptrvec conds = {0}, bodies = {0};
    qvlm_status rc = QVLM_OK;
    bool soft = p->soft;
    p->soft = true;
    int end = 0;
    while (rc == QVLM_OK) {
        jinja_expr *c;
        jinja_body *b = jinja_arena_alloc(p->a, sizeof(*b));
        rc = b ? parse_tuple(p, TUPLE_NO_COND, NULL, false, &c) : oom(p);
        if (rc == QVLM_OK) rc = parse_statements(p, b, ends, "if", &end);
        if (rc == QVLM_OK && (!vec_push(&conds, c) || !vec_push(&bodies, b))) rc = oom(p);
        if (rc) break;
        next(p); /* elif / else / endif */
        if (end != 0) break;
    }
    if (rc == QVLM_OK && end == 1) {
        rc = parse_statements(p, &s->u.if_.else_, ends_else, "if", &end);
        if (rc == QVLM_OK) next(p);
    }
    p->soft = soft;
    s->u.if_.n = conds.n;
    s->u.if_.conds = (jinja_expr **)vec_finish(p, &conds);
    s->u.if_.bodies = jinja_arena_alloc(p->a, (bodies.n ? bodies.n : 1) * sizeof(jinja_body));
    if (rc == QVLM_OK && (!s->u.if_.conds || !s->u.if_.bodies)) rc = oom(p);
    for (size_t k = 0; rc == QVLM_OK && k < bodies.n; k++)
        s->u.if_.bodies[k] = *(jinja_body *)bodies.items[k];
    free(bodies.items);
    return rc;
}

static qvlm_status parse_set(parser *p, jinja_stmt *s) {
    static const char *const ends[] = {"endset", NULL};
    qvlm_status rc = parse_target(p, &s->u.set.target, NULL, true);
    if (rc) return rc;
    if (is_op(cur(p), JO_ASSIGN)) {
        next(p);
        return parse_tuple(p, TUPLE_FULL, NULL, false, &s->u.set.value);
    }
    jinja_target target = s->u.set.target;
    s->kind = JS_SET_BLOCK;
    s->u.set_block.target = target;
    s->u.set_block.filter = NULL;
    rc = parse_filter(p, &s->u.set_block.filter, false);
    int end;
    if (rc == QVLM_OK) rc = inner_statements(p, &s->u.set_block.body, ends, "set", &end);
    if (rc == QVLM_OK) next(p);
    return rc;
}

/* `(a, b=1)` of a macro or call block. */
static qvlm_status parse_signature(parser *p, jinja_macro_def *m) {
    qvlm_status rc = expect_op(p, JO_LPAREN, "(");
    ptrvec params = {0}, defaults = {0};
    bool any_default = false;
    while (rc == QVLM_OK && !is_op(cur(p), JO_RPAREN)) {
        if (params.n) rc = expect_op(p, JO_COMMA, ",");
        if (rc) break;
        if (cur(p)->type != JT_NAME) {
            rc = expect_type(p, JT_NAME, "name");
            break;
        }
        char *nm = dup_name(p, cur(p));
        next(p);
        jinja_expr *dflt = NULL;
        if (is_op(cur(p), JO_ASSIGN)) {
            next(p);
            rc = parse_expression(p, true, &dflt);
            any_default = true;
        } else if (any_default) {
            rc = pfail(p, QVLM_E_CORRUPT, cur(p)->line, "non-default argument follows default argument");
        }
        if (rc == QVLM_OK && (!nm || !vec_push(&params, nm) || !vec_push(&defaults, dflt))) rc = oom(p);
    }
    if (rc == QVLM_OK) rc = expect_op(p, JO_RPAREN, ")");
    m->n_params = params.n;
    m->params = (const char **)vec_finish(p, &params);
    m->defaults = (jinja_expr **)vec_finish(p, &defaults);
    if (rc == QVLM_OK && (!m->params || !m->defaults)) rc = oom(p);
    return rc;
}

static qvlm_status parse_macro_body(parser *p, jinja_macro_def *m, const char *const *ends,
                                    const char *block) {
    jinja_macro_def *outer = p->macro;
    int loops = p->loop_depth, end;
    p->macro = m;
    p->loop_depth = 0;
    qvlm_status rc = inner_statements(p, &m->body, ends, block, &end);
    p->macro = outer;
    p->loop_depth = loops;
    if (rc == QVLM_OK) next(p);
    return rc;
}

static qvlm_status parse_macro(parser *p, jinja_stmt *s) {
    static const char *const ends[] = {"endmacro", NULL};
    if (cur(p)->type != JT_NAME) return expect_type(p, JT_NAME, "name");
    s->u.macro.name = dup_name(p, cur(p));
    next(p);
    if (!s->u.macro.name) return oom(p);
    qvlm_status rc = parse_signature(p, &s->u.macro);
    return rc ? rc : parse_macro_body(p, &s->u.macro, ends, "macro");
}

static qvlm_status parse_call_block(parser *p, jinja_stmt *s) {
    static const char *const ends[] = {"endcall", NULL};
    jinja_macro_def *m = &s->u.call_block.caller;
    m->name = "caller";
    qvlm_status rc = QVLM_OK;
    if (is_op(cur(p), JO_LPAREN))
        rc = parse_signature(p, m);
    else if (!(m->params = jinja_arena_alloc(p->a, sizeof(char *))) ||
             !(m->defaults = jinja_arena_alloc(p->a, sizeof(jinja_expr *))))
        rc = oom(p);
    uint32_t line = cur(p)->line;
    if (rc == QVLM_OK) rc = parse_expression(p, true, &s->u.call_block.call);
    if (rc == QVLM_OK && s->u.call_block.call->kind != JE_CALL)
        rc = pfail(p, QVLM_E_CORRUPT, line, "expected call");
    return rc ? rc : parse_macro_body(p, m, ends, "call");
}

static qvlm_status parse_filter_block(parser *p, jinja_stmt *s) {
    static const char *const ends[] = {"endfilter", NULL};
    int end;
    qvlm_status rc = parse_filter(p, &s->u.filter_block.filter, true);
    if (rc == QVLM_OK) rc = inner_statements(p, &s->u.filter_block.body, ends, "filter", &end);
    if (rc == QVLM_OK) next(p);
    return rc;
}

static qvlm_status parse_with(parser *p, jinja_stmt *s) {
    static const char *const ends[] = {"endwith", NULL};
    ptrvec targets = {0}, values = {0};
    qvlm_status rc = QVLM_OK;
    while (rc == QVLM_OK && cur(p)->type != JT_BLOCK_END) {
        if (targets.n) rc = expect_op(p, JO_COMMA, ",");
        jinja_target *t = rc ? NULL : jinja_arena_alloc(p->a, sizeof(*t));
        jinja_expr *v;
        if (rc == QVLM_OK) rc = t ? parse_target_item(p, t) : oom(p);
        if (rc == QVLM_OK) rc = expect_op(p, JO_ASSIGN, "=");
        if (rc == QVLM_OK) rc = parse_expression(p, true, &v);
        if (rc == QVLM_OK && (!vec_push(&targets, t) || !vec_push(&values, v))) rc = oom(p);
    }
    s->u.with.n = targets.n;
    s->u.with.targets = jinja_arena_alloc(p->a, (targets.n ? targets.n : 1) * sizeof(jinja_target));
    if (rc == QVLM_OK && !s->u.with.targets) rc = oom(p);
    for (size_t k = 0; rc == QVLM_OK && k < targets.n; k++)
        s->u.with.targets[k] = *(jinja_target *)targets.items[k];
    free(targets.items);
    s->u.with.values = (jinja_expr **)vec_finish(p, &values);
    if (rc == QVLM_OK && !s->u.with.values) rc = oom(p);
    int end;
    if (rc == QVLM_OK) rc = inner_statements(p, &s->u.with.body, ends, "with", &end);
    if (rc == QVLM_OK) next(p);
    return rc;
}

static qvlm_status parse_generation(parser *p, jinja_stmt *s) {
    static const char *const ends[] = {"endgeneration", NULL};
    int end;
    qvlm_status rc = parse_statements(p, &s->u.generation, ends, "generation", &end);
    if (rc == QVLM_OK) next(p);
    return rc;
}

static const struct {
    const char *tag;
    jinja_skind kind;
    qvlm_status (*parse)(parser *p, jinja_stmt *s);
} STATEMENTS[] = {
    {"for", JS_FOR, parse_for},
    {"if", JS_IF, parse_if},
    {"set", JS_SET, parse_set},
    {"macro", JS_MACRO, parse_macro},
    {"call", JS_CALL_BLOCK, parse_call_block},
    {"filter", JS_FILTER_BLOCK, parse_filter_block},
    {"with", JS_WITH, parse_with},
    {"generation", JS_GENERATION, parse_generation},
};

static qvlm_status parse_statement(parser *p, jinja_stmt **out) {
    const jinja_token *t = cur(p);
    static const char *const unsupported[] = {"block",      "extends", "include", "import", "from",
                                              "autoescape", "trans",   "do",      "print",  NULL};
    if (t->type != JT_NAME) return pfail(p, QVLM_E_CORRUPT, t->line, "tag name expected");
    if (is_name(t, "break") || is_name(t, "continue")) {
        if (p->loop_depth == 0)
            return pfail(p, QVLM_E_CORRUPT, t->line, "'%.*s' outside of a loop", (int)t->n, t->p);
        *out = new_stmt(p, is_name(t, "break") ? JS_BREAK : JS_CONTINUE, t->line);
        next(p);
        return *out ? QVLM_OK : oom(p);
    }
    for (size_t k = 0; k < sizeof(STATEMENTS) / sizeof(STATEMENTS[0]); k++) {
        if (!is_name(t, STATEMENTS[k].tag)) continue;
        jinja_stmt *s = new_stmt(p, STATEMENTS[k].kind, t->line);
        if (!s) return oom(p);
        next(p);
        qvlm_status rc = enter(p);
        if (rc == QVLM_OK) rc = STATEMENTS[k].parse(p, s);
        p->depth--;
        *out = s;
        return rc;
    }
    for (const char *const *u = unsupported; *u; u++)
        if (is_name(t, *u)) return pfail(p, QVLM_E_UNSUPPORTED, t->line, "tag '%s' is not supported", *u);
    return pfail(p, QVLM_E_CORRUPT, t->line, "Encountered unknown tag '%.*s'.", (int)QVLM_MIN(t->n, 64),
                 t->p);
}

static qvlm_status push_stmt(parser *p, ptrvec *v, jinja_stmt *s) {
    return vec_push(v, s) ? QVLM_OK : oom(p);
}

/* Statements until one of `ends` opens a block (left current, *end_idx its index) or the end
 * of the template (*end_idx = -1). */
static qvlm_status subparse(parser *p, jinja_body *body, const char *const *ends, int *end_idx) {
    ptrvec items = {0};
    qvlm_status rc = enter(p);
    *end_idx = -1;
    while (rc == QVLM_OK && cur(p)->type != JT_EOF) {
        const jinja_token *t = cur(p);
        jinja_stmt *s = NULL;
        if (t->type == JT_DATA) {
            s = new_stmt(p, JS_TEXT, t->line);
            if (s) s->u.text.p = t->p, s->u.text.n = t->n;
            next(p);
            rc = s ? push_stmt(p, &items, s) : oom(p);
        } else if (t->type == JT_VAR_BEGIN) {
            next(p);
            s = new_stmt(p, JS_OUT, t->line);
            rc = s ? parse_tuple(p, TUPLE_FULL, NULL, false, &s->u.out) : oom(p);
            if (rc == QVLM_OK) rc = expect_type(p, JT_VAR_END, "end of print statement");
            if (rc == QVLM_OK) rc = push_stmt(p, &items, s);
        } else if (t->type == JT_BLOCK_BEGIN) {
            next(p);
            for (int k = 0; ends && ends[k]; k++)
                if (is_name(cur(p), ends[k])) *end_idx = k;
            if (*end_idx >= 0) break;
            rc = parse_statement(p, &s);
            if (rc == QVLM_OK) rc = expect_type(p, JT_BLOCK_END, "end of statement block");
            if (rc == QVLM_OK) rc = push_stmt(p, &items, s);
        } else {
            rc = unexpected(p);
        }
    }
    p->depth--;
    body->n = items.n;
    body->items = (jinja_stmt **)vec_finish(p, &items);
    if (rc == QVLM_OK && !body->items) rc = oom(p);
    return rc;
}

/* ==== Entry points ============================================================================== */

qvlm_status jinja_template_parse(const char *src, size_t n_bytes, const char *name, jinja_template **out,
                                 qvlm_error *err) {
    *out = NULL;
    if (!name) name = "template";
    if (!jinja_utf8_valid(src, n_bytes))
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: template is not valid UTF-8", name);
    jinja_template *t = calloc(1, sizeof(*t));
    if (!t || !(t->name = strdup(name))) {
        free(t);
        return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", name);
    }
    jinja_token *toks;
    size_t n_toks;
    qvlm_status rc = jinja_lex(&t->arena, src, n_bytes, t->name, &toks, &n_toks, err);
    if (rc == QVLM_OK) {
        parser p = {.a = &t->arena, .t = toks, .n = n_toks, .name = t->name, .err = err};
        int end;
        rc = subparse(&p, &t->body, NULL, &end);
        free(toks);
    }
    if (rc) {
        jinja_template_destroy(t);
        return rc;
    }
    *out = t;
    return QVLM_OK;
}

void jinja_template_destroy(jinja_template *t) {
    if (!t) return;
    jinja_arena_free(&t->arena);
    free(t->name);
    free(t);
}
