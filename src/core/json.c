/* json.c - typed JSON field access with messages that name the field (see json.h). */
#include "core/json.h"

#include <math.h>
#include <stdlib.h>

#include "core/fileio.h"

const char *qvlm_json_type_name(const json_t *v) {
    if (!v) return "missing";
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "unknown";
}

qvlm_status qvlm_json_parse(const char *text, size_t n_bytes, const char *source, json_t **out,
                            qvlm_error *err) {
    json_error_t je;
    /* JSON_REJECT_DUPLICATES: a document with two values for one key is ambiguous; refuse it
     * rather than silently picking one. JSON_ALLOW_NUL keeps "\u0000" in strings legal. */
    *out = json_loadb(text, n_bytes, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!*out)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: invalid JSON at line %d, column %d: %s", source,
                           je.line, je.column, je.text);
    return QVLM_OK;
}

qvlm_status qvlm_json_load_file(const char *path, size_t max_bytes, json_t **out, qvlm_error *err) {
    char *buf;
    size_t n;
    *out = NULL;
    qvlm_status rc = qvlm_file_read(path, max_bytes, &buf, &n, err);
    if (rc) return rc;
    rc = qvlm_json_parse(buf, n, path, out, err);
    free(buf);
    return rc;
}

static const char *sep(const char *where) { return (where && *where) ? "." : ""; }
static const char *wh(const char *where) { return where ? where : ""; }

static qvlm_status get_int(const json_t *v, const char *key, const char *where, int64_t lo,
                           int64_t hi, int64_t *out, qvlm_error *err) {
    int64_t x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d == floor(d)) || d < -9.0e18 || d > 9.0e18)
            return qvlm_errorf(err, QVLM_E_CORRUPT, "%s%s%s = %g (must be an integer)", wh(where),
                               sep(where), key, d);
        x = (int64_t)d;
    } else {
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s%s%s is %s (must be an integer)", wh(where),
                           sep(where), key, qvlm_json_type_name(v));
    }
    if (x < lo || x > hi)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s%s%s = %lld (must be in %lld..%lld)", wh(where),
                           sep(where), key, (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return QVLM_OK;
}

qvlm_status qvlm_json_int(const json_t *obj, const char *key, const char *where, int64_t lo,
                          int64_t hi, int64_t *out, qvlm_error *err) {
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v))
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s%s%s is missing", wh(where), sep(where), key);
    return get_int(v, key, where, lo, hi, out, err);
}

qvlm_status qvlm_json_int_opt(const json_t *obj, const char *key, const char *where, int64_t lo,
                              int64_t hi, int64_t dflt, int64_t *out, qvlm_error *err) {
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v)) {
        *out = dflt;
        return QVLM_OK;
    }
    return get_int(v, key, where, lo, hi, out, err);
}

static qvlm_status get_num(const json_t *v, const char *key, const char *where, double lo,
                           double hi, double *out, qvlm_error *err) {
    if (!json_is_number(v))
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s%s%s is %s (must be a number)", wh(where),
                           sep(where), key, qvlm_json_type_name(v));
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s%s%s = %g (must be in %g..%g)", wh(where),
                           sep(where), key, x, lo, hi);
    *out = x;
    return QVLM_OK;
}

qvlm_status qvlm_json_num(const json_t *obj, const char *key, const char *where, double lo,
                          double hi, double *out, qvlm_error *err) {
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v))
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s%s%s is missing", wh(where), sep(where), key);
    return get_num(v, key, where, lo, hi, out, err);
}

qvlm_status qvlm_json_num_opt(const json_t *obj, const char *key, const char *where, double lo,
                              double hi, double dflt, double *out, qvlm_error *err) {
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v)) {
        *out = dflt;
        return QVLM_OK;
    }
    return get_num(v, key, where, lo, hi, out, err);
}

qvlm_status qvlm_json_bool_opt(const json_t *obj, const char *key, const char *where, bool dflt,
                               bool *out, qvlm_error *err) {
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v)) {
        *out = dflt;
        return QVLM_OK;
    }
    if (!json_is_boolean(v))
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s%s%s is %s (must be true or false)", wh(where),
                           sep(where), key, qvlm_json_type_name(v));
    *out = json_is_true(v);
    return QVLM_OK;
}

qvlm_status qvlm_json_str(const json_t *obj, const char *key, const char *where,
                          const char **out, qvlm_error *err) {
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v))
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s%s%s is missing", wh(where), sep(where), key);
    if (!json_is_string(v))
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s%s%s is %s (must be a string)", wh(where),
                           sep(where), key, qvlm_json_type_name(v));
    *out = json_string_value(v);
    return QVLM_OK;
}

qvlm_status qvlm_json_str_opt(const json_t *obj, const char *key, const char *where,
                              const char *dflt, const char **out, qvlm_error *err) {
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (!v || json_is_null(v)) {
        *out = dflt;
        return QVLM_OK;
    }
    return qvlm_json_str(obj, key, where, out, err);
}

static qvlm_status get_typed(const json_t *obj, const char *key, const char *where, json_type t,
                             const char *tname, json_t **out, qvlm_error *err) {
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    *out = NULL;
    if (!v || json_is_null(v)) return QVLM_OK;
    if (json_typeof(v) != t)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s%s%s is %s (must be an %s)", wh(where), sep(where),
                           key, qvlm_json_type_name(v), tname);
    *out = v;
    return QVLM_OK;
}

qvlm_status qvlm_json_obj_opt(const json_t *obj, const char *key, const char *where,
                              json_t **out, qvlm_error *err) {
    return get_typed(obj, key, where, JSON_OBJECT, "object", out, err);
}

qvlm_status qvlm_json_arr_opt(const json_t *obj, const char *key, const char *where,
                              json_t **out, qvlm_error *err) {
    return get_typed(obj, key, where, JSON_ARRAY, "array", out, err);
}
