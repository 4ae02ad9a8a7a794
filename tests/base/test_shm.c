/*
 * tests/base/test_shm.c - shared-memory segments (base/shm.c): names
 * derived from the experiment directory, creation mode, attach, header
 * verification, recovery from a creator that died before initialising.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/ut.h"
#include "tests/odb/fixture.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define KIND     0x54455354u /* 'TEST' */
#define FPRINT   0x1234567890abcdefull
#define SEG_SIZE 65536
#define WAIT_MS  10000

struct fixture {
    char name[128];
    char dir[PATH_MAX];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    tfx_shm_name(f->name, sizeof f->name, "shm");
    ut_shm_unlink(f->name);
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof f->dir, "%s/aurum-test-shm-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    ut_shm_unlink(f->name);
    char path[PATH_MAX + 32];
    const char *subs[] = {"a", "b", "link"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", f->dir, subs[i]);
        if (unlink(path) < 0)
            rmdir(path);
    }
    rmdir(f->dir);
    free(f);
    tfx_unlink_all();
    return 0;
}

static void sub_path(char *out, size_t size, const struct fixture *f, const char *sub)
{
    snprintf(out, size, "%s/%s", f->dir, sub);
}

static void test_name_from_dir(void **state)
{
    struct fixture *f = *state;
    char a[PATH_MAX + 32], b[PATH_MAX + 32], link[PATH_MAX + 32], dotted[PATH_MAX + 64];
    sub_path(a, sizeof a, f, "a");
    sub_path(b, sizeof b, f, "b");
    sub_path(link, sizeof link, f, "link");
    assert_int_equal(mkdir(a, 0700), 0);
    assert_int_equal(mkdir(b, 0700), 0);
    assert_int_equal(symlink(a, link), 0);

    char na[128], nb[128], nl[128], nd[128], nmsg[128];
    assert_int_equal(ut_shm_name(a, "odb", na, sizeof na), 0);
    assert_int_equal(ut_shm_name(b, "odb", nb, sizeof nb), 0);
    assert_string_not_equal(na, nb);
    assert_int_equal(strncmp(na, "/aurum.", 7), 0);
    assert_non_null(strstr(na, ".odb"));
    assert_null(strchr(na + 1, '/')); /* a valid POSIX shm name */

    /* The same directory by another spelling: same name. */
    assert_int_equal(ut_shm_name(link, "odb", nl, sizeof nl), 0);
    assert_string_equal(na, nl);
    snprintf(dotted, sizeof dotted, "%s/./", a);
    assert_int_equal(ut_shm_name(dotted, "odb", nd, sizeof nd), 0);
    assert_string_equal(na, nd);
    snprintf(dotted, sizeof dotted, "%s/../a", a);
    assert_int_equal(ut_shm_name(dotted, "odb", nd, sizeof nd), 0);
    assert_string_equal(na, nd);

    /* Another segment of the same experiment: different name. */
    assert_int_equal(ut_shm_name(a, "msg", nmsg, sizeof nmsg), 0);
    assert_string_not_equal(na, nmsg);

    /* Errors: missing directory, buffer too small (left unusable, no
     * overflow). */
    char missing[PATH_MAX + 32];
    sub_path(missing, sizeof missing, f, "missing");
    assert_int_equal(ut_shm_name(missing, "odb", nd, sizeof nd), -ENOENT);
    char small[12];
    assert_int_equal(ut_shm_name(a, "odb", small, sizeof small), UT_ENAMETOOLONG);
}

static void test_create_mode_and_header(void **state)
{
    struct fixture *f = *state;
    struct ut_shm s = {0};
    assert_int_equal(ut_shm_open(&s, f->name, SEG_SIZE, KIND, FPRINT, true, 1000), 0);
    assert_true(s.created);
    assert_non_null(s.base);
    assert_int_equal(s.size, SEG_SIZE);
    assert_string_equal(s.name, f->name);

    char path[256];
    snprintf(path, sizeof path, "/dev/shm/%s", f->name + 1);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_size, SEG_SIZE);
    assert_int_equal(st.st_uid, geteuid());

    const struct ut_shm_header *h = s.base;
    assert_memory_equal(h->magic, "AURUMSHM", 8);
    assert_int_equal(h->version, UT_SHM_VERSION);
    assert_int_equal(h->kind, KIND);
    assert_true(h->fingerprint == FPRINT);
    assert_int_equal(h->size, SEG_SIZE);
    assert_int_equal(h->creator_pid, (uint32_t)getpid());
    assert_true(h->created_ns > 0);
    assert_int_equal(h->ready, 0);
    ut_shm_ready(&s);
    assert_int_equal(h->ready, 1);
    ut_shm_close(&s);
    assert_null(s.base);
    ut_shm_close(&s); /* twice is harmless */
    ut_shm_close(NULL);
}

static void test_second_open_attaches(void **state)
{
    struct fixture *f = *state;
    struct ut_shm a = {0}, b = {0};
    assert_int_equal(ut_shm_open(&a, f->name, SEG_SIZE, KIND, FPRINT, true, 1000), 0);
    assert_true(a.created);
    ((char *)a.base)[SEG_SIZE - 1] = 'z';
    ut_shm_ready(&a);
    /* The size given to an attacher does not matter; the segment's does. */
    assert_int_equal(ut_shm_open(&b, f->name, 2 * (size_t)SEG_SIZE, KIND, FPRINT, true, 1000), 0);
    assert_false(b.created);
    assert_int_equal(b.size, SEG_SIZE);
    assert_ptr_not_equal(a.base, b.base);
    assert_int_equal(((char *)b.base)[SEG_SIZE - 1], 'z');
    ((char *)b.base)[100] = 'q';
    assert_int_equal(((char *)a.base)[100], 'q');
    /* Attach without permission to create also works. */
    struct ut_shm c = {0};
    assert_int_equal(ut_shm_open(&c, f->name, 0, KIND, FPRINT, false, 1000), 0);
    assert_false(c.created);
    ut_shm_close(&c);
    ut_shm_close(&b);
    ut_shm_close(&a);

    /* Unlink removes the name; a second unlink reports it. */
    assert_int_equal(ut_shm_unlink(f->name), 0);
    assert_int_equal(ut_shm_unlink(f->name), -ENOENT);
    assert_int_equal(ut_shm_open(&c, f->name, SEG_SIZE, KIND, FPRINT, false, 100), UT_ENOENT);
}

static void test_mismatch_refused(void **state)
{
    struct fixture *f = *state;
    struct ut_shm a = {0};
    assert_int_equal(ut_shm_open(&a, f->name, SEG_SIZE, KIND, FPRINT, true, 1000), 0);
    ut_shm_ready(&a);
    struct ut_shm b = {0};
    assert_int_equal(ut_shm_open(&b, f->name, SEG_SIZE, KIND + 1, FPRINT, true, 1000), UT_EVERSION);
    assert_null(b.base); /* out-parameter untouched */
    assert_int_equal(ut_shm_open(&b, f->name, SEG_SIZE, KIND, FPRINT ^ 1, true, 1000), UT_EVERSION);
    assert_null(b.base);
    /* A different layout version. */
    struct ut_shm_header *h = a.base;
    h->version = UT_SHM_VERSION + 1;
    assert_int_equal(ut_shm_open(&b, f->name, SEG_SIZE, KIND, FPRINT, true, 1000), UT_EVERSION);
    h->version = UT_SHM_VERSION;
    /* A bad magic or size: not ours, or damaged. */
    h->magic[0] = 'X';
    assert_int_equal(ut_shm_open(&b, f->name, SEG_SIZE, KIND, FPRINT, true, 1000), UT_ECORRUPT);
    h->magic[0] = 'A';
    h->size = (uint64_t)SEG_SIZE * 2;
    assert_int_equal(ut_shm_open(&b, f->name, SEG_SIZE, KIND, FPRINT, true, 1000), UT_ECORRUPT);
    h->size = SEG_SIZE;
    /* Repaired: attaches again. The segment was never replaced. */
    assert_int_equal(ut_shm_open(&b, f->name, SEG_SIZE, KIND, FPRINT, true, 1000), 0);
    assert_false(b.created);
    ut_shm_close(&b);
    ut_shm_close(&a);
}

static void test_invalid_names(void **state)
{
    (void)state;
    struct ut_shm s = {0};
    assert_int_equal(ut_shm_open(&s, NULL, SEG_SIZE, KIND, FPRINT, true, 100), UT_EINVAL);
    assert_int_equal(ut_shm_open(&s, "", SEG_SIZE, KIND, FPRINT, true, 100), UT_EINVAL);
    assert_int_equal(ut_shm_open(&s, "no-slash", SEG_SIZE, KIND, FPRINT, true, 100), UT_EINVAL);
    assert_int_equal(ut_shm_open(&s, "/a/b", SEG_SIZE, KIND, FPRINT, true, 100), UT_EINVAL);
    char longname[300];
    longname[0] = '/';
    memset(longname + 1, 'x', sizeof longname - 2);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(ut_shm_open(&s, longname, SEG_SIZE, KIND, FPRINT, true, 100), UT_ENAMETOOLONG);
    /* Too small to hold even the header. */
    char name[128];
    tfx_shm_name(name, sizeof name, "shm-small");
    assert_int_equal(ut_shm_open(&s, name, 16, KIND, FPRINT, true, 100), UT_EINVAL);
    assert_int_equal(ut_shm_unlink(name), -ENOENT); /* nothing was created */
    assert_null(s.base);
}

/* A creator that dies before ut_shm_ready: the next opener recreates the
 * segment once its wait times out, instead of hanging or failing forever. */
static void test_dead_creator_recreated(void **state)
{
    struct fixture *f = *state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct ut_shm s;
        int rc = ut_shm_open(&s, f->name, SEG_SIZE, KIND, FPRINT, true, 1000);
        _exit(rc == 0 && s.created ? 0 : 1); /* never ready */
    }
    int status = tfx_wait_child(pid, WAIT_MS);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* Without permission to create: the half-made segment is removed and
     * reported missing. */
    struct ut_shm s = {0};
    int64_t start = ut_now_ns();
    assert_int_equal(ut_shm_open(&s, f->name, SEG_SIZE, KIND, FPRINT, false, 100), UT_ENOENT);
    assert_true((ut_now_ns() - start) / 1000000 < 5000);

    /* Again, with permission: recreated by us. */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct ut_shm cs;
        int rc = ut_shm_open(&cs, f->name, SEG_SIZE, KIND, FPRINT, true, 1000);
        _exit(rc == 0 && cs.created ? 0 : 1);
    }
    status = tfx_wait_child(pid, WAIT_MS);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    start = ut_now_ns();
    assert_int_equal(ut_shm_open(&s, f->name, SEG_SIZE, KIND, FPRINT, true, 100), 0);
    assert_true((ut_now_ns() - start) / 1000000 < 5000);
    assert_true(s.created);
    const struct ut_shm_header *h = s.base;
    assert_int_equal(h->creator_pid, (uint32_t)getpid());
    ut_shm_ready(&s);
    ut_shm_close(&s);
}

/* A live creator still initialising: the attacher waits (bounded) and
 * reports a timeout, never touching the segment. */
static void test_live_creator_timeout_then_ready(void **state)
{
    struct fixture *f = *state;
    struct ut_shm s = {0};
    assert_int_equal(ut_shm_open(&s, f->name, SEG_SIZE, KIND, FPRINT, true, 1000), 0);
    assert_true(s.created);

    int go[2], res[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(res), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(go[1]);
        close(res[0]);
        struct ut_shm cs = {0};
        int r = ut_shm_open(&cs, f->name, SEG_SIZE, KIND, FPRINT, true, 100);
        if (write(res[1], &r, sizeof r) != (ssize_t)sizeof r)
            _exit(2);
        /* The parent marks the segment ready, then we attach again. */
        if (!tfx_wait_fd(go[0], WAIT_MS))
            _exit(3);
        r = ut_shm_open(&cs, f->name, SEG_SIZE, KIND, FPRINT, false, WAIT_MS);
        if (r == 0 && cs.created)
            r = -9999;
        if (write(res[1], &r, sizeof r) != (ssize_t)sizeof r)
            _exit(2);
        _exit(0);
    }
    close(go[0]);
    close(res[1]);
    /* The child's first attempt times out while we are "initialising". */
    int r[2] = {1, 1};
    assert_int_equal(tfx_read_full(res[0], &r[0], sizeof r[0], WAIT_MS), (ssize_t)sizeof r[0]);
    assert_int_equal(r[0], UT_ETIMEOUT);
    ut_shm_ready(&s);
    assert_true(tfx_signal_fd(go[1]));
    assert_int_equal(tfx_read_full(res[0], &r[1], sizeof r[1], WAIT_MS), (ssize_t)sizeof r[1]);
    assert_int_equal(r[1], 0);
    int status = tfx_wait_child(pid, WAIT_MS);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* Our segment was not replaced. */
    const struct ut_shm_header *h = s.base;
    assert_int_equal(h->creator_pid, (uint32_t)getpid());
    close(go[1]);
    close(res[0]);
    ut_shm_close(&s);
}

/* An attacher waiting for an initialising creator gets the segment as
 * soon as it is ready (before its timeout). */
static void test_attacher_waits_for_ready(void **state)
{
    struct fixture *f = *state;
    struct ut_shm s = {0};
    assert_int_equal(ut_shm_open(&s, f->name, SEG_SIZE, KIND, FPRINT, true, 1000), 0);
    int started[2];
    assert_int_equal(pipe(started), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(started[0]);
        tfx_signal_fd(started[1]);
        struct ut_shm cs = {0};
        int rc = ut_shm_open(&cs, f->name, SEG_SIZE, KIND, FPRINT, true, WAIT_MS);
        const struct ut_shm_header *h = cs.base;
        _exit(rc == 0 && !cs.created && h->ready == 1 && ((char *)cs.base)[200] == 'r' ? 0 : 1);
    }
    close(started[1]);
    assert_true(tfx_wait_fd(started[0], WAIT_MS));
    ((char *)s.base)[200] = 'r'; /* initialisation, published by ready */
    ut_shm_ready(&s);
    int status = tfx_wait_child(pid, WAIT_MS);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    close(started[0]);
    ut_shm_close(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_name_from_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_mode_and_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_open_attaches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mismatch_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_creator_recreated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_creator_timeout_then_ready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attacher_waits_for_ready, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
