/*
 * tests/odb/test_api.c - the ODB API (odb/odb.h) call by call, with every
 * documented error path. After each failing call the ODB must be exactly as
 * before (same key count, heap use, change count and tree contents) and
 * pass odb_check. JSON, save/load and watches are tested elsewhere.
 *
 * The last tests are white-box (odb/odb_int.h): they damage a scratch
 * segment and expect odb_check to report it, never to crash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "odb/odb_int.h"
#include "tests/odb/fixture.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SEG_SIZE (2u << 20)

struct fx {
    struct odb *odb;
    char name[128];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->odb = tfx_odb_create("api", SEG_SIZE, 0, f->name, sizeof f->name);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char report[512];
    int err = f->odb ? odb_check(f->odb, report, sizeof report) : 0;
    if (err)
        print_error("odb_check at teardown: %s: %s\n", ut_strerror(err), report);
    tfx_odb_destroy(f->odb, f->name);
    free(f);
    tfx_unlink_all(); /* also what a failed test created itself */
    return err ? -1 : 0;
}

/* For the tests that make their own segments. */
static int cleanup(void **state)
{
    (void)state;
    tfx_unlink_all();
    return 0;
}

#define ODB(state) (((struct fx *)*(state))->odb)

/* ---------------------------------------------------------------------- */
/* Helpers                                                                 */
/* ---------------------------------------------------------------------- */

static struct odb_hkey mk_at(struct odb *odb, const char *path, enum odb_type type, uint32_t n,
                             uint32_t es, const char *file, int line)
{
    struct odb_hkey h = {0, 0};
    int err = odb_create(odb, ODB_ROOT, path, type, n, es, &h);
    if (err) {
        print_error("odb_create(%s): %s (%s)\n", path, ut_strerror(err), odb_errmsg());
        _fail(file, line);
    }
    return h;
}
#define mk(odb, path, type, n, es) mk_at((odb), (path), (type), (n), (es), __FILE__, __LINE__)

static struct odb_hkey find(struct odb *odb, const char *path)
{
    struct odb_hkey h = {0, 0};
    assert_int_equal(odb_find(odb, ODB_ROOT, path, &h), 0);
    return h;
}

static void set_i32(struct odb *odb, const char *path, int32_t v)
{
    assert_int_equal(odb_set(odb, ODB_ROOT, path, ODB_TYPE_INT32, &v, sizeof v, 1, 0), 0);
}

static int32_t get_i32(struct odb *odb, const char *path)
{
    int32_t v = -12345;
    size_t size = sizeof v;
    int err = odb_get(odb, ODB_ROOT, path, ODB_TYPE_INT32, &v, &size);
    if (err)
        print_error("odb_get(%s): %s (%s)\n", path, ut_strerror(err), odb_errmsg());
    assert_int_equal(err, 0);
    assert_int_equal(size, sizeof v);
    return v;
}

static void set_str(struct odb *odb, const char *path, const char *s)
{
    assert_int_equal(odb_set(odb, ODB_ROOT, path, ODB_TYPE_STRING, s, strlen(s) + 1, 1, 0), 0);
}

static void assert_str(struct odb *odb, const char *path, const char *want)
{
    char buf[512];
    size_t size = sizeof buf;
    assert_int_equal(odb_get(odb, ODB_ROOT, path, ODB_TYPE_STRING, buf, &size), 0);
    assert_string_equal(buf, want);
    assert_int_equal(size, strlen(want) + 1);
}

static struct odb_key_info info_of(struct odb *odb, struct odb_hkey h)
{
    struct odb_key_info info;
    memset(&info, 0, sizeof info);
    assert_int_equal(odb_key_info(odb, h, &info), 0);
    return info;
}

static bool same_key(struct odb_hkey a, struct odb_hkey b)
{
    return a.idx == b.idx && a.gen == b.gen;
}

/* A content digest of a subtree (names, types, shapes, modes, values),
 * computed through the public API only. */
static void fnv(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        *h ^= b[i];
        *h *= 1099511628211ull;
    }
}

static void digest_key(struct odb *odb, struct odb_hkey key, uint64_t *h, int depth)
{
    assert_true(depth < 64);
    struct odb_key_info info = info_of(odb, key);
    uint32_t t = info.type;
    fnv(h, &t, sizeof t);
    fnv(h, &info.n_elem, sizeof info.n_elem);
    fnv(h, &info.elem_size, sizeof info.elem_size);
    fnv(h, &info.mode, sizeof info.mode);
    if (info.type == ODB_TYPE_DIR) {
        struct odb_dirent *ents = NULL;
        size_t n = 0;
        assert_int_equal(odb_dir_list(odb, key, &ents, &n), 0);
        assert_int_equal(n, info.n_elem);
        for (size_t i = 0; i < n; i++) {
            fnv(h, ents[i].name, strlen(ents[i].name) + 1);
            digest_key(odb, ents[i].key, h, depth + 1);
        }
        odb_dirents_free(ents);
        return;
    }
    if (!(info.mode & ODB_MODE_READ))
        return;
    size_t size = (size_t)info.n_elem * info.elem_size + 1;
    void *buf = calloc(1, size);
    assert_non_null(buf);
    assert_int_equal(odb_get(odb, key, NULL, info.type, buf, &size), 0);
    fnv(h, &size, sizeof size);
    fnv(h, buf, size);
    free(buf);
}

static uint64_t digest(struct odb *odb, struct odb_hkey key)
{
    uint64_t h = 1469598103934665603ull;
    digest_key(odb, key, &h, 0);
    return h;
}

struct snap {
    uint32_t n_keys;
    size_t heap_free;
    uint64_t n_changes;
    uint64_t digest;
};

static struct snap snap_take(struct odb *odb)
{
    struct odb_stats st;
    assert_int_equal(odb_stats(odb, &st), 0);
    struct snap s = {st.n_keys, st.heap_free_bytes, st.n_changes, digest(odb, ODB_ROOT)};
    assert_int_equal(odb_change_count(odb), st.n_changes);
    return s;
}

/* The ODB is exactly as in the snapshot, and consistent. */
#define assert_unchanged(odb, s) assert_unchanged_at((odb), (s), __FILE__, __LINE__)
static void assert_unchanged_at(struct odb *odb, const struct snap *s, const char *file, int line)
{
    tfx_assert_odb_ok_at(odb, file, line);
    struct snap now = snap_take(odb);
    if (now.n_keys != s->n_keys || now.heap_free != s->heap_free || now.n_changes != s->n_changes ||
        now.digest != s->digest) {
        print_error("ODB changed: keys %u -> %u, heap free %zu -> %zu, changes %llu -> %llu, "
                    "digest %s\n",
                    s->n_keys, now.n_keys, s->heap_free, now.heap_free,
                    (unsigned long long)s->n_changes, (unsigned long long)now.n_changes,
                    now.digest == s->digest ? "same" : "differs");
        _fail(file, line);
    }
}

/* Expects `call` to fail with `want` and to leave the ODB unchanged. */
#define EXPECT_FAIL_UNCHANGED(odb, want, call)                                                     \
    do {                                                                                           \
        struct snap snap_ = snap_take(odb);                                                        \
        int err_ = (call);                                                                         \
        if (err_ != (want)) {                                                                      \
            print_error("%s: got %d (%s), want %d (%s); %s\n", #call, err_, ut_strerror(err_),     \
                        (int)(want), ut_strerror(want), odb_errmsg());                             \
            fail();                                                                                \
        }                                                                                          \
        assert_unchanged((odb), &snap_);                                                           \
    } while (0)

/* ---------------------------------------------------------------------- */
/* Open, close, destroy, stats, type names                                 */
/* ---------------------------------------------------------------------- */

static void test_open_params(void **state)
{
    (void)state;
    char name[128];
    tfx_shm_name(name, sizeof name, "api-open");
    struct odb *odb = NULL;
    struct odb_params p = {.max_watches = 64, .max_subscribers = 4};

    /* Missing without ODB_OPEN_CREATE. */
    assert_int_equal(odb_open(name, 0, NULL, &odb), UT_ENOENT);
    assert_null(odb);
    assert_true(odb_errmsg()[0] != '\0');

    /* Bad names. */
    assert_int_equal(odb_open("no-slash", ODB_OPEN_CREATE, NULL, &odb), UT_EINVAL);
    assert_int_equal(odb_open("/a/b", ODB_OPEN_CREATE, NULL, &odb), UT_EINVAL);
    assert_int_equal(odb_open(NULL, ODB_OPEN_CREATE, NULL, &odb), UT_EINVAL);

    /* max_keys out of range: nothing is created. */
    p.size_bytes = SEG_SIZE;
    p.max_keys = 8;
    assert_int_equal(odb_open(name, ODB_OPEN_CREATE, &p, &odb), UT_EINVAL);
    p.max_keys = (1u << 28) + 1;
    assert_int_equal(odb_open(name, ODB_OPEN_CREATE, &p, &odb), UT_EINVAL);
    assert_int_equal(ut_shm_unlink(name), -ENOENT);
    /* A segment too small for its key table: refused, name removed. */
    p.size_bytes = (size_t)64 * 1024;
    p.max_keys = 64;
    assert_int_equal(odb_open(name, ODB_OPEN_CREATE, &p, &odb), UT_EINVAL);
    assert_int_equal(ut_shm_unlink(name), -ENOENT);
    assert_null(odb);

    /* Create, then attach a second handle: both see the same data. */
    p.size_bytes = (size_t)512 * 1024;
    p.max_keys = 100;
    assert_int_equal(odb_open(name, ODB_OPEN_CREATE, &p, &odb), 0);
    assert_non_null(odb);
    struct odb_stats st;
    assert_int_equal(odb_stats(odb, &st), 0);
    assert_int_equal(st.size_bytes, 512 * 1024);
    assert_int_equal(st.max_keys, 100);
    assert_int_equal(st.n_keys, 1);
    assert_int_equal(st.n_changes, 0);
    assert_true(st.heap_bytes > 0 && st.heap_bytes < st.size_bytes);
    assert_true(st.heap_free_bytes > 0 && st.heap_free_bytes <= st.heap_bytes);

    struct odb *odb2 = NULL;
    struct odb_params p2 = {.size_bytes = 4096, .max_keys = 20}; /* ignored on attach */
    assert_int_equal(odb_open(name, ODB_OPEN_CREATE, &p2, &odb2), 0);
    struct odb *odb3 = NULL;
    assert_int_equal(odb_open(name, 0, NULL, &odb3), 0);
    mk(odb, "/x", ODB_TYPE_INT32, 1, 0);
    set_i32(odb, "/x", 77);
    assert_int_equal(get_i32(odb2, "/x"), 77);
    assert_int_equal(get_i32(odb3, "/x"), 77);
    assert_int_equal(odb_stats(odb2, &st), 0);
    assert_int_equal(st.max_keys, 100);
    assert_int_equal(st.size_bytes, 512 * 1024);
    assert_int_equal(odb_change_count(odb3), odb_change_count(odb));
    odb_close(odb3);

    /* Destroy removes the name; open handles keep working. */
    assert_int_equal(odb_destroy(name), 0);
    assert_int_equal(odb_destroy(name), -ENOENT);
    struct odb *odb4 = NULL;
    assert_int_equal(odb_open(name, 0, NULL, &odb4), UT_ENOENT);
    set_i32(odb2, "/x", 78);
    assert_int_equal(get_i32(odb, "/x"), 78);
    tfx_assert_odb_ok(odb);
    odb_close(odb2);
    odb_close(odb);
    odb_close(NULL);
}

static void test_open_wrong_kind(void **state)
{
    (void)state;
    char name[128];
    tfx_shm_name(name, sizeof name, "api-kind");
    struct ut_shm s;
    assert_int_equal(ut_shm_open(&s, name, 1 << 20, 0x58585858u, odb__fingerprint(), true, 100), 0);
    ut_shm_ready(&s);
    struct odb *odb = NULL;
    assert_int_equal(odb_open(name, ODB_OPEN_CREATE, NULL, &odb), UT_EVERSION);
    assert_null(odb);
    ut_shm_close(&s);
    ut_shm_unlink(name);

    /* Right kind, other layout fingerprint. */
    assert_int_equal(ut_shm_open(&s, name, 1 << 20, ODB_KIND, odb__fingerprint() + 1, true, 100),
                     0);
    ut_shm_ready(&s);
    assert_int_equal(odb_open(name, 0, NULL, &odb), UT_EVERSION);
    ut_shm_close(&s);
    ut_shm_unlink(name);

    /* Right kind and fingerprint, nonsense layout numbers: refused before
     * anything is dereferenced through them. */
    assert_int_equal(ut_shm_open(&s, name, 1 << 20, ODB_KIND, odb__fingerprint(), true, 100), 0);
    ut_shm_ready(&s); /* header all zero: max_keys 0 */
    assert_int_equal(odb_open(name, 0, NULL, &odb), UT_ECORRUPT);
    assert_null(odb);
    ut_shm_close(&s);
    ut_shm_unlink(name);
}

/* An ODB segment whose creator (alive: us) has not finished initialising
 * it: attaching waits up to the lock timeout, then gives up. */
static void test_open_creator_busy(void **state)
{
    (void)state;
    char name[128];
    tfx_shm_name(name, sizeof name, "api-busy");
    struct ut_shm s;
    assert_int_equal(ut_shm_open(&s, name, 1 << 20, ODB_KIND, odb__fingerprint(), true, 100), 0);
    struct odb *odb = NULL;
    struct odb_params p = {.lock_timeout_ms = 50};
    int64_t start = ut_now_ns();
    assert_int_equal(odb_open(name, ODB_OPEN_CREATE, &p, &odb), UT_ETIMEOUT);
    assert_true((ut_now_ns() - start) / 1000000 >= 45);
    assert_null(odb);
    ut_shm_close(&s);
    ut_shm_unlink(name);
}

/* Heap allocation failures inside the API: reported, nothing changed,
 * nothing leaked (the ASan build checks leaks). */
static void test_out_of_memory(void **state)
{
    struct odb *odb = ODB(state);
    struct odb_hkey h = mk(odb, "/oom/a", ODB_TYPE_INT32, 3, 0);
    mk(odb, "/oom/b/c", ODB_TYPE_INT32, 1, 0);
    struct snap s = snap_take(odb);

    char name[128];
    tfx_shm_name(name, sizeof name, "api-oom");
    struct odb *other = NULL;
    ut_alloc_fail_after(1);
    int err = odb_open(name, ODB_OPEN_CREATE, NULL, &other);
    ut_alloc_fail_after(0);
    assert_int_equal(err, UT_ENOMEM);
    assert_null(other);
    assert_int_equal(ut_shm_unlink(name), -ENOENT);

    struct odb_dirent *ents = NULL;
    size_t n = 0;
    ut_alloc_fail_after(1);
    err = odb_dir_list(odb, find(odb, "/oom"), &ents, &n);
    ut_alloc_fail_after(0);
    assert_int_equal(err, UT_ENOMEM);
    assert_null(ents);

    ut_alloc_fail_after(1);
    err = odb_resize(odb, h, 10);
    ut_alloc_fail_after(0);
    assert_int_equal(err, UT_ENOMEM);
    assert_unchanged(odb, &s);

    /* Copy sweeps n = 1.. until it succeeds; every failure leaves the ODB
     * as it was. */
    struct odb_hkey src = find(odb, "/oom");
    for (long k = 1; k < 100; k++) {
        ut_alloc_fail_after(k);
        err = odb_copy(odb, src, ODB_ROOT, "/oom_copy");
        ut_alloc_fail_after(0);
        if (err == 0)
            break;
        assert_int_equal(err, UT_ENOMEM);
        assert_unchanged(odb, &s);
    }
    assert_int_equal(err, 0);
    assert_true(digest(odb, src) == digest(odb, find(odb, "/oom_copy")));
    tfx_assert_odb_ok(odb);
}

static void test_type_names(void **state)
{
    (void)state;
    static const struct {
        enum odb_type t;
        const char *name;
        size_t size;
    } types[] = {
        {ODB_TYPE_DIR, "DIR", 0},       {ODB_TYPE_INT8, "INT8", 1},
        {ODB_TYPE_UINT8, "UINT8", 1},   {ODB_TYPE_INT16, "INT16", 2},
        {ODB_TYPE_UINT16, "UINT16", 2}, {ODB_TYPE_INT32, "INT32", 4},
        {ODB_TYPE_UINT32, "UINT32", 4}, {ODB_TYPE_INT64, "INT64", 8},
        {ODB_TYPE_UINT64, "UINT64", 8}, {ODB_TYPE_FLOAT, "FLOAT", 4},
        {ODB_TYPE_DOUBLE, "DOUBLE", 8}, {ODB_TYPE_BOOL, "BOOL", 1},
        {ODB_TYPE_STRING, "STRING", 0}, {ODB_TYPE_LINK, "LINK", 0},
    };
    assert_int_equal(sizeof types / sizeof types[0], ODB_TYPE_MAX - 1);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        assert_string_equal(odb_type_name(types[i].t), types[i].name);
        assert_int_equal(odb_type_from_name(types[i].name), types[i].t);
        assert_int_equal(odb_type_size(types[i].t), types[i].size);
        char lower[16];
        size_t j = 0;
        for (; types[i].name[j]; j++)
            lower[j] = (char)(types[i].name[j] | 0x20);
        lower[j] = '\0';
        assert_int_equal(odb_type_from_name(lower), types[i].t);
    }
    assert_string_equal(odb_type_name(0), "INVALID");
    assert_string_equal(odb_type_name(ODB_TYPE_MAX), "INVALID");
    assert_int_equal(odb_type_from_name("INT33"), 0);
    assert_int_equal(odb_type_from_name(""), 0);
    assert_int_equal(odb_type_size(ODB_TYPE_MAX), 0);
}

/* ---------------------------------------------------------------------- */
/* Create                                                                  */
/* ---------------------------------------------------------------------- */

static void test_create_every_type(void **state)
{
    struct odb *odb = ODB(state);
    static const enum odb_type types[] = {
        ODB_TYPE_INT8,  ODB_TYPE_UINT8,  ODB_TYPE_INT16, ODB_TYPE_UINT16,
        ODB_TYPE_INT32, ODB_TYPE_UINT32, ODB_TYPE_INT64, ODB_TYPE_UINT64,
        ODB_TYPE_FLOAT, ODB_TYPE_DOUBLE, ODB_TYPE_BOOL,  ODB_TYPE_STRING,
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        enum odb_type t = types[i];
        char path[64], apath[64];
        snprintf(path, sizeof path, "/types/%s", odb_type_name(t));
        snprintf(apath, sizeof apath, "/arrays/%s", odb_type_name(t));
        struct odb_hkey h = mk(odb, path, t, 1, 0);
        struct odb_hkey a = mk(odb, apath, t, 10, t == ODB_TYPE_STRING ? 20 : 999);
        struct odb_key_info info = info_of(odb, h);
        size_t es = t == ODB_TYPE_STRING ? 32 : odb_type_size(t);
        assert_int_equal(info.type, t);
        assert_int_equal(info.n_elem, 1);
        assert_int_equal(info.elem_size, es);
        assert_int_equal(info.mode, ODB_MODE_ALL);
        assert_string_equal(info.name, odb_type_name(t));
        assert_true(same_key(info.parent, find(odb, "/types")));
        info = info_of(odb, a);
        assert_int_equal(info.n_elem, 10);
        /* elem_size is ignored for fixed-size types. */
        assert_int_equal(info.elem_size, t == ODB_TYPE_STRING ? 20 : es);

        /* Values start zeroed. */
        unsigned char buf[400];
        memset(buf, 0xaa, sizeof buf);
        size_t size = sizeof buf;
        assert_int_equal(odb_get(odb, a, NULL, t, buf, &size), 0);
        assert_int_equal(size, 10 * (t == ODB_TYPE_STRING ? 20 : es));
        for (size_t j = 0; j < size; j++)
            assert_int_equal(buf[j], 0);
        size = sizeof buf;
        assert_int_equal(odb_get(odb, ODB_ROOT, path, t, buf, &size), 0);
        assert_int_equal(size, t == ODB_TYPE_STRING ? 1 : es); /* "" for a string */
        assert_int_equal(buf[0], 0);
    }
    /* A directory, explicitly; n_elem and elem_size are ignored. */
    struct odb_hkey d = mk(odb, "/dirs/empty", ODB_TYPE_DIR, 0, 77);
    struct odb_key_info info = info_of(odb, d);
    assert_int_equal(info.type, ODB_TYPE_DIR);
    assert_int_equal(info.n_elem, 0);
    assert_int_equal(info.elem_size, 0);
    info = info_of(odb, find(odb, "/types"));
    assert_int_equal(info.n_elem, 12);

    /* Relative to a base; out may be NULL. */
    struct odb_hkey types_dir = find(odb, "/types");
    assert_int_equal(odb_create(odb, types_dir, "sub/rel", ODB_TYPE_INT32, 1, 0, NULL), 0);
    struct odb_hkey rel;
    assert_int_equal(odb_find(odb, ODB_ROOT, "/types/sub/rel", &rel), 0);
    struct odb_hkey rel2;
    assert_int_equal(odb_find(odb, types_dir, "sub/rel", &rel2), 0);
    assert_true(same_key(rel, rel2));
    tfx_assert_odb_ok(odb);
}

static void test_create_intermediate_dirs(void **state)
{
    struct odb *odb = ODB(state);
    struct odb_stats before, after;
    assert_int_equal(odb_stats(odb, &before), 0);
    uint64_t changes = odb_change_count(odb);
    struct odb_hkey h = mk(odb, "/a/b/c/d", ODB_TYPE_DOUBLE, 3, 0);
    assert_int_equal(odb_stats(odb, &after), 0);
    assert_int_equal(after.n_keys, before.n_keys + 4);
    assert_int_equal(odb_change_count(odb), changes + 1); /* one atomic change */
    const char *dirs[] = {"/a", "/a/b", "/a/b/c"};
    for (int i = 0; i < 3; i++) {
        struct odb_key_info info = info_of(odb, find(odb, dirs[i]));
        assert_int_equal(info.type, ODB_TYPE_DIR);
        assert_int_equal(info.n_elem, 1);
    }
    assert_int_equal(info_of(odb, h).type, ODB_TYPE_DOUBLE);
    /* Existing intermediate dirs are reused. */
    mk(odb, "/a/b/e", ODB_TYPE_INT32, 1, 0);
    assert_int_equal(info_of(odb, find(odb, "/a/b")).n_elem, 2);
    /* Empty components are skipped. */
    mk(odb, "a//b///f", ODB_TYPE_INT32, 1, 0);
    find(odb, "/a/b/f");
    mk(odb, "/a/./b/../b/g", ODB_TYPE_INT32, 1, 0);
    find(odb, "/a/b/g");
    tfx_assert_odb_ok(odb);
}

static void test_create_errors(void **state)
{
    struct odb *odb = ODB(state);
    mk(odb, "/dir/val", ODB_TYPE_INT32, 1, 0);
    mk(odb, "/dir/Mixed", ODB_TYPE_INT32, 1, 0);
    struct odb_hkey h;

    /* Exists, also in another case, also as a directory. */
    EXPECT_FAIL_UNCHANGED(odb, ODB_EEXIST,
                          odb_create(odb, ODB_ROOT, "/dir/val", ODB_TYPE_INT32, 1, 0, &h));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EEXIST,
                          odb_create(odb, ODB_ROOT, "/DIR/VAL", ODB_TYPE_INT8, 1, 0, &h));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EEXIST,
                          odb_create(odb, ODB_ROOT, "/dir/mixed", ODB_TYPE_INT8, 1, 0, &h));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EEXIST,
                          odb_create(odb, ODB_ROOT, "/dir", ODB_TYPE_DIR, 0, 0, &h));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EEXIST, odb_create(odb, ODB_ROOT, "/", ODB_TYPE_DIR, 0, 0, &h));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EEXIST, odb_create(odb, ODB_ROOT, "", ODB_TYPE_DIR, 0, 0, &h));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EEXIST,
                          odb_create(odb, ODB_ROOT, NULL, ODB_TYPE_INT32, 1, 0, &h));

    /* Bad names: '[', control characters, DEL, 64 bytes, "." and ".." as
     * the new name. Nothing is created on the way (no "/new" dir). */
    const char *bad[] = {"/new/x[1]", "/new/a\tb", "/new/a\x01", "/new/a\x7f",  "/new/.",
                         "/new/..",   "/new/x[",   "[",          "/new/\x1b[0m"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT_FAIL_UNCHANGED(odb, ODB_ENAME,
                              odb_create(odb, ODB_ROOT, bad[i], ODB_TYPE_INT32, 1, 0, &h));
    char name64[80] = "/new/";
    memset(name64 + 5, 'n', 64);
    name64[5 + 64] = '\0';
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENAME,
                          odb_create(odb, ODB_ROOT, name64, ODB_TYPE_INT32, 1, 0, &h));
    /* A bad intermediate component. */
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENAME,
                          odb_create(odb, ODB_ROOT, "/new/a[2]/x", ODB_TYPE_INT32, 1, 0, &h));
    /* 63 bytes is fine, UTF-8 too. */
    name64[5 + 63] = '\0';
    mk(odb, name64, ODB_TYPE_INT32, 1, 0);
    mk(odb, "/utf8/gr\xc3\xbc\xc3\x9f", ODB_TYPE_INT32, 1, 0);

    /* Through a value. */
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENOTDIR,
                          odb_create(odb, ODB_ROOT, "/dir/val/x", ODB_TYPE_INT32, 1, 0, &h));
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENOTDIR,
                          odb_create(odb, ODB_ROOT, "/dir/val/x/y", ODB_TYPE_INT32, 1, 0, &h));
    struct odb_hkey val = find(odb, "/dir/val");
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENOTDIR, odb_create(odb, val, "x", ODB_TYPE_INT32, 1, 0, &h));

    /* Shapes. */
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL,
                          odb_create(odb, ODB_ROOT, "/new/t0", (enum odb_type)0, 1, 0, &h));
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL,
                          odb_create(odb, ODB_ROOT, "/new/tmax", ODB_TYPE_MAX, 1, 0, &h));
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL,
                          odb_create(odb, ODB_ROOT, "/new/n0", ODB_TYPE_INT32, 0, 0, &h));
    EXPECT_FAIL_UNCHANGED(
        odb, ODB_ENOSPC,
        odb_create(odb, ODB_ROOT, "/new/huge", ODB_TYPE_STRING, 1u << 20, 1u << 13, &h));
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENOSPC,
                          odb_create(odb, ODB_ROOT, "/new/big", ODB_TYPE_UINT8, 1u << 30, 0, &h));

    /* Too long a path. */
    char longpath[ODB_PATH_MAX + 8];
    for (size_t i = 0; i < sizeof longpath - 1; i++)
        longpath[i] = i % 8 == 0 ? '/' : 'p';
    longpath[ODB_PATH_MAX + 1] = '\0';
    EXPECT_FAIL_UNCHANGED(odb, ODB_EPATH,
                          odb_create(odb, ODB_ROOT, longpath, ODB_TYPE_INT32, 1, 0, &h));

    /* A directory without WRITE. */
    struct odb_hkey dir = find(odb, "/dir");
    assert_int_equal(odb_set_mode(odb, dir, ODB_MODE_READ | ODB_MODE_DELETE), 0);
    EXPECT_FAIL_UNCHANGED(odb, ODB_EACCESS,
                          odb_create(odb, ODB_ROOT, "/dir/new", ODB_TYPE_INT32, 1, 0, &h));
    assert_int_equal(odb_set_mode(odb, dir, ODB_MODE_ALL), 0);
    mk(odb, "/dir/new", ODB_TYPE_INT32, 1, 0);

    /* A stale base. */
    struct odb_hkey gone = mk(odb, "/gone", ODB_TYPE_DIR, 0, 0);
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/gone", false), 0);
    EXPECT_FAIL_UNCHANGED(odb, ODB_ESTALE, odb_create(odb, gone, "x", ODB_TYPE_INT32, 1, 0, &h));
    /* An absolute path ignores the base. */
    assert_int_equal(odb_create(odb, gone, "/abs", ODB_TYPE_INT32, 1, 0, &h), 0);

    /* Nothing named "new" was left behind by the failures above except
     * what we made on purpose. */
    struct odb_dirent *ents;
    size_t n;
    assert_int_equal(odb_dir_list(odb, find(odb, "/new"), &ents, &n), 0);
    assert_int_equal(n, 1);
    odb_dirents_free(ents);
    tfx_assert_odb_ok(odb);
}

static void test_create_keys_full(void **state)
{
    (void)state;
    char name[128];
    struct odb *odb = tfx_odb_create("api-keys", (size_t)512 * 1024, 16, name, sizeof name);
    int err = 0;
    int made = 0;
    for (int i = 0; i < 100 && !err; i++) {
        char path[32];
        snprintf(path, sizeof path, "/k%d", i);
        struct snap s = snap_take(odb);
        err = odb_create(odb, ODB_ROOT, path, ODB_TYPE_INT32, 1, 0, NULL);
        if (err) {
            assert_int_equal(err, ODB_EKEYS);
            assert_unchanged(odb, &s);
        } else {
            made++;
        }
    }
    assert_int_equal(made, 15); /* 16 slots, one is the root */
    /* Free two: a path needing three new keys fails whole. */
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/k0", false), 0);
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/k1", false), 0);
    EXPECT_FAIL_UNCHANGED(odb, ODB_EKEYS,
                          odb_create(odb, ODB_ROOT, "/p/q/r", ODB_TYPE_INT32, 1, 0, NULL));
    EXPECT_FAIL_UNCHANGED(
        odb, ODB_EKEYS,
        odb_set(odb, ODB_ROOT, "/p/q/r", ODB_TYPE_INT32, &made, sizeof made, 1, ODB_SET_CREATE));
    assert_int_equal(odb_create(odb, ODB_ROOT, "/p/q", ODB_TYPE_INT32, 1, 0, NULL), 0);
    struct odb_stats st;
    assert_int_equal(odb_stats(odb, &st), 0);
    assert_int_equal(st.n_keys, st.max_keys);
    tfx_assert_odb_ok(odb);
    tfx_odb_destroy(odb, name);
}

static void test_heap_full(void **state)
{
    (void)state;
    char name[128];
    struct odb *odb = tfx_odb_create("api-heap", (size_t)256 * 1024, 16, name, sizeof name);
    struct odb_stats st;
    assert_int_equal(odb_stats(odb, &st), 0);
    uint32_t chunk = (uint32_t)(st.heap_free_bytes / 5);
    int err = 0, made = 0;
    for (int i = 0; i < 14 && !err; i++) {
        char path[32];
        snprintf(path, sizeof path, "/s%d", i);
        struct snap s = snap_take(odb);
        err = odb_create(odb, ODB_ROOT, path, ODB_TYPE_STRING, 1, chunk, NULL);
        if (err) {
            assert_int_equal(err, ODB_ENOSPC);
            assert_unchanged(odb, &s);
        } else {
            made++;
        }
        /* (Values above 4 KiB are rewritten into a fresh block, so set it
         * while there is room.) */
        if (i == 0)
            set_str(odb, "/s0", "keep me");
    }
    assert_int_equal(err, ODB_ENOSPC);
    assert_true(made >= 1);
    /* Growing a value past the free space: ENOSPC, old value intact. */
    char *big = malloc((size_t)chunk * 3);
    assert_non_null(big);
    memset(big, 'b', (size_t)chunk * 3 - 1);
    big[(size_t)chunk * 3 - 1] = '\0';
    EXPECT_FAIL_UNCHANGED(
        odb, ODB_ENOSPC,
        odb_set(odb, ODB_ROOT, "/s0", ODB_TYPE_STRING, big, (size_t)chunk * 3, 1, 0));
    assert_str(odb, "/s0", "keep me");
    free(big);
    struct odb_hkey s0 = find(odb, "/s0");
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENOSPC, odb_resize(odb, s0, 3));
    /* Free space again: works. */
    for (int i = 1; i < made; i++) {
        char path[32];
        snprintf(path, sizeof path, "/s%d", i);
        assert_int_equal(odb_delete(odb, ODB_ROOT, path, false), 0);
    }
    assert_int_equal(odb_create(odb, ODB_ROOT, "/again", ODB_TYPE_STRING, 1, chunk, NULL), 0);
    assert_str(odb, "/s0", "keep me");
    tfx_assert_odb_ok(odb);
    tfx_odb_destroy(odb, name);
}

/* ---------------------------------------------------------------------- */
/* Delete and stale handles                                                */
/* ---------------------------------------------------------------------- */

static void test_delete(void **state)
{
    struct odb *odb = ODB(state);
    struct snap empty = snap_take(odb);
    mk(odb, "/d/sub/x", ODB_TYPE_INT32, 1, 0);
    mk(odb, "/d/sub/s", ODB_TYPE_STRING, 4, 100);
    mk(odb, "/d/y", ODB_TYPE_DOUBLE, 1000, 0);
    mk(odb, "/d/empty", ODB_TYPE_DIR, 0, 0);

    EXPECT_FAIL_UNCHANGED(odb, ODB_ENOKEY, odb_delete(odb, ODB_ROOT, "/d/nope", false));
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENOKEY, odb_delete(odb, ODB_ROOT, "/nope/x", true));
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENOTEMPTY, odb_delete(odb, ODB_ROOT, "/d", false));
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENOTEMPTY, odb_delete(odb, ODB_ROOT, "/d/sub", false));
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL, odb_delete(odb, ODB_ROOT, "/", true));
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL, odb_delete(odb, ODB_ROOT, NULL, true));
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL, odb_delete(odb, ODB_ROOT, "/d/..", true));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EPATH, odb_delete(odb, ODB_ROOT, "/d/y[0]", true));

    /* An empty directory goes without `recursive`. */
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/d/empty", false), 0);
    assert_int_equal(info_of(odb, find(odb, "/d")).n_elem, 2);
    /* By handle, NULL path. */
    struct odb_hkey y = find(odb, "/d/y");
    assert_int_equal(odb_delete(odb, y, NULL, false), 0);
    assert_int_equal(odb_find(odb, ODB_ROOT, "/d/y", &y), ODB_ENOKEY);

    /* Recursive, in another case spelling. */
    struct odb_stats st;
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/D", true), 0);
    assert_int_equal(odb_stats(odb, &st), 0);
    assert_int_equal(st.n_keys, empty.n_keys);
    assert_int_equal(st.heap_free_bytes, empty.heap_free);
    struct odb_dirent *ents;
    size_t n;
    assert_int_equal(odb_dir_list(odb, ODB_ROOT, &ents, &n), 0);
    assert_int_equal(n, 0);
    odb_dirents_free(ents);
    tfx_assert_odb_ok(odb);
}

static void test_delete_access(void **state)
{
    struct odb *odb = ODB(state);
    mk(odb, "/p/a/b/c", ODB_TYPE_INT32, 1, 0);
    mk(odb, "/p/a/other", ODB_TYPE_INT32, 1, 0);
    mk(odb, "/p/z", ODB_TYPE_STRING, 1, 0);
    struct odb_hkey c = find(odb, "/p/a/b/c");
    assert_int_equal(odb_set_mode(odb, c, ODB_MODE_READ | ODB_MODE_WRITE), 0);
    EXPECT_FAIL_UNCHANGED(odb, ODB_EACCESS, odb_delete(odb, ODB_ROOT, "/p", true));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EACCESS, odb_delete(odb, ODB_ROOT, "/p/a/b", true));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EACCESS, odb_delete(odb, ODB_ROOT, "/p/a/b/c", false));
    /* Siblings without the protected key can go. */
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/p/a/other", false), 0);
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/p/z", false), 0);
    /* The directory itself lacking DELETE. */
    struct odb_hkey a = find(odb, "/p/a");
    assert_int_equal(odb_set_mode(odb, c, ODB_MODE_ALL), 0);
    assert_int_equal(odb_set_mode(odb, a, ODB_MODE_READ), 0);
    EXPECT_FAIL_UNCHANGED(odb, ODB_EACCESS, odb_delete(odb, ODB_ROOT, "/p", true));
    /* Its children can still be deleted (mode is per key). */
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/p/a/b", true), 0);
    assert_int_equal(odb_set_mode(odb, a, ODB_MODE_ALL), 0);
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/p", true), 0);
    tfx_assert_odb_ok(odb);
}

/* Every call taking a handle gives ODB_ESTALE for a deleted key. */
static void assert_all_stale(struct odb *odb, struct odb_hkey h)
{
    int32_t v = 1;
    size_t size = sizeof v;
    char buf[256];
    struct odb_key_info info;
    struct odb_dirent *ents = NULL;
    size_t n = 0;
    struct odb_hkey out;
    struct snap s = snap_take(odb);
    assert_int_equal(odb_get(odb, h, NULL, ODB_TYPE_INT32, &v, &size), ODB_ESTALE);
    assert_int_equal(odb_get(odb, h, "rel", ODB_TYPE_INT32, &v, &size), ODB_ESTALE);
    assert_int_equal(odb_set(odb, h, NULL, ODB_TYPE_INT32, &v, sizeof v, 1, 0), ODB_ESTALE);
    assert_int_equal(odb_set(odb, h, NULL, ODB_TYPE_INT32, &v, sizeof v, 1, ODB_SET_CREATE),
                     ODB_ESTALE);
    assert_int_equal(odb_set(odb, h, "rel", ODB_TYPE_INT32, &v, sizeof v, 1, ODB_SET_CREATE),
                     ODB_ESTALE);
    assert_int_equal(odb_get_elem(odb, h, 0, ODB_TYPE_INT32, &v, sizeof v), ODB_ESTALE);
    assert_int_equal(odb_set_elem(odb, h, 0, ODB_TYPE_INT32, &v, sizeof v), ODB_ESTALE);
    assert_int_equal(odb_resize(odb, h, 2), ODB_ESTALE);
    assert_int_equal(odb_key_info(odb, h, &info), ODB_ESTALE);
    assert_int_equal(odb_key_path(odb, h, buf, sizeof buf), ODB_ESTALE);
    assert_int_equal(odb_dir_list(odb, h, &ents, &n), ODB_ESTALE);
    assert_null(ents);
    assert_int_equal(odb_find(odb, h, NULL, &out), ODB_ESTALE);
    assert_int_equal(odb_find(odb, h, "x", &out), ODB_ESTALE);
    assert_int_equal(odb_find_nofollow(odb, h, "x", &out), ODB_ESTALE);
    assert_int_equal(odb_create(odb, h, "x", ODB_TYPE_INT32, 1, 0, &out), ODB_ESTALE);
    assert_int_equal(odb_delete(odb, h, NULL, true), ODB_ESTALE);
    assert_int_equal(odb_rename(odb, h, "newname"), ODB_ESTALE);
    assert_int_equal(odb_set_mode(odb, h, ODB_MODE_ALL), ODB_ESTALE);
    assert_int_equal(odb_link(odb, h, "lnk", "/x"), ODB_ESTALE);
    assert_int_equal(odb_copy(odb, h, ODB_ROOT, "/copy_of_stale"), ODB_ESTALE);
    assert_true(strlen(odb_errmsg()) > 0);
    assert_unchanged(odb, &s);
}

static void test_stale_handles(void **state)
{
    struct odb *odb = ODB(state);
    struct odb_hkey v = mk(odb, "/s/v", ODB_TYPE_INT32, 1, 0);
    struct odb_hkey dir = mk(odb, "/s/dir", ODB_TYPE_DIR, 0, 0);
    struct odb_hkey child = mk(odb, "/s/dir/child", ODB_TYPE_INT32, 1, 0);
    struct odb_hkey grandchild = mk(odb, "/s/dir/sub/gc", ODB_TYPE_STRING, 1, 0);
    set_i32(odb, "/s/v", 5);

    assert_int_equal(odb_delete(odb, ODB_ROOT, "/s/v", false), 0);
    assert_all_stale(odb, v);
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/s/dir", true), 0);
    assert_all_stale(odb, dir);
    assert_all_stale(odb, child);
    assert_all_stale(odb, grandchild);

    /* The slot of a deleted key is reused by later creates; the old handle
     * stays stale while the new key works. */
    struct odb_hkey reused = {0, 0};
    bool found = false;
    for (int i = 0; i < 64 && !found; i++) {
        char path[32];
        snprintf(path, sizeof path, "/r/k%d", i);
        reused = mk(odb, path, ODB_TYPE_INT32, 1, 0);
        found = reused.idx == v.idx;
    }
    assert_true(found);
    assert_int_not_equal(reused.gen, v.gen);
    assert_all_stale(odb, v);
    int32_t x = 9;
    assert_int_equal(odb_set(odb, reused, NULL, ODB_TYPE_INT32, &x, sizeof x, 1, 0), 0);
    size_t size = sizeof x;
    x = 0;
    assert_int_equal(odb_get(odb, reused, NULL, ODB_TYPE_INT32, &x, &size), 0);
    assert_int_equal(x, 9);
    /* Handles of never-used or out-of-range slots are stale too. */
    struct odb_hkey bogus = {1000000, 1};
    assert_all_stale(odb, bogus);
    struct odb_hkey root_wrong_gen = {0, 7};
    struct odb_key_info info;
    assert_int_equal(odb_key_info(odb, root_wrong_gen, &info), ODB_ESTALE);
    tfx_assert_odb_ok(odb);
}

/* ---------------------------------------------------------------------- */
/* Get and set                                                             */
/* ---------------------------------------------------------------------- */

static void test_get_set_basic(void **state)
{
    struct odb *odb = ODB(state);
    struct odb_hkey h = mk(odb, "/v/i32", ODB_TYPE_INT32, 1, 0);
    set_i32(odb, "/v/i32", -42);
    assert_int_equal(get_i32(odb, "/v/i32"), -42);
    assert_int_equal(get_i32(odb, "/V/I32"), -42);
    /* By handle and relative to a base. */
    int32_t v = 17;
    assert_int_equal(odb_set(odb, h, NULL, ODB_TYPE_INT32, &v, sizeof v, 1, 0), 0);
    struct odb_hkey vdir = find(odb, "/v");
    v = 0;
    size_t size = sizeof v;
    assert_int_equal(odb_get(odb, vdir, "i32", ODB_TYPE_INT32, &v, &size), 0);
    assert_int_equal(v, 17);
    size = sizeof v;
    assert_int_equal(odb_get(odb, h, "", ODB_TYPE_INT32, &v, &size), 0);

    /* Every fixed type round-trips. */
    int64_t i64 = INT64_MIN + 3;
    uint64_t u64 = UINT64_MAX - 1;
    double d = -1.5e300;
    float fl = 3.25f;
    uint16_t u16 = 65535;
    int8_t i8 = -128;
    assert_int_equal(odb_set(odb, ODB_ROOT, "/v/i64", ODB_TYPE_INT64, &i64, 8, 1, ODB_SET_CREATE),
                     0);
    assert_int_equal(odb_set(odb, ODB_ROOT, "/v/u64", ODB_TYPE_UINT64, &u64, 8, 1, ODB_SET_CREATE),
                     0);
    assert_int_equal(odb_set(odb, ODB_ROOT, "/v/d", ODB_TYPE_DOUBLE, &d, 8, 1, ODB_SET_CREATE), 0);
    assert_int_equal(odb_set(odb, ODB_ROOT, "/v/f", ODB_TYPE_FLOAT, &fl, 4, 1, ODB_SET_CREATE), 0);
    assert_int_equal(odb_set(odb, ODB_ROOT, "/v/u16", ODB_TYPE_UINT16, &u16, 2, 1, ODB_SET_CREATE),
                     0);
    assert_int_equal(odb_set(odb, ODB_ROOT, "/v/i8", ODB_TYPE_INT8, &i8, 1, 1, ODB_SET_CREATE), 0);
    int64_t ri64 = 0;
    uint64_t ru64 = 0;
    double rd = 0;
    float rf = 0;
    uint16_t ru16 = 0;
    int8_t ri8 = 0;
    size = 8;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/v/i64", ODB_TYPE_INT64, &ri64, &size), 0);
    size = 8;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/v/u64", ODB_TYPE_UINT64, &ru64, &size), 0);
    size = 8;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/v/d", ODB_TYPE_DOUBLE, &rd, &size), 0);
    size = 4;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/v/f", ODB_TYPE_FLOAT, &rf, &size), 0);
    size = 2;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/v/u16", ODB_TYPE_UINT16, &ru16, &size), 0);
    size = 1;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/v/i8", ODB_TYPE_INT8, &ri8, &size), 0);
    assert_true(ri64 == i64 && ru64 == u64 && rd == d && rf == fl && ru16 == u16 && ri8 == i8);

    /* BOOL is stored as 0 or 1. */
    uint8_t b[3] = {7, 0, 255};
    assert_int_equal(odb_set(odb, ODB_ROOT, "/v/b", ODB_TYPE_BOOL, b, 3, 3, ODB_SET_CREATE), 0);
    uint8_t rb[3];
    size = sizeof rb;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/v/b", ODB_TYPE_BOOL, rb, &size), 0);
    assert_true(rb[0] == 1 && rb[1] == 0 && rb[2] == 1);
    uint8_t one = 9;
    assert_int_equal(odb_set_elem(odb, find(odb, "/v/b"), 1, ODB_TYPE_BOOL, &one, 1), 0);
    assert_int_equal(odb_get_elem(odb, find(odb, "/v/b"), 1, ODB_TYPE_BOOL, &one, 1), 0);
    assert_int_equal(one, 1);

    /* A set may change the number of elements. */
    int32_t arr[5] = {1, 2, 3, 4, 5};
    assert_int_equal(odb_set(odb, ODB_ROOT, "/v/i32", ODB_TYPE_INT32, arr, sizeof arr, 5, 0), 0);
    assert_int_equal(info_of(odb, h).n_elem, 5);
    int32_t rarr[5] = {0};
    size = sizeof rarr;
    assert_int_equal(odb_get(odb, h, NULL, ODB_TYPE_INT32, rarr, &size), 0);
    assert_int_equal(size, sizeof rarr);
    assert_memory_equal(arr, rarr, sizeof arr);
    /* Large values (beyond the in-place limit) too. */
    size_t n_big = 5000;
    double *big = calloc(n_big, sizeof *big);
    double *rbig = calloc(n_big, sizeof *rbig);
    assert_non_null(big);
    assert_non_null(rbig);
    for (size_t i = 0; i < n_big; i++)
        big[i] = (double)i * 0.5;
    for (int round = 0; round < 3; round++) {
        big[0] = round;
        assert_int_equal(odb_set(odb, ODB_ROOT, "/v/big", ODB_TYPE_DOUBLE, big, n_big * 8,
                                 (uint32_t)n_big, ODB_SET_CREATE),
                         0);
        size = n_big * 8;
        assert_int_equal(odb_get(odb, ODB_ROOT, "/v/big", ODB_TYPE_DOUBLE, rbig, &size), 0);
        assert_memory_equal(big, rbig, n_big * 8);
    }
    free(big);
    free(rbig);
    tfx_assert_odb_ok(odb);
}

static void test_get_set_errors(void **state)
{
    struct odb *odb = ODB(state);
    struct odb_hkey h = mk(odb, "/e/i32", ODB_TYPE_INT32, 1, 0);
    struct odb_hkey dir = find(odb, "/e");
    set_i32(odb, "/e/i32", 5);
    int64_t v64 = 1;
    int32_t v = 3;
    float f = 1.0f;
    size_t size;

    /* Type mismatch. */
    size = sizeof v64;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/e/i32", ODB_TYPE_INT64, &v64, &size), ODB_ETYPE);
    assert_true(strstr(odb_errmsg(), "INT32") != NULL);
    size = sizeof v;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/e/i32", ODB_TYPE_UINT32, &v, &size), ODB_ETYPE);
    EXPECT_FAIL_UNCHANGED(odb, ODB_ETYPE,
                          odb_set(odb, ODB_ROOT, "/e/i32", ODB_TYPE_FLOAT, &f, sizeof f, 1, 0));
    EXPECT_FAIL_UNCHANGED(
        odb, ODB_ETYPE,
        odb_set(odb, ODB_ROOT, "/e/i32", ODB_TYPE_FLOAT, &f, sizeof f, 1, ODB_SET_CREATE));
    /* Directories hold no value. */
    size = sizeof v;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/e", ODB_TYPE_INT32, &v, &size), ODB_EISDIR);
    size = sizeof v;
    assert_int_equal(odb_get(odb, dir, NULL, ODB_TYPE_DIR, &v, &size), ODB_EISDIR);
    assert_int_equal(odb_get_elem(odb, dir, 0, ODB_TYPE_INT32, &v, sizeof v), ODB_EISDIR);
    assert_int_equal(odb_get_elem(odb, dir, 0, ODB_TYPE_DIR, &v, sizeof v), ODB_EISDIR);
    EXPECT_FAIL_UNCHANGED(odb, ODB_EISDIR,
                          odb_set(odb, ODB_ROOT, "/e", ODB_TYPE_INT32, &v, sizeof v, 1, 0));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EISDIR, odb_set_elem(odb, dir, 0, ODB_TYPE_INT32, &v, sizeof v));
    /* Missing keys. */
    size = sizeof v;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/e/none", ODB_TYPE_INT32, &v, &size), ODB_ENOKEY);
    assert_non_null(strstr(odb_errmsg(), "none"));
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENOKEY,
                          odb_set(odb, ODB_ROOT, "/e/none", ODB_TYPE_INT32, &v, sizeof v, 1, 0));
    size = sizeof v;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/e/i32/x", ODB_TYPE_INT32, &v, &size), ODB_ENOTDIR);

    /* Bad sizes. */
    char six[6] = {0};
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL,
                          odb_set(odb, ODB_ROOT, "/e/i32", ODB_TYPE_INT32, six, 6, 1, 0));
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL,
                          odb_set(odb, ODB_ROOT, "/e/i32", ODB_TYPE_INT32, six, 6, 4, 0));
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL,
                          odb_set(odb, ODB_ROOT, "/e/i32", ODB_TYPE_INT32, &v, sizeof v, 0, 0));
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL,
                          odb_set(odb, ODB_ROOT, "/e/i32", ODB_TYPE_INT32, NULL, sizeof v, 1, 0));
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL,
                          odb_set(odb, ODB_ROOT, "/e/i32", ODB_TYPE_INT32, &v, 0, 1, 0));
    EXPECT_FAIL_UNCHANGED(
        odb, UT_EINVAL,
        odb_set(odb, ODB_ROOT, "/e/d", ODB_TYPE_DIR, &v, sizeof v, 1, ODB_SET_CREATE));
    EXPECT_FAIL_UNCHANGED(
        odb, UT_EINVAL,
        odb_set(odb, ODB_ROOT, "/e/x", ODB_TYPE_MAX, &v, sizeof v, 1, ODB_SET_CREATE));

    /* Buffer too small: ETRUNC, *size = what is needed, nothing copied. */
    int32_t arr[4] = {10, 20, 30, 40};
    assert_int_equal(odb_set(odb, h, NULL, ODB_TYPE_INT32, arr, sizeof arr, 4, 0), 0);
    unsigned char buf[16];
    memset(buf, 0xaa, sizeof buf);
    size = 15;
    assert_int_equal(odb_get(odb, h, NULL, ODB_TYPE_INT32, buf, &size), ODB_ETRUNC);
    assert_int_equal(size, 16);
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], 0xaa);
    size = 16;
    assert_int_equal(odb_get(odb, h, NULL, ODB_TYPE_INT32, buf, &size), 0);
    assert_memory_equal(buf, arr, 16);
    mk(odb, "/e/str", ODB_TYPE_STRING, 1, 64);
    set_str(odb, "/e/str", "hello");
    char sbuf[8];
    memset(sbuf, 'z', sizeof sbuf);
    size = 5;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/e/str", ODB_TYPE_STRING, sbuf, &size), ODB_ETRUNC);
    assert_int_equal(size, 6);
    assert_int_equal(sbuf[0], 'z');
    size = 6;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/e/str", ODB_TYPE_STRING, sbuf, &size), 0);
    assert_string_equal(sbuf, "hello");

    /* Access modes. */
    assert_int_equal(odb_set_mode(odb, h, ODB_MODE_WRITE), 0);
    size = sizeof buf;
    assert_int_equal(odb_get(odb, h, NULL, ODB_TYPE_INT32, buf, &size), ODB_EACCESS);
    assert_int_equal(odb_get_elem(odb, h, 0, ODB_TYPE_INT32, buf, 4), ODB_EACCESS);
    assert_int_equal(odb_set(odb, h, NULL, ODB_TYPE_INT32, arr, 8, 2, 0), 0); /* write ok */
    assert_int_equal(odb_set_mode(odb, h, ODB_MODE_READ), 0);
    EXPECT_FAIL_UNCHANGED(odb, ODB_EACCESS,
                          odb_set(odb, h, NULL, ODB_TYPE_INT32, arr, sizeof arr, 4, 0));
    EXPECT_FAIL_UNCHANGED(
        odb, ODB_EACCESS,
        odb_set(odb, h, NULL, ODB_TYPE_INT32, arr, sizeof arr, 4, ODB_SET_CREATE));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EACCESS, odb_set_elem(odb, h, 0, ODB_TYPE_INT32, arr, 4));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EACCESS, odb_resize(odb, h, 10));
    size = sizeof buf;
    assert_int_equal(odb_get(odb, h, NULL, ODB_TYPE_INT32, buf, &size), 0);
    assert_int_equal(size, 8);
    assert_int_equal(odb_set_mode(odb, h, ODB_MODE_ALL), 0);
    tfx_assert_odb_ok(odb);
}

static void test_set_create(void **state)
{
    struct odb *odb = ODB(state);
    double d[3] = {1, 2, 3};
    /* Missing key and missing parents, in one change. */
    uint64_t changes = odb_change_count(odb);
    assert_int_equal(
        odb_set(odb, ODB_ROOT, "/sc/a/b", ODB_TYPE_DOUBLE, d, sizeof d, 3, ODB_SET_CREATE), 0);
    assert_int_equal(odb_change_count(odb), changes + 1);
    struct odb_key_info info = info_of(odb, find(odb, "/sc/a/b"));
    assert_int_equal(info.type, ODB_TYPE_DOUBLE);
    assert_int_equal(info.n_elem, 3);
    /* Relative, under a base handle. */
    struct odb_hkey sc = find(odb, "/sc");
    int16_t s = 4;
    assert_int_equal(odb_set(odb, sc, "rel", ODB_TYPE_INT16, &s, 2, 1, ODB_SET_CREATE), 0);
    assert_int_equal(info_of(odb, find(odb, "/sc/rel")).type, ODB_TYPE_INT16);
    /* A string: capacity from the size given. */
    assert_int_equal(
        odb_set(odb, ODB_ROOT, "/sc/s", ODB_TYPE_STRING, "abc\0\0\0\0", 8, 1, ODB_SET_CREATE), 0);
    info = info_of(odb, find(odb, "/sc/s"));
    assert_int_equal(info.elem_size, 8);
    assert_str(odb, "/sc/s", "abc");
    /* ODB_SET_CREATE on an existing key just sets it. */
    assert_int_equal(odb_set(odb, ODB_ROOT, "/sc/rel", ODB_TYPE_INT16, &s, 2, 1, ODB_SET_CREATE),
                     0);
    /* Needs a name: not the base itself. */
    EXPECT_FAIL_UNCHANGED(
        odb, ODB_ENOTDIR,
        odb_set(odb, ODB_ROOT, "/sc/rel/x", ODB_TYPE_INT16, &s, 2, 1, ODB_SET_CREATE));
    EXPECT_FAIL_UNCHANGED(
        odb, ODB_EPATH,
        odb_set(odb, ODB_ROOT, "/sc/x[0]", ODB_TYPE_INT16, &s, 2, 1, ODB_SET_CREATE));
    tfx_assert_odb_ok(odb);
}

static void test_strings(void **state)
{
    struct odb *odb = ODB(state);
    struct odb_hkey h = mk(odb, "/str/s", ODB_TYPE_STRING, 1, 64);
    /* A shorter string keeps the capacity. */
    set_str(odb, "/str/s", "hi");
    assert_int_equal(info_of(odb, h).elem_size, 64);
    assert_str(odb, "/str/s", "hi");
    set_str(odb, "/str/s", "a somewhat longer string");
    assert_int_equal(info_of(odb, h).elem_size, 64);
    set_str(odb, "/str/s", "");
    assert_str(odb, "/str/s", "");
    assert_int_equal(info_of(odb, h).elem_size, 64);
    /* A longer one grows it. */
    char longer[200];
    memset(longer, 'L', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    set_str(odb, "/str/s", longer);
    assert_true(info_of(odb, h).elem_size >= sizeof longer);
    assert_str(odb, "/str/s", longer);
    /* Unterminated element. */
    EXPECT_FAIL_UNCHANGED(odb, ODB_ETOOLONG,
                          odb_set(odb, ODB_ROOT, "/str/s", ODB_TYPE_STRING, "abc", 3, 1, 0));
    EXPECT_FAIL_UNCHANGED(
        odb, ODB_ETOOLONG,
        odb_set(odb, ODB_ROOT, "/str/new", ODB_TYPE_STRING, "abc", 3, 1, ODB_SET_CREATE));
    /* Arrays: each element needs its NUL. */
    const char two_bad[8] = {'a', 'b', 'c', 'd', 'e', 'f', 'g', '\0'};
    EXPECT_FAIL_UNCHANGED(odb, ODB_ETOOLONG,
                          odb_set(odb, ODB_ROOT, "/str/s", ODB_TYPE_STRING, two_bad, 8, 2, 0));
    const char two_ok[8] = {'a', 'b', 'c', '\0', 'e', 'f', '\0', '\0'};
    assert_int_equal(odb_set(odb, ODB_ROOT, "/str/s", ODB_TYPE_STRING, two_ok, 8, 2, 0), 0);
    struct odb_key_info info = info_of(odb, h);
    assert_int_equal(info.n_elem, 2);
    assert_int_equal(info.elem_size, 4);
    char out[8];
    size_t size = sizeof out;
    assert_int_equal(odb_get(odb, h, NULL, ODB_TYPE_STRING, out, &size), 0);
    assert_int_equal(size, 8);
    assert_memory_equal(out, two_ok, 8);
    /* String arrays keep their capacity when set with shorter elements. */
    mk(odb, "/str/arr", ODB_TYPE_STRING, 3, 16);
    const char three[6] = {'x', '\0', 'y', '\0', 'z', '\0'};
    struct odb_hkey arr = find(odb, "/str/arr");
    assert_int_equal(odb_set(odb, arr, NULL, ODB_TYPE_STRING, three, 6, 3, 0), 0);
    info = info_of(odb, arr);
    assert_int_equal(info.n_elem, 3);
    assert_int_equal(info.elem_size, 16);
    char e[16];
    assert_int_equal(odb_get_elem(odb, arr, 2, ODB_TYPE_STRING, e, sizeof e), 0);
    assert_string_equal(e, "z");
    tfx_assert_odb_ok(odb);
}

static void test_elements(void **state)
{
    struct odb *odb = ODB(state);
    struct odb_hkey h = mk(odb, "/el/a", ODB_TYPE_INT16, 4, 0);
    int16_t v = 300;
    assert_int_equal(odb_set_elem(odb, h, 2, ODB_TYPE_INT16, &v, sizeof v), 0);
    int16_t all[4];
    size_t size = sizeof all;
    assert_int_equal(odb_get(odb, h, NULL, ODB_TYPE_INT16, all, &size), 0);
    assert_true(all[0] == 0 && all[1] == 0 && all[2] == 300 && all[3] == 0);
    int16_t r = 0;
    assert_int_equal(odb_get_elem(odb, h, 2, ODB_TYPE_INT16, &r, sizeof r), 0);
    assert_int_equal(r, 300);
    uint64_t serial = info_of(odb, h).serial;
    assert_int_equal(odb_set_elem(odb, h, 3, ODB_TYPE_INT16, &v, sizeof v), 0);
    assert_int_equal(info_of(odb, h).serial, serial + 1);

    EXPECT_FAIL_UNCHANGED(odb, ODB_ERANGE, odb_set_elem(odb, h, 4, ODB_TYPE_INT16, &v, 2));
    EXPECT_FAIL_UNCHANGED(odb, ODB_ERANGE, odb_set_elem(odb, h, UINT32_MAX, ODB_TYPE_INT16, &v, 2));
    assert_int_equal(odb_get_elem(odb, h, 4, ODB_TYPE_INT16, &r, sizeof r), ODB_ERANGE);
    EXPECT_FAIL_UNCHANGED(odb, ODB_ETYPE, odb_set_elem(odb, h, 0, ODB_TYPE_UINT16, &v, 2));
    assert_int_equal(odb_get_elem(odb, h, 0, ODB_TYPE_INT32, &r, sizeof r), ODB_ETYPE);
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL, odb_set_elem(odb, h, 0, ODB_TYPE_INT16, &v, 1));
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL, odb_set_elem(odb, h, 0, ODB_TYPE_INT16, NULL, 2));
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL, odb_set_elem(odb, h, 0, ODB_TYPE_DIR, &v, 2));
    assert_int_equal(odb_get_elem(odb, h, 0, ODB_TYPE_INT16, &r, 1), ODB_ETRUNC);

    /* Strings: capacity 8 includes the NUL. */
    struct odb_hkey s = mk(odb, "/el/s", ODB_TYPE_STRING, 3, 8);
    assert_int_equal(odb_set_elem(odb, s, 1, ODB_TYPE_STRING, "1234567", 8), 0);
    EXPECT_FAIL_UNCHANGED(odb, ODB_ETOOLONG,
                          odb_set_elem(odb, s, 1, ODB_TYPE_STRING, "12345678", 9));
    /* Without a NUL in the bytes passed, those bytes are the string. */
    EXPECT_FAIL_UNCHANGED(odb, ODB_ETOOLONG,
                          odb_set_elem(odb, s, 0, ODB_TYPE_STRING, "12345678", 8));
    assert_int_equal(odb_set_elem(odb, s, 0, ODB_TYPE_STRING, "abcXXXX", 3), 0);
    assert_int_equal(odb_set_elem(odb, s, 2, ODB_TYPE_STRING, "q", 2), 0);
    char e[8];
    assert_int_equal(odb_get_elem(odb, s, 0, ODB_TYPE_STRING, e, sizeof e), 0);
    assert_string_equal(e, "abc");
    assert_int_equal(odb_get_elem(odb, s, 1, ODB_TYPE_STRING, e, sizeof e), 0);
    assert_string_equal(e, "1234567");
    /* A shorter string overwrites all of the old one. */
    assert_int_equal(odb_set_elem(odb, s, 1, ODB_TYPE_STRING, "z", 2), 0);
    char raw[24];
    size = sizeof raw;
    assert_int_equal(odb_get(odb, s, NULL, ODB_TYPE_STRING, raw, &size), 0);
    assert_int_equal(size, 24);
    assert_memory_equal(raw + 8, "z\0\0\0\0\0\0\0", 8);
    /* Exactly the string's length plus NUL is needed to read it. */
    assert_int_equal(odb_get_elem(odb, s, 0, ODB_TYPE_STRING, e, 3), ODB_ETRUNC);
    assert_int_equal(odb_get_elem(odb, s, 0, ODB_TYPE_STRING, e, 4), 0);
    assert_string_equal(e, "abc");
    assert_int_equal(odb_get_elem(odb, s, 3, ODB_TYPE_STRING, e, sizeof e), ODB_ERANGE);
    tfx_assert_odb_ok(odb);
}

static void test_resize(void **state)
{
    struct odb *odb = ODB(state);
    struct odb_hkey h = mk(odb, "/rs/a", ODB_TYPE_INT32, 3, 0);
    int32_t init[3] = {1, 2, 3};
    assert_int_equal(odb_set(odb, h, NULL, ODB_TYPE_INT32, init, sizeof init, 3, 0), 0);
    assert_int_equal(odb_resize(odb, h, 5), 0);
    int32_t out[2000];
    size_t size = sizeof out;
    assert_int_equal(odb_get(odb, h, NULL, ODB_TYPE_INT32, out, &size), 0);
    assert_int_equal(size, 5 * 4);
    assert_true(out[0] == 1 && out[1] == 2 && out[2] == 3 && out[3] == 0 && out[4] == 0);
    assert_int_equal(odb_resize(odb, h, 2), 0);
    size = sizeof out;
    assert_int_equal(odb_get(odb, h, NULL, ODB_TYPE_INT32, out, &size), 0);
    assert_int_equal(size, 8);
    assert_true(out[0] == 1 && out[1] == 2);
    /* Growing again gives zeros, not the old third element. */
    assert_int_equal(odb_resize(odb, h, 2000), 0);
    size = sizeof out;
    assert_int_equal(odb_get(odb, h, NULL, ODB_TYPE_INT32, out, &size), 0);
    assert_int_equal(size, sizeof out);
    assert_true(out[0] == 1 && out[1] == 2);
    for (int i = 2; i < 2000; i++)
        assert_int_equal(out[i], 0);
    assert_int_equal(info_of(odb, h).n_elem, 2000);
    /* Same size: nothing to do, still fine. */
    assert_int_equal(odb_resize(odb, h, 2000), 0);
    assert_int_equal(odb_resize(odb, h, 1), 0);
    assert_int_equal(info_of(odb, h).n_elem, 1);

    /* Strings keep their capacity per element. */
    struct odb_hkey s = mk(odb, "/rs/s", ODB_TYPE_STRING, 1, 40);
    set_str(odb, "/rs/s", "first");
    assert_int_equal(odb_resize(odb, s, 3), 0);
    struct odb_key_info info = info_of(odb, s);
    assert_int_equal(info.n_elem, 3);
    assert_int_equal(info.elem_size, 40);
    char e[40];
    assert_int_equal(odb_get_elem(odb, s, 0, ODB_TYPE_STRING, e, sizeof e), 0);
    assert_string_equal(e, "first");
    assert_int_equal(odb_get_elem(odb, s, 2, ODB_TYPE_STRING, e, sizeof e), 0);
    assert_string_equal(e, "");

    struct odb_hkey dir = find(odb, "/rs");
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL, odb_resize(odb, h, 0));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EISDIR, odb_resize(odb, dir, 3));
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENOSPC, odb_resize(odb, s, UINT32_MAX));
    tfx_assert_odb_ok(odb);
}

/* ---------------------------------------------------------------------- */
/* Key info, paths, directory listings                                     */
/* ---------------------------------------------------------------------- */

static void test_key_info(void **state)
{
    struct odb *odb = ODB(state);
    struct odb_hkey h = mk(odb, "/ki/Counter", ODB_TYPE_UINT32, 2, 0);
    struct odb_hkey dir = find(odb, "/ki");
    struct odb_key_info a = info_of(odb, h);
    assert_int_equal(a.type, ODB_TYPE_UINT32);
    assert_int_equal(a.n_elem, 2);
    assert_int_equal(a.elem_size, 4);
    assert_int_equal(a.mode, ODB_MODE_ALL);
    assert_string_equal(a.name, "Counter");
    assert_true(same_key(a.parent, dir));
    assert_true(a.mtime_ns > 0);
    struct odb_key_info d0 = info_of(odb, dir);

    uint64_t serial = a.serial;
    int64_t mtime = a.mtime_ns;
    for (uint32_t i = 0; i < 5; i++) {
        uint32_t v[2] = {i, i};
        assert_int_equal(odb_set(odb, h, NULL, ODB_TYPE_UINT32, v, sizeof v, 2, 0), 0);
        struct odb_key_info b = info_of(odb, h);
        assert_int_equal(b.serial, serial + 1);
        assert_true(b.mtime_ns >= mtime);
        serial = b.serial;
        mtime = b.mtime_ns;
    }
    /* A failed set does not touch it. */
    float f = 0;
    assert_int_equal(odb_set(odb, h, NULL, ODB_TYPE_FLOAT, &f, 4, 1, 0), ODB_ETYPE);
    assert_int_equal(info_of(odb, h).serial, serial);
    /* Mode changes count as changes. */
    assert_int_equal(odb_set_mode(odb, h, ODB_MODE_READ), 0);
    struct odb_key_info c = info_of(odb, h);
    assert_int_equal(c.mode, ODB_MODE_READ);
    assert_int_equal(c.serial, serial + 1);
    /* The directory: n_elem counts children, and it changes with them. */
    mk(odb, "/ki/other", ODB_TYPE_INT8, 1, 0);
    struct odb_key_info d1 = info_of(odb, dir);
    assert_int_equal(d1.n_elem, d0.n_elem + 1);
    assert_true(d1.serial > d0.serial);
    assert_true(d1.mtime_ns >= d0.mtime_ns);
    /* The root is its own parent and has an empty name. */
    struct odb_key_info r = info_of(odb, ODB_ROOT);
    assert_int_equal(r.type, ODB_TYPE_DIR);
    assert_true(same_key(r.parent, ODB_ROOT));
    assert_string_equal(r.name, "");
    assert_int_equal(r.n_elem, 1);
    tfx_assert_odb_ok(odb);
}

static void test_key_path(void **state)
{
    struct odb *odb = ODB(state);
    struct odb_hkey h = mk(odb, "/Equipment/Trigger/Settings/Rate", ODB_TYPE_DOUBLE, 1, 0);
    char buf[ODB_PATH_MAX + 2];
    assert_int_equal(odb_key_path(odb, h, buf, sizeof buf), 0);
    assert_string_equal(buf, "/Equipment/Trigger/Settings/Rate");
    assert_int_equal(odb_key_path(odb, ODB_ROOT, buf, sizeof buf), 0);
    assert_string_equal(buf, "/");
    /* Exactly fits / one too small. */
    size_t need = strlen("/Equipment/Trigger/Settings/Rate") + 1;
    memset(buf, 'x', sizeof buf);
    assert_int_equal(odb_key_path(odb, h, buf, need), 0);
    assert_string_equal(buf, "/Equipment/Trigger/Settings/Rate");
    assert_int_equal(odb_key_path(odb, h, buf, need - 1), ODB_ETRUNC);
    assert_int_equal(odb_key_path(odb, h, buf, 0), ODB_ETRUNC);
    assert_int_equal(odb_key_path(odb, ODB_ROOT, buf, 1), ODB_ETRUNC);
    /* A found handle round-trips through its path. */
    struct odb_hkey h2 = find(odb, "/equipment/TRIGGER/settings/rate");
    assert_true(same_key(h, h2));
    assert_int_equal(odb_key_path(odb, h2, buf, sizeof buf), 0);
    assert_string_equal(buf, "/Equipment/Trigger/Settings/Rate"); /* spelling kept */
    tfx_assert_odb_ok(odb);
}

static void test_dir_list(void **state)
{
    struct odb *odb = ODB(state);
    const char *names[] = {"zeta", "Alpha", "mid", "beta", "Omega"};
    struct odb_hkey keys[5];
    for (int i = 0; i < 5; i++) {
        char path[64];
        snprintf(path, sizeof path, "/dl/%s", names[i]);
        keys[i] = mk(odb, path, i == 2 ? ODB_TYPE_DIR : ODB_TYPE_INT32, i + 1, 0);
    }
    mk(odb, "/dl/mid/inner", ODB_TYPE_INT8, 1, 0);
    struct odb_hkey dl = find(odb, "/dl");
    struct odb_dirent *ents = NULL;
    size_t n = 0;
    assert_int_equal(odb_dir_list(odb, dl, &ents, &n), 0);
    assert_int_equal(n, 5);
    for (int i = 0; i < 5; i++) {
        assert_string_equal(ents[i].name, names[i]); /* creation order */
        assert_true(same_key(ents[i].key, keys[i]));
        assert_int_equal(ents[i].type, i == 2 ? ODB_TYPE_DIR : ODB_TYPE_INT32);
        assert_int_equal(ents[i].n_elem, i == 2 ? 1u : (uint32_t)i + 1);
    }
    /* Entries stay valid after the directory changes; a deleted one's
     * handle is stale, never another key's. */
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/dl/mid", true), 0);
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/dl/zeta", false), 0);
    mk(odb, "/dl/new1", ODB_TYPE_INT32, 1, 0);
    mk(odb, "/dl/new2", ODB_TYPE_INT32, 1, 0);
    struct odb_key_info info;
    assert_int_equal(odb_key_info(odb, ents[0].key, &info), ODB_ESTALE);
    assert_int_equal(odb_key_info(odb, ents[2].key, &info), ODB_ESTALE);
    assert_int_equal(odb_key_info(odb, ents[1].key, &info), 0);
    assert_string_equal(info.name, "Alpha");
    assert_string_equal(ents[0].name, "zeta"); /* the snapshot itself is intact */
    odb_dirents_free(ents);

    assert_int_equal(odb_dir_list(odb, dl, &ents, &n), 0);
    const char *now[] = {"Alpha", "beta", "Omega", "new1", "new2"};
    assert_int_equal(n, 5);
    for (int i = 0; i < 5; i++)
        assert_string_equal(ents[i].name, now[i]);
    odb_dirents_free(ents);

    /* A link to a directory lists the directory. */
    assert_int_equal(odb_link(odb, ODB_ROOT, "/dl_link", "/dl"), 0);
    struct odb_hkey lnk;
    assert_int_equal(odb_find_nofollow(odb, ODB_ROOT, "/dl_link", &lnk), 0);
    assert_int_equal(odb_dir_list(odb, lnk, &ents, &n), 0);
    assert_int_equal(n, 5);
    odb_dirents_free(ents);
    /* Empty directory; value; stale. */
    struct odb_hkey empty = mk(odb, "/empty", ODB_TYPE_DIR, 0, 0);
    ents = NULL;
    assert_int_equal(odb_dir_list(odb, empty, &ents, &n), 0);
    assert_int_equal(n, 0);
    odb_dirents_free(ents);
    ents = NULL;
    n = 99;
    assert_int_equal(odb_dir_list(odb, keys[1], &ents, &n), ODB_ENOTDIR);
    assert_null(ents);
    assert_int_equal(n, 99);
    assert_int_equal(odb_dir_list(odb, keys[2], &ents, &n), ODB_ESTALE);
    odb_dirents_free(NULL);
    tfx_assert_odb_ok(odb);
}

/* ---------------------------------------------------------------------- */
/* Rename, link, copy, mode                                                */
/* ---------------------------------------------------------------------- */

static void test_rename(void **state)
{
    struct odb *odb = ODB(state);
    struct odb_hkey a = mk(odb, "/rn/a", ODB_TYPE_INT32, 1, 0);
    mk(odb, "/rn/B", ODB_TYPE_INT32, 1, 0);
    struct odb_hkey sub = mk(odb, "/rn/sub/deep/x", ODB_TYPE_INT32, 1, 0);
    set_i32(odb, "/rn/a", 11);
    set_i32(odb, "/rn/sub/deep/x", 22);

    assert_int_equal(odb_rename(odb, a, "renamed"), 0);
    struct odb_hkey h;
    assert_int_equal(odb_find(odb, ODB_ROOT, "/rn/a", &h), ODB_ENOKEY);
    assert_int_equal(get_i32(odb, "/rn/renamed"), 11);
    assert_true(same_key(find(odb, "/rn/RENAMED"), a)); /* same key, same handle */
    assert_string_equal(info_of(odb, a).name, "renamed");
    /* Changing only the case. */
    assert_int_equal(odb_rename(odb, a, "ReNamed"), 0);
    assert_string_equal(info_of(odb, a).name, "ReNamed");
    assert_true(same_key(find(odb, "/rn/renamed"), a));
    /* Same name again is fine. */
    assert_int_equal(odb_rename(odb, a, "ReNamed"), 0);
    /* Collisions, in any case. */
    EXPECT_FAIL_UNCHANGED(odb, ODB_EEXIST, odb_rename(odb, a, "b"));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EEXIST, odb_rename(odb, a, "B"));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EEXIST, odb_rename(odb, a, "SUB"));
    /* Invalid names. */
    const char *bad[] = {"", "a/b", "x[0]", ".", "..", "tab\there"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT_FAIL_UNCHANGED(odb, ODB_ENAME, odb_rename(odb, a, bad[i]));
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENAME, odb_rename(odb, a, NULL));
    char n64[65];
    memset(n64, 'q', 64);
    n64[64] = '\0';
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENAME, odb_rename(odb, a, n64));
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL, odb_rename(odb, ODB_ROOT, "root2"));
    /* Without WRITE. */
    assert_int_equal(odb_set_mode(odb, a, ODB_MODE_READ), 0);
    EXPECT_FAIL_UNCHANGED(odb, ODB_EACCESS, odb_rename(odb, a, "other"));
    assert_int_equal(odb_set_mode(odb, a, ODB_MODE_ALL), 0);

    /* A directory: its subtree moves with it. */
    struct odb_hkey subdir = find(odb, "/rn/sub");
    assert_int_equal(odb_rename(odb, subdir, "moved"), 0);
    assert_int_equal(get_i32(odb, "/rn/moved/deep/x"), 22);
    assert_int_equal(odb_find(odb, ODB_ROOT, "/rn/sub/deep/x", &h), ODB_ENOKEY);
    char path[128];
    assert_int_equal(odb_key_path(odb, sub, path, sizeof path), 0);
    assert_string_equal(path, "/rn/moved/deep/x");
    /* The old name is free again. */
    mk(odb, "/rn/sub", ODB_TYPE_INT32, 1, 0);
    /* Order in the directory is unchanged by a rename. */
    struct odb_dirent *ents;
    size_t n;
    assert_int_equal(odb_dir_list(odb, find(odb, "/rn"), &ents, &n), 0);
    assert_int_equal(n, 4);
    assert_string_equal(ents[0].name, "ReNamed");
    assert_string_equal(ents[1].name, "B");
    assert_string_equal(ents[2].name, "moved");
    assert_string_equal(ents[3].name, "sub");
    odb_dirents_free(ents);
    tfx_assert_odb_ok(odb);
}

static void test_links(void **state)
{
    struct odb *odb = ODB(state);
    struct odb_hkey target = mk(odb, "/t/val", ODB_TYPE_INT32, 1, 0);
    set_i32(odb, "/t/val", 42);
    assert_int_equal(odb_link(odb, ODB_ROOT, "/l/dir", "/t"), 0);
    assert_int_equal(odb_link(odb, ODB_ROOT, "/l/val", "/t/val"), 0);
    /* Followed on every component and at the end. */
    assert_int_equal(get_i32(odb, "/l/dir/val"), 42);
    assert_int_equal(get_i32(odb, "/l/val"), 42);
    assert_true(same_key(find(odb, "/l/val"), target));
    assert_true(same_key(find(odb, "/l/dir/val"), target));
    set_i32(odb, "/l/val", 43); /* writes the target */
    assert_int_equal(get_i32(odb, "/t/val"), 43);
    /* Not followed at the end by find_nofollow. */
    struct odb_hkey lnk;
    assert_int_equal(odb_find_nofollow(odb, ODB_ROOT, "/l/val", &lnk), 0);
    assert_false(same_key(lnk, target));
    struct odb_key_info info = info_of(odb, lnk);
    assert_int_equal(info.type, ODB_TYPE_LINK);
    assert_string_equal(info.name, "val");
    char tbuf[64];
    size_t size = sizeof tbuf;
    assert_int_equal(odb_get(odb, lnk, NULL, ODB_TYPE_LINK, tbuf, &size), 0);
    assert_string_equal(tbuf, "/t/val");
    /* ... but intermediate links are. */
    struct odb_hkey through;
    assert_int_equal(odb_find_nofollow(odb, ODB_ROOT, "/l/dir/val", &through), 0);
    assert_true(same_key(through, target));
    /* Creating through a link creates in the target. */
    mk(odb, "/l/dir/made", ODB_TYPE_INT8, 1, 0);
    find(odb, "/t/made");
    /* Chains of links. */
    assert_int_equal(odb_link(odb, ODB_ROOT, "/l/chain", "/l/val"), 0);
    assert_int_equal(get_i32(odb, "/l/chain"), 43);

    /* Loops. */
    assert_int_equal(odb_link(odb, ODB_ROOT, "/loop/a", "/loop/b"), 0);
    assert_int_equal(odb_link(odb, ODB_ROOT, "/loop/b", "/loop/a"), 0);
    assert_int_equal(odb_link(odb, ODB_ROOT, "/loop/self", "/loop/self"), 0);
    int32_t v;
    struct odb_hkey h;
    size = sizeof v;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/loop/a", ODB_TYPE_INT32, &v, &size), ODB_ELINKLOOP);
    assert_int_equal(odb_find(odb, ODB_ROOT, "/loop/self", &h), ODB_ELINKLOOP);
    assert_int_equal(odb_find(odb, ODB_ROOT, "/loop/a/x", &h), ODB_ELINKLOOP);
    EXPECT_FAIL_UNCHANGED(
        odb, ODB_ELINKLOOP,
        odb_set(odb, ODB_ROOT, "/loop/b", ODB_TYPE_INT32, &v, sizeof v, 1, ODB_SET_CREATE));
    EXPECT_FAIL_UNCHANGED(odb, ODB_ELINKLOOP,
                          odb_create(odb, ODB_ROOT, "/loop/a/x", ODB_TYPE_INT32, 1, 0, NULL));
    /* The links themselves are fine. */
    assert_int_equal(odb_find_nofollow(odb, ODB_ROOT, "/loop/a", &h), 0);
    /* 16 nested links resolve, 17 do not. */
    for (int i = 1; i <= 17; i++) {
        char path[32], tgt[32];
        snprintf(path, sizeof path, "/chain/c%d", i);
        snprintf(tgt, sizeof tgt, i == 1 ? "/t/val" : "/chain/c%d", i - 1);
        assert_int_equal(odb_link(odb, ODB_ROOT, path, tgt), 0);
    }
    assert_int_equal(get_i32(odb, "/chain/c16"), 43);
    size = sizeof v;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/chain/c17", ODB_TYPE_INT32, &v, &size),
                     ODB_ELINKLOOP);

    /* Dangling: missing until the target exists. */
    assert_int_equal(odb_link(odb, ODB_ROOT, "/l/dangling", "/later/key"), 0);
    size = sizeof v;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/l/dangling", ODB_TYPE_INT32, &v, &size), ODB_ENOKEY);
    assert_int_equal(odb_find(odb, ODB_ROOT, "/l/dangling", &h), ODB_ENOKEY);
    mk(odb, "/later/key", ODB_TYPE_INT32, 1, 0);
    set_i32(odb, "/later/key", 7);
    assert_int_equal(get_i32(odb, "/l/dangling"), 7);

    /* Refused targets and names. */
    EXPECT_FAIL_UNCHANGED(odb, ODB_EPATH, odb_link(odb, ODB_ROOT, "/l/rel", "t/val"));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EPATH, odb_link(odb, ODB_ROOT, "/l/rel", ""));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EPATH, odb_link(odb, ODB_ROOT, "/l/rel", NULL));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EEXIST, odb_link(odb, ODB_ROOT, "/l/val", "/t"));
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENAME, odb_link(odb, ODB_ROOT, "/l/x[1]", "/t"));

    /* Deleting a link deletes the link, not the target. */
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/l/val", false), 0);
    assert_int_equal(get_i32(odb, "/t/val"), 43);
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/l/dir", true), 0);
    find(odb, "/t/made");
    /* A link to a deleted key dangles. */
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/t/val", false), 0);
    size = sizeof v;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/l/chain", ODB_TYPE_INT32, &v, &size), ODB_ENOKEY);
    tfx_assert_odb_ok(odb);
}

static void test_copy(void **state)
{
    struct odb *odb = ODB(state);
    mk(odb, "/src/i", ODB_TYPE_INT32, 4, 0);
    int32_t iv[4] = {1, -2, 3, -4};
    assert_int_equal(odb_set(odb, ODB_ROOT, "/src/i", ODB_TYPE_INT32, iv, sizeof iv, 4, 0), 0);
    mk(odb, "/src/s", ODB_TYPE_STRING, 2, 24);
    char sv[48] = {0};
    memcpy(sv, "first", sizeof "first");
    memcpy(sv + 24, "second", sizeof "second");
    assert_int_equal(odb_set(odb, ODB_ROOT, "/src/s", ODB_TYPE_STRING, sv, 48, 2, 0), 0);
    mk(odb, "/src/sub/d", ODB_TYPE_DOUBLE, 1, 0);
    double dv = 2.5;
    assert_int_equal(odb_set(odb, ODB_ROOT, "/src/sub/d", ODB_TYPE_DOUBLE, &dv, 8, 1, 0), 0);
    mk(odb, "/src/sub/empty", ODB_TYPE_DIR, 0, 0);
    mk(odb, "/src/sub/deeper/b", ODB_TYPE_BOOL, 3, 0);
    assert_int_equal(odb_link(odb, ODB_ROOT, "/src/lnk", "/src/sub/d"), 0);
    struct odb_hkey ro = mk(odb, "/src/ro", ODB_TYPE_UINT8, 1, 0);
    assert_int_equal(odb_set_mode(odb, ro, ODB_MODE_READ), 0);
    size_t big_n = 3000; /* a value larger than the in-place limit */
    mk(odb, "/src/sub/big", ODB_TYPE_INT64, (uint32_t)big_n, 0);

    struct odb_hkey src = find(odb, "/src");
    struct odb_stats before, after;
    assert_int_equal(odb_stats(odb, &before), 0);
    uint64_t changes = odb_change_count(odb);
    assert_int_equal(odb_copy(odb, src, ODB_ROOT, "/dst/copy"), 0);
    assert_int_equal(odb_change_count(odb), changes + 1);
    assert_int_equal(odb_stats(odb, &after), 0);
    assert_int_equal(after.n_keys, before.n_keys + 12); /* 11 keys + the new /dst */
    struct odb_hkey dst = find(odb, "/dst/copy");
    assert_true(digest(odb, src) == digest(odb, dst));
    assert_int_equal(info_of(odb, find(odb, "/dst/copy/ro")).mode, ODB_MODE_READ);
    /* The copied link is a link with the same (absolute) target. */
    struct odb_hkey lnk;
    assert_int_equal(odb_find_nofollow(odb, ODB_ROOT, "/dst/copy/lnk", &lnk), 0);
    assert_int_equal(info_of(odb, lnk).type, ODB_TYPE_LINK);
    /* Deep: changing the copy leaves the source alone. */
    set_i32(odb, "/dst/copy/i", 99);
    int32_t check[4];
    size_t size = sizeof check;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/src/i", ODB_TYPE_INT32, check, &size), 0);
    assert_memory_equal(check, iv, sizeof iv);
    assert_true(digest(odb, src) != digest(odb, dst));

    /* A single value. */
    assert_int_equal(odb_copy(odb, find(odb, "/src/s"), ODB_ROOT, "/single"), 0);
    char e[24];
    assert_int_equal(odb_get_elem(odb, find(odb, "/single"), 1, ODB_TYPE_STRING, e, sizeof e), 0);
    assert_string_equal(e, "second");
    /* Relative destination. */
    assert_int_equal(odb_copy(odb, find(odb, "/src/sub/d"), find(odb, "/dst"), "d2"), 0);
    size = sizeof dv;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/dst/d2", ODB_TYPE_DOUBLE, &dv, &size), 0);
    assert_true(dv == 2.5);

    /* Errors: into itself, onto an existing key, stale source. */
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL, odb_copy(odb, src, ODB_ROOT, "/src/sub/inside"));
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL, odb_copy(odb, src, ODB_ROOT, "/src/newdir/inside"));
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL, odb_copy(odb, ODB_ROOT, ODB_ROOT, "/rootcopy"));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EEXIST, odb_copy(odb, src, ODB_ROOT, "/dst/copy"));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EEXIST, odb_copy(odb, src, ODB_ROOT, "/src"));
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENAME, odb_copy(odb, src, ODB_ROOT, "/dst/x[1]"));
    EXPECT_FAIL_UNCHANGED(odb, ODB_ENOTDIR, odb_copy(odb, src, ODB_ROOT, "/src/i/x"));
    /* The copy of the read-only key cannot be deleted either. */
    EXPECT_FAIL_UNCHANGED(odb, ODB_EACCESS, odb_delete(odb, ODB_ROOT, "/dst", true));
    assert_int_equal(odb_set_mode(odb, find(odb, "/dst/copy/ro"), ODB_MODE_ALL), 0);
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/dst", true), 0);
    EXPECT_FAIL_UNCHANGED(odb, ODB_ESTALE, odb_copy(odb, dst, ODB_ROOT, "/again"));
    tfx_assert_odb_ok(odb);
}

static void test_set_mode(void **state)
{
    struct odb *odb = ODB(state);
    struct odb_hkey h = mk(odb, "/m/v", ODB_TYPE_INT32, 1, 0);
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL, odb_set_mode(odb, h, 8));
    EXPECT_FAIL_UNCHANGED(odb, UT_EINVAL, odb_set_mode(odb, h, ODB_MODE_ALL | 0x100));
    for (uint32_t mode = 0; mode <= ODB_MODE_ALL; mode++) {
        assert_int_equal(odb_set_mode(odb, h, mode), 0);
        assert_int_equal(info_of(odb, h).mode, mode);
        int32_t v = (int32_t)mode;
        size_t size = sizeof v;
        assert_int_equal(odb_set(odb, h, NULL, ODB_TYPE_INT32, &v, 4, 1, 0),
                         mode & ODB_MODE_WRITE ? 0 : ODB_EACCESS);
        assert_int_equal(odb_get(odb, h, NULL, ODB_TYPE_INT32, &v, &size),
                         mode & ODB_MODE_READ ? 0 : ODB_EACCESS);
    }
    /* The mode of a key does not restrict changing the mode (that is the
     * way back), nor key_info. */
    assert_int_equal(odb_set_mode(odb, h, 0), 0);
    assert_int_equal(odb_set_mode(odb, h, ODB_MODE_ALL), 0);
    /* The root too. */
    struct odb_key_info r = info_of(odb, ODB_ROOT);
    assert_int_equal(odb_set_mode(odb, ODB_ROOT, r.mode), 0);
    tfx_assert_odb_ok(odb);
}

/* ---------------------------------------------------------------------- */
/* Names and paths                                                         */
/* ---------------------------------------------------------------------- */

static void test_case_insensitive(void **state)
{
    struct odb *odb = ODB(state);
    struct odb_hkey h = mk(odb, "/System/Clients/Run_Number", ODB_TYPE_INT32, 1, 0);
    assert_true(same_key(find(odb, "/system/clients/run_number"), h));
    assert_true(same_key(find(odb, "/SYSTEM/CLIENTS/RUN_NUMBER"), h));
    assert_true(same_key(find(odb, "/sYsTeM/Clients/rUN_nUMBER"), h));
    assert_string_equal(info_of(odb, h).name, "Run_Number");
    assert_string_equal(info_of(odb, find(odb, "/system")).name, "System");
    EXPECT_FAIL_UNCHANGED(odb, ODB_EEXIST,
                          odb_create(odb, ODB_ROOT, "/SYSTEM", ODB_TYPE_DIR, 0, 0, NULL));
    /* Only ASCII letters fold; other bytes compare exactly. */
    mk(odb, "/u/\xc3\xa9t\xc3\xa9", ODB_TYPE_INT32, 1, 0);
    mk(odb, "/u/\xc3\x89T\xc3\x89", ODB_TYPE_INT32, 1, 0);
    assert_int_equal(info_of(odb, find(odb, "/u")).n_elem, 2);
    /* Many names in one directory that differ only in case or slightly. */
    for (int i = 0; i < 200; i++) {
        char path[32];
        snprintf(path, sizeof path, "/many/Key%03d", i);
        mk(odb, path, ODB_TYPE_INT32, 1, 0);
        set_i32(odb, path, i);
    }
    for (int i = 0; i < 200; i++) {
        char path[32];
        snprintf(path, sizeof path, "/MANY/kEY%03d", i);
        assert_int_equal(get_i32(odb, path), i);
    }
    tfx_assert_odb_ok(odb);
}

static void test_paths(void **state)
{
    struct odb *odb = ODB(state);
    struct odb_hkey h = mk(odb, "/a/b/c", ODB_TYPE_INT32, 1, 0);
    struct odb_hkey b = find(odb, "/a/b");
    const char *same[] = {"//a///b//c", "/a/./b/c", "/a/b/../b/c", "/./a/b/c/",
                          "/../a/b/c",  "/a/b/c//", "a/b/c"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        struct odb_hkey x;
        int err = odb_find(odb, ODB_ROOT, same[i], &x);
        if (err || !same_key(x, h)) {
            print_error("path '%s': %s\n", same[i], ut_strerror(err));
            fail();
        }
    }
    struct odb_hkey x;
    assert_int_equal(odb_find(odb, b, "c", &x), 0);
    assert_true(same_key(x, h));
    assert_int_equal(odb_find(odb, b, "../b/./c", &x), 0);
    assert_true(same_key(x, h));
    assert_int_equal(odb_find(odb, b, "..", &x), 0);
    assert_true(same_key(x, find(odb, "/a")));
    assert_int_equal(odb_find(odb, b, NULL, &x), 0);
    assert_true(same_key(x, b));
    assert_int_equal(odb_find(odb, b, "", &x), 0);
    assert_true(same_key(x, b));
    assert_int_equal(odb_find(odb, b, "/", &x), 0);
    assert_true(same_key(x, ODB_ROOT));
    assert_int_equal(odb_find(odb, ODB_ROOT, "/..", &x), 0);
    assert_true(same_key(x, ODB_ROOT));
    assert_int_equal(odb_find(odb, h, "..", &x), 0); /* ".." of a value is its dir */
    assert_true(same_key(x, b));

    /* Malformed: bad names in lookups are EPATH. */
    const char *bad[] = {"/a/b[0]", "/a/\x01", "/a/b/c\x7f"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(odb_find(odb, ODB_ROOT, bad[i], &x), ODB_EPATH);
    char n64[80] = "/a/";
    memset(n64 + 3, 'n', 64);
    n64[67] = '\0';
    assert_int_equal(odb_find(odb, ODB_ROOT, n64, &x), ODB_EPATH);
    n64[66] = '\0';
    assert_int_equal(odb_find(odb, ODB_ROOT, n64, &x), ODB_ENOKEY);
    assert_int_equal(odb_find(odb, ODB_ROOT, "/a/b/c/d", &x), ODB_ENOTDIR);
    assert_int_equal(odb_find(odb, ODB_ROOT, "/a/zz/c", &x), ODB_ENOKEY);

    /* Longest path: ODB_PATH_MAX bytes are accepted, one more is EPATH. */
    char path[ODB_PATH_MAX + 2];
    size_t len = 0;
    path[len++] = '/';
    while (len + 2 <= ODB_PATH_MAX) {
        path[len++] = 'p';
        if ((len % 60) == 0)
            path[len++] = '/';
    }
    while (len < ODB_PATH_MAX)
        path[len++] = 'q';
    path[len] = '\0';
    assert_int_equal(strlen(path), ODB_PATH_MAX);
    assert_int_equal(odb_create(odb, ODB_ROOT, path, ODB_TYPE_INT32, 1, 0, &x), 0);
    struct odb_hkey y;
    assert_int_equal(odb_find(odb, ODB_ROOT, path, &y), 0);
    assert_true(same_key(x, y));
    char back[ODB_PATH_MAX + 2];
    assert_int_equal(odb_key_path(odb, y, back, sizeof back), 0);
    assert_string_equal(back, path);
    path[len++] = 'r';
    path[len] = '\0';
    int32_t v = 0;
    size_t size = sizeof v;
    assert_int_equal(odb_find(odb, ODB_ROOT, path, &x), ODB_EPATH);
    assert_int_equal(odb_find_nofollow(odb, ODB_ROOT, path, &x), ODB_EPATH);
    assert_int_equal(odb_get(odb, ODB_ROOT, path, ODB_TYPE_INT32, &v, &size), ODB_EPATH);
    EXPECT_FAIL_UNCHANGED(odb, ODB_EPATH,
                          odb_set(odb, ODB_ROOT, path, ODB_TYPE_INT32, &v, 4, 1, ODB_SET_CREATE));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EPATH, odb_delete(odb, ODB_ROOT, path, true));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EPATH, odb_link(odb, ODB_ROOT, "/lnk", path));
    EXPECT_FAIL_UNCHANGED(odb, ODB_EPATH, odb_link(odb, ODB_ROOT, path, "/a"));
    tfx_assert_odb_ok(odb);
}

static void test_errmsg(void **state)
{
    struct odb *odb = ODB(state);
    mk(odb, "/em/val", ODB_TYPE_INT32, 1, 0);
    int32_t v;
    size_t size = sizeof v;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/em/missing_key", ODB_TYPE_INT32, &v, &size),
                     ODB_ENOKEY);
    assert_non_null(strstr(odb_errmsg(), "missing_key"));
    size = sizeof v;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/em/val", ODB_TYPE_INT32, &v, &size), 0);
    assert_string_equal(odb_errmsg(), "");
    size = sizeof v;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/em/val", ODB_TYPE_DOUBLE, &v, &size), ODB_ETYPE);
    assert_non_null(strstr(odb_errmsg(), "val"));
    assert_non_null(strstr(odb_errmsg(), "DOUBLE"));
}

/* ---------------------------------------------------------------------- */
/* Transactions                                                            */
/* ---------------------------------------------------------------------- */

static void test_txn_abort(void **state)
{
    struct odb *odb = ODB(state);
    mk(odb, "/tx/a", ODB_TYPE_INT32, 1, 0);
    mk(odb, "/tx/c/deep", ODB_TYPE_STRING, 1, 0);
    set_str(odb, "/tx/c/deep", "still here");
    mk(odb, "/tx/s", ODB_TYPE_STRING, 1, 16);
    set_str(odb, "/tx/s", "old");
    struct odb_hkey c = find(odb, "/tx/c");
    struct odb_hkey deep = find(odb, "/tx/c/deep");
    struct snap s = snap_take(odb);

    assert_int_equal(odb_txn_begin(odb), 0);
    set_i32(odb, "/tx/a", 1);
    mk(odb, "/tx/b/new", ODB_TYPE_DOUBLE, 100, 0);
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/tx/c", true), 0);
    struct odb_key_info info;
    assert_int_equal(odb_key_info(odb, c, &info), ODB_ESTALE); /* stale at once */
    set_str(odb, "/tx/s", "a much longer value than before, in a new block");
    assert_int_equal(odb_rename(odb, find(odb, "/tx/a"), "renamed"), 0);
    assert_int_equal(get_i32(odb, "/tx/renamed"), 1);
    assert_int_equal(odb_resize(odb, find(odb, "/tx/b/new"), 5000), 0);
    odb_txn_abort(odb);

    assert_unchanged(odb, &s);
    assert_int_equal(get_i32(odb, "/tx/a"), 0);
    assert_str(odb, "/tx/s", "old");
    assert_str(odb, "/tx/c/deep", "still here");
    struct odb_hkey h;
    assert_int_equal(odb_find(odb, ODB_ROOT, "/tx/b", &h), ODB_ENOKEY);
    /* The handles of the restored keys work again. */
    assert_int_equal(odb_key_info(odb, c, &info), 0);
    assert_int_equal(odb_key_info(odb, deep, &info), 0);
    tfx_assert_odb_ok(odb);
}

static void test_txn_commit_and_nesting(void **state)
{
    struct odb *odb = ODB(state);
    mk(odb, "/tx/a", ODB_TYPE_INT32, 1, 0);
    mk(odb, "/tx/gone", ODB_TYPE_INT32, 1, 0);
    struct odb_hkey gone = find(odb, "/tx/gone");
    uint64_t changes = odb_change_count(odb);

    assert_int_equal(odb_txn_begin(odb), 0);
    set_i32(odb, "/tx/a", 1);
    mk(odb, "/tx/outer", ODB_TYPE_INT32, 1, 0);
    assert_int_equal(odb_change_count(odb), changes); /* nothing committed yet */
    /* Inner transaction, aborted: only its part goes. */
    assert_int_equal(odb_txn_begin(odb), 0);
    set_i32(odb, "/tx/a", 2);
    mk(odb, "/tx/inner", ODB_TYPE_INT32, 1, 0);
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/tx/outer", false), 0);
    odb_txn_abort(odb);
    assert_int_equal(get_i32(odb, "/tx/a"), 1);
    struct odb_hkey h;
    assert_int_equal(odb_find(odb, ODB_ROOT, "/tx/inner", &h), ODB_ENOKEY);
    find(odb, "/tx/outer");
    /* Inner transaction, committed: kept (until the outer one ends). */
    assert_int_equal(odb_txn_begin(odb), 0);
    set_i32(odb, "/tx/a", 3);
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/tx/gone", false), 0);
    assert_int_equal(odb_txn_commit(odb), 0);
    assert_int_equal(odb_change_count(odb), changes);
    assert_int_equal(odb_txn_commit(odb), 0);
    /* Committed now (reclaiming the deleted key may count as more). */
    assert_true(odb_change_count(odb) > changes);
    assert_int_equal(get_i32(odb, "/tx/a"), 3);
    find(odb, "/tx/outer");
    struct odb_key_info info;
    assert_int_equal(odb_key_info(odb, gone, &info), ODB_ESTALE);

    /* A committed inner part is still undone by an outer abort. */
    struct snap s = snap_take(odb);
    assert_int_equal(odb_txn_begin(odb), 0);
    assert_int_equal(odb_txn_begin(odb), 0);
    set_i32(odb, "/tx/a", 4);
    mk(odb, "/tx/x/y/z", ODB_TYPE_INT32, 1, 0);
    assert_int_equal(odb_txn_commit(odb), 0);
    odb_txn_abort(odb);
    assert_unchanged(odb, &s);
    assert_int_equal(get_i32(odb, "/tx/a"), 3);

    /* A failed call inside a transaction undoes only itself. */
    assert_int_equal(odb_txn_begin(odb), 0);
    set_i32(odb, "/tx/a", 5);
    float f = 1;
    assert_int_equal(odb_set(odb, ODB_ROOT, "/tx/a", ODB_TYPE_FLOAT, &f, 4, 1, 0), ODB_ETYPE);
    assert_int_equal(odb_create(odb, ODB_ROOT, "/tx/a", ODB_TYPE_INT32, 1, 0, NULL), ODB_EEXIST);
    assert_int_equal(odb_txn_commit(odb), 0);
    assert_int_equal(get_i32(odb, "/tx/a"), 5);

    /* Reads inside a transaction see its changes; the lock is held. */
    assert_int_equal(odb_txn_begin(odb), 0);
    set_i32(odb, "/tx/a", 6);
    assert_int_equal(get_i32(odb, "/tx/a"), 6);
    assert_int_equal(ut_lock_top_rank(), UT_RANK_ODB);
    tfx_assert_odb_ok(odb); /* the check runs inside a transaction too */
    assert_int_equal(odb_txn_commit(odb), 0);
    assert_int_equal(ut_lock_top_rank(), 0);

    /* Nesting depth is bounded. */
    int depth = 0, err = 0;
    while (depth < 100 && (err = odb_txn_begin(odb)) == 0)
        depth++;
    assert_int_equal(err, UT_EINVAL);
    assert_int_equal(depth, ODB_MAX_TXN_DEPTH);
    while (depth-- > 0)
        assert_int_equal(odb_txn_commit(odb), 0);
    assert_int_equal(ut_lock_top_rank(), 0);
    tfx_assert_odb_ok(odb);
}

static void test_change_count(void **state)
{
    struct odb *odb = ODB(state);
    uint64_t c0 = odb_change_count(odb);
    mk(odb, "/cc/v", ODB_TYPE_INT32, 1, 0);
    assert_int_equal(odb_change_count(odb), c0 + 1);
    set_i32(odb, "/cc/v", 1);
    assert_int_equal(odb_change_count(odb), c0 + 2);
    /* Reads and failures are not changes. */
    (void)get_i32(odb, "/cc/v");
    assert_int_equal(odb_create(odb, ODB_ROOT, "/cc/v", ODB_TYPE_INT32, 1, 0, NULL), ODB_EEXIST);
    struct odb_stats st;
    assert_int_equal(odb_stats(odb, &st), 0);
    assert_int_equal(odb_change_count(odb), c0 + 2);
    assert_int_equal(st.n_changes, c0 + 2);
    assert_true(st.lock_acquired > 0);
    assert_int_equal(st.lock_owner_died, 0);
    assert_int_equal(st.n_rollbacks, 0);
}

/* An operation whose undo records exceed the log: ODB_ETOOBIG and no trace. */
static void test_too_big_for_undo_log(void **state)
{
    (void)state;
    char name[128];
    /* One element of a string array whose capacity exceeds the undo log:
     * an in-place write must log the old element first. */
    struct odb *odb = tfx_odb_create("api-wide", 2u << 20, 16, name, sizeof name);
    uint32_t cap = (uint32_t)odb->hdr->undo_size + 4096;
    struct odb_hkey wide = mk(odb, "/wide", ODB_TYPE_STRING, 1, cap);
    EXPECT_FAIL_UNCHANGED(odb, ODB_ETOOBIG, odb_set_elem(odb, wide, 0, ODB_TYPE_STRING, "x", 2));
    tfx_odb_destroy(odb, name);

    odb = tfx_odb_create("api-big", 2u << 20, 6144, name, sizeof name);

    /* A subtree whose copy logs more than the undo log holds: grown until
     * it does (each new key logs a few hundred bytes). */
    int n = 0, err = 0;
    while (err != ODB_ETOOBIG && n < 3000) {
        for (int k = 0; k < 250; k++, n++) {
            char path[32];
            snprintf(path, sizeof path, "/big/k%04d", n);
            mk(odb, path, ODB_TYPE_INT32, 1, 0);
        }
        err = odb_copy(odb, find(odb, "/big"), ODB_ROOT, "/big2");
        if (err == 0)
            assert_int_equal(odb_delete(odb, ODB_ROOT, "/big2", true), 0);
    }
    assert_int_equal(err, ODB_ETOOBIG);
    struct odb_hkey big = find(odb, "/big");
    EXPECT_FAIL_UNCHANGED(odb, ODB_ETOOBIG, odb_copy(odb, big, ODB_ROOT, "/big2"));
    assert_int_equal(odb_copy(odb, big, ODB_ROOT, "/big2"), ODB_ETOOBIG);
    assert_non_null(strstr(odb_errmsg(), "undo log"));
    /* Inside a transaction: the failed call is undone, earlier ones stay
     * until the caller decides. */
    assert_int_equal(odb_txn_begin(odb), 0);
    set_i32(odb, "/big/k0000", 1);
    assert_int_equal(odb_copy(odb, big, ODB_ROOT, "/big2"), ODB_ETOOBIG);
    assert_int_equal(get_i32(odb, "/big/k0000"), 1);
    struct odb_hkey h;
    assert_int_equal(odb_find(odb, ODB_ROOT, "/big2", &h), ODB_ENOKEY);
    odb_txn_abort(odb);
    assert_int_equal(get_i32(odb, "/big/k0000"), 0);
    /* Many in-place sets in one transaction also overflow it. */
    mk(odb, "/vals/x", ODB_TYPE_UINT8, 4000, 0);
    struct snap s = snap_take(odb);
    assert_int_equal(odb_txn_begin(odb), 0);
    static uint8_t buf[4000];
    int i = 0;
    err = 0;
    for (; i < 1000 && !err; i++) {
        memset(buf, i & 0xff, sizeof buf);
        err = odb_set(odb, ODB_ROOT, "/vals/x", ODB_TYPE_UINT8, buf, sizeof buf, 4000, 0);
    }
    assert_int_equal(err, ODB_ETOOBIG);
    assert_true(i > 2);
    /* The value is that of the last successful set. */
    uint8_t out[4000];
    size_t size = sizeof out;
    assert_int_equal(odb_get(odb, ODB_ROOT, "/vals/x", ODB_TYPE_UINT8, out, &size), 0);
    assert_int_equal(out[0], (i - 2) & 0xff);
    odb_txn_abort(odb);
    assert_unchanged(odb, &s);
    /* A recursive delete of the big tree is small: it works. */
    assert_int_equal(odb_delete(odb, ODB_ROOT, "/big", true), 0);
    struct odb_stats st;
    assert_int_equal(odb_stats(odb, &st), 0);
    assert_int_equal(st.n_keys, 3); /* root, /vals, /vals/x */
    tfx_assert_odb_ok(odb);
    tfx_odb_destroy(odb, name);
}

/* ---------------------------------------------------------------------- */
/* White-box: odb_check finds damage and never crashes                     */
/* ---------------------------------------------------------------------- */

struct scratch {
    struct odb *odb;
    char name[128];
    uint8_t *saved; /* copy of the segment past the ut_shm_header */
    size_t saved_size;
};

static void scratch_open(struct scratch *s)
{
    s->odb = tfx_odb_create("api-corrupt", (size_t)512 * 1024, 128, s->name, sizeof s->name);
    struct odb *odb = s->odb;
    mk(odb, "/d1/v", ODB_TYPE_INT32, 3, 0);
    mk(odb, "/d1/s", ODB_TYPE_STRING, 2, 16);
    mk(odb, "/d1/sub/b", ODB_TYPE_BOOL, 2, 0);
    mk(odb, "/d2/x", ODB_TYPE_DOUBLE, 1, 0);
    mk(odb, "/d2/y", ODB_TYPE_UINT8, 10, 0);
    assert_int_equal(odb_link(odb, ODB_ROOT, "/d2/l", "/d1"), 0);
    set_str(odb, "/d1/s", "text");
    tfx_assert_odb_ok(odb);
    s->saved_size = odb->shm.size;
    s->saved = malloc(s->saved_size);
    assert_non_null(s->saved);
    memcpy(s->saved, odb->base, s->saved_size);
}

static void scratch_restore(struct scratch *s)
{
    /* The lock (its mutex word) is not ours to overwrite. */
    size_t from = sizeof(struct ut_shm_header) + sizeof(struct ut_shlock);
    memcpy(s->odb->base + from, s->saved + from, s->saved_size - from);
    tfx_assert_odb_ok(s->odb);
}

static void scratch_close(struct scratch *s)
{
    tfx_odb_destroy(s->odb, s->name);
    free(s->saved);
}

static uint32_t slot_of(struct odb *odb, const char *path)
{
    struct odb_hkey h;
    assert_int_equal(odb_find_nofollow(odb, ODB_ROOT, path, &h), 0);
    return h.idx;
}

#define assert_corrupt(odb) assert_corrupt_at((odb), __FILE__, __LINE__)
static void assert_corrupt_at(struct odb *odb, const char *file, int line)
{
    char report[512];
    memset(report, 0, sizeof report);
    int err = odb_check(odb, report, sizeof report);
    if (err != UT_ECORRUPT || report[0] == '\0') {
        print_error("odb_check: %d (%s), report '%s'\n", err, ut_strerror(err), report);
        _fail(file, line);
    }
    /* Also without a report buffer. */
    if (odb_check(odb, NULL, 0) != UT_ECORRUPT)
        _fail(file, line);
}

static void test_check_finds_damage(void **state)
{
    (void)state;
    struct scratch s;
    scratch_open(&s);
    struct odb *odb = s.odb;
    struct odb_header *hdr = odb->hdr;
    uint32_t v = slot_of(odb, "/d1/v");
    uint32_t str = slot_of(odb, "/d1/s");
    uint32_t b = slot_of(odb, "/d1/sub/b");
    uint32_t d1 = slot_of(odb, "/d1");
    uint32_t d2 = slot_of(odb, "/d2");
    uint32_t sub = slot_of(odb, "/d1/sub");
    struct odb_key_slot *keys = odb->keys;

    /* A key's parent link. */
    keys[v].parent = d2;
    assert_corrupt(odb);
    scratch_restore(&s);
    keys[v].parent = 5000;
    assert_corrupt(odb);
    scratch_restore(&s);
    /* Sibling links: a cycle and a dangling one. */
    keys[v].next_sib = v;
    assert_corrupt(odb);
    scratch_restore(&s);
    keys[str].prev_sib = ODB_NIL;
    assert_corrupt(odb);
    scratch_restore(&s);
    keys[d1].first_child = 100000;
    assert_corrupt(odb);
    scratch_restore(&s);
    keys[d1].n_children++;
    assert_corrupt(odb);
    scratch_restore(&s);
    keys[d1].last_child = v;
    assert_corrupt(odb);
    scratch_restore(&s);
    /* A subtree linked into two directories. */
    keys[d2].first_child = keys[d1].first_child;
    assert_corrupt(odb);
    scratch_restore(&s);

    /* A heap block's magic, order, owner. */
    struct odb_block *blk = (struct odb_block *)(void *)(odb->base + keys[v].data);
    blk->magic = 0x1234;
    assert_corrupt(odb);
    scratch_restore(&s);
    blk->magic = ODB_BLOCK_FREE;
    assert_corrupt(odb);
    scratch_restore(&s);
    blk->order = 200;
    assert_corrupt(odb);
    scratch_restore(&s);
    blk->owner = str;
    assert_corrupt(odb);
    scratch_restore(&s);
    keys[v].data = keys[str].data; /* two keys, one block */
    assert_corrupt(odb);
    scratch_restore(&s);
    keys[v].data = 12345; /* not a block */
    assert_corrupt(odb);
    scratch_restore(&s);
    keys[v].n_elem = 100000; /* value larger than its block */
    assert_corrupt(odb);
    scratch_restore(&s);
    hdr->heap_free_bytes += 32;
    assert_corrupt(odb);
    scratch_restore(&s);
    for (unsigned k = 0; k < ODB_HEAP_ORDERS; k++) {
        if (hdr->free_block[k] != ODB_NIL) {
            hdr->free_block[k] = ODB_NIL; /* a free block lost from its list */
            break;
        }
    }
    assert_corrupt(odb);
    scratch_restore(&s);

    /* Hash chains: a cycle, a key missing, a key in the wrong bucket. */
    uint32_t bucket = odb__bucket(odb, keys[v].parent, keys[v].name_hash);
    keys[v].hash_next = v;
    assert_corrupt(odb);
    /* Lookups still terminate on the damaged chain. */
    struct odb_hkey h;
    int err = odb_find(odb, ODB_ROOT, "/d1/not_there", &h);
    assert_true(err == ODB_ENOKEY || err == UT_ECORRUPT);
    scratch_restore(&s);
    /* v unlinked from its chain: missing. */
    uint32_t *link = &odb->buckets[bucket];
    while (*link != v)
        link = &keys[*link].hash_next;
    *link = keys[v].hash_next;
    assert_corrupt(odb);
    /* ... and put into another bucket: in the wrong one. */
    uint32_t other = (bucket + 1) & (hdr->n_buckets - 1);
    keys[v].hash_next = odb->buckets[other];
    odb->buckets[other] = v;
    assert_corrupt(odb);
    scratch_restore(&s);
    keys[v].name_hash ^= 1;
    assert_corrupt(odb);
    scratch_restore(&s);
    odb->buckets[0] = 0; /* the root hashed */
    assert_corrupt(odb);
    scratch_restore(&s);

    /* Key contents. */
    keys[v].type = 200;
    assert_corrupt(odb);
    scratch_restore(&s);
    keys[v].gen = 0;
    assert_corrupt(odb);
    scratch_restore(&s);
    keys[v].name[1] = '/';
    keys[v].name_len = 2;
    assert_corrupt(odb);
    scratch_restore(&s);
    keys[v].name_len = 0;
    assert_corrupt(odb);
    scratch_restore(&s);
    keys[v].elem_size = 8; /* not an INT32 size */
    assert_corrupt(odb);
    scratch_restore(&s);
    keys[sub].data = keys[v].data; /* a directory with a value */
    assert_corrupt(odb);
    scratch_restore(&s);
    char *sval = odb__heap_payload(odb, keys[str].data);
    assert_non_null(sval);
    memset(sval, 'x', 16); /* unterminated string element */
    assert_corrupt(odb);
    scratch_restore(&s);
    uint8_t *bval = odb__heap_payload(odb, keys[b].data);
    bval[1] = 2; /* a BOOL neither 0 nor 1 */
    assert_corrupt(odb);
    scratch_restore(&s);

    /* Header counters and lists. */
    hdr->n_keys++;
    assert_corrupt(odb);
    scratch_restore(&s);
    hdr->free_key = 0;
    assert_corrupt(odb);
    scratch_restore(&s);
    keys[hdr->free_key].next_sib = hdr->free_key; /* free list cycle */
    assert_corrupt(odb);
    scratch_restore(&s);
    keys[hdr->free_key].type = ODB_TYPE_INT32; /* a free slot in use */
    assert_corrupt(odb);
    scratch_restore(&s);
    hdr->garbage = v;
    assert_corrupt(odb);
    scratch_restore(&s);
    hdr->undo_used = 64; /* a log outside any transaction */
    assert_corrupt(odb);
    hdr->undo_used = 0;
    scratch_restore(&s);
    keys[0].type = ODB_TYPE_INT32;
    assert_corrupt(odb);
    scratch_restore(&s);
    scratch_close(&s);
}

/* Random damage anywhere in the key table, hash table and heap: odb_check
 * always returns (a report or success), never crashes or loops. */
static void test_check_survives_random_damage(void **state)
{
    (void)state;
    struct scratch s;
    scratch_open(&s);
    struct odb *odb = s.odb;
    struct odb_header *hdr = odb->hdr;
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    struct {
        uint64_t off, size;
    } regions[] = {
        {hdr->buckets_off, (uint64_t)hdr->n_buckets * 4},
        {hdr->keys_off, (uint64_t)hdr->max_keys * sizeof(struct odb_key_slot)},
        {hdr->heap_off, hdr->heap_size < 8192 ? hdr->heap_size : 8192},
        /* The mutable header fields (counters, free lists); the layout
         * numbers are fixed at creation and checked at open. */
        {sizeof(struct ut_shm_header) + offsetof(struct odb_header, n_keys),
         offsetof(struct odb_header, undo_used) - offsetof(struct odb_header, n_keys)},
    };
    int n_corrupt = 0;
    int64_t start = ut_now_ns();
    for (int round = 0; round < 2000; round++) {
        int r = round % 4;
        int n_bytes = 1 + round % 7;
        for (int k = 0; k < n_bytes; k++) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            uint64_t off = regions[r].off + rng % regions[r].size;
            /* Mostly small values and NIL-like patterns, which look valid. */
            uint8_t val = (uint8_t)(rng >> 40);
            if ((rng >> 32) % 3 == 0)
                val = (uint8_t)((rng >> 48) % 4);
            odb->base[off] = val;
        }
        char report[256];
        int err = odb_check(odb, report, sizeof report);
        assert_true(err == 0 || err == UT_ECORRUPT);
        if (err)
            n_corrupt++;
        size_t from = sizeof(struct ut_shm_header) + sizeof(struct ut_shlock);
        memcpy(odb->base + from, s.saved + from, s.saved_size - from);
    }
    assert_true(n_corrupt > 100);
    assert_true((ut_now_ns() - start) / 1000000000 < 60);
    tfx_assert_odb_ok(odb);
    scratch_close(&s);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_open_params, cleanup),
        cmocka_unit_test_teardown(test_open_wrong_kind, cleanup),
        cmocka_unit_test_teardown(test_open_creator_busy, cleanup),
        T(test_out_of_memory),
        cmocka_unit_test_teardown(test_type_names, cleanup),
        T(test_create_every_type),
        T(test_create_intermediate_dirs),
        T(test_create_errors),
        cmocka_unit_test_teardown(test_create_keys_full, cleanup),
        cmocka_unit_test_teardown(test_heap_full, cleanup),
        T(test_delete),
        T(test_delete_access),
        T(test_stale_handles),
        T(test_get_set_basic),
        T(test_get_set_errors),
        T(test_set_create),
        T(test_strings),
        T(test_elements),
        T(test_resize),
        T(test_key_info),
        T(test_key_path),
        T(test_dir_list),
        T(test_rename),
        T(test_links),
        T(test_copy),
        T(test_set_mode),
        T(test_case_insensitive),
        T(test_paths),
        T(test_errmsg),
        T(test_txn_abort),
        T(test_txn_commit_and_nesting),
        T(test_change_count),
        cmocka_unit_test_teardown(test_too_big_for_undo_log, cleanup),
        cmocka_unit_test_teardown(test_check_finds_damage, cleanup),
        cmocka_unit_test_teardown(test_check_survives_random_damage, cleanup),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
