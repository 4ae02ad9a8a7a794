/*
 * tests/odb/fixture.c - shared test helpers (see fixture.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "odb/odb_int.h"
#include "tests/odb/fixture.h"

#include <errno.h>
#include <sched.h>
#include <sys/syscall.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static atomic_uint name_counter;

#define MAX_NAMES 1024
static pthread_mutex_t names_mu = PTHREAD_MUTEX_INITIALIZER;
static char names[MAX_NAMES][64];
static int n_names;
static pid_t names_pid;

void tfx_shm_name(char *buf, size_t size, const char *topic)
{
    unsigned n = atomic_fetch_add(&name_counter, 1) + 1;
    snprintf(buf, size, "/aurum-test-%s-%d-%u", topic, (int)getpid(), n);
    pthread_mutex_lock(&names_mu);
    if (names_pid != getpid()) { /* a forked child starts its own list */
        names_pid = getpid();
        n_names = 0;
    }
    if (n_names < MAX_NAMES && strlen(buf) < sizeof names[0])
        memcpy(names[n_names++], buf, strlen(buf) + 1);
    pthread_mutex_unlock(&names_mu);
}

void tfx_unlink_all(void)
{
    pthread_mutex_lock(&names_mu);
    if (names_pid == getpid()) {
        for (int i = 0; i < n_names; i++)
            (void)ut_shm_unlink(names[i]);
        n_names = 0;
    }
    pthread_mutex_unlock(&names_mu);
}

struct odb *tfx_odb_create_params(const char *topic, const struct odb_params *params, char *name,
                                  size_t name_size)
{
    tfx_shm_name(name, name_size, topic);
    (void)odb_destroy(name); /* a leftover of a crashed earlier run with our pid */
    struct odb *odb = NULL;
    int err = odb_open(name, ODB_OPEN_CREATE, params, &odb);
    if (err) {
        print_error("odb_open(%s): %s (%s)\n", name, ut_strerror(err), odb_errmsg());
        fail();
    }
    return odb;
}

struct odb *tfx_odb_create(const char *topic, size_t size, uint32_t max_keys, char *name,
                           size_t name_size)
{
    struct odb_params p = {0};
    p.size_bytes = size;
    p.max_keys = max_keys;
    p.max_watches = TFX_MAX_WATCHES;
    p.max_subscribers = TFX_MAX_SUBSCRIBERS;
    return tfx_odb_create_params(topic, &p, name, name_size);
}

void tfx_odb_destroy(struct odb *odb, const char *name)
{
    while (odb && ut_lock_held(&odb->lock) && odb->hdr->txn_depth > 0)
        odb_txn_abort(odb);
    odb_close(odb);
    if (name && name[0])
        (void)odb_destroy(name);
}

void tfx_assert_odb_ok_at(struct odb *odb, const char *file, int line)
{
    char report[1024];
    int err = odb_check(odb, report, sizeof report);
    if (err) {
        print_error("odb_check: %s: %s\n", ut_strerror(err), report);
        _fail(file, line);
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int tfx_wait_child(pid_t pid, int timeout_ms)
{
    int status;
    /* A pidfd becomes readable when the child exits: no polling. */
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r;
        do {
            r = poll(&p, 1, timeout_ms);
        } while (r < 0 && errno == EINTR);
        close(fd);
        if (r == 0) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            return -1;
        }
    }
    /* Done (or no pidfd support: the child's alarm bounds the wait). */
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return status;
}

bool tfx_wait_lock_sleeper(struct ut_shlock *sh, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        /* glibc sets FUTEX_WAITERS in the mutex word before it sleeps. */
        unsigned v = (unsigned)__atomic_load_n(&sh->mutex.__data.__lock, __ATOMIC_ACQUIRE);
        if (v & 0x80000000u)
            return true;
        sched_yield();
    }
    return false;
}

static bool wait_readable(int fd, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left < 0)
            return false;
        struct pollfd pfd = {fd, POLLIN, 0};
        int r = poll(&pfd, 1, (int)left);
        if (r > 0)
            return true;
        if (r < 0 && errno != EINTR)
            return false;
    }
}

ssize_t tfx_read_full(int fd, void *buf, size_t n, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    size_t got = 0;
    while (got < n) {
        if (!wait_readable(fd, deadline))
            break;
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

size_t tfx_read_all(int fd, char *buf, size_t size, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    size_t got = 0;
    while (got + 1 < size) {
        if (!wait_readable(fd, deadline))
            break;
        ssize_t r = read(fd, buf + got, size - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    return got;
}

bool tfx_signal_fd(int fd)
{
    char c = 'x';
    ssize_t r;
    do {
        r = write(fd, &c, 1);
    } while (r < 0 && errno == EINTR);
    return r == 1;
}

bool tfx_wait_fd(int fd, int timeout_ms)
{
    char c;
    return tfx_read_full(fd, &c, 1, timeout_ms) == 1;
}
