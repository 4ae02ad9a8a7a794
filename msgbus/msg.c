/*
 * msgbus/msg.c - the system-message ring: one shared-memory ring per
 * experiment of fixed-size message slots, its robust lock, readers that
 * follow by sequence number, a futex wait, and deferred posting.
 *
 * Place in the layers: msgbus uses only the base library. The client layer
 * opens the ring at connect, posts through it, flushes the deferred queue
 * at disconnect; the logger and the web page read and wait on it;
 * msglog.c copies it into SQLite.
 *
 * Layout: see the table in msgbus/mb_int.h (header at 64, lock at 256,
 * slots of 1088 bytes from 512; message seq s lives in slot s % n_slots).
 *
 * Posting (write_locked), under the ring lock:
 *   1. if the ring is full, first_seq++ (the oldest message is given up);
 *   2. slot.seq = 0 (the slot no longer claims any message);
 *   3. write time, type, pid, source, text into the slot;
 *   4. slot.seq = seq (release);
 *   5. last_seq = seq (release) - this publishes the message;
 *   6. futex_word++, and after the unlock FUTEX_WAKE if n_waiters > 0.
 * A half-written slot is never published, so recovery after a holder died
 * (recover_ring) only has to look at the one slot after last_seq: if it is
 * complete (the poster died between 4 and 5) it is published, otherwise it
 * is marked empty. Then every stored message is checked. ut_crash_point()
 * sits between the steps so tests can kill a poster at each of them.
 *
 * Readers copy out under the lock (mb_msg_read): a reader that fell more
 * than n_slots behind gets the oldest stored message and the number it
 * missed. mb_msg_last_seq and mb_msg_wait take no lock: last_seq is read
 * atomically, and the wait is a FUTEX_WAIT (shared, not private: the word
 * is in a segment mapped by many processes) on futex_word, in slices of
 * MB_MSG_WAIT_SLICE_MS so that ut_interrupt() is seen promptly. A waiter
 * announces itself in n_waiters before reading futex_word, and a poster
 * bumps futex_word before reading n_waiters (all sequentially consistent),
 * so a poster that sees no waiter makes no system call and no wake-up is
 * ever missed. A waiter killed inside the wait leaves n_waiters too high:
 * that costs later posters a useless FUTEX_WAKE, nothing else.
 *
 * Deferred posting (SPEC "messages never take locks out of order"): a post
 * from a thread that holds a lock of rank >= UT_RANK_MSG (the ODB lock, the
 * ring's own lock, a process-local lock) must not take the ring lock. The
 * formatted message goes into a queue of the thread instead (at most
 * MB_MSG_DEFER_MAX entries; when full, drops are counted on the newest
 * entry and reported after it). The queue is flushed, in order, by a
 * release hook (ut_lock_set_release_hook) when the thread drops its
 * outermost such lock, by mb_msg_flush, by mb_msgring_close, and by a
 * pthread key destructor at thread exit. A forked child forgets the
 * forking thread's queue (the parent posts those messages).
 *
 * Lifetime of a ring with deferred messages: every queued entry holds a
 * reference on its ring handle (ring->refs). mb_msgring_close drops the
 * opener's reference after flushing the caller's queue; the mapping goes
 * away only when the last reference does. So a queue never points at a
 * closed ring, and no thread ever touches another thread's queue.
 *
 * Locking rules: the ring lock (rank UT_RANK_MSG, name "msg") protects
 * first_seq, last_seq (writes), the slots and the n_posted/n_recovered/
 * n_discarded counters. No disk I/O and no allocation happen under it.
 * The deferred queue is thread-local and needs no lock.
 */
#include "msgbus/mb_int.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------------- */
/* Types                                                                   */
/* ---------------------------------------------------------------------- */

static const char *const type_names[MB_MSG_TYPE_MAX] = {
    [MB_MSG_ERROR] = "ERROR", [MB_MSG_INFO] = "INFO", [MB_MSG_DEBUG] = "DEBUG",
    [MB_MSG_USER] = "USER",   [MB_MSG_LOG] = "LOG",   [MB_MSG_TALK] = "TALK",
};

const char *mb_msg_type_name(enum mb_msg_type type)
{
    if ((unsigned)type >= MB_MSG_TYPE_MAX)
        return "INVALID";
    return type_names[type];
}

int mb_msg_type_from_name(const char *name, enum mb_msg_type *out)
{
    if (!name)
        return UT_EINVAL;
    for (int t = 0; t < MB_MSG_TYPE_MAX; t++) {
        if (strcasecmp(name, type_names[t]) == 0) {
            *out = (enum mb_msg_type)t;
            return 0;
        }
    }
    return UT_EINVAL;
}

/* ---------------------------------------------------------------------- */
/* A formatted message on its way into the ring                            */
/* ---------------------------------------------------------------------- */

struct pending {
    struct mb_msgring *ring;            /* queued: holds a reference on it */
    int64_t time_ns;                    /* CLOCK_REALTIME of the post call */
    uint32_t type;                      /* enum mb_msg_type, checked */
    uint32_t pid;                       /* poster */
    uint32_t text_len;                  /* <= MB_MSG_TEXT_MAX */
    uint32_t n_dropped_after;           /* queue-full drops after this entry */
    char source[MB_MSG_SOURCE_MAX + 1]; /* NUL-terminated */
    char text[MB_MSG_TEXT_MAX + 1];     /* NUL-terminated */
};

/* Formats the text into m->text, cutting it with "..." (never inside a
 * UTF-8 sequence) when it is longer than MB_MSG_TEXT_MAX. */
__attribute__((format(printf, 2, 0))) static void format_text(struct pending *m, const char *fmt,
                                                              va_list ap)
{
    int n = vsnprintf(m->text, sizeof m->text, fmt, ap);
    if (n < 0) {
        ut_strlcpy(m->text, "(message could not be formatted)", sizeof m->text);
        n = 0;
    }
    if ((size_t)n > MB_MSG_TEXT_MAX) {
        size_t cut = MB_MSG_TEXT_MAX - 3;
        while (cut > 0 && ((unsigned char)m->text[cut] & 0xc0) == 0x80)
            cut--;
        memcpy(m->text + cut, "...", 4);
    }
    m->text_len = (uint32_t)strlen(m->text);
}

static void set_source(struct pending *m, const char *source)
{
    if (!source)
        source = program_invocation_short_name;
    memset(m->source, 0, sizeof m->source);
    ut_strlcpy(m->source, source ? source : "", sizeof m->source);
}

/* ---------------------------------------------------------------------- */
/* Writing into the ring (ring lock held)                                  */
/* ---------------------------------------------------------------------- */

static bool slot_valid(const struct mb_msg_slot *s, uint64_t seq)
{
    uint64_t sseq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
    return sseq == seq && s->type < MB_MSG_TYPE_MAX && s->text_len <= MB_MSG_TEXT_MAX &&
           s->text[s->text_len] == '\0' && memchr(s->source, '\0', sizeof s->source) != NULL;
}

/* Writes m into the next slot and publishes it (steps 1-6 of the essay).
 * Cannot fail: the invariants were checked when the lock was taken. */
static void write_locked(struct mb_msgring *ring, const struct pending *m)
{
    struct mb_msg_header *h = ring->hdr;
    uint64_t first = h->first_seq;
    uint64_t last = __atomic_load_n(&h->last_seq, __ATOMIC_RELAXED);
    uint64_t seq = last + 1;
    struct mb_msg_slot *s = mb__msg_slot(ring, seq);

    ut_crash_point();
    if (last + 1 - first >= ring->n_slots) {
        __atomic_store_n(&h->first_seq, first + 1, __ATOMIC_RELEASE);
        ut_crash_point();
    }
    __atomic_store_n(&s->seq, 0, __ATOMIC_RELEASE);
    ut_crash_point();
    s->time_ns = m->time_ns;
    s->type = m->type;
    s->pid = m->pid;
    s->text_len = m->text_len;
    memcpy(s->source, m->source, sizeof s->source);
    size_t half = m->text_len / 2;
    memcpy(s->text, m->text, half);
    ut_crash_point();
    memcpy(s->text + half, m->text + half, m->text_len - half);
    s->text[m->text_len] = '\0';
    ut_crash_point();
    __atomic_store_n(&s->seq, seq, __ATOMIC_RELEASE);
    ut_crash_point();
    __atomic_store_n(&h->last_seq, seq, __ATOMIC_RELEASE);
    ut_crash_point();
    __atomic_store_n(&h->n_posted, h->n_posted + 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&h->futex_word, 1, __ATOMIC_SEQ_CST);
}

/* Wakes the waiters of the ring if any announced themselves. */
static void wake_waiters(struct mb_msgring *ring)
{
    struct mb_msg_header *h = ring->hdr;
    if (__atomic_load_n(&h->n_waiters, __ATOMIC_SEQ_CST) == 0)
        return;
    __atomic_add_fetch(&h->n_wakes, 1, __ATOMIC_RELAXED);
    syscall(SYS_futex, &h->futex_word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Checks the ring-wide invariants that the post and read paths rely on.
 * Returns 0 or UT_ECORRUPT. Lock held. */
static int ring_sane(const struct mb_msgring *ring)
{
    const struct mb_msg_header *h = ring->hdr;
    uint64_t first = h->first_seq;
    uint64_t last = __atomic_load_n(&h->last_seq, __ATOMIC_RELAXED);
    if (first == 0 || first > last + 1 || last + 1 - first > ring->n_slots ||
        last >= UINT64_MAX / 2)
        return UT_ECORRUPT;
    return 0;
}

/* The lock's recovery callback: makes the ring consistent after a holder
 * died, possibly in the middle of write_locked. Returns 0, or UT_ECORRUPT
 * when a stored message fails its checks (the lock layer then marks the
 * ring broken). */
static int recover_ring(void *arg)
{
    struct mb_msgring *ring = arg;
    struct mb_msg_header *h = ring->hdr;
    if (ring_sane(ring))
        return UT_ECORRUPT;
    uint64_t first = h->first_seq;
    uint64_t last = __atomic_load_n(&h->last_seq, __ATOMIC_RELAXED);
    uint64_t next = last + 1;
    struct mb_msg_slot *s = mb__msg_slot(ring, next);
    uint64_t sseq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
    __atomic_add_fetch(&h->n_recovered, 1, __ATOMIC_RELAXED);
    if (sseq == next && slot_valid(s, next) && next - first < ring->n_slots) {
        /* Complete but unpublished: the poster died just before step 5. */
        __atomic_store_n(&h->last_seq, next, __ATOMIC_RELEASE);
        __atomic_store_n(&h->n_posted, h->n_posted + 1, __ATOMIC_RELAXED);
        last = next;
        ut_log(UT_LOG_WARN, "message ring: published message %llu left complete by a dead poster",
               (unsigned long long)next);
    } else if (sseq != 0 && !(sseq >= first && sseq <= last)) {
        /* Half-written (or an evicted message's leftovers): not a message. */
        __atomic_store_n(&s->seq, 0, __ATOMIC_RELEASE);
        __atomic_add_fetch(&h->n_discarded, 1, __ATOMIC_RELAXED);
        ut_log(UT_LOG_WARN, "message ring: discarded a message half-written by a dead poster");
    }
    for (uint64_t seq = first; seq <= last; seq++) {
        if (!slot_valid(mb__msg_slot(ring, seq), seq)) {
            ut_log(UT_LOG_ERROR, "message ring: message %llu is damaged", (unsigned long long)seq);
            return UT_ECORRUPT;
        }
    }
    /* Whoever waits must look again: last_seq may have changed. */
    __atomic_add_fetch(&h->futex_word, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &h->futex_word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    return 0;
}

/* Takes the ring lock and checks the invariants. Returns 0 (locked) or an
 * error (not locked). */
static int lock_ring(struct mb_msgring *ring)
{
    int err = UT_LOCK(&ring->lock);
    if (err)
        return err;
    err = ring_sane(ring);
    if (err) {
        ut_lock_release(&ring->lock);
        ut_log(UT_LOG_ERROR, "message ring: inconsistent sequence counters");
    }
    return err;
}

/* Posts n messages to one ring under one lock acquisition, each followed
 * by its queue-overflow report when it has one. Returns 0 or the lock's
 * error, in which case nothing was posted. */
static int post_batch(struct mb_msgring *ring, const struct pending *m, size_t n)
{
    int err = lock_ring(ring);
    if (err)
        return err;
    for (size_t i = 0; i < n; i++) {
        write_locked(ring, &m[i]);
        if (m[i].n_dropped_after) {
            struct pending r = m[i];
            r.type = MB_MSG_ERROR;
            r.time_ns = ut_wall_ns();
            r.n_dropped_after = 0;
            int len = snprintf(r.text, sizeof r.text, "%u messages lost (deferred queue full)",
                               m[i].n_dropped_after);
            r.text_len = (uint32_t)(len > 0 ? len : 0);
            write_locked(ring, &r);
        }
    }
    ut_lock_release(&ring->lock);
    wake_waiters(ring);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Ring handles and references                                             */
/* ---------------------------------------------------------------------- */

static void ring_ref(struct mb_msgring *ring)
{
    atomic_fetch_add_explicit(&ring->refs, 1, memory_order_relaxed);
}

/* Drops n references; the last one unmaps the segment and frees the handle. */
static void ring_unref(struct mb_msgring *ring, long n)
{
    long before = atomic_fetch_sub_explicit(&ring->refs, n, memory_order_acq_rel);
    UT_ASSERT(before >= n);
    if (before == n) {
        ut_shm_close(&ring->shm);
        ut_free(ring);
    }
}

/* ---------------------------------------------------------------------- */
/* The per-thread deferred queue                                           */
/* ---------------------------------------------------------------------- */

struct defer_queue {
    struct pending *e; /* entries [0, n), oldest first; heap */
    size_t n;
    size_t cap;    /* grows by doubling up to MB_MSG_DEFER_MAX */
    bool flushing; /* a flush runs in this thread: do not re-enter */
};

static __thread struct defer_queue *tq;
static pthread_key_t queue_key;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
/* getpid(), cached (it is a real system call); 0 = not known yet, also in
 * a forked child (forget_queue_in_child). */
static atomic_uint cached_pid;

static int flush_queue(bool final);

/* Drops entries [from, n) of q, counting them lost when count_lost. */
static void drop_entries(struct defer_queue *q, size_t from, bool count_lost)
{
    for (size_t i = from; i < q->n; i++) {
        struct pending *e = &q->e[i];
        if (count_lost)
            __atomic_add_fetch(&e->ring->hdr->n_lost, 1 + (uint64_t)e->n_dropped_after,
                               __ATOMIC_RELAXED);
        ring_unref(e->ring, 1);
    }
    q->n = from;
}

/* Thread exit: post what is still queued, then free the queue. */
static void queue_destructor(void *arg)
{
    struct defer_queue *q = arg;
    tq = q;
    (void)flush_queue(true);
    ut_free(q->e);
    ut_free(q);
    tq = NULL;
}

/* In a forked child, the forking thread's queue belongs to the parent,
 * which will post it. */
static void forget_queue_in_child(void)
{
    atomic_store_explicit(&cached_pid, 0, memory_order_relaxed);
    struct defer_queue *q = tq;
    if (q) {
        drop_entries(q, 0, false);
        q->flushing = false;
    }
}

static void flush_hook(void)
{
    (void)flush_queue(false);
}

static void module_init(void)
{
    int rc = pthread_key_create(&queue_key, queue_destructor);
    UT_ASSERT(rc == 0);
    pthread_atfork(NULL, NULL, forget_queue_in_child);
    ut_lock_set_release_hook(UT_RANK_MSG, flush_hook);
}

/* The calling process's pid. The fork handler that forgets it is
 * registered by module_init, which every ring open runs first. */
static uint32_t self_pid(void)
{
    uint32_t pid = atomic_load_explicit(&cached_pid, memory_order_relaxed);
    if (!pid) {
        pid = (uint32_t)getpid();
        atomic_store_explicit(&cached_pid, pid, memory_order_relaxed);
    }
    return pid;
}

/* Queues a copy of *m for ring. Returns 0 (queued, or dropped and counted
 * because the queue is full) or UT_ENOMEM (dropped and counted). */
static int defer_post(struct mb_msgring *ring, const struct pending *m)
{
    struct mb_msg_header *h = ring->hdr;
    struct defer_queue *q = tq;
    if (!q) {
        q = ut_calloc(1, sizeof *q);
        if (!q || pthread_setspecific(queue_key, q) != 0) {
            ut_free(q);
            __atomic_add_fetch(&h->n_lost, 1, __ATOMIC_RELAXED);
            return UT_ENOMEM;
        }
        tq = q;
    }
    if (q->n == MB_MSG_DEFER_MAX) {
        q->e[q->n - 1].n_dropped_after++;
        __atomic_add_fetch(&h->n_lost, 1, __ATOMIC_RELAXED);
        return 0;
    }
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 8;
        if (cap > MB_MSG_DEFER_MAX)
            cap = MB_MSG_DEFER_MAX;
        struct pending *e = ut_realloc(q->e, cap * sizeof *e);
        if (!e) {
            if (q->n > 0) {
                q->e[q->n - 1].n_dropped_after++;
                __atomic_add_fetch(&h->n_lost, 1, __ATOMIC_RELAXED);
                return 0;
            }
            __atomic_add_fetch(&h->n_lost, 1, __ATOMIC_RELAXED);
            return UT_ENOMEM;
        }
        q->e = e;
        q->cap = cap;
    }
    ring_ref(ring);
    q->e[q->n] = *m;
    q->e[q->n].ring = ring;
    q->e[q->n].n_dropped_after = 0;
    q->n++;
    __atomic_add_fetch(&h->n_deferred, 1, __ATOMIC_RELAXED);
    return 0;
}

/* Posts the calling thread's queue, in order, one lock acquisition per run
 * of entries for the same ring. With final (thread exit), what cannot be
 * posted is dropped and counted; otherwise it stays queued. Returns 0 or
 * the first lock error. */
static int flush_queue(bool final)
{
    struct defer_queue *q = tq;
    if (!q || q->n == 0 || q->flushing)
        return 0;
    if (ut_lock_top_rank() >= UT_RANK_MSG) {
        if (final) {
            ut_log(UT_LOG_ERROR, "thread exits holding a lock: %zu deferred messages lost", q->n);
            drop_entries(q, 0, true);
        }
        return 0;
    }
    q->flushing = true;
    size_t i = 0;
    int err = 0;
    while (i < q->n) {
        struct mb_msgring *ring = q->e[i].ring;
        size_t j = i + 1;
        while (j < q->n && q->e[j].ring == ring)
            j++;
        err = post_batch(ring, &q->e[i], j - i);
        if (err)
            break;
        ring_unref(ring, (long)(j - i));
        i = j;
    }
    memmove(q->e, q->e + i, (q->n - i) * sizeof *q->e);
    q->n -= i;
    if (err && final) {
        ut_log(UT_LOG_ERROR, "thread exit: %zu deferred messages lost (%s)", q->n,
               ut_strerror(err));
        drop_entries(q, 0, true);
    }
    q->flushing = false;
    return err;
}

int mb_msg_flush(void)
{
    return flush_queue(false);
}

/* ---------------------------------------------------------------------- */
/* Opening and closing                                                     */
/* ---------------------------------------------------------------------- */

static uint64_t fingerprint(void)
{
    uint64_t f = 0x4d5347u;
    const uint64_t parts[] = {sizeof(struct mb_msg_header),
                              sizeof(struct mb_msg_slot),
                              sizeof(struct ut_shlock),
                              offsetof(struct mb_msg_header, lock),
                              MB_MSG_TEXT_MAX,
                              MB_MSG_SOURCE_MAX};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        f = (f ^ parts[i]) * 1099511628211ull;
    return f;
}

/* Checks that an attached segment's geometry matches its size before
 * anything is indexed through it. Returns 0 or UT_ECORRUPT. */
static int header_sane(const struct mb_msg_header *h, size_t size)
{
    if (h->n_slots < MB_MSG_MIN_SLOTS || h->n_slots > MB_MSG_MAX_SLOTS ||
        h->slot_size != MB_MSG_SLOT_SIZE || h->slots_off != MB_MSG_SLOTS_OFF ||
        (uint64_t)MB_MSG_SLOTS_OFF + (uint64_t)h->n_slots * MB_MSG_SLOT_SIZE > size)
        return UT_ECORRUPT;
    return 0;
}

int mb_msgring_open(const char *shm_name, unsigned flags, const struct mb_msgring_params *params,
                    struct mb_msgring **out)
{
    struct mb_msgring_params p = {MB_MSGRING_DEFAULT_SLOTS, 1, 10000};
    if (params) {
        if (params->n_slots)
            p.n_slots = params->n_slots;
        if (params->first_seq)
            p.first_seq = params->first_seq;
        if (params->lock_timeout_ms)
            p.lock_timeout_ms = params->lock_timeout_ms;
    }
    if (!shm_name || !out || p.n_slots < MB_MSG_MIN_SLOTS || p.n_slots > MB_MSG_MAX_SLOTS ||
        p.first_seq >= UINT64_MAX / 4)
        return UT_EINVAL;
    pthread_once(&init_once, module_init);

    struct mb_msgring *ring = ut_calloc(1, sizeof *ring);
    if (!ring)
        return UT_ENOMEM;
    size_t size = MB_MSG_SLOTS_OFF + (size_t)p.n_slots * MB_MSG_SLOT_SIZE;
    int err = ut_shm_open(&ring->shm, shm_name, size, MB_MSG_KIND, fingerprint(),
                          (flags & MB_MSGRING_CREATE) != 0, p.lock_timeout_ms);
    if (err)
        goto fail_free;
    struct mb_msg_header *h =
        (struct mb_msg_header *)(void *)((uint8_t *)ring->shm.base + sizeof(struct ut_shm_header));
    if (ring->shm.created) {
        /* ftruncate gave zeroes: every slot is empty (seq 0). */
        err = ut_shlock_init(&h->lock);
        if (err)
            goto fail_unlink;
        h->n_slots = p.n_slots;
        h->slot_size = MB_MSG_SLOT_SIZE;
        h->slots_off = MB_MSG_SLOTS_OFF;
        h->first_seq = p.first_seq;
        h->last_seq = p.first_seq - 1;
        h->base_seq = p.first_seq;
        ut_shm_ready(&ring->shm);
    } else {
        err = header_sane(h, ring->shm.size);
        if (err)
            goto fail_close;
    }
    ring->hdr = h;
    ring->slots = (struct mb_msg_slot *)(void *)((uint8_t *)ring->shm.base + MB_MSG_SLOTS_OFF);
    ring->n_slots = h->n_slots;
    atomic_init(&ring->refs, 1);
    ut_lock_bind(&ring->lock, &h->lock, "msg", UT_RANK_MSG, p.lock_timeout_ms, recover_ring, ring);
    *out = ring;
    return 0;

fail_unlink:
    ut_shm_unlink(shm_name);
fail_close:
    ut_shm_close(&ring->shm);
fail_free:
    ut_free(ring);
    return err;
}

int mb_msgring_open_exp(const char *expdir, unsigned flags, const struct mb_msgring_params *params,
                        struct mb_msgring **out)
{
    char name[128];
    if (!expdir)
        return UT_EINVAL;
    int err = ut_shm_name(expdir, "msg", name, sizeof name);
    if (err)
        return err;
    return mb_msgring_open(name, flags, params, out);
}

void mb_msgring_close(struct mb_msgring *ring)
{
    if (!ring)
        return;
    UT_ASSERT(!ut_lock_held(&ring->lock));
    (void)flush_queue(false);
    ring_unref(ring, 1);
}

int mb_msgring_destroy(const char *shm_name)
{
    if (!shm_name)
        return UT_EINVAL;
    return ut_shm_unlink(shm_name);
}

/* ---------------------------------------------------------------------- */
/* Posting                                                                 */
/* ---------------------------------------------------------------------- */

int mb_msg_vpost(struct mb_msgring *ring, enum mb_msg_type type, const char *source,
                 const char *fmt, va_list ap)
{
    if (!ring || !fmt || (unsigned)type >= MB_MSG_TYPE_MAX)
        return UT_EINVAL;
    struct pending m;
    m.ring = ring;
    m.time_ns = ut_wall_ns();
    m.type = (uint32_t)type;
    m.pid = self_pid();
    m.n_dropped_after = 0;
    set_source(&m, source);
    format_text(&m, fmt, ap);

    if (ut_lock_top_rank() >= UT_RANK_MSG)
        return defer_post(ring, &m);
    /* Older deferred messages of this thread go first. */
    (void)flush_queue(false);
    return post_batch(ring, &m, 1);
}

int mb_msg_post(struct mb_msgring *ring, enum mb_msg_type type, const char *source, const char *fmt,
                ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = mb_msg_vpost(ring, type, source, fmt, ap);
    va_end(ap);
    return err;
}

/* ---------------------------------------------------------------------- */
/* Reading and waiting                                                     */
/* ---------------------------------------------------------------------- */

int mb_msg_read(struct mb_msgring *ring, uint64_t after_seq, struct mb_msg *out, size_t max,
                size_t *n_out, uint64_t *n_missed_out)
{
    if (!ring || !n_out || (max && !out))
        return UT_EINVAL;
    int err = lock_ring(ring);
    if (err)
        return err;
    const struct mb_msg_header *h = ring->hdr;
    uint64_t first = h->first_seq;
    uint64_t last = __atomic_load_n(&h->last_seq, __ATOMIC_RELAXED);
    uint64_t start = after_seq + 1;
    uint64_t missed = 0;
    if (after_seq >= last) {
        start = last + 1;
    } else if (start < first) {
        missed = first - start;
        start = first;
    }
    size_t n = 0;
    for (uint64_t seq = start; seq <= last && n < max; seq++, n++) {
        const struct mb_msg_slot *s = mb__msg_slot(ring, seq);
        if (!slot_valid(s, seq)) {
            err = UT_ECORRUPT;
            break;
        }
        struct mb_msg *m = &out[n];
        m->seq = seq;
        m->time_ns = s->time_ns;
        m->type = (enum mb_msg_type)s->type;
        m->pid = s->pid;
        m->text_len = s->text_len;
        memcpy(m->source, s->source, sizeof m->source);
        m->source[MB_MSG_SOURCE_MAX] = '\0';
        memcpy(m->text, s->text, s->text_len);
        m->text[s->text_len] = '\0';
    }
    ut_lock_release(&ring->lock);
    if (err) {
        ut_log(UT_LOG_ERROR, "message ring: stored message %llu is damaged",
               (unsigned long long)start + n);
        return err;
    }
    *n_out = n;
    if (n_missed_out)
        *n_missed_out = missed;
    return 0;
}

uint64_t mb_msg_last_seq(struct mb_msgring *ring)
{
    return __atomic_load_n(&ring->hdr->last_seq, __ATOMIC_ACQUIRE);
}

int mb_msg_wait(struct mb_msgring *ring, uint64_t after_seq, int timeout_ms)
{
    if (!ring)
        return UT_EINVAL;
    struct mb_msg_header *h = ring->hdr;
    int64_t deadline = timeout_ms >= 0 ? ut_now_ns() + (int64_t)timeout_ms * 1000000 : 0;
    for (;;) {
        if (__atomic_load_n(&h->last_seq, __ATOMIC_ACQUIRE) > after_seq)
            return 0;
        if (ut_interrupted())
            return UT_EINTR;
        int64_t slice_ns = (int64_t)MB_MSG_WAIT_SLICE_MS * 1000000;
        if (timeout_ms >= 0) {
            int64_t left_ns = deadline - ut_now_ns();
            if (left_ns <= 0)
                return UT_ETIMEOUT;
            if (left_ns < slice_ns)
                slice_ns = left_ns;
        }
        struct timespec ts = {(time_t)(slice_ns / 1000000000), (long)(slice_ns % 1000000000)};
        __atomic_add_fetch(&h->n_waiters, 1, __ATOMIC_SEQ_CST);
        uint32_t word = __atomic_load_n(&h->futex_word, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&h->last_seq, __ATOMIC_SEQ_CST) <= after_seq)
            syscall(SYS_futex, &h->futex_word, FUTEX_WAIT, word, &ts, NULL, 0);
        __atomic_sub_fetch(&h->n_waiters, 1, __ATOMIC_SEQ_CST);
    }
}

int mb_msg_stats(struct mb_msgring *ring, struct mb_msg_stats *out)
{
    if (!ring || !out)
        return UT_EINVAL;
    const struct mb_msg_header *h = ring->hdr;
    struct mb_msg_stats s = {0};
    s.n_slots = ring->n_slots;
    s.last_seq = __atomic_load_n(&h->last_seq, __ATOMIC_ACQUIRE);
    s.first_seq = __atomic_load_n(&h->first_seq, __ATOMIC_ACQUIRE);
    s.n_posted = __atomic_load_n(&h->n_posted, __ATOMIC_RELAXED);
    s.n_deferred = __atomic_load_n(&h->n_deferred, __ATOMIC_RELAXED);
    s.n_lost = __atomic_load_n(&h->n_lost, __ATOMIC_RELAXED);
    s.n_wakes = __atomic_load_n(&h->n_wakes, __ATOMIC_RELAXED);
    s.n_recovered = __atomic_load_n(&h->n_recovered, __ATOMIC_RELAXED);
    s.n_discarded = __atomic_load_n(&h->n_discarded, __ATOMIC_RELAXED);
    *out = s;
    return 0;
}
