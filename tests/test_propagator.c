/* The carrier-agnostic propagator (als_propagator_extract / _inject): header
 * names in any case, repeated fields in order, the Trace Context rules that
 * concern several fields, baggage beside the trace, and what goes out. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "als.h"
#include "als_trace.h"

#include <stdio.h>
#include <string.h>

#define TP "00-12345678901234567890123456789012-1234567890123456-01"

/* A setter's carrier: the fields set, in order. */
struct out {
    char name[8][16];
    char value[8][ALS_BAGGAGE_BYTES_MAX + 1];
    int n;
    int fail_at;                  /* 1-based call that fails, 0: none */
};

static int out_set(void *carrier, const char *name, const char *value)
{
    struct out *o = carrier;
    if (o->n + 1 == o->fail_at)
        return ALS_EINVAL;
    snprintf(o->name[o->n], sizeof o->name[o->n], "%s", name);
    snprintf(o->value[o->n], sizeof o->value[o->n], "%s", value);
    o->n++;
    return 0;
}

static struct out sent;

/* § Header Name (traceparent, tracestate; Baggage § Header Name): HTTP
 * field names are case-insensitive, so is the lookup. */
static void header_names_case_insensitive(void **state)
{
    (void)state;
    const als_header h[] = {{"TraceParent", TP}, {"TRACESTATE", "foo=1"},
                            {"Baggage", "k=v"}, {NULL, NULL}};
    als_trace_ctx c;
    als_baggage *b = NULL;
    assert_int_equal(als_propagator_extract(als_headers_get, (void *)h, &c, &b), 1);
    assert_string_equal(c.tracestate, "foo=1");
    assert_string_equal(als_baggage_find(b, "k", NULL), "v");
    als_baggage_release(b);
}

/* § tracestate Header Field Values: multiple tracestate fields MUST be
 * combined in order (RFC 9110 § Field Order); the limits apply to the
 * combination. */
static void tracestate_repeated_fields_combined_in_order(void **state)
{
    (void)state;
    const als_header h[] = {{"traceparent", TP}, {"tracestate", "foo=1,bar=2"},
                            {"x-other", "a=1"}, {"tracestate", ""},
                            {"tracestate", "rojo=1, congo=2"}, {"tracestate", "baz=3"},
                            {NULL, NULL}};
    als_trace_ctx c;
    assert_int_equal(als_propagator_extract(als_headers_get, (void *)h, &c, NULL), 1);
    assert_string_equal(c.tracestate, "foo=1,bar=2,rojo=1,congo=2,baz=3");

    char f[4][128];
    als_header m[6] = {{"traceparent", TP}};
    for (int i = 0; i < 4; i++) {
        size_t n = 0;
        for (int k = 1; k <= (i < 3 ? 10 : 3); k++)
            n += (size_t)sprintf(f[i] + n, "%sbar%02d=%02d", k > 1 ? "," : "", i * 10 + k,
                                 k);
        m[i + 1] = (als_header){"tracestate", f[i]};
    }
    m[5] = (als_header){NULL, NULL};
    assert_int_equal(als_propagator_extract(als_headers_get, m, &c, NULL), 1);
    assert_string_equal(c.tracestate, "");                 /* 33 members in all */
    f[3][strlen(f[3]) - 9] = '\0';                         /* 32 */
    assert_int_equal(als_propagator_extract(als_headers_get, m, &c, NULL), 1);
    assert_non_null(strstr(c.tracestate, "bar01=01,"));
    assert_non_null(strstr(c.tracestate, ",bar32=02"));
}

/* Two traceparent fields: which to trust? A new trace, as the spec's test
 * suite expects, and tracestate dropped. */
static void traceparent_repeated_starts_new_trace(void **state)
{
    (void)state;
    const als_header h[] = {{"traceparent", TP}, {"traceparent", TP},
                            {"tracestate", "foo=1"}, {NULL, NULL}};
    als_trace_ctx c;
    assert_int_equal(als_propagator_extract(als_headers_get, (void *)h, &c, NULL), 0);
    assert_true(als_trace_valid(&c));
    assert_string_equal(c.tracestate, "");
}

/* Baggage is independent of the trace: kept when traceparent is missing or
 * invalid; repeated fields combine in order. */
static void baggage_independent_of_trace(void **state)
{
    (void)state;
    const als_header h[] = {{"traceparent", "00-bad"}, {"baggage", "a=1"},
                            {"baggage", "b=2,bad key=3"}, {NULL, NULL}};
    als_trace_ctx c;
    als_baggage *b = NULL;
    assert_int_equal(als_propagator_extract(als_headers_get, (void *)h, &c, &b), 0);
    assert_int_equal(als_baggage_count(b), 2);
    assert_string_equal(als_baggage_find(b, "b", NULL), "2");
    als_baggage_release(b);
    const als_header none[] = {{NULL, NULL}};
    assert_int_equal(als_propagator_extract(als_headers_get, (void *)none, &c, &b), 0);
    assert_null(b);
    assert_int_equal(als_propagator_extract(NULL, NULL, &c, &b), ALS_EINVAL);
}

/* § Mutating the traceparent Field / Processing Model: a vendor receiving
 * traceparent MUST send it on, with parent-id = its own operation, and the
 * received tracestate (§ Mutating the tracestate Field: MUST send it). */
static void *inject_in_span(void *p)
{
    (void)p;
    sent.n = 0;
    assert_int_equal(als_baggage_set("user", "Am\xc3\xa9lie", "p"), 0);
    assert_int_equal(als_propagator_inject(out_set, &sent), 3);
    return NULL;
}

static void *serve(void *p)
{
    als_trace_ctx span;
    assert_int_equal(als_trace_run_span(inject_in_span, p, NULL, &span), 0);
    char want[ALS_TRACEPARENT_SIZE];
    als_trace_format(&span, want, sizeof want);
    assert_string_equal(sent.name[0], "traceparent");
    assert_string_equal(sent.value[0], want);
    assert_memory_equal(sent.value[0], TP, 36);               /* same trace */
    assert_string_equal(sent.name[1], "tracestate");
    assert_string_equal(sent.value[1], "foo=1,bar=2");
    assert_string_equal(sent.name[2], "baggage");
    assert_string_equal(sent.value[2], "k=v,user=Am%C3%A9lie;p");
    return NULL;
}

static void *with_baggage(void *p)
{
    assert_int_equal(als_baggage_run(p, serve, NULL, NULL), 0);
    return NULL;
}

static void inject_forwards_trace_state_baggage(void **state)
{
    (void)state;
    const als_header h[] = {{"traceparent", TP}, {"tracestate", "foo=1 , bar=2"},
                            {"baggage", "k=v"}, {NULL, NULL}};
    als_trace_ctx c;
    als_baggage *b = NULL;
    assert_int_equal(als_propagator_extract(als_headers_get, (void *)h, &c, &b), 1);
    assert_int_equal(als_trace_run(&c, with_baggage, b, NULL), 0);
    als_baggage_release(b);
}

/* What goes out is always well-formed: a caller-filled tracestate with a
 * CR LF is not sent; a setter's error stops the inject. */
static void inject_sends_only_valid_fields(void **state)
{
    (void)state;
    als_trace_ctx c;
    assert_int_equal(als_trace_parse(TP, &c), 0);
    strcpy(c.tracestate, "a=1\r\nx-evil: 1");
    struct out o = {.n = 0};
    assert_int_equal(als_propagator_inject_ctx(&c, NULL, out_set, &o), 1);
    memset(c.tracestate, 'y', sizeof c.tracestate);        /* no NUL at all */
    o.n = 0;
    assert_int_equal(als_propagator_inject_ctx(&c, NULL, out_set, &o), 1);
    strcpy(c.tracestate, "a=1");
    o = (struct out){.fail_at = 2};
    assert_int_equal(als_propagator_inject_ctx(&c, NULL, out_set, &o), ALS_EINVAL);
    assert_int_equal(o.n, 1);
    assert_int_equal(als_propagator_inject_ctx(NULL, NULL, out_set, &o), 0);
    assert_int_equal(als_propagator_inject_ctx(&c, NULL, NULL, &o), ALS_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(header_names_case_insensitive),
        cmocka_unit_test(tracestate_repeated_fields_combined_in_order),
        cmocka_unit_test(traceparent_repeated_starts_new_trace),
        cmocka_unit_test(baggage_independent_of_trace),
        cmocka_unit_test(inject_forwards_trace_state_baggage),
        cmocka_unit_test(inject_sends_only_valid_fields),
    };
    return cmocka_run_group_tests_name("propagator", tests, NULL, NULL);
}
