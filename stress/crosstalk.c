/* stress/crosstalk.c: no task ever sees another's context.
 *
 * Several submitter threads (made with als_thread_create, so they start in
 * main's context) each bind values unique to them in four shared stores and
 * run a random mix of every context operation: run, exit, enter_with,
 * disable and rebind (of a store private to the thread, so that threads do
 * not disturb each other's expectations), snapshots entered later or
 * elsewhere (snapshot_run, explicit scopes, handed to tasks), bound
 * functions, resources, threads, and every way of making a task: submit,
 * detached, delayed, futures with continuations, groups, and tasks that
 * submit tasks. Each submitter keeps a model of what its context holds;
 * every task and every scope checks that it sees exactly the values of the
 * context it was made in, and its async ids: a task's trigger id is the
 * execution id of whoever submitted it, its own id is fresh (greater).
 *
 * The private store's disable races the tasks that read it; each read is
 * judged by what the disabling thread had done around it:
 *   - a disable that had returned before the task read (seen through an
 *     acquire load of `dis_done`) means the store must read as unbound;
 *   - a disable that had not even begun by the time of the read means the
 *     value must be there. The disabler bumps `dis_begun` then issues a
 *     release fence before als_disable's store; the reader issues an acquire
 *     fence after als_get. If als_get saw the disable's epoch, the fences
 *     synchronise and the reader sees the bump;
 *   - in between, either is right.
 * Tasks submitted by a worker (nested, continuations) only get the first
 * rule: their capture on the worker is not fenced. ThreadSanitizer does not
 * model fences (gcc refuses them under -fsanitize=thread), so TSan builds
 * check the first rule only.
 *
 * Figures: tasks checked, mismatches (must be 0), operations by kind. */
#include "stress.h"

#include "als.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NSHARED 4          /* shared stores; index NSHARED names the private one */
#define MAX_DEPTH 4        /* nesting of scopes on a submitter */
#define TASK_DEPTH 3       /* tasks submitted by tasks */
#define MAX_OUTSTANDING 384 /* per submitter, before it waits */

#if defined(__SANITIZE_THREAD__)
#define FENCES 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FENCES 0
#endif
#endif
#ifndef FENCES
#define FENCES 1
#endif

#define SHARED_DEF(s) ((void *)(uintptr_t)(0x5000u + (unsigned)(s)))
#define PRIV_DEF(i) ((void *)(uintptr_t)(0x6000u + (unsigned)(i)))
#define MAIN_VALUE(s) ((void *)(((uintptr_t)0xAAu << 40) | (uintptr_t)(s)))

static als_t *shared[NSHARED];
static als_pool_t *pool;

static _Atomic uint64_t tasks_submitted, tasks_checked, contexts_checked, mismatches;
static _Atomic uint64_t task_values; /* values bound by tasks */

enum op {
    OP_RUN, OP_EXIT, OP_ENTER, OP_DISABLE, OP_SNAPSHOT_RUN, OP_SCOPE,
    OP_SNAPSHOT_TASK, OP_BIND, OP_RESOURCE, OP_THREAD, OP_SUBMIT, OP_DETACHED,
    OP_AFTER, OP_FUTURE, OP_GROUP, OP_COUNT
};
static const char *const op_names[OP_COUNT] = {
    "run", "exit", "enter_with", "disable+rebind", "snapshot_run", "scope_enter",
    "snapshot to task", "bind", "resource", "thread", "submit", "detached",
    "submit_after", "future+then", "group",
};
static _Atomic uint64_t op_counts[OP_COUNT];

/* What a context holds, as its maker knows it. */
struct model {
    void *val[NSHARED];
    void *pval;            /* the private store's value, if pbound */
    uint64_t pgen;         /* dis_done when that value was bound */
    bool pbound;
    uint64_t exec, trigger;
};

/* A submitter thread. */
struct sub {
    int index;
    struct rng rng;
    als_t *priv;
    _Atomic uint64_t dis_begun, dis_done;
    uint64_t seq;
    struct waitcount pending; /* its tasks not finished yet */
    pthread_t thread;
};

/* What a task (or a scope entered elsewhere) must see. */
struct expect {
    struct model m;        /* m.trigger: the expected trigger id */
    struct sub *owner;
    bool strict;           /* made on the owner thread: all three rules */
    int depth;
    /* kind-specific */
    als_snapshot_t *snap;
    als_bound_t *bound;
    struct group_rec *group;
    bool add;              /* a group task: add a task to the group */
    int ran;               /* written by a group task, read after the wait */
};

/* ---- checking ----------------------------------------------------------- */

enum ids { IDS_NONE, IDS_EXACT, IDS_TASK };

static void *value_of(const struct model *m, int s)
{
    return m->val[s];
}

/* Whether the private store's read `v` fits the model (see the top). */
static bool private_ok(const struct model *m, const struct sub *sb, bool strict, void **want)
{
    uint64_t done = atomic_load_explicit(&sb->dis_done, memory_order_acquire);
    void *v = als_get(sb->priv);
#if FENCES
    atomic_thread_fence(memory_order_acquire);
#else
    /* On the owner's own thread nothing races: the rule holds unfenced. */
    if (!pthread_equal(pthread_self(), sb->thread))
        strict = false;
#endif
    uint64_t begun = atomic_load_explicit(&sb->dis_begun, memory_order_relaxed);
    void *def = PRIV_DEF(sb->index);
    *want = m->pbound ? m->pval : def;
    if (!m->pbound || done > m->pgen)
        return v == def;
    if (strict && begun == m->pgen)
        return v == m->pval;
    return v == m->pval || v == def;
}

/* Checks the calling thread's context against `m`: one check, counted in
 * contexts_checked, with every difference in its message. */
static bool verify(const struct model *m, struct sub *sb, bool strict, enum ids ids,
                   const char *where)
{
    char diff[400];
    size_t len = 0;
    diff[0] = '\0';
    for (int s = 0; s < NSHARED; s++) {
        void *v = als_get(shared[s]);
        if (v != value_of(m, s))
            len += (size_t)snprintf(diff + len, sizeof diff - len, " store%d=%p want %p", s, v,
                                    value_of(m, s));
    }
    if (sb) {
        void *want;
        if (!private_ok(m, sb, strict, &want) && len < sizeof diff)
            len += (size_t)snprintf(diff + len, sizeof diff - len, " private=%p want %p",
                                    als_get(sb->priv), want);
    }
    uint64_t exec = als_execution_async_id(), trig = als_trigger_async_id();
    bool ids_ok = true;
    if (ids == IDS_EXACT)
        ids_ok = exec == m->exec && trig == m->trigger;
    else if (ids == IDS_TASK)
        ids_ok = trig == m->trigger && exec > 1 && exec > trig && als_execution_async_id() == exec;
    if (!ids_ok && len < sizeof diff)
        len += (size_t)snprintf(diff + len, sizeof diff - len,
                                " ids exec=%" PRIu64 " trigger=%" PRIu64 " want exec=%s%" PRIu64
                                " trigger=%" PRIu64,
                                exec, trig, ids == IDS_TASK ? ">" : "",
                                ids == IDS_TASK ? m->trigger : m->exec, m->trigger);
    atomic_fetch_add_explicit(&contexts_checked, 1, memory_order_relaxed);
    bool ok = len == 0;
    if (!ok)
        atomic_fetch_add_explicit(&mismatches, 1, memory_order_relaxed);
    return CHECK(ok, "%s (submitter %d):%s", where, sb ? sb->index : -1, diff);
}

/* ---- values and models --------------------------------------------------- */

static void *new_value(struct sub *sb, int s)
{
    if (rng_one_in(&sb->rng, 16))
        return NULL; /* NULL is a value like any other, not "unbound" */
    return (void *)(((uintptr_t)(sb->index + 1) << 48) | ((uintptr_t)(s + 1) << 40) | ++sb->seq);
}

static void *task_value(int s)
{
    uint64_t n = atomic_fetch_add_explicit(&task_values, 1, memory_order_relaxed);
    return (void *)(((uintptr_t)0xBBu << 48) | ((uintptr_t)(s + 1) << 40) | (n & 0xffffffffffu));
}

/* On the owner: a private binding made before the latest disable is dead
 * for everyone, so the model says unbound. */
static struct model live(const struct model *m, const struct sub *sb)
{
    struct model r = *m;
    if (r.pbound && r.pgen != atomic_load_explicit(&sb->dis_done, memory_order_relaxed))
        r.pbound = false;
    return r;
}

static struct model empty_model(const struct sub *sb)
{
    struct model m = { .pbound = false };
    for (int s = 0; s < NSHARED; s++)
        m.val[s] = SHARED_DEF(s);
    (void)sb;
    return m;
}

static als_t *store_of(struct sub *sb, int s)
{
    return s == NSHARED ? sb->priv : shared[s];
}

static void model_set(struct model *m, struct sub *sb, int s, void *v)
{
    if (s == NSHARED) {
        m->pval = v;
        m->pbound = true;
        m->pgen = atomic_load_explicit(&sb->dis_done, memory_order_relaxed);
    } else {
        m->val[s] = v;
    }
}

static void model_unset(struct model *m, int s)
{
    if (s == NSHARED)
        m->pbound = false;
    else
        m->val[s] = SHARED_DEF(s);
}

/* An expectation for a task made now on the owner thread. */
static struct expect *expect_new(struct sub *sb, const struct model *m, int depth)
{
    struct expect *e = calloc(1, sizeof *e);
    if (!e) {
        fprintf(stderr, "crosstalk: out of memory\n");
        abort();
    }
    e->m = live(m, sb);
    e->m.trigger = m->exec; /* the task's trigger is our execution id */
    e->owner = sb;
    e->strict = true;
    e->depth = depth;
    return e;
}

/* ---- tasks ---------------------------------------------------------------- */

/* What a task submitted by the task of `e` must see: the same values (the
 * worker runs in e's context), triggered by this task. Made on a worker:
 * only the first rule for the private store (see the top). */
static struct expect *expect_child(const struct expect *e, int depth)
{
    struct expect *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->m = e->m;
    c->m.trigger = als_execution_async_id();
    c->owner = e->owner;
    c->strict = false;
    c->depth = depth;
    return c;
}

struct inner {
    struct model m;
    struct sub *sb;
    bool strict;
};

static void *inner_check(void *arg)
{
    struct inner *in = arg;
    verify(&in->m, in->sb, in->strict, IDS_NONE, "task: inside its own run");
    return arg;
}

static int task_fn(void *arg);

/* Throttling: a burst of children, enough for a backlog of over 64 tasks
 * per worker, makes the pool run some of them inline, inside als_submit on
 * this thread (and, with the ring full, the BLOCK policy runs them inline
 * too). Each child checks its context as any task does; after each submit
 * this task checks its own: what an inline child bound ended with it. */
#define BURST_ONE_IN 128
static unsigned burst_size;            /* 64 per worker, and 64 more */
static _Thread_local int in_submit;    /* a task here is inside als_submit */
static _Atomic uint64_t inline_runs;   /* tasks that ran inside a submit */

static void burst(struct expect *e)
{
    struct sub *sb = e->owner;
    for (unsigned k = 0; k < burst_size; k++) {
        struct expect *c = expect_child(e, TASK_DEPTH); /* no further bursts */
        waitcount_add(&sb->pending, 1);
        atomic_fetch_add_explicit(&tasks_submitted, 1, memory_order_relaxed);
        int was = in_submit;
        in_submit = 1;
        int rc = als_submit(pool, task_fn, c);
        in_submit = was;
        if (!CHECK(rc == 0, "burst als_submit: %s", als_strerror(rc))) {
            free(c);
            waitcount_done(&sb->pending);
            return;
        }
        verify(&e->m, sb, e->strict, IDS_NONE, "task: after a burst submit");
    }
}

/* What every task does after its first check: context operations on the
 * worker that must stay inside the task, and tasks of its own. */
static void task_body(struct expect *e)
{
    struct sub *sb = e->owner;
    uint64_t n = atomic_fetch_add_explicit(&task_values, 1, memory_order_relaxed);
    struct rng r = rng_for(n ^ 0x7a5c);
    if (rng_one_in(&r, 2)) {
        int s = (int)rng_below(&r, NSHARED);
        struct inner in = { .m = e->m, .sb = sb, .strict = e->strict };
        in.m.val[s] = task_value(s);
        CHECK(als_run(shared[s], in.m.val[s], inner_check, &in) == &in, "task: als_run result");
        verify(&e->m, sb, e->strict, IDS_NONE, "task: after its own run");
    }
    if (rng_one_in(&r, 4)) {
        /* Bound for the rest of the task only: the next task on this
         * worker must not see it (that task's own check would fail). */
        int s = (int)rng_below(&r, NSHARED);
        void *v = task_value(s);
        CHECK(als_enter_with(shared[s], v) == 0, "task: als_enter_with");
        e->m.val[s] = v;
        verify(&e->m, sb, e->strict, IDS_NONE, "task: after enter_with");
    }
    if (rng_one_in(&r, 8)) {
        als_resource_t *res = als_resource_new("task");
        CHECK(res && als_resource_trigger_async_id(res) == als_execution_async_id() &&
                  als_resource_async_id(res) > als_execution_async_id(),
              "task: resource ids");
        als_resource_free(res);
    }
    if (e->depth < TASK_DEPTH && rng_one_in(&r, 3)) {
        struct expect *c = expect_child(e, e->depth + 1);
        waitcount_add(&sb->pending, 1);
        atomic_fetch_add_explicit(&tasks_submitted, 1, memory_order_relaxed);
        int rc = als_submit(pool, task_fn, c);
        if (!CHECK(rc == 0, "nested als_submit: %s", als_strerror(rc))) {
            free(c);
            waitcount_done(&sb->pending);
        }
    }
    if (e->depth < TASK_DEPTH && rng_one_in(&r, BURST_ONE_IN))
        burst(e);
}

static void task_end(struct expect *e)
{
    atomic_fetch_add_explicit(&tasks_checked, 1, memory_order_relaxed);
    struct sub *sb = e->owner;
    free(e);
    waitcount_done(&sb->pending);
}

struct ids_seen {
    uint64_t exec, trigger;
};

static void *record_ids(void *arg)
{
    struct ids_seen *ids = arg;
    ids->exec = als_execution_async_id();
    ids->trigger = als_trigger_async_id();
    return arg;
}

/* A task's id is drawn when first asked for: what the task creates before
 * asking must still get a later id than the task's, and name the task as
 * its trigger. */
static void created_first(const struct expect *e)
{
    uint64_t n = atomic_fetch_add_explicit(&task_values, 1, memory_order_relaxed);
    struct rng r = rng_for(n ^ 0x1d5);
    if (rng_one_in(&r, 48)) {
        struct ids_seen child = { 0 };
        pthread_t t;
        int rc = als_thread_create(&t, NULL, record_ids, &child);
        if (CHECK(rc == 0, "als_thread_create in a task: %s", als_strerror(rc))) {
            pthread_join(t, NULL);
            uint64_t me = als_execution_async_id();
            CHECK(child.trigger == me && child.exec > me,
                  "thread made by a task before it asked for its id: exec %" PRIu64
                  " trigger %" PRIu64 ", the task's id %" PRIu64,
                  child.exec, child.trigger, me);
        }
    } else if (rng_one_in(&r, 16)) {
        als_resource_t *res = als_resource_new("first");
        if (CHECK(res, "als_resource_new in a task")) {
            uint64_t me = als_execution_async_id();
            CHECK(als_resource_trigger_async_id(res) == me && als_resource_async_id(res) > me,
                  "resource made by a task before it asked for its id: id %" PRIu64
                  " trigger %" PRIu64 ", the task's id %" PRIu64,
                  als_resource_async_id(res), als_resource_trigger_async_id(res), me);
            als_resource_free(res);
        }
    }
    (void)e;
}

static int task_fn(void *arg)
{
    struct expect *e = arg;
    if (in_submit)
        atomic_fetch_add_explicit(&inline_runs, 1, memory_order_relaxed);
    created_first(e);
    verify(&e->m, e->owner, e->strict, IDS_TASK, "task");
    task_body(e);
    task_end(e);
    return 0;
}

static int detached_fn(void *arg)
{
    struct expect *e = arg;
    struct model m = empty_model(e->owner);
    m.trigger = 0;
    verify(&m, e->owner, true, IDS_TASK, "detached task");
    task_end(e);
    return 0;
}

/* A snapshot captured on the submitter, entered on a worker. */
static void *snapshot_check(void *arg)
{
    struct expect *e = arg;
    verify(&e->m, e->owner, e->strict, IDS_NONE, "snapshot entered by a task");
    return arg;
}

static int snapshot_task(void *arg)
{
    struct expect *e = arg;
    CHECK(als_snapshot_run(e->snap, snapshot_check, e) == e, "task: als_snapshot_run result");
    als_snapshot_release(e->snap);
    task_end(e);
    return 0;
}

/* A bound function (plain or resource-bound) called on a worker. */
static void *bound_check(void *arg)
{
    struct expect *e = arg;
    /* Plain bound functions keep the caller's ids: only values count. */
    verify(&e->m, e->owner, e->strict, e->m.exec ? IDS_EXACT : IDS_NONE, "bound function");
    return arg;
}

static int bound_task(void *arg)
{
    struct expect *e = arg;
    CHECK(als_bound_call(e->bound, e) == e, "task: als_bound_call result");
    als_bound_free(e->bound);
    task_end(e);
    return 0;
}

/* ---- futures --------------------------------------------------------------- */

struct fut_rec {
    _Atomic int refs;      /* submitter, source task, continuation */
    struct expect src, cont;
    uint64_t src_exec;     /* written by the source, read by the continuation */
    uint64_t then_exec;    /* the execution id of the als_future_then caller */
};

static void fut_unref(struct fut_rec *f)
{
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1)
        free(f);
}

static void *fut_fn(void *arg)
{
    struct fut_rec *f = arg;
    verify(&f->src.m, f->src.owner, true, IDS_TASK, "future");
    f->src_exec = als_execution_async_id();
    atomic_fetch_add_explicit(&tasks_checked, 1, memory_order_relaxed);
    struct sub *sb = f->src.owner;
    fut_unref(f);
    waitcount_done(&sb->pending);
    return arg;
}

static void *cont_fn(void *arg)
{
    struct fut_rec *f = arg;
    /* The continuation runs in the context of the als_future_then call.
     * Its trigger id: the contract names "the submitter", which for a
     * continuation is whoever scheduled it; the library gives the
     * then-caller when the source had completed, else the source task's
     * execution id (it submits the continuation). Both are accepted. */
    uint64_t trig = als_trigger_async_id();
    uint64_t want = trig == f->src_exec ? f->src_exec : f->then_exec;
    struct model m = f->cont.m;
    m.trigger = want;
    verify(&m, f->cont.owner, false, IDS_TASK, "continuation");
    atomic_fetch_add_explicit(&tasks_checked, 1, memory_order_relaxed);
    struct sub *sb = f->cont.owner;
    fut_unref(f);
    waitcount_done(&sb->pending);
    return arg;
}

struct then_call {
    struct fut_rec *rec;
    als_future_t *src, *out;
    int rc;
};

static void *then_inside(void *arg)
{
    struct then_call *t = arg;
    t->rec->then_exec = als_execution_async_id();
    t->rc = als_future_then(t->src, pool, cont_fn, &t->out);
    return arg;
}

/* ---- groups ------------------------------------------------------------------ */

struct group_rec {
    als_group_t *g;
    _Atomic int added, added_done; /* tasks added by tasks of the group */
    bool waited;
};

static int group_added_fn(void *arg)
{
    struct expect *e = arg;
    verify(&e->m, e->owner, false, IDS_TASK, "task added to a group by a task");
    atomic_fetch_add_explicit(&e->group->added_done, 1, memory_order_relaxed);
    task_end(e);
    return 0;
}

static int group_fn(void *arg)
{
    struct expect *e = arg;
    struct group_rec *gr = e->group;
    verify(&e->m, e->owner, true, IDS_TASK, "group task");
    atomic_fetch_add_explicit(&tasks_checked, 1, memory_order_relaxed);
    struct sub *sb = e->owner;
    if (gr->waited && e->add) {
        struct expect *c = expect_child(e, 1);
        c->group = gr;
        waitcount_add(&sb->pending, 1);
        atomic_fetch_add_explicit(&tasks_submitted, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&gr->added, 1, memory_order_relaxed);
        int rc = als_group_submit(gr->g, pool, group_added_fn, c);
        if (!CHECK(rc == 0, "als_group_submit from a group task: %s", als_strerror(rc))) {
            atomic_fetch_sub_explicit(&gr->added, 1, memory_order_relaxed);
            free(c);
            waitcount_done(&sb->pending);
        }
    }
    if (gr->waited) {
        /* Plain write, read by the submitter after als_group_wait: the wait
         * must order it (ThreadSanitizer checks). The submitter frees e. */
        e->ran = 1;
        waitcount_done(&sb->pending);
    } else {
        free(e);
        waitcount_done(&sb->pending);
    }
    return 0;
}

/* ---- the submitter's operations ------------------------------------------------ */

static void steps(struct sub *sb, struct model *m, int depth);

struct level {
    struct sub *sb;
    struct model m;
    int depth;
};

/* Entered a new scope whose context is l->m: check, then go on. */
static void *level_fn(void *arg)
{
    struct level *l = arg;
    verify(&l->m, l->sb, true, IDS_EXACT, "scope on the submitter");
    steps(l->sb, &l->m, l->depth);
    verify(&l->m, l->sb, true, IDS_EXACT, "scope on the submitter, after its steps");
    return arg;
}

static void submit_expect(struct sub *sb, struct expect *e, als_task_fn fn, unsigned flags)
{
    waitcount_add(&sb->pending, 1);
    atomic_fetch_add_explicit(&tasks_submitted, 1, memory_order_relaxed);
    als_task t = { .fn = fn, .arg = e, .flags = flags };
    int rc = als_submit_task(pool, &t);
    if (!CHECK(rc == 0, "als_submit_task: %s", als_strerror(rc))) {
        free(e);
        waitcount_done(&sb->pending);
    }
}

struct snap_level {
    als_snapshot_t *snap;
    struct level *inside;
};

static void *enter_snapshot(void *arg)
{
    struct snap_level *sl = arg;
    CHECK(als_snapshot_run(sl->snap, level_fn, sl->inside) == sl->inside,
          "als_snapshot_run result");
    return arg;
}

static void *enter_scope(void *arg)
{
    struct snap_level *sl = arg;
    als_scope_t sc;
    if (CHECK(als_scope_enter(&sc, sl->snap) == 0, "als_scope_enter")) {
        level_fn(sl->inside);
        CHECK(als_scope_leave(&sc) == 0, "als_scope_leave");
    }
    return arg;
}

static void *thread_check(void *arg)
{
    struct expect *e = arg;
    verify(&e->m, e->owner, true, IDS_TASK, "als_thread_create thread");
    return arg;
}

/* Runs `fn(arg)` inside a context different from the current one (a fresh
 * value in a random shared store), so that what is entered later cannot
 * pass by accident. */
static void *elsewhere(struct sub *sb, als_fn fn, void *arg)
{
    int s = (int)rng_below(&sb->rng, NSHARED);
    return rng_one_in(&sb->rng, 2) ? als_run(shared[s], new_value(sb, s), fn, arg)
                                   : als_exit(shared[s], fn, arg);
}

struct bound_here {
    als_bound_t *bound;
    struct expect *e;
};

static void *call_bound(void *arg)
{
    struct bound_here *bh = arg;
    CHECK(als_bound_call(bh->bound, bh->e) == bh->e, "als_bound_call result");
    return arg;
}

static void op_future(struct sub *sb, const struct model *m)
{
    struct fut_rec *f = calloc(1, sizeof *f);
    if (!f)
        abort();
    bool then = rng_one_in(&sb->rng, 2);
    atomic_init(&f->refs, then ? 3 : 2);
    struct expect *e = expect_new(sb, m, 0);
    f->src = *e;
    free(e);
    /* The continuation is scheduled from another context. */
    int s = (int)rng_below(&sb->rng, NSHARED);
    void *v = new_value(sb, s);
    f->cont = f->src;
    f->cont.m.val[s] = v;

    waitcount_add(&sb->pending, then ? 2 : 1);
    atomic_fetch_add_explicit(&tasks_submitted, then ? 2 : 1, memory_order_relaxed);
    als_future_t *fut = NULL;
    int rc = als_submit_future(pool, fut_fn, f, &fut);
    if (!CHECK(rc == 0, "als_submit_future: %s", als_strerror(rc))) {
        free(f);
        waitcount_add(&sb->pending, then ? -2 : -1);
        return;
    }
    als_future_t *out = NULL;
    if (then) {
        struct then_call tc = { .rec = f, .src = fut };
        als_run(shared[s], v, then_inside, &tc);
        if (!CHECK(tc.rc == 0, "als_future_then: %s", als_strerror(tc.rc))) {
            fut_unref(f);
            waitcount_done(&sb->pending);
        }
        out = tc.out;
    }
    if (rng_one_in(&sb->rng, 2)) {
        void *r = NULL;
        rc = als_future_wait(fut, -1, &r);
        CHECK(rc == 0 && r == f, "als_future_wait: %s, result %p want %p", als_strerror(rc), r,
              (void *)f);
    }
    if (out && rng_one_in(&sb->rng, 2)) {
        void *r = NULL;
        rc = als_future_wait(out, -1, &r);
        CHECK(rc == 0 && r == f, "als_future_wait (continuation): %s", als_strerror(rc));
    }
    als_future_release(fut);
    als_future_release(out);
    fut_unref(f);
}

static void op_group(struct sub *sb, const struct model *m)
{
    struct group_rec gr = { .g = als_group_new(), .waited = !rng_one_in(&sb->rng, 4) };
    if (!CHECK(gr.g, "als_group_new"))
        return;
    atomic_init(&gr.added, 0);
    atomic_init(&gr.added_done, 0);
    int n = 1 + (int)rng_below(&sb->rng, 4);
    struct expect *es[4];
    int ok = 0;
    for (int i = 0; i < n; i++) {
        struct expect *e = expect_new(sb, m, 0);
        e->group = &gr;
        e->add = rng_one_in(&sb->rng, 3);
        if (!gr.waited) {
            /* Free-running tasks must not touch the record on our stack. */
            static struct group_rec detached_rec; /* waited == false */
            e->group = &detached_rec;
        }
        waitcount_add(&sb->pending, 1);
        atomic_fetch_add_explicit(&tasks_submitted, 1, memory_order_relaxed);
        int rc = als_group_submit(gr.g, pool, group_fn, e);
        if (!CHECK(rc == 0, "als_group_submit: %s", als_strerror(rc))) {
            free(e);
            waitcount_done(&sb->pending);
            continue;
        }
        es[ok++] = e;
    }
    if (!gr.waited) {
        als_group_free(gr.g); /* tasks still run, and free their records */
        return;
    }
    int rc = als_group_wait(gr.g, -1);
    CHECK(rc == 0, "als_group_wait: %s", als_strerror(rc));
    for (int i = 0; i < ok; i++) {
        CHECK(es[i]->ran == 1, "group task not finished when als_group_wait returned");
        free(es[i]);
    }
    int added = atomic_load_explicit(&gr.added, memory_order_relaxed);
    int added_done = atomic_load_explicit(&gr.added_done, memory_order_relaxed);
    CHECK(added == added_done, "als_group_wait returned with %d of %d added tasks finished",
          added_done, added);
    als_group_free(gr.g);
}

static void one_step(struct sub *sb, struct model *m, int depth)
{
    enum op op = (enum op)rng_below(&sb->rng, OP_COUNT);
    if (depth >= MAX_DEPTH && (op <= OP_SCOPE || op == OP_RESOURCE))
        op = OP_SUBMIT; /* deep enough: no more scopes */
    if (op == OP_THREAD && !rng_one_in(&sb->rng, 8))
        op = OP_SUBMIT; /* threads are slow to make under sanitizers */
    atomic_fetch_add_explicit(&op_counts[op], 1, memory_order_relaxed);
    struct level l = { .sb = sb, .m = live(m, sb), .depth = depth + 1 };

    switch (op) {
    case OP_RUN: {
        int s = (int)rng_below(&sb->rng, NSHARED + 1);
        void *v = new_value(sb, s);
        model_set(&l.m, sb, s, v);
        CHECK(als_run(store_of(sb, s), v, level_fn, &l) == &l, "als_run result");
        break;
    }
    case OP_EXIT: {
        int s = (int)rng_below(&sb->rng, NSHARED + 1);
        model_unset(&l.m, s);
        CHECK(als_exit(store_of(sb, s), level_fn, &l) == &l, "als_exit result");
        break;
    }
    case OP_ENTER: {
        int s = (int)rng_below(&sb->rng, NSHARED + 1);
        void *v = new_value(sb, s);
        int rc = als_enter_with(store_of(sb, s), v);
        if (CHECK(rc == 0, "als_enter_with: %s", als_strerror(rc)))
            model_set(m, sb, s, v);
        break;
    }
    case OP_DISABLE: {
        atomic_fetch_add_explicit(&sb->dis_begun, 1, memory_order_relaxed);
#if FENCES
        atomic_thread_fence(memory_order_release);
#endif
        als_disable(sb->priv);
        atomic_fetch_add_explicit(&sb->dis_done, 1, memory_order_release);
        *m = live(m, sb);
        verify(m, sb, true, IDS_EXACT, "right after als_disable");
        void *v = new_value(sb, NSHARED);
        if (rng_one_in(&sb->rng, 2)) {
            int rc = als_enter_with(sb->priv, v);
            if (CHECK(rc == 0, "als_enter_with after disable: %s", als_strerror(rc)))
                model_set(m, sb, NSHARED, v);
        } else {
            l.m = *m;
            model_set(&l.m, sb, NSHARED, v);
            CHECK(als_run(sb->priv, v, level_fn, &l) == &l, "als_run after disable");
        }
        break;
    }
    case OP_SNAPSHOT_RUN:
    case OP_SCOPE: {
        als_snapshot_t *snap = als_snapshot();
        if (!CHECK(snap, "als_snapshot"))
            break;
        struct snap_level sl = { .snap = snap, .inside = &l };
        elsewhere(sb, op == OP_SCOPE ? enter_scope : enter_snapshot, &sl);
        if (rng_one_in(&sb->rng, 2)) {
            CHECK(als_snapshot_retain(snap) == snap, "als_snapshot_retain");
            als_snapshot_release(snap);
        }
        als_snapshot_release(snap);
        break;
    }
    case OP_SNAPSHOT_TASK: {
        struct expect *e = expect_new(sb, m, TASK_DEPTH);
        e->snap = als_snapshot();
        if (!CHECK(e->snap, "als_snapshot")) {
            free(e);
            break;
        }
        submit_expect(sb, e, snapshot_task, 0);
        break;
    }
    case OP_BIND: {
        struct expect *e = expect_new(sb, m, TASK_DEPTH);
        e->m.exec = 0; /* plain bound functions keep the caller's ids */
        e->bound = als_bind(bound_check);
        if (!CHECK(e->bound, "als_bind")) {
            free(e);
            break;
        }
        /* Called here from another context, then on a worker. */
        struct expect here = *e;
        struct bound_here bh = { .bound = e->bound, .e = &here };
        CHECK(elsewhere(sb, call_bound, &bh) == &bh, "als_bound_call from elsewhere");
        submit_expect(sb, e, bound_task, 0);
        break;
    }
    case OP_RESOURCE: {
        als_resource_t *res = als_resource_new("crosstalk");
        if (!CHECK(res, "als_resource_new"))
            break;
        uint64_t id = als_resource_async_id(res);
        CHECK(id > 1 && als_resource_trigger_async_id(res) == m->exec,
              "resource ids %" PRIu64 " trigger %" PRIu64 " want trigger %" PRIu64, id,
              als_resource_trigger_async_id(res), m->exec);
        l.m.exec = id;
        l.m.trigger = m->exec;
        if (rng_one_in(&sb->rng, 2)) {
            CHECK(als_resource_run_in_scope(res, level_fn, &l) == &l,
                  "als_resource_run_in_scope result");
        } else {
            /* Resource-bound: the worker runs it with the resource's ids. */
            struct expect *e = expect_new(sb, m, TASK_DEPTH);
            e->m.exec = id;
            e->m.trigger = m->exec;
            e->bound = als_resource_bind(res, bound_check);
            if (CHECK(e->bound, "als_resource_bind"))
                submit_expect(sb, e, bound_task, 0);
            else
                free(e);
        }
        als_resource_free(res);
        break;
    }
    case OP_THREAD: {
        struct expect *e = expect_new(sb, m, 0);
        pthread_t t;
        int rc = als_thread_create(&t, NULL, thread_check, e);
        if (CHECK(rc == 0, "als_thread_create: %s", als_strerror(rc)))
            pthread_join(t, NULL);
        free(e);
        break;
    }
    case OP_SUBMIT:
        submit_expect(sb, expect_new(sb, m, 0), task_fn, 0);
        break;
    case OP_DETACHED:
        submit_expect(sb, expect_new(sb, m, TASK_DEPTH), detached_fn, ALS_TASK_DETACHED);
        break;
    case OP_AFTER: {
        struct expect *e = expect_new(sb, m, 0);
        uint64_t delay = rng_one_in(&sb->rng, 4) ? 0 : rng_below(&sb->rng, 2000000);
        waitcount_add(&sb->pending, 1);
        atomic_fetch_add_explicit(&tasks_submitted, 1, memory_order_relaxed);
        int rc = als_submit_after(pool, delay, task_fn, e);
        if (!CHECK(rc == 0, "als_submit_after: %s", als_strerror(rc))) {
            free(e);
            waitcount_done(&sb->pending);
        }
        break;
    }
    case OP_FUTURE:
        op_future(sb, m);
        break;
    case OP_GROUP:
        op_group(sb, m);
        break;
    case OP_COUNT:
        break;
    }
    /* Whatever happened inside, this scope's context is intact. */
    verify(m, sb, true, IDS_EXACT, "after an operation");
}

static void steps(struct sub *sb, struct model *m, int depth)
{
    int n = 1 + (int)rng_below(&sb->rng, 3);
    for (int i = 0; i < n; i++)
        one_step(sb, m, depth);
}

static void *submitter(void *arg)
{
    struct sub *sb = arg;
    sb->thread = pthread_self();
    struct model m;
    /* Started by als_thread_create inside main's context. */
    for (int s = 0; s < NSHARED; s++)
        m.val[s] = MAIN_VALUE(s);
    m.pbound = false;
    m.exec = als_execution_async_id();
    m.trigger = als_trigger_async_id();
    CHECK(m.trigger == 1 && m.exec > 1, "submitter thread ids exec=%" PRIu64 " trigger=%" PRIu64,
          m.exec, m.trigger);
    sb->priv = als_new(&(als_options){ .name = "private", .default_value = PRIV_DEF(sb->index) });
    if (!CHECK(sb->priv, "als_new"))
        return NULL;
    verify(&m, sb, true, IDS_EXACT, "submitter thread start");

    while (stress_time_left()) {
        for (int i = 0; i < 16; i++)
            one_step(sb, &m, 0);
        if (waitcount_get(&sb->pending) > MAX_OUTSTANDING)
            waitcount_wait(&sb->pending, MAX_OUTSTANDING / 4);
    }
    /* The private store must outlive the tasks that read it. */
    waitcount_wait(&sb->pending, 0);
    return NULL;
}

static void *main_body(void *arg)
{
    int nsub = *(int *)arg;
    struct sub *subs = calloc((size_t)nsub, sizeof *subs);
    pthread_t *threads = calloc((size_t)nsub, sizeof *threads);
    if (!subs || !threads)
        abort();
    for (int i = 0; i < nsub; i++) {
        subs[i].index = i;
        subs[i].rng = rng_for((uint64_t)i + 1);
        waitcount_init(&subs[i].pending);
        int rc = als_thread_create(&threads[i], NULL, submitter, &subs[i]);
        if (!CHECK(rc == 0, "als_thread_create: %s", als_strerror(rc)))
            abort();
    }
    for (int i = 0; i < nsub; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < nsub; i++) {
        als_free(subs[i].priv);
        waitcount_destroy(&subs[i].pending);
    }
    free(threads);
    free(subs);
    return NULL;
}

/* main binds its own values, which every submitter inherits. */
static void *bind_main(void *arg)
{
    int *s = arg;
    if (*s < NSHARED) {
        (*s)++;
        return als_run(shared[*s - 1], MAIN_VALUE(*s - 1), bind_main, arg);
    }
    return main_body(s + 1);
}

int main(int argc, char **argv)
{
    stress_init(argc, argv, "crosstalk", 3.0, NULL);
    int nsub = stress.small ? 2 : 4;
    unsigned nworkers = stress.small ? 2 : 3;
    for (int s = 0; s < NSHARED; s++) {
        shared[s] = als_new(&(als_options){ .name = "shared", .default_value = SHARED_DEF(s) });
        if (!shared[s])
            abort();
    }
    pool = als_pool_new(&(als_pool_options){ .threads = nworkers, .queue_capacity = 256,
                                             .name = "crosstalk" });
    if (!pool)
        abort();
    burst_size = 64 * (nworkers + 1);
    printf("  %d submitters, %u workers, %d shared stores + 1 private each\n", nsub, nworkers,
           NSHARED);

    int args[2] = { 0, nsub };
    bind_main(args);

    CHECK(als_pool_drain(pool) == 0, "als_pool_drain");
    als_pool_stats st;
    CHECK(als_pool_stats_get(pool, &st) == 0, "als_pool_stats_get");
    CHECK(als_pool_shutdown(pool, ALS_SHUTDOWN_DRAIN) == 0, "als_pool_shutdown");
    als_pool_stats end;
    als_pool_stats_get(pool, &end);
    CHECK(end.submitted == end.completed + end.failed + end.cancelled && end.failed == 0 &&
              end.cancelled == 0,
          "pool stats: submitted %" PRIu64 " completed %" PRIu64 " failed %" PRIu64
          " cancelled %" PRIu64,
          end.submitted, end.completed, end.failed, end.cancelled);
    als_pool_free(pool);
    for (int s = 0; s < NSHARED; s++)
        als_free(shared[s]);

    uint64_t sub = atomic_load(&tasks_submitted), chk = atomic_load(&tasks_checked);
    CHECK(sub == chk, "tasks submitted %" PRIu64 " but %" PRIu64 " ran and checked", sub, chk);
    CHECK(end.submitted == sub, "pool counted %" PRIu64 " submitted, we submitted %" PRIu64,
          end.submitted, sub);

    stress_figure("tasks checked", "%" PRIu64, chk);
    stress_figure("contexts checked", "%" PRIu64, atomic_load(&contexts_checked));
    stress_figure("mismatches", "%" PRIu64, atomic_load(&mismatches));
    stress_figure("tasks run inside their submit", "%" PRIu64, atomic_load(&inline_runs));
    for (int i = 0; i < OP_COUNT; i++) {
        char label[64];
        snprintf(label, sizeof label, "op %s", op_names[i]);
        stress_figure(label, "%" PRIu64, atomic_load(&op_counts[i]));
    }
    return stress_finish();
}
