/*
 * tests/odb/test_crash.c - crash atomicity of every mutating ODB call.
 *
 * For each operation, a forked child attaches to a freshly prepared ODB,
 * arms crash point k (ut_crash_point_arm) and runs the operation; the k-th
 * crash point inside the undo logging or the commit SIGKILLs it while it
 * holds the ODB lock. The parent then takes the lock (odb_check), which
 * makes it recover from EOWNERDEAD, and compares a snapshot of the whole
 * tree (paths, types, shapes, modes, serials, values, key count, free heap
 * bytes) with the state before and after an uninterrupted run: it must be
 * one or the other, and once "new" it stays "new" for every later k (there
 * is one commit point). k grows until the child completes; the number of
 * crash points passed is printed per operation ("crash points: <op> = <n>").
 *
 * Also: a child SIGKILLed while it holds the lock inside a transaction (no
 * crash point involved) is rolled back by the next locker, whether that
 * locker was already waiting or comes later.
 *
 * Children never use cmocka asserts (a failing one would longjmp into the
 * child's copy of the runner); they report through their exit status. Every
 * child has an alarm() and every wait a deadline.
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

#define CHILD_ALARM_S 60    /* a child never outlives this */
#define CHILD_WAIT_MS 60000 /* nor does the parent wait longer */
#define MAX_CRASH_K   20000 /* bound of the sweep per operation */
/* TSan cannot see across processes, and its forks are slow: there the
 * long sweeps visit about this many crash points (always the first, the
 * last and the completing one). Elsewhere they visit every point. */
#if defined(__SANITIZE_THREAD__)
#define SWEEP_SAMPLES 48
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SWEEP_SAMPLES 48
#endif
#endif
#ifndef SWEEP_SAMPLES
#define SWEEP_SAMPLES 0
#endif
#define SEG_SIZE (2u << 20)
#define SEG_KEYS 512u

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

static const struct odb_params seg_params = {
    .size_bytes = SEG_SIZE,
    .max_keys = SEG_KEYS,
    .lock_timeout_ms = 20000,
};

static void make_name(char *buf, size_t size, const char *tag)
{
    static unsigned counter;
    const char *id = getenv("AURUM_TEST_ID");
    (void)snprintf(buf, size, "/aurum-tcrash-%s-%d-%s-%u", id ? id : "x", (int)getpid(), tag,
                   ++counter);
}

typedef int (*child_fn)(void *arg);

static pid_t spawn(child_fn fn, void *arg)
{
    (void)fflush(stdout);
    (void)fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(CHILD_ALARM_S);
        _exit(fn(arg));
    }
    return pid;
}

/* Reads one byte with a deadline. */
static bool wait_byte(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    char c;
    return r == 1 && read(fd, &c, 1) == 1;
}

/* Only errors reach stderr: recovery warnings are expected by the hundred. */
static void log_sink(enum ut_log_level level, const char *msg, void *arg)
{
    (void)arg;
    if (level >= UT_LOG_ERROR)
        (void)fprintf(stderr, "aurum[%d] error: %s\n", (int)getpid(), msg);
}

/* A growable string. */
struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_printf(struct sbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    if (sb->len + (size_t)n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 4096;
        while (sb->len + (size_t)n + 1 > cap)
            cap *= 2;
        char *p = realloc(sb->p, cap);
        assert_non_null(p);
        sb->p = p;
        sb->cap = cap;
    }
    va_start(ap, fmt);
    (void)vsnprintf(sb->p + sb->len, sb->cap - sb->len, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

static void snap_dir(struct odb *o, struct odb_hkey dir, const char *path, struct sbuf *sb,
                     int depth)
{
    assert_true(depth < 32);
    struct odb_dirent *ents = NULL;
    size_t n = 0;
    OK(odb_dir_list(o, dir, &ents, &n));
    for (size_t i = 0; i < n; i++) {
        char sub[ODB_PATH_MAX + 1];
        (void)snprintf(sub, sizeof sub, "%s/%s", path, ents[i].name);
        struct odb_key_info info;
        OK(odb_key_info(o, ents[i].key, &info));
        sb_printf(sb, "%s %s n=%u es=%u mode=%u serial=%llu", sub, odb_type_name(info.type),
                  info.n_elem, info.elem_size, info.mode, (unsigned long long)info.serial);
        if (info.type == ODB_TYPE_DIR) {
            sb_printf(sb, "\n");
            snap_dir(o, ents[i].key, sub, sb, depth + 1);
            continue;
        }
        size_t size = (size_t)info.n_elem * info.elem_size + 1;
        unsigned char *buf = malloc(size);
        assert_non_null(buf);
        int err = odb_get(o, ents[i].key, NULL, info.type, buf, &size);
        if (err) {
            sb_printf(sb, " err=%d\n", err);
        } else {
            sb_printf(sb, " =");
            for (size_t j = 0; j < size; j++)
                sb_printf(sb, "%02x", buf[j]);
            sb_printf(sb, "\n");
        }
        free(buf);
    }
    odb_dirents_free(ents);
}

/* The observable state of the whole ODB, as text (free with free()). */
static char *snapshot(struct odb *o)
{
    struct sbuf sb = {0};
    struct odb_stats st;
    OK(odb_stats(o, &st));
    sb_printf(&sb, "n_keys=%u heap_free=%zu\n", st.n_keys, st.heap_free_bytes);
    snap_dir(o, ODB_ROOT, "", &sb, 0);
    return sb.p;
}

static void assert_check_ok(struct odb *o)
{
    char report[1024];
    int err = odb_check(o, report, sizeof report);
    if (err)
        print_error("odb_check: %s: %s\n", ut_strerror(err), report);
    assert_int_equal(err, 0);
}

/* Prints the first differing line of two snapshots. */
static void print_diff(const char *what, const char *a, const char *b)
{
    size_t line = 1;
    const char *la = a, *lb = b;
    while (*a && *a == *b) {
        if (*a == '\n') {
            line++;
            la = a + 1;
            lb = b + 1;
        }
        a++;
        b++;
    }
    const char *ea = strchr(la, '\n'), *eb = strchr(lb, '\n');
    print_error("%s: line %zu differs:\n  got:  %.*s\n  want: %.*s\n", what, line,
                (int)(ea ? ea - la : (long)strlen(la)), la, (int)(eb ? eb - lb : (long)strlen(lb)),
                lb);
}

/* ---------------------------------------------------------------------- */
/* The operations                                                          */
/* ---------------------------------------------------------------------- */

static void put_i32(struct odb *o, const char *path, int32_t v)
{
    OK(odb_set(o, ODB_ROOT, path, ODB_TYPE_INT32, &v, sizeof v, 1, ODB_SET_CREATE));
}

static void put_str(struct odb *o, const char *path, const char *s)
{
    OK(odb_set(o, ODB_ROOT, path, ODB_TYPE_STRING, s, strlen(s) + 1, 1, ODB_SET_CREATE));
}

static void put_i32_array(struct odb *o, const char *path, uint32_t n, int32_t first)
{
    int32_t *v = calloc(n, sizeof *v);
    assert_non_null(v);
    for (uint32_t i = 0; i < n; i++)
        v[i] = first + (int32_t)i;
    OK(odb_set(o, ODB_ROOT, path, ODB_TYPE_INT32, v, n * sizeof *v, n, ODB_SET_CREATE));
    free(v);
}

/* Unrelated data every case starts with: a rollback must not touch it. */
static void setup_background(struct odb *o)
{
    put_i32(o, "/bg/a", 17);
    put_str(o, "/bg/s", "background string");
    double d[8] = {1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5};
    OK(odb_set(o, ODB_ROOT, "/bg/arr", ODB_TYPE_DOUBLE, d, sizeof d, 8, ODB_SET_CREATE));
    OK(odb_link(o, ODB_ROOT, "/bg/lnk", "/bg/a"));
}

static void setup_none(struct odb *o)
{
    (void)o;
}

static void setup_dir_a(struct odb *o)
{
    put_i32(o, "/A/x", 5);
}

static int run_create_value(struct odb *o)
{
    return odb_create(o, ODB_ROOT, "/A/new", ODB_TYPE_INT64, 1, 0, NULL);
}

static int run_create_nested(struct odb *o)
{
    return odb_create(o, ODB_ROOT, "/B/c/d/e/val", ODB_TYPE_STRING, 2, 40, NULL);
}

static void setup_v(struct odb *o)
{
    put_i32_array(o, "/V", 4, 1);
}

static int run_set_same_size(struct odb *o)
{
    int32_t v[4] = {50, 60, 70, 80};
    return odb_set(o, ODB_ROOT, "/V", ODB_TYPE_INT32, v, sizeof v, 4, 0);
}

static void setup_s(struct odb *o)
{
    put_str(o, "/S", "short");
}

static int run_set_new_size(struct odb *o)
{
    char s[100];
    memset(s, 'z', sizeof s - 1);
    s[sizeof s - 1] = '\0';
    return odb_set(o, ODB_ROOT, "/S", ODB_TYPE_STRING, s, sizeof s, 1, 0);
}

static int run_set_create(struct odb *o)
{
    double d = 2.75;
    return odb_set(o, ODB_ROOT, "/C/d/new", ODB_TYPE_DOUBLE, &d, sizeof d, 1, ODB_SET_CREATE);
}

static int run_set_elem(struct odb *o)
{
    struct odb_hkey h;
    int err = odb_find(o, ODB_ROOT, "/V", &h);
    int32_t v = 99;
    return err ? err : odb_set_elem(o, h, 2, ODB_TYPE_INT32, &v, sizeof v);
}

static void setup_r4(struct odb *o)
{
    put_i32_array(o, "/R", 4, 10);
}

static void setup_r200(struct odb *o)
{
    put_i32_array(o, "/R", 200, 10);
}

static int run_resize_to(struct odb *o, uint32_t n)
{
    struct odb_hkey h;
    int err = odb_find(o, ODB_ROOT, "/R", &h);
    return err ? err : odb_resize(o, h, n);
}

static int run_resize_grow(struct odb *o)
{
    return run_resize_to(o, 200);
}

static int run_resize_shrink(struct odb *o)
{
    return run_resize_to(o, 3);
}

static void setup_d(struct odb *o)
{
    put_i32(o, "/D/x", 1);
    put_str(o, "/D/y", "stays");
}

static int run_delete_key(struct odb *o)
{
    return odb_delete(o, ODB_ROOT, "/D/x", false);
}

/* /T and 50 keys under it: 5 directories of 9 values of mixed types. */
static void setup_t(struct odb *o)
{
    for (int d = 0; d < 5; d++) {
        for (int i = 0; i < 9; i++) {
            char path[64];
            (void)snprintf(path, sizeof path, "/T/dir%d/key%d", d, i);
            if (i % 3 == 0)
                put_i32(o, path, d * 100 + i);
            else if (i % 3 == 1)
                put_str(o, path, i % 2 ? "a string value" : "another, longer string value");
            else
                put_i32_array(o, path, (uint32_t)(i + d), i);
        }
    }
}

static int run_delete_subtree(struct odb *o)
{
    return odb_delete(o, ODB_ROOT, "/T", true);
}

static void setup_n(struct odb *o)
{
    put_i32(o, "/N/old", 7);
    put_i32(o, "/N/other", 8);
}

static int run_rename(struct odb *o)
{
    struct odb_hkey h;
    int err = odb_find(o, ODB_ROOT, "/N/old", &h);
    return err ? err : odb_rename(o, h, "Renamed");
}

static int run_link(struct odb *o)
{
    return odb_link(o, ODB_ROOT, "/L/lnk", "/A/x");
}

static void setup_src(struct odb *o)
{
    put_i32(o, "/Src/a", 1);
    put_str(o, "/Src/s", "copied string");
    double d[3] = {0.5, 1.5, 2.5};
    OK(odb_set(o, ODB_ROOT, "/Src/sub/d", ODB_TYPE_DOUBLE, d, sizeof d, 3, ODB_SET_CREATE));
    bool b = true;
    OK(odb_set(o, ODB_ROOT, "/Src/sub/deep/b", ODB_TYPE_BOOL, &b, 1, 1, ODB_SET_CREATE));
    put_i32_array(o, "/Src/sub/deep/arr", 20, 3);
    OK(odb_link(o, ODB_ROOT, "/Src/lnk", "/bg/a"));
    struct odb_hkey h;
    OK(odb_find(o, ODB_ROOT, "/Src/a", &h));
    OK(odb_set_mode(o, h, ODB_MODE_READ));
    OK(odb_create(o, ODB_ROOT, "/Dst", ODB_TYPE_DIR, 0, 0, NULL));
}

static int run_copy(struct odb *o)
{
    struct odb_hkey src;
    int err = odb_find(o, ODB_ROOT, "/Src", &src);
    return err ? err : odb_copy(o, src, ODB_ROOT, "/Dst/copy");
}

static void setup_m(struct odb *o)
{
    put_i32(o, "/M", 3);
}

static int run_set_mode(struct odb *o)
{
    struct odb_hkey h;
    int err = odb_find(o, ODB_ROOT, "/M", &h);
    return err ? err : odb_set_mode(o, h, ODB_MODE_READ);
}

static void setup_x(struct odb *o)
{
    put_i32(o, "/X/1", 1);
    put_i32(o, "/X/2", 2);
    put_str(o, "/X/3", "three");
}

static int run_txn3(struct odb *o)
{
    int err = odb_txn_begin(o);
    if (err)
        return err;
    int32_t a = 100, b = 200;
    const char s[] = "three, now much longer than before";
    err = odb_set(o, ODB_ROOT, "/X/1", ODB_TYPE_INT32, &a, sizeof a, 1, 0);
    if (!err)
        err = odb_set(o, ODB_ROOT, "/X/2", ODB_TYPE_INT32, &b, sizeof b, 1, 0);
    if (!err)
        err = odb_set(o, ODB_ROOT, "/X/3", ODB_TYPE_STRING, s, sizeof s, 1, 0);
    if (err) {
        odb_txn_abort(o);
        return err;
    }
    return odb_txn_commit(o);
}

static void setup_y(struct odb *o)
{
    put_i32(o, "/Y/a", 1);
    put_str(o, "/Y/s", "s");
    put_i32(o, "/Y/gone/x", 3);
}

/* Nested transactions with an inner abort, and a subtree deleted and
 * created again under the same name, all in one outer transaction. */
static int run_txn_nested(struct odb *o)
{
    int err = odb_txn_begin(o);
    if (err)
        return err;
    int32_t a = 2, x = 9;
    const char inner_s[] = "written by the inner transaction, then undone";
    const char outer_s[] = "outer value";
    err = odb_set(o, ODB_ROOT, "/Y/a", ODB_TYPE_INT32, &a, sizeof a, 1, 0);
    if (!err)
        err = odb_txn_begin(o);
    if (!err) {
        err = odb_set(o, ODB_ROOT, "/Y/s", ODB_TYPE_STRING, inner_s, sizeof inner_s, 1, 0);
        if (!err)
            err = odb_create(o, ODB_ROOT, "/Y/inner/k", ODB_TYPE_INT64, 4, 0, NULL);
        if (!err)
            err = odb_delete(o, ODB_ROOT, "/Y/gone", true);
        odb_txn_abort(o);
    }
    if (!err)
        err = odb_set(o, ODB_ROOT, "/Y/s", ODB_TYPE_STRING, outer_s, sizeof outer_s, 1, 0);
    if (!err)
        err = odb_delete(o, ODB_ROOT, "/Y/gone", true);
    if (!err)
        err = odb_set(o, ODB_ROOT, "/Y/gone/x", ODB_TYPE_INT32, &x, sizeof x, 1, ODB_SET_CREATE);
    if (err) {
        odb_txn_abort(o);
        return err;
    }
    return odb_txn_commit(o);
}

/* The document follows the export format (docs/ODB_JSON.md): plain values
 * for existing keys, "name/key" objects with the type for new ones. */
static const char json_doc[] = "{\"x\": 42, \"new\": {\"deeper\": {\"v\": 7}},"
                               " \"s/key\": {\"type\": \"STRING\", \"size\": 64},"
                               " \"s\": \"imported\", \"arr\": [1.5, 2.5, 3.5]}";

static void setup_j(struct odb *o)
{
    put_i32(o, "/J/x", 1);
    put_str(o, "/J/s", "old");
}

static int run_json_import(struct odb *o)
{
    struct odb_hkey h;
    int err = odb_find(o, ODB_ROOT, "/J", &h);
    return err ? err : odb_json_import(o, h, json_doc, sizeof json_doc - 1);
}

struct crash_op {
    const char *name;
    void (*setup)(struct odb *o);
    int (*run)(struct odb *o);
};

/* ---------------------------------------------------------------------- */
/* The sweep                                                               */
/* ---------------------------------------------------------------------- */

struct fx {
    char name[128];
    struct odb *odb;
};

static int fx_setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    *state = fx;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *fx = *state;
    if (fx) {
        odb_close(fx->odb);
        if (fx->name[0])
            odb_destroy(fx->name);
        free(fx);
    }
    return 0;
}

/* Replaces the fixture's ODB by a fresh one holding the "old" state. */
static void fresh(struct fx *fx, const struct crash_op *op)
{
    odb_close(fx->odb);
    fx->odb = NULL;
    if (fx->name[0])
        odb_destroy(fx->name);
    make_name(fx->name, sizeof fx->name, "sweep");
    OK(odb_open(fx->name, ODB_OPEN_CREATE, &seg_params, &fx->odb));
    setup_background(fx->odb);
    op->setup(fx->odb);
}

struct child_arg {
    const char *shm_name;
    const struct crash_op *op;
    long arm;
    int report_fd; /* the reference run writes its crash point count here */
};

static int crash_child(void *argp)
{
    struct child_arg *a = argp;
    ut_log_set_sink(log_sink, NULL, UT_LOG_ERROR);
    struct odb *o;
    int err = odb_open(a->shm_name, 0, NULL, &o);
    if (err) {
        (void)fprintf(stderr, "child: odb_open: %s\n", ut_strerror(err));
        return 10;
    }
    ut_crash_point_arm(a->arm);
    err = a->op->run(o);
    if (err) {
        (void)fprintf(stderr, "child: %s: %s (%s)\n", a->op->name, ut_strerror(err), odb_errmsg());
        return 11;
    }
    if (a->arm == 0) {
        /* Unarmed: one more call just counts. */
        long n = ut_crash_point() - 1;
        if (write(a->report_fd, &n, sizeof n) != (ssize_t)sizeof n)
            return 12;
    }
    odb_close(o);
    return 0;
}

/* Attaches, arms crash point k and takes the lock: it inherits a dead
 * holder's lock, so it runs the recovery, and may die in it. */
static int recover_child(void *argp)
{
    struct child_arg *a = argp;
    ut_log_set_sink(log_sink, NULL, UT_LOG_ERROR);
    struct odb *o;
    int err = odb_open(a->shm_name, 0, NULL, &o);
    if (err)
        return 10;
    ut_crash_point_arm(a->arm);
    char report[512];
    err = odb_check(o, report, sizeof report);
    if (err) {
        (void)fprintf(stderr, "recovering child: %s: %s\n", ut_strerror(err), report);
        return 11;
    }
    odb_close(o);
    return 0;
}

/* Runs op in a child armed at crash point k; returns the wait status. */
static int run_child(struct fx *fx, const struct crash_op *op, long k, int report_fd)
{
    struct child_arg a = {fx->name, op, k, report_fd};
    pid_t pid = spawn(crash_child, &a);
    int status = tfx_wait_child(pid, CHILD_WAIT_MS);
    if (status == -1)
        print_error("%s: child at k=%ld did not finish in time\n", op->name, k);
    assert_int_not_equal(status, -1);
    return status;
}

/* A crash at point k of op, then a crash at point j of the recovery by
 * the next locker, for j = 1, 2, ... until that recovery completes. The
 * state must be the one a crash at k alone leaves. */
static void sweep_recovery(struct fx *fx, const struct crash_op *op, long k, const char *want_state)
{
    long j;
    for (j = 1; j <= MAX_CRASH_K; j += SWEEP_SAMPLES ? 16 : 1) {
        fresh(fx, op);
        struct odb_stats s0, s1;
        OK(odb_stats(fx->odb, &s0));
        int status = run_child(fx, op, k, -1);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        struct child_arg a = {fx->name, op, j, -1};
        pid_t pid = spawn(recover_child, &a);
        status = tfx_wait_child(pid, CHILD_WAIT_MS);
        assert_int_not_equal(status, -1);
        bool completed = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!completed && !(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
            print_error("%s: recovery child at j=%ld: status 0x%x\n", op->name, j, status);
        assert_true(completed || (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
        assert_check_ok(fx->odb);
        OK(odb_stats(fx->odb, &s1));
        assert_int_equal(s1.lock_owner_died, s0.lock_owner_died + (completed ? 1 : 2));
        char *now = snapshot(fx->odb);
        if (strcmp(now, want_state) != 0) {
            print_error("%s: crash at k=%ld, recovery crash at j=%ld: wrong state\n", op->name, k,
                        j);
            print_diff("vs expected", now, want_state);
        }
        assert_string_equal(now, want_state);
        free(now);
        if (completed)
            break;
    }
    assert_true(j <= MAX_CRASH_K);
    if (SWEEP_SAMPLES)
        printf("crash points: %s, recovery after crash %ld: sampled up to %ld\n", op->name, k, j);
    else
        printf("crash points: %s, recovery after crash %ld = %ld\n", op->name, k, j - 1);
}

/* The next crash point to try: every step-th, then the last one (n), then
 * n + 1, where the run must complete. */
static long next_k(long k, long step, long n)
{
    if (k >= n)
        return k + 1;
    return k + step > n ? n : k + step;
}

static void sweep(struct fx *fx, const struct crash_op *op)
{
    /* Reference run: no crash; gives the "new" state and the count. */
    fresh(fx, op);
    char *old_state = snapshot(fx->odb);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    int status = run_child(fx, op, 0, pfd[1]);
    close(pfd[1]);
    long n_points = -1;
    ssize_t got = read(pfd[0], &n_points, sizeof n_points);
    close(pfd[0]);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        print_error("%s: uninterrupted run failed (status 0x%x)\n", op->name, status);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(got, sizeof n_points);
    assert_check_ok(fx->odb);
    char *new_state = snapshot(fx->odb);
    assert_string_not_equal(old_state, new_state);

    long k, step = 1;
#if SWEEP_SAMPLES
    if (n_points > SWEEP_SAMPLES)
        step = n_points / SWEEP_SAMPLES;
#endif
    int n_old = 0, n_new = 0;
    long first_new = 0; /* the first crash point that left the new state */
    for (k = 1; k <= MAX_CRASH_K; k = next_k(k, step, n_points)) {
        fresh(fx, op);
        char *before = snapshot(fx->odb);
        assert_string_equal(before, old_state); /* setup is deterministic */
        free(before);
        struct odb_stats s0, s1;
        OK(odb_stats(fx->odb, &s0));
        status = run_child(fx, op, k, -1);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            break;
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
            print_error("%s: k=%ld: child status 0x%x, not SIGKILL\n", op->name, k, status);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        assert_check_ok(fx->odb); /* the first lock: recovery runs here */
        OK(odb_stats(fx->odb, &s1));
        assert_int_equal(s1.lock_owner_died, s0.lock_owner_died + 1);
        char *now = snapshot(fx->odb);
        if (strcmp(now, old_state) == 0) {
            if (n_new)
                print_error("%s: k=%ld: old state after a crash that already gave new\n", op->name,
                            k);
            assert_int_equal(n_new, 0);
            n_old++;
        } else if (strcmp(now, new_state) == 0) {
            if (n_new++ == 0)
                first_new = k;
        } else {
            print_error("%s: k=%ld: state is neither old nor new\n", op->name, k);
            print_diff("vs old", now, old_state);
            print_diff("vs new", now, new_state);
            fail();
        }
        free(now);
    }
    assert_true(k <= MAX_CRASH_K);
    /* The completing run passed exactly the points the earlier runs died at. */
    assert_int_equal(k - 1, n_points);
    if (step > 1)
        printf("(TSan build: sampled every %ld crash points)\n", step);
    assert_true(n_points >= 2);
    assert_true(n_old >= 1);
    assert_true(n_new >= 1); /* the crash point after the commit */
    assert_check_ok(fx->odb);
    char *final = snapshot(fx->odb);
    assert_string_equal(final, new_state);
    free(final);
    printf("crash points: %s = %ld (rolled back %d, committed %d)\n", op->name, n_points, n_old,
           n_new);
    /* A crash half-way through the reclamation after the commit, then
     * crashes of the recovery that continues it. */
    if (first_new < n_points)
        sweep_recovery(fx, op, first_new + (n_points - first_new) / 2, new_state);
    (void)fflush(stdout);
    free(old_state);
    free(new_state);
}

#define SWEEP_TEST(fn, label, setup_fn, run_fn)                                                    \
    static void fn(void **state)                                                                   \
    {                                                                                              \
        static const struct crash_op op = {label, setup_fn, run_fn};                               \
        sweep(*state, &op);                                                                        \
    }

SWEEP_TEST(test_crash_create_value, "odb_create value", setup_dir_a, run_create_value)
SWEEP_TEST(test_crash_create_nested, "odb_create nested dirs", setup_none, run_create_nested)
SWEEP_TEST(test_crash_set_same_size, "odb_set same size", setup_v, run_set_same_size)
SWEEP_TEST(test_crash_set_new_size, "odb_set new size", setup_s, run_set_new_size)
SWEEP_TEST(test_crash_set_create, "odb_set ODB_SET_CREATE", setup_none, run_set_create)
SWEEP_TEST(test_crash_set_elem, "odb_set_elem", setup_v, run_set_elem)
SWEEP_TEST(test_crash_resize_grow, "odb_resize grow", setup_r4, run_resize_grow)
SWEEP_TEST(test_crash_resize_shrink, "odb_resize shrink", setup_r200, run_resize_shrink)
SWEEP_TEST(test_crash_delete_key, "odb_delete key", setup_d, run_delete_key)
SWEEP_TEST(test_crash_delete_subtree, "odb_delete subtree of 50", setup_t, run_delete_subtree)
SWEEP_TEST(test_crash_rename, "odb_rename", setup_n, run_rename)
SWEEP_TEST(test_crash_link, "odb_link", setup_dir_a, run_link)
SWEEP_TEST(test_crash_copy, "odb_copy subtree", setup_src, run_copy)
SWEEP_TEST(test_crash_set_mode, "odb_set_mode", setup_m, run_set_mode)
SWEEP_TEST(test_crash_txn3, "txn of 3 sets", setup_x, run_txn3)
SWEEP_TEST(test_crash_txn_nested, "nested txn, inner abort, delete+recreate", setup_y,
           run_txn_nested)

static void test_crash_json_import(void **state)
{
    struct fx *fx = *state;
    static const struct crash_op op = {"odb_json_import", setup_j, run_json_import};
    /* A stub (or a format this document does not match) is skipped too. */
    fresh(fx, &op);
    int err = run_json_import(fx->odb);
    if (err) {
        printf("crash points: odb_json_import skipped (returns %s: %s)\n", ut_strerror(err),
               odb_errmsg());
        skip();
    }
    sweep(fx, &op);
}

/* ---------------------------------------------------------------------- */
/* Killed while holding the lock, without a crash point                    */
/* ---------------------------------------------------------------------- */

struct holder_arg {
    const char *shm_name;
    int ready_fd; /* holder: writes one byte when its changes are made */
    int block_fd; /* holder: blocks reading this (never written) */
};

static int holder_child(void *argp)
{
    struct holder_arg *a = argp;
    ut_log_set_sink(log_sink, NULL, UT_LOG_ERROR);
    struct odb *o;
    if (odb_open(a->shm_name, 0, NULL, &o))
        return 10;
    if (odb_txn_begin(o))
        return 11;
    int32_t v = 2;
    const char s[] = "a new and much longer value than the old one";
    if (odb_set(o, ODB_ROOT, "/h/a", ODB_TYPE_INT32, &v, sizeof v, 1, 0) ||
        odb_create(o, ODB_ROOT, "/h/b/c", ODB_TYPE_INT32, 1, 0, NULL) ||
        odb_set(o, ODB_ROOT, "/h/s", ODB_TYPE_STRING, s, sizeof s, 1, 0) ||
        odb_delete(o, ODB_ROOT, "/h/gone", true))
        return 12;
    /* Still inside the transaction, with the lock held. */
    if (write(a->ready_fd, "r", 1) != 1)
        return 13;
    char c;
    ssize_t r = read(a->block_fd, &c, 1); /* until killed (or the alarm) */
    (void)r;
    return 14;
}

static int waiter_child(void *argp)
{
    struct holder_arg *a = argp;
    ut_log_set_sink(log_sink, NULL, UT_LOG_ERROR);
    struct odb *o;
    if (odb_open(a->shm_name, 0, NULL, &o))
        return 10;
    if (write(a->ready_fd, "w", 1) != 1)
        return 13;
    int32_t v = 0;
    size_t size = sizeof v;
    int err = odb_get(o, ODB_ROOT, "/h/a", ODB_TYPE_INT32, &v, &size); /* waits */
    if (err || v != 1) {
        (void)fprintf(stderr, "waiter: get /h/a: %s, v=%d\n", ut_strerror(err), v);
        return 15;
    }
    odb_close(o);
    return 0;
}

static void check_h_old(struct odb *o)
{
    int32_t v = 0;
    size_t size = sizeof v;
    OK(odb_get(o, ODB_ROOT, "/h/a", ODB_TYPE_INT32, &v, &size));
    assert_int_equal(v, 1);
    struct odb_hkey h;
    assert_int_equal(odb_find(o, ODB_ROOT, "/h/b", &h), ODB_ENOKEY);
    char s[64];
    size = sizeof s;
    OK(odb_get(o, ODB_ROOT, "/h/s", ODB_TYPE_STRING, s, &size));
    assert_string_equal(s, "old");
    OK(odb_find(o, ODB_ROOT, "/h/gone/x", &h));
}

static void kill_holder(struct fx *fx, bool with_waiter)
{
    make_name(fx->name, sizeof fx->name, "holder");
    OK(odb_open(fx->name, ODB_OPEN_CREATE, &seg_params, &fx->odb));
    setup_background(fx->odb);
    put_i32(fx->odb, "/h/a", 1);
    put_str(fx->odb, "/h/s", "old");
    put_i32(fx->odb, "/h/gone/x", 5);
    char *old_state = snapshot(fx->odb);
    struct odb_stats s0, s1;
    OK(odb_stats(fx->odb, &s0));

    int ready[2], block[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(block), 0);
    struct holder_arg a = {fx->name, ready[1], block[0]};
    pid_t holder = spawn(holder_child, &a);
    bool holding = wait_byte(ready[0], CHILD_WAIT_MS);
    pid_t waiter = -1;
    bool waiting = false;
    if (holding && with_waiter) {
        waiter = spawn(waiter_child, &a);
        /* It is about to block on the lock; whether it is inside the wait
         * or not yet when the holder dies, it must see the old value. */
        waiting = wait_byte(ready[0], CHILD_WAIT_MS);
    }
    kill(holder, SIGKILL);
    int hst = tfx_wait_child(holder, CHILD_WAIT_MS);
    int wst = waiter > 0 ? tfx_wait_child(waiter, CHILD_WAIT_MS) : 0;
    close(ready[0]);
    close(ready[1]);
    close(block[0]);
    close(block[1]);
    assert_true(holding);
    assert_true(WIFSIGNALED(hst) && WTERMSIG(hst) == SIGKILL);
    if (with_waiter) {
        assert_true(waiting);
        if (!WIFEXITED(wst) || WEXITSTATUS(wst) != 0)
            print_error("waiter status 0x%x\n", wst);
        assert_true(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    }

    check_h_old(fx->odb); /* the first lock here, unless the waiter had it */
    assert_check_ok(fx->odb);
    OK(odb_stats(fx->odb, &s1));
    assert_int_equal(s1.lock_owner_died, s0.lock_owner_died + 1);
    assert_int_equal(s1.n_rollbacks, s0.n_rollbacks + 1);
    char *now = snapshot(fx->odb);
    if (strcmp(now, old_state) != 0)
        print_diff("after rollback", now, old_state);
    assert_string_equal(now, old_state);
    free(now);
    free(old_state);

    /* And the ODB is fully usable afterwards. */
    int32_t v = 3;
    OK(odb_set(fx->odb, ODB_ROOT, "/h/a", ODB_TYPE_INT32, &v, sizeof v, 1, 0));
    OK(odb_create(fx->odb, ODB_ROOT, "/h/b/c", ODB_TYPE_INT32, 1, 0, NULL));
    assert_check_ok(fx->odb);
}

static void test_kill_lock_holder(void **state)
{
    kill_holder(*state, false);
}

static void test_kill_lock_holder_with_waiter(void **state)
{
    kill_holder(*state, true);
}

int main(void)
{
    /* The parent itself must never crash: ignore any AURUM_CRASH_POINT. */
    ut_crash_point_arm(0);
    ut_log_set_sink(log_sink, NULL, UT_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kill_lock_holder, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_kill_lock_holder_with_waiter, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_create_value, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_create_nested, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_set_same_size, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_set_new_size, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_set_create, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_set_elem, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_resize_grow, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_resize_shrink, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_delete_key, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_delete_subtree, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_rename, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_link, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_copy, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_set_mode, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_txn3, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_txn_nested, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_crash_json_import, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
