/* matmul.c - matrix product dispatch: pick the kernel family, lay out `work`, split the
 * outputs across the pool.
 *
 * A call walks the tokens in chunks of QVLM_MM_CHUNK. For each chunk the activations are
 * packed once into `work` (shared by all threads), then every thread computes its own block of
 * outputs: a range of weight rows for all tokens of the chunk (each weight row is read by one
 * thread only), or, when there are too few rows to share, a range of tokens for all rows.
 * Split points are multiples of 16 rows (64 bytes of y) or 4 tokens, so no two threads write
 * one cache line of y (for 64-byte aligned y and ldy). None of this changes a single output:
 * each is computed in the fixed order of cpu.h whatever its neighbours, thread or chunk.
 */
#include <assert.h>
#include <math.h>
#include <stdint.h>

#include "kernels/cpu/matmul_impl.h"

#define ALIGN64(x) (((x) + (size_t)63) & ~(size_t)63)

/* Rows split across threads only when each thread gets at least this many; below, tokens are. */
#define MIN_ROWS_PER_THREAD 64
/* Multiply-adds below which a call is not worth waking another thread for. */
#define MIN_MACS_PER_THREAD (64 * 1024)

static int64_t units(int64_t k) { return (k + QVLM_MM_UNIT - 1) / QVLM_MM_UNIT; }

/* One thread's panel block: the L2 target, or 4 f32 rows when a row alone is larger. Grows with
 * k (so does the work size: a buffer reserved for the largest k serves the smaller ones). */
static size_t panel_block_bytes(int64_t k) {
    size_t row_bytes = (size_t)units(k) * QVLM_MM_UNIT * sizeof(float);
    size_t four = 4 * row_bytes;
    return four > QVLM_MM_PANEL_TARGET_BYTES ? four : QVLM_MM_PANEL_TARGET_BYTES;
}

/* Rows per panel block for packed elements of elem_bytes (bf16 panels hold twice the rows:
 * each block re-reads the packed x from L3, so more rows per block is less x traffic). */
int64_t qvlm_mm_jb_rows(int64_t k, size_t elem_bytes) {
    size_t row_bytes = (size_t)units(k) * QVLM_MM_UNIT * elem_bytes;
    int64_t rows = (int64_t)(panel_block_bytes(k) / row_bytes) & ~(int64_t)3;
    return rows > 256 ? 256 : rows;
}

/* Per-thread scratch: a panel block (f32 layout, the larger one) or the reference's two
 * operand rows. */
size_t qvlm_mm_thread_scratch_bytes(int64_t k) {
    size_t row_bytes = (size_t)units(k) * QVLM_MM_UNIT * sizeof(float);
    size_t panel = panel_block_bytes(k);
    size_t ref = 2 * row_bytes;
    size_t i8 = (size_t)16 * qvlm_dtype_row_bytes(QVLM_DTYPE_Q8_0X8, k); /* the smallest I8 block: 2 panels */
    size_t m = panel > ref ? panel : ref;
    return ALIGN64(m > i8 ? m : i8);
}

/* I8 panel rows per block: a multiple of 16 (two 8-row panels), within the L2 target. */
static int64_t i8_jb_rows(int64_t k) {
    int64_t rows = (int64_t)(panel_block_bytes(k) / qvlm_dtype_row_bytes(QVLM_DTYPE_Q8_0X8, k)) & ~(int64_t)15;
    return rows < 16 ? 16 : rows > 256 ? 256 : rows;
}

static size_t xp_region_bytes(int64_t n, int64_t k) {
    int64_t rows = ((n < QVLM_MM_CHUNK ? n : QVLM_MM_CHUNK) + 3) / 4 * 4; /* whole groups of 4 */
    return ALIGN64((size_t)rows * (size_t)units(k) * QVLM_MM_UNIT * sizeof(float));
}

size_t qvlm_cpu_matmul_work_bytes(const qvlm_cpu *cpu, int64_t n, int64_t k, qvlm_dtype wt) {
    (void)wt; /* the same for every dtype and precision: one reservation serves all calls */
    if (n < 1) n = 1;
    if (k < 1) k = 1;
    int nth = qvlm_pool_size(cpu->pool);
    return xp_region_bytes(n, k) + (size_t)nth * qvlm_mm_thread_scratch_bytes(k);
}

/* ---- kernel family -------------------------------------------------------------------------- */

static qvlm_mm_mode mode_of(const qvlm_cpu *cpu, qvlm_dtype wt) {
#if defined(__x86_64__)
    if (cpu->isa >= QVLM_ISA_AVX2 && wt == QVLM_DTYPE_Q8_0X8) return QVLM_MM_I8; /* at either precision */
    if (cpu->isa >= QVLM_ISA_AVX2) {
        if (cpu->precision == QVLM_PREC_F32) return QVLM_MM_F32;
        if (wt == QVLM_DTYPE_Q8_0) return QVLM_MM_I8;
        return cpu->isa >= QVLM_ISA_AVX512_BF16 ? QVLM_MM_NATIVE : QVLM_MM_EMU;
    }
#endif
    return QVLM_MM_SCALAR;
}

static void pack_x(const qvlm_cpu *cpu, const qvlm_mm_ctx *c, int64_t t0, int64_t t1) {
#if defined(__x86_64__)
    if (c->mode == QVLM_MM_I8) {
        if (cpu->isa >= QVLM_ISA_AVX512_BF16) qvlm_mm_i8_pack_x_avx512(c, t0, t1);
        else qvlm_mm_i8_pack_x_avx2(c, t0, t1);
    } else if (cpu->isa >= QVLM_ISA_AVX512) qvlm_mm_pack_x_avx512(c, t0, t1);
    else qvlm_mm_pack_x_avx2(c, t0, t1);
#else
    (void)cpu, (void)c, (void)t0, (void)t1;
#endif
}

static void compute(const qvlm_cpu *cpu, const qvlm_mm_ctx *c, int64_t t0, int64_t t1, int64_t j0, int64_t j1,
                    void *scratch) {
    if (t0 >= t1 || j0 >= j1) return;
#if defined(__x86_64__)
    if (c->mode == QVLM_MM_I8) {
        if (cpu->isa >= QVLM_ISA_AVX512_BF16) qvlm_mm_i8_compute_avx512(c, t0, t1, j0, j1, scratch);
        else qvlm_mm_i8_compute_avx2(c, t0, t1, j0, j1, scratch);
        return;
    }
    if (c->mode != QVLM_MM_SCALAR) {
        if (cpu->isa >= QVLM_ISA_AVX512) qvlm_mm_compute_avx512(c, t0, t1, j0, j1, scratch);
        else qvlm_mm_compute_avx2(c, t0, t1, j0, j1, scratch);
        return;
    }
#endif
    qvlm_ref_compute(c, t0, t1, j0, j1, scratch);
}

/* ---- pool jobs ------------------------------------------------------------------------------ */

#define MAX_PARTS 8

struct mm_job {
    const qvlm_cpu *cpu;
    const qvlm_mm_ctx *c; /* [n_parts], sharing x, k and the packed x */
    int n_parts;
    int64_t t0, t1;       /* tokens of this chunk */
    int split_rows;       /* 1: threads split rows, 0: tokens */
    int64_t n_blocks;     /* blocks of 16 rows over all parts */
    uint8_t *scratch;     /* nth * scratch_bytes */
    size_t scratch_bytes;
};

static void pack_task(void *p, int ith, int nth) {
    struct mm_job *j = p;
    long r0, r1;
    qvlm_split_rows((long)(j->t1 - j->t0), ith, nth, &r0, &r1);
    if (r0 < r1) pack_x(j->cpu, j->c, j->t0 + r0, j->t0 + r1);
}

/* Row blocks are counted per part (a part's rows [16b, 16b + 16)), so a thread boundary never
 * falls inside a 16-row block of any part's y. */
static void compute_task(void *p, int ith, int nth) {
    struct mm_job *j = p;
    void *scratch = j->scratch + (size_t)ith * j->scratch_bytes;
    long b0, b1;
    if (j->split_rows) {
        qvlm_split_rows((long)j->n_blocks, ith, nth, &b0, &b1);
        int64_t base = 0;
        for (int i = 0; i < j->n_parts && b0 < b1; i++) {
            const qvlm_mm_ctx *c = &j->c[i];
            int64_t nb = (c->d + 15) / 16, lo = QVLM_MAX((int64_t)b0 - base, (int64_t)0), hi = QVLM_MIN((int64_t)b1 - base, nb);
            if (lo < hi) compute(j->cpu, c, j->t0, j->t1, lo * 16, QVLM_MIN(hi * 16, c->d), scratch);
            base += nb;
        }
    } else {
        int64_t nt = j->t1 - j->t0;
        qvlm_split_rows((long)((nt + 3) / 4), ith, nth, &b0, &b1);
        int64_t s0 = j->t0 + b0 * 4, s1 = j->t0 + b1 * 4 < j->t1 ? j->t0 + b1 * 4 : j->t1;
        for (int i = 0; i < j->n_parts; i++) compute(j->cpu, &j->c[i], s0, s1, 0, j->c[i].d, scratch);
    }
}

void qvlm_cpu_matmul_multi(const qvlm_cpu *cpu, int n_parts, const qvlm_mm_part *parts, const float *x, int64_t ldx,
                           int64_t n, int64_t k, void *work) {
    assert(n_parts >= 1 && n_parts <= MAX_PARTS);
    if (n <= 0) return;
    /* I8 parts pack x their own way: parts of both kinds run as two passes. */
    int n_i8 = 0;
    for (int i = 0; i < n_parts; i++) n_i8 += mode_of(cpu, parts[i].wt) == QVLM_MM_I8;
    if (n_i8 > 0 && n_i8 < n_parts) {
        qvlm_mm_part sel[MAX_PARTS];
        for (int pass = 0; pass < 2; pass++) {
            int m = 0;
            for (int i = 0; i < n_parts; i++)
                if ((mode_of(cpu, parts[i].wt) == QVLM_MM_I8) == (pass == 0)) sel[m++] = parts[i];
            qvlm_cpu_matmul_multi(cpu, m, sel, x, ldx, n, k, work);
        }
        return;
    }
    qvlm_mm_ctx c[MAX_PARTS];
    int64_t d_total = 0, n_blocks = 0;
    for (int i = 0; i < n_parts; i++) {
        const qvlm_mm_part *pt = &parts[i];
        assert(pt->wt == QVLM_DTYPE_F32 || pt->wt == QVLM_DTYPE_F16 || pt->wt == QVLM_DTYPE_BF16 ||
               pt->wt == QVLM_DTYPE_Q8_0 || pt->wt == QVLM_DTYPE_Q8_0X8);
        assert((pt->wt != QVLM_DTYPE_Q8_0 && pt->wt != QVLM_DTYPE_Q8_0X8) || k % 32 == 0);
        assert(ldx >= k && pt->ldy >= pt->d);
        c[i] = (qvlm_mm_ctx){
            .mode = mode_of(cpu, pt->wt),
            .precision = cpu->precision,
            .y = pt->y, .ldy = pt->ldy, .x = x, .ldx = ldx,
            .w = pt->w, .wt = pt->wt, .w_row_bytes = qvlm_dtype_row_bytes(pt->wt, k),
            .bias = pt->bias, .k = k, .d = pt->d,
            .nu = units(k),
        };
        if (k <= 0) { /* empty sums: y = bias or 0 */
            for (int64_t t = 0; t < n; t++)
                for (int64_t jj = 0; jj < pt->d; jj++) pt->y[t * pt->ldy + jj] = pt->bias ? pt->bias[jj] : 0.0f;
            continue;
        }
        c[i].tail = (int)(k - (c[i].nu - 1) * QVLM_MM_UNIT);
        c[i].xp_elem = c[i].mode == QVLM_MM_NATIVE ? sizeof(uint16_t) : sizeof(float);
        c[i].jb_rows = qvlm_mm_jb_rows(k, c[i].xp_elem); /* panels have the packed x's element size */
        if (c[i].mode == QVLM_MM_I8) c[i].jb_rows = i8_jb_rows(k), c[i].i8_stride = qvlm_mm_i8_stride(k);
        c[i].xp = work;
        d_total += pt->d;
        n_blocks += (pt->d + 15) / 16;
    }
    if (k <= 0 || d_total == 0) return;

    int nth_pool = qvlm_pool_size(cpu->pool);
    struct mm_job job = {
        .cpu = cpu, .c = c, .n_parts = n_parts, .n_blocks = n_blocks,
        .scratch = (uint8_t *)work + xp_region_bytes(n, k),
        .scratch_bytes = qvlm_mm_thread_scratch_bytes(k),
    };
    for (int64_t t0 = 0; t0 < n; t0 += QVLM_MM_CHUNK) {
        int64_t nc = n - t0 < QVLM_MM_CHUNK ? n - t0 : QVLM_MM_CHUNK;
        for (int i = 0; i < n_parts; i++) c[i].t_base = t0;
        job.t0 = t0;
        job.t1 = t0 + nc;
        if (c[0].mode != QVLM_MM_SCALAR) {
            /* Packing is O(n*k): below ~64K elements a thread wake-up costs more than it saves. */
            if (nc * k < 64 * 1024) pack_x(cpu, &c[0], job.t0, job.t1);
            else qvlm_pool_run(cpu->pool, pack_task, &job);
        }
        int64_t macs = nc * k * d_total;
        int nth = (int)(macs / MIN_MACS_PER_THREAD);
        nth = nth < 1 ? 1 : nth > nth_pool ? nth_pool : nth;
        job.split_rows = d_total >= (int64_t)MIN_ROWS_PER_THREAD * nth || nc < 4 * (int64_t)nth;
        qvlm_pool_run_n(cpu->pool, compute_task, &job, nth);
    }
}

void qvlm_cpu_matmul(const qvlm_cpu *cpu, float *y, int64_t ldy, const float *x, int64_t ldx,
                     const void *w, qvlm_dtype wt, const float *bias, int64_t n, int64_t k,
                     int64_t d, void *work) {
    if (d <= 0) return;
    qvlm_mm_part part = {y, ldy, w, wt, bias, d};
    qvlm_cpu_matmul_multi(cpu, 1, &part, x, ldx, n, k, work);
}

/* ---- benchmark helpers --------------------------------------------------------------------- */

uint64_t qvlm_cpu_read_probe(qvlm_isa isa, const void *p, size_t bytes) {
#if defined(__x86_64__)
    if (isa >= QVLM_ISA_AVX512) return qvlm_mm_read_avx512(p, bytes);
    if (isa >= QVLM_ISA_AVX2) return qvlm_mm_read_avx2(p, bytes);
#endif
    size_t q = bytes / 4 / sizeof(uint64_t);
    const uint64_t *s0 = p, *s1 = s0 + q, *s2 = s1 + q, *s3 = s2 + q;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i < q; i++) a ^= s0[i], b ^= s1[i], c ^= s2[i], d ^= s3[i];
    return a ^ b ^ c ^ d;
}

double qvlm_cpu_peak_probe_i8(qvlm_isa isa, int64_t iters) {
#if defined(__x86_64__)
    if (isa >= QVLM_ISA_AVX512_BF16) return qvlm_mm_i8_peak_avx512(iters);
    if (isa >= QVLM_ISA_AVX2) return qvlm_mm_i8_peak_avx2(iters);
#endif
    (void)isa, (void)iters;
    return 0; /* the scalar reference has no int8 kernel to probe */
}

double qvlm_cpu_peak_probe(qvlm_isa isa, qvlm_precision precision, int64_t iters) {
#if defined(__x86_64__)
    if (isa >= QVLM_ISA_AVX512) return qvlm_mm_peak_avx512(isa >= QVLM_ISA_AVX512_BF16 && precision == QVLM_PREC_BF16, iters);
    if (isa >= QVLM_ISA_AVX2) return qvlm_mm_peak_avx2(iters);
#endif
    (void)precision;
    /* Eight independent fmaf chains: what the scalar reference's inner loop can reach. */
    volatile float seed = 1.0f;
    float a[8];
    for (int i = 0; i < 8; i++) a[i] = seed + (float)i;
    float m = seed * 0.999999f, c = seed * 1e-7f;
    for (int64_t it = 0; it < iters; it++)
        for (int i = 0; i < 8; i++) a[i] = fmaf(a[i], m, c);
    volatile float sink = a[0] + a[7];
    (void)sink;
    return (double)iters * 8 * 2;
}
