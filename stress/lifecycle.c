/* stress/lifecycle.c: shutdown racing everything, hundreds of fresh pools.
 *
 * Each round makes a new pool (random size, queue capacity and full
 * policy), starts submitter threads that submit every kind of task as fast
 * as they can (plain tasks with and without cancel callbacks, tasks that
 * fail, tasks that submit tasks, delayed tasks, futures with continuations,
 * group tasks) until the pool refuses, and a shutdown thread that, after a
 * random number of submits of its own, shuts the pool down: DRAIN, CANCEL,
 * or DRAIN upgraded to CANCEL by a second, concurrent call. Some rounds skip
 * the shutdown and let als_pool_free do it.
 *
 * Every task record is kept until the round is over, then checked:
 *   - an accepted task ran its fn or its cancel exactly once (a task
 *     without a cancel callback: fn at most once); a refused one, neither;
 *   - after a DRAIN-only shutdown nothing was cancelled;
 *   - every future and group has settled, consistently with its tasks;
 *   - als_pool_stats_get after the shutdown: submitted == completed +
 *     failed + cancelled, nothing queued or running, and each figure equals
 *     what the tasks themselves counted (fn runs, failures, on_error calls,
 *     cancellations, ALS_EFULL answers);
 *   - every value bound in a destroy-owning store (by submitters, by tasks,
 *     by enter_with at a thread's top level) was destroyed exactly once,
 *     never while a task could still read it (values are poisoned on
 *     destroy and every read checks). */
#include "stress.h"

#include "als.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIVE 0x11fe11feu
#define DEAD 0xdeadbeefu
#define MAX_SUBMITS 200        /* per submitter per round, a backstop */
#define TASK_DEPTH 3

/* ---- values owned by the store --------------------------------------------- */

struct token {
    uint32_t magic;            /* plain: a destroy racing a read is a data race */
    _Atomic int destroyed;
    struct token *next;        /* the round's list */
};

static als_t *tokstore;
static _Atomic uint64_t tokens_made, tokens_destroyed, double_destroys;

static void token_destroy(void *v)
{
    struct token *t = v;
    if (atomic_fetch_add_explicit(&t->destroyed, 1, memory_order_relaxed) != 0) {
        atomic_fetch_add_explicit(&double_destroys, 1, memory_order_relaxed);
        return;
    }
    CHECK(t->magic == LIVE, "destroy of a value that is not live (%#x)", t->magic);
    t->magic = DEAD;
    atomic_fetch_add_explicit(&tokens_destroyed, 1, memory_order_relaxed);
}

/* ---- a round ------------------------------------------------------------------ */

enum kind { K_PLAIN, K_CANCEL, K_NESTED, K_DELAYED, K_FUTURE, K_CONT, K_GROUP, K_COUNT };

struct round;

struct rec {
    struct rec *next;          /* the round's list */
    struct round *rd;
    enum kind kind;
    struct token *tok;         /* the value the task must see */
    int fail;                  /* non-zero: the result it returns */
    int depth;
    _Atomic int fn_runs, cancel_runs;
    int submit_rc;             /* written before the round's joins */
    als_future_t *future;      /* K_FUTURE/K_CONT: the handle, released at the end */
    struct rec *cont;          /* K_FUTURE: its continuation's record, or NULL */
};

struct grp {
    struct grp *next;
    als_group_t *g;
    struct rec *recs[4];
    int n;
};

struct round {
    als_pool_t *pool;
    struct rng rng;
    _Atomic(struct rec *) recs;
    _Atomic(struct token *) tokens;
    _Atomic(struct grp *) groups;
    _Atomic uint64_t fn_runs, cancel_runs, failures, on_errors, efull, bad_value;
    _Atomic int stop;          /* submitters: the pool said ALS_ESHUTDOWN */
    int how;                   /* -1: no shutdown call (als_pool_free does it) */
    bool upgrade;              /* a second CANCEL call races a DRAIN */
    unsigned shutdown_after;   /* submits the shutdown thread makes first */
    uint64_t closer_seed;
};

static struct token *token_new(struct round *rd)
{
    struct token *t = calloc(1, sizeof *t);
    if (!t)
        abort();
    t->magic = LIVE;
    atomic_fetch_add_explicit(&tokens_made, 1, memory_order_relaxed);
    STRESS_PUSH(rd->tokens, t);
    return t;
}

static struct rec *rec_new(struct round *rd, enum kind k, struct token *tok, int depth,
                           uint32_t r)
{
    struct rec *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->rd = rd;
    c->kind = k;
    c->tok = tok;
    c->depth = depth;
    /* Futures have no failure: their task's result is the future's. */
    c->fail = k != K_FUTURE && k != K_CONT && r % 7 == 0 ? 100 + (int)(r % 50) : 0;
    c->submit_rc = 1; /* not submitted yet */
    STRESS_PUSH(rd->recs, c);
    return c;
}

/* The context the task runs in holds its token, alive. */
static void check_value(struct rec *c, const char *who)
{
    struct token *t = als_get(tokstore);
    bool ok = t == c->tok && (!t || t->magic == LIVE);
    if (!ok)
        atomic_fetch_add_explicit(&c->rd->bad_value, 1, memory_order_relaxed);
    CHECK(ok, "%s sees value %p (magic %#x), want %p", who, (void *)t, t ? t->magic : 0,
          (void *)c->tok);
}

static int submit_rec(als_pool_t *pool, struct rec *c);

static void *task_inner(void *arg)
{
    struct token *t = arg;
    CHECK(als_get(tokstore) == t && t->magic == LIVE, "a task's own binding");
    return arg;
}

/* What every task body does: check, count, maybe bind and submit more. */
static int run_rec(struct rec *c)
{
    struct round *rd = c->rd;
    check_value(c, "task");
    if (atomic_fetch_add_explicit(&c->fn_runs, 1, memory_order_relaxed) != 0)
        CHECK(false, "task fn ran twice (kind %d)", c->kind);
    atomic_fetch_add_explicit(&rd->fn_runs, 1, memory_order_relaxed);

    uint32_t r = (uint32_t)(uintptr_t)c >> 4;
    if (r % 3 == 0) {
        /* A value bound by the task itself: destroyed on this worker. */
        struct token *mine = token_new(rd);
        als_run(tokstore, mine, task_inner, mine);
    }
    if (c->depth < TASK_DEPTH && (r % 4 == 0 || c->kind == K_NESTED)) {
        struct rec *n = rec_new(rd, K_NESTED, c->tok, c->depth + 1, r / 5);
        n->submit_rc = submit_rec(rd->pool, n);
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
    check_value(c, "cancel callback");
    if (atomic_fetch_add_explicit(&c->cancel_runs, 1, memory_order_relaxed) != 0)
        CHECK(false, "cancel ran twice");
    atomic_fetch_add_explicit(&c->rd->cancel_runs, 1, memory_order_relaxed);
}

static void *future_fn(void *arg)
{
    struct rec *c = arg;
    run_rec(c);
    return c;
}

/* A continuation gets its source's result, the source's record. It runs in
 * the context of the als_future_then call: the submitter's, same value. */
static void *cont_fn(void *arg)
{
    struct rec *src = arg;
    run_rec(src->cont);
    return src->cont;
}

static void on_error(int result, void *arg, void *user)
{
    struct rec *c = arg;
    struct round *rd = user;
    CHECK(c->rd == rd && result == c->fail, "on_error(%d) for a task that returned %d", result,
          c->fail);
    check_value(c, "on_error");
    atomic_fetch_add_explicit(&rd->on_errors, 1, memory_order_relaxed);
}

/* Submits c the way its kind says; returns what the pool answered. */
static int submit_rec(als_pool_t *pool, struct rec *c)
{
    struct round *rd = c->rd;
    int rc;
    switch (c->kind) {
    case K_CANCEL:
        rc = als_submit_task(pool, &(als_task){ .fn = plain_fn, .arg = c, .cancel = cancel_fn });
        break;
    case K_DELAYED:
        rc = als_submit_after(pool, ((uintptr_t)c >> 4) % 3000000, plain_fn, c);
        break;
    case K_FUTURE:
        rc = als_submit_future(pool, future_fn, c, &c->future);
        if (rc == 0 && c->cont) {
            c->cont->submit_rc = als_future_then(c->future, pool, cont_fn, &c->cont->future);
            if (c->cont->submit_rc == ALS_ESHUTDOWN)
                atomic_store_explicit(&rd->stop, 1, memory_order_relaxed);
            /* On a completed future, then submits at once: a full REJECT
             * pool refuses (ALS_EFULL, which als.h does not list for
             * als_future_then) and counts it as rejected. */
            if (c->cont->submit_rc == ALS_EFULL)
                atomic_fetch_add_explicit(&rd->efull, 1, memory_order_relaxed);
        }
        break;
    default:
        rc = als_submit(pool, plain_fn, c);
        break;
    }
    if (rc == ALS_EFULL)
        atomic_fetch_add_explicit(&rd->efull, 1, memory_order_relaxed);
    return rc;
}

/* One submit of a random kind from a submitter thread, inside the current
 * token's context. Returns the pool's answer. */
static int submit_one(struct round *rd, struct rng *r, struct token *tok)
{
    enum kind k = (enum kind)rng_below(r, K_COUNT);
    if (k == K_CONT)
        k = K_FUTURE;
    if (k == K_GROUP) {
        struct grp *g = calloc(1, sizeof *g);
        if (!g)
            abort();
        g->g = als_group_new();
        if (!CHECK(g->g, "als_group_new")) {
            free(g);
            return 0;
        }
        STRESS_PUSH(rd->groups, g);
        int rc = 0;
        int n = 1 + (int)rng_below(r, 4);
        for (int i = 0; i < n && rc == 0; i++) {
            struct rec *c = rec_new(rd, K_GROUP, tok, TASK_DEPTH, (uint32_t)rng_next(r));
            rc = c->submit_rc = als_group_submit(g->g, rd->pool, plain_fn, c);
            if (rc == ALS_EFULL)
                atomic_fetch_add_explicit(&rd->efull, 1, memory_order_relaxed);
            g->recs[g->n++] = c;
        }
        return rc;
    }
    struct rec *c = rec_new(rd, k, tok, k == K_NESTED ? 0 : TASK_DEPTH, (uint32_t)rng_next(r));
    if (k == K_FUTURE && rng_one_in(r, 2))
        c->cont = rec_new(rd, K_CONT, tok, TASK_DEPTH, 1);
    c->submit_rc = submit_rec(rd->pool, c);
    return c->submit_rc;
}

struct batch {
    struct round *rd;
    struct rng *r;
    unsigned *left;
    struct token *tok;
};

/* Submits inside a fresh value's run until the batch ends or the pool
 * refuses for good. */
static void *batch_fn(void *arg)
{
    struct batch *b = arg;
    unsigned n = 1 + rng_below(b->r, 16);
    while (n-- && *b->left) {
        (*b->left)--;
        if (submit_one(b->rd, b->r, b->tok) == ALS_ESHUTDOWN) {
            atomic_store_explicit(&b->rd->stop, 1, memory_order_relaxed);
            break;
        }
    }
    return NULL;
}

struct submitter {
    struct round *rd;
    uint64_t seed;             /* drawn by main: the round's rng is main's */
    pthread_t thread;
};

static void *submitter_main(void *arg)
{
    struct submitter *s = arg;
    struct round *rd = s->rd;
    struct rng r = rng_for(s->seed);
    unsigned left = MAX_SUBMITS;
    while (left && !atomic_load_explicit(&rd->stop, memory_order_relaxed)) {
        struct token *tok = token_new(rd);
        struct batch b = { rd, &r, &left, tok };
        if (rng_one_in(&r, 8)) {
            /* At the thread's top level: replaces the previous one, and the
             * last one ends with the thread. */
            CHECK(als_enter_with(tokstore, tok) == 0, "als_enter_with");
            batch_fn(&b);
        } else {
            als_run(tokstore, tok, batch_fn, &b);
        }
    }
    return NULL;
}

static void *shutdown_main(void *arg)
{
    struct round *rd = arg;
    struct rng r = rng_for(rd->closer_seed);
    unsigned left = rd->shutdown_after;
    while (left && !atomic_load_explicit(&rd->stop, memory_order_relaxed)) {
        /* A value per binding: the store destroys each binding's value. */
        struct batch b = { rd, &r, &left, token_new(rd) };
        als_run(tokstore, b.tok, batch_fn, &b);
    }
    if (rd->how >= 0)
        CHECK(als_pool_shutdown(rd->pool, rd->how) == 0, "als_pool_shutdown");
    return NULL;
}

static void *upgrade_main(void *arg)
{
    struct round *rd = arg;
    CHECK(als_pool_shutdown(rd->pool, ALS_SHUTDOWN_CANCEL) == 0, "als_pool_shutdown(CANCEL)");
    return NULL;
}

static uint64_t rounds, tasks_total, cancelled_total, refused_total, drain_rounds,
    cancel_rounds, upgrade_rounds, free_rounds;

static void check_round(struct round *rd, bool stats_ok, const als_pool_stats *st)
{
    bool any_cancel = rd->how == ALS_SHUTDOWN_CANCEL || rd->upgrade;
    uint64_t accepted = 0, not_run = 0, conts = 0, cont_ran = 0, bad = 0;
    for (struct rec *c = atomic_load(&rd->recs); c; c = c->next) {
        int fn = atomic_load(&c->fn_runs), cancel = atomic_load(&c->cancel_runs);
        if (c->kind == K_CONT) {
            conts += c->submit_rc == 0;
            cont_ran += (uint64_t)fn;
            if (c->submit_rc == 0) {
                void *res = NULL;
                int w = als_future_wait(c->future, 0, &res);
                bad += !CHECK((w == 0 && fn == 1) || (w == ALS_ECANCELED && fn == 0),
                              "continuation: wait %s, fn ran %d times", als_strerror(w), fn);
            } else {
                bad += !CHECK(fn == 0, "a refused continuation ran");
            }
            als_future_release(c->future);
            continue;
        }
        if (c->submit_rc != 0) {
            bad += !CHECK(fn == 0 && cancel == 0, "refused task (%s) ran: fn %d cancel %d",
                          als_strerror(c->submit_rc), fn, cancel);
            refused_total++;
            continue;
        }
        accepted++;
        if (c->kind == K_CANCEL)
            bad += !CHECK(fn + cancel == 1, "task: fn ran %d times, cancel %d", fn, cancel);
        else
            bad += !CHECK(fn <= 1 && cancel == 0, "task: fn ran %d times", fn);
        if (fn == 0)
            not_run++;
        if (c->kind == K_FUTURE) {
            void *res = NULL;
            int w = als_future_wait(c->future, 0, &res);
            bad += !CHECK((w == 0 && fn == 1 && res == c) || (w == ALS_ECANCELED && fn == 0),
                          "future: wait %s, fn ran %d times", als_strerror(w), fn);
            als_future_release(c->future);
        }
    }
    if (!any_cancel)
        bad += !CHECK(not_run == 0, "%" PRIu64 " tasks neither ran nor were cancelable", not_run);

    for (struct grp *g = atomic_load(&rd->groups); g; g = g->next) {
        int w = als_group_wait(g->g, 0), first = 0;
        als_group_first_error(g->g, &first);
        bool cancelled = false, failed = false, match = false;
        for (int i = 0; i < g->n; i++) {
            struct rec *c = g->recs[i];
            if (c->submit_rc)
                continue;
            if (atomic_load(&c->fn_runs) == 0)
                cancelled = true;
            else if (c->fail) {
                failed = true;
                match |= w == ALS_ETASK && first == c->fail;
            }
        }
        bad += !CHECK(failed ? match : cancelled ? w == ALS_ECANCELED : w == 0,
                      "group wait gave %d (%s), first error %d: failed %d cancelled %d", w,
                      als_strerror(w), first, failed, cancelled);
        als_group_free(g->g);
    }

    uint64_t fn_runs = atomic_load(&rd->fn_runs);
    if (stats_ok) {
        bad += !CHECK(st->submitted == st->completed + st->failed + st->cancelled,
                      "stats: submitted %" PRIu64 " != completed %" PRIu64 " + failed %" PRIu64
                      " + cancelled %" PRIu64,
                      st->submitted, st->completed, st->failed, st->cancelled);
        bad += !CHECK(st->queued == 0 && st->running == 0,
                      "stats after shutdown: queued %" PRIu64 " running %" PRIu64, st->queued,
                      st->running);
        bad += !CHECK(st->completed + st->failed == fn_runs,
                      "stats: completed + failed = %" PRIu64 ", task fns ran %" PRIu64,
                      st->completed + st->failed, fn_runs);
        bad += !CHECK(st->failed == atomic_load(&rd->failures) &&
                          st->failed == atomic_load(&rd->on_errors),
                      "stats: failed %" PRIu64 ", tasks failed %" PRIu64 ", on_error %" PRIu64,
                      st->failed, atomic_load(&rd->failures), atomic_load(&rd->on_errors));
        /* A continuation refused by a full REJECT pool is cancelled: the
         * pool counts the refusal, nobody sees an ALS_EFULL. */
        bad += !CHECK(st->rejected >= atomic_load(&rd->efull) &&
                          st->rejected <= atomic_load(&rd->efull) + conts - cont_ran,
                      "stats: rejected %" PRIu64 ", ALS_EFULL answers %" PRIu64, st->rejected,
                      atomic_load(&rd->efull));
        /* Continuations are submitted by the library: accepted ones count,
         * so submitted lies between ours and ours plus every then. */
        bad += !CHECK(st->submitted >= accepted + cont_ran && st->submitted <= accepted + conts,
                      "stats: submitted %" PRIu64 ", accepted tasks %" PRIu64
                      " + continuations (%" PRIu64 " ran, %" PRIu64 " made)",
                      st->submitted, accepted, cont_ran, conts);
        bad += !CHECK(st->cancelled >= not_run && st->cancelled <= not_run + conts - cont_ran,
                      "stats: cancelled %" PRIu64 ", tasks that did not run %" PRIu64,
                      st->cancelled, not_run);
        if (!any_cancel)
            bad += !CHECK(st->cancelled == 0, "a DRAIN shutdown cancelled %" PRIu64,
                          st->cancelled);
    }
    bad += !CHECK(atomic_load(&rd->bad_value) == 0, "tasks saw a wrong or dead value");
    if (bad)
        fprintf(stderr, "lifecycle: round %" PRIu64 " failed: how %d upgrade %d\n", rounds,
                rd->how, rd->upgrade);
    tasks_total += accepted;
    cancelled_total += not_run;
}

static void one_round(uint64_t n)
{
    struct round *rd = calloc(1, sizeof *rd);
    if (!rd)
        abort();
    rd->rng = rng_for(n + 1000);
    als_pool_options o = {
        .threads = 1 + rng_below(&rd->rng, 3),
        .queue_capacity = 4u << rng_below(&rd->rng, 5),
        .on_full = rng_one_in(&rd->rng, 3) ? ALS_FULL_REJECT : ALS_FULL_BLOCK,
        .name = "lifecycle",
        .on_error = on_error,
        .user = rd,
    };
    rd->pool = als_pool_new(&o);
    if (!CHECK(rd->pool, "als_pool_new"))
        abort();
    uint32_t h = rng_below(&rd->rng, 8);
    rd->how = h < 3 ? ALS_SHUTDOWN_DRAIN : h < 6 ? ALS_SHUTDOWN_CANCEL : h < 7 ? -1 : ALS_SHUTDOWN_DRAIN;
    rd->upgrade = h == 7;
    rd->shutdown_after = rng_below(&rd->rng, stress.small ? 20 : 120);

    int nsub = stress.small ? 1 : 2;
    struct submitter subs[2];
    for (int i = 0; i < nsub; i++) {
        subs[i] = (struct submitter){ .rd = rd, .seed = rng_next(&rd->rng) };
        if (pthread_create(&subs[i].thread, NULL, submitter_main, &subs[i]))
            abort();
    }
    pthread_t closer, upgrader;
    rd->closer_seed = rng_next(&rd->rng);
    if (pthread_create(&closer, NULL, shutdown_main, rd))
        abort();
    if (rd->upgrade) {
        /* A CANCEL racing the DRAIN: it may come first, or during. */
        if (pthread_create(&upgrader, NULL, upgrade_main, rd))
            abort();
        pthread_join(upgrader, NULL);
    }
    pthread_join(closer, NULL);
    /* With no shutdown call, only their budget stops the submitters:
     * als_pool_free below does a DRAIN shutdown once they are done. */
    for (int i = 0; i < nsub; i++)
        pthread_join(subs[i].thread, NULL);

    als_pool_stats st;
    bool stats_ok = false;
    if (rd->how >= 0) {
        CHECK(als_submit(rd->pool, plain_fn, NULL) == ALS_ESHUTDOWN,
              "als_submit after shutdown accepted");
        CHECK(als_pool_shutdown(rd->pool, ALS_SHUTDOWN_DRAIN) == 0, "second shutdown");
        CHECK(als_pool_drain(rd->pool) == 0, "drain after shutdown");
        stats_ok = CHECK(als_pool_stats_get(rd->pool, &st) == 0, "als_pool_stats_get");
        drain_rounds += rd->how == ALS_SHUTDOWN_DRAIN && !rd->upgrade;
        cancel_rounds += rd->how == ALS_SHUTDOWN_CANCEL;
        upgrade_rounds += rd->upgrade;
    } else {
        free_rounds++;
    }
    als_pool_free(rd->pool);
    check_round(rd, stats_ok, &st);

    /* Everything is released now: pool, scopes, threads (their top-level
     * values end with them). */
    for (struct token *t = atomic_load(&rd->tokens), *next; t; t = next) {
        next = t->next;
        int d = atomic_load(&t->destroyed);
        CHECK(d == 1, "a value was destroyed %d times", d);
        free(t);
    }
    for (struct rec *c = atomic_load(&rd->recs), *next; c; c = next) {
        next = c->next;
        free(c);
    }
    for (struct grp *g = atomic_load(&rd->groups), *next; g; g = next) {
        next = g->next;
        free(g);
    }
    free(rd);
}

int main(int argc, char **argv)
{
    stress_init(argc, argv, "lifecycle", 3.0, NULL);
    tokstore = als_new(&(als_options){ .name = "token", .destroy = token_destroy });
    if (!tokstore)
        abort();
    uint64_t min_rounds = stress.small ? 20 : 200;
    while (rounds < min_rounds || stress_time_left())
        one_round(rounds++);
    als_free(tokstore);

    CHECK(atomic_load(&tokens_made) == atomic_load(&tokens_destroyed),
          "values made %" PRIu64 ", destroyed %" PRIu64, atomic_load(&tokens_made),
          atomic_load(&tokens_destroyed));
    CHECK(atomic_load(&double_destroys) == 0, "%" PRIu64 " values destroyed twice",
          atomic_load(&double_destroys));
    stress_figure("pools (rounds)", "%" PRIu64, rounds);
    stress_figure("rounds: drain / cancel", "%" PRIu64 " / %" PRIu64, drain_rounds, cancel_rounds);
    stress_figure("rounds: drain+cancel / free only", "%" PRIu64 " / %" PRIu64, upgrade_rounds,
                  free_rounds);
    stress_figure("tasks accepted", "%" PRIu64, tasks_total);
    stress_figure("tasks cancelled", "%" PRIu64, cancelled_total);
    stress_figure("submits refused", "%" PRIu64, refused_total);
    stress_figure("values destroyed (exactly once)", "%" PRIu64, atomic_load(&tokens_destroyed));
    return stress_finish();
}
