/* qtest.h - the smallest test harness that prints both sides of a failed check (libuv style).
 *
 *   static void test_parse_ok(void) { ASSERT_EQ_INT(f(2), 4); }
 *   int main(void) { RUN(test_parse_ok); return qtest_done(); }
 *
 * A failed ASSERT_* reports file:line and the values, marks the test failed and returns
 * from the test function. qtest_done() prints a summary and returns the exit status.
 */
#ifndef QVLM_QTEST_H
#define QVLM_QTEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int qtest_failed_tests, qtest_run_tests, qtest_cur_failed;

#define QTEST_FAIL(...)                                                                \
    do {                                                                               \
        fprintf(stderr, "  FAIL %s:%d: ", __FILE__, __LINE__);                         \
        fprintf(stderr, __VA_ARGS__);                                                  \
        fprintf(stderr, "\n");                                                         \
        qtest_cur_failed = 1;                                                          \
        return;                                                                        \
    } while (0)

#define ASSERT_TRUE(c)                                                                 \
    do {                                                                               \
        if (!(c)) QTEST_FAIL("expected true: %s", #c);                                 \
    } while (0)
#define ASSERT_EQ_INT(a, b)                                                            \
    do {                                                                               \
        long long qa_ = (long long)(a), qb_ = (long long)(b);                          \
        if (qa_ != qb_) QTEST_FAIL("%s == %s: %lld != %lld", #a, #b, qa_, qb_);        \
    } while (0)
#define ASSERT_STR_EQ(a, b)                                                            \
    do {                                                                               \
        const char *qa_ = (a), *qb_ = (b);                                             \
        if (!qa_ || !qb_ || strcmp(qa_, qb_) != 0)                                     \
            QTEST_FAIL("%s == %s:\n    got      \"%s\"\n    expected \"%s\"", #a, #b,  \
                       qa_ ? qa_ : "(null)", qb_ ? qb_ : "(null)");                    \
    } while (0)
#define ASSERT_CONTAINS(hay, needle)                                                   \
    do {                                                                               \
        const char *qh_ = (hay), *qn_ = (needle);                                      \
        if (!qh_ || !strstr(qh_, qn_))                                                 \
            QTEST_FAIL("\"%s\" should contain \"%s\"", qh_ ? qh_ : "(null)", qn_);     \
    } while (0)
#define ASSERT_NEAR(a, b, tol)                                                         \
    do {                                                                               \
        double qa_ = (a), qb_ = (b);                                                   \
        if (!(fabs(qa_ - qb_) <= (tol)))                                               \
            QTEST_FAIL("%s ~ %s: %.9g vs %.9g (|diff| %.3g > %.3g)", #a, #b, qa_, qb_,  \
                       fabs(qa_ - qb_), (double)(tol));                                \
    } while (0)
/* A call returning qvlm_status that must succeed; prints the error message otherwise. */
#define ASSERT_OK(call, errp)                                                          \
    do {                                                                               \
        int qrc_ = (call);                                                             \
        if (qrc_ != 0) QTEST_FAIL("%s failed (%d): %s", #call, qrc_, (errp)->msg);     \
    } while (0)
/* A call that must fail with `code` and a message containing `needle`. */
#define ASSERT_FAILS(call, code, errp, needle)                                         \
    do {                                                                               \
        (errp)->msg[0] = '\0';                                                         \
        int qrc_ = (call);                                                             \
        if (qrc_ != (code))                                                            \
            QTEST_FAIL("%s: status %d, expected %d (msg: %s)", #call, qrc_, (int)(code), \
                       (errp)->msg);                                                   \
        if (!strstr((errp)->msg, (needle)))                                            \
            QTEST_FAIL("%s: message \"%s\" should mention \"%s\"", #call, (errp)->msg,  \
                       (needle));                                                      \
    } while (0)

#define RUN(fn)                                                                        \
    do {                                                                               \
        qtest_cur_failed = 0;                                                          \
        qtest_run_tests++;                                                             \
        fn();                                                                          \
        if (qtest_cur_failed) {                                                        \
            qtest_failed_tests++;                                                      \
            fprintf(stderr, "not ok %s\n", #fn);                                       \
        } else {                                                                       \
            printf("ok %s\n", #fn);                                                    \
        }                                                                              \
    } while (0)

static inline int qtest_done(void) {
    printf("%d/%d passed\n", qtest_run_tests - qtest_failed_tests, qtest_run_tests);
    return qtest_failed_tests ? 1 : 0;
}

#endif /* QVLM_QTEST_H */
