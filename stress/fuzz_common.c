/* stress/fuzz_common.c: what the fuzz targets (fuzz_api.c, fuzz_wire.c)
 * share with each other and with their standalone driver (fuzz_api.h):
 * the counters and the check that aborts under libFuzzer. */
#include "fuzz_api.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

bool fuzz_api_count_only;
static _Atomic uint64_t failures, observations, programs;

uint64_t fuzz_api_failures(void)
{
    return atomic_load(&failures);
}

uint64_t fuzz_api_observations(void)
{
    return atomic_load(&observations);
}

uint64_t fuzz_api_programs(void)
{
    return atomic_load(&programs);
}

void fuzz_program_started(void)
{
    atomic_fetch_add(&programs, 1);
}

bool fuzz_observe(bool ok, const char *fmt, ...)
{
    atomic_fetch_add_explicit(&observations, 1, memory_order_relaxed);
    if (ok)
        return true;
    uint64_t n = atomic_fetch_add(&failures, 1);
    if (n < 20 || !fuzz_api_count_only) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "fuzz_api: MISMATCH: ");
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    if (!fuzz_api_count_only)
        abort();
    return false;
}
