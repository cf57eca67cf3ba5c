/* config.c - config.json / generation_config.json parsing and validation (qwen35-arch §1). */
#include "model/config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/json.h"

#define CFG_MAX_BYTES ((size_t)16 << 20)
#define MAX_HEAD_DIM 512

/* Parse context: the file name and the path of the object being read, for messages. */
typedef struct {
    const char *file;
    char where[160];
} ctx;

static void at(ctx *c, const char *obj) { snprintf(c->where, sizeof(c->where), "%s: %s", c->file, obj); }

static qvlm_status get_i(ctx *c, const json_t *o, const char *k, int64_t lo, int64_t hi, int64_t *out,
                         qvlm_error *err) {
    return qvlm_json_int(o, k, c->where, lo, hi, out, err);
}

/* rope_parameters (current HF) or rope_scaling + top-level fields (older files). */
static qvlm_status parse_rope(ctx *c, const json_t *tc, qvlm_text_config *t, qvlm_error *err) {
    json_t *rp = NULL;
    qvlm_status rc = qvlm_json_obj_opt(tc, "rope_parameters", c->where, &rp, err);
    if (rc == QVLM_OK && !rp) rc = qvlm_json_obj_opt(tc, "rope_scaling", c->where, &rp, err);
    if (rc) return rc;
    double theta = 0, prf = 0;
    rc = qvlm_json_num_opt(tc, "rope_theta", c->where, 1e-6, 1e30, 10000000.0, &theta, err);
    if (rc == QVLM_OK) rc = qvlm_json_num_opt(tc, "partial_rotary_factor", c->where, 1e-6, 1.0, 0.25, &prf, err);
    json_t *sec = NULL;
    if (rc == QVLM_OK && rp) {
        char base[160];
        snprintf(base, sizeof(base), "%s.rope_parameters", c->where);
        rc = qvlm_json_num_opt(rp, "rope_theta", base, 1e-6, 1e30, theta, &theta, err);
        if (rc == QVLM_OK) rc = qvlm_json_num_opt(rp, "partial_rotary_factor", base, 1e-6, 1.0, prf, &prf, err);
        if (rc == QVLM_OK) rc = qvlm_json_arr_opt(rp, "mrope_section", base, &sec, err);
    }
    if (rc) return rc;
    t->rope_theta = theta;
    t->rotary_dim = (int64_t)((double)t->head_dim * prf);
    if (t->rotary_dim < 2 || t->rotary_dim % 2 != 0)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: head_dim %lld x partial_rotary_factor %g = %lld rotary dims (must be even and >= 2)",
                           c->where, (long long)t->head_dim, prf, (long long)t->rotary_dim);
    int def[3] = {11, 11, 10};
    int64_t sum = 0;
    for (int i = 0; i < 3; i++) {
        int64_t v = def[i];
        if (sec) {
            json_t *e = json_array_get(sec, (size_t)i);
            if (json_array_size(sec) < 3 || json_array_size(sec) > 4 || !json_is_integer(e) ||
                json_integer_value(e) < 0 || json_integer_value(e) > 1024)
                return qvlm_errorf(err, QVLM_E_CORRUPT, "%s.rope_parameters.mrope_section must be 3 non-negative integers",
                                   c->where);
            v = json_integer_value(e);
        }
        t->mrope_section[i] = (int)v;
        sum += v;
    }
    if (sum != t->rotary_dim / 2)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s.rope_parameters.mrope_section sums to %lld, but the rotary dims give %lld frequencies",
                           c->where, (long long)sum, (long long)(t->rotary_dim / 2));
    return QVLM_OK;
}

static qvlm_status parse_layer_types(ctx *c, const json_t *tc, qvlm_text_config *t, qvlm_error *err) {
    t->layer_is_full = calloc((size_t)t->num_hidden_layers, sizeof(bool));
    if (!t->layer_is_full) return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", c->file);
    json_t *lt = NULL;
    qvlm_status rc = qvlm_json_arr_opt(tc, "layer_types", c->where, &lt, err);
    if (rc) return rc;
    if (lt) {
        if ((int64_t)json_array_size(lt) != t->num_hidden_layers)
            return qvlm_errorf(err, QVLM_E_CORRUPT, "%s.layer_types has %zu entries for %lld layers", c->where,
                               json_array_size(lt), (long long)t->num_hidden_layers);
        for (int64_t i = 0; i < t->num_hidden_layers; i++) {
            const char *s = json_string_value(json_array_get(lt, (size_t)i));
            if (s && strcmp(s, "full_attention") == 0) t->layer_is_full[i] = true;
            else if (!s || strcmp(s, "linear_attention") != 0)
                return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s.layer_types[%lld] is %s%s%s (expected \"linear_attention\" or \"full_attention\")",
                                   c->where, (long long)i, s ? "\"" : "not a string", s ? s : "", s ? "\"" : "");
        }
        return QVLM_OK;
    }
    int64_t interval;
    rc = qvlm_json_int_opt(tc, "full_attention_interval", c->where, 1, 1 << 20, 4, &interval, err);
    if (rc) return rc;
    for (int64_t i = 0; i < t->num_hidden_layers; i++) t->layer_is_full[i] = (i + 1) % interval == 0;
    return QVLM_OK;
}

static qvlm_status parse_text(ctx *c, const json_t *tc, bool moe, qvlm_text_config *t, qvlm_error *err) {
    qvlm_status rc = QVLM_OK;
    const char *act = NULL;
#define I(key, lo, hi) \
    if (rc == QVLM_OK) rc = get_i(c, tc, #key, lo, hi, &t->key, err)
    I(vocab_size, 1, 1 << 24);
    I(hidden_size, 1, 1 << 16);
    I(num_hidden_layers, 1, 1024);
    I(num_attention_heads, 1, 1024);
    I(num_key_value_heads, 1, 1024);
    I(linear_conv_kernel_dim, 1, 16);
    I(linear_key_head_dim, 1, MAX_HEAD_DIM);
    I(linear_value_head_dim, 1, MAX_HEAD_DIM);
    I(linear_num_key_heads, 1, 1024);
    I(linear_num_value_heads, 1, 1024);
    if (moe) {
        I(num_experts, 1, 4096);
        I(num_experts_per_tok, 1, 4096);
        I(moe_intermediate_size, 1, 1 << 20);
        I(shared_expert_intermediate_size, 1, 1 << 20);
    } else {
        I(intermediate_size, 1, 1 << 20);
    }
#undef I
    if (rc) return rc;
    rc = qvlm_json_int_opt(tc, "head_dim", c->where, 2, MAX_HEAD_DIM, t->hidden_size / t->num_attention_heads,
                           &t->head_dim, err);
    if (rc == QVLM_OK)
        rc = qvlm_json_int_opt(tc, "max_position_embeddings", c->where, 1, INT32_MAX, 262144,
                               &t->max_position_embeddings, err);
    double eps = 0;
    if (rc == QVLM_OK) rc = qvlm_json_num_opt(tc, "rms_norm_eps", c->where, 0.0, 1.0, 1e-6, &eps, err);
    if (rc == QVLM_OK) rc = qvlm_json_str_opt(tc, "hidden_act", c->where, "silu", &act, err);
    if (rc) return rc;
    t->rms_norm_eps = (float)eps;
    if (strcmp(act, "silu") != 0)
        return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s.hidden_act is \"%s\" (only \"silu\" is supported)", c->where, act);
    if (t->head_dim % 2 != 0 || t->head_dim < 2)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s.head_dim = %lld (must be even)", c->where, (long long)t->head_dim);
    if (t->num_attention_heads % t->num_key_value_heads != 0)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: num_attention_heads %lld is not a multiple of num_key_value_heads %lld",
                           c->where, (long long)t->num_attention_heads, (long long)t->num_key_value_heads);
    if (t->linear_num_value_heads % t->linear_num_key_heads != 0)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: linear_num_value_heads %lld is not a multiple of linear_num_key_heads %lld",
                           c->where, (long long)t->linear_num_value_heads, (long long)t->linear_num_key_heads);
    if (moe && t->num_experts_per_tok > t->num_experts)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: num_experts_per_tok %lld > num_experts %lld", c->where,
                           (long long)t->num_experts_per_tok, (long long)t->num_experts);
    rc = parse_rope(c, tc, t, err);
    if (rc == QVLM_OK) rc = parse_layer_types(c, tc, t, err);
    return rc;
}

static qvlm_status parse_vision(ctx *c, const json_t *vc, int64_t text_hidden, qvlm_vision_config *v,
                                qvlm_error *err) {
    qvlm_status rc = QVLM_OK;
#define I(key, lo, hi, dflt) \
    if (rc == QVLM_OK) rc = qvlm_json_int_opt(vc, #key, c->where, lo, hi, dflt, &v->key, err)
    I(depth, 1, 256, 27);
    I(hidden_size, 1, 1 << 16, 1152);
    I(intermediate_size, 1, 1 << 20, 4304);
    I(num_heads, 1, 1024, 16);
    I(in_channels, 3, 3, 3);
    I(patch_size, 1, 1024, 16);
    I(temporal_patch_size, 1, 16, 2);
    I(spatial_merge_size, 1, 16, 2);
    I(out_hidden_size, 1, 1 << 16, 3584);
    I(num_position_embeddings, 1, 1 << 24, 2304);
#undef I
    if (rc) return rc;
    const char *act = NULL;
    rc = qvlm_json_str_opt(vc, "hidden_act", c->where, "gelu_pytorch_tanh", &act, err);
    if (rc) return rc;
    if (strcmp(act, "gelu_pytorch_tanh") != 0)
        return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s.hidden_act is \"%s\" (only \"gelu_pytorch_tanh\")", c->where, act);
    json_t *ds = json_object_get(vc, "deepstack_visual_indexes");
    if (ds && !(json_is_array(ds) && json_array_size(ds) == 0))
        return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s.deepstack_visual_indexes must be empty (Qwen3.5 has no deepstack)",
                           c->where);
    int64_t hd = v->hidden_size / v->num_heads;
    if (v->hidden_size % v->num_heads != 0 || hd % 4 != 0 || hd > MAX_HEAD_DIM)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: hidden_size %lld / num_heads %lld must give a head dim that is a multiple of 4 (2D rotary), at most %d",
                           c->where, (long long)v->hidden_size, (long long)v->num_heads, MAX_HEAD_DIM);
    int64_t side = (int64_t)llround(sqrt((double)v->num_position_embeddings));
    if (side * side != v->num_position_embeddings || side < 2)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s.num_position_embeddings = %lld is not a square grid", c->where,
                           (long long)v->num_position_embeddings);
    if (v->out_hidden_size != text_hidden)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s.out_hidden_size %lld differs from the text hidden_size %lld", c->where,
                           (long long)v->out_hidden_size, (long long)text_hidden);
    v->rope_theta = 10000.0;
    json_t *rp = json_object_get(vc, "rope_parameters");
    if (json_is_object(rp)) {
        char base[160];
        snprintf(base, sizeof(base), "%s.rope_parameters", c->where);
        rc = qvlm_json_num_opt(rp, "rope_theta", base, 1e-6, 1e30, 10000.0, &v->rope_theta, err);
    }
    v->present = true;
    return rc;
}

static qvlm_status token_id(ctx *c, const json_t *o, const char *k, int64_t dflt, int64_t vocab, int32_t *out,
                            qvlm_error *err) {
    int64_t v;
    qvlm_status rc = qvlm_json_int_opt(o, k, c->where, 0, vocab - 1, dflt, &v, err);
    if (rc == QVLM_OK) *out = (int32_t)v;
    return rc;
}

static qvlm_status add_eos(qvlm_config *cfg, const json_t *v, const char *where, qvlm_error *err) {
    if (!v || json_is_null(v)) return QVLM_OK;
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) >= cfg->text.vocab_size)
            return qvlm_errorf(err, QVLM_E_CORRUPT, "%s.eos_token_id must be token ids below the vocabulary size %lld",
                               where, (long long)cfg->text.vocab_size);
        int32_t id = (int32_t)json_integer_value(e);
        bool dup = false;
        for (int k = 0; k < cfg->n_eos; k++) dup |= cfg->eos_ids[k] == id;
        if (!dup && cfg->n_eos < QVLM_MAX_EOS) cfg->eos_ids[cfg->n_eos++] = id;
    }
    return QVLM_OK;
}

qvlm_status qvlm_config_parse(const char *json, size_t n_bytes, const char *name, qvlm_config *cfg,
                              qvlm_error *err) {
    memset(cfg, 0, sizeof(*cfg));
    json_t *root;
    qvlm_status rc = qvlm_json_parse(json, n_bytes, name, &root, err);
    if (rc) return rc;
    ctx c = {.file = name};
    at(&c, "config");
    const char *mt = NULL;
    if (!json_is_object(root)) {
        rc = qvlm_errorf(err, QVLM_E_CORRUPT, "%s: not a JSON object", name);
        goto out;
    }
    rc = qvlm_json_str(root, "model_type", name, &mt, err);
    if (rc) goto out;
    bool moe, text_only = false;
    if (strcmp(mt, "qwen3_5") == 0) moe = false;
    else if (strcmp(mt, "qwen3_5_moe") == 0) moe = true;
    else if (strcmp(mt, "qwen3_5_text") == 0) moe = false, text_only = true;
    else if (strcmp(mt, "qwen3_5_moe_text") == 0) moe = true, text_only = true;
    else {
        rc = qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s: model_type \"%s\" is not supported (expected qwen3_5 or qwen3_5_moe)",
                         name, mt);
        goto out;
    }
    cfg->model_type = moe ? QVLM_MODEL_QWEN3_5_MOE : QVLM_MODEL_QWEN3_5;
    json_t *tc = root, *vc = NULL;
    if (!text_only) {
        tc = json_object_get(root, "text_config");
        if (!json_is_object(tc)) {
            rc = qvlm_errorf(err, QVLM_E_CORRUPT, "%s: text_config is %s (must be an object)", name, qvlm_json_type_name(tc));
            goto out;
        }
        at(&c, "text_config");
    }
    rc = parse_text(&c, tc, moe, &cfg->text, err);
    if (rc) goto out;
    if (!text_only) {
        vc = json_object_get(root, "vision_config");
        if (vc && !json_is_object(vc)) {
            rc = qvlm_errorf(err, QVLM_E_CORRUPT, "%s: vision_config is %s (must be an object)", name, qvlm_json_type_name(vc));
            goto out;
        }
        if (vc) {
            at(&c, "vision_config");
            rc = parse_vision(&c, vc, cfg->text.hidden_size, &cfg->vision, err);
            if (rc) goto out;
        }
    }
    snprintf(c.where, sizeof(c.where), "%s", name);
    int64_t V = cfg->text.vocab_size;
    rc = token_id(&c, root, "image_token_id", 248056, V, &cfg->image_token_id, err);
    if (rc == QVLM_OK) rc = token_id(&c, root, "video_token_id", 248057, V, &cfg->video_token_id, err);
    if (rc == QVLM_OK) rc = token_id(&c, root, "vision_start_token_id", 248053, V, &cfg->vision_start_token_id, err);
    if (rc == QVLM_OK) rc = token_id(&c, root, "vision_end_token_id", 248054, V, &cfg->vision_end_token_id, err);
    /* Text-only checkpoints never see these ids; a large default must not fail them. */
    if (rc && !cfg->vision.present) rc = QVLM_OK;
    if (rc == QVLM_OK) rc = add_eos(cfg, json_object_get(tc, "eos_token_id"), name, err);
    if (rc == QVLM_OK) rc = add_eos(cfg, json_object_get(root, "eos_token_id"), name, err);
out:
    json_decref(root);
    if (rc) qvlm_config_free(cfg);
    return rc;
}

qvlm_status qvlm_config_load(const char *model_dir, qvlm_config *cfg, qvlm_error *err) {
    memset(cfg, 0, sizeof(*cfg));
    char *path = qvlm_path_join(model_dir, "config.json");
    char *gpath = qvlm_path_join(model_dir, "generation_config.json");
    char *text = NULL;
    size_t n = 0;
    json_t *gen = NULL;
    qvlm_status rc = (path && gpath) ? QVLM_OK : qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    if (rc == QVLM_OK) rc = qvlm_file_read(path, CFG_MAX_BYTES, &text, &n, err);
    if (rc == QVLM_OK) rc = qvlm_config_parse(text, n, path, cfg, err);
    /* generation_config.json's eos list is what generation stops on; it comes first. */
    if (rc == QVLM_OK && qvlm_path_exists(gpath)) {
        rc = qvlm_json_load_file(gpath, CFG_MAX_BYTES, &gen, err);
        if (rc == QVLM_OK) {
            int32_t old[QVLM_MAX_EOS];
            int n_old = cfg->n_eos;
            memcpy(old, cfg->eos_ids, sizeof(old));
            cfg->n_eos = 0;
            rc = add_eos(cfg, json_object_get(gen, "eos_token_id"), gpath, err);
            for (int i = 0; rc == QVLM_OK && i < n_old; i++) {
                json_t *e = json_integer(old[i]);
                rc = add_eos(cfg, e, gpath, err);
                json_decref(e);
            }
        }
        if (rc) qvlm_config_free(cfg);
    }
    json_decref(gen);
    free(text);
    free(path);
    free(gpath);
    return rc;
}

void qvlm_config_free(qvlm_config *cfg) {
    if (!cfg) return;
    free(cfg->text.layer_is_full);
    cfg->text.layer_is_full = NULL;
}
