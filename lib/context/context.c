/* The per-thread current context: reading it (als_get), scopes that change
 * it and restore it exactly (als_run, als_exit, and the frame-entering
 * scopes of snapshot.c), als_enter_with, and the thread-exit cleanup. See
 * internal.h for the model.
 * uses: frame.c (releases), table.c (the thread's table), alloc.c
 *
 * Nothing here is shared between threads except heap bindings and frames,
 * which are immutable once published and reference counted; so everything
 * in this file is plain thread-local code without atomics, apart from the
 * epoch loads and reference counts. */
#include "internal.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define T als__tls

void *als_get(const als_t *als)
{
    if (ALS__UNLIKELY(!als))
        return NULL;
    const struct als__binding *b = als__live_binding(als);
    return b ? b->value : als->default_value;
}

int als_has(const als_t *als)
{
    return als && als__live_binding(als);
}

/* ---- writes to the current table ------------------------------------ */

/* Makes slot i of the current table writable: at once, or by a copy or a
 * larger table (table.c). 0 or ALS_ENOMEM. Inlined into als_run (gcc
 * stopped doing so by itself once als_run grew). */
static inline __attribute__((always_inline)) int slot_writable(uint32_t i)
{
    if (ALS__LIKELY(!T.v.shared && i < T.v.n))
        return 0;
    int rc = als__table_writable(i);
    if (ALS__UNLIKELY(rc == ALS__TABLE_NEW)) {
        als__thread_hook(); /* the new table is freed at thread exit */
        rc = 0;
    }
    return rc;
}

/* ---- scopes ----------------------------------------------------------- */

/* Opens a scope that changes only bindings (run, exit). */
static void scope_open(struct als__scope *s)
{
    s->outer = T.scope;
    s->undo = T.undo;
    s->cache = als__cache_detach(&T.cache); /* kept for the scope's close */
    s->switched = false;
    s->ids = false;
    s->owns_frame = false;
    s->keeps_cache = false;
    s->rec = false;
    s->depth = ++T.depth;
    T.scope = s;
}

void als__scope_open_frame(struct als__scope *s, struct als_snapshot *f,
                           bool ids, uint64_t exec_id, uint64_t trigger_id)
{
    scope_open(s);
    s->switched = true;
    s->v = T.v;
    T.v = (struct als__view){
        .slots = f->slots, .entered = f, .table = NULL, .n = f->n, .shared = true,
    };
    if (ids) {
        s->ids = true;
        s->exec_id = T.exec_id;
        s->trigger_id = T.trigger_id;
        T.exec_id = exec_id;
        T.trigger_id = trigger_id;
    }
}

static void report(const char *what)
{
#ifndef NDEBUG
    fprintf(stderr, "libals: scope violation: %s\n", what);
#else
    (void)what;
#endif
}

/* Restores what `s` saved. Releases happen last, once the thread's state is
 * consistent again, because they may run destroy callbacks that use libals. */
static void scope_restore(struct als__scope *s)
{
    struct als__undo *head = T.undo, *stop = s->undo;
    if (!s->switched) /* a switched scope's table is discarded whole */
        for (struct als__undo *u = head; u != stop; u = u->next)
            T.v.slots[u->index] = u->prev;
    T.undo = stop;

    struct als__cached cache = { NULL, 0 };
    if (!s->keeps_cache || head != stop) {
        /* The current cache may hold what the scope bound: drop it, and
         * put back the one the scope set aside (none for a task scope). */
        cache = T.cache;
        T.cache = s->cache;
    }
    struct als__table *copy = NULL;
    struct als_snapshot *owned = NULL;
    if (s->switched) {
        if (!T.v.shared && T.v.table)
            copy = T.v.table;
        if (s->owns_frame)
            owned = T.v.entered;
        T.v = s->v;
    }
    if (s->ids) {
        T.exec_id = s->exec_id;
        T.trigger_id = s->trigger_id;
    }
    T.scope = s->outer;
    T.depth = s->depth - 1;
    s->depth = 0;

    if (copy)
        als__table_put(copy);
    als__cache_drop(cache);
    if (owned)
        als__frame_release(owned);
    for (struct als__undo *u = head, *next; u != stop; u = next) {
        next = u->next; /* u lives inside u->owned, which may be freed now */
        if (u->owned)
            als__binding_release(u->owned);
    }
}

int als__scope_close(struct als__scope *s)
{
    if (ALS__UNLIKELY(s->depth == 0 || T.scope != s)) {
        report(s->depth == 0 ? "als_scope_leave: scope already left"
                             : "als_scope_leave: not the innermost scope "
                               "(scopes are last-in-first-out per thread)");
        return ALS_EINVAL;
    }
    scope_restore(s);
    return 0;
}

/* `s` (run or exit) ends while an explicit scope opened directly in it is
 * still open: the thread's table is the abandoned scope's (possibly an
 * entered frame, which must never be written), and that scope's record may
 * be gone with its stack. Puts back the table `s` was using, as
 * als_scope_enter saved it into `s`, and unlinks the undo records of the
 * abandoned scopes (deeper than `s`: their writes went to their own tables)
 * so that scope_restore unwinds only what `s` itself wrote. Returns the
 * unlinked records, whose bindings the caller releases. */
static struct als__undo *abandon_inner(struct als__scope *s)
{
    struct als__undo *deep = NULL;
    /* Saved by every als_scope_enter made directly in `s`; only a jump out
     * of a scope that library code opened (a pool task's), which als.h
     * forbids, leaves another scope here. */
    assert(s->owns_frame);
    if (!s->owns_frame)
        return NULL;
    for (struct als__undo **pp = &T.undo; *pp != s->undo;) {
        struct als__undo *u = *pp;
        if (u->depth > s->depth) {
            /* An enter_with record inside its heap entry: still valid. */
            *pp = u->next;
            u->next = deep;
            deep = u;
        } else {
            pp = &u->next;
        }
    }
    if (!T.v.shared && T.v.table && T.v.table != s->v.table)
        als__table_put(T.v.table); /* the abandoned scope's private copy */
    T.v = s->v;
    return deep;
}

static void rec_end(struct als__rec *r);

/* als__scope_end when `s` is not the innermost scope. */
static __attribute__((noinline)) void scope_end_slow(struct als__scope *s)
{
    struct als__undo *deep = NULL;
    /* Records opened inside `s` and still open when it ends were jumped
     * out of (longjmp) with nothing since to notice: unwind them first. */
    while (T.scope != s && T.rec && &T.rec->s != s && T.rec->s.depth > s->depth)
        rec_end(T.rec);
    if (T.scope != s) {
        /* An inner als_scope_enter was never left. The caller's scope is
         * intact (it is ours), so restore from it: the context is exact,
         * only the abandoned scope's holds leak. */
        report("an als_scope_enter inside this scope was never left");
        s->keeps_cache = false; /* the cache may be the abandoned scope's */
        if (!s->switched) /* a switched scope saved its table itself */
            deep = abandon_inner(s);
    }
    scope_restore(s);
    for (struct als__undo *u = deep, *next; u; u = next) {
        next = u->next; /* u lives inside u->owned */
        if (u->owned)
            als__binding_release(u->owned);
    }
}

void als__scope_end(struct als__scope *s)
{
    if (ALS__UNLIKELY(T.scope != s))
        scope_end_slow(s);
    else
        scope_restore(s);
}

/* ---- records of function-call scopes ---------------------------------- */

#define RECS_PER_BLOCK 32

struct als__recs {
    struct als__recs *next;
    struct als__rec r[RECS_PER_BLOCK];
};

static struct als__rec *recs_refill(void)
{
    struct als__recs *blk = als__malloc_soft(sizeof *blk);
    if (!blk)
        return NULL;
    blk->next = T.recs;
    T.recs = blk;
    for (int k = RECS_PER_BLOCK - 1; k >= 0; k--) {
        blk->r[k].prev = T.rec_free;
        T.rec_free = &blk->r[k];
    }
    als__thread_hook(); /* the blocks are freed when the thread exits */
    return T.rec_free;
}

static inline struct als__rec *rec_push(struct als__rec *fallback, uintptr_t nsp)
{
    struct als__rec *r = T.rec_free;
    if (ALS__UNLIKELY(!r) && !(r = recs_refill())) {
        fallback->run = false;
        return fallback; /* works, but a longjmp out of it goes unseen */
    }
    T.rec_free = r->prev;
    r->prev = T.rec;
    T.rec = r;
    r->outer_nsp = T.nsp;
    r->nsp = nsp;
    T.nsp = nsp;
    r->run = false;
    return r;
}

static inline __attribute__((always_inline)) struct als__rec *
rec_open_frame(struct als__rec *r, struct als__rec *fallback, struct als_snapshot *f,
               bool ids, uint64_t exec_id, uint64_t trigger_id)
{
    als__scope_open_frame(&r->s, f, ids, exec_id, trigger_id);
    r->s.rec = r != fallback;
    return r;
}

/* The jump check and a record that needs allocating, off the fast path. */
static __attribute__((noinline)) struct als__rec *
rec_open_frame_slow(struct als__rec *fallback, uintptr_t nsp, struct als_snapshot *f,
                    bool ids, uint64_t exec_id, uint64_t trigger_id)
{
    als__jump_check(nsp);
    return rec_open_frame(rec_push(fallback, nsp), fallback, f, ids, exec_id, trigger_id);
}

struct als__rec *als__rec_open_frame(struct als__rec *fallback, uintptr_t nsp,
                                     struct als_snapshot *f, bool ids, uint64_t exec_id,
                                     uint64_t trigger_id)
{
    /* One test for both rare cases keeps the fast path free of calls. */
    if (ALS__UNLIKELY(nsp <= T.nsp || !T.rec_free))
        return rec_open_frame_slow(fallback, nsp, f, ids, exec_id, trigger_id);
    return rec_open_frame(rec_push(fallback, nsp), fallback, f, ids, exec_id, trigger_id);
}

/* Records opened inside r and still open were jumped out of: unwound first,
 * innermost first. */
static void rec_unwind_inner(struct als__rec *r)
{
    while (T.rec != r)
        rec_end(T.rec);
}

/* Ends r's scope (which restores the context exactly) and releases what an
 * als_run bound (`run`: r->run, a constant where inlined). The record
 * leaves the thread's chain before anything can run (destroy callbacks may
 * use libals, and their jump checks must not find it), and returns to the
 * spare records only once nothing reads it. Inlined into the cleanups of
 * als_run and als_exit: their hot path. */
static inline __attribute__((always_inline)) void rec_end_inline(struct als__rec *r, bool run)
{
    bool rec = r->s.rec;
    if (ALS__LIKELY(rec)) {
        if (ALS__UNLIKELY(T.rec != r))
            rec_unwind_inner(r);
        T.rec = r->prev;
        T.nsp = r->outer_nsp;
    }
    als__scope_end(&r->s);
    struct als__binding *heap = run ? r->b.heap : NULL;
    void *value = run ? r->b.value : NULL;
    void (*destroy)(void *) = run ? r->b.destroy : NULL;
    if (ALS__LIKELY(rec)) {
        r->prev = T.rec_free;
        T.rec_free = r;
    }
    if (heap) /* captured: the heap copy decides when value dies */
        als__binding_release(heap);
    else if (destroy && value)
        destroy(value);
}

static void rec_end(struct als__rec *r)
{
    rec_end_inline(r, r->run);
}

void als__rec_close(struct als__rec **pr)
{
    rec_end_inline(*pr, false); /* frame scopes bind nothing themselves */
}

/* The cleanups of als_run's and als_exit's records. */
static inline __attribute__((always_inline)) void run_close(struct als__rec **pr)
{
    rec_end_inline(*pr, true);
}

static inline __attribute__((always_inline)) void exit_close(struct als__rec **pr)
{
    rec_end_inline(*pr, false);
}

void als__scope_unwind(struct als__scope **sp)
{
    if (*sp)
        als__scope_end(*sp);
}

/* Lowest and highest address of this thread's own stack, found once. */
static _Thread_local uintptr_t stack_lo, stack_hi;

/* Whether `a` is on this thread's own stack. Frames on another stack (a
 * signal stack, a fiber's) compare arbitrarily with ours, so jumps are only
 * recognised between frames of the thread's own stack. */
static bool own_stack(uintptr_t a)
{
    if (ALS__UNLIKELY(!stack_hi)) {
        pthread_attr_t at;
        void *lo;
        size_t size;
        if (pthread_getattr_np(pthread_self(), &at) != 0)
            return false;
        int rc = pthread_attr_getstack(&at, &lo, &size);
        pthread_attr_destroy(&at);
        if (rc != 0)
            return false;
        stack_lo = (uintptr_t)lo;
        stack_hi = (uintptr_t)lo + size;
    }
    return a >= stack_lo && a < stack_hi;
}

void als__jumped(uintptr_t nsp)
{
    if (!own_stack(~nsp))
        return;
    /* Every record whose opener's frame is at or below the caller's frame
     * belongs to a call the caller is not inside: jumped out of. Records
     * are intact (they are not on the stack); unwind them innermost first,
     * exactly as their returns would have. */
    while (T.rec && nsp <= T.rec->nsp && own_stack(~T.rec->nsp))
        rec_end(T.rec);
}

/* ---- run, exit, enter_with ------------------------------------------- */

void *als_run(als_t *als, void *value, als_fn fn, void *arg)
{
    if (!als || !fn)
        return NULL;
    uintptr_t nsp = ALS__NSP();
    als__jump_check(nsp);
    uint32_t i = als->index;
    if (ALS__UNLIKELY(slot_writable(i))) {
        if (als->destroy && value)
            als->destroy(value);
        return NULL;
    }
    struct als__rec fallback;
    struct als__rec *r __attribute__((cleanup(run_close))) = rec_push(&fallback, nsp);
    scope_open(&r->s);
    r->s.rec = r != &fallback;
    r->b = (struct als__binding){
        .index = i,
        .epoch = atomic_load_explicit(als->epoch, memory_order_relaxed),
        .value = value,
        .destroy = als->destroy,
        .kind = ALS__STACK,
    };
    r->u = (struct als__undo){
        .next = T.undo, .prev = T.v.slots[i], .index = i, .depth = T.depth,
    };
    r->run = true;
    T.v.slots[i] = &r->b;
    T.undo = &r->u;
    return fn(arg); /* the cleanup ends the scope and releases the value */
}

void *als_exit(als_t *als, als_fn fn, void *arg)
{
    if (!als || !fn)
        return NULL;
    uintptr_t nsp = ALS__NSP();
    als__jump_check(nsp);
    uint32_t i = als->index;
    bool bound = i < T.v.n && T.v.slots[i];
    if (bound && ALS__UNLIKELY(slot_writable(i)))
        return NULL;
    struct als__rec fallback;
    struct als__rec *r __attribute__((cleanup(exit_close))) = rec_push(&fallback, nsp);
    scope_open(&r->s);
    r->s.rec = r != &fallback;
    if (bound) {
        r->u = (struct als__undo){
            .next = T.undo, .prev = T.v.slots[i], .index = i, .depth = T.depth,
        };
        T.v.slots[i] = NULL;
        T.undo = &r->u;
    }
    return fn(arg);
}

/* The undo record of the current scope that `b` (an enter_with binding in
 * the current table) was written with, as the link that points to it; NULL
 * if b was bound in another scope (or arrived through a frame). */
static struct als__undo **scope_record(struct als__binding *b)
{
    struct als__undo *mine = &((struct als__entry *)b)->u;
    struct als__undo *stop = T.scope ? T.scope->undo : NULL;
    for (struct als__undo **pp = &T.undo; *pp != stop; pp = &(*pp)->next)
        if (*pp == mine)
            return pp;
    return NULL;
}

int als_enter_with(als_t *als, void *value)
{
    if (!als)
        return ALS_EINVAL;
    als__jump_check(ALS__NSP());
    /* Thread exit ran out of rounds (thread_exit): a destroy callback that
     * rebinds forever is refused, and keeps its value (destroying it here
     * would call that callback again, without end). */
    if (ALS__UNLIKELY(T.exiting) && T.depth == 0)
        return ALS_ESHUTDOWN;
    uint32_t i = als->index;
    struct als__entry *e = als__malloc(sizeof *e);
    if (!e || slot_writable(i)) {
        als__free(e);
        if (als->destroy && value)
            als->destroy(value);
        return ALS_ENOMEM;
    }
    if (T.depth == 0)
        als__thread_hook(); /* top-level values end with the thread */
    e->b = (struct als__binding){
        .refs = 1, /* held by the undo record until its scope ends */
        .index = i,
        .epoch = atomic_load_explicit(als->epoch, memory_order_relaxed),
        .value = value,
        .destroy = als->destroy,
        .kind = ALS__ENTRY,
    };
    struct als__binding *cur = T.v.slots[i], *replaced = NULL;
    struct als__undo **link = cur && cur->kind == ALS__ENTRY ? scope_record(cur) : NULL;
    if (link) {
        /* A second enter_with in the same scope replaces the first, so a
         * loop of enter_with at a thread's top level holds one value. */
        e->u = **link;
        *link = &e->u;
        replaced = cur;
    } else {
        e->u = (struct als__undo){
            .next = T.undo, .prev = cur, .index = i, .depth = T.depth,
        };
        T.undo = &e->u;
    }
    e->u.owned = &e->b;
    T.v.slots[i] = &e->b;

    als__cache_drop(als__cache_detach(&T.cache));
    if (replaced)
        als__binding_release(replaced);
    return 0;
}

/* ---- thread exit ------------------------------------------------------ */

static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

/* Rounds of thread-exit cleanup: destroy callbacks run by one round may
 * bind again (als_enter_with at the top level), which the next round
 * releases. glibc gives up after PTHREAD_DESTRUCTOR_ITERATIONS (4) passes,
 * so the rounds are ours. After this many, top-level als_enter_with fails
 * on this thread (T.exiting) and leaves the value to its caller, so that a
 * callback that rebinds forever ends. */
#define EXIT_ROUNDS 64

/* Frees what this thread holds, once. Returns whether destroy callbacks
 * run by it left new state (they registered the hook again). */
static bool exit_round(void)
{
    /* Scopes still open: after pthread_exit or a cancellation every scope
     * has closed in its cleanup, so these are records jumped out of with
     * longjmp (intact: not on the stack) and explicit scopes never left,
     * whose records may have died with the stack and are never read: what
     * they hold leaks, as documented. */
    while (T.rec)
        rec_end(T.rec);
    struct als__undo *head = T.undo;
    struct als__cached cache = T.cache;
    struct als__recs *recs = T.recs;
    bool exiting = T.exiting;
    als__tables_free(); /* nothing runs before T is cleared */
    memset(&T, 0, sizeof T); /* a clean top level, exit_hook cleared */
    T.exiting = exiting;

    als__cache_drop(cache);
    /* Every undo record left is an enter_with entry (heap): als_run's and
     * als_exit's are in records, unwound above. */
    for (struct als__undo *u = head, *next; u; u = next) {
        next = u->next;
        if (u->owned)
            als__binding_release(u->owned);
    }
    for (struct als__recs *r = recs, *next; r; r = next) {
        next = r->next;
        als__free(r);
    }
    return T.exit_hook;
}

/* Runs when a thread that holds context state exits (a thread-specific
 * data destructor): releases top-level enter_with values, the cached frame,
 * the thread's tables and records, round after round while destroy
 * callbacks bind again. */
static void thread_exit(void *unused)
{
    (void)unused;
    for (int round = 1; exit_round(); round++) {
        if (round == EXIT_ROUNDS)
            T.exiting = true;
        if (round == 2 * EXIT_ROUNDS)
            return; /* callbacks that capture forever: glibc's next pass */
    }
}

static void exit_key_create(void)
{
    (void)pthread_key_create(&exit_key, thread_exit);
}

void als__thread_hook(void)
{
    if (ALS__LIKELY(T.exit_hook))
        return;
    pthread_once(&exit_once, exit_key_create);
    /* The value only needs to be non-NULL for the destructor to run. */
    if (pthread_setspecific(exit_key, &T) == 0)
        T.exit_hook = true;
}
