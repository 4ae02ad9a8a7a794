/*
 * odb/save.c - durable save and load of ODB subtrees as JSON files
 * (optionally gzip-compressed).
 *
 * Place in the layers: part of the odb library, on top of json.c; uses
 * zlib. Programs (odbedit save/load, the client layer's snapshot on the
 * last client's exit) call odb_save and odb_load.
 *
 * A save never leaves a half-written file under the target name:
 *
 *   1. export the subtree (one consistent snapshot, json.c) and compress
 *      it in memory when the name ends in ".gz";
 *   2. create "<file>.tmp.<pid>.<n>" in the target's directory with
 *      O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, mode 0600 (O_EXCL: never
 *      through a planted symlink or into another process's temp file);
 *   3. write everything, fsync, close;
 *   4. rename over the target (atomic: readers see the old file or the
 *      new one), then fsync the directory so that the rename itself
 *      survives a power cut.
 * Any failure in 2-3 unlinks the temp file, leaving the old file intact.
 * Fault points "odb.save.write" (a write fails with ENOSPC) and
 * "odb.save.fsync" (fsync fails with EIO) let tests reach those paths.
 *
 * A load reads the whole file (at most ODB_LOAD_MAX bytes, before and after
 * decompression), inflates it when it starts with the gzip magic, and
 * imports it with odb_json_import: all or nothing.
 *
 * zlib allocates through ut_calloc/ut_free (zalloc/zfree), so injected
 * allocation failures reach it too. Nothing here keeps state; the calls
 * are thread-safe as the ODB calls they make.
 */
#include "odb/odb_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#define ZLIB_CONST /* next_in is const: no cast needed for our const input */
#include <zlib.h>

#define ODB_LOAD_MAX (256u << 20) /* bytes, file and decompressed text */

static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    (void)opaque;
    return ut_calloc(items, size);
}

static void z_free(voidpf opaque, voidpf p)
{
    (void)opaque;
    ut_free(p);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* Compresses len bytes into a new gzip buffer (*out, ut_free). Returns 0,
 * UT_ENOMEM or UT_EIO. */
static int gzip_buf(const char *in, size_t len, uint8_t **out, size_t *out_len)
{
    z_stream zs = {0};
    zs.zalloc = z_alloc;
    zs.zfree = z_free;
    if (len > UINT32_MAX / 2)
        return odb__fail(UT_EIO, "%zu bytes are too many to compress in one piece", len);
    /* windowBits 15 + 16: a gzip header and trailer instead of zlib's. */
    int zerr = deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    if (zerr != Z_OK)
        return odb__fail(zerr == Z_MEM_ERROR ? UT_ENOMEM : UT_EIO, "deflateInit2: %s",
                         zs.msg ? zs.msg : "failed");
    size_t cap = deflateBound(&zs, (uLong)len);
    uint8_t *buf = ut_malloc(cap);
    if (!buf) {
        deflateEnd(&zs);
        return odb__fail(UT_ENOMEM, "out of memory compressing %zu bytes", len);
    }
    zs.next_in = (const Bytef *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = buf;
    zs.avail_out = (uInt)cap;
    zerr = deflate(&zs, Z_FINISH);
    size_t produced = zs.total_out;
    deflateEnd(&zs);
    if (zerr != Z_STREAM_END) {
        ut_free(buf);
        return odb__fail(zerr == Z_MEM_ERROR ? UT_ENOMEM : UT_EIO, "deflate failed (%d)", zerr);
    }
    *out = buf;
    *out_len = produced;
    return 0;
}

/* Writes all n bytes to fd. Returns 0 or -errno. */
static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (ut_fault_hit("odb.save.write"))
            return -ENOSPC;
        size_t chunk = n < (1u << 30) ? n : (1u << 30);
        ssize_t w = write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The directory part of `file` in a new string ("." when there is none). */
static char *dir_of(const char *file)
{
    const char *slash = strrchr(file, '/');
    if (!slash)
        return ut_strdup(".");
    size_t n = slash == file ? 1 : (size_t)(slash - file);
    char *d = ut_malloc(n + 1);
    if (d) {
        memcpy(d, file, n);
        d[n] = '\0';
    }
    return d;
}

/* Syncs directory `dir`, which holds `file`, so that a rename in it is
 * durable. Returns 0 or -errno; EINVAL (a file system that cannot sync
 * directories) counts as success. */
static int sync_dir(const char *dir, const char *file)
{
    int err = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        err = -errno;
    } else {
        if (fsync(fd) != 0 && errno != EINVAL)
            err = -errno;
        close(fd);
    }
    if (err)
        odb__set_error("'%s' was replaced, but syncing directory '%s' failed: %s", file, dir,
                       ut_strerror(err));
    return err;
}

/* Writes data to a new temp file next to `file` and renames it over
 * `file` (see the essay). Returns 0, -errno or UT_ENOMEM; on failure
 * before the rename, `file` is untouched and the temp file is gone. */
static int write_atomic(const char *file, const uint8_t *data, size_t len)
{
    static atomic_uint counter;
    size_t tmp_size = strlen(file) + 48;
    /* Everything the steps need is allocated first: once the file is
     * renamed, running out of memory must not be what fails the save. */
    char *tmp = ut_malloc(tmp_size);
    char *dir = dir_of(file);
    int fd = -1, err = 0;
    if (!tmp || !dir) {
        err = odb__fail(UT_ENOMEM, "out of memory saving '%s'", file);
        goto out;
    }
    for (int tries = 0; fd < 0 && tries < 100; tries++) {
        (void)snprintf(tmp, tmp_size, "%s.tmp.%ld.%u", file, (long)getpid(),
                       atomic_fetch_add(&counter, 1));
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        err = -errno;
        odb__set_error("cannot create a temp file for '%s': %s", file, ut_strerror(err));
        goto out;
    }
    err = write_all(fd, data, len);
    if (err) {
        odb__set_error("writing '%s' failed: %s", tmp, ut_strerror(err));
    } else {
        if (ut_fault_hit("odb.save.fsync"))
            err = -EIO;
        else if (fsync(fd) != 0)
            err = -errno;
        if (err)
            odb__set_error("fsync of '%s' failed: %s", tmp, ut_strerror(err));
    }
    if (close(fd) != 0 && !err) {
        err = -errno;
        odb__set_error("closing '%s' failed: %s", tmp, ut_strerror(err));
    }
    if (!err && rename(tmp, file) != 0) {
        err = -errno;
        odb__set_error("renaming '%s' to '%s' failed: %s", tmp, file, ut_strerror(err));
    }
    if (err) {
        unlink(tmp);
        goto out;
    }
    err = sync_dir(dir, file);
out:
    ut_free(dir);
    ut_free(tmp);
    return err;
}

int odb_save(struct odb *odb, struct odb_hkey key, const char *file)
{
    char *json = NULL;
    uint8_t *gz = NULL;
    size_t len = 0, gz_len = 0;
    if (!file || !*file)
        return odb__fail(UT_EINVAL, "no file name");
    int err = odb_json_export(odb, key, &json, &len);
    if (err)
        return err;
    const uint8_t *data = (const uint8_t *)json;
    if (ends_with(file, ".gz")) {
        err = gzip_buf(json, len, &gz, &gz_len);
        if (err)
            goto out;
        data = gz;
        len = gz_len;
    }
    err = write_atomic(file, data, len);
out:
    ut_free(gz);
    ut_free(json);
    return err;
}

/* Reads the whole regular file into a new buffer (*out, ut_free).
 * Returns 0, -errno (-EFBIG past ODB_LOAD_MAX) or UT_ENOMEM. */
static int read_file(const char *file, uint8_t **out, size_t *len_out)
{
    /* O_NONBLOCK: a FIFO must not block the open; regular files ignore it. */
    int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        int err = -errno;
        return odb__fail(err, "cannot open '%s': %s", file, ut_strerror(err));
    }
    int err = 0;
    uint8_t *buf = NULL;
    size_t len = 0;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        err = -errno;
        odb__set_error("cannot stat '%s': %s", file, ut_strerror(err));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        err = odb__fail(-EINVAL, "'%s' is not a regular file", file);
        goto out;
    }
    if (st.st_size > (off_t)ODB_LOAD_MAX) {
        err = odb__fail(-EFBIG, "'%s' is larger than %u MiB", file, ODB_LOAD_MAX >> 20);
        goto out;
    }
    /* The file may grow while we read: read up to one byte past the
     * limit to notice. */
    size_t cap = (size_t)st.st_size + 1;
    buf = ut_malloc(cap);
    if (!buf) {
        err = odb__fail(UT_ENOMEM, "out of memory reading '%s'", file);
        goto out;
    }
    for (;;) {
        if (len == cap) {
            if (cap > ODB_LOAD_MAX) {
                err = odb__fail(-EFBIG, "'%s' is larger than %u MiB", file, ODB_LOAD_MAX >> 20);
                goto out;
            }
            size_t ncap = cap * 2 > (size_t)ODB_LOAD_MAX + 1 ? (size_t)ODB_LOAD_MAX + 1 : cap * 2;
            uint8_t *nb = ut_realloc(buf, ncap);
            if (!nb) {
                err = odb__fail(UT_ENOMEM, "out of memory reading '%s'", file);
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err = -errno;
            odb__set_error("reading '%s' failed: %s", file, ut_strerror(err));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
out:
    close(fd);
    if (err) {
        ut_free(buf);
        return err;
    }
    *out = buf;
    *len_out = len;
    return 0;
}

/* Inflates gzip data (one or more members) into a new buffer (*out,
 * ut_free). Returns 0, UT_EIO (damaged data), -EFBIG or UT_ENOMEM. */
static int gunzip_buf(const char *file, const uint8_t *in, size_t len, uint8_t **out,
                      size_t *out_len)
{
    z_stream zs = {0};
    zs.zalloc = z_alloc;
    zs.zfree = z_free;
    int zerr = inflateInit2(&zs, 15 + 16);
    if (zerr != Z_OK)
        return odb__fail(zerr == Z_MEM_ERROR ? UT_ENOMEM : UT_EIO, "inflateInit2 failed");
    int err = 0;
    size_t cap = len < 4096 ? 16384 : len * 4, used = 0;
    if (cap > (size_t)ODB_LOAD_MAX + 1)
        cap = (size_t)ODB_LOAD_MAX + 1;
    uint8_t *buf = ut_malloc(cap);
    if (!buf) {
        err = odb__fail(UT_ENOMEM, "out of memory reading '%s'", file);
        goto out;
    }
    zs.next_in = (const Bytef *)in;
    zs.avail_in = (uInt)len; /* len <= ODB_LOAD_MAX */
    for (;;) {
        if (used == cap) {
            if (cap > ODB_LOAD_MAX) {
                err = odb__fail(-EFBIG, "'%s' decompresses to more than %u MiB", file,
                                ODB_LOAD_MAX >> 20);
                goto out;
            }
            size_t ncap = cap * 2 > (size_t)ODB_LOAD_MAX + 1 ? (size_t)ODB_LOAD_MAX + 1 : cap * 2;
            uint8_t *nb = ut_realloc(buf, ncap);
            if (!nb) {
                err = odb__fail(UT_ENOMEM, "out of memory reading '%s'", file);
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        zs.next_out = buf + used;
        zs.avail_out = (uInt)(cap - used);
        zerr = inflate(&zs, Z_NO_FLUSH);
        used = cap - zs.avail_out;
        if (zerr == Z_STREAM_END) {
            if (zs.avail_in == 0)
                break;
            /* Another gzip member follows (as `cat a.gz b.gz` makes). */
            zerr = inflateReset(&zs);
        }
        if (zerr == Z_MEM_ERROR) {
            err = odb__fail(UT_ENOMEM, "out of memory decompressing '%s'", file);
            goto out;
        }
        if (zerr == Z_BUF_ERROR && zs.avail_in == 0 && used < cap) {
            err = odb__fail(UT_EIO, "'%s': compressed data ends early", file);
            goto out;
        }
        if (zerr != Z_OK && zerr != Z_BUF_ERROR) {
            err = odb__fail(UT_EIO, "'%s': damaged compressed data (%s)", file,
                            zs.msg ? zs.msg : "inflate failed");
            goto out;
        }
    }
out:
    inflateEnd(&zs);
    if (err) {
        ut_free(buf);
        return err;
    }
    *out = buf;
    *out_len = used;
    return 0;
}

int odb_load(struct odb *odb, struct odb_hkey key, const char *file)
{
    odb__clear_error();
    if (!file || !*file)
        return odb__fail(UT_EINVAL, "no file name");
    uint8_t *raw = NULL, *text = NULL;
    size_t raw_len = 0, text_len = 0;
    int err = read_file(file, &raw, &raw_len);
    if (err)
        return err;
    if (raw_len >= 2 && raw[0] == 0x1f && raw[1] == 0x8b) {
        err = gunzip_buf(file, raw, raw_len, &text, &text_len);
        if (err)
            goto out;
        err = odb_json_import(odb, key, (const char *)text, text_len);
    } else {
        err = odb_json_import(odb, key, (const char *)raw, raw_len);
    }
out:
    ut_free(text);
    ut_free(raw);
    return err;
}
