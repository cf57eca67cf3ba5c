/* fuzz_safetensors.c - the safetensors header parser on arbitrary bytes.
 * Any input must give QVLM_OK or an error code with a message; never a crash or a leak. */
#include <stdint.h>
#include <string.h>

#include "core/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qvlm_st_file f;
    qvlm_error err;
    if (qvlm_st_parse(data, size, "fuzz.safetensors", &f, &err) == QVLM_OK) {
        /* Touch every tensor's bytes: they must lie inside the buffer. */
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < f.n_tensors; i++)
            for (size_t b = 0; b < f.tensors[i].n_bytes; b += 61) sink ^= f.tensors[i].data[b];
        (void)sink;
        (void)qvlm_st_file_find(&f, "a");
        qvlm_st_close(&f);
    } else if (err.msg[0] == '\0') {
        __builtin_trap(); /* an error without a message is a bug */
    }
    return 0;
}
