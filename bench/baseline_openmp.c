/*
 * OpenMP tasks as a bench/pool backend (gcc's libgomp, or LLVM's libomp
 * under clang).
 *
 * The idiomatic form: `#pragma omp parallel` with the submitting code in a
 * `single` region, every task an `omp task`, and a `taskgroup` around the
 * submitting code so that the end of the run waits for all descendant
 * tasks, not only the direct children a `taskwait` would wait for. The
 * submitting thread is a member of the team and helps run tasks while it
 * waits, which is how OpenMP is meant to be used; the team has `threads`
 * threads in all. The runtime keeps its threads between parallel regions,
 * so only the first run pays for creating them (bench/pool warms up first).
 *
 * The runtime's own policies apply unchanged: libgomp runs a new task
 * immediately on the creating thread once more than 64 per thread are
 * queued, and spins (OMP_WAIT_POLICY, GOMP_SPINCOUNT) before sleeping.
 */
#include "pool_backend.h"

#include <omp.h>
#include <stdlib.h>

struct omp_pool {
    int threads;
};

static void *omp_create(unsigned threads)
{
    struct omp_pool *p = malloc(sizeof *p);
    if (!p)
        return NULL;
    p->threads = (int)threads;
    return p;
}

static void omp_destroy(void *pool)
{
    free(pool);
}

static int omp_submit(void *pool, bench_task_fn fn, void *arg)
{
    (void)pool;
    /* An orphaned task construct: it binds to the innermost enclosing
     * parallel region, wherever in the call tree submit is called from. */
#pragma omp task firstprivate(fn, arg)
    fn(arg);
    return 0;
}

static void omp_run(void *pool, bench_task_fn fn, void (*body)(void *), void *ctx)
{
    struct omp_pool *p = pool;
    (void)fn;
#pragma omp parallel num_threads(p->threads)
    {
#pragma omp single
        {
#pragma omp taskgroup
            body(ctx);
        }
    }
}

#define BENCH_STR2(x) #x
#define BENCH_STR(x) BENCH_STR2(x)
#ifdef __clang__
#define BENCH_OMP_RUNTIME "LLVM libomp"
#else
#define BENCH_OMP_RUNTIME "gcc libgomp"
#endif

const bench_backend bench_backend_openmp = {
    .name = "openmp",
    .label = "OpenMP " BENCH_STR(_OPENMP) " tasks (parallel+single+taskgroup), " BENCH_OMP_RUNTIME,
    .submitter_in_team = true,
    .create = omp_create,
    .destroy = omp_destroy,
    .submit = omp_submit,
    .run = omp_run,
};
