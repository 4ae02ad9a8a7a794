/*
 * odb/txn.c - the ODB lock, transactions, the undo log and crash recovery.
 *
 * Every mutating call runs as: odb__begin (lock, open a savepoint), change
 * the segment, odb__end (commit or roll back to the savepoint, unlock).
 * Before each change, the bytes about to be overwritten are appended to the
 * undo log; the change itself follows. The log is a sequence of records:
 *
 *   offset size meaning
 *   0      8    segment offset of the saved bytes
 *   8      4    number of saved bytes
 *   12     4    kind: 1 = SAVE (the only kind so far)
 *   16     len  the saved bytes, padded to 8
 *
 * A record is complete before hdr->undo_used grows past it, and a change is
 * made only after its record is counted, so at every instruction the log
 * describes how to restore the state of the outermost begin. Clearing
 * undo_used is the commit point of the outermost transaction.
 *
 * Value blocks dropped inside a transaction are not freed at once: if they
 * were, a later allocation in the same transaction could reuse them, and a
 * rollback would then restore a key pointing at overwritten data. They are
 * "retired" onto the zombie list instead (heap.c). Deleted keys are
 * detached from the tree onto the garbage list (a few logged stores). Both
 * lists are reclaimed after the outermost commit in chunks, each its own
 * small committed step (odb__gc), so neither a large delete nor many
 * replaced values can overflow the log, and a crash in the middle of
 * reclaiming is simply continued by the next locker.
 *
 * Recovery (the lock's EOWNERDEAD callback) replays the log backwards,
 * reclaims detached subtrees, and runs the integrity check; a failure there
 * marks the segment broken (ut_lock) instead of serving corrupt data.
 */
#include "odb/odb_int.h"

#include <stdio.h>
#include <string.h>

enum undo_kind { UNDO_SAVE = 1 };

struct undo_rec {
    uint64_t off;
    uint32_t len;
    uint32_t kind;
};
_Static_assert(sizeof(struct undo_rec) == 16, "undo record layout");

/* A compiler barrier: keeps the order of stores to shared memory as
 * written, which is all a process killed at an instruction can observe
 * (the CPU commits the stores that preceded the kill). */
#define STORE_ORDER() __atomic_signal_fence(__ATOMIC_SEQ_CST)

static size_t pad8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static int append_record(struct odb *odb, uint64_t off, uint32_t len, uint32_t kind,
                         const void *bytes)
{
    struct odb_header *hdr = odb->hdr;
    uint64_t used = hdr->undo_used;
    size_t need = sizeof(struct undo_rec) + pad8(len);
    if (used + need > hdr->undo_size)
        return odb__fail(ODB_ETOOBIG, "operation needs more than the %llu-byte undo log",
                         (unsigned long long)hdr->undo_size);
    uint8_t *rec = odb->base + hdr->undo_off + used;
    struct undo_rec r = {off, len, kind};
    memcpy(rec, &r, sizeof r);
    if (len)
        memcpy(rec + sizeof r, bytes, len);
    STORE_ORDER();
    hdr->undo_used = used + need;
    STORE_ORDER();
    ut_crash_point();
    return 0;
}

int odb__undo_save(struct odb *odb, const void *p, size_t len)
{
    const uint8_t *b = p;
    UT_ASSERT(b >= odb->base + sizeof(struct ut_shm_header) &&
              b + len <= odb->base + odb->shm.size);
    UT_ASSERT(len <= UINT32_MAX);
    return append_record(odb, (uint64_t)(b - odb->base), (uint32_t)len, UNDO_SAVE, b);
}

/* Restores every SAVE record past `to`, newest first, and truncates the
 * log to `to`. Returns 0 or UT_ECORRUPT when a record is out of bounds (a
 * log that cannot be trusted must not be applied: every record is checked
 * before any is restored).
 *
 * It allocates nothing, because it runs on error paths, out-of-memory ones
 * included (ut_alloc_fail_after). Records are variable-sized and can only
 * be walked forward, so each round walks from `to` to `end` keeping the
 * positions of the last RING records, restores those newest first, and
 * moves `end` back to the oldest one restored. */
static int rollback_to(struct odb *odb, uint64_t to)
{
    enum { RING = 512 };
    struct odb_header *hdr = odb->hdr;
    uint64_t used = hdr->undo_used;
    if (used > hdr->undo_size || to > used)
        return UT_ECORRUPT;
    for (uint64_t pos = to; pos < used;) {
        struct undo_rec r;
        if (used - pos < sizeof r)
            return UT_ECORRUPT;
        memcpy(&r, odb->base + hdr->undo_off + pos, sizeof r);
        pos += sizeof r + pad8(r.len);
        if (pos > used || r.kind != UNDO_SAVE || r.off < sizeof(struct ut_shm_header) ||
            r.off + r.len > odb->shm.size ||
            (r.off < hdr->undo_off + hdr->undo_size && r.off + r.len > hdr->undo_off))
            return UT_ECORRUPT;
    }
    uint64_t ring[RING];
    for (uint64_t end = used; end > to;) {
        uint64_t n = 0;
        for (uint64_t pos = to; pos < end; n++) {
            struct undo_rec r;
            ring[n % RING] = pos;
            memcpy(&r, odb->base + hdr->undo_off + pos, sizeof r);
            pos += sizeof r + pad8(r.len);
        }
        uint64_t k = n < RING ? n : RING;
        for (uint64_t i = 0; i < k; i++) {
            struct undo_rec r;
            const uint8_t *rec = odb->base + hdr->undo_off + ring[(n - 1 - i) % RING];
            memcpy(&r, rec, sizeof r);
            /* Restoring undo_used itself is pointless; it is set below. */
            memcpy(odb->base + r.off, rec + sizeof r, r.len);
        }
        end = ring[(n - k) % RING];
    }
    STORE_ORDER();
    hdr->undo_used = to;
    STORE_ORDER();
    return 0;
}

/* The commit point of the outermost transaction. */
static void commit_outermost(struct odb *odb)
{
    struct odb_header *hdr = odb->hdr;
    ut_crash_point();
    STORE_ORDER();
    __atomic_store_n(&hdr->n_changes, hdr->n_changes + 1, __ATOMIC_RELAXED);
    hdr->undo_used = 0;
    STORE_ORDER();
    ut_crash_point();
}

int odb__rlock(struct odb *odb)
{
    int err = UT_LOCK(&odb->lock);
    if (err)
        return odb__fail(err, "%s", ut_lock_last_error());
    return 0;
}

void odb__runlock(struct odb *odb)
{
    ut_lock_release(&odb->lock);
}

int odb__begin(struct odb *odb)
{
    int err = odb__rlock(odb);
    if (err)
        return err;
    struct odb_header *hdr = odb->hdr;
    if (hdr->txn_depth >= ODB_MAX_TXN_DEPTH) {
        odb__runlock(odb);
        return odb__fail(UT_EINVAL, "transactions nested deeper than %d", ODB_MAX_TXN_DEPTH);
    }
    hdr->savepoint[hdr->txn_depth++] = hdr->undo_used;
    return 0;
}

int odb__end(struct odb *odb, int err)
{
    struct odb_header *hdr = odb->hdr;
    UT_ASSERT(hdr->txn_depth > 0);
    uint64_t sp = hdr->savepoint[--hdr->txn_depth];
    if (err) {
        int rerr = rollback_to(odb, sp);
        UT_ASSERT(rerr == 0); /* our own log, written by this thread */
    } else if (hdr->txn_depth == 0) {
        commit_outermost(odb);
        if (hdr->garbage != ODB_NIL || hdr->zombie != ODB_NIL)
            odb__gc(odb);
    }
    if (hdr->txn_depth > 0 || (odb->n_wake == 0 && !odb->wake_all)) {
        odb__runlock(odb);
        return err;
    }
    /* Wake watchers only after the lock is released; the wake list belongs
     * to the lock holder, so take a private copy first. Waking after a
     * rollback is a harmless spurious wake-up. */
    uint32_t wake[sizeof odb->wake / sizeof odb->wake[0]];
    uint32_t n_wake = odb->n_wake;
    bool wake_all = odb->wake_all;
    memcpy(wake, odb->wake, n_wake * sizeof wake[0]);
    odb__watch_forget_wakes(odb);
    odb__runlock(odb);
    odb__watch_wake(odb, wake, n_wake, wake_all);
    return err;
}

int odb_txn_begin(struct odb *odb)
{
    odb__clear_error();
    return odb__begin(odb);
}

int odb_txn_commit(struct odb *odb)
{
    return odb__end(odb, 0);
}

void odb_txn_abort(struct odb *odb)
{
    /* Any non-zero code selects the rollback path. */
    odb__end(odb, UT_EINVAL);
}

int odb__recover(void *arg)
{
    struct odb *odb = arg;
    struct odb_header *hdr = odb->hdr;
    int err = 0;
    if (hdr->undo_used != 0) {
        err = rollback_to(odb, 0);
        if (err) {
            ut_log(UT_LOG_ERROR, "odb recovery: undo log unreadable (%s)", ut_strerror(err));
            return err;
        }
        hdr->n_rollbacks++;
        ut_log(UT_LOG_WARN, "odb recovery: rolled back an interrupted operation");
    }
    hdr->txn_depth = 0;
    odb__gc(odb);
    char report[512];
    err = odb_check(odb, report, sizeof report);
    if (err)
        ut_log(UT_LOG_ERROR, "odb recovery: integrity check failed: %s", report);
    return err;
}

/* Reclaims up to ODB_GC_CHUNK retired blocks and keys of detached
 * subtrees (deepest first). Returns the number reclaimed, or a negative
 * error. */
static int gc_chunk(struct odb *odb)
{
    struct odb_header *hdr = odb->hdr;
    int n = 0;
    while (n < ODB_GC_CHUNK && hdr->zombie != ODB_NIL) {
        int err = odb__heap_free_zombie(odb);
        if (err)
            return err;
        n++;
    }
    while (n < ODB_GC_CHUNK && hdr->garbage != ODB_NIL) {
        uint32_t idx = hdr->garbage;
        struct odb_key_slot *k = &odb->keys[idx];
        /* Descend to a leaf of the first garbage tree. */
        while (k->first_child != ODB_NIL) {
            idx = k->first_child;
            k = &odb->keys[idx];
        }
        if (idx == hdr->garbage) {
            int err = odb__undo_save(odb, &hdr->garbage, sizeof hdr->garbage);
            if (err)
                return err;
            hdr->garbage = k->next_sib;
        }
        int err = odb__free_key(odb, idx);
        if (err)
            return err;
        n++;
    }
    return n;
}

void odb__gc(struct odb *odb)
{
    struct odb_header *hdr = odb->hdr;
    UT_ASSERT(hdr->txn_depth == 0 && hdr->undo_used == 0);
    while (hdr->garbage != ODB_NIL || hdr->zombie != ODB_NIL) {
        int n = gc_chunk(odb);
        if (n < 0) {
            int rerr = rollback_to(odb, 0);
            UT_ASSERT(rerr == 0);
            ut_log(UT_LOG_WARN, "odb: reclaiming deleted keys failed (%s)", ut_strerror(n));
            return;
        }
        commit_outermost(odb);
    }
}
