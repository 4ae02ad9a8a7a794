/*
 * odb/tree.c - the key tree: slots, the hash index, path resolution,
 * create, delete, rename, link and copy.
 *
 * Invariants kept here (and verified by odb_check):
 * - A slot is in use iff type != 0. In-use slots are reachable exactly once,
 *   either from the root through child lists or from the garbage list.
 * - A live key (reachable from the root) other than the root is in exactly
 *   one hash chain, the one of bucket(parent, name_hash). Keys of a
 *   detached subtree stay in their chains until reclaimed, except the
 *   subtree root, which leaves its chain when detached; lookups never reach
 *   them because their subtree root can no longer be found.
 * - Free slots are linked through next_sib from hdr->free_key.
 * - The generation of a slot changes at every create and every delete.
 *
 * All functions here run under the ODB lock inside a transaction (txn.c)
 * and log every store with odb__undo_save before making it.
 */
#include "odb/odb_int.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define LOGGED_SET(odb, field, value)                                                              \
    do {                                                                                           \
        int log_err_ = odb__undo_save((odb), &(field), sizeof(field));                             \
        if (log_err_)                                                                              \
            return log_err_;                                                                       \
        (field) = (value);                                                                         \
    } while (0)

static inline int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* The name hash is FNV-1a over the lower-cased bytes; resolve_from
 * computes it while scanning a path, with the same two pieces. */
#define NAME_HASH_SEED 2166136261u

static inline uint32_t name_hash_step(uint32_t h, unsigned char c)
{
    return (h ^ (uint32_t)lower(c)) * 16777619u;
}

/* True for a byte that may not appear in a name ('/' aside). */
static inline bool name_char_bad(unsigned char c)
{
    return c == '[' || c < 0x20 || c == 0x7f;
}

uint32_t odb__name_hash(const char *name, size_t len)
{
    uint32_t h = NAME_HASH_SEED;
    for (size_t i = 0; i < len; i++)
        h = name_hash_step(h, (unsigned char)name[i]);
    return h;
}

uint32_t odb__bucket(const struct odb *odb, uint32_t parent, uint32_t name_hash)
{
    uint32_t h = name_hash ^ (parent * 0x9e3779b1u);
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    return h & (odb->hdr->n_buckets - 1);
}

bool odb__name_valid(const char *name, size_t len)
{
    if (len == 0 || len > ODB_NAME_MAX)
        return false;
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '/' || name_char_bad(c))
            return false;
    }
    return true;
}

static bool names_equal(const struct odb_key_slot *k, const char *name, size_t len)
{
    if (k->name_len != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (lower((unsigned char)k->name[i]) != lower((unsigned char)name[i]))
            return false;
    return true;
}

struct odb_key_slot *odb__key(const struct odb *odb, struct odb_hkey h)
{
    if (h.idx >= odb->hdr->max_keys)
        return NULL;
    struct odb_key_slot *k = &odb->keys[h.idx];
    if (k->type == 0 || k->gen != h.gen || (k->flags & ODB_KF_GARBAGE))
        return NULL;
    return k;
}

int odb__key_checked(const struct odb *odb, struct odb_hkey h, struct odb_key_slot **out)
{
    struct odb_key_slot *k = odb__key(odb, h);
    if (!k)
        return odb__fail(ODB_ESTALE, "handle {%u,%u} refers to a deleted key", h.idx, h.gen);
    *out = k;
    return 0;
}

struct odb_hkey odb__handle(const struct odb *odb, uint32_t idx)
{
    return (struct odb_hkey){idx, odb->keys[idx].gen};
}

/* Finds the child `name` (len bytes, hash nh = odb__name_hash(name, len))
 * of directory `parent`. Returns its slot or ODB_NIL. */
static uint32_t lookup_child_hashed(const struct odb *odb, uint32_t parent, const char *name,
                                    size_t len, uint32_t nh)
{
    uint32_t max = odb->hdr->max_keys;
    uint32_t guard = max;
    for (uint32_t i = odb->buckets[odb__bucket(odb, parent, nh)]; i != ODB_NIL && guard--;) {
        if (i >= max)
            return ODB_NIL; /* corrupt chain: odb_check reports it */
        const struct odb_key_slot *k = &odb->keys[i];
        if (k->parent == parent && k->name_hash == nh && names_equal(k, name, len) && k->type != 0)
            return i;
        i = k->hash_next;
    }
    return ODB_NIL;
}

static uint32_t lookup_child(const struct odb *odb, uint32_t parent, const char *name, size_t len)
{
    return lookup_child_hashed(odb, parent, name, len, odb__name_hash(name, len));
}

static int resolve_from(struct odb *odb, uint32_t start, const char *path, bool follow_last,
                        int depth, uint32_t *idx_out);

/* If idx is a link, replaces it by its target. Returns 0, ODB_ENOKEY (the
 * target is missing), ODB_ELINKLOOP. */
static int follow_link(struct odb *odb, uint32_t *idx, int depth)
{
    const struct odb_key_slot *k = &odb->keys[*idx];
    if (k->type != ODB_TYPE_LINK)
        return 0;
    if (depth >= ODB_MAX_LINK_DEPTH)
        return odb__fail(ODB_ELINKLOOP, "more than %d nested links at '%s'", ODB_MAX_LINK_DEPTH,
                         k->name);
    const char *target = odb__heap_payload(odb, k->data);
    if (!target || k->elem_size == 0 || memchr(target, '\0', k->elem_size) == NULL)
        return odb__fail(UT_ECORRUPT, "link '%s' has no valid target", k->name);
    return resolve_from(odb, 0, target, true, depth + 1, idx);
}

static int resolve_from(struct odb *odb, uint32_t start, const char *path, bool follow_last,
                        int depth, uint32_t *idx_out)
{
    uint32_t cur = start;
    const char *p = path;
    if (*p == '/')
        cur = 0;
    while (*p == '/')
        p++;
    while (*p) {
        /* One pass over the component gives its length, its hash (as
         * odb__name_hash) and whether it has a character odb__name_valid
         * refuses: this is the hot path of every access by path. */
        size_t len = 0;
        uint32_t nh = NAME_HASH_SEED;
        bool bad_char = false;
        for (unsigned char ch; (ch = (unsigned char)p[len]) != '\0' && ch != '/'; len++) {
            bad_char |= name_char_bad(ch);
            nh = name_hash_step(nh, ch);
        }
        const char *next = p + len;
        while (*next == '/')
            next++;
        bool last = *next == '\0';
        if (len == 1 && p[0] == '.') {
            p = next;
            continue;
        }
        if (len == 2 && p[0] == '.' && p[1] == '.') {
            cur = odb->keys[cur].parent;
            p = next;
            continue;
        }
        /* len >= 1 here, and "." and ".." were taken above. */
        if (bad_char || len > ODB_NAME_MAX)
            return odb__fail(ODB_EPATH, "invalid name '%.*s' in path '%s'",
                             (int)(len > 80 ? 80 : len), p, path);
        int err = follow_link(odb, &cur, depth);
        if (err)
            return err;
        if (odb->keys[cur].type != ODB_TYPE_DIR)
            return odb__fail(ODB_ENOTDIR, "'%s' is not a directory in path '%s'",
                             odb->keys[cur].name, path);
        uint32_t child = lookup_child_hashed(odb, cur, p, len, nh);
        if (child == ODB_NIL)
            return odb__fail(ODB_ENOKEY, "no key '%.*s' in path '%s'", (int)len, p, path);
        cur = child;
        if (!last || follow_last) {
            err = follow_link(odb, &cur, depth);
            if (err)
                return err;
        }
        p = next;
    }
    *idx_out = cur;
    return 0;
}

int odb__resolve(struct odb *odb, struct odb_hkey base, const char *path, bool follow_last,
                 uint32_t *idx_out)
{
    if (!path || !*path) {
        struct odb_key_slot *k;
        int err = odb__key_checked(odb, base, &k);
        if (err)
            return err;
        *idx_out = base.idx;
        return 0;
    }
    if (strlen(path) > ODB_PATH_MAX)
        return odb__fail(ODB_EPATH, "path longer than %d bytes", ODB_PATH_MAX);
    uint32_t start = 0;
    if (path[0] != '/') {
        struct odb_key_slot *k;
        int err = odb__key_checked(odb, base, &k);
        if (err)
            return err;
        start = base.idx;
    }
    return resolve_from(odb, start, path, follow_last, 0, idx_out);
}

int odb__touch_quiet(struct odb *odb, uint32_t idx)
{
    struct odb_key_slot *k = &odb->keys[idx];
    _Static_assert(offsetof(struct odb_key_slot, serial) ==
                       offsetof(struct odb_key_slot, mtime_ns) + 8,
                   "mtime and serial are logged together");
    int err = odb__undo_save(odb, &k->mtime_ns, 16);
    if (err)
        return err;
    k->mtime_ns = ut_wall_ns();
    k->serial++;
    return 0;
}

int odb__touch(struct odb *odb, uint32_t idx)
{
    int err = odb__touch_quiet(odb, idx);
    return err ? err : odb__watch_notify(odb, idx);
}

/* Takes a free slot and initialises it as a key named `name` under
 * `parent`, linked last among its siblings and into the hash index. */
static int new_key(struct odb *odb, uint32_t parent, const char *name, size_t len,
                   enum odb_type type, uint32_t n_elem, uint32_t elem_size, uint32_t *idx_out)
{
    struct odb_header *hdr = odb->hdr;
    uint32_t idx = hdr->free_key;
    if (idx == ODB_NIL)
        return odb__fail(ODB_EKEYS, "all %u key slots are in use", hdr->max_keys);
    struct odb_key_slot *k = &odb->keys[idx];
    struct odb_key_slot *p = &odb->keys[parent];
    uint64_t data = 0;
    if (type != ODB_TYPE_DIR) {
        uint64_t bytes = (uint64_t)n_elem * elem_size;
        if (bytes > hdr->heap_size)
            return odb__fail(ODB_ENOSPC, "value of %llu bytes does not fit in the ODB",
                             (unsigned long long)bytes);
        int err = odb__heap_alloc(odb, (size_t)bytes, idx, &data);
        if (err)
            return err;
        memset(odb__heap_payload(odb, data), 0, (size_t)bytes);
    }
    LOGGED_SET(odb, hdr->free_key, k->next_sib);
    LOGGED_SET(odb, hdr->n_keys, hdr->n_keys + 1);
    /* A free slot's only meaningful fields are its generation, its type
     * (0) and its free-list link: logging just those keeps a large import
     * within the undo log. */
    _Static_assert(offsetof(struct odb_key_slot, parent) == 8, "slot head is 8 bytes");
    int err = odb__undo_save(odb, k, offsetof(struct odb_key_slot, parent));
    if (!err)
        err = odb__undo_save(odb, &k->next_sib, sizeof k->next_sib);
    if (err)
        return err;
    uint32_t gen = k->gen + 1;
    if (gen == 0)
        gen = 1;
    uint32_t nh = odb__name_hash(name, len);
    uint32_t bucket = odb__bucket(odb, parent, nh);
    memset(k, 0, sizeof *k);
    k->gen = gen;
    k->type = (uint8_t)type;
    k->mode = ODB_MODE_ALL;
    k->name_len = (uint8_t)len;
    k->parent = parent;
    k->hash_next = odb->buckets[bucket];
    k->name_hash = nh;
    k->first_child = k->last_child = ODB_NIL;
    k->next_sib = ODB_NIL;
    k->prev_sib = p->last_child;
    k->n_elem = type == ODB_TYPE_DIR ? 0 : n_elem;
    k->elem_size = type == ODB_TYPE_DIR ? 0 : elem_size;
    k->data = data;
    k->mtime_ns = ut_wall_ns();
    memcpy(k->name, name, len);
    LOGGED_SET(odb, odb->buckets[bucket], idx);
    if (p->last_child != ODB_NIL)
        LOGGED_SET(odb, odb->keys[p->last_child].next_sib, idx);
    else
        LOGGED_SET(odb, p->first_child, idx);
    LOGGED_SET(odb, p->last_child, idx);
    LOGGED_SET(odb, p->n_children, p->n_children + 1);
    /* Watchers of the directory (or above) hear about the new key itself. */
    err = odb__touch_quiet(odb, parent);
    if (!err)
        err = odb__watch_notify(odb, idx);
    if (err)
        return err;
    *idx_out = idx;
    return 0;
}

static int check_shape(enum odb_type type, uint32_t n_elem, uint32_t *elem_size)
{
    if (type <= 0 || type >= ODB_TYPE_MAX)
        return odb__fail(UT_EINVAL, "unknown type %d", (int)type);
    if (type == ODB_TYPE_DIR)
        return 0;
    if (n_elem == 0)
        return odb__fail(UT_EINVAL, "a value needs at least one element");
    size_t ts = odb_type_size(type);
    if (ts) {
        *elem_size = (uint32_t)ts;
    } else if (*elem_size == 0) {
        *elem_size = 32;
    }
    if ((uint64_t)n_elem * *elem_size > UINT32_MAX)
        return odb__fail(ODB_ENOSPC, "value of %u x %u bytes is too large", n_elem, *elem_size);
    return 0;
}

int odb__create(struct odb *odb, struct odb_hkey base, const char *path, enum odb_type type,
                uint32_t n_elem, uint32_t elem_size, uint32_t *idx_out)
{
    int err = check_shape(type, n_elem, &elem_size);
    if (err)
        return err;
    if (!path || !*path)
        return odb__fail(ODB_EEXIST, "empty path names an existing key");
    if (strlen(path) > ODB_PATH_MAX)
        return odb__fail(ODB_EPATH, "path longer than %d bytes", ODB_PATH_MAX);
    uint32_t cur = 0;
    if (path[0] != '/') {
        struct odb_key_slot *b;
        err = odb__key_checked(odb, base, &b);
        if (err)
            return err;
        cur = base.idx;
    }
    const char *p = path;
    while (*p == '/')
        p++;
    if (!*p)
        return odb__fail(ODB_EEXIST, "the root exists");
    while (*p) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *next = p + len;
        while (*next == '/')
            next++;
        bool last = *next == '\0';
        if (len == 2 && p[0] == '.' && p[1] == '.' && !last) {
            cur = odb->keys[cur].parent;
            p = next;
            continue;
        }
        if (len == 1 && p[0] == '.' && !last) {
            p = next;
            continue;
        }
        if (!odb__name_valid(p, len))
            return odb__fail(ODB_ENAME, "invalid key name '%.*s'", (int)(len > 80 ? 80 : len), p);
        err = follow_link(odb, &cur, 0);
        if (err)
            return err;
        if (odb->keys[cur].type != ODB_TYPE_DIR)
            return odb__fail(ODB_ENOTDIR, "'%s' is not a directory", odb->keys[cur].name);
        uint32_t child = lookup_child(odb, cur, p, len);
        if (last) {
            if (child != ODB_NIL)
                return odb__fail(ODB_EEXIST, "key '%s' already exists", path);
            if (!(odb->keys[cur].mode & ODB_MODE_WRITE))
                return odb__fail(ODB_EACCESS, "directory '%s' is not writable",
                                 odb->keys[cur].name);
            return new_key(odb, cur, p, len, type, n_elem, elem_size, idx_out);
        }
        if (child == ODB_NIL) {
            err = new_key(odb, cur, p, len, ODB_TYPE_DIR, 0, 0, &child);
            if (err)
                return err;
        }
        cur = child;
        p = next;
    }
    return odb__fail(ODB_EPATH, "path '%s' names no key", path);
}

/* Removes idx from its hash chain. */
static int unhash(struct odb *odb, uint32_t idx)
{
    struct odb_key_slot *k = &odb->keys[idx];
    uint32_t *link = &odb->buckets[odb__bucket(odb, k->parent, k->name_hash)];
    uint32_t guard = odb->hdr->max_keys;
    while (*link != idx) {
        if (*link == ODB_NIL || *link >= odb->hdr->max_keys || !guard--)
            return odb__fail(UT_ECORRUPT, "key %u missing from its hash chain", idx);
        link = &odb->keys[*link].hash_next;
    }
    LOGGED_SET(odb, *link, k->hash_next);
    return 0;
}

static int rehash(struct odb *odb, uint32_t idx)
{
    struct odb_key_slot *k = &odb->keys[idx];
    uint32_t bucket = odb__bucket(odb, k->parent, k->name_hash);
    LOGGED_SET(odb, k->hash_next, odb->buckets[bucket]);
    LOGGED_SET(odb, odb->buckets[bucket], idx);
    return 0;
}

/* Unlinks idx from its parent's child list. */
static int unlink_sibling(struct odb *odb, uint32_t idx)
{
    struct odb_key_slot *k = &odb->keys[idx];
    struct odb_key_slot *p = &odb->keys[k->parent];
    if (k->prev_sib != ODB_NIL)
        LOGGED_SET(odb, odb->keys[k->prev_sib].next_sib, k->next_sib);
    else
        LOGGED_SET(odb, p->first_child, k->next_sib);
    if (k->next_sib != ODB_NIL)
        LOGGED_SET(odb, odb->keys[k->next_sib].prev_sib, k->prev_sib);
    else
        LOGGED_SET(odb, p->last_child, k->prev_sib);
    LOGGED_SET(odb, p->n_children, p->n_children - 1);
    return 0;
}

int odb__free_key(struct odb *odb, uint32_t idx)
{
    struct odb_header *hdr = odb->hdr;
    struct odb_key_slot *k = &odb->keys[idx];
    int err;
    UT_ASSERT(k->first_child == ODB_NIL && idx != 0);
    if (!(k->flags & ODB_KF_GARBAGE)) {
        err = unhash(odb, idx);
        if (!err)
            err = unlink_sibling(odb, idx);
        if (err)
            return err;
    }
    if (k->data) {
        err = odb__heap_free(odb, k->data);
        if (err)
            return err;
    }
    err = odb__undo_save(odb, k, offsetof(struct odb_key_slot, name));
    if (err)
        return err;
    k->gen++;
    k->type = 0;
    k->flags = 0;
    k->data = 0;
    k->first_child = k->last_child = k->prev_sib = ODB_NIL;
    k->next_sib = hdr->free_key;
    LOGGED_SET(odb, hdr->free_key, idx);
    LOGGED_SET(odb, hdr->n_keys, hdr->n_keys - 1);
    return 0;
}

/* Next key in a depth-first walk of the subtree rooted at `root`. */
static uint32_t subtree_next(const struct odb *odb, uint32_t root, uint32_t idx)
{
    const struct odb_key_slot *k = &odb->keys[idx];
    if (k->first_child != ODB_NIL)
        return k->first_child;
    while (idx != root) {
        k = &odb->keys[idx];
        if (k->next_sib != ODB_NIL)
            return k->next_sib;
        idx = k->parent;
    }
    return ODB_NIL;
}

int odb_delete(struct odb *odb, struct odb_hkey base, const char *path, bool recursive)
{
    odb__clear_error();
    int err = odb__begin(odb);
    if (err)
        return err;
    uint32_t idx;
    err = odb__resolve(odb, base, path, false, &idx);
    if (err)
        goto out;
    struct odb_key_slot *k = &odb->keys[idx];
    if (idx == 0) {
        err = odb__fail(UT_EINVAL, "the root cannot be deleted");
        goto out;
    }
    if (k->type == ODB_TYPE_DIR && k->n_children && !recursive) {
        err = odb__fail(ODB_ENOTEMPTY, "directory '%s' is not empty", k->name);
        goto out;
    }
    for (uint32_t i = idx; i != ODB_NIL; i = subtree_next(odb, idx, i)) {
        if (!(odb->keys[i].mode & ODB_MODE_DELETE)) {
            err = odb__fail(ODB_EACCESS, "key '%s' may not be deleted", odb->keys[i].name);
            goto out;
        }
    }
    /* Detach: the subtree vanishes from lookups at once; its slots are
     * reclaimed after the commit (txn.c). */
    uint32_t parent = k->parent;
    struct odb_header *hdr = odb->hdr;
    err = odb__watch_notify(odb, idx);
    if (!err)
        err = unhash(odb, idx);
    if (!err)
        err = unlink_sibling(odb, idx);
    if (!err)
        err = odb__touch_quiet(odb, parent); /* watchers were told about idx */
    if (!err)
        err = odb__undo_save(odb, k, offsetof(struct odb_key_slot, parent));
    if (!err)
        err = odb__undo_save(odb, &k->next_sib, sizeof k->next_sib);
    if (!err)
        err = odb__undo_save(odb, &hdr->garbage, sizeof hdr->garbage);
    if (err)
        goto out;
    k->gen++; /* handles to the subtree root go stale at once */
    k->flags |= ODB_KF_GARBAGE;
    k->next_sib = hdr->garbage;
    hdr->garbage = idx;
out:
    return odb__end(odb, err);
}

int odb_create(struct odb *odb, struct odb_hkey base, const char *path, enum odb_type type,
               uint32_t n_elem, uint32_t elem_size, struct odb_hkey *out)
{
    odb__clear_error();
    if (type == ODB_TYPE_LINK)
        return odb__fail(UT_EINVAL, "links are made with odb_link, which needs a target");
    int err = odb__begin(odb);
    if (err)
        return err;
    uint32_t idx = 0;
    err = odb__create(odb, base, path, type, n_elem, elem_size, &idx);
    if (!err && out)
        *out = odb__handle(odb, idx);
    return odb__end(odb, err);
}

int odb_rename(struct odb *odb, struct odb_hkey key, const char *new_name)
{
    odb__clear_error();
    size_t len = new_name ? strlen(new_name) : 0;
    if (!new_name || !odb__name_valid(new_name, len))
        return odb__fail(ODB_ENAME, "invalid key name '%.80s'", new_name ? new_name : "");
    int err = odb__begin(odb);
    if (err)
        return err;
    struct odb_key_slot *k;
    err = odb__key_checked(odb, key, &k);
    if (err)
        goto out;
    if (key.idx == 0) {
        err = odb__fail(UT_EINVAL, "the root cannot be renamed");
        goto out;
    }
    if (!(k->mode & ODB_MODE_WRITE)) {
        err = odb__fail(ODB_EACCESS, "key '%s' is not writable", k->name);
        goto out;
    }
    uint32_t other = lookup_child(odb, k->parent, new_name, len);
    if (other != ODB_NIL && other != key.idx) {
        err = odb__fail(ODB_EEXIST, "key '%s' already exists", new_name);
        goto out;
    }
    err = unhash(odb, key.idx);
    if (!err)
        err = odb__undo_save(odb, k, sizeof *k);
    if (err)
        goto out;
    memset(k->name, 0, sizeof k->name);
    memcpy(k->name, new_name, len);
    k->name_len = (uint8_t)len;
    k->name_hash = odb__name_hash(new_name, len);
    err = rehash(odb, key.idx);
    if (!err)
        err = odb__touch(odb, key.idx);
    if (!err)
        err = odb__touch_quiet(odb, k->parent);
out:
    return odb__end(odb, err);
}

int odb_link(struct odb *odb, struct odb_hkey base, const char *path, const char *target)
{
    odb__clear_error();
    if (!target || target[0] != '/' || strlen(target) > ODB_PATH_MAX)
        return odb__fail(ODB_EPATH, "link target must be an absolute path");
    size_t len = strlen(target) + 1;
    int err = odb__begin(odb);
    if (err)
        return err;
    uint32_t idx;
    err = odb__create(odb, base, path, ODB_TYPE_LINK, 1, (uint32_t)len, &idx);
    if (!err)
        memcpy(odb__heap_payload(odb, odb->keys[idx].data), target, len);
    return odb__end(odb, err);
}

int odb_copy(struct odb *odb, struct odb_hkey src, struct odb_hkey base, const char *dst_path)
{
    odb__clear_error();
    int err = odb__begin(odb);
    if (err)
        return err;
    struct odb_key_slot *s;
    uint32_t dst = 0;
    uint32_t *map = NULL; /* pairs: src slot, dst slot, for directories to fill */
    size_t n_map = 0, cap_map = 0;
    err = odb__key_checked(odb, src, &s);
    if (err)
        goto out;
    err = odb__create(odb, base, dst_path, (enum odb_type)s->type, s->n_elem ? s->n_elem : 1,
                      s->elem_size, &dst);
    if (err)
        goto out;
    for (uint32_t a = odb->keys[dst].parent;; a = odb->keys[a].parent) {
        if (a == src.idx) {
            err = odb__fail(UT_EINVAL, "cannot copy a directory into itself");
            goto out;
        }
        if (a == 0)
            break;
    }
    /* Copy values and modes; directories are filled breadth-first. */
    uint32_t pending_src = src.idx, pending_dst = dst;
    for (;;) {
        struct odb_key_slot *from = &odb->keys[pending_src];
        struct odb_key_slot *to = &odb->keys[pending_dst];
        if (from->type != ODB_TYPE_DIR) {
            memcpy(odb__heap_payload(odb, to->data), odb__heap_payload(odb, from->data),
                   (size_t)from->n_elem * from->elem_size);
        } else {
            for (uint32_t c = from->first_child; c != ODB_NIL; c = odb->keys[c].next_sib) {
                const struct odb_key_slot *ck = &odb->keys[c];
                uint32_t nc;
                err = new_key(odb, pending_dst, ck->name, ck->name_len, (enum odb_type)ck->type,
                              ck->n_elem, ck->elem_size, &nc);
                if (err)
                    goto out;
                if (n_map + 2 > cap_map) {
                    size_t ncap = cap_map ? cap_map * 2 : 64;
                    uint32_t *m = ut_realloc(map, ncap * sizeof *m);
                    if (!m) {
                        err = odb__fail(UT_ENOMEM, "out of memory copying a subtree");
                        goto out;
                    }
                    map = m;
                    cap_map = ncap;
                }
                map[n_map++] = c;
                map[n_map++] = nc;
            }
        }
        err = odb__undo_save(odb, &to->mode, sizeof to->mode);
        if (err)
            goto out;
        to->mode = from->mode;
        if (n_map == 0)
            break;
        pending_dst = map[--n_map];
        pending_src = map[--n_map];
    }
out:
    ut_free(map);
    return odb__end(odb, err);
}
