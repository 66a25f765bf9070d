/* W3C Baggage (https://www.w3.org/TR/baggage/): one test per MUST / MUST
 * NOT that applies to a participant that receives, uses and forwards
 * baggage, named after its section; then the current baggage: copy-on-write
 * across scopes, carried into pool tasks, allocation failures. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "als.h"
#include "als_trace.h"

#include <stdbool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static als_baggage *parse(const char *s)
{
    als_baggage *b = NULL;
    int n = als_baggage_parse(NULL, s, strlen(s), &b);
    assert_true(n >= 0);
    assert_int_equal((size_t)n, als_baggage_count(b));
    return b;
}

static char fmt_buf[ALS_BAGGAGE_BYTES_MAX + 1];

static const char *fmt(const als_baggage *b)
{
    assert_true(als_baggage_format(b, fmt_buf, sizeof fmt_buf) >= 0);
    return fmt_buf;
}

static void expect_entry(const als_baggage *b, size_t i, const char *key, const char *value,
                         size_t vlen, const char *props)
{
    als_baggage_entry e;
    assert_int_equal(als_baggage_entry_at(b, i, &e), 0);
    assert_string_equal(e.key, key);
    assert_int_equal(e.value_len, vlen);
    assert_memory_equal(e.value, value, vlen);
    assert_string_equal(e.properties, props);
}

/* § value: code points outside baggage-octet MUST be percent-encoded, and
 * so MUST `%` itself; decoding restores them. */
static void value_outside_octets_and_percent_are_encoded(void **state)
{
    (void)state;
    als_baggage *b = NULL;
    const char v[] = "a b,c;d\\e\"f%g=h\xc3\xa9\x01\x7f";
    assert_int_equal(als_baggage_with(NULL, "k", v, sizeof v - 1, NULL, &b), 0);
    assert_string_equal(fmt(b), "k=a%20b%2Cc%3Bd%5Ce%22f%25g=h%C3%A9%01%7F");
    als_baggage *back = parse(fmt_buf);
    expect_entry(back, 0, "k", v, sizeof v - 1, "");
    /* Every byte value round-trips. */
    char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (char)i;
    als_baggage *c = NULL;
    assert_int_equal(als_baggage_with(NULL, "all", all, 128, NULL, &c), 0);
    als_baggage *d = parse(fmt(c));
    expect_entry(d, 0, "all", all, 128, "");
    for (size_t i = 0; i < strlen(fmt_buf); i++) {
        unsigned char ch = (unsigned char)fmt_buf[i];
        assert_true(ch > 0x20 && ch < 0x7f && ch != ';' && ch != '"' && ch != '\\');
    }
    als_baggage_release(b);
    als_baggage_release(back);
    als_baggage_release(c);
    als_baggage_release(d);
}

/* § value: percent-encoded octets that are not UTF-8 MUST become U+FFFD. */
static void value_invalid_utf8_becomes_replacement(void **state)
{
    (void)state;
    als_baggage *b = parse("a=%FF,b=x%C3,c=%E2%82,d=%E2%82%AC,e=%ED%A0%80");
    expect_entry(b, 0, "a", "\xef\xbf\xbd", 3, "");
    expect_entry(b, 1, "b", "x\xef\xbf\xbd", 4, "");
    expect_entry(b, 2, "c", "\xef\xbf\xbd", 3, "");          /* one maximal subpart */
    expect_entry(b, 3, "d", "\xe2\x82\xac", 3, "");
    expect_entry(b, 4, "e", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 9, ""); /* surrogate */
    als_baggage_release(b);
}

/* § value: parsers MUST NOT assume `=` only separates key and value. */
static void value_may_hold_equal_signs(void **state)
{
    (void)state;
    als_baggage *b = parse("k==a=b=,j=c==");
    expect_entry(b, 0, "k", "=a=b=", 5, "");
    expect_entry(b, 1, "j", "c==", 3, "");
    als_baggage_release(b);
}

/* § key / § value / § property: OWS around keys, values and properties is
 * not part of them; properties are kept. */
static void ows_and_properties(void **state)
{
    (void)state;
    als_baggage *b = parse("key1=value1;property1;property2, key2 = value2, "
                           "key3=value3; propertyKey=propertyValue,\tuserId =  alice\t");
    assert_int_equal(als_baggage_count(b), 4);
    expect_entry(b, 0, "key1", "value1", 6, "property1;property2");
    expect_entry(b, 1, "key2", "value2", 6, "");
    expect_entry(b, 2, "key3", "value3", 6, "propertyKey=propertyValue");
    expect_entry(b, 3, "userId", "alice", 5, "");
    assert_string_equal(fmt(b), "key1=value1;property1;property2,key2=value2,"
                                "key3=value3;propertyKey=propertyValue,userId=alice");
    als_baggage_release(b);
}

/* § property: the encoding rules for property values apply to whoever
 * decodes them; libals keeps properties opaque (it neither decodes nor
 * re-encodes them), so they leave byte-exact, and they only ever hold
 * baggage-octets (checked on the way in), which is what the MUST asks of
 * what is sent. */
static void property_values_kept_verbatim(void **state)
{
    (void)state;
    als_baggage *b = parse("k=v;p=%FF%20x; q ;r = %25");
    expect_entry(b, 0, "k", "v", 1, "p=%FF%20x; q ;r = %25");
    assert_string_equal(fmt(b), "k=v;p=%FF%20x; q ;r = %25");
    als_baggage_release(b);
}

/* The spec's examples: § Examples of HTTP headers. */
static void spec_examples(void **state)
{
    (void)state;
    als_baggage *b = parse("userId=Am%C3%A9lie,serverNode=DF%2028,isProduction=false");
    expect_entry(b, 0, "userId", "Am\xc3\xa9lie", 7, "");
    expect_entry(b, 1, "serverNode", "DF 28", 5, "");
    expect_entry(b, 2, "isProduction", "false", 5, "");
    assert_string_equal(fmt(b), "userId=Am%C3%A9lie,serverNode=DF%2028,isProduction=false");
    als_baggage_release(b);
}

/* § Mutating baggage (invalid baggage-string: behaviour left to us): an
 * invalid member is dropped, the others kept. */
static void invalid_members_dropped_rest_kept(void **state)
{
    (void)state;
    als_baggage *b = parse("a=1,b c=2,d=x y,e=%zz,f=%4,=3,g,h=\"q\",i=\\,j=4;p q,k=5;=x,l=6");
    assert_string_equal(fmt(b), "a=1,l=6");
    als_baggage_release(b);
    als_baggage *none = NULL;
    assert_int_equal(als_baggage_parse(NULL, "bad key=1", 9, &none), 0);
    assert_null(none);
}

/* § Limits: a platform MUST propagate all members when there are at most
 * 64 and at most 8192 bytes; it MUST NOT propagate partial members. */
static void limits_64_members_8192_bytes_whole_members(void **state)
{
    (void)state;
    char s[ALS_BAGGAGE_BYTES_MAX * 2];
    size_t n = 0;
    for (int i = 0; i < 70; i++)
        n += (size_t)sprintf(s + n, "%sk%02d=v", i ? "," : "", i);
    als_baggage *b = NULL;
    assert_int_equal(als_baggage_parse(NULL, s, n, &b), 64);
    assert_int_equal(strlen(fmt(b)), 64 * 5 + 63);
    als_baggage_release(b);

    /* 8192 bytes exactly: two members of 4095 and 4096, with the comma. */
    memset(s, 'x', sizeof s);
    memcpy(s, "a=", 2);
    s[4095] = ',';
    memcpy(s + 4096, "b=", 2);
    assert_int_equal(als_baggage_parse(NULL, s, 8192, &b), 2);
    assert_int_equal(als_baggage_format(b, fmt_buf, sizeof fmt_buf), 8192);
    als_baggage_release(b);
    /* One byte more: the second member goes whole. */
    assert_int_equal(als_baggage_parse(NULL, s, 8193, &b), 1);
    assert_int_equal(als_baggage_format(b, fmt_buf, sizeof fmt_buf), 4095);
    als_baggage_release(b);
    /* Formatting never cuts a member either: values that grow when encoded. */
    char sp[3000];
    memset(sp, ' ', sizeof sp);
    als_baggage *c = NULL, *d = NULL;
    assert_int_equal(als_baggage_with(NULL, "a", sp, 2000, NULL, &c), 0);
    assert_int_equal(als_baggage_with(c, "b", sp, 2000, NULL, &d), 0);
    assert_int_equal(als_baggage_format(d, fmt_buf, sizeof fmt_buf), 6002);
    assert_int_equal(strncmp(fmt_buf, "a=", 2), 0);
    als_baggage_release(c);
    als_baggage_release(d);
    /* Too small a buffer is an error, not a cut. */
    assert_int_equal(als_baggage_format(b = parse("a=1,b=2"), fmt_buf, 5), ALS_EINVAL);
    assert_string_equal(fmt_buf, "");
    als_baggage_release(b);
}

/* § Limits: with several baggage headers the limits apply to them all. */
static void limits_count_all_headers(void **state)
{
    (void)state;
    char s[1024];
    size_t n = 0;
    for (int i = 0; i < 40; i++)
        n += (size_t)sprintf(s + n, "%sk%02d=v", i ? "," : "", i);
    als_baggage *a = NULL, *b = NULL;
    assert_int_equal(als_baggage_parse(NULL, s, n, &a), 40);
    assert_int_equal(als_baggage_parse(a, s, n, &b), 64);
    assert_int_equal(als_baggage_count(a), 40);               /* prev unchanged */
    als_baggage_release(a);
    als_baggage_release(b);
}

/* Keys are tokens; set replaces, remove removes. */
static void with_without(void **state)
{
    (void)state;
    als_baggage *a = parse("a=1,b=2,a=3"), *b = NULL, *c = NULL;
    size_t len;
    assert_string_equal(als_baggage_find(a, "a", &len), "1");     /* the first */
    assert_int_equal(als_baggage_with(a, "a", "9", 1, "p=1;q", &b), 0);
    assert_string_equal(fmt(b), "b=2,a=9;p=1;q");
    assert_int_equal(als_baggage_without(b, "b", &c), 0);
    assert_string_equal(fmt(c), "a=9;p=1;q");
    als_baggage_release(b);
    assert_int_equal(als_baggage_with(a, "bad key", "9", 1, NULL, &b), ALS_EINVAL);
    assert_null(b);
    assert_int_equal(als_baggage_with(a, "k", "9", 1, "p q", &b), ALS_EINVAL);
    assert_int_equal(als_baggage_with(a, "k", "9", 1, "p=\"", &b), ALS_EINVAL);
    assert_string_equal(fmt(a), "a=1,b=2,a=3");                   /* immutable */
    als_baggage_release(a);
    als_baggage_release(c);
}

/* ---- the current baggage ------------------------------------------------- */

struct seen {
    char v[16];
};

static void *child_changes(void *p)
{
    struct seen *s = p;
    assert_int_equal(als_baggage_set("user", "child", NULL), 0);
    assert_int_equal(als_baggage_set("extra", "1", NULL), 0);
    snprintf(s->v, sizeof s->v, "%s", als_baggage_get("user", NULL));
    return NULL;
}

static void *sibling_reads(void *p)
{
    struct seen *s = p;
    const char *v = als_baggage_get("user", NULL);
    snprintf(s->v, sizeof s->v, "%s", v ? v : "(none)");
    assert_null(als_baggage_get("extra", NULL));
    return NULL;
}

static void *parent_body(void *p)
{
    (void)p;
    assert_int_equal(als_baggage_set("user", "parent", NULL), 0);
    struct seen a, b;
    assert_int_equal(als_baggage_run(als_baggage_current(), child_changes, &a, NULL), 0);
    assert_string_equal(a.v, "child");
    assert_int_equal(als_baggage_run(als_baggage_current(), sibling_reads, &b, NULL), 0);
    assert_string_equal(b.v, "parent");
    assert_string_equal(als_baggage_get("user", NULL), "parent");
    assert_null(als_baggage_get("extra", NULL));
    assert_int_equal(als_baggage_remove("user"), 0);
    assert_null(als_baggage_get("user", NULL));
    return NULL;
}

static void current_copy_on_write(void **state)
{
    (void)state;
    assert_null(als_baggage_current());
    assert_int_equal(als_baggage_run(NULL, parent_body, NULL, NULL), 0);
    assert_null(als_baggage_current());
    assert_int_equal(als_baggage_run(NULL, NULL, NULL, NULL), ALS_EINVAL);
}

#define TASKS 64
static char task_seen[TASKS][16];

static int task_body(void *p)
{
    size_t i = (size_t)(uintptr_t)p;
    const char *v = als_baggage_get("req", NULL);
    snprintf(task_seen[i], sizeof task_seen[i], "%s", v ? v : "(none)");
    /* A task's own change stays in the task. */
    als_baggage_set("req", "task", NULL);
    return 0;
}

static void *submit_all(void *p)
{
    als_pool_t *pool = p;
    for (size_t i = 0; i < TASKS; i++)
        assert_int_equal(als_submit(pool, task_body, (void *)(uintptr_t)i), 0);
    als_pool_drain(pool);
    assert_string_equal(als_baggage_get("req", NULL), "r1");
    return NULL;
}

static void carried_into_pool_tasks(void **state)
{
    (void)state;
    als_pool_t *pool = als_pool_new(&(als_pool_options){.threads = 2});
    assert_non_null(pool);
    als_baggage *b = parse("req=r1");
    assert_int_equal(als_baggage_run(b, submit_all, pool, NULL), 0);
    als_baggage_release(b);
    for (size_t i = 0; i < TASKS; i++)
        assert_string_equal(task_seen[i], "r1");
    als_pool_free(pool);
}

/* Every allocation failure is ALS_ENOMEM with nothing changed or leaked.
 * The hook exists only in ALS_FAULT_INJECTION libraries: a weak reference,
 * NULL elsewhere (release), and the test skips (as test_trace.c). */
long als__test_fail_alloc(long n, bool sticky) __attribute__((weak));

static void *alloc_body(void *p)
{
    (void)p;
    for (long n = 1;; n++) {
        als__test_fail_alloc(n, false);
        int rc = als_baggage_set("k", "v", "p");
        long attempts = als__test_fail_alloc(0, false);
        if (attempts < n) {
            assert_int_equal(rc, 0);
            break;
        }
        assert_int_equal(rc, ALS_ENOMEM);
        assert_string_equal(als_baggage_get("k", NULL), "old");
    }
    assert_string_equal(als_baggage_get("k", NULL), "v");
    return NULL;
}

static void alloc_failure(void **state)
{
    (void)state;
    if (!als__test_fail_alloc)
        skip();
    als_baggage *b = parse("k=old");
    assert_int_equal(als_baggage_run(b, alloc_body, NULL, NULL), 0);
    als_baggage_release(b);
    als__test_fail_alloc(1, false);
    als_baggage *c = NULL;
    assert_int_equal(als_baggage_parse(NULL, "a=1", 3, &c), ALS_ENOMEM);
    assert_null(c);
    als__test_fail_alloc(0, false);
}

int main(void)
{
    /* The stores exist before the allocation walk counts allocations. */
    als_baggage_store();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(value_outside_octets_and_percent_are_encoded),
        cmocka_unit_test(value_invalid_utf8_becomes_replacement),
        cmocka_unit_test(value_may_hold_equal_signs),
        cmocka_unit_test(ows_and_properties),
        cmocka_unit_test(property_values_kept_verbatim),
        cmocka_unit_test(spec_examples),
        cmocka_unit_test(invalid_members_dropped_rest_kept),
        cmocka_unit_test(limits_64_members_8192_bytes_whole_members),
        cmocka_unit_test(limits_count_all_headers),
        cmocka_unit_test(with_without),
        cmocka_unit_test(current_copy_on_write),
        cmocka_unit_test(carried_into_pool_tasks),
        cmocka_unit_test(alloc_failure),
    };
    return cmocka_run_group_tests_name("baggage (W3C Baggage)", tests, NULL, NULL);
}
