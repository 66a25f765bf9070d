/*
 * bench/submitters: several outside threads submitting into one pool.
 *
 *   build/release/bench/submitters [--workers LIST] [--submitters LIST]
 *                                  [--tasks N] [--reps N] [--json-out FILE]
 *
 * For each worker count and each number of submitting threads, the
 * submitters start together and each submits its share of --tasks empty
 * tasks (plain als_submit, BLOCK pool of the default capacity), then the
 * main thread drains; the time per task is from the start to the end of
 * the drain. bench/pool's spawn_many is the one-submitter case; this is
 * what a server whose I/O threads all hand work to one pool does. The
 * mutex+condvar pool of bench/pool is measured side by side in the same
 * run (GThreadPool, OpenMP and oneTBB are left out: OpenMP and oneTBB
 * tasks cannot be created from threads outside their team, and bench/pool
 * already shows GThreadPool an order of magnitude behind).
 *
 * Prints one row per (workers, submitters): the median ns per task of
 * --reps runs per backend, libals's min..max, and mutex/libals (above 1
 * libals leads). --json-out writes the same figures.
 */
#include "als.h"
#include "baseline_mutex_pool.h"
#include "bench_util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LIST 16
#define MAX_REPS 31
#define MAX_SUBMITTERS 64

static int task_empty(void *arg)
{
    (void)arg;
    return 0;
}

/* One run: `s` threads each submit n / s tasks (the first n % s one more). */
struct run {
    als_pool_t *als;
    mutex_pool_t *mutex;
    uint64_t share;
    pthread_barrier_t start;
    _Atomic uint64_t t0; /* the first submitter's start */
};

static void *submitter_main(void *arg)
{
    struct run *r = arg;
    pthread_barrier_wait(&r->start);
    /* The clock starts when the first submitter does: the main thread may
     * be descheduled right after the barrier (a start taken there measured
     * 0 ns per task once). */
    uint64_t now = bench_now_ns(), first = atomic_load(&r->t0);
    while (now < first && !atomic_compare_exchange_weak(&r->t0, &first, now))
        ;
    for (uint64_t i = 0; i < r->share; i++) {
        int rc = r->als ? als_submit(r->als, task_empty, NULL)
                        : mutex_pool_submit(r->mutex, task_empty, NULL);
        if (rc != 0) {
            fprintf(stderr, "submitters: submit failed (%d)\n", rc);
            exit(1);
        }
    }
    return NULL;
}

/* ns per task of one run. */
static double run_once(als_pool_t *als, mutex_pool_t *mutex, unsigned s, uint64_t n)
{
    struct run r = {.als = als, .mutex = mutex, .share = n / s, .t0 = UINT64_MAX};
    pthread_t t[MAX_SUBMITTERS];
    pthread_barrier_init(&r.start, NULL, s + 1);
    for (unsigned i = 0; i < s; i++)
        if (pthread_create(&t[i], NULL, submitter_main, &r) != 0) {
            fprintf(stderr, "submitters: pthread_create failed\n");
            exit(1);
        }
    pthread_barrier_wait(&r.start);
    for (unsigned i = 0; i < s; i++)
        pthread_join(t[i], NULL);
    if (als)
        als_pool_drain(als);
    else
        mutex_pool_wait(mutex);
    uint64_t t1 = bench_now_ns();
    pthread_barrier_destroy(&r.start);
    return (double)(t1 - atomic_load(&r.t0)) / (double)(r.share * s);
}

static unsigned parse_list(const char *opt, const char *s, unsigned *out, unsigned max_value)
{
    unsigned n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        uint64_t v = bench_parse_u64(opt, tok, 1);
        if (n == MAX_LIST || v > max_value) {
            fprintf(stderr, "%s: at most %d values, each at most %u\n", opt, MAX_LIST, max_value);
            exit(2);
        }
        out[n++] = (unsigned)v;
    }
    free(copy);
    return n;
}

int main(int argc, char **argv)
{
    unsigned workers[MAX_LIST] = {2, 16}, submitters[MAX_LIST] = {1, 2, 4};
    unsigned nw = 2, ns = 3;
    uint64_t tasks = 200000, reps = 7;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--workers") == 0 && v)
            nw = parse_list(a, v, workers, 1024), i++;
        else if (strcmp(a, "--submitters") == 0 && v)
            ns = parse_list(a, v, submitters, MAX_SUBMITTERS), i++;
        else if (strcmp(a, "--tasks") == 0 && v)
            tasks = bench_parse_u64(a, v, 1000), i++;
        else if (strcmp(a, "--reps") == 0 && v)
            reps = bench_parse_u64(a, v, 1), i++;
        else if (strcmp(a, "--json-out") == 0 && v)
            json = v, i++;
        else {
            fprintf(stderr, "usage: %s [--workers LIST] [--submitters LIST] [--tasks N] "
                            "[--reps N] [--json-out FILE]\n", argv[0]);
            return 2;
        }
    }
    if (reps > MAX_REPS)
        reps = MAX_REPS;

    FILE *jf = json ? fopen(json, "w") : NULL;
    if (json && !jf) {
        perror(json);
        return 1;
    }
    if (jf)
        fprintf(jf, "{\n  \"benchmark\": \"submitters\", \"tasks\": %llu, \"reps\": %llu,\n"
                    "  \"cpus\": %u,\n  \"results\": [",
                (unsigned long long)tasks, (unsigned long long)reps, bench_cpu_count());
    printf("submitters: outside threads submitting %llu empty tasks in all into one pool,\n"
           "then a drain; ns per task, median of %llu runs (%u CPUs)\n\n",
           (unsigned long long)tasks, (unsigned long long)reps, bench_cpu_count());
    printf("%-8s %-11s %10s %19s %10s %13s\n", "workers", "submitters", "libals",
           "libals min..max", "mutex", "mutex/libals");
    bool first = true;
    for (unsigned w = 0; w < nw; w++) {
        als_pool_options o = {.threads = workers[w]};
        als_pool_t *als = als_pool_new(&o);
        mutex_pool_t *mutex = mutex_pool_new(workers[w]);
        if (!als || !mutex) {
            fprintf(stderr, "submitters: pool creation failed\n");
            return 1;
        }
        for (unsigned s = 0; s < ns; s++) {
            double a[MAX_REPS], m[MAX_REPS];
            als_pool_stats before, after;
            als_pool_stats_get(als, &before);
            run_once(als, NULL, submitters[s], tasks / 10); /* warm-up */
            run_once(NULL, mutex, submitters[s], tasks / 10);
            for (uint64_t r = 0; r < reps; r++) { /* interleaved */
                a[r] = run_once(als, NULL, submitters[s], tasks);
                m[r] = run_once(NULL, mutex, submitters[s], tasks);
            }
            als_pool_stats_get(als, &after);
            uint64_t want = (tasks / 10 / submitters[s] + (uint64_t)reps * (tasks / submitters[s])) *
                            submitters[s];
            if (after.completed - before.completed != want) {
                fprintf(stderr, "submitters: libals ran %llu tasks, expected %llu\n",
                        (unsigned long long)(after.completed - before.completed),
                        (unsigned long long)want);
                return 1;
            }
            double lo = bench_min(a, reps), hi = bench_max(a, reps);
            double am = bench_median(a, reps), mm = bench_median(m, reps);
            printf("%-8u %-11u %10.1f %9.1f..%-9.1f %10.1f %12.2fx\n", workers[w], submitters[s],
                   am, lo, hi, mm, mm / am);
            if (jf)
                fprintf(jf, "%s\n    {\"workers\": %u, \"submitters\": %u, \"libals_ns\": %.1f, "
                            "\"libals_min_ns\": %.1f, \"libals_max_ns\": %.1f, \"mutex_ns\": %.1f}",
                        first ? "" : ",", workers[w], submitters[s], am, lo, hi, mm);
            first = false;
        }
        als_pool_free(als);
        mutex_pool_free(mutex);
    }
    if (jf) {
        fprintf(jf, "\n  ]\n}\n");
        if (!bench_json_close(jf, json))
            return 1;
    }
    return 0;
}
