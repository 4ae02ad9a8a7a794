/*
 * odb/heap.c - the value heap: a buddy allocator over the heap region.
 *
 * Blocks are 32 << order bytes, aligned to their size relative to the heap
 * start; a block of order k at relative offset r has its buddy at r ^ size.
 * The heap is tiled at creation by the largest aligned blocks that fit, so
 * a heap of any size (a multiple of 32) is used whole. Each block starts
 * with struct odb_block: magic (USED, FREE or ZOMBIE), order, owner key;
 * free blocks keep their doubly linked free-list links in the same header,
 * one list per order, linked in 32-byte units relative to the heap.
 *
 * All changes are logged to the undo log first (odb__undo_save). An
 * allocation only takes blocks that were free when the transaction began
 * (frees happen only in reclamation steps, which never allocate), so the
 * payload of a new block needs no logging: rollback makes it free again.
 *
 * Everything read from a block header is checked before use: a header is
 * trusted only when its magic, order and alignment agree.
 */
#include "odb/odb_int.h"

#include <stdio.h>
#include <string.h>

#define UNIT 32u

static uint64_t block_size(unsigned order)
{
    return (uint64_t)UNIT << order;
}

static struct odb_block *block_at(const struct odb *odb, uint64_t rel)
{
    return (struct odb_block *)(void *)(odb->heap + rel); /* blocks are 32-byte aligned */
}

/* Log-then-write helpers. Each returns 0 or ODB_ETOOBIG. */
#define LOGGED_SET(odb, field, value)                                                              \
    do {                                                                                           \
        int log_err_ = odb__undo_save((odb), &(field), sizeof(field));                             \
        if (log_err_)                                                                              \
            return log_err_;                                                                       \
        (field) = (value);                                                                         \
    } while (0)

static int list_push(struct odb *odb, uint64_t rel, unsigned order)
{
    struct odb_header *hdr = odb->hdr;
    struct odb_block *b = block_at(odb, rel);
    uint32_t unit = (uint32_t)(rel / UNIT);
    uint32_t head = hdr->free_block[order];
    int err = odb__undo_save(odb, b, sizeof *b);
    if (err)
        return err;
    *b = (struct odb_block){ODB_BLOCK_FREE, (uint8_t)order, 0, ODB_NIL, head, ODB_NIL};
    if (head != ODB_NIL)
        LOGGED_SET(odb, block_at(odb, (uint64_t)head * UNIT)->prev, unit);
    LOGGED_SET(odb, hdr->free_block[order], unit);
    LOGGED_SET(odb, hdr->heap_free_bytes, hdr->heap_free_bytes + block_size(order));
    return 0;
}

static int list_unlink(struct odb *odb, uint64_t rel, unsigned order)
{
    struct odb_header *hdr = odb->hdr;
    struct odb_block *b = block_at(odb, rel);
    int err = odb__undo_save(odb, b, sizeof *b);
    if (err)
        return err;
    if (b->prev != ODB_NIL)
        LOGGED_SET(odb, block_at(odb, (uint64_t)b->prev * UNIT)->next, b->next);
    else
        LOGGED_SET(odb, hdr->free_block[order], b->next);
    if (b->next != ODB_NIL)
        LOGGED_SET(odb, block_at(odb, (uint64_t)b->next * UNIT)->prev, b->prev);
    LOGGED_SET(odb, hdr->heap_free_bytes, hdr->heap_free_bytes - block_size(order));
    return 0;
}

void odb__heap_init(struct odb *odb)
{
    struct odb_header *hdr = odb->hdr;
    for (unsigned k = 0; k < ODB_HEAP_ORDERS; k++)
        hdr->free_block[k] = ODB_NIL;
    hdr->zombie = ODB_NIL;
    hdr->heap_free_bytes = 0;
    uint64_t rel = 0;
    while (rel + UNIT <= hdr->heap_size) {
        unsigned k = ODB_HEAP_ORDERS - 1;
        while (k > 0 && (rel % block_size(k) != 0 || rel + block_size(k) > hdr->heap_size))
            k--;
        /* Creation runs before anyone can attach: logging would be useless,
         * and the undo log is empty and large enough for these few records,
         * which are discarded right after. */
        int err = list_push(odb, rel, k);
        UT_ASSERT(err == 0);
        hdr->undo_used = 0;
        rel += block_size(k);
    }
}

static bool rel_valid(const struct odb *odb, uint64_t off, uint64_t *rel_out)
{
    const struct odb_header *hdr = odb->hdr;
    if (off < hdr->heap_off || off >= hdr->heap_off + hdr->heap_size)
        return false;
    uint64_t rel = off - hdr->heap_off;
    if (rel % UNIT)
        return false;
    *rel_out = rel;
    return true;
}

/* Validates a block header in place: magic, order, alignment, bounds. */
static bool header_sane(const struct odb *odb, uint64_t rel, const struct odb_block *b)
{
    if (b->order >= ODB_HEAP_ORDERS)
        return false;
    uint64_t size = block_size(b->order);
    return rel % size == 0 && rel + size <= odb->hdr->heap_size;
}

void *odb__heap_payload(const struct odb *odb, uint64_t off)
{
    uint64_t rel;
    if (!rel_valid(odb, off, &rel))
        return NULL;
    struct odb_block *b = block_at(odb, rel);
    if (b->magic != ODB_BLOCK_USED || !header_sane(odb, rel, b))
        return NULL;
    return (uint8_t *)b + ODB_BLOCK_HDR;
}

size_t odb__heap_capacity(const struct odb *odb, uint64_t off)
{
    uint64_t rel;
    if (!rel_valid(odb, off, &rel))
        return 0;
    struct odb_block *b = block_at(odb, rel);
    if (!header_sane(odb, rel, b))
        return 0;
    return (size_t)(block_size(b->order) - ODB_BLOCK_HDR);
}

int odb__heap_alloc(struct odb *odb, size_t payload, uint32_t owner, uint64_t *off_out)
{
    struct odb_header *hdr = odb->hdr;
    unsigned k = 0;
    while (k < ODB_HEAP_ORDERS && block_size(k) - ODB_BLOCK_HDR < payload)
        k++;
    if (k >= ODB_HEAP_ORDERS)
        return odb__fail(ODB_ENOSPC, "value of %zu bytes is larger than any heap block", payload);
    unsigned j = k;
    while (j < ODB_HEAP_ORDERS && hdr->free_block[j] == ODB_NIL)
        j++;
    if (j >= ODB_HEAP_ORDERS)
        return odb__fail(ODB_ENOSPC, "no free heap block for %zu bytes (%llu bytes free)", payload,
                         (unsigned long long)hdr->heap_free_bytes);
    uint64_t rel = (uint64_t)hdr->free_block[j] * UNIT;
    int err = list_unlink(odb, rel, j);
    if (err)
        return err;
    while (j > k) {
        j--;
        err = list_push(odb, rel + block_size(j), j);
        if (err)
            return err;
    }
    struct odb_block *b = block_at(odb, rel);
    /* list_unlink logged the whole header already. */
    *b = (struct odb_block){ODB_BLOCK_USED, (uint8_t)k, 0, owner, ODB_NIL, ODB_NIL};
    *off_out = hdr->heap_off + rel;
    return 0;
}

int odb__heap_free(struct odb *odb, uint64_t off)
{
    uint64_t rel;
    UT_ASSERT(rel_valid(odb, off, &rel));
    struct odb_block *b = block_at(odb, rel);
    UT_ASSERT((b->magic == ODB_BLOCK_USED || b->magic == ODB_BLOCK_ZOMBIE) &&
              header_sane(odb, rel, b));
    unsigned k = b->order;
    int err = odb__undo_save(odb, b, sizeof *b);
    if (err)
        return err;
    b->magic = 0; /* no longer used; becomes FREE below */
    while (k + 1 < ODB_HEAP_ORDERS) {
        uint64_t size = block_size(k);
        uint64_t buddy = rel ^ size;
        uint64_t low = rel < buddy ? rel : buddy;
        if (low + 2 * size > odb->hdr->heap_size)
            break;
        struct odb_block *bb = block_at(odb, buddy);
        if (bb->magic != ODB_BLOCK_FREE || bb->order != k)
            break;
        err = list_unlink(odb, buddy, k);
        if (err)
            return err;
        rel = low;
        k++;
    }
    return list_push(odb, rel, k);
}

int odb__heap_retire(struct odb *odb, uint64_t off)
{
    struct odb_header *hdr = odb->hdr;
    uint64_t rel;
    UT_ASSERT(rel_valid(odb, off, &rel));
    struct odb_block *b = block_at(odb, rel);
    UT_ASSERT(b->magic == ODB_BLOCK_USED);
    int err = odb__undo_save(odb, b, sizeof *b);
    if (err)
        return err;
    b->magic = ODB_BLOCK_ZOMBIE;
    b->owner = ODB_NIL;
    b->next = hdr->zombie;
    LOGGED_SET(odb, hdr->zombie, (uint32_t)(rel / UNIT));
    return 0;
}

int odb__heap_free_zombie(struct odb *odb)
{
    struct odb_header *hdr = odb->hdr;
    uint64_t rel = (uint64_t)hdr->zombie * UNIT;
    struct odb_block *b = block_at(odb, rel);
    UT_ASSERT(rel < hdr->heap_size && b->magic == ODB_BLOCK_ZOMBIE);
    LOGGED_SET(odb, hdr->zombie, b->next);
    return odb__heap_free(odb, hdr->heap_off + rel);
}

#define REPORT(...)                                                                                \
    do {                                                                                           \
        if (report && report_size)                                                                 \
            snprintf(report, report_size, __VA_ARGS__);                                            \
        return UT_ECORRUPT;                                                                        \
    } while (0)

int odb__heap_check(struct odb *odb, char *report, size_t report_size, uint32_t *n_used_out)
{
    const struct odb_header *hdr = odb->hdr;
    uint64_t n_free[ODB_HEAP_ORDERS] = {0};
    uint64_t free_bytes = 0, n_zombie = 0;
    uint32_t n_used = 0;
    uint64_t rel = 0;
    while (rel < hdr->heap_size) {
        const struct odb_block *b = block_at(odb, rel);
        if (!header_sane(odb, rel, b))
            REPORT("heap block at %llu: bad order %u or misaligned", (unsigned long long)rel,
                   b->order);
        switch (b->magic) {
        case ODB_BLOCK_FREE:
            n_free[b->order]++;
            free_bytes += block_size(b->order);
            break;
        case ODB_BLOCK_ZOMBIE:
            n_zombie++;
            break;
        case ODB_BLOCK_USED: {
            if (b->owner >= hdr->max_keys)
                REPORT("heap block at %llu: owner %u out of range", (unsigned long long)rel,
                       b->owner);
            const struct odb_key_slot *k = &odb->keys[b->owner];
            if (k->type == 0 || k->type == ODB_TYPE_DIR || k->data != hdr->heap_off + rel)
                REPORT("heap block at %llu: owner key %u does not point back to it",
                       (unsigned long long)rel, b->owner);
            if ((uint64_t)k->n_elem * k->elem_size > block_size(b->order) - ODB_BLOCK_HDR)
                REPORT("heap block at %llu: value of key %u overflows its block",
                       (unsigned long long)rel, b->owner);
            n_used++;
            break;
        }
        default:
            REPORT("heap block at %llu: bad magic 0x%x", (unsigned long long)rel, b->magic);
        }
        rel += block_size(b->order);
    }
    if (rel != hdr->heap_size)
        REPORT("heap blocks overrun the heap end");
    if (free_bytes != hdr->heap_free_bytes)
        REPORT("heap free bytes %llu, header says %llu", (unsigned long long)free_bytes,
               (unsigned long long)hdr->heap_free_bytes);
    for (unsigned k = 0; k < ODB_HEAP_ORDERS; k++) {
        uint64_t n = 0;
        uint32_t prev = ODB_NIL;
        for (uint32_t u = hdr->free_block[k]; u != ODB_NIL; n++) {
            uint64_t r = (uint64_t)u * UNIT;
            if (n >= n_free[k] || r >= hdr->heap_size)
                REPORT("free list %u: more entries than free blocks, or a cycle", k);
            const struct odb_block *b = block_at(odb, r);
            if (b->magic != ODB_BLOCK_FREE || b->order != k || b->prev != prev)
                REPORT("free list %u: bad entry at %llu", k, (unsigned long long)r);
            prev = u;
            u = b->next;
        }
        if (n != n_free[k])
            REPORT("free list %u: %llu entries for %llu free blocks", k, (unsigned long long)n,
                   (unsigned long long)n_free[k]);
    }
    uint64_t nz = 0;
    for (uint32_t u = hdr->zombie; u != ODB_NIL; nz++) {
        uint64_t r = (uint64_t)u * UNIT;
        if (nz >= n_zombie || r >= hdr->heap_size || block_at(odb, r)->magic != ODB_BLOCK_ZOMBIE)
            REPORT("zombie list: bad entry or cycle");
        u = block_at(odb, r)->next;
    }
    if (nz != n_zombie)
        REPORT("zombie list: %llu entries for %llu retired blocks", (unsigned long long)nz,
               (unsigned long long)n_zombie);
    *n_used_out = n_used;
    return 0;
}
