/*
 * odb/value.c - reading and writing values, key info, directory listings.
 *
 * Reads take the lock only (no transaction): they copy out and never write
 * the segment. Writes run in a transaction (txn.c). A value is replaced in
 * place when its size does not change (logging the old bytes first) and
 * otherwise written into a new block, the old one being retired; either
 * way a crash leaves the old value or the new one, never a mix.
 */
#include "odb/odb_int.h"

#include <stdio.h>
#include <string.h>

/* Above this size an in-place overwrite would log too many old bytes: the
 * value goes to a fresh block instead, which needs no logging. */
#define INPLACE_MAX 4096

static int check_type(const struct odb_key_slot *k, enum odb_type type)
{
    /* Also for type == DIR: a directory has no value to read or write. */
    if (k->type == ODB_TYPE_DIR)
        return odb__fail(ODB_EISDIR, "'%s' is a directory", k->name);
    if (k->type != type)
        return odb__fail(ODB_ETYPE, "'%s' is of type %s, not %s", k->name,
                         odb_type_name((enum odb_type)k->type), odb_type_name(type));
    return 0;
}

/* Locates the key for a read: path resolution with links followed, type
 * and access checks. Lock held. */
static int locate(struct odb *odb, struct odb_hkey base, const char *path, enum odb_type type,
                  struct odb_key_slot **out, uint32_t *idx_out)
{
    uint32_t idx;
    int err = odb__resolve(odb, base, path, true, &idx);
    if (err)
        return err;
    struct odb_key_slot *k = &odb->keys[idx];
    err = check_type(k, type);
    if (err)
        return err;
    *out = k;
    if (idx_out)
        *idx_out = idx;
    return 0;
}

static const void *value_of(const struct odb *odb, const struct odb_key_slot *k)
{
    const uint8_t *v = odb__heap_payload(odb, k->data);
    if (v && (uint64_t)k->n_elem * k->elem_size > odb__heap_capacity(odb, k->data))
        return NULL;
    return v;
}

int odb_get(struct odb *odb, struct odb_hkey base, const char *path, enum odb_type type, void *buf,
            size_t *size)
{
    odb__clear_error();
    int err = odb__rlock(odb);
    if (err)
        return err;
    struct odb_key_slot *k;
    err = locate(odb, base, path, type, &k, NULL);
    if (err)
        goto out;
    if (!(k->mode & ODB_MODE_READ)) {
        err = odb__fail(ODB_EACCESS, "key '%s' is not readable", k->name);
        goto out;
    }
    const void *v = value_of(odb, k);
    if (!v) {
        err = odb__fail(UT_ECORRUPT, "key '%s' has no valid value block", k->name);
        goto out;
    }
    size_t need = (size_t)k->n_elem * k->elem_size;
    if ((type == ODB_TYPE_STRING || type == ODB_TYPE_LINK) && k->n_elem == 1)
        need = strnlen(v, k->elem_size) + 1;
    if (*size < need) {
        err = odb__fail(ODB_ETRUNC, "buffer of %zu bytes too small for '%s' (%zu bytes)", *size,
                        k->name, need);
        *size = need;
        goto out;
    }
    memcpy(buf, v, need);
    if ((type == ODB_TYPE_STRING || type == ODB_TYPE_LINK) && k->n_elem == 1)
        ((char *)buf)[need - 1] = '\0';
    *size = need;
out:
    odb__runlock(odb);
    return err;
}

/* Checks that each string element has a NUL inside its capacity. */
static int check_strings(const void *data, size_t elem_size, uint32_t n_elem)
{
    const char *s = data;
    for (uint32_t i = 0; i < n_elem; i++)
        if (!memchr(s + (size_t)i * elem_size, '\0', elem_size))
            return odb__fail(ODB_ETOOLONG, "string element %u is not terminated within %zu bytes",
                             i, elem_size);
    return 0;
}

/* Writes a value of n_elem elements of `esize` bytes into key idx,
 * reshaping it. For strings, a smaller element size than the key's
 * capacity keeps the capacity (padding with NULs). */
int odb__set_value(struct odb *odb, uint32_t idx, enum odb_type type, const void *data, size_t size,
                   uint32_t n_elem)
{
    struct odb_key_slot *k = &odb->keys[idx];
    size_t esize = size / n_elem;
    size_t cap_esize = esize;
    bool is_string = type == ODB_TYPE_STRING || type == ODB_TYPE_LINK;
    if (is_string && k->n_elem == n_elem && k->elem_size > esize)
        cap_esize = k->elem_size;
    size_t bytes = cap_esize * n_elem;
    if (bytes > UINT32_MAX)
        return odb__fail(ODB_ENOSPC, "value of %zu bytes is too large", bytes);
    int err;
    uint8_t *dst;
    if (bytes == (size_t)k->n_elem * k->elem_size && bytes <= INPLACE_MAX) {
        dst = odb__heap_payload(odb, k->data);
        if (!dst)
            return odb__fail(UT_ECORRUPT, "key '%s' has no valid value block", k->name);
        err = odb__undo_save(odb, dst, bytes);
        if (err)
            return err;
    } else {
        uint64_t off;
        err = odb__heap_alloc(odb, bytes, idx, &off);
        if (err)
            return err;
        if (k->data) {
            err = odb__heap_retire(odb, k->data);
            if (err)
                return err;
        }
        err = odb__undo_save(odb, &k->data, sizeof k->data);
        if (err)
            return err;
        k->data = off;
        dst = odb__heap_payload(odb, off);
    }
    if (cap_esize == esize) {
        memcpy(dst, data, bytes);
    } else {
        for (uint32_t i = 0; i < n_elem; i++) {
            memcpy(dst + i * cap_esize, (const uint8_t *)data + i * esize, esize);
            memset(dst + i * cap_esize + esize, 0, cap_esize - esize);
        }
    }
    if (type == ODB_TYPE_BOOL)
        for (size_t i = 0; i < bytes; i++)
            dst[i] = dst[i] != 0;
    if (k->n_elem != n_elem || k->elem_size != cap_esize) {
        _Static_assert(offsetof(struct odb_key_slot, elem_size) ==
                           offsetof(struct odb_key_slot, n_elem) + 4,
                       "n_elem and elem_size are logged together");
        err = odb__undo_save(odb, &k->n_elem, 8);
        if (err)
            return err;
        k->n_elem = n_elem;
        k->elem_size = (uint32_t)cap_esize;
    }
    return odb__touch(odb, idx);
}

static int check_set_args(enum odb_type type, const void *data, size_t size, uint32_t n_elem)
{
    if (type <= ODB_TYPE_DIR || type >= ODB_TYPE_MAX)
        return odb__fail(UT_EINVAL, "cannot set a value of type %d", (int)type);
    if (n_elem == 0 || !data || size == 0 || size % n_elem)
        return odb__fail(UT_EINVAL, "size %zu is not a positive multiple of %u elements", size,
                         n_elem);
    size_t ts = odb_type_size(type);
    if (ts && size / n_elem != ts)
        return odb__fail(UT_EINVAL, "element size %zu does not match type %s (%zu bytes)",
                         size / n_elem, odb_type_name(type), ts);
    if (type == ODB_TYPE_STRING || type == ODB_TYPE_LINK)
        return check_strings(data, size / n_elem, n_elem);
    return 0;
}

int odb_set(struct odb *odb, struct odb_hkey base, const char *path, enum odb_type type,
            const void *data, size_t size, uint32_t n_elem, unsigned flags)
{
    odb__clear_error();
    int err = check_set_args(type, data, size, n_elem);
    if (err)
        return err;
    err = odb__begin(odb);
    if (err)
        return err;
    uint32_t idx;
    err = odb__resolve(odb, base, path, true, &idx);
    if (err == ODB_ENOKEY && (flags & ODB_SET_CREATE) && path && *path) {
        /* The key is created in the same transaction: never through a
         * stale handle, never visible half-made. */
        err = odb__create(odb, base, path, type, n_elem, (uint32_t)(size / n_elem), &idx);
    }
    if (err)
        goto out;
    struct odb_key_slot *k = &odb->keys[idx];
    err = check_type(k, type);
    if (err)
        goto out;
    if (!(k->mode & ODB_MODE_WRITE)) {
        err = odb__fail(ODB_EACCESS, "key '%s' is not writable", k->name);
        goto out;
    }
    err = odb__set_value(odb, idx, type, data, size, n_elem);
out:
    return odb__end(odb, err);
}

int odb_get_elem(struct odb *odb, struct odb_hkey key, uint32_t index, enum odb_type type,
                 void *buf, size_t size)
{
    odb__clear_error();
    int err = odb__rlock(odb);
    if (err)
        return err;
    struct odb_key_slot *k;
    err = locate(odb, key, NULL, type, &k, NULL);
    if (err)
        goto out;
    if (!(k->mode & ODB_MODE_READ)) {
        err = odb__fail(ODB_EACCESS, "key '%s' is not readable", k->name);
        goto out;
    }
    if (index >= k->n_elem) {
        err = odb__fail(ODB_ERANGE, "index %u out of range for '%s' (%u elements)", index, k->name,
                        k->n_elem);
        goto out;
    }
    const uint8_t *v = value_of(odb, k);
    if (!v) {
        err = odb__fail(UT_ECORRUPT, "key '%s' has no valid value block", k->name);
        goto out;
    }
    const uint8_t *e = v + (size_t)index * k->elem_size;
    size_t need = k->elem_size;
    if (type == ODB_TYPE_STRING || type == ODB_TYPE_LINK)
        need = strnlen((const char *)e, k->elem_size) + 1;
    if (size < need) {
        err = odb__fail(ODB_ETRUNC, "buffer of %zu bytes too small for element of '%s'", size,
                        k->name);
        goto out;
    }
    memcpy(buf, e, need);
    if (type == ODB_TYPE_STRING || type == ODB_TYPE_LINK)
        ((char *)buf)[need - 1] = '\0';
out:
    odb__runlock(odb);
    return err;
}

int odb_set_elem(struct odb *odb, struct odb_hkey key, uint32_t index, enum odb_type type,
                 const void *data, size_t size)
{
    odb__clear_error();
    if (!data || type <= ODB_TYPE_DIR || type >= ODB_TYPE_MAX)
        return odb__fail(UT_EINVAL, "bad arguments");
    int err = odb__begin(odb);
    if (err)
        return err;
    struct odb_key_slot *k;
    uint32_t idx;
    err = locate(odb, key, NULL, type, &k, &idx);
    if (err)
        goto out;
    if (!(k->mode & ODB_MODE_WRITE)) {
        err = odb__fail(ODB_EACCESS, "key '%s' is not writable", k->name);
        goto out;
    }
    if (index >= k->n_elem) {
        err = odb__fail(ODB_ERANGE, "index %u out of range for '%s' (%u elements)", index, k->name,
                        k->n_elem);
        goto out;
    }
    size_t len = size;
    if (type == ODB_TYPE_STRING || type == ODB_TYPE_LINK) {
        const char *nul = memchr(data, '\0', size);
        len = nul ? (size_t)(nul - (const char *)data) + 1 : size + 1;
        if (len > k->elem_size) {
            err = odb__fail(ODB_ETOOLONG, "string of %zu bytes exceeds the capacity %u of '%s'",
                            len, k->elem_size, k->name);
            goto out;
        }
    } else if (size != k->elem_size) {
        err = odb__fail(UT_EINVAL, "element size %zu does not match '%s' (%u bytes)", size, k->name,
                        k->elem_size);
        goto out;
    }
    uint8_t *v = odb__heap_payload(odb, k->data);
    if (!v) {
        err = odb__fail(UT_ECORRUPT, "key '%s' has no valid value block", k->name);
        goto out;
    }
    uint8_t *e = v + (size_t)index * k->elem_size;
    err = odb__undo_save(odb, e, k->elem_size);
    if (err)
        goto out;
    if (type == ODB_TYPE_STRING || type == ODB_TYPE_LINK) {
        memset(e, 0, k->elem_size);
        memcpy(e, data, len - 1);
    } else {
        memcpy(e, data, size);
        if (type == ODB_TYPE_BOOL)
            e[0] = e[0] != 0;
    }
    err = odb__touch(odb, idx);
out:
    return odb__end(odb, err);
}

int odb_resize(struct odb *odb, struct odb_hkey key, uint32_t n_elem)
{
    odb__clear_error();
    if (n_elem == 0)
        return odb__fail(UT_EINVAL, "an array needs at least one element");
    int err = odb__begin(odb);
    if (err)
        return err;
    struct odb_key_slot *k;
    err = odb__key_checked(odb, key, &k);
    if (err)
        goto out;
    if (k->type == ODB_TYPE_DIR) {
        err = odb__fail(ODB_EISDIR, "'%s' is a directory", k->name);
        goto out;
    }
    if (!(k->mode & ODB_MODE_WRITE)) {
        err = odb__fail(ODB_EACCESS, "key '%s' is not writable", k->name);
        goto out;
    }
    if (n_elem != k->n_elem) {
        size_t esize = k->elem_size;
        if ((uint64_t)n_elem * esize > UINT32_MAX) {
            err = odb__fail(ODB_ENOSPC, "array of %u elements is too large", n_elem);
            goto out;
        }
        uint8_t *tmp = ut_calloc(n_elem, esize);
        const uint8_t *v = value_of(odb, k);
        if (!tmp || !v) {
            ut_free(tmp);
            err = odb__fail(tmp ? UT_ECORRUPT : UT_ENOMEM, "cannot resize '%s'", k->name);
            goto out;
        }
        uint32_t keep = n_elem < k->n_elem ? n_elem : k->n_elem;
        memcpy(tmp, v, keep * esize);
        err = odb__set_value(odb, key.idx, (enum odb_type)k->type, tmp, n_elem * esize, n_elem);
        ut_free(tmp);
    }
out:
    return odb__end(odb, err);
}

int odb_set_mode(struct odb *odb, struct odb_hkey key, uint32_t mode)
{
    odb__clear_error();
    if (mode & ~(uint32_t)ODB_MODE_ALL)
        return odb__fail(UT_EINVAL, "unknown mode bits 0x%x", mode);
    int err = odb__begin(odb);
    if (err)
        return err;
    struct odb_key_slot *k;
    err = odb__key_checked(odb, key, &k);
    if (!err)
        err = odb__undo_save(odb, &k->mode, sizeof k->mode);
    if (!err) {
        k->mode = (uint8_t)mode;
        err = odb__touch(odb, key.idx);
    }
    return odb__end(odb, err);
}

int odb_find(struct odb *odb, struct odb_hkey base, const char *path, struct odb_hkey *out)
{
    odb__clear_error();
    int err = odb__rlock(odb);
    if (err)
        return err;
    uint32_t idx;
    err = odb__resolve(odb, base, path, true, &idx);
    if (!err)
        *out = odb__handle(odb, idx);
    odb__runlock(odb);
    return err;
}

int odb_find_nofollow(struct odb *odb, struct odb_hkey base, const char *path, struct odb_hkey *out)
{
    odb__clear_error();
    int err = odb__rlock(odb);
    if (err)
        return err;
    uint32_t idx;
    err = odb__resolve(odb, base, path, false, &idx);
    if (!err)
        *out = odb__handle(odb, idx);
    odb__runlock(odb);
    return err;
}

int odb_key_info(struct odb *odb, struct odb_hkey key, struct odb_key_info *out)
{
    odb__clear_error();
    int err = odb__rlock(odb);
    if (err)
        return err;
    struct odb_key_slot *k;
    err = odb__key_checked(odb, key, &k);
    if (!err) {
        struct odb_key_info info = {0};
        info.type = (enum odb_type)k->type;
        info.n_elem = k->type == ODB_TYPE_DIR ? k->n_children : k->n_elem;
        info.elem_size = k->elem_size;
        info.mode = k->mode;
        info.mtime_ns = k->mtime_ns;
        info.serial = k->serial;
        info.parent = odb__handle(odb, k->parent);
        memcpy(info.name, k->name, sizeof info.name);
        info.name[ODB_NAME_MAX] = '\0';
        *out = info;
    }
    odb__runlock(odb);
    return err;
}

int odb_key_path(struct odb *odb, struct odb_hkey key, char *buf, size_t size)
{
    odb__clear_error();
    if (size == 0)
        return odb__fail(ODB_ETRUNC, "empty buffer");
    int err = odb__rlock(odb);
    if (err)
        return err;
    struct odb_key_slot *k;
    err = odb__key_checked(odb, key, &k);
    if (err)
        goto out;
    /* Build backwards from the key to the root. */
    char tmp[ODB_PATH_MAX + 2];
    size_t pos = sizeof tmp - 1;
    tmp[pos] = '\0';
    uint32_t idx = key.idx;
    int depth = 0;
    while (idx != 0) {
        const struct odb_key_slot *c = &odb->keys[idx];
        if (c->name_len + 1u > pos || ++depth > 10000) {
            err = odb__fail(ODB_ETRUNC, "path too long");
            goto out;
        }
        pos -= c->name_len;
        memcpy(tmp + pos, c->name, c->name_len);
        tmp[--pos] = '/';
        idx = c->parent;
    }
    if (pos == sizeof tmp - 1)
        tmp[--pos] = '/';
    if (sizeof tmp - 1 - pos + 1 > size) {
        err = odb__fail(ODB_ETRUNC, "buffer too small for the path");
        goto out;
    }
    memcpy(buf, tmp + pos, sizeof tmp - pos);
out:
    odb__runlock(odb);
    return err;
}

int odb_dir_list(struct odb *odb, struct odb_hkey dir, struct odb_dirent **out, size_t *n_out)
{
    odb__clear_error();
    int err = odb__rlock(odb);
    if (err)
        return err;
    uint32_t idx;
    struct odb_dirent *ents = NULL;
    err = odb__resolve(odb, dir, NULL, true, &idx);
    if (!err && odb->keys[idx].type == ODB_TYPE_LINK) {
        /* A handle to a link to a directory lists the directory. */
        const char *t = odb__heap_payload(odb, odb->keys[idx].data);
        err = t ? odb__resolve(odb, ODB_ROOT, t, true, &idx) : UT_ECORRUPT;
    }
    if (err)
        goto out;
    const struct odb_key_slot *d = &odb->keys[idx];
    if (d->type != ODB_TYPE_DIR) {
        err = odb__fail(ODB_ENOTDIR, "'%s' is not a directory", d->name);
        goto out;
    }
    ents = ut_calloc(d->n_children ? d->n_children : 1, sizeof *ents);
    if (!ents) {
        err = odb__fail(UT_ENOMEM, "out of memory listing '%s'", d->name);
        goto out;
    }
    size_t n = 0;
    for (uint32_t c = d->first_child; c != ODB_NIL && n < d->n_children;
         c = odb->keys[c].next_sib) {
        const struct odb_key_slot *ck = &odb->keys[c];
        ents[n].key = odb__handle(odb, c);
        ents[n].type = (enum odb_type)ck->type;
        ents[n].n_elem = ck->type == ODB_TYPE_DIR ? ck->n_children : ck->n_elem;
        memcpy(ents[n].name, ck->name, sizeof ents[n].name);
        ents[n].name[ODB_NAME_MAX] = '\0';
        n++;
    }
    *out = ents;
    *n_out = n;
    ents = NULL;
out:
    odb__runlock(odb);
    ut_free(ents);
    return err;
}

void odb_dirents_free(struct odb_dirent *ents)
{
    ut_free(ents);
}

uint64_t odb_change_count(struct odb *odb)
{
    return __atomic_load_n(&odb->hdr->n_changes, __ATOMIC_RELAXED);
}
