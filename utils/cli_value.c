/*
 * utils/cli_value.c - the text side of the command-line programs: the
 * tokenizer, textual path arithmetic, and value parsing and printing (see
 * cli_value.h for the contracts).
 *
 * The tokenizer copies the line once into a scratch block and rewrites it
 * in place (quotes and escapes only ever shrink a word), then builds argv
 * pointing into that block; argv and the words share one allocation, so
 * cli_args_release is one ut_free.
 *
 * Paths are pure string work: the ODB itself also understands "." and "..",
 * but resolving them here keeps odbedit's current directory a clean
 * absolute path that can be shown in the prompt and printed by `pwd`.
 */
#include "utils/cli_value.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/banned.h"

/* Writes a formatted reason into why[why_size] when why is not NULL. */
static void explain(char *why, size_t why_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void explain(char *why, size_t why_size, const char *fmt, ...)
{
    if (!why || !why_size)
        return;
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(why, why_size, fmt, ap);
    va_end(ap);
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* ---------------------------------------------------------------------- */
/* Tokenizer                                                              */
/* ---------------------------------------------------------------------- */

int cli_tokenize(const char *line, struct cli_args *out, char *why, size_t why_size)
{
    size_t len = strlen(line);
    /* Worst case: every other character starts a word. */
    size_t max_words = len / 2 + 2;
    size_t argv_bytes = max_words * sizeof(char *);
    char *block = ut_malloc(argv_bytes + len + 1);
    if (!block)
        return UT_ENOMEM;
    char **argv = (char **)(void *)block;
    char *w = block + argv_bytes; /* write position in the scratch copy */
    int argc = 0;
    const char *p = line;
    for (;;) {
        while (is_blank(*p))
            p++;
        if (!*p || *p == '#')
            break;
        argv[argc++] = w;
        while (*p && !is_blank(*p)) {
            if (*p == '\'') {
                const char *end = strchr(p + 1, '\'');
                if (!end) {
                    explain(why, why_size, "unterminated single quote");
                    goto bad;
                }
                memcpy(w, p + 1, (size_t)(end - p - 1));
                w += end - p - 1;
                p = end + 1;
            } else if (*p == '"') {
                p++;
                while (*p && *p != '"') {
                    if (*p == '\\' && p[1]) {
                        char e = p[1];
                        if (e == '"' || e == '\\') {
                            *w++ = e;
                        } else if (e == 'n') {
                            *w++ = '\n';
                        } else if (e == 't') {
                            *w++ = '\t';
                        } else {
                            *w++ = '\\';
                            *w++ = e;
                        }
                        p += 2;
                    } else {
                        *w++ = *p++;
                    }
                }
                if (*p != '"') {
                    explain(why, why_size, "unterminated double quote");
                    goto bad;
                }
                p++;
            } else if (*p == '\\') {
                if (!p[1]) {
                    explain(why, why_size, "backslash at the end of the line");
                    goto bad;
                }
                *w++ = p[1];
                p += 2;
            } else {
                *w++ = *p++;
            }
        }
        *w++ = '\0';
    }
    argv[argc] = NULL;
    out->argc = argc;
    out->argv = argv;
    return 0;
bad:
    ut_free(block);
    return UT_EINVAL;
}

void cli_args_release(struct cli_args *a)
{
    if (!a)
        return;
    ut_free(a->argv);
    a->argv = NULL;
    a->argc = 0;
}

/* ---------------------------------------------------------------------- */
/* Paths                                                                  */
/* ---------------------------------------------------------------------- */

/* Appends the component p[0..n) (or handles "." and "..") to the absolute
 * path buf of length *len. Returns false when it does not fit. */
static bool push_component(char *buf, size_t size, size_t *len, const char *p, size_t n)
{
    if (n == 1 && p[0] == '.')
        return true;
    if (n == 2 && p[0] == '.' && p[1] == '.') {
        while (*len > 1 && buf[*len - 1] != '/')
            (*len)--;
        if (*len > 1)
            (*len)--; /* the '/' before the dropped component */
        buf[*len] = '\0';
        return true;
    }
    size_t need = *len + (*len > 1 ? 1 : 0) + n;
    if (need >= size)
        return false;
    if (*len > 1)
        buf[(*len)++] = '/';
    memcpy(buf + *len, p, n);
    *len += n;
    buf[*len] = '\0';
    return true;
}

/* Appends every component of `path` to buf. */
static bool push_path(char *buf, size_t size, size_t *len, const char *path)
{
    const char *p = path;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (!push_component(buf, size, len, p, n))
            return false;
        p += n;
    }
    return true;
}

int cli_path_resolve(const char *cwd, const char *arg, char *out, size_t size)
{
    char buf[ODB_PATH_MAX + 2];
    size_t len = 1;
    buf[0] = '/';
    buf[1] = '\0';
    if (!arg || !*arg)
        arg = ".";
    if (arg[0] != '/' && cwd && !push_path(buf, sizeof buf, &len, cwd))
        return ODB_EPATH;
    if (!push_path(buf, sizeof buf, &len, arg))
        return ODB_EPATH;
    if (len >= size || len > ODB_PATH_MAX)
        return ODB_EPATH;
    memcpy(out, buf, len + 1);
    return 0;
}

const char *cli_path_base(const char *path)
{
    const char *s = strrchr(path, '/');
    if (!s || (s == path && !s[1]))
        return path;
    return s + 1;
}

int cli_path_split_index(const char *arg, char *path, size_t size, struct cli_index *idx, char *why,
                         size_t why_size)
{
    const char *br = strchr(arg, '[');
    struct cli_index r = {CLI_INDEX_NONE, 0};
    size_t plen = strlen(arg);
    if (br) {
        plen = (size_t)(br - arg);
        const char *close = strchr(br, ']');
        if (!close || close[1] != '\0' || close == br + 1) {
            explain(why, why_size, "malformed index in '%s' (use path[n] or path[*])", arg);
            return ODB_EPATH;
        }
        if (close == br + 2 && br[1] == '*') {
            r.kind = CLI_INDEX_ALL;
        } else {
            unsigned long long v = 0;
            for (const char *d = br + 1; d < close; d++) {
                if (*d < '0' || *d > '9' || v > UINT32_MAX) {
                    explain(why, why_size, "malformed index in '%s' (use path[n] or path[*])", arg);
                    return ODB_EPATH;
                }
                v = v * 10 + (unsigned)(*d - '0');
            }
            if (v > UINT32_MAX) {
                explain(why, why_size, "index in '%s' is too large", arg);
                return ODB_EPATH;
            }
            r.kind = CLI_INDEX_ONE;
            r.index = (uint32_t)v;
        }
    }
    if (plen >= size) {
        explain(why, why_size, "path too long");
        return ODB_EPATH;
    }
    memcpy(path, arg, plen);
    path[plen] = '\0';
    *idx = r;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Types and values                                                       */
/* ---------------------------------------------------------------------- */

enum odb_type cli_type_from_name(const char *name)
{
    static const struct {
        const char *name;
        enum odb_type type;
    } aliases[] = {
        {"BYTE", ODB_TYPE_UINT8},  {"SBYTE", ODB_TYPE_INT8},  {"CHAR", ODB_TYPE_INT8},
        {"WORD", ODB_TYPE_UINT16}, {"SHORT", ODB_TYPE_INT16}, {"DWORD", ODB_TYPE_UINT32},
        {"INT", ODB_TYPE_INT32},   {"UINT", ODB_TYPE_UINT32}, {"QWORD", ODB_TYPE_UINT64},
        {"KEY", ODB_TYPE_DIR},     {"DIR", ODB_TYPE_DIR},     {"STR", ODB_TYPE_STRING},
    };
    if (!name)
        return 0;
    enum odb_type t = odb_type_from_name(name);
    if (t)
        return t;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcasecmp(name, aliases[i].name) == 0)
            return aliases[i].type;
    return 0;
}

/* Range of a signed integer type, by element size. */
static void signed_range(size_t size, long long *lo, long long *hi)
{
    switch (size) {
    case 1:
        *lo = INT8_MIN, *hi = INT8_MAX;
        break;
    case 2:
        *lo = INT16_MIN, *hi = INT16_MAX;
        break;
    case 4:
        *lo = INT32_MIN, *hi = INT32_MAX;
        break;
    default:
        *lo = INT64_MIN, *hi = INT64_MAX;
        break;
    }
}

static unsigned long long unsigned_max(size_t size)
{
    return size >= 8 ? UINT64_MAX : (1ull << (size * 8)) - 1;
}

static bool is_signed_int(enum odb_type t)
{
    return t == ODB_TYPE_INT8 || t == ODB_TYPE_INT16 || t == ODB_TYPE_INT32 || t == ODB_TYPE_INT64;
}

static bool is_unsigned_int(enum odb_type t)
{
    return t == ODB_TYPE_UINT8 || t == ODB_TYPE_UINT16 || t == ODB_TYPE_UINT32 ||
           t == ODB_TYPE_UINT64;
}

/* Stores the low `size` bytes of an integer in host order. */
static void store_int(void *out, size_t size, unsigned long long bits)
{
    switch (size) {
    case 1: {
        uint8_t v = (uint8_t)bits;
        memcpy(out, &v, 1);
        break;
    }
    case 2: {
        uint16_t v = (uint16_t)bits;
        memcpy(out, &v, 2);
        break;
    }
    case 4: {
        uint32_t v = (uint32_t)bits;
        memcpy(out, &v, 4);
        break;
    }
    default: {
        uint64_t v = bits;
        memcpy(out, &v, 8);
        break;
    }
    }
}

/* Parses an unsigned magnitude (decimal or 0x hex) from s, which has no
 * sign. Returns false on junk or overflow of 64 bits. */
static bool parse_magnitude(const char *s, unsigned long long *out)
{
    int base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (!*s || is_blank(*s) || *s == '+' || *s == '-')
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, base);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

int cli_value_parse(enum odb_type type, const char *text, void *out, char *why, size_t why_size)
{
    size_t size = odb_type_size(type);
    if (!text || !*text) {
        explain(why, why_size, "empty value for type %s", odb_type_name(type));
        return UT_EINVAL;
    }
    if (is_signed_int(type) || is_unsigned_int(type)) {
        const char *s = text;
        bool neg = false;
        if (*s == '+' || *s == '-') {
            neg = *s == '-';
            s++;
        }
        unsigned long long mag;
        if (!parse_magnitude(s, &mag)) {
            explain(why, why_size, "'%s' is not an integer", text);
            return UT_EINVAL;
        }
        if (is_signed_int(type)) {
            long long lo, hi;
            signed_range(size, &lo, &hi);
            /* |lo| = hi + 1 in two's complement. */
            bool ok = neg ? mag <= (unsigned long long)hi + 1 : mag <= (unsigned long long)hi;
            if (!ok) {
                explain(why, why_size, "'%s' is out of range for %s (%lld..%lld)", text,
                        odb_type_name(type), lo, hi);
                return UT_EINVAL;
            }
            unsigned long long bits = neg ? 0ull - mag : mag;
            store_int(out, size, bits);
        } else {
            unsigned long long hi = unsigned_max(size);
            if ((neg && mag != 0) || mag > hi) {
                explain(why, why_size, "'%s' is out of range for %s (0..%llu)", text,
                        odb_type_name(type), hi);
                return UT_EINVAL;
            }
            store_int(out, size, mag);
        }
        return 0;
    }
    if (type == ODB_TYPE_FLOAT || type == ODB_TYPE_DOUBLE) {
        errno = 0;
        char *end;
        double d = strtod(text, &end);
        if (end == text || *end || is_blank(text[0])) {
            explain(why, why_size, "'%s' is not a number", text);
            return UT_EINVAL;
        }
        if (errno == ERANGE && isinf(d)) {
            explain(why, why_size, "'%s' is out of range for %s", text, odb_type_name(type));
            return UT_EINVAL;
        }
        if (type == ODB_TYPE_FLOAT) {
            if (isfinite(d) && fabs(d) > FLT_MAX) {
                explain(why, why_size, "'%s' is out of range for FLOAT (max %g)", text,
                        (double)FLT_MAX);
                return UT_EINVAL;
            }
            float f = (float)d;
            memcpy(out, &f, sizeof f);
        } else {
            memcpy(out, &d, sizeof d);
        }
        return 0;
    }
    if (type == ODB_TYPE_BOOL) {
        static const char *const yes[] = {"y", "yes", "true", "on", "1"};
        static const char *const no[] = {"n", "no", "false", "off", "0"};
        for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
            if (strcasecmp(text, yes[i]) == 0) {
                *(uint8_t *)out = 1;
                return 0;
            }
            if (strcasecmp(text, no[i]) == 0) {
                *(uint8_t *)out = 0;
                return 0;
            }
        }
        explain(why, why_size, "'%s' is not a boolean (use y/n, true/false or 1/0)", text);
        return UT_EINVAL;
    }
    explain(why, why_size, "type %s has no fixed-size text form", odb_type_name(type));
    return UT_EINVAL;
}

/* Prints a string of at most n bytes in double quotes with escapes. */
static void print_quoted(FILE *f, const char *s, size_t n)
{
    (void)fputc('"', f);
    for (size_t i = 0; i < n && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            (void)fprintf(f, "\\%c", c);
        else if (c == '\n')
            (void)fputs("\\n", f);
        else if (c == '\t')
            (void)fputs("\\t", f);
        else if (c < 0x20 || c == 0x7f)
            (void)fprintf(f, "\\x%02x", c);
        else
            (void)fputc(c, f);
    }
    (void)fputc('"', f);
}

void cli_value_print(FILE *f, enum odb_type type, const void *elem, size_t elem_size,
                     unsigned flags)
{
    switch (type) {
    case ODB_TYPE_INT8: {
        int8_t v;
        memcpy(&v, elem, sizeof v);
        (void)fprintf(f, "%d", v);
        break;
    }
    case ODB_TYPE_UINT8: {
        uint8_t v;
        memcpy(&v, elem, sizeof v);
        (void)fprintf(f, "%u", v);
        break;
    }
    case ODB_TYPE_INT16: {
        int16_t v;
        memcpy(&v, elem, sizeof v);
        (void)fprintf(f, "%d", v);
        break;
    }
    case ODB_TYPE_UINT16: {
        uint16_t v;
        memcpy(&v, elem, sizeof v);
        (void)fprintf(f, "%u", v);
        break;
    }
    case ODB_TYPE_INT32: {
        int32_t v;
        memcpy(&v, elem, sizeof v);
        (void)fprintf(f, "%" PRId32, v);
        break;
    }
    case ODB_TYPE_UINT32: {
        uint32_t v;
        memcpy(&v, elem, sizeof v);
        (void)fprintf(f, "%" PRIu32, v);
        break;
    }
    case ODB_TYPE_INT64: {
        int64_t v;
        memcpy(&v, elem, sizeof v);
        (void)fprintf(f, "%" PRId64, v);
        break;
    }
    case ODB_TYPE_UINT64: {
        uint64_t v;
        memcpy(&v, elem, sizeof v);
        (void)fprintf(f, "%" PRIu64, v);
        break;
    }
    case ODB_TYPE_FLOAT: {
        float v;
        memcpy(&v, elem, sizeof v);
        (void)fprintf(f, "%g", (double)v);
        break;
    }
    case ODB_TYPE_DOUBLE: {
        double v;
        memcpy(&v, elem, sizeof v);
        (void)fprintf(f, "%g", v);
        break;
    }
    case ODB_TYPE_BOOL:
        (void)fputc(*(const uint8_t *)elem ? 'y' : 'n', f);
        break;
    case ODB_TYPE_STRING:
    case ODB_TYPE_LINK: {
        const char *s = elem;
        size_t n = strnlen(s, elem_size);
        if (flags & CLI_PRINT_QUOTE)
            print_quoted(f, s, n);
        else
            (void)fwrite(s, 1, n, f);
        break;
    }
    default:
        break;
    }
}

/* ---------------------------------------------------------------------- */
/* Modes and times                                                        */
/* ---------------------------------------------------------------------- */

int cli_mode_parse(const char *text, uint32_t *mode_out)
{
    if (!text)
        return UT_EINVAL;
    if (text[0] >= '0' && text[0] <= '7' && text[1] == '\0') {
        *mode_out = (uint32_t)(text[0] - '0');
        return 0;
    }
    uint32_t m = 0;
    if (strcmp(text, "-") != 0) {
        for (const char *p = text; *p; p++) {
            switch (*p) {
            case 'r':
            case 'R':
                m |= ODB_MODE_READ;
                break;
            case 'w':
            case 'W':
                m |= ODB_MODE_WRITE;
                break;
            case 'd':
            case 'D':
                m |= ODB_MODE_DELETE;
                break;
            case '-':
                break;
            default:
                return UT_EINVAL;
            }
        }
    }
    *mode_out = m;
    return 0;
}

void cli_mode_format(uint32_t mode, char out[4])
{
    out[0] = (mode & ODB_MODE_READ) ? 'r' : '-';
    out[1] = (mode & ODB_MODE_WRITE) ? 'w' : '-';
    out[2] = (mode & ODB_MODE_DELETE) ? 'd' : '-';
    out[3] = '\0';
}

void cli_age_format(int64_t ns, char *out, size_t size)
{
    if (ns < 0)
        ns = 0;
    double s = (double)ns / 1e9;
    if (s < 10)
        (void)snprintf(out, size, "%.1fs", s);
    else if (s < 120)
        (void)snprintf(out, size, "%.0fs", s);
    else if (s < 7200)
        (void)snprintf(out, size, "%.0fm", s / 60);
    else if (s < 2 * 86400)
        (void)snprintf(out, size, "%.0fh", s / 3600);
    else
        (void)snprintf(out, size, "%.0fd", s / 86400);
}

void cli_time_format(int64_t wall_ns, bool millis, char *out, size_t size)
{
    time_t t = (time_t)(wall_ns / 1000000000);
    struct tm tm;
    if (!localtime_r(&t, &tm)) {
        (void)snprintf(out, size, "?");
        return;
    }
    char buf[32];
    (void)strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    if (millis)
        (void)snprintf(out, size, "%s.%03d", buf, (int)((wall_ns / 1000000) % 1000));
    else
        (void)snprintf(out, size, "%s", buf);
}
