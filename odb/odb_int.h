/*
 * odb/odb_int.h - the ODB's shared-memory layout and internal helpers.
 * Only the sources in odb/ and tests/odb/ include this file.
 *
 * Segment layout (all offsets from the segment base; never pointers):
 *
 *   offset            size                  meaning
 *   0                 64                    struct ut_shm_header
 *   64                sizeof(odb_header)    struct odb_header (lock, counters,
 *                                           free lists, undo control)
 *   hdr->buckets_off  4 * n_buckets         hash buckets: key slot index or NIL
 *   hdr->keys_off     sizeof(key)*max_keys  the key table; slot 0 is the root
 *   hdr->undo_off     undo_size             the undo log (see txn.c)
 *   hdr->heap_off     heap_size             the value heap (buddy blocks)
 *
 * Keys live in fixed slots, so a handle is (slot, generation). The
 * generation grows at every create and delete of the slot, so a handle to a
 * deleted key never matches again, even after the slot is reused.
 *
 * Directories keep their children on a doubly linked sibling list (in
 * creation order) and every key is in one global hash table keyed by
 * (parent slot, lower-cased name), chained through key.hash_next, so a path
 * component costs one hash probe whatever the directory's size.
 *
 * Values live in the heap, in power-of-two blocks (a buddy allocator, see
 * heap.c): block header, then the value. Every value block is owned by
 * exactly one key, which points back to it.
 *
 * Locking: every field of the segment past the ut_shm_header is protected
 * by hdr->lock (rank UT_RANK_ODB), except `n_changes`, which is also read
 * without the lock (atomically) as a cheap "anything changed?" probe.
 *
 * Crash atomicity: before any byte of the segment is changed under the
 * lock, its old contents are appended to the undo log (odb__undo_save).
 * Clearing hdr->undo_used is the commit. A locker that inherits the lock
 * from a dead holder replays the log backwards (txn.c).
 */
#ifndef AURUM_ODB_ODB_INT_H
#define AURUM_ODB_ODB_INT_H

#include "odb/odb.h"

#include "base/banned.h"

#define ODB_KIND           0x4f444231u /* 'ODB1' */
#define ODB_NIL            UINT32_MAX
#define ODB_MAX_LINK_DEPTH 16
#define ODB_MAX_TXN_DEPTH  32
#define ODB_GC_CHUNK       64 /* keys reclaimed per committed GC step */

/* A key slot. 192 bytes; type 0 marks a free slot. */
struct odb_key_slot {
    uint32_t gen;         /* generation, bumped at create and delete */
    uint8_t type;         /* enum odb_type, 0 = free */
    uint8_t mode;         /* enum odb_mode bits */
    uint8_t name_len;     /* bytes in name, 1..63 */
    uint8_t flags;        /* ODB_KF_* */
    uint32_t parent;      /* slot of the parent directory; the root's is itself */
    uint32_t hash_next;   /* next slot in the same hash bucket, or NIL */
    uint32_t name_hash;   /* hash of the lower-cased name (not mixed with parent) */
    uint32_t first_child; /* directories: first child slot, or NIL */
    uint32_t last_child;  /* directories: last child slot, or NIL */
    uint32_t next_sib;    /* next sibling (free slots: next free slot), or NIL */
    uint32_t prev_sib;    /* previous sibling, or NIL */
    uint32_t n_children;  /* directories: number of children */
    uint32_t n_elem;      /* values: number of elements */
    uint32_t elem_size;   /* values: bytes per element */
    uint64_t data;        /* values: heap offset of the value block, or 0 */
    int64_t mtime_ns;     /* last change, CLOCK_REALTIME */
    uint64_t serial;      /* bumped at every change of this key */
    uint32_t n_watch;     /* watches registered on this key (client layer) */
    uint32_t reserved;
    char name[ODB_NAME_MAX + 1];
    uint8_t pad[48];
};
_Static_assert(sizeof(struct odb_key_slot) == 192, "key slot layout");

enum odb_key_flags {
    ODB_KF_GARBAGE = 1u << 0, /* root of a detached subtree awaiting reclamation */
};

#define ODB_HEAP_MIN_ORDER_SHIFT 5  /* smallest block: 32 bytes */
#define ODB_HEAP_ORDERS          27 /* block sizes 32 B .. 2 GiB */

/* The segment header that follows the ut_shm_header. */
struct odb_header {
    struct ut_shlock lock; /* the ODB lock */
    /* The layout fields below are read by every call on every core; they
     * start on their own cache line so the lock's writes never evict them. */
    _Alignas(64) uint32_t max_keys;       /* slots in the key table */
    uint32_t n_buckets;                   /* power of two */
    uint64_t buckets_off, keys_off;       /* segment offsets */
    uint64_t undo_off, undo_size;         /* undo log region */
    uint64_t heap_off, heap_size;         /* value heap region */
    uint32_t n_keys;                      /* slots in use (root included) */
    uint32_t free_key;                    /* head of the free slot list, or NIL */
    uint64_t heap_free_bytes;             /* bytes in free heap blocks */
    uint32_t free_block[ODB_HEAP_ORDERS]; /* free list heads, in 32-byte units, NIL */
    uint32_t garbage;                     /* first detached subtree root, or NIL */
    uint32_t zombie;                      /* first retired value block (32-byte units), or NIL */
    uint64_t undo_used;                   /* bytes of undo records; 0 = nothing in flight */
    uint32_t txn_depth;                   /* nesting of transactions of the holder */
    uint32_t reserved0;
    uint64_t savepoint[ODB_MAX_TXN_DEPTH]; /* undo_used at each begin */
    uint64_t n_changes;                    /* changes ever committed (atomic reads) */
    uint64_t n_rollbacks;                  /* interrupted operations rolled back */
    uint64_t watch_off;                    /* watch table: struct odb_watch[max_watches] */
    uint64_t sub_off;                      /* subscribers: struct odb_subscriber[max_subs] */
    uint32_t max_watches, max_subs;
    uint32_t n_watches; /* watches in use (0: changes skip the search) */
    uint32_t watch_hw;  /* slots below this may be in use */
};

/* A watch registration. key_idx == NIL marks a free entry. */
struct odb_watch {
    uint32_t key_idx; /* watched key slot */
    uint32_t key_gen; /* its generation when the watch was added */
    uint32_t subscriber;
    uint32_t reserved;
};

/* One subscriber's change queue and wake-up word. Cache-line padded. */
struct odb_subscriber {
    uint32_t seq;        /* futex word: bumped at each delivery (atomic) */
    uint32_t sleepers;   /* waiters inside futex_wait (atomic; only they change it) */
    uint32_t head, tail; /* queue positions, head == tail: empty; under the lock */
    uint32_t overflow;   /* changes dropped since the last read; under the lock */
    uint32_t reserved[3];
    struct {
        uint32_t watch_id, key_idx, key_gen;
    } queue[ODB_WATCH_QUEUE];
    uint8_t pad[32];
};
_Static_assert(sizeof(struct odb_subscriber) % 64 == 0, "subscriber padding");

/* Heap block header. Free blocks also hold their free-list links. */
struct odb_block {
    uint16_t magic; /* ODB_BLOCK_USED or ODB_BLOCK_FREE */
    uint8_t order;  /* size is 32 << order */
    uint8_t reserved;
    uint32_t owner; /* used: owning key slot */
    uint32_t next;  /* free: next free block of this order, 32-byte units, or NIL */
    uint32_t prev;  /* free: previous, or NIL */
};
#define ODB_BLOCK_USED   0xb10cu
#define ODB_BLOCK_FREE   0xf4eeu
#define ODB_BLOCK_ZOMBIE 0x2b1eu /* retired, on the zombie list (next = link) */
#define ODB_BLOCK_HDR    8u      /* payload starts here (keeps 8-byte alignment) */

/* Process-local handle to an open ODB. */
struct odb {
    struct ut_shm shm;
    struct odb_header *hdr;
    struct ut_lock lock;
    uint8_t *base;             /* == shm.base */
    struct odb_key_slot *keys; /* key table */
    uint32_t *buckets;
    uint8_t *heap;
    struct odb_watch *watches;
    struct odb_subscriber *subs;
    /* Subscribers to wake after the lock is released; process-local, only
     * touched by the thread holding the ODB lock. */
    uint32_t wake[64];
    uint32_t n_wake;
    bool wake_all; /* more than fit in wake[]: wake every sleeper */
};

/* The segment fingerprint: changes when any layout struct changes. */
uint64_t odb__fingerprint(void);

/* Per-thread error message helpers. odb__fail sets the message and returns
 * err unchanged, so "return odb__fail(err, ...)" reads naturally. It is a
 * macro so that the static analyzer sees its value is err: it does not
 * inline variadic functions, so a function here would look as if it could
 * return 0 and leave the caller's outputs unset. err must not have side
 * effects and is evaluated after the message is formatted. */
void odb__set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define odb__fail(err, ...) (odb__set_error(__VA_ARGS__), (err))
void odb__clear_error(void);

/* Lock + transaction plumbing (txn.c). begin takes the lock and opens a
 * savepoint; end commits (err == 0) or rolls back to the savepoint
 * (err != 0), releases the lock and returns err (or an error of the
 * commit). */
int odb__begin(struct odb *odb);
int odb__end(struct odb *odb, int err);
/* Read-only section: lock only. */
int odb__rlock(struct odb *odb);
void odb__runlock(struct odb *odb);

/* Records the old contents of [p, p+len) before they are changed. Returns
 * 0 or ODB_ETOOBIG. */
int odb__undo_save(struct odb *odb, const void *p, size_t len);
/* The robust-lock recovery callback: rolls back an interrupted operation,
 * reclaims detached subtrees, then runs the integrity check. */
int odb__recover(void *arg);
/* Reclaims detached subtrees in committed chunks. Lock held, no txn open. */
void odb__gc(struct odb *odb);

/* Heap (heap.c). */
void odb__heap_init(struct odb *odb);
int odb__heap_alloc(struct odb *odb, size_t payload, uint32_t owner, uint64_t *off_out);
int odb__heap_free(struct odb *odb, uint64_t off);
/* Retires a value block inside a transaction: it joins the zombie list and
 * is freed after the outermost commit (see txn.c for why). */
int odb__heap_retire(struct odb *odb, uint64_t off);
/* Frees the first block of the zombie list. */
int odb__heap_free_zombie(struct odb *odb);
size_t odb__heap_capacity(const struct odb *odb, uint64_t off);
/* Pointer to a block's payload, or NULL when off is not a valid used block. */
void *odb__heap_payload(const struct odb *odb, uint64_t off);
int odb__heap_check(struct odb *odb, char *report, size_t size, uint32_t *n_used_out);

/* Tree (tree.c). */
struct odb_key_slot *odb__key(const struct odb *odb, struct odb_hkey h); /* NULL if stale */
int odb__key_checked(const struct odb *odb, struct odb_hkey h, struct odb_key_slot **out);
struct odb_hkey odb__handle(const struct odb *odb, uint32_t idx);
int odb__resolve(struct odb *odb, struct odb_hkey base, const char *path, bool follow_last,
                 uint32_t *idx_out);
int odb__create(struct odb *odb, struct odb_hkey base, const char *path, enum odb_type type,
                uint32_t n_elem, uint32_t elem_size, uint32_t *idx_out);
/* Updates a key's mtime and serial and tells its watchers (odb__touch),
 * or only updates them (odb__touch_quiet, for a directory whose change is
 * reported through the child that caused it). */
int odb__touch(struct odb *odb, uint32_t idx);
int odb__touch_quiet(struct odb *odb, uint32_t idx);
int odb__free_key(struct odb *odb, uint32_t idx);
uint32_t odb__name_hash(const char *name, size_t len);
uint32_t odb__bucket(const struct odb *odb, uint32_t parent, uint32_t name_hash);
bool odb__name_valid(const char *name, size_t len);

/* Watches (watch.c). Queues a change of key idx for every watch on it or
 * an ancestor (logged, so a rollback drops it). */
int odb__watch_notify(struct odb *odb, uint32_t idx);
/* After unlock: wakes those of `subs` (or, with `all`, of every
 * subscriber) that announced they sleep. */
void odb__watch_wake(struct odb *odb, const uint32_t *subs, uint32_t n, bool all);
void odb__watch_forget_wakes(struct odb *odb);

/* Values (value.c). */
int odb__set_value(struct odb *odb, uint32_t idx, enum odb_type type, const void *data, size_t size,
                   uint32_t n_elem);

#endif
