/* cli_util.h - small helpers shared by the subcommands: option parsing and reporting. */
#ifndef QVLM_CLI_UTIL_H
#define QVLM_CLI_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "qvlm.h"

/* If argv[*i] is `name` (as "--name VALUE" or "--name=VALUE"), store VALUE, advance *i and
 * return true. A missing value prints an error and sets *bad. */
bool cli_opt(int argc, char **argv, int *i, const char *name, const char **value, bool *bad);
/* Parse an integer option value in [lo, hi]; prints an error and sets *bad on failure. */
int64_t cli_int(const char *opt, const char *v, int64_t lo, int64_t hi, bool *bad);
double cli_num(const char *opt, const char *v, double lo, double hi, bool *bad);
/* The options of every command that loads a model: --threads, --backend, --precision, --quant,
 * into p. Consumes argv[*i] when it is one of them (sets *bad on a bad value). */
bool cli_model_opt(int argc, char **argv, int *i, qvlm_model_params *p, bool *precision_set, bool *bad);
#define CLI_MODEL_HELP                                                                                      \
    "  --threads N           CPU threads (default: all cores)\n"                                              \
    "  --backend cpu|cuda    where the model runs (default cpu)\n"                                            \
    "  --precision f32|bf16  activations into the matrix products (default: bf16 on cuda or with --quant, else f32)\n" \
    "  --quant none|q8_0     quantise the text weights at load (cpu only; default none)\n"                        \
    "  --mmap                cpu: read the weights from the mapped files (faster load, slower decode)\n"
/* Each backend's usual precision unless --precision was given: exact f32 on the CPU, bf16
 * products on a GPU or with quantised weights. */
void cli_model_precision_default(qvlm_model_params *p, bool precision_set);
/* The cache options of chat, serve and bench: --cache-gb, --cache-host-gb, --cache-dir. */
typedef struct cli_cache_opts {
    double gb;      /* the command's default before parsing */
    double host_gb; /* < 0: the default, 4 x gb on a GPU (whose gb is device memory), none on the
                     * CPU (whose cache is in host RAM already) */
    const char *dir;
} cli_cache_opts;
#define CLI_CACHE_HELP                                                                                      \
    "  --cache-host-gb N     host RAM below the cache's memory for what it evicts (default:\n"               \
    "                        4 x --cache-gb with --backend cuda, whose cache is in device memory; 0 on cpu)\n"
/* Consumes argv[*i] when it is one of them (sets *bad on a bad value). */
bool cli_cache_opt(int argc, char **argv, int *i, cli_cache_opts *o, bool *bad);
/* The cache configuration for a model loaded with p. */
qvlm_cache_config cli_cache_config(const cli_cache_opts *o, const qvlm_model_params *p);

#endif
