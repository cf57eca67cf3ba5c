/* cmd_chat.c - `qvlm chat`: an interactive image chat.
 *
 *   qvlm chat -m DIR [--cache-gb N] [--cache-dir DIR] [options]
 *
 * Each line is a message; commands start with '/': /image PATH attaches an image to the next
 * message, /reset, /stats, /save FILE, /load FILE, /think on|off, /quit (or end of input).
 * Every turn sends the whole conversation through qvlm_session_chat with a shared cache, as a
 * server client does, so earlier turns and images are reused. Ctrl-C stops the current answer
 * (the handler only sets a flag; a watcher thread calls qvlm_session_cancel). Works with stdin
 * not a terminal: commands may be piped in. */
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli_gen.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/status.h"
#include "core/fileio.h"

#define MAX_PENDING_IMAGES 32
#define CONV_MAX_BYTES ((size_t)256 << 20)

/* The one piece of global state: what the SIGINT handler may touch. */
static volatile sig_atomic_t sigint_seen;

static void on_sigint(int sig) {
    (void)sig;
    sigint_seen = 1;
}

typedef struct chat {
    cli_gen_opts o;
    qvlm_model *m;
    qvlm_cache *cache;
    qvlm_session *s;
    json_t *conv;                     /* the messages so far */
    char *pending[MAX_PENDING_IMAGES]; /* absolute paths for the next message */
    int n_pending;
    bool interactive;                 /* stdin is a terminal: show a prompt */
    cli_progress pg;
    /* The last turn, for /stats. */
    bool have_last;
    qvlm_prompt_stats last_prompt;
    qvlm_reply_stats last_reply;
    /* Ctrl-C: the watcher cancels while a turn runs. */
    atomic_bool busy, stop_watcher, cancel_wanted;
    pthread_t watcher;
} chat;

/* ==== Ctrl-C ================================================================================= */

static void *watch_sigint(void *arg) {
    chat *c = arg;
    const struct timespec tick = {0, 20 * 1000 * 1000};
    while (!atomic_load(&c->stop_watcher)) {
        if (sigint_seen) {
            sigint_seen = 0;
            if (atomic_load(&c->busy)) {
                atomic_store(&c->cancel_wanted, true);
                qvlm_session_cancel(c->s);
            } else if (c->interactive) {
                static const char hint[] = "\n(Ctrl-C stops an answer; /quit or Ctrl-D leaves)\n> ";
                if (write(STDOUT_FILENO, hint, sizeof(hint) - 1) < 0) break;
            }
        }
        nanosleep(&tick, NULL);
    }
    return NULL;
}

/* A cancel can land before the prompt starts (which clears it), so the session's own thread
 * repeats it at every progress report until the turn ends. */
static void turn_progress(void *user, const char *stage, int64_t done, int64_t total) {
    chat *c = user;
    if (atomic_load(&c->cancel_wanted)) qvlm_session_cancel(c->s);
    cli_progress_fn(&c->pg, stage, done, total);
}

typedef struct turn_out {
    chat *c;
    cli_printer pr;
} turn_out;

static int turn_delta(void *user, const qvlm_reply_delta *d) {
    turn_out *t = user;
    cli_printer_delta(&t->pr, d);
    return atomic_load(&t->c->cancel_wanted);
}

/* ==== a turn ================================================================================= */

static json_t *user_message(chat *c, const char *text) {
    if (c->n_pending == 0) return json_pack("{s:s, s:s}", "role", "user", "content", text);
    json_t *parts = json_array();
    for (int i = 0; i < c->n_pending; i++)
        json_array_append_new(parts, json_pack("{s:s, s:{s:s}}", "type", "image_url", "image_url", "url", c->pending[i]));
    json_array_append_new(parts, json_pack("{s:s, s:s}", "type", "text", "text", text));
    return json_pack("{s:s, s:o}", "role", "user", "content", parts);
}

static void clear_pending(chat *c) {
    for (int i = 0; i < c->n_pending; i++) free(c->pending[i]);
    c->n_pending = 0;
}

/* Prompt with the whole conversation, then stream the answer. On failure or a cancel before
 * any answer, the user message is taken back so the conversation stays well-formed. */
static void turn(chat *c, const char *text) {
    qvlm_error err;
    json_array_append_new(c->conv, user_message(c, text));
    clear_pending(c);
    char *msgs = json_dumps(c->conv, JSON_COMPACT);
    qvlm_chat_options co = {.enable_thinking = c->o.think ? -1 : 0, .allow_dir = "/"};
    atomic_store(&c->cancel_wanted, false);
    atomic_store(&c->busy, true);
    qvlm_status rc = msgs ? qvlm_session_chat(c->s, msgs, strlen(msgs), &co, &err) : qvlm_errorf(&err, QVLM_E_NOMEM, "out of memory");
    free(msgs);
    cli_progress_clear(&c->pg);
    qvlm_reply *r = NULL;
    qvlm_reply_options ro = {.in_thinking = c->o.think, .parse_tool_calls = true};
    if (!rc) rc = qvlm_reply_create(&ro, &r, &err);
    turn_out t = {.c = c};
    if (!rc) {
        qvlm_session_prompt_stats(c->s, &c->last_prompt);
        cli_printer_init(&t.pr, r);
        if (!c->o.seed_given) c->o.sampling.seed = cli_random_seed();
        rc = qvlm_session_generate_reply(c->s, &c->o.sampling, c->o.max_tokens, r, turn_delta, &t, &c->last_reply, &err);
        cli_printer_end(&t.pr);
        c->have_last = !rc;
    }
    atomic_store(&c->busy, false);
    bool stopped = rc == QVLM_E_CANCELLED || (!rc && (c->last_reply.finish == QVLM_FINISH_CANCELLED ||
                                                      c->last_reply.finish == QVLM_FINISH_ABORTED));
    if (stopped) printf("[stopped]\n");
    else if (rc) fprintf(stderr, "error: %s\n", err.msg);
    if (!rc) json_array_append_new(c->conv, cli_assistant_message(r));
    else json_array_remove(c->conv, json_array_size(c->conv) - 1);
    fflush(stdout);
    qvlm_reply_destroy(r);
}

/* ==== commands ================================================================================ */

static void print_stats(chat *c) {
    if (!c->have_last) {
        printf("no turn yet\n");
        return;
    }
    const qvlm_prompt_stats *p = &c->last_prompt;
    const qvlm_reply_stats *r = &c->last_reply;
    int reused_images = p->images_in_prefix + p->images_from_feature_cache;
    printf("prompt: %lld tokens, reused %lld (%.1f%%), prefilled %lld\n", (long long)p->prompt_tokens,
           (long long)p->reused_tokens, p->prompt_tokens ? 100.0 * (double)p->reused_tokens / (double)p->prompt_tokens : 0.0,
           (long long)p->prefilled_tokens);
    printf("images: %d in the prompt, %d encoded, %d reused (%d in the reused prefix, %d from the feature cache)\n",
           p->images_total, p->images_encoded, reused_images, p->images_in_prefix, p->images_from_feature_cache);
    printf("time: vision %.1f ms, prefill %.1f ms, prompt %.1f ms; first token %.1f ms; %d tokens in %.1f ms (%.1f tok/s)\n",
           p->vision_ms, p->prefill_ms, p->total_ms, r->first_token_ms, r->n_tokens, r->generate_ms,
           r->generate_ms > 0 ? 1e3 * r->n_tokens / r->generate_ms : 0.0);
    qvlm_cache_counters cc;
    qvlm_cache_counters_get(c->cache, &cc);
    printf("cache: %lld checkpoints, %lld images, %.1f of %.0f MiB; %llu of %llu lookups hit\n", (long long)cc.checkpoints,
           (long long)cc.images, (double)cc.bytes / (1 << 20), (double)cc.budget_bytes / (1 << 20),
           (unsigned long long)cc.hits, (unsigned long long)cc.lookups);
}

static void cmd_image(chat *c, const char *path) {
    char *real = *path ? realpath(path, NULL) : NULL;
    if (!real) printf("no such file: %s\n", path);
    else if (c->n_pending == MAX_PENDING_IMAGES) printf("at most %d images per message\n", MAX_PENDING_IMAGES), free(real);
    else printf("(image %d attached: %s)\n", c->n_pending + 1, real), c->pending[c->n_pending++] = real;
}

static void cmd_save(chat *c, const char *path) {
    char *text = json_dumps(c->conv, JSON_INDENT(2));
    qvlm_error err;
    if (!text) printf("out of memory\n");
    else if (qvlm_file_write_atomic(path, text, strlen(text), &err)) printf("save failed: %s\n", err.msg);
    else printf("(saved %zu messages to %s)\n", json_array_size(c->conv), path);
    free(text);
}

/* The conversation must be an array of objects with a role; the rest is checked next turn. */
static void cmd_load(chat *c, const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, JSON_ALLOW_NUL, &je); /* answers may hold U+0000 */
    size_t i;
    json_t *m;
    bool ok = json_is_array(j);
    json_array_foreach(ok ? j : NULL, i, m) ok &= json_is_string(json_object_get(m, "role"));
    if (!ok) {
        printf("load failed: %s: %s\n", path, j ? "not an array of messages with roles" : je.text);
        json_decref(j);
        return;
    }
    json_decref(c->conv);
    c->conv = j;
    c->have_last = false;
    printf("(loaded %zu messages)\n", json_array_size(j));
}

static void cmd_reset(chat *c) {
    json_array_clear(c->conv);
    if (c->o.system) json_array_append_new(c->conv, json_pack("{s:s, s:s}", "role", "system", "content", c->o.system));
    clear_pending(c);
    c->have_last = false;
    printf("(conversation cleared)\n");
}

/* Returns false for /quit. */
static bool command(chat *c, char *line) {
    char *arg = line + strcspn(line, " \t");
    if (*arg) *arg++ = 0;
    arg += strspn(arg, " \t");
    if (strcmp(line, "/quit") == 0 || strcmp(line, "/exit") == 0) return false;
    if (strcmp(line, "/image") == 0) cmd_image(c, arg);
    else if (strcmp(line, "/reset") == 0) cmd_reset(c);
    else if (strcmp(line, "/stats") == 0) print_stats(c);
    else if (strcmp(line, "/save") == 0 && *arg) cmd_save(c, arg);
    else if (strcmp(line, "/load") == 0 && *arg) cmd_load(c, arg);
    else if (strcmp(line, "/think") == 0 && (strcmp(arg, "on") == 0 || strcmp(arg, "off") == 0))
        c->o.think = strcmp(arg, "on") == 0, printf("(thinking %s)\n", arg);
    else
        printf("commands: /image PATH, /reset, /stats, /save FILE, /load FILE, /think on|off, /quit\n");
    return true;
}

/* ==== the loop ================================================================================ */

static void loop(chat *c) {
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        if (c->interactive) fputs("> ", stdout), fflush(stdout);
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (n == 0) continue;
        if (line[0] == '/') {
            if (!command(c, line)) break;
        } else {
            turn(c, line);
        }
    }
    free(line);
}

static void usage(FILE *f) {
    fprintf(f, "usage: qvlm chat -m DIR [options]\n"
               "  --cache-gb N          memory for the cross-turn cache (default 2)\n"
               CLI_CACHE_HELP "  --cache-dir DIR       keep the cache on disk too\n" CLI_GEN_HELP
               "in the chat: /image PATH, /reset, /stats, /save FILE, /load FILE, /think on|off, /quit\n");
}

static int parse_args(int argc, char **argv, chat *c, cli_cache_opts *cache) {
    bool bad = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (cli_gen_opt(argc, argv, &i, &c->o, &bad)) {
        } else if (cli_cache_opt(argc, argv, &i, cache, &bad)) {
        } else {
            fprintf(stderr, "qvlm chat: unexpected argument '%s'\n", argv[i]);
            bad = true;
        }
    }
    if (!bad && !c->o.model_dir) fprintf(stderr, "qvlm chat: -m DIR is required\n"), bad = true;
    if (bad) usage(stderr);
    return bad ? 2 : -1;
}

static int start(chat *c, const cli_cache_opts *cache) {
    qvlm_error err;
    if (!(c->m = cli_load_model(&c->o, true))) return 1;
    qvlm_cache_config cc = cli_cache_config(cache, &c->o.model);
    qvlm_status rc = qvlm_model_cache_create(c->m, &cc, &c->cache, &err);
    qvlm_session_params sp = {.cache = c->cache, .n_ctx = c->o.n_ctx > 0 ? c->o.n_ctx : qvlm_model_n_ctx_train(c->m)};
    if (!rc) rc = qvlm_session_create(c->m, &sp, &c->s, &err);
    if (rc) {
        fprintf(stderr, "qvlm chat: %s\n", err.msg);
        return 1;
    }
    cli_progress_init(&c->pg, true);
    qvlm_session_set_progress(c->s, turn_progress, c);
    c->conv = json_array();
    if (c->o.system) json_array_append_new(c->conv, json_pack("{s:s, s:s}", "role", "system", "content", c->o.system));
    return 0;
}

int qvlm_cmd_chat(int argc, char **argv) {
    chat c = {0};
    cli_gen_opts_default(&c.o);
    cli_cache_opts cache = {.gb = 2, .host_gb = -1};
    int code = parse_args(argc, argv, &c, &cache);
    if (code >= 0) return code;
    c.interactive = isatty(STDIN_FILENO);
    code = start(&c, &cache);
    if (code == 0) {
        struct sigaction sa = {.sa_handler = on_sigint, .sa_flags = SA_RESTART};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        bool watching = pthread_create(&c.watcher, NULL, watch_sigint, &c) == 0;
        if (c.interactive) printf("qvlm chat: /image PATH attaches an image, /stats, /help; Ctrl-D leaves\n");
        loop(&c);
        atomic_store(&c.stop_watcher, true);
        if (watching) pthread_join(c.watcher, NULL);
        qvlm_error err;
        if (cache.dir && qvlm_cache_flush(c.cache, &err)) fprintf(stderr, "qvlm chat: %s\n", err.msg);
    }
    clear_pending(&c);
    json_decref(c.conv);
    qvlm_session_destroy(c.s);
    qvlm_cache_destroy(c.cache);
    qvlm_model_destroy(c.m);
    return code;
}
