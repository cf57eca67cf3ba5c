/* chat_template.h - a model's chat template, rendered byte-identical with transformers.
 *
 * Qwen3.5 checkpoints carry their prompt format as a Jinja template (qwen35-arch.md §9):
 * `chat_template.jinja` in the model directory, or `chat_template` in tokenizer_config.json
 * (a string, or a list of {name, template} of which "default" is used). It is rendered by
 * qvlm's own Jinja interpreter (src/model/jinja*.c), configured as transformers'
 * apply_chat_template configures jinja2: sandboxed, trim_blocks, lstrip_blocks, loop
 * controls, raise_exception(), strftime_now() and a json.dumps-style tojson.
 *
 * The render context is a JSON object whose keys become template variables: "messages",
 * "tools", "add_generation_prompt", "enable_thinking", "add_vision_id", ... exactly as an
 * OpenAI-style request carries them. Like apply_chat_template, variables the caller does
 * not give default to: tools = None, documents = None, add_generation_prompt = False, and
 * (for load_dir) the special tokens of tokenizer_config.json (bos_token, eos_token, ...).
 *
 * Thread safety: a template is immutable after parse / load; any number of threads may
 * render it at once. qvlm_chat_template_set_limits must happen before it is shared.
 */
#ifndef QVLM_MODEL_CHAT_TEMPLATE_H
#define QVLM_MODEL_CHAT_TEMPLATE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct qvlm_chat_template qvlm_chat_template;

/* Bounds on one render, so a hostile template can neither hang nor exhaust memory. Crossing
 * one is QVLM_E_LIMIT with the template line in the message. */
typedef struct qvlm_chat_template_limits {
    size_t max_output_bytes; /* rendered text; default 64 MiB */
    size_t max_memory_bytes; /* live strings / lists / dicts built while rendering; default 256 MiB */
    uint64_t max_steps;      /* work: expressions, statements, loop iterations, bytes copied / 64;
                                default 50 million (about a second) */
    uint32_t max_depth;      /* nesting of evaluation incl. macro recursion; default 400, which
                                needs under 256 KiB of C stack (about 1 MiB under ASan) */
} qvlm_chat_template_limits;

#define QVLM_CHAT_TEMPLATE_MAX_SOURCE_BYTES (4u << 20) /* template files larger than this are refused */

void qvlm_chat_template_default_limits(qvlm_chat_template_limits *lim);

/* Parse template source (n_bytes, need not be NUL-terminated); `name` labels errors (NULL:
 * "chat_template"). On success the caller owns *out (qvlm_chat_template_destroy).
 * Errors (*out NULL): QVLM_E_CORRUPT syntax error or invalid UTF-8, QVLM_E_UNSUPPORTED a
 * construct this interpreter lacks (unknown filter / test / tag), QVLM_E_LIMIT nesting
 * deeper than the parser allows, QVLM_E_NOMEM. Messages read "name:line: what". */
qvlm_status qvlm_chat_template_parse(const char *source, size_t n_bytes, const char *name,
                                     qvlm_chat_template **out, qvlm_error *err);

/* Load model_dir/chat_template.jinja, else the chat_template of model_dir/tokenizer_config.json
 * (the "default" entry when it is a list). Special tokens of tokenizer_config.json become
 * default variables. Errors: those of parse, plus QVLM_E_NOT_FOUND (no template in the
 * directory), QVLM_E_IO, QVLM_E_CORRUPT (tokenizer_config.json malformed). */
qvlm_status qvlm_chat_template_load_dir(const char *model_dir, qvlm_chat_template **out, qvlm_error *err);

void qvlm_chat_template_destroy(qvlm_chat_template *t); /* NULL is a no-op */

/* Replace the render limits (see qvlm_chat_template_limits). Not thread-safe: call before
 * the template is shared. */
void qvlm_chat_template_set_limits(qvlm_chat_template *t, const qvlm_chat_template_limits *lim);

/* Render with `context` (a JSON object, borrowed for the call and not modified; it must not
 * be modified by another thread meanwhile). On success *out is malloc'd and NUL-terminated
 * (the caller frees it) and *n_bytes (may be NULL) is its length; the text may contain NUL
 * bytes when the context does. Thread-safe.
 * Errors (*out NULL):
 *  - QVLM_E_INVALID: the template raised. For raise_exception(msg) the message is exactly
 *    msg; for other runtime errors it is exactly Python's / Jinja's text, e.g.
 *    "'list object' has no attribute 'startswith'" or
 *    "can only concatenate str (not \"list\") to str".
 *  - QVLM_E_UNSUPPORTED: a construct this interpreter lacks, reached at run time.
 *  - QVLM_E_LIMIT: a bound of qvlm_chat_template_limits was crossed.
 *  - QVLM_E_NOMEM. */
qvlm_status qvlm_chat_template_render(const qvlm_chat_template *t, const json_t *context, char **out,
                                      size_t *n_bytes, qvlm_error *err);

#endif /* QVLM_MODEL_CHAT_TEMPLATE_H */
