/*
 * A user's program, built with -fsanitize=thread against the ordinary
 * (release, uninstrumented) libals: tests/consumer_tsan/run.sh builds and
 * runs it. Each scenario hands plain, unsynchronised user data to other
 * threads only through libals, the way applications do; a correct libals
 * makes every one of those handoffs a happens-before edge that TSan sees,
 * so the run must end without a single report. (Handles that travel outside
 * libals go through mailbox.c, an uninstrumented stand-in for an event
 * loop library.)
 *
 * Usage: user SCENARIO   (logger, fanout, delayed, snapshot, destroy, cancel)
 * Exits 0 when the scenario's own checks pass; TSan's exit code (66 with
 * halt_on_error=1) when it reported something.
 */
#include <als.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 4
#define ROUNDS 64

static int failures;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,         \
                    __LINE__, #cond);                                      \
            failures++;                                                    \
        }                                                                  \
    } while (0)

/* ---- a request and its store -------------------------------------------
 * Plain fields, written by the thread that accepts the request before it
 * binds it, read by tasks, and freed by the store's destroy callback on
 * whichever thread drops the last reference. */
struct request {
    int id;
    char path[32];
    int lines;                      /* written by the request's own thread */
};

static atomic_int destroyed;

static void request_destroy(void *value)
{
    struct request *r = value;
    r->id = -1;                     /* a write: must come after every read */
    free(r);
    atomic_fetch_add_explicit(&destroyed, 1, memory_order_relaxed);
}

static als_t *request_store;

static struct request *request_new(int id)
{
    struct request *r = malloc(sizeof *r);
    r->id = id;
    snprintf(r->path, sizeof r->path, "/item/%d", id);
    r->lines = 0;
    return r;
}

/* ---- logger: a request handler hands a log line to a pool task ---------- */

struct line {
    char text[48];
    int request_id;
};

static atomic_int logged;

static int log_task(void *arg)
{
    struct line *l = arg;           /* written before als_submit */
    struct request *r = als_get(request_store);
    CHECK(r && r->id == l->request_id && strncmp(r->path, "/item/", 6) == 0);
    free(l);
    atomic_fetch_add_explicit(&logged, 1, memory_order_relaxed);
    return 0;
}

static void *handle(void *pool)
{
    struct request *r = als_get(request_store);
    for (int i = 0; i < 4; i++) {
        struct line *l = malloc(sizeof *l);
        snprintf(l->text, sizeof l->text, "GET %s step %d", r->path, i);
        l->request_id = r->id;
        r->lines++;                 /* this thread's own field */
        CHECK(als_submit(pool, log_task, l) == 0);
    }
    return NULL;
}

static void *accept_loop(void *pool)
{
    static atomic_int next_id;
    for (int i = 0; i < ROUNDS; i++) {
        int id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
        /* The store owns the request from here: destroy frees it. */
        als_run(request_store, request_new(id), handle, pool);
    }
    return NULL;
}

static void logger(als_pool_t *pool)
{
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, accept_loop, pool);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK(als_pool_drain(pool) == 0);
    CHECK(atomic_load(&logged) == 2 * ROUNDS * 4);
}

/* ---- fan-out: futures, a continuation, a group, drain, shutdown --------- */

struct part {
    int in[8];
    long sum;                       /* written by the task, read after wait */
};

static void *sum_part(void *arg)
{
    struct part *p = arg;
    p->sum = 0;
    for (int i = 0; i < 8; i++)
        p->sum += p->in[i];
    long *out = malloc(sizeof *out); /* allocated here, freed by the waiter */
    *out = p->sum;
    return out;
}

/* A continuation: runs in the context of its als_future_then call, whose
 * request was written before that call. */
static void *double_it(void *arg)
{
    long *v = arg;                  /* the source future's result */
    struct request *r = als_get(request_store);
    CHECK(r && r->lines == *v);
    long *out = malloc(sizeof *out);
    *out = 2 * *v;
    return out;
}

struct then_args {
    als_future_t *source, **out;
    als_pool_t *pool;
};

static void *then_double(void *arg)
{
    struct then_args *a = arg;
    CHECK(als_future_then(a->source, a->pool, double_it, a->out) == 0);
    return NULL;
}

static int fill_slot(void *arg)
{
    long *slot = arg;
    *slot = 7;
    return 0;
}

static void fanout(als_pool_t *pool)
{
    struct part parts[ROUNDS];
    als_future_t *fut[ROUNDS], *twice[ROUNDS];
    for (int i = 0; i < ROUNDS; i++) {
        for (int k = 0; k < 8; k++)
            parts[i].in[k] = i + k;
        CHECK(als_submit_future(pool, sum_part, &parts[i], &fut[i]) == 0);
        struct request *r = request_new(i);
        r->lines = 8 * i + 28;      /* the sum, for the continuation */
        struct then_args a = { fut[i], &twice[i], pool };
        als_run(request_store, r, then_double, &a);
    }
    for (int i = 0; i < ROUNDS; i++) {
        void *res = NULL, *res2 = NULL;
        CHECK(als_future_wait(fut[i], -1, &res) == 0);
        CHECK(parts[i].sum == 8 * i + 28 && *(long *)res == parts[i].sum);
        CHECK(als_future_wait(twice[i], -1, &res2) == 0);
        CHECK(*(long *)res2 == 2 * parts[i].sum);
        als_future_release(fut[i]);
        als_future_release(twice[i]);
        free(res2);
        free(res);                  /* after double_it read it */
    }

    long slots[ROUNDS];
    als_group_t *g = als_group_new();
    for (int i = 0; i < ROUNDS; i++) {
        slots[i] = 0;
        CHECK(als_group_submit(g, pool, fill_slot, &slots[i]) == 0);
    }
    CHECK(als_group_wait(g, -1) == 0);
    for (int i = 0; i < ROUNDS; i++)
        CHECK(slots[i] == 7);
    als_group_free(g);

    for (int i = 0; i < ROUNDS; i++) {
        slots[i] = 0;
        CHECK(als_submit(pool, fill_slot, &slots[i]) == 0);
    }
    CHECK(als_pool_drain(pool) == 0);
    for (int i = 0; i < ROUNDS; i++)
        CHECK(slots[i] == 7);

    for (int i = 0; i < ROUNDS; i++) {
        slots[i] = 0;
        CHECK(als_submit(pool, fill_slot, &slots[i]) == 0);
    }
    CHECK(als_pool_shutdown(pool, ALS_SHUTDOWN_DRAIN) == 0);
    for (int i = 0; i < ROUNDS; i++)
        CHECK(slots[i] == 7);
}

/* ---- delayed: a task that runs later, on the timer's schedule ----------- */

static void delayed(als_pool_t *pool)
{
    long slots[ROUNDS];
    for (int i = 0; i < ROUNDS; i++) {
        slots[i] = 0;
        CHECK(als_submit_after(pool, (uint64_t)(i % 4) * 100000, fill_slot, &slots[i]) == 0);
    }
    CHECK(als_pool_drain(pool) == 0);
    for (int i = 0; i < ROUNDS; i++)
        CHECK(slots[i] == 7);
}

/* ---- snapshot: a context captured on one thread, entered on another -----
 * The handles travel through mailbox.c, which TSan cannot see into: the
 * request's fields are ordered only by libals's own edges (capture ->
 * entry, and the last release -> destroy). */

/* Box 0 carries handles away from this thread, box 1 answers back. */
void mailbox_put(int box, void *p);
void *mailbox_take(int box);

static void *read_request(void *arg)
{
    struct request *r = als_get(request_store);
    long *seen = arg;
    *seen += r ? r->id + r->lines : -1000;
    return NULL;
}

/* The other thread: an event loop taking handles from the mailbox. */
static void *loop(void *arg)
{
    long *seen = arg;
    for (int i = 0; i < ROUNDS; i++) {
        als_snapshot_t *snap = mailbox_take(0);
        als_snapshot_run(snap, read_request, seen);
        als_scope_t scope;
        CHECK(als_scope_enter(&scope, snap) == 0);
        read_request(seen);
        CHECK(als_scope_leave(&scope) == 0);
        als_snapshot_release(snap); /* maybe the last: destroy runs here */
        als_bound_t *bound = mailbox_take(0);
        als_bound_call(bound, seen);
        als_bound_free(bound);
        als_resource_t *res = mailbox_take(0);
        als_resource_run_in_scope(res, read_request, seen);
        als_resource_free(res);
    }
    return NULL;
}

static void *capture(void *arg)
{
    (void)arg;
    struct request *r = als_get(request_store);
    r->lines = 5;                   /* after binding, before capturing */
    /* als_thread_create: the new thread starts in this context. */
    pthread_t t;
    long seen = 0;
    CHECK(als_thread_create(&t, NULL, read_request, &seen) == 0);
    pthread_join(t, NULL);
    CHECK(seen == r->id + 5);
    mailbox_put(0, als_snapshot());
    mailbox_put(0, als_bind(read_request));
    mailbox_put(0, als_resource_new("handoff"));
    return NULL;
}

static void snapshot(als_pool_t *pool)
{
    (void)pool;
    long seen = 0, want = 0;
    pthread_t t;
    pthread_create(&t, NULL, loop, &seen);
    for (int i = 0; i < ROUNDS; i++) {
        als_run(request_store, request_new(i), capture, NULL);
        want += 4 * (i + 5);
    }
    pthread_join(t, NULL);
    CHECK(seen == want);
    CHECK(atomic_load(&destroyed) == ROUNDS);
}

/* ---- destroy: the last reference dropped on a worker -------------------- */

static int touch_request(void *arg)
{
    (void)arg;
    struct request *r = als_get(request_store);
    CHECK(r && r->lines == 3);
    return 0;
}

static als_t *tag_store;

static void *submit_tagged(void *pool)
{
    for (int i = 0; i < 8; i++)
        CHECK(als_submit(pool, touch_request, NULL) == 0);
    return NULL;
}

static void *submit_many(void *pool)
{
    struct request *r = als_get(request_store);
    r->lines = 3;
    for (int i = 0; i < 8; i++)
        CHECK(als_submit(pool, touch_request, NULL) == 0);
    /* A second context holding the same request: whichever context's
     * tasks end last run destroy, after the other's reads. */
    static int tag;
    als_run(tag_store, &tag, submit_tagged, pool);
    return NULL;
}

static void *enter_and_submit(void *pool)
{
    for (int i = 0; i < ROUNDS / 4; i++) {
        struct request *r = request_new(i);
        r->lines = 3;
        /* als_enter_with: bound until replaced or the thread exits. */
        CHECK(als_enter_with(request_store, r) == 0);
        for (int k = 0; k < 4; k++)
            CHECK(als_submit(pool, touch_request, NULL) == 0);
    }
    return NULL;
}

/* Two snapshots hold one request. Another thread reads it through the first
 * and drops that one; then this thread drops the second, the last holder,
 * and destroy runs here. Only the mailbox (invisible to TSan) says that the
 * other thread is done: the value's own release edge must order its reads
 * before destroy. */
static void *capture_tagged(void *out)
{
    *(als_snapshot_t **)out = als_snapshot();
    return NULL;
}

static void *capture_two(void *out)
{
    als_snapshot_t **snaps = out;
    snaps[0] = als_snapshot();
    static int tag;
    als_run(tag_store, &tag, capture_tagged, &snaps[1]);
    return NULL;
}

static void *read_and_drop(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        als_snapshot_t *snap = mailbox_take(0);
        long seen = 0;
        als_snapshot_run(snap, read_request, &seen);
        CHECK(seen == i);
        als_snapshot_release(snap);
        mailbox_put(1, &seen); /* "done" (the pointer is not used) */
    }
    return NULL;
}

static void destroy(als_pool_t *pool)
{
    pthread_t reader;
    pthread_create(&reader, NULL, read_and_drop, NULL);
    for (int i = 0; i < ROUNDS; i++) {
        als_snapshot_t *snaps[2];
        als_run(request_store, request_new(i), capture_two, snaps);
        mailbox_put(0, snaps[0]);
        (void)mailbox_take(1);
        als_snapshot_release(snaps[1]);
    }
    pthread_join(reader, NULL);

    for (int i = 0; i < ROUNDS; i++)
        als_run(request_store, request_new(i), submit_many, pool);
    pthread_t t;
    pthread_create(&t, NULL, enter_and_submit, pool);
    pthread_join(t, NULL);
    CHECK(als_pool_drain(pool) == 0);
    /* Every request is gone once the tasks holding it are done. */
    CHECK(atomic_load(&destroyed) == 2 * ROUNDS + ROUNDS / 4);
}

/* ---- cancel: a cancellation seen by running tasks ---------------------
 * The canceller writes why after submitting, before als_cancel; tasks that
 * see als_cancelled() read it. Only the cancel -> cancelled edge orders
 * the two. */
static char cancel_reason[32];
static atomic_int cancel_seen, pollers_started;

static int poll_cancel(void *arg)
{
    (void)arg;
    atomic_fetch_add(&pollers_started, 1);
    while (!als_cancelled())
        sched_yield();
    if (strcmp(cancel_reason, "client gone") == 0)
        atomic_fetch_add(&cancel_seen, 1);
    return 0;
}

static void *submit_pollers(void *pool)
{
    for (int i = 0; i < THREADS; i++)
        CHECK(als_submit(pool, poll_cancel, NULL) == 0);
    return NULL;
}

static void cancellation(als_pool_t *pool)
{
    als_cancel_t *c = als_cancel_new(-1);
    CHECK(c != NULL);
    als_cancel_run(c, submit_pollers, pool);
    /* Cancel only once all run: a task not started by then is cancelled
     * instead (and never polls). */
    while (atomic_load(&pollers_started) < THREADS)
        sched_yield();
    snprintf(cancel_reason, sizeof cancel_reason, "client gone");
    CHECK(als_cancel(c) == 0);
    als_cancel_release(c);
    CHECK(als_pool_drain(pool) == 0);
    CHECK(atomic_load(&cancel_seen) == THREADS);
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*fn)(als_pool_t *);
    } scenarios[] = {
        { "logger", logger }, { "fanout", fanout }, { "delayed", delayed },
        { "snapshot", snapshot }, { "destroy", destroy }, { "cancel", cancellation },
    };
    if (argc != 2) {
        fprintf(stderr, "usage: %s SCENARIO\n", argv[0]);
        return 2;
    }
    request_store = als_new(&(als_options){ .name = "request", .destroy = request_destroy });
    tag_store = als_new(&(als_options){ .name = "tag" });
    als_pool_t *pool = als_pool_new(&(als_pool_options){ .threads = THREADS });
    if (!request_store || !tag_store || !pool)
        return 1;
    int found = 0;
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
        if (strcmp(argv[1], scenarios[i].name) == 0) {
            scenarios[i].fn(pool);
            found = 1;
        }
    if (!found) {
        fprintf(stderr, "unknown scenario %s\n", argv[1]);
        return 2;
    }
    als_pool_free(pool);
    als_free(request_store);
    als_free(tag_store);
    if (failures)
        fprintf(stderr, "%s: %d check(s) failed\n", argv[1], failures);
    return failures ? 1 : 0;
}
