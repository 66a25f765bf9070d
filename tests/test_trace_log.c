/* Edges of the trace module's logging and tracestate helpers (issue 14,
 * defect 9): a message that exactly fills the line before its trailing
 * newline is written whole; control characters are escaped as \xNN, never
 * written raw (terminal-escape injection into logs people cat); and
 * als_trace_set_state accepts its own ctx->tracestate as the source. */
#define _POSIX_C_SOURCE 200809L /* pread, fcntl under -std=c11 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "als.h"
#include "als_trace.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Characters of message a line holds: the prefix, a space and the newline
 * take the rest. */
#define ROOM (ALS_TRACE_LOG_LINE_MAX - ALS_TRACE_PREFIX_LEN - 2)

/* Logs one line to a temporary file and returns the message part of it
 * (after the prefix and its space), newline included; *rc gets the
 * logger's answer. The caller frees. */
static char *log_line(int *rc, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static char *log_line(int *rc, size_t *len, const char *fmt, ...)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    int fd = dup(fileno(f));
    fclose(f);
    assert_true(fd >= 0);
    int old = als_trace_log_set_fd(fd);
    va_list ap;
    va_start(ap, fmt);
    *rc = als_trace_logv(fmt, ap);
    va_end(ap);
    als_trace_log_set_fd(old);

    off_t size = lseek(fd, 0, SEEK_END);
    assert_true(size > ALS_TRACE_PREFIX_LEN);
    char *buf = malloc((size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)size, 0), (ssize_t)size);
    close(fd);
    buf[size] = '\0';
    assert_int_equal(*rc, (int)size);
    assert_int_equal(buf[ALS_TRACE_PREFIX_LEN], ' ');
    size_t n = (size_t)size - ALS_TRACE_PREFIX_LEN - 1;
    memmove(buf, buf + ALS_TRACE_PREFIX_LEN + 1, n + 1);
    *len = n;
    return buf;
}

static char *repeat(char c, size_t n, const char *tail)
{
    size_t t = strlen(tail);
    char *s = malloc(n + t + 1);
    assert_non_null(s);
    memset(s, c, n);
    memcpy(s + n, tail, t + 1);
    return s;
}

/* The newline is documented as stripped: it does not count toward the
 * line's length, so a message of exactly ROOM characters plus "\n" (or
 * "\r\n") is written whole, without "...". */
static void exact_fit_with_trailing_newline_is_not_cut(void **state)
{
    (void)state;
    static const char *const tails[] = {"\n", "\r\n", ""};
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
        char *msg = repeat('m', ROOM, tails[i]);
        int rc;
        size_t len;
        char *got = log_line(&rc, &len, "%s", msg);
        assert_int_equal(rc, ALS_TRACE_LOG_LINE_MAX);
        assert_int_equal(len, ROOM + 1);
        assert_memory_equal(got, msg, ROOM);
        assert_int_equal(got[ROOM], '\n');
        free(got);
        free(msg);
    }
}

/* One character more than fits is cut, and ends in "...". */
static void one_over_is_cut(void **state)
{
    (void)state;
    char *msg = repeat('m', ROOM + 1, "\n");
    int rc;
    size_t len;
    char *got = log_line(&rc, &len, "%s", msg);
    assert_int_equal(rc, ALS_TRACE_LOG_LINE_MAX);
    assert_int_equal(len, ROOM + 1);
    assert_memory_equal(got + ROOM - 3, "...\n", 4);
    assert_int_equal(got[ROOM - 4], 'm');
    free(got);
    free(msg);
}

/* NUL, ESC, DEL and the other control characters come out as \xNN; tab
 * stays; newlines inside the message are spaces (documented before). */
static void control_characters_are_escaped(void **state)
{
    (void)state;
    int rc;
    size_t len;
    char *got = log_line(&rc, &len, "a%cb\x1b[31mred\x7f\x01\x1f\tz\nw\v\f\x9b", 0);
    const char want[] = "a\\x00b\\x1b[31mred\\x7f\\x01\\x1f\tz w\\x0b\\x0c\x9b\n";
    assert_int_equal(len, sizeof want - 1);
    assert_memory_equal(got, want, sizeof want - 1);
    free(got);
}

/* An escape that would cross the end of the line is not split: the line
 * is cut before it and ends in "...", and nothing raw gets through. */
static void escape_at_the_cut(void **state)
{
    (void)state;
    for (size_t before = ROOM - 6; before <= ROOM; before++) {
        char *msg = repeat('m', before, "\x1b\x1b");
        int rc;
        size_t len;
        char *got = log_line(&rc, &len, "%s", msg);
        assert_true(len <= ROOM + 1);
        for (size_t i = 0; i + 1 < len; i++)
            if ((unsigned char)got[i] < 0x20)
                fail_msg("%zu m's: raw control byte 0x%02x at %zu", before,
                         (unsigned char)got[i], i);
        bool whole = before + 8 <= ROOM;
        if (whole) {
            assert_int_equal(len, before + 9);
            assert_memory_equal(got + before, "\\x1b\\x1b\n", 9);
        } else {
            assert_memory_equal(got + len - 4, "...\n", 4);
            /* Only whole escapes before the "...". */
            size_t body = len - 4;
            assert_true(body >= before || got[body - 1] == 'm');
            if (body > before)
                assert_int_equal((body - before) % 4, 0);
        }
        free(got);
        free(msg);
    }
}

/* ---- tracestate ------------------------------------------------------ */

/* The source may be the destination itself, or a part of it. */
static void set_state_from_own_tracestate(void **state)
{
    (void)state;
    als_trace_ctx c;
    memset(&c, 0, sizeof c);
    assert_int_equal(als_trace_set_state(&c, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"), 0);
    assert_int_equal(als_trace_set_state(&c, c.tracestate), 0);
    assert_string_equal(c.tracestate, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");

    assert_int_equal(als_trace_set_state(&c, c.tracestate + 22), 0);
    assert_string_equal(c.tracestate, "congo=t61rcWkgMzE");

    /* Trimmed in place: the copy overlaps its source. */
    strcpy(c.tracestate, " \t a=1,b=2 \t");
    assert_int_equal(als_trace_set_state(&c, c.tracestate), 0);
    assert_string_equal(c.tracestate, "a=1,b=2");

    /* Exactly the maximum: three valid members (values are at most 256
     * characters) of 202 + 1 + 202 + 1 + 106 characters. */
    memset(c.tracestate, 'v', sizeof c.tracestate);
    memcpy(c.tracestate, "a=", 2);
    memcpy(c.tracestate + 202, ",b=", 3);
    memcpy(c.tracestate + 405, ",c=", 3);
    c.tracestate[ALS_TRACESTATE_MAX] = '\0';
    char want[ALS_TRACESTATE_MAX + 1];
    memcpy(want, c.tracestate, sizeof want);
    assert_int_equal(als_trace_set_state(&c, c.tracestate), 0);
    assert_string_equal(c.tracestate, want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exact_fit_with_trailing_newline_is_not_cut),
        cmocka_unit_test(one_over_is_cut),
        cmocka_unit_test(control_characters_are_escaped),
        cmocka_unit_test(escape_at_the_cut),
        cmocka_unit_test(set_state_from_own_tracestate),
    };
    return cmocka_run_group_tests_name("trace_log", tests, NULL, NULL);
}
