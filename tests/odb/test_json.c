/*
 * tests/odb/test_json.c - JSON export/import and durable save/load of the
 * ODB (odb/json.c, odb/save.c; the format is docs/ODB_JSON.md).
 *
 * Every test gets a fresh 4 MiB ODB with a unique shm name
 * ("/aurum-test-json-<pid>-<n>") and a fresh mkdtemp directory; teardown
 * destroys both. "Unchanged" is checked by comparing full exports (values,
 * shapes, modes and mtimes) before and after, plus odb_check.
 *
 * Covered: round trip of every type and shape; type inference without
 * metadata; merging into existing keys; all-or-nothing import (ODB_ETYPE,
 * ODB_EACCESS, ODB_ETOOBIG and many malformed documents change nothing);
 * save/load of .json and .json.gz (mode 0600, no temp file left, failing
 * write/fsync keep the old file); allocation-failure sweeps over import,
 * save and load.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "odb/odb.h"

#define SEG_SIZE  (4u << 20)
#define SWEEP_MAX 100000 /* bound of every allocation-failure sweep */

/* ---------------------------------------------------------------------- */
/* Fixture and helpers                                                     */
/* ---------------------------------------------------------------------- */

struct fx {
    struct odb *odb;  /* the test's main ODB */
    char name[128];   /* its shm name */
    struct odb *odb2; /* a second ODB, opened on demand (open2) */
    char name2[128];
    char dir[PATH_MAX]; /* temp directory, removed in teardown */
};

#define OK(e) ok_at((e), #e, __FILE__, __LINE__)
static void ok_at(int err, const char *what, const char *file, int line)
{
    if (err) {
        print_error("%s:%d: %s = %d (%s): %s\n", file, line, what, err, ut_strerror(err),
                    odb_errmsg());
        _fail(file, line);
    }
}

static struct odb *open_odb(char *name, size_t size)
{
    static unsigned counter;
    (void)snprintf(name, size, "/aurum-test-json-%d-%u", (int)getpid(), ++counter);
    (void)odb_destroy(name);
    struct odb_params p = {.size_bytes = SEG_SIZE};
    struct odb *odb = NULL;
    OK(odb_open(name, ODB_OPEN_CREATE, &p, &odb));
    return odb;
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->odb = open_odb(fx->name, sizeof fx->name);
    const char *tmp = getenv("TMPDIR");
    (void)snprintf(fx->dir, sizeof fx->dir, "%s/aurum-test-json-XXXXXX",
                   tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(fx->dir));
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    ut_alloc_fail_after(0);
    odb_close(fx->odb);
    odb_destroy(fx->name);
    if (fx->odb2) {
        odb_close(fx->odb2);
        odb_destroy(fx->name2);
    }
    DIR *d = opendir(fx->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[PATH_MAX + 300];
            (void)snprintf(p, sizeof p, "%s/%s", fx->dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(fx->dir);
    free(fx);
    return 0;
}

static struct odb *open2(struct fx *fx)
{
    if (!fx->odb2)
        fx->odb2 = open_odb(fx->name2, sizeof fx->name2);
    return fx->odb2;
}

static void path_in(const struct fx *fx, const char *file, char *out, size_t size)
{
    (void)snprintf(out, size, "%s/%s", fx->dir, file);
}

/* Export of the whole ODB as a malloc'ed string (the test frees it). */
static char *export_all(struct odb *odb)
{
    char *s = NULL;
    size_t len = 0;
    OK(odb_json_export(odb, ODB_ROOT, &s, &len));
    assert_int_equal(strlen(s), len);
    char *copy = strdup(s);
    ut_free(s);
    assert_non_null(copy);
    return copy;
}

static void assert_check(struct odb *odb)
{
    char report[512] = "";
    int err = odb_check(odb, report, sizeof report);
    if (err)
        print_error("odb_check: %s\n", report);
    assert_int_equal(err, 0);
}

static int import_str(struct odb *odb, const char *json)
{
    return odb_json_import(odb, ODB_ROOT, json, strlen(json));
}

/* Reads a whole file into a malloc'ed buffer. */
static char *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            assert_non_null(nb);
            buf = nb;
        }
    }
    (void)fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Number of entries in the temp directory whose name contains `part`. */
static int count_files(const struct fx *fx, const char *part)
{
    DIR *d = opendir(fx->dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 && strstr(e->d_name, part))
            n++;
    closedir(d);
    return n;
}

#define SET(odb, path, type, arr)                                                                  \
    OK(odb_set((odb), ODB_ROOT, (path), (type), (arr), sizeof(arr),                                \
               (uint32_t)(sizeof(arr) / sizeof((arr)[0])), ODB_SET_CREATE))

static struct odb_hkey find(struct odb *odb, const char *path)
{
    struct odb_hkey h;
    OK(odb_find_nofollow(odb, ODB_ROOT, path, &h));
    return h;
}

static struct odb_key_info info_of(struct odb *odb, const char *path)
{
    struct odb_key_info ki;
    OK(odb_key_info(odb, find(odb, path), &ki));
    return ki;
}

/* Fills an ODB with every type at its extremes, strings, links, nested
 * and empty directories and unusual modes. */
static void populate(struct odb *odb)
{
    int8_t i8[] = {INT8_MIN, -1, 0, INT8_MAX};
    uint8_t u8[] = {0, 1, UINT8_MAX};
    int16_t i16[] = {INT16_MIN, 0, INT16_MAX};
    uint16_t u16[] = {0, UINT16_MAX};
    int32_t i32[] = {INT32_MIN, -7, INT32_MAX};
    uint32_t u32[] = {0, UINT32_MAX};
    int64_t i64[] = {INT64_MIN, -(INT64_C(1) << 53) - 1, (INT64_C(1) << 53) + 1, INT64_MAX};
    uint64_t u64[] = {0, (UINT64_C(1) << 53) + 1, (uint64_t)INT64_MAX, (uint64_t)INT64_MAX + 1,
                      UINT64_MAX};
    float f32[] = {0.1f,         -0.0f,       1.0f, FLT_MAX,  -FLT_MAX, FLT_MIN,
                   FLT_TRUE_MIN, 3.14159274f, NAN,  INFINITY, -INFINITY};
    double f64[] = {0.1,    -0.0, 1.0,           DBL_MAX, -DBL_MAX, DBL_MIN,
                    5e-324, 1e21, 123456789.125, NAN,     INFINITY, -INFINITY};
    uint8_t bools[] = {1, 0, 1};
    SET(odb, "/Ints/i8", ODB_TYPE_INT8, i8);
    SET(odb, "/Ints/u8", ODB_TYPE_UINT8, u8);
    SET(odb, "/Ints/i16", ODB_TYPE_INT16, i16);
    SET(odb, "/Ints/u16", ODB_TYPE_UINT16, u16);
    SET(odb, "/Ints/i32", ODB_TYPE_INT32, i32);
    SET(odb, "/Ints/u32", ODB_TYPE_UINT32, u32);
    SET(odb, "/Ints/i64", ODB_TYPE_INT64, i64);
    SET(odb, "/Ints/u64", ODB_TYPE_UINT64, u64);
    SET(odb, "/Reals/f32", ODB_TYPE_FLOAT, f32);
    SET(odb, "/Reals/f64", ODB_TYPE_DOUBLE, f64);
    SET(odb, "/Bools", ODB_TYPE_BOOL, bools);
    int32_t one = -42;
    OK(odb_set(odb, ODB_ROOT, "/Scalars/int", ODB_TYPE_INT32, &one, sizeof one, 1, ODB_SET_CREATE));
    uint64_t big = UINT64_MAX - 5;
    OK(odb_set(odb, ODB_ROOT, "/Scalars/u64", ODB_TYPE_UINT64, &big, sizeof big, 1,
               ODB_SET_CREATE));
    double nan1 = NAN;
    OK(odb_set(odb, ODB_ROOT, "/Scalars/nan", ODB_TYPE_DOUBLE, &nan1, sizeof nan1, 1,
               ODB_SET_CREATE));
    uint8_t t = 1;
    OK(odb_set(odb, ODB_ROOT, "/Scalars/bool", ODB_TYPE_BOOL, &t, 1, 1, ODB_SET_CREATE));
    /* Strings: UTF-8 (2-, 3- and 4-byte), quotes, backslashes, controls. */
    char s[80] =
        "h\xc3\xa9llo \"quoted\" \\back\\ /slash\n\ttab \x01\x1f \xe2\x82\xac \xf0\x9d\x84\x9e";
    OK(odb_set(odb, ODB_ROOT, "/Strings/s", ODB_TYPE_STRING, s, sizeof s, 1, ODB_SET_CREATE));
    char empty[32] = "";
    OK(odb_set(odb, ODB_ROOT, "/Strings/empty", ODB_TYPE_STRING, empty, sizeof empty, 1,
               ODB_SET_CREATE));
    char arr[3][40] = {"one", "", "th\"ree \xc3\xbc"};
    OK(odb_set(odb, ODB_ROOT, "/Strings/arr", ODB_TYPE_STRING, arr, sizeof arr, 3, ODB_SET_CREATE));
    char exact[6] = "exact";
    OK(odb_set(odb, ODB_ROOT, "/Strings/exact", ODB_TYPE_STRING, exact, sizeof exact, 1,
               ODB_SET_CREATE));
    OK(odb_link(odb, ODB_ROOT, "/Links/to_s", "/Strings/s"));
    OK(odb_link(odb, ODB_ROOT, "/Links/to_dir", "/Ints"));
    OK(odb_link(odb, ODB_ROOT, "/Links/dangling", "/No/Such/Key"));
    int32_t deep = 99;
    OK(odb_set(odb, ODB_ROOT, "/Nested/a/b/c/d/e/value", ODB_TYPE_INT32, &deep, sizeof deep, 1,
               ODB_SET_CREATE));
    OK(odb_create(odb, ODB_ROOT, "/Nested/empty", ODB_TYPE_DIR, 0, 0, NULL));
    OK(odb_create(odb, ODB_ROOT, "/Empty", ODB_TYPE_DIR, 0, 0, NULL));
    OK(odb_create(odb, ODB_ROOT, "/Modes/ro_dir/child", ODB_TYPE_UINT16, 2, 0, NULL));
    OK(odb_create(odb, ODB_ROOT, "/Modes/read_only", ODB_TYPE_INT32, 1, 0, NULL));
    OK(odb_create(odb, ODB_ROOT, "/Modes/no_access", ODB_TYPE_DOUBLE, 1, 0, NULL));
    OK(odb_create(odb, ODB_ROOT, "/Mixed Case Name with spaces & symbols!", ODB_TYPE_INT8, 1, 0,
                  NULL));
    char name63[80];
    memset(name63, 'n', 63);
    name63[63] = '\0';
    OK(odb_create(odb, ODB_ROOT, name63, ODB_TYPE_BOOL, 1, 0, NULL));
    OK(odb_set_mode(odb, find(odb, "/Modes/ro_dir"), ODB_MODE_READ | ODB_MODE_DELETE));
    OK(odb_set_mode(odb, find(odb, "/Modes/read_only"), ODB_MODE_READ));
    OK(odb_set_mode(odb, find(odb, "/Modes/no_access"), 0));
}

/* Compares every value and key info of the populated tree in two ODBs. */
static void compare_trees(struct odb *a, struct odb *b, const char *path)
{
    struct odb_hkey ha = find(a, path), hb = find(b, path);
    struct odb_key_info ia, ib;
    OK(odb_key_info(a, ha, &ia));
    OK(odb_key_info(b, hb, &ib));
    assert_int_equal(ia.type, ib.type);
    assert_int_equal(ia.n_elem, ib.n_elem);
    assert_int_equal(ia.elem_size, ib.elem_size);
    assert_int_equal(ia.mode, ib.mode);
    assert_string_equal(ia.name, ib.name);
    if (ia.type != ODB_TYPE_DIR) {
        assert_true(ia.mtime_ns == ib.mtime_ns);
    }
    if (ia.type == ODB_TYPE_DIR) {
        struct odb_dirent *ea, *eb;
        size_t na, nb;
        OK(odb_dir_list(a, ha, &ea, &na));
        OK(odb_dir_list(b, hb, &eb, &nb));
        assert_int_equal(na, nb);
        for (size_t i = 0; i < na; i++) {
            assert_string_equal(ea[i].name, eb[i].name);
            char child[ODB_PATH_MAX + 1];
            (void)snprintf(child, sizeof child, "%s/%s", strcmp(path, "/") != 0 ? path : "",
                           ea[i].name);
            compare_trees(a, b, child);
        }
        odb_dirents_free(ea);
        odb_dirents_free(eb);
        return;
    }
    if (ia.type == ODB_TYPE_LINK) {
        char la[ODB_PATH_MAX + 1], lb[ODB_PATH_MAX + 1];
        size_t sa = sizeof la, sb = sizeof lb;
        OK(odb_get(a, ha, NULL, ODB_TYPE_LINK, la, &sa));
        OK(odb_get(b, hb, NULL, ODB_TYPE_LINK, lb, &sb));
        assert_string_equal(la, lb);
        return;
    }
    if (!(ia.mode & ODB_MODE_READ))
        return;
    size_t size = (size_t)ia.n_elem * ia.elem_size;
    char *va = malloc(size), *vb = malloc(size);
    assert_non_null(va);
    assert_non_null(vb);
    size_t sa = size, sb = size;
    OK(odb_get(a, ha, NULL, ia.type, va, &sa));
    OK(odb_get(b, hb, NULL, ib.type, vb, &sb));
    assert_int_equal(sa, sb);
    assert_memory_equal(va, vb, sa);
    free(va);
    free(vb);
}

/* ---------------------------------------------------------------------- */
/* Round trip                                                              */
/* ---------------------------------------------------------------------- */

static void test_roundtrip_all_types(void **state)
{
    struct fx *fx = *state;
    populate(fx->odb);
    char *a = export_all(fx->odb);
    struct odb *odb2 = open2(fx);
    OK(import_str(odb2, a));
    assert_check(odb2);
    char *b = export_all(odb2);
    assert_string_equal(a, b);
    compare_trees(fx->odb, odb2, "/");
    /* Importing the same document again changes nothing. */
    uint64_t changes = odb_change_count(odb2);
    OK(import_str(odb2, a));
    char *c = export_all(odb2);
    assert_string_equal(a, c);
    assert_true(odb_change_count(odb2) - changes <= 1);
    assert_check(odb2);
    free(a);
    free(b);
    free(c);
}

static void test_export_format(void **state)
{
    struct fx *fx = *state;
    populate(fx->odb);
    char *s = export_all(fx->odb);
    /* Shortest round-trip reals, "0x" for UINT64 past INT64_MAX, strings
     * for non-finite reals, metadata before each value. */
    assert_non_null(strstr(
        s, "\"f32\": [0.1, -0.0, 1.0, 3.4028235e+38, -3.4028235e+38, 1.1754944e-38, 1.4013e-45, "
           "3.1415927, \"NaN\""));
    assert_non_null(strstr(s, "\"f64\": [0.1, -0.0, 1.0, 1.7976931348623157e+308"));
    assert_non_null(strstr(s, "\"NaN\", \"Infinity\", \"-Infinity\"]"));
    assert_non_null(strstr(s, "\"0x8000000000000000\", \"0xffffffffffffffff\"]"));
    assert_non_null(strstr(s, "9223372036854775807, "));
    assert_non_null(strstr(s, "[-9223372036854775808, "));
    assert_non_null(strstr(s, "\"u64\": \"0xfffffffffffffffa\""));
    assert_non_null(strstr(s, "\"i8/key\": {\"type\": \"INT8\", \"n\": 4, \"mode\": 7, "));
    assert_non_null(
        strstr(s, "\"arr/key\": {\"type\": \"STRING\", \"n\": 3, \"size\": 40, \"mode\": 7"));
    assert_non_null(strstr(s, "\"to_s\": \"/Strings/s\""));
    assert_non_null(strstr(s, "\"Empty\": {}"));
    assert_non_null(strstr(s, "\\\"quoted\\\" \\\\back\\\\ /slash\\n\\ttab \\u0001\\u001f "));
    assert_non_null(strstr(s, "\"Bools\": [true, false, true]"));
    free(s);

    /* A value key exports as a one-member document. */
    char *v = NULL;
    OK(odb_json_export(fx->odb, find(fx->odb, "/Scalars/int"), &v, NULL));
    assert_non_null(strstr(v, "\"int\": -42"));
    assert_non_null(strstr(v, "\"int/key\": {\"type\": \"INT32\""));
    /* ... which imports into a directory as that key. */
    OK(odb_create(fx->odb, ODB_ROOT, "/Copy", ODB_TYPE_DIR, 0, 0, NULL));
    OK(odb_json_import(fx->odb, find(fx->odb, "/Copy"), v, strlen(v)));
    int32_t x = 0;
    size_t sz = sizeof x;
    OK(odb_get(fx->odb, ODB_ROOT, "/Copy/int", ODB_TYPE_INT32, &x, &sz));
    assert_int_equal(x, -42);
    ut_free(v);

    /* A handle to a link to a directory exports the directory. */
    char *l = NULL, *d = NULL;
    OK(odb_json_export(fx->odb, find(fx->odb, "/Links/to_dir"), &l, NULL));
    OK(odb_json_export(fx->odb, find(fx->odb, "/Ints"), &d, NULL));
    assert_string_equal(l, d);
    ut_free(l);
    ut_free(d);

    /* Export does not count as a change. */
    uint64_t changes = odb_change_count(fx->odb);
    s = export_all(fx->odb);
    free(s);
    assert_true(odb_change_count(fx->odb) == changes);
}

static void test_export_non_utf8_and_stale(void **state)
{
    struct fx *fx = *state;
    /* Bytes that are not UTF-8 are written as \u00XX (read as Latin-1). */
    char s[32] = "caf\xe9 \xc3\x28 \xed\xa0\x80";
    OK(odb_set(fx->odb, ODB_ROOT, "/s", ODB_TYPE_STRING, s, sizeof s, 1, ODB_SET_CREATE));
    char *e = export_all(fx->odb);
    assert_non_null(strstr(e, "\"caf\\u00e9 \\u00c3( \\u00ed\\u00a0\\u0080\""));
    struct odb *odb2 = open2(fx);
    OK(import_str(odb2, e));
    char back[64];
    size_t sz = sizeof back;
    OK(odb_get(odb2, ODB_ROOT, "/s", ODB_TYPE_STRING, back, &sz));
    assert_string_equal(back, "caf\xc3\xa9 \xc3\x83( \xc3\xad\xc2\xa0\xc2\x80");
    free(e);

    struct odb_hkey h;
    OK(odb_create(fx->odb, ODB_ROOT, "/gone", ODB_TYPE_DIR, 0, 0, &h));
    OK(odb_delete(fx->odb, ODB_ROOT, "/gone", false));
    char *out = NULL;
    assert_int_equal(odb_json_export(fx->odb, h, &out, NULL), ODB_ESTALE);
    assert_null(out);
    assert_int_equal(odb_json_import(fx->odb, h, "{}", 2), ODB_ESTALE);
}

/* ---------------------------------------------------------------------- */
/* Import semantics                                                        */
/* ---------------------------------------------------------------------- */

static void test_import_infer(void **state)
{
    struct fx *fx = *state;
    struct odb *odb = fx->odb;
    const char *doc = "{\"i\": 5, \"big\": 5000000000, \"neg\": -2147483649, \"d\": 1.5,"
                      " \"b\": true, \"s\": \"hello\","
                      " \"long\": \"0123456789012345678901234567890123456789\","
                      " \"arr\": [1, 2, 3], \"mix\": [1, 2.5], \"wide\": [1, 3000000000],"
                      " \"sarr\": [\"a\", \"bb\"], \"barr\": [false, true],"
                      " \"hex\": \"0x10\", \"dir\": {\"x\": -1, \"sub\": {}}, \"empty\": {},"
                      " \"one\": [7]}";
    OK(import_str(odb, doc));
    assert_check(odb);
    struct {
        const char *path;
        enum odb_type type;
        uint32_t n, size;
    } want[] = {
        {"/i", ODB_TYPE_INT32, 1, 4},      {"/big", ODB_TYPE_INT64, 1, 8},
        {"/neg", ODB_TYPE_INT64, 1, 8},    {"/d", ODB_TYPE_DOUBLE, 1, 8},
        {"/b", ODB_TYPE_BOOL, 1, 1},       {"/s", ODB_TYPE_STRING, 1, 32},
        {"/long", ODB_TYPE_STRING, 1, 64}, {"/arr", ODB_TYPE_INT32, 3, 4},
        {"/mix", ODB_TYPE_DOUBLE, 2, 8},   {"/wide", ODB_TYPE_INT64, 2, 8},
        {"/sarr", ODB_TYPE_STRING, 2, 32}, {"/barr", ODB_TYPE_BOOL, 2, 1},
        {"/hex", ODB_TYPE_STRING, 1, 32},  {"/dir", ODB_TYPE_DIR, 2, 0},
        {"/dir/x", ODB_TYPE_INT32, 1, 4},  {"/dir/sub", ODB_TYPE_DIR, 0, 0},
        {"/empty", ODB_TYPE_DIR, 0, 0},    {"/one", ODB_TYPE_INT32, 1, 4},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        struct odb_key_info ki = info_of(odb, want[i].path);
        if (ki.type != want[i].type || ki.n_elem != want[i].n || ki.elem_size != want[i].size)
            print_error("%s: %s n=%u size=%u\n", want[i].path, odb_type_name(ki.type), ki.n_elem,
                        ki.elem_size);
        assert_int_equal(ki.type, want[i].type);
        assert_int_equal(ki.n_elem, want[i].n);
        assert_int_equal(ki.elem_size, want[i].size);
        assert_int_equal(ki.mode, ODB_MODE_ALL);
    }
    int64_t big = 0;
    size_t sz = sizeof big;
    OK(odb_get(odb, ODB_ROOT, "/big", ODB_TYPE_INT64, &big, &sz));
    assert_true(big == INT64_C(5000000000));
    double mix[2];
    sz = sizeof mix;
    OK(odb_get(odb, ODB_ROOT, "/mix", ODB_TYPE_DOUBLE, mix, &sz));
    assert_true(mix[0] == 1.0 && mix[1] == 2.5);
    char sarr[2][32];
    sz = sizeof sarr;
    OK(odb_get(odb, ODB_ROOT, "/sarr", ODB_TYPE_STRING, sarr, &sz));
    assert_string_equal(sarr[0], "a");
    assert_string_equal(sarr[1], "bb");
}

static void test_import_metadata_conversions(void **state)
{
    struct fx *fx = *state;
    struct odb *odb = fx->odb;
    /* Integers given as reals with integral values and as "0x" strings;
     * reals given as integers; bools as 0/1; omitted "n"/"size". */
    const char *doc = "{\"a/key\": {\"type\": \"uint8\"}, \"a\": [255.0, \"0xff\", 0],"
                      " \"f/key\": {\"type\": \"FLOAT\", \"n\": 2}, \"f\": [1, \"NaN\"],"
                      " \"b/key\": {\"type\": \"BOOL\"}, \"b\": [0, 1, true],"
                      " \"s/key\": {\"type\": \"STRING\", \"size\": 10, \"future\": 1}, "
                      " \"s\": \"abc\"}";
    OK(import_str(odb, doc));
    uint8_t a[3];
    size_t sz = sizeof a;
    OK(odb_get(odb, ODB_ROOT, "/a", ODB_TYPE_UINT8, a, &sz));
    assert_int_equal(a[0], 255);
    assert_int_equal(a[1], 255);
    assert_int_equal(a[2], 0);
    float f[2];
    sz = sizeof f;
    OK(odb_get(odb, ODB_ROOT, "/f", ODB_TYPE_FLOAT, f, &sz));
    assert_true(f[0] == 1.0f && isnan(f[1]));
    assert_int_equal(info_of(odb, "/b").n_elem, 3);
    assert_int_equal(info_of(odb, "/s").elem_size, 10);
    assert_int_equal(info_of(odb, "/s").mode, ODB_MODE_ALL);
}

static void test_import_merge(void **state)
{
    struct fx *fx = *state;
    struct odb *odb = fx->odb;
    int8_t small = 1;
    OK(odb_set(odb, ODB_ROOT, "/small", ODB_TYPE_INT8, &small, 1, 1, ODB_SET_CREATE));
    char s[64] = "old";
    OK(odb_set(odb, ODB_ROOT, "/s", ODB_TYPE_STRING, s, sizeof s, 1, ODB_SET_CREATE));
    int32_t keep = 7;
    OK(odb_set(odb, ODB_ROOT, "/D/keep", ODB_TYPE_INT32, &keep, sizeof keep, 1, ODB_SET_CREATE));
    double dbl = 2.0;
    OK(odb_set(odb, ODB_ROOT, "/dbl", ODB_TYPE_DOUBLE, &dbl, sizeof dbl, 1, ODB_SET_CREATE));
    struct odb_key_info keep_before = info_of(odb, "/D/keep");

    /* Case-insensitive names; values without metadata take the existing
     * key's type (a number into INT8 or DOUBLE) and string capacity. */
    OK(import_str(odb, "{\"SMALL\": 100, \"s\": \"new\", \"d\": {\"added\": 1, \"KEEP\": 7},"
                       " \"dbl\": 3}"));
    assert_check(odb);
    struct odb_key_info ki = info_of(odb, "/small");
    assert_int_equal(ki.type, ODB_TYPE_INT8);
    assert_string_equal(ki.name, "small");
    size_t sz = 1;
    OK(odb_get(odb, ODB_ROOT, "/small", ODB_TYPE_INT8, &small, &sz));
    assert_int_equal(small, 100);
    ki = info_of(odb, "/s");
    assert_int_equal(ki.type, ODB_TYPE_STRING);
    assert_int_equal(ki.elem_size, 64);
    sz = sizeof s;
    OK(odb_get(odb, ODB_ROOT, "/s", ODB_TYPE_STRING, s, &sz));
    assert_string_equal(s, "new");
    sz = sizeof dbl;
    OK(odb_get(odb, ODB_ROOT, "/dbl", ODB_TYPE_DOUBLE, &dbl, &sz));
    assert_true(dbl == 3.0);
    /* An unchanged value is not rewritten. */
    struct odb_key_info keep_after = info_of(odb, "/D/keep");
    assert_true(keep_after.serial == keep_before.serial);
    assert_true(keep_after.mtime_ns == keep_before.mtime_ns);
    ki = info_of(odb, "/D/added");
    assert_int_equal(ki.type, ODB_TYPE_INT32);

    /* A longer string grows the capacity. */
    char longer[100];
    memset(longer, 'x', 80);
    longer[80] = '\0';
    char doc[200];
    (void)snprintf(doc, sizeof doc, "{\"s\": \"%s\"}", longer);
    OK(import_str(odb, doc));
    assert_int_equal(info_of(odb, "/s").elem_size, 96);

    /* Metadata changes the mode of an existing key (and its mtime when
     * the key is written). */
    OK(import_str(odb, "{\"small/key\": {\"type\": \"INT8\", \"mode\": 1, \"mtime\": 12345},"
                       " \"small\": 5}"));
    ki = info_of(odb, "/small");
    assert_int_equal(ki.mode, ODB_MODE_READ);
    assert_true(ki.mtime_ns == 12345);
    /* Now read-only: a different value is refused and rolls back all. */
    char *before = export_all(odb);
    assert_int_equal(import_str(odb, "{\"dbl\": 9.5, \"small\": 6}"), ODB_EACCESS);
    char *after = export_all(odb);
    assert_string_equal(before, after);
    /* The same value is fine. */
    OK(import_str(odb, "{\"small\": 5}"));
    free(before);
    free(after);

    /* Import into a subdirectory, and through a link to it. */
    OK(odb_link(odb, ODB_ROOT, "/L", "/D"));
    OK(odb_json_import(odb, find(odb, "/L"), "{\"via_link\": 3}", 15));
    OK(odb_json_import(odb, find(odb, "/D"), "{\"direct\": 4}", 13));
    assert_int_equal(info_of(odb, "/D/via_link").type, ODB_TYPE_INT32);
    assert_int_equal(info_of(odb, "/D/direct").type, ODB_TYPE_INT32);
    assert_int_equal(odb_json_import(odb, find(odb, "/dbl"), "{}", 2), ODB_ENOTDIR);
    assert_check(odb);
}

/* Runs `doc` against the ODB expecting error `want`, and checks that the
 * ODB did not change at all. */
static void expect_rejected(struct odb *odb, const char *doc, size_t len, int want)
{
    char *before = export_all(odb);
    uint64_t changes = odb_change_count(odb);
    int err = odb_json_import(odb, ODB_ROOT, doc, len);
    if (err != want)
        print_error("document %.200s: got %d (%s: %s), want %d\n", doc, err, ut_strerror(err),
                    odb_errmsg(), want);
    assert_int_equal(err, want);
    assert_true(odb_errmsg()[0] != '\0');
    char *after = export_all(odb);
    assert_string_equal(before, after);
    assert_true(odb_change_count(odb) == changes);
    free(before);
    free(after);
}

static void test_import_etype_rolls_back(void **state)
{
    struct fx *fx = *state;
    struct odb *odb = fx->odb;
    populate(odb);
    int32_t first = 1, num = 2;
    OK(odb_set(odb, ODB_ROOT, "/first", ODB_TYPE_INT32, &first, sizeof first, 1, ODB_SET_CREATE));
    OK(odb_set(odb, ODB_ROOT, "/num", ODB_TYPE_INT32, &num, sizeof num, 1, ODB_SET_CREATE));
    /* Earlier members of the document (a changed value, new keys, a new
     * subtree) are all undone when a later one has the wrong type. */
    const char *docs[] = {
        ("{\"first\": 42, \"newkey\": 5, \"newdir\": {\"a\": {\"b\": 1}},"
         " \"num/key\": {\"type\": \"STRING\", \"n\": 1, \"size\": 32}, \"num\": \"x\"}"),
        "{\"first\": 42, \"newkey\": 5, \"num/key\": {\"type\": \"INT16\"}, \"num\": 1}",
        "{\"first\": 42, \"num\": \"string into INT32\"}",
        "{\"first\": 42, \"num\": {\"dir\": 1}}",
        "{\"first\": 42, \"Ints\": 5}",
        "{\"first\": 42, \"Ints\": {\"i8\": 1000}}",
        "{\"first\": 42, \"Ints\": {\"u8\": -1}}",
        "{\"first\": 42, \"Links\": {\"to_s\": \"/x\"}}",
        "{\"first\": 42, \"Bools\": [1, 2]}",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
        expect_rejected(odb, docs[i], strlen(docs[i]), ODB_ETYPE);
    size_t sz = sizeof first;
    OK(odb_get(odb, ODB_ROOT, "/first", ODB_TYPE_INT32, &first, &sz));
    assert_int_equal(first, 1);
    struct odb_hkey h;
    assert_int_equal(odb_find(odb, ODB_ROOT, "/newkey", &h), ODB_ENOKEY);
    assert_int_equal(odb_find(odb, ODB_ROOT, "/newdir", &h), ODB_ENOKEY);
    assert_check(odb);
}

static void test_import_bad_documents(void **state)
{
    struct fx *fx = *state;
    struct odb *odb = fx->odb;
    populate(odb);
    char name64[200];
    (void)snprintf(name64, sizeof name64, "{\"%.64s\": 1}",
                   "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn");
    const char *docs[] = {
        "{\"a\": 1",                                     /* truncated */
        "{\"a\": 1} x",                                  /* trailing garbage */
        "{\"a\": [1, 2}",                                /* wrong nesting */
        "{\"a\": {\"b\": 1]}",                           /* wrong nesting */
        "",                                              /* empty */
        "[1, 2]",                                        /* not an object */
        "{\"a\": 1, \"a\": 2}",                          /* duplicate */
        "{\"good\": 1, \"a\": 1, \"A\": 2}",             /* duplicate but for case */
        "{\"a/b\": 1}",                                  /* '/' in a name */
        "{\"a[0]\": 1}",                                 /* '[' in a name */
        name64,                                          /* 64-byte name */
        "{\"\": 1}",                                     /* empty name */
        "{\"..\": 1}",                                   /* reserved name */
        "{\"ctl\\u0001\": 1}",                           /* control character */
        "{\"a\": [1, \"x\"]}",                           /* mixed array */
        "{\"a\": [true, 1]}",                            /* mixed array */
        "{\"a\": [[1]]}",                                /* nested array */
        "{\"a\": [{}]}",                                 /* array of objects */
        "{\"a\": []}",                                   /* empty array */
        "{\"a\": null}",                                 /* null */
        "{\"a\": \"nul\\u0000inside\"}",                 /* NUL in a string */
        "{\"a\": 99999999999999999999}",                 /* integer too big */
        "{\"good\": 1, \"d\": {\"e\": {\"bad/x\": 1}}}", /* deep bad name */
        "{\"x/key\": {\"type\": \"INT32\"}}",            /* metadata without value */
        "{\"x/key\": 5, \"x\": 1}",                      /* metadata not an object */
        "{\"x/key\": {}, \"x\": 1}",                     /* no type */
        "{\"x/key\": {\"type\": \"INT128\"}, \"x\": 1}",
        "{\"x/key\": {\"type\": 7}, \"x\": 1}",
        "{\"x/key\": {\"type\": \"INT8\"}, \"x\": 300}",
        "{\"x/key\": {\"type\": \"UINT64\"}, \"x\": -1}",
        "{\"x/key\": {\"type\": \"UINT64\"}, \"x\": \"0x10000000000000000\"}",
        "{\"x/key\": {\"type\": \"INT32\"}, \"x\": 1.5}",
        "{\"x/key\": {\"type\": \"FLOAT\"}, \"x\": 1e39}",
        "{\"x/key\": {\"type\": \"DOUBLE\"}, \"x\": \"nan\"}",
        "{\"x/key\": {\"type\": \"BOOL\"}, \"x\": 2}",
        "{\"x/key\": {\"type\": \"INT32\", \"n\": 3}, \"x\": [1, 2]}",
        "{\"x/key\": {\"type\": \"INT32\", \"n\": 0}, \"x\": 1}",
        "{\"x/key\": {\"type\": \"INT32\", \"mode\": 8}, \"x\": 1}",
        "{\"x/key\": {\"type\": \"INT32\", \"mtime\": \"now\"}, \"x\": 1}",
        "{\"x/key\": {\"type\": \"STRING\", \"size\": 4}, \"x\": \"hello\"}",
        "{\"x/key\": {\"type\": \"STRING\", \"size\": 0}, \"x\": \"\"}",
        "{\"x/key\": {\"type\": \"STRING\"}, \"x\": 5}",
        "{\"x/key\": {\"type\": \"LINK\"}, \"x\": \"relative/path\"}",
        "{\"x/key\": {\"type\": \"DIR\"}, \"x\": 1}",
        "{\"x/key\": {\"type\": \"INT32\"}, \"x\": {}}",
        "{\"x/value\": 1, \"x\": 1}", /* only "/key" may follow a name */
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
        expect_rejected(odb, docs[i], strlen(docs[i]), ODB_EJSON);
    /* Parse errors name the line and column. */
    assert_int_equal(import_str(odb, "{\n  \"a\": 1,\n  \"b\": ]\n}"), ODB_EJSON);
    assert_non_null(strstr(odb_errmsg(), "line 3"));
    assert_non_null(strstr(odb_errmsg(), "column"));
    /* A length that cuts the text is honoured (no reading past it). */
    expect_rejected(odb, "{\"a\": 12345}", 8, ODB_EJSON);
    assert_check(odb);
}

static void test_import_undo_overflow(void **state)
{
    struct fx *fx = *state;
    struct odb *odb = fx->odb;
    populate(odb);
    /* More keys than one transaction's undo log can describe: the import
     * fails as a whole (ODB_ETOOBIG) or fits (ODB_EKEYS / ENOSPC also
     * leave everything unchanged); never a partial import. */
    size_t n = 3800, cap = n * 24 + 16;
    char *doc = malloc(cap);
    assert_non_null(doc);
    size_t len = (size_t)snprintf(doc, cap, "{");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(doc + len, cap - len, "%s\"k%zu\": %zu", i ? ", " : "", i, i);
    len += (size_t)snprintf(doc + len, cap - len, "}");
    char *before = export_all(odb);
    int err = odb_json_import(odb, ODB_ROOT, doc, len);
    print_message("importing %zu keys into a 4 MiB ODB: %s\n", n, err ? ut_strerror(err) : "ok");
    assert_true(err == ODB_ETOOBIG || err == ODB_EKEYS || err == ODB_ENOSPC);
    char *after = export_all(odb);
    assert_string_equal(before, after);
    assert_check(odb);
    free(before);
    free(after);
    free(doc);
}

/* ---------------------------------------------------------------------- */
/* Save and load                                                           */
/* ---------------------------------------------------------------------- */

static void save_load_roundtrip(struct fx *fx, const char *file, bool gz)
{
    char path[PATH_MAX + 64];
    path_in(fx, file, path, sizeof path);
    populate(fx->odb);
    OK(odb_save(fx->odb, ODB_ROOT, path));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(count_files(fx, ".tmp"), 0);
    assert_int_equal(count_files(fx, ""), 1);
    size_t len;
    char *raw = read_whole(path, &len);
    assert_non_null(raw);
    if (gz) {
        assert_true(len > 2 && (uint8_t)raw[0] == 0x1f && (uint8_t)raw[1] == 0x8b);
    } else {
        char *e = export_all(fx->odb);
        assert_string_equal(raw, e);
        free(e);
    }
    free(raw);
    struct odb *odb2 = open2(fx);
    OK(odb_load(odb2, ODB_ROOT, path));
    assert_check(odb2);
    char *a = export_all(fx->odb), *b = export_all(odb2);
    assert_string_equal(a, b);
    free(a);
    free(b);
    /* Saving again replaces the file (still 0600, no temp file). */
    int32_t v = 5;
    OK(odb_set(fx->odb, ODB_ROOT, "/added", ODB_TYPE_INT32, &v, sizeof v, 1, ODB_SET_CREATE));
    OK(odb_save(fx->odb, ODB_ROOT, path));
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(count_files(fx, ""), 1);
    OK(odb_load(odb2, ODB_ROOT, path));
    a = export_all(fx->odb);
    b = export_all(odb2);
    assert_string_equal(a, b);
    free(a);
    free(b);
}

static void test_save_load_json(void **state)
{
    save_load_roundtrip(*state, "odb.json", false);
}

static void test_save_load_json_gz(void **state)
{
    save_load_roundtrip(*state, "odb.json.gz", true);
}

static void test_save_subtree_relative_name(void **state)
{
    struct fx *fx = *state;
    populate(fx->odb);
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(fx->dir), 0);
    /* A name without a directory part: temp file and sync in ".". */
    int err = odb_save(fx->odb, find(fx->odb, "/Ints"), "ints.json");
    assert_int_equal(chdir(cwd), 0);
    OK(err);
    char path[PATH_MAX + 64];
    path_in(fx, "ints.json", path, sizeof path);
    struct odb *odb2 = open2(fx);
    OK(odb_create(odb2, ODB_ROOT, "/Ints", ODB_TYPE_DIR, 0, 0, NULL));
    OK(odb_load(odb2, find(odb2, "/Ints"), path));
    compare_trees(fx->odb, odb2, "/Ints");
}

/* A save that fails at fault point `fault` leaves the old file as it was
 * and no temp file. */
static void save_fault(struct fx *fx, const char *file, const char *fault, int want)
{
    char path[PATH_MAX + 64];
    path_in(fx, file, path, sizeof path);
    populate(fx->odb);
    OK(odb_save(fx->odb, ODB_ROOT, path));
    size_t old_len;
    char *old = read_whole(path, &old_len);
    assert_non_null(old);
    int32_t v = 5;
    OK(odb_set(fx->odb, ODB_ROOT, "/changed", ODB_TYPE_INT32, &v, sizeof v, 1, ODB_SET_CREATE));
    ut_fault_set(fault, 1);
    int err = odb_save(fx->odb, ODB_ROOT, path);
    ut_fault_set(fault, 0);
    assert_int_equal(err, want);
    assert_non_null(strstr(odb_errmsg(), ".tmp."));
    size_t now_len;
    char *now = read_whole(path, &now_len);
    assert_non_null(now);
    assert_int_equal(old_len, now_len);
    assert_memory_equal(old, now, old_len);
    assert_int_equal(count_files(fx, ".tmp"), 0);
    assert_int_equal(count_files(fx, ""), 1);
    free(old);
    free(now);
    /* And without the fault the next save works. */
    OK(odb_save(fx->odb, ODB_ROOT, path));
    struct odb *odb2 = open2(fx);
    OK(odb_load(odb2, ODB_ROOT, path));
    struct odb_hkey h;
    OK(odb_find(odb2, ODB_ROOT, "/changed", &h));
}

static void test_save_write_fails(void **state)
{
    save_fault(*state, "odb.json", "odb.save.write", -ENOSPC);
}

static void test_save_write_fails_gz(void **state)
{
    save_fault(*state, "odb.json.gz", "odb.save.write", -ENOSPC);
}

static void test_save_fsync_fails(void **state)
{
    save_fault(*state, "odb.json", "odb.save.fsync", -EIO);
}

static void test_save_errors(void **state)
{
    struct fx *fx = *state;
    char path[PATH_MAX + 64];
    path_in(fx, "no/such/dir/odb.json", path, sizeof path);
    assert_int_equal(odb_save(fx->odb, ODB_ROOT, path), -ENOENT);
    assert_int_equal(odb_save(fx->odb, ODB_ROOT, ""), UT_EINVAL);
    /* The target is a directory: rename fails, temp file removed. */
    path_in(fx, "adir", path, sizeof path);
    assert_int_equal(mkdir(path, 0700), 0);
    int err = odb_save(fx->odb, ODB_ROOT, path);
    assert_true(err == -EISDIR || err == -ENOTEMPTY || err == -EEXIST);
    assert_int_equal(count_files(fx, ".tmp"), 0);
    assert_int_equal(rmdir(path), 0);
    /* A symlink at the target is replaced, not followed. */
    char victim[PATH_MAX + 64];
    path_in(fx, "victim", victim, sizeof victim);
    FILE *f = fopen(victim, "w");
    assert_non_null(f);
    assert_true(fputs("precious", f) >= 0);
    assert_int_equal(fclose(f), 0);
    path_in(fx, "link.json", path, sizeof path);
    assert_int_equal(symlink(victim, path), 0);
    OK(odb_save(fx->odb, ODB_ROOT, path));
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    size_t len;
    char *v = read_whole(victim, &len);
    assert_string_equal(v, "precious");
    free(v);
}

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void test_load_errors(void **state)
{
    struct fx *fx = *state;
    struct odb *odb = fx->odb;
    populate(odb);
    char *before = export_all(odb);
    char path[PATH_MAX + 64];
    path_in(fx, "missing.json", path, sizeof path);
    assert_int_equal(odb_load(odb, ODB_ROOT, path), -ENOENT);
    assert_int_equal(odb_load(odb, ODB_ROOT, fx->dir), -EINVAL);
    /* Not JSON. */
    path_in(fx, "garbage.json", path, sizeof path);
    write_file(path, "not json at all", 15);
    assert_int_equal(odb_load(odb, ODB_ROOT, path), ODB_EJSON);
    /* A truncated and a damaged gzip file. */
    path_in(fx, "good.json.gz", path, sizeof path);
    OK(odb_save(odb, ODB_ROOT, path));
    size_t len;
    char *gz = read_whole(path, &len);
    assert_non_null(gz);
    path_in(fx, "cut.json.gz", path, sizeof path);
    write_file(path, gz, len / 2);
    assert_int_equal(odb_load(odb, ODB_ROOT, path), UT_EIO);
    gz[len / 2] ^= 0x55;
    gz[len / 2 + 1] ^= 0x55;
    path_in(fx, "bad.json.gz", path, sizeof path);
    write_file(path, gz, len);
    assert_int_equal(odb_load(odb, ODB_ROOT, path), UT_EIO);
    free(gz);
    /* Too large (a sparse file: no disk space used). */
    path_in(fx, "huge.json", path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)257 << 20), 0);
    close(fd);
    assert_int_equal(odb_load(odb, ODB_ROOT, path), -EFBIG);
    unlink(path);
    char *after = export_all(odb);
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* Two concatenated gzip members load as their concatenation. */
    OK(odb_create(odb, ODB_ROOT, "/Cat", ODB_TYPE_DIR, 0, 0, NULL));
    path_in(fx, "cat1.json.gz", path, sizeof path);
    struct odb *odb2 = open2(fx);
    OK(import_str(odb2, "{\"x\": 1}"));
    OK(odb_save(odb2, ODB_ROOT, path));
    char *m1 = read_whole(path, &len);
    size_t len2;
    char *m2 = NULL;
    OK(odb_json_import(odb2, ODB_ROOT, "{\"y\": 2}", 8)); /* one more key */
    OK(odb_delete(odb2, ODB_ROOT, "/x", false));
    OK(odb_save(odb2, ODB_ROOT, path));
    m2 = read_whole(path, &len2);
    /* {"x"...}\n followed by {"y"...}\n is not one JSON document: only
     * check that the members were inflated (the error is then a JSON one). */
    char *both = malloc(len + len2);
    assert_non_null(both);
    memcpy(both, m1, len);
    memcpy(both + len, m2, len2);
    path_in(fx, "cat.json.gz", path, sizeof path);
    write_file(path, both, len + len2);
    assert_int_equal(odb_load(odb, find(odb, "/Cat"), path), ODB_EJSON);
    assert_non_null(strstr(odb_errmsg(), "line"));
    free(both);
    free(m1);
    free(m2);
}

/* ---------------------------------------------------------------------- */
/* Allocation-failure sweeps                                               */
/* ---------------------------------------------------------------------- */

static const char *sweep_doc =
    "{\"Run/key\": {\"type\": \"DIR\", \"mode\": 7},"
    " \"Run\": {\"number/key\": {\"type\": \"UINT32\", \"n\": 1, \"mode\": 7}, \"number\": 12,"
    "   \"comment\": \"a comment with \\\"quotes\\\"\", \"thresholds\": [1.5, 2.5, 3.5],"
    "   \"names/key\": {\"type\": \"STRING\", \"n\": 2, \"size\": 48}, \"names\": [\"a\", \"b\"],"
    "   \"sub\": {\"deeper\": {\"x\": true}}, \"existing\": 99},"
    " \"Link/key\": {\"type\": \"LINK\", \"n\": 1, \"size\": 5}, \"Link\": \"/Run\","
    " \"big/key\": {\"type\": \"UINT64\"}, \"big\": \"0xffffffffffffffff\"}";

static void test_alloc_fail_import(void **state)
{
    struct fx *fx = *state;
    struct odb *odb = fx->odb;
    populate(odb);
    int32_t v = 1;
    OK(odb_set(odb, ODB_ROOT, "/Run/existing", ODB_TYPE_INT32, &v, sizeof v, 1, ODB_SET_CREATE));
    char *before = export_all(odb);
    long n;
    int err = -1;
    for (n = 1; n < SWEEP_MAX; n++) {
        ut_alloc_fail_after(n);
        err = import_str(odb, sweep_doc);
        ut_alloc_fail_after(0);
        if (err == 0)
            break;
        assert_int_equal(err, UT_ENOMEM);
        char *now = export_all(odb);
        assert_string_equal(before, now);
        free(now);
    }
    print_message("import: succeeded after %ld failed allocations\n", n - 1);
    assert_int_equal(err, 0);
    assert_true(n > 1);
    assert_check(odb);
    free(before);
}

static void test_alloc_fail_save(void **state)
{
    struct fx *fx = *state;
    const char *files[] = {"odb.json", "odb.json.gz"};
    populate(fx->odb);
    for (size_t f = 0; f < 2; f++) {
        char path[PATH_MAX + 64];
        path_in(fx, files[f], path, sizeof path);
        write_file(path, "old content", 11);
        long n;
        int err = -1;
        for (n = 1; n < SWEEP_MAX; n++) {
            ut_alloc_fail_after(n);
            err = odb_save(fx->odb, ODB_ROOT, path);
            ut_alloc_fail_after(0);
            if (err == 0)
                break;
            assert_int_equal(err, UT_ENOMEM);
            size_t len;
            char *now = read_whole(path, &len);
            assert_string_equal(now, "old content");
            free(now);
            assert_int_equal(count_files(fx, ".tmp"), 0);
        }
        print_message("save %s: succeeded after %ld failed allocations\n", files[f], n - 1);
        assert_int_equal(err, 0);
        assert_true(n > 1);
        assert_int_equal(count_files(fx, ".tmp"), 0);
    }
}

static void test_alloc_fail_load(void **state)
{
    struct fx *fx = *state;
    const char *files[] = {"odb.json", "odb.json.gz"};
    populate(fx->odb);
    char *want = export_all(fx->odb);
    for (size_t f = 0; f < 2; f++) {
        char path[PATH_MAX + 64];
        path_in(fx, files[f], path, sizeof path);
        OK(odb_save(fx->odb, ODB_ROOT, path));
        struct odb *odb2 = open2(fx);
        int32_t v = 3;
        OK(odb_set(odb2, ODB_ROOT, "/zzz", ODB_TYPE_INT32, &v, sizeof v, 1, ODB_SET_CREATE));
        char *before = export_all(odb2);
        long n;
        int err = -1;
        for (n = 1; n < SWEEP_MAX; n++) {
            ut_alloc_fail_after(n);
            err = odb_load(odb2, ODB_ROOT, path);
            ut_alloc_fail_after(0);
            if (err == 0)
                break;
            assert_int_equal(err, UT_ENOMEM);
            char *now = export_all(odb2);
            assert_string_equal(before, now);
            free(now);
        }
        print_message("load %s: succeeded after %ld failed allocations\n", files[f], n - 1);
        assert_int_equal(err, 0);
        assert_check(odb2);
        OK(odb_delete(odb2, ODB_ROOT, "/zzz", false));
        char *got = export_all(odb2);
        assert_string_equal(got, want);
        free(got);
        free(before);
        odb_close(fx->odb2);
        odb_destroy(fx->name2);
        fx->odb2 = NULL;
    }
    free(want);
}

static void test_alloc_fail_export(void **state)
{
    struct fx *fx = *state;
    populate(fx->odb);
    long n;
    int err = -1;
    for (n = 1; n < SWEEP_MAX; n++) {
        char *out = NULL;
        ut_alloc_fail_after(n);
        err = odb_json_export(fx->odb, ODB_ROOT, &out, NULL);
        ut_alloc_fail_after(0);
        if (err == 0) {
            ut_free(out);
            break;
        }
        assert_int_equal(err, UT_ENOMEM);
        assert_null(out);
    }
    assert_int_equal(err, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_roundtrip_all_types),
        T(test_export_format),
        T(test_export_non_utf8_and_stale),
        T(test_import_infer),
        T(test_import_metadata_conversions),
        T(test_import_merge),
        T(test_import_etype_rolls_back),
        T(test_import_bad_documents),
        T(test_import_undo_overflow),
        T(test_save_load_json),
        T(test_save_load_json_gz),
        T(test_save_subtree_relative_name),
        T(test_save_write_fails),
        T(test_save_write_fails_gz),
        T(test_save_fsync_fails),
        T(test_save_errors),
        T(test_load_errors),
        T(test_alloc_fail_import),
        T(test_alloc_fail_save),
        T(test_alloc_fail_load),
        T(test_alloc_fail_export),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
