/* The stress harness: see stress.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "stress.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct stress_config stress;

static _Atomic uint64_t passed, failed;
static uint64_t start_ns, end_ns;

/* Failures reported in full; past this they are only counted, so that a
 * systematic failure does not drown the figures. */
#define REPORT_MAX 20

uint64_t stress_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

bool stress_time_left(void)
{
    return stress_now_ns() < end_ns;
}

double stress_elapsed(void)
{
    return (double)(stress_now_ns() - start_ns) / 1e9;
}

void stress_idle_ns(uint64_t ns)
{
    struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [--seconds N] [--seed S] [--small] [program options]\n"
            "  --seconds N  run for about N seconds (env ALS_STRESS_SECONDS)\n"
            "  --seed S     seed of the random choices (env ALS_STRESS_SEED)\n"
            "  --small      small sizes, for valgrind (env ALS_STRESS_SMALL=1)\n",
            stress.name);
}

static bool parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || v > 1e7)
        return false;
    *out = v;
    return true;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end)
        return false;
    *out = v;
    return true;
}

/* The hang guard: a sleeping thread, not a synchronisation. A test that
 * loses a wake-up would otherwise hang until CTest kills it with no word
 * about which program or what it was doing. */
static double guard_seconds;

static void *guard_main(void *arg)
{
    (void)arg;
    stress_idle_ns((uint64_t)(guard_seconds * 1e9));
    fprintf(stderr,
            "%s: HANG: still running %.0f s after the start (budget %.0f s): "
            "a lost wake-up or a deadlock\n",
            stress.name, stress_elapsed(), guard_seconds);
    printf("%" PRIu64 " passed, %" PRIu64 " failed\n", atomic_load(&passed),
           atomic_load(&failed) + 1);
    fflush(NULL);
    _exit(1);
}

void stress_init(int argc, char **argv, const char *name, double default_seconds,
                 int (*extra)(int argc, char **argv, int i))
{
    stress.name = name;
    stress.seconds = default_seconds;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    stress.seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();

    const char *env = getenv("ALS_STRESS_SECONDS");
    if (env && *env) {
        if (!parse_seconds(env, &stress.seconds)) {
            fprintf(stderr, "%s: bad ALS_STRESS_SECONDS=%s\n", name, env);
            exit(2);
        }
        stress.seconds_given = true;
    }
    env = getenv("ALS_STRESS_SEED");
    if (env && *env && !parse_u64(env, &stress.seed)) {
        fprintf(stderr, "%s: bad ALS_STRESS_SEED=%s\n", name, env);
        exit(2);
    }
    env = getenv("ALS_STRESS_SMALL");
    stress.small = env && *env && strcmp(env, "0") != 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--seconds") && i + 1 < argc) {
            if (!parse_seconds(argv[++i], &stress.seconds)) {
                fprintf(stderr, "%s: bad --seconds %s\n", name, argv[i]);
                exit(2);
            }
            stress.seconds_given = true;
        } else if (!strcmp(a, "--seed") && i + 1 < argc) {
            if (!parse_u64(argv[++i], &stress.seed)) {
                fprintf(stderr, "%s: bad --seed %s\n", name, argv[i]);
                exit(2);
            }
        } else if (!strcmp(a, "--small")) {
            stress.small = true;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else {
            int used = extra ? extra(argc, argv, i) : 0;
            if (used <= 0) {
                fprintf(stderr, "%s: unknown argument %s\n", name, a);
                usage(stderr);
                exit(2);
            }
            i += used - 1;
        }
    }

    start_ns = stress_now_ns();
    end_ns = start_ns + (uint64_t)(stress.seconds * 1e9);
    printf("%s: %.1f s, seed %#" PRIx64 "%s\n", name, stress.seconds, stress.seed,
           stress.small ? ", small sizes" : "");
    fflush(stdout);

    /* Generous: sanitizers and valgrind slow everything down many times,
     * and some programs finish a sweep before they look at the clock. */
    guard_seconds = stress.seconds * 4 + 240;
    pthread_t t;
    if (pthread_create(&t, NULL, guard_main, NULL) == 0)
        pthread_detach(t);
}

bool stress_check(bool ok, const char *file, int line, const char *fmt, ...)
{
    if (ok) {
        atomic_fetch_add_explicit(&passed, 1, memory_order_relaxed);
        return true;
    }
    uint64_t n = atomic_fetch_add_explicit(&failed, 1, memory_order_relaxed);
    if (n < REPORT_MAX) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        fprintf(stderr, "%s: FAIL %s:%d: %s\n", stress.name, file, line, msg);
    } else if (n == REPORT_MAX) {
        fprintf(stderr, "%s: further failures are counted, not shown\n", stress.name);
    }
    return false;
}

void stress_count(uint64_t p, uint64_t f)
{
    atomic_fetch_add_explicit(&passed, p, memory_order_relaxed);
    atomic_fetch_add_explicit(&failed, f, memory_order_relaxed);
}

uint64_t stress_failures(void)
{
    return atomic_load_explicit(&failed, memory_order_relaxed);
}

void stress_figure(const char *label, const char *fmt, ...)
{
    printf("  %-32s ", label);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

int stress_finish(void)
{
    uint64_t p = atomic_load(&passed), f = atomic_load(&failed);
    stress_figure("elapsed", "%.2f s", stress_elapsed());
    printf("%" PRIu64 " passed, %" PRIu64 " failed\n", p, f);
    fflush(stdout);
    return f == 0 && p > 0 ? 0 : 1;
}

/* ---- waitcount ----------------------------------------------------------- */

void waitcount_init(struct waitcount *w)
{
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->n = 0;
}

void waitcount_destroy(struct waitcount *w)
{
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

void waitcount_add(struct waitcount *w, long n)
{
    pthread_mutex_lock(&w->mu);
    w->n += n;
    pthread_mutex_unlock(&w->mu);
}

void waitcount_done(struct waitcount *w)
{
    pthread_mutex_lock(&w->mu);
    w->n--;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void waitcount_wait(struct waitcount *w, long n)
{
    pthread_mutex_lock(&w->mu);
    while (w->n > n)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

long waitcount_get(struct waitcount *w)
{
    pthread_mutex_lock(&w->mu);
    long n = w->n;
    pthread_mutex_unlock(&w->mu);
    return n;
}
