/* stress/fuzz_api.c: a libFuzzer target for the context and pool API.
 *
 * The input is a program. Its first byte chooses the setup: 2 or 3 program
 * threads, 1 or 2 pool workers, the queue's capacity and full policy, and
 * the final shutdown (DRAIN or CANCEL). Then come (opcode, operand) byte
 * pairs; the top bits of the opcode byte pick the thread that runs it, so
 * each thread runs its own instruction list, concurrently with the others.
 *
 * Each thread keeps a small reference model of its context: the value of
 * each of three shared stores and of its private store, its async ids, and
 * the capture held by each of its registers. Every observation (als_get and
 * als_has in every scope, in every task, in every entered capture; ids;
 * return codes, a group task's own failure code apart from the wait's) is
 * checked against the model. Blocks (run, exit, snapshot_run, scopes,
 * resources) nest: an END opcode, or the end of the list, closes them.
 *
 * The pool's answers are decided exactly, from what the model knows: the
 * policy, whether the submitter is a worker (a task's nested submits) or a
 * program thread, and which of a task's submits it is. A task taken from
 * the queue starts with its worker's one-task slot empty, so its first
 * submit never finds the pool full; later ones may (ALS_EFULL under REJECT
 * only, and then, in a one-worker pool, the queue really holds its whole
 * capacity: nothing leaves it while the only worker submits). A REJECT
 * pool never runs a task inside the submit (BLOCK does, for its own
 * workers: the inline fallback); a program thread's submit never does.
 * Every ALS_EFULL answer is counted in `rejected`, exactly; continuations
 * are accepted by als_future_then and never refused later.
 *
 * Threads only disturb each other through shared things whose outcome the
 * model knows: the pool (tasks carry their submitter's context), a mailbox
 * through which threads hand each other captures (checked against the
 * sender's model for the shared stores; a receiver's own private store
 * reads as unbound there), and drains. Only a thread disables its own
 * private store, after waiting for its own tasks, so that no task reads
 * while it is being disabled.
 *
 * A failed observation aborts (libFuzzer keeps the input) unless the
 * standalone driver (fuzz_driver.c) asked to count instead. */
#include "fuzz_api.h"

#include "als.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NSHARED 3
#define NREG 4
#define MAX_THREADS 3
#define MAX_OPS 160            /* per thread */
#define MAX_DEPTH 8
#define TASK_DEPTH 2

#define SHARED_DEF(s) ((void *)(uintptr_t)(0xd000u + (unsigned)(s)))
#define PRIV_DEF(t) ((void *)(uintptr_t)(0xe000u + (unsigned)(t)))

/* ---- the run of one input ------------------------------------------------------------ */

/* What a context holds, as the model knows it: private resolved (its value
 * while bound and not disabled since, else the default). */
struct fm {
    void *val[NSHARED];
    void *pval;
    bool pbound;
    uint64_t pgen;             /* the thread's disables when it was bound */
    uint64_t exec, trigger;
};

struct fthread;

struct ftask {
    struct ftask *next;
    struct fthread *th;
    void *val[NSHARED];
    void *priv;                /* resolved */
    uint64_t trigger;
    int depth;
    int result;                /* what a group task returns */
    int fan;                   /* tasks it submits while depth > 0 */
    bool detached;
    _Atomic int ran, cancelled;
    uint64_t src_exec, then_exec; /* futures */
};

struct reg {
    als_snapshot_t *snap;      /* NULL: empty register */
    als_bound_t *bound;
    struct fm m;               /* model at capture */
    int entered;               /* open als_snapshot_run calls on it */
};

struct fthread {
    int index;
    struct input *in;
    const uint8_t *ops;        /* (opcode, operand) pairs */
    int nops, pc;
    als_t *priv;
    uint64_t disables;
    uint32_t counter;
    struct reg snaps[NREG], binds[NREG];
    pthread_mutex_t mu;        /* outstanding tasks, for DISABLE */
    pthread_cond_t cv;
    long outstanding;
};

struct mail {
    als_snapshot_t *snap;
    void *val[NSHARED];
    int from;
};

struct input {
    int nthreads;
    als_pool_t *pool;
    enum als_full_policy policy;
    unsigned workers, capacity;
    int how;
    als_t *shared[NSHARED];
    struct fthread th[MAX_THREADS];
    _Atomic(struct ftask *) tasks;
    _Atomic(struct mail *) mailbox;
    _Atomic uint64_t accepted, fn_runs, cancels, conts, fails;
    _Atomic uint64_t efull;    /* ALS_EFULL answers seen */
};

/* Set on a thread while it is inside a submit: a task that starts on a
 * thread where it is set ran inside that submit (inline). */
static _Thread_local bool in_submit;

static void count_answer(struct input *in, int rc)
{
    if (rc == ALS_EFULL)
        atomic_fetch_add(&in->efull, 1);
}

static void *priv_expect(const struct fthread *th, const struct fm *m)
{
    return m->pbound && m->pgen == th->disables ? m->pval : PRIV_DEF(th->index);
}

static void check_ctx(const struct input *in, const struct fthread *th, void *const val[NSHARED],
                      void *priv, const char *where)
{
    for (int s = 0; s < NSHARED; s++) {
        void *v = als_get(in->shared[s]);
        fuzz_observe(v == val[s], "%s (thread %d): store %d = %p, want %p", where, th->index, s, v,
                val[s]);
        /* Bound values are never the default: bound iff not the default. */
        fuzz_observe(als_has(in->shared[s]) == (val[s] != SHARED_DEF(s)),
                "%s (thread %d): als_has(store %d) = %d", where, th->index, s,
                als_has(in->shared[s]));
    }
    if (th) {
        void *v = als_get(th->priv);
        fuzz_observe(v == priv, "%s (thread %d): private = %p, want %p", where, th->index, v, priv);
        fuzz_observe(als_has(th->priv) == (priv != PRIV_DEF(th->index)),
                "%s (thread %d): als_has(private) = %d", where, th->index, als_has(th->priv));
    }
}

static void check_model(const struct fthread *th, const struct fm *m, bool ids, const char *where)
{
    check_ctx(th->in, th, m->val, priv_expect(th, m), where);
    if (ids)
        fuzz_observe(als_execution_async_id() == m->exec && als_trigger_async_id() == m->trigger,
                "%s (thread %d): ids %" PRIu64 "/%" PRIu64 ", want %" PRIu64 "/%" PRIu64,
                where, th->index, als_execution_async_id(), als_trigger_async_id(), m->exec,
                m->trigger);
}

/* ---- tasks ------------------------------------------------------------------------------ */

static void outstanding_add(struct fthread *th, long n)
{
    pthread_mutex_lock(&th->mu);
    th->outstanding += n;
    if (th->outstanding == 0)
        pthread_cond_broadcast(&th->cv);
    pthread_mutex_unlock(&th->mu);
}

static struct ftask *task_new(struct fthread *th, const struct fm *m)
{
    struct ftask *t = calloc(1, sizeof *t);
    if (!t)
        abort();
    t->th = th;
    memcpy(t->val, m->val, sizeof t->val);
    t->priv = priv_expect(th, m);
    t->trigger = m->exec;
    struct input *in = th->in;
    t->next = atomic_load_explicit(&in->tasks, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&in->tasks, &t->next, t, memory_order_release,
                                                  memory_order_relaxed)) {
    }
    return t;
}

/* Checks the context of a task (or of a continuation of it: then its
 * trigger is the then-caller's id, or the source task's, which submitted
 * it; both are accepted). */
static void task_check(const struct ftask *t, const char *where, bool cont)
{
    struct fthread *th = t->th;
    if (t->detached) {
        void *defs[NSHARED];
        for (int s = 0; s < NSHARED; s++)
            defs[s] = SHARED_DEF(s);
        check_ctx(th->in, th, defs, PRIV_DEF(th->index), where);
    } else {
        check_ctx(th->in, th, t->val, t->priv, where);
    }
    uint64_t exec = als_execution_async_id(), trig = als_trigger_async_id();
    uint64_t want = t->detached ? 0 : t->trigger;
    if (cont)
        want = trig == t->src_exec ? t->src_exec : t->then_exec;
    fuzz_observe(trig == want && exec > 1 && exec > trig,
            "%s (thread %d): ids exec %" PRIu64 " trigger %" PRIu64 ", want trigger %" PRIu64,
            where, th->index, exec, trig, want);
}

static int task_fn(void *arg);

static void task_done(struct ftask *t)
{
    outstanding_add(t->th, -1);
}

static int run_task(struct ftask *t, const char *where)
{
    task_check(t, where, false);
    fuzz_observe(atomic_fetch_add(&t->ran, 1) == 0, "task ran twice");
    atomic_fetch_add(&t->th->in->fn_runs, 1);
    /* Tasks of the task: same values, triggered by this task. */
    for (int k = 0; t->depth > 0 && k < t->fan; k++) {
        struct fthread *th = t->th;
        struct input *in = th->in;
        struct fm m = { .pbound = false };
        memcpy(m.val, t->val, sizeof m.val);
        m.exec = als_execution_async_id();
        struct ftask *c = task_new(th, &m);
        c->priv = t->priv;
        c->depth = t->depth - 1;
        c->fan = t->fan;
        outstanding_add(th, 1);
        bool outer = in_submit;
        in_submit = true;
        int rc = als_submit_task(in->pool, &(als_task){ .fn = task_fn, .arg = c,
                                                        .cancel = NULL });
        in_submit = outer;
        if (rc == 0)
            atomic_fetch_add(&in->accepted, 1);
        else
            task_done(c);
        count_answer(in, rc);
        /* During a DRAIN shutdown a task may still submit; CANCEL refuses. */
        fuzz_observe(rc == 0 || rc == ALS_ESHUTDOWN ||
                    (rc == ALS_EFULL && in->policy == ALS_FULL_REJECT && k > 0),
                "nested submit %d: %s", k, als_strerror(rc));
        if (rc == ALS_EFULL && in->workers == 1) {
            als_pool_stats st;
            als_pool_stats_get(in->pool, &st);
            fuzz_observe(st.queued >= in->capacity,
                    "nested submit refused with %" PRIu64 " queued, capacity %u", st.queued,
                    in->capacity);
        }
    }
    return 0;
}

static int task_fn(void *arg)
{
    struct ftask *t = arg;
    struct input *in = t->th->in;
    fuzz_observe(als_pool_current() == in->pool, "a task ran off its pool's workers");
    fuzz_observe(!in_submit || in->policy == ALS_FULL_BLOCK, "a REJECT pool ran a task inline");
    run_task(t, "task");
    task_done(t);
    return 0;
}

/* A group task: a plain task that returns its planned result. */
static int group_task_fn(void *arg)
{
    struct ftask *t = arg;
    int rc = t->result;
    if (rc)
        atomic_fetch_add(&t->th->in->fails, 1);
    task_fn(t);
    return rc;
}

static void cancel_fn(void *arg)
{
    struct ftask *t = arg;
    task_check(t, "cancel callback", false);
    fuzz_observe(atomic_fetch_add(&t->cancelled, 1) == 0, "cancel ran twice");
    atomic_fetch_add(&t->th->in->cancels, 1);
    task_done(t);
}

static void *future_fn(void *arg)
{
    struct ftask *t = arg;
    run_task(t, "future");
    t->src_exec = als_execution_async_id();
    task_done(t);
    return arg;
}

static void *cont_fn(void *arg)
{
    struct ftask *src = arg; /* then is called beside the submit: same context */
    task_check(src, "continuation", true);
    atomic_fetch_add(&src->th->in->conts, 1);
    task_done(src);
    return arg;
}

/* ---- the interpreter ------------------------------------------------------------------------- */

enum {
    OP_END, OP_RUN, OP_EXIT, OP_ENTER, OP_GET, OP_SNAP, OP_SNAPRUN, OP_SCOPE, OP_RELEASE,
    OP_BIND, OP_CALL, OP_RESOURCE, OP_SUBMIT, OP_AFTER, OP_FUTURE, OP_GROUP, OP_DETACHED,
    OP_DISABLE, OP_HANDOFF, OP_THREAD, OP_DRAIN, OP_NESTED,
};

static void block(struct fthread *th, struct fm *m, int depth);

struct level {
    struct fthread *th;
    struct fm m;
    int depth;
    bool ids;
};

static void *level_fn(void *arg)
{
    struct level *l = arg;
    check_model(l->th, &l->m, l->ids, "block entry");
    block(l->th, &l->m, l->depth);
    check_model(l->th, &l->m, l->ids, "block exit");
    return arg;
}

static void *bound_fn(void *arg)
{
    struct level *l = arg;
    check_model(l->th, &l->m, false, "bound call");
    return arg;
}

static void *thread_fn(void *arg)
{
    struct level *l = arg;
    check_model(l->th, &l->m, false, "als_thread_create thread");
    fuzz_observe(als_trigger_async_id() == l->m.exec && als_execution_async_id() > l->m.exec,
            "thread ids");
    return arg;
}

static void *new_value(struct fthread *th)
{
    return (void *)(((uintptr_t)(th->index + 1) << 32) | ++th->counter);
}

static void wait_own_tasks(struct fthread *th)
{
    pthread_mutex_lock(&th->mu);
    while (th->outstanding > 0)
        pthread_cond_wait(&th->cv, &th->mu);
    pthread_mutex_unlock(&th->mu);
}

/* Empties a register, unless an als_snapshot_run of it is open: the
 * caller of snapshot_run must keep the snapshot alive (an explicit scope
 * holds its own reference, so releasing inside one is fine). */
static void reg_clear(struct reg *r)
{
    if (r->entered)
        return;
    als_snapshot_release(r->snap);
    als_bound_free(r->bound);
    r->snap = NULL;
    r->bound = NULL;
}

static void submit(struct fthread *th, const struct fm *m, int depth, int fan, bool detached,
                   uint64_t delay, bool after)
{
    struct input *in = th->in;
    struct ftask *t = task_new(th, m);
    t->depth = depth;
    t->fan = fan;
    t->detached = detached;
    outstanding_add(th, 1);
    int rc;
    in_submit = true;
    if (after)
        rc = als_submit_after(in->pool, delay, task_fn, t);
    else
        rc = als_submit_task(in->pool, &(als_task){ .fn = task_fn, .arg = t, .cancel = cancel_fn,
                                                    .flags = detached ? ALS_TASK_DETACHED : 0 });
    in_submit = false;
    count_answer(in, rc);
    if (rc == 0)
        atomic_fetch_add(&in->accepted, 1);
    else
        task_done(t);
    fuzz_observe(rc == 0 || (rc == ALS_EFULL && in->policy == ALS_FULL_REJECT), "submit: %s",
            als_strerror(rc));
}

static void step(struct fthread *th, struct fm *m, int depth, uint8_t op, uint8_t x)
{
    struct input *in = th->in;
    struct level l = { .th = th, .m = *m, .depth = depth + 1, .ids = true };
    int s = x % (NSHARED + 1);
    als_t *store = s == NSHARED ? th->priv : in->shared[s];
    struct reg *r = &th->snaps[x % NREG];
    if (depth >= MAX_DEPTH && (op == OP_RUN || op == OP_EXIT || op == OP_SNAPRUN ||
                               op == OP_SCOPE || op == OP_RESOURCE))
        op = OP_GET;

    switch (op) {
    case OP_RUN: {
        void *v = new_value(th);
        if (s == NSHARED) {
            l.m.pval = v;
            l.m.pbound = true;
            l.m.pgen = th->disables;
        } else {
            l.m.val[s] = v;
        }
        fuzz_observe(als_run(store, v, level_fn, &l) == &l, "als_run result");
        break;
    }
    case OP_EXIT:
        if (s == NSHARED)
            l.m.pbound = false;
        else
            l.m.val[s] = SHARED_DEF(s);
        fuzz_observe(als_exit(store, level_fn, &l) == &l, "als_exit result");
        break;
    case OP_ENTER: {
        void *v = new_value(th);
        int rc = als_enter_with(store, v);
        if (fuzz_observe(rc == 0, "als_enter_with: %s", als_strerror(rc))) {
            if (s == NSHARED) {
                m->pval = v;
                m->pbound = true;
                m->pgen = th->disables;
            } else {
                m->val[s] = v;
            }
        }
        break;
    }
    case OP_SNAP:
        if (r->entered)
            break;
        reg_clear(r);
        r->snap = als_snapshot();
        r->m = *m;
        fuzz_observe(r->snap != NULL, "als_snapshot");
        break;
    case OP_SNAPRUN:
    case OP_SCOPE:
        if (!r->snap)
            break;
        l.m = r->m;
        l.m.exec = m->exec; /* entering a capture keeps the ids */
        l.m.trigger = m->trigger;
        if (op == OP_SNAPRUN) {
            r->entered++;
            fuzz_observe(als_snapshot_run(r->snap, level_fn, &l) == &l, "als_snapshot_run result");
            r->entered--;
        } else {
            als_scope_t sc;
            if (fuzz_observe(als_scope_enter(&sc, r->snap) == 0, "als_scope_enter")) {
                level_fn(&l);
                fuzz_observe(als_scope_leave(&sc) == 0, "als_scope_leave");
            }
        }
        break;
    case OP_RELEASE:
        reg_clear(r);
        reg_clear(&th->binds[x % NREG]);
        break;
    case OP_BIND: {
        struct reg *b = &th->binds[x % NREG];
        reg_clear(b);
        b->bound = als_bind(bound_fn);
        b->m = *m;
        fuzz_observe(b->bound != NULL, "als_bind");
        break;
    }
    case OP_CALL: {
        struct reg *b = &th->binds[x % NREG];
        if (!b->bound)
            break;
        l.m = b->m;
        fuzz_observe(als_bound_call(b->bound, &l) == &l, "als_bound_call result");
        break;
    }
    case OP_RESOURCE: {
        als_resource_t *res = als_resource_new("fuzz");
        if (!fuzz_observe(res != NULL, "als_resource_new"))
            break;
        fuzz_observe(als_resource_trigger_async_id(res) == m->exec &&
                    als_resource_async_id(res) > m->exec,
                "resource ids");
        l.m.exec = als_resource_async_id(res);
        l.m.trigger = m->exec;
        if (x & 1) {
            fuzz_observe(als_resource_run_in_scope(res, level_fn, &l) == &l, "run_in_scope result");
            als_resource_free(res);
            break;
        }
        /* The event-loop form; the scope outlives the resource. */
        als_scope_t sc;
        int rc = als_resource_enter(&sc, res);
        als_resource_free(res);
        if (fuzz_observe(rc == 0, "als_resource_enter: %s", als_strerror(rc))) {
            level_fn(&l);
            fuzz_observe(als_scope_leave(&sc) == 0, "als_scope_leave (resource)");
        }
        break;
    }
    case OP_SUBMIT:
        submit(th, m, 0, 0, false, 0, false);
        break;
    case OP_NESTED:
        /* Depth 1 or 2, and 1 to 6 tasks per task: enough for a task to
         * fill a small pool by itself. */
        submit(th, m, 1 + x % TASK_DEPTH, 1 + (x >> 1) % 6, false, 0, false);
        break;
    case OP_DETACHED:
        submit(th, m, 0, 0, true, 0, false);
        break;
    case OP_AFTER:
        submit(th, m, 0, 0, false, (uint64_t)x * 10000u, true);
        break;
    case OP_FUTURE: {
        struct ftask *t = task_new(th, m);
        als_future_t *f = NULL, *g = NULL;
        outstanding_add(th, 1);
        int rc = als_submit_future(in->pool, future_fn, t, &f);
        count_answer(in, rc);
        if (!fuzz_observe(rc == 0 || (rc == ALS_EFULL && in->policy == ALS_FULL_REJECT),
                     "als_submit_future: %s", als_strerror(rc)) ||
            rc) {
            task_done(t);
            break;
        }
        atomic_fetch_add(&in->accepted, 1);
        if (x & 1) {
            /* Read by the continuation only, never by the source task. */
            t->then_exec = m->exec;
            outstanding_add(th, 1);
            rc = als_future_then(f, in->pool, cont_fn, &g);
            /* Accepted by the call, whatever the policy (als.h). */
            if (!fuzz_observe(rc == 0, "als_future_then: %s", als_strerror(rc)))
                task_done(t);
        }
        void *res = NULL;
        rc = als_future_wait(f, -1, &res);
        fuzz_observe(rc == 0 && res == t, "als_future_wait: %s", als_strerror(rc));
        if (g) {
            /* Waited for always: a cancelled continuation never runs, so
             * only here do we learn it is done. */
            rc = als_future_wait(g, -1, &res);
            if (rc == ALS_ECANCELED)
                task_done(t);
            /* The pool runs until the program ends: never cancelled. */
            fuzz_observe(rc == 0 && res == t, "continuation wait: %s", als_strerror(rc));
        }
        als_future_release(f);
        als_future_release(g);
        break;
    }
    case OP_GROUP: {
        als_group_t *g = als_group_new();
        if (!fuzz_observe(g != NULL, "als_group_new"))
            break;
        /* Bits 2-3 plan one failing task, with a code that is also an
         * ALS_E* value (ALS_ETIMEDOUT, ALS_ECANCELED) or is not (7). */
        static const int codes[] = {0, ALS_ETIMEDOUT, ALS_ECANCELED, 7};
        int code = codes[(x >> 2) & 3], failed = 0;
        for (int i = 0; i <= x % 4; i++) {
            struct ftask *t = task_new(th, m);
            t->result = i == 0 ? code : 0;
            outstanding_add(th, 1);
            int rc = als_group_submit(g, in->pool, group_task_fn, t);
            count_answer(in, rc);
            if (rc == 0) {
                atomic_fetch_add(&in->accepted, 1);
                failed = failed || t->result;
            } else {
                task_done(t);
            }
            fuzz_observe(rc == 0 || (rc == ALS_EFULL && in->policy == ALS_FULL_REJECT),
                    "als_group_submit: %s", als_strerror(rc));
        }
        int rc = als_group_wait(g, -1), first = -1;
        fuzz_observe(rc == (failed ? ALS_ETASK : 0), "als_group_wait: %s", als_strerror(rc));
        rc = als_group_first_error(g, &first);
        fuzz_observe(rc == 0 && first == (failed ? code : 0), "als_group_first_error: %d", first);
        als_group_free(g);
        break;
    }
    case OP_DISABLE:
        wait_own_tasks(th);
        als_disable(th->priv);
        th->disables++;
        break;
    case OP_HANDOFF: {
        if (!r->snap)
            break;
        struct mail *mine = malloc(sizeof *mine);
        if (!mine)
            abort();
        mine->snap = als_snapshot_retain(r->snap);
        memcpy(mine->val, r->m.val, sizeof mine->val);
        mine->from = th->index;
        struct mail *got = atomic_exchange(&in->mailbox, mine);
        if (got) {
            struct level g = { .th = th, .depth = MAX_DEPTH, .ids = false };
            memcpy(g.m.val, got->val, sizeof g.m.val);
            g.m.pbound = false; /* ours reads as unbound in a foreign capture */
            if (got->from == th->index) {
                /* Our own: the private store's model is not in the mail. */
                als_snapshot_release(got->snap);
                free(got);
                break;
            }
            fuzz_observe(als_snapshot_run(got->snap, bound_fn, &g) == &g, "handoff snapshot_run");
            als_snapshot_release(got->snap);
            free(got);
        }
        break;
    }
    case OP_THREAD: {
        pthread_t t;
        int rc = als_thread_create(&t, NULL, thread_fn, &l);
        if (fuzz_observe(rc == 0, "als_thread_create: %s", als_strerror(rc)))
            pthread_join(t, NULL);
        break;
    }
    case OP_DRAIN:
        /* x says which: the helping drain runs tasks here. Not into a
         * one-worker pool, whose refusals task_fn checks against a queue
         * that only its worker empties. */
        if ((x & 1) && in->workers > 1)
            fuzz_observe(als_pool_drain_help(in->pool) == 0, "als_pool_drain_help");
        else
            fuzz_observe(als_pool_drain(in->pool) == 0, "als_pool_drain");
        break;
    default:
        check_model(th, m, true, "get");
        break;
    }
    check_model(th, m, true, "after an operation");
}

static void block(struct fthread *th, struct fm *m, int depth)
{
    while (th->pc < th->nops) {
        uint8_t op = th->ops[2 * th->pc] & 31, x = th->ops[2 * th->pc + 1];
        th->pc++;
        if (op == OP_END)
            return;
        step(th, m, depth, op, x);
    }
}

static void *thread_main(void *arg)
{
    struct fthread *th = arg;
    struct fm m = { .pbound = false };
    for (int s = 0; s < NSHARED; s++)
        m.val[s] = SHARED_DEF(s);
    m.exec = als_execution_async_id();
    m.trigger = als_trigger_async_id();
    check_model(th, &m, true, "thread start");
    while (th->pc < th->nops)
        block(th, &m, 0); /* a stray END at the top level just goes on */
    for (int i = 0; i < NREG; i++) {
        reg_clear(&th->snaps[i]);
        reg_clear(&th->binds[i]);
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fuzz_program_started();
    static struct input in; /* one input at a time */
    memset(&in, 0, sizeof in);
    uint8_t h = data[0];
    in.nthreads = 2 + (h & 1);
    in.how = (h >> 2) & 1 ? ALS_SHUTDOWN_CANCEL : ALS_SHUTDOWN_DRAIN;
    in.policy = (h >> 5) & 1 ? ALS_FULL_REJECT : ALS_FULL_BLOCK;
    in.workers = 1 + ((h >> 1) & 1);
    in.capacity = 4u << ((h >> 3) & 3);
    in.pool = als_pool_new(&(als_pool_options){ .threads = in.workers,
                                                .queue_capacity = in.capacity,
                                                .on_full = in.policy,
                                                .name = "fuzz" });
    if (!in.pool)
        abort();
    for (int s = 0; s < NSHARED; s++)
        in.shared[s] = als_new(&(als_options){ .default_value = SHARED_DEF(s) });

    /* Split the pairs between the threads. */
    static uint8_t prog[MAX_THREADS][2 * MAX_OPS];
    size_t npairs = (size - 1) / 2;
    for (size_t i = 0; i < npairs; i++) {
        uint8_t op = data[1 + 2 * i], x = data[2 + 2 * i];
        struct fthread *th = &in.th[(op >> 5) % in.nthreads];
        if (th->nops >= MAX_OPS)
            continue;
        prog[th - in.th][2 * th->nops] = op;
        prog[th - in.th][2 * th->nops + 1] = x;
        th->nops++;
    }
    pthread_t t[MAX_THREADS];
    for (int i = 0; i < in.nthreads; i++) {
        struct fthread *th = &in.th[i];
        th->index = i;
        th->in = &in;
        th->ops = prog[i];
        th->priv = als_new(&(als_options){ .default_value = PRIV_DEF(i) });
        pthread_mutex_init(&th->mu, NULL);
        pthread_cond_init(&th->cv, NULL);
    }
    for (int i = 0; i < in.nthreads; i++)
        if (als_thread_create(&t[i], NULL, thread_main, &in.th[i]) != 0)
            abort();
    for (int i = 0; i < in.nthreads; i++)
        pthread_join(t[i], NULL);

    /* Tasks may still be queued or delayed: the shutdown runs or cancels
     * them, and every accepted one must be accounted for. */
    fuzz_observe(als_pool_shutdown(in.pool, in.how) == 0, "als_pool_shutdown");
    als_pool_stats st;
    als_pool_stats_get(in.pool, &st);
    uint64_t accepted = atomic_load(&in.accepted), fn_runs = atomic_load(&in.fn_runs),
             cancels = atomic_load(&in.cancels), conts = atomic_load(&in.conts),
             fails = atomic_load(&in.fails);
    fuzz_observe(st.submitted == st.completed + st.failed + st.cancelled,
            "stats: submitted %" PRIu64 " != completed %" PRIu64 " + cancelled %" PRIu64,
            st.submitted, st.completed, st.cancelled);
    fuzz_observe(st.submitted >= accepted && st.completed + st.failed == fn_runs + conts &&
                st.failed == fails,
            "stats: submitted %" PRIu64 " completed %" PRIu64 " failed %" PRIu64
            "; accepted %" PRIu64 " ran %" PRIu64 " + %" PRIu64 " continuations, %" PRIu64
            " failing",
            st.submitted, st.completed, st.failed, accepted, fn_runs, conts, fails);
    fuzz_observe(st.rejected == atomic_load(&in.efull),
            "stats: rejected %" PRIu64 ", ALS_EFULL answers %" PRIu64, st.rejected,
            atomic_load(&in.efull));
    fuzz_observe(st.cancelled >= cancels, "stats: cancelled %" PRIu64 ", cancel callbacks %" PRIu64,
            st.cancelled, cancels);
    fuzz_observe(in.how == ALS_SHUTDOWN_CANCEL || st.cancelled == 0,
            "a DRAIN shutdown cancelled tasks");
    for (struct ftask *tk = atomic_load(&in.tasks); tk; tk = tk->next)
        fuzz_observe(atomic_load(&tk->ran) + atomic_load(&tk->cancelled) <= 1, "task ran twice");
    /* After a DRAIN everything ran (a CANCEL drops tasks without cancel
     * callbacks silently, by design). */
    for (int i = 0; i < in.nthreads && in.how == ALS_SHUTDOWN_DRAIN; i++)
        fuzz_observe(in.th[i].outstanding == 0, "thread %d: %ld tasks never ran", i,
                in.th[i].outstanding);

    als_pool_free(in.pool);
    struct mail *left = atomic_exchange(&in.mailbox, NULL);
    if (left) {
        als_snapshot_release(left->snap);
        free(left);
    }
    for (struct ftask *tk = atomic_load(&in.tasks), *next; tk; tk = next) {
        next = tk->next;
        free(tk);
    }
    for (int i = 0; i < in.nthreads; i++) {
        als_free(in.th[i].priv);
        pthread_cond_destroy(&in.th[i].cv);
        pthread_mutex_destroy(&in.th[i].mu);
    }
    for (int s = 0; s < NSHARED; s++)
        als_free(in.shared[s]);
    return 0;
}
