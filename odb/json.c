/*
 * odb/json.c - JSON export and import of ODB subtrees (the format is
 * described in docs/ODB_JSON.md).
 *
 * Place in the layers: part of the odb library; uses base (allocation,
 * errors) and jansson for parsing. odb/save.c builds save/load on top.
 *
 * Export walks the key table directly under the ODB lock (odb__rlock, the
 * read-only section: nothing is written, so no transaction and no change
 * count), so the document is one consistent snapshot. It writes the text
 * itself instead of building a jansson tree: that costs no second copy of
 * the subtree, prints each FLOAT and DOUBLE with the fewest digits that
 * read back to the same bits (jansson prints 17 digits, 0.1f becoming
 * 0.10000000149011612), and never fails on a string that is not UTF-8
 * (such bytes are written as \u00XX, i.e. read as Latin-1). Everything
 * read from the segment is bounds-checked: a child index outside the key
 * table, a loop in a sibling list or a value block that does not hold its
 * value give UT_ECORRUPT, never a wild read.
 *
 * Import runs in two phases:
 *  1. parse (jansson) and validate the whole document into a tree of
 *     `struct item`, each with its type, shape, metadata and its value
 *     already converted to the ODB's binary layout. Nothing in the ODB is
 *     looked at, so a bad document fails here having changed nothing.
 *  2. apply the items inside one transaction (odb__begin / odb__end): any
 *     error (ODB_ETYPE against an existing key, ODB_ENOSPC, ODB_ETOOBIG
 *     when the undo log cannot hold the whole import, ...) rolls back every
 *     change of the import.
 * Jansson allocates through ut_malloc/ut_free (set once, process-wide), so
 * the tests' injected allocation failures reach the parser too.
 */
#include "odb/odb_int.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------- */
/* Jansson setup                                                           */
/* ---------------------------------------------------------------------- */

static pthread_once_t jansson_once = PTHREAD_ONCE_INIT;

/* Set when ut_malloc refused jansson an allocation in this thread. */
static __thread bool jansson_oom;

/*
 * Jansson's allocator. jansson 2.14 cannot survive a failed allocation: its
 * lexer ignores a failure to grow the token buffer and then aborts on
 * assert(c == d) in lex_unget_unsave (akheron/jansson issue #362, still
 * open), and it reports other failures as syntax errors. So when
 * ut_malloc says no (in practice: an injected failure), the refusal is
 * recorded and the memory comes from malloc instead; odb_json_import then
 * drops the parse and returns UT_ENOMEM. Callers see the failure exactly
 * where it was injected, and jansson never runs its broken path. (A real
 * exhaustion, where malloc fails too, still reaches jansson.)
 */
static void *jansson_malloc(size_t size)
{
    void *p = ut_malloc(size);
    if (!p) {
        jansson_oom = true;
        p = malloc(size ? size : 1);
    }
    return p;
}

static void jansson_init(void)
{
    json_set_alloc_funcs(jansson_malloc, ut_free);
}

/* Makes jansson allocate through ut_malloc/ut_free. Process-wide, so the
 * whole program's jansson uses our allocator; the two free the same way,
 * so objects made before the switch are still freed correctly. */
static void jansson_setup(void)
{
    pthread_once(&jansson_once, jansson_init);
}

/* ---------------------------------------------------------------------- */
/* A growable text buffer with a sticky out-of-memory flag                  */
/* ---------------------------------------------------------------------- */

struct jbuf {
    char *p;    /* heap text, NUL-terminated when not oom */
    size_t len; /* bytes used, without the NUL */
    size_t cap; /* bytes allocated */
    bool oom;   /* an allocation failed: everything after it was dropped */
};

static bool jb_reserve(struct jbuf *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = ut_realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void jb_add(struct jbuf *b, const char *s, size_t n)
{
    if (!jb_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void jb_puts(struct jbuf *b, const char *s)
{
    jb_add(b, s, strlen(s));
}

static void jb_indent(struct jbuf *b, int depth)
{
    static const char spaces[] = "                                ";
    size_t n = (size_t)depth * 2;
    while (n > 0) {
        size_t k = n < sizeof spaces - 1 ? n : sizeof spaces - 1;
        jb_add(b, spaces, k);
        n -= k;
    }
}

static void jb_printf(struct jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jb_printf(struct jbuf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    UT_ASSERT(n >= 0 && (size_t)n < sizeof tmp); /* only used for numbers */
    jb_add(b, tmp, (size_t)n);
}

/* Length of the well-formed UTF-8 sequence at s (at most n bytes), or 0
 * when the bytes there are not one (overlong forms, surrogates and code
 * points past U+10FFFF are not, as RFC 3629 and jansson say). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

/* Appends s[0..n) as a JSON string. Bytes that are not UTF-8 become
 * \u00XX (the Latin-1 reading), so the output is always valid JSON. */
static void jb_string(struct jbuf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    jb_add(b, "\"", 1);
    size_t run = 0; /* start of the pending run of bytes copied verbatim */
    size_t i = 0;
    while (i < n) {
        unsigned char c = u[i];
        const char *esc = NULL;
        char tmp[8];
        size_t len = 1;
        if (c == '"') {
            esc = "\\\"";
        } else if (c == '\\') {
            esc = "\\\\";
        } else if (c == '\n') {
            esc = "\\n";
        } else if (c == '\r') {
            esc = "\\r";
        } else if (c == '\t') {
            esc = "\\t";
        } else if (c == '\b') {
            esc = "\\b";
        } else if (c == '\f') {
            esc = "\\f";
        } else if (c < 0x20) {
            (void)snprintf(tmp, sizeof tmp, "\\u%04x", c);
            esc = tmp;
        } else if (c >= 0x80) {
            len = utf8_len(u + i, n - i);
            if (len == 0) {
                (void)snprintf(tmp, sizeof tmp, "\\u%04x", c);
                esc = tmp;
                len = 1;
            }
        }
        if (esc) {
            jb_add(b, s + run, i - run);
            jb_puts(b, esc);
            run = i + len;
        }
        i += len;
    }
    jb_add(b, s + run, n - run);
    jb_add(b, "\"", 1);
}

/* ---------------------------------------------------------------------- */
/* Export                                                                  */
/* ---------------------------------------------------------------------- */

struct exporter {
    struct odb *odb;
    struct jbuf b;
};

/* Makes a number text read as a JSON real ("1" -> "1.0"). */
static void real_suffix(char *buf, size_t size)
{
    if (strpbrk(buf, ".eE") == NULL) {
        size_t n = strlen(buf);
        if (n + 2 < size)
            memcpy(buf + n, ".0", 3);
    }
}

static void emit_float(struct jbuf *b, double d, bool is_float)
{
    if (isnan(d)) {
        jb_puts(b, "\"NaN\"");
        return;
    }
    if (isinf(d)) {
        jb_puts(b, d > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }
    /* The shortest text that reads back (the way import reads it: strtod,
     * then a cast for FLOAT) to the same value. */
    char buf[40];
    int prec = is_float ? 6 : 15;
    for (;; prec++) {
        (void)snprintf(buf, sizeof buf, "%.*g", prec, d);
        double back = strtod(buf, NULL);
        if (is_float ? (float)back == (float)d : back == d)
            break;
        if (prec >= 17)
            break;
    }
    /* JSON wants '.' whatever the LC_NUMERIC of the program. */
    for (char *p = buf; *p; p++)
        if (*p == ',')
            *p = '.';
    real_suffix(buf, sizeof buf);
    jb_puts(b, buf);
}

/* Appends element i of the value v of key k. */
static void emit_elem(struct jbuf *b, const struct odb_key_slot *k, const uint8_t *v, uint32_t i)
{
    const uint8_t *e = v + (size_t)i * k->elem_size;
    switch ((enum odb_type)k->type) {
    case ODB_TYPE_INT8: {
        int8_t x;
        memcpy(&x, e, sizeof x);
        jb_printf(b, "%d", x);
        break;
    }
    case ODB_TYPE_UINT8:
        jb_printf(b, "%u", e[0]);
        break;
    case ODB_TYPE_INT16: {
        int16_t x;
        memcpy(&x, e, sizeof x);
        jb_printf(b, "%d", x);
        break;
    }
    case ODB_TYPE_UINT16: {
        uint16_t x;
        memcpy(&x, e, sizeof x);
        jb_printf(b, "%u", x);
        break;
    }
    case ODB_TYPE_INT32: {
        int32_t x;
        memcpy(&x, e, sizeof x);
        jb_printf(b, "%d", x);
        break;
    }
    case ODB_TYPE_UINT32: {
        uint32_t x;
        memcpy(&x, e, sizeof x);
        jb_printf(b, "%u", x);
        break;
    }
    case ODB_TYPE_INT64: {
        int64_t x;
        memcpy(&x, e, sizeof x);
        jb_printf(b, "%lld", (long long)x);
        break;
    }
    case ODB_TYPE_UINT64: {
        uint64_t x;
        memcpy(&x, e, sizeof x);
        /* JSON parsers (jansson too) read integers as signed 64-bit. */
        if (x > (uint64_t)INT64_MAX)
            jb_printf(b, "\"0x%llx\"", (unsigned long long)x);
        else
            jb_printf(b, "%llu", (unsigned long long)x);
        break;
    }
    case ODB_TYPE_FLOAT: {
        float x;
        memcpy(&x, e, sizeof x);
        emit_float(b, x, true);
        break;
    }
    case ODB_TYPE_DOUBLE: {
        double x;
        memcpy(&x, e, sizeof x);
        emit_float(b, x, false);
        break;
    }
    case ODB_TYPE_BOOL:
        jb_puts(b, e[0] ? "true" : "false");
        break;
    case ODB_TYPE_STRING:
    case ODB_TYPE_LINK:
        /* A string always ends inside its element; a damaged one is cut
         * so that it still fits its capacity on import. */
        jb_string(b, (const char *)e, strnlen((const char *)e, k->elem_size - 1));
        break;
    default:
        UT_ASSERT(0); /* checked by the caller */
    }
}

/* The value block of key k, or NULL when it does not hold the value. */
static const uint8_t *value_of(const struct odb *odb, const struct odb_key_slot *k)
{
    const uint8_t *v = odb__heap_payload(odb, k->data);
    if (v && (uint64_t)k->n_elem * k->elem_size > odb__heap_capacity(odb, k->data))
        return NULL;
    return v;
}

static int emit_dir(struct exporter *x, uint32_t dir, int depth);

/* Appends the "name/key" and "name" members of key idx at `depth`. */
static int emit_member(struct exporter *x, uint32_t idx, int depth)
{
    struct odb *odb = x->odb;
    const struct odb_key_slot *k = &odb->keys[idx];
    struct jbuf *b = &x->b;
    size_t name_len = k->name_len <= ODB_NAME_MAX ? k->name_len : ODB_NAME_MAX;
    enum odb_type type = (enum odb_type)k->type;
    if (type <= 0 || type >= ODB_TYPE_MAX)
        return odb__fail(UT_ECORRUPT, "key %u has an invalid type %d", idx, (int)type);
    char name_key[ODB_NAME_MAX + 5];
    int nk = snprintf(name_key, sizeof name_key, "%.*s/key", (int)name_len, k->name);
    jb_indent(b, depth);
    jb_string(b, name_key, nk > 0 && (size_t)nk < sizeof name_key ? (size_t)nk : 0);
    jb_printf(b, ": {\"type\": \"%s\"", odb_type_name(type));
    if (type != ODB_TYPE_DIR) {
        jb_printf(b, ", \"n\": %u", k->n_elem);
        if (type == ODB_TYPE_STRING || type == ODB_TYPE_LINK)
            jb_printf(b, ", \"size\": %u", k->elem_size);
    }
    jb_printf(b, ", \"mode\": %u, \"mtime\": %lld},\n", k->mode, (long long)k->mtime_ns);
    jb_indent(b, depth);
    jb_string(b, k->name, name_len);
    jb_add(b, ": ", 2);
    if (type == ODB_TYPE_DIR)
        return emit_dir(x, idx, depth);
    const uint8_t *v = value_of(odb, k);
    size_t ts = odb_type_size(type);
    if (!v || k->n_elem == 0 || k->elem_size == 0 || (ts && k->elem_size != ts))
        return odb__fail(UT_ECORRUPT, "key '%.*s' has no valid value", (int)name_len, k->name);
    if (k->n_elem == 1) {
        emit_elem(b, k, v, 0);
        return 0;
    }
    jb_add(b, "[", 1);
    for (uint32_t i = 0; i < k->n_elem; i++) {
        if (i)
            jb_add(b, ", ", 2);
        emit_elem(b, k, v, i);
        if (b->oom)
            break;
    }
    jb_add(b, "]", 1);
    return 0;
}

/* Appends the object of directory `dir`, whose members are at depth+1. */
static int emit_dir(struct exporter *x, uint32_t dir, int depth)
{
    struct odb *odb = x->odb;
    const struct odb_key_slot *d = &odb->keys[dir];
    struct jbuf *b = &x->b;
    /* Each level of a path takes at least two bytes ("/a"). */
    if (depth > ODB_PATH_MAX / 2)
        return odb__fail(UT_ECORRUPT, "directories nested deeper than a path allows");
    if (d->first_child == ODB_NIL) {
        jb_add(b, "{}", 2);
        return 0;
    }
    jb_add(b, "{\n", 2);
    uint32_t n = 0;
    for (uint32_t c = d->first_child; c != ODB_NIL; c = odb->keys[c].next_sib) {
        if (c >= odb->hdr->max_keys || c == 0 || odb->keys[c].type == 0 ||
            odb->keys[c].parent != dir || ++n > d->n_children)
            return odb__fail(UT_ECORRUPT, "child list of directory '%s' is damaged", d->name);
        if (n > 1)
            jb_add(b, ",\n", 2);
        int err = emit_member(x, c, depth + 1);
        if (err)
            return err;
        if (b->oom)
            return UT_ENOMEM;
    }
    jb_add(b, "\n", 1);
    jb_indent(b, depth);
    jb_add(b, "}", 1);
    return 0;
}

int odb_json_export(struct odb *odb, struct odb_hkey key, char **out, size_t *len_out)
{
    odb__clear_error();
    struct exporter x = {odb, {0}};
    int err = odb__rlock(odb);
    if (err)
        return err;
    uint32_t idx;
    err = odb__resolve(odb, key, NULL, true, &idx);
    if (!err && odb->keys[idx].type == ODB_TYPE_LINK) {
        /* A handle to a link exports what the link points to. */
        const struct odb_key_slot *k = &odb->keys[idx];
        const char *t = (const char *)value_of(odb, k);
        if (!t || k->elem_size == 0 || !memchr(t, '\0', k->elem_size))
            err = odb__fail(UT_ECORRUPT, "link '%s' has no valid target", k->name);
        else
            err = odb__resolve(odb, ODB_ROOT, t, true, &idx);
    }
    if (!err) {
        if (odb->keys[idx].type == ODB_TYPE_DIR) {
            err = emit_dir(&x, idx, 0);
        } else {
            /* A single value: a one-member document that imports into its
             * parent directory. */
            jb_add(&x.b, "{\n", 2);
            err = emit_member(&x, idx, 1);
            jb_add(&x.b, "\n}", 2);
        }
        jb_add(&x.b, "\n", 1);
    }
    odb__runlock(odb);
    if (!err && x.b.oom)
        err = odb__fail(UT_ENOMEM, "out of memory exporting JSON");
    if (err) {
        ut_free(x.b.p);
        return err;
    }
    *out = x.b.p;
    if (len_out)
        *len_out = x.b.len;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Import, phase 1: parse and validate                                     */
/* ---------------------------------------------------------------------- */

/* One key of the document, validated and converted. */
struct item {
    const char *name;   /* borrowed from the jansson document */
    json_t *val;        /* the value, borrowed from the document */
    bool has_meta;      /* a "name/key" member gave the type */
    enum odb_type type; /* declared or inferred */
    uint32_t n_elem;    /* values: elements */
    uint32_t elem_size; /* values: bytes per element */
    uint32_t min_size;  /* strings: longest element + 1 */
    int mode;           /* enum odb_mode bits, or -1 when not given */
    bool has_mtime;     /* mtime_ns was given */
    int64_t mtime_ns;   /* CLOCK_REALTIME ns */
    void *data;         /* values: n_elem * elem_size bytes, owned */
    struct item *kids;  /* directories: children in document order, owned */
    size_t n_kids;
};

struct importer {
    struct odb *odb;
    char path[ODB_PATH_MAX + 2]; /* document path of the item at hand, for messages */
    size_t path_len;
};

static void items_free(struct item *items, size_t n)
{
    if (!items)
        return;
    for (size_t i = 0; i < n; i++) {
        ut_free(items[i].data);
        items_free(items[i].kids, items[i].n_kids);
    }
    ut_free(items);
}

static const char *im_path(const struct importer *im)
{
    return im->path_len ? im->path : "/";
}

/* Appends "/name" to the message path; false when it gets too long. */
static bool path_push(struct importer *im, const char *name, size_t *saved)
{
    size_t n = strlen(name);
    *saved = im->path_len;
    if (im->path_len + 1 + n > ODB_PATH_MAX)
        return false;
    im->path[im->path_len] = '/';
    memcpy(im->path + im->path_len + 1, name, n + 1);
    im->path_len += 1 + n;
    return true;
}

static void path_pop(struct importer *im, size_t saved)
{
    im->path_len = saved;
    im->path[saved] = '\0';
}

static int bad_doc(const struct importer *im, const char *what)
{
    return odb__fail(ODB_EJSON, "JSON '%s': %s", im_path(im), what);
}

/* An integer as sign and magnitude, so that the whole INT64 and UINT64
 * ranges fit. */
struct bigint {
    bool neg;
    uint64_t mag;
};

/* Reads an integer element: a JSON integer, a real with an integral value,
 * or a string "0x..." (how UINT64 values past INT64_MAX are written).
 * Returns false when e is none of those. */
static bool read_int(const json_t *e, struct bigint *out)
{
    if (json_is_integer(e)) {
        json_int_t v = json_integer_value(e);
        out->neg = v < 0;
        out->mag = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
        return true;
    }
    if (json_is_real(e)) {
        double d = json_real_value(e);
        if (!isfinite(d) || d != floor(d) || fabs(d) >= 18446744073709551616.0)
            return false;
        out->neg = d < 0;
        out->mag = (uint64_t)fabs(d);
        return true;
    }
    if (json_is_string(e)) {
        const char *s = json_string_value(e);
        size_t n = json_string_length(e);
        if (n < 3 || n > 18 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
            return false;
        uint64_t v = 0;
        for (size_t i = 2; i < n; i++) {
            int c = (unsigned char)s[i], d;
            if (c >= '0' && c <= '9')
                d = c - '0';
            else if (c >= 'a' && c <= 'f')
                d = c - 'a' + 10;
            else if (c >= 'A' && c <= 'F')
                d = c - 'A' + 10;
            else
                return false;
            v = v << 4 | (uint64_t)d;
        }
        out->neg = false;
        out->mag = v;
        return true;
    }
    return false;
}

/* Reads a FLOAT/DOUBLE element: a JSON number or "NaN", "Infinity",
 * "-Infinity". */
static bool read_real(const json_t *e, double *out)
{
    if (json_is_number(e)) {
        *out = json_number_value(e);
        return true;
    }
    if (!json_is_string(e))
        return false;
    const char *s = json_string_value(e);
    if (strcmp(s, "NaN") == 0)
        *out = NAN;
    else if (strcmp(s, "Infinity") == 0)
        *out = INFINITY;
    else if (strcmp(s, "-Infinity") == 0)
        *out = -INFINITY;
    else
        return false;
    return true;
}

/* Converts one element e to `type` at dst (elem_size bytes, zeroed).
 * Returns NULL or a static text saying why it cannot. */
static const char *convert_elem(const json_t *e, enum odb_type type, uint32_t elem_size,
                                uint8_t *dst)
{
    static const struct {
        bool is_signed;
        int bits;
    } ints[ODB_TYPE_MAX] = {
        [ODB_TYPE_INT8] = {true, 8},   [ODB_TYPE_UINT8] = {false, 8},
        [ODB_TYPE_INT16] = {true, 16}, [ODB_TYPE_UINT16] = {false, 16},
        [ODB_TYPE_INT32] = {true, 32}, [ODB_TYPE_UINT32] = {false, 32},
        [ODB_TYPE_INT64] = {true, 64}, [ODB_TYPE_UINT64] = {false, 64},
    };
    switch (type) {
    case ODB_TYPE_INT8:
    case ODB_TYPE_UINT8:
    case ODB_TYPE_INT16:
    case ODB_TYPE_UINT16:
    case ODB_TYPE_INT32:
    case ODB_TYPE_UINT32:
    case ODB_TYPE_INT64:
    case ODB_TYPE_UINT64: {
        struct bigint v;
        if (!read_int(e, &v))
            return "expected an integer";
        int bits = ints[type].bits;
        uint64_t max_pos = ints[type].is_signed
                               ? (UINT64_C(1) << (bits - 1)) - 1
                               : (bits == 64 ? UINT64_MAX : (UINT64_C(1) << bits) - 1);
        uint64_t max_neg = ints[type].is_signed ? UINT64_C(1) << (bits - 1) : 0;
        if (v.neg ? v.mag > max_neg : v.mag > max_pos)
            return "integer out of range for the type";
        /* Two's complement of the magnitude, little end first: the same
         * bytes as the native store on the (little-endian) hosts we run
         * on, written portably through a uint64_t. */
        uint64_t u = v.neg ? ~v.mag + 1 : v.mag;
        switch (bits) {
        case 8: {
            uint8_t x = (uint8_t)u;
            memcpy(dst, &x, 1);
            break;
        }
        case 16: {
            uint16_t x = (uint16_t)u;
            memcpy(dst, &x, 2);
            break;
        }
        case 32: {
            uint32_t x = (uint32_t)u;
            memcpy(dst, &x, 4);
            break;
        }
        default:
            memcpy(dst, &u, 8);
            break;
        }
        return NULL;
    }
    case ODB_TYPE_FLOAT:
    case ODB_TYPE_DOUBLE: {
        double d;
        if (!read_real(e, &d))
            return "expected a number, \"NaN\", \"Infinity\" or \"-Infinity\"";
        if (type == ODB_TYPE_DOUBLE) {
            memcpy(dst, &d, 8);
            return NULL;
        }
        /* Past FLT_MAX plus half an ulp a finite double rounds to
         * infinity (and the C cast is undefined). */
        if (isfinite(d) && fabs(d) >= (double)FLT_MAX + ldexp(1.0, 103))
            return "number out of range for FLOAT";
        float f = (float)d;
        memcpy(dst, &f, 4);
        return NULL;
    }
    case ODB_TYPE_BOOL:
        if (json_is_boolean(e)) {
            dst[0] = json_is_true(e);
        } else if (json_is_integer(e) &&
                   (json_integer_value(e) == 0 || json_integer_value(e) == 1)) {
            dst[0] = (uint8_t)json_integer_value(e);
        } else {
            return "expected true or false";
        }
        return NULL;
    case ODB_TYPE_STRING:
    case ODB_TYPE_LINK: {
        if (!json_is_string(e))
            return "expected a string";
        size_t n = json_string_length(e);
        if (n + 1 > elem_size)
            return "string longer than the key's capacity";
        if (type == ODB_TYPE_LINK && (n == 0 || json_string_value(e)[0] != '/'))
            return "a link target must be an absolute path";
        memcpy(dst, json_string_value(e), n);
        return NULL;
    }
    default:
        return "values cannot have this type";
    }
}

static const json_t *elem_at(const json_t *val, uint32_t i)
{
    return json_is_array(val) ? json_array_get(val, i) : val;
}

/* Converts the value `val` (one element or an array of n_elem) into a new
 * buffer of n_elem * elem_size bytes (*out, owned by the caller). Returns
 * 0, ODB_EJSON (with the message naming err_code's cause) or UT_ENOMEM;
 * `err_code` is the code for a value that does not convert. */
static int convert_value(const struct importer *im, const json_t *val, enum odb_type type,
                         uint32_t n_elem, uint32_t elem_size, int err_code, void **out)
{
    uint8_t *buf = ut_calloc(n_elem, elem_size);
    if (!buf)
        return odb__fail(UT_ENOMEM, "out of memory converting '%s'", im_path(im));
    for (uint32_t i = 0; i < n_elem; i++) {
        const char *why =
            convert_elem(elem_at(val, i), type, elem_size, buf + (size_t)i * elem_size);
        if (why) {
            ut_free(buf);
            if (n_elem > 1)
                return odb__fail(err_code, "JSON '%s' element %u: %s (type %s)", im_path(im), i,
                                 why, odb_type_name(type));
            return odb__fail(err_code, "JSON '%s': %s (type %s)", im_path(im), why,
                             odb_type_name(type));
        }
    }
    *out = buf;
    return 0;
}

/* Longest string element + 1, or 0 when some element is not a string. */
static size_t strings_size(const json_t *val, uint32_t n_elem)
{
    size_t max = 0;
    for (uint32_t i = 0; i < n_elem; i++) {
        const json_t *e = elem_at(val, i);
        if (!json_is_string(e))
            return 0;
        size_t n = json_string_length(e) + 1;
        if (n > max)
            max = n;
    }
    return max;
}

/* The type a value without metadata gets: see docs/ODB_JSON.md. Returns
 * 0 (no type) with *why set when the value has none. */
static enum odb_type infer_type(const json_t *val, const char **why)
{
    size_t n = json_is_array(val) ? json_array_size(val) : 1;
    enum odb_type t = 0;
    if (json_is_object(val))
        return ODB_TYPE_DIR;
    if (n == 0) {
        *why = "an empty array has no type; give a \"/key\" member";
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *e = elem_at(val, (uint32_t)i);
        enum odb_type et;
        if (json_is_integer(e)) {
            json_int_t v = json_integer_value(e);
            et = v < INT32_MIN || v > INT32_MAX ? ODB_TYPE_INT64 : ODB_TYPE_INT32;
        } else if (json_is_real(e)) {
            et = ODB_TYPE_DOUBLE;
        } else if (json_is_boolean(e)) {
            et = ODB_TYPE_BOOL;
        } else if (json_is_string(e)) {
            et = ODB_TYPE_STRING;
        } else {
            *why = json_is_null(e) ? "null is not a value" : "arrays may hold only scalars";
            return 0;
        }
        if (i == 0 || t == et) {
            t = et;
            continue;
        }
        bool t_num = t == ODB_TYPE_INT32 || t == ODB_TYPE_INT64 || t == ODB_TYPE_DOUBLE;
        bool et_num = et == ODB_TYPE_INT32 || et == ODB_TYPE_INT64 || et == ODB_TYPE_DOUBLE;
        if (!t_num || !et_num) {
            *why = "array elements of different types";
            return 0;
        }
        /* Numbers widen: INT32 < INT64 < DOUBLE. */
        if (t == ODB_TYPE_DOUBLE || et == ODB_TYPE_DOUBLE)
            t = ODB_TYPE_DOUBLE;
        else
            t = ODB_TYPE_INT64;
    }
    return t;
}

static uint32_t round32(size_t n)
{
    return (uint32_t)((n + 31) & ~(size_t)31);
}

/* Reads an optional integer member of a metadata object into *out.
 * Returns 1 when present and in [min, max], 0 when absent, -1 when bad. */
static int meta_int(const json_t *meta, const char *field, long long min, long long max,
                    long long *out)
{
    const json_t *v = json_object_get(meta, field);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return -1;
    *out = json_integer_value(v);
    return 1;
}

static int validate_object(struct importer *im, const json_t *obj, struct item **out,
                           size_t *n_out);

/* Fills `it` from its value and its "/key" metadata (meta, may be NULL).
 * On error it may hold allocations: the caller frees it. */
static int validate_item(struct importer *im, struct item *it, const json_t *meta)
{
    const json_t *val = it->val;
    long long v;
    it->mode = -1;
    if (meta) {
        if (!json_is_object(meta))
            return bad_doc(im, "its \"/key\" member is not an object");
        const json_t *t = json_object_get(meta, "type");
        if (!json_is_string(t))
            return bad_doc(im, "\"/key\" needs a \"type\" string");
        it->type = odb_type_from_name(json_string_value(t));
        if (it->type == 0)
            return odb__fail(ODB_EJSON, "JSON '%s': unknown type \"%s\"", im_path(im),
                             json_string_value(t));
        it->has_meta = true;
        int r = meta_int(meta, "mode", 0, ODB_MODE_ALL, &v);
        if (r < 0)
            return bad_doc(im, "\"mode\" must be an integer 0..7");
        if (r > 0)
            it->mode = (int)v;
        r = meta_int(meta, "mtime", INT64_MIN, INT64_MAX, &v);
        if (r < 0)
            return bad_doc(im, "\"mtime\" must be an integer (ns)");
        if (r > 0) {
            it->has_mtime = true;
            it->mtime_ns = v;
        }
    } else {
        const char *why = NULL;
        it->type = infer_type(val, &why);
        if (it->type == 0)
            return bad_doc(im, why);
    }
    if (it->type == ODB_TYPE_DIR) {
        if (!json_is_object(val))
            return bad_doc(im, "a DIR must be a JSON object");
        return validate_object(im, val, &it->kids, &it->n_kids);
    }
    if (json_is_object(val))
        return odb__fail(ODB_EJSON, "JSON '%s': an object cannot be of type %s", im_path(im),
                         odb_type_name(it->type));
    size_t n = json_is_array(val) ? json_array_size(val) : 1;
    if (n == 0 || n > UINT32_MAX)
        return bad_doc(im, "an array needs 1 to 2^32-1 elements");
    int r = meta ? meta_int(meta, "n", 1, UINT32_MAX, &v) : 0;
    if (r < 0)
        return bad_doc(im, "\"n\" must be a positive integer");
    if (r > 0 && (uint64_t)v != n)
        return odb__fail(ODB_EJSON, "JSON '%s': \"n\" is %lld but the value has %zu elements",
                         im_path(im), v, n);
    it->n_elem = (uint32_t)n;
    size_t esize = odb_type_size(it->type);
    if (it->type == ODB_TYPE_STRING || it->type == ODB_TYPE_LINK) {
        size_t need = strings_size(val, it->n_elem);
        if (need == 0)
            return odb__fail(ODB_EJSON, "JSON '%s': expected strings (type %s)", im_path(im),
                             odb_type_name(it->type));
        if (need > UINT32_MAX)
            return bad_doc(im, "string too long");
        it->min_size = (uint32_t)need;
        r = meta ? meta_int(meta, "size", 1, UINT32_MAX, &v) : 0;
        if (r < 0)
            return bad_doc(im, "\"size\" must be a positive integer");
        if (r > 0 && (uint64_t)v < need)
            return odb__fail(ODB_EJSON, "JSON '%s': a string of %zu bytes exceeds \"size\" %lld",
                             im_path(im), need, v);
        if (r > 0)
            esize = (size_t)v;
        else if (it->type == ODB_TYPE_STRING)
            esize = round32(need);
        else
            esize = need;
        if (it->type == ODB_TYPE_LINK && need > ODB_PATH_MAX + 1)
            return bad_doc(im, "link target longer than a path");
    }
    if ((uint64_t)esize * it->n_elem > UINT32_MAX)
        return bad_doc(im, "value larger than 4 GiB");
    it->elem_size = (uint32_t)esize;
    return convert_value(im, val, it->type, it->n_elem, it->elem_size, ODB_EJSON, &it->data);
}

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* ODB names compare case-insensitively (ASCII letters only). */
static int name_cmp(const void *a, const void *b)
{
    const unsigned char *x = *(const unsigned char *const *)a;
    const unsigned char *y = *(const unsigned char *const *)b;
    for (;; x++, y++) {
        int d = lower(*x) - lower(*y);
        if (d || !*x)
            return d;
    }
}

/* True when the member name has the form "<name>/key"; *base_len gets the
 * length of <name>. */
static bool is_meta_name(const char *name, size_t *base_len)
{
    const char *slash = strchr(name, '/');
    if (!slash || strcmp(slash, "/key") != 0)
        return false;
    *base_len = (size_t)(slash - name);
    return true;
}

/* Validates every member of the JSON object `obj` into a new array of
 * items (*out, freed with items_free). Returns 0, ODB_EJSON or UT_ENOMEM;
 * nothing is allocated on error. */
static int validate_object(struct importer *im, const json_t *obj, struct item **out, size_t *n_out)
{
    const char *name;
    json_t *val;
    size_t n = 0;
    json_object_foreach((json_t *)obj, name, val)
    {
        size_t base_len;
        if (!is_meta_name(name, &base_len)) {
            n++;
            continue;
        }
        /* Metadata of a value that the object must hold too. */
        char base[ODB_NAME_MAX + 1];
        if (base_len == 0 || base_len > ODB_NAME_MAX || !odb__name_valid(name, base_len)) {
            return odb__fail(ODB_EJSON, "JSON '%s': invalid key name '%.80s'", im_path(im), name);
        }
        memcpy(base, name, base_len);
        base[base_len] = '\0';
        if (!json_object_get(obj, base))
            return odb__fail(ODB_EJSON, "JSON '%s': member '%s' has no value '%s'", im_path(im),
                             name, base);
    }
    struct item *items = ut_calloc(n ? n : 1, sizeof *items);
    const char **names = ut_calloc(n ? n : 1, sizeof *names);
    int err = 0;
    size_t k = 0;
    if (!items || !names) {
        err = odb__fail(UT_ENOMEM, "out of memory reading JSON '%s'", im_path(im));
        goto fail;
    }
    json_object_foreach((json_t *)obj, name, val)
    {
        size_t base_len;
        if (is_meta_name(name, &base_len))
            continue;
        size_t len = strlen(name);
        if (!odb__name_valid(name, len)) {
            err = odb__fail(ODB_EJSON, "JSON '%s': invalid key name '%.80s'", im_path(im), name);
            goto fail;
        }
        char meta_name[ODB_NAME_MAX + 5];
        (void)snprintf(meta_name, sizeof meta_name, "%s/key", name); /* len <= 63 */
        size_t saved;
        if (!path_push(im, name, &saved)) {
            err = bad_doc(im, "path longer than ODB_PATH_MAX");
            goto fail;
        }
        struct item *it = &items[k];
        names[k++] = name;
        it->name = name;
        it->val = val;
        err = validate_item(im, it, json_object_get(obj, meta_name));
        if (err)
            goto fail;
        path_pop(im, saved);
    }
    qsort(names, n, sizeof *names, name_cmp);
    for (size_t i = 1; i < n; i++) {
        if (name_cmp(&names[i - 1], &names[i]) == 0) {
            err = odb__fail(ODB_EJSON,
                            "JSON '%s': names '%s' and '%s' differ only in case, "
                            "which ODB names do not",
                            im_path(im), names[i - 1], names[i]);
            goto fail;
        }
    }
    ut_free(names);
    *out = items;
    *n_out = n;
    return 0;
fail:
    ut_free(names);
    items_free(items, k);
    return err;
}

/* ---------------------------------------------------------------------- */
/* Import, phase 2: apply inside one transaction                           */
/* ---------------------------------------------------------------------- */

static bool is_number_type(enum odb_type t)
{
    return t >= ODB_TYPE_INT8 && t <= ODB_TYPE_DOUBLE;
}

/* The bytes to write into the existing value key k for item it: the item's
 * own data, or, for an item without metadata, its value converted to the
 * key's type and capacity (a number for an INT8 key, a string kept within
 * a larger capacity). *owned says whether *data must be freed. Returns 0,
 * ODB_ETYPE or UT_ENOMEM. */
static int data_for_key(struct importer *im, const struct item *it, const struct odb_key_slot *k,
                        void **data, uint32_t *elem_size, bool *owned)
{
    enum odb_type kt = (enum odb_type)k->type;
    *owned = false;
    *data = it->data;
    *elem_size = it->elem_size;
    if (kt == it->type && (it->has_meta || kt != ODB_TYPE_STRING))
        return 0;
    if (it->has_meta || !(kt == it->type || (is_number_type(kt) && is_number_type(it->type))))
        return odb__fail(ODB_ETYPE, "JSON '%s' is of type %s, but the key is %s", im_path(im),
                         odb_type_name(it->type), odb_type_name(kt));
    uint32_t esize = odb_type_size(kt) ? (uint32_t)odb_type_size(kt) : it->elem_size;
    if (kt == ODB_TYPE_STRING) {
        /* Keep the key's capacity when the strings fit in it. */
        if (k->elem_size >= it->min_size)
            esize = k->elem_size;
        if (esize == it->elem_size)
            return 0;
    }
    int err = convert_value(im, it->val, kt, it->n_elem, esize, ODB_ETYPE, data);
    if (err)
        return err;
    *elem_size = esize;
    *owned = true;
    return 0;
}

/* Applies the item's mode and, when the key was written, its mtime. */
static int apply_meta(struct odb *odb, uint32_t idx, const struct item *it, bool written)
{
    struct odb_key_slot *k = &odb->keys[idx];
    int err;
    if (it->mode >= 0 && it->mode != k->mode) {
        err = odb__undo_save(odb, &k->mode, sizeof k->mode);
        if (err)
            return err;
        k->mode = (uint8_t)it->mode;
        err = odb__touch(odb, idx);
        if (err)
            return err;
        written = true;
    }
    if (written && it->has_mtime && k->mtime_ns != it->mtime_ns) {
        err = odb__undo_save(odb, &k->mtime_ns, sizeof k->mtime_ns);
        if (err)
            return err;
        k->mtime_ns = it->mtime_ns;
    }
    return 0;
}

static int apply_dir(struct importer *im, uint32_t dir, const struct item *items, size_t n);

/* Creates or updates the key for item `it` in directory `dir`. */
static int apply_item(struct importer *im, uint32_t dir, const struct item *it)
{
    struct odb *odb = im->odb;
    uint32_t idx;
    bool written = false;
    int err = odb__resolve(odb, odb__handle(odb, dir), it->name, false, &idx);
    if (err == ODB_ENOKEY) {
        err = odb__create(odb, odb__handle(odb, dir), it->name, it->type, it->n_elem, it->elem_size,
                          &idx);
        if (err)
            return err;
        if (it->type != ODB_TYPE_DIR) {
            /* A new block: rollback frees it, so its bytes need no undo
             * record (as in odb_link). */
            uint8_t *v = odb__heap_payload(odb, odb->keys[idx].data);
            if (!v)
                return odb__fail(UT_ECORRUPT, "new key '%s' has no value block", im_path(im));
            memcpy(v, it->data, (size_t)it->n_elem * it->elem_size);
        }
        written = true;
    } else if (err) {
        return err;
    } else if (it->type == ODB_TYPE_DIR) {
        if (odb->keys[idx].type != ODB_TYPE_DIR)
            return odb__fail(ODB_ETYPE, "JSON '%s' is a directory, but the key is %s", im_path(im),
                             odb_type_name((enum odb_type)odb->keys[idx].type));
    } else {
        const struct odb_key_slot *k = &odb->keys[idx];
        if (k->type == ODB_TYPE_DIR)
            return odb__fail(ODB_ETYPE, "JSON '%s' is of type %s, but the key is a directory",
                             im_path(im), odb_type_name(it->type));
        void *data;
        uint32_t esize;
        bool owned;
        err = data_for_key(im, it, k, &data, &esize, &owned);
        if (err)
            return err;
        size_t size = (size_t)it->n_elem * esize;
        const uint8_t *old = value_of(odb, k);
        bool same =
            old && k->n_elem == it->n_elem && k->elem_size == esize && memcmp(old, data, size) == 0;
        if (!same && !(k->mode & ODB_MODE_WRITE))
            err = odb__fail(ODB_EACCESS, "key '%s' is not writable", im_path(im));
        else if (!same)
            err = odb__set_value(odb, idx, (enum odb_type)k->type, data, size, it->n_elem);
        if (owned)
            ut_free(data);
        if (err)
            return err;
        written = !same;
    }
    if (it->type == ODB_TYPE_DIR) {
        err = apply_dir(im, idx, it->kids, it->n_kids);
        if (err)
            return err;
    }
    return apply_meta(odb, idx, it, written);
}

static int apply_dir(struct importer *im, uint32_t dir, const struct item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t saved;
        bool fits = path_push(im, items[i].name, &saved);
        UT_ASSERT(fits); /* validation checked the length of every path */
        int err = apply_item(im, dir, &items[i]);
        if (err)
            return err;
        path_pop(im, saved);
    }
    return 0;
}

int odb_json_import(struct odb *odb, struct odb_hkey key, const char *json, size_t len)
{
    odb__clear_error();
    jansson_setup();
    struct importer im = {.odb = odb};
    struct item *items = NULL;
    size_t n_items = 0;
    if (!json)
        return odb__fail(UT_EINVAL, "no JSON text");
    json_error_t jerr;
    jansson_oom = false;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (jansson_oom || (!doc && json_error_code(&jerr) == json_error_out_of_memory)) {
        json_decref(doc);
        return odb__fail(UT_ENOMEM, "out of memory parsing JSON");
    }
    if (!doc) {
        return odb__fail(ODB_EJSON, "JSON line %d, column %d: %s", jerr.line, jerr.column,
                         jerr.text);
    }
    int err;
    if (!json_is_object(doc)) {
        err = odb__fail(ODB_EJSON, "JSON line 1: the document must be an object");
        goto out;
    }
    err = validate_object(&im, doc, &items, &n_items);
    if (err)
        goto out;
    err = odb__begin(odb);
    if (err)
        goto out;
    uint32_t dir;
    err = odb__resolve(odb, key, NULL, true, &dir);
    if (!err && odb->keys[dir].type == ODB_TYPE_LINK) {
        const struct odb_key_slot *k = &odb->keys[dir];
        const char *t = (const char *)value_of(odb, k);
        if (!t || k->elem_size == 0 || !memchr(t, '\0', k->elem_size))
            err = odb__fail(UT_ECORRUPT, "link '%s' has no valid target", k->name);
        else
            err = odb__resolve(odb, ODB_ROOT, t, true, &dir);
    }
    if (!err && odb->keys[dir].type != ODB_TYPE_DIR)
        err = odb__fail(ODB_ENOTDIR, "'%s' is not a directory", odb->keys[dir].name);
    if (!err)
        err = apply_dir(&im, dir, items, n_items);
    err = odb__end(odb, err);
out:
    items_free(items, n_items);
    json_decref(doc);
    return err;
}
