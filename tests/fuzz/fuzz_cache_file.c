/* fuzz_cache_file.c - cache files from disk are hostile input: the header check and the
 * checkpoint payload parser on arbitrary bytes. The payload parser is also fed the bytes
 * directly (past a checksum a fuzzer cannot forge), so its size checks get exercised. Any
 * input gives QVLM_OK or an error with a message; parsed pointers stay inside the buffer. */
#include <stdint.h>
#include <string.h>

#include "engine/disk_cache.h"

static void touch(const uint8_t *base, size_t n, const uint8_t *p, uint64_t len) {
    if (!p) return;
    if (p < base || p + len > base + n) __builtin_trap();
    volatile uint8_t sink = 0;
    for (uint64_t i = 0; i < len; i += 97) sink ^= p[i];
    if (len) sink ^= p[len - 1];
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qvlm_error err;
    uint64_t fp[2] = {0, 0};
    if (size >= 32) memcpy(fp, data + 16, 16); /* let the fuzzer reach the checks past the fingerprint */
    for (uint32_t kind = 1; kind <= 3; kind++) {
        err.msg[0] = 0;
        if (qvlm_disk_check_file(data, size, kind, fp, "fuzz", &err) != QVLM_OK && !err.msg[0]) __builtin_trap();
    }
    qvlm_disk_ck_view v;
    err.msg[0] = 0;
    if (qvlm_disk_parse_checkpoint(data, size, "fuzz", &v, &err) == QVLM_OK) {
        touch(data, size, v.keys, v.pos * 16);
        touch(data, size, v.block_hashes, v.full_blocks * 16);
        touch(data, size, v.partial, v.block_bytes);
        touch(data, size, v.recurrent, v.recurrent_bytes);
        touch(data, size, v.logits, v.vocab * 4);
    } else if (!err.msg[0]) {
        __builtin_trap();
    }
    return 0;
}
