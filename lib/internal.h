/*
 * libals internals: shared by the files under lib/ only. Every non-static
 * symbol here is hidden (the objects are built with hidden visibility).
 *
 * Architecture
 * ------------
 * Layers, each using only those before it (scripts/check-layers checks;
 * every file says what it uses at its top):
 *
 *   base      alloc.c (allocation, fault injection), error.c, tsan.h
 *             (happens-before edges for a user's ThreadSanitizer)
 *   context/  store.c     stores (als_t), slot indices, liveness epochs
 *             frame.c     frames and heap bindings: reference counts
 *             table.c     a thread's context table: copy-on-write, growth
 *             context.c   the current context, scopes, run/exit/enter_with
 *             snapshot.c  captures, snapshot_run, bind
 *             resource.c  AsyncResource and async ids
 *             thread.c    als_thread_create
 *             deadline.c  the deadline heap and thread (cancel.h: the scope
 *                         record, shared with cancel.c)
 *             cancel.c    cancellation scopes and deadlines (a value of the
 *                         library's own store, so every capture carries it)
 *   pool/     the scheduler; pool.h is its API for the layers above, and
 *             scheduler.h lists its files and a task's path through them:
 *             submit -> capture -> enqueue -> worker -> enter -> run ->
 *             leave -> release -> complete (the task's completion hook)
 *   compose/  timer.c (delayed tasks: the pool's one attachment), future.c,
 *             group.c: above the pool, through pool.h only
 *   trace/    W3C Trace Context, tracestate, Baggage, propagators: on the
 *             public API
 *
 * The current context of a thread is a table of binding pointers indexed by
 * store slot (als__tls.slots). Either the table is private to the thread and
 * mutable, or it is the table of an entered frame (shared, read only): the
 * first write after entering a frame copies it (copy-on-write) into a
 * recycled private table. Scopes end by unwinding an undo log of slot
 * writes, so they restore the exact previous context whatever happened
 * inside. als_run keeps its binding and undo record on its own stack; only
 * a capture moves ("promotes") a stack binding to the heap.
 */
#ifndef ALS_INTERNAL_H
#define ALS_INTERNAL_H

#include "als.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ALS__LIKELY(x) __builtin_expect(!!(x), 1)
#define ALS__UNLIKELY(x) __builtin_expect(!!(x), 0)
/* A static function on a task's hot path that GCC would otherwise leave
 * out of line (called from two or three places): measured in instructions
 * per task with callgrind (bench/pool chained), not guessed. */
#define ALS__HOT static inline __attribute__((always_inline))
#define ALS__CACHELINE 64
#if defined(__x86_64__) || defined(__i386__)
#define ALS__CPU_RELAX() __builtin_ia32_pause()
#else
#define ALS__CPU_RELAX() ((void)0)
#endif

/* Starts fetching a line this thread is about to write, in the state that
 * lets it write: a plain prefetch (GCC emits PREFETCHT0 for
 * __builtin_prefetch(p, 1) without -mprfchw) brings a shared copy, whose
 * first write then waits again for the other CPU's copy to be
 * invalidated. PREFETCHW is in every x86-64 CPU libals runs on (older
 * Intel ones execute it as a NOP). Used for the task records a submitter
 * is about to fill (lib/pool/scheduler.h) and the queue slots it is about
 * to publish in (lib/pool/queue.c), lines that other CPUs read last. */
static inline void als__prefetch_for_write(const void *p)
{
#if defined(__x86_64__)
    __asm__("prefetchw %0" : : "m"(*(const char *)p));
#else
    __builtin_prefetch(p, 1);
#endif
}

/* ---- alloc.c ---------------------------------------------------------- */
void *als__malloc(size_t size);
void *als__calloc(size_t n, size_t size);
/* An allocation whose failure changes nothing the caller can see (scope
 * records: a scope then keeps its record on its own stack), so there is no
 * failure to surface and fault injection leaves it alone. */
void *als__malloc_soft(size_t size);
void *als__realloc(void *p, size_t size);
/* Zeroed, on a cache-line boundary (ALS__CACHELINE); freed with als__free. */
void *als__zalloc_aligned(size_t size);
void als__free(void *p);
#ifdef ALS_FAULT_INJECTION
/* Test builds only: the n-th allocation from now fails (n >= 1), and so do
 * the later ones while `sticky`; n = 0 turns injection off. Returns how
 * many allocations were attempted since the previous call. */
long als__test_fail_alloc(long n, bool sticky);
/* Test builds only: makes every als__malloc_soft fail (or not). */
void als__test_fail_soft(bool fail);
#endif

/* ---- store.c ---------------------------------------------------------- */
struct als {
    _Atomic uint64_t *epoch;      /* this store's cell; changes on disable */
    uint32_t index;               /* slot in every context table */
    void *default_value;
    void (*destroy)(void *value);
    char name[];
};

/* Whether a binding made at `epoch` for slot `index` is still live: the
 * store exists and was not disabled since. Any thread, no lock. */
bool als__epoch_live(uint32_t index, uint64_t epoch);
/* Counts als_disable calls: a capture that sees it change drops cached
 * frames, which may still hold the disabled store's values. */
extern _Atomic uint64_t als__disable_gen;
/* Highest slot index ever handed out + 1 (a sizing hint, relaxed). */
uint32_t als__slot_count(void);

/* ---- bindings and frames ---------------------------------------------- */
enum als__binding_kind {
    ALS__STACK = 0,               /* als_run's, in its scope record */
    ALS__HEAP = 1,                /* a promoted copy of a stack binding */
    ALS__ENTRY = 2,               /* als_enter_with's: struct als__entry */
};

/* One value bound to one store. Heap bindings are reference counted and
 * immutable once published; frames hold references to them. */
struct als__binding {
    _Atomic uint32_t refs;        /* heap kinds only */
    uint32_t index;
    uint64_t epoch;
    void *value;
    void (*destroy)(void *value);
    struct als__binding *heap;    /* stack kind: its promoted copy, or NULL */
    uint8_t kind;
};

/* One slot write, undone when the scope that made it ends. */
struct als__undo {
    struct als__undo *next;       /* the older write */
    struct als__binding *prev;    /* what the slot held before */
    uint32_t index;
    uint32_t depth;               /* scope depth of the write */
    struct als__binding *owned;   /* released after the undo (enter_with) */
};

/* als_enter_with's binding and undo record in one allocation. The record
 * dies with its scope; the allocation lives while the binding is held. */
struct als__entry {
    struct als__binding b;        /* first: freed through the binding */
    struct als__undo u;
};

/* A captured context: immutable after creation. */
struct als_snapshot {
    _Atomic uint32_t refs;
    uint32_t n;                   /* slots[0..n) */
    struct als__binding *slots[];
};
extern struct als_snapshot als__empty_frame;

/* Reference counting (frame.c). Releasing the last reference frees a frame
 * or binding and runs the destroy callbacks of the values it held. */
void als__binding_release(struct als__binding *b);
/* Drops n references at once (n >= 1). */
void als__frame_release_n(struct als_snapshot *f, uint32_t n);

/* Inline: they sit on the paths of captures and scopes (measured). */
static inline struct als_snapshot *als__frame_retain(struct als_snapshot *f)
{
    /* Relaxed: the caller already holds a reference. */
    if (f != &als__empty_frame)
        atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

static inline void als__frame_release(struct als_snapshot *f)
{
    als__frame_release_n(f, 1);
}

/* ---- thread.c ---------------------------------------------------------- */
#include <pthread.h>
/* pthread_create for the library's own threads: every signal blocked in
 * the new thread (thread.c says why). pthread_create's result. */
int als__thread_spawn(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);

/* ---- per-thread context (table.c, context.c) -------------------------- */
/* A recycled private table for copy-on-write after entering a frame. */
struct als__table {
    struct als__table *next;      /* spare list link */
    uint32_t cap;
    struct als__binding *slots[];
};

/* Slots of a thread's inline tables (base and first copy-on-write): up to
 * this many stores cost a thread no table allocation. */
#define ALS__BASE_SLOTS 16

struct als__scope;

/* Which table is current. Saved and restored whole by scopes: copying it
 * field by field let the compiler merge narrow stores into wide loads,
 * which stalled store forwarding on every pool task (measured). */
struct als__view {
    struct als__binding **slots;  /* the table */
    struct als_snapshot *entered; /* shared: the frame whose table it is */
    struct als__table *table;     /* private heap table in use, NULL: base */
    uint32_t n;                   /* its length */
    bool shared;                  /* slots belong to `entered` (read only) */
};

/* A thread's cached capture: a frame equal to the current context, owning
 * 1 + credits references. Captures hand out credits without touching the
 * frame's shared counter and take CACHE_CREDITS more at a time, so a thread
 * submitting many tasks in one context does not bounce that counter's
 * cache line against the workers releasing it. */
struct als__cached {
    struct als_snapshot *frame;
    uint32_t credits;
};
#define ALS__CACHE_CREDITS 64

struct als__tls {
    struct als__view v;           /* the current table */
    bool exit_hook;               /* thread-exit cleanup registered */
    uint32_t depth;               /* open scopes */
    struct als__cached cache;     /* private: a frame equal to now, owned */
    struct als__undo *undo;       /* newest slot write */
    struct als__scope *scope;     /* innermost open scope */
    uint64_t exec_id;             /* 0 means 1: top level */
    uint64_t trigger_id;
    struct als__table *spare;     /* recycled tables */
    struct als__table *base_heap; /* base table, once grown past inline */
    struct als__binding *base[ALS__BASE_SLOTS];
    uintptr_t nsp;                /* the innermost record's nsp; 0: none */
    struct als__rec *rec;         /* innermost open record */
    struct als__rec *rec_free;    /* spare records (a stack) */
    struct als__recs *recs;       /* every block of records, to free */
    bool exiting;                 /* thread exit ran out of rounds */
    /* A first copy-on-write table, so that writes inside an entered frame
     * (a pool task's als_run) allocate nothing with up to 16 stores. It
     * joins the spare list on first use. */
    bool cow_ready;
    union {
        struct als__table t;
        unsigned char bytes[sizeof(struct als__table) +
                            ALS__BASE_SLOTS * sizeof(struct als__binding *)];
    } cow;
};

/* Initial-exec: one TLS access costs a plain load even inside libals.so
 * (the default model would call __tls_get_addr: 2.1 ns against 0.3 ns). */
extern _Thread_local struct als__tls als__tls
    __attribute__((tls_model("initial-exec")));

/* The live binding of `als` in the calling thread's current context, or
 * NULL: als_get's lookup, shared with the library's own stores (cancel.c). */
static inline const struct als__binding *als__live_binding(const als_t *als)
{
    uint32_t i = als->index;
    if (ALS__LIKELY(i < als__tls.v.n)) {
        const struct als__binding *b = als__tls.v.slots[i];
        /* Relaxed: a disable ordered before us by other synchronisation is
         * seen through coherence; a concurrent one may go either way. */
        if (b && b->epoch == atomic_load_explicit(als->epoch, memory_order_relaxed))
            return b;
    }
    return NULL;
}

/* Makes slot i of the current table writable, off als_run's fast path:
 * copies an entered frame's table (copy-on-write) or grows the private one
 * (table.c). 0; ALS__TABLE_NEW if that allocated a table only thread exit
 * frees (the caller registers als__thread_hook, which lives above); or
 * ALS_ENOMEM, changing nothing. */
int als__table_writable(uint32_t i);
#define ALS__TABLE_NEW 1
/* Thread exit: frees every table of this thread. */
void als__tables_free(void);

/* Returns a private table to the thread's spare list. */
static inline void als__table_put(struct als__table *t)
{
    t->next = als__tls.spare;
    als__tls.spare = t;
}

/* A scope: everything needed to restore the context exactly. On the stack
 * of whoever opened it. `switched` scopes also replace the table. */
struct als__scope {
    struct als__scope *outer;
    struct als__undo *undo;
    struct als__cached cache;
    struct als__view v;           /* switched scopes: the table to restore */
    uint64_t exec_id, trigger_id;
    uint32_t depth;               /* 0 once closed */
    bool switched;
    bool ids;
    bool owns_frame;              /* als_scope_enter: release `entered` */
    bool keeps_cache;             /* als__scope_open_task: `cache` unused */
    bool rec;                     /* the scope of a struct als__rec in use */
};

/* The record of a function-call scope opened from user code (als_run,
 * als_exit, als_snapshot_run, bound calls, resource scopes): the scope, and
 * als_run's binding and undo record. It lives in a per-thread stack of
 * records (context.c), not on the C stack, so that a scope abandoned by
 * longjmp can still be unwound after the jump (als__jumped): its frame is
 * gone, its record is not. `nsp` is the complement of the opener's frame
 * address, so that "the frame of code running now is at or above the
 * opener's" (the opener has been jumped out of) is one unsigned compare
 * against the thread's innermost record (als__tls.nsp; 0: none). */
struct als__rec {
    struct als__scope s;          /* first */
    struct als__rec *prev;        /* in use: the next older; free: next free */
    uintptr_t nsp;                /* ~ frame address of the opener */
    uintptr_t outer_nsp;          /* als__tls.nsp before */
    struct als__binding b;        /* als_run's */
    struct als__undo u;           /* als_run's, als_exit's */
    bool run;                     /* b is bound: release it at the end */
};

/* Opens a scope that enters frame `f` (borrowed: the caller keeps it alive
 * until the scope closes); with `ids`, also sets the execution ids. */
void als__scope_open_frame(struct als__scope *s, struct als_snapshot *f,
                           bool ids, uint64_t exec_id, uint64_t trigger_id);
/* Opens explicit scope `s` (als_scope_enter, als_resource_enter) over
 * frame `f`, taking its own reference; als__scope_close closes it. */
void als__scope_enter(struct als__scope *s, struct als_snapshot *f, bool ids,
                      uint64_t exec_id, uint64_t trigger_id);
/* Closes the innermost scope `s` (als_scope_leave). ALS_EINVAL, changing
 * nothing, if `s` is not the innermost open scope (a LIFO violation). */
int als__scope_close(struct als__scope *s);
/* Ends a scope opened by a function call (run, exit, snapshot_run, ...):
 * always restores what `s` saved, reporting (debug builds) an inner
 * explicit scope that was never left. */
void als__scope_end(struct als__scope *s);

/* Opens a scope that keeps the current context but sets the execution ids:
 * a task run inline by its submitter (pool.c), on its hot path, hence
 * inline. The thread's cached capture stays in place (the context is the
 * same); it is dropped at the end only if the task left writes to unwind. */
static inline void als__scope_open_task(struct als__scope *s, uint64_t exec_id,
                                        uint64_t trigger_id)
{
    s->outer = als__tls.scope;
    s->undo = als__tls.undo;
    s->cache.frame = NULL;
    s->cache.credits = 0;
    s->switched = false;
    s->owns_frame = false;
    s->keeps_cache = true;
    s->rec = false;
    s->ids = true;
    s->exec_id = als__tls.exec_id;
    s->trigger_id = als__tls.trigger_id;
    s->depth = ++als__tls.depth;
    als__tls.scope = s;
    als__tls.exec_id = exec_id;
    als__tls.trigger_id = trigger_id;
}

/* Ends a scope opened by als__scope_open_task. */
static inline void als__scope_end_task(struct als__scope *s)
{
    if (ALS__UNLIKELY(als__tls.scope != s || als__tls.undo != s->undo)) {
        als__scope_end(s); /* something to unwind */
        return;
    }
    als__tls.exec_id = s->exec_id;
    als__tls.trigger_id = s->trigger_id;
    als__tls.scope = s->outer;
    als__tls.depth = s->depth - 1;
    s->depth = 0;
}

/* Takes the current level's cache away (to drop or to keep in a scope). */
static inline struct als__cached als__cache_detach(struct als__cached *c)
{
    struct als__cached out = *c;
    c->frame = NULL;
    c->credits = 0;
    return out;
}

/* Releases what a detached cache owned. */
static inline void als__cache_drop(struct als__cached c)
{
    if (c.frame)
        als__frame_release_n(c.frame, 1 + c.credits);
}

/* Captures the current context (one reference for the caller). NULL if
 * allocation fails. */
struct als_snapshot *als__capture(void);

/* A bound function over `frame` (whose reference it takes). */
als_bound_t *als__bound_new(als_fn fn, struct als_snapshot *frame, bool ids,
                            uint64_t exec_id, uint64_t trigger_id);

/* Execution ids (resource.c). A pool task's scope starts with the id
 * ALS__ID_LAZY: its fresh id is drawn only when someone asks for it (the
 * task itself, or a task or resource it creates), which keeps a shared
 * counter off the path of tasks that never look. */
#define ALS__ID_LAZY UINT64_MAX
/* A trigger id not known yet: the execution id of the code the scope was
 * opened from (a task run inline by its submitter), which may itself be
 * lazy. Resolved, outermost first, when someone asks (resource.c). */
#define ALS__ID_PARENT (UINT64_MAX - 1)
uint64_t als__async_id_next(void);

/* ---- non-local exits (context.c) -------------------------------------- */
/* Function-call scopes close in a cleanup (__attribute__((cleanup))): the
 * library is built with -fexceptions, so a C++ exception, pthread_exit or
 * pthread_cancel unwinding through them restores the context as a return
 * does. longjmp runs no cleanup: see als__jumped. */

/* The complement of the calling function's frame address (see als__rec). */
#define ALS__NSP() (~(uintptr_t)__builtin_frame_address(0))

/* Unwinds the records abandoned by a longjmp: those whose opener's frame is
 * at or below `nsp` (the frame of the caller, which is not inside them). */
void als__jumped(uintptr_t nsp);

/* The check at every scope entry, leave and capture made from user code:
 * one compare while no record was jumped out of. `nsp`: ALS__NSP() of the
 * public function called by the user. */
static inline void als__jump_check(uintptr_t nsp)
{
    if (ALS__UNLIKELY(nsp <= als__tls.nsp))
        als__jumped(nsp);
}

/* The jump check, a record pushed for a function whose frame is `nsp`, and
 * its scope opened over frame `f` (als__scope_open_frame). The record comes
 * from the thread's record stack, or is `fallback` (on the caller's stack,
 * not tracked for longjmp) if no record can be allocated. */
struct als__rec *als__rec_open_frame(struct als__rec *fallback, uintptr_t nsp,
                                     struct als_snapshot *f, bool ids, uint64_t exec_id,
                                     uint64_t trigger_id);
/* Ends *pr's scope, drops its record and releases what it bound: the
 * cleanup of every function-call scope. */
void als__rec_close(struct als__rec **pr);
/* Ends *sp if it is not NULL: the cleanup of a guard over a scope that
 * library code closes itself on return (pool tasks), for unwinding. */
void als__scope_unwind(struct als__scope **sp);
/* Declares the record of a function-call scope, closed however the
 * function is left (return, exception, thread exit). */
#define ALS__REC struct als__rec *__attribute__((cleanup(als__rec_close)))

/* Registers the thread-exit cleanup of this thread's context state. */
void als__thread_hook(void);

/* ---- cancel.c: cancellation scopes and deadlines (issue 15) ----------- */
/* The current scope is the value of a store of the library's own, bound by
 * als_cancel_run: every capture carries it, and each binding holds one
 * reference (cancel.c explains). What the pool and compose layers need: */

/* A callback registered on a scope by the library itself (a waiter to wake,
 * a queued or delayed task to drop). Storage is the caller's; registering
 * allocates nothing and cannot fail. id: 0 for internal hooks (public
 * callbacks use the same record, allocated, with an id > 0). */
struct als__cancel_hook {
    struct als__cancel_hook *next, *prev; /* NULL: not registered */
    void (*fn)(void *arg);
    void *arg;
    int64_t id;
};

/* The store whose value is the current scope (cancel.c), NULL until the
 * first scope: then the checks below cost one load. Acquire: whoever sees
 * the pointer sees the store's fields. */
extern _Atomic(als_t *) als__scope_store;

/* Whether any scope was ever made: the hot paths' first test. */
static inline bool als__scopes_exist(void)
{
    return atomic_load_explicit(&als__scope_store, memory_order_relaxed) != NULL;
}

/* The scope bound in the calling thread's current context, borrowed (no
 * new reference: valid while that context is), or NULL. No lock, no
 * allocation: the cost of an als_get. */
static inline struct als_cancel *als__cancel_current_scope(void)
{
    const als_t *s = atomic_load_explicit(&als__scope_store, memory_order_acquire);
    if (ALS__LIKELY(!s))
        return NULL;
    const struct als__binding *b = als__live_binding(s);
    return b ? (struct als_cancel *)b->value : NULL;
}

/* The scope captured in frame `f` (borrowed: valid while f is held), or
 * NULL: a task's scope, checked at dequeue before entering its frame. */
static inline struct als_cancel *als__cancel_of_frame(const struct als_snapshot *f)
{
    const als_t *s = atomic_load_explicit(&als__scope_store, memory_order_acquire);
    if (ALS__LIKELY(!s) || s->index >= f->n)
        return NULL;
    const struct als__binding *b = f->slots[s->index];
    if (!b || b->epoch != atomic_load_explicit(s->epoch, memory_order_relaxed))
        return NULL;
    return (struct als_cancel *)b->value;
}
/* Whether `c` is cancelled or past its deadline (false for NULL). No lock;
 * reads the clock only when c has a deadline. */
bool als__cancel_is_cancelled(const struct als_cancel *c);

/* Whether the scope captured in frame `f` is cancelled (false: none). */
static inline bool als__frame_cancelled(const struct als_snapshot *f)
{
    const struct als_cancel *c = als__cancel_of_frame(f);
    return c && als__cancel_is_cancelled(c);
}
/* c's deadline: absolute CLOCK_MONOTONIC ns (the clock of als__now_ns in
 * lib/pool/pool.h), INT64_MAX for none or NULL. Never later than its
 * parent's. For a wait inside a scope: wake at min(own timeout, this). */
int64_t als__cancel_deadline(const struct als_cancel *c);
/* Registers h to run h->fn(h->arg) once when c is cancelled (on the
 * cancelling thread or the deadline thread), h->id = 0. Returns false,
 * registering nothing, if c is cancelled (or past its deadline) already:
 * the caller then acts at once itself. Hold a reference on c while h is
 * registered. */
bool als__cancel_hook_add(struct als_cancel *c, struct als__cancel_hook *h);
/* Unregisters h: true if it was removed before it ran; false if it ran or
 * is running, and then, unless called from inside h->fn itself, returns
 * only once h->fn has returned (h's storage is free for reuse). So never
 * call it holding a lock that h->fn takes. Hooks run without cancel.c's
 * lock held, but registration takes it (one process-wide mutex): register
 * for what must be woken or dropped promptly (waiters, delayed tasks),
 * not for every queued task, which checks its frame's scope at dequeue. */
bool als__cancel_hook_remove(struct als_cancel *c, struct als__cancel_hook *h);
/* Captures the current context with `c` bound as its scope (a group's
 * tasks: their frame, one reference for the caller), or NULL if
 * allocation fails. Same as a capture inside als_cancel_run(c, ...). */
struct als_snapshot *als__cancel_capture(struct als_cancel *c);
#ifdef ALS_FAULT_INJECTION
/* Test builds only: scopes alive now, and deadlines pending in the heap
 * (which first waits until the deadline thread has run the callbacks and
 * dropped the references of what it cancelled). */
long als__test_cancel_live(void);
long als__test_cancel_timers(void);
#endif

/* ---- tracestate.c, baggage.c, propagator.c (the wire formats) ---------- */
/* A `tracestate` list being read: slices of its members, which point into
 * the fields given to als__ts_add (they must outlive the list). */
struct als__ts {
    const char *p[32 + 1];        /* "key=value", byte-exact */
    size_t len[32 + 1];
    size_t klen[32 + 1];
    size_t n;
    bool bad;                     /* a malformed member or a 33rd one */
};
bool als__ts_key_ok(const char *k, size_t n);
bool als__ts_value_ok(const char *v, size_t n);
void als__ts_init(struct als__ts *l);
/* Adds the members of one field value (fields combine in order). */
void als__ts_add(struct als__ts *l, const char *s, size_t len);
/* Writes the canonical, truncated list to out (0), or "" (ALS_EINVAL). */
int als__ts_finish(const struct als__ts *l, char *out);
/* als_run of a value the store owns (handed over whatever happens):
 * 0 when fn ran, its result in *result; ALS_ENOMEM when it could not. */
int als__run_owned(als_t *store, void *owned, als_fn fn, void *arg, void **result);

#endif /* ALS_INTERNAL_H */
