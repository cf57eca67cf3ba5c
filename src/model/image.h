/* image.h - decoding JPEG, PNG and WebP images into 8-bit interleaved RGB.
 *
 * Images come from files and from HTTP requests (base64 data URIs, already decoded to bytes by
 * the caller), so every byte is treated as hostile:
 *  - the format is sniffed from the magic bytes, never from a name or MIME type;
 *  - width and height are read from the header first, and an image over the limits below is
 *    refused before any pixel is decoded or any pixel buffer is allocated (decompression bombs);
 *  - libjpeg and libpng errors are caught with setjmp/longjmp (their default handlers exit()),
 *    and nothing leaks on any error path;
 *  - every error message starts with the input's name (a path, or "image 2 of request").
 *
 * Pixels match what the reference pipeline (PIL `Image.open(...).convert("RGB")`, as used by
 * transformers' Qwen2VLImageProcessor) gives for the same file:
 *  - alpha is dropped, never composited on a background (transformers' `convert_to_rgb` for
 *    Qwen2-VL calls `Image.convert("RGB")`); PNG tRNS transparency is ignored the same way;
 *  - grey is replicated to R = G = B; 1/2/4-bit grey is scaled to 0..255 (1 -> 255, 3 -> 255);
 *  - 16-bit RGB, RGBA and grey+alpha PNGs keep the high byte of each sample (PIL's "RGB;16B",
 *    "RGBA;16B", "LA;16B" unpackers), but 16-bit grey *without* alpha is clipped, min(v, 255),
 *    because PIL opens it as mode "I;16" and its I;16 -> RGB conversion clips;
 *  - CMYK/YCCK JPEGs are converted as PIL does: samples inverted (PIL assumes Adobe
 *    conventions for every 4-component JPEG), then r = 255-k - (c·(255-k))/255, rounded;
 *  - EXIF orientation is NOT applied (PIL's Image.open does not, nor did the fixtures'
 *    generator). Note: transformers' load_image(), used when a chat message carries an image
 *    URL, path or base64 string, does call ImageOps.exif_transpose before convert("RGB");
 *  - JPEG uses libjpeg's defaults (islow IDCT, fancy upsampling), as PIL does;
 *  - animated WebP is refused (PIL would take the first frame).
 */
#ifndef QVLM_MODEL_IMAGE_H
#define QVLM_MODEL_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* A decoded image. Caller-storage struct: fill with qvlm_image_decode/_load, release with
 * qvlm_image_free. */
typedef struct qvlm_image {
    int width;    /* pixels, >= 1 */
    int height;   /* pixels, >= 1 */
    uint8_t *rgb; /* [height][width][3], owned (malloc) */
} qvlm_image;

/* What an input may be. Checked on the header, before decoding. */
typedef struct qvlm_image_limits {
    int64_t max_pixels; /* width·height above this is refused (QVLM_E_LIMIT) */
    int min_side;       /* width or height below this is refused (QVLM_E_INVALID) */
    double max_aspect;  /* max(w,h)/min(w,h) above this is refused (QVLM_E_INVALID) */
} qvlm_image_limits;

/* Defaults: 8192·8192 pixels (192 MiB of RGB), min side 1, max aspect 200 (the reference's
 * smart_resize raises above 200; current transformers has no minimum side). */
#define QVLM_IMAGE_DEFAULT_MAX_PIXELS ((int64_t)8192 * 8192)
#define QVLM_IMAGE_DEFAULT_MIN_SIDE 1
#define QVLM_IMAGE_DEFAULT_MAX_ASPECT 200.0
qvlm_image_limits qvlm_image_limits_default(void);

typedef enum qvlm_image_format {
    QVLM_IMAGE_UNKNOWN = 0,
    QVLM_IMAGE_JPEG,
    QVLM_IMAGE_PNG,
    QVLM_IMAGE_WEBP,
} qvlm_image_format;

/* Sniff the format from the first bytes; QVLM_IMAGE_UNKNOWN for anything else. */
qvlm_image_format qvlm_image_sniff(const uint8_t *buf, size_t n_bytes);

/* Decode buf[0..n_bytes) into *out. `name` names the input in messages ("photo.png",
 * "image 2 of request"); NULL reads "image". `lim` NULL means qvlm_image_limits_default().
 * Returns
 *   QVLM_OK            *out holds the image; free it with qvlm_image_free.
 *   QVLM_E_CORRUPT     empty, truncated or malformed data, zero width or height.
 *   QVLM_E_UNSUPPORTED not JPEG/PNG/WebP (GIF, BMP, TIFF... are named), animated WebP,
 *                      12-bit JPEG and other variants the libraries refuse.
 *   QVLM_E_LIMIT       width·height over lim->max_pixels (refused from the header).
 *   QVLM_E_INVALID     a side under lim->min_side, or aspect ratio over lim->max_aspect.
 *   QVLM_E_NOMEM       out of memory.
 * On failure *out is zeroed and nothing is allocated. Thread-safe (no shared state). */
qvlm_status qvlm_image_decode(const uint8_t *buf, size_t n_bytes, const char *name,
                              const qvlm_image_limits *lim, qvlm_image *out, qvlm_error *err);

/* Decode the file at `path` (memory-mapped, so no copy); messages name the path. Returns the
 * codes of qvlm_image_decode, plus QVLM_E_IO when the file cannot be opened or mapped. */
qvlm_status qvlm_image_load(const char *path, const qvlm_image_limits *lim, qvlm_image *out,
                            qvlm_error *err);

/* Release the pixels and zero the struct. NULL and zeroed structs are no-ops. */
void qvlm_image_free(qvlm_image *img);

#endif /* QVLM_MODEL_IMAGE_H */
