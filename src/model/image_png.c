/* image_png.c - PNG decoding through libpng, matching PIL's PNG plugin + convert("RGB").
 *
 * libpng reports errors by calling our on_png_error, which records the message and longjmps
 * to decode_body()'s setjmp; the caller then destroys the libpng structs and frees the
 * buffers, all of which live in `struct png_job` (in memory, not in clobbered registers).
 *
 * What PIL gives for each IHDR combination (PngImagePlugin's mode table, then convert("RGB")):
 *   grey 1/2/4/8    -> L, scaled to 0..255 (1 -> 255, 3 -> 255, 15 -> 255), replicated
 *   grey 16         -> I;16, whose RGB conversion clips: min(v, 255)   (not v >> 8!)
 *   grey+alpha 8/16 -> LA / RGBA("LA;16B"): the grey (high byte), alpha dropped
 *   RGB 8/16, RGBA 8/16 -> high byte of each sample, alpha dropped
 *   palette 1..8    -> palette lookup, alpha (tRNS) dropped
 * tRNS never changes the colour of a pixel and gamma/ICC chunks are ignored, as in PIL.
 */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/image_codec.h"

struct png_job {
    const uint8_t *buf;
    size_t n_bytes;
    size_t pos; /* read position in buf */
    const char *name;
    const qvlm_image_limits *lim;
    qvlm_image *out;  /* allocated by decode_body, freed by the caller on failure */
    uint8_t *scratch; /* libpng's output rows: one row, or the whole image if interlaced */
    uint8_t **rows;   /* [height] pointers into scratch when interlaced, else NULL */
    char msg[256];
};

/* ---- libpng callbacks ------------------------------------------------------------------ */

static void on_png_error(png_structp png, png_const_charp msg) {
    struct png_job *job = png_get_error_ptr(png);
    snprintf(job->msg, sizeof(job->msg), "%s", msg);
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* ancillary-chunk trouble: PIL carries on too */
}

static void read_from_buffer(png_structp png, png_bytep dst, size_t n) {
    struct png_job *job = png_get_io_ptr(png);
    if (n > job->n_bytes - job->pos) png_error(png, "data ends early (truncated file)");
    memcpy(dst, job->buf + job->pos, n);
    job->pos += n;
}

/* ---- pixel conversion ------------------------------------------------------------------ */

/* One row of libpng output (after the transforms set in decode_body) to RGB. `n_channels`
 * is 1..4 at 8 bits, or 1 at 16 bits (grey, big-endian samples). */
static void row_to_rgb(uint8_t *rgb, const uint8_t *src, int width, int n_channels, int depth) {
    if (depth == 16) {
        for (int x = 0; x < width; x++, src += 2, rgb += 3) {
            uint8_t v = src[0] ? 255 : src[1]; /* PIL's I;16 -> RGB clips */
            rgb[0] = rgb[1] = rgb[2] = v;
        }
        return;
    }
    if (n_channels == 3) {
        memcpy(rgb, src, (size_t)width * 3);
        return;
    }
    for (int x = 0; x < width; x++, src += n_channels, rgb += 3) {
        if (n_channels <= 2) {
            rgb[0] = rgb[1] = rgb[2] = src[0];
        } else {
            rgb[0] = src[0];
            rgb[1] = src[1];
            rgb[2] = src[2];
        }
    }
}

/* ---- decoding -------------------------------------------------------------------------- */

/* Ask libpng for 8-bit G, GA, RGB or RGBA (16-bit G kept whole, see the file comment). */
static void set_transforms(png_structp png, int depth, int color_type) {
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16 && color_type != PNG_COLOR_TYPE_GRAY) png_set_strip_16(png); /* high byte */
}

static qvlm_status read_pixels(png_structp png, struct png_job *job, int n_passes, size_t row_bytes,
                               int n_channels, int depth, qvlm_error *err) {
    qvlm_image *out = job->out;
    size_t h = (size_t)out->height, scratch_bytes = row_bytes;
    /* Interlaced images need every row in memory (each pass touches all of them). */
    if (n_passes > 1 && qvlm_mul_overflow(row_bytes, h, &scratch_bytes))
        return qvlm_errorf(err, QVLM_E_LIMIT, "%s: PNG: image too large", job->name);
    job->scratch = malloc(scratch_bytes);
    if (!job->scratch) return qvlm_errorf(err, QVLM_E_NOMEM, "%s: PNG: out of memory", job->name);
    if (n_passes > 1) {
        job->rows = malloc(h * sizeof(*job->rows));
        if (!job->rows) return qvlm_errorf(err, QVLM_E_NOMEM, "%s: PNG: out of memory", job->name);
        for (size_t y = 0; y < h; y++) job->rows[y] = job->scratch + y * row_bytes;
        png_read_image(png, job->rows);
    }
    for (size_t y = 0; y < h; y++) {
        const uint8_t *src = job->scratch;
        if (n_passes > 1)
            src = job->rows[y];
        else
            png_read_row(png, job->scratch, NULL);
        row_to_rgb(out->rgb + y * (size_t)out->width * 3, src, out->width, n_channels, depth);
    }
    return QVLM_OK;
}

static qvlm_status decode_body(png_structp png, png_infop info, struct png_job *job,
                               qvlm_error *err) {
    if (setjmp(png_jmpbuf(png))) return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: PNG: %s", job->name, job->msg);
    png_set_read_fn(png, job, read_from_buffer);
    /* libpng's own default cap (1e6 per side) would fire first with a vaguer message. */
    png_set_user_limits(png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
    png_read_info(png, info);

    png_uint_32 w, h;
    int depth, color_type, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &color_type, &interlace, NULL, NULL);
    qvlm_status rc = qvlm_image_check_header(job->name, "PNG", w, h, job->lim, err);
    if (rc) return rc;

    set_transforms(png, depth, color_type);
    int n_passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int n_channels = png_get_channels(png, info), out_depth = png_get_bit_depth(png, info);
    size_t row_bytes = png_get_rowbytes(png, info);
    if (!((out_depth == 8 && n_channels >= 1 && n_channels <= 4) || (out_depth == 16 && n_channels == 1)) ||
        row_bytes != (size_t)w * (size_t)n_channels * (size_t)(out_depth / 8))
        return qvlm_errorf(err, QVLM_E_INTERNAL, "%s: PNG: unexpected row layout (%d channels, %d bits)",
                           job->name, n_channels, out_depth);

    rc = qvlm_image_alloc(job->out, (int)w, (int)h, job->name, err);
    if (rc) return rc;
    return read_pixels(png, job, n_passes, row_bytes, n_channels, out_depth, err);
}

qvlm_status qvlm_image_decode_png(const uint8_t *buf, size_t n_bytes, const char *name,
                                  const qvlm_image_limits *lim, qvlm_image *out, qvlm_error *err) {
    struct png_job job = {.buf = buf, .n_bytes = n_bytes, .name = name, .lim = lim, .out = out};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &job, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    qvlm_status rc;
    if (!png || !info)
        rc = qvlm_errorf(err, QVLM_E_NOMEM, "%s: PNG: out of memory", name);
    else
        rc = decode_body(png, info, &job, err);
    png_destroy_read_struct(png ? &png : NULL, info ? &info : NULL, NULL);
    free(job.rows);
    free(job.scratch);
    if (rc != QVLM_OK) qvlm_image_free(out);
    return rc;
}
