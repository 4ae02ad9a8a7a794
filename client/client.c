/*
 * client/client.c - connecting to an experiment and /System/Clients.
 *
 * An experiment is a directory. Its shared segments are named from the
 * directory's real path (ut_shm_name), so two experiments never collide.
 *
 * Liveness: client slot i is held through an OFD write lock on byte i of
 * <experiment>/.aurum-clients.lock. The kernel drops the lock when the last
 * descriptor of the open file description closes, i.e. when the process
 * dies, whatever the PID namespace and however the PID is reused later. A
 * slot is taken by trying the bytes in turn with F_OFD_SETLK; whoever holds
 * byte i owns slot i, so a new occupant knows any /System/Clients/<i> entry
 * it finds belongs to a dead predecessor and removes it first. The lock is
 * an OFD lock (not a classic POSIX one) so that closing some other
 * descriptor of the same file, anywhere in the process, cannot drop it.
 *
 * Fork: OFD locks are shared with a forked child through the inherited
 * descriptor, which would keep a dead parent "alive". A pthread_atfork
 * child handler closes the descriptor of every connection in the child;
 * those connections are unusable there (the child must connect anew).
 *
 * Registration and the name check run in one ODB transaction, so two
 * clients called "fe" started at once become "fe" and "fe1".
 *
 * The per-process list of connections (for the fork handler and the exit
 * flush) is guarded by a plain mutex taken only around list edits.
 */
#include "client/client_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_mutex_t process_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct au_client *process_clients;
static pthread_once_t process_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void)
{
    pthread_mutex_lock(&process_mutex);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&process_mutex);
}

static void atfork_child(void)
{
    for (struct au_client *c = process_clients; c; c = c->next_in_process) {
        if (c->lock_fd >= 0)
            close(c->lock_fd);
        c->lock_fd = -1;
        c->forked_copy = true;
    }
    pthread_mutex_unlock(&process_mutex);
}

static void flush_at_exit(void)
{
    mb_msg_flush();
}

static void process_init(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    if (atexit(flush_at_exit) != 0)
        ut_log(UT_LOG_WARN, "atexit failed: deferred messages are flushed only at disconnect");
}

const char *au_default_experiment(void)
{
    static char path[PATH_MAX];
    const char *env = getenv("AURUM_EXP");
    if (env && *env)
        return env;
    pthread_mutex_lock(&process_mutex);
    if (!path[0]) {
        const char *home = getenv("HOME");
        snprintf(path, sizeof path, "%s/aurum-exp", home && *home ? home : ".");
    }
    pthread_mutex_unlock(&process_mutex);
    return path;
}

int au__fail(struct au_client *c, int err, const char *fmt, ...)
{
    (void)c;
    va_list ap;
    char msg[512];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ut_log(UT_LOG_DEBUG, "%s", msg);
    return err;
}

/* Opens the experiment's segments. Creates them if needed; a freshly
 * created ODB is initialised from odb.json when present. */
static int open_experiment(struct au_client *c, const struct au_connect_opts *o)
{
    char shm[128];
    int err = ut_shm_name(c->expdir, "odb", shm, sizeof shm);
    if (err)
        return err;
    struct odb_params p = {0};
    p.size_bytes = o->odb_size_bytes;
    p.lock_timeout_ms = o->lock_timeout_ms;
    p.max_subscribers = o->max_clients ? o->max_clients : AU_DEFAULT_MAX_CLIENTS;
    err = odb_open(shm, ODB_OPEN_CREATE, &p, &c->odb);
    if (err)
        return err;
    /* Creation race: whoever created the segment sets it up, in one
     * transaction, marked by /System/Config/Max clients. */
    err = odb_txn_begin(c->odb);
    if (err)
        return err;
    uint32_t max = 0;
    size_t sz = sizeof max;
    err = odb_get(c->odb, ODB_ROOT, "/System/Config/Max clients", ODB_TYPE_UINT32, &max, &sz);
    if (err == ODB_ENOKEY) {
        char file[PATH_MAX + 16];
        snprintf(file, sizeof file, "%s/odb.json", c->expdir);
        if (access(file, R_OK) == 0) {
            err = odb_load(c->odb, ODB_ROOT, file);
            if (err)
                ut_log(UT_LOG_WARN, "could not load %s: %s (%s)", file, ut_strerror(err),
                       odb_errmsg());
            /* Entries of clients from the previous session are dead. */
            odb_delete(c->odb, ODB_ROOT, "/System/Clients", true);
            odb_delete(c->odb, ODB_ROOT, "/System/Watchdog", true);
        }
        max = p.max_subscribers;
        err = odb_set(c->odb, ODB_ROOT, "/System/Config/Max clients", ODB_TYPE_UINT32, &max,
                      sizeof max, 1, ODB_SET_CREATE);
        if (!err)
            err = odb_create(c->odb, ODB_ROOT, "/System/Clients", ODB_TYPE_DIR, 0, 0, NULL);
        if (err == ODB_EEXIST)
            err = 0;
    }
    if (err) {
        odb_txn_abort(c->odb);
        return err;
    }
    err = odb_txn_commit(c->odb);
    if (err)
        return err;
    c->max_clients = max;

    err = ut_shm_name(c->expdir, "msg", shm, sizeof shm);
    if (err)
        return err;
    struct mb_msgring_params mp = {0};
    mp.lock_timeout_ms = o->lock_timeout_ms;
    err = mb_msgring_open(shm, 0, &mp, &c->ring);
    /* A missing segment: mb.h documents UT_ENOENT, the shm layer gives
     * -ENOENT; take either. */
    if (err != UT_ENOENT && err != -ENOENT)
        return err;
    /* A new ring continues the numbering of the message log, so the log
     * never mistakes new messages for ones it already has. */
    char log_path[PATH_MAX + 32];
    snprintf(log_path, sizeof log_path, "%s/messages.sqlite3", c->expdir);
    struct mb_msglog *log = NULL;
    uint64_t last = 0;
    if (mb_msglog_open(log_path, &log) == 0 && mb_msglog_last_seq(log, &last) == 0)
        mp.first_seq = last + 1;
    mb_msglog_close(log);
    return mb_msgring_open(shm, MB_MSGRING_CREATE, &mp, &c->ring);
}

/* Takes the first free client slot: an OFD lock on its byte. */
static int take_slot(struct au_client *c)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/.aurum-clients.lock", c->expdir);
    c->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (c->lock_fd < 0)
        return -errno;
    uint32_t start = (uint32_t)getpid() % c->max_clients;
    for (uint32_t n = 0; n < c->max_clients; n++) {
        uint32_t i = (start + n) % c->max_clients;
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = i, .l_len = 1};
        if (fcntl(c->lock_fd, F_OFD_SETLK, &fl) == 0) {
            c->slot = i;
            return 0;
        }
        if (errno != EAGAIN && errno != EACCES)
            return -errno;
    }
    return au__fail(c, AU_EFULL, "all %u client slots of %s are taken", c->max_clients, c->expdir);
}

bool au__slot_alive(const struct au_client *c, uint32_t slot)
{
    if (slot == c->slot)
        return true;
    if (c->lock_fd < 0)
        return false;
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = slot, .l_len = 1};
    if (fcntl(c->lock_fd, F_OFD_GETLK, &fl) < 0)
        return true; /* cannot tell: never remove on doubt */
    return fl.l_type != F_UNLCK;
}

/* Picks a unique name (inside the registration transaction). Reads every
 * taken name once, so the lock is held for O(clients), not O(clients^2). */
static int choose_name(struct au_client *c, const char *wanted, bool refuse)
{
    struct odb_dirent *ents = NULL;
    size_t n = 0;
    int err = odb_dir_list(c->odb, c->clients_dir, &ents, &n);
    if (err)
        return err;
    char(*taken)[32] = ut_calloc(n ? n : 1, sizeof *taken);
    if (!taken) {
        odb_dirents_free(ents);
        return UT_ENOMEM;
    }
    size_t n_taken = 0;
    for (size_t i = 0; i < n; i++) {
        size_t sz = sizeof taken[0];
        if (odb_get(c->odb, ents[i].key, "Name", ODB_TYPE_STRING, taken[n_taken], &sz) == 0)
            n_taken++;
    }
    odb_dirents_free(ents);
    char candidate[32];
    ut_strlcpy(candidate, wanted, sizeof candidate);
    for (int suffix = 0;; suffix++) {
        if (suffix > 0) {
            char num[12];
            int nl = snprintf(num, sizeof num, "%d", suffix);
            size_t keep = strlen(wanted);
            if (keep + (size_t)nl >= sizeof candidate)
                keep = sizeof candidate - 1 - (size_t)nl;
            snprintf(candidate, sizeof candidate, "%.*s%s", (int)keep, wanted, num);
        }
        bool clash = false;
        for (size_t i = 0; i < n_taken && !clash; i++)
            clash = strcasecmp(taken[i], candidate) == 0;
        if (!clash)
            break;
        if (refuse) {
            ut_free(taken);
            return au__fail(c, AU_EDUPNAME, "client name '%s' is in use", wanted);
        }
    }
    ut_free(taken);
    ut_strlcpy(c->name, candidate, sizeof c->name);
    return 0;
}

static int set_str(struct odb *odb, struct odb_hkey dir, const char *name, const char *v,
                   uint32_t cap)
{
    char buf[256] = {0};
    ut_strlcpy(buf, v, sizeof buf);
    return odb_set(odb, dir, name, ODB_TYPE_STRING, buf, cap, 1, ODB_SET_CREATE);
}

static int set_i64(struct odb *odb, struct odb_hkey dir, const char *name, int64_t v)
{
    return odb_set(odb, dir, name, ODB_TYPE_INT64, &v, sizeof v, 1, ODB_SET_CREATE);
}

static int register_client(struct au_client *c, const char *wanted, bool refuse)
{
    char path[64];
    snprintf(path, sizeof path, "/System/Clients/%u", c->slot);
    int err = odb_txn_begin(c->odb);
    if (err)
        return err;
    err = odb_find(c->odb, ODB_ROOT, "/System/Clients", &c->clients_dir);
    if (!err)
        err = choose_name(c, wanted, refuse);
    if (!err)
        err = odb_create(c->odb, ODB_ROOT, path, ODB_TYPE_DIR, 0, 0, &c->entry);
    char host[64] = "?";
    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    int32_t pid = (int32_t)getpid();
    int64_t now = ut_wall_ns();
    if (!err)
        err = set_str(c->odb, c->entry, "Name", c->name, 32);
    if (!err)
        err = set_str(c->odb, c->entry, "Host", host, 64);
    if (!err)
        err = odb_set(c->odb, c->entry, "PID", ODB_TYPE_INT32, &pid, sizeof pid, 1, ODB_SET_CREATE);
    if (!err)
        err = odb_set(c->odb, c->entry, "Slot", ODB_TYPE_UINT32, &c->slot, sizeof c->slot, 1,
                      ODB_SET_CREATE);
    if (!err)
        err = set_i64(c->odb, c->entry, "Connect time", now);
    if (!err)
        err = set_i64(c->odb, c->entry, "Last activity", now);
    if (!err)
        err = set_str(c->odb, c->entry, "Buffers", "", 128);
    if (err) {
        odb_txn_abort(c->odb);
        return err;
    }
    return odb_txn_commit(c->odb);
}

int au_connect(const struct au_connect_opts *opts, struct au_client **out)
{
    if (!opts || !opts->name || !*opts->name || strlen(opts->name) > 31 || strchr(opts->name, '/'))
        return UT_EINVAL;
    pthread_once(&process_once, process_init);
    struct au_client *c = ut_calloc(1, sizeof *c);
    if (!c)
        return UT_ENOMEM;
    c->lock_fd = -1;
    c->event_fd = -1;
    c->period_ms = opts->watchdog_period_ms > 0 ? opts->watchdog_period_ms : 1000;
    c->unresponsive_ms = opts->unresponsive_ms > 0 ? opts->unresponsive_ms : 10000;
    c->remove_unresponsive = opts->remove_unresponsive;
    pthread_mutex_init(&c->watch_mutex, NULL);
    pthread_mutex_init(&c->wd_mutex, NULL);
    pthread_cond_init(&c->wd_cond, NULL);
    const char *exp = opts->experiment ? opts->experiment : au_default_experiment();
    int err = 0;
    if ((opts->flags & AU_CONNECT_CREATE) && mkdir(exp, 0700) < 0 && errno != EEXIST)
        err = -errno;
    if (!err && !realpath(exp, c->expdir))
        err = errno == ENOENT ? AU_ENOEXP : -errno;
    if (!err)
        err = open_experiment(c, opts);
    if (!err)
        err = take_slot(c);
    if (!err)
        err = au__cleanup_slot(c, c->slot, "process died (slot reused)", true);
    if (err > 0)
        err = 0;
    if (!err) {
        int n = odb_watch_remove_subscriber(c->odb, c->slot);
        err = n < 0 ? n : 0;
    }
    if (!err)
        err = register_client(c, opts->name, (opts->flags & AU_CONNECT_REFUSE_DUPLICATE) != 0);
    if (err)
        goto fail;
    ut_lock_set_owner_name(c->name);
    pthread_mutex_lock(&process_mutex);
    c->next_in_process = process_clients;
    process_clients = c;
    pthread_mutex_unlock(&process_mutex);
    if (!(opts->flags & AU_CONNECT_NO_WATCHDOG_THREAD)) {
        err = au__watchdog_start(c);
        if (err) {
            au_disconnect(c);
            return err;
        }
    }
    *out = c;
    return 0;
fail:
    if (c->lock_fd >= 0)
        close(c->lock_fd);
    mb_msgring_close(c->ring);
    odb_close(c->odb);
    pthread_mutex_destroy(&c->watch_mutex);
    pthread_mutex_destroy(&c->wd_mutex);
    pthread_cond_destroy(&c->wd_cond);
    ut_free(c);
    return err;
}

/* A byte of the lock file beyond every slot byte: its lock serialises the
 * last-client check of disconnects running at the same time. */
#define SAVE_LOCK_BYTE ((off_t)1 << 40)

/* True when no client slot's token is held by another open file
 * description. Runs after our own slot was released, so it checks every
 * slot (a newcomer may already hold ours). */
static bool last_client(const struct au_client *c)
{
    for (uint32_t i = 0; i < c->max_clients; i++) {
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = i, .l_len = 1};
        if (fcntl(c->lock_fd, F_OFD_GETLK, &fl) < 0 || fl.l_type != F_UNLCK)
            return false; /* held, or cannot tell */
    }
    return true;
}

/* Saves the ODB to <experiment>/odb.json when this is the last client.
 * Our slot is released first and the check runs under the save lock: of
 * clients disconnecting at once, each might otherwise see the others still
 * holding their slots, and none would save. This way the last one to take
 * the save lock sees every other slot free. */
static void save_if_last(struct au_client *c)
{
    if (c->lock_fd < 0)
        return;
    struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = c->slot, .l_len = 1};
    if (fcntl(c->lock_fd, F_OFD_SETLK, &fl) < 0)
        return;
    struct flock sl = {
        .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = SAVE_LOCK_BYTE, .l_len = 1};
    while (fcntl(c->lock_fd, F_OFD_SETLKW, &sl) < 0) {
        if (errno != EINTR)
            return;
    }
    if (last_client(c)) {
        char file[PATH_MAX + 16];
        (void)snprintf(file, sizeof file, "%s/odb.json", c->expdir);
        int err = odb_save(c->odb, ODB_ROOT, file);
        if (err)
            ut_log(UT_LOG_ERROR, "could not save the ODB to %s: %s", file, ut_strerror(err));
    }
    sl.l_type = F_UNLCK;
    (void)fcntl(c->lock_fd, F_OFD_SETLK, &sl);
}

/* Releases a connection copied into a child by fork(). The watchdog,
 * notifier and dispatcher threads do not exist here, and their mutexes and
 * condition variable may have been held or waited on at the fork, so they
 * are neither used nor destroyed (pthread_cond_destroy would wait forever
 * for the vanished waiter). The SQLite handle belongs to the parent (SQLite
 * forbids using a connection across fork), so it is left alone. Only
 * process-local resources are released; nothing shared is touched. */
static void disconnect_forked_copy(struct au_client *c)
{
    if (c->event_fd >= 0)
        close(c->event_fd);
    mb_msgring_close(c->ring);
    odb_close(c->odb);
    ut_free(c->watches);
    ut_free(c);
}

void au_disconnect(struct au_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&process_mutex);
    for (struct au_client **p = &process_clients; *p; p = &(*p)->next_in_process) {
        if (*p == c) {
            *p = c->next_in_process;
            break;
        }
    }
    pthread_mutex_unlock(&process_mutex);
    if (c->forked_copy) {
        disconnect_forked_copy(c);
        return;
    }
    au__watchdog_stop(c);
    au__watch_shutdown(c);
    /* After SIGINT/SIGTERM (ut_interrupt), every contended lock wait fails
     * with UT_EINTR at once, which would leave our entry behind. The
     * cleanup must happen anyway: lift the process-wide flag while it runs
     * and raise it again afterwards, so the program's other waits still
     * end. */
    bool interrupted = ut_interrupted();
    if (interrupted)
        ut_interrupt_clear();
    au__buffers_close_all(c);
    mb_msg_flush();
    odb_watch_remove_subscriber(c->odb, c->slot);
    if (!au_client_removed(c)) {
        /* Only our own entry: check the slot before deleting. */
        uint32_t slot = UINT32_MAX;
        size_t sz = sizeof slot;
        if (odb_get(c->odb, c->entry, "Slot", ODB_TYPE_UINT32, &slot, &sz) == 0 && slot == c->slot)
            odb_delete(c->odb, c->entry, NULL, true);
    }
    au__persist_messages(c);
    save_if_last(c);
    if (interrupted)
        ut_interrupt();
    mb_msglog_close(c->log);
    if (c->lock_fd >= 0)
        close(c->lock_fd);
    mb_msgring_close(c->ring);
    odb_close(c->odb);
    ut_free(c->watches);
    pthread_mutex_destroy(&c->watch_mutex);
    pthread_mutex_destroy(&c->wd_mutex);
    pthread_cond_destroy(&c->wd_cond);
    ut_free(c);
}

struct odb *au_odb(struct au_client *c)
{
    return c->odb;
}

struct mb_msgring *au_msgring(struct au_client *c)
{
    return c->ring;
}

const char *au_client_name(const struct au_client *c)
{
    return c->name;
}

uint32_t au_client_slot(const struct au_client *c)
{
    return c->slot;
}

const char *au_experiment_dir(const struct au_client *c)
{
    return c->expdir;
}

bool au_client_removed(const struct au_client *c)
{
    return __atomic_load_n(&c->removed, __ATOMIC_ACQUIRE);
}

int au_msg(struct au_client *c, enum mb_msg_type type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = mb_msg_vpost(c->ring, type, c->name, fmt, ap);
    va_end(ap);
    return err;
}

int au_client_list(struct au_client *c, struct au_client_info **out, size_t *n_out)
{
    struct odb_dirent *ents = NULL;
    size_t n = 0;
    int err = odb_dir_list(c->odb, c->clients_dir, &ents, &n);
    if (err)
        return err;
    struct au_client_info *infos = ut_calloc(n ? n : 1, sizeof *infos);
    if (!infos) {
        odb_dirents_free(ents);
        return UT_ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct au_client_info *ci = &infos[k];
        memset(ci, 0, sizeof *ci);
        /* Each entry is read in one transaction, so a client removed
         * meanwhile is either read whole or skipped (its handle is stale):
         * never half of it (MIDAS failure mode 1). */
        if (odb_txn_begin(c->odb) != 0)
            continue;
        size_t sz = sizeof ci->name;
        int e = odb_get(c->odb, ents[i].key, "Name", ODB_TYPE_STRING, ci->name, &sz);
        sz = sizeof ci->host;
        if (!e && odb_get(c->odb, ents[i].key, "Host", ODB_TYPE_STRING, ci->host, &sz) != 0)
            ci->host[0] = '\0';
        sz = sizeof ci->pid;
        if (!e)
            e = odb_get(c->odb, ents[i].key, "PID", ODB_TYPE_INT32, &ci->pid, &sz);
        sz = sizeof ci->slot;
        if (!e)
            e = odb_get(c->odb, ents[i].key, "Slot", ODB_TYPE_UINT32, &ci->slot, &sz);
        sz = sizeof ci->connect_ns;
        if (!e)
            e = odb_get(c->odb, ents[i].key, "Connect time", ODB_TYPE_INT64, &ci->connect_ns, &sz);
        sz = sizeof ci->last_activity_ns;
        if (!e)
            e = odb_get(c->odb, ents[i].key, "Last activity", ODB_TYPE_INT64, &ci->last_activity_ns,
                        &sz);
        (void)odb_txn_commit(c->odb); /* read only: cannot fail */
        if (e)
            continue;
        ci->alive = au__slot_alive(c, ci->slot);
        k++;
    }
    odb_dirents_free(ents);
    *out = infos;
    *n_out = k;
    return 0;
}

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    if (stop_requested) {
        /* A second signal: the program did not stop; let it die. */
        (void)signal(sig, SIG_DFL); /* cannot fail for these signals */
        (void)raise(sig);
        return;
    }
    stop_requested = 1;
    ut_interrupt();
}

void au_install_signal_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

bool au_should_stop(void)
{
    return stop_requested != 0;
}

int au_experiment_remove_segments(const char *expdir)
{
    static const char *const kinds[] = {"odb", "msg"};
    int result = 0;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        char shm[128];
        int err = ut_shm_name(expdir, kinds[i], shm, sizeof shm);
        if (!err)
            err = ut_shm_unlink(shm);
        if (err && err != -ENOENT && !result)
            result = err;
    }
    int err = au__buffers_remove_segments(expdir);
    if (err && !result)
        result = err;
    return result;
}
