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
 *   (Event buffers get their own section.)
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

#endif
