/* vision_test.c - the vision tower against transformers: the fixtures' image embeddings from
 * their reference pixel values (<= 1e-3, the tolerance), with the generator's numerics
 * and with from_pretrained's against the float64 run; images encode the same alone or batched;
 * (The 2048x2048 memory bound is in vision_memory_slow_test.c.) */
#include "core/safetensors.h"
#include "kernels/backend.h"
#include "model/model.h"
#include "model/vision.h"
#include "qtest.h"

static double compare(const float *a, const void *ref, bool ref64, int64_t n) {
    double mx = 0;
    for (int64_t i = 0; i < n; i++) {
        double r = ref64 ? ((const double *)ref)[i] : ((const float *)ref)[i];
        double d = fabs(a[i] - r);
        if (isnan(d)) return INFINITY;
        mx = fmax(mx, d);
    }
    return mx;
}

static void check_fixture(const char *fx, bool bf16_freq) {
    char path[512];
    qvlm_error err;
    qvlm_backend *be;
    qvlm_stream *s;
    qvlm_model *m;
    qvlm_st_file ref, ref64;
    qvlm_backend_params bp = {QVLM_BACKEND_CPU, 2, QVLM_COMPUTE_F32};
    qvlm_model_opts mo = {.rope_freq_bf16 = bf16_freq};
    ASSERT_OK(qvlm_backend_create(&bp, &be, &err), &err);
    snprintf(path, sizeof(path), "%s/%s/model", QVLM_FIXTURES, fx);
    ASSERT_OK(qvlm_model_load_dir(path, be, &mo, &m, &err), &err);
    ASSERT_OK(qvlm_stream_create(be, &s, &err), &err);
    snprintf(path, sizeof(path), "%s/%s/reference.safetensors", QVLM_FIXTURES, fx);
    ASSERT_OK(qvlm_st_open(path, &ref, &err), &err);
    snprintf(path, sizeof(path), "%s/%s/reference_f64.safetensors", QVLM_FIXTURES, fx);
    ASSERT_OK(qvlm_st_open(path, &ref64, &err), &err);
    const int64_t D = m->cfg.text.hidden_size;
    qvlm_grid grids[4];
    const float *pix[4];
    int64_t rows[4], total_rows = 0, total_patches = 0;
    float *one[4];
    for (int i = 0; i < 4; i++) {
        char key[64];
        snprintf(key, sizeof(key), "image%d.grid_thw", i);
        const int64_t *g = (const int64_t *)qvlm_st_file_find(&ref, key)->data;
        grids[i] = (qvlm_grid){(int32_t)g[0], (int32_t)g[1], (int32_t)g[2]};
        snprintf(key, sizeof(key), "image%d.pixel_values", i);
        pix[i] = (const float *)qvlm_st_file_find(&ref, key)->data;
        rows[i] = qvlm_grid_tokens(grids[i], m->cfg.vision.spatial_merge_size);
        one[i] = qvlm_backend_alloc(be, (size_t)(rows[i] * D) * sizeof(float));
        ASSERT_OK(qvlm_vision_encode(m, s, pix[i], &grids[i], 1, one[i], &err), &err);
        snprintf(key, sizeof(key), bf16_freq ? "image%d.embeds" : "image%d.embeds_f64", i);
        const qvlm_st_tensor *r = qvlm_st_file_find(bf16_freq ? &ref : &ref64, key);
        ASSERT_TRUE(r && r->n_elements == rows[i] * D);
        double e = compare(one[i], r->data, !bf16_freq, rows[i] * D);
        printf("  %s image%d (%s): max |embeds - transformers| %.3g\n", fx, i, bf16_freq ? "vs reference" : "vs f64", e);
        ASSERT_TRUE(e <= 1e-3);
        total_rows += rows[i];
        total_patches += qvlm_vision_patches(grids[i]);
    }
    /* All four in one batch: bitwise the same rows. */
    float *cat = malloc((size_t)(total_patches * 1536) * sizeof(float));
    float *both = qvlm_backend_alloc(be, (size_t)(total_rows * D) * sizeof(float));
    for (int i = 0, p = 0; i < 4; p += (int)qvlm_vision_patches(grids[i]), i++)
        memcpy(cat + (int64_t)p * 1536, pix[i], (size_t)qvlm_vision_patches(grids[i]) * 1536 * sizeof(float));
    ASSERT_OK(qvlm_vision_encode(m, s, cat, grids, 4, both, &err), &err);
    for (int i = 0, r = 0; i < 4; r += (int)rows[i], i++)
        ASSERT_TRUE(memcmp(both + (int64_t)r * D, one[i], (size_t)(rows[i] * D) * sizeof(float)) == 0);
    free(cat);
    qvlm_backend_free(be, both);
    for (int i = 0; i < 4; i++) qvlm_backend_free(be, one[i]);
    qvlm_st_close(&ref);
    qvlm_st_close(&ref64);
    qvlm_stream_destroy(s);
    qvlm_model_free(m);
    qvlm_backend_destroy(be);
}

static void test_dense_reference(void) { check_fixture("tiny-dense", true); }
static void test_dense_f64(void) { check_fixture("tiny-dense", false); }
static void test_moe_reference(void) { check_fixture("tiny-moe", true); }
static void test_moe_f64(void) { check_fixture("tiny-moe", false); }

int main(void) {
    RUN(test_dense_reference);
    RUN(test_dense_f64);
    RUN(test_moe_reference);
    RUN(test_moe_f64);
    return qtest_done();
}
