/* fuzz_template.c - the chat template interpreter on arbitrary bytes: parse them as a template
 * and render it with a small fixed chat context, under tight limits so every input finishes
 * fast. Any input must give QVLM_OK or an error code with a message; never a crash, a hang,
 * a leak or a sanitizer report. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/chat_template.h"

static const char CONTEXT[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be terse.\"},"
    " {\"role\": \"user\", \"content\": [{\"type\": \"image\"}, {\"type\": \"text\", \"text\": \"What is "
    "\\u00e9?\"}]},"
    " {\"role\": \"assistant\", \"content\": \"<think>\\nhm\\n</think>\\n\\nA cat.\","
    "  \"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": {\"a\": [1, 2.5, null, true]}}}]},"
    " {\"role\": \"tool\", \"content\": \"42\"}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": "
    "\"object\"}}}],"
    " \"add_generation_prompt\": true, \"enable_thinking\": false, \"add_vision_id\": true, \"bos_token\": "
    "\"<s>\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qvlm_chat_template *t = NULL;
    qvlm_error err = {0};
    qvlm_status rc = qvlm_chat_template_parse((const char *)data, size, "fuzz", &t, &err);
    if (rc == QVLM_OK) {
        qvlm_chat_template_limits lim = {
            .max_output_bytes = 1 << 20, .max_memory_bytes = 32 << 20, .max_steps = 200000, .max_depth = 200};
        qvlm_chat_template_set_limits(t, &lim);
        json_t *ctx = json_loads(CONTEXT, 0, NULL);
        char *out = NULL;
        size_t n = 0;
        if (!ctx) __builtin_trap();
        err.msg[0] = '\0';
        rc = qvlm_chat_template_render(t, ctx, &out, &n, &err);
        if (rc == QVLM_OK && (!out || out[n] != '\0')) __builtin_trap(); /* output must be terminated */
        if (rc != QVLM_OK && out) __builtin_trap();                      /* failures leave no output */
        free(out);
        json_decref(ctx);
        qvlm_chat_template_destroy(t);
    }
    /* an error without a message is a bug; raise_exception('') is the one legal empty message */
    if (rc != QVLM_OK && err.msg[0] == '\0' && rc != QVLM_E_INVALID) __builtin_trap();
    return 0;
}
