/* cli_gen.h - what `qvlm run` and `qvlm chat` share: generation options, loading the model
 * with a progress bar, and printing a streamed reply (thinking dimmed on a terminal, else on
 * stderr; the answer on stdout). */
#ifndef QVLM_CLI_GEN_H
#define QVLM_CLI_GEN_H

#include <stdbool.h>
#include <stdio.h>

#include "cli/cli_util.h"
#include "qvlm.h"

typedef struct cli_gen_opts {
    const char *model_dir;
    const char *system;   /* system prompt, or NULL */
    qvlm_sampling sampling;
    bool seed_given;
    int max_tokens;
    bool think;           /* --no-think turns it off */
    int64_t n_ctx;        /* 0: the model's trained context */
    qvlm_model_params model; /* --threads, --backend, --precision, --quant, --mmap */
    bool precision_set;
} cli_gen_opts;

void cli_gen_opts_default(cli_gen_opts *o);
/* Consume argv[*i] if it is one of the shared options (see CLI_GEN_HELP); sets *bad on a bad
 * value. */
bool cli_gen_opt(int argc, char **argv, int *i, cli_gen_opts *o, bool *bad);
#define CLI_GEN_HELP                                                                                   \
    "  -m, --model DIR       model directory (Hub layout, with tokenizer.json)\n"                     \
    "  --system TEXT         system prompt\n"                                                         \
    "  --no-think            answer without thinking (the template's enable_thinking=false)\n"        \
    "  --temperature T       sampling temperature, 0 = greedy (default 0.6)\n"                        \
    "  --top-k K, --top-p P, --min-p P   filters (default 20, 0.95, 0)\n"                             \
    "  --seed N              sampling seed (default: random)\n"                                       \
    "  --max-tokens N        most tokens to generate per answer (default 4096)\n"                     \
    "  --ctx N               context limit in tokens (default: the model's)\n" CLI_MODEL_HELP

/* Load the model (progress bar on a terminal). Prints the error and returns NULL on failure. */
qvlm_model *cli_load_model(const cli_gen_opts *o, bool progress);

/* A progress bar on stderr, drawn only on a terminal; `qvlm_progress_fn` compatible. */
typedef struct cli_progress {
    bool enabled;
    double last_ms;
    bool drawn;
    int64_t min_prefill; /* prefills shorter than this draw nothing */
} cli_progress;
void cli_progress_init(cli_progress *p, bool enabled);
void cli_progress_fn(void *user, const char *stage, int64_t done, int64_t total);
void cli_progress_clear(cli_progress *p);

/* Streams a reply's deltas to the terminal. */
typedef struct cli_printer {
    const qvlm_reply *reply; /* borrowed: for the tool calls */
    bool tty;            /* stdout is a terminal: thinking dimmed on stdout; else on stderr */
    bool in_thinking;    /* the last thing printed was thinking */
    bool printed_any;
    bool thinking_open;  /* non-tty: thinking printed to stderr without its final newline */
} cli_printer;
void cli_printer_init(cli_printer *p, const qvlm_reply *reply);
int cli_printer_delta(void *user, const qvlm_reply_delta *d); /* qvlm_reply_fn */
void cli_printer_end(cli_printer *p);

/* The reply's messages entry: {"role":"assistant","content":..., "reasoning_content":...,
 * "tool_calls":[...]}. NULL on allocation failure. */
struct json_t;
struct json_t *cli_assistant_message(const qvlm_reply *r);

/* A random 64-bit seed (libsodium). */
uint64_t cli_random_seed(void);
double cli_now_ms(void);

#endif /* QVLM_CLI_GEN_H */
