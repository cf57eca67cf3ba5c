/* conv1d.c - causal depthwise conv1d + SiLU with a rolling state (qwen35-arch §3.3 step 2, §4).
 *
 * For channel c, the inputs are the K-1 remembered ones (state) followed by this call's T:
 *   in = [state[0..K-2][c], x[0..T-1][c]],   y[t][c] = silu(sum_j w[c][j] * in[t+j])
 * and the new state is the last K-1 inputs. The state is what makes a checkpoint at position P
 * exact: it holds the pre-conv qkv of tokens P-3..P-1. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

struct conv_job {
    float *y;
    const float *x;
    int64_t ldx;
    float *state;
    const qvlm_tensor *w;
    int64_t T, C, K;
};

#define MAX_K 16 /* config validation bounds linear_conv_kernel_dim */

static void conv_task(void *p, int ith, int nth) {
    struct conv_job *j = p;
    long c0, c1;
    qvlm_split_rows(j->C, ith, nth, &c0, &c1);
    const int64_t K = j->K, T = j->T, C = j->C;
    for (long c = c0; c < c1; c++) {
        float w[MAX_K], win[MAX_K];
        for (int64_t k = 0; k < K; k++) w[k] = cpu_weight_at(j->w, c * K + k);
        for (int64_t k = 0; k < K - 1; k++) win[k] = j->state[k * C + c];
        for (int64_t t = 0; t < T; t++) {
            win[K - 1] = j->x[t * j->ldx + c];
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc += w[k] * win[k];
            j->y[t * C + c] = acc / (1.0f + expf(-acc));
            for (int64_t k = 0; k + 1 < K; k++) win[k] = win[k + 1];
        }
        for (int64_t k = 0; k < K - 1; k++) j->state[k * C + c] = win[k];
    }
}

void cpu_conv1d_silu(qvlm_stream *s, float *y, const float *x, int64_t ldx, float *state, const qvlm_tensor *w,
                     int64_t T, int64_t C, int64_t K) {
    struct conv_job j = {y, x, ldx, state, w, T, C, K};
    cpu_parallel(s, C, 256, conv_task, &j);
}
