/*
 * tests/client/test_connect.c - connecting, /System/Clients registration,
 * unique names, option checks, a full experiment (MIDAS failure mode 10:
 * a clear AU_EFULL, and a freed slot is reusable), disconnect, and the ODB
 * snapshot written by the last client and read back into a fresh segment
 * (also when the last two clients disconnect at the same moment).
 *
 * Each test has its own experiment directory (cfx_setup/cfx_teardown).
 * Processes synchronise through pipes; children report through pipes and
 * their exit status.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "client/client_int.h"
#include "tests/client/cfx.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void get_str(struct au_client *c, struct odb_hkey dir, const char *name, char *buf,
                    size_t size)
{
    size_t sz = size;
    assert_int_equal(odb_get(au_odb(c), dir, name, ODB_TYPE_STRING, buf, &sz), 0);
}

static int64_t get_i64(struct au_client *c, struct odb_hkey dir, const char *name)
{
    int64_t v = 0;
    size_t sz = sizeof v;
    assert_int_equal(odb_get(au_odb(c), dir, name, ODB_TYPE_INT64, &v, &sz), 0);
    return v;
}

static struct odb_hkey entry_of(struct au_client *c, uint32_t slot)
{
    char path[64];
    (void)snprintf(path, sizeof path, "/System/Clients/%u", slot);
    struct odb_hkey k;
    assert_int_equal(odb_find(au_odb(c), ODB_ROOT, path, &k), 0);
    return k;
}

/* Connect, check every registration field, disconnect. */
static void test_connect_fields(void **state)
{
    struct cfx *fx = *state;
    int64_t before = ut_wall_ns();
    struct au_client *c = cfx_connect(fx->dir, "fe", 200, AU_CONNECT_NO_WATCHDOG_THREAD);
    int64_t after = ut_wall_ns();
    assert_string_equal(au_client_name(c), "fe");
    char real[PATH_MAX];
    assert_non_null(realpath(fx->dir, real));
    assert_string_equal(au_experiment_dir(c), real);
    assert_false(au_client_removed(c));
    assert_non_null(au_odb(c));
    assert_non_null(au_msgring(c));

    uint32_t slot = au_client_slot(c);
    struct odb_hkey e = entry_of(c, slot);
    char buf[128];
    get_str(c, e, "Name", buf, sizeof buf);
    assert_string_equal(buf, "fe");
    char host[64] = "";
    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    get_str(c, e, "Host", buf, sizeof buf);
    assert_string_equal(buf, host);
    int32_t pid = 0;
    size_t sz = sizeof pid;
    assert_int_equal(odb_get(au_odb(c), e, "PID", ODB_TYPE_INT32, &pid, &sz), 0);
    assert_int_equal(pid, (int32_t)getpid());
    uint32_t s = UINT32_MAX;
    sz = sizeof s;
    assert_int_equal(odb_get(au_odb(c), e, "Slot", ODB_TYPE_UINT32, &s, &sz), 0);
    assert_int_equal(s, slot);
    int64_t ct = get_i64(c, e, "Connect time");
    assert_true(ct >= before && ct <= after);
    int64_t la = get_i64(c, e, "Last activity");
    assert_true(la >= ct && la <= after);
    get_str(c, e, "Buffers", buf, sizeof buf);
    assert_string_equal(buf, "");

    /* A watchdog pass refreshes the heartbeat. */
    assert_true(au_watchdog_run(c) >= 0);
    assert_true(get_i64(c, e, "Last activity") >= la);

    /* The experiment records its capacity. */
    uint32_t max = 0;
    sz = sizeof max;
    assert_int_equal(
        odb_get(au_odb(c), ODB_ROOT, "/System/Config/Max clients", ODB_TYPE_UINT32, &max, &sz), 0);
    assert_int_equal(max, AU_DEFAULT_MAX_CLIENTS);

    struct au_client_info *infos = NULL;
    size_t n = 0;
    assert_int_equal(au_client_list(c, &infos, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(infos[0].name, "fe");
    assert_int_equal(infos[0].slot, slot);
    assert_int_equal(infos[0].pid, (int32_t)getpid());
    assert_true(infos[0].alive);
    ut_free(infos);

    au_disconnect(c);
    au_disconnect(NULL); /* accepted */
}

/* "fe" three times gives fe, fe1, fe2; a refused duplicate; a freed name is
 * reused; disconnect removes exactly its own entry. */
static void test_unique_names(void **state)
{
    struct cfx *fx = *state;
    struct au_client *a = cfx_connect(fx->dir, "fe", 200, 0);
    struct au_client *b = cfx_connect(fx->dir, "fe", 200, 0);
    struct au_client *c = cfx_connect(fx->dir, "fe", 200, 0);
    assert_string_equal(au_client_name(a), "fe");
    assert_string_equal(au_client_name(b), "fe1");
    assert_string_equal(au_client_name(c), "fe2");
    assert_int_not_equal(au_client_slot(a), au_client_slot(b));
    assert_int_not_equal(au_client_slot(b), au_client_slot(c));
    assert_int_not_equal(au_client_slot(a), au_client_slot(c));

    char buf[64];
    get_str(a, entry_of(a, au_client_slot(b)), "Name", buf, sizeof buf);
    assert_string_equal(buf, "fe1");

    /* Refused duplicates, case-insensitively too; nothing is left behind. */
    struct au_connect_opts o = cfx_opts(fx->dir, "fe", 200, AU_CONNECT_REFUSE_DUPLICATE);
    struct au_client *d = (struct au_client *)0x1;
    assert_int_equal(au_connect(&o, &d), AU_EDUPNAME);
    assert_ptr_equal(d, (struct au_client *)0x1);
    o.name = "FE1";
    assert_int_equal(au_connect(&o, &d), AU_EDUPNAME);
    o.name = "other";
    assert_int_equal(au_connect(&o, &d), 0);
    assert_string_equal(au_client_name(d), "other");
    au_disconnect(d);

    uint32_t slot_b = au_client_slot(b);
    au_disconnect(b);
    assert_false(cfx_entry_exists(a, slot_b));
    assert_true(cfx_entry_exists(a, au_client_slot(a)));
    assert_true(cfx_entry_exists(a, au_client_slot(c)));

    struct au_client *b2 = cfx_connect(fx->dir, "fe", 200, 0);
    assert_string_equal(au_client_name(b2), "fe1");

    struct au_client_info *infos = NULL;
    size_t n = 0;
    assert_int_equal(au_client_list(a, &infos, &n), 0);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_true(infos[i].alive);
    ut_free(infos);

    /* A long name gets its suffix within the 31 bytes. */
    const char *longname = "abcdefghijklmnopqrstuvwxyz01234"; /* 31 bytes */
    struct au_client *l1 = cfx_connect(fx->dir, longname, 200, 0);
    struct au_client *l2 = cfx_connect(fx->dir, longname, 200, 0);
    assert_string_equal(au_client_name(l1), longname);
    assert_int_equal(strlen(au_client_name(l2)), 31);
    assert_string_equal(au_client_name(l2), "abcdefghijklmnopqrstuvwxyz01231");
    au_disconnect(l2);
    au_disconnect(l1);

    au_disconnect(c);
    au_disconnect(b2);
    au_disconnect(a);
}

/* Invalid options and a missing experiment. */
static void test_connect_invalid(void **state)
{
    struct cfx *fx = *state;
    struct au_client *c = (struct au_client *)0x1;
    assert_int_equal(au_connect(NULL, &c), UT_EINVAL);
    struct au_connect_opts o = cfx_opts(fx->dir, NULL, 200, 0);
    assert_int_equal(au_connect(&o, &c), UT_EINVAL);
    o.name = "";
    assert_int_equal(au_connect(&o, &c), UT_EINVAL);
    o.name = "abcdefghijklmnopqrstuvwxyz012345"; /* 32 bytes */
    assert_int_equal(au_connect(&o, &c), UT_EINVAL);
    o.name = "a/b";
    assert_int_equal(au_connect(&o, &c), UT_EINVAL);
    assert_ptr_equal(c, (struct au_client *)0x1);

    char missing[400];
    (void)snprintf(missing, sizeof missing, "%s/no-such-exp", fx->dir);
    o = cfx_opts(missing, "fe", 200, 0);
    o.flags = 0; /* no AU_CONNECT_CREATE */
    assert_int_equal(au_connect(&o, &c), AU_ENOEXP);
    assert_ptr_equal(c, (struct au_client *)0x1);
    struct stat st;
    assert_int_equal(stat(missing, &st), -1);

    /* With AU_CONNECT_CREATE the directory is made (mode 0700). */
    o.flags = AU_CONNECT_CREATE | AU_CONNECT_NO_WATCHDOG_THREAD;
    assert_int_equal(au_connect(&o, &c), 0);
    assert_int_equal(stat(missing, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);
    au_disconnect(c);
    assert_int_equal(au_experiment_remove_segments(missing), 0);
    char path[500];
    static const char *const files[] = {"odb.json", ".aurum-clients.lock", "messages.sqlite3",
                                        "messages.sqlite3-wal", "messages.sqlite3-shm"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        (void)snprintf(path, sizeof path, "%s/%s", missing, files[i]);
        unlink(path);
    }
    assert_int_equal(rmdir(missing), 0);
}

/* A child holding a connection to an experiment made for 4 clients. */
struct full_arg {
    const char *dir;
};

static int full_child(int in_fd, int out_fd, void *arg)
{
    struct full_arg *a = arg;
    struct au_connect_opts o = cfx_opts(a->dir, "full", 100, 0);
    o.max_clients = 4;
    struct au_client *c = NULL;
    int err = au_connect(&o, &c);
    uint32_t slot = err ? UINT32_MAX : au_client_slot(c);
    if (!cfx_write(out_fd, &slot, sizeof slot) || err)
        return 1;
    char cmd = 0;
    if (!cfx_read(in_fd, &cmd, 1, 20000))
        return 2;
    if (cmd == 'x')
        _exit(0); /* dies without disconnecting */
    au_disconnect(c);
    return 0;
}

static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;
static char log_text[4096];

static void capture_log(enum ut_log_level level, const char *msg, void *arg)
{
    (void)level;
    (void)arg;
    pthread_mutex_lock(&log_mutex);
    size_t len = strlen(log_text);
    (void)snprintf(log_text + len, sizeof log_text - len, "%s\n", msg);
    pthread_mutex_unlock(&log_mutex);
}

/* max_clients = 4: four children connect, the fifth connection gets
 * AU_EFULL with a message naming the limit; after a child dies its slot is
 * taken over (and the dead entry cleaned). */
static void test_full_experiment(void **state)
{
    struct cfx *fx = *state;
    struct full_arg arg = {fx->dir};
    struct cfx_child ch[4];
    uint32_t slots[4];
    for (int i = 0; i < 4; i++)
        cfx_child_start(&ch[i], 30, full_child, &arg);
    for (int i = 0; i < 4; i++) {
        assert_true(cfx_read(ch[i].from_child, &slots[i], sizeof slots[i], 20000));
        assert_true(slots[i] < 4);
        for (int j = 0; j < i; j++)
            assert_int_not_equal(slots[i], slots[j]);
    }

    log_text[0] = '\0';
    ut_log_set_sink(capture_log, NULL, UT_LOG_DEBUG);
    struct au_connect_opts o = cfx_opts(fx->dir, "fifth", 100, 0);
    o.max_clients = 4;
    struct au_client *c = NULL;
    int err = au_connect(&o, &c);
    ut_log_set_sink(NULL, NULL, UT_LOG_WARN);
    assert_int_equal(err, AU_EFULL);
    assert_null(c);
    assert_non_null(strstr(ut_strerror(err), "no free client slot"));
    pthread_mutex_lock(&log_mutex);
    assert_non_null(strstr(log_text, "all 4 client slots"));
    pthread_mutex_unlock(&log_mutex);

    /* Child 0 dies without disconnecting: its slot frees at once. */
    char cmd = 'x';
    assert_true(cfx_write(ch[0].to_child, &cmd, 1));
    assert_true(cfx_exited_ok(cfx_child_wait(&ch[0], 10000)));
    o.flags |= AU_CONNECT_NO_WATCHDOG_THREAD;
    assert_int_equal(au_connect(&o, &c), 0);
    assert_int_equal(au_client_slot(c), slots[0]);
    assert_string_equal(au_client_name(c), "fifth");
    /* Either this connect or a child's watchdog removed the dead entry:
     * one message either way. */
    assert_int_equal(cfx_wait_msgs(c, 0, 1, 5000, "removed: process died", NULL, NULL), 1);
    struct au_client_info *infos = NULL;
    size_t n = 0;
    assert_int_equal(au_client_list(c, &infos, &n), 0);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++)
        assert_true(infos[i].alive);
    ut_free(infos);

    cmd = 'q';
    for (int i = 1; i < 4; i++) {
        assert_true(cfx_write(ch[i].to_child, &cmd, 1));
        assert_true(cfx_exited_ok(cfx_child_wait(&ch[i], 10000)));
    }
    for (int i = 1; i < 4; i++)
        assert_false(cfx_entry_exists(c, slots[i]));
    au_disconnect(c);
}

/* The last client's disconnect writes odb.json (0600); a fresh segment is
 * initialised from it, without the old clients. */
static void test_save_on_last_disconnect(void **state)
{
    struct cfx *fx = *state;
    char json[400];
    (void)snprintf(json, sizeof json, "%s/odb.json", fx->dir);
    struct au_client *a = cfx_connect(fx->dir, "a", 200, 0);
    struct au_client *b = cfx_connect(fx->dir, "b", 200, 0);
    int32_t v = 4711;
    assert_int_equal(odb_set(au_odb(a), ODB_ROOT, "/Test/Value", ODB_TYPE_INT32, &v, sizeof v, 1,
                             ODB_SET_CREATE),
                     0);
    au_disconnect(a);
    struct stat st;
    assert_int_equal(stat(json, &st), -1); /* b is still connected */
    au_disconnect(b);
    assert_int_equal(stat(json, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);

    assert_int_equal(au_experiment_remove_segments(fx->dir), 0);
    struct au_client *c = cfx_connect(fx->dir, "c", 200, 0);
    v = 0;
    size_t sz = sizeof v;
    assert_int_equal(odb_get(au_odb(c), ODB_ROOT, "/Test/Value", ODB_TYPE_INT32, &v, &sz), 0);
    assert_int_equal(v, 4711);
    struct au_client_info *infos = NULL;
    size_t n = 0;
    assert_int_equal(au_client_list(c, &infos, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(infos[0].name, "c");
    ut_free(infos);
    au_disconnect(c);
}

struct last_arg {
    const char *dir;
    int32_t value;
};

static int last_child(int in_fd, int out_fd, void *arg)
{
    struct last_arg *a = arg;
    struct au_connect_opts o = cfx_opts(a->dir, "last", 100, 0);
    struct au_client *c = NULL;
    if (au_connect(&o, &c) != 0)
        return 1;
    if (odb_set(au_odb(c), ODB_ROOT, "/Test/Round", ODB_TYPE_INT32, &a->value, sizeof a->value, 1,
                ODB_SET_CREATE) != 0)
        return 2;
    char go = 0;
    if (!cfx_write(out_fd, &go, 1) || !cfx_read(in_fd, &go, 1, 20000))
        return 3;
    au_disconnect(c);
    return 0;
}

/* Two clients disconnecting at the same moment: one of them is the last
 * and must save, whatever the interleaving. */
static void test_save_concurrent_last(void **state)
{
    struct cfx *fx = *state;
    char json[400];
    (void)snprintf(json, sizeof json, "%s/odb.json", fx->dir);
    for (int round = 0; round < 30; round++) {
        unlink(json);
        struct last_arg arg = {fx->dir, round};
        struct cfx_child ch[2];
        for (int i = 0; i < 2; i++)
            cfx_child_start(&ch[i], 30, last_child, &arg);
        char byte;
        for (int i = 0; i < 2; i++)
            assert_true(cfx_read(ch[i].from_child, &byte, 1, 20000));
        for (int i = 0; i < 2; i++)
            assert_true(cfx_write(ch[i].to_child, "g", 1));
        for (int i = 0; i < 2; i++)
            assert_true(cfx_exited_ok(cfx_child_wait(&ch[i], 20000)));
        struct stat st;
        if (stat(json, &st) != 0)
            fail_msg("round %d: no odb.json after both clients disconnected", round);
    }
    /* The snapshot holds the last round's value. */
    assert_int_equal(au_experiment_remove_segments(fx->dir), 0);
    struct au_client *c = cfx_connect(fx->dir, "check", 200, AU_CONNECT_NO_WATCHDOG_THREAD);
    int32_t v = -1;
    size_t sz = sizeof v;
    assert_int_equal(odb_get(au_odb(c), ODB_ROOT, "/Test/Round", ODB_TYPE_INT32, &v, &sz), 0);
    assert_int_equal(v, 29);
    au_disconnect(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connect_fields, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_unique_names, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_connect_invalid, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_full_experiment, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_save_on_last_disconnect, cfx_setup, cfx_teardown),
        cmocka_unit_test_setup_teardown(test_save_concurrent_last, cfx_setup, cfx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
