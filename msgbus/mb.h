/*
 * msgbus/mb.h - the message bus: event buffers and the system-message ring,
 * plus the SQLite log that keeps system messages after they leave the ring.
 *
 * Layering: uses base/ut.h only. odb and msgbus do not know about each
 * other; the client layer (connect/disconnect, the watchdog) joins them.
 *
 * Sections:
 *   - System messages: a shared-memory ring per experiment, its own robust
 *     lock (rank UT_RANK_MSG), readers that follow by sequence number, a
 *     futex wait, and posting that is safe while the ODB lock is held.
 *   - Message log: persistence of system messages into SQLite.
 *   - Event buffers: named shared-memory rings of MIDAS-layout events, many
 *     producers and many consumers, get-all and get-some requests, batched
 *     send, zero-copy receive, futex waits, recovery from dead clients.
 *
 * Conventions: functions that can fail return 0 or a negative code from
 * base/ut.h (UT_E*, MB_E*, -errno); out-parameters are left unchanged on
 * error. Every close/free function accepts NULL.
 */
#ifndef AURUM_MSGBUS_MB_H
#define AURUM_MSGBUS_MB_H

#include "base/ut.h"

/* ====================================================================== */
/* System messages                                                        */
/* ====================================================================== */

/*
 * Message types, as MIDAS's MT_ERROR, MT_INFO, ...: MB_MSG_MASK(type) has
 * the same bit as the MIDAS MT_* constant of that type.
 */
enum mb_msg_type {
    MB_MSG_ERROR = 0, /* an error the shift crew must see */
    MB_MSG_INFO,      /* informational */
    MB_MSG_DEBUG,     /* debugging output */
    MB_MSG_USER,      /* typed by a person (odbedit msg, web page) */
    MB_MSG_LOG,       /* for the log only */
    MB_MSG_TALK,      /* to be spoken aloud */
    MB_MSG_TYPE_MAX
};
#define MB_MSG_MASK(type) (1u << (unsigned)(type))
#define MB_MSG_MASK_ALL   ((1u << MB_MSG_TYPE_MAX) - 1u)

#define MB_MSG_SOURCE_MAX        31   /* bytes of a source client name, without the NUL */
#define MB_MSG_TEXT_MAX          1023 /* bytes of text, without the NUL */
#define MB_MSG_DEFER_MAX         256  /* messages one thread may hold back (see mb_msg_post) */
#define MB_MSGRING_DEFAULT_SLOTS 2048

/* The type's name: "ERROR", "INFO", "DEBUG", "USER", "LOG", "TALK", or
 * "INVALID" for anything else. Static storage. */
const char *mb_msg_type_name(enum mb_msg_type type);
/* The reverse, case-insensitive. Returns 0 (and sets *out) or UT_EINVAL. */
int mb_msg_type_from_name(const char *name, enum mb_msg_type *out);

/* One message, as copied out of the ring or the log. A plain value. */
struct mb_msg {
    uint64_t seq;    /* 1, 2, 3, ...: gapless per ring */
    int64_t time_ns; /* CLOCK_REALTIME of the post, ns */
    enum mb_msg_type type;
    uint32_t pid;                       /* process that posted it */
    uint32_t text_len;                  /* bytes in text, without the NUL */
    char source[MB_MSG_SOURCE_MAX + 1]; /* client name, NUL-terminated */
    char text[MB_MSG_TEXT_MAX + 1];     /* NUL-terminated; a cut text ends in "..." */
};

/* A handle to an experiment's message ring. Opaque; thread-safe (any
 * number of threads may post, read and wait on one handle at once). */
struct mb_msgring;

struct mb_msgring_params {
    uint32_t n_slots;    /* capacity in messages (creation only); default 2048, 4..1048576 */
    uint64_t first_seq;  /* sequence number of the first message (creation only);
                            default 1. The client layer passes the message log's
                            mb_msglog_last_seq() + 1 so numbers continue across a
                            re-created ring. */
    int lock_timeout_ms; /* bound on each wait for the ring lock; default 10000 */
};

enum mb_msgring_open_flags {
    MB_MSGRING_CREATE = 1u << 0, /* create the segment if it does not exist */
};

/*
 * Opens the message ring in the POSIX shm segment `shm_name` ("/name"),
 * creating it (mode 0600) when MB_MSGRING_CREATE is given and it does not
 * exist. params may be NULL (all defaults); zero fields take their
 * defaults; the capacity and first_seq of an existing ring are kept.
 * On success *out owns a new handle, released with mb_msgring_close.
 * Returns 0, UT_EINVAL (bad name or parameters), UT_ENOMEM, UT_ENOENT (no
 * such segment and no CREATE), UT_EVERSION (another layout), UT_ECORRUPT
 * (inconsistent header), UT_ETIMEOUT (the creator never finished) or
 * -errno. Thread-safe.
 */
int mb_msgring_open(const char *shm_name, unsigned flags, const struct mb_msgring_params *params,
                    struct mb_msgring **out);

/* As mb_msgring_open, for the experiment in directory `expdir` (the shm
 * name comes from ut_shm_name(expdir, "msg")). Also returns
 * UT_ENAMETOOLONG or -errno from realpath. */
int mb_msgring_open_exp(const char *expdir, unsigned flags, const struct mb_msgring_params *params,
                        struct mb_msgring **out);

/*
 * Closes a handle. First flushes the calling thread's deferred messages
 * (mb_msg_flush), if it holds no lock of rank >= UT_RANK_MSG. Messages
 * still deferred for this ring (by other threads, or by this one while it
 * holds such a lock) keep the mapping alive, and are posted, when their
 * thread flushes; the handle itself must not be used again. The calling
 * thread must not hold the ring's lock. Accepts NULL.
 */
void mb_msgring_close(struct mb_msgring *ring);

/* Removes the segment's name; mappings stay valid. Returns 0 or -errno. */
int mb_msgring_destroy(const char *shm_name);

/*
 * Posts a message: formats `fmt` (printf style) into at most
 * MB_MSG_TEXT_MAX bytes (a longer text is cut, at a UTF-8 character
 * boundary, and ends in "..."), stamps it with the wall time and the
 * process id, and appends it to the ring with the next sequence number,
 * waking every mb_msg_wait. `source` is the client name (cut to
 * MB_MSG_SOURCE_MAX bytes); NULL means the program's name. All pointers are
 * borrowed for the call only.
 *
 * Lock order (SPEC "messages never take locks out of order"): when the
 * calling thread holds a lock of rank >= UT_RANK_MSG (the ODB lock, this
 * ring's own lock, a process-local lock), the message is not posted now:
 * it is copied into a queue of the thread (MB_MSG_DEFER_MAX entries) and
 * posted, in order, when the thread releases its outermost such lock, calls
 * mb_msg_flush, closes the ring or exits. When the queue is full, further
 * messages are dropped, counted (mb_msg_stats n_lost), and reported by a
 * message "N messages lost (deferred queue full)" after the last queued one.
 *
 * Returns 0 (posted, or deferred, or dropped from a full queue), UT_EINVAL
 * (bad type, NULL ring or fmt), UT_ENOMEM (no queue could be allocated to
 * defer it; counted as lost), or an error of taking the ring lock:
 * UT_ETIMEOUT, UT_EINTR, UT_ECORRUPT. Thread- and process-safe.
 */
int mb_msg_post(struct mb_msgring *ring, enum mb_msg_type type, const char *source, const char *fmt,
                ...) __attribute__((format(printf, 4, 5)));
/* mb_msg_post with a va_list (consumed). */
int mb_msg_vpost(struct mb_msgring *ring, enum mb_msg_type type, const char *source,
                 const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

/*
 * Posts the calling thread's deferred messages now, in order. Does nothing
 * (returns 0) while the thread holds a lock of rank >= UT_RANK_MSG. The
 * client layer calls it at disconnect and from atexit; threads flush by
 * themselves when they exit. Returns 0 or the error of taking a ring lock
 * (the messages not yet posted stay queued).
 */
int mb_msg_flush(void);

/*
 * Copies out messages with sequence numbers greater than after_seq, oldest
 * first: up to `max` into out[0..max), their number into *n_out. When the
 * reader fell behind by more than the ring's capacity, the copy starts at
 * the oldest message still stored and *n_missed_out (may be NULL) gets how
 * many were skipped; otherwise 0. A reader follows the ring by passing the
 * last seq it got. Takes the ring lock for the copy only, so the caller
 * must not hold a lock of rank >= UT_RANK_MSG other than this ring's (the
 * rank check aborts). out is borrowed; nothing points into shm afterwards.
 * Returns 0, UT_EINVAL, UT_ECORRUPT (a stored record fails its checks),
 * UT_ETIMEOUT, UT_EINTR. Thread- and process-safe.
 */
int mb_msg_read(struct mb_msgring *ring, uint64_t after_seq, struct mb_msg *out, size_t max,
                size_t *n_out, uint64_t *n_missed_out);

/* Sequence number of the newest message (first_seq - 1 when the ring is
 * empty). Lock-free; callable with any lock held. */
uint64_t mb_msg_last_seq(struct mb_msgring *ring);

/*
 * Blocks until a message newer than after_seq exists (a futex on the
 * shared segment: no polling), at most timeout_ms (< 0: no limit; 0: just
 * check). Returns 0 when there is one, UT_ETIMEOUT, or UT_EINTR within
 * about 100 ms of ut_interrupt(). Takes no lock; thread- and process-safe.
 */
int mb_msg_wait(struct mb_msgring *ring, uint64_t after_seq, int timeout_ms);

struct mb_msg_stats {
    uint32_t n_slots;     /* capacity in messages */
    uint64_t first_seq;   /* oldest message stored */
    uint64_t last_seq;    /* newest message (first_seq - 1 when empty) */
    uint64_t n_posted;    /* messages written into the ring, all processes */
    uint64_t n_deferred;  /* posts deferred because a lock was held */
    uint64_t n_lost;      /* deferred messages dropped (queue full, or not postable
                             when their thread exited) */
    uint64_t n_wakes;     /* futex wake calls made by posters */
    uint64_t n_recovered; /* recoveries after a holder died */
    uint64_t n_discarded; /* half-written messages thrown away by recovery */
};

/* Fills *out from counters in the segment, without taking the lock (the
 * figures are each exact, but not a snapshot of one instant). Returns 0 or
 * UT_EINVAL. Callable with any lock held. */
int mb_msg_stats(struct mb_msgring *ring, struct mb_msg_stats *out);

/* ====================================================================== */
/* Message log (SQLite)                                                   */
/* ====================================================================== */

/*
 * The log is one SQLite database (WAL mode) with the table
 *   messages(seq INTEGER PRIMARY KEY, time_ns INTEGER, type TEXT,
 *            source TEXT, pid INTEGER, text TEXT)
 * indexed on time_ns, type and source. Any number of processes may open
 * the same file and sync into it at once. A handle is used by one thread
 * at a time (open one per thread otherwise).
 */
struct mb_msglog;

/* Opens (creating it with mode 0600 when missing) the log at db_path.
 * On success *out owns a handle, released with mb_msglog_close. Returns 0,
 * UT_EINVAL, UT_ENOMEM, MB_EMSGLOG (SQLite failed; details in the log via
 * ut_log), MB_EMSGLOG_SCHEMA (the file has another table layout),
 * UT_ETIMEOUT (the file stayed locked past the 10 s busy timeout) or
 * -errno (creating the file; -ELOOP for a symlink). Thread-safe. */
int mb_msglog_open(const char *db_path, struct mb_msglog **out);
void mb_msglog_close(struct mb_msglog *log);

/*
 * Copies every message of `ring` newer than the newest one in the log into
 * the log, in one transaction (INSERT OR IGNORE, so concurrent syncs from
 * several processes never duplicate a row). Messages that left the ring
 * before they were logged are counted as lost, and one row per gap says so
 * (type ERROR, source "msglog", at the first missing seq). The ring lock is
 * held only while copying out of the ring (mb_msg_read), never during disk
 * I/O. Must not be called with a lock of rank >= UT_RANK_MSG held
 * (asserted). mb_msglog_stats tells what the sync wrote and found lost.
 * Returns 0, UT_EINVAL, MB_EMSGLOG, UT_ETIMEOUT (the database stayed busy
 * past its busy timeout), UT_ENOMEM or an error of mb_msg_read; on error
 * nothing is written.
 */
int mb_msglog_sync(struct mb_msglog *log, struct mb_msgring *ring);

struct mb_msglog_stats {
    uint64_t n_syncs;      /* successful mb_msglog_sync calls on this handle */
    uint64_t n_written;    /* rows written by them (lost-message rows included) */
    uint64_t n_lost;       /* messages they found gone from the ring before being logged */
    uint64_t last_written; /* rows written by the last successful sync */
    uint64_t last_lost;    /* messages found lost by the last successful sync */
};

/* Fills *out with this handle's counters. */
void mb_msglog_stats(const struct mb_msglog *log, struct mb_msglog_stats *out);

/* The highest seq in the log, 0 when empty. Returns 0 or MB_EMSGLOG. */
int mb_msglog_last_seq(struct mb_msglog *log, uint64_t *out);

struct mb_msglog_filter {
    int64_t since_ns;   /* time_ns >= since_ns; 0: no lower bound */
    int64_t until_ns;   /* time_ns < until_ns; 0: no upper bound */
    unsigned type_mask; /* MB_MSG_MASK bits of the wanted types; 0: all */
    const char *source; /* exact source name; NULL: any */
    uint64_t after_seq; /* seq > after_seq; 0: any */
    size_t max;         /* the newest max matches only; 0: all */
};

/*
 * Copies the messages matching *f (NULL: all) into a new array, ordered by
 * seq, oldest first. On success *out owns the array (NULL when nothing
 * matched), freed with mb_msglog_query_free, and *n_out its length.
 * Returns 0, UT_EINVAL, UT_ENOMEM or MB_EMSGLOG.
 */
int mb_msglog_query(struct mb_msglog *log, const struct mb_msglog_filter *f, struct mb_msg **out,
                    size_t *n_out);
void mb_msglog_query_free(struct mb_msg *msgs);

/* Text of the handle's last SQLite error ("" when none). Valid until the
 * next call on the handle. */
const char *mb_msglog_errmsg(const struct mb_msglog *log);

/* ====================================================================== */
/* Event buffers                                                          */
/* ====================================================================== */

/*
 * An event buffer is a named shared-memory ring of events (SPEC "The
 * message bus"). Any number of processes open it; each open handle is one
 * "buffer client" that may send (a producer) and, once it has added at
 * least one request, receive (a consumer). Each handle carries the client
 * slot of its owner (the client layer passes au_client_slot): the watchdog
 * removes everything a dead client slot had in a buffer with
 * mb_buffer_remove_client.
 *
 * Lock: one robust lock per buffer, rank UT_RANK_BUFFER (the lowest), held
 * only to reserve space and to edit the client table; events are copied
 * in and out without it. So any mb_buffer_* call must be made with no lock
 * of rank >= UT_RANK_BUFFER held other than (for the calls that allow it)
 * this buffer's own (the rank check aborts otherwise). mb_buffer_* never
 * post system messages; a caller that holds this buffer's lock may post one
 * (the message ring's lock ranks higher), and never into the buffer itself:
 * mb_buffer_send refuses with UT_EBUSY when the thread holds the buffer's
 * lock (SPEC failure mode 3).
 */

#define MB_BUFFER_NAME_MAX        31          /* bytes of a buffer name, without the NUL */
#define MB_BUFFER_DEFAULT_SIZE    (32u << 20) /* ring bytes when params give 0 */
#define MB_BUFFER_MIN_SIZE        4096u
#define MB_BUFFER_MAX_SIZE        (1ull << 32) /* ring bytes at most (4 GiB) */
#define MB_BUFFER_DEFAULT_CLIENTS 128u
#define MB_BUFFER_MAX_CLIENTS     4096u
#define MB_BUFFER_MAX_REQUESTS    8             /* requests per handle */
#define MB_EVENT_ID_ALL           ((int16_t)-1) /* request: any event id */
#define MB_TRIGGER_ALL            ((int16_t)-1) /* request: any trigger mask */
#define MB_BUFFER_RECORD_OVERHEAD                                                                  \
    32u /* ring bytes per event beyond its data (before rounding to 16) */

/*
 * The event header, laid out as MIDAS's EVENT_HEADER (16 bytes, host byte
 * order), so data files written from it are readable by MIDAS tools. The
 * event's data (data_size bytes) follows it.
 */
struct mb_event_header {
    int16_t event_id;       /* MIDAS event id */
    int16_t trigger_mask;   /* MIDAS trigger mask */
    uint32_t serial_number; /* set by the producer */
    uint32_t time_stamp;    /* seconds since the epoch, set by the producer */
    uint32_t data_size;     /* bytes of data after the header */
};
_Static_assert(sizeof(struct mb_event_header) == 16, "MIDAS EVENT_HEADER layout");
_Static_assert(offsetof(struct mb_event_header, serial_number) == 4, "MIDAS EVENT_HEADER layout");
_Static_assert(offsetof(struct mb_event_header, data_size) == 12, "MIDAS EVENT_HEADER layout");

/* One event to send: the header (data_size is the length of data) and the
 * data, borrowed for the call. */
struct mb_event {
    struct mb_event_header hdr;
    const void *data; /* hdr.data_size bytes; may be NULL when data_size is 0 */
};

/* A handle on an event buffer: opaque. Sending is thread-safe (any number
 * of threads may send on one handle at once); receiving and request edits
 * on one handle must not run in two threads at once (a consumer handle is a
 * cursor: give each consuming thread its own handle). A handle does not
 * survive fork(): a child opens its own, and closing an inherited copy only
 * unmaps it (the parent's entry stays). */
struct mb_buffer;

struct mb_buffer_params {
    uint64_t size_bytes;  /* ring bytes (creation only), rounded up to a multiple of 4096;
                             default MB_BUFFER_DEFAULT_SIZE; MB_BUFFER_MIN_SIZE..MAX_SIZE */
    uint32_t max_clients; /* handles open at once (creation only); default 128, 1..4096 */
    uint32_t slot;        /* the owner's client slot: identity for mb_buffer_remove_client */
    int lock_timeout_ms;  /* bound on each wait for the buffer lock; default 10000 */
};

enum mb_buffer_open_flags {
    MB_BUFFER_CREATE = 1u << 0, /* create the segment if it does not exist */
    MB_BUFFER_ADMIN = 1u << 1,  /* take no client entry: the handle may only remove clients,
                                   read statistics and check (the others give UT_EINVAL);
                                   works when the client table is full */
};

/* Checks a buffer name: 1..MB_BUFFER_NAME_MAX bytes of [A-Za-z0-9_-].
 * Returns 0, UT_EINVAL or UT_ENAMETOOLONG. */
int mb_buffer_name_check(const char *name);

/*
 * Opens the event buffer in the POSIX shm segment `shm_name` ("/name"),
 * called `name` (checked with mb_buffer_name_check; stored at creation and
 * shown in statistics), creating it (mode 0600) with MB_BUFFER_CREATE when
 * it does not exist. params may be NULL (defaults, slot 0); zero fields take
 * their defaults; the geometry of an existing buffer is kept. The handle
 * takes one client entry. On success *out owns the handle, released with
 * mb_buffer_close. Returns 0, UT_EINVAL, UT_ENAMETOOLONG, UT_ENOMEM,
 * UT_ENOENT (no segment and no CREATE), UT_EVERSION, UT_ECORRUPT,
 * UT_ETIMEOUT, MB_ECLIENTS (client table full), UT_EINTR or -errno.
 * Thread-safe.
 */
int mb_buffer_open(const char *shm_name, const char *name, unsigned flags,
                   const struct mb_buffer_params *params, struct mb_buffer **out);

/* As mb_buffer_open for the buffer `name` of the experiment in `expdir`
 * (shm name ut_shm_name(expdir, "buf.<name>")). Also returns -errno from
 * realpath. */
int mb_buffer_open_exp(const char *expdir, const char *name, unsigned flags,
                       const struct mb_buffer_params *params, struct mb_buffer **out);

/* Releases the handle's client entry (its requests and read position; a
 * zero-copy event still held is released) and unmaps. The handle must not
 * be in use by another thread. Accepts NULL. */
void mb_buffer_close(struct mb_buffer *buf);

/* Removes the segment's name; mappings stay valid. Returns 0 or -errno. */
int mb_buffer_destroy(const char *shm_name);
/* As mb_buffer_destroy for the buffer `name` of an experiment. */
int mb_buffer_destroy_exp(const char *expdir, const char *name);

/* The buffer's name (static for the handle's lifetime) and ring size. */
const char *mb_buffer_name(const struct mb_buffer *buf);
uint64_t mb_buffer_size(const struct mb_buffer *buf);
/* The largest data_size one event may have in this buffer (events up to
 * half the ring, less the record overhead). */
uint32_t mb_buffer_max_event(const struct mb_buffer *buf);

/*
 * Consumer requests. A handle receives the events matching any of its
 * requests: event_id is MB_EVENT_ID_ALL or equal to the event's, and
 * trigger_mask is MB_TRIGGER_ALL or shares a bit with the event's (MIDAS
 * bm_request_event semantics). Mode:
 *   MB_GET_ALL  - the handle sees every matching event: producers wait (up
 *                 to their timeout) rather than overwrite an event it has
 *                 not read. A handle with any GET_ALL request holds back
 *                 producers for all events, so it should keep reading.
 *   MB_GET_SOME - sampling: when producers need the space, the handle is
 *                 skipped forward and counts each matching event it missed
 *                 (mb_buffer_n_missed; exact).
 * The first request of a handle starts it at the newest committed event:
 * it receives events committed after that. *id_out (may be NULL) gets an
 * id for mb_buffer_request_remove. Returns 0, UT_EINVAL, MB_EBADREQ (bad
 * mode, or a trigger mask of 0 that matches nothing), MB_EREQUESTS (more
 * than MB_BUFFER_MAX_REQUESTS), MB_EREMOVED, or a lock error.
 */
enum mb_request_mode { MB_GET_ALL = 1, MB_GET_SOME = 2 };
int mb_buffer_request_add(struct mb_buffer *buf, int16_t event_id, int16_t trigger_mask,
                          enum mb_request_mode mode, int *id_out);
/* Removes one request; removing the last stops consumption (the read
 * position is dropped and producers no longer wait for the handle).
 * Returns 0, UT_EINVAL (no such id, or a zero-copy event is held),
 * MB_EREMOVED or a lock error. */
int mb_buffer_request_remove(struct mb_buffer *buf, int id);

/*
 * Sends one event: hdr (its data_size gives the length) and data are
 * copied into the ring. Space is reserved under the buffer lock, the copy
 * is made without it, then the event is committed; consumers see events in
 * reservation order. When the slowest GET_ALL consumer (or a consumer
 * holding a zero-copy event, or an unfinished reservation of another
 * producer) leaves no space, waits - spinning briefly, then sleeping on a
 * futex - at most timeout_ms (0: don't wait; < 0: no limit). Returns 0,
 * UT_EINVAL, MB_ETOOBIG (data_size > mb_buffer_max_event), MB_EFULL (no
 * space within the timeout: nothing was sent), UT_EINTR (ut_interrupt),
 * MB_EREMOVED, UT_EBUSY (the calling thread holds this buffer's lock:
 * sending would deadlock), UT_ECORRUPT or a lock error. Thread-safe.
 */
int mb_buffer_send(struct mb_buffer *buf, const struct mb_event_header *hdr, const void *data,
                   int timeout_ms);

/* Sends n events in order with as few lock acquisitions as fit (many
 * small events share one reservation). *n_sent (may be NULL) gets the
 * number sent, also on error: events [0, *n_sent) are in the buffer, the
 * rest are not. timeout_ms bounds each wait for space. Returns as
 * mb_buffer_send. */
int mb_buffer_send_batch(struct mb_buffer *buf, const struct mb_event *events, size_t n,
                         size_t *n_sent, int timeout_ms);

/*
 * Receives the next event matching the handle's requests, copying its
 * header into *hdr and its data into data[0, *size) (*size: capacity on
 * entry, data_size on return). Waits for one at most timeout_ms (0: don't
 * wait; < 0: no limit), spinning briefly, then sleeping on a futex (no CPU
 * used while the buffer stays empty). Returns 0, UT_EINVAL, MB_ENOREQ (no
 * request), MB_EEMPTY (none within the timeout), MB_ETRUNC (the data does
 * not fit: *size gets data_size, nothing is consumed), UT_EINTR,
 * MB_EREMOVED or UT_ECORRUPT. One thread per handle.
 */
int mb_buffer_receive(struct mb_buffer *buf, struct mb_event_header *hdr, void *data, size_t *size,
                      int timeout_ms);

/*
 * Zero-copy receive: as mb_buffer_receive, but *hdr_out and *data_out
 * point at the event inside the ring (data_out at hdr->data_size bytes).
 * The event stays pinned - producers will not overwrite it, whatever the
 * mode - until mb_buffer_receive_end; the pointers are valid until then
 * only. A handle holds at most one such event. Returns as
 * mb_buffer_receive (without MB_ETRUNC), and UT_EINVAL when an event is
 * already held.
 */
int mb_buffer_receive_begin(struct mb_buffer *buf, const struct mb_event_header **hdr_out,
                            const void **data_out, int timeout_ms);
/* Releases the event of mb_buffer_receive_begin. Returns 0, UT_EINVAL
 * (none held) or MB_EREMOVED (the handle was removed meanwhile). */
int mb_buffer_receive_end(struct mb_buffer *buf);

/* Matching events this handle missed (GET_SOME skips) so far. Lock-free. */
uint64_t mb_buffer_n_missed(const struct mb_buffer *buf);

/*
 * Removes every client entry of client slot `slot` (all handles opened
 * with that slot, by any process): their requests and read positions go
 * (producers waiting for them resume at once) and their unfinished
 * reservations are discarded (events committed behind them become
 * readable). Meant for dead clients - the client layer's watchdog calls it
 * for every buffer of the experiment when it removes a dead client. A live
 * handle removed this way gets MB_EREMOVED from its next call; removing a
 * live producer in the middle of a send is not safe (its copy may land in
 * space handed to another producer). Returns the number of entries
 * removed (>= 0) or a lock error. Process-safe.
 */
int mb_buffer_remove_client(struct mb_buffer *buf, uint32_t slot);

/* Per-handle figures, as seen in the client table. */
struct mb_buffer_client_stats {
    uint32_t slot;           /* owner's client slot */
    uint32_t pid;            /* opener's pid (diagnostics only) */
    bool producer;           /* has sent at least one event */
    bool consumer;           /* has at least one request */
    bool get_all;            /* has a GET_ALL request */
    bool holding;            /* holds a zero-copy event */
    uint64_t fill_bytes;     /* committed bytes it has not read yet (consumers) */
    uint64_t n_received;     /* events received */
    uint64_t bytes_received; /* their data bytes */
    uint64_t n_missed;       /* matching events skipped (GET_SOME) */
    uint64_t n_sent;         /* events sent */
    uint64_t bytes_sent;     /* their data bytes */
};

struct mb_buffer_stats {
    char name[MB_BUFFER_NAME_MAX + 1];
    uint64_t size_bytes;   /* ring size */
    uint64_t fill_bytes;   /* bytes reserved but not yet read by the slowest consumer
                              (0 without consumers) */
    uint32_t n_clients;    /* open handles */
    uint32_t n_producers;  /* handles that have sent */
    uint32_t n_consumers;  /* handles with requests */
    uint64_t n_events_in;  /* events sent, all handles ever */
    uint64_t bytes_in;     /* their data bytes */
    uint64_t n_events_out; /* events received, all handles ever */
    uint64_t bytes_out;    /* their data bytes */
    uint64_t n_missed;     /* GET_SOME skips, all handles ever */
    uint64_t n_discarded;  /* reservations of dead producers thrown away */
    uint64_t n_recovered;  /* lock recoveries after a holder died */
    uint64_t n_removed;    /* client entries removed by mb_buffer_remove_client */
    uint64_t n_full_waits; /* sends that had to wait for space */
    uint64_t n_wakes;      /* futex wake calls */
};

/* Fills *out, and clients[0, max) with up to max per-handle figures
 * (their number in *n_clients_out; clients and n_clients_out may be NULL
 * when max is 0). Read without the lock: each figure is exact, the set is
 * not one instant's snapshot. Returns 0 or UT_EINVAL. Callable with any
 * lock held. */
int mb_buffer_stats(struct mb_buffer *buf, struct mb_buffer_stats *out,
                    struct mb_buffer_client_stats *clients, size_t max, size_t *n_clients_out);

/*
 * Integrity check under the lock: geometry, the position counters, every
 * record between the oldest kept and the newest reserved (sizes,
 * alignment, position tags, states, event sizes), every client entry and
 * read position (on a record boundary in range). report (may be NULL)
 * gets "ok" or the first problem found. Returns 0, UT_ECORRUPT, or a lock
 * error.
 */
int mb_buffer_check(struct mb_buffer *buf, char *report, size_t report_size);

#endif
