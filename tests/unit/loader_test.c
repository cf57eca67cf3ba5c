/* loader_test.c - the model directory loader refuses every kind of bad input with a message
 * that names the file and the tensor or field, and loads the real fixtures. Each case copies
 * tests/fixtures/tiny-dense/model to a scratch directory and breaks one thing. */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "kernels/backend.h"
#include "model/model.h"
#include "qtest.h"

#define SRC QVLM_FIXTURES "/tiny-dense/model"
#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"

static char dir[256];
static qvlm_backend *be;

static void copy_file(const char *from, const char *to) {
    char *buf;
    size_t n;
    qvlm_error err;
    if (qvlm_file_read(from, (size_t)1 << 30, &buf, &n, &err) == QVLM_OK) {
        qvlm_file_write_atomic(to, buf, n, &err);
        free(buf);
    }
}

static void fresh_copy(void) {
    char cmd[600];
    snprintf(dir, sizeof(dir), "/tmp/qvlm_loader_test_%d", (int)getpid());
    snprintf(cmd, sizeof(cmd), "rm -rf %s && mkdir -p %s", dir, dir);
    if (system(cmd) != 0) return;
    DIR *d = opendir(SRC);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char a[512], b[512];
        snprintf(a, sizeof(a), "%s/%s", SRC, e->d_name);
        snprintf(b, sizeof(b), "%s/%s", dir, e->d_name);
        copy_file(a, b);
    }
    if (d) closedir(d);
}

static char *path_in(const char *name) {
    static char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return p;
}

static qvlm_status load(qvlm_error *err) {
    qvlm_model *m = NULL;
    err->msg[0] = '\0';
    qvlm_status rc = qvlm_model_load_dir(dir, be, NULL, &m, err);
    qvlm_model_free(m);
    return rc;
}

/* Rewrite a shard's header with `edit` applied, keeping its data region. */
static void edit_header(const char *shard, void (*edit)(json_t *hdr), long truncate_by) {
    char *buf;
    size_t n;
    qvlm_error err;
    if (qvlm_file_read(path_in(shard), (size_t)1 << 30, &buf, &n, &err) != QVLM_OK) return;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | (uint8_t)buf[i];
    json_t *h = json_loadb(buf + 8, hl, 0, NULL);
    if (edit) edit(h);
    char *text = json_dumps(h, JSON_COMPACT);
    size_t tl = strlen(text), data = n - 8 - hl, out_n = 8 + tl + data - (size_t)truncate_by;
    char *out = malloc(8 + tl + data);
    for (int i = 0; i < 8; i++) out[i] = (char)((uint64_t)tl >> (8 * i));
    memcpy(out + 8, text, tl);
    memcpy(out + 8 + tl, buf + 8 + hl, data);
    qvlm_file_write_atomic(path_in(shard), out, out_n, &err);
    free(out);
    free(text);
    free(buf);
    json_decref(h);
}

static void write_text(const char *name, const char *text) {
    qvlm_error err;
    qvlm_file_write_atomic(path_in(name), text, strlen(text), &err);
}

/* ---- cases ------------------------------------------------------------------------------- */

static void test_loads_both_fixtures(void) {
    qvlm_error err;
    qvlm_model *m;
    ASSERT_OK(qvlm_model_load_dir(QVLM_FIXTURES "/tiny-dense/model", be, NULL, &m, &err), &err);
    ASSERT_TRUE(m->tied); /* no lm_head.weight in the dense fixture */
    ASSERT_EQ_INT(m->cfg.text.num_hidden_layers, 4);
    ASSERT_TRUE(m->cfg.text.layer_is_full[3] && !m->cfg.text.layer_is_full[0]);
    ASSERT_EQ_INT(m->layers[0].gdn.A_log.dtype, QVLM_DTYPE_F32); /* the Hub keeps A_log in f32 */
    ASSERT_EQ_INT(m->layers[0].gdn.in_proj_qkv.dtype, QVLM_DTYPE_BF16);
    ASSERT_EQ_INT(m->cfg.n_eos, 1);
    qvlm_model_free(m);
    const qvlm_model_opts mapped = {.mmap_weights = true}; /* the views into the files, as bound */
    ASSERT_OK(qvlm_model_load_dir(QVLM_FIXTURES "/tiny-moe/model", be, &mapped, &m, &err), &err);
    ASSERT_TRUE(!m->tied);
    ASSERT_EQ_INT(m->cfg.text.num_experts, 8);
    /* fused experts: expert 1's up rows follow its gate rows inside gate_up_proj */
    const uint8_t *g1 = m->layers[0].moe.expert[1].gate_proj.data, *u1 = m->layers[0].moe.expert[1].up_proj.data;
    ASSERT_EQ_INT(u1 - g1, 32 * 96 * 2);
    qvlm_model_free(m);
}

/* By default (CPU) the text tower's matrices are copied at load into memory the model owns
 * (huge pages for large ones): the same bytes as the mapped checkpoint, elsewhere; with
 * mmap_weights nothing is copied. */
static void test_weights_copied(void) {
    qvlm_error err;
    qvlm_model *c, *mp;
    const qvlm_model_opts mapped = {.mmap_weights = true};
    ASSERT_OK(qvlm_model_load_dir(QVLM_FIXTURES "/tiny-moe/model", be, NULL, &c, &err), &err);
    ASSERT_OK(qvlm_model_load_dir(QVLM_FIXTURES "/tiny-moe/model", be, &mapped, &mp, &err), &err);
    ASSERT_TRUE(c->copy_bytes > 0 && mp->copy_bytes == 0);
    const qvlm_tensor *pairs[][2] = {{&c->lm_head, &mp->lm_head},
                                     {&c->embed_tokens, &mp->embed_tokens},
                                     {&c->layers[0].gdn.in_proj_qkv, &mp->layers[0].gdn.in_proj_qkv},
                                     {&c->layers[3].attn.o_proj, &mp->layers[3].attn.o_proj},
                                     {&c->layers[1].moe.expert[5].down_proj, &mp->layers[1].moe.expert[5].down_proj},
                                     {&c->layers[2].moe.shared.up_proj, &mp->layers[2].moe.shared.up_proj}};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        const qvlm_tensor *a = pairs[i][0], *b = pairs[i][1];
        ASSERT_TRUE(a->data != b->data);
        ASSERT_EQ_INT(a->dtype, b->dtype);
        ASSERT_TRUE(a->ne[0] == b->ne[0] && a->ne[1] == b->ne[1]);
        ASSERT_TRUE(memcmp(a->data, b->data, (size_t)a->ne[0] * qvlm_dtype_row_bytes(a->dtype, a->ne[1])) == 0);
    }
    qvlm_model_free(c);
    qvlm_model_free(mp);
}

static void test_missing_config(void) {
    qvlm_error err;
    fresh_copy();
    unlink(path_in("config.json"));
    ASSERT_FAILS(load(&err), QVLM_E_IO, &err, "config.json: cannot open");
}

static void test_unknown_model_type(void) {
    qvlm_error err;
    fresh_copy();
    write_text("config.json", "{\"model_type\": \"llama\", \"text_config\": {}}");
    ASSERT_FAILS(load(&err), QVLM_E_UNSUPPORTED, &err, "model_type \"llama\" is not supported");
}

static void test_bad_config_field(void) {
    qvlm_error err;
    fresh_copy();
    json_t *c = json_load_file(SRC "/config.json", 0, NULL);
    json_object_set_new(json_object_get(c, "text_config"), "num_key_value_heads", json_integer(3));
    json_dump_file(c, path_in("config.json"), 0);
    ASSERT_FAILS(load(&err), QVLM_E_CORRUPT, &err, "num_attention_heads 4 is not a multiple of num_key_value_heads 3");
    json_object_set_new(json_object_get(c, "text_config"), "num_hidden_layers", json_string("four"));
    json_dump_file(c, path_in("config.json"), 0);
    ASSERT_FAILS(load(&err), QVLM_E_CORRUPT, &err, "text_config.num_hidden_layers is string");
    json_decref(c);
    write_text("config.json", "{\"model_type\": ");
    ASSERT_FAILS(load(&err), QVLM_E_CORRUPT, &err, "invalid JSON at line 1");
}

static void test_missing_shard(void) {
    qvlm_error err;
    fresh_copy();
    unlink(path_in(SHARD2));
    ASSERT_FAILS(load(&err), QVLM_E_IO, &err, SHARD2 ": cannot open");
}

static void test_truncated_shard(void) {
    qvlm_error err;
    fresh_copy();
    edit_header(SHARD1, NULL, 100);
    ASSERT_FAILS(load(&err), QVLM_E_CORRUPT, &err, "past its end");
    ASSERT_CONTAINS(err.msg, SHARD1);
}

static const char *victim = "model.language_model.norm.weight"; /* [64] BF16, in shard 2 */

static void set_offsets(json_t *h, long b, long e) {
    json_t *t = json_object_get(h, victim);
    json_object_set_new(t, "data_offsets", json_pack("[I, I]", (json_int_t)b, (json_int_t)e));
}
static void past_end(json_t *h) { set_offsets(h, 100000000, 100000128); }
static void overlap(json_t *h) {
    json_t *other = NULL;
    const char *k;
    json_t *v;
    json_object_foreach(h, k, v) if (strcmp(k, victim) != 0 && strcmp(k, "__metadata__") != 0 && !other) other = v;
    json_int_t b = json_integer_value(json_array_get(json_object_get(other, "data_offsets"), 0));
    set_offsets(h, (long)b, (long)b + 128);
}
static void wrong_length(json_t *h) {
    json_t *t = json_object_get(h, victim);
    json_object_set_new(t, "shape", json_pack("[i]", 65));
}
static void unknown_dtype(json_t *h) { json_object_set_new(json_object_get(h, victim), "dtype", json_string("F8_E5M2")); }
static void reshape(json_t *h) { json_object_set_new(json_object_get(h, victim), "shape", json_pack("[i, i]", 32, 2)); }
static void drop(json_t *h) { json_object_del(h, victim); }
static void f64_dtype(json_t *h) {
    json_t *t = json_object_get(h, victim);
    json_object_set_new(t, "dtype", json_string("I32"));
    json_object_set_new(t, "shape", json_pack("[i]", 32));
}

static void test_lying_headers(void) {
    qvlm_error err;
    struct {
        void (*edit)(json_t *);
        qvlm_status code;
        const char *msg;
    } cases[] = {
        {past_end, QVLM_E_CORRUPT, "past its end"},
        {overlap, QVLM_E_CORRUPT, "overlap"},
        {wrong_length, QVLM_E_CORRUPT, "need 130 bytes but data_offsets give 128"},
        {unknown_dtype, QVLM_E_UNSUPPORTED, "unknown dtype 'F8_E5M2'"},
        {reshape, QVLM_E_CORRUPT, "has shape [32, 2], expected [64]"},
        {f64_dtype, QVLM_E_UNSUPPORTED, "has dtype I32"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fresh_copy();
        edit_header(SHARD2, cases[i].edit, 0);
        ASSERT_FAILS(load(&err), cases[i].code, &err, cases[i].msg);
        ASSERT_CONTAINS(err.msg, "model.language_model.norm.weight");
    }
}

static void test_missing_tensor(void) {
    qvlm_error err;
    fresh_copy();
    edit_header(SHARD2, drop, 0); /* the index still names it: the index check catches it */
    ASSERT_FAILS(load(&err), QVLM_E_CORRUPT, &err, "'model.language_model.norm.weight' is mapped to " SHARD2);
    json_t *idx = json_load_file(SRC "/model.safetensors.index.json", 0, NULL);
    json_object_del(json_object_get(idx, "weight_map"), victim);
    json_dump_file(idx, path_in("model.safetensors.index.json"), 0);
    json_decref(idx);
    ASSERT_FAILS(load(&err), QVLM_E_NOT_FOUND, &err, "missing tensor 'model.language_model.norm.weight'");
}

static void test_index_escapes_directory(void) {
    qvlm_error err;
    fresh_copy();
    json_t *idx = json_load_file(SRC "/model.safetensors.index.json", 0, NULL);
    json_object_set_new(json_object_get(idx, "weight_map"), victim, json_string("../../etc/passwd"));
    json_dump_file(idx, path_in("model.safetensors.index.json"), 0);
    json_decref(idx);
    ASSERT_FAILS(load(&err), QVLM_E_CORRUPT, &err, "not a plain file name");
}

static void test_header_length_lies(void) {
    qvlm_error err;
    qvlm_st_file f;
    uint8_t small[16] = {0xff, 0xff, 0xff, 0x00, 0, 0, 0, 0, '{', '}'};
    ASSERT_FAILS(qvlm_st_parse(small, sizeof(small), "x.safetensors", &f, &err), QVLM_E_CORRUPT, &err,
                 "runs past the end of the file");
    uint8_t tiny[4] = {1, 2, 3, 4};
    ASSERT_FAILS(qvlm_st_parse(tiny, sizeof(tiny), "x.safetensors", &f, &err), QVLM_E_CORRUPT, &err, "too short");
    const char *txt = "[1,2]";
    uint8_t arr[16] = {5, 0, 0, 0, 0, 0, 0, 0};
    memcpy(arr + 8, txt, 5);
    ASSERT_FAILS(qvlm_st_parse(arr, 13, "x.safetensors", &f, &err), QVLM_E_CORRUPT, &err, "not a JSON object");
}

/* Merge the two shards into one model.safetensors (the non-sharded layout); optionally add
 * one extra tensor. */
static void write_single_file(const qvlm_st_out *extra) {
    qvlm_error err;
    qvlm_st_set set;
    if (qvlm_st_set_open(SRC, &set, &err) != QVLM_OK) return;
    qvlm_st_out *outs = calloc(set.n_index + 1, sizeof(*outs));
    size_t n = 0;
    for (size_t i = 0; i < set.n_index; i++) {
        const qvlm_st_tensor *t = set.index[i];
        outs[n] = (qvlm_st_out){t->name, t->dtype, t->n_dims, {0}, t->data};
        memcpy(outs[n].shape, t->shape, sizeof(t->shape));
        n++;
    }
    if (extra) outs[n++] = *extra;
    unlink(path_in("model.safetensors.index.json"));
    unlink(path_in(SHARD1));
    unlink(path_in(SHARD2));
    qvlm_st_write(path_in("model.safetensors"), outs, n, &err);
    free(outs);
    qvlm_st_set_close(&set);
}

static void test_single_file_and_untied_head(void) {
    qvlm_error err;
    qvlm_model *m;
    fresh_copy();
    write_single_file(NULL);
    ASSERT_OK(qvlm_model_load_dir(dir, be, NULL, &m, &err), &err);
    ASSERT_TRUE(m->tied);
    qvlm_model_free(m);
    /* An lm_head.weight that is present makes the model untied: with a wrong shape it is an
     * error, never a silent fall back to the embedding (pegainfer#544). */
    static float bad[9];
    qvlm_st_out head = {"lm_head.weight", QVLM_DTYPE_F32, 2, {3, 3}, bad};
    fresh_copy();
    write_single_file(&head);
    ASSERT_FAILS(load(&err), QVLM_E_CORRUPT, &err, "tensor 'lm_head.weight' has shape [3, 3], expected [1024, 64]");
}

int main(void) {
    qvlm_error err;
    qvlm_backend_params bp = {QVLM_BACKEND_CPU, 1, QVLM_COMPUTE_F32};
    if (qvlm_backend_create(&bp, &be, &err)) return 1;
    RUN(test_loads_both_fixtures);
    RUN(test_weights_copied);
    RUN(test_missing_config);
    RUN(test_unknown_model_type);
    RUN(test_bad_config_field);
    RUN(test_missing_shard);
    RUN(test_truncated_shard);
    RUN(test_lying_headers);
    RUN(test_missing_tensor);
    RUN(test_index_escapes_directory);
    RUN(test_header_length_lies);
    RUN(test_single_file_and_untied_head);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    qvlm_backend_destroy(be);
    return qtest_done();
}
