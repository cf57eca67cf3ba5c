/* cmd_serve.c - `qvlm serve`: the OpenAI-compatible server (src/server/).
 *
 *   qvlm serve -m DIR [--host 127.0.0.1] [--port 8080] [--parallel N] [--api-key KEY] ...
 *
 * Signals are blocked in every thread and taken by sigwait in the main thread, so no handler
 * and no global state are needed: SIGTERM or SIGINT drains (running requests finish, new ones
 * are refused), flushes the disk cache and exits 0. */
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_gen.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "server/server.h"

typedef struct serve_opts {
    srv_config cfg;
    cli_gen_opts gen; /* model, threads, sampling defaults */
    cli_cache_opts cache;
} serve_opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: qvlm serve -m DIR [options]\n"
            "  --host ADDR           address to bind (default 127.0.0.1: this machine only)\n"
            "  --port N              port (default 8080; 0 picks a free one)\n"
            "  --api-key KEY         require Authorization: Bearer KEY on the /v1 routes and /metrics\n"
            "                        (or set QVLM_API_KEY, which keeps the key out of `ps`)\n"
            "  --parallel N          requests answered at once, one session each (default 1)\n"
            "  --queue N             requests waiting beyond those; more get 503 (default 16)\n"
            "  --alias NAME          model id in responses (default: the directory's name)\n"
            "  --allow-dir DIR       allow local image paths under DIR (default: data: URIs only)\n"
            "  --max-body BYTES      largest request body (default 32M; K, M, G suffixes)\n"
            "  --max-images N        images per request (default 16)\n"
            "  --max-image-pixels N  larger images are refused before decoding (default 8192^2)\n"
            "  --ctx N               prompt + answer tokens per request (default: the model's)\n"
            "  --cache-gb N          memory for the cross-turn cache (default 4)\n"
            CLI_CACHE_HELP
            "  --cache-dir DIR       keep the cache on disk too (flushed at shutdown)\n"
            CLI_MODEL_HELP
            "  --temperature, --top-k, --top-p, --min-p   defaults for requests (0.6, 20, 0.95, 0)\n"
            "  --max-tokens N        default answer limit (default: until the context is full)\n"
            "  --drain-timeout S     on SIGTERM, cancel requests still running after S seconds (default 30)\n"
            "  --verbose             log each response's status\n");
}

static size_t parse_size(const char *opt, const char *v, bool *bad) {
    char *end;
    double x = strtod(v, &end);
    double mul = *end == 'K' || *end == 'k' ? 1024.0 : *end == 'M' || *end == 'm' ? 1048576.0
               : *end == 'G' || *end == 'g' ? 1073741824.0 : 1.0;
    if (mul != 1.0) end++;
    if (end == v || *end || !(x >= 1) || x * mul > 1e12) {
        fprintf(stderr, "qvlm serve: %s %s: expected a size like 32M\n", opt, v);
        *bad = true;
        return 0;
    }
    return (size_t)(x * mul);
}

static bool serve_opt(int argc, char **argv, int *i, serve_opts *o, bool *bad) {
    const char *v = NULL;
    srv_config *c = &o->cfg;
    if (cli_opt(argc, argv, i, "--host", &v, bad)) c->host = v;
    else if (cli_opt(argc, argv, i, "--port", &v, bad)) c->port = v ? (int)cli_int("--port", v, 0, 65535, bad) : 0;
    else if (cli_opt(argc, argv, i, "--api-key", &v, bad)) c->api_key = v;
    else if (cli_opt(argc, argv, i, "--parallel", &v, bad)) c->parallel = v ? (int)cli_int("--parallel", v, 1, 256, bad) : 1;
    else if (cli_opt(argc, argv, i, "--queue", &v, bad)) c->queue_max = v ? (int)cli_int("--queue", v, 0, 4096, bad) : 0;
    else if (cli_opt(argc, argv, i, "--alias", &v, bad)) c->model_name = v;
    else if (cli_opt(argc, argv, i, "--allow-dir", &v, bad)) c->allow_dir = v;
    else if (cli_opt(argc, argv, i, "--max-body", &v, bad)) c->max_body_bytes = v ? parse_size("--max-body", v, bad) : 0;
    else if (cli_opt(argc, argv, i, "--max-images", &v, bad)) c->max_images = v ? (int)cli_int("--max-images", v, 0, 256, bad) : 0;
    else if (cli_opt(argc, argv, i, "--max-image-pixels", &v, bad))
        c->max_image_pixels = v ? cli_int("--max-image-pixels", v, 1, INT64_C(1) << 40, bad) : 0;
    else if (cli_cache_opt(argc, argv, i, &o->cache, bad)) return true;
    else if (cli_opt(argc, argv, i, "--drain-timeout", &v, bad))
        c->drain_timeout_s = v ? cli_num("--drain-timeout", v, 0, 1e6, bad) : 0;
    else if (strcmp(argv[*i], "--verbose") == 0) c->verbose = true;
    else return false;
    return true;
}

static int parse_args(int argc, char **argv, serve_opts *o) {
    bool bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (!serve_opt(argc, argv, &i, o, &bad) && !cli_gen_opt(argc, argv, &i, &o->gen, &bad)) {
            fprintf(stderr, "qvlm serve: unexpected argument '%s'\n", argv[i]);
            bad = true;
        }
    }
    if (!bad && !o->gen.model_dir) fprintf(stderr, "qvlm serve: -m DIR is required\n"), bad = true;
    if (!o->cfg.api_key && getenv("QVLM_API_KEY") && *getenv("QVLM_API_KEY")) o->cfg.api_key = getenv("QVLM_API_KEY");
    if (bad) usage(stderr);
    return bad ? 2 : -1;
}

static void defaults(serve_opts *o) {
    memset(o, 0, sizeof(*o));
    cli_gen_opts_default(&o->gen);
    o->gen.max_tokens = 0;
    o->cache = (cli_cache_opts){.gb = 4, .host_gb = -1};
    o->cfg = (srv_config){.host = "127.0.0.1", .port = 8080, .parallel = 1, .queue_max = 16,
                          .max_body_bytes = (size_t)32 << 20, .max_images = 16, .drain_timeout_s = 30};
}

/* Block the signals before any thread exists, so every thread inherits the mask and only
 * sigwait below ever sees them. */
static void block_signals(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client that left must not kill the server */
}

static int serve(serve_opts *o, const sigset_t *sigs) {
    qvlm_model *m = cli_load_model(&o->gen, false);
    if (!m) return 1;
    qvlm_error err;
    qvlm_cache *cache = NULL;
    qvlm_cache_config cc = cli_cache_config(&o->cache, &o->gen.model);
    char *dir_copy = strdup(o->gen.model_dir);
    srv_config *c = &o->cfg;
    if (!c->model_name) c->model_name = dir_copy ? basename(dir_copy) : "qvlm";
    if (c->n_ctx <= 0) c->n_ctx = o->gen.n_ctx > 0 ? o->gen.n_ctx : qvlm_model_n_ctx_train(m);
    c->sampling = o->gen.sampling;
    c->max_tokens_default = o->gen.max_tokens;
    srv_server s;
    qvlm_status rc = qvlm_model_cache_create(m, &cc, &cache, &err);
    if (!rc) rc = srv_server_start(&s, c, m, cache, &err);
    int code = 1;
    if (!rc) {
        fprintf(stderr, "qvlm serve: listening on http://%s:%d (%d slots, queue %d, context %lld)\n", c->host, s.port,
                c->parallel, c->queue_max, (long long)c->n_ctx);
        int sig = 0;
        sigwait(sigs, &sig);
        fprintf(stderr, "qvlm serve: %s: draining\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        srv_server_drain(&s);
        srv_server_free(&s);
        rc = o->cache.dir ? qvlm_cache_flush(cache, &err) : QVLM_OK;
        if (!rc) fprintf(stderr, "qvlm serve: stopped\n"), code = 0;
    }
    if (rc) fprintf(stderr, "qvlm serve: %s\n", err.msg);
    qvlm_cache_destroy(cache);
    qvlm_model_destroy(m);
    free(dir_copy);
    return code;
}

int qvlm_cmd_serve(int argc, char **argv) {
    serve_opts o;
    defaults(&o);
    int code = parse_args(argc, argv, &o);
    if (code >= 0) return code;
    sigset_t sigs;
    block_signals(&sigs);
    return serve(&o, &sigs);
}
