/*
 * msgbus/buffer_check.c - event buffers: the integrity check and the
 * statistics.
 *
 * The check (mb_buffer_check, and the lock's recovery callback in
 * buffer.c) walks the ring under the buffer lock from tail to head by
 * record sizes and verifies every invariant listed in msgbus/mb_int.h:
 * positions ordered and aligned, every record header valid (position tag,
 * size, not crossing the end of the ring, a known state), committed events
 * whose data_size matches their record, reserved records owned by an entry
 * in use, and every consumer's read position on a record boundary between
 * tail and commit_pos. Consumers and committers keep moving without the
 * lock while it runs; the positions they move only grow, over records the
 * check has already seen finished, so a snapshot of commit_pos and of each
 * read position taken under the lock stays valid.
 *
 * Statistics are read without the lock, each counter atomically: the
 * figures are each exact but not one instant's snapshot.
 */
#include "msgbus/mb_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((format(printf, 3, 4))) static int problem(char *report, size_t size, const char *fmt,
                                                         ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (report && size)
        (void)vsnprintf(report, size, fmt, ap);
    va_end(ap);
    return UT_ECORRUPT;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int mb__buffer_check_locked(struct mb_buffer *buf, char *report, size_t report_size)
{
    const struct mb_buf_header *h = buf->hdr;
    uint64_t head = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
    uint64_t tail = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
    uint64_t commit = __atomic_load_n(&h->commit_pos, __ATOMIC_SEQ_CST);
    uint32_t n_used = __atomic_load_n(&h->n_used, __ATOMIC_ACQUIRE);
    if (tail > commit || commit > head || head - tail > buf->size)
        return problem(report, report_size,
                       "positions out of order: tail %llu commit %llu head %llu size %llu",
                       (unsigned long long)tail, (unsigned long long)commit,
                       (unsigned long long)head, (unsigned long long)buf->size);
    if ((tail | commit | head) % MB_BUF_ALIGN)
        return problem(report, report_size, "unaligned position");
    if (n_used > buf->max_clients)
        return problem(report, report_size, "client high-water mark %u > %u", n_used,
                       buf->max_clients);

    /* Client entries, and the read positions to find on the walk. */
    uint64_t *positions = NULL;
    size_t n_pos = 0;
    if (n_used) {
        positions = ut_calloc(n_used, sizeof *positions);
        if (!positions)
            return UT_ENOMEM;
    }
    int err = 0;
    for (uint32_t i = 0; i < n_used && !err; i++) {
        const struct mb_buf_client *e = &buf->clients[i];
        uint32_t in_use = __atomic_load_n(&e->in_use, __ATOMIC_ACQUIRE);
        if (in_use > 1) {
            err = problem(report, report_size, "client entry %u: bad in_use %u", i, in_use);
            break;
        }
        if (!in_use)
            continue;
        uint32_t nreq = __atomic_load_n(&e->n_requests, __ATOMIC_ACQUIRE);
        if (nreq > MB_BUFFER_MAX_REQUESTS) {
            err = problem(report, report_size, "client entry %u: %u requests", i, nreq);
            break;
        }
        for (uint32_t r = 0; r < nreq; r++) {
            uint32_t mode = e->requests[r].mode;
            if ((mode != MB_GET_ALL && mode != MB_GET_SOME) || e->requests[r].trigger_mask == 0)
                err = problem(report, report_size, "client entry %u: bad request %u", i, r);
        }
        uint64_t rp = __atomic_load_n(&e->read_pos, __ATOMIC_SEQ_CST);
        if (rp == MB_BUF_NONE)
            continue;
        uint64_t pos = rp & ~MB_BUF_PIN;
        /* Read positions only grow, so compare with commit_pos as of now. */
        uint64_t commit_now = __atomic_load_n(&h->commit_pos, __ATOMIC_SEQ_CST);
        if (pos < tail || pos > commit_now || pos % MB_BUF_ALIGN ||
            ((rp & MB_BUF_PIN) && pos >= commit_now))
            err = problem(
                report, report_size, "client entry %u: read position %llu outside [%llu, %llu]", i,
                (unsigned long long)pos, (unsigned long long)tail, (unsigned long long)commit_now);
        else if (pos < head)
            positions[n_pos++] = pos;
    }
    if (!err && n_pos)
        qsort(positions, n_pos, sizeof *positions, cmp_u64);

    /* The walk from tail to head. */
    uint64_t p = tail;
    size_t k = 0;
    while (!err && p < head) {
        while (k < n_pos && positions[k] < p) {
            err = problem(report, report_size, "a read position %llu is inside a record",
                          (unsigned long long)positions[k]);
            break;
        }
        if (err)
            break;
        while (k < n_pos && positions[k] == p)
            k++;
        const struct mb_buf_rec *r = mb__buf_rec(buf, p);
        uint32_t size = __atomic_load_n(&r->size, __ATOMIC_RELAXED);
        uint32_t tag = __atomic_load_n(&r->tag, __ATOMIC_RELAXED);
        uint32_t st = __atomic_load_n(&r->state, __ATOMIC_ACQUIRE);
        uint32_t owner = __atomic_load_n(&r->owner, __ATOMIC_RELAXED);
        if (size < MB_BUF_REC_HDR || size % MB_BUF_ALIGN || p % buf->size + size > buf->size ||
            p + size > head || tag != mb__buf_tag(p)) {
            err = problem(report, report_size, "bad record header at %llu (size %u)",
                          (unsigned long long)p, size);
            break;
        }
        switch (st) {
        case MB_REC_PAD:
        case MB_REC_DISCARDED:
            break;
        case MB_REC_COMMITTED: {
            struct mb_event_header ev;
            memcpy(&ev, (const uint8_t *)r + MB_BUF_REC_HDR, sizeof ev);
            if (size < MB_BUF_REC_HDR + sizeof ev || mb__buf_rec_size(ev.data_size) != size)
                err = problem(report, report_size,
                              "event at %llu: data_size %u does not match record size %u",
                              (unsigned long long)p, ev.data_size, size);
            break;
        }
        case MB_REC_RESERVED:
            if (p < commit)
                err = problem(report, report_size, "reserved record at %llu before commit %llu",
                              (unsigned long long)p, (unsigned long long)commit);
            else if (owner >= buf->max_clients ||
                     !__atomic_load_n(&buf->clients[owner].in_use, __ATOMIC_ACQUIRE))
                err =
                    problem(report, report_size, "reserved record at %llu owned by unused entry %u",
                            (unsigned long long)p, owner);
            break;
        default:
            err = problem(report, report_size, "record at %llu has unknown state %#x",
                          (unsigned long long)p, st);
        }
        p += size;
    }
    if (!err && p != head)
        err = problem(report, report_size, "record walk ends at %llu, head is %llu",
                      (unsigned long long)p, (unsigned long long)head);
    if (!err && k < n_pos)
        err = problem(report, report_size, "read position %llu is not a record boundary",
                      (unsigned long long)positions[k]);
    ut_free(positions);
    if (!err && report && report_size)
        ut_strlcpy(report, "ok", report_size);
    return err;
}

int mb_buffer_check(struct mb_buffer *buf, char *report, size_t report_size)
{
    if (!buf)
        return UT_EINVAL;
    int err = UT_LOCK(&buf->lock);
    if (err)
        return err;
    err = mb__buffer_check_locked(buf, report, report_size);
    ut_lock_release(&buf->lock);
    return err;
}

int mb_buffer_stats(struct mb_buffer *buf, struct mb_buffer_stats *out,
                    struct mb_buffer_client_stats *clients, size_t max, size_t *n_clients_out)
{
    if (!buf || !out || (max && (!clients || !n_clients_out)))
        return UT_EINVAL;
    const struct mb_buf_header *h = buf->hdr;
    struct mb_buffer_stats s;
    memset(&s, 0, sizeof s);
    ut_strlcpy(s.name, buf->name, sizeof s.name);
    s.size_bytes = buf->size;
#define LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
    s.n_events_in = LD(h->gone_events_in);
    s.bytes_in = LD(h->gone_bytes_in);
    s.n_events_out = LD(h->gone_events_out);
    s.bytes_out = LD(h->gone_bytes_out);
    s.n_missed = LD(h->gone_missed);
    s.n_discarded = LD(h->n_discarded);
    s.n_recovered = LD(h->n_recovered);
    s.n_removed = LD(h->n_removed);
    s.n_full_waits = LD(h->n_full_waits);
    s.n_wakes = LD(h->n_wakes);
    uint64_t head = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
    uint64_t commit = __atomic_load_n(&h->commit_pos, __ATOMIC_ACQUIRE);
    uint64_t oldest = head;
    size_t n = 0;
    uint32_t n_used = __atomic_load_n(&h->n_used, __ATOMIC_ACQUIRE);
    if (n_used > buf->max_clients)
        n_used = buf->max_clients;
    for (uint32_t i = 0; i < n_used; i++) {
        const struct mb_buf_client *e = &buf->clients[i];
        if (!__atomic_load_n(&e->in_use, __ATOMIC_ACQUIRE))
            continue;
        struct mb_buffer_client_stats c;
        memset(&c, 0, sizeof c);
        c.slot = LD(e->slot);
        c.pid = LD(e->pid);
        uint32_t flags = LD(e->flags);
        uint64_t rp = __atomic_load_n(&e->read_pos, __ATOMIC_ACQUIRE);
        c.producer = (flags & MB_BUF_CF_PRODUCER) != 0;
        c.consumer = rp != MB_BUF_NONE;
        c.get_all = c.consumer && (flags & MB_BUF_CF_GETALL) != 0;
        c.holding = c.consumer && (rp & MB_BUF_PIN) != 0;
        if (c.consumer) {
            uint64_t pos = rp & ~MB_BUF_PIN;
            c.fill_bytes = commit > pos ? commit - pos : 0;
            if (pos < oldest)
                oldest = pos;
        }
        c.n_received = LD(e->n_received);
        c.bytes_received = LD(e->bytes_received);
        c.n_missed = LD(e->n_missed);
        c.n_sent = LD(e->n_sent);
        c.bytes_sent = LD(e->bytes_sent);
        s.n_clients++;
        s.n_producers += c.producer;
        s.n_consumers += c.consumer;
        s.n_events_in += c.n_sent;
        s.bytes_in += c.bytes_sent;
        s.n_events_out += c.n_received;
        s.bytes_out += c.bytes_received;
        s.n_missed += c.n_missed;
        if (n < max)
            clients[n++] = c;
    }
#undef LD
    s.fill_bytes = head > oldest ? head - oldest : 0;
    *out = s;
    if (n_clients_out)
        *n_clients_out = n;
    return 0;
}
