/* cmd_bench_tokenizer.c - `qvlm bench-tokenizer --tokenizer FILE [--json]`: tokenizer load
 * time and encode throughput on 1 MiB of mixed-language text.
 *
 * The text is generated here, deterministically, from a small built-in sample set: whole
 * samples (English, code, JSON, CJK, Korean, Cyrillic, Arabic, Hebrew, Devanagari, Thai,
 * Greek, emoji with ZWJ and flags, decomposed accents, whitespace runs, chat markup) alternate
 * with sentences of pseudo-random words in several scripts, so that the BPE cache does not
 * see only a few hundred distinct words. `--dump-text FILE` writes the exact bytes, which
 * tools/bench_hf_tokenizers.py feeds to Hugging Face tokenizers for the same measurement;
 * `--dump-ids FILE` writes qvlm's ids so that script can check they are identical.
 *
 * MB/s means 10^6 bytes of input text per second of wall time.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli_tok.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/threads.h"

static const char USAGE[] =
    "usage: qvlm bench-tokenizer (--tokenizer FILE | --model DIR) [options]\n"
    "  Measures load time and encode throughput on 1 MiB of generated mixed-language text.\n"
    "  --json             print one JSON object instead of text\n"
    "  --bytes N          size of the text (default 1048576)\n"
    "  --reps N           timed encodes of the whole text (default 5)\n"
    "  --threads N        also encode with N threads at once (default: number of CPUs)\n"
    "  --dump-text FILE   write the generated text to FILE (needs no tokenizer)\n"
    "  --dump-ids FILE    write the ids as a JSON array (for tools/bench_hf_tokenizers.py)\n";

/* ---- the text ------------------------------------------------------------------------------ */

static const char *const SAMPLES[] = {
    "The quick brown fox jumps over the lazy dog, and then it naps in the afternoon sun.",
    "In 2024, researchers reported a 37.5% increase in throughput (see Table 3, p. 12).",
    "int main(int argc, char **argv) {\n    printf(\"%d\\n\", argc);\n    return 0;\n}\n",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\nprint([fib(i) for i in range(10)])\n",
    "{\"name\": \"qvlm\", \"version\": [0, 1, 0], \"features\": {\"vision\": true, \"moe\": null}}",
    "See https://example.com/path/to/page?query=value&lang=en#section-2 for details.",
    "\xe6\x9c\xba\xe5\x99\xa8\xe5\xad\xa6\xe4\xb9\xa0\xe6\x98\xaf\xe4\xba\xba\xe5\xb7\xa5\xe6\x99\xba\xe8\x83"
    "\xbd\xe7\x9a\x84\xe4\xb8\x80\xe4\xb8\xaa\xe5\x88\x86\xe6\x94\xaf\xe3\x80\x82",
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88\xe3"
    "\x81\xa8\xe3\x82\xab\xe3\x82\xbf\xe3\x82\xab\xe3\x83\x8a\xe3\x80\x81\xe3\x81\xb2\xe3\x82\x89\xe3\x81"
    "\x8c\xe3\x81\xaa\xe3\x80\x82",
    "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 \xeb\xac\xb8\xec\x9e\xa5\xec\x9d\x80 \xeb\x9d\x84\xec\x96\xb4\xec"
    "\x93\xb0\xea\xb8\xb0\xeb\xa5\xbc \xec\x82\xac\xec\x9a\xa9\xed\x95\xa9\xeb\x8b\x88\xeb\x8b\xa4.",
    "\xd0\xa1\xd1\x8a\xd0\xb5\xd1\x88\xd1\x8c \xd0\xb6\xd0\xb5 \xd0\xb5\xd1\x89\xd1\x91 \xd1\x8d\xd1\x82\xd0"
    "\xb8\xd1\x85 \xd0\xbc\xd1\x8f\xd0\xb3\xd0\xba\xd0\xb8\xd1\x85 \xd1\x84\xd1\x80\xd0\xb0\xd0\xbd\xd1\x86"
    "\xd1\x83\xd0\xb7\xd1\x81\xd0\xba\xd0\xb8\xd1\x85 \xd0\xb1\xd1\x83\xd0\xbb\xd0\xbe\xd0\xba.",
    "\xd8\xa7\xd9\x84\xd8\xb9\xd8\xb1\xd8\xa8\xd9\x8a\xd8\xa9 \xd9\x84\xd8\xba\xd8\xa9 \xd8\xb3\xd8\xa7\xd9"
    "\x85\xd9\x8a\xd8\xa9 \xd9\x8a\xd8\xaa\xd8\xad\xd8\xaf\xd8\xab \xd8\xa8\xd9\x87\xd8\xa7 400 \xd9\x85\xd9"
    "\x84\xd9\x8a\xd9\x88\xd9\x86.",
    "\xd7\xa2\xd7\x91\xd7\xa8\xd7\x99\xd7\xaa \xd7\x94\xd7\x99\xd7\x90 \xd7\xa9\xd7\xa4\xd7\x94 \xd7\xa9\xd7"
    "\x9e\xd7\x99\xd7\xaa.",
    "\xe0\xa4\xb9\xe0\xa4\xbf\xe0\xa4\xa8\xe0\xa5\x8d\xe0\xa4\xa6\xe0\xa5\x80 \xe0\xa4\xad\xe0\xa4\xbe\xe0\xa4"
    "\xb7\xe0\xa4\xbe",
    "\xe0\xb8\xa0\xe0\xb8\xb2\xe0\xb8\xa9\xe0\xb8\xb2\xe0\xb9\x84\xe0\xb8\x97\xe0\xb8\xa2",
    "\xce\x95\xce\xbb\xce\xbb\xce\xb7\xce\xbd\xce\xb9\xce\xba\xce\xac: \xce\xb7 \xce\xb3\xcf\x81\xce\xae\xce"
    "\xb3\xce\xbf\xcf\x81\xce\xb7 \xce\xb1\xce\xbb\xce\xb5\xcf\x80\xce\xbf\xcf\x8d.",
    "Emoji: \xf0\x9f\x98\x80\xf0\x9f\x90\xb1\xf0\x9f\x9a\x80 \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \xf0\x9f\x91"
    "\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7 \xf0\x9f\x87\xa9\xf0\x9f\x87\xaa \xe2\x9c\xa8",
    "caf\xc3\xa9 na\xc3\xafve r\xc3\xa9sum\xc3\xa9 fa\xc3\xa7" "ade, and cafe\xcc\x81 decomposed.",
    "    indented\tcode\twith\ttabs    \n\n\n",
    "   \n  \r\n\t \n",
    "<|im_start|>user\nDescribe the image.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "I'm sure you're right; it's fine, we'll see. THEY'LL'D",
    "0x7f 1e-9 3.14159 -42 1,000,000 2026-11-27T03:44:00Z",
    "math \xe2\x88\x91\xe2\x88\xab\xe2\x88\x9a\xe2\x88\x9e \xe2\x89\xa4 \xe2\x89\xa5 \xe2\x89\xa0 \xc2\xb1",
};

/* Letters of a few scripts for pseudo-random words: [first, last] code points. */
static const uint32_t SCRIPTS[][2] = {
    {'a', 'z'}, {0x430, 0x44F}, {0x4E00, 0x62FF}, {0xAC00, 0xD7A3},
    {0x627, 0x64A}, {0x3B1, 0x3C9}, {0x3041, 0x3093}, {'0', '9'},
};

static uint32_t next_rand(uint32_t *s) { /* xorshift32 */
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void add_utf8(cli_buf *b, uint32_t cp) {
    char c[4];
    size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (n == 1) c[0] = (char)cp;
    else if (n == 2) c[0] = (char)(0xC0 | (cp >> 6)), c[1] = (char)(0x80 | (cp & 0x3F));
    else c[0] = (char)(0xE0 | (cp >> 12)), c[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), c[2] = (char)(0x80 | (cp & 0x3F));
    cli_buf_add(b, c, n);
}

static void add_random_sentence(cli_buf *b, uint32_t *seed) {
    const uint32_t *sc = SCRIPTS[next_rand(seed) % (sizeof(SCRIPTS) / sizeof(SCRIPTS[0]))];
    int n_words = 3 + (int)(next_rand(seed) % 10);
    for (int w = 0; w < n_words; w++) {
        int len = 1 + (int)(next_rand(seed) % (sc[0] >= 0x3000 ? 4 : 9));
        for (int i = 0; i < len; i++) add_utf8(b, sc[0] + next_rand(seed) % (sc[1] - sc[0] + 1));
        cli_buf_add(b, w + 1 < n_words ? " " : ".", 1);
    }
}

/* Exactly n_bytes (cut back to a character boundary) of deterministic text. */
static bool make_text(size_t n_bytes, char **out, size_t *n_out) {
    static const char *const SEPS[] = {" ", " ", " ", "\n", "\n\n", "  ", "\t", ", "};
    cli_buf b = {0};
    uint32_t seed = 0x9E3779B9u;
    while (b.n < n_bytes && !b.failed) {
        if (next_rand(&seed) % 2) add_random_sentence(&b, &seed);
        else {
            const char *s = SAMPLES[next_rand(&seed) % (sizeof(SAMPLES) / sizeof(SAMPLES[0]))];
            cli_buf_add(&b, s, strlen(s));
        }
        const char *sep = SEPS[next_rand(&seed) % (sizeof(SEPS) / sizeof(SEPS[0]))];
        cli_buf_add(&b, sep, strlen(sep));
    }
    if (b.failed) return free(b.p), false;
    size_t n = n_bytes;
    if (b.n > n) /* cut inside a character? back up to its start */
        while (n > 0 && ((unsigned char)b.p[n] & 0xC0) == 0x80) n--;
    b.p[n] = '\0';
    *out = b.p;
    *n_out = n;
    return true;
}

/* ---- measuring ------------------------------------------------------------------------------ */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t fnv1a_ids(const int32_t *ids, size_t n) { /* over the ids' little-endian bytes */
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) h = (h ^ (((uint32_t)ids[i] >> (8 * k)) & 0xFF)) * 0x100000001b3ULL;
    return h;
}

typedef struct bench_job {
    const qvlm_tokenizer *tok;
    const char *text;
    size_t n_text;
    pthread_barrier_t *start;
    bool ok;
} bench_job;

static void *encode_job(void *arg) {
    bench_job *j = arg;
    pthread_barrier_wait(j->start);
    int32_t *ids;
    size_t n;
    qvlm_error err;
    j->ok = qvlm_tokenizer_encode(j->tok, j->text, j->n_text, &ids, &n, &err) == QVLM_OK;
    if (j->ok) free(ids);
    return NULL;
}

/* Wall seconds for n_threads threads each encoding the whole text once. */
static double encode_parallel(const qvlm_tokenizer *tok, const char *text, size_t n, int n_threads) {
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n_threads + 1);
    pthread_t th[64];
    bench_job jobs[64];
    for (int t = 0; t < n_threads; t++) {
        jobs[t] = (bench_job){.tok = tok, .text = text, .n_text = n, .start = &start};
        pthread_create(&th[t], NULL, encode_job, &jobs[t]);
    }
    pthread_barrier_wait(&start);
    double t0 = now_s();
    bool ok = true;
    for (int t = 0; t < n_threads; t++) {
        pthread_join(th[t], NULL);
        ok = ok && jobs[t].ok;
    }
    double dt = now_s() - t0;
    pthread_barrier_destroy(&start);
    return ok ? dt : -1.0;
}

typedef struct bench_opts {
    const char *model, *path, *dump_text, *dump_ids;
    bool json;
    size_t n_bytes;
    int reps, threads;
} bench_opts;

typedef struct bench_result {
    double load_ms, cold_s, warm_s, par_s;
    size_t n_ids;
    uint64_t ids_hash;
} bench_result;

static bool write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(data, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = false;
    if (!ok) fprintf(stderr, "qvlm bench-tokenizer: cannot write %s\n", path);
    return ok;
}

static bool dump_ids(const char *path, const int32_t *ids, size_t n) {
    cli_buf b = {0};
    cli_buf_ids(&b, ids, n);
    cli_buf_add(&b, "\n", 1);
    bool ok = !b.failed && write_file(path, b.p, b.n);
    free(b.p);
    return ok;
}

static bool run_bench(const bench_opts *o, const char *text, size_t n, bench_result *r) {
    double t0 = now_s();
    qvlm_tokenizer *tok = cli_tok_open("bench-tokenizer", o->model, o->path);
    if (!tok) return false;
    r->load_ms = (now_s() - t0) * 1e3;
    qvlm_error err = {0};
    bool ok = true;
    r->warm_s = 1e30;
    for (int rep = 0; rep <= o->reps && ok; rep++) { /* rep 0 starts with a cold cache */
        int32_t *ids;
        double a = now_s();
        ok = qvlm_tokenizer_encode(tok, text, n, &ids, &r->n_ids, &err) == QVLM_OK;
        double dt = now_s() - a;
        if (!ok) break;
        if (rep == 0) {
            r->cold_s = dt;
            r->ids_hash = fnv1a_ids(ids, r->n_ids);
            if (o->dump_ids) ok = dump_ids(o->dump_ids, ids, r->n_ids);
        } else if (dt < r->warm_s) {
            r->warm_s = dt;
        }
        free(ids);
    }
    if (!ok && err.msg[0]) fprintf(stderr, "qvlm bench-tokenizer: %s\n", err.msg);
    r->par_s = ok && o->threads > 1 ? encode_parallel(tok, text, n, o->threads) : 0.0;
    qvlm_tokenizer_destroy(tok);
    return ok && r->par_s >= 0.0;
}

static void report(const bench_opts *o, size_t n, const bench_result *r) {
    double mb = (double)n / 1e6;
    if (o->json) {
        printf("{\"tokenizer\": \"%s\", \"text_bytes\": %zu, \"n_ids\": %zu, \"ids_fnv1a\": \"%016llx\", "
               "\"load_ms\": %.1f, \"encode_cold_mb_s\": %.2f, \"encode_warm_mb_s\": %.2f, "
               "\"threads\": %d, \"encode_threads_mb_s\": %.2f}\n",
               o->path ? o->path : o->model, n, r->n_ids, (unsigned long long)r->ids_hash, r->load_ms,
               mb / r->cold_s, mb / r->warm_s, o->threads,
               o->threads > 1 ? mb * o->threads / r->par_s : mb / r->warm_s);
        return;
    }
    printf("tokenizer      %s\n", o->path ? o->path : o->model);
    printf("text           %zu bytes, %zu ids (fnv1a %016llx)\n", n, r->n_ids, (unsigned long long)r->ids_hash);
    printf("load           %.1f ms\n", r->load_ms);
    printf("encode cold    %.2f MB/s (first call, empty cache)\n", mb / r->cold_s);
    printf("encode warm    %.2f MB/s (best of %d)\n", mb / r->warm_s, o->reps);
    if (o->threads > 1)
        printf("encode x%-5d  %.2f MB/s in all (%d threads, one tokenizer)\n", o->threads,
               mb * o->threads / r->par_s, o->threads);
}

/* Returns -1 to go on, else the exit status. */
static int parse_opts(int argc, char **argv, bench_opts *o) {
    *o = (bench_opts){.n_bytes = 1 << 20, .reps = 5, .threads = QVLM_MIN(qvlm_cpu_count(), 64)};
    bool bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        const char *v;
        if (cli_opt(argc, argv, &i, "--tokenizer", &o->path, &bad) || cli_opt(argc, argv, &i, "--model", &o->model, &bad) ||
            cli_opt(argc, argv, &i, "--dump-text", &o->dump_text, &bad) ||
            cli_opt(argc, argv, &i, "--dump-ids", &o->dump_ids, &bad))
            continue;
        if (cli_opt(argc, argv, &i, "--bytes", &v, &bad)) o->n_bytes = (size_t)cli_int("--bytes", v, 1, 1 << 30, &bad);
        else if (cli_opt(argc, argv, &i, "--reps", &v, &bad)) o->reps = (int)cli_int("--reps", v, 1, 1000, &bad);
        else if (cli_opt(argc, argv, &i, "--threads", &v, &bad)) o->threads = (int)cli_int("--threads", v, 1, 64, &bad);
        else if (strcmp(argv[i], "--json") == 0) o->json = true;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return fputs(USAGE, stdout), 0;
        else return fprintf(stderr, "qvlm bench-tokenizer: unknown option '%s'\n%s", argv[i], USAGE), 2;
    }
    return bad ? 2 : -1;
}

int qvlm_cmd_bench_tokenizer(int argc, char **argv) {
    bench_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc >= 0) return rc;
    if (!o.path && !o.model && !o.dump_text) return fputs(USAGE, stderr), 2;
    char *text;
    size_t n;
    if (!make_text(o.n_bytes, &text, &n)) return fprintf(stderr, "qvlm bench-tokenizer: out of memory\n"), 1;
    bool ok = !o.dump_text || write_file(o.dump_text, text, n);
    if (ok && (o.path || o.model)) {
        bench_result r = {0};
        ok = run_bench(&o, text, n, &r);
        if (ok) report(&o, n, &r);
    }
    free(text);
    return ok ? 0 : 1;
}
