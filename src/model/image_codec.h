/* image_codec.h - internal interface between image.c (dispatch, limits) and the per-format
 * decoders image_jpeg.c, image_png.c, image_webp.c. Not for use outside src/model/image*.c.
 *
 * Each decoder reads the header with its library, calls qvlm_image_check_header() before it
 * allocates or decodes anything, then allocates the output with qvlm_image_alloc(). On failure
 * it leaves *out zeroed and frees everything it allocated.
 */
#ifndef QVLM_MODEL_IMAGE_CODEC_H
#define QVLM_MODEL_IMAGE_CODEC_H

#include "model/image.h"

/* Refuse a header's dimensions that break `lim` (see qvlm_image_decode for the codes).
 * `fmt` ("PNG") goes into the message. */
qvlm_status qvlm_image_check_header(const char *name, const char *fmt, int64_t width, int64_t height,
                                    const qvlm_image_limits *lim, qvlm_error *err);

/* Allocate out->rgb for width×height (already checked) and set the sides. */
qvlm_status qvlm_image_alloc(qvlm_image *out, int width, int height, const char *name,
                             qvlm_error *err);

qvlm_status qvlm_image_decode_jpeg(const uint8_t *buf, size_t n_bytes, const char *name,
                                   const qvlm_image_limits *lim, qvlm_image *out, qvlm_error *err);
qvlm_status qvlm_image_decode_png(const uint8_t *buf, size_t n_bytes, const char *name,
                                  const qvlm_image_limits *lim, qvlm_image *out, qvlm_error *err);
qvlm_status qvlm_image_decode_webp(const uint8_t *buf, size_t n_bytes, const char *name,
                                   const qvlm_image_limits *lim, qvlm_image *out, qvlm_error *err);

#endif /* QVLM_MODEL_IMAGE_CODEC_H */
