/*
 * utils/cli_edit.h - interactive line input for the command-line programs:
 * libedit line editing (emacs keys, the user's ~/.editrc), a history file,
 * a prompt that the program computes per line, and TAB completion whose
 * candidates the program supplies.
 *
 * Layering: programs in utils/ only; uses libedit (<histedit.h>) and
 * base/ut.h. It knows nothing of the ODB: odbedit's completion callback
 * lists ODB directories.
 *
 * Completion: the text before the cursor is split into words the way
 * cli_tokenize does (quotes and backslashes understood). The callback gets
 * the index of the word under the cursor (0: the command) and its unquoted
 * text, and returns the candidates that extend it. One candidate is
 * inserted (with '/' after a directory, a space after anything else);
 * several insert their common prefix, or are listed when there is none.
 * Inserted text is escaped so that the tokenizer reads it back unchanged.
 *
 * Thread-safety: one handle per terminal, used by one thread.
 */
#ifndef AURUM_UTILS_CLI_EDIT_H
#define AURUM_UTILS_CLI_EDIT_H

#include <stdbool.h>
#include <stddef.h>

struct cli_edit;

#define CLI_COMPLETION_NAME_MAX 63  /* bytes, without the NUL */
#define CLI_COMPLETIONS_MAX     256 /* candidates considered per TAB */

struct cli_completion {
    char name[CLI_COMPLETION_NAME_MAX + 1];
    bool dir; /* completes with '/' rather than a space */
};

/*
 * Candidate provider. `word` is the unquoted text of word number
 * `word_index` up to the cursor. Sets *prefix_len to how many trailing
 * bytes of `word` the candidates complete (for a path, the part after the
 * last '/'), fills out[0..max) with candidates whose names start with those
 * bytes (case-insensitively) and returns their number. Called in the
 * thread that calls cli_edit_read.
 */
typedef size_t (*cli_complete_cb)(void *arg, int word_index, const char *word, size_t *prefix_len,
                                  struct cli_completion *out, size_t max);
/* Returns the prompt for the next line; the string must stay valid until
 * the next call. */
typedef const char *(*cli_prompt_cb)(void *arg);

/*
 * Starts line editing on stdin/stdout. history_file (may be NULL or "")
 * is loaded now and written by cli_edit_close, mode 0600. prompt and
 * complete (may be NULL) are called with `arg`. On success *out owns the
 * handle. Returns 0 or UT_ENOMEM (libedit could not start).
 */
int cli_edit_open(const char *argv0, const char *history_file, cli_prompt_cb prompt,
                  cli_complete_cb complete, void *arg, struct cli_edit **out);

/*
 * Reads one line, with the prompt, and adds it to the history when it is
 * not blank. *line is borrowed until the next call; it ends in '\n'.
 * Returns 0, UT_EINTR (a signal interrupted the read: typically Ctrl-C;
 * the partial line is dropped) or UT_ENOENT (end of input: Ctrl-D).
 */
int cli_edit_read(struct cli_edit *ed, const char **line);

/* Writes the history file and ends line editing. Accepts NULL. */
void cli_edit_close(struct cli_edit *ed);

#endif
