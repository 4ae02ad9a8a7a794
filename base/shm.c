/*
 * base/shm.c - POSIX shared-memory segments with a verified header.
 *
 * Creation uses O_CREAT|O_EXCL and mode 0600, so exactly one process
 * creates a segment and initialises it; the others attach, wait until the
 * creator sets `ready`, and verify magic, layout version, kind and the
 * struct-size fingerprint. A creator that died before setting `ready`
 * leaves a segment nobody could use: an attacher that times out on it and
 * finds the creator gone removes the name and creates it afresh.
 *
 * shm_open on glibc opens under /dev/shm with O_NOFOLLOW, so a planted
 * symlink is never followed.
 */
#include "base/ut_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char shm_magic[8] = {'A', 'U', 'R', 'U', 'M', 'S', 'H', 'M'};

int ut_shm_name(const char *expdir, const char *what, char *out, size_t out_size)
{
    char real[PATH_MAX];
    if (!realpath(expdir, real))
        return -errno;
    uint64_t h = 1469598103934665603ull; /* FNV-1a: stable across builds and hosts */
    for (const unsigned char *p = (const unsigned char *)real; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    int n = snprintf(out, out_size, "/aurum.%016llx.%s", (unsigned long long)h, what);
    if (n < 0 || (size_t)n >= out_size)
        return UT_ENAMETOOLONG;
    return 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int verify_header(const struct ut_shm_header *h, size_t map_size, uint32_t kind,
                         uint64_t fingerprint)
{
    if (memcmp(h->magic, shm_magic, sizeof shm_magic) != 0)
        return UT_ECORRUPT;
    if (h->version != UT_SHM_VERSION || h->kind != kind || h->fingerprint != fingerprint)
        return UT_EVERSION;
    if (h->size != map_size)
        return UT_ECORRUPT;
    return 0;
}

static bool pid_gone(uint32_t pid)
{
    return pid != 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

static int create_segment(struct ut_shm *shm, const char *name, size_t size, uint32_t kind,
                          uint64_t fingerprint)
{
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int err = 0;
    if (ftruncate(fd, (off_t)size) < 0) {
        err = -errno;
        goto fail_unlink;
    }
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        err = -errno;
        goto fail_unlink;
    }
    close(fd);
    struct ut_shm_header *h = base;
    memcpy(h->magic, shm_magic, sizeof shm_magic);
    h->version = UT_SHM_VERSION;
    h->kind = kind;
    h->fingerprint = fingerprint;
    h->size = size;
    h->creator_pid = (uint32_t)getpid();
    h->created_ns = ut_wall_ns();
    shm->base = base;
    shm->size = size;
    shm->created = true;
    return 0;

fail_unlink:
    shm_unlink(name);
    close(fd);
    return err;
}

/* Attaches to an existing segment. Returns 0, -ENOENT (gone: retry
 * creation), UT_ETIMEOUT, UT_EVERSION, UT_ECORRUPT or -errno. */
static int attach_segment(struct ut_shm *shm, const char *name, uint32_t kind, uint64_t fingerprint,
                          int timeout_ms)
{
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int64_t deadline = ut_now_ns() + (int64_t)timeout_ms * 1000000;
    struct stat st;
    int err;
    /* The creator truncates right after creating; wait for that. */
    for (;;) {
        if (fstat(fd, &st) < 0) {
            err = -errno;
            close(fd);
            return err;
        }
        if ((size_t)st.st_size >= sizeof(struct ut_shm_header))
            break;
        if (ut_now_ns() > deadline) {
            close(fd);
            return UT_ETIMEOUT;
        }
        sleep_ms(1);
    }
    if (st.st_uid != geteuid()) {
        /* Someone else's segment under our name: refuse rather than trust it. */
        close(fd);
        return -EACCES;
    }
    size_t size = (size_t)st.st_size;
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    err = base == MAP_FAILED ? -errno : 0;
    close(fd);
    if (err)
        return err;
    struct ut_shm_header *h = base;
    while (!__atomic_load_n(&h->ready, __ATOMIC_ACQUIRE)) {
        if (ut_now_ns() > deadline) {
            uint32_t creator = h->creator_pid;
            munmap(base, size);
            if (pid_gone(creator)) {
                ut_log(UT_LOG_WARN,
                       "segment %s: creator pid %u died before initialising it; "
                       "recreating",
                       name, creator);
                shm_unlink(name);
                return -ENOENT;
            }
            return UT_ETIMEOUT;
        }
        sleep_ms(1);
    }
    err = verify_header(h, size, kind, fingerprint);
    if (err) {
        munmap(base, size);
        return err;
    }
    shm->base = base;
    shm->size = size;
    shm->created = false;
    return 0;
}

int ut_shm_open(struct ut_shm *shm, const char *name, size_t size, uint32_t kind,
                uint64_t fingerprint, bool may_create, int timeout_ms)
{
    struct ut_shm s = {0};
    if (!name || name[0] != '/' || strchr(name + 1, '/'))
        return UT_EINVAL;
    if (ut_strlcpy(s.name, name, sizeof s.name) >= sizeof s.name)
        return UT_ENAMETOOLONG;
    if (may_create && size < sizeof(struct ut_shm_header))
        return UT_EINVAL;
    for (int attempt = 0; attempt < 100; attempt++) {
        int err = attach_segment(&s, name, kind, fingerprint, timeout_ms);
        if (err == 0) {
            *shm = s;
            return 0;
        }
        if (err == -ENOENT && !may_create)
            return UT_ENOENT;
        if (err != -ENOENT)
            return err;
        err = create_segment(&s, name, size, kind, fingerprint);
        if (err == 0) {
            *shm = s;
            return 0;
        }
        if (err != -EEXIST)
            return err;
        /* Lost the creation race: attach to the winner's segment. */
    }
    return UT_ETIMEOUT;
}

void ut_shm_ready(struct ut_shm *shm)
{
    struct ut_shm_header *h = shm->base;
    __atomic_store_n(&h->ready, 1, __ATOMIC_RELEASE);
}

void ut_shm_close(struct ut_shm *shm)
{
    if (!shm || !shm->base)
        return;
    munmap(shm->base, shm->size);
    shm->base = NULL;
}

int ut_shm_unlink(const char *name)
{
    return shm_unlink(name) < 0 ? -errno : 0;
}
