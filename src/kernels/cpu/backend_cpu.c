/* backend_cpu.c - the CPU backend: host memory, a thread pool, and the ops table. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/quant.h"

/* ---- device ----------------------------------------------------------------------------- */

static const char *cpu_name(const qvlm_backend *be) { return ((const cpu_backend *)be)->name; }

static struct qvlm_pool *cpu_host_pool(qvlm_backend *be) { return ((cpu_backend *)be)->pool; }

static void cpu_destroy(qvlm_backend *be) {
    cpu_backend *c = (cpu_backend *)be;
    qvlm_pool_destroy(c->pool);
    free(c);
}

/* Each allocation carries a 64-byte header with its size, so frees can be accounted. */
#define HDR 64

static void *cpu_alloc(qvlm_backend *be, size_t n) {
    cpu_backend *c = (cpu_backend *)be;
    void *p = NULL;
    if (n > SIZE_MAX - HDR || posix_memalign(&p, 64, HDR + n) != 0) return NULL;
    *(size_t *)p = n;
    size_t cur = atomic_fetch_add(&c->mem_current, n) + n, peak = atomic_load(&c->mem_peak);
    while (cur > peak && !atomic_compare_exchange_weak(&c->mem_peak, &peak, cur)) {
    }
    return (uint8_t *)p + HDR;
}

static void cpu_free(qvlm_backend *be, void *p) {
    if (!p) return;
    cpu_backend *c = (cpu_backend *)be;
    void *base = (uint8_t *)p - HDR;
    atomic_fetch_sub(&c->mem_current, *(size_t *)base);
    free(base);
}

static void cpu_mem_stats(qvlm_backend *be, size_t *current_bytes, size_t *peak_bytes) {
    cpu_backend *c = (cpu_backend *)be;
    if (current_bytes) *current_bytes = atomic_load(&c->mem_current);
    if (peak_bytes) *peak_bytes = atomic_load(&c->mem_peak);
}

static void cpu_mem_reset_peak(qvlm_backend *be) {
    cpu_backend *c = (cpu_backend *)be;
    atomic_store(&c->mem_peak, atomic_load(&c->mem_current));
}

static qvlm_status cpu_weight(qvlm_backend *be, const void *host, qvlm_dtype dtype, int n_dims, const int64_t *ne,
                              qvlm_tensor *out, qvlm_error *err) {
    memset(out, 0, sizeof(*out));
    if (n_dims < 0 || n_dims > 4) return qvlm_errorf(err, QVLM_E_INVALID, "weight rank %d (at most 4)", n_dims);
    out->dtype = dtype;
    out->n_dims = n_dims;
    for (int i = 0; i < n_dims; i++) out->ne[i] = ne[i];
    out->data = (void *)host; /* mmapped, read-only: ops never write weights */
    return QVLM_OK;
}

static void cpu_weight_free(qvlm_backend *be, qvlm_tensor *t) { t->data = NULL; }

/* ---- streams ------------------------------------------------------------------------------ */

static qvlm_status cpu_stream_create(qvlm_backend *be, qvlm_stream **out, qvlm_error *err) {
    cpu_stream *s = calloc(1, sizeof(*s));
    if (!s) return qvlm_errorf(err, QVLM_E_NOMEM, "cpu stream: out of memory");
    s->base.be = be;
    s->be = (cpu_backend *)be;
    *out = &s->base;
    return QVLM_OK;
}

static void cpu_stream_destroy(qvlm_stream *st) {
    cpu_stream *s = cpu_stream_of(st);
    cpu_free(&s->be->base, s->mm_work);
    cpu_free(&s->be->base, s->scratch);
    free(s);
}

static qvlm_status cpu_reserve_matmul(qvlm_stream *st, int64_t n_rows, int64_t k, qvlm_error *err) {
    cpu_stream *s = cpu_stream_of(st);
    size_t need = qvlm_cpu_matmul_work_bytes(&s->be->cpu, n_rows, k, QVLM_DTYPE_BF16);
    size_t need_q = qvlm_cpu_matmul_work_bytes(&s->be->cpu, n_rows, k, QVLM_DTYPE_Q8_0);
    if (need_q > need) need = need_q;
    if (need <= s->mm_work_bytes) return QVLM_OK;
    void *p = cpu_alloc(&s->be->base, need);
    if (!p) return qvlm_errorf(err, QVLM_E_NOMEM, "cpu stream: cannot allocate %zu bytes of matmul scratch", need);
    cpu_free(&s->be->base, s->mm_work);
    s->mm_work = p;
    s->mm_work_bytes = need;
    return QVLM_OK;
}

void *cpu_scratch(qvlm_stream *st, size_t per_thread, int n_threads) {
    cpu_stream *s = cpu_stream_of(st);
    per_thread = (per_thread + 63) & ~(size_t)63;
    size_t need = per_thread * (size_t)n_threads;
    if (need > s->scratch_bytes) {
        void *p = cpu_alloc(&s->be->base, need);
        if (!p) return NULL;
        cpu_free(&s->be->base, s->scratch);
        s->scratch = p;
        s->scratch_bytes = need;
    }
    return s->scratch;
}

struct par_job {
    qvlm_task_fn fn;
    void *ctx;
};

void cpu_parallel(qvlm_stream *s, int64_t n_rows, int64_t min_rows_per_thread, qvlm_task_fn fn, void *ctx) {
    qvlm_pool *pool = cpu_pool(s);
    int64_t nth = min_rows_per_thread > 0 ? n_rows / min_rows_per_thread : n_rows;
    if (nth < 1) nth = 1;
    if (nth > qvlm_pool_size(pool)) nth = qvlm_pool_size(pool);
    qvlm_pool_run_n(pool, fn, ctx, (int)nth);
}

float cpu_weight_at(const qvlm_tensor *w, int64_t i) {
    switch (w->dtype) {
    case QVLM_DTYPE_F32: return ((const float *)w->data)[i];
    case QVLM_DTYPE_BF16: return qvlm_bf16_to_f32(((const qvlm_bf16 *)w->data)[i]);
    case QVLM_DTYPE_F16: return qvlm_f16_to_f32(((const qvlm_f16 *)w->data)[i]);
    default: return 0.0f; /* shapes and dtypes are validated at load */
    }
}

/* ---- copies ------------------------------------------------------------------------------ */

static void cpu_copy(qvlm_stream *s, void *dst, const void *src, size_t n) {
    if (n) memmove(dst, src, n);
}
static void cpu_zero(qvlm_stream *s, void *dst, size_t n) {
    if (n) memset(dst, 0, n);
}

/* ---- embedding rows and matrix products --------------------------------------------------- */

struct rows_job {
    float *y;
    const qvlm_tensor *table;
    const int32_t *ids;
    int64_t n, dim;
};

static void get_rows_task(void *p, int ith, int nth) {
    struct rows_job *j = p;
    long r0, r1;
    qvlm_split_rows(j->n, ith, nth, &r0, &r1);
    size_t row_bytes = qvlm_dtype_row_bytes(j->table->dtype, j->dim);
    for (long t = r0; t < r1; t++) {
        const uint8_t *src = (const uint8_t *)j->table->data + (size_t)j->ids[t] * row_bytes;
        if (j->table->dtype == QVLM_DTYPE_Q8_0X8) qvlm_dequantize_q8_0x8_row(j->y + t * j->dim, j->table->data, j->ids[t], j->dim);
        else if (j->table->dtype == QVLM_DTYPE_Q8_0) qvlm_dequantize_q8_0(j->y + t * j->dim, src, j->dim);
        else qvlm_to_f32(j->y + t * j->dim, src, j->table->dtype, (size_t)j->dim);
    }
}

static void cpu_get_rows(qvlm_stream *s, float *y, const qvlm_tensor *table, const int32_t *ids, int64_t n) {
    struct rows_job j = {y, table, ids, n, qvlm_tensor_cols(table)};
    cpu_parallel(s, n, 8, get_rows_task, &j);
}

struct wrows_job {
    float *y;
    const qvlm_tensor *table;
    const int32_t *idx;
    const float *w;
    int64_t n, taps, dim;
};

static void wrows_task(void *p, int ith, int nth) {
    struct wrows_job *j = p;
    long r0, r1;
    qvlm_split_rows(j->n, ith, nth, &r0, &r1);
    for (long r = r0; r < r1; r++)
        for (int64_t c = 0; c < j->dim; c++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < j->taps; k++)
                acc += cpu_weight_at(j->table, (int64_t)j->idx[r * j->taps + k] * j->dim + c) * j->w[r * j->taps + k];
            j->y[r * j->dim + c] += acc;
        }
}

static void cpu_add_weighted_rows(qvlm_stream *s, float *y, const qvlm_tensor *table, const int32_t *idx,
                                  const float *w, int64_t n, int64_t taps) {
    struct wrows_job j = {y, table, idx, w, n, taps, qvlm_tensor_cols(table)};
    cpu_parallel(s, n, 16, wrows_task, &j);
}

static void cpu_matmul(qvlm_stream *st, float *y, int64_t ldy, const float *x, int64_t ldx, const qvlm_tensor *w,
                       const qvlm_tensor *bias, int64_t n) {
    cpu_stream *s = cpu_stream_of(st);
    int64_t d = w->ne[0], k = qvlm_tensor_cols(w);
    if (w->n_dims == 3) { /* a slice of stacked experts is passed as 2-D by the caller */
        d = w->ne[1];
    }
    size_t need = qvlm_cpu_matmul_work_bytes(&s->be->cpu, n, k, w->dtype);
    if (need > s->mm_work_bytes) {
        /* Not reserved: grow once (callers reserve at set-up, so this is the rare path). */
        void *p = cpu_alloc(&s->be->base, need);
        if (QVLM_NEVER(!p)) return;
        cpu_free(&s->be->base, s->mm_work);
        s->mm_work = p;
        s->mm_work_bytes = need;
    }
    qvlm_cpu_matmul(&s->be->cpu, y, ldy, x, ldx, w->data, w->dtype, bias ? (const float *)bias->data : NULL, n, k,
                    d, s->mm_work);
}

static void cpu_matmul_multi(qvlm_stream *st, int n_parts, const qvlm_matmul_part *parts, const float *x, int64_t ldx,
                             int64_t n) {
    cpu_stream *s = cpu_stream_of(st);
    qvlm_mm_part mp[8];
    if (QVLM_NEVER(n_parts < 1 || n_parts > 8)) return;
    const int64_t k = qvlm_tensor_cols(parts[0].w);
    for (int i = 0; i < n_parts; i++) {
        const qvlm_tensor *w = parts[i].w;
        if (QVLM_NEVER(qvlm_tensor_cols(w) != k)) return;
        mp[i] = (qvlm_mm_part){parts[i].y, parts[i].ldy, w->data, w->dtype,
                               parts[i].bias ? (const float *)parts[i].bias->data : NULL, w->n_dims == 3 ? w->ne[1] : w->ne[0]};
    }
    size_t need = qvlm_cpu_matmul_work_bytes(&s->be->cpu, n, k, parts[0].w->dtype);
    if (need > s->mm_work_bytes) { /* not reserved: grow once (the rare path, as cpu_matmul) */
        void *p = cpu_alloc(&s->be->base, need);
        if (QVLM_NEVER(!p)) return;
        cpu_free(&s->be->base, s->mm_work);
        s->mm_work = p;
        s->mm_work_bytes = need;
    }
    qvlm_cpu_matmul_multi(&s->be->cpu, n_parts, mp, x, ldx, n, k, s->mm_work);
}

static const qvlm_backend_ops CPU_OPS = {
    .name = cpu_name,
    .destroy = cpu_destroy,
    .host_pool = cpu_host_pool,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .mem_stats = cpu_mem_stats,
    .mem_reset_peak = cpu_mem_reset_peak,
    .weight = cpu_weight,
    .weight_free = cpu_weight_free,
    .stream_create = cpu_stream_create,
    .stream_destroy = cpu_stream_destroy,
    .reserve_matmul = cpu_reserve_matmul,
    .sync = NULL,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .get_rows = cpu_get_rows,
    .add_weighted_rows = cpu_add_weighted_rows,
    .matmul = cpu_matmul,
    .rms_norm = cpu_rms_norm,
    .layer_norm = cpu_layer_norm,
    .add = cpu_add,
    .silu_mul = cpu_silu_mul,
    .gelu = cpu_gelu,
    .sigmoid_mul = cpu_sigmoid_mul,
    .conv1d_silu = cpu_conv1d_silu,
    .gated_delta = cpu_gated_delta,
    .gated_rms_norm = cpu_gated_rms_norm,
    .rope_multimodal = cpu_rope_multimodal,
    .rope_vision = cpu_rope_vision,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .attention_segments = cpu_attention_segments,
    .moe_route = cpu_moe_route,
    .gather_rows = cpu_gather_rows,
    .scatter_add_rows = cpu_scatter_add_rows,
    .add_rms_norm = cpu_add_rms_norm,
    .matmul_multi = cpu_matmul_multi,
    .add_layer_norm = cpu_add_layer_norm,
};

qvlm_status qvlm_backend_cpu_create(const qvlm_backend_params *p, qvlm_backend **out, qvlm_error *err) {
    cpu_backend *c = calloc(1, sizeof(*c));
    if (!c) return qvlm_errorf(err, QVLM_E_NOMEM, "cpu backend: out of memory");
    qvlm_status rc = qvlm_pool_create(p->n_threads, &c->pool, err);
    if (rc) {
        free(c);
        return rc;
    }
    c->base.ops = &CPU_OPS;
    c->base.kind = QVLM_BACKEND_CPU;
    c->base.precision = p->precision;
    c->cpu.pool = c->pool;
    c->cpu.isa = qvlm_cpu_detect_isa();
    c->cpu.precision = p->precision == QVLM_COMPUTE_BF16 ? QVLM_PREC_BF16 : QVLM_PREC_F32;
    c->base.q8_panels = c->cpu.precision == QVLM_PREC_BF16; /* the I8 kernels (cpu.h) */
    snprintf(c->name, sizeof(c->name), "cpu (%s, %d threads, %s)", qvlm_isa_name(c->cpu.isa),
             qvlm_pool_size(c->pool), p->precision == QVLM_COMPUTE_BF16 ? "bf16" : "f32");
    *out = &c->base;
    return QVLM_OK;
}
