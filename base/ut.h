/*
 * base/ut.h - the base library of aurum: one error space, logging, heap
 * wrappers with fault injection, clocks, shared-memory segments and the
 * rank-checked robust process-shared lock.
 *
 * Layering: every other module (odb, msgbus, mserver, client, programs)
 * builds on this one; this one uses only libc and pthreads.
 *
 * Conventions (see docs/ARCHITECTURE.md): functions that can fail return
 * int, 0 for success and a negative code otherwise. System errors are passed
 * through as -errno. Out-parameters are left unchanged on error.
 */
#ifndef AURUM_BASE_UT_H
#define AURUM_BASE_UT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <pthread.h>

/* ---------------------------------------------------------------------- */
/* Errors                                                                  */
/* ---------------------------------------------------------------------- */

/*
 * One list for the whole project. Codes go on the RPC wire: append only,
 * never renumber or reuse. Each module owns a range (UT -1000.., ODB
 * -2000.., MB -3000.., RPC -4000.., AU -5000..).
 */
#define UT_ERRNO_MAP(X)                                                                            \
    X(UT_EINVAL, -1000, "invalid argument")                                                        \
    X(UT_ENOMEM, -1001, "out of memory")                                                           \
    X(UT_ETIMEOUT, -1002, "timed out")                                                             \
    X(UT_ECORRUPT, -1003, "shared segment is corrupt and refuses further use")                     \
    X(UT_EVERSION, -1004, "shared segment has an incompatible layout version")                     \
    X(UT_EEXIST, -1005, "already exists")                                                          \
    X(UT_ENOENT, -1006, "does not exist")                                                          \
    X(UT_EINTR, -1007, "interrupted by a signal")                                                  \
    X(UT_EIO, -1008, "input/output error")                                                         \
    X(UT_EFAULT_INJECTED, -1009, "injected fault")                                                 \
    X(UT_ENAMETOOLONG, -1010, "name too long")                                                     \
    X(UT_EBUSY, -1011, "resource busy")                                                            \
    X(ODB_ENOKEY, -2000, "no such key")                                                            \
    X(ODB_EEXIST, -2001, "key already exists")                                                     \
    X(ODB_ETYPE, -2002, "type mismatch")                                                           \
    X(ODB_EPATH, -2003, "malformed path")                                                          \
    X(ODB_ESTALE, -2004, "stale handle: the key was deleted")                                      \
    X(ODB_ENOSPC, -2005, "ODB segment is full")                                                    \
    X(ODB_ETOOLONG, -2006, "value too long")                                                       \
    X(ODB_ERANGE, -2007, "array index out of range")                                               \
    X(ODB_ENOTDIR, -2008, "not a directory")                                                       \
    X(ODB_EISDIR, -2009, "is a directory")                                                         \
    X(ODB_EACCESS, -2010, "access mode forbids this operation")                                    \
    X(ODB_ENOTEMPTY, -2011, "directory not empty")                                                 \
    X(ODB_ELINKLOOP, -2012, "too many levels of links")                                            \
    X(ODB_EJSON, -2013, "malformed JSON")                                                          \
    X(ODB_ETOOBIG, -2014, "operation too large for the undo log")                                  \
    X(ODB_ETRUNC, -2015, "buffer too small, value truncated")                                      \
    X(ODB_EKEYS, -2016, "key table is full")                                                       \
    X(ODB_ENAME, -2017, "invalid key name")                                                        \
    X(MB_EMSGLOG, -3000, "message log database error")                                             \
    X(MB_EMSGLOG_SCHEMA, -3001, "message log database has an incompatible schema")                 \
    X(MB_EFULL, -3002, "event buffer is full")                                                     \
    X(MB_EEMPTY, -3003, "no event in the buffer")                                                  \
    X(MB_ETOOBIG, -3004, "event larger than the buffer allows")                                    \
    X(MB_EBADREQ, -3005, "invalid event request")                                                  \
    X(MB_ENOREQ, -3006, "this buffer handle has no event request")                                 \
    X(MB_ETRUNC, -3007, "event larger than the receive buffer")                                    \
    X(MB_ECLIENTS, -3008, "event buffer has no free client entry")                                 \
    X(MB_EREMOVED, -3009, "this client was removed from the event buffer")                         \
    X(MB_EREQUESTS, -3010, "too many event requests on one buffer handle")                         \
    X(AU_EFULL, -5000, "the experiment has no free client slot")                                   \
    X(AU_EDUPNAME, -5001, "client name already in use")                                            \
    X(AU_EREMOVED, -5002, "this client was removed by another client's watchdog")                  \
    X(AU_ENOEXP, -5003, "experiment directory does not exist")

enum ut_errno {
#define UT_ERR_ENUM(name, val, text) name = (val),
    UT_ERRNO_MAP(UT_ERR_ENUM)
#undef UT_ERR_ENUM
};

/* Returns a static description of any project error or -errno. Never NULL. */
const char *ut_strerror(int err);

/* ---------------------------------------------------------------------- */
/* Assertions and logging                                                  */
/* ---------------------------------------------------------------------- */

/* Broken invariants are bugs: log file, line, expression, then abort. On in
 * every build. */
#define UT_ASSERT(e) ((e) ? (void)0 : ut__assert_fail(#e, __FILE__, __LINE__))
void ut__assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

enum ut_log_level { UT_LOG_DEBUG, UT_LOG_INFO, UT_LOG_WARN, UT_LOG_ERROR };

/* Logging sink: programs may install their own. The default writes to
 * stderr at UT_LOG_WARN and above. Thread-safe. */
typedef void (*ut_log_cb)(enum ut_log_level level, const char *msg, void *arg);
void ut_log_set_sink(ut_log_cb cb, void *arg, enum ut_log_level min_level);
void ut_log(enum ut_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Bounded string formatting: always NUL-terminates, returns the length the
 * full result would have had (as snprintf). */
size_t ut_strlcpy(char *dst, const char *src, size_t size);

/* ---------------------------------------------------------------------- */
/* Heap (all allocation in the project goes through these)                 */
/* ---------------------------------------------------------------------- */

void *ut_malloc(size_t size);
void *ut_calloc(size_t n, size_t size);
void *ut_realloc(void *p, size_t size);
char *ut_strdup(const char *s);
void ut_free(void *p);

/* Fault injection for tests: the n-th allocation from now (1-based) and
 * every one after it fail; n = 0 turns it off. Process-wide. */
void ut_alloc_fail_after(long n);

/* Named fault points: ut_fault_set("save.write", 1) makes the first
 * ut_fault_hit("save.write") after it return true. Process-wide; used by
 * tests to make I/O fail at a chosen place. */
void ut_fault_set(const char *name, long nth);
bool ut_fault_hit(const char *name);

/* Crash points: when the environment variable AURUM_CRASH_POINT=k is set,
 * the k-th call to ut_crash_point() in the process raises SIGKILL on itself.
 * Lets tests kill a process at every interesting instruction of a mutating
 * operation. Returns the number of crash points passed so far. */
long ut_crash_point(void);
void ut_crash_point_arm(long k);

/* ---------------------------------------------------------------------- */
/* Time                                                                    */
/* ---------------------------------------------------------------------- */

int64_t ut_now_ns(void);  /* CLOCK_MONOTONIC, nanoseconds */
int64_t ut_wall_ns(void); /* CLOCK_REALTIME, nanoseconds since the epoch */

/* ---------------------------------------------------------------------- */
/* Shared-memory segments                                                  */
/* ---------------------------------------------------------------------- */

/*
 * Every segment begins with this header. Attach refuses a segment whose
 * magic, layout version, kind or struct-size fingerprint differ from ours.
 *
 *  offset size meaning
 *  0      8    magic "AURUMSHM"
 *  8      4    layout version (UT_SHM_VERSION)
 *  12     4    kind (module-defined, e.g. 'ODB1')
 *  16     8    fingerprint: module-defined hash of its struct sizes
 *  24     8    total size of the mapping in bytes
 *  32     4    creator pid
 *  36     4    ready: 0 while the creator initialises, 1 after
 *  40     8    creation wall time, ns
 *  48     16   reserved
 */
struct ut_shm_header {
    char magic[8];
    uint32_t version;
    uint32_t kind;
    uint64_t fingerprint;
    uint64_t size;
    uint32_t creator_pid;
    uint32_t ready;
    int64_t created_ns;
    uint8_t reserved[16];
};
#define UT_SHM_VERSION 1u

struct ut_shm {
    void *base;     /* mapping start, the ut_shm_header */
    size_t size;    /* mapping size, bytes */
    char name[128]; /* POSIX shm name, starting with '/' */
    bool created;   /* true if this call created (and must initialise) it */
};

/* Derives a POSIX shm name for an experiment directory and a segment kind
 * ("odb", "msg", "buf.SYSTEM"): "/aurum.<hash of the real path>.<what>".
 * Two experiments never collide, because the real path differs.
 * Returns 0, UT_ENAMETOOLONG, or -errno from realpath. */
int ut_shm_name(const char *expdir, const char *what, char *out, size_t out_size);

/* Opens the segment `name`, creating it with `size` bytes (mode 0600, O_EXCL,
 * no symlink following) when it does not exist. When shm->created is true on
 * return the caller must initialise its part, then call ut_shm_ready().
 * When attaching, waits up to timeout_ms for the creator to finish, then
 * verifies the header. Returns 0, UT_ENOENT (missing and !may_create),
 * UT_EVERSION, UT_ECORRUPT, UT_ETIMEOUT or -errno. On error nothing stays
 * mapped. */
int ut_shm_open(struct ut_shm *shm, const char *name, size_t size, uint32_t kind,
                uint64_t fingerprint, bool may_create, int timeout_ms);
void ut_shm_ready(struct ut_shm *shm);
void ut_shm_close(struct ut_shm *shm);
/* Removes the name; existing mappings stay valid. Returns 0 or -errno. */
int ut_shm_unlink(const char *name);

/* ---------------------------------------------------------------------- */
/* The rank-checked robust lock                                            */
/* ---------------------------------------------------------------------- */

/*
 * Lock ranks: a thread may only take a lock whose rank is strictly higher
 * than the rank of the last lock it took (recursion on a lock it holds is
 * allowed at any time). Shared locks: event buffer < message ring < ODB.
 * Process-local locks above them take ranks from UT_RANK_LOCAL up.
 */
enum ut_lock_rank {
    UT_RANK_BUFFER = 100,
    UT_RANK_MSG = 200,
    UT_RANK_ODB = 300,
    UT_RANK_LOCAL = 1000,
};

/*
 * The part of a lock that lives in shared memory. Layout is part of each
 * segment's fingerprint.
 */
struct ut_shlock {
    pthread_mutex_t mutex; /* robust, process-shared, normal (not recursive) */
    uint64_t id;           /* random identity, set at init; recursion is by id */
    uint32_t owner_pid;    /* pid of the holder (diagnostics only), under mutex */
    uint32_t owner_tid;    /* kernel tid of the holder, under mutex */
    int64_t since_ns;      /* CLOCK_REALTIME when taken, under mutex */
    uint32_t owner_line;   /* source line of the acquisition, under mutex */
    uint32_t broken;       /* set when recovery failed: refuse all use */
    char owner_file[48];   /* source file of the acquisition, under mutex */
    char owner_name[32];   /* client name of the holder, under mutex */
    uint64_t n_acquired;   /* outermost acquisitions, under mutex */
    uint64_t n_contended;  /* acquisitions that had to wait, under mutex */
    uint64_t wait_ns;      /* total time spent waiting, under mutex */
    uint64_t n_owner_died; /* recoveries after a holder died, under mutex */
};

/* Called with the mutex held after its previous holder died. Must restore
 * the protected data's invariants and return 0, or return an error, which
 * marks the segment broken. */
typedef int (*ut_lock_recover_cb)(void *arg);

/* Process-local view of a lock. */
struct ut_lock {
    struct ut_shlock *sh; /* in shared memory */
    const char *name;     /* for diagnostics, static storage */
    int rank;
    int timeout_ms; /* bound on each wait; <= 0 waits forever */
    ut_lock_recover_cb recover;
    void *recover_arg;
};

/* Initialises the shared part (creator only). Returns 0 or -errno. */
int ut_shlock_init(struct ut_shlock *sh);

void ut_lock_bind(struct ut_lock *lock, struct ut_shlock *sh, const char *name, int rank,
                  int timeout_ms, ut_lock_recover_cb recover, void *recover_arg);

/* Takes the lock (recursively if this thread holds it). Aborts on a rank
 * violation, naming both locks and both call sites. Returns 0, UT_ETIMEOUT
 * (the holder is named in the log and in ut_lock_last_error()), UT_EINTR
 * when ut_interrupt() was called while waiting, or UT_ECORRUPT when the
 * segment is broken. */
#define UT_LOCK(l) ut_lock_acquire((l), __FILE__, __LINE__)
int ut_lock_acquire(struct ut_lock *lock, const char *file, int line);
/* Releases one level. Aborts if the thread does not hold the lock. Runs the
 * release hooks when the thread drops its last lock of rank >= the hook's. */
void ut_lock_release(struct ut_lock *lock);
/* True when the calling thread holds the lock. */
bool ut_lock_held(const struct ut_lock *lock);
/* Highest rank the calling thread holds, or 0. */
int ut_lock_top_rank(void);
/* Text of the last lock error in this thread (timeout holder etc.). */
const char *ut_lock_last_error(void);

/* The name written into ut_shlock.owner_name when this process takes a
 * lock (its client name). Process-wide; copied. */
void ut_lock_set_owner_name(const char *name);

/* A hook run (in the releasing thread, with no lock of rank >= min_rank
 * held) when the thread's outermost lock of rank >= min_rank is released.
 * Used to flush messages deferred while a lock was held. */
typedef void (*ut_lock_release_hook_cb)(void);
void ut_lock_set_release_hook(int min_rank, ut_lock_release_hook_cb hook);

/* Asks every lock wait in the process to return UT_EINTR soon (safe to call
 * from a signal handler). ut_interrupt_clear() resets it. */
void ut_interrupt(void);
void ut_interrupt_clear(void);
bool ut_interrupted(void);

/* Thread id (gettid), cached per thread. */
uint32_t ut_tid(void);

#endif
