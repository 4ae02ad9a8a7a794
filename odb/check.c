/*
 * odb/check.c - the integrity check: walks the whole segment and verifies
 * every structural invariant listed in odb_int.h, tree.c and heap.c.
 *
 * It runs under the ODB lock (recursively, so recovery can call it) and
 * reads everything as untrusted: every index is range-checked before use
 * and every walk is bounded, so a corrupt segment yields a report, never a
 * crash or an endless loop.
 */
#include "odb/odb_int.h"

#include <stdio.h>
#include <string.h>

#define REPORT(...)                                                                                \
    do {                                                                                           \
        if (report && report_size)                                                                 \
            snprintf(report, report_size, __VA_ARGS__);                                            \
        err = UT_ECORRUPT;                                                                         \
        goto out;                                                                                  \
    } while (0)

static bool test_and_set(uint8_t *bits, uint32_t i)
{
    bool was = bits[i / 8] & (1u << (i % 8));
    bits[i / 8] |= (uint8_t)(1u << (i % 8));
    return was;
}

/* Checks one in-use key's own fields. Returns NULL or a description. */
static const char *check_slot(const struct odb *odb, uint32_t i)
{
    const struct odb_key_slot *k = &odb->keys[i];
    if (k->type >= ODB_TYPE_MAX)
        return "bad type";
    if (k->gen == 0)
        return "generation 0 on a key in use";
    if (k->parent >= odb->hdr->max_keys)
        return "parent out of range";
    if (i != 0) {
        if (!odb__name_valid(k->name, k->name_len) || k->name[k->name_len] != '\0')
            return "invalid name";
        if (k->name_hash != odb__name_hash(k->name, k->name_len))
            return "stale name hash";
    }
    if (k->type == ODB_TYPE_DIR) {
        if (k->data != 0 || k->n_elem != 0)
            return "directory with a value";
        return NULL;
    }
    if (k->first_child != ODB_NIL || k->n_children)
        return "value key with children";
    if (k->n_elem == 0 || k->elem_size == 0)
        return "value with no elements";
    size_t ts = odb_type_size((enum odb_type)k->type);
    if (ts && k->elem_size != ts)
        return "element size does not match the type";
    const char *v = odb__heap_payload(odb, k->data);
    if (!v)
        return "value block invalid";
    if ((uint64_t)k->n_elem * k->elem_size > odb__heap_capacity(odb, k->data))
        return "value larger than its block";
    if (k->type == ODB_TYPE_STRING || k->type == ODB_TYPE_LINK)
        for (uint32_t e = 0; e < k->n_elem; e++)
            if (!memchr(v + (size_t)e * k->elem_size, '\0', k->elem_size))
                return "unterminated string";
    if (k->type == ODB_TYPE_BOOL)
        for (uint32_t e = 0; e < k->n_elem; e++)
            if ((unsigned char)v[e] > 1)
                return "bool neither 0 nor 1";
    return NULL;
}

/* Walks the subtree at root, marking slots. Returns 0 or UT_ECORRUPT. */
static int walk_tree(const struct odb *odb, uint32_t root, uint8_t *seen, uint32_t *n_seen,
                     uint32_t *n_values, char *report, size_t report_size)
{
    const uint32_t max = odb->hdr->max_keys;
    int err = 0;
    uint32_t idx = root;
    while (idx != ODB_NIL) {
        if (idx >= max)
            REPORT("link to slot %u out of range", idx);
        const struct odb_key_slot *k = &odb->keys[idx];
        if (k->type == 0)
            REPORT("slot %u is free but linked into the tree", idx);
        if (test_and_set(seen, idx))
            REPORT("slot %u ('%.63s') reachable twice", idx, k->name);
        if (++*n_seen > max)
            REPORT("more keys reachable than slots");
        const char *why = check_slot(odb, idx);
        if (why)
            REPORT("key %u ('%.63s'): %s", idx, k->name, why);
        if (k->type != ODB_TYPE_DIR)
            ++*n_values;
        if (k->type == ODB_TYPE_DIR) {
            uint32_t n = 0, prev = ODB_NIL;
            for (uint32_t c = k->first_child; c != ODB_NIL; c = odb->keys[c].next_sib) {
                if (c >= max || ++n > k->n_children)
                    REPORT("directory %u ('%.63s'): child list longer than n_children %u", idx,
                           k->name, k->n_children);
                if (odb->keys[c].parent != idx || odb->keys[c].prev_sib != prev)
                    REPORT("key %u: parent or sibling links inconsistent", c);
                prev = c;
            }
            if (n != k->n_children || k->last_child != prev)
                REPORT("directory %u ('%.63s'): %u children linked, n_children %u", idx, k->name, n,
                       k->n_children);
        }
        /* Next in depth-first order, without leaving the subtree. */
        if (k->type == ODB_TYPE_DIR && k->first_child != ODB_NIL) {
            idx = k->first_child;
            continue;
        }
        while (idx != root && odb->keys[idx].next_sib == ODB_NIL)
            idx = odb->keys[idx].parent;
        idx = idx == root ? ODB_NIL : odb->keys[idx].next_sib;
    }
out:
    return err;
}

int odb_check(struct odb *odb, char *report, size_t report_size)
{
    int err = odb__rlock(odb);
    if (err)
        return err;
    const struct odb_header *hdr = odb->hdr;
    const uint32_t max = hdr->max_keys;
    uint8_t *seen = ut_calloc((max + 7) / 8, 1);
    if (!seen) {
        odb__runlock(odb);
        return UT_ENOMEM;
    }
    uint32_t n_seen = 0, n_values = 0;
    if (report && report_size)
        report[0] = '\0';

    if (hdr->txn_depth == 0 && hdr->undo_used != 0)
        REPORT("undo log holds %llu bytes outside a transaction",
               (unsigned long long)hdr->undo_used);
    if (odb->keys[0].type != ODB_TYPE_DIR || odb->keys[0].parent != 0)
        REPORT("root is not a directory");
    err = walk_tree(odb, 0, seen, &n_seen, &n_values, report, report_size);
    if (err)
        goto out;
    uint32_t n_garbage_roots = 0;
    for (uint32_t g = hdr->garbage; g != ODB_NIL; g = odb->keys[g].next_sib) {
        if (g >= max || !(odb->keys[g].flags & ODB_KF_GARBAGE) || ++n_garbage_roots > max)
            REPORT("garbage list entry %u invalid", g);
        err = walk_tree(odb, g, seen, &n_seen, &n_values, report, report_size);
        if (err)
            goto out;
    }
    if (n_seen != hdr->n_keys)
        REPORT("%u keys reachable, header counts %u", n_seen, hdr->n_keys);
    uint32_t n_free = 0;
    for (uint32_t f = hdr->free_key; f != ODB_NIL; f = odb->keys[f].next_sib) {
        if (f >= max || odb->keys[f].type != 0)
            REPORT("free slot list holds slot %u in use or out of range", f);
        if (test_and_set(seen, f))
            REPORT("free slot %u listed twice or also in the tree", f);
        if (++n_free > max)
            REPORT("free slot list has a cycle");
    }
    if (n_free + hdr->n_keys != max)
        REPORT("%u free + %u used slots != %u", n_free, hdr->n_keys, max);

    /* Hash chains: each entry in use and in its own bucket; every live key
     * other than the root is found by name under its parent. */
    uint32_t n_hashed = 0;
    for (uint32_t b = 0; b < hdr->n_buckets; b++) {
        for (uint32_t i = odb->buckets[b]; i != ODB_NIL; i = odb->keys[i].hash_next) {
            if (i >= max || odb->keys[i].type == 0 || i == 0)
                REPORT("bucket %u holds slot %u, which is free, the root or out of range", b, i);
            if (odb__bucket(odb, odb->keys[i].parent, odb->keys[i].name_hash) != b)
                REPORT("key %u is in bucket %u, not its own", i, b);
            if (odb->keys[i].flags & ODB_KF_GARBAGE)
                REPORT("detached key %u is still hashed", i);
            if (++n_hashed > max)
                REPORT("hash chains have a cycle");
        }
    }
    if (n_hashed != hdr->n_keys - 1 - n_garbage_roots)
        REPORT("%u keys hashed, expected %u", n_hashed, hdr->n_keys - 1 - n_garbage_roots);
    for (uint32_t i = 1; i < max; i++) {
        const struct odb_key_slot *k = &odb->keys[i];
        if (k->type == 0 || (k->flags & ODB_KF_GARBAGE))
            continue;
        uint32_t found = ODB_NIL;
        for (uint32_t j = odb->buckets[odb__bucket(odb, k->parent, k->name_hash)]; j != ODB_NIL;
             j = odb->keys[j].hash_next)
            if (j == i)
                found = j;
        if (found == ODB_NIL)
            REPORT("key %u ('%.63s') missing from its hash chain", i, k->name);
    }

    uint32_t n_used_blocks = 0;
    err = odb__heap_check(odb, report, report_size, &n_used_blocks);
    if (err)
        goto out;
    if (n_used_blocks != n_values)
        REPORT("%u value blocks in use for %u values", n_used_blocks, n_values);
out:
    ut_free(seen);
    odb__runlock(odb);
    return err;
}
