/* jinja.h - private interface of the Jinja interpreter that renders chat templates.
 *
 * Follows Jinja2 3.1 as transformers configures it (qwen35-arch.md §9; transformers'
 * _compile_jinja_template): ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
 * loopcontrols, the default Undefined, `tojson` = json.dumps(ensure_ascii=False), globals
 * raise_exception and strftime_now. Values behave like the Python objects Jinja would see:
 * str() / repr() / json.dumps output, truthiness, arithmetic and error messages are Python's,
 * so a render is byte-identical with transformers and failures carry the same message.
 *
 * Pipeline: jinja_lexer.c (source -> tokens, whitespace control) -> jinja_parser.c (tokens ->
 * AST in an arena owned by the template) -> jinja_eval.c (AST + JSON context -> text), with
 * values in jinja_value.c, operators / slicing / %-formatting in jinja_ops.c, Python string
 * helpers in jinja_text.c, filters and tests in jinja_filters.c, attribute access, methods
 * and globals in jinja_methods.c.
 *
 * Known differences from jinja2 (none matters to the chat templates we ship):
 *  - Filters that are generators in Jinja (map, select, reject, unique, items, ...) return
 *    lists: results agree when iterated, joined or serialized, but printing the filter's
 *    result directly shows a list where Jinja shows "<generator object ...>", and their
 *    errors surface when the filter runs rather than when its result is consumed.
 *  - Markup is not modelled: `safe` / `escape` return plain strings.
 *  - Jinja folds constant expressions at compile time (a failing `(3)[1:]` of literals
 *    becomes Undefined); we evaluate them like any other expression.
 *  - Not supported (clear QVLM_E_UNSUPPORTED errors): recursive loops, include / import /
 *    extends / block, *args / **kwargs in calls, format specs in str.format, %(name)s
 *    formatting, groupby / batch / slice / truncate / wordwrap / urlize / ... filters,
 *    integers beyond 64 bits, complex numbers. Case mapping is one-to-one (utf8proc), so
 *    "ß".upper() stays "ß". Identifiers are ASCII.
 *
 * Invariants:
 *  - A parsed template is immutable; every render owns its own jinja_rt, so one template may
 *    render from many threads at once. Heap values are refcounted without atomics because a
 *    value never leaves the render that made it.
 *  - All strings are valid UTF-8 (the source is validated, the JSON context is jansson's).
 *  - Every render is bounded: output bytes, live value memory, evaluation steps (work, with
 *    copied bytes counted) and recursion depth; crossing a bound is QVLM_E_LIMIT.
 */
#ifndef QVLM_MODEL_JINJA_H
#define QVLM_MODEL_JINJA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* ==== Limits =================================================================================== */

typedef struct jinja_limits {
    size_t max_output_bytes; /* bytes of rendered text */
    size_t max_memory_bytes; /* live bytes of strings, lists, dicts and buffers made by a render */
    uint64_t max_steps;      /* expressions + statements + loop iterations + bytes copied / 64 */
    uint32_t max_depth;      /* nesting of evaluation: statements, expressions, macro calls */
} jinja_limits;

#define JINJA_MAX_PARSE_DEPTH 200 /* nesting of blocks and expressions in the source */
#define JINJA_MAX_NESTING 512     /* nesting of values walked by repr, tojson, ==, < */
#define JINJA_MAX_RANGE 100000    /* range() size: jinja2.sandbox.MAX_RANGE */

/* ==== Arena: the AST and decoded literals of one template ======================================= */

typedef struct jinja_arena_block jinja_arena_block;
typedef struct jinja_arena {
    jinja_arena_block *head;
} jinja_arena;

void *jinja_arena_alloc(jinja_arena *a, size_t n_bytes); /* zeroed; NULL on OOM */
void jinja_arena_free(jinja_arena *a);

/* ==== Tokens ==================================================================================== */

typedef enum jinja_tok_type {
    JT_DATA,        /* template text, already whitespace-controlled */
    JT_VAR_BEGIN,   /* {{ */
    JT_VAR_END,     /* }} */
    JT_BLOCK_BEGIN, /* {% */
    JT_BLOCK_END,   /* %} */
    JT_NAME,
    JT_STRING, /* decoded literal */
    JT_INT,
    JT_FLOAT,
    JT_OP,
    JT_EOF,
} jinja_tok_type;

typedef enum jinja_op {
    JO_NONE,
    JO_ADD,
    JO_SUB,
    JO_MUL,
    JO_DIV,
    JO_FLOORDIV,
    JO_MOD,
    JO_POW,
    JO_TILDE,
    JO_LBRACKET,
    JO_RBRACKET,
    JO_LPAREN,
    JO_RPAREN,
    JO_LBRACE,
    JO_RBRACE,
    JO_EQ,
    JO_NE,
    JO_GT,
    JO_GTEQ,
    JO_LT,
    JO_LTEQ,
    JO_ASSIGN,
    JO_DOT,
    JO_COLON,
    JO_PIPE,
    JO_COMMA,
    JO_SEMICOLON,
    JO_IN,
    JO_NOTIN, /* comparison operators made by the parser, never lexed */
} jinja_op;

typedef struct jinja_token {
    jinja_tok_type type;
    jinja_op op;   /* JT_OP */
    uint32_t line; /* 1-based line where the token starts */
    const char *p; /* JT_DATA, JT_NAME, JT_STRING: bytes (in the template's arena) */
    size_t n;      /* length of p in bytes */
    int64_t i;     /* JT_INT */
    double f;      /* JT_FLOAT */
} jinja_token;

/* Tokenize `src` (n bytes, need not be NUL-terminated). Newlines are normalized to "\n" and a
 * single trailing newline is dropped (keep_trailing_newline=False). *toks is malloc'd (the
 * caller frees it); the bytes tokens point to live in `a`. Errors: QVLM_E_CORRUPT (syntax),
 * QVLM_E_LIMIT (brackets nested too deeply), QVLM_E_NOMEM, with "name:line: message". */
qvlm_status jinja_lex(jinja_arena *a, const char *src, size_t n_bytes, const char *name, jinja_token **toks,
                      size_t *n_toks, qvlm_error *err);

/* ==== Values ===================================================================================== */

typedef struct jinja_rt jinja_rt;
typedef struct jinja_obj jinja_obj;

typedef enum jinja_kind {
    JV_UNDEF, /* u.o: jinja_undef (its message) or NULL for a nameless undefined */
    JV_NONE,
    JV_BOOL,
    JV_INT,
    JV_FLOAT,
    JV_STR,   /* u.s: bytes, borrowed from the template / context when owner is NULL */
    JV_LIST,  /* u.o: jinja_list (a tuple when is_tuple) */
    JV_DICT,  /* u.o: jinja_dict */
    JV_JARR,  /* u.j: a JSON array of the render context (borrowed) */
    JV_JOBJ,  /* u.j: a JSON object of the render context (borrowed) */
    JV_NS,    /* u.o: jinja_dict of type JO_NS, Jinja's namespace() */
    JV_MACRO, /* u.o: jinja_macro */
    JV_FUNC,  /* u.o: jinja_func, a global function or a bound method */
    JV_LOOP,  /* u.o: jinja_loop, the `loop` variable */
} jinja_kind;

typedef struct jinja_value {
    jinja_kind kind;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n;         /* bytes */
            jinja_obj *owner; /* keeps p alive; NULL when borrowed */
        } s;
        jinja_obj *o;
        const json_t *j;
    } u;
} jinja_value;

typedef enum jinja_otype {
    JO_STR,
    JO_LIST,
    JO_DICT,
    JO_NS,
    JO_UNDEF,
    JO_MACRO,
    JO_FUNC,
    JO_LOOP,
    JO_SCOPE
} jinja_otype;

/* Header of every heap object. Objects that can take part in reference cycles (namespaces,
 * scopes captured by macros) sit on the render's `tracked` list, which is cleared at the end
 * of the render so cycles cannot leak. Freeing is iterative (free_next) so deep chains
 * cannot overflow the stack. */
struct jinja_obj {
    uint32_t refs;
    jinja_otype type;
    size_t n_bytes;         /* accounted against max_memory_bytes */
    jinja_obj *free_next;   /* worklist link while being freed */
    jinja_obj *prev, *next; /* tracked list (NS, SCOPE), else NULL */
};

typedef struct jinja_strobj {
    jinja_obj h;
    size_t n;
    char data[]; /* [n + 1], NUL-terminated for convenience */
} jinja_strobj;

typedef enum jinja_view { JVIEW_NONE, JVIEW_KEYS, JVIEW_VALUES, JVIEW_ITEMS } jinja_view;

typedef struct jinja_list {
    jinja_obj h;
    bool is_tuple;
    jinja_view view; /* dict.keys() / values() / items(): a list that prints as Python's view */
    size_t n, cap;
    jinja_value *items; /* [cap] */
} jinja_list;

typedef struct jinja_dict { /* also namespaces (type JO_NS) */
    jinja_obj h;
    size_t n, cap;
    jinja_value *keys; /* [cap] */
    jinja_value *vals; /* [cap] */
} jinja_dict;

typedef struct jinja_undef {
    jinja_obj h;
    qvlm_status code; /* what using it raises: QVLM_E_INVALID (UndefinedError, SecurityError) */
    char msg[];       /* Jinja's _undefined_message */
} jinja_undef;

/* Initializer for locals: an anonymous undefined, which jinja_release ignores, so error paths
 * may release every local whether or not it was ever assigned. */
#define JINJA_UNSET                                                                                          \
    { .kind = JV_UNDEF }

/* ---- constructors: plain values are free, heap values return QVLM_E_NOMEM / E_LIMIT ---- */
static inline jinja_value jinja_none(void) {
    jinja_value v = {.kind = JV_NONE};
    return v;
}
static inline jinja_value jinja_undefined(void) {
    jinja_value v = {.kind = JV_UNDEF};
    return v;
}
static inline jinja_value jinja_bool(bool b) {
    jinja_value v = {.kind = JV_BOOL, .u.b = b};
    return v;
}
static inline jinja_value jinja_int(int64_t i) {
    jinja_value v = {.kind = JV_INT, .u.i = i};
    return v;
}
static inline jinja_value jinja_float(double f) {
    jinja_value v = {.kind = JV_FLOAT, .u.f = f};
    return v;
}
static inline jinja_value jinja_strv(const char *p, size_t n) {
    jinja_value v = {.kind = JV_STR, .u.s = {p, n, NULL}};
    return v;
}
static inline bool jinja_is_str(const jinja_value *v) { return v->kind == JV_STR; }
static inline bool jinja_is_undef(const jinja_value *v) { return v->kind == JV_UNDEF; }
static inline bool jinja_is_int(const jinja_value *v) { return v->kind == JV_INT || v->kind == JV_BOOL; }
static inline bool jinja_is_num(const jinja_value *v) {
    return v->kind == JV_INT || v->kind == JV_BOOL || v->kind == JV_FLOAT;
}
static inline int64_t jinja_as_int(const jinja_value *v) {
    return v->kind == JV_BOOL ? (int64_t)v->u.b : v->u.i;
}
static inline double jinja_as_float(const jinja_value *v) {
    return v->kind == JV_FLOAT ? v->u.f : (double)jinja_as_int(v);
}

/* A zeroed heap object of n_bytes with one reference (accounted against the memory limit). */
qvlm_status jinja_obj_new(jinja_rt *rt, jinja_otype type, size_t n_bytes, void **out);
/* A new string holding a copy of p[0..n). */
qvlm_status jinja_str_new(jinja_rt *rt, const char *p, size_t n, jinja_value *out);
/* A new string of n bytes to fill in through *buf (its NUL already placed). */
qvlm_status jinja_str_alloc(jinja_rt *rt, size_t n, char **buf, jinja_value *out);
/* A view of part of string `s` sharing its owner (no copy). */
jinja_value jinja_str_sub(const jinja_value *s, size_t off, size_t n);
/* An undefined value whose use raises `msg` (printf format). */
qvlm_status jinja_undef_new(jinja_rt *rt, jinja_value *out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Jinja's Undefined(obj=..., name=...) message, e.g. "'dict object' has no attribute 'x'". */
qvlm_status jinja_undef_missing(jinja_rt *rt, const jinja_value *obj, const jinja_value *name,
                                jinja_value *out);
/* "list object has no element 5" (name_repr is the repr of the missing key). */
qvlm_status jinja_undef_no_element(jinja_rt *rt, const jinja_value *obj, const char *name_repr,
                                   jinja_value *out);
qvlm_status jinja_list_new(jinja_rt *rt, size_t cap, bool is_tuple, jinja_value *out);
/* Append, taking over the caller's reference to *item (also on failure, when it is released). */
qvlm_status jinja_list_push(jinja_rt *rt, jinja_value *list, jinja_value *item);
qvlm_status jinja_dict_new(jinja_rt *rt, jinja_otype type, jinja_value *out);
/* Insert or replace key -> val, taking over both references (released on failure). */
qvlm_status jinja_dict_set(jinja_rt *rt, jinja_value *dict, jinja_value *key, jinja_value *val);
/* Borrowed pointer to the value of key in a heap dict / namespace, NULL when absent. */
const jinja_value *jinja_dict_get(const jinja_dict *d, const jinja_value *key);
const jinja_value *jinja_dict_get_str(const jinja_dict *d, const char *p, size_t n);

static inline jinja_list *jinja_list_of(const jinja_value *v) { return (jinja_list *)v->u.o; }
/* A dict view: iterates like a list, but has no indexing, + or *, and is not JSON. */
static inline bool jinja_is_view(const jinja_value *v) {
    return v->kind == JV_LIST && jinja_list_of(v)->view != JVIEW_NONE;
}
static inline jinja_dict *jinja_dict_of(const jinja_value *v) { return (jinja_dict *)v->u.o; }

/* Borrowed JSON node -> value (no allocation). */
jinja_value jinja_from_json(const json_t *j);

/* ---- references ---- */
jinja_value jinja_ref(const jinja_value *v);      /* a new reference to the same value */
void jinja_release(jinja_rt *rt, jinja_value *v); /* drops a reference; *v becomes undefined */
void jinja_obj_release(jinja_rt *rt, jinja_obj *o);

/* ---- Python semantics ---- */
bool jinja_truthy(const jinja_value *v);
const char *jinja_type_name(const jinja_value *v); /* type(x).__name__: "str", "NoneType" */
/* Length as len() sees it; false when the value has no len(). */
bool jinja_len(const jinja_value *v, size_t *n);
/* Items as iter() yields them (str: characters, dict: keys, undefined: none) in a fresh list;
 * QVLM_E_INVALID "'int' object is not iterable" otherwise. */
qvlm_status jinja_iterate(jinja_rt *rt, const jinja_value *v, jinja_value *out_list);
/* Random access into an iterated list, JSON array or tuple (borrowed items wrapped). */
size_t jinja_seq_len(const jinja_value *v);
jinja_value jinja_seq_at(const jinja_value *v, size_t i); /* borrowed: do not release */
bool jinja_is_seq(const jinja_value *v);                  /* list, tuple, JSON array */
bool jinja_is_mapping(const jinja_value *v);              /* dict, JSON object */

/* Mapping access over heap dicts and JSON objects: size, and i-th key / value in order. */
size_t jinja_map_len(const jinja_value *m);
qvlm_status jinja_map_get(jinja_rt *rt, const jinja_value *m, const jinja_value *key, jinja_value *out,
                          bool *found);
/* Fresh list of keys, values or (key, value) tuples of a mapping. */
qvlm_status jinja_map_keys(jinja_rt *rt, const jinja_value *m, jinja_value *out);
qvlm_status jinja_map_values(jinja_rt *rt, const jinja_value *m, jinja_value *out);
qvlm_status jinja_map_items(jinja_rt *rt, const jinja_value *m, jinja_value *out);

/* a == b as Python compares them. */
qvlm_status jinja_eq(jinja_rt *rt, const jinja_value *a, const jinja_value *b, bool *eq);
/* Three-way comparison for <, <=, >, >=; `op` names the operator in the TypeError. */
qvlm_status jinja_cmp(jinja_rt *rt, const jinja_value *a, const jinja_value *b, const char *op, int *res);
/* `needle in hay` (Python's __contains__). */
qvlm_status jinja_contains(jinja_rt *rt, const jinja_value *hay, const jinja_value *needle, bool *in);

/* ---- growable byte buffers, accounted against the render's memory ---- */
typedef struct jinja_buf {
    char *p;
    size_t n, cap;
} jinja_buf;
qvlm_status jinja_buf_put(jinja_rt *rt, jinja_buf *b, const char *p, size_t n);
qvlm_status jinja_buf_putc(jinja_rt *rt, jinja_buf *b, char c);
qvlm_status jinja_buf_printf(jinja_rt *rt, jinja_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void jinja_buf_free(jinja_rt *rt, jinja_buf *b);
/* Move the buffer's bytes into a new string value; the buffer is left empty. */
qvlm_status jinja_buf_to_str(jinja_rt *rt, jinja_buf *b, jinja_value *out);

/* str(v): Python's str(); undefined prints as "". */
qvlm_status jinja_str(jinja_rt *rt, const jinja_value *v, jinja_buf *b);
/* str(v) as a value: strings are returned as they are (a new reference). */
qvlm_status jinja_to_str(jinja_rt *rt, const jinja_value *v, jinja_value *out);
/* repr(v). */
qvlm_status jinja_repr(jinja_rt *rt, const jinja_value *v, jinja_buf *b, int depth);

typedef struct jinja_json_opts {
    bool ensure_ascii;
    bool sort_keys;
    bool has_indent;
    const char *indent; /* bytes repeated per level */
    size_t indent_n;
    const char *item_sep, *key_sep; /* default ", " / ": " (", " -> "," with indent) */
    size_t item_sep_n, key_sep_n;
} jinja_json_opts;
/* json.dumps(v, ...). */
qvlm_status jinja_tojson(jinja_rt *rt, const jinja_value *v, const jinja_json_opts *o, jinja_buf *b,
                         int depth);

/* ==== Text: Python's str semantics over UTF-8 ==================================================== */

/* Decode one code point at p[*i] (valid UTF-8 assumed; a bad byte reads as U+FFFD) and advance. */
int32_t jinja_utf8_next(const char *p, size_t n, size_t *i);
size_t jinja_utf8_encode(int32_t cp, char out[4]);
size_t jinja_utf8_count(const char *p, size_t n); /* code points */
bool jinja_utf8_valid(const char *p, size_t n);
/* Byte offset of code point index `cp_idx` (<= count). */
size_t jinja_utf8_offset(const char *p, size_t n, size_t cp_idx);
bool jinja_py_isspace(int32_t cp);     /* str.isspace() */
bool jinja_py_isprintable(int32_t cp); /* str.isprintable() */
/* Python repr(float) into buf (at least 32 bytes). */
void jinja_fmt_float(double d, char *buf, size_t n);
/* Python's repr of a str into b. */
qvlm_status jinja_repr_str(jinja_rt *rt, const char *p, size_t n, jinja_buf *b);
/* Strip from the left / right: whitespace when chars is NULL, else any code point of chars. */
void jinja_strip(const char *p, size_t n, const char *chars, size_t chars_n, bool left, bool right,
                 size_t *off, size_t *len);
typedef enum jinja_case { JC_UPPER, JC_LOWER, JC_TITLE_WORDS, JC_CAPITALIZE, JC_SWAPCASE } jinja_case;
/* str.upper(), str.lower(), str.title(), str.capitalize(), str.swapcase() (simple case mapping). */
qvlm_status jinja_case_map(jinja_rt *rt, const jinja_value *s, jinja_case mode, jinja_value *out);
/* Python float(str) / int(str, base); false when the text is not a number. */
bool jinja_parse_float(const char *p, size_t n, double *out);
bool jinja_parse_int(const char *p, size_t n, int base, int64_t *out);

/* ==== AST ======================================================================================== */

typedef struct jinja_expr jinja_expr;
typedef struct jinja_stmt jinja_stmt;
typedef struct jinja_filter_def jinja_filter_def;
typedef struct jinja_test_def jinja_test_def;

typedef struct jinja_callargs {
    size_t n_pos;
    jinja_expr **pos;
    size_t n_kw;
    const char **kw_names; /* NUL-terminated, in the arena */
    jinja_expr **kw;
} jinja_callargs;

typedef enum jinja_ekind {
    JE_CONST,
    JE_NAME,
    JE_LIST,
    JE_TUPLE,
    JE_DICT,
    JE_ATTR,
    JE_ITEM,
    JE_SLICE,
    JE_CALL,
    JE_FILTER,
    JE_TEST,
    JE_NOT,
    JE_NEG,
    JE_POS,
    JE_BIN,
    JE_AND,
    JE_OR,
    JE_CMP,
    JE_COND,
} jinja_ekind;

struct jinja_expr {
    jinja_ekind kind;
    uint32_t line;
    union {
        jinja_value cst; /* CONST: none, bool, int, float or a borrowed string */
        struct {
            const char *p;
            size_t n;
        } name; /* NAME */
        struct {
            jinja_expr **items;
            size_t n;
        } seq; /* LIST, TUPLE; DICT: k0, v0, k1, v1, ... */
        struct {
            jinja_expr *obj;
            const char *p;
            size_t n;
        } attr; /* ATTR: obj.name */
        struct {
            jinja_expr *obj, *index;
        } item; /* ITEM: obj[index] */
        struct {
            jinja_expr *obj, *start, *stop, *step;
        } slice; /* absent parts NULL */
        struct {
            jinja_expr *fn;
            jinja_callargs args;
        } call;
        struct {
            jinja_expr *operand;         /* NULL: the block's text ({% filter %}, {% set x | f %}) */
            const jinja_filter_def *def; /* NULL: unknown, an error when reached */
            const char *name;
            jinja_callargs args;
        } filter;
        struct {
            jinja_expr *operand;
            const jinja_test_def *def; /* NULL: unknown, an error when reached */
            const char *name;
            jinja_callargs args;
        } test;
        struct {
            jinja_expr *a, *b;
            jinja_op op;
        } bin; /* BIN, AND, OR; NOT/NEG/POS use a */
        struct {
            jinja_expr *first;
            size_t n;
            jinja_op *ops;
            jinja_expr **rhs;
        } cmp;
        struct {
            jinja_expr *test, *then, *else_;
        } cond; /* else_ NULL: undefined */
    } u;
};

typedef struct jinja_body {
    jinja_stmt **items;
    size_t n;
} jinja_body;

typedef enum jinja_tkind { JTG_NAME, JTG_NSATTR, JTG_TUPLE } jinja_tkind;
typedef struct jinja_target {
    jinja_tkind kind;
    const char *name;           /* NAME, NSATTR: variable */
    const char *attr;           /* NSATTR: attribute */
    struct jinja_target *items; /* TUPLE */
    size_t n;
} jinja_target;

typedef enum jinja_skind {
    JS_TEXT,
    JS_OUT,
    JS_IF,
    JS_FOR,
    JS_SET,
    JS_SET_BLOCK,
    JS_MACRO,
    JS_CALL_BLOCK,
    JS_FILTER_BLOCK,
    JS_WITH,
    JS_BREAK,
    JS_CONTINUE,
    JS_GENERATION,
} jinja_skind;

typedef struct jinja_macro_def {
    const char *name; /* "caller" for call blocks */
    size_t n_params;
    const char **params;
    jinja_expr **defaults; /* [n_params], NULL where none */
    jinja_body body;
    bool catch_varargs, catch_kwargs, takes_caller; /* body reads varargs / kwargs / caller */
} jinja_macro_def;

struct jinja_stmt {
    jinja_skind kind;
    uint32_t line;
    union {
        struct {
            const char *p;
            size_t n;
        } text;
        jinja_expr *out;
        struct {
            size_t n;
            jinja_expr **conds;
            jinja_body *bodies;
            jinja_body else_;
        } if_;
        struct {
            jinja_target target;
            jinja_expr *iter, *filter;
            jinja_body body, else_;
        } for_;
        struct {
            jinja_target target;
            jinja_expr *value;
        } set;
        struct {
            jinja_target target;
            jinja_expr *filter;
            jinja_body body;
        } set_block;
        jinja_macro_def macro;
        struct {
            jinja_expr *call;
            jinja_macro_def caller;
        } call_block;
        struct {
            jinja_expr *filter;
            jinja_body body;
        } filter_block;
        struct {
            size_t n;
            jinja_target *targets;
            jinja_expr **values;
            jinja_body body;
        } with;
        jinja_body generation;
    } u;
};

typedef struct jinja_template {
    jinja_arena arena;
    char *name; /* for messages */
    jinja_body body;
} jinja_template;

/* Parse source into a template. Errors: QVLM_E_CORRUPT (syntax, "name:line: message"),
 * QVLM_E_UNSUPPORTED (a known Jinja tag this interpreter lacks), QVLM_E_LIMIT (nesting),
 * QVLM_E_NOMEM. On success the caller owns *out (jinja_template_destroy). */
qvlm_status jinja_template_parse(const char *src, size_t n_bytes, const char *name, jinja_template **out,
                                 qvlm_error *err);
void jinja_template_destroy(jinja_template *t);

/* Render with `ctx` (a JSON object: its keys are the variables) over `defaults` (a JSON
 * object or NULL, consulted when ctx lacks a key). Thread-safe. On success *out is malloc'd
 * and NUL-terminated, *n_bytes its length. Errors: QVLM_E_INVALID (the template raised: the
 * message is exactly Python's / the template's), QVLM_E_UNSUPPORTED, QVLM_E_LIMIT,
 * QVLM_E_NOMEM; *out is then NULL. */
qvlm_status jinja_render(const jinja_template *t, const json_t *ctx, const json_t *defaults,
                         const jinja_limits *lim, char **out, size_t *n_bytes, qvlm_error *err);

/* ==== Runtime: shared by the evaluator, filters and methods ====================================== */

/* Variables of one scope: the template's top level, a loop iteration, a macro call, a with
 * block. Lookups walk to the parent; a name set here shadows the parent's (Jinja scoping:
 * a `set` inside a loop body does not leak out of it). Names are borrowed from the template
 * or the context, both of which outlive the render. */
typedef struct jinja_var {
    const char *name;
    size_t n;
    jinja_value v;
} jinja_var;

typedef struct jinja_scope jinja_scope;
struct jinja_scope {
    jinja_obj h;
    jinja_scope *parent; /* referenced; NULL at the top level */
    size_t n, cap;
    jinja_var *vars; /* [cap] */
};

struct jinja_rt {
    const jinja_template *tpl;
    const json_t *ctx, *defaults;
    jinja_limits lim;
    size_t mem_bytes; /* live accounted bytes */
    uint64_t steps;
    uint32_t depth;
    uint32_t line;     /* line being evaluated, for limit messages */
    jinja_buf *out;    /* where output goes now (macros capture into their own) */
    jinja_obj tracked; /* sentinel of the list of namespaces and scopes */
    qvlm_error *err;
};

/* Free what only reference cycles keep alive; called once when a render ends. */
void jinja_break_cycles(jinja_rt *rt);

/* Record an error in rt->err and return code. */
qvlm_status jinja_fail(jinja_rt *rt, qvlm_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Count `n` steps of work; QVLM_E_LIMIT past max_steps. */
qvlm_status jinja_step(jinja_rt *rt, uint64_t n);
/* Account n bytes of new memory (QVLM_E_LIMIT past max_memory_bytes) / give them back. */
qvlm_status jinja_mem_take(jinja_rt *rt, size_t n);
void jinja_mem_give(jinja_rt *rt, size_t n);
/* Raise the error an undefined value carries ("'x' is undefined"). */
qvlm_status jinja_undef_fail(jinja_rt *rt, const jinja_value *u);

/* Call arguments after evaluation. */
typedef struct jinja_args {
    size_t n_pos;
    jinja_value *pos;
    size_t n_kw;
    const char **kw_names;
    jinja_value *kw;
} jinja_args;

/* Bind args to Python-style parameters: slots[i] = the argument for params[i] or NULL when
 * not given. Extra or unknown arguments raise Python's TypeError text naming `fname`. */
qvlm_status jinja_bind(jinja_rt *rt, const char *fname, const jinja_args *a, const char *const *params,
                       size_t n_params, const jinja_value **slots);

typedef qvlm_status (*jinja_filter_fn)(jinja_rt *rt, const jinja_value *v, const jinja_args *a,
                                       jinja_value *out);
typedef qvlm_status (*jinja_test_fn)(jinja_rt *rt, const jinja_value *v, const jinja_args *a, bool *out);
typedef qvlm_status (*jinja_func_fn)(jinja_rt *rt, const jinja_value *self, const jinja_args *a,
                                     jinja_value *out);

struct jinja_filter_def {
    const char *name;
    jinja_filter_fn fn;
};
struct jinja_test_def {
    const char *name;
    jinja_test_fn fn;
};
const jinja_filter_def *jinja_filter_find(const char *name, size_t n);
const jinja_test_def *jinja_test_find(const char *name, size_t n);

/* A global or bound method: `self` is the bound object (undefined for globals). */
typedef struct jinja_func_def {
    const char *name;
    jinja_func_fn fn;
} jinja_func_def;

typedef struct jinja_func {
    jinja_obj h;
    const jinja_func_def *def;
    jinja_value self;
} jinja_func;

qvlm_status jinja_func_new(jinja_rt *rt, const jinja_func_def *def, const jinja_value *self,
                           jinja_value *out);

/* Look a name up among the globals (range, dict, namespace, raise_exception, strftime_now). */
const jinja_func_def *jinja_global_find(const char *name, size_t n);
/* Python getattr semantics of the sandbox: obj.name (methods first, then items). */
qvlm_status jinja_getattr(jinja_rt *rt, const jinja_value *obj, const char *name, size_t n, jinja_value *out);
/* Jinja's getitem: obj[key], falling back to attributes for string keys. */
qvlm_status jinja_getitem(jinja_rt *rt, const jinja_value *obj, const jinja_value *key, jinja_value *out);
/* Call any callable value (macros go through the evaluator). */
qvlm_status jinja_call(jinja_rt *rt, const jinja_value *fn, const jinja_args *a, jinja_value *out);
/* Apply a test by name (select/reject filters); unknown names raise. */
qvlm_status jinja_apply_test(jinja_rt *rt, const char *name, size_t n, const jinja_value *v,
                             const jinja_args *a, bool *out);
qvlm_status jinja_apply_filter(jinja_rt *rt, const char *name, size_t n, const jinja_value *v,
                               const jinja_args *a, jinja_value *out);

/* Macro values and the loop object are implemented by the evaluator. */
typedef struct jinja_macro {
    jinja_obj h;
    const jinja_macro_def *def;
    jinja_scope *closure; /* referenced: the scope the macro was defined in */
} jinja_macro;

typedef struct jinja_loop {
    jinja_obj h;
    jinja_value items; /* the (filtered) items, a list */
    size_t index0;
    uint32_t depth0;
    bool changed_seen;
    jinja_value changed_last;
} jinja_loop;

qvlm_status jinja_macro_call(jinja_rt *rt, const jinja_value *macro, const jinja_args *a, jinja_value *out);
qvlm_status jinja_loop_getattr(jinja_rt *rt, const jinja_value *loop, const char *name, size_t n,
                               jinja_value *out);

/* Python binary operators (+ - * / // % **) with Python's results and TypeErrors. */
qvlm_status jinja_binop(jinja_rt *rt, jinja_op op, const jinja_value *a, const jinja_value *b,
                        jinja_value *out);
/* obj[start:stop:step] on a str, list or tuple (parts are None or ints), Python semantics. */
qvlm_status jinja_slice(jinja_rt *rt, const jinja_value *obj, const jinja_value parts[3], jinja_value *out);
/* str methods shared with filters: str.center(width[, fill]) (args as a call), splitlines,
 * str.replace(old, new, count) with count < 0 meaning all. */
qvlm_status jinja_str_center(jinja_rt *rt, const jinja_value *s, const jinja_args *a, jinja_value *out);
qvlm_status jinja_splitlines(jinja_rt *rt, const jinja_value *s, bool keepends, jinja_value *out);
qvlm_status jinja_str_replace(jinja_rt *rt, const jinja_value *s, const jinja_value *old,
                              const jinja_value *new_, int64_t count, jinja_value *out);
/* printf-style `fmt % args` (str.__mod__) for %s %r %d %i %f %x %%. */
qvlm_status jinja_percent_format(jinja_rt *rt, const jinja_value *fmt, const jinja_value *args,
                                 jinja_value *out);

#endif /* QVLM_MODEL_JINJA_H */
