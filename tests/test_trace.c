/* W3C trace-context propagation (als_trace.h): the wire format against the
 * spec's examples and against random garbage, ids, the trace store and its
 * flow through scopes, snapshots and threads, and the logging helper.
 * cmocka asserts run on the main thread only: threads record, the main
 * thread checks after joining. */
#define _POSIX_C_SOURCE 200809L  /* fork, pipe, pread, fcntl under -std=c11 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "als.h"
#include "als_trace.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TP_SPEC1 "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define TP_SPEC2 "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
#define TP_SPEC3 "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
#define TP_HARN  "00-12345678901234567890123456789012-1234567890123456-01"

static const uint8_t spec_trace[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                                       0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36};
static const uint8_t spec_parent[8] = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7};
static const uint8_t zero16[16];

/* A deterministic generator for the tests' own inputs (not the library's). */
static uint64_t test_rng = 0x243f6a8885a308d3u;
static uint64_t trand(void)
{
    uint64_t z = (test_rng += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static bool is_zeroed(const als_trace_ctx *c)
{
    const unsigned char *p = (const unsigned char *)c;
    for (size_t i = 0; i < sizeof *c; i++)
        if (p[i])
            return false;
    return true;
}

static void hex(char *out, const uint8_t *id, size_t n)
{
    assert_int_equal(als_trace_hex(out, id, n), (int)(2 * n));
}

/* ---- the spec's examples ------------------------------------------------ */

static void test_spec_valid(void **state)
{
    (void)state;
    als_trace_ctx c;
    memset(&c, 0xaa, sizeof c);
    assert_int_equal(als_trace_parse(TP_SPEC1, &c), 0);
    assert_memory_equal(c.trace_id, spec_trace, 16);
    assert_memory_equal(c.span_id, spec_parent, 8);
    assert_memory_equal(c.parent_id, zero16, 8);
    assert_int_equal(c.flags, 1);
    assert_string_equal(c.tracestate, "");
    assert_true(als_trace_valid(&c));

    assert_int_equal(als_trace_parse(TP_SPEC2, &c), 0);
    assert_memory_equal(c.trace_id, spec_trace, 16);
    assert_int_equal(c.flags, 0);

    assert_int_equal(als_trace_parse(TP_SPEC3, &c), 0);
    char buf[ALS_TRACEPARENT_SIZE];
    assert_int_equal(als_trace_format(&c, buf, sizeof buf), ALS_TRACEPARENT_LEN);
    assert_string_equal(buf, TP_SPEC3);

    /* HTTP's optional whitespace around the value (the spec's test suite). */
    const char *ows[] = {" " TP_HARN, "\t" TP_HARN, TP_HARN " ", TP_HARN "\t",
                         "\t " TP_HARN " \t"};
    for (size_t i = 0; i < sizeof ows / sizeof *ows; i++) {
        assert_int_equal(als_trace_parse(ows[i], &c), 0);
        assert_int_equal(als_trace_format(&c, buf, sizeof buf), ALS_TRACEPARENT_LEN);
        assert_string_equal(buf, TP_HARN);
    }
    /* Level 2, 3.2.2.5: the sampled and random-trace-id bits survive; the
     * reserved bits "MUST" be sent as zero. */
    assert_int_equal(als_trace_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", &c), 0);
    assert_int_equal(c.flags, ALS_TRACE_FLAGS_KNOWN);
    assert_int_equal(als_trace_format(&c, buf, sizeof buf), ALS_TRACEPARENT_LEN);
    assert_string_equal(buf, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03");
    /* parse_n reads only len bytes: the rest of the buffer is not looked at. */
    assert_int_equal(als_trace_parse_n(TP_SPEC1 "garbage", 55, &c), 0);
    assert_memory_equal(c.trace_id, spec_trace, 16);
    /* A NULL out is allowed: validation only. */
    assert_int_equal(als_trace_parse(TP_SPEC1, NULL), 0);
}

static const char *const invalid_tp[] = {
    "",
    " ",
    "00",
    "00-",
    /* version */
    "ff-12345678901234567890123456789012-1234567890123456-01",
    ".0-12345678901234567890123456789012-1234567890123456-01",
    "0.-12345678901234567890123456789012-1234567890123456-01",
    "000-12345678901234567890123456789012-1234567890123456-01",
    "0000-12345678901234567890123456789012-1234567890123456-01",
    "0-12345678901234567890123456789012-1234567890123456-01",
    "0A-12345678901234567890123456789012-1234567890123456-01",
    "FF-12345678901234567890123456789012-1234567890123456-01",
    /* trace-id */
    "00-00000000000000000000000000000000-1234567890123456-01",
    "00-.2345678901234567890123456789012-1234567890123456-01",
    "00-1234567890123456789012345678901.-1234567890123456-01",
    "00-123456789012345678901234567890123-1234567890123456-01",
    "00-1234567890123456789012345678901-1234567890123456-01",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e473A-00f067aa0ba902b7-01",
    /* parent-id */
    "00-12345678901234567890123456789012-0000000000000000-01",
    "00-12345678901234567890123456789012-.234567890123456-01",
    "00-12345678901234567890123456789012-123456789012345.-01",
    "00-12345678901234567890123456789012-12345678901234567-01",
    "00-12345678901234567890123456789012-123456789012345-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
    /* trace-flags */
    "00-12345678901234567890123456789012-1234567890123456-.0",
    "00-12345678901234567890123456789012-1234567890123456-0.",
    "00-12345678901234567890123456789012-1234567890123456-001",
    "00-12345678901234567890123456789012-1234567890123456-1",
    "00-12345678901234567890123456789012-1234567890123456-0A",
    /* version 00 has exactly four fields */
    "00-12345678901234567890123456789012-1234567890123456-01.",
    "00-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
    "00-12345678901234567890123456789012-1234567890123456-01-",
    /* stray characters and separators */
    "00_12345678901234567890123456789012-1234567890123456-01",
    "00-12345678901234567890123456789012_1234567890123456-01",
    "00-12345678901234567890123456789012-1234567890123456_01",
    "00-1234567890123456789012345678901 -1234567890123456-01",
    "00 -12345678901234567890123456789012-1234567890123456-01",
    "00-12345678901234567890123456789012-1234567890123456-01\r",
    "00-12345678901234567890123456789012-1234567890123456-01\n",
    "\n00-12345678901234567890123456789012-1234567890123456-01",
    "00-0x345678901234567890123456789012-1234567890123456-01",
    "00-+2345678901234567890123456789012-1234567890123456-01",
    /* a higher version: too short, bad separator after the flags */
    "cc-12345678901234567890123456789012-1234567890123456-1",
    "cc-12345678901234567890123456789012-1234567890123456-01.what-the-future-will-be-like",
    "cc-12345678901234567890123456789012-1234567890123456-01x",
    "cc-12345678901234567890123456789012-1234567890123456-01-fu ture",
    "cc-12345678901234567890123456789012-1234567890123456-01-\x7f",
    "cc-00000000000000000000000000000000-1234567890123456-01",
    "cc-12345678901234567890123456789012-0000000000000000-01",
};

static void *must_not_run(void *arg)
{
    (void)arg;
    abort();
}

static void test_spec_invalid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof invalid_tp / sizeof *invalid_tp; i++) {
        als_trace_ctx c;
        memset(&c, 0xaa, sizeof c);
        int rc = als_trace_parse(invalid_tp[i], &c);
        if (rc != ALS_EINVAL)
            fail_msg("accepted invalid traceparent #%zu \"%s\"", i, invalid_tp[i]);
        assert_true(is_zeroed(&c));
        assert_false(als_trace_valid(&c));
        /* And an invalid parse cannot be bound. */
        assert_int_equal(als_trace_run(&c, must_not_run, NULL, NULL), ALS_EINVAL);
        /* extract restarts the trace instead. */
        assert_int_equal(als_trace_extract(invalid_tp[i], "k=v", &c), 0);
        assert_true(als_trace_valid(&c));
        assert_memory_not_equal(c.trace_id, "\x12\x34\x56\x78\x90\x12\x34\x56\x78\x90"
                                            "\x12\x34\x56\x78\x90\x12", 16);
        assert_string_equal(c.tracestate, "");
    }
    /* NUL bytes inside are characters like any other: invalid. */
    char nul[] = TP_SPEC1;
    nul[20] = '\0';
    assert_int_equal(als_trace_parse_n(nul, 55, NULL), ALS_EINVAL);
    assert_int_equal(als_trace_parse_n(NULL, 55, NULL), ALS_EINVAL);
    assert_int_equal(als_trace_parse(NULL, NULL), ALS_EINVAL);
    /* Oversized: a higher version with a huge (well-formed) tail. */
    char big[4096];
    memcpy(big, TP_SPEC1, 55);
    big[0] = big[1] = 'c';
    big[55] = '-';
    memset(big + 56, 'x', sizeof big - 57);
    big[sizeof big - 1] = '\0';
    assert_int_equal(als_trace_parse(big, NULL), ALS_EINVAL);
    big[ALS_TRACEPARENT_MAX] = '\0';   /* exactly the limit: accepted */
    assert_int_equal(als_trace_parse(big, NULL), 0);
    big[ALS_TRACEPARENT_MAX] = 'x';
    big[ALS_TRACEPARENT_MAX + 1] = '\0';
    assert_int_equal(als_trace_parse(big, NULL), ALS_EINVAL);
}

static void test_version_forward(void **state)
{
    (void)state;
    als_trace_ctx c;
    char buf[ALS_TRACEPARENT_SIZE];
    const char *ok[] = {
        "cc-12345678901234567890123456789012-1234567890123456-01",
        "cc-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
        "01-12345678901234567890123456789012-1234567890123456-01-",
        "fe-12345678901234567890123456789012-1234567890123456-01-a-b-c",
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        if (als_trace_parse(ok[i], &c) != 0)
            fail_msg("rejected future version \"%s\"", ok[i]);
        /* Re-emitted in the highest version we know: 00, the four fields. */
        assert_int_equal(als_trace_format(&c, buf, sizeof buf), ALS_TRACEPARENT_LEN);
        assert_string_equal(buf, TP_HARN);
    }
    /* Of a future version's flags only the known bits are understood. */
    assert_int_equal(als_trace_parse("cc-12345678901234567890123456789012-1234567890123456-ff", &c), 0);
    assert_int_equal(c.flags, ALS_TRACE_FLAGS_KNOWN);
    assert_int_equal(als_trace_parse("cc-12345678901234567890123456789012-1234567890123456-fc", &c), 0);
    assert_int_equal(c.flags, 0);
    /* Extract continues a future-version trace. */
    assert_int_equal(als_trace_extract(ok[1], NULL, &c), 1);
    hex(buf, c.trace_id, 16);
    assert_string_equal(buf, "12345678901234567890123456789012");
}

/* ---- round trips ------------------------------------------------------- */

static void random_valid_tp(char *out)
{
    static const char hx[] = "0123456789abcdef";
    do {
        for (int i = 0; i < 55; i++)
            out[i] = hx[trand() & 15];
        out[2] = out[35] = out[52] = '-';
        out[0] = out[1] = '0';
        out[53] = '0';                  /* flags: only known bits round-trip */
        out[54] = (char)('0' + (trand() & ALS_TRACE_FLAGS_KNOWN));
        out[55] = '\0';
        /* A rare all-zero id would make the input invalid: draw again. */
    } while (strncmp(out + 3, "00000000000000000000000000000000", 32) == 0
             || strncmp(out + 36, "0000000000000000", 16) == 0);
}

static void test_round_trip(void **state)
{
    (void)state;
    char in[56], out[ALS_TRACEPARENT_SIZE];
    als_trace_ctx c, d;
    for (int i = 0; i < 20000; i++) {
        random_valid_tp(in);
        assert_int_equal(als_trace_parse(in, &c), 0);
        assert_int_equal(als_trace_format(&c, out, sizeof out), ALS_TRACEPARENT_LEN);
        assert_string_equal(in, out);
    }
    for (int i = 0; i < 20000; i++) {
        assert_int_equal(als_trace_new_root(&c), 0);
        c.flags = (uint8_t)trand();
        assert_int_equal(als_trace_format(&c, out, sizeof out), ALS_TRACEPARENT_LEN);
        assert_int_equal(als_trace_parse(out, &d), 0);
        assert_memory_equal(c.trace_id, d.trace_id, 16);
        assert_memory_equal(c.span_id, d.span_id, 8);
        assert_int_equal(c.flags & ALS_TRACE_FLAGS_KNOWN, d.flags);   /* reserved: sent as 0 */
    }
    /* format's own contract */
    assert_int_equal(als_trace_format(&c, out, ALS_TRACEPARENT_LEN), ALS_EINVAL);
    assert_string_equal(out, "");
    assert_int_equal(als_trace_format(NULL, out, sizeof out), ALS_EINVAL);
    assert_int_equal(als_trace_format(&c, NULL, 100), ALS_EINVAL);
    memset(&d, 0, sizeof d);
    assert_int_equal(als_trace_format(&d, out, sizeof out), ALS_EINVAL);
    memcpy(d.trace_id, c.trace_id, 16);   /* span id still zero */
    assert_int_equal(als_trace_format(&d, out, sizeof out), ALS_EINVAL);
}

/* ---- random garbage ----------------------------------------------------- */

/* An independent statement of the grammar, written differently from the
 * library's parser (shape string and plain comparisons). */
static bool ref_valid(const unsigned char *s, size_t n)
{
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    static const char shape[] = "hh-hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh-hhhhhhhhhhhhhhhh-hh";
    if (n < 55 || n > ALS_TRACEPARENT_MAX)
        return false;
    for (size_t i = 0; i < 55; i++) {
        if (shape[i] == '-') {
            if (s[i] != '-')
                return false;
        } else if (!(s[i] >= '0' && s[i] <= '9') && !(s[i] >= 'a' && s[i] <= 'f')) {
            return false;
        }
    }
    if (s[0] == 'f' && s[1] == 'f')
        return false;
    if (n > 55) {
        if (s[0] == '0' && s[1] == '0')
            return false;
        if (s[55] != '-')
            return false;
        for (size_t i = 56; i < n; i++)
            if (s[i] <= ' ' || s[i] >= 0x7f)
                return false;
    }
    if (memcmp(s + 3, "00000000000000000000000000000000", 32) == 0)
        return false;
    if (memcmp(s + 36, "0000000000000000", 16) == 0)
        return false;
    return true;
}

static size_t mutate(unsigned char *buf, size_t n, size_t cap)
{
    static const char interesting[] = "0123456789abcdefABCDEF-- \t.\r\n\x7f\x80\xff g";
    int ops = 1 + (int)(trand() % 3);
    for (int k = 0; k < ops; k++) {
        size_t pos = n ? (size_t)(trand() % (n + 1)) : 0;
        unsigned char ch = (trand() & 1) ? (unsigned char)trand()
                                         : (unsigned char)interesting[trand() % (sizeof interesting)];
        switch (trand() % 6) {
        case 0: case 1:                           /* replace */
            if (pos < n)
                buf[pos] = ch;
            break;
        case 2:                                   /* insert */
            if (n < cap) {
                memmove(buf + pos + 1, buf + pos, n - pos);
                buf[pos] = ch;
                n++;
            }
            break;
        case 3:                                   /* delete */
            if (pos < n) {
                memmove(buf + pos, buf + pos + 1, n - pos - 1);
                n--;
            }
            break;
        case 4:                                   /* truncate */
            n = pos;
            break;
        default:                                  /* append a tail */
            while (n < cap && (trand() & 7))
                buf[n++] = (trand() & 1) ? (unsigned char)('!' + trand() % 94) : ch;
            break;
        }
    }
    return n;
}

static void test_random_garbage(void **state)
{
    (void)state;
    enum { CAP = 700 };
    unsigned char buf[CAP + 1];
    long valid = 0, invalid = 0;
    for (int iter = 0; iter < 200000; iter++) {
        size_t n;
        int kind = iter % 4;
        if (kind == 0) {                          /* pure noise */
            n = (size_t)(trand() % CAP);
            for (size_t i = 0; i < n; i++)
                buf[i] = (unsigned char)trand();
        } else {                                  /* a near miss */
            random_valid_tp((char *)buf);
            n = 55;
            if (kind == 2) {                      /* as a future version */
                buf[0] = "0123456789abcdef"[trand() & 15];
                buf[1] = "0123456789abcdef"[trand() & 15];
            }
            n = mutate(buf, n, CAP);
        }
        als_trace_ctx c;
        memset(&c, 0x5a, sizeof c);
        int rc = als_trace_parse_n((const char *)buf, n, &c);
        bool want = ref_valid(buf, n);
        if ((rc == 0) != want) {
            buf[n] = '\0';
            fail_msg("iteration %d: parse says %d, reference says %d for \"%s\" (len %zu)",
                     iter, rc, want, (const char *)buf, n);
        }
        if (rc == 0) {
            valid++;
            assert_true(als_trace_valid(&c));
            char out[ALS_TRACEPARENT_SIZE];
            assert_int_equal(als_trace_format(&c, out, sizeof out), ALS_TRACEPARENT_LEN);
            assert_true(ref_valid((const unsigned char *)out, 55));
        } else {
            invalid++;
            assert_int_equal(rc, ALS_EINVAL);
            assert_true(is_zeroed(&c));
        }
        /* NUL-terminated paths too (extract, set_state): never crash, and
         * a string the reference rejects never continues a trace. */
        buf[n] = '\0';
        size_t sl = strlen((const char *)buf);
        int ex = als_trace_extract((const char *)buf, (const char *)buf, &c);
        assert_true(als_trace_valid(&c));
        assert_int_equal(ex, ref_valid(buf, sl) ? 1 : 0);
        for (const char *p = c.tracestate; *p; p++)
            assert_true(*p == '\t' || (*p >= 0x20 && *p <= 0x7e));
    }
    /* Both outcomes were exercised: the check can fail either way. */
    assert_true(valid > 1000);
    assert_true(invalid > 1000);
}

/* ---- tracestate -------------------------------------------------------- */

static void test_tracestate(void **state)
{
    (void)state;
    als_trace_ctx c;
    memset(&c, 0, sizeof c);
    assert_int_equal(als_trace_set_state(&c, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"), 0);
    assert_string_equal(c.tracestate, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    assert_int_equal(als_trace_set_state(&c, " \tfoo=1 \t , \t bar=2 "), 0);
    assert_string_equal(c.tracestate, "foo=1,bar=2");   /* canonical: OWS gone */
    assert_int_equal(als_trace_set_state(&c, NULL), 0);
    assert_string_equal(c.tracestate, "");
    assert_int_equal(als_trace_set_state(&c, ""), 0);
    assert_string_equal(c.tracestate, "");
    assert_int_equal(als_trace_set_state(NULL, "a=b"), ALS_EINVAL);
    /* Control characters: dropped, not forwarded (header/log injection). */
    strcpy(c.tracestate, "old");
    assert_int_equal(als_trace_set_state(&c, "a=b\r\nx-evil: 1"), ALS_EINVAL);
    assert_string_equal(c.tracestate, "");
    assert_int_equal(als_trace_set_state(&c, "a=\x80"), ALS_EINVAL);
    assert_string_equal(c.tracestate, "");

    /* Exactly the limit is kept verbatim: 257 + 1 + 254 characters. */
    char s[4096];
    memset(s, 'v', ALS_TRACESTATE_MAX);
    memcpy(s, "a=", 2);
    memcpy(s + 257, ",b=", 3);
    s[ALS_TRACESTATE_MAX] = '\0';
    assert_int_equal(als_trace_set_state(&c, s), 0);
    assert_string_equal(c.tracestate, s);

    /* Over the limit: entries above 128 characters go first, then entries
     * from the end. 31 entries "kNN=<20 v>" (24 chars) plus one 200-char
     * entry early on: the big one goes, and the first 20 small ones fit
     * (20 * 24 + 19 commas = 499). */
    size_t n = 0;
    for (int i = 0; i < 31; i++) {
        if (i)
            s[n++] = ',';
        if (i == 3) {
            memcpy(s + n, "big=", 4);
            memset(s + n + 4, 'B', 196);
            n += 200;
            s[n++] = ',';
        }
        n += (size_t)sprintf(s + n, "k%02d=vvvvvvvvvvvvvvvvvvvv", i);
    }
    s[n] = '\0';
    assert_true(n > ALS_TRACESTATE_MAX);
    assert_int_equal(als_trace_set_state(&c, s), 0);
    assert_true(strlen(c.tracestate) <= ALS_TRACESTATE_MAX);
    assert_null(strstr(c.tracestate, "big="));
    assert_non_null(strstr(c.tracestate, "k00=vvvvvvvvvvvvvvvvvvvv,k01="));
    assert_non_null(strstr(c.tracestate, ",k19=vvvvvvvvvvvvvvvvvvvv"));
    assert_null(strstr(c.tracestate, "k20="));
    assert_int_equal(strlen(c.tracestate), 20 * 24 + 19);
    /* Whole entries only: the result ends at an entry's end. */
    assert_int_equal(c.tracestate[strlen(c.tracestate) - 1], 'v');

    /* Propagation: extract keeps it, a child keeps it, run keeps it. */
    assert_int_equal(als_trace_extract(TP_SPEC1, "congo=t61rcWkgMzE", &c), 1);
    assert_string_equal(c.tracestate, "congo=t61rcWkgMzE");
    als_trace_ctx d;
    assert_int_equal(als_trace_child(&c, &d), 0);
    assert_string_equal(d.tracestate, "congo=t61rcWkgMzE");
    /* A bad tracestate does not affect traceparent. */
    assert_int_equal(als_trace_extract(TP_SPEC1, "a=\x01", &c), 1);
    assert_memory_equal(c.trace_id, spec_trace, 16);
    assert_string_equal(c.tracestate, "");
}

/* ---- extract / child / root ------------------------------------------- */

static void test_extract_child(void **state)
{
    (void)state;
    als_trace_ctx c, d;
    assert_int_equal(als_trace_extract(TP_SPEC1, NULL, &c), 1);
    assert_memory_equal(c.trace_id, spec_trace, 16);
    assert_memory_equal(c.parent_id, spec_parent, 8);
    assert_memory_not_equal(c.span_id, spec_parent, 8);
    assert_true(als_trace_valid(&c));
    assert_int_equal(c.flags, 1);

    assert_int_equal(als_trace_extract(NULL, "ignored=1", &c), 0);   /* missing */
    assert_true(als_trace_valid(&c));
    assert_memory_equal(c.parent_id, zero16, 8);
    assert_string_equal(c.tracestate, "");
    assert_int_equal(c.flags, ALS_TRACE_FLAG_SAMPLED);
    assert_int_equal(als_trace_extract(TP_SPEC1, NULL, NULL), ALS_EINVAL);

    assert_int_equal(als_trace_child(&c, &d), 0);
    assert_memory_equal(d.trace_id, c.trace_id, 16);
    assert_memory_equal(d.parent_id, c.span_id, 8);
    assert_memory_not_equal(d.span_id, c.span_id, 8);
    /* In place. */
    als_trace_ctx e = d;
    assert_int_equal(als_trace_child(&e, &e), 0);
    assert_memory_equal(e.trace_id, d.trace_id, 16);
    assert_memory_equal(e.parent_id, d.span_id, 8);
    assert_memory_not_equal(e.span_id, d.span_id, 8);
    /* Invalid parent. */
    memset(&e, 0, sizeof e);
    memset(&d, 0x77, sizeof d);
    assert_int_equal(als_trace_child(&e, &d), ALS_EINVAL);
    assert_true(is_zeroed(&d));
    assert_int_equal(als_trace_child(NULL, &d), ALS_EINVAL);
    assert_int_equal(als_trace_child(&c, NULL), ALS_EINVAL);
    assert_int_equal(als_trace_new_root(NULL), ALS_EINVAL);

    /* hex and its contract */
    char h[33];
    assert_int_equal(als_trace_hex(h, spec_trace, 16), 32);
    assert_string_equal(h, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_int_equal(als_trace_hex(NULL, spec_trace, 16), ALS_EINVAL);
    assert_int_equal(als_trace_hex(h, NULL, 16), ALS_EINVAL);
    assert_int_equal(als_trace_valid(NULL), 0);
}

/* ---- ids --------------------------------------------------------------- */

enum { ID_THREADS = 8, ID_SPANS = 20000, ID_TRACES = 4000 };

struct id_rec {
    uint64_t spans[ID_SPANS];
    uint8_t traces[ID_TRACES][16];
};

static void *id_worker(void *p)
{
    struct id_rec *r = p;
    for (int i = 0; i < ID_SPANS; i++) {
        uint8_t b[8];
        als_trace_random_span_id(b);
        uint64_t v = 0;
        for (int k = 0; k < 8; k++)
            v = v << 8 | b[k];
        r->spans[i] = v;
    }
    for (int i = 0; i < ID_TRACES; i++)
        als_trace_random_trace_id(r->traces[i]);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_16(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

static void test_ids_unique_across_threads(void **state)
{
    (void)state;
    struct id_rec *recs = calloc(ID_THREADS, sizeof *recs);
    assert_non_null(recs);
    pthread_t t[ID_THREADS];
    for (int i = 0; i < ID_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, id_worker, &recs[i]), 0);
    for (int i = 0; i < ID_THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);

    uint64_t *all = malloc(sizeof(uint64_t) * ID_THREADS * ID_SPANS);
    uint8_t (*tr)[16] = malloc(16 * (size_t)ID_THREADS * ID_TRACES);
    assert_non_null(all);
    assert_non_null(tr);
    for (int i = 0; i < ID_THREADS; i++) {
        memcpy(all + (size_t)i * ID_SPANS, recs[i].spans, sizeof recs[i].spans);
        memcpy(tr + (size_t)i * ID_TRACES, recs[i].traces, sizeof recs[i].traces);
    }
    size_t ns = (size_t)ID_THREADS * ID_SPANS, nt = (size_t)ID_THREADS * ID_TRACES;
    qsort(all, ns, sizeof *all, cmp_u64);
    qsort(tr, nt, 16, cmp_16);
    assert_true(all[0] != 0);
    for (size_t i = 1; i < ns; i++)
        if (all[i] == all[i - 1])
            fail_msg("duplicate span id %016llx", (unsigned long long)all[i]);
    assert_memory_not_equal(tr[0], zero16, 16);
    for (size_t i = 1; i < nt; i++)
        assert_memory_not_equal(tr[i], tr[i - 1], 16);
    /* Crude sanity on spread: every byte value shows up in the first byte
     * of the span ids (a broken generator repeating few values would not). */
    bool seen[256] = {false};
    for (size_t i = 0; i < ns; i++)
        seen[all[i] >> 56] = true;
    for (int i = 0; i < 256; i++)
        assert_true(seen[i]);
    free(all);
    free(tr);
    free(recs);
    als_trace_random_span_id(NULL);   /* no-op, no crash */
    als_trace_random_trace_id(NULL);
}

/* After fork the child must not repeat the parent's ids. */
static void test_fork_reseeds(void **state)
{
    (void)state;
    uint8_t warm[8], mine[8], theirs[8];
    als_trace_random_span_id(warm);            /* this thread is seeded */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        uint8_t id[8];
        als_trace_random_span_id(id);
        ssize_t w = write(fds[1], id, sizeof id);
        _exit(w == (ssize_t)sizeof id ? 0 : 1);
    }
    als_trace_random_span_id(mine);
    assert_int_equal(read(fds[0], theirs, sizeof theirs), (ssize_t)sizeof theirs);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(fds[0]);
    close(fds[1]);
    assert_memory_not_equal(mine, theirs, sizeof mine);
}

/* ---- the store: run, spans, restore ----------------------------------- */

static void *get_current(void *arg)
{
    (void)arg;
    return (void *)als_trace_get();
}

struct nest {
    als_trace_ctx outer, inner, seen_inner, seen_after;
    int rc_inner, had_after;
};

static void *nest_inner(void *arg)
{
    struct nest *n = arg;
    als_trace_current(&n->seen_inner);
    return (void *)0x1234;
}

static void *nest_outer(void *arg)
{
    struct nest *n = arg;
    void *res = NULL;
    n->rc_inner = als_trace_run_span(nest_inner, n, &res, &n->inner);
    if (res != (void *)0x1234)
        n->rc_inner = -100;
    n->had_after = als_trace_current(&n->seen_after);
    return arg;
}

static void test_run_and_spans(void **state)
{
    (void)state;
    assert_null(als_trace_get());
    als_trace_ctx out;
    assert_int_equal(als_trace_current(&out), 0);
    assert_true(is_zeroed(&out));
    assert_int_equal(als_trace_current(NULL), ALS_EINVAL);
    assert_non_null(als_trace_store());
    assert_ptr_equal(als_trace_store(), als_trace_store());

    struct nest n;
    memset(&n, 0, sizeof n);
    assert_int_equal(als_trace_extract(TP_SPEC1, "a=1", &n.outer), 1);
    void *res = NULL;
    assert_int_equal(als_trace_run(&n.outer, nest_outer, &n, &res), 0);
    assert_ptr_equal(res, &n);
    assert_int_equal(n.rc_inner, 0);
    /* The child span: same trace, parent = outer span, new span id. */
    assert_memory_equal(n.seen_inner.trace_id, n.outer.trace_id, 16);
    assert_memory_equal(n.seen_inner.parent_id, n.outer.span_id, 8);
    assert_memory_equal(n.seen_inner.span_id, n.inner.span_id, 8);
    assert_memory_not_equal(n.seen_inner.span_id, n.outer.span_id, 8);
    assert_string_equal(n.seen_inner.tracestate, "a=1");
    /* Restored after the inner span. */
    assert_int_equal(n.had_after, 1);
    assert_memory_equal(n.seen_after.span_id, n.outer.span_id, 8);
    /* And after the outer run. */
    assert_null(als_trace_get());

    /* The store holds its own copy: changing ours afterwards changes
     * nothing inside, and a stack context may go away. */
    als_trace_ctx tmp;
    als_trace_new_root(&tmp);
    void *inside = NULL;
    assert_int_equal(als_trace_run(&tmp, get_current, NULL, &inside), 0);
    assert_ptr_not_equal(inside, &tmp);

    /* A root span when no context is current. */
    als_trace_ctx root;
    assert_int_equal(als_trace_run_span(get_current, NULL, NULL, &root), 0);
    assert_true(als_trace_valid(&root));
    assert_memory_equal(root.parent_id, zero16, 8);

    /* Errors: nothing runs. */
    assert_int_equal(als_trace_run(NULL, get_current, NULL, NULL), ALS_EINVAL);
    assert_int_equal(als_trace_run(&tmp, NULL, NULL, NULL), ALS_EINVAL);
    memset(&root, 0x11, sizeof root);
    assert_int_equal(als_trace_run_span(NULL, NULL, NULL, &root), ALS_EINVAL);
    assert_true(is_zeroed(&root));
    assert_int_equal(als_trace_enter(NULL), ALS_EINVAL);
    memset(&root, 0, sizeof root);
    assert_int_equal(als_trace_enter(&root), ALS_EINVAL);
    assert_null(als_trace_get());
}

static void *copy_current(void *arg)
{
    als_trace_current(arg);
    return NULL;
}

static void test_state_sanitised_on_bind(void **state)
{
    (void)state;
    als_trace_ctx tmp, seen;
    als_trace_new_root(&tmp);
    strcpy(tmp.tracestate, "x=\x01");
    assert_int_equal(als_trace_run(&tmp, copy_current, &seen, NULL), 0);
    assert_string_equal(seen.tracestate, "");
    memset(tmp.tracestate, 'y', sizeof tmp.tracestate);   /* no NUL at all */
    assert_int_equal(als_trace_run(&tmp, copy_current, &seen, NULL), 0);
    assert_int_equal(strlen(seen.tracestate), ALS_TRACESTATE_MAX);
}

/* ---- inject -------------------------------------------------------------- */

struct inj {
    char buf[ALS_TRACEPARENT_SIZE];
    int rc;
    als_trace_ctx cur;
};

static void *do_inject(void *arg)
{
    struct inj *j = arg;
    j->rc = als_trace_inject(j->buf, sizeof j->buf);
    als_trace_current(&j->cur);
    return NULL;
}

static void test_inject(void **state)
{
    (void)state;
    char buf[ALS_TRACEPARENT_SIZE] = "x";
    assert_int_equal(als_trace_inject(buf, sizeof buf), 0);   /* no trace */
    assert_string_equal(buf, "");
    assert_int_equal(als_trace_inject(buf, sizeof buf - 1), ALS_EINVAL);
    assert_int_equal(als_trace_inject(NULL, 100), ALS_EINVAL);

    als_trace_ctx c;
    als_trace_extract(TP_SPEC1, NULL, &c);
    struct inj j;
    assert_int_equal(als_trace_run(&c, do_inject, &j, NULL), 0);
    assert_int_equal(j.rc, ALS_TRACEPARENT_LEN);
    /* The downstream's parent is our span, in our trace. */
    als_trace_ctx down;
    assert_int_equal(als_trace_parse(j.buf, &down), 0);
    assert_memory_equal(down.trace_id, spec_trace, 16);
    assert_memory_equal(down.span_id, c.span_id, 8);
    /* Across a process boundary: the receiver's extract continues it. */
    als_trace_ctx recv;
    assert_int_equal(als_trace_extract(j.buf, NULL, &recv), 1);
    assert_memory_equal(recv.trace_id, spec_trace, 16);
    assert_memory_equal(recv.parent_id, c.span_id, 8);
}

/* ---- context flow through snapshots, bound functions, threads ----------- */

struct flow {
    als_snapshot_t *snap;
    als_bound_t *bound;
    als_resource_t *res;
    pthread_t thread;
    int thread_rc;
    als_trace_ctx thread_seen;   /* written by the thread, read after join */
};

static void *capture_everything(void *arg)
{
    struct flow *f = arg;
    f->snap = als_snapshot();
    f->bound = als_bind(copy_current);
    f->res = als_resource_new("trace-test");
    f->thread_rc = als_thread_create(&f->thread, NULL, copy_current, &f->thread_seen);
    return NULL;
}

static void *thread_copy_current(void *arg)
{
    als_trace_current(arg);
    return NULL;
}

static void *spawn_thread_copy(void *arg)
{
    als_trace_ctx *out = arg;
    pthread_t t;
    if (als_thread_create(&t, NULL, thread_copy_current, out) != 0)
        return NULL;
    pthread_join(t, NULL);
    return arg;
}

static void test_context_flows(void **state)
{
    (void)state;
    als_trace_ctx c, seen;
    als_trace_extract(TP_SPEC1, "congo=1", &c);
    struct flow f;
    memset(&f, 0, sizeof f);
    assert_int_equal(als_trace_run(&c, capture_everything, &f, NULL), 0);
    assert_int_equal(f.thread_rc, 0);
    assert_int_equal(pthread_join(f.thread, NULL), 0);
    /* The thread may have run after the scope ended: still in the trace. */
    assert_memory_equal(f.thread_seen.span_id, c.span_id, 8);
    assert_null(als_trace_get());
    assert_non_null(f.snap);
    assert_non_null(f.bound);
    assert_non_null(f.res);

    /* The scope has ended, but the captures keep the store's copy alive
     * (ASan would see a use after free otherwise). */
    memset(&seen, 0, sizeof seen);
    als_snapshot_run(f.snap, copy_current, &seen);
    assert_memory_equal(seen.span_id, c.span_id, 8);
    assert_string_equal(seen.tracestate, "congo=1");
    memset(&seen, 0, sizeof seen);
    als_bound_call(f.bound, &seen);
    assert_memory_equal(seen.span_id, c.span_id, 8);
    memset(&seen, 0, sizeof seen);
    als_resource_run_in_scope(f.res, copy_current, &seen);
    assert_memory_equal(seen.span_id, c.span_id, 8);
    assert_null(als_trace_get());
    als_snapshot_release(f.snap);
    als_bound_free(f.bound);
    als_resource_free(f.res);

    /* A thread created inside a trace starts in it. */
    memset(&seen, 0, sizeof seen);
    void *r = NULL;
    assert_int_equal(als_trace_run(&c, spawn_thread_copy, &seen, &r), 0);
    assert_ptr_equal(r, &seen);
    assert_memory_equal(seen.trace_id, c.trace_id, 16);
    assert_memory_equal(seen.span_id, c.span_id, 8);
}

static void *exit_inside(void *arg)
{
    return als_exit(als_trace_store(), get_current, arg);
}

static void test_exit_store(void **state)
{
    (void)state;
    als_trace_ctx c;
    als_trace_new_root(&c);
    void *r = (void *)1;
    assert_int_equal(als_trace_run(&c, exit_inside, NULL, &r), 0);
    assert_null(r);
}

/* als_trace_enter at a thread's top level lasts until the thread ends. */
struct enter_rec {
    als_trace_ctx want, seen1, seen2;
    int rc;
};

static void *enter_thread(void *arg)
{
    struct enter_rec *e = arg;
    e->rc = als_trace_enter(&e->want);
    als_trace_current(&e->seen1);
    /* A nested span inside does not disturb it afterwards. */
    als_trace_run_span(get_current, NULL, NULL, NULL);
    als_trace_current(&e->seen2);
    return NULL;
}

static void test_enter(void **state)
{
    (void)state;
    struct enter_rec e;
    memset(&e, 0, sizeof e);
    als_trace_new_root(&e.want);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, enter_thread, &e), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(e.rc, 0);
    assert_memory_equal(e.seen1.span_id, e.want.span_id, 8);
    assert_memory_equal(e.seen2.span_id, e.want.span_id, 8);
    assert_null(als_trace_get());   /* the main thread never saw it */
}

/* ---- logging ----------------------------------------------------------- */

static int tmp_log_fd(void)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    int fd = dup(fileno(f));
    fclose(f);
    assert_true(fd >= 0);
    /* O_APPEND: each write lands whole at the end, whatever the offset. */
    assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_APPEND), 0);
    return fd;
}

static char *slurp(int fd, size_t *len)
{
    off_t size = lseek(fd, 0, SEEK_END);
    assert_true(size >= 0);
    char *buf = malloc((size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)size, 0), (ssize_t)size);
    buf[size] = '\0';
    *len = (size_t)size;
    return buf;
}

struct logs {
    int rc[6];
};

static void *log_inside(void *arg)
{
    struct logs *l = arg;
    l->rc[0] = als_trace_log("hello %d", 42);
    l->rc[1] = als_trace_log("trailing newline\n");
    l->rc[2] = als_trace_log("two\nlines\r\nforged trace=%032d", 0);
    char big[3000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    l->rc[3] = als_trace_log("%s", big);
    l->rc[4] = als_trace_log("%s", "");
    return NULL;
}

static void test_log(void **state)
{
    (void)state;
    char pre[ALS_TRACE_PREFIX_LEN + 1];
    assert_int_equal(als_trace_log_prefix(pre, sizeof pre), ALS_TRACE_PREFIX_LEN);
    assert_string_equal(pre, "trace=00000000000000000000000000000000 span=0000000000000000");
    assert_int_equal(als_trace_log_prefix(pre, ALS_TRACE_PREFIX_LEN), ALS_EINVAL);
    assert_int_equal(als_trace_log_prefix(NULL, 100), ALS_EINVAL);
    assert_int_equal(als_trace_log_set_fd(-1), ALS_EINVAL);
    assert_int_equal(als_trace_log(NULL), ALS_EINVAL);

    int fd = tmp_log_fd();
    int old = als_trace_log_set_fd(fd);
    assert_int_equal(old, 2);
    als_trace_ctx c;
    als_trace_extract(TP_SPEC1, NULL, &c);
    char span[17], want[256];
    hex(span, c.span_id, 8);
    struct logs l;
    assert_int_equal(als_trace_run(&c, log_inside, &l, NULL), 0);
    int outside = als_trace_log("outside");
    assert_int_equal(als_trace_log_set_fd(old), fd);

    size_t len;
    char *text = slurp(fd, &len);
    close(fd);
    char *line = text, *nl;
    /* line 1 */
    nl = strchr(line, '\n');
    assert_non_null(nl);
    *nl = '\0';
    snprintf(want, sizeof want, "trace=4bf92f3577b34da6a3ce929d0e0e4736 span=%s hello 42", span);
    assert_string_equal(line, want);
    assert_int_equal(l.rc[0], (int)strlen(want) + 1);
    /* line 2: no doubled newline */
    line = nl + 1;
    nl = strchr(line, '\n');
    *nl = '\0';
    snprintf(want, sizeof want, "trace=4bf92f3577b34da6a3ce929d0e0e4736 span=%s trailing newline", span);
    assert_string_equal(line, want);
    /* line 3: embedded newlines cannot start a line of another trace */
    line = nl + 1;
    nl = strchr(line, '\n');
    *nl = '\0';
    snprintf(want, sizeof want, "trace=4bf92f3577b34da6a3ce929d0e0e4736 span=%s two lines  forged trace=%032d",
             span, 0);
    assert_string_equal(line, want);
    /* line 4: cut to the maximum, ending in "..." */
    line = nl + 1;
    nl = strchr(line, '\n');
    assert_int_equal((size_t)(nl - line) + 1, ALS_TRACE_LOG_LINE_MAX);
    assert_int_equal(l.rc[3], ALS_TRACE_LOG_LINE_MAX);
    assert_memory_equal(nl - 3, "...", 3);
    assert_memory_equal(nl - 4, "z", 1);
    /* line 5: empty message */
    line = nl + 1;
    nl = strchr(line, '\n');
    *nl = '\0';
    snprintf(want, sizeof want, "trace=4bf92f3577b34da6a3ce929d0e0e4736 span=%s ", span);
    assert_string_equal(line, want);
    /* line 6: outside any trace */
    line = nl + 1;
    nl = strchr(line, '\n');
    *nl = '\0';
    assert_string_equal(line, "trace=00000000000000000000000000000000 span=0000000000000000 outside");
    assert_int_equal(outside, (int)strlen(line) + 1);
    assert_string_equal(nl + 1, "");
    free(text);

    /* A write that fails is reported. */
    int bad[2];
    assert_int_equal(pipe(bad), 0);
    close(bad[0]);
    close(bad[1]);
    old = als_trace_log_set_fd(bad[0]);
    assert_int_equal(als_trace_log("nowhere"), ALS_EINVAL);
    als_trace_log_set_fd(old);
}

enum { LOG_THREADS = 8, LOG_LINES = 1000 };

struct log_worker {
    int id;
    als_trace_ctx ctx;
    char trace_hex[33];
    int failures;
};

struct log_line {
    struct log_worker *w;
    int i;
};

static void *log_one(void *arg)
{
    struct log_line *l = arg;
    if (als_trace_log("worker=%d line=%d trace=%s", l->w->id, l->i, l->w->trace_hex) <= 0)
        l->w->failures++;
    return NULL;
}

static void *log_body(void *arg)
{
    struct log_worker *w = arg;
    for (int i = 0; i < LOG_LINES; i++) {
        struct log_line l = {w, i};
        /* Half the lines from a child span: a new span, the same trace. */
        if (i & 1)
            log_one(&l);
        else if (als_trace_run_span(log_one, &l, NULL, NULL) != 0)
            w->failures++;
    }
    return NULL;
}

static void *log_thread(void *arg)
{
    struct log_worker *w = arg;
    if (als_trace_run(&w->ctx, log_body, w, NULL) != 0)
        w->failures++;
    return NULL;
}

static void test_log_concurrent(void **state)
{
    (void)state;
    int fd = tmp_log_fd();
    int old = als_trace_log_set_fd(fd);
    struct log_worker w[LOG_THREADS];
    pthread_t t[LOG_THREADS];
    for (int i = 0; i < LOG_THREADS; i++) {
        w[i].id = i;
        w[i].failures = 0;
        als_trace_new_root(&w[i].ctx);
        hex(w[i].trace_hex, w[i].ctx.trace_id, 16);
        assert_int_equal(pthread_create(&t[i], NULL, log_thread, &w[i]), 0);
    }
    for (int i = 0; i < LOG_THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    als_trace_log_set_fd(old);

    size_t len;
    char *text = slurp(fd, &len);
    close(fd);
    int count[LOG_THREADS] = {0};
    long lines = 0, bad = 0;
    for (char *line = text, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        char tr[33], sp[17], tr2[33];
        int id, n;
        if (sscanf(line, "trace=%32s span=%16s worker=%d line=%d trace=%32s", tr, sp, &id, &n, tr2) != 5
            || id < 0 || id >= LOG_THREADS || strcmp(tr, tr2) != 0
            || strcmp(tr, w[id].trace_hex) != 0) {
            bad++;
            continue;
        }
        count[id]++;
        lines++;
    }
    free(text);
    assert_int_equal(bad, 0);
    assert_int_equal(lines, LOG_THREADS * LOG_LINES);
    for (int i = 0; i < LOG_THREADS; i++) {
        assert_int_equal(w[i].failures, 0);
        assert_int_equal(count[i], LOG_LINES);
    }
}

/* ---- allocation failure -------------------------------------------------- */

/* The hook exists only in libraries built with ALS_FAULT_INJECTION, and
 * that definition does not reach the tests' compile flags (it is set on the
 * object library only), so look the hook up at link time instead: a weak
 * reference is NULL when the library lacks it, and the test skips. */
long als__test_fail_alloc(long n, bool sticky) __attribute__((weak));

static int ran;
static void *mark_ran(void *arg)
{
    (void)arg;
    ran++;
    als_snapshot_t *s = als_snapshot();   /* a capture inside: may fail too */
    als_snapshot_release(s);
    return NULL;
}

static void test_alloc_failure(void **state)
{
    (void)state;
    if (!als__test_fail_alloc)
        skip();
    assert_non_null(als_trace_store());   /* created before injecting */
    als_trace_ctx c, span;
    als_trace_new_root(&c);

    ran = 0;
    als__test_fail_alloc(1, false);
    assert_int_equal(als_trace_run(&c, mark_ran, NULL, NULL), ALS_ENOMEM);
    assert_int_equal(ran, 0);
    als__test_fail_alloc(1, false);
    assert_int_equal(als_trace_run_span(mark_ran, NULL, NULL, &span), ALS_ENOMEM);
    assert_int_equal(ran, 0);
    assert_true(als_trace_valid(&span));   /* still told which span */
    als__test_fail_alloc(1, false);
    assert_int_equal(als_trace_enter(&c), ALS_ENOMEM);
    assert_null(als_trace_get());

    /* Fail each allocation in turn: every outcome is 0 or ALS_ENOMEM,
     * fn runs at most once, nothing leaks (LSan) or crashes (ASan). */
    for (long n = 1; n < 20; n++) {
        ran = 0;
        als__test_fail_alloc(n, false);
        int rc = als_trace_run_span(mark_ran, NULL, NULL, NULL);
        als__test_fail_alloc(0, false);
        assert_true(rc == 0 || rc == ALS_ENOMEM);
        assert_int_equal(ran, rc == 0 ? 1 : 0);
    }
    als__test_fail_alloc(0, false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fork_reseeds),   /* first: before any thread */
        cmocka_unit_test(test_spec_valid),
        cmocka_unit_test(test_spec_invalid),
        cmocka_unit_test(test_version_forward),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_random_garbage),
        cmocka_unit_test(test_tracestate),
        cmocka_unit_test(test_extract_child),
        cmocka_unit_test(test_ids_unique_across_threads),
        cmocka_unit_test(test_run_and_spans),
        cmocka_unit_test(test_state_sanitised_on_bind),
        cmocka_unit_test(test_inject),
        cmocka_unit_test(test_context_flows),
        cmocka_unit_test(test_exit_store),
        cmocka_unit_test(test_enter),
        cmocka_unit_test(test_log),
        cmocka_unit_test(test_log_concurrent),
        cmocka_unit_test(test_alloc_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
