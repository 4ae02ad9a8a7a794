/*
 * base/log.c - a minimal thread-safe logging sink. Libraries never print
 * directly; they call ut_log, and programs decide where it goes.
 */
#include "base/ut_int.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t sink_mutex = PTHREAD_MUTEX_INITIALIZER;
static ut_log_cb sink_cb;
static void *sink_arg;
static enum ut_log_level sink_min = UT_LOG_WARN;

static const char *const level_names[] = {"debug", "info", "warning", "error"};

void ut_log_set_sink(ut_log_cb cb, void *arg, enum ut_log_level min_level)
{
    pthread_mutex_lock(&sink_mutex);
    sink_cb = cb;
    sink_arg = arg;
    sink_min = min_level;
    pthread_mutex_unlock(&sink_mutex);
}

void ut_log(enum ut_log_level level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    pthread_mutex_lock(&sink_mutex);
    ut_log_cb cb = sink_cb;
    void *arg = sink_arg;
    enum ut_log_level min = sink_min;
    pthread_mutex_unlock(&sink_mutex);
    if (level < min)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (cb) {
        cb(level, msg, arg);
        return;
    }
    fprintf(stderr, "aurum[%d] %s: %s\n", (int)getpid(), level_names[level], msg);
}

size_t ut_strlcpy(char *dst, const char *src, size_t size)
{
    size_t len = strlen(src);
    if (size > 0) {
        size_t n = len < size - 1 ? len : size - 1;
        memcpy(dst, src, n);
        dst[n] = '\0';
    }
    return len;
}
