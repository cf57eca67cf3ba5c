/* image_webp.c - WebP decoding through libwebp, matching PIL's WebP plugin + convert("RGB").
 *
 * PIL decodes the first frame to RGBA (non-premultiplied) and convert("RGB") drops the alpha;
 * decoding straight to RGB gives the same colour samples (libwebp does not touch colour when
 * it drops alpha). Lossy files use libwebp's default (fancy) chroma upsampling in both.
 * libwebp reports errors through status codes: there is nothing to longjmp over.
 */
#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>

#include "model/image_codec.h"

static const char *webp_status_text(VP8StatusCode st) {
    switch (st) {
    case VP8_STATUS_OK: return "ok";
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "malformed bitstream";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "decoding suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "data ends early (truncated file)";
    }
    return "unknown error";
}

static qvlm_status status_code(VP8StatusCode st) {
    switch (st) {
    case VP8_STATUS_OUT_OF_MEMORY: return QVLM_E_NOMEM;
    case VP8_STATUS_UNSUPPORTED_FEATURE: return QVLM_E_UNSUPPORTED;
    default: return QVLM_E_CORRUPT;
    }
}

qvlm_status qvlm_image_decode_webp(const uint8_t *buf, size_t n_bytes, const char *name,
                                   const qvlm_image_limits *lim, qvlm_image *out, qvlm_error *err) {
    WebPBitstreamFeatures feat;
    VP8StatusCode st = WebPGetFeatures(buf, n_bytes, &feat);
    if (st != VP8_STATUS_OK)
        return qvlm_errorf(err, status_code(st), "%s: WebP: %s", name, webp_status_text(st));
    if (feat.has_animation)
        return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s: WebP: animated images are not supported", name);
    qvlm_status rc = qvlm_image_check_header(name, "WebP", feat.width, feat.height, lim, err);
    if (rc) return rc;
    rc = qvlm_image_alloc(out, feat.width, feat.height, name, err);
    if (rc) return rc;

    /* WebPDecode (not WebPDecodeRGBInto) to get the status code for the message. */
    WebPDecoderConfig cfg;
    if (!WebPInitDecoderConfig(&cfg)) {
        qvlm_image_free(out);
        return qvlm_errorf(err, QVLM_E_INTERNAL, "%s: WebP: library version mismatch", name);
    }
    cfg.output.colorspace = MODE_RGB;
    cfg.output.is_external_memory = 1;
    cfg.output.u.RGBA.rgba = out->rgb;
    cfg.output.u.RGBA.stride = out->width * 3;
    cfg.output.u.RGBA.size = (size_t)out->width * (size_t)out->height * 3;
    st = WebPDecode(buf, n_bytes, &cfg);
    WebPFreeDecBuffer(&cfg.output); /* no-op for external memory; keeps the pairing obvious */
    if (st != VP8_STATUS_OK) {
        qvlm_image_free(out);
        return qvlm_errorf(err, status_code(st), "%s: WebP: %s", name, webp_status_text(st));
    }
    return QVLM_OK;
}
