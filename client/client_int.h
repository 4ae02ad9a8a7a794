/*
 * client/client_int.h - the connection object and the internal functions
 * shared by the sources in client/. Only client/ and tests/client/ include it.
 *
 * Threads around one connection: the caller's threads (any number), the
 * watchdog thread, and optionally a notifier thread (behind au_watch_fd)
 * and a dispatcher thread (au_dispatcher_start). Fields are set at connect
 * and read-only afterwards unless a comment names their lock.
 */
#ifndef AURUM_CLIENT_CLIENT_INT_H
#define AURUM_CLIENT_CLIENT_INT_H

#include "client/aurum.h"

#include <limits.h>
#include <pthread.h>

#include "base/banned.h"

#define AU_DEFAULT_MAX_CLIENTS 1024

struct au_watch_entry {
    uint32_t id;         /* odb watch id */
    struct odb_hkey key; /* the watched key */
    au_watch_cb cb;
    void *arg;
};

struct au_client {
    char name[32];         /* unique client name */
    char expdir[PATH_MAX]; /* real path of the experiment */
    uint32_t slot;         /* client slot = watch subscriber */
    uint32_t max_clients;
    int lock_fd;      /* holds the OFD lock on byte `slot`; -1 after fork */
    bool forked_copy; /* this is a child's copy: touch nothing shared */
    struct odb *odb;
    struct mb_msgring *ring;
    struct mb_msglog *log;       /* opened lazily by the watchdog; under wd_mutex */
    struct odb_hkey clients_dir; /* /System/Clients */
    struct odb_hkey entry;       /* /System/Clients/<slot> */
    bool removed;                /* atomic: another watchdog removed us */

    /* watchdog */
    int period_ms, unresponsive_ms;
    bool remove_unresponsive;
    pthread_t wd_thread;
    bool wd_running; /* under wd_mutex */
    bool wd_stop;    /* under wd_mutex */
    pthread_mutex_t wd_mutex;
    pthread_cond_t wd_cond;

    /* watches */
    pthread_mutex_t watch_mutex; /* guards the fields below */
    struct au_watch_entry *watches;
    size_t n_watches, cap_watches;
    int event_fd; /* -1 until au_watch_fd */
    pthread_t notifier, dispatcher;
    bool notifier_running, dispatcher_running;
    bool watch_stop; /* atomic */

    struct au_client *next_in_process; /* under the process list mutex */

    /* event buffers opened through au_buffer_open (client/buffer.c), under
     * that file's process-wide list mutex */
    struct au__buffer_ref *bufs;
    size_t n_bufs, cap_bufs;
};

int au__fail(struct au_client *c, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool au__slot_alive(const struct au_client *c, uint32_t slot);
/* Removes the entry, watches and queued changes of client slot `slot`,
 * whose token is not held (or regardless, with even_if_alive), then posts
 * one message naming it and `why`.
 * Returns 1 when something was removed, 0 when there was nothing, or a
 * negative error. Takes the ODB lock itself; call with no lock held. */
int au__cleanup_slot(struct au_client *c, uint32_t slot, const char *why, bool even_if_alive);
int au__watchdog_start(struct au_client *c);
void au__watchdog_stop(struct au_client *c);
void au__persist_messages(struct au_client *c);
void au__watch_shutdown(struct au_client *c);
/* Event buffers (client/buffer.c). au__buffers_remove_slot removes client
 * slot `slot`'s entries from every buffer listed under /System/Buffers
 * (mb_buffer_remove_client); call it with no lock held (it takes buffer
 * locks, rank 100, and the ODB lock only for one listing). Returns the
 * number of entries removed or a negative error. au__buffers_close_all
 * closes the connection's buffers (au_disconnect). au__buffers_remove_segments
 * unlinks the experiment's buffer segments. */
int au__buffers_remove_slot(struct au_client *c, uint32_t slot);
void au__buffers_close_all(struct au_client *c);
int au__buffers_remove_segments(const char *expdir);

#endif
