/* request.h - a POST /v1/chat/completions body, checked and turned into what the engine
 * takes. Every field is validated here, on the connection's thread, so a bad request costs
 * no slot; the messages' deeper checks (base64, image bytes, template errors) happen in
 * qvlm_session_chat on the worker and name the request part the same way. */
#ifndef QVLM_SERVER_REQUEST_H
#define QVLM_SERVER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "qvlm.h"
#include "server/api_error.h"

#define SRV_MAX_STOP 16

typedef struct srv_request {
    char *messages_json;   /* the messages array, compact */
    int n_images;
    char **image_params;   /* [n_images] "messages[i].content[j].image_url.url", for errors */
    char *tools_json;      /* tools given to the template, or NULL */
    bool parse_tools;      /* tool calls are parsed back (tool_choice is not "none") */
    int enable_thinking;   /* -1: template default (on), 0: off, 1: on */
    char *extra_json;      /* other chat_template_kwargs (a JSON object), or NULL */
    bool stream, include_usage;
    int max_tokens;        /* 0: until the context is full */
    qvlm_sampling sampling;
    bool seed_given;
    char *stop[SRV_MAX_STOP];
    size_t n_stop;
} srv_request;

typedef struct srv_request_limits {
    int max_images;
    const qvlm_sampling *defaults;
    int max_tokens_default;
} srv_request_limits;

/* Parse and check `body`. On failure *e says what and where (400), and *out is empty. */
bool srv_request_parse(const char *body, size_t n_bytes, const srv_request_limits *lim, srv_request *out, srv_error *e);
void srv_request_free(srv_request *r);

#endif /* QVLM_SERVER_REQUEST_H */
