/* image_decode_test.c - JPEG/PNG/WebP decoding: every PNG colour type and bit depth, tRNS,
 * interlacing, grey/RGB/CMYK/progressive JPEG, lossless/lossy/alpha WebP; every bad-input
 * case with its message; the content hash across encodings.
 *
 * Test images are made here with the libraries' own encoders. Expected pixels follow what
 * PIL's Image.open(...).convert("RGB") gives (the reference pipeline), e.g. 16-bit grey clips
 * to 255 while 16-bit RGB keeps the high byte; image.h explains each rule. */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <webp/decode.h>
#include <webp/encode.h>

#include "core/fileio.h"
#include "model/image.h"
#include "model/image_preprocess.h"
#include "qtest.h"

/* ---- encoders (test-side helpers) -------------------------------------------------------- */

struct membuf {
    uint8_t *data;
    size_t n, cap;
};

static void membuf_put(struct membuf *m, const void *p, size_t n) {
    if (m->n + n > m->cap) {
        size_t cap = (m->cap + n) * 2;
        uint8_t *d = realloc(m->data, cap);
        if (!d) abort(); /* test helper: our own inputs */
        m->data = d;
        m->cap = cap;
    }
    if (n) memcpy(m->data + m->n, p, n);
    m->n += n;
}

static void png_write_cb(png_structp png, png_bytep d, size_t n) {
    membuf_put(png_get_io_ptr(png), d, n);
}
static void png_flush_cb(png_structp png) { (void)png; }

struct png_spec {
    int w, h, color_type, depth, interlace;
    const uint16_t *samples; /* [h][w][channels] sample values (palette index for palette) */
    const png_color *palette;
    int n_palette;
    const png_byte *trns; /* palette alpha */
    int n_trns;
    const png_color_16 *trns_color; /* grey/RGB transparent colour */
};

static int png_channels(int color_type) {
    switch (color_type) {
    case PNG_COLOR_TYPE_GRAY: case PNG_COLOR_TYPE_PALETTE: return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
    case PNG_COLOR_TYPE_RGB: return 3;
    default: return 4;
    }
}

/* Pack one row of samples as PNG stores it: big-endian 16-bit, or MSB-first sub-byte. */
static void pack_row(uint8_t *dst, const uint16_t *s, int n, int depth) {
    memset(dst, 0, ((size_t)n * depth + 7) / 8);
    for (int i = 0; i < n; i++) {
        if (depth == 16) {
            dst[2 * i] = (uint8_t)(s[i] >> 8);
            dst[2 * i + 1] = (uint8_t)s[i];
        } else if (depth == 8) {
            dst[i] = (uint8_t)s[i];
        } else {
            int bit = i * depth, shift = 8 - depth - bit % 8;
            dst[bit / 8] |= (uint8_t)(s[i] << shift);
        }
    }
}

static uint8_t *encode_png(const struct png_spec *sp, size_t *n_out) {
    struct membuf m = {0};
    int ch = png_channels(sp->color_type);
    size_t row_bytes = ((size_t)sp->w * ch * sp->depth + 7) / 8;
    uint8_t *rows = calloc((size_t)sp->h, row_bytes);
    png_bytep *ptrs = calloc((size_t)sp->h, sizeof(*ptrs));
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    /* no setjmp: for our own valid input a libpng error is a test bug, and libpng aborts */
    png_set_write_fn(png, &m, png_write_cb, png_flush_cb);
    png_set_IHDR(png, info, (png_uint_32)sp->w, (png_uint_32)sp->h, sp->depth, sp->color_type,
                 sp->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (sp->palette) png_set_PLTE(png, info, sp->palette, sp->n_palette);
    if (sp->trns || sp->trns_color) png_set_tRNS(png, info, sp->trns, sp->n_trns, sp->trns_color);
    for (int y = 0; y < sp->h; y++) {
        ptrs[y] = rows + (size_t)y * row_bytes;
        pack_row(ptrs[y], sp->samples + (size_t)y * sp->w * ch, sp->w * ch, sp->depth);
    }
    png_set_rows(png, info, ptrs);
    png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    free(ptrs);
    *n_out = m.n;
    return m.data;
}

struct jpeg_spec {
    int w, h, components; /* 1 grey, 3 RGB, 4 CMYK */
    const uint8_t *samples; /* [h][w][components] */
    int quality, progressive, full_chroma;
    const uint8_t *app1; /* an APP1 (EXIF) marker payload, or NULL */
    unsigned app1_len;
};

static uint8_t *encode_jpeg(const struct jpeg_spec *sp, size_t *n_out) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    unsigned char *out = NULL;
    unsigned long n = 0;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &out, &n);
    c.image_width = (JDIMENSION)sp->w;
    c.image_height = (JDIMENSION)sp->h;
    c.input_components = sp->components;
    c.in_color_space = sp->components == 1 ? JCS_GRAYSCALE : sp->components == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, sp->quality, TRUE);
    if (sp->full_chroma)
        for (int i = 0; i < c.num_components; i++) c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
    if (sp->progressive) jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    if (sp->app1) jpeg_write_marker(&c, JPEG_APP0 + 1, sp->app1, sp->app1_len);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(sp->samples + (size_t)c.next_scanline * sp->w * sp->components);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    *n_out = n;
    return out;
}

/* Lossless WebP that keeps RGB under any alpha (exact), from RGB or RGBA. */
static uint8_t *encode_webp_lossless(const uint8_t *px, int w, int h, int has_alpha, size_t *n_out) {
    WebPConfig cfg;
    WebPPicture pic;
    WebPMemoryWriter wr;
    if (!WebPConfigInit(&cfg) || !WebPPictureInit(&pic)) abort();
    cfg.lossless = 1;
    cfg.exact = 1;
    pic.use_argb = 1;
    pic.width = w;
    pic.height = h;
    if (!(has_alpha ? WebPPictureImportRGBA(&pic, px, w * 4) : WebPPictureImportRGB(&pic, px, w * 3))) abort();
    WebPMemoryWriterInit(&wr);
    pic.writer = WebPMemoryWrite;
    pic.custom_ptr = &wr;
    if (!WebPEncode(&cfg, &pic)) abort();
    WebPPictureFree(&pic);
    *n_out = wr.size;
    return wr.mem; /* free with WebPFree */
}

static uint32_t crc32_png(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return c ^ 0xffffffffu;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* A PNG chunk with a correct CRC. */
static void png_chunk(struct membuf *m, const char *type, const uint8_t *data, uint32_t n) {
    uint8_t hdr[8], crc[4];
    put_be32(hdr, n);
    memcpy(hdr + 4, type, 4);
    membuf_put(m, hdr, 8);
    membuf_put(m, data, n);
    uint8_t *tmp = malloc(n + 4);
    memcpy(tmp, type, 4);
    if (n) memcpy(tmp + 4, data, n);
    put_be32(crc, crc32_png(tmp, n + 4));
    free(tmp);
    membuf_put(m, crc, 4);
}

/* Signature + IHDR(w, h, 8-bit RGB) + an IDAT of garbage + IEND: decoding it would fail on the
 * IDAT, so an error about the header proves the header was judged first. */
static uint8_t *png_header_only(uint32_t w, uint32_t h, size_t *n_out) {
    struct membuf m = {0};
    uint8_t ihdr[13] = {0};
    put_be32(ihdr, w);
    put_be32(ihdr + 4, h);
    ihdr[8] = 8; /* depth */
    ihdr[9] = 2; /* RGB */
    membuf_put(&m, "\x89PNG\r\n\x1a\n", 8);
    png_chunk(&m, "IHDR", ihdr, 13);
    png_chunk(&m, "IDAT", (const uint8_t *)"garbage!", 8);
    png_chunk(&m, "IEND", NULL, 0);
    *n_out = m.n;
    return m.data;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static uint16_t *pattern(int w, int h, int ch, uint32_t maxval, uint32_t seed) {
    uint16_t *s = malloc((size_t)w * h * ch * sizeof(*s));
    for (size_t i = 0; i < (size_t)w * h * ch; i++) {
        seed = seed * 1103515245u + 12345u;
        s[i] = (uint16_t)((seed >> 8) % (maxval + 1));
    }
    /* the extremes always appear */
    s[0] = 0;
    s[(size_t)w * h * ch - 1] = (uint16_t)maxval;
    return s;
}

/* Decode `buf` and compare with `want` [h][w][3]; reports the first mismatch. */
static int decode_matches(const uint8_t *buf, size_t n, int w, int h, const uint8_t *want, int tol,
                          const char *what) {
    qvlm_image img;
    qvlm_error err = {0};
    if (qvlm_image_decode(buf, n, what, NULL, &img, &err) != QVLM_OK) {
        fprintf(stderr, "  %s: %s\n", what, err.msg);
        return 0;
    }
    int ok = img.width == w && img.height == h;
    if (!ok) fprintf(stderr, "  %s: %dx%d, expected %dx%d\n", what, img.width, img.height, w, h);
    for (size_t i = 0; ok && i < (size_t)w * h * 3; i++)
        if (abs((int)img.rgb[i] - (int)want[i]) > tol) {
            fprintf(stderr, "  %s: pixel %zu channel %zu = %d, expected %d\n", what, i / 3, i % 3, img.rgb[i],
                    want[i]);
            ok = 0;
        }
    qvlm_image_free(&img);
    return ok;
}

/* ---- PNG --------------------------------------------------------------------------------- */

/* What PIL's convert("RGB") gives for one pixel of a given PNG type (see image.h). */
static void expected_png_pixel(const struct png_spec *sp, const uint16_t *s, uint8_t rgb[3]) {
    int d = sp->depth;
    switch (sp->color_type) {
    case PNG_COLOR_TYPE_GRAY: {
        uint8_t v = d == 16 ? (uint8_t)(s[0] > 255 ? 255 : s[0]) : (uint8_t)(s[0] * (255 / ((1 << d) - 1)));
        rgb[0] = rgb[1] = rgb[2] = v;
        return;
    }
    case PNG_COLOR_TYPE_GRAY_ALPHA:
        rgb[0] = rgb[1] = rgb[2] = (uint8_t)(d == 16 ? s[0] >> 8 : s[0]);
        return;
    case PNG_COLOR_TYPE_PALETTE:
        rgb[0] = sp->palette[s[0]].red, rgb[1] = sp->palette[s[0]].green, rgb[2] = sp->palette[s[0]].blue;
        return;
    default:
        for (int c = 0; c < 3; c++) rgb[c] = (uint8_t)(d == 16 ? s[c] >> 8 : s[c]);
    }
}

static int check_png(struct png_spec *sp, const char *what) {
    int ch = png_channels(sp->color_type);
    uint32_t maxval = sp->color_type == PNG_COLOR_TYPE_PALETTE ? (uint32_t)sp->n_palette - 1 : (1u << sp->depth) - 1;
    uint16_t *s = pattern(sp->w, sp->h, ch, maxval, (uint32_t)(sp->color_type * 100 + sp->depth));
    /* 16-bit samples just under and over a byte boundary tell clip, round and truncate apart */
    if (sp->depth == 16 && (size_t)sp->w * sp->h * ch >= 4) s[1] = 0x12ff, s[2] = 255, s[3] = 256;
    sp->samples = s;
    size_t n;
    uint8_t *buf = encode_png(sp, &n);
    uint8_t *want = malloc((size_t)sp->w * sp->h * 3);
    for (size_t i = 0; i < (size_t)sp->w * sp->h; i++) expected_png_pixel(sp, s + i * ch, want + i * 3);
    int ok = decode_matches(buf, n, sp->w, sp->h, want, 0, what);
    free(buf);
    free(want);
    free(s);
    return ok;
}

static void test_png_grey_all_depths(void) {
    const int depths[] = {1, 2, 4, 8, 16};
    for (int i = 0; i < 5; i++) {
        char what[64];
        snprintf(what, sizeof(what), "grey %d-bit", depths[i]);
        struct png_spec sp = {.w = 37, .h = 11, .color_type = PNG_COLOR_TYPE_GRAY, .depth = depths[i]};
        if (!check_png(&sp, what)) QTEST_FAIL("%s", what);
    }
}

static void test_png_colour_types_8_16(void) {
    const int types[] = {PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA, PNG_COLOR_TYPE_GRAY_ALPHA};
    for (int t = 0; t < 3; t++)
        for (int d = 8; d <= 16; d += 8) {
            char what[64];
            snprintf(what, sizeof(what), "colour type %d, %d-bit", types[t], d);
            struct png_spec sp = {.w = 29, .h = 13, .color_type = types[t], .depth = d};
            if (!check_png(&sp, what)) QTEST_FAIL("%s", what);
        }
}

static void test_png_palette_and_trns(void) {
    png_color pal[256];
    png_byte alpha[256];
    for (int i = 0; i < 256; i++) {
        pal[i] = (png_color){(png_byte)(i * 7), (png_byte)(255 - i), (png_byte)(i * 13 + 5)};
        alpha[i] = (png_byte)(i * 3); /* tRNS never changes the colour */
    }
    const int depths[] = {1, 2, 4, 8};
    for (int i = 0; i < 4; i++)
        for (int with_trns = 0; with_trns < 2; with_trns++) {
            char what[64];
            snprintf(what, sizeof(what), "palette %d-bit%s", depths[i], with_trns ? " + tRNS" : "");
            struct png_spec sp = {.w = 31, .h = 9, .color_type = PNG_COLOR_TYPE_PALETTE, .depth = depths[i],
                                  .palette = pal, .n_palette = 1 << depths[i]};
            if (with_trns) sp.trns = alpha, sp.n_trns = sp.n_palette;
            if (!check_png(&sp, what)) QTEST_FAIL("%s", what);
        }
    /* tRNS on grey and RGB (a transparent colour): also ignored by convert("RGB") */
    png_color_16 grey_key = {.gray = 3}, rgb_key = {.red = 10, .green = 20, .blue = 30};
    struct png_spec g8 = {.w = 17, .h = 5, .color_type = PNG_COLOR_TYPE_GRAY, .depth = 8, .trns_color = &grey_key};
    struct png_spec g16 = {.w = 17, .h = 5, .color_type = PNG_COLOR_TYPE_GRAY, .depth = 16, .trns_color = &grey_key};
    struct png_spec g2 = {.w = 17, .h = 5, .color_type = PNG_COLOR_TYPE_GRAY, .depth = 2, .trns_color = &grey_key};
    struct png_spec rgb = {.w = 17, .h = 5, .color_type = PNG_COLOR_TYPE_RGB, .depth = 8, .trns_color = &rgb_key};
    ASSERT_TRUE(check_png(&g8, "grey 8 + tRNS"));
    ASSERT_TRUE(check_png(&g16, "grey 16 + tRNS"));
    ASSERT_TRUE(check_png(&g2, "grey 2 + tRNS"));
    ASSERT_TRUE(check_png(&rgb, "RGB + tRNS"));
}

static void test_png_interlaced(void) {
    struct png_spec a = {.w = 33, .h = 21, .color_type = PNG_COLOR_TYPE_RGB_ALPHA, .depth = 8, .interlace = 1};
    struct png_spec b = {.w = 7, .h = 3, .color_type = PNG_COLOR_TYPE_GRAY, .depth = 16, .interlace = 1};
    struct png_spec c = {.w = 1, .h = 1, .color_type = PNG_COLOR_TYPE_RGB, .depth = 8, .interlace = 1};
    ASSERT_TRUE(check_png(&a, "interlaced RGBA"));
    ASSERT_TRUE(check_png(&b, "interlaced grey 16"));
    ASSERT_TRUE(check_png(&c, "interlaced 1x1"));
}

/* The fixtures' PNGs decode to the size reference.json gives. */
static void test_png_fixture_file(void) {
    qvlm_error err;
    qvlm_image img;
    ASSERT_OK(qvlm_image_load(QVLM_FIXTURES "/tiny-dense/images/img2.png", NULL, &img, &err), &err);
    ASSERT_EQ_INT(img.width, 53);
    ASSERT_EQ_INT(img.height, 77);
    qvlm_image_free(&img);
    ASSERT_FAILS(qvlm_image_load("/nonexistent/x.png", NULL, &img, &err), QVLM_E_IO, &err, "/nonexistent/x.png");
    ASSERT_TRUE(img.rgb == NULL && img.width == 0);
}

/* ---- JPEG -------------------------------------------------------------------------------- */

/* Flat 8x8 blocks encode as DC only, so q100 4:4:4 decodes to within ±1 of the input. */
static uint8_t *blocky(int w, int h, int ch, uint32_t seed) {
    uint8_t *p = malloc((size_t)w * h * ch);
    for (int by = 0; by < h; by += 8)
        for (int bx = 0; bx < w; bx += 8) {
            uint8_t v[4];
            for (int c = 0; c < ch; c++) {
                seed = seed * 1103515245u + 12345u;
                v[c] = (uint8_t)(16 + (seed >> 16) % 224);
            }
            for (int y = by; y < by + 8 && y < h; y++)
                for (int x = bx; x < bx + 8 && x < w; x++) memcpy(p + ((size_t)y * w + x) * ch, v, (size_t)ch);
        }
    return p;
}

static void test_jpeg_rgb_and_grey(void) {
    uint8_t *rgb = blocky(48, 32, 3, 1), *grey = blocky(48, 32, 1, 2), *grey3 = malloc(48 * 32 * 3);
    for (int i = 0; i < 48 * 32; i++) grey3[3 * i] = grey3[3 * i + 1] = grey3[3 * i + 2] = grey[i];
    size_t n1, n2;
    struct jpeg_spec a = {.w = 48, .h = 32, .components = 3, .samples = rgb, .quality = 100, .full_chroma = 1};
    struct jpeg_spec b = {.w = 48, .h = 32, .components = 1, .samples = grey, .quality = 100};
    uint8_t *ja = encode_jpeg(&a, &n1), *jb = encode_jpeg(&b, &n2);
    int ok_rgb = decode_matches(ja, n1, 48, 32, rgb, 2, "rgb.jpg");
    int ok_grey = decode_matches(jb, n2, 48, 32, grey3, 1, "grey.jpg"); /* replicated R = G = B */
    free(ja), free(jb), free(rgb), free(grey), free(grey3);
    ASSERT_TRUE(ok_rgb);
    ASSERT_TRUE(ok_grey);
}

/* Progressive and baseline files with the same tables hold the same coefficients: identical
 * pixels. 4:2:0 odd sizes exercise libjpeg's fancy upsampling at the edges. */
static void test_jpeg_progressive_equals_baseline(void) {
    uint16_t *s = pattern(45, 27, 3, 255, 9);
    uint8_t *px = malloc(45 * 27 * 3);
    for (int i = 0; i < 45 * 27 * 3; i++) px[i] = (uint8_t)s[i];
    struct jpeg_spec base = {.w = 45, .h = 27, .components = 3, .samples = px, .quality = 85};
    struct jpeg_spec prog = base;
    prog.progressive = 1;
    size_t nb, np;
    uint8_t *jb = encode_jpeg(&base, &nb), *jp = encode_jpeg(&prog, &np);
    qvlm_image a, b;
    qvlm_error err;
    int ok = qvlm_image_decode(jb, nb, "base.jpg", NULL, &a, &err) == QVLM_OK &&
             qvlm_image_decode(jp, np, "prog.jpg", NULL, &b, &err) == QVLM_OK &&
             memcmp(a.rgb, b.rgb, 45 * 27 * 3) == 0;
    qvlm_image_free(&a), qvlm_image_free(&b);
    free(jb), free(jp), free(px), free(s);
    ASSERT_TRUE(ok);
}

static void test_jpeg_cmyk(void) {
    /* Raw CMYK samples (200, 50, 120, 230). PIL reads 4-component JPEGs inverted ("CMYK;I"):
     * c = 55, m = 205, y = 135, k = 25, then RGB = 255-k - round(c·(255-k)/255):
     * 230 - 50 = 180, 230 - 185 = 45, 230 - 122 = 108. */
    uint8_t *px = malloc(16 * 8 * 4), want[16 * 8 * 3];
    for (int i = 0; i < 16 * 8; i++) {
        px[4 * i] = 200, px[4 * i + 1] = 50, px[4 * i + 2] = 120, px[4 * i + 3] = 230;
        want[3 * i] = 180, want[3 * i + 1] = 45, want[3 * i + 2] = 108;
    }
    struct jpeg_spec sp = {.w = 16, .h = 8, .components = 4, .samples = px, .quality = 100, .full_chroma = 1};
    size_t n;
    uint8_t *j = encode_jpeg(&sp, &n);
    int ok = decode_matches(j, n, 16, 8, want, 1, "cmyk.jpg");
    free(j), free(px);
    ASSERT_TRUE(ok);
}

/* EXIF orientation 6 ("rotate 90° to display") is not applied: PIL's Image.open does not. */
static void test_jpeg_exif_orientation_ignored(void) {
    static const uint8_t exif[] = {'E', 'x', 'i', 'f', 0, 0,             /* APP1 identifier */
                                   'M', 'M', 0, 42, 0, 0, 0, 8,          /* TIFF header, IFD at 8 */
                                   0, 1,                                 /* one entry */
                                   0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, /* Orientation = 6 */
                                   0, 0, 0, 0};                          /* no next IFD */
    uint8_t *rgb = blocky(24, 16, 3, 8);
    struct jpeg_spec plain = {.w = 24, .h = 16, .components = 3, .samples = rgb, .quality = 90};
    struct jpeg_spec rotated = plain;
    rotated.app1 = exif, rotated.app1_len = sizeof(exif);
    size_t n1, n2;
    uint8_t *j1 = encode_jpeg(&plain, &n1), *j2 = encode_jpeg(&rotated, &n2);
    qvlm_image a = {0}, b = {0};
    qvlm_error err;
    int ok = n2 == n1 + 4 + sizeof(exif) && qvlm_image_decode(j1, n1, "plain.jpg", NULL, &a, &err) == QVLM_OK &&
             qvlm_image_decode(j2, n2, "exif6.jpg", NULL, &b, &err) == QVLM_OK && b.width == 24 && b.height == 16 &&
             memcmp(a.rgb, b.rgb, 24 * 16 * 3) == 0;
    qvlm_image_free(&a), qvlm_image_free(&b);
    free(j1), free(j2), free(rgb);
    ASSERT_TRUE(ok);
}

/* ---- WebP -------------------------------------------------------------------------------- */

static void test_webp_lossless_lossy_alpha(void) {
    uint16_t *s = pattern(23, 17, 4, 255, 5);
    uint8_t *rgba = malloc(23 * 17 * 4), *rgb = malloc(23 * 17 * 3);
    for (int i = 0; i < 23 * 17; i++) {
        for (int c = 0; c < 4; c++) rgba[4 * i + c] = (uint8_t)s[4 * i + c];
        for (int c = 0; c < 3; c++) rgb[3 * i + c] = (uint8_t)s[4 * i + c];
    }
    size_t n1, n2, n3;
    uint8_t *w1 = encode_webp_lossless(rgb, 23, 17, 0, &n1);
    uint8_t *w2 = encode_webp_lossless(rgba, 23, 17, 1, &n2); /* alpha dropped, colour kept */
    uint8_t *w3 = NULL, *smooth = malloc(32 * 32 * 3);
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 32; x++) {
            uint8_t *p = smooth + (y * 32 + x) * 3;
            p[0] = (uint8_t)(40 + 5 * x), p[1] = (uint8_t)(200 - 4 * y), p[2] = (uint8_t)(90 + 2 * (x + y));
        }
    n3 = WebPEncodeRGB(smooth, 32, 32, 32 * 3, 95, &w3);
    int ok1 = decode_matches(w1, n1, 23, 17, rgb, 0, "rgb.webp");
    int ok2 = decode_matches(w2, n2, 23, 17, rgb, 0, "rgba.webp");
    /* lossy: same size, colours close on a smooth image */
    int ok3 = n3 > 0 && decode_matches(w3, n3, 32, 32, smooth, 12, "lossy.webp");
    WebPFree(w1), WebPFree(w2), WebPFree(w3);
    free(s), free(rgba), free(rgb), free(smooth);
    ASSERT_TRUE(ok1);
    ASSERT_TRUE(ok2);
    ASSERT_TRUE(ok3);
}

/* ---- bad inputs -------------------------------------------------------------------------- */

static void test_bad_empty_unknown(void) {
    qvlm_error err;
    qvlm_image img;
    ASSERT_FAILS(qvlm_image_decode((const uint8_t *)"", 0, "image 1 of request", NULL, &img, &err), QVLM_E_CORRUPT,
                 &err, "image 1 of request: empty image (0 bytes)");
    ASSERT_FAILS(qvlm_image_decode((const uint8_t *)"hello, world", 12, "image 2 of request", NULL, &img, &err),
                 QVLM_E_UNSUPPORTED, &err, "image 2 of request: unknown image format (12 bytes, not JPEG, PNG or WebP)");
    ASSERT_FAILS(qvlm_image_decode((const uint8_t *)"GIF89a\1\0\1\0", 10, "a.gif", NULL, &img, &err),
                 QVLM_E_UNSUPPORTED, &err, "a.gif: GIF images are not supported");
    ASSERT_FAILS(qvlm_image_decode((const uint8_t *)"\x89PNG", 4, "short", NULL, &img, &err), QVLM_E_UNSUPPORTED,
                 &err, "short: unknown image format");
    ASSERT_TRUE(img.rgb == NULL && img.width == 0 && img.height == 0);
}

static void test_bad_truncated(void) {
    qvlm_error err;
    qvlm_image img;
    struct png_spec sp = {.w = 64, .h = 64, .color_type = PNG_COLOR_TYPE_RGB, .depth = 8};
    uint16_t *s = pattern(64, 64, 3, 255, 1);
    sp.samples = s;
    size_t np, nj, nw;
    uint8_t *png = encode_png(&sp, &np);
    uint8_t *px = malloc(64 * 64 * 3);
    for (int i = 0; i < 64 * 64 * 3; i++) px[i] = (uint8_t)s[i];
    struct jpeg_spec jsp = {.w = 64, .h = 64, .components = 3, .samples = px, .quality = 90};
    uint8_t *jpg = encode_jpeg(&jsp, &nj);
    struct jpeg_spec jprog = jsp;
    jprog.progressive = 1;
    size_t njp;
    uint8_t *jpgp = encode_jpeg(&jprog, &njp);
    uint8_t *webp = encode_webp_lossless(px, 64, 64, 0, &nw);
    int r1 = qvlm_image_decode(png, np / 2, "cut.png", NULL, &img, &err);
    int m1 = strstr(err.msg, "cut.png: PNG: data ends early (truncated file)") != NULL;
    int r2 = qvlm_image_decode(jpg, nj / 2, "cut.jpg", NULL, &img, &err);
    int m2 = strstr(err.msg, "cut.jpg: JPEG: data ends early (truncated file)") != NULL;
    int r3 = qvlm_image_decode(jpgp, njp * 2 / 3, "cut-progressive.jpg", NULL, &img, &err);
    int m3 = strstr(err.msg, "cut-progressive.jpg: JPEG: data ends early") != NULL;
    int r4 = qvlm_image_decode(webp, nw / 2, "cut.webp", NULL, &img, &err);
    int m4 = strstr(err.msg, "cut.webp: WebP:") != NULL;
    int r5 = qvlm_image_decode(png, 30, "header-only.png", NULL, &img, &err); /* inside IHDR */
    free(png), free(jpg), free(jpgp), WebPFree(webp), free(px), free(s);
    ASSERT_EQ_INT(r1, QVLM_E_CORRUPT);
    ASSERT_TRUE(m1);
    ASSERT_EQ_INT(r2, QVLM_E_CORRUPT);
    ASSERT_TRUE(m2);
    ASSERT_EQ_INT(r3, QVLM_E_CORRUPT);
    ASSERT_TRUE(m3);
    ASSERT_EQ_INT(r4, QVLM_E_CORRUPT);
    ASSERT_TRUE(m4);
    ASSERT_EQ_INT(r5, QVLM_E_CORRUPT);
    ASSERT_TRUE(img.rgb == NULL);
}

static void test_bad_corrupt(void) {
    qvlm_error err;
    qvlm_image img;
    struct png_spec sp = {.w = 16, .h = 16, .color_type = PNG_COLOR_TYPE_GRAY, .depth = 8};
    uint16_t *s = pattern(16, 16, 1, 255, 3);
    sp.samples = s;
    size_t n;
    uint8_t *png = encode_png(&sp, &n);
    png[n - 20] ^= 0x55; /* inside IDAT: its CRC no longer matches */
    int r1 = qvlm_image_decode(png, n, "bad-crc.png", NULL, &img, &err);
    int m1 = strstr(err.msg, "bad-crc.png: PNG: ") != NULL;
    free(png);
    free(s);
    ASSERT_EQ_INT(r1, QVLM_E_CORRUPT);
    ASSERT_TRUE(m1);
    /* JPEG: SOI then garbage */
    uint8_t junk[64] = {0xff, 0xd8, 0xff, 0xe0};
    for (int i = 4; i < 64; i++) junk[i] = (uint8_t)(i * 37);
    ASSERT_FAILS(qvlm_image_decode(junk, sizeof(junk), "junk.jpg", NULL, &img, &err), QVLM_E_CORRUPT, &err,
                 "junk.jpg: JPEG: ");
    /* WebP: a RIFF/WEBP header with a nonsense chunk */
    const uint8_t bad_webp[] = "RIFF\x1a\0\0\0WEBPVP8 \x0e\0\0\0garbage-garbage";
    ASSERT_FAILS(qvlm_image_decode(bad_webp, sizeof(bad_webp) - 1, "bad.webp", NULL, &img, &err), QVLM_E_CORRUPT,
                 &err, "bad.webp: WebP: ");
    ASSERT_TRUE(img.rgb == NULL);
}

static void test_bad_zero_size(void) {
    qvlm_error err;
    qvlm_image img;
    size_t n;
    uint8_t *png = png_header_only(0, 10, &n);
    ASSERT_FAILS(qvlm_image_decode(png, n, "zero.png", NULL, &img, &err), QVLM_E_CORRUPT, &err, "zero.png: PNG: ");
    free(png);
    ASSERT_TRUE(strstr(err.msg, "zero") != NULL);
}

/* A 65-byte PNG that claims 100000 x 100000 pixels and a 30-byte WebP that claims
 * 60000 x 60000 (libwebp itself rejects canvases of 2^32 pixels or more) are refused from the
 * header: the PNG's IDAT is garbage, so getting QVLM_E_LIMIT (not a zlib error) shows no
 * decoding was tried, and ASan would report a 30 GB allocation if one were attempted. */
static void test_bad_over_pixel_limit(void) {
    qvlm_error err;
    qvlm_image img;
    size_t n;
    uint8_t *png = png_header_only(100000, 100000, &n);
    ASSERT_EQ_INT(n, 65);
    int rc = qvlm_image_decode(png, n, "bomb.png", NULL, &img, &err);
    free(png);
    ASSERT_EQ_INT(rc, QVLM_E_LIMIT);
    ASSERT_STR_EQ(err.msg, "bomb.png: PNG image is 100000 x 100000 = 10000000000 pixels, over the limit of "
                           "67108864 pixels (refused before decoding)");
    /* VP8X: flags, then canvas width-1 and height-1 as 24-bit little-endian */
    uint8_t webp[30] = "RIFF\x16\0\0\0WEBPVP8X\x0a\0\0\0";
    uint32_t side = 60000 - 1;
    for (int i = 0; i < 3; i++) webp[24 + i] = webp[27 + i] = (uint8_t)(side >> (8 * i));
    ASSERT_FAILS(qvlm_image_decode(webp, sizeof(webp), "bomb.webp", NULL, &img, &err), QVLM_E_LIMIT, &err,
                 "bomb.webp: WebP image is 60000 x 60000 = 3600000000 pixels, over the limit");
    /* JPEG sides stop at 65535: patch an encoded file's SOF to claim 65000 x 65000 */
    uint8_t px[8 * 8 * 3] = {0};
    struct jpeg_spec sp = {.w = 8, .h = 8, .components = 3, .samples = px, .quality = 50};
    uint8_t *jpg = encode_jpeg(&sp, &n);
    for (size_t i = 0; i + 8 < n; i++)
        if (jpg[i] == 0xff && jpg[i + 1] == 0xc0) { /* SOF0: len(2) precision(1) height(2) width(2) */
            jpg[i + 5] = jpg[i + 7] = 65000 >> 8;
            jpg[i + 6] = jpg[i + 8] = 65000 & 0xff;
            break;
        }
    rc = qvlm_image_decode(jpg, n, "bomb.jpg", NULL, &img, &err);
    free(jpg);
    ASSERT_EQ_INT(rc, QVLM_E_LIMIT);
    ASSERT_CONTAINS(err.msg, "bomb.jpg: JPEG image is 65000 x 65000");
    /* a limit set by the caller */
    qvlm_image_limits lim = qvlm_image_limits_default();
    lim.max_pixels = 99;
    uint16_t s[100] = {0};
    struct png_spec p10 = {.w = 10, .h = 10, .color_type = PNG_COLOR_TYPE_GRAY, .depth = 8, .samples = s};
    png = encode_png(&p10, &n);
    rc = qvlm_image_decode(png, n, "ten.png", &lim, &img, &err);
    ASSERT_EQ_INT(rc, QVLM_E_LIMIT);
    lim.max_pixels = 100;
    rc = qvlm_image_decode(png, n, "ten.png", &lim, &img, &err);
    free(png);
    ASSERT_EQ_INT(rc, QVLM_OK);
    qvlm_image_free(&img);
}

static void test_bad_aspect_and_small(void) {
    qvlm_error err;
    qvlm_image img;
    uint16_t s[402] = {0};
    struct png_spec wide = {.w = 201, .h = 1, .color_type = PNG_COLOR_TYPE_GRAY, .depth = 8, .samples = s};
    struct png_spec ok200 = {.w = 1, .h = 200, .color_type = PNG_COLOR_TYPE_GRAY, .depth = 8, .samples = s};
    size_t n1, n2;
    uint8_t *p1 = encode_png(&wide, &n1), *p2 = encode_png(&ok200, &n2);
    int r1 = qvlm_image_decode(p1, n1, "image 3 of request", NULL, &img, &err);
    char m1[sizeof(err.msg)];
    memcpy(m1, err.msg, sizeof(m1));
    int r2 = qvlm_image_decode(p2, n2, "tall.png", NULL, &img, &err);
    qvlm_image_free(&img);
    qvlm_image_limits lim = qvlm_image_limits_default();
    lim.min_side = 32;
    int r3 = qvlm_image_decode(p2, n2, "tall.png", &lim, &img, &err);
    free(p1), free(p2);
    ASSERT_EQ_INT(r1, QVLM_E_INVALID);
    ASSERT_STR_EQ(m1, "image 3 of request: PNG image is 201 x 1, aspect ratio 201.0 is over 200");
    ASSERT_EQ_INT(r2, QVLM_OK);
    ASSERT_EQ_INT(r3, QVLM_E_INVALID);
    ASSERT_STR_EQ(err.msg, "tall.png: PNG image is 1 x 200, a side is under 32 pixels");
}

static void test_bad_animated_webp(void) {
    /* VP8X with the animation flag (bit 1) and an ANIM chunk, 2 x 2 canvas */
    const uint8_t anim[] = "RIFF\x24\0\0\0WEBPVP8X\x0a\0\0\0\x02\0\0\0\x01\0\0\x01\0\0"
                           "ANIM\x06\0\0\0\0\0\0\0\0\0";
    qvlm_error err;
    qvlm_image img;
    ASSERT_FAILS(qvlm_image_decode(anim, sizeof(anim) - 1, "anim.webp", NULL, &img, &err), QVLM_E_UNSUPPORTED,
                 &err, "anim.webp: WebP: animated images are not supported");
}

/* ---- hash across encodings --------------------------------------------------------------- */

static void test_hash_png_equals_lossless_webp(void) {
    qvlm_error err;
    qvlm_preprocess_config cfg;
    ASSERT_OK(qvlm_preprocess_config_load(QVLM_FIXTURES "/tiny-dense/model", &cfg, &err), &err);
    uint16_t *s = pattern(40, 30, 3, 255, 11);
    uint8_t *rgb = malloc(40 * 30 * 3);
    for (int i = 0; i < 40 * 30 * 3; i++) rgb[i] = (uint8_t)s[i];
    struct png_spec sp = {.w = 40, .h = 30, .color_type = PNG_COLOR_TYPE_RGB, .depth = 8, .samples = s};
    size_t np, nw;
    uint8_t *png = encode_png(&sp, &np), *webp = encode_webp_lossless(rgb, 40, 30, 0, &nw);
    qvlm_image a = {0}, b = {0};
    int ok = qvlm_image_decode(png, np, "a.png", NULL, &a, &err) == QVLM_OK &&
             qvlm_image_decode(webp, nw, "a.webp", NULL, &b, &err) == QVLM_OK;
    qvlm_hash128 ha = ok ? qvlm_image_hash(&a, &cfg) : (qvlm_hash128){0, 0};
    qvlm_hash128 hb = ok ? qvlm_image_hash(&b, &cfg) : (qvlm_hash128){1, 0};
    int equal = qvlm_hash128_eq(ha, hb);
    int changed = 0, transposed = 0;
    if (ok) {
        b.rgb[(17 * 40 + 23) * 3 + 1] ^= 1; /* one channel of one pixel, by one */
        changed = !qvlm_hash128_eq(ha, qvlm_image_hash(&b, &cfg));
        b.rgb[(17 * 40 + 23) * 3 + 1] ^= 1;
        b.width = 30, b.height = 40; /* same bytes, other shape */
        transposed = !qvlm_hash128_eq(ha, qvlm_image_hash(&b, &cfg));
        b.width = 40, b.height = 30;
    }
    qvlm_image_free(&a), qvlm_image_free(&b);
    free(png), WebPFree(webp), free(rgb), free(s);
    ASSERT_TRUE(ok);
    ASSERT_TRUE(equal);
    ASSERT_TRUE(changed);
    ASSERT_TRUE(transposed);
}

int main(void) {
    RUN(test_png_grey_all_depths);
    RUN(test_png_colour_types_8_16);
    RUN(test_png_palette_and_trns);
    RUN(test_png_interlaced);
    RUN(test_png_fixture_file);
    RUN(test_jpeg_rgb_and_grey);
    RUN(test_jpeg_progressive_equals_baseline);
    RUN(test_jpeg_cmyk);
    RUN(test_jpeg_exif_orientation_ignored);
    RUN(test_webp_lossless_lossy_alpha);
    RUN(test_bad_empty_unknown);
    RUN(test_bad_truncated);
    RUN(test_bad_corrupt);
    RUN(test_bad_zero_size);
    RUN(test_bad_over_pixel_limit);
    RUN(test_bad_aspect_and_small);
    RUN(test_bad_animated_webp);
    RUN(test_hash_png_equals_lossless_webp);
    return qtest_done();
}
