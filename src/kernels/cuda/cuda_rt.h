/* cuda_rt.h - the CUDA runtime's C API for backend_cuda.c: the real one, or the CPU emulator's
 * (QVLM_CUDA_EMU, kernels/cuda/emu/) with the same names. Only kernels/cuda/ includes this. */
#ifndef QVLM_KERNELS_CUDA_RT_H
#define QVLM_KERNELS_CUDA_RT_H

#ifdef QVLM_CUDA_EMU
#include "kernels/cuda/emu/emu_runtime.h"
#else
#include <cuda_runtime_api.h>
#endif

#endif /* QVLM_KERNELS_CUDA_RT_H */
