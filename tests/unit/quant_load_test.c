/* quant_load_test.c - load-time Q8_0 quantisation (qvlm_model_opts.quant): every text-tower
 * matrix weight whose rows are a multiple of 32 long becomes Q8_0 and dequantises to within
 * half a block scale of the stored weight, the others (and the vision tower) stay as stored, a
 * tied lm_head is the quantised embedding, and the quantised model runs (finite logits). */
#include <math.h>

#include "kernels/cpu/quant.h"
#include "model/model.h"
#include "model/text.h"
#include "qtest.h"

typedef struct counts {
    int quantised, kept;
    double worst; /* max |x - deq| / (d / 2) over every element */
} counts;

static void compare(const qvlm_tensor *orig, const qvlm_tensor *q, counts *c, bool *bad) {
    if (!orig->data) return;
    if (q->dtype != QVLM_DTYPE_Q8_0) {
        c->kept++;
        /* kept means untouched (each model maps the checkpoint itself: compare bytes) */
        if (q->dtype != orig->dtype || memcmp(q->data, orig->data, qvlm_tensor_bytes(orig)) != 0) *bad = true;
        if (orig->n_dims == 2 && orig->ne[1] % 32 == 0) *bad = true;      /* should have been quantised */
        return;
    }
    c->quantised++;
    if (q->n_dims != 2 || q->ne[0] != orig->ne[0] || q->ne[1] != orig->ne[1]) {
        *bad = true;
        return;
    }
    const int64_t rows = orig->ne[0], k = orig->ne[1];
    float *x = malloc((size_t)k * sizeof(float)), *y = malloc((size_t)k * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *qr = (const uint8_t *)q->data + (size_t)r * qvlm_dtype_row_bytes(QVLM_DTYPE_Q8_0, k);
        qvlm_to_f32(x, (const uint8_t *)orig->data + (size_t)r * qvlm_dtype_row_bytes(orig->dtype, k), orig->dtype, (size_t)k);
        qvlm_dequantize_q8_0(y, qr, k);
        for (int64_t i = 0; i < k; i++) {
            qvlm_f16 dh;
            memcpy(&dh, qr + (i / 32) * QVLM_Q8_0_BLOCK_BYTES, 2);
            double d = qvlm_f16_to_f32(dh), e = fabs((double)x[i] - y[i]);
            double rel = d > 0 ? e / (d / 2) : (e == 0 ? 0 : INFINITY);
            if (rel > c->worst) c->worst = rel;
        }
    }
    free(x), free(y);
}

static void check_fixture(const char *name) {
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/%s/model", QVLM_FIXTURES, name);
    qvlm_error err;
    qvlm_backend *be;
    qvlm_backend_params bp = {QVLM_BACKEND_CPU, 2, QVLM_COMPUTE_F32};
    ASSERT_OK(qvlm_backend_create(&bp, &be, &err), &err);
    qvlm_model *m0 = NULL, *m1 = NULL;
    qvlm_model_opts q = {.quant = QVLM_QUANT_Q8_0};
    ASSERT_OK(qvlm_model_load_dir(dir, be, NULL, &m0, &err), &err);
    ASSERT_OK(qvlm_model_load_dir(dir, be, &q, &m1, &err), &err);
    counts c = {0, 0, 0};
    bool bad = false;
    compare(&m0->embed_tokens, &m1->embed_tokens, &c, &bad);
    if (m1->tied) bad |= m1->lm_head.data != m1->embed_tokens.data;
    else compare(&m0->lm_head, &m1->lm_head, &c, &bad);
    for (int64_t i = 0; i < m0->cfg.text.num_hidden_layers; i++) {
        const qvlm_layer *a = &m0->layers[i], *b = &m1->layers[i];
        const qvlm_tensor *pa[] = {&a->gdn.in_proj_qkv, &a->gdn.in_proj_z, &a->gdn.in_proj_a, &a->gdn.in_proj_b,
                                   &a->gdn.out_proj, &a->attn.q_proj, &a->attn.k_proj, &a->attn.v_proj, &a->attn.o_proj,
                                   &a->mlp.gate_proj, &a->mlp.up_proj, &a->mlp.down_proj, &a->moe.router,
                                   &a->moe.shared_gate, &a->moe.shared.gate_proj, &a->moe.shared.up_proj,
                                   &a->moe.shared.down_proj};
        const qvlm_tensor *pb[] = {&b->gdn.in_proj_qkv, &b->gdn.in_proj_z, &b->gdn.in_proj_a, &b->gdn.in_proj_b,
                                   &b->gdn.out_proj, &b->attn.q_proj, &b->attn.k_proj, &b->attn.v_proj, &b->attn.o_proj,
                                   &b->mlp.gate_proj, &b->mlp.up_proj, &b->mlp.down_proj, &b->moe.router,
                                   &b->moe.shared_gate, &b->moe.shared.gate_proj, &b->moe.shared.up_proj,
                                   &b->moe.shared.down_proj};
        for (size_t k = 0; k < sizeof(pa) / sizeof(pa[0]); k++) compare(pa[k], pb[k], &c, &bad);
        for (int64_t e = 0; a->moe.expert && e < m0->cfg.text.num_experts; e++) {
            compare(&a->moe.expert[e].gate_proj, &b->moe.expert[e].gate_proj, &c, &bad);
            compare(&a->moe.expert[e].up_proj, &b->moe.expert[e].up_proj, &c, &bad);
            compare(&a->moe.expert[e].down_proj, &b->moe.expert[e].down_proj, &c, &bad);
        }
        /* 1-D weights and the conv stay as stored */
        bad |= b->input_layernorm.dtype != a->input_layernorm.dtype || b->gdn.conv1d.dtype != a->gdn.conv1d.dtype;
    }
    for (int64_t j = 0; m0->cfg.vision.present && j < m0->cfg.vision.depth; j++)
        bad |= m1->vision.blocks[j].qkv_w.dtype == QVLM_DTYPE_Q8_0;
    printf("  %s: %d weights quantised (%.0f KiB), %d kept; worst |x - deq| = %.3f x d/2\n", name, c.quantised,
           (double)m1->copy_bytes / 1024, c.kept, c.worst);
    /* the quantised model runs: a few tokens, finite logits */
    qvlm_stream *s;
    qvlm_text_ctx *tc = NULL;
    ASSERT_OK(qvlm_stream_create(be, &s, &err), &err);
    ASSERT_OK(qvlm_text_ctx_create(m1, s, 8, &tc, &err), &err);
    void *rec = qvlm_backend_alloc(be, qvlm_text_recurrent_bytes(&m1->cfg) + 64);
    void *blk = qvlm_backend_alloc(be, qvlm_text_kv_block_bytes(&m1->cfg, 64) + 64);
    qvlm_text_state_reset(s, &m1->cfg, rec);
    qvlm_seq_state st = {rec, &blk, 1, 64, 0};
    int32_t ids[4] = {1, 2, 3, 4}, pos[12] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
    float *logits = malloc((size_t)m1->cfg.text.vocab_size * sizeof(float));
    qvlm_text_batch b = {ids, NULL, pos, 4, 1, logits, NULL, NULL, NULL};
    qvlm_status rc = qvlm_text_forward(tc, &st, &b, &err);
    bool finite = true;
    for (int64_t i = 0; i < m1->cfg.text.vocab_size; i++) finite &= isfinite(logits[i]) != 0;
    free(logits);
    qvlm_backend_free(be, rec), qvlm_backend_free(be, blk);
    qvlm_text_ctx_destroy(tc);
    qvlm_stream_destroy(s);
    qvlm_model_free(m0), qvlm_model_free(m1);
    qvlm_backend_destroy(be);
    ASSERT_OK(rc, &err);
    ASSERT_TRUE(finite);
    ASSERT_TRUE(!bad);
    ASSERT_TRUE(c.quantised > 10);
    ASSERT_TRUE(c.worst <= 1.001); /* |x - d q| <= d/2 up to the quotient's rounding */
}

static void test_tiny_dense(void) { check_fixture("tiny-dense"); }
static void test_tiny_moe(void) { check_fixture("tiny-moe"); }

int main(void) {
    RUN(test_tiny_dense);
    RUN(test_tiny_moe);
    return qtest_done();
}
