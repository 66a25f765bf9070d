/* The harness shared by the stress programs (stress/README.md): options,
 * a per-thread random generator, check counting and the closing
 * "N passed, N failed" line, a clock, and a counter to wait on.
 *
 * Every program runs short by default (a few seconds, so CI stays fast) and
 * as long as asked with --seconds N or ALS_STRESS_SECONDS=N. --small (or
 * ALS_STRESS_SMALL=1) shrinks sizes for slow runners such as valgrind.
 * --seed S (or ALS_STRESS_SEED) fixes the random choices; the thread
 * interleavings stay the scheduler's, so a seed narrows a failure down but
 * does not always replay it. */
#ifndef STRESS_H
#define STRESS_H

#include <pthread.h>
#ifndef __cplusplus /* C++ programs (unwind.cpp) use <atomic> */
#include <stdatomic.h>
#endif
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct stress_config {
    const char *name;      /* the program's name, for messages */
    double seconds;        /* how long to run */
    uint64_t seed;         /* root of every random choice */
    bool small;            /* small sizes (valgrind) */
    bool seconds_given;    /* --seconds or ALS_STRESS_SECONDS was set */
};
extern struct stress_config stress;

/* Parses the options shared by every program (unknown ones are an error,
 * exit status 2), prints the header line and arms a hang guard: a run still
 * going well past its time budget prints what it can and fails, so that a
 * lost wake-up shows as a failure with a message rather than a CI timeout.
 * `extra` (may be NULL) is offered each argument the harness does not know;
 * it returns how many arguments it consumed (0: unknown). */
void stress_init(int argc, char **argv, const char *name, double default_seconds,
                 int (*extra)(int argc, char **argv, int i));

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t stress_now_ns(void);
/* Whether the run's time is not used up yet. */
bool stress_time_left(void);
/* Seconds since stress_init. */
double stress_elapsed(void);
/* Sleeps for `ns`. Only ever to create idle time a test needs (workers that
 * park, timers that come due), never to order events. */
void stress_idle_ns(uint64_t ns);

/* ---- random numbers: splitmix64, one generator per thread ---------------- */
struct rng {
    uint64_t s;
};

static inline uint64_t rng_next(struct rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform in [0, n); n > 0. The modulo bias is irrelevant here. */
static inline uint32_t rng_below(struct rng *r, uint32_t n)
{
    return (uint32_t)(rng_next(r) % n);
}

/* True with probability 1/n. */
static inline bool rng_one_in(struct rng *r, uint32_t n)
{
    return rng_below(r, n) == 0;
}

/* A generator for stream `k` of this run (a thread, a round...). */
static inline struct rng rng_for(uint64_t k)
{
    struct rng r = { stress.seed ^ (k * 0xd1342543de82ef95u) };
    rng_next(&r);
    return r;
}

/* ---- checks ------------------------------------------------------------ */

/* Counts one check; a failed one is reported on stderr (the first few of
 * them in full, then only counted). Thread-safe. Returns `ok`. */
bool stress_check(bool ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define CHECK(ok, ...) stress_check(!!(ok), __FILE__, __LINE__, __VA_ARGS__)

/* Counts checks made elsewhere (loops that count their own, a fuzz
 * target's observations): `passed` that held and `failed` that did not. */
void stress_count(uint64_t passed, uint64_t failed);
uint64_t stress_failures(void);

/* Prints one figure of the run, "  label: value". */
void stress_figure(const char *label, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints the closing "N passed, N failed" line; the exit status for main. */
int stress_finish(void);

/* Pushes `item` (with a `next` field) onto a lock-free list `head` (an
 * _Atomic pointer): records made on any thread, walked once all are done. */
#define STRESS_PUSH(head, item)                                                           \
    do {                                                                                  \
        (item)->next = atomic_load_explicit(&(head), memory_order_relaxed);               \
        while (!atomic_compare_exchange_weak_explicit(&(head), &(item)->next, (item),     \
                                                      memory_order_release,               \
                                                      memory_order_relaxed)) {            \
        }                                                                                 \
    } while (0)

/* ---- a counter to wait on (outstanding tasks and the like) -------------- */
struct waitcount {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long n;
};

void waitcount_init(struct waitcount *w);
void waitcount_destroy(struct waitcount *w);
void waitcount_add(struct waitcount *w, long n);
void waitcount_done(struct waitcount *w);
/* Waits until the count is at most `n`. */
void waitcount_wait(struct waitcount *w, long n);
long waitcount_get(struct waitcount *w);

#ifdef __cplusplus
}
#endif

#endif
