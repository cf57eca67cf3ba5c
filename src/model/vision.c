/* vision.c - the vision tower (qwen35-arch §5), written against kernels/backend.h.
 *
 *   x = patch_embed(pixels) + bilinear(pos_embed)       per patch, merge-block order
 *   for each block:  x += proj(attn(rope2d(qkv(LN1(x)))))  attention inside each image frame
 *                    x += fc2(gelu_tanh(fc1(LN2(x))))
 *   out = fc2(gelu(fc1(LN(x) viewed as 2x2 groups)))     the merger, exact GELU
 */
#include "model/vision.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows of the MLP processed at once: bounds the fc1 buffer independently of the image size. */
#define MLP_ROWS 4096

typedef struct vscratch {
    float *x;    /* [N][Hv] residual */
    float *xn;   /* [N][Hv] normed */
    float *qkv;  /* [N][3*Hv] */
    float *attn; /* [N][Hv] */
    float *mlp;  /* [MLP_ROWS][max(I, 4*Hv)] */
    float *pix;  /* [MLP_ROWS][C*T*P*P] pixel rows being embedded */
    int32_t *rc; /* host [N][2] patch row, column */
    int32_t *tap_idx; /* host [N][4] */
    float *tap_w;     /* host [N][4] */
    int64_t *seg;     /* host [n_segments + 1] */
} vscratch;

size_t qvlm_vision_scratch_bytes(const qvlm_config *cfg, int64_t n) {
    const qvlm_vision_config *v = &cfg->vision;
    const int64_t Hv = v->hidden_size, m2 = v->spatial_merge_size * v->spatial_merge_size;
    const int64_t wide = QVLM_MAX(v->intermediate_size, m2 * Hv);
    const int64_t pd = v->in_channels * v->temporal_patch_size * v->patch_size * v->patch_size;
    return (size_t)n * (size_t)(6 * Hv) * sizeof(float) + (size_t)QVLM_MIN(n, MLP_ROWS) * (size_t)(wide + pd) * sizeof(float);
}

/* (row, col) of every patch: frames of row-major 2x2 (merge x merge) blocks, each block
 * row-major (the processor's order, §6), so block-mates are consecutive rows. */
static void patch_coords(const qvlm_grid *g, int64_t merge, int32_t *rc) {
    const int64_t bw = g->w / merge, per_frame = (int64_t)g->h * g->w;
    for (int64_t k = 0; k < qvlm_vision_patches(*g); k++) {
        int64_t w = k % per_frame, q = w % (merge * merge), b = w / (merge * merge);
        rc[2 * k] = (int32_t)((b / bw) * merge + q / merge);
        rc[2 * k + 1] = (int32_t)((b % bw) * merge + q % merge);
    }
}

/* Bilinear (align_corners) taps into the side x side learned table for one axis, in f32 as
 * transformers' get_vision_interpolation_indices_and_weights computes them. */
static void axis_taps(int32_t index, int32_t size, int64_t side, int32_t tap[2], float w[2]) {
    float src = (float)index * (float)(side - 1) / (float)(size > 1 ? size - 1 : 1);
    float fl = floorf(src), d = src - fl;
    tap[0] = (int32_t)QVLM_MIN((int64_t)fl, side - 1);
    tap[1] = (int32_t)QVLM_MIN((int64_t)fl + 1, side - 1);
    w[0] = fmaxf(1.0f - d, 0.0f);
    w[1] = fmaxf(1.0f - fabsf(d - 1.0f), 0.0f);
}

static void pos_taps(const qvlm_grid *g, int64_t side, const int32_t *rc, int32_t *idx, float *w) {
    for (int64_t k = 0; k < qvlm_vision_patches(*g); k++) {
        int32_t th[2], tw[2];
        float wh[2], ww[2];
        axis_taps(rc[2 * k], g->h, side, th, wh);
        axis_taps(rc[2 * k + 1], g->w, side, tw, ww);
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 2; b++) {
                idx[4 * k + 2 * a + b] = (int32_t)(th[a] * side + tw[b]);
                w[4 * k + 2 * a + b] = wh[a] * ww[b];
            }
    }
}

/* One block; expects LN1(x) in xn, and leaves LN1 of the next block (when there is one) of
 * the new x in xn: each residual add is fused with the norm that reads it. */
static void vision_block(const qvlm_model *m, qvlm_stream *s, const qvlm_vision_block *b,
                         const qvlm_vision_block *next, vscratch *v, int64_t N, int64_t n_seg) {
    const qvlm_vision_config *c = &m->cfg.vision;
    const int64_t Hv = c->hidden_size, H = c->num_heads, hd = Hv / H, I = c->intermediate_size;
    qvlm_op_matmul(s, v->qkv, 3 * Hv, v->xn, Hv, &b->qkv_w, &b->qkv_b, N);
    /* q and k heads are adjacent in a qkv row: one call rotates both (same angles). */
    qvlm_op_rope_vision(s, v->qkv, 3 * Hv, 2 * H, hd, hd, v->rc, N, c->rope_theta, m->opts.rope_freq_bf16);
    qvlm_op_attention_segments(s, v->attn, v->qkv, v->seg, n_seg, H, hd, 1.0f / sqrtf((float)hd));
    qvlm_op_matmul(s, v->xn, Hv, v->attn, Hv, &b->proj_w, &b->proj_b, N);
    qvlm_op_add_layer_norm(s, v->xn, v->x, v->xn, &b->norm2_w, &b->norm2_b, 1e-6f, N, Hv);
    for (int64_t r = 0; r < N; r += MLP_ROWS) {
        int64_t n = QVLM_MIN((int64_t)MLP_ROWS, N - r);
        qvlm_op_matmul(s, v->mlp, I, v->xn + r * Hv, Hv, &b->fc1_w, &b->fc1_b, n);
        qvlm_op_gelu(s, v->mlp, n * I, true);
        qvlm_op_matmul(s, v->attn + r * Hv, Hv, v->mlp, I, &b->fc2_w, &b->fc2_b, n);
    }
    if (next) qvlm_op_add_layer_norm(s, v->xn, v->x, v->attn, &next->norm1_w, &next->norm1_b, 1e-6f, N, Hv);
    else qvlm_op_add(s, v->x, v->x, v->attn, N * Hv);
}

/* LN per patch, then each group of merge^2 consecutive rows as one vector: fc1, exact GELU, fc2. */
static void merger(const qvlm_model *m, qvlm_stream *s, vscratch *v, int64_t N, float *out) {
    const qvlm_vision_config *c = &m->cfg.vision;
    const qvlm_vision_weights *w = &m->vision;
    const int64_t Hv = c->hidden_size, g = c->spatial_merge_size * c->spatial_merge_size, Hm = g * Hv;
    const int64_t n_out = N / g, D = c->out_hidden_size;
    qvlm_op_layer_norm(s, v->xn, v->x, &w->merger_norm_w, &w->merger_norm_b, 1e-6f, N, Hv);
    for (int64_t r = 0; r < n_out; r += MLP_ROWS) {
        int64_t n = QVLM_MIN((int64_t)MLP_ROWS, n_out - r);
        qvlm_op_matmul(s, v->mlp, Hm, v->xn + r * Hm, Hm, &w->merger_fc1_w, &w->merger_fc1_b, n);
        qvlm_op_gelu(s, v->mlp, n * Hm, false);
        qvlm_op_matmul(s, out + r * D, D, v->mlp, Hm, &w->merger_fc2_w, &w->merger_fc2_b, n);
    }
}

static void free_scratch(qvlm_backend *be, vscratch *v) {
    qvlm_backend_free(be, v->x);
    qvlm_backend_free(be, v->xn);
    qvlm_backend_free(be, v->qkv);
    qvlm_backend_free(be, v->attn);
    qvlm_backend_free(be, v->mlp);
    qvlm_backend_free(be, v->pix);
    free(v->rc);
    free(v->tap_idx);
    free(v->tap_w);
    free(v->seg);
}

static qvlm_status check_grids(const qvlm_model *m, const qvlm_grid *grids, int64_t n_images, int64_t *N,
                               int64_t *n_seg, qvlm_error *err) {
    const int64_t merge = m->cfg.vision.spatial_merge_size;
    *N = 0, *n_seg = 0;
    for (int64_t i = 0; i < n_images; i++) {
        qvlm_grid g = grids[i];
        if (g.t < 1 || g.h < merge || g.w < merge || g.h % merge || g.w % merge || (int64_t)g.h * g.w > (1 << 24))
            return qvlm_errorf(err, QVLM_E_INVALID, "image %lld: grid %dx%dx%d is not a positive multiple of the merge size %lld",
                               (long long)i, g.t, g.h, g.w, (long long)merge);
        *N += qvlm_vision_patches(g);
        *n_seg += g.t;
    }
    return *N > 0 ? QVLM_OK : qvlm_errorf(err, QVLM_E_INVALID, "no images to encode");
}

qvlm_status qvlm_vision_encode(const qvlm_model *m, qvlm_stream *s, const float *pixels, const qvlm_grid *grids,
                               int64_t n_images, float *out, qvlm_error *err) {
    const qvlm_vision_config *c = &m->cfg.vision;
    if (!c->present) return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s: this checkpoint has no vision tower", m->dir);
    int64_t N, n_seg;
    qvlm_status rc = check_grids(m, grids, n_images, &N, &n_seg, err);
    if (rc) return rc;
    const int64_t Hv = c->hidden_size, merge = c->spatial_merge_size;
    const int64_t pd = c->in_channels * c->temporal_patch_size * c->patch_size * c->patch_size;
    const int64_t wide = QVLM_MAX(c->intermediate_size, merge * merge * Hv), mr = QVLM_MIN(N, (int64_t)MLP_ROWS);
    qvlm_backend *be = qvlm_stream_backend(s);
    vscratch v = {0};
    v.x = qvlm_backend_alloc(be, (size_t)(N * Hv) * sizeof(float));
    v.xn = qvlm_backend_alloc(be, (size_t)(N * Hv) * sizeof(float));
    v.qkv = qvlm_backend_alloc(be, (size_t)(N * 3 * Hv) * sizeof(float));
    v.attn = qvlm_backend_alloc(be, (size_t)(N * Hv) * sizeof(float));
    v.mlp = qvlm_backend_alloc(be, (size_t)(mr * wide) * sizeof(float));
    v.pix = qvlm_backend_alloc(be, (size_t)(mr * pd) * sizeof(float));
    v.rc = malloc((size_t)(2 * N) * sizeof(int32_t));
    v.tap_idx = malloc((size_t)(4 * N) * sizeof(int32_t));
    v.tap_w = malloc((size_t)(4 * N) * sizeof(float));
    v.seg = malloc((size_t)(n_seg + 1) * sizeof(int64_t));
    if (!v.x || !v.xn || !v.qkv || !v.attn || !v.mlp || !v.pix || !v.rc || !v.tap_idx || !v.tap_w || !v.seg) {
        free_scratch(be, &v);
        return qvlm_errorf(err, QVLM_E_NOMEM, "vision tower: out of memory for %lld patches", (long long)N);
    }
    rc = qvlm_stream_reserve_matmul(s, QVLM_MIN(N, (int64_t)MLP_ROWS), QVLM_MAX(wide, pd), err);
    const int64_t side = (int64_t)llround(sqrt((double)c->num_position_embeddings));
    int64_t row = 0, si = 0;
    v.seg[0] = 0;
    for (int64_t i = 0; i < n_images; i++) {
        patch_coords(&grids[i], merge, v.rc + 2 * row);
        pos_taps(&grids[i], side, v.rc + 2 * row, v.tap_idx + 4 * row, v.tap_w + 4 * row);
        for (int32_t t = 0; t < grids[i].t; t++, si++) v.seg[si + 1] = v.seg[si] + (int64_t)grids[i].h * grids[i].w;
        row += qvlm_vision_patches(grids[i]);
    }
    if (!rc) {
        /* The Conv3d patch embedding with kernel = stride is a linear map of each patch row. */
        for (int64_t r = 0; r < N; r += MLP_ROWS) {
            int64_t n = QVLM_MIN((int64_t)MLP_ROWS, N - r);
            qvlm_op_upload(s, v.pix, pixels + r * pd, (size_t)(n * pd) * sizeof(float));
            qvlm_op_matmul(s, v.x + r * Hv, Hv, v.pix, pd, &m->vision.patch_w, &m->vision.patch_b, n);
        }
        qvlm_op_add_weighted_rows(s, v.x, &m->vision.pos_embed, v.tap_idx, v.tap_w, N, 4);
        const qvlm_vision_block *blk = m->vision.blocks;
        if (c->depth > 0) qvlm_op_layer_norm(s, v.xn, v.x, &blk[0].norm1_w, &blk[0].norm1_b, 1e-6f, N, Hv);
        for (int64_t b = 0; b < c->depth; b++)
            vision_block(m, s, &blk[b], b + 1 < c->depth ? &blk[b + 1] : NULL, &v, N, n_seg);
        merger(m, s, &v, N, out);
        qvlm_stream_sync(s);
        rc = qvlm_stream_status(s, err);
    }
    free_scratch(be, &v);
    return rc;
}
