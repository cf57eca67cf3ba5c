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
    void *const *blocks;
    const int64_t *pos0, *seg;
    int64_t ldq, block_tokens, k_off, v_off, T, n_heads, n_kv_heads, D, n_seg, n_rows, n_splits, kps;
    float scale;
};

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
    for (int64_t e = tid; e < BQ * D; e += NT) {
        const int64_t i = e / D, d = e % D;
        Qs[i * ldqs + d] = rq[i] ? rq[i][d] : 0.0f;
    }
    __syncthreads();
    const int64_t k_lo = range[0], k_hi = range[1];
    const int64_t ks = rks[qi], ke = rke[qi];
    float m = -INFINITY, l = 0.0f, acc[DJ];
#pragma unroll
    for (int j = 0; j < DJ; j++) acc[j] = 0.0f;

    for (int64_t kb = k_lo; kb < k_hi; kb += BK) {
        for (int64_t e = tid; e < BK * D; e += NT) {
            const int64_t j = e / D, d = e % D, key = kb + j;
            float kv = 0.0f, vv = 0.0f;
            if (key < k_hi) {
                kv = key_row<MODE>(p, key, hy, false)[d];
                vv = key_row<MODE>(p, key, hy, true)[d];
            }
            Ks[j * ldqs + d] = kv;
            Vs[j * D + d] = vv;
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
                for (int64_t d = 0; d < D; d++) dot += Qs[qi * ldqs + d] * Ks[kj * ldqs + d];
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
            if (d < D) p.out[orow * D + d] = acc[j] * inv;
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

/* Merge the n_splits partial results of each output row. */
__global__ void k_attn_combine(float *out, const float *partial, int64_t n_splits, int64_t D) {
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
        out[row * D + d] = o * inv;
    }
}

__global__ void k_kv_store(const float *k, const float *v, void *const *blocks, const int64_t *pos0, int64_t ldk,
                           int64_t ldv, int64_t bt, int64_t k_off, int64_t v_off, int64_t D) {
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
        QVLM_LAUNCH(k_attn_combine, (unsigned)rows_total, 64, 0, st, p.out, (const float *)p.partial, p.n_splits, p.D);
    }
    QCU_DONE();
}

extern "C" int qcu_attention(void *st, const void *ap) {
    const qcu_attention_args *a = (const qcu_attention_args *)ap;
    attn_p p;
    memset(&p, 0, sizeof(p));
    p.out = a->out, p.partial = a->partial, p.q = a->q, p.blocks = a->blocks, p.pos0 = a->pos0, p.ldq = a->ldq;
    p.block_tokens = a->block_tokens, p.k_off = a->k_off, p.v_off = a->v_off, p.T = a->T, p.n_heads = a->n_heads;
    p.n_kv_heads = a->n_kv_heads, p.D = a->head_dim, p.n_splits = a->n_splits > 0 ? a->n_splits : 1;
    p.kps = a->keys_per_split, p.scale = a->scale;
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

extern "C" int qcu_init(size_t smem_optin, int n_sm) {
    int e = qcu_attn_init(smem_optin);
    if (!e) e = qcu_gdn_init(smem_optin);
    if (!e) e = qcu_gemv_init(smem_optin, n_sm);
    return e;
}
