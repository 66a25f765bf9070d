/* W3C Trace Context Level 2 (https://www.w3.org/TR/trace-context-2/), the
 * rules for a participant that receives, continues and forwards a trace:
 * one test per MUST / MUST NOT, named after its section. The traceparent
 * field rules that Level 1 already had are in test_trace.c; the carrier
 * rules (header names, repeated fields) in test_propagator.c. */
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

static void set_ok(als_trace_ctx *c, const char *in, const char *want)
{
    if (als_trace_set_state(c, in) != 0)
        fail_msg("rejected \"%s\"", in);
    if (strcmp(c->tracestate, want) != 0)
        fail_msg("\"%s\" gave \"%s\", expected \"%s\"", in, c->tracestate, want);
}

static void set_bad(als_trace_ctx *c, const char *in)
{
    strcpy(c->tracestate, "old=1");
    if (als_trace_set_state(c, in) != ALS_EINVAL)
        fail_msg("accepted \"%s\" as \"%s\"", in, c->tracestate);
    assert_string_equal(c->tracestate, "");
}

/* § trace-flags, "Random Trace ID Flag": if the flag is set in the
 * incoming traceparent it MUST be set in the outgoing ones with the same
 * trace-id; if unset, it MUST be unset. */
static void traceflags_random_flag_propagated_both_ways(void **state)
{
    (void)state;
    als_trace_ctx c, child;
    char out[ALS_TRACEPARENT_SIZE];
    for (unsigned f = 0; f < 4; f++) {
        char in[64];
        snprintf(in, sizeof in, "00-12345678901234567890123456789012-1234567890123456-%02x", f);
        assert_int_equal(als_trace_extract(in, NULL, &c), 1);
        assert_int_equal(als_trace_child(&c, &child), 0);
        assert_int_equal(als_trace_format(&child, out, sizeof out), ALS_TRACEPARENT_LEN);
        unsigned sent = 0;
        sscanf(out + 53, "%2x", &sent);
        assert_int_equal(sent, f);
    }
}

/* § trace-flags, "Other Flags": vendors MUST set them to zero. */
static void traceflags_other_flags_sent_as_zero(void **state)
{
    (void)state;
    als_trace_ctx c;
    char out[ALS_TRACEPARENT_SIZE];
    assert_int_equal(als_trace_extract("00-12345678901234567890123456789012-1234567890123456-fd",
                                       NULL, &c), 1);
    assert_int_equal(als_trace_format(&c, out, sizeof out), ALS_TRACEPARENT_LEN);
    assert_string_equal(out + 53, "01");
    c.flags = 0xfe;                         /* set by hand: still masked */
    assert_int_equal(als_trace_format(&c, out, sizeof out), ALS_TRACEPARENT_LEN);
    assert_string_equal(out + 53, "02");
}

/* § trace-id / § parent-id: an invalid one MUST make the vendor
 * ignore the whole header (a new trace, and tracestate is not parsed). */
static void traceparent_invalid_ids_ignore_header(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "00-00000000000000000000000000000000-1234567890123456-01",
        "00-1234567890123456789012345678901G-1234567890123456-01",
        "00-12345678901234567890123456789012-0000000000000000-01",
        "00-12345678901234567890123456789012-123456789012345g-01",
        "00-12345678901234567890123456789012-123456789012345A-01",
    };
    als_trace_ctx c;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(als_trace_extract(bad[i], "foo=1", &c), 0);
        assert_true(als_trace_valid(&c));
        assert_string_equal(c.tracestate, "");
        assert_memory_not_equal(c.trace_id, "\x12\x34\x56\x78", 4);
    }
}

/* § Versioning of traceparent: for a higher version, the trace-id MUST
 * be 32 hex followed by a dash, the parent-id 16 hex followed by a dash,
 * the flags 2 characters at the end or followed by a dash; vendors MUST NOT
 * parse unknown fields and MUST re-emit in version 00. */
static void traceparent_versioning_higher_version_rules(void **state)
{
    (void)state;
    als_trace_ctx c;
    char out[ALS_TRACEPARENT_SIZE];
    assert_int_equal(als_trace_parse("cc-12345678901234567890123456789012-1234567890123456-01-x", &c), 0);
    assert_int_equal(als_trace_format(&c, out, sizeof out), ALS_TRACEPARENT_LEN);
    assert_string_equal(out, TP);
    assert_int_equal(als_trace_parse("cc-12345678901234567890123456789012x1234567890123456-01", &c), ALS_EINVAL);
    assert_int_equal(als_trace_parse("cc-12345678901234567890123456789012-1234567890123456x01", &c), ALS_EINVAL);
    assert_int_equal(als_trace_parse("cc-12345678901234567890123456789012-1234567890123456-01x", &c), ALS_EINVAL);
    assert_int_equal(als_trace_parse("cc-1234567890123456789012345678901-21234567890123456-01", &c), ALS_EINVAL);
}

/* § Tracestate Header: if the vendor failed to parse traceparent it MUST
 * NOT parse tracestate; a failure to parse tracestate MUST NOT affect
 * traceparent. (4. Processing Model: a tracestate received without a
 * traceparent MUST be discarded.) */
static void tracestate_depends_on_traceparent_not_the_reverse(void **state)
{
    (void)state;
    als_trace_ctx c;
    assert_int_equal(als_trace_extract(NULL, "foo=1", &c), 0);
    assert_string_equal(c.tracestate, "");
    assert_int_equal(als_trace_extract("00-zz", "foo=1", &c), 0);
    assert_string_equal(c.tracestate, "");
    assert_int_equal(als_trace_extract(TP, "@foo=1,bar=2", &c), 1);
    assert_string_equal(c.tracestate, "");
    char out[ALS_TRACEPARENT_SIZE];
    als_trace_format(&c, out, sizeof out);
    assert_memory_equal(out, TP, 36);           /* the trace went on */
}

/* § tracestate Header Field Values: vendors MUST accept empty tracestate
 * headers; empty and whitespace-only members are allowed. */
static void tracestate_values_empty_accepted(void **state)
{
    (void)state;
    als_trace_ctx c;
    set_ok(&c, "", "");
    set_ok(&c, " \t ", "");
    set_ok(&c, ",,", "");
    set_ok(&c, "foo=1, ,\t,bar=2,", "foo=1,bar=2");
}

/* § list: spaces and tabs around list-members are ignored. */
static void tracestate_values_ows_around_members(void **state)
{
    (void)state;
    als_trace_ctx c;
    set_ok(&c, "foo=1 \t , \t bar=2, \t baz=3", "foo=1,bar=2,baz=3");
    set_ok(&c, "\t foo=1 \t", "foo=1");
}

/* § Key: a key MUST begin with a lowercase letter or a digit and hold
 * up to 256 of a-z 0-9 _ - * / @ (simple and multi-tenant keys). */
static void tracestate_key_grammar(void **state)
{
    (void)state;
    als_trace_ctx c;
    set_ok(&c, "abcdefghijklmnopqrstuvwxyz0123456789_-*/=1",
           "abcdefghijklmnopqrstuvwxyz0123456789_-*/=1");
    set_ok(&c, "1tenant@system=1,foo@=2,foo@@bar=3,a@b@c=4",
           "1tenant@system=1,foo@=2,foo@@bar=3,a@b@c=4");
    char s[600];
    memset(s, 'z', 256);
    strcpy(s + 256, "=1");
    set_ok(&c, s, s);                             /* 256 characters */
    memset(s, 't', 241);
    s[241] = '@';
    memset(s + 242, 'v', 14);
    strcpy(s + 256, "=1");
    set_ok(&c, s, s);                             /* tenant 241 @ system 14 */
    memset(s, 'z', 257);
    strcpy(s + 257, "=1");
    set_bad(&c, s);                               /* 257 */
    set_bad(&c, "foo =1");
    set_bad(&c, "FOO=1");
    set_bad(&c, "foo.bar=1");
    set_bad(&c, "@foo=1,bar=2");
    set_bad(&c, "_foo=1");
    set_bad(&c, "=1");
}

/* § Value: up to 256 printable ASCII characters but comma and `=`,
 * not ending in a space; leading spaces MUST be preserved. */
static void tracestate_value_grammar_leading_spaces_kept(void **state)
{
    (void)state;
    als_trace_ctx c;
    set_ok(&c, "foo=  x y", "foo=  x y");
    set_ok(&c, "foo=  x y  ,bar=2", "foo=  x y,bar=2");
    char s[600];
    strcpy(s, "foo=");
    for (int ch = 0x20; ch <= 0x7e; ch++)
        if (ch != ',' && ch != '=')
            s[strlen(s) + 1] = '\0', s[strlen(s)] = (char)ch;
    set_ok(&c, s, s);                             /* every allowed character */
    memset(s + 4, 'v', 256);
    s[260] = '\0';
    set_ok(&c, s, s);
    s[260] = 'v';
    s[261] = '\0';
    set_bad(&c, s);                               /* 257 */
    set_bad(&c, "foo=bar=baz");
    set_bad(&c, "foo=,bar=3");
    set_bad(&c, "foo=   ");
    set_bad(&c, "foo=\tx");
    set_bad(&c, "foo=\x7f");
    set_bad(&c, "foo");
}

/* § list: at most 32 list-members: 32 are kept, 33 invalidate the
 * header (as the spec's test suite expects). */
static void tracestate_values_32_members_max(void **state)
{
    (void)state;
    als_trace_ctx c;
    char s[600];
    size_t n = 0;
    for (int i = 1; i <= 33; i++)
        n += (size_t)sprintf(s + n, "%sbar%02d=%02d", i > 1 ? "," : "", i, i);
    char want[600];
    memcpy(want, s, 32 * 8 + 31);
    want[32 * 8 + 31] = '\0';
    set_ok(&c, want, want);
    set_bad(&c, s);
    /* A repeated key is not a new member. */
    strcpy(s + 32 * 8 + 31, ",bar01=99");
    set_ok(&c, s, want);
}

/* § tracestate Header Field Values: duplicates may be kept or all but
 * one dropped; we keep the first, where it was. */
static void tracestate_values_duplicate_keeps_first(void **state)
{
    (void)state;
    als_trace_ctx c;
    set_ok(&c, "foo=1,bar=2,foo=3", "foo=1,bar=2");
}

/* § tracestate Limits: truncation MUST remove whole entries; those
 * over 128 characters first, then from the end. */
static void tracestate_limits_truncate_whole_entries(void **state)
{
    (void)state;
    als_trace_ctx c;
    char s[2048], big[200];
    memset(big, 'B', 150);
    big[150] = '\0';
    /* 4 members of 130 (a=...) and, between them, small ones. */
    size_t n = 0;
    for (int i = 0; i < 6; i++)
        n += (size_t)sprintf(s + n, "%sk%d=%.*s", i ? "," : "", i, i % 2 ? 140 : 60, big);
    assert_true(n > ALS_TRACESTATE_MAX);
    assert_int_equal(als_trace_set_state(&c, s), 0);
    /* 623 characters; k1, k3 and k5 are over 128: k5 goes first, from
     * the right, and then 479 fit. */
    assert_null(strstr(c.tracestate, "k5="));
    assert_non_null(strstr(c.tracestate, "k3="));
    assert_true(strlen(c.tracestate) <= ALS_TRACESTATE_MAX);
    /* Every member left is whole. */
    als_trace_ctx d;
    assert_int_equal(als_trace_set_state(&d, c.tracestate), 0);
    assert_string_equal(d.tracestate, c.tracestate);
}

/* § Mutating the tracestate Field: the order of unmodified pairs MUST be
 * preserved, modified keys MUST move to the left, adding MUST NOT make a key
 * appear twice; a 33rd member pushes out the right-most. */
static void tracestate_mutation_moves_left_keeps_order(void **state)
{
    (void)state;
    als_trace_ctx c;
    set_ok(&c, "rojo=1,congo=2,blue=3", "rojo=1,congo=2,blue=3");
    assert_int_equal(als_trace_state_put(&c, "congo", "9"), 0);
    assert_string_equal(c.tracestate, "congo=9,rojo=1,blue=3");
    assert_int_equal(als_trace_state_put(&c, "new@sys", "x"), 0);
    assert_string_equal(c.tracestate, "new@sys=x,congo=9,rojo=1,blue=3");
    assert_int_equal(als_trace_state_put(&c, "Bad", "x"), ALS_EINVAL);
    assert_int_equal(als_trace_state_put(&c, "ok", "a,b"), ALS_EINVAL);
    assert_string_equal(c.tracestate, "new@sys=x,congo=9,rojo=1,blue=3");
    assert_int_equal(als_trace_state_remove(&c, "rojo"), 1);
    assert_int_equal(als_trace_state_remove(&c, "rojo"), 0);
    assert_string_equal(c.tracestate, "new@sys=x,congo=9,blue=3");
    char v[16];
    assert_int_equal(als_trace_state_get(&c, "congo", v, sizeof v), 1);
    assert_string_equal(v, "9");
    assert_int_equal(als_trace_state_get(&c, "nope", v, sizeof v), 0);
    assert_int_equal(als_trace_state_get(&c, "congo", v, 1), ALS_EINVAL);

    char s[600];
    size_t n = 0;
    for (int i = 1; i <= 32; i++)
        n += (size_t)sprintf(s + n, "%sk%02d=1", i > 1 ? "," : "", i);
    set_ok(&c, s, s);
    assert_int_equal(als_trace_state_put(&c, "z", "2"), 0);
    assert_true(strncmp(c.tracestate, "z=2,k01=1,", 10) == 0);
    assert_null(strstr(c.tracestate, "k32"));
    assert_non_null(strstr(c.tracestate, ",k31=1"));
}

/* set_state and put may read from the context they write. */
static void tracestate_alias_safe(void **state)
{
    (void)state;
    als_trace_ctx c;
    set_ok(&c, " foo=1 , bar=2", "foo=1,bar=2");
    assert_int_equal(als_trace_set_state(&c, c.tracestate), 0);
    assert_string_equal(c.tracestate, "foo=1,bar=2");
    assert_int_equal(als_trace_set_state(&c, c.tracestate + 6), 0);
    assert_string_equal(c.tracestate, "bar=2");
}

/* § Mutating the tracestate Field, § Value: a vendor receiving tracestate MUST send it on: the members of
 * a valid list leave byte-exact (values are opaque). */
static void tracestate_forwarded_byte_exact(void **state)
{
    (void)state;
    als_trace_ctx c, child;
    const char *in = "a=  ~!\"#$%&'()*+-./09:;<>?@AZ[\\]^_`az{|}, b@c=d";
    assert_int_equal(als_trace_extract(TP, in, &c), 1);
    assert_int_equal(als_trace_child(&c, &child), 0);
    assert_string_equal(child.tracestate, "a=  ~!\"#$%&'()*+-./09:;<>?@AZ[\\]^_`az{|},b@c=d");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(traceflags_random_flag_propagated_both_ways),
        cmocka_unit_test(traceflags_other_flags_sent_as_zero),
        cmocka_unit_test(traceparent_invalid_ids_ignore_header),
        cmocka_unit_test(traceparent_versioning_higher_version_rules),
        cmocka_unit_test(tracestate_depends_on_traceparent_not_the_reverse),
        cmocka_unit_test(tracestate_values_empty_accepted),
        cmocka_unit_test(tracestate_values_ows_around_members),
        cmocka_unit_test(tracestate_key_grammar),
        cmocka_unit_test(tracestate_value_grammar_leading_spaces_kept),
        cmocka_unit_test(tracestate_values_32_members_max),
        cmocka_unit_test(tracestate_values_duplicate_keeps_first),
        cmocka_unit_test(tracestate_limits_truncate_whole_entries),
        cmocka_unit_test(tracestate_mutation_moves_left_keeps_order),
        cmocka_unit_test(tracestate_alias_safe),
        cmocka_unit_test(tracestate_forwarded_byte_exact),
    };
    return cmocka_run_group_tests_name("tracestate (Trace Context Level 2)", tests, NULL, NULL);
}
