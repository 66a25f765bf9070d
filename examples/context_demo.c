/*
 * context_demo: a tour of libals, async-local storage for C threads.
 *
 * A pretend server handles one request. Code deep inside the handler asks
 * "which request am I serving, for which user?" by reading two stores,
 * although nobody passes the request down. The tour shows, in order:
 *
 *   1. als_run: a value bound for the duration of a call;
 *   2. als_enter_with: a value bound for the rest of the current scope;
 *   3. nested als_run: an inner run shadows one store, the other flows on,
 *      and everything is restored when the inner run returns;
 *   4. als_exit: one store unbound for a call, the other unaffected;
 *   5. async ids and als_thread_create: a resource scope, and a thread that
 *      starts inside its creator's context, as a child of that scope;
 *   6. a snapshot taken on this thread and entered on another, after the
 *      request it captured has ended here;
 *   7. ownership: the store frees each request id exactly once, on whichever
 *      thread lets go of it last.
 *
 * Every value it prints is also checked: it exits 1 if any is wrong, so it
 * doubles as a test (CTest runs it in every configuration).
 */
#define _POSIX_C_SOURCE 200809L

#include <als.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The two stores: like two AsyncLocalStorage instances in Node. */
static als_t *request_id;   /* the request being served (a malloc'd string) */
static als_t *user;         /* who sent it (a string literal) */

static atomic_int failures;      /* checks that saw a wrong value */
static atomic_int ids_freed;     /* request ids the store has freed */

/* Each thread's name, for the messages. */
static _Thread_local const char *thread_name = "main";

/* ---- checking and printing -------------------------------------------- */

static void section(const char *title)
{
    printf("\n%s\n", title);
}

static void fail(void)
{
    atomic_fetch_add_explicit(&failures, 1, memory_order_relaxed);
}

/* Deep in the call tree: no request parameter, yet it knows. Prints what
 * the two stores hold here and checks it against what the tour expects. */
static void log_line(const char *where, const char *want_request,
                     const char *want_user)
{
    const char *r = als_get(request_id);
    const char *u = als_get(user);
    bool ok = strcmp(r, want_request) == 0 && strcmp(u, want_user) == 0;
    printf("  %-4s [%-6s] request=%-9s user=%-9s %s\n", ok ? "ok" : "FAIL",
           thread_name, r, u, where);
    if (!ok) {
        printf("       expected request=%s user=%s\n", want_request, want_user);
        fail();
    }
}

/* Prints and checks a number (async ids, counts). */
static void check_number(const char *what, uint64_t got, uint64_t want)
{
    bool ok = got == want;
    printf("  %-4s [%-6s] %s = %" PRIu64, ok ? "ok" : "FAIL", thread_name,
           what, got);
    if (!ok) {
        printf(" (expected %" PRIu64 ")", want);
        fail();
    }
    printf("\n");
}

/* The request store's destroy callback: the store owns the ids bound to it
 * and calls this once per binding, when no context can reach the id any
 * more, on the thread that let go of it last. */
static void free_request_id(void *id)
{
    printf("       (the store frees request id %s on thread %s)\n",
           (const char *)id, thread_name);
    free(id);
    atomic_fetch_add_explicit(&ids_freed, 1, memory_order_relaxed);
}

static char *new_request_id(const char *text)
{
    char *id = malloc(strlen(text) + 1);
    if (!id) {
        perror("malloc");
        exit(1);
    }
    return strcpy(id, text);
}

/* ---- 2. als_enter_with ------------------------------------------------ */

/* Authentication happens half-way through the request: from here on, until
 * the request's als_run returns, the user is known. A plain function call is
 * no scope, so the binding outlives this function. */
static void authenticate(void)
{
    if (als_enter_with(user, "alice") != ALS_OK) {
        printf("  FAIL als_enter_with\n");
        fail();
    }
}

/* ---- 3. nested als_run ------------------------------------------------- */

static void *as_admin(void *unused)
{
    (void)unused;
    log_line("inside als_run(user, \"admin\")", "req-42", "admin");
    return NULL;
}

static void *sub_request(void *unused)
{
    (void)unused;
    log_line("inside als_run(request_id, \"req-42.1\")", "req-42.1", "alice");
    return NULL;
}

/* ---- 4. als_exit -------------------------------------------------------- */

static void *without_user(void *unused)
{
    (void)unused;
    log_line("inside als_exit(user)", "req-42", "anonymous");
    return NULL;
}

/* ---- 5. async ids and als_thread_create --------------------------------- */

struct ids {
    uint64_t resource_id;        /* the resource the thread is created in */
};

/* The body of a thread made with als_thread_create. */
static void *worker(void *arg)
{
    const struct ids *ids = arg;
    thread_name = "worker";
    log_line("new thread: starts in its creator's context", "req-42", "alice");
    /* A fresh execution id; the trigger is the scope that created us. */
    check_number("trigger id (= the resource's id)", als_trigger_async_id(),
                 ids->resource_id);
    if (als_execution_async_id() <= ids->resource_id) {
        printf("  FAIL execution id %" PRIu64 " is not fresh\n",
               als_execution_async_id());
        fail();
    }
    /* What the thread binds stays in the thread and ends with it. */
    if (als_enter_with(user, "bot") != ALS_OK)
        fail();
    log_line("after als_enter_with(user, \"bot\") here", "req-42", "bot");
    return NULL;
}

/* Runs inside the resource's scope: its context and its async ids. */
static void *query_database(void *arg)
{
    struct ids *ids = arg;
    log_line("inside the resource's scope", "req-42", "alice");
    check_number("execution id (= the resource's id)",
                 als_execution_async_id(), ids->resource_id);
    check_number("trigger id (= the top level's)", als_trigger_async_id(), 1);

    pthread_t t;
    if (als_thread_create(&t, NULL, worker, ids) != ALS_OK) {
        printf("  FAIL als_thread_create\n");
        fail();
        return NULL;
    }
    pthread_join(t, NULL);
    log_line("the creator is unaffected by what the thread bound", "req-42",
             "alice");
    return NULL;
}

/* ---- the request handler ------------------------------------------------ */

/* Runs inside als_run(request_id, "req-42", ...). Returns a snapshot of the
 * request's context, for step 6. */
static void *handle_request(void *unused)
{
    (void)unused;
    section("1. als_run(request_id, \"req-42\", handle_request, NULL)");
    log_line("handle_request, before authentication", "req-42", "anonymous");

    section("2. als_enter_with(user, \"alice\") inside authenticate()");
    authenticate();
    log_line("after authenticate() returned", "req-42", "alice");

    section("3. nested runs: each shadows one store, then restores it");
    als_run(user, "admin", as_admin, NULL);
    log_line("after the run of user", "req-42", "alice");
    als_run(request_id, new_request_id("req-42.1"), sub_request, NULL);
    check_number("request ids freed (req-42.1, as its run ended)",
                 (uint64_t)atomic_load(&ids_freed), 1);
    log_line("after the run of request_id", "req-42", "alice");

    section("4. als_exit(user, ...): user unbound, request_id kept");
    als_exit(user, without_user, NULL);
    log_line("after als_exit", "req-42", "alice");

    section("5. async ids: a resource scope, and a thread created in it");
    check_number("execution id (als_run keeps the thread's: 1)",
                 als_execution_async_id(), 1);
    check_number("trigger id (the thread's: 0)", als_trigger_async_id(), 0);
    als_resource_t *query = als_resource_new("db.query");
    if (!query) {
        printf("  FAIL als_resource_new\n");
        fail();
    } else {
        struct ids ids = {.resource_id = als_resource_async_id(query)};
        printf("       resource \"%s\": async id %" PRIu64 ", trigger id %" PRIu64
               "\n", als_resource_type(query), ids.resource_id,
               als_resource_trigger_async_id(query));
        als_resource_run_in_scope(query, query_database, &ids);
        als_resource_free(query);
    }

    /* Capture the whole context (both stores) to hand to another thread. */
    return als_snapshot();
}

/* ---- 6. a snapshot entered on another thread ---------------------------- */

static void *inside_snapshot(void *unused)
{
    (void)unused;
    log_line("inside als_snapshot_run", "req-42", "alice");
    return NULL;
}

/* The body of a plain pthread: it inherits nothing by itself. */
static void *snapshot_reader(void *snap)
{
    thread_name = "reader";
    log_line("plain pthread, top level: nothing bound", "none", "anonymous");
    als_snapshot_run(snap, inside_snapshot, NULL);
    log_line("after als_snapshot_run: restored", "none", "anonymous");
    /* The last reference to req-42: the store frees it here, now. */
    als_snapshot_release(snap);
    return NULL;
}

int main(void)
{
    /* setvbuf: lines from both threads appear in order even through a pipe. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    request_id = als_new(&(als_options){
        .name = "request_id", .default_value = "none",
        .destroy = free_request_id, /* the store owns the ids bound to it */
    });
    user = als_new(&(als_options){.name = "user", .default_value = "anonymous"});
    if (!request_id || !user) {
        fprintf(stderr, "context_demo: out of memory\n");
        return 1;
    }

    section("0. top level: nothing bound, the stores give their defaults");
    log_line("main", "none", "anonymous");

    als_snapshot_t *snap =
        als_run(request_id, new_request_id("req-42"), handle_request, NULL);

    section("6. the request is over here; a snapshot of it goes to another thread");
    log_line("main, after the request's run", "none", "anonymous");
    check_number("request ids freed (req-42 is still in the snapshot)",
                 (uint64_t)atomic_load(&ids_freed), 1);
    if (!snap) {
        printf("  FAIL als_snapshot\n");
        fail();
    } else {
        pthread_t t;
        if (pthread_create(&t, NULL, snapshot_reader, snap) != 0) {
            printf("  FAIL pthread_create\n");
            fail();
            als_snapshot_release(snap);
        } else {
            pthread_join(t, NULL);
        }
    }

    section("7. every request id freed exactly once");
    check_number("request ids freed", (uint64_t)atomic_load(&ids_freed), 2);

    als_free(user);
    als_free(request_id);

    int n = atomic_load(&failures);
    printf("\n%s: %d wrong value%s\n", n ? "FAILED" : "passed", n,
           n == 1 ? "" : "s");
    return n ? 1 : 0;
}
