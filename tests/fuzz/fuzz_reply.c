/* fuzz_reply.c - the reply parser on arbitrary generated text: the first byte picks the options
 * (thinking open, tool calls parsed, stop strings), the rest is fed whole and again in pieces
 * cut where the bytes say. Both must agree (the parse never depends on how the text streams
 * in); never a crash, a leak or a sanitizer report. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qvlm.h"

typedef struct out {
    char *r, *c, *calls;
    bool stopped;
} out;

static void run(const uint8_t *data, size_t size, const qvlm_reply_options *o, size_t piece, out *res) {
    qvlm_reply *r;
    qvlm_error err;
    if (qvlm_reply_create(o, &r, &err)) __builtin_trap();
    qvlm_reply_delta d;
    for (size_t at = 0; at < size; at += piece) {
        size_t n = size - at < piece ? size - at : piece;
        if (qvlm_reply_push(r, (const char *)data + at, n, &d, &err)) __builtin_trap();
        res->stopped |= d.stopped;
    }
    if (qvlm_reply_finish(r, &d, &err)) __builtin_trap();
    size_t nr, nc;
    const char *R = qvlm_reply_reasoning(r, &nr), *C = qvlm_reply_content(r, &nc);
    res->r = malloc(nr + 1), res->c = malloc(nc + 1);
    memcpy(res->r, R, nr + 1), memcpy(res->c, C, nc + 1);
    const qvlm_tool_call *calls;
    int n = qvlm_reply_tool_calls(r, &calls);
    size_t len = 1;
    for (int i = 0; i < n; i++) len += strlen(calls[i].name) + strlen(calls[i].arguments) + 2;
    res->calls = calloc(1, len);
    for (int i = 0; i < n; i++) strcat(strcat(strcat(strcat(res->calls, calls[i].name), "\n"), calls[i].arguments), "\n");
    qvlm_reply_destroy(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    static const char *stops[] = {"</tool", "\n\nUser:", "x"};
    qvlm_reply_options o = {.in_thinking = data[0] & 1, .parse_tool_calls = data[0] & 2, .stop = stops,
                            .n_stop = (data[0] >> 2) & 3};
    size_t piece = 1 + data[1] % 7;
    out a = {0}, b = {0};
    run(data + 2, size - 2, &o, size, &a);
    run(data + 2, size - 2, &o, piece, &b);
    if (strcmp(a.r, b.r) || strcmp(a.c, b.c) || strcmp(a.calls, b.calls) || a.stopped != b.stopped) __builtin_trap();
    free(a.r), free(a.c), free(a.calls), free(b.r), free(b.c), free(b.calls);
    return 0;
}
