/* cli_tok.c - helpers shared by the tokenizer commands (see cli_tok.h). */
#include "cli/cli_tok.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_util.h"
#include "core/fileio.h"

qvlm_tokenizer *cli_tok_open(const char *cmd, const char *model_dir, const char *tokenizer_path) {
    char *joined = NULL;
    if (!tokenizer_path) {
        if (!model_dir) {
            fprintf(stderr, "qvlm %s: --model DIR or --tokenizer FILE is required\n", cmd);
            return NULL;
        }
        tokenizer_path = joined = qvlm_path_join(model_dir, "tokenizer.json");
        if (!joined) {
            fprintf(stderr, "qvlm %s: out of memory\n", cmd);
            return NULL;
        }
    }
    qvlm_error err = {0};
    qvlm_tokenizer *tok;
    if (qvlm_tokenizer_load(tokenizer_path, &tok, &err) != QVLM_OK) {
        fprintf(stderr, "qvlm %s: %s\n", cmd, err.msg);
        tok = NULL;
    }
    free(joined);
    return tok;
}

bool cli_read_all(const char *cmd, FILE *f, char **out, size_t *n_bytes) {
    size_t cap = 1 << 16, n = 0;
    char *p = malloc(cap);
    while (p) {
        n += fread(p + n, 1, cap - n - 1, f);
        if (ferror(f)) break;
        if (feof(f)) {
            p[n] = '\0';
            *out = p;
            *n_bytes = n;
            return true;
        }
        char *q = cap < SIZE_MAX / 2 ? realloc(p, cap *= 2) : NULL;
        if (!q) break;
        p = q;
    }
    free(p);
    fprintf(stderr, "qvlm %s: cannot read input\n", cmd);
    return false;
}

void cli_buf_add(cli_buf *b, const void *data, size_t n) {
    if (b->failed) return;
    if (b->cap - b->n < n + 1) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->n < n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

void cli_buf_printf(cli_buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (k > 0) cli_buf_add(b, tmp, (size_t)k < sizeof(tmp) ? (size_t)k : sizeof(tmp) - 1);
}

void cli_buf_ids(cli_buf *b, const int32_t *ids, size_t n) {
    cli_buf_add(b, "[", 1);
    for (size_t i = 0; i < n; i++) cli_buf_printf(b, i ? ",%d" : "%d", (int)ids[i]);
    cli_buf_add(b, "]", 1);
}

bool cli_buf_flush(const char *cmd, cli_buf *b, FILE *f) {
    bool ok = !b->failed && fwrite(b->p, 1, b->n, f) == b->n && fflush(f) == 0;
    if (!ok) fprintf(stderr, "qvlm %s: %s\n", cmd, b->failed ? "out of memory" : "cannot write output");
    free(b->p);
    *b = (cli_buf){0};
    return ok;
}

int cli_tok_filter(int argc, char **argv, const char *cmd, const char *usage, cli_tok_transform fn) {
    const char *model = NULL, *path = NULL;
    bool jsonl = false, bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (cli_opt(argc, argv, &i, "--model", &model, &bad) || cli_opt(argc, argv, &i, "--tokenizer", &path, &bad))
            continue;
        if (strcmp(argv[i], "--jsonl") == 0) jsonl = true;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return fputs(usage, stdout), 0;
        else return fprintf(stderr, "qvlm %s: unknown option '%s'\n%s", cmd, argv[i], usage), 2;
    }
    if (bad) return 2;
    if (!model && !path) return fputs(usage, stderr), 2;
    qvlm_tokenizer *tok = cli_tok_open(cmd, model, path);
    if (!tok) return 1;
    char *in;
    size_t n;
    cli_buf out = {0};
    bool ok = cli_read_all(cmd, stdin, &in, &n);
    if (ok) {
        ok = fn(tok, in, n, jsonl, &out);
        free(in);
    }
    if (ok) ok = cli_buf_flush(cmd, &out, stdout);
    else free(out.p);
    qvlm_tokenizer_destroy(tok);
    return ok ? 0 : 1;
}
