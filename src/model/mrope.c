/* mrope.c - multimodal RoPE position ids (see mrope.h; qwen35-arch §8). */
#include "model/mrope.h"

qvlm_status qvlm_mrope_positions(const int32_t *ids, int64_t n, int32_t image_token_id, const qvlm_grid *grids,
                                 int64_t n_grids, int64_t merge, int64_t start_pos, int32_t *pos, int64_t *next_pos,
                                 qvlm_error *err) {
    int32_t *pt = pos, *ph = pos + n, *pw = pos + 2 * n;
    int64_t cur = start_pos, img = 0, max_pos = start_pos - 1;
    for (int64_t i = 0; i < n;) {
        if (ids[i] != image_token_id) {
            pt[i] = ph[i] = pw[i] = (int32_t)cur;
            max_pos = cur++;
            i++;
            continue;
        }
        if (img >= n_grids)
            return qvlm_errorf(err, QVLM_E_MISMATCH, "image pad tokens at index %lld but only %lld image(s) were given",
                               (long long)i, (long long)n_grids);
        qvlm_grid g = grids[img];
        const int64_t gh = g.h / merge, gw = g.w / merge, cnt = qvlm_grid_tokens(g, merge);
        for (int64_t k = 0; k < cnt; k++) {
            if (i + k >= n || ids[i + k] != image_token_id)
                return qvlm_errorf(err, QVLM_E_MISMATCH,
                                   "image %lld (grid %dx%dx%d) needs %lld pad tokens but its run at index %lld has %lld",
                                   (long long)img, g.t, g.h, g.w, (long long)cnt, (long long)i, (long long)k);
            const int64_t tt = k / (gh * gw), r = (k / gw) % gh, c = k % gw;
            pt[i + k] = (int32_t)(cur + tt);
            ph[i + k] = (int32_t)(cur + r);
            pw[i + k] = (int32_t)(cur + c);
        }
        /* The largest position of the run: any of its three axes. */
        int64_t mx = cur + QVLM_MAX(QVLM_MAX((int64_t)g.t - 1, gh - 1), gw - 1);
        if (mx > max_pos) max_pos = mx;
        cur += QVLM_MAX(gh, gw);
        i += cnt;
        img++;
        if (i < n && ids[i] == image_token_id) {
            /* Two images' pads touching with no separator: the template never does this, and
             * the split between them would be ambiguous. */
            if (img >= n_grids)
                return qvlm_errorf(err, QVLM_E_MISMATCH, "image %lld has more pad tokens than its grid allows",
                                   (long long)(img - 1));
        }
    }
    if (img != n_grids)
        return qvlm_errorf(err, QVLM_E_MISMATCH, "%lld image(s) given but pad tokens for %lld found",
                           (long long)n_grids, (long long)img);
    *next_pos = QVLM_MAX(cur, max_pos + 1);
    return QVLM_OK;
}
