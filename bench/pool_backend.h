/*
 * One interface over every pool bench/pool compares, so that each scenario
 * is written once and runs the same code against libals and each baseline.
 *
 * A backend is a pool of `threads` workers plus three operations:
 *   submit(pool, fn, arg)   queue fn(arg); callable from the submitting
 *                           thread and from inside running tasks
 *   run(pool, fn, body, ctx) run body(ctx) as the submitting code, then
 *                           wait until every task submitted so far,
 *                           including tasks submitted by tasks, finished
 * `run` exists because OpenMP tasks can only be created inside a parallel
 * region: its run opens the region around body. Every task submitted
 * during one run calls the same function `fn`, which run receives up front
 * so that GThreadPool, whose task function is fixed per pool, can use its
 * natural API (data pointer = arg) instead of allocating a {fn, arg} pair
 * per task. The other backends ignore it.
 *
 * A new baseline adds one file implementing this interface, one line in
 * all_backends in bench/pool.c and a package check in CMakeLists.txt.
 */
#ifndef ALS_BENCH_POOL_BACKEND_H
#define ALS_BENCH_POOL_BACKEND_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" { /* bench/baseline_tbb.cpp */
#endif

typedef int (*bench_task_fn)(void *arg);

typedef struct bench_backend {
    const char *name;  /* short name: table column and JSON key */
    const char *label; /* what it is, printed once in the header */
    /* The submitting code runs on a thread of the team (OpenMP) instead of
     * an extra thread outside the pool: the wake-latency scenario then
     * gives the team one more thread so that `threads` workers idle. */
    bool submitter_in_team;
    void *(*create)(unsigned threads);
    void (*destroy)(void *pool);
    int (*submit)(void *pool, bench_task_fn fn, void *arg);
    void (*run)(void *pool, bench_task_fn fn, void (*body)(void *ctx), void *ctx);
} bench_backend;

/* Defined in bench/pool.c (libals) and bench/baseline_*.c. */
extern bench_backend bench_backend_libals; /* --drain sets its label */
extern const bench_backend bench_backend_mutex;
#ifdef BENCH_HAVE_GLIB
extern const bench_backend bench_backend_glib;
#endif
#ifdef BENCH_HAVE_OPENMP
extern const bench_backend bench_backend_openmp;
#endif
#ifdef BENCH_HAVE_LIBUV
extern const bench_backend bench_backend_libuv;
#endif
/* Always declared: bench/baseline_tbb.cpp defines it. */
extern const bench_backend bench_backend_tbb;

#ifdef __cplusplus
}
#endif

#endif /* ALS_BENCH_POOL_BACKEND_H */
