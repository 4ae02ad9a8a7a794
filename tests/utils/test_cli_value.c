/*
 * tests/utils/test_cli_value.c - the text helpers of the command-line
 * programs (utils/cli_value.c): the tokenizer, textual path resolution and
 * index splitting, value parsing with range checks, value printing, modes.
 * No ODB is opened: these functions work on strings only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "utils/cli_value.h"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tokenizes `line` and compares with the NULL-terminated list of words. */
static void check_words(const char *line, const char *const *want)
{
    struct cli_args a = {0};
    char why[128] = "";
    assert_int_equal(cli_tokenize(line, &a, why, sizeof why), 0);
    int n = 0;
    while (want[n])
        n++;
    assert_int_equal(a.argc, n);
    for (int i = 0; i < n; i++)
        assert_string_equal(a.argv[i], want[i]);
    assert_null(a.argv[n]);
    cli_args_release(&a);
    assert_null(a.argv);
}

static void test_tokenize(void **state)
{
    (void)state;
    check_words("", (const char *[]){NULL});
    check_words("   \t\n", (const char *[]){NULL});
    check_words("ls -l /System/Clients", (const char *[]){"ls", "-l", "/System/Clients", NULL});
    check_words("  set   /a   5  ", (const char *[]){"set", "/a", "5", NULL});
    check_words("set \"/a b/c\" 'x y'", (const char *[]){"set", "/a b/c", "x y", NULL});
    check_words("set /a\\ b \"say \\\"hi\\\"\"",
                (const char *[]){"set", "/a b", "say \"hi\"", NULL});
    check_words("x \"a\\nb\\tc\\\\d\\q\"", (const char *[]){"x", "a\nb\tc\\d\\q", NULL});
    check_words("x 'it''s' a\"b\"c", (const char *[]){"x", "its", "abc", NULL});
    check_words("x '' \"\"", (const char *[]){"x", "", "", NULL});
    check_words("x 'no \\escape'", (const char *[]){"x", "no \\escape", NULL});
    check_words("ls # a comment", (const char *[]){"ls", NULL});
    check_words("# only a comment", (const char *[]){NULL});
    check_words("msg a#b", (const char *[]){"msg", "a#b", NULL});
    check_words("a b c d e f g h", (const char *[]){"a", "b", "c", "d", "e", "f", "g", "h", NULL});
}

static void test_tokenize_errors(void **state)
{
    (void)state;
    struct cli_args a = {0};
    char why[128];
    assert_int_equal(cli_tokenize("get \"/a", &a, why, sizeof why), UT_EINVAL);
    assert_non_null(strstr(why, "unterminated double quote"));
    assert_null(a.argv);
    assert_int_equal(cli_tokenize("get '/a", &a, why, sizeof why), UT_EINVAL);
    assert_non_null(strstr(why, "unterminated single quote"));
    assert_int_equal(cli_tokenize("get /a\\", &a, why, sizeof why), UT_EINVAL);
    assert_int_equal(cli_tokenize("get /a\\", &a, NULL, 0), UT_EINVAL);
    cli_args_release(NULL);
    cli_args_release(&a);
}

static void check_resolve(const char *cwd, const char *arg, const char *want)
{
    char out[ODB_PATH_MAX + 1];
    assert_int_equal(cli_path_resolve(cwd, arg, out, sizeof out), 0);
    assert_string_equal(out, want);
}

static void test_path_resolve(void **state)
{
    (void)state;
    check_resolve("/", NULL, "/");
    check_resolve("/", "", "/");
    check_resolve("/a/b", NULL, "/a/b");
    check_resolve("/a/b", "c", "/a/b/c");
    check_resolve("/a/b", "/x//y/", "/x/y");
    check_resolve("/a/b", "..", "/a");
    check_resolve("/a/b", "../..", "/");
    check_resolve("/a/b", "../../../..", "/");
    check_resolve("/a/b", "./c/./d", "/a/b/c/d");
    check_resolve("/a/b", "c/../../e", "/a/e");
    check_resolve("/", "/", "/");
    check_resolve("/System", "Clients", "/System/Clients");
    check_resolve("/a", "name with space", "/a/name with space");

    char out[16];
    assert_int_equal(cli_path_resolve("/", "/a/very/long/path/indeed", out, sizeof out), ODB_EPATH);
    char *longp = malloc(ODB_PATH_MAX + 10);
    assert_non_null(longp);
    memset(longp, 'x', ODB_PATH_MAX + 8);
    longp[0] = '/';
    longp[ODB_PATH_MAX + 8] = '\0';
    char big[2 * ODB_PATH_MAX];
    assert_int_equal(cli_path_resolve("/", longp, big, sizeof big), ODB_EPATH);
    free(longp);

    assert_string_equal(cli_path_base("/a/b/c"), "c");
    assert_string_equal(cli_path_base("/a"), "a");
    assert_string_equal(cli_path_base("/"), "/");
}

static void test_split_index(void **state)
{
    (void)state;
    char path[64], why[128];
    struct cli_index idx;
    assert_int_equal(cli_path_split_index("/a/b", path, sizeof path, &idx, why, sizeof why), 0);
    assert_string_equal(path, "/a/b");
    assert_int_equal(idx.kind, CLI_INDEX_NONE);
    assert_int_equal(cli_path_split_index("/a/b[12]", path, sizeof path, &idx, why, sizeof why), 0);
    assert_string_equal(path, "/a/b");
    assert_int_equal(idx.kind, CLI_INDEX_ONE);
    assert_int_equal(idx.index, 12);
    assert_int_equal(cli_path_split_index("arr[*]", path, sizeof path, &idx, why, sizeof why), 0);
    assert_string_equal(path, "arr");
    assert_int_equal(idx.kind, CLI_INDEX_ALL);
    assert_int_equal(
        cli_path_split_index("a[4294967295]", path, sizeof path, &idx, why, sizeof why), 0);
    assert_int_equal(idx.index, UINT32_MAX);

    const char *bad[] = {"a[",    "a[]", "a[x]",          "a[1]b", "a[1][2]",
                         "a[-1]", "a[1", "a[4294967296]", "a[*1]", "a[ 1]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        (void)snprintf(path, sizeof path, "unchanged");
        assert_int_equal(cli_path_split_index(bad[i], path, sizeof path, &idx, why, sizeof why),
                         ODB_EPATH);
        assert_string_equal(path, "unchanged");
    }
    char small[4];
    assert_int_equal(cli_path_split_index("/abcdef", small, sizeof small, &idx, NULL, 0),
                     ODB_EPATH);
}

static void test_type_names(void **state)
{
    (void)state;
    assert_int_equal(cli_type_from_name("INT8"), ODB_TYPE_INT8);
    assert_int_equal(cli_type_from_name("uint64"), ODB_TYPE_UINT64);
    assert_int_equal(cli_type_from_name("String"), ODB_TYPE_STRING);
    assert_int_equal(cli_type_from_name("DWORD"), ODB_TYPE_UINT32);
    assert_int_equal(cli_type_from_name("int"), ODB_TYPE_INT32);
    assert_int_equal(cli_type_from_name("BYTE"), ODB_TYPE_UINT8);
    assert_int_equal(cli_type_from_name("KEY"), ODB_TYPE_DIR);
    assert_int_equal(cli_type_from_name("FOO"), 0);
    assert_int_equal(cli_type_from_name(NULL), 0);
}

/* Parses text as type and returns the bits as an unsigned 64-bit value. */
static int parse_u64(enum odb_type type, const char *text, uint64_t *bits)
{
    uint8_t buf[CLI_VALUE_MAX] = {0};
    int err = cli_value_parse(type, text, buf, NULL, 0);
    if (err)
        return err;
    switch (odb_type_size(type)) {
    case 1:
        *bits = buf[0];
        break;
    case 2: {
        uint16_t v;
        memcpy(&v, buf, 2);
        *bits = v;
        break;
    }
    case 4: {
        uint32_t v;
        memcpy(&v, buf, 4);
        *bits = v;
        break;
    }
    default:
        memcpy(bits, buf, 8);
        break;
    }
    return 0;
}

static void test_parse_integers(void **state)
{
    (void)state;
    uint64_t v = 0;
    assert_int_equal(parse_u64(ODB_TYPE_INT8, "127", &v), 0);
    assert_int_equal(v, 127);
    assert_int_equal(parse_u64(ODB_TYPE_INT8, "-128", &v), 0);
    assert_int_equal((int8_t)v, -128);
    assert_int_equal(parse_u64(ODB_TYPE_INT8, "300", &v), UT_EINVAL);
    assert_int_equal(parse_u64(ODB_TYPE_INT8, "128", &v), UT_EINVAL);
    assert_int_equal(parse_u64(ODB_TYPE_INT8, "-129", &v), UT_EINVAL);
    assert_int_equal(parse_u64(ODB_TYPE_UINT8, "255", &v), 0);
    assert_int_equal(v, 255);
    assert_int_equal(parse_u64(ODB_TYPE_UINT8, "256", &v), UT_EINVAL);
    assert_int_equal(parse_u64(ODB_TYPE_UINT8, "-1", &v), UT_EINVAL);
    assert_int_equal(parse_u64(ODB_TYPE_UINT8, "-0", &v), 0);
    assert_int_equal(parse_u64(ODB_TYPE_INT16, "-32768", &v), 0);
    assert_int_equal((int16_t)v, -32768);
    assert_int_equal(parse_u64(ODB_TYPE_INT16, "32768", &v), UT_EINVAL);
    assert_int_equal(parse_u64(ODB_TYPE_UINT16, "65535", &v), 0);
    assert_int_equal(parse_u64(ODB_TYPE_UINT16, "65536", &v), UT_EINVAL);
    assert_int_equal(parse_u64(ODB_TYPE_INT32, "-2147483648", &v), 0);
    assert_int_equal((int32_t)v, INT32_MIN);
    assert_int_equal(parse_u64(ODB_TYPE_INT32, "2147483648", &v), UT_EINVAL);
    assert_int_equal(parse_u64(ODB_TYPE_UINT32, "4294967295", &v), 0);
    assert_int_equal(parse_u64(ODB_TYPE_UINT32, "4294967296", &v), UT_EINVAL);
    assert_int_equal(parse_u64(ODB_TYPE_INT64, "-9223372036854775808", &v), 0);
    assert_true((int64_t)v == INT64_MIN);
    assert_int_equal(parse_u64(ODB_TYPE_INT64, "9223372036854775807", &v), 0);
    assert_true((int64_t)v == INT64_MAX);
    assert_int_equal(parse_u64(ODB_TYPE_INT64, "9223372036854775808", &v), UT_EINVAL);
    assert_int_equal(parse_u64(ODB_TYPE_INT64, "-9223372036854775809", &v), UT_EINVAL);
    assert_int_equal(parse_u64(ODB_TYPE_UINT64, "18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(parse_u64(ODB_TYPE_UINT64, "18446744073709551616", &v), UT_EINVAL);
    /* Hex with 0x; a leading zero is still decimal. */
    assert_int_equal(parse_u64(ODB_TYPE_UINT32, "0xff", &v), 0);
    assert_int_equal(v, 255);
    assert_int_equal(parse_u64(ODB_TYPE_INT32, "-0x10", &v), 0);
    assert_int_equal((int32_t)v, -16);
    assert_int_equal(parse_u64(ODB_TYPE_INT32, "010", &v), 0);
    assert_int_equal(v, 10);
    assert_int_equal(parse_u64(ODB_TYPE_INT32, "+7", &v), 0);
    assert_int_equal(v, 7);
    /* Junk. */
    const char *junk[] = {"", "abc", "1x", "0x", "--1", "+-1", " 1", "1 ", "1.5", "0xg"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        assert_int_equal(parse_u64(ODB_TYPE_INT32, junk[i], &v), UT_EINVAL);
    char why[128];
    uint8_t b;
    assert_int_equal(cli_value_parse(ODB_TYPE_INT8, "300", &b, why, sizeof why), UT_EINVAL);
    assert_non_null(strstr(why, "out of range for INT8"));
}

static void test_parse_floats_bools(void **state)
{
    (void)state;
    float f;
    double d;
    assert_int_equal(cli_value_parse(ODB_TYPE_FLOAT, "1.5", &f, NULL, 0), 0);
    assert_true(f == 1.5f);
    assert_int_equal(cli_value_parse(ODB_TYPE_FLOAT, "1e39", &f, NULL, 0), UT_EINVAL);
    assert_int_equal(cli_value_parse(ODB_TYPE_FLOAT, "-inf", &f, NULL, 0), 0);
    assert_int_equal(cli_value_parse(ODB_TYPE_DOUBLE, "0.1", &d, NULL, 0), 0);
    assert_true(d == 0.1);
    assert_int_equal(cli_value_parse(ODB_TYPE_DOUBLE, "1e308", &d, NULL, 0), 0);
    assert_int_equal(cli_value_parse(ODB_TYPE_DOUBLE, "1e999", &d, NULL, 0), UT_EINVAL);
    assert_int_equal(cli_value_parse(ODB_TYPE_DOUBLE, "1.5x", &d, NULL, 0), UT_EINVAL);
    assert_int_equal(cli_value_parse(ODB_TYPE_DOUBLE, "", &d, NULL, 0), UT_EINVAL);
    assert_int_equal(cli_value_parse(ODB_TYPE_DOUBLE, " 1", &d, NULL, 0), UT_EINVAL);

    const char *yes[] = {"y", "Y", "yes", "true", "TRUE", "on", "1"};
    const char *no[] = {"n", "N", "no", "false", "off", "0"};
    uint8_t b;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        b = 7;
        assert_int_equal(cli_value_parse(ODB_TYPE_BOOL, yes[i], &b, NULL, 0), 0);
        assert_int_equal(b, 1);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        b = 7;
        assert_int_equal(cli_value_parse(ODB_TYPE_BOOL, no[i], &b, NULL, 0), 0);
        assert_int_equal(b, 0);
    }
    b = 7;
    assert_int_equal(cli_value_parse(ODB_TYPE_BOOL, "maybe", &b, NULL, 0), UT_EINVAL);
    assert_int_equal(b, 7);
    assert_int_equal(cli_value_parse(ODB_TYPE_BOOL, "2", &b, NULL, 0), UT_EINVAL);
    assert_int_equal(cli_value_parse(ODB_TYPE_STRING, "x", &b, NULL, 0), UT_EINVAL);
}

/* Prints one element into a string (fixed buffer) and compares. */
static void check_print(enum odb_type type, const void *elem, size_t size, unsigned flags,
                        const char *want)
{
    char buf[256];
    memset(buf, 0, sizeof buf);
    FILE *f = fmemopen(buf, sizeof buf, "w");
    assert_non_null(f);
    cli_value_print(f, type, elem, size, flags);
    assert_int_equal(fclose(f), 0);
    assert_string_equal(buf, want);
}

static void test_print(void **state)
{
    (void)state;
    int8_t i8 = -5;
    uint16_t u16 = 65535;
    int64_t i64 = INT64_MIN;
    uint64_t u64 = UINT64_MAX;
    float f = 0.5f;
    double d = 1.0 / 3.0;
    uint8_t yes = 1, no = 0;
    check_print(ODB_TYPE_INT8, &i8, 1, 0, "-5");
    check_print(ODB_TYPE_UINT16, &u16, 2, 0, "65535");
    check_print(ODB_TYPE_INT64, &i64, 8, 0, "-9223372036854775808");
    check_print(ODB_TYPE_UINT64, &u64, 8, 0, "18446744073709551615");
    check_print(ODB_TYPE_FLOAT, &f, 4, 0, "0.5");
    check_print(ODB_TYPE_DOUBLE, &d, 8, 0, "0.333333");
    check_print(ODB_TYPE_BOOL, &yes, 1, 0, "y");
    check_print(ODB_TYPE_BOOL, &no, 1, 0, "n");
    check_print(ODB_TYPE_STRING, "hello", 32, 0, "hello");
    check_print(ODB_TYPE_STRING, "hello", 32, CLI_PRINT_QUOTE, "\"hello\"");
    check_print(ODB_TYPE_STRING, "a\"b\\c\nd\x01", 32, CLI_PRINT_QUOTE, "\"a\\\"b\\\\c\\nd\\x01\"");
    /* Stops at the capacity even without a NUL. */
    check_print(ODB_TYPE_STRING, "abcdef", 3, 0, "abc");
    check_print(ODB_TYPE_LINK, "/a/b", 8, 0, "/a/b");
}

static void test_modes_and_times(void **state)
{
    (void)state;
    uint32_t m = 99;
    assert_int_equal(cli_mode_parse("rwd", &m), 0);
    assert_int_equal(m, ODB_MODE_ALL);
    assert_int_equal(cli_mode_parse("r", &m), 0);
    assert_int_equal(m, ODB_MODE_READ);
    assert_int_equal(cli_mode_parse("r-d", &m), 0);
    assert_int_equal(m, ODB_MODE_READ | ODB_MODE_DELETE);
    assert_int_equal(cli_mode_parse("-", &m), 0);
    assert_int_equal(m, 0);
    assert_int_equal(cli_mode_parse("5", &m), 0);
    assert_int_equal(m, 5);
    m = 99;
    assert_int_equal(cli_mode_parse("8", &m), UT_EINVAL);
    assert_int_equal(cli_mode_parse("rx", &m), UT_EINVAL);
    assert_int_equal(m, 99);
    char s[4];
    cli_mode_format(ODB_MODE_READ | ODB_MODE_WRITE, s);
    assert_string_equal(s, "rw-");
    cli_mode_format(0, s);
    assert_string_equal(s, "---");

    char age[16];
    cli_age_format(400000000, age, sizeof age);
    assert_string_equal(age, "0.4s");
    cli_age_format(-5, age, sizeof age);
    assert_string_equal(age, "0.0s");
    cli_age_format(12000000000LL, age, sizeof age);
    assert_string_equal(age, "12s");
    cli_age_format(300LL * 1000000000LL, age, sizeof age);
    assert_string_equal(age, "5m");
    cli_age_format(3LL * 3600 * 1000000000LL, age, sizeof age);
    assert_string_equal(age, "3h");
    cli_age_format(3LL * 86400 * 1000000000LL, age, sizeof age);
    assert_string_equal(age, "3d");

    char t[40];
    cli_time_format(1700000000LL * 1000000000LL + 123000000, true, t, sizeof t);
    assert_int_equal(strlen(t), strlen("2023-11-14 22:13:20.123"));
    assert_string_equal(t + strlen(t) - 4, ".123");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenize),           cmocka_unit_test(test_tokenize_errors),
        cmocka_unit_test(test_path_resolve),       cmocka_unit_test(test_split_index),
        cmocka_unit_test(test_type_names),         cmocka_unit_test(test_parse_integers),
        cmocka_unit_test(test_parse_floats_bools), cmocka_unit_test(test_print),
        cmocka_unit_test(test_modes_and_times),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
