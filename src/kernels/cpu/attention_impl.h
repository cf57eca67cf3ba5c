/* attention_impl.h - internals shared by the attention kernels of each ISA (attention.c:
 * dispatcher and scalar reference; attention_avx512.c).
 *
 * The row algorithm (both ops), for one query row q and its keys taken in tiles of at most 64
 * in a fixed order (tile boundaries depend only on key positions, never on which other rows
 * are computed), with m = -inf, l = 0, acc = 0 at the start:
 *     s_i   = dot(q, K_i) * scale                  for the tile's n valid keys
 *     mnew  = max(m, max_i s_i);  corr = vexp(m - mnew)
 *     l     = l * corr;  acc[c] = acc[c] * corr
 *     p_i   = vexp(s_i - mnew)
 *     l     = l + tsum(p)      tsum: lane i%16 takes p_i in increasing i, then qvlm_vtree16
 *     acc[c] = fmaf(p_i, V_i[c], acc[c])           i = 0, 1, ... in order
 *     m = mnew
 *     out[c] = acc[c] * (1 / l)
 * dot:
 *   text (causal, paged KV): 16-lane order, lane c%16 takes q[c]*k[c] in increasing c (fmaf),
 *     then qvlm_vtree16: the AVX-512 kernel reads K rows as stored (decode stays O(keys d));
 *   vision (segments): one fmaf chain over c = 0, 1, ...: the AVX-512 kernel broadcasts q[c]
 *     against 16 keys of a transposed K tile (the tiles are matrix products).
 * Masked keys inside a tile (the causal edge) contribute exact zeros, so a row's bits do not
 * depend on the other rows of its block: cpu.h's determinism contract.
 *
 * Vision in BF16 precision (cpu.h's fast mode, as the matrix products): q, k, v and p are
 * rounded to bf16 (vcvtneps2bf16: qvlm_ref_round_bf16) and both products follow vdpbf16ps,
 * element pairs (2m, 2m+1) zero-padded, odd element first, each step qvlm_ref_fma_ftz:
 *     s_i    = chain over m of fma_ftz(q[2m+1], k[2m+1], .), fma_ftz(q[2m], k[2m], .);  * scale
 *     p_i    = bf16(vexp(s_i - mnew));  l = l * corr + tsum(p)   (the rounded p, so the
 *              weights of the output sum to l exactly)
 *     acc[c] = chain over key pairs m of fma_ftz(p[2m+1], v[2m+1][c], .), fma_ftz(p[2m], v[2m][c], .)
 * The AVX-512 kernel runs it with vdpbf16ps where the CPU has AVX512_BF16; other CPUs run the
 * scalar reference in this precision (same bits, slowly).
 */
#ifndef QVLM_KERNELS_CPU_ATTENTION_IMPL_H
#define QVLM_KERNELS_CPU_ATTENTION_IMPL_H

#include "kernels/cpu/cpu_ops.h"

#define QVLM_ATTN_TILE 64
#define QVLM_ATTN_MAX_HEAD_DIM 512 /* bounded by config validation */
#define QVLM_ATTN_TEXT_TOKENS 4   /* tokens per text work unit (x the query heads of a group) */
#define QVLM_ATTN_SEG_ROWS 256     /* query rows per vision block */

typedef struct qvlm_attn_text_job {
    float *out;
    const float *q;
    int64_t ldq;
    const qvlm_kv_view *kv;
    int64_t pos0, T, n_heads, n_kv_heads, head_dim;
    float scale;
} qvlm_attn_text_job;

typedef struct qvlm_attn_seg_job {
    float *out;
    const float *qkv;
    const int64_t *seg;
    int64_t n_seg, n_heads, head_dim, n_rows;
    float scale;
    bool bf16; /* BF16 precision (see above) */
} qvlm_attn_seg_job;

/* K row of absolute key position p for KV head kvh (text). */
static inline const float *qvlm_attn_k_row(const qvlm_kv_view *kv, int64_t kvh, int64_t p, int64_t d) {
    const int64_t bt = kv->block_tokens;
    const uint8_t *blk = kv->blocks[p / bt];
    return (const float *)(blk + kv->k_offset) + (kvh * bt + p % bt) * d;
}
static inline const float *qvlm_attn_v_row(const qvlm_kv_view *kv, int64_t kvh, int64_t p, int64_t d) {
    const int64_t bt = kv->block_tokens;
    const uint8_t *blk = kv->blocks[p / bt];
    return (const float *)(blk + kv->v_offset) + (kvh * bt + p % bt) * d;
}
/* Length of the key tile starting at k0 (text): up to 64 keys, never across a KV block. */
static inline int64_t qvlm_attn_tile_len(const qvlm_kv_view *kv, int64_t k0, int64_t n_keys) {
    int64_t n = n_keys - k0, rest = kv->block_tokens - k0 % kv->block_tokens;
    n = n < QVLM_ATTN_TILE ? n : QVLM_ATTN_TILE;
    return n < rest ? n : rest;
}

/* Floats of per-thread scratch. */
size_t qvlm_attn_text_scratch_floats(int64_t n_heads, int64_t n_kv_heads, int64_t head_dim);
size_t qvlm_attn_seg_scratch_floats(int64_t max_seg_rows, int64_t head_dim);

#if defined(__x86_64__)
/* Tokens [t0, t1) of every query head of KV head kvh. */
void qvlm_attn_text_unit_avx512(const qvlm_attn_text_job *j, int64_t kvh, int64_t t0, int64_t t1, float *scratch);
/* Every row of segment si, head h; F32 precision. */
void qvlm_attn_seg_unit_avx512(const qvlm_attn_seg_job *j, int64_t si, int64_t h, float *scratch);
/* The same in BF16 precision (needs AVX512_BF16). */
void qvlm_attn_seg_unit_avx512bf16(const qvlm_attn_seg_job *j, int64_t si, int64_t h, float *scratch);
#endif

#endif /* QVLM_KERNELS_CPU_ATTENTION_IMPL_H */
