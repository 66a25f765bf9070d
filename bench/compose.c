/*
 * bench/compose: the composition API (delayed tasks, future continuations,
 * groups) against the same work done with the mutex+condvar pool of
 * baseline_mutex_pool.c plus a hand-written mutex/condvar wait, measured
 * side by side in one run (issue 4).
 *
 *   compose [--json] [--quick] [--threads N] [--reps N] [--timers N]
 *           [--max-delay-ms N] [--probes N] [--chain N] [--group N]
 *           [--settle-ms N]
 *
 * Scenarios:
 *   timers  --timers (100k) delayed tasks with random delays in
 *           [0, --max-delay-ms] (100), all submitted from one thread; each
 *           task records its lateness = start - (submit time + delay) on
 *           CLOCK_MONOTONIC. libals: als_submit_after + als_pool_drain.
 *           Baseline: one timer thread holding a binary heap under a mutex,
 *           sleeping in pthread_cond_timedwait (CLOCK_MONOTONIC) until the
 *           earliest deadline and handing due tasks to the mutex pool.
 *           Reported: p50/p99/max lateness in us (median over the reps).
 *   pending the lateness als.h states: on an idle pool holding 1, 1k or
 *           100k pending timers (all but one due in an hour), --probes (200)
 *           probe timers, one at a time, each with a random delay of
 *           0.5-1.5 ms; the main thread waits for each before the next.
 *           p50/p99/max lateness in us over the probes (median over the
 *           reps). libals only: the baseline has no pending-timers case.
 *   chain   --chain (1M) steps, each adding 1 to its input; the result must
 *           equal the chain length. libals: a future of 0 (als_submit_future)
 *           and a chain of als_future_then continuations, built from the main
 *           thread while it runs, then als_future_wait on the last. Baseline:
 *           each mutex-pool task submits the next, the last signals a condvar.
 *   group   --group (1M) empty tasks. libals: als_group_submit of each, then
 *           als_group_wait. Baseline: mutex_pool_submit of each; each task
 *           increments a counter under a mutex and the last signals a condvar.
 *
 * Both pools have --threads workers (default: the CPUs this process may run
 * on) and live for the whole run. Each scenario gets one warm-up run per
 * backend; repetitions alternate backends with a --settle-ms pause between
 * runs. Ratios read "how many times better libals is": the baseline's
 * ns/op (or lateness) over libals's.
 */
#include "baseline_mutex_pool.h"
#include "bench_util.h"

#include <als.h>

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_REPS 64

static void die(const char *what)
{
    fprintf(stderr, "compose: %s\n", what);
    exit(1);
}

/* ---- timers ------------------------------------------------------------- */

typedef struct {
    uint64_t due;  /* CLOCK_MONOTONIC ns at which the task may start */
    uint64_t late; /* start - due, set by the task */
} timer_slot;

static int timer_task(void *arg)
{
    timer_slot *s = arg;
    uint64_t now = bench_now_ns();
    s->late = now > s->due ? now - s->due : 0;
    return 0;
}

/* The naive timer: one thread, a binary min-heap of slots by due time. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    timer_slot **heap;
    size_t n;
    int closing;
    mutex_pool_t *pool;
} naive_timer;

static void heap_push(naive_timer *t, timer_slot *s)
{
    size_t i = t->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (t->heap[p]->due <= s->due)
            break;
        t->heap[i] = t->heap[p];
        i = p;
    }
    t->heap[i] = s;
}

static timer_slot *heap_pop(naive_timer *t)
{
    timer_slot *top = t->heap[0], *last = t->heap[--t->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= t->n)
            break;
        if (c + 1 < t->n && t->heap[c + 1]->due < t->heap[c]->due)
            c++;
        if (last->due <= t->heap[c]->due)
            break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    if (t->n > 0)
        t->heap[i] = last;
    return top;
}

static void *naive_timer_thread(void *arg)
{
    naive_timer *t = arg;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        if (t->n == 0) {
            if (t->closing)
                break;
            pthread_cond_wait(&t->cv, &t->mu);
            continue;
        }
        uint64_t due = t->heap[0]->due;
        if (due <= bench_now_ns()) {
            timer_slot *s = heap_pop(t);
            pthread_mutex_unlock(&t->mu);
            if (mutex_pool_submit(t->pool, timer_task, s) != 0)
                die("mutex_pool_submit failed");
            pthread_mutex_lock(&t->mu);
            continue;
        }
        struct timespec ts = {.tv_sec = (time_t)(due / 1000000000u),
                              .tv_nsec = (long)(due % 1000000000u)};
        pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint64_t rng_next(void)
{
    /* xorshift64*: fixed seed, so every run draws the same delays. */
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Du;
}

typedef struct {
    uint64_t p50, p99, max;
} lateness;

static lateness summarize(timer_slot *slots, uint64_t *tmp, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tmp[i] = slots[i].late;
    bench_sort_u64(tmp, n);
    lateness l = {bench_percentile_sorted(tmp, n, 50), bench_percentile_sorted(tmp, n, 99),
                  tmp[n - 1]};
    return l;
}

static void timers_fill(timer_slot *slots, uint64_t *delays, size_t n, uint64_t max_delay_ns)
{
    for (size_t i = 0; i < n; i++) {
        delays[i] = rng_next() % (max_delay_ns + 1);
        slots[i].late = UINT64_MAX;
    }
}

static void timers_check(const timer_slot *slots, size_t n, const char *who)
{
    for (size_t i = 0; i < n; i++)
        if (slots[i].late == UINT64_MAX) {
            fprintf(stderr, "compose: %s/timers: task %zu did not run\n", who, i);
            exit(1);
        }
}

static void timers_libals(als_pool_t *pool, timer_slot *slots, const uint64_t *delays, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        slots[i].due = bench_now_ns() + delays[i];
        if (als_submit_after(pool, delays[i], timer_task, &slots[i]) != 0)
            die("als_submit_after failed");
    }
    if (als_pool_drain(pool) != 0)
        die("als_pool_drain failed");
    timers_check(slots, n, "libals");
}

static void timers_mutex(mutex_pool_t *pool, timer_slot *slots, const uint64_t *delays, size_t n)
{
    naive_timer t = {.pool = pool};
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t.cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&t.mu, NULL);
    t.heap = malloc(n * sizeof *t.heap);
    if (!t.heap)
        die("out of memory");
    pthread_t th;
    if (pthread_create(&th, NULL, naive_timer_thread, &t) != 0)
        die("pthread_create failed");
    for (size_t i = 0; i < n; i++) {
        slots[i].due = bench_now_ns() + delays[i];
        pthread_mutex_lock(&t.mu);
        heap_push(&t, &slots[i]);
        if (t.heap[0] == &slots[i])
            pthread_cond_signal(&t.cv); /* new earliest deadline */
        pthread_mutex_unlock(&t.mu);
    }
    pthread_mutex_lock(&t.mu);
    t.closing = 1;
    pthread_cond_signal(&t.cv);
    pthread_mutex_unlock(&t.mu);
    pthread_join(th, NULL);
    mutex_pool_wait(pool);
    timers_check(slots, n, "mutex");
    free(t.heap);
    pthread_cond_destroy(&t.cv);
    pthread_mutex_destroy(&t.mu);
}

/* ---- lateness with pending timers --------------------------------------- */

static const size_t pending_sizes[] = {1, 1000, 100000};
#define NPENDING (sizeof pending_sizes / sizeof pending_sizes[0])

typedef struct {
    timer_slot slot;
    sem_t done;
} probe;

static int probe_task(void *arg)
{
    probe *p = arg;
    timer_task(&p->slot);
    sem_post(&p->done);
    return 0;
}

static int idle_task(void *arg)
{
    (void)arg;
    return 0;
}

/* One probe at a time on an idle pool holding `pending` timers in all.
 * `tmp` has room for `probes` values. */
static lateness pending_run(unsigned threads, size_t pending, size_t probes, uint64_t *tmp)
{
    als_pool_options o = {.threads = threads, .name = "pending"};
    als_pool_t *pool = als_pool_new(&o);
    if (!pool)
        die("cannot create a pool");
    for (size_t i = 1; i < pending; i++)
        if (als_submit_after(pool, 3600 * 1000000000ull, idle_task, NULL) != 0)
            die("als_submit_after failed");
    probe p;
    if (sem_init(&p.done, 0, 0) != 0)
        die("sem_init failed");
    for (size_t i = 0; i < probes; i++) {
        uint64_t delay = 500000 + rng_next() % 1000001;
        p.slot.late = UINT64_MAX;
        p.slot.due = bench_now_ns() + delay;
        if (als_submit_after(pool, delay, probe_task, &p) != 0)
            die("als_submit_after failed");
        while (sem_wait(&p.done) != 0)
            if (errno != EINTR)
                die("sem_wait failed");
        tmp[i] = p.slot.late;
    }
    sem_destroy(&p.done);
    /* The pending ones never come due: cancel them. */
    als_pool_shutdown(pool, ALS_SHUTDOWN_CANCEL);
    als_pool_free(pool);
    bench_sort_u64(tmp, probes);
    lateness l = {bench_percentile_sorted(tmp, probes, 50),
                  bench_percentile_sorted(tmp, probes, 99), tmp[probes - 1]};
    return l;
}

/* ---- then-chain --------------------------------------------------------- */

static void *zero_fn(void *arg)
{
    (void)arg;
    return (void *)(uintptr_t)0;
}

static void *inc_fn(void *arg)
{
    return (void *)((uintptr_t)arg + 1);
}

static uint64_t chain_libals(als_pool_t *pool, size_t n)
{
    uint64_t t0 = bench_now_ns();
    als_future_t *f;
    if (als_submit_future(pool, zero_fn, NULL, &f) != 0)
        die("als_submit_future failed");
    for (size_t i = 0; i < n; i++) {
        als_future_t *g;
        if (als_future_then(f, pool, inc_fn, &g) != 0)
            die("als_future_then failed");
        als_future_release(f);
        f = g;
    }
    void *res = NULL;
    if (als_future_wait(f, -1, &res) != 0)
        die("als_future_wait failed");
    uint64_t t1 = bench_now_ns();
    als_future_release(f);
    if ((uintptr_t)res != n) {
        fprintf(stderr, "compose: libals/chain: result %zu, expected %zu\n", (size_t)(uintptr_t)res,
                n);
        exit(1);
    }
    return t1 - t0;
}

typedef struct {
    mutex_pool_t *pool;
    uintptr_t value;
    size_t left;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} mchain;

static int mchain_step(void *arg)
{
    mchain *c = arg;
    c->value = (uintptr_t)inc_fn((void *)c->value);
    if (--c->left > 0) {
        if (mutex_pool_submit(c->pool, mchain_step, c) != 0)
            die("mutex_pool_submit failed");
    } else {
        pthread_mutex_lock(&c->mu);
        c->done = 1;
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    return 0;
}

static uint64_t chain_mutex(mutex_pool_t *pool, size_t n)
{
    mchain c = {.pool = pool, .value = 0, .left = n};
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    uint64_t t0 = bench_now_ns();
    if (mutex_pool_submit(pool, mchain_step, &c) != 0)
        die("mutex_pool_submit failed");
    pthread_mutex_lock(&c.mu);
    while (!c.done)
        pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);
    uint64_t t1 = bench_now_ns();
    mutex_pool_wait(pool); /* the last task may still be returning */
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);
    if (c.value != n) {
        fprintf(stderr, "compose: mutex/chain: result %zu, expected %zu\n", (size_t)c.value, n);
        exit(1);
    }
    return t1 - t0;
}

/* ---- group -------------------------------------------------------------- */

static atomic_size_t group_ran;

static int group_task(void *arg)
{
    (void)arg;
    atomic_fetch_add_explicit(&group_ran, 1, memory_order_relaxed);
    return 0;
}

static uint64_t group_libals(als_pool_t *pool, size_t n)
{
    atomic_store(&group_ran, 0);
    uint64_t t0 = bench_now_ns();
    als_group_t *g = als_group_new();
    if (!g)
        die("als_group_new failed");
    for (size_t i = 0; i < n; i++)
        if (als_group_submit(g, pool, group_task, NULL) != 0)
            die("als_group_submit failed");
    if (als_group_wait(g, -1) != 0)
        die("als_group_wait failed");
    uint64_t t1 = bench_now_ns();
    als_group_free(g);
    if (atomic_load(&group_ran) != n) {
        fprintf(stderr, "compose: libals/group: %zu tasks ran, expected %zu\n",
                (size_t)atomic_load(&group_ran), n);
        exit(1);
    }
    return t1 - t0;
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t done, n;
} mgroup;

static int mgroup_task(void *arg)
{
    mgroup *g = arg;
    pthread_mutex_lock(&g->mu);
    if (++g->done == g->n)
        pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

static uint64_t group_mutex(mutex_pool_t *pool, size_t n)
{
    mgroup g = {.done = 0, .n = n};
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    uint64_t t0 = bench_now_ns();
    for (size_t i = 0; i < n; i++)
        if (mutex_pool_submit(pool, mgroup_task, &g) != 0)
            die("mutex_pool_submit failed");
    pthread_mutex_lock(&g.mu);
    while (g.done < g.n)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    uint64_t t1 = bench_now_ns();
    mutex_pool_wait(pool); /* the last task may still be unlocking */
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
    return t1 - t0;
}

/* ---- main --------------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("usage: compose [options]\n"
          "  --json              print JSON instead of a table\n"
          "  --quick             a short run (10k timers up to 10 ms, 30 probes,\n"
          "                      20k chain, 20k group, 3 reps)\n"
          "  --threads N         worker threads per pool (default: CPUs)\n"
          "  --reps N            repetitions, median reported (default 5)\n"
          "  --timers N          delayed tasks (default 100k)\n"
          "  --max-delay-ms N    largest random delay (default 100)\n"
          "  --probes N          probe timers per pending count (default 200)\n"
          "  --chain N           then-continuations in the chain (default 1M)\n"
          "  --group N           tasks in the group (default 1M)\n"
          "  --settle-ms N       pause between runs (default 20)\n",
          f);
}

static double ratio(double base, double als)
{
    return als > 0 ? base / als : 0;
}

int main(int argc, char **argv)
{
    bool json = false, quick = false;
    unsigned threads = 0;
    uint64_t reps = 5, ntimers = 100000, max_delay_ms = 100, nchain = 1000000, ngroup = 1000000,
             settle_ms = 20, nprobes = 200;
    bool set_reps = false, set_timers = false, set_delay = false, set_chain = false,
         set_group = false, set_probes = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--json") == 0) {
            json = true;
            continue;
        }
        if (strcmp(a, "--quick") == 0) {
            quick = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            usage(stderr);
            return 2;
        }
        if (strcmp(a, "--threads") == 0)
            threads = (unsigned)bench_parse_u64(a, v, 1);
        else if (strcmp(a, "--reps") == 0)
            reps = bench_parse_count(a, v), set_reps = true;
        else if (strcmp(a, "--timers") == 0)
            ntimers = bench_parse_count(a, v), set_timers = true;
        else if (strcmp(a, "--max-delay-ms") == 0)
            max_delay_ms = bench_parse_u64(a, v, 0), set_delay = true;
        else if (strcmp(a, "--probes") == 0)
            nprobes = bench_parse_count(a, v), set_probes = true;
        else if (strcmp(a, "--chain") == 0)
            nchain = bench_parse_count(a, v), set_chain = true;
        else if (strcmp(a, "--group") == 0)
            ngroup = bench_parse_count(a, v), set_group = true;
        else if (strcmp(a, "--settle-ms") == 0)
            settle_ms = bench_parse_u64(a, v, 0);
        else {
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (quick) {
        if (!set_reps)
            reps = 3;
        if (!set_timers)
            ntimers = 10000;
        if (!set_delay)
            max_delay_ms = 10;
        if (!set_probes)
            nprobes = 30;
        if (!set_chain)
            nchain = 20000;
        if (!set_group)
            ngroup = 20000;
    }
    if (reps > MAX_REPS)
        reps = MAX_REPS;
    if (threads == 0)
        threads = bench_cpu_count();
    if (max_delay_ms > 3600000 || ntimers > SIZE_MAX / sizeof(timer_slot) / 2 ||
        nprobes > SIZE_MAX / sizeof(uint64_t)) {
        fprintf(stderr, "compose: sizes too large\n");
        return 2;
    }

    als_pool_options o = {.threads = threads, .name = "bench"};
    als_pool_t *ap = als_pool_new(&o);
    mutex_pool_t *mp = mutex_pool_new(threads);
    if (!ap || !mp)
        die("cannot create the pools");

    size_t nt = (size_t)ntimers;
    timer_slot *slots = malloc(nt * sizeof *slots);
    uint64_t *delays = malloc(nt * sizeof *delays), *tmp = malloc(nt * sizeof *tmp);
    if (!slots || !delays || !tmp)
        die("out of memory");
    uint64_t settle_ns = settle_ms * 1000000u;

    /* timers: each run draws fresh delays, the same for both backends. */
    double tl[2][3][MAX_REPS];
    for (uint64_t r = 0; r <= reps; r++) { /* r == 0: warm-up */
        timers_fill(slots, delays, nt, max_delay_ms * 1000000u);
        timers_libals(ap, slots, delays, nt);
        lateness la = summarize(slots, tmp, nt);
        bench_sleep_ns(settle_ns);
        timers_mutex(mp, slots, delays, nt);
        lateness lm = summarize(slots, tmp, nt);
        bench_sleep_ns(settle_ns);
        if (r == 0)
            continue;
        tl[0][0][r - 1] = (double)la.p50, tl[0][1][r - 1] = (double)la.p99;
        tl[0][2][r - 1] = (double)la.max;
        tl[1][0][r - 1] = (double)lm.p50, tl[1][1][r - 1] = (double)lm.p99;
        tl[1][2][r - 1] = (double)lm.max;
    }
    double late[2][3];
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < 3; k++)
            late[b][k] = bench_median(tl[b][k], (size_t)reps);
    free(slots);
    free(delays);
    free(tmp);

    /* pending: a fresh pool per run, so each starts idle. */
    uint64_t *ptmp = malloc((size_t)nprobes * sizeof *ptmp);
    if (!ptmp)
        die("out of memory");
    double pl[NPENDING][3][MAX_REPS], plate[NPENDING][3];
    for (uint64_t r = 0; r <= reps; r++) {
        for (size_t k = 0; k < NPENDING; k++) {
            lateness l = pending_run(threads, pending_sizes[k], (size_t)nprobes, ptmp);
            bench_sleep_ns(settle_ns);
            if (r == 0)
                continue;
            pl[k][0][r - 1] = (double)l.p50, pl[k][1][r - 1] = (double)l.p99;
            pl[k][2][r - 1] = (double)l.max;
        }
    }
    for (size_t k = 0; k < NPENDING; k++)
        for (int q = 0; q < 3; q++)
            plate[k][q] = bench_median(pl[k][q], (size_t)reps);
    free(ptmp);

    /* chain and group: ns per step / per task. */
    double cr[2][MAX_REPS], gr[2][MAX_REPS];
    for (uint64_t r = 0; r <= reps; r++) {
        uint64_t a = chain_libals(ap, (size_t)nchain);
        bench_sleep_ns(settle_ns);
        uint64_t m = chain_mutex(mp, (size_t)nchain);
        bench_sleep_ns(settle_ns);
        if (r > 0)
            cr[0][r - 1] = (double)a / (double)nchain, cr[1][r - 1] = (double)m / (double)nchain;
    }
    for (uint64_t r = 0; r <= reps; r++) {
        uint64_t a = group_libals(ap, (size_t)ngroup);
        bench_sleep_ns(settle_ns);
        uint64_t m = group_mutex(mp, (size_t)ngroup);
        bench_sleep_ns(settle_ns);
        if (r > 0)
            gr[0][r - 1] = (double)a / (double)ngroup, gr[1][r - 1] = (double)m / (double)ngroup;
    }
    double chain_ns[2], group_ns[2];
    for (int b = 0; b < 2; b++) {
        chain_ns[b] = bench_median(cr[b], (size_t)reps);
        group_ns[b] = bench_median(gr[b], (size_t)reps);
    }

    als_pool_free(ap);
    mutex_pool_free(mp);

    static const char *const kname[3] = {"p50", "p99", "max"};
    if (json) {
        printf("{\n  \"benchmark\": \"compose\",\n  \"threads\": %u,\n  \"reps\": %llu,\n"
               "  \"timers\": {\"tasks\": %llu, \"max_delay_ms\": %llu, \"lateness_us\": {",
               threads, (unsigned long long)reps, (unsigned long long)ntimers,
               (unsigned long long)max_delay_ms);
        for (int b = 0; b < 2; b++) {
            printf("%s\"%s\": {", b ? ", " : "", b ? "mutex" : "libals");
            for (int k = 0; k < 3; k++)
                printf("%s\"%s\": %.1f", k ? ", " : "", kname[k], late[b][k] / 1e3);
            printf("}");
        }
        printf("}, \"libals_better\": {");
        for (int k = 0; k < 3; k++)
            printf("%s\"%s\": %.3f", k ? ", " : "", kname[k], ratio(late[1][k], late[0][k]));
        printf("}},\n");
        printf("  \"pending\": {\"probes\": %llu, \"delay_ms\": [0.5, 1.5], \"lateness_us\": {",
               (unsigned long long)nprobes);
        for (size_t k = 0; k < NPENDING; k++) {
            printf("%s\"%zu\": {", k ? ", " : "", pending_sizes[k]);
            for (int q = 0; q < 3; q++)
                printf("%s\"%s\": %.1f", q ? ", " : "", kname[q], plate[k][q] / 1e3);
            printf("}");
        }
        printf("}},\n");
        printf("  \"chain\": {\"steps\": %llu, \"ns_per_op\": {\"libals\": %.1f, \"mutex\": %.1f}, "
               "\"libals_speedup\": %.3f},\n",
               (unsigned long long)nchain, chain_ns[0], chain_ns[1],
               ratio(chain_ns[1], chain_ns[0]));
        printf("  \"group\": {\"tasks\": %llu, \"ns_per_op\": {\"libals\": %.1f, \"mutex\": %.1f}, "
               "\"libals_speedup\": %.3f}\n}\n",
               (unsigned long long)ngroup, group_ns[0], group_ns[1],
               ratio(group_ns[1], group_ns[0]));
        return 0;
    }

    printf("bench/compose: %u worker threads per pool, %u CPUs, median of %llu runs\n", threads,
           bench_cpu_count(), (unsigned long long)reps);
    printf("  libals  libals %s (als_submit_after, als_future_then, als_group_*)\n",
           ALS_VERSION_STRING);
    printf("  mutex   baseline_mutex_pool.c + a mutex/condvar wait (timers: one thread,\n"
           "          binary heap, pthread_cond_timedwait)\n");
    printf("\ntimer lateness, us (lower is better): %llu timers, random delays 0..%llu ms;\n"
           "mutex/libals: how many times lower libals's lateness is\n",
           (unsigned long long)ntimers, (unsigned long long)max_delay_ms);
    printf("%-28s %10s %10s %14s\n", "percentile", "libals", "mutex", "mutex/libals");
    for (int k = 0; k < 3; k++)
        printf("%-28s %10.1f %10.1f %13.2fx\n", kname[k], late[0][k] / 1e3, late[1][k] / 1e3,
               ratio(late[1][k], late[0][k]));
    printf("\ndelayed-task lateness on an idle pool, us, by pending timers: %llu probes,\n"
           "one at a time, delays 0.5..1.5 ms\n",
           (unsigned long long)nprobes);
    printf("%-28s %10s %10s %10s\n", "pending timers", "p50", "p99", "max");
    for (size_t k = 0; k < NPENDING; k++) {
        char pn[32];
        snprintf(pn, sizeof pn, "%zu", pending_sizes[k]);
        printf("%-28s %10.1f %10.1f %10.1f\n", pn, plate[k][0] / 1e3, plate[k][1] / 1e3,
               plate[k][2] / 1e3);
    }
    printf("\nns per operation (lower is better); mutex/libals: how many times faster libals is\n");
    printf("%-28s %10s %10s %14s\n", "scenario", "libals", "mutex", "mutex/libals");
    char lab[64];
    snprintf(lab, sizeof lab, "then-chain (%llu steps)", (unsigned long long)nchain);
    printf("%-28s %10.1f %10.1f %13.2fx\n", lab, chain_ns[0], chain_ns[1],
           ratio(chain_ns[1], chain_ns[0]));
    snprintf(lab, sizeof lab, "group (%llu tasks)", (unsigned long long)ngroup);
    printf("%-28s %10.1f %10.1f %13.2fx\n", lab, group_ns[0], group_ns[1],
           ratio(group_ns[1], group_ns[0]));
    return 0;
}
