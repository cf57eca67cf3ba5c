/* elementwise.cu - embedding rows, residual adds, activations, bf16 rounding, row shuffles
 * (kernels/cpu/elementwise.c, moe.c, backend_cpu.c are the references). One thread per
 * element or per column; the math is the CPU's, in the same order per element. */
#include "kernels/cuda/cuda_common.cuh"

/* ==== kernels ==================================================================================== */

__global__ void k_get_rows(float *y, const void *table, const int32_t *ids, int64_t dim, int64_t n, int dt) {
    QCU_PDL_ENTRY();
    const int64_t t = blockIdx.y;
    const int64_t row = ids[t];
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < dim; c += (int64_t)gridDim.x * blockDim.x)
        y[t * dim + c] = wload(table, dt, row * dim + c);
}

__global__ void k_add_weighted_rows(float *y, const void *table, const int32_t *idx, const float *w, int64_t dim,
                                    int64_t taps, int dt) {
    QCU_PDL_ENTRY();
    const int64_t r = blockIdx.y;
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < dim; c += (int64_t)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int64_t k = 0; k < taps; k++) acc += wload(table, dt, (int64_t)idx[r * taps + k] * dim + c) * w[r * taps + k];
        y[r * dim + c] += acc;
    }
}

__global__ void k_add(float *y, const float *a, const float *b, int64_t n) {
    QCU_PDL_ENTRY();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = a[i] + b[i];
}

__global__ void k_silu_mul(float *y, const float *g, const float *u, int64_t ldy, int64_t ldg, int64_t ldu, int64_t dim) {
    QCU_PDL_ENTRY();
    const int64_t r = blockIdx.y;
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < dim; c += (int64_t)gridDim.x * blockDim.x)
        y[r * ldy + c] = silu_f(g[r * ldg + c]) * u[r * ldu + c];
}

__global__ void k_gelu(float *x, int64_t n, int tanh_approx) {
    QCU_PDL_ENTRY();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = x[i];
        if (tanh_approx) {
            const float k = 0.7978845608028654f;
            x[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
        } else {
            x[i] = 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
        }
    }
}

__global__ void k_sigmoid_mul(float *y, const float *x, const float *g, const float *add, int64_t ldy, int64_t ldx,
                              int64_t ldg, int64_t gate_cols, int64_t dim) {
    QCU_PDL_ENTRY();
    const int64_t r = blockIdx.y;
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < dim; c += (int64_t)gridDim.x * blockDim.x) {
        float gv = g[r * ldg + (gate_cols == 1 ? 0 : c)];
        const float v = sigmoid_gate(x[r * ldx + c], gv); /* rounded before the add, as the two ops round it */
        y[r * ldy + c] = add ? add[r * ldy + c] + v : v;
    }
}

__global__ void k_round(void *y, const float *x, int64_t ldx, int64_t cols, int to_bf16) {
    QCU_PDL_ENTRY();
    const int64_t r = blockIdx.y;
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += (int64_t)gridDim.x * blockDim.x) {
        uint16_t h = f32_to_bf16(x[r * ldx + c]);
        if (to_bf16) ((uint16_t *)y)[r * cols + c] = h;
        else ((float *)y)[r * cols + c] = bf16_to_f32(h);
    }
}

__global__ void k_bias_add(float *y, const float *bias, int64_t ldy, int64_t cols) {
    QCU_PDL_ENTRY();
    const int64_t r = blockIdx.y;
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += (int64_t)gridDim.x * blockDim.x)
        y[r * ldy + c] += bias[c];
}

__global__ void k_to_f32(float *y, const void *x, int64_t n, int dt, int rnd) {
    QCU_PDL_ENTRY();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float v = wload(x, dt, i);
        y[i] = rnd ? round_bf16(v) : v;
    }
}

__global__ void k_gather_rows(float *y, const float *x, const int32_t *rows, int64_t dim) {
    QCU_PDL_ENTRY();
    const int64_t i = blockIdx.y;
    const int64_t src = rows[i];
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < dim; c += (int64_t)gridDim.x * blockDim.x)
        y[i * dim + c] = x[src * dim + c];
}

/* One thread per column walks i in order, so repeated rows add up in the CPU's order. */
__global__ void k_scatter_add_rows(float *y, const float *x, const int32_t *rows, const float *scale, int64_t n,
                                   int64_t dim) {
    QCU_PDL_ENTRY();
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= dim) return;
    for (int64_t i = 0; i < n; i++) y[(int64_t)rows[i] * dim + c] += scale[i] * x[i * dim + c];
}

/* ==== launchers ================================================================================== */

/* Grid for [rows][cols] work: x covers columns (capped), y one row each (rows <= 65535 per
 * launch, so the launchers loop over row slices). */
#define ROWS_PER_LAUNCH 65535

extern "C" int qcu_get_rows(void *st, const void *p) {
    const qcu_get_rows_args *a = (const qcu_get_rows_args *)p;
    for (int64_t r0 = 0; r0 < a->n; r0 += ROWS_PER_LAUNCH) {
        int64_t n = a->n - r0 < ROWS_PER_LAUNCH ? a->n - r0 : ROWS_PER_LAUNCH;
        dim3 g(qcu_blocks(a->dim, 256) < 64 ? qcu_blocks(a->dim, 256) : 64, (unsigned)n);
        QVLM_LAUNCH(k_get_rows, g, 256, 0, st, a->y + r0 * a->dim, a->table, a->ids + r0, a->dim, n, a->dt);
    }
    QCU_DONE();
}

extern "C" int qcu_add_weighted_rows(void *st, const void *p) {
    const qcu_add_weighted_rows_args *a = (const qcu_add_weighted_rows_args *)p;
    for (int64_t r0 = 0; r0 < a->n; r0 += ROWS_PER_LAUNCH) {
        int64_t n = a->n - r0 < ROWS_PER_LAUNCH ? a->n - r0 : ROWS_PER_LAUNCH;
        dim3 g(qcu_blocks(a->dim, 256) < 64 ? qcu_blocks(a->dim, 256) : 64, (unsigned)n);
        QVLM_LAUNCH(k_add_weighted_rows, g, 256, 0, st, a->y + r0 * a->dim, a->table, a->idx + r0 * a->taps,
                    a->w + r0 * a->taps, a->dim, a->taps, a->dt);
    }
    QCU_DONE();
}

static unsigned flat_blocks(int64_t n) {
    int64_t b = (n + 255) / 256;
    return (unsigned)(b < 4096 ? (b > 0 ? b : 1) : 4096);
}

extern "C" int qcu_add(void *st, const void *p) {
    const qcu_add_args *a = (const qcu_add_args *)p;
    if (a->n > 0) QVLM_LAUNCH(k_add, flat_blocks(a->n), 256, 0, st, a->y, a->a, a->b, a->n);
    QCU_DONE();
}

extern "C" int qcu_silu_mul(void *st, const void *p) {
    const qcu_silu_mul_args *a = (const qcu_silu_mul_args *)p;
    for (int64_t r0 = 0; r0 < a->n_rows; r0 += ROWS_PER_LAUNCH) {
        int64_t n = a->n_rows - r0 < ROWS_PER_LAUNCH ? a->n_rows - r0 : ROWS_PER_LAUNCH;
        dim3 g(qcu_blocks(a->dim, 256) < 64 ? qcu_blocks(a->dim, 256) : 64, (unsigned)n);
        QVLM_LAUNCH(k_silu_mul, g, 256, 0, st, a->y + r0 * a->ldy, a->gate + r0 * a->ldg, a->up + r0 * a->ldu, a->ldy,
                    a->ldg, a->ldu, a->dim);
    }
    QCU_DONE();
}

extern "C" int qcu_gelu(void *st, const void *p) {
    const qcu_gelu_args *a = (const qcu_gelu_args *)p;
    if (a->n > 0) QVLM_LAUNCH(k_gelu, flat_blocks(a->n), 256, 0, st, a->x, a->n, a->tanh_approx);
    QCU_DONE();
}

extern "C" int qcu_sigmoid_mul(void *st, const void *p) {
    const qcu_sigmoid_mul_args *a = (const qcu_sigmoid_mul_args *)p;
    for (int64_t r0 = 0; r0 < a->n_rows; r0 += ROWS_PER_LAUNCH) {
        int64_t n = a->n_rows - r0 < ROWS_PER_LAUNCH ? a->n_rows - r0 : ROWS_PER_LAUNCH;
        dim3 g(qcu_blocks(a->dim, 256) < 64 ? qcu_blocks(a->dim, 256) : 64, (unsigned)n);
        QVLM_LAUNCH(k_sigmoid_mul, g, 256, 0, st, a->y + r0 * a->ldy, a->x + r0 * a->ldx, a->gate + r0 * a->ldg,
                    a->add ? a->add + r0 * a->ldy : a->add, a->ldy, a->ldx, a->ldg, a->gate_cols, a->dim);
    }
    QCU_DONE();
}

extern "C" int qcu_round(void *st, const void *p) {
    const qcu_round_args *a = (const qcu_round_args *)p;
    for (int64_t r0 = 0; r0 < a->n_rows; r0 += ROWS_PER_LAUNCH) {
        int64_t n = a->n_rows - r0 < ROWS_PER_LAUNCH ? a->n_rows - r0 : ROWS_PER_LAUNCH;
        dim3 g(qcu_blocks(a->cols, 256) < 64 ? qcu_blocks(a->cols, 256) : 64, (unsigned)n);
        void *y = a->to_bf16 ? (void *)((uint16_t *)a->y + r0 * a->cols) : (void *)((float *)a->y + r0 * a->cols);
        QVLM_LAUNCH(k_round, g, 256, 0, st, y, a->x + r0 * a->ldx, a->ldx, a->cols, a->to_bf16);
    }
    QCU_DONE();
}

extern "C" int qcu_bias_add(void *st, const void *p) {
    const qcu_bias_add_args *a = (const qcu_bias_add_args *)p;
    for (int64_t r0 = 0; r0 < a->n_rows; r0 += ROWS_PER_LAUNCH) {
        int64_t n = a->n_rows - r0 < ROWS_PER_LAUNCH ? a->n_rows - r0 : ROWS_PER_LAUNCH;
        dim3 g(qcu_blocks(a->cols, 256) < 64 ? qcu_blocks(a->cols, 256) : 64, (unsigned)n);
        QVLM_LAUNCH(k_bias_add, g, 256, 0, st, a->y + r0 * a->ldy, a->bias, a->ldy, a->cols);
    }
    QCU_DONE();
}

extern "C" int qcu_to_f32(void *st, const void *p) {
    const qcu_to_f32_args *a = (const qcu_to_f32_args *)p;
    if (a->n > 0) QVLM_LAUNCH(k_to_f32, flat_blocks(a->n), 256, 0, st, a->y, a->x, a->n, a->dt, a->round_bf16);
    QCU_DONE();
}

extern "C" int qcu_gather_rows(void *st, const void *p) {
    const qcu_gather_rows_args *a = (const qcu_gather_rows_args *)p;
    for (int64_t r0 = 0; r0 < a->n; r0 += ROWS_PER_LAUNCH) {
        int64_t n = a->n - r0 < ROWS_PER_LAUNCH ? a->n - r0 : ROWS_PER_LAUNCH;
        dim3 g(qcu_blocks(a->dim, 256) < 64 ? qcu_blocks(a->dim, 256) : 64, (unsigned)n);
        QVLM_LAUNCH(k_gather_rows, g, 256, 0, st, a->y + r0 * a->dim, a->x, a->rows + r0, a->dim);
    }
    QCU_DONE();
}

extern "C" int qcu_scatter_add_rows(void *st, const void *p) {
    const qcu_scatter_add_rows_args *a = (const qcu_scatter_add_rows_args *)p;
    if (a->n > 0 && a->dim > 0)
        QVLM_LAUNCH(k_scatter_add_rows, qcu_blocks(a->dim, 128), 128, 0, st, a->y, a->x, a->rows, a->scale, a->n, a->dim);
    QCU_DONE();
}
