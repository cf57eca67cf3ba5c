/* fuzz_request.c - a chat completion request body (HTTP, from anyone) through the server's
 * parser: any bytes must give a parsed request or a 4xx/5xx error whose OpenAI JSON body can
 * be built; never a crash, a leak or a sanitizer report. */
#include <stdint.h>
#include <stdlib.h>

#include "server/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const qvlm_sampling defaults = {0.6f, 20, 0.95f, 0.0f, 0};
    srv_request_limits lim = {4, &defaults, 0};
    srv_request r;
    srv_error e;
    if (srv_request_parse((const char *)data, size, &lim, &r, &e)) {
        if (!r.messages_json || r.n_images > 4) __builtin_trap();
        srv_request_free(&r);
    } else {
        if (e.status < 400 || e.status > 599) __builtin_trap();
        json_t *body = srv_error_json(&e); /* must always be buildable (valid UTF-8) */
        if (!body) __builtin_trap();
        json_decref(body);
    }
    return 0;
}
