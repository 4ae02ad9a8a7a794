/*
 * tests/odb/fixture.h - helpers shared by the test binaries (linked into
 * every test through libtesthelp.a). Every symbol starts with tfx_.
 *
 * Include after <cmocka.h> (and its prerequisites) in a test file.
 */
#ifndef AURUM_TESTS_ODB_FIXTURE_H
#define AURUM_TESTS_ODB_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "odb/odb.h"

/* Writes a fresh shm name "/aurum-test-<topic>-<pid>-<counter>" into buf
 * (counter unique within the process, thread-safe). The name is
 * remembered for tfx_unlink_all. */
void tfx_shm_name(char *buf, size_t size, const char *topic);
/* Unlinks every name tfx_shm_name gave out so far in this process
 * (ignoring those already gone): a teardown that also cleans up after a
 * test that failed half-way. */
void tfx_unlink_all(void);

/* Creates a fresh ODB (fails the test on error). size 0 / max_keys 0 take
 * the defaults; the watch tables are small (TFX_MAX_WATCHES watches,
 * TFX_MAX_SUBSCRIBERS subscribers) so that small segments fit. The shm
 * name is written into name (>= 128 bytes). */
#define TFX_MAX_WATCHES     256
#define TFX_MAX_SUBSCRIBERS 16
struct odb *tfx_odb_create(const char *topic, size_t size, uint32_t max_keys, char *name,
                           size_t name_size);
/* The same with every parameter given (NULL: all defaults). */
struct odb *tfx_odb_create_params(const char *topic, const struct odb_params *params, char *name,
                                  size_t name_size);
/* Closes and unlinks (accepts NULL odb). A transaction the test left open
 * (it failed inside one) is aborted first. */
void tfx_odb_destroy(struct odb *odb, const char *name);

/* Fails the test with the report when odb_check finds a problem. */
#define tfx_assert_odb_ok(odb) tfx_assert_odb_ok_at((odb), __FILE__, __LINE__)
void tfx_assert_odb_ok_at(struct odb *odb, const char *file, int line);

/* Waits up to timeout_ms for child pid. Returns its wait status, or -1
 * after killing (SIGKILL) and reaping a child that did not finish. */
int tfx_wait_child(pid_t pid, int timeout_ms);

/* Waits up to timeout_ms until some thread sleeps in the kernel on the
 * lock. Returns false on timeout. */
bool tfx_wait_lock_sleeper(struct ut_shlock *sh, int timeout_ms);

/* Reads exactly n bytes from fd, waiting at most timeout_ms in total.
 * Returns n, or the number read before EOF / error / timeout. */
ssize_t tfx_read_full(int fd, void *buf, size_t n, int timeout_ms);
/* Reads everything until EOF (or timeout) into buf (NUL-terminated). */
size_t tfx_read_all(int fd, char *buf, size_t size, int timeout_ms);
/* Writes one byte; reads one byte (bounded). Return true on success. */
bool tfx_signal_fd(int fd);
bool tfx_wait_fd(int fd, int timeout_ms);

#endif
