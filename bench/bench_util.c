#include "bench_util.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                          .tv_nsec = (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

unsigned bench_cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return (unsigned)n;
    }
    return 1;
}

#define RT_TRIPS 20000

struct rt_probe {
    _Atomic unsigned ball; /* odd: the helper's turn */
    int cpu;
    bool pinned;
};

static bool pin_self(int cpu)
{
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    return pthread_setaffinity_np(pthread_self(), sizeof one, &one) == 0;
}

static void *rt_helper(void *arg)
{
    struct rt_probe *p = arg;
    p->pinned = pin_self(p->cpu);
    for (unsigned i = 0; i < RT_TRIPS; i++) {
        while (atomic_load_explicit(&p->ball, memory_order_acquire) != 2 * i + 1)
            ;
        atomic_store_explicit(&p->ball, 2 * i + 2, memory_order_release);
    }
    return NULL;
}

double bench_cross_cpu_rt_ns(void)
{
    cpu_set_t mine;
    if (pthread_getaffinity_np(pthread_self(), sizeof mine, &mine) != 0 || CPU_COUNT(&mine) < 2)
        return -1;
    int cpu[2], n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
        if (CPU_ISSET(c, &mine))
            cpu[n++] = c;
    struct rt_probe p = {.cpu = cpu[1]};
    pthread_t th;
    if (!pin_self(cpu[0]) || pthread_create(&th, NULL, rt_helper, &p) != 0) {
        pthread_setaffinity_np(pthread_self(), sizeof mine, &mine);
        return -1;
    }
    uint64_t t0 = bench_now_ns();
    for (unsigned i = 0; i < RT_TRIPS; i++) {
        atomic_store_explicit(&p.ball, 2 * i + 1, memory_order_release);
        while (atomic_load_explicit(&p.ball, memory_order_acquire) != 2 * i + 2)
            ;
    }
    uint64_t t = bench_now_ns() - t0;
    pthread_join(th, NULL);
    pthread_setaffinity_np(pthread_self(), sizeof mine, &mine);
    return p.pinned ? (double)t / RT_TRIPS : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void bench_sort_u64(uint64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_u64);
}

uint64_t bench_percentile_sorted(const uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    /* Nearest rank: the smallest value with at least p% of the samples at
     * or below it. */
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

double bench_min(const double *v, size_t n)
{
    double m = n ? v[0] : 0;
    for (size_t i = 1; i < n; i++)
        if (v[i] < m)
            m = v[i];
    return m;
}

double bench_max(const double *v, size_t n)
{
    double m = n ? v[0] : 0;
    for (size_t i = 1; i < n; i++)
        if (v[i] > m)
            m = v[i];
    return m;
}

uint64_t bench_parse_u64(const char *opt, const char *s, uint64_t min)
{
    if (!s) {
        fprintf(stderr, "%s needs a value\n", opt);
        exit(2);
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end == 'k' || *end == 'K') {
        v *= 1000u;
        end++;
    } else if (*end == 'M' || *end == 'm') {
        v *= 1000000u;
        end++;
    }
    if (errno || end == s || *end || v < min || s[0] == '-') {
        fprintf(stderr, "%s: bad value '%s' (an integer >= %llu, k/M suffix allowed)\n", opt, s,
                (unsigned long long)min);
        exit(2);
    }
    return (uint64_t)v;
}

bool bench_in_list(const char *list, const char *name)
{
    if (!list)
        return true;
    size_t len = strlen(name);
    for (const char *p = list;;) {
        size_t l = strcspn(p, ",");
        if (l == len && strncmp(p, name, len) == 0)
            return true;
        if (!p[l])
            return false;
        p += l + 1;
    }
}

bool bench_list_valid(const char *opt, const char *list, const char *const *names, size_t n)
{
    if (!list)
        return true;
    for (const char *p = list;;) {
        size_t l = strcspn(p, ",");
        bool known = false;
        for (size_t i = 0; i < n && !known; i++)
            known = strlen(names[i]) == l && strncmp(p, names[i], l) == 0;
        if (!known) {
            fprintf(stderr, "%s: unknown name '%.*s'\n", opt, (int)l, p);
            return false;
        }
        if (!p[l])
            return true;
        p += l + 1;
    }
}

FILE *bench_json_open(bool json, const char *path, bool *ok)
{
    *ok = true;
    if (!path)
        return json ? stdout : NULL;
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        *ok = false;
    }
    return f;
}

bool bench_json_close(FILE *f, const char *path)
{
    if (f == stdout || fclose(f) == 0)
        return true;
    perror(path);
    return false;
}
