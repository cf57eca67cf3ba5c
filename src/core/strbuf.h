/* strbuf.h - a growable byte buffer, always NUL-terminated (the NUL not counted).
 *
 * Front ends build replies, SSE chunks and JSON bodies in one buffer and write them once
 * (kilo's append buffer); the reply parser keeps its held-back text here. A zeroed struct is
 * an empty buffer; qvlm_buf_free returns it to that state.
 */
#ifndef QVLM_CORE_STRBUF_H
#define QVLM_CORE_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

#include "core/status.h"

typedef struct qvlm_buf {
    char *data; /* [cap]; NULL until the first append */
    size_t len; /* bytes used, not counting the NUL */
    size_t cap;
    bool failed; /* an append failed (sticky): callers may append freely and check once */
} qvlm_buf;

/* Append n bytes (may contain NULs). On failure the contents are unchanged, `failed` is set
 * and QVLM_E_NOMEM returned; after a failure every append fails. */
qvlm_status qvlm_buf_append(qvlm_buf *b, const void *p, size_t n, qvlm_error *err);
qvlm_status qvlm_buf_puts(qvlm_buf *b, const char *s, qvlm_error *err);
qvlm_status qvlm_buf_printf(qvlm_buf *b, qvlm_error *err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Drop the first n bytes (n <= len). */
void qvlm_buf_consume(qvlm_buf *b, size_t n);
void qvlm_buf_clear(qvlm_buf *b); /* len = 0 and failed = false, memory kept */
void qvlm_buf_free(qvlm_buf *b);
/* The contents as a C string ("" for an empty buffer); valid until the next change. */
const char *qvlm_buf_str(const qvlm_buf *b);

#endif /* QVLM_CORE_STRBUF_H */
