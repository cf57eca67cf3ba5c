/* matmul.c - matrix product dispatch: split output columns across threads, pick the kernel. */
#include <stdint.h>

#include "kernels/cpu/matmul_impl.h"

struct mm_job {
    const qvlm_cpu *cpu;
    float *y;
    int64_t ldy;
    const float *x;
    int64_t ldx;
    const void *w;
    qvlm_dtype wt;
    const float *bias;
    int64_t n, k, d;
    uint8_t *work;
    size_t work_per_thread;
};

size_t qvlm_cpu_matmul_work_bytes(const qvlm_cpu *cpu, int64_t n, int64_t k, qvlm_dtype wt) {
    int nth = qvlm_pool_size(cpu->pool);
    size_t per = ((size_t)k * sizeof(float) + 63) & ~(size_t)63;
    return per * (size_t)nth;
}

static void mm_task(void *p, int ith, int nth) {
    struct mm_job *j = p;
    /* Columns are split in multiples of 16 so no two threads write one cache line of y. */
    int64_t blocks = (j->d + 15) / 16;
    long b0, b1;
    qvlm_split_rows(blocks, ith, nth, &b0, &b1);
    int64_t c0 = b0 * 16, c1 = b1 * 16 < j->d ? b1 * 16 : j->d;
    if (c0 >= c1) return;
    float *wrow = (float *)(j->work + (size_t)ith * j->work_per_thread);
    qvlm_ref_matmul_rows(j->cpu, j->y, j->ldy, j->x, j->ldx, j->w, j->wt, j->bias, j->n, j->k, c0, c1, wrow);
}

void qvlm_cpu_matmul(const qvlm_cpu *cpu, float *y, int64_t ldy, const float *x, int64_t ldx,
                     const void *w, qvlm_dtype wt, const float *bias, int64_t n, int64_t k,
                     int64_t d, void *work) {
    struct mm_job job = {cpu, y, ldy, x, ldx, w, wt, bias, n, k, d, work,
                         ((size_t)k * sizeof(float) + 63) & ~(size_t)63};
    qvlm_pool_run(cpu->pool, mm_task, &job);
}
