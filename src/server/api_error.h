/* api_error.h - OpenAI-style error bodies,
 *     {"error": {"message": "...", "type": "invalid_request_error", "param": "...", "code": "..."}}
 * and the HTTP status for each kind of failure. */
#ifndef QVLM_SERVER_API_ERROR_H
#define QVLM_SERVER_API_ERROR_H

#include <jansson.h>

#include "qvlm.h"

typedef struct srv_error {
    unsigned status;     /* HTTP status */
    const char *type;    /* "invalid_request_error", "authentication_error", ... (static) */
    const char *code;    /* "invalid_json", "context_length_exceeded", ... (static) or NULL */
    char param[160];     /* the request part at fault, or "" */
    char message[1024];
} srv_error;

/* Fill e. fmt may be NULL to keep e->message. */
void srv_error_set(srv_error *e, unsigned status, const char *type, const char *code, const char *param, const char *fmt,
                   ...) __attribute__((format(printf, 6, 7)));
/* An engine failure while answering a request: the status, type and code for err->code and
 * its message; `image_params` (n_images entries) names the request part of each image, so an
 * error about "image 2" points at messages[..].content[..]. */
void srv_error_from_engine(srv_error *e, const qvlm_error *err, char *const *image_params, int n_images);
/* The JSON body (caller owns). */
json_t *srv_error_json(const srv_error *e);
/* A JSON string of n bytes of text; ill-formed UTF-8 becomes '?' (JSON requires UTF-8). */
json_t *srv_json_text(const char *p, size_t n);

#endif /* QVLM_SERVER_API_ERROR_H */
