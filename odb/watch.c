/*
 * odb/watch.c - watches on keys and subtrees, and the wake-ups behind them.
 *
 * Layout: a table of struct odb_watch (key slot + generation + subscriber)
 * and one struct odb_subscriber per subscriber (a queue of changes and a
 * futex word), both in the segment, both under the ODB lock except the
 * futex word and the sleeper count, which are accessed atomically.
 *
 * Delivery: every change of a key goes through odb__touch, which calls
 * odb__watch_notify. When any watch exists, it walks from the key up to the
 * root and, for each ancestor with watches (key.n_watch > 0), queues the
 * change for each matching watch. Queue writes are logged like any other
 * change, so a rolled-back transaction never reports anything. Repeats of
 * the queue's last entry are merged, so a burst of writes to one key costs
 * the reader one entry.
 *
 * Wake-up: the futex word `seq` is bumped at each delivery. A waiter
 * announces itself in `sleepers` before sleeping and re-checks `seq`; the
 * notifier, after releasing the ODB lock (never inside it), calls
 * FUTEX_WAKE only when `sleepers` is non-zero. Only a waiter changes
 * `sleepers`, so no wake-up can be lost by a notifier clearing it.
 */
#include "odb/odb_int.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define LOGGED_SET(odb, field, value)                                                              \
    do {                                                                                           \
        int log_err_ = odb__undo_save((odb), &(field), sizeof(field));                             \
        if (log_err_)                                                                              \
            return log_err_;                                                                       \
        (field) = (value);                                                                         \
    } while (0)

static void remember_wake(struct odb *odb, uint32_t sub)
{
    for (uint32_t i = 0; i < odb->n_wake; i++)
        if (odb->wake[i] == sub)
            return;
    if (odb->n_wake < sizeof odb->wake / sizeof odb->wake[0])
        odb->wake[odb->n_wake++] = sub;
    else
        odb->wake_all = true;
}

static int enqueue(struct odb *odb, uint32_t sub, uint32_t watch_id, uint32_t idx)
{
    struct odb_subscriber *s = &odb->subs[sub];
    uint32_t gen = odb->keys[idx].gen;
    uint32_t used = s->tail - s->head;
    if (used > 0) {
        const uint32_t last = (s->tail - 1) % ODB_WATCH_QUEUE;
        if (s->queue[last].watch_id == watch_id && s->queue[last].key_idx == idx &&
            s->queue[last].key_gen == gen)
            return 0; /* merged with the unread entry */
    }
    if (used >= ODB_WATCH_QUEUE) {
        LOGGED_SET(odb, s->overflow, s->overflow + 1);
    } else {
        uint32_t pos = s->tail % ODB_WATCH_QUEUE;
        int err = odb__undo_save(odb, &s->queue[pos], sizeof s->queue[pos]);
        if (err)
            return err;
        s->queue[pos].watch_id = watch_id;
        s->queue[pos].key_idx = idx;
        s->queue[pos].key_gen = gen;
        LOGGED_SET(odb, s->tail, s->tail + 1);
    }
    int err = odb__undo_save(odb, &s->seq, sizeof s->seq);
    if (err)
        return err;
    __atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_SEQ_CST);
    remember_wake(odb, sub);
    return 0;
}

int odb__watch_notify(struct odb *odb, uint32_t idx)
{
    const struct odb_header *hdr = odb->hdr;
    if (hdr->n_watches == 0)
        return 0;
    uint32_t a = idx;
    for (int depth = 0; depth < 4096; depth++) {
        const struct odb_key_slot *k = &odb->keys[a];
        if (k->n_watch) {
            for (uint32_t w = 0; w < hdr->watch_hw; w++) {
                const struct odb_watch *wt = &odb->watches[w];
                if (wt->key_idx == a && wt->key_gen == k->gen && wt->subscriber < hdr->max_subs) {
                    int err = enqueue(odb, wt->subscriber, w, idx);
                    if (err)
                        return err;
                }
            }
        }
        if (a == 0)
            break;
        a = k->parent;
    }
    return 0;
}

static long futex(uint32_t *word, int op, uint32_t val, const struct timespec *timeout)
{
    return syscall(SYS_futex, word, op, val, timeout, NULL, 0);
}

static void wake_sub(struct odb *odb, uint32_t sub)
{
    struct odb_subscriber *s = &odb->subs[sub];
    if (__atomic_load_n(&s->sleepers, __ATOMIC_SEQ_CST))
        futex(&s->seq, FUTEX_WAKE, INT_MAX, NULL);
}

void odb__watch_wake(struct odb *odb, const uint32_t *subs, uint32_t n, bool all)
{
    if (all) {
        for (uint32_t i = 0; i < odb->hdr->max_subs; i++)
            wake_sub(odb, i);
        return;
    }
    for (uint32_t i = 0; i < n; i++)
        wake_sub(odb, subs[i]);
}

void odb__watch_forget_wakes(struct odb *odb)
{
    odb->n_wake = 0;
    odb->wake_all = false;
}

int odb_watch_add(struct odb *odb, struct odb_hkey key, uint32_t subscriber, uint32_t *id_out)
{
    odb__clear_error();
    if (subscriber >= odb->hdr->max_subs)
        return odb__fail(UT_EINVAL, "subscriber %u out of range (max %u)", subscriber,
                         odb->hdr->max_subs);
    int err = odb__begin(odb);
    if (err)
        return err;
    struct odb_header *hdr = odb->hdr;
    struct odb_key_slot *k;
    err = odb__key_checked(odb, key, &k);
    if (err)
        goto out;
    uint32_t w = 0;
    while (w < hdr->max_watches && odb->watches[w].key_idx != ODB_NIL)
        w++;
    if (w == hdr->max_watches) {
        err = odb__fail(ODB_ENOSPC, "all %u watch slots are in use", hdr->max_watches);
        goto out;
    }
    struct odb_watch *wt = &odb->watches[w];
    err = odb__undo_save(odb, wt, sizeof *wt);
    if (!err)
        err = odb__undo_save(odb, &k->n_watch, sizeof k->n_watch);
    if (!err)
        err = odb__undo_save(odb, &hdr->n_watches, 2 * sizeof(uint32_t));
    if (err)
        goto out;
    _Static_assert(offsetof(struct odb_header, watch_hw) ==
                       offsetof(struct odb_header, n_watches) + 4,
                   "n_watches and watch_hw are logged together");
    *wt = (struct odb_watch){key.idx, key.gen, subscriber, 0};
    k->n_watch++;
    hdr->n_watches++;
    if (w >= hdr->watch_hw)
        hdr->watch_hw = w + 1;
    *id_out = w;
out:
    return odb__end(odb, err);
}

/* Drops watch w (lock held, in a transaction). */
static int drop_watch(struct odb *odb, uint32_t w)
{
    struct odb_header *hdr = odb->hdr;
    struct odb_watch *wt = &odb->watches[w];
    if (wt->key_idx < hdr->max_keys) {
        struct odb_key_slot *k = &odb->keys[wt->key_idx];
        if (k->type != 0 && k->gen == wt->key_gen && k->n_watch > 0)
            LOGGED_SET(odb, k->n_watch, k->n_watch - 1);
    }
    LOGGED_SET(odb, wt->key_idx, ODB_NIL);
    LOGGED_SET(odb, hdr->n_watches, hdr->n_watches - 1);
    return 0;
}

int odb_watch_remove(struct odb *odb, uint32_t watch_id)
{
    odb__clear_error();
    int err = odb__begin(odb);
    if (err)
        return err;
    if (watch_id >= odb->hdr->max_watches || odb->watches[watch_id].key_idx == ODB_NIL)
        err = odb__fail(ODB_ENOKEY, "no watch %u", watch_id);
    else
        err = drop_watch(odb, watch_id);
    return odb__end(odb, err);
}

int odb_watch_remove_subscriber(struct odb *odb, uint32_t subscriber)
{
    odb__clear_error();
    if (subscriber >= odb->hdr->max_subs)
        return odb__fail(UT_EINVAL, "subscriber %u out of range", subscriber);
    int err = odb__begin(odb);
    if (err)
        return err;
    int n = 0;
    for (uint32_t w = 0; w < odb->hdr->watch_hw && !err; w++) {
        if (odb->watches[w].key_idx != ODB_NIL && odb->watches[w].subscriber == subscriber) {
            err = drop_watch(odb, w);
            n++;
        }
    }
    struct odb_subscriber *s = &odb->subs[subscriber];
    if (!err)
        err = odb__undo_save(odb, &s->head, 3 * sizeof(uint32_t));
    if (!err) {
        s->head = s->tail;
        s->overflow = 0;
    }
    err = odb__end(odb, err);
    return err ? err : n;
}

int odb_watch_read(struct odb *odb, uint32_t subscriber, struct odb_change *out, size_t max,
                   size_t *n_out)
{
    odb__clear_error();
    if (subscriber >= odb->hdr->max_subs)
        return odb__fail(UT_EINVAL, "subscriber %u out of range", subscriber);
    int err = odb__begin(odb);
    if (err)
        return err;
    struct odb_subscriber *s = &odb->subs[subscriber];
    size_t n = 0;
    if (s->overflow && max > 0) {
        out[n++] = (struct odb_change){ODB_WATCH_OVERFLOW, {ODB_NIL, 0}};
        err = odb__undo_save(odb, &s->head, 3 * sizeof(uint32_t));
        if (!err) {
            s->head = s->tail; /* the reader re-reads everything anyway */
            s->overflow = 0;
        }
    }
    while (!err && n < max && s->head != s->tail) {
        if (s->tail - s->head > ODB_WATCH_QUEUE) {
            err = odb__fail(UT_ECORRUPT, "watch queue of subscriber %u is corrupt", subscriber);
            break;
        }
        uint32_t pos = s->head % ODB_WATCH_QUEUE;
        out[n].watch_id = s->queue[pos].watch_id;
        out[n].key = (struct odb_hkey){s->queue[pos].key_idx, s->queue[pos].key_gen};
        n++;
        err = odb__undo_save(odb, &s->head, sizeof s->head);
        if (!err)
            s->head++;
    }
    err = odb__end(odb, err);
    if (!err)
        *n_out = n;
    return err;
}

uint32_t odb_watch_seq(struct odb *odb, uint32_t subscriber)
{
    if (subscriber >= odb->hdr->max_subs)
        return 0;
    return __atomic_load_n(&odb->subs[subscriber].seq, __ATOMIC_SEQ_CST);
}

int odb_watch_wait(struct odb *odb, uint32_t subscriber, uint32_t seen, int timeout_ms)
{
    if (subscriber >= odb->hdr->max_subs)
        return odb__fail(UT_EINVAL, "subscriber %u out of range", subscriber);
    struct odb_subscriber *s = &odb->subs[subscriber];
    int64_t deadline = ut_now_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        if (__atomic_load_n(&s->seq, __ATOMIC_SEQ_CST) != seen)
            return 0;
        if (ut_interrupted())
            return UT_EINTR;
        int64_t left = deadline - ut_now_ns();
        if (timeout_ms >= 0 && left <= 0)
            return UT_ETIMEOUT;
        /* Sleep in slices so ut_interrupt() is noticed even if the signal
         * that caused it landed in another thread. */
        int64_t slice = 100 * 1000000LL;
        if (timeout_ms >= 0 && left < slice)
            slice = left;
        struct timespec ts = {(time_t)(slice / 1000000000), (long)(slice % 1000000000)};
        __atomic_add_fetch(&s->sleepers, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&s->seq, __ATOMIC_SEQ_CST) == seen)
            futex(&s->seq, FUTEX_WAIT, seen, &ts);
        __atomic_sub_fetch(&s->sleepers, 1, __ATOMIC_SEQ_CST);
    }
}

int odb_watch_count(struct odb *odb, struct odb_hkey key, uint32_t *n_out)
{
    odb__clear_error();
    int err = odb__rlock(odb);
    if (err)
        return err;
    struct odb_key_slot *k;
    err = odb__key_checked(odb, key, &k);
    if (!err)
        *n_out = k->n_watch;
    odb__runlock(odb);
    return err;
}
