/* api_error.c - OpenAI-style error bodies and statuses (see api_error.h). */
#include "server/api_error.h"

#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

void srv_error_set(srv_error *e, unsigned status, const char *type, const char *code, const char *param, const char *fmt,
                   ...) {
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->message, sizeof(e->message), fmt, ap);
        va_end(ap);
    }
}

/* "messages[2].content[1].image_url.url: ..." -> "messages[2].content[1].image_url.url". */
static void param_from_message(const char *msg, char *param, size_t cap) {
    param[0] = 0;
    if (strncmp(msg, "messages", 8) != 0) return;
    size_t n = strcspn(msg, ": ");
    if (n < cap) memcpy(param, msg, n), param[n] = 0;
}

/* "image 3: ..." -> 3, else -1. */
static int image_index(const char *msg) {
    int k = -1, used = 0;
    if (sscanf(msg, "image %d:%n", &k, &used) == 1 && used > 0) return k;
    return -1;
}

void srv_error_from_engine(srv_error *e, const qvlm_error *err, char *const *image_params, int n_images) {
    const char *msg = err->msg;
    char param[160];
    param_from_message(msg, param, sizeof(param));
    int k = image_index(msg);
    bool about_image = k >= 0;
    if (about_image && k < n_images) snprintf(param, sizeof(param), "%s", image_params[k]);
    switch (err->code) {
    case QVLM_E_INVALID:
        srv_error_set(e, 400, "invalid_request_error", "invalid_request", param, "%s", msg);
        break;
    case QVLM_E_UNSUPPORTED:
        srv_error_set(e, 400, "invalid_request_error", about_image ? "invalid_image" : "unsupported", param, "%s", msg);
        break;
    case QVLM_E_CORRUPT:
        srv_error_set(e, 400, "invalid_request_error", "invalid_image", param, "%s", msg);
        break;
    case QVLM_E_LIMIT:
        if (about_image) srv_error_set(e, 400, "invalid_request_error", "image_too_large", param, "%s", msg);
        else srv_error_set(e, 400, "invalid_request_error", "context_length_exceeded", "messages", "%s", msg);
        break;
    case QVLM_E_MISMATCH:
        srv_error_set(e, 400, "invalid_request_error", "invalid_request", param, "%s", msg);
        break;
    case QVLM_E_NOMEM:
    case QVLM_E_BUSY:
        srv_error_set(e, 503, "server_error", "overloaded", NULL, "%s", msg);
        break;
    case QVLM_E_CANCELLED:
        srv_error_set(e, 503, "server_error", "cancelled", NULL, "the request was cancelled");
        break;
    default:
        srv_error_set(e, 500, "server_error", "internal_error", NULL, "%s", msg);
        break;
    }
}

/* Length of the UTF-8 sequence starting at s (1..4), or 0 if it is ill-formed or cut. */
static size_t utf8_len(const unsigned char *s) {
    size_t n = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3 : (s[0] >> 3) == 30 ? 4 : 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] >> 6) != 2) return 0;
    return n;
}

/* Messages are cut to fit their buffers, possibly inside a character, and may quote request
 * bytes: JSON needs valid UTF-8, so anything else becomes '?'. */
static void utf8_sanitize(const char *in, char *out, size_t cap) {
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 5 < cap;) {
        size_t n = utf8_len(p);
        if (n == 0) out[o++] = '?', p++;
        else memcpy(out + o, p, n), o += n, p += n;
    }
    out[o] = 0;
}

json_t *srv_error_json(const srv_error *e) {
    char msg[sizeof(e->message) + 8], param[sizeof(e->param) + 8];
    utf8_sanitize(e->message, msg, sizeof(msg));
    utf8_sanitize(e->param, param, sizeof(param));
    return json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", msg, "type", e->type, "param",
                     param[0] ? param : NULL, "code", e->code);
}

json_t *srv_json_text(const char *p, size_t n) {
    json_t *j = json_stringn(p, n);
    if (j) return j;
    char *copy = malloc(2 * n + 8), *clean = malloc(2 * n + 8);
    if (copy && clean) {
        memcpy(copy, p, n);
        copy[n] = 0; /* text with a NUL in it is cut there: only the fallback path */
        utf8_sanitize(copy, clean, 2 * n + 8);
        j = json_string(clean);
    }
    free(copy);
    free(clean);
    return j;
}
