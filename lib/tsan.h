/* Happens-before edges for ThreadSanitizer, in programs that use an
 * uninstrumented (release) libals.
 *
 * TSan sees a program's own accesses, malloc/free and pthread calls, but not
 * libals's atomics, futexes or Concurrency Kit's assembly. So without help
 * it reports the user's data handed to a task, a future's result read after
 * the wait, or a value freed by its destroy callback as races. libals
 * therefore tells TSan about each edge it creates: als__hb_release(addr)
 * where one thread publishes (before the atomic that hands over), and
 * als__hb_acquire(addr) where another consumes (after the atomic that
 * observed it), on the same address.
 *
 * The entry points are TSan's own (__tsan_release/__tsan_acquire), declared
 * weak: in a program built with -fsanitize=thread (gcc: libtsan.so; clang:
 * the runtime linked into the executable, which exports them) they resolve
 * and the calls run; anywhere else they are NULL and each edge costs one
 * load and one never-taken branch.
 *
 * Files compiled with TSan themselves (the tsan preset) need no edges: TSan
 * sees their atomics, and extra edges would only hide libals's own ordering
 * bugs from its tests. There the helpers are empty, except in lib/pool/queue.c,
 * which the tsan preset compiles uninstrumented (lib/CMakeLists.txt) and
 * which therefore takes the weak path too. ALS_NO_TSAN_ANNOTATIONS compiles
 * every edge out: tests/consumer_tsan uses it to show that the edges are
 * what keeps a user's TSan quiet.
 *
 * The address names the edge, so use a distinct one per kind of edge on an
 * object (a reference count's edge must not leak into an entry edge). */
#ifndef ALS_TSAN_H
#define ALS_TSAN_H

#include "internal.h"

/* ALS__TSAN: the file including this one is compiled with ThreadSanitizer
 * (the tsan preset), and its edges are compiled out (see above). */
#if defined(__SANITIZE_THREAD__)
#define ALS__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ALS__TSAN 1
#endif
#endif

#if defined(ALS_NO_TSAN_ANNOTATIONS) || defined(ALS__TSAN)

static inline void als__hb_release(const void *addr)
{
    (void)addr;
}

static inline void als__hb_acquire(const void *addr)
{
    (void)addr;
}

#else

/* Default visibility: a hidden undefined weak symbol would be resolved to
 * NULL when libals.so is linked, before any program could supply it. */
#define ALS__TSAN_ENTRY __attribute__((weak, visibility("default")))
ALS__TSAN_ENTRY void __tsan_acquire(void *addr);
ALS__TSAN_ENTRY void __tsan_release(void *addr);

static inline void als__hb_release(const void *addr)
{
    if (ALS__UNLIKELY(__tsan_release != NULL))
        __tsan_release((void *)(uintptr_t)addr);
}

static inline void als__hb_acquire(const void *addr)
{
    if (ALS__UNLIKELY(__tsan_acquire != NULL))
        __tsan_acquire((void *)(uintptr_t)addr);
}

#endif

/* Edges through a frame. The empty frame is shared by every thread and
 * carries none: an edge through it would order unrelated threads and hide
 * their races. Captures (als_snapshot) release on the frame's own address;
 * entries (als_snapshot_run, als_scope_enter) acquire it. */
static inline void als__hb_release_frame(const struct als_snapshot *f)
{
    if (f && f != &als__empty_frame)
        als__hb_release(f);
}

static inline void als__hb_acquire_frame(const struct als_snapshot *f)
{
    if (f != &als__empty_frame)
        als__hb_acquire(f);
}

#endif
