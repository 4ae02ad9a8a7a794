/*
 * tests/msgbus/test_msg.c - the system-message ring and its SQLite log.
 *
 * Covers: posting and reading; following by sequence number across
 * wraparound with exact missed counts; four forked posters seen gapless by
 * a concurrent reader; the futex wait (woken from another process, timeout,
 * ut_interrupt from another thread); deferred posting while an ODB-ranked
 * lock or the ring's own lock is held, queue overflow, a ring closed while
 * messages for it are deferred, the thread-exit flush; a poster killed at
 * every crash point of a post; bounds checks on damaged shared memory; and
 * the SQLite log (exact sync, lost-message rows, two concurrent syncing
 * processes, queries, file mode, schema and symlink refusal).
 *
 * Each test uses its own shm name (pid + counter + AURUM_TEST_ID) and a
 * mkdtemp directory, removed in teardown. Processes and threads
 * synchronise with pipes and shared counters, never with sleeps. Forked
 * children report through their exit status (cmocka asserts are for the
 * parent only).
 */
#include "msgbus/mb_int.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct fixture {
    char name[96]; /* shm name of the ring */
    char dir[256]; /* mkdtemp directory */
    char db[300];  /* <dir>/messages.sqlite3 */
};

static int counter;

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    const char *id = getenv("AURUM_TEST_ID");
    (void)snprintf(fx->name, sizeof fx->name, "/aurum.test.msg.%s.%d.%d", id ? id : "x",
                   (int)getpid(), counter++);
    const char *tmp = getenv("TMPDIR");
    (void)snprintf(fx->dir, sizeof fx->dir, "%s/aurum-msg-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    (void)snprintf(fx->db, sizeof fx->db, "%s/messages.sqlite3", fx->dir);
    mb_msgring_destroy(fx->name);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    char path[400];
    mb_msgring_destroy(fx->name);
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < 4; i++) {
        (void)snprintf(path, sizeof path, "%s%s", fx->db, suffixes[i]);
        unlink(path);
    }
    (void)snprintf(path, sizeof path, "%s/link.sqlite3", fx->dir);
    unlink(path);
    (void)snprintf(path, sizeof path, "%s/foreign.sqlite3", fx->dir);
    unlink(path);
    rmdir(fx->dir);
    free(fx);
    return 0;
}

static struct mb_msgring *open_ring(const struct fixture *fx, uint32_t n_slots)
{
    struct mb_msgring_params p = {0};
    p.n_slots = n_slots;
    struct mb_msgring *ring = NULL;
    assert_int_equal(mb_msgring_open(fx->name, MB_MSGRING_CREATE, &p, &ring), 0);
    assert_non_null(ring);
    return ring;
}

/* Reads everything after `after` (at most max) into a new array. */
static struct mb_msg *read_all(struct mb_msgring *ring, uint64_t after, size_t max, size_t *n,
                               uint64_t *missed)
{
    struct mb_msg *buf = calloc(max ? max : 1, sizeof *buf);
    assert_non_null(buf);
    assert_int_equal(mb_msg_read(ring, after, buf, max, n, missed), 0);
    return buf;
}

/* A lock of ODB rank on shared memory, standing in for the real ODB. */
struct fake_odb {
    struct ut_shlock *sh;
    struct ut_lock lock;
};

static void fake_odb_init(struct fake_odb *f)
{
    f->sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(f->sh != MAP_FAILED);
    assert_int_equal(ut_shlock_init(f->sh), 0);
    ut_lock_bind(&f->lock, f->sh, "fake-odb", UT_RANK_ODB, 10000, NULL, NULL);
}

static void fake_odb_release(struct fake_odb *f)
{
    munmap(f->sh, 4096);
}

static int64_t elapsed_ms(int64_t t0)
{
    return (ut_now_ns() - t0) / 1000000;
}

/* ---------------------------------------------------------------------- */

static void test_post_read_basic(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *ring = open_ring(fx, 16);
    assert_int_equal(mb_msg_last_seq(ring), 0);

    int64_t t0 = ut_wall_ns();
    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "fe", "run %d started", 42), 0);
    assert_int_equal(mb_msg_post(ring, MB_MSG_ERROR, "logger", "disk %s", "full"), 0);
    assert_int_equal(mb_msg_post(ring, MB_MSG_TALK, NULL, "hello"), 0);
    int64_t t1 = ut_wall_ns();
    assert_int_equal(mb_msg_last_seq(ring), 3);

    size_t n = 0;
    uint64_t missed = 99;
    struct mb_msg *m = read_all(ring, 0, 8, &n, &missed);
    assert_int_equal(n, 3);
    assert_int_equal(missed, 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(m[i].seq, i + 1);
        assert_int_equal(m[i].pid, getpid());
        assert_true(m[i].time_ns >= t0 && m[i].time_ns <= t1);
        assert_int_equal(m[i].text_len, strlen(m[i].text));
    }
    assert_int_equal(m[0].type, MB_MSG_INFO);
    assert_string_equal(m[0].source, "fe");
    assert_string_equal(m[0].text, "run 42 started");
    assert_int_equal(m[1].type, MB_MSG_ERROR);
    assert_string_equal(m[1].source, "logger");
    assert_string_equal(m[1].text, "disk full");
    assert_int_equal(m[2].type, MB_MSG_TALK);
    assert_string_equal(m[2].source, program_invocation_short_name);
    free(m);

    /* Following: nothing newer than 3; after 1 gives 2 and 3. */
    m = read_all(ring, 3, 8, &n, &missed);
    assert_int_equal(n, 0);
    free(m);
    m = read_all(ring, 1, 8, &n, NULL);
    assert_int_equal(n, 2);
    assert_int_equal(m[0].seq, 2);
    free(m);

    /* Type names both ways. */
    static const char *const names[] = {"ERROR", "INFO", "DEBUG", "USER", "LOG", "TALK"};
    for (int t = 0; t < MB_MSG_TYPE_MAX; t++) {
        enum mb_msg_type back;
        assert_string_equal(mb_msg_type_name((enum mb_msg_type)t), names[t]);
        assert_int_equal(mb_msg_type_from_name(names[t], &back), 0);
        assert_int_equal(back, t);
    }
    enum mb_msg_type back = MB_MSG_USER;
    assert_int_equal(mb_msg_type_from_name("talk", &back), 0);
    assert_int_equal(back, MB_MSG_TALK);
    assert_int_equal(mb_msg_type_from_name("CHAT", &back), UT_EINVAL);
    assert_string_equal(mb_msg_type_name(MB_MSG_TYPE_MAX), "INVALID");
    assert_int_equal(MB_MSG_MASK(MB_MSG_INFO), 2u); /* MIDAS MT_INFO */

    /* Bad arguments. */
    assert_int_equal(mb_msg_post(ring, MB_MSG_TYPE_MAX, "x", "y"), UT_EINVAL);
    assert_int_equal(mb_msg_post(NULL, MB_MSG_INFO, "x", "y"), UT_EINVAL);
    assert_int_equal(mb_msg_read(ring, 0, NULL, 4, &n, NULL), UT_EINVAL);
    assert_int_equal(mb_msg_last_seq(ring), 3);

    /* A long text is cut to MB_MSG_TEXT_MAX and marked; so is the source. */
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char longsrc[80];
    memset(longsrc, 's', sizeof longsrc - 1);
    longsrc[sizeof longsrc - 1] = '\0';
    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, longsrc, "%s", big), 0);
    /* Two-byte UTF-8 characters: the cut must not split one. */
    char utf[2100] = "";
    for (size_t i = 0; i + 2 < sizeof utf; i += 2)
        memcpy(utf + i, "\xc3\xa9", 3);
    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "u", "a%s", utf), 0);
    /* Exactly the maximum is not cut. */
    big[MB_MSG_TEXT_MAX] = '\0';
    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "fit", "%s", big), 0);
    m = read_all(ring, 3, 8, &n, NULL);
    assert_int_equal(n, 3);
    assert_int_equal(m[0].text_len, MB_MSG_TEXT_MAX);
    assert_int_equal(strlen(m[0].text), MB_MSG_TEXT_MAX);
    assert_memory_equal(m[0].text + MB_MSG_TEXT_MAX - 3, "...", 3);
    assert_int_equal(m[0].text[0], 'x');
    assert_int_equal(strlen(m[0].source), MB_MSG_SOURCE_MAX);
    size_t ul = m[1].text_len;
    assert_true(ul <= MB_MSG_TEXT_MAX && ul > MB_MSG_TEXT_MAX - 5);
    assert_memory_equal(m[1].text + ul - 3, "...", 3);
    /* "a" then whole "\xc3\xa9" pairs: the byte before "..." ends a pair. */
    assert_int_equal((ul - 3 - 1) % 2, 0);
    assert_int_equal((unsigned char)m[1].text[ul - 4], 0xa9);
    assert_int_equal(m[2].text_len, MB_MSG_TEXT_MAX);
    assert_int_equal(m[2].text[MB_MSG_TEXT_MAX - 1], 'x');
    free(m);

    struct mb_msg_stats st;
    assert_int_equal(mb_msg_stats(ring, &st), 0);
    assert_int_equal(st.n_slots, 16);
    assert_int_equal(st.n_posted, 6);
    assert_int_equal(st.first_seq, 1);
    assert_int_equal(st.last_seq, 6);
    assert_int_equal(st.n_deferred, 0);
    assert_int_equal(st.n_lost, 0);

    /* A second handle (attach) sees the same ring; its params are ignored. */
    struct mb_msgring *other = open_ring(fx, 64);
    assert_int_equal(mb_msg_last_seq(other), 6);
    assert_int_equal(mb_msg_stats(other, &st), 0);
    assert_int_equal(st.n_slots, 16);
    mb_msgring_close(other);
    mb_msgring_close(ring);
    mb_msgring_close(NULL);

    /* Without CREATE a missing ring is an error. */
    assert_int_equal(mb_msgring_destroy(fx->name), 0);
    struct mb_msgring *none = NULL;
    assert_int_equal(mb_msgring_open(fx->name, 0, NULL, &none), UT_ENOENT);
    assert_null(none);
    struct mb_msgring_params bad = {0};
    bad.n_slots = 2;
    assert_int_equal(mb_msgring_open(fx->name, MB_MSGRING_CREATE, &bad, &none), UT_EINVAL);
}

static void test_open_exp_and_first_seq(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring_params p = {0};
    p.n_slots = 8;
    p.first_seq = 1000;
    struct mb_msgring *ring = NULL;
    assert_int_equal(mb_msgring_open_exp(fx->dir, MB_MSGRING_CREATE, &p, &ring), 0);
    assert_int_equal(mb_msg_last_seq(ring), 999);
    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "a", "first"), 0);
    assert_int_equal(mb_msg_last_seq(ring), 1000);
    size_t n;
    uint64_t missed;
    struct mb_msg *m = read_all(ring, 0, 4, &n, &missed);
    assert_int_equal(n, 1);
    assert_int_equal(missed, 999); /* a reader from 0 is told what it never saw */
    assert_int_equal(m[0].seq, 1000);
    free(m);
    mb_msgring_close(ring);
    char name[128];
    assert_int_equal(ut_shm_name(fx->dir, "msg", name, sizeof name), 0);
    assert_int_equal(mb_msgring_destroy(name), 0);
}

static void test_wraparound_follow(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *ring = open_ring(fx, 8);
    for (int i = 1; i <= 5; i++)
        assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "w", "m%d", i), 0);
    size_t n;
    uint64_t missed;
    struct mb_msg *m = read_all(ring, 0, 16, &n, &missed);
    assert_int_equal(n, 5);
    assert_int_equal(missed, 0);
    free(m);
    for (int i = 6; i <= 15; i++)
        assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "w", "m%d", i), 0);

    /* Stored now: 8..15. A reader at 5 missed 6 and 7. */
    m = read_all(ring, 5, 16, &n, &missed);
    assert_int_equal(missed, 2);
    assert_int_equal(n, 8);
    for (size_t i = 0; i < n; i++) {
        char want[32];
        (void)snprintf(want, sizeof want, "m%d", (int)i + 8);
        assert_int_equal(m[i].seq, i + 8);
        assert_string_equal(m[i].text, want);
    }
    free(m);
    m = read_all(ring, 0, 3, &n, &missed);
    assert_int_equal(missed, 7);
    assert_int_equal(n, 3);
    assert_int_equal(m[0].seq, 8);
    assert_int_equal(m[2].seq, 10);
    free(m);
    m = read_all(ring, 10, 3, &n, &missed);
    assert_int_equal(missed, 0);
    assert_int_equal(n, 3);
    assert_int_equal(m[0].seq, 11);
    free(m);
    m = read_all(ring, 14, 16, &n, &missed);
    assert_int_equal(n, 1);
    assert_int_equal(m[0].seq, 15);
    free(m);
    m = read_all(ring, 15, 16, &n, &missed);
    assert_int_equal(n, 0);
    assert_int_equal(missed, 0);
    free(m);
    m = read_all(ring, 1000, 16, &n, &missed);
    assert_int_equal(n, 0);
    assert_int_equal(missed, 0);
    free(m);

    /* A follower that reads every 5 posts (max 8) never misses; one that
     * reads every 20 posts misses exactly 12 each time. */
    uint64_t fast = 15, slow = 15;
    for (int round = 0; round < 12; round++) {
        for (int i = 0; i < 5; i++)
            assert_int_equal(mb_msg_post(ring, MB_MSG_DEBUG, "w", "r%d i%d", round, i), 0);
        m = read_all(ring, fast, 8, &n, &missed);
        assert_int_equal(missed, 0);
        assert_int_equal(n, 5);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(m[i].seq, fast + 1 + i);
        fast = m[n - 1].seq;
        free(m);
        if (round % 4 == 3) {
            m = read_all(ring, slow, 8, &n, &missed);
            assert_int_equal(missed, 12);
            assert_int_equal(n, 8);
            assert_int_equal(m[0].seq, slow + 13);
            slow = m[n - 1].seq;
            assert_int_equal(slow, mb_msg_last_seq(ring));
            free(m);
        }
    }
    struct mb_msg_stats st;
    assert_int_equal(mb_msg_stats(ring, &st), 0);
    assert_int_equal(st.last_seq, 75);
    assert_int_equal(st.first_seq, 68);
    assert_int_equal(st.n_posted, 75);
    mb_msgring_close(ring);
}

#define N_POSTERS    4
#define N_PER_POSTER 1000

static void test_multiprocess_posters(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *ring = open_ring(fx, 8192);
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t pids[N_POSTERS];
    for (int p = 0; p < N_POSTERS; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            char c;
            close(go[1]);
            /* EOF when the parent closes its end: all start together. */
            if (read(go[0], &c, 1) != 0)
                _exit(3);
            char src[32];
            (void)snprintf(src, sizeof src, "poster%d", p);
            for (int i = 0; i < N_PER_POSTER; i++)
                if (mb_msg_post(ring, MB_MSG_INFO, src, "poster %d message %d", p, i) != 0)
                    _exit(1);
            _exit(0);
        }
    }
    close(go[0]);
    close(go[1]);

    struct mb_msg *buf = calloc(256, sizeof *buf);
    assert_non_null(buf);
    int next[N_POSTERS] = {0};
    uint64_t after = 0;
    int total = 0;
    while (total < N_POSTERS * N_PER_POSTER) {
        assert_int_equal(mb_msg_wait(ring, after, 30000), 0);
        size_t n;
        uint64_t missed;
        assert_int_equal(mb_msg_read(ring, after, buf, 256, &n, &missed), 0);
        assert_int_equal(missed, 0);
        assert_true(n > 0);
        for (size_t i = 0; i < n; i++) {
            int p = -1, k = -1;
            assert_int_equal(buf[i].seq, after + 1);
            assert_int_equal(sscanf(buf[i].text, "poster %d message %d", &p, &k), 2);
            assert_true(p >= 0 && p < N_POSTERS);
            char src[32];
            (void)snprintf(src, sizeof src, "poster%d", p);
            assert_string_equal(buf[i].source, src);
            assert_int_equal(buf[i].pid, pids[p]);
            assert_int_equal(k, next[p]);
            next[p]++;
            after = buf[i].seq;
            total++;
        }
    }
    for (int p = 0; p < N_POSTERS; p++) {
        int status;
        assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        assert_int_equal(next[p], N_PER_POSTER);
    }
    size_t n;
    assert_int_equal(mb_msg_read(ring, after, buf, 256, &n, NULL), 0);
    assert_int_equal(n, 0);
    struct mb_msg_stats st;
    assert_int_equal(mb_msg_stats(ring, &st), 0);
    assert_int_equal(st.n_posted, N_POSTERS * N_PER_POSTER);
    assert_int_equal(st.last_seq, N_POSTERS * N_PER_POSTER);
    free(buf);
    mb_msgring_close(ring);
}

static void test_wait_wakes_other_process(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *ring = open_ring(fx, 16);
    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "p", "before"), 0);
    uint64_t last = mb_msg_last_seq(ring);
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        struct mb_msgring *r = NULL;
        if (mb_msgring_open(fx->name, 0, NULL, &r) != 0)
            _exit(1);
        if (write(ready[1], "r", 1) != 1)
            _exit(2);
        /* Post only once the parent sleeps in the futex. */
        int64_t t0 = ut_now_ns();
        while (__atomic_load_n(&r->hdr->n_waiters, __ATOMIC_SEQ_CST) == 0) {
            if (elapsed_ms(t0) > 20000)
                _exit(3);
            sched_yield();
        }
        _exit(mb_msg_post(r, MB_MSG_INFO, "child", "wake up") == 0 ? 0 : 4);
    }
    close(ready[1]);
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);
    struct mb_msg_stats st;
    assert_int_equal(mb_msg_stats(ring, &st), 0);
    uint64_t wakes_before = st.n_wakes;
    int64_t t0 = ut_now_ns();
    assert_int_equal(mb_msg_wait(ring, last, 20000), 0);
    assert_true(elapsed_ms(t0) < 15000);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(mb_msg_last_seq(ring), last + 1);
    assert_int_equal(mb_msg_stats(ring, &st), 0);
    assert_true(st.n_wakes > wakes_before);
    assert_int_equal(__atomic_load_n(&ring->hdr->n_waiters, __ATOMIC_SEQ_CST), 0);
    mb_msgring_close(ring);
}

static void test_wait_timeout(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *ring = open_ring(fx, 16);
    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "p", "one"), 0);
    int64_t t0 = ut_now_ns();
    assert_int_equal(mb_msg_wait(ring, 1, 250), UT_ETIMEOUT);
    int64_t ms = elapsed_ms(t0);
    assert_true(ms >= 250);
    assert_true(ms < 5000);
    t0 = ut_now_ns();
    assert_int_equal(mb_msg_wait(ring, 1, 0), UT_ETIMEOUT);
    assert_int_equal(mb_msg_wait(ring, 0, 0), 0);
    assert_int_equal(mb_msg_wait(ring, 0, 10000), 0);
    assert_true(elapsed_ms(t0) < 1000);
    assert_int_equal(mb_msg_wait(NULL, 0, 0), UT_EINVAL);
    mb_msgring_close(ring);
}

struct waiter_arg {
    struct mb_msgring *ring;
    uint64_t after;
    int result;
    int64_t done_ns;
};

static void *waiter_thread(void *p)
{
    struct waiter_arg *a = p;
    a->result = mb_msg_wait(a->ring, a->after, 60000);
    a->done_ns = ut_now_ns();
    return NULL;
}

static void test_wait_interrupt(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *ring = open_ring(fx, 16);
    struct waiter_arg a = {ring, mb_msg_last_seq(ring), 1, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, waiter_thread, &a), 0);
    int64_t t0 = ut_now_ns();
    while (__atomic_load_n(&ring->hdr->n_waiters, __ATOMIC_SEQ_CST) == 0) {
        assert_true(elapsed_ms(t0) < 20000);
        sched_yield();
    }
    int64_t t_int = ut_now_ns();
    ut_interrupt();
    assert_int_equal(pthread_join(th, NULL), 0);
    ut_interrupt_clear();
    assert_int_equal(a.result, UT_EINTR);
    assert_true((a.done_ns - t_int) / 1000000 < 2000);
    assert_int_equal(mb_msg_last_seq(ring), 0);
    /* After clearing, waits work again. */
    assert_int_equal(mb_msg_wait(ring, 0, 10), UT_ETIMEOUT);
    mb_msgring_close(ring);
}

/* ---------------------------------------------------------------------- */
/* Deferred posting                                                        */
/* ---------------------------------------------------------------------- */

static void test_defer_under_odb_lock(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *ring = open_ring(fx, 64);
    struct fake_odb odb;
    fake_odb_init(&odb);

    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "t", "A"), 0);
    assert_int_equal(UT_LOCK(&odb.lock), 0);
    assert_true(ut_lock_top_rank() >= UT_RANK_MSG);
    assert_int_equal(mb_msg_post(ring, MB_MSG_ERROR, "t", "B under %s", "odb"), 0);
    assert_int_equal(mb_msg_last_seq(ring), 1); /* not yet */
    /* Recursion and a process-local lock above it: still deferred. */
    assert_int_equal(UT_LOCK(&odb.lock), 0);
    struct ut_shlock local_sh;
    struct ut_lock local;
    assert_int_equal(ut_shlock_init(&local_sh), 0);
    ut_lock_bind(&local, &local_sh, "local", UT_RANK_LOCAL, 10000, NULL, NULL);
    assert_int_equal(UT_LOCK(&local), 0);
    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "t", "C"), 0);
    ut_lock_release(&local);
    assert_int_equal(mb_msg_last_seq(ring), 1);
    ut_lock_release(&odb.lock);
    assert_int_equal(mb_msg_last_seq(ring), 1); /* the outermost is still held */
    /* Explicit flush does nothing while the lock is held. */
    assert_int_equal(mb_msg_flush(), 0);
    assert_int_equal(mb_msg_last_seq(ring), 1);
    struct mb_msg_stats st;
    assert_int_equal(mb_msg_stats(ring, &st), 0);
    assert_int_equal(st.n_deferred, 2);
    ut_lock_release(&odb.lock);
    /* Released: both appeared, in order, no rank violation. */
    assert_int_equal(mb_msg_last_seq(ring), 3);
    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "t", "D"), 0);
    size_t n;
    struct mb_msg *m = read_all(ring, 0, 8, &n, NULL);
    assert_int_equal(n, 4);
    assert_string_equal(m[0].text, "A");
    assert_string_equal(m[1].text, "B under odb");
    assert_int_equal(m[1].type, MB_MSG_ERROR);
    assert_string_equal(m[2].text, "C");
    assert_string_equal(m[3].text, "D");
    /* The time is the post call's, not the flush's. */
    assert_true(m[1].time_ns <= m[2].time_ns);
    free(m);
    assert_int_equal(mb_msg_stats(ring, &st), 0);
    assert_int_equal(st.n_deferred, 2);
    assert_int_equal(st.n_lost, 0);
    assert_int_equal(st.n_posted, 4);
    assert_int_equal(mb_msg_flush(), 0);
    mb_msgring_close(ring);
    fake_odb_release(&odb);
}

static void test_defer_under_ring_lock(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *ring = open_ring(fx, 64);
    assert_int_equal(UT_LOCK(&ring->lock), 0);
    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "self", "posted under the ring lock"), 0);
    /* Reading (recursively) shows it is not in the ring yet. */
    size_t n = 9;
    struct mb_msg *m = read_all(ring, 0, 8, &n, NULL);
    assert_int_equal(n, 0);
    free(m);
    assert_int_equal(mb_msg_last_seq(ring), 0);
    ut_lock_release(&ring->lock);
    assert_int_equal(mb_msg_last_seq(ring), 1);
    m = read_all(ring, 0, 8, &n, NULL);
    assert_int_equal(n, 1);
    assert_string_equal(m[0].text, "posted under the ring lock");
    free(m);
    mb_msgring_close(ring);
}

static void test_defer_overflow(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *ring = open_ring(fx, 512);
    struct fake_odb odb;
    fake_odb_init(&odb);
    assert_int_equal(UT_LOCK(&odb.lock), 0);
    for (int i = 0; i < 300; i++)
        assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "burst", "msg %d", i), 0);
    assert_int_equal(mb_msg_last_seq(ring), 0);
    struct mb_msg_stats st;
    assert_int_equal(mb_msg_stats(ring, &st), 0);
    assert_int_equal(st.n_deferred, MB_MSG_DEFER_MAX);
    assert_int_equal(st.n_lost, 300 - MB_MSG_DEFER_MAX);
    ut_lock_release(&odb.lock);
    assert_int_equal(mb_msg_last_seq(ring), MB_MSG_DEFER_MAX + 1);
    size_t n;
    struct mb_msg *m = read_all(ring, 0, 512, &n, NULL);
    assert_int_equal(n, MB_MSG_DEFER_MAX + 1);
    for (int i = 0; i < MB_MSG_DEFER_MAX; i++) {
        char want[32];
        (void)snprintf(want, sizeof want, "msg %d", i);
        assert_string_equal(m[i].text, want);
    }
    char want[64];
    (void)snprintf(want, sizeof want, "%d messages lost (deferred queue full)",
                   300 - MB_MSG_DEFER_MAX);
    assert_string_equal(m[MB_MSG_DEFER_MAX].text, want);
    assert_int_equal(m[MB_MSG_DEFER_MAX].type, MB_MSG_ERROR);
    assert_string_equal(m[MB_MSG_DEFER_MAX].source, "burst");
    free(m);
    /* The queue works again after the flush. */
    assert_int_equal(UT_LOCK(&odb.lock), 0);
    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "burst", "again"), 0);
    ut_lock_release(&odb.lock);
    assert_int_equal(mb_msg_last_seq(ring), MB_MSG_DEFER_MAX + 2);
    mb_msgring_close(ring);
    fake_odb_release(&odb);
}

struct closer_arg {
    struct mb_msgring *ring;
    struct fake_odb *odb;
    int to_main[2];
    int to_thread[2];
    int post_err;
    int flush_err;
};

/* Defers a message to a ring, lets the main thread close that ring, then
 * releases the lock: the flush must post into the still-mapped ring. */
static void *closer_thread(void *p)
{
    struct closer_arg *a = p;
    char c = 0;
    if (UT_LOCK(&a->odb->lock) != 0)
        return NULL;
    a->post_err = mb_msg_post(a->ring, MB_MSG_INFO, "thr", "deferred before close");
    if (write(a->to_main[1], "d", 1) != 1 || read(a->to_thread[0], &c, 1) != 1)
        a->post_err = -999;
    ut_lock_release(&a->odb->lock);
    return NULL;
}

static void test_defer_ring_closed_meanwhile(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *watcher = open_ring(fx, 64);
    struct fake_odb odb;
    fake_odb_init(&odb);

    /* Another thread defers to ring r1; r1 is closed before it flushes. */
    struct mb_msgring *r1 = open_ring(fx, 64);
    struct closer_arg a = {0};
    a.ring = r1;
    a.odb = &odb;
    assert_int_equal(pipe(a.to_main), 0);
    assert_int_equal(pipe(a.to_thread), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, closer_thread, &a), 0);
    char c;
    assert_int_equal(read(a.to_main[0], &c, 1), 1);
    mb_msgring_close(r1);
    assert_int_equal(mb_msg_last_seq(watcher), 0);
    assert_int_equal(write(a.to_thread[1], "g", 1), 1);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(a.post_err, 0);
    assert_int_equal(mb_msg_last_seq(watcher), 1);
    for (int i = 0; i < 2; i++) {
        close(a.to_main[i]);
        close(a.to_thread[i]);
    }

    /* The same thread closes while it still holds the ODB lock. */
    struct mb_msgring *r2 = open_ring(fx, 64);
    assert_int_equal(UT_LOCK(&odb.lock), 0);
    assert_int_equal(mb_msg_post(r2, MB_MSG_INFO, "me", "deferred, then closed"), 0);
    mb_msgring_close(r2);
    assert_int_equal(mb_msg_last_seq(watcher), 1);
    ut_lock_release(&odb.lock);
    assert_int_equal(mb_msg_last_seq(watcher), 2);

    size_t n;
    struct mb_msg *m = read_all(watcher, 0, 8, &n, NULL);
    assert_int_equal(n, 2);
    assert_string_equal(m[0].text, "deferred before close");
    assert_string_equal(m[1].text, "deferred, then closed");
    free(m);
    mb_msgring_close(watcher);
    fake_odb_release(&odb);
}

struct exit_arg {
    struct mb_msgring *ring; /* opened with a short lock timeout */
    struct fake_odb *odb;
    int to_main[2];
    int to_thread[2];
    int flush_err;
};

/* Defers a message whose flush fails (the ring lock is held elsewhere and
 * times out), then exits: the key destructor must post it. */
static void *exit_thread(void *p)
{
    struct exit_arg *a = p;
    char c = 0;
    if (UT_LOCK(&a->odb->lock) != 0)
        return NULL;
    int err = mb_msg_post(a->ring, MB_MSG_INFO, "exiting", "flushed at thread exit");
    ut_lock_release(&a->odb->lock); /* hook: flush times out, message stays queued */
    a->flush_err = err ? err : mb_msg_flush();
    if (write(a->to_main[1], "f", 1) != 1 || read(a->to_thread[0], &c, 1) != 1)
        a->flush_err = -999;
    return NULL; /* the destructor flushes now */
}

static void test_defer_flushed_at_thread_exit(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *ring = open_ring(fx, 64);
    struct fake_odb odb;
    fake_odb_init(&odb);
    struct mb_msgring_params p = {0};
    p.lock_timeout_ms = 100;
    struct exit_arg a = {0};
    assert_int_equal(mb_msgring_open(fx->name, 0, &p, &a.ring), 0);
    a.odb = &odb;
    assert_int_equal(pipe(a.to_main), 0);
    assert_int_equal(pipe(a.to_thread), 0);

    assert_int_equal(UT_LOCK(&ring->lock), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, exit_thread, &a), 0);
    char c;
    assert_int_equal(read(a.to_main[0], &c, 1), 1);
    assert_int_equal(a.flush_err, UT_ETIMEOUT);
    assert_int_equal(mb_msg_last_seq(ring), 0);
    ut_lock_release(&ring->lock);
    assert_int_equal(write(a.to_thread[1], "x", 1), 1);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(mb_msg_last_seq(ring), 1);
    size_t n;
    struct mb_msg *m = read_all(ring, 0, 8, &n, NULL);
    assert_int_equal(n, 1);
    assert_string_equal(m[0].text, "flushed at thread exit");
    free(m);
    struct mb_msg_stats st;
    assert_int_equal(mb_msg_stats(ring, &st), 0);
    assert_int_equal(st.n_lost, 0);
    for (int i = 0; i < 2; i++) {
        close(a.to_main[i]);
        close(a.to_thread[i]);
    }
    mb_msgring_close(a.ring);
    mb_msgring_close(ring);
    fake_odb_release(&odb);
}

struct nomem_arg {
    struct mb_msgring *ring;
    struct fake_odb *odb;
    int first, second;
};

/* A fresh thread has no queue yet: its first deferral must allocate one. */
static void *nomem_thread(void *p)
{
    struct nomem_arg *a = p;
    if (UT_LOCK(&a->odb->lock) != 0)
        return NULL;
    ut_alloc_fail_after(1);
    a->first = mb_msg_post(a->ring, MB_MSG_INFO, "nomem", "lost: no memory for the queue");
    ut_alloc_fail_after(0);
    a->second = mb_msg_post(a->ring, MB_MSG_INFO, "nomem", "kept");
    ut_lock_release(&a->odb->lock);
    return NULL;
}

static void test_alloc_failures(void **state)
{
    struct fixture *fx = *state;
    /* Opening under allocation failure fails cleanly (no leak under ASan). */
    for (long k = 1; k <= 2; k++) {
        struct mb_msgring *r = NULL;
        ut_alloc_fail_after(k);
        int err = mb_msgring_open(fx->name, MB_MSGRING_CREATE, NULL, &r);
        ut_alloc_fail_after(0);
        if (err) {
            assert_int_equal(err, UT_ENOMEM);
            assert_null(r);
        }
        mb_msgring_close(r);
    }
    struct mb_msgring *ring = open_ring(fx, 16);
    struct fake_odb odb;
    fake_odb_init(&odb);
    struct nomem_arg a = {ring, &odb, 1, 1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, nomem_thread, &a), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(a.first, UT_ENOMEM);
    assert_int_equal(a.second, 0);
    size_t n;
    struct mb_msg *m = read_all(ring, 0, 8, &n, NULL);
    assert_int_equal(n, 1);
    assert_string_equal(m[0].text, "kept");
    free(m);
    struct mb_msg_stats st;
    assert_int_equal(mb_msg_stats(ring, &st), 0);
    assert_int_equal(st.n_lost, 1);
    assert_int_equal(st.n_deferred, 1);
    mb_msgring_close(ring);
    fake_odb_release(&odb);
}

/* ---------------------------------------------------------------------- */
/* Crash in the middle of a post                                           */
/* ---------------------------------------------------------------------- */

#define MAX_SEQ 512

/* Checks that the ring holds exactly the expected texts, gapless. */
static void verify_ring(struct mb_msgring *ring, char expect[][64])
{
    size_t n;
    uint64_t missed;
    struct mb_msg *m = read_all(ring, 0, MAX_SEQ, &n, &missed);
    struct mb_msg_stats st;
    assert_int_equal(mb_msg_stats(ring, &st), 0);
    assert_int_equal(missed, st.first_seq - 1);
    assert_int_equal(n, st.last_seq - st.first_seq + 1);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(m[i].seq, st.first_seq + i);
        assert_true(m[i].seq < MAX_SEQ);
        assert_string_equal(m[i].text, expect[m[i].seq]);
        assert_int_equal(m[i].text_len, strlen(expect[m[i].seq]));
    }
    free(m);
}

/* Kills a poster at each crash point of a post in turn; after each kill
 * the next post recovers the ring. */
static void crash_pass(struct mb_msgring *ring, char expect[][64], int *n_kills)
{
    ut_crash_point_arm(0);
    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "m", "measure"), 0);
    uint64_t seq = mb_msg_last_seq(ring);
    (void)snprintf(expect[seq], 64, "measure");
    long k_max = ut_crash_point() - 1;
    assert_true(k_max >= 6);
    for (long k = 1; k <= k_max; k++) {
        uint64_t before = mb_msg_last_seq(ring);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            ut_crash_point_arm(k);
            mb_msg_post(ring, MB_MSG_INFO, "victim", "crash %ld with a longer text to cut", k);
            _exit(0);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), SIGKILL);
        (*n_kills)++;
        assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "survivor", "after %ld", k), 0);
        uint64_t last = mb_msg_last_seq(ring);
        assert_true(last == before + 1 || last == before + 2);
        assert_true(last < MAX_SEQ);
        if (last == before + 2)
            (void)snprintf(expect[before + 1], 64, "crash %ld with a longer text to cut", k);
        (void)snprintf(expect[last], 64, "after %ld", k);
        verify_ring(ring, expect);
    }
    /* Killed after publishing, the message is there; killed before, not. */
}

static void test_crash_mid_post(void **state)
{
    struct fixture *fx = *state;
    static char expect[MAX_SEQ][64];
    memset(expect, 0, sizeof expect);
    int kills = 0;

    /* Pass 1: a ring that never fills. */
    struct mb_msgring *ring = open_ring(fx, 64);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "pre", "pre %d", i), 0);
        (void)snprintf(expect[mb_msg_last_seq(ring)], 64, "pre %d", i);
    }
    crash_pass(ring, expect, &kills);
    verify_ring(ring, expect);
    struct mb_msg_stats st;
    assert_int_equal(mb_msg_stats(ring, &st), 0);
    assert_int_equal(st.n_recovered, kills);
    assert_int_equal(st.first_seq, 1);
    mb_msgring_close(ring);
    assert_int_equal(mb_msgring_destroy(fx->name), 0);

    /* Pass 2: a full ring, so every post also evicts the oldest. */
    memset(expect, 0, sizeof expect);
    kills = 0;
    ring = open_ring(fx, 8);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "pre", "pre %d", i), 0);
        (void)snprintf(expect[mb_msg_last_seq(ring)], 64, "pre %d", i);
    }
    crash_pass(ring, expect, &kills);
    verify_ring(ring, expect);
    assert_int_equal(mb_msg_stats(ring, &st), 0);
    assert_int_equal(st.n_recovered, kills);
    assert_int_equal(st.last_seq - st.first_seq + 1, 8);
    /* Still usable. */
    for (int i = 0; i < 20; i++)
        assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "end", "end %d", i), 0);
    assert_int_equal(mb_msg_stats(ring, &st), 0);
    assert_int_equal(st.last_seq - st.first_seq + 1, 8);
    mb_msgring_close(ring);
    ut_crash_point_arm(0);
}

/* ---------------------------------------------------------------------- */
/* Damaged shared memory                                                   */
/* ---------------------------------------------------------------------- */

static void test_bounds_checks(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *ring = open_ring(fx, 8);
    for (int i = 0; i < 3; i++)
        assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "b", "m%d", i), 0);
    struct mb_msg buf[8];
    size_t n = 77;

    /* A slot claiming an impossible text length. */
    struct mb_msg_slot *s = mb__msg_slot(ring, 2);
    uint32_t saved_len = s->text_len;
    s->text_len = 5000;
    assert_int_equal(mb_msg_read(ring, 0, buf, 8, &n, NULL), UT_ECORRUPT);
    assert_int_equal(n, 77);
    s->text_len = saved_len;
    /* A slot whose seq does not match its position. */
    s->seq = 10;
    assert_int_equal(mb_msg_read(ring, 0, buf, 8, &n, NULL), UT_ECORRUPT);
    s->seq = 2;
    /* A bad type. */
    s->type = 99;
    assert_int_equal(mb_msg_read(ring, 1, buf, 8, &n, NULL), UT_ECORRUPT);
    s->type = MB_MSG_INFO;
    assert_int_equal(mb_msg_read(ring, 0, buf, 8, &n, NULL), 0);
    assert_int_equal(n, 3);

    /* Inconsistent counters: readers and posters refuse. */
    uint64_t saved_first = ring->hdr->first_seq;
    ring->hdr->first_seq = 10;
    assert_int_equal(mb_msg_read(ring, 0, buf, 8, &n, NULL), UT_ECORRUPT);
    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "b", "no"), UT_ECORRUPT);
    ring->hdr->first_seq = saved_first;
    uint64_t saved_last = ring->hdr->last_seq;
    ring->hdr->last_seq = 100; /* more than n_slots stored */
    assert_int_equal(mb_msg_read(ring, 0, buf, 8, &n, NULL), UT_ECORRUPT);
    ring->hdr->last_seq = saved_last;

    /* A header whose geometry exceeds the segment is refused at attach. */
    ring->hdr->n_slots = 1u << 19;
    struct mb_msgring *other = NULL;
    assert_int_equal(mb_msgring_open(fx->name, 0, NULL, &other), UT_ECORRUPT);
    assert_null(other);
    ring->hdr->n_slots = 8;
    assert_int_equal(mb_msgring_open(fx->name, 0, NULL, &other), 0);
    mb_msgring_close(other);

    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "b", "fine"), 0);
    assert_int_equal(mb_msg_last_seq(ring), 4);
    mb_msgring_close(ring);
}

/* ---------------------------------------------------------------------- */
/* SQLite log                                                              */
/* ---------------------------------------------------------------------- */

static void assert_same_msg(const struct mb_msg *a, const struct mb_msg *b)
{
    assert_int_equal(a->seq, b->seq);
    assert_int_equal(a->time_ns, b->time_ns);
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->pid, b->pid);
    assert_int_equal(a->text_len, b->text_len);
    assert_string_equal(a->source, b->source);
    assert_string_equal(a->text, b->text);
}

static void test_msglog_sync_exact(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *ring = open_ring(fx, 64);
    for (int i = 0; i < 20; i++)
        assert_int_equal(mb_msg_post(ring, (enum mb_msg_type)(i % MB_MSG_TYPE_MAX), "src",
                                     "message %d with 'quotes' and \"more\"", i),
                         0);
    mode_t old = umask(0);
    struct mb_msglog *log = NULL;
    assert_int_equal(mb_msglog_open(fx->db, &log), 0);
    umask(old);
    struct stat sb;
    assert_int_equal(stat(fx->db, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);

    uint64_t last = 99;
    assert_int_equal(mb_msglog_last_seq(log, &last), 0);
    assert_int_equal(last, 0);
    assert_int_equal(mb_msglog_sync(log, ring), 0);
    struct mb_msglog_stats ls;
    mb_msglog_stats(log, &ls);
    assert_int_equal(ls.last_written, 20);
    assert_int_equal(ls.last_lost, 0);
    char wal[320];
    (void)snprintf(wal, sizeof wal, "%s-wal", fx->db);
    assert_int_equal(stat(wal, &sb), 0); /* WAL mode */
    assert_int_equal(sb.st_mode & 0777, 0600);

    size_t n_ring, n_log;
    struct mb_msg *r = read_all(ring, 0, 64, &n_ring, NULL);
    struct mb_msg *l = NULL;
    assert_int_equal(mb_msglog_query(log, NULL, &l, &n_log), 0);
    assert_int_equal(n_ring, 20);
    assert_int_equal(n_log, 20);
    for (size_t i = 0; i < n_log; i++)
        assert_same_msg(&l[i], &r[i]);
    mb_msglog_query_free(l);
    free(r);

    /* Nothing new: nothing written. Then only the new ones. */
    assert_int_equal(mb_msglog_sync(log, ring), 0);
    mb_msglog_stats(log, &ls);
    assert_int_equal(ls.last_written, 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "src", "late %d", i), 0);
    assert_int_equal(mb_msglog_sync(log, ring), 0);
    mb_msglog_stats(log, &ls);
    assert_int_equal(ls.last_written, 5);
    assert_int_equal(ls.n_written, 25);
    assert_int_equal(ls.n_syncs, 3);
    assert_int_equal(mb_msglog_last_seq(log, &last), 0);
    assert_int_equal(last, 25);
    mb_msglog_close(log);

    /* Reopening keeps everything. */
    assert_int_equal(mb_msglog_open(fx->db, &log), 0);
    assert_int_equal(mb_msglog_query(log, NULL, &l, &n_log), 0);
    assert_int_equal(n_log, 25);
    assert_string_equal(l[24].text, "late 4");
    mb_msglog_query_free(l);
    mb_msglog_close(log);
    mb_msglog_close(NULL);
    mb_msgring_close(ring);
}

static void test_msglog_lost(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *ring = open_ring(fx, 8);
    for (int i = 1; i <= 20; i++)
        assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "fast", "m%d", i), 0);
    struct mb_msglog *log = NULL;
    assert_int_equal(mb_msglog_open(fx->db, &log), 0);
    assert_int_equal(mb_msglog_sync(log, ring), 0);
    struct mb_msglog_stats ls;
    mb_msglog_stats(log, &ls);
    assert_int_equal(ls.last_lost, 12);
    assert_int_equal(ls.last_written, 9);
    struct mb_msg *l = NULL;
    size_t n;
    assert_int_equal(mb_msglog_query(log, NULL, &l, &n), 0);
    assert_int_equal(n, 9);
    assert_int_equal(l[0].seq, 1);
    assert_int_equal(l[0].type, MB_MSG_ERROR);
    assert_string_equal(l[0].source, "msglog");
    assert_non_null(strstr(l[0].text, "12 messages lost"));
    for (size_t i = 1; i < n; i++) {
        char want[32];
        (void)snprintf(want, sizeof want, "m%d", (int)i + 12);
        assert_int_equal(l[i].seq, i + 12);
        assert_string_equal(l[i].text, want);
    }
    mb_msglog_query_free(l);
    /* Another gap later. */
    for (int i = 21; i <= 40; i++)
        assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "fast", "m%d", i), 0);
    assert_int_equal(mb_msglog_sync(log, ring), 0);
    mb_msglog_stats(log, &ls);
    assert_int_equal(ls.last_lost, 12);
    assert_int_equal(ls.n_lost, 24);
    assert_int_equal(mb_msglog_query(log, NULL, &l, &n), 0);
    assert_int_equal(n, 18);
    assert_int_equal(l[9].seq, 21);
    assert_string_equal(l[9].source, "msglog");
    assert_int_equal(l[10].seq, 33);
    mb_msglog_query_free(l);
    mb_msglog_close(log);
    mb_msgring_close(ring);
}

#define N_SYNC_MSGS 600

static void test_msglog_concurrent_sync(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *ring = open_ring(fx, 1024);
    struct mb_msglog *log = NULL;
    assert_int_equal(mb_msglog_open(fx->db, &log), 0);
    int go[2], report[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(report), 0);
    pid_t pids[2];
    for (int p = 0; p < 2; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            char c;
            close(go[1]);
            close(report[0]);
            struct mb_msglog *mine = NULL;
            if (mb_msglog_open(fx->db, &mine) != 0)
                _exit(1);
            if (read(go[0], &c, 1) != 0)
                _exit(2);
            uint64_t have = 0;
            int64_t t0 = ut_now_ns();
            while (have < N_SYNC_MSGS) {
                if (mb_msglog_sync(mine, ring) != 0)
                    _exit(3);
                if (mb_msglog_last_seq(mine, &have) != 0)
                    _exit(4);
                if (elapsed_ms(t0) > 60000)
                    _exit(5);
            }
            struct mb_msglog_stats ls;
            mb_msglog_stats(mine, &ls);
            uint64_t out[2] = {ls.n_written, ls.n_lost};
            if (write(report[1], out, sizeof out) != (ssize_t)sizeof out)
                _exit(6);
            mb_msglog_close(mine);
            _exit(0);
        }
    }
    close(go[0]);
    close(report[1]);
    close(go[1]); /* start the syncers */
    for (int i = 1; i <= N_SYNC_MSGS; i++)
        assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "poster", "concurrent %d", i), 0);
    uint64_t written = 0, lost = 0;
    for (int p = 0; p < 2; p++) {
        uint64_t in[2];
        assert_int_equal(read(report[0], in, sizeof in), (ssize_t)sizeof in);
        written += in[0];
        lost += in[1];
        int status;
        assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    close(report[0]);
    assert_int_equal(written, N_SYNC_MSGS);
    assert_int_equal(lost, 0);
    struct mb_msg *l = NULL;
    size_t n;
    assert_int_equal(mb_msglog_query(log, NULL, &l, &n), 0);
    assert_int_equal(n, N_SYNC_MSGS);
    for (size_t i = 0; i < n; i++) {
        char want[32];
        (void)snprintf(want, sizeof want, "concurrent %zu", i + 1);
        assert_int_equal(l[i].seq, i + 1);
        assert_string_equal(l[i].text, want);
    }
    mb_msglog_query_free(l);
    /* Nothing left to do for a third syncer. */
    assert_int_equal(mb_msglog_sync(log, ring), 0);
    struct mb_msglog_stats ls;
    mb_msglog_stats(log, &ls);
    assert_int_equal(ls.last_written, 0);
    mb_msglog_close(log);
    mb_msgring_close(ring);
}

/* Waits until the wall clock has moved past t (the clock's resolution). */
static int64_t wall_after(int64_t t)
{
    int64_t now;
    while ((now = ut_wall_ns()) <= t)
        sched_yield();
    return now;
}

static void test_msglog_query(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *ring = open_ring(fx, 64);
    assert_int_equal(mb_msg_post(ring, MB_MSG_ERROR, "fe1", "e1"), 0);
    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "fe2", "i1"), 0);
    assert_int_equal(mb_msg_post(ring, MB_MSG_TALK, "fe1", "t1"), 0);
    int64_t t1 = wall_after(ut_wall_ns());
    wall_after(t1);
    assert_int_equal(mb_msg_post(ring, MB_MSG_ERROR, "fe2", "e2"), 0);
    assert_int_equal(mb_msg_post(ring, MB_MSG_USER, "odbedit", "u1"), 0);
    assert_int_equal(mb_msg_post(ring, MB_MSG_INFO, "fe1", "i2"), 0);
    struct mb_msglog *log = NULL;
    assert_int_equal(mb_msglog_open(fx->db, &log), 0);
    assert_int_equal(mb_msglog_sync(log, ring), 0);

    struct mb_msg *l;
    size_t n;
    struct mb_msglog_filter f = {0};
    f.type_mask = MB_MSG_MASK(MB_MSG_ERROR) | MB_MSG_MASK(MB_MSG_TALK);
    assert_int_equal(mb_msglog_query(log, &f, &l, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(l[0].text, "e1");
    assert_string_equal(l[1].text, "t1");
    assert_string_equal(l[2].text, "e2");
    mb_msglog_query_free(l);

    memset(&f, 0, sizeof f);
    f.source = "fe1";
    assert_int_equal(mb_msglog_query(log, &f, &l, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(l[0].text, "e1");
    assert_string_equal(l[2].text, "i2");
    mb_msglog_query_free(l);

    memset(&f, 0, sizeof f);
    f.since_ns = t1;
    assert_int_equal(mb_msglog_query(log, &f, &l, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(l[0].text, "e2");
    mb_msglog_query_free(l);
    f.since_ns = 0;
    f.until_ns = t1;
    assert_int_equal(mb_msglog_query(log, &f, &l, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(l[2].text, "t1");
    mb_msglog_query_free(l);

    /* The newest two, oldest first; combined filters; after_seq. */
    memset(&f, 0, sizeof f);
    f.max = 2;
    assert_int_equal(mb_msglog_query(log, &f, &l, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(l[0].text, "u1");
    assert_string_equal(l[1].text, "i2");
    mb_msglog_query_free(l);
    f.max = 1;
    f.source = "fe2";
    f.type_mask = MB_MSG_MASK(MB_MSG_INFO) | MB_MSG_MASK(MB_MSG_ERROR);
    f.until_ns = t1;
    assert_int_equal(mb_msglog_query(log, &f, &l, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(l[0].text, "i1");
    mb_msglog_query_free(l);
    memset(&f, 0, sizeof f);
    f.after_seq = 4;
    assert_int_equal(mb_msglog_query(log, &f, &l, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(l[0].seq, 5);
    mb_msglog_query_free(l);
    f.source = "nobody";
    l = (struct mb_msg *)&f;
    assert_int_equal(mb_msglog_query(log, &f, &l, &n), 0);
    assert_int_equal(n, 0);
    assert_null(l);
    f.type_mask = 1u << 20;
    assert_int_equal(mb_msglog_query(log, &f, &l, &n), UT_EINVAL);
    mb_msglog_close(log);
    mb_msgring_close(ring);
}

static void test_msglog_refuses(void **state)
{
    struct fixture *fx = *state;
    /* A foreign database whose "messages" table has another layout. */
    char foreign[320];
    (void)snprintf(foreign, sizeof foreign, "%s/foreign.sqlite3", fx->dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(foreign, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE messages(x INTEGER)", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    struct mb_msglog *log = NULL;
    assert_int_equal(mb_msglog_open(foreign, &log), MB_EMSGLOG_SCHEMA);
    assert_null(log);
    /* A symlink is not followed. */
    char link[320];
    (void)snprintf(link, sizeof link, "%s/link.sqlite3", fx->dir);
    assert_int_equal(symlink(foreign, link), 0);
    assert_int_equal(mb_msglog_open(link, &log), -ELOOP);
    assert_null(log);
    assert_int_equal(mb_msglog_open(NULL, &log), UT_EINVAL);
    assert_string_equal(ut_strerror(MB_EMSGLOG_SCHEMA),
                        "message log database has an incompatible schema");
}

/* Syncing with the ODB lock held is a bug: it must abort. */
static void test_msglog_sync_asserts_lock_order(void **state)
{
    struct fixture *fx = *state;
    struct mb_msgring *ring = open_ring(fx, 8);
    struct mb_msglog *log = NULL;
    assert_int_equal(mb_msglog_open(fx->db, &log), 0);
    struct fake_odb odb;
    fake_odb_init(&odb);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, STDERR_FILENO); /* the expected assertion text */
        if (UT_LOCK(&odb.lock) != 0)
            _exit(1);
        mb_msglog_sync(log, ring);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    fake_odb_release(&odb);
    mb_msglog_close(log);
    mb_msgring_close(ring);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_post_read_basic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_exp_and_first_seq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wraparound_follow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_multiprocess_posters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_wakes_other_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_interrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defer_under_odb_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defer_under_ring_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defer_overflow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defer_ring_closed_meanwhile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defer_flushed_at_thread_exit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_mid_post, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounds_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msglog_sync_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msglog_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msglog_concurrent_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msglog_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msglog_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msglog_sync_asserts_lock_order, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
