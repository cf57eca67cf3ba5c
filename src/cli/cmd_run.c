/* cmd_run.c - `qvlm run`: one answer to one prompt, streamed.
 *
 *   qvlm run -m DIR [--image FILE]... -p TEXT [--no-think] [sampling options]
 *
 * The answer goes to stdout; the thinking is dimmed on a terminal, else written to stderr, so
 * `qvlm run ... > answer.txt` keeps only the answer. The prompt is one user message (images
 * first, then the text) rendered with the model's chat template, as a server request would be. */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_gen.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/status.h"

#define MAX_CLI_IMAGES 64

static void usage(FILE *f) {
    fprintf(f, "usage: qvlm run -m DIR [--image FILE]... -p TEXT [options]\n"
               "  -p, --prompt TEXT     the user message ('-' reads it from stdin)\n"
               "  --image FILE          attach an image (PNG, JPEG, WebP); repeatable, in order\n"
               "  --stats               print prompt and speed numbers to stderr at the end\n" CLI_GEN_HELP);
}

/* [{system}, {user: [images..., text]}] with images as absolute paths. */
static json_t *build_messages(const cli_gen_opts *o, char *const *images, int n_images, const char *prompt) {
    json_t *msgs = json_array(), *parts = json_array();
    if (o->system) json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content", o->system));
    for (int i = 0; i < n_images; i++)
        json_array_append_new(parts, json_pack("{s:s, s:{s:s}}", "type", "image_url", "image_url", "url", images[i]));
    json_array_append_new(parts, json_pack("{s:s, s:s}", "type", "text", "text", prompt));
    json_array_append_new(msgs, json_pack("{s:s, s:o}", "role", "user", "content", parts));
    return msgs;
}

static char *read_all_stdin(void) {
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    for (size_t got; s && (got = fread(s + n, 1, cap - n - 1, stdin)) > 0;) {
        n += got;
        if (n + 1 == cap) {
            char *t = realloc(s, cap *= 2);
            if (!t) free(s);
            s = t;
        }
    }
    if (s) s[n] = 0;
    return s;
}

static void print_stats(const qvlm_session *s, const qvlm_reply_stats *rs) {
    qvlm_prompt_stats ps;
    qvlm_session_prompt_stats(s, &ps);
    fprintf(stderr, "\nprompt: %lld tokens, %d images, %.1f ms (vision %.1f ms); generated %d tokens in %.1f ms (%.1f tok/s)\n",
            (long long)ps.prompt_tokens, ps.images_total, ps.total_ms, ps.vision_ms, rs->n_tokens, rs->generate_ms,
            rs->generate_ms > 0 ? 1e3 * rs->n_tokens / rs->generate_ms : 0.0);
}

static int run(const cli_gen_opts *o, char *const *images, int n_images, const char *prompt, bool stats) {
    qvlm_model *m = cli_load_model(o, true);
    if (!m) return 1;
    qvlm_error err;
    qvlm_session *s = NULL;
    qvlm_reply *r = NULL;
    char *msgs_text = NULL;
    int code = 1;
    qvlm_session_params sp = {.n_ctx = o->n_ctx > 0 ? o->n_ctx : qvlm_model_n_ctx_train(m)};
    qvlm_status rc = qvlm_session_create(m, &sp, &s, &err);
    cli_progress pg;
    cli_progress_init(&pg, true);
    if (!rc) {
        qvlm_session_set_progress(s, cli_progress_fn, &pg);
        json_t *msgs = build_messages(o, images, n_images, prompt);
        msgs_text = msgs ? json_dumps(msgs, JSON_COMPACT) : NULL;
        json_decref(msgs);
        /* Local files are the user's own: any readable path is allowed. */
        qvlm_chat_options co = {.enable_thinking = o->think ? -1 : 0, .allow_dir = "/"};
        rc = msgs_text ? qvlm_session_chat(s, msgs_text, strlen(msgs_text), &co, &err)
                       : qvlm_errorf(&err, QVLM_E_NOMEM, "out of memory");
        cli_progress_clear(&pg);
    }
    qvlm_reply_options ro = {.in_thinking = o->think, .parse_tool_calls = false};
    if (!rc) rc = qvlm_reply_create(&ro, &r, &err);
    if (!rc) {
        cli_printer pr;
        cli_printer_init(&pr, r);
        qvlm_reply_stats rs;
        rc = qvlm_session_generate_reply(s, &o->sampling, o->max_tokens, r, cli_printer_delta, &pr, &rs, &err);
        cli_printer_end(&pr);
        if (!rc && stats) print_stats(s, &rs);
    }
    if (rc) fprintf(stderr, "qvlm run: %s\n", err.msg);
    else code = 0;
    free(msgs_text);
    qvlm_reply_destroy(r);
    qvlm_session_destroy(s);
    qvlm_model_destroy(m);
    return code;
}

int qvlm_cmd_run(int argc, char **argv) {
    cli_gen_opts o;
    cli_gen_opts_default(&o);
    const char *prompt = NULL, *v = NULL;
    char *images[MAX_CLI_IMAGES];
    int n_images = 0;
    bool bad = false, stats = false;
    for (int i = 1; i < argc && !bad; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (cli_gen_opt(argc, argv, &i, &o, &bad)) {
        } else if (cli_opt(argc, argv, &i, "-p", &v, &bad) || cli_opt(argc, argv, &i, "--prompt", &v, &bad)) {
            prompt = v;
        } else if (cli_opt(argc, argv, &i, "--image", &v, &bad)) {
            if (!v) break;
            if (n_images == MAX_CLI_IMAGES) {
                fprintf(stderr, "qvlm run: more than %d images\n", MAX_CLI_IMAGES);
                bad = true;
            } else if (!(images[n_images] = realpath(v, NULL))) {
                fprintf(stderr, "qvlm run: --image %s: no such file\n", v);
                bad = true;
            } else {
                n_images++;
            }
        } else if (strcmp(argv[i], "--stats") == 0) {
            stats = true;
        } else {
            fprintf(stderr, "qvlm run: unexpected argument '%s'\n", argv[i]);
            bad = true;
        }
    }
    if (!bad && (!o.model_dir || !prompt)) {
        fprintf(stderr, "qvlm run: -m DIR and -p TEXT are required\n");
        bad = true;
    }
    char *from_stdin = !bad && strcmp(prompt, "-") == 0 ? read_all_stdin() : NULL;
    int code = 2;
    if (bad) usage(stderr);
    else {
        if (!o.seed_given) o.sampling.seed = cli_random_seed();
        code = run(&o, images, n_images, from_stdin ? from_stdin : prompt, stats);
    }
    free(from_stdin);
    for (int i = 0; i < n_images; i++) free(images[i]);
    return code;
}
