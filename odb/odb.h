/*
 * odb/odb.h - the online database: a hierarchical, typed key store in one
 * POSIX shared-memory segment, shared by every process of an experiment.
 *
 * Layering: uses base/ut.h only. The client layer opens the ODB for an
 * experiment and adds clients, watches and messages on top.
 *
 * Every call is thread-safe and process-safe: it takes the ODB lock (rank
 * UT_RANK_ODB), which is robust and recursive per thread. Each mutating call
 * is atomic even if the process is killed inside it: the next locker rolls
 * the interrupted call back from an undo log kept in the segment.
 *
 * Paths are '/'-separated. A path starting with '/' is absolute; otherwise
 * it is relative to the `base` key given with it. A NULL or empty path
 * means `base` itself. Names are 1..63 bytes, without '/' or '[', and are
 * looked up case-insensitively (ASCII letters) while their spelling is kept.
 * Links are followed on every component of a path except where a function
 * says otherwise; more than 16 nested links give ODB_ELINKLOOP.
 */
#ifndef AURUM_ODB_ODB_H
#define AURUM_ODB_ODB_H

#include "base/ut.h"

struct odb;

enum odb_type {
    ODB_TYPE_DIR = 1,
    ODB_TYPE_INT8,
    ODB_TYPE_UINT8,
    ODB_TYPE_INT16,
    ODB_TYPE_UINT16,
    ODB_TYPE_INT32,
    ODB_TYPE_UINT32,
    ODB_TYPE_INT64,
    ODB_TYPE_UINT64,
    ODB_TYPE_FLOAT,
    ODB_TYPE_DOUBLE,
    ODB_TYPE_BOOL,   /* stored as one byte, 0 or 1 */
    ODB_TYPE_STRING, /* fixed capacity per element, NUL-terminated */
    ODB_TYPE_LINK,   /* value is the target path, a string */
    ODB_TYPE_MAX
};

/* Type name ("INT32", "STRING", ...) and the reverse (case-insensitive).
 * odb_type_from_name returns 0 when the name is unknown. */
const char *odb_type_name(enum odb_type type);
enum odb_type odb_type_from_name(const char *name);
/* Element size of a fixed-size type; 0 for DIR, STRING and LINK. */
size_t odb_type_size(enum odb_type type);

enum odb_mode {
    ODB_MODE_READ = 1u << 0,
    ODB_MODE_WRITE = 1u << 1,
    ODB_MODE_DELETE = 1u << 2,
    ODB_MODE_ALL = 7u,
};

/* A handle: a key's slot and the generation it had when the handle was made.
 * A handle whose key was deleted gives ODB_ESTALE, even if the slot was
 * reused. Plain value, freely copied; valid across processes. */
struct odb_hkey {
    uint32_t idx;
    uint32_t gen;
};

/* The root directory. */
#define ODB_ROOT ((struct odb_hkey){0, 1})

#define ODB_NAME_MAX 63   /* bytes, without the NUL */
#define ODB_PATH_MAX 1024 /* bytes, without the NUL */

struct odb_params {
    size_t size_bytes;        /* segment size; default 8 MiB */
    uint32_t max_keys;        /* key slots; default size_bytes / 1024 */
    int lock_timeout_ms;      /* bound on each ODB lock wait; default 10000 */
    uint32_t max_watches;     /* watch registrations; default 4096 */
    uint32_t max_subscribers; /* watch subscribers (clients); default 1024 */
};

enum odb_open_flags {
    ODB_OPEN_CREATE = 1u << 0, /* create the segment if it does not exist */
};

/* Opens (and with ODB_OPEN_CREATE, creates) the ODB in the shm segment
 * `shm_name` (see ut_shm_name). `params` may be NULL for the defaults; size
 * and max_keys only matter at creation. *out is owned by the caller and
 * freed by odb_close. Returns 0, UT_ENOENT, UT_EVERSION, UT_ECORRUPT,
 * UT_ETIMEOUT, UT_ENOMEM or -errno. */
int odb_open(const char *shm_name, unsigned flags, const struct odb_params *params,
             struct odb **out);
/* Unmaps; the segment stays. Accepts NULL. */
void odb_close(struct odb *odb);
/* Removes the segment name (the data lives until the last process unmaps). */
int odb_destroy(const char *shm_name);

/* Text describing the last error of this thread on any ODB (which key, what
 * was expected). Valid until the next ODB call in this thread. */
const char *odb_errmsg(void);

/* Finds `path` under `base`, following links. Returns 0, ODB_ENOKEY,
 * ODB_EPATH, ODB_ESTALE (base deleted), ODB_ENOTDIR, ODB_ELINKLOOP. */
int odb_find(struct odb *odb, struct odb_hkey base, const char *path, struct odb_hkey *out);
/* As odb_find, but does not follow a link in the last component. */
int odb_find_nofollow(struct odb *odb, struct odb_hkey base, const char *path,
                      struct odb_hkey *out);

/* Creates a key, creating missing parent directories. For STRING,
 * elem_size is the capacity of each element including the NUL (ignored for
 * other types; 0 means 32 for STRING). n_elem >= 1 (ignored for DIR). The
 * value is zeroed. `out` may be NULL. Returns 0, ODB_EEXIST, ODB_EPATH,
 * ODB_ENAME, ODB_ENOTDIR, ODB_ENOSPC, ODB_EKEYS, ODB_EACCESS, UT_EINVAL (also for
 * ODB_TYPE_LINK: links are made with odb_link). */
int odb_create(struct odb *odb, struct odb_hkey base, const char *path, enum odb_type type,
               uint32_t n_elem, uint32_t elem_size, struct odb_hkey *out);

/* Deletes a key. A non-empty directory needs `recursive`. Handles of every
 * deleted key become stale at once. The last component, if a link, is
 * deleted itself, not its target. Returns 0, ODB_ENOKEY, ODB_ESTALE,
 * ODB_ENOTEMPTY, ODB_EACCESS, UT_EINVAL (the root). */
int odb_delete(struct odb *odb, struct odb_hkey base, const char *path, bool recursive);

/* Copies out the whole value. `type` must match the key's type (ODB_ETYPE
 * otherwise). *size is the buffer size on entry and the value size on
 * return; a buffer too small gives ODB_ETRUNC with *size set to what is
 * needed and nothing copied. Returns also ODB_ENOKEY, ODB_ESTALE,
 * ODB_EISDIR, ODB_EACCESS. */
int odb_get(struct odb *odb, struct odb_hkey base, const char *path, enum odb_type type, void *buf,
            size_t *size);

/* Replaces the whole value: n_elem elements of size/n_elem bytes each (for
 * STRING, size/n_elem is the new capacity; for one string pass strlen+1 or
 * more). With ODB_SET_CREATE a missing key is created. `type` must match an
 * existing key. Returns 0, ODB_ETYPE, ODB_ENOKEY, ODB_ESTALE, ODB_EACCESS,
 * ODB_ENOSPC, ODB_ETOOLONG (a string without a NUL in its element), UT_EINVAL
 * (size not a multiple of n_elem, or of the type size). */
enum odb_set_flags { ODB_SET_CREATE = 1u << 0 };
int odb_set(struct odb *odb, struct odb_hkey base, const char *path, enum odb_type type,
            const void *data, size_t size, uint32_t n_elem, unsigned flags);

/* One array element. For STRING, `size` is the buffer size (get) or the
 * bytes passed (set, must hold a NUL within the element capacity, else
 * ODB_ETOOLONG). Returns 0, ODB_ERANGE, ODB_ETYPE and the errors above. */
int odb_get_elem(struct odb *odb, struct odb_hkey key, uint32_t index, enum odb_type type,
                 void *buf, size_t size);
int odb_set_elem(struct odb *odb, struct odb_hkey key, uint32_t index, enum odb_type type,
                 const void *data, size_t size);

/* Changes the number of elements; new elements are zero. Returns 0,
 * ODB_EISDIR, ODB_ENOSPC, UT_EINVAL (n_elem 0), ODB_ESTALE. */
int odb_resize(struct odb *odb, struct odb_hkey key, uint32_t n_elem);

struct odb_key_info {
    enum odb_type type;
    uint32_t n_elem;        /* elements (children for a directory) */
    uint32_t elem_size;     /* bytes per element */
    uint32_t mode;          /* enum odb_mode bits */
    int64_t mtime_ns;       /* last modification, CLOCK_REALTIME ns */
    uint64_t serial;        /* bumped on every change of this key */
    struct odb_hkey parent; /* ODB_ROOT's parent is itself */
    char name[ODB_NAME_MAX + 1];
};
/* Info about the key itself (a link is not followed when it is `key`). */
int odb_key_info(struct odb *odb, struct odb_hkey key, struct odb_key_info *out);
/* Full absolute path of a key. Returns 0, ODB_ESTALE, ODB_ETRUNC. */
int odb_key_path(struct odb *odb, struct odb_hkey key, char *buf, size_t size);

/* A snapshot of a directory's children, taken atomically under the lock:
 * it never holds a deleted entry or garbage. Entries stay valid after the
 * directory changes; using a handle of an entry deleted since gives
 * ODB_ESTALE. Free with odb_dirents_free. */
struct odb_dirent {
    struct odb_hkey key;
    enum odb_type type;
    uint32_t n_elem;
    char name[ODB_NAME_MAX + 1];
};
int odb_dir_list(struct odb *odb, struct odb_hkey dir, struct odb_dirent **out, size_t *n_out);
void odb_dirents_free(struct odb_dirent *ents);

/* Renames a key inside its directory. Returns 0, ODB_EEXIST, ODB_ENAME,
 * ODB_ESTALE, ODB_EACCESS, UT_EINVAL (the root). */
int odb_rename(struct odb *odb, struct odb_hkey key, const char *new_name);
/* Creates a link at `path` pointing to the absolute path `target` (which
 * need not exist yet). Returns as odb_create. */
int odb_link(struct odb *odb, struct odb_hkey base, const char *path, const char *target);
/* Copies the subtree `src` to a new key `dst_path` (which must not exist).
 * Links are copied as links. Returns as odb_create, ODB_ETOOBIG when the
 * copy does not fit in one atomic operation, and UT_EINVAL when dst lies
 * inside src. */
int odb_copy(struct odb *odb, struct odb_hkey src, struct odb_hkey base, const char *dst_path);
/* Changes the access mode of a key. */
int odb_set_mode(struct odb *odb, struct odb_hkey key, uint32_t mode);

/* Transactions: everything between odb_txn_begin and odb_txn_commit is
 * one atomic change, both for other processes (the ODB lock is held
 * throughout, so keep it short) and for crashes (an interrupted transaction
 * is rolled back whole). odb_txn_abort undoes every change since the
 * matching begin. Transactions nest as savepoints: an inner abort undoes
 * only the inner part; only the outermost commit makes changes durable.
 * Every single call above is such a transaction on its own. begin returns
 * 0, UT_ETIMEOUT, UT_EINTR or UT_ECORRUPT; commit returns 0. A call inside
 * a transaction that fails (for example with ODB_ETOOBIG when its changes
 * overflow the undo log) undoes only itself; the caller decides whether to
 * abort the rest.
 * Deleted keys are reclaimed after the outermost commit. Handles of keys
 * inside a subtree deleted within a transaction go stale at that commit. */
int odb_txn_begin(struct odb *odb);
int odb_txn_commit(struct odb *odb);
void odb_txn_abort(struct odb *odb);

/* Number of changes to the whole ODB so far; cheap (no lock). */
uint64_t odb_change_count(struct odb *odb);

/*
 * Watches. A subscriber is a small integer chosen by the caller (the client
 * layer uses its client slot) below params.max_subscribers. A watch on a
 * key reports every committed change of that key or of anything below it:
 * the change is queued for the subscriber in the segment (the key that
 * changed and the watch id) and the subscriber is woken through a futex in
 * the segment, with a system call only when it sleeps. Changes rolled back
 * are never reported. A subscriber's queue holds ODB_WATCH_QUEUE changes;
 * past that, one change with ODB_WATCH_OVERFLOW is reported instead and the
 * subscriber should re-read what it watches.
 */
#define ODB_WATCH_QUEUE    32
#define ODB_WATCH_OVERFLOW UINT32_MAX

struct odb_change {
    uint32_t watch_id;   /* as returned by odb_watch_add, or ODB_WATCH_OVERFLOW */
    struct odb_hkey key; /* the key that changed (may be stale by now) */
};

/* Adds a watch on `key` (and its subtree) for `subscriber`. Returns 0,
 * ODB_ESTALE, UT_EINVAL (subscriber out of range), ODB_ENOSPC (the watch
 * table is full). */
int odb_watch_add(struct odb *odb, struct odb_hkey key, uint32_t subscriber, uint32_t *id_out);
/* Removes one watch; ODB_ENOKEY if it does not exist. */
int odb_watch_remove(struct odb *odb, uint32_t watch_id);
/* Removes every watch of a subscriber and clears its queue (a dead client's
 * cleanup). Returns the number of watches removed, or a negative error. */
int odb_watch_remove_subscriber(struct odb *odb, uint32_t subscriber);
/* Takes up to `max` queued changes. Returns 0 (with *n_out possibly 0). */
int odb_watch_read(struct odb *odb, uint32_t subscriber, struct odb_change *out, size_t max,
                   size_t *n_out);
/* A counter bumped at every delivery to the subscriber; read it, drain the
 * queue, then wait for it to move. Lock-free. */
uint32_t odb_watch_seq(struct odb *odb, uint32_t subscriber);
/* Sleeps until the subscriber's counter differs from `seen` (0 at once if
 * it already does). Returns 0, UT_ETIMEOUT, UT_EINTR (ut_interrupt). */
int odb_watch_wait(struct odb *odb, uint32_t subscriber, uint32_t seen, int timeout_ms);
/* Number of watches registered on exactly this key. */
int odb_watch_count(struct odb *odb, struct odb_hkey key, uint32_t *n_out);

/* JSON export of a subtree into a heap string (freed with ut_free). The
 * format keeps types: {"name": value, "name/key": {"type": N, ...}} as
 * documented in docs/ODB_JSON.md. Returns 0, ODB_ESTALE, UT_ENOMEM. */
int odb_json_export(struct odb *odb, struct odb_hkey key, char **out, size_t *len_out);
/* Merges a JSON document (as exported) into the directory `key`: existing
 * keys get new values, missing ones are created. The document is parsed and
 * checked completely before anything changes; a bad document changes
 * nothing and returns ODB_EJSON (details in odb_errmsg()). Returns also
 * ODB_ETYPE (a value's type differs from an existing key's), ODB_ENOSPC. */
int odb_json_import(struct odb *odb, struct odb_hkey key, const char *json, size_t len);

/* Saves a subtree as JSON to `file` (gzip-compressed if the name ends in
 * ".gz"), durably and atomically: temp file, fsync, rename, fsync of the
 * directory. On failure the previous file is intact. Returns 0, -errno,
 * UT_EIO. */
int odb_save(struct odb *odb, struct odb_hkey key, const char *file);
/* Loads a file written by odb_save (or any JSON in that format) into the
 * directory `key`, as odb_json_import. */
int odb_load(struct odb *odb, struct odb_hkey key, const char *file);

struct odb_stats {
    size_t size_bytes;      /* segment size */
    size_t heap_bytes;      /* value heap size */
    size_t heap_free_bytes; /* free bytes in the value heap */
    uint32_t max_keys;
    uint32_t n_keys; /* keys in use */
    uint64_t n_changes;
    uint64_t lock_acquired, lock_contended, lock_wait_ns, lock_owner_died;
    uint64_t n_rollbacks; /* interrupted operations rolled back */
};
int odb_stats(struct odb *odb, struct odb_stats *out);

/* Walks the whole segment and checks every structural invariant (every key
 * reachable once, hash chains, parent/child links, generations, value
 * blocks owned once, free lists, no overlap, sizes match types). Returns 0
 * or ODB_ECORRUPT... (UT_ECORRUPT) and writes the first problems found to
 * `report` (may be NULL). */
int odb_check(struct odb *odb, char *report, size_t report_size);

#endif
