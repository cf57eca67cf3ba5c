/* qvlm.h - public C API of qvlm, an inference engine for Qwen3.5 vision-language models.
 *
 * Conventions (see docs/c-style in the team docs):
 *  - Every fallible call returns qvlm_status: 0 (QVLM_OK) on success, a negative code on
 *    failure, and takes `qvlm_error *err` last. On failure err->msg names the file, tensor,
 *    field or request part that was wrong. `err` may be NULL.
 *  - Opaque objects come in create/destroy pairs; destroy(NULL) is a no-op.
 *  - Pointer arguments are borrowed for the duration of the call unless stated otherwise.
 */
#ifndef QVLM_H
#define QVLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One table generates the enum, qvlm_status_name() and qvlm_status_text(). */
#define QVLM_STATUS_MAP(X)                                              \
    X(OK, 0, "ok")                                                      \
    X(E_IO, -1, "i/o error")                                            \
    X(E_CORRUPT, -2, "corrupt or malformed input")                      \
    X(E_NOMEM, -3, "out of memory")                                     \
    X(E_INVALID, -4, "invalid argument")                                \
    X(E_UNSUPPORTED, -5, "unsupported")                                 \
    X(E_NOT_FOUND, -6, "not found")                                     \
    X(E_LIMIT, -7, "limit exceeded")                                    \
    X(E_BUSY, -8, "busy")                                               \
    X(E_CANCELLED, -9, "cancelled")                                     \
    X(E_MISMATCH, -10, "mismatch")                                      \
    X(E_INTERNAL, -11, "internal error")

typedef enum qvlm_status {
#define QVLM_X_ENUM(name, value, text) QVLM_##name = value,
    QVLM_STATUS_MAP(QVLM_X_ENUM)
#undef QVLM_X_ENUM
} qvlm_status;

/* Caller-owned error buffer; meaningful only after a call returned an error. */
typedef struct qvlm_error {
    qvlm_status code;
    char msg[1024];
} qvlm_error;

const char *qvlm_status_name(qvlm_status code); /* "E_CORRUPT" */
const char *qvlm_status_text(qvlm_status code); /* "corrupt or malformed input" */

#ifdef __cplusplus
}
#endif
#endif /* QVLM_H */
