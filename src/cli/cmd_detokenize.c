/* cmd_detokenize.c - `qvlm detokenize --model DIR [--tokenizer FILE] [--jsonl]`: a JSON array
 * of ids on stdin -> the text, as HF decode(ids, skip_special_tokens=False) gives it.
 * With --jsonl every input line is an array and every output line the text as a JSON string;
 * blank input lines are skipped. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_tok.h"
#include "cli/cli_util.h"
#include "cli/commands.h"

static const char USAGE[] =
    "usage: qvlm detokenize --model DIR [--tokenizer FILE] [--jsonl]\n"
    "  Reads a JSON array of token ids from stdin and prints the text.\n"
    "  --model DIR       model directory (uses DIR/tokenizer.json)\n"
    "  --tokenizer FILE  tokenizer.json to use instead\n"
    "  --jsonl           each input line is an array; print each text as a JSON string line\n";

/* JSON array of integer ids -> fresh int32 array. */
static bool read_ids(const json_t *arr, int32_t **ids, size_t *n, const char *where) {
    if (!json_is_array(arr)) {
        fprintf(stderr, "qvlm detokenize: %sinput is %s, not a JSON array of ids\n", where,
                arr ? "not an array" : "not valid JSON");
        return false;
    }
    *n = json_array_size(arr);
    *ids = malloc((*n + 1) * sizeof(**ids));
    if (!*ids) return fprintf(stderr, "qvlm detokenize: out of memory\n"), false;
    for (size_t i = 0; i < *n; i++) {
        const json_t *v = json_array_get(arr, i);
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
        if (!json_is_integer(v) || x < INT32_MIN || x > INT32_MAX) {
            fprintf(stderr, "qvlm detokenize: %sids[%zu] is not a 32-bit integer\n", where, i);
            free(*ids);
            return false;
        }
        (*ids)[i] = (int32_t)x;
    }
    return true;
}

static bool decode_into(const qvlm_tokenizer *tok, const json_t *arr, bool as_json, cli_buf *out,
                        const char *where) {
    int32_t *ids;
    size_t n;
    if (!read_ids(arr, &ids, &n, where)) return false;
    qvlm_error err = {0};
    char *text;
    size_t n_text;
    qvlm_status rc = qvlm_tokenizer_decode(tok, ids, n, &text, &n_text, &err);
    free(ids);
    if (rc) return fprintf(stderr, "qvlm detokenize: %s%s\n", where, err.msg), false;
    if (as_json) {
        json_t *s = json_stringn(text, n_text);
        char *js = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
        if (js) cli_buf_add(out, js, strlen(js)), cli_buf_add(out, "\n", 1);
        else out->failed = true;
        free(js);
        json_decref(s);
    } else {
        cli_buf_add(out, text, n_text);
    }
    free(text);
    return true;
}

static bool detokenize_lines(const qvlm_tokenizer *tok, const char *in, size_t n, cli_buf *out) {
    size_t line_no = 0;
    for (const char *p = in, *end = in + n; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        line_no++;
        if (strspn(p, " \t\r") < len) {
            char where[64];
            snprintf(where, sizeof(where), "line %zu: ", line_no);
            json_error_t je;
            json_t *arr = json_loadb(p, len, 0, &je);
            bool ok = decode_into(tok, arr, true, out, where);
            json_decref(arr);
            if (!ok) return false;
        }
        p += len + 1;
    }
    return true;
}

static bool detokenize(const qvlm_tokenizer *tok, char *in, size_t n, bool jsonl, cli_buf *out) {
    if (jsonl) return detokenize_lines(tok, in, n, out);
    json_error_t je;
    json_t *arr = json_loadb(in, n, 0, &je);
    bool ok = decode_into(tok, arr, false, out, "");
    json_decref(arr);
    return ok;
}

int qvlm_cmd_detokenize(int argc, char **argv) { return cli_tok_filter(argc, argv, "detokenize", USAGE, detokenize); }
