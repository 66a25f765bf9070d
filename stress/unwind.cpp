// stress/unwind.cpp: C++ exceptions thrown from random depths of nested
// scopes restore every context exactly and leak nothing.
//
// Several threads (made with als_thread_create, so they start in main's
// context) each run random programs: a chain of nested scopes of random
// kinds (als_run, als_exit, als_snapshot_run, with als_enter_with into some
// levels), a throw at a random depth, and try/catch at random levels. Each
// thread keeps a model of the context at every level and checks all stores
// after every catch and every normal return. Some programs run as pool
// tasks instead, which catch everything inside and check that their context
// is the one they started with; the next task on that worker checks its own.
//
// Figures: programs, throws, catches, contexts checked, mismatches (must be
// 0), values made and destroyed (must be equal; ASan checks the memory).
#include "stress.h"

#include "als.h"

#include <atomic>
#include <cinttypes>
#include <cstdio>

namespace {

constexpr int NSTORES = 3;
constexpr int MAX_DEPTH = 10;
constexpr int THREADS = 4;

als_t *stores[NSTORES];
als_pool_t *pool;

std::atomic<uint64_t> made{ 0 }, destroyed{ 0 };
std::atomic<uint64_t> programs{ 0 }, throws{ 0 }, catches{ 0 }, checked{ 0 }, mismatches{ 0 };
std::atomic<uint64_t> tasks{ 0 };

struct value {
    uint64_t tag;
};

void *mk(uint64_t tag)
{
    made.fetch_add(1, std::memory_order_relaxed);
    return new value{ tag };
}

void destroy_value(void *v)
{
    destroyed.fetch_add(1, std::memory_order_relaxed);
    delete static_cast<value *>(v);
}

struct model {
    void *v[NSTORES];
};

model current()
{
    model m;
    for (int s = 0; s < NSTORES; s++)
        m.v[s] = als_get(stores[s]);
    return m;
}

void check(const model &m)
{
    bool ok = true;
    for (int s = 0; s < NSTORES; s++)
        ok &= als_get(stores[s]) == m.v[s];
    checked.fetch_add(1, std::memory_order_relaxed);
    if (!ok && mismatches.fetch_add(1) < 5)
        std::fprintf(stderr, "unwind: context mismatch after a catch or return\n");
}

struct boom {
    int depth;
};

struct snapshot_ref { // released however its scope is left
    als_snapshot_t *s;
    ~snapshot_ref() { als_snapshot_release(s); }
};

template <class F> void *call(void *arg)
{
    return (*static_cast<F *>(arg))();
}

struct program {
    struct rng *r;
    int depth;    // levels of scopes
    int throw_at; // level that throws; > depth: none
};

// Level k of a program, in a context the model `m` describes.
void level(program &p, int k, model m)
{
    if (k == p.throw_at) {
        throws.fetch_add(1, std::memory_order_relaxed);
        throw boom{ k };
    }
    if (k > p.depth)
        return;
    // A binding for the rest of the scope level k-1 opened (the program's
    // outer run for level 1, which the model does not follow: not there).
    if (k > 1 && rng_one_in(p.r, 4)) {
        int s = (int)rng_below(p.r, NSTORES);
        void *v = mk(rng_next(p.r));
        if (als_enter_with(stores[s], v) == 0)
            m.v[s] = v;
    }
    model child = m;
    auto go = [&]() -> void * {
        level(p, k + 1, child);
        return nullptr;
    };
    bool catch_here = rng_one_in(p.r, 3);
    try {
        int s = (int)rng_below(p.r, NSTORES);
        switch (rng_below(p.r, 3)) {
        case 0: {
            void *v = mk(rng_next(p.r));
            child.v[s] = v;
            als_run(stores[s], v, call<decltype(go)>, &go);
            break;
        }
        case 1:
            child.v[s] = nullptr;
            als_exit(stores[s], call<decltype(go)>, &go);
            break;
        default: {
            snapshot_ref snap{ als_snapshot() };
            if (!snap.s)
                break;
            als_snapshot_run(snap.s, call<decltype(go)>, &go);
            break;
        }
        }
    } catch (const boom &) {
        if (!catch_here)
            throw;
        catches.fetch_add(1, std::memory_order_relaxed);
    }
    check(m);
}

void run_program(struct rng *r)
{
    program p{ r, 1 + (int)rng_below(r, MAX_DEPTH), 0 };
    p.throw_at = 1 + (int)rng_below(r, (uint32_t)p.depth + 2); // sometimes none
    model top = current();
    programs.fetch_add(1, std::memory_order_relaxed);
    auto body = [&]() -> void * {
        try {
            level(p, 1, current());
        } catch (const boom &) {
            catches.fetch_add(1, std::memory_order_relaxed);
        }
        return nullptr;
    };
    als_run(stores[0], mk(rng_next(r)), call<decltype(body)>, &body);
    check(top);
}

struct task_arg {
    uint64_t seed;
};

int task(void *arg)
{
    auto *a = static_cast<task_arg *>(arg);
    struct rng r = rng_for(a->seed);
    delete a;
    model start = current();
    try {
        run_program(&r);
    } catch (...) { // never: run_program catches its own
        mismatches.fetch_add(1);
    }
    check(start);
    tasks.fetch_add(1, std::memory_order_relaxed);
    return 0;
}

void *thread_main(void *arg)
{
    struct rng r = rng_for((uint64_t)(uintptr_t)arg);
    model start = current();
    uint64_t n = 0;
    while (stress_time_left()) {
        if (rng_one_in(&r, 4)) {
            // A task in this thread's context of now (a run around it).
            void *v = mk(rng_next(&r));
            auto submit = [&]() -> void * {
                auto *a = new task_arg{ rng_next(&r) };
                if (als_submit(pool, task, a) != 0)
                    delete a;
                return nullptr;
            };
            als_run(stores[1], v, call<decltype(submit)>, &submit);
        } else {
            run_program(&r);
        }
        check(start);
        n++;
    }
    return nullptr;
}

} // namespace

int main(int argc, char **argv)
{
    stress_init(argc, argv, "unwind", 2.0, nullptr);
    for (auto &s : stores) {
        als_options o{};
        o.name = "unwind";
        o.destroy = destroy_value;
        s = als_new(&o);
    }
    als_pool_options po{};
    po.threads = 2;
    pool = als_pool_new(&po);
    if (!pool)
        return 2;
    int nthreads = stress.small ? 2 : THREADS;
    pthread_t th[THREADS];
    auto start = [&]() -> void * {
        for (int i = 0; i < nthreads; i++)
            if (als_thread_create(&th[i], nullptr, thread_main, (void *)(uintptr_t)(i + 1)))
                return (void *)1;
        return nullptr;
    };
    // The threads inherit a value of store 2 from main.
    void *failed = als_run(stores[2], mk(0), call<decltype(start)>, &start);
    if (failed)
        return 2;
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], nullptr);
    als_pool_drain(pool);
    als_pool_free(pool);
    for (auto &s : stores)
        als_free(s);

    uint64_t bad = mismatches.load();
    stress_count(checked.load() - bad, bad);
    CHECK(made.load() == destroyed.load(), "values made %" PRIu64 ", destroyed %" PRIu64,
          made.load(), destroyed.load());
    stress_figure("programs (in tasks)", "%" PRIu64 " (%" PRIu64 ")", programs.load(),
                  tasks.load());
    stress_figure("throws / catches", "%" PRIu64 " / %" PRIu64, throws.load(), catches.load());
    stress_figure("contexts checked", "%" PRIu64, checked.load());
    stress_figure("mismatches", "%" PRIu64, bad);
    stress_figure("values made / destroyed", "%" PRIu64 " / %" PRIu64, made.load(),
                  destroyed.load());
    return stress_finish();
}
