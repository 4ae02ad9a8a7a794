/*
 * odb/segment.c - creating, attaching and describing the ODB segment;
 * type names; the per-thread error message.
 *
 * Sizing at creation: the key table gets max_keys slots of 192 bytes, the
 * hash table the next power of two >= max_keys buckets, the undo log a
 * quarter of the segment (at least 64 KiB), and the value heap the rest.
 */
#include "odb/odb_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static __thread char errmsg[512];

void odb__set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, sizeof errmsg, fmt, ap);
    va_end(ap);
}

void odb__clear_error(void)
{
    errmsg[0] = '\0';
}

const char *odb_errmsg(void)
{
    return errmsg;
}

static const struct {
    const char *name;
    size_t size;
} type_table[ODB_TYPE_MAX] = {
    [ODB_TYPE_DIR] = {"DIR", 0},       [ODB_TYPE_INT8] = {"INT8", 1},
    [ODB_TYPE_UINT8] = {"UINT8", 1},   [ODB_TYPE_INT16] = {"INT16", 2},
    [ODB_TYPE_UINT16] = {"UINT16", 2}, [ODB_TYPE_INT32] = {"INT32", 4},
    [ODB_TYPE_UINT32] = {"UINT32", 4}, [ODB_TYPE_INT64] = {"INT64", 8},
    [ODB_TYPE_UINT64] = {"UINT64", 8}, [ODB_TYPE_FLOAT] = {"FLOAT", 4},
    [ODB_TYPE_DOUBLE] = {"DOUBLE", 8}, [ODB_TYPE_BOOL] = {"BOOL", 1},
    [ODB_TYPE_STRING] = {"STRING", 0}, [ODB_TYPE_LINK] = {"LINK", 0},
};

const char *odb_type_name(enum odb_type type)
{
    if (type <= 0 || type >= ODB_TYPE_MAX)
        return "INVALID";
    return type_table[type].name;
}

enum odb_type odb_type_from_name(const char *name)
{
    for (int t = ODB_TYPE_DIR; t < ODB_TYPE_MAX; t++)
        if (strcasecmp(name, type_table[t].name) == 0)
            return (enum odb_type)t;
    return 0;
}

size_t odb_type_size(enum odb_type type)
{
    if (type <= 0 || type >= ODB_TYPE_MAX)
        return 0;
    return type_table[type].size;
}

uint64_t odb__fingerprint(void)
{
    uint64_t f = 0x4f4442u;
    const uint64_t parts[] = {sizeof(struct odb_header),
                              sizeof(struct odb_key_slot),
                              sizeof(struct odb_block),
                              sizeof(struct ut_shlock),
                              offsetof(struct odb_header, undo_used),
                              ODB_HEAP_ORDERS,
                              ODB_NAME_MAX};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        f = (f ^ parts[i]) * 1099511628211ull;
    return f;
}

static size_t align_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

static void bind(struct odb *odb)
{
    struct odb_header *hdr = odb->hdr;
    odb->base = odb->shm.base;
    /* Every region starts on a 64-byte boundary (format_segment), so the
     * casts through void * below are aligned. */
    odb->keys = (struct odb_key_slot *)(void *)(odb->base + hdr->keys_off);
    odb->buckets = (uint32_t *)(void *)(odb->base + hdr->buckets_off);
    odb->heap = odb->base + hdr->heap_off;
    odb->watches = (struct odb_watch *)(void *)(odb->base + hdr->watch_off);
    odb->subs = (struct odb_subscriber *)(void *)(odb->base + hdr->sub_off);
}

/* Lays out a fresh segment. Returns 0 or UT_EINVAL when it is too small. */
static int format_segment(struct odb *odb, const struct odb_params *p)
{
    size_t size = odb->shm.size;
    uint32_t max_keys = p->max_keys;
    uint32_t n_buckets = 1;
    while (n_buckets < max_keys)
        n_buckets <<= 1;
    size_t off = align_up(sizeof(struct ut_shm_header) + sizeof(struct odb_header), 64);
    size_t buckets_off = off;
    off = align_up(off + (size_t)n_buckets * 4, 64);
    size_t keys_off = off;
    off = align_up(off + (size_t)max_keys * sizeof(struct odb_key_slot), 64);
    size_t watch_off = off;
    off = align_up(off + (size_t)p->max_watches * sizeof(struct odb_watch), 64);
    size_t sub_off = off;
    off = align_up(off + (size_t)p->max_subscribers * sizeof(struct odb_subscriber), 64);
    size_t undo_size = align_up(size / 4 > 65536 ? size / 4 : 65536, 64);
    size_t undo_off = off;
    off += undo_size;
    size_t heap_off = align_up(off, 64);
    if (heap_off + 4096 > size)
        return odb__fail(UT_EINVAL, "a %zu-byte segment is too small for %u keys", size, max_keys);
    size_t heap_size = (size - heap_off) / 32 * 32;

    struct odb_header *hdr =
        (struct odb_header *)(void *)((uint8_t *)odb->shm.base + sizeof(struct ut_shm_header));
    odb->hdr = hdr;
    int err = ut_shlock_init(&hdr->lock);
    if (err)
        return err;
    hdr->max_keys = max_keys;
    hdr->n_buckets = n_buckets;
    hdr->buckets_off = buckets_off;
    hdr->keys_off = keys_off;
    hdr->undo_off = undo_off;
    hdr->undo_size = undo_size;
    hdr->heap_off = heap_off;
    hdr->heap_size = heap_size;
    hdr->garbage = ODB_NIL;
    hdr->watch_off = watch_off;
    hdr->sub_off = sub_off;
    hdr->max_watches = p->max_watches;
    hdr->max_subs = p->max_subscribers;
    bind(odb);
    for (uint32_t i = 0; i < p->max_watches; i++)
        odb->watches[i].key_idx = ODB_NIL;
    for (uint32_t i = 0; i < n_buckets; i++)
        odb->buckets[i] = ODB_NIL;
    /* Slot 0 is the root; slots 1.. form the free list in order. */
    for (uint32_t i = 0; i < max_keys; i++) {
        struct odb_key_slot *k = &odb->keys[i];
        memset(k, 0, sizeof *k);
        k->first_child = k->last_child = k->prev_sib = k->hash_next = ODB_NIL;
        k->next_sib = i + 1 < max_keys ? i + 1 : ODB_NIL;
    }
    struct odb_key_slot *root = &odb->keys[0];
    root->gen = 1;
    root->type = ODB_TYPE_DIR;
    root->mode = ODB_MODE_READ | ODB_MODE_WRITE;
    root->parent = 0;
    root->next_sib = ODB_NIL;
    root->mtime_ns = ut_wall_ns();
    hdr->free_key = max_keys > 1 ? 1 : ODB_NIL;
    hdr->n_keys = 1;
    odb__heap_init(odb);
    return 0;
}

/* Checks that the header's layout numbers describe this segment before
 * anything is dereferenced through them. */
static int header_sane(const struct odb *odb)
{
    const struct odb_header *h = odb->hdr;
    size_t size = odb->shm.size;
    if (h->max_keys == 0 || h->n_buckets < h->max_keys || (h->n_buckets & (h->n_buckets - 1)))
        return UT_ECORRUPT;
    if (h->buckets_off + (uint64_t)h->n_buckets * 4 > h->keys_off ||
        h->keys_off + (uint64_t)h->max_keys * sizeof(struct odb_key_slot) > h->watch_off ||
        h->watch_off + (uint64_t)h->max_watches * sizeof(struct odb_watch) > h->sub_off ||
        h->sub_off + (uint64_t)h->max_subs * sizeof(struct odb_subscriber) > h->undo_off ||
        h->undo_off + h->undo_size > h->heap_off || h->heap_off + h->heap_size > size ||
        h->buckets_off < sizeof(struct ut_shm_header) + sizeof(struct odb_header))
        return UT_ECORRUPT;
    if ((h->buckets_off | h->keys_off | h->watch_off | h->sub_off | h->undo_off | h->heap_off) % 64)
        return UT_ECORRUPT; /* bind() relies on aligned regions */
    return 0;
}

int odb_open(const char *shm_name, unsigned flags, const struct odb_params *params,
             struct odb **out)
{
    odb__clear_error();
    struct odb_params p = {8u << 20, 0, 10000, 4096, 1024};
    if (params) {
        if (params->size_bytes)
            p.size_bytes = params->size_bytes;
        if (params->max_keys)
            p.max_keys = params->max_keys;
        if (params->lock_timeout_ms)
            p.lock_timeout_ms = params->lock_timeout_ms;
        if (params->max_watches)
            p.max_watches = params->max_watches;
        if (params->max_subscribers)
            p.max_subscribers = params->max_subscribers;
    }
    if (!p.max_keys)
        p.max_keys = (uint32_t)(p.size_bytes / 1024);
    if (p.max_keys < 16 || p.max_keys > (1u << 28))
        return odb__fail(UT_EINVAL, "max_keys %u out of range", p.max_keys);
    if (p.max_watches > (1u << 24) || p.max_subscribers > (1u << 20))
        return odb__fail(UT_EINVAL, "max_watches or max_subscribers out of range");

    struct odb *odb = ut_calloc(1, sizeof *odb);
    if (!odb)
        return UT_ENOMEM;
    int err = ut_shm_open(&odb->shm, shm_name, p.size_bytes, ODB_KIND, odb__fingerprint(),
                          (flags & ODB_OPEN_CREATE) != 0, p.lock_timeout_ms);
    if (err) {
        ut_free(odb);
        return odb__fail(err, "cannot open ODB segment %s: %s", shm_name, ut_strerror(err));
    }
    odb->hdr =
        (struct odb_header *)(void *)((uint8_t *)odb->shm.base + sizeof(struct ut_shm_header));
    if (odb->shm.created) {
        err = format_segment(odb, &p);
        if (err) {
            ut_shm_close(&odb->shm);
            ut_shm_unlink(shm_name);
            ut_free(odb);
            return err;
        }
        ut_shm_ready(&odb->shm);
    } else {
        err = header_sane(odb);
        if (err) {
            ut_shm_close(&odb->shm);
            ut_free(odb);
            return odb__fail(err, "ODB segment %s has an inconsistent header", shm_name);
        }
        bind(odb);
    }
    ut_lock_bind(&odb->lock, &odb->hdr->lock, "odb", UT_RANK_ODB, p.lock_timeout_ms, odb__recover,
                 odb);
    *out = odb;
    return 0;
}

void odb_close(struct odb *odb)
{
    if (!odb)
        return;
    UT_ASSERT(!ut_lock_held(&odb->lock));
    ut_shm_close(&odb->shm);
    ut_free(odb);
}

int odb_destroy(const char *shm_name)
{
    return ut_shm_unlink(shm_name);
}

int odb_stats(struct odb *odb, struct odb_stats *out)
{
    odb__clear_error();
    int err = odb__rlock(odb);
    if (err)
        return err;
    const struct odb_header *h = odb->hdr;
    struct odb_stats s = {0};
    s.size_bytes = odb->shm.size;
    s.heap_bytes = h->heap_size;
    s.heap_free_bytes = h->heap_free_bytes;
    s.max_keys = h->max_keys;
    s.n_keys = h->n_keys;
    s.n_changes = h->n_changes;
    s.lock_acquired = h->lock.n_acquired;
    s.lock_contended = h->lock.n_contended;
    s.lock_wait_ns = h->lock.wait_ns;
    s.lock_owner_died = h->lock.n_owner_died;
    s.n_rollbacks = h->n_rollbacks;
    odb__runlock(odb);
    *out = s;
    return 0;
}
