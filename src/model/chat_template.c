/* chat_template.c - finding a model's chat template and rendering it the transformers way
 * (qwen35-arch.md §9). The Jinja language itself lives in jinja*.c; this file knows where
 * Hugging Face checkpoints keep the template and which variables apply_chat_template adds.
 */
#include "model/chat_template.h"

#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/json.h"
#include "model/jinja.h"

struct qvlm_chat_template {
    jinja_template *tpl;
    json_t *defaults; /* variables the context may override: tools, documents, special tokens */
    qvlm_chat_template_limits lim;
};

#define TOKENIZER_CONFIG_MAX_BYTES (64u << 20)

void qvlm_chat_template_default_limits(qvlm_chat_template_limits *lim) {
    lim->max_output_bytes = 64u << 20;
    lim->max_memory_bytes = 256u << 20;
    lim->max_steps = 50u * 1000u * 1000u;
    lim->max_depth = 400;
}

/* What apply_chat_template always passes: render(messages=..., tools=None, documents=None,
 * add_generation_prompt=False, ...). */
static json_t *base_defaults(void) {
    return json_pack("{s:n, s:n, s:b}", "tools", "documents", "add_generation_prompt", 0);
}

qvlm_status qvlm_chat_template_parse(const char *source, size_t n_bytes, const char *name,
                                     qvlm_chat_template **out, qvlm_error *err) {
    *out = NULL;
    if (!name) name = "chat_template";
    if (n_bytes > QVLM_CHAT_TEMPLATE_MAX_SOURCE_BYTES)
        return qvlm_errorf(err, QVLM_E_LIMIT, "%s: template of %zu bytes exceeds %u", name, n_bytes,
                           QVLM_CHAT_TEMPLATE_MAX_SOURCE_BYTES);
    qvlm_chat_template *t = calloc(1, sizeof(*t));
    if (!t || !(t->defaults = base_defaults())) {
        free(t);
        return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", name);
    }
    qvlm_chat_template_default_limits(&t->lim);
    qvlm_status rc = jinja_template_parse(source, n_bytes, name, &t->tpl, err);
    if (rc) {
        qvlm_chat_template_destroy(t);
        return rc;
    }
    *out = t;
    return QVLM_OK;
}

void qvlm_chat_template_destroy(qvlm_chat_template *t) {
    if (!t) return;
    jinja_template_destroy(t->tpl);
    json_decref(t->defaults);
    free(t);
}

void qvlm_chat_template_set_limits(qvlm_chat_template *t, const qvlm_chat_template_limits *lim) {
    t->lim = *lim;
}

qvlm_status qvlm_chat_template_render(const qvlm_chat_template *t, const json_t *context, char **out,
                                      size_t *n_bytes, qvlm_error *err) {
    *out = NULL;
    if (n_bytes) *n_bytes = 0;
    if (!json_is_object(context))
        return qvlm_errorf(err, QVLM_E_INVALID, "chat template context must be a JSON object, not %s",
                           qvlm_json_type_name(context));
    jinja_limits lim = {t->lim.max_output_bytes, t->lim.max_memory_bytes, t->lim.max_steps, t->lim.max_depth};
    return jinja_render(t->tpl, context, t->defaults, &lim, out, n_bytes, err);
}

/* ==== Loading from a model directory ============================================================ */

/* tokenizer_config.json's chat_template: a string, or [{name, template}, ...] with "default". */
static qvlm_status pick_template(const json_t *cfg, const char *path, const char **src, size_t *n,
                                 qvlm_error *err) {
    const json_t *ct = json_object_get(cfg, "chat_template");
    if (json_is_string(ct)) {
        *src = json_string_value(ct);
        *n = json_string_length(ct);
        return QVLM_OK;
    }
    if (!ct || json_is_null(ct)) return qvlm_errorf(err, QVLM_E_NOT_FOUND, "%s: no chat_template", path);
    if (!json_is_array(ct))
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: chat_template is %s (must be a string or a list)", path,
                           qvlm_json_type_name(ct));
    size_t i;
    const json_t *entry;
    json_array_foreach(ct, i, entry) {
        const json_t *name = json_object_get(entry, "name"), *tmpl = json_object_get(entry, "template");
        if (json_is_string(name) && strcmp(json_string_value(name), "default") == 0) {
            if (!json_is_string(tmpl))
                return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: chat_template[%zu].template must be a string",
                                   path, i);
            *src = json_string_value(tmpl);
            *n = json_string_length(tmpl);
            return QVLM_OK;
        }
    }
    return qvlm_errorf(err, QVLM_E_NOT_FOUND,
                       "%s: chat_template lists several templates but none named \"default\"", path);
}

/* Special tokens as transformers' special_tokens_map gives them to the template: a string,
 * or the "content" of a serialized AddedToken. */
static qvlm_status add_special_tokens(json_t *defaults, const json_t *cfg) {
    static const char *const keys[] = {"bos_token", "eos_token", "unk_token",  "sep_token",
                                       "pad_token", "cls_token", "mask_token", NULL};
    for (const char *const *k = keys; *k; k++) {
        const json_t *v = json_object_get(cfg, *k);
        if (json_is_object(v)) v = json_object_get(v, "content");
        if (json_is_string(v) && json_object_set(defaults, *k, (json_t *)v) != 0) return QVLM_E_NOMEM;
    }
    const json_t *extra = json_object_get(cfg, "additional_special_tokens");
    if (!json_is_array(extra)) return QVLM_OK;
    json_t *list = json_array();
    size_t i;
    const json_t *v;
    json_array_foreach(extra, i, v) {
        const json_t *s = json_is_object(v) ? json_object_get(v, "content") : v;
        if (json_is_string(s)) json_array_append(list, (json_t *)s);
    }
    return list && json_object_set_new(defaults, "additional_special_tokens", list) == 0 ? QVLM_OK
                                                                                         : QVLM_E_NOMEM;
}

qvlm_status qvlm_chat_template_load_dir(const char *model_dir, qvlm_chat_template **out, qvlm_error *err) {
    *out = NULL;
    char *jinja_path = qvlm_path_join(model_dir, "chat_template.jinja");
    char *cfg_path = qvlm_path_join(model_dir, "tokenizer_config.json");
    char *text = NULL;
    json_t *cfg = NULL;
    qvlm_status rc = jinja_path && cfg_path ? QVLM_OK : qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    if (rc == QVLM_OK && qvlm_path_exists(cfg_path))
        rc = qvlm_json_load_file(cfg_path, TOKENIZER_CONFIG_MAX_BYTES, &cfg, err);
    if (rc == QVLM_OK && !json_is_object(cfg) && cfg)
        rc = qvlm_errorf(err, QVLM_E_CORRUPT, "%s: must be a JSON object", cfg_path);
    if (rc == QVLM_OK && qvlm_path_exists(jinja_path)) {
        size_t n;
        rc = qvlm_file_read(jinja_path, QVLM_CHAT_TEMPLATE_MAX_SOURCE_BYTES, &text, &n, err);
        if (rc == QVLM_OK) rc = qvlm_chat_template_parse(text, n, jinja_path, out, err);
    } else if (rc == QVLM_OK && cfg) {
        const char *src = NULL;
        size_t n = 0;
        rc = pick_template(cfg, cfg_path, &src, &n, err);
        if (rc == QVLM_OK) rc = qvlm_chat_template_parse(src, n, cfg_path, out, err);
    } else if (rc == QVLM_OK) {
        rc = qvlm_errorf(err, QVLM_E_NOT_FOUND,
                         "%s: no chat template (neither chat_template.jinja nor "
                         "tokenizer_config.json)",
                         model_dir);
    }
    if (rc == QVLM_OK && cfg && add_special_tokens((*out)->defaults, cfg) != QVLM_OK)
        rc = qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", cfg_path);
    if (rc) {
        qvlm_chat_template_destroy(*out);
        *out = NULL;
    }
    free(text);
    json_decref(cfg);
    free(jinja_path);
    free(cfg_path);
    return rc;
}
