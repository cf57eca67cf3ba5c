/* status.h - qvlm's one error convention.
 *
 * Every fallible function returns qvlm_status (0 = QVLM_OK, negative = error) and takes
 * `qvlm_error *err` last. On failure it records a human message naming the file, tensor,
 * JSON field or request part that was wrong. The code is for programs, the message for
 * people (curl). One X-macro table generates the enum and the names (libuv).
 */
#ifndef QVLM_CORE_STATUS_H
#define QVLM_CORE_STATUS_H

#include "qvlm.h"

/* Record a formatted message and return `code`, so call sites read
 *   return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: tensor '%s' ends past file end", path, name);
 * `err` may be NULL (the message is dropped). If err already holds a message, the new one
 * replaces it. */
qvlm_status qvlm_errorf(qvlm_error *err, qvlm_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix the message already in err with "context: " (used when a lower layer's error
 * is passed up and the caller knows which file or request part it was about). */
qvlm_status qvlm_error_prefix(qvlm_error *err, qvlm_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Overflow-checked size arithmetic for lengths that come from outside. Return false on
 * overflow and leave *out untouched. */
static inline int qvlm_mul_overflow(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out);
}
static inline int qvlm_add_overflow(size_t a, size_t b, size_t *out) {
    return __builtin_add_overflow(a, b, out);
}

/* SQLite-style "believed impossible, but handled" markers: asserted in debug builds,
 * evaluated and handled gracefully in release. */
#include <assert.h>
#ifdef NDEBUG
#define QVLM_NEVER(x) (x)
#define QVLM_ALWAYS(x) (x)
#else
#define QVLM_NEVER(x) ((x) ? (assert(0 && #x), 1) : 0)
#define QVLM_ALWAYS(x) ((x) ? 1 : (assert(0 && #x), 0))
#endif

#define QVLM_MIN(a, b) ((a) < (b) ? (a) : (b))
#define QVLM_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif /* QVLM_CORE_STATUS_H */
