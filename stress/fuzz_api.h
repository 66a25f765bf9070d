/* The fuzz target's interface to its standalone driver (fuzz_driver.c). */
#ifndef FUZZ_API_H
#define FUZZ_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* libFuzzer's entry point: runs one input as a program. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* false (libFuzzer): a failed observation aborts, so that libFuzzer keeps
 * the input. true (the driver): failures are counted and the run goes on. */
extern bool fuzz_api_count_only;
uint64_t fuzz_api_failures(void);
uint64_t fuzz_api_observations(void);
uint64_t fuzz_api_programs(void);

/* The targets' side (fuzz_common.c): counts one input run... */
void fuzz_program_started(void);
/* ...and one observation; a failed one is reported (the first 20 when
 * counting) and, under libFuzzer, aborts. Returns ok. */
bool fuzz_observe(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
