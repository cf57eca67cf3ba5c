/* fuzz_image.c - image decoding (JPEG, PNG, WebP) and preprocessing on arbitrary bytes.
 * Any input must give QVLM_OK or an error code with a message naming the input; never a
 * crash, a hang or a leak. Decoded images go through the hash and the whole preprocessing
 * (smart_resize, AA resize, patchify) with a small pixel budget, so the resize kernel sees
 * every odd size the decoders can produce. */
#include <stdint.h>
#include <string.h>

#include "model/image.h"
#include "model/image_preprocess.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qvlm_image_limits lim = qvlm_image_limits_default();
    lim.max_pixels = (int64_t)1 << 22; /* keeps each run fast; the check itself is what we test */
    qvlm_image img;
    qvlm_error err;
    err.msg[0] = '\0';
    if (qvlm_image_decode(data, size, "fuzz input", &lim, &img, &err) != QVLM_OK) {
        if (strncmp(err.msg, "fuzz input: ", 12) != 0) __builtin_trap(); /* must name the input */
        if (img.rgb || img.width || img.height) __builtin_trap();      /* zeroed on failure */
        return 0;
    }
    qvlm_preprocess_config cfg;
    qvlm_preprocess_config_default(&cfg);
    cfg.patch_size = 16;
    cfg.min_pixels = 1024;
    cfg.max_pixels = 16384;
    for (int c = 0; c < 3; c++) cfg.image_mean[c] = cfg.image_std[c] = 0.5f; /* output in [-1, 1] */
    volatile uint64_t sink = qvlm_image_hash(&img, &cfg).lo;
    (void)sink;
    qvlm_pixels px;
    if (qvlm_image_preprocess(&img, &cfg, NULL, &px, &err) == QVLM_OK) {
        if (px.n_patches != (int64_t)px.grid_h * px.grid_w || px.patch_dim != 1536) __builtin_trap();
        for (int64_t i = 0; i < px.n_patches * px.patch_dim; i += 97)
            if (!(px.values[i] >= -1.0f && px.values[i] <= 1.0f)) __builtin_trap();
        qvlm_pixels_free(&px);
    } else if (err.msg[0] == '\0') {
        __builtin_trap();
    }
    qvlm_image_free(&img);
    return 0;
}
