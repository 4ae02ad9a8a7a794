/*
 * tests/msgbus/test_buffer.c - event buffers, one call and one error path
 * at a time.
 *
 * Covers: names and parameters (bad names, sizes, missing segment, a
 * segment of another kind); send and receive with exact headers and data;
 * an event larger than the buffer allows; bad and too many requests,
 * request matching by id and trigger mask; timeouts of both sides; a
 * removed ("closed") handle and admin handles; GET_SOME skipping with an
 * exact miss count; zero-copy receive pinning its event; batched send with
 * a bad event inside; wraparound with every record checked; futex wake-ups
 * between threads and ut_interrupt; a producer blocked on a GET_ALL
 * consumer released by mb_buffer_remove_client; no self-deadlock while the
 * buffer lock is held (SPEC failure mode 3); damage found by the check; a
 * producer killed at every crash point of a send (with and without
 * eviction), and events committed behind a dead reservation delivered once
 * it is discarded; statistics.
 *
 * Each test uses its own shm name (AURUM_TEST_ID + pid + counter), removed
 * in teardown. Threads and processes synchronise with pipes and atomics,
 * never sleeps. Forked children report through their exit status.
 */
#include "msgbus/mb_int.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct fixture {
    char name[96];  /* shm name of the buffer */
    char name2[96]; /* a second segment when a test needs one */
};

static int counter;

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    const char *id = getenv("AURUM_TEST_ID");
    (void)snprintf(fx->name, sizeof fx->name, "/aurum.test.buf.%s.%d.%d", id ? id : "x",
                   (int)getpid(), counter);
    (void)snprintf(fx->name2, sizeof fx->name2, "/aurum.test.buf2.%s.%d.%d", id ? id : "x",
                   (int)getpid(), counter++);
    mb_buffer_destroy(fx->name);
    mb_buffer_destroy(fx->name2);
    alarm(120);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    mb_buffer_destroy(fx->name);
    mb_buffer_destroy(fx->name2);
    ut_crash_point_arm(0);
    ut_interrupt_clear();
    alarm(0);
    free(fx);
    return 0;
}

static struct mb_buffer *open_buf(const struct fixture *fx, uint64_t size, uint32_t slot)
{
    struct mb_buffer_params p = {0};
    p.size_bytes = size;
    p.slot = slot;
    p.max_clients = 16;
    struct mb_buffer *buf = NULL;
    assert_int_equal(mb_buffer_open(fx->name, "TEST", MB_BUFFER_CREATE, &p, &buf), 0);
    assert_non_null(buf);
    return buf;
}

/* Fills data with the pattern of (id, serial). */
static void pattern(uint8_t *data, size_t n, int id, uint32_t serial)
{
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(serial * 131u + (uint32_t)id * 7u + i);
}

static bool pattern_ok(const uint8_t *data, size_t n, int id, uint32_t serial)
{
    for (size_t i = 0; i < n; i++)
        if (data[i] != (uint8_t)(serial * 131u + (uint32_t)id * 7u + i))
            return false;
    return true;
}

static struct mb_event_header mkhdr(int16_t id, int16_t mask, uint32_t serial, uint32_t size)
{
    struct mb_event_header h = {id, mask, serial, 1700000000u + serial, size};
    return h;
}

/* Sends event (id, serial) of `size` bytes with the pattern. */
static int send_ev(struct mb_buffer *buf, int16_t id, uint32_t serial, uint32_t size,
                   int timeout_ms)
{
    static uint8_t data[1 << 20];
    pattern(data, size, id, serial);
    struct mb_event_header h = mkhdr(id, 1, serial, size);
    return mb_buffer_send(buf, &h, data, timeout_ms);
}

/* Receives one event and checks its pattern; returns the serial. */
static uint32_t recv_ev(struct mb_buffer *buf, int16_t *id_out, int timeout_ms)
{
    static uint8_t data[1 << 20];
    struct mb_event_header h;
    size_t size = sizeof data;
    assert_int_equal(mb_buffer_receive(buf, &h, data, &size, timeout_ms), 0);
    assert_int_equal(size, h.data_size);
    assert_true(pattern_ok(data, size, h.event_id, h.serial_number));
    if (id_out)
        *id_out = h.event_id;
    return h.serial_number;
}

static void check_ok(struct mb_buffer *buf)
{
    char report[256];
    int err = mb_buffer_check(buf, report, sizeof report);
    if (err)
        fail_msg("check: %s", report);
    assert_string_equal(report, "ok");
}

static int64_t elapsed_ms(int64_t t0)
{
    return (ut_now_ns() - t0) / 1000000;
}

/* ---------------------------------------------------------------------- */

static void test_names_and_params(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *buf = NULL;
    assert_int_equal(mb_buffer_name_check("SYSTEM"), 0);
    assert_int_equal(mb_buffer_name_check("fe_01-x"), 0);
    assert_int_equal(mb_buffer_name_check(NULL), UT_EINVAL);
    assert_int_equal(mb_buffer_name_check(""), UT_EINVAL);
    assert_int_equal(mb_buffer_name_check("a/b"), UT_EINVAL);
    assert_int_equal(mb_buffer_name_check("a b"), UT_EINVAL);
    assert_int_equal(mb_buffer_name_check("abcdefghijklmnopqrstuvwxyz012345"), UT_ENAMETOOLONG);
    assert_int_equal(mb_buffer_name_check("abcdefghijklmnopqrstuvwxyz01234"), 0);

    assert_int_equal(mb_buffer_open(fx->name, "bad/name", MB_BUFFER_CREATE, NULL, &buf), UT_EINVAL);
    assert_int_equal(mb_buffer_open(NULL, "X", MB_BUFFER_CREATE, NULL, &buf), UT_EINVAL);
    assert_int_equal(mb_buffer_open(fx->name, "X", MB_BUFFER_CREATE, NULL, NULL), UT_EINVAL);
    struct mb_buffer_params p = {0};
    p.size_bytes = MB_BUFFER_MAX_SIZE + 4096;
    assert_int_equal(mb_buffer_open(fx->name, "X", MB_BUFFER_CREATE, &p, &buf), UT_EINVAL);
    p.size_bytes = 4096;
    p.max_clients = MB_BUFFER_MAX_CLIENTS + 1;
    assert_int_equal(mb_buffer_open(fx->name, "X", MB_BUFFER_CREATE, &p, &buf), UT_EINVAL);
    assert_int_equal(mb_buffer_open(fx->name, "X", 0, NULL, &buf), UT_ENOENT);
    assert_null(buf);

    /* Size rounding; the geometry of an existing buffer is kept. */
    p.max_clients = 2;
    p.size_bytes = 5000;
    assert_int_equal(mb_buffer_open(fx->name, "X", MB_BUFFER_CREATE, &p, &buf), 0);
    assert_int_equal(mb_buffer_size(buf), 8192);
    assert_string_equal(mb_buffer_name(buf), "X");
    assert_int_equal(mb_buffer_max_event(buf), 4096 - 32);
    struct mb_buffer *b2 = NULL, *b3 = NULL;
    p.size_bytes = 1 << 20;
    assert_int_equal(mb_buffer_open(fx->name, "Y", 0, &p, &b2), 0);
    assert_int_equal(mb_buffer_size(b2), 8192);
    assert_string_equal(mb_buffer_name(b2), "X");
    /* The table holds two handles; an admin handle takes no entry. */
    assert_int_equal(mb_buffer_open(fx->name, "X", 0, NULL, &b3), MB_ECLIENTS);
    assert_int_equal(mb_buffer_open(fx->name, "X", MB_BUFFER_ADMIN, NULL, &b3), 0);
    struct mb_event_header h = mkhdr(1, 1, 1, 0);
    assert_int_equal(mb_buffer_send(b3, &h, NULL, 0), UT_EINVAL);
    assert_int_equal(mb_buffer_request_add(b3, 1, 1, MB_GET_ALL, NULL), UT_EINVAL);
    size_t sz = 0;
    assert_int_equal(mb_buffer_receive(b3, &h, NULL, &sz, 0), UT_EINVAL);
    check_ok(b3);
    mb_buffer_close(b3);
    mb_buffer_close(b2);
    mb_buffer_close(buf);
    mb_buffer_close(NULL);

    /* A segment of another kind is refused. */
    struct mb_msgring *ring = NULL;
    assert_int_equal(mb_msgring_open(fx->name2, MB_MSGRING_CREATE, NULL, &ring), 0);
    assert_int_equal(mb_buffer_open(fx->name2, "X", 0, NULL, &buf), UT_EVERSION);
    mb_msgring_close(ring);

    /* By experiment directory. */
    char dir[] = "/tmp/aurum-buf-XXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_int_equal(mb_buffer_open_exp(dir, "SYSTEM", MB_BUFFER_CREATE, NULL, &buf), 0);
    assert_int_equal(mb_buffer_size(buf), MB_BUFFER_DEFAULT_SIZE);
    mb_buffer_close(buf);
    assert_int_equal(mb_buffer_open_exp(dir, "a.b", 0, NULL, &buf), UT_EINVAL);
    assert_int_equal(mb_buffer_destroy_exp(dir, "SYSTEM"), 0);
    assert_int_equal(mb_buffer_destroy_exp(dir, "SYSTEM"), -ENOENT);
    rmdir(dir);
}

static void test_send_receive(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *prod = open_buf(fx, 65536, 1);
    struct mb_buffer *cons = open_buf(fx, 0, 2);
    struct mb_event_header h;
    size_t size = 0;
    assert_int_equal(mb_buffer_receive(cons, &h, NULL, &size, 0), MB_ENOREQ);
    int id = 0;
    assert_int_equal(mb_buffer_request_add(cons, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_ALL, &id),
                     0);
    assert_int_equal(mb_buffer_receive(cons, &h, NULL, &size, 0), MB_EEMPTY);

    assert_int_equal(send_ev(prod, 3, 10, 100, 0), 0);
    assert_int_equal(send_ev(prod, 4, 11, 0, 0), 0);
    assert_int_equal(send_ev(prod, 5, 12, 1000, 0), 0);

    uint8_t data[2000];
    size = sizeof data;
    assert_int_equal(mb_buffer_receive(cons, &h, data, &size, 0), 0);
    assert_int_equal(h.event_id, 3);
    assert_int_equal(h.trigger_mask, 1);
    assert_int_equal(h.serial_number, 10);
    assert_int_equal(h.time_stamp, 1700000010u);
    assert_int_equal(h.data_size, 100);
    assert_int_equal(size, 100);
    assert_true(pattern_ok(data, 100, 3, 10));
    size = 0;
    assert_int_equal(mb_buffer_receive(cons, &h, NULL, &size, 0), 0);
    assert_int_equal(h.serial_number, 11);
    assert_int_equal(size, 0);
    /* Too small a buffer: the size needed, nothing consumed. */
    size = 999;
    assert_int_equal(mb_buffer_receive(cons, &h, data, &size, 0), MB_ETRUNC);
    assert_int_equal(size, 1000);
    assert_int_equal(mb_buffer_receive(cons, &h, data, &size, 0), 0);
    assert_int_equal(h.serial_number, 12);
    assert_true(pattern_ok(data, 1000, 5, 12));
    assert_int_equal(mb_buffer_receive(cons, &h, data, &size, 0), MB_EEMPTY);

    /* Argument errors. */
    assert_int_equal(mb_buffer_send(NULL, &h, data, 0), UT_EINVAL);
    assert_int_equal(mb_buffer_send(prod, NULL, data, 0), UT_EINVAL);
    h = mkhdr(1, 1, 1, 10);
    assert_int_equal(mb_buffer_send(prod, &h, NULL, 0), UT_EINVAL);
    size = 10;
    assert_int_equal(mb_buffer_receive(cons, &h, NULL, &size, 0), UT_EINVAL);
    assert_int_equal(mb_buffer_receive(NULL, &h, data, &size, 0), UT_EINVAL);

    /* A consumer that subscribes later starts at the newest event. */
    struct mb_buffer *late = open_buf(fx, 0, 3);
    assert_int_equal(
        mb_buffer_request_add(late, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_SOME, NULL), 0);
    assert_int_equal(mb_buffer_receive(late, &h, data, &size, 0), MB_EEMPTY);
    assert_int_equal(send_ev(prod, 6, 13, 10, 0), 0);
    assert_int_equal(recv_ev(late, NULL, 0), 13);
    assert_int_equal(recv_ev(cons, NULL, 0), 13);

    /* Removing the last request stops consumption. */
    assert_int_equal(mb_buffer_request_remove(cons, id + 100), UT_EINVAL);
    assert_int_equal(mb_buffer_request_remove(cons, id), 0);
    assert_int_equal(mb_buffer_receive(cons, &h, data, &size, 0), MB_ENOREQ);
    check_ok(prod);
    mb_buffer_close(late);
    mb_buffer_close(cons);
    mb_buffer_close(prod);
}

static void test_too_big(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *buf = open_buf(fx, 16384, 1);
    assert_int_equal(mb_buffer_request_add(buf, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_ALL, NULL),
                     0);
    uint32_t max = mb_buffer_max_event(buf);
    assert_int_equal(max, 8192 - 32);
    assert_int_equal(send_ev(buf, 1, 1, max + 1, 0), MB_ETOOBIG);
    assert_int_equal(send_ev(buf, 1, 2, 100000, 0), MB_ETOOBIG);
    assert_int_equal(send_ev(buf, 1, 3, max, 0), 0);
    assert_int_equal(recv_ev(buf, NULL, 0), 3);
    /* Two maximal events in a row, wrapping. */
    for (uint32_t s = 4; s < 10; s++) {
        assert_int_equal(send_ev(buf, 1, s, max, 0), 0);
        assert_int_equal(recv_ev(buf, NULL, 0), s);
    }
    check_ok(buf);
    mb_buffer_close(buf);
}

static void test_requests(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *prod = open_buf(fx, 65536, 1);
    struct mb_buffer *c_id = open_buf(fx, 0, 2);
    struct mb_buffer *c_mask = open_buf(fx, 0, 3);
    assert_int_equal(mb_buffer_request_add(c_id, 5, MB_TRIGGER_ALL, 0, NULL), MB_EBADREQ);
    assert_int_equal(mb_buffer_request_add(c_id, 5, MB_TRIGGER_ALL, 3, NULL), MB_EBADREQ);
    assert_int_equal(mb_buffer_request_add(c_id, 5, 0, MB_GET_ALL, NULL), MB_EBADREQ);
    assert_int_equal(mb_buffer_request_add(NULL, 5, 1, MB_GET_ALL, NULL), UT_EINVAL);
    assert_int_equal(mb_buffer_request_add(c_id, 5, MB_TRIGGER_ALL, MB_GET_ALL, NULL), 0);
    assert_int_equal(mb_buffer_request_add(c_mask, MB_EVENT_ID_ALL, 0x2, MB_GET_ALL, NULL), 0);
    for (int i = 1; i < MB_BUFFER_MAX_REQUESTS; i++)
        assert_int_equal(mb_buffer_request_add(c_mask, 100 + i, 0x100, MB_GET_SOME, NULL), 0);
    assert_int_equal(mb_buffer_request_add(c_mask, 99, 1, MB_GET_SOME, NULL), MB_EREQUESTS);

    /* (id, mask): c_id wants id 5; c_mask wants mask & 2. */
    const int16_t ids[] = {5, 6, 5, 7, 8};
    const int16_t masks[] = {1, 2, 3, 4, 0x102};
    for (uint32_t i = 0; i < 5; i++) {
        struct mb_event_header h = mkhdr(ids[i], masks[i], i, 4);
        uint8_t d[4];
        pattern(d, 4, ids[i], i);
        assert_int_equal(mb_buffer_send(prod, &h, d, 0), 0);
    }
    int16_t id;
    assert_int_equal(recv_ev(c_id, &id, 0), 0);
    assert_int_equal(recv_ev(c_id, &id, 0), 2);
    struct mb_event_header h;
    size_t size = 0;
    assert_int_equal(mb_buffer_receive(c_id, &h, NULL, &size, 0), MB_EEMPTY);
    assert_int_equal(recv_ev(c_mask, &id, 0), 1);
    assert_int_equal(recv_ev(c_mask, &id, 0), 2);
    assert_int_equal(recv_ev(c_mask, &id, 0), 4);
    assert_int_equal(mb_buffer_receive(c_mask, &h, NULL, &size, 0), MB_EEMPTY);
    check_ok(prod);
    mb_buffer_close(c_mask);
    mb_buffer_close(c_id);
    mb_buffer_close(prod);
}

static void test_timeouts(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *prod = open_buf(fx, 8192, 1);
    struct mb_buffer *cons = open_buf(fx, 0, 2);
    assert_int_equal(mb_buffer_request_add(cons, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_ALL, NULL),
                     0);
    struct mb_event_header h;
    size_t size = 0;
    int64_t t0 = ut_now_ns();
    assert_int_equal(mb_buffer_receive(cons, &h, NULL, &size, 80), MB_EEMPTY);
    int64_t ms = elapsed_ms(t0);
    assert_true(ms >= 79 && ms < 3000);

    /* Fill: the GET_ALL consumer does not read. */
    uint32_t s = 0;
    while (send_ev(prod, 1, s, 1000, 0) == 0)
        s++;
    assert_true(s >= 6 && s <= 8);
    assert_int_equal(send_ev(prod, 1, s, 1000, 0), MB_EFULL);
    t0 = ut_now_ns();
    assert_int_equal(send_ev(prod, 1, s, 1000, 80), MB_EFULL);
    ms = elapsed_ms(t0);
    assert_true(ms >= 79 && ms < 3000);
    struct mb_buffer_stats st;
    assert_int_equal(mb_buffer_stats(prod, &st, NULL, 0, NULL), 0);
    assert_true(st.n_full_waits >= 2);
    assert_int_equal(st.n_events_in, s);
    assert_true(st.fill_bytes >= (uint64_t)s * 1024u);
    /* Reading one makes room for one. */
    assert_int_equal(recv_ev(cons, NULL, 0), 0);
    assert_int_equal(send_ev(prod, 1, s, 1000, 0), 0);
    for (uint32_t i = 1; i <= s; i++)
        assert_int_equal(recv_ev(cons, NULL, 0), i);
    check_ok(prod);
    mb_buffer_close(cons);
    mb_buffer_close(prod);
}

static void test_removed_handle(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *prod = open_buf(fx, 8192, 1);
    struct mb_buffer *cons = open_buf(fx, 0, 2);
    struct mb_buffer *cons2 = open_buf(fx, 0, 2);
    struct mb_buffer *admin = NULL;
    assert_int_equal(mb_buffer_open(fx->name, "TEST", MB_BUFFER_ADMIN, NULL, &admin), 0);
    assert_int_equal(mb_buffer_request_add(cons, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_ALL, NULL),
                     0);
    assert_int_equal(send_ev(prod, 1, 1, 10, 0), 0);
    /* Both handles of slot 2 go; slot 9 has none. */
    assert_int_equal(mb_buffer_remove_client(admin, 9), 0);
    assert_int_equal(mb_buffer_remove_client(admin, 2), 2);
    assert_int_equal(mb_buffer_remove_client(admin, 2), 0);
    assert_int_equal(mb_buffer_remove_client(NULL, 2), UT_EINVAL);
    struct mb_event_header h;
    size_t size = 0;
    assert_int_equal(mb_buffer_receive(cons, &h, NULL, &size, 0), MB_EREMOVED);
    assert_int_equal(mb_buffer_request_add(cons2, 1, 1, MB_GET_ALL, NULL), MB_EREMOVED);
    assert_int_equal(send_ev(cons2, 1, 2, 10, 0), MB_EREMOVED);
    /* The removed GET_ALL consumer no longer holds producers back. */
    for (uint32_t s = 2; s < 100; s++)
        assert_int_equal(send_ev(prod, 1, s, 1000, 0), 0);
    struct mb_buffer_stats st;
    assert_int_equal(mb_buffer_stats(admin, &st, NULL, 0, NULL), 0);
    assert_int_equal(st.n_clients, 1); /* prod; the admin handle has no entry */
    assert_int_equal(st.n_removed, 2);
    assert_int_equal(st.n_consumers, 0);
    check_ok(admin);
    mb_buffer_close(cons2);
    mb_buffer_close(cons);
    mb_buffer_close(admin);
    mb_buffer_close(prod);
}

static void test_get_some_exact_misses(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *prod = open_buf(fx, 16384, 1);
    struct mb_buffer *some = open_buf(fx, 0, 2);
    struct mb_buffer *odd = open_buf(fx, 0, 3);
    assert_int_equal(
        mb_buffer_request_add(some, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_SOME, NULL), 0);
    /* odd wants event id 1 only: misses count those only. */
    assert_int_equal(mb_buffer_request_add(odd, 1, MB_TRIGGER_ALL, MB_GET_SOME, NULL), 0);
    const uint32_t n = 1000;
    for (uint32_t s = 0; s < n; s++)
        assert_int_equal(send_ev(prod, (int16_t)(s % 2), s, 200 + s % 50, 0), 0);
    /* Whatever is left is read in order; received + missed = sent. */
    uint32_t got = 0, last = 0;
    struct mb_event_header h;
    uint8_t data[512];
    size_t size = sizeof data;
    while (mb_buffer_receive(some, &h, data, &size, 0) == 0) {
        assert_true(got == 0 || h.serial_number > last);
        assert_true(pattern_ok(data, size, h.event_id, h.serial_number));
        last = h.serial_number;
        got++;
        size = sizeof data;
    }
    assert_int_equal(last, n - 1);
    assert_true(got > 10 && got < n);
    assert_int_equal(got + mb_buffer_n_missed(some), n);
    uint32_t got_odd = 0;
    size = sizeof data;
    while (mb_buffer_receive(odd, &h, data, &size, 0) == 0) {
        assert_int_equal(h.event_id, 1);
        got_odd++;
        size = sizeof data;
    }
    assert_int_equal(got_odd + mb_buffer_n_missed(odd), n / 2);
    struct mb_buffer_stats st;
    struct mb_buffer_client_stats cs[4];
    size_t nc = 0;
    assert_int_equal(mb_buffer_stats(prod, &st, cs, 4, &nc), 0);
    assert_int_equal(nc, 3);
    assert_int_equal(st.n_missed, (n - got) + (n / 2 - got_odd));
    assert_int_equal(st.n_events_out, got + got_odd);
    assert_int_equal(st.n_producers, 1);
    assert_int_equal(st.n_consumers, 2);
    check_ok(prod);
    mb_buffer_close(odd);
    mb_buffer_close(some);
    mb_buffer_close(prod);
}

static void test_zero_copy(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *prod = open_buf(fx, 8192, 1);
    struct mb_buffer *cons = open_buf(fx, 0, 2);
    /* Even a GET_SOME consumer's held event is never overwritten. */
    assert_int_equal(
        mb_buffer_request_add(cons, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_SOME, NULL), 0);
    const struct mb_event_header *hp = NULL;
    const void *dp = NULL;
    assert_int_equal(mb_buffer_receive_begin(cons, &hp, &dp, 0), MB_EEMPTY);
    assert_int_equal(mb_buffer_receive_end(cons), UT_EINVAL);
    assert_int_equal(send_ev(prod, 7, 1, 1500, 0), 0);
    assert_int_equal(mb_buffer_receive_begin(cons, &hp, &dp, 0), 0);
    assert_int_equal(hp->event_id, 7);
    assert_int_equal(hp->serial_number, 1);
    assert_int_equal(hp->data_size, 1500);
    assert_true(pattern_ok(dp, 1500, 7, 1));
    assert_int_equal(mb_buffer_receive_begin(cons, &hp, &dp, 0), UT_EINVAL);
    struct mb_event_header h;
    size_t size = 0;
    assert_int_equal(mb_buffer_receive(cons, &h, NULL, &size, 0), UT_EINVAL);
    struct mb_buffer_client_stats cs[2];
    struct mb_buffer_stats st;
    size_t nc;
    assert_int_equal(mb_buffer_stats(prod, &st, cs, 2, &nc), 0);
    assert_true(cs[1].holding);
    /* Producers fill the rest and then wait for the held event. */
    uint32_t s = 2;
    while (send_ev(prod, 7, s, 1500, 0) == 0)
        s++;
    assert_true(s >= 4);
    assert_true(pattern_ok(dp, 1500, 7, 1));
    assert_int_equal(mb_buffer_receive_end(cons), 0);
    assert_int_equal(send_ev(prod, 7, s, 1500, 0), 0);
    assert_int_equal(mb_buffer_n_missed(cons), 0);
    /* Received in order: 2, 3, ... (nothing was skipped while held). */
    assert_int_equal(mb_buffer_receive_begin(cons, &hp, &dp, 0), 0);
    assert_int_equal(hp->serial_number, 2);
    assert_int_equal(mb_buffer_receive_end(cons), 0);
    check_ok(prod);
    /* Closing while holding releases the hold. */
    assert_int_equal(mb_buffer_receive_begin(cons, &hp, &dp, 0), 0);
    mb_buffer_close(cons);
    check_ok(prod);
    for (uint32_t i = 0; i < 20; i++)
        assert_int_equal(send_ev(prod, 7, 100 + i, 1500, 0), 0);
    mb_buffer_close(prod);
}

static void test_batch(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *prod = open_buf(fx, 1 << 20, 1);
    struct mb_buffer *cons = open_buf(fx, 0, 2);
    assert_int_equal(mb_buffer_request_add(cons, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_ALL, NULL),
                     0);
    enum { N = 1000 };
    static struct mb_event evs[N];
    static uint8_t data[N][64];
    for (uint32_t i = 0; i < N; i++) {
        uint32_t size = i % 64;
        pattern(data[i], size, 2, i);
        evs[i].hdr = mkhdr(2, 1, i, size);
        evs[i].data = data[i];
    }
    size_t sent = 99;
    assert_int_equal(mb_buffer_send_batch(prod, evs, N, &sent, 0), 0);
    assert_int_equal(sent, N);
    assert_int_equal(mb_buffer_send_batch(prod, evs, 0, &sent, 0), 0);
    assert_int_equal(sent, 0);
    for (uint32_t i = 0; i < N; i++)
        assert_int_equal(recv_ev(cons, NULL, 0), i);
    /* A bad event in the middle: the ones before it are sent. */
    evs[500].data = NULL;
    evs[500].hdr.data_size = 10;
    assert_int_equal(mb_buffer_send_batch(prod, evs, N, &sent, 0), UT_EINVAL);
    assert_int_equal(sent, 500);
    evs[500].data = data[500];
    evs[500].hdr.data_size = mb_buffer_max_event(prod) + 1;
    assert_int_equal(mb_buffer_send_batch(prod, evs + 400, 200, &sent, 0), MB_ETOOBIG);
    assert_int_equal(sent, 100);
    assert_int_equal(mb_buffer_send_batch(NULL, evs, 1, &sent, 0), UT_EINVAL);
    assert_int_equal(sent, 0);
    for (uint32_t i = 0; i < 600; i++)
        assert_int_equal(recv_ev(cons, NULL, 0), i < 500 ? i : i - 100);
    check_ok(prod);
    mb_buffer_close(cons);
    mb_buffer_close(prod);
}

static void test_wraparound(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *prod = open_buf(fx, 8192, 1);
    struct mb_buffer *cons = open_buf(fx, 0, 2);
    assert_int_equal(mb_buffer_request_add(cons, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_ALL, NULL),
                     0);
    uint32_t next_recv = 0;
    srand(7);
    for (uint32_t s = 0; s < 5000; s++) {
        uint32_t size = (uint32_t)rand() % 3000;
        int err;
        while ((err = send_ev(prod, 1, s, size, 0)) == MB_EFULL)
            assert_int_equal(recv_ev(cons, NULL, 0), next_recv++);
        assert_int_equal(err, 0);
        if (s % 97 == 0)
            check_ok(prod);
    }
    while (next_recv < 5000)
        assert_int_equal(recv_ev(cons, NULL, 0), next_recv++);
    check_ok(prod);
    mb_buffer_close(cons);
    mb_buffer_close(prod);
}

/* ---------------------------------------------------------------------- */
/* Wake-ups between threads                                                */
/* ---------------------------------------------------------------------- */

struct thread_arg {
    struct mb_buffer *buf;
    int result;
    uint32_t serial;
    int64_t waited_ms;
    atomic_int started;
};

static void *consumer_thread(void *p)
{
    struct thread_arg *a = p;
    struct mb_event_header h;
    uint8_t data[100];
    size_t size = sizeof data;
    atomic_store(&a->started, 1);
    int64_t t0 = ut_now_ns();
    a->result = mb_buffer_receive(a->buf, &h, data, &size, -1);
    a->waited_ms = elapsed_ms(t0);
    a->serial = h.serial_number;
    return NULL;
}

static void *producer_thread(void *p)
{
    struct thread_arg *a = p;
    uint8_t data[1000];
    pattern(data, sizeof data, 1, a->serial);
    struct mb_event_header h = mkhdr(1, 1, a->serial, sizeof data);
    atomic_store(&a->started, 1);
    int64_t t0 = ut_now_ns();
    a->result = mb_buffer_send(a->buf, &h, data, -1);
    a->waited_ms = elapsed_ms(t0);
    return NULL;
}

/* Waits until a waiter has announced itself on the futex word. */
static void wait_for_sleeper(const uint32_t *n_waiters)
{
    while (__atomic_load_n(n_waiters, __ATOMIC_SEQ_CST) == 0)
        sched_yield();
}

static void test_wakeups(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *prod = open_buf(fx, 8192, 1);
    struct mb_buffer *cons = open_buf(fx, 0, 2);
    assert_int_equal(mb_buffer_request_add(cons, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_ALL, NULL),
                     0);
    struct mb_buf_header *h = prod->hdr;

    /* A consumer asleep on an empty buffer is woken by a send. */
    struct thread_arg a = {.buf = cons};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, consumer_thread, &a), 0);
    wait_for_sleeper(&h->n_data_waiters);
    assert_int_equal(send_ev(prod, 1, 42, 10, 0), 0);
    pthread_join(t, NULL);
    assert_int_equal(a.result, 0);
    assert_int_equal(a.serial, 42);

    /* A producer asleep on a full buffer is woken by a receive. Filling the
     * buffer while nobody sleeps makes no wake-up call at all. */
    struct mb_buffer_stats st;
    assert_int_equal(mb_buffer_stats(prod, &st, NULL, 0, NULL), 0);
    uint64_t wakes_before_fill = st.n_wakes;
    uint32_t s = 0;
    while (send_ev(prod, 1, s, 1000, 0) == 0)
        s++;
    assert_int_equal(mb_buffer_stats(prod, &st, NULL, 0, NULL), 0);
    assert_int_equal(st.n_wakes, wakes_before_fill);
    struct thread_arg b = {.buf = prod, .serial = s};
    assert_int_equal(pthread_create(&t, NULL, producer_thread, &b), 0);
    wait_for_sleeper(&h->n_space_waiters);
    assert_int_equal(recv_ev(cons, NULL, 0), 0);
    pthread_join(t, NULL);
    assert_int_equal(b.result, 0);
    for (uint32_t i = 1; i <= s; i++)
        assert_int_equal(recv_ev(cons, NULL, 0), i);

    /* A producer asleep behind a GET_ALL consumer is released when that
     * consumer's slot is removed (what the watchdog does). */
    while (send_ev(prod, 1, s, 1000, 0) == 0)
        s++;
    struct thread_arg c = {.buf = prod, .serial = s};
    assert_int_equal(pthread_create(&t, NULL, producer_thread, &c), 0);
    wait_for_sleeper(&h->n_space_waiters);
    assert_int_equal(mb_buffer_remove_client(prod, 2), 1);
    pthread_join(t, NULL);
    assert_int_equal(c.result, 0);

    /* ut_interrupt ends a wait with UT_EINTR. */
    struct mb_buffer *cons2 = open_buf(fx, 0, 3);
    assert_int_equal(
        mb_buffer_request_add(cons2, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_ALL, NULL), 0);
    struct thread_arg d = {.buf = cons2};
    assert_int_equal(pthread_create(&t, NULL, consumer_thread, &d), 0);
    wait_for_sleeper(&h->n_data_waiters);
    ut_interrupt();
    pthread_join(t, NULL);
    ut_interrupt_clear();
    assert_int_equal(d.result, UT_EINTR);
    assert_true(d.waited_ms < 2000);

    check_ok(prod);
    mb_buffer_close(cons2);
    mb_buffer_close(cons);
    mb_buffer_close(prod);
}

/* ---------------------------------------------------------------------- */
/* Failure mode 3: no self-deadlock while the buffer lock is held          */
/* ---------------------------------------------------------------------- */

static void test_no_self_deadlock(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *buf = open_buf(fx, 8192, 1);
    struct mb_msgring *ring = NULL;
    assert_int_equal(mb_msgring_open(fx->name2, MB_MSGRING_CREATE, NULL, &ring), 0);
    /* Cleanup code holding the buffer lock reports something: the message
     * goes to the message ring (a higher rank, so at once), never into the
     * buffer; a send into the buffer itself is refused, not deadlocked. */
    assert_int_equal(UT_LOCK(&buf->lock), 0);
    assert_int_equal(mb_msg_post(ring, MB_MSG_ERROR, "cleanup", "removed a client"), 0);
    assert_int_equal(mb_msg_last_seq(ring), 1);
    assert_int_equal(send_ev(buf, 1, 1, 10, -1), UT_EBUSY);
    /* Statistics and the message ring stay usable under the buffer lock. */
    struct mb_buffer_stats st;
    assert_int_equal(mb_buffer_stats(buf, &st, NULL, 0, NULL), 0);
    ut_lock_release(&buf->lock);
    assert_int_equal(send_ev(buf, 1, 1, 10, 0), 0);
    mb_msgring_close(ring);
    mb_buffer_close(buf);
}

static void test_check_finds_damage(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *buf = open_buf(fx, 8192, 1);
    assert_int_equal(mb_buffer_request_add(buf, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_ALL, NULL),
                     0);
    for (uint32_t s = 0; s < 3; s++)
        assert_int_equal(send_ev(buf, 1, s, 100, 0), 0);
    check_ok(buf);
    char report[256];
    struct mb_buf_rec *r = mb__buf_rec(buf, 0);
    uint32_t save = r->size;
    r->size = 24;
    assert_int_equal(mb_buffer_check(buf, report, sizeof report), UT_ECORRUPT);
    assert_non_null(strstr(report, "record"));
    /* A consumer refuses the damaged record too. */
    struct mb_event_header h;
    uint8_t data[200];
    size_t size = sizeof data;
    assert_int_equal(mb_buffer_receive(buf, &h, data, &size, 0), UT_ECORRUPT);
    r->size = save;
    uint32_t tag = r->tag;
    r->tag ^= 1;
    assert_int_equal(mb_buffer_check(buf, report, sizeof report), UT_ECORRUPT);
    r->tag = tag;
    struct mb_event_header *ev = (struct mb_event_header *)(void *)((uint8_t *)r + 16);
    ev->data_size = 5000;
    assert_int_equal(mb_buffer_check(buf, report, sizeof report), UT_ECORRUPT);
    assert_non_null(strstr(report, "data_size"));
    ev->data_size = 100;
    uint64_t rp = buf->me->read_pos;
    buf->me->read_pos = 48;
    assert_int_equal(mb_buffer_check(buf, report, sizeof report), UT_ECORRUPT);
    buf->me->read_pos = rp;
    check_ok(buf);
    assert_int_equal(mb_buffer_check(NULL, report, sizeof report), UT_EINVAL);
    mb_buffer_close(buf);
}

/* ---------------------------------------------------------------------- */
/* Producers killed in the middle of a send                                */
/* ---------------------------------------------------------------------- */

#define VICTIM_SLOT 77

/* Forks a producer that opens its own handle (slot VICTIM_SLOT) and sends
 * event `serial` with crash point k armed (0: none). Returns its wait
 * status. */
static int run_victim(const struct fixture *fx, long k, uint32_t serial, uint32_t size)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct mb_buffer_params p = {0};
        p.slot = VICTIM_SLOT;
        struct mb_buffer *b = NULL;
        if (mb_buffer_open(fx->name, "TEST", 0, &p, &b) != 0)
            _exit(3);
        ut_crash_point_arm(k);
        int err = send_ev(b, 9, serial, size, 0);
        _exit(err == 0 ? 0 : 4);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

/* One pass over every crash point of a send into `prod`'s buffer, the
 * consumer reading everything after each. full: keep the ring full so
 * every send evicts. */
static void crash_pass(const struct fixture *fx, struct mb_buffer *prod, struct mb_buffer *cons,
                       struct mb_buffer *some, int *kills, uint32_t *serial)
{
    /* How many crash points does such a send pass? */
    ut_crash_point_arm(0);
    long before = ut_crash_point();
    assert_int_equal(send_ev(prod, 1, (*serial)++, 700, 0), 0);
    long k_max = ut_crash_point() - before - 1;
    assert_true(k_max >= 5);
    int16_t id;
    (void)recv_ev(cons, &id, 0);
    for (long k = 1; k <= k_max + 1; k++) {
        uint32_t victim_serial = (*serial)++;
        int status = run_victim(fx, k, victim_serial, 700);
        bool killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
        if (k <= k_max) {
            assert_true(killed);
            (*kills)++;
        } else {
            assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
        /* Events after the dead reservation are committed but not yet
         * readable when the victim died holding a reservation. */
        uint32_t after = (*serial)++;
        assert_int_equal(send_ev(prod, 1, after, 700, 2000), 0);
        /* What the watchdog does for the dead slot. */
        assert_true(mb_buffer_remove_client(prod, VICTIM_SLOT) >= 0);
        check_ok(prod);
        /* The victim's event is there iff it was committed; then ours. */
        uint32_t s = recv_ev(cons, &id, 1000);
        if (s == victim_serial) {
            assert_int_equal(id, 9);
            s = recv_ev(cons, &id, 1000);
        }
        assert_int_equal(s, after);
        assert_int_equal(id, 1);
        struct mb_event_header h;
        size_t size = 0;
        assert_int_equal(mb_buffer_receive(cons, &h, NULL, &size, 0), MB_EEMPTY);
        /* The sampling consumer reads what it can, in order. */
        uint8_t data[800];
        size = sizeof data;
        while (mb_buffer_receive(some, &h, data, &size, 0) == 0)
            size = sizeof data;
    }
    ut_crash_point_arm(0);
}

static void test_crash_mid_send(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *prod = open_buf(fx, 65536, 1);
    struct mb_buffer *cons = open_buf(fx, 0, 2);
    struct mb_buffer *some = open_buf(fx, 0, 3);
    assert_int_equal(mb_buffer_request_add(cons, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_ALL, NULL),
                     0);
    assert_int_equal(
        mb_buffer_request_add(some, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_SOME, NULL), 0);
    int kills = 0;
    uint32_t serial = 0;
    /* Pass 1: never full (no eviction); pass 2 after filling the ring, so
     * each send evicts old records (more crash points, under the lock). */
    crash_pass(fx, prod, cons, some, &kills, &serial);
    int kills_pass1 = kills;
    for (uint32_t i = 0; i < 100; i++) {
        assert_int_equal(send_ev(prod, 1, serial++, 700, 0), 0);
        int16_t id;
        (void)recv_ev(cons, &id, 0);
    }
    crash_pass(fx, prod, cons, some, &kills, &serial);
    assert_true(kills > kills_pass1 + 5);
    struct mb_buffer_stats st;
    assert_int_equal(mb_buffer_stats(prod, &st, NULL, 0, NULL), 0);
    assert_true(st.n_discarded >= 4);
    assert_true(st.n_recovered >= 2);
    check_ok(prod);
    print_message("crash test: %d producers killed, %llu reservations discarded, %llu lock "
                  "recoveries\n",
                  kills, (unsigned long long)st.n_discarded, (unsigned long long)st.n_recovered);
    mb_buffer_close(some);
    mb_buffer_close(cons);
    mb_buffer_close(prod);
}

/* Events committed after a dead producer's reservation wait behind it and
 * are all delivered once it is discarded. */
static void test_dead_reservation_order(void **state)
{
    struct fixture *fx = *state;
    struct mb_buffer *prod = open_buf(fx, 65536, 1);
    struct mb_buffer *cons = open_buf(fx, 0, 2);
    assert_int_equal(mb_buffer_request_add(cons, MB_EVENT_ID_ALL, MB_TRIGGER_ALL, MB_GET_ALL, NULL),
                     0);
    /* Crash point 2 of an evicting-free send: right after the reservation. */
    int status = run_victim(fx, 2, 1000, 500);
    assert_true(WIFSIGNALED(status));
    for (uint32_t s = 0; s < 5; s++)
        assert_int_equal(send_ev(prod, 1, s, 100, 0), 0);
    struct mb_event_header h;
    size_t size = 0;
    assert_int_equal(mb_buffer_receive(cons, &h, NULL, &size, 0), MB_EEMPTY);
    struct mb_buffer_stats st;
    assert_int_equal(mb_buffer_stats(prod, &st, NULL, 0, NULL), 0);
    assert_int_equal(st.n_clients, 3);
    check_ok(prod);
    assert_int_equal(mb_buffer_remove_client(prod, VICTIM_SLOT), 1);
    for (uint32_t s = 0; s < 5; s++)
        assert_int_equal(recv_ev(cons, NULL, 0), s);
    assert_int_equal(mb_buffer_receive(cons, &h, NULL, &size, 0), MB_EEMPTY);
    assert_int_equal(mb_buffer_stats(prod, &st, NULL, 0, NULL), 0);
    assert_int_equal(st.n_discarded, 1);
    assert_int_equal(st.n_clients, 2);
    check_ok(prod);
    mb_buffer_close(cons);
    mb_buffer_close(prod);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_names_and_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_receive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeouts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_removed_handle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_some_exact_misses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wraparound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wakeups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_self_deadlock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_finds_damage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_mid_send, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_reservation_order, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
