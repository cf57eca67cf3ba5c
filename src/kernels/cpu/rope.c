/* rope.c - rotary position embeddings on the CPU.
 *
 * Text (qwen35-arch §3.4 step 3): rotate-half ("NeoX") RoPE on the first rot_dim dims of each
 * head, pairs (i, i + rot_dim/2), angle = p_axis(i) * theta^(-2i/rot_dim), where the axis of
 * frequency i is interleaved between the (t, h, w) positions.
 * Vision (§5 step 3): rotate-half over the whole head; the first half of the frequencies
 * follow the patch row, the second half the patch column.
 * Angles and their cos/sin are computed in f32, as transformers does. */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

#define MAX_HALF 256 /* rot_dim/2 and head_dim/2 are bounded by config validation */

/* torch: 1.0 / (base ** (arange(0, dim, 2, dtype=float32) / dim)) in f32; optionally rounded
 * to bf16 (see qvlm_rope_params.freq_bf16). */
static float inv_freq(double theta, int64_t i, int64_t dim, bool round_bf16) {
    float e = (float)(2 * i) / (float)dim;
    float f = 1.0f / powf((float)theta, e);
    return round_bf16 ? qvlm_bf16_to_f32(qvlm_f32_to_bf16(f)) : f;
}

static void rotate(float *x, const float *c, const float *s, int64_t half) {
    for (int64_t i = 0; i < half; i++) {
        float a = x[i], b = x[i + half];
        x[i] = a * c[i] - b * s[i];
        x[i + half] = b * c[i] + a * s[i];
    }
}

struct rope_job {
    float *x;
    int64_t ldx, n_heads, head_stride;
    const int32_t *pos; /* text: [3][T]; vision: [N][2] */
    int64_t T;
    const qvlm_rope_params *p;
    int64_t head_dim; /* vision */
    double theta;
    bool freq_bf16;
};

static void rope_text_task(void *arg, int ith, int nth) {
    struct rope_job *j = arg;
    const int64_t half = j->p->rot_dim / 2;
    float inv[MAX_HALF], c[MAX_HALF], s[MAX_HALF];
    int axis[MAX_HALF];
    for (int64_t i = 0; i < half; i++) {
        inv[i] = inv_freq(j->p->theta, i, j->p->rot_dim, j->p->freq_bf16);
        axis[i] = (i % 3 == 1 && i < 3 * j->p->section[1]) ? 1 : (i % 3 == 2 && i < 3 * j->p->section[2]) ? 2 : 0;
    }
    long t0, t1;
    qvlm_split_rows(j->T, ith, nth, &t0, &t1);
    for (long t = t0; t < t1; t++) {
        for (int64_t i = 0; i < half; i++) {
            float ang = (float)j->pos[axis[i] * j->T + t] * inv[i];
            c[i] = cosf(ang);
            s[i] = sinf(ang);
        }
        for (int64_t h = 0; h < j->n_heads; h++) rotate(j->x + t * j->ldx + h * j->head_stride, c, s, half);
    }
}

void cpu_rope_multimodal(qvlm_stream *s, float *x, int64_t ldx, int64_t n_heads, int64_t head_stride,
                         const int32_t *pos, int64_t T, const qvlm_rope_params *p) {
    struct rope_job j = {.x = x, .ldx = ldx, .n_heads = n_heads, .head_stride = head_stride, .pos = pos, .T = T, .p = p};
    cpu_parallel(s, T, 16, rope_text_task, &j);
}

static void rope_vision_task(void *arg, int ith, int nth) {
    struct rope_job *j = arg;
    const int64_t half = j->head_dim / 2, quarter = j->head_dim / 4;
    float inv[MAX_HALF], c[MAX_HALF], s[MAX_HALF];
    for (int64_t i = 0; i < quarter; i++) inv[i] = inv_freq(j->theta, i, half, j->freq_bf16);
    long r0, r1;
    qvlm_split_rows(j->T, ith, nth, &r0, &r1);
    for (long r = r0; r < r1; r++) {
        for (int64_t i = 0; i < half; i++) {
            float ang = (float)j->pos[r * 2 + (i < quarter ? 0 : 1)] * inv[i % quarter];
            c[i] = cosf(ang);
            s[i] = sinf(ang);
        }
        for (int64_t h = 0; h < j->n_heads; h++) rotate(j->x + r * j->ldx + h * j->head_stride, c, s, half);
    }
}

void cpu_rope_vision(qvlm_stream *s, float *x, int64_t ldx, int64_t n_heads, int64_t head_stride,
                     int64_t head_dim, const int32_t *rc, int64_t N, double theta, bool freq_bf16) {
    struct rope_job j = {.x = x, .ldx = ldx, .n_heads = n_heads, .head_stride = head_stride, .pos = rc, .T = N,
                         .head_dim = head_dim, .theta = theta, .freq_bf16 = freq_bf16};
    cpu_parallel(s, N, 16, rope_vision_task, &j);
}
