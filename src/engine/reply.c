/* reply.c - the incremental reply parser (qvlm_reply_*, include/qvlm.h).
 *
 * Two stages, each holding back only what the next piece may change:
 *  1. stop strings: the raw text is cut at the first match; a tail that may begin a stop
 *     string waits;
 *  2. tags: a small state machine over THINK / ANSWER / TOOL. In THINK only </think> is a
 *     tag (and a <think> before any thinking, which models sometimes repeat); in ANSWER,
 *     <think> opens a thinking segment and <tool_call> a tool call; in TOOL, text gathers
 *     until </tool_call> and is then parsed (reply_tools.c). A tail that may begin a tag of
 *     the current state waits.
 * Whitespace at the edges of a thinking or answer segment is dropped: leading whitespace is
 * skipped, trailing whitespace waits and is written only when more text follows it.
 * Invariant: every byte pushed is in exactly one place: passed on (reasoning, content, tool
 * calls), held (stop tail, tag tail, trailing whitespace, tool block), or dropped as a tag,
 * edge whitespace, or at/after a stop match. */
#include <stdlib.h>
#include <string.h>

#include "core/strbuf.h"
#include "engine/reply.h"

#define TOOL_BLOCK_MAX_BYTES ((size_t)1 << 20) /* a longer "tool call" is garbage: pass it on */

enum mode { THINK, ANSWER, TOOL };

struct qvlm_reply {
    bool parse_tools;
    json_t *tools;            /* parsed tools_json, or NULL */
    char **stop;              /* [n_stop] non-empty copies */
    size_t n_stop;
    qvlm_buf raw;             /* text before the stop matcher's decision */
    qvlm_buf hold;            /* text past it, before the tag decision */
    enum mode mode;
    bool seg_start;           /* no text written in the current segment yet */
    qvlm_buf ws;              /* trailing whitespace of the segment, written only if text follows */
    qvlm_buf tool;            /* the block of an open <tool_call> */
    qvlm_buf reasoning, content;
    qvlm_tool_call *calls;    /* [n_calls], strings owned */
    int n_calls, cap_calls;
    bool stopped, finished;
    size_t mark_r, mark_c;    /* where this call's delta starts */
    int mark_calls;
};

/* ==== creation ================================================================================ */

static qvlm_status copy_stops(qvlm_reply *r, const qvlm_reply_options *o, qvlm_error *err) {
    r->stop = calloc(o->n_stop ? o->n_stop : 1, sizeof(*r->stop));
    if (!r->stop) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    for (size_t i = 0; i < o->n_stop; i++) {
        if (!o->stop[i] || !o->stop[i][0]) continue;
        if (!(r->stop[r->n_stop] = strdup(o->stop[i]))) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
        r->n_stop++;
    }
    return QVLM_OK;
}

qvlm_status qvlm_reply_create(const qvlm_reply_options *o, qvlm_reply **out, qvlm_error *err) {
    *out = NULL;
    qvlm_reply_options none = {0};
    if (!o) o = &none;
    qvlm_reply *r = calloc(1, sizeof(*r));
    if (!r) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    r->parse_tools = o->parse_tool_calls;
    r->mode = o->in_thinking ? THINK : ANSWER;
    r->seg_start = true;
    qvlm_status rc = copy_stops(r, o, err);
    if (!rc && o->tools_json) {
        json_error_t je;
        r->tools = json_loads(o->tools_json, 0, &je);
        if (!json_is_array(r->tools)) rc = qvlm_errorf(err, QVLM_E_INVALID, "tools: not a JSON array");
    }
    if (rc) {
        qvlm_reply_destroy(r);
        return rc;
    }
    *out = r;
    return QVLM_OK;
}

void qvlm_reply_destroy(qvlm_reply *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    json_decref(r->tools);
    for (int i = 0; i < r->n_calls; i++) free((char *)r->calls[i].name), free((char *)r->calls[i].arguments);
    free(r->calls);
    qvlm_buf *bufs[] = {&r->raw, &r->hold, &r->ws, &r->tool, &r->reasoning, &r->content};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) qvlm_buf_free(bufs[i]);
    free(r);
}

/* ==== writing segments ========================================================================= */

static bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* Text of the current THINK or ANSWER segment: edges trimmed as described at the top. */
static qvlm_status write_text(qvlm_reply *r, const char *p, size_t n, qvlm_error *err) {
    qvlm_buf *dst = r->mode == THINK ? &r->reasoning : &r->content;
    if (n == 0) return QVLM_OK;
    if (r->seg_start)
        while (n && is_ws(*p)) p++, n--;
    size_t body = n;
    while (body && is_ws(p[body - 1])) body--;
    qvlm_status rc = QVLM_OK;
    if (body) {
        rc = qvlm_buf_append(dst, r->ws.data, r->ws.len, err);
        if (!rc) rc = qvlm_buf_append(dst, p, body, err);
        if (rc) return rc;
        qvlm_buf_clear(&r->ws);
        r->seg_start = false;
    }
    if (!r->seg_start) rc = qvlm_buf_append(&r->ws, p + body, n - body, err);
    return rc;
}

/* A new segment begins (a tag was crossed): pending edge whitespace is dropped. */
static void new_segment(qvlm_reply *r, enum mode m) {
    r->mode = m;
    r->seg_start = true;
    qvlm_buf_clear(&r->ws);
}

static qvlm_status add_call(qvlm_reply *r, char *name, char *args, qvlm_error *err) {
    if (r->n_calls == r->cap_calls) {
        int cap = r->cap_calls ? 2 * r->cap_calls : 4;
        qvlm_tool_call *c = realloc(r->calls, (size_t)cap * sizeof(*c));
        if (!c) {
            free(name), free(args);
            return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
        }
        r->calls = c;
        r->cap_calls = cap;
    }
    r->calls[r->n_calls++] = (qvlm_tool_call){name, args};
    return QVLM_OK;
}

/* The tool block is complete (closed, or the reply ended): a call if it parses, and the
 * answer's trailing whitespace before it is dropped; else the block goes on as answer text
 * with its tags, so nothing is lost. */
static qvlm_status close_tool(qvlm_reply *r, bool closed, qvlm_error *err) {
    char *name, *args;
    qvlm_error perr;
    qvlm_status rc = reply_parse_tool_block(qvlm_buf_str(&r->tool), r->tool.len, r->tools, &name, &args, &perr);
    if (rc == QVLM_E_NOMEM) return qvlm_errorf(err, rc, "%s", perr.msg);
    if (rc == QVLM_OK) {
        new_segment(r, ANSWER);
        rc = add_call(r, name, args, err);
    } else {
        r->mode = ANSWER;
        rc = write_text(r, "<tool_call>", 11, err);
        if (!rc) rc = write_text(r, r->tool.data, r->tool.len, err);
        if (!rc && closed) rc = write_text(r, "</tool_call>", 12, err);
    }
    qvlm_buf_clear(&r->tool);
    return rc;
}

/* ==== the tag stage ============================================================================= */

typedef struct tag {
    const char *text;
    enum mode to;
} tag;

/* Tags recognised in the current state (at most 2). */
static int tags_now(const qvlm_reply *r, tag *t) {
    int n = 0;
    switch (r->mode) {
    case THINK:
        t[n++] = (tag){"</think>", ANSWER};
        if (r->seg_start) t[n++] = (tag){"<think>", THINK}; /* a repeated opening tag */
        break;
    case ANSWER:
        t[n++] = (tag){"<think>", THINK};
        if (r->parse_tools) t[n++] = (tag){"<tool_call>", TOOL};
        break;
    case TOOL: t[n++] = (tag){"</tool_call>", ANSWER}; break;
    }
    return n;
}

static bool only_ws(const char *p, const char *end) {
    for (; p < end; p++)
        if (!is_ws(*p)) return false;
    return true;
}

/* Length of the longest tail of s[0..n) that is a proper prefix of `lit`. */
static size_t partial_tail(const char *s, size_t n, const char *lit) {
    size_t L = strlen(lit);
    for (size_t k = L - 1 < n ? L - 1 : n; k > 0; k--)
        if (memcmp(s + n - k, lit, k) == 0) return k;
    return 0;
}

/* Text that is not a tag, for the current state. */
static qvlm_status pass_on(qvlm_reply *r, const char *p, size_t n, qvlm_error *err) {
    if (r->mode != TOOL) return write_text(r, p, n, err);
    qvlm_status rc = qvlm_buf_append(&r->tool, p, n, err);
    if (!rc && r->tool.len > TOOL_BLOCK_MAX_BYTES) rc = close_tool(r, false, err);
    return rc;
}

/* Decide as much of r->hold as the tags allow. */
static qvlm_status run_tags(qvlm_reply *r, qvlm_error *err) {
    qvlm_status rc = QVLM_OK;
    while (!rc && r->hold.len) {
        tag t[2];
        int nt = tags_now(r, t), best = -1;
        const char *at = NULL;
        for (int i = 0; i < nt; i++) {
            const char *f = memmem(r->hold.data, r->hold.len, t[i].text, strlen(t[i].text));
            if (f && r->mode == THINK && t[i].to == THINK && !only_ws(r->hold.data, f)) f = NULL; /* not at the start */
            if (f && (!at || f < at)) at = f, best = i;
        }
        if (!at) {
            size_t keep = 0;
            for (int i = 0; i < nt; i++) keep = QVLM_MAX(keep, partial_tail(r->hold.data, r->hold.len, t[i].text));
            rc = pass_on(r, r->hold.data, r->hold.len - keep, err);
            if (!rc) qvlm_buf_consume(&r->hold, r->hold.len - keep);
            return rc;
        }
        size_t before = (size_t)(at - r->hold.data);
        rc = pass_on(r, r->hold.data, before, err);
        if (rc) return rc;
        enum mode from = r->mode;
        qvlm_buf_consume(&r->hold, before + strlen(t[best].text));
        if (from == TOOL) {
            rc = close_tool(r, true, err);
        } else if (t[best].to == TOOL) {
            r->mode = TOOL; /* the answer's trailing whitespace waits: it is dropped only if the call parses */
        } else if (!(from == THINK && t[best].to == THINK)) {
            new_segment(r, t[best].to);
        }
    }
    return rc;
}

/* ==== the stop stage ============================================================================ */

/* Move what the stop strings allow from r->raw into the tag stage. */
static qvlm_status run_stops(qvlm_reply *r, bool final, qvlm_error *err) {
    const char *hit = NULL;
    for (size_t i = 0; i < r->n_stop; i++) {
        const char *f = memmem(r->raw.data, r->raw.len, r->stop[i], strlen(r->stop[i]));
        if (f && (!hit || f < hit)) hit = f;
    }
    size_t take = r->raw.len;
    if (hit) {
        take = (size_t)(hit - r->raw.data);
        r->stopped = true;
    } else if (!final) {
        size_t keep = 0;
        for (size_t i = 0; i < r->n_stop; i++) keep = QVLM_MAX(keep, partial_tail(r->raw.data, r->raw.len, r->stop[i]));
        take -= keep;
    }
    qvlm_status rc = qvlm_buf_append(&r->hold, r->raw.data, take, err);
    if (rc) return rc;
    if (hit) qvlm_buf_clear(&r->raw);
    else qvlm_buf_consume(&r->raw, take);
    return run_tags(r, err);
}

/* ==== the public calls =========================================================================== */

static void begin(qvlm_reply *r) {
    r->mark_r = r->reasoning.len;
    r->mark_c = r->content.len;
    r->mark_calls = r->n_calls;
}

static void delta(const qvlm_reply *r, qvlm_reply_delta *out) {
    *out = (qvlm_reply_delta){qvlm_buf_str(&r->reasoning) + r->mark_r,
                              r->reasoning.len - r->mark_r,
                              qvlm_buf_str(&r->content) + r->mark_c,
                              r->content.len - r->mark_c,
                              r->mark_calls,
                              r->n_calls - r->mark_calls,
                              r->stopped};
}

/* Held text is final: a tag tail is text, an open tool block is closed. */
static qvlm_status release(qvlm_reply *r, qvlm_error *err) {
    qvlm_status rc = run_stops(r, true, err);
    if (!rc && r->hold.len) rc = pass_on(r, r->hold.data, r->hold.len, err);
    qvlm_buf_clear(&r->hold);
    if (!rc && r->mode == TOOL) rc = close_tool(r, false, err);
    qvlm_buf_clear(&r->ws);
    r->finished = true;
    return rc;
}

qvlm_status qvlm_reply_push(qvlm_reply *r, const char *text, size_t n, qvlm_reply_delta *out, qvlm_error *err) {
    begin(r);
    qvlm_status rc = QVLM_OK;
    if (!r->stopped && !r->finished) {
        rc = qvlm_buf_append(&r->raw, text, n, err);
        if (!rc) rc = run_stops(r, false, err);
        if (!rc && r->stopped) rc = release(r, err);
    }
    delta(r, out);
    return rc;
}

qvlm_status qvlm_reply_finish(qvlm_reply *r, qvlm_reply_delta *out, qvlm_error *err) {
    begin(r);
    qvlm_status rc = r->finished ? QVLM_OK : release(r, err);
    delta(r, out);
    return rc;
}

const char *qvlm_reply_reasoning(const qvlm_reply *r, size_t *n) {
    if (n) *n = r->reasoning.len;
    return qvlm_buf_str(&r->reasoning);
}

const char *qvlm_reply_content(const qvlm_reply *r, size_t *n) {
    if (n) *n = r->content.len;
    return qvlm_buf_str(&r->content);
}

int qvlm_reply_tool_calls(const qvlm_reply *r, const qvlm_tool_call **calls) {
    *calls = r->calls;
    return r->n_calls;
}
