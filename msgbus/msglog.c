/*
 * msgbus/msglog.c - the SQLite log of system messages, so that the web page
 * and `odbedit msg` can show history after messages have left the ring.
 *
 * Place in the layers: msgbus, on top of the ring's public API (msg.c) and
 * SQLite; the client layer's watchdog calls mb_msglog_sync periodically and
 * at disconnect.
 *
 * Database layout (one file, normally <expdir>/messages.sqlite3, mode 0600,
 * WAL journal so readers never block the writer):
 *
 *   column   type                  meaning
 *   seq      INTEGER PRIMARY KEY   the ring's sequence number
 *   time_ns  INTEGER               CLOCK_REALTIME of the post, ns
 *   type     TEXT                  "ERROR", "INFO", ... (mb_msg_type_name)
 *   source   TEXT                  client name
 *   pid      INTEGER               poster's pid
 *   text     TEXT                  the message
 *
 * with indexes messages_time(time_ns), messages_type(type) and
 * messages_source(source).
 *
 * Sync protocol: BEGIN IMMEDIATE (the database's write lock, waited for up
 * to the busy timeout), read MAX(seq), copy newer messages out of the ring
 * in batches (mb_msg_read: the ring lock is held only for that copy, never
 * while SQLite does I/O), INSERT OR IGNORE each, COMMIT. Because the
 * highest logged seq is read inside the write transaction, concurrent
 * syncers from several processes are serialised and never write a row
 * twice; INSERT OR IGNORE makes that true even if seq ranges overlap. A gap
 * (messages that left the ring before anyone logged them) becomes one row
 * at its first missing seq, type ERROR, source "msglog", saying how many
 * were lost.
 *
 * Lock order: the database lock (a file lock) may be held while the ring
 * lock is taken, never the reverse; posters never touch the database, so
 * this cannot deadlock. sync asserts that the caller holds no lock of rank
 * >= UT_RANK_MSG (it will take the ring lock, and the ODB lock must never
 * be held across disk I/O).
 *
 * Invariants: rows are only ever inserted; seq is unique; every row read
 * back is bounds-checked (text and source cut to the public struct's
 * sizes, unknown types read as INFO).
 *
 * A handle is one SQLite connection and is used by one thread at a time.
 */
#include "msgbus/mb_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BUSY_TIMEOUT_MS                                                                            \
    500 /* short: a watchdog pass must not stall its heartbeat; retried next period */
#define SYNC_BATCH  64
#define LOST_SOURCE "msglog"

struct mb_msglog {
    sqlite3 *db;
    sqlite3_stmt *insert;  /* INSERT OR IGNORE one row */
    sqlite3_stmt *max_seq; /* SELECT COALESCE(MAX(seq), 0) */
    struct mb_msglog_stats stats;
    bool warned_behind; /* "ring behind the log" was logged once */
    char errmsg[256];   /* last SQLite error, "" when none */
};

static const char table_sql[] =
    "CREATE TABLE IF NOT EXISTS messages(seq INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL, "
    "type TEXT NOT NULL, source TEXT NOT NULL, pid INTEGER NOT NULL, text TEXT NOT NULL)";
static const char index_sql[] = "CREATE INDEX IF NOT EXISTS messages_time ON messages(time_ns);"
                                "CREATE INDEX IF NOT EXISTS messages_type ON messages(type);"
                                "CREATE INDEX IF NOT EXISTS messages_source ON messages(source);";
static const char *const columns[] = {"seq", "time_ns", "type", "source", "pid", "text"};

/* Records SQLite's message for rc and maps rc to our error space. */
static int sql_fail(struct mb_msglog *log, int rc, const char *what)
{
    (void)snprintf(log->errmsg, sizeof log->errmsg, "%s: %s", what,
                   log->db ? sqlite3_errmsg(log->db) : sqlite3_errstr(rc));
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return UT_ETIMEOUT;
    case SQLITE_NOMEM:
        return UT_ENOMEM;
    default:
        return MB_EMSGLOG;
    }
}

/* Runs SQL without results. what names it in the error message. */
static int exec(struct mb_msglog *log, const char *sql, const char *what)
{
    int rc = sqlite3_exec(log->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : sql_fail(log, rc, what);
}

/* Checks that the messages table has our columns, in order. Returns 0,
 * MB_EMSGLOG_SCHEMA or an SQLite error. */
static int check_schema(struct mb_msglog *log)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(log->db, "PRAGMA table_info(messages)", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sql_fail(log, rc, "PRAGMA table_info");
    size_t n = 0;
    bool same = true;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *name = sqlite3_column_text(st, 1);
        if (n >= sizeof columns / sizeof columns[0] || !name ||
            strcmp((const char *)name, columns[n]) != 0)
            same = false;
        n++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sql_fail(log, rc, "PRAGMA table_info");
    if (!same || n != sizeof columns / sizeof columns[0]) {
        (void)snprintf(log->errmsg, sizeof log->errmsg,
                       "table 'messages' does not have the columns (seq, time_ns, type, source, "
                       "pid, text)");
        return MB_EMSGLOG_SCHEMA;
    }
    return 0;
}

/* Creates the file with mode 0600 (whatever the umask) if it does not
 * exist; never follows a symlink. Returns 0 or -errno (-ELOOP for a
 * symlink). */
static int create_file(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        /* O_EXCL says EEXIST for a symlink too: tell that case apart with
         * lstat. Never open() and close() an existing log here: closing any
         * descriptor of a file drops every POSIX lock the process holds on
         * it, including the locks of SQLite connections that other threads
         * of this process have open on the log (SQLite then reports I/O
         * errors and a malformed database). */
        struct stat st;
        if (lstat(path, &st) < 0)
            return -errno;
        return S_ISLNK(st.st_mode) ? -ELOOP : 0;
    }
    if (fd < 0)
        return -errno;
    int err = fchmod(fd, 0600) < 0 ? -errno : 0;
    close(fd);
    return err;
}

/* Switches the database to WAL. A fresh file that other processes are
 * opening at the same moment may report SQLITE_BUSY without calling the
 * busy handler, so that case is retried until the busy timeout. */
static int set_wal(struct mb_msglog *log)
{
    int64_t deadline = ut_now_ns() + (int64_t)BUSY_TIMEOUT_MS * 1000000;
    for (;;) {
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(log->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        const unsigned char *mode = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
        bool wal = mode && strcmp((const char *)mode, "wal") == 0;
        sqlite3_finalize(st);
        if (wal)
            return 0;
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
            return sql_fail(log, rc == SQLITE_ROW ? SQLITE_ERROR : rc, "PRAGMA journal_mode=WAL");
        if (ut_now_ns() > deadline)
            return sql_fail(log, rc, "PRAGMA journal_mode=WAL");
        sqlite3_sleep(10);
    }
}

int mb_msglog_open(const char *db_path, struct mb_msglog **out)
{
    if (!db_path || !out)
        return UT_EINVAL;
    int err = create_file(db_path);
    if (err)
        return err;
    struct mb_msglog *log = ut_calloc(1, sizeof *log);
    if (!log)
        return UT_ENOMEM;
    int rc =
        sqlite3_open_v2(db_path, &log->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        err = sql_fail(log, rc, "open");
        goto fail;
    }
    sqlite3_extended_result_codes(log->db, 1);
    sqlite3_busy_timeout(log->db, BUSY_TIMEOUT_MS);
    err = set_wal(log);
    if (!err)
        err = exec(log, "PRAGMA synchronous=NORMAL", "PRAGMA synchronous");
    if (!err)
        err = exec(log, table_sql, "CREATE TABLE");
    if (!err)
        err = check_schema(log);
    if (!err)
        err = exec(log, index_sql, "CREATE INDEX");
    if (err)
        goto fail;
    rc = sqlite3_prepare_v2(log->db,
                            "INSERT OR IGNORE INTO messages(seq, time_ns, type, source, pid, text) "
                            "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                            -1, &log->insert, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(log->db, "SELECT COALESCE(MAX(seq), 0) FROM messages", -1,
                                &log->max_seq, NULL);
    if (rc != SQLITE_OK) {
        err = sql_fail(log, rc, "prepare");
        goto fail;
    }
    log->errmsg[0] = '\0';
    *out = log;
    return 0;

fail:
    ut_log(UT_LOG_WARN, "message log %s: %s", db_path, log->errmsg);
    mb_msglog_close(log);
    return err;
}

void mb_msglog_close(struct mb_msglog *log)
{
    if (!log)
        return;
    sqlite3_finalize(log->insert);
    sqlite3_finalize(log->max_seq);
    sqlite3_close(log->db);
    ut_free(log);
}

const char *mb_msglog_errmsg(const struct mb_msglog *log)
{
    return log ? log->errmsg : "";
}

void mb_msglog_stats(const struct mb_msglog *log, struct mb_msglog_stats *out)
{
    *out = log->stats;
}

/* Reads MAX(seq) into *out. Returns 0 or an error (errmsg set). */
static int read_max_seq(struct mb_msglog *log, uint64_t *out)
{
    int rc = sqlite3_step(log->max_seq);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(log->max_seq);
        return sql_fail(log, rc, "SELECT MAX(seq)");
    }
    sqlite3_int64 v = sqlite3_column_int64(log->max_seq, 0);
    sqlite3_reset(log->max_seq);
    *out = v > 0 ? (uint64_t)v : 0;
    return 0;
}

int mb_msglog_last_seq(struct mb_msglog *log, uint64_t *out)
{
    if (!log || !out)
        return UT_EINVAL;
    return read_max_seq(log, out);
}

/* Inserts one row unless its seq exists. Adds 1 to *n_written when a row
 * was written. Returns 0 or an error. */
static int insert_row(struct mb_msglog *log, const struct mb_msg *m, uint64_t *n_written)
{
    sqlite3_stmt *st = log->insert;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)m->seq);
    sqlite3_bind_int64(st, 2, m->time_ns);
    sqlite3_bind_text(st, 3, mb_msg_type_name(m->type), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, m->source, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, m->pid);
    sqlite3_bind_text(st, 6, m->text, (int)m->text_len, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE)
        return sql_fail(log, rc, "INSERT");
    *n_written += (uint64_t)sqlite3_changes(log->db);
    return 0;
}

/* Writes the row that stands for n_lost messages gone before seq `at`
 * was logged. Returns 0 or an error. */
static int insert_lost_row(struct mb_msglog *log, uint64_t at, uint64_t n_lost, uint64_t *n_written)
{
    struct mb_msg m = {0};
    m.seq = at;
    m.time_ns = ut_wall_ns();
    m.type = MB_MSG_ERROR;
    m.pid = (uint32_t)getpid();
    ut_strlcpy(m.source, LOST_SOURCE, sizeof m.source);
    int len = snprintf(m.text, sizeof m.text,
                       "%llu messages lost (seq %llu..%llu left the ring before they were logged)",
                       (unsigned long long)n_lost, (unsigned long long)at,
                       (unsigned long long)(at + n_lost - 1));
    m.text_len = (uint32_t)(len > 0 ? len : 0);
    return insert_row(log, &m, n_written);
}

int mb_msglog_sync(struct mb_msglog *log, struct mb_msgring *ring)
{
    UT_ASSERT(ut_lock_top_rank() < UT_RANK_MSG);
    if (!log || !ring)
        return UT_EINVAL;
    log->errmsg[0] = '\0';
    struct mb_msg *buf = ut_malloc(SYNC_BATCH * sizeof *buf);
    if (!buf)
        return UT_ENOMEM;
    uint64_t written = 0, lost = 0;
    int err = exec(log, "BEGIN IMMEDIATE", "BEGIN IMMEDIATE");
    if (err)
        goto out;
    uint64_t after;
    err = read_max_seq(log, &after);
    if (err)
        goto rollback;
    uint64_t target = mb_msg_last_seq(ring);
    if (target < after && !log->warned_behind) {
        log->warned_behind = true;
        ut_log(UT_LOG_WARN,
               "message ring (last seq %llu) is behind the log (seq %llu): was it re-created "
               "without first_seq?",
               (unsigned long long)target, (unsigned long long)after);
    }
    while (after < target) {
        size_t n = 0;
        uint64_t missed = 0;
        err = mb_msg_read(ring, after, buf, SYNC_BATCH, &n, &missed);
        if (err)
            goto rollback;
        if (missed) {
            err = insert_lost_row(log, after + 1, missed, &written);
            if (err)
                goto rollback;
            lost += missed;
        }
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++) {
            err = insert_row(log, &buf[i], &written);
            if (err)
                goto rollback;
        }
        after = buf[n - 1].seq;
    }
    err = exec(log, "COMMIT", "COMMIT");
    if (err)
        goto rollback;
    log->stats.n_syncs++;
    log->stats.n_written += written;
    log->stats.n_lost += lost;
    log->stats.last_written = written;
    log->stats.last_lost = lost;
    goto out;

rollback:
    /* The error text is kept: ROLLBACK's own outcome does not matter. */
    sqlite3_exec(log->db, "ROLLBACK", NULL, NULL, NULL);
out:
    ut_free(buf);
    return err;
}

/* Copies a column's text into dst (size bytes), cut to fit. Returns the
 * length copied. */
static uint32_t copy_column(sqlite3_stmt *st, int col, char *dst, size_t size)
{
    const unsigned char *p = sqlite3_column_text(st, col);
    int len = sqlite3_column_bytes(st, col);
    size_t n = p && len > 0 ? (size_t)len : 0;
    if (n > size - 1)
        n = size - 1;
    if (n)
        memcpy(dst, p, n);
    dst[n] = '\0';
    return (uint32_t)n;
}

/* Appends to the NUL-terminated text in buf; the text always fits (the
 * query's longest form is far below the buffer), which is asserted. */
static void append(char *buf, size_t size, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, size - *len, fmt, ap);
    va_end(ap);
    UT_ASSERT(n >= 0 && (size_t)n < size - *len);
    *len += (size_t)n;
}

int mb_msglog_query(struct mb_msglog *log, const struct mb_msglog_filter *f, struct mb_msg **out,
                    size_t *n_out)
{
    static const struct mb_msglog_filter all = {0};
    if (!log || !out || !n_out)
        return UT_EINVAL;
    if (!f)
        f = &all;
    if (f->type_mask & ~MB_MSG_MASK_ALL)
        return UT_EINVAL;
    log->errmsg[0] = '\0';

    /* Newest first with LIMIT, reversed below: "the newest max". */
    char sql[512];
    size_t len = 0;
    append(sql, sizeof sql, &len,
           "SELECT seq, time_ns, type, source, pid, text FROM messages "
           "WHERE seq > ?1 AND (?2 = 0 OR time_ns >= ?2) AND "
           "(?3 = 0 OR time_ns < ?3) AND (?4 IS NULL OR source = ?4)");
    if (f->type_mask) {
        append(sql, sizeof sql, &len, " AND type IN (");
        for (int t = 0, k = 0; t < MB_MSG_TYPE_MAX; t++)
            if (f->type_mask & MB_MSG_MASK(t))
                append(sql, sizeof sql, &len, "%s?%d", k++ ? ", " : "", 10 + t);
        append(sql, sizeof sql, &len, ")");
    }
    append(sql, sizeof sql, &len, " ORDER BY seq DESC LIMIT ?5");

    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(log->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sql_fail(log, rc, "SELECT");
    sqlite3_bind_int64(st, 1, (sqlite3_int64)(f->after_seq > INT64_MAX ? INT64_MAX : f->after_seq));
    sqlite3_bind_int64(st, 2, f->since_ns);
    sqlite3_bind_int64(st, 3, f->until_ns);
    if (f->source)
        sqlite3_bind_text(st, 4, f->source, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, f->max && f->max < INT64_MAX ? (sqlite3_int64)f->max : -1);
    for (int t = 0; t < MB_MSG_TYPE_MAX; t++)
        if (f->type_mask & MB_MSG_MASK(t))
            sqlite3_bind_text(st, 10 + t, mb_msg_type_name((enum mb_msg_type)t), -1, SQLITE_STATIC);

    struct mb_msg *msgs = NULL;
    size_t n = 0, cap = 0;
    int err = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct mb_msg *nm = ut_realloc(msgs, ncap * sizeof *nm);
            if (!nm) {
                err = UT_ENOMEM;
                break;
            }
            msgs = nm;
            cap = ncap;
        }
        struct mb_msg *m = &msgs[n++];
        memset(m, 0, sizeof *m);
        sqlite3_int64 seq = sqlite3_column_int64(st, 0);
        sqlite3_int64 pid = sqlite3_column_int64(st, 4);
        m->seq = seq > 0 ? (uint64_t)seq : 0;
        m->time_ns = sqlite3_column_int64(st, 1);
        const unsigned char *type = sqlite3_column_text(st, 2);
        if (!type || mb_msg_type_from_name((const char *)type, &m->type) != 0)
            m->type = MB_MSG_INFO;
        copy_column(st, 3, m->source, sizeof m->source);
        m->pid = pid > 0 && pid <= UINT32_MAX ? (uint32_t)pid : 0;
        m->text_len = copy_column(st, 5, m->text, sizeof m->text);
    }
    if (!err && rc != SQLITE_DONE)
        err = sql_fail(log, rc, "SELECT");
    sqlite3_finalize(st);
    if (err) {
        ut_free(msgs);
        return err;
    }
    for (size_t i = 0; i < n / 2; i++) {
        struct mb_msg tmp = msgs[i];
        msgs[i] = msgs[n - 1 - i];
        msgs[n - 1 - i] = tmp;
    }
    *out = msgs;
    *n_out = n;
    return 0;
}

void mb_msglog_query_free(struct mb_msg *msgs)
{
    ut_free(msgs);
}
