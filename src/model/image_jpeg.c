/* image_jpeg.c - JPEG decoding through libjpeg(-turbo), matching PIL's JPEG plugin.
 *
 * libjpeg's default error handler calls exit(); ours records the message and longjmps back to
 * decode_body()'s setjmp, whose caller then releases everything. Everything that must be freed
 * lives in `struct jpeg_job` (reached through a pointer, so it is in memory when the longjmp
 * lands, never in a clobbered register).
 *
 * Matching PIL: decompression uses libjpeg's defaults (islow IDCT, fancy upsampling), which is
 * what PIL's decoder leaves untouched. Grey and YCbCr are converted to RGB by libjpeg (grey is
 * replicated, like PIL's L -> RGB). 4-component (CMYK/YCCK) files are decoded to CMYK and
 * converted with PIL's formulas (see cmyk_row_to_rgb). Warnings about corrupt entropy data are
 * ignored, as PIL ignores them, but running out of data is an error: libjpeg would pad the
 * image with grey, while PIL raises "image file is truncated".
 */
#include <setjmp.h>
#include <stdio.h> /* jpeglib.h needs FILE */
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

#include "model/image_codec.h"

/* A progressive JPEG may hold any number of scans, each a full pass over the coefficients:
 * thousands of tiny scans are a CPU bomb. libjpeg-turbo's documentation suggests a limit of
 * 500; real encoders write about 10. */
#define MAX_SCANS 500

struct jpeg_guard {
    struct jpeg_error_mgr pub; /* first: libjpeg hands us &pub as cinfo->err */
    struct jpeg_progress_mgr progress;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX + 64];
};

struct jpeg_job {
    const uint8_t *buf;
    size_t n_bytes;
    const char *name;
    const qvlm_image_limits *lim;
    qvlm_image *out;  /* allocated by decode_body, freed by the caller on failure */
    uint8_t *cmyk;    /* [width][4] scratch row for CMYK files, or NULL */
};

/* ---- libjpeg callbacks ----------------------------------------------------------------- */

static void on_error_exit(j_common_ptr cinfo) {
    struct jpeg_guard *g = (struct jpeg_guard *)cinfo->err;
    cinfo->err->format_message(cinfo, g->msg);
    longjmp(g->jump, 1);
}

/* level -1 is a warning. The memory source warns JWRN_JPEG_EOF when the data ends early and
 * then feeds a fake EOI, which would give a silently grey-padded image: make it an error. */
static void on_emit_message(j_common_ptr cinfo, int level) {
    struct jpeg_guard *g = (struct jpeg_guard *)cinfo->err;
    if (level >= 0) return; /* trace messages */
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
        snprintf(g->msg, sizeof(g->msg), "data ends early (truncated file)");
        longjmp(g->jump, 1);
    }
    cinfo->err->num_warnings++;
}

static void on_output_message(j_common_ptr cinfo) { (void)cinfo; /* never print */ }

static void on_progress(j_common_ptr cinfo) {
    struct jpeg_guard *g = (struct jpeg_guard *)cinfo->err;
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > MAX_SCANS) {
        snprintf(g->msg, sizeof(g->msg), "more than %d progressive scans (refused)", MAX_SCANS);
        longjmp(g->jump, 1);
    }
}

/* ---- pixel conversion ------------------------------------------------------------------ */

/* PIL opens every 4-component JPEG with rawmode "CMYK;I" (inverted, "assume adobe
 * conventions"), then converts CMYK -> RGB as out = 255-k - round(c·(255-k)/255) with its
 * MULDIV255 rounding. Here `in` holds libjpeg's raw samples, so PIL's c is 255 - in[0] and
 * its 255-k is in[3]. */
static void cmyk_row_to_rgb(uint8_t *rgb, const uint8_t *in, int width) {
    for (int x = 0; x < width; x++, in += 4, rgb += 3) {
        int nk = in[3];
        for (int ch = 0; ch < 3; ch++) {
            int t = (255 - in[ch]) * nk + 128;
            int v = nk - (((t >> 8) + t) >> 8);
            rgb[ch] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

/* ---- decoding -------------------------------------------------------------------------- */

static qvlm_status decode_body(struct jpeg_decompress_struct *cinfo, struct jpeg_guard *g,
                               struct jpeg_job *job, qvlm_error *err) {
    if (setjmp(g->jump)) return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: JPEG: %s", job->name, g->msg);
    jpeg_create_decompress(cinfo);
    cinfo->progress = &g->progress;
    jpeg_mem_src(cinfo, job->buf, (unsigned long)job->n_bytes);
    jpeg_read_header(cinfo, TRUE);

    qvlm_status rc = qvlm_image_check_header(job->name, "JPEG", cinfo->image_width,
                                             cinfo->image_height, job->lim, err);
    if (rc) return rc;
    int cmyk = cinfo->num_components == 4;
    cinfo->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(cinfo);
    if (cinfo->output_components != (cmyk ? 4 : 3) ||
        cinfo->output_width != cinfo->image_width || cinfo->output_height != cinfo->image_height)
        return qvlm_errorf(err, QVLM_E_UNSUPPORTED, "%s: JPEG: unexpected output layout (%d components)",
                           job->name, cinfo->output_components);

    int w = (int)cinfo->output_width, h = (int)cinfo->output_height;
    rc = qvlm_image_alloc(job->out, w, h, job->name, err);
    if (rc) return rc;
    if (cmyk && !(job->cmyk = malloc((size_t)w * 4)))
        return qvlm_errorf(err, QVLM_E_NOMEM, "%s: out of memory", job->name);
    while (cinfo->output_scanline < cinfo->output_height) {
        uint8_t *dst = job->out->rgb + (size_t)cinfo->output_scanline * (size_t)w * 3;
        JSAMPROW row = cmyk ? job->cmyk : dst;
        if (jpeg_read_scanlines(cinfo, &row, 1) != 1)
            return qvlm_errorf(err, QVLM_E_CORRUPT, "%s: JPEG: data ends early (truncated file)",
                               job->name);
        if (cmyk) cmyk_row_to_rgb(dst, job->cmyk, w);
    }
    /* No jpeg_finish_decompress: a file whose pixels are complete but which lacks the final
     * EOI marker decodes in PIL too. */
    return QVLM_OK;
}

qvlm_status qvlm_image_decode_jpeg(const uint8_t *buf, size_t n_bytes, const char *name,
                                   const qvlm_image_limits *lim, qvlm_image *out, qvlm_error *err) {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_guard guard;
    struct jpeg_job job = {.buf = buf, .n_bytes = n_bytes, .name = name, .lim = lim, .out = out};

    memset(&cinfo, 0, sizeof(cinfo)); /* so jpeg_destroy is safe whatever failed */
    memset(&guard, 0, sizeof(guard));
    cinfo.err = jpeg_std_error(&guard.pub);
    guard.pub.error_exit = on_error_exit;
    guard.pub.emit_message = on_emit_message;
    guard.pub.output_message = on_output_message;
    guard.progress.progress_monitor = on_progress;

    qvlm_status rc = decode_body(&cinfo, &guard, &job, err);
    jpeg_destroy_decompress(&cinfo);
    free(job.cmyk);
    if (rc != QVLM_OK) qvlm_image_free(out);
    return rc;
}
