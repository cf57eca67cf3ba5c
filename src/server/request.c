/* request.c - the chat completion request body (OpenAI format) to srv_request.
 *
 * Accepted: messages, model (any string; one model is served), stream, stream_options
 * .include_usage, max_tokens / max_completion_tokens, temperature, top_p, top_k, min_p, seed,
 * stop (a string or up to 16), tools, tool_choice ("none", "auto", "required" or one named
 * function: passed to the template; output cannot be forced, only parsed), n (1 only),
 * chat_template_kwargs (enable_thinking and other template variables, as vLLM and SGLang
 * take them), enable_thinking. Unknown fields are ignored, as OpenAI clients send many. */
#include "server/request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"

#define INVALID "invalid_request_error"

static bool fail(srv_error *e, const char *code, const char *param, const char *msg) {
    srv_error_set(e, 400, INVALID, code, param, "%s: %s", param, msg);
    return false;
}

static bool wrong_type(srv_error *e, const char *param, const char *want, const json_t *v) {
    srv_error_set(e, 400, INVALID, "invalid_type", param, "%s: expected %s, got %s", param, want, qvlm_json_type_name(v));
    return false;
}

/* ---- messages ------------------------------------------------------------------------------------ */

static bool add_image_param(srv_request *r, size_t i, size_t j, const char *suffix) {
    char p[160];
    snprintf(p, sizeof(p), "messages[%zu].content[%zu]%s", i, j, suffix);
    char **np = realloc(r->image_params, (size_t)(r->n_images + 1) * sizeof(*np));
    if (!np) return false;
    r->image_params = np;
    if (!(np[r->n_images] = strdup(p))) return false;
    r->n_images++;
    return true;
}

/* Shapes only (roles, content types) and the image count; sources are checked later. */
static bool check_content(const json_t *content, size_t i, srv_request *r, const srv_request_limits *lim, srv_error *e) {
    char param[96];
    size_t j;
    json_t *part;
    json_array_foreach(content, j, part) {
        snprintf(param, sizeof(param), "messages[%zu].content[%zu]", i, j);
        const char *type = json_string_value(json_object_get(part, "type"));
        if (!json_is_object(part) || !type) return fail(e, "invalid_type", param, "must be an object with a string \"type\"");
        bool is_image = strcmp(type, "image_url") == 0 || strcmp(type, "image") == 0;
        if (!is_image) continue;
        if (r->n_images >= lim->max_images) {
            srv_error_set(e, 400, INVALID, "too_many_images", param, "%s: more than %d images in one request (--max-images)",
                          param, lim->max_images);
            return false;
        }
        const json_t *u = strcmp(type, "image") == 0 ? json_object_get(part, "image") : json_object_get(part, "image_url");
        bool nested = json_is_object(u);
        if (nested) u = json_object_get(u, "url");
        if (!json_is_string(u)) {
            snprintf(param + strlen(param), sizeof(param) - strlen(param), ".%s%s", type, nested ? ".url" : "");
            return wrong_type(e, param, "a string (a data: URI)", u);
        }
        if (!add_image_param(r, i, j, strcmp(type, "image") == 0 ? ".image" : nested ? ".image_url.url" : ".image_url")) {
            srv_error_set(e, 503, "server_error", "overloaded", NULL, "out of memory");
            return false;
        }
    }
    return true;
}

static bool parse_messages(json_t *body, srv_request *r, const srv_request_limits *lim, srv_error *e) {
    json_t *msgs = json_object_get(body, "messages");
    if (!msgs) return fail(e, "missing_field", "messages", "required");
    if (!json_is_array(msgs)) return wrong_type(e, "messages", "an array", msgs);
    if (json_array_size(msgs) == 0) return fail(e, "invalid_value", "messages", "must not be empty");
    size_t i;
    json_t *m;
    char param[96];
    json_array_foreach(msgs, i, m) {
        snprintf(param, sizeof(param), "messages[%zu]", i);
        if (!json_is_object(m)) return wrong_type(e, param, "an object", m);
        const json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
        snprintf(param, sizeof(param), "messages[%zu].role", i);
        if (!json_is_string(role)) return wrong_type(e, param, "a string", role);
        const char *rs = json_string_value(role);
        if (strcmp(rs, "developer") == 0) /* OpenAI's newer name for the system role */
            json_object_set_new(m, "role", json_string("system"));
        else if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") && strcmp(rs, "tool"))
            return fail(e, "invalid_value", param, "must be system, developer, user, assistant or tool");
        snprintf(param, sizeof(param), "messages[%zu].content", i);
        if (content && !json_is_null(content) && !json_is_string(content) && !json_is_array(content))
            return wrong_type(e, param, "a string or an array of parts", content);
        if (json_is_array(content) && !check_content(content, i, r, lim, e)) return false;
    }
    r->messages_json = json_dumps(msgs, JSON_COMPACT);
    if (!r->messages_json) return fail(e, "invalid_value", "messages", "cannot be encoded (invalid UTF-8?)");
    return true;
}

/* ---- sampling and limits --------------------------------------------------------------------------- */

/* An optional number in [lo, hi]; null or absent keeps *out. */
static bool num_opt(const json_t *body, const char *key, double lo, double hi, double *out, srv_error *e) {
    const json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_number(v)) return wrong_type(e, key, "a number", v);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) {
        srv_error_set(e, 400, INVALID, "invalid_value", key, "%s: %g is outside %g..%g", key, x, lo, hi);
        return false;
    }
    *out = x;
    return true;
}

static bool int_opt(const json_t *body, const char *key, json_int_t lo, json_int_t hi, json_int_t *out, srv_error *e) {
    const json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_integer(v)) return wrong_type(e, key, "an integer", v);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        srv_error_set(e, 400, INVALID, "invalid_value", key, "%s: %lld is outside %lld..%lld", key, (long long)x,
                      (long long)lo, (long long)hi);
        return false;
    }
    *out = x;
    return true;
}

static bool parse_sampling(const json_t *body, srv_request *r, const srv_request_limits *lim, srv_error *e) {
    r->sampling = *lim->defaults;
    double t = r->sampling.temperature, p = r->sampling.top_p, mp = r->sampling.min_p;
    json_int_t k = r->sampling.top_k, seed = -1, max = 0, n = 1;
    bool ok = num_opt(body, "temperature", 0, 2, &t, e) && num_opt(body, "top_p", 0, 1, &p, e) &&
              num_opt(body, "min_p", 0, 1, &mp, e) && int_opt(body, "top_k", -1, 1 << 30, &k, e) &&
              int_opt(body, "seed", INT64_MIN, INT64_MAX, &seed, e) && int_opt(body, "n", 1, 1, &n, e) &&
              int_opt(body, "max_tokens", 1, 1 << 30, &max, e) && int_opt(body, "max_completion_tokens", 1, 1 << 30, &max, e);
    if (!ok) return false;
    if (p <= 0) return fail(e, "invalid_value", "top_p", "must be greater than 0");
    r->sampling.temperature = (float)t;
    r->sampling.top_p = (float)p;
    r->sampling.min_p = (float)mp;
    r->sampling.top_k = k < 0 ? 0 : (int32_t)k; /* -1 means off in vLLM */
    /* No seed: the completion draws a fresh one, as OpenAI does. */
    r->seed_given = json_is_integer(json_object_get(body, "seed"));
    r->sampling.seed = r->seed_given ? (uint64_t)seed : 0;
    r->max_tokens = max ? (int)max : lim->max_tokens_default;
    const json_t *lp = json_object_get(body, "logprobs");
    if (lp && !json_is_null(lp) && !json_is_false(lp)) return fail(e, "unsupported", "logprobs", "not supported");
    return true;
}

static bool parse_stop(const json_t *body, srv_request *r, srv_error *e) {
    const json_t *s = json_object_get(body, "stop");
    if (!s || json_is_null(s)) return true;
    if (json_is_string(s))
        return (r->stop[r->n_stop++] = strdup(json_string_value(s))) || fail(e, "invalid_value", "stop", "out of memory");
    if (!json_is_array(s)) return wrong_type(e, "stop", "a string or an array of strings", s);
    if (json_array_size(s) > SRV_MAX_STOP) return fail(e, "invalid_value", "stop", "at most 16 stop strings");
    size_t i;
    json_t *v;
    json_array_foreach(s, i, v) {
        char param[32];
        snprintf(param, sizeof(param), "stop[%zu]", i);
        if (!json_is_string(v)) return wrong_type(e, param, "a string", v);
        if (!(r->stop[r->n_stop++] = strdup(json_string_value(v)))) return fail(e, "invalid_value", "stop", "out of memory");
    }
    return true;
}

/* ---- tools and template variables --------------------------------------------------------------- */

/* The tool named by tool_choice {"type":"function","function":{"name":...}}, as a 1-array. */
static json_t *chosen_tool(const json_t *tools, const char *name) {
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        const char *n = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
        if (n && strcmp(n, name) == 0) return json_pack("[O]", t);
    }
    return NULL;
}

static bool parse_tools(const json_t *body, srv_request *r, srv_error *e) {
    const json_t *tools = json_object_get(body, "tools"), *choice = json_object_get(body, "tool_choice");
    if (tools && !json_is_null(tools) && !json_is_array(tools)) return wrong_type(e, "tools", "an array", tools);
    size_t i;
    json_t *t;
    json_array_foreach(json_is_array(tools) ? tools : NULL, i, t) {
        char param[48];
        snprintf(param, sizeof(param), "tools[%zu].function.name", i);
        if (!json_is_string(json_object_get(json_object_get(t, "function"), "name")))
            return fail(e, "invalid_type", param, "required (a string)");
    }
    bool have = json_is_array(tools) && json_array_size(tools) > 0;
    json_t *use = have ? json_incref((json_t *)tools) : NULL;
    r->parse_tools = have;
    if (choice && !json_is_null(choice)) {
        const char *cs = json_string_value(choice);
        const char *fn = json_string_value(json_object_get(json_object_get(choice, "function"), "name"));
        if (cs && strcmp(cs, "none") == 0) {
            json_decref(use), use = NULL, r->parse_tools = false;
        } else if (cs && (strcmp(cs, "auto") == 0 || strcmp(cs, "required") == 0)) {
        } else if (fn) {
            json_t *one = have ? chosen_tool(tools, fn) : NULL;
            json_decref(use);
            if (!one) return fail(e, "invalid_value", "tool_choice", "names a function that is not in tools");
            use = one;
        } else {
            json_decref(use);
            return fail(e, "invalid_value", "tool_choice", "must be \"none\", \"auto\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":...}}");
        }
    }
    if (use) r->tools_json = json_dumps(use, JSON_COMPACT);
    json_decref(use);
    return !use || r->tools_json;
}

static bool parse_thinking(const json_t *body, srv_request *r, srv_error *e) {
    r->enable_thinking = -1;
    const json_t *top = json_object_get(body, "enable_thinking"), *kw = json_object_get(body, "chat_template_kwargs");
    if (top && !json_is_null(top)) {
        if (!json_is_boolean(top)) return wrong_type(e, "enable_thinking", "a boolean", top);
        r->enable_thinking = json_is_true(top);
    }
    if (!kw || json_is_null(kw)) return true;
    if (!json_is_object(kw)) return wrong_type(e, "chat_template_kwargs", "an object", kw);
    const json_t *et = json_object_get(kw, "enable_thinking");
    if (et && !json_is_null(et)) {
        if (!json_is_boolean(et)) return wrong_type(e, "chat_template_kwargs.enable_thinking", "a boolean", et);
        r->enable_thinking = json_is_true(et);
    }
    /* The rest are template variables; these belong to the request proper. */
    json_t *extra = json_deep_copy(kw);
    const char *own[] = {"enable_thinking", "messages", "tools", "add_generation_prompt"};
    for (size_t i = 0; extra && i < sizeof(own) / sizeof(own[0]); i++) json_object_del(extra, own[i]);
    if (extra && json_object_size(extra)) r->extra_json = json_dumps(extra, JSON_COMPACT);
    json_decref(extra);
    return true;
}

static bool parse_stream(const json_t *body, srv_request *r, srv_error *e) {
    const json_t *s = json_object_get(body, "stream"), *so = json_object_get(body, "stream_options");
    if (s && !json_is_null(s) && !json_is_boolean(s)) return wrong_type(e, "stream", "a boolean", s);
    r->stream = json_is_true(s);
    if (so && !json_is_null(so) && !json_is_object(so)) return wrong_type(e, "stream_options", "an object", so);
    const json_t *iu = json_object_get(so, "include_usage");
    if (iu && !json_is_null(iu) && !json_is_boolean(iu)) return wrong_type(e, "stream_options.include_usage", "a boolean", iu);
    r->include_usage = json_is_true(iu);
    const json_t *model = json_object_get(body, "model");
    if (model && !json_is_null(model) && !json_is_string(model)) return wrong_type(e, "model", "a string", model);
    return true;
}

bool srv_request_parse(const char *body, size_t n, const srv_request_limits *lim, srv_request *r, srv_error *e) {
    memset(r, 0, sizeof(*r));
    json_error_t je;
    /* NUL is legal in JSON strings, and a model may generate it: clients send such answers back. */
    json_t *j = json_loadb(body, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!j) {
        srv_error_set(e, 400, INVALID, "invalid_json", NULL, "invalid JSON body at line %d, column %d: %s", je.line, je.column,
                      je.text);
        return false;
    }
    bool ok = json_is_object(j) || wrong_type(e, "body", "a JSON object", j);
    ok = ok && parse_messages(j, r, lim, e) && parse_sampling(j, r, lim, e) && parse_stop(j, r, e) && parse_tools(j, r, e) &&
         parse_thinking(j, r, e) && parse_stream(j, r, e);
    json_decref(j);
    if (!ok) srv_request_free(r);
    return ok;
}

void srv_request_free(srv_request *r) {
    free(r->messages_json);
    for (int i = 0; i < r->n_images; i++) free(r->image_params[i]);
    free(r->image_params);
    free(r->tools_json);
    free(r->extra_json);
    for (size_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
    memset(r, 0, sizeof(*r));
}
