/* gemm.cu - matrix products of many rows through cuBLAS (prefill, the vision tower).
 *
 * Row-major y[n][d] = x[n][k] W[d][k]^T is, in cuBLAS's column-major terms, Y (d x n, ld ldy)
 * = op(A) B with A = W seen as a k x d column-major matrix (lda = k) transposed, and B = x seen
 * as k x n (ldb = ldx), not transposed.
 *  f32:  cublasSgemm with the default math mode (no TF32): the verification precision.
 *  bf16: cublasGemmEx, A and B bf16, C f32, CUBLAS_COMPUTE_32F: bf16 products, f32 sums.
 * Under the emulator (QVLM_CUDA_EMU) a plain kernel computes the same products. */
#include "kernels/cuda/cuda_common.cuh"

#ifndef QVLM_CUDA_EMU
#include <cublas_v2.h>

extern "C" int qcu_blas_create(void **handle, const char **msg) {
    cublasHandle_t h = NULL;
    cublasStatus_t s = cublasCreate(&h);
    if (s != CUBLAS_STATUS_SUCCESS) {
        *msg = "cublasCreate";
        return (int)s;
    }
    s = cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(h);
        *msg = "cublasSetMathMode";
        return (int)s;
    }
    *handle = h;
    return 0;
}

extern "C" void qcu_blas_destroy(void *handle) {
    if (handle) cublasDestroy((cublasHandle_t)handle);
}

extern "C" const char *qcu_blas_name(void) { return "cuBLAS"; }

/* The handle onto the op's stream and workspace. */
static cublasStatus_t bind(cublasHandle_t h, void *st, void *workspace, int64_t workspace_bytes) {
    cublasStatus_t s = cublasSetStream(h, (cudaStream_t)st);
    if (s == CUBLAS_STATUS_SUCCESS && workspace) s = cublasSetWorkspace(h, workspace, (size_t)workspace_bytes);
    return s;
}

/* Returns a cublasStatus_t offset by 10000 so the backend can tell it from a cudaError_t. */
extern "C" int qcu_gemm(void *st, const void *ap) {
    const qcu_gemm_args *a = (const qcu_gemm_args *)ap;
    cublasHandle_t h = (cublasHandle_t)a->handle;
    cublasStatus_t s = bind(h, st, a->workspace, a->workspace_bytes);
    const float one = 1.0f, zero = 0.0f;
    if (s == CUBLAS_STATUS_SUCCESS) {
        if (a->bf16)
            s = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)a->d, (int)a->n, (int)a->k, &one, a->w, CUDA_R_16BF,
                             (int)a->k, a->x, CUDA_R_16BF, (int)a->ldx, &zero, a->y, CUDA_R_32F, (int)a->ldy,
                             CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        else
            s = cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)a->d, (int)a->n, (int)a->k, &one, (const float *)a->w,
                            (int)a->k, (const float *)a->x, (int)a->ldx, &zero, a->y, (int)a->ldy);
    }
    if (s != CUBLAS_STATUS_SUCCESS) return 10000 + (int)s;
    QCU_DONE();
}

extern "C" int qcu_gemm_batched(void *st, const void *ap) {
    const qcu_gemm_batched_args *a = (const qcu_gemm_batched_args *)ap;
    cublasHandle_t h = (cublasHandle_t)a->handle;
    cublasStatus_t s = bind(h, st, a->workspace, a->workspace_bytes);
    const float one = 1.0f, zero = 0.0f;
    if (s == CUBLAS_STATUS_SUCCESS) {
        if (a->bf16)
            s = cublasGemmBatchedEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)a->d, (int)a->n, (int)a->k, &one, a->w,
                                    CUDA_R_16BF, (int)a->k, a->x, CUDA_R_16BF, (int)a->k, &zero, (void *const *)a->y,
                                    CUDA_R_32F, (int)a->d, (int)a->batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        else
            s = cublasSgemmBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)a->d, (int)a->n, (int)a->k, &one,
                                   (const float *const *)a->w, (int)a->k, (const float *const *)a->x, (int)a->k,
                                   &zero, a->y, (int)a->d, (int)a->batch);
    }
    if (s != CUBLAS_STATUS_SUCCESS) return 10000 + (int)s;
    QCU_DONE();
}

#else /* QVLM_CUDA_EMU */

__global__ void k_gemm_emu(float *y, const void *x, const void *w, int64_t ldy, int64_t ldx, int64_t n, int64_t k,
                           int64_t d, int bf16) {
    QCU_PDL_ENTRY();
    const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
    if (j >= d) return;
    float acc = 0.0f;
    for (int64_t i = 0; i < k; i++) {
        float xv = bf16 ? bf16_to_f32(((const uint16_t *)x)[t * ldx + i]) : ((const float *)x)[t * ldx + i];
        float wv = bf16 ? bf16_to_f32(((const uint16_t *)w)[j * k + i]) : ((const float *)w)[j * k + i];
        acc += xv * wv;
    }
    y[t * ldy + j] = acc;
}

extern "C" int qcu_blas_create(void **handle, const char **msg) {
    *handle = (void *)1;
    return 0;
}
extern "C" void qcu_blas_destroy(void *handle) {}
extern "C" const char *qcu_blas_name(void) { return "emulated GEMM"; }

extern "C" int qcu_gemm(void *st, const void *ap) {
    const qcu_gemm_args *a = (const qcu_gemm_args *)ap;
    for (int64_t t0 = 0; t0 < a->n; t0 += 65535) {
        int64_t n = a->n - t0 < 65535 ? a->n - t0 : 65535;
        const char *x = (const char *)a->x + t0 * a->ldx * (a->bf16 ? 2 : 4);
        QVLM_LAUNCH(k_gemm_emu, dim3(qcu_blocks(a->d, 64), (unsigned)n), 64, 0, st, a->y + t0 * a->ldy, (const void *)x,
                    a->w, a->ldy, a->ldx, n, a->k, a->d, a->bf16);
    }
    QCU_DONE();
}

extern "C" int qcu_gemm_batched(void *st, const void *ap) {
    const qcu_gemm_batched_args *a = (const qcu_gemm_batched_args *)ap;
    /* The pointer arrays are in (emulated) device memory, which the host can read here. */
    for (int64_t b = 0; b < a->batch; b++)
        for (int64_t t0 = 0; t0 < a->n; t0 += 65535) {
            int64_t n = a->n - t0 < 65535 ? a->n - t0 : 65535;
            const char *x = (const char *)a->x[b] + t0 * a->k * (a->bf16 ? 2 : 4);
            QVLM_LAUNCH(k_gemm_emu, dim3(qcu_blocks(a->d, 64), (unsigned)n), 64, 0, st, a->y[b] + t0 * a->d,
                        (const void *)x, a->w[b], a->d, a->k, n, a->k, a->d, a->bf16);
        }
    QCU_DONE();
}

#endif /* QVLM_CUDA_EMU */
