/* matmul_impl.h - internals shared by the matrix-product kernels of each ISA. */
#ifndef QVLM_KERNELS_CPU_MATMUL_IMPL_H
#define QVLM_KERNELS_CPU_MATMUL_IMPL_H

#include "kernels/cpu/cpu.h"

float qvlm_ref_reduce16(float acc[16]);
void qvlm_ref_weight_row(float *dst, const void *w, qvlm_dtype wt, int64_t j, int64_t k);
/* Output columns [j0, j1) for all n rows; wrow is f32 scratch of k elements. */
void qvlm_ref_matmul_rows(const qvlm_cpu *cpu, float *y, int64_t ldy, const float *x, int64_t ldx,
                          const void *w, qvlm_dtype wt, const float *bias, int64_t n, int64_t k, int64_t j0,
                          int64_t j1, float *wrow);

#endif
