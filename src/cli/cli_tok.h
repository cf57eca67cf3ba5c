/* cli_tok.h - helpers shared by the tokenizer commands (tokenize, detokenize, bench-tokenizer):
 * option parsing for --model/--tokenizer, opening the tokenizer, reading stdin, and a growable
 * output buffer that is written once (no partial lines on error). */
#ifndef QVLM_CLI_CLI_TOK_H
#define QVLM_CLI_CLI_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "model/tokenizer.h"

/* Open the tokenizer named by --tokenizer FILE, else DIR/tokenizer.json from --model DIR.
 * Prints the error (prefixed with `cmd`) and returns NULL on failure. */
qvlm_tokenizer *cli_tok_open(const char *cmd, const char *model_dir, const char *tokenizer_path);

/* Read all of f into a fresh NUL-terminated buffer (free()); false on error (printed). */
bool cli_read_all(const char *cmd, FILE *f, char **out, size_t *n_bytes);

/* Growable byte buffer. */
typedef struct cli_buf {
    char *p;
    size_t n, cap;
    bool failed; /* an allocation failed; further appends are dropped */
} cli_buf;

void cli_buf_add(cli_buf *b, const void *data, size_t n);
void cli_buf_printf(cli_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "[1,2,3]" */
void cli_buf_ids(cli_buf *b, const int32_t *ids, size_t n);
/* Write b to f and free it; false (printed) when writing failed or memory ran out. */
bool cli_buf_flush(const char *cmd, cli_buf *b, FILE *f);

/* A filter command's transform: all of stdin (in, n bytes, NUL-terminated, writable) into out;
 * false when it failed (printed). */
typedef bool (*cli_tok_transform)(const qvlm_tokenizer *tok, char *in, size_t n, bool jsonl, cli_buf *out);

/* main() of `qvlm CMD --model DIR [--tokenizer FILE] [--jsonl]`: parses the options, opens the
 * tokenizer, runs fn over stdin and writes its output only if it succeeded. Exit status: 0, 1
 * (failed), 2 (bad usage). */
int cli_tok_filter(int argc, char **argv, const char *cmd, const char *usage, cli_tok_transform fn);

#endif /* QVLM_CLI_CLI_TOK_H */
