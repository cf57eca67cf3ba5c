/* elementwise.c - residual adds and activations on the CPU. The per-element operations are
 * defined in rowops.h / vmath.h and run by the scalar reference or its AVX-512 twin (same
 * bits). Threads split elements (or rows) in blocks of 16, so no two write one cache line of
 * 64-byte aligned outputs, and an element's bits never depend on the split. */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/rowops.h"
#include "kernels/cpu/vmath.h"

enum ew_kind { EW_ADD, EW_SILU_MUL, EW_SIGMOID_MUL, EW_GELU_TANH, EW_GELU_ERF };

struct ew_job {
    enum ew_kind kind;
    float *y;
    int64_t ldy;
    const float *a, *b; /* ADD: a + b;  SILU_MUL: silu(a) * b;  SIGMOID_MUL: a * sigmoid(b) */
    int64_t lda, ldb;
    int64_t gate_cols; /* SIGMOID_MUL: 1 = one gate per row */
    int64_t n_rows, dim; /* flat: one span of dim elements */
    bool flat;
    qvlm_isa isa;
};

static void ew_span(const struct ew_job *j, float *y, const float *a, const float *b, int64_t n) {
#if defined(__x86_64__)
    if (j->isa >= QVLM_ISA_AVX512) {
        switch (j->kind) {
        case EW_ADD: qvlm_vadd_avx512(y, a, b, n); return;
        case EW_SILU_MUL: qvlm_vsilu_mul_avx512(y, a, b, n); return;
        case EW_SIGMOID_MUL: qvlm_vsigmoid_mul_avx512(y, a, b, n); return;
        case EW_GELU_TANH: qvlm_vgelu_tanh_avx512(y, n); return;
        case EW_GELU_ERF: break;
        }
    }
#endif
    switch (j->kind) {
    case EW_ADD: qvlm_vadd_ref(y, a, b, n); return;
    case EW_SILU_MUL: qvlm_vsilu_mul_ref(y, a, b, n); return;
    case EW_SIGMOID_MUL: qvlm_vsigmoid_mul_ref(y, a, b, n); return;
    case EW_GELU_TANH: qvlm_vgelu_tanh_ref(y, n); return;
    case EW_GELU_ERF:
        for (int64_t i = 0; i < n; i++) y[i] = 0.5f * y[i] * (1.0f + erff(y[i] * 0.7071067811865476f));
        return;
    }
}

static void ew_task(void *p, int ith, int nth) {
    struct ew_job *j = p;
    if (j->flat) { /* blocks of 16 elements */
        long b0, b1;
        qvlm_split_rows((long)((j->dim + 15) / 16), ith, nth, &b0, &b1);
        int64_t i0 = b0 * 16, i1 = QVLM_MIN((int64_t)b1 * 16, j->dim);
        if (i0 < i1) ew_span(j, j->y + i0, j->a ? j->a + i0 : NULL, j->b ? j->b + i0 : NULL, i1 - i0);
        return;
    }
    long r0, r1;
    qvlm_split_rows(j->n_rows, ith, nth, &r0, &r1);
    for (long r = r0; r < r1; r++) {
        float *y = j->y + r * j->ldy;
        const float *a = j->a + r * j->lda, *b = j->b + r * j->ldb;
        if (j->kind == EW_SIGMOID_MUL && j->gate_cols == 1) {
            const float g = qvlm_vsigmoid(b[0]);
            for (int64_t c = 0; c < j->dim; c++) y[c] = a[c] * g;
        } else {
            ew_span(j, y, a, b, j->dim);
        }
    }
}

static void run(qvlm_stream *s, struct ew_job *j, int64_t min_per_thread) {
    j->isa = cpu_stream_of(s)->be->cpu.isa;
    int64_t nth = j->n_rows * j->dim / min_per_thread;
    if (nth < 1) nth = 1;
    if (!j->flat && nth > j->n_rows) nth = j->n_rows;
    qvlm_pool_run_n(cpu_pool(s), ew_task, j, (int)QVLM_MIN(nth, (int64_t)qvlm_pool_size(cpu_pool(s))));
}

void cpu_add(qvlm_stream *s, float *y, const float *a, const float *b, int64_t n) {
    struct ew_job j = {.kind = EW_ADD, .y = y, .a = a, .b = b, .n_rows = 1, .dim = n, .flat = true};
    run(s, &j, 1 << 15);
}

void cpu_silu_mul(qvlm_stream *s, float *y, int64_t ldy, const float *gate, int64_t ldg, const float *up,
                  int64_t ldu, int64_t n_rows, int64_t dim) {
    struct ew_job j = {.kind = EW_SILU_MUL, .y = y, .ldy = ldy, .a = gate, .lda = ldg, .b = up, .ldb = ldu,
                       .n_rows = n_rows, .dim = dim, .flat = n_rows == 1};
    run(s, &j, 1 << 13);
}

void cpu_gelu(qvlm_stream *s, float *x, int64_t n, bool tanh_approx) {
    struct ew_job j = {.kind = tanh_approx ? EW_GELU_TANH : EW_GELU_ERF, .y = x, .n_rows = 1, .dim = n, .flat = true};
    run(s, &j, 1 << 13);
}

void cpu_sigmoid_mul(qvlm_stream *s, float *y, int64_t ldy, const float *x, int64_t ldx, const float *gate,
                     int64_t ldg, int64_t gate_cols, int64_t n_rows, int64_t dim) {
    struct ew_job j = {.kind = EW_SIGMOID_MUL, .y = y, .ldy = ldy, .a = x, .lda = ldx, .b = gate, .ldb = ldg,
                       .gate_cols = gate_cols, .n_rows = n_rows, .dim = dim, .flat = n_rows == 1 && gate_cols != 1};
    run(s, &j, 1 << 13);
}
