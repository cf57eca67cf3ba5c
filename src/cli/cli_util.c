/* cli_util.c - option parsing helpers for the subcommands. */
#include "cli/cli_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool cli_opt(int argc, char **argv, int *i, const char *name, const char **value, bool *bad) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return false;
    if (a[n] == '=') {
        *value = a + n + 1;
        return true;
    }
    if (a[n] != '\0') return false;
    if (*i + 1 >= argc) {
        fprintf(stderr, "qvlm: option %s needs a value\n", name);
        *bad = true;
        return true;
    }
    *value = argv[++*i];
    return true;
}

int64_t cli_int(const char *opt, const char *v, int64_t lo, int64_t hi, bool *bad) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "qvlm: %s %s: expected an integer in %lld..%lld\n", opt, v, (long long)lo, (long long)hi);
        *bad = true;
        return lo;
    }
    return x;
}

double cli_num(const char *opt, const char *v, double lo, double hi, bool *bad) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || end == v || !(x >= lo && x <= hi)) {
        fprintf(stderr, "qvlm: %s %s: expected a number in %g..%g\n", opt, v, lo, hi);
        *bad = true;
        return lo;
    }
    return x;
}

void cli_bad_choice(const char *opt, const char *v, const char *choices, bool *bad) {
    fprintf(stderr, "qvlm: %s %s: expected one of %s\n", opt, v, choices);
    *bad = true;
}
