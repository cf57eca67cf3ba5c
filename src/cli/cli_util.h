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
/* Each backend's usual precision unless --precision was given: exact f32 on the CPU, bf16
 * products on a GPU or with quantised weights. */
void cli_model_precision_default(qvlm_model_params *p, bool precision_set);
/* Bytes of the cache's host-RAM tier: host_gb when given (>= 0), else 4 x cache_gb on a GPU
 * (whose cache_gb is device memory) and none on the CPU (whose cache is in host RAM already). */
size_t cli_cache_host_bytes(const qvlm_model_params *p, double host_gb, double cache_gb);

#endif
