/* stress/fuzz_wire.c: a libFuzzer target for the wire formats: the
 * `tracestate` and `baggage` parsers and formatters, and the propagator
 * that combines repeated fields.
 *
 * Input: one byte choosing where to split the rest in two (two header
 * fields), then the text. For each input:
 *  - tracestate: als_trace_set_state on the text; what it accepts is a
 *    fixed point (parsing its own output gives it back), at most
 *    ALS_TRACESTATE_MAX printable characters; the two fields through the
 *    propagator read the same as the text with a comma at the split;
 *  - baggage: parse, format, parse, format: the two formats are equal (parse
 *    ∘ format ∘ parse is stable), and when the first format kept every
 *    member, the second parse gives the same entries, byte for byte.
 * Parsers get exact-size copies without a NUL, so ASan sees any over-read.
 * It implements fuzz_api.h, so fuzz_driver.c runs it without libFuzzer. */
#include "fuzz_api.h"

#include "als.h"
#include "als_trace.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dup_n(const uint8_t *p, size_t n, bool nul)
{
    char *s = malloc(n + nul + (n + nul == 0));
    if (!s)
        abort();
    memcpy(s, p, n);
    if (nul)
        s[n] = '\0';
    return s;
}

static void check_tracestate(const uint8_t *t, size_t n, size_t cut)
{
    char *s = dup_n(t, n, true);
    als_trace_ctx c, d;
    int rc = als_trace_set_state(&c, s);
    fuzz_observe(rc == 0 || (rc == ALS_EINVAL && c.tracestate[0] == '\0'), "set_state rc %d", rc);
    size_t len = strlen(c.tracestate);
    fuzz_observe(len <= ALS_TRACESTATE_MAX, "tracestate of %zu characters", len);
    for (size_t i = 0; i < len; i++)
        fuzz_observe(c.tracestate[i] >= 0x20 && c.tracestate[i] <= 0x7e, "byte %02x kept",
                (unsigned char)c.tracestate[i]);
    fuzz_observe(als_trace_set_state(&d, c.tracestate) == 0 && strcmp(c.tracestate, d.tracestate) == 0,
            "not a fixed point: \"%s\" -> \"%s\"", c.tracestate, d.tracestate);

    /* Two fields through the propagator = one field with a comma. Only
     * when the text holds no NUL (a field cannot). */
    if (strlen(s) == n) {
        char *a = dup_n(t, cut, true), *b = dup_n(t + cut, n - cut, true);
        char *joined = malloc(n + 2);
        if (!joined)
            abort();
        memcpy(joined, a, cut);
        joined[cut] = ',';
        memcpy(joined + cut + 1, b, n - cut + 1);
        const als_header h[] = {{"traceparent", "00-12345678901234567890123456789012-1234567890123456-01"},
                                {"tracestate", a}, {"TraceState", b}, {NULL, NULL}};
        als_trace_ctx e;
        fuzz_observe(als_propagator_extract(als_headers_get, (void *)h, &e, NULL) == 1, "extract");
        als_trace_set_state(&d, joined);
        fuzz_observe(strcmp(e.tracestate, d.tracestate) == 0, "fields \"%s\" + \"%s\" -> \"%s\", not \"%s\"",
                a, b, e.tracestate, d.tracestate);
        free(a);
        free(b);
        free(joined);
    }
    free(s);
}

static bool same_entries(const als_baggage *x, const als_baggage *y)
{
    if (als_baggage_count(x) != als_baggage_count(y))
        return false;
    for (size_t i = 0; i < als_baggage_count(x); i++) {
        als_baggage_entry a, b;
        als_baggage_entry_at(x, i, &a);
        als_baggage_entry_at(y, i, &b);
        if (strcmp(a.key, b.key) != 0 || a.value_len != b.value_len
            || memcmp(a.value, b.value, a.value_len) != 0
            || strcmp(a.properties, b.properties) != 0)
            return false;
    }
    return true;
}

static void check_baggage(const uint8_t *t, size_t n)
{
    static char f1[ALS_BAGGAGE_BYTES_MAX + 1], f2[ALS_BAGGAGE_BYTES_MAX + 1];
    char *s = dup_n(t, n, false);
    als_baggage *b1 = NULL, *b2 = NULL;
    int rc = als_baggage_parse(NULL, s, n, &b1);
    fuzz_observe(rc >= 0 && (size_t)rc == als_baggage_count(b1), "parse rc %d", rc);
    int l1 = als_baggage_format(b1, f1, sizeof f1);
    fuzz_observe(l1 >= 0 && (size_t)l1 == strlen(f1) && l1 <= ALS_BAGGAGE_BYTES_MAX, "format %d", l1);
    char *s1 = dup_n((const uint8_t *)f1, (size_t)l1, false);
    als_baggage_parse(NULL, s1, (size_t)l1, &b2);
    int l2 = als_baggage_format(b2, f2, sizeof f2);
    fuzz_observe(l1 == l2 && strcmp(f1, f2) == 0, "format(parse(\"%s\")) = \"%s\"", f1, f2);
    /* When every member fits the header (our own reckoning of the encoded
     * size), nothing may change on the way. */
    size_t need = 0;
    for (size_t i = 0; i < als_baggage_count(b1); i++) {
        als_baggage_entry e;
        als_baggage_entry_at(b1, i, &e);
        need += (i > 0) + strlen(e.key) + 1 + (e.properties[0] ? 1 + strlen(e.properties) : 0);
        for (size_t j = 0; j < e.value_len; j++) {
            unsigned char c = (unsigned char)e.value[j];
            bool octet = c >= 0x21 && c <= 0x7e && !strchr("\"\\,;%", c);
            need += octet ? 1 : 3;
        }
    }
    if (need <= ALS_BAGGAGE_BYTES_MAX)
        fuzz_observe(same_entries(b1, b2), "entries changed through \"%s\"", f1);
    else
        fuzz_observe(als_baggage_count(b2) < als_baggage_count(b1), "%zu bytes, nothing dropped", need);
    als_baggage_release(b1);
    als_baggage_release(b2);
    free(s);
    free(s1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fuzz_program_started();
    const uint8_t *t = data + 1;
    size_t n = size - 1;
    size_t cut = n ? data[0] % (n + 1) : 0;
    check_tracestate(t, n, cut);
    check_baggage(t, n);
    return 0;
}
