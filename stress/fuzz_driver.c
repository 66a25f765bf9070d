/* stress/fuzz_driver.c: runs the fuzz target (fuzz_api.c) without libFuzzer.
 *
 *   fuzz_api_driver [harness options] CORPUS_DIR_OR_FILE...
 *
 * Feeds every corpus file to LLVMFuzzerTestOneInput once, then, for the
 * rest of the run's time, random mutations of them (bit flips, byte
 * changes, insertions, deletions, splices): a plain random search, much
 * weaker than libFuzzer's guided one (stress/run_fuzz.sh), but it runs in
 * every build, under every sanitizer and valgrind. Observations that fail
 * are counted, not fatal, so the closing line tells how many. */
#include "stress.h"

#include "fuzz_api.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define INPUT_MAX 512

struct seed {
    uint8_t *data;
    size_t size;
};

static struct seed *seeds;
static size_t nseeds, cap;
static const char **paths;
static int npaths;

static void add_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fuzz_api_driver: cannot read %s\n", path);
        exit(2);
    }
    uint8_t buf[INPUT_MAX];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (nseeds == cap) {
        cap = cap ? 2 * cap : 64;
        seeds = realloc(seeds, cap * sizeof *seeds);
        if (!seeds)
            abort();
    }
    seeds[nseeds].data = malloc(n ? n : 1);
    if (!seeds[nseeds].data)
        abort();
    memcpy(seeds[nseeds].data, buf, n);
    seeds[nseeds].size = n;
    nseeds++;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static void add_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "fuzz_api_driver: no such file or directory: %s\n", path);
        exit(2);
    }
    if (!S_ISDIR(st.st_mode)) {
        add_file(path);
        return;
    }
    struct dirent **list;
    int n = scandir(path, &list, NULL, by_name);
    if (n < 0) {
        fprintf(stderr, "fuzz_api_driver: cannot list %s\n", path);
        exit(2);
    }
    for (int i = 0; i < n; i++) {
        if (list[i]->d_name[0] != '.') {
            char full[4096];
            snprintf(full, sizeof full, "%s/%s", path, list[i]->d_name);
            add_file(full);
        }
        free(list[i]);
    }
    free(list);
}

/* Positional arguments: corpus files and directories. */
static int take_path(int argc, char **argv, int i)
{
    (void)argc;
    if (argv[i][0] == '-')
        return 0;
    paths[npaths++] = argv[i];
    return 1;
}

/* The input being run, written out when it fails or crashes so that it
 * can be replayed (fuzz_api_driver FILE) and added to the corpus. */
static uint8_t current[INPUT_MAX + 2];
static size_t current_size;
static const char *const crash_file = "fuzz_api-failure.bin";

static void save_current(void)
{
    /* Only async-signal-safe calls: this also runs in a signal handler. */
    int fd = open(crash_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        ssize_t w = write(fd, current, current_size);
        (void)w;
        close(fd);
    }
}

static void on_crash(int sig)
{
    static const char msg[] = "fuzz_api_driver: crashed; the input is in fuzz_api-failure.bin\n";
    save_current();
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    signal(sig, SIG_DFL);
    raise(sig);
}

static void run_input(const uint8_t *data, size_t n)
{
    memcpy(current, data, n);
    current_size = n;
    uint64_t before = fuzz_api_failures();
    LLVMFuzzerTestOneInput(current, n);
    if (fuzz_api_failures() != before && before == 0) {
        save_current();
        fprintf(stderr, "fuzz_api_driver: the first failing input is in %s\n", crash_file);
    }
}

static size_t mutate(struct rng *r, uint8_t *buf, size_t n)
{
    int edits = 1 + (int)rng_below(r, 4);
    for (int e = 0; e < edits; e++) {
        switch (rng_below(r, 5)) {
        case 0: /* flip a bit */
            if (n)
                buf[rng_below(r, (uint32_t)n)] ^= (uint8_t)(1u << rng_below(r, 8));
            break;
        case 1: /* a random byte */
            if (n)
                buf[rng_below(r, (uint32_t)n)] = (uint8_t)rng_next(r);
            break;
        case 2: /* insert a pair */
            if (n + 2 <= INPUT_MAX) {
                size_t at = 1 + rng_below(r, (uint32_t)n + 1);
                if (at > n)
                    at = n;
                memmove(buf + at + 2, buf + at, n - at);
                buf[at] = (uint8_t)rng_next(r);
                buf[at + 1] = (uint8_t)rng_next(r);
                n += 2;
            }
            break;
        case 3: /* delete a pair */
            if (n > 3) {
                size_t at = 1 + rng_below(r, (uint32_t)(n - 2));
                memmove(buf + at, buf + at + 2, n - at - 2);
                n -= 2;
            }
            break;
        default: { /* splice the tail of another seed */
            const struct seed *o = &seeds[rng_below(r, (uint32_t)nseeds)];
            if (o->size > 1 && n > 1) {
                size_t at = 1 + rng_below(r, (uint32_t)(n - 1));
                size_t from = 1 + rng_below(r, (uint32_t)(o->size - 1));
                size_t len = o->size - from;
                if (at + len > INPUT_MAX)
                    len = INPUT_MAX - at;
                memcpy(buf + at, o->data + from, len);
                n = at + len;
            }
            break;
        }
        }
    }
    return n;
}

int main(int argc, char **argv)
{
    paths = calloc((size_t)argc, sizeof *paths);
    if (!paths)
        abort();
    stress_init(argc, argv, "fuzz_api_driver", 2.0, take_path);
    if (npaths == 0) {
        fprintf(stderr, "usage: fuzz_api_driver [options] CORPUS_DIR_OR_FILE...\n");
        return 2;
    }
    for (int i = 0; i < npaths; i++)
        add_path(paths[i]);
    if (nseeds == 0) {
        fprintf(stderr, "fuzz_api_driver: the corpus is empty\n");
        return 2;
    }
    fuzz_api_count_only = true;

    signal(SIGSEGV, on_crash);
    signal(SIGBUS, on_crash);
    signal(SIGABRT, on_crash);
    for (size_t i = 0; i < nseeds; i++)
        run_input(seeds[i].data, seeds[i].size);
    uint64_t corpus_failures = fuzz_api_failures();

    struct rng r = rng_for(3);
    uint8_t buf[INPUT_MAX + 2];
    uint64_t mutants = 0;
    while (stress_time_left() && !stress.small) {
        const struct seed *s = &seeds[rng_below(&r, (uint32_t)nseeds)];
        memcpy(buf, s->data, s->size);
        size_t n = mutate(&r, buf, s->size);
        run_input(buf, n);
        mutants++;
    }

    uint64_t obs = fuzz_api_observations(), fails = fuzz_api_failures();
    stress_count(obs - fails, fails);
    stress_figure("corpus files", "%zu", nseeds);
    stress_figure("executions (corpus + mutants)", "%" PRIu64 " (%zu + %" PRIu64 ")",
                  fuzz_api_programs(), nseeds, mutants);
    stress_figure("observations checked", "%" PRIu64, obs);
    stress_figure("mismatches (corpus / mutants)", "%" PRIu64 " / %" PRIu64, corpus_failures,
                  fails - corpus_failures);
    for (size_t i = 0; i < nseeds; i++)
        free(seeds[i].data);
    free(seeds);
    free(paths);
    return stress_finish();
}
