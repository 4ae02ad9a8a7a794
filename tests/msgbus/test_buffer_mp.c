/*
 * tests/msgbus/test_buffer_mp.c - event buffers across processes, and
 * their faults.
 *
 * Covers: M producers x N consumers (forked processes), every event's
 * serial number and data checked end to end: GET_ALL consumers see every
 * event exactly once and in each producer's order (one of them receives
 * zero-copy, one filters by event id), a slow GET_SOME consumer sees a
 * subset in order and received + missed equals what was sent, exactly;
 * producers killed with SIGKILL at random moments while sending (the
 * watchdog's mb_buffer_remove_client discards their partial events, each
 * dead producer's delivered events are a gapless prefix, the ring checks
 * clean); a consumer killed while holding a zero-copy event (producers
 * wait, the other consumer continues, removal releases them); and, through
 * the client layer, a dead GET_ALL consumer unblocking a producer within
 * one watchdog period, with statistics published under /System/Buffers.
 *
 * Children report through their exit status and pipes (cmocka asserts are
 * for the parent only). Every process sets alarm() so nothing hangs; shm
 * names are unique per test and removed in teardown.
 */
#include "client/aurum.h"
#include "msgbus/mb_int.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct fixture {
    char name[96]; /* shm name of the buffer */
    char dir[256]; /* experiment directory (client-layer test) */
};

static int counter;

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    const char *id = getenv("AURUM_TEST_ID");
    (void)snprintf(fx->name, sizeof fx->name, "/aurum.test.bufmp.%s.%d.%d", id ? id : "x",
                   (int)getpid(), counter++);
    const char *tmp = getenv("TMPDIR");
    (void)snprintf(fx->dir, sizeof fx->dir, "%s/aurum-bufmp-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    mb_buffer_destroy(fx->name);
    alarm(240);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    mb_buffer_destroy(fx->name);
    (void)au_experiment_remove_segments(fx->dir);
    DIR *d = opendir(fx->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char path[600];
            (void)snprintf(path, sizeof path, "%s/%s", fx->dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(fx->dir);
    alarm(0);
    free(fx);
    return 0;
}

/* Opens the fixture's buffer as client slot `slot`; NULL on error (for
 * children). */
static struct mb_buffer *open_slot(const struct fixture *fx, uint64_t size, uint32_t slot)
{
    struct mb_buffer_params p = {0};
    p.size_bytes = size;
    p.slot = slot;
    struct mb_buffer *buf = NULL;
    if (mb_buffer_open(fx->name, "MP", MB_BUFFER_CREATE, &p, &buf) != 0)
        return NULL;
    return buf;
}

static uint8_t pat(int id, uint32_t serial, size_t i)
{
    return (uint8_t)(serial * 131u + (uint32_t)id * 7u + i);
}

static bool pattern_ok(const uint8_t *data, size_t n, int id, uint32_t serial)
{
    for (size_t i = 0; i < n; i++)
        if (data[i] != pat(id, serial, i))
            return false;
    return true;
}

/* A small deterministic generator (children need no shared state). */
static uint32_t rnd(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

static void write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            _exit(90);
        }
        b += w;
        n -= (size_t)w;
    }
}

static bool read_all(int fd, void *p, size_t n)
{
    uint8_t *b = p;
    while (n) {
        ssize_t r = read(fd, b, n);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            return false;
        }
        b += r;
        n -= (size_t)r;
    }
    return true;
}

static void check_ok(struct mb_buffer *buf)
{
    char report[256];
    int err = mb_buffer_check(buf, report, sizeof report);
    if (err)
        fail_msg("check: %s", report);
}

/* ---------------------------------------------------------------------- */
/* M producers x N consumers                                               */
/* ---------------------------------------------------------------------- */

#define MP_PRODUCERS 3
#define MP_EVENTS    20000 /* per producer */
#define MP_MAXDATA   1500

enum consumer_kind { C_ALL, C_ALL_ZC, C_ALL_ID2, C_SOME };

struct consumer_report {
    uint64_t received;
    uint64_t missed;
};

/* Producer p: sends serials 0..MP_EVENTS-1 as event id p+1, mixing single
 * sends and batches. */
static void producer_main(const struct fixture *fx, int p, int go_fd)
{
    alarm(200);
    struct mb_buffer *buf = open_slot(fx, 0, 10 + (uint32_t)p);
    if (!buf)
        _exit(10);
    char go;
    if (!read_all(go_fd, &go, 1))
        _exit(11);
    static uint8_t data[16][MP_MAXDATA];
    struct mb_event evs[16];
    uint32_t seed = 1234u + (uint32_t)p, serial = 0;
    while (serial < MP_EVENTS) {
        uint32_t n = 1 + rnd(&seed) % 16;
        if (n > MP_EVENTS - serial)
            n = MP_EVENTS - serial;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t size = rnd(&seed) % MP_MAXDATA;
            for (uint32_t k = 0; k < size; k++)
                data[i][k] = pat(p + 1, serial + i, k);
            struct mb_event_header h = {(int16_t)(p + 1), (int16_t)(1 << p), serial + i, 0, size};
            evs[i].hdr = h;
            evs[i].data = data[i];
        }
        int err;
        if (n == 1) {
            err = mb_buffer_send(buf, &evs[0].hdr, evs[0].data, 30000);
        } else {
            size_t sent = 0;
            err = mb_buffer_send_batch(buf, evs, n, &sent, 30000);
            if (!err && sent != n)
                _exit(12);
        }
        if (err)
            _exit(13);
        serial += n;
    }
    mb_buffer_close(buf);
    _exit(0);
}

/* Where the slow consumer's busy work goes, so it is not optimised away. */
static volatile uint32_t bench_sink;

static void consumer_main(const struct fixture *fx, enum consumer_kind kind, int index,
                          int ready_fd, int report_fd)
{
    alarm(200);
    struct mb_buffer *buf = open_slot(fx, 0, 20 + (uint32_t)index);
    if (!buf)
        _exit(20);
    int err;
    uint64_t expect_total = (uint64_t)MP_PRODUCERS * MP_EVENTS;
    switch (kind) {
    case C_ALL_ID2:
        err = mb_buffer_request_add(buf, 2, MB_TRIGGER_ALL, MB_GET_ALL, NULL);
        expect_total = MP_EVENTS;
        break;
    case C_SOME:
        err = mb_buffer_request_add(buf, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_SOME, NULL);
        break;
    default:
        /* Two requests that together cover everything: each event once. */
        err = mb_buffer_request_add(buf, MB_EVENT_ID_ALL, 0x1 | 0x2, MB_GET_ALL, NULL);
        if (!err)
            err = mb_buffer_request_add(buf, 3, MB_TRIGGER_ALL, MB_GET_ALL, NULL);
    }
    if (err)
        _exit(21);
    write_all(ready_fd, "r", 1);
    uint32_t next[MP_PRODUCERS + 1] = {0};
    bool seen_any[MP_PRODUCERS + 1] = {false};
    uint64_t received = 0;
    static uint8_t data[MP_MAXDATA];
    volatile uint32_t sink = 0;
    for (;;) {
        if (kind == C_SOME && received + mb_buffer_n_missed(buf) >= expect_total)
            break;
        if (kind != C_SOME && received >= expect_total)
            break;
        struct mb_event_header h;
        const uint8_t *d;
        if (kind == C_ALL_ZC) {
            const struct mb_event_header *hp;
            const void *dp;
            err = mb_buffer_receive_begin(buf, &hp, &dp, 30000);
            if (err)
                _exit(22);
            h = *hp;
            d = dp;
        } else {
            size_t size = sizeof data;
            err = mb_buffer_receive(buf, &h, data, &size, 30000);
            if (err)
                _exit(23);
            if (size != h.data_size)
                _exit(24);
            d = data;
        }
        int p = h.event_id;
        if (p < 1 || p > MP_PRODUCERS || h.trigger_mask != (1 << (p - 1)))
            _exit(25);
        if (kind == C_ALL_ID2 && p != 2)
            _exit(26);
        if (kind == C_SOME) {
            if (seen_any[p] && h.serial_number < next[p])
                _exit(27); /* out of order or duplicate */
        } else if (h.serial_number != next[p]) {
            _exit(28); /* a gap, a duplicate or out of order */
        }
        if (h.data_size > MP_MAXDATA || !pattern_ok(d, h.data_size, p, h.serial_number))
            _exit(29);
        seen_any[p] = true;
        next[p] = h.serial_number + 1;
        if (kind == C_ALL_ZC && mb_buffer_receive_end(buf) != 0)
            _exit(30);
        received++;
        if (kind == C_SOME) { /* slow on purpose, so it falls behind */
            for (int i = 0; i < 20000; i++)
                sink += (uint32_t)i;
            bench_sink = sink;
        }
    }
    if (kind != C_SOME && received != expect_total)
        _exit(31);
    if (kind == C_SOME && received + mb_buffer_n_missed(buf) != expect_total)
        _exit(32);
    struct consumer_report r = {received, mb_buffer_n_missed(buf)};
    write_all(report_fd, &r, sizeof r);
    mb_buffer_close(buf);
    _exit(0);
}

static void test_m_producers_n_consumers(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *buf = open_slot(fx, 262144, 1);
    assert_non_null(buf);
    int go[2], ready[2], report[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(report), 0);
    const enum consumer_kind kinds[] = {C_ALL, C_ALL_ZC, C_ALL_ID2, C_SOME};
    const int n_cons = 4;
    pid_t pids[16];
    int n = 0;
    for (int c = 0; c < n_cons; c++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            consumer_main(fx, kinds[c], c, ready[1], report[1]);
        pids[n++] = pid;
    }
    for (int p = 0; p < MP_PRODUCERS; p++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            producer_main(fx, p, go[0]);
        pids[n++] = pid;
    }
    char r;
    for (int c = 0; c < n_cons; c++)
        assert_true(read_all(ready[0], &r, 1));
    int64_t t0 = ut_now_ns();
    for (int p = 0; p < MP_PRODUCERS; p++)
        assert_int_equal(write(go[1], "g", 1), 1);
    int failures = 0;
    for (int i = 0; i < n; i++) {
        int status;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            print_message("child %d (%s %d) failed: status %#x\n", i,
                          i < n_cons ? "consumer" : "producer", i, status);
            failures++;
        }
    }
    double s = (double)(ut_now_ns() - t0) / 1e9;
    assert_int_equal(failures, 0);
    uint64_t some_recv = 0, some_missed = 0;
    for (int c = 0; c < n_cons; c++) {
        struct consumer_report rep;
        assert_true(read_all(report[0], &rep, sizeof rep));
        if (rep.missed) {
            some_recv = rep.received;
            some_missed = rep.missed;
        }
    }
    struct mb_buffer_stats st;
    assert_int_equal(mb_buffer_stats(buf, &st, NULL, 0, NULL), 0);
    assert_int_equal(st.n_events_in, (uint64_t)MP_PRODUCERS * MP_EVENTS);
    /* get-all x2, id 2 only, get-some */
    assert_int_equal(st.n_events_out, 2ull * MP_PRODUCERS * MP_EVENTS + MP_EVENTS + some_recv);
    assert_int_equal(st.n_missed, some_missed);
    print_message("%d producers x %d consumers: %d events each in %.2f s; get-some received "
                  "%llu, missed %llu; %llu producer waits, %llu wakes\n",
                  MP_PRODUCERS, n_cons, MP_EVENTS, s, (unsigned long long)some_recv,
                  (unsigned long long)some_missed, (unsigned long long)st.n_full_waits,
                  (unsigned long long)st.n_wakes);
    check_ok(buf);
    for (int i = 0; i < 2; i++) {
        close(go[i]);
        close(ready[i]);
        close(report[i]);
    }
    mb_buffer_close(buf);
}

/* ---------------------------------------------------------------------- */
/* Producers killed at random moments                                      */
/* ---------------------------------------------------------------------- */

#define KILL_ROUNDS 12
#define END_ID      999

/* Sends serials 0, 1, ... as event `id` until killed (or, with end, a
 * fixed number then an END event). */
static void endless_producer(const struct fixture *fx, int id, uint32_t slot, bool end)
{
    alarm(200);
    struct mb_buffer *buf = open_slot(fx, 0, slot);
    if (!buf)
        _exit(40);
    uint8_t data[16][600];
    struct mb_event evs[16];
    uint32_t seed = (uint32_t)id * 77u, serial = 0;
    for (;;) {
        uint32_t n = 1 + rnd(&seed) % 16;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t size = rnd(&seed) % 600;
            for (uint32_t k = 0; k < size; k++)
                data[i][k] = pat(id, serial + i, k);
            struct mb_event_header h = {(int16_t)id, 1, serial + i, 0, size};
            evs[i].hdr = h;
            evs[i].data = data[i];
        }
        size_t sent = 0;
        if (mb_buffer_send_batch(buf, evs, n, &sent, 30000) != 0)
            _exit(41);
        serial += n;
        if (end && serial >= 1000) {
            struct mb_event_header h = {END_ID, 1, 0, 0, 0};
            if (mb_buffer_send(buf, &h, NULL, 30000) != 0)
                _exit(42);
            mb_buffer_close(buf);
            _exit(0);
        }
    }
}

/* A GET_ALL consumer checking that each producer id's events arrive as a
 * gapless prefix 0, 1, 2, ... until the END event. Reports events seen. */
static void checking_consumer(const struct fixture *fx, int ready_fd, int report_fd)
{
    alarm(200);
    struct mb_buffer *buf = open_slot(fx, 0, 5);
    if (!buf || mb_buffer_request_add(buf, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_ALL, NULL))
        _exit(50);
    write_all(ready_fd, "r", 1);
    static uint32_t next[KILL_ROUNDS + 2];
    uint64_t received = 0;
    uint8_t data[600];
    for (;;) {
        struct mb_event_header h;
        size_t size = sizeof data;
        if (mb_buffer_receive(buf, &h, data, &size, 60000) != 0)
            _exit(51);
        if (h.event_id == END_ID)
            break;
        if (h.event_id < 1 || h.event_id > KILL_ROUNDS + 1)
            _exit(52);
        if (h.serial_number != next[h.event_id])
            _exit(53);
        if (!pattern_ok(data, size, h.event_id, h.serial_number))
            _exit(54);
        next[h.event_id]++;
        received++;
    }
    struct consumer_report r = {received, 0};
    write_all(report_fd, &r, sizeof r);
    mb_buffer_close(buf);
    _exit(0);
}

static void test_kill_producers(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *buf = open_slot(fx, 65536, 1);
    assert_non_null(buf);
    int ready[2], report[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(report), 0);
    pid_t cons = fork();
    assert_true(cons >= 0);
    if (cons == 0)
        checking_consumer(fx, ready[1], report[1]);
    char r;
    assert_true(read_all(ready[0], &r, 1));
    uint32_t seed = 99;
    int killed = 0;
    for (int round = 1; round <= KILL_ROUNDS; round++) {
        uint32_t slot = 100 + (uint32_t)round;
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            endless_producer(fx, round, slot, false);
        struct timespec ts = {0, (long)(1 + rnd(&seed) % 20) * 1000000L};
        nanosleep(&ts, NULL); /* fault-injection timing, not synchronisation */
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
            killed++;
        /* The watchdog's part for the dead slot. */
        assert_true(mb_buffer_remove_client(buf, slot) >= 0);
        check_ok(buf);
    }
    pid_t last = fork();
    assert_true(last >= 0);
    if (last == 0)
        endless_producer(fx, KILL_ROUNDS + 1, 200, true);
    int status;
    assert_int_equal(waitpid(last, &status, 0), last);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(waitpid(cons, &status, 0), cons);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    struct consumer_report rep;
    assert_true(read_all(report[0], &rep, sizeof rep));
    struct mb_buffer_stats st;
    assert_int_equal(mb_buffer_stats(buf, &st, NULL, 0, NULL), 0);
    check_ok(buf);
    print_message("%d producers killed mid-stream; consumer saw %llu events, gapless per "
                  "producer; %llu partial events discarded, %llu lock recoveries\n",
                  killed, (unsigned long long)rep.received, (unsigned long long)st.n_discarded,
                  (unsigned long long)st.n_recovered);
    assert_true(killed >= KILL_ROUNDS - 1);
    assert_true(rep.received >= 1000);
    for (int i = 0; i < 2; i++) {
        close(ready[i]);
        close(report[i]);
    }
    mb_buffer_close(buf);
}

/* ---------------------------------------------------------------------- */
/* A consumer killed while holding a zero-copy event                       */
/* ---------------------------------------------------------------------- */

static void holding_consumer(const struct fixture *fx, int ready_fd)
{
    alarm(200);
    struct mb_buffer *buf = open_slot(fx, 0, 6);
    if (!buf || mb_buffer_request_add(buf, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_SOME, NULL))
        _exit(60);
    write_all(ready_fd, "r", 1);
    const struct mb_event_header *h;
    const void *d;
    if (mb_buffer_receive_begin(buf, &h, &d, 60000) != 0)
        _exit(61);
    write_all(ready_fd, "h", 1);
    for (;;)
        pause(); /* killed here, holding the event */
}

static void test_kill_consumer_holding_event(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *prod = open_slot(fx, 16384, 1);
    assert_non_null(prod);
    int ready[2], report[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(report), 0);
    pid_t holder = fork();
    assert_true(holder >= 0);
    if (holder == 0)
        holding_consumer(fx, ready[1]);
    char r;
    assert_true(read_all(ready[0], &r, 1));
    pid_t checker = fork();
    assert_true(checker >= 0);
    if (checker == 0)
        checking_consumer(fx, ready[1], report[1]);
    assert_true(read_all(ready[0], &r, 1));

    uint8_t data[600];
    uint32_t serial = 0;
    struct mb_event_header h = {1, 1, serial, 0, 500};
    for (size_t k = 0; k < 500; k++)
        data[k] = pat(1, serial, k);
    assert_int_equal(mb_buffer_send(prod, &h, data, 10000), 0);
    serial++;
    assert_true(read_all(ready[0], &r, 1)); /* the holder has it */
    assert_int_equal(r, 'h');
    kill(holder, SIGKILL);
    int status;
    assert_int_equal(waitpid(holder, &status, 0), holder);
    /* The held event blocks producers; the other consumer keeps reading. */
    int err = 0;
    for (; serial < 1000; serial++) {
        h.serial_number = serial;
        for (size_t k = 0; k < 500; k++)
            data[k] = pat(1, serial, k);
        err = mb_buffer_send(prod, &h, data, 300);
        if (err)
            break;
    }
    assert_int_equal(err, MB_EFULL);
    assert_true(serial < 100);
    check_ok(prod);
    struct mb_buffer_client_stats cs[4];
    struct mb_buffer_stats st;
    size_t nc = 0;
    assert_int_equal(mb_buffer_stats(prod, &st, cs, 4, &nc), 0);
    bool holding = false;
    for (size_t i = 0; i < nc; i++)
        if (cs[i].slot == 6 && cs[i].holding)
            holding = true;
    assert_true(holding);
    /* The watchdog removes the dead consumer: producers resume. */
    assert_int_equal(mb_buffer_remove_client(prod, 6), 1);
    for (; serial < 1000; serial++) {
        h.serial_number = serial;
        for (size_t k = 0; k < 500; k++)
            data[k] = pat(1, serial, k);
        assert_int_equal(mb_buffer_send(prod, &h, data, 10000), 0);
    }
    struct mb_event_header end = {END_ID, 1, 0, 0, 0};
    assert_int_equal(mb_buffer_send(prod, &end, NULL, 10000), 0);
    assert_int_equal(waitpid(checker, &status, 0), checker);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    struct consumer_report rep;
    assert_true(read_all(report[0], &rep, sizeof rep));
    assert_int_equal(rep.received, 1000);
    check_ok(prod);
    for (int i = 0; i < 2; i++) {
        close(ready[i]);
        close(report[i]);
    }
    mb_buffer_close(prod);
}

/* ---------------------------------------------------------------------- */
/* Through the client layer: the watchdog removes a dead GET_ALL consumer  */
/* ---------------------------------------------------------------------- */

#define WD_PERIOD_MS 200

static struct au_connect_opts wd_opts(const struct fixture *fx, const char *name)
{
    struct au_connect_opts o;
    memset(&o, 0, sizeof o);
    o.name = name;
    o.experiment = fx->dir;
    o.watchdog_period_ms = WD_PERIOD_MS;
    o.odb_size_bytes = 2u << 20;
    return o;
}

static void au_consumer_main(const struct fixture *fx, int ready_fd)
{
    alarm(200);
    struct au_connect_opts o = wd_opts(fx, "cons");
    struct au_client *c = NULL;
    if (au_connect(&o, &c) != 0)
        _exit(70);
    struct mb_buffer *buf = NULL;
    if (au_buffer_open(c, "WDTEST", 32768, &buf) != 0)
        _exit(71);
    if (mb_buffer_request_add(buf, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_ALL, NULL) != 0)
        _exit(72);
    write_all(ready_fd, "r", 1);
    for (;;)
        pause(); /* a GET_ALL consumer that never reads; killed here */
}

static void test_watchdog_unblocks_producer(void **state)
{
    struct fixture *fx = *state;
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    /* The child connects first (the parent has no threads yet at fork). */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0)
        au_consumer_main(fx, ready[1]);
    char r;
    assert_true(read_all(ready[0], &r, 1));

    struct au_connect_opts o = wd_opts(fx, "prod");
    struct au_client *c = NULL;
    assert_int_equal(au_connect(&o, &c), 0);
    struct mb_buffer *buf = NULL;
    assert_int_equal(au_buffer_open(c, "WDTEST", 0, &buf), 0);
    assert_int_equal(mb_buffer_size(buf), 32768);
    uint8_t data[1000];
    memset(data, 0x5a, sizeof data);
    struct mb_event_header h = {1, 1, 0, 0, sizeof data};
    int err;
    while ((err = mb_buffer_send(buf, &h, data, 0)) == 0)
        h.serial_number++;
    assert_int_equal(err, MB_EFULL);
    /* Blocked behind the consumer, which is alive: still blocked. */
    assert_int_equal(mb_buffer_send(buf, &h, data, 3 * WD_PERIOD_MS), MB_EFULL);

    kill(child, SIGKILL);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    int64_t t0 = ut_now_ns();
    err = mb_buffer_send(buf, &h, data, 20 * WD_PERIOD_MS);
    int64_t ms = (ut_now_ns() - t0) / 1000000;
    assert_int_equal(err, 0);
    print_message("producer resumed %lld ms after its GET_ALL consumer was killed (watchdog "
                  "period %d ms)\n",
                  (long long)ms, WD_PERIOD_MS);
    /* The next scan removes it: within one period of the scan schedule.
     * Scans are claimed experiment-wide at most once per 0.9 period, and
     * the dead client may have claimed the last one just before dying, so
     * allow a second period, plus scheduling slack for sanitizer builds. */
    assert_true(ms <= 2 * WD_PERIOD_MS + 250);

    /* Statistics reach the ODB. */
    assert_int_equal(au_buffer_publish(c), 0);
    uint64_t in = 0;
    size_t sz = sizeof in;
    assert_int_equal(
        odb_get(au_odb(c), ODB_ROOT, "/System/Buffers/WDTEST/Events in", ODB_TYPE_UINT64, &in, &sz),
        0);
    assert_int_equal(in, h.serial_number + 1);
    uint32_t consumers = 99;
    sz = sizeof consumers;
    assert_int_equal(odb_get(au_odb(c), ODB_ROOT, "/System/Buffers/WDTEST/Consumers",
                             ODB_TYPE_UINT32, &consumers, &sz),
                     0);
    assert_int_equal(consumers, 0);
    char list[128];
    sz = sizeof list;
    char path[64];
    (void)snprintf(path, sizeof path, "/System/Clients/%u/Buffers", au_client_slot(c));
    assert_int_equal(odb_get(au_odb(c), ODB_ROOT, path, ODB_TYPE_STRING, list, &sz), 0);
    assert_string_equal(list, "WDTEST");
    check_ok(buf);
    au_buffer_close(c, buf);
    au_disconnect(c);
    close(ready[0]);
    close(ready[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_m_producers_n_consumers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_producers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_consumer_holding_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_unblocks_producer, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
