/*
 * torture/odb_kill.c - random kill -9 of processes writing the ODB.
 *
 *   odb_kill [SHM_NAME|-] [DURATION_S] [WORKERS] [MAX_KILLS]
 *
 * Forks WORKERS processes (default 4) that attach to the ODB and run random
 * mutating operations: create, set (in place and resized), delete of keys
 * and whole subtrees, rename, link, copy, resize, listings, and two
 * invariant-keeping transactions (a pair of counters always equal, and
 * accounts whose sum never changes). Meanwhile this process SIGKILLs a
 * random worker every few milliseconds - half of the time one that has
 * announced it is inside a transaction, so mostly while it holds the ODB
 * lock - and starts a new one in its place. After DURATION_S seconds
 * (default 10) or MAX_KILLS kills (default: no limit), it stops the
 * workers, runs odb_check and the invariants, and prints
 *
 *   kills=<n> ops=<n> rollbacks=<n> check=ok
 *
 * Exit status 0 only when the check and the invariants hold and no worker
 * saw a return code outside the set the operation allows for the race.
 * SHM_NAME "-" (the default) creates a private segment, removed at the end;
 * a given name is attached to, or created (and then removed) if missing.
 * Everything is bounded: workers have an alarm(), every wait a deadline.
 */
#include "odb/odb.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS   64
#define N_ACCOUNTS    8
#define ACCOUNT_START 1000
#define STOP_WAIT_MS  20000

/* Shared between this process and its workers (anonymous shared map). */
struct ctl {
    atomic_int stop;
    atomic_ulong ops;
    atomic_ulong unexpected;
    atomic_flag msg_taken;
    char msg[512];
    atomic_int in_txn[MAX_WORKERS];
};

static struct ctl *ctl;
static const char *shm_name;

static int64_t now_ms(void)
{
    return ut_now_ns() / 1000000;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Only errors are worth printing: recovery warnings come by the hundred. */
static void log_sink(enum ut_log_level level, const char *msg, void *arg)
{
    (void)arg;
    if (level >= UT_LOG_ERROR)
        (void)fprintf(stderr, "odb_kill[%d] error: %s\n", (int)getpid(), msg);
}

/* ---------------------------------------------------------------------- */
/* Workers                                                                 */
/* ---------------------------------------------------------------------- */

static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...)
{
    atomic_fetch_add(&ctl->unexpected, 1);
    char buf[sizeof ctl->msg];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    (void)fprintf(stderr, "odb_kill worker %d: %s\n", (int)getpid(), buf);
    if (!atomic_flag_test_and_set(&ctl->msg_taken))
        memcpy(ctl->msg, buf, sizeof buf);
}

static bool allowed(int err)
{
    return err == 0 || err == ODB_ENOKEY || err == ODB_EEXIST || err == ODB_ESTALE ||
           err == ODB_ENOTEMPTY;
}

/* Checks a return code; false (after reporting) when it is not allowed. */
static bool expect(int err, const char *what, int line)
{
    if (allowed(err))
        return true;
    report("line %d: %s: %d (%s): %s", line, what, err, ut_strerror(err), odb_errmsg());
    return false;
}
#define EXPECT(err, what) expect((err), (what), __LINE__)

/* Paths name their type, so races give no ODB_ETYPE / ODB_ENOTDIR:
 * /w/d<D>/k0..7 INT32 arrays, k8..11 strings, k12..15 directories of
 * INT32 c0..c5. */
static void rnd_path(char *buf, size_t size, unsigned *seed, int *kind)
{
    int d = rand_r(seed) % 4, k = rand_r(seed) % 16;
    *kind = k < 8 ? 0 : k < 12 ? 1 : 2;
    if (*kind < 2)
        (void)snprintf(buf, size, "/w/d%d/k%d", d, k);
    else
        (void)snprintf(buf, size, "/w/d%d/k%d/c%d", d, k, rand_r(seed) % 6);
}

static int rnd_set(struct odb *o, const char *path, int kind, unsigned *seed, unsigned flags)
{
    if (kind == 1) {
        char s[200];
        size_t len = (size_t)(rand_r(seed) % 190);
        memset(s, 'a' + rand_r(seed) % 26, len);
        s[len] = '\0';
        return odb_set(o, ODB_ROOT, path, ODB_TYPE_STRING, s, len + 1, 1, flags);
    }
    int32_t v[16];
    uint32_t n = kind == 0 ? 1 + (uint32_t)(rand_r(seed) % 16) : 1;
    for (uint32_t i = 0; i < n; i++)
        v[i] = rand_r(seed);
    return odb_set(o, ODB_ROOT, path, ODB_TYPE_INT32, v, n * sizeof v[0], n, flags);
}

static int get_i64(struct odb *o, const char *path, int64_t *v)
{
    size_t size = sizeof *v;
    return odb_get(o, ODB_ROOT, path, ODB_TYPE_INT64, v, &size);
}

static int set_i64(struct odb *o, const char *path, int64_t v)
{
    return odb_set(o, ODB_ROOT, path, ODB_TYPE_INT64, &v, sizeof v, 1, 0);
}

/* The pair /inv/a == /inv/b, both bumped in one transaction. */
static bool op_pair(struct odb *o)
{
    int64_t a = 0, b = 0;
    int err = get_i64(o, "/inv/a", &a);
    if (!err)
        err = get_i64(o, "/inv/b", &b);
    if (!err && a != b) {
        report("invariant: /inv/a = %lld but /inv/b = %lld", (long long)a, (long long)b);
        return false;
    }
    if (!err)
        err = set_i64(o, "/inv/a", a + 1);
    if (!err)
        err = set_i64(o, "/inv/b", b + 1);
    return err == 0 || EXPECT(err, "pair");
}

/* Moves an amount between two accounts; the sum stays the same. */
static bool op_transfer(struct odb *o, unsigned *seed)
{
    int64_t acct[N_ACCOUNTS], sum = 0;
    for (int i = 0; i < N_ACCOUNTS; i++) {
        char path[32];
        (void)snprintf(path, sizeof path, "/inv/acct%d", i);
        int err = get_i64(o, path, &acct[i]);
        if (err)
            return EXPECT(err, "read account");
        sum += acct[i];
    }
    if (sum != (int64_t)N_ACCOUNTS * ACCOUNT_START) {
        report("invariant: accounts sum to %lld", (long long)sum);
        return false;
    }
    int from = rand_r(seed) % N_ACCOUNTS, to = rand_r(seed) % N_ACCOUNTS;
    int64_t amount = rand_r(seed) % 50;
    char pf[32], pt[32];
    (void)snprintf(pf, sizeof pf, "/inv/acct%d", from);
    (void)snprintf(pt, sizeof pt, "/inv/acct%d", to);
    int err = set_i64(o, pf, acct[from] - amount);
    if (!err)
        err = set_i64(o, pt, (from == to ? acct[from] - amount : acct[to]) + amount);
    return err == 0 || EXPECT(err, "transfer");
}

/* One random operation. Returns false on an unexpected result. */
static bool one_op(struct odb *o, unsigned *seed, int slot)
{
    char path[128];
    int kind, err;
    rnd_path(path, sizeof path, seed, &kind);
    int r = rand_r(seed) % 100;
    if (r < 12) {
        enum odb_type t = kind == 1 ? ODB_TYPE_STRING : ODB_TYPE_INT32;
        err = odb_create(o, ODB_ROOT, path, t, 1 + (uint32_t)(rand_r(seed) % 3),
                         (uint32_t)(8 + rand_r(seed) % 64), NULL);
        return EXPECT(err, "create");
    }
    if (r < 35) {
        unsigned flags = rand_r(seed) % 2 ? ODB_SET_CREATE : 0;
        return EXPECT(rnd_set(o, path, kind, seed, flags), "set");
    }
    if (r < 45)
        return EXPECT(odb_delete(o, ODB_ROOT, path, false), "delete");
    if (r < 50) {
        char dir[32];
        int d = rand_r(seed) % 4;
        if (rand_r(seed) % 3)
            (void)snprintf(dir, sizeof dir, "/w/d%d/k%d", d, 12 + rand_r(seed) % 4);
        else
            (void)snprintf(dir, sizeof dir, "/w/d%d", d);
        return EXPECT(odb_delete(o, ODB_ROOT, dir, rand_r(seed) % 2), "delete dir");
    }
    if (r < 58) {
        /* Listing, and reads through the listed handles. */
        char dir[32];
        (void)snprintf(dir, sizeof dir, "/w/d%d", rand_r(seed) % 4);
        struct odb_hkey h;
        err = odb_find(o, ODB_ROOT, dir, &h);
        if (err)
            return EXPECT(err, "find");
        struct odb_dirent *ents;
        size_t n;
        err = odb_dir_list(o, h, &ents, &n);
        if (err)
            return EXPECT(err, "dir_list");
        bool good = true;
        for (size_t i = 0; i < n && good; i++) {
            if (ents[i].type == ODB_TYPE_DIR)
                continue;
            char buf[1024];
            size_t size = sizeof buf;
            good = EXPECT(odb_get(o, ents[i].key, NULL, ents[i].type, buf, &size), "get");
        }
        odb_dirents_free(ents);
        return good;
    }
    if (r < 62) {
        /* Resize an array through its handle. */
        struct odb_hkey h;
        char p[32];
        (void)snprintf(p, sizeof p, "/w/d%d/k%d", rand_r(seed) % 4, rand_r(seed) % 8);
        err = odb_find(o, ODB_ROOT, p, &h);
        if (!err)
            err = odb_resize(o, h, 1 + (uint32_t)(rand_r(seed) % 40));
        return EXPECT(err, "resize");
    }
    if (r < 66) {
        /* Rename a k12..15 directory to another such name. */
        struct odb_hkey h;
        char p[32], name[8];
        int d = rand_r(seed) % 4;
        (void)snprintf(p, sizeof p, "/w/d%d/k%d", d, 12 + rand_r(seed) % 4);
        (void)snprintf(name, sizeof name, "k%d", 12 + rand_r(seed) % 4);
        err = odb_find(o, ODB_ROOT, p, &h);
        if (!err)
            err = odb_rename(o, h, name);
        return EXPECT(err, "rename");
    }
    if (r < 70) {
        /* Copy a k12..15 directory to /w/copies/<n> (then maybe drop it). */
        struct odb_hkey h;
        char p[32], dst[32];
        (void)snprintf(p, sizeof p, "/w/d%d/k%d", rand_r(seed) % 4, 12 + rand_r(seed) % 4);
        (void)snprintf(dst, sizeof dst, "/w/copies/c%d", rand_r(seed) % 8);
        err = odb_find(o, ODB_ROOT, p, &h);
        if (!err)
            err = odb_copy(o, h, ODB_ROOT, dst);
        if (!EXPECT(err, "copy"))
            return false;
        return EXPECT(odb_delete(o, ODB_ROOT, dst, true), "delete copy");
    }
    if (r < 73) {
        char p[32], target[32];
        (void)snprintf(p, sizeof p, "/w/links/l%d", rand_r(seed) % 8);
        (void)snprintf(target, sizeof target, "/w/d%d", rand_r(seed) % 4);
        err = odb_link(o, ODB_ROOT, p, target);
        if (!err && rand_r(seed) % 2)
            err = odb_delete(o, ODB_ROOT, p, false);
        return EXPECT(err, "link");
    }
    if (r < 76) {
        /* A subtree of 40 keys built and deleted whole (reclamation). */
        char base[32];
        (void)snprintf(base, sizeof base, "/w/tree%d", slot);
        bool good = EXPECT(odb_delete(o, ODB_ROOT, base, true), "delete old tree");
        for (int i = 0; i < 40 && good; i++) {
            char p[64];
            (void)snprintf(p, sizeof p, "%s/s%d/v%d", base, i % 5, i);
            good = EXPECT(rnd_set(o, p, i % 2, seed, ODB_SET_CREATE), "tree set");
        }
        return good && EXPECT(odb_delete(o, ODB_ROOT, base, true), "delete tree");
    }
    /* Transactions: several sets, or an invariant-keeping one. */
    atomic_store(&ctl->in_txn[slot], 1);
    err = odb_txn_begin(o);
    if (err) {
        atomic_store(&ctl->in_txn[slot], 0);
        return EXPECT(err, "txn_begin");
    }
    bool good;
    if (r < 84) {
        good = op_pair(o);
    } else if (r < 92) {
        good = op_transfer(o, seed);
    } else {
        good = EXPECT(rnd_set(o, path, kind, seed, ODB_SET_CREATE), "txn set");
        for (int i = 0; i < 4 && good; i++) {
            rnd_path(path, sizeof path, seed, &kind);
            good = EXPECT(rnd_set(o, path, kind, seed, rand_r(seed) % 2 ? ODB_SET_CREATE : 0),
                          "txn set");
        }
    }
    if (!good || rand_r(seed) % 8 == 0)
        odb_txn_abort(o);
    else
        good = EXPECT(odb_txn_commit(o), "txn commit");
    atomic_store(&ctl->in_txn[slot], 0);
    return good;
}

static int worker_main(int slot, unsigned seed, int alarm_s)
{
    alarm((unsigned)alarm_s);
    ut_log_set_sink(log_sink, NULL, UT_LOG_ERROR);
    struct odb *o;
    int err = odb_open(shm_name, 0, NULL, &o);
    if (err) {
        report("odb_open: %s", ut_strerror(err));
        return 2;
    }
    while (!atomic_load(&ctl->stop)) {
        if (!one_op(o, &seed, slot))
            return 2;
        atomic_fetch_add(&ctl->ops, 1);
    }
    odb_close(o);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* The killer                                                              */
/* ---------------------------------------------------------------------- */

static pid_t start_worker(int slot, unsigned seed, int alarm_s)
{
    (void)fflush(stdout);
    (void)fflush(stderr);
    pid_t pid = fork();
    if (pid == 0)
        _exit(worker_main(slot, seed, alarm_s));
    return pid;
}

/* Waits for pid until deadline_ms (absolute); -1 when it overran (then it
 * is killed and reaped). */
static int wait_until(pid_t pid, int64_t deadline_ms)
{
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1;
        if (now_ms() >= deadline_ms) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            return -1;
        }
        sleep_us(1000);
    }
}

static int setup_tree(struct odb *o)
{
    int64_t zero = 0, start = ACCOUNT_START;
    int err = odb_txn_begin(o);
    if (err)
        return err;
    err = odb_set(o, ODB_ROOT, "/inv/a", ODB_TYPE_INT64, &zero, sizeof zero, 1, ODB_SET_CREATE);
    if (!err)
        err = odb_set(o, ODB_ROOT, "/inv/b", ODB_TYPE_INT64, &zero, sizeof zero, 1, ODB_SET_CREATE);
    for (int i = 0; i < N_ACCOUNTS && !err; i++) {
        char path[32];
        (void)snprintf(path, sizeof path, "/inv/acct%d", i);
        err = odb_set(o, ODB_ROOT, path, ODB_TYPE_INT64, &start, sizeof start, 1, ODB_SET_CREATE);
    }
    for (int d = 0; d < 4 && !err; d++) {
        char path[32];
        (void)snprintf(path, sizeof path, "/w/d%d", d);
        err = odb_create(o, ODB_ROOT, path, ODB_TYPE_DIR, 0, 0, NULL);
        if (err == ODB_EEXIST)
            err = 0;
    }
    if (err) {
        odb_txn_abort(o);
        return err;
    }
    return odb_txn_commit(o);
}

/* The invariants, checked once more at the end. */
static bool final_invariants(struct odb *o)
{
    int64_t a = -1, b = -2, sum = 0;
    if (get_i64(o, "/inv/a", &a) || get_i64(o, "/inv/b", &b) || a != b) {
        (void)fprintf(stderr, "odb_kill: final /inv/a = %lld, /inv/b = %lld\n", (long long)a,
                      (long long)b);
        return false;
    }
    for (int i = 0; i < N_ACCOUNTS; i++) {
        char path[32];
        int64_t v = 0;
        (void)snprintf(path, sizeof path, "/inv/acct%d", i);
        if (get_i64(o, path, &v))
            return false;
        sum += v;
    }
    if (sum != (int64_t)N_ACCOUNTS * ACCOUNT_START) {
        (void)fprintf(stderr, "odb_kill: final account sum %lld\n", (long long)sum);
        return false;
    }
    return true;
}

static int usage(void)
{
    (void)fprintf(stderr, "usage: odb_kill [SHM_NAME|-] [DURATION_S] [WORKERS] [MAX_KILLS]\n");
    return 2;
}

int main(int argc, char **argv)
{
    char own_name[128];
    const char *name_arg = argc > 1 ? argv[1] : "-";
    int duration_s = argc > 2 ? atoi(argv[2]) : 10;
    int n_workers = argc > 3 ? atoi(argv[3]) : 4;
    long max_kills = argc > 4 ? atol(argv[4]) : 0;
    if (argc > 5 || duration_s < 1 || duration_s > 24 * 3600 || n_workers < 1 ||
        n_workers > MAX_WORKERS || max_kills < 0)
        return usage();
    if (strcmp(name_arg, "-") == 0) {
        (void)snprintf(own_name, sizeof own_name, "/aurum-torture-kill-%d", (int)getpid());
        shm_name = own_name;
    } else {
        shm_name = name_arg;
    }
    ut_crash_point_arm(0);
    ut_log_set_sink(log_sink, NULL, UT_LOG_ERROR);

    ctl = mmap(NULL, sizeof *ctl, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (ctl == MAP_FAILED) {
        perror("odb_kill: mmap");
        return 1;
    }
    atomic_flag_clear(&ctl->msg_taken);

    struct odb_params params = {.size_bytes = 8u << 20, .max_keys = 8192};
    struct odb *odb;
    bool created = false; /* somebody else's ODB is kept at the end */
    int err = odb_open(shm_name, 0, &params, &odb);
    if (err == UT_ENOENT || err == -ENOENT) {
        err = odb_open(shm_name, ODB_OPEN_CREATE, &params, &odb);
        created = err == 0;
    }
    if (err) {
        (void)fprintf(stderr, "odb_kill: odb_open(%s): %s\n", shm_name, ut_strerror(err));
        return 1;
    }
    struct odb_stats st0;
    err = setup_tree(odb);
    if (err) {
        (void)fprintf(stderr, "odb_kill: setup: %s: %s\n", ut_strerror(err), odb_errmsg());
        odb_close(odb);
        if (created)
            odb_destroy(shm_name);
        return 1;
    }
    odb_stats(odb, &st0);

    unsigned seed = (unsigned)ut_now_ns() ^ (unsigned)getpid();
    int alarm_s = duration_s + 120;
    pid_t pids[MAX_WORKERS];
    for (int i = 0; i < n_workers; i++)
        pids[i] = start_worker(i, seed + 7919u * (unsigned)i, alarm_s);

    int64_t start = now_ms(), deadline = start + (int64_t)duration_s * 1000;
    /* With a kill budget: one kill every ~20 ms until it is spent (the
     * duration is then only a bound); else one every ~4 ms. */
    long pace_us = max_kills ? 20000 : 4000;
    unsigned long kills = 0, restarts = 0, failed_workers = 0;
    while (now_ms() < deadline && (max_kills == 0 || (long)kills < max_kills) &&
           atomic_load(&ctl->unexpected) == 0) {
        sleep_us(pace_us / 2 + rand_r(&seed) % (unsigned)(pace_us + 1));
        /* Half of the time, prefer a worker inside a transaction. */
        int victim = rand_r(&seed) % n_workers;
        if (rand_r(&seed) % 2) {
            for (int j = 0; j < n_workers; j++) {
                int c = (victim + j) % n_workers;
                if (atomic_load(&ctl->in_txn[c])) {
                    victim = c;
                    break;
                }
            }
        }
        kill(pids[victim], SIGKILL);
        int status = wait_until(pids[victim], now_ms() + STOP_WAIT_MS);
        if (status == -1 || !WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
            (void)fprintf(stderr, "odb_kill: worker %d ended with status 0x%x before the kill\n",
                          victim, status);
            failed_workers++;
        }
        atomic_store(&ctl->in_txn[victim], 0);
        kills++;
        pids[victim] = start_worker(victim, seed + (unsigned)kills * 104729u, alarm_s);
        restarts++;
    }

    atomic_store(&ctl->stop, 1);
    int64_t stop_deadline = now_ms() + STOP_WAIT_MS;
    for (int i = 0; i < n_workers; i++) {
        int status = wait_until(pids[i], stop_deadline);
        if (status == -1) {
            (void)fprintf(stderr, "odb_kill: worker %d did not stop within %d ms\n", i,
                          STOP_WAIT_MS);
            failed_workers++;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            (void)fprintf(stderr, "odb_kill: worker %d exited with status 0x%x\n", i, status);
            failed_workers++;
        }
    }

    char check_report[1024] = "";
    int check = odb_check(odb, check_report, sizeof check_report);
    bool inv = check == 0 && final_invariants(odb);
    struct odb_stats st;
    memset(&st, 0, sizeof st);
    odb_stats(odb, &st);
    unsigned long unexpected = atomic_load(&ctl->unexpected);
    printf("workers=%d duration=%.1fs restarts=%lu owner_died=%llu changes=%llu keys=%u\n",
           n_workers, (double)(now_ms() - start) / 1000.0, restarts,
           (unsigned long long)(st.lock_owner_died - st0.lock_owner_died),
           (unsigned long long)(st.n_changes - st0.n_changes), st.n_keys);
    printf("kills=%lu ops=%lu rollbacks=%llu check=%s\n", kills, atomic_load(&ctl->ops),
           (unsigned long long)(st.n_rollbacks - st0.n_rollbacks), check == 0 ? "ok" : "FAILED");
    if (check)
        (void)fprintf(stderr, "odb_kill: odb_check: %s: %s\n", ut_strerror(check), check_report);
    if (unexpected)
        (void)fprintf(stderr, "odb_kill: %lu unexpected results; first: %s\n", unexpected,
                      ctl->msg);
    odb_close(odb);
    if (created)
        odb_destroy(shm_name);
    return check == 0 && inv && unexpected == 0 && failed_workers == 0 ? 0 : 1;
}
