/*
 * trace_server: a real HTTP service propagating W3C trace context with
 * libals (issue 6).
 *
 * Every GET request:
 *   1. extracts `traceparent` / `tracestate` (a missing, invalid or
 *      duplicated `traceparent` starts a new trace, as the spec says);
 *   2. runs its handler inside that trace context (als_trace_run) and an
 *      async resource of its own (so subtasks can name their trigger);
 *   3. fans out over an als pool in two levels: `fan1` tasks, each of which
 *      submits `fan2` more; every task runs in a child span of whoever
 *      submitted it, and nothing but the pool's ordinary context capture
 *      carries the trace there;
 *   4. logs every step with als_trace_log (each line prefixed with the
 *      current trace and span ids, plus `req=<id>` from x-request-id);
 *   5. answers JSON: trace_id, span_id, parent_id, async_id and subtasks
 *      [{name, level, trace_id, span_id, parent_span_id, async_id,
 *      trigger_async_id}], with a `traceparent` response header for the
 *      handler's span (and `tracestate` when there is one).
 *
 * POST /forward (forward.h) calls other services: its body is a JSON array
 * of {"url", "arguments"}; each element, in order, is POSTed from a child
 * span with traceparent, tracestate and baggage injected, and the answer
 * says what the server extracted (trace_id, parent_id, flags, tracestate,
 * baggage) and each call's span_id and status. Headers are read through
 * als_propagator_extract: traceparent, tracestate (repeated fields
 * combined) and baggage, which is bound for the request like the trace.
 *
 * Deadlines (--deadline-ms N, issue 15): each request runs inside a
 * cancellation scope of its own, als_cancel_run(als_cancel_new(N ms)), so
 * every subtask carries the request's deadline. Subtasks are submitted with
 * a cancel callback: one not started by the deadline is cancelled instead
 * of run (a level-1 one takes its level-2 children with it), a submit made
 * after it is refused (ALS_ECANCELED), and running ones stop their work
 * when they see als_cancelled(). The answer counts them: "cancelled".
 * --work-ms N makes each subtask work (sleep in 1 ms steps, polling
 * als_cancelled) that long, so that a deadline can fall mid-fan-out.
 *
 * Usage: trace_server [--port N] [--log FILE] [--workers N] [--fan1 N]
 *                     [--fan2 N] [--deadline-ms N] [--work-ms N]
 *   --port 0 (the default) picks a free port. The first line on stdout is
 *   always `listening on 127.0.0.1:<port>`. Only 127.0.0.1 is bound.
 *   --log FILE appends the trace log to FILE (default: stderr).
 *   SIGINT or SIGTERM stops the server cleanly: in-flight requests finish,
 *   the pool drains, and it prints `stopped: <n> requests` and exits 0.
 */
#define _GNU_SOURCE
#include <als.h>
#include <als_trace.h>

#include <microhttpd.h>

#include "forward.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define MAX_FAN 16
#define BODY_MAX (1u << 20)      /* POST /forward bodies */
#define REQ_ID_MAX 20

static als_pool_t *pool;
static unsigned fan1 = 4, fan2 = 3;
static long deadline_ms = -1;          /* < 0: requests have no deadline */
static unsigned long work_ms;          /* each subtask's simulated work */
static _Atomic unsigned long served, server_ids;

/* ---- per-request state ------------------------------------------------- */

/* What one subtask saw from inside itself: the client checks these. */
struct sub {
    char name[16];
    int level;
    als_trace_ctx ctx;                 /* als_trace_current() inside */
    uint64_t async_id, trigger_async_id;
    bool ran;
};

struct request;

/* One pool job: which request, which subtask slot, and (level 1) which
 * index its own children get. */
struct job {
    struct request *rq;
    unsigned a, b;
};

struct request {
    struct MHD_Connection *conn;
    char id[REQ_ID_MAX + 2];
    /* incoming headers, in order: the propagator's carrier */
    als_header *headers;
    size_t nheaders, cap_headers;
    bool headers_failed;
    const char *traceparent;
    unsigned traceparent_count;
    const char *request_id;
    bool continued;                    /* the incoming trace was used */
    als_baggage *baggage;              /* the incoming baggage, bound too */
    const char *body;                  /* POST /forward */
    size_t body_len;
    /* fan-out */
    struct sub *subs;                  /* fan1 level-1, then fan1*fan2 level-2 */
    struct job *jobs;
    unsigned nsubs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned pending;                  /* under mu */
    unsigned cancelled;                /* under mu: subtasks that never ran */
    bool submit_failed;                /* under mu */
    uint64_t async_id;                 /* the handler's resource */
    enum MHD_Result result;
};

/* The handler waits for every task of its request, whatever the level:
 * a level-1 task adds its children before it finishes itself, so the
 * count cannot reach zero early. */
static void pending_add(struct request *rq, unsigned n)
{
    pthread_mutex_lock(&rq->mu);
    rq->pending += n;
    pthread_mutex_unlock(&rq->mu);
}

/* The last touch of `rq` by a task (or its cancel callback): after it the
 * handler may return. `cancelled`: subtasks that will never run. */
static void pending_done(struct request *rq, bool failed, unsigned cancelled)
{
    pthread_mutex_lock(&rq->mu);
    if (failed)
        rq->submit_failed = true;
    rq->cancelled += cancelled;
    if (--rq->pending == 0)
        pthread_cond_signal(&rq->cv);
    pthread_mutex_unlock(&rq->mu);
}

static void pending_wait(struct request *rq)
{
    pthread_mutex_lock(&rq->mu);
    while (rq->pending > 0)
        pthread_cond_wait(&rq->cv, &rq->mu);
    pthread_mutex_unlock(&rq->mu);
}

static void record(struct sub *s, int level, const char *name)
{
    snprintf(s->name, sizeof s->name, "%s", name);
    s->level = level;
    als_trace_current(&s->ctx);
    s->async_id = als_execution_async_id();
    s->trigger_async_id = als_trigger_async_id();
    s->ran = true;
}

/* A subtask's simulated work: --work-ms, cut short by the request's
 * deadline (running code is never interrupted: it polls). */
static void work(void)
{
    struct timespec step = {0, 1000000};
    for (unsigned long ms = 0; ms < work_ms && !als_cancelled(); ms++)
        nanosleep(&step, NULL);
}

/* Submits a subtask with its cancel callback. A refusal because the
 * request's deadline has passed counts the subtask (and what it would have
 * submitted, `weight` in all) as cancelled; any other failure fails the
 * request. Returns whether the pool accepted it. */
static bool submit_sub(struct request *rq, als_task_fn fn, void (*cancel)(void *), struct job *j,
                       unsigned weight)
{
    pending_add(rq, 1);
    int rc = als_submit_task(pool, &(als_task){.fn = fn, .arg = j, .cancel = cancel});
    if (rc == ALS_ECANCELED)
        pending_done(rq, false, weight);
    else if (rc != 0)
        pending_done(rq, true, 0);
    return rc == 0;
}

/* ---- the two levels of subtasks ----------------------------------------- */

static void *level2_body(void *p)
{
    struct job *j = p;
    struct request *rq = j->rq;
    struct sub *s = &rq->subs[fan1 + j->a * fan2 + j->b];
    char name[16];
    snprintf(name, sizeof name, "%u.%u", j->a, j->b);
    record(s, 2, name);
    work();
    als_trace_log("req=%s step=sub-run sub=%s", rq->id, name);
    return NULL;
}

static int level2_task(void *p)
{
    struct job *j = p;
    struct request *rq = j->rq;
    /* A child span of the level-1 span that submitted us: the pool carried
     * that span here in the task's captured context. */
    int rc = als_trace_run_span(level2_body, j, NULL, NULL);
    pending_done(rq, rc != 0, 0);
    return rc;
}

/* Runs instead of level2_task when the deadline passed before it started. */
static void level2_cancel(void *p)
{
    struct job *j = p;
    pending_done(j->rq, false, 1);
}

static void *level1_body(void *p)
{
    struct job *j = p;
    struct request *rq = j->rq;
    struct sub *s = &rq->subs[j->a];
    char name[16];
    snprintf(name, sizeof name, "%u", j->a);
    record(s, 1, name);
    als_trace_log("req=%s step=sub-start sub=%s fan=%u", rq->id, name, fan2);
    unsigned ok = 0;
    for (unsigned b = 0; b < fan2; b++) {
        struct job *child = &rq->jobs[fan1 + j->a * fan2 + b];
        child->rq = rq;
        child->a = j->a;
        child->b = b;
        ok += submit_sub(rq, level2_task, level2_cancel, child, 1);
    }
    als_trace_log("req=%s step=sub-done sub=%s submitted=%u", rq->id, name, ok);
    work();                            /* the children queue meanwhile */
    return NULL;
}

static int level1_task(void *p)
{
    struct job *j = p;
    struct request *rq = j->rq;
    int rc = als_trace_run_span(level1_body, j, NULL, NULL);
    pending_done(rq, rc != 0, 0);
    return rc;
}

/* A level-1 subtask cancelled before it started: its children never exist. */
static void level1_cancel(void *p)
{
    struct job *j = p;
    pending_done(j->rq, false, 1 + fan2);
}

/* ---- the response ---------------------------------------------------------- */

struct buf {
    char *p;
    size_t len, cap;
    bool overflow;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct buf *b, const char *fmt, ...)
{
    if (b->overflow)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len)
        b->overflow = true;
    else
        b->len += (size_t)n;
}

static void hex16(char out[33], const uint8_t *id)
{
    als_trace_hex(out, id, ALS_TRACE_ID_SIZE);
}

static void hex8(char out[17], const uint8_t *id)
{
    als_trace_hex(out, id, ALS_SPAN_ID_SIZE);
}

static enum MHD_Result respond(struct request *rq, unsigned status, char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    /* The handler's context goes back to the caller (and would go to any
     * downstream call): trace id, and our span as the parent. */
    char tp[ALS_TRACEPARENT_SIZE];
    if (als_trace_inject(tp, sizeof tp) > 0)
        MHD_add_response_header(r, "traceparent", tp);
    const als_trace_ctx *cur = als_trace_get();
    if (cur && cur->tracestate[0])
        MHD_add_response_header(r, "tracestate", cur->tracestate);
    MHD_add_response_header(r, "Content-Type", "application/json");
    als_trace_log("req=%s step=respond status=%u bytes=%zu", rq->id, status, len);
    enum MHD_Result ret = MHD_queue_response(rq->conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static char *error_body(const char *msg, size_t *len)
{
    char *b = NULL;
    int n = asprintf(&b, "{\"error\":\"%s\"}\n", msg);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return b;
}

/* The handler proper: runs inside the request's trace context and its
 * async resource. */
static void *handle(void *p)
{
    struct request *rq = p;
    const als_trace_ctx *me = als_trace_get();   /* ours until we return */
    char parent[17] = "-";
    if (rq->continued)
        hex8(parent, me->parent_id);
    const char *incoming = rq->traceparent_count == 0 ? "missing"
                           : rq->traceparent_count > 1 ? "duplicate"
                           : rq->continued ? "valid" : "invalid";
    rq->async_id = als_execution_async_id();
    als_trace_log("req=%s step=start incoming=%s traceparent_len=%zu parent=%s",
                  rq->id, incoming, rq->traceparent ? strlen(rq->traceparent) : (size_t)0,
                  parent);

    rq->nsubs = fan1 + fan1 * fan2;
    rq->subs = calloc(rq->nsubs, sizeof *rq->subs);
    rq->jobs = calloc(rq->nsubs, sizeof *rq->jobs);
    size_t len = 0;
    char *body = NULL;
    if (!rq->subs || !rq->jobs) {
        body = error_body("out of memory", &len);
        rq->result = body ? respond(rq, MHD_HTTP_SERVICE_UNAVAILABLE, body, len) : MHD_NO;
        goto out;
    }

    als_trace_log("req=%s step=fanout fan1=%u fan2=%u", rq->id, fan1, fan2);
    for (unsigned a = 0; a < fan1; a++) {
        struct job *j = &rq->jobs[a];
        j->rq = rq;
        j->a = a;
        submit_sub(rq, level1_task, level1_cancel, j, 1 + fan2);
    }
    pending_wait(rq);
    unsigned ran = 0;
    for (unsigned i = 0; i < rq->nsubs; i++)
        ran += rq->subs[i].ran;
    als_trace_log("req=%s step=gathered subtasks=%u cancelled=%u", rq->id, ran, rq->cancelled);

    if (rq->submit_failed || ran + rq->cancelled != rq->nsubs) {
        body = error_body("fan-out failed", &len);
        rq->result = body ? respond(rq, MHD_HTTP_SERVICE_UNAVAILABLE, body, len) : MHD_NO;
        goto out;
    }

    struct buf b = {.cap = 512 + (size_t)rq->nsubs * 256};
    b.p = malloc(b.cap);
    if (!b.p) {
        rq->result = MHD_NO;
        goto out;
    }
    char t[33], s[17], ps[17];
    hex16(t, me->trace_id);
    hex8(s, me->span_id);
    put(&b, "{\"request_id\":\"%s\",\"trace_id\":\"%s\",\"span_id\":\"%s\",\"parent_id\":\"%s\","
            "\"continued\":%s,\"async_id\":%llu,\"cancelled\":%u,\"subtasks\":[",
        rq->id, t, s, rq->continued ? parent : "", rq->continued ? "true" : "false",
        (unsigned long long)rq->async_id, rq->cancelled);
    for (unsigned i = 0, n = 0; i < rq->nsubs; i++) {
        const struct sub *x = &rq->subs[i];
        if (!x->ran)
            continue;                  /* cancelled: counted above */
        hex16(t, x->ctx.trace_id);
        hex8(s, x->ctx.span_id);
        hex8(ps, x->ctx.parent_id);
        put(&b, "%s{\"name\":\"%s\",\"level\":%d,\"trace_id\":\"%s\",\"span_id\":\"%s\","
                "\"parent_span_id\":\"%s\",\"async_id\":%llu,\"trigger_async_id\":%llu}",
            n++ ? "," : "", x->name, x->level, t, s, ps, (unsigned long long)x->async_id,
            (unsigned long long)x->trigger_async_id);
    }
    put(&b, "]}\n");
    if (b.overflow) {
        free(b.p);
        rq->result = MHD_NO;
        goto out;
    }
    rq->result = respond(rq, MHD_HTTP_OK, b.p, b.len);
out:
    free(rq->subs);
    free(rq->jobs);
    return NULL;
}

/* POST /forward: the calls, then what we extracted and what each call was. */
static void *handle_forward(void *p)
{
    struct request *rq = p;
    const als_trace_ctx *me = als_trace_get();
    als_trace_log("req=%s step=forward bytes=%zu continued=%d", rq->id, rq->body_len,
                  rq->continued);
    char *body = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&body, &len);
    if (!out) {
        rq->result = MHD_NO;
        return NULL;
    }
    char t[33], s[17], parent[17] = "";
    hex16(t, me->trace_id);
    hex8(s, me->span_id);
    if (rq->continued)
        hex8(parent, me->parent_id);
    fprintf(out, "{\"request_id\":\"%s\",\"trace_id\":\"%s\",\"span_id\":\"%s\","
                 "\"parent_id\":\"%s\",\"continued\":%s,\"flags\":\"%02x\",\"tracestate\":",
            rq->id, t, s, parent, rq->continued ? "true" : "false", me->flags);
    json_string(out, me->tracestate, strlen(me->tracestate));
    fputs(",\"baggage\":[", out);
    const als_baggage *bag = als_baggage_current();
    for (size_t i = 0; i < als_baggage_count(bag); i++) {
        als_baggage_entry e;
        als_baggage_entry_at(bag, i, &e);
        fputs(i ? ",{\"key\":" : "{\"key\":", out);
        json_string(out, e.key, strlen(e.key));
        fputs(",\"value\":", out);
        json_string(out, e.value, e.value_len);
        fputs(",\"properties\":", out);
        json_string(out, e.properties, strlen(e.properties));
        fputc('}', out);
    }
    fputs("],\"calls\":", out);
    int n = forward_available() ? forward_run(rq->body, rq->body_len, rq->id, out) : -2;
    fputs("}\n", out);
    if (fclose(out) != 0) {
        free(body);
        rq->result = MHD_NO;
        return NULL;
    }
    unsigned status = MHD_HTTP_OK;
    if (n < 0) {
        free(body);
        body = error_body(n == -1 ? "the body is not a JSON array of {url, arguments}"
                                  : "built without libcurl: no calls", &len);
        status = n == -1 ? MHD_HTTP_BAD_REQUEST : MHD_HTTP_NOT_IMPLEMENTED;
    }
    rq->result = body ? respond(rq, status, body, len) : MHD_NO;
    return NULL;
}

/* Runs `handle` inside an async resource: the subtasks' trigger id then
 * names the request, not the connection thread's top level. */
static void *serve_in_scope(void *p)
{
    struct request *rq = p;
    /* The baggage, like the trace, for everything the request does: bound
     * before the resource, which captures the context it is created in. */
    als_resource_t *res = als_baggage_enter(rq->baggage) == 0
                          ? als_resource_new("http.request") : NULL;
    if (!res) {
        rq->result = MHD_NO;
        return NULL;
    }
    als_resource_run_in_scope(res, rq->body ? handle_forward : handle, rq);
    als_resource_free(res);
    return NULL;
}

/* With --deadline-ms, the request's own cancellation scope around all of
 * it: the resource, and so every subtask, captures it. */
static void *serve(void *p)
{
    if (deadline_ms < 0)
        return serve_in_scope(p);
    als_cancel_t *c = als_cancel_new(deadline_ms * 1000000);
    if (c)
        als_cancel_run(c, serve_in_scope, p);
    als_cancel_release(c);             /* its tasks hold it while they live */
    return NULL;
}

/* ---- libmicrohttpd glue ---------------------------------------------------- */

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind,
                                      const char *key, const char *value)
{
    (void)kind;
    struct request *rq = cls;
    if (!key)
        return MHD_YES;
    /* Every field, in order (plus the terminating pair): the propagator
     * finds its own, in any case, repeated ones combined. */
    if (rq->nheaders + 2 > rq->cap_headers) {
        size_t cap = rq->cap_headers ? 2 * rq->cap_headers : 16;
        als_header *h = realloc(rq->headers, cap * sizeof *h);
        if (!h) {
            rq->headers_failed = true;
            return MHD_NO;
        }
        rq->headers = h;
        rq->cap_headers = cap;
    }
    rq->headers[rq->nheaders++] = (als_header){key, value ? value : ""};
    rq->headers[rq->nheaders] = (als_header){NULL, NULL};
    if (strcasecmp(key, "traceparent") == 0) {
        rq->traceparent_count++;
        rq->traceparent = value ? value : "";
    } else if (strcasecmp(key, "x-request-id") == 0) {
        rq->request_id = value;
    }
    return MHD_YES;
}

/* Request ids go into log lines: accept only short digit strings. */
static void set_request_id(struct request *rq)
{
    const char *v = rq->request_id;
    size_t n = v ? strlen(v) : 0;
    bool ok = n > 0 && n <= REQ_ID_MAX && strspn(v, "0123456789") == n;
    if (ok)
        memcpy(rq->id, v, n + 1);
    else
        snprintf(rq->id, sizeof rq->id, "s%lu",
                 atomic_fetch_add_explicit(&server_ids, 1, memory_order_relaxed));
}

/* A connection's request body, until the request completes. */
struct upload {
    char *buf;
    size_t len;
    bool too_big;
};

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct upload *up = *con_cls;
    if (up) {
        free(up->buf);
        free(up);
        *con_cls = NULL;
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)cls;
    (void)version;
    bool forward = strcmp(method, "POST") == 0 && strcmp(url, "/forward") == 0;
    struct upload *up = *con_cls;
    if (up == NULL) {                  /* headers only: wait for the rest */
        up = calloc(1, sizeof *up);
        if (!up)
            return MHD_NO;
        *con_cls = up;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {      /* a body: kept for /forward only */
        if (forward && !up->too_big) {
            if (up->len + *upload_data_size > BODY_MAX) {
                up->too_big = true;
            } else {
                char *b = realloc(up->buf, up->len + *upload_data_size + 1);
                if (!b)
                    return MHD_NO;
                memcpy(b + up->len, upload_data, *upload_data_size);
                up->buf = b;
                up->len += *upload_data_size;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "GET") != 0 && !forward) {
        static char msg[] = "{\"error\":\"GET, or POST /forward\"}\n";
        struct MHD_Response *r = MHD_create_response_from_buffer(sizeof msg - 1, msg,
                                                                 MHD_RESPMEM_PERSISTENT);
        if (!r)
            return MHD_NO;
        MHD_add_response_header(r, "Allow", "GET, POST");
        enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_METHOD_NOT_ALLOWED, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (up->too_big)
        return MHD_NO;                 /* over BODY_MAX: drop the connection */

    struct request *rq = calloc(1, sizeof *rq);
    if (!rq)
        return MHD_NO;
    rq->conn = conn;
    pthread_mutex_init(&rq->mu, NULL);
    pthread_cond_init(&rq->cv, NULL);
    MHD_get_connection_values(conn, MHD_HEADER_KIND, collect_header, rq);
    set_request_id(rq);
    if (forward) {
        rq->body = up->buf ? up->buf : "";
        rq->body_len = up->len;
    }

    /* Two traceparent headers are as good as none (the spec's test suite
     * expects a restart); so is an unparseable one. */
    als_trace_ctx ctx;
    int ex = rq->headers_failed ? ALS_ENOMEM
             : als_propagator_extract(als_headers_get, rq->headers, &ctx, &rq->baggage);
    rq->continued = ex == 1;
    rq->result = MHD_NO;
    if (ex < 0 || als_trace_run(&ctx, serve, rq, NULL) != 0)
        rq->result = MHD_NO;           /* out of memory: drop the connection */
    enum MHD_Result ret = rq->result;
    als_baggage_release(rq->baggage);
    free(rq->headers);
    pthread_cond_destroy(&rq->cv);
    pthread_mutex_destroy(&rq->mu);
    free(rq);
    atomic_fetch_add_explicit(&served, 1, memory_order_relaxed);
    return ret;
}

/* libmicrohttpd's own messages (a refused oversized header, say) go to the
 * same log, through the same helper: they run outside any request, so
 * their lines carry the all-zero ids. */
static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    als_trace_log("server mhd: %s", msg);
}

/* ---- main ------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f, "usage: trace_server [--port N] [--log FILE] [--workers N] "
               "[--fan1 N] [--fan2 N] [--deadline-ms N] [--work-ms N]\n");
}

static bool parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > max || s[0] == '-')
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    unsigned long port = 0, workers = 4, f1 = fan1, f2 = fan2, dl = 0;
    const char *log_path = NULL;
    for (int i = 1; i < argc; i += 2) {      /* every option takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--port") == 0) {
            ok = ok && parse_uint(v, 65535, &port);
        } else if (strcmp(a, "--workers") == 0) {
            ok = ok && parse_uint(v, 256, &workers) && workers > 0;
        } else if (strcmp(a, "--fan1") == 0) {
            ok = ok && parse_uint(v, MAX_FAN, &f1) && f1 > 0;
        } else if (strcmp(a, "--fan2") == 0) {
            ok = ok && parse_uint(v, MAX_FAN, &f2);
        } else if (strcmp(a, "--deadline-ms") == 0) {
            ok = ok && parse_uint(v, 3600000, &dl);
            deadline_ms = (long)dl;
        } else if (strcmp(a, "--work-ms") == 0) {
            ok = ok && parse_uint(v, 60000, &work_ms);
        } else if (strcmp(a, "--log") == 0) {
            log_path = v;
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "trace_server: bad argument near '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    fan1 = (unsigned)f1;
    fan2 = (unsigned)f2;

    int log_fd = -1;
    if (log_path) {
        /* O_APPEND: every line (one write each) lands whole at the end. */
        log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log_fd < 0) {
            fprintf(stderr, "trace_server: %s: %s\n", log_path, strerror(errno));
            return 1;
        }
        als_trace_log_set_fd(log_fd);
    }

    /* Every thread created from here on (pool workers, libmicrohttpd's)
     * inherits this mask, so only sigwait below sees the stop signals. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (!forward_init()) {
        fprintf(stderr, "trace_server: cannot initialise libcurl\n");
        return 1;
    }
    if (!als_trace_store() || !als_baggage_store()) {
        fprintf(stderr, "trace_server: out of memory\n");
        return 1;
    }
    als_pool_options po = {.threads = (unsigned)workers, .name = "trace"};
    pool = als_pool_new(&po);
    if (!pool) {
        fprintf(stderr, "trace_server: cannot start the pool\n");
        return 1;
    }

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION
            | MHD_USE_ERROR_LOG,
        (uint16_t)port, NULL, NULL, on_request, NULL,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,   /* first, or MHD warns */
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)512,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)30,
        MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "trace_server: cannot listen on 127.0.0.1:%lu\n", port);
        als_pool_free(pool);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    unsigned bound = info ? info->port : (unsigned)port;
    printf("listening on 127.0.0.1:%u\n", bound);
    fflush(stdout);
    als_trace_log("server listening port=%u workers=%lu fan1=%u fan2=%u deadline_ms=%ld "
                  "work_ms=%lu", bound, workers, fan1, fan2, deadline_ms, work_ms);

    int sig = 0;
    while (sigwait(&stop, &sig) != 0)
        ;
    MHD_stop_daemon(d);                /* waits for in-flight requests */
    als_pool_free(pool);               /* drains what is left (nothing) */
    forward_cleanup();
    unsigned long n = atomic_load(&served);
    als_trace_log("server stopped signal=%d requests=%lu", sig, n);
    printf("stopped: %lu requests\n", n);
    fflush(stdout);
    if (log_fd >= 0) {
        als_trace_log_set_fd(2);
        close(log_fd);
    }
    return 0;
}
