/* trace_demo: concurrent "requests" fan work out across a pool, and every
 * log line knows which request it serves without anyone passing it down.
 *
 * Each request thread binds its own trace id in a store (als_run), then
 * submits stage-1 tasks; each stage-1 task submits stage-2 tasks. No task
 * receives the trace id as an argument: log() reads it from the store. The
 * tasks carry it because als_submit captures the submitter's context and
 * the worker enters it. At the end the demo checks every line against the
 * request that caused it, and reports how many carried another's id (0).
 *
 *   trace_demo [requests] [fanout]
 */
#include <als.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct request {
    char trace_id[33];            /* 32 hex digits, as in W3C traceparent */
    unsigned index;
};

/* What a task was submitted for: a request index, kept only to check the
 * trace id a task *sees* against the one it *should* see. */
struct job {
    unsigned request;
    unsigned stage, n;
};

static als_t *trace;              /* the store: current request */
static als_pool_t *pool;
static unsigned fanout = 4;
static struct request *requests;

static _Atomic unsigned long lines, mismatches;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static bool quiet;

/* The logger: deep in any call tree, on any thread. */
static void log_line(unsigned expected_request, const char *what, unsigned stage, unsigned n)
{
    const struct request *r = als_get(trace);
    const char *id = r ? r->trace_id : "-";
    atomic_fetch_add_explicit(&lines, 1, memory_order_relaxed);
    if (!r || r != &requests[expected_request])
        atomic_fetch_add_explicit(&mismatches, 1, memory_order_relaxed);
    if (quiet)
        return;
    pthread_mutex_lock(&out_mu);
    printf("trace=%s exec=%-6" PRIu64 " trigger=%-6" PRIu64 " %s stage=%u n=%u\n", id,
           als_execution_async_id(), als_trigger_async_id(), what, stage, n);
    pthread_mutex_unlock(&out_mu);
}

static int stage2(void *arg)
{
    struct job *j = arg;
    log_line(j->request, "stage-2 work", j->stage, j->n);
    free(j);
    return 0;
}

static int stage1(void *arg)
{
    struct job *j = arg;
    log_line(j->request, "stage-1 fan-out", j->stage, j->n);
    for (unsigned i = 0; i < fanout; i++) {
        struct job *k = malloc(sizeof *k);
        if (!k)
            return 1;
        *k = (struct job){ j->request, 2, i };
        if (als_submit(pool, stage2, k) != 0) {
            free(k);
            return 1;
        }
    }
    free(j);
    return 0;
}

static void *handle(void *arg)
{
    const struct request *r = arg;
    log_line(r->index, "request start", 0, 0);
    for (unsigned i = 0; i < fanout; i++) {
        struct job *j = malloc(sizeof *j);
        if (!j)
            return NULL;
        *j = (struct job){ r->index, 1, i };
        if (als_submit(pool, stage1, j) != 0)
            free(j);
    }
    log_line(r->index, "request submitted", 0, 0);
    return NULL;
}

static void *request_thread(void *arg)
{
    struct request *r = arg;
    return als_run(trace, r, handle, r);   /* bind, serve, unbind */
}

int main(int argc, char **argv)
{
    unsigned nreq = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 8;
    if (argc > 2)
        fanout = (unsigned)strtoul(argv[2], NULL, 10);
    if (nreq == 0 || nreq > 10000 || fanout == 0 || fanout > 64) {
        fprintf(stderr, "usage: trace_demo [requests 1..10000] [fanout 1..64]\n");
        return 2;
    }
    quiet = nreq * (1 + fanout + fanout * fanout) > 400;

    trace = als_new(&(als_options){ .name = "trace" });
    pool = als_pool_new(&(als_pool_options){ .name = "demo" });
    requests = calloc(nreq, sizeof *requests);
    pthread_t *threads = calloc(nreq, sizeof *threads);
    if (!trace || !pool || !requests || !threads)
        return 1;

    uint64_t seed = 0x9e3779b97f4a7c15u;
    for (unsigned i = 0; i < nreq; i++) {
        requests[i].index = i;
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        snprintf(requests[i].trace_id, sizeof requests[i].trace_id, "%016" PRIx64 "%016" PRIx64,
                 seed, seed ^ (0xa5a5a5a5a5a5a5a5u * (i + 1)));
    }
    for (unsigned i = 0; i < nreq; i++)
        if (pthread_create(&threads[i], NULL, request_thread, &requests[i]) != 0)
            return 1;
    for (unsigned i = 0; i < nreq; i++)
        pthread_join(threads[i], NULL);
    als_pool_drain(pool);

    als_pool_stats st;
    als_pool_stats_get(pool, &st);
    unsigned long want = (unsigned long)nreq * (2 + fanout + (unsigned long)fanout * fanout);
    printf("requests: %u, tasks: %" PRIu64 " on %u workers, log lines: %lu (expected %lu), "
           "lines with another request's trace id: %lu\n",
           nreq, st.completed, st.threads, atomic_load(&lines), want, atomic_load(&mismatches));

    als_pool_free(pool);
    als_free(trace);
    free(threads);
    free(requests);
    return atomic_load(&lines) == want && atomic_load(&mismatches) == 0 ? 0 : 1;
}
