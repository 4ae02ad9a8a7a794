/*
 * tests/odb/test_multiproc.c - several real processes on one real ODB
 * segment.
 *
 * - random create/set/delete/enumerate by 4 processes under shared
 *   directories: every return code is one the API allows for the race, and
 *   afterwards the integrity check passes and the key count matches a walk;
 * - MIDAS failure mode 1: processes enumerate /System/Clients and read each
 *   entry's Name through the listed handle while others create and delete
 *   clients: a read gives the right name or ODB_ESTALE/ODB_ENOKEY, never
 *   garbage or a type error, and "create if missing" through a stale handle
 *   gives ODB_ESTALE and resurrects nothing;
 * - a directory listing is one point in time: a deleter removes entries in
 *   order (then recreates them in order), recording its progress in the
 *   same transaction, and every listing is exactly the expected suffix
 *   (then prefix).
 *
 * Children never use cmocka asserts (they would longjmp into the child's
 * copy of the runner); they print what went wrong and exit non-zero. Every
 * child has an alarm() and the parent waits with a deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "odb/odb.h"
#include "tests/odb/fixture.h"

#define CHILD_ALARM_S 120
#define CHILD_WAIT_MS 120000
#define MAX_CHILDREN  8

/* ---------------------------------------------------------------------- */
/* Helpers                                                                 */
/* ---------------------------------------------------------------------- */

#define OK(e) ok_at((e), #e, __FILE__, __LINE__)
static void ok_at(int err, const char *what, const char *file, int line)
{
    if (err) {
        print_error("%s:%d: %s = %d (%s): %s\n", file, line, what, err, ut_strerror(err),
                    odb_errmsg());
        _fail(file, line);
    }
}

static void log_sink(enum ut_log_level level, const char *msg, void *arg)
{
    (void)arg;
    if (level >= UT_LOG_ERROR)
        (void)fprintf(stderr, "aurum[%d] error: %s\n", (int)getpid(), msg);
}

struct fx {
    char name[128];
    struct odb *odb;
    pid_t pids[MAX_CHILDREN];
    int n_pids;
    int go[2]; /* start barrier: children wait for a byte each */
};

static int fx_setup(void **state)
{
    static unsigned counter;
    struct fx *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    const char *id = getenv("AURUM_TEST_ID");
    (void)snprintf(fx->name, sizeof fx->name, "/aurum-tmproc-%s-%d-%u", id ? id : "x",
                   (int)getpid(), ++counter);
    struct odb_params p = {.size_bytes = 4u << 20, .max_keys = 4096, .lock_timeout_ms = 20000};
    int err = odb_open(fx->name, ODB_OPEN_CREATE, &p, &fx->odb);
    if (err) {
        print_error("odb_open(%s): %s\n", fx->name, ut_strerror(err));
        free(fx);
        return -1;
    }
    if (pipe(fx->go) != 0) {
        odb_close(fx->odb);
        odb_destroy(fx->name);
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *fx = *state;
    if (!fx)
        return 0;
    for (int i = 0; i < fx->n_pids; i++) {
        if (fx->pids[i] > 0) {
            kill(fx->pids[i], SIGKILL);
            while (waitpid(fx->pids[i], NULL, 0) < 0 && errno == EINTR)
                ;
        }
    }
    close(fx->go[0]);
    close(fx->go[1]);
    odb_close(fx->odb);
    odb_destroy(fx->name);
    free(fx);
    return 0;
}

typedef int (*child_fn)(const char *shm_name, int idx);

static void spawn(struct fx *fx, child_fn fn, int idx)
{
    assert_true(fx->n_pids < MAX_CHILDREN);
    (void)fflush(stdout);
    (void)fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(CHILD_ALARM_S);
        ut_log_set_sink(log_sink, NULL, UT_LOG_ERROR);
        struct pollfd p = {.fd = fx->go[0], .events = POLLIN};
        char c;
        if (poll(&p, 1, CHILD_WAIT_MS) != 1 || read(fx->go[0], &c, 1) != 1)
            _exit(9);
        _exit(fn(fx->name, idx));
    }
    fx->pids[fx->n_pids++] = pid;
}

/* Releases every spawned child at once. */
static void start_all(struct fx *fx)
{
    for (int i = 0; i < fx->n_pids; i++)
        assert_int_equal(write(fx->go[1], "g", 1), 1);
}

/* Waits for every child; fails the test unless all exited 0. */
static void wait_all(struct fx *fx)
{
    int bad = 0;
    for (int i = 0; i < fx->n_pids; i++) {
        int st = tfx_wait_child(fx->pids[i], CHILD_WAIT_MS);
        fx->pids[i] = -1;
        if (st == -1) {
            print_error("child %d: did not finish within %d ms\n", i, CHILD_WAIT_MS);
            bad++;
        } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            print_error("child %d: status 0x%x (exit %d, signal %d)\n", i, st,
                        WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
            bad++;
        }
    }
    fx->n_pids = 0;
    assert_int_equal(bad, 0);
}

static void assert_check_ok(struct odb *o)
{
    char report[1024];
    int err = odb_check(o, report, sizeof report);
    if (err)
        print_error("odb_check: %s: %s\n", ut_strerror(err), report);
    assert_int_equal(err, 0);
}

/* Keys below dir (not counting dir itself), by a walk of listings. */
static uint32_t count_keys(struct odb *o, struct odb_hkey dir, int depth)
{
    assert_true(depth < 64);
    struct odb_dirent *ents;
    size_t n;
    OK(odb_dir_list(o, dir, &ents, &n));
    uint32_t total = (uint32_t)n;
    for (size_t i = 0; i < n; i++)
        if (ents[i].type == ODB_TYPE_DIR)
            total += count_keys(o, ents[i].key, depth + 1);
    odb_dirents_free(ents);
    return total;
}

static bool allowed(int err, const int *ok, size_t n_ok)
{
    for (size_t i = 0; i < n_ok; i++)
        if (err == ok[i])
            return true;
    return false;
}

/* In a child: returns false (after printing) when err is not allowed. */
#define EXPECT(err, what, ...)                                                                     \
    expect_at((err), (what), __LINE__, (const int[]){__VA_ARGS__},                                 \
              sizeof((const int[]){__VA_ARGS__}) / sizeof(int))
static bool expect_at(int err, const char *what, int line, const int *ok, size_t n_ok)
{
    if (allowed(err, ok, n_ok))
        return true;
    (void)fprintf(stderr, "child %d: line %d: %s: unexpected %d (%s): %s\n", (int)getpid(), line,
                  what, err, ut_strerror(err), odb_errmsg());
    return false;
}

static struct odb *child_open(const char *shm_name)
{
    struct odb *o = NULL;
    int err = odb_open(shm_name, 0, NULL, &o);
    if (err) {
        (void)fprintf(stderr, "child %d: odb_open: %s\n", (int)getpid(), ut_strerror(err));
        return NULL;
    }
    return o;
}

/* ---------------------------------------------------------------------- */
/* 1. Random operations by several processes                               */
/* ---------------------------------------------------------------------- */

#define RND_PROCS    4
#define RND_ITERS    2000
#define RND_DIRS     4
#define RND_KEYS     16
#define RND_CHILDREN 6

/* The type of a path follows from its name, so no race can produce
 * ODB_ETYPE or ODB_ENOTDIR: /mp/d<D> are directories, k0..k7 INT32
 * arrays, k8..k11 strings, k12..k15 directories holding INT32 c0..c5. */
static void rnd_path(char *buf, size_t size, unsigned *seed, int *kind)
{
    int d = rand_r(seed) % RND_DIRS, k = rand_r(seed) % RND_KEYS;
    if (k < 8) {
        *kind = 0;
        (void)snprintf(buf, size, "/mp/d%d/k%d", d, k);
    } else if (k < 12) {
        *kind = 1;
        (void)snprintf(buf, size, "/mp/d%d/k%d", d, k);
    } else {
        *kind = 2;
        (void)snprintf(buf, size, "/mp/d%d/k%d/c%d", d, k, rand_r(seed) % RND_CHILDREN);
    }
}

static int rnd_set(struct odb *o, const char *path, int kind, unsigned *seed, unsigned flags)
{
    if (kind == 1) {
        char s[100];
        size_t len = (size_t)(rand_r(seed) % 90);
        memset(s, 'a' + rand_r(seed) % 26, len);
        s[len] = '\0';
        return odb_set(o, ODB_ROOT, path, ODB_TYPE_STRING, s, len + 1, 1, flags);
    }
    int32_t v[4];
    uint32_t n = kind == 0 ? 1 + (uint32_t)(rand_r(seed) % 4) : 1;
    for (uint32_t i = 0; i < n; i++)
        v[i] = rand_r(seed);
    return odb_set(o, ODB_ROOT, path, ODB_TYPE_INT32, v, n * sizeof v[0], n, flags);
}

/* Lists a directory and reads every entry through its handle. */
static bool rnd_enumerate(struct odb *o, const char *path)
{
    struct odb_hkey dir;
    int err = odb_find(o, ODB_ROOT, path, &dir);
    if (!EXPECT(err, "find dir", 0, ODB_ENOKEY))
        return false;
    if (err)
        return true;
    struct odb_dirent *ents;
    size_t n;
    err = odb_dir_list(o, dir, &ents, &n);
    if (!EXPECT(err, "dir_list", 0, ODB_ESTALE))
        return false;
    if (err)
        return true;
    bool good = true;
    for (size_t i = 0; i < n && good; i++) {
        if (ents[i].type == ODB_TYPE_DIR) {
            struct odb_dirent *sub;
            size_t n_sub;
            err = odb_dir_list(o, ents[i].key, &sub, &n_sub);
            good = EXPECT(err, "dir_list child", 0, ODB_ESTALE);
            if (!err)
                odb_dirents_free(sub);
            continue;
        }
        char buf[512];
        size_t size = sizeof buf;
        err = odb_get(o, ents[i].key, NULL, ents[i].type, buf, &size);
        good = EXPECT(err, "get via handle", 0, ODB_ESTALE);
        struct odb_key_info info;
        err = odb_key_info(o, ents[i].key, &info);
        good = good && EXPECT(err, "key_info via handle", 0, ODB_ESTALE);
        if (good && err == 0 && strcmp(info.name, ents[i].name) != 0) {
            (void)fprintf(stderr, "child %d: handle of '%s' now names '%s'\n", (int)getpid(),
                          ents[i].name, info.name);
            good = false;
        }
    }
    odb_dirents_free(ents);
    return good;
}

static int rnd_child(const char *shm_name, int idx)
{
    struct odb *o = child_open(shm_name);
    if (!o)
        return 10;
    unsigned seed = 0x5eed0000u + (unsigned)idx * 7919u;
    bool good = true;
    for (int it = 0; it < RND_ITERS && good; it++) {
        char path[128];
        int kind;
        rnd_path(path, sizeof path, &seed, &kind);
        int r = rand_r(&seed) % 100, err;
        if (r < 20) {
            enum odb_type t = kind == 1 ? ODB_TYPE_STRING : ODB_TYPE_INT32;
            err = odb_create(o, ODB_ROOT, path, t, 1 + (uint32_t)(rand_r(&seed) % 3),
                             (uint32_t)(8 + rand_r(&seed) % 64), NULL);
            good = EXPECT(err, "create", 0, ODB_EEXIST);
        } else if (r < 50) {
            unsigned flags = rand_r(&seed) % 2 ? ODB_SET_CREATE : 0;
            err = rnd_set(o, path, kind, &seed, flags);
            if (flags)
                good = EXPECT(err, "set create", 0);
            else
                good = EXPECT(err, "set", 0, ODB_ENOKEY);
        } else if (r < 62) {
            err = odb_delete(o, ODB_ROOT, path, false);
            good = EXPECT(err, "delete", 0, ODB_ENOKEY);
        } else if (r < 67) {
            /* A k12..k15 directory or a whole /mp/d<D>: often not empty. */
            char dir[64];
            int d = rand_r(&seed) % RND_DIRS;
            if (rand_r(&seed) % 3)
                (void)snprintf(dir, sizeof dir, "/mp/d%d/k%d", d, 12 + rand_r(&seed) % 4);
            else
                (void)snprintf(dir, sizeof dir, "/mp/d%d", d);
            bool rec = rand_r(&seed) % 2;
            err = odb_delete(o, ODB_ROOT, dir, rec);
            if (rec)
                good = EXPECT(err, "delete -r", 0, ODB_ENOKEY);
            else
                good = EXPECT(err, "delete dir", 0, ODB_ENOKEY, ODB_ENOTEMPTY);
        } else if (r < 82) {
            char dir[64];
            (void)snprintf(dir, sizeof dir, "/mp/d%d", rand_r(&seed) % RND_DIRS);
            good = rnd_enumerate(o, dir);
        } else if (r < 92) {
            char buf[512];
            size_t size = sizeof buf;
            err = odb_get(o, ODB_ROOT, path, kind == 1 ? ODB_TYPE_STRING : ODB_TYPE_INT32, buf,
                          &size);
            good = EXPECT(err, "get", 0, ODB_ENOKEY);
        } else {
            /* A transaction of two sets (committed or aborted). */
            err = odb_txn_begin(o);
            good = EXPECT(err, "txn_begin", 0);
            if (!good)
                break;
            char p2[128];
            int kind2;
            rnd_path(p2, sizeof p2, &seed, &kind2);
            err = rnd_set(o, path, kind, &seed, ODB_SET_CREATE);
            good = EXPECT(err, "txn set 1", 0);
            err = rnd_set(o, p2, kind2, &seed, 0);
            good = good && EXPECT(err, "txn set 2", 0, ODB_ENOKEY);
            if (rand_r(&seed) % 4 == 0) {
                odb_txn_abort(o);
            } else {
                err = odb_txn_commit(o);
                good = good && EXPECT(err, "txn commit", 0);
            }
        }
    }
    odb_close(o);
    return good ? 0 : 20;
}

static void test_random_ops(void **state)
{
    struct fx *fx = *state;
    for (int d = 0; d < RND_DIRS; d++) {
        char path[32];
        (void)snprintf(path, sizeof path, "/mp/d%d", d);
        OK(odb_create(fx->odb, ODB_ROOT, path, ODB_TYPE_DIR, 0, 0, NULL));
    }
    for (int i = 0; i < RND_PROCS; i++)
        spawn(fx, rnd_child, i);
    start_all(fx);
    wait_all(fx);
    assert_check_ok(fx->odb);
    struct odb_stats st;
    OK(odb_stats(fx->odb, &st));
    uint32_t walked = count_keys(fx->odb, ODB_ROOT, 0) + 1; /* + the root */
    assert_int_equal(st.n_keys, walked);
    printf("random ops: %d processes x %d ops, %u keys left, %llu changes, %llu contended locks\n",
           RND_PROCS, RND_ITERS, st.n_keys, (unsigned long long)st.n_changes,
           (unsigned long long)st.lock_contended);
}

/* ---------------------------------------------------------------------- */
/* 2. MIDAS failure mode 1: /System/Clients churn                          */
/* ---------------------------------------------------------------------- */

#define CL_CHURNERS     2
#define CL_READERS      2
#define CL_PER_CHURNER  40
#define CL_ITERS        4000
#define CL_MAX_LISTINGS 200000

static int churn_child(const char *shm_name, int idx)
{
    struct odb *o = child_open(shm_name);
    if (!o)
        return 10;
    bool present[CL_PER_CHURNER] = {false};
    unsigned seed = 0xc1000u + (unsigned)idx;
    bool good = true;
    for (int it = 0; it < CL_ITERS + CL_PER_CHURNER && good; it++) {
        /* The last CL_PER_CHURNER steps remove whatever is left. */
        int i = it < CL_ITERS ? rand_r(&seed) % CL_PER_CHURNER : it - CL_ITERS;
        int n = idx * CL_PER_CHURNER + i;
        char path[64];
        (void)snprintf(path, sizeof path, "/System/Clients/%d", n);
        if (present[i]) {
            good = EXPECT(odb_delete(o, ODB_ROOT, path, true), "delete client", 0);
            present[i] = false;
        } else if (it < CL_ITERS) {
            char name_path[80], pid_path[80], name[32];
            (void)snprintf(name_path, sizeof name_path, "%s/Name", path);
            (void)snprintf(pid_path, sizeof pid_path, "%s/Pid", path);
            (void)snprintf(name, sizeof name, "client%d", n);
            /* Created and set in one step: never seen empty. */
            int err = odb_set(o, ODB_ROOT, name_path, ODB_TYPE_STRING, name, strlen(name) + 1, 1,
                              ODB_SET_CREATE);
            good = EXPECT(err, "create Name", 0);
            int32_t pid = getpid();
            err =
                odb_set(o, ODB_ROOT, pid_path, ODB_TYPE_INT32, &pid, sizeof pid, 1, ODB_SET_CREATE);
            good = good && EXPECT(err, "create Pid", 0);
            present[i] = true;
        }
    }
    /* Tell the readers: one more churner is done. */
    int err = odb_txn_begin(o);
    if (!err) {
        int32_t done = 0;
        size_t size = sizeof done;
        err = odb_get(o, ODB_ROOT, "/System/ChurnersDone", ODB_TYPE_INT32, &done, &size);
        done++;
        if (!err)
            err = odb_set(o, ODB_ROOT, "/System/ChurnersDone", ODB_TYPE_INT32, &done, sizeof done,
                          1, 0);
        err = err ? (odb_txn_abort(o), err) : odb_txn_commit(o);
    }
    good = good && EXPECT(err, "done counter", 0);
    odb_close(o);
    return good ? 0 : 20;
}

static int read_child(const char *shm_name, int idx)
{
    (void)idx;
    struct odb *o = child_open(shm_name);
    if (!o)
        return 10;
    struct odb_hkey clients;
    if (!EXPECT(odb_find(o, ODB_ROOT, "/System/Clients", &clients), "find clients", 0))
        return 11;
    long n_read = 0, n_stale = 0, n_listings = 0;
    bool good = true;
    for (;;) {
        int32_t done = 0;
        size_t size = sizeof done;
        int err = odb_get(o, ODB_ROOT, "/System/ChurnersDone", ODB_TYPE_INT32, &done, &size);
        if (!EXPECT(err, "done counter", 0) || done >= CL_CHURNERS || !good ||
            ++n_listings > CL_MAX_LISTINGS)
            break;
        struct odb_dirent *ents;
        size_t n;
        err = odb_dir_list(o, clients, &ents, &n);
        if (!EXPECT(err, "dir_list", 0)) {
            good = false;
            break;
        }
        for (size_t i = 0; i < n && good; i++) {
            char want[80], name[80];
            (void)snprintf(want, sizeof want, "client%s", ents[i].name);
            if (ents[i].type != ODB_TYPE_DIR) {
                (void)fprintf(stderr, "reader: entry '%s' has type %s\n", ents[i].name,
                              odb_type_name(ents[i].type));
                good = false;
                break;
            }
            /* Read Name through the listed handle. */
            size = sizeof name;
            err = odb_get(o, ents[i].key, "Name", ODB_TYPE_STRING, name, &size);
            good = EXPECT(err, "read Name", 0, ODB_ESTALE, ODB_ENOKEY);
            if (good && err == 0 && strcmp(name, want) != 0) {
                (void)fprintf(stderr, "reader: client '%s' has Name '%s'\n", ents[i].name, name);
                good = false;
            }
            n_read += err == 0;
            n_stale += err == ODB_ESTALE;
            struct odb_key_info info;
            err = odb_key_info(o, ents[i].key, &info);
            good = good && EXPECT(err, "key_info", 0, ODB_ESTALE);
            if (good && err == 0 &&
                (strcmp(info.name, ents[i].name) != 0 || info.type != ODB_TYPE_DIR)) {
                (void)fprintf(stderr, "reader: handle of '%s' names '%s' (%s)\n", ents[i].name,
                              info.name, odb_type_name(info.type));
                good = false;
            }
            /* "Create if missing" through the handle: writes the live
             * client's own value, and must never recreate a deleted one. */
            err = odb_set(o, ents[i].key, "Name", ODB_TYPE_STRING, want, strlen(want) + 1, 1,
                          ODB_SET_CREATE);
            good = good && EXPECT(err, "set Name create", 0, ODB_ESTALE);
            int32_t seen = (int32_t)n_listings;
            err = odb_set(o, ents[i].key, "LastSeen", ODB_TYPE_INT32, &seen, sizeof seen, 1,
                          ODB_SET_CREATE);
            good = good && EXPECT(err, "set LastSeen create", 0, ODB_ESTALE);
        }
        odb_dirents_free(ents);
    }
    if (n_listings > CL_MAX_LISTINGS) {
        (void)fprintf(stderr, "reader: churners never finished\n");
        good = false;
    }
    printf("reader %d: %ld listings, %ld names read, %ld stale\n", (int)getpid(), n_listings,
           n_read, n_stale);
    (void)fflush(stdout);
    odb_close(o);
    return good ? 0 : 20;
}

static void test_clients_enumeration(void **state)
{
    struct fx *fx = *state;
    OK(odb_create(fx->odb, ODB_ROOT, "/System/Clients", ODB_TYPE_DIR, 0, 0, NULL));
    OK(odb_create(fx->odb, ODB_ROOT, "/System/ChurnersDone", ODB_TYPE_INT32, 1, 0, NULL));
    for (int i = 0; i < CL_CHURNERS; i++)
        spawn(fx, churn_child, i);
    for (int i = 0; i < CL_READERS; i++)
        spawn(fx, read_child, i);
    start_all(fx);
    wait_all(fx);
    assert_check_ok(fx->odb);
    /* Every client was deleted at the end: nothing came back. */
    struct odb_hkey clients;
    OK(odb_find(fx->odb, ODB_ROOT, "/System/Clients", &clients));
    struct odb_dirent *ents;
    size_t n;
    OK(odb_dir_list(fx->odb, clients, &ents, &n));
    for (size_t i = 0; i < n; i++)
        print_error("resurrected: /System/Clients/%s\n", ents[i].name);
    odb_dirents_free(ents);
    assert_int_equal(n, 0);
    struct odb_stats st;
    OK(odb_stats(fx->odb, &st));
    assert_int_equal(st.n_keys, count_keys(fx->odb, ODB_ROOT, 0) + 1);
}

/* The same, deterministically in one process: a handle whose slot was
 * reused by another key. */
static void test_stale_handle_create(void **state)
{
    struct fx *fx = *state;
    struct odb *o = fx->odb;
    const char name[] = "client7";
    OK(odb_set(o, ODB_ROOT, "/System/Clients/7/Name", ODB_TYPE_STRING, name, sizeof name, 1,
               ODB_SET_CREATE));
    struct odb_hkey h, other;
    OK(odb_find(o, ODB_ROOT, "/System/Clients/7", &h));
    OK(odb_delete(o, ODB_ROOT, "/System/Clients/7", true));
    assert_int_equal(odb_set(o, h, "Name", ODB_TYPE_STRING, name, sizeof name, 1, ODB_SET_CREATE),
                     ODB_ESTALE);
    assert_int_equal(odb_create(o, h, "Name", ODB_TYPE_STRING, 1, 0, NULL), ODB_ESTALE);
    assert_int_equal(odb_find(o, ODB_ROOT, "/System/Clients/7", &other), ODB_ENOKEY);
    /* Create keys until one takes the deleted key's slot. */
    bool reused = false;
    for (int i = 0; i < 4096 && !reused; i++) {
        char path[64];
        (void)snprintf(path, sizeof path, "/System/Clients/%d", 100 + i);
        OK(odb_create(o, ODB_ROOT, path, ODB_TYPE_DIR, 0, 0, &other));
        reused = other.idx == h.idx;
    }
    assert_true(reused);
    assert_int_not_equal(other.gen, h.gen);
    assert_int_equal(odb_set(o, h, "Name", ODB_TYPE_STRING, name, sizeof name, 1, ODB_SET_CREATE),
                     ODB_ESTALE);
    char buf[64];
    size_t size = sizeof buf;
    assert_int_equal(odb_get(o, h, "Name", ODB_TYPE_STRING, buf, &size), ODB_ESTALE);
    struct odb_hkey found;
    assert_int_equal(odb_find(o, other, "Name", &found), ODB_ENOKEY);
    assert_int_equal(odb_find(o, ODB_ROOT, "/System/Clients/7", &found), ODB_ENOKEY);
    assert_check_ok(o);
}

/* ---------------------------------------------------------------------- */
/* 3. A listing is one point in time                                       */
/* ---------------------------------------------------------------------- */

#define SNAP_N            500
#define SNAP_LISTERS      2
#define SNAP_MAX_LISTINGS 500000

static int snap_deleter(const char *shm_name, int idx)
{
    (void)idx;
    struct odb *o = child_open(shm_name);
    if (!o)
        return 10;
    bool good = true;
    /* progress p: 0..SNAP_N while deleting e000.., then SNAP_N+1..2*SNAP_N
     * while recreating them in order. */
    for (int32_t p = 1; p <= 2 * SNAP_N && good; p++) {
        char path[32];
        int err = odb_txn_begin(o);
        good = EXPECT(err, "txn_begin", 0);
        if (!good)
            break;
        if (p <= SNAP_N) {
            (void)snprintf(path, sizeof path, "/Snap/e%04d", p - 1);
            err = odb_delete(o, ODB_ROOT, path, false);
        } else {
            (void)snprintf(path, sizeof path, "/Snap/e%04d", p - SNAP_N - 1);
            err = odb_create(o, ODB_ROOT, path, ODB_TYPE_INT32, 1, 0, NULL);
        }
        good = EXPECT(err, path, 0);
        if (good)
            err = odb_set(o, ODB_ROOT, "/SnapProgress", ODB_TYPE_INT32, &p, sizeof p, 1, 0);
        good = good && EXPECT(err, "progress", 0);
        if (good)
            good = EXPECT(odb_txn_commit(o), "commit", 0);
        else
            odb_txn_abort(o);
    }
    odb_close(o);
    return good ? 0 : 20;
}

/* True when the listing is exactly what progress p implies. */
static bool listing_matches(const struct odb_dirent *ents, size_t n, int32_t p)
{
    int first = p <= SNAP_N ? p : 0;
    int end = p <= SNAP_N ? SNAP_N : p - SNAP_N;
    if (n != (size_t)(end - first))
        return false;
    for (size_t i = 0; i < n; i++) {
        char want[16];
        (void)snprintf(want, sizeof want, "e%04d", first + (int)i);
        if (strcmp(ents[i].name, want) != 0)
            return false;
    }
    return true;
}

static int32_t get_progress(struct odb *o, bool *good)
{
    int32_t p = -1;
    size_t size = sizeof p;
    *good = *good &&
            EXPECT(odb_get(o, ODB_ROOT, "/SnapProgress", ODB_TYPE_INT32, &p, &size), "progress", 0);
    return p;
}

static int snap_lister(const char *shm_name, int idx)
{
    (void)idx;
    struct odb *o = child_open(shm_name);
    if (!o)
        return 10;
    struct odb_hkey dir;
    if (!EXPECT(odb_find(o, ODB_ROOT, "/Snap", &dir), "find /Snap", 0))
        return 11;
    bool good = true;
    long n_listings = 0, n_distinct = 0;
    int32_t last_p = -1;
    for (int32_t p = 0; p < 2 * SNAP_N && good; n_listings++) {
        if (n_listings > SNAP_MAX_LISTINGS) {
            (void)fprintf(stderr, "lister: deleter never finished\n");
            good = false;
            break;
        }
        struct odb_dirent *ents = NULL;
        size_t n = 0;
        if (n_listings % 2) {
            /* Listing and progress in one transaction: exactly p. */
            good = EXPECT(odb_txn_begin(o), "txn_begin", 0);
            if (!good)
                break;
            int err = odb_dir_list(o, dir, &ents, &n);
            good = EXPECT(err, "dir_list", 0);
            p = get_progress(o, &good);
            good = EXPECT(odb_txn_commit(o), "commit", 0) && good;
            if (!good)
                break;
            if (!listing_matches(ents, n, p)) {
                (void)fprintf(stderr, "lister: %zu entries (first '%s') at progress %d\n", n,
                              n ? ents[0].name : "", p);
                good = false;
            }
        } else {
            /* Progress read before and after: some p in [p1, p2]. */
            int32_t p1 = get_progress(o, &good);
            int err = odb_dir_list(o, dir, &ents, &n);
            good = EXPECT(err, "dir_list", 0) && good;
            int32_t p2 = get_progress(o, &good);
            if (!good)
                break;
            bool any = false;
            for (int32_t q = p1; q <= p2 && !any; q++)
                any = listing_matches(ents, n, q);
            if (!any) {
                (void)fprintf(stderr, "lister: %zu entries (first '%s') for progress %d..%d\n", n,
                              n ? ents[0].name : "", p1, p2);
                good = false;
            }
            p = p2;
        }
        odb_dirents_free(ents);
        n_distinct += p != last_p;
        last_p = p;
    }
    printf("lister %d: %ld listings at %ld distinct points\n", (int)getpid(), n_listings,
           n_distinct);
    (void)fflush(stdout);
    odb_close(o);
    return good ? 0 : 20;
}

static void test_listing_is_atomic(void **state)
{
    struct fx *fx = *state;
    OK(odb_create(fx->odb, ODB_ROOT, "/Snap", ODB_TYPE_DIR, 0, 0, NULL));
    for (int i = 0; i < SNAP_N; i++) {
        char path[32];
        (void)snprintf(path, sizeof path, "/Snap/e%04d", i);
        OK(odb_create(fx->odb, ODB_ROOT, path, ODB_TYPE_INT32, 1, 0, NULL));
    }
    OK(odb_create(fx->odb, ODB_ROOT, "/SnapProgress", ODB_TYPE_INT32, 1, 0, NULL));
    for (int i = 0; i < SNAP_LISTERS; i++)
        spawn(fx, snap_lister, i);
    spawn(fx, snap_deleter, 0);
    start_all(fx);
    wait_all(fx);
    assert_check_ok(fx->odb);
}

int main(void)
{
    ut_crash_point_arm(0);
    ut_log_set_sink(log_sink, NULL, UT_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_random_ops, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_stale_handle_create, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_clients_enumeration, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_listing_is_atomic, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
