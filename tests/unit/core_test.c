/* core_test.c - status messages, dtype conversions, the thread pool, atomic file writes. */
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/fileio.h"
#include "core/status.h"
#include "core/threads.h"
#include "qtest.h"

static void test_errorf_and_prefix(void) {
    qvlm_error err = {0};
    ASSERT_EQ_INT(qvlm_errorf(&err, QVLM_E_CORRUPT, "%s: tensor '%s'", "a.safetensors", "w"), QVLM_E_CORRUPT);
    ASSERT_STR_EQ(err.msg, "a.safetensors: tensor 'w'");
    qvlm_error_prefix(&err, QVLM_E_CORRUPT, "loading %s", "dir");
    ASSERT_STR_EQ(err.msg, "loading dir: a.safetensors: tensor 'w'");
    ASSERT_STR_EQ(qvlm_status_name(QVLM_E_NOMEM), "E_NOMEM");
    ASSERT_EQ_INT(qvlm_errorf(NULL, QVLM_E_IO, "dropped"), QVLM_E_IO);
}

static void test_bf16_round_trip(void) {
    /* 1 + 2^-8 lies exactly between two bf16 values; ties go to even (1.0). */
    ASSERT_EQ_INT(qvlm_f32_to_bf16(1.00390625f), 0x3f80);
    ASSERT_EQ_INT(qvlm_f32_to_bf16(1.01171875f), 0x3f82); /* 1 + 3*2^-8 -> up to even */
    ASSERT_NEAR(qvlm_bf16_to_f32(0x4049), 3.140625, 0);
    ASSERT_TRUE(isnan(qvlm_bf16_to_f32(qvlm_f32_to_bf16(NAN))));
}

static void test_f16_round_trip(void) {
    float vals[] = {0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.9604645e-08f, 0.333251953125f};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
        ASSERT_NEAR(qvlm_f16_to_f32(qvlm_f32_to_f16(vals[i])), vals[i], 0);
    ASSERT_EQ_INT(qvlm_f32_to_f16(1e6f), 0x7c00); /* overflow to inf */
    ASSERT_EQ_INT(qvlm_dtype_from_name("BF16"), QVLM_DTYPE_BF16);
    ASSERT_EQ_INT(qvlm_dtype_from_name("F8_E4M3"), -1);
}

struct sum_ctx {
    _Atomic long total;
    long n;
    _Atomic int calls;
};

static void sum_task(void *p, int ith, int nth) {
    struct sum_ctx *c = p;
    long r0, r1, s = 0;
    qvlm_split_rows(c->n, ith, nth, &r0, &r1);
    for (long i = r0; i < r1; i++) s += i;
    atomic_fetch_add(&c->total, s);
    atomic_fetch_add(&c->calls, 1);
}

static void test_pool_runs_every_slice(void) {
    qvlm_error err;
    qvlm_pool *pool;
    ASSERT_OK(qvlm_pool_create(4, &pool, &err), &err);
    for (int rep = 0; rep < 2000; rep++) {
        struct sum_ctx c = {.n = 1000 + rep};
        qvlm_pool_run(pool, sum_task, &c);
        if (atomic_load(&c.total) != c.n * (c.n - 1) / 2 || atomic_load(&c.calls) != 4) {
            qvlm_pool_destroy(pool);
            QTEST_FAIL("rep %d: total %ld calls %d", rep, (long)c.total, (int)c.calls);
        }
    }
    struct sum_ctx c = {.n = 10};
    qvlm_pool_run_n(pool, sum_task, &c, 2);
    ASSERT_EQ_INT(atomic_load(&c.calls), 2);
    ASSERT_EQ_INT(atomic_load(&c.total), 45);
    usleep(300 * 1000); /* let the workers fall asleep, then wake them */
    c = (struct sum_ctx){.n = 100};
    qvlm_pool_run(pool, sum_task, &c);
    ASSERT_EQ_INT(atomic_load(&c.total), 4950);
    qvlm_pool_destroy(pool);
}

struct slot_ctx {
    _Atomic int ran[16];     /* calls per slot */
    _Atomic int running[16]; /* calls of a slot in progress */
    _Atomic int overlap;     /* a slot ran twice at once */
    int sleepy;              /* slot that sleeps (a descheduled thread), or -1 */
};

static void slot_task(void *p, int ith, int nth) {
    struct slot_ctx *c = p;
    if (atomic_fetch_add(&c->running[ith], 1) != 0) atomic_store(&c->overlap, 1);
    if (ith == c->sleepy) usleep(200);
    atomic_fetch_add(&c->ran[ith], 1);
    atomic_fetch_sub(&c->running[ith], 1);
    (void)nth;
}

/* Slots are claimed dynamically: each runs exactly once, never twice at once, also with more
 * threads than CPUs (descheduled workers) and with one slow slot. */
static void test_pool_slots_once_each(void) {
    qvlm_error err;
    int sizes[2] = {3, 9};
    for (int si = 0; si < 2; si++) {
        qvlm_pool *pool;
        ASSERT_OK(qvlm_pool_create(sizes[si], &pool, &err), &err);
        for (int rep = 0; rep < 3000; rep++) {
            struct slot_ctx c = {.sleepy = rep % 50 == 0 ? rep % sizes[si] : -1};
            int nth = 1 + rep % sizes[si];
            qvlm_pool_run_n(pool, slot_task, &c, nth);
            bool ok = atomic_load(&c.overlap) == 0;
            for (int i = 0; i < 16; i++) ok &= atomic_load(&c.ran[i]) == (i < nth ? 1 : 0);
            if (!ok) {
                qvlm_pool_destroy(pool);
                QTEST_FAIL("pool of %d, rep %d (nth %d): slots ran %d %d %d %d times (overlap %d)", sizes[si], rep, nth,
                           atomic_load(&c.ran[0]), atomic_load(&c.ran[1]), atomic_load(&c.ran[2]), atomic_load(&c.ran[3]),
                           atomic_load(&c.overlap));
            }
        }
        qvlm_pool_destroy(pool);
    }
}

static void test_atomic_write(void) {
    qvlm_error err;
    char path[256];
    snprintf(path, sizeof(path), "/tmp/qvlm_core_test_%d.bin", (int)getpid());
    ASSERT_OK(qvlm_file_write_atomic(path, "hello", 5, &err), &err);
    char *buf;
    size_t n;
    ASSERT_OK(qvlm_file_read(path, 100, &buf, &n, &err), &err);
    ASSERT_EQ_INT(n, 5);
    ASSERT_STR_EQ(buf, "hello");
    free(buf);
    ASSERT_FAILS(qvlm_file_read(path, 4, &buf, &n, &err), QVLM_E_LIMIT, &err, path);
    unlink(path);
    ASSERT_FAILS(qvlm_file_read(path, 4, &buf, &n, &err), QVLM_E_IO, &err, "cannot open");
}

int main(void) {
    RUN(test_errorf_and_prefix);
    RUN(test_bf16_round_trip);
    RUN(test_f16_round_trip);
    RUN(test_pool_runs_every_slice);
    RUN(test_pool_slots_once_each);
    RUN(test_atomic_write);
    return qtest_done();
}
