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

static void bad_choice(const char *opt, const char *v, const char *choices, bool *bad) {
    fprintf(stderr, "qvlm: %s %s: expected one of %s\n", opt, v, choices);
    *bad = true;
}

bool cli_model_opt(int argc, char **argv, int *i, qvlm_model_params *p, bool *precision_set, bool *bad) {
    const char *v = NULL;
    if (cli_opt(argc, argv, i, "--threads", &v, bad)) {
        if (v) p->n_threads = (int)cli_int("--threads", v, 0, 1024, bad);
    } else if (cli_opt(argc, argv, i, "--backend", &v, bad)) {
        if (v && strcmp(v, "cpu") == 0) p->device = QVLM_DEVICE_CPU;
        else if (v && strcmp(v, "cuda") == 0) p->device = QVLM_DEVICE_CUDA;
        else if (v) bad_choice("--backend", v, "cpu, cuda", bad);
    } else if (cli_opt(argc, argv, i, "--precision", &v, bad)) {
        *precision_set = true;
        if (v && strcmp(v, "f32") == 0) p->precision = QVLM_PRECISION_F32;
        else if (v && strcmp(v, "bf16") == 0) p->precision = QVLM_PRECISION_BF16;
        else if (v) bad_choice("--precision", v, "f32, bf16", bad);
    } else if (cli_opt(argc, argv, i, "--quant", &v, bad)) {
        if (v && strcmp(v, "none") == 0) p->quant = QVLM_QUANT_NONE;
        else if (v && strcmp(v, "q8_0") == 0) p->quant = QVLM_QUANT_Q8_0;
        else if (v) bad_choice("--quant", v, "none, q8_0", bad);
    } else if (strcmp(argv[*i], "--mmap") == 0) {
        p->mmap_weights = true;
    } else {
        return false;
    }
    return true;
}

void cli_model_precision_default(qvlm_model_params *p, bool precision_set) {
    /* With --quant q8_0 the weights are ~100x coarser than bf16 activations: exact f32 products
     * would only cost speed (the CPU's int8 kernels need BF16 precision, kernels/cpu/cpu.h). */
    if (!precision_set)
        p->precision = p->device == QVLM_DEVICE_CUDA || p->quant != QVLM_QUANT_NONE ? QVLM_PRECISION_BF16
                                                                                   : QVLM_PRECISION_F32;
}

bool cli_cache_opt(int argc, char **argv, int *i, cli_cache_opts *o, bool *bad) {
    const char *v = NULL;
    if (cli_opt(argc, argv, i, "--cache-gb", &v, bad)) {
        if (v) o->gb = cli_num("--cache-gb", v, 0.001, 1 << 20, bad);
    } else if (cli_opt(argc, argv, i, "--cache-host-gb", &v, bad)) {
        if (v) o->host_gb = cli_num("--cache-host-gb", v, 0, 1 << 20, bad);
    } else if (cli_opt(argc, argv, i, "--cache-dir", &v, bad)) {
        o->dir = v;
    } else {
        return false;
    }
    return true;
}

qvlm_cache_config cli_cache_config(const cli_cache_opts *o, const qvlm_model_params *p) {
    const double host = o->host_gb >= 0 ? o->host_gb : p->device == QVLM_DEVICE_CUDA ? 4 * o->gb : 0;
    return (qvlm_cache_config){(size_t)(o->gb * (double)(1u << 30)), o->dir, 0, (size_t)(host * (double)(1u << 30))};
}
