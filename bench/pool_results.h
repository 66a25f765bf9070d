/*
 * bench/pool's results at one worker count, shared by pool.c, which
 * measures them, and pool_scaling.c, which runs each count of --workers in
 * a child process of its own and prints the scaling tables from them.
 */
#ifndef ALS_BENCH_POOL_RESULTS_H
#define ALS_BENCH_POOL_RESULTS_H

#include "pool_backend.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MAX_REPS 64
#define RESULTS_MAX_BACKENDS 8
#define RESULTS_MAX_SCENARIOS 8 /* throughput scenarios */

/* What runs cost libals in system calls and steals (als_pool_stats,
 * ALS_POOL_STATS_VERSION 2), summed over the timed runs: divided by the
 * tasks, a figure that does not depend on the machine's noise. A run's
 * window also holds the parks of the idle time before it. Against an older
 * library (scripts/bench-compare's base) the counts stay 0. */
struct sched {
    uint64_t tasks, parks, wakeups, submitter_wakeups, steals;
};

struct tp_result {
    double runs[MAX_REPS]; /* ns per run */
    double median_ns;
    bool done;
    struct sched sched;
};

struct req_result {
    double runs[MAX_REPS]; /* ns per run */
    double median_ns;
    uint64_t p50, p99, max;
    struct sched sched;
};

struct lat_result {
    uint64_t p50, p90, p99, max;
    double mean;
    bool done;
    struct sched sched;
};

struct results {
    unsigned threads;
    uint64_t reps, nreq;
    size_t nb, ials; /* ials >= nb: libals not selected */
    size_t ihelp;    /* als_help, libals waiting with help (--drain both); >= nb: none */
    const bench_backend *bk[RESULTS_MAX_BACKENDS];
    size_t nscen;
    struct {
        const char *name, *label;
        uint64_t size; /* tasks per run */
    } scen[RESULTS_MAX_SCENARIOS];
    struct tp_result tp[RESULTS_MAX_SCENARIOS][RESULTS_MAX_BACKENDS];
    struct lat_result lat[RESULTS_MAX_BACKENDS];
    struct req_result rq[RESULTS_MAX_BACKENDS];
    bool do_lat, do_req;
    /* The machine's mode while each scenario ran: the median over its
     * repetitions of bench_cross_cpu_rt_ns() taken before each (-1: not
     * measured). */
    double rt_ns[RESULTS_MAX_SCENARIOS], rq_rt_ns;
};

/* x per 1000 of c's tasks (0 without tasks). */
double per_1000(uint64_t x, const struct sched *c);
/* Writes `, "per_1000_tasks": {...}` for libals's entry of a JSON result. */
void sched_json(FILE *f, const struct sched *c);

/* --workers LIST: forks one child per worker count, in turn, each with a
 * results slot in memory shared with this process. In a child it returns
 * 1 with *mine its slot (threads set; stdout silenced): the child measures
 * into it and exits. In the parent it returns 0 once every child succeeded,
 * with *res and *nw the slots, or minus an exit status (a message printed)
 * on a bad list or a failed child. Call it before starting any thread. */
int pool_scaling_fork(const char *list, struct results **res, size_t *nw, struct results **mine);

/* Prints a scaling table per scenario (a row per worker count, a column
 * per backend, libals/best, libals's counts per 1000 tasks) unless json,
 * and the JSON (to json_out, or with json to stdout). An exit status. */
int pool_scaling_report(const struct results *res, size_t nw, bool json, const char *json_out);

#endif
