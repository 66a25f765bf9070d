/* wave.c: times every wave of bench/pool's requests scenario from inside,
 * and records which thread and which CPU ran each subtask (the ninth pass
 * in docs/performance.md).
 *
 *   cc -O2 -o /tmp/wave docs/experiments/wave.c -Iinclude \
 *      -Lbuild/release/lib -lals -lpthread
 *   LD_LIBRARY_PATH=build/release/lib /tmp/wave WORKERS HELP WAVES [DUMP]
 *
 * HELP 1 drains with als_pool_drain_help, 0 with als_pool_drain. DUMP > 0
 * prints that many waves from the middle of the run: per thread and per
 * CPU, how many of the wave's 256 subtasks ran there. The closing line
 * gives the medians: the wave, the last subtask's end, the drain's return
 * after it, worker threads per wave, and the share of waves that ran
 * subtasks on CPUs 0 and 1 both (a 2-CPU machine).
 */
#define _GNU_SOURCE
#include <als.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FANOUT 8   /* subtasks per request, as bench/pool */
#define BUF 256    /* bytes each subtask hashes */
#define INFLIGHT 32 /* requests per wave */
#define MAXT 64    /* threads and CPUs counted */

struct trace {
    uint64_t trace_id, span_id;
};
struct request;
struct subtask {
    struct request *req;
    unsigned idx;
    uint64_t hash, t0, t1;
    int thread, cpu;
};
struct request {
    struct trace trace;
    atomic_uint remaining;
    struct subtask sub[FANOUT];
};

static als_t *store;
static als_pool_t *pool;
static unsigned char buf[FANOUT][BUF];
static _Thread_local int me = -1;
static atomic_int threads_seen;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int subtask(void *arg)
{
    struct subtask *s = arg;
    s->t0 = now_ns();
    const struct trace *t = als_get(store);
    uint64_t h = 14695981039346656037u ^ t->trace_id;
    for (int i = 0; i < BUF; i++) {
        h ^= buf[s->idx][i];
        h *= 1099511628211u;
    }
    s->hash = h ^ t->span_id;
    if (me < 0)
        me = atomic_fetch_add(&threads_seen, 1);
    s->thread = me;
    s->cpu = sched_getcpu();
    s->t1 = now_ns();
    atomic_fetch_sub(&s->req->remaining, 1);
    return 0;
}

static void *fan_out(void *arg)
{
    struct request *r = arg;
    for (int j = 0; j < FANOUT; j++)
        if (als_submit(pool, subtask, &r->sub[j]) != 0)
            abort();
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s WORKERS HELP WAVES [DUMP]\n", argv[0]);
        return 2;
    }
    unsigned workers = (unsigned)atoi(argv[1]);
    int help = atoi(argv[2]), waves = atoi(argv[3]), dump = argc > 4 ? atoi(argv[4]) : 0;
    if (waves < 1)
        return 2;
    memset(buf, 7, sizeof buf);
    als_options so = {0};
    store = als_new(&so);
    als_pool_options po = {.threads = workers};
    pool = als_pool_new(&po);
    if (!store || !pool)
        return 1;
    static struct request reqs[INFLIGHT];
    double *wave = malloc(sizeof(double) * (size_t)waves), *last = malloc(sizeof(double) * (size_t)waves);
    double *after = malloc(sizeof(double) * (size_t)waves), *nthreads = malloc(sizeof(double) * (size_t)waves);
    if (!wave || !last || !after || !nthreads)
        return 1;
    int both = 0;
    for (int w = 0; w < waves; w++) {
        for (int i = 0; i < INFLIGHT; i++) {
            reqs[i].trace = (struct trace){(uint64_t)i + 1, (uint64_t)i};
            atomic_store(&reqs[i].remaining, FANOUT);
            for (int j = 0; j < FANOUT; j++)
                reqs[i].sub[j] = (struct subtask){.req = &reqs[i], .idx = (unsigned)j};
        }
        uint64_t t0 = now_ns();
        for (int i = 0; i < INFLIGHT; i++)
            als_run(store, &reqs[i].trace, fan_out, &reqs[i]);
        uint64_t t1 = now_ns();
        if (help ? als_pool_drain_help(pool) : als_pool_drain(pool))
            return 1;
        uint64_t t2 = now_ns(), end = 0;
        int per_cpu[MAXT] = {0}, per_thread[MAXT] = {0}, n = 0;
        for (int i = 0; i < INFLIGHT; i++)
            for (int j = 0; j < FANOUT; j++) {
                const struct subtask *s = &reqs[i].sub[j];
                per_cpu[s->cpu & (MAXT - 1)]++;
                per_thread[s->thread & (MAXT - 1)]++;
                if (s->t1 > end)
                    end = s->t1;
            }
        for (int k = 0; k < MAXT; k++)
            n += per_thread[k] > 0;
        wave[w] = (double)(t2 - t0) / 1e3;
        last[w] = (double)(end - t0) / 1e3;
        after[w] = (double)(t2 - end) / 1e3;
        nthreads[w] = n;
        both += per_cpu[0] && per_cpu[1];
        if (dump && w >= waves / 2 && w < waves / 2 + dump) {
            printf("wave %d sub %.1f last %.1f drain %.1f:", w, (double)(t1 - t0) / 1e3,
                   last[w], wave[w]);
            for (int k = 0; k < MAXT; k++)
                if (per_thread[k])
                    printf(" th%d=%d", k, per_thread[k]);
            printf(" | cpu0=%d cpu1=%d\n", per_cpu[0], per_cpu[1]);
        }
    }
    printf("W=%u help=%d wave_us p50 %.1f | last_end p50 %.1f | drain_after p50 %.1f | "
           "threads p50 %.0f | waves using both cpus %.0f%%\n",
           workers, help, median(wave, waves), median(last, waves), median(after, waves),
           median(nthreads, waves), 100.0 * both / waves);
    als_pool_free(pool);
    als_free(store);
    free(wave);
    free(last);
    free(after);
    free(nthreads);
    return 0;
}
