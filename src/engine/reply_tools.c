/* reply_tools.c - one Qwen3.5 tool-call block to a function name and JSON arguments.
 *
 * The format is the one the chat template teaches the model (and renders for past calls):
 *     <tool_call>\n<function=NAME>\n<parameter=ARG>\nVALUE\n</parameter>\n</function>\n</tool_call>
 * VALUE is raw text that may span lines. The template writes objects and arrays with tojson
 * and everything else with |string, so a VALUE that parses as JSON is taken as JSON, unless
 * the tool's schema says the parameter is a string (then "42" stays "42"). */
#include <stdlib.h>
#include <string.h>

#include "engine/reply.h"

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')) c->p++;
}

static bool eat(cursor *c, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0) return false;
    c->p += n;
    return true;
}

static const char *find(const char *p, const char *end, const char *lit) {
    return memmem(p, (size_t)(end - p), lit, strlen(lit));
}

/* NAME up to '>': non-empty, on one line, no '<'; surrounding spaces trimmed. */
static bool take_name(cursor *c, const char **name, size_t *n) {
    const char *gt = memchr(c->p, '>', (size_t)(c->end - c->p));
    if (!gt) return false;
    const char *a = c->p, *b = gt;
    while (a < b && *a == ' ') a++;
    while (b > a && b[-1] == ' ') b--;
    if (a == b) return false;
    for (const char *q = a; q < b; q++)
        if (*q == '\n' || *q == '<') return false;
    *name = a;
    *n = (size_t)(b - a);
    c->p = gt + 1;
    return true;
}

/* The schema type of parameter `arg` of function `fn` in the tools array, or NULL. */
static const char *schema_type(const json_t *tools, const char *fn, const char *arg) {
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        json_t *f = json_object_get(t, "function");
        if (!f) f = t; /* a bare function definition */
        const char *name = json_string_value(json_object_get(f, "name"));
        if (!name || strcmp(name, fn) != 0) continue;
        json_t *props = json_object_get(json_object_get(f, "parameters"), "properties");
        return json_string_value(json_object_get(json_object_get(props, arg), "type"));
    }
    return NULL;
}

static json_t *value_of(const char *v, size_t n, const char *type) {
    if (!type || strcmp(type, "string") != 0) {
        json_error_t je;
        json_t *j = json_loadb(v, n, JSON_DECODE_ANY, &je);
        if (j) return j;
    }
    return json_stringn(v, n); /* NULL for ill-formed UTF-8 */
}

/* One <parameter=ARG>VALUE[</parameter>] into args. */
static qvlm_status take_parameter(cursor *c, const json_t *tools, const char *fn, json_t *args, qvlm_error *err) {
    const char *pn;
    size_t n_pn;
    if (!take_name(c, &pn, &n_pn)) return qvlm_errorf(err, QVLM_E_INVALID, "tool call %s: a parameter without a name", fn);
    const char *v = c->p;
    if (v < c->end && *v == '\n') v++;
    /* The value ends at </parameter>, or leniently at the next parameter or </function>. */
    const char *stops[] = {"</parameter>", "<parameter=", "</function>"};
    const char *ve = c->end, *next = c->end;
    for (int k = 0; k < 3; k++) {
        const char *f = find(v, c->end, stops[k]);
        if (f && f < ve) ve = f, next = k == 0 ? f + strlen(stops[0]) : f;
    }
    c->p = next;
    const char *vend = ve;
    if (vend > v && vend[-1] == '\n') vend--;
    char *arg = strndup(pn, n_pn);
    if (!arg) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    json_t *val = value_of(v, (size_t)(vend - v), schema_type(tools, fn, arg));
    qvlm_status rc = QVLM_OK;
    if (!val)
        rc = qvlm_errorf(err, QVLM_E_INVALID, "tool call %s: parameter %s is not valid UTF-8", fn, arg);
    else if (json_object_set_new(args, arg, val) != 0) /* also refuses a name that is not UTF-8 */
        rc = qvlm_errorf(err, QVLM_E_INVALID, "tool call %s: bad parameter name", fn);
    free(arg);
    return rc;
}

qvlm_status reply_parse_tool_block(const char *s, size_t n, const json_t *tools, char **name, char **args_json,
                                   qvlm_error *err) {
    *name = *args_json = NULL;
    cursor c = {s, s + n};
    skip_ws(&c);
    const char *fn;
    size_t n_fn;
    if (!eat(&c, "<function=") || !take_name(&c, &fn, &n_fn))
        return qvlm_errorf(err, QVLM_E_INVALID, "tool call: expected <function=NAME>");
    json_t *name_utf8 = json_stringn(fn, n_fn); /* the name goes into JSON replies */
    if (!name_utf8) return qvlm_errorf(err, QVLM_E_INVALID, "tool call: the function name is not valid UTF-8");
    json_decref(name_utf8);
    char *fname = strndup(fn, n_fn);
    json_t *args = json_object();
    qvlm_status rc = fname && args ? QVLM_OK : qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    while (!rc) {
        skip_ws(&c);
        if (c.p == c.end || eat(&c, "</function>")) break;
        if (!eat(&c, "<parameter="))
            rc = qvlm_errorf(err, QVLM_E_INVALID, "tool call %s: unexpected text at byte %zu", fname, (size_t)(c.p - s));
        else
            rc = take_parameter(&c, tools, fname, args, err);
    }
    skip_ws(&c);
    if (!rc && c.p != c.end)
        rc = qvlm_errorf(err, QVLM_E_INVALID, "tool call %s: text after </function> at byte %zu", fname, (size_t)(c.p - s));
    if (!rc) {
        *args_json = json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!*args_json) rc = qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    }
    json_decref(args);
    if (rc) {
        free(fname);
        return rc;
    }
    *name = fname;
    return QVLM_OK;
}
