/*
 * torture/clients_idle.c - a quiet, long-lived client for the client
 * torture scripts (torture/seed.sh): the "watchdog clients" that run while
 * the MIDAS seed test starts and stops odbedits around them.
 *
 *   clients_idle EXPDIR [NAME] [WATCHDOG_MS] [MSG_EVERY_MS]
 *   clients_idle --remove-segments EXPDIR
 *
 * Connects to the experiment EXPDIR as NAME (default "idle") with a short
 * watchdog period (default 200 ms), so that its watchdog scans
 * /System/Clients many times while other clients come and go. It then
 * follows the system-message ring, blocked in mb_msg_wait (the kind of
 * long wait MIDAS failure mode 9 is about), and posts an INFO message every
 * MSG_EVERY_MS milliseconds (default 0: never). SIGTERM or SIGINT makes it
 * disconnect cleanly and exit.
 *
 * Output: "ready slot=<n> pid=<p>" on stdout once connected (scripts wait
 * for it), then on exit "idle <name>: posted=<n> seen=<n> removed=<0|1>".
 * Exit status 0 only when every call succeeded and no other client's
 * watchdog removed this one. Anything at log level WARN or above goes to
 * stderr (the default sink), and the scripts require stderr to be empty.
 *
 * --remove-segments removes the experiment's shared-memory segments
 * (au_experiment_remove_segments), for the scripts' cleanup.
 */
#include "client/aurum.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int usage(void)
{
    fprintf(stderr, "usage: clients_idle EXPDIR [NAME] [WATCHDOG_MS] [MSG_EVERY_MS]\n"
                    "       clients_idle --remove-segments EXPDIR\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--remove-segments") == 0) {
        int err = au_experiment_remove_segments(argv[2]);
        if (err) {
            fprintf(stderr, "clients_idle: removing the segments of %s: %s\n", argv[2],
                    ut_strerror(err));
            return 1;
        }
        return 0;
    }
    if (argc < 2 || argc > 5 || argv[1][0] == '-')
        return usage();
    const char *name = argc > 2 ? argv[2] : "idle";
    int period_ms = argc > 3 ? atoi(argv[3]) : 200;
    int every_ms = argc > 4 ? atoi(argv[4]) : 0;
    if (period_ms <= 0 || every_ms < 0)
        return usage();

    au_install_signal_handlers();
    struct au_connect_opts o = {0};
    o.name = name;
    o.experiment = argv[1];
    o.watchdog_period_ms = period_ms;
    struct au_client *c = NULL;
    int err = au_connect(&o, &c);
    if (err) {
        fprintf(stderr, "clients_idle: cannot connect to %s: %s (%s)\n", argv[1], ut_strerror(err),
                odb_errmsg());
        return 1;
    }
    printf("ready slot=%u pid=%d\n", au_client_slot(c), (int)getpid());
    (void)fflush(stdout); /* console output */

    struct mb_msgring *ring = au_msgring(c);
    uint64_t after = mb_msg_last_seq(ring);
    unsigned long posted = 0, seen = 0;
    int64_t next_post = ut_now_ns() + (int64_t)every_ms * 1000000;
    int rc = 0;
    while (!au_should_stop()) {
        int wait_ms = 500;
        if (every_ms > 0) {
            int64_t left = (next_post - ut_now_ns()) / 1000000;
            wait_ms = left < 0 ? 0 : left < 500 ? (int)left : 500;
        }
        err = mb_msg_wait(ring, after, wait_ms);
        if (err == UT_EINTR)
            break;
        if (err == 0) {
            struct mb_msg msgs[16];
            size_t n = 0;
            uint64_t missed = 0;
            err = mb_msg_read(ring, after, msgs, 16, &n, &missed);
            if (err) {
                fprintf(stderr, "clients_idle %s: mb_msg_read: %s\n", name, ut_strerror(err));
                rc = 1;
                break;
            }
            if (n > 0)
                after = msgs[n - 1].seq;
            seen += n + missed;
        } else if (err != UT_ETIMEOUT) {
            fprintf(stderr, "clients_idle %s: mb_msg_wait: %s\n", name, ut_strerror(err));
            rc = 1;
            break;
        }
        if (every_ms > 0 && ut_now_ns() >= next_post) {
            err = au_msg(c, MB_MSG_INFO, "idle client %s tick %lu", au_client_name(c), posted);
            if (err) {
                fprintf(stderr, "clients_idle %s: au_msg: %s\n", name, ut_strerror(err));
                rc = 1;
                break;
            }
            posted++;
            next_post += (int64_t)every_ms * 1000000;
        }
    }
    bool removed = au_client_removed(c);
    if (removed)
        rc = 1;
    au_disconnect(c);
    printf("idle %s: posted=%lu seen=%lu removed=%d\n", name, posted, seen, removed ? 1 : 0);
    return rc;
}
