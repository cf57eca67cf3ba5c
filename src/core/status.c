/* status.c - error codes and messages (see status.h). */
#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *qvlm_status_name(qvlm_status code) {
    switch (code) {
#define X(name, value, text) case QVLM_##name: return #name;
        QVLM_STATUS_MAP(X)
#undef X
    }
    return "UNKNOWN";
}

const char *qvlm_status_text(qvlm_status code) {
    switch (code) {
#define X(name, value, text) case QVLM_##name: return text;
        QVLM_STATUS_MAP(X)
#undef X
    }
    return "unknown status";
}

qvlm_status qvlm_errorf(qvlm_error *err, qvlm_status code, const char *fmt, ...) {
    if (!err) return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    err->code = code;
    return code;
}

qvlm_status qvlm_error_prefix(qvlm_error *err, qvlm_status code, const char *fmt, ...) {
    if (!err) return code;
    char prefix[256], old[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    old[sizeof(old) - 1] = '\0';
    /* Assemble by hand: the result is deliberately cut at the buffer's end. */
    size_t cap = sizeof(err->msg) - 1, n = 0;
    for (const char *parts[] = {prefix, ": ", old}, **p = parts; p < parts + 3; p++)
        for (const char *c = *p; *c && n < cap; c++) err->msg[n++] = *c;
    err->msg[n] = '\0';
    err->code = code;
    return code;
}
