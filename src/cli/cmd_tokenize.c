/* cmd_tokenize.c - `qvlm tokenize --model DIR [--tokenizer FILE] [--jsonl]`: text on stdin ->
 * a JSON array of ids on stdout, as HF encode(text, add_special_tokens=False) gives them.
 * With --jsonl every input line is a JSON string and every output line an array; blank input
 * lines are skipped. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_tok.h"
#include "cli/cli_util.h"
#include "cli/commands.h"

static const char USAGE[] =
    "usage: qvlm tokenize --model DIR [--tokenizer FILE] [--jsonl]\n"
    "  Reads text from stdin and prints its token ids as a JSON array.\n"
    "  --model DIR       model directory (uses DIR/tokenizer.json)\n"
    "  --tokenizer FILE  tokenizer.json to use instead\n"
    "  --jsonl           each input line is a JSON string; print one array per line\n";

static bool encode_into(const qvlm_tokenizer *tok, const char *text, size_t n, cli_buf *out,
                        const char *where) {
    qvlm_error err = {0};
    int32_t *ids;
    size_t n_ids;
    if (qvlm_tokenizer_encode(tok, text, n, &ids, &n_ids, &err) != QVLM_OK) {
        fprintf(stderr, "qvlm tokenize: %s%s\n", where, err.msg);
        return false;
    }
    cli_buf_ids(out, ids, n_ids);
    cli_buf_add(out, "\n", 1);
    free(ids);
    return true;
}

static bool tokenize_lines(const qvlm_tokenizer *tok, char *in, size_t n, cli_buf *out) {
    size_t line_no = 0;
    for (char *p = in, *end = in + n; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        line_no++;
        char where[64];
        snprintf(where, sizeof(where), "line %zu: ", line_no);
        size_t k = strspn(p, " \t\r");
        if (k < len) {
            json_error_t je;
            json_t *s = json_loadb(p, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
            bool ok = json_is_string(s);
            if (!ok) fprintf(stderr, "qvlm tokenize: %sis not a JSON string%s%s\n", where, s ? "" : ": ", s ? "" : je.text);
            ok = ok && encode_into(tok, json_string_value(s), json_string_length(s), out, where);
            json_decref(s);
            if (!ok) return false;
        }
        p += len + 1;
    }
    return true;
}

static bool tokenize(const qvlm_tokenizer *tok, char *in, size_t n, bool jsonl, cli_buf *out) {
    return jsonl ? tokenize_lines(tok, in, n, out) : encode_into(tok, in, n, out, "");
}

int qvlm_cmd_tokenize(int argc, char **argv) { return cli_tok_filter(argc, argv, "tokenize", USAGE, tokenize); }
