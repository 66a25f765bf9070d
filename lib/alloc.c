/* Allocation. Every allocation in libals goes through here so that test
 * builds (ALS_FAULT_INJECTION) can fail the n-th one and prove that each
 * failure surfaces as ALS_ENOMEM or NULL, with nothing leaked or lost.
 * uses: nothing of libals (the bottom layer, with error.c) */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#ifdef ALS_FAULT_INJECTION
static _Atomic long fail_countdown;   /* 0: off; 1: the next one fails */
static _Atomic long attempts;
static _Atomic bool fail_sticky;

long als__test_fail_alloc(long n, bool sticky)
{
    atomic_store_explicit(&fail_sticky, sticky, memory_order_relaxed);
    atomic_store_explicit(&fail_countdown, n, memory_order_relaxed);
    return atomic_exchange_explicit(&attempts, 0, memory_order_relaxed);
}

static bool injected_failure(void)
{
    atomic_fetch_add_explicit(&attempts, 1, memory_order_relaxed);
    long c = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    while (c > 0) {
        long next = c - 1;
        if (next == 0 && atomic_load_explicit(&fail_sticky, memory_order_relaxed))
            next = 1; /* keep failing */
        if (atomic_compare_exchange_weak_explicit(&fail_countdown, &c, next,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
            return c == 1;
    }
    return false;
}
#define FAIL() injected_failure()
#else
#define FAIL() false
#endif

void *als__malloc(size_t size)
{
    return FAIL() ? NULL : malloc(size);
}

#ifdef ALS_FAULT_INJECTION
static _Atomic bool soft_fails;

void als__test_fail_soft(bool fail)
{
    atomic_store_explicit(&soft_fails, fail, memory_order_relaxed);
}
#define FAIL_SOFT() atomic_load_explicit(&soft_fails, memory_order_relaxed)
#else
#define FAIL_SOFT() false
#endif

void *als__malloc_soft(size_t size)
{
    return FAIL_SOFT() ? NULL : malloc(size);
}

void *als__calloc(size_t n, size_t size)
{
    return FAIL() ? NULL : calloc(n, size);
}

void *als__realloc(void *p, size_t size)
{
    return FAIL() ? NULL : realloc(p, size);
}

void *als__zalloc_aligned(size_t size)
{
    size = (size + ALS__CACHELINE - 1) & ~(size_t)(ALS__CACHELINE - 1);
    void *p = FAIL() ? NULL : aligned_alloc(ALS__CACHELINE, size);
    if (p)
        memset(p, 0, size);
    return p;
}

void als__free(void *p)
{
    free(p);
}
