/* strbuf.c - growable byte buffer (see strbuf.h). */
#include "core/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static qvlm_status reserve(qvlm_buf *b, size_t extra, qvlm_error *err) {
    size_t need;
    if (b->failed) return qvlm_errorf(err, QVLM_E_NOMEM, "buffer: an earlier append failed");
    if (qvlm_add_overflow(b->len, extra, &need) || qvlm_add_overflow(need, 1, &need))
        return b->failed = true, qvlm_errorf(err, QVLM_E_NOMEM, "buffer: size overflow");
    if (need <= b->cap) return QVLM_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->data, cap);
    if (!p) return b->failed = true, qvlm_errorf(err, QVLM_E_NOMEM, "buffer: out of memory (%zu bytes)", cap);
    b->data = p;
    b->cap = cap;
    return QVLM_OK;
}

qvlm_status qvlm_buf_append(qvlm_buf *b, const void *p, size_t n, qvlm_error *err) {
    qvlm_status rc = reserve(b, n, err);
    if (rc) return rc;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return QVLM_OK;
}

qvlm_status qvlm_buf_puts(qvlm_buf *b, const char *s, qvlm_error *err) { return qvlm_buf_append(b, s, strlen(s), err); }

qvlm_status qvlm_buf_printf(qvlm_buf *b, qvlm_error *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return b->failed = true, qvlm_errorf(err, QVLM_E_INTERNAL, "buffer: bad format");
    qvlm_status rc = reserve(b, (size_t)n, err);
    if (rc) return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return QVLM_OK;
}

void qvlm_buf_consume(qvlm_buf *b, size_t n) {
    if (QVLM_NEVER(n > b->len)) n = b->len;
    if (n == 0) return;
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

void qvlm_buf_clear(qvlm_buf *b) {
    b->len = 0;
    b->failed = false;
    if (b->data) b->data[0] = '\0';
}

void qvlm_buf_free(qvlm_buf *b) {
    free(b->data);
    *b = (qvlm_buf){0};
}

const char *qvlm_buf_str(const qvlm_buf *b) { return b->data ? b->data : ""; }
