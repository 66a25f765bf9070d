/*
 * bench/pool: the libals worker pool against the pools a C programmer
 * would otherwise use, side by side in one run.
 *
 *   pool [--json] [--json-out FILE] [--quick] [--threads N] [--reps N] [--tasks N]
 *        [--chain N] [--fanout N] [--samples N] [--gap-us N]
 *        [--settle-ms N] [--requests N] [--inflight N] [--scenarios LIST]
 *        [--backends LIST] [--workers LIST]
 *
 * Scenarios (sizes are options so that CI and tests can run tiny ones):
 *   spawn_many  --tasks empty tasks submitted from one thread, then wait
 *   chained     each task submits the next, --chain deep
 *   fanout      a binary tree of tasks, --fanout in all (node i submits
 *               nodes 2i+1 and 2i+2 when they exist)
 *   ctx0, ctx4  spawn_many whose tasks read four values, bound in 0 or 4
 *               stores around the submit loop: with libals the tasks read
 *               them with als_get (capture, enter and leave are what is
 *               measured); the baselines cannot carry a context, so they
 *               are handed a pointer to the four values, as a user of them
 *               would do by hand
 *   latency     submit-to-start latency of an idle pool: --samples tasks,
 *               one at a time, with an idle gap of --gap-us after each
 *               so that the workers park between samples
 *   requests    --requests requests in waves of --inflight, each binding a
 *               trace context and fanning out 8 subtasks that hash 256
 *               bytes; requests/s and per-request p50/p99 latency (the
 *               baselines get the trace context by hand)
 *
 * Method: every backend gets the same number of worker threads (default:
 * the CPUs this process may run on). Each backend has one warm-up run per
 * scenario, then --reps runs interleaved backend by backend (so drifting
 * noise on a shared VM hits all backends alike), with --settle-ms of sleep
 * between runs so a runtime still spinning after its run (libgomp; oneTBB's
 * workers, for 10-20 ms) does not steal CPU from the next: with 10 ms,
 * libals's chained at 1 worker, which runs right after oneTBB, read 33-38
 * ns per task instead of 22. The median run is reported. Latency samples
 * are likewise taken in --reps interleaved chunks and pooled. Every run
 * checks that exactly the expected number of tasks ran.
 *
 * Ratios are "how many times better libals is" (> 1: libals ahead): for
 * throughput libals's tasks/s over the baseline's, for latency the
 * baseline's latency over libals's.
 *
 * --drain both adds the backend als_help: libals waiting with
 * als_pool_drain_help (as oneTBB's and OpenMP's waits run tasks on the
 * waiting thread), beside libals waiting with als_pool_drain, so that
 * both are compared with the same baseline figures of one run.
 *
 * libals's parks, wake-ups, submitter wake-ups and steals (als_pool_stats)
 * are reported per 1000 tasks for every scenario. --workers 1,2,4,8,16
 * repeats the run at each worker count, each in a child process, and
 * prints a scaling table per scenario (pool_scaling.c).
 */
#include "baseline_mutex_pool.h"
#include "bench_util.h"
#include "pool_backend.h"
#include "pool_results.h"

#include <als.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- backends: libals and the mutex pool ------------------------------- */

static void *als_backend_create(unsigned threads)
{
    als_pool_options o = {.threads = threads, .name = "bench"};
    return als_pool_new(&o);
}

static void als_backend_destroy(void *pool)
{
    als_pool_free(pool);
}

static int als_backend_submit(void *pool, bench_task_fn fn, void *arg)
{
    return als_submit(pool, fn, arg);
}

/* --drain help: libals's run waits with als_pool_drain_help, which runs
 * queued tasks on the waiting thread as oneTBB's wait does. --drain both:
 * libals waits plainly, and the backend als_help is libals waiting with
 * help, side by side with the baselines in the same run. Weak, so that
 * scripts/bench-compare can build this harness against a library that
 * predates it (then --drain help and both are refused). */
extern int als_pool_drain_help(als_pool_t *pool) __attribute__((weak));
static bool drain_helps, drain_both;

static void als_wait(void *pool, bool help)
{
    if ((help ? als_pool_drain_help(pool) : als_pool_drain(pool)) != 0) {
        fprintf(stderr, "als_pool_drain failed\n");
        exit(1);
    }
}

static void als_backend_run(void *pool, bench_task_fn fn, void (*body)(void *), void *ctx)
{
    (void)fn;
    body(ctx);
    als_wait(pool, drain_helps);
}

static void als_help_backend_run(void *pool, bench_task_fn fn, void (*body)(void *), void *ctx)
{
    (void)fn;
    body(ctx);
    als_wait(pool, true);
}

/* Not const: --drain help names its wait in the label. */
bench_backend bench_backend_libals = {
    .name = "libals",
    .label = "libals " ALS_VERSION_STRING " pool (als_submit, als_pool_drain)",
    .submitter_in_team = false,
    .create = als_backend_create,
    .destroy = als_backend_destroy,
    .submit = als_backend_submit,
    .run = als_backend_run,
};

/* Selected with --drain both, or when named in --backends (main). */
static const bench_backend bench_backend_libals_help = {
    .name = "als_help",
    .label = "libals " ALS_VERSION_STRING " pool (als_submit, als_pool_drain_help)",
    .submitter_in_team = false,
    .create = als_backend_create,
    .destroy = als_backend_destroy,
    .submit = als_backend_submit,
    .run = als_help_backend_run,
};

/* Whether b is libals, waiting either way (its tasks read the context with
 * als_get, and it has scheduling counts). */
static bool is_libals(const bench_backend *b)
{
    return b == &bench_backend_libals || b == &bench_backend_libals_help;
}

static void *mutex_backend_create(unsigned threads)
{
    return mutex_pool_new(threads);
}

static void mutex_backend_destroy(void *pool)
{
    mutex_pool_free(pool);
}

static int mutex_backend_submit(void *pool, bench_task_fn fn, void *arg)
{
    return mutex_pool_submit(pool, fn, arg);
}

static void mutex_backend_run(void *pool, bench_task_fn fn, void (*body)(void *), void *ctx)
{
    (void)fn;
    body(ctx);
    mutex_pool_wait(pool);
}

const bench_backend bench_backend_mutex = {
    .name = "mutex",
    .label = "mutex+condvar pool, one FIFO (bench/baseline_mutex_pool.c)",
    .submitter_in_team = false,
    .create = mutex_backend_create,
    .destroy = mutex_backend_destroy,
    .submit = mutex_backend_submit,
    .run = mutex_backend_run,
};

static const bench_backend *const all_backends[] = {
    &bench_backend_libals,
    &bench_backend_libals_help,
    &bench_backend_mutex,
#ifdef BENCH_HAVE_GLIB
    &bench_backend_glib,
#endif
#ifdef BENCH_HAVE_OPENMP
    &bench_backend_openmp,
#endif
#ifdef BENCH_HAVE_LIBUV
    &bench_backend_libuv,
#endif
#ifdef BENCH_HAVE_TBB
    &bench_backend_tbb,
#endif
};
#define NALL (sizeof all_backends / sizeof all_backends[0])

/* ---- counting executed tasks ------------------------------------------ */

/* Every task counts itself, so each run can check that exactly the
 * expected tasks ran. A shared atomic counter would add a contended cache
 * line to every task and distort the very thing measured, so each thread
 * counts in its own padded slot, claimed on its first task of a run. The
 * slots are static memory, not thread-local storage, so they stay readable
 * if a baseline's thread exits before the sum (GLib retires idle threads). */
#define MAX_COUNTERS 1024

struct counter {
    _Alignas(64) uint64_t n;
};

static struct counter counters[MAX_COUNTERS];
static size_t ncounters;                  /* under counter_lock */
static _Atomic uint64_t counter_overflow; /* threads beyond MAX_COUNTERS */
static atomic_uint counter_gen = 1;       /* bumped before every run */
static pthread_mutex_t counter_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local struct counter *tl_counter;
static _Thread_local unsigned tl_gen;

static void counter_claim(unsigned gen)
{
    pthread_mutex_lock(&counter_lock);
    tl_counter = ncounters < MAX_COUNTERS ? &counters[ncounters++] : NULL;
    if (tl_counter)
        tl_counter->n = 0;
    pthread_mutex_unlock(&counter_lock);
    tl_gen = gen;
}

static inline void count_task(void)
{
    /* Relaxed: the bump happens before the run's first submit, and every
     * task of the run is ordered after that submit by the pool itself. */
    unsigned gen = atomic_load_explicit(&counter_gen, memory_order_relaxed);
    if (__builtin_expect(tl_gen != gen, 0))
        counter_claim(gen);
    if (__builtin_expect(tl_counter != NULL, 1))
        tl_counter->n++;
    else
        atomic_fetch_add_explicit(&counter_overflow, 1, memory_order_relaxed);
}

/* Before a run: a new generation, all slots free. */
static void counters_reset(void)
{
    pthread_mutex_lock(&counter_lock);
    ncounters = 0;
    atomic_store(&counter_overflow, 0);
    atomic_fetch_add(&counter_gen, 1);
    pthread_mutex_unlock(&counter_lock);
}

/* After a run's wait, which orders every task's increments before us. */
static uint64_t counters_sum(void)
{
    pthread_mutex_lock(&counter_lock);
    uint64_t s = atomic_load(&counter_overflow);
    for (size_t i = 0; i < ncounters; i++)
        s += counters[i].n;
    pthread_mutex_unlock(&counter_lock);
    return s;
}

/* ---- the scenarios' tasks ---------------------------------------------- */

/* The backend and pool of the current run, read by tasks that submit. */
static const bench_backend *cur_b;
static void *cur_pool;
static uint64_t cur_n; /* the current run's size */

static void submit_or_die(bench_task_fn fn, void *arg)
{
    if (cur_b->submit(cur_pool, fn, arg) != 0) {
        fprintf(stderr, "%s: submit failed\n", cur_b->name);
        exit(1);
    }
}

static int token; /* a non-NULL argument (GThreadPool rejects NULL data) */

static int task_empty(void *arg)
{
    (void)arg;
    count_task();
    return 0;
}

static void body_spawn_many(void *ctx)
{
    (void)ctx;
    for (uint64_t i = 0; i < cur_n; i++)
        submit_or_die(task_empty, &token);
}

/* arg: how many tasks of the chain remain, this one included (>= 1). */
static int task_chain(void *arg)
{
    uintptr_t k = (uintptr_t)arg;
    count_task();
    if (k > 1)
        submit_or_die(task_chain, (void *)(k - 1));
    return 0;
}

static void body_chain(void *ctx)
{
    (void)ctx;
    submit_or_die(task_chain, (void *)(uintptr_t)cur_n);
}

/* arg: node index + 1 (non-NULL); node i's children are 2i+1 and 2i+2. */
static int task_tree(void *arg)
{
    uint64_t i = (uintptr_t)arg - 1;
    count_task();
    uint64_t c = 2 * i + 1;
    if (c < cur_n)
        submit_or_die(task_tree, (void *)(uintptr_t)(c + 1));
    if (c + 1 < cur_n)
        submit_or_die(task_tree, (void *)(uintptr_t)(c + 2));
    return 0;
}

static void body_tree(void *ctx)
{
    (void)ctx;
    submit_or_die(task_tree, (void *)(uintptr_t)1);
}

/* ctx scenarios. */
#define CTX_STORES 4
static als_t *ctx_stores[CTX_STORES];
static int ctx_values[CTX_STORES];
struct by_hand {
    void *v[CTX_STORES];
};
static struct by_hand by_hand_values;
static bool ctx_via_als; /* this run's tasks read the stores, not arg */

static int task_ctx(void *arg)
{
    count_task();
    uintptr_t sum = 0;
    if (ctx_via_als) {
        for (unsigned j = 0; j < CTX_STORES; j++)
            sum += (uintptr_t)als_get(ctx_stores[j]);
    } else {
        const struct by_hand *h = arg;
        for (unsigned j = 0; j < CTX_STORES; j++)
            sum += (uintptr_t)h->v[j];
    }
    BENCH_USE(sum);
    return 0;
}

static void *ctx_submit_loop(void *unused)
{
    (void)unused;
    for (uint64_t i = 0; i < cur_n; i++)
        submit_or_die(task_ctx, &by_hand_values);
    return NULL;
}

/* ctx: how many stores to bind around the submit loop (libals only). */
struct ctx_nest {
    unsigned bind, i;
};

static void *ctx_nest_step(void *p)
{
    struct ctx_nest *c = p;
    if (c->i == c->bind)
        return ctx_submit_loop(NULL);
    unsigned j = c->i++;
    return als_run(ctx_stores[j], &ctx_values[j], ctx_nest_step, c);
}

static void body_ctx0(void *ctx)
{
    (void)ctx;
    ctx_submit_loop(NULL);
}

static void body_ctx4(void *ctx)
{
    (void)ctx;
    struct ctx_nest c = {ctx_via_als ? CTX_STORES : 0, 0};
    ctx_nest_step(&c);
}

/* ---- throughput scenarios ---------------------------------------------- */

struct scenario {
    const char *name;
    const char *label;
    bench_task_fn fn;
    void (*body)(void *);
    bool ctx; /* tasks read the four values (ctx0/ctx4) */
    uint64_t *size;
};

static uint64_t opt_tasks = 1000000, opt_chain = 1000000, opt_fanout = 1000000;

static const struct scenario scenarios[] = {
    {"spawn_many", "spawn_many (outside submitter)", task_empty, body_spawn_many, false,
     &opt_tasks},
    {"chained", "chained (task submits next)", task_chain, body_chain, false, &opt_chain},
    {"fanout", "fanout (binary tree)", task_tree, body_tree, false, &opt_fanout},
    {"ctx0", "ctx, 0 stores bound", task_ctx, body_ctx0, true, &opt_tasks},
    {"ctx4", "ctx, 4 stores bound", task_ctx, body_ctx4, true, &opt_tasks},
};
#define NSCEN (sizeof scenarios / sizeof scenarios[0])

static size_t scenario_index(const char *name)
{
    for (size_t i = 0; i < NSCEN; i++)
        if (strcmp(scenarios[i].name, name) == 0)
            return i;
    abort(); /* a typo in the table above */
}

/* ---- libals's scheduling counters -------------------------------------- */

/* libals's counts now (als_pool_stats; all 0 for other backends, or against
 * a library without them). */
static struct sched sched_read(const bench_backend *b, void *pool)
{
    struct sched c = {0};
#ifdef ALS_POOL_STATS_VERSION
    als_pool_stats st;
    if (is_libals(b) && als_pool_stats_get(pool, &st) == 0)
        c = (struct sched){st.completed + st.failed, st.parks, st.wakeups, st.submitter_wakeups,
                           st.steals};
#else
    (void)b, (void)pool;
#endif
    return c;
}

/* acc += (now - before); acc may be NULL (a warm-up run). */
static void sched_add(struct sched *acc, const bench_backend *b, void *pool, struct sched before)
{
    if (!acc)
        return;
    struct sched now = sched_read(b, pool);
    acc->tasks += now.tasks - before.tasks;
    acc->parks += now.parks - before.parks;
    acc->wakeups += now.wakeups - before.wakeups;
    acc->submitter_wakeups += now.submitter_wakeups - before.submitter_wakeups;
    acc->steals += now.steals - before.steals;
}

/* One table row of libals's counts per 1000 tasks. */
static void sched_row(const char *label, const struct sched *c)
{
    printf("%-32s %8.2f %8.2f %8.2f %8.2f\n", label, per_1000(c->parks, c),
           per_1000(c->wakeups, c), per_1000(c->submitter_wakeups, c), per_1000(c->steals, c));
}

/* One timed run; returns its duration in ns and adds libals's counts to
 * acc (if not NULL). */
static uint64_t run_once(const bench_backend *b, void *pool, const struct scenario *s, uint64_t n,
                         struct sched *acc)
{
    struct sched before = sched_read(b, pool);
    cur_b = b;
    cur_pool = pool;
    cur_n = n;
    ctx_via_als = s->ctx && is_libals(b);
    counters_reset();
    uint64_t t0 = bench_now_ns();
    b->run(pool, s->fn, s->body, NULL);
    uint64_t t = bench_now_ns() - t0;
    sched_add(acc, b, pool, before);
    uint64_t ran = counters_sum();
    if (ran != n) {
        fprintf(stderr, "%s/%s: %llu tasks ran, expected %llu\n", b->name, s->name,
                (unsigned long long)ran, (unsigned long long)n);
        exit(1);
    }
    return t;
}

/* ---- wake latency ------------------------------------------------------ */

static _Atomic uint64_t lat_start; /* when the sample's task started */
static atomic_bool lat_done;

static int task_latency(void *arg)
{
    (void)arg;
    count_task();
    atomic_store_explicit(&lat_start, bench_now_ns(), memory_order_relaxed);
    atomic_store_explicit(&lat_done, true, memory_order_release);
    return 0;
}

struct lat_run {
    uint64_t *out; /* samples go here */
    uint64_t n;
    uint64_t gap_ns;
};

static void body_latency(void *ctx)
{
    struct lat_run *r = ctx;
    for (uint64_t i = 0; i < r->n; i++) {
        atomic_store_explicit(&lat_done, false, memory_order_relaxed);
        uint64_t t0 = bench_now_ns();
        submit_or_die(task_latency, &token);
        /* Sleep, not spin: a spinning submitter would take a CPU from the
         * workers, and the task timestamps its own start, so how long we
         * take to notice it has run does not matter. */
        bench_sleep_ns(r->gap_ns);
        while (!atomic_load_explicit(&lat_done, memory_order_acquire))
            bench_sleep_ns(r->gap_ns / 4 + 1);
        r->out[i] = atomic_load_explicit(&lat_start, memory_order_relaxed) - t0;
    }
}

static void latency_chunk(const bench_backend *b, void *pool, uint64_t *out, uint64_t n,
                          uint64_t gap_ns, struct sched *acc)
{
    struct lat_run r = {out, n, gap_ns};
    struct sched before = sched_read(b, pool);
    cur_b = b;
    cur_pool = pool;
    cur_n = n;
    counters_reset();
    b->run(pool, task_latency, body_latency, &r);
    sched_add(acc, b, pool, before);
    if (counters_sum() != n) {
        fprintf(stderr, "%s/latency: wrong task count\n", b->name);
        exit(1);
    }
}

/* ---- requests: a realistic scenario ------------------------------------ */

/* Each request binds a trace context (a small struct) and fans out
 * REQ_FANOUT subtasks that each hash REQ_BUF bytes with FNV-1a, mixing in
 * the trace id as a tracing or logging layer would. With libals the
 * request runs its submits inside als_run(trace_store, &trace, ...) and
 * the subtasks read the context with als_get; the baselines cannot carry a
 * context, so each subtask's argument leads to the trace struct by hand.
 * Both do the same work per subtask. Requests go out in waves of
 * --inflight, each wave one backend run (submit all, wait for all); a
 * request's latency is from the start of its submit to the end of its
 * last subtask. */
#define REQ_FANOUT 8
#define REQ_BUF 256

struct trace_ctx {
    uint64_t trace_id, span_id;
};

struct request;
struct subtask {
    struct request *req;
    unsigned idx;
    uint64_t hash; /* the result, so the work cannot be optimised away */
};

struct request {
    struct trace_ctx trace;
    atomic_uint remaining;
    uint64_t t_submit, t_done;
    struct subtask sub[REQ_FANOUT];
};

static als_t *trace_store;
static unsigned char req_buf[REQ_FANOUT][REQ_BUF];
static bool req_via_als; /* this run's subtasks read the trace via als_get */

static int task_subreq(void *arg)
{
    struct subtask *s = arg;
    count_task();
    const struct trace_ctx *tc = req_via_als ? als_get(trace_store) : &s->req->trace;
    if (__builtin_expect(tc == NULL, 0)) {
        fprintf(stderr, "requests: subtask ran without its trace context\n");
        exit(1);
    }
    uint64_t h = 14695981039346656037u ^ tc->trace_id;
    const unsigned char *b = req_buf[s->idx];
    for (unsigned i = 0; i < REQ_BUF; i++) {
        h ^= b[i];
        h *= 1099511628211u;
    }
    s->hash = h ^ tc->span_id;
    if (atomic_fetch_sub_explicit(&s->req->remaining, 1, memory_order_acq_rel) == 1)
        s->req->t_done = bench_now_ns();
    return 0;
}

static void *req_submit_fanout(void *arg)
{
    struct request *r = arg;
    for (unsigned j = 0; j < REQ_FANOUT; j++)
        submit_or_die(task_subreq, &r->sub[j]);
    return NULL;
}

struct req_wave {
    struct request *reqs;
    uint64_t n;
};

static void body_requests(void *ctx)
{
    struct req_wave *w = ctx;
    for (uint64_t i = 0; i < w->n; i++) {
        struct request *r = &w->reqs[i];
        atomic_store_explicit(&r->remaining, REQ_FANOUT, memory_order_relaxed);
        r->t_submit = bench_now_ns();
        if (req_via_als)
            als_run(trace_store, &r->trace, req_submit_fanout, r);
        else
            req_submit_fanout(r);
    }
}

/* One timed run of n requests in waves of `inflight`; returns ns and
 * stores each request's latency in lat_out[0..n). */
static uint64_t requests_once(const bench_backend *b, void *pool, struct request *reqs, uint64_t n,
                              uint64_t inflight, uint64_t *lat_out, struct sched *acc)
{
    struct sched before = sched_read(b, pool);
    cur_b = b;
    cur_pool = pool;
    cur_n = n;
    req_via_als = is_libals(b);
    for (uint64_t i = 0; i < n; i++) {
        reqs[i].trace = (struct trace_ctx){.trace_id = i * 0x9e3779b97f4a7c15u + 1, .span_id = i};
        for (unsigned j = 0; j < REQ_FANOUT; j++)
            reqs[i].sub[j] = (struct subtask){.req = &reqs[i], .idx = j};
    }
    counters_reset();
    uint64_t t0 = bench_now_ns();
    for (uint64_t done = 0; done < n; done += inflight) {
        struct req_wave w = {reqs + done, n - done < inflight ? n - done : inflight};
        b->run(pool, task_subreq, body_requests, &w);
    }
    uint64_t t = bench_now_ns() - t0;
    sched_add(acc, b, pool, before);
    if (counters_sum() != n * REQ_FANOUT) {
        fprintf(stderr, "%s/requests: wrong task count\n", b->name);
        exit(1);
    }
    for (uint64_t i = 0; i < n; i++)
        lat_out[i] = reqs[i].t_done - reqs[i].t_submit;
    return t;
}

/* ---- driver ------------------------------------------------------------ */

_Static_assert(NALL <= RESULTS_MAX_BACKENDS, "raise RESULTS_MAX_BACKENDS");
_Static_assert(NSCEN <= RESULTS_MAX_SCENARIOS, "raise RESULTS_MAX_SCENARIOS");

/* This run's results: static memory, or with --workers the child's slot in
 * memory shared with the parent (pool_scaling.c). */
static struct results single_results;
static struct results *R = &single_results;

static void usage(FILE *f)
{
    fputs("usage: pool [options]\n"
          "  --json            print JSON instead of a table\n"
          "  --json-out FILE   also write the JSON to FILE\n"
          "  --quick           a short run (20k tasks, 500 latency samples, 3 reps)\n"
          "  --threads N       worker threads for every backend (default: CPUs)\n"
          "  --workers LIST    comma-separated worker counts (e.g. 1,2,4,8,16; may exceed\n"
          "                    the CPUs): each count in a process of its own, then a\n"
          "                    scaling table per scenario (and its JSON)\n"
          "  --reps N          timed runs per scenario and backend; median reported (5)\n"
          "  --tasks N         spawn_many and ctx tasks (1M)\n"
          "  --chain N         chained depth (1M)\n"
          "  --fanout N        fanout tree size (1M)\n"
          "  --samples N       wake-latency samples (10k)\n"
          "  --gap-us N        idle gap after each latency sample (200)\n"
          "  --settle-ms N     pause between runs, may be 0 (50)\n"
          "  --requests N      requests of the requests scenario (20k)\n"
          "  --inflight N      requests submitted per wave (32)\n"
          "  --scenarios LIST  comma-separated subset of: spawn_many,chained,fanout,\n"
          "                    ctx0,ctx4,latency,requests\n"
          "  --drain plain|help|both  how libals's runs wait: als_pool_drain (plain),\n"
          "                    or als_pool_drain_help, which runs queued tasks on the\n"
          "                    waiting thread as oneTBB's wait does (help); both: libals\n"
          "                    plain, and the backend als_help with help, in one run\n"
          "  --backends LIST   comma-separated subset of the backends built in:",
          f);
    for (size_t i = 0; i < NALL; i++)
        fprintf(f, "%s%s", i ? "," : " ", all_backends[i]->name);
    fputs("\n", f);
}

int main(int argc, char **argv)
{
    bool json = false, quick = false;
    unsigned threads = 0;
    uint64_t reps = 5, samples = 10000, gap_us = 200, settle_ms = 50;
    uint64_t nreq = 20000, inflight = 32;
    bool set_reps = false, set_tasks = false, set_chain = false, set_fanout = false,
         set_samples = false, set_req = false;
    const char *scen_list = NULL, *back_list = NULL, *json_out = NULL, *workers_list = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
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
        if (strcmp(a, "--threads") == 0)
            threads = (unsigned)bench_parse_count(a, v);
        else if (strcmp(a, "--reps") == 0)
            reps = bench_parse_count(a, v), set_reps = true;
        else if (strcmp(a, "--tasks") == 0)
            opt_tasks = bench_parse_count(a, v), set_tasks = true;
        else if (strcmp(a, "--chain") == 0)
            opt_chain = bench_parse_count(a, v), set_chain = true;
        else if (strcmp(a, "--fanout") == 0)
            opt_fanout = bench_parse_count(a, v), set_fanout = true;
        else if (strcmp(a, "--samples") == 0)
            samples = bench_parse_count(a, v), set_samples = true;
        else if (strcmp(a, "--requests") == 0)
            nreq = bench_parse_count(a, v), set_req = true;
        else if (strcmp(a, "--inflight") == 0)
            inflight = bench_parse_count(a, v);
        else if (strcmp(a, "--gap-us") == 0)
            gap_us = bench_parse_count(a, v);
        else if (strcmp(a, "--settle-ms") == 0)
            settle_ms = bench_parse_u64(a, v, 0);
        else if (strcmp(a, "--scenarios") == 0 && v)
            scen_list = v;
        else if (strcmp(a, "--backends") == 0 && v)
            back_list = v;
        else if (strcmp(a, "--workers") == 0 && v)
            workers_list = v;
        else if (strcmp(a, "--drain") == 0 && v &&
                 (!strcmp(v, "plain") || !strcmp(v, "help") || !strcmp(v, "both"))) {
            drain_helps = !strcmp(v, "help");
            drain_both = !strcmp(v, "both");
            if ((drain_helps || drain_both) && !als_pool_drain_help) {
                fprintf(stderr, "--drain %s: this libals has no als_pool_drain_help\n", v);
                return 2;
            }
            if (drain_helps)
                bench_backend_libals.label =
                    "libals " ALS_VERSION_STRING " pool (als_submit, als_pool_drain_help)";
        }
        else if (strcmp(a, "--json-out") == 0 && v)
            json_out = v;
        else {
            usage(stderr);
            return 2;
        }
        i++; /* consumed the value */
    }
    {
        const char *snames[NSCEN + 2], *bnames[NALL];
        for (size_t i = 0; i < NSCEN; i++)
            snames[i] = scenarios[i].name;
        snames[NSCEN] = "latency";
        snames[NSCEN + 1] = "requests";
        for (size_t i = 0; i < NALL; i++)
            bnames[i] = all_backends[i]->name;
        if (!bench_list_valid("--scenarios", scen_list, snames, NSCEN + 2) ||
            !bench_list_valid("--backends", back_list, bnames, NALL))
            return 2;
    }
    if (quick) {
        if (!set_reps)
            reps = 3;
        if (!set_tasks)
            opt_tasks = 20000;
        if (!set_chain)
            opt_chain = 20000;
        if (!set_fanout)
            opt_fanout = 20000;
        if (!set_samples)
            samples = 500;
        if (!set_req)
            nreq = 1000;
    }
    if (reps > MAX_REPS)
        reps = MAX_REPS;
    if (threads == 0)
        threads = bench_cpu_count();
    if (opt_chain > UINTPTR_MAX / 2 || opt_fanout > UINTPTR_MAX / 4) {
        fprintf(stderr, "sizes too large\n");
        return 2;
    }

    if (workers_list) {
        struct results *res, *mine;
        size_t nw;
        int rc = pool_scaling_fork(workers_list, &res, &nw, &mine);
        if (rc < 0)
            return -rc;
        if (rc == 0)
            return pool_scaling_report(res, nw, json, json_out);
        /* A child: measure at its worker count, quietly, into its slot. */
        R = mine;
        threads = mine->threads;
        json = false;
        json_out = NULL;
    }
    R->threads = threads;
    R->reps = reps;
    R->nreq = nreq;
    R->nscen = NSCEN;
    for (size_t s = 0; s < NSCEN; s++)
        R->scen[s].name = scenarios[s].name, R->scen[s].label = scenarios[s].label,
        R->scen[s].size = *scenarios[s].size;

    /* The backends of this run, each with its pool kept for the whole run
     * (pools are long-lived in real programs; creating threads is not what
     * is measured). */
    const bench_backend **bk = R->bk;
    void *pools[NALL];
    size_t nb = 0;
    for (size_t i = 0; i < NALL; i++) {
        if (!bench_in_list(back_list, all_backends[i]->name))
            continue;
        /* als_help: with --drain both, or named in --backends. */
        if (all_backends[i] == &bench_backend_libals_help &&
            (!als_pool_drain_help || (!drain_both && !back_list)))
            continue;
        bk[nb] = all_backends[i];
        pools[nb] = bk[nb]->create(threads);
        if (!pools[nb]) {
            fprintf(stderr, "%s: cannot create a pool of %u threads\n", bk[nb]->name, threads);
            return 1;
        }
        nb++;
    }
    if (nb == 0) {
        fprintf(stderr, "no backend selected\n");
        return 2;
    }
    size_t ials = NALL, ihelp = NALL; /* libals and als_help among bk, if selected */
    for (size_t i = 0; i < nb; i++) {
        if (bk[i] == &bench_backend_libals)
            ials = i;
        if (bk[i] == &bench_backend_libals_help)
            ihelp = i;
    }
    R->nb = nb;
    R->ials = ials;
    R->ihelp = ihelp;

    for (unsigned j = 0; j < CTX_STORES; j++) {
        ctx_stores[j] = als_new(NULL);
        if (!ctx_stores[j])
            return 1;
        by_hand_values.v[j] = &ctx_values[j];
    }

    const uint64_t settle_ns = settle_ms * 1000000u;
    struct tp_result(*tp)[RESULTS_MAX_BACKENDS] = R->tp;
    for (size_t s = 0; s < NSCEN; s++) {
        if (!bench_in_list(scen_list, scenarios[s].name))
            continue;
        uint64_t n = *scenarios[s].size;
        uint64_t warm = n / 10 > 1000 ? n / 10 : (n < 1000 ? n : 1000);
        for (size_t b = 0; b < nb; b++) {
            run_once(bk[b], pools[b], &scenarios[s], warm, NULL);
            bench_sleep_ns(settle_ns);
        }
        double rt[MAX_REPS];
        for (uint64_t r = 0; r < reps; r++) {
            rt[r] = bench_cross_cpu_rt_ns();
            for (size_t b = 0; b < nb; b++) {
                tp[s][b].runs[r] =
                    (double)run_once(bk[b], pools[b], &scenarios[s], n, &tp[s][b].sched);
                bench_sleep_ns(settle_ns);
            }
        }
        R->rt_ns[s] = bench_median(rt, reps);
        for (size_t b = 0; b < nb; b++) {
            double tmp[MAX_REPS];
            memcpy(tmp, tp[s][b].runs, reps * sizeof tmp[0]);
            tp[s][b].median_ns = bench_median(tmp, reps);
            tp[s][b].done = true;
        }
    }

    struct lat_result *lat = R->lat;
    bool do_lat = R->do_lat = bench_in_list(scen_list, "latency");
    if (do_lat) {
        /* Backends whose submitter is a team member get one more thread, so
         * that `threads` workers sit idle in every backend. */
        void *lpools[NALL];
        uint64_t *lsamples[NALL];
        struct sched lsched[NALL] = {{0}};
        for (size_t b = 0; b < nb; b++) {
            lpools[b] = bk[b]->submitter_in_team ? bk[b]->create(threads + 1) : pools[b];
            lsamples[b] = malloc(samples * sizeof(uint64_t));
            if (!lpools[b] || !lsamples[b])
                return 1;
            uint64_t warm[20];
            latency_chunk(bk[b], lpools[b], warm, 20, gap_us * 1000u, NULL);
        }
        uint64_t chunk = (samples + reps - 1) / reps;
        for (uint64_t done = 0; done < samples; done += chunk) {
            uint64_t m = samples - done < chunk ? samples - done : chunk;
            for (size_t b = 0; b < nb; b++) {
                latency_chunk(bk[b], lpools[b], lsamples[b] + done, m, gap_us * 1000u,
                              &lsched[b]);
                bench_sleep_ns(settle_ns);
            }
        }
        for (size_t b = 0; b < nb; b++) {
            uint64_t *v = lsamples[b];
            bench_sort_u64(v, samples);
            double sum = 0;
            for (uint64_t i = 0; i < samples; i++)
                sum += (double)v[i];
            lat[b] = (struct lat_result){
                .p50 = bench_percentile_sorted(v, samples, 50),
                .p90 = bench_percentile_sorted(v, samples, 90),
                .p99 = bench_percentile_sorted(v, samples, 99),
                .max = v[samples - 1],
                .mean = sum / (double)samples,
                .done = true,
                .sched = lsched[b],
            };
            free(v);
            if (lpools[b] != pools[b])
                bk[b]->destroy(lpools[b]);
        }
    }

    struct req_result *rq = R->rq;
    bool do_req = R->do_req = bench_in_list(scen_list, "requests");
    if (do_req) {
        trace_store = als_new(NULL);
        struct request *reqs = calloc(nreq, sizeof *reqs);
        uint64_t *rl[NALL];
        for (unsigned j = 0; j < REQ_FANOUT; j++)
            for (unsigned i = 0; i < REQ_BUF; i++)
                req_buf[j][i] = (unsigned char)(i * 31 + j);
        for (size_t b = 0; b < nb; b++) {
            rl[b] = malloc(reps * nreq * sizeof(uint64_t));
            if (!rl[b])
                return 1;
        }
        if (!trace_store || !reqs)
            return 1;
        uint64_t warm = nreq / 10 > 100 ? nreq / 10 : (nreq < 100 ? nreq : 100);
        for (size_t b = 0; b < nb; b++) {
            requests_once(bk[b], pools[b], reqs, warm, inflight, rl[b], NULL);
            bench_sleep_ns(settle_ns);
        }
        double rt[MAX_REPS];
        for (uint64_t r = 0; r < reps; r++) {
            rt[r] = bench_cross_cpu_rt_ns();
            for (size_t b = 0; b < nb; b++) {
                rq[b].runs[r] = (double)requests_once(bk[b], pools[b], reqs, nreq, inflight,
                                                      rl[b] + r * nreq, &rq[b].sched);
                bench_sleep_ns(settle_ns);
            }
        }
        R->rq_rt_ns = bench_median(rt, reps);
        for (size_t b = 0; b < nb; b++) {
            double tmp[MAX_REPS];
            memcpy(tmp, rq[b].runs, reps * sizeof tmp[0]);
            rq[b].median_ns = bench_median(tmp, reps);
            uint64_t m = reps * nreq;
            bench_sort_u64(rl[b], m);
            rq[b].p50 = bench_percentile_sorted(rl[b], m, 50);
            rq[b].p99 = bench_percentile_sorted(rl[b], m, 99);
            rq[b].max = rl[b][m - 1];
            free(rl[b]);
        }
        free(reqs);
    }

    /* ctx overhead: libals ctx4 over ctx0, the cost of capture, enter and
     * leave of a four-binding context relative to an empty one. */
    double ctx_overhead = -1;
    size_t c0 = scenario_index("ctx0"), c4 = scenario_index("ctx4");
    if (ials < nb && tp[c0][ials].done && tp[c4][ials].done)
        ctx_overhead = tp[c4][ials].median_ns / tp[c0][ials].median_ns - 1;

    /* The performance targets of the pool issue, checked where this run
     * measured both sides. */
    struct target {
        const char *label;
        double value, goal; /* met when value >= goal */
    } targets[8];
    size_t ntargets = 0;
    if (ctx_overhead > -1)
        targets[ntargets++] =
            (struct target){"ctx4 / ctx0 throughput (>= 0.91x: +10%)", 1 / (ctx_overhead + 1),
                            1 / 1.10};
    static const struct {
        const char *scen, *backend;
        double goal;
    } goals[] = {{"spawn_many", "glib", 2},
                 {"chained", "glib", 5},
                 {"fanout", "glib", 5},
                 {"chained", "openmp", 1},
                 {"fanout", "openmp", 1}};
    static char tlabels[8][64];
    for (size_t g = 0; g < sizeof goals / sizeof goals[0] && ials < nb; g++) {
        size_t si = scenario_index(goals[g].scen);
        for (size_t b = 0; b < nb; b++) {
            if (strcmp(bk[b]->name, goals[g].backend) != 0 || !tp[si][b].done)
                continue;
            snprintf(tlabels[ntargets], sizeof tlabels[0], "%s: libals / %s (>= %gx)",
                     goals[g].scen, goals[g].backend, goals[g].goal);
            targets[ntargets] =
                (struct target){tlabels[ntargets], tp[si][b].median_ns / tp[si][ials].median_ns,
                                goals[g].goal};
            ntargets++;
        }
    }

    bool json_ok;
    FILE *jf = bench_json_open(json, json_out, &json_ok);
    if (!json_ok)
        return 1;
    if (jf) {
        fprintf(jf,
                "{\n  \"benchmark\": \"pool\",\n  \"libals_version\": \"%s\",\n"
                "  \"threads\": %u,\n  \"cpus\": %u,\n  \"repetitions\": %llu,\n"
                "  \"backends\": [",
                als_version(), threads, bench_cpu_count(), (unsigned long long)reps);
        for (size_t b = 0; b < nb; b++)
            fprintf(jf, "%s\n    {\"name\": \"%s\", \"label\": \"%s\"}", b ? "," : "", bk[b]->name,
                    bk[b]->label);
        fprintf(jf, "\n  ],\n  \"throughput\": [");
        bool first = true;
        for (size_t s = 0; s < NSCEN; s++) {
            if (!tp[s][0].done)
                continue;
            uint64_t n = *scenarios[s].size;
            fprintf(jf, "%s\n    {\"scenario\": \"%s\", \"tasks\": %llu, \"results\": {",
                    first ? "" : ",", scenarios[s].name, (unsigned long long)n);
            first = false;
            for (size_t b = 0; b < nb; b++) {
                const struct tp_result *t = &tp[s][b];
                fprintf(jf,
                        "%s\n      \"%s\": {\"median_ns\": %.0f, \"ns_per_task\": %.2f, "
                        "\"tasks_per_s\": %.0f, \"runs_ns\": [",
                        b ? "," : "", bk[b]->name, t->median_ns, t->median_ns / (double)n,
                        (double)n * 1e9 / t->median_ns);
                for (uint64_t r = 0; r < reps; r++)
                    fprintf(jf, "%s%.0f", r ? ", " : "", t->runs[r]);
                fprintf(jf, "]");
                if (is_libals(bk[b]))
                    sched_json(jf, &t->sched);
                fprintf(jf, "}");
            }
            fprintf(jf, "\n    }, \"cross_cpu_rt_ns\": %.0f", R->rt_ns[s]);
            if (ials < nb) {
                fprintf(jf, ", \"libals_speedup\": {");
                bool f2 = true;
                for (size_t b = 0; b < nb; b++) {
                    if (is_libals(bk[b]))
                        continue;
                    fprintf(jf, "%s\"%s\": %.3f", f2 ? "" : ", ", bk[b]->name,
                            tp[s][b].median_ns / tp[s][ials].median_ns);
                    f2 = false;
                }
                fprintf(jf, "}");
            }
            fprintf(jf, "}");
        }
        fprintf(jf, "\n  ]");
        if (do_lat) {
            fprintf(jf, ",\n  \"latency\": {\"samples\": %llu, \"gap_us\": %llu, \"results\": {",
                    (unsigned long long)samples, (unsigned long long)gap_us);
            for (size_t b = 0; b < nb; b++) {
                fprintf(jf,
                        "%s\n    \"%s\": {\"p50_ns\": %llu, \"p90_ns\": %llu, "
                        "\"p99_ns\": %llu, \"max_ns\": %llu, \"mean_ns\": %.0f",
                        b ? "," : "", bk[b]->name, (unsigned long long)lat[b].p50,
                        (unsigned long long)lat[b].p90, (unsigned long long)lat[b].p99,
                        (unsigned long long)lat[b].max, lat[b].mean);
                if (is_libals(bk[b]))
                    sched_json(jf, &lat[b].sched);
                fprintf(jf, "}");
            }
            fprintf(jf, "\n  }}");
        }
        if (do_req) {
            fprintf(jf,
                    ",\n  \"requests\": {\"requests\": %llu, \"fanout\": %d, "
                    "\"buffer_bytes\": %d, \"inflight\": %llu,\n    \"context\": \"libals: "
                    "als_run + als_get; baselines: passed by hand in the task argument\", "
                    "\"results\": {",
                    (unsigned long long)nreq, REQ_FANOUT, REQ_BUF, (unsigned long long)inflight);
            for (size_t b = 0; b < nb; b++) {
                fprintf(jf,
                        "%s\n      \"%s\": {\"requests_per_s\": %.0f, \"p50_ns\": %llu, "
                        "\"p99_ns\": %llu, \"max_ns\": %llu, \"runs_ns\": [",
                        b ? "," : "", bk[b]->name, (double)nreq * 1e9 / rq[b].median_ns,
                        (unsigned long long)rq[b].p50, (unsigned long long)rq[b].p99,
                        (unsigned long long)rq[b].max);
                for (uint64_t r = 0; r < reps; r++)
                    fprintf(jf, "%s%.0f", r ? ", " : "", rq[b].runs[r]);
                fprintf(jf, "]");
                if (is_libals(bk[b]))
                    sched_json(jf, &rq[b].sched);
                fprintf(jf, "}");
            }
            fprintf(jf, "\n    }, \"cross_cpu_rt_ns\": %.0f}", R->rq_rt_ns);
        }
        if (ctx_overhead > -1)
            fprintf(jf, ",\n  \"libals_ctx4_over_ctx0\": %.4f", ctx_overhead + 1);
        fprintf(jf, ",\n  \"targets\": [");
        for (size_t t = 0; t < ntargets; t++)
            fprintf(jf,
                    "%s\n    {\"target\": \"%s\", \"value\": %.3f, \"goal\": %.3f, "
                    "\"met\": %s}",
                    t ? "," : "", targets[t].label, targets[t].value, targets[t].goal,
                    targets[t].value >= targets[t].goal ? "true" : "false");
        fprintf(jf, "\n  ]");
        fprintf(jf, "\n}\n");
        if (!bench_json_close(jf, json_out))
            return 1;
    }
    if (!json) {
        printf("bench/pool: %u worker threads per backend, %u CPUs, median of %llu runs\n", threads,
               bench_cpu_count(), (unsigned long long)reps);
        for (size_t b = 0; b < nb; b++)
            printf("  %-8s %s\n", bk[b]->name, bk[b]->label);
        bool any = false;
        for (size_t s = 0; s < NSCEN; s++)
            any |= tp[s][0].done;
        if (any) {
            printf("\nthroughput, M tasks/s (higher is better)");
            if (ials < nb)
                printf("; libals/X: how many times faster libals is");
            printf("\n%-32s %8s", "scenario", "tasks");
            for (size_t b = 0; b < nb; b++)
                printf(" %8s", bk[b]->name);
            for (size_t b = 0; b < nb && ials < nb; b++)
                if (!is_libals(bk[b]))
                    printf("   libals/%-6s", bk[b]->name);
            printf("\n");
            for (size_t s = 0; s < NSCEN; s++) {
                if (!tp[s][0].done)
                    continue;
                uint64_t n = *scenarios[s].size;
                printf("%-32s %8llu", scenarios[s].label, (unsigned long long)n);
                for (size_t b = 0; b < nb; b++)
                    printf(" %8.2f", (double)n * 1e3 / tp[s][b].median_ns);
                for (size_t b = 0; b < nb && ials < nb; b++)
                    if (!is_libals(bk[b]))
                        printf("   %13.2fx", tp[s][b].median_ns / tp[s][ials].median_ns);
                printf("\n");
            }
            printf("\nns per task (lower is better)\n%-32s %8s", "scenario", "");
            for (size_t b = 0; b < nb; b++)
                printf(" %8s", bk[b]->name);
            printf("\n");
            for (size_t s = 0; s < NSCEN; s++) {
                if (!tp[s][0].done)
                    continue;
                uint64_t n = *scenarios[s].size;
                printf("%-32s %8s", scenarios[s].label, "");
                for (size_t b = 0; b < nb; b++)
                    printf(" %8.1f", tp[s][b].median_ns / (double)n);
                printf("\n");
            }
            if (ctx_overhead > -1)
                printf("\nlibals context cost: ctx4 / ctx0 = %.3f (%+.1f%%)\n", ctx_overhead + 1,
                       ctx_overhead * 100);
        }
        if (do_lat) {
            printf("\nwake latency of an idle pool, submit to task start, us (lower is better);"
                   "\n%llu samples, %llu us idle gap",
                   (unsigned long long)samples, (unsigned long long)gap_us);
            if (ials < nb)
                printf("; X/libals: how many times lower libals's latency is");
            printf("\n%-32s %8s", "percentile", "");
            for (size_t b = 0; b < nb; b++)
                printf(" %8s", bk[b]->name);
            for (size_t b = 0; b < nb && ials < nb; b++)
                if (!is_libals(bk[b]))
                    printf("   %6s/libals", bk[b]->name);
            printf("\n");
            const char *names[] = {"p50", "p90", "p99", "max"};
            for (int k = 0; k < 4; k++) {
                printf("%-32s %8s", names[k], "");
                uint64_t v[NALL];
                for (size_t b = 0; b < nb; b++) {
                    v[b] = k == 0   ? lat[b].p50
                           : k == 1 ? lat[b].p90
                           : k == 2 ? lat[b].p99
                                    : lat[b].max;
                    printf(" %8.1f", (double)v[b] / 1e3);
                }
                for (size_t b = 0; b < nb && ials < nb; b++)
                    if (!is_libals(bk[b]))
                        printf("   %13.2fx", v[ials] ? (double)v[b] / (double)v[ials] : 0.0);
                printf("\n");
            }
        }
    }

    if (!json && do_req) {
        printf("\nrequests: %llu requests, each binding a trace context and fanning out %d "
               "subtasks\n(FNV-1a over %d bytes), in waves of %llu; libals subtasks read the "
               "context with als_get,\nthe baselines get it passed by hand in the task argument\n",
               (unsigned long long)nreq, REQ_FANOUT, REQ_BUF, (unsigned long long)inflight);
        printf("%-32s %8s", "", "");
        for (size_t b = 0; b < nb; b++)
            printf(" %8s", bk[b]->name);
        printf("\n%-32s %8s", "k requests/s (higher is better)", "");
        for (size_t b = 0; b < nb; b++)
            printf(" %8.1f", (double)nreq * 1e6 / rq[b].median_ns);
        printf("\n%-32s %8s", "p50 latency, us", "");
        for (size_t b = 0; b < nb; b++)
            printf(" %8.1f", (double)rq[b].p50 / 1e3);
        printf("\n%-32s %8s", "p99 latency, us", "");
        for (size_t b = 0; b < nb; b++)
            printf(" %8.1f", (double)rq[b].p99 / 1e3);
        if (ials < nb) {
            printf("\n%-32s %8s", "libals/X requests/s", "");
            for (size_t b = 0; b < nb; b++)
                printf(" %7.2fx", rq[ials].median_ns > 0 ? rq[b].median_ns / rq[ials].median_ns : 0);
            printf("\n%-32s %8s", "X/libals p99", "");
            for (size_t b = 0; b < nb; b++)
                printf(" %7.2fx", rq[ials].p99 ? (double)rq[b].p99 / (double)rq[ials].p99 : 0);
        }
        printf("\n");
    }

    for (size_t k = 0; k < 2 && !json; k++) {
        size_t i = k ? ihelp : ials;
        if (i >= nb)
            continue;
        printf("\n%s scheduling, per 1000 tasks (system calls and steals; "
               "machine-independent)\n%-32s %8s %8s %8s %8s\n",
               bk[i]->name, "scenario", "parks", "wakeups", "sub.wake", "steals");
        for (size_t s = 0; s < NSCEN; s++)
            if (tp[s][i].done)
                sched_row(scenarios[s].label, &tp[s][i].sched);
        if (do_lat)
            sched_row("latency", &lat[i].sched);
        if (do_req)
            sched_row("requests", &rq[i].sched);
    }

    if (!json) {
        printf("\nthe machine's mode: cross-CPU cache-line round trip before each run, ns "
               "(median; bench_util.h)\n");
        for (size_t s = 0; s < NSCEN; s++)
            if (tp[s][0].done)
                printf("%-32s %8.0f\n", scenarios[s].label, R->rt_ns[s]);
        if (do_req)
            printf("%-32s %8.0f\n", "requests", R->rq_rt_ns);
    }

    if (!json && ntargets) {
        printf("\ntargets of the pool issue (this run)\n");
        for (size_t t = 0; t < ntargets; t++)
            printf("  %-44s %7.2fx  %s\n", targets[t].label, targets[t].value,
                   targets[t].value >= targets[t].goal ? "met" : "NOT met");
    }

    for (size_t b = 0; b < nb; b++)
        bk[b]->destroy(pools[b]);
    for (unsigned j = 0; j < CTX_STORES; j++)
        als_free(ctx_stores[j]);
    if (trace_store)
        als_free(trace_store);
    return 0;
}
