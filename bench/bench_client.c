/*
 * bench/bench_client.c - client-layer costs against the limits of this
 * machine: connecting, system messages, watch notifications, and the
 * MIDAS seed test's wall time.
 *
 * Figures and the limit each is compared with (both measured in this run):
 *
 *   connect+disconnect     one process, sequential, (a) alone - every
 *                          disconnect is the last client's, so it also
 *                          saves odb.json - and (b) with another connection
 *                          open. Split into au_connect and au_disconnect,
 *                          against the cost of merely attaching the two
 *                          segments (odb_open + mb_msgring_open + closes);
 *                          the SQLite message-log sync every disconnect
 *                          does is shown on its own.
 *   connect, 200 present   connect+disconnect with 200 other connections
 *                          present, unique name vs. a name all 200 share
 *                          (the duplicate gets a numbered name).
 *   post -> read latency   poster process -> reader process blocked in
 *                          mb_msg_wait (median, p99), against the one-way
 *                          wake-up of a raw FUTEX_WAKE/FUTEX_WAIT between
 *                          two processes on MAP_SHARED memory, measured the
 *                          same way; the futex ping-pong round trip is
 *                          printed too.
 *   posts/s                au_msg, one process, nobody waiting, against the
 *                          floor of a post: robust-mutex lock pair +
 *                          clock_gettime + snprintf of the same text into
 *                          shared memory.
 *   watch latency          odb_set in one process -> its au_dispatch
 *                          callback in another (median, p99), against the
 *                          same futex wake-up.
 *   seed test              50 concurrent `odbedit -c 'ls -l /System/Clients'`
 *                          (build/<V>/bin/odbedit next to this program),
 *                          against 50 concurrent `odbedit --help` (exec and
 *                          exit, no connection); "skipped" without odbedit.
 *
 * One-way latencies use CLOCK_MONOTONIC, which all processes share: the
 * sender stores its send time in shared memory, the receiver subtracts it
 * from its receive time. Between samples the sender waits for the
 * receiver's acknowledgement and then 100 us more, so that the receiver is
 * asleep in the kernel again when the next sample starts: these are
 * wake-up latencies, not spinning ones. The limit and our series are taken
 * in alternating rounds (N_ROUNDS), so that the load of a shared machine
 * changing during the run affects them alike.
 *
 * The connections of the latency and throughput parts run without the
 * watchdog thread (AU_CONNECT_NO_WATCHDOG_THREAD), so that its periodic
 * SQLite work does not land in the figures; connect cycles keep it, as it
 * is part of what a connect costs. The experiment is a fresh temporary
 * directory, removed at exit together with its shared-memory segments.
 *
 * Usage: bench_client [--quick]   (--quick: fewer samples, for smoke tests)
 */
#include "bench/bench_common.h"

#include "client/aurum.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define N_PRESENT  200
#define N_SEED     50
#define GAP_US     100
#define WATCH_PATH "/Bench/Watch/t"

static char exp_dir[PATH_MAX];
static pid_t creator_pid;
static struct bench_opts opts;
static int n_samples = 3000; /* per latency figure */
static int n_chunk;          /* samples per round; the figures alternate in rounds */
#define N_ROUNDS 6

#define CHECK(call)                                                                                \
    do {                                                                                           \
        int check_rc_ = (call);                                                                    \
        if (check_rc_ != 0)                                                                        \
            bench_die("line %d: %s returned %d (%s): %s", __LINE__, #call, check_rc_,              \
                      ut_strerror(check_rc_), odb_errmsg());                                       \
    } while (0)

/* Shared between this process and its helpers. */
struct shared {
    atomic_uint word_a; /* futex: sender -> receiver */
    atomic_uint word_b; /* futex: receiver -> sender (ping-pong) */
    atomic_int ack;     /* samples the receiver has taken */
    atomic_int ready;   /* the helper is connected / waiting */
    atomic_int done;
    atomic_llong t_send; /* CLOCK_MONOTONIC ns of the current sample */
    int64_t *wake_ns;    /* n_chunk: post -> mb_msg_wait returned (messages only) */
    int64_t lat_ns[];    /* n_chunk one-way latencies */
};

static struct shared *sh;

/* ---------------------------------------------------------------------- */
/* Helpers                                                                 */
/* ---------------------------------------------------------------------- */

static void remove_experiment(void)
{
    if (!exp_dir[0] || getpid() != creator_pid)
        return;
    au_experiment_remove_segments(exp_dir);
    DIR *d = opendir(exp_dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[PATH_MAX + 256];
            snprintf(p, sizeof p, "%s/%s", exp_dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(exp_dir);
    exp_dir[0] = '\0';
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void futex_wait(atomic_uint *w, unsigned val)
{
    syscall(SYS_futex, w, FUTEX_WAIT, val, NULL, NULL, 0);
}

static void futex_wake(atomic_uint *w)
{
    syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

struct pct {
    double med_us, p99_us;
};

static struct pct percentiles(int64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_i64);
    int mid = n / 2, p99 = n * 99 / 100;
    struct pct p = {(double)v[mid] / 1e3, (double)v[p99] / 1e3};
    return p;
}

static pid_t fork_helper(void (*fn)(void))
{
    (void)fflush(NULL); /* console output; nothing to do if it fails */
    pid_t pid = fork();
    if (pid < 0)
        bench_die("fork: %s", strerror(errno));
    if (pid == 0) {
        alarm(120);
        fn();
        _exit(0);
    }
    return pid;
}

static void reap(pid_t pid)
{
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        bench_die("helper %d failed (status 0x%x)", (int)pid, st);
}

static void wait_ack(int i)
{
    while (atomic_load(&sh->ack) < i)
        sched_yield();
}

static void reset_shared(void)
{
    atomic_store(&sh->word_a, 0);
    atomic_store(&sh->word_b, 0);
    atomic_store(&sh->ack, 0);
    atomic_store(&sh->ready, 0);
    atomic_store(&sh->done, 0);
}

static struct au_client *connect_bench(const char *name, unsigned flags)
{
    struct au_connect_opts o = {0};
    o.name = name;
    o.experiment = exp_dir;
    o.flags = flags;
    struct au_client *c = NULL;
    CHECK(au_connect(&o, &c));
    return c;
}

static void print_latency(const char *name, struct pct p, const char *ratio)
{
    printf("%-46s %8.1f us median %8.1f us p99  %s\n", name, p.med_us, p.p99_us, ratio);
    (void)fflush(stdout); /* console output; nothing to do if it fails */
}

/* ---------------------------------------------------------------------- */
/* Limit: raw futex wake-up between two processes                          */
/* ---------------------------------------------------------------------- */

static void futex_receiver(void)
{
    unsigned seen = 0;
    atomic_store(&sh->ready, 1);
    for (int i = 0; i < n_chunk; i++) {
        while (atomic_load(&sh->word_a) == seen)
            futex_wait(&sh->word_a, seen);
        int64_t t = bench_now_ns();
        seen = atomic_load(&sh->word_a);
        sh->lat_ns[i] = t - atomic_load(&sh->t_send);
        atomic_store(&sh->ack, i + 1);
    }
}

static void futex_ponger(void)
{
    unsigned seen = 0;
    for (int i = 0; i < n_chunk; i++) {
        while (atomic_load(&sh->word_a) == seen)
            futex_wait(&sh->word_a, seen);
        seen = atomic_load(&sh->word_a);
        atomic_fetch_add(&sh->word_b, 1);
        futex_wake(&sh->word_b);
    }
}

static void measure_futex_oneway(int64_t *out)
{
    reset_shared();
    pid_t pid = fork_helper(futex_receiver);
    while (!atomic_load(&sh->ready))
        sched_yield();
    for (int i = 0; i < n_chunk; i++) {
        wait_ack(i);
        sleep_us(GAP_US);
        atomic_store(&sh->t_send, bench_now_ns());
        atomic_fetch_add(&sh->word_a, 1);
        futex_wake(&sh->word_a);
    }
    wait_ack(n_chunk);
    reap(pid);
    memcpy(out, sh->lat_ns, (size_t)n_chunk * sizeof *out);
}

static void measure_futex_rtt(int64_t *out)
{
    reset_shared();
    pid_t pid = fork_helper(futex_ponger);
    unsigned seen = 0;
    for (int i = 0; i < n_chunk; i++) {
        int64_t t0 = bench_now_ns();
        atomic_fetch_add(&sh->word_a, 1);
        futex_wake(&sh->word_a);
        while (atomic_load(&sh->word_b) == seen)
            futex_wait(&sh->word_b, seen);
        seen = atomic_load(&sh->word_b);
        out[i] = bench_now_ns() - t0;
    }
    reap(pid);
}

/* ---------------------------------------------------------------------- */
/* Messages                                                                */
/* ---------------------------------------------------------------------- */

static void msg_reader(void)
{
    struct au_client *c = connect_bench("reader", AU_CONNECT_NO_WATCHDOG_THREAD);
    struct mb_msgring *ring = au_msgring(c);
    uint64_t after = mb_msg_last_seq(ring);
    struct mb_msg m;
    atomic_store(&sh->ready, 1);
    for (int i = 0; i < n_chunk; i++) {
        int err;
        while ((err = mb_msg_wait(ring, after, 5000)) == UT_ETIMEOUT)
            ;
        CHECK(err);
        sh->wake_ns[i] = bench_now_ns() - atomic_load(&sh->t_send);
        size_t n = 0;
        CHECK(mb_msg_read(ring, after, &m, 1, &n, NULL));
        int64_t t = bench_now_ns();
        if (n != 1)
            bench_die("mb_msg_read returned %zu messages", n);
        after = m.seq;
        sh->lat_ns[i] = t - atomic_load(&sh->t_send);
        atomic_store(&sh->ack, i + 1);
    }
    au_disconnect(c);
}

static void measure_msg_latency(int64_t *out, int64_t *wake_out)
{
    reset_shared();
    pid_t pid = fork_helper(msg_reader);
    while (!atomic_load(&sh->ready))
        sched_yield();
    struct au_client *c = connect_bench("poster", AU_CONNECT_NO_WATCHDOG_THREAD);
    for (int i = 0; i < n_chunk; i++) {
        wait_ack(i);
        sleep_us(GAP_US);
        atomic_store(&sh->t_send, bench_now_ns());
        CHECK(au_msg(c, MB_MSG_INFO, "bench sample %d", i));
    }
    wait_ack(n_chunk);
    reap(pid);
    au_disconnect(c);
    memcpy(wake_out, sh->wake_ns, (size_t)n_chunk * sizeof *wake_out);
    memcpy(out, sh->lat_ns, (size_t)n_chunk * sizeof *out);
}

static void op_post(void *arg, uint64_t n)
{
    struct au_client *c = arg;
    for (uint64_t i = 0; i < n; i++)
        CHECK(au_msg(c, MB_MSG_INFO, "bench post %llu", (unsigned long long)i));
}

/* The floor of a post: the ring's kind of lock, the time stamp, the
 * formatting and the copy into shared memory. */
struct post_floor {
    pthread_mutex_t *m;
    char *slot; /* MAP_SHARED */
};

static void op_post_floor(void *arg, uint64_t n)
{
    struct post_floor *f = arg;
    for (uint64_t i = 0; i < n; i++) {
        if (pthread_mutex_lock(f->m) != 0)
            bench_die("pthread_mutex_lock failed");
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        memcpy(f->slot, &ts, sizeof ts);
        snprintf(f->slot + 64, 1024, "bench post %llu", (unsigned long long)i);
        bench_clobber(f->slot);
        pthread_mutex_unlock(f->m);
    }
}

static pthread_mutex_t *shared_mutex_create(void)
{
    void *p = mmap(NULL, sizeof(pthread_mutex_t), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        bench_die("mmap: %s", strerror(errno));
    pthread_mutex_t *m = p;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (pthread_mutex_init(m, &attr) != 0)
        bench_die("pthread_mutex_init failed");
    pthread_mutexattr_destroy(&attr);
    return m;
}

/* ---------------------------------------------------------------------- */
/* Watches                                                                 */
/* ---------------------------------------------------------------------- */

static int watch_i;

static void watch_cb(struct au_client *c, struct odb_hkey key, void *arg)
{
    (void)c;
    (void)key;
    (void)arg;
    int64_t t = bench_now_ns();
    if (watch_i < n_chunk) {
        sh->lat_ns[watch_i] = t - atomic_load(&sh->t_send);
        watch_i++;
        atomic_store(&sh->ack, watch_i);
    }
}

static void watcher(void)
{
    struct au_client *c = connect_bench("watcher", AU_CONNECT_NO_WATCHDOG_THREAD);
    uint32_t id;
    CHECK(au_watch_add(c, WATCH_PATH, watch_cb, NULL, &id));
    atomic_store(&sh->ready, 1);
    while (watch_i < n_chunk) {
        int n = au_dispatch(c, 5000);
        if (n < 0)
            CHECK(n);
    }
    au_disconnect(c);
}

static void measure_watch_latency(int64_t *out)
{
    reset_shared();
    struct au_client *c = connect_bench("setter", AU_CONNECT_NO_WATCHDOG_THREAD);
    int64_t v = 0;
    CHECK(
        odb_set(au_odb(c), ODB_ROOT, WATCH_PATH, ODB_TYPE_INT64, &v, sizeof v, 1, ODB_SET_CREATE));
    au_disconnect(c);
    pid_t pid = fork_helper(watcher);
    while (!atomic_load(&sh->ready))
        sched_yield();
    c = connect_bench("setter", AU_CONNECT_NO_WATCHDOG_THREAD);
    for (int i = 0; i < n_chunk; i++) {
        wait_ack(i);
        sleep_us(GAP_US);
        v = bench_now_ns();
        atomic_store(&sh->t_send, v);
        CHECK(odb_set(au_odb(c), ODB_ROOT, WATCH_PATH, ODB_TYPE_INT64, &v, sizeof v, 1, 0));
    }
    wait_ack(n_chunk);
    reap(pid);
    au_disconnect(c);
    memcpy(out, sh->lat_ns, (size_t)n_chunk * sizeof *out);
}

/* ---------------------------------------------------------------------- */
/* Connect cycles                                                          */
/* ---------------------------------------------------------------------- */

struct cycle_arg {
    const char *name;
    unsigned flags;
    int64_t connect_ns, disconnect_ns; /* totals */
};

static void op_cycle(void *arg, uint64_t n)
{
    struct cycle_arg *a = arg;
    for (uint64_t i = 0; i < n; i++) {
        int64_t t0 = bench_now_ns();
        struct au_client *c = connect_bench(a->name, a->flags);
        int64_t t1 = bench_now_ns();
        au_disconnect(c);
        int64_t t2 = bench_now_ns();
        a->connect_ns += t1 - t0;
        a->disconnect_ns += t2 - t1;
    }
}

static void op_attach(void *arg, uint64_t n)
{
    (void)arg;
    char odb_shm[128], msg_shm[128];
    CHECK(ut_shm_name(exp_dir, "odb", odb_shm, sizeof odb_shm));
    CHECK(ut_shm_name(exp_dir, "msg", msg_shm, sizeof msg_shm));
    for (uint64_t i = 0; i < n; i++) {
        struct odb *o = NULL;
        struct mb_msgring *r = NULL;
        CHECK(odb_open(odb_shm, 0, NULL, &o));
        CHECK(mb_msgring_open(msg_shm, 0, NULL, &r));
        mb_msgring_close(r);
        odb_close(o);
    }
}

/* What every disconnect does besides the ODB: bring the SQLite message
 * log up to date (here with nothing new to copy). */
static void op_msglog_sync(void *arg, uint64_t n)
{
    struct mb_msgring *ring = arg;
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/messages.sqlite3", exp_dir);
    for (uint64_t i = 0; i < n; i++) {
        struct mb_msglog *log = NULL;
        CHECK(mb_msglog_open(path, &log));
        CHECK(mb_msglog_sync(log, ring));
        mb_msglog_close(log);
    }
}

static void cycle_row(const char *name, struct cycle_arg *a, const struct bench_result *r,
                      double attach_ns)
{
    double cycles = (double)r->ops;
    /* The split covers warm-up batches too; the shares are what matter. */
    double total = (double)(a->connect_ns + a->disconnect_ns);
    double conn_ns = r->ns_each * (double)a->connect_ns / total;
    double disc_ns = r->ns_each * (double)a->disconnect_ns / total;
    char ratio[64];
    snprintf(ratio, sizeof ratio, "%.1fx attach", r->ns_each / attach_ns);
    bench_row(name, r, ratio, NULL);
    printf("  split: au_connect %.1f us, au_disconnect %.1f us (%.0f cycles)\n", conn_ns / 1e3,
           disc_ns / 1e3, cycles);
}

/* ---------------------------------------------------------------------- */
/* Seed test                                                               */
/* ---------------------------------------------------------------------- */

/* Starts n copies of argv at once and waits for all; returns the wall time
 * in ns, or -1 if any failed. */
static int64_t run_concurrent(char *const argv[], int n)
{
    pid_t pids[N_SEED];
    (void)fflush(NULL); /* console output; nothing to do if it fails */
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            bench_die("fork: %s", strerror(errno));
        if (pids[i] == 0) {
            int fd = open("/dev/null", O_WRONLY);
            if (fd >= 0) {
                dup2(fd, 1);
                close(fd);
            }
            execv(argv[0], argv);
            _exit(127);
        }
    }
    int failed = 0;
    for (int i = 0; i < n; i++) {
        int st;
        if (waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failed++;
    }
    int64_t t = bench_now_ns() - t0;
    return failed ? -1 : t;
}

static void bench_seed(void)
{
    char self[PATH_MAX], odbedit[PATH_MAX + 32];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) {
        printf("seed test: skipped (cannot find this program's path)\n");
        return;
    }
    self[len] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    snprintf(odbedit, sizeof odbedit, "%s/../bin/odbedit", self);
    if (access(odbedit, X_OK) != 0) {
        printf("seed test: skipped (%s not built)\n", odbedit);
        return;
    }
    char *help[] = {odbedit, "--help", NULL};
    char *seed[] = {odbedit, "-e", exp_dir, "-c", "ls -l /System/Clients", NULL};
    int64_t t_exec = run_concurrent(help, N_SEED);
    int64_t t_seed = run_concurrent(seed, N_SEED);
    if (t_exec < 0 || t_seed < 0)
        bench_die("seed test: an odbedit failed");
    printf("%-46s %8.1f ms wall    LIMIT 50x odbedit --help (exec only) %.1f ms   %.1fx limit\n",
           "seed: 50x odbedit -c 'ls -l /System/Clients'", (double)t_seed / 1e6,
           (double)t_exec / 1e6, (double)t_seed / (double)t_exec);
}

/* ---------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    bool quick = false;
    opts = bench_parse_args(argc, argv, &quick);
    if (quick)
        n_samples = 300;
    n_chunk = n_samples / N_ROUNDS;
    creator_pid = getpid();
    const char *tmp = getenv("TMPDIR");
    snprintf(exp_dir, sizeof exp_dir, "%s/aurum-bench-client.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(exp_dir))
        bench_die("mkdtemp: %s", strerror(errno));
    if (atexit(remove_experiment) != 0)
        fprintf(stderr, "bench_client: atexit failed; the experiment may be left behind\n");
    sh = mmap(NULL, sizeof *sh + 2 * (size_t)n_chunk * sizeof(int64_t), PROT_READ | PROT_WRITE,
              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        bench_die("mmap: %s", strerror(errno));
    sh->wake_ns = sh->lat_ns + n_chunk;
    int64_t t_start = bench_now_ns();
    double load = 0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &load) != 1)
            load = 0;
        (void)fclose(f); /* read-only */
    }
    printf("bench_client: client layer vs. futex, mutex and exec limits (%d latency samples, "
           "%.2f s runs)\n",
           n_samples, opts.run_s);
    printf("machine: %ld CPUs, load average %.2f at start\n\n", sysconf(_SC_NPROCESSORS_ONLN),
           load);

    /* Creates the experiment (first connect) so that every later figure
     * attaches to existing segments. */
    au_disconnect(connect_bench("setup", AU_CONNECT_NO_WATCHDOG_THREAD));

    /* Latencies: no connection of this process is open while it forks.
     * The four series alternate in rounds, so that a change of machine
     * load during the run hits the limit and our figures alike. */
    int64_t *lat = malloc(5 * (size_t)n_samples * sizeof *lat);
    if (!lat)
        bench_die("out of memory");
    int64_t *l_fut = lat, *l_rtt = lat + n_samples, *l_msg = lat + 2 * (size_t)n_samples,
            *l_wat = lat + 3 * (size_t)n_samples, *l_wake = lat + 4 * (size_t)n_samples;
    for (int r = 0; r < N_ROUNDS; r++) {
        size_t off = (size_t)r * (size_t)n_chunk;
        measure_futex_oneway(l_fut + off);
        measure_futex_rtt(l_rtt + off);
        measure_msg_latency(l_msg + off, l_wake + off);
        measure_watch_latency(l_wat + off);
    }
    int n_lat = n_chunk * N_ROUNDS;
    struct pct fut = percentiles(l_fut, n_lat), rtt = percentiles(l_rtt, n_lat);
    struct pct msg = percentiles(l_msg, n_lat), wat = percentiles(l_wat, n_lat);
    struct pct wake = percentiles(l_wake, n_lat);
    free(lat);
    char ratio[96];
    printf("%-46s\n", "latency (one way, receiver asleep)");
    print_latency("LIMIT futex wake, 2 processes", fut, "1.00x futex wake");
    snprintf(ratio, sizeof ratio, "(one way ~ %.1f us)", rtt.med_us / 2);
    print_latency("LIMIT futex ping-pong round trip", rtt, ratio);
    snprintf(ratio, sizeof ratio, "%.2fx futex wake (p99 %.2fx)", msg.med_us / fut.med_us,
             msg.p99_us / fut.p99_us);
    print_latency("message post -> read (mb_msg_wait + read)", msg, ratio);
    snprintf(ratio, sizeof ratio, "%.2fx futex wake (p99 %.2fx)", wake.med_us / fut.med_us,
             wake.p99_us / fut.p99_us);
    print_latency("  of which post -> mb_msg_wait returns", wake, ratio);
    snprintf(ratio, sizeof ratio, "%.2fx futex wake (p99 %.2fx)", wat.med_us / fut.med_us,
             wat.p99_us / fut.p99_us);
    print_latency("watch odb_set -> au_dispatch callback", wat, ratio);
    printf("\n");

    bench_header();
    /* Posts. */
    struct post_floor pf = {shared_mutex_create(), NULL};
    pf.slot = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (pf.slot == MAP_FAILED)
        bench_die("mmap: %s", strerror(errno));
    struct bench_result r_floor = bench_measure(op_post_floor, &pf, &opts);
    bench_row("LIMIT lock pair + clock + snprintf in shm", &r_floor, "1.00x floor", NULL);
    struct au_client *c = connect_bench("poster", AU_CONNECT_NO_WATCHDOG_THREAD);
    struct bench_result r_post = bench_measure(op_post, c, &opts);
    au_disconnect(c);
    snprintf(ratio, sizeof ratio, "%.2fx floor", r_post.ns_each / r_floor.ns_each);
    bench_row("au_msg post, 1 process, uncontended", &r_post, ratio, NULL);

    /* Connect cycles. */
    struct bench_result r_attach = bench_measure(op_attach, NULL, &opts);
    bench_row("LIMIT attach+detach ODB and message ring", &r_attach, "1.00x attach", NULL);
    c = connect_bench("logger", AU_CONNECT_NO_WATCHDOG_THREAD);
    struct bench_result r_log = bench_measure(op_msglog_sync, au_msgring(c), &opts);
    au_disconnect(c);
    snprintf(ratio, sizeof ratio, "%.1fx attach", r_log.ns_each / r_attach.ns_each);
    bench_row("  message log open+sync+close, nothing new", &r_log, ratio, NULL);
    struct cycle_arg alone = {"cycle", 0, 0, 0};
    struct bench_result r_alone = bench_measure(op_cycle, &alone, &opts);
    cycle_row("connect+disconnect, alone (saves odb.json)", &alone, &r_alone, r_attach.ns_each);
    struct au_client *keeper = connect_bench("keeper", 0);
    struct cycle_arg shared_exp = {"cycle", 0, 0, 0};
    struct bench_result r_shared = bench_measure(op_cycle, &shared_exp, &opts);
    cycle_row("connect+disconnect, 1 other client", &shared_exp, &r_shared, r_attach.ns_each);

    /* 200 connections present, all named "fe". */
    struct au_client *present[N_PRESENT];
    for (int i = 0; i < N_PRESENT; i++)
        present[i] = connect_bench("fe", AU_CONNECT_NO_WATCHDOG_THREAD);
    struct cycle_arg uniq = {"unique", AU_CONNECT_NO_WATCHDOG_THREAD, 0, 0};
    struct bench_result r_uniq = bench_measure(op_cycle, &uniq, &opts);
    cycle_row("connect+disconnect, 200 present, unique name", &uniq, &r_uniq, r_attach.ns_each);
    struct cycle_arg dup = {"fe", AU_CONNECT_NO_WATCHDOG_THREAD, 0, 0};
    struct bench_result r_dup = bench_measure(op_cycle, &dup, &opts);
    cycle_row("connect+disconnect, 200 present, name taken", &dup, &r_dup, r_attach.ns_each);
    printf("  a taken name costs %.1fx a unique one with 200 clients present\n",
           r_dup.ns_each / r_uniq.ns_each);
    for (int i = N_PRESENT - 1; i >= 0; i--)
        au_disconnect(present[i]);
    au_disconnect(keeper);
    printf("\n");

    bench_seed();
    printf("\ntotal time %.1f s\n", (double)(bench_now_ns() - t_start) / 1e9);
    return 0;
}
