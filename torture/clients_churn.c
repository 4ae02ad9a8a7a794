/*
 * torture/clients_churn.c - client churn, kill -9, message storms, stopped
 * lock holders, fake dead clients and watches under churn: the much harder
 * versions of the MIDAS seed test (SPEC.md, "MIDAS failure modes").
 *
 *   clients_churn TEST [DURATION_S] [N]
 *
 * N is the test's size: clients (connect, term), workers (kill), messages
 * per poster (storm), waiters (stop), writers (watch), stride (crash).
 *
 * Each TEST runs in a fresh temporary experiment (mkdtemp under $TMPDIR),
 * whose shared-memory segments and files are removed at the end, also on
 * failure. Every participant is a forked process (the supervising process
 * itself never connects, so it has no threads when it forks):
 *
 *   connect  N clients (default 100) connect at once, with some duplicate
 *            names; each writes, reads and watches ODB keys. All must
 *            connect (distinct slots and names; MIDAS refuses past 64);
 *            then all are killed with SIGKILL and must all be removed, with
 *            exactly one "removed" message each and none of their watches
 *            left. A second experiment created for 8 clients refuses the
 *            9th with AU_EFULL.
 *   kill     for DURATION_S seconds, workers run ODB transactions (keeping
 *            /inv/a == /inv/b), post messages, enumerate /System/Clients
 *            and watch keys, while they are killed at random (about half
 *            of the kills hit a worker inside a transaction, i.e. holding
 *            the ODB lock; some hit a worker still connecting) and
 *            replaced; some workers leave cleanly. Afterwards: odb_check
 *            passes, the invariant holds, no stale /System/Clients entry,
 *            exactly one removal message per client killed after it
 *            connected (at most one for those killed while connecting),
 *            none for anybody else.
 *   storm    posters post tagged messages in bursts, lockers hold the ODB
 *            lock in long transactions and post from inside them (deferred
 *            messages), writers write keys, a reader follows the ring with
 *            mb_msg_wait. Every tag must arrive exactly once, nothing lost
 *            or missed, no deadlock, no rank-violation abort.
 *   stop     a client holding the ODB lock is stopped (SIGSTOP) past the
 *            lock timeout of the other clients (300 ms): their calls must
 *            return UT_ETIMEOUT with ut_lock_last_error() and odb_errmsg()
 *            naming the holder (client name and pid) and since when;
 *            messages still work meanwhile; after SIGCONT everything
 *            continues and the holder's transaction commits.
 *   fake     /System/Clients entries whose PID belongs to a live unrelated
 *            process (and to the checking client itself) but whose slot
 *            token is free are removed by the watchdog, with one message
 *            each; a live client whose PID field is wrong is kept.
 *   watch    writers write batches of changes to watched keys while other
 *            clients connect, watch, write and are killed around them; two
 *            watchers (au_dispatch, and au_watch_fd + poll) must each get at
 *            least one callback per batch and see every batch's final
 *            value, in the thread that dispatches, never going back.
 *   term     clients blocked in au_dispatch / mb_msg_wait get SIGTERM while
 *            others keep the ODB lock busy: all must exit promptly and
 *            cleanly, leaving no entry for a watchdog to remove.
 *   crash    a client removes a dead one and is itself killed (SIGKILL via
 *            ut_crash_point) at every crash point of that watchdog pass in
 *            turn (N = stride between the points tried, default 1): each
 *            dead client must still get exactly one removal message.
 *   kill-scanners  as kill, but the workers run the watchdog scans
 *            themselves, so they are also killed while removing others.
 *
 * Each test prints one summary line, for example
 *   kill: clients=57 kills=40 uncertain=3 removed=40 messages=812 errors=0 check=ok
 * and exits with status 0 only when no check failed. Everything is bounded:
 * every child has an alarm(), every wait a deadline; a child still running
 * at its deadline is reported with its kernel wait channels and killed.
 */
#include "client/aurum.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS    4096
#define MAX_SOURCES  16     /* storm: posters + lockers */
#define MAX_TAGS     20000  /* storm: messages per source */
#define MAX_WRITERS  8      /* watch */
#define RING_SLOTS   65536u /* big enough that no test can overrun it */
#define ODB_BYTES    (32u << 20)
#define LOCK_TIMEOUT 300 /* ms, the waiters of the stop test */
#define REMOVED_FMT  "client '%31[^']' (pid %d, slot %u) removed: "

enum proc_state {
    P_UNUSED = 0,
    P_STARTING,  /* forked, connecting */
    P_CONNECTED, /* au_connect returned; only now a kill is "certain" */
    P_LEAVING,   /* disconnecting by itself: not to be killed */
    P_KILLING,   /* the supervisor claimed it for SIGKILL */
    P_DONE,      /* reaped */
};

enum role {
    R_SETUP,
    R_CHECK,
    R_CLIENT,
    R_WORKER,
    R_MONITOR,
    R_POSTER,
    R_LOCKER,
    R_WRITER,
    R_READER,
    R_HOLDER,
    R_WAITER,
    R_IDLE,
    R_WATCHER,
    R_CHURN,
    R_FULL,
    R_LIAR
};

static const char *const role_names[] = {
    "setup",  "check",  "client", "worker", "monitor", "poster", "locker", "writer",
    "reader", "holder", "waiter", "idle",   "watcher", "churn",  "full",   "liar",
};

struct proc {
    atomic_int state;  /* enum proc_state */
    atomic_int in_txn; /* inside an ODB transaction (holds the ODB lock) */
    atomic_int pid;
    atomic_uint slot; /* client slot once connected */
    int role;         /* enum role */
    int arg;          /* role-specific index */
    int killed;       /* 0, 1: killed after it connected, 2: killed while connecting */
    int status;       /* wait status once reaped */
    char name[32];    /* client name once connected */
};

/* Shared between the supervisor and every child (anonymous MAP_SHARED). */
struct ctl {
    atomic_int phase;             /* test-specific steps */
    atomic_int stop;              /* children end their loops */
    atomic_int stop_monitors;     /* monitors and watchers end theirs */
    atomic_long errors;           /* failed checks, all processes */
    atomic_long log_errors;       /* ut_log ERROR lines, all processes */
    atomic_long log_warns;        /* ut_log WARN lines */
    atomic_int expect_log_errors; /* lock timeouts are expected (stop test) */
    atomic_int quiet_warns;       /* recovery warnings are expected (kill tests) */
    atomic_int n_ready;
    atomic_long n_ops, n_txns, n_msgs, n_enum;
    atomic_int n_procs; /* entries of procs[] in use */
    /* storm */
    atomic_long posted[MAX_SOURCES];
    atomic_uchar seen[MAX_SOURCES][MAX_TAGS];
    atomic_long n_dup, n_read, n_missed;
    /* stop */
    atomic_int holding, committed, timed_out, resumed, named_ok;
    /* watch */
    atomic_llong written[MAX_WRITERS];
    atomic_llong wseen[2][MAX_WRITERS];
    atomic_long callbacks[2], overflows[2], batches, changes;
    /* results handed back by checker children (r_removed_bad: removals of
     * clients killed while connecting) */
    atomic_long r_removed, r_removed_bad, r_messages, r_clients;
    char holder_name[32];
    /* crash */
    atomic_int cur_victim, cur_cleaner, cleaner_points;
    struct proc procs[MAX_PROCS];
};

static struct ctl *ctl;
static char exp_dir[PATH_MAX];
static pid_t supervisor_pid;
static int my_proc = -1; /* index in ctl->procs of this child */
static int duration_s = 10;
static const char *test_name = "?";

/* ---------------------------------------------------------------------- */
/* Small helpers                                                           */
/* ---------------------------------------------------------------------- */

static int64_t now_ms(void)
{
    return ut_now_ns() / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static const char *who(void)
{
    if (my_proc < 0)
        return "supervisor";
    return role_names[ctl->procs[my_proc].role];
}

/* Counts one failed check and prints it (any process). */
static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...)
{
    atomic_fetch_add(&ctl->errors, 1);
    char buf[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: FAIL [%s %d]: %s\n", test_name, who(), (int)getpid(), buf);
}

/* Log sink of every process: errors are failures unless the test expects
 * lock timeouts; recovery warnings are failures unless the test kills. */
static void log_sink(enum ut_log_level level, const char *msg, void *arg)
{
    (void)arg;
    if (level >= UT_LOG_ERROR) {
        atomic_fetch_add(&ctl->log_errors, 1);
        if (!atomic_load(&ctl->expect_log_errors))
            report("ut_log error: %s", msg);
    } else if (level == UT_LOG_WARN) {
        atomic_fetch_add(&ctl->log_warns, 1);
        if (!atomic_load(&ctl->quiet_warns))
            report("ut_log warning: %s", msg);
    }
}

/* Removes the experiment: its segments, its files, the directory. */
static void remove_experiment(const char *dir)
{
    if (!dir[0])
        return;
    au_experiment_remove_segments(dir);
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[PATH_MAX + 256];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void at_exit_cleanup(void)
{
    if (getpid() == supervisor_pid)
        remove_experiment(exp_dir);
}

static int make_experiment(char *out, size_t size)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(out, size, "%s/aurum-churn.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(out)) {
        fprintf(stderr, "%s: mkdtemp: %s\n", test_name, strerror(errno));
        out[0] = '\0';
        return -1;
    }
    /* A ring large enough that no test can overrun it: every message can
     * be read back at the end. Created before any client connects. */
    struct mb_msgring_params mp = {0};
    mp.n_slots = RING_SLOTS;
    struct mb_msgring *ring = NULL;
    int err = mb_msgring_open_exp(out, MB_MSGRING_CREATE, &mp, &ring);
    if (err) {
        fprintf(stderr, "%s: creating the message ring: %s\n", test_name, ut_strerror(err));
        return -1;
    }
    mb_msgring_close(ring);
    return 0;
}

/* Connects this child to the test experiment. NULL (reported) on failure. */
static struct au_client *connect_flags(const char *name, int period_ms, int lock_timeout_ms,
                                       unsigned flags)
{
    struct au_connect_opts o = {0};
    o.flags = flags;
    o.name = name;
    o.experiment = exp_dir;
    o.watchdog_period_ms = period_ms;
    o.lock_timeout_ms = lock_timeout_ms;
    o.unresponsive_ms = 60000; /* nobody here is silent that long */
    o.odb_size_bytes = ODB_BYTES;
    struct au_client *c = NULL;
    int err = au_connect(&o, &c);
    if (err) {
        report("au_connect(%s): %s (%s)", name, ut_strerror(err), odb_errmsg());
        return NULL;
    }
    if (my_proc >= 0) {
        struct proc *p = &ctl->procs[my_proc];
        atomic_store(&p->slot, au_client_slot(c));
        ut_strlcpy(p->name, au_client_name(c), sizeof p->name);
        int expected = P_STARTING;
        atomic_compare_exchange_strong(&p->state, &expected, P_CONNECTED);
    }
    return c;
}

static struct au_client *connect_as(const char *name, int period_ms, int lock_timeout_ms)
{
    return connect_flags(name, period_ms, lock_timeout_ms, 0);
}

/* Claims this child's own exit: false when the supervisor is killing it
 * (then the caller waits for the SIGKILL). */
static bool claim_leave(void)
{
    int expected = P_CONNECTED;
    if (atomic_compare_exchange_strong(&ctl->procs[my_proc].state, &expected, P_LEAVING))
        return true;
    expected = P_STARTING;
    return atomic_compare_exchange_strong(&ctl->procs[my_proc].state, &expected, P_LEAVING);
}

static void leave(struct au_client *c)
{
    if (!claim_leave())
        for (;;)
            pause();
    au_disconnect(c);
}

/* ---------------------------------------------------------------------- */
/* Processes                                                               */
/* ---------------------------------------------------------------------- */

typedef int (*child_fn)(int arg);

/* Forks a child running fn(arg) under an alarm. Returns its proc index,
 * or -1 when the table is full or fork failed. */
static int spawn(int role, child_fn fn, int arg)
{
    int i = atomic_load(&ctl->n_procs);
    if (i >= MAX_PROCS)
        return -1;
    struct proc *p = &ctl->procs[i];
    memset(p->name, 0, sizeof p->name);
    p->role = role;
    p->arg = arg;
    p->killed = 0;
    p->status = 0;
    atomic_store(&p->in_txn, 0);
    atomic_store(&p->slot, UINT32_MAX);
    atomic_store(&p->state, P_STARTING);
    atomic_store(&ctl->n_procs, i + 1);
    (void)fflush(NULL); /* console output */
    pid_t pid = fork();
    if (pid < 0) {
        report("fork: %s", strerror(errno));
        atomic_store(&p->state, P_DONE);
        return -1;
    }
    if (pid == 0) {
        my_proc = i;
        atomic_store(&p->pid, (int)getpid());
        srand((unsigned)getpid() ^ (unsigned)ut_now_ns());
        alarm((unsigned)duration_s + 90);
        exit(fn(arg));
    }
    atomic_store(&p->pid, (int)pid);
    return i;
}

/* Checks how a reaped child ended: SIGKILL for those we killed, exit 0 for
 * the others. */
static void judge(struct proc *p)
{
    int st = p->status;
    if (p->killed) {
        if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) && !(WIFEXITED(st)))
            report("%s %d ended oddly (status 0x%x)", role_names[p->role], (int)p->pid, st);
        return;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return;
    if (WIFSIGNALED(st))
        report("%s %d (%s) killed by signal %d%s", role_names[p->role], (int)p->pid, p->name,
               WTERMSIG(st), WTERMSIG(st) == SIGALRM ? " (its time bound)" : "");
    else
        report("%s %d (%s) exited %d", role_names[p->role], (int)p->pid, p->name, WEXITSTATUS(st));
}

static struct proc *proc_of_pid(pid_t pid)
{
    int n = atomic_load(&ctl->n_procs);
    for (int i = n - 1; i >= 0; i--)
        if (ctl->procs[i].pid == pid && ctl->procs[i].state != P_DONE)
            return &ctl->procs[i];
    return NULL;
}

/* Reaps every child that has ended, without waiting. Returns how many. */
static int reap_some(void)
{
    int n = 0, st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        struct proc *p = proc_of_pid(pid);
        if (!p)
            continue;
        p->status = st;
        atomic_store(&p->state, P_DONE);
        judge(p);
        n++;
    }
    return n;
}

static bool running(int i)
{
    return atomic_load(&ctl->procs[i].state) != P_DONE;
}

/* Prints the wait channels of a stuck process and its threads. */
static void describe_stuck(pid_t pid)
{
    char path[320], buf[128];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/wchan", (int)pid, e->d_name);
        int fd = open(path, O_RDONLY);
        ssize_t len = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0)
            close(fd);
        buf[len > 0 ? len : 0] = '\0';
        fprintf(stderr, "    pid %d tid %s: wchan %s\n", (int)pid, e->d_name, buf);
    }
    closedir(d);
}

/* Waits until the procs [from, to) have all ended, reaping every child on
 * the way, for at most timeout_ms; the stuck ones are then described,
 * killed and reported. Returns true when all ended by themselves. */
static bool wait_procs(int from, int to, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        reap_some();
        bool all = true;
        for (int i = from; i < to && all; i++)
            all = !running(i);
        if (all)
            return true;
        if (now_ms() >= end)
            break;
        sleep_ms(5);
    }
    for (int i = from; i < to; i++) {
        if (!running(i))
            continue;
        struct proc *p = &ctl->procs[i];
        report("%s %d (%s) still running after %d ms (deadlock?)", role_names[p->role], (int)p->pid,
               p->name, timeout_ms);
        describe_stuck(p->pid);
        p->killed = 1;
        kill(p->pid, SIGKILL);
    }
    for (int i = from; i < to; i++) {
        while (running(i)) {
            reap_some();
            sleep_ms(1);
        }
    }
    return false;
}

/* Runs one child to its end (setup and checker steps). */
static bool run_step(int role, child_fn fn, int arg, int timeout_ms)
{
    int i = spawn(role, fn, arg);
    if (i < 0)
        return false;
    long before = atomic_load(&ctl->errors);
    return wait_procs(i, i + 1, timeout_ms) && atomic_load(&ctl->errors) == before;
}

/* Kills proc i with SIGKILL if it is still in state `from` (P_CONNECTED:
 * a certain kill; P_STARTING: killed while connecting). */
static bool kill_proc(int i, int from)
{
    struct proc *p = &ctl->procs[i];
    int expected = from;
    if (!atomic_compare_exchange_strong(&p->state, &expected, P_KILLING))
        return false;
    p->killed = from == P_CONNECTED ? 1 : 2;
    kill(p->pid, SIGKILL);
    return true;
}

/* ---------------------------------------------------------------------- */
/* ODB and message helpers                                                 */
/* ---------------------------------------------------------------------- */

static int set_i64(struct odb *o, const char *path, int64_t v)
{
    return odb_set(o, ODB_ROOT, path, ODB_TYPE_INT64, &v, sizeof v, 1, ODB_SET_CREATE);
}

static int get_i64(struct odb *o, const char *path, int64_t *v)
{
    size_t size = sizeof *v;
    return odb_get(o, ODB_ROOT, path, ODB_TYPE_INT64, v, &size);
}

/* The MIDAS failure-mode-1 walk: list /System/Clients and read every
 * entry's name while clients come and go. Only 0 and ODB_ESTALE (the entry
 * was removed since the listing) are acceptable. */
static bool enumerate_clients(struct au_client *c)
{
    struct odb *o = au_odb(c);
    struct odb_hkey dir;
    int err = odb_find(o, ODB_ROOT, "/System/Clients", &dir);
    if (err) {
        report("find /System/Clients: %s", ut_strerror(err));
        return false;
    }
    struct odb_dirent *ents = NULL;
    size_t n = 0;
    err = odb_dir_list(o, dir, &ents, &n);
    if (err) {
        report("list /System/Clients: %s (%s)", ut_strerror(err), odb_errmsg());
        return false;
    }
    bool good = true;
    for (size_t i = 0; i < n && good; i++) {
        char name[32];
        size_t size = sizeof name;
        err = odb_get(o, ents[i].key, "Name", ODB_TYPE_STRING, name, &size);
        if (err && err != ODB_ESTALE) {
            report("/System/Clients/%s/Name: %s (%s)", ents[i].name, ut_strerror(err),
                   odb_errmsg());
            good = false;
        }
    }
    odb_dirents_free(ents);
    atomic_fetch_add(&ctl->n_enum, 1);
    return good;
}

/* Calls fn for every message in the ring, oldest first. Reports a ring
 * that lost messages (it is sized so that it never should). Returns the
 * number of messages. */
static long for_each_msg(struct mb_msgring *ring, void (*fn)(const struct mb_msg *, void *),
                         void *arg)
{
    enum { BATCH = 128 };
    struct mb_msg *m = ut_calloc(BATCH, sizeof *m);
    if (!m) {
        report("out of memory");
        return 0;
    }
    uint64_t after = 0;
    long total = 0;
    for (;;) {
        size_t n = 0;
        uint64_t missed = 0;
        int err = mb_msg_read(ring, after, m, BATCH, &n, &missed);
        if (err) {
            report("mb_msg_read: %s", ut_strerror(err));
            break;
        }
        if (missed)
            report("the message ring dropped %llu messages", (unsigned long long)missed);
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++)
            fn(&m[i], arg);
        total += (long)n;
        after = m[n - 1].seq;
    }
    ut_free(m);
    return total;
}

/* Waits (as a connected client) until /System/Clients holds only clients
 * for which keep(name) is true, plus this one. Returns the number left, or
 * -1 after timeout_ms (reported with the leftovers). */
static int wait_clients_gone(struct au_client *c, bool (*keep)(const char *), int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        struct au_client_info *ci = NULL;
        size_t n = 0;
        int err = au_client_list(c, &ci, &n);
        if (err) {
            report("au_client_list: %s", ut_strerror(err));
            return -1;
        }
        size_t others = 0, kept = 0;
        for (size_t i = 0; i < n; i++) {
            if (ci[i].slot == au_client_slot(c))
                continue;
            if (keep && keep(ci[i].name))
                kept++;
            else
                others++;
        }
        if (others == 0 || now_ms() >= end) {
            if (others) {
                report("%zu stale /System/Clients entries after %d ms, e.g.:", others, timeout_ms);
                for (size_t i = 0, shown = 0; i < n && shown < 5; i++) {
                    if (ci[i].slot == au_client_slot(c) || (keep && keep(ci[i].name)))
                        continue;
                    fprintf(stderr, "    slot %u name '%s' pid %d alive %d\n", ci[i].slot,
                            ci[i].name, ci[i].pid, ci[i].alive);
                    shown++;
                }
            }
            ut_free(ci);
            return others ? -1 : (int)kept;
        }
        ut_free(ci);
        sleep_ms(20);
    }
}

static bool check_odb(struct au_client *c)
{
    char rep[1024] = "";
    int err = odb_check(au_odb(c), rep, sizeof rep);
    if (err) {
        report("odb_check: %s: %s", ut_strerror(err), rep);
        return false;
    }
    return true;
}

/* Removal messages per pid, and every ERROR message, from the ring. */
struct removal_scan {
    long n_removed; /* "removed" messages */
    long n_error;   /* ERROR messages that are not removal messages */
    long n_msgs;
    const char *ignore_error; /* substring of ERROR messages that are expected */
};

/* The proc a removal message names (by pid), or NULL. */
static struct proc *proc_named(int pid)
{
    int n = atomic_load(&ctl->n_procs);
    for (int i = 0; i < n; i++)
        if (ctl->procs[i].pid == pid)
            return &ctl->procs[i];
    return NULL;
}

/* Per-proc removal counts live in this array, indexed like ctl->procs
 * (only the checker process fills it). */
static int removal_count[MAX_PROCS];

static void scan_msg(const struct mb_msg *m, void *arg)
{
    struct removal_scan *s = arg;
    s->n_msgs++;
    char name[32];
    int pid = 0;
    unsigned slot = 0;
    if (m->type == MB_MSG_ERROR && sscanf(m->text, REMOVED_FMT, name, &pid, &slot) == 3) {
        s->n_removed++;
        struct proc *p = proc_named(pid);
        if (p)
            removal_count[p - ctl->procs]++;
        else
            report("removal message for unknown pid %d: %s", pid, m->text);
        return;
    }
    if (m->type == MB_MSG_ERROR && !(s->ignore_error && strstr(m->text, s->ignore_error))) {
        s->n_error++;
        report("ERROR message from %s: %s", m->source, m->text);
    }
}

/* For a failure report: who else had the slot of p, and every message
 * that mentions it. */
struct slot_msgs {
    char needle[32];
};

static void print_slot_msg(const struct mb_msg *m, void *arg)
{
    struct slot_msgs *sm = arg;
    if (strstr(m->text, sm->needle))
        fprintf(stderr, "    msg %llu [%s pid %u,%s] %s\n", (unsigned long long)m->seq, m->source,
                m->pid, mb_msg_type_name(m->type), m->text);
}

static void explain_missing(struct au_client *c, const struct proc *p)
{
    unsigned slot = atomic_load(&p->slot);
    fprintf(stderr, "    clients that had slot %u:\n", slot);
    int n = atomic_load(&ctl->n_procs);
    for (int i = 0; i < n; i++) {
        const struct proc *q = &ctl->procs[i];
        if (atomic_load(&q->slot) == slot)
            fprintf(stderr, "    proc %d pid %d name '%s' killed %d status 0x%x\n", i, (int)q->pid,
                    q->name, q->killed, q->status);
    }
    struct slot_msgs sm;
    snprintf(sm.needle, sizeof sm.needle, "slot %u)", slot);
    for_each_msg(au_msgring(c), print_slot_msg, &sm);
}

/* Checks, for every proc: one removal message if it was killed after it
 * connected, at most one if killed while connecting, none otherwise. */
static long check_removals(struct au_client *c, struct removal_scan *s)
{
    memset(removal_count, 0, sizeof removal_count);
    for_each_msg(au_msgring(c), scan_msg, s);
    long matched = 0;
    int n = atomic_load(&ctl->n_procs);
    for (int i = 0; i < n; i++) {
        struct proc *p = &ctl->procs[i];
        int want_min = p->killed == 1 ? 1 : 0, want_max = p->killed ? 1 : 0;
        if (removal_count[i] < want_min || removal_count[i] > want_max)
            report("%s pid %d (%s, %s): %d removal messages", role_names[p->role], (int)p->pid,
                   p->name[0] ? p->name : "unnamed",
                   p->killed == 1   ? "killed after connecting"
                   : p->killed == 2 ? "killed while connecting"
                                    : "not killed",
                   removal_count[i]);
        if (p->killed == 1 && removal_count[i] == 1)
            matched++;
        if (p->killed == 2 && removal_count[i] == 1)
            atomic_fetch_add(&ctl->r_removed_bad, 1);
        if (removal_count[i] < want_min)
            explain_missing(c, p);
    }
    return matched;
}

/* ---------------------------------------------------------------------- */
/* Common steps                                                            */
/* ---------------------------------------------------------------------- */

/* Creates the keys the tests use; the first client creates the ODB. */
static int step_setup(int arg)
{
    (void)arg;
    struct au_client *c = connect_as("setup", 1000, 0);
    if (!c)
        return 1;
    struct odb *o = au_odb(c);
    int err = set_i64(o, "/churn/shared/x", 0);
    if (!err)
        err = set_i64(o, "/inv/a", 0);
    if (!err)
        err = set_i64(o, "/inv/b", 0);
    if (!err)
        err = odb_create(o, ODB_ROOT, "/watched", ODB_TYPE_DIR, 0, 0, NULL);
    if (!err)
        err = odb_create(o, ODB_ROOT, "/other", ODB_TYPE_DIR, 0, 0, NULL);
    for (int i = 0; !err && i < MAX_WRITERS; i++) {
        char path[64];
        snprintf(path, sizeof path, "/watched/w%d", i);
        err = set_i64(o, path, 0);
    }
    if (err)
        report("setup: %s (%s)", ut_strerror(err), odb_errmsg());
    leave(c);
    return err ? 1 : 0;
}

static bool keep_monitors(const char *name)
{
    return strncmp(name, "mon", 3) == 0;
}

/* Final check once every other client has gone: no entry but our own,
 * the ODB intact. Keeps the ERROR-message statistics in ctl. */
static int step_final(int arg)
{
    (void)arg;
    struct au_client *c = connect_as("final", 100, 0);
    if (!c)
        return 1;
    wait_clients_gone(c, NULL, 5000);
    check_odb(c);
    leave(c);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* connect: N clients at once, all killed, all removed                     */
/* ---------------------------------------------------------------------- */

static int n_dup_names;

static void count_cb(struct au_client *c, struct odb_hkey key, void *arg)
{
    (void)c;
    (void)key;
    (void)arg;
}

static int child_connect(int i)
{
    char name[32];
    if (i < n_dup_names)
        snprintf(name, sizeof name, "dup");
    else
        snprintf(name, sizeof name, "a%d", i);
    struct au_client *c = connect_as(name, 1000, 0);
    if (!c)
        return 1;
    struct odb *o = au_odb(c);
    char path[64];
    snprintf(path, sizeof path, "/churn/a/%d", i);
    int err = set_i64(o, path, i);
    int64_t v;
    snprintf(path, sizeof path, "/churn/a/%d", (i + 7) % 50);
    if (!err) {
        err = get_i64(o, path, &v);
        if (err == ODB_ENOKEY)
            err = 0;
    }
    uint32_t id;
    if (!err)
        err = au_watch_add(c, "/churn/shared", count_cb, NULL, &id);
    if (!err)
        err = set_i64(o, "/churn/shared/x", i);
    if (err) {
        report("client %s: %s (%s)", name, ut_strerror(err), odb_errmsg());
        leave(c);
        return 1;
    }
    enumerate_clients(c);
    atomic_fetch_add(&ctl->n_ready, 1);
    /* Stay, dispatching the changes of the others, until killed. */
    while (!atomic_load(&ctl->stop)) {
        err = au_dispatch(c, 200);
        if (err < 0) {
            report("au_dispatch: %s", ut_strerror(err));
            break;
        }
    }
    leave(c);
    return 0;
}

static int check_all_connected(int n)
{
    struct au_client *c = connect_as("check", 1000, 0);
    if (!c)
        return 1;
    struct au_client_info *ci = NULL;
    size_t count = 0;
    int err = au_client_list(c, &ci, &count);
    if (err) {
        report("au_client_list: %s", ut_strerror(err));
    } else {
        size_t alive = 0;
        for (size_t i = 0; i < count; i++)
            alive += ci[i].alive;
        if (count != (size_t)n + 1 || alive != count)
            report("/System/Clients lists %zu clients (%zu alive), expected %d", count, alive,
                   n + 1);
        atomic_store(&ctl->r_clients, (long)count - 1);
        ut_free(ci);
    }
    struct odb_hkey shared;
    uint32_t n_watch = 0;
    err = odb_find(au_odb(c), ODB_ROOT, "/churn/shared", &shared);
    if (!err)
        err = odb_watch_count(au_odb(c), shared, &n_watch);
    if (err || n_watch != (uint32_t)n)
        report("watches on /churn/shared: %u (%s), expected %d", n_watch, ut_strerror(err), n);
    leave(c);
    return 0;
}

static int check_all_removed(int n)
{
    struct au_client *c = connect_as("check", 100, 0);
    if (!c)
        return 1;
    int64_t t0 = now_ms();
    wait_clients_gone(c, NULL, 15000);
    int64_t t_gone = now_ms() - t0;
    /* The last removal message is posted just after its commit. */
    sleep_ms(300);
    struct removal_scan s = {0};
    long matched = check_removals(c, &s);
    atomic_store(&ctl->r_removed, matched);
    atomic_store(&ctl->r_messages, s.n_msgs);
    if (s.n_removed != n)
        report("%ld removal messages for %d killed clients", s.n_removed, n);
    struct odb_hkey shared;
    uint32_t n_watch = 0;
    int err = odb_find(au_odb(c), ODB_ROOT, "/churn/shared", &shared);
    if (!err)
        err = odb_watch_count(au_odb(c), shared, &n_watch);
    if (err || n_watch != 0)
        report("watches left on /churn/shared: %u (%s)", n_watch, ut_strerror(err));
    check_odb(c);
    printf("connect: all %d removed %.2f s after the checker connected\n", n,
           (double)t_gone / 1000.0);
    leave(c);
    return 0;
}

/* A separate experiment created for 8 clients: the 9th is refused. */
static int check_full(int arg)
{
    (void)arg;
    char dir[PATH_MAX];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/aurum-full.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        report("mkdtemp: %s", strerror(errno));
        return 1;
    }
    struct au_client *cs[9] = {0};
    struct au_connect_opts o = {0};
    o.name = "full";
    o.experiment = dir;
    o.max_clients = 8;
    int err = 0;
    for (int i = 0; i < 8 && !err; i++) {
        err = au_connect(&o, &cs[i]);
        if (err)
            report("connection %d of 8: %s", i + 1, ut_strerror(err));
    }
    if (!err) {
        err = au_connect(&o, &cs[8]);
        if (err != AU_EFULL)
            report("the 9th connection to an experiment for 8 returned %d (%s), not AU_EFULL", err,
                   ut_strerror(err));
    }
    for (int i = 8; i >= 0; i--)
        au_disconnect(cs[i]);
    remove_experiment(dir);
    return 0;
}

static int test_connect(int n)
{
    if (n < 1 || n > MAX_PROCS - 16)
        n = 100;
    n_dup_names = n / 10 > 0 ? n / 10 : 1;
    if (!run_step(R_SETUP, step_setup, 0, 30000))
        return 1;
    int64_t t0 = now_ms();
    int first = atomic_load(&ctl->n_procs);
    for (int i = 0; i < n; i++)
        if (spawn(R_CLIENT, child_connect, i) < 0)
            return 1;
    int last = atomic_load(&ctl->n_procs);
    int64_t end = t0 + 60000 + (int64_t)n * 100;
    while (atomic_load(&ctl->n_ready) < n && now_ms() < end && atomic_load(&ctl->errors) == 0) {
        reap_some();
        sleep_ms(5);
    }
    int64_t t_conn = now_ms() - t0;
    if (atomic_load(&ctl->n_ready) < n)
        report("only %d of %d clients connected in %.1f s", atomic_load(&ctl->n_ready), n,
               (double)t_conn / 1000.0);
    /* Distinct slots; distinct names; the duplicates became dup, dup1, ... */
    static char seen_slot[65536];
    memset(seen_slot, 0, sizeof seen_slot);
    int dups_ok = 0;
    for (int i = first; i < last; i++) {
        struct proc *p = &ctl->procs[i];
        unsigned slot = atomic_load(&p->slot);
        if (!p->name[0])
            continue; /* never connected: reported above */
        if (slot >= sizeof seen_slot || seen_slot[slot]++)
            report("client %s has slot %u, taken twice or invalid", p->name, slot);
        for (int j = first; j < i && p->name[0]; j++)
            if (strcasecmp(ctl->procs[j].name, p->name) == 0)
                report("two clients are named '%s'", p->name);
        if (p->arg < n_dup_names) {
            char *end_num;
            long k = strtol(p->name + 3, &end_num, 10);
            if (strncmp(p->name, "dup", 3) == 0 &&
                (p->name[3] == '\0' || (*end_num == '\0' && k >= 1 && k < n_dup_names)))
                dups_ok++;
            else
                report("duplicate name 'dup' became '%s'", p->name);
        }
    }
    run_step(R_CHECK, check_all_connected, n, 60000);
    run_step(R_FULL, check_full, 0, 30000);
    /* Kill them all at once; some die holding the ODB lock, so recovery
     * warnings are expected from here on. */
    atomic_store(&ctl->quiet_warns, 1);
    int64_t tk = now_ms();
    int kills = 0;
    for (int i = first; i < last; i++)
        kills += kill_proc(i, P_CONNECTED);
    wait_procs(first, last, 30000);
    run_step(R_CHECK, check_all_removed, kills, 60000);
    int64_t t_clean = now_ms() - tk;
    run_step(R_CHECK, step_final, 0, 30000);
    printf("connect: %d clients (%d named 'dup' -> %d distinct) connected in %.2f s (%.0f/s); "
           "kill+cleanup+checks %.2f s\n",
           n, n_dup_names, dups_ok, (double)t_conn / 1000.0, n * 1000.0 / (double)t_conn,
           (double)t_clean / 1000.0);
    printf("connect: clients=%d kills=%d removed=%ld messages=%ld errors=%ld check=%s\n", n, kills,
           atomic_load(&ctl->r_removed), atomic_load(&ctl->r_messages), atomic_load(&ctl->errors),
           atomic_load(&ctl->errors) ? "FAILED" : "ok");
    return 0;
}

/* ---------------------------------------------------------------------- */
/* kill: random kill -9 during churn, also inside the ODB lock             */
/* ---------------------------------------------------------------------- */

static void watch_nop(struct au_client *c, struct odb_hkey key, void *arg)
{
    (void)c;
    (void)key;
    (void)arg;
}

/* One transaction keeping /inv/a == /inv/b, plus scratch writes. */
static bool worker_txn(struct au_client *c, unsigned *seed)
{
    struct odb *o = au_odb(c);
    struct proc *me = &ctl->procs[my_proc];
    int err = odb_txn_begin(o);
    if (err) {
        report("odb_txn_begin: %s (%s)", ut_strerror(err), odb_errmsg());
        return false;
    }
    atomic_store(&me->in_txn, 1);
    int64_t a = 0, b = 0;
    err = get_i64(o, "/inv/a", &a);
    if (!err)
        err = get_i64(o, "/inv/b", &b);
    if (!err && a != b) {
        report("invariant: /inv/a = %lld, /inv/b = %lld", (long long)a, (long long)b);
        err = UT_ECORRUPT;
    }
    if (!err)
        err = set_i64(o, "/inv/a", a + 1);
    char path[64];
    snprintf(path, sizeof path, "/churn/w/%u/k%d", au_client_slot(c), rand_r(seed) % 8);
    if (!err) {
        char s[100];
        int len = rand_r(seed) % 90;
        memset(s, 'a' + rand_r(seed) % 26, (size_t)len);
        s[len] = '\0';
        err = odb_set(o, ODB_ROOT, path, ODB_TYPE_STRING, s, (size_t)len + 1, 1, ODB_SET_CREATE);
    }
    if (!err && rand_r(seed) % 4 == 0) {
        snprintf(path, sizeof path, "/churn/w/%u", au_client_slot(c));
        err = odb_delete(o, ODB_ROOT, path, true);
    }
    /* Now and then a long transaction, so that kills find one. */
    if (!err && rand_r(seed) % 8 == 0)
        sleep_ms(1 + rand_r(seed) % 3);
    if (!err)
        err = set_i64(o, "/inv/b", b + 1);
    if (err) {
        odb_txn_abort(o);
        atomic_store(&me->in_txn, 0);
        if (err != UT_ECORRUPT)
            report("transaction: %s (%s)", ut_strerror(err), odb_errmsg());
        return false;
    }
    err = odb_txn_commit(o);
    atomic_store(&me->in_txn, 0);
    if (err) {
        report("odb_txn_commit: %s (%s)", ut_strerror(err), odb_errmsg());
        return false;
    }
    atomic_fetch_add(&ctl->n_txns, 1);
    return true;
}

/* arg: 0 = stays until stopped, 1 = leaves by itself after a while. */
static int worker_period_ms = 1000;

static int child_worker(int arg)
{
    struct au_client *c = connect_as("w", worker_period_ms, 0);
    if (!c)
        return 1;
    unsigned seed = (unsigned)getpid();
    long ops = arg ? 20 + rand_r(&seed) % 200 : -1;
    bool watching = false;
    uint32_t wid = 0;
    bool good = true;
    while (good && !atomic_load(&ctl->stop) && ops != 0) {
        if (ops > 0)
            ops--;
        int r = rand_r(&seed) % 100;
        if (r < 50) {
            good = worker_txn(c, &seed);
        } else if (r < 58) {
            /* A budget keeps every message in the ring until the check. */
            if (rand_r(&seed) % 8 != 0 || atomic_fetch_add(&ctl->n_msgs, 1) >= 20000)
                continue;
            int err = au_msg(c, MB_MSG_INFO, "worker %d op %ld", (int)getpid(), ops);
            if (err)
                report("au_msg: %s", ut_strerror(err));
        } else if (r < 66) {
            int err = watching ? au_watch_remove(c, wid)
                               : au_watch_add(c, "/churn", watch_nop, NULL, &wid);
            if (err) {
                report("watch %s: %s (%s)", watching ? "remove" : "add", ut_strerror(err),
                       odb_errmsg());
                good = false;
            }
            watching = !watching;
            int n = au_dispatch(c, 0);
            if (n < 0) {
                report("au_dispatch: %s", ut_strerror(n));
                good = false;
            }
        } else if (r < 90) {
            good = enumerate_clients(c);
        } else {
            sleep_ms(1);
        }
        atomic_fetch_add(&ctl->n_ops, 1);
    }
    if (au_client_removed(c))
        report("worker %s was removed while alive", au_client_name(c));
    leave(c);
    return good ? 0 : 1;
}

/* Scans often and checks the ODB now and then; survives the churn. */
static int child_monitor(int arg)
{
    char name[16];
    snprintf(name, sizeof name, "mon%d", arg);
    struct au_client *c = connect_as(name, 100, 0);
    if (!c)
        return 1;
    atomic_fetch_add(&ctl->n_ready, 1);
    int64_t next_check = now_ms() + 1000;
    while (!atomic_load(&ctl->stop_monitors)) {
        sleep_ms(20);
        if (now_ms() >= next_check) {
            check_odb(c);
            next_check = now_ms() + 1000;
        }
    }
    if (au_client_removed(c))
        report("monitor %s was removed while alive", au_client_name(c));
    leave(c);
    return 0;
}

static int check_after_kills(int arg)
{
    (void)arg;
    struct au_client *c = connect_as("check", 100, 0);
    if (!c)
        return 1;
    if (wait_clients_gone(c, keep_monitors, 15000) < 0)
        report("killed clients were not all removed");
    /* Let the last removal messages land. */
    sleep_ms(400);
    struct removal_scan s = {0};
    long matched = check_removals(c, &s);
    atomic_store(&ctl->r_removed, matched);
    atomic_store(&ctl->r_messages, s.n_msgs);
    int64_t a = -1, b = -2;
    int err = get_i64(au_odb(c), "/inv/a", &a);
    if (!err)
        err = get_i64(au_odb(c), "/inv/b", &b);
    if (err || a != b)
        report("invariant after the kills: /inv/a = %lld, /inv/b = %lld (%s)", (long long)a,
               (long long)b, ut_strerror(err));
    if (a != atomic_load(&ctl->n_txns) && a < atomic_load(&ctl->n_txns))
        report("/inv/a = %lld < %ld committed transactions: committed data lost", (long long)a,
               atomic_load(&ctl->n_txns));
    check_odb(c);
    struct odb_stats st;
    if (odb_stats(au_odb(c), &st) == 0)
        printf("kill: odb rollbacks=%llu owner-died=%llu transactions=%lld\n",
               (unsigned long long)st.n_rollbacks, (unsigned long long)st.lock_owner_died,
               (long long)a);
    struct mb_msg_stats ms;
    if (mb_msg_stats(au_msgring(c), &ms) == 0 && (ms.n_recovered || ms.n_discarded))
        printf("kill: message ring recoveries=%llu discarded=%llu\n",
               (unsigned long long)ms.n_recovered, (unsigned long long)ms.n_discarded);
    leave(c);
    return 0;
}

static int test_kill(int n_workers)
{
    if (n_workers < 1 || n_workers > 64)
        n_workers = 6;
    atomic_store(&ctl->quiet_warns, 1);
    if (!run_step(R_SETUP, step_setup, 0, 30000))
        return 1;
    int mon0 = atomic_load(&ctl->n_procs);
    for (int m = 0; m < 2; m++)
        spawn(R_MONITOR, child_monitor, m);
    int mon1 = atomic_load(&ctl->n_procs);
    int64_t end = now_ms() + 15000;
    while (atomic_load(&ctl->n_ready) < 2 && now_ms() < end) {
        reap_some();
        sleep_ms(5);
    }
    int w0 = atomic_load(&ctl->n_procs);
    unsigned seed = (unsigned)getpid();
    int live = 0, kills = 0, uncertain = 0, spawned = 0, kills_in_txn = 0;
    end = now_ms() + (int64_t)duration_s * 1000;
    while (now_ms() < end && atomic_load(&ctl->n_procs) < MAX_PROCS - 8) {
        reap_some();
        live = 0;
        int n = atomic_load(&ctl->n_procs);
        for (int i = w0; i < n; i++)
            live += running(i);
        for (; live < n_workers; live++) {
            if (spawn(R_WORKER, child_worker, rand_r(&seed) % 3 == 0) < 0)
                break;
            spawned++;
        }
        sleep_ms(2 + rand_r(&seed) % 25);
        /* Pick a victim: inside a transaction, any connected one, or one
         * still connecting. */
        n = atomic_load(&ctl->n_procs);
        int r = rand_r(&seed) % 100, want = r < 90 ? P_CONNECTED : P_STARTING;
        int cand[64], nc = 0;
        for (int i = w0; i < n && nc < 64; i++) {
            struct proc *p = &ctl->procs[i];
            if (atomic_load(&p->state) != want)
                continue;
            if (r < 45 && !atomic_load(&p->in_txn))
                continue;
            cand[nc++] = i;
        }
        if (nc == 0)
            continue;
        int v = cand[rand_r(&seed) % nc];
        bool in_txn = atomic_load(&ctl->procs[v].in_txn) != 0;
        if (kill_proc(v, want)) {
            kills_in_txn += in_txn;
            kills += want == P_CONNECTED;
            uncertain += want == P_STARTING;
        }
    }
    atomic_store(&ctl->stop, 1);
    int w1 = atomic_load(&ctl->n_procs);
    wait_procs(w0, w1, 30000);
    run_step(R_CHECK, check_after_kills, 0, 60000);
    atomic_store(&ctl->stop_monitors, 1);
    wait_procs(mon0, mon1, 30000);
    run_step(R_CHECK, step_final, 0, 30000);
    printf("kill: workers=%d spawned=%d txns=%ld msgs=%ld enumerations=%ld kills-in-txn=%d "
           "warnings=%ld\n",
           n_workers, spawned, atomic_load(&ctl->n_txns), atomic_load(&ctl->n_msgs),
           atomic_load(&ctl->n_enum), kills_in_txn, atomic_load(&ctl->log_warns));
    printf("kill: %d killed while connecting, %ld of them had registered and were removed\n",
           uncertain, atomic_load(&ctl->r_removed_bad));
    printf("kill: clients=%d kills=%d removed=%ld messages=%ld errors=%ld check=%s\n", spawned + 2,
           kills, atomic_load(&ctl->r_removed), atomic_load(&ctl->r_messages),
           atomic_load(&ctl->errors), atomic_load(&ctl->errors) ? "FAILED" : "ok");
    return 0;
}

/* As "kill", but the workers run the watchdog scans themselves (a short
 * period) and so are also killed in the middle of removing others. */
static int test_kill_scanners(int n_workers)
{
    worker_period_ms = 50;
    return test_kill(n_workers);
}

/* ---------------------------------------------------------------------- */
/* storm: messages while the ODB lock is held and keys are written         */
/* ---------------------------------------------------------------------- */

#define N_POSTERS 4
#define N_LOCKERS 2
#define N_WRITERS 2

static int storm_per_poster;

static int child_poster(int i)
{
    char name[16];
    snprintf(name, sizeof name, "poster%d", i);
    struct au_client *c = connect_as(name, 1000, 0);
    if (!c)
        return 1;
    /* Bursts of 25, spread over the duration. */
    int64_t t0 = now_ms(), span = (int64_t)duration_s * 1000;
    int bursts = (storm_per_poster + 24) / 25;
    int j = 0;
    for (int b = 0; b < bursts && j < storm_per_poster; b++) {
        for (int k = 0; k < 25 && j < storm_per_poster; k++, j++) {
            int err = au_msg(c, MB_MSG_INFO, "storm %d %d", i, j);
            if (err) {
                report("au_msg: %s", ut_strerror(err));
                break;
            }
            atomic_store(&ctl->posted[i], j + 1);
        }
        int64_t due = t0 + span * (b + 1) / bursts;
        if (due > now_ms())
            sleep_ms((long)(due - now_ms()));
    }
    leave(c);
    return 0;
}

/* Long transactions that also post (the posts are deferred to the
 * commit); sometimes nested. */
static int child_locker(int i)
{
    int src = N_POSTERS + i;
    char name[16];
    snprintf(name, sizeof name, "locker%d", i);
    struct au_client *c = connect_as(name, 1000, 0);
    if (!c)
        return 1;
    struct odb *o = au_odb(c);
    unsigned seed = (unsigned)getpid();
    int64_t end = now_ms() + (int64_t)duration_s * 1000;
    int j = 0;
    while (now_ms() < end && j < MAX_TAGS) {
        int err = odb_txn_begin(o);
        if (err) {
            report("odb_txn_begin: %s (%s)", ut_strerror(err), odb_errmsg());
            break;
        }
        char path[64];
        snprintf(path, sizeof path, "/storm/l%d/v", i);
        err = set_i64(o, path, j);
        if (!err)
            err = au_msg(c, MB_MSG_INFO, "storm %d %d", src, j);
        j++;
        if (!err && rand_r(&seed) % 3 == 0 && j < MAX_TAGS) {
            /* Nested transaction with a post inside. */
            err = odb_txn_begin(o);
            if (!err)
                err = au_msg(c, MB_MSG_INFO, "storm %d %d", src, j);
            j++;
            if (!err)
                err = odb_txn_commit(o);
        }
        sleep_ms(1 + rand_r(&seed) % 3); /* holding the ODB lock */
        if (!err)
            err = set_i64(o, path, j);
        if (err) {
            report("locker: %s (%s)", ut_strerror(err), odb_errmsg());
            odb_txn_abort(o);
            break;
        }
        err = odb_txn_commit(o);
        if (err) {
            report("odb_txn_commit: %s", ut_strerror(err));
            break;
        }
        atomic_store(&ctl->posted[src], j);
        sleep_ms(rand_r(&seed) % 3);
    }
    leave(c);
    return 0;
}

static int child_writer(int i)
{
    char name[16];
    snprintf(name, sizeof name, "writer%d", i);
    struct au_client *c = connect_as(name, 1000, 0);
    if (!c)
        return 1;
    struct odb *o = au_odb(c);
    int64_t end = now_ms() + (int64_t)duration_s * 1000;
    for (int64_t v = 0; now_ms() < end; v++) {
        char path[64];
        snprintf(path, sizeof path, "/storm/k%d/v%d", i, (int)(v % 16));
        int err = set_i64(o, path, v);
        int64_t back = 0;
        if (!err)
            err = get_i64(o, path, &back);
        if (err || back != v) {
            report("writer: %s (%s), read %lld for %lld", ut_strerror(err), odb_errmsg(),
                   (long long)back, (long long)v);
            break;
        }
        atomic_fetch_add(&ctl->n_ops, 1);
        if (v % 64 == 0)
            sleep_ms(1);
    }
    leave(c);
    return 0;
}

/* Follows the ring live and ticks off every storm tag. */
static int child_reader(int arg)
{
    (void)arg;
    struct au_client *c = connect_as("reader", 1000, 0);
    if (!c)
        return 1;
    struct mb_msgring *ring = au_msgring(c);
    uint64_t after = mb_msg_last_seq(ring);
    atomic_fetch_add(&ctl->n_ready, 1);
    struct mb_msg *m = ut_calloc(64, sizeof *m);
    int64_t stop_seen = 0;
    while (m) {
        int err = mb_msg_wait(ring, after, 100);
        if (err && err != UT_ETIMEOUT) {
            report("mb_msg_wait: %s", ut_strerror(err));
            break;
        }
        size_t n = 0;
        uint64_t missed = 0;
        err = mb_msg_read(ring, after, m, 64, &n, &missed);
        if (err) {
            report("mb_msg_read: %s", ut_strerror(err));
            break;
        }
        atomic_fetch_add(&ctl->n_missed, (long)missed);
        for (size_t k = 0; k < n; k++) {
            int src, j;
            atomic_fetch_add(&ctl->n_read, 1);
            if (sscanf(m[k].text, "storm %d %d", &src, &j) == 2 && src >= 0 && src < MAX_SOURCES &&
                j >= 0 && j < MAX_TAGS) {
                if (atomic_fetch_add(&ctl->seen[src][j], 1) != 0)
                    atomic_fetch_add(&ctl->n_dup, 1);
            }
        }
        if (n)
            after = m[n - 1].seq;
        if (atomic_load(&ctl->stop)) {
            /* Everyone has left: the ring holds all there will be. */
            if (!stop_seen)
                stop_seen = now_ms();
            if (n == 0 && now_ms() - stop_seen > 300)
                break;
        }
    }
    ut_free(m);
    leave(c);
    return 0;
}

static int check_storm(int arg)
{
    (void)arg;
    struct au_client *c = connect_as("check", 100, 0);
    if (!c)
        return 1;
    wait_clients_gone(c, NULL, 5000);
    struct removal_scan s = {0};
    check_removals(c, &s); /* no removal, no ERROR message at all */
    struct mb_msg_stats ms;
    if (mb_msg_stats(au_msgring(c), &ms) == 0) {
        if (ms.n_lost)
            report("%llu deferred messages lost", (unsigned long long)ms.n_lost);
        printf("storm: ring posted=%llu deferred=%llu wakes=%llu lost=%llu\n",
               (unsigned long long)ms.n_posted, (unsigned long long)ms.n_deferred,
               (unsigned long long)ms.n_wakes, (unsigned long long)ms.n_lost);
    }
    check_odb(c);
    leave(c);
    return 0;
}

static int test_storm(int per_poster)
{
    storm_per_poster = per_poster > 0 ? per_poster : 250 * duration_s;
    if (storm_per_poster > MAX_TAGS)
        storm_per_poster = MAX_TAGS;
    if (!run_step(R_SETUP, step_setup, 0, 30000))
        return 1;
    int r0 = atomic_load(&ctl->n_procs);
    spawn(R_READER, child_reader, 0);
    int64_t end = now_ms() + 15000;
    while (atomic_load(&ctl->n_ready) < 1 && now_ms() < end) {
        reap_some();
        sleep_ms(5);
    }
    int p0 = atomic_load(&ctl->n_procs);
    for (int i = 0; i < N_POSTERS; i++)
        spawn(R_POSTER, child_poster, i);
    for (int i = 0; i < N_LOCKERS; i++)
        spawn(R_LOCKER, child_locker, i);
    for (int i = 0; i < N_WRITERS; i++)
        spawn(R_WRITER, child_writer, i);
    int p1 = atomic_load(&ctl->n_procs);
    int64_t t0 = now_ms();
    wait_procs(p0, p1, duration_s * 1000 + 30000);
    int64_t t_run = now_ms() - t0;
    atomic_store(&ctl->stop, 1);
    wait_procs(r0, r0 + 1, 30000);
    long expected = 0, missing = 0;
    for (int src = 0; src < N_POSTERS + N_LOCKERS; src++) {
        long n = atomic_load(&ctl->posted[src]);
        expected += n;
        for (long j = 0; j < n; j++) {
            if (atomic_load(&ctl->seen[src][j]) == 0) {
                if (missing++ < 5)
                    report("message 'storm %d %ld' never arrived", src, j);
            }
        }
    }
    if (missing)
        report("%ld of %ld storm messages never arrived", missing, expected);
    if (atomic_load(&ctl->n_dup))
        report("%ld storm messages arrived twice", atomic_load(&ctl->n_dup));
    if (atomic_load(&ctl->n_missed))
        report("the reader missed %ld messages", atomic_load(&ctl->n_missed));
    run_step(R_CHECK, check_storm, 0, 30000);
    long locker_msgs = 0;
    for (int i = 0; i < N_LOCKERS; i++)
        locker_msgs += atomic_load(&ctl->posted[N_POSTERS + i]);
    printf("storm: posters=%d lockers=%d writers=%d messages=%ld (%ld from inside the ODB lock) "
           "in %.1f s, writes=%ld\n",
           N_POSTERS, N_LOCKERS, N_WRITERS, expected, locker_msgs, (double)t_run / 1000.0,
           atomic_load(&ctl->n_ops));
    printf("storm: clients=%d messages=%ld arrived=%ld dup=%ld missed=%ld errors=%ld check=%s\n",
           N_POSTERS + N_LOCKERS + N_WRITERS + 1, expected, expected - missing,
           atomic_load(&ctl->n_dup), atomic_load(&ctl->n_missed), atomic_load(&ctl->errors),
           atomic_load(&ctl->errors) ? "FAILED" : "ok");
    return 0;
}

/* ---------------------------------------------------------------------- */
/* stop: a stopped lock holder is named in the waiters' timeouts           */
/* ---------------------------------------------------------------------- */

enum { PH_START, PH_HOLD, PH_PROBE, PH_RESUME, PH_END };

static void wait_phase(int phase, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    while (atomic_load(&ctl->phase) < phase && now_ms() < end)
        sleep_ms(2);
    if (atomic_load(&ctl->phase) < phase)
        report("phase %d never came", phase);
}

static int child_holder(int arg)
{
    (void)arg;
    struct au_client *c = connect_as("holder", 1000, 0);
    if (!c)
        return 1;
    ut_strlcpy(ctl->holder_name, au_client_name(c), sizeof ctl->holder_name);
    atomic_fetch_add(&ctl->n_ready, 1);
    wait_phase(PH_HOLD, 20000);
    struct odb *o = au_odb(c);
    int err = odb_txn_begin(o);
    if (!err)
        err = set_i64(o, "/stop/x", 1);
    if (err) {
        report("holder: %s (%s)", ut_strerror(err), odb_errmsg());
        leave(c);
        return 1;
    }
    atomic_store(&ctl->holding, 1);
    /* Stopped here by the supervisor, then continued. */
    wait_phase(PH_RESUME, 30000);
    err = set_i64(o, "/stop/x", 2);
    if (!err)
        err = odb_txn_commit(o);
    else
        odb_txn_abort(o);
    if (err)
        report("holder commit: %s (%s)", ut_strerror(err), odb_errmsg());
    atomic_store(&ctl->committed, 1);
    wait_phase(PH_END, 30000);
    leave(c);
    return 0;
}

static int child_waiter(int i)
{
    struct au_client *c = connect_as("waiter", 1000, LOCK_TIMEOUT);
    if (!c)
        return 1;
    atomic_fetch_add(&ctl->n_ready, 1);
    wait_phase(PH_PROBE, 30000);
    struct odb *o = au_odb(c);
    char holder[96];
    snprintf(holder, sizeof holder, "client '%s' pid %d", ctl->holder_name, (int)ctl->procs[0].pid);
    for (int n = 0; n < ctl->n_procs; n++)
        if (ctl->procs[n].role == R_HOLDER)
            snprintf(holder, sizeof holder, "client '%s' pid %d", ctl->holder_name,
                     (int)ctl->procs[n].pid);
    int64_t v = 0, t0 = now_ms();
    int err = get_i64(o, "/stop/x", &v);
    int64_t waited = now_ms() - t0;
    if (err != UT_ETIMEOUT) {
        report("waiter %d: odb_get while the holder is stopped returned %d (%s), not "
               "UT_ETIMEOUT",
               i, err, ut_strerror(err));
    } else {
        const char *lock_text = ut_lock_last_error();
        const char *odb_text = odb_errmsg();
        bool ok =
            strstr(lock_text, holder) && strstr(lock_text, "since") && strstr(odb_text, holder);
        if (!ok)
            report("waiter %d: the timeout does not name %s:\n    ut_lock_last_error: %s\n"
                   "    odb_errmsg: %s",
                   i, holder, lock_text, odb_text);
        else
            atomic_fetch_add(&ctl->named_ok, 1);
        if (i == 0)
            printf("stop: waiter got UT_ETIMEOUT after %lld ms: %s\n", (long long)waited,
                   lock_text);
        if (waited < LOCK_TIMEOUT - 10 || waited > 5 * LOCK_TIMEOUT + 1000)
            report("waiter %d: timed out after %lld ms with a %d ms timeout", i, (long long)waited,
                   LOCK_TIMEOUT);
    }
    /* Messages do not need the ODB lock. */
    t0 = now_ms();
    err = au_msg(c, MB_MSG_INFO, "waiter %d posts while the ODB holder is stopped", i);
    if (err || now_ms() - t0 > 1000)
        report("waiter %d: au_msg while the ODB is held: %s after %lld ms", i, ut_strerror(err),
               (long long)(now_ms() - t0));
    atomic_fetch_add(&ctl->timed_out, 1);
    wait_phase(PH_RESUME, 30000);
    /* After SIGCONT: the holder commits, then everybody goes on. */
    int64_t end = now_ms() + 10000;
    do {
        err = get_i64(o, "/stop/x", &v);
        if (err == 0 && v == 2)
            break;
        sleep_ms(5);
    } while (now_ms() < end);
    if (err || v != 2)
        report("waiter %d: after the holder resumed: %s, /stop/x = %lld", i, ut_strerror(err),
               (long long)v);
    char path[32];
    snprintf(path, sizeof path, "/stop/w%d", i);
    err = set_i64(o, path, i);
    if (err)
        report("waiter %d: write after resume: %s", i, ut_strerror(err));
    else
        atomic_fetch_add(&ctl->resumed, 1);
    wait_phase(PH_END, 30000);
    leave(c);
    return 0;
}

static bool process_stopped(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && (p[2] == 'T' || p[2] == 't');
}

static int check_stop(int arg)
{
    (void)arg;
    struct au_client *c = connect_as("check", 100, 0);
    if (!c)
        return 1;
    wait_clients_gone(c, NULL, 5000);
    struct removal_scan s = {0};
    s.ignore_error = "unresponsive"; /* a slow machine may report the stopped holder */
    check_removals(c, &s);
    int64_t v = 0;
    if (get_i64(au_odb(c), "/stop/x", &v) != 0 || v != 2)
        report("/stop/x = %lld after the holder committed", (long long)v);
    check_odb(c);
    leave(c);
    return 0;
}

static int test_stop(int n_waiters)
{
    if (n_waiters < 1 || n_waiters > 32)
        n_waiters = 3;
    atomic_store(&ctl->expect_log_errors, 1); /* the waiters' timeouts are logged */
    if (!run_step(R_SETUP, step_setup, 0, 30000))
        return 1;
    int p0 = atomic_load(&ctl->n_procs);
    int h = spawn(R_HOLDER, child_holder, 0);
    for (int i = 0; i < n_waiters; i++)
        spawn(R_WAITER, child_waiter, i);
    int p1 = atomic_load(&ctl->n_procs);
    int64_t end = now_ms() + 20000;
    while (atomic_load(&ctl->n_ready) < n_waiters + 1 && now_ms() < end) {
        reap_some();
        sleep_ms(5);
    }
    atomic_store(&ctl->phase, PH_HOLD);
    while (!atomic_load(&ctl->holding) && now_ms() < end)
        sleep_ms(2);
    pid_t hp = ctl->procs[h].pid;
    kill(hp, SIGSTOP);
    while (!process_stopped(hp) && now_ms() < end)
        sleep_ms(2);
    if (!process_stopped(hp))
        report("the holder did not stop");
    int64_t t_stop = now_ms();
    atomic_store(&ctl->phase, PH_PROBE);
    end = now_ms() + 20000;
    while (atomic_load(&ctl->timed_out) < n_waiters && now_ms() < end) {
        reap_some();
        sleep_ms(5);
    }
    /* Past the lock timeout several times over. */
    while (now_ms() - t_stop < (int64_t)4 * LOCK_TIMEOUT)
        sleep_ms(10);
    int64_t stopped_ms = now_ms() - t_stop;
    kill(hp, SIGCONT);
    atomic_store(&ctl->phase, PH_RESUME);
    end = now_ms() + 20000;
    while ((!atomic_load(&ctl->committed) || atomic_load(&ctl->resumed) < n_waiters) &&
           now_ms() < end) {
        reap_some();
        sleep_ms(5);
    }
    atomic_store(&ctl->phase, PH_END);
    wait_procs(p0, p1, 30000);
    run_step(R_CHECK, check_stop, 0, 30000);
    printf("stop: holder '%s' stopped %.1f s; lock timeouts logged=%ld\n", ctl->holder_name,
           (double)stopped_ms / 1000.0, atomic_load(&ctl->log_errors));
    printf("stop: waiters=%d timeouts=%d named=%d resumed=%d committed=%d errors=%ld check=%s\n",
           n_waiters, atomic_load(&ctl->timed_out), atomic_load(&ctl->named_ok),
           atomic_load(&ctl->resumed), atomic_load(&ctl->committed), atomic_load(&ctl->errors),
           atomic_load(&ctl->errors) ? "FAILED" : "ok");
    return 0;
}

/* ---------------------------------------------------------------------- */
/* fake: dead entries whose PID is alive                                    */
/* ---------------------------------------------------------------------- */

static int child_idle(int arg)
{
    (void)arg;
    while (!atomic_load(&ctl->stop_monitors))
        sleep_ms(20);
    return 0;
}

static int child_liar(int arg)
{
    (void)arg;
    struct au_client *c = connect_as("liar", 100, 0);
    if (!c)
        return 1;
    atomic_fetch_add(&ctl->n_ready, 1);
    while (!atomic_load(&ctl->stop_monitors))
        sleep_ms(20);
    if (au_client_removed(c))
        report("the live client 'liar' was removed");
    leave(c);
    return 0;
}

/* Writes a complete-looking /System/Clients/<slot> entry. */
static int write_fake(struct odb *o, uint32_t slot, const char *name, int32_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/System/Clients/%u", slot);
    struct odb_hkey e;
    int err = odb_txn_begin(o);
    if (err)
        return err;
    err = odb_create(o, ODB_ROOT, path, ODB_TYPE_DIR, 0, 0, &e);
    char buf[64] = {0};
    int64_t now = ut_wall_ns();
    ut_strlcpy(buf, name, 32);
    if (!err)
        err = odb_set(o, e, "Name", ODB_TYPE_STRING, buf, 32, 1, ODB_SET_CREATE);
    memset(buf, 0, sizeof buf);
    ut_strlcpy(buf, "localhost", sizeof buf);
    if (!err)
        err = odb_set(o, e, "Host", ODB_TYPE_STRING, buf, 64, 1, ODB_SET_CREATE);
    if (!err)
        err = odb_set(o, e, "PID", ODB_TYPE_INT32, &pid, sizeof pid, 1, ODB_SET_CREATE);
    if (!err)
        err = odb_set(o, e, "Slot", ODB_TYPE_UINT32, &slot, sizeof slot, 1, ODB_SET_CREATE);
    if (!err)
        err = odb_set(o, e, "Connect time", ODB_TYPE_INT64, &now, sizeof now, 1, ODB_SET_CREATE);
    if (!err)
        err = odb_set(o, e, "Last activity", ODB_TYPE_INT64, &now, sizeof now, 1, ODB_SET_CREATE);
    if (err) {
        odb_txn_abort(o);
        return err;
    }
    return odb_txn_commit(o);
}

static bool entry_exists(struct odb *o, uint32_t slot)
{
    char path[64];
    struct odb_hkey h;
    snprintf(path, sizeof path, "/System/Clients/%u", slot);
    return odb_find(o, ODB_ROOT, path, &h) == 0;
}

/* Counts removal messages naming `name`. */
struct name_count {
    const char *name;
    int n;
    int pid;
};

static void count_removed_name(const struct mb_msg *m, void *arg)
{
    struct name_count *nc = arg;
    char name[32];
    int pid = 0;
    unsigned slot = 0;
    if (m->type == MB_MSG_ERROR && sscanf(m->text, REMOVED_FMT, name, &pid, &slot) == 3 &&
        strcmp(name, nc->name) == 0) {
        nc->n++;
        nc->pid = pid;
    }
}

static int check_fake(int arg)
{
    (void)arg;
    struct au_client *c = connect_as("check", 1000, 0);
    if (!c)
        return 1;
    struct odb *o = au_odb(c);
    int idle_pid = 0, liar = -1;
    for (int i = 0; i < ctl->n_procs; i++) {
        if (ctl->procs[i].role == R_IDLE)
            idle_pid = ctl->procs[i].pid;
        if (ctl->procs[i].role == R_LIAR)
            liar = i;
    }
    /* Two free slots far from everybody's. */
    uint32_t mine = au_client_slot(c), s1 = UINT32_MAX, s2 = UINT32_MAX;
    for (uint32_t k = 1; k < 1024 && s2 == UINT32_MAX; k++) {
        uint32_t s = (mine + 512 + k) % 1024;
        bool taken = entry_exists(o, s);
        for (int i = 0; i < ctl->n_procs && !taken; i++)
            taken = atomic_load(&ctl->procs[i].slot) == s;
        if (taken)
            continue;
        if (s1 == UINT32_MAX)
            s1 = s;
        else
            s2 = s;
    }
    int err = write_fake(o, s1, "fake", idle_pid);
    if (!err)
        err = write_fake(o, s2, "fake-self", (int32_t)getpid());
    /* The live liar gets a PID that belongs to nobody. */
    if (!err && liar >= 0) {
        char path[64];
        int32_t dead = 999999;
        snprintf(path, sizeof path, "/System/Clients/%u/PID", atomic_load(&ctl->procs[liar].slot));
        err = odb_set(o, ODB_ROOT, path, ODB_TYPE_INT32, &dead, sizeof dead, 1, 0);
    }
    if (err) {
        report("writing the fake entries: %s (%s)", ut_strerror(err), odb_errmsg());
        leave(c);
        return 1;
    }
    int64_t t0 = now_ms();
    while ((entry_exists(o, s1) || entry_exists(o, s2)) && now_ms() - t0 < 5000)
        sleep_ms(5);
    int64_t latency = now_ms() - t0;
    if (entry_exists(o, s1) || entry_exists(o, s2))
        report("fake entries not removed after 5 s (slot %u: %d, slot %u: %d)", s1,
               entry_exists(o, s1), s2, entry_exists(o, s2));
    sleep_ms(500); /* several more scans */
    if (liar >= 0 && !entry_exists(o, atomic_load(&ctl->procs[liar].slot)))
        report("the live client 'liar' (wrong PID) was removed");
    if (kill(idle_pid, 0) != 0)
        report("the unrelated process %d died", idle_pid);
    struct name_count f = {"fake", 0, 0}, fs = {"fake-self", 0, 0}, l = {"liar", 0, 0};
    for_each_msg(au_msgring(c), count_removed_name, &f);
    for_each_msg(au_msgring(c), count_removed_name, &fs);
    for_each_msg(au_msgring(c), count_removed_name, &l);
    if (f.n != 1 || f.pid != idle_pid)
        report("%d removal messages for 'fake' (pid %d, wanted %d)", f.n, f.pid, idle_pid);
    if (fs.n != 1)
        report("%d removal messages for 'fake-self'", fs.n);
    if (l.n != 0)
        report("%d removal messages for the live 'liar'", l.n);
    check_odb(c);
    printf("fake: dead entries with live PIDs removed in %lld ms (watchdog period 100 ms)\n",
           (long long)latency);
    atomic_store(&ctl->r_removed, f.n + fs.n);
    leave(c);
    return 0;
}

static int test_fake(int arg)
{
    (void)arg;
    if (!run_step(R_SETUP, step_setup, 0, 30000))
        return 1;
    int p0 = atomic_load(&ctl->n_procs);
    spawn(R_IDLE, child_idle, 0);
    spawn(R_MONITOR, child_monitor, 0);
    spawn(R_LIAR, child_liar, 0);
    int p1 = atomic_load(&ctl->n_procs);
    int64_t end = now_ms() + 20000;
    while (atomic_load(&ctl->n_ready) < 2 && now_ms() < end) {
        reap_some();
        sleep_ms(5);
    }
    run_step(R_CHECK, check_fake, 0, 30000);
    atomic_store(&ctl->stop_monitors, 1);
    wait_procs(p0, p1, 30000);
    run_step(R_CHECK, step_final, 0, 30000);
    printf("fake: removed=%ld errors=%ld check=%s\n", atomic_load(&ctl->r_removed),
           atomic_load(&ctl->errors), atomic_load(&ctl->errors) ? "FAILED" : "ok");
    return 0;
}

/* ---------------------------------------------------------------------- */
/* watch: batches of changes under churn, the final state always seen      */
/* ---------------------------------------------------------------------- */

static int n_watch_writers = 3;

struct watcher {
    int k;               /* 0: au_dispatch; 1: au_watch_fd + poll */
    uint32_t tid;        /* the thread that dispatches */
    struct odb_hkey dir; /* /watched */
};

static void watcher_cb(struct au_client *c, struct odb_hkey key, void *arg)
{
    struct watcher *w = arg;
    if (ut_tid() != w->tid)
        report("watcher %d: callback in thread %u, not the dispatching thread %u", w->k, ut_tid(),
               w->tid);
    atomic_fetch_add(&ctl->callbacks[w->k], 1);
    if (key.idx == w->dir.idx && key.gen == w->dir.gen)
        atomic_fetch_add(&ctl->overflows[w->k], 1);
    for (int i = 0; i < n_watch_writers; i++) {
        char path[32];
        snprintf(path, sizeof path, "/watched/w%d", i);
        int64_t v = 0;
        int err = get_i64(au_odb(c), path, &v);
        if (err) {
            report("watcher %d: %s: %s", w->k, path, ut_strerror(err));
            continue;
        }
        long long before = atomic_load(&ctl->wseen[w->k][i]);
        if (v < before)
            report("watcher %d: %s went back from %lld to %lld", w->k, path, before, (long long)v);
        else
            atomic_store(&ctl->wseen[w->k][i], v);
    }
}

static int child_watcher(int k)
{
    char name[16];
    snprintf(name, sizeof name, "watcher%d", k);
    struct au_client *c = connect_as(name, 1000, 0);
    if (!c)
        return 1;
    struct watcher w = {k, ut_tid(), {0, 0}};
    uint32_t id;
    int err = odb_find(au_odb(c), ODB_ROOT, "/watched", &w.dir);
    if (!err)
        err = au_watch_add(c, "/watched", watcher_cb, &w, &id);
    int fd = -1;
    if (!err && k == 1) {
        fd = au_watch_fd(c);
        if (fd < 0)
            err = fd;
    }
    if (err) {
        report("watcher %d: %s (%s)", k, ut_strerror(err), odb_errmsg());
        leave(c);
        return 1;
    }
    atomic_fetch_add(&ctl->n_ready, 1);
    while (!atomic_load(&ctl->stop_monitors)) {
        int n;
        if (k == 0) {
            n = au_dispatch(c, 100);
        } else {
            struct pollfd pfd = {fd, POLLIN, 0};
            n = poll(&pfd, 1, 100);
            if (n < 0 && errno != EINTR) {
                report("poll: %s", strerror(errno));
                break;
            }
            if (n > 0) {
                uint64_t cnt;
                if (read(fd, &cnt, sizeof cnt) < 0 && errno != EAGAIN)
                    report("read(watch fd): %s", strerror(errno));
            }
            n = au_dispatch(c, 0);
        }
        if (n < 0) {
            report("watcher %d: au_dispatch: %s", k, ut_strerror(n));
            break;
        }
    }
    leave(c);
    return 0;
}

static int child_watch_writer(int i)
{
    char name[16], path[32];
    snprintf(name, sizeof name, "writer%d", i);
    snprintf(path, sizeof path, "/watched/w%d", i);
    struct au_client *c = connect_as(name, 1000, 0);
    if (!c)
        return 1;
    unsigned seed = (unsigned)getpid();
    int64_t end = now_ms() + (int64_t)duration_s * 1000;
    int64_t v = 0;
    while (now_ms() < end) {
        int b = 1 + rand_r(&seed) % 64;
        for (int k = 0; k < b; k++) {
            int err = set_i64(au_odb(c), path, ++v);
            if (err) {
                report("writer %d: %s (%s)", i, ut_strerror(err), odb_errmsg());
                leave(c);
                return 1;
            }
        }
        atomic_store(&ctl->written[i], v);
        /* Both watchers must see this batch's final value. */
        int64_t deadline = now_ms() + 10000;
        while ((atomic_load(&ctl->wseen[0][i]) < v || atomic_load(&ctl->wseen[1][i]) < v) &&
               now_ms() < deadline)
            sleep_ms(1);
        for (int k = 0; k < 2; k++)
            if (atomic_load(&ctl->wseen[k][i]) < v)
                report("writer %d: watcher %d saw %lld, not the batch's final %lld after 10 s", i,
                       k, (long long)atomic_load(&ctl->wseen[k][i]), (long long)v);
        atomic_fetch_add(&ctl->batches, 1);
        atomic_fetch_add(&ctl->changes, b);
        if (atomic_load(&ctl->errors))
            break;
    }
    leave(c);
    return 0;
}

/* A short-lived client that watches, writes, and leaves or is killed. */
static int child_churn(int arg)
{
    (void)arg;
    struct au_client *c = connect_as("churn", 1000, 0);
    if (!c)
        return 1;
    unsigned seed = (unsigned)getpid();
    uint32_t id;
    int err = au_watch_add(c, "/watched", watch_nop, NULL, &id);
    if (!err)
        err = au_watch_add(c, "/other", watch_nop, NULL, &id);
    char path[32];
    snprintf(path, sizeof path, "/other/p%d", (int)getpid() % 64);
    for (int k = 0; !err && k < 10; k++)
        err = set_i64(au_odb(c), path, k);
    if (err)
        report("churn client: %s (%s)", ut_strerror(err), odb_errmsg());
    sleep_ms(rand_r(&seed) % 100);
    if (!err && au_dispatch(c, 0) < 0)
        report("churn client: au_dispatch failed");
    leave(c);
    return 0;
}

static int check_watch(int arg)
{
    (void)arg;
    struct au_client *c = connect_as("check", 100, 0);
    if (!c)
        return 1;
    if (wait_clients_gone(c, NULL, 15000) < 0)
        report("clients left after the watch test");
    sleep_ms(300);
    struct removal_scan s = {0};
    long matched = check_removals(c, &s);
    atomic_store(&ctl->r_removed, matched);
    struct odb_hkey dir;
    uint32_t n_watch = 99;
    int err = odb_find(au_odb(c), ODB_ROOT, "/watched", &dir);
    if (!err)
        err = odb_watch_count(au_odb(c), dir, &n_watch);
    if (err || n_watch != 0)
        report("%u watches left on /watched (%s)", n_watch, ut_strerror(err));
    check_odb(c);
    leave(c);
    return 0;
}

static int test_watch(int writers)
{
    n_watch_writers = writers > 0 && writers <= MAX_WRITERS ? writers : 3;
    atomic_store(&ctl->quiet_warns, 1);
    if (!run_step(R_SETUP, step_setup, 0, 30000))
        return 1;
    int w0 = atomic_load(&ctl->n_procs);
    spawn(R_WATCHER, child_watcher, 0);
    spawn(R_WATCHER, child_watcher, 1);
    int w1 = atomic_load(&ctl->n_procs);
    int64_t end = now_ms() + 20000;
    while (atomic_load(&ctl->n_ready) < 2 && now_ms() < end) {
        reap_some();
        sleep_ms(5);
    }
    int p0 = atomic_load(&ctl->n_procs);
    for (int i = 0; i < n_watch_writers; i++)
        spawn(R_WRITER, child_watch_writer, i);
    int p1 = atomic_load(&ctl->n_procs);
    unsigned seed = (unsigned)getpid();
    int churned = 0, kills = 0;
    end = now_ms() + (int64_t)duration_s * 1000;
    while (now_ms() < end && atomic_load(&ctl->n_procs) < MAX_PROCS - 8) {
        reap_some();
        int n = atomic_load(&ctl->n_procs), live = 0;
        for (int i = p1; i < n; i++)
            live += running(i);
        if (live < 6 && spawn(R_CHURN, child_churn, 0) >= 0)
            churned++;
        sleep_ms(5 + rand_r(&seed) % 30);
        if (rand_r(&seed) % 3 == 0) {
            n = atomic_load(&ctl->n_procs);
            for (int i = n - 1; i >= p1; i--) {
                if (kill_proc(i, P_CONNECTED)) {
                    kills++;
                    break;
                }
            }
        }
        bool writers_done = true;
        for (int i = p0; i < p1; i++)
            writers_done = writers_done && !running(i);
        if (writers_done)
            break;
    }
    wait_procs(p0, p1, 30000);
    wait_procs(p1, atomic_load(&ctl->n_procs), 30000);
    atomic_store(&ctl->stop_monitors, 1);
    wait_procs(w0, w1, 30000);
    run_step(R_CHECK, check_watch, 0, 60000);
    long long final_ok = 0;
    for (int i = 0; i < n_watch_writers; i++)
        final_ok += atomic_load(&ctl->wseen[0][i]) == atomic_load(&ctl->written[i]) &&
                    atomic_load(&ctl->wseen[1][i]) == atomic_load(&ctl->written[i]);
    if (final_ok != n_watch_writers)
        report("final values not seen by both watchers for %lld of %d writers",
               n_watch_writers - final_ok, n_watch_writers);
    printf("watch: writers=%d batches=%ld changes=%ld callbacks=%ld/%ld overflows=%ld/%ld "
           "final=%s\n",
           n_watch_writers, atomic_load(&ctl->batches), atomic_load(&ctl->changes),
           atomic_load(&ctl->callbacks[0]), atomic_load(&ctl->callbacks[1]),
           atomic_load(&ctl->overflows[0]), atomic_load(&ctl->overflows[1]),
           final_ok == n_watch_writers ? "ok" : "LOST");
    printf("watch: clients=%d kills=%d removed=%ld batches=%ld final=%s errors=%ld check=%s\n",
           churned + n_watch_writers + 2, kills, atomic_load(&ctl->r_removed),
           atomic_load(&ctl->batches), final_ok == n_watch_writers ? "ok" : "LOST",
           atomic_load(&ctl->errors), atomic_load(&ctl->errors) ? "FAILED" : "ok");
    return 0;
}

/* ---------------------------------------------------------------------- */
/* term: SIGTERM stops a client blocked in a wait; it leaves cleanly        */
/* ---------------------------------------------------------------------- */

/* Blocked in au_dispatch (even) or mb_msg_wait (odd) until SIGTERM. */
static int child_term(int i)
{
    au_install_signal_handlers();
    struct au_client *c = connect_as("term", 200, 0);
    if (!c)
        return 1;
    uint32_t id;
    int err = au_watch_add(c, "/churn", watch_nop, NULL, &id);
    if (err)
        report("au_watch_add: %s", ut_strerror(err));
    atomic_fetch_add(&ctl->n_ready, 1);
    while (!au_should_stop()) {
        if (i % 2 == 0) {
            err = au_dispatch(c, 5000);
        } else {
            err = mb_msg_wait(au_msgring(c), mb_msg_last_seq(au_msgring(c)), 5000);
            if (err == UT_ETIMEOUT)
                err = 0;
        }
        if (err < 0 && err != UT_EINTR) {
            report("wait: %s", ut_strerror(err));
            break;
        }
    }
    /* A clean exit: the entry goes with the disconnect, no watchdog has
     * to remove it. */
    leave(c);
    return 0;
}

/* Holds the ODB lock most of the time, so the disconnects must wait. */
static int child_busy(int i)
{
    char name[16];
    snprintf(name, sizeof name, "busy%d", i);
    struct au_client *c = connect_as(name, 1000, 0);
    if (!c)
        return 1;
    struct odb *o = au_odb(c);
    atomic_fetch_add(&ctl->n_ready, 1);
    for (int64_t v = 0; !atomic_load(&ctl->stop_monitors); v++) {
        int err = odb_txn_begin(o);
        if (!err)
            err = set_i64(o, "/churn/busy", v);
        sleep_ms(3);
        if (!err)
            err = odb_txn_commit(o);
        else
            odb_txn_abort(o);
        if (err) {
            report("busy: %s (%s)", ut_strerror(err), odb_errmsg());
            break;
        }
    }
    leave(c);
    return 0;
}

static bool keep_busy(const char *name)
{
    return strncmp(name, "busy", 4) == 0;
}

static int check_term(int arg)
{
    (void)arg;
    struct au_client *c = connect_as("check", 1000, 0);
    if (!c)
        return 1;
    /* Everybody left by themselves: with a 1 s watchdog period here (and
     * 1 s for the busy clients), stale entries would still be there. */
    if (wait_clients_gone(c, keep_busy, 200) < 0)
        report("clients stopped by SIGTERM left their entries behind");
    struct removal_scan s = {0};
    check_removals(c, &s);
    atomic_store(&ctl->r_removed, s.n_removed);
    check_odb(c);
    leave(c);
    return 0;
}

static int test_term(int n)
{
    if (n < 1 || n > 200)
        n = 20;
    if (!run_step(R_SETUP, step_setup, 0, 30000))
        return 1;
    int b0 = atomic_load(&ctl->n_procs);
    for (int i = 0; i < 2; i++)
        spawn(R_LOCKER, child_busy, i);
    int b1 = atomic_load(&ctl->n_procs);
    int t0 = atomic_load(&ctl->n_procs);
    for (int i = 0; i < n; i++)
        spawn(R_CLIENT, child_term, i);
    int t1 = atomic_load(&ctl->n_procs);
    int64_t end = now_ms() + 30000;
    while (atomic_load(&ctl->n_ready) < n + 2 && now_ms() < end) {
        reap_some();
        sleep_ms(5);
    }
    sleep_ms(300);
    int64_t ts = now_ms();
    for (int i = t0; i < t1; i++)
        kill(ctl->procs[i].pid, SIGTERM);
    wait_procs(t0, t1, 10000);
    int64_t t_stop = now_ms() - ts;
    run_step(R_CHECK, check_term, 0, 30000);
    atomic_store(&ctl->stop_monitors, 1);
    wait_procs(b0, b1, 30000);
    run_step(R_CHECK, step_final, 0, 30000);
    printf("term: clients=%d stopped in %.2f s removed-by-watchdog=%ld errors=%ld check=%s\n", n,
           (double)t_stop / 1000.0, atomic_load(&ctl->r_removed), atomic_load(&ctl->errors),
           atomic_load(&ctl->errors) ? "FAILED" : "ok");
    return 0;
}

/* ---------------------------------------------------------------------- */
/* crash: the cleaning client dies at every crash point of a cleanup        */
/* ---------------------------------------------------------------------- */

static int child_victim(int arg)
{
    (void)arg;
    struct au_client *c = connect_flags("victim", 1000, 0, AU_CONNECT_NO_WATCHDOG_THREAD);
    if (!c)
        return 1;
    for (;;)
        pause(); /* killed by the supervisor */
}

/* Connects, then runs one watchdog pass (which removes the dead victim)
 * with the k-th crash point armed: SIGKILL there. arg 0: count the crash
 * points of the pass instead. */
static int child_cleaner(int k)
{
    struct au_client *c = connect_flags("cleaner", 10, 0, AU_CONNECT_NO_WATCHDOG_THREAD);
    if (!c)
        return 1;
    sleep_ms(15); /* this client's scan is due */
    struct proc *me = &ctl->procs[my_proc];
    me->killed = k > 0; /* dying at the crash point is the plan */
    ut_crash_point_arm(k > 0 ? k : LONG_MAX);
    int r = au_watchdog_run(c);
    long passed = ut_crash_point() - 1;
    ut_crash_point_arm(0);
    me->killed = 0;
    if (k == 0)
        atomic_store(&ctl->cleaner_points, (int)passed);
    if (r != 1)
        report("cleaner pass %d removed %d clients, expected the victim", k, r);
    leave(c);
    return 0;
}

struct crash_count {
    int victim_pid, cleaner_pid;
    int n_victim, n_cleaner;
};

static void count_crash_msg(const struct mb_msg *m, void *arg)
{
    struct crash_count *cc = arg;
    char name[32];
    int pid = 0;
    unsigned slot = 0;
    if (m->type != MB_MSG_ERROR || sscanf(m->text, REMOVED_FMT, name, &pid, &slot) != 3)
        return;
    cc->n_victim += pid == cc->victim_pid;
    cc->n_cleaner += pid == cc->cleaner_pid;
}

/* Cleans up after one round and checks its removal messages: one for the
 * victim whoever removed it, one for the cleaner if it died. */
static int check_crash_round(int k)
{
    struct au_client *c = connect_as("check", 20, 0);
    if (!c)
        return 1;
    wait_clients_gone(c, NULL, 5000);
    sleep_ms(30);
    const struct proc *v = &ctl->procs[atomic_load(&ctl->cur_victim)];
    const struct proc *s = &ctl->procs[atomic_load(&ctl->cur_cleaner)];
    struct crash_count cc = {v->pid, s->pid, 0, 0};
    for_each_msg(au_msgring(c), count_crash_msg, &cc);
    bool died = WIFSIGNALED(s->status);
    if (cc.n_victim != 1 || cc.n_cleaner != (died ? 1 : 0))
        report("cleaner killed at crash point %d of its pass: %d removal messages for the "
               "victim (want 1), %d for the %s cleaner (want %d)",
               k, cc.n_victim, cc.n_cleaner, died ? "dead" : "surviving", died ? 1 : 0);
    check_odb(c);
    leave(c);
    return 0;
}

static int test_crash(int stride)
{
    atomic_store(&ctl->quiet_warns, 1);
    if (!run_step(R_SETUP, step_setup, 0, 30000))
        return 1;
    int points = -1, rounds = 0, lost = 0;
    int64_t end = now_ms() + (int64_t)duration_s * 1000;
    for (int k = 0; k == 0 || (k <= points + 20 && now_ms() < end);) {
        int v = spawn(R_CLIENT, child_victim, 0);
        if (v < 0)
            break;
        int64_t deadline = now_ms() + 10000;
        while (atomic_load(&ctl->procs[v].state) == P_STARTING && now_ms() < deadline) {
            reap_some();
            sleep_ms(1);
        }
        if (!kill_proc(v, P_CONNECTED)) {
            report("victim did not connect");
            break;
        }
        wait_procs(v, v + 1, 10000);
        atomic_store(&ctl->cur_victim, v);
        long before = atomic_load(&ctl->errors);
        int s = spawn(R_CHURN, child_cleaner, k);
        atomic_store(&ctl->cur_cleaner, s);
        wait_procs(s, s + 1, 10000);
        run_step(R_CHECK, check_crash_round, k, 30000);
        lost += atomic_load(&ctl->errors) != before;
        if (k == 0) {
            points = atomic_load(&ctl->cleaner_points);
            printf("crash: one watchdog pass removing a dead client passes %d crash points\n",
                   points);
        }
        rounds++;
        k += k == 0 ? 1 : (stride > 0 ? stride : 1);
    }
    run_step(R_CHECK, step_final, 0, 30000);
    printf("crash: clients=%d points=%d rounds=%d rounds-failed=%d errors=%ld check=%s\n",
           2 * rounds, points, rounds, lost, atomic_load(&ctl->errors),
           atomic_load(&ctl->errors) ? "FAILED" : "ok");
    return 0;
}

/* ---------------------------------------------------------------------- */
/* main                                                                    */
/* ---------------------------------------------------------------------- */

static const struct {
    const char *name;
    int (*fn)(int n);
} tests[] = {
    {"connect", test_connect}, {"kill", test_kill},
    {"storm", test_storm},     {"stop", test_stop},
    {"fake", test_fake},       {"watch", test_watch},
    {"term", test_term},       {"kill-scanners", test_kill_scanners},
    {"crash", test_crash},
};

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: clients_churn connect|kill|storm|stop|fake|watch|term|crash "
                        "[DURATION_S] [N]\n");
        return 2;
    }
    int (*fn)(int) = NULL;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (strcmp(argv[1], tests[i].name) == 0) {
            fn = tests[i].fn;
            test_name = tests[i].name;
        }
    if (!fn) {
        fprintf(stderr, "clients_churn: unknown test '%s'\n", argv[1]);
        return 2;
    }
    duration_s = argc > 2 ? atoi(argv[2]) : 10;
    if (duration_s < 1)
        duration_s = 1;
    int n = argc > 3 ? atoi(argv[3]) : 0;

    ctl = mmap(NULL, sizeof *ctl, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (ctl == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    supervisor_pid = getpid();
    (void)signal(SIGPIPE, SIG_IGN);
    ut_log_set_sink(log_sink, NULL, UT_LOG_WARN);
    if (atexit(at_exit_cleanup) != 0)
        return 1;
    if (make_experiment(exp_dir, sizeof exp_dir) != 0)
        return 1;
    int64_t t0 = now_ms();
    int rc = fn(n);
    /* Nothing may be left running. */
    wait_procs(0, atomic_load(&ctl->n_procs), 30000);
    long errors = atomic_load(&ctl->errors);
    printf("%s: done in %.1f s, errors=%ld\n", test_name, (double)(now_ms() - t0) / 1000.0, errors);
    return rc || errors ? 1 : 0;
}
