/* attention.cu - softmax attention in f32 with an online softmax over key tiles (flash
 * style: memory linear in the keys), for the text tower (causal GQA over paged KV, §3.4) and
 * the vision tower (bidirectional inside each image's segment, §5). kernels/cpu/attention.c is
 * the reference.
 *
 * One kernel serves both: a block takes 32 query rows (rows of one KV head's group for text,
 * patches of one head for vision) and walks 32-key tiles staged in shared memory; 8 threads
 * share a query row, each holding 4 of a tile's scores and every 8th output dimension. For few
 * query rows (decode) the keys are split over blocks (grid z) and a second kernel merges the
 * partial (max, sum, weighted values) of each row. Positions come from device memory (pos0), so
 * a recorded decode step replays with new positions. */
#include "kernels/cuda/cuda_common.cuh"

#define BQ 32
#define BK 32
#define NT 256

enum { MODE_TEXT = 0, MODE_VISION = 1 };

struct attn_p {
    float *out, *partial;
    const float *q;   /* text: q rows at ldq; vision: qkv */
    const float *gate; /* text, may be NULL: output row r times sigmoid(gate[r * ldg + d]) */
    int64_t ldg;
    void *const *blocks;
    const int64_t *pos0, *seg;
    int64_t ldq, block_tokens, k_off, v_off, T, n_heads, n_kv_heads, D, n_seg, n_rows, n_splits, kps;
    float scale;
};

/* An output value, times the head's gate when there is one (elementwise.cu's sigmoid_mul). */
__device__ __forceinline__ float gated(const float *gate, int64_t ldg, int64_t row, int64_t d, float o) {
    return gate ? sigmoid_gate(o, gate[row * ldg + d]) : o;
}

/* Row r of a block: its query, output row index, and key range [ks, ke). */
template <int MODE>
__device__ __forceinline__ void row_info(const attn_p &p, int64_t r, int64_t hy, int64_t pos0, const float **qp,
                                         int64_t *orow, int64_t *ks, int64_t *ke) {
    if (MODE == MODE_TEXT) {
        const int64_t G = p.n_heads / p.n_kv_heads, t = r / G, h = hy * G + r % G;
        *qp = p.q + t * p.ldq + h * p.D;
        *orow = t * p.n_heads + h;
        *ks = 0;
        *ke = pos0 + t + 1;
    } else {
        int64_t lo = 0, hi = p.n_seg; /* largest s with seg[s] <= r */
        while (hi - lo > 1) {
            int64_t mid = (lo + hi) / 2;
            if (p.seg[mid] <= r) lo = mid;
            else hi = mid;
        }
        const int64_t HD = p.n_heads * p.D;
        *qp = p.q + r * 3 * HD + hy * p.D;
        *orow = r * p.n_heads + hy;
        *ks = p.seg[lo];
        *ke = p.seg[lo + 1];
    }
}

template <int MODE>
__device__ __forceinline__ const float *key_row(const attn_p &p, int64_t key, int64_t hy, bool v) {
    if (MODE == MODE_TEXT) {
        const int64_t bt = p.block_tokens, b = key / bt, off = key % bt;
        const char *blk = (const char *)p.blocks[b] + (v ? p.v_off : p.k_off);
        return (const float *)blk + (hy * bt + off) * p.D;
    } else {
        const int64_t HD = p.n_heads * p.D;
        return p.q + key * 3 * HD + (v ? 2 : 1) * HD + hy * p.D;
    }
}

template <int DJ, int MODE>
__global__ void __launch_bounds__(NT) k_attn(attn_p p) {
    QCU_PDL_ENTRY();
    QVLM_DYN_SMEM(float, sm);
    const int64_t D = p.D, ldqs = D + 1;
    float *Qs = sm, *Ks = Qs + BQ * ldqs, *Vs = Ks + BK * ldqs, *Ps = Vs + BK * D;
    __shared__ const float *rq[BQ];
    __shared__ int64_t rks[BQ], rke[BQ], rorow[BQ];
    __shared__ int64_t range[2];
    const int tid = threadIdx.x, qi = tid >> 3, l8 = tid & 7;
    const int64_t hy = blockIdx.y, split = blockIdx.z;
    const int64_t R = MODE == MODE_TEXT ? p.T * (p.n_heads / p.n_kv_heads) : p.n_rows;
    const int64_t pos0 = MODE == MODE_TEXT ? p.pos0[0] : 0;
    const int64_t r = (int64_t)blockIdx.x * BQ + qi;
    const bool rvalid = r < R;
    if (l8 == 0) {
        const float *qp = NULL;
        int64_t orow = 0, ks = INT64_MAX, ke = 0;
        if (rvalid) row_info<MODE>(p, r, hy, pos0, &qp, &orow, &ks, &ke);
        rq[qi] = qp, rks[qi] = ks, rke[qi] = ke, rorow[qi] = orow;
    }
    __syncthreads();
    if (tid == 0) {
        int64_t lo = INT64_MAX, hi = 0;
        for (int i = 0; i < BQ; i++) {
            lo = rks[i] < lo ? rks[i] : lo;
            hi = rke[i] > hi ? rke[i] : hi;
        }
        if (p.n_splits > 1) {
            const int64_t s0 = split * p.kps, s1 = s0 + p.kps;
            lo = lo > s0 ? lo : s0;
            hi = hi < s1 ? hi : s1;
        }
        range[0] = lo, range[1] = hi;
    }
    for (int e = tid; e < BQ * (int)D; e += NT) {
        const int i = e / (int)D, d = e - i * (int)D;
        Qs[i * ldqs + d] = rq[i] ? rq[i][d] : 0.0f;
    }
    __syncthreads();
    const int64_t k_lo = range[0], k_hi = range[1];
    const int64_t ks = rks[qi], ke = rke[qi];
    float m = -INFINITY, l = 0.0f, acc[DJ];
#pragma unroll
    for (int j = 0; j < DJ; j++) acc[j] = 0.0f;

    __shared__ const float *kp[BK], *vp[BK];
    const int Di = (int)D, D4 = Di / 4;
    const bool vec = (Di & 3) == 0;
    for (int64_t kb = k_lo; kb < k_hi; kb += BK) {
        if (tid < BK) {
            const int64_t key = kb + tid;
            kp[tid] = key < k_hi ? key_row<MODE>(p, key, hy, false) : NULL;
            vp[tid] = key < k_hi ? key_row<MODE>(p, key, hy, true) : NULL;
        }
        __syncthreads();
        if (vec) {
            for (int e = tid; e < BK * D4; e += NT) {
                const int j = e / D4, c = e - j * D4;
                float4 kv = {0.0f, 0.0f, 0.0f, 0.0f}, vv = {0.0f, 0.0f, 0.0f, 0.0f};
                if (kp[j]) {
                    kv = ((const float4 *)kp[j])[c];
                    vv = ((const float4 *)vp[j])[c];
                }
                float *kd = Ks + j * ldqs + 4 * c;
                kd[0] = kv.x, kd[1] = kv.y, kd[2] = kv.z, kd[3] = kv.w;
                *(float4 *)(Vs + j * Di + 4 * c) = vv;
            }
        } else {
            for (int e = tid; e < BK * Di; e += NT) {
                const int j = e / Di, d = e - j * Di;
                Ks[j * ldqs + d] = kp[j] ? kp[j][d] : 0.0f;
                Vs[j * Di + d] = vp[j] ? vp[j][d] : 0.0f;
            }
        }
        __syncthreads();
        float sc[4];
        bool ok[4];
        float mt = -INFINITY;
#pragma unroll
        for (int mm = 0; mm < 4; mm++) {
            const int kj = l8 + 8 * mm;
            const int64_t key = kb + kj;
            ok[mm] = rvalid && key >= ks && key < ke && key < k_hi;
            float dot = 0.0f;
            if (ok[mm])
                for (int d = 0; d < Di; d++) dot += Qs[qi * ldqs + d] * Ks[kj * ldqs + d];
            sc[mm] = dot * p.scale;
            if (ok[mm]) mt = fmaxf(mt, sc[mm]);
        }
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 2));
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 4));
        const float mnew = fmaxf(m, mt);
        float ps = 0.0f, pv[4];
#pragma unroll
        for (int mm = 0; mm < 4; mm++) {
            pv[mm] = ok[mm] ? expf(sc[mm] - mnew) : 0.0f;
            ps += pv[mm];
            Ps[qi * (BK + 1) + l8 + 8 * mm] = pv[mm];
        }
        ps += __shfl_xor_sync(0xffffffffu, ps, 1);
        ps += __shfl_xor_sync(0xffffffffu, ps, 2);
        ps += __shfl_xor_sync(0xffffffffu, ps, 4);
        if (mnew != -INFINITY) {
            const float corr = expf(m - mnew); /* 0 on the first tile with a valid key */
            l = l * corr + ps;
#pragma unroll
            for (int j = 0; j < DJ; j++) acc[j] *= corr;
            m = mnew;
        }
        __syncwarp();
        for (int kk = 0; kk < BK; kk++) {
            const float pk = Ps[qi * (BK + 1) + kk];
#pragma unroll
            for (int j = 0; j < DJ; j++) {
                const int64_t d = l8 + 8 * j;
                if (d < D) acc[j] += pk * Vs[kk * D + d];
            }
        }
        __syncthreads();
    }
    if (!rvalid) return;
    const int64_t orow = rorow[qi];
    if (p.n_splits == 1) {
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
        for (int j = 0; j < DJ; j++) {
            const int64_t d = l8 + 8 * j;
            if (d < D) p.out[orow * D + d] = gated(p.gate, p.ldg, orow, d, acc[j] * inv);
        }
    } else {
        float *pp = p.partial + (orow * p.n_splits + split) * (D + 2);
        if (l8 == 0) pp[0] = m, pp[1] = l;
#pragma unroll
        for (int j = 0; j < DJ; j++) {
            const int64_t d = l8 + 8 * j;
            if (d < D) pp[2 + d] = acc[j];
        }
    }
}

/* Few query rows (decode): one block per (KV head, key split), 4 warps taking every 4th key;
 * a lane holds 4*NV dimensions of each of the R query rows (R = T * group <= 8) and of their
 * accumulators; a key's score is a warp reduction. The warps' states merge in shared memory
 * at the end. Reads each K/V row once for the whole group, with 16-byte loads. */
#define DEC_WARPS 4
template <int R, int NV>
__global__ void __launch_bounds__(DEC_WARPS * 32) k_attn_dec(attn_p p) {
    QCU_PDL_ENTRY();
    __shared__ float sm_m[DEC_WARPS][R], sm_l[DEC_WARPS][R];
    __shared__ float sm_acc[DEC_WARPS][R][NV * 128];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t hy = blockIdx.x, split = blockIdx.y;
    const int G = (int)(p.n_heads / p.n_kv_heads), nrows = (int)p.T * G, D = (int)p.D;
    const int64_t pos0 = p.pos0[0];
    const int64_t s0 = split * p.kps, kend = pos0 + p.T;
    const int64_t s1 = s0 + p.kps < kend ? s0 + p.kps : kend;
    float q[R][NV * 4], acc[R][NV * 4], m[R], l[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int t = r / G, h = (int)hy * G + r % G;
        const float *qp = p.q + t * p.ldq + (int64_t)h * D;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const int d = (lane + 32 * i) * 4;
            float4 v = {0.0f, 0.0f, 0.0f, 0.0f};
            if (r < nrows && d < D) v = *(const float4 *)(qp + d);
            q[r][4 * i] = v.x, q[r][4 * i + 1] = v.y, q[r][4 * i + 2] = v.z, q[r][4 * i + 3] = v.w;
            acc[r][4 * i] = acc[r][4 * i + 1] = acc[r][4 * i + 2] = acc[r][4 * i + 3] = 0.0f;
        }
        m[r] = -INFINITY, l[r] = 0.0f;
    }
    /* Keys in groups of KU per warp: all their K/V loads are issued before the first score
     * is needed, and the softmax state is rescaled once per group. */
    const int KU = 4;
    for (int64_t kb = s0 + (int64_t)warp * KU; kb < s1; kb += (int64_t)DEC_WARPS * KU) {
        float4 kv[KU][NV], vv[KU][NV];
#pragma unroll
        for (int j = 0; j < KU; j++) {
            const int64_t key = kb + j;
            const bool kin = key < s1;
            const float *kp = kin ? key_row<MODE_TEXT>(p, key, hy, false) : NULL;
            const float *vp = kin ? key_row<MODE_TEXT>(p, key, hy, true) : NULL;
#pragma unroll
            for (int i = 0; i < NV; i++) {
                const int d = (lane + 32 * i) * 4;
                kv[j][i] = vv[j][i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (kin && d < D) {
                    kv[j][i] = *(const float4 *)(kp + d);
                    vv[j][i] = *(const float4 *)(vp + d);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            if (r >= nrows) break;
            float sc[KU], mt = -INFINITY;
#pragma unroll
            for (int j = 0; j < KU; j++) {
                float dot = 0.0f;
#pragma unroll
                for (int i = 0; i < NV; i++)
                    dot += q[r][4 * i] * kv[j][i].x + q[r][4 * i + 1] * kv[j][i].y + q[r][4 * i + 2] * kv[j][i].z +
                           q[r][4 * i + 3] * kv[j][i].w;
                dot = warp_sum(dot) * p.scale;
                /* causal: row t sees keys <= pos0 + t; keys past the split are out too */
                const bool ok = kb + j < s1 && kb + j <= pos0 + r / G;
                sc[j] = ok ? dot : -INFINITY;
                mt = fmaxf(mt, sc[j]);
            }
            if (mt == -INFINITY) continue;
            const float mnew = fmaxf(m[r], mt), corr = expf(m[r] - mnew);
            float e[KU], es = 0.0f;
#pragma unroll
            for (int j = 0; j < KU; j++) {
                e[j] = sc[j] == -INFINITY ? 0.0f : expf(sc[j] - mnew);
                es += e[j];
            }
            l[r] = l[r] * corr + es;
#pragma unroll
            for (int i = 0; i < NV; i++) {
                float a0 = acc[r][4 * i] * corr, a1 = acc[r][4 * i + 1] * corr, a2 = acc[r][4 * i + 2] * corr,
                      a3 = acc[r][4 * i + 3] * corr;
#pragma unroll
                for (int j = 0; j < KU; j++) {
                    a0 += e[j] * vv[j][i].x, a1 += e[j] * vv[j][i].y, a2 += e[j] * vv[j][i].z, a3 += e[j] * vv[j][i].w;
                }
                acc[r][4 * i] = a0, acc[r][4 * i + 1] = a1, acc[r][4 * i + 2] = a2, acc[r][4 * i + 3] = a3;
            }
            m[r] = mnew;
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        if (lane == 0) sm_m[warp][r] = m[r], sm_l[warp][r] = l[r];
#pragma unroll
        for (int i = 0; i < NV; i++)
#pragma unroll
            for (int c = 0; c < 4; c++) sm_acc[warp][r][(lane + 32 * i) * 4 + c] = acc[r][4 * i + c];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < nrows * D; e += blockDim.x) {
        const int r = e / D, d = e - r * D;
        float M = -INFINITY;
        for (int w = 0; w < DEC_WARPS; w++)
            if (sm_l[w][r] > 0.0f) M = fmaxf(M, sm_m[w][r]);
        float L = 0.0f, O = 0.0f;
        for (int w = 0; w < DEC_WARPS; w++)
            if (sm_l[w][r] > 0.0f) {
                const float f = expf(sm_m[w][r] - M);
                L += sm_l[w][r] * f;
                O += sm_acc[w][r][d] * f;
            }
        const int t = r / G, h = (int)hy * G + r % G;
        const int64_t orow = (int64_t)t * p.n_heads + h;
        if (p.n_splits == 1) {
            p.out[orow * D + d] = gated(p.gate, p.ldg, orow, d, L > 0.0f ? O / L : 0.0f);
        } else {
            float *pp = p.partial + (orow * p.n_splits + split) * (D + 2);
            if (d == 0) pp[0] = M, pp[1] = L;
            pp[2 + d] = O;
        }
    }
}

/* Merge the n_splits partial results of each output row. */
__global__ void k_attn_combine(float *out, const float *partial, int64_t n_splits, int64_t D, const float *gate,
                               int64_t ldg) {
    QCU_PDL_ENTRY();
    const int64_t row = blockIdx.x;
    const float *pp = partial + row * n_splits * (D + 2);
    float M = -INFINITY;
    for (int64_t s = 0; s < n_splits; s++)
        if (pp[s * (D + 2) + 1] > 0.0f) M = fmaxf(M, pp[s * (D + 2)]);
    float L = 0.0f;
    for (int64_t s = 0; s < n_splits; s++) {
        const float ls = pp[s * (D + 2) + 1];
        if (ls > 0.0f) L += ls * expf(pp[s * (D + 2)] - M);
    }
    const float inv = L > 0.0f ? 1.0f / L : 0.0f;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        float o = 0.0f;
        for (int64_t s = 0; s < n_splits; s++) {
            const float ls = pp[s * (D + 2) + 1];
            if (ls > 0.0f) o += pp[s * (D + 2) + 2 + d] * expf(pp[s * (D + 2)] - M);
        }
        out[row * D + d] = gated(gate, ldg, row, d, o * inv);
    }
}

__global__ void k_kv_store(const float *k, const float *v, void *const *blocks, const int64_t *pos0, int64_t ldk,
                           int64_t ldv, int64_t bt, int64_t k_off, int64_t v_off, int64_t D) {
    QCU_PDL_ENTRY();
    const int64_t t = blockIdx.x, h = blockIdx.y, p = pos0[0] + t, b = p / bt, o = p % bt;
    char *blk = (char *)blocks[b];
    float *K = (float *)(blk + k_off) + (h * bt + o) * D, *V = (float *)(blk + v_off) + (h * bt + o) * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        K[d] = k[t * ldk + h * D + d];
        V[d] = v[t * ldv + h * D + d];
    }
}

/* ==== launchers ===================================================================================== */

typedef void (*attn_kernel)(attn_p);

template <int MODE>
static attn_kernel pick(int64_t D) {
    if (D <= 32) return k_attn<4, MODE>;
    if (D <= 64) return k_attn<8, MODE>;
    if (D <= 96) return k_attn<12, MODE>;
    if (D <= 128) return k_attn<16, MODE>;
    if (D <= 256) return k_attn<32, MODE>;
    return NULL;
}

static size_t attn_smem(int64_t D) { return (size_t)(BQ * (D + 1) + BK * (D + 1) + BK * D + BQ * (BK + 1)) * sizeof(float); }

extern "C" size_t qcu_attention_partial_bytes(int64_t n_rows, int64_t n_splits, int64_t head_dim) {
    return n_splits > 1 ? (size_t)n_rows * (size_t)n_splits * (size_t)(head_dim + 2) * sizeof(float) : 0;
}

template <int MODE>
static int run(void *st, const attn_p &p, int64_t rows_total, int64_t heads_y) {
    attn_kernel k = pick<MODE>(p.D);
    if (!k) return 1;
    const int64_t R = MODE == MODE_TEXT ? p.T * (p.n_heads / p.n_kv_heads) : p.n_rows;
    if (R <= 0) return 0;
    dim3 g(qcu_blocks(R, BQ), (unsigned)heads_y, (unsigned)p.n_splits);
    QVLM_LAUNCH(k, g, NT, attn_smem(p.D), st, p);
    if (p.n_splits > 1) {
        int e = (int)cudaGetLastError();
        if (e) return e;
        QVLM_LAUNCH(k_attn_combine, (unsigned)rows_total, 64, 0, st, p.out, (const float *)p.partial, p.n_splits, p.D,
                    p.gate, p.ldg);
    }
    QCU_DONE();
}

static bool use_dec(int64_t T, int64_t Hq, int64_t Hkv, int64_t D) {
    return Hkv > 0 && T * (Hq / Hkv) <= 8 && D % 4 == 0 && D <= 256;
}

extern "C" void qcu_attention_plan(int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t max_keys, int n_sm,
                                   int64_t *n_splits, int64_t *kps) {
    const int64_t base = use_dec(T, Hq, Hkv, D) ? Hkv : ((T * (Hq / Hkv) + BQ - 1) / BQ) * Hkv;
    const int64_t min_keys = use_dec(T, Hq, Hkv, D) ? 64 : 64;
    int64_t want = base >= n_sm ? 1 : (2 * (int64_t)n_sm + base - 1) / base;
    int64_t most = (max_keys + min_keys - 1) / min_keys;
    if (want > most) want = most;
    if (want < 1) want = 1;
    int64_t per = (max_keys + want - 1) / want;
    per = (per + 31) / 32 * 32;
    *kps = per > 0 ? per : 32;
    *n_splits = want > 1 ? (max_keys + *kps - 1) / *kps : 1;
}

template <int R>
static attn_kernel pick_dec(int64_t D) {
    return D <= 128 ? k_attn_dec<R, 1> : k_attn_dec<R, 2>;
}

extern "C" int qcu_attention(void *st, const void *ap) {
    const qcu_attention_args *a = (const qcu_attention_args *)ap;
    attn_p p;
    memset(&p, 0, sizeof(p));
    p.out = a->out, p.partial = a->partial, p.q = a->q, p.blocks = a->blocks, p.pos0 = a->pos0, p.ldq = a->ldq;
    p.block_tokens = a->block_tokens, p.k_off = a->k_off, p.v_off = a->v_off, p.T = a->T, p.n_heads = a->n_heads;
    p.n_kv_heads = a->n_kv_heads, p.D = a->head_dim, p.n_splits = a->n_splits > 0 ? a->n_splits : 1;
    p.kps = a->keys_per_split, p.scale = a->scale, p.gate = a->gate, p.ldg = a->ldg;
    if (use_dec(a->T, a->n_heads, a->n_kv_heads, a->head_dim)) {
        const int64_t rows = a->T * (a->n_heads / a->n_kv_heads);
        attn_kernel k = rows <= 1 ? pick_dec<1>(p.D) : rows <= 2 ? pick_dec<2>(p.D) : rows <= 4 ? pick_dec<4>(p.D)
                                                                                                : pick_dec<8>(p.D);
        QVLM_LAUNCH(k, dim3((unsigned)a->n_kv_heads, (unsigned)p.n_splits), DEC_WARPS * 32, 0, st, p);
        if (p.n_splits > 1) {
            int e = (int)cudaGetLastError();
            if (e) return e;
            QVLM_LAUNCH(k_attn_combine, (unsigned)(a->T * a->n_heads), 64, 0, st, p.out, (const float *)p.partial,
                        p.n_splits, p.D, p.gate, p.ldg);
        }
        QCU_DONE();
    }
    return run<MODE_TEXT>(st, p, a->T * a->n_heads, a->n_kv_heads);
}

extern "C" int qcu_attention_segments(void *st, const void *ap) {
    const qcu_attention_segments_args *a = (const qcu_attention_segments_args *)ap;
    attn_p p;
    memset(&p, 0, sizeof(p));
    p.out = a->out, p.partial = a->partial, p.q = a->qkv, p.seg = a->seg, p.n_seg = a->n_seg, p.n_rows = a->n_rows;
    p.n_heads = a->n_heads, p.n_kv_heads = a->n_heads, p.D = a->head_dim, p.n_splits = a->n_splits > 0 ? a->n_splits : 1;
    p.kps = a->keys_per_split, p.scale = a->scale;
    return run<MODE_VISION>(st, p, a->n_rows * a->n_heads, a->n_heads);
}

extern "C" int qcu_kv_store(void *st, const void *ap) {
    const qcu_kv_store_args *a = (const qcu_kv_store_args *)ap;
    if (a->T > 0 && a->n_kv_heads > 0)
        QVLM_LAUNCH(k_kv_store, dim3((unsigned)a->T, (unsigned)a->n_kv_heads), 128, 0, st, a->k, a->v, a->blocks, a->pos0,
                    a->ldk, a->ldv, a->block_tokens, a->k_off, a->v_off, a->head_dim);
    QCU_DONE();
}

/* ==== attributes and the process-wide init =========================================================== */

template <int MODE>
static int set_attrs(int smem) {
    int e = 0;
    attn_kernel ks[5] = {k_attn<4, MODE>, k_attn<8, MODE>, k_attn<12, MODE>, k_attn<16, MODE>, k_attn<32, MODE>};
    for (int i = 0; i < 5 && !e; i++) e = (int)cudaFuncSetAttribute(ks[i], cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    return e;
}

extern "C" int qcu_attn_init(size_t smem_optin) {
    const int need = (int)attn_smem(QCU_ATTN_MAX_HEAD_DIM);
    if ((size_t)need > smem_optin) return 1;
    int e = set_attrs<MODE_TEXT>(need);
    if (!e) e = set_attrs<MODE_VISION>(need);
    return e;
}

#ifndef QVLM_CUDA_EMU
int qcu_pdl = 0;
#endif

#ifndef QVLM_CUDA_EMU
/* A kernel that only says which architecture its code was compiled for. */
__global__ void k_arch_probe() {}
#endif

extern "C" int qcu_init(size_t smem_optin, int n_sm, int pdl) {
#ifndef QVLM_CUDA_EMU
    /* The kernels wait for their predecessor (griddepcontrol.wait) only when compiled for
     * sm_90 or later; code for an older virtual architecture, JIT-compiled for this device
     * (a build whose CMAKE_CUDA_ARCHITECTURES lacks 90), would not, and launching it with the
     * programmatic-dependent attribute would let kernels read their inputs before they are
     * written. So PDL is used only when the loaded code is sm_90's. */
    cudaFuncAttributes fa;
    if (pdl && (cudaFuncGetAttributes(&fa, k_arch_probe) != cudaSuccess || fa.ptxVersion < 90)) pdl = 0;
    cudaGetLastError();
    qcu_pdl = pdl;
#endif
    (void)pdl;
    int e = qcu_attn_init(smem_optin);
    if (!e) e = qcu_gdn_init(smem_optin);
    if (!e) e = qcu_gemv_init(smem_optin, n_sm);
    return e;
}
