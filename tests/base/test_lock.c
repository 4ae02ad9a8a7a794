/*
 * tests/base/test_lock.c - the rank-checked, recursive, robust lock
 * (base/lock.c): recursion by lock id, mutual exclusion between threads,
 * bounded waits with a named holder, lock-order assertions, holder death
 * (EOWNERDEAD) and recovery, ut_interrupt(), release hooks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/ut.h"
#include "tests/odb/fixture.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 10000 /* bound on every handshake */

/* Shared memory visible to forked children. */
struct shared {
    struct ut_shlock sh;
    struct ut_shlock sh2;
    atomic_int n_recover;
};

static struct shared *map_shared(void)
{
    void *p = mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    assert_true(p != MAP_FAILED);
    memset(p, 0, sizeof(struct shared));
    struct shared *s = p;
    assert_int_equal(ut_shlock_init(&s->sh), 0);
    assert_int_equal(ut_shlock_init(&s->sh2), 0);
    return s;
}

static void unmap_shared(struct shared *s)
{
    munmap(s, sizeof *s);
}

static int64_t ms_since(int64_t start_ns)
{
    return (ut_now_ns() - start_ns) / 1000000;
}

/* ---------------------------------------------------------------------- */
/* Recursion                                                               */
/* ---------------------------------------------------------------------- */

struct held_probe {
    struct ut_lock *lock;
    bool held;
    int top;
};

static void *probe_held(void *arg)
{
    struct held_probe *p = arg;
    p->held = ut_lock_held(p->lock);
    p->top = ut_lock_top_rank();
    return NULL;
}

static void test_recursion(void **state)
{
    (void)state;
    struct ut_shlock sh;
    struct ut_lock l;
    assert_int_equal(ut_shlock_init(&sh), 0);
    ut_lock_bind(&l, &sh, "rec", UT_RANK_ODB, 1000, NULL, NULL);

    assert_false(ut_lock_held(&l));
    assert_int_equal(ut_lock_top_rank(), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(UT_LOCK(&l), 0);
    assert_true(ut_lock_held(&l));
    assert_int_equal(ut_lock_top_rank(), UT_RANK_ODB);
    assert_int_equal(sh.n_acquired, 1); /* only the outermost acquisition counts */
    assert_int_equal(sh.owner_pid, (uint32_t)getpid());
    assert_int_equal(sh.owner_tid, ut_tid());

    /* Held is per thread: another thread does not hold it. */
    struct held_probe p = {&l, true, -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, probe_held, &p), 0);
    pthread_join(t, NULL);
    assert_false(p.held);
    assert_int_equal(p.top, 0);

    ut_lock_release(&l);
    assert_true(ut_lock_held(&l));
    ut_lock_release(&l);
    assert_true(ut_lock_held(&l));
    ut_lock_release(&l);
    assert_false(ut_lock_held(&l));
    assert_int_equal(ut_lock_top_rank(), 0);
    assert_int_equal(sh.owner_pid, 0);

    /* Really released: another acquisition works at once. */
    assert_int_equal(UT_LOCK(&l), 0);
    ut_lock_release(&l);
    assert_int_equal(sh.n_acquired, 2);
    pthread_mutex_destroy(&sh.mutex);
}

/* Two process-local views of one shared lock, through two mappings of the
 * same memory at different addresses: the same lock (recognised by id). */
static void test_recursion_two_mappings(void **state)
{
    (void)state;
    int fd = memfd_create("aurum-test-lock", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 4096), 0);
    struct ut_shlock *a = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    struct ut_shlock *b = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    assert_true(a != MAP_FAILED && b != MAP_FAILED);
    assert_ptr_not_equal(a, b);
    assert_int_equal(ut_shlock_init(a), 0);
    assert_int_equal(a->id, b->id);
    assert_int_not_equal(a->id, 0);

    struct ut_lock l1, l2;
    ut_lock_bind(&l1, a, "map1", UT_RANK_ODB, 1000, NULL, NULL);
    ut_lock_bind(&l2, b, "map2", UT_RANK_ODB, 1000, NULL, NULL);
    assert_int_equal(UT_LOCK(&l1), 0);
    /* Would self-deadlock (or time out) if not recognised as recursion;
     * same rank would also be a rank violation for a different lock. */
    assert_int_equal(UT_LOCK(&l2), 0);
    assert_true(ut_lock_held(&l2));
    assert_int_equal(b->n_acquired, 1);
    ut_lock_release(&l2);
    assert_true(ut_lock_held(&l1));
    ut_lock_release(&l1);
    assert_false(ut_lock_held(&l1));
    assert_false(ut_lock_held(&l2));

#ifndef __SANITIZE_THREAD__
    /* Release through the other view. (TSan tracks a mutex by address, so
     * it would take this for an unlock of a mutex never locked: the two
     * addresses are one mutex to glibc and the kernel, two to TSan.) */
    assert_int_equal(UT_LOCK(&l2), 0);
    assert_true(ut_lock_held(&l1));
    ut_lock_release(&l1);
    assert_false(ut_lock_held(&l2));
#endif
    munmap(a, 4096);
    munmap(b, 4096);
}

/* Two different locks with separate ids are different locks, even with
 * the same name. */
static void test_distinct_ids(void **state)
{
    (void)state;
    struct ut_shlock s1, s2;
    assert_int_equal(ut_shlock_init(&s1), 0);
    assert_int_equal(ut_shlock_init(&s2), 0);
    assert_int_not_equal(s1.id, s2.id);
    struct ut_lock a, b;
    ut_lock_bind(&a, &s1, "same", UT_RANK_BUFFER, 1000, NULL, NULL);
    ut_lock_bind(&b, &s2, "same", UT_RANK_MSG, 1000, NULL, NULL);
    assert_int_equal(UT_LOCK(&a), 0);
    assert_false(ut_lock_held(&b));
    assert_int_equal(UT_LOCK(&b), 0);
    assert_int_equal(ut_lock_top_rank(), UT_RANK_MSG);
    ut_lock_release(&b);
    assert_int_equal(ut_lock_top_rank(), UT_RANK_BUFFER);
    ut_lock_release(&a);
    assert_int_equal(ut_lock_top_rank(), 0);
}

/* ---------------------------------------------------------------------- */
/* Two threads contending                                                  */
/* ---------------------------------------------------------------------- */

struct contender {
    struct ut_lock *lock;
    int ready_fd; /* written before trying */
    int done_fd;  /* written after acquiring */
    atomic_int got_it;
    int rc;
    int64_t waited_ms;
    char errmsg[384]; /* ut_lock_last_error() of the contender */
};

static void *contend(void *arg)
{
    struct contender *c = arg;
    tfx_signal_fd(c->ready_fd);
    int64_t start = ut_now_ns();
    c->rc = UT_LOCK(c->lock);
    c->waited_ms = ms_since(start);
    snprintf(c->errmsg, sizeof c->errmsg, "%s", ut_lock_last_error());
    if (c->rc == 0) {
        atomic_store(&c->got_it, 1);
        ut_lock_release(c->lock);
    }
    tfx_signal_fd(c->done_fd);
    return NULL;
}

static void test_contention_blocks(void **state)
{
    (void)state;
    struct ut_shlock sh;
    struct ut_lock l;
    assert_int_equal(ut_shlock_init(&sh), 0);
    ut_lock_bind(&l, &sh, "contended", UT_RANK_ODB, WAIT_MS, NULL, NULL);
    int ready[2], done[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(done), 0);

    assert_int_equal(UT_LOCK(&l), 0);
    struct contender c = {.lock = &l, .ready_fd = ready[1], .done_fd = done[1], .rc = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, contend, &c), 0);
    assert_true(tfx_wait_fd(ready[0], WAIT_MS));
    /* B is asleep in the kernel on the mutex we hold. */
    assert_true(tfx_wait_lock_sleeper(&sh, WAIT_MS));
    assert_int_equal(atomic_load(&c.got_it), 0);
    ut_lock_release(&l);
    assert_true(tfx_wait_fd(done[0], WAIT_MS));
    pthread_join(t, NULL);
    assert_int_equal(c.rc, 0);
    assert_int_equal(atomic_load(&c.got_it), 1);
    assert_int_equal(sh.n_contended, 1);
    assert_int_equal(sh.n_acquired, 2);
    assert_true(sh.wait_ns > 0);
    for (int i = 0; i < 2; i++) {
        close(ready[i]);
        close(done[i]);
    }
}

#define N_INCR 100000

struct counter_arg {
    struct ut_lock *lock;
    long *counter; /* plain, protected by the lock */
    int start_fd;
    int errors;
};

static void *count_up(void *arg)
{
    struct counter_arg *a = arg;
    if (!tfx_wait_fd(a->start_fd, WAIT_MS)) {
        a->errors++;
        return NULL;
    }
    for (int i = 0; i < N_INCR; i++) {
        if (UT_LOCK(a->lock) != 0) {
            a->errors++;
            continue;
        }
        /* Recursion inside the critical section, as real callers do. */
        if (UT_LOCK(a->lock) != 0)
            a->errors++;
        long v = *a->counter;
        *a->counter = v + 1;
        ut_lock_release(a->lock);
        ut_lock_release(a->lock);
    }
    return NULL;
}

static void test_counter_exact(void **state)
{
    (void)state;
    struct ut_shlock sh;
    struct ut_lock l;
    assert_int_equal(ut_shlock_init(&sh), 0);
    ut_lock_bind(&l, &sh, "counter", UT_RANK_ODB, WAIT_MS, NULL, NULL);
    long counter = 0;
    int go[2];
    assert_int_equal(pipe(go), 0);
    struct counter_arg a[2] = {{&l, &counter, go[0], 0}, {&l, &counter, go[0], 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, count_up, &a[i]), 0);
    /* Release both at once. */
    assert_true(tfx_signal_fd(go[1]));
    assert_true(tfx_signal_fd(go[1]));
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(a[0].errors + a[1].errors, 0);
    assert_int_equal(counter, 2L * N_INCR);
    assert_int_equal(sh.n_acquired, 2u * N_INCR);
    close(go[0]);
    close(go[1]);
}

/* ---------------------------------------------------------------------- */
/* Timeouts name the holder                                                */
/* ---------------------------------------------------------------------- */

struct holder_msg {
    int line; /* line of the holder's acquisition */
    int rc;
};

static void test_timeout_names_holder(void **state)
{
    (void)state;
    struct shared *s = map_shared();
    int to_parent[2], to_child[2];
    assert_int_equal(pipe(to_parent), 0);
    assert_int_equal(pipe(to_child), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(to_parent[0]);
        close(to_child[1]);
        struct ut_lock l;
        ut_lock_bind(&l, &s->sh, "odbtest", UT_RANK_ODB, WAIT_MS, NULL, NULL);
        ut_lock_set_owner_name("holderX");
        struct holder_msg m;
        m.line = __LINE__ + 1;
        m.rc = UT_LOCK(&l);
        if (write(to_parent[1], &m, sizeof m) != (ssize_t)sizeof m)
            _exit(2);
        /* Hold until the parent says so (or closes the pipe). */
        tfx_wait_fd(to_child[0], WAIT_MS);
        if (m.rc == 0)
            ut_lock_release(&l);
        _exit(m.rc == 0 ? 0 : 3);
    }
    close(to_parent[1]);
    close(to_child[0]);
    struct holder_msg m = {0, -1};
    assert_int_equal(tfx_read_full(to_parent[0], &m, sizeof m, WAIT_MS), (ssize_t)sizeof m);
    assert_int_equal(m.rc, 0);

    struct ut_lock l;
    ut_lock_bind(&l, &s->sh, "odbtest", UT_RANK_ODB, 100, NULL, NULL);
    int64_t start = ut_now_ns();
    int rc = UT_LOCK(&l);
    int64_t waited = ms_since(start);
    assert_int_equal(rc, UT_ETIMEOUT);
    assert_false(ut_lock_held(&l));
    assert_true(waited >= 95);
    assert_true(waited < 5000);
    const char *msg = ut_lock_last_error();
    char want[96];
    snprintf(want, sizeof want, "pid %d ", (int)pid);
    if (!strstr(msg, want) || !strstr(msg, "since") || !strstr(msg, "holderX") ||
        !strstr(msg, "'odbtest'")) {
        print_error("last error: %s\n", msg);
        fail();
    }
    /* The holder is the child's main thread, whose tid is its pid (not
     * the tid of the thread that forked it). */
    snprintf(want, sizeof want, "tid %d ", (int)pid);
    if (!strstr(msg, want)) {
        print_error("holder tid %s missing from: %s\n", want, msg);
        fail();
    }
    snprintf(want, sizeof want, "test_lock.c:%d", m.line);
    if (!strstr(msg, want)) {
        print_error("holder site %s missing from: %s\n", want, msg);
        fail();
    }
    /* Our own name was never set to holderX: the text names the holder. */
    assert_true(tfx_signal_fd(to_child[1]));
    int status = tfx_wait_child(pid, WAIT_MS);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* Free again. */
    assert_int_equal(UT_LOCK(&l), 0);
    ut_lock_release(&l);
    close(to_parent[0]);
    close(to_child[1]);
    unmap_shared(s);
}

/* The same with a holder thread of this process. */
struct thread_holder {
    struct ut_lock *lock;
    int held_fd, release_fd;
    int line;
};

static void *hold_lock(void *arg)
{
    struct thread_holder *h = arg;
    h->line = __LINE__ + 1;
    int rc = UT_LOCK(h->lock);
    tfx_signal_fd(h->held_fd);
    tfx_wait_fd(h->release_fd, WAIT_MS);
    if (rc == 0)
        ut_lock_release(h->lock);
    return NULL;
}

static void test_timeout_thread_holder(void **state)
{
    (void)state;
    struct ut_shlock sh;
    struct ut_lock l;
    assert_int_equal(ut_shlock_init(&sh), 0);
    ut_lock_bind(&l, &sh, "tlock", UT_RANK_MSG, 100, NULL, NULL);
    int held[2], rel[2];
    assert_int_equal(pipe(held), 0);
    assert_int_equal(pipe(rel), 0);
    ut_lock_set_owner_name("holderT");
    struct thread_holder h = {&l, held[1], rel[0], 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, hold_lock, &h), 0);
    assert_true(tfx_wait_fd(held[0], WAIT_MS));
    assert_int_equal(UT_LOCK(&l), UT_ETIMEOUT);
    const char *msg = ut_lock_last_error();
    char want[64];
    snprintf(want, sizeof want, "test_lock.c:%d", h.line);
    if (!strstr(msg, "holderT") || !strstr(msg, want) || !strstr(msg, "since")) {
        print_error("last error: %s\n", msg);
        fail();
    }
    snprintf(want, sizeof want, "pid %d ", (int)getpid());
    assert_non_null(strstr(msg, want));
    assert_true(tfx_signal_fd(rel[1]));
    pthread_join(t, NULL);
    ut_lock_set_owner_name("?");
    for (int i = 0; i < 2; i++) {
        close(held[i]);
        close(rel[i]);
    }
}

/* ---------------------------------------------------------------------- */
/* Lock order: violations abort naming both locks and call sites           */
/* ---------------------------------------------------------------------- */

struct sites {
    int first, second;
};

/* Runs take_two in a child with stderr captured. Returns the wait status;
 * fills the message and the two lines the child used. */
static int run_order_child(int rank_a, const char *name_a, int rank_b, const char *name_b,
                           char *err_out, size_t err_size, struct sites *sites)
{
    int errp[2];
    assert_int_equal(pipe(errp), 0);
    /* The child records its call sites here, then may abort. */
    struct sites *st =
        mmap(NULL, sizeof *st, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(st != MAP_FAILED);
    st->first = st->second = -1;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(errp[0]);
        dup2(errp[1], STDERR_FILENO);
        struct ut_shlock sa, sb;
        if (ut_shlock_init(&sa) || ut_shlock_init(&sb))
            _exit(2);
        struct ut_lock a, b;
        ut_lock_bind(&a, &sa, name_a, rank_a, 1000, NULL, NULL);
        ut_lock_bind(&b, &sb, name_b, rank_b, 1000, NULL, NULL);
        st->first = __LINE__ + 1;
        int rc = UT_LOCK(&a);
        st->second = __LINE__ + 1;
        rc |= UT_LOCK(&b);
        /* Reached only when the order was accepted. */
        ut_lock_release(&b);
        ut_lock_release(&a);
        _exit(rc == 0 ? 0 : 4);
    }
    close(errp[1]);
    tfx_read_all(errp[0], err_out, err_size, WAIT_MS);
    int status = tfx_wait_child(pid, WAIT_MS);
    close(errp[0]);
    *sites = *st;
    munmap(st, sizeof *st);
    return status;
}

static void assert_names_sites(const char *msg, const char *a, const char *b,
                               const struct sites *st)
{
    char want[64];
    bool ok = strstr(msg, "lock order violation") != NULL;
    snprintf(want, sizeof want, "'%s'", a);
    ok = ok && strstr(msg, want);
    snprintf(want, sizeof want, "'%s'", b);
    ok = ok && strstr(msg, want);
    snprintf(want, sizeof want, "test_lock.c:%d", st->first);
    ok = ok && strstr(msg, want);
    snprintf(want, sizeof want, "test_lock.c:%d", st->second);
    ok = ok && strstr(msg, want);
    if (!ok) {
        print_error("stderr of the child: '%s' (sites %d, %d)\n", msg, st->first, st->second);
        fail();
    }
}

static void test_order_violation_aborts(void **state)
{
    (void)state;
    char msg[1024];
    struct sites st;
    int status =
        run_order_child(UT_RANK_ODB, "odb", UT_RANK_BUFFER, "buffer", msg, sizeof msg, &st);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    assert_names_sites(msg, "odb", "buffer", &st);
    assert_non_null(strstr(msg, "rank 300"));
    assert_non_null(strstr(msg, "rank 100"));
}

static void test_equal_rank_aborts(void **state)
{
    (void)state;
    char msg[1024];
    struct sites st;
    int status =
        run_order_child(UT_RANK_MSG, "ring-a", UT_RANK_MSG, "ring-b", msg, sizeof msg, &st);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    assert_names_sites(msg, "ring-a", "ring-b", &st);
}

static void test_correct_order_allowed(void **state)
{
    (void)state;
    char msg[1024];
    struct sites st;
    int status =
        run_order_child(UT_RANK_BUFFER, "buffer", UT_RANK_ODB, "odb", msg, sizeof msg, &st);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_null(strstr(msg, "violation"));
}

/* Recursion on a lower-ranked lock held under a higher one is allowed;
 * releasing the higher one makes lower ranks takeable again. */
static void test_recursion_below_top_allowed(void **state)
{
    (void)state;
    struct ut_shlock sb, so, sl;
    assert_int_equal(ut_shlock_init(&sb), 0);
    assert_int_equal(ut_shlock_init(&so), 0);
    assert_int_equal(ut_shlock_init(&sl), 0);
    struct ut_lock b, o, local;
    ut_lock_bind(&b, &sb, "buffer", UT_RANK_BUFFER, 1000, NULL, NULL);
    ut_lock_bind(&o, &so, "odb", UT_RANK_ODB, 1000, NULL, NULL);
    ut_lock_bind(&local, &sl, "local", UT_RANK_LOCAL, 1000, NULL, NULL);
    assert_int_equal(UT_LOCK(&b), 0);
    assert_int_equal(UT_LOCK(&o), 0);
    assert_int_equal(UT_LOCK(&local), 0);
    assert_int_equal(UT_LOCK(&b), 0); /* recursion under two higher locks */
    assert_int_equal(UT_LOCK(&o), 0);
    assert_int_equal(ut_lock_top_rank(), UT_RANK_LOCAL);
    ut_lock_release(&o);
    ut_lock_release(&b);
    ut_lock_release(&local);
    ut_lock_release(&o);
    assert_int_equal(ut_lock_top_rank(), UT_RANK_BUFFER);
    ut_lock_release(&b);
    assert_int_equal(ut_lock_top_rank(), 0);
    /* Nothing held: any order is fine now. */
    assert_int_equal(UT_LOCK(&o), 0);
    ut_lock_release(&o);
    assert_int_equal(UT_LOCK(&b), 0);
    ut_lock_release(&b);
}

static void test_release_unheld_aborts(void **state)
{
    (void)state;
    int errp[2];
    assert_int_equal(pipe(errp), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(errp[0]);
        dup2(errp[1], STDERR_FILENO);
        struct ut_shlock sh;
        struct ut_lock l;
        if (ut_shlock_init(&sh))
            _exit(2);
        ut_lock_bind(&l, &sh, "never", UT_RANK_ODB, 1000, NULL, NULL);
        ut_lock_release(&l);
        _exit(0);
    }
    close(errp[1]);
    char msg[512];
    tfx_read_all(errp[0], msg, sizeof msg, WAIT_MS);
    close(errp[0]);
    int status = tfx_wait_child(pid, WAIT_MS);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    assert_non_null(strstr(msg, "assertion failed"));
}

/* ---------------------------------------------------------------------- */
/* Holder death                                                            */
/* ---------------------------------------------------------------------- */

static struct ut_lock *recover_lock; /* the lock the recovery callback relocks */
static int recover_relock_rc;

static int recover_ok(void *arg)
{
    struct shared *s = arg;
    atomic_fetch_add(&s->n_recover, 1);
    if (recover_lock) {
        /* Recovery code may call functions that take the same lock (the
         * ODB's recovery runs odb_check, which locks): that is recursion. */
        recover_relock_rc = UT_LOCK(recover_lock);
        if (recover_relock_rc == 0)
            ut_lock_release(recover_lock);
    }
    return 0;
}

static int recover_fail(void *arg)
{
    struct shared *s = arg;
    atomic_fetch_add(&s->n_recover, 1);
    return UT_ECORRUPT;
}

/* Forks a child that takes the lock and exits (or is killed) holding it. */
static void die_holding(struct shared *s, bool sigkill)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct ut_lock l;
        ut_lock_bind(&l, &s->sh, "odb", UT_RANK_ODB, WAIT_MS, NULL, NULL);
        if (UT_LOCK(&l) != 0)
            _exit(2);
        if (sigkill)
            (void)raise(SIGKILL); /* cannot fail for SIGKILL */
        _exit(0);
    }
    int status = tfx_wait_child(pid, WAIT_MS);
    if (sigkill) {
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), SIGKILL);
    } else {
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
}

static void test_owner_died_recovers(void **state)
{
    (void)state;
    struct shared *s = map_shared();
    die_holding(s, false);
    struct ut_lock l;
    ut_lock_bind(&l, &s->sh, "odb", UT_RANK_ODB, 2000, recover_ok, s);
    recover_lock = &l;
    recover_relock_rc = -1;
    assert_int_equal(UT_LOCK(&l), 0);
    recover_lock = NULL;
    assert_int_equal(atomic_load(&s->n_recover), 1);
    assert_int_equal(recover_relock_rc, 0);
    assert_int_equal(s->sh.n_owner_died, 1);
    assert_true(ut_lock_held(&l));
    assert_int_equal(s->sh.owner_pid, (uint32_t)getpid());
    ut_lock_release(&l);
    /* Consistent again: no further recovery. */
    assert_int_equal(UT_LOCK(&l), 0);
    ut_lock_release(&l);
    assert_int_equal(atomic_load(&s->n_recover), 1);
    assert_int_equal(s->sh.n_owner_died, 1);

    /* Killed by SIGKILL while holding: same story, counted again. */
    die_holding(s, true);
    assert_int_equal(UT_LOCK(&l), 0);
    ut_lock_release(&l);
    assert_int_equal(atomic_load(&s->n_recover), 2);
    assert_int_equal(s->sh.n_owner_died, 2);
    unmap_shared(s);
}

static void test_owner_died_no_callback(void **state)
{
    (void)state;
    struct shared *s = map_shared();
    die_holding(s, false);
    struct ut_lock l;
    ut_lock_bind(&l, &s->sh, "odb", UT_RANK_ODB, 2000, NULL, NULL);
    assert_int_equal(UT_LOCK(&l), 0);
    ut_lock_release(&l);
    assert_int_equal(s->sh.n_owner_died, 1);
    assert_int_equal(s->sh.broken, 0);
    unmap_shared(s);
}

static void test_recovery_failure_breaks(void **state)
{
    (void)state;
    struct shared *s = map_shared();
    die_holding(s, false);
    struct ut_lock l;
    ut_lock_bind(&l, &s->sh, "odb", UT_RANK_ODB, 2000, recover_fail, s);
    assert_int_equal(UT_LOCK(&l), UT_ECORRUPT);
    assert_false(ut_lock_held(&l));
    assert_int_equal(atomic_load(&s->n_recover), 1);
    assert_int_equal(s->sh.broken, 1);
    assert_non_null(strstr(ut_lock_last_error(), "recovery failed"));
    /* Every later use refuses, without running recovery again. */
    assert_int_equal(UT_LOCK(&l), UT_ECORRUPT);
    assert_int_equal(atomic_load(&s->n_recover), 1);
    assert_int_equal(ut_lock_top_rank(), 0);

    /* Another process too, even one that would recover fine. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct ut_lock cl;
        ut_lock_bind(&cl, &s->sh, "odb", UT_RANK_ODB, 2000, recover_ok, s);
        int rc = UT_LOCK(&cl);
        _exit(rc == UT_ECORRUPT ? 0 : 1);
    }
    int status = tfx_wait_child(pid, WAIT_MS);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(atomic_load(&s->n_recover), 1);

    /* Even a locker that ignores the broken flag finds the mutex itself
     * unrecoverable: nobody reads the bad data. */
    assert_int_equal(pthread_mutex_trylock(&s->sh.mutex), ENOTRECOVERABLE);
    unmap_shared(s);
}

/* ---------------------------------------------------------------------- */
/* ut_interrupt                                                            */
/* ---------------------------------------------------------------------- */

static void test_interrupt_wakes_waiter(void **state)
{
    (void)state;
    struct ut_shlock sh;
    struct ut_lock l, lw;
    assert_int_equal(ut_shlock_init(&sh), 0);
    ut_lock_bind(&l, &sh, "intr", UT_RANK_ODB, WAIT_MS, NULL, NULL);
    ut_lock_bind(&lw, &sh, "intr", UT_RANK_ODB, 10000, NULL, NULL);
    int ready[2], done[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(done), 0);
    assert_false(ut_interrupted());
    assert_int_equal(UT_LOCK(&l), 0);
    struct contender c = {.lock = &lw, .ready_fd = ready[1], .done_fd = done[1], .rc = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, contend, &c), 0);
    assert_true(tfx_wait_fd(ready[0], WAIT_MS));
    assert_true(tfx_wait_lock_sleeper(&sh, WAIT_MS));
    ut_interrupt();
    assert_true(ut_interrupted());
    assert_true(tfx_wait_fd(done[0], WAIT_MS));
    pthread_join(t, NULL);
    ut_interrupt_clear();
    assert_false(ut_interrupted());
    assert_int_equal(c.rc, UT_EINTR);
    assert_int_equal(atomic_load(&c.got_it), 0);
    assert_true(c.waited_ms < 2000); /* promptly, not after the 10 s timeout */
    assert_non_null(strstr(c.errmsg, "interrupted"));
    /* The interrupted thread holds nothing; the holder still does. */
    assert_true(ut_lock_held(&l));
    ut_lock_release(&l);

    /* Cleared: waits work again. */
    struct contender c2 = {.lock = &lw, .ready_fd = ready[1], .done_fd = done[1], .rc = -1};
    assert_int_equal(pthread_create(&t, NULL, contend, &c2), 0);
    assert_true(tfx_wait_fd(ready[0], WAIT_MS));
    assert_true(tfx_wait_fd(done[0], WAIT_MS));
    pthread_join(t, NULL);
    assert_int_equal(c2.rc, 0);
    for (int i = 0; i < 2; i++) {
        close(ready[i]);
        close(done[i]);
    }
}

/* ---------------------------------------------------------------------- */
/* Release hooks                                                           */
/* ---------------------------------------------------------------------- */

static __thread bool hook_armed;
static __thread int hook_calls;
static __thread int hook_top_rank;
static __thread struct ut_lock *hook_relock; /* lock the hook takes (a flush) */

static void release_hook(void)
{
    if (!hook_armed)
        return;
    hook_calls++;
    hook_top_rank = ut_lock_top_rank();
    if (hook_relock) {
        /* A flush posts into the message ring: takes a rank >= MSG lock
         * from inside the hook; must not recurse into the hook. */
        if (UT_LOCK(hook_relock) == 0)
            ut_lock_release(hook_relock);
    }
}

static void test_release_hook(void **state)
{
    (void)state;
    struct ut_shlock sb, sm, so, sr;
    assert_int_equal(ut_shlock_init(&sb), 0);
    assert_int_equal(ut_shlock_init(&sm), 0);
    assert_int_equal(ut_shlock_init(&so), 0);
    assert_int_equal(ut_shlock_init(&sr), 0);
    struct ut_lock b, m, o, ring;
    ut_lock_bind(&b, &sb, "buffer", UT_RANK_BUFFER, 1000, NULL, NULL);
    ut_lock_bind(&m, &sm, "msg", UT_RANK_MSG, 1000, NULL, NULL);
    ut_lock_bind(&o, &so, "odb", UT_RANK_ODB, 1000, NULL, NULL);
    ut_lock_bind(&ring, &sr, "ring", UT_RANK_MSG, 1000, NULL, NULL);
    ut_lock_set_release_hook(UT_RANK_MSG, release_hook);
    hook_armed = true;
    hook_calls = 0;

    /* Recursive MSG: only the outermost release runs the hook. */
    assert_int_equal(UT_LOCK(&m), 0);
    assert_int_equal(UT_LOCK(&m), 0);
    ut_lock_release(&m);
    assert_int_equal(hook_calls, 0);
    ut_lock_release(&m);
    assert_int_equal(hook_calls, 1);
    assert_int_equal(hook_top_rank, 0);

    /* BUFFER < MSG < ODB: not while MSG is held; yes when it goes, with
     * BUFFER still held; not for BUFFER (below the hook's rank). */
    hook_calls = 0;
    assert_int_equal(UT_LOCK(&b), 0);
    assert_int_equal(UT_LOCK(&m), 0);
    assert_int_equal(UT_LOCK(&o), 0);
    assert_int_equal(UT_LOCK(&o), 0);
    ut_lock_release(&o);
    ut_lock_release(&o);
    assert_int_equal(hook_calls, 0);
    ut_lock_release(&m);
    assert_int_equal(hook_calls, 1);
    assert_int_equal(hook_top_rank, UT_RANK_BUFFER);
    ut_lock_release(&b);
    assert_int_equal(hook_calls, 1);

    /* Out-of-order release: MSG first while ODB is still held. */
    hook_calls = 0;
    assert_int_equal(UT_LOCK(&m), 0);
    assert_int_equal(UT_LOCK(&o), 0);
    ut_lock_release(&m);
    assert_int_equal(hook_calls, 0);
    ut_lock_release(&o);
    assert_int_equal(hook_calls, 1);

    /* ODB alone is a lock of rank >= MSG. BUFFER alone is not. */
    hook_calls = 0;
    assert_int_equal(UT_LOCK(&o), 0);
    ut_lock_release(&o);
    assert_int_equal(hook_calls, 1);
    assert_int_equal(UT_LOCK(&b), 0);
    ut_lock_release(&b);
    assert_int_equal(hook_calls, 1);

    /* A hook that takes a MSG-rank lock itself runs once, not recursively. */
    hook_calls = 0;
    hook_relock = &ring;
    assert_int_equal(UT_LOCK(&o), 0);
    ut_lock_release(&o);
    hook_relock = NULL;
    assert_int_equal(hook_calls, 1);
    assert_false(ut_lock_held(&ring));
    assert_int_equal(sr.n_acquired, 1);

    /* Another thread's releases do not run this thread's bookkeeping. */
    hook_armed = false;
    assert_int_equal(ut_lock_top_rank(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recursion),
        cmocka_unit_test(test_recursion_two_mappings),
        cmocka_unit_test(test_distinct_ids),
        cmocka_unit_test(test_contention_blocks),
        cmocka_unit_test(test_counter_exact),
        cmocka_unit_test(test_timeout_names_holder),
        cmocka_unit_test(test_timeout_thread_holder),
        cmocka_unit_test(test_order_violation_aborts),
        cmocka_unit_test(test_equal_rank_aborts),
        cmocka_unit_test(test_correct_order_allowed),
        cmocka_unit_test(test_recursion_below_top_allowed),
        cmocka_unit_test(test_release_unheld_aborts),
        cmocka_unit_test(test_owner_died_recovers),
        cmocka_unit_test(test_owner_died_no_callback),
        cmocka_unit_test(test_recovery_failure_breaks),
        cmocka_unit_test(test_interrupt_wakes_waiter),
        cmocka_unit_test(test_release_hook),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
