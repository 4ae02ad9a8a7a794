/*
 * bench/bench_odb.c - ODB access costs against the limits of this machine.
 *
 * Every ODB call takes one robust process-shared mutex (the ODB lock), so
 * the floor of any call is one lock+unlock pair of such a mutex; copying a
 * value out cannot beat memcpy. Both limits are measured first, in this
 * run, and each single-operation ODB figure is shown as a multiple of the
 * lock pair ("x lock pair"). Multi-thread and multi-process figures are
 * aggregates (ops/s summed over the workers) and are compared with the
 * single-thread figure and with the same mutex taken by two workers.
 *
 * The ODB is created fresh (64 MiB, 65536 key slots) under a shm name
 * unique to this process and destroyed at exit, also when the run aborts.
 * Any unexpected return code aborts the run with the ODB error message.
 *
 * Usage: bench_odb [--quick]   (--quick: short runs, for smoke tests)
 */
#include "bench/bench_common.h"

#include "odb/odb.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define ODB_SIZE     (64u << 20)
#define ODB_KEYS     65536u
#define ARRAY_N      100
#define STRING_BYTES 256
#define SMALL_DIR_N  10
#define LARGE_DIR_N  10000
#define LIST_DIR_N   100
#define N_LOOKUPS    4096 /* precomputed random lookups, a power of two */
#define N_WORKERS    2
#define MIDAS_GETS_S 0.3e6
#define PATH_VALUE   "/Equipment/Sim/Variables/Value"
#define PATH_ARRAY   "/Equipment/Sim/Variables/Array"
#define PATH_STRING  "/Equipment/Sim/Variables/Text"
#define DIR_SMALL    "/Bench/SmallDir"
#define DIR_LARGE    "/Bench/LargeDir"
#define DIR_LIST     "/Bench/ListDir"
#define DIR_SCRATCH  "/Bench/Scratch"

static char shm_name[64];
static pid_t creator_pid;
static struct bench_opts opts;

/* Aborts the run naming the failed call, the error and the ODB message. */
#define CHECK(call)                                                                                \
    do {                                                                                           \
        int check_rc_ = (call);                                                                    \
        if (check_rc_ != 0)                                                                        \
            fail_call(#call, check_rc_, __LINE__);                                                 \
    } while (0)

static void fail_call(const char *what, int rc, int line) __attribute__((noreturn));
static void fail_call(const char *what, int rc, int line)
{
    bench_die("line %d: %s returned %d (%s): %s", line, what, rc, ut_strerror(rc), odb_errmsg());
}

/* Removes the segment name when the creating process exits (normally or
 * through bench_die); forked workers leave it alone. */
static void remove_segment(void)
{
    if (shm_name[0] && getpid() == creator_pid) {
        odb_destroy(shm_name);
        shm_name[0] = '\0';
    }
}

/* ---------------------------------------------------------------------- */
/* Limits                                                                  */
/* ---------------------------------------------------------------------- */

/* A robust, process-shared, normal mutex in MAP_SHARED memory: the kind
 * the ODB lock is built on. */
static pthread_mutex_t *shared_mutex_create(void)
{
    void *p = mmap(NULL, sizeof(pthread_mutex_t), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        bench_die("mmap: %s", strerror(errno));
    pthread_mutex_t *m = p;
    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (!rc)
        rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (!rc)
        rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (!rc)
        rc = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_NORMAL);
    if (!rc)
        rc = pthread_mutex_init(m, &attr);
    if (rc)
        bench_die("robust mutex init: %s", strerror(rc));
    pthread_mutexattr_destroy(&attr);
    return m;
}

static void op_lock_pair(void *arg, uint64_t n)
{
    pthread_mutex_t *m = arg;
    for (uint64_t i = 0; i < n; i++) {
        int rc = pthread_mutex_lock(m);
        if (rc)
            bench_die("pthread_mutex_lock: %s", strerror(rc));
        rc = pthread_mutex_unlock(m);
        if (rc)
            bench_die("pthread_mutex_unlock: %s", strerror(rc));
    }
}

struct copy_arg {
    uint8_t *dst;
    const uint8_t *src;
    size_t len;
};

static void op_memcpy(void *arg, uint64_t n)
{
    struct copy_arg *c = arg;
    for (uint64_t i = 0; i < n; i++) {
        bench_clobber(c->src);
        memcpy(c->dst, c->src, c->len);
        bench_clobber(c->dst);
    }
}

/* The project's own lock over the same kind of mutex: rank check, the
 * per-thread stack and the holder diagnostics, without any ODB work. */
static void op_ut_lock_pair(void *arg, uint64_t n)
{
    struct ut_lock *l = arg;
    for (uint64_t i = 0; i < n; i++) {
        CHECK(UT_LOCK(l));
        ut_lock_release(l);
    }
}

/* ---------------------------------------------------------------------- */
/* ODB operations                                                          */
/* ---------------------------------------------------------------------- */

struct ctx {
    struct odb *odb;
    struct odb_hkey h_value, h_array, h_string, h_scratch, h_list;
    int32_t expect_value; /* what h_value holds while gets run */
    char string_value[STRING_BYTES];
    const char *lookup_paths[N_LOOKUPS];
    struct odb_hkey lookup_expect[N_LOOKUPS];
};

static void op_get_handle(void *arg, uint64_t n)
{
    struct ctx *c = arg;
    for (uint64_t i = 0; i < n; i++) {
        int32_t v = 0;
        size_t size = sizeof v;
        CHECK(odb_get(c->odb, c->h_value, NULL, ODB_TYPE_INT32, &v, &size));
        if (v != c->expect_value || size != sizeof v)
            bench_die("get by handle read %d (%zu bytes), expected %d", v, size, c->expect_value);
    }
}

static void op_get_path(void *arg, uint64_t n)
{
    struct ctx *c = arg;
    for (uint64_t i = 0; i < n; i++) {
        int32_t v = 0;
        size_t size = sizeof v;
        CHECK(odb_get(c->odb, ODB_ROOT, PATH_VALUE, ODB_TYPE_INT32, &v, &size));
        if (v != c->expect_value || size != sizeof v)
            bench_die("get by path read %d (%zu bytes), expected %d", v, size, c->expect_value);
    }
}

static void op_set_handle(void *arg, uint64_t n)
{
    struct ctx *c = arg;
    for (uint64_t i = 0; i < n; i++) {
        int32_t v = (int32_t)i;
        CHECK(odb_set(c->odb, c->h_value, NULL, ODB_TYPE_INT32, &v, sizeof v, 1, 0));
    }
}

static void op_set_path(void *arg, uint64_t n)
{
    struct ctx *c = arg;
    for (uint64_t i = 0; i < n; i++) {
        int32_t v = (int32_t)i;
        CHECK(odb_set(c->odb, ODB_ROOT, PATH_VALUE, ODB_TYPE_INT32, &v, sizeof v, 1, 0));
    }
}

static void get_array(struct ctx *c, struct odb_hkey base, const char *path, uint64_t n)
{
    double a[ARRAY_N];
    for (uint64_t i = 0; i < n; i++) {
        size_t size = sizeof a;
        CHECK(odb_get(c->odb, base, path, ODB_TYPE_DOUBLE, a, &size));
        if (size != sizeof a)
            bench_die("array get returned %zu bytes", size);
        bench_clobber(a);
    }
}

static void set_array(struct ctx *c, struct odb_hkey base, const char *path, uint64_t n)
{
    double a[ARRAY_N];
    for (int j = 0; j < ARRAY_N; j++)
        a[j] = j * 0.5;
    for (uint64_t i = 0; i < n; i++) {
        a[i % ARRAY_N] = (double)i;
        CHECK(odb_set(c->odb, base, path, ODB_TYPE_DOUBLE, a, sizeof a, ARRAY_N, 0));
    }
}

static void get_string(struct ctx *c, struct odb_hkey base, const char *path, uint64_t n)
{
    char s[STRING_BYTES];
    for (uint64_t i = 0; i < n; i++) {
        size_t size = sizeof s;
        CHECK(odb_get(c->odb, base, path, ODB_TYPE_STRING, s, &size));
        if (size != STRING_BYTES)
            bench_die("string get returned %zu bytes, expected %d", size, STRING_BYTES);
        bench_clobber(s);
    }
}

static void set_string(struct ctx *c, struct odb_hkey base, const char *path, uint64_t n)
{
    char s[STRING_BYTES];
    memcpy(s, c->string_value, sizeof s);
    for (uint64_t i = 0; i < n; i++) {
        s[i % (STRING_BYTES - 1)] = (char)('a' + i % 26);
        CHECK(odb_set(c->odb, base, path, ODB_TYPE_STRING, s, sizeof s, 1, 0));
    }
}

static void op_array_get_handle(void *arg, uint64_t n)
{
    struct ctx *c = arg;
    get_array(c, c->h_array, NULL, n);
}

static void op_array_get_path(void *arg, uint64_t n)
{
    get_array(arg, ODB_ROOT, PATH_ARRAY, n);
}

static void op_array_set_handle(void *arg, uint64_t n)
{
    struct ctx *c = arg;
    set_array(c, c->h_array, NULL, n);
}

static void op_array_set_path(void *arg, uint64_t n)
{
    set_array(arg, ODB_ROOT, PATH_ARRAY, n);
}

static void op_string_get_handle(void *arg, uint64_t n)
{
    struct ctx *c = arg;
    get_string(c, c->h_string, NULL, n);
}

static void op_string_get_path(void *arg, uint64_t n)
{
    get_string(arg, ODB_ROOT, PATH_STRING, n);
}

static void op_string_set_handle(void *arg, uint64_t n)
{
    struct ctx *c = arg;
    set_string(c, c->h_string, NULL, n);
}

static void op_string_set_path(void *arg, uint64_t n)
{
    set_string(arg, ODB_ROOT, PATH_STRING, n);
}

static void op_lookup(void *arg, uint64_t n)
{
    struct ctx *c = arg;
    for (uint64_t i = 0; i < n; i++) {
        size_t j = (size_t)(i & (N_LOOKUPS - 1));
        struct odb_hkey h;
        CHECK(odb_find(c->odb, ODB_ROOT, c->lookup_paths[j], &h));
        if (h.idx != c->lookup_expect[j].idx || h.gen != c->lookup_expect[j].gen)
            bench_die("odb_find('%s') found the wrong key", c->lookup_paths[j]);
    }
}

static void op_create_delete(void *arg, uint64_t n)
{
    struct ctx *c = arg;
    for (uint64_t i = 0; i < n; i++) {
        CHECK(odb_create(c->odb, c->h_scratch, "tmp", ODB_TYPE_INT32, 1, 0, NULL));
        CHECK(odb_delete(c->odb, c->h_scratch, "tmp", false));
    }
}

static void op_dir_list(void *arg, uint64_t n)
{
    struct ctx *c = arg;
    for (uint64_t i = 0; i < n; i++) {
        struct odb_dirent *ents = NULL;
        size_t n_ents = 0;
        CHECK(odb_dir_list(c->odb, c->h_list, &ents, &n_ents));
        if (n_ents != LIST_DIR_N)
            bench_die("odb_dir_list returned %zu entries, expected %d", n_ents, LIST_DIR_N);
        odb_dirents_free(ents);
    }
}

/* ---------------------------------------------------------------------- */
/* Concurrent workers                                                      */
/* ---------------------------------------------------------------------- */

struct worker {
    pthread_t thread;
    pthread_barrier_t *barrier;
    bench_fn fn;
    void *arg;
    struct bench_result result;
};

static void *worker_main(void *p)
{
    struct worker *w = p;
    int rc = pthread_barrier_wait(w->barrier);
    if (rc != 0 && rc != PTHREAD_BARRIER_SERIAL_THREAD)
        bench_die("pthread_barrier_wait: %s", strerror(rc));
    w->result = bench_measure(w->fn, w->arg, &opts);
    return NULL;
}

/* Runs fn in N_WORKERS threads at once (each with its own arg) and returns
 * the aggregate: the sum of the workers' rates. */
static struct bench_result run_threads(bench_fn fn, void *const *args)
{
    struct worker w[N_WORKERS];
    pthread_barrier_t barrier;
    int rc = pthread_barrier_init(&barrier, NULL, N_WORKERS);
    if (rc)
        bench_die("pthread_barrier_init: %s", strerror(rc));
    for (int i = 0; i < N_WORKERS; i++) {
        w[i] = (struct worker){.barrier = &barrier, .fn = fn, .arg = args[i]};
        rc = pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
        if (rc)
            bench_die("pthread_create: %s", strerror(rc));
    }
    struct bench_result sum = {0, 0, 0.0, 0.0};
    for (int i = 0; i < N_WORKERS; i++) {
        rc = pthread_join(w[i].thread, NULL);
        if (rc)
            bench_die("pthread_join: %s", strerror(rc));
        sum.ops += w[i].result.ops;
        sum.ns = w[i].result.ns > sum.ns ? w[i].result.ns : sum.ns;
        sum.rate += w[i].result.rate;
    }
    pthread_barrier_destroy(&barrier);
    sum.ns_each = sum.rate > 0 ? 1e9 / sum.rate : 0.0;
    return sum;
}

/* Reads exactly len bytes. Returns false at end of file (the writers
 * are gone); other errors abort the run. */
static bool read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            bench_die("read from pipe: %s", strerror(errno));
        if (r == 0)
            return false;
        p += r;
        len -= (size_t)r;
    }
    return true;
}

static void write_full(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            bench_die("write to pipe: %s", strerror(errno));
        p += w;
        len -= (size_t)w;
    }
}

/* The per-process setup of a forked worker: `setup` returns the argument
 * for fn (e.g. an ODB attached in the child); `teardown` undoes it. */
typedef void *(*proc_setup_fn)(void *arg);
typedef void (*proc_teardown_fn)(void *state);

/* Runs fn in N_WORKERS forked processes at once and returns the aggregate.
 * Each child runs setup, reports ready, waits for the start byte, measures,
 * and writes its result to a pipe. A child that fails exits non-zero and
 * the whole run aborts. */
static struct bench_result run_processes(bench_fn fn, proc_setup_fn setup,
                                         proc_teardown_fn teardown, void *arg)
{
    int ready[2], go[2], res[2];
    if (pipe(ready) || pipe(go) || pipe(res))
        bench_die("pipe: %s", strerror(errno));
    pid_t pids[N_WORKERS];
    /* Flushed so that the children do not print the parent's buffer again;
     * a failed flush to the console is not worth stopping the run for. */
    (void)fflush(stdout);
    (void)fflush(stderr);
    for (int i = 0; i < N_WORKERS; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            bench_die("fork: %s", strerror(errno));
        if (pids[i] == 0) {
            close(ready[0]);
            close(go[1]);
            close(res[0]);
            void *state = setup(arg);
            char byte = 'r';
            write_full(ready[1], &byte, 1);
            close(ready[1]); /* so that the parent sees EOF if a sibling fails */
            if (!read_full(go[0], &byte, 1))
                _exit(3); /* the parent gave up */
            struct bench_result r = bench_measure(fn, state, &opts);
            teardown(state);
            write_full(res[1], &r, sizeof r);
            _exit(0);
        }
    }
    close(ready[1]);
    close(go[0]);
    close(res[1]);
    /* A worker that fails closes its pipe ends by exiting: then the reads
     * below see end of file, and the exit statuses tell what happened. */
    char bytes[N_WORKERS];
    bool ok = read_full(ready[0], bytes, N_WORKERS);
    if (ok) {
        memset(bytes, 'g', sizeof bytes);
        write_full(go[1], bytes, N_WORKERS);
    }
    close(go[1]);
    struct bench_result sum = {0, 0, 0.0, 0.0};
    for (int i = 0; ok && i < N_WORKERS; i++) {
        struct bench_result r;
        if (!read_full(res[0], &r, sizeof r)) {
            ok = false;
            break;
        }
        sum.ops += r.ops;
        sum.ns = r.ns > sum.ns ? r.ns : sum.ns;
        sum.rate += r.rate;
    }
    for (int i = 0; i < N_WORKERS; i++) {
        int status;
        while (waitpid(pids[i], &status, 0) < 0) {
            if (errno != EINTR)
                bench_die("waitpid: %s", strerror(errno));
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            bench_die("worker process %d failed (status 0x%x)", (int)pids[i], status);
    }
    if (!ok)
        bench_die("a worker process closed its pipe early");
    close(ready[0]);
    close(res[0]);
    sum.ns_each = sum.rate > 0 ? 1e9 / sum.rate : 0.0;
    return sum;
}

static void *mutex_proc_setup(void *arg)
{
    return arg; /* the mutex lives in MAP_SHARED memory, inherited */
}

static void noop_teardown(void *state)
{
    (void)state;
}

/* A forked worker attaches to the ODB by name, as a separate client
 * would, and reads the value by the handle found by the parent. */
static void *odb_proc_setup(void *arg)
{
    const struct ctx *parent = arg;
    struct ctx *c = malloc(sizeof *c);
    if (!c)
        bench_die("out of memory");
    *c = *parent;
    CHECK(odb_open(shm_name, 0, NULL, &c->odb));
    return c;
}

static void odb_proc_teardown(void *state)
{
    struct ctx *c = state;
    odb_close(c->odb);
    free(c);
}

/* ---------------------------------------------------------------------- */
/* Setup                                                                   */
/* ---------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rng_next(uint32_t bound)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % bound);
}

/* Creates dir/item00000 .. item<n-1> (INT32) and returns nothing; every
 * name has the same length so lookups differ only in directory size. */
static void fill_dir(struct odb *odb, const char *dir, int n)
{
    struct odb_hkey d;
    CHECK(odb_create(odb, ODB_ROOT, dir, ODB_TYPE_DIR, 0, 0, &d));
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "item%05d", i);
        CHECK(odb_create(odb, d, name, ODB_TYPE_INT32, 1, 0, NULL));
    }
}

/* Fills c->lookup_paths with N_LOOKUPS random existing paths of `dir`
 * (n entries) and the handles they must resolve to. With n_distinct > 0,
 * the lookups cycle randomly over only that many random names of the
 * directory (a cache-hot variant). `storage` holds the strings,
 * N_LOOKUPS * PATH_STRIDE bytes, packed so that the benchmark's own data
 * takes little cache. */
#define PATH_STRIDE 32
static void make_lookups(struct ctx *c, const char *dir, int n, int n_distinct, char *storage)
{
    uint32_t picks[SMALL_DIR_N];
    for (int i = 0; i < n_distinct && i < SMALL_DIR_N; i++)
        picks[i] = rng_next((uint32_t)n);
    for (int i = 0; i < N_LOOKUPS; i++) {
        char *p = storage + (size_t)i * PATH_STRIDE;
        uint32_t k = n_distinct > 0 ? picks[rng_next((uint32_t)n_distinct)] : rng_next((uint32_t)n);
        int len = snprintf(p, PATH_STRIDE, "%s/item%05u", dir, k);
        if (len < 0 || len >= PATH_STRIDE)
            bench_die("lookup path too long for its slot");
        c->lookup_paths[i] = p;
        CHECK(odb_find(c->odb, ODB_ROOT, p, &c->lookup_expect[i]));
    }
}

static void setup_odb(struct ctx *c)
{
    snprintf(shm_name, sizeof shm_name, "/aurum.bench_odb.%d", (int)getpid());
    creator_pid = getpid();
    odb_destroy(shm_name); /* a leftover of a crashed run with our pid */
    if (atexit(remove_segment) != 0)
        bench_die("atexit failed");
    struct odb_params params = {.size_bytes = ODB_SIZE, .max_keys = ODB_KEYS};
    CHECK(odb_open(shm_name, ODB_OPEN_CREATE, &params, &c->odb));
    struct odb *odb = c->odb;

    CHECK(odb_create(odb, ODB_ROOT, PATH_VALUE, ODB_TYPE_INT32, 1, 0, &c->h_value));
    c->expect_value = 12345;
    CHECK(odb_set(odb, c->h_value, NULL, ODB_TYPE_INT32, &c->expect_value, sizeof c->expect_value,
                  1, 0));
    CHECK(odb_create(odb, ODB_ROOT, PATH_ARRAY, ODB_TYPE_DOUBLE, ARRAY_N, 0, &c->h_array));
    CHECK(odb_create(odb, ODB_ROOT, PATH_STRING, ODB_TYPE_STRING, 1, STRING_BYTES, &c->h_string));
    /* A full 255-character string, so every get copies 256 bytes. */
    for (int i = 0; i < STRING_BYTES - 1; i++)
        c->string_value[i] = (char)('A' + i % 26);
    c->string_value[STRING_BYTES - 1] = '\0';
    CHECK(odb_set(odb, c->h_string, NULL, ODB_TYPE_STRING, c->string_value, STRING_BYTES, 1, 0));

    fill_dir(odb, DIR_SMALL, SMALL_DIR_N);
    fill_dir(odb, DIR_LARGE, LARGE_DIR_N);
    fill_dir(odb, DIR_LIST, LIST_DIR_N);
    CHECK(odb_find(odb, ODB_ROOT, DIR_LIST, &c->h_list));
    CHECK(odb_create(odb, ODB_ROOT, DIR_SCRATCH, ODB_TYPE_DIR, 0, 0, &c->h_scratch));
}

/* ---------------------------------------------------------------------- */
/* Report                                                                  */
/* ---------------------------------------------------------------------- */

static double lock_pair_ns;
static int n_targets, n_met;

/* Prints a row whose ratio column is "x lock pair", and a target text. */
static void row_vs_lock(const char *name, const struct bench_result *r, const char *target)
{
    char ratio[32];
    snprintf(ratio, sizeof ratio, "%.2fx lock pair", r->ns_each / lock_pair_ns);
    bench_row(name, r, ratio, target);
}

/* Formats "target <text>: MET|MISSED" into buf and counts it. */
static const char *target_text(char *buf, size_t size, const char *text, bool met)
{
    n_targets++;
    n_met += met;
    snprintf(buf, size, "target %s: %s", text, met ? "MET" : "MISSED");
    return buf;
}

int main(int argc, char **argv)
{
    bool quick = false;
    opts = bench_parse_args(argc, argv, &quick);
    int64_t t_start = bench_now_ns();
    printf("bench_odb: ODB access vs. robust-mutex and memcpy limits (%s: %.2f s warm-up, "
           "%.2f s per figure)\n",
           quick ? "quick" : "full", opts.warm_s, opts.run_s);
    /* Other load on the machine makes every figure pessimistic (wall-clock
     * time includes time spent descheduled); say so next to the table. */
    double load = 0.0;
    long n_cpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (getloadavg(&load, 1) != 1)
        load = -1.0;
    printf("machine: %ld CPUs, load average %.2f at start%s\n", n_cpu, load,
           n_cpu > 0 && load > 0.5 * (double)n_cpu ? " (busy: figures are pessimistic)" : "");
    printf("MIDAS reference (measured on this machine by the project): ~0.3 M gets/s\n\n");
    bench_header();

    /* Limits. */
    pthread_mutex_t *m = shared_mutex_create();
    struct bench_result r_lock = bench_measure(op_lock_pair, m, &opts);
    lock_pair_ns = r_lock.ns_each;
    bench_row("LIMIT lock+unlock pair (robust, pshared)", &r_lock, "1.00x lock pair", NULL);

    void *margs[N_WORKERS] = {m, m};
    struct bench_result r_lock2t = run_threads(op_lock_pair, margs);
    char ratio[64], tgt[96];
    snprintf(ratio, sizeof ratio, "%.2fx 1 thread", r_lock2t.rate / r_lock.rate);
    bench_row("LIMIT lock pair, 2 threads, same mutex (aggr)", &r_lock2t, ratio, NULL);
    struct bench_result r_lock2p = run_processes(op_lock_pair, mutex_proc_setup, noop_teardown, m);
    snprintf(ratio, sizeof ratio, "%.2fx 1 thread", r_lock2p.rate / r_lock.rate);
    bench_row("LIMIT lock pair, 2 procs, same mutex (aggr)", &r_lock2p, ratio, NULL);

    static const size_t copy_sizes[] = {64u << 10, 1u << 20};
    for (size_t i = 0; i < sizeof copy_sizes / sizeof copy_sizes[0]; i++) {
        struct copy_arg ca = {malloc(copy_sizes[i]), malloc(copy_sizes[i]), copy_sizes[i]};
        if (!ca.dst || !ca.src)
            bench_die("out of memory");
        memset(ca.dst, 0, ca.len);
        memset((void *)ca.src, 1, ca.len);
        struct bench_result r = bench_measure(op_memcpy, &ca, &opts);
        char name[64];
        snprintf(name, sizeof name, "LIMIT memcpy %zu KiB", copy_sizes[i] >> 10);
        snprintf(ratio, sizeof ratio, "%.1f GB/s", (double)ca.len * r.rate / 1e9);
        bench_row(name, &r, ratio, NULL);
        free(ca.dst);
        free((void *)ca.src);
    }
    if (munmap(m, sizeof(pthread_mutex_t)) != 0)
        bench_die("munmap: %s", strerror(errno));

    /* The ODB. */
    static struct ctx c;
    setup_odb(&c);

    /* The project lock alone, bound to a fresh robust mutex in shm. */
    struct ut_shlock *sl =
        mmap(NULL, sizeof *sl, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sl == MAP_FAILED)
        bench_die("mmap: %s", strerror(errno));
    CHECK(ut_shlock_init(sl));
    struct ut_lock ul;
    ut_lock_bind(&ul, sl, "bench", UT_RANK_ODB, 10000, NULL, NULL);
    struct bench_result r = bench_measure(op_ut_lock_pair, &ul, &opts);
    row_vs_lock("ut_lock acquire+release (project lock)", &r, NULL);
    munmap(sl, sizeof *sl);

    struct bench_result r_get_h = bench_measure(op_get_handle, &c, &opts);
    bool met = r_get_h.ns_each <= 4.0 * lock_pair_ns;
    row_vs_lock("get INT32 by handle", &r_get_h,
                target_text(tgt, sizeof tgt, "<= 4x lock pair", met));
    r = bench_measure(op_get_path, &c, &opts);
    row_vs_lock("get INT32 by path (depth 4)", &r,
                target_text(tgt, sizeof tgt, ">= 3 M ops/s", r.rate >= 3e6));
    r = bench_measure(op_set_handle, &c, &opts);
    row_vs_lock("set INT32 by handle", &r,
                target_text(tgt, sizeof tgt, ">= 3 M ops/s", r.rate >= 3e6));
    r = bench_measure(op_set_path, &c, &opts);
    row_vs_lock("set INT32 by path (depth 4)", &r, NULL);
    /* Restore the value the get workers below verify. */
    CHECK(odb_set(c.odb, c.h_value, NULL, ODB_TYPE_INT32, &c.expect_value, sizeof c.expect_value, 1,
                  0));

    r = bench_measure(op_array_get_handle, &c, &opts);
    row_vs_lock("get DOUBLE[100] by handle", &r, NULL);
    r = bench_measure(op_array_get_path, &c, &opts);
    row_vs_lock("get DOUBLE[100] by path", &r, NULL);
    r = bench_measure(op_array_set_handle, &c, &opts);
    row_vs_lock("set DOUBLE[100] by handle", &r, NULL);
    r = bench_measure(op_array_set_path, &c, &opts);
    row_vs_lock("set DOUBLE[100] by path", &r, NULL);

    r = bench_measure(op_string_get_handle, &c, &opts);
    row_vs_lock("get STRING[256] by handle", &r, NULL);
    r = bench_measure(op_string_get_path, &c, &opts);
    row_vs_lock("get STRING[256] by path", &r, NULL);
    r = bench_measure(op_string_set_handle, &c, &opts);
    row_vs_lock("set STRING[256] by handle", &r, NULL);
    r = bench_measure(op_string_set_path, &c, &opts);
    row_vs_lock("set STRING[256] by path", &r, NULL);

    char *paths = malloc((size_t)N_LOOKUPS * PATH_STRIDE);
    if (!paths)
        bench_die("out of memory");
    make_lookups(&c, DIR_SMALL, SMALL_DIR_N, 0, paths);
    struct bench_result r_small = bench_measure(op_lookup, &c, &opts);
    row_vs_lock("odb_find in 10-entry dir (depth 3)", &r_small, NULL);
    make_lookups(&c, DIR_LARGE, LARGE_DIR_N, 0, paths);
    struct bench_result r_large = bench_measure(op_lookup, &c, &opts);
    double lookup_ratio = r_large.ns_each / r_small.ns_each;
    char tname[96];
    snprintf(tname, sizeof tname, "<= 1.5x 10-entry (is %.2fx)", lookup_ratio);
    row_vs_lock("odb_find in 10000-entry dir (depth 3)", &r_large,
                target_text(tgt, sizeof tgt, tname, lookup_ratio <= 1.5));
    /* The same directory, but only 10 of its names: what remains of the
     * difference above is cache misses, not the lookup algorithm. */
    make_lookups(&c, DIR_LARGE, LARGE_DIR_N, SMALL_DIR_N, paths);
    r = bench_measure(op_lookup, &c, &opts);
    snprintf(ratio, sizeof ratio, "%.2fx 10-entry dir", r.ns_each / r_small.ns_each);
    bench_row("  same, 10 names only (cache-hot)", &r, ratio, NULL);

    r = bench_measure(op_create_delete, &c, &opts);
    row_vs_lock("create+delete INT32 (pair per op)", &r, NULL);
    r = bench_measure(op_dir_list, &c, &opts);
    row_vs_lock("odb_dir_list of 100 entries", &r, NULL);

    void *cargs[N_WORKERS] = {&c, &c};
    r = run_threads(op_get_handle, cargs);
    snprintf(ratio, sizeof ratio, "%.2fx 1 thread", r.rate / r_get_h.rate);
    snprintf(tname, sizeof tname, "limit: lock pair 2 threads %.2f M/s", r_lock2t.rate / 1e6);
    bench_row("get INT32 by handle, 2 threads (aggr)", &r, ratio, tname);
    r = run_processes(op_get_handle, odb_proc_setup, odb_proc_teardown, &c);
    snprintf(ratio, sizeof ratio, "%.2fx 1 thread", r.rate / r_get_h.rate);
    snprintf(tname, sizeof tname, "limit: lock pair 2 procs %.2f M/s", r_lock2p.rate / 1e6);
    bench_row("get INT32 by handle, 2 procs (aggr)", &r, ratio, tname);

    snprintf(ratio, sizeof ratio, "%.1fx MIDAS", r_get_h.rate / MIDAS_GETS_S);
    printf("\nget INT32 by handle vs MIDAS reference (~0.3 M gets/s): %s\n", ratio);
    char report[512];
    int err = odb_check(c.odb, report, sizeof report);
    if (err)
        bench_die("odb_check after the run: %s (%s)", ut_strerror(err), report);
    free(paths);
    odb_close(c.odb);
    remove_segment();
    printf("targets met: %d of %d; total time %.1f s\n", n_met, n_targets,
           (double)(bench_now_ns() - t_start) / 1e9);
    return 0;
}
