/* cli_util.h - small helpers shared by the subcommands: option parsing and reporting. */
#ifndef QVLM_CLI_UTIL_H
#define QVLM_CLI_UTIL_H

#include <stdbool.h>
#include <stdint.h>

/* If argv[*i] is `name` (as "--name VALUE" or "--name=VALUE"), store VALUE, advance *i and
 * return true. A missing value prints an error and sets *bad. */
bool cli_opt(int argc, char **argv, int *i, const char *name, const char **value, bool *bad);
/* Parse an integer option value in [lo, hi]; prints an error and sets *bad on failure. */
int64_t cli_int(const char *opt, const char *v, int64_t lo, int64_t hi, bool *bad);
double cli_num(const char *opt, const char *v, double lo, double hi, bool *bad);
/* Report a value outside a fixed set of choices (a comma list) and set *bad. */
void cli_bad_choice(const char *opt, const char *v, const char *choices, bool *bad);

#endif
