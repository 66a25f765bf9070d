/* Cancellation scopes and deadlines (issue 15), carried by the context.
 *
 * How a scope travels. The current scope is the value of one store of the
 * library's own (`als__scope_store`, created at the first als_cancel_new and
 * never freed or disabled), bound by als_cancel_run through als_run. So
 * every capture (tasks of every kind, snapshots, bound functions,
 * resources, threads) carries it with no code of its own, and each binding
 * holds one reference: the store's destroy callback releases it when the
 * last frame, task or scope holding the binding lets go. The store is never
 * handed out, so users cannot disable, free or read it.
 *
 * The tree. A scope knows its parent and its live children (a list under
 * `lock`). A child holds no reference on its parent: a released parent
 * unlinks its children, which keep their own flag and deadline (the
 * deadline was min(own, parent's) at creation, and each scope with a
 * deadline has its own timer entry). als_cancel sets `cancelled` on the
 * scope and every live descendant under `lock` in one walk, so "cancelled
 * implies every live descendant cancelled" holds whenever `lock` is free,
 * and a child created under a cancelled parent is born cancelled. Readers
 * (als_cancelled) look at their own scope's flag only: no walk, no lock.
 *
 * Callbacks (public ones and the library's internal hooks) are a circular
 * list per scope under `lock`. The thread that sets a scope's flag takes a
 * reference on it and, once `lock` is dropped, runs its callbacks one at a
 * time; `running` names the one in progress so that removing it can wait.
 *
 * Deadlines. One process-wide thread (deadline.c) keeps every pending
 * deadline in a binary min-heap and hands each expired scope back here
 * (expire). Cold paths (new, cancel, release, on/off, the timer) share one
 * mutex, `lock` (als__cancel_lock, defined in deadline.c); the hot path
 * (als_cancelled) takes none.
 *
 * Uses: deadline.c, and the context layer below. */
#include "cancel.h"
#include "tsan.h"

#include <assert.h>
#include <pthread.h>
#include <time.h>

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* The store whose value is the current scope. Acquire/release: whoever
 * sees the pointer sees the store's fields. A context can only hold a
 * binding of it if it was created before, so NULL means "no scope". */
_Atomic(als_t *) als__scope_store; /* internal.h */

static _Atomic int64_t next_id = 1;

#ifdef ALS_FAULT_INJECTION
static _Atomic long live_scopes; /* for als__test_cancel_live */

long als__test_cancel_live(void)
{
    return atomic_load(&live_scopes);
}
#define COUNT_LIVE(d) atomic_fetch_add_explicit(&live_scopes, (d), memory_order_relaxed)
#else
#define COUNT_LIVE(d) ((void)0)
#endif

/* How far CLOCK_MONOTONIC_COARSE (the time of the last tick: a few ns to
 * read, where CLOCK_MONOTONIC costs 20 to 60 ns under a hypervisor's
 * clock) may lag CLOCK_MONOTONIC: its resolution. INT64_MAX: no coarse
 * clock, always read the precise one. Set by init(), before any scope
 * exists. */
static int64_t coarse_lag = INT64_MAX;

/* Whether `deadline` has passed. The coarse clock answers "not yet" for
 * all but the last tick or so before the deadline. Should it ever lag
 * more, only this poll is late: the deadline thread sets the flag. */
static bool past(int64_t deadline)
{
    if (coarse_lag != INT64_MAX && als__deadline_clock(CLOCK_MONOTONIC_COARSE) < deadline - coarse_lag)
        return false;
    return als__deadline_now() >= deadline;
}

/* ---- references -------------------------------------------------------- */

als_cancel_t *als_cancel_retain(als_cancel_t *c)
{
    /* Relaxed: the caller already holds a reference. */
    if (c)
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

/* A reference on `c` unless its last one is gone (it is being freed and
 * waits for `lock`, which the caller holds). */
static bool try_retain(struct als_cancel *c)
{
    uint32_t r = atomic_load_explicit(&c->refs, memory_order_relaxed);
    while (r != 0)
        if (atomic_compare_exchange_weak_explicit(&c->refs, &r, r + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    return false;
}

/* Live scopes that are cancelled or have a deadline: while there are none,
 * no context can be cancelled, and als_cancelled() answers from this one
 * load (no context lookup). A scope counts from its creation (deadline,
 * born cancelled) or its cancellation until it is freed; its flag and its
 * deadline never change back, so each scope adds and removes one at most.
 * Ordering: the count goes up before the flag is set (release), so a
 * reader that can see the flag through any synchronisation with the
 * canceller sees the count too (acquire); and the count cannot fall to 0
 * while the reader's own scope, which its context holds, is alive. */
static _Atomic uint32_t cancellable;

static bool counts_cancellable(const struct als_cancel *c)
{
    return c->deadline != INT64_MAX || atomic_load_explicit(&c->cancelled, memory_order_relaxed);
}

void als_cancel_release(als_cancel_t *c)
{
    if (!c)
        return;
    /* acq_rel, as every reference count here: the last releaser sees
     * every holder's accesses before freeing. */
    als__hb_release(&c->refs);
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    als__hb_acquire(&c->refs);
    pthread_mutex_lock(&als__cancel_lock);
    if (c->prev)
        c->prev->next = c->next;
    else if (c->parent)
        c->parent->child = c->next;
    if (c->next)
        c->next->prev = c->prev;
    for (struct als_cancel *k = c->child, *next; k; k = next) {
        next = k->next; /* orphans keep their flag and their deadline */
        k->parent = k->next = k->prev = NULL;
    }
    if (c->heap_at)
        als__deadline_remove(c);
    pthread_mutex_unlock(&als__cancel_lock);
    /* Callbacks that never ran: public ones are ours to free; internal
     * hooks are removed by their owners, who hold a reference meanwhile. */
    for (struct als__cancel_hook *h = c->hooks.next, *next; h != &c->hooks; h = next) {
        next = h->next;
        if (h->id > 0)
            als__free(h);
    }
    if (counts_cancellable(c)) {
        uint32_t was = atomic_fetch_sub_explicit(&cancellable, 1, memory_order_relaxed);
        assert(was > 0); /* each scope uncounts only what it counted */
        (void)was;
    }
    als__free(c);
    COUNT_LIVE(-1);
}

/* ---- the scope store --------------------------------------------------- */

static void release_value(void *c)
{
    als_cancel_release(c);
}

/* The scope store, created on first use; NULL if that allocation fails. */
static als_t *store_get(void)
{
    als_t *s = atomic_load_explicit(&als__scope_store, memory_order_acquire);
    if (ALS__LIKELY(s))
        return s;
    pthread_mutex_lock(&als__cancel_lock);
    s = atomic_load_explicit(&als__scope_store, memory_order_relaxed);
    if (!s) {
        s = als_new(&(als_options){.name = "als.cancel", .destroy = release_value});
        atomic_store_explicit(&als__scope_store, s, memory_order_release);
    }
    pthread_mutex_unlock(&als__cancel_lock);
    return s;
}

/* als__cancel_current_scope, als__cancel_of_frame: inline in internal.h. */

bool als__cancel_is_cancelled(const struct als_cancel *c)
{
    if (!c)
        return false;
    if (atomic_load_explicit(&c->cancelled, memory_order_acquire)) {
        als__hb_acquire(&c->cancelled);
        return true;
    }
    /* The clock is read only for a scope with a deadline (a vDSO call,
     * not a system call). */
    return c->deadline != INT64_MAX && past(c->deadline);
}

int64_t als__cancel_deadline(const struct als_cancel *c)
{
    return c ? c->deadline : INT64_MAX;
}

int als_cancelled(void)
{
    if (ALS__LIKELY(atomic_load_explicit(&cancellable, memory_order_acquire) == 0))
        return 0;
    const struct als_cancel *c = als__cancel_current_scope();
    return ALS__UNLIKELY(c != NULL) && als__cancel_is_cancelled(c);
}

int64_t als_deadline_remaining(void)
{
    const struct als_cancel *c = als__cancel_current_scope();
    if (!c)
        return INT64_MAX;
    if (atomic_load_explicit(&c->cancelled, memory_order_acquire))
        return 0;
    if (c->deadline == INT64_MAX)
        return INT64_MAX;
    int64_t left = c->deadline - als__deadline_now();
    return left > 0 ? left : 0;
}

als_cancel_t *als_cancel_current(void)
{
    return als_cancel_retain(als__cancel_current_scope());
}

void *als_cancel_run(als_cancel_t *c, als_fn fn, void *arg)
{
    if (!c || !fn)
        return NULL;
    /* A scope exists, so the store does. The binding owns the new
     * reference: released by the store's destroy when the binding goes
     * (at once if als_run fails). */
    return als_run(atomic_load_explicit(&als__scope_store, memory_order_acquire),
                   als_cancel_retain(c), fn, arg);
}

static void *capture_fn(void *unused)
{
    (void)unused;
    return als__capture();
}

struct als_snapshot *als__cancel_capture(struct als_cancel *c)
{
    return als_cancel_run(c, capture_fn, NULL);
}

/* ---- cancelling (under lock, then outside) ----------------------------- */

/* Scopes whose callbacks a canceller runs once `lock` is dropped, in the
 * order they were cancelled (ancestors first), each with a reference. */
struct runq {
    struct als_cancel *head, **tail;
};

static void mark(struct als_cancel *c, struct runq *q)
{
    if (c->deadline == INT64_MAX) /* else counted since its creation */
        atomic_fetch_add_explicit(&cancellable, 1, memory_order_release);
    als__hb_release(&c->cancelled);
    atomic_store_explicit(&c->cancelled, true, memory_order_release);
    if (c->heap_at)
        als__deadline_remove(c); /* its deadline no longer matters */
    if (c->hooks.next != &c->hooks && try_retain(c)) {
        c->runq = NULL;
        *q->tail = c;
        q->tail = &c->runq;
    }
}

/* Cancels `root` and its live descendants that are not cancelled yet (a
 * cancelled scope's subtree already is). Walks the tree through its links,
 * without a stack. */
static void mark_tree(struct als_cancel *root, struct runq *q)
{
    if (atomic_load_explicit(&root->cancelled, memory_order_relaxed))
        return;
    mark(root, q);
    struct als_cancel *n = root->child;
    while (n) {
        if (!atomic_load_explicit(&n->cancelled, memory_order_relaxed)) {
            mark(n, q);
            if (n->child) {
                n = n->child;
                continue;
            }
        }
        while (!n->next && n->parent != root)
            n = n->parent;
        n = n->next;
    }
}

/* Runs c's callbacks one at a time on this thread, then drops the
 * reference mark() took. */
static void run_hooks(struct als_cancel *c)
{
    pthread_t self = pthread_self();
    pthread_mutex_lock(&als__cancel_lock);
    for (struct als__cancel_hook *h; (h = c->hooks.next) != &c->hooks;) {
        h->prev->next = h->next;
        h->next->prev = h->prev;
        h->next = h->prev = NULL;
        /* Read before the call: an internal hook's owner may reuse its
         * storage as soon as fn has run. */
        void (*fn)(void *) = h->fn;
        void *arg = h->arg;
        int64_t id = h->id;
        c->running = h;
        c->running_id = id;
        c->run_thread = self;
        pthread_mutex_unlock(&als__cancel_lock);
        fn(arg);
        if (id > 0)
            als__free(h); /* a public callback's record is ours */
        pthread_mutex_lock(&als__cancel_lock);
        c->running = NULL;
        c->running_id = 0;
        pthread_cond_broadcast(&als__cancel_done_cv);
    }
    pthread_mutex_unlock(&als__cancel_lock);
}

static void run_queue(struct runq *q)
{
    for (struct als_cancel *c = q->head, *next; c; c = next) {
        next = c->runq;
        run_hooks(c);
        als_cancel_release(c);
    }
}

int als_cancel(als_cancel_t *c)
{
    if (!c)
        return ALS_EINVAL;
    /* Acquire: a canceller that saw the flag set need not do anything,
     * the whole subtree was marked with it. */
    if (atomic_load_explicit(&c->cancelled, memory_order_acquire))
        return 0;
    struct runq q = {NULL, &q.head};
    pthread_mutex_lock(&als__cancel_lock);
    mark_tree(c, &q);
    pthread_mutex_unlock(&als__cancel_lock);
    run_queue(&q);
    return 0;
}

/* The deadline thread's call for an expired scope `top`, under lock; it
 * returns with lock held (deadline.c). */
static void expire(struct als_cancel *top)
{
    struct runq q = {NULL, &q.head};
    mark_tree(top, &q);
    pthread_mutex_unlock(&als__cancel_lock);
    run_queue(&q);
    pthread_mutex_lock(&als__cancel_lock);
}

static void init(void)
{
    struct timespec res;
    if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0 && res.tv_sec == 0)
        coarse_lag = res.tv_nsec;
    als__deadline_init(expire);
}

/* ---- public API -------------------------------------------------------- */

als_cancel_t *als_cancel_new(int64_t timeout_ns)
{
    pthread_once(&init_once, init);
    if (!store_get())
        return NULL;
    struct als_cancel *c = als__calloc(1, sizeof *c);
    if (!c)
        return NULL;
    atomic_init(&c->refs, 1);
    c->hooks.next = c->hooks.prev = &c->hooks;
    int64_t now = als__deadline_now();
    int64_t deadline = INT64_MAX; /* a timeout too far away is none */
    if (timeout_ns >= 0 && timeout_ns < INT64_MAX - now)
        deadline = now + timeout_ns;
    struct als_cancel *parent = als__cancel_current_scope();

    pthread_mutex_lock(&als__cancel_lock);
    if (parent && parent->deadline < deadline)
        deadline = parent->deadline; /* never later than the parent's */
    c->deadline = deadline;
    bool born_cancelled = (parent && atomic_load_explicit(&parent->cancelled,
                                                          memory_order_relaxed)) ||
                          deadline <= now;
    if (born_cancelled || deadline != INT64_MAX)
        atomic_fetch_add_explicit(&cancellable, 1, memory_order_relaxed);
    if (born_cancelled) {
        atomic_store_explicit(&c->cancelled, true, memory_order_relaxed);
    } else {
        if (deadline != INT64_MAX && als__deadline_add(c) != 0) {
            atomic_fetch_sub_explicit(&cancellable, 1, memory_order_relaxed);
            pthread_mutex_unlock(&als__cancel_lock);
            als__free(c);
            return NULL;
        }
        if (parent) {
            c->parent = parent;
            c->next = parent->child;
            if (c->next)
                c->next->prev = c;
            parent->child = c;
        }
    }
    pthread_mutex_unlock(&als__cancel_lock);
    COUNT_LIVE(1);
    return c;
}

bool als__cancel_hook_add(struct als_cancel *c, struct als__cancel_hook *h)
{
    pthread_mutex_lock(&als__cancel_lock);
    bool add = !als__cancel_is_cancelled(c);
    if (add) {
        h->next = &c->hooks;
        h->prev = c->hooks.prev;
        h->prev->next = h;
        c->hooks.prev = h;
    }
    pthread_mutex_unlock(&als__cancel_lock);
    return add;
}

/* Waits, under lock, until the callback `id` of c (or hook `h`) is no
 * longer running, unless this thread is the one running it. */
static void wait_not_running(struct als_cancel *c, const struct als__cancel_hook *h, int64_t id)
{
    while ((h ? c->running == h : c->running_id == id) &&
           !pthread_equal(c->run_thread, pthread_self()))
        pthread_cond_wait(&als__cancel_done_cv, &als__cancel_lock);
}

bool als__cancel_hook_remove(struct als_cancel *c, struct als__cancel_hook *h)
{
    pthread_mutex_lock(&als__cancel_lock);
    bool removed = h->next != NULL;
    if (removed) {
        h->prev->next = h->next;
        h->next->prev = h->prev;
        h->next = h->prev = NULL;
    } else {
        wait_not_running(c, h, 0);
    }
    pthread_mutex_unlock(&als__cancel_lock);
    return removed;
}

int64_t als_cancel_on(als_cancel_t *c, void (*fn)(void *arg), void *arg)
{
    if (!c || !fn)
        return ALS_EINVAL;
    int64_t id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
    if (!als__cancel_is_cancelled(c)) {
        struct als__cancel_hook *h = als__malloc(sizeof *h);
        if (!h)
            return ALS_ENOMEM;
        *h = (struct als__cancel_hook){.fn = fn, .arg = arg, .id = id};
        if (als__cancel_hook_add(c, h))
            return id;
        als__free(h); /* cancelled meanwhile */
    }
    fn(arg);
    return id;
}

int als_cancel_off(als_cancel_t *c, int64_t id)
{
    if (!c || id <= 0)
        return ALS_EINVAL;
    struct als__cancel_hook *found = NULL;
    pthread_mutex_lock(&als__cancel_lock);
    for (struct als__cancel_hook *h = c->hooks.next; h != &c->hooks; h = h->next) {
        if (h->id == id) {
            h->prev->next = h->next;
            h->next->prev = h->prev;
            found = h;
            break;
        }
    }
    if (!found)
        wait_not_running(c, NULL, id);
    pthread_mutex_unlock(&als__cancel_lock);
    als__free(found);
    return found ? 0 : ALS_EINVAL;
}
