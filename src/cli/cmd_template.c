/* cmd_template.c - `qvlm template`: render a model's chat template for a request read on stdin.
 *
 *   echo '{"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": true}' |
 *       qvlm template --model DIR [--template FILE]
 *
 * The request's keys (messages, tools, add_generation_prompt, enable_thinking, add_vision_id,
 * anything else) become template variables, as apply_chat_template's keyword arguments do.
 * The prompt goes to stdout byte for byte, nothing added; errors go to stderr with exit 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "core/fileio.h"
#include "core/json.h"
#include "model/chat_template.h"

#define STDIN_MAX_BYTES (256u << 20)

static void usage(FILE *f) {
    fprintf(f, "usage: qvlm template --model DIR [--template FILE] < request.json\n"
               "  Renders DIR's chat template (chat_template.jinja, else tokenizer_config.json) for\n"
               "  the JSON request on stdin: {\"messages\": [...], \"tools\": [...],\n"
               "  \"add_generation_prompt\": true, \"enable_thinking\": false, \"add_vision_id\": true}.\n"
               "  --template FILE renders FILE instead (--model may then be left out).\n");
}

/* Read all of stdin, refusing more than STDIN_MAX_BYTES. */
static char *read_stdin(size_t *n_out) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (got == 0) break;
        if (n == cap) {
            char *p = cap >= STDIN_MAX_BYTES ? NULL : realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                return NULL;
            }
            buf = p;
            cap *= 2;
        }
    }
    *n_out = n;
    return buf;
}

static qvlm_status load_template(const char *model, const char *file, qvlm_chat_template **t,
                                 qvlm_error *err) {
    if (!file) return qvlm_chat_template_load_dir(model, t, err);
    char *src;
    size_t n;
    qvlm_status rc = qvlm_file_read(file, QVLM_CHAT_TEMPLATE_MAX_SOURCE_BYTES, &src, &n, err);
    if (rc) return rc;
    rc = qvlm_chat_template_parse(src, n, file, t, err);
    free(src);
    return rc;
}

int qvlm_cmd_template(int argc, char **argv) {
    const char *model = NULL, *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
            model = argv[++i];
        } else if (strcmp(argv[i], "--template") == 0 && i + 1 < argc) {
            file = argv[++i];
        } else {
            fprintf(stderr, "qvlm template: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!model && !file) {
        usage(stderr);
        return 2;
    }
    qvlm_error err = {0};
    qvlm_chat_template *t = NULL;
    json_t *ctx = NULL;
    char *in = NULL, *prompt = NULL;
    size_t n_in = 0, n_prompt = 0;
    qvlm_status rc = load_template(model, file, &t, &err);
    if (rc == QVLM_OK && !(in = read_stdin(&n_in)))
        rc = qvlm_errorf(&err, QVLM_E_IO, "stdin: read failed or larger than %u bytes", STDIN_MAX_BYTES);
    if (rc == QVLM_OK) rc = qvlm_json_parse(in, n_in, "stdin", &ctx, &err);
    if (rc == QVLM_OK) rc = qvlm_chat_template_render(t, ctx, &prompt, &n_prompt, &err);
    if (rc == QVLM_OK && fwrite(prompt, 1, n_prompt, stdout) != n_prompt)
        rc = qvlm_errorf(&err, QVLM_E_IO, "stdout: write failed");
    if (rc) fprintf(stderr, "qvlm template: %s\n", err.msg);
    free(prompt);
    free(in);
    json_decref(ctx);
    qvlm_chat_template_destroy(t);
    return rc ? 1 : 0;
}
