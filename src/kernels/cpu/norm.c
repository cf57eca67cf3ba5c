/* norm.c - RMSNorm, gated RMSNorm and LayerNorm on the CPU (qwen35-arch §3.2, §5), alone or
 * fused with the residual add before them. Numerics follow transformers in f32 (the mean of
 * squares, then (x * rsqrt(mean + eps)) * (offset + w)); the exact operations are defined in
 * rowops.h and run by the scalar reference or its AVX-512 twin (same bits). Rows split across
 * threads; a row's bits never depend on the split. */
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/rowops.h"

struct norm_job {
    float *y;
    int64_t ldy;
    float *x; /* written only when delta != NULL */
    int64_t ldx;
    const float *delta; /* residual to add first, rows at dim, or NULL */
    const float *z;     /* gate of the gated form (rows at dim), or NULL */
    const qvlm_tensor *w, *b;
    float w_offset, eps;
    int64_t n_rows, dim;
    bool layer;
    qvlm_isa isa;
};

static void norm_task(void *p, int ith, int nth) {
    struct norm_job *j = p;
    long r0, r1;
    qvlm_split_rows(j->n_rows, ith, nth, &r0, &r1);
    for (long r = r0; r < r1; r++) {
        float *y = j->y + r * j->ldy, *x = j->x + r * j->ldx;
        const float *d = j->delta ? j->delta + r * j->dim : NULL, *z = j->z ? j->z + r * j->dim : NULL;
#if defined(__x86_64__)
        if (j->isa >= QVLM_ISA_AVX512) {
            if (j->layer) qvlm_row_ln_avx512(y, x, d, j->w, j->b, j->eps, j->dim);
            else qvlm_row_rms_avx512(y, x, d, z, j->w, j->w_offset, j->eps, j->dim);
            continue;
        }
#endif
        if (j->layer) qvlm_row_ln_ref(y, x, d, j->w, j->b, j->eps, j->dim);
        else qvlm_row_rms_ref(y, x, d, z, j->w, j->w_offset, j->eps, j->dim);
    }
}

static void run(qvlm_stream *s, struct norm_job *j) {
    j->isa = cpu_stream_of(s)->be->cpu.isa;
    /* ~dim multiply-adds per row: rows of 1024 are worth a thread from ~16 rows on */
    cpu_parallel(s, j->n_rows, j->dim >= 512 ? 8 : 32, norm_task, j);
}

void cpu_rms_norm(qvlm_stream *s, float *y, int64_t ldy, const float *x, int64_t ldx, const qvlm_tensor *w,
                  float w_offset, float eps, int64_t n_rows, int64_t dim) {
    struct norm_job j = {.y = y, .ldy = ldy, .x = (float *)x, .ldx = ldx, .w = w, .w_offset = w_offset, .eps = eps,
                         .n_rows = n_rows, .dim = dim};
    run(s, &j);
}

/* transformers: w * bf16(x̂) * silu(f32 z); in f32 the cast is exact, so (w * x̂) * silu(z). */
void cpu_gated_rms_norm(qvlm_stream *s, float *y, const float *x, const float *z, const qvlm_tensor *w, float eps,
                        int64_t n_rows, int64_t dim) {
    struct norm_job j = {.y = y, .ldy = dim, .x = (float *)x, .ldx = dim, .z = z, .w = w, .eps = eps, .n_rows = n_rows,
                         .dim = dim};
    run(s, &j);
}

void cpu_add_rms_norm(qvlm_stream *s, float *y, float *x, const float *delta, const qvlm_tensor *w, float w_offset,
                      float eps, int64_t n_rows, int64_t dim) {
    struct norm_job j = {.y = y, .ldy = dim, .x = x, .ldx = dim, .delta = delta, .w = w, .w_offset = w_offset,
                         .eps = eps, .n_rows = n_rows, .dim = dim};
    run(s, &j);
}

void cpu_layer_norm(qvlm_stream *s, float *y, const float *x, const qvlm_tensor *w, const qvlm_tensor *b, float eps,
                    int64_t n_rows, int64_t dim) {
    struct norm_job j = {.y = y, .ldy = dim, .x = (float *)x, .ldx = dim, .w = w, .b = b, .eps = eps, .n_rows = n_rows,
                         .dim = dim, .layer = true};
    run(s, &j);
}

void cpu_add_layer_norm(qvlm_stream *s, float *y, float *x, const float *delta, const qvlm_tensor *w,
                        const qvlm_tensor *b, float eps, int64_t n_rows, int64_t dim) {
    struct norm_job j = {.y = y, .ldy = dim, .x = x, .ldx = dim, .delta = delta, .w = w, .b = b, .eps = eps,
                         .n_rows = n_rows, .dim = dim, .layer = true};
    run(s, &j);
}
