/*
 * utils/cli_keys.c - copying keys out of the ODB for display, and the
 * `ls` renderings (contracts in cli_keys.h).
 *
 * A value is read in two ODB calls (odb_key_info, then odb_get), each
 * atomic on its own. Between them another process may resize the key
 * (odb_get then says ODB_ETRUNC and we read again) or delete it (ODB_ESTALE,
 * returned to the caller, who treats it as "vanished"). Nothing is printed
 * until everything of an entry has been read.
 */
#include "utils/cli_keys.h"

#include <string.h>

#include "utils/cli_value.h"

#include "base/banned.h"

#define READ_ATTEMPTS 8 /* a key resized this often while we read it gives ODB_ETRUNC */

/* Column layout of `ls -l`. */
#define COL_NAME  28
#define COL_VALUE (COL_NAME + 1 + 7 + 1 + 5 + 1 + 5 + 1 + 4 + 1 + 19 + 1)

int cli_keyval_read(struct odb *odb, struct odb_hkey h, struct cli_keyval *out)
{
    for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
        struct cli_keyval r = {0};
        int err = odb_key_info(odb, h, &r.ki);
        if (err)
            return err;
        if (r.ki.type == ODB_TYPE_DIR) {
            *out = r;
            return 0;
        }
        size_t cap = (size_t)r.ki.n_elem * r.ki.elem_size + 1;
        r.data = ut_calloc(1, cap);
        if (!r.data)
            return UT_ENOMEM;
        r.size = cap;
        err = odb_get(odb, h, NULL, r.ki.type, r.data, &r.size);
        if (err == ODB_ETRUNC) {
            ut_free(r.data);
            continue;
        }
        if (err == ODB_EACCESS) {
            ut_free(r.data);
            r.data = NULL;
            r.size = 0;
            r.unreadable = true;
            err = 0;
        }
        if (err) {
            ut_free(r.data);
            return err;
        }
        /* Shrunk since the info was read: show what we got. */
        bool scalar_string =
            (r.ki.type == ODB_TYPE_STRING || r.ki.type == ODB_TYPE_LINK) && r.ki.n_elem == 1;
        if (r.data && !scalar_string && r.ki.elem_size && r.size / r.ki.elem_size < r.ki.n_elem)
            r.ki.n_elem = (uint32_t)(r.size / r.ki.elem_size);
        *out = r;
        return 0;
    }
    return ODB_ETRUNC;
}

void cli_keyval_release(struct cli_keyval *kv)
{
    if (!kv)
        return;
    ut_free(kv->data);
    kv->data = NULL;
}

void cli_keyval_print(FILE *f, const struct cli_keyval *kv, uint32_t i, unsigned flags)
{
    cli_value_print(f, kv->ki.type, kv->data + (size_t)i * kv->ki.elem_size, kv->ki.elem_size,
                    flags);
}

int cli_entry_read(struct odb *odb, struct odb_hkey h, bool follow, struct cli_entry *out)
{
    struct cli_entry en;
    memset(&en, 0, sizeof en);
    int err = cli_keyval_read(odb, h, &en.kv);
    if (err)
        return err;
    if (en.kv.ki.type == ODB_TYPE_LINK && en.kv.data) {
        en.link = ut_strdup((const char *)en.kv.data);
        if (!en.link) {
            cli_keyval_release(&en.kv);
            return UT_ENOMEM;
        }
    }
    if (en.kv.ki.type == ODB_TYPE_LINK && follow) {
        struct odb_hkey th;
        struct cli_keyval tv;
        if (!en.link || odb_find(odb, ODB_ROOT, en.link, &th) != 0 ||
            cli_keyval_read(odb, th, &tv) != 0) {
            en.broken = true;
        } else {
            cli_keyval_release(&en.kv);
            en.kv = tv;
        }
    }
    *out = en;
    return 0;
}

void cli_entry_release(struct cli_entry *en)
{
    if (!en)
        return;
    cli_keyval_release(&en->kv);
    ut_free(en->link);
    en->link = NULL;
}

void cli_entry_print_header(FILE *f)
{
    (void)fprintf(f, "%-*s %-7s %5s %5s %-4s %-19s %s\n", COL_NAME, "Key name", "Type", "#Val",
                  "Size", "Mode", "Last modified", "Value");
    for (int i = 0; i < COL_VALUE + 5; i++)
        (void)fputc('-', f);
    (void)fputc('\n', f);
}

void cli_entry_print_long(FILE *f, const char *name, const struct cli_entry *en)
{
    const struct odb_key_info *ki = &en->kv.ki;
    const char *slash = ki->type == ODB_TYPE_DIR ? "/" : "";
    char label[ODB_NAME_MAX + ODB_PATH_MAX + 8];
    if (en->link)
        (void)snprintf(label, sizeof label, "%s -> %s%s", name, en->link, slash);
    else
        (void)snprintf(label, sizeof label, "%s%s", name, slash);
    char mode[4];
    cli_mode_format(ki->mode, mode);
    char when[32] = "-";
    if (ki->mtime_ns > 0)
        cli_time_format(ki->mtime_ns, false, when, sizeof when);
    (void)fprintf(f, "%-*s %-7s %5u %5u %-4s %-19s", COL_NAME, label, odb_type_name(ki->type),
                  ki->n_elem, ki->type == ODB_TYPE_DIR ? 0u : ki->elem_size, mode, when);
    if (ki->type == ODB_TYPE_DIR) {
        (void)fputc('\n', f);
        return;
    }
    (void)fputc(' ', f);
    if (en->broken) {
        (void)fputs("<broken link>\n", f);
    } else if (en->kv.unreadable) {
        (void)fputs("<no read access>\n", f);
    } else if (ki->n_elem == 1) {
        cli_keyval_print(f, &en->kv, 0, CLI_PRINT_QUOTE);
        (void)fputc('\n', f);
    } else {
        (void)fprintf(f, "[%u]\n", ki->n_elem);
        for (uint32_t i = 0; i < ki->n_elem; i++) {
            (void)fprintf(f, "%*s[%u] ", COL_VALUE, "", i);
            cli_keyval_print(f, &en->kv, i, CLI_PRINT_QUOTE);
            (void)fputc('\n', f);
        }
    }
}

void cli_entry_print_short(FILE *f, const char *name, const struct cli_entry *en)
{
    if (en->link)
        (void)fprintf(f, "%s -> %s\n", name, en->link);
    else if (en->kv.ki.type == ODB_TYPE_DIR)
        (void)fprintf(f, "%s/\n", name);
    else
        (void)fprintf(f, "%s\n", name);
}
