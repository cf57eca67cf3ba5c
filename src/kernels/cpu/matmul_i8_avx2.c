/* matmul_i8_avx2.c - I8 matrix products with vpmaddubsw + vpmaddwd (AVX2); the code is in
 * matmul_i8_kernels.h. */
#define I8_VNNI 0
#include "kernels/cpu/matmul_i8_kernels.h"
