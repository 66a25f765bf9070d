/* Random trace and span ids (include/als_trace.h): xoshiro256** per
 * thread, seeded from getrandom(), reseeded in a fork() child.
 *
 * Uses: the public API only. */
#include "als_trace.h"
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* ---- random ids --------------------------------------------------------
 * xoshiro256** per thread, in initial-exec TLS (a plain load from inside
 * libals.so, see internal.h). Each thread seeds itself from getrandom() on
 * first use, so no state is shared and no lock or system call is on the hot
 * path. A fork copies the parent thread's state into the child; without
 * reseeding, parent and child would then hand out the same ids. A fork
 * handler bumps a global generation and every thread reseeds when its
 * state is of an older one (one relaxed load per id). */

struct rng {
    uint64_t s[4];
    uint64_t gen;                 /* fork generation seeded in; 0: never */
};

static _Thread_local struct rng rng_tls __attribute__((tls_model("initial-exec")));
static _Atomic uint64_t fork_gen = 1;
static _Atomic uint64_t seed_counter;   /* makes fallback seeds distinct */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void after_fork_child(void)
{
    atomic_fetch_add_explicit(&fork_gen, 1, memory_order_relaxed);
}

static void register_atfork(void)
{
    /* If registration fails, ids after a fork may repeat the parent's:
     * nothing else to do about it, and no caller could act on an error. */
    (void)pthread_atfork(NULL, NULL, after_fork_child);
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t gen)
{
    pthread_once(&atfork_once, register_atfork);
    uint64_t buf[4] = {0, 0, 0, 0};
    size_t got = 0;
    while (got < sizeof buf) {
        ssize_t n = getrandom((char *)buf + got, sizeof buf - got, GRND_NONBLOCK);
        if (n > 0)
            got += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else
            break; /* no entropy yet, or no getrandom: fall back below */
    }
    /* Always mix in a process-wide counter, time and addresses: should
     * getrandom fail, threads still get distinct seeds. splitmix64 spreads
     * any input over all bits and never yields an all-zero xoshiro state
     * in practice; the loop below makes sure. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    x ^= (uint64_t)getpid() << 32;
    x ^= (uint64_t)(uintptr_t)r;
    x ^= atomic_fetch_add_explicit(&seed_counter, 1, memory_order_relaxed)
         * 0xd1b54a32d192ed03u;
    do {
        for (int i = 0; i < 4; i++)
            r->s[i] = buf[i] ^ splitmix64(&x);
    } while ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0);
    r->gen = gen;
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(void)
{
    struct rng *r = &rng_tls;
    uint64_t gen = atomic_load_explicit(&fork_gen, memory_order_relaxed);
    if (ALS__UNLIKELY(r->gen != gen))
        rng_seed(r, gen);
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void put64(uint8_t *out, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (uint8_t)v;
}

void als_trace_random_trace_id(uint8_t out[ALS_TRACE_ID_SIZE])
{
    if (!out)
        return;
    uint64_t a, b;
    do {               /* all zero is the spec's "invalid" */
        a = rng_next();
        b = rng_next();
    } while ((a | b) == 0);
    put64(out, a);
    put64(out + 8, b);
}

void als_trace_random_span_id(uint8_t out[ALS_SPAN_ID_SIZE])
{
    if (!out)
        return;
    uint64_t a;
    do
        a = rng_next();
    while (a == 0);
    put64(out, a);
}

