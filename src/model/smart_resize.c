/* smart_resize.c - the reference's target size for an image (qwen35-arch.md §6 step 2), as in
 * transformers 5's qwen2_vl smart_resize:
 *
 *   reject if max(h, w) / min(h, w) > 200
 *   hb = round(h / f)·f ; wb = round(w / f)·f                  (Python round: half to even)
 *   if hb·wb > max: β = sqrt(h·w / max); hb = max(f, floor(h / β / f)·f); same for wb
 *   elif hb·wb < min: β = sqrt(min / (h·w)); hb = ceil(h·β / f)·f; same for wb
 *
 * Every step is the same IEEE double operation as Python's: int / int true division is
 * correctly rounded there and here (both operands are exact doubles below 2^53), nearbyint()
 * in the default rounding mode is round-half-to-even, and the products are exact int64.
 */
#include <limits.h>
#include <math.h>

#include "model/image_preprocess.h"

/* Python's round(x) for a float: nearest integer, ties to even. */
static int64_t round_half_even(double x) { return (int64_t)nearbyint(x); }

qvlm_status qvlm_smart_resize(int h, int w, const qvlm_preprocess_config *cfg, int *h_out, int *w_out,
                              qvlm_error *err) {
    if (h < 1 || w < 1)
        return qvlm_errorf(err, QVLM_E_INVALID, "smart_resize: image is %d x %d (sides must be >= 1)", w, h);
    const int64_t f = (int64_t)cfg->patch_size * cfg->merge_size;
    const int64_t lo = cfg->min_pixels, hi = cfg->max_pixels, hw = (int64_t)h * w;
    /* Bounds that keep every double below 2^53 and every cast in range. */
    if (f < 1 || f > 65536 || lo < 1 || hi < lo || hi > ((int64_t)1 << 40))
        return qvlm_errorf(err, QVLM_E_INVALID,
                           "smart_resize: invalid configuration (factor %lld, pixels %lld..%lld)", (long long)f,
                           (long long)lo, (long long)hi);
    double aspect = (double)(h > w ? h : w) / (double)(h > w ? w : h);
    if (aspect > 200.0)
        return qvlm_errorf(err, QVLM_E_INVALID,
                           "image is %d x %d: aspect ratio %.1f is over 200 (the processor refuses it)", w, h,
                           aspect);
    int64_t hb = round_half_even((double)h / (double)f) * f;
    int64_t wb = round_half_even((double)w / (double)f) * f;
    if (hb * wb > hi) {
        double beta = sqrt((double)hw / (double)hi);
        hb = (int64_t)floor((double)h / beta / (double)f) * f;
        wb = (int64_t)floor((double)w / beta / (double)f) * f;
        if (hb < f) hb = f;
        if (wb < f) wb = f;
    } else if (hb * wb < lo) {
        double beta = sqrt((double)lo / (double)hw);
        hb = (int64_t)ceil((double)h * beta / (double)f) * f;
        wb = (int64_t)ceil((double)w * beta / (double)f) * f;
    }
    if (hb < 1 || wb < 1 || hb > INT_MAX || wb > INT_MAX)
        return qvlm_errorf(err, QVLM_E_INVALID, "smart_resize: %d x %d gives %lld x %lld", w, h,
                           (long long)wb, (long long)hb);
    *h_out = (int)hb;
    *w_out = (int)wb;
    return QVLM_OK;
}
