/*
 * base/alloc.c - heap wrappers, fault injection and crash points.
 *
 * All heap memory of the project goes through ut_malloc and friends so that
 * tests can make the n-th allocation fail (ut_alloc_fail_after) and check
 * that every error path leaves no leak and no half-done change.
 *
 * Crash points let a test kill a process at a chosen step of a mutating
 * operation: the k-th ut_crash_point() call raises SIGKILL on the process.
 * The counter is process-wide and atomic, so it is safe with threads.
 */
#include "base/ut_int.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_long alloc_countdown; /* 0: off; n: n-th allocation from now fails */

void ut_alloc_fail_after(long n)
{
    atomic_store(&alloc_countdown, n);
}

static bool alloc_should_fail(void)
{
    long c = atomic_load_explicit(&alloc_countdown, memory_order_relaxed);
    if (c == 0)
        return false;
    if (c == 1)
        return true; /* stays at 1: every later allocation fails too */
    atomic_fetch_sub(&alloc_countdown, 1);
    return false;
}

void *ut_malloc(size_t size)
{
    if (alloc_should_fail())
        return NULL;
    return malloc(size ? size : 1);
}

void *ut_calloc(size_t n, size_t size)
{
    if (alloc_should_fail())
        return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}

void *ut_realloc(void *p, size_t size)
{
    if (alloc_should_fail())
        return NULL;
    return realloc(p, size ? size : 1);
}

char *ut_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = ut_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void ut_free(void *p)
{
    free(p);
}

/* Named fault points: a tiny fixed table is enough for tests. */
#define FAULT_SLOTS 16
static pthread_mutex_t fault_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char name[48];
    long countdown;
} faults[FAULT_SLOTS];
static atomic_int faults_armed;

void ut_fault_set(const char *name, long nth)
{
    pthread_mutex_lock(&fault_mutex);
    int free_slot = -1;
    for (int i = 0; i < FAULT_SLOTS; i++) {
        if (faults[i].countdown && strcmp(faults[i].name, name) == 0) {
            free_slot = i;
            break;
        }
        if (!faults[i].countdown && free_slot < 0)
            free_slot = i;
    }
    if (free_slot >= 0) {
        ut_strlcpy(faults[free_slot].name, name, sizeof faults[free_slot].name);
        faults[free_slot].countdown = nth;
    }
    int armed = 0;
    for (int i = 0; i < FAULT_SLOTS; i++)
        armed += faults[i].countdown != 0;
    atomic_store(&faults_armed, armed);
    pthread_mutex_unlock(&fault_mutex);
}

bool ut_fault_hit(const char *name)
{
    if (!atomic_load_explicit(&faults_armed, memory_order_relaxed))
        return false;
    bool hit = false;
    pthread_mutex_lock(&fault_mutex);
    for (int i = 0; i < FAULT_SLOTS; i++) {
        if (faults[i].countdown && strcmp(faults[i].name, name) == 0) {
            if (--faults[i].countdown == 0) {
                hit = true;
                faults[i].name[0] = '\0';
                atomic_fetch_sub(&faults_armed, 1);
            }
            break;
        }
    }
    pthread_mutex_unlock(&fault_mutex);
    return hit;
}

static atomic_long crash_target = -1; /* -1: not yet read from the environment */
static atomic_long crash_count;

void ut_crash_point_arm(long k)
{
    atomic_store(&crash_count, 0);
    atomic_store(&crash_target, k);
}

long ut_crash_point(void)
{
    long target = atomic_load_explicit(&crash_target, memory_order_relaxed);
    if (target < 0) {
        const char *env = getenv("AURUM_CRASH_POINT");
        target = env ? atol(env) : 0;
        atomic_store(&crash_target, target);
    }
    long n = atomic_fetch_add(&crash_count, 1) + 1;
    if (target > 0 && n == target)
        (void)raise(SIGKILL); /* cannot fail for SIGKILL */
    return n;
}
