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
 * Event-buffer segment (offsets from the segment base; host integers,
 * never pointers; C = max_clients, S = ring size):
 *
 *   offset  size        meaning                                       lock
 *   0       64          struct ut_shm_header                          immutable
 *   64      32          name: NUL-terminated buffer name              immutable
 *   96      8           size: ring bytes S (multiple of 4096)         immutable
 *   104     8           data_off: ring start                          immutable
 *   112     4           max_clients C                                 immutable
 *   116     4           client_size: MB_BUF_CLIENT_SIZE               immutable
 *   120     8           clients_off: MB_BUF_CLIENTS_OFF               immutable
 *   128     8           head: next position to reserve                lock (write), atomic
 *   136     8           tail: oldest position kept                    lock (write), atomic
 *   144     4           n_used: 1 + highest entry index ever used     lock (write), atomic
 *   148     4           next_alloc: where the next entry search starts lock
 *   152     40          reserved
 *   192     8           commit_pos: records before it are finished    atomic CAS
 *   200     56          reserved
 *   256     4           data_word: futex, bumped when commit_pos grows atomic
 *   260     4           n_data_waiters: consumers asleep on it        atomic
 *   264     4           space_word: futex, bumped when space may free atomic
 *   268     4           n_space_waiters: producers asleep on it       atomic
 *   272     8           space_target: lowest position a sleeping
 *                       producer needs the consumers to reach         atomic
 *   280     40          reserved
 *   320     8 x 12      totals folded in from removed entries, and
 *                       n_discarded, n_recovered, n_removed,
 *                       n_full_waits, n_wakes                         atomic
 *   416     96          reserved
 *   512     256         struct ut_shlock, the buffer lock (padded)    itself
 *   768     C x 256     client table (struct mb_buf_client)           see struct
 *   data_off S          the ring (data_off = 768 + C*256 rounded up to 4096)
 *
 * Positions are byte counts since creation (uint64, never wrap); position
 * p lives at ring offset p % S. The ring holds records, each 16-byte
 * aligned and never split across the end of the ring:
 *
 *   offset  size  meaning
 *   0       4     state: RESERVED, COMMITTED, DISCARDED or PAD (atomic)
 *   4       4     size: record bytes, header included, multiple of 16
 *   8       4     owner: client entry index of the reserving producer
 *   12      4     tag: (uint32_t)(position / 16) ^ MB_BUF_TAG_SALT
 *   16      16    struct mb_event_header (not in a PAD record)
 *   32      n     data, then padding to 16
 *
 * A PAD record fills the end of the ring when the next record does not
 * fit there. Invariants, whenever the lock is free:
 *   tail <= commit_pos <= head, head - tail <= S;
 *   walking records from tail by their sizes lands exactly on head; every
 *   header on the way is valid (tag, size, state);
 *   records in [tail, commit_pos) are COMMITTED, DISCARDED or PAD; the
 *   record at commit_pos (if commit_pos < head) is RESERVED;
 *   every consumer's read position is a record boundary in
 *   [tail, commit_pos]; every RESERVED record's owner entry is in use.
 *
 * (The system-message ring's table is above; the event-buffer protocol is
 * described in msgbus/buffer.c.)
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

/* ---------------------------------------------------------------------- */
/* Event buffers                                                           */
/* ---------------------------------------------------------------------- */

#define MB_BUF_KIND          0x42554631u /* 'BUF1' */
#define MB_BUF_CLIENT_SIZE   256u
#define MB_BUF_CLIENTS_OFF   768u
#define MB_BUF_ALIGN         16u
#define MB_BUF_REC_HDR       16u
#define MB_BUF_TAG_SALT      0x5a17c0deu
#define MB_BUF_WAIT_SLICE_MS 100        /* futex waits are cut into slices this long */
#define MB_BUF_NONE          UINT64_MAX /* read_pos of a handle without requests */
#define MB_BUF_PIN           1ull       /* read_pos bit: the event there is held (zero-copy) */

enum mb_buf_rec_state {
    MB_REC_RESERVED = 0x52534552u,  /* 'RESR': space taken, being written */
    MB_REC_COMMITTED = 0x4d4d4f43u, /* 'COMM': complete, readable */
    MB_REC_DISCARDED = 0x44524344u, /* 'DCRD': reservation of a dead producer */
    MB_REC_PAD = 0x44444150u,       /* 'PADD': filler up to the end of the ring */
};

struct mb_buf_rec {
    uint32_t state; /* enum mb_buf_rec_state; atomic (RESERVED -> COMMITTED|DISCARDED) */
    uint32_t size;  /* record bytes, multiple of 16, >= 16; written under the lock */
    uint32_t owner; /* client entry index of the producer; written under the lock */
    uint32_t tag;   /* position tag, see the table; written under the lock */
};
_Static_assert(sizeof(struct mb_buf_rec) == MB_BUF_REC_HDR, "record header layout");

struct mb_buf_request {
    int16_t event_id;     /* MB_EVENT_ID_ALL or an id */
    int16_t trigger_mask; /* MB_TRIGGER_ALL or a mask */
    uint32_t mode;        /* enum mb_request_mode; 0 = unused */
};
_Static_assert(sizeof(struct mb_buf_request) == 8, "request layout");

enum mb_buf_client_flags {
    MB_BUF_CF_PRODUCER = 1u << 0, /* has sent (atomic or) */
    MB_BUF_CF_GETALL = 1u << 1,   /* has a GET_ALL request (lock) */
};

/* One client entry: one open handle. Cache-line groups: identity and
 * requests (changed under the lock, rarely), the consumer's position and
 * counters, the producer's counters. */
struct mb_buf_client {
    uint32_t in_use;     /* 1 while a handle owns it; lock (written last at allocation) */
    uint32_t gen;        /* bumped at allocation and removal; lock, atomic */
    uint32_t slot;       /* owner's client slot; lock */
    uint32_t pid;        /* opener's pid, diagnostics; lock */
    uint32_t flags;      /* enum mb_buf_client_flags; see there */
    uint32_t n_requests; /* requests[0, n) in use; lock (written after them) */
    uint8_t reserved0[8];
    struct mb_buf_request requests[MB_BUFFER_MAX_REQUESTS]; /* lock */
    uint8_t reserved1[32];
    uint64_t read_pos;       /* next record to read, | MB_BUF_PIN while one is held, or
                                MB_BUF_NONE; CAS by the consumer, and by producers (under the
                                lock) that skip a GET_SOME consumer */
    uint64_t n_received;     /* by the consumer, atomic */
    uint64_t bytes_received; /* by the consumer, atomic */
    uint64_t n_missed;       /* by skipping producers under the lock, atomic */
    uint8_t reserved2[32];
    uint64_t n_sent;     /* by the producer, atomic */
    uint64_t bytes_sent; /* by the producer, atomic */
    uint8_t reserved3[48];
};
_Static_assert(sizeof(struct mb_buf_client) == MB_BUF_CLIENT_SIZE, "client entry layout");
_Static_assert(offsetof(struct mb_buf_client, read_pos) == 128, "client entry layout");
_Static_assert(offsetof(struct mb_buf_client, n_sent) == 192, "client entry layout");

/* The buffer's header; it follows the ut_shm_header at segment offset 64. */
struct mb_buf_header {
    char name[MB_BUFFER_NAME_MAX + 1]; /* immutable */
    uint64_t size;                     /* ring bytes; immutable */
    uint64_t data_off;                 /* immutable */
    uint32_t max_clients;              /* immutable */
    uint32_t client_size;              /* MB_BUF_CLIENT_SIZE; immutable */
    uint64_t clients_off;              /* MB_BUF_CLIENTS_OFF; immutable */
    uint64_t head;                     /* lock (write), atomic */
    uint64_t tail;                     /* lock (write), atomic */
    uint32_t n_used;                   /* lock (write), atomic */
    uint32_t next_alloc;               /* lock */
    uint8_t reserved0[40];
    uint64_t commit_pos; /* atomic CAS */
    uint8_t reserved1[56];
    uint32_t data_word;       /* futex */
    uint32_t n_data_waiters;  /* atomic */
    uint32_t space_word;      /* futex */
    uint32_t n_space_waiters; /* atomic */
    uint64_t space_target;    /* wake producers when a consumer reaches it; atomic */
    uint8_t reserved2[40];
    uint64_t gone_events_in; /* counters of removed entries; all atomic */
    uint64_t gone_bytes_in;
    uint64_t gone_events_out;
    uint64_t gone_bytes_out;
    uint64_t gone_missed;
    uint64_t n_discarded;
    uint64_t n_recovered;
    uint64_t n_removed;
    uint64_t n_full_waits;
    uint64_t n_wakes;
    uint8_t reserved3[16];
    uint8_t reserved4[96];
    union {
        struct ut_shlock lock; /* the buffer lock, rank UT_RANK_BUFFER, name "buffer" */
        uint8_t lock_space[256];
    };
};
_Static_assert(offsetof(struct mb_buf_header, head) == 128 - 64, "buffer header layout");
_Static_assert(offsetof(struct mb_buf_header, commit_pos) == 192 - 64, "buffer header layout");
_Static_assert(offsetof(struct mb_buf_header, data_word) == 256 - 64, "buffer header layout");
_Static_assert(offsetof(struct mb_buf_header, gone_events_in) == 320 - 64, "buffer header layout");
_Static_assert(offsetof(struct mb_buf_header, lock) == 512 - 64, "buffer header layout");
_Static_assert(sizeof(struct ut_shm_header) + sizeof(struct mb_buf_header) == MB_BUF_CLIENTS_OFF,
               "buffer header layout");

/* Process-local handle. */
struct mb_buffer {
    struct ut_shm shm;
    struct mb_buf_header *hdr;     /* in shm, at base + 64 */
    struct mb_buf_client *clients; /* in shm, at base + MB_BUF_CLIENTS_OFF */
    uint8_t *ring;                 /* in shm, at base + data_off */
    uint64_t size;                 /* validated copy of hdr->size */
    uint32_t max_clients;          /* validated copy of hdr->max_clients */
    uint32_t index;                /* our client entry */
    uint32_t gen;                  /* its gen when we took it */
    uint32_t pid;                  /* getpid() at open: a forked copy only unmaps */
    struct mb_buf_client *me;      /* &clients[index] */
    struct ut_lock lock;           /* bound to hdr->lock */
    char name[MB_BUFFER_NAME_MAX + 1];
    /* Consumer state, one thread at a time (see mb.h). */
    struct mb_buf_request requests[MB_BUFFER_MAX_REQUESTS]; /* local copy of ours */
    int request_ids[MB_BUFFER_MAX_REQUESTS];                /* their ids, parallel */
    uint32_t n_requests;
    int next_request_id;
    uint64_t held_pos; /* position of the zero-copy event held, or MB_BUF_NONE */
    uint32_t held_size;
};

/* Record header at position pos (which must be 16-aligned). */
static inline struct mb_buf_rec *mb__buf_rec(const struct mb_buffer *buf, uint64_t pos)
{
    return (struct mb_buf_rec *)(void *)(buf->ring + pos % buf->size);
}

static inline uint32_t mb__buf_tag(uint64_t pos)
{
    return (uint32_t)(pos / MB_BUF_ALIGN) ^ MB_BUF_TAG_SALT;
}

/* Ring bytes of the record of an event with data_size bytes. */
static inline uint64_t mb__buf_rec_size(uint64_t data_size)
{
    return (MB_BUF_REC_HDR + sizeof(struct mb_event_header) + data_size + MB_BUF_ALIGN - 1) &
           ~(uint64_t)(MB_BUF_ALIGN - 1);
}

/* Checks the buffer under its lock (mb_buffer_check's work; also run by
 * lock recovery). Writes the first problem into report. Returns 0 or
 * UT_ECORRUPT. */
int mb__buffer_check_locked(struct mb_buffer *buf, char *report, size_t report_size);

#include "base/banned.h"

#endif
