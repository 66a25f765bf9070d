/*
 * Consumer test: a program built outside the libals source tree against an
 * installed libals (CMake package or pkg-config, shared or static). It only
 * uses the installed header and library, so it fails to build or link if the
 * install misses a file, a flag or a transitive dependency, and fails to run
 * if the library it loads does not behave like the header says. It is
 * compiled as C11 and as C++20 (the header's extern "C" and its types must
 * work for both), so it sticks to the common subset: casts from void *,
 * designated initializers naming every member in declaration order (C++
 * compilers' -Wextra warns about omitted ones).
 */
#include <als.h>

#include <stdio.h>
#include <string.h>

/* The version the build system found (CMake package version or pkg-config
 * --modversion): the header, the library and the package metadata must all
 * agree, or a consumer could compile against one release and run another. */
#ifndef EXPECTED_VERSION
#error "build with -DEXPECTED_VERSION=\"x.y.z\""
#endif

/* als::als_static and `pkg-config --static` define ALS_STATIC_DEFINE for
 * their users; the build passes EXPECT_STATIC_DEFINE where it links so. */
#if defined(EXPECT_STATIC_DEFINE) && !defined(ALS_STATIC_DEFINE)
#error "a static link of libals should have defined ALS_STATIC_DEFINE"
#endif

#define STR_(x) #x
#define STR(x) STR_(x)

static int failures;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,         \
                    __LINE__, #cond);                                      \
            failures++;                                                    \
        }                                                                  \
    } while (0)

static als_t *request_store;
static int default_marker;

/* Two levels down from als_run: the value arrives without being passed. */
static void *inner(void *arg)
{
    (void)arg;
    return als_get(request_store);
}

static void *outer(void *arg)
{
    int *id = (int *)als_get(request_store);
    CHECK(id == arg);
    /* A nested run shadows the value only for its own duration. */
    static int nested = 2;
    CHECK(als_run(request_store, &nested, inner, NULL) == &nested);
    CHECK(als_get(request_store) == id);
    return inner(NULL);
}

int main(void)
{
    CHECK(strcmp(als_version(), ALS_VERSION_STRING) == 0);
    CHECK(strcmp(ALS_VERSION_STRING, STR(ALS_VERSION_MAJOR) "."
                 STR(ALS_VERSION_MINOR) "." STR(ALS_VERSION_PATCH)) == 0);
    CHECK(strcmp(als_version(), EXPECTED_VERSION) == 0);

    als_options opts = {.name = "request", .default_value = &default_marker, .destroy = NULL};
    request_store = als_new(&opts);
    CHECK(request_store != NULL);
    if (request_store == NULL)
        return 1;
    CHECK(strcmp(als_name(request_store), "request") == 0);

    CHECK(als_get(request_store) == &default_marker);
    int id = 1;
    CHECK(als_run(request_store, &id, outer, &id) == &id);
    /* Back outside: the binding ended with the call. */
    CHECK(als_get(request_store) == &default_marker);

    CHECK(strcmp(als_strerror(ALS_EINVAL), als_strerror(ALS_ENOMEM)) != 0);
    als_free(request_store);

    if (failures) {
        fprintf(stderr, "consumer: %d check(s) failed\n", failures);
        return 1;
    }
    printf("consumer ok: libals %s\n", als_version());
    return 0;
}
