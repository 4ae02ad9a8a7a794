/*
 * tests/client/test_msgdefer.c - messages and locks through the client
 * layer (MIDAS failure modes 2, 3 and 4).
 *
 * Covers: au_msg while the thread holds the ODB lock is held back until
 * the outermost commit, then posted in order; many threads in several
 * processes posting (inside and outside transactions) while clients
 * connect and disconnect and watchdogs scan, with no deadlock (everything
 * under alarm), no lock-order abort, and every message arriving exactly
 * once; the watchdog and the last disconnect persisting messages to
 * <experiment>/messages.sqlite3, with numbering that continues after the
 * segments are re-created; and the recursive ODB lock shared by two
 * threads of one connection doing nested transactions (exact counters,
 * no reader ever sees half a transaction).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "client/client_int.h"
#include "tests/client/cfx.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct mb_msg *read_all(struct au_client *c, uint64_t after, size_t *n_out)
{
    size_t cap = 256, n = 0;
    struct mb_msg *all = malloc(cap * sizeof *all);
    assert_non_null(all);
    for (;;) {
        if (n + 64 > cap) {
            cap *= 2;
            struct mb_msg *bigger = realloc(all, cap * sizeof *all);
            assert_non_null(bigger);
            all = bigger;
        }
        size_t got = 0;
        uint64_t missed = 0;
        assert_int_equal(mb_msg_read(au_msgring(c), after, all + n, 64, &got, &missed), 0);
        assert_int_equal(missed, 0);
        if (got == 0)
            break;
        after = all[n + got - 1].seq;
        n += got;
    }
    *n_out = n;
    return all;
}

/* ---------------------------------------------------------------------- */
/* Deferral                                                               */
/* ---------------------------------------------------------------------- */

static void test_msg_deferred_until_commit(void **state)
{
    struct cfx *fx = *state;
    struct au_client *c = cfx_connect(fx->dir, "poster", 200, AU_CONNECT_NO_WATCHDOG_THREAD);
    struct odb *odb = au_odb(c);
    struct mb_msgring *ring = au_msgring(c);
    uint64_t seq0 = mb_msg_last_seq(ring);
    struct mb_msg_stats st0, st1;
    assert_int_equal(mb_msg_stats(ring, &st0), 0);

    int32_t v = 1;
    assert_int_equal(odb_txn_begin(odb), 0);
    assert_int_equal(
        odb_set(odb, ODB_ROOT, "/M/a", ODB_TYPE_INT32, &v, sizeof v, 1, ODB_SET_CREATE), 0);
    assert_int_equal(au_msg(c, MB_MSG_INFO, "deferred %d", 1), 0);
    assert_int_equal(mb_msg_last_seq(ring), seq0); /* not yet in the ring */
    assert_int_equal(odb_txn_begin(odb), 0);
    assert_int_equal(au_msg(c, MB_MSG_ERROR, "deferred %d", 2), 0);
    assert_int_equal(odb_txn_commit(odb), 0);
    assert_int_equal(mb_msg_last_seq(ring), seq0); /* inner commit: still held */
    assert_int_equal(au_msg(c, MB_MSG_TALK, "deferred %d", 3), 0);
    assert_int_equal(mb_msg_last_seq(ring), seq0);
    assert_int_equal(odb_txn_commit(odb), 0);
    /* Right after the outermost commit, in order. */
    assert_int_equal(mb_msg_last_seq(ring), seq0 + 3);
    size_t n = 0;
    struct mb_msg *m = read_all(c, seq0, &n);
    assert_int_equal(n, 3);
    assert_string_equal(m[0].text, "deferred 1");
    assert_string_equal(m[1].text, "deferred 2");
    assert_string_equal(m[2].text, "deferred 3");
    assert_int_equal(m[0].type, MB_MSG_INFO);
    assert_int_equal(m[1].type, MB_MSG_ERROR);
    assert_int_equal(m[2].type, MB_MSG_TALK);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(m[i].source, "poster");
        assert_int_equal(m[i].pid, (uint32_t)getpid());
    }
    free(m);
    assert_int_equal(mb_msg_stats(ring, &st1), 0);
    assert_int_equal(st1.n_deferred - st0.n_deferred, 3);
    assert_int_equal(st1.n_lost, 0);

    /* An aborted transaction still lets its messages out (they report
     * what happened, not what was committed). */
    assert_int_equal(odb_txn_begin(odb), 0);
    assert_int_equal(au_msg(c, MB_MSG_INFO, "about an abort"), 0);
    assert_int_equal(mb_msg_last_seq(ring), seq0 + 3);
    odb_txn_abort(odb);
    assert_int_equal(mb_msg_last_seq(ring), seq0 + 4);

    /* Outside any lock: at once. */
    assert_int_equal(au_msg(c, MB_MSG_USER, "plain"), 0);
    assert_int_equal(mb_msg_last_seq(ring), seq0 + 5);
    au_disconnect(c);
}

/* ---------------------------------------------------------------------- */
/* Churn: threads, processes, connects and disconnects                    */
/* ---------------------------------------------------------------------- */

#define CH_PROCS   3
#define CH_ITERS   12
#define CH_THREADS 2
#define CH_MSGS    16
#define P_THREADS  2
#define P_MSGS     100

struct poster_arg {
    struct au_client *c;
    char who; /* 'c' child, 'P' parent */
    int proc, iter, thread, n_msgs;
    int errors;
};

/* Posts n_msgs tagged messages, every other one inside a nested
 * transaction that also writes the ODB. */
static void *poster_main(void *p)
{
    struct poster_arg *a = p;
    struct odb *odb = au_odb(a->c);
    char key[64];
    (void)snprintf(key, sizeof key, "/Churn/%c%d_%d", a->who, a->proc, a->thread);
    for (int m = 0; m < a->n_msgs; m++) {
        int err = 0;
        if (m % 2) {
            int32_t v = m;
            err = odb_txn_begin(odb);
            if (!err) {
                (void)odb_txn_begin(odb);
                err = odb_set(odb, ODB_ROOT, key, ODB_TYPE_INT32, &v, sizeof v, 1, ODB_SET_CREATE);
                if (!err)
                    err = au_msg(a->c, MB_MSG_INFO, "tag %c %d %d %d %d", a->who, a->proc, a->iter,
                                 a->thread, m);
                if (odb_txn_commit(odb) != 0)
                    err = -1;
                if (odb_txn_commit(odb) != 0)
                    err = -1;
            }
        } else {
            err = au_msg(a->c, MB_MSG_INFO, "tag %c %d %d %d %d", a->who, a->proc, a->iter,
                         a->thread, m);
        }
        if (err)
            a->errors++;
    }
    return NULL;
}

struct churn_arg {
    const char *dir;
    int proc;
};

static int churn_child(int in_fd, int out_fd, void *arg)
{
    (void)in_fd;
    (void)out_fd;
    struct churn_arg *a = arg;
    int errors = 0;
    for (int iter = 0; iter < CH_ITERS; iter++) {
        struct au_connect_opts o = cfx_opts(a->dir, "churn", 50, 0);
        struct au_client *c = NULL;
        if (au_connect(&o, &c) != 0)
            return 1;
        pthread_t t[CH_THREADS];
        struct poster_arg pa[CH_THREADS];
        for (int i = 0; i < CH_THREADS; i++) {
            pa[i] = (struct poster_arg){c, 'c', a->proc, iter, i, CH_MSGS, 0};
            if (pthread_create(&t[i], NULL, poster_main, &pa[i]) != 0)
                return 2;
        }
        for (int i = 0; i < CH_THREADS; i++) {
            pthread_join(t[i], NULL);
            errors += pa[i].errors;
        }
        au_disconnect(c);
    }
    return errors ? 3 : 0;
}

static atomic_int n_warnings;

static void count_warnings(enum ut_log_level level, const char *msg, void *arg)
{
    (void)arg;
    atomic_fetch_add(&n_warnings, 1);
    (void)fprintf(stderr, "log (level %d): %s\n", (int)level, msg);
}

static void test_msg_churn(void **state)
{
    struct cfx *fx = *state;
    alarm(60); /* a deadlock fails the whole binary instead of hanging */
    /* The children create the experiment, racing each other. */
    struct churn_arg ca[CH_PROCS];
    struct cfx_child ch[CH_PROCS];
    for (int i = 0; i < CH_PROCS; i++) {
        ca[i] = (struct churn_arg){fx->dir, i};
        cfx_child_start(&ch[i], 45, churn_child, &ca[i]);
    }
    /* Nothing in this process may complain (say, the message log failing
     * while two connections of the process sync it at once). */
    atomic_store(&n_warnings, 0);
    ut_log_set_sink(count_warnings, NULL, UT_LOG_WARN);
    /* Threads only after the forks (ThreadSanitizer). */
    struct au_client *c = cfx_connect(fx->dir, "main", 50, 0);
    uint64_t seq0 = 0; /* a new ring: count everything */
    pthread_t pt[P_THREADS];
    struct poster_arg pa[P_THREADS];
    for (int i = 0; i < P_THREADS; i++) {
        pa[i] = (struct poster_arg){c, 'P', 0, 0, i, P_MSGS, 0};
        assert_int_equal(pthread_create(&pt[i], NULL, poster_main, &pa[i]), 0);
    }
    /* Meanwhile this thread connects and disconnects a second client. */
    for (int i = 0; i < 10; i++) {
        struct au_client *side = cfx_connect(fx->dir, "side", 50, 0);
        assert_int_equal(au_msg(side, MB_MSG_INFO, "tag S %d 0 0 0", i), 0);
        au_disconnect(side);
    }
    for (int i = 0; i < P_THREADS; i++) {
        assert_int_equal(pthread_join(pt[i], NULL), 0);
        assert_int_equal(pa[i].errors, 0);
    }
    for (int i = 0; i < CH_PROCS; i++) {
        int st = cfx_child_wait(&ch[i], 45000);
        if (!cfx_exited_ok(st))
            fail_msg("churn child %d: status %#x", i, (unsigned)st);
    }

    static int seen_c[CH_PROCS][CH_ITERS][CH_THREADS][CH_MSGS];
    static int seen_p[P_THREADS][P_MSGS];
    static int seen_s[10];
    memset(seen_c, 0, sizeof seen_c);
    memset(seen_p, 0, sizeof seen_p);
    memset(seen_s, 0, sizeof seen_s);
    size_t n = 0;
    struct mb_msg *m = read_all(c, seq0, &n);
    int other = 0;
    for (size_t i = 0; i < n; i++) {
        char who;
        int p, it, t, k;
        if (sscanf(m[i].text, "tag %c %d %d %d %d", &who, &p, &it, &t, &k) != 5) {
            other++;
            print_message("other message: %s\n", m[i].text);
            continue;
        }
        if (who == 'c') {
            assert_true(p >= 0 && p < CH_PROCS && it >= 0 && it < CH_ITERS && t >= 0 &&
                        t < CH_THREADS && k >= 0 && k < CH_MSGS);
            seen_c[p][it][t][k]++;
        } else if (who == 'P') {
            assert_true(t >= 0 && t < P_THREADS && k >= 0 && k < P_MSGS);
            seen_p[t][k]++;
        } else {
            assert_int_equal(who, 'S');
            assert_true(p >= 0 && p < 10);
            seen_s[p]++;
        }
    }
    free(m);
    for (int p = 0; p < CH_PROCS; p++)
        for (int it = 0; it < CH_ITERS; it++)
            for (int t = 0; t < CH_THREADS; t++)
                for (int k = 0; k < CH_MSGS; k++)
                    if (seen_c[p][it][t][k] != 1)
                        fail_msg("message c %d %d %d %d seen %d times", p, it, t, k,
                                 seen_c[p][it][t][k]);
    for (int t = 0; t < P_THREADS; t++)
        for (int k = 0; k < P_MSGS; k++)
            assert_int_equal(seen_p[t][k], 1);
    for (int i = 0; i < 10; i++)
        assert_int_equal(seen_s[i], 1);
    /* Clean disconnects only: nothing for the watchdog to report. */
    assert_int_equal(other, 0);
    struct mb_msg_stats st;
    assert_int_equal(mb_msg_stats(au_msgring(c), &st), 0);
    assert_int_equal(st.n_lost, 0);
    assert_true(st.n_deferred >= (uint64_t)(CH_PROCS * CH_ITERS * CH_THREADS * CH_MSGS / 2));

    struct au_client_info *infos = NULL;
    size_t ni = 0;
    assert_int_equal(au_client_list(c, &infos, &ni), 0);
    assert_int_equal(ni, 1);
    ut_free(infos);
    char report[512];
    assert_int_equal(odb_check(au_odb(c), report, sizeof report), 0);
    au_disconnect(c);
    ut_log_set_sink(NULL, NULL, UT_LOG_WARN);
    assert_int_equal(atomic_load(&n_warnings), 0);
    alarm(0);
}

/* ---------------------------------------------------------------------- */
/* The SQLite message log                                                 */
/* ---------------------------------------------------------------------- */

static struct mb_msglog *open_log(const struct cfx *fx)
{
    char path[400];
    (void)snprintf(path, sizeof path, "%s/messages.sqlite3", fx->dir);
    struct mb_msglog *log = NULL;
    assert_int_equal(mb_msglog_open(path, &log), 0);
    return log;
}

/* Finds text in the log; returns its seq or 0. */
static uint64_t log_find(struct mb_msglog *log, const char *text)
{
    struct mb_msg *msgs = NULL;
    size_t n = 0;
    assert_int_equal(mb_msglog_query(log, NULL, &msgs, &n), 0);
    uint64_t seq = 0;
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(msgs[i].text, text) == 0) {
            seq = msgs[i].seq;
            found++;
        }
    }
    mb_msglog_query_free(msgs);
    assert_true(found <= 1);
    return seq;
}

static void test_msglog_by_watchdog(void **state)
{
    struct cfx *fx = *state;
    struct au_client *c = cfx_connect(fx->dir, "logger", 100, 0);
    assert_int_equal(au_msg(c, MB_MSG_INFO, "persisted by the watchdog"), 0);
    uint64_t seq = mb_msg_last_seq(au_msgring(c));
    struct mb_msglog *log = open_log(fx);
    int64_t deadline = cfx_now_ms() + 5000;
    uint64_t got = 0;
    while ((got = log_find(log, "persisted by the watchdog")) == 0 && cfx_now_ms() < deadline)
        cfx_sleep_ms(10);
    assert_int_equal(got, seq);
    struct mb_msglog_filter f = {0};
    f.source = "logger";
    struct mb_msg *msgs = NULL;
    size_t n = 0;
    assert_int_equal(mb_msglog_query(log, &f, &msgs, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(msgs[0].type, MB_MSG_INFO);
    assert_int_equal(msgs[0].pid, (uint32_t)getpid());
    mb_msglog_query_free(msgs);
    mb_msglog_close(log);
    au_disconnect(c);
}

/* The last disconnect persists what the watchdog has not; after the
 * segments are removed, numbering continues from the log. */
static void test_msglog_at_disconnect(void **state)
{
    struct cfx *fx = *state;
    struct au_client *c = cfx_connect(fx->dir, "short", 100, AU_CONNECT_NO_WATCHDOG_THREAD);
    assert_int_equal(au_msg(c, MB_MSG_INFO, "first session"), 0);
    uint64_t s1 = mb_msg_last_seq(au_msgring(c));
    /* Deferred at disconnect time: flushed, then persisted. */
    assert_int_equal(odb_txn_begin(au_odb(c)), 0);
    assert_int_equal(au_msg(c, MB_MSG_INFO, "deferred at the end"), 0);
    assert_int_equal(odb_txn_commit(au_odb(c)), 0);
    au_disconnect(c);
    struct mb_msglog *log = open_log(fx);
    assert_int_equal(log_find(log, "first session"), s1);
    assert_int_equal(log_find(log, "deferred at the end"), s1 + 1);

    assert_int_equal(au_experiment_remove_segments(fx->dir), 0);
    c = cfx_connect(fx->dir, "short", 100, AU_CONNECT_NO_WATCHDOG_THREAD);
    assert_int_equal(au_msg(c, MB_MSG_INFO, "second session"), 0);
    uint64_t s2 = mb_msg_last_seq(au_msgring(c));
    assert_true(s2 > s1 + 1);
    au_disconnect(c);
    assert_int_equal(log_find(log, "second session"), s2);
    assert_int_equal(log_find(log, "first session"), s1);
    uint64_t last = 0;
    assert_int_equal(mb_msglog_last_seq(log, &last), 0);
    assert_int_equal(last, s2);
    mb_msglog_close(log);
}

/* ---------------------------------------------------------------------- */
/* Failure mode 4: nested ODB lock shared by threads                      */
/* ---------------------------------------------------------------------- */

#define NEST_ITERS     3000
#define NEST_MSG_EVERY 100

struct nest_arg {
    struct au_client *c;
    int id;
    atomic_int *reader_ready; /* writers start after the first read */
    atomic_int *done;
    int errors;
    long reads, violations;
};

/* begin; a++; begin; b++; commit; commit - with a message now and then. */
static void *nest_writer(void *p)
{
    struct nest_arg *a = p;
    struct odb *odb = au_odb(a->c);
    while (!atomic_load(a->reader_ready))
        sched_yield();
    for (int i = 0; i < NEST_ITERS; i++) {
        if (i % 32 == 0)
            sched_yield(); /* let the reader in between transactions */
        int64_t x = 0, y = 0;
        size_t sz = sizeof x;
        int err = odb_txn_begin(odb);
        if (err) {
            a->errors++;
            continue;
        }
        err = odb_get(odb, ODB_ROOT, "/Nest/a", ODB_TYPE_INT64, &x, &sz);
        x++;
        if (!err)
            err = odb_set(odb, ODB_ROOT, "/Nest/a", ODB_TYPE_INT64, &x, sizeof x, 1, 0);
        if (!err)
            err = odb_txn_begin(odb);
        if (!err) {
            sz = sizeof y;
            err = odb_get(odb, ODB_ROOT, "/Nest/b", ODB_TYPE_INT64, &y, &sz);
            y++;
            if (!err)
                err = odb_set(odb, ODB_ROOT, "/Nest/b", ODB_TYPE_INT64, &y, sizeof y, 1, 0);
            if (!err && i % NEST_MSG_EVERY == 0)
                err = au_msg(a->c, MB_MSG_INFO, "nest %d %d", a->id, i);
            if (odb_txn_commit(odb) != 0)
                err = -1;
        }
        if (odb_txn_commit(odb) != 0)
            err = -1;
        if (err)
            a->errors++;
    }
    atomic_fetch_add(a->done, 1);
    return NULL;
}

static void *nest_reader(void *p)
{
    struct nest_arg *a = p;
    struct odb *odb = au_odb(a->c);
    do {
        int64_t x = -1, y = -2;
        size_t sx = sizeof x, sy = sizeof y;
        if (odb_txn_begin(odb) != 0) {
            a->errors++;
            continue;
        }
        int e1 = odb_get(odb, ODB_ROOT, "/Nest/a", ODB_TYPE_INT64, &x, &sx);
        int e2 = odb_get(odb, ODB_ROOT, "/Nest/b", ODB_TYPE_INT64, &y, &sy);
        if (odb_txn_commit(odb) != 0 || e1 || e2)
            a->errors++;
        else if (x != y)
            a->violations++;
        a->reads++;
        atomic_store(a->reader_ready, 1);
    } while (atomic_load(a->done) < 2);
    return NULL;
}

static void test_nested_lock_threads(void **state)
{
    struct cfx *fx = *state;
    alarm(60);
    struct au_client *c = cfx_connect(fx->dir, "nest", 100, 0);
    struct odb *odb = au_odb(c);
    uint64_t seq0 = mb_msg_last_seq(au_msgring(c));
    assert_int_equal(odb_create(odb, ODB_ROOT, "/Nest/a", ODB_TYPE_INT64, 1, 0, NULL), 0);
    assert_int_equal(odb_create(odb, ODB_ROOT, "/Nest/b", ODB_TYPE_INT64, 1, 0, NULL), 0);
    atomic_int done = 0;
    atomic_int reader_ready = 0;
    struct nest_arg args[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (struct nest_arg){c, i, &reader_ready, &done, 0, 0, 0};
        assert_int_equal(pthread_create(&t[i], NULL, i < 2 ? nest_writer : nest_reader, &args[i]),
                         0);
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(args[i].errors, 0);
    assert_int_equal(args[2].violations, 0);
    assert_true(args[2].reads > 0);
    print_message("reader checked %ld snapshots\n", args[2].reads);
    int64_t x = 0, y = 0;
    size_t sz = sizeof x;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/Nest/a", ODB_TYPE_INT64, &x, &sz), 0);
    sz = sizeof y;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/Nest/b", ODB_TYPE_INT64, &y, &sz), 0);
    assert_int_equal(x, 2 * NEST_ITERS);
    assert_int_equal(y, 2 * NEST_ITERS);
    /* Each thread's deferred messages came out exactly once. */
    assert_int_equal(cfx_count_msgs(c, seq0, "nest 0 ", NULL, NULL), NEST_ITERS / NEST_MSG_EVERY);
    assert_int_equal(cfx_count_msgs(c, seq0, "nest 1 ", NULL, NULL), NEST_ITERS / NEST_MSG_EVERY);
    char report[512];
    assert_int_equal(odb_check(odb, report, sizeof report), 0);
    au_disconnect(c);
    alarm(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_msg_deferred_until_commit, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_msg_churn, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_msglog_by_watchdog, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_msglog_at_disconnect, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_nested_lock_threads, cfx_setup, cfx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
