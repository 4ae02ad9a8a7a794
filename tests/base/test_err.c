/*
 * tests/base/test_err.c - the error space (ut_strerror), assertions,
 * allocation fault injection, named fault points and crash points.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/ut.h"
#include "tests/odb/fixture.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const struct {
    const char *name;
    int value;
    const char *text;
} codes[] = {
#define CODE_ROW(n, v, t) {#n, (v), (t)},
    UT_ERRNO_MAP(CODE_ROW)
#undef CODE_ROW
};
#define N_CODES (sizeof codes / sizeof codes[0])

static void test_strerror_project_codes(void **state)
{
    (void)state;
    assert_true(N_CODES >= 30);
    for (size_t i = 0; i < N_CODES; i++) {
        const char *s = ut_strerror(codes[i].value);
        assert_non_null(s);
        if (s[0] == '\0' || strstr(s, "unknown") || strcmp(s, codes[i].text) != 0) {
            print_error("%s (%d): '%s'\n", codes[i].name, codes[i].value, s);
            fail();
        }
        /* Module ranges: negative, outside the -errno space. */
        assert_true(codes[i].value <= -1000);
        for (size_t j = 0; j < i; j++) {
            assert_int_not_equal(codes[i].value, codes[j].value);
            assert_string_not_equal(s, ut_strerror(codes[j].value));
        }
    }
    assert_string_equal(ut_strerror(0), "success");
    /* Ranges by prefix. */
    assert_true(UT_EINVAL == -1000 && ODB_ENOKEY == -2000);
    assert_true(ODB_ENAME > -3000 && ODB_ENAME < -2000);
}

static void test_strerror_errno_and_unknown(void **state)
{
    (void)state;
    assert_string_equal(ut_strerror(-ENOENT), strerror(ENOENT));
    assert_string_equal(ut_strerror(-EACCES), strerror(EACCES));
    assert_string_equal(ut_strerror(-ENOSPC), strerror(ENOSPC));
    assert_null(strstr(ut_strerror(-EEXIST), "unknown"));
    /* Unused project numbers and positive values are "unknown ...", with
     * the number. */
    const char *s = ut_strerror(-1999);
    assert_non_null(strstr(s, "unknown"));
    assert_non_null(strstr(s, "-1999"));
    s = ut_strerror(42);
    assert_non_null(strstr(s, "unknown"));
    assert_non_null(strstr(s, "42"));
}

static void test_assert_aborts_with_site(void **state)
{
    (void)state;
    int errp[2];
    assert_int_equal(pipe(errp), 0);
    int line = __LINE__ + 7;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(errp[0]);
        dup2(errp[1], STDERR_FILENO);
        volatile int two = 2;
        UT_ASSERT(two == 3);
        _exit(0);
    }
    close(errp[1]);
    char msg[512];
    tfx_read_all(errp[0], msg, sizeof msg, 10000);
    close(errp[0]);
    int status = tfx_wait_child(pid, 10000);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    char want[64];
    snprintf(want, sizeof want, "test_err.c:%d", line);
    if (!strstr(msg, "two == 3") || !strstr(msg, want)) {
        print_error("stderr: '%s' (want %s)\n", msg, want);
        fail();
    }
    /* A true assertion does nothing. */
    UT_ASSERT(1 + 1 == 2);
}

static void test_alloc_fail_after(void **state)
{
    (void)state;
    void *a = NULL, *b = NULL, *c = NULL, *d = NULL;
    ut_alloc_fail_after(3);
    a = ut_malloc(16);
    b = ut_calloc(2, 8);
    c = ut_malloc(16);  /* the third fails */
    d = ut_strdup("x"); /* and every one after */
    void *e = ut_calloc(1, 1);
    void *r = ut_realloc(a, 64);
    ut_alloc_fail_after(0);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    assert_null(d);
    assert_null(e);
    assert_null(r); /* a is still valid after a failed realloc */
    ut_free(a);
    ut_free(b);

    /* Off again: everything works. */
    char *s = ut_strdup("hello");
    assert_non_null(s);
    assert_string_equal(s, "hello");
    s = ut_realloc(s, 100);
    assert_non_null(s);
    assert_string_equal(s, "hello");
    ut_free(s);

    /* n = 1: the very next one fails. */
    ut_alloc_fail_after(1);
    a = ut_malloc(1);
    ut_alloc_fail_after(0);
    assert_null(a);
    a = ut_malloc(0); /* size 0 still gives a pointer to free */
    assert_non_null(a);
    ut_free(a);
    ut_free(NULL);
}

static void test_fault_points(void **state)
{
    (void)state;
    assert_false(ut_fault_hit("test.never"));
    ut_fault_set("test.a", 2);
    ut_fault_set("test.b", 1);
    assert_false(ut_fault_hit("test.a")); /* 1st */
    assert_false(ut_fault_hit("test.c")); /* other names are unaffected */
    assert_true(ut_fault_hit("test.b"));
    assert_true(ut_fault_hit("test.a"));  /* 2nd */
    assert_false(ut_fault_hit("test.a")); /* one shot */
    assert_false(ut_fault_hit("test.b"));

    /* Re-arming replaces; 0 disarms. */
    ut_fault_set("test.a", 5);
    ut_fault_set("test.a", 1);
    assert_true(ut_fault_hit("test.a"));
    ut_fault_set("test.a", 3);
    ut_fault_set("test.a", 0);
    for (int i = 0; i < 5; i++)
        assert_false(ut_fault_hit("test.a"));
}

static void test_crash_point(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ut_crash_point_arm(3);
        long a = ut_crash_point();
        long b = ut_crash_point();
        if (a != 1 || b != 2)
            _exit(1);
        ut_crash_point(); /* the 3rd kills */
        _exit(2);
    }
    int status = tfx_wait_child(pid, 10000);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    /* Disarmed (k = 0): counts only. */
    ut_crash_point_arm(0);
    assert_int_equal(ut_crash_point(), 1);
    assert_int_equal(ut_crash_point(), 2);
}

static void test_strlcpy(void **state)
{
    (void)state;
    char buf[8];
    assert_int_equal(ut_strlcpy(buf, "abc", sizeof buf), 3);
    assert_string_equal(buf, "abc");
    assert_int_equal(ut_strlcpy(buf, "0123456789", sizeof buf), 10);
    assert_string_equal(buf, "0123456");
    memset(buf, 'x', sizeof buf);
    assert_int_equal(ut_strlcpy(buf, "abc", 0), 3);
    assert_int_equal(buf[0], 'x');
}

struct sink_state {
    int n;
    enum ut_log_level level;
    char msg[128];
};

static void capture(enum ut_log_level level, const char *msg, void *arg)
{
    struct sink_state *st = arg;
    st->n++;
    st->level = level;
    ut_strlcpy(st->msg, msg, sizeof st->msg);
}

static void test_log_sink(void **state)
{
    (void)state;
    struct sink_state st = {0};
    ut_log_set_sink(capture, &st, UT_LOG_INFO);
    ut_log(UT_LOG_DEBUG, "hidden %d", 1);
    assert_int_equal(st.n, 0);
    ut_log(UT_LOG_WARN, "shown %d", 2);
    assert_int_equal(st.n, 1);
    assert_int_equal(st.level, UT_LOG_WARN);
    assert_string_equal(st.msg, "shown 2");
    ut_log_set_sink(NULL, NULL, UT_LOG_WARN);
    ut_log(UT_LOG_ERROR, "to stderr, not captured");
    assert_int_equal(st.n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror_project_codes),
        cmocka_unit_test(test_strerror_errno_and_unknown),
        cmocka_unit_test(test_assert_aborts_with_site),
        cmocka_unit_test(test_alloc_fail_after),
        cmocka_unit_test(test_fault_points),
        cmocka_unit_test(test_crash_point),
        cmocka_unit_test(test_strlcpy),
        cmocka_unit_test(test_log_sink),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
