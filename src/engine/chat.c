/* chat.c - OpenAI-style messages to a cached prompt (qvlm_session_chat), and the public text
 * helpers (tokenize, detokenize, streaming decode).
 *
 * A request's images are gathered from its messages in order of appearance (the order the
 * chat template places their placeholders), decoded from data: URIs or read from files under
 * an allowed directory; the messages are rendered with the model's own template and
 * tokenized; the result goes through qvlm_session_prompt, so a resent conversation reuses
 * everything the cache holds. */
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "engine/session_impl.h"
#include "model/chat_template.h"
#include "model/tokenizer.h"

#define MAX_IMAGES 256

/* ---- text helpers (public) ---------------------------------------------------------------------- */

static qvlm_status need_tokenizer(const qvlm_model *m, qvlm_error *err) {
    return m->tokenizer ? QVLM_OK
                        : qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s: the model directory has no tokenizer.json", m->dir);
}

qvlm_status qvlm_tokenize(const qvlm_model *m, const char *text, size_t n, int32_t **ids, size_t *n_ids,
                          qvlm_error *err) {
    qvlm_status rc = need_tokenizer(m, err);
    return rc ? rc : qvlm_tokenizer_encode(m->tokenizer, text, n, ids, n_ids, err);
}

qvlm_status qvlm_detokenize(const qvlm_model *m, const int32_t *ids, size_t n, char **text, size_t *n_bytes,
                            qvlm_error *err) {
    qvlm_status rc = need_tokenizer(m, err);
    return rc ? rc : qvlm_tokenizer_decode(m->tokenizer, ids, n, text, n_bytes, err);
}

int32_t qvlm_token_id(const qvlm_model *m, const char *token) {
    return m->tokenizer ? qvlm_tokenizer_find(m->tokenizer, token) : -1;
}

bool qvlm_token_is_special(const qvlm_model *m, int32_t id) {
    return m->tokenizer && qvlm_tokenizer_is_special(m->tokenizer, id);
}

struct qvlm_text_stream {
    qvlm_detok_stream s;
};

qvlm_status qvlm_text_stream_create(const qvlm_model *m, qvlm_text_stream **out, qvlm_error *err) {
    *out = NULL;
    qvlm_status rc = need_tokenizer(m, err);
    if (rc) return rc;
    qvlm_text_stream *t = calloc(1, sizeof(*t));
    if (!t) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    qvlm_detok_stream_init(&t->s, m->tokenizer);
    *out = t;
    return QVLM_OK;
}

qvlm_status qvlm_text_stream_push(qvlm_text_stream *s, int32_t id, const char **text, size_t *n, qvlm_error *err) {
    return qvlm_detok_stream_push(&s->s, id, text, n, err);
}

qvlm_status qvlm_text_stream_flush(qvlm_text_stream *s, const char **text, size_t *n, qvlm_error *err) {
    return qvlm_detok_stream_flush(&s->s, text, n, err);
}

void qvlm_text_stream_destroy(qvlm_text_stream *s) {
    if (!s) return;
    qvlm_detok_stream_free(&s->s);
    free(s);
}

/* ---- images in messages ---------------------------------------------------------------------------- */

typedef struct gathered {
    qvlm_image_input in[MAX_IMAGES];
    uint8_t *owned[MAX_IMAGES]; /* decoded base64 */
    char *paths[MAX_IMAGES];
    int n;
} gathered;

static void gathered_free(gathered *g) {
    for (int i = 0; i < g->n; i++) free(g->owned[i]), free(g->paths[i]);
}

/* data:[<mediatype>];base64,<data> */
static qvlm_status from_data_uri(const char *uri, size_t len, const char *where, uint8_t **out, size_t *n,
                                 qvlm_error *err) {
    const char *comma = memchr(uri, ',', len);
    if (!comma) return qvlm_errorf(err, QVLM_E_INVALID, "%s: a data: URI without a comma", where);
    size_t head = (size_t)(comma - uri);
    if (head < 7 || memcmp(comma - 7, ";base64", 7) != 0)
        return qvlm_errorf(err, QVLM_E_INVALID, "%s: only base64 data: URIs are supported", where);
    const char *b64 = comma + 1;
    size_t b64_len = len - head - 1, cap = b64_len / 4 * 3 + 3;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf) return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", where);
    if (sodium_init() < 0) { /* idempotent and thread-safe; the codec itself needs no state */
        free(buf);
        return qvlm_errorf(err, QVLM_E_INTERNAL, "%s: libsodium failed to initialise", where);
    }
    size_t got = 0;
    const char *end = NULL;
    /* Whitespace (line breaks of MIME-style encoders) is ignored; anything else is an error. */
    if (sodium_base642bin(buf, cap, b64, b64_len, " \t\r\n", &got, &end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
        (end && end != b64 + b64_len)) {
        free(buf);
        return qvlm_errorf(err, QVLM_E_INVALID, "%s: invalid base64 data", where);
    }
    if (got == 0) {
        free(buf);
        return qvlm_errorf(err, QVLM_E_INVALID, "%s: empty image data", where);
    }
    *out = buf;
    *n = got;
    return QVLM_OK;
}

/* A local path (or file:// URL), allowed only inside allow_dir (after resolving links). */
static qvlm_status from_path(const char *src, const char *allow_dir, const char *where, char **out, qvlm_error *err) {
    if (!allow_dir)
        return qvlm_errorf(err, QVLM_E_INVALID, "%s: local image files are not allowed (the server needs --allow-dir)", where);
    const char *p = strncmp(src, "file://", 7) == 0 ? src + 7 : src;
    char real[PATH_MAX], base[PATH_MAX];
    if (!realpath(allow_dir, base)) return qvlm_errorf(err, QVLM_E_INVALID, "%s: the allowed directory does not exist", where);
    if (!realpath(p, real)) return qvlm_errorf(err, QVLM_E_INVALID, "%s: no such file", where);
    size_t bl = strlen(base);
    if (strncmp(real, base, bl) != 0 || (real[bl] != '/' && base[bl - 1] != '/'))
        return qvlm_errorf(err, QVLM_E_INVALID, "%s: the file is outside the allowed directory", where);
    *out = strdup(real);
    return *out ? QVLM_OK : qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
}

static qvlm_status add_image(gathered *g, const json_t *src, const char *allow_dir, const char *where,
                             qvlm_error *err) {
    if (!json_is_string(src)) return qvlm_errorf(err, QVLM_E_INVALID, "%s: must be a string (a data: URI or a path)", where);
    if (g->n >= MAX_IMAGES) return qvlm_errorf(err, QVLM_E_LIMIT, "%s: more than %d images in one request", where, MAX_IMAGES);
    const char *s = json_string_value(src);
    size_t len = json_string_length(src);
    qvlm_status rc;
    if (strncmp(s, "data:", 5) == 0) {
        size_t n = 0;
        rc = from_data_uri(s, len, where, &g->owned[g->n], &n, err);
        if (!rc) g->in[g->n] = (qvlm_image_input){.data = g->owned[g->n], .n_bytes = n};
    } else if (strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0) {
        rc = qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s: remote image URLs are not fetched; send the image as a data: URI", where);
    } else {
        rc = from_path(s, allow_dir, where, &g->paths[g->n], err);
        if (!rc) g->in[g->n] = (qvlm_image_input){.path = g->paths[g->n]};
    }
    if (!rc) g->n++;
    return rc;
}

/* Walk the messages: gather images in order; turn tool-call arguments sent as JSON strings into
 * objects (the template iterates them as mappings, as transformers expects). */
static qvlm_status walk_messages(json_t *msgs, const char *allow_dir, gathered *g, qvlm_error *err) {
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return qvlm_errorf(err, QVLM_E_INVALID, "messages must be a non-empty array");
    size_t i, j;
    json_t *m, *part;
    char where[160];
    json_array_foreach(msgs, i, m) {
        if (!json_is_object(m)) return qvlm_errorf(err, QVLM_E_INVALID, "messages[%zu] must be an object", i);
        if (!json_is_string(json_object_get(m, "role")))
            return qvlm_errorf(err, QVLM_E_INVALID, "messages[%zu].role must be a string", i);
        json_t *content = json_object_get(m, "content");
        if (content && !json_is_null(content) && !json_is_string(content) && !json_is_array(content))
            return qvlm_errorf(err, QVLM_E_INVALID, "messages[%zu].content must be a string or an array of parts", i);
        json_array_foreach(json_is_array(content) ? content : NULL, j, part) {
            const char *type = json_string_value(json_object_get(part, "type"));
            snprintf(where, sizeof(where), "messages[%zu].content[%zu]", i, j);
            if (!json_is_object(part) || !type)
                return qvlm_errorf(err, QVLM_E_INVALID, "%s must be an object with a \"type\"", where);
            qvlm_status rc = QVLM_OK;
            if (strcmp(type, "image_url") == 0) {
                json_t *u = json_object_get(part, "image_url");
                snprintf(where, sizeof(where), "messages[%zu].content[%zu].image_url%s", i, j, json_is_object(u) ? ".url" : "");
                rc = add_image(g, json_is_object(u) ? json_object_get(u, "url") : u, allow_dir, where, err);
            } else if (strcmp(type, "image") == 0) {
                snprintf(where, sizeof(where), "messages[%zu].content[%zu].image", i, j);
                rc = add_image(g, json_object_get(part, "image"), allow_dir, where, err);
            } else if (strcmp(type, "video") == 0 || strcmp(type, "video_url") == 0) {
                rc = qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s: video input is not supported", where);
            } else if (strcmp(type, "text") == 0) {
                if (!json_is_string(json_object_get(part, "text")))
                    rc = qvlm_errorf(err, QVLM_E_INVALID, "%s.text must be a string", where);
            } else {
                rc = qvlm_errorf(err, QVLM_E_INVALID, "%s: unknown part type \"%s\"", where, type);
            }
            if (rc) return rc;
        }
        json_t *calls = json_object_get(m, "tool_calls"), *call;
        json_array_foreach(json_is_array(calls) ? calls : NULL, j, call) {
            json_t *fn = json_object_get(call, "function");
            json_t *args = json_object_get(fn, "arguments");
            if (json_is_string(args)) {
                json_error_t je;
                json_t *obj = json_loads(json_string_value(args), JSON_DECODE_ANY, &je);
                if (!json_is_object(obj)) {
                    json_decref(obj);
                    return qvlm_errorf(err, QVLM_E_INVALID, "messages[%zu].tool_calls[%zu].function.arguments is not a JSON object",
                                       i, j);
                }
                json_object_set_new(fn, "arguments", obj);
            }
        }
    }
    return QVLM_OK;
}

static qvlm_status build_context(json_t *msgs, const qvlm_chat_options *o, bool gen_prompt, json_t **out,
                                 qvlm_error *err) {
    json_t *ctx = json_object();
    if (!ctx) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    if (o && o->extra_json) {
        json_t *extra;
        qvlm_status rc = qvlm_json_parse(o->extra_json, strlen(o->extra_json), "template variables", &extra, err);
        if (rc) {
            json_decref(ctx);
            return rc;
        }
        if (json_is_object(extra)) json_object_update(ctx, extra);
        json_decref(extra);
    }
    json_object_set(ctx, "messages", msgs);
    if (o && o->tools_json) {
        json_t *tools;
        qvlm_status rc = qvlm_json_parse(o->tools_json, strlen(o->tools_json), "tools", &tools, err);
        if (!rc && !json_is_array(tools)) rc = qvlm_errorf(err, QVLM_E_INVALID, "tools must be an array");
        if (rc) {
            json_decref(tools);
            json_decref(ctx);
            return rc;
        }
        json_object_set_new(ctx, "tools", tools);
    }
    json_object_set_new(ctx, "add_generation_prompt", json_boolean(gen_prompt));
    if (o && o->enable_thinking >= 0) json_object_set_new(ctx, "enable_thinking", json_boolean(o->enable_thinking));
    if (o && o->add_vision_id) json_object_set_new(ctx, "add_vision_id", json_true());
    *out = ctx;
    return QVLM_OK;
}

/* Where the next turn's prompt will part from this one: render the conversation with a made-up
 * answer appended (no generation prompt) and take the common prefix with the real prompt, in
 * tokens. Qwen3.5's template drops a past answer's thinking, so this is a few tokens before the
 * end; a checkpoint there lets the next turn resume exactly. -1 when it cannot be told. */
static int64_t divergence_point(const qvlm_model *m, json_t *msgs, const qvlm_chat_options *o, const char *prompt,
                                 size_t n_prompt, const int32_t *ids, size_t n_ids) {
    json_t *probe = json_deep_copy(msgs), *ctx = NULL;
    json_array_append_new(probe, json_pack("{s:s, s:s}", "role", "assistant", "content", "\x01"));
    char *other = NULL;
    size_t n_other = 0;
    qvlm_error err;
    int64_t at = -1;
    if (build_context(probe, o, false, &ctx, &err) == QVLM_OK &&
        qvlm_chat_template_render(m->chat_template, ctx, &other, &n_other, &err) == QVLM_OK) {
        size_t k = 0;
        while (k < n_prompt && k < n_other && prompt[k] == other[k]) k++;
        int32_t *pids = NULL;
        size_t n_p = 0;
        if (k > 0 && k < n_prompt && qvlm_tokenizer_encode(m->tokenizer, prompt, k, &pids, &n_p, &err) == QVLM_OK &&
            n_p > 0 && n_p < n_ids && memcmp(pids, ids, n_p * sizeof(int32_t)) == 0)
            at = (int64_t)n_p;
        free(pids);
    }
    free(other);
    json_decref(ctx);
    json_decref(probe);
    return at;
}

qvlm_status qvlm_session_chat(qvlm_session *s, const char *messages_json, size_t n, const qvlm_chat_options *o,
                              qvlm_error *err) {
    const qvlm_model *m = s->model;
    if (!m->chat_template)
        return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s: the model directory has no chat template", m->dir);
    qvlm_status rc = need_tokenizer(m, err);
    if (rc) return rc;
    json_t *msgs = NULL, *ctx = NULL;
    gathered g = {0};
    char *prompt = NULL;
    size_t n_prompt = 0, n_ids = 0;
    int32_t *ids = NULL;
    rc = qvlm_json_parse(messages_json, n, "messages", &msgs, err);
    if (rc == QVLM_E_CORRUPT) rc = QVLM_E_INVALID, err->code = rc; /* a bad request, not a bad file */
    if (!rc) rc = walk_messages(msgs, o ? o->allow_dir : NULL, &g, err);
    bool gen = !(o && o->no_generation_prompt);
    if (!rc) rc = build_context(msgs, o, gen, &ctx, err);
    if (!rc) rc = qvlm_chat_template_render(m->chat_template, ctx, &prompt, &n_prompt, err);
    if (!rc) rc = qvlm_tokenizer_encode(m->tokenizer, prompt, n_prompt, &ids, &n_ids, err);
    if (!rc && n_ids == 0) rc = qvlm_errorf(err, QVLM_E_INVALID, "the rendered prompt is empty");
    if (!rc) {
        s->divergence = gen ? divergence_point(m, msgs, o, prompt, n_prompt, ids, n_ids) : -1;
        rc = qvlm_session_prompt(s, ids, n_ids, g.in, (size_t)g.n, err);
    }
    free(ids);
    free(prompt);
    gathered_free(&g);
    json_decref(ctx);
    json_decref(msgs);
    return rc;
}
