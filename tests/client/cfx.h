/*
 * tests/client/cfx.h - helpers shared by the client test binaries (linked
 * into every test through libtesthelp.a). Every symbol starts with cfx_.
 *
 * An experiment per test: cfx_setup makes a mkdtemp directory and
 * cfx_teardown removes its shared-memory segments and its files.
 *
 * Child processes: cfx_child_start forks, arms alarm() in the child, runs a
 * function there and _exit()s with its return value. Parent and child talk
 * over two pipes. Children never use cmocka assertions; they report
 * through the pipes and their exit status. ThreadSanitizer cannot start
 * threads in a child forked from a multi-threaded process, so a child that
 * connects (and so starts a watchdog thread) must be forked before the
 * parent connects or starts threads.
 *
 * Include after <cmocka.h> and its prerequisites.
 */
#ifndef AURUM_TESTS_CLIENT_CFX_H
#define AURUM_TESTS_CLIENT_CFX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "client/aurum.h"

struct cfx {
    char dir[256]; /* the experiment directory (mkdtemp) */
};

/* cmocka per-test fixtures: *state becomes a struct cfx. The teardown
 * also cancels any alarm() the test armed, restores the default log sink
 * and kills children of cfx_child_start not yet waited for. */
int cfx_setup(void **state);
int cfx_teardown(void **state);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t cfx_now_ms(void);
/* Sleeps ms milliseconds. Only for letting time pass (watchdog periods,
 * contention windows), never for ordering events. */
void cfx_sleep_ms(int ms);

/* Options for a test client of experiment `dir`: the given name and
 * watchdog period, AU_CONNECT_CREATE plus `flags`, everything else default. */
struct au_connect_opts cfx_opts(const char *dir, const char *name, int period_ms, unsigned flags);
/* Connects with cfx_opts (parent only: fails the test on error). */
struct au_client *cfx_connect(const char *dir, const char *name, int period_ms, unsigned flags);

/* A forked child and the parent's ends of its pipes. */
struct cfx_child {
    pid_t pid;
    int to_child;   /* parent writes, child reads (its in_fd) */
    int from_child; /* child writes (its out_fd), parent reads */
};
/* Runs in the child; the return value is its exit status. */
typedef int (*cfx_child_fn)(int in_fd, int out_fd, void *arg);
/* Forks a child that runs fn with alarm(alarm_s) armed (fails the test
 * when fork fails). */
void cfx_child_start(struct cfx_child *ch, int alarm_s, cfx_child_fn fn, void *arg);
/* Waits up to timeout_ms for the child. Returns its wait status, or -1
 * after killing it when it did not finish. Closes the pipes. */
int cfx_child_wait(struct cfx_child *ch, int timeout_ms);
/* SIGKILLs the child, reaps it and closes the pipes. */
void cfx_child_kill(struct cfx_child *ch);
/* True when the child exited normally with status 0. */
bool cfx_exited_ok(int status);

/* Exact-size pipe I/O, bounded in time; true on success. */
bool cfx_write(int fd, const void *buf, size_t n);
bool cfx_read(int fd, void *buf, size_t n, int timeout_ms);

/* True when /System/Clients/<slot> exists. */
bool cfx_entry_exists(struct au_client *c, uint32_t slot);
/* Polls until /System/Clients/<slot> is gone; returns the milliseconds it
 * took, or -1 after timeout_ms. */
int cfx_wait_entry_gone(struct au_client *c, uint32_t slot, int timeout_ms);
/* Waits until /System/Watchdog/Last scan has changed n times (so n scans
 * happened). Returns false after timeout_ms. */
bool cfx_wait_scans(struct au_client *c, int n, int timeout_ms);

/* Counts the messages in the ring with seq > after_seq whose text contains
 * every non-NULL needle (at most three). */
int cfx_count_msgs(struct au_client *c, uint64_t after_seq, const char *n1, const char *n2,
                   const char *n3);
/* Polls cfx_count_msgs until it reaches `want`; returns the count reached
 * (want, or less after timeout_ms). */
int cfx_wait_msgs(struct au_client *c, uint64_t after_seq, int want, int timeout_ms, const char *n1,
                  const char *n2, const char *n3);

#endif
