/* chat_template_test.c - chat templates against transformers, and the Jinja interpreter.
 *
 * 1. Reference prompts: every case of tests/fixtures/chat/chat_reference_qwen3{,_5}.json (made
 *    by /work/shared/tools/gen_chat.py with transformers' apply_chat_template) must render
 *    byte-identical, or fail with exactly the reference error message.
 * 2. Interpreter cases: tests/fixtures/chat/jinja_cases.json (made by gen_jinja_cases.py with
 *    real jinja2 configured as transformers configures it) cover each construct, whitespace
 *    control, Python str / repr / json.dumps output, Undefined and Python's error texts.
 * 3. What only qvlm has: error line numbers, limits on hostile templates, loading from a
 *    model directory, rendering from many threads.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/fileio.h"
#include "core/json.h"
#include "model/chat_template.h"
#include "model/tokenizer.h"
#include "qtest.h"

#define CHAT QVLM_FIXTURES "/chat/"

/* ==== helpers =================================================================================== */

static json_t *load_json(const char *path) {
    json_t *j = NULL;
    qvlm_error err;
    if (qvlm_json_load_file(path, 64u << 20, &j, &err) != QVLM_OK) fprintf(stderr, "  %s\n", err.msg);
    return j;
}

static qvlm_chat_template *load_template_file(const char *path) {
    char *src;
    size_t n;
    qvlm_error err;
    qvlm_chat_template *t = NULL;
    if (qvlm_file_read(path, 1 << 20, &src, &n, &err) != QVLM_OK) return NULL;
    if (qvlm_chat_template_parse(src, n, path, &t, &err) != QVLM_OK) fprintf(stderr, "  %s\n", err.msg);
    free(src);
    return t;
}

/* Parse `src` as template "t" and render it with the JSON context text `ctx`. */
static qvlm_status render(const char *src, const char *ctx, const qvlm_chat_template_limits *lim, char **out,
                          qvlm_error *err) {
    qvlm_chat_template *t;
    *out = NULL;
    err->msg[0] = '\0';
    qvlm_status rc = qvlm_chat_template_parse(src, strlen(src), "t", &t, err);
    if (rc) return rc;
    if (lim) qvlm_chat_template_set_limits(t, lim);
    json_t *c = json_loads(ctx ? ctx : "{}", 0, NULL);
    rc = c ? qvlm_chat_template_render(t, c, out, NULL, err) : QVLM_E_INVALID;
    json_decref(c);
    qvlm_chat_template_destroy(t);
    return rc;
}

/* The render context gen_chat.py gave apply_chat_template: messages, tools,
 * add_generation_prompt and kwargs, plus the tokenizer's special tokens map. */
static json_t *reference_context(const json_t *c) {
    json_t *ctx = json_deep_copy(json_object_get(c, "kwargs"));
    json_object_set(ctx, "messages", json_object_get(c, "messages"));
    json_object_set(ctx, "tools", json_object_get(c, "tools"));
    json_object_set(ctx, "add_generation_prompt", json_object_get(c, "add_generation_prompt"));
    json_object_set_new(ctx, "eos_token", json_string("<|im_end|>"));
    json_object_set_new(ctx, "pad_token", json_string("<|endoftext|>"));
    return ctx;
}

static qvlm_tokenizer *ref_tokenizer;

/* 0 when case `c` renders as the reference says; prints what differs otherwise. */
static int check_reference_case(const qvlm_chat_template *t, const json_t *c) {
    const char *name = json_string_value(json_object_get(c, "name"));
    const json_t *want = json_object_get(c, "rendered"), *want_err = json_object_get(c, "error");
    json_t *ctx = reference_context(c);
    char *out = NULL;
    size_t n = 0;
    qvlm_error err = {0};
    qvlm_status rc = qvlm_chat_template_render(t, ctx, &out, &n, &err);
    int bad = 0;
    if (want &&
        (rc != QVLM_OK || n != json_string_length(want) || memcmp(out, json_string_value(want), n) != 0)) {
        fprintf(stderr, "  case %s: rc %d (%s)\n    got      %s\n    expected %s\n", name, rc, err.msg,
                out ? out : "(null)", json_string_value(want));
        bad = 1;
    }
    if (want_err && (rc != QVLM_E_INVALID || strcmp(err.msg, json_string_value(want_err)) != 0)) {
        fprintf(stderr, "  case %s: rc %d, message \"%s\", expected error \"%s\"\n", name, rc, err.msg,
                json_string_value(want_err));
        bad = 1;
    }
    /* The rendered prompt tokenizes to the reference ids (gen_chat.py tokenized it with the
     * fixtures' tokenizer, the one in tiny-dense/model). */
    const json_t *want_ids = json_object_get(c, "ids");
    if (want_ids && out) {
        int32_t *ids = NULL;
        size_t n_ids = 0;
        qvlm_error terr = {0};
        qvlm_status trc = ref_tokenizer ? qvlm_tokenizer_encode(ref_tokenizer, out, n, &ids, &n_ids, &terr) : QVLM_E_IO;
        bool same = trc == QVLM_OK && n_ids == json_array_size(want_ids);
        for (size_t k = 0; same && k < n_ids; k++) same = ids[k] == json_integer_value(json_array_get(want_ids, k));
        if (!same) {
            fprintf(stderr, "  case %s: tokenization differs from the reference ids (%s)\n", name, terr.msg);
            bad = 1;
        }
        free(ids);
    }
    free(out);
    json_decref(ctx);
    return bad;
}

static void check_reference_file(const char *ref, const char *tmpl, int *n_cases, int *n_bad) {
    json_t *cases = load_json(ref);
    qvlm_chat_template *t = load_template_file(tmpl);
    *n_cases = *n_bad = 0;
    size_t i;
    const json_t *c;
    if (t && json_is_array(cases)) json_array_foreach(cases, i, c) {
            (*n_cases)++;
            *n_bad += check_reference_case(t, c);
        }
    qvlm_chat_template_destroy(t);
    json_decref(cases);
}

/* ==== 1. reference prompts ====================================================================== */

static void test_reference_qwen3_5(void) {
    int n, bad;
    check_reference_file(CHAT "chat_reference_qwen3_5.json", CHAT "qwen3_5.jinja", &n, &bad);
    ASSERT_EQ_INT(n, 15);
    ASSERT_EQ_INT(bad, 0);
}

static void test_reference_qwen3(void) {
    int n, bad;
    check_reference_file(CHAT "chat_reference_qwen3.json", CHAT "qwen3.jinja", &n, &bad);
    ASSERT_EQ_INT(n, 15);
    ASSERT_EQ_INT(bad, 0);
}

/* The tiny model's own template is the Qwen3.5 one, found through load_dir. */
static void test_load_dir_tiny_dense(void) {
    qvlm_chat_template *t;
    qvlm_error err;
    ASSERT_OK(qvlm_chat_template_load_dir(QVLM_FIXTURES "/tiny-dense/model", &t, &err), &err);
    json_t *cases = load_json(CHAT "chat_reference_qwen3_5.json");
    int bad = 0;
    size_t i;
    const json_t *c;
    json_array_foreach(cases, i, c) bad += check_reference_case(t, c);
    json_decref(cases);
    qvlm_chat_template_destroy(t);
    ASSERT_EQ_INT(bad, 0);
}

/* ==== 2. interpreter cases from jinja2 ========================================================== */

static int check_jinja_case(const json_t *c) {
    const char *name = json_string_value(json_object_get(c, "name"));
    const char *src = json_string_value(json_object_get(c, "template"));
    const json_t *want = json_object_get(c, "rendered");
    const char *want_err = json_string_value(json_object_get(c, "error"));
    const char *kind = json_string_value(json_object_get(c, "error_kind"));
    qvlm_chat_template *t = NULL;
    qvlm_error err = {0};
    char *out = NULL;
    size_t n = 0;
    qvlm_status rc = qvlm_chat_template_parse(src, strlen(src), name, &t, &err);
    if (rc == QVLM_OK) rc = qvlm_chat_template_render(t, json_object_get(c, "context"), &out, &n, &err);
    qvlm_chat_template_destroy(t);
    int bad = 0;
    if (want) {
        bad = rc != QVLM_OK || n != json_string_length(want) || memcmp(out, json_string_value(want), n) != 0;
        if (bad)
            fprintf(stderr, "  case %s: rc %d (%s)\n    got      [%s]\n    expected [%s]\n", name, rc,
                    err.msg, out ? out : "", json_string_value(want));
    } else if (strcmp(kind, "runtime") == 0) {
        bad = (rc != QVLM_E_INVALID && rc != QVLM_E_LIMIT) || strcmp(err.msg, want_err) != 0;
        if (bad)
            fprintf(stderr, "  case %s: rc %d \"%s\", expected error \"%s\"\n", name, rc, err.msg, want_err);
    } else { /* syntax / unsupported: refused with a located message */
        char where[128];
        snprintf(where, sizeof(where), "%s:", name);
        bad = rc == QVLM_OK || rc == QVLM_E_INVALID || strncmp(err.msg, where, strlen(where)) != 0;
        if (bad) fprintf(stderr, "  case %s: rc %d \"%s\", expected a %s error\n", name, rc, err.msg, kind);
    }
    free(out);
    return bad;
}

static void test_jinja_cases(void) {
    json_t *cases = load_json(CHAT "jinja_cases.json");
    ASSERT_TRUE(json_is_array(cases));
    int bad = 0;
    size_t i;
    const json_t *c;
    json_array_foreach(cases, i, c) bad += check_jinja_case(c);
    size_t n = json_array_size(cases);
    json_decref(cases);
    ASSERT_TRUE(n >= 200);
    ASSERT_EQ_INT(bad, 0);
}

/* ==== 3. qvlm-only behaviour ==================================================================== */

static void test_raise_exception_message(void) {
    char *out;
    qvlm_error err;
    ASSERT_FAILS(
        render("line one\n{{ raise_exception('Bad request: ' ~ n) }}", "{\"n\": 3}", NULL, &out, &err),
        QVLM_E_INVALID, &err, "");
    ASSERT_STR_EQ(err.msg, "Bad request: 3");
    ASSERT_TRUE(out == NULL);
}

static void test_errors_carry_line_numbers(void) {
    char *out;
    qvlm_error err;
    ASSERT_FAILS(render("a\nb\n{{ x | nosuch }}", NULL, NULL, &out, &err), QVLM_E_UNSUPPORTED, &err,
                 "t:3: no filter named 'nosuch'");
    ASSERT_FAILS(render("a\n{% if x is nosuch %}{% endif %}", NULL, NULL, &out, &err), QVLM_E_UNSUPPORTED,
                 &err, "t:2: no test named 'nosuch'");
    ASSERT_FAILS(render("\n\n\n{% frob %}", NULL, NULL, &out, &err), QVLM_E_CORRUPT, &err,
                 "t:4: Encountered unknown tag 'frob'.");
    ASSERT_FAILS(render("x\n{% include 'other.jinja' %}", NULL, NULL, &out, &err), QVLM_E_UNSUPPORTED, &err,
                 "t:2: tag 'include' is not supported");
    ASSERT_FAILS(render("{{ x|groupby('a') }}", NULL, NULL, &out, &err), QVLM_E_UNSUPPORTED, &err,
                 "t:1: filter 'groupby' is not supported");
    ASSERT_FAILS(render("{% for x in y %}\n{% if x %}\n", NULL, NULL, &out, &err), QVLM_E_CORRUPT, &err,
                 "The innermost block that needs to be closed is 'if'");
    ASSERT_FAILS(render("ok\n{{ 1 +* 2 }}", NULL, NULL, &out, &err), QVLM_E_CORRUPT, &err,
                 "t:2: unexpected '*'");
    ASSERT_FAILS(render("ok\n\n{{ 1 ! 2 }}", NULL, NULL, &out, &err), QVLM_E_CORRUPT, &err,
                 "t:3: unexpected char '!'");
    ASSERT_FAILS(render("{# a\nb\n", NULL, NULL, &out, &err), QVLM_E_CORRUPT, &err,
                 "t:1: Missing end of comment tag");
    ASSERT_FAILS(render("{% for x in y recursive %}{% endfor %}", NULL, NULL, &out, &err), QVLM_E_UNSUPPORTED,
                 &err, "recursive for loops are not supported");
    /* inside an if, Jinja only fails when the filter is reached */
    ASSERT_FAILS(render("{% if true %}\n{{ 1 | nosuch }}{% endif %}", NULL, NULL, &out, &err),
                 QVLM_E_UNSUPPORTED, &err, "t:2: no filter named 'nosuch'");
    ASSERT_FAILS(render("bad \xff utf-8", NULL, NULL, &out, &err), QVLM_E_CORRUPT, &err, "not valid UTF-8");
}

static void test_python_values(void) {
    char *out;
    qvlm_error err;
    /* NUL bytes from the JSON context survive; the length is reported. */
    qvlm_chat_template *t;
    ASSERT_OK(qvlm_chat_template_parse("[{{ s }}]", 9, "t", &t, &err), &err);
    json_t *ctx = json_pack("{s:s#}", "s", "a\0b", (size_t)3);
    size_t n;
    ASSERT_OK(qvlm_chat_template_render(t, ctx, &out, &n, &err), &err);
    ASSERT_EQ_INT(n, 5);
    ASSERT_TRUE(memcmp(out, "[a\0b]", 5) == 0);
    free(out);
    json_decref(ctx);
    qvlm_chat_template_destroy(t);
    /* integers print exactly at the int64 edges; overflow is refused, never wrapped */
    ASSERT_OK(render("{{ big }} {{ -big - 1 }} {{ big|tojson }}", "{\"big\": 9223372036854775807}", NULL,
                     &out, &err),
              &err);
    ASSERT_STR_EQ(out, "9223372036854775807 -9223372036854775808 9223372036854775807");
    free(out);
    ASSERT_FAILS(render("{{ big + 1 }}", "{\"big\": 9223372036854775807}", NULL, &out, &err),
                 QVLM_E_UNSUPPORTED, &err, "integer overflow");
    /* transformers' defaults: tools and documents are None, add_generation_prompt False */
    ASSERT_OK(render("{{ tools }} {{ documents is none }} {{ add_generation_prompt }} {{ tools is defined }}",
                     NULL, NULL, &out, &err),
              &err);
    ASSERT_STR_EQ(out, "None True False True");
    free(out);
    ASSERT_OK(render("{{ tools|length }}", "{\"tools\": [1, 2]}", NULL, &out, &err), &err);
    ASSERT_STR_EQ(out, "2");
    free(out);
}

static void test_context_must_be_object(void) {
    qvlm_chat_template *t;
    qvlm_error err;
    char *out = (char *)1;
    ASSERT_OK(qvlm_chat_template_parse("x", 1, NULL, &t, &err), &err);
    json_t *arr = json_array();
    ASSERT_FAILS(qvlm_chat_template_render(t, arr, &out, NULL, &err), QVLM_E_INVALID, &err,
                 "must be a JSON object");
    ASSERT_TRUE(out == NULL);
    /* err may be NULL in the public API */
    ASSERT_EQ_INT(qvlm_chat_template_render(t, arr, &out, NULL, NULL), QVLM_E_INVALID);
    json_t *obj = json_object();
    ASSERT_EQ_INT(qvlm_chat_template_render(t, obj, &out, NULL, NULL), QVLM_OK);
    ASSERT_STR_EQ(out, "x");
    free(out);
    json_decref(obj);
    json_decref(arr);
    qvlm_chat_template_destroy(t);
    qvlm_chat_template_destroy(NULL);
}

/* ---- limits: hostile templates stop with QVLM_E_LIMIT ---- */

static void test_limit_steps(void) {
    char *out;
    qvlm_error err;
    qvlm_chat_template_limits lim;
    qvlm_chat_template_default_limits(&lim);
    lim.max_steps = 100000;
    const char *spin = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    ASSERT_FAILS(render(spin, NULL, &lim, &out, &err), QVLM_E_LIMIT, &err,
                 "t:1: template evaluation exceeds 100000 steps");
    /* quadratic string building is counted by the bytes it copies */
    const char *quad = "{% set ns = namespace(s='') %}{% for i in range(20000) %}{% set ns.s = ns.s ~ "
                       "'xxxxxxxxxx' %}{% endfor %}";
    lim.max_steps = 1000000;
    ASSERT_FAILS(render(quad, NULL, &lim, &out, &err), QVLM_E_LIMIT, &err, "steps");
}

/* With the default limits too, a 10^10-iteration loop ends (in about a second). */
static void test_limit_steps_default(void) {
    char *out;
    qvlm_error err;
    time_t start = time(NULL);
    ASSERT_FAILS(
        render("{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
               NULL, NULL, &out, &err),
        QVLM_E_LIMIT, &err, "steps");
    ASSERT_TRUE(time(NULL) - start < 120);
}

static void test_limit_recursion(void) {
    char *out;
    qvlm_error err;
    ASSERT_FAILS(render("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}\n{{ r(0) }}", NULL, NULL, &out, &err),
                 QVLM_E_LIMIT, &err, "recursion deeper than 400 levels");
    /* legitimate recursion well inside the bound still works */
    ASSERT_OK(render("{% macro r(n) %}{% if n %}{{ r(n - 1) }}.{% endif %}{% endmacro %}{{ r(30)|length }}",
                     NULL, NULL, &out, &err),
              &err);
    ASSERT_STR_EQ(out, "30");
    free(out);
    /* nesting in the source is bounded by the parser */
    char deep[4096];
    size_t k = 0;
    k += (size_t)snprintf(deep + k, sizeof(deep) - k, "{{ ");
    for (int i = 0; i < 1000; i++) deep[k++] = '(';
    deep[k++] = '1';
    for (int i = 0; i < 1000; i++) deep[k++] = ')';
    snprintf(deep + k, sizeof(deep) - k, " }}");
    ASSERT_FAILS(render(deep, NULL, NULL, &out, &err), QVLM_E_LIMIT, &err, "nested deeper than");
}

static void test_limit_output(void) {
    char *out;
    qvlm_error err;
    qvlm_chat_template_limits lim;
    qvlm_chat_template_default_limits(&lim);
    lim.max_output_bytes = 1 << 20;
    ASSERT_FAILS(render("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", NULL, &lim, &out, &err),
                 QVLM_E_LIMIT, &err, "rendered text exceeds 1048576 bytes");
    ASSERT_OK(render("{% for i in range(1000) %}{{ 'x' * 100 }}{% endfor %}", NULL, &lim, &out, &err), &err);
    ASSERT_EQ_INT(strlen(out), 100000);
    free(out);
}

static void test_limit_memory(void) {
    char *out;
    qvlm_error err;
    qvlm_chat_template_limits lim;
    qvlm_chat_template_default_limits(&lim);
    lim.max_memory_bytes = 8 << 20;
    ASSERT_FAILS(
        render(
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            NULL, &lim, &out, &err),
        QVLM_E_LIMIT, &err, "memory");
    ASSERT_FAILS(render("{{ 'x' * 1000000000000 }}", NULL, &lim, &out, &err), QVLM_E_LIMIT, &err,
                 "memory limit");
    ASSERT_FAILS(render("{{ [1, 2] * 1000000000 }}", NULL, &lim, &out, &err), QVLM_E_LIMIT, &err,
                 "memory limit");
    ASSERT_FAILS(render("{{ range(1000000)|list }}", NULL, &lim, &out, &err), QVLM_E_LIMIT, &err,
                 "MAX_RANGE");
}

/* Values nested by a loop: printing them stops at the nesting bound, freeing them does not
 * recurse, and reference cycles through namespaces do not leak (LeakSanitizer checks). */
static void test_deep_and_cyclic_values(void) {
    char *out;
    qvlm_error err;
    const char *deep =
        "{% set ns = namespace(x=[]) %}{% for i in range(5000) %}{% set ns.x = [ns.x] %}{% endfor %}";
    ASSERT_OK(render(deep, NULL, NULL, &out, &err), &err);
    ASSERT_STR_EQ(out, "");
    free(out);
    char with_print[256];
    snprintf(with_print, sizeof(with_print), "%s{{ ns.x }}", deep);
    ASSERT_FAILS(render(with_print, NULL, NULL, &out, &err), QVLM_E_LIMIT, &err,
                 "nested deeper than 512 levels");
    ASSERT_OK(render("{% set ns = namespace() %}{% set ns.me = ns %}{% set ns.l = [ns, ns] %}"
                     "{% macro m() %}{{ ns.l|length }}{% endmacro %}{% set ns.m = m %}{{ ns.m() }}",
                     NULL, NULL, &out, &err),
              &err);
    ASSERT_STR_EQ(out, "2");
    free(out);
    ASSERT_FAILS(render("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}", NULL, NULL, &out, &err),
                 QVLM_E_LIMIT, &err, "nested deeper");
}

/* Fault injection (SQLite faultsim style): raise the memory limit, then the step limit, from
 * almost nothing until the render succeeds. Every failure on the way must be QVLM_E_LIMIT with
 * no output, and (under LeakSanitizer) must free everything it built; the first success must
 * give the reference text. The memory limit trips at every accounted allocation. */
static int sweep_limits(qvlm_chat_template *t, const json_t *ctx, const char *want, int which) {
    qvlm_chat_template_limits lim;
    int failures = 0, attempts = 0;
    for (double x = 64; attempts < 2000; x = x * 1.03 + 1, attempts++) {
        qvlm_chat_template_default_limits(&lim);
        if (which == 0)
            lim.max_memory_bytes = (size_t)x;
        else
            lim.max_steps = (uint64_t)x;
        qvlm_chat_template_set_limits(t, &lim);
        char *out = NULL;
        qvlm_error err = {0};
        qvlm_status rc = qvlm_chat_template_render(t, ctx, &out, NULL, &err);
        if (rc == QVLM_OK) {
            failures += strcmp(out, want) != 0;
            free(out);
            return failures;
        }
        if (rc != QVLM_E_LIMIT || out) {
            fprintf(stderr, "  limit %.0f: rc %d (%s)\n", x, rc, err.msg);
            failures++;
        }
    }
    return failures + 1; /* never succeeded */
}

static void test_fault_injection(void) {
    json_t *cases = load_json(CHAT "chat_reference_qwen3_5.json");
    qvlm_chat_template *t = load_template_file(CHAT "qwen3_5.jinja");
    ASSERT_TRUE(t && cases);
    int failures = 0;
    size_t i;
    const json_t *c;
    json_array_foreach(cases, i, c) {
        const char *want = json_string_value(json_object_get(c, "rendered"));
        if (!want) continue;
        json_t *ctx = reference_context(c);
        failures += sweep_limits(t, ctx, want, 0) + sweep_limits(t, ctx, want, 1);
        json_decref(ctx);
    }
    qvlm_chat_template_destroy(t);
    json_decref(cases);
    ASSERT_EQ_INT(failures, 0);
    /* the fuzz seed that uses most constructs, against the jinja2 output for it */
    json_t *jc = load_json(CHAT "jinja_cases.json");
    json_array_foreach(jc, i, c) {
        const char *want = json_string_value(json_object_get(c, "rendered"));
        const char *src = json_string_value(json_object_get(c, "template"));
        qvlm_error err;
        if (!want || qvlm_chat_template_parse(src, strlen(src), "t", &t, &err) != QVLM_OK) continue;
        failures += sweep_limits(t, json_object_get(c, "context"), want, 0);
        failures += sweep_limits(t, json_object_get(c, "context"), want, 1);
        qvlm_chat_template_destroy(t);
    }
    json_decref(jc);
    ASSERT_EQ_INT(failures, 0);
}

/* ---- loading ---- */

static void write_file(const char *dir, const char *name, const char *text) {
    char *path = qvlm_path_join(dir, name);
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    free(path);
}

static char *make_dir(const char *leaf) {
    mkdir(QVLM_TEST_TMP, 0755);
    char *dir = qvlm_path_join(QVLM_TEST_TMP, leaf);
    mkdir(dir, 0755);
    char *files[] = {"chat_template.jinja", "tokenizer_config.json"};
    for (int i = 0; i < 2; i++) {
        char *p = qvlm_path_join(dir, files[i]);
        remove(p);
        free(p);
    }
    return dir;
}

static qvlm_status render_dir(const char *dir, const char *ctx, char **out, qvlm_error *err) {
    qvlm_chat_template *t;
    *out = NULL;
    qvlm_status rc = qvlm_chat_template_load_dir(dir, &t, err);
    if (rc) return rc;
    json_t *c = json_loads(ctx, 0, NULL);
    rc = qvlm_chat_template_render(t, c, out, NULL, err);
    json_decref(c);
    qvlm_chat_template_destroy(t);
    return rc;
}

static void test_load_dir_tokenizer_config(void) {
    char *dir = make_dir("tpl_config"), *out;
    qvlm_error err;
    ASSERT_FAILS(render_dir(dir, "{}", &out, &err), QVLM_E_NOT_FOUND, &err, "no chat template");
    /* a string template, with special tokens (plain and AddedToken) as default variables */
    write_file(
        dir, "tokenizer_config.json",
        "{\"chat_template\": \"{{ bos_token }}{{ messages[0].content }}{{ eos_token }}\","
        " \"bos_token\": \"<s>\", \"eos_token\": {\"content\": \"</s>\", \"__type\": \"AddedToken\"}}");
    ASSERT_OK(render_dir(dir, "{\"messages\": [{\"content\": \"hi\"}]}", &out, &err), &err);
    ASSERT_STR_EQ(out, "<s>hi</s>");
    free(out);
    ASSERT_OK(render_dir(dir, "{\"messages\": [{\"content\": \"hi\"}], \"bos_token\": \"B\"}", &out, &err),
              &err);
    ASSERT_STR_EQ(out, "Bhi</s>");
    free(out);
    /* a list of named templates: "default" is used */
    write_file(dir, "tokenizer_config.json",
               "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, {\"name\": \"default\", "
               "\"template\": \"D\"}]}");
    ASSERT_OK(render_dir(dir, "{}", &out, &err), &err);
    ASSERT_STR_EQ(out, "D");
    free(out);
    write_file(dir, "tokenizer_config.json",
               "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}]}");
    ASSERT_FAILS(render_dir(dir, "{}", &out, &err), QVLM_E_NOT_FOUND, &err, "none named \"default\"");
    write_file(dir, "tokenizer_config.json", "{\"chat_template\": 5}");
    ASSERT_FAILS(render_dir(dir, "{}", &out, &err), QVLM_E_CORRUPT, &err, "must be a string or a list");
    write_file(dir, "tokenizer_config.json", "{\"chat_template\": \"{% if %}\"}");
    ASSERT_FAILS(render_dir(dir, "{}", &out, &err), QVLM_E_CORRUPT, &err, "tokenizer_config.json:1:");
    /* chat_template.jinja wins over tokenizer_config.json, whose tokens still apply */
    write_file(dir, "tokenizer_config.json", "{\"chat_template\": \"config\", \"eos_token\": \"E\"}");
    write_file(dir, "chat_template.jinja", "jinja {{ eos_token }}\n");
    ASSERT_OK(render_dir(dir, "{}", &out, &err), &err);
    ASSERT_STR_EQ(out, "jinja E");
    free(out);
    free(dir);
}

/* ---- threads: one parsed template, many renders at once ---- */

typedef struct render_job {
    const qvlm_chat_template *t;
    const json_t *ctx;
    const char *want;
    int failures;
} render_job;

static void *render_many(void *arg) {
    render_job *job = arg;
    for (int i = 0; i < 40; i++) {
        char *out = NULL;
        qvlm_error err;
        if (qvlm_chat_template_render(job->t, job->ctx, &out, NULL, &err) != QVLM_OK ||
            strcmp(out, job->want) != 0)
            job->failures++;
        free(out);
    }
    return NULL;
}

static void test_render_from_threads(void) {
    json_t *cases = load_json(CHAT "chat_reference_qwen3_5.json");
    qvlm_chat_template *t = load_template_file(CHAT "qwen3_5.jinja");
    ASSERT_TRUE(t && cases);
    render_job jobs[4];
    json_t *ctx[4];
    pthread_t th[4];
    for (int k = 0; k < 4; k++) {
        const json_t *c = json_array_get(cases, (size_t)(k * 3)); /* plain, image, multi-turn, tools */
        ctx[k] = reference_context(c);
        jobs[k] = (render_job){t, ctx[k], json_string_value(json_object_get(c, "rendered")), 0};
        ASSERT_TRUE(jobs[k].want != NULL);
    }
    for (int k = 0; k < 4; k++) pthread_create(&th[k], NULL, render_many, &jobs[k]);
    int failures = 0;
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        failures += jobs[k].failures;
        json_decref(ctx[k]);
    }
    qvlm_chat_template_destroy(t);
    json_decref(cases);
    ASSERT_EQ_INT(failures, 0);
}

int main(void) {
    qvlm_error terr;
    if (qvlm_tokenizer_load(QVLM_FIXTURES "/tiny-dense/model/tokenizer.json", &ref_tokenizer, &terr) != QVLM_OK) {
        fprintf(stderr, "tokenizer: %s\n", terr.msg);
        return 1;
    }
    RUN(test_reference_qwen3_5);
    RUN(test_reference_qwen3);
    RUN(test_load_dir_tiny_dense);
    RUN(test_jinja_cases);
    RUN(test_raise_exception_message);
    RUN(test_errors_carry_line_numbers);
    RUN(test_python_values);
    RUN(test_context_must_be_object);
    RUN(test_limit_steps);
    RUN(test_limit_steps_default);
    RUN(test_limit_recursion);
    RUN(test_limit_output);
    RUN(test_limit_memory);
    RUN(test_deep_and_cyclic_values);
    RUN(test_fault_injection);
    RUN(test_load_dir_tokenizer_config);
    RUN(test_render_from_threads);
    qvlm_tokenizer_destroy(ref_tokenizer);
    return qtest_done();
}
