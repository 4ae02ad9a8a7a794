/*
 * msgbus/buffer.c - event buffers: named shared-memory rings of
 * MIDAS-layout events with many producers and many consumers.
 *
 * Place in the layers: msgbus uses only the base library. The client layer
 * (client/buffer.c) opens buffers for a connection, registers them under
 * /System/Buffers, publishes their statistics there, and makes the
 * watchdog call mb_buffer_remove_client for every buffer when it removes a
 * dead client.
 *
 * Layout: see the table in msgbus/mb_int.h (header at 64, lock at 512,
 * client table from 768, the ring from data_off). Positions are byte
 * counts since creation; the ring holds 16-byte aligned records (a 16-byte
 * record header, the 16-byte event header, the data), never split across
 * the end of the ring (a PAD record fills the end instead).
 *
 * Three positions order the ring: tail <= commit_pos <= head.
 *   - head: the next position to reserve. Moved only under the lock.
 *   - commit_pos: every record before it is finished (COMMITTED, DISCARDED
 *     or PAD). Moved without the lock by compare-and-swap (advance_commit),
 *     by whoever finishes a record, only over finished records.
 *   - tail: the oldest record kept. Moved only under the lock, by a
 *     producer that needs space (make_room).
 * Each consumer (a handle with requests) has a read position in its client
 * entry, a record boundary in [tail, commit_pos].
 *
 * Sending (reserve, copy, commit):
 *   1. Under the lock: if the new records do not fit between tail and
 *      tail + size, make_room evicts the oldest records. It may not pass
 *      commit_pos, nor the read position of a GET_ALL consumer or of a
 *      consumer that holds a zero-copy event (those block: the producer
 *      waits). A GET_SOME consumer behind the new tail is skipped forward:
 *      its read position is moved by compare-and-swap and the matching
 *      committed events it loses are added to its miss count (exact: the
 *      consumer moves its position with compare-and-swap too, so each event
 *      is either received or counted missed, never both). Then the record
 *      headers (state RESERVED, owner = our entry) are written, and only
 *      then head is moved. A batch reserves many records at once.
 *   2. Without the lock: the event header and data are copied in.
 *   3. Each record's state goes RESERVED -> COMMITTED (compare-and-swap:
 *      if it fails, the producer was removed and its record discarded) and
 *      advance_commit moves commit_pos over every finished record in a row.
 *      Consumers read up to commit_pos only, so events committed behind an
 *      unfinished reservation wait until it is finished or discarded.
 *
 * Receiving: a consumer reads its position, reads commit_pos, checks the
 * record header there (position tag, size, state), skips PAD, DISCARDED and
 * non-matching records, and copies the event out (or, zero-copy, marks its
 * position "pinned" with MB_BUF_PIN so no producer overwrites it). It then
 * moves its position by compare-and-swap. A GET_SOME consumer may be
 * skipped forward meanwhile and its copy overwritten: it re-reads its
 * position after reading the record (a seqlock-style check) and retries
 * when the swap fails. Consumers never take the lock.
 *
 * Waiting: producers wait for space, consumers for data, each on a futex
 * word in the segment (space_word, data_word; FUTEX_WAIT/WAKE, shared). A
 * waiter spins briefly (MB_BUF_SPIN_NS) watching the one value that blocks
 * it, then sleeps in slices of MB_BUF_WAIT_SLICE_MS so ut_interrupt() and
 * the timeout are honoured. The sleeper announces itself (n_*_waiters++)
 * before reading the futex word and re-checking its condition, and takes
 * itself off afterwards: only the sleeper clears its own announcement. A
 * waker first publishes its change (sequentially consistent), then reads
 * the waiter count and, only when it is not zero, bumps the word and calls
 * FUTEX_WAKE: no system call when nobody sleeps, and no lost wake-up.
 * Consumers, which advance at every event, wake sleeping producers only
 * when they reach space_target, the lowest position a sleeping producer
 * needs (it lowers space_target after announcing itself and reading the
 * word; a waker resets it only from the value it read, before bumping the
 * word, so a target lost to a reset always comes with a word change that
 * ends the sleeper's wait). Other changes (commits, removals, released
 * requests) wake unconditionally. A
 * waiter killed in its sleep leaves the count too high, which only costs
 * later wakers a useless FUTEX_WAKE.
 *
 * Dead clients: a producer killed between reserve and commit leaves a
 * RESERVED record that holds commit_pos back. mb_buffer_remove_client
 * (called by the watchdog for a dead client slot) discards it and moves
 * commit_pos on: every event committed after it is delivered, the partial
 * one never is. It also drops the dead client's read positions (a dead
 * GET_ALL consumer, or a consumer killed while holding a zero-copy event,
 * no longer blocks producers) and wakes every waiter. A process killed
 * while it holds the lock (in make_room, the record headers, the client
 * table) makes the next locker run recover_buffer: reserved records of
 * entries no longer in use are discarded, the whole ring and client table
 * are checked, commit_pos is moved on, and everyone is woken; a failed
 * check marks the buffer broken (UT_ECORRUPT). ut_crash_point() sits
 * between the steps of a send so tests can kill a producer at each.
 *
 * Locking rules: the buffer lock (rank UT_RANK_BUFFER, the lowest, name
 * "buffer") protects head, tail, the record headers' size/owner/tag, and
 * the client table's identity and requests. No allocation, I/O, message
 * posting or waiting happens under it. mb_buffer_send refuses to run when
 * the thread holds the buffer lock (waiting for space with it held would
 * stop the consumers' cleanup from ever freeing it: failure mode 3).
 * Nothing in this file posts a system message: problems go to ut_log, and
 * the client layer reports removals after the buffer lock is released.
 */
#include "msgbus/mb_int.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MB_BUF_SPIN_NS   50000 /* spin this long before sleeping on a futex */
#define MB_BUF_BATCH_MAX 256   /* events per reservation in a batched send */
#define MB_BUF_PAGE      4096u

/* ---------------------------------------------------------------------- */
/* Small helpers                                                           */
/* ---------------------------------------------------------------------- */

static uint64_t load64(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static uint32_t load32(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void add64(uint64_t *p, uint64_t v)
{
    __atomic_add_fetch(p, v, __ATOMIC_RELAXED);
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void futex_wake_all(uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static void futex_wait(uint32_t *word, uint32_t val, int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    syscall(SYS_futex, word, FUTEX_WAIT, val, &ts, NULL, 0);
}

/* Wakes the producers waiting for space, if any announced themselves. */
static void wake_space(struct mb_buffer *buf)
{
    struct mb_buf_header *h = buf->hdr;
    if (__atomic_load_n(&h->n_space_waiters, __ATOMIC_SEQ_CST) == 0)
        return;
    __atomic_add_fetch(&h->space_word, 1, __ATOMIC_SEQ_CST);
    add64(&h->n_wakes, 1);
    futex_wake_all(&h->space_word);
}

/* A consumer moved its read position to pos: wakes the sleeping producers
 * if one of them needs the consumers to reach a position <= pos (see
 * reserve_wait). Consumers that pass nothing a sleeper needs make no
 * system call. */
static void wake_space_at(struct mb_buffer *buf, uint64_t pos)
{
    struct mb_buf_header *h = buf->hdr;
    if (__atomic_load_n(&h->n_space_waiters, __ATOMIC_SEQ_CST) == 0)
        return;
    uint64_t target = __atomic_load_n(&h->space_target, __ATOMIC_SEQ_CST);
    if (pos < target)
        return;
    /* Reset only what we read: a lower target stored meanwhile stays. */
    __atomic_compare_exchange_n(&h->space_target, &target, MB_BUF_NONE, false, __ATOMIC_SEQ_CST,
                                __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&h->space_word, 1, __ATOMIC_SEQ_CST);
    add64(&h->n_wakes, 1);
    futex_wake_all(&h->space_word);
}

/* Lowers space_target to pos (never raises it). */
static void lower_space_target(struct mb_buffer *buf, uint64_t pos)
{
    uint64_t cur = __atomic_load_n(&buf->hdr->space_target, __ATOMIC_SEQ_CST);
    while (pos < cur && !__atomic_compare_exchange_n(&buf->hdr->space_target, &cur, pos, false,
                                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        ;
}

/* Wakes the consumers waiting for data, if any announced themselves. */
static void wake_data(struct mb_buffer *buf)
{
    struct mb_buf_header *h = buf->hdr;
    if (__atomic_load_n(&h->n_data_waiters, __ATOMIC_SEQ_CST) == 0)
        return;
    __atomic_add_fetch(&h->data_word, 1, __ATOMIC_SEQ_CST);
    add64(&h->n_wakes, 1);
    futex_wake_all(&h->data_word);
}

/* True when a record header of `size` bytes and tag `tag` may sit at
 * position pos: aligned, inside the ring, not crossing its end. */
static bool rec_fits_at(const struct mb_buffer *buf, uint64_t pos, uint64_t off, uint32_t size,
                        uint32_t tag)
{
    return size >= MB_BUF_REC_HDR && size % MB_BUF_ALIGN == 0 && pos % MB_BUF_ALIGN == 0 &&
           off + size <= buf->size && tag == mb__buf_tag(pos);
}

/* As rec_fits_at, computing the ring offset (a division: hot paths that
 * know the offset call rec_fits_at). */
static bool rec_fits(const struct mb_buffer *buf, uint64_t pos, uint32_t size, uint32_t tag)
{
    return rec_fits_at(buf, pos, pos % buf->size, size, tag);
}

/* Writes a record header at pos (lock held); the state goes last. */
static void rec_write(struct mb_buffer *buf, uint64_t pos, uint32_t state, uint32_t size,
                      uint32_t owner)
{
    struct mb_buf_rec *r = mb__buf_rec(buf, pos);
    __atomic_store_n(&r->size, size, __ATOMIC_RELAXED);
    __atomic_store_n(&r->owner, owner, __ATOMIC_RELAXED);
    __atomic_store_n(&r->tag, mb__buf_tag(pos), __ATOMIC_RELAXED);
    __atomic_store_n(&r->state, state, __ATOMIC_RELEASE);
}

static bool request_matches(const struct mb_buf_request *r, const struct mb_event_header *e)
{
    return (r->event_id == MB_EVENT_ID_ALL || r->event_id == e->event_id) &&
           (r->trigger_mask == MB_TRIGGER_ALL || (r->trigger_mask & e->trigger_mask) != 0);
}

static bool requests_match(const struct mb_buf_request *reqs, uint32_t n,
                           const struct mb_event_header *e)
{
    for (uint32_t i = 0; i < n; i++)
        if (request_matches(&reqs[i], e))
            return true;
    return false;
}

/* True when our client entry is still ours (not removed). */
static bool entry_ours(const struct mb_buffer *buf)
{
    return buf->me && __atomic_load_n(&buf->me->gen, __ATOMIC_ACQUIRE) == buf->gen &&
           __atomic_load_n(&buf->me->in_use, __ATOMIC_ACQUIRE) == 1;
}

/* ---------------------------------------------------------------------- */
/* Committing                                                              */
/* ---------------------------------------------------------------------- */

/* Moves commit_pos over every finished record in a row, then wakes
 * consumers (and producers blocked on commit_pos). Lock-free; safe to run
 * from any number of processes at once: it walks from the commit_pos it
 * read over records it sees finished and moves commit_pos with one
 * compare-and-swap from that value to the end of the run (a failed swap
 * means someone else moved it: walk again from the new value). */
static void advance_commit(struct mb_buffer *buf)
{
    struct mb_buf_header *h = buf->hdr;
    bool moved = false;
    uint64_t c = load64(&h->commit_pos);
    for (;;) {
        uint64_t head = load64(&h->head);
        uint64_t end = c, off = c % buf->size;
        while (end < head) {
            struct mb_buf_rec *r = (struct mb_buf_rec *)(void *)(buf->ring + off);
            uint32_t st = __atomic_load_n(&r->state, __ATOMIC_SEQ_CST);
            uint32_t size = load32(&r->size);
            if ((st != MB_REC_COMMITTED && st != MB_REC_DISCARDED && st != MB_REC_PAD) ||
                !rec_fits_at(buf, end, off, size, load32(&r->tag)) || end + size > head)
                break; /* unfinished (or a stale view, which the swap rejects) */
            end += size;
            off += size;
            if (off == buf->size)
                off = 0;
        }
        if (end == c) {
            /* Nothing finished here: done, unless commit_pos moved. */
            uint64_t now = load64(&h->commit_pos);
            if (now == c)
                break;
            c = now;
            continue;
        }
        if (__atomic_compare_exchange_n(&h->commit_pos, &c, end, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST)) {
            moved = true;
            c = end;
        }
    }
    if (moved) {
        wake_data(buf);
        wake_space(buf);
    }
}

/* ---------------------------------------------------------------------- */
/* The lock and recovery                                                   */
/* ---------------------------------------------------------------------- */

/* Discards the RESERVED records in [commit_pos, head) owned by entry
 * `index` (or, with index UINT32_MAX, by any entry not in use). Lock held.
 * Returns how many were discarded. */
static uint64_t discard_reservations(struct mb_buffer *buf, uint32_t index)
{
    struct mb_buf_header *h = buf->hdr;
    uint64_t head = h->head, n = 0;
    uint64_t p = load64(&h->commit_pos);
    while (p < head) {
        struct mb_buf_rec *r = mb__buf_rec(buf, p);
        uint32_t size = load32(&r->size);
        if (!rec_fits(buf, p, size, load32(&r->tag)) || p + size > head)
            break; /* the check reports it */
        uint32_t owner = load32(&r->owner);
        bool orphan = index == UINT32_MAX &&
                      (owner >= buf->max_clients || !load32(&buf->clients[owner].in_use));
        if (owner == index || orphan) {
            uint32_t st = MB_REC_RESERVED;
            if (__atomic_compare_exchange_n(&r->state, &st, MB_REC_DISCARDED, false,
                                            __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
                n++;
        }
        p += size;
    }
    if (n)
        add64(&h->n_discarded, n);
    return n;
}

/* The lock's recovery callback, run by the next locker after a holder
 * died: discards reservations of entries no longer in use, checks the
 * whole buffer, moves commit_pos on and wakes everyone. Returns 0 or
 * UT_ECORRUPT (the lock layer then marks the buffer broken). */
static int recover_buffer(void *arg)
{
    struct mb_buffer *buf = arg;
    struct mb_buf_header *h = buf->hdr;
    char report[256];
    add64(&h->n_recovered, 1);
    uint64_t head = h->head, tail = h->tail, commit = load64(&h->commit_pos);
    if (tail > commit || commit > head || head - tail > buf->size) {
        ut_log(UT_LOG_ERROR, "event buffer '%s': inconsistent positions after a holder died",
               buf->name);
        return UT_ECORRUPT;
    }
    uint64_t n = discard_reservations(buf, UINT32_MAX);
    int err = mb__buffer_check_locked(buf, report, sizeof report);
    if (err) {
        ut_log(UT_LOG_ERROR, "event buffer '%s': damaged after a holder died: %s", buf->name,
               report);
        return err;
    }
    ut_log(UT_LOG_WARN,
           "event buffer '%s': recovered after a holder died (%llu orphan "
           "reservations discarded)",
           buf->name, (unsigned long long)n);
    advance_commit(buf);
    __atomic_add_fetch(&h->space_word, 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&h->data_word, 1, __ATOMIC_SEQ_CST);
    futex_wake_all(&h->space_word);
    futex_wake_all(&h->data_word);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Reserving space (lock held)                                             */
/* ---------------------------------------------------------------------- */

/* What a producer that found no space waits for: the value `word` had. */
struct blocker {
    uint64_t *word;
    uint64_t value;
    uint64_t target; /* the position the blocking consumers must reach */
};

/* Counts the committed events in [from, to) that entry e's requests match.
 * Lock held; the records there are finished and stay put. */
static uint64_t count_matching(struct mb_buffer *buf, const struct mb_buf_client *e, uint64_t from,
                               uint64_t to)
{
    uint64_t n = 0;
    uint32_t nreq = load32(&e->n_requests);
    if (nreq > MB_BUFFER_MAX_REQUESTS)
        nreq = MB_BUFFER_MAX_REQUESTS;
    while (from < to) {
        struct mb_buf_rec *r = mb__buf_rec(buf, from);
        uint32_t size = load32(&r->size);
        if (!rec_fits(buf, from, size, load32(&r->tag)))
            break;
        if (__atomic_load_n(&r->state, __ATOMIC_ACQUIRE) == MB_REC_COMMITTED) {
            struct mb_event_header ev;
            memcpy(&ev, (const uint8_t *)r + MB_BUF_REC_HDR, sizeof ev);
            if (requests_match(e->requests, nreq, &ev))
                n++;
        }
        from += size;
    }
    return n;
}

/* Moves tail to the first record boundary >= target, skipping GET_SOME
 * consumers behind it. Returns 0, MB_EFULL (commit_pos or a blocking
 * consumer is in the way: *b says which value to wait on) or UT_ECORRUPT.
 * On MB_EFULL, tail is unchanged (skipped consumers stay skipped). */
static int make_room(struct mb_buffer *buf, uint64_t target, struct blocker *b)
{
    struct mb_buf_header *h = buf->hdr;
    for (;;) {
        uint64_t tail = h->tail;
        uint64_t limit = load64(&h->commit_pos);
        *b = (struct blocker){&h->commit_pos, limit, target};
        uint32_t n_used = load32(&h->n_used);
        for (uint32_t i = 0; i < n_used; i++) {
            struct mb_buf_client *e = &buf->clients[i];
            if (!load32(&e->in_use))
                continue;
            uint64_t rp = load64(&e->read_pos);
            if (rp == MB_BUF_NONE)
                continue;
            if ((rp & MB_BUF_PIN) || (load32(&e->flags) & MB_BUF_CF_GETALL)) {
                uint64_t p = rp & ~MB_BUF_PIN;
                if (p < limit) {
                    limit = p;
                    *b = (struct blocker){&e->read_pos, rp, target};
                }
            }
        }
        uint64_t nt = tail;
        while (nt < target) {
            if (nt >= limit)
                return MB_EFULL;
            struct mb_buf_rec *r = mb__buf_rec(buf, nt);
            uint32_t size = load32(&r->size);
            if (!rec_fits(buf, nt, size, load32(&r->tag)))
                return UT_ECORRUPT;
            nt += size;
        }
        bool again = false;
        for (uint32_t i = 0; i < n_used && !again; i++) {
            struct mb_buf_client *e = &buf->clients[i];
            if (!load32(&e->in_use))
                continue;
            for (;;) {
                uint64_t rp = load64(&e->read_pos);
                if (rp == MB_BUF_NONE || rp >= nt)
                    break;
                if ((rp & MB_BUF_PIN) || (load32(&e->flags) & MB_BUF_CF_GETALL)) {
                    again = true; /* pinned since we looked: compute again */
                    break;
                }
                uint64_t missed = count_matching(buf, e, rp, nt);
                if (__atomic_compare_exchange_n(&e->read_pos, &rp, nt, false, __ATOMIC_SEQ_CST,
                                                __ATOMIC_SEQ_CST)) {
                    add64(&e->n_missed, missed);
                    break;
                }
            }
        }
        if (again)
            continue;
        ut_crash_point();
        __atomic_store_n(&h->tail, nt, __ATOMIC_RELEASE);
        return 0;
    }
}

/* Reserves n records of sizes[i] bytes (total bytes in all) for our
 * entry: *first_out gets the position of the first; they follow each
 * other. Lock held. Returns 0, MB_EFULL (with *b) or UT_ECORRUPT; nothing
 * changes on error except skipped GET_SOME consumers. */
static int reserve_locked(struct mb_buffer *buf, const uint32_t *sizes, size_t n, uint64_t total,
                          uint64_t *first_out, struct blocker *b)
{
    struct mb_buf_header *h = buf->hdr;
    uint64_t head = h->head, tail = h->tail, size = buf->size;
    uint64_t off = head % size;
    uint64_t pad = off + total > size ? size - off : 0;
    uint64_t new_head = head + pad + total;
    if (new_head - tail > size) {
        int err = make_room(buf, new_head - size, b);
        if (err)
            return err;
    }
    if (pad)
        rec_write(buf, head, MB_REC_PAD, (uint32_t)pad, buf->index);
    uint64_t p = head + pad;
    for (size_t i = 0; i < n; i++) {
        rec_write(buf, p, MB_REC_RESERVED, sizes[i], buf->index);
        p += sizes[i];
    }
    ut_crash_point();
    __atomic_store_n(&h->head, new_head, __ATOMIC_SEQ_CST);
    *first_out = head + pad;
    return 0;
}

/* Returns true as soon as *word differs from value, false once the clock
 * passes end_ns. Yields the CPU now and then, so a spinner does not starve
 * the process it waits for on a busy machine. */
static bool spin_until_changed(const uint64_t *word, uint64_t value, int64_t end_ns)
{
    for (unsigned i = 1;; i++) {
        if (load64(word) != value)
            return true;
        cpu_relax();
        if (i % 64 == 0) {
            if (ut_now_ns() >= end_ns)
                return false;
            if (i % 1024 == 0)
                sched_yield();
        }
    }
}

/* Takes the lock, refusing use of a removed handle. Returns 0 (locked) or
 * an error (not locked). */
static int lock_buf(struct mb_buffer *buf)
{
    int err = UT_LOCK(&buf->lock);
    if (err)
        return err;
    if (!entry_ours(buf)) {
        ut_lock_release(&buf->lock);
        return MB_EREMOVED;
    }
    return 0;
}

/* Reserves the records, waiting for space as the essay says. Returns 0,
 * MB_EFULL, UT_EINTR, MB_EREMOVED, UT_ECORRUPT or a lock error. */
static int reserve_wait(struct mb_buffer *buf, const uint32_t *sizes, size_t n, uint64_t total,
                        uint64_t *first_out, int timeout_ms)
{
    struct mb_buf_header *h = buf->hdr;
    int64_t deadline = timeout_ms > 0 ? ut_now_ns() + (int64_t)timeout_ms * 1000000 : 0;
    int64_t spin_end = 0; /* end of the current spin phase; 0: none yet */
    bool counted = false;
    for (;;) {
        struct blocker b;
        int err = lock_buf(buf);
        if (err)
            return err;
        err = reserve_locked(buf, sizes, n, total, first_out, &b);
        ut_lock_release(&buf->lock);
        if (err != MB_EFULL)
            return err;
        if (!counted) {
            add64(&h->n_full_waits, 1);
            counted = true;
        }
        if (timeout_ms == 0)
            return MB_EFULL;
        /* Spin while the blocker keeps moving, up to MB_BUF_SPIN_NS per
         * phase: a consumer reading along frees space within microseconds,
         * cheaper than a sleep and a wake-up call. */
        if (!spin_end)
            spin_end = ut_now_ns() + MB_BUF_SPIN_NS;
        if (spin_until_changed(b.word, b.value, spin_end))
            continue;
        if (ut_interrupted())
            return UT_EINTR;
        int64_t slice = (int64_t)MB_BUF_WAIT_SLICE_MS * 1000000;
        if (timeout_ms > 0) {
            int64_t left = deadline - ut_now_ns();
            if (left <= 0)
                return MB_EFULL;
            if (left < slice)
                slice = left;
        }
        /* Announce, read the word, then publish what we need: a consumer
         * that resets space_target after we lowered it also bumps the
         * word after we read it, so our futex wait returns at once. */
        __atomic_add_fetch(&h->n_space_waiters, 1, __ATOMIC_SEQ_CST);
        uint32_t word = __atomic_load_n(&h->space_word, __ATOMIC_SEQ_CST);
        lower_space_target(buf, b.target);
        if (load64(b.word) == b.value && entry_ours(buf))
            futex_wait(&h->space_word, word, slice);
        __atomic_sub_fetch(&h->n_space_waiters, 1, __ATOMIC_SEQ_CST);
        spin_end = 0;
        /* A committer that died between its state store and commit_pos
         * leaves commit_pos behind: anyone waiting moves it on. */
        advance_commit(buf);
    }
}

/* ---------------------------------------------------------------------- */
/* Sending                                                                 */
/* ---------------------------------------------------------------------- */

uint32_t mb_buffer_max_event(const struct mb_buffer *buf)
{
    uint64_t m = buf->size / 2 - MB_BUF_REC_HDR - sizeof(struct mb_event_header);
    return m > UINT32_MAX ? UINT32_MAX : (uint32_t)m;
}

/* Copies event ev into the reserved record r. */
static void copy_in(uint8_t *r, const struct mb_event_header *hdr, const void *data,
                    bool crash_points)
{
    memcpy(r + MB_BUF_REC_HDR, hdr, sizeof *hdr);
    uint8_t *d = r + MB_BUF_REC_HDR + sizeof *hdr;
    if (!crash_points) {
        if (hdr->data_size)
            memcpy(d, data, hdr->data_size);
        return;
    }
    size_t half = hdr->data_size / 2;
    if (half)
        memcpy(d, data, half);
    ut_crash_point();
    if (hdr->data_size - half)
        memcpy(d + half, (const uint8_t *)data + half, hdr->data_size - half);
}

/* Marks record r committed. Returns 0 or MB_EREMOVED (it was discarded:
 * our entry was removed). */
static int commit_one(struct mb_buf_rec *r)
{
    uint32_t st = MB_REC_RESERVED;
    if (!__atomic_compare_exchange_n(&r->state, &st, MB_REC_COMMITTED, false, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST))
        return MB_EREMOVED;
    return 0;
}

int mb_buffer_send_batch(struct mb_buffer *buf, const struct mb_event *events, size_t n,
                         size_t *n_sent, int timeout_ms)
{
    size_t done = 0;
    int err = 0;
    if (!buf || !buf->me || (n && !events)) {
        err = UT_EINVAL;
        goto out;
    }
    if (ut_lock_held(&buf->lock)) {
        err = UT_EBUSY;
        goto out;
    }
    uint32_t max_event = mb_buffer_max_event(buf);
    uint64_t max_span = buf->size / 2;
    uint32_t sizes[MB_BUF_BATCH_MAX];
    while (done < n) {
        size_t k = 0;
        uint64_t total = 0;
        while (done + k < n && k < MB_BUF_BATCH_MAX) {
            const struct mb_event *ev = &events[done + k];
            if (ev->hdr.data_size && !ev->data) {
                err = UT_EINVAL;
                break;
            }
            if (ev->hdr.data_size > max_event) {
                err = MB_ETOOBIG;
                break;
            }
            uint64_t rs = mb__buf_rec_size(ev->hdr.data_size);
            if (total + rs > max_span)
                break;
            sizes[k++] = (uint32_t)rs;
            total += rs;
        }
        if (k == 0)
            goto out;
        uint64_t pos;
        int rerr = reserve_wait(buf, sizes, k, total, &pos, timeout_ms);
        if (rerr) {
            err = rerr;
            goto out;
        }
        ut_crash_point();
        /* The records of one reservation are contiguous in the ring. */
        uint8_t *first = (uint8_t *)mb__buf_rec(buf, pos), *r = first;
        uint64_t bytes = 0;
        for (size_t i = 0; i < k; i++) {
            const struct mb_event *ev = &events[done + i];
            copy_in(r, &ev->hdr, ev->data, i == 0);
            bytes += ev->hdr.data_size;
            r += sizes[i];
        }
        ut_crash_point();
        r = first;
        int cerr = 0;
        for (size_t i = 0; i < k; i++) {
            int e1 = commit_one((struct mb_buf_rec *)(void *)r);
            if (e1 && !cerr)
                cerr = e1;
            r += sizes[i];
        }
        ut_crash_point();
        advance_commit(buf);
        if (cerr) {
            err = cerr;
            goto out;
        }
        if (!(load32(&buf->me->flags) & MB_BUF_CF_PRODUCER))
            __atomic_or_fetch(&buf->me->flags, MB_BUF_CF_PRODUCER, __ATOMIC_RELAXED);
        add64(&buf->me->n_sent, k);
        add64(&buf->me->bytes_sent, bytes);
        done += k;
        if (err) /* a bad event follows the ones just sent */
            goto out;
    }
out:
    if (n_sent)
        *n_sent = done;
    return err;
}

int mb_buffer_send(struct mb_buffer *buf, const struct mb_event_header *hdr, const void *data,
                   int timeout_ms)
{
    if (!hdr)
        return UT_EINVAL;
    struct mb_event ev = {*hdr, data};
    return mb_buffer_send_batch(buf, &ev, 1, NULL, timeout_ms);
}

/* ---------------------------------------------------------------------- */
/* Receiving                                                               */
/* ---------------------------------------------------------------------- */

/* Finds the next event for us: moves our read position over PAD,
 * DISCARDED and non-matching records, and stops at a committed matching
 * one, whose position, record size and header copy it returns. Consumes
 * nothing of it. Returns 0, MB_EEMPTY (*pos_out = our position),
 * MB_ENOREQ, MB_EREMOVED or UT_ECORRUPT. */
static int find_next(struct mb_buffer *buf, uint64_t *pos_out, uint32_t *size_out,
                     struct mb_event_header *ev, const uint8_t **rec_out)
{
    struct mb_buf_client *me = buf->me;
    uint64_t moved = 0; /* where we moved our position to, 0: nowhere */
    int err;
    for (;;) {
        uint64_t rp = load64(&me->read_pos);
        if (!entry_ours(buf)) {
            err = MB_EREMOVED;
            break;
        }
        if (rp == MB_BUF_NONE) {
            err = buf->n_requests ? MB_EREMOVED : MB_ENOREQ;
            break;
        }
        if (rp & MB_BUF_PIN) {
            err = UT_EINVAL;
            break;
        }
        uint64_t commit = load64(&buf->hdr->commit_pos);
        if (rp >= commit) {
            *pos_out = rp;
            err = MB_EEMPTY;
            break;
        }
        uint64_t off = rp % buf->size;
        struct mb_buf_rec *r = (struct mb_buf_rec *)(void *)(buf->ring + off);
        uint32_t st = __atomic_load_n(&r->state, __ATOMIC_ACQUIRE);
        uint32_t size = load32(&r->size);
        bool valid = rec_fits_at(buf, rp, off, size, load32(&r->tag)) && rp + size <= commit &&
                     (st == MB_REC_COMMITTED || st == MB_REC_DISCARDED || st == MB_REC_PAD);
        if (valid && st == MB_REC_COMMITTED) {
            memcpy(ev, (const uint8_t *)r + MB_BUF_REC_HDR, sizeof *ev);
            valid = mb__buf_rec_size(ev->data_size) == size;
        }
        /* What we read may be a record being overwritten if a producer
         * skipped us meanwhile: every use below ends in a compare-and-swap
         * from rp, which then fails. Only an invalid record needs the
         * seqlock-style re-check before it is called damage (a read-
         * modify-write adding 0: it orders the reads above before it
         * without a fence, which TSan does not model). */
        if (!valid && __atomic_fetch_add(&me->read_pos, 0, __ATOMIC_SEQ_CST) != rp)
            continue;
        if (!valid) {
            ut_log(UT_LOG_ERROR, "event buffer '%s': bad record at position %llu", buf->name,
                   (unsigned long long)rp);
            err = UT_ECORRUPT;
            break;
        }
        if (st == MB_REC_COMMITTED && requests_match(buf->requests, buf->n_requests, ev)) {
            *pos_out = rp;
            *size_out = size;
            *rec_out = (const uint8_t *)r;
            err = 0;
            break;
        }
        if (__atomic_compare_exchange_n(&me->read_pos, &rp, rp + size, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST))
            moved = rp + size;
    }
    if (moved)
        wake_space_at(buf, moved);
    return err;
}

/* Waits until commit_pos passes pos or our read position moves, spinning
 * first, at most until deadline (0: no limit). Returns 0, MB_EEMPTY or
 * UT_EINTR. */
static int wait_data(struct mb_buffer *buf, uint64_t pos, int64_t deadline)
{
    struct mb_buf_header *h = buf->hdr;
    struct mb_buf_client *me = buf->me;
    int64_t spin_end = 0;
    for (unsigned i = 1;; i++) {
        if (load64(&h->commit_pos) > pos || load64(&me->read_pos) != pos)
            return 0;
        cpu_relax();
        if (i % 64 == 0) {
            int64_t now = ut_now_ns();
            if (!spin_end)
                spin_end = now + MB_BUF_SPIN_NS;
            else if (now >= spin_end)
                break;
            if (i % 1024 == 0)
                sched_yield();
        }
    }
    for (;;) {
        if (ut_interrupted())
            return UT_EINTR;
        int64_t slice = (int64_t)MB_BUF_WAIT_SLICE_MS * 1000000;
        if (deadline) {
            int64_t left = deadline - ut_now_ns();
            if (left <= 0)
                return MB_EEMPTY;
            if (left < slice)
                slice = left;
        }
        __atomic_add_fetch(&h->n_data_waiters, 1, __ATOMIC_SEQ_CST);
        uint32_t word = __atomic_load_n(&h->data_word, __ATOMIC_SEQ_CST);
        bool ready =
            load64(&h->commit_pos) > pos || load64(&me->read_pos) != pos || !entry_ours(buf);
        if (!ready)
            futex_wait(&h->data_word, word, slice);
        __atomic_sub_fetch(&h->n_data_waiters, 1, __ATOMIC_SEQ_CST);
        if (ready)
            return 0;
        /* A committer that died after its state store leaves commit_pos
         * behind: move it on ourselves. */
        advance_commit(buf);
        if (load64(&h->commit_pos) > pos || load64(&me->read_pos) != pos || !entry_ours(buf))
            return 0;
    }
}

/* Finds the next event, waiting up to timeout_ms. Returns as find_next,
 * and UT_EINTR. */
static int next_event(struct mb_buffer *buf, int timeout_ms, uint64_t *pos_out, uint32_t *size_out,
                      struct mb_event_header *ev, const uint8_t **rec_out)
{
    int64_t deadline = timeout_ms > 0 ? ut_now_ns() + (int64_t)timeout_ms * 1000000 : 0;
    for (;;) {
        uint64_t pos = 0;
        int err = find_next(buf, &pos, size_out, ev, rec_out);
        if (err != MB_EEMPTY) {
            *pos_out = pos;
            return err;
        }
        if (timeout_ms == 0)
            return MB_EEMPTY;
        err = wait_data(buf, pos, deadline);
        if (err)
            return err;
    }
}

/* Consumed one event of data_size bytes, our position now at pos:
 * counters and wake-up. The counters have one writer (this handle; one
 * thread at a time), so they are updated with plain atomic stores, not
 * read-modify-writes. */
static void consumed(struct mb_buffer *buf, uint32_t data_size, uint64_t pos)
{
    struct mb_buf_client *me = buf->me;
    __atomic_store_n(&me->n_received, __atomic_load_n(&me->n_received, __ATOMIC_RELAXED) + 1,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&me->bytes_received,
                     __atomic_load_n(&me->bytes_received, __ATOMIC_RELAXED) + data_size,
                     __ATOMIC_RELAXED);
    wake_space_at(buf, pos);
}

int mb_buffer_receive(struct mb_buffer *buf, struct mb_event_header *hdr, void *data, size_t *size,
                      int timeout_ms)
{
    if (!buf || !buf->me || !hdr || !size || (*size && !data))
        return UT_EINVAL;
    if (buf->held_pos != MB_BUF_NONE)
        return UT_EINVAL;
    for (;;) {
        uint64_t pos;
        uint32_t rec_size;
        struct mb_event_header ev;
        const uint8_t *rec = NULL;
        int err = next_event(buf, timeout_ms, &pos, &rec_size, &ev, &rec);
        if (err)
            return err;
        if (ev.data_size > *size) {
            /* Only if the header we read is still the event at our position. */
            if (__atomic_fetch_add(&buf->me->read_pos, 0, __ATOMIC_SEQ_CST) != pos)
                continue;
            *size = ev.data_size;
            return MB_ETRUNC;
        }
        const uint8_t *src = rec + MB_BUF_REC_HDR + sizeof(struct mb_event_header);
        if (ev.data_size)
            memcpy(data, src, ev.data_size);
        uint64_t expect = pos;
        if (!__atomic_compare_exchange_n(&buf->me->read_pos, &expect, pos + rec_size, false,
                                         __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            continue; /* skipped meanwhile: the copy may be torn, take the next */
        *hdr = ev;
        *size = ev.data_size;
        consumed(buf, ev.data_size, pos + rec_size);
        return 0;
    }
}

int mb_buffer_receive_begin(struct mb_buffer *buf, const struct mb_event_header **hdr_out,
                            const void **data_out, int timeout_ms)
{
    if (!buf || !buf->me || !hdr_out || !data_out || buf->held_pos != MB_BUF_NONE)
        return UT_EINVAL;
    for (;;) {
        uint64_t pos;
        uint32_t rec_size;
        struct mb_event_header ev;
        const uint8_t *rec = NULL;
        int err = next_event(buf, timeout_ms, &pos, &rec_size, &ev, &rec);
        if (err)
            return err;
        uint64_t expect = pos;
        if (!__atomic_compare_exchange_n(&buf->me->read_pos, &expect, pos | MB_BUF_PIN, false,
                                         __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            continue;
        buf->held_pos = pos;
        buf->held_size = rec_size;
        const uint8_t *r = rec;
        *hdr_out = (const struct mb_event_header *)(const void *)(r + MB_BUF_REC_HDR);
        *data_out = r + MB_BUF_REC_HDR + sizeof(struct mb_event_header);
        return 0;
    }
}

int mb_buffer_receive_end(struct mb_buffer *buf)
{
    if (!buf || buf->held_pos == MB_BUF_NONE)
        return UT_EINVAL;
    uint64_t pos = buf->held_pos;
    const struct mb_event_header *ev =
        (const struct mb_event_header *)(const void *)((const uint8_t *)mb__buf_rec(buf, pos) +
                                                       MB_BUF_REC_HDR);
    uint32_t data_size = ev->data_size;
    buf->held_pos = MB_BUF_NONE;
    uint64_t expect = pos | MB_BUF_PIN;
    if (!__atomic_compare_exchange_n(&buf->me->read_pos, &expect, pos + buf->held_size, false,
                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        return MB_EREMOVED;
    consumed(buf, data_size, pos + buf->held_size);
    return 0;
}

uint64_t mb_buffer_n_missed(const struct mb_buffer *buf)
{
    if (!buf->me)
        return 0;
    return __atomic_load_n(&buf->me->n_missed, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------------- */
/* Requests                                                                */
/* ---------------------------------------------------------------------- */

/* Writes our local requests into the shared entry and sets the GET_ALL
 * flag from them. Lock held. */
static void publish_requests(struct mb_buffer *buf)
{
    struct mb_buf_client *me = buf->me;
    uint32_t getall = 0;
    for (uint32_t i = 0; i < buf->n_requests; i++) {
        me->requests[i] = buf->requests[i];
        if (buf->requests[i].mode == MB_GET_ALL)
            getall = MB_BUF_CF_GETALL;
    }
    __atomic_store_n(&me->n_requests, buf->n_requests, __ATOMIC_RELEASE);
    uint32_t flags = load32(&me->flags);
    __atomic_store_n(&me->flags, (flags & ~(uint32_t)MB_BUF_CF_GETALL) | getall, __ATOMIC_RELEASE);
}

int mb_buffer_request_add(struct mb_buffer *buf, int16_t event_id, int16_t trigger_mask,
                          enum mb_request_mode mode, int *id_out)
{
    if (!buf || !buf->me)
        return UT_EINVAL;
    if ((mode != MB_GET_ALL && mode != MB_GET_SOME) || trigger_mask == 0)
        return MB_EBADREQ;
    if (buf->n_requests >= MB_BUFFER_MAX_REQUESTS)
        return MB_EREQUESTS;
    int err = lock_buf(buf);
    if (err)
        return err;
    uint32_t i = buf->n_requests;
    buf->requests[i] = (struct mb_buf_request){event_id, trigger_mask, (uint32_t)mode};
    buf->n_requests = i + 1;
    publish_requests(buf);
    if (load64(&buf->me->read_pos) == MB_BUF_NONE)
        __atomic_store_n(&buf->me->read_pos, load64(&buf->hdr->commit_pos), __ATOMIC_SEQ_CST);
    ut_lock_release(&buf->lock);
    /* Ids come from a per-handle counter, so a removed id is never reused
     * while the handle is open. */
    int id = ++buf->next_request_id;
    buf->request_ids[i] = id;
    if (id_out)
        *id_out = id;
    return 0;
}

int mb_buffer_request_remove(struct mb_buffer *buf, int id)
{
    if (!buf || buf->held_pos != MB_BUF_NONE)
        return UT_EINVAL;
    uint32_t i = 0;
    while (i < buf->n_requests && buf->request_ids[i] != id)
        i++;
    if (i == buf->n_requests)
        return UT_EINVAL;
    int err = lock_buf(buf);
    if (err)
        return err;
    memmove(&buf->requests[i], &buf->requests[i + 1],
            (buf->n_requests - i - 1) * sizeof buf->requests[0]);
    memmove(&buf->request_ids[i], &buf->request_ids[i + 1],
            (buf->n_requests - i - 1) * sizeof buf->request_ids[0]);
    buf->n_requests--;
    publish_requests(buf);
    if (buf->n_requests == 0)
        __atomic_store_n(&buf->me->read_pos, MB_BUF_NONE, __ATOMIC_SEQ_CST);
    ut_lock_release(&buf->lock);
    wake_space(buf);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Client entries                                                          */
/* ---------------------------------------------------------------------- */

/* Frees entry i: discards its reservations, folds its counters into the
 * totals, drops its read position. Lock held. */
static void release_entry(struct mb_buffer *buf, uint32_t i)
{
    struct mb_buf_header *h = buf->hdr;
    struct mb_buf_client *e = &buf->clients[i];
    discard_reservations(buf, i);
    ut_crash_point();
    __atomic_store_n(&e->read_pos, MB_BUF_NONE, __ATOMIC_SEQ_CST);
    add64(&h->gone_events_in, __atomic_exchange_n(&e->n_sent, 0, __ATOMIC_RELAXED));
    add64(&h->gone_bytes_in, __atomic_exchange_n(&e->bytes_sent, 0, __ATOMIC_RELAXED));
    add64(&h->gone_events_out, __atomic_exchange_n(&e->n_received, 0, __ATOMIC_RELAXED));
    add64(&h->gone_bytes_out, __atomic_exchange_n(&e->bytes_received, 0, __ATOMIC_RELAXED));
    add64(&h->gone_missed, __atomic_exchange_n(&e->n_missed, 0, __ATOMIC_RELAXED));
    __atomic_store_n(&e->n_requests, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&e->flags, 0, __ATOMIC_RELAXED);
    __atomic_add_fetch(&e->gen, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&e->in_use, 0, __ATOMIC_RELEASE);
}

/* Takes a free entry for this handle, searching round-robin from
 * next_alloc so a freed entry is reused as late as possible. Lock held.
 * Returns 0 or MB_ECLIENTS. */
static int alloc_entry(struct mb_buffer *buf, uint32_t slot)
{
    struct mb_buf_header *h = buf->hdr;
    uint32_t start = h->next_alloc % buf->max_clients;
    for (uint32_t n = 0; n < buf->max_clients; n++) {
        uint32_t i = (start + n) % buf->max_clients;
        struct mb_buf_client *e = &buf->clients[i];
        if (load32(&e->in_use))
            continue;
        uint32_t gen = __atomic_add_fetch(&e->gen, 1, __ATOMIC_RELAXED);
        e->slot = slot;
        e->pid = buf->pid;
        __atomic_store_n(&e->flags, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&e->n_requests, 0, __ATOMIC_RELAXED);
        memset(e->requests, 0, sizeof e->requests);
        __atomic_store_n(&e->read_pos, MB_BUF_NONE, __ATOMIC_SEQ_CST);
        __atomic_store_n(&e->n_received, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&e->bytes_received, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&e->n_missed, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&e->n_sent, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&e->bytes_sent, 0, __ATOMIC_RELAXED);
        if (i + 1 > load32(&h->n_used))
            __atomic_store_n(&h->n_used, i + 1, __ATOMIC_RELEASE);
        h->next_alloc = (i + 1) % buf->max_clients;
        __atomic_store_n(&e->in_use, 1, __ATOMIC_RELEASE);
        buf->index = i;
        buf->gen = gen;
        buf->me = e;
        return 0;
    }
    return MB_ECLIENTS;
}

int mb_buffer_remove_client(struct mb_buffer *buf, uint32_t slot)
{
    if (!buf)
        return UT_EINVAL;
    int err = UT_LOCK(&buf->lock);
    if (err)
        return err;
    int n = 0;
    uint32_t n_used = load32(&buf->hdr->n_used);
    for (uint32_t i = 0; i < n_used; i++) {
        struct mb_buf_client *e = &buf->clients[i];
        if (load32(&e->in_use) && e->slot == slot) {
            release_entry(buf, i);
            n++;
        }
    }
    if (n)
        add64(&buf->hdr->n_removed, (uint64_t)n);
    ut_lock_release(&buf->lock);
    if (n) {
        ut_log(UT_LOG_INFO, "event buffer '%s': removed %d entries of client slot %u", buf->name, n,
               slot);
        advance_commit(buf);
        wake_space(buf);
        wake_data(buf);
    }
    return n;
}

/* ---------------------------------------------------------------------- */
/* Opening and closing                                                     */
/* ---------------------------------------------------------------------- */

int mb_buffer_name_check(const char *name)
{
    if (!name || !*name)
        return UT_EINVAL;
    size_t len = strlen(name);
    if (len > MB_BUFFER_NAME_MAX)
        return UT_ENAMETOOLONG;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return UT_EINVAL;
    }
    return 0;
}

static uint64_t fingerprint(void)
{
    uint64_t f = 0x425546u;
    const uint64_t parts[] = {sizeof(struct mb_buf_header), sizeof(struct mb_buf_client),
                              sizeof(struct mb_buf_rec),    sizeof(struct mb_event_header),
                              sizeof(struct ut_shlock),     offsetof(struct mb_buf_header, lock),
                              MB_BUFFER_MAX_REQUESTS,       MB_BUF_ALIGN};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        f = (f ^ parts[i]) * 1099511628211ull;
    return f;
}

static uint64_t data_offset(uint32_t max_clients)
{
    uint64_t end = MB_BUF_CLIENTS_OFF + (uint64_t)max_clients * MB_BUF_CLIENT_SIZE;
    return (end + MB_BUF_PAGE - 1) / MB_BUF_PAGE * MB_BUF_PAGE;
}

/* Checks an attached segment's geometry before anything is indexed
 * through it. Returns 0 or UT_ECORRUPT. */
static int header_sane(const struct mb_buf_header *h, size_t seg_size)
{
    if (h->size < MB_BUFFER_MIN_SIZE || h->size > MB_BUFFER_MAX_SIZE || h->size % MB_BUF_PAGE ||
        h->max_clients < 1 || h->max_clients > MB_BUFFER_MAX_CLIENTS ||
        h->client_size != MB_BUF_CLIENT_SIZE || h->clients_off != MB_BUF_CLIENTS_OFF ||
        h->data_off != data_offset(h->max_clients) || h->data_off + h->size > seg_size ||
        !memchr(h->name, '\0', sizeof h->name))
        return UT_ECORRUPT;
    return 0;
}

int mb_buffer_open(const char *shm_name, const char *name, unsigned flags,
                   const struct mb_buffer_params *params, struct mb_buffer **out)
{
    struct mb_buffer_params p = {MB_BUFFER_DEFAULT_SIZE, MB_BUFFER_DEFAULT_CLIENTS, 0, 10000};
    if (params) {
        if (params->size_bytes)
            p.size_bytes = params->size_bytes;
        if (params->max_clients)
            p.max_clients = params->max_clients;
        p.slot = params->slot;
        if (params->lock_timeout_ms)
            p.lock_timeout_ms = params->lock_timeout_ms;
    }
    if (!shm_name || !out)
        return UT_EINVAL;
    int err = mb_buffer_name_check(name);
    if (err)
        return err;
    p.size_bytes = (p.size_bytes + MB_BUF_PAGE - 1) / MB_BUF_PAGE * MB_BUF_PAGE;
    if (p.size_bytes < MB_BUFFER_MIN_SIZE || p.size_bytes > MB_BUFFER_MAX_SIZE ||
        p.max_clients > MB_BUFFER_MAX_CLIENTS)
        return UT_EINVAL;

    struct mb_buffer *buf = ut_calloc(1, sizeof *buf);
    if (!buf)
        return UT_ENOMEM;
    buf->pid = (uint32_t)getpid();
    buf->held_pos = MB_BUF_NONE;
    uint64_t seg = data_offset(p.max_clients) + p.size_bytes;
    err = ut_shm_open(&buf->shm, shm_name, (size_t)seg, MB_BUF_KIND, fingerprint(),
                      (flags & MB_BUFFER_CREATE) != 0, p.lock_timeout_ms);
    if (err)
        goto fail_free;
    struct mb_buf_header *h =
        (struct mb_buf_header *)(void *)((uint8_t *)buf->shm.base + sizeof(struct ut_shm_header));
    if (buf->shm.created) {
        /* ftruncate gave zeroes: positions 0, no entry in use. */
        err = ut_shlock_init(&h->lock);
        if (err)
            goto fail_unlink;
        ut_strlcpy(h->name, name, sizeof h->name);
        h->size = p.size_bytes;
        h->max_clients = p.max_clients;
        h->client_size = MB_BUF_CLIENT_SIZE;
        h->clients_off = MB_BUF_CLIENTS_OFF;
        h->data_off = data_offset(p.max_clients);
        h->space_target = MB_BUF_NONE;
        ut_shm_ready(&buf->shm);
    } else {
        err = header_sane(h, buf->shm.size);
        if (err)
            goto fail_close;
    }
    buf->hdr = h;
    buf->size = h->size;
    buf->max_clients = h->max_clients;
    buf->clients = (struct mb_buf_client *)(void *)((uint8_t *)buf->shm.base + MB_BUF_CLIENTS_OFF);
    buf->ring = (uint8_t *)buf->shm.base + h->data_off;
    ut_strlcpy(buf->name, h->name, sizeof buf->name);
    ut_lock_bind(&buf->lock, &h->lock, "buffer", UT_RANK_BUFFER, p.lock_timeout_ms, recover_buffer,
                 buf);
    buf->index = UINT32_MAX;
    if (!(flags & MB_BUFFER_ADMIN)) {
        err = UT_LOCK(&buf->lock);
        if (err)
            goto fail_close;
        err = alloc_entry(buf, p.slot);
        ut_lock_release(&buf->lock);
        if (err)
            goto fail_close;
    }
    *out = buf;
    return 0;

fail_unlink:
    ut_shm_unlink(shm_name);
fail_close:
    ut_shm_close(&buf->shm);
fail_free:
    ut_free(buf);
    return err;
}

/* The shm name of buffer `name` of the experiment in expdir. */
static int exp_shm_name(const char *expdir, const char *name, char *out, size_t size)
{
    if (!expdir)
        return UT_EINVAL;
    int err = mb_buffer_name_check(name);
    if (err)
        return err;
    char what[8 + MB_BUFFER_NAME_MAX];
    (void)snprintf(what, sizeof what, "buf.%s", name);
    return ut_shm_name(expdir, what, out, size);
}

int mb_buffer_open_exp(const char *expdir, const char *name, unsigned flags,
                       const struct mb_buffer_params *params, struct mb_buffer **out)
{
    char shm[128];
    int err = exp_shm_name(expdir, name, shm, sizeof shm);
    if (err)
        return err;
    return mb_buffer_open(shm, name, flags, params, out);
}

void mb_buffer_close(struct mb_buffer *buf)
{
    if (!buf)
        return;
    if (buf->me && buf->pid == (uint32_t)getpid()) {
        UT_ASSERT(!ut_lock_held(&buf->lock));
        /* A lock error leaves the entry to the watchdog's cleanup. */
        if (UT_LOCK(&buf->lock) == 0) {
            if (entry_ours(buf))
                release_entry(buf, buf->index);
            ut_lock_release(&buf->lock);
            advance_commit(buf);
            wake_space(buf);
        }
    }
    ut_shm_close(&buf->shm);
    ut_free(buf);
}

int mb_buffer_destroy(const char *shm_name)
{
    if (!shm_name)
        return UT_EINVAL;
    return ut_shm_unlink(shm_name);
}

int mb_buffer_destroy_exp(const char *expdir, const char *name)
{
    char shm[128];
    int err = exp_shm_name(expdir, name, shm, sizeof shm);
    if (err)
        return err;
    return ut_shm_unlink(shm);
}

const char *mb_buffer_name(const struct mb_buffer *buf)
{
    return buf->name;
}

uint64_t mb_buffer_size(const struct mb_buffer *buf)
{
    return buf->size;
}
