/*
 * bench/context: ns/op of the context operations of libals.
 *
 *   context [--json] [--json-out FILE] [--quick] [--reps N] [--min-ms N] [--filter S]
 *
 * Method. Each operation is a case whose loop runs `iters` operations and
 * times itself with CLOCK_MONOTONIC (setting up nested scopes happens
 * outside the timed part). The iteration count is calibrated until one
 * timed loop lasts at least --min-ms, then the loop is repeated --reps
 * times and the median ns/op is reported, with the min and max so that a
 * noisy run shows itself. Results of the measured calls are fed to an
 * empty asm statement (BENCH_USE) so the compiler can neither drop nor
 * hoist them; the library calls cross a shared-library boundary anyway.
 *
 * Some operations cannot be measured alone because they need a scope to
 * unwind them (als_enter_with) or a change to capture (the first
 * als_snapshot after a change). They are measured inside an als_run and
 * reported twice: as measured ("run{...}") and net of the plain als_run
 * row measured in the same process ("(net)"), a difference of medians.
 *
 * The "naive" row reads a plain _Thread_local of this executable: the
 * floor any thread-local scheme is compared with.
 */
#include "bench_util.h"

#include <als.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STORES 1000

static als_t *stores[MAX_STORES];
static int dummy_values[MAX_STORES];

/* The value bound to store i: distinct non-NULL pointers. */
#define VAL(i) ((void *)&dummy_values[(i)])

/* ---- nesting ----------------------------------------------------------- */

/* Runs inner(arg) inside nested als_run calls of stores idx[0..n), outermost
 * first. */
struct nest {
    const unsigned *idx;
    unsigned n, i;
    als_fn inner;
    void *arg;
};

static void *nest_step(void *p)
{
    struct nest *ns = p;
    if (ns->i == ns->n)
        return ns->inner(ns->arg);
    unsigned s = ns->idx[ns->i++];
    return als_run(stores[s], VAL(s), nest_step, ns);
}

static void run_nested(const unsigned *idx, unsigned n, als_fn inner, void *arg)
{
    struct nest ns = {idx, n, 0, inner, arg};
    nest_step(&ns);
}

/* ---- cases ------------------------------------------------------------- */

/* What a timed loop receives and returns. */
struct timing {
    uint64_t iters;
    uint64_t ns;
};

struct bcase {
    const char *name;  /* machine name, used in JSON */
    const char *label; /* human label, used in the table */
    void (*measure)(struct timing *t);
    unsigned ops_per_iter; /* calls per loop iteration (get over N stores) */
    unsigned stores;       /* stores that must exist (created on demand) */
};

static void *empty_fn(void *arg)
{
    return arg;
}

/* naive: a plain _Thread_local read in the executable. */
static _Thread_local void *naive_tls = &dummy_values[0];

static void m_naive(struct timing *t)
{
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < t->iters; i++) {
        void *v = naive_tls;
        BENCH_USE(v); /* the clobber forces the next iteration to reload */
    }
    t->ns = bench_now_ns() - t0;
}

/* A call of an exported function that does nothing but return a constant
 * (als_version): the floor under every libals call made through the PLT,
 * to read the rows of the smallest calls against. */
static void m_call_floor(struct timing *t)
{
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < t->iters; i++) {
        const char *v = als_version();
        BENCH_USE(v);
    }
    t->ns = bench_now_ns() - t0;
}

/* als_get of store 0 inside whatever nesting the caller set up. */
static void *loop_get0(void *p)
{
    struct timing *t = p;
    const als_t *s = stores[0];
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < t->iters; i++) {
        void *v = als_get(s);
        BENCH_USE(v);
    }
    t->ns = bench_now_ns() - t0;
    return NULL;
}

static void get_depth_same(struct timing *t, unsigned depth)
{
    static unsigned idx[MAX_STORES]; /* all store 0: zero-initialised */
    run_nested(idx, depth, loop_get0, t);
}

/* Store 0 outermost, then depth-1 runs of other stores inside it, so the
 * binding that is read is the oldest one. */
static void get_depth_other(struct timing *t, unsigned depth)
{
    static unsigned idx[MAX_STORES];
    for (unsigned i = 0; i < depth; i++)
        idx[i] = i;
    run_nested(idx, depth, loop_get0, t);
}

static void m_get_unbound(struct timing *t)
{
    loop_get0(t);
}
static void m_get_d1(struct timing *t)
{
    get_depth_same(t, 1);
}
static void m_get_d10s(struct timing *t)
{
    get_depth_same(t, 10);
}
static void m_get_d1000s(struct timing *t)
{
    get_depth_same(t, 1000);
}
static void m_get_d10o(struct timing *t)
{
    get_depth_other(t, 10);
}
static void m_get_d1000o(struct timing *t)
{
    get_depth_other(t, 1000);
}

/* als_get cycling over N bound stores: each iteration reads all N. */
struct get_n {
    struct timing *t;
    unsigned n;
};

static void *loop_get_n(void *p)
{
    struct get_n *g = p;
    const als_t *s[16];
    for (unsigned j = 0; j < g->n; j++)
        s[j] = stores[j];
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < g->t->iters; i++) {
        for (unsigned j = 0; j < g->n; j++) {
            void *v = als_get(s[j]);
            BENCH_USE(v);
        }
    }
    g->t->ns = bench_now_ns() - t0;
    return NULL;
}

static void get_stores(struct timing *t, unsigned n)
{
    static const unsigned idx[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    struct get_n g = {t, n};
    run_nested(idx, n, loop_get_n, &g);
}

static void m_get_s1(struct timing *t)
{
    get_stores(t, 1);
}
static void m_get_s4(struct timing *t)
{
    get_stores(t, 4);
}
static void m_get_s16(struct timing *t)
{
    get_stores(t, 16);
}

static void m_run(struct timing *t)
{
    als_t *s = stores[0];
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < t->iters; i++) {
        void *r = als_run(s, VAL(0), empty_fn, NULL);
        BENCH_USE(r);
    }
    t->ns = bench_now_ns() - t0;
}

static void *loop_exit(void *p)
{
    struct timing *t = p;
    als_t *s = stores[0];
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < t->iters; i++) {
        void *r = als_exit(s, empty_fn, NULL);
        BENCH_USE(r);
    }
    t->ns = bench_now_ns() - t0;
    return NULL;
}

static void m_exit(struct timing *t)
{
    static const unsigned idx[1] = {0};
    run_nested(idx, 1, loop_exit, t); /* exit a store that is bound */
}

static void *do_enter(void *arg)
{
    (void)arg;
    int rc = als_enter_with(stores[1], VAL(1));
    BENCH_USE(rc);
    return NULL;
}

/* als_run of store 0 whose body does als_enter_with on store 1: the run
 * is the scope that unwinds the entered binding. */
static void m_run_enter(struct timing *t)
{
    als_t *s = stores[0];
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < t->iters; i++) {
        void *r = als_run(s, VAL(0), do_enter, NULL);
        BENCH_USE(r);
    }
    t->ns = bench_now_ns() - t0;
}

static void *do_snap(void *arg)
{
    (void)arg;
    als_snapshot_t *snap = als_snapshot();
    BENCH_USE(snap);
    als_snapshot_release(snap);
    return NULL;
}

/* First capture after a change: every iteration's als_run is the change. */
static void *loop_run_snap(void *p)
{
    struct timing *t = p;
    als_t *s = stores[0];
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < t->iters; i++) {
        void *r = als_run(s, VAL(0), do_snap, NULL);
        BENCH_USE(r);
    }
    t->ns = bench_now_ns() - t0;
    return NULL;
}

static void m_run_snap(struct timing *t)
{
    loop_run_snap(t);
}

/* The same with three more stores bound around it (a context of four
 * bindings, as a request with a trace, a user and a deadline would have). */
static void m_run_snap4(struct timing *t)
{
    static const unsigned idx[3] = {1, 2, 3};
    run_nested(idx, 3, loop_run_snap, t);
}

/* Repeated capture without a change in between. */
static void *loop_snap_repeat(void *p)
{
    struct timing *t = p;
    do_snap(NULL); /* the first capture, outside the timed part */
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < t->iters; i++)
        do_snap(NULL);
    t->ns = bench_now_ns() - t0;
    return NULL;
}

static void m_snap_repeat(struct timing *t)
{
    static const unsigned idx[4] = {0, 1, 2, 3};
    run_nested(idx, 4, loop_snap_repeat, t);
}

/* als_snapshot_run of a snapshot holding n bindings, from the top level. */
struct snap_arg {
    als_snapshot_t *snap;
};

static void *capture(void *p)
{
    ((struct snap_arg *)p)->snap = als_snapshot();
    return NULL;
}

static void snapshot_run(struct timing *t, unsigned n)
{
    static const unsigned idx[4] = {0, 1, 2, 3};
    struct snap_arg a = {NULL};
    run_nested(idx, n, capture, &a);
    if (!a.snap) {
        fprintf(stderr, "als_snapshot failed\n");
        exit(1);
    }
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < t->iters; i++) {
        void *r = als_snapshot_run(a.snap, empty_fn, NULL);
        BENCH_USE(r);
    }
    t->ns = bench_now_ns() - t0;
    als_snapshot_release(a.snap);
}

static void m_snap_run1(struct timing *t)
{
    snapshot_run(t, 1);
}
static void m_snap_run4(struct timing *t)
{
    snapshot_run(t, 4);
}

/* Explicit scopes (event loops): enter and leave a snapshot. */
static void m_scope(struct timing *t)
{
    static const unsigned idx[4] = {0, 1, 2, 3};
    struct snap_arg a = {NULL};
    run_nested(idx, 4, capture, &a);
    if (!a.snap) {
        fprintf(stderr, "als_snapshot failed\n");
        exit(1);
    }
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < t->iters; i++) {
        als_scope_t sc;
        int rc = als_scope_enter(&sc, a.snap);
        rc |= als_scope_leave(&sc);
        BENCH_USE(rc);
    }
    t->ns = bench_now_ns() - t0;
    als_snapshot_release(a.snap);
}

/* als_cancelled() (issue 15) with no scope bound, once a scope exists
 * (so the library's scope store does too: what a program that uses
 * cancellation pays outside any scope). */
/* noinline: the same loop code with and without a scope bound (inlined
 * into its caller it measured 0.5 ns slower per call, a layout effect). */
__attribute__((noinline)) static void *loop_cancelled(void *p)
{
    struct timing *t = p;
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < t->iters; i++) {
        int c = als_cancelled();
        BENCH_USE(c);
    }
    t->ns = bench_now_ns() - t0;
    return NULL;
}

static void cancelled_in(struct timing *t, int64_t timeout_ns, bool bound)
{
    als_cancel_t *c = als_cancel_new(timeout_ns);
    if (!c) {
        fprintf(stderr, "als_cancel_new failed\n");
        exit(1);
    }
    if (bound)
        als_cancel_run(c, loop_cancelled, t);
    else
        loop_cancelled(t);
    als_cancel_release(c);
}

static void m_cancelled_none(struct timing *t)
{
    cancelled_in(t, -1, false);
}

/* A scope bound, not cancelled, without and with a deadline (which reads
 * the clock, vDSO). */
static void m_cancelled_scope(struct timing *t)
{
    cancelled_in(t, -1, true);
}

static void m_cancelled_deadline(struct timing *t)
{
    cancelled_in(t, INT64_C(3600000000000), true);
}

/* Most cases run with 16 stores in existence, a realistic program. The
 * depth-1000 case of other stores needs 1000 and is measured after them,
 * because binding that many stores grows the thread's slot table, which
 * can change the cost of other operations (a first capture visits every
 * slot of the table); the last row measures that effect on purpose. */
static const struct bcase cases[] = {
    {"naive_tls_read", "naive _Thread_local read (executable)", m_naive, 1, 16},
    {"call_floor", "als_version(): an exported call, the floor", m_call_floor, 1, 16},
    {"get_unbound", "get, store not bound (default)", m_get_unbound, 1, 16},
    {"get_depth_1", "get, depth 1", m_get_d1, 1, 16},
    {"get_depth_10_same", "get, depth 10 (same store)", m_get_d10s, 1, 16},
    {"get_depth_1000_same", "get, depth 1000 (same store)", m_get_d1000s, 1, 16},
    {"get_depth_10_other", "get, depth 10 (other stores)", m_get_d10o, 1, 16},
    {"get_depth_1000_other", "get, depth 1000 (other stores)", m_get_d1000o, 1, 1000},
    {"get_stores_1", "get, 1 store bound", m_get_s1, 1, 16},
    {"get_stores_4", "get, 4 stores bound (each read)", m_get_s4, 4, 16},
    {"get_stores_16", "get, 16 stores bound (each read)", m_get_s16, 16, 16},
    {"run", "run (empty fn)", m_run, 1, 16},
    {"exit", "exit (empty fn, inside a run)", m_exit, 1, 16},
    {"run_enter_with", "run{enter_with}", m_run_enter, 1, 16},
    {"run_snapshot_first", "run{snapshot+release}, 1 store", m_run_snap, 1, 16},
    {"run_snapshot_first_4", "run{snapshot+release}, 4 stores", m_run_snap4, 1, 16},
    {"snapshot_repeat", "snapshot+release, repeated, 4 stores", m_snap_repeat, 1, 16},
    {"snapshot_run_1", "snapshot_run (empty fn), 1 store", m_snap_run1, 1, 16},
    {"snapshot_run_4", "snapshot_run (empty fn), 4 stores", m_snap_run4, 1, 16},
    {"scope_enter_leave", "scope_enter+scope_leave, 4 stores", m_scope, 1, 16},
    {"cancelled_no_scope", "als_cancelled, no scope bound", m_cancelled_none, 1, 16},
    {"cancelled_scope", "als_cancelled, scope bound, not cancelled", m_cancelled_scope, 1, 16},
    {"cancelled_deadline", "als_cancelled, scope with a deadline bound", m_cancelled_deadline, 1,
     16},
    {"run_snapshot_first_1000", "run{snapshot+release}, 1 store, 1000 slots", m_run_snap, 1, 1000},
};
#define NCASES (sizeof cases / sizeof cases[0])

/* Rows derived as a difference of two measured medians. */
struct derived {
    const char *name, *label, *minuend, *subtrahend;
};
static const struct derived deriveds[] = {
    {"enter_with_net", "enter_with (net of run)", "run_enter_with", "run"},
    {"snapshot_first_net", "snapshot+release, first (net of run), 1 store", "run_snapshot_first",
     "run"},
    {"snapshot_first_4_net", "snapshot+release, first (net of run), 4 stores",
     "run_snapshot_first_4", "run"},
};
#define NDERIVED (sizeof deriveds / sizeof deriveds[0])

/* Ratios of two measured medians: the performance targets of issue 2. */
static const struct derived ratios[] = {
    {"get_depth_1000_same_over_depth_1", "get depth 1000 / depth 1, same (<= 1.2)",
     "get_depth_1000_same", "get_depth_1"},
    {"get_depth_1000_other_over_depth_1", "get depth 1000 / depth 1, other (<= 1.2)",
     "get_depth_1000_other", "get_depth_1"},
    {"get_stores_16_over_stores_1", "get 16 stores / 1 store", "get_stores_16", "get_stores_1"},
    {"get_over_naive", "get depth 1 / naive _Thread_local read", "get_depth_1", "naive_tls_read"},
};
#define NRATIOS (sizeof ratios / sizeof ratios[0])

struct result {
    double median, min, max; /* ns per operation */
    uint64_t iters;          /* operations per timed loop */
};

static struct result results[NCASES];

static size_t case_index(const char *name)
{
    for (size_t i = 0; i < NCASES; i++)
        if (strcmp(cases[i].name, name) == 0)
            return i;
    abort(); /* a typo in the tables above */
}

static void measure(size_t ci, unsigned reps, uint64_t min_ns)
{
    const struct bcase *c = &cases[ci];
    /* Calibrate: double the loop until it runs long enough that clock
     * resolution and call overhead vanish. This also warms caches and
     * the library's per-thread state. */
    struct timing t = {.iters = 1000, .ns = 0};
    for (;;) {
        c->measure(&t);
        if (t.ns >= min_ns || t.iters >= (UINT64_C(1) << 40))
            break;
        uint64_t scale = t.ns ? (min_ns * 5 / 4) / t.ns + 1 : 16;
        if (scale > 16)
            scale = 16;
        if (scale < 2)
            scale = 2;
        t.iters *= scale;
    }
    double per_op[64];
    if (reps > 64)
        reps = 64;
    for (unsigned r = 0; r < reps; r++) {
        c->measure(&t);
        per_op[r] = (double)t.ns / ((double)t.iters * c->ops_per_iter);
    }
    results[ci].min = bench_min(per_op, reps);
    results[ci].max = bench_max(per_op, reps);
    results[ci].median = bench_median(per_op, reps);
    results[ci].iters = t.iters * c->ops_per_iter;
}

/* --filter: cases whose name contains one of the comma-separated strings, plus what the derived
 * rows and ratios need. */
static bool selected(size_t ci, const char *filter)
{
    if (!filter)
        return true;
    for (const char *p = filter; *p;) {
        size_t len = strcspn(p, ",");
        char tok[64];
        if (len > 0 && len < sizeof tok) {
            memcpy(tok, p, len);
            tok[len] = '\0';
            if (strstr(cases[ci].name, tok))
                return true;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return strcmp(cases[ci].name, "run") == 0 || strcmp(cases[ci].name, "get_depth_1") == 0;
}

static double derived_value(const struct derived *d)
{
    return results[case_index(d->minuend)].median - results[case_index(d->subtrahend)].median;
}

static bool measured(const char *name)
{
    return results[case_index(name)].iters != 0;
}

static double ratio_value(const struct derived *r)
{
    return results[case_index(r->minuend)].median / results[case_index(r->subtrahend)].median;
}

static void usage(FILE *f)
{
    fputs("usage: context [--json] [--json-out FILE] [--quick] [--reps N] [--min-ms N] "
          "[--filter S]\n"
          "  --json           print JSON instead of a table\n"
          "  --json-out FILE  also write the JSON to FILE\n"
          "  --quick          a short run (3 repetitions of >= 2 ms): a smoke test\n"
          "  --reps N         timed repetitions per operation; the median is reported (7)\n"
          "  --min-ms N       minimum duration of one timed repetition (20)\n"
          "  --filter S       only the operations whose name (as in --json) contains S,\n"
          "                   or one of the comma-separated strings in S, plus the rows\n"
          "                   the derived values need\n",
          f);
}

int main(int argc, char **argv)
{
    bool json = false;
    unsigned reps = 7;
    uint64_t min_ms = 20;
    bool reps_set = false, min_set = false, quick = false;
    const char *filter = NULL, *json_out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else if (strcmp(argv[i], "--reps") == 0) {
            reps = (unsigned)bench_parse_count("--reps", i + 1 < argc ? argv[++i] : NULL);
            reps_set = true;
        } else if (strcmp(argv[i], "--min-ms") == 0) {
            min_ms = bench_parse_count("--min-ms", i + 1 < argc ? argv[++i] : NULL);
            min_set = true;
        } else if (strcmp(argv[i], "--json-out") == 0 && i + 1 < argc) {
            json_out = argv[++i];
        } else if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc) {
            filter = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (quick) {
        if (!reps_set)
            reps = 3;
        if (!min_set)
            min_ms = 2;
    }
    if (reps > 64)
        reps = 64;

    /* Two passes: the cases that need at most 16 stores, then the others
     * with all MAX_STORES created (see the case table). */
    unsigned nstores = 0;
    for (int pass = 0; pass < 2; pass++) {
        unsigned need = pass == 0 ? 16 : MAX_STORES;
        for (; nstores < need; nstores++) {
            char name[32];
            snprintf(name, sizeof name, "bench-%u", nstores);
            stores[nstores] = als_new(&(als_options){.name = name});
            if (!stores[nstores]) {
                fprintf(stderr, "als_new failed\n");
                return 1;
            }
        }
        for (size_t i = 0; i < NCASES; i++)
            if ((cases[i].stores <= 16) == (pass == 0) && selected(i, filter))
                measure(i, reps, min_ms * 1000000u);
    }

    bool json_ok;
    FILE *jf = bench_json_open(json, json_out, &json_ok);
    if (!json_ok)
        return 1;
    if (jf) {
        fprintf(jf,
                "{\n  \"benchmark\": \"context\",\n  \"libals_version\": \"%s\",\n"
                "  \"unit\": \"ns/op\",\n  \"repetitions\": %u,\n  \"min_ms\": %llu,\n"
                "  \"results\": [",
                als_version(), reps, (unsigned long long)min_ms);
        const char *sep = "\n";
        for (size_t i = 0; i < NCASES; i++) {
            if (!measured(cases[i].name))
                continue;
            fprintf(jf,
                    "%s    {\"name\": \"%s\", \"label\": \"%s\", \"median\": %.3f, "
                    "\"min\": %.3f, \"max\": %.3f, \"ops_per_rep\": %llu}",
                    sep, cases[i].name, cases[i].label, results[i].median, results[i].min,
                    results[i].max, (unsigned long long)results[i].iters);
            sep = ",\n";
        }
        fprintf(jf, "\n  ],\n  \"derived\": [");
        sep = "\n";
        for (size_t i = 0; i < NDERIVED; i++) {
            const struct derived *d = &deriveds[i];
            if (!measured(d->minuend) || !measured(d->subtrahend))
                continue;
            fprintf(jf, "%s    {\"name\": \"%s\", \"label\": \"%s\", \"median\": %.3f}", sep,
                    d->name, d->label, derived_value(d));
            sep = ",\n";
        }
        fprintf(jf, "\n  ],\n  \"ratios\": {");
        sep = "";
        for (size_t i = 0; i < NRATIOS; i++) {
            const struct derived *r = &ratios[i];
            if (!measured(r->minuend) || !measured(r->subtrahend))
                continue;
            fprintf(jf, "%s\"%s\": %.3f", sep, r->name, ratio_value(r));
            sep = ", ";
        }
        fprintf(jf, "}\n}\n");
        if (!bench_json_close(jf, json_out))
            return 1;
    }
    if (!json) {
        printf("bench/context: libals %s, ns per operation, median of %u repetitions "
               "of >= %llu ms\n\n",
               als_version(), reps, (unsigned long long)min_ms);
        printf("%-48s %9s %9s %9s\n", "operation", "ns/op", "min", "max");
        for (size_t i = 0; i < NCASES; i++)
            if (measured(cases[i].name))
                printf("%-48s %9.2f %9.2f %9.2f\n", cases[i].label, results[i].median,
                       results[i].min, results[i].max);
        for (size_t i = 0; i < NDERIVED; i++) {
            const struct derived *d = &deriveds[i];
            if (measured(d->minuend) && measured(d->subtrahend))
                printf("%-48s %9.2f\n", d->label, derived_value(d));
        }
        printf("\n");
        for (size_t i = 0; i < NRATIOS; i++) {
            const struct derived *r = &ratios[i];
            if (measured(r->minuend) && measured(r->subtrahend))
                printf("%-48s %8.2fx\n", r->label, ratio_value(r));
        }
    }

    for (unsigned i = 0; i < nstores; i++)
        als_free(stores[i]);
    return 0;
}
