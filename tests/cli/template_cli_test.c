/* template_cli_test.c - `qvlm template --model DIR` end to end, against every case of a chat
 * reference file made by transformers' apply_chat_template.
 *
 *   template_cli_test QVLM MODEL_DIR REFERENCE.json WORK_DIR
 *
 * For each case the request {kwargs..., messages, tools, add_generation_prompt} is written to
 * WORK_DIR and fed to the program on stdin. Its stdout must equal the case's "rendered" byte
 * for byte (exit 0), or it must exit 1 with "qvlm template: <error>\n" on stderr and nothing
 * on stdout. Keys keep their order (tools are printed with tojson, which keeps it too).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/fileio.h"
#include "core/json.h"

static char *slurp(const char *path, size_t *n) {
    char *buf = NULL;
    qvlm_error err;
    if (qvlm_file_read(path, 64u << 20, &buf, n, &err) != QVLM_OK) {
        *n = 0;
        return calloc(1, 1);
    }
    return buf;
}

/* Run QVLM on the case's request; 0 when it matches the reference. */
static int run_case(const char *qvlm, const char *model, const char *work, const json_t *c) {
    const char *name = json_string_value(json_object_get(c, "name"));
    char req[4096], out_path[4096], err_path[4096], cmd[16384];
    snprintf(req, sizeof(req), "%s/%s.request.json", work, name);
    snprintf(out_path, sizeof(out_path), "%s/%s.stdout", work, name);
    snprintf(err_path, sizeof(err_path), "%s/%s.stderr", work, name);
    json_t *request = json_deep_copy(json_object_get(c, "kwargs"));
    json_object_set(request, "messages", json_object_get(c, "messages"));
    json_object_set(request, "tools", json_object_get(c, "tools"));
    json_object_set(request, "add_generation_prompt", json_object_get(c, "add_generation_prompt"));
    int wrote = json_dump_file(request, req, JSON_INDENT(1));
    json_decref(request);
    if (wrote != 0) return fprintf(stderr, "%s: cannot write %s\n", name, req), 1;
    snprintf(cmd, sizeof(cmd), "'%s' template --model '%s' < '%s' > '%s' 2> '%s'", qvlm, model, req, out_path,
             err_path);
    int status = system(cmd), rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    size_t n_out, n_err;
    char *out = slurp(out_path, &n_out), *err = slurp(err_path, &n_err);
    const json_t *want = json_object_get(c, "rendered"), *want_err = json_object_get(c, "error");
    int bad;
    if (want) {
        bad =
            rc != 0 || n_out != json_string_length(want) || memcmp(out, json_string_value(want), n_out) != 0;
        if (bad)
            fprintf(stderr, "%s: exit %d (%s), stdout differs from the reference (see %s)\n", name, rc, err,
                    out_path);
    } else {
        char expect[2048];
        snprintf(expect, sizeof(expect), "qvlm template: %s\n", json_string_value(want_err));
        bad = rc != 1 || n_out != 0 || strcmp(err, expect) != 0;
        if (bad)
            fprintf(stderr, "%s: exit %d, stderr [%s], expected exit 1 and [%s]\n", name, rc, err, expect);
    }
    free(out);
    free(err);
    return bad;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: template_cli_test QVLM MODEL_DIR REFERENCE.json WORK_DIR\n");
        return 2;
    }
    json_t *cases = NULL;
    qvlm_error err;
    if (qvlm_json_load_file(argv[3], 64u << 20, &cases, &err) != QVLM_OK || !json_is_array(cases)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int failures = 0;
    size_t i;
    const json_t *c;
    json_array_foreach(cases, i, c) failures += run_case(argv[1], argv[2], argv[4], c);
    printf("qvlm template: %zu cases, %d differ from the reference\n", json_array_size(cases), failures);
    json_decref(cases);
    return failures || i == 0 ? 1 : 0;
}
