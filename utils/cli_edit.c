/*
 * utils/cli_edit.c - libedit behind cli_edit.h: prompt, history file and
 * TAB completion for the interactive programs.
 *
 * libedit is used through its native API (<histedit.h>) rather than the
 * readline emulation, because the native API gives the completion function
 * the line and cursor directly (el_line) and lets el_gets report a read
 * interrupted by a signal (count -1, errno EINTR), which is how Ctrl-C at
 * the prompt abandons the line. The program's SIGINT handler must be
 * installed without SA_RESTART for that; libedit's own signal handling
 * (EL_SIGNAL) is left off so the program's handler stays in charge.
 *
 * The handle is per terminal and single-threaded; the completion callback
 * runs inside el_gets, in the reading thread.
 */
#include "utils/cli_edit.h"

#include <ctype.h>
#include <errno.h>
#include <histedit.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "base/ut.h"

#include "base/banned.h"

#define HISTORY_SIZE 1000
#define WORD_MAX     1024 /* bytes of the word being completed */

struct cli_edit {
    EditLine *el;
    History *hist;
    char *history_file; /* heap, or NULL */
    cli_prompt_cb prompt;
    cli_complete_cb complete;
    void *arg;
};

static char *prompt_thunk(EditLine *el)
{
    struct cli_edit *ed = NULL;
    el_get(el, EL_CLIENTDATA, &ed);
    const char *p = ed && ed->prompt ? ed->prompt(ed->arg) : "> ";
    return (char *)p;
}

/* Inserts n bytes of s at the cursor, escaping what the tokenizer would
 * otherwise split or interpret. quote is the open quote character or 0. */
static void insert_escaped(EditLine *el, const char *s, size_t n, char quote)
{
    char buf[2 * CLI_COMPLETION_NAME_MAX + 2];
    size_t k = 0;
    for (size_t i = 0; i < n && k + 2 < sizeof buf; i++) {
        char ch = s[i];
        bool esc = false;
        if (quote == '"')
            esc = ch == '"' || ch == '\\';
        else if (quote == 0)
            esc = ch == ' ' || ch == '\t' || ch == '"' || ch == '\'' || ch == '\\' || ch == '#';
        if (esc)
            buf[k++] = '\\';
        buf[k++] = ch;
    }
    buf[k] = '\0';
    if (k)
        el_insertstr(el, buf);
}

/* Length of the case-insensitive common prefix of a and b. */
static size_t common_prefix(const char *a, const char *b)
{
    size_t i = 0;
    while (a[i] && b[i] && tolower((unsigned char)a[i]) == tolower((unsigned char)b[i]))
        i++;
    return i;
}

/*
 * Splits line[0..n) like the tokenizer and returns the unquoted text of
 * the last (possibly empty) word in word[WORD_MAX], the number of words
 * before it in *index and the quote still open at the end in *quote.
 */
static void last_word(const char *line, size_t n, char *word, int *index, char *quote)
{
    size_t wl = 0;
    int before = 0;
    bool in_word = false;
    char q = 0;
    for (size_t i = 0; i < n; i++) {
        char c = line[i];
        char add = 0;
        if (q == '\'') {
            if (c == '\'')
                q = 0;
            else
                add = c;
        } else if (q == '"') {
            if (c == '"')
                q = 0;
            else if (c == '\\' && i + 1 < n)
                add = line[++i];
            else
                add = c;
        } else if (c == ' ' || c == '\t') {
            if (in_word)
                before++;
            in_word = false;
            wl = 0;
        } else {
            in_word = true;
            if (c == '\'' || c == '"')
                q = c;
            else if (c == '\\' && i + 1 < n)
                add = line[++i];
            else
                add = c;
        }
        if (add && wl + 1 < WORD_MAX)
            word[wl++] = add;
    }
    word[wl] = '\0';
    *index = before;
    *quote = q;
}

/* The TAB key. */
static unsigned char complete_thunk(EditLine *el, int ch)
{
    (void)ch;
    struct cli_edit *ed = NULL;
    el_get(el, EL_CLIENTDATA, &ed);
    if (!ed || !ed->complete)
        return CC_ERROR;
    const LineInfo *li = el_line(el);
    char word[WORD_MAX];
    int index;
    char quote;
    last_word(li->buffer, (size_t)(li->cursor - li->buffer), word, &index, &quote);

    struct cli_completion *c = ut_calloc(CLI_COMPLETIONS_MAX, sizeof *c);
    if (!c)
        return CC_ERROR;
    size_t pl = 0;
    size_t nc = ed->complete(ed->arg, index, word, &pl, c, CLI_COMPLETIONS_MAX);
    unsigned char rc = CC_REFRESH;
    if (nc == 0) {
        rc = CC_ERROR;
    } else if (nc == 1) {
        size_t len = strlen(c[0].name);
        if (pl <= len)
            insert_escaped(el, c[0].name + pl, len - pl, quote);
        if (c[0].dir) {
            el_insertstr(el, "/");
        } else {
            char tail[3] = {quote, ' ', '\0'};
            el_insertstr(el, quote ? tail : tail + 1);
        }
    } else {
        size_t common = strlen(c[0].name);
        for (size_t i = 1; i < nc; i++) {
            size_t k = common_prefix(c[0].name, c[i].name);
            if (k < common)
                common = k;
        }
        if (common > pl) {
            insert_escaped(el, c[0].name + pl, common - pl, quote);
        } else {
            (void)fputc('\n', stdout);
            for (size_t i = 0; i < nc; i++)
                printf("%s%s%s", c[i].name, c[i].dir ? "/" : "", i + 1 < nc ? "  " : "\n");
            (void)fflush(stdout);
            rc = CC_REDISPLAY;
        }
    }
    ut_free(c);
    return rc;
}

int cli_edit_open(const char *argv0, const char *history_file, cli_prompt_cb prompt,
                  cli_complete_cb complete, void *arg, struct cli_edit **out)
{
    struct cli_edit *ed = ut_calloc(1, sizeof *ed);
    if (!ed)
        return UT_ENOMEM;
    ed->prompt = prompt;
    ed->complete = complete;
    ed->arg = arg;
    if (history_file && *history_file && !(ed->history_file = ut_strdup(history_file)))
        goto fail;
    ed->hist = history_init();
    ed->el = el_init(argv0, stdin, stdout, stderr);
    if (!ed->hist || !ed->el)
        goto fail;
    HistEvent ev;
    history(ed->hist, &ev, H_SETSIZE, HISTORY_SIZE);
    history(ed->hist, &ev, H_SETUNIQUE, 1);
    if (ed->history_file)
        history(ed->hist, &ev, H_LOAD, ed->history_file); /* a missing file is fine */
    el_set(ed->el, EL_CLIENTDATA, ed);
    el_set(ed->el, EL_PROMPT, prompt_thunk);
    el_set(ed->el, EL_EDITOR, "emacs");
    el_set(ed->el, EL_HIST, history, ed->hist);
    el_set(ed->el, EL_ADDFN, "cli-complete", "Complete a command or a path", complete_thunk);
    el_set(ed->el, EL_BIND, "^I", "cli-complete", NULL);
    el_source(ed->el, NULL); /* the user's ~/.editrc */
    *out = ed;
    return 0;
fail:
    if (ed->el)
        el_end(ed->el);
    if (ed->hist)
        history_end(ed->hist);
    ut_free(ed->history_file);
    ut_free(ed);
    return UT_ENOMEM;
}

int cli_edit_read(struct cli_edit *ed, const char **line)
{
    int count = 0;
    const char *l = el_gets(ed->el, &count);
    if (!l)
        return count == -1 && errno == EINTR ? UT_EINTR : UT_ENOENT;
    if (l[strspn(l, " \t\r\n")] != '\0') {
        HistEvent ev;
        history(ed->hist, &ev, H_ENTER, l);
    }
    *line = l;
    return 0;
}

void cli_edit_close(struct cli_edit *ed)
{
    if (!ed)
        return;
    if (ed->history_file) {
        HistEvent ev;
        history(ed->hist, &ev, H_SAVE, ed->history_file);
        chmod(ed->history_file, 0600);
    }
    el_end(ed->el);
    history_end(ed->hist);
    ut_free(ed->history_file);
    ut_free(ed);
}
