/*
 * bench/bench_common.h - helpers shared by the benchmark programs.
 *
 * Every benchmark prints our figure, the limit it is compared with (measured
 * in the same run, on the same machine) and the ratio between them. This
 * header holds the parts every such program needs: a monotonic clock, a
 * fatal-error exit (a benchmark that silently measures failing calls is
 * worse than none, so any unexpected return code ends the run), a timed
 * measurement loop with warm-up, and the formatting of one table row.
 *
 * Only static inline functions live here, so that each benchmark stays a
 * single translation unit with no shared state.
 *
 * Measurement: bench_measure() calls `fn(arg, n)`, which must perform n
 * operations. During the warm-up it doubles n until one batch takes about
 * 1/100 of the run time, so the clock is read rarely compared with the
 * operations; it then repeats batches until the run time has passed and
 * reports the operations done and the nanoseconds they took.
 */
#ifndef AURUM_BENCH_BENCH_COMMON_H
#define AURUM_BENCH_BENCH_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Run lengths of one measurement, in seconds. */
struct bench_opts {
    double warm_s; /* warm-up, not counted */
    double run_s;  /* measured part */
};

/* What one measurement did. */
struct bench_result {
    uint64_t ops;   /* operations counted */
    int64_t ns;     /* wall time they took, CLOCK_MONOTONIC ns */
    double rate;    /* ops per second (for aggregates: the sum of rates) */
    double ns_each; /* ns per op (for aggregates: 1e9 / rate) */
};

/* Performs n operations; aborts the program (bench_die) on any error. */
typedef void (*bench_fn)(void *arg, uint64_t n);

/* CLOCK_MONOTONIC in nanoseconds. */
static inline int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Prints "bench: <message>" to stderr and exits with status 1. Exit
 * handlers run, so a benchmark can remove its shared-memory segments. */
static inline void bench_die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static inline void bench_die(const char *fmt, ...)
{
    /* One write, so that messages of forked workers do not interleave. */
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    (void)fflush(stdout); /* exiting anyway */
    fprintf(stderr, "bench: FATAL: %s\n", msg);
    exit(1);
}

/* Keeps the compiler from deleting stores to, or loads from, *p. */
static inline void bench_clobber(const void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

/* Parses the common command line: `--quick` selects short runs for smoke
 * tests. Unknown arguments end the program with a usage message. */
static inline struct bench_opts bench_parse_args(int argc, char **argv, bool *quick_out)
{
    struct bench_opts o = {0.10, 0.35};
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
            o.warm_s = 0.01;
            o.run_s = 0.04;
        } else {
            fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
            exit(2);
        }
    }
    if (quick_out)
        *quick_out = quick;
    return o;
}

static inline struct bench_result bench_result_of(uint64_t ops, int64_t ns)
{
    struct bench_result r = {ops, ns, 0.0, 0.0};
    if (ns > 0 && ops > 0) {
        r.rate = (double)ops * 1e9 / (double)ns;
        r.ns_each = (double)ns / (double)ops;
    }
    return r;
}

/* Runs fn for o->warm_s (uncounted), then for o->run_s, and returns what
 * the measured part did. */
static inline struct bench_result bench_measure(bench_fn fn, void *arg, const struct bench_opts *o)
{
    const int64_t warm_ns = (int64_t)(o->warm_s * 1e9);
    const int64_t run_ns = (int64_t)(o->run_s * 1e9);
    const int64_t batch_target_ns = run_ns / 100 > 0 ? run_ns / 100 : 1;
    uint64_t batch = 1;
    int64_t t0 = bench_now_ns();
    for (;;) {
        int64_t a = bench_now_ns();
        fn(arg, batch);
        int64_t b = bench_now_ns();
        if (b - a < batch_target_ns && batch < (1ull << 40))
            batch *= 2;
        else if (b - t0 >= warm_ns)
            break;
        if (b - t0 >= 4 * warm_ns + run_ns) /* a slow op: stop growing */
            break;
    }
    uint64_t ops = 0;
    int64_t start = bench_now_ns(), end;
    do {
        fn(arg, batch);
        ops += batch;
        end = bench_now_ns();
    } while (end - start < run_ns);
    return bench_result_of(ops, end - start);
}

/* "12.3 M" style: value scaled to k, M or G with 3 significant digits. */
static inline const char *bench_si(double v, char *buf, size_t size)
{
    const char *unit = "";
    if (v >= 1e9) {
        v /= 1e9;
        unit = " G";
    } else if (v >= 1e6) {
        v /= 1e6;
        unit = " M";
    } else if (v >= 1e3) {
        v /= 1e3;
        unit = " k";
    }
    snprintf(buf, size, "%.*f%s", v >= 100 ? 1 : 2, v, unit);
    return buf;
}

/* Column headings matching bench_row. */
static inline void bench_header(void)
{
    printf("%-46s %10s %10s  %-20s %s\n", "name", "ops/s", "ns/op", "ratio", "target");
    printf("%-46s %10s %10s  %-20s %s\n", "----", "-----", "-----", "-----", "------");
}

/* One table row: name, ops/s, ns/op, a ratio text and an optional target
 * text (NULL for none). */
static inline void bench_row(const char *name, const struct bench_result *r, const char *ratio,
                             const char *target)
{
    char ops[32];
    printf("%-46s %10s %10.1f  %-20s %s\n", name, bench_si(r->rate, ops, sizeof ops), r->ns_each,
           ratio ? ratio : "", target ? target : "");
    (void)fflush(stdout); /* progress output only */
}

#endif
