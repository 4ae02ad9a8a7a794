/*
 * tests/client/test_watchdog.c - the watchdog and liveness.
 *
 * Covers MIDAS failure mode 5 (dead clients found by their released
 * liveness token within about one period, never by PID: a fake entry
 * whose PID is alive is still removed; a forked child does not keep a
 * dead parent alive), mode 8 (a live client blocked in a long call stays;
 * an unresponsive one is reported once, "responsive again" afterwards, and
 * removed only by option, and then it is told), mode 9 (SIGTERM and SIGINT
 * end blocking waits with UT_EINTR and the client disconnects cleanly,
 * also when the disconnect meets a contended ODB lock) and mode 10 lite
 * (80 clients registered at once, all killed and all removed, with exactly
 * one message each).
 *
 * Each test has its own experiment directory. Children that connect are
 * forked before the parent connects (see cfx.h). Waiting for the watchdog
 * is bounded polling with a deadline; ordering between processes goes
 * through pipes, waitpid and the message ring.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "client/client_int.h"
#include "tests/client/cfx.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PERIOD_MS 200

/* ---------------------------------------------------------------------- */
/* Children                                                               */
/* ---------------------------------------------------------------------- */

struct child_arg {
    const char *dir;
    const char *name;
    int period_ms;
    unsigned flags;
};

/* Connects, reports its slot, then waits for anything on in_fd (or EOF)
 * and disconnects. */
static int idle_child(int in_fd, int out_fd, void *arg)
{
    struct child_arg *a = arg;
    struct au_connect_opts o = cfx_opts(a->dir, a->name, a->period_ms, a->flags);
    struct au_client *c = NULL;
    int err = au_connect(&o, &c);
    uint32_t slot = err ? UINT32_MAX : au_client_slot(c);
    if (!cfx_write(out_fd, &slot, sizeof slot) || err)
        return 1;
    char cmd;
    if (!cfx_read(in_fd, &cmd, 1, 60000))
        cmd = 'q';
    au_disconnect(c);
    return 0;
}

static uint32_t read_slot(struct cfx_child *ch)
{
    uint32_t slot = UINT32_MAX;
    assert_true(cfx_read(ch->from_child, &slot, sizeof slot, 20000));
    assert_true(slot != UINT32_MAX);
    return slot;
}

/* ---------------------------------------------------------------------- */
/* Failure mode 5: dead clients                                           */
/* ---------------------------------------------------------------------- */

/* A SIGKILLed client is removed within about one period, by exactly one
 * of two scanning clients, with exactly one message naming it. */
static void test_dead_client_removed(void **state)
{
    struct cfx *fx = *state;
    struct child_arg arg = {fx->dir, "victim", PERIOD_MS, 0};
    struct cfx_child ch;
    cfx_child_start(&ch, 30, idle_child, &arg);
    uint32_t slot = read_slot(&ch);

    struct au_client *a = cfx_connect(fx->dir, "scan-a", PERIOD_MS, 0);
    struct au_client *b = cfx_connect(fx->dir, "scan-b", PERIOD_MS, 0);
    uint64_t seq0 = mb_msg_last_seq(au_msgring(a));
    assert_true(cfx_entry_exists(a, slot));

    int64_t t0 = cfx_now_ms();
    cfx_child_kill(&ch);
    int ms = cfx_wait_entry_gone(a, slot, 10 * PERIOD_MS);
    int64_t total = cfx_now_ms() - t0;
    assert_true(ms >= 0);
    print_message("dead client removed %lld ms after SIGKILL (period %d ms)\n", (long long)total,
                  PERIOD_MS);
    assert_true(total < (int64_t)3 * PERIOD_MS);

    /* Give both watchdogs several more scans to post a duplicate. */
    assert_int_equal(cfx_wait_msgs(a, seq0, 1, 5000, "'victim'", "died", NULL), 1);
    assert_true(cfx_wait_scans(a, 4, 5000));
    assert_int_equal(cfx_count_msgs(a, seq0, "'victim'", "died", NULL), 1);
    assert_int_equal(cfx_count_msgs(a, seq0, "removed", NULL, NULL), 1);
    assert_true(cfx_entry_exists(a, au_client_slot(a)));
    assert_true(cfx_entry_exists(a, au_client_slot(b)));
    au_disconnect(b);
    au_disconnect(a);
}

/* Blocks until killed; used as a live process that is not a client. */
static int sleeper_child(int in_fd, int out_fd, void *arg)
{
    (void)arg;
    char byte = 'r';
    if (!cfx_write(out_fd, &byte, 1))
        return 1;
    (void)cfx_read(in_fd, &byte, 1, 60000);
    return 0;
}

static void make_fake_entry(struct au_client *c, uint32_t slot, const char *name, int32_t pid)
{
    char path[64];
    (void)snprintf(path, sizeof path, "/System/Clients/%u", slot);
    struct odb *odb = au_odb(c);
    struct odb_hkey e;
    assert_int_equal(odb_txn_begin(odb), 0);
    assert_int_equal(odb_create(odb, ODB_ROOT, path, ODB_TYPE_DIR, 0, 0, &e), 0);
    char nm[32] = {0};
    ut_strlcpy(nm, name, sizeof nm);
    assert_int_equal(odb_set(odb, e, "Name", ODB_TYPE_STRING, nm, 32, 1, ODB_SET_CREATE), 0);
    assert_int_equal(odb_set(odb, e, "PID", ODB_TYPE_INT32, &pid, sizeof pid, 1, ODB_SET_CREATE),
                     0);
    assert_int_equal(
        odb_set(odb, e, "Slot", ODB_TYPE_UINT32, &slot, sizeof slot, 1, ODB_SET_CREATE), 0);
    int64_t now = ut_wall_ns();
    assert_int_equal(
        odb_set(odb, e, "Last activity", ODB_TYPE_INT64, &now, sizeof now, 1, ODB_SET_CREATE), 0);
    assert_int_equal(odb_txn_commit(odb), 0);
}

/* au_watchdog_run called by the program itself: it returns the number of
 * clients removed, scans at most once per period across the experiment,
 * and persists the messages. */
static void test_watchdog_run_manual(void **state)
{
    struct cfx *fx = *state;
    struct au_client *c = cfx_connect(fx->dir, "manual", 300, AU_CONNECT_NO_WATCHDOG_THREAD);
    uint32_t me = au_client_slot(c);
    uint32_t s1 = (me + 3) % AU_DEFAULT_MAX_CLIENTS, s2 = (me + 5) % AU_DEFAULT_MAX_CLIENTS;
    make_fake_entry(c, s1, "ghost1", 1);
    make_fake_entry(c, s2, "ghost2", 1);
    assert_int_equal(au_watchdog_run(c), 2);
    assert_false(cfx_entry_exists(c, s1));
    assert_false(cfx_entry_exists(c, s2));
    assert_true(cfx_entry_exists(c, me));
    /* Within the same period nobody scans again. */
    make_fake_entry(c, s1, "ghost3", 1);
    assert_int_equal(au_watchdog_run(c), 0);
    assert_true(cfx_entry_exists(c, s1));
    int64_t deadline = cfx_now_ms() + 5000;
    int r = 0;
    while ((r = au_watchdog_run(c)) == 0 && cfx_now_ms() < deadline)
        cfx_sleep_ms(20);
    assert_int_equal(r, 1);
    assert_false(cfx_entry_exists(c, s1));
    assert_int_equal(cfx_count_msgs(c, 0, "'ghost", "died", NULL), 3);

    /* The scan persisted the messages. */
    char path[400];
    (void)snprintf(path, sizeof path, "%s/messages.sqlite3", fx->dir);
    struct mb_msglog *log = NULL;
    assert_int_equal(mb_msglog_open(path, &log), 0);
    struct mb_msg *msgs = NULL;
    size_t n = 0;
    struct mb_msglog_filter f = {0};
    f.source = "manual";
    assert_int_equal(mb_msglog_query(log, &f, &msgs, &n), 0);
    assert_int_equal(n, 3);
    mb_msglog_query_free(msgs);
    mb_msglog_close(log);
    au_disconnect(c);
}

/* Entries whose PID is a live process (this one, or a sleeping child) but
 * whose slot token nobody holds are removed: the PID is never trusted. */
static void test_live_pid_not_trusted(void **state)
{
    struct cfx *fx = *state;
    struct cfx_child sl;
    cfx_child_start(&sl, 30, sleeper_child, NULL);
    char byte;
    assert_true(cfx_read(sl.from_child, &byte, 1, 10000));

    struct au_client *c = cfx_connect(fx->dir, "scanner", PERIOD_MS, 0);
    uint64_t seq0 = mb_msg_last_seq(au_msgring(c));
    uint32_t me = au_client_slot(c);
    uint32_t s1 = (me + 7) % AU_DEFAULT_MAX_CLIENTS, s2 = (me + 9) % AU_DEFAULT_MAX_CLIENTS;
    assert_false(au__slot_alive(c, s1));
    assert_false(au__slot_alive(c, s2));
    make_fake_entry(c, s1, "fake-self", (int32_t)getpid());
    make_fake_entry(c, s2, "fake-child", (int32_t)sl.pid);
    assert_int_equal(kill(getpid(), 0), 0);
    assert_int_equal(kill(sl.pid, 0), 0);

    assert_true(cfx_wait_entry_gone(c, s1, 3 * PERIOD_MS + 100) >= 0);
    assert_true(cfx_wait_entry_gone(c, s2, 3 * PERIOD_MS + 100) >= 0);
    assert_int_equal(cfx_wait_msgs(c, seq0, 1, 5000, "'fake-self'", "died", NULL), 1);
    assert_int_equal(cfx_wait_msgs(c, seq0, 1, 5000, "'fake-child'", "died", NULL), 1);
    assert_true(cfx_entry_exists(c, me));
    assert_false(au_client_removed(c));
    au_disconnect(c);
    cfx_child_kill(&sl);
}

/* Process A connects and forks B; B inherits A's lock file descriptor
 * copy, which the atfork handler closes. B's au_disconnect of the copy
 * returns at once and touches nothing shared. A is then killed while B
 * lives: another client's watchdog still removes A. */
struct fork_arg {
    const char *dir;
    int b_done_w; /* B writes 'd' here after its au_disconnect */
    int b_quit_r; /* B exits when this becomes readable */
    int b_quit_w; /* closed in A and B */
    int b_done_r; /* closed in A and B */
};

static int forking_child(int in_fd, int out_fd, void *arg)
{
    struct fork_arg *a = arg;
    close(a->b_quit_w);
    close(a->b_done_r);
    struct au_connect_opts o = cfx_opts(a->dir, "parent-a", PERIOD_MS, 0);
    struct au_client *c = NULL;
    if (au_connect(&o, &c) != 0)
        return 1;
    /* Use the message log once, so the copy holds an SQLite handle too. */
    if (au_msg(c, MB_MSG_INFO, "A before fork") != 0)
        return 2;
    au__persist_messages(c);
    pid_t b = fork();
    if (b < 0)
        return 3;
    if (b == 0) {
        alarm(30);
        /* The copy must not take the parent's watch changes. */
        if (au_dispatch(c, 0) != UT_EINVAL)
            _exit(1);
        au_disconnect(c); /* a forked copy: local cleanup only */
        char byte = 'd';
        if (!cfx_write(a->b_done_w, &byte, 1))
            _exit(1);
        (void)cfx_read(a->b_quit_r, &byte, 1, 30000);
        _exit(0);
    }
    close(a->b_done_w);
    close(a->b_quit_r);
    struct {
        uint32_t slot;
        int32_t b_pid;
    } rep = {au_client_slot(c), (int32_t)b};
    if (!cfx_write(out_fd, &rep, sizeof rep))
        return 4;
    char cmd;
    (void)cfx_read(in_fd, &cmd, 1, 60000);
    au_disconnect(c);
    return 0;
}

static void test_fork_child_does_not_keep_parent(void **state)
{
    struct cfx *fx = *state;
    int quit[2], done[2];
    assert_int_equal(pipe(quit), 0);
    assert_int_equal(pipe(done), 0);
    struct fork_arg arg = {fx->dir, done[1], quit[0], quit[1], done[0]};
    struct cfx_child a;
    cfx_child_start(&a, 30, forking_child, &arg);
    close(quit[0]);
    close(done[1]);
    struct {
        uint32_t slot;
        int32_t b_pid;
    } rep;
    assert_true(cfx_read(a.from_child, &rep, sizeof rep, 20000));
    char byte;
    assert_true(cfx_read(done[0], &byte, 1, 10000)); /* B's au_disconnect returned */
    assert_int_equal(byte, 'd');

    struct au_client *c = cfx_connect(fx->dir, "observer", PERIOD_MS, 0);
    uint64_t seq0 = mb_msg_last_seq(au_msgring(c));
    /* B's disconnect of its copy did not remove A. */
    assert_true(cfx_entry_exists(c, rep.slot));
    assert_true(au__slot_alive(c, rep.slot));
    assert_true(cfx_wait_scans(c, 3, 5000));
    assert_true(cfx_entry_exists(c, rep.slot));

    cfx_child_kill(&a);
    assert_int_equal(kill((pid_t)rep.b_pid, 0), 0); /* B is alive */
    int ms = cfx_wait_entry_gone(c, rep.slot, 10 * PERIOD_MS);
    assert_true(ms >= 0);
    assert_true(ms < 3 * PERIOD_MS);
    assert_int_equal(kill((pid_t)rep.b_pid, 0), 0); /* and still alive */
    assert_int_equal(cfx_wait_msgs(c, seq0, 1, 5000, "'parent-a'", "died", NULL), 1);

    assert_true(cfx_write(quit[1], "q", 1));
    close(quit[1]);
    close(done[0]);
    au_disconnect(c);
}

/* ---------------------------------------------------------------------- */
/* Failure mode 8: alive but blocked or unresponsive                      */
/* ---------------------------------------------------------------------- */

static int n_wake_calls;
static void wake_cb(struct au_client *c, struct odb_hkey k, void *arg)
{
    (void)c;
    (void)k;
    (void)arg;
    n_wake_calls++;
}

/* Without any heartbeat (no watchdog thread), blocked in au_dispatch for
 * up to 30 s; reports the dispatch result. */
static int blocked_child(int in_fd, int out_fd, void *arg)
{
    (void)in_fd;
    struct child_arg *a = arg;
    struct au_connect_opts o = cfx_opts(a->dir, "blocked", PERIOD_MS, a->flags);
    struct au_client *c = NULL;
    if (au_connect(&o, &c) != 0)
        return 1;
    int err = odb_create(au_odb(c), ODB_ROOT, "/Wake", ODB_TYPE_INT32, 1, 0, NULL);
    if (err && err != ODB_EEXIST)
        return 2;
    uint32_t id;
    if (au_watch_add(c, "/Wake", NULL, NULL, &id) != UT_EINVAL)
        return 3;
    if (au_watch_add(c, "/Wake", wake_cb, NULL, &id) != 0)
        return 3;
    uint32_t slot = au_client_slot(c);
    if (!cfx_write(out_fd, &slot, sizeof slot))
        return 4;
    int r = au_dispatch(c, 30000);
    int32_t rep = r;
    if (!cfx_write(out_fd, &rep, sizeof rep))
        return 5;
    au_disconnect(c);
    return r == 1 && n_wake_calls == 1 ? 0 : 6;
}

/* A live client blocked for many periods in a call, with no heartbeat at
 * all, is never removed while its token is held, even by a scanner with
 * remove_unresponsive (its timeout not reached). */
static void test_blocked_client_stays(void **state)
{
    struct cfx *fx = *state;
    struct child_arg arg = {fx->dir, "blocked", PERIOD_MS, AU_CONNECT_NO_WATCHDOG_THREAD};
    struct cfx_child ch;
    cfx_child_start(&ch, 30, blocked_child, &arg);
    uint32_t slot = read_slot(&ch);
    struct au_connect_opts o = cfx_opts(fx->dir, "scanner", 100, 0);
    o.unresponsive_ms = 60000;
    o.remove_unresponsive = true;
    struct au_client *c = NULL;
    assert_int_equal(au_connect(&o, &c), 0);
    uint64_t seq0 = mb_msg_last_seq(au_msgring(c));

    /* Ten scans (about a second) while the child sits in au_dispatch. */
    assert_true(cfx_wait_scans(c, 10, 10000));
    assert_true(cfx_entry_exists(c, slot));
    int32_t rep;
    assert_false(cfx_read(ch.from_child, &rep, sizeof rep, 0)); /* still blocked */
    assert_int_equal(cfx_count_msgs(c, seq0, "'blocked'", NULL, NULL), 0);

    /* A change wakes it: one callback, a clean disconnect. */
    int32_t one = 1;
    assert_int_equal(odb_set(au_odb(c), ODB_ROOT, "/Wake", ODB_TYPE_INT32, &one, sizeof one, 1, 0),
                     0);
    assert_true(cfx_read(ch.from_child, &rep, sizeof rep, 10000));
    assert_int_equal(rep, 1);
    assert_true(cfx_exited_ok(cfx_child_wait(&ch, 10000)));
    assert_false(cfx_entry_exists(c, slot));
    assert_int_equal(cfx_count_msgs(c, seq0, "'blocked'", NULL, NULL), 0);
    au_disconnect(c);
}

/* A client that heartbeats from its own loop (no watchdog thread) and on
 * command stops itself with SIGSTOP at a point where it holds no lock.
 * Commands: 's' stop, 'q' disconnect and exit. Writes 'R' when it finds
 * itself removed. */
static int heartbeat_child(int in_fd, int out_fd, void *arg)
{
    struct child_arg *a = arg;
    struct au_connect_opts o = cfx_opts(a->dir, a->name, 100, AU_CONNECT_NO_WATCHDOG_THREAD);
    struct au_client *c = NULL;
    if (au_connect(&o, &c) != 0)
        return 1;
    uint32_t slot = au_client_slot(c);
    if (!cfx_write(out_fd, &slot, sizeof slot))
        return 2;
    bool told = false;
    for (int i = 0; i < 2000; i++) {
        if (au_watchdog_run(c) < 0)
            return 3;
        if (au_client_removed(c) && !told) {
            told = true;
            if (!cfx_write(out_fd, "R", 1))
                return 4;
        }
        char cmd;
        if (cfx_read(in_fd, &cmd, 1, 50)) {
            if (cmd == 's')
                (void)raise(SIGSTOP);
            else if (cmd == 'q')
                break;
        }
    }
    au_disconnect(c);
    return 0;
}

/* The "Last activity" of client slot `slot` (fails the test if missing). */
static int64_t last_activity(struct au_client *c, uint32_t slot)
{
    char path[80];
    (void)snprintf(path, sizeof path, "/System/Clients/%u/Last activity", slot);
    int64_t v = 0;
    size_t sz = sizeof v;
    assert_int_equal(odb_get(au_odb(c), ODB_ROOT, path, ODB_TYPE_INT64, &v, &sz), 0);
    return v;
}

/* Posting time of the first message after `after` containing n1 and n2. */
static int64_t msg_time(struct au_client *c, uint64_t after, const char *n1, const char *n2)
{
    struct mb_msg *m = calloc(1, sizeof *m);
    assert_non_null(m);
    for (;;) {
        size_t n = 0;
        assert_int_equal(mb_msg_read(au_msgring(c), after, m, 1, &n, NULL), 0);
        assert_int_equal(n, 1); /* the message must be there */
        after = m->seq;
        if (strstr(m->text, n1) && strstr(m->text, n2)) {
            int64_t t = m->time_ns;
            free(m);
            return t;
        }
    }
}

static void stop_child(struct cfx_child *ch)
{
    assert_true(cfx_write(ch->to_child, "s", 1));
    int st;
    assert_int_equal(waitpid(ch->pid, &st, WUNTRACED), ch->pid);
    assert_true(WIFSTOPPED(st));
}

static void test_unresponsive_reported(void **state)
{
    struct cfx *fx = *state;
    struct child_arg arg = {fx->dir, "sleepy", 100, 0};
    struct cfx_child ch;
    cfx_child_start(&ch, 30, heartbeat_child, &arg);
    uint32_t slot = read_slot(&ch);
    struct au_connect_opts o = cfx_opts(fx->dir, "scanner", 100, 0);
    o.unresponsive_ms = 500;
    struct au_client *c = NULL;
    assert_int_equal(au_connect(&o, &c), 0);
    uint64_t seq0 = mb_msg_last_seq(au_msgring(c));
    assert_true(cfx_wait_scans(c, 3, 5000));
    assert_int_equal(cfx_count_msgs(c, seq0, "'sleepy'", NULL, NULL), 0);

    stop_child(&ch);
    int64_t last = last_activity(c, slot);
    assert_int_equal(cfx_wait_msgs(c, seq0, 1, 5000, "'sleepy'", "unresponsive", NULL), 1);
    /* Not before unresponsive_ms of silence. */
    assert_true(msg_time(c, seq0, "'sleepy'", "unresponsive") - last >= 500 * 1000000LL);
    /* Reported once, however many scans follow; the entry stays. */
    assert_true(cfx_wait_scans(c, 5, 5000));
    assert_int_equal(cfx_count_msgs(c, seq0, "'sleepy'", "unresponsive", NULL), 1);
    assert_int_equal(cfx_count_msgs(c, seq0, "'sleepy'", "removed", NULL), 0);
    assert_true(cfx_entry_exists(c, slot));

    assert_int_equal(kill(ch.pid, SIGCONT), 0);
    assert_int_equal(cfx_wait_msgs(c, seq0, 1, 5000, "'sleepy'", "responsive again", NULL), 1);
    assert_true(cfx_entry_exists(c, slot));

    /* A second stop is reported again. */
    stop_child(&ch);
    assert_int_equal(cfx_wait_msgs(c, seq0, 2, 5000, "'sleepy'", "alive but unresponsive", NULL),
                     2);
    assert_int_equal(kill(ch.pid, SIGCONT), 0);
    assert_int_equal(cfx_wait_msgs(c, seq0, 2, 5000, "'sleepy'", "responsive again", NULL), 2);

    char r;
    assert_false(cfx_read(ch.from_child, &r, 1, 0)); /* never told it was removed */
    assert_true(cfx_write(ch.to_child, "q", 1));
    assert_true(cfx_exited_ok(cfx_child_wait(&ch, 10000)));
    assert_false(cfx_entry_exists(c, slot));
    au_disconnect(c);
}

/* With remove_unresponsive the stopped client is removed; once continued
 * it sees au_client_removed(). */
static void test_unresponsive_removed_by_option(void **state)
{
    struct cfx *fx = *state;
    struct child_arg arg = {fx->dir, "sleepy", 100, 0};
    struct cfx_child ch;
    cfx_child_start(&ch, 30, heartbeat_child, &arg);
    uint32_t slot = read_slot(&ch);
    struct au_connect_opts o = cfx_opts(fx->dir, "strict", 100, 0);
    o.unresponsive_ms = 500;
    o.remove_unresponsive = true;
    struct au_client *c = NULL;
    assert_int_equal(au_connect(&o, &c), 0);
    uint64_t seq0 = mb_msg_last_seq(au_msgring(c));
    assert_true(cfx_wait_scans(c, 3, 5000));
    assert_true(cfx_entry_exists(c, slot));

    stop_child(&ch);
    int64_t last = last_activity(c, slot);
    assert_true(cfx_wait_entry_gone(c, slot, 5000) >= 0);
    assert_int_equal(cfx_wait_msgs(c, seq0, 1, 5000, "'sleepy'", "removed", "unresponsive"), 1);
    assert_true(msg_time(c, seq0, "'sleepy'", "removed") - last >= 500 * 1000000LL);
    /* Its token is still held: it is alive, just removed. */
    assert_true(au__slot_alive(c, slot));

    assert_int_equal(kill(ch.pid, SIGCONT), 0);
    char r = 0;
    assert_true(cfx_read(ch.from_child, &r, 1, 5000));
    assert_int_equal(r, 'R');
    /* No second removal or report once it heartbeats again. */
    assert_true(cfx_wait_scans(c, 3, 5000));
    assert_int_equal(cfx_count_msgs(c, seq0, "'sleepy'", NULL, NULL), 1);
    assert_true(cfx_write(ch.to_child, "q", 1));
    assert_true(cfx_exited_ok(cfx_child_wait(&ch, 10000)));
    assert_false(cfx_entry_exists(c, slot));
    assert_true(cfx_entry_exists(c, au_client_slot(c)));
    au_disconnect(c);
}

/* ---------------------------------------------------------------------- */
/* Failure mode 9: signals end blocking waits                             */
/* ---------------------------------------------------------------------- */

enum wait_kind { WAIT_DISPATCH, WAIT_MSG };

struct sig_arg {
    const char *dir;
    enum wait_kind kind;
};

/* Installs the handlers, connects (with a watchdog thread), blocks with no
 * time limit, then writes 'D' and disconnects. Exit 0 only when the wait
 * returned UT_EINTR and au_should_stop() is set. */
static int signalled_child(int in_fd, int out_fd, void *arg)
{
    (void)in_fd;
    struct sig_arg *a = arg;
    au_install_signal_handlers();
    struct au_connect_opts o = cfx_opts(a->dir, "waiter", 100, 0);
    struct au_client *c = NULL;
    if (au_connect(&o, &c) != 0)
        return 1;
    int err = odb_create(au_odb(c), ODB_ROOT, "/Never", ODB_TYPE_INT32, 1, 0, NULL);
    if (err && err != ODB_EEXIST)
        return 2;
    uint32_t id;
    if (au_watch_add(c, "/Never", wake_cb, NULL, &id) != 0)
        return 3;
    uint32_t slot = au_client_slot(c);
    if (!cfx_write(out_fd, &slot, sizeof slot))
        return 4;
    int r;
    if (a->kind == WAIT_DISPATCH)
        r = au_dispatch(c, -1);
    else
        r = mb_msg_wait(au_msgring(c), mb_msg_last_seq(au_msgring(c)), -1);
    if (!cfx_write(out_fd, "D", 1))
        return 5;
    au_disconnect(c);
    return r == UT_EINTR && au_should_stop() ? 0 : 6;
}

static void run_signal_test(struct cfx *fx, enum wait_kind kind, int sig, bool contend)
{
    struct sig_arg arg = {fx->dir, kind};
    struct cfx_child ch;
    cfx_child_start(&ch, 30, signalled_child, &arg);
    uint32_t slot = read_slot(&ch);
    /* No watchdog here: only the child's own disconnect may remove it. */
    struct au_client *c =
        cfx_connect(fx->dir, "observer", PERIOD_MS, AU_CONNECT_NO_WATCHDOG_THREAD);
    uint64_t seq0 = mb_msg_last_seq(au_msgring(c));
    assert_true(cfx_entry_exists(c, slot));

    if (contend)
        assert_int_equal(odb_txn_begin(au_odb(c)), 0);
    assert_int_equal(kill(ch.pid, sig), 0);
    char d = 0;
    assert_true(cfx_read(ch.from_child, &d, 1, 5000));
    assert_int_equal(d, 'D');
    if (contend) {
        /* Hold the ODB lock while the interrupted child disconnects, so
         * its cleanup meets a contended lock with the interrupt flag set.
         * The sleep only makes the contention likely; correctness does not
         * depend on it. */
        cfx_sleep_ms(150);
        assert_int_equal(odb_txn_commit(au_odb(c)), 0);
    }
    int st = cfx_child_wait(&ch, 10000);
    assert_true(cfx_exited_ok(st));
    /* Gone at once: the child removed itself, no watchdog ran. */
    assert_false(cfx_entry_exists(c, slot));
    assert_int_equal(cfx_count_msgs(c, seq0, "removed", NULL, NULL), 0);
    au_disconnect(c);
}

static void test_sigterm_ends_dispatch(void **state)
{
    run_signal_test(*state, WAIT_DISPATCH, SIGTERM, false);
}

static void test_sigint_ends_msg_wait(void **state)
{
    run_signal_test(*state, WAIT_MSG, SIGINT, false);
}

static void test_sigterm_disconnect_contended(void **state)
{
    run_signal_test(*state, WAIT_DISPATCH, SIGTERM, true);
}

/* ---------------------------------------------------------------------- */
/* Failure mode 10 lite: many clients                                     */
/* ---------------------------------------------------------------------- */

#define N_MANY 80

struct many_rep {
    uint32_t slot;
    char name[32];
};

static int many_child(int in_fd, int out_fd, void *arg)
{
    struct child_arg *a = arg;
    struct au_connect_opts o = cfx_opts(a->dir, "many", a->period_ms, 0);
    struct au_client *c = NULL;
    int err = au_connect(&o, &c);
    struct many_rep rep;
    memset(&rep, 0, sizeof rep);
    rep.slot = err ? UINT32_MAX : au_client_slot(c);
    if (!err)
        ut_strlcpy(rep.name, au_client_name(c), sizeof rep.name);
    if (!cfx_write(out_fd, &rep, sizeof rep) || err)
        return 1;
    char cmd;
    (void)cfx_read(in_fd, &cmd, 1, 60000);
    au_disconnect(c);
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void test_many_clients(void **state)
{
    struct cfx *fx = *state;
    /* The children heartbeat and offer to scan once a second: 80 of them
     * at PERIOD_MS would keep the ODB lock busy enough, under
     * ThreadSanitizer's slow polling lock waits, to starve a waiter. The
     * removals below are the work of this process's PERIOD_MS watchdog. */
    struct child_arg arg = {fx->dir, "many", 1000, 0};
    struct cfx_child *ch = calloc(N_MANY, sizeof *ch);
    struct many_rep *rep = calloc(N_MANY, sizeof *rep);
    assert_non_null(ch);
    assert_non_null(rep);
    for (int i = 0; i < N_MANY; i++)
        cfx_child_start(&ch[i], 60, many_child, &arg);
    for (int i = 0; i < N_MANY; i++) {
        assert_true(cfx_read(ch[i].from_child, &rep[i], sizeof rep[i], 30000));
        assert_true(rep[i].slot != UINT32_MAX);
    }
    struct au_client *c = cfx_connect(fx->dir, "counter", PERIOD_MS, 0);
    uint64_t seq0 = mb_msg_last_seq(au_msgring(c));

    struct au_client_info *infos = NULL;
    size_t n = 0;
    assert_int_equal(au_client_list(c, &infos, &n), 0);
    assert_int_equal(n, N_MANY + 1);
    uint32_t slots[N_MANY + 1] = {0};
    for (size_t i = 0; i < n; i++) {
        assert_true(infos[i].alive);
        slots[i] = infos[i].slot;
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(infos[i].name, infos[j].name);
    }
    qsort(slots, n, sizeof slots[0], cmp_u32);
    for (size_t i = 1; i < n; i++)
        assert_true(slots[i] != slots[i - 1]);
    /* Every child's report matches its entry; names are many, many1, ... */
    int plain = 0;
    for (int i = 0; i < N_MANY; i++) {
        bool found = false;
        for (size_t j = 0; j < n && !found; j++)
            found = infos[j].slot == rep[i].slot && strcmp(infos[j].name, rep[i].name) == 0 &&
                    infos[j].pid == (int32_t)ch[i].pid;
        assert_true(found);
        assert_int_equal(strncmp(rep[i].name, "many", 4), 0);
        if (strcmp(rep[i].name, "many") == 0)
            plain++;
        else
            assert_true(atoi(rep[i].name + 4) >= 1 && atoi(rep[i].name + 4) < N_MANY);
    }
    assert_int_equal(plain, 1);
    ut_free(infos);

    /* Stop them all first, so that no child's watchdog can be halfway
     * through removing an already-killed one when it is killed itself
     * (the removal would then be committed but its message never posted,
     * and the count below would be short by one). */
    for (int i = 0; i < N_MANY; i++)
        assert_int_equal(kill(ch[i].pid, SIGSTOP), 0);
    for (int i = 0; i < N_MANY; i++) {
        int st;
        assert_int_equal(waitpid(ch[i].pid, &st, WUNTRACED), ch[i].pid);
        assert_true(WIFSTOPPED(st));
    }
    int64_t t_kill = cfx_now_ms();
    for (int i = 0; i < N_MANY; i++)
        kill(ch[i].pid, SIGKILL);
    for (int i = 0; i < N_MANY; i++)
        cfx_child_kill(&ch[i]);
    /* Timed from when all are reaped: tearing down 80 processes (slow
     * under the sanitizers) comes before the kernel frees their tokens. */
    int64_t t0 = cfx_now_ms();
    int64_t deadline = cfx_now_ms() + (int64_t)10 * PERIOD_MS;
    for (;;) {
        /* Listing while entries are being removed (MIDAS failure mode 1):
         * every entry returned is whole. */
        assert_int_equal(au_client_list(c, &infos, &n), 0);
        for (size_t i = 0; i < n; i++) {
            assert_true(infos[i].name[0] != '\0');
            assert_true(infos[i].slot < AU_DEFAULT_MAX_CLIENTS);
            assert_true(infos[i].pid > 0);
            assert_true(infos[i].connect_ns > 0);
        }
        ut_free(infos);
        if (n == 1 || cfx_now_ms() > deadline)
            break;
        cfx_sleep_ms(1);
    }
    int64_t took = cfx_now_ms() - t0;
    print_message("%d killed clients removed %lld ms after they were reaped, %lld ms after "
                  "SIGKILL (period %d ms)\n",
                  N_MANY, (long long)took, (long long)(cfx_now_ms() - t_kill), PERIOD_MS);
    assert_int_equal(n, 1);
    assert_true(took < (int64_t)5 * PERIOD_MS);
    assert_int_equal(cfx_wait_msgs(c, seq0, N_MANY, 5000, "'many", "died", NULL), N_MANY);
    assert_true(cfx_wait_scans(c, 3, 5000));
    assert_int_equal(cfx_count_msgs(c, seq0, "'many", "died", NULL), N_MANY);
    assert_int_equal(cfx_count_msgs(c, seq0, "removed", NULL, NULL), N_MANY);
    au_disconnect(c);
    free(rep);
    free(ch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dead_client_removed, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_run_manual, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_live_pid_not_trusted, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_fork_child_does_not_keep_parent, cfx_setup,
                                        cfx_teardown),
        cmocka_unit_test_setup_teardown(test_blocked_client_stays, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_unresponsive_reported, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_unresponsive_removed_by_option, cfx_setup,
                                        cfx_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_ends_dispatch, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_sigint_ends_msg_wait, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_disconnect_contended, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_many_clients, cfx_setup, cfx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
