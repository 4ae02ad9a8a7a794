/*
 * client/aurum.h - the client library front-ends link (libaurum): connect
 * to an experiment, appear under /System/Clients, keep other clients honest
 * with the watchdog, watch ODB keys, post and follow system messages.
 *
 * Layering: uses odb/odb.h and msgbus/mb.h (and, for remote experiments,
 * the RPC client). A connection hands out the experiment's ODB and message
 * ring as ordinary odb and mb handles, so the same calls work whether the
 * experiment is local (shared memory) or remote (through mserver).
 *
 * Threads: a connection may be used by several threads at once. Watch
 * callbacks run only in the thread that calls au_dispatch (or in the
 * dispatcher thread started by au_dispatcher_start), never in a library
 * thread.
 */
#ifndef AURUM_CLIENT_AURUM_H
#define AURUM_CLIENT_AURUM_H

#include "base/ut.h"
#include "msgbus/mb.h"
#include "odb/odb.h"

struct au_client;

enum au_connect_flags {
    AU_CONNECT_REFUSE_DUPLICATE = 1u << 0,   /* a taken name fails with AU_EDUPNAME */
    AU_CONNECT_NO_WATCHDOG_THREAD = 1u << 1, /* the caller runs au_watchdog_run itself */
    AU_CONNECT_CREATE = 1u << 2,             /* create the experiment directory if missing */
};

struct au_connect_opts {
    const char *name;         /* client name, required (a taken one gets a number appended) */
    const char *experiment;   /* directory; NULL: $AURUM_EXP, else the default */
    unsigned flags;           /* enum au_connect_flags */
    int watchdog_period_ms;   /* default 1000 */
    int unresponsive_ms;      /* a live client silent this long is reported; default 10000 */
    bool remove_unresponsive; /* and removed (it is told) */
    int lock_timeout_ms;      /* ODB and message lock wait bound; default 10000 */
    uint32_t max_clients;     /* only when the experiment is created; default 1024 */
    size_t odb_size_bytes;    /* only when the experiment is created; default 8 MiB */
};

/* The experiment directory used when none is given: $AURUM_EXP, else
 * "$HOME/aurum-exp" (or "./aurum-exp" without HOME). Static storage. */
const char *au_default_experiment(void);

/* Connects: opens (creating if needed) the experiment's ODB and message
 * ring, takes a client slot whose liveness token is an OFD lock on one byte
 * of <experiment>/.aurum-clients.lock, registers /System/Clients/<slot>,
 * posts nothing, and starts the watchdog thread. The ODB is initialised from
 * <experiment>/odb.json when the segment is created and that file exists.
 * Returns 0, AU_EFULL (every slot taken), AU_EDUPNAME, AU_ENOEXP, UT_EINVAL,
 * or an error from the ODB or the message ring. *out is freed by
 * au_disconnect. */
int au_connect(const struct au_connect_opts *opts, struct au_client **out);

/* Flushes deferred messages, removes the client's entry and watches,
 * stops the watchdog, saves the ODB to <experiment>/odb.json when this was
 * the last client, and frees. Accepts NULL. */
void au_disconnect(struct au_client *c);

/* The experiment's ODB and message ring (borrowed; valid until
 * au_disconnect). */
struct odb *au_odb(struct au_client *c);
struct mb_msgring *au_msgring(struct au_client *c);
const char *au_client_name(const struct au_client *c);
uint32_t au_client_slot(const struct au_client *c);
const char *au_experiment_dir(const struct au_client *c);
/* True once the watchdog of another client removed this one (it was
 * unresponsive and removal was enabled). The connection still works for
 * reading; au_reconnect-style recovery is up to the program. */
bool au_client_removed(const struct au_client *c);

/* Posts a system message from this client (deferred automatically when the
 * calling thread holds the ODB lock). Returns 0 or an error. */
int au_msg(struct au_client *c, enum mb_msg_type type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One watchdog pass: heartbeat, and (if this client's turn) a scan that
 * removes dead clients and reports unresponsive ones, then persists new
 * messages to the SQLite log. Called by the watchdog thread every period,
 * or by the program with AU_CONNECT_NO_WATCHDOG_THREAD. Returns the number
 * of clients removed, or a negative error. */
int au_watchdog_run(struct au_client *c);

/* Watches. The callback gets the key that changed (a handle, possibly stale
 * by the time it runs) and runs in the thread calling au_dispatch. */
typedef void (*au_watch_cb)(struct au_client *c, struct odb_hkey changed, void *arg);
int au_watch_add(struct au_client *c, const char *path, au_watch_cb cb, void *arg,
                 uint32_t *id_out);
int au_watch_remove(struct au_client *c, uint32_t id);
/* A file descriptor that becomes readable when changes are pending, for
 * poll/epoll loops; call au_dispatch(c, 0) when it is. Owned by the
 * connection. Returns the fd or a negative error. */
int au_watch_fd(struct au_client *c);
/* Runs the callbacks of pending changes in the calling thread, waiting up
 * to timeout_ms (0: don't wait, < 0: forever) for the first. Returns the
 * number of callbacks run, UT_EINTR (ut_interrupt, e.g. SIGINT) or another
 * negative error. */
int au_dispatch(struct au_client *c, int timeout_ms);
/* Starts a thread owned by the connection that runs au_dispatch in a loop:
 * callbacks then run in that thread. Stopped by au_disconnect. */
int au_dispatcher_start(struct au_client *c);

/* Installs SIGINT/SIGTERM handlers that interrupt every blocking wait of
 * the process (they return UT_EINTR) and make au_should_stop() true, so
 * the program can disconnect cleanly. */
void au_install_signal_handlers(void);
bool au_should_stop(void);

/* Removes the shared-memory segments of the experiment in `expdir` (the
 * files in the directory stay). Processes still attached keep their
 * mappings. For tests and for a clean restart. Returns 0 or -errno. */
int au_experiment_remove_segments(const char *expdir);

/* Event buffers of the experiment (msgbus/mb.h "Event buffers").
 *
 * au_buffer_open opens the buffer `name` (mb_buffer_name_check rules),
 * creating it with size_bytes of ring (0: MB_BUFFER_DEFAULT_SIZE) when it
 * does not exist; the handle carries this client's slot, so when this
 * process dies the watchdog removes its read positions and reservations
 * from the buffer (mb_buffer_remove_client) within one watchdog period.
 * Registers the buffer under /System/Buffers/<name> and in this client's
 * "Buffers" entry. *out is owned by the connection: release it with
 * au_buffer_close, or au_disconnect closes it. Must be called with no lock
 * held. Returns 0, an mb_buffer_open error, an ODB error or UT_ENOMEM.
 * Thread-safe. */
int au_buffer_open(struct au_client *c, const char *name, uint64_t size_bytes,
                   struct mb_buffer **out);
/* Closes a handle of au_buffer_open (NULL: nothing). */
void au_buffer_close(struct au_client *c, struct mb_buffer *buf);
/* Writes the statistics of the buffers this connection has open into
 * /System/Buffers/<name> (Size, Fill, Clients, Producers, Consumers,
 * Events/Bytes in/out, Missed, Discarded, Full waits, Removed clients,
 * Updated, and per handle the arrays Client slot/role/received/missed/
 * sent/fill). Each watchdog pass calls it. Returns 0 or the first error. */
int au_buffer_publish(struct au_client *c);

/* A snapshot of /System/Clients, for `scl` and the web page. */
struct au_client_info {
    uint32_t slot;
    char name[32];
    char host[64];
    int32_t pid;
    int64_t connect_ns, last_activity_ns;
    bool alive; /* the client's liveness token is held */
};
int au_client_list(struct au_client *c, struct au_client_info **out, size_t *n_out);

#endif
