// Non-local exits through scopes, from C++: an exception, pthread_exit or
// pthread_cancel unwinding through any scope kind restores the context
// exactly as a return would, and releases each owned value once.
//
// Compiled as C++ (the library is C built with -fexceptions): this is the
// test of what a C++ user of als.h sees.
#include <als.h>

#include <atomic>
#include <cstdarg>
#include <cstddef>
#include <csetjmp>
#include <cstdint>
#include <stdexcept>

extern "C" {
#include <cmocka.h>
}

namespace {

std::atomic<int> destroyed{0};
std::atomic<int> created{0};
std::atomic<int> bad{0}; // wrong values seen, on any thread (cmocka: main only)

struct val {
    int tag;
};

void *mk(int tag)
{
    created++;
    return new val{ tag };
}

void destroy_val(void *v)
{
    destroyed++;
    delete static_cast<val *>(v);
}

int tag_of(void *v)
{
    return v ? static_cast<val *>(v)->tag : 0;
}

als_t *s1, *s2;

int setup(void **)
{
    als_options o1{};
    o1.name = "one";
    o1.destroy = destroy_val;
    als_options o2{};
    o2.name = "two";
    o2.destroy = destroy_val;
    s1 = als_new(&o1);
    s2 = als_new(&o2);
    created = 0;
    destroyed = 0;
    bad = 0;
    return s1 && s2 ? 0 : -1;
}

int teardown(void **)
{
    als_free(s1);
    als_free(s2);
    return 0;
}

// Everything created was destroyed exactly once, and nothing is bound at
// the top level.
void check_clean()
{
    assert_int_equal(bad.load(), 0);
    assert_int_equal(created.load(), destroyed.load());
    assert_null(als_get(s1));
    assert_null(als_get(s2));
}

struct boom {
    int depth;
};

// Runs a body from a lambda through the C callback type.
template <class F> void *call(void *arg)
{
    return (*static_cast<F *>(arg))();
}

template <class F> void *run(als_t *s, void *v, F f)
{
    return als_run(s, v, call<F>, &f);
}

// Nested runs 1..n deep, each binding tag base+depth to s1 (and odd depths
// to s2 too), then throw at the bottom.
void *nest_then_throw(int depth, int n, int base)
{
    if (depth > n)
        throw boom{ depth };
    auto inner = [&]() -> void * {
        if (tag_of(als_get(s1)) != base + depth)
            bad++;
        return nest_then_throw(depth + 1, n, base);
    };
    if (depth & 1) {
        auto both = [&]() -> void * { return run(s1, mk(base + depth), inner); };
        return run(s2, mk(base + depth), both);
    }
    return run(s1, mk(base + depth), inner);
}

void throw_through_run(void **)
{
    // The case: caught inside an enclosing run, the context is A's.
    run(s1, mk(1), [&]() -> void * {
        try {
            run(s1, mk(2), [&]() -> void * { throw std::runtime_error("B"); });
        } catch (const std::runtime_error &) {
        }
        assert_int_equal(tag_of(als_get(s1)), 1);
        // A later run returns to A, not to itself.
        run(s1, mk(3), [&]() -> void * { return nullptr; });
        assert_int_equal(tag_of(als_get(s1)), 1);
        return nullptr;
    });
    check_clean();
    // Deep: caught at every level on the way out.
    for (int n = 1; n <= 9; n++) {
        run(s1, mk(100), [&]() -> void * {
            try {
                nest_then_throw(1, n, 1000);
            } catch (const boom &b) {
                assert_int_equal(b.depth, n + 1);
            }
            assert_int_equal(tag_of(als_get(s1)), 100);
            assert_null(als_get(s2));
            return nullptr;
        });
        check_clean();
    }
}

void throw_through_exit_and_enter_with(void **)
{
    run(s1, mk(1), [&]() -> void * {
        auto body = [&]() -> void * {
            assert_null(als_get(s1));
            assert_int_equal(als_enter_with(s1, mk(7)), 0);
            assert_int_equal(als_enter_with(s2, mk(8)), 0);
            throw 42;
        };
        try {
            als_exit(s1, call<decltype(body)>, &body);
        } catch (int) {
        }
        assert_int_equal(tag_of(als_get(s1)), 1);
        assert_null(als_get(s2));
        return nullptr;
    });
    check_clean();
    // enter_with directly inside a run that throws: the value ends with it.
    try {
        run(s1, mk(1), [&]() -> void * {
            assert_int_equal(als_enter_with(s1, mk(5)), 0);
            throw 1;
        });
    } catch (int) {
    }
    check_clean();
}

void throw_through_snapshot_run(void **)
{
    als_snapshot_t *snap = nullptr;
    run(s1, mk(1), [&]() -> void * {
        snap = als_snapshot();
        return nullptr;
    });
    assert_non_null(snap);
    run(s2, mk(2), [&]() -> void * {
        auto body = [&]() -> void * {
            assert_int_equal(tag_of(als_get(s1)), 1);
            assert_null(als_get(s2));
            // A write inside the entered frame takes a private table.
            return run(s2, mk(3), [&]() -> void * {
                assert_int_equal(als_enter_with(s1, mk(4)), 0);
                throw boom{ 0 };
            });
        };
        try {
            als_snapshot_run(snap, call<decltype(body)>, &body);
        } catch (const boom &) {
        }
        assert_null(als_get(s1));
        assert_int_equal(tag_of(als_get(s2)), 2);
        return nullptr;
    });
    als_snapshot_release(snap);
    check_clean();
}

void throw_through_bound_and_resource(void **)
{
    static auto body = []() -> void * {
        assert_int_equal(tag_of(als_get(s1)), 1);
        run(s1, mk(2), []() -> void * { throw boom{ 1 }; });
        return nullptr;
    };
    als_bound_t *bound = nullptr;
    als_resource_t *res = nullptr;
    run(s1, mk(1), [&]() -> void * {
        bound = als_bind(call<decltype(body)>);
        res = als_resource_new("res");
        return nullptr;
    });
    assert_non_null(bound);
    assert_non_null(res);
    uint64_t id = als_execution_async_id();
    run(s2, mk(9), [&]() -> void * {
        try {
            als_bound_call(bound, &body);
        } catch (const boom &) {
        }
        assert_null(als_get(s1));
        assert_int_equal(tag_of(als_get(s2)), 9);
        try {
            als_resource_run_in_scope(res, call<decltype(body)>, &body);
        } catch (const boom &) {
        }
        assert_null(als_get(s1));
        assert_int_equal(als_execution_async_id(), id);
        return nullptr;
    });
    als_bound_free(bound);
    als_resource_free(res);
    check_clean();
}

// Pool tasks: exceptions thrown and caught inside the task leave the
// task's context exactly as the task started (the stress case),
// and the worker's own context is intact for the next task.
struct task_state {
    std::atomic<int> bad{0};
    std::atomic<int> ran{0};
};

int pool_task(void *arg)
{
    auto *st = static_cast<task_state *>(arg);
    int want = tag_of(als_get(s1));
    for (int n = 1; n <= 4; n++) {
        try {
            nest_then_throw(1, n, 500);
        } catch (const boom &) {
        }
        if (tag_of(als_get(s1)) != want || als_get(s2) != nullptr)
            st->bad++;
    }
    st->ran++;
    return 0;
}

void throw_inside_pool_tasks(void **)
{
    als_pool_options po{};
    po.threads = 2;
    als_pool_t *pool = als_pool_new(&po);
    assert_non_null(pool);
    task_state st;
    for (int i = 0; i < 64; i++)
        run(s1, mk(i & 1 ? 11 : 12),
            [&]() -> void * { return (void *)(intptr_t)als_submit(pool, pool_task, &st); });
    assert_int_equal(als_pool_drain(pool), 0);
    als_pool_free(pool);
    assert_int_equal(st.bad.load(), 0);
    assert_int_equal(st.ran.load(), 64);
    check_clean();
}

// pthread_exit and pthread_cancel inside nested runs: the scopes unwind,
// every value is destroyed once, the thread-exit cleanup finds nothing on
// the dead stack.
void *exit_nested(void *how)
{
    if (als_enter_with(s2, mk(50)) != 0) // top level: ends with the thread
        bad++;
    run(s1, mk(1), [&]() -> void * {
        return run(s2, mk(2), [&]() -> void * {
            return run(s1, mk(3), [&]() -> void * {
                if (how)
                    pthread_exit(nullptr);
                for (;;)
                    pthread_testcancel(); // cancelled here
            });
        });
    });
    return nullptr;
}

void exit_and_cancel_in_nested_runs(void **)
{
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 8; i++) {
            pthread_t t;
            assert_int_equal(pthread_create(&t, nullptr, exit_nested, (void *)(intptr_t)(k == 0)),
                             0);
            if (k == 1)
                pthread_cancel(t);
            void *res;
            pthread_join(t, &res);
            if (k == 1)
                assert_ptr_equal(res, PTHREAD_CANCELED);
        }
        check_clean();
    }
    // The same inside an als_thread_create thread, whose outer scope holds
    // the creator's context.
    run(s1, mk(77), [&]() -> void * {
        pthread_t t;
        assert_int_equal(als_thread_create(&t, nullptr, exit_nested, (void *)1), 0);
        pthread_join(t, nullptr);
        return nullptr;
    });
    check_clean();
}

// An exception caught inside a thread function (one that escaped it would
// terminate the process, as with std::thread).
void *catch_in_thread(void *)
{
    if (als_enter_with(s2, mk(50)) != 0) // top level: ends with the thread
        bad++;
    try {
        nest_then_throw(1, 3, 0);
    } catch (const boom &) {
    }
    return als_get(s2); // the top-level enter_with survives the catch
}

void catch_inside_thread_function(void **)
{
    pthread_t t;
    assert_int_equal(als_thread_create(&t, nullptr, catch_in_thread, nullptr), 0);
    void *res;
    pthread_join(t, &res);
    assert_non_null(res); // seen from the thread; destroyed at its exit
    check_clean();
}

} // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(throw_through_run, setup, teardown),
        cmocka_unit_test_setup_teardown(throw_through_exit_and_enter_with, setup, teardown),
        cmocka_unit_test_setup_teardown(throw_through_snapshot_run, setup, teardown),
        cmocka_unit_test_setup_teardown(throw_through_bound_and_resource, setup, teardown),
        cmocka_unit_test_setup_teardown(throw_inside_pool_tasks, setup, teardown),
        cmocka_unit_test_setup_teardown(exit_and_cancel_in_nested_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(catch_inside_thread_function, setup, teardown),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
