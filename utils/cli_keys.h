/*
 * utils/cli_keys.h - reading ODB keys for display: a key's info and value
 * copied out together, and the one-entry renderings of `ls` and `ls -l`.
 *
 * Layering: programs in utils/ only; uses odb/odb.h and cli_value.h.
 *
 * Other processes change the ODB while we read it. Everything here copies
 * out first and prints afterwards, so an entry deleted halfway (the read
 * returns ODB_ESTALE or ODB_ENOKEY) prints nothing at all, and the caller
 * can skip it silently: enumerating /System/Clients while clients come and
 * go must never produce an error (SPEC, MIDAS failure mode 1).
 *
 * Thread-safety: the functions are reentrant; a struct is used by one
 * thread at a time.
 */
#ifndef AURUM_UTILS_CLI_KEYS_H
#define AURUM_UTILS_CLI_KEYS_H

#include <stdio.h>

#include "odb/odb.h"

/* A key's info and its whole value, copied out of the ODB. */
struct cli_keyval {
    struct odb_key_info ki; /* n_elem is trimmed to what data holds */
    uint8_t *data;          /* n_elem * elem_size bytes (a scalar string: up to its NUL);
                               NULL for a directory or an unreadable key; owned, heap */
    size_t size;            /* bytes in data */
    bool unreadable;        /* the key's mode forbids reading */
};

/*
 * Reads key h itself (a link is not followed: its value is its target
 * path, type ODB_TYPE_LINK). A key resized between reading its info and
 * its value is read again. A key without read access is returned with
 * unreadable set and no data. On success *out owns its data (release with
 * cli_keyval_release). Returns 0, ODB_ESTALE (deleted), UT_ENOMEM, or
 * another ODB error; *out is untouched on error.
 */
int cli_keyval_read(struct odb *odb, struct odb_hkey h, struct cli_keyval *out);
/* Frees the data. Accepts NULL. */
void cli_keyval_release(struct cli_keyval *kv);
/* Prints element i (< ki.n_elem, data not NULL) as cli_value_print does. */
void cli_keyval_print(FILE *f, const struct cli_keyval *kv, uint32_t i, unsigned flags);

/* One entry of a listing. */
struct cli_entry {
    struct cli_keyval kv; /* the key; for a link read with follow, its target */
    char *link;           /* a link's target path (owned, heap), or NULL */
    bool broken;          /* a link whose target could not be read: kv is the link */
};

/*
 * Reads an entry completely. With `follow`, a link's target is read too
 * (its info and value replace the link's; a missing target sets broken).
 * On success *out owns its memory (release with cli_entry_release).
 * Returns 0, or the error of reading the entry itself (ODB_ESTALE or
 * ODB_ENOKEY when it vanished); *out holds nothing on error.
 */
int cli_entry_read(struct odb *odb, struct odb_hkey h, bool follow, struct cli_entry *out);
/* Frees an entry. Accepts NULL. */
void cli_entry_release(struct cli_entry *en);

/* The heading of `ls -l`: column names and a rule. */
void cli_entry_print_header(FILE *f);
/*
 * `ls -l` line(s): name (directories end in '/', links show "-> target"),
 * type, number of values, element size, mode (rwd), last modification in
 * local time, and the value (strings quoted). An array shows "[n]" and then
 * one "[i] value" line per element, aligned under the value column.
 */
void cli_entry_print_long(FILE *f, const char *name, const struct cli_entry *en);
/* `ls` line: the name, with '/' after a directory and "-> target" after a
 * link. */
void cli_entry_print_short(FILE *f, const char *name, const struct cli_entry *en);

#endif
