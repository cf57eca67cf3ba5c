/* conv1d.c - causal depthwise conv1d + SiLU with a rolling state (qwen35-arch §3.3 step 2, §4).
 *
 * For channel c, the inputs are the K-1 remembered ones (state) followed by this call's T:
 *   in = [state[0..K-2][c], x[0..T-1][c]],   y[t][c] = silu(sum_j w[c][j] * in[t+j])
 * (an fmaf chain over j, rowops.h) and the new state is the last K-1 inputs. The state is what
 * makes a checkpoint at position P exact: it holds the pre-conv qkv of tokens P-3..P-1.
 * Threads split channels in blocks of 16; each widens and transposes its own weights to
 * [K][C] in the shared scratch, so the kernels read 16 channels of one tap at a time. */
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/rowops.h"

struct conv_job {
    qvlm_conv_args a;
    const qvlm_tensor *w;
    qvlm_isa isa;
};

static void conv_task(void *p, int ith, int nth) {
    struct conv_job *j = p;
    const qvlm_conv_args *a = &j->a;
    long b0, b1;
    qvlm_split_rows((long)((a->C + 15) / 16), ith, nth, &b0, &b1);
    int64_t c0 = b0 * 16, c1 = QVLM_MIN((int64_t)b1 * 16, a->C);
    if (c0 >= c1) return;
    float *wt = (float *)a->wt;
    const int64_t K = a->K, C = a->C;
    if (j->w->dtype == QVLM_DTYPE_BF16) { /* the common case, without a dtype switch per element */
        const qvlm_bf16 *w = j->w->data;
        for (int64_t c = c0; c < c1; c++)
            for (int64_t k = 0; k < K; k++) wt[k * C + c] = qvlm_bf16_to_f32(w[c * K + k]);
    } else {
        for (int64_t c = c0; c < c1; c++)
            for (int64_t k = 0; k < K; k++) wt[k * C + c] = cpu_weight_at(j->w, c * K + k);
    }
#if defined(__x86_64__)
    if (j->isa >= QVLM_ISA_AVX512) {
        qvlm_conv_avx512(a, c0, c1);
        return;
    }
#endif
    qvlm_conv_ref(a, c0, c1);
}

void cpu_conv1d_silu(qvlm_stream *s, float *y, const float *x, int64_t ldx, float *state, const qvlm_tensor *w,
                     int64_t T, int64_t C, int64_t K) {
    if (QVLM_NEVER(K < 1 || K > QVLM_CONV_MAX_K)) return;
    float *wt = cpu_scratch(s, (size_t)(K * C) * sizeof(float), 1);
    if (QVLM_NEVER(wt == NULL)) return;
    struct conv_job j = {{y, x, ldx, state, wt, T, C, K}, w, cpu_stream_of(s)->be->cpu.isa};
    cpu_parallel(s, (C + 15) / 16, T >= 16 ? 4 : 64, conv_task, &j);
}
