/* gated_delta_avx512.c - the Gated DeltaNet chunked and recurrent forms with AVX-512.
 *
 * The same f32 operations as the scalar reference in gated_delta.c, element for element and
 * in the same order (bitwise equal; the reference's comments define the math). The chunked
 * form's matrix work all goes through one register-blocked kernel, rs_block:
 *     Y[r][c] = init(Y[r][c]) +- sum_{x0 <= x < x1} L[r][x] * B[x][c]
 * for up to 4 rows r and 64 columns c (4 zmm x 4 rows = 16 accumulators; per x: 4 loads of B,
 * 4 broadcasts of L, 16 FMAs), an fma chain over x in increasing order per element: the
 * reference's order. Dots (A, QK: B = K transposed), the forward substitution, Vn, O and the
 * state update are all instances, with triangular parts split into a 4-row block over the
 * columns every row needs and short per-row tails, so each row still sums in increasing index.
 */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

#include "kernels/cpu/gated_delta_impl.h"
#include "kernels/cpu/vmath_avx512.h"

#define C QVLM_GDN_CHUNK
#define AI QVLM_AI

/* ---- the blocked kernel -------------------------------------------------------------------- */

enum { INIT_ZERO = 0, INIT_Y = 1, INIT_Y_SCALED = 2 };

AI void rs_core(const int R, const int NV, const int neg, float *Y, int64_t ldy, const float *L, int64_t ldr,
                int64_t ldc, const float *B, int64_t ldb, int64_t x0, int64_t x1, int nc, int init, float yscale) {
    __m512 acc[4][4];
    __mmask16 mk[4];
    #pragma GCC unroll 16
    for (int v = 0; v < NV; v++) mk[v] = qvlm_mask16(nc - 16 * v);
    #pragma GCC unroll 16
    for (int r = 0; r < R; r++)
        #pragma GCC unroll 16
        for (int v = 0; v < NV; v++) {
            if (init == INIT_ZERO) acc[r][v] = _mm512_setzero_ps();
            else {
                acc[r][v] = _mm512_maskz_loadu_ps(mk[v], Y + r * ldy + 16 * v);
                if (init == INIT_Y_SCALED) acc[r][v] = _mm512_mul_ps(acc[r][v], _mm512_set1_ps(yscale));
            }
        }
    for (int64_t x = x0; x < x1; x++) {
        __m512 b[4];
        #pragma GCC unroll 16
        for (int v = 0; v < NV; v++) b[v] = _mm512_maskz_loadu_ps(mk[v], B + x * ldb + 16 * v);
        #pragma GCC unroll 16
        for (int r = 0; r < R; r++) {
            __m512 l = _mm512_set1_ps(L[r * ldr + x * ldc]);
            #pragma GCC unroll 16
            for (int v = 0; v < NV; v++)
                acc[r][v] = neg ? _mm512_fnmadd_ps(l, b[v], acc[r][v]) : _mm512_fmadd_ps(l, b[v], acc[r][v]);
        }
    }
    #pragma GCC unroll 16
    for (int r = 0; r < R; r++)
        #pragma GCC unroll 16
        for (int v = 0; v < NV; v++) _mm512_mask_storeu_ps(Y + r * ldy + 16 * v, mk[v], acc[r][v]);
}

#define RS_CASE(R, NV)                                                                                       \
    case (R) * 8 + (NV):                                                                                     \
        if (neg) rs_core(R, NV, 1, Y, ldy, L, ldr, ldc, B, ldb, x0, x1, nc, init, yscale);                 \
        else rs_core(R, NV, 0, Y, ldy, L, ldr, ldc, B, ldb, x0, x1, nc, init, yscale);                     \
        break;

/* Rows [0, R) (R <= 4), columns [0, nc) (nc <= 64) of Y. */
static void rs_block(int R, float *Y, int64_t ldy, const float *L, int64_t ldr, int64_t ldc, const float *B,
                     int64_t ldb, int64_t x0, int64_t x1, int nc, int init, float yscale, int neg) {
    switch (R * 8 + (nc + 15) / 16) {
        RS_CASE(1, 1) RS_CASE(1, 2) RS_CASE(1, 3) RS_CASE(1, 4)
        RS_CASE(2, 1) RS_CASE(2, 2) RS_CASE(2, 3) RS_CASE(2, 4)
        RS_CASE(3, 1) RS_CASE(3, 2) RS_CASE(3, 3) RS_CASE(3, 4)
        RS_CASE(4, 1) RS_CASE(4, 2) RS_CASE(4, 3) RS_CASE(4, 4)
    default: break;
    }
}

/* All rows [0, n) and columns [0, ncols) of Y, in 4-row x 64-column blocks. */
static void rs_all(float *Y, int64_t ldy, int64_t n, const float *L, int64_t ldr, int64_t ldc, const float *B,
                   int64_t ldb, int64_t x0, int64_t x1, int64_t ncols, int init, float yscale, int neg) {
    for (int64_t r0 = 0; r0 < n; r0 += 4) {
        int R = (int)QVLM_MIN((int64_t)4, n - r0);
        for (int64_t c0 = 0; c0 < ncols; c0 += 64)
            rs_block(R, Y + r0 * ldy + c0, ldy, L + r0 * ldr, ldr, ldc, B + c0, ldb, x0, x1,
                     (int)QVLM_MIN((int64_t)64, ncols - c0), init, yscale, neg);
    }
}

/* ---- small vector helpers ------------------------------------------------------------------ */

/* y[0..n) = x * s */
static void vscale(float *y, const float *x, int64_t n, float s) {
    __m512 sv = _mm512_set1_ps(s);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = qvlm_mask16(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), sv));
    }
}

/* ref_l2norm: y = x * inv, then y *= scale when scale != 0 (two roundings, as the reference). */
static void l2norm(float *y, const float *x, int64_t n, float scale) {
    float inv = 1.0f / sqrtf(qvlm_vsumsq16(x, n) + 1e-6f);
    __m512 iv = _mm512_set1_ps(inv), sv = _mm512_set1_ps(scale);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = qvlm_mask16(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), iv);
        if (scale != 0.0f) v = _mm512_mul_ps(v, sv);
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

#define PF 6 /* tokens of prefetch distance */

static void prefetch_rows(const float *p, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) _mm_prefetch((const char *)(p + i), _MM_HINT_T0);
    _mm_prefetch((const char *)(p + n - 1), _MM_HINT_T0);
}

static void prefetch_token(const qvlm_gdn_job *j, int64_t h, int64_t t) {
    const float *q, *k, *v;
    qvlm_gdn_rows(j, h, t, &q, &k, &v);
    prefetch_rows(q, j->d.k_dim);
    prefetch_rows(k, j->d.k_dim);
    prefetch_rows(v, j->d.v_dim);
}

/* ---- recurrent form (ref_recurrent) ---------------------------------------------------------- */

/* Columns [c0, c0 + nc) (nc <= 64) of one token's update: pass 1 m = (S decay)^T k, then
 * delta, pass 2 the new S and o. */
AI void rec_cols(const int NV, float *S, int64_t dv, int64_t dk, const float *q, const float *k, const float *v,
                 float beta, float decay, float *o, int nc) {
    __mmask16 mk[4];
    __m512 m[4], ov[4], dl[4];
    const __m512 dec = _mm512_set1_ps(decay);
    #pragma GCC unroll 16
    for (int u = 0; u < NV; u++) mk[u] = qvlm_mask16(nc - 16 * u), m[u] = _mm512_setzero_ps();
    for (int64_t x = 0; x < dk; x++) {
        __m512 kx = _mm512_set1_ps(k[x]);
        #pragma GCC unroll 16
        for (int u = 0; u < NV; u++)
            m[u] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk[u], S + x * dv + 16 * u), dec), kx, m[u]);
    }
    #pragma GCC unroll 16
    for (int u = 0; u < NV; u++) {
        dl[u] = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk[u], v + 16 * u), m[u]), _mm512_set1_ps(beta));
        ov[u] = _mm512_setzero_ps();
    }
    for (int64_t x = 0; x < dk; x++) {
        __m512 kx = _mm512_set1_ps(k[x]), qx = _mm512_set1_ps(q[x]);
        #pragma GCC unroll 16
        for (int u = 0; u < NV; u++) {
            float *sp = S + x * dv + 16 * u;
            __m512 s = _mm512_fmadd_ps(kx, dl[u], _mm512_mul_ps(_mm512_maskz_loadu_ps(mk[u], sp), dec));
            _mm512_mask_storeu_ps(sp, mk[u], s);
            ov[u] = _mm512_fmadd_ps(s, qx, ov[u]);
        }
    }
    #pragma GCC unroll 16
    for (int u = 0; u < NV; u++) _mm512_mask_storeu_ps(o + 16 * u, mk[u], ov[u]);
}

static void recurrent(const qvlm_gdn_job *j, int64_t h, float *work) {
    const int64_t dk = j->d.k_dim, dv = j->d.v_dim, Hv = j->d.n_v_heads, dkp = qvlm_gdn_pad(dk);
    float *S = j->S + h * dk * dv;
    float *q = work, *k = q + dkp;
    const float qscale = 1.0f / sqrtf((float)dk);
    for (int64_t t = 0; t < j->T; t++) {
        const float *qr, *kr, *v;
        float beta, g;
        qvlm_gdn_rows(j, h, t, &qr, &kr, &v);
        qvlm_gdn_gates(j, h, t, &beta, &g);
        l2norm(q, qr, dk, qscale);
        l2norm(k, kr, dk, 0.0f);
        const float decay = qvlm_vexp(g);
        float *o = j->out + (t * Hv + h) * dv;
        for (int64_t c0 = 0; c0 < dv; c0 += 64) {
            int nc = (int)QVLM_MIN((int64_t)64, dv - c0);
            switch ((nc + 15) / 16) {
            case 1: rec_cols(1, S + c0, dv, dk, q, k, v + c0, beta, decay, o + c0, nc); break;
            case 2: rec_cols(2, S + c0, dv, dk, q, k, v + c0, beta, decay, o + c0, nc); break;
            case 3: rec_cols(3, S + c0, dv, dk, q, k, v + c0, beta, decay, o + c0, nc); break;
            default: rec_cols(4, S + c0, dv, dk, q, k, v + c0, beta, decay, o + c0, nc); break;
            }
        }
    }
}

/* ---- chunked form (ref_chunk) ------------------------------------------------------------------ */

typedef struct chunk_ws {
    float *Q, *K, *KB, *QE, *WK; /* [C][dkp] */
    float *UK;                   /* [C][dvp + dkp]: U (then VN) | KC */
    float *Kt;                   /* [dkp][C] */
    float *A, *QK;               /* [C][C] */
    float *cum, *beta, *ec;      /* [C] */
} chunk_ws;

static chunk_ws carve(float *w, int64_t dkp, int64_t dvp) {
    chunk_ws s;
    s.Q = w, w += C * dkp;
    s.K = w, w += C * dkp;
    s.KB = w, w += C * dkp;
    s.QE = w, w += C * dkp;
    s.WK = w, w += C * dkp;
    s.UK = w, w += C * (dvp + dkp);
    s.Kt = w, w += dkp * C;
    s.A = w, w += C * C;
    s.QK = w, w += C * C;
    s.cum = w, w += C;
    s.beta = w, w += C;
    s.ec = w;
    return s;
}

static void chunk(const qvlm_gdn_job *j, int64_t h, int64_t t0, int64_t n, float *work) {
    const int64_t dk = j->d.k_dim, dv = j->d.v_dim, Hv = j->d.n_v_heads;
    const int64_t dkp = qvlm_gdn_pad(dk), dvp = qvlm_gdn_pad(dv), ukw = dvp + dkp;
    float *S = j->S + h * dk * dv;
    chunk_ws w = carve(work, dkp, dvp);
    float *U = w.UK, *KC = w.UK + dvp;
    const float qscale = 1.0f / sqrtf((float)dk);
    /* Load, normalise, gates. The rows of a head are 512-byte pieces of qkv rows tens of KB
     * apart (three page-crossing streams the hardware prefetchers do not follow): fetch them
     * PF tokens ahead. */
    for (int64_t i = 0; i < QVLM_MIN(n, (int64_t)PF); i++) prefetch_token(j, h, t0 + i);
    for (int64_t i = 0; i < n; i++) {
        const float *qr, *kr, *v;
        float g;
        if (i + PF < n) prefetch_token(j, h, t0 + i + PF);
        qvlm_gdn_rows(j, h, t0 + i, &qr, &kr, &v);
        qvlm_gdn_gates(j, h, t0 + i, &w.beta[i], &g);
        l2norm(w.Q + i * dkp, qr, dk, qscale);
        l2norm(w.K + i * dkp, kr, dk, 0.0f);
        w.cum[i] = (i ? w.cum[i - 1] : 0.0f) + g;
        vscale(U + i * ukw, v, dv, w.beta[i]);
    }
    for (int64_t i = 0; i < n; i++) {
        w.ec[i] = qvlm_vexp(w.cum[i]);
        vscale(w.KB + i * dkp, w.K + i * dkp, dk, w.beta[i]);
        vscale(KC + i * ukw, w.KB + i * dkp, dk, w.ec[i]);
        vscale(w.QE + i * dkp, w.Q + i * dkp, dk, w.ec[i]);
    }
    /* K transposed, for the dots with every K_j as one row of B. */
    for (int64_t jj = 0; jj < n; jj++)
        for (int64_t x = 0; x < dk; x++) w.Kt[x * C + jj] = w.K[jj * dkp + x];
    /* A = (KB K^T) o G, QK = (Q K^T) o G: row i needs columns j <= i. */
    for (int64_t i0 = 0; i0 < n; i0 += 4) {
        int R = (int)QVLM_MIN((int64_t)4, n - i0);
        int nc = (int)(i0 + R);
        rs_block(R, w.A + i0 * C, C, w.KB + i0 * dkp, dkp, 1, w.Kt, C, 0, dk, nc, INIT_ZERO, 0, 0);
        rs_block(R, w.QK + i0 * C, C, w.Q + i0 * dkp, dkp, 1, w.Kt, C, 0, dk, nc, INIT_ZERO, 0, 0);
        for (int64_t i = i0; i < i0 + R; i++) {
            __m512 ci = _mm512_set1_ps(w.cum[i]);
            for (int64_t c0 = 0; c0 <= i; c0 += 16) {
                __mmask16 m = qvlm_mask16(i + 1 - c0);
                __m512 G = qvlm_vexp16(_mm512_sub_ps(ci, _mm512_maskz_loadu_ps(m, w.cum + c0)));
                float *ap = w.A + i * C + c0, *qp = w.QK + i * C + c0;
                _mm512_mask_storeu_ps(ap, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, ap), G));
                _mm512_mask_storeu_ps(qp, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, qp), G));
            }
        }
    }
    /* Forward substitution on U and KC: rows i0..i0+3 take j < i0 together, then the
     * triangle row by row (each row still runs j = 0, 1, ... in order). */
    for (int64_t i0 = 0; i0 < n; i0 += 4) {
        int R = (int)QVLM_MIN((int64_t)4, n - i0);
        rs_all(U + i0 * ukw, ukw, R, w.A + i0 * C, C, 1, U, ukw, 0, i0, dv, INIT_Y, 0, 1);
        rs_all(KC + i0 * ukw, ukw, R, w.A + i0 * C, C, 1, KC, ukw, 0, i0, dk, INIT_Y, 0, 1);
        for (int r = 1; r < R; r++) {
            int64_t i = i0 + r;
            rs_all(U + i * ukw, ukw, 1, w.A + i * C, C, 1, U, ukw, i0, i, dv, INIT_Y, 0, 1);
            rs_all(KC + i * ukw, ukw, 1, w.A + i * C, C, 1, KC, ukw, i0, i, dk, INIT_Y, 0, 1);
        }
    }
    /* VN = U - KC S (in place in U), then O = QE S + (QK o lower) VN straight into out. */
    rs_all(U, ukw, n, KC, ukw, 1, S, dv, 0, dk, dv, INIT_Y, 0, 1);
    float *O = j->out + (t0 * Hv + h) * dv;
    const int64_t ldo = Hv * dv;
    rs_all(O, ldo, n, w.QE, dkp, 1, S, dv, 0, dk, dv, INIT_ZERO, 0, 0);
    for (int64_t i0 = 0; i0 < n; i0 += 4) {
        int R = (int)QVLM_MIN((int64_t)4, n - i0);
        rs_all(O + i0 * ldo, ldo, R, w.QK + i0 * C, C, 1, U, ukw, 0, i0 + 1, dv, INIT_Y, 0, 0);
        for (int r = 1; r < R; r++) {
            int64_t i = i0 + r;
            rs_all(O + i * ldo, ldo, 1, w.QK + i * C, C, 1, U, ukw, i0 + 1, i + 1, dv, INIT_Y, 0, 0);
        }
    }
    /* S = vexp(c_last) S + WK^T VN, WK_i = K_i vexp(c_last - cum_i). */
    const float clast = w.cum[n - 1], cd = qvlm_vexp(clast);
    for (int64_t i = 0; i < n; i++) vscale(w.WK + i * dkp, w.K + i * dkp, dk, qvlm_vexp(clast - w.cum[i]));
    rs_all(S, dv, dk, w.WK, 1, dkp, U, ukw, 0, n, dv, INIT_Y_SCALED, cd, 0);
}

void qvlm_gdn_head_avx512(const qvlm_gdn_job *j, int64_t h, float *work) {
    if (!j->chunked) {
        recurrent(j, h, work);
        return;
    }
    for (int64_t t0 = 0; t0 < j->T; t0 += C) chunk(j, h, t0, QVLM_MIN((int64_t)C, j->T - t0), work);
}

#endif /* __x86_64__ */
