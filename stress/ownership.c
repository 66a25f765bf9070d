/* stress/ownership.c: values live exactly as long as something holds them.
 *
 * Threads bind values (tokens) in destroy-owning stores of their own, and
 * capture them heavily: snapshots, retained snapshots, bound functions and
 * resources, published on a shared board from which any thread takes them,
 * checks them, enters them and releases them. Meanwhile the owners disable
 * their stores and free them (making new ones, which recycle slot indices
 * that old contexts still hold bindings for).
 *
 * The rules checked:
 *   - a value is destroyed exactly once, and never while reachable: every
 *     holder on the board knows which tokens it holds (those bound and live
 *     when it was captured), and every take checks them; destroy poisons
 *     the token, and the token is a plain (not atomic) field, so that under
 *     ThreadSanitizer a destroy not ordered after the last use is a race;
 *   - a binding that nothing captured is destroyed when its als_run
 *     returns (synchronously, on that thread);
 *   - inside a foreign context, a thread's own stores read as unbound
 *     (even when a freed store's slot was recycled for one of them); inside
 *     its own, a store reads its value only while not disabled or freed;
 *   - at the end, with every holder released, every thread gone and every
 *     store freed: tokens made == tokens destroyed.
 * Only a store's owner calls functions on it (the contract forbids freeing
 * a store another thread may still use); everybody else only holds. */
#include "stress.h"

#include "als.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIVE 0x0771fe00u
#define DEAD 0xdeadd0d0u
#define NSTORE 2               /* stores per thread */
#define BOARD 16               /* published holders */
#define MAX_DEPTH 3
#define QUARANTINE (1u << 15)  /* destroyed tokens kept poisoned before free */

/* ---- tokens ------------------------------------------------------------------ */

struct token {
    uint32_t magic;            /* plain on purpose, see the top */
    _Atomic int destroyed;
    /* While one_step checks a run's value after the run, the token must not
     * be freed under it: PINNED defers the quarantine to that check. */
    _Atomic int pin;           /* UNPINNED, PINNED, DESTROYED_PINNED */
    int owner, store;
    uint64_t gen;              /* the store's incarnation */
};

static _Atomic uint64_t tokens_made, tokens_destroyed, double_destroys, holders_made,
    holders_taken, token_reads, poison_seen, late_destroys;

/* Destroyed tokens stay readable (poisoned) for a while, so that a late
 * read finds DEAD instead of freed memory; then they are freed. */
static pthread_mutex_t quarantine_mu = PTHREAD_MUTEX_INITIALIZER;
static struct token *quarantine[QUARANTINE];
static size_t quarantine_next;

enum { UNPINNED, PINNED, DESTROYED_PINNED };

/* Destroyed tokens stay poisoned (not freed) for QUARANTINE destroys, so a
 * read of a destroyed value is caught as DEAD rather than as garbage. */
static void quarantine_put(struct token *t)
{
    pthread_mutex_lock(&quarantine_mu);
    struct token *old = quarantine[quarantine_next];
    quarantine[quarantine_next] = t;
    quarantine_next = (quarantine_next + 1) % QUARANTINE;
    pthread_mutex_unlock(&quarantine_mu);
    free(old);
}

static void token_destroy(void *v)
{
    struct token *t = v;
    if (atomic_fetch_add_explicit(&t->destroyed, 1, memory_order_relaxed) != 0) {
        atomic_fetch_add_explicit(&double_destroys, 1, memory_order_relaxed);
        CHECK(false, "token of thread %d destroyed twice", t->owner);
        return;
    }
    CHECK(t->magic == LIVE, "destroy of a token that is not live (%#x)", t->magic);
    t->magic = DEAD;
    atomic_fetch_add_explicit(&tokens_destroyed, 1, memory_order_relaxed);
    int pinned = PINNED;
    if (atomic_compare_exchange_strong(&t->pin, &pinned, DESTROYED_PINNED))
        return; /* the pinning thread quarantines it after its check */
    quarantine_put(t);
}

static bool token_live(const struct token *t, const char *where)
{
    atomic_fetch_add_explicit(&token_reads, 1, memory_order_relaxed);
    if (t->magic != LIVE)
        atomic_fetch_add_explicit(&poison_seen, 1, memory_order_relaxed);
    return CHECK(t->magic == LIVE, "%s: token of thread %d store %d is %s while held", where,
                 t->owner, t->store, t->magic == DEAD ? "destroyed" : "garbage");
}

/* ---- holders on the board ------------------------------------------------------- */

enum hkind { H_SNAPSHOT, H_BOUND, H_RESOURCE };

struct holder {
    enum hkind kind;
    als_snapshot_t *snap;
    als_bound_t *bound;
    als_resource_t *res;
    int owner;
    int ntok;
    struct token *tok[NSTORE];
    /* For the owner: what its stores must read inside, if still alive. */
    uint64_t gen[NSTORE], disables[NSTORE];
};

static _Atomic(struct holder *) board[BOARD];

/* ---- a thread and its stores ---------------------------------------------------- */

struct owned {
    als_t *als;
    uint64_t gen;              /* incarnation: bumped by every free + new */
    uint64_t disables;         /* als_disable calls in this incarnation */
    int running;               /* als_run scopes of it on our stack */
};

struct worker {
    int index;
    struct rng rng;
    struct owned st[NSTORE];
    pthread_t thread;
    uint64_t binds, captures, takes, disables, frees;
};

/* What one scope level of a thread has bound in its own stores. */
struct model {
    struct token *tok[NSTORE]; /* NULL: unbound */
    uint64_t gen[NSTORE], disables[NSTORE];
    bool captured;             /* something captured while this level's run was open */
};

static void *store_default(const struct worker *w, int s)
{
    return (void *)(uintptr_t)(0x1000u + (unsigned)w->index * 16u + (unsigned)s);
}

/* The token the model says store s holds now, or NULL. */
static struct token *bound_now(const struct worker *w, const struct model *m, int s)
{
    if (!m->tok[s] || m->gen[s] != w->st[s].gen || m->disables[s] != w->st[s].disables)
        return NULL;
    return m->tok[s];
}

static void check_level(const struct worker *w, const struct model *m, const char *where)
{
    for (int s = 0; s < NSTORE; s++) {
        struct token *t = bound_now(w, m, s);
        void *v = als_get(w->st[s].als);
        void *want = t ? (void *)t : store_default(w, s);
        CHECK(v == want, "%s: thread %d store %d reads %p, want %p", where, w->index, s, v, want);
        if (t)
            token_live(t, where);
    }
}

static struct token *token_new(struct worker *w, int s)
{
    struct token *t = calloc(1, sizeof *t);
    if (!t)
        abort();
    t->magic = LIVE;
    t->owner = w->index;
    t->store = s;
    t->gen = w->st[s].gen;
    atomic_fetch_add_explicit(&tokens_made, 1, memory_order_relaxed);
    return t;
}

static void store_make(struct worker *w, int s)
{
    w->st[s].als = als_new(&(als_options){ .name = "owned",
                                           .default_value = store_default(w, s),
                                           .destroy = token_destroy });
    if (!w->st[s].als)
        abort();
    w->st[s].gen++;
    w->st[s].disables = 0;
}

/* ---- taking from the board --------------------------------------------------------- */

struct inside {
    const struct holder *h;
    const struct worker *w;
};

/* Inside a holder's context. */
static void *inside_fn(void *arg)
{
    struct inside *in = arg;
    const struct holder *h = in->h;
    const struct worker *w = in->w;
    for (int i = 0; i < h->ntok; i++)
        token_live(h->tok[i], "inside a taken context");
    for (int s = 0; s < NSTORE; s++) {
        void *v = als_get(w->st[s].als);
        void *want = store_default(w, s);
        if (h->owner == w->index) {
            /* Our own capture: the value is there while the store lives on
             * undisabled; a later disable hides it even here. */
            for (int i = 0; i < h->ntok; i++)
                if (h->tok[i]->store == s && h->gen[s] == w->st[s].gen &&
                    h->disables[s] == w->st[s].disables)
                    want = h->tok[i];
        }
        CHECK(v == want, "thread %d inside a context of thread %d: store %d reads %p, want %p",
              w->index, h->owner, s, v, want);
    }
    return arg;
}

static void holder_release(struct holder *h)
{
    switch (h->kind) {
    case H_SNAPSHOT:
        als_snapshot_release(h->snap);
        break;
    case H_BOUND:
        als_bound_free(h->bound);
        break;
    case H_RESOURCE:
        als_resource_free(h->res);
        break;
    }
    free(h);
}

/* Checks a holder taken from the board, enters it, maybe shares it again,
 * then lets go of it (which may destroy values, here). */
static void consume(struct worker *w, struct holder *h);

static void publish(struct worker *w, struct holder *h)
{
    atomic_fetch_add_explicit(&holders_made, 1, memory_order_relaxed);
    unsigned slot = rng_below(&w->rng, BOARD);
    struct holder *old = atomic_exchange_explicit(&board[slot], h, memory_order_acq_rel);
    if (old)
        consume(w, old);
}

static void consume(struct worker *w, struct holder *h)
{
    atomic_fetch_add_explicit(&holders_taken, 1, memory_order_relaxed);
    w->takes++;
    for (int i = 0; i < h->ntok; i++)
        token_live(h->tok[i], "taken from the board");
    struct inside in = { h, w };
    switch (h->kind) {
    case H_SNAPSHOT:
        CHECK(als_snapshot_run(h->snap, inside_fn, &in) == &in, "als_snapshot_run");
        if (rng_one_in(&w->rng, 3)) {
            /* Shared again: a second holder of the same capture. */
            struct holder *h2 = malloc(sizeof *h2);
            if (!h2)
                abort();
            *h2 = *h;
            h2->snap = als_snapshot_retain(h->snap);
            CHECK(h2->snap == h->snap, "als_snapshot_retain");
            publish(w, h2);
        }
        break;
    case H_BOUND:
        CHECK(als_bound_call(h->bound, &in) == &in, "als_bound_call");
        break;
    case H_RESOURCE:
        CHECK(als_resource_run_in_scope(h->res, inside_fn, &in) == &in,
              "als_resource_run_in_scope");
        break;
    }
    holder_release(h);
}

/* ---- the thread's operations -------------------------------------------------------- */

static void steps(struct worker *w, struct model *m, int depth);

struct level {
    struct worker *w;
    struct model m;
    int depth;
    int store;
};

static void *level_fn(void *arg)
{
    struct level *l = arg;
    check_level(l->w, &l->m, "entering a run");
    steps(l->w, &l->m, l->depth);
    check_level(l->w, &l->m, "leaving a run");
    return arg;
}

static void capture(struct worker *w, struct model *m)
{
    struct holder *h = calloc(1, sizeof *h);
    if (!h)
        abort();
    h->owner = w->index;
    h->kind = (enum hkind)rng_below(&w->rng, 3);
    switch (h->kind) {
    case H_SNAPSHOT:
        h->snap = als_snapshot();
        CHECK(h->snap, "als_snapshot");
        break;
    case H_BOUND:
        h->bound = als_bind(inside_fn);
        CHECK(h->bound, "als_bind");
        break;
    case H_RESOURCE:
        h->res = als_resource_new("owner");
        CHECK(h->res, "als_resource_new");
        break;
    }
    if (!h->snap && !h->bound && !h->res) {
        free(h);
        return;
    }
    /* It holds exactly what is bound and live now. */
    for (int s = 0; s < NSTORE; s++) {
        struct token *t = bound_now(w, m, s);
        h->gen[s] = w->st[s].gen;
        h->disables[s] = w->st[s].disables;
        if (t)
            h->tok[h->ntok++] = t;
    }
    m->captured = true;
    w->captures++;
    publish(w, h);
}

static void one_step(struct worker *w, struct model *m, int depth)
{
    uint32_t op = rng_below(&w->rng, 16);
    int s = (int)rng_below(&w->rng, NSTORE);
    if (depth >= MAX_DEPTH && op < 4)
        op = 8;
    if (op < 4) {
        /* Bind in a run; nested steps; afterwards, unless something
         * captured it, the value must be gone. */
        struct level l = { .w = w, .m = *m, .depth = depth + 1, .store = s };
        struct token *t = token_new(w, s);
        l.m.tok[s] = t;
        l.m.gen[s] = w->st[s].gen;
        l.m.disables[s] = w->st[s].disables;
        l.m.captured = false;
        w->binds++;
        w->st[s].running++;
        atomic_store(&t->pin, PINNED);
        CHECK(als_run(w->st[s].als, t, level_fn, &l) == &l, "als_run");
        w->st[s].running--;
        if (!l.m.captured) {
            int d = atomic_load_explicit(&t->destroyed, memory_order_relaxed);
            if (d != 1)
                atomic_fetch_add_explicit(&late_destroys, 1, memory_order_relaxed);
            CHECK(d == 1, "a value nothing captured outlived its als_run (destroyed %d times)",
                  d);
        } else {
            m->captured = true;
        }
        if (atomic_exchange(&t->pin, UNPINNED) == DESTROYED_PINNED)
            quarantine_put(t);
    } else if (op < 6) {
        struct token *t = token_new(w, s);
        w->binds++;
        int rc = als_enter_with(w->st[s].als, t);
        if (CHECK(rc == 0, "als_enter_with: %s", als_strerror(rc))) {
            m->tok[s] = t;
            m->gen[s] = w->st[s].gen;
            m->disables[s] = w->st[s].disables;
        }
    } else if (op < 10) {
        capture(w, m);
    } else if (op < 13) {
        unsigned slot = rng_below(&w->rng, BOARD);
        struct holder *h = atomic_exchange_explicit(&board[slot], NULL, memory_order_acq_rel);
        if (h)
            consume(w, h);
    } else if (op < 15) {
        als_disable(w->st[s].als);
        w->st[s].disables++;
        w->disables++;
    } else if (w->st[s].running == 0) {
        /* Contexts still holding its values release them when they go. */
        als_free(w->st[s].als);
        store_make(w, s);
        w->frees++;
    }
    check_level(w, m, "after an operation");
}

static void steps(struct worker *w, struct model *m, int depth)
{
    int n = 1 + (int)rng_below(&w->rng, 4);
    for (int i = 0; i < n; i++)
        one_step(w, m, depth);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int s = 0; s < NSTORE; s++)
        store_make(w, s);
    struct model top = { .captured = false };
    while (stress_time_left()) {
        for (int i = 0; i < 32; i++)
            one_step(w, &top, 0);
    }
    /* Our stores go; the board may still hold their values. */
    for (int s = 0; s < NSTORE; s++)
        als_free(w->st[s].als);
    return NULL;
}

int main(int argc, char **argv)
{
    stress_init(argc, argv, "ownership", 3.0, NULL);
    int n = stress.small ? 2 : 4;
    struct worker *ws = calloc((size_t)n, sizeof *ws);
    if (!ws)
        abort();
    for (int i = 0; i < n; i++) {
        ws[i].index = i;
        ws[i].rng = rng_for((uint64_t)i + 7);
        if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]))
            abort();
    }
    uint64_t binds = 0, captures = 0, takes = 0, disables = 0, frees = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(ws[i].thread, NULL);
        binds += ws[i].binds;
        captures += ws[i].captures;
        takes += ws[i].takes;
        disables += ws[i].disables;
        frees += ws[i].frees;
    }
    /* The threads are gone (their top-level values with them) and so are
     * their stores: what the board holds is the last reference. */
    uint64_t left = 0;
    for (int i = 0; i < BOARD; i++) {
        struct holder *h = atomic_exchange(&board[i], NULL);
        if (h) {
            left++;
            for (int k = 0; k < h->ntok; k++)
                token_live(h->tok[k], "left on the board");
            holder_release(h);
        }
    }
    uint64_t made = atomic_load(&tokens_made), destroyed = atomic_load(&tokens_destroyed);
    CHECK(made == destroyed, "tokens made %" PRIu64 ", destroyed %" PRIu64, made, destroyed);
    CHECK(atomic_load(&double_destroys) == 0, "double destroys");
    for (size_t i = 0; i < QUARANTINE; i++)
        free(quarantine[i]);
    free(ws);

    stress_figure("threads", "%d, %d stores each", n, NSTORE);
    stress_figure("values bound", "%" PRIu64, binds);
    stress_figure("captures published", "%" PRIu64, captures);
    stress_figure("holders taken and released", "%" PRIu64, atomic_load(&holders_taken) + left);
    stress_figure("disables / frees", "%" PRIu64 " / %" PRIu64, disables, frees);
    stress_figure("held-token reads", "%" PRIu64, atomic_load(&token_reads));
    stress_figure("values destroyed (exactly once)", "%" PRIu64, destroyed);
    stress_figure("destroyed while reachable", "%" PRIu64, atomic_load(&poison_seen));
    stress_figure("not destroyed when released", "%" PRIu64, atomic_load(&late_destroys));
    (void)takes;
    return stress_finish();
}
