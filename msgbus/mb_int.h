/*
 * msgbus/mb_int.h - private layout and helpers of the message bus. Only the
 * sources in msgbus/ and tests/msgbus/ include this file.
 *
 * System-message ring segment (offsets from the segment base; all
 * little-endian host integers, never pointers):
 *
 *   offset  size            meaning                                   lock
 *   0       64              struct ut_shm_header                      immutable
 *   64      4               n_slots: capacity in messages             immutable
 *   68      4               slot_size: MB_MSG_SLOT_SIZE               immutable
 *   72      8               slots_off: MB_MSG_SLOTS_OFF               immutable
 *   80      8               first_seq: oldest message stored          ring lock
 *   88      8               last_seq: newest published message        ring lock (writes)
 *   96      8               base_seq: first_seq at creation           immutable
 *   104     24              reserved
 *   128     4               futex_word: bumped at every publish       atomic
 *   132     4               n_waiters: threads in mb_msg_wait         atomic
 *   136     8               n_wakes: FUTEX_WAKE calls                 atomic
 *   144     48              reserved
 *   192     8               n_posted                                  ring lock, atomic
 *   200     8               n_deferred                                atomic
 *   208     8               n_lost                                    atomic
 *   216     8               n_recovered                               ring lock, atomic
 *   224     8               n_discarded                               ring lock, atomic
 *   232     24              reserved
 *   256     256             struct ut_shlock, the ring lock (padded)  itself
 *   512     n_slots * 1088  the slots; seq s lives in slot s % n_slots
 *
 * Slot (MB_MSG_SLOT_SIZE = 1088 bytes, 64-byte aligned):
 *
 *   offset  size  meaning
 *   0       8     seq: the message's sequence number; 0 = empty or invalid
 *   8       8     time_ns: CLOCK_REALTIME of the post
 *   16      4     type: enum mb_msg_type
 *   20      4     pid of the poster
 *   24      4     text_len: bytes of text, <= MB_MSG_TEXT_MAX
 *   28      4     reserved
 *   32      32    source: NUL-terminated client name
 *   64      1024  text: text_len bytes, then a NUL
 *
 * Invariants, true whenever the ring lock is free (and restored by the
 * recovery callback when its holder died):
 *   - 1 <= first_seq <= last_seq + 1 and last_seq + 1 - first_seq <= n_slots;
 *   - every seq s in [first_seq, last_seq] is in slot s % n_slots, complete,
 *     with slot.seq == s, type < MB_MSG_TYPE_MAX, text_len <= MB_MSG_TEXT_MAX
 *     and text[text_len] == 0;
 *   - futex_word changes after last_seq grows.
 * Readers still check every record they copy (a writer may have died or
 * the segment may be damaged) and return UT_ECORRUPT on a failed check.
 *
 * (Event buffers add their own section below.)
 */
#ifndef AURUM_MSGBUS_MB_INT_H
#define AURUM_MSGBUS_MB_INT_H

#include "msgbus/mb.h"

#include <stdatomic.h>

/* ---------------------------------------------------------------------- */
/* System messages                                                         */
/* ---------------------------------------------------------------------- */

#define MB_MSG_KIND          0x4d534731u /* 'MSG1' */
#define MB_MSG_SLOT_SIZE     1088u
#define MB_MSG_SLOTS_OFF     512u
#define MB_MSG_MIN_SLOTS     4u
#define MB_MSG_MAX_SLOTS     (1u << 20)
#define MB_MSG_WAIT_SLICE_MS 100 /* futex waits are cut into slices this long */

struct mb_msg_slot {
    uint64_t seq;      /* 0 = empty; stored last, with release order */
    int64_t time_ns;   /* CLOCK_REALTIME, ns */
    uint32_t type;     /* enum mb_msg_type */
    uint32_t pid;      /* poster */
    uint32_t text_len; /* bytes, <= MB_MSG_TEXT_MAX */
    uint32_t reserved;
    char source[MB_MSG_SOURCE_MAX + 1]; /* NUL-terminated */
    char text[MB_MSG_TEXT_MAX + 1];     /* text_len bytes, then NUL */
};
_Static_assert(sizeof(struct mb_msg_slot) == MB_MSG_SLOT_SIZE, "message slot layout");
_Static_assert(offsetof(struct mb_msg_slot, source) == 32, "message slot layout");
_Static_assert(offsetof(struct mb_msg_slot, text) == 64, "message slot layout");

/* The ring's header; it follows the ut_shm_header at segment offset 64. */
struct mb_msg_header {
    uint32_t n_slots;   /* capacity; immutable */
    uint32_t slot_size; /* MB_MSG_SLOT_SIZE; immutable */
    uint64_t slots_off; /* MB_MSG_SLOTS_OFF; immutable */
    uint64_t first_seq; /* oldest message stored; under the ring lock */
    uint64_t last_seq;  /* newest published; written under the ring lock, read atomically */
    uint64_t base_seq;  /* first_seq at creation; immutable */
    uint8_t reserved0[24];
    uint32_t futex_word; /* bumped after each publish; FUTEX_WAIT/WAKE word (shared) */
    uint32_t n_waiters;  /* threads inside mb_msg_wait's futex wait; atomic */
    uint64_t n_wakes;    /* FUTEX_WAKE calls; atomic */
    uint8_t reserved1[48];
    uint64_t n_posted;    /* messages published; written under the ring lock, atomic */
    uint64_t n_deferred;  /* posts deferred; atomic */
    uint64_t n_lost;      /* deferred messages dropped; atomic */
    uint64_t n_recovered; /* recoveries after a dead holder; under the ring lock, atomic */
    uint64_t n_discarded; /* half-written posts discarded; under the ring lock, atomic */
    uint8_t reserved2[24];
    union {
        struct ut_shlock lock; /* the ring lock, rank UT_RANK_MSG, name "msg" */
        uint8_t lock_space[256];
    };
};
_Static_assert(sizeof(struct ut_shlock) <= 256, "ring lock space");
_Static_assert(offsetof(struct mb_msg_header, first_seq) == 80 - 64, "ring header layout");
_Static_assert(offsetof(struct mb_msg_header, futex_word) == 128 - 64, "ring header layout");
_Static_assert(offsetof(struct mb_msg_header, n_posted) == 192 - 64, "ring header layout");
_Static_assert(offsetof(struct mb_msg_header, lock) == 256 - 64, "ring header layout");
_Static_assert(sizeof(struct ut_shm_header) + sizeof(struct mb_msg_header) == MB_MSG_SLOTS_OFF,
               "ring header layout");

/* Process-local handle. */
struct mb_msgring {
    struct ut_shm shm;
    struct mb_msg_header *hdr; /* in shm, at base + 64 */
    struct mb_msg_slot *slots; /* in shm, at base + MB_MSG_SLOTS_OFF */
    uint32_t n_slots;          /* validated copy of hdr->n_slots; used for all indexing */
    struct ut_lock lock;       /* bound to hdr->lock */
    atomic_long refs;          /* 1 for the opener (until close) + 1 per deferred message */
};

/* The slot that holds (or will hold) seq. */
static inline struct mb_msg_slot *mb__msg_slot(const struct mb_msgring *ring, uint64_t seq)
{
    return &ring->slots[seq % ring->n_slots];
}

#include "base/banned.h"

#endif
