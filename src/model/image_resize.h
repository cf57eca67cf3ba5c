/* image_resize.h - antialiased resize of 8-bit RGB images, bit-exact with PyTorch's uint8 CPU
 * kernels for F.interpolate(..., mode="bicubic"/"bilinear", antialias=True,
 * align_corners=False) as called by torchvision's resize (transformers' default backend).
 *
 * The algorithm (PyTorch's, itself Pillow's), in our words:
 *  - separable: a horizontal pass (only if the width changes) into a uint8 image of
 *    src_h × dst_w, then a vertical pass (only if the height changes); each pass rounds and
 *    clamps to uint8, so the intermediate is quantised exactly like the reference;
 *  - per output index i along a dimension: scale = in/out (double), support = 2·max(scale, 1)
 *    for bicubic (1·max(scale, 1) for bilinear), center = scale·(i + 0.5), taps
 *    [trunc(center - support + 0.5), trunc(center + support + 0.5)) clipped to the input,
 *    weight_j = filter((j + xmin - center + 0.5) / max(scale, 1)) normalised to sum 1; the
 *    bicubic filter is Keys' cubic with a = -0.5 (Pillow's), the bilinear one the triangle;
 *  - weights become int16 with `precision` fraction bits, the largest precision (<= 22) at
 *    which the largest weight of the dimension still rounds below 2^15 after one more bit;
 *    each weight is rounded half away from zero;
 *  - an output sample is clamp((2^(precision-1) + sum_j w_j·pixel_j) >> precision, 0, 255) in
 *    int32 arithmetic.
 */
#ifndef QVLM_MODEL_IMAGE_RESIZE_H
#define QVLM_MODEL_IMAGE_RESIZE_H

#include <stdint.h>

#include "core/status.h"
#include "core/threads.h"

typedef enum qvlm_resize_filter {
    QVLM_FILTER_BILINEAR,
    QVLM_FILTER_BICUBIC,
} qvlm_resize_filter;

/* Resize src [src_h][src_w][3] into dst [dst_h][dst_w][3] (caller-allocated; must not overlap
 * src). Equal sizes copy. pool may be NULL. Returns QVLM_E_INVALID for a side < 1,
 * QVLM_E_NOMEM for scratch; dst is unspecified on failure. */
qvlm_status qvlm_resize_rgb_u8(const uint8_t *src, int src_w, int src_h, uint8_t *dst, int dst_w,
                               int dst_h, qvlm_resize_filter filter, qvlm_pool *pool, qvlm_error *err);

#endif /* QVLM_MODEL_IMAGE_RESIZE_H */
