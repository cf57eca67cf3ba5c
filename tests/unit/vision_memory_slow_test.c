/* vision_memory_slow_test.c - a 2048x2048 image's vision pass stays under a memory bound linear
 * in its patches (measured through the backend's peak counter). Labelled "slow": it runs in
 * the normal build, not under the sanitizers, where its 16384-patch attention takes minutes. */
#include "kernels/backend.h"
#include "model/model.h"
#include "model/vision.h"
#include "qtest.h"

/* 2048x2048 pixels = 128x128 patches. Peak backend memory during the pass must stay within the
 * tower's linear scratch estimate plus the matmul scratch; an n x n score matrix alone would be
 * 16384^2 x 4 bytes = 1 GiB. */
static void test_large_image_memory(void) {
    qvlm_error err;
    qvlm_backend *be;
    qvlm_stream *s;
    qvlm_model *m;
    qvlm_backend_params bp = {QVLM_BACKEND_CPU, 2, QVLM_COMPUTE_F32};
    ASSERT_OK(qvlm_backend_create(&bp, &be, &err), &err);
    ASSERT_OK(qvlm_model_load_dir(QVLM_FIXTURES "/tiny-dense/model", be, NULL, &m, &err), &err);
    ASSERT_OK(qvlm_stream_create(be, &s, &err), &err);
    qvlm_grid g = {1, 128, 128};
    const int64_t N = qvlm_vision_patches(g), D = m->cfg.text.hidden_size;
    float *pix = malloc((size_t)(N * 1536) * sizeof(float));
    uint32_t x = 1;
    for (int64_t i = 0; i < N * 1536; i++) x = x * 1664525u + 1013904223u, pix[i] = (float)(x >> 8) / 8388608.0f - 1.0f;
    float *out = qvlm_backend_alloc(be, (size_t)(N / 4 * D) * sizeof(float));
    size_t before, peak;
    qvlm_backend_mem_reset_peak(be);
    qvlm_backend_mem_stats(be, &before, NULL);
    ASSERT_OK(qvlm_vision_encode(m, s, pix, &g, 1, out, &err), &err);
    qvlm_backend_mem_stats(be, NULL, &peak);
    size_t used = peak - before, bound = qvlm_vision_scratch_bytes(&m->cfg, N) + ((size_t)16 << 20);
    printf("  2048x2048 (%lld patches): peak %.1f MiB above baseline, bound %.1f MiB\n", (long long)N, used / 1048576.0,
           bound / 1048576.0);
    ASSERT_TRUE(used <= bound);
    ASSERT_TRUE(used < ((size_t)1 << 30) / 4); /* far below one n x n f32 score matrix */
    bool finite = true;
    for (int64_t i = 0; i < N / 4 * D; i++) finite &= isfinite(out[i]);
    ASSERT_TRUE(finite);
    free(pix);
    qvlm_backend_free(be, out);
    qvlm_stream_destroy(s);
    qvlm_model_free(m);
    qvlm_backend_destroy(be);
}

int main(void) {
    RUN(test_large_image_memory);
    return qtest_done();
}
