/*
 * tests/client/cfx.c - helpers for the client tests (see cfx.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/client/cfx.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Children not yet waited for, killed by cfx_teardown when a failed
 * assertion left them behind. */
#define MAX_LIVE 256
static pid_t live[MAX_LIVE];

static void live_add(pid_t pid)
{
    for (int i = 0; i < MAX_LIVE; i++) {
        if (live[i] == 0) {
            live[i] = pid;
            return;
        }
    }
}

static void live_del(pid_t pid)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] == pid)
            live[i] = 0;
}

int cfx_setup(void **state)
{
    struct cfx *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    const char *tmp = getenv("TMPDIR");
    (void)snprintf(fx->dir, sizeof fx->dir, "%s/aurum-client-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

int cfx_teardown(void **state)
{
    struct cfx *fx = *state;
    alarm(0); /* a test's own alarm, left armed by a failed assertion */
    ut_log_set_sink(NULL, NULL, UT_LOG_WARN); /* and the default log sink */
    for (int i = 0; i < MAX_LIVE; i++) {
        if (live[i] > 0) {
            kill(live[i], SIGKILL);
            int status;
            while (waitpid(live[i], &status, 0) < 0 && errno == EINTR)
                ;
            live[i] = 0;
        }
    }
    if (!fx)
        return 0;
    (void)au_experiment_remove_segments(fx->dir);
    /* The directory holds plain files only (odb.json, the lock file, the
     * message log and its WAL files, save temporaries). */
    DIR *d = opendir(fx->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char path[600];
            (void)snprintf(path, sizeof path, "%s/%s", fx->dir, e->d_name);
            if (unlink(path) < 0)
                (void)rmdir(path);
        }
        closedir(d);
    }
    (void)rmdir(fx->dir);
    free(fx);
    *state = NULL;
    return 0;
}

int64_t cfx_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cfx_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

struct au_connect_opts cfx_opts(const char *dir, const char *name, int period_ms, unsigned flags)
{
    struct au_connect_opts o;
    memset(&o, 0, sizeof o);
    o.name = name;
    o.experiment = dir;
    o.flags = AU_CONNECT_CREATE | flags;
    o.watchdog_period_ms = period_ms;
    return o;
}

struct au_client *cfx_connect(const char *dir, const char *name, int period_ms, unsigned flags)
{
    struct au_connect_opts o = cfx_opts(dir, name, period_ms, flags);
    struct au_client *c = NULL;
    int err = au_connect(&o, &c);
    if (err) {
        print_error("au_connect(%s, %s): %s\n", dir, name, ut_strerror(err));
        fail();
    }
    return c;
}

void cfx_child_start(struct cfx_child *ch, int alarm_s, cfx_child_fn fn, void *arg)
{
    int down[2], up[2];
    assert_int_equal(pipe(down), 0);
    assert_int_equal(pipe(up), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* cmocka's handlers would longjmp into the runner's copy. */
        (void)signal(SIGSEGV, SIG_DFL);
        (void)signal(SIGBUS, SIG_DFL);
        (void)signal(SIGILL, SIG_DFL);
        (void)signal(SIGFPE, SIG_DFL);
        (void)signal(SIGPIPE, SIG_DFL);
        close(down[1]);
        close(up[0]);
        alarm((unsigned)alarm_s);
        int rc = fn(down[0], up[1], arg);
        _exit(rc);
    }
    close(down[0]);
    close(up[1]);
    live_add(pid);
    ch->pid = pid;
    ch->to_child = down[1];
    ch->from_child = up[0];
}

static void close_pipes(struct cfx_child *ch)
{
    if (ch->to_child >= 0)
        close(ch->to_child);
    if (ch->from_child >= 0)
        close(ch->from_child);
    ch->to_child = ch->from_child = -1;
}

int cfx_child_wait(struct cfx_child *ch, int timeout_ms)
{
    int64_t deadline = cfx_now_ms() + timeout_ms;
    int status = -1;
    for (;;) {
        pid_t r = waitpid(ch->pid, &status, WNOHANG);
        if (r == ch->pid)
            break;
        if (r < 0 && errno != EINTR) {
            status = -1;
            break;
        }
        if (cfx_now_ms() > deadline) {
            kill(ch->pid, SIGKILL);
            while (waitpid(ch->pid, &status, 0) < 0 && errno == EINTR)
                ;
            status = -1;
            break;
        }
        /* Bounded polling for the exit, not synchronisation by time. */
        cfx_sleep_ms(1);
    }
    close_pipes(ch);
    live_del(ch->pid);
    ch->pid = -1;
    return status;
}

void cfx_child_kill(struct cfx_child *ch)
{
    if (ch->pid > 0) {
        kill(ch->pid, SIGKILL);
        int status;
        while (waitpid(ch->pid, &status, 0) < 0 && errno == EINTR)
            ;
        live_del(ch->pid);
    }
    ch->pid = -1;
    close_pipes(ch);
}

bool cfx_exited_ok(int status)
{
    return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

bool cfx_write(int fd, const void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, (const char *)buf + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        done += (size_t)w;
    }
    return true;
}

bool cfx_read(int fd, void *buf, size_t n, int timeout_ms)
{
    int64_t deadline = cfx_now_ms() + timeout_ms;
    size_t got = 0;
    while (got < n) {
        int64_t left = deadline - cfx_now_ms();
        if (left < 0)
            return false;
        struct pollfd pfd = {fd, POLLIN, 0};
        int r = poll(&pfd, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        ssize_t k = read(fd, (char *)buf + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        got += (size_t)k;
    }
    return true;
}

bool cfx_entry_exists(struct au_client *c, uint32_t slot)
{
    char path[64];
    (void)snprintf(path, sizeof path, "/System/Clients/%u", slot);
    struct odb_hkey k;
    return odb_find(au_odb(c), ODB_ROOT, path, &k) == 0;
}

int cfx_wait_entry_gone(struct au_client *c, uint32_t slot, int timeout_ms)
{
    int64_t start = cfx_now_ms();
    for (;;) {
        if (!cfx_entry_exists(c, slot))
            return (int)(cfx_now_ms() - start);
        if (cfx_now_ms() - start > timeout_ms)
            return -1;
        cfx_sleep_ms(2);
    }
}

bool cfx_wait_scans(struct au_client *c, int n, int timeout_ms)
{
    int64_t deadline = cfx_now_ms() + timeout_ms;
    int64_t last = -1;
    int seen = -1; /* the first read is the starting point */
    while (seen < n) {
        int64_t v = 0;
        size_t sz = sizeof v;
        if (odb_get(au_odb(c), ODB_ROOT, "/System/Watchdog/Last scan", ODB_TYPE_INT64, &v, &sz) !=
            0)
            v = 0;
        if (v != last) {
            last = v;
            seen++;
            continue;
        }
        if (cfx_now_ms() > deadline)
            return false;
        cfx_sleep_ms(2);
    }
    return true;
}

int cfx_count_msgs(struct au_client *c, uint64_t after_seq, const char *n1, const char *n2,
                   const char *n3)
{
    enum { BATCH = 32 };
    struct mb_msg *buf = calloc(BATCH, sizeof *buf);
    assert_non_null(buf);
    int count = 0;
    uint64_t after = after_seq;
    for (;;) {
        size_t n = 0;
        int err = mb_msg_read(au_msgring(c), after, buf, BATCH, &n, NULL);
        assert_int_equal(err, 0);
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++) {
            const char *t = buf[i].text;
            if ((!n1 || strstr(t, n1)) && (!n2 || strstr(t, n2)) && (!n3 || strstr(t, n3)))
                count++;
        }
        after = buf[n - 1].seq;
    }
    free(buf);
    return count;
}

int cfx_wait_msgs(struct au_client *c, uint64_t after_seq, int want, int timeout_ms, const char *n1,
                  const char *n2, const char *n3)
{
    int64_t deadline = cfx_now_ms() + timeout_ms;
    for (;;) {
        int n = cfx_count_msgs(c, after_seq, n1, n2, n3);
        if (n >= want || cfx_now_ms() > deadline)
            return n;
        cfx_sleep_ms(5);
    }
}
