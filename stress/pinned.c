/* stress/pinned: six behaviours that one unit test each pinned, observed
 * again independently (issue 17): several threads at once, random
 * parameters, for the run's time.
 *
 *   abandon   an als_snapshot_run whose function enters 1-3 explicit scopes
 *             (the innermost may bind a destroy-owning store) and returns
 *             without leaving them: the caller's context is back exactly,
 *             each value bound inside is destroyed once, the thread goes on
 *             (test_snapshot's test_scope_abandoned_in_run).
 *   disable   als_disable of a store while a capture of it is cached and
 *             entered: the default in the entered scope, in the cached and
 *             new captures, after leaving; a later als_run binds again in
 *             its own scope only (test_ownership).
 *   detached  detached submits from a task under a throttling backlog are
 *             queued, never run inside the submit, and run in an empty
 *             context with trigger 0, while plain submits beside them run
 *             inline (test_pool_inline's test_detached_never_inline).
 *   upper     a valid traceparent with any of its hex letters in upper case
 *             is invalid (parse zeroes, extract starts a new trace).
 *   state     a valid tracestate of exactly ALS_TRACESTATE_MAX characters
 *             is kept verbatim (set_state and extract); one character more
 *             is cut by whole entries from the end.
 *   prefix    als_trace_log_prefix inside als_trace_run / run_span, on the
 *             thread and in pool tasks, shows the current trace and span id.
 *
 * The abandoned-scope check prints "never left" in debug builds each time
 * (by design), so it runs a bounded number of times per run. */
#include "stress.h"

#include "als.h"
#include "als_trace.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 4
#define ABANDON_MAX 48 /* abandoned scopes per run: each prints a line */

enum { B_ABANDON, B_DISABLE, B_DETACHED, B_UPPER, B_STATE, B_PREFIX, NB };
static const char *const bname[NB] = {"abandon", "disable", "detached",
                                      "upper", "state", "prefix"};
static _Atomic uint64_t rounds[NB];
static _Atomic int abandoned;

static als_t *sa, *sb, *owned; /* shared stores; `owned` counts destroys */
static int dflt_a, dflt_b;

struct dval {
    _Atomic int destroyed;
};

static void dval_destroy(void *v)
{
    atomic_fetch_add(&((struct dval *)v)->destroyed, 1);
}

/* ---- abandon ------------------------------------------------------------ */

struct abandon {
    struct rng *r;
    als_snapshot_t *snaps[2];
    struct dval vals[3];
    int scopes, writes;
    int entered[3];            /* which snapshot each scope entered */
    als_scope_t sc[3];
};

static void *abandon_fn(void *arg)
{
    struct abandon *ab = arg;
    for (int i = 0; i < ab->scopes; i++) {
        ab->entered[i] = (int)rng_below(ab->r, 2);
        if (!CHECK(als_scope_enter(&ab->sc[i], ab->snaps[ab->entered[i]]) == 0,
                   "abandon: als_scope_enter"))
            return NULL;
        /* Writes in the innermost abandoned scope only: a write in an
         * outer one of several leaks that scope's private table (its
         * record, which alone points at it, is gone with the stack; the
         * documented "holds of an abandoned scope leak", found here). */
        if (i == ab->scopes - 1 && rng_one_in(ab->r, 2)) {
            CHECK(als_enter_with(owned, &ab->vals[ab->writes]) == 0, "abandon: enter_with");
            ab->writes++;
        }
    }
    return NULL; /* every scope still open */
}

static void *abandon_caller(void *arg)
{
    struct abandon *ab = arg;
    als_snapshot_run(ab->snaps[rng_below(ab->r, 2)], abandon_fn, ab);
    CHECK(als_get(sa) == arg && als_get(sb) == &dflt_b && als_get(owned) == NULL,
          "abandon: the caller's context is not back");
    return NULL;
}

static void *capture_fn(void *arg)
{
    (void)arg;
    return als_snapshot();
}

static void round_abandon(struct rng *r)
{
    if (atomic_fetch_add(&abandoned, 1) >= ABANDON_MAX)
        return;
    struct abandon ab = {.r = r, .scopes = 1 + (int)rng_below(r, 3)};
    static int vb;
    ab.snaps[0] = als_snapshot();
    ab.snaps[1] = als_run(sb, &vb, capture_fn, NULL);
    als_run(sa, &ab, abandon_caller, &ab); /* `ab` doubles as sa's value */
    CHECK(als_get(sa) == &dflt_a && als_get(sb) == &dflt_b, "abandon: top level changed");
    for (int i = 0; i < 3; i++)
        CHECK(atomic_load(&ab.vals[i].destroyed) == (i < ab.writes),
              "abandon: value %d destroyed %d times", i, atomic_load(&ab.vals[i].destroyed));
    /* Each abandoned scope's own reference is leaked, as documented: drop
     * them here so that LeakSanitizer stays meaningful. */
    for (int i = 0; i < ab.scopes; i++)
        als_snapshot_release(ab.snaps[ab.entered[i]]);
    als_snapshot_release(ab.snaps[0]);
    als_snapshot_release(ab.snaps[1]);
}

/* ---- disable ------------------------------------------------------------ */

struct dis {
    als_t *s;
    int dflt, v, v2;
    bool ok;
};

static void *get_fn(void *arg)
{
    return als_get(arg);
}

static void *rebind_fn(void *arg)
{
    struct dis *d = arg;
    return (void *)(intptr_t)(als_get(d->s) == &d->v2);
}

static void *disable_body(void *arg)
{
    struct dis *d = arg;
    als_snapshot_t *cached = als_snapshot();
    als_snapshot_t *again = als_snapshot(); /* the cached capture */
    als_scope_t sc;
    bool ok = cached && again && als_scope_enter(&sc, cached) == 0;
    ok = ok && als_get(d->s) == &d->v;
    als_disable(d->s);
    ok = ok && als_get(d->s) == &d->dflt;                       /* entered */
    ok = ok && als_snapshot_run(again, get_fn, d->s) == &d->dflt; /* cached */
    als_snapshot_t *after = als_snapshot();
    ok = ok && after && als_snapshot_run(after, get_fn, d->s) == &d->dflt;
    ok = ok && als_run(d->s, &d->v2, rebind_fn, d) == (void *)1;
    ok = ok && als_get(d->s) == &d->dflt;
    ok = ok && als_scope_leave(&sc) == 0 && als_get(d->s) == &d->dflt;
    als_snapshot_release(after);
    als_snapshot_release(again);
    als_snapshot_release(cached);
    d->ok = ok;
    return NULL;
}

static void round_disable(struct rng *r)
{
    (void)r;
    struct dis d = {0};
    d.s = als_new(&(als_options){.default_value = &d.dflt});
    if (!CHECK(d.s != NULL, "disable: als_new"))
        return;
    als_run(d.s, &d.v, disable_body, &d);
    CHECK(d.ok, "disable: a cached or entered capture still saw the value");
    CHECK(als_get(d.s) == &d.dflt, "disable: top level");
    als_free(d.s);
}

/* ---- detached ------------------------------------------------------------ */

#define BACKLOG 64 /* als.h: tasks per worker that make submits inline */

static _Thread_local bool submitting;

struct det {
    als_pool_t *pool;
    int value;
    int probes;
    _Atomic int ran_inside, bad_ctx, ran, plain_inline;
};

static int filler(void *arg)
{
    (void)arg;
    return 0;
}

static int det_probe(void *arg)
{
    struct det *d = arg;
    if (submitting)
        atomic_fetch_add(&d->ran_inside, 1);
    if (als_get(sa) != &dflt_a || als_trigger_async_id() != 0)
        atomic_fetch_add(&d->bad_ctx, 1);
    atomic_fetch_add(&d->ran, 1);
    return 0;
}

static int plain_probe(void *arg)
{
    struct det *d = arg;
    if (submitting)
        atomic_fetch_add(&d->plain_inline, 1);
    return 0;
}

static void *det_root_body(void *arg)
{
    struct det *d = arg;
    for (int i = 0; i < BACKLOG + 1; i++)
        als_submit_task(d->pool, &(als_task){.fn = filler, .flags = ALS_TASK_DETACHED});
    for (int i = 0; i < d->probes; i++) {
        submitting = true;
        als_submit_task(d->pool, &(als_task){.fn = det_probe, .arg = d,
                                             .flags = ALS_TASK_DETACHED});
        als_submit(d->pool, plain_probe, d);
        submitting = false;
    }
    return NULL;
}

static int det_root(void *arg)
{
    struct det *d = arg;
    als_run(sa, &d->value, det_root_body, d); /* probes must not see it */
    return 0;
}

static void round_detached(struct rng *r)
{
    struct det d = {.probes = 1 + (int)rng_below(r, 8)};
    d.pool = als_pool_new(&(als_pool_options){.threads = 1, .name = "pinned"});
    if (!CHECK(d.pool != NULL, "detached: als_pool_new"))
        return;
    CHECK(als_submit(d.pool, det_root, &d) == 0, "detached: submit");
    als_pool_free(d.pool);
    CHECK(atomic_load(&d.ran) == d.probes, "detached: %d of %d probes ran",
          atomic_load(&d.ran), d.probes);
    CHECK(atomic_load(&d.ran_inside) == 0, "detached: %d ran inside their submit",
          atomic_load(&d.ran_inside));
    CHECK(atomic_load(&d.bad_ctx) == 0, "detached: not an empty context");
    /* The premise: throttling was on, plain submits beside them ran inline. */
    CHECK(atomic_load(&d.plain_inline) == d.probes, "detached: %d of %d plain ran inline",
          atomic_load(&d.plain_inline), d.probes);
}

/* ---- upper ------------------------------------------------------------ */

static void random_ctx(struct rng *r, als_trace_ctx *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < sizeof c->trace_id; i++)
        c->trace_id[i] = (uint8_t)rng_next(r);
    for (size_t i = 0; i < sizeof c->span_id; i++)
        c->span_id[i] = (uint8_t)rng_next(r);
    c->trace_id[0] |= 1;
    c->span_id[0] |= 1;
    c->flags = (uint8_t)rng_below(r, 2);
}

static void round_upper(struct rng *r)
{
    als_trace_ctx c, out;
    random_ctx(r, &c);
    char tp[ALS_TRACEPARENT_SIZE];
    CHECK(als_trace_format(&c, tp, sizeof tp) == ALS_TRACEPARENT_LEN, "upper: format");
    CHECK(als_trace_parse(tp, &out) == 0, "upper: lower case refused: %s", tp);
    int letters[ALS_TRACEPARENT_LEN], n = 0;
    for (int i = 0; i < ALS_TRACEPARENT_LEN; i++)
        if (tp[i] >= 'a' && tp[i] <= 'f')
            letters[n++] = i;
    if (n == 0)
        return;
    int k = 1 + (int)rng_below(r, (uint32_t)n);
    for (int i = 0; i < k; i++)
        tp[letters[rng_below(r, (uint32_t)n)]] &= ~0x20;
    memset(&out, 0xa5, sizeof out);
    CHECK(als_trace_parse(tp, &out) == ALS_EINVAL, "upper: accepted %s", tp);
    static const als_trace_ctx zero;
    CHECK(memcmp(&out, &zero, sizeof out) == 0, "upper: not zeroed: %s", tp);
    CHECK(als_trace_extract(tp, "k=v", &out) == 0 &&
              memcmp(out.trace_id, c.trace_id, sizeof c.trace_id) != 0,
          "upper: extract continued %s", tp);
}

/* ---- state ------------------------------------------------------------ */

/* A valid list of exactly `len` characters: members "kNN=<value>" of 16 to
 * 128 characters, at most 32 of them, values of printable ASCII without
 * ',' or '=' and not ending in a space. */
static size_t make_state(struct rng *r, char *s, size_t len)
{
    size_t n = 0;
    int members = 0;
    while (n < len) {
        if (members)
            s[n++] = ',';
        size_t left = len - n;
        size_t m = left <= 128 ? left : 16 + rng_below(r, 113);
        if (left > 128 && left - m - 1 < 16)
            m = left - 17; /* leave room for one more member */
        int w = snprintf(s + n, 8, "k%02d=", members);
        for (size_t i = (size_t)w; i < m; i++) {
            char ch;
            do
                ch = (char)(0x20 + rng_below(r, 0x5f));
            while (ch == ',' || ch == '=' || (i + 1 == m && ch == ' '));
            s[n + i] = ch;
        }
        n += m;
        members++;
    }
    s[n] = '\0';
    return (size_t)members;
}

static void round_state(struct rng *r)
{
    char s[ALS_TRACESTATE_MAX + 2];
    size_t members = make_state(r, s, ALS_TRACESTATE_MAX);
    CHECK(strlen(s) == ALS_TRACESTATE_MAX && members <= 32, "state: generator");
    als_trace_ctx c, e;
    random_ctx(r, &c);
    CHECK(als_trace_set_state(&c, s) == 0 && strcmp(c.tracestate, s) == 0,
          "state: %d characters not kept", ALS_TRACESTATE_MAX);
    char tp[ALS_TRACEPARENT_SIZE];
    als_trace_format(&c, tp, sizeof tp);
    CHECK(als_trace_extract(tp, s, &e) == 1 && strcmp(e.tracestate, s) == 0,
          "state: extract did not keep %d characters", ALS_TRACESTATE_MAX);
    /* One more character (the last value grows): whole entries go. */
    size_t len = strlen(s);
    s[len] = s[len - 1] == ' ' ? 'x' : s[len - 1];
    s[len + 1] = '\0';
    if (members < 2)
        return;
    CHECK(als_trace_set_state(&c, s) == 0, "state: over the limit refused");
    size_t got = strlen(c.tracestate);
    CHECK(got > 0 && got < ALS_TRACESTATE_MAX && strncmp(c.tracestate, s, got) == 0 &&
              s[got] == ',',
          "state: not cut by whole entries (%zu kept)", got);
}

/* ---- prefix ------------------------------------------------------------ */

struct pfx {
    als_pool_t *pool;
    als_trace_ctx want;
    struct waitcount tasks;
    _Atomic int bad;
};

static bool prefix_is(const als_trace_ctx *c)
{
    char want[ALS_TRACE_PREFIX_LEN + 1], got[ALS_TRACE_PREFIX_LEN + 1];
    char th[ALS_TRACE_ID_HEX + 1], sh[ALS_SPAN_ID_HEX + 1];
    als_trace_hex(th, c->trace_id, sizeof c->trace_id);
    als_trace_hex(sh, c->span_id, sizeof c->span_id);
    snprintf(want, sizeof want, "trace=%s span=%s", th, sh);
    return als_trace_log_prefix(got, sizeof got) == ALS_TRACE_PREFIX_LEN &&
           strcmp(got, want) == 0;
}

static int prefix_task(void *arg)
{
    struct pfx *p = arg;
    if (!prefix_is(&p->want))
        atomic_fetch_add(&p->bad, 1);
    waitcount_done(&p->tasks);
    return 0;
}

static void *prefix_span(void *arg)
{
    struct pfx *p = arg;
    const als_trace_ctx *cur = als_trace_get();
    if (!cur || !prefix_is(cur))
        atomic_fetch_add(&p->bad, 1);
    return NULL;
}

static void *prefix_body(void *arg)
{
    struct pfx *p = arg;
    if (!prefix_is(&p->want))
        atomic_fetch_add(&p->bad, 1);
    waitcount_add(&p->tasks, 1);
    if (als_submit(p->pool, prefix_task, p) != 0) {
        waitcount_done(&p->tasks);
        atomic_fetch_add(&p->bad, 1);
    }
    als_trace_ctx span;
    if (als_trace_run_span(prefix_span, p, NULL, &span) != 0 ||
        memcmp(span.parent_id, p->want.span_id, sizeof span.parent_id) != 0)
        atomic_fetch_add(&p->bad, 1);
    return NULL;
}

static als_pool_t *prefix_pool;

static void round_prefix(struct rng *r)
{
    struct pfx p = {.pool = prefix_pool};
    waitcount_init(&p.tasks);
    random_ctx(r, &p.want);
    CHECK(als_trace_run(&p.want, prefix_body, &p, NULL) == 0, "prefix: als_trace_run");
    waitcount_wait(&p.tasks, 0);
    waitcount_destroy(&p.tasks);
    CHECK(atomic_load(&p.bad) == 0, "prefix: %d prefixes did not show the span",
          atomic_load(&p.bad));
    static const als_trace_ctx zero;
    CHECK(prefix_is(&zero), "prefix: outside any trace");
}

/* ---- main --------------------------------------------------------------- */

static void *thread_main(void *arg)
{
    struct rng r = rng_for((uint64_t)(uintptr_t)arg);
    while (stress_time_left()) {
        int b = (int)rng_below(&r, NB);
        switch (b) {
        case B_ABANDON: round_abandon(&r); break;
        case B_DISABLE: round_disable(&r); break;
        case B_DETACHED: round_detached(&r); break;
        case B_UPPER: round_upper(&r); break;
        case B_STATE: round_state(&r); break;
        default: round_prefix(&r); break;
        }
        atomic_fetch_add(&rounds[b], 1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    stress_init(argc, argv, "pinned", 2.0, NULL);
    sa = als_new(&(als_options){.name = "a", .default_value = &dflt_a});
    sb = als_new(&(als_options){.name = "b", .default_value = &dflt_b});
    owned = als_new(&(als_options){.name = "owned", .destroy = dval_destroy});
    prefix_pool = als_pool_new(&(als_pool_options){.threads = 2, .name = "prefix"});
    if (!sa || !sb || !owned || !prefix_pool)
        return 1;
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, thread_main, (void *)i) != 0)
            return 1;
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    als_pool_free(prefix_pool);
    for (int b = 0; b < NB; b++)
        stress_figure(bname[b], "%" PRIu64 " rounds", atomic_load(&rounds[b]));
    als_free(owned);
    als_free(sb);
    als_free(sa);
    return stress_finish();
}
