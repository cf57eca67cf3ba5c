/* prompt.c - placeholder expansion and image spans (see prompt.h). */
#include "engine/prompt.h"

#include <stdlib.h>
#include <string.h>

void qvlm_prompt_free(qvlm_prompt *p) {
    free(p->ids);
    free(p->spans);
    memset(p, 0, sizeof(*p));
}

qvlm_status qvlm_prompt_expand(const int32_t *ids, int64_t n, const qvlm_config *cfg, const qvlm_grid *grids,
                               const qvlm_hash128 *hashes, int64_t n_images, qvlm_prompt *out, qvlm_error *err) {
    memset(out, 0, sizeof(*out));
    const int32_t pad = cfg->image_token_id;
    const int64_t merge = cfg->vision.present ? cfg->vision.spatial_merge_size : 2;
    /* First pass: count runs and the expanded length. */
    int64_t runs = 0, total = 0;
    for (int64_t i = 0; i < n;) {
        if (ids[i] != pad) {
            total++, i++;
            continue;
        }
        int64_t j = i;
        while (j < n && ids[j] == pad) j++;
        if (runs >= n_images)
            return qvlm_errorf(err, QVLM_E_MISMATCH, "the prompt has more image placeholders than the %lld image(s) given",
                               (long long)n_images);
        int64_t need = qvlm_grid_tokens(grids[runs], merge);
        if (j - i != 1 && j - i != need)
            return qvlm_errorf(err, QVLM_E_MISMATCH, "image %lld needs %lld pad tokens but its placeholder has %lld",
                               (long long)runs, (long long)need, (long long)(j - i));
        total += need;
        runs++;
        i = j;
    }
    if (runs != n_images)
        return qvlm_errorf(err, QVLM_E_MISMATCH, "%lld image(s) given but the prompt has %lld image placeholder(s)",
                           (long long)n_images, (long long)runs);
    out->ids = malloc((size_t)(total ? total : 1) * sizeof(int32_t));
    out->spans = calloc((size_t)(runs ? runs : 1), sizeof(*out->spans));
    if (!out->ids || !out->spans) {
        qvlm_prompt_free(out);
        return qvlm_errorf(err, QVLM_E_NOMEM, "prompt of %lld tokens: out of memory", (long long)total);
    }
    int64_t k = 0, r = 0;
    for (int64_t i = 0; i < n;) {
        if (ids[i] != pad) {
            out->ids[k++] = ids[i++];
            continue;
        }
        int64_t j = i;
        while (j < n && ids[j] == pad) j++;
        qvlm_image_span *sp = &out->spans[r];
        int64_t need = qvlm_grid_tokens(grids[r], merge);
        sp->start = (k > 0 && out->ids[k - 1] == cfg->vision_start_token_id) ? k - 1 : k;
        sp->pad_start = k;
        for (int64_t c = 0; c < need; c++) out->ids[k++] = pad;
        sp->pad_end = k;
        sp->end = (j < n && ids[j] == cfg->vision_end_token_id) ? k + 1 : k;
        sp->grid = grids[r];
        if (hashes) sp->hash = hashes[r];
        sp->image = r++;
        i = j;
    }
    out->n = total;
    out->n_spans = runs;
    return QVLM_OK;
}
