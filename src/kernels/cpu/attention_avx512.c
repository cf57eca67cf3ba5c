/* attention_avx512.c - the attention row algorithm of attention_impl.h with AVX-512, bitwise
 * equal to the scalar reference in attention.c.
 *
 * Text (causal, paged KV): a unit is 4 tokens x the query heads of one KV head (GQA rows share
 * every K and V load). Scores come from a 4-row x 4-key dot micro-kernel (16 accumulators, 8
 * loads per 16 FMAs) whose 16 lanes follow the reference's lane order, reduced by a butterfly
 * that performs the reference's tree (lane l + l+8, +4, +2, +1) for all 16 dots at once; K is
 * read as stored, so a decode step costs O(keys x head_dim). P V broadcasts p against value
 * rows, 4 rows x 64 columns per pass.
 * Vision (segments): a unit is one (segment, head); its K is transposed once into 64-key tiles
 * and every block of 32 query rows runs over them: scores are a 4-row x 64-key product
 * (broadcast q[c] against 16 keys, one fma chain over c per score), then softmax and P V in
 * registers. Both are tiled matrix products; memory is O(tile), not O(keys^2).
 */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/attention_impl.h"
#include "kernels/cpu/vmath_avx512.h"

#define TILE QVLM_ATTN_TILE
#define AI QVLM_AI

static int64_t pad16(int64_t n) { return (n + 15) & ~(int64_t)15; }

/* ---- online softmax of one row's tile (in registers) ------------------------------------------- */

/* s: the row's 64 scores (scaled) in 4 zmm, lanes >= nv ignored. Updates m, l, scales the
 * row's accumulator acc[0..d) by corr, and leaves p (0 past nv) in s. */
AI void softmax_row(__m512 s[4], int nv, float *m, float *l, float *acc, int64_t d) {
    __m512 ninf = _mm512_set1_ps(-INFINITY);
    __mmask16 mk[4];
    #pragma GCC unroll 16
    for (int v = 0; v < 4; v++) {
        mk[v] = qvlm_mask16(nv - 16 * v);
        s[v] = _mm512_mask_mov_ps(ninf, mk[v], s[v]);
    }
    __m512 mx = _mm512_max_ps(_mm512_max_ps(s[0], s[1]), _mm512_max_ps(s[2], s[3]));
    float mt = _mm512_reduce_max_ps(mx);
    float mnew = mt > *m ? mt : *m;
    float corr = qvlm_vexp(*m - mnew);
    *l = *l * corr;
    __m512 cv = _mm512_set1_ps(corr);
    for (int64_t c = 0; c < d && corr != 1.0f; c += 16) { /* acc * 1 = acc: skip (same bits) */
        __mmask16 mc = qvlm_mask16(d - c);
        _mm512_mask_storeu_ps(acc + c, mc, _mm512_mul_ps(_mm512_maskz_loadu_ps(mc, acc + c), cv));
    }
    __m512 mn = _mm512_set1_ps(mnew);
    #pragma GCC unroll 16
    for (int v = 0; v < 4; v++) s[v] = _mm512_maskz_mov_ps(mk[v], qvlm_vexp16(_mm512_sub_ps(s[v], mn)));
    __m512 sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s[0], s[1]), s[2]), s[3]);
    *l = *l + qvlm_vtree16x(sum);
    *m = mnew;
}

/* acc[r][c0..c0+nc) += sum_{i < n} P[r][i] * V_i[c0..], for 4 rows (accumulators at acc + r*lda),
 * V_i at v + i*ldv. */
AI void pv_block(const int NV, float *acc, int64_t lda, const float *P, const float *v, int64_t ldv, int64_t n,
                 int nc) {
    __m512 a[4][4];
    __mmask16 mk[4];
    #pragma GCC unroll 16
    for (int u = 0; u < NV; u++) mk[u] = qvlm_mask16(nc - 16 * u);
    #pragma GCC unroll 16
    for (int r = 0; r < 4; r++)
        #pragma GCC unroll 16
        for (int u = 0; u < NV; u++) a[r][u] = _mm512_maskz_loadu_ps(mk[u], acc + r * lda + 16 * u);
    for (int64_t i = 0; i < n; i++) {
        __m512 vv[4];
        #pragma GCC unroll 16
        for (int u = 0; u < NV; u++) vv[u] = _mm512_maskz_loadu_ps(mk[u], v + i * ldv + 16 * u);
        #pragma GCC unroll 16
        for (int r = 0; r < 4; r++) {
            __m512 p = _mm512_set1_ps(P[r * TILE + i]);
            #pragma GCC unroll 16
            for (int u = 0; u < NV; u++) a[r][u] = _mm512_fmadd_ps(p, vv[u], a[r][u]);
        }
    }
    #pragma GCC unroll 16
    for (int r = 0; r < 4; r++)
        #pragma GCC unroll 16
        for (int u = 0; u < NV; u++) _mm512_mask_storeu_ps(acc + r * lda + 16 * u, mk[u], a[r][u]);
}

static void pv(float *acc, int64_t lda, const float *P, const float *v, int64_t ldv, int64_t n, int64_t d) {
    for (int64_t c0 = 0; c0 < d; c0 += 64) {
        int nc = (int)QVLM_MIN((int64_t)64, d - c0);
        switch ((nc + 15) / 16) {
        case 1: pv_block(1, acc + c0, lda, P, v + c0, ldv, n, nc); break;
        case 2: pv_block(2, acc + c0, lda, P, v + c0, ldv, n, nc); break;
        case 3: pv_block(3, acc + c0, lda, P, v + c0, ldv, n, nc); break;
        default: pv_block(4, acc + c0, lda, P, v + c0, ldv, n, nc); break;
        }
    }
}

static void finish_row(float *out, const float *acc, float l, int64_t d) {
    __m512 inv = _mm512_set1_ps(1.0f / l);
    for (int64_t c = 0; c < d; c += 16) {
        __mmask16 mc = qvlm_mask16(d - c);
        _mm512_mask_storeu_ps(out + c, mc, _mm512_mul_ps(_mm512_maskz_loadu_ps(mc, acc + c), inv));
    }
}

/* ---- text: 4x4 dots in the lane order ------------------------------------------------------------ */

/* out[4b + j] = dot(q_j, k_b) * scale for rows j and keys b < 4: 16 zmm accumulators over
 * 16-element steps of c, then the butterfly (each step adds lane l and l+w of every dot). */
static void dots4x4(float out[16], const float *q[4], const float *k[4], int64_t d, float scale) {
    __m512 a[16];
    #pragma GCC unroll 16
    for (int i = 0; i < 16; i++) a[i] = _mm512_setzero_ps();
    for (int64_t c = 0; c < d; c += 16) {
        __mmask16 mc = qvlm_mask16(d - c);
        __m512 qv[4], kv[4];
        #pragma GCC unroll 16
        for (int r = 0; r < 4; r++) qv[r] = _mm512_maskz_loadu_ps(mc, q[r] + c);
        #pragma GCC unroll 16
        for (int b = 0; b < 4; b++) kv[b] = _mm512_maskz_loadu_ps(mc, k[b] + c);
        #pragma GCC unroll 16
        for (int r = 0; r < 4; r++)
            #pragma GCC unroll 16
            for (int b = 0; b < 4; b++) a[r * 4 + b] = _mm512_fmadd_ps(qv[r], kv[b], a[r * 4 + b]);
    }
    /* w = 8: C[m] lanes 0-7 = dot 2m, lanes 8-15 = dot 2m+1 */
    __m512 cc[8], e[4], f[2];
    #pragma GCC unroll 16
    for (int m = 0; m < 8; m++)
        cc[m] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * m], a[2 * m + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(a[2 * m], a[2 * m + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* w = 4: E[m] 128-bit block b = dot 4m + b (lanes l, l+1, l+2, l+3 still to add pairwise) */
    #pragma GCC unroll 16
    for (int m = 0; m < 4; m++)
        e[m] = _mm512_add_ps(_mm512_shuffle_f32x4(cc[2 * m], cc[2 * m + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(cc[2 * m], cc[2 * m + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* w = 2: F[m] block b lanes 0,1 = dot 8m + b, lanes 2,3 = dot 8m + 4 + b */
    #pragma GCC unroll 16
    for (int m = 0; m < 2; m++) {
        __m512d x = _mm512_castps_pd(e[2 * m]), y = _mm512_castps_pd(e[2 * m + 1]);
        f[m] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    /* w = 1: lane 4b + j = dot 4j + b, i.e. row j, key b */
    __m512 g = _mm512_add_ps(_mm512_shuffle_ps(f[0], f[1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(f[0], f[1], _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_storeu_ps(out, _mm512_mul_ps(g, _mm512_set1_ps(scale)));
}

void qvlm_attn_text_unit_avx512(const qvlm_attn_text_job *j, int64_t kvh, int64_t t0, int64_t t1, float *scratch) {
    const int64_t d = j->head_dim, dp = pad16(d), group = j->n_heads / j->n_kv_heads;
    const int64_t R = (t1 - t0) * group, Rq = (R + 3) & ~(int64_t)3;
    /* Row r is token t0 + r / group, query head kvh * group + r % group; rows R..Rq-1 are
     * padding (no keys, query of row 0, never written out). */
    float *acc = scratch, *ms = acc + Rq * dp, *ls = ms + Rq, *P = ls + Rq; /* P [Rq][TILE] */
    for (int64_t r = 0; r < Rq; r++) {
        ms[r] = -INFINITY, ls[r] = 0.0f;
        memset(acc + r * dp, 0, (size_t)dp * sizeof(float));
    }
    const int64_t max_keys = j->pos0 + t1;
    for (int64_t k0 = 0; k0 < max_keys;) {
        const int64_t n = qvlm_attn_tile_len(j->kv, k0, max_keys);
        const float *K = qvlm_attn_k_row(j->kv, kvh, k0, d), *V = qvlm_attn_v_row(j->kv, kvh, k0, d);
        for (int64_t r0 = 0; r0 < Rq; r0 += 4) {
            int nv[4], nmax = 0;
            const float *qrow[4];
            #pragma GCC unroll 16
            for (int r = 0; r < 4; r++) {
                int64_t rr = r0 + r < R ? r0 + r : 0, t = t0 + rr / group;
                qrow[r] = j->q + t * j->ldq + (kvh * group + rr % group) * d;
                int64_t v = (r0 + r < R ? j->pos0 + t + 1 : 0) - k0;
                nv[r] = (int)(v < 0 ? 0 : v > n ? n : v);
                nmax = nv[r] > nmax ? nv[r] : nmax;
            }
            if (nmax == 0) continue;
            float *Pq = P + r0 * TILE;
            for (int kq = 0; kq < nmax; kq += 4) {
                const float *kp[4];
                #pragma GCC unroll 16
                for (int b = 0; b < 4; b++) kp[b] = K + (kq + b < n ? kq + b : 0) * d;
                float o[16];
                dots4x4(o, qrow, kp, d, j->scale);
                #pragma GCC unroll 16
                for (int b = 0; b < 4; b++)
                    #pragma GCC unroll 16
                    for (int r = 0; r < 4; r++) Pq[r * TILE + kq + b] = o[4 * b + r];
            }
            #pragma GCC unroll 16
            for (int r = 0; r < 4; r++) {
                float *pr = Pq + r * TILE;
                if (nv[r] == 0) { /* no keys for this row here: p = 0 leaves its state as is */
                    memset(pr, 0, (size_t)nmax * sizeof(float));
                    continue;
                }
                __m512 s[4];
                #pragma GCC unroll 16
                for (int v = 0; v < 4; v++) s[v] = _mm512_maskz_loadu_ps(qvlm_mask16(nmax - 16 * v), pr + 16 * v);
                softmax_row(s, nv[r], &ms[r0 + r], &ls[r0 + r], acc + (r0 + r) * dp, d);
                #pragma GCC unroll 16
                for (int v = 0; v < 4; v++) _mm512_storeu_ps(pr + 16 * v, s[v]);
            }
            pv(acc + r0 * dp, dp, Pq, V, d, nmax, d);
        }
        k0 += n;
    }
    for (int64_t r = 0; r < R; r++) {
        int64_t t = t0 + r / group, h = kvh * group + r % group;
        finish_row(j->out + (t * j->n_heads + h) * d, acc + r * dp, ls[r], d);
    }
}

/* ---- vision: transposed K tiles, 4 x 64 score blocks ------------------------------------------------ */

/* s[r][0..64) = (sum_c q_r[c] * Kt[c][0..64)) * scale: one fma chain over c per score. */
static void scores4x64(__m512 s[4][4], const float *q[4], const float *Kt, int64_t d, float scale) {
    #pragma GCC unroll 16
    for (int r = 0; r < 4; r++)
        #pragma GCC unroll 16
        for (int v = 0; v < 4; v++) s[r][v] = _mm512_setzero_ps();
    for (int64_t c = 0; c < d; c++) {
        __m512 kt[4];
        #pragma GCC unroll 16
        for (int v = 0; v < 4; v++) kt[v] = _mm512_loadu_ps(Kt + c * TILE + 16 * v);
        #pragma GCC unroll 16
        for (int r = 0; r < 4; r++) {
            __m512 qc = _mm512_set1_ps(q[r][c]);
            #pragma GCC unroll 16
            for (int v = 0; v < 4; v++) s[r][v] = _mm512_fmadd_ps(qc, kt[v], s[r][v]);
        }
    }
    __m512 sc = _mm512_set1_ps(scale);
    #pragma GCC unroll 16
    for (int r = 0; r < 4; r++)
        #pragma GCC unroll 16
        for (int v = 0; v < 4; v++) s[r][v] = _mm512_mul_ps(s[r][v], sc);
}

void qvlm_attn_seg_unit_avx512(const qvlm_attn_seg_job *j, int64_t si, int64_t h, float *scratch) {
    const int64_t d = j->head_dim, dp = pad16(d), H = j->n_heads, ld = 3 * H * d;
    const int64_t s0 = j->seg[si], s1 = j->seg[si + 1], Ns = s1 - s0, n_tiles = (Ns + TILE - 1) / TILE;
    const int64_t QB = QVLM_ATTN_SEG_ROWS;
    /* K transposed into 64-key tiles, V and the query block copied to contiguous rows: rows of
     * qkv are 3 * hidden floats apart, a stride that maps a tile's rows onto a few L1 sets. */
    float *Kt = scratch;                   /* [n_tiles][d][TILE] */
    float *Vc = Kt + n_tiles * TILE * dp;  /* [Ns][dp] */
    float *Qc = Vc + Ns * dp;              /* [QB][dp] */
    float *acc = Qc + QB * dp;             /* [QB][dp] */
    float *ms = acc + QB * dp, *ls = ms + QB, *P = ls + QB; /* P [4][TILE] */
    const float *K = j->qkv + s0 * ld + H * d + h * d, *V = j->qkv + s0 * ld + 2 * H * d + h * d;
    for (int64_t t = 0; t < n_tiles; t++) {
        float *kt = Kt + t * TILE * d;
        int64_t n = QVLM_MIN((int64_t)TILE, Ns - t * TILE);
        for (int64_t i = 0; i < TILE; i++) {
            const float *kr = K + (t * TILE + i) * ld;
            if (i < n)
                for (int64_t c = 0; c < d; c++) kt[c * TILE + i] = kr[c];
            else
                for (int64_t c = 0; c < d; c++) kt[c * TILE + i] = 0.0f;
        }
    }
    for (int64_t i = 0; i < Ns; i++) memcpy(Vc + i * dp, V + i * ld, (size_t)d * sizeof(float));
    for (int64_t b0 = 0; b0 < Ns; b0 += QB) {
        const int64_t nb = QVLM_MIN(QB, Ns - b0);
        for (int64_t r = 0; r < nb; r++) memcpy(Qc + r * dp, j->qkv + (s0 + b0 + r) * ld + h * d, (size_t)d * sizeof(float));
        for (int64_t r = 0; r < QB; r++) {
            ms[r] = -INFINITY, ls[r] = 0.0f;
            memset(acc + r * dp, 0, (size_t)dp * sizeof(float));
        }
        for (int64_t t = 0; t < n_tiles; t++) {
            const int nv = (int)QVLM_MIN((int64_t)TILE, Ns - t * TILE);
            for (int64_t r0 = 0; r0 < nb; r0 += 4) {
                const float *q[4];
                #pragma GCC unroll 16
                for (int r = 0; r < 4; r++) q[r] = Qc + (r0 + r < nb ? r0 + r : 0) * dp;
                __m512 s[4][4];
                scores4x64(s, q, Kt + t * TILE * d, d, j->scale);
                #pragma GCC unroll 16
                for (int r = 0; r < 4; r++) {
                    softmax_row(s[r], nv, &ms[r0 + r], &ls[r0 + r], acc + (r0 + r) * dp, d);
                    #pragma GCC unroll 16
                    for (int v = 0; v < 4; v++) _mm512_storeu_ps(P + r * TILE + 16 * v, s[r][v]);
                }
                pv(acc + r0 * dp, dp, P, Vc + t * TILE * dp, dp, nv, d);
            }
        }
        for (int64_t r = 0; r < nb; r++) finish_row(j->out + (s0 + b0 + r) * H * d + h * d, acc + r * dp, ls[r], d);
    }
}

/* ---- vision, BF16 precision: vdpbf16ps for Q K^T and P V --------------------------------------------
 * Packed (as 32-bit words, each a bf16 pair (low = even element, high = odd)):
 *   Kt2 [tile][m][64 keys]   = (k[2m], k[2m+1]) of each key: 4 zmm per m, one vdpbf16ps per 16 scores
 *   Vp  [tile][key pair][dp] = (v[2p][c], v[2p+1][c]): the P V product over key pairs
 *   q and p rows are bf16 arrays, whose 32-bit words are already the pairs. */

/* 16 floats (masked) -> 16 bf16 (vcvtneps2bf16 = qvlm_ref_round_bf16) widened back to 32-bit
 * lanes: the bf16 bits in the low half. */
AI __m512i bf16_lanes(__m512 v) { return _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v)); }

/* Rounded p of one row: the weights as the P V product sees them, summed for l. */
AI void softmax_row_bh(__m512 s[4], int nv, float *m, float *l, float *acc, int64_t d, uint16_t *prow) {
    __m512 ninf = _mm512_set1_ps(-INFINITY);
    __mmask16 mk[4];
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++) {
        mk[v] = qvlm_mask16(nv - 16 * v);
        s[v] = _mm512_mask_mov_ps(ninf, mk[v], s[v]);
    }
    __m512 mx = _mm512_max_ps(_mm512_max_ps(s[0], s[1]), _mm512_max_ps(s[2], s[3]));
    float mt = _mm512_reduce_max_ps(mx);
    float mnew = mt > *m ? mt : *m;
    float corr = qvlm_vexp(*m - mnew);
    *l = *l * corr;
    __m512 cv = _mm512_set1_ps(corr);
    for (int64_t c = 0; c < d && corr != 1.0f; c += 16) { /* acc * 1 = acc: skip (same bits) */
        __mmask16 mc = qvlm_mask16(d - c);
        _mm512_mask_storeu_ps(acc + c, mc, _mm512_mul_ps(_mm512_maskz_loadu_ps(mc, acc + c), cv));
    }
    __m512 mn = _mm512_set1_ps(mnew), sum = _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++) {
        __m256bh pb = _mm512_cvtneps_pbh(_mm512_maskz_mov_ps(mk[v], qvlm_vexp16(_mm512_sub_ps(s[v], mn))));
        _mm256_storeu_si256((__m256i *)(prow + 16 * v), (__m256i)pb);
        __m512 pr = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)pb), 16));
        sum = v == 0 ? pr : _mm512_add_ps(sum, pr);
    }
    *l = *l + qvlm_vtree16x(sum);
    *m = mnew;
}

AI void pv_block_bh(const int NV, float *acc, int64_t lda, const uint32_t *P2, const uint32_t *vp, int64_t ldv,
                    int64_t n_pairs, int nc) {
    __m512 a[4][4];
    __mmask16 mk[4];
#pragma GCC unroll 4
    for (int u = 0; u < NV; u++) mk[u] = qvlm_mask16(nc - 16 * u);
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
        for (int u = 0; u < NV; u++) a[r][u] = _mm512_maskz_loadu_ps(mk[u], acc + r * lda + 16 * u);
    for (int64_t mp = 0; mp < n_pairs; mp++) {
        __m512bh vv[4];
#pragma GCC unroll 4
        for (int u = 0; u < NV; u++) vv[u] = (__m512bh)_mm512_maskz_loadu_epi32(mk[u], vp + mp * ldv + 16 * u);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            __m512bh p = (__m512bh)_mm512_set1_epi32((int)P2[r * (TILE / 2) + mp]);
#pragma GCC unroll 4
            for (int u = 0; u < NV; u++) a[r][u] = _mm512_dpbf16_ps(a[r][u], p, vv[u]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
        for (int u = 0; u < NV; u++) _mm512_mask_storeu_ps(acc + r * lda + 16 * u, mk[u], a[r][u]);
}

void qvlm_attn_seg_unit_avx512bf16(const qvlm_attn_seg_job *j, int64_t si, int64_t h, float *scratch) {
    const int64_t d = j->head_dim, dp = pad16(d), d2 = (d + 1) / 2, d2p = pad16(d2), H = j->n_heads, ld = 3 * H * d;
    const int64_t s0 = j->seg[si], s1 = j->seg[si + 1], Ns = s1 - s0, n_tiles = (Ns + TILE - 1) / TILE;
    const int64_t QB = QVLM_ATTN_SEG_ROWS;
    uint32_t *Kt2 = (uint32_t *)scratch;     /* [n_tiles][d2][TILE] */
    uint32_t *Vp = Kt2 + n_tiles * d2 * TILE; /* [n_tiles][TILE/2][dp] */
    uint32_t *Q2 = Vp + n_tiles * (TILE / 2) * dp; /* [QB][d2p] */
    float *acc = (float *)(Q2 + QB * d2p);   /* [QB][dp] */
    float *ms = acc + QB * dp, *ls = ms + QB;
    uint32_t *P2 = (uint32_t *)(ls + QB);    /* [4][TILE/2] */
    const float *K = j->qkv + s0 * ld + H * d + h * d, *V = j->qkv + s0 * ld + 2 * H * d + h * d;
    /* one row (d floats) -> bf16 pairs as words, zero-padded to d2 words */
    uint32_t row2[QVLM_ATTN_MAX_HEAD_DIM / 2 + 16];
#define ROW_TO_PAIRS(src)                                                                                       \
    do {                                                                                                        \
        for (int64_t c = 0; c < 2 * d2; c += 32) {                                                              \
            __m512 lo = _mm512_maskz_loadu_ps(qvlm_mask16(d - c), (src) + c);                                   \
            __m512 hi = _mm512_maskz_loadu_ps(qvlm_mask16(d - c - 16), (src) + c + 16);                         \
            _mm512_storeu_si512(row2 + c / 2, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));                             \
        }                                                                                                       \
    } while (0)
    for (int64_t t = 0; t < n_tiles; t++) {
        const int64_t n = QVLM_MIN((int64_t)TILE, Ns - t * TILE);
        uint32_t *kt = Kt2 + t * d2 * TILE;
        for (int64_t i = 0; i < TILE; i++) {
            if (i < n) ROW_TO_PAIRS(K + (t * TILE + i) * ld);
            for (int64_t mm = 0; mm < d2; mm++) kt[mm * TILE + i] = i < n ? row2[mm] : 0u;
        }
        uint32_t *vp = Vp + t * (TILE / 2) * dp;
        for (int64_t mp = 0; mp < TILE / 2; mp++) {
            const int64_t i0 = t * TILE + 2 * mp;
            for (int64_t c = 0; c < d; c += 16) {
                __mmask16 mc = qvlm_mask16(d - c);
                __m512 a = 2 * mp < n ? _mm512_maskz_loadu_ps(mc, V + i0 * ld + c) : _mm512_setzero_ps();
                __m512 b = 2 * mp + 1 < n ? _mm512_maskz_loadu_ps(mc, V + (i0 + 1) * ld + c) : _mm512_setzero_ps();
                __m512i w = _mm512_or_si512(bf16_lanes(a), _mm512_slli_epi32(bf16_lanes(b), 16));
                _mm512_mask_storeu_epi32(vp + mp * dp + c, mc, w);
            }
        }
    }
    for (int64_t b0 = 0; b0 < Ns; b0 += QB) {
        const int64_t nb = QVLM_MIN(QB, Ns - b0);
        for (int64_t r = 0; r < nb; r++) {
            ROW_TO_PAIRS(j->qkv + (s0 + b0 + r) * ld + h * d);
            memcpy(Q2 + r * d2p, row2, (size_t)d2 * sizeof(uint32_t));
        }
        for (int64_t r = 0; r < QB; r++) {
            ms[r] = -INFINITY, ls[r] = 0.0f;
            memset(acc + r * dp, 0, (size_t)dp * sizeof(float));
        }
        for (int64_t t = 0; t < n_tiles; t++) {
            const int nv = (int)QVLM_MIN((int64_t)TILE, Ns - t * TILE);
            const uint32_t *kt = Kt2 + t * d2 * TILE;
            for (int64_t r0 = 0; r0 < nb; r0 += 4) {
                const uint32_t *q[4];
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) q[r] = Q2 + (r0 + r < nb ? r0 + r : 0) * d2p;
                __m512 s[4][4];
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
                    for (int v = 0; v < 4; v++) s[r][v] = _mm512_setzero_ps();
                for (int64_t mm = 0; mm < d2; mm++) {
                    __m512bh kv[4];
#pragma GCC unroll 4
                    for (int v = 0; v < 4; v++) kv[v] = (__m512bh)_mm512_loadu_si512(kt + mm * TILE + 16 * v);
#pragma GCC unroll 4
                    for (int r = 0; r < 4; r++) {
                        __m512bh qb = (__m512bh)_mm512_set1_epi32((int)q[r][mm]);
#pragma GCC unroll 4
                        for (int v = 0; v < 4; v++) s[r][v] = _mm512_dpbf16_ps(s[r][v], qb, kv[v]);
                    }
                }
                __m512 sc = _mm512_set1_ps(j->scale);
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) {
#pragma GCC unroll 4
                    for (int v = 0; v < 4; v++) s[r][v] = _mm512_mul_ps(s[r][v], sc);
                    softmax_row_bh(s[r], nv, &ms[r0 + r], &ls[r0 + r], acc + (r0 + r) * dp, d,
                                   (uint16_t *)(P2 + r * (TILE / 2)));
                }
                const int64_t n_pairs = (nv + 1) / 2;
                for (int64_t c0 = 0; c0 < d; c0 += 64) {
                    int nc = (int)QVLM_MIN((int64_t)64, d - c0);
                    const uint32_t *vp = Vp + t * (TILE / 2) * dp + c0;
                    switch ((nc + 15) / 16) {
                    case 1: pv_block_bh(1, acc + r0 * dp + c0, dp, P2, vp, dp, n_pairs, nc); break;
                    case 2: pv_block_bh(2, acc + r0 * dp + c0, dp, P2, vp, dp, n_pairs, nc); break;
                    case 3: pv_block_bh(3, acc + r0 * dp + c0, dp, P2, vp, dp, n_pairs, nc); break;
                    default: pv_block_bh(4, acc + r0 * dp + c0, dp, P2, vp, dp, n_pairs, nc); break;
                    }
                }
            }
        }
        for (int64_t r = 0; r < nb; r++) finish_row(j->out + (s0 + b0 + r) * H * d + h * d, acc + r * dp, ls[r], d);
    }
#undef ROW_TO_PAIRS
}

#endif /* __x86_64__ */
