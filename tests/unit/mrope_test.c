/* mrope_test.c - M-RoPE positions equal transformers' get_rope_index for every fixture prompt,
 * whole or continued from any cut point outside an image (the cached-prefix case), and bad
 * pad/grid combinations are refused. */
#include "core/safetensors.h"
#include "model/mrope.h"
#include "qtest.h"

#define IMAGE_PAD 1004 /* from each fixture's config.json image_token_id (checked below) */

static qvlm_st_file ref;

static void load_grids(qvlm_grid *g) {
    for (int i = 0; i < 4; i++) {
        char key[64];
        snprintf(key, sizeof(key), "image%d.grid_thw", i);
        const int64_t *v = (const int64_t *)qvlm_st_file_find(&ref, key)->data;
        g[i] = (qvlm_grid){(int32_t)v[0], (int32_t)v[1], (int32_t)v[2]};
    }
}

static void check_prompt(const char *name, const int *imgs, int n_imgs) {
    char key[64];
    qvlm_error err;
    qvlm_grid all[4], grids[4];
    load_grids(all);
    for (int i = 0; i < n_imgs; i++) grids[i] = all[imgs[i]];
    snprintf(key, sizeof(key), "%s.input_ids", name);
    const qvlm_st_tensor *ti = qvlm_st_file_find(&ref, key);
    snprintf(key, sizeof(key), "%s.position_ids", name);
    const int64_t *rp = (const int64_t *)qvlm_st_file_find(&ref, key)->data;
    snprintf(key, sizeof(key), "%s.rope_delta", name);
    int64_t delta = *(const int64_t *)qvlm_st_file_find(&ref, key)->data;
    const int64_t n = ti->n_elements;
    int32_t *ids = malloc((size_t)n * sizeof(int32_t)), *pos = malloc((size_t)(3 * n) * sizeof(int32_t));
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)((const int64_t *)ti->data)[i];
    int64_t next;
    ASSERT_OK(qvlm_mrope_positions(ids, n, IMAGE_PAD, grids, n_imgs, 2, 0, pos, &next, &err), &err);
    for (int64_t i = 0; i < 3 * n; i++) ASSERT_EQ_INT(pos[i], rp[i]);
    ASSERT_EQ_INT(next - n, delta); /* rope_delta = max position + 1 - length */
    /* Continue from every cut point that is not inside an image run: same positions. */
    for (int64_t cut = 1; cut < n; cut++) {
        if (ids[cut] == IMAGE_PAD && ids[cut - 1] == IMAGE_PAD) continue;
        int done_imgs = 0;
        for (int64_t i = 0; i < cut; i++) done_imgs += ids[i] == IMAGE_PAD && (i == 0 || ids[i - 1] != IMAGE_PAD);
        int64_t mid;
        int32_t *p1 = malloc((size_t)(3 * cut) * sizeof(int32_t)), *p2 = malloc((size_t)(3 * (n - cut)) * sizeof(int32_t));
        ASSERT_OK(qvlm_mrope_positions(ids, cut, IMAGE_PAD, grids, done_imgs, 2, 0, p1, &mid, &err), &err);
        ASSERT_OK(qvlm_mrope_positions(ids + cut, n - cut, IMAGE_PAD, grids + done_imgs, n_imgs - done_imgs, 2, mid, p2,
                                       &next, &err),
                  &err);
        for (int a = 0; a < 3; a++)
            for (int64_t i = 0; i < n - cut; i++) ASSERT_EQ_INT(p2[a * (n - cut) + i], rp[a * n + cut + i]);
        free(p1);
        free(p2);
    }
    free(ids);
    free(pos);
}

static void test_dense_prompts(void) {
    qvlm_error err;
    ASSERT_OK(qvlm_st_open(QVLM_FIXTURES "/tiny-dense/reference.safetensors", &ref, &err), &err);
    int i1[] = {0}, i2[] = {0, 1}, i4[] = {0, 1, 2, 3};
    check_prompt("turn1", i1, 1);
    check_prompt("turn2", i2, 2);
    check_prompt("turn3", i2, 2);
    check_prompt("turn4", i4, 4);
    check_prompt("text_only", NULL, 0);
    qvlm_st_close(&ref);
}

static void test_moe_prompts(void) {
    qvlm_error err;
    ASSERT_OK(qvlm_st_open(QVLM_FIXTURES "/tiny-moe/reference.safetensors", &ref, &err), &err);
    int i1[] = {0}, i2[] = {0, 1}, i4[] = {0, 1, 2, 3};
    check_prompt("turn1", i1, 1);
    check_prompt("turn4", i4, 4);
    check_prompt("turn3", i2, 2);
    qvlm_st_close(&ref);
}

static void test_mismatches_refused(void) {
    qvlm_error err;
    int32_t ids[8] = {5, IMAGE_PAD, IMAGE_PAD, IMAGE_PAD, 6, 7, 8, 9}, pos[24];
    int64_t next;
    qvlm_grid g = {1, 4, 4}; /* 4 pads */
    ASSERT_FAILS(qvlm_mrope_positions(ids, 8, IMAGE_PAD, &g, 1, 2, 0, pos, &next, &err), QVLM_E_MISMATCH, &err,
                 "needs 4 pad tokens but its run at index 1 has 3");
    ASSERT_FAILS(qvlm_mrope_positions(ids, 8, IMAGE_PAD, NULL, 0, 2, 0, pos, &next, &err), QVLM_E_MISMATCH, &err,
                 "only 0 image(s) were given");
    ASSERT_FAILS(qvlm_mrope_positions(ids, 1, IMAGE_PAD, &g, 1, 2, 0, pos, &next, &err), QVLM_E_MISMATCH, &err,
                 "1 image(s) given but pad tokens for 0 found");
}

int main(void) {
    RUN(test_dense_prompts);
    RUN(test_moe_prompts);
    RUN(test_mismatches_refused);
    return qtest_done();
}
