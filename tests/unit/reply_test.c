/* reply_test.c - the incremental reply parser: thinking apart from the answer, Qwen3.5 tool
 * calls to JSON, stop strings, and garbage (random-weight models) never crashes, never loses
 * text, and parses the same however the text is split into pieces. */
#include "qtest.h"
#include "qvlm.h"

/* A parse result gathered from all deltas, checked against the reply's own totals. */
typedef struct result {
    char reasoning[8192], content[8192];
    size_t n_r, n_c;
    char calls[8][2][1024];
    int n_calls;
    bool stopped;
} result;

static void gather(result *res, const qvlm_reply *r, const qvlm_reply_delta *d) {
    memcpy(res->reasoning + res->n_r, d->reasoning, d->n_reasoning);
    res->n_r += d->n_reasoning;
    memcpy(res->content + res->n_c, d->content, d->n_content);
    res->n_c += d->n_content;
    res->reasoning[res->n_r] = res->content[res->n_c] = 0;
    const qvlm_tool_call *c;
    int n = qvlm_reply_tool_calls(r, &c);
    for (int i = d->first_tool_call; i < d->first_tool_call + d->n_tool_calls && i < n && res->n_calls < 8; i++, res->n_calls++) {
        snprintf(res->calls[res->n_calls][0], 1024, "%s", c[i].name);
        snprintf(res->calls[res->n_calls][1], 1024, "%s", c[i].arguments);
    }
    res->stopped |= d->stopped;
}

/* Parse `text` fed in pieces cut at cuts[0..n_cuts) (ascending offsets). */
static int parse_split(const char *text, const size_t *cuts, int n_cuts, const qvlm_reply_options *o, result *res) {
    memset(res, 0, sizeof(*res));
    qvlm_reply *r;
    qvlm_error err;
    if (qvlm_reply_create(o, &r, &err)) return -1;
    qvlm_reply_delta d;
    size_t at = 0, n = strlen(text);
    for (int i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : n;
        if (qvlm_reply_push(r, text + at, end - at, &d, &err)) return -1;
        gather(res, r, &d);
        at = end;
    }
    if (qvlm_reply_finish(r, &d, &err)) return -1;
    gather(res, r, &d);
    size_t nr, nc;
    const char *R = qvlm_reply_reasoning(r, &nr), *C = qvlm_reply_content(r, &nc);
    int same = nr == res->n_r && nc == res->n_c && memcmp(R, res->reasoning, nr) == 0 && memcmp(C, res->content, nc) == 0;
    qvlm_reply_destroy(r);
    return same ? 0 : -2; /* the deltas add up to the totals */
}

static int parse(const char *text, const qvlm_reply_options *o, result *res) { return parse_split(text, NULL, 0, o, res); }

/* Byte by byte. */
static int parse_bytes(const char *text, const qvlm_reply_options *o, result *res) {
    size_t n = strlen(text);
    size_t *cuts = malloc((n + 1) * sizeof(*cuts));
    for (size_t i = 0; i < n; i++) cuts[i] = i + 1;
    int rc = parse_split(text, cuts, n ? (int)n - 1 : 0, o, res);
    free(cuts);
    return rc;
}

static bool same_result(const result *a, const result *b) {
    if (strcmp(a->reasoning, b->reasoning) || strcmp(a->content, b->content) || a->n_calls != b->n_calls ||
        a->stopped != b->stopped)
        return false;
    for (int i = 0; i < a->n_calls; i++)
        if (strcmp(a->calls[i][0], b->calls[i][0]) || strcmp(a->calls[i][1], b->calls[i][1])) return false;
    return true;
}

static const qvlm_reply_options THINKING = {.in_thinking = true, .parse_tool_calls = true};

static void test_thinking_then_answer(void) {
    result a, b;
    const char *t = "Let me see: 2+2.\n</think>\n\nThe answer is **4**.\n";
    ASSERT_EQ_INT(parse(t, &THINKING, &a), 0);
    ASSERT_STR_EQ(a.reasoning, "Let me see: 2+2.");
    ASSERT_STR_EQ(a.content, "The answer is **4**.");
    ASSERT_EQ_INT(a.n_calls, 0);
    ASSERT_EQ_INT(parse_bytes(t, &THINKING, &b), 0);
    ASSERT_TRUE(same_result(&a, &b));
    /* Thinking off: the prompt closed the block, a reply is all answer... */
    qvlm_reply_options off = {.parse_tool_calls = true};
    ASSERT_EQ_INT(parse("Hi there <b>bold</b>", &off, &a), 0);
    ASSERT_STR_EQ(a.content, "Hi there <b>bold</b>");
    ASSERT_STR_EQ(a.reasoning, "");
    /* ...unless the model opens one itself. */
    ASSERT_EQ_INT(parse_bytes("<think>\nhmm\n</think>\n\nok", &off, &a), 0);
    ASSERT_STR_EQ(a.reasoning, "hmm");
    ASSERT_STR_EQ(a.content, "ok");
    /* A repeated <think> right after the prompt's is not thinking text. */
    ASSERT_EQ_INT(parse("<think>\nreason</think>answer", &THINKING, &a), 0);
    ASSERT_STR_EQ(a.reasoning, "reason");
    ASSERT_STR_EQ(a.content, "answer");
    /* Unterminated thinking (max_tokens hit) stays thinking. */
    ASSERT_EQ_INT(parse_bytes("still thinking <", &THINKING, &a), 0);
    ASSERT_STR_EQ(a.reasoning, "still thinking <");
    ASSERT_STR_EQ(a.content, "");
}

/* Text that might start a tag is held back, and released as soon as it cannot. */
static void test_hold_back(void) {
    qvlm_reply *r;
    qvlm_error err;
    qvlm_reply_delta d;
    ASSERT_OK(qvlm_reply_create(&THINKING, &r, &err), &err);
    ASSERT_OK(qvlm_reply_push(r, "a </th", 6, &d, &err), &err);
    ASSERT_EQ_INT(d.n_reasoning, 1); /* "a"; " </th" waits */
    ASSERT_OK(qvlm_reply_push(r, "ey", 2, &d, &err), &err);
    ASSERT_EQ_INT(d.n_reasoning, 7);
    ASSERT_TRUE(memcmp(d.reasoning, " </they", 7) == 0);
    ASSERT_OK(qvlm_reply_push(r, "</think>\n\nX <tool_c", 19, &d, &err), &err);
    ASSERT_EQ_INT(d.n_content, 1);
    ASSERT_OK(qvlm_reply_finish(r, &d, &err), &err);
    ASSERT_EQ_INT(d.n_content, 8); /* " <tool_c" was text after all */
    size_t n;
    ASSERT_STR_EQ(qvlm_reply_content(r, &n), "X <tool_c");
    qvlm_reply_destroy(r);
}

static void test_tool_calls(void) {
    const char *tools = "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\","
                        "\"properties\":{\"city\":{\"type\":\"string\"},\"zip\":{\"type\":\"string\"},\"days\":{\"type\":\"integer\"}}}}}]";
    qvlm_reply_options o = {.in_thinking = true, .parse_tool_calls = true, .tools_json = tools};
    const char *t = "I should call the tool.\n</think>\n\nChecking.\n\n<tool_call>\n<function=get_weather>\n"
                    "<parameter=city>\nOslo\n</parameter>\n<parameter=zip>\n0150\n</parameter>\n<parameter=zip2>\n42\n</parameter>\n"
                    "<parameter=days>\n3\n</parameter>\n<parameter=opts>\n{\"unit\": \"c\", \"hours\": [1, 2]}\n</parameter>\n"
                    "<parameter=note>\nline one\nline two\n</parameter>\n</function>\n</tool_call>\n"
                    "<tool_call>\n<function=noop>\n</function>\n</tool_call>";
    result a, b;
    ASSERT_EQ_INT(parse(t, &o, &a), 0);
    ASSERT_STR_EQ(a.reasoning, "I should call the tool.");
    ASSERT_STR_EQ(a.content, "Checking.");
    ASSERT_EQ_INT(a.n_calls, 2);
    ASSERT_STR_EQ(a.calls[0][0], "get_weather");
    /* zip is a string in the schema (and 0150 is no JSON number anyway); zip2 is not in it. */
    ASSERT_STR_EQ(a.calls[0][1], "{\"city\":\"Oslo\",\"zip\":\"0150\",\"zip2\":42,\"days\":3,\"opts\":{\"unit\":\"c\",\"hours\":[1,2]},"
                                 "\"note\":\"line one\\nline two\"}");
    ASSERT_STR_EQ(a.calls[1][0], "noop");
    ASSERT_STR_EQ(a.calls[1][1], "{}");
    ASSERT_EQ_INT(parse_bytes(t, &o, &b), 0);
    ASSERT_TRUE(same_result(&a, &b));
    /* Sloppy but clear: a missing </parameter>, and the reply ending before </tool_call>. */
    qvlm_reply_options answer = {.parse_tool_calls = true};
    ASSERT_EQ_INT(parse("<tool_call>\n<function=f>\n<parameter=a>\ntrue\n<parameter=b>\nx y\n</function>", &answer, &a), 0);
    ASSERT_EQ_INT(a.n_calls, 1);
    ASSERT_STR_EQ(a.calls[0][1], "{\"a\":true,\"b\":\"x y\"}");
    /* Not parsed when the caller says so (tool_choice none). */
    qvlm_reply_options plain = {.in_thinking = false};
    ASSERT_EQ_INT(parse("<tool_call>\n<function=f>\n</function>\n</tool_call>", &plain, &a), 0);
    ASSERT_EQ_INT(a.n_calls, 0);
    ASSERT_STR_EQ(a.content, "<tool_call>\n<function=f>\n</function>\n</tool_call>");
}

static void test_garbled_tool_calls_are_text(void) {
    qvlm_reply_options o = {.parse_tool_calls = true};
    result a;
    const char *cases[][2] = {
        {"A <tool_call>\nnot a call\n</tool_call> B", "A <tool_call>\nnot a call\n</tool_call> B"},
        {"<tool_call><function=>x</function></tool_call>", "<tool_call><function=>x</function></tool_call>"},
        {"<tool_call>\n<function=f>\n</function>\ntrailing</tool_call>", "<tool_call>\n<function=f>\n</function>\ntrailing</tool_call>"},
        {"x<tool_call>\n<functio", "x<tool_call>\n<functio"},
        {"<tool_call>\n<function=a\nb>\n</function></tool_call>", "<tool_call>\n<function=a\nb>\n</function></tool_call>"},
        {"</tool_call></think>", "</tool_call></think>"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ASSERT_EQ_INT(parse(cases[i][0], &o, &a), 0);
        ASSERT_EQ_INT(a.n_calls, 0);
        ASSERT_STR_EQ(a.content, cases[i][1]);
    }
}

static void test_stop_strings(void) {
    const char *stops[] = {"STOP", "", "\n\nUser:"};
    qvlm_reply_options o = {.in_thinking = true, .parse_tool_calls = true, .stop = stops, .n_stop = 3};
    result a, b;
    const char *t = "think</think>Hello world. STOP more STOP";
    ASSERT_EQ_INT(parse(t, &o, &a), 0);
    ASSERT_STR_EQ(a.reasoning, "think");
    ASSERT_STR_EQ(a.content, "Hello world.");
    ASSERT_TRUE(a.stopped);
    ASSERT_EQ_INT(parse_bytes(t, &o, &b), 0);
    ASSERT_TRUE(same_result(&a, &b));
    /* A partial match is text in the end; nothing is pushed after a stop. */
    ASSERT_EQ_INT(parse_bytes("r</think>ans\n\nUser", &o, &a), 0);
    ASSERT_STR_EQ(a.content, "ans\n\nUser");
    ASSERT_TRUE(!a.stopped);
    qvlm_reply *r;
    qvlm_error err;
    qvlm_reply_delta d;
    ASSERT_OK(qvlm_reply_create(&o, &r, &err), &err);
    ASSERT_OK(qvlm_reply_push(r, "abST", 4, &d, &err), &err);
    ASSERT_EQ_INT(d.n_reasoning, 2);
    ASSERT_OK(qvlm_reply_push(r, "OPcd", 4, &d, &err), &err);
    ASSERT_TRUE(d.stopped);
    ASSERT_OK(qvlm_reply_push(r, "ef", 2, &d, &err), &err);
    ASSERT_EQ_INT(d.n_reasoning + d.n_content, 0);
    ASSERT_TRUE(d.stopped);
    size_t n;
    ASSERT_STR_EQ(qvlm_reply_reasoning(r, &n), "ab");
    qvlm_reply_destroy(r);
    /* Bad tools JSON is the caller's error. */
    qvlm_reply_options bad = {.tools_json = "{\"a\":1}"};
    ASSERT_FAILS(qvlm_reply_create(&bad, &r, &err), QVLM_E_INVALID, &err, "tools");
}

/* ---- garbage: random tag soup, as a random-weight model writes it ---------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next_rand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static size_t count_marks(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += *s == 'x' || *s == 'Z';
    return n;
}

static void test_garbage_never_loses_text(void) {
    static const char *atoms[] = {"<think>", "</think>", "<tool_call>", "</tool_call>", "<function=", "</function>",
                                  "<parameter=", "</parameter>", "x", "Z", " ", "\n", "<", ">", "/", "=", "\"", "{",
                                  "}", "1", "\xc3\xa9", "</thi", "<tool", "true"};
    const int n_atoms = (int)(sizeof(atoms) / sizeof(atoms[0]));
    char text[4096];
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = 0;
        int len = 1 + (int)(next_rand() % 120);
        for (int k = 0; k < len; k++) {
            const char *a = atoms[next_rand() % (uint32_t)n_atoms];
            memcpy(text + n, a, strlen(a));
            n += strlen(a);
        }
        text[n] = 0;
        /* Every third text also has stop strings (then only split invariance is checked). */
        static const char *stops[] = {"Zx\n", "</tool"};
        bool with_stops = iter % 3 == 0;
        qvlm_reply_options o = {.in_thinking = next_rand() % 2, .parse_tool_calls = true, .stop = stops,
                                .n_stop = with_stops ? 2 : 0};
        result one, split;
        ASSERT_EQ_INT(parse(text, &o, &one), 0);
        size_t cuts[16];
        int n_cuts = (int)(next_rand() % 16);
        for (int k = 0; k < n_cuts; k++) cuts[k] = next_rand() % (n + 1);
        for (int a = 0; a < n_cuts; a++) /* sort */
            for (int b = a + 1; b < n_cuts; b++)
                if (cuts[b] < cuts[a]) { size_t t = cuts[a]; cuts[a] = cuts[b]; cuts[b] = t; }
        ASSERT_EQ_INT(parse_split(text, cuts, n_cuts, &o, &split), 0);
        if (!same_result(&one, &split)) QTEST_FAIL("split changes the parse of:\n%s", text);
        if (with_stops) continue;
        /* Every 'x' and 'Z' reaches the reasoning, the answer or a tool call. */
        size_t got = count_marks(one.reasoning) + count_marks(one.content);
        for (int k = 0; k < one.n_calls; k++) got += count_marks(one.calls[k][0]) + count_marks(one.calls[k][1]);
        if (got != count_marks(text)) QTEST_FAIL("lost text (%zu of %zu marks) in:\n%s", got, count_marks(text), text);
    }
}

int main(void) {
    RUN(test_thinking_then_answer);
    RUN(test_hold_back);
    RUN(test_tool_calls);
    RUN(test_garbled_tool_calls_are_text);
    RUN(test_stop_strings);
    RUN(test_garbage_never_loses_text);
    return qtest_done();
}
