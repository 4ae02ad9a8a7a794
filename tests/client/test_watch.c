/*
 * tests/client/test_watch.c - watch callbacks and the threads they run in
 * (MIDAS failure mode 7: callbacks delivered on the wrong thread).
 *
 * Covers: a change made by another process runs the callback in the
 * thread that calls au_dispatch, never in the watchdog thread or in the
 * program's other threads (which keep changing the watched subtree
 * themselves); au_watch_fd in a poll loop (readable after a change, not
 * readable again once au_dispatch ran the callbacks); au_dispatcher_start
 * (every callback in that one thread); a subtree watch seeing a change
 * three levels down; a rolled-back transaction reporting nothing; queue
 * overflow reaching every watch; au_watch_remove; and the watchdog
 * removing the registrations of a dead watcher.
 *
 * Changes from "another process" come from a writer child forked before
 * the parent connects; it connects on its first command and answers each
 * one over a pipe.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "client/client_int.h"
#include "tests/client/cfx.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PERIOD_MS 100

/* ---------------------------------------------------------------------- */
/* The writer child                                                       */
/* ---------------------------------------------------------------------- */

struct wcmd {
    char op; /* 's': set INT64 (creating it), 'q': quit */
    char path[95];
    int64_t value;
};

static int writer_child(int in_fd, int out_fd, void *arg)
{
    const char *dir = arg;
    struct au_client *c = NULL;
    for (;;) {
        struct wcmd cmd;
        if (!cfx_read(in_fd, &cmd, sizeof cmd, 60000) || cmd.op == 'q')
            break;
        if (!c) {
            struct au_connect_opts o =
                cfx_opts(dir, "writer", PERIOD_MS, AU_CONNECT_NO_WATCHDOG_THREAD);
            if (au_connect(&o, &c) != 0)
                return 1;
        }
        int32_t rc = odb_set(au_odb(c), ODB_ROOT, cmd.path, ODB_TYPE_INT64, &cmd.value,
                             sizeof cmd.value, 1, ODB_SET_CREATE);
        if (!cfx_write(out_fd, &rc, sizeof rc))
            return 2;
    }
    au_disconnect(c);
    return 0;
}

static void remote_set(struct cfx_child *w, const char *path, int64_t value)
{
    struct wcmd cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.op = 's';
    ut_strlcpy(cmd.path, path, sizeof cmd.path);
    cmd.value = value;
    assert_true(cfx_write(w->to_child, &cmd, sizeof cmd));
    int32_t rc = -1;
    assert_true(cfx_read(w->from_child, &rc, sizeof rc, 10000));
    assert_int_equal(rc, 0);
}

static void writer_quit(struct cfx_child *w)
{
    struct wcmd cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.op = 'q';
    assert_true(cfx_write(w->to_child, &cmd, sizeof cmd));
    assert_true(cfx_exited_ok(cfx_child_wait(w, 10000)));
}

/* ---------------------------------------------------------------------- */
/* A callback that records where it ran                                   */
/* ---------------------------------------------------------------------- */

#define MAX_CALLS 4096

struct recorder {
    pthread_mutex_t mutex;
    int n_calls;
    int n_foreign;    /* calls in a thread other than `expect` */
    pthread_t expect; /* the thread callbacks must run in */
    bool expect_set;
    atomic_llong last_x; /* /W/x as read in the last callback */
    char paths[64][128]; /* first changed-key paths */
    int n_paths;
    pthread_t threads[MAX_CALLS];
};

static void recorder_init(struct recorder *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mutex, NULL);
    atomic_init(&r->last_x, -1);
}

static void recorder_expect(struct recorder *r, pthread_t t)
{
    pthread_mutex_lock(&r->mutex);
    r->expect = t;
    r->expect_set = true;
    pthread_mutex_unlock(&r->mutex);
}

static void record_cb(struct au_client *c, struct odb_hkey changed, void *arg)
{
    struct recorder *r = arg;
    pthread_t self = pthread_self();
    char path[128] = "";
    if (odb_key_path(au_odb(c), changed, path, sizeof path) != 0)
        path[0] = '\0';
    int64_t x = -1;
    size_t sz = sizeof x;
    if (odb_get(au_odb(c), ODB_ROOT, "/W/x", ODB_TYPE_INT64, &x, &sz) != 0)
        x = -1;
    pthread_mutex_lock(&r->mutex);
    if (r->n_calls < MAX_CALLS)
        r->threads[r->n_calls] = self;
    r->n_calls++;
    if (r->expect_set && !pthread_equal(self, r->expect))
        r->n_foreign++;
    if (r->n_paths < 64)
        ut_strlcpy(r->paths[r->n_paths++], path, sizeof r->paths[0]);
    pthread_mutex_unlock(&r->mutex);
    atomic_store(&r->last_x, x);
}

static int calls(struct recorder *r)
{
    pthread_mutex_lock(&r->mutex);
    int n = r->n_calls;
    pthread_mutex_unlock(&r->mutex);
    return n;
}

static bool saw_path(struct recorder *r, const char *path)
{
    pthread_mutex_lock(&r->mutex);
    bool found = false;
    for (int i = 0; i < r->n_paths && !found; i++)
        found = strcmp(r->paths[i], path) == 0;
    pthread_mutex_unlock(&r->mutex);
    return found;
}

/* Waits until the callbacks saw /W/x == want, dispatching in this thread
 * when `dispatch` is true. */
static bool wait_x(struct au_client *c, struct recorder *r, int64_t want, bool dispatch)
{
    int64_t deadline = cfx_now_ms() + 10000;
    while (atomic_load(&r->last_x) != want) {
        if (cfx_now_ms() > deadline)
            return false;
        if (dispatch) {
            int n = au_dispatch(c, 100);
            if (n < 0)
                return false;
        } else {
            cfx_sleep_ms(2);
        }
    }
    return true;
}

/* ---------------------------------------------------------------------- */
/* Threads                                                                */
/* ---------------------------------------------------------------------- */

struct busy_arg {
    struct au_client *c;
    int index;
    atomic_bool *stop;
    atomic_int sets;
};

/* Keeps changing keys inside and outside the watched subtree. */
static void *busy_main(void *p)
{
    struct busy_arg *a = p;
    char path[64];
    (void)snprintf(path, sizeof path, "/W/busy%d", a->index);
    for (int64_t i = 0; i < 100000 && !atomic_load(a->stop); i++) {
        int err =
            odb_set(au_odb(a->c), ODB_ROOT, path, ODB_TYPE_INT64, &i, sizeof i, 1, ODB_SET_CREATE);
        if (!err)
            err = odb_set(au_odb(a->c), ODB_ROOT, "/Other/k", ODB_TYPE_INT64, &i, sizeof i, 1,
                          ODB_SET_CREATE);
        if (err)
            break;
        atomic_fetch_add(&a->sets, 1);
        if (i % 16 == 0)
            cfx_sleep_ms(1); /* leave the lock to the others now and then */
    }
    return NULL;
}

struct dispatch_arg {
    struct au_client *c;
    atomic_bool stop;
    int errors;
};

static void *dispatch_main(void *p)
{
    struct dispatch_arg *a = p;
    while (!atomic_load(&a->stop)) {
        int n = au_dispatch(a->c, 50);
        if (n < 0)
            a->errors++;
    }
    return NULL;
}

/* A change from another process runs the callback in the dispatching
 * thread: first the main thread, then a thread of the program's own;
 * three other threads change the subtree meanwhile. */
static void test_callback_thread(void **state)
{
    struct cfx *fx = *state;
    struct cfx_child w;
    cfx_child_start(&w, 60, writer_child, fx->dir);
    struct au_client *c = cfx_connect(fx->dir, "watcher", PERIOD_MS, 0);
    int64_t zero = 0;
    assert_int_equal(
        odb_set(au_odb(c), ODB_ROOT, "/W/x", ODB_TYPE_INT64, &zero, sizeof zero, 1, ODB_SET_CREATE),
        0);
    struct recorder r;
    recorder_init(&r);
    recorder_expect(&r, pthread_self());
    uint32_t id;
    assert_int_equal(au_watch_add(c, "/W", record_cb, &r, &id), 0);

    atomic_bool stop = false;
    struct busy_arg busy[3];
    pthread_t bt[3];
    for (int i = 0; i < 3; i++) {
        busy[i].c = c;
        busy[i].index = i;
        busy[i].stop = &stop;
        atomic_init(&busy[i].sets, 0);
        assert_int_equal(pthread_create(&bt[i], NULL, busy_main, &busy[i]), 0);
    }

    /* Phase 1: the main thread dispatches. */
    for (int64_t i = 1; i <= 5; i++) {
        remote_set(&w, "/W/x", i);
        assert_true(wait_x(c, &r, i, true));
    }
    int phase1 = calls(&r);
    assert_true(phase1 >= 5);

    /* Phase 2: a thread of ours dispatches; the main thread only waits. */
    struct dispatch_arg da = {c, false, 0};
    pthread_t dt;
    pthread_mutex_lock(&r.mutex);
    assert_int_equal(pthread_create(&dt, NULL, dispatch_main, &da), 0);
    r.expect = dt;
    pthread_mutex_unlock(&r.mutex);
    for (int64_t i = 6; i <= 10; i++) {
        remote_set(&w, "/W/x", i);
        assert_true(wait_x(c, &r, i, false));
    }
    atomic_store(&stop, true);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pthread_join(bt[i], NULL), 0);
        assert_true(atomic_load(&busy[i].sets) > 0);
    }
    atomic_store(&da.stop, true);
    assert_int_equal(pthread_join(dt, NULL), 0);
    assert_int_equal(da.errors, 0);

    assert_true(calls(&r) > phase1);
    assert_int_equal(r.n_foreign, 0);
    int n = r.n_calls < MAX_CALLS ? r.n_calls : MAX_CALLS;
    for (int i = 0; i < n; i++) {
        assert_false(pthread_equal(r.threads[i], c->wd_thread));
        for (int b = 0; b < 3; b++)
            assert_false(pthread_equal(r.threads[i], bt[b]));
    }
    assert_true(saw_path(&r, "/W/x"));
    writer_quit(&w);
    au_disconnect(c);
}

/* au_watch_fd in a poll loop. */
static void test_watch_fd_poll(void **state)
{
    struct cfx *fx = *state;
    struct cfx_child w;
    cfx_child_start(&w, 60, writer_child, fx->dir);
    struct au_client *c = cfx_connect(fx->dir, "poller", PERIOD_MS, 0);
    int64_t zero = 0;
    assert_int_equal(
        odb_set(au_odb(c), ODB_ROOT, "/W/x", ODB_TYPE_INT64, &zero, sizeof zero, 1, ODB_SET_CREATE),
        0);
    struct recorder r;
    recorder_init(&r);
    recorder_expect(&r, pthread_self());
    uint32_t id;
    assert_int_equal(au_watch_add(c, "/W/x", record_cb, &r, &id), 0);
    int fd = au_watch_fd(c);
    assert_true(fd >= 0);
    assert_int_equal(au_watch_fd(c), fd); /* the same one each time */

    /* The fd starts readable (changes may be pending); nothing is. */
    struct pollfd pfd = {fd, POLLIN, 0};
    assert_int_equal(poll(&pfd, 1, 5000), 1);
    assert_int_equal(au_dispatch(c, 0), 0);
    /* Once dispatched, the fd is quiet: a poll loop does not spin. */
    assert_int_equal(poll(&pfd, 1, 0), 0);

    for (int64_t i = 1; i <= 3; i++) {
        remote_set(&w, "/W/x", i);
        pfd.revents = 0;
        assert_int_equal(poll(&pfd, 1, 5000), 1);
        assert_true(pfd.revents & POLLIN);
        assert_int_equal(au_dispatch(c, 0), 1);
        assert_int_equal(atomic_load(&r.last_x), i);
        assert_int_equal(poll(&pfd, 1, 0), 0);
    }
    assert_int_equal(calls(&r), 3);
    assert_int_equal(r.n_foreign, 0);
    writer_quit(&w);
    au_disconnect(c);
}

/* au_dispatcher_start: every callback in that one thread. */
static void test_dispatcher_thread(void **state)
{
    struct cfx *fx = *state;
    struct cfx_child w;
    cfx_child_start(&w, 60, writer_child, fx->dir);
    struct au_client *c = cfx_connect(fx->dir, "dispatched", PERIOD_MS, 0);
    int64_t zero = 0;
    assert_int_equal(
        odb_set(au_odb(c), ODB_ROOT, "/W/x", ODB_TYPE_INT64, &zero, sizeof zero, 1, ODB_SET_CREATE),
        0);
    struct recorder r;
    recorder_init(&r);
    uint32_t id;
    assert_int_equal(au_watch_add(c, "/W", record_cb, &r, &id), 0);
    assert_int_equal(au_dispatcher_start(c), 0);
    assert_int_equal(au_dispatcher_start(c), 0); /* a second start is a no-op */
    pthread_mutex_lock(&c->watch_mutex);
    pthread_t disp = c->dispatcher;
    pthread_mutex_unlock(&c->watch_mutex);
    recorder_expect(&r, disp);
    for (int64_t i = 1; i <= 5; i++) {
        remote_set(&w, "/W/x", i);
        assert_true(wait_x(c, &r, i, false));
    }
    /* Changes made by this thread go to the dispatcher too. */
    int64_t v = 42;
    assert_int_equal(odb_set(au_odb(c), ODB_ROOT, "/W/x", ODB_TYPE_INT64, &v, sizeof v, 1, 0), 0);
    assert_true(wait_x(c, &r, 42, false));
    assert_true(calls(&r) >= 6);
    assert_int_equal(r.n_foreign, 0);
    for (int i = 0; i < r.n_calls && i < MAX_CALLS; i++)
        assert_false(pthread_equal(r.threads[i], pthread_self()));
    writer_quit(&w);
    au_disconnect(c); /* stops the dispatcher */
}

/* A watch on /A sees a change three levels below. */
static void test_subtree_deep(void **state)
{
    struct cfx *fx = *state;
    struct cfx_child w;
    cfx_child_start(&w, 60, writer_child, fx->dir);
    struct au_client *c = cfx_connect(fx->dir, "deep", PERIOD_MS, 0);
    assert_int_equal(odb_create(au_odb(c), ODB_ROOT, "/A/B/C/d", ODB_TYPE_INT64, 1, 0, NULL), 0);
    struct recorder r;
    recorder_init(&r);
    recorder_expect(&r, pthread_self());
    uint32_t id;
    assert_int_equal(au_watch_add(c, "/A", record_cb, &r, &id), 0);
    assert_int_equal(au_dispatch(c, 0), 0);
    remote_set(&w, "/A/B/C/d", 7);
    int64_t deadline = cfx_now_ms() + 5000;
    while (calls(&r) == 0 && cfx_now_ms() < deadline)
        assert_true(au_dispatch(c, 100) >= 0);
    assert_int_equal(calls(&r), 1);
    assert_true(saw_path(&r, "/A/B/C/d"));
    /* A change outside the subtree is not reported. */
    remote_set(&w, "/Elsewhere/d", 1);
    assert_int_equal(au_dispatch(c, 200), 0);
    assert_int_equal(calls(&r), 1);
    writer_quit(&w);
    au_disconnect(c);
}

/* A rolled-back transaction reports nothing; the next committed change
 * is reported alone. */
static void test_rollback_silent(void **state)
{
    struct cfx *fx = *state;
    struct au_client *c = cfx_connect(fx->dir, "rb", PERIOD_MS, 0);
    struct odb *odb = au_odb(c);
    assert_int_equal(odb_create(odb, ODB_ROOT, "/R/x", ODB_TYPE_INT64, 1, 0, NULL), 0);
    assert_int_equal(odb_create(odb, ODB_ROOT, "/R/y", ODB_TYPE_INT64, 1, 0, NULL), 0);
    struct recorder r;
    recorder_init(&r);
    recorder_expect(&r, pthread_self());
    uint32_t id;
    assert_int_equal(au_watch_add(c, "/R", record_cb, &r, &id), 0);
    uint32_t seq = odb_watch_seq(odb, au_client_slot(c));

    int64_t v = 5;
    assert_int_equal(odb_txn_begin(odb), 0);
    assert_int_equal(odb_set(odb, ODB_ROOT, "/R/x", ODB_TYPE_INT64, &v, sizeof v, 1, 0), 0);
    assert_int_equal(odb_create(odb, ODB_ROOT, "/R/new", ODB_TYPE_INT32, 1, 0, NULL), 0);
    odb_txn_abort(odb);
    /* Nested: an inner abort inside a committed outer transaction. */
    assert_int_equal(odb_txn_begin(odb), 0);
    assert_int_equal(odb_txn_begin(odb), 0);
    assert_int_equal(odb_set(odb, ODB_ROOT, "/R/x", ODB_TYPE_INT64, &v, sizeof v, 1, 0), 0);
    odb_txn_abort(odb);
    assert_int_equal(odb_txn_commit(odb), 0);

    assert_int_equal(odb_watch_seq(odb, au_client_slot(c)), seq);
    assert_int_equal(au_dispatch(c, 0), 0);
    assert_int_equal(au_dispatch(c, 100), 0);
    assert_int_equal(calls(&r), 0);

    assert_int_equal(odb_set(odb, ODB_ROOT, "/R/y", ODB_TYPE_INT64, &v, sizeof v, 1, 0), 0);
    assert_int_equal(au_dispatch(c, 1000), 1);
    assert_int_equal(calls(&r), 1);
    assert_true(saw_path(&r, "/R/y"));
    assert_false(saw_path(&r, "/R/x"));
    au_disconnect(c);
}

/* More than ODB_WATCH_QUEUE distinct changes without a dispatch: the
 * overflow entry reaches every watch, even one with no change of its own. */
static void test_overflow(void **state)
{
    struct cfx *fx = *state;
    struct au_client *c = cfx_connect(fx->dir, "ovf", PERIOD_MS, 0);
    struct odb *odb = au_odb(c);
    enum { N = ODB_WATCH_QUEUE + 8 };
    for (int i = 0; i < N; i++) {
        char path[64];
        (void)snprintf(path, sizeof path, "/Ov/k%d", i);
        assert_int_equal(odb_create(odb, ODB_ROOT, path, ODB_TYPE_INT64, 1, 0, NULL), 0);
    }
    assert_int_equal(odb_create(odb, ODB_ROOT, "/Quiet/q", ODB_TYPE_INT64, 1, 0, NULL), 0);
    struct recorder r1, r2;
    recorder_init(&r1);
    recorder_init(&r2);
    recorder_expect(&r1, pthread_self());
    recorder_expect(&r2, pthread_self());
    uint32_t id1, id2;
    assert_int_equal(au_watch_add(c, "/Ov", record_cb, &r1, &id1), 0);
    assert_int_equal(au_watch_add(c, "/Quiet", record_cb, &r2, &id2), 0);
    /* More watches than fit in one batch of the dispatcher. */
    enum { N_EXTRA = 24 };
    struct recorder *extra = calloc(N_EXTRA, sizeof *extra);
    assert_non_null(extra);
    for (int i = 0; i < N_EXTRA; i++) {
        recorder_init(&extra[i]);
        uint32_t id;
        assert_int_equal(au_watch_add(c, "/Quiet/q", record_cb, &extra[i], &id), 0);
    }
    for (int64_t i = 0; i < N; i++) {
        char path[64];
        (void)snprintf(path, sizeof path, "/Ov/k%d", (int)i);
        assert_int_equal(odb_set(odb, ODB_ROOT, path, ODB_TYPE_INT64, &i, sizeof i, 1, 0), 0);
    }
    int ran = au_dispatch(c, 0);
    assert_true(ran >= 2 + N_EXTRA);
    assert_true(calls(&r1) >= 1);
    assert_int_equal(calls(&r2), 1); /* only through the overflow entry */
    assert_true(saw_path(&r2, "/Quiet"));
    for (int i = 0; i < N_EXTRA; i++) {
        assert_int_equal(calls(&extra[i]), 1);
        assert_true(saw_path(&extra[i], "/Quiet/q"));
    }
    /* Afterwards delivery is normal again. */
    assert_int_equal(au_dispatch(c, 0), 0);
    int64_t v = 1;
    assert_int_equal(odb_set(odb, ODB_ROOT, "/Quiet/q", ODB_TYPE_INT64, &v, sizeof v, 1, 0), 0);
    assert_int_equal(au_dispatch(c, 1000), 1 + N_EXTRA);
    assert_int_equal(calls(&r2), 2);
    assert_true(saw_path(&r2, "/Quiet/q"));
    au_disconnect(c);
    free(extra);
}

/* au_watch_remove stops the callbacks and the ODB registration. */
static void test_watch_remove(void **state)
{
    struct cfx *fx = *state;
    struct au_client *c = cfx_connect(fx->dir, "rm", PERIOD_MS, 0);
    struct odb *odb = au_odb(c);
    struct odb_hkey k;
    assert_int_equal(odb_create(odb, ODB_ROOT, "/Rm/x", ODB_TYPE_INT64, 1, 0, NULL), 0);
    assert_int_equal(odb_find(odb, ODB_ROOT, "/Rm", &k), 0);
    struct recorder r;
    recorder_init(&r);
    uint32_t id1, id2, n = 99;
    assert_int_equal(au_watch_add(c, "/Rm", record_cb, &r, &id1), 0);
    assert_int_equal(au_watch_add(c, "/Rm", record_cb, &r, &id2), 0);
    assert_int_equal(odb_watch_count(odb, k, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(au_watch_add(c, "/No/such", record_cb, &r, &id1), ODB_ENOKEY);
    assert_int_equal(au_watch_remove(c, id2), 0);
    assert_int_equal(au_watch_remove(c, id2), ODB_ENOKEY);
    assert_int_equal(odb_watch_count(odb, k, &n), 0);
    assert_int_equal(n, 1);
    int64_t v = 3;
    assert_int_equal(odb_set(odb, ODB_ROOT, "/Rm/x", ODB_TYPE_INT64, &v, sizeof v, 1, 0), 0);
    assert_int_equal(au_dispatch(c, 1000), 1);
    au_disconnect(c);
}

/* A watcher that dies: the watchdog removes its registrations. */
static int watcher_child(int in_fd, int out_fd, void *arg)
{
    const char *dir = arg;
    struct au_connect_opts o = cfx_opts(dir, "watcher", PERIOD_MS, 0);
    struct au_client *c = NULL;
    if (au_connect(&o, &c) != 0)
        return 1;
    int err = odb_create(au_odb(c), ODB_ROOT, "/Dw/x", ODB_TYPE_INT64, 1, 0, NULL);
    if (err && err != ODB_EEXIST)
        return 2;
    uint32_t id;
    struct recorder *r = malloc(sizeof *r);
    if (!r)
        return 3;
    recorder_init(r);
    for (int i = 0; i < 2; i++) /* two registrations on the same key */
        if (au_watch_add(c, "/Dw", record_cb, r, &id) != 0)
            return 4;
    uint32_t slot = au_client_slot(c);
    if (!cfx_write(out_fd, &slot, sizeof slot))
        return 5;
    char cmd;
    (void)cfx_read(in_fd, &cmd, 1, 60000);
    au_disconnect(c);
    free(r);
    return 0;
}

static void test_dead_watcher_removed(void **state)
{
    struct cfx *fx = *state;
    struct cfx_child ch;
    cfx_child_start(&ch, 60, watcher_child, fx->dir);
    uint32_t slot = UINT32_MAX;
    assert_true(cfx_read(ch.from_child, &slot, sizeof slot, 20000));
    struct au_client *c = cfx_connect(fx->dir, "survivor", PERIOD_MS, 0);
    struct odb *odb = au_odb(c);
    struct odb_hkey k;
    assert_int_equal(odb_find(odb, ODB_ROOT, "/Dw", &k), 0);
    uint32_t n = 0;
    assert_int_equal(odb_watch_count(odb, k, &n), 0);
    assert_int_equal(n, 2);
    /* Pending changes for the watcher pile up in its queue meanwhile. */
    int64_t v = 1;
    assert_int_equal(odb_set(odb, ODB_ROOT, "/Dw/x", ODB_TYPE_INT64, &v, sizeof v, 1, 0), 0);

    int64_t t0 = cfx_now_ms();
    cfx_child_kill(&ch);
    for (;;) {
        assert_int_equal(odb_watch_count(odb, k, &n), 0);
        if (n == 0 || cfx_now_ms() - t0 > (int64_t)10 * PERIOD_MS)
            break;
        cfx_sleep_ms(2);
    }
    assert_int_equal(n, 0);
    assert_false(cfx_entry_exists(c, slot));
    /* Its queue was cleared too: nothing waits for the slot's next owner. */
    struct odb_change chg[4];
    size_t got = 99;
    assert_int_equal(odb_watch_read(odb, slot, chg, 4, &got), 0);
    assert_int_equal(got, 0);
    au_disconnect(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_callback_thread, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_watch_fd_poll, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_dispatcher_thread, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_subtree_deep, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_rollback_silent, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_overflow, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_watch_remove, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_dead_watcher_removed, cfx_setup, cfx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
