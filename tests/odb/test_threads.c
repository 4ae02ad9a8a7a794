/*
 * tests/odb/test_threads.c - the ODB used by several threads of one
 * process: exact totals under contention, separate handles of one segment,
 * a transaction holding off readers until it commits, bounded and
 * interruptible waits, and handles that go stale under a reader's feet.
 * (Processes sharing the segment are tested in test_multiproc.c.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "odb/odb_int.h"
#include "tests/odb/fixture.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS   20000 /* bound on every handshake */
#define N_THREADS 4
#define ITER      1000

struct fx {
    struct odb *odb;
    char name[128];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->odb = tfx_odb_create("threads", 4u << 20, 0, f->name, sizeof f->name);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char report[512];
    int err = odb_check(f->odb, report, sizeof report);
    if (err)
        print_error("odb_check at teardown: %s: %s\n", ut_strerror(err), report);
    tfx_odb_destroy(f->odb, f->name);
    free(f);
    tfx_unlink_all();
    return err ? -1 : 0;
}

static int64_t ms_since(int64_t start_ns)
{
    return (ut_now_ns() - start_ns) / 1000000;
}

/* ---------------------------------------------------------------------- */
/* Four threads, own and shared keys                                       */
/* ---------------------------------------------------------------------- */

struct worker {
    struct odb *odb;
    int id;
    int start_fd;
    int errors;
    char first_error[256];
    long listed; /* directory entries seen in /shared */
};

static void note_error(struct worker *w, int line, int err)
{
    if (w->errors++ == 0)
        snprintf(w->first_error, sizeof w->first_error, "thread %d line %d: %s (%s)", w->id, line,
                 ut_strerror(err), odb_errmsg());
}

#define CHECK(w, call)                                                                             \
    do {                                                                                           \
        int e_ = (call);                                                                           \
        if (e_)                                                                                    \
            note_error((w), __LINE__, e_);                                                         \
    } while (0)

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct odb *odb = w->odb;
    if (!tfx_wait_fd(w->start_fd, WAIT_MS)) {
        note_error(w, __LINE__, UT_ETIMEOUT);
        return NULL;
    }
    char own[64], path[96];
    snprintf(own, sizeof own, "/own%d", w->id);
    struct odb_hkey arr;
    CHECK(w, odb_find(odb, ODB_ROOT, "/shared/per_thread", &arr));
    for (int i = 0; i < ITER; i++) {
        /* Own keys: create, set, read back, delete half of them. */
        snprintf(path, sizeof path, "%s/k%d", own, i % 50);
        int32_t v = i;
        CHECK(w, odb_set(odb, ODB_ROOT, path, ODB_TYPE_INT32, &v, 4, 1, ODB_SET_CREATE));
        int32_t r = -1;
        size_t size = sizeof r;
        CHECK(w, odb_get(odb, ODB_ROOT, path, ODB_TYPE_INT32, &r, &size));
        if (r != i)
            note_error(w, __LINE__, UT_ECORRUPT);
        if (i % 2)
            CHECK(w, odb_delete(odb, ODB_ROOT, path, false));

        /* Shared counter: read-modify-write in a transaction. */
        CHECK(w, odb_txn_begin(odb));
        uint64_t c = 0;
        size = sizeof c;
        CHECK(w, odb_get(odb, ODB_ROOT, "/shared/counter", ODB_TYPE_UINT64, &c, &size));
        c++;
        CHECK(w, odb_set(odb, ODB_ROOT, "/shared/counter", ODB_TYPE_UINT64, &c, 8, 1, 0));
        CHECK(w, odb_txn_commit(odb));

        /* Own element of a shared array, without a transaction. */
        int64_t e = 0;
        CHECK(w, odb_get_elem(odb, arr, (uint32_t)w->id, ODB_TYPE_INT64, &e, sizeof e));
        e++;
        CHECK(w, odb_set_elem(odb, arr, (uint32_t)w->id, ODB_TYPE_INT64, &e, sizeof e));

        /* Shared directory: create and delete own entries while others
         * list it. */
        snprintf(path, sizeof path, "/shared/dir/t%d_%d", w->id, i);
        struct odb_hkey h;
        CHECK(w, odb_create(odb, ODB_ROOT, path, ODB_TYPE_STRING, 1, 48, &h));
        CHECK(w, odb_set(odb, h, NULL, ODB_TYPE_STRING, path, strlen(path) + 1, 1, 0));
        if (i % 10 == 0) {
            struct odb_dirent *ents = NULL;
            size_t n = 0;
            struct odb_hkey dir;
            CHECK(w, odb_find(odb, ODB_ROOT, "/shared/dir", &dir));
            CHECK(w, odb_dir_list(odb, dir, &ents, &n));
            for (size_t j = 0; j < n; j++) {
                char val[64];
                size = sizeof val;
                int err = odb_get(odb, ents[j].key, NULL, ODB_TYPE_STRING, val, &size);
                /* Deleted since the listing, or exactly what its creator
                 * wrote (or still empty): never another key's data. */
                if (err == ODB_ESTALE)
                    continue;
                if (err)
                    note_error(w, __LINE__, err);
                else if (val[0] && strcmp(val + strlen("/shared/dir/"), ents[j].name) != 0)
                    note_error(w, __LINE__, UT_ECORRUPT);
            }
            w->listed += (long)n;
            odb_dirents_free(ents);
        }
        if (i % 3 != 0)
            CHECK(w, odb_delete(odb, ODB_ROOT, path, false));
    }
    return NULL;
}

static void test_four_threads(void **state)
{
    struct odb *odb = ((struct fx *)*state)->odb;
    assert_int_equal(odb_create(odb, ODB_ROOT, "/shared/counter", ODB_TYPE_UINT64, 1, 0, NULL), 0);
    assert_int_equal(
        odb_create(odb, ODB_ROOT, "/shared/per_thread", ODB_TYPE_INT64, N_THREADS, 0, NULL), 0);
    assert_int_equal(odb_create(odb, ODB_ROOT, "/shared/dir", ODB_TYPE_DIR, 0, 0, NULL), 0);
    int go[2];
    assert_int_equal(pipe(go), 0);
    struct worker w[N_THREADS];
    pthread_t t[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        w[i] = (struct worker){.odb = odb, .id = i, .start_fd = go[0]};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++)
        assert_true(tfx_signal_fd(go[1]));
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(t[i], NULL);
    close(go[0]);
    close(go[1]);
    for (int i = 0; i < N_THREADS; i++) {
        if (w[i].errors)
            print_error("%d errors, first: %s\n", w[i].errors, w[i].first_error);
        assert_int_equal(w[i].errors, 0);
    }

    uint64_t c = 0;
    size_t size = sizeof c;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/shared/counter", ODB_TYPE_UINT64, &c, &size), 0);
    assert_int_equal(c, (uint64_t)N_THREADS * ITER);
    int64_t per[N_THREADS];
    size = sizeof per;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/shared/per_thread", ODB_TYPE_INT64, per, &size), 0);
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(per[i], ITER);
    /* Own dirs: the even-numbered keys of the last round of 50 remain. */
    for (int i = 0; i < N_THREADS; i++) {
        char path[64];
        snprintf(path, sizeof path, "/own%d", i);
        struct odb_hkey h;
        assert_int_equal(odb_find(odb, ODB_ROOT, path, &h), 0);
        struct odb_dirent *ents;
        size_t n;
        assert_int_equal(odb_dir_list(odb, h, &ents, &n), 0);
        assert_int_equal(n, 25);
        for (size_t j = 0; j < n; j++) {
            int32_t v;
            size = sizeof v;
            assert_int_equal(odb_get(odb, ents[j].key, NULL, ODB_TYPE_INT32, &v, &size), 0);
            assert_int_equal(v % 2, 0);
            assert_int_equal(v % 50, atoi(ents[j].name + 1));
            assert_true(v >= ITER - 50);
        }
        odb_dirents_free(ents);
    }
    /* Shared dir: the entries with i % 3 == 0 remain, ITER/3 + 1 each. */
    struct odb_hkey dir;
    assert_int_equal(odb_find(odb, ODB_ROOT, "/shared/dir", &dir), 0);
    struct odb_key_info info;
    assert_int_equal(odb_key_info(odb, dir, &info), 0);
    assert_int_equal(info.n_elem, N_THREADS * ((ITER + 2) / 3));
    struct odb_stats st;
    assert_int_equal(odb_stats(odb, &st), 0);
    /* root, /shared + 3, 4 own dirs with 25 keys, the shared entries */
    assert_int_equal(st.n_keys, 1 + 4 + N_THREADS * 26 + info.n_elem);
    tfx_assert_odb_ok(odb);
}

/* ---------------------------------------------------------------------- */
/* Two handles of one segment in one process                               */
/* ---------------------------------------------------------------------- */

struct incr_arg {
    struct odb *odb;
    int start_fd;
    int errors;
};

static void *incr_main(void *arg)
{
    struct incr_arg *a = arg;
    if (!tfx_wait_fd(a->start_fd, WAIT_MS)) {
        a->errors++;
        return NULL;
    }
    for (int i = 0; i < ITER; i++) {
        if (odb_txn_begin(a->odb)) {
            a->errors++;
            continue;
        }
        int64_t v = 0;
        size_t size = sizeof v;
        if (odb_get(a->odb, ODB_ROOT, "/two/count", ODB_TYPE_INT64, &v, &size))
            a->errors++;
        v++;
        if (odb_set(a->odb, ODB_ROOT, "/two/count", ODB_TYPE_INT64, &v, 8, 1, 0))
            a->errors++;
        if (odb_txn_commit(a->odb))
            a->errors++;
    }
    return NULL;
}

static void test_two_handles(void **state)
{
    struct fx *f = *state;
    struct odb *odb2 = NULL;
    assert_int_equal(odb_open(f->name, 0, NULL, &odb2), 0);
    assert_ptr_not_equal(odb2->base, f->odb->base);
    assert_int_equal(odb_create(f->odb, ODB_ROOT, "/two/count", ODB_TYPE_INT64, 1, 0, NULL), 0);

    int go[2];
    assert_int_equal(pipe(go), 0);
    struct incr_arg a[2] = {{f->odb, go[0], 0}, {odb2, go[0], 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, incr_main, &a[i]), 0);
    assert_true(tfx_signal_fd(go[1]));
    assert_true(tfx_signal_fd(go[1]));
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    close(go[0]);
    close(go[1]);
    assert_int_equal(a[0].errors + a[1].errors, 0);
    int64_t v = 0;
    size_t size = sizeof v;
    assert_int_equal(odb_get(odb2, ODB_ROOT, "/two/count", ODB_TYPE_INT64, &v, &size), 0);
    assert_int_equal(v, 2 * ITER);

    /* One thread using both handles: the lock is recognised as the same
     * (recursion), not a self-deadlock. */
    assert_int_equal(odb_txn_begin(f->odb), 0);
    v = -1;
    assert_int_equal(odb_set(f->odb, ODB_ROOT, "/two/count", ODB_TYPE_INT64, &v, 8, 1, 0), 0);
    size = sizeof v;
    v = 0;
    assert_int_equal(odb_get(odb2, ODB_ROOT, "/two/count", ODB_TYPE_INT64, &v, &size), 0);
    assert_int_equal(v, -1);
    assert_int_equal(odb_txn_begin(odb2), 0);
    assert_int_equal(odb_create(odb2, ODB_ROOT, "/two/inner", ODB_TYPE_INT8, 1, 0, NULL), 0);
    odb_txn_abort(odb2); /* the inner savepoint, whichever handle */
    odb_txn_abort(f->odb);
    size = sizeof v;
    assert_int_equal(odb_get(odb2, ODB_ROOT, "/two/count", ODB_TYPE_INT64, &v, &size), 0);
    assert_int_equal(v, 2 * ITER);
    struct odb_hkey h;
    assert_int_equal(odb_find(f->odb, ODB_ROOT, "/two/inner", &h), ODB_ENOKEY);
    assert_int_equal(ut_lock_top_rank(), 0);
    tfx_assert_odb_ok(odb2);
    odb_close(odb2);
}

/* ---------------------------------------------------------------------- */
/* A transaction holds readers off until it ends                           */
/* ---------------------------------------------------------------------- */

struct reader {
    struct odb *odb;
    int ready_fd, done_fd;
    atomic_int finished;
    int rc;
    int32_t value;
    int64_t waited_ms;
    char errmsg[512];
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    tfx_signal_fd(r->ready_fd);
    int64_t start = ut_now_ns();
    size_t size = sizeof r->value;
    r->rc = odb_get(r->odb, ODB_ROOT, "/tx/v", ODB_TYPE_INT32, &r->value, &size);
    r->waited_ms = ms_since(start);
    snprintf(r->errmsg, sizeof r->errmsg, "%s", odb_errmsg());
    atomic_store(&r->finished, 1);
    tfx_signal_fd(r->done_fd);
    return NULL;
}

static void run_blocked_reader(struct odb *main_odb, struct odb *reader_odb, bool commit)
{
    int32_t v = 1;
    assert_int_equal(odb_set(main_odb, ODB_ROOT, "/tx/v", ODB_TYPE_INT32, &v, 4, 1, ODB_SET_CREATE),
                     0);
    int ready[2], done[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(done), 0);

    assert_int_equal(odb_txn_begin(main_odb), 0);
    v = 2;
    assert_int_equal(odb_set(main_odb, ODB_ROOT, "/tx/v", ODB_TYPE_INT32, &v, 4, 1, 0), 0);
    struct reader r = {.odb = reader_odb, .ready_fd = ready[1], .done_fd = done[1], .rc = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, reader_main, &r), 0);
    assert_true(tfx_wait_fd(ready[0], WAIT_MS));
    /* The reader is asleep on the ODB lock, which our transaction holds. */
    assert_true(tfx_wait_lock_sleeper(&main_odb->hdr->lock, WAIT_MS));
    assert_int_equal(atomic_load(&r.finished), 0);
    v = 3;
    assert_int_equal(odb_set(main_odb, ODB_ROOT, "/tx/v", ODB_TYPE_INT32, &v, 4, 1, 0), 0);
    assert_int_equal(atomic_load(&r.finished), 0);
    if (commit)
        assert_int_equal(odb_txn_commit(main_odb), 0);
    else
        odb_txn_abort(main_odb);
    assert_true(tfx_wait_fd(done[0], WAIT_MS));
    pthread_join(t, NULL);
    assert_int_equal(r.rc, 0);
    /* Never an intermediate value of the transaction. */
    assert_int_equal(r.value, commit ? 3 : 1);
    for (int i = 0; i < 2; i++) {
        close(ready[i]);
        close(done[i]);
    }
}

static void test_txn_blocks_reader(void **state)
{
    struct fx *f = *state;
    run_blocked_reader(f->odb, f->odb, true);
    run_blocked_reader(f->odb, f->odb, false);
    /* The same through a second handle of the segment. */
    struct odb *odb2 = NULL;
    assert_int_equal(odb_open(f->name, 0, NULL, &odb2), 0);
    run_blocked_reader(f->odb, odb2, true);
    run_blocked_reader(odb2, f->odb, false);
    odb_close(odb2);
    struct odb_stats st;
    assert_int_equal(odb_stats(f->odb, &st), 0);
    assert_true(st.lock_contended >= 4);
    assert_true(st.lock_wait_ns > 0);
    tfx_assert_odb_ok(f->odb);
}

/* A handle with a short lock timeout gives up, naming the holder; an
 * interrupted wait returns UT_EINTR. */
static void test_lock_timeout_and_interrupt(void **state)
{
    struct fx *f = *state;
    struct odb_params p = {.lock_timeout_ms = 100};
    struct odb *quick = NULL;
    assert_int_equal(odb_open(f->name, 0, &p, &quick), 0);
    int32_t v = 5;
    assert_int_equal(odb_set(f->odb, ODB_ROOT, "/tx/v", ODB_TYPE_INT32, &v, 4, 1, ODB_SET_CREATE),
                     0);
    ut_lock_set_owner_name("txn-holder");
    assert_int_equal(odb_txn_begin(f->odb), 0);
    ut_lock_set_owner_name("?");

    int ready[2], done[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(done), 0);
    struct reader r = {.odb = quick, .ready_fd = ready[1], .done_fd = done[1], .rc = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, reader_main, &r), 0);
    assert_true(tfx_wait_fd(done[0], WAIT_MS));
    pthread_join(t, NULL);
    assert_true(tfx_wait_fd(ready[0], WAIT_MS));
    assert_int_equal(r.rc, UT_ETIMEOUT);
    assert_true(r.waited_ms >= 95);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %d ", (int)getpid());
    if (!strstr(r.errmsg, "txn-holder") || !strstr(r.errmsg, pid) || !strstr(r.errmsg, "since")) {
        print_error("errmsg: %s\n", r.errmsg);
        fail();
    }

    /* A long wait (the default 10 s), interrupted. */
    struct reader r2 = {.odb = f->odb, .ready_fd = ready[1], .done_fd = done[1], .rc = -1};
    assert_int_equal(pthread_create(&t, NULL, reader_main, &r2), 0);
    assert_true(tfx_wait_fd(ready[0], WAIT_MS));
    assert_true(tfx_wait_lock_sleeper(&f->odb->hdr->lock, WAIT_MS));
    ut_interrupt();
    assert_true(tfx_wait_fd(done[0], WAIT_MS));
    pthread_join(t, NULL);
    ut_interrupt_clear();
    assert_int_equal(r2.rc, UT_EINTR);
    assert_true(r2.waited_ms < 5000);
    odb_txn_abort(f->odb);

    /* Free again. */
    size_t size = sizeof v;
    assert_int_equal(odb_get(quick, ODB_ROOT, "/tx/v", ODB_TYPE_INT32, &v, &size), 0);
    assert_int_equal(v, 5);
    for (int i = 0; i < 2; i++) {
        close(ready[i]);
        close(done[i]);
    }
    odb_close(quick);
}

/* ---------------------------------------------------------------------- */
/* Handles going stale under other threads                                 */
/* ---------------------------------------------------------------------- */

#define CHURN 2000

struct churn {
    struct odb *odb;
    pthread_mutex_t mu; /* guards pub_* */
    struct odb_hkey pub_key;
    int pub_n;
    atomic_int done;
    int errors[3];
    atomic_long stale_writes, good_writes, lists;
};

/* The owner finishes only after the others have worked alongside it. */
static void wait_for_company(struct churn *c)
{
    int64_t start = ut_now_ns();
    while ((atomic_load(&c->good_writes) + atomic_load(&c->stale_writes) == 0 ||
            atomic_load(&c->lists) == 0) &&
           ms_since(start) < WAIT_MS)
        sched_yield();
}

static void churn_error(struct churn *c, int who)
{
    c->errors[who]++;
}

/* Creates /churn/x, sets it to n, reads it back, deletes it; CHURN times.
 * A value read back is n, or the marker -(n+1) a writer may have put in
 * through the handle of this very incarnation, never anything else. */
static void *churn_owner(void *arg)
{
    struct churn *c = arg;
    for (int n = 0; n < CHURN; n++) {
        if (n == CHURN - 1)
            wait_for_company(c);
        struct odb_hkey h;
        if (odb_create(c->odb, ODB_ROOT, "/churn/x", ODB_TYPE_INT32, 1, 0, &h)) {
            churn_error(c, 0);
            continue;
        }
        int32_t v = n;
        if (odb_set(c->odb, h, NULL, ODB_TYPE_INT32, &v, 4, 1, 0))
            churn_error(c, 0);
        pthread_mutex_lock(&c->mu);
        c->pub_key = h;
        c->pub_n = n;
        pthread_mutex_unlock(&c->mu);
        sched_yield();
        size_t size = sizeof v;
        if (odb_get(c->odb, ODB_ROOT, "/churn/x", ODB_TYPE_INT32, &v, &size) ||
            (v != n && v != -(n + 1)))
            churn_error(c, 0);
        if (odb_delete(c->odb, ODB_ROOT, "/churn/x", false))
            churn_error(c, 0);
    }
    atomic_store(&c->done, 1);
    return NULL;
}

/* Writes the marker of the published incarnation through its handle. */
static void *churn_writer(void *arg)
{
    struct churn *c = arg;
    while (!atomic_load(&c->done)) {
        pthread_mutex_lock(&c->mu);
        struct odb_hkey h = c->pub_key;
        int n = c->pub_n;
        pthread_mutex_unlock(&c->mu);
        if (n < 0) {
            sched_yield();
            continue;
        }
        int32_t v = -(n + 1);
        int err = odb_set(c->odb, h, NULL, ODB_TYPE_INT32, &v, 4, 1, ODB_SET_CREATE);
        if (err == 0)
            atomic_fetch_add(&c->good_writes, 1);
        else if (err == ODB_ESTALE)
            atomic_fetch_add(&c->stale_writes, 1);
        else
            churn_error(c, 1);
        size_t size = sizeof v;
        err = odb_get(c->odb, h, NULL, ODB_TYPE_INT32, &v, &size);
        if ((err == 0 && v != n && v != -(n + 1)) || (err != 0 && err != ODB_ESTALE))
            churn_error(c, 1);
    }
    return NULL;
}

/* Lists /churn: at most one entry, named x, readable or stale. */
static void *churn_lister(void *arg)
{
    struct churn *c = arg;
    struct odb_hkey dir;
    if (odb_find(c->odb, ODB_ROOT, "/churn", &dir)) {
        churn_error(c, 2);
        return NULL;
    }
    while (!atomic_load(&c->done)) {
        struct odb_dirent *ents = NULL;
        size_t n = 0;
        if (odb_dir_list(c->odb, dir, &ents, &n)) {
            churn_error(c, 2);
            continue;
        }
        atomic_fetch_add(&c->lists, 1);
        if (n > 1)
            churn_error(c, 2);
        for (size_t i = 0; i < n; i++) {
            struct odb_key_info info;
            int err = odb_key_info(c->odb, ents[i].key, &info);
            if (strcmp(ents[i].name, "x") != 0 || ents[i].type != ODB_TYPE_INT32)
                churn_error(c, 2);
            bool bad_info =
                err == 0 && (strcmp(info.name, "x") != 0 || info.type != ODB_TYPE_INT32);
            if (bad_info || (err != 0 && err != ODB_ESTALE))
                churn_error(c, 2);
        }
        odb_dirents_free(ents);
    }
    return NULL;
}

static void test_stale_under_churn(void **state)
{
    struct odb *odb = ((struct fx *)*state)->odb;
    assert_int_equal(odb_create(odb, ODB_ROOT, "/churn", ODB_TYPE_DIR, 0, 0, NULL), 0);
    struct churn c;
    memset(&c, 0, sizeof c);
    c.odb = odb;
    c.pub_n = -1;
    assert_int_equal(pthread_mutex_init(&c.mu, NULL), 0);
    pthread_t t[3];
    assert_int_equal(pthread_create(&t[1], NULL, churn_writer, &c), 0);
    assert_int_equal(pthread_create(&t[2], NULL, churn_lister, &c), 0);
    assert_int_equal(pthread_create(&t[0], NULL, churn_owner, &c), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    pthread_mutex_destroy(&c.mu);
    if (c.errors[0] || c.errors[1] || c.errors[2])
        print_error("errors: owner %d writer %d lister %d\n", c.errors[0], c.errors[1],
                    c.errors[2]);
    assert_int_equal(c.errors[0] + c.errors[1] + c.errors[2], 0);
    assert_true(atomic_load(&c.good_writes) + atomic_load(&c.stale_writes) > 0);
    assert_true(atomic_load(&c.lists) > 0);
    /* The writer's stale writes were refused, never turned into a create. */
    struct odb_hkey h;
    assert_int_equal(odb_find(odb, ODB_ROOT, "/churn/x", &h), ODB_ENOKEY);
    struct odb_key_info info;
    struct odb_hkey dir;
    assert_int_equal(odb_find(odb, ODB_ROOT, "/churn", &dir), 0);
    assert_int_equal(odb_key_info(odb, dir, &info), 0);
    assert_int_equal(info.n_elem, 0);
    tfx_assert_odb_ok(odb);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_four_threads),      T(test_two_handles),
        T(test_txn_blocks_reader), T(test_lock_timeout_and_interrupt),
        T(test_stale_under_churn),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
