/* matmul_i8_avx512.c - I8 matrix products with vpdpbusd (AVX512_VNNI on ymm); the code is in
 * matmul_i8_kernels.h. */
#define I8_VNNI 1
#include "kernels/cpu/matmul_i8_kernels.h"
