/* json.h - typed, bounds-checked access to JSON documents (on top of jansson).
 *
 * Model config files, tokenizer files and HTTP bodies are all JSON that may lie. These
 * helpers turn "missing", "wrong type" and "out of range" into one clear message that
 * names the document and the field path, e.g.
 *   config.json: text_config.num_hidden_layers = -3 (must be in 1..4096)
 * `where` is the field's parent path as the user should read it ("config.json: text_config").
 */
#ifndef QVLM_CORE_JSON_H
#define QVLM_CORE_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"

/* Parse text (not necessarily NUL-terminated) into *out; `source` names it in errors,
 * which carry jansson's line and column. Caller owns *out (json_decref). */
qvlm_status qvlm_json_parse(const char *text, size_t n_bytes, const char *source, json_t **out,
                            qvlm_error *err);

/* Read and parse a whole file, refusing files over max_bytes. */
qvlm_status qvlm_json_load_file(const char *path, size_t max_bytes, json_t **out, qvlm_error *err);

/* Required integer field in [lo, hi]. Accepts JSON integers, and reals with an integral
 * value (some exporters write 2.0). */
qvlm_status qvlm_json_int(const json_t *obj, const char *key, const char *where, int64_t lo,
                          int64_t hi, int64_t *out, qvlm_error *err);
/* Optional integer: absent or null gives `dflt`. */
qvlm_status qvlm_json_int_opt(const json_t *obj, const char *key, const char *where, int64_t lo,
                              int64_t hi, int64_t dflt, int64_t *out, qvlm_error *err);
/* Required / optional number (integer or real) in [lo, hi]. */
qvlm_status qvlm_json_num(const json_t *obj, const char *key, const char *where, double lo,
                          double hi, double *out, qvlm_error *err);
qvlm_status qvlm_json_num_opt(const json_t *obj, const char *key, const char *where, double lo,
                              double hi, double dflt, double *out, qvlm_error *err);
/* Optional boolean: absent or null gives `dflt`. */
qvlm_status qvlm_json_bool_opt(const json_t *obj, const char *key, const char *where, bool dflt,
                               bool *out, qvlm_error *err);
/* Required / optional string; the pointer is borrowed from the document. */
qvlm_status qvlm_json_str(const json_t *obj, const char *key, const char *where,
                          const char **out, qvlm_error *err);
qvlm_status qvlm_json_str_opt(const json_t *obj, const char *key, const char *where,
                              const char *dflt, const char **out, qvlm_error *err);
/* Optional object / array (NULL when absent or null); an error if present with the wrong type. */
qvlm_status qvlm_json_obj_opt(const json_t *obj, const char *key, const char *where,
                              json_t **out, qvlm_error *err);
qvlm_status qvlm_json_arr_opt(const json_t *obj, const char *key, const char *where,
                              json_t **out, qvlm_error *err);

/* A value's type as a word for messages ("string", "array", ...). */
const char *qvlm_json_type_name(const json_t *v);

#endif /* QVLM_CORE_JSON_H */
