/*
 * bench/pool --workers LIST: the whole run at each worker count, then one
 * scaling table per scenario.
 *
 * Each count runs in a child process of its own: libuv's pool size is
 * fixed per process, and no backend's threads (libgomp's spinning team)
 * linger into the next count. The children write their results into
 * memory shared with the parent, which has started no thread, so fork is
 * safe, and which prints the tables once all are done.
 */
#include "bench_util.h"
#include "pool_results.h"

#include <als.h>

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_WORKER_COUNTS 16

double per_1000(uint64_t x, const struct sched *c)
{
    return c->tasks ? (double)x * 1000.0 / (double)c->tasks : 0;
}

void sched_json(FILE *f, const struct sched *c)
{
    fprintf(f,
            ", \"per_1000_tasks\": {\"parks\": %.2f, \"wakeups\": %.2f, "
            "\"submitter_wakeups\": %.2f, \"steals\": %.2f}",
            per_1000(c->parks, c), per_1000(c->wakeups, c), per_1000(c->submitter_wakeups, c),
            per_1000(c->steals, c));
}

int pool_scaling_fork(const char *list, struct results **res, size_t *nw, struct results **mine)
{
    unsigned counts[MAX_WORKER_COUNTS];
    size_t n = 0;
    for (const char *c = list; *c;) {
        char num[32];
        size_t len = strcspn(c, ",");
        if (n == MAX_WORKER_COUNTS || len == 0 || len >= sizeof num) {
            fprintf(stderr, "--workers: a list of at most %d counts\n", MAX_WORKER_COUNTS);
            return -2;
        }
        memcpy(num, c, len);
        num[len] = '\0';
        counts[n++] = (unsigned)bench_parse_count("--workers", num);
        c += len + (c[len] == ',');
    }
    if (n == 0) {
        fprintf(stderr, "--workers: no worker count\n");
        return -2;
    }
    struct results *r =
        mmap(NULL, n * sizeof *r, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) {
        perror("bench/pool: mmap");
        return -1;
    }
    for (size_t w = 0; w < n; w++) {
        fprintf(stderr, "bench/pool: %u workers\n", counts[w]);
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            perror("bench/pool: fork");
            return -1;
        }
        if (pid == 0) {
            r[w].threads = counts[w];
            *mine = &r[w];
            if (!freopen("/dev/null", "w", stdout))
                exit(1);
            return 1;
        }
        int st;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "bench/pool: the run with %u workers failed\n", counts[w]);
            return -1;
        }
    }
    *res = r;
    *nw = n;
    return 0;
}

/* The rows of a scaling table: throughput scenario s < nscen, then the
 * latency and requests scenarios. */
enum kind { THROUGHPUT, LATENCY, REQUESTS };

/* A scenario's figure for backend b (lower is better): ns per task, p50
 * wake latency in us, or us per request. */
static double value(const struct results *r, enum kind k, size_t s, size_t b)
{
    if (k == THROUGHPUT)
        return r->tp[s][b].median_ns / (double)r->scen[s].size;
    if (k == LATENCY)
        return (double)r->lat[b].p50 / 1e3;
    return r->rq[b].median_ns / (double)r->nreq / 1e3;
}

static const struct sched *counts_of(const struct results *r, enum kind k, size_t s, size_t b)
{
    return k == THROUGHPUT ? &r->tp[s][b].sched
           : k == LATENCY  ? &r->lat[b].sched
                           : &r->rq[b].sched;
}

/* A table cell: the best baseline's figure over libals's, or "-". */
static void ratio_cell(double best, double mine)
{
    if (best > 0 && mine > 0)
        printf(" %10.2fx", best / mine);
    else
        printf(" %11s", "-");
}

/* One row: a worker count's figures, libals/best and libals's counts,
 * then the same for als_help if it ran (--drain both). */
static void row(FILE *jf, const struct results *r, enum kind k, size_t s, bool first)
{
    bool has_als = r->ials < r->nb, has_help = r->ihelp < r->nb;
    double best = 0, mine = has_als ? value(r, k, s, r->ials) : 0;
    double helped = has_help ? value(r, k, s, r->ihelp) : 0;
    for (size_t b = 0; b < r->nb; b++) {
        double v = value(r, k, s, b);
        if (b != r->ials && b != r->ihelp && v > 0 && (best == 0 || v < best))
            best = v;
    }
    const struct sched *c = has_als ? counts_of(r, k, s, r->ials) : NULL;
    const struct sched *h = has_help ? counts_of(r, k, s, r->ihelp) : NULL;
    double rt = k == THROUGHPUT ? r->rt_ns[s] : k == REQUESTS ? r->rq_rt_ns : -1;
    if (jf) {
        fprintf(jf, "%s\n      {\"workers\": %u, \"results\": {", first ? "" : ",", r->threads);
        for (size_t b = 0; b < r->nb; b++)
            fprintf(jf, "%s\"%s\": %.3f", b ? ", " : "", r->bk[b]->name, value(r, k, s, b));
        fprintf(jf, "}");
        if (has_als && best > 0 && mine > 0)
            fprintf(jf, ", \"libals_over_best\": %.3f", best / mine);
        if (c)
            sched_json(jf, c);
        if (has_help && best > 0 && helped > 0)
            fprintf(jf, ", \"als_help_over_best\": %.3f", best / helped);
        if (h) {
            fprintf(jf, ", \"als_help\": {\"drain\": \"help\"");
            sched_json(jf, h);
            fprintf(jf, "}");
        }
        if (rt > 0)
            fprintf(jf, ", \"cross_cpu_rt_ns\": %.0f", rt);
        fprintf(jf, "}");
        return;
    }
    printf("%-8u", r->threads);
    for (size_t b = 0; b < r->nb; b++)
        printf(" %8.*f", k == THROUGHPUT ? 1 : 2, value(r, k, s, b));
    if (has_als) {
        ratio_cell(best, mine);
        printf(" %8.2f %8.2f %8.2f %8.2f", per_1000(c->parks, c), per_1000(c->wakeups, c),
               per_1000(c->submitter_wakeups, c), per_1000(c->steals, c));
    }
    if (has_help) {
        ratio_cell(best, helped);
        printf(" %8.2f %8.2f %8.2f", per_1000(h->parks, h), per_1000(h->wakeups, h),
               per_1000(h->steals, h));
    }
    if (rt > 0)
        printf(" %7.0f", rt);
    else
        printf(" %7s", "-");
    printf("\n");
}

/* The tables on stdout, or (jf not NULL) their JSON. */
static void emit(FILE *jf, const struct results *res, size_t nw)
{
    const struct results *r0 = &res[0];
    if (jf) {
        fprintf(jf,
                "{\n  \"benchmark\": \"pool_scaling\",\n  \"libals_version\": \"%s\",\n"
                "  \"cpus\": %u,\n  \"repetitions\": %llu,\n  \"workers\": [",
                als_version(), bench_cpu_count(), (unsigned long long)r0->reps);
        for (size_t w = 0; w < nw; w++)
            fprintf(jf, "%s%u", w ? ", " : "", res[w].threads);
        fprintf(jf, "],\n  \"backends\": [");
        for (size_t b = 0; b < r0->nb; b++)
            fprintf(jf, "%s\"%s\"", b ? ", " : "", r0->bk[b]->name);
        fprintf(jf, "],\n  \"scenarios\": [");
    } else {
        printf("bench/pool scaling: %u CPUs, median of %llu runs per backend and worker "
               "count;\nlibals/best: the best baseline's figure over libals's (> 1: libals "
               "ahead);\nparks .. steals: libals's system calls and steals per 1000 tasks;\n"
               "help/best, h.parks .. h.steals: the same for als_help, libals waiting with\n"
               "als_pool_drain_help (--drain both);\n"
               "rt ns: the machine's mode, a cross-CPU cache-line round trip (median over "
               "the runs; bench_util.h)\n",
               bench_cpu_count(), (unsigned long long)r0->reps);
    }
    bool first = true;
    for (size_t s = 0; s < r0->nscen + 2; s++) {
        enum kind k = s < r0->nscen ? THROUGHPUT : s == r0->nscen ? LATENCY : REQUESTS;
        if ((k == THROUGHPUT && !r0->tp[s][0].done) || (k == LATENCY && !r0->do_lat) ||
            (k == REQUESTS && !r0->do_req))
            continue;
        const char *name = k == THROUGHPUT ? r0->scen[s].name : k == LATENCY ? "latency" : "requests";
        if (jf) {
            fprintf(jf, "%s\n    {\"scenario\": \"%s\", \"unit\": \"%s\", \"rows\": [",
                    first ? "" : ",", name,
                    k == THROUGHPUT ? "ns_per_task" : k == LATENCY ? "p50_us" : "us_per_request");
        } else {
            printf("\n%s, %s (lower is better)\n%-8s", k == THROUGHPUT ? r0->scen[s].label : name,
                   k == THROUGHPUT ? "ns per task"
                   : k == LATENCY  ? "p50 wake latency, us"
                                   : "us per request",
                   "workers");
            for (size_t b = 0; b < r0->nb; b++)
                printf(" %8s", r0->bk[b]->name);
            if (r0->ials < r0->nb)
                printf(" %11s %8s %8s %8s %8s", "libals/best", "parks", "wakeups", "sub.wake",
                       "steals");
            if (r0->ihelp < r0->nb)
                printf(" %11s %8s %8s %8s", "help/best", "h.parks", "h.wakeup", "h.steals");
            printf(" %7s\n", "rt ns");
        }
        first = false;
        for (size_t w = 0; w < nw; w++)
            row(jf, &res[w], k, s, w == 0);
        if (jf)
            fprintf(jf, "\n    ]}");
    }
    if (jf)
        fprintf(jf, "\n  ]\n}\n");
}

int pool_scaling_report(const struct results *res, size_t nw, bool json, const char *json_out)
{
    if (!json)
        emit(NULL, res, nw);
    bool json_ok;
    FILE *jf = bench_json_open(json, json_out, &json_ok);
    if (!json_ok)
        return 1;
    if (jf) {
        emit(jf, res, nw);
        if (!bench_json_close(jf, json_out))
            return 1;
    }
    return 0;
}
