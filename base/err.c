/*
 * base/err.c - the project's error texts and the assertion handler.
 *
 * The error list lives in UT_ERRNO_MAP (base/ut.h) so that the enum and this
 * table can never disagree. Negative values outside the project ranges are
 * -errno and are described by strerror_r.
 */
#include "base/ut_int.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static __thread char errno_text[128];

const char *ut_strerror(int err)
{
    if (err == 0)
        return "success";
    switch (err) {
#define UT_ERR_CASE(name, val, text)                                                               \
    case (val):                                                                                    \
        return text;
        UT_ERRNO_MAP(UT_ERR_CASE)
#undef UT_ERR_CASE
    default:
        break;
    }
    if (err < 0 && err > -1000) {
        /* GNU strerror_r may return a static string instead of filling ours. */
        const char *s = strerror_r(-err, errno_text, sizeof errno_text);
        return s ? s : "unknown system error";
    }
    snprintf(errno_text, sizeof errno_text, "unknown error %d", err);
    return errno_text;
}

void ut__assert_fail(const char *expr, const char *file, int line)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "aurum: assertion failed: %s at %s:%d (pid %d)\n", expr, file,
                     line, (int)getpid());
    if (n > 0) {
        /* write(2) rather than stdio: we may be deep inside a broken state. */
        ssize_t w = write(STDERR_FILENO, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
        (void)w;
    }
    abort();
}
