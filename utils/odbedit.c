/*
 * utils/odbedit.c - the shift crew's command-line view of an experiment:
 * browse and edit the ODB, show clients and messages, watch keys.
 *
 *   odbedit [-e EXPDIR] [-h HOST:PORT] [-n NAME] [-c 'command']...
 *
 * Place in the layers: a program on top of the client library
 * (client/aurum.h); it reaches the ODB and the message ring only through
 * the handles the connection hands out. Text work (tokenizer, paths,
 * values) lives in utils/cli_value.c so that it can be unit-tested.
 *
 * Three ways to run:
 *   - with -c: every -c command runs, in order, and the first that fails
 *     stops the rest (exit status 1). MIDAS ran only the last -c.
 *   - interactive on a terminal: libedit line editing, TAB completion of
 *     commands and ODB paths, history in ~/.aurum_odbedit_history.
 *   - commands on a non-terminal stdin (a pipe, a file): one command per
 *     line, no prompt; every line runs, the exit status is 1 if any failed.
 *
 * Errors: each failing command prints exactly one line on stderr,
 * "odbedit: <command>: <ut_strerror(err)> (<detail>)", where the detail is
 * odb_errmsg() captured right after the failing ODB call, or odbedit's own
 * explanation. Commands that change something print nothing on success,
 * as in MIDAS. stdout is flushed after every command, before any error is
 * written, so the two streams interleave in command order.
 *
 * Concurrency: other clients change the ODB while we look at it. A
 * directory listing is a snapshot (odb_dir_list); an entry deleted after
 * the snapshot gives ODB_ESTALE or ODB_ENOKEY when we read it, and is
 * skipped silently (MIDAS failure mode 1: `ls -l /System/Clients` while
 * clients come and go must never print an error). Each entry is read
 * completely before anything of it is printed, so a vanished entry leaves
 * no half line behind.
 *
 * Signals: SIGINT sets a flag and calls ut_interrupt(), which makes every
 * blocking wait of the process (lock waits, au_dispatch) return UT_EINTR.
 * `watch` ends on it and consumes it; at the interactive prompt it just
 * abandons the line; elsewhere it stops odbedit after the current command.
 * SIGTERM is the client library's handler (au_install_signal_handlers):
 * odbedit stops after the current command and disconnects cleanly.
 */
#include "client/aurum.h"
#include "utils/cli_edit.h"
#include "utils/cli_keys.h"
#include "utils/cli_value.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/banned.h"

#define PROG               "odbedit"
#define HISTORY_FILE       ".aurum_odbedit_history"
#define MSG_DEFAULT        20
#define MSG_MAX            10000
#define MSG_LOG_SLACK      256 /* messages posted between reading the ring and the log */
#define CHECK_REPORT_BYTES 4096
#define STRING_GROW_STEP   32 /* a scalar string that must grow gets a multiple of this */

struct command;

/* The session: one per process, used by the main thread only. */
struct ed {
    struct au_client *c;
    struct odb *odb;
    char cwd[ODB_PATH_MAX + 1]; /* current ODB directory, absolute, as the ODB spells it */
    char why[1024];             /* detail of the current command's error */
    const struct command *cur;  /* the command running, for usage errors */
    const char *watch_path;     /* the path `watch` watches, while it runs */
    bool tty;                   /* interactive on a terminal */
    bool quit;                  /* `quit` was given */
    bool out_broken;            /* writing stdout failed (closed pipe) */
};

typedef int (*command_fn)(struct ed *e, int argc, char **argv);

struct command {
    const char *name;
    const char *alias;
    command_fn fn;
    const char *usage;
    const char *summary; /* for the command list */
    const char *help;    /* for `help command` */
};

/*
 * LeakSanitizer suppressions for the asan build (unused otherwise): libedit
 * keeps wide copies (wcsdup) of the name and help text given to EL_ADDFN
 * and el_end never frees them, a fixed 2-allocation leak per editor. We
 * never call wcsdup ourselves.
 */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:wcsdup\n";
}

/* ... and without the table of used suppressions at every exit. */
const char *__lsan_default_options(void);
const char *__lsan_default_options(void)
{
    return "print_suppressions=0";
}

static volatile sig_atomic_t sigint_seen;
static volatile sig_atomic_t sigint_second_kills;

/* SIGINT: interrupt every blocking wait; a second one while the first was
 * not yet handled kills the process, except at an interactive prompt. */
static void on_sigint(int sig)
{
    if (sigint_seen && sigint_second_kills) {
        (void)signal(sig, SIG_DFL);
        (void)raise(sig);
        return;
    }
    sigint_seen = 1;
    ut_interrupt();
}

/* Forgets a handled SIGINT. */
static void sigint_consume(void)
{
    sigint_seen = 0;
    ut_interrupt_clear();
}

/* ---------------------------------------------------------------------- */
/* Errors                                                                 */
/* ---------------------------------------------------------------------- */

/* Records odbedit's own explanation of an error; returns err. */
static int fail(struct ed *e, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct ed *e, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(e->why, sizeof e->why, fmt, ap);
    va_end(ap);
    return err;
}

/* Records the ODB's explanation of the error of the ODB call just made
 * (odb_errmsg is per thread and replaced by the next ODB call); returns
 * err. */
static int fail_odb(struct ed *e, int err)
{
    ut_strlcpy(e->why, odb_errmsg(), sizeof e->why);
    return err;
}

static int usage_error(struct ed *e)
{
    return fail(e, UT_EINVAL, "usage: %s", e->cur ? e->cur->usage : "help");
}

/* Prints the one error line of a failed command. */
static void report_error(struct ed *e, const char *line, int err)
{
    while (*line == ' ' || *line == '\t')
        line++;
    size_t n = strcspn(line, "\r\n");
    while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t'))
        n--;
    (void)fflush(stdout);
    if (e->why[0])
        (void)fprintf(stderr, PROG ": %.*s: %s (%s)\n", (int)n, line, ut_strerror(err), e->why);
    else
        (void)fprintf(stderr, PROG ": %.*s: %s\n", (int)n, line, ut_strerror(err));
    (void)fflush(stderr);
}

/* ---------------------------------------------------------------------- */
/* Reading keys                                                           */
/* ---------------------------------------------------------------------- */

/* Resolves a command argument against the current directory into
 * out[ODB_PATH_MAX + 1]. Returns 0 or ODB_EPATH (recorded). */
static int abs_path(struct ed *e, const char *arg, char *out)
{
    int err = cli_path_resolve(e->cwd, arg, out, ODB_PATH_MAX + 1);
    if (err)
        return fail(e, err, "path '%.60s...' is longer than %d bytes", arg, ODB_PATH_MAX);
    return 0;
}

/* Finds a key by absolute path, following links. Error recorded. */
static int find_key(struct ed *e, const char *path, struct odb_hkey *out)
{
    int err = odb_find(e->odb, ODB_ROOT, path, out);
    return err ? fail_odb(e, err) : 0;
}

static bool vanished(int err)
{
    return err == ODB_ESTALE || err == ODB_ENOKEY;
}

static void print_elem(const struct cli_keyval *v, uint32_t i, unsigned flags)
{
    cli_keyval_print(stdout, v, i, flags);
}

/* ---------------------------------------------------------------------- */
/* ls                                                                     */
/* ---------------------------------------------------------------------- */

/* Prints one entry; a vanished entry prints nothing and returns its error. */
static int show_entry(struct ed *e, struct odb_hkey h, const char *name, bool lng)
{
    struct cli_entry s;
    int err = cli_entry_read(e->odb, h, lng, &s);
    if (err)
        return err;
    if (lng)
        cli_entry_print_long(stdout, name, &s);
    else
        cli_entry_print_short(stdout, name, &s);
    cli_entry_release(&s);
    return 0;
}

static int cmd_ls(struct ed *e, int argc, char **argv)
{
    bool lng = false;
    const char *arg = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-l") == 0)
            lng = true;
        else if (argv[i][0] == '-' && argv[i][1])
            return fail(e, UT_EINVAL, "unknown option '%s'; usage: %s", argv[i], e->cur->usage);
        else if (!arg)
            arg = argv[i];
        else
            return usage_error(e);
    }
    char path[ODB_PATH_MAX + 1];
    struct odb_hkey h;
    struct odb_key_info ki;
    int err = abs_path(e, arg, path);
    if (!err)
        err = find_key(e, path, &h);
    if (err)
        return err;
    err = odb_key_info(e->odb, h, &ki);
    if (err)
        return fail_odb(e, err);
    if (ki.type != ODB_TYPE_DIR) {
        /* One key: show it as itself, a link included. */
        struct odb_hkey self;
        if (odb_find_nofollow(e->odb, ODB_ROOT, path, &self) == 0)
            h = self;
        struct cli_entry s;
        err = cli_entry_read(e->odb, h, lng, &s);
        if (err)
            return fail_odb(e, err);
        if (lng) {
            cli_entry_print_header(stdout);
            cli_entry_print_long(stdout, cli_path_base(path), &s);
        } else {
            cli_entry_print_short(stdout, cli_path_base(path), &s);
        }
        cli_entry_release(&s);
        return 0;
    }
    struct odb_dirent *ents = NULL;
    size_t n = 0;
    err = odb_dir_list(e->odb, h, &ents, &n);
    if (err)
        return fail_odb(e, err);
    if (lng)
        cli_entry_print_header(stdout);
    for (size_t i = 0; i < n && !err; i++) {
        err = show_entry(e, ents[i].key, ents[i].name, lng);
        if (vanished(err))
            err = 0; /* deleted since the snapshot: not an error */
        else if (err)
            err = fail_odb(e, err);
    }
    odb_dirents_free(ents);
    return err;
}

/* ---------------------------------------------------------------------- */
/* Navigation                                                             */
/* ---------------------------------------------------------------------- */

static int cmd_cd(struct ed *e, int argc, char **argv)
{
    if (argc > 2)
        return usage_error(e);
    char path[ODB_PATH_MAX + 1];
    struct odb_hkey h;
    struct odb_key_info ki;
    int err = abs_path(e, argc > 1 ? argv[1] : "/", path);
    if (!err)
        err = find_key(e, path, &h);
    if (err)
        return err;
    err = odb_key_info(e->odb, h, &ki);
    if (err)
        return fail_odb(e, err);
    if (ki.type != ODB_TYPE_DIR)
        return fail(e, ODB_ENOTDIR, "'%s' is a key of type %s, not a directory", path,
                    odb_type_name(ki.type));
    /* Keep the path as the ODB spells it (a link leads to its target). */
    char canon[ODB_PATH_MAX + 1];
    err = odb_key_path(e->odb, h, canon, sizeof canon);
    if (err)
        return fail_odb(e, err);
    ut_strlcpy(e->cwd, canon, sizeof e->cwd);
    return 0;
}

static int cmd_pwd(struct ed *e, int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return usage_error(e);
    printf("%s\n", e->cwd);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Creating, changing, deleting                                           */
/* ---------------------------------------------------------------------- */

/* Parses a count argument 1..UINT32_MAX. Error recorded. */
static int parse_count(struct ed *e, const char *text, const char *what, uint32_t *out)
{
    uint32_t v = 0;
    char why[200];
    int err = cli_value_parse(ODB_TYPE_UINT32, text, &v, why, sizeof why);
    if (err)
        return fail(e, err, "%s: %s", what, why);
    if (v == 0)
        return fail(e, UT_EINVAL, "%s must be at least 1", what);
    *out = v;
    return 0;
}

static int cmd_mkdir(struct ed *e, int argc, char **argv)
{
    if (argc < 2)
        return usage_error(e);
    for (int i = 1; i < argc; i++) {
        char path[ODB_PATH_MAX + 1];
        int err = abs_path(e, argv[i], path);
        if (err)
            return err;
        err = odb_create(e->odb, ODB_ROOT, path, ODB_TYPE_DIR, 0, 0, NULL);
        if (err)
            return fail_odb(e, err);
    }
    return 0;
}

static int cmd_create(struct ed *e, int argc, char **argv)
{
    if (argc < 3 || argc > 5)
        return usage_error(e);
    enum odb_type type = cli_type_from_name(argv[1]);
    if (!type)
        return fail(e, UT_EINVAL,
                    "unknown type '%s' (INT8..INT64, UINT8..UINT64, FLOAT, DOUBLE, BOOL, STRING)",
                    argv[1]);
    if (type == ODB_TYPE_LINK)
        return fail(e, UT_EINVAL, "links are made with 'ln target path'");
    char arg[ODB_PATH_MAX + 1], path[ODB_PATH_MAX + 1];
    struct cli_index idx;
    int err = cli_path_split_index(argv[2], arg, sizeof arg, &idx, e->why, sizeof e->why);
    if (err)
        return err;
    uint32_t n = 1, size = 0;
    if (idx.kind == CLI_INDEX_ALL)
        return fail(e, ODB_EPATH, "'[*]' is not a size; use 'create TYPE path n'");
    if (idx.kind == CLI_INDEX_ONE) { /* MIDAS style: create INT32 "key[10]" */
        if (idx.index == 0)
            return fail(e, UT_EINVAL, "an array needs at least one element");
        n = idx.index;
    }
    if (argc > 3 && (err = parse_count(e, argv[3], "element count", &n)) != 0)
        return err;
    if (argc > 4) {
        if (type != ODB_TYPE_STRING)
            return fail(e, UT_EINVAL, "a string size is only for STRING keys");
        if ((err = parse_count(e, argv[4], "string size", &size)) != 0)
            return err;
    }
    if (type == ODB_TYPE_STRING && size == 0)
        size = 32;
    err = abs_path(e, arg, path);
    if (err)
        return err;
    err = odb_create(e->odb, ODB_ROOT, path, type, n, size, NULL);
    return err ? fail_odb(e, err) : 0;
}

/* Writes elements [first, end) of key h (of info ki) to one element value;
 * several elements are written in one transaction. Error recorded. */
static int set_elems(struct ed *e, struct odb_hkey h, const struct odb_key_info *ki, uint32_t first,
                     uint32_t end, const void *data, size_t size)
{
    bool txn = end - first > 1;
    int err = txn ? odb_txn_begin(e->odb) : 0;
    if (err)
        return fail_odb(e, err);
    for (uint32_t i = first; i < end && !err; i++)
        err = odb_set_elem(e->odb, h, i, ki->type, data, size);
    if (err) {
        fail_odb(e, err);
        if (txn)
            odb_txn_abort(e->odb);
        return err;
    }
    if (txn && (err = odb_txn_commit(e->odb)) != 0)
        return fail_odb(e, err);
    return 0;
}

static int cmd_set(struct ed *e, int argc, char **argv)
{
    if (argc != 3)
        return usage_error(e);
    char arg[ODB_PATH_MAX + 1], path[ODB_PATH_MAX + 1];
    struct cli_index idx;
    struct odb_hkey h;
    struct odb_key_info ki;
    int err = cli_path_split_index(argv[1], arg, sizeof arg, &idx, e->why, sizeof e->why);
    if (!err)
        err = abs_path(e, arg, path);
    if (!err)
        err = find_key(e, path, &h);
    if (err)
        return err;
    err = odb_key_info(e->odb, h, &ki);
    if (err)
        return fail_odb(e, err);
    if (ki.type == ODB_TYPE_DIR)
        return fail(e, ODB_EISDIR, "'%s' is a directory", path);
    uint32_t first = 0, end = 1;
    if (idx.kind == CLI_INDEX_ONE) {
        if (idx.index >= ki.n_elem)
            return fail(e, ODB_ERANGE, "index %u out of range for '%s' (%u element%s)", idx.index,
                        path, ki.n_elem, ki.n_elem == 1 ? "" : "s");
        first = idx.index;
        end = first + 1;
    } else if (idx.kind == CLI_INDEX_ALL) {
        end = ki.n_elem;
    }
    const char *text = argv[2];
    if (ki.type == ODB_TYPE_STRING || ki.type == ODB_TYPE_LINK) {
        size_t len = strlen(text) + 1;
        if (ki.type == ODB_TYPE_STRING && ki.n_elem == 1 && len > ki.elem_size) {
            /* A scalar string grows to hold the new value. */
            size_t cap = (len + STRING_GROW_STEP - 1) / STRING_GROW_STEP * STRING_GROW_STEP;
            char *buf = ut_calloc(1, cap);
            if (!buf)
                return fail(e, UT_ENOMEM, "string of %zu bytes", len);
            memcpy(buf, text, len);
            err = odb_set(e->odb, h, NULL, ODB_TYPE_STRING, buf, cap, 1, 0);
            ut_free(buf);
            return err ? fail_odb(e, err) : 0;
        }
        return set_elems(e, h, &ki, first, end, text, len);
    }
    uint8_t elem[CLI_VALUE_MAX];
    err = cli_value_parse(ki.type, text, elem, e->why, sizeof e->why);
    if (err)
        return err;
    return set_elems(e, h, &ki, first, end, elem, odb_type_size(ki.type));
}

static int cmd_get(struct ed *e, int argc, char **argv)
{
    if (argc != 2)
        return usage_error(e);
    char arg[ODB_PATH_MAX + 1], path[ODB_PATH_MAX + 1];
    struct cli_index idx;
    struct odb_hkey h;
    struct cli_keyval v;
    int err = cli_path_split_index(argv[1], arg, sizeof arg, &idx, e->why, sizeof e->why);
    if (!err)
        err = abs_path(e, arg, path);
    if (!err)
        err = find_key(e, path, &h);
    if (err)
        return err;
    err = cli_keyval_read(e->odb, h, &v);
    if (err)
        return fail_odb(e, err);
    if (v.ki.type == ODB_TYPE_DIR)
        err = fail(e, ODB_EISDIR, "'%s' is a directory (use ls or json)", path);
    else if (v.unreadable)
        err = fail(e, ODB_EACCESS, "'%s' is not readable", path);
    else if (idx.kind == CLI_INDEX_ONE && idx.index >= v.ki.n_elem)
        err = fail(e, ODB_ERANGE, "index %u out of range for '%s' (%u element%s)", idx.index, path,
                   v.ki.n_elem, v.ki.n_elem == 1 ? "" : "s");
    if (!err) {
        if (idx.kind == CLI_INDEX_ONE) {
            print_elem(&v, idx.index, 0);
            putchar('\n');
        } else if (v.ki.n_elem == 1) {
            print_elem(&v, 0, 0);
            putchar('\n');
        } else {
            for (uint32_t i = 0; i < v.ki.n_elem; i++) {
                printf("[%u] ", i);
                print_elem(&v, i, 0);
                putchar('\n');
            }
        }
    }
    cli_keyval_release(&v);
    return err;
}

static int cmd_rm(struct ed *e, int argc, char **argv)
{
    bool recursive = false;
    int first = 1;
    while (first < argc && argv[first][0] == '-' && argv[first][1]) {
        if (strcmp(argv[first], "-r") == 0 || strcmp(argv[first], "-rf") == 0 ||
            strcmp(argv[first], "-R") == 0)
            recursive = true;
        else
            return fail(e, UT_EINVAL, "unknown option '%s'; usage: %s", argv[first], e->cur->usage);
        first++;
    }
    if (first >= argc)
        return usage_error(e);
    for (int i = first; i < argc; i++) {
        char path[ODB_PATH_MAX + 1];
        int err = abs_path(e, argv[i], path);
        if (err)
            return err;
        err = odb_delete(e->odb, ODB_ROOT, path, recursive);
        if (err == ODB_ENOTEMPTY)
            return fail(e, err, "'%s' is a directory with keys in it; use rm -r", path);
        if (err)
            return fail_odb(e, err);
    }
    return 0;
}

/* The directory part of an absolute path ("/" for a top-level key) in
 * out[ODB_PATH_MAX + 1]. */
static void path_dir(const char *path, char *out)
{
    ut_strlcpy(out, path, ODB_PATH_MAX + 1);
    char *s = strrchr(out, '/');
    if (s == out || !s)
        out[1] = '\0';
    else
        *s = '\0';
}

/* When `dst` names an existing directory, appends the base name of `src`
 * to it, as mv and cp do. */
static int into_dir(struct ed *e, const char *src, char *dst)
{
    struct odb_hkey h;
    struct odb_key_info ki;
    if (odb_find(e->odb, ODB_ROOT, dst, &h) != 0 || odb_key_info(e->odb, h, &ki) != 0 ||
        ki.type != ODB_TYPE_DIR)
        return 0;
    char joined[ODB_PATH_MAX + 1];
    int err = cli_path_resolve(dst, cli_path_base(src), joined, sizeof joined);
    if (err)
        return fail(e, err, "path too long");
    ut_strlcpy(dst, joined, ODB_PATH_MAX + 1);
    return 0;
}

static bool same_key(struct odb_hkey a, struct odb_hkey b)
{
    return a.idx == b.idx && a.gen == b.gen;
}

static int cmd_mv(struct ed *e, int argc, char **argv)
{
    if (argc != 3)
        return usage_error(e);
    char src[ODB_PATH_MAX + 1], dst[ODB_PATH_MAX + 1];
    struct odb_hkey hs;
    int err = abs_path(e, argv[1], src);
    if (err)
        return err;
    err = odb_find_nofollow(e->odb, ODB_ROOT, src, &hs);
    if (err)
        return fail_odb(e, err);
    if (!strchr(argv[2], '/') && strcmp(argv[2], ".") != 0 && strcmp(argv[2], "..") != 0) {
        /* A plain new name: rename in place. */
        err = odb_rename(e->odb, hs, argv[2]);
        return err ? fail_odb(e, err) : 0;
    }
    err = abs_path(e, argv[2], dst);
    if (!err)
        err = into_dir(e, src, dst);
    if (err)
        return err;
    char sdir[ODB_PATH_MAX + 1], ddir[ODB_PATH_MAX + 1];
    path_dir(src, sdir);
    path_dir(dst, ddir);
    struct odb_hkey hsd, hdd;
    if (odb_find(e->odb, ODB_ROOT, sdir, &hsd) == 0 &&
        odb_find(e->odb, ODB_ROOT, ddir, &hdd) == 0 && same_key(hsd, hdd)) {
        err = odb_rename(e->odb, hs, cli_path_base(dst));
        return err ? fail_odb(e, err) : 0;
    }
    /* Another directory: copy, then delete, as one atomic change. */
    err = odb_txn_begin(e->odb);
    if (err)
        return fail_odb(e, err);
    err = odb_copy(e->odb, hs, ODB_ROOT, dst);
    if (!err)
        err = odb_delete(e->odb, ODB_ROOT, src, true);
    if (err) {
        fail_odb(e, err);
        odb_txn_abort(e->odb);
        return err;
    }
    err = odb_txn_commit(e->odb);
    return err ? fail_odb(e, err) : 0;
}

static int cmd_ln(struct ed *e, int argc, char **argv)
{
    if (argc != 3)
        return usage_error(e);
    char target[ODB_PATH_MAX + 1], path[ODB_PATH_MAX + 1];
    int err = abs_path(e, argv[1], target);
    if (!err)
        err = abs_path(e, argv[2], path);
    if (err)
        return err;
    err = odb_link(e->odb, ODB_ROOT, path, target);
    return err ? fail_odb(e, err) : 0;
}

static int cmd_cp(struct ed *e, int argc, char **argv)
{
    if (argc != 3)
        return usage_error(e);
    char src[ODB_PATH_MAX + 1], dst[ODB_PATH_MAX + 1];
    struct odb_hkey hs;
    int err = abs_path(e, argv[1], src);
    if (!err)
        err = abs_path(e, argv[2], dst);
    if (!err)
        err = find_key(e, src, &hs);
    if (!err)
        err = into_dir(e, src, dst);
    if (err)
        return err;
    err = odb_copy(e->odb, hs, ODB_ROOT, dst);
    return err ? fail_odb(e, err) : 0;
}

static int cmd_chmod(struct ed *e, int argc, char **argv)
{
    if (argc != 3)
        return usage_error(e);
    uint32_t mode;
    if (cli_mode_parse(argv[1], &mode) != 0)
        return fail(e, UT_EINVAL, "mode '%s' is not letters from rwd or a number 0..7", argv[1]);
    char path[ODB_PATH_MAX + 1];
    struct odb_hkey h;
    int err = abs_path(e, argv[2], path);
    if (err)
        return err;
    err = odb_find_nofollow(e->odb, ODB_ROOT, path, &h);
    if (!err)
        err = odb_set_mode(e->odb, h, mode);
    return err ? fail_odb(e, err) : 0;
}

/* ---------------------------------------------------------------------- */
/* Files and JSON                                                         */
/* ---------------------------------------------------------------------- */

static int cmd_save(struct ed *e, int argc, char **argv)
{
    if (argc != 2)
        return usage_error(e);
    struct odb_hkey h;
    int err = find_key(e, e->cwd, &h);
    if (err)
        return err;
    err = odb_save(e->odb, h, argv[1]);
    return err ? fail_odb(e, err) : 0;
}

static int cmd_load(struct ed *e, int argc, char **argv)
{
    if (argc != 2)
        return usage_error(e);
    struct odb_hkey h;
    int err = find_key(e, e->cwd, &h);
    if (err)
        return err;
    err = odb_load(e->odb, h, argv[1]);
    return err ? fail_odb(e, err) : 0;
}

static int cmd_json(struct ed *e, int argc, char **argv)
{
    if (argc > 2)
        return usage_error(e);
    char path[ODB_PATH_MAX + 1];
    struct odb_hkey h;
    int err = abs_path(e, argc > 1 ? argv[1] : NULL, path);
    if (!err)
        err = find_key(e, path, &h);
    if (err)
        return err;
    char *json = NULL;
    size_t len = 0;
    err = odb_json_export(e->odb, h, &json, &len);
    if (err)
        return fail_odb(e, err);
    (void)fwrite(json, 1, len, stdout);
    if (len == 0 || json[len - 1] != '\n')
        putchar('\n');
    ut_free(json);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Clients, messages, buffers, check                                      */
/* ---------------------------------------------------------------------- */

static int by_slot(const void *a, const void *b)
{
    const struct au_client_info *x = a, *y = b;
    return (x->slot > y->slot) - (x->slot < y->slot);
}

static int cmd_scl(struct ed *e, int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return usage_error(e);
    struct au_client_info *infos = NULL;
    size_t n = 0;
    int err = au_client_list(e->c, &infos, &n);
    if (err)
        return fail_odb(e, err);
    qsort(infos, n, sizeof *infos, by_slot);
    int64_t now = ut_wall_ns();
    printf("%-5s %-20s %-20s %8s %-5s %s\n", "Slot", "Name", "Host", "PID", "Alive",
           "Last activity");
    for (size_t i = 0; i < n; i++) {
        char age[32];
        cli_age_format(now - infos[i].last_activity_ns, age, sizeof age);
        printf("%-5u %-20s %-20s %8d %-5s %s ago%s\n", infos[i].slot, infos[i].name, infos[i].host,
               infos[i].pid, infos[i].alive ? "yes" : "no", age,
               infos[i].slot == au_client_slot(e->c) ? " (this odbedit)" : "");
    }
    ut_free(infos);
    return 0;
}

static void print_msg(const struct mb_msg *m)
{
    char when[40];
    cli_time_format(m->time_ns, true, when, sizeof when);
    printf("%s [%s,%s] %s\n", when, m->source, mb_msg_type_name(m->type), m->text);
}

/*
 * Fills older[] with up to `want` messages older than seq `before` from
 * the experiment's SQLite message log (when it exists), for history the
 * ring no longer holds. Returns how many (0 when there is no log).
 */
static size_t msgs_from_log(struct ed *e, uint64_t before, size_t want, size_t in_ring,
                            struct mb_msg *older)
{
    char file[4200];
    (void)snprintf(file, sizeof file, "%s/messages.sqlite3", au_experiment_dir(e->c));
    if (want == 0 || before <= 1 || access(file, R_OK) != 0)
        return 0;
    struct mb_msglog *log = NULL;
    if (mb_msglog_open(file, &log) != 0)
        return 0;
    /* The log also holds (most of) what the ring holds: the newest rows
     * are those from `before` on (fewer than `in_ring` plus what was
     * posted since), and just below them the ones we want. */
    struct mb_msglog_filter f = {0};
    f.max = want + in_ring + MSG_LOG_SLACK;
    struct mb_msg *rows = NULL;
    size_t n_rows = 0, k = 0;
    if (mb_msglog_query(log, &f, &rows, &n_rows) == 0) {
        size_t end = 0;
        while (end < n_rows && rows[end].seq < before)
            end++;
        size_t start = end > want ? end - want : 0;
        for (size_t i = start; i < end; i++)
            older[k++] = rows[i];
    }
    mb_msglog_query_free(rows);
    mb_msglog_close(log);
    return k;
}

static bool all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

static int cmd_msg(struct ed *e, int argc, char **argv)
{
    if (argc > 2 || (argc == 2 && !all_digits(argv[1]))) {
        /* Post the words as one message. */
        size_t len = 0;
        for (int i = 1; i < argc; i++)
            len += strlen(argv[i]) + 1;
        char *text = ut_malloc(len + 1);
        if (!text)
            return fail(e, UT_ENOMEM, "message of %zu bytes", len);
        size_t pos = 0;
        for (int i = 1; i < argc; i++) {
            size_t l = strlen(argv[i]);
            if (i > 1)
                text[pos++] = ' ';
            memcpy(text + pos, argv[i], l);
            pos += l;
        }
        text[pos] = '\0';
        int err = au_msg(e->c, MB_MSG_USER, "%s", text);
        ut_free(text);
        return err ? fail(e, err, "cannot post the message") : 0;
    }
    size_t want = MSG_DEFAULT;
    if (argc == 2) {
        uint32_t n = 0;
        int err = parse_count(e, argv[1], "message count", &n);
        if (err)
            return err;
        want = n > MSG_MAX ? MSG_MAX : n;
    }
    struct mb_msgring *ring = au_msgring(e->c);
    uint64_t last = mb_msg_last_seq(ring);
    uint64_t after = last > want ? last - want : 0;
    struct mb_msg *msgs = ut_calloc(2 * want, sizeof *msgs);
    if (!msgs)
        return fail(e, UT_ENOMEM, "%zu messages", want);
    struct mb_msg *ring_msgs = msgs + want;
    size_t got = 0;
    int err = mb_msg_read(ring, after, ring_msgs, want, &got, NULL);
    if (err) {
        ut_free(msgs);
        return fail(e, err, "cannot read the message ring");
    }
    /* Older history from the SQLite log when the ring held fewer. */
    uint64_t oldest = got ? ring_msgs[0].seq : last + 1;
    size_t n_old = got < want ? msgs_from_log(e, oldest, want - got, got, msgs) : 0;
    for (size_t i = 0; i < n_old; i++)
        print_msg(&msgs[i]);
    for (size_t i = 0; i < got; i++)
        print_msg(&ring_msgs[i]);
    ut_free(msgs);
    return 0;
}

/* Prints "name=value" for each value key of one buffer directory. */
static void print_buffer(struct ed *e, struct odb_hkey dir, const char *name)
{
    struct odb_dirent *ents = NULL;
    size_t n = 0;
    if (odb_dir_list(e->odb, dir, &ents, &n) != 0)
        return; /* the buffer vanished */
    printf("%-16s", name);
    const char *sep = " ";
    for (size_t i = 0; i < n; i++) {
        struct cli_keyval v;
        if (cli_keyval_read(e->odb, ents[i].key, &v) != 0)
            continue;
        if (v.ki.type == ODB_TYPE_DIR || v.unreadable) {
            cli_keyval_release(&v);
            continue;
        }
        printf("%s%s=", sep, ents[i].name);
        if (v.ki.n_elem == 1) {
            print_elem(&v, 0, 0);
        } else {
            putchar('[');
            for (uint32_t j = 0; j < v.ki.n_elem; j++) {
                if (j)
                    putchar(' ');
                print_elem(&v, j, CLI_PRINT_QUOTE);
            }
            putchar(']');
        }
        sep = ", ";
        cli_keyval_release(&v);
    }
    putchar('\n');
    odb_dirents_free(ents);
}

static int cmd_buffers(struct ed *e, int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return usage_error(e);
    struct odb_hkey h;
    int err = odb_find(e->odb, ODB_ROOT, "/System/Buffers", &h);
    if (vanished(err)) {
        printf("no event buffers\n");
        return 0;
    }
    if (err)
        return fail_odb(e, err);
    struct odb_dirent *ents = NULL;
    size_t n = 0;
    err = odb_dir_list(e->odb, h, &ents, &n);
    if (vanished(err)) {
        printf("no event buffers\n");
        return 0;
    }
    if (err)
        return fail_odb(e, err);
    size_t shown = 0;
    for (size_t i = 0; i < n; i++) {
        if (ents[i].type != ODB_TYPE_DIR)
            continue;
        print_buffer(e, ents[i].key, ents[i].name);
        shown++;
    }
    if (!shown)
        printf("no event buffers\n");
    odb_dirents_free(ents);
    return 0;
}

static int cmd_check(struct ed *e, int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return usage_error(e);
    char report[CHECK_REPORT_BYTES] = "";
    int err = odb_check(e->odb, report, sizeof report);
    if (!err) {
        printf("ODB check: ok\n");
        return 0;
    }
    printf("ODB check: FAILED\n%s\n", report[0] ? report : odb_errmsg());
    return fail(e, err, "%s", report[0] ? report : "integrity check failed");
}

/* ---------------------------------------------------------------------- */
/* watch                                                                  */
/* ---------------------------------------------------------------------- */

/* Called by au_dispatch in the main thread for each change. */
static void on_change(struct au_client *c, struct odb_hkey key, void *arg)
{
    (void)c;
    struct ed *e = arg;
    char path[ODB_PATH_MAX + 1];
    struct cli_keyval v;
    if (odb_key_path(e->odb, key, path, sizeof path) != 0 ||
        cli_keyval_read(e->odb, key, &v) != 0) {
        printf("%s: a key was deleted\n", e->watch_path);
    } else {
        if (v.ki.type == ODB_TYPE_DIR) {
            printf("%s%s changed\n", path, strcmp(path, "/") ? "/" : "");
        } else if (v.unreadable) {
            printf("%s = <no read access>\n", path);
        } else if (v.ki.n_elem == 1) {
            printf("%s = ", path);
            print_elem(&v, 0, 0);
            putchar('\n');
        } else {
            for (uint32_t i = 0; i < v.ki.n_elem; i++) {
                printf("%s[%u] = ", path, i);
                print_elem(&v, i, 0);
                putchar('\n');
            }
        }
        cli_keyval_release(&v);
    }
    if (fflush(stdout) != 0)
        e->out_broken = true;
}

static int cmd_watch(struct ed *e, int argc, char **argv)
{
    if (argc != 2)
        return usage_error(e);
    char path[ODB_PATH_MAX + 1];
    uint32_t id;
    int err = abs_path(e, argv[1], path);
    if (err)
        return err;
    err = au_watch_add(e->c, path, on_change, e, &id);
    if (err)
        return fail_odb(e, err);
    e->watch_path = path;
    if (e->tty)
        (void)fprintf(stderr, "watching %s; press Ctrl-C to stop\n", path);
    while (!au_should_stop() && !e->out_broken) {
        int r = au_dispatch(e->c, -1);
        if (r == UT_EINTR)
            break;
        if (r < 0) {
            err = fail_odb(e, r);
            break;
        }
    }
    if (e->tty && sigint_seen)
        putchar('\n'); /* after the echoed ^C */
    sigint_consume();  /* SIGINT ends a watch and nothing else */
    au_watch_remove(e->c, id);
    e->watch_path = NULL;
    return err;
}

/* ---------------------------------------------------------------------- */
/* help, quit and the command table                                       */
/* ---------------------------------------------------------------------- */

static int cmd_help(struct ed *e, int argc, char **argv);

static int cmd_quit(struct ed *e, int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return usage_error(e);
    e->quit = true;
    return 0;
}

static const struct command commands[] = {
    {"ls", "dir", cmd_ls, "ls [-l] [path]", "list a directory or one key",
     "List a directory, or one key. -l adds type, number of values, element size, mode "
     "(rwd), last modification (local time) and the value; arrays show [n] and then one "
     "element per line; strings are quoted; directories end in '/', links show '-> target'."},
    {"cd", NULL, cmd_cd, "cd [path]", "change the current directory",
     "Change the current ODB directory (default /). Relative paths, '.' and '..' work "
     "everywhere."},
    {"pwd", NULL, cmd_pwd, "pwd", "print the current directory",
     "Print the current ODB directory."},
    {"mkdir", NULL, cmd_mkdir, "mkdir path...", "create directories",
     "Create directories (missing parents too). An existing key is an error."},
    {"create", NULL, cmd_create, "create TYPE path [n] [size]", "create a key of a type",
     "Create a key of TYPE (INT8..INT64, UINT8..UINT64, FLOAT, DOUBLE, BOOL, STRING; MIDAS "
     "names such as INT, DWORD, BYTE work too) with n elements (default 1), zeroed. For "
     "STRING, size is the capacity of each element including the NUL (default 32). "
     "'create INT32 \"arr[10]\"' is the MIDAS way to write n."},
    {"set", NULL, cmd_set, "set path[index] value", "set a value",
     "Set one element ('set path value' sets element 0, 'set path[*] value' every element). "
     "The value is parsed by the key's type with range checks; bools take y/n, true/false, "
     "1/0. A single string grows to fit; a string array element must fit its capacity."},
    {"get", NULL, cmd_get, "get path[index]", "print a value",
     "Print a value; an array prints '[i] value' per element unless an index is given."},
    {"rm", "del", cmd_rm, "rm [-r] path...", "delete keys",
     "Delete keys; a directory that is not empty needs -r. A link is deleted itself, not "
     "its target."},
    {"mv", NULL, cmd_mv, "mv path newname|newpath", "rename or move a key",
     "Rename a key within its directory, or move it (copy and delete, atomically) to "
     "another path; an existing directory as destination receives the key."},
    {"ln", NULL, cmd_ln, "ln target path", "create a link",
     "Create a link at path pointing to target (which need not exist yet)."},
    {"cp", NULL, cmd_cp, "cp src dst", "copy a key or subtree",
     "Copy a key or a whole subtree to a new path (into dst when dst is a directory)."},
    {"chmod", NULL, cmd_chmod, "chmod mode path", "set the access mode",
     "Set the access mode: letters from rwd (read, write, delete), or a number 0..7 "
     "(r=1, w=2, d=4)."},
    {"save", NULL, cmd_save, "save file[.json|.json.gz]", "save the current directory to a file",
     "Save the current directory's subtree as JSON, gzip-compressed when the name ends in "
     ".gz. The write is atomic and durable."},
    {"load", NULL, cmd_load, "load file", "load a file into the current directory",
     "Load a JSON file (as written by save) into the current directory: existing keys get "
     "new values, missing ones are created; a bad file changes nothing."},
    {"json", NULL, cmd_json, "json [path]", "print a subtree as JSON",
     "Print the JSON export of a subtree."},
    {"scl", NULL, cmd_scl, "scl", "show clients",
     "Show the clients of the experiment: slot, name, host, pid, whether its liveness token "
     "is held, and the age of its last activity."},
    {"msg", NULL, cmd_msg, "msg [n] | msg text...", "show or post system messages",
     "'msg' or 'msg n' prints the last n system messages (default 20) as "
     "'time [source,TYPE] text'; anything else posts the words as a USER message from this "
     "client."},
    {"buffers", NULL, cmd_buffers, "buffers", "show event buffer statistics",
     "Show event buffer statistics from /System/Buffers (size, fill, producers, consumers, "
     "rates), or 'no event buffers'."},
    {"check", NULL, cmd_check, "check", "check the integrity of the ODB",
     "Check the integrity of the whole ODB segment: prints 'ODB check: ok' or the report "
     "(and fails)."},
    {"watch", NULL, cmd_watch, "watch path", "print changes until Ctrl-C",
     "Print 'path = value' for every change of the key or anything below it, until "
     "Ctrl-C (SIGINT)."},
    {"help", NULL, cmd_help, "help [command]", "list commands or explain one",
     "List the commands, or explain one."},
    {"quit", "exit", cmd_quit, "quit", "leave odbedit", "Leave odbedit (Ctrl-D does too)."},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcasecmp(name, commands[i].name) == 0 ||
            (commands[i].alias && strcasecmp(name, commands[i].alias) == 0))
            return &commands[i];
    return NULL;
}

/* Prints text as lines of at most `width` columns, breaking at spaces. */
static void print_wrapped(const char *text, int width)
{
    const char *p = text;
    while (*p) {
        int len = (int)strlen(p);
        if (len > width) {
            len = width;
            while (len > 0 && p[len] != ' ')
                len--;
            if (len == 0)
                len = (int)strcspn(p, " ");
        }
        printf("%.*s\n", len, p);
        p += len;
        while (*p == ' ')
            p++;
    }
}

static int cmd_help(struct ed *e, int argc, char **argv)
{
    if (argc > 2)
        return usage_error(e);
    if (argc == 2) {
        const struct command *c = find_command(argv[1]);
        if (!c)
            return fail(e, UT_EINVAL, "unknown command '%s'", argv[1]);
        printf("usage: %s\n", c->usage);
        if (c->alias)
            printf("(also: %s)\n", c->alias);
        print_wrapped(c->help, 78);
        return 0;
    }
    printf("Commands (help COMMAND for details):\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        printf("  %-30s %s\n", commands[i].usage, commands[i].summary);
    printf("Paths are relative to the current directory unless they start with '/'.\n"
           "Quote words with spaces: set \"/Equipment/Trigger/Common/Frontend name\" fe1\n");
    return 0;
}

/* Runs one command line. Returns 0 or the command's error (already
 * reported on stderr). */
static int run_line(struct ed *e, const char *line)
{
    struct cli_args a = {0};
    e->why[0] = '\0';
    e->cur = NULL;
    int err = cli_tokenize(line, &a, e->why, sizeof e->why);
    if (!err && a.argc > 0) {
        e->cur = find_command(a.argv[0]);
        if (!e->cur)
            err = fail(e, UT_EINVAL, "unknown command '%s'; type 'help' for the list", a.argv[0]);
        else
            err = e->cur->fn(e, a.argc, a.argv);
    }
    if (fflush(stdout) != 0)
        e->out_broken = true;
    if (err)
        report_error(e, line, err);
    cli_args_release(&a);
    return err;
}

/* ---------------------------------------------------------------------- */
/* Interactive mode                                                       */
/* ---------------------------------------------------------------------- */

static const char *prompt_fn(void *arg)
{
    static char prompt[ODB_PATH_MAX + 64];
    struct ed *e = arg;
    (void)snprintf(prompt, sizeof prompt, "[%s:%s]$ ", au_client_name(e->c), e->cwd);
    return prompt;
}

/* TAB completion candidates: command names for the first word, the keys
 * of an ODB directory for the others. */
static size_t complete_fn(void *arg, int word_index, const char *word, size_t *prefix_len,
                          struct cli_completion *out, size_t max)
{
    struct ed *e = arg;
    size_t n = 0;
    if (word_index == 0) {
        *prefix_len = strlen(word);
        for (size_t i = 0; i < N_COMMANDS && n < max; i++)
            if (strncasecmp(commands[i].name, word, *prefix_len) == 0)
                ut_strlcpy(out[n++].name, commands[i].name, sizeof out[0].name);
        return n;
    }
    const char *slash = strrchr(word, '/');
    const char *prefix = slash ? slash + 1 : word;
    char dir[ODB_PATH_MAX + 1], path[ODB_PATH_MAX + 1];
    ut_strlcpy(dir, word, sizeof dir);
    if (slash)
        dir[slash == word ? 1 : slash - word] = '\0';
    else
        dir[0] = '\0';
    struct odb_hkey h;
    struct odb_dirent *ents = NULL;
    size_t n_ents = 0;
    if (cli_path_resolve(e->cwd, dir, path, sizeof path) != 0 ||
        odb_find(e->odb, ODB_ROOT, path, &h) != 0 || odb_dir_list(e->odb, h, &ents, &n_ents) != 0)
        return 0;
    *prefix_len = strlen(prefix);
    for (size_t i = 0; i < n_ents && n < max; i++) {
        if (strncasecmp(ents[i].name, prefix, *prefix_len) == 0) {
            ut_strlcpy(out[n].name, ents[i].name, sizeof out[0].name);
            out[n++].dir = ents[i].type == ODB_TYPE_DIR;
        }
    }
    odb_dirents_free(ents);
    return n;
}

static int run_interactive(struct ed *e, const char *argv0)
{
    char hfile[4200] = "";
    const char *home = getenv("HOME");
    if (home && *home)
        (void)snprintf(hfile, sizeof hfile, "%s/" HISTORY_FILE, home);
    struct cli_edit *ed = NULL;
    if (cli_edit_open(argv0, hfile, prompt_fn, complete_fn, e, &ed) != 0) {
        (void)fprintf(stderr, PROG ": cannot start line editing\n");
        return 1;
    }
    while (!e->quit && !au_should_stop() && !e->out_broken) {
        const char *line;
        sigint_consume();
        int err = cli_edit_read(ed, &line);
        if (err == UT_EINTR) {
            (void)fputc('\n', stdout); /* Ctrl-C at the prompt: a fresh line */
            continue;
        }
        if (err) {
            (void)fputc('\n', stdout); /* Ctrl-D */
            break;
        }
        run_line(e, line);
    }
    cli_edit_close(ed);
    return 0;
}

/* Reads one line of any length from f into a ut_realloc'ed buffer.
 * Returns false at end of input. */
static bool read_line(FILE *f, char **buf, size_t *cap)
{
    size_t len = 0;
    for (;;) {
        if (*cap - len < 2) {
            size_t ncap = *cap ? *cap * 2 : 256;
            char *nb = ut_realloc(*buf, ncap);
            if (!nb)
                return false;
            *buf = nb;
            *cap = ncap;
        }
        if (!fgets(*buf + len, (int)(*cap - len), f))
            return len > 0;
        len += strlen(*buf + len);
        if (len > 0 && (*buf)[len - 1] == '\n')
            return true;
    }
}

/* Commands from a non-terminal stdin: all lines run; 1 if any failed. */
static int run_stdin(struct ed *e)
{
    char *buf = NULL;
    size_t cap = 0;
    int rc = 0;
    while (!e->quit && !au_should_stop() && !sigint_seen && !e->out_broken &&
           read_line(stdin, &buf, &cap)) {
        if (run_line(e, buf))
            rc = 1;
    }
    ut_free(buf);
    if (sigint_seen || au_should_stop())
        rc = 1;
    return rc;
}

/* The -c commands, in order, up to the first failure. */
static int run_commands(struct ed *e, char **cmds, size_t n)
{
    for (size_t i = 0; i < n && !e->quit; i++) {
        if (sigint_seen || au_should_stop()) {
            (void)fprintf(stderr, PROG ": interrupted; %zu command%s not run\n", n - i,
                          n - i == 1 ? "" : "s");
            return 1;
        }
        if (run_line(e, cmds[i]))
            return 1;
        if (e->out_broken)
            return 1; /* stdout is gone (a closed pipe): stop */
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* main                                                                   */
/* ---------------------------------------------------------------------- */

static void usage(FILE *f)
{
    (void)fprintf(f,
                  "usage: " PROG " [-e EXPDIR] [-h HOST:PORT] [-n NAME] [-c 'command']...\n"
                  "  -e EXPDIR     experiment directory (default $AURUM_EXP, else %s);\n"
                  "                created if missing\n"
                  "  -h HOST:PORT  a remote experiment through mserver (not supported yet)\n"
                  "  -n NAME       client name (default " PROG "; a taken name gets a number)\n"
                  "  -c COMMAND    run COMMAND; several -c run in order and stop at the first\n"
                  "                error (exit status 1)\n"
                  "Without -c, commands are read interactively (or one per line from a pipe).\n"
                  "Type 'help' inside " PROG " for the commands.\n",
                  au_default_experiment());
}

int main(int argc, char **argv)
{
    const char *expdir = NULL, *host = NULL, *name = PROG;
    char **cmds = ut_calloc((size_t)argc + 1, sizeof *cmds);
    size_t n_cmds = 0;
    if (!cmds) {
        (void)fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    static const struct option longopts[] = {{"help", no_argument, NULL, 'H'}, {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "e:h:c:n:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'e':
            expdir = optarg;
            break;
        case 'h':
            host = optarg;
            break;
        case 'c':
            cmds[n_cmds++] = optarg;
            break;
        case 'n':
            name = optarg;
            break;
        case 'H':
            usage(stdout);
            ut_free(cmds);
            return 0;
        default:
            usage(stderr);
            ut_free(cmds);
            return 2;
        }
    }
    if (optind < argc) {
        (void)fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        ut_free(cmds);
        return 2;
    }
    if (host) {
        /* The option is parsed so that the RPC client can be wired in here. */
        (void)fprintf(stderr, PROG ": remote experiments (-h) are not supported yet\n");
        ut_free(cmds);
        return 2;
    }

    struct ed e;
    memset(&e, 0, sizeof e);
    e.tty = n_cmds == 0 && isatty(STDIN_FILENO);
    ut_strlcpy(e.cwd, "/", sizeof e.cwd);

    (void)signal(SIGPIPE, SIG_IGN); /* a closed stdout pipe is seen as a write error */
    au_install_signal_handlers();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint; /* no SA_RESTART: a read at the prompt returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigint_second_kills = !e.tty;

    struct au_connect_opts o = {0};
    o.name = name;
    o.experiment = expdir;
    o.flags = AU_CONNECT_CREATE;
    int err = au_connect(&o, &e.c);
    if (err) {
        const char *why = odb_errmsg();
        (void)fprintf(stderr, PROG ": cannot connect to experiment %s: %s%s%s%s\n",
                      expdir ? expdir : au_default_experiment(), ut_strerror(err),
                      why[0] ? " (" : "", why, why[0] ? ")" : "");
        ut_free(cmds);
        return 1;
    }
    e.odb = au_odb(e.c);

    int rc;
    if (n_cmds)
        rc = run_commands(&e, cmds, n_cmds);
    else if (e.tty)
        rc = run_interactive(&e, argv[0]);
    else
        rc = run_stdin(&e);

    (void)fflush(stdout);
    au_disconnect(e.c);
    ut_free(cmds);
    return rc;
}
