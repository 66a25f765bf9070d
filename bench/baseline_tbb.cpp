/*
 * oneTBB's task_group as a bench/pool backend (C++17, exposed to the C
 * benchmark with extern "C").
 *
 * The idiomatic form: a task_arena of `threads` slots, one task_group, each
 * task a tg.run() (safe to call concurrently from inside running tasks of
 * the same group: recursive spawning is the intended use), and the run's
 * wait a tg.wait() inside arena.execute(). As with OpenMP, the submitting
 * thread occupies one of the arena's slots and runs tasks while it waits,
 * so the arena has `threads` threads in all, the submitter included. A
 * global_control raises TBB's worker limit when the arena asks for more
 * threads than the default (CPUs - 1 workers), which the wake-latency
 * scenario does (threads + 1). Scheduling policies are TBB's defaults (work
 * stealing, LIFO own deque, workers spin briefly before sleeping).
 */
#include "pool_backend.h"

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>
#include <oneapi/tbb/version.h>

#include <memory>

namespace {

struct tbb_pool {
    explicit tbb_pool(unsigned threads) : arena(static_cast<int>(threads)) {}
    tbb::task_arena arena;
    tbb::task_group group;
};

/* One process-wide limit: when several global_control objects are alive,
 * the smallest value wins, so a pool must not add its own. It is raised to
 * the largest arena asked for so far; TBB adjusts its worker count. */
std::unique_ptr<tbb::global_control> limit;
unsigned limit_value;

void *tbb_create(unsigned threads)
{
    try {
        if (threads > limit_value) {
            limit.reset();
            limit = std::make_unique<tbb::global_control>(
                tbb::global_control::max_allowed_parallelism, threads);
            limit_value = threads;
        }
        return new tbb_pool(threads);
    } catch (...) {
        return nullptr;
    }
}

void tbb_destroy(void *pool)
{
    delete static_cast<tbb_pool *>(pool);
}

int tbb_submit(void *pool, bench_task_fn fn, void *arg)
{
    static_cast<tbb_pool *>(pool)->group.run([fn, arg] { fn(arg); });
    return 0;
}

void tbb_run(void *pool, bench_task_fn fn, void (*body)(void *), void *ctx)
{
    (void)fn;
    tbb_pool *p = static_cast<tbb_pool *>(pool);
    p->arena.execute([p, body, ctx] {
        body(ctx);
        p->group.wait();
    });
}

#define BENCH_STR2(x) #x
#define BENCH_STR(x) BENCH_STR2(x)

} // namespace

extern "C" const bench_backend bench_backend_tbb = {
    "tbb",
    "oneTBB " BENCH_STR(TBB_VERSION_MAJOR) "." BENCH_STR(
        TBB_VERSION_MINOR) " task_group in a task_arena (submitter in the arena)",
    true,
    tbb_create,
    tbb_destroy,
    tbb_submit,
    tbb_run,
};
