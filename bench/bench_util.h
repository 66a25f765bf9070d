/*
 * Helpers shared by the benchmarks in bench/: a monotonic clock, robust
 * statistics over repetitions, a compiler barrier that keeps measured work
 * from being optimised away, and small command-line parsing helpers.
 *
 * Everything here is deliberately boring: the benchmarks' numbers are only
 * as good as the clock and the statistics behind them, so both are kept in
 * one place that every benchmark (and the later suite) shares.
 */
#ifndef ALS_BENCH_UTIL_H
#define ALS_BENCH_UTIL_H

#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>

/* Nanoseconds on CLOCK_MONOTONIC: the same clock on every thread, so a
 * timestamp taken on one thread can be compared with one taken on another
 * (the wake-latency scenario relies on that). */
uint64_t bench_now_ns(void);

/* Sleeps at least `ns` nanoseconds (restarting after signals). */
void bench_sleep_ns(uint64_t ns);

/* The CPUs this process may run on (its affinity mask), at least 1: the
 * same definition als_pool_options.threads = 0 uses, so "default thread
 * count" means the same thing for every backend. */
unsigned bench_cpu_count(void);

/* The machine's mode: nanoseconds per round trip of a cache line between
 * two CPUs (the first two this process may run on), 20000 round trips
 * (about 10 ms) by this thread and a helper, each pinned to one of them;
 * this thread's CPU affinity is restored after. -1 with fewer than 2 CPUs
 * or if pinning fails. On the project's 2-vCPU VM it reads about 370 ns
 * when the host gives the two vCPUs cores that share a cache, and about
 * 600 when it does not, which moves every cross-thread figure 2-3x
 * (docs/performance.md, "Reading the numbers"). */
double bench_cross_cpu_rt_ns(void);

/* Sorts `v[0..n)` in place and returns the median (the mean of the two
 * middle values for even n); 0 for n == 0. */
double bench_median(double *v, size_t n);

/* The p-th percentile (0 <= p <= 100) of an already sorted array, by the
 * nearest-rank method: a value that was actually observed. */
uint64_t bench_percentile_sorted(const uint64_t *v, size_t n, double p);

/* Sorts an array of uint64_t ascending. */
void bench_sort_u64(uint64_t *v, size_t n);

/* Minimum and maximum of v[0..n). */
double bench_min(const double *v, size_t n);
double bench_max(const double *v, size_t n);

/* Tells the compiler that `p` is used and that memory may have been read
 * or written, so neither the computation of p nor loads inside the timed
 * loop can be hoisted out or deleted. Costs no instruction. */
#define BENCH_USE(p) __asm__ volatile("" : : "r"(p) : "memory")
/* A pure compiler barrier: forces memory to be re-read afterwards. */
#define BENCH_BARRIER() __asm__ volatile("" : : : "memory")

/* Parses an integer option value >= min with an optional k/M suffix
 * (10k = 10000, 1M = 1000000). Exits with a message on bad input, since a
 * benchmark silently running the wrong size is worse than no run. */
uint64_t bench_parse_u64(const char *opt, const char *s, uint64_t min);
/* The same for values that must be positive. */
#define bench_parse_count(opt, s) bench_parse_u64((opt), (s), 1)

/* Whether every comma-separated name in `list` is one of names[0..n);
 * prints the first unknown one. NULL list: true. */
bool bench_list_valid(const char *opt, const char *list, const char *const *names, size_t n);

/* Whether `name` is in the comma-separated `list` (NULL list: every name). */
bool bench_in_list(const char *list, const char *name);

/* Where JSON results go: the file `path` if set (*ok false, with a message,
 * if it cannot be opened), else stdout with --json, else nowhere (NULL). */
FILE *bench_json_open(bool json, const char *path, bool *ok);
/* Closes what bench_json_open opened; false, with a message, if the file
 * could not be written. */
bool bench_json_close(FILE *f, const char *path);

#endif /* ALS_BENCH_UTIL_H */
