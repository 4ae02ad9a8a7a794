/*
 * base/lock.c - the rank-checked, recursive, robust process-shared lock.
 *
 * Underneath is a plain (PTHREAD_MUTEX_NORMAL) robust process-shared mutex
 * in shared memory. Recursion is ours, not glibc's: glibc's recursive and
 * error-checking robust mutexes compare thread ids, and two processes in
 * different PID namespaces can share a thread id, so one could "re-enter" a
 * lock the other holds. We keep, per thread, a stack of held locks with a
 * depth each; a lock is recognised by the random 64-bit id stored in its
 * shared part, so two mappings of one segment in one process are still the
 * same lock.
 *
 * Rank rule: a thread may take a lock it does not hold only when the lock's
 * rank is strictly higher than the rank of the lock on top of its stack. A
 * violation is a bug that could deadlock under load, so it aborts at once,
 * in every build, naming both locks and both call sites.
 *
 * Fast path: one trylock (an atomic compare-and-swap, no system call), a
 * push on the thread-local stack, and a few stores of diagnostics into the
 * lock's cache line. Contended path: spin briefly, then sleep in the kernel
 * in slices so that ut_interrupt() and the configured timeout are honoured.
 *
 * The holder diagnostics (pid, tid, since, file:line, client name) are
 * written at every outermost acquisition, so they must cost next to
 * nothing: the pid and tid are cached (and forgotten in a forked child by
 * a pthread_atfork handler; getpid() is a real system call, about 1 us in
 * a VM with page-table isolation), `since` is read from the coarse
 * realtime clock (vDSO, a few ns; a tick of resolution is plenty for "held
 * for 10 s"), and the two strings are copied only when they could differ
 * from what is already there: a thread remembers, per lock, the
 * acquisition count right after its own last acquisition and what it
 * wrote; if nobody acquired the lock since (same lock id, count advanced
 * by exactly one), the same file and client name are still in place.
 *
 * Holder death: the next locker gets EOWNERDEAD, runs the segment's
 * recovery callback (which rolls back the interrupted operation), and only
 * then marks the mutex consistent. If recovery fails the mutex is left
 * unrecoverable and the segment is flagged broken, so every later user gets
 * UT_ECORRUPT instead of corrupt data.
 */
#include "base/ut_int.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_HELD      16
#define SPIN_TRIES    200
#define WAIT_SLICE_MS 50

/* ThreadSanitizer (gcc 12, clang 14) does not intercept
 * pthread_mutex_clocklock: an acquisition through it is invisible to TSan,
 * which then reports the matching unlock and every access under the lock.
 * TSan builds wait with pthread_mutex_timedlock (CLOCK_REALTIME; a clock
 * jump only stretches or shortens one slice). */
#if defined(__SANITIZE_THREAD__)
#define UT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UT_TSAN 1
#endif
#endif
#ifndef UT_TSAN
#define UT_TSAN 0
#endif
#if UT_TSAN
#include <sanitizer/tsan_interface.h>
#define WAIT_CLOCK CLOCK_REALTIME
#else
#define WAIT_CLOCK CLOCK_MONOTONIC
#endif

struct held_lock {
    uint64_t id;      /* ut_shlock.id */
    const char *name; /* lock name, static storage */
    int rank;
    int depth;        /* recursion depth, >= 1 */
    const char *file; /* where the outermost acquisition happened */
    int line;
};

static __thread struct held_lock held[MAX_HELD];
static __thread int n_held;
static __thread char last_error[384];
static __thread uint32_t cached_tid;
static __thread bool in_release_hook;

static char owner_name[32] = "?";  /* written once at connect, read under locks */
static atomic_uint owner_name_gen; /* bumped at every ut_lock_set_owner_name */
static atomic_int interrupt_flag;

/* getpid() cached for the diagnostics; 0 = not known yet, also in a
 * forked child (forget_tid_in_child). */
static atomic_uint cached_pid;

/* What this thread last wrote into the text diagnostics of a lock (a tiny
 * direct-mapped cache keyed by the lock's address, checked by its id). */
struct owner_note {
    uint64_t id;         /* ut_shlock.id of the lock, 0 = empty */
    uint64_t n_acquired; /* ut_shlock.n_acquired right after that acquisition */
    const char *file;    /* the file argument whose base name was written */
    unsigned name_gen;   /* owner_name_gen when owner_name was written */
};
#define OWNER_NOTES 4
static __thread struct owner_note owner_notes[OWNER_NOTES];

#define MAX_HOOKS 4
static struct {
    _Atomic(ut_lock_release_hook_cb) fn;
    atomic_int min_rank;
} release_hooks[MAX_HOOKS];

/* A forked child inherits the forking thread's cache but has a new tid. */
static void forget_tid_in_child(void)
{
    cached_tid = 0;
    atomic_store_explicit(&cached_pid, 0, memory_order_relaxed);
}

static void register_tid_atfork(void)
{
    pthread_atfork(NULL, NULL, forget_tid_in_child);
}

uint32_t ut_tid(void)
{
    if (!cached_tid) {
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        pthread_once(&once, register_tid_atfork);
        cached_tid = (uint32_t)syscall(SYS_gettid);
    }
    return cached_tid;
}

/* getpid(), cached. */
static uint32_t self_pid(void)
{
    uint32_t pid = atomic_load_explicit(&cached_pid, memory_order_relaxed);
    if (!pid) {
        /* ut_tid registers the fork handler that forgets the cached pid;
         * it must exist before a value is cached that a fork makes stale. */
        (void)ut_tid();
        pid = (uint32_t)getpid();
        atomic_store_explicit(&cached_pid, pid, memory_order_relaxed);
    }
    return pid;
}

void ut_lock_set_owner_name(const char *name)
{
    char tmp[sizeof owner_name];
    ut_strlcpy(tmp, name, sizeof tmp);
    for (size_t i = 0; i < sizeof tmp; i++)
        __atomic_store_n(&owner_name[i], tmp[i], __ATOMIC_RELAXED);
    atomic_fetch_add(&owner_name_gen, 1);
}

void ut_interrupt(void)
{
    atomic_store(&interrupt_flag, 1);
}

void ut_interrupt_clear(void)
{
    atomic_store(&interrupt_flag, 0);
}

bool ut_interrupted(void)
{
    return atomic_load_explicit(&interrupt_flag, memory_order_relaxed) != 0;
}

const char *ut_lock_last_error(void)
{
    return last_error;
}

int ut_shlock_init(struct ut_shlock *sh)
{
    pthread_mutexattr_t attr;
    int rc;

    memset(sh, 0, sizeof *sh);
    if (getrandom(&sh->id, sizeof sh->id, 0) != (ssize_t)sizeof sh->id)
        sh->id = (uint64_t)ut_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)sh;
    rc = pthread_mutexattr_init(&attr);
    if (rc)
        return -rc;
    rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (!rc)
        rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (!rc)
        rc = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_NORMAL);
    if (!rc)
        rc = pthread_mutex_init(&sh->mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    return -rc;
}

void ut_lock_bind(struct ut_lock *lock, struct ut_shlock *sh, const char *name, int rank,
                  int timeout_ms, ut_lock_recover_cb recover, void *recover_arg)
{
    lock->sh = sh;
    lock->name = name;
    lock->rank = rank;
    lock->timeout_ms = timeout_ms;
    lock->recover = recover;
    lock->recover_arg = recover_arg;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static void rank_violation(const struct ut_lock *lock, const char *file, int line)
{
    const struct held_lock *top = &held[n_held - 1];
    char msg[512];
    int n = snprintf(msg, sizeof msg,
                     "aurum: lock order violation: taking '%s' (rank %d) at %s:%d while holding "
                     "'%s' (rank %d) taken at %s:%d (pid %d)\n",
                     lock->name, lock->rank, file, line, top->name, top->rank, top->file, top->line,
                     (int)getpid());
    if (n > 0) {
        ssize_t w = write(STDERR_FILENO, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
        (void)w;
    }
    abort();
}

/* Copies a string into shared memory with relaxed atomic byte stores so a
 * concurrent diagnostic reader in another thread is not a data race. */
static void store_text(char *dst, size_t size, const char *src)
{
    size_t i = 0;
    for (; i + 1 < size && src[i]; i++)
        __atomic_store_n(&dst[i], src[i], __ATOMIC_RELAXED);
    __atomic_store_n(&dst[i], '\0', __ATOMIC_RELAXED);
}

static void load_text(char *dst, size_t size, const char *src)
{
    for (size_t i = 0; i < size; i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    dst[size - 1] = '\0';
}

/* Records the holder, after sh->n_acquired has counted this acquisition.
 * The strings are rewritten only when they may differ from what is there
 * (see the essay at the top). */
static void note_owner(struct ut_shlock *sh, const char *file, int line)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    __atomic_store_n(&sh->owner_pid, self_pid(), __ATOMIC_RELAXED);
    __atomic_store_n(&sh->owner_tid, ut_tid(), __ATOMIC_RELAXED);
    __atomic_store_n(&sh->since_ns, (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec, __ATOMIC_RELAXED);
    __atomic_store_n(&sh->owner_line, (uint32_t)line, __ATOMIC_RELAXED);
    struct owner_note *note = &owner_notes[((uintptr_t)sh / 64) % OWNER_NOTES];
    unsigned gen = atomic_load_explicit(&owner_name_gen, memory_order_relaxed);
    if (note->id == sh->id && note->n_acquired + 1 == sh->n_acquired && note->file == file &&
        note->name_gen == gen) {
        note->n_acquired = sh->n_acquired;
        return;
    }
    store_text(sh->owner_file, sizeof sh->owner_file, base_name(file));
    char name[sizeof owner_name];
    load_text(name, sizeof name, owner_name);
    store_text(sh->owner_name, sizeof sh->owner_name, name);
    *note = (struct owner_note){sh->id, sh->n_acquired, file, gen};
}

/* Describes the current holder into last_error and the log. */
static void report_timeout(const struct ut_lock *lock, const char *file, int line, int waited_ms)
{
    struct ut_shlock *sh = lock->sh;
    char name[32], ofile[48];
    uint32_t pid = __atomic_load_n(&sh->owner_pid, __ATOMIC_RELAXED);
    uint32_t tid = __atomic_load_n(&sh->owner_tid, __ATOMIC_RELAXED);
    int64_t since = __atomic_load_n(&sh->since_ns, __ATOMIC_RELAXED);
    uint32_t oline = __atomic_load_n(&sh->owner_line, __ATOMIC_RELAXED);
    load_text(name, sizeof name, sh->owner_name);
    load_text(ofile, sizeof ofile, sh->owner_file);
    double held_s = since ? (double)(ut_wall_ns() - since) / 1e9 : 0.0;
    time_t since_s = (time_t)(since / 1000000000);
    struct tm tm;
    char when[32];
    /* strftime leaves the buffer indeterminate when it returns 0. */
    if (!localtime_r(&since_s, &tm) || strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        snprintf(when, sizeof when, "?");
    snprintf(last_error, sizeof last_error,
             "timeout after %d ms waiting for lock '%s' at %s:%d: held by client '%s' pid %u "
             "tid %u since %s (%.1f s) from %s:%u",
             waited_ms, lock->name, base_name(file), line, name, pid, tid, when, held_s, ofile,
             oline);
    ut_log(UT_LOG_ERROR, "%s", last_error);
}

/* Waits for the mutex after the fast path failed. Returns a pthread code
 * (0, EOWNERDEAD, ENOTRECOVERABLE) or ETIMEDOUT / EINTR. */
static int wait_for_mutex(struct ut_lock *lock, const char *file, int line)
{
    struct ut_shlock *sh = lock->sh;
    int rc;
    for (int i = 0; i < SPIN_TRIES; i++) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        rc = pthread_mutex_trylock(&sh->mutex);
        if (rc != EBUSY)
            return rc;
    }
    int64_t start = ut_now_ns();
    for (;;) {
        if (ut_interrupted())
            return EINTR;
        int64_t now = ut_now_ns();
        int waited_ms = (int)((now - start) / 1000000);
        if (lock->timeout_ms > 0 && waited_ms >= lock->timeout_ms) {
            report_timeout(lock, file, line, waited_ms);
            return ETIMEDOUT;
        }
        int slice = WAIT_SLICE_MS;
        if (lock->timeout_ms > 0 && lock->timeout_ms - waited_ms < slice)
            slice = lock->timeout_ms - waited_ms;
        struct timespec abs;
        clock_gettime(WAIT_CLOCK, &abs);
        abs.tv_nsec += (long)slice * 1000000L;
        abs.tv_sec += abs.tv_nsec / 1000000000L;
        abs.tv_nsec %= 1000000000L;
#if UT_TSAN
        /* TSan's timedlock interceptor records the acquisition only when
         * it returns 0: after EOWNERDEAD we hold the mutex but TSan does
         * not know, and would report the unlock. Tell it, the way its own
         * trylock interceptor does. (Blocking here rather than polling
         * keeps waiters from starving behind busy lockers.) */
        rc = pthread_mutex_timedlock(&sh->mutex, &abs);
        if (rc == EOWNERDEAD) {
            __tsan_mutex_pre_lock(&sh->mutex, __tsan_mutex_try_lock);
            __tsan_mutex_post_lock(&sh->mutex, __tsan_mutex_try_lock, 0);
        }
#else
        rc = pthread_mutex_clocklock(&sh->mutex, CLOCK_MONOTONIC, &abs);
#endif
        if (rc != ETIMEDOUT) {
            if (rc == 0 || rc == EOWNERDEAD)
                sh->wait_ns += (uint64_t)(ut_now_ns() - start);
            return rc;
        }
    }
}

int ut_lock_acquire(struct ut_lock *lock, const char *file, int line)
{
    struct ut_shlock *sh = lock->sh;
    uint64_t id = sh->id;

    for (int i = n_held - 1; i >= 0; i--) {
        if (held[i].id == id) {
            held[i].depth++;
            return 0;
        }
    }
    if (n_held > 0 && held[n_held - 1].rank >= lock->rank)
        rank_violation(lock, file, line);
    UT_ASSERT(n_held < MAX_HELD);
    if (__atomic_load_n(&sh->broken, __ATOMIC_ACQUIRE)) {
        snprintf(last_error, sizeof last_error, "lock '%s': %s", lock->name,
                 ut_strerror(UT_ECORRUPT));
        return UT_ECORRUPT;
    }

    bool contended = false;
    int rc = pthread_mutex_trylock(&sh->mutex);
    if (rc == EBUSY) {
        contended = true;
        rc = wait_for_mutex(lock, file, line);
    }
    switch (rc) {
    case 0:
        break;
    case EOWNERDEAD: {
        sh->n_owner_died++;
        ut_log(UT_LOG_WARN, "lock '%s': previous holder (pid %u, '%s') died; recovering",
               lock->name, sh->owner_pid, sh->owner_name);
        /* The callback runs with the mutex held and may take the lock again
         * (the ODB's runs odb_check): record the hold first so that is
         * recursion, not a wait on ourselves until the timeout. */
        held[n_held++] = (struct held_lock){id, lock->name, lock->rank, 1, file, line};
        int err = lock->recover ? lock->recover(lock->recover_arg) : 0;
        n_held--;
        UT_ASSERT(held[n_held].id == id && held[n_held].depth == 1);
        if (err) {
            __atomic_store_n(&sh->broken, 1, __ATOMIC_RELEASE);
            snprintf(last_error, sizeof last_error, "lock '%s': recovery failed (%s)", lock->name,
                     ut_strerror(err));
            ut_log(UT_LOG_ERROR, "%s", last_error);
            /* Unlocking without pthread_mutex_consistent makes the mutex
             * permanently unrecoverable: nobody will read the bad data. */
            pthread_mutex_unlock(&sh->mutex);
            return UT_ECORRUPT;
        }
        pthread_mutex_consistent(&sh->mutex);
        break;
    }
    case ENOTRECOVERABLE:
        __atomic_store_n(&sh->broken, 1, __ATOMIC_RELEASE);
        snprintf(last_error, sizeof last_error, "lock '%s': %s", lock->name,
                 ut_strerror(UT_ECORRUPT));
        return UT_ECORRUPT;
    case ETIMEDOUT:
        return UT_ETIMEOUT;
    case EINTR:
        snprintf(last_error, sizeof last_error, "lock '%s': wait interrupted", lock->name);
        return UT_EINTR;
    default:
        snprintf(last_error, sizeof last_error, "lock '%s': %s", lock->name, strerror(rc));
        return -rc;
    }

    held[n_held++] = (struct held_lock){id, lock->name, lock->rank, 1, file, line};
    sh->n_acquired++;
    if (contended)
        sh->n_contended++;
    note_owner(sh, file, line);
    return 0;
}

static void run_release_hooks(int released_rank)
{
    if (in_release_hook)
        return;
    int top = n_held > 0 ? held[n_held - 1].rank : 0;
    for (int i = 0; i < MAX_HOOKS; i++) {
        ut_lock_release_hook_cb fn =
            atomic_load_explicit(&release_hooks[i].fn, memory_order_acquire);
        if (!fn)
            continue;
        int min_rank = atomic_load_explicit(&release_hooks[i].min_rank, memory_order_relaxed);
        /* Ranks only grow up the stack, so "no held lock of rank >= min"
         * is "the top is below min". */
        if (released_rank >= min_rank && top < min_rank) {
            in_release_hook = true;
            fn();
            in_release_hook = false;
        }
    }
}

void ut_lock_release(struct ut_lock *lock)
{
    struct ut_shlock *sh = lock->sh;
    uint64_t id = sh->id;
    int i = n_held - 1;
    while (i >= 0 && held[i].id != id)
        i--;
    UT_ASSERT(i >= 0); /* releasing a lock this thread does not hold */
    if (--held[i].depth > 0)
        return;
    __atomic_store_n(&sh->owner_pid, 0, __ATOMIC_RELAXED);
    int rank = held[i].rank;
    memmove(&held[i], &held[i + 1], (size_t)(n_held - i - 1) * sizeof held[0]);
    n_held--;
    pthread_mutex_unlock(&sh->mutex);
    run_release_hooks(rank);
}

bool ut_lock_held(const struct ut_lock *lock)
{
    uint64_t id = lock->sh->id;
    for (int i = 0; i < n_held; i++)
        if (held[i].id == id)
            return true;
    return false;
}

int ut_lock_top_rank(void)
{
    return n_held > 0 ? held[n_held - 1].rank : 0;
}

void ut_lock_set_release_hook(int min_rank, ut_lock_release_hook_cb hook)
{
    for (int i = 0; i < MAX_HOOKS; i++) {
        ut_lock_release_hook_cb cur = atomic_load(&release_hooks[i].fn);
        if (cur == hook || cur == NULL) {
            atomic_store(&release_hooks[i].min_rank, min_rank);
            atomic_store(&release_hooks[i].fn, hook);
            return;
        }
    }
    UT_ASSERT(!"too many lock release hooks");
}
