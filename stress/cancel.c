/* stress/cancel.c: cancellation scopes cancelled while work is submitted
 * inside them (issue 15).
 *
 * Each round makes a fresh pool and a random tree of scopes (als_cancel_new
 * inside als_cancel_run of its parent; some with short deadlines, a few
 * born past them). Submitter threads enter random scopes and submit every
 * kind of task inside (als_submit, als_submit_task with a cancel callback,
 * als_submit_after, als_submit_future with and without als_future_then,
 * als_group_submit into groups of each policy, als_thread_create threads,
 * tasks that submit tasks), grow the tree, and wait on futures and groups
 * from inside their scope. Canceller threads meanwhile cancel random scopes
 * (als_cancel), groups (als_group_cancel) and futures (als_future_cancel).
 *
 * The history is recorded as it happens: before any cancellation of a scope
 * its `requested` flag is set (by the canceller, or by a group's task that
 * is about to trigger its policy), after als_cancel returns its `done`
 * flag; each scope's deadline lies between the clock read before and after
 * its als_cancel_new plus its timeout. Workers record, the main thread
 * checks once the round is over:
 *   - every accepted task ran its fn exactly once or was cancelled exactly
 *     once, never both: fn + cancel == 1 with a cancel callback; without,
 *     fn at most once, and a task that did not run is counted by
 *     stats.cancelled, its future completes with ALS_ECANCELED (and so do
 *     its continuations), its group counts it;
 *   - a task that did not run belongs to a scope (or a descendant of one)
 *     that was cancelled or past its deadline, or to a future cancelled
 *     with als_future_cancel; its cancel callback saw als_cancelled() == 1;
 *   - every als_cancelled() == 1 seen by a task, callback or thread is
 *     explained by its scope chain's history at that moment (a cancel
 *     requested, or a deadline passed); every 0 is consistent with it too
 *     (no ancestor's als_cancel had returned, no deadline passed long
 *     before), and als_deadline_remaining agrees with the deadlines;
 *   - a submit refused with ALS_ECANCELED was made inside a scope already
 *     cancelled, and neither ran nor cancelled anything;
 *   - waits inside a scope return ALS_ECANCELED / ALS_ETIMEDOUT only when
 *     the scope's history (or the awaited work, or their own timeout)
 *     explains it, and otherwise what the final wait returns;
 *   - groups report consistently with their policy and their tasks;
 *   - stats: submitted == completed + failed + cancelled, completed +
 *     failed == fns run, failed == tasks that failed;
 *   - once everything is released, no scope is alive and no deadline is
 *     pending (ALS_FAULT_INJECTION builds), nothing leaks (ASan). */
#include "stress.h"

#include "als.h"
#include "internal.h" /* als__test_cancel_live, als__test_cancel_timers */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NODES 64
#define MAX_GROUP 6
#define BOARD 64
#define TASK_DEPTH 2
/* How long past a deadline a poll may still answer 0: the coarse clock's
 * lag (a tick) with room for a loaded machine. A correctness margin, not a
 * speed figure: a poll that ignored deadlines fails it at once. */
#define DEADLINE_SLACK_NS 50000000u

/* ---- the scope tree and its history ---------------------------------------- */

struct node {
    als_cancel_t *c;           /* NULL for a group's scope */
    als_group_t *group;        /* a group's scope: cancelled through it */
    int parent;                /* index, -1: a root */
    int64_t timeout;           /* < 0: no deadline of its own */
    uint64_t t_before, t_after; /* the clock around its creation */
    _Atomic int requested;     /* set before anything cancels it */
    _Atomic int done;          /* set once an als_cancel of it returned */
    _Atomic int ready;         /* the fields above are written */
};

enum kind { K_PLAIN, K_CANCEL, K_DELAYED, K_FUTURE, K_GROUP, K_THREAD, K_CONT, K_NESTED };
#define K_DRAWN (K_THREAD + 1) /* kinds a submitter draws */
static const char *const kind_name[] = { "plain",  "cancel", "delayed",      "future",
                                         "group",  "thread", "continuation", "nested" };

enum bad { B_NONE, B_UNEXPLAINED, B_MISSED, B_REMAINING };
static const char *const bad_name[] = { "", "als_cancelled() == 1 with nothing cancelled",
                                        "als_cancelled() == 0 after a cancel or deadline",
                                        "als_deadline_remaining disagrees with the deadlines" };

struct round;
struct grp;

struct rec {
    struct rec *next;          /* the round's list */
    struct round *rd;
    enum kind kind;
    int node;                  /* the scope it runs in; -1: none */
    int fail;                  /* non-zero: what its fn returns */
    int depth;
    int submit_rc;             /* 1: not submitted */
    bool refused_ok;           /* an ALS_ECANCELED explained when it came */
    _Atomic int fn_runs, cancel_runs, cancel_bad;
    _Atomic int obs, obs_seen, obs_bad;
    _Atomic int bad_code;
    als_future_t *future;
    struct rec *cont;          /* K_FUTURE: its continuation's record */
    struct rec *src;           /* K_CONT: its source's record */
    _Atomic int future_cancelled; /* als_future_cancel returned 0 */
    struct grp *grp;           /* K_GROUP */
    /* A wait inside the scope (futures): */
    bool waited;
    int64_t wait_timeout;
    int wait_rc;
    bool wait_explained;
};

struct grp {
    struct grp *next;
    als_group_t *g;
    int node;                  /* the group's own scope */
    enum als_group_policy policy;
    struct rec *recs[MAX_GROUP];
    int n;
    bool waited;
    int64_t wait_timeout;
    int wait_rc;
    bool wait_explained;
};

struct round {
    als_pool_t *pool;
    struct node nodes[MAX_NODES];
    _Atomic int nnodes;        /* slots claimed (may pass MAX_NODES) */
    _Atomic(struct rec *) recs;
    _Atomic(struct grp *) groups;
    _Atomic(struct rec *) futures[BOARD]; /* for als_future_cancel */
    _Atomic int submitters;    /* still running */
    _Atomic uint64_t fn_runs, failures;
};

static _Thread_local int cur_node = -1; /* a submitter's or thread's scope */

static struct node *node_at(struct round *rd, int i)
{
    return i >= 0 && atomic_load_explicit(&rd->nodes[i].ready, memory_order_acquire)
           ? &rd->nodes[i]
           : NULL;
}

/* A random ready node, or -1. */
static int pick_node(struct round *rd, struct rng *r)
{
    int n = atomic_load_explicit(&rd->nnodes, memory_order_relaxed);
    if (n > MAX_NODES)
        n = MAX_NODES;
    if (n == 0)
        return -1;
    int i = (int)rng_below(r, (uint32_t)n);
    return node_at(rd, i) ? i : -1;
}

/* Claims a node slot under the current scope; -1 when the table is full. */
static int node_claim(struct round *rd)
{
    int i = atomic_fetch_add_explicit(&rd->nnodes, 1, memory_order_relaxed);
    if (i >= MAX_NODES)
        return -1;
    rd->nodes[i].parent = cur_node;
    rd->nodes[i].timeout = -1;
    return i;
}

static void node_publish(struct round *rd, int i)
{
    atomic_store_explicit(&rd->nodes[i].ready, 1, memory_order_release);
}

/* A new scope, child of the current one (the caller runs inside it). */
static int node_new(struct round *rd, struct rng *r)
{
    int i = node_claim(rd);
    if (i < 0)
        return -1;
    struct node *n = &rd->nodes[i];
    uint32_t t = rng_below(r, 20);
    n->timeout = t < 12   ? -1
                 : t < 17 ? (int64_t)(100000 + rng_below(r, 10000000))  /* 0.1-10 ms */
                 : t < 19 ? (int64_t)(10000000 + rng_below(r, 40000000)) /* 10-50 ms */
                          : 0;                                           /* born past it */
    n->t_before = stress_now_ns();
    n->c = als_cancel_new(n->timeout);
    n->t_after = stress_now_ns();
    if (!CHECK(n->c, "als_cancel_new"))
        abort();
    node_publish(rd, i);
    return i;
}

/* Whether node i's history explains a cancellation seen before time t:
 * a cancel of it or an ancestor was requested, or a deadline in the chain
 * had passed (its deadline is at least t_before + timeout, and a child's is
 * the earlier of its own and its parent's). */
static bool chain_explains(struct round *rd, int i, uint64_t t)
{
    for (; i >= 0; i = rd->nodes[i].parent) {
        const struct node *n = &rd->nodes[i];
        /* Acquire: a canceller's flag, published before its als_cancel,
         * which happens before whatever saw the cancellation. */
        if (atomic_load_explicit(&n->requested, memory_order_acquire))
            return true;
        if (n->timeout >= 0 && n->t_before + (uint64_t)n->timeout <= t)
            return true;
    }
    return false;
}

/* Whether a poll starting at time t must see node i cancelled: an
 * als_cancel of it or an ancestor had returned, or a deadline of the chain
 * had passed long ago. */
static bool chain_requires(struct round *rd, int i, uint64_t t)
{
    for (; i >= 0; i = rd->nodes[i].parent) {
        const struct node *n = &rd->nodes[i];
        if (atomic_load_explicit(&n->done, memory_order_acquire))
            return true;
        if (n->timeout >= 0 && n->t_after + (uint64_t)n->timeout + DEADLINE_SLACK_NS <= t)
            return true;
    }
    return false;
}

/* The latest the chain's deadline can be (absolute ns); UINT64_MAX: none. */
static uint64_t chain_deadline_max(struct round *rd, int i)
{
    uint64_t d = UINT64_MAX;
    for (; i >= 0; i = rd->nodes[i].parent) {
        const struct node *n = &rd->nodes[i];
        if (n->timeout >= 0 && n->t_after + (uint64_t)n->timeout < d)
            d = n->t_after + (uint64_t)n->timeout;
    }
    return d;
}

static void mark_bad(struct rec *c, enum bad b)
{
    atomic_fetch_add_explicit(&c->obs_bad, 1, memory_order_relaxed);
    int none = B_NONE;
    atomic_compare_exchange_strong_explicit(&c->bad_code, &none, (int)b, memory_order_relaxed,
                                            memory_order_relaxed);
}

/* Polls als_cancelled() and als_deadline_remaining() and records whether
 * they agree with node `i`'s history. Returns what als_cancelled said. */
static int observe(struct rec *c, int i)
{
    struct round *rd = c->rd;
    uint64_t t0 = stress_now_ns();
    bool must = i >= 0 && chain_requires(rd, i, t0);
    int seen = als_cancelled();
    int64_t left = als_deadline_remaining();
    uint64_t t1 = stress_now_ns();
    atomic_fetch_add_explicit(&c->obs, 1, memory_order_relaxed);
    if (seen) {
        atomic_fetch_add_explicit(&c->obs_seen, 1, memory_order_relaxed);
        if (i < 0 || !chain_explains(rd, i, t1))
            mark_bad(c, B_UNEXPLAINED);
    } else if (must) {
        mark_bad(c, B_MISSED);
    }
    uint64_t dmax = i >= 0 ? chain_deadline_max(rd, i) : UINT64_MAX;
    bool left_ok;
    if (dmax == UINT64_MAX) /* no deadline: none, or 0 once cancelled */
        left_ok = left == INT64_MAX || (left == 0 && i >= 0);
    else /* at most what was left of the latest possible deadline at t0 */
        left_ok = left >= 0 && left != INT64_MAX && (uint64_t)left <= (dmax > t0 ? dmax - t0 : 0);
    if (!left_ok)
        mark_bad(c, B_REMAINING);
    return seen;
}

/* ---- records and tasks -------------------------------------------------------- */

static struct rec *rec_new(struct round *rd, enum kind k, int node, int depth, uint32_t r)
{
    struct rec *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->rd = rd;
    c->kind = k;
    c->node = node;
    c->depth = depth;
    /* Future fns cannot fail: their result is the future's. */
    c->fail = k != K_FUTURE && k != K_CONT && r % 5 == 0 ? 100 + (int)(r % 50) : 0;
    c->submit_rc = 1;
    STRESS_PUSH(rd->recs, c);
    return c;
}

static int submit_rec(struct rec *c);

/* Records what a submit answered: ALS_ECANCELED must come from a scope
 * already cancelled (the task's own, or the submitter's). */
static int note_submit(struct rec *c, int rc, int submitter_node)
{
    c->submit_rc = rc;
    if (rc == ALS_ECANCELED) {
        uint64_t t = stress_now_ns();
        c->refused_ok = chain_explains(c->rd, c->node, t) ||
                        (submitter_node >= 0 && chain_explains(c->rd, submitter_node, t));
    }
    return rc;
}

/* What every task fn does: count, poll, maybe submit one more. */
static int run_rec(struct rec *c)
{
    struct round *rd = c->rd;
    atomic_fetch_add_explicit(&c->fn_runs, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&rd->fn_runs, 1, memory_order_relaxed);
    observe(c, c->node);
    uint32_t r = (uint32_t)((uintptr_t)c >> 4);
    if (c->depth < TASK_DEPTH && r % 3 == 0) {
        struct rec *n = rec_new(rd, r % 2 ? K_NESTED : K_CANCEL, c->node, c->depth + 1, r / 7);
        note_submit(n, submit_rec(n), c->node);
    }
    if (c->grp) {
        /* The policy's cancellation is about to happen: into the history
         * first (this task's return happens before it). */
        bool trigger = c->grp->policy == ALS_GROUP_FAIL_FAST ? c->fail != 0
                       : c->grp->policy == ALS_GROUP_FIRST_SUCCESS ? c->fail == 0
                                                                   : false;
        if (trigger)
            atomic_store_explicit(&rd->nodes[c->node].requested, 1, memory_order_release);
    }
    if (c->fail)
        atomic_fetch_add_explicit(&rd->failures, 1, memory_order_relaxed);
    return c->fail;
}

static int plain_fn(void *arg)
{
    return run_rec(arg);
}

static void cancel_fn(void *arg)
{
    struct rec *c = arg;
    atomic_fetch_add_explicit(&c->cancel_runs, 1, memory_order_relaxed);
    /* Cancelled because its scope was: it runs in that scope, so it sees
     * the cancellation, and the history explains it. */
    if (!observe(c, c->node))
        atomic_fetch_add_explicit(&c->cancel_bad, 1, memory_order_relaxed);
}

static void *future_fn(void *arg)
{
    run_rec(arg);
    return arg;
}

/* A continuation gets its source's result: the source's record. */
static void *cont_fn(void *arg)
{
    struct rec *src = arg;
    run_rec(src->cont);
    return src->cont;
}

static void board_put(struct round *rd, struct rec *c, struct rng *r)
{
    atomic_store_explicit(&rd->futures[rng_below(r, BOARD)], c, memory_order_release);
}

/* Submits c the way its kind says (inside the caller's current scope). */
static int submit_rec(struct rec *c)
{
    als_pool_t *pool = c->rd->pool;
    switch (c->kind) {
    case K_CANCEL:
        return als_submit_task(pool, &(als_task){ .fn = plain_fn, .arg = c, .cancel = cancel_fn });
    case K_DELAYED:
        return als_submit_after(pool, ((uintptr_t)c >> 4) % 3000000, plain_fn, c);
    case K_FUTURE:
        return als_submit_future(pool, future_fn, c, &c->future);
    case K_GROUP:
        return als_group_submit(c->grp->g, pool, plain_fn, c);
    default:
        return als_submit(pool, plain_fn, c);
    }
}

/* ---- what submitters do inside a scope ----------------------------------------- */

struct batch {
    struct round *rd;
    struct rng *r;
    unsigned left;
};

static void *thread_body(void *arg)
{
    struct rec *c = arg;
    cur_node = c->node;
    observe(c, c->node);
    /* What the thread submits carries the scope it inherited. */
    struct rec *n = rec_new(c->rd, K_CANCEL, c->node, TASK_DEPTH, (uint32_t)(uintptr_t)c);
    note_submit(n, submit_rec(n), c->node);
    return NULL;
}

static _Atomic uint64_t scope_cancels, group_cancels, future_cancels;

static void future_cancel(struct rec *c)
{
    if (als_future_cancel(c->future) == 0) {
        atomic_store_explicit(&c->future_cancelled, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&future_cancels, 1, memory_order_relaxed);
    }
}

static void do_future(struct batch *b)
{
    struct round *rd = b->rd;
    struct rec *c = rec_new(rd, K_FUTURE, cur_node, TASK_DEPTH, 0);
    if (rng_one_in(b->r, 2))
        c->cont = rec_new(rd, K_CONT, cur_node, TASK_DEPTH, 1);
    if (note_submit(c, submit_rec(c), cur_node) != 0)
        return;
    board_put(rd, c, b->r);
    if (rng_one_in(b->r, 6))
        future_cancel(c); /* at once, while it likely waits in the queue */
    if (c->cont) {
        c->cont->src = c;
        note_submit(c->cont, als_future_then(c->future, rd->pool, cont_fn, &c->cont->future),
                    cur_node);
    }
    if (rng_one_in(b->r, 4)) {
        /* A wait inside the scope: the scope's cancel or deadline ends it. */
        c->waited = true;
        c->wait_timeout = rng_one_in(b->r, 2) ? -1 : (int64_t)rng_below(b->r, 2000000);
        void *res = NULL;
        c->wait_rc = als_future_wait(c->future, c->wait_timeout, &res);
        c->wait_explained = cur_node >= 0 && chain_explains(rd, cur_node, stress_now_ns());
        if (c->wait_rc == 0)
            CHECK(res == c, "future result %p, want %p", res, (void *)c);
    }
}

static void do_group(struct batch *b)
{
    struct round *rd = b->rd;
    int i = node_claim(rd);
    if (i < 0)
        return;
    struct grp *g = calloc(1, sizeof *g);
    if (!g)
        abort();
    g->policy = (enum als_group_policy)rng_below(b->r, 3);
    g->node = i; /* its scope: a child of the current one, no deadline of its own */
    g->g = rd->nodes[i].group = als_group_new_policy(g->policy);
    if (!CHECK(g->g, "als_group_new_policy(%d)", (int)g->policy))
        abort();
    node_publish(rd, i);
    STRESS_PUSH(rd->groups, g);
    int n = 1 + (int)rng_below(b->r, MAX_GROUP);
    for (int k = 0; k < n; k++) {
        struct rec *c = rec_new(rd, K_GROUP, i, TASK_DEPTH, (uint32_t)rng_next(b->r));
        c->grp = g;
        g->recs[g->n++] = c;
        note_submit(c, submit_rec(c), cur_node);
    }
    if (rng_one_in(b->r, 4)) {
        g->waited = true;
        g->wait_timeout = rng_one_in(b->r, 2) ? -1 : (int64_t)rng_below(b->r, 2000000);
        g->wait_rc = als_group_wait(g->g, g->wait_timeout);
        g->wait_explained = cur_node >= 0 && chain_explains(rd, cur_node, stress_now_ns());
    }
}

static void *batch_fn(void *arg)
{
    struct batch *b = arg;
    struct round *rd = b->rd;
    unsigned n = 1 + rng_below(b->r, 12);
    while (n-- && b->left) {
        b->left--;
        enum kind k = (enum kind)rng_below(b->r, K_DRAWN);
        if (k == K_FUTURE) {
            do_future(b);
        } else if (k == K_GROUP) {
            do_group(b);
        } else if (k == K_THREAD) {
            struct rec *c = rec_new(rd, K_THREAD, cur_node, TASK_DEPTH, 0);
            pthread_t t;
            c->submit_rc = als_thread_create(&t, NULL, thread_body, c);
            if (CHECK(c->submit_rc == 0, "als_thread_create: %s", als_strerror(c->submit_rc)))
                pthread_join(t, NULL);
        } else {
            struct rec *c = rec_new(rd, k, cur_node, 0, (uint32_t)rng_next(b->r));
            note_submit(c, submit_rec(c), cur_node);
        }
    }
    return NULL;
}

static void *in_node(void *arg);

struct visit {
    struct batch *b;
    int node;
};

/* Runs a batch inside node i's scope (or outside any with -1), sometimes
 * growing the tree there first. */
static void visit(struct batch *b, int i)
{
    int saved = cur_node;
    struct visit v = { b, i };
    if (i < 0) {
        cur_node = -1;
        in_node(&v);
    } else {
        als_cancel_run(b->rd->nodes[i].c, in_node, &v);
    }
    cur_node = saved;
}

static void *in_node(void *arg)
{
    struct visit *v = arg;
    struct batch *b = v->b;
    cur_node = v->node;
    if (v->node >= 0 && rng_one_in(b->r, 6)) {
        int child = node_new(b->rd, b->r);
        if (child >= 0 && rng_one_in(b->r, 2)) {
            visit(b, child); /* nested: the child's scope inside its parent's */
            return NULL;
        }
    }
    batch_fn(b);
    return NULL;
}

struct worker {
    struct round *rd;
    uint64_t seed;
    unsigned budget;
    pthread_t thread;
};

/* Adds a child to the current scope (the main thread's first tree). */
static void *grow_fn(void *arg)
{
    struct batch *b = arg;
    node_new(b->rd, b->r);
    return NULL;
}

static void *submitter_main(void *arg)
{
    struct worker *w = arg;
    struct round *rd = w->rd;
    struct rng r = rng_for(w->seed);
    struct batch b = { rd, &r, w->budget };
    while (b.left) {
        int i = rng_one_in(&r, 10) ? -1 : pick_node(rd, &r);
        if (i >= 0 && !rd->nodes[i].c)
            i = -1; /* a group's scope is entered through its tasks only */
        visit(&b, i);
    }
    atomic_fetch_sub_explicit(&rd->submitters, 1, memory_order_release);
    return NULL;
}

static void *canceller_main(void *arg)
{
    struct worker *w = arg;
    struct round *rd = w->rd;
    struct rng r = rng_for(w->seed);
    for (unsigned k = 0; k < w->budget; k++) {
        if (!atomic_load_explicit(&rd->submitters, memory_order_acquire))
            break;
        stress_idle_ns(rng_below(&r, 1500000)); /* spread the cancels over the round */
        if (rng_one_in(&r, 4)) {
            struct rec *c = atomic_load_explicit(&rd->futures[rng_below(&r, BOARD)],
                                                 memory_order_acquire);
            if (c)
                future_cancel(c);
            continue;
        }
        int i = pick_node(rd, &r);
        if (i < 0)
            continue;
        struct node *n = &rd->nodes[i];
        atomic_store_explicit(&n->requested, 1, memory_order_release);
        if (n->c) {
            CHECK(als_cancel(n->c) == 0, "als_cancel");
            atomic_fetch_add_explicit(&scope_cancels, 1, memory_order_relaxed);
        } else {
            CHECK(als_group_cancel(n->group) == 0, "als_group_cancel");
            atomic_fetch_add_explicit(&group_cancels, 1, memory_order_relaxed);
        }
        atomic_store_explicit(&n->done, 1, memory_order_release);
    }
    return NULL;
}

/* ---- the checks, on the main thread once the round is over --------------------- */

static uint64_t rounds, tasks_accepted, tasks_ran, tasks_cancelled, refused, observations,
    seen_cancelled, scopes_made, scope_waits, waits_cut;

static bool check_obs(struct rec *c)
{
    int bad = atomic_load(&c->obs_bad);
    observations += (uint64_t)atomic_load(&c->obs);
    seen_cancelled += (uint64_t)atomic_load(&c->obs_seen);
    return CHECK(bad == 0, "%s task in scope %d: %d bad polls, first: %s", kind_name[c->kind],
                 c->node, bad, bad_name[atomic_load(&c->bad_code)]);
}

/* A wait inside a scope: ALS_ECANCELED and ALS_ETIMEDOUT need a reason,
 * anything else is what the final wait says. */
static bool check_scope_wait(const char *what, int rc, int final, int64_t timeout, bool explained,
                             bool work_cancelled)
{
    scope_waits++;
    if (rc == ALS_ECANCELED || rc == ALS_ETIMEDOUT)
        waits_cut++;
    bool ok = rc == final || (rc == ALS_ECANCELED && (explained || work_cancelled)) ||
              (rc == ALS_ETIMEDOUT && (explained || timeout >= 0));
    return CHECK(ok, "%s wait inside a scope gave %s (timeout %" PRId64 "), finally %s, scope "
                 "history %s", what, als_strerror(rc), timeout, als_strerror(final),
                 explained ? "cancelled" : "not cancelled");
}

struct tally {
    uint64_t accepted, not_run, conts, cont_ran;
};

static void check_rec(struct round *rd, struct rec *c, uint64_t now, struct tally *t)
{
    int fn = atomic_load(&c->fn_runs), cancel = atomic_load(&c->cancel_runs);
    check_obs(c);
    if (c->kind == K_THREAD || c->submit_rc == 1)
        return; /* a thread, or a continuation whose source was refused */
    if (c->submit_rc != 0) {
        refused++;
        CHECK(c->submit_rc == ALS_ECANCELED, "%s submit: %s", kind_name[c->kind],
              als_strerror(c->submit_rc));
        CHECK(c->refused_ok, "%s submit refused with ALS_ECANCELED in a scope not cancelled",
              kind_name[c->kind]);
        CHECK(fn == 0 && cancel == 0, "refused %s task: fn %d, cancel %d", kind_name[c->kind],
              fn, cancel);
        return;
    }
    bool fcancelled = c->kind == K_FUTURE && atomic_load(&c->future_cancelled);
    bool explained = chain_explains(rd, c->node, now) || fcancelled ||
                     (c->kind == K_CONT && atomic_load(&c->src->fn_runs) == 0);
    if (c->kind == K_CONT) {
        t->conts++;
        t->cont_ran += (uint64_t)fn;
    } else {
        t->accepted++;
        t->not_run += fn == 0;
    }
    tasks_ran += fn == 1;
    tasks_cancelled += fn == 0;
    if (c->kind == K_CANCEL) {
        CHECK(fn + cancel == 1, "task with a cancel callback: fn %d, cancel %d", fn, cancel);
        CHECK(atomic_load(&c->cancel_bad) == 0, "a cancel callback saw als_cancelled() == 0");
    } else {
        CHECK(fn <= 1 && cancel == 0, "%s task: fn %d, cancel %d", kind_name[c->kind], fn,
              cancel);
    }
    if (fn == 0)
        CHECK(explained, "%s task in scope %d did not run, and nothing cancelled it",
              kind_name[c->kind], c->node);
    if (c->kind == K_FUTURE || c->kind == K_CONT) {
        void *res = NULL;
        int w = als_future_wait(c->future, -1, &res);
        CHECK((w == 0 && fn == 1 && res == c) || (w == ALS_ECANCELED && fn == 0),
              "%s: wait %s, fn ran %d times", kind_name[c->kind], als_strerror(w), fn);
        if (fcancelled)
            CHECK(fn == 0, "als_future_cancel returned 0, yet the task ran");
        if (c->waited)
            check_scope_wait("future", c->wait_rc, w, c->wait_timeout, c->wait_explained,
                             w == ALS_ECANCELED);
    }
}

static void check_group(struct round *rd, struct grp *g, uint64_t now)
{
    int w = als_group_wait(g->g, -1), first = 0;
    als_group_first_error(g->g, &first);
    int accepted = 0, ran_ok = 0, failed = 0, not_run = 0;
    bool first_ok = false;
    for (int k = 0; k < g->n; k++) {
        struct rec *c = g->recs[k];
        if (c->submit_rc != 0)
            continue;
        accepted++;
        if (atomic_load(&c->fn_runs) == 0) {
            not_run++;
        } else if (c->fail) {
            failed++;
            first_ok |= first == c->fail;
        } else {
            ran_ok++;
        }
    }
    int want = g->policy == ALS_GROUP_FIRST_SUCCESS && ran_ok ? 0
               : failed                                      ? ALS_ETASK
               : not_run                                     ? ALS_ECANCELED
                                                             : 0;
    bool ok = w == want && (want != ALS_ETASK || first_ok);
    /* A group whose scope was cancelled before any task was accepted. */
    if (accepted == 0 && w == ALS_ECANCELED)
        ok = chain_explains(rd, g->node, now);
    CHECK(ok, "group (policy %d) wait %s, first error %d: %d accepted, %d ok, %d failed, %d "
          "cancelled", (int)g->policy, als_strerror(w), first, accepted, ran_ok, failed, not_run);
    if (g->waited)
        check_scope_wait("group", g->wait_rc, w, g->wait_timeout, g->wait_explained,
                         not_run > 0);
}

static void check_stats(const als_pool_stats *st, const struct tally *t, uint64_t fn_runs,
                        uint64_t failures)
{
    CHECK(st->submitted == st->completed + st->failed + st->cancelled,
          "stats: submitted %" PRIu64 " != completed %" PRIu64 " + failed %" PRIu64
          " + cancelled %" PRIu64, st->submitted, st->completed, st->failed, st->cancelled);
    CHECK(st->queued == 0 && st->running == 0, "stats: queued %" PRIu64 " running %" PRIu64,
          st->queued, st->running);
    CHECK(st->completed + st->failed == fn_runs,
          "stats: completed + failed = %" PRIu64 ", fns ran %" PRIu64,
          st->completed + st->failed, fn_runs);
    CHECK(st->failed == failures, "stats: failed %" PRIu64 ", tasks failed %" PRIu64, st->failed,
          failures);
    /* Continuations are submitted by the library when their source
     * completes: one whose source was cancelled may or may not count. */
    CHECK(st->submitted >= t->accepted + t->cont_ran && st->submitted <= t->accepted + t->conts,
          "stats: submitted %" PRIu64 ", tasks accepted %" PRIu64 " + continuations (%" PRIu64
          " ran of %" PRIu64 ")", st->submitted, t->accepted, t->cont_ran, t->conts);
    CHECK(st->cancelled >= t->not_run && st->cancelled <= t->not_run + t->conts - t->cont_ran,
          "stats: cancelled %" PRIu64 ", tasks that did not run %" PRIu64, st->cancelled,
          t->not_run);
}

/* ---- a round ------------------------------------------------------------------- */

static void one_round(uint64_t n)
{
    struct round *rd = calloc(1, sizeof *rd);
    if (!rd)
        abort();
    struct rng r = rng_for(n + 1);
    als_pool_options o = {
        .threads = 1 + rng_below(&r, 4),
        .queue_capacity = 16u << rng_below(&r, 6),
        .name = "cancel",
    };
    rd->pool = als_pool_new(&o);
    if (!CHECK(rd->pool, "als_pool_new"))
        abort();

    /* The first few scopes: roots and their children, each made inside its
     * parent's als_cancel_run by the main thread. */
    int roots = 1 + (int)rng_below(&r, 3), extra = 2 + (int)rng_below(&r, 8);
    for (int k = 0; k < roots; k++)
        node_new(rd, &r);
    for (int k = 0; k < extra; k++) {
        int p = pick_node(rd, &r);
        struct batch b = { rd, &r, 0 };
        if (p >= 0) {
            cur_node = p;
            als_cancel_run(rd->nodes[p].c, grow_fn, &b);
            cur_node = -1;
        }
    }

    int nsub = stress.small ? 1 : 2 + (int)rng_below(&r, 2), ncan = 1 + (int)rng_below(&r, 2);
    struct worker subs[3], cans[2];
    atomic_store(&rd->submitters, nsub);
    for (int k = 0; k < nsub; k++) {
        subs[k] = (struct worker){ .rd = rd, .seed = rng_next(&r), .budget = stress.small ? 40 : 150 };
        if (pthread_create(&subs[k].thread, NULL, submitter_main, &subs[k]))
            abort();
    }
    for (int k = 0; k < ncan; k++) {
        cans[k] = (struct worker){ .rd = rd, .seed = rng_next(&r), .budget = 2 + rng_below(&r, 10) };
        if (pthread_create(&cans[k].thread, NULL, canceller_main, &cans[k]))
            abort();
    }
    for (int k = 0; k < nsub; k++)
        pthread_join(subs[k].thread, NULL);
    for (int k = 0; k < ncan; k++)
        pthread_join(cans[k].thread, NULL);

    CHECK(als_pool_shutdown(rd->pool, ALS_SHUTDOWN_DRAIN) == 0, "als_pool_shutdown");
    als_pool_stats st;
    bool stats_ok = CHECK(als_pool_stats_get(rd->pool, &st) == 0, "als_pool_stats_get");
    uint64_t now = stress_now_ns();
    struct tally t = { 0 };
    for (struct rec *c = atomic_load(&rd->recs); c; c = c->next)
        check_rec(rd, c, now, &t);
    for (struct grp *g = atomic_load(&rd->groups); g; g = g->next)
        check_group(rd, g, now);
    if (stats_ok)
        check_stats(&st, &t, atomic_load(&rd->fn_runs), atomic_load(&rd->failures));
    tasks_accepted += t.accepted + t.conts;

    /* Release everything; then no scope may be left alive. */
    als_pool_free(rd->pool);
    for (struct rec *c = atomic_load(&rd->recs), *next; c; c = next) {
        next = c->next;
        als_future_release(c->future);
        free(c);
    }
    for (struct grp *g = atomic_load(&rd->groups), *next; g; g = next) {
        next = g->next;
        als_group_free(g->g);
        free(g);
    }
    int made = atomic_load(&rd->nnodes);
    made = made > MAX_NODES ? MAX_NODES : made;
    for (int k = 0; k < made; k++)
        als_cancel_release(rd->nodes[k].c);
    scopes_made += (uint64_t)made;
#ifdef ALS_FAULT_INJECTION
    long timers = als__test_cancel_timers(), live = als__test_cancel_live();
    CHECK(timers == 0 && live == 0, "after the round: %ld scopes alive, %ld deadlines pending",
          live, timers);
#endif
    free(rd);
}

int main(int argc, char **argv)
{
    stress_init(argc, argv, "cancel", 3.0, NULL);
    uint64_t min_rounds = stress.small ? 10 : 50;
    while (rounds < min_rounds || stress_time_left())
        one_round(rounds++);
    stress_figure("rounds (pools)", "%" PRIu64, rounds);
    stress_figure("scopes and group scopes made", "%" PRIu64, scopes_made);
    stress_figure("cancels: scopes / groups / futures", "%" PRIu64 " / %" PRIu64 " / %" PRIu64,
                  atomic_load(&scope_cancels), atomic_load(&group_cancels),
                  atomic_load(&future_cancels));
    stress_figure("tasks accepted", "%" PRIu64, tasks_accepted);
    stress_figure("tasks ran / cancelled", "%" PRIu64 " / %" PRIu64, tasks_ran, tasks_cancelled);
    stress_figure("submits refused (ALS_ECANCELED)", "%" PRIu64, refused);
    stress_figure("polls / saw cancelled", "%" PRIu64 " / %" PRIu64, observations,
                  seen_cancelled);
    stress_figure("waits inside scopes / cut short", "%" PRIu64 " / %" PRIu64, scope_waits,
                  waits_cut);
    return stress_finish();
}
