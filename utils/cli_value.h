/*
 * utils/cli_value.h - text helpers shared by the command-line programs
 * (odbedit first): a shell-like tokenizer, ODB path arithmetic on strings,
 * and parsing/printing ODB values as text.
 *
 * Layering: programs in utils/ only; uses odb/odb.h for the type and mode
 * enums and base/ut.h for errors and the heap. Nothing here touches shared
 * memory: every function works on caller-supplied strings and buffers, so
 * the unit test (tests/utils/test_cli_value.c) needs no ODB.
 *
 * Errors are the project's codes (UT_EINVAL, ODB_EPATH, ...). Functions
 * that can explain a failure write a sentence into a caller buffer `why`
 * (may be NULL), which the program prints after ut_strerror().
 *
 * Thread-safety: every function is reentrant; none keeps state.
 */
#ifndef AURUM_UTILS_CLI_VALUE_H
#define AURUM_UTILS_CLI_VALUE_H

#include <stdio.h>

#include "base/ut.h"
#include "odb/odb.h"

/* ---------------------------------------------------------------------- */
/* Tokenizer                                                              */
/* ---------------------------------------------------------------------- */

/*
 * A command line split into words. argv[argc] is NULL. All strings live in
 * one heap block owned by the struct; release with cli_args_release.
 */
struct cli_args {
    int argc;
    char **argv;
};

/*
 * Splits `line` into words at unquoted blanks (space, tab, CR, LF).
 * "double quotes" group a word and understand the escapes \" \\ \n \t
 * (any other backslash is kept literally); 'single quotes' are literal;
 * outside quotes a backslash makes the next character literal. An unquoted
 * '#' at the start of a word begins a comment that runs to the end of the
 * line. "" gives an empty word. On success *out owns the words (argc may be
 * 0 for a blank line). Returns 0, UT_EINVAL (unterminated quote or a
 * trailing backslash; *out untouched) or UT_ENOMEM.
 */
int cli_tokenize(const char *line, struct cli_args *out, char *why, size_t why_size);
/* Frees the words and zeroes *a. Accepts NULL and a zeroed struct. */
void cli_args_release(struct cli_args *a);

/* ---------------------------------------------------------------------- */
/* Paths                                                                  */
/* ---------------------------------------------------------------------- */

/*
 * Resolves `arg` (absolute, or relative to the absolute directory `cwd`)
 * into a normalised absolute path in out[size]: repeated '/' collapse, "."
 * disappears and ".." drops the previous component (".." at the root stays
 * at the root). This is textual, like a shell's logical `cd`: a link in
 * the path is not looked at. A NULL or empty `arg` gives `cwd`. Returns 0
 * or ODB_EPATH (the result does not fit; out untouched).
 */
int cli_path_resolve(const char *cwd, const char *arg, char *out, size_t size);

/* The last component of an absolute path ("/" for the root). Points into
 * `path`. */
const char *cli_path_base(const char *path);

/* Array index written after a path: none, "[n]", or "[*]". */
enum cli_index_kind {
    CLI_INDEX_NONE,
    CLI_INDEX_ONE,
    CLI_INDEX_ALL,
};
struct cli_index {
    enum cli_index_kind kind;
    uint32_t index; /* for CLI_INDEX_ONE */
};

/*
 * Splits "path[idx]" into the path and the index. A '[' anywhere but in a
 * final "[n]" or "[*]" (n a decimal number below 2^32) is malformed.
 * Writes the path part to path[size]. Returns 0, ODB_EPATH (malformed
 * index or too long; outputs untouched).
 */
int cli_path_split_index(const char *arg, char *path, size_t size, struct cli_index *idx, char *why,
                         size_t why_size);

/* ---------------------------------------------------------------------- */
/* Types, values, modes                                                   */
/* ---------------------------------------------------------------------- */

/*
 * A type from its name, case-insensitive: the ODB names (INT8 .. UINT64,
 * FLOAT, DOUBLE, BOOL, STRING, LINK, DIR) and the MIDAS ones users know
 * (BYTE, SBYTE, CHAR, WORD, SHORT, DWORD, INT, UINT, QWORD, KEY). Returns
 * 0 for an unknown name.
 */
enum odb_type cli_type_from_name(const char *name);

/* Largest element size of a fixed-size type (for stack buffers). */
#define CLI_VALUE_MAX 8

/*
 * Parses `text` as one element of fixed-size `type` (integers, FLOAT,
 * DOUBLE, BOOL) into out[odb_type_size(type)], with range checks: "300"
 * into INT8 is an error, "-1" into an unsigned type too. Integers are
 * decimal, or hexadecimal with a 0x prefix (a leading 0 does not mean
 * octal). Floats take anything strtod does (including inf and nan); a
 * finite value too large for FLOAT is an error. Bools accept y/n, yes/no,
 * true/false, on/off and 1/0, case-insensitive. Returns 0 or UT_EINVAL (out
 * untouched, reason in why).
 */
int cli_value_parse(enum odb_type type, const char *text, void *out, char *why, size_t why_size);

enum cli_print_flags {
    CLI_PRINT_QUOTE = 1u << 0, /* strings in double quotes, with \" \\ \n \t and \xNN escapes */
};

/*
 * Prints one element of `type` to f: integers in decimal, FLOAT and DOUBLE
 * with %g, BOOL as y or n, STRING and LINK as text (at most elem_size
 * bytes, stopping at the first NUL), quoted with CLI_PRINT_QUOTE. `elem`
 * is borrowed and need not be aligned. DIR prints nothing.
 */
void cli_value_print(FILE *f, enum odb_type type, const void *elem, size_t elem_size,
                     unsigned flags);

/*
 * Parses an access mode: letters from "rwd" in any order ("" or "-" for
 * none), or a number 0..7 of the enum odb_mode bits (r=1, w=2, d=4).
 * Returns 0 or UT_EINVAL.
 */
int cli_mode_parse(const char *text, uint32_t *mode_out);
/* Writes "rwd" with '-' for a missing right into out[4]. */
void cli_mode_format(uint32_t mode, char out[4]);

/*
 * Formats a duration in nanoseconds briefly: "0.4s", "12s", "5m", "3h",
 * "2d" (negative durations count as 0). Writes into out[size].
 */
void cli_age_format(int64_t ns, char *out, size_t size);
/* Formats a CLOCK_REALTIME time in local time, "YYYY-MM-DD HH:MM:SS", and
 * with `millis` ".mmm" after it. Writes into out[size]. */
void cli_time_format(int64_t wall_ns, bool millis, char *out, size_t size);

#endif
