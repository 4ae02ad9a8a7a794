/*
 * client/buffer.c - event buffers seen from the client layer: opening them
 * for a connection, the registry under /System/Buffers, publishing their
 * statistics, and removing a dead client's entries from every buffer.
 *
 * Registry: au_buffer_open creates /System/Buffers/<name> (the buffer's
 * statistics live there) and adds <name> to the client's
 * /System/Clients/<slot>/Buffers list (comma-separated). The registry is
 * the list of every buffer the experiment has: the dead-client cleanup
 * (au__buffers_remove_slot, called by au__cleanup_slot) attaches to each
 * listed buffer without taking a client entry (MB_BUFFER_ADMIN) and calls
 * mb_buffer_remove_client for the dead slot, so a dead GET_ALL consumer
 * stops blocking producers, and a dead producer's unfinished reservation
 * is discarded, within one watchdog period.
 *
 * Statistics: au_buffer_publish (run by every watchdog pass) writes
 * mb_buffer_stats of each buffer this connection has open into
 * /System/Buffers/<name>: Size, Fill, Clients, Producers, Consumers,
 * Events in, Bytes in, Events out, Bytes out, Missed, Discarded,
 * Full waits, Updated (wall ns), and per open handle the arrays
 * Client slot, Client role, Client received, Client missed, Client sent,
 * Client fill. odbedit and the web page read them from there.
 *
 * Lock order: buffer lock (rank 100) < ODB lock (300). No function here
 * touches a buffer while it holds the ODB lock: the cleanup lists the
 * registry (one short ODB call), then works on the buffers with no lock
 * held, before au__cleanup_slot opens its ODB transaction; publishing reads
 * the statistics (no lock) before its ODB transaction. The per-connection
 * list of open buffers is guarded by one process-wide mutex, taken around
 * list edits and walks, never across a shared lock or a wait (and held
 * across fork(), see register_atfork).
 * A forked child's copy of a connection leaves its buffers alone (they
 * belong to the parent; au_disconnect in the child does not touch them).
 */
#include "client/client_int.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

struct au__buffer_ref {
    struct mb_buffer *buf;
    char name[MB_BUFFER_NAME_MAX + 1];
};

static pthread_mutex_t list_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* fork() with the list mutex held by another thread (a watchdog pass
 * publishing) would leave it locked forever in the child, which may
 * connect anew and open buffers: hold it across fork in the parent. */
static void list_lock(void)
{
    pthread_mutex_lock(&list_mutex);
}

static void list_unlock(void)
{
    pthread_mutex_unlock(&list_mutex);
}

static void register_atfork(void)
{
    pthread_atfork(list_lock, list_unlock, list_unlock);
}

#define BUFFERS_DIR "/System/Buffers"

/* Adds `name` to the comma-separated list in the client's "Buffers"
 * string, or (add false) removes it. Best effort: a full string keeps the
 * names it has. */
static void client_buffers_edit(struct au_client *c, const char *name, bool add)
{
    char list[128] = "";
    size_t sz = sizeof list;
    if (odb_txn_begin(c->odb) != 0)
        return;
    if (odb_get(c->odb, c->entry, "Buffers", ODB_TYPE_STRING, list, &sz) != 0)
        list[0] = '\0';
    list[sizeof list - 1] = '\0';
    char out[128] = "";
    bool present = false;
    size_t len = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (strcmp(tok, name) == 0) {
            present = true;
            if (!add)
                continue;
        }
        int n = snprintf(out + len, sizeof out - len, "%s%s", len ? "," : "", tok);
        if (n > 0 && (size_t)n < sizeof out - len)
            len += (size_t)n;
    }
    if (add && !present) {
        int n = snprintf(out + len, sizeof out - len, "%s%s", len ? "," : "", name);
        if (n < 0 || (size_t)n >= sizeof out - len)
            out[len] = '\0';
    }
    if (odb_set(c->odb, c->entry, "Buffers", ODB_TYPE_STRING, out, sizeof out, 1, ODB_SET_CREATE) !=
        0) {
        odb_txn_abort(c->odb);
        return;
    }
    (void)odb_txn_commit(c->odb);
}

int au_buffer_open(struct au_client *c, const char *name, uint64_t size_bytes,
                   struct mb_buffer **out)
{
    if (!c || !out || c->forked_copy)
        return UT_EINVAL;
    pthread_once(&atfork_once, register_atfork);
    int err = mb_buffer_name_check(name);
    if (err)
        return err;
    struct mb_buffer_params p = {0};
    p.size_bytes = size_bytes;
    p.slot = c->slot;
    struct mb_buffer *buf = NULL;
    err = mb_buffer_open_exp(c->expdir, name, MB_BUFFER_CREATE, &p, &buf);
    if (err)
        return err;

    /* Registry first, so a crash from here on leaves the buffer listed for
     * the cleanup. */
    char path[64 + MB_BUFFER_NAME_MAX];
    (void)snprintf(path, sizeof path, BUFFERS_DIR "/%s/Size", name);
    uint64_t size = mb_buffer_size(buf);
    err = odb_set(c->odb, ODB_ROOT, path, ODB_TYPE_UINT64, &size, sizeof size, 1, ODB_SET_CREATE);
    if (err) {
        mb_buffer_close(buf);
        return err;
    }
    client_buffers_edit(c, name, true);

    pthread_mutex_lock(&list_mutex);
    if (c->n_bufs == c->cap_bufs) {
        size_t cap = c->cap_bufs ? c->cap_bufs * 2 : 4;
        struct au__buffer_ref *v = ut_realloc(c->bufs, cap * sizeof *v);
        if (!v) {
            pthread_mutex_unlock(&list_mutex);
            mb_buffer_close(buf);
            return UT_ENOMEM;
        }
        c->bufs = v;
        c->cap_bufs = cap;
    }
    c->bufs[c->n_bufs].buf = buf;
    ut_strlcpy(c->bufs[c->n_bufs].name, name, sizeof c->bufs[c->n_bufs].name);
    c->n_bufs++;
    pthread_mutex_unlock(&list_mutex);
    *out = buf;
    return 0;
}

void au_buffer_close(struct au_client *c, struct mb_buffer *buf)
{
    if (!c || !buf)
        return;
    char name[MB_BUFFER_NAME_MAX + 1] = "";
    bool others = false;
    pthread_mutex_lock(&list_mutex);
    for (size_t i = 0; i < c->n_bufs; i++) {
        if (c->bufs[i].buf == buf) {
            ut_strlcpy(name, c->bufs[i].name, sizeof name);
            c->bufs[i] = c->bufs[--c->n_bufs];
            break;
        }
    }
    for (size_t i = 0; i < c->n_bufs; i++)
        if (name[0] && strcmp(c->bufs[i].name, name) == 0)
            others = true;
    pthread_mutex_unlock(&list_mutex);
    mb_buffer_close(buf);
    if (name[0] && !others && !c->forked_copy)
        client_buffers_edit(c, name, false);
}

void au__buffers_close_all(struct au_client *c)
{
    pthread_mutex_lock(&list_mutex);
    struct au__buffer_ref *v = c->bufs;
    size_t n = c->n_bufs;
    c->bufs = NULL;
    c->n_bufs = c->cap_bufs = 0;
    pthread_mutex_unlock(&list_mutex);
    for (size_t i = 0; i < n; i++)
        mb_buffer_close(v[i].buf);
    ut_free(v);
}

int au__buffers_remove_slot(struct au_client *c, uint32_t slot)
{
    UT_ASSERT(ut_lock_top_rank() < UT_RANK_BUFFER);
    struct odb_dirent *ents = NULL;
    size_t n = 0;
    struct odb_hkey dir;
    int err = odb_find(c->odb, ODB_ROOT, BUFFERS_DIR, &dir);
    if (err == ODB_ENOKEY)
        return 0;
    if (!err)
        err = odb_dir_list(c->odb, dir, &ents, &n);
    if (err)
        return err;
    int removed = 0;
    for (size_t i = 0; i < n; i++) {
        if (ents[i].type != ODB_TYPE_DIR || mb_buffer_name_check(ents[i].name) != 0)
            continue;
        struct mb_buffer *buf = NULL;
        int e = mb_buffer_open_exp(c->expdir, ents[i].name, MB_BUFFER_ADMIN, NULL, &buf);
        if (e == UT_ENOENT || e == -ENOENT)
            continue; /* listed, but the segment is gone (experiment restarted) */
        if (e) {
            ut_log(UT_LOG_WARN, "cleanup of slot %u: cannot open buffer '%s': %s", slot,
                   ents[i].name, ut_strerror(e));
            continue;
        }
        e = mb_buffer_remove_client(buf, slot);
        mb_buffer_close(buf);
        if (e > 0)
            removed += e;
        else if (e < 0)
            ut_log(UT_LOG_WARN, "cleanup of slot %u in buffer '%s': %s", slot, ents[i].name,
                   ut_strerror(e));
    }
    odb_dirents_free(ents);
    return removed;
}

/* A short role text for the statistics. */
static const char *role_of(const struct mb_buffer_client_stats *s)
{
    if (s->producer && s->consumer)
        return s->get_all ? "producer+get-all" : "producer+get-some";
    if (s->consumer)
        return s->get_all ? "get-all" : "get-some";
    return s->producer ? "producer" : "idle";
}

/* Writes one buffer's statistics into /System/Buffers/<name> in one
 * transaction. No buffer lock is taken. */
enum { PUBLISH_MAX_CLIENTS = 64 };

/* One buffer's figures, read under the list mutex, written after it. */
struct snapshot {
    struct mb_buffer_stats s;
    struct mb_buffer_client_stats cs[PUBLISH_MAX_CLIENTS];
    size_t n;
};

static int publish_one(struct au_client *c, const struct snapshot *snap)
{
    enum { MAXC = PUBLISH_MAX_CLIENTS };
    const struct mb_buffer_stats s = snap->s;
    const struct mb_buffer_client_stats *cs = snap->cs;
    size_t n = snap->n;
    int err;
    char path[64 + MB_BUFFER_NAME_MAX];
    (void)snprintf(path, sizeof path, BUFFERS_DIR "/%s", s.name);
    err = odb_txn_begin(c->odb);
    if (err)
        return err;
    struct odb_hkey dir;
    err = odb_find(c->odb, ODB_ROOT, path, &dir);
    if (err == ODB_ENOKEY)
        err = odb_create(c->odb, ODB_ROOT, path, ODB_TYPE_DIR, 0, 0, &dir);
    const struct {
        const char *name;
        uint64_t v;
    } u64[] = {{"Size", s.size_bytes},         {"Fill", s.fill_bytes},
               {"Events in", s.n_events_in},   {"Bytes in", s.bytes_in},
               {"Events out", s.n_events_out}, {"Bytes out", s.bytes_out},
               {"Missed", s.n_missed},         {"Discarded", s.n_discarded},
               {"Full waits", s.n_full_waits}, {"Removed clients", s.n_removed}};
    for (size_t i = 0; !err && i < sizeof u64 / sizeof u64[0]; i++)
        err = odb_set(c->odb, dir, u64[i].name, ODB_TYPE_UINT64, &u64[i].v, sizeof u64[i].v, 1,
                      ODB_SET_CREATE);
    const struct {
        const char *name;
        uint32_t v;
    } u32[] = {
        {"Clients", s.n_clients}, {"Producers", s.n_producers}, {"Consumers", s.n_consumers}};
    for (size_t i = 0; !err && i < sizeof u32 / sizeof u32[0]; i++)
        err = odb_set(c->odb, dir, u32[i].name, ODB_TYPE_UINT32, &u32[i].v, sizeof u32[i].v, 1,
                      ODB_SET_CREATE);
    int64_t now = ut_wall_ns();
    if (!err)
        err = odb_set(c->odb, dir, "Updated", ODB_TYPE_INT64, &now, sizeof now, 1, ODB_SET_CREATE);
    if (!err && n > 0) {
        uint32_t slots[MAXC];
        uint64_t recv[MAXC], missed[MAXC], sent[MAXC], fill[MAXC];
        char roles[MAXC][24];
        memset(roles, 0, sizeof roles);
        for (size_t i = 0; i < n; i++) {
            slots[i] = cs[i].slot;
            recv[i] = cs[i].n_received;
            missed[i] = cs[i].n_missed;
            sent[i] = cs[i].n_sent;
            fill[i] = cs[i].fill_bytes;
            ut_strlcpy(roles[i], role_of(&cs[i]), sizeof roles[i]);
        }
        uint32_t ne = (uint32_t)n;
        err = odb_set(c->odb, dir, "Client slot", ODB_TYPE_UINT32, slots, n * sizeof slots[0], ne,
                      ODB_SET_CREATE);
        if (!err)
            err = odb_set(c->odb, dir, "Client role", ODB_TYPE_STRING, roles, n * sizeof roles[0],
                          ne, ODB_SET_CREATE);
        if (!err)
            err = odb_set(c->odb, dir, "Client received", ODB_TYPE_UINT64, recv, n * sizeof recv[0],
                          ne, ODB_SET_CREATE);
        if (!err)
            err = odb_set(c->odb, dir, "Client missed", ODB_TYPE_UINT64, missed,
                          n * sizeof missed[0], ne, ODB_SET_CREATE);
        if (!err)
            err = odb_set(c->odb, dir, "Client sent", ODB_TYPE_UINT64, sent, n * sizeof sent[0], ne,
                          ODB_SET_CREATE);
        if (!err)
            err = odb_set(c->odb, dir, "Client fill", ODB_TYPE_UINT64, fill, n * sizeof fill[0], ne,
                          ODB_SET_CREATE);
    }
    if (err) {
        odb_txn_abort(c->odb);
        return err;
    }
    return odb_txn_commit(c->odb);
}

int au_buffer_publish(struct au_client *c)
{
    if (!c || c->forked_copy)
        return UT_EINVAL;
    /* The statistics are read under the list mutex (so no handle is closed
     * meanwhile; mb_buffer_stats takes no lock), the ODB is written after
     * it is released. */
    pthread_mutex_lock(&list_mutex);
    size_t n = c->n_bufs;
    struct snapshot *snaps = n ? ut_calloc(n, sizeof *snaps) : NULL;
    size_t k = 0;
    int result = n && !snaps ? UT_ENOMEM : 0;
    for (size_t i = 0; snaps && i < n; i++) {
        bool dup = false;
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->bufs[j].name, c->bufs[i].name) == 0)
                dup = true;
        if (!dup && mb_buffer_stats(c->bufs[i].buf, &snaps[k].s, snaps[k].cs, PUBLISH_MAX_CLIENTS,
                                    &snaps[k].n) == 0)
            k++;
    }
    pthread_mutex_unlock(&list_mutex);
    for (size_t i = 0; i < k; i++) {
        int err = publish_one(c, &snaps[i]);
        if (err && !result)
            result = err;
    }
    ut_free(snaps);
    return result;
}

int au__buffers_remove_segments(const char *expdir)
{
    char prefix[128];
    int err = ut_shm_name(expdir, "buf.", prefix, sizeof prefix);
    if (err)
        return err;
    DIR *d = opendir("/dev/shm");
    if (!d)
        return -errno;
    int result = 0;
    const char *want = prefix + 1; /* /dev/shm lists names without the '/' */
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        if (strstr(de->d_name, want) != de->d_name)
            continue;
        char name[300];
        (void)snprintf(name, sizeof name, "/%s", de->d_name);
        int e = ut_shm_unlink(name);
        if (e && e != -ENOENT && !result)
            result = e;
    }
    closedir(d);
    return result;
}
