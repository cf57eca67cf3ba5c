/* cmd_bench_matmul.c - `qvlm bench-matmul`: speed of the CPU matrix products next to their
 * bounds.
 *
 * GEMV (n = 1, decode) streams each weight once, so it is reported in GB/s of weights next to
 * the read bandwidth of the same bytes: the weights rotate over copies adding up to ~256 MB (8x
 * the L3), as in a decode step where a matrix was last read a whole token ago, and a plain
 * read of that same buffer (qvlm_cpu_read_probe, same threads) is timed right before, since
 * DRAM bandwidth on a shared host drifts. GEMM (n tokens, prefill and the vision tower) is
 * reported in GFLOP/s next to the peak of a register-only loop of the instruction the kernel
 * uses (vfmadd231ps or vdpbf16ps), times the thread count. memcpy bandwidth is printed too.
 * Each number is the best of several runs (the machine may be shared); the median is in --json.
 * On a shared machine wall time also counts the time other processes held our cores, so with
 * one thread each rate is also given per CPU second (the kernel's own speed); with several
 * threads CPU time misses pool wake-ups and spins, so that column is left out. The load
 * average is printed before and after.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"
#include "core/dtype.h"
#include "core/threads.h"
#include "kernels/cpu/cpu.h"

struct shape {
    const char *what;
    int64_t k, d;
    int gemm; /* also run as GEMM (lm_head: decode only) */
};

/* Qwen3.5-0.8B text (hidden 1024) and its vision tower (hidden 768). */
static const struct shape SHAPES[] = {
    {"attn q+gate / qkv", 1024, 6144, 1},
    {"deltanet qkv", 1024, 2048, 1},
    {"mlp gate, up", 1024, 3584, 1},
    {"o_proj", 1024, 1024, 1},
    {"deltanet a/b", 1024, 16, 1},
    {"mlp down", 3584, 1024, 1},
    {"deltanet out", 2048, 1024, 1},
    {"lm_head", 1024, 248320, 0},
    {"vit qkv", 768, 2304, 2},
    {"vit mlp up", 768, 3072, 2},
    {"vit proj", 768, 768, 2},
    {"vit mlp down", 3072, 768, 2},
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double load_avg(void) {
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1;
        fclose(f);
    }
    return l;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- bounds: memory bandwidth and peak FLOP/s ---------------------------------------------- */

struct bw_job {
    qvlm_isa isa;
    const uint64_t *src;
    uint64_t *dst;
    size_t n_words;
    uint64_t sums[64];
};

/* Each thread reads its slice as 4 sequential streams side by side with the widest loads, the
 * pattern of the decode kernels (one stream alone reaches ~30% less here). */
static void read_task(void *p, int ith, int nth) {
    struct bw_job *j = p;
    long r0, r1;
    qvlm_split_rows((long)(j->n_words / 32), ith, nth, &r0, &r1); /* 32 words: 4 streams x 64 B */
    j->sums[ith % 64] = qvlm_cpu_read_probe(j->isa, j->src + (size_t)r0 * 32, (size_t)(r1 - r0) * 256);
}

static void copy_task(void *p, int ith, int nth) {
    struct bw_job *j = p;
    long r0, r1;
    qvlm_split_rows((long)j->n_words, ith, nth, &r0, &r1);
    memcpy(j->dst + r0, j->src + r0, (size_t)(r1 - r0) * 8);
}

/* Best of 3 plain reads of buf (bytes) with the pool's threads, GB/s. */
static double read_bound(qvlm_pool *pool, qvlm_isa isa, const void *buf, size_t bytes) {
    struct bw_job j = {isa, buf, NULL, bytes / 8, {0}};
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t = now_s();
        qvlm_pool_run(pool, read_task, &j);
        double r = (double)(j.n_words / 32 * 256) / (now_s() - t) / 1e9;
        if (r > best) best = r;
    }
    return best;
}

/* Best of 5 runs, GB/s; copy counts the bytes read plus the bytes written (STREAM). read_cpu
 * divides by CPU time per thread instead of wall time (see the file comment). */
static void bandwidth(qvlm_pool *pool, qvlm_isa isa, double *read_gbs, double *read_cpu_gbs, double *copy_gbs) {
    size_t bytes = (size_t)256 << 20;
    uint64_t *a = aligned_alloc(64, bytes), *b = aligned_alloc(64, bytes);
    int nth = qvlm_pool_size(pool);
    *read_gbs = *read_cpu_gbs = *copy_gbs = 0;
    if (!a || !b) goto out;
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    struct bw_job j = {isa, a, b, bytes / 8, {0}};
    for (int rep = 0; rep < 5; rep++) {
        double c = cpu_s(), t = now_s();
        qvlm_pool_run(pool, read_task, &j);
        double r = bytes / (now_s() - t) / 1e9, rc = bytes / ((cpu_s() - c) / nth) / 1e9;
        t = now_s();
        qvlm_pool_run(pool, copy_task, &j);
        double cp = 2.0 * bytes / (now_s() - t) / 1e9;
        if (r > *read_gbs) *read_gbs = r;
        if (rc > *read_cpu_gbs) *read_cpu_gbs = rc;
        if (cp > *copy_gbs) *copy_gbs = cp;
    }
out:
    free(a);
    free(b);
}

struct peak_job {
    qvlm_isa isa;
    qvlm_precision prec;
    int64_t iters;
    double flops[64];
};

static void peak_task(void *p, int ith, int nth) {
    struct peak_job *j = p;
    j->flops[ith % 64] = qvlm_cpu_peak_probe(j->isa, j->prec, j->iters);
}

/* Peak GFLOP/s of all threads running the kernel's multiply-add back to back, per CPU second
 * (a register-only loop: the CPU time it gets is all it needs, even on a shared machine). */
static double peak_gflops(qvlm_pool *pool, qvlm_isa isa, qvlm_precision prec) {
    struct peak_job j = {isa, prec, isa == QVLM_ISA_SCALAR ? 2000000 : 20000000, {0}};
    double best = 0;
    int nth = qvlm_pool_size(pool);
    for (int rep = 0; rep < 3; rep++) {
        double c = cpu_s();
        qvlm_pool_run(pool, peak_task, &j);
        double dt = (cpu_s() - c) / nth, f = 0;
        for (int i = 0; i < nth && i < 64; i++) f += j.flops[i];
        if (f / dt / 1e9 > best) best = f / dt / 1e9;
    }
    return best;
}

/* ---- one measurement -------------------------------------------------------------------------- */

struct result {
    double best_s, median_s; /* wall */
    double best_cpu_s;       /* process CPU time / threads */
};

static void fill_weights(void *w, size_t bytes, qvlm_dtype wt, int64_t k) {
    uint16_t *h = w;
    uint32_t s = 12345;
    if (wt == QVLM_DTYPE_Q8_0) { /* valid blocks: a small half scale, int8 in [-127, 127] */
        uint8_t *b = w;
        for (size_t i = 0; i < bytes; i += 34) {
            qvlm_f16 d = qvlm_f32_to_f16(0.01f);
            memcpy(b + i, &d, 2);
            for (int q = 0; q < 32; q++) b[i + 2 + q] = (uint8_t)(int8_t)((int)((s = s * 1664525u + 1013904223u) >> 24) % 255 - 127);
        }
        return;
    }
    if (wt == QVLM_DTYPE_Q8_0X8) { /* int8 anywhere, then the 8 scales of each 272-byte block */
        uint8_t *b = w;
        for (size_t i = 0; i < bytes; i++) b[i] = (uint8_t)((s = s * 1664525u + 1013904223u) >> 24);
        qvlm_f16 d = qvlm_f32_to_f16(0.01f);
        for (size_t i = 0; i + 272 <= bytes; i += 272)
            for (int r = 0; r < 8; r++) memcpy(b + i + 2 * r, &d, 2);
        return;
    }
    (void)k;
    for (size_t i = 0; i < bytes / 2; i++) { /* bf16 / f16 values around +-0.01..1 */
        s = s * 1664525u + 1013904223u;
        h[i] = (uint16_t)((wt == QVLM_DTYPE_F16 ? 0x2000u : 0x3c00u) | (s >> 20 & 0x83ffu));
    }
}

/* One rep is a call (GEMM) or a pass over all weight copies (GEMV: ~256 MB, 8x the L3, so the
 * weights come from DRAM as in a decode step, where a matrix was last read a whole token ago).
 * Times are per call. */
static struct result time_matmul(const qvlm_cpu *cpu, float *y, const float *x, void *const *w, int n_copies,
                                 qvlm_dtype wt, int64_t n, int64_t k, int64_t d, void *work, double min_s) {
    double times[64], best_cpu = 1e30;
    int reps = 0;
    double total = 0;
    int nth = qvlm_pool_size(cpu->pool);
    for (int c = 0; c < n_copies; c++) qvlm_cpu_matmul(cpu, y, d, x, k, w[c], wt, NULL, n, k, d, work); /* warm-up */
    while (reps < 64 && (reps < 3 || total < min_s)) {
        double c0 = cpu_s(), t = now_s();
        for (int c = 0; c < n_copies; c++) qvlm_cpu_matmul(cpu, y, d, x, k, w[c], wt, NULL, n, k, d, work);
        times[reps] = (now_s() - t) / n_copies;
        double c1 = (cpu_s() - c0) / nth / n_copies;
        if (c1 < best_cpu) best_cpu = c1;
        total += times[reps++] * n_copies;
    }
    qsort(times, (size_t)reps, sizeof(double), cmp_double);
    return (struct result){times[0], times[reps / 2], best_cpu};
}

/* ---- the command ---------------------------------------------------------------------------------- */

static void cpu_model(char *out, size_t n) {
    snprintf(out, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon) {
            snprintf(out, n, "%s", colon + 2);
            out[strcspn(out, "\n")] = '\0';
            break;
        }
    }
    fclose(f);
}

static int usage(FILE *f) {
    fprintf(f, "usage: qvlm bench-matmul [--threads N] [--json] [--isa NAME|all] [--n TOKENS] [--dtype bf16|q8_0|q8_0x8|f16|f32]\n"
               "  --threads N  threads (default: all CPUs)\n"
               "  --json       one JSON document on stdout instead of the table\n"
               "  --isa        only this ISA (scalar, avx2, avx512, avx512bf16), or all of them\n"
               "               including the slow scalar reference (default: the SIMD ones this CPU has)\n"
               "  --n          tokens of the GEMM shapes (default 512; the scalar ISA uses at most 8)\n"
               "  --dtype      weight dtype (default bf16; q8_0x8: Q8_0 in the I8 kernels' panels, what --quant q8_0 loads at bf16)\n");
    return f == stdout ? 0 : 2;
}

int qvlm_cmd_bench_matmul(int argc, char **argv) {
    int threads = 0, as_json = 0, only_isa = -1, all_isas = 0;
    int64_t n_gemm = 512;
    qvlm_dtype wt = QVLM_DTYPE_BF16;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return usage(stdout);
        if (strcmp(a, "--json") == 0) {
            as_json = 1;
        } else if (strcmp(a, "--threads") == 0 && v) {
            threads = atoi(v), i++;
        } else if (strcmp(a, "--n") == 0 && v) {
            n_gemm = atoll(v), i++;
        } else if (strcmp(a, "--isa") == 0 && v) {
            i++;
            if (strcmp(v, "all") == 0) all_isas = 1;
            for (int s = QVLM_ISA_SCALAR; s <= QVLM_ISA_AVX512_BF16; s++)
                if (strcmp(v, qvlm_isa_name((qvlm_isa)s)) == 0) only_isa = s;
            if (!all_isas && only_isa < 0) return fprintf(stderr, "bench-matmul: unknown isa '%s'\n", v), 2;
        } else if (strcmp(a, "--dtype") == 0 && v) {
            i++;
            if (strcmp(v, "bf16") == 0) wt = QVLM_DTYPE_BF16;
            else if (strcmp(v, "q8_0") == 0) wt = QVLM_DTYPE_Q8_0;
            else if (strcmp(v, "q8_0x8") == 0) wt = QVLM_DTYPE_Q8_0X8;
            else if (strcmp(v, "f16") == 0) wt = QVLM_DTYPE_F16;
            else if (strcmp(v, "f32") == 0) wt = QVLM_DTYPE_F32;
            else return fprintf(stderr, "bench-matmul: unknown dtype '%s'\n", v), 2;
        } else {
            fprintf(stderr, "bench-matmul: unknown option '%s'\n", a);
            return usage(stderr);
        }
    }
    if (n_gemm < 2 || n_gemm > 65536) return fprintf(stderr, "bench-matmul: --n must be in 2..65536\n"), 2;

    qvlm_error err;
    qvlm_pool *pool;
    if (qvlm_pool_create(threads, &pool, &err) != QVLM_OK) return fprintf(stderr, "bench-matmul: %s\n", err.msg), 1;
    int nth = qvlm_pool_size(pool);
    qvlm_isa best = qvlm_cpu_detect_isa();
    char model[256];
    cpu_model(model, sizeof(model));

    double load_before = load_avg();
    double read_gbs, read_cpu_gbs, copy_gbs; /* the machine at large, for the record */
    bandwidth(pool, best, &read_gbs, &read_cpu_gbs, &copy_gbs);
    json_t *doc = json_object(), *peaks = json_array(), *results = json_array();
    json_object_set_new(doc, "cpu", json_string(model));
    json_object_set_new(doc, "threads", json_integer(nth));
    json_object_set_new(doc, "dtype", json_string(qvlm_dtype_name(wt)));
    json_object_set_new(doc, "read_gbs", json_real(read_gbs));
    json_object_set_new(doc, "read_gbs_per_cpu_s", json_real(read_cpu_gbs));
    json_object_set_new(doc, "copy_gbs", json_real(copy_gbs));
    json_object_set_new(doc, "load_before", json_real(load_before));
    if (!as_json)
        printf("cpu: %s, threads %d, weights %s, load average %.2f\n"
               "bandwidth (best of 5): read %.1f GB/s (%.1f per cpu-s; 4 streams per thread), memcpy %.1f GB/s (read+write)\n"
               "bounds: GEMV -> a plain read of the same weight bytes, timed right after; GEMM -> peak of the\n"
               "kernel's multiply-add (register-only loop, per cpu-s)\n",
               model, nth, qvlm_dtype_name(wt), load_before, read_gbs, read_cpu_gbs, copy_gbs);

    int rc = 0;
    for (int isa = QVLM_ISA_SCALAR; isa <= (int)best; isa++) {
        if (only_isa >= 0 ? isa != only_isa : !all_isas && isa == QVLM_ISA_SCALAR && best != QVLM_ISA_SCALAR) continue;
        for (int pi = 0; pi < 2; pi++) {
            qvlm_precision prec = pi ? QVLM_PREC_BF16 : QVLM_PREC_F32;
            const char *pname = pi ? "bf16" : "f32";
            qvlm_cpu cpu = {pool, (qvlm_isa)isa, prec};
            double peak = peak_gflops(pool, (qvlm_isa)isa, prec);
            json_t *pk = json_object();
            json_object_set_new(pk, "isa", json_string(qvlm_isa_name((qvlm_isa)isa)));
            json_object_set_new(pk, "precision", json_string(pname));
            json_object_set_new(pk, "peak_gflops", json_real(peak));
            json_array_append_new(peaks, pk);
            if (!as_json)
                printf("\n[%s, %s precision] peak %.1f GFLOP/s (%d threads, register-only %s loop)\n"
                       "%-5s %-18s %5s %6s %6s %9s %10s %10s %8s %10s %8s\n",
                       qvlm_isa_name((qvlm_isa)isa), pname, peak, nth,
                       isa == QVLM_ISA_AVX512_BF16 && prec == QVLM_PREC_BF16 ? "vdpbf16ps" : "fma", "kind", "shape",
                       "n", "k", "d", "best ms", "rate", "bound", "of bound", nth == 1 ? "per cpu-s" : "",
                       nth == 1 ? "of bound" : "");
            int64_t n = isa == QVLM_ISA_SCALAR && n_gemm > 8 ? 8 : n_gemm;
            for (size_t si = 0; si < sizeof(SHAPES) / sizeof(SHAPES[0]); si++) {
                const struct shape *sh = &SHAPES[si];
                if ((wt == QVLM_DTYPE_Q8_0 || wt == QVLM_DTYPE_Q8_0X8) && sh->k % 32) continue;
                size_t wbytes = qvlm_dtype_row_bytes(wt, sh->k) * (size_t)((sh->d + 7) / 8 * 8); /* Q8_0X8: padded rows */
                /* GEMV: copies adding up to ~256 MB, so weights come from DRAM */
                size_t wstride = (wbytes + 63) / 64 * 64;
                /* (the scalar reference is compute-bound: one copy, or a pass would take minutes) */
                int copies = sh->gemm == 2 || isa == QVLM_ISA_SCALAR ? 1 : (int)(((size_t)256 << 20) / wstride) + 1;
                size_t nmax = (size_t)n;
                float *x = malloc(sizeof(float) * nmax * (size_t)sh->k), *y = malloc(sizeof(float) * nmax * (size_t)sh->d);
                size_t work_bytes = (qvlm_cpu_matmul_work_bytes(&cpu, n, sh->k, wt) + 63) / 64 * 64;
                void *work = aligned_alloc(64, work_bytes);
                uint8_t *wall = aligned_alloc(64, wstride * (size_t)copies);
                void **w = malloc(sizeof(void *) * (size_t)copies);
                int ok = x && y && work && wall && w;
                for (int c = 0; c < copies && ok; c++) {
                    w[c] = wall + (size_t)c * wstride;
                    fill_weights(w[c], wbytes, wt, sh->k);
                }
                if (!ok) {
                    fprintf(stderr, "bench-matmul: out of memory for k=%lld d=%lld\n", (long long)sh->k, (long long)sh->d);
                    rc = 1;
                } else {
                    for (size_t i = 0; i < nmax * (size_t)sh->k; i++) x[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
                    for (int g = 0; g < 2; g++) {
                        if (g == 1 && !sh->gemm) continue;
                        if (g == 0 && sh->gemm == 2) continue; /* the vision tower has no decode */
                        int64_t nt = g ? n : 1;
                        struct result r = time_matmul(&cpu, y, x, w, g ? 1 : copies, wt, nt, sh->k, sh->d, work,
                                                      isa == QVLM_ISA_SCALAR ? 0.0 : 0.3);
                        double work_units = g ? 2.0 * (double)nt * sh->k * sh->d : (double)wbytes;
                        double rate = work_units / r.best_s / 1e9, rate_cpu = work_units / r.best_cpu_s / 1e9;
                        /* GEMV: a plain read of the same weight copies, timed right after */
                        double bound = g ? peak : read_bound(pool, best, wall, wstride * (size_t)copies);
                        json_t *o = json_object();
                        json_object_set_new(o, "kind", json_string(g ? "gemm" : "gemv"));
                        json_object_set_new(o, "what", json_string(sh->what));
                        json_object_set_new(o, "isa", json_string(qvlm_isa_name((qvlm_isa)isa)));
                        json_object_set_new(o, "precision", json_string(pname));
                        json_object_set_new(o, "n", json_integer(nt));
                        json_object_set_new(o, "k", json_integer(sh->k));
                        json_object_set_new(o, "d", json_integer(sh->d));
                        json_object_set_new(o, "best_ms", json_real(r.best_s * 1e3));
                        json_object_set_new(o, "median_ms", json_real(r.median_s * 1e3));
                        json_object_set_new(o, g ? "gflops" : "gbs", json_real(rate));
                        json_object_set_new(o, g ? "bound_gflops" : "bound_read_gbs", json_real(bound));
                        json_object_set_new(o, "fraction_of_bound", json_real(rate / bound));
                        json_object_set_new(o, "best_cpu_ms", json_real(r.best_cpu_s * 1e3));
                        json_object_set_new(o, g ? "gflops_per_cpu_s" : "gbs_per_cpu_s", json_real(rate_cpu));
                        json_array_append_new(results, o);
                        if (!as_json)
                        {
                            const char *unit = g ? "GF/s" : "GB/s";
                            printf("%-5s %-18s %5lld %6lld %6lld %9.3f %5.1f %-4s %5.1f %-4s %7.0f%%", g ? "gemm" : "gemv",
                                   sh->what, (long long)nt, (long long)sh->k, (long long)sh->d, r.best_s * 1e3, rate, unit,
                                   bound, unit, 100.0 * rate / bound);
                            if (nth == 1) printf(" %5.1f %-4s %7.0f%%", rate_cpu, unit, 100.0 * rate_cpu / bound);
                            printf("\n");
                        }
                        fflush(stdout);
                    }
                }
                free(w);
                free(wall);
                free(x);
                free(y);
                free(work);
            }
        }
    }
    json_object_set_new(doc, "load_after", json_real(load_avg()));
    if (!as_json) printf("\nload average after: %.2f\n", load_avg());
    json_object_set_new(doc, "peaks", peaks);
    json_object_set_new(doc, "results", results);
    if (as_json) {
        char *s = json_dumps(doc, JSON_INDENT(1));
        if (s) printf("%s\n", s);
        free(s);
    }
    json_decref(doc);
    qvlm_pool_destroy(pool);
    return rc;
}
