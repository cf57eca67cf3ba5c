/* image.c - image decoding entry points: format sniffing, header limits, file loading
 * (see image.h). The per-format work lives in image_jpeg.c, image_png.c and image_webp.c. */
#include "model/image.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "model/image_codec.h"

qvlm_image_limits qvlm_image_limits_default(void) {
    return (qvlm_image_limits){
        .max_pixels = QVLM_IMAGE_DEFAULT_MAX_PIXELS,
        .min_side = QVLM_IMAGE_DEFAULT_MIN_SIDE,
        .max_aspect = QVLM_IMAGE_DEFAULT_MAX_ASPECT,
    };
}

/* ---- format sniffing ------------------------------------------------------------------- */

static int starts_with(const uint8_t *buf, size_t n, const char *magic, size_t magic_len) {
    return n >= magic_len && memcmp(buf, magic, magic_len) == 0;
}

qvlm_image_format qvlm_image_sniff(const uint8_t *buf, size_t n) {
    if (starts_with(buf, n, "\xff\xd8\xff", 3)) return QVLM_IMAGE_JPEG;
    if (starts_with(buf, n, "\x89PNG\r\n\x1a\n", 8)) return QVLM_IMAGE_PNG;
    if (n >= 12 && memcmp(buf, "RIFF", 4) == 0 && memcmp(buf + 8, "WEBP", 4) == 0)
        return QVLM_IMAGE_WEBP;
    return QVLM_IMAGE_UNKNOWN;
}

/* Formats people send that we do not decode, so the message can say what the input was. */
static const char *other_format_name(const uint8_t *buf, size_t n) {
    if (starts_with(buf, n, "GIF87a", 6) || starts_with(buf, n, "GIF89a", 6)) return "GIF";
    if (starts_with(buf, n, "BM", 2)) return "BMP";
    if (starts_with(buf, n, "II*\0", 4) || starts_with(buf, n, "MM\0*", 4)) return "TIFF";
    if (n >= 12 && memcmp(buf + 4, "ftyp", 4) == 0) return "HEIF/AVIF";
    if (starts_with(buf, n, "\0\0\1\0", 4)) return "ICO";
    if (starts_with(buf, n, "<svg", 4) || starts_with(buf, n, "<?xml", 5)) return "SVG";
    return NULL;
}

/* ---- limits ---------------------------------------------------------------------------- */

qvlm_status qvlm_image_check_header(const char *name, const char *fmt, int64_t w, int64_t h,
                                    const qvlm_image_limits *lim, qvlm_error *err) {
    if (w <= 0 || h <= 0)
        return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: %s header gives a zero-size image (%lld x %lld)",
                           name, fmt, (long long)w, (long long)h);
    /* Sides are at most 2^31-1 (PNG) so the product cannot overflow int64. */
    if (w > INT_MAX / 4 || h > INT_MAX / 4 || w * h > lim->max_pixels)
        return qvlm_errorf(err, QVLM_E_LIMIT,
                           "%s: %s image is %lld x %lld = %lld pixels, over the limit of %lld pixels "
                           "(refused before decoding)",
                           name, fmt, (long long)w, (long long)h, (long long)(w * h),
                           (long long)lim->max_pixels);
    if (w < lim->min_side || h < lim->min_side)
        return qvlm_errorf(err, QVLM_E_INVALID, "%s: %s image is %lld x %lld, a side is under %d pixels",
                           name, fmt, (long long)w, (long long)h, lim->min_side);
    /* The same double division as the reference's max(h, w) / min(h, w) > 200. */
    double aspect = (double)(w > h ? w : h) / (double)(w > h ? h : w);
    if (aspect > lim->max_aspect)
        return qvlm_errorf(err, QVLM_E_INVALID,
                           "%s: %s image is %lld x %lld, aspect ratio %.1f is over %.0f", name, fmt,
                           (long long)w, (long long)h, aspect, lim->max_aspect);
    return QVLM_OK;
}

qvlm_status qvlm_image_alloc(qvlm_image *out, int width, int height, const char *name,
                             qvlm_error *err) {
    size_t n_bytes;
    if (qvlm_mul_overflow((size_t)width, (size_t)height, &n_bytes) ||
        qvlm_mul_overflow(n_bytes, 3, &n_bytes))
        return qvlm_errorf(err, QVLM_E_LIMIT, "%s: %d x %d pixels overflow the address space", name,
                           width, height);
    out->rgb = malloc(n_bytes);
    if (!out->rgb)
        return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory for %d x %d pixels", name, width,
                           height);
    out->width = width;
    out->height = height;
    return QVLM_OK;
}

/* ---- entry points ---------------------------------------------------------------------- */

qvlm_status qvlm_image_decode(const uint8_t *buf, size_t n_bytes, const char *name,
                              const qvlm_image_limits *lim, qvlm_image *out, qvlm_error *err) {
    qvlm_image_limits dflt = qvlm_image_limits_default();
    if (!name) name = "image";
    if (!lim) lim = &dflt;
    memset(out, 0, sizeof(*out));
    if (!buf || n_bytes == 0) return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: empty image (0 bytes)", name);

    qvlm_status rc;
    switch (qvlm_image_sniff(buf, n_bytes)) {
    case QVLM_IMAGE_JPEG: rc = qvlm_image_decode_jpeg(buf, n_bytes, name, lim, out, err); break;
    case QVLM_IMAGE_PNG: rc = qvlm_image_decode_png(buf, n_bytes, name, lim, out, err); break;
    case QVLM_IMAGE_WEBP: rc = qvlm_image_decode_webp(buf, n_bytes, name, lim, out, err); break;
    default: {
        const char *other = other_format_name(buf, n_bytes);
        if (other)
            return qvlm_errorf(err, QVLM_E_UNSUPPORTED,
                               "%s: %s images are not supported (use JPEG, PNG or WebP)", name, other);
        return qvlm_errorf(err, QVLM_E_UNSUPPORTED,
                           "%s: unknown image format (%zu bytes, not JPEG, PNG or WebP)", name, n_bytes);
    }
    }
    if (rc != QVLM_OK) qvlm_image_free(out); /* decoders leave it zeroed; stay safe anyway */
    return rc;
}

qvlm_status qvlm_image_load(const char *path, const qvlm_image_limits *lim, qvlm_image *out,
                            qvlm_error *err) {
    qvlm_mmap map = {0};
    memset(out, 0, sizeof(*out));
    qvlm_status rc = qvlm_mmap_open(&map, path, err);
    if (rc) return rc;
    rc = qvlm_image_decode(map.data, map.n_bytes, path, lim, out, err);
    qvlm_mmap_close(&map);
    return rc;
}

void qvlm_image_free(qvlm_image *img) {
    if (!img) return;
    free(img->rgb);
    memset(img, 0, sizeof(*img));
}
