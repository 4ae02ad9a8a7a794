/*
 * client/watch.c - watch callbacks, delivered only in threads the client
 * chose.
 *
 * The ODB queues each change for the watching client's slot and bumps a
 * futex word (odb/watch.c). au_dispatch drains that queue and runs the
 * callbacks in the calling thread. For poll/epoll users, au_watch_fd starts
 * a notifier thread that only waits on the futex and writes to an eventfd;
 * it never runs a callback. au_dispatcher_start starts a thread whose only
 * job is to call au_dispatch, for programs that want callbacks on a thread
 * of their own. No library thread ever calls into the program otherwise.
 */
#include "client/client_int.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define DRAIN_BATCH 64

int au_watch_add(struct au_client *c, const char *path, au_watch_cb cb, void *arg, uint32_t *id_out)
{
    if (!cb)
        return UT_EINVAL;
    struct odb_hkey key;
    int err = odb_find(c->odb, ODB_ROOT, path, &key);
    if (err)
        return err;
    pthread_mutex_lock(&c->watch_mutex);
    if (c->n_watches == c->cap_watches) {
        size_t cap = c->cap_watches ? c->cap_watches * 2 : 8;
        struct au_watch_entry *w = ut_realloc(c->watches, cap * sizeof *w);
        if (!w) {
            pthread_mutex_unlock(&c->watch_mutex);
            return UT_ENOMEM;
        }
        c->watches = w;
        c->cap_watches = cap;
    }
    uint32_t id;
    /* Registered under watch_mutex so a dispatch cannot see the id before
     * its callback is known. Taking the ODB lock inside this plain mutex is
     * safe: nothing takes watch_mutex while holding the ODB lock. */
    err = odb_watch_add(c->odb, key, c->slot, &id);
    if (!err) {
        c->watches[c->n_watches++] = (struct au_watch_entry){id, key, cb, arg};
        *id_out = id;
    }
    pthread_mutex_unlock(&c->watch_mutex);
    return err;
}

int au_watch_remove(struct au_client *c, uint32_t id)
{
    pthread_mutex_lock(&c->watch_mutex);
    size_t i = 0;
    while (i < c->n_watches && c->watches[i].id != id)
        i++;
    int err = ODB_ENOKEY;
    if (i < c->n_watches) {
        c->watches[i] = c->watches[--c->n_watches];
        err = odb_watch_remove(c->odb, id);
    }
    pthread_mutex_unlock(&c->watch_mutex);
    return err;
}

/* Runs the callbacks for a batch of changes. Returns how many ran. */
static int deliver(struct au_client *c, const struct odb_change *ch, size_t n)
{
    int ran = 0;
    for (size_t i = 0; i < n; i++) {
        /* Copy the callbacks out so none runs under watch_mutex: a callback
         * may add or remove watches. An overflow goes to every watch, so
         * it gets room for all of them (the fixed array only when the
         * allocation fails). */
        struct au_watch_entry local[16], *todo = local;
        size_t cap = 16, n_todo = 0;
        pthread_mutex_lock(&c->watch_mutex);
        if (ch[i].watch_id == ODB_WATCH_OVERFLOW && c->n_watches > cap) {
            struct au_watch_entry *all = ut_malloc(c->n_watches * sizeof *all);
            if (all) {
                todo = all;
                cap = c->n_watches;
            }
        }
        for (size_t w = 0; w < c->n_watches && n_todo < cap; w++) {
            if (ch[i].watch_id == ODB_WATCH_OVERFLOW) {
                todo[n_todo] = c->watches[w];
                n_todo++;
            } else if (c->watches[w].id == ch[i].watch_id) {
                todo[n_todo] = c->watches[w];
                todo[n_todo].key = ch[i].key;
                n_todo++;
            }
        }
        pthread_mutex_unlock(&c->watch_mutex);
        for (size_t t = 0; t < n_todo; t++) {
            todo[t].cb(c, todo[t].key, todo[t].arg);
            ran++;
        }
        if (todo != local)
            ut_free(todo);
    }
    return ran;
}

/* Resets the eventfd behind au_watch_fd. Called before the queue is read:
 * a change already queued is handled by this dispatch, and one arriving
 * later makes the fd readable again (the notifier writes for every change
 * it sees). Without the reset the fd stays readable forever once written,
 * and a poll loop spins. */
static void drain_event_fd(struct au_client *c)
{
    pthread_mutex_lock(&c->watch_mutex);
    if (c->event_fd >= 0) {
        uint64_t count;
        ssize_t r = read(c->event_fd, &count, sizeof count); /* EAGAIN when unset */
        (void)r;
    }
    pthread_mutex_unlock(&c->watch_mutex);
}

int au_dispatch(struct au_client *c, int timeout_ms)
{
    struct odb_change ch[DRAIN_BATCH];
    size_t n = 0;
    /* A child's copy after fork() would take the parent's changes out of
     * the parent's queue (same slot). */
    if (c->forked_copy)
        return UT_EINVAL;
    drain_event_fd(c);
    uint32_t seen = odb_watch_seq(c->odb, c->slot);
    int err = odb_watch_read(c->odb, c->slot, ch, DRAIN_BATCH, &n);
    if (err)
        return err;
    if (n == 0 && timeout_ms != 0) {
        err = odb_watch_wait(c->odb, c->slot, seen, timeout_ms);
        if (err == UT_ETIMEOUT)
            return 0;
        if (err)
            return err;
        err = odb_watch_read(c->odb, c->slot, ch, DRAIN_BATCH, &n);
        if (err)
            return err;
    }
    int ran = deliver(c, ch, n);
    /* Drain the rest without waiting. */
    while (n == DRAIN_BATCH) {
        err = odb_watch_read(c->odb, c->slot, ch, DRAIN_BATCH, &n);
        if (err)
            return err;
        ran += deliver(c, ch, n);
    }
    return ran;
}

static bool watch_stopping(struct au_client *c)
{
    return __atomic_load_n(&c->watch_stop, __ATOMIC_ACQUIRE);
}

static void *notifier_main(void *arg)
{
    struct au_client *c = arg;
    uint32_t seen = odb_watch_seq(c->odb, c->slot);
    uint64_t one = 1;
    /* Changes may already be pending: let the program look once. */
    if (write(c->event_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        return NULL;
    while (!watch_stopping(c)) {
        int err = odb_watch_wait(c->odb, c->slot, seen, 200);
        if (err == UT_EINTR)
            break;
        uint32_t now = odb_watch_seq(c->odb, c->slot);
        if (now != seen) {
            seen = now;
            if (write(c->event_fd, &one, sizeof one) < 0 && errno != EAGAIN)
                break;
        }
    }
    return NULL;
}

int au_watch_fd(struct au_client *c)
{
    pthread_mutex_lock(&c->watch_mutex);
    int fd = c->event_fd;
    if (fd < 0) {
        fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd < 0) {
            fd = -errno;
        } else {
            c->event_fd = fd;
            int rc = pthread_create(&c->notifier, NULL, notifier_main, c);
            if (rc) {
                close(fd);
                c->event_fd = -1;
                fd = -rc;
            } else {
                c->notifier_running = true;
            }
        }
    }
    pthread_mutex_unlock(&c->watch_mutex);
    return fd;
}

static void *dispatcher_main(void *arg)
{
    struct au_client *c = arg;
    while (!watch_stopping(c)) {
        int r = au_dispatch(c, 200);
        if (r == UT_EINTR)
            break;
    }
    return NULL;
}

int au_dispatcher_start(struct au_client *c)
{
    pthread_mutex_lock(&c->watch_mutex);
    int err = 0;
    if (!c->dispatcher_running) {
        int rc = pthread_create(&c->dispatcher, NULL, dispatcher_main, c);
        if (rc)
            err = -rc;
        else
            c->dispatcher_running = true;
    }
    pthread_mutex_unlock(&c->watch_mutex);
    return err;
}

void au__watch_shutdown(struct au_client *c)
{
    __atomic_store_n(&c->watch_stop, true, __ATOMIC_RELEASE);
    pthread_mutex_lock(&c->watch_mutex);
    bool notifier = c->notifier_running, dispatcher = c->dispatcher_running;
    c->notifier_running = c->dispatcher_running = false;
    pthread_mutex_unlock(&c->watch_mutex);
    if (c->forked_copy)
        notifier = dispatcher = false; /* the threads do not exist in a child */
    if (notifier)
        pthread_join(c->notifier, NULL);
    if (dispatcher)
        pthread_join(c->dispatcher, NULL);
    if (c->event_fd >= 0)
        close(c->event_fd);
    c->event_fd = -1;
}
