/* bench/cancel: what cancelling a scope costs when much of its work is
 * still queued (issue 15, semantics 8): als_cancel itself (it walks the
 * scope's descendants and callbacks, never a queue), then what each queued
 * task costs when a worker reaches it and cancels it instead of running it.
 *
 *   cancel [--tasks N] [--reps N] [--json]
 *
 * One worker, held busy while N tasks are submitted inside a scope (the
 * pool's capacity is raised to hold them all), so every task is still
 * queued when the scope is cancelled. Median of --reps runs. */
#include "als.h"
#include "bench_util.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_int hold, held, ran;

static int holder(void *arg)
{
    (void)arg;
    atomic_store(&held, 1);
    while (atomic_load(&hold))
        ;
    return 0;
}

static int never(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ran, 1);
    return 0;
}

struct batch {
    als_pool_t *pool;
    uint64_t n;
};

static void *submit_all(void *arg)
{
    struct batch *b = arg;
    for (uint64_t i = 0; i < b->n; i++)
        if (als_submit(b->pool, never, NULL) != 0) {
            fprintf(stderr, "cancel: submit failed\n");
            exit(1);
        }
    return NULL;
}

int main(int argc, char **argv)
{
    uint64_t n = 1000000, reps = 5;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--tasks") == 0 && i + 1 < argc)
            n = bench_parse_count(argv[i], argv[i + 1]), i++;
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = bench_parse_count(argv[i], argv[i + 1]), i++;
        else {
            fputs("usage: cancel [--tasks N] [--reps N] [--json]\n", stderr);
            return 2;
        }
    }
    double *cancel_ns = calloc(reps, sizeof *cancel_ns), *drop_ns = calloc(reps, sizeof *drop_ns);
    unsigned cap = 1;
    while (cap < n + 16)
        cap <<= 1;
    for (uint64_t r = 0; r < reps; r++) {
        als_pool_t *pool = als_pool_new(&(als_pool_options){ .threads = 1, .queue_capacity = cap });
        if (!pool || !cancel_ns || !drop_ns)
            return 1;
        atomic_store(&hold, 1);
        atomic_store(&held, 0);
        als_submit(pool, holder, NULL);
        while (!atomic_load(&held))
            ;
        als_cancel_t *c = als_cancel_new(-1);
        struct batch b = { pool, n };
        als_cancel_run(c, submit_all, &b);
        uint64_t t0 = bench_now_ns();
        als_cancel(c);
        uint64_t t1 = bench_now_ns();
        atomic_store(&hold, 0);
        als_pool_drain(pool);
        uint64_t t2 = bench_now_ns();
        als_pool_stats s;
        als_pool_stats_get(pool, &s);
        if (atomic_load(&ran) != 0 || s.cancelled != n) {
            fprintf(stderr, "cancel: %d ran, %llu cancelled\n", atomic_load(&ran),
                    (unsigned long long)s.cancelled);
            return 1;
        }
        cancel_ns[r] = (double)(t1 - t0);
        drop_ns[r] = (double)(t2 - t1) / (double)n;
        als_cancel_release(c);
        als_pool_free(pool);
    }
    double cmed = bench_median(cancel_ns, reps), dmed = bench_median(drop_ns, reps);
    if (json)
        printf("{\"benchmark\": \"cancel\", \"queued\": %llu, \"als_cancel_us\": %.2f, "
               "\"cancelled_at_dequeue_ns_per_task\": %.1f}\n",
               (unsigned long long)n, cmed / 1e3, dmed);
    else
        printf("bench/cancel: one worker held, %llu tasks queued in one scope, median of %llu\n"
               "  als_cancel                      %10.2f us\n"
               "  cancelled at dequeue, per task  %10.1f ns\n",
               (unsigned long long)n, (unsigned long long)reps, cmed / 1e3, dmed);
    free(cancel_ns);
    free(drop_ns);
    return 0;
}
