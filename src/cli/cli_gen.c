/* cli_gen.c - shared pieces of `qvlm run` and `qvlm chat` (see cli_gen.h). */
#include "cli/cli_gen.h"

#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli_util.h"

#define DIM "\x1b[2m"
#define RESET "\x1b[0m"

double cli_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

uint64_t cli_random_seed(void) {
    uint64_t s = 0;
    if (sodium_init() >= 0) randombytes_buf(&s, sizeof(s));
    return s ? s : (uint64_t)cli_now_ms();
}

/* ---- options ------------------------------------------------------------------------------------ */

void cli_gen_opts_default(cli_gen_opts *o) {
    /* Qwen3.5's recommended sampling for thinking mode. */
    *o = (cli_gen_opts){.sampling = {0.6f, 20, 0.95f, 0.0f, 0}, .max_tokens = 4096, .think = true};
    qvlm_model_params_default(&o->model);
}

bool cli_gen_opt(int argc, char **argv, int *i, cli_gen_opts *o, bool *bad) {
    const char *v = NULL;
    if (cli_opt(argc, argv, i, "-m", &v, bad) || cli_opt(argc, argv, i, "--model", &v, bad)) {
        o->model_dir = v;
    } else if (cli_opt(argc, argv, i, "--system", &v, bad)) {
        o->system = v;
    } else if (strcmp(argv[*i], "--no-think") == 0) {
        o->think = false;
    } else if (cli_opt(argc, argv, i, "--temperature", &v, bad)) {
        if (v) o->sampling.temperature = (float)cli_num("--temperature", v, 0, 100, bad);
    } else if (cli_opt(argc, argv, i, "--top-k", &v, bad)) {
        if (v) o->sampling.top_k = (int32_t)cli_int("--top-k", v, 0, 1 << 30, bad);
    } else if (cli_opt(argc, argv, i, "--top-p", &v, bad)) {
        if (v) o->sampling.top_p = (float)cli_num("--top-p", v, 1e-6, 1, bad);
    } else if (cli_opt(argc, argv, i, "--min-p", &v, bad)) {
        if (v) o->sampling.min_p = (float)cli_num("--min-p", v, 0, 1, bad);
    } else if (cli_opt(argc, argv, i, "--seed", &v, bad)) {
        if (v) o->sampling.seed = (uint64_t)cli_int("--seed", v, 0, INT64_MAX, bad), o->seed_given = true;
    } else if (cli_opt(argc, argv, i, "--max-tokens", &v, bad)) {
        if (v) o->max_tokens = (int)cli_int("--max-tokens", v, 1, 1 << 30, bad);
    } else if (cli_opt(argc, argv, i, "--ctx", &v, bad)) {
        if (v) o->n_ctx = cli_int("--ctx", v, 16, INT64_C(1) << 40, bad);
    } else if (cli_model_opt(argc, argv, i, &o->model, &o->precision_set, bad)) {
    } else {
        return false;
    }
    return true;
}

/* ---- progress ------------------------------------------------------------------------------------- */

void cli_progress_init(cli_progress *p, bool enabled) {
    *p = (cli_progress){.enabled = enabled && isatty(STDERR_FILENO), .min_prefill = 512};
}

void cli_progress_fn(void *user, const char *stage, int64_t done, int64_t total) {
    cli_progress *p = user;
    if (!p->enabled || total <= 0) return;
    if (strcmp(stage, "prefill") == 0 && total < p->min_prefill) return;
    double t = cli_now_ms();
    if (done < total && t - p->last_ms < 80) return; /* redraw at most ~12 times a second */
    p->last_ms = t;
    char bar[41];
    int fill = (int)(40 * done / total);
    for (int k = 0; k < 40; k++) bar[k] = k < fill ? '#' : '.';
    bar[40] = 0;
    const char *what = strcmp(stage, "load") == 0 ? "loading" : strcmp(stage, "vision") == 0 ? "images " : "prompt ";
    /* One write per frame, so the bar never tears. */
    char line[160];
    int n = snprintf(line, sizeof(line), "\r%s [%s] %3d%% (%lld/%lld)\x1b[K", what, bar, (int)(100 * done / total),
                     (long long)done, (long long)total);
    if (write(STDERR_FILENO, line, (size_t)n) < 0) p->enabled = false;
    p->drawn = true;
}

void cli_progress_clear(cli_progress *p) {
    if (p->drawn && write(STDERR_FILENO, "\r\x1b[K", 4) < 0) p->enabled = false;
    p->drawn = false;
}

qvlm_model *cli_load_model(const cli_gen_opts *o, bool progress) {
    cli_progress pg;
    cli_progress_init(&pg, progress);
    qvlm_model_params mp = o->model;
    cli_model_precision_default(&mp, o->precision_set);
    mp.progress = cli_progress_fn;
    mp.progress_user = &pg;
    qvlm_model *m = NULL;
    qvlm_error err;
    qvlm_status rc = qvlm_model_load(o->model_dir, &mp, &m, &err);
    cli_progress_clear(&pg);
    if (rc) {
        fprintf(stderr, "qvlm: %s\n", err.msg);
        return NULL;
    }
    return m;
}

/* ---- printing a reply -------------------------------------------------------------------------- */

void cli_printer_init(cli_printer *p, const qvlm_reply *reply) {
    *p = (cli_printer){.reply = reply, .tty = isatty(STDOUT_FILENO)};
}

static void end_thinking(cli_printer *p) {
    if (!p->in_thinking) return;
    if (p->tty) fputs(RESET "\n\n", stdout);
    else fputs("\n", stderr), fflush(stderr);
    p->in_thinking = false;
}

int cli_printer_delta(void *user, const qvlm_reply_delta *d) {
    cli_printer *p = user;
    if (d->n_reasoning) {
        if (!p->in_thinking && p->tty) fputs(DIM, stdout);
        p->in_thinking = true;
        fwrite(d->reasoning, 1, d->n_reasoning, p->tty ? stdout : stderr);
        fflush(p->tty ? stdout : stderr);
    }
    if (d->n_content || d->n_tool_calls) end_thinking(p);
    if (d->n_content) fwrite(d->content, 1, d->n_content, stdout);
    const qvlm_tool_call *calls;
    int n_calls = qvlm_reply_tool_calls(p->reply, &calls);
    for (int i = d->first_tool_call; i < d->first_tool_call + d->n_tool_calls && i < n_calls; i++)
        fprintf(stdout, "%s[tool call] %s %s\n", p->printed_any ? "\n" : "", calls[i].name, calls[i].arguments);
    if (d->n_content || d->n_tool_calls) p->printed_any = true;
    fflush(stdout);
    return 0;
}

void cli_printer_end(cli_printer *p) {
    end_thinking(p);
    if (p->tty) fputs(RESET, stdout);
    fputs("\n", stdout);
    fflush(stdout);
}

json_t *cli_assistant_message(const qvlm_reply *r) {
    size_t n_c, n_r;
    const char *c = qvlm_reply_content(r, &n_c), *rs = qvlm_reply_reasoning(r, &n_r);
    json_t *m = json_pack("{s:s, s:s%}", "role", "assistant", "content", c, n_c);
    if (m && n_r) json_object_set_new(m, "reasoning_content", json_stringn(rs, n_r));
    const qvlm_tool_call *calls;
    int n = qvlm_reply_tool_calls(r, &calls);
    json_t *arr = n && m ? json_array() : NULL;
    for (int i = 0; arr && i < n; i++) {
        /* OpenAI's form: arguments as a JSON string (the chat layer parses it back). */
        json_array_append_new(arr, json_pack("{s:s, s:{s:s, s:s}}", "type", "function", "function", "name", calls[i].name,
                                             "arguments", calls[i].arguments));
    }
    if (arr) json_object_set_new(m, "tool_calls", arr);
    return m;
}
