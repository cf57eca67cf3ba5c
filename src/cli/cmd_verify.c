/* cmd_verify.c - `qvlm verify`: run what a fixture's reference.json describes and compare
 * every output with the transformers reference (reference.safetensors).
 *
 *   qvlm verify --reference FIXTURE [--model DIR] [--dump FILE] [--json] [--threads N]
 *               [--precision f32|bf16] [--backend cpu|cuda]
 *
 * Everything is qvlm's own: each image is decoded from the fixture's file and preprocessed
 * (pixel values within 0.02 max / 2e-3 mean of imageN.pixel_values, grid identical), encoded
 * by the vision tower (imageN.embeds within 1e-3), every prompt's M-RoPE positions computed
 * (NAME.position_ids identical), its logits at every position (max |diff| <= 1e-3) and its 12
 * greedy tokens (identical). Exit status 0 only if all pass.
 *
 * Two oracles. reference.safetensors holds transformers' float32 outputs as the fixture
 * generator made them: it built the model, converted it with .to(bfloat16) and back with
 * .float(), which also rounds the non-persistent RoPE inv_freq buffers to bf16. A model
 * loaded with from_pretrained keeps them in f32 (checked on transformers 5.17), and those
 * rounded frequencies alone move the dense fixture's logits by up to 1.6e-3. So:
 *   --rope-freq bf16 (default): reproduce the generator, compare with reference.safetensors;
 *   --rope-freq f32: the numerics qvlm uses everywhere else, compared with
 *     reference_f64.safetensors (transformers' float64 run of the from_pretrained model,
 *     made by tools/ref_precision.py) when the fixture has it.
 * Both with the same 1e-3 tolerance. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "core/fileio.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "kernels/backend.h"
#include "model/image.h"
#include "model/image_preprocess.h"
#include "model/model.h"
#include "model/mrope.h"
#include "model/text.h"
#include "model/vision.h"
#include "qvlm.h"

#define LOGIT_TOL 1e-3
#define EMBED_TOL 1e-3
#define PIXEL_MAX_TOL 0.02
#define PIXEL_MEAN_TOL 2e-3
#define MAX_IMAGES 64
#define N_GREEDY 12
#define KV_BLOCK 64

typedef struct check {
    char name[96];
    double max_err, mean_err, tol;
    bool ok;
} check;

typedef struct dump_item {
    qvlm_st_out t;
    void *owned;
} dump_item;

typedef struct verify {
    const char *ref_dir, *model_dir, *dump_path;
    bool json;
    bool conversation;
    const char *cache_mode; /* "both", "on", "off" */
    const char *cache_dir;
    json_t *turns;          /* --conversation: per-turn results for --json */
    bool rope_freq_bf16;
    qvlm_st_file ref64; /* reference_f64.safetensors, when present */
    bool have_ref64;
    int threads;
    qvlm_compute_precision precision;
    qvlm_backend_kind backend;
    bool mmap_weights;
    json_t *meta;
    qvlm_st_file ref;
    qvlm_backend *be;
    qvlm_weight_quant quant; /* --quant: also run a load-time quantised copy and report its errors */
    double q_logits_max, q_logits_sum, q_logits_n; /* over every prompt's logits */
    int64_t q_greedy_same, q_greedy_total;
    qvlm_model *qmodel;      /* that copy (NULL without --quant) */
    qvlm_text_ctx *qtext;
    qvlm_model *model;
    qvlm_stream *stream;
    qvlm_text_ctx *text;
    check *checks;
    size_t n_checks, cap_checks;
    int64_t n_images;
    qvlm_grid grids[MAX_IMAGES];
    float *embeds[MAX_IMAGES]; /* backend [tokens][hidden] per image */
    dump_item *dumps;
    size_t n_dumps, cap_dumps;
} verify;

static void add_check(verify *v, const char *name, double max_err, double mean_err, double tol, bool ok) {
    if (v->n_checks == v->cap_checks) {
        v->cap_checks = v->cap_checks ? 2 * v->cap_checks : 32;
        v->checks = realloc(v->checks, v->cap_checks * sizeof(*v->checks));
    }
    check *c = &v->checks[v->n_checks++];
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->max_err = max_err;
    c->mean_err = mean_err;
    c->tol = tol;
    c->ok = ok;
}

/* Keep `data` (malloc'd, ownership taken) to be written under `name` by --dump. */
static void add_dump(verify *v, const char *name, qvlm_dtype dt, int n_dims, const int64_t *shape, void *data) {
    if (!v->dump_path) {
        free(data);
        return;
    }
    if (v->n_dumps == v->cap_dumps) {
        v->cap_dumps = v->cap_dumps ? 2 * v->cap_dumps : 32;
        v->dumps = realloc(v->dumps, v->cap_dumps * sizeof(*v->dumps));
    }
    dump_item *d = &v->dumps[v->n_dumps++];
    memset(d, 0, sizeof(*d));
    d->t.name = strdup(name);
    d->t.dtype = dt;
    d->t.n_dims = n_dims;
    for (int i = 0; i < n_dims; i++) d->t.shape[i] = shape[i];
    d->t.data = data;
    d->owned = data;
}

/* The reference tensor "<a><suffix>" (e.g. "turn1" ".logits"). */
static const qvlm_st_tensor *ref_tensor2(verify *v, const char *pre, const char *a, const char *suffix,
                                         qvlm_error *err) {
    char name[128];
    snprintf(name, sizeof(name), "%s%s%s", pre, a, suffix);
    const qvlm_st_tensor *t = qvlm_st_file_find(&v->ref, name);
    if (!t) qvlm_errorf(err, QVLM_E_NOT_FOUND, "%s: no tensor '%s'", v->ref.path, name);
    return t;
}

static int64_t *ref_i64(const qvlm_st_tensor *t) { return (int64_t *)t->data; }

/* ---- one prompt ------------------------------------------------------------------------------- */

typedef struct seq {
    void *recurrent;
    void **blocks;
    int64_t n_blocks;
    qvlm_seq_state st;
} seq;

static qvlm_status seq_init(verify *v, seq *s, int64_t n_tokens, qvlm_error *err) {
    memset(s, 0, sizeof(*s));
    const qvlm_config *cfg = &v->model->cfg;
    s->recurrent = qvlm_backend_alloc(v->be, qvlm_text_recurrent_bytes(cfg) + 64);
    s->n_blocks = (n_tokens + KV_BLOCK - 1) / KV_BLOCK;
    s->blocks = calloc((size_t)s->n_blocks, sizeof(void *));
    if (!s->recurrent || !s->blocks) return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    for (int64_t b = 0; b < s->n_blocks; b++)
        if (!(s->blocks[b] = qvlm_backend_alloc(v->be, qvlm_text_kv_block_bytes(cfg, KV_BLOCK) + 64)))
            return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    qvlm_text_state_reset(v->stream, cfg, s->recurrent);
    s->st = (qvlm_seq_state){s->recurrent, s->blocks, s->n_blocks, KV_BLOCK, 0};
    return QVLM_OK;
}

static void seq_free(verify *v, seq *s) {
    for (int64_t b = 0; s->blocks && b < s->n_blocks; b++) qvlm_backend_free(v->be, s->blocks[b]);
    free(s->blocks);
    qvlm_backend_free(v->be, s->recurrent);
}

static int32_t argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int32_t)best;
}

/* Compare n floats; returns max |a-b| and stores the mean. NaN counts as infinite error. */
static double diff(const float *a, const float *b, int64_t n, double *mean) {
    double mx = 0, sum = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(d)) d = INFINITY;
        sum += d;
        if (d > mx) mx = d;
    }
    *mean = n ? sum / (double)n : 0;
    return mx;
}

typedef struct trace_ctx {
    verify *v;
    const char *prompt;
    bool have_ref;
} trace_ctx;

static void on_hidden(void *user, int64_t k, const float *h, int64_t T, int64_t hidden) {
    trace_ctx *tc = user;
    char name[96];
    snprintf(name, sizeof(name), "%s.hidden.%lld", tc->prompt, (long long)k);
    const qvlm_st_tensor *ref = qvlm_st_file_find(&tc->v->ref, name);
    if (!ref || ref->n_elements != T * hidden) return;
    float *host = malloc((size_t)(T * hidden) * sizeof(float));
    if (!host) return;
    qvlm_op_download(tc->v->stream, host, h, (size_t)(T * hidden) * sizeof(float));
    double mean, mx = diff(host, (const float *)ref->data, T * hidden, &mean);
    /* Informational: the spec's tolerances apply to logits; hidden states localise errors. */
    add_check(tc->v, name, mx, mean, -1, true);
    free(host);
}

static double diff64(const float *a, const double *b, int64_t n, double *mean) {
    double mx = 0, sum = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (isnan(d)) d = INFINITY;
        sum += d;
        if (d > mx) mx = d;
    }
    *mean = n ? sum / (double)n : 0;
    return mx;
}

/* ---- images --------------------------------------------------------------------------------- */

static void check_pixels(verify *v, int64_t i, const qvlm_pixels *px) {
    char key[64];
    snprintf(key, sizeof(key), "image%lld.pixel_values", (long long)i);
    const qvlm_st_tensor *r = qvlm_st_file_find(&v->ref, key);
    bool same = r && r->n_elements == px->n_patches * px->patch_dim;
    double mean = INFINITY, mx = same ? diff(px->values, (const float *)r->data, r->n_elements, &mean) : INFINITY;
    add_check(v, key, mx, mean, PIXEL_MAX_TOL, same && mx <= PIXEL_MAX_TOL && mean <= PIXEL_MEAN_TOL);
    snprintf(key, sizeof(key), "image%lld.grid_thw", (long long)i);
    const qvlm_st_tensor *g = qvlm_st_file_find(&v->ref, key);
    const int64_t *gv = g && g->n_elements == 3 ? (const int64_t *)g->data : NULL;
    bool gok = gv && gv[0] == px->grid_t && gv[1] == px->grid_h && gv[2] == px->grid_w;
    add_check(v, key, gok ? 0 : 1, 0, 0, gok);
    float *copy = malloc((size_t)(px->n_patches * px->patch_dim) * sizeof(float));
    if (copy) memcpy(copy, px->values, (size_t)(px->n_patches * px->patch_dim) * sizeof(float));
    int64_t shape[2] = {px->n_patches, px->patch_dim};
    snprintf(key, sizeof(key), "image%lld.pixel_values", (long long)i);
    add_dump(v, key, QVLM_DTYPE_F32, 2, shape, copy);
}

static void check_embeds(verify *v, int64_t i, const float *emb, int64_t rows) {
    const int64_t H = v->model->cfg.text.hidden_size, n = rows * H;
    char key[64], k64[64];
    snprintf(key, sizeof(key), "image%lld.embeds", (long long)i);
    snprintf(k64, sizeof(k64), "image%lld.embeds_f64", (long long)i);
    float *host = malloc((size_t)n * sizeof(float));
    if (!host) return;
    qvlm_op_download(v->stream, host, emb, (size_t)n * sizeof(float));
    const qvlm_st_tensor *r = qvlm_st_file_find(&v->ref, key);
    const qvlm_st_tensor *r64 = v->have_ref64 ? qvlm_st_file_find(&v->ref64, k64) : NULL;
    bool use64 = r64 && !v->rope_freq_bf16 && r64->dtype == QVLM_DTYPE_F64 && r64->n_elements == n;
    double mean = INFINITY, mx = r && r->n_elements == n ? diff(host, (const float *)r->data, n, &mean) : INFINITY;
    add_check(v, key, mx, mean, use64 ? -1 : EMBED_TOL, use64 || mx <= EMBED_TOL);
    if (r64 && r64->dtype == QVLM_DTYPE_F64 && r64->n_elements == n) {
        double mean64, mx64 = diff64(host, (const double *)r64->data, n, &mean64);
        add_check(v, k64, mx64, mean64, use64 ? EMBED_TOL : -1, !use64 || mx64 <= EMBED_TOL);
    }
    int64_t shape[2] = {rows, H};
    add_dump(v, key, QVLM_DTYPE_F32, 2, shape, host);
}

/* Decode, preprocess and encode every image of reference.json with qvlm's own code. */
static qvlm_status run_images(verify *v, qvlm_error *err) {
    json_t *imgs = json_object_get(v->meta, "images");
    const qvlm_model *m = v->model;
    qvlm_status rc = QVLM_OK;
    if (json_array_size(imgs) > MAX_IMAGES) return qvlm_errorf(err, QVLM_E_LIMIT, "more than %d images", MAX_IMAGES);
    for (size_t i = 0; !rc && i < json_array_size(imgs); i++) {
        const char *rel = json_string_value(json_object_get(json_array_get(imgs, i), "path"));
        if (!rel) return qvlm_errorf(err, QVLM_E_CORRUPT, "reference.json: images[%zu].path is missing", i);
        char *path = qvlm_path_join(v->ref_dir, rel);
        qvlm_image img = {0};
        qvlm_pixels px = {0};
        qvlm_image_limits lim = qvlm_image_limits_default();
        rc = path ? qvlm_image_load(path, &lim, &img, err) : qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
        if (!rc) rc = qvlm_image_preprocess(&img, &m->preprocess, qvlm_backend_host_pool(v->be), &px, err);
        if (!rc) {
            check_pixels(v, (int64_t)i, &px);
            qvlm_grid g = {px.grid_t, px.grid_h, px.grid_w};
            int64_t rows = qvlm_grid_tokens(g, m->cfg.vision.spatial_merge_size);
            v->grids[i] = g;
            v->embeds[i] = qvlm_backend_alloc(v->be, (size_t)(rows * m->cfg.text.hidden_size) * sizeof(float));
            v->n_images = (int64_t)i + 1;
            rc = v->embeds[i] ? qvlm_vision_encode(m, v->stream, px.values, &g, 1, v->embeds[i], err)
                              : qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
            if (!rc) check_embeds(v, (int64_t)i, v->embeds[i], rows);
        }
        qvlm_pixels_free(&px);
        qvlm_image_free(&img);
        free(path);
    }
    return rc;
}

/* Greedy decode: each new token at text position n + rope_delta on all three axes, as
 * transformers' generate does after a multimodal prompt. */
static qvlm_status greedy_decode(verify *v, const char *name, qvlm_seq_state *st, const float *last, int64_t n,
                                 int64_t delta, const int64_t *ref, int64_t *out, qvlm_error *err) {
    const int64_t V = v->model->cfg.text.vocab_size;
    int64_t *greedy = malloc(N_GREEDY * sizeof(int64_t));
    float *step = malloc((size_t)V * sizeof(float));
    if (!greedy || !step) {
        free(greedy);
        free(step);
        return qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    }
    qvlm_status rc = QVLM_OK;
    int64_t mism = 0;
    int32_t tok = argmax(last, V);
    for (int k = 0; k < N_GREEDY && !rc; k++) {
        greedy[k] = tok;
        mism += tok != ref[k];
        if (k + 1 == N_GREEDY) break;
        int32_t p = (int32_t)(n + k + delta), p3[3] = {p, p, p};
        qvlm_text_batch b = {&tok, NULL, p3, 1, 1, step, NULL, NULL, NULL};
        rc = qvlm_text_forward(v->text, st, &b, err);
        tok = argmax(step, V);
    }
    free(step);
    memcpy(out, greedy, N_GREEDY * sizeof(int64_t));
    char cname[96];
    snprintf(cname, sizeof(cname), "%s.greedy", name);
    add_check(v, cname, (double)mism, 0, 0, mism == 0 && !rc);
    int64_t shape[1] = {N_GREEDY};
    add_dump(v, cname, QVLM_DTYPE_I64, 1, shape, greedy);
    return rc;
}

/* The logits checks: against the oracle of the chosen numerics (see the file comment), and
 * the other one for information. */
static void check_logits(verify *v, const char *name, const float *logits, const qvlm_st_tensor *tlog, int64_t n) {
    char cname[96], key[96];
    double mean, mx = diff(logits, (const float *)tlog->data, n, &mean);
    snprintf(key, sizeof(key), "%s.logits_f64", name);
    const qvlm_st_tensor *t64 = v->have_ref64 ? qvlm_st_file_find(&v->ref64, key) : NULL;
    bool use64 = t64 && !v->rope_freq_bf16 && t64->dtype == QVLM_DTYPE_F64 && t64->n_elements == n;
    snprintf(cname, sizeof(cname), "%s.logits", name);
    add_check(v, cname, mx, mean, use64 ? -1 : LOGIT_TOL, use64 || mx <= LOGIT_TOL);
    if (t64 && t64->dtype == QVLM_DTYPE_F64 && t64->n_elements == n) {
        double mean64, mx64 = diff64(logits, (const double *)t64->data, n, &mean64);
        add_check(v, key, mx64, mean64, use64 ? LOGIT_TOL : -1, !use64 || mx64 <= LOGIT_TOL);
    }
}

/* --quant: the same prompt through the quantised model; its logits against the unquantised
 * model's (same precision, same code: the difference is the weights alone) and against the
 * reference, and its 12 greedy tokens against both. Informational checks (no tolerance). */
static qvlm_status run_quant_prompt(verify *v, const char *name, const int32_t *ids, const float *const *rows,
                                    const int32_t *pos, int64_t n, int64_t delta, const float *base_logits,
                                    const int64_t *base_greedy, const qvlm_st_tensor *tlog, const int64_t *ref_greedy,
                                    qvlm_error *err) {
    const int64_t V = v->model->cfg.text.vocab_size;
    float *logits = malloc((size_t)(n * V) * sizeof(float)), *step = malloc((size_t)V * sizeof(float));
    seq s = {0};
    qvlm_status rc = logits && step ? seq_init(v, &s, n + N_GREEDY, err) : qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    if (!rc) {
        qvlm_text_batch b = {ids, rows, pos, n, n, logits, NULL, NULL, NULL};
        rc = qvlm_text_forward(v->qtext, &s.st, &b, err);
    }
    int64_t same_base = 0, same_ref = 0;
    int32_t tok = rc ? 0 : argmax(logits + (n - 1) * V, V);
    for (int k = 0; k < N_GREEDY && !rc; k++) {
        same_base += tok == base_greedy[k];
        same_ref += tok == ref_greedy[k];
        if (k + 1 == N_GREEDY) break;
        int32_t p = (int32_t)(n + k + delta), p3[3] = {p, p, p};
        qvlm_text_batch b = {&tok, NULL, p3, 1, 1, step, NULL, NULL, NULL};
        rc = qvlm_text_forward(v->qtext, &s.st, &b, err);
        tok = argmax(step, V);
    }
    if (!rc) {
        char cname[96];
        double mean, mx = diff(logits, base_logits, n * V, &mean);
        snprintf(cname, sizeof(cname), "%s.q8_0_vs_unquantised.logits", name);
        add_check(v, cname, mx, mean, -1, true);
        mx = diff(logits, (const float *)tlog->data, n * V, &mean);
        snprintf(cname, sizeof(cname), "%s.q8_0_vs_reference.logits", name);
        add_check(v, cname, mx, mean, -1, true);
        /* "max" = greedy tokens that differ, out of N_GREEDY */
        snprintf(cname, sizeof(cname), "%s.q8_0_vs_unquantised.greedy", name);
        add_check(v, cname, (double)(N_GREEDY - same_base), 0, -1, true);
        snprintf(cname, sizeof(cname), "%s.q8_0_vs_reference.greedy", name);
        add_check(v, cname, (double)(N_GREEDY - same_ref), 0, -1, true);
        v->q_greedy_same += same_base;
        v->q_greedy_total += N_GREEDY;
        v->q_logits_max = fmax(v->q_logits_max, diff(logits, base_logits, n * V, &mean));
        v->q_logits_sum += mean * (double)(n * V);
        v->q_logits_n += (double)(n * V);
    }
    seq_free(v, &s);
    free(logits);
    free(step);
    return rc;
}

static qvlm_status run_prompt(verify *v, const char *name, json_t *info, qvlm_error *err) {
    const qvlm_config *cfg = &v->model->cfg;
    const int64_t H = cfg->text.hidden_size, V = cfg->text.vocab_size;
    const qvlm_st_tensor *tid = ref_tensor2(v, "", name, ".input_ids", err);
    const qvlm_st_tensor *tpos = tid ? ref_tensor2(v, "", name, ".position_ids", err) : NULL;
    const qvlm_st_tensor *tlog = tpos ? ref_tensor2(v, "", name, ".logits", err) : NULL;
    const qvlm_st_tensor *tgr = tlog ? ref_tensor2(v, "", name, ".greedy", err) : NULL;
    const qvlm_st_tensor *tdelta = tgr ? ref_tensor2(v, "", name, ".rope_delta", err) : NULL;
    if (!tdelta) return err->code;
    const int64_t n = tid->n_elements;
    if (tpos->n_elements != 3 * n || tlog->n_elements != n * V || tgr->n_elements != N_GREEDY)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: reference tensors of '%s' have inconsistent shapes", v->ref.path, name);
    int32_t *ids = malloc((size_t)n * sizeof(int32_t)), *pos = malloc((size_t)(3 * n) * sizeof(int32_t));
    const float **rows = calloc((size_t)n, sizeof(float *));
    float *logits = malloc((size_t)(n * V) * sizeof(float));
    seq s = {0};
    qvlm_status rc = (ids && pos && rows && logits) ? QVLM_OK : qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    for (int64_t i = 0; !rc && i < n; i++) ids[i] = (int32_t)ref_i64(tid)[i];
    /* The prompt's images, in order: their grids for the positions, their rows for the pads. */
    json_t *imgs = json_object_get(info, "images");
    qvlm_grid grids[MAX_IMAGES];
    int64_t n_img = (int64_t)json_array_size(imgs), r = 0;
    for (int64_t k = 0; !rc && k < n_img; k++) {
        int64_t ii = json_integer_value(json_array_get(imgs, (size_t)k));
        if (k >= MAX_IMAGES || ii < 0 || ii >= v->n_images) {
            rc = qvlm_errorf(err, QVLM_E_CORRUPT, "reference.json: prompt %s names image %lld, which is not there", name,
                             (long long)ii);
            break;
        }
        grids[k] = v->grids[ii];
        int64_t cnt = qvlm_grid_tokens(grids[k], cfg->vision.spatial_merge_size);
        for (int64_t j = 0; j < cnt; j++) {
            while (r < n && ids[r] != cfg->image_token_id) r++;
            if (r == n) {
                rc = qvlm_errorf(err, QVLM_E_MISMATCH, "%s: more image features than pad tokens", name);
                break;
            }
            rows[r++] = v->embeds[ii] + j * H;
        }
    }
    int64_t next_pos = 0;
    if (!rc)
        rc = qvlm_mrope_positions(ids, n, cfg->image_token_id, grids, n_img, cfg->vision.spatial_merge_size, 0, pos,
                                  &next_pos, err);
    if (!rc) {
        int64_t mism = 0;
        for (int64_t i = 0; i < 3 * n; i++) mism += pos[i] != (int32_t)ref_i64(tpos)[i];
        mism += (next_pos - n) != ref_i64(tdelta)[0];
        char cname[96];
        snprintf(cname, sizeof(cname), "%s.position_ids", name);
        add_check(v, cname, (double)mism, 0, 0, mism == 0);
        int64_t *pcopy = malloc((size_t)(3 * n) * sizeof(int64_t)), shape[2] = {3, n};
        for (int64_t i = 0; pcopy && i < 3 * n; i++) pcopy[i] = pos[i];
        add_dump(v, cname, QVLM_DTYPE_I64, 2, shape, pcopy);
    }
    if (!rc) rc = seq_init(v, &s, n + N_GREEDY, err);
    trace_ctx tc = {v, name, true};
    if (!rc) {
        qvlm_text_batch b = {ids, rows, pos, n, n, logits, on_hidden, &tc, NULL};
        rc = qvlm_text_forward(v->text, &s.st, &b, err);
    }
    if (!rc) {
        check_logits(v, name, logits, tlog, n * V);
        char cname[96];
        snprintf(cname, sizeof(cname), "%s.logits", name);
        int64_t base_greedy[N_GREEDY];
        rc = greedy_decode(v, name, &s.st, logits + (n - 1) * V, n, next_pos - n, ref_i64(tgr), base_greedy, err);
        if (!rc && v->qmodel)
            rc = run_quant_prompt(v, name, ids, rows, pos, n, next_pos - n, logits, base_greedy, tlog, ref_i64(tgr), err);
        int64_t lshape[2] = {n, V};
        add_dump(v, cname, QVLM_DTYPE_F32, 2, lshape, logits);
        logits = NULL; /* owned by the dump list now */
    }
    seq_free(v, &s);
    free(ids);
    free(pos);
    free(rows);
    free(logits);
    return rc;
}

/* ---- --conversation: the turns in order through one cached session ------------------------ */

#define MAX_TURNS 16

typedef struct conv_run {
    float *last[MAX_TURNS]; /* host [vocab] last-position logits per turn */
    int n_turns;
} conv_run;

/* Image inputs of a prompt, from reference.json's image list. */
static int prompt_images(verify *v, json_t *info, qvlm_image_input *in, char **paths) {
    json_t *imgs = json_object_get(info, "images");
    int n = 0;
    for (size_t k = 0; k < json_array_size(imgs) && n < MAX_IMAGES; k++) {
        json_t *e = json_array_get(json_object_get(v->meta, "images"), (size_t)json_integer_value(json_array_get(imgs, k)));
        const char *rel = json_string_value(json_object_get(e, "path"));
        paths[n] = rel ? qvlm_path_join(v->ref_dir, rel) : NULL;
        in[n] = (qvlm_image_input){.path = paths[n]};
        n++;
    }
    return n;
}

struct greedy_collect {
    int64_t tok[N_GREEDY];
    int n;
};
static int collect_token(void *u, int32_t t) {
    struct greedy_collect *g = u;
    g->tok[g->n++] = t;
    return 0;
}

static qvlm_status conv_run_mode(verify *v, bool cached, conv_run *out, qvlm_error *err) {
    const int64_t V = v->model->cfg.text.vocab_size;
    const char *mode = cached ? "cached" : "uncached";
    qvlm_cache *cache = NULL;
    qvlm_session *s = NULL;
    qvlm_cache_config cc = {(size_t)2 << 30, v->cache_dir, 0, 0};
    qvlm_status rc = cached ? qvlm_model_cache_create(v->model, &cc, &cache, err) : QVLM_OK;
    qvlm_session_params sp = {.cache = cache};
    if (!rc) rc = qvlm_session_create(v->model, &sp, &s, err);
    const char *name;
    json_t *info;
    json_object_foreach(json_object_get(v->meta, "prompts"), name, info) {
        if (rc || strncmp(name, "turn", 4) != 0 || out->n_turns >= MAX_TURNS) continue;
        const qvlm_st_tensor *tid = ref_tensor2(v, "", name, ".input_ids", err);
        const qvlm_st_tensor *tlog = tid ? ref_tensor2(v, "", name, ".logits", err) : NULL;
        const qvlm_st_tensor *tgr = tlog ? ref_tensor2(v, "", name, ".greedy", err) : NULL;
        if (!tgr) {
            rc = err->code;
            break;
        }
        int64_t n = tid->n_elements;
        int32_t *ids = malloc((size_t)n * sizeof(int32_t));
        for (int64_t i = 0; ids && i < n; i++) ids[i] = (int32_t)ref_i64(tid)[i];
        qvlm_image_input in[MAX_IMAGES];
        char *paths[MAX_IMAGES] = {0};
        int n_img = prompt_images(v, info, in, paths);
        rc = ids ? qvlm_session_prompt(s, ids, (size_t)n, in, (size_t)n_img, err) : qvlm_errorf(err, QVLM_E_NOMEM, "oom");
        for (int k = 0; k < n_img; k++) free(paths[k]);
        free(ids);
        if (rc) break;
        qvlm_prompt_stats st;
        qvlm_session_prompt_stats(s, &st);
        float *last = malloc((size_t)V * sizeof(float));
        memcpy(last, qvlm_session_logits(s), (size_t)V * sizeof(float));
        out->last[out->n_turns++] = last;
        /* vs the oracle: the reference's (or the float64 run's) last row */
        char cname[96], key[96];
        double mean, mx = diff(last, (const float *)tlog->data + (n - 1) * V, V, &mean);
        snprintf(key, sizeof(key), "%s.logits_f64", name);
        const qvlm_st_tensor *t64 = v->have_ref64 ? qvlm_st_file_find(&v->ref64, key) : NULL;
        bool use64 = t64 && !v->rope_freq_bf16 && t64->n_elements == n * V;
        if (use64) mx = diff64(last, (const double *)t64->data + (n - 1) * V, V, &mean);
        snprintf(cname, sizeof(cname), "%s.last_logits.%s%s", name, mode, use64 ? ".f64" : "");
        add_check(v, cname, mx, mean, LOGIT_TOL, mx <= LOGIT_TOL);
        struct greedy_collect g = {{0}, 0};
        qvlm_sampling greedy = {0};
        rc = qvlm_session_generate(s, &greedy, N_GREEDY, collect_token, &g, err);
        int64_t mism = g.n == N_GREEDY ? 0 : N_GREEDY;
        for (int k = 0; k < g.n; k++) mism += g.tok[k] != ref_i64(tgr)[k];
        snprintf(cname, sizeof(cname), "%s.greedy.%s", name, mode);
        add_check(v, cname, (double)mism, 0, 0, mism == 0);
        if (cached || strcmp(v->cache_mode, "off") == 0) {
            int64_t shape1[1] = {V}, shape2[1] = {N_GREEDY};
            float *lc = malloc((size_t)V * sizeof(float));
            int64_t *gc = malloc(sizeof(g.tok));
            if (lc) memcpy(lc, last, (size_t)V * sizeof(float));
            if (gc) memcpy(gc, g.tok, sizeof(g.tok));
            snprintf(cname, sizeof(cname), "%s.last_logits", name);
            add_dump(v, cname, QVLM_DTYPE_F32, 1, shape1, lc);
            snprintf(cname, sizeof(cname), "%s.greedy", name);
            add_dump(v, cname, QVLM_DTYPE_I64, 1, shape2, gc);
        }
        json_array_append_new(v->turns, json_pack("{s:s, s:s, s:I, s:I, s:i, s:i, s:i, s:i, s:i, s:f, s:f}", "turn", name,
                                                  "mode", mode, "prompt_tokens", (json_int_t)st.prompt_tokens,
                                                  "reused_tokens", (json_int_t)st.reused_tokens, "images_total",
                                                  st.images_total, "images_in_prefix", st.images_in_prefix,
                                                  "images_encoded", st.images_encoded, "images_from_feature_cache",
                                                  st.images_from_feature_cache, "checkpoints_made", st.checkpoints_made,
                                                  "prompt_ms", st.total_ms, "vision_ms", st.vision_ms));
        if (!v->json && cached)
            printf("  %s: %lld tokens, %lld reused from the cache; images: %d in the prompt, %d encoded, %d "
                   "from the feature cache\n",
                   name, (long long)st.prompt_tokens, (long long)st.reused_tokens, st.images_total, st.images_encoded,
                   st.images_from_feature_cache);
    }
    qvlm_session_destroy(s);
    if (cache) {
        qvlm_error e2;
        qvlm_cache_flush(cache, &e2);
    }
    qvlm_cache_destroy(cache);
    return rc;
}

static qvlm_status run_conversation(verify *v, qvlm_error *err) {
    conv_run runs[2] = {{{0}, 0}, {{0}, 0}};
    v->turns = json_array();
    bool on = strcmp(v->cache_mode, "off") != 0, off = strcmp(v->cache_mode, "on") != 0;
    qvlm_status rc = QVLM_OK;
    if (on) rc = conv_run_mode(v, true, &runs[0], err);
    if (!rc && off) rc = conv_run_mode(v, false, &runs[1], err);
    if (!rc && on && off) {
        const int64_t V = v->model->cfg.text.vocab_size;
        for (int t = 0; t < runs[0].n_turns && t < runs[1].n_turns; t++) {
            double mean, mx = diff(runs[0].last[t], runs[1].last[t], V, &mean);
            bool same = memcmp(runs[0].last[t], runs[1].last[t], (size_t)V * sizeof(float)) == 0;
            char cname[96];
            snprintf(cname, sizeof(cname), "turn%d.cached_vs_uncached%s", t + 1, same ? ".bitwise" : "");
            add_check(v, cname, mx, mean, 1e-4, mx <= 1e-4);
        }
    }
    for (int r = 0; r < 2; r++)
        for (int t = 0; t < runs[r].n_turns; t++) free(runs[r].last[t]);
    return rc;
}

/* ---- driver ----------------------------------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f, "usage: qvlm verify --reference FIXTURE_DIR [--model MODEL_DIR] [--dump FILE] [--json]\n"
               "                   [--threads N] [--precision f32|bf16] [--rope-freq bf16|f32] [--backend cpu|cuda] [--mmap]\n"
               "                   [--quant q8_0] [--conversation [--cache both|on|off] [--cache-dir DIR]]\n"
               "Runs every prompt of FIXTURE_DIR/reference.json and compares logits (max |diff| <= 1e-3)\n"
               "and 12 greedy tokens (identical) with FIXTURE_DIR/reference.safetensors.\n"
               "MODEL_DIR defaults to FIXTURE_DIR/model. Exit status 0 only if every check passes.\n"
               "--rope-freq bf16 (default) reproduces the fixture generator, whose model was cast to bf16\n"
               "and back, rounding its RoPE frequencies; f32 is what from_pretrained and qvlm use, and is\n"
               "checked against FIXTURE_DIR/reference_f64.safetensors when present.\n"
               "--quant q8_0 also loads the model with its text-tower matrix weights quantised to Q8_0 and\n"
               "reports, per prompt, its logits' max/mean |error| against the unquantised model (same precision)\n"
               "and the reference, and how many of its 12 greedy tokens differ (informational: not pass/fail).\n"
               "--conversation runs the turn prompts in order in one session, as a chat client would, with\n"
               "the cache on and/or off; both agree with the reference and, with 'both', with each other\n"
               "(<= 1e-4). --cache-dir keeps the cache on disk.\n"
               "--backend cuda runs on the GPU; exit status 77 when this build or machine has none.\n");
}

static int parse_args(verify *v, int argc, char **argv) {
    bool bad = false, precision_set = false;
    const char *val;
    /* --threads, --backend, --precision and --mmap as everywhere (cli_model_opt); the default
     * precision stays f32 on every backend, the one the reference tolerances are for, and
     * --quant has verify's own meaning (an extra quantised copy), so it is read first. */
    qvlm_model_params mp;
    qvlm_model_params_default(&mp);
    for (int i = 1; i < argc && !bad; i++) {
        val = NULL; /* cli_opt leaves it alone when the value is missing */
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (cli_opt(argc, argv, &i, "--reference", &val, &bad)) v->ref_dir = val;
        else if (cli_opt(argc, argv, &i, "--model", &val, &bad) || cli_opt(argc, argv, &i, "-m", &val, &bad))
            v->model_dir = val;
        else if (cli_opt(argc, argv, &i, "--dump", &val, &bad)) v->dump_path = val;
        else if (cli_opt(argc, argv, &i, "--quant", &val, &bad)) {
            if (val && strcmp(val, "q8_0") == 0) v->quant = QVLM_QUANT_Q8_0;
            else if (val && strcmp(val, "none") == 0) v->quant = QVLM_QUANT_NONE;
            else if (val) {
                fprintf(stderr, "qvlm verify: --quant must be q8_0 or none\n");
                bad = true;
            }
        } else if (cli_model_opt(argc, argv, &i, &mp, &precision_set, &bad)) { /* into mp */
        } else if (cli_opt(argc, argv, &i, "--rope-freq", &val, &bad)) {
            if (!val) continue; /* missing: cli_opt said so */
            if (strcmp(val, "bf16") == 0 || strcmp(val, "f32") == 0) v->rope_freq_bf16 = strcmp(val, "bf16") == 0;
            else {
                fprintf(stderr, "qvlm verify: --rope-freq must be bf16 or f32\n");
                bad = true;
            }
        } else if (cli_opt(argc, argv, &i, "--cache", &val, &bad)) {
            if (!val) continue;
            if (strcmp(val, "on") && strcmp(val, "off") && strcmp(val, "both")) {
                fprintf(stderr, "qvlm verify: --cache must be on, off or both\n");
                bad = true;
            }
            v->cache_mode = val;
        } else if (cli_opt(argc, argv, &i, "--cache-dir", &val, &bad)) {
            v->cache_dir = val;
        } else if (strcmp(argv[i], "--conversation") == 0) v->conversation = true;
        else if (strcmp(argv[i], "--json") == 0) v->json = true;
        else {
            fprintf(stderr, "qvlm verify: unknown option '%s'\n", argv[i]);
            bad = true;
        }
    }
    v->threads = mp.n_threads;
    v->backend = mp.device == QVLM_DEVICE_CUDA ? QVLM_BACKEND_CUDA : QVLM_BACKEND_CPU;
    v->precision = mp.precision == QVLM_PRECISION_BF16 ? QVLM_COMPUTE_BF16 : QVLM_COMPUTE_F32;
    v->mmap_weights = mp.mmap_weights;
    if (!bad && v->quant != QVLM_QUANT_NONE && v->conversation) {
        fprintf(stderr, "qvlm verify: --quant runs the prompts, not --conversation\n");
        bad = true;
    }
    if (!bad && !v->ref_dir) {
        fprintf(stderr, "qvlm verify: --reference is required\n");
        bad = true;
    }
    if (bad) usage(stderr);
    return bad ? 2 : -1;
}

static qvlm_status setup(verify *v, qvlm_error *err) {
    char *meta_path = qvlm_path_join(v->ref_dir, "reference.json");
    char *st_path = qvlm_path_join(v->ref_dir, "reference.safetensors");
    char *model_dir = v->model_dir ? strdup(v->model_dir) : qvlm_path_join(v->ref_dir, "model");
    qvlm_status rc = (meta_path && st_path && model_dir) ? QVLM_OK : qvlm_errorf(err, QVLM_E_NOMEM, "out of memory");
    if (!rc) rc = qvlm_json_load_file(meta_path, (size_t)16 << 20, &v->meta, err);
    if (!rc) rc = qvlm_st_open(st_path, &v->ref, err);
    char *st64 = qvlm_path_join(v->ref_dir, "reference_f64.safetensors");
    if (!rc && st64 && qvlm_path_exists(st64)) {
        rc = qvlm_st_open(st64, &v->ref64, err);
        v->have_ref64 = rc == QVLM_OK;
    }
    free(st64);
    qvlm_model_opts mo = {.rope_freq_bf16 = v->rope_freq_bf16, .mmap_weights = v->mmap_weights};
    qvlm_backend_params bp = {v->backend, v->threads, v->precision};
    if (!rc) rc = qvlm_backend_create(&bp, &v->be, err);
    if (!rc) rc = qvlm_model_load_dir(model_dir, v->be, &mo, &v->model, err);
    if (!rc) rc = qvlm_stream_create(v->be, &v->stream, err);
    int64_t max_len = 1;
    const char *key;
    json_t *p;
    json_object_foreach(json_object_get(v->meta, "prompts"), key, p) {
        int64_t len = json_integer_value(json_object_get(p, "len"));
        if (len > max_len) max_len = len;
    }
    if (!rc) rc = qvlm_text_ctx_create(v->model, v->stream, max_len, &v->text, err);
    if (!rc && v->quant != QVLM_QUANT_NONE) {
        qvlm_model_opts qo = mo;
        qo.quant = v->quant;
        rc = qvlm_model_load_dir(model_dir, v->be, &qo, &v->qmodel, err);
        if (!rc) rc = qvlm_text_ctx_create(v->qmodel, v->stream, max_len, &v->qtext, err);
    }
    free(meta_path);
    free(st_path);
    free(model_dir);
    return rc;
}

static void teardown(verify *v) {
    for (int64_t i = 0; i < v->n_images; i++) qvlm_backend_free(v->be, v->embeds[i]);
    qvlm_text_ctx_destroy(v->text);
    qvlm_text_ctx_destroy(v->qtext);
    qvlm_model_free(v->qmodel);
    qvlm_stream_destroy(v->stream);
    qvlm_model_free(v->model);
    qvlm_backend_destroy(v->be);
    qvlm_st_close(&v->ref);
    qvlm_st_close(&v->ref64);
    json_decref(v->meta);
    json_decref(v->turns);
    for (size_t i = 0; i < v->n_dumps; i++) {
        free((char *)v->dumps[i].t.name);
        free(v->dumps[i].owned);
    }
    free(v->dumps);
    free(v->checks);
}

static bool report(verify *v) {
    bool all = true;
    for (size_t i = 0; i < v->n_checks; i++) all &= v->checks[i].ok;
    if (v->json) {
        json_t *o = json_object(), *arr = json_array();
        for (size_t i = 0; i < v->n_checks; i++) {
            check *c = &v->checks[i];
            json_t *e = json_pack("{s:s, s:f, s:f, s:b}", "name", c->name, "max_abs_err", isfinite(c->max_err) ? c->max_err : 1e300,
                                  "mean_abs_err", c->mean_err, "ok", c->ok);
            if (c->tol >= 0) json_object_set_new(e, "tol", json_real(c->tol));
            json_array_append_new(arr, e);
        }
        json_object_set_new(o, "backend", json_string(qvlm_backend_name(v->be)));
        json_object_set_new(o, "checks", arr);
        if (v->turns) json_object_set(o, "turns", v->turns);
        if (v->qmodel && v->q_greedy_total)
            json_object_set_new(o, "q8_0", json_pack("{s:f, s:f, s:I, s:I}", "logits_max_abs_err", v->q_logits_max,
                                                     "logits_mean_abs_err", v->q_logits_sum / v->q_logits_n,
                                                     "greedy_same", (json_int_t)v->q_greedy_same, "greedy_total",
                                                     (json_int_t)v->q_greedy_total));
        json_object_set_new(o, "ok", json_boolean(all));
        char *s = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
        if (s) puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("backend: %s\n", qvlm_backend_name(v->be));
        for (size_t i = 0; i < v->n_checks; i++) {
            check *c = &v->checks[i];
            if (c->tol < 0)
                printf("  info %-28s max %.3g mean %.3g\n", c->name, c->max_err, c->mean_err);
            else
                printf("  %s %-28s max %.3g mean %.3g (tol %g)\n", c->ok ? "ok  " : "FAIL", c->name, c->max_err,
                       c->mean_err, c->tol);
        }
        if (v->qmodel && v->q_greedy_total)
            printf("q8_0 vs unquantised weights (%s precision): logits max |err| %.3g, mean |err| %.3g; greedy tokens "
                   "agree %lld/%lld\n", v->precision == QVLM_COMPUTE_BF16 ? "bf16" : "f32", v->q_logits_max,
                   v->q_logits_sum / v->q_logits_n, (long long)v->q_greedy_same, (long long)v->q_greedy_total);
        printf("%s\n", all ? "verify: all checks passed" : "verify: FAILED");
    }
    return all;
}

int qvlm_cmd_verify(int argc, char **argv) {
    verify v = {.rope_freq_bf16 = true, .cache_mode = "both"};
    int a = parse_args(&v, argc, argv);
    if (a >= 0) return a;
    qvlm_error err = {0};
    qvlm_status rc = setup(&v, &err);
    if (rc == QVLM_E_UNSUPPORTED && v.backend == QVLM_BACKEND_CUDA && !v.be) {
        /* no CUDA in this build or no device: CTest's "skipped" */
        fprintf(stderr, "qvlm verify: %s\n", err.msg);
        teardown(&v);
        return 77;
    }
    if (!rc && v.conversation) {
        rc = run_conversation(&v, &err);
    } else {
        if (!rc && v.model->cfg.vision.present) rc = run_images(&v, &err);
        const char *key;
        json_t *p;
        json_object_foreach(json_object_get(v.meta, "prompts"), key, p) {
            if (rc) break;
            rc = run_prompt(&v, key, p, &err);
        }
    }
    if (!rc && v.dump_path) {
        qvlm_st_out *outs = calloc(v.n_dumps ? v.n_dumps : 1, sizeof(*outs));
        for (size_t i = 0; outs && i < v.n_dumps; i++) outs[i] = v.dumps[i].t;
        rc = outs ? qvlm_st_write(v.dump_path, outs, v.n_dumps, &err) : qvlm_errorf(&err, QVLM_E_NOMEM, "out of memory");
        free(outs);
    }
    int status = 1;
    if (rc) fprintf(stderr, "qvlm verify: %s\n", err.msg);
    else status = report(&v) ? 0 : 1;
    teardown(&v);
    return status;
}
