/* Captures: building a frame from the current context (als_snapshot, with a
 * per-thread cache), and running inside one (als_snapshot_run, explicit
 * scopes, bound functions).
 * uses: store.c, frame.c, context.c (scopes and records), alloc.c, tsan.h
 *
 * A frame holds one reference on each of its bindings and is never changed
 * after capture, so any number of threads may enter it at once without
 * synchronisation beyond the reference counts (frame.c). */
#include "internal.h"
#include "tsan.h"

#include <assert.h>

#define T als__tls

static_assert(sizeof(struct als__scope) <= sizeof(als_scope_t),
              "als_scope_t is too small for the internal scope record");

/* Builds a new frame from the private table. All allocations happen before
 * anything is changed, so a failure leaves the context as it was. */
static struct als_snapshot *frame_build(void)
{
    /* The frame's length: up to the last live binding. Bindings of disabled
     * or freed stores are dropped here, so that new captures stop holding
     * them. Scanned from the end, which stops at the last live binding,
     * with the table in locals (the compiler cannot tell that
     * als__epoch_live leaves it alone): in a large, mostly empty table this
     * scan is the whole cost of a first capture. */
    struct als__binding *const *slots = T.v.slots;
    uint32_t n = T.v.n;
    for (; n > 0; n--) {
        const struct als__binding *b = slots[n - 1];
        if (b && als__epoch_live(b->index, b->epoch))
            break;
    }
    if (n == 0)
        return &als__empty_frame;

    struct als_snapshot *f = als__malloc(sizeof *f + (size_t)n * sizeof f->slots[0]);
    if (!f)
        return NULL;
    for (uint32_t i = 0; i < n; i++) {
        struct als__binding *b = T.v.slots[i];
        f->slots[i] = NULL;
        if (!b || !als__epoch_live(b->index, b->epoch))
            continue;
        if (b->kind != ALS__STACK) {
            f->slots[i] = b;
            continue;
        }
        /* Promote als_run's stack binding to a counted heap copy. */
        struct als__binding *h = als__malloc(sizeof *h);
        if (!h) {
            for (uint32_t j = 0; j < i; j++)
                if (f->slots[j] && f->slots[j] != T.v.slots[j])
                    als__free(f->slots[j]);
            als__free(f);
            return NULL;
        }
        *h = *b;
        h->kind = ALS__HEAP;
        h->heap = NULL;
        f->slots[i] = h;
    }

    /* Commit: the frame holds one reference on every binding, and each
     * promoted copy one more for the als_run that bound it. */
    for (uint32_t i = 0; i < n; i++) {
        struct als__binding *h = f->slots[i];
        if (!h)
            continue;
        if (h == T.v.slots[i]) {
            atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
        } else {
            atomic_init(&h->refs, 2);
            T.v.slots[i]->heap = h;
            T.v.slots[i] = h;
        }
    }
    f->n = n;
    atomic_init(&f->refs, 1);
    return f;
}

/* The als__disable_gen this thread's cached frames were last checked
 * against. */
static _Thread_local uint64_t seen_disable_gen
    __attribute__((tls_model("initial-exec")));

/* A store was disabled since this thread last looked: its cached frames
 * (the current one and those saved by open scopes) may hold the store's
 * values, which captures made from now on must not hold. Drop them all; the
 * next capture at each level builds a fresh frame. */
static void drop_caches(uint64_t gen)
{
    seen_disable_gen = gen; /* first: releases may run destroy, which may capture */
    als__cache_drop(als__cache_detach(&T.cache));
    for (struct als__scope *s = T.scope; s; s = s->outer)
        als__cache_drop(als__cache_detach(&s->cache));
}

/* Whether every binding in `f` is still live. */
static bool frame_live(const struct als_snapshot *f)
{
    for (uint32_t i = 0; i < f->n; i++) {
        const struct als__binding *b = f->slots[i];
        if (b && !als__epoch_live(b->index, b->epoch))
            return false;
    }
    return true;
}

struct als_snapshot *als__capture(void)
{
    /* Captures made for the caller from library code (submits, resources,
     * threads) see a jump out of a record opened at or below this frame;
     * the public capture functions check from their own, higher frame. */
    als__jump_check(ALS__NSP());
    uint64_t gen = atomic_load_explicit(&als__disable_gen, memory_order_acquire);
    if (ALS__UNLIKELY(gen != seen_disable_gen))
        drop_caches(gen);
    if (T.cache.frame) {
        if (T.cache.frame == &als__empty_frame)
            return T.cache.frame; /* uncounted: no credits needed */
        if (ALS__UNLIKELY(T.cache.credits == 0)) {
            /* Refill: one of the new references goes to the caller. */
            atomic_fetch_add_explicit(&T.cache.frame->refs, ALS__CACHE_CREDITS,
                                      memory_order_relaxed);
            T.cache.credits = ALS__CACHE_CREDITS;
        }
        T.cache.credits--;
        return T.cache.frame;
    }
    /* Inside an entered frame, unchanged: it is the context, unless it
     * holds values of a store disabled since (never, if none ever was). */
    if (T.v.shared && (ALS__LIKELY(gen == 0) || frame_live(T.v.entered)))
        return als__frame_retain(T.v.entered);
    /* frame_build only reads a shared table: it holds no stack bindings. */
    struct als_snapshot *f = frame_build();
    if (f == &als__empty_frame) {
        /* Cached too, so that submits from an empty context skip the
         * table scan (releasing the empty frame is a no-op). */
        T.cache = (struct als__cached){ f, 0 };
    } else if (f) {
        /* Not yet shared with anyone: plain initialisation. The caller's
         * reference, the cache's own, and a first batch of credits. */
        atomic_init(&f->refs, 2 + ALS__CACHE_CREDITS);
        T.cache = (struct als__cached){ f, ALS__CACHE_CREDITS };
        if (T.depth == 0)
            als__thread_hook(); /* a top-level cache lives until thread exit */
    }
    return f;
}

als_snapshot_t *als_snapshot(void)
{
    als__jump_check(ALS__NSP());
    struct als_snapshot *f = als__capture();
    als__hb_release_frame(f);
    return f;
}

void *als_snapshot_run(als_snapshot_t *snap, als_fn fn, void *arg)
{
    if (!snap || !fn)
        return NULL;
    als__hb_acquire_frame(snap);
    struct als__rec fallback;
    ALS__REC r = als__rec_open_frame(&fallback, ALS__NSP(), snap, false, 0, 0);
    (void)r;
    return fn(arg); /* the cleanup restores the caller's context */
}

int als_scope_enter(als_scope_t *scope, als_snapshot_t *snap)
{
    if (!scope || !snap)
        return ALS_EINVAL;
    als__hb_acquire_frame(snap);
    als__jump_check(ALS__NSP());
    als__scope_enter((struct als__scope *)(void *)scope, snap, false, 0, 0);
    return 0;
}

void als__scope_enter(struct als__scope *s, struct als_snapshot *f, bool ids,
                      uint64_t exec_id, uint64_t trigger_id)
{
    struct als__scope *outer = T.scope;
    if (outer && !outer->switched) {
        /* If this scope is never left, the run or exit around it must put
         * back the table it was using, and this scope's record (which saves
         * that table) may be gone with its stack by then. So the outer scope
         * keeps a copy in its table fields, unused by unswitched scopes;
         * owns_frame, otherwise meaningless for them, marks it valid. The
         * outer level's cache is dropped rather than handed to this scope,
         * so that abandoning the scope cannot leak it. */
        outer->v = T.v;
        outer->owns_frame = true;
        als__cache_drop(als__cache_detach(&T.cache));
    }
    als__scope_open_frame(s, als__frame_retain(f), ids, exec_id, trigger_id);
    s->owns_frame = true;
}

int als_scope_leave(als_scope_t *scope)
{
    if (!scope)
        return ALS_EINVAL;
    als__jump_check(ALS__NSP());
    return als__scope_close((struct als__scope *)(void *)scope);
}

/* ---- bound functions -------------------------------------------------- */

struct als_bound {
    als_fn fn;
    struct als_snapshot *frame;
    bool ids;                      /* resource-bound: enter its async ids */
    uint64_t exec_id, trigger_id;
};

als_bound_t *als__bound_new(als_fn fn, struct als_snapshot *frame, bool ids,
                            uint64_t exec_id, uint64_t trigger_id)
{
    als_bound_t *b = als__malloc(sizeof *b);
    if (!b)
        return NULL;
    *b = (als_bound_t){ fn, frame, ids, exec_id, trigger_id };
    als__hb_release(b); /* to als_bound_call on any thread */
    return b;
}

als_bound_t *als_bind(als_fn fn)
{
    if (!fn)
        return NULL;
    als__jump_check(ALS__NSP());
    struct als_snapshot *f = als__capture();
    if (!f)
        return NULL;
    als_bound_t *b = als__bound_new(fn, f, false, 0, 0);
    if (!b)
        als__frame_release(f);
    return b;
}

void *als_bound_call(const als_bound_t *bound, void *arg)
{
    if (!bound)
        return NULL;
    als__hb_acquire(bound);
    struct als__rec fallback;
    ALS__REC r = als__rec_open_frame(&fallback, ALS__NSP(), bound->frame, bound->ids, bound->exec_id,
                                     bound->trigger_id);
    (void)r;
    return bound->fn(arg);
}

void als_bound_free(als_bound_t *bound)
{
    if (!bound)
        return;
    als__frame_release(bound->frame);
    als__free(bound);
}
