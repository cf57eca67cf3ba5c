/* elementwise.c - residual adds and activations on the CPU. */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

static inline float silu(float x) { return x / (1.0f + expf(-x)); }
static inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

struct add_job {
    float *y;
    const float *a, *b;
    int64_t n;
};

static void add_task(void *p, int ith, int nth) {
    struct add_job *j = p;
    long i0, i1;
    qvlm_split_rows(j->n, ith, nth, &i0, &i1);
    for (long i = i0; i < i1; i++) j->y[i] = j->a[i] + j->b[i];
}

void cpu_add(qvlm_stream *s, float *y, const float *a, const float *b, int64_t n) {
    struct add_job j = {y, a, b, n};
    cpu_parallel(s, n, 1 << 14, add_task, &j);
}

struct act_job {
    float *y;
    int64_t ldy;
    const float *x, *g;
    int64_t ldx, ldg, gate_cols, n_rows, dim;
    bool tanh_approx;
};

static void silu_mul_task(void *p, int ith, int nth) {
    struct act_job *j = p;
    long r0, r1;
    qvlm_split_rows(j->n_rows, ith, nth, &r0, &r1);
    for (long r = r0; r < r1; r++)
        for (int64_t c = 0; c < j->dim; c++)
            j->y[r * j->ldy + c] = silu(j->g[r * j->ldg + c]) * j->x[r * j->ldx + c];
}

void cpu_silu_mul(qvlm_stream *s, float *y, int64_t ldy, const float *gate, int64_t ldg, const float *up,
                  int64_t ldu, int64_t n_rows, int64_t dim) {
    struct act_job j = {.y = y, .ldy = ldy, .x = up, .ldx = ldu, .g = gate, .ldg = ldg, .n_rows = n_rows, .dim = dim};
    cpu_parallel(s, n_rows, 4, silu_mul_task, &j);
}

static void gelu_task(void *p, int ith, int nth) {
    struct act_job *j = p;
    long i0, i1;
    qvlm_split_rows(j->n_rows, ith, nth, &i0, &i1);
    float *x = j->y;
    if (j->tanh_approx) {
        /* PyTorch gelu(approximate="tanh"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
        const float k = 0.7978845608028654f;
        for (long i = i0; i < i1; i++) {
            float v = x[i];
            x[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
        }
    } else {
        for (long i = i0; i < i1; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.7071067811865476f));
    }
}

void cpu_gelu(qvlm_stream *s, float *x, int64_t n, bool tanh_approx) {
    struct act_job j = {.y = x, .n_rows = n, .tanh_approx = tanh_approx};
    cpu_parallel(s, n, 1 << 12, gelu_task, &j);
}

static void sigmoid_mul_task(void *p, int ith, int nth) {
    struct act_job *j = p;
    long r0, r1;
    qvlm_split_rows(j->n_rows, ith, nth, &r0, &r1);
    for (long r = r0; r < r1; r++)
        for (int64_t c = 0; c < j->dim; c++) {
            float g = j->g[r * j->ldg + (j->gate_cols == 1 ? 0 : c)];
            j->y[r * j->ldy + c] = j->x[r * j->ldx + c] * sigmoid(g);
        }
}

void cpu_sigmoid_mul(qvlm_stream *s, float *y, int64_t ldy, const float *x, int64_t ldx, const float *gate,
                     int64_t ldg, int64_t gate_cols, int64_t n_rows, int64_t dim) {
    struct act_job j = {.y = y, .ldy = ldy, .x = x, .ldx = ldx, .g = gate, .ldg = ldg, .gate_cols = gate_cols,
                        .n_rows = n_rows, .dim = dim};
    cpu_parallel(s, n_rows, 4, sigmoid_mul_task, &j);
}
