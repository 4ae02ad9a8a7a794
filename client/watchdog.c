/*
 * client/watchdog.c - finding and removing dead clients, reporting
 * unresponsive ones, and persisting messages.
 *
 * Every client runs the watchdog (a thread by default). Each period it
 * writes its heartbeat ("Last activity"); then, if no other client has
 * scanned within the period (/System/Watchdog/Last scan, claimed in a
 * transaction), it scans /System/Clients. So the whole experiment does
 * about one scan per period, not one per client: O(N), not MIDAS's O(N^2).
 *
 * Dead means: the client's liveness token (its OFD lock byte) is free. The
 * PID is never consulted, so neither a reused PID nor a PID from another
 * namespace can keep a dead client alive or kill a live one. A live client
 * whose heartbeat stopped (stopped process, hung watchdog) is reported once,
 * and removed only when the scanning client was asked to (the removed
 * client notices at its next heartbeat).
 *
 * Locks: the removal runs in one ODB transaction; the message about it is
 * posted after the transaction, with no lock held. SQLite I/O happens with
 * no lock held.
 */
#include "client/client_int.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NOTICES_DIR "/System/Watchdog/Notices"

/* True when `text` is among the newest messages of the ring. */
static bool recently_posted(struct au_client *c, const char *text)
{
    /* Room for more than RECENT: taking the ring lock may first publish a
     * message a dead poster left complete (seq last + 1), the very one we
     * may be looking for. */
    enum { RECENT = 64, ROOM = 2 * RECENT };
    struct mb_msg *msgs = ut_calloc(ROOM, sizeof *msgs);
    if (!msgs)
        return false;
    uint64_t last = mb_msg_last_seq(au_msgring(c));
    size_t n = 0;
    uint64_t missed = 0;
    bool found = false;
    if (mb_msg_read(au_msgring(c), last > RECENT ? last - RECENT : 0, msgs, ROOM, &n, &missed) == 0)
        for (size_t i = 0; i < n && !found; i++)
            found = strcmp(msgs[i].text, text) == 0;
    ut_free(msgs);
    return found;
}

/* Claims a notice for this client inside a transaction: its name ends in
 * "@<claimer slot>", and a notice claimed by a live client is left to it.
 * Returns true with the text when this client may post it. */
static bool claim_notice(struct au_client *c, struct odb_hkey key, char *text, size_t size)
{
    if (odb_txn_begin(c->odb) != 0)
        return false;
    struct odb_key_info info;
    bool mine = false;
    size_t sz = size;
    if (odb_key_info(c->odb, key, &info) == 0 &&
        odb_get(c->odb, key, NULL, ODB_TYPE_STRING, text, &sz) == 0) {
        char *at = strchr(info.name, '@');
        unsigned long claimer = at ? strtoul(at + 1, NULL, 10) : ULONG_MAX;
        if (claimer == c->slot) {
            mine = true;
        } else if (claimer >= c->max_clients || !au__slot_alive(c, (uint32_t)claimer)) {
            char name[ODB_NAME_MAX + 1];
            if (at)
                *at = '\0';
            snprintf(name, sizeof name, "%.40s@%u", info.name, c->slot);
            mine = odb_rename(c->odb, key, name) == 0;
        }
    }
    if (!mine) {
        odb_txn_abort(c->odb);
        return false;
    }
    return odb_txn_commit(c->odb) == 0;
}

/* Posts the removal notices left in the ODB, then deletes them. A notice is
 * written in the same transaction as the removal it reports, so a cleaner
 * that dies right after its commit cannot lose the message: the next scan
 * claims the notice and posts it, unless it already reached the ring.
 * Claiming keeps two live clients from posting the same notice. */
static void post_notices(struct au_client *c)
{
    struct odb_hkey dir;
    if (odb_find(c->odb, ODB_ROOT, NOTICES_DIR, &dir) != 0)
        return;
    struct odb_dirent *ents = NULL;
    size_t n = 0;
    if (odb_dir_list(c->odb, dir, &ents, &n) != 0)
        return;
    for (size_t i = 0; i < n; i++) {
        char text[MB_MSG_TEXT_MAX + 1];
        if (!claim_notice(c, ents[i].key, text, sizeof text))
            continue;
        if (!recently_posted(c, text))
            au_msg(c, MB_MSG_ERROR, "%s", text);
        (void)odb_delete(c->odb, ents[i].key, NULL, false);
    }
    odb_dirents_free(ents);
}

int au__cleanup_slot(struct au_client *c, uint32_t slot, const char *why, bool even_if_alive)
{
    char path[64];
    snprintf(path, sizeof path, "/System/Clients/%u", slot);
    /* Event buffers first, outside the ODB transaction: a buffer lock
     * (rank 100) is never taken while the ODB lock (300) is held. */
    if (even_if_alive || !au__slot_alive(c, slot))
        (void)au__buffers_remove_slot(c, slot);
    int err = odb_txn_begin(c->odb);
    if (err)
        return err;
    struct odb_hkey entry;
    char name[32] = "?";
    int32_t pid = 0;
    int removed = 0;
    err = odb_find(c->odb, ODB_ROOT, path, &entry);
    if (err == ODB_ENOKEY) {
        err = 0;
        goto out;
    }
    if (err)
        goto out;
    /* Re-check under the lock: a new client may have just taken the slot
     * and be about to clean it itself. */
    if (!even_if_alive && au__slot_alive(c, slot))
        goto out;
    size_t sz = sizeof name;
    odb_get(c->odb, entry, "Name", ODB_TYPE_STRING, name, &sz);
    sz = sizeof pid;
    odb_get(c->odb, entry, "PID", ODB_TYPE_INT32, &pid, &sz);
    int n = odb_watch_remove_subscriber(c->odb, slot);
    err = n < 0 ? n : 0;
    if (!err)
        err = odb_delete(c->odb, entry, NULL, true);
    if (!err) {
        char text[256], notice[96];
        int len = snprintf(text, sizeof text, "client '%s' (pid %d, slot %u) removed: %s", name,
                           (int)pid, slot, why);
        snprintf(notice, sizeof notice, NOTICES_DIR "/%u-%lld@%u", slot, (long long)ut_wall_ns(),
                 c->slot);
        err = odb_set(c->odb, ODB_ROOT, notice, ODB_TYPE_STRING, text,
                      (size_t)(len < (int)sizeof text ? len : (int)sizeof text - 1) + 1, 1,
                      ODB_SET_CREATE);
    }
    if (!err)
        removed = 1;
out:
    if (err) {
        odb_txn_abort(c->odb);
        return err;
    }
    err = odb_txn_commit(c->odb);
    if (err)
        return err;
    if (removed)
        post_notices(c);
    return removed;
}

/* Writes the heartbeat. Notices removal by another watchdog. */
static void heartbeat(struct au_client *c)
{
    int64_t now = ut_wall_ns();
    int err = odb_set(c->odb, c->entry, "Last activity", ODB_TYPE_INT64, &now, sizeof now, 1, 0);
    if ((err == ODB_ESTALE || err == ODB_ENOKEY) && !au_client_removed(c)) {
        __atomic_store_n(&c->removed, true, __ATOMIC_RELEASE);
        ut_log(UT_LOG_ERROR, "client '%s': %s", c->name, ut_strerror(AU_EREMOVED));
    }
}

/* Claims this period's scan. True when this client should scan now. */
static bool claim_scan(struct au_client *c)
{
    int64_t now = ut_wall_ns(), last = 0;
    if (odb_txn_begin(c->odb) != 0)
        return false;
    size_t sz = sizeof last;
    int err = odb_get(c->odb, ODB_ROOT, "/System/Watchdog/Last scan", ODB_TYPE_INT64, &last, &sz);
    bool due = err == ODB_ENOKEY ||
               (err == 0 && now - last >= (int64_t)c->period_ms * 900000); /* 0.9 period */
    if (due)
        err = odb_set(c->odb, ODB_ROOT, "/System/Watchdog/Last scan", ODB_TYPE_INT64, &now,
                      sizeof now, 1, ODB_SET_CREATE);
    if (err && err != ODB_ENOKEY) {
        odb_txn_abort(c->odb);
        return false;
    }
    return odb_txn_commit(c->odb) == 0 && due;
}

static int check_responsive(struct au_client *c, struct odb_hkey entry, uint32_t slot)
{
    int64_t last = 0, now = ut_wall_ns();
    size_t sz = sizeof last;
    if (odb_get(c->odb, entry, "Last activity", ODB_TYPE_INT64, &last, &sz) != 0)
        return 0;
    char name[32] = "?";
    sz = sizeof name;
    odb_get(c->odb, entry, "Name", ODB_TYPE_STRING, name, &sz);
    int64_t silent_ms = (now - last) / 1000000;
    int64_t reported = 0;
    sz = sizeof reported;
    bool was_reported =
        odb_get(c->odb, entry, "Unresponsive since", ODB_TYPE_INT64, &reported, &sz) == 0;
    if (silent_ms < c->unresponsive_ms) {
        if (was_reported && odb_delete(c->odb, entry, "Unresponsive since", false) == 0)
            au_msg(c, MB_MSG_INFO, "client '%s' (slot %u) is responsive again", name, slot);
        return 0;
    }
    if (c->remove_unresponsive) {
        char why[96];
        snprintf(why, sizeof why, "unresponsive for %.1f s (alive, removed by option)",
                 (double)silent_ms / 1000.0);
        return au__cleanup_slot(c, slot, why, true);
    }
    if (!was_reported && odb_set(c->odb, entry, "Unresponsive since", ODB_TYPE_INT64, &last,
                                 sizeof last, 1, ODB_SET_CREATE) == 0)
        au_msg(c, MB_MSG_ERROR, "client '%s' (slot %u) is alive but unresponsive for %.1f s", name,
               slot, (double)silent_ms / 1000.0);
    return 0;
}

static int scan(struct au_client *c)
{
    post_notices(c); /* left by a cleaner that died after its commit */
    struct odb_dirent *ents = NULL;
    size_t n = 0;
    int err = odb_dir_list(c->odb, c->clients_dir, &ents, &n);
    if (err)
        return err;
    int removed = 0;
    for (size_t i = 0; i < n; i++) {
        char *end;
        unsigned long slot = strtoul(ents[i].name, &end, 10);
        if (*end || slot >= c->max_clients || slot == c->slot)
            continue;
        int r;
        if (!au__slot_alive(c, (uint32_t)slot))
            r = au__cleanup_slot(c, (uint32_t)slot, "process died (liveness token released)",
                                 false);
        else
            r = check_responsive(c, ents[i].key, (uint32_t)slot);
        if (r > 0)
            removed += r;
    }
    odb_dirents_free(ents);
    return removed;
}

void au__persist_messages(struct au_client *c)
{
    pthread_mutex_lock(&c->wd_mutex);
    if (!c->log) {
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/messages.sqlite3", c->expdir);
        int err = mb_msglog_open(path, &c->log);
        if (err)
            ut_log(UT_LOG_WARN, "cannot open message log %s: %s", path, ut_strerror(err));
    }
    if (c->log)
        mb_msglog_sync(c->log, c->ring);
    pthread_mutex_unlock(&c->wd_mutex);
}

int au_watchdog_run(struct au_client *c)
{
    if (c->forked_copy)
        return 0;
    heartbeat(c);
    (void)au_buffer_publish(c);
    if (!claim_scan(c))
        return 0;
    int removed = scan(c);
    au__persist_messages(c);
    return removed;
}

static void *watchdog_main(void *arg)
{
    struct au_client *c = arg;
    pthread_mutex_lock(&c->wd_mutex);
    while (!c->wd_stop) {
        pthread_mutex_unlock(&c->wd_mutex);
        au_watchdog_run(c);
        pthread_mutex_lock(&c->wd_mutex);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += c->period_ms / 1000;
        until.tv_nsec += (long)(c->period_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!c->wd_stop && pthread_cond_timedwait(&c->wd_cond, &c->wd_mutex, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&c->wd_mutex);
    return NULL;
}

int au__watchdog_start(struct au_client *c)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_destroy(&c->wd_cond);
    pthread_cond_init(&c->wd_cond, &attr);
    pthread_condattr_destroy(&attr);
    int rc = pthread_create(&c->wd_thread, NULL, watchdog_main, c);
    if (rc)
        return -rc;
    pthread_mutex_lock(&c->wd_mutex);
    c->wd_running = true;
    pthread_mutex_unlock(&c->wd_mutex);
    return 0;
}

void au__watchdog_stop(struct au_client *c)
{
    pthread_mutex_lock(&c->wd_mutex);
    bool running = c->wd_running;
    c->wd_stop = true;
    c->wd_running = false;
    pthread_cond_broadcast(&c->wd_cond);
    pthread_mutex_unlock(&c->wd_mutex);
    if (running && !c->forked_copy)
        pthread_join(c->wd_thread, NULL);
}
