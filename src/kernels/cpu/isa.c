/* isa.c - pick the CPU kernel family once, from cpuid, optionally capped by $QVLM_ISA. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu.h"

static const char *const ISA_NAMES[] = {"scalar", "avx2", "avx512", "avx512bf16"};

const char *qvlm_isa_name(qvlm_isa isa) {
    return (unsigned)isa < sizeof(ISA_NAMES) / sizeof(ISA_NAMES[0]) ? ISA_NAMES[isa] : "?";
}

qvlm_isa qvlm_cpu_detect_isa(void) {
    qvlm_isa best = QVLM_ISA_SCALAR;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = QVLM_ISA_AVX2;
    if (best == QVLM_ISA_AVX2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        best = QVLM_ISA_AVX512;
    /* The level also runs the I8 kernels' vpdpbusd: every CPU with AVX512_BF16 has AVX512_VNNI
     * (Cooper Lake, Sapphire Rapids, Zen 4), but a hypervisor may hide one and not the other. */
    if (best == QVLM_ISA_AVX512 && __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vnni"))
        best = QVLM_ISA_AVX512_BF16;
#endif
    const char *cap = getenv("QVLM_ISA");
    if (cap) {
        for (int i = 0; i < (int)(sizeof(ISA_NAMES) / sizeof(ISA_NAMES[0])); i++)
            if (strcmp(cap, ISA_NAMES[i]) == 0 && (qvlm_isa)i < best) best = (qvlm_isa)i;
    }
    return best;
}
