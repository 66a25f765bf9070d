/* Extract and inject W3C Trace Context and Baggage through any carrier
 * (include/als_trace.h), as OpenTelemetry's TextMapPropagator does: the
 * carrier is read and written only through the caller's callbacks. The
 * string helpers als_trace_extract (trace.c) is a wrapper over these. */
#include "als_trace.h"
#include "internal.h"

#include <string.h>
#include <strings.h>

const char *als_headers_get(void *carrier, const char *name, size_t index, size_t *len)
{
    const als_header *h = carrier;
    for (; h && name && h->name; h++) {
        /* A NULL value is an absent field (als_trace_extract's NULLs). */
        if (!h->value || strcasecmp(h->name, name) != 0)
            continue;
        if (index-- == 0) {
            if (len)
                *len = strlen(h->value);
            return h->value;
        }
    }
    return NULL;
}

/* The combined `tracestate` fields (RFC 9110, § Field Order: in order, as
 * if joined by commas) into out->tracestate; "" when invalid. */
static void extract_state(als_getter_fn get, void *carrier, als_trace_ctx *out)
{
    struct als__ts l;
    als__ts_init(&l);
    size_t len;
    const char *v;
    for (size_t i = 0; (v = get(carrier, "tracestate", i, &len)) != NULL; i++)
        als__ts_add(&l, v, len);
    (void)als__ts_finish(&l, out->tracestate);
}

static int extract_baggage(als_getter_fn get, void *carrier, als_baggage **baggage)
{
    als_baggage *acc = NULL;
    size_t len;
    const char *v;
    for (size_t i = 0; (v = get(carrier, "baggage", i, &len)) != NULL; i++) {
        als_baggage *next = NULL;
        int rc = als_baggage_parse(acc, v, len, &next);
        if (rc < 0) {
            als_baggage_release(acc);
            *baggage = NULL;
            return rc;
        }
        if (next) {          /* else nothing valid here and acc was empty */
            als_baggage_release(acc);
            acc = next;
        }
    }
    *baggage = acc;
    return 0;
}

int als_propagator_extract(als_getter_fn get, void *carrier, als_trace_ctx *out,
                           als_baggage **baggage)
{
    if (baggage)
        *baggage = NULL;
    if (!get || !out)
        return ALS_EINVAL;
    size_t len = 0, len2;
    const char *tp = get(carrier, "traceparent", 0, &len);
    als_trace_ctx remote;
    int rc = 0;
    /* Two traceparent fields are as good as none: which would we trust?
     * (the spec's test suite expects a restart). */
    if (tp && !get(carrier, "traceparent", 1, &len2)
        && als_trace_parse_n(tp, len, &remote) == 0) {
        memcpy(out->trace_id, remote.trace_id, sizeof out->trace_id);
        memcpy(out->parent_id, remote.span_id, sizeof out->parent_id);
        als_trace_random_span_id(out->span_id);
        out->flags = remote.flags;
        extract_state(get, carrier, out);  /* its failure leaves the trace be */
        rc = 1;
    } else {
        /* § Tracestate Header: without a valid traceparent, tracestate
         * MUST NOT be parsed. */
        als_trace_new_root(out);
    }
    if (baggage) {
        int brc = extract_baggage(get, carrier, baggage);
        if (brc < 0)
            return brc;
    }
    return rc;
}

int als_propagator_inject_ctx(const als_trace_ctx *ctx, const als_baggage *bag,
                              als_setter_fn set, void *carrier)
{
    if (!set)
        return ALS_EINVAL;
    int count = 0, rc;
    if (als_trace_valid(ctx)) {
        char tp[ALS_TRACEPARENT_SIZE];
        als_trace_format(ctx, tp, sizeof tp);
        if ((rc = set(carrier, "traceparent", tp)) < 0)
            return rc;
        count++;
        /* A caller-filled context may hold anything: only a valid list,
         * re-read, goes out (never a CR LF into someone's headers). */
        struct als__ts l;
        char st[ALS_TRACESTATE_MAX + 1];
        als__ts_init(&l);
        als__ts_add(&l, ctx->tracestate, strnlen(ctx->tracestate, ALS_TRACESTATE_MAX));
        if (als__ts_finish(&l, st) == 0 && st[0]) {
            if ((rc = set(carrier, "tracestate", st)) < 0)
                return rc;
            count++;
        }
    }
    char buf[ALS_BAGGAGE_BYTES_MAX + 1];
    if (bag && als_baggage_format(bag, buf, sizeof buf) > 0) {
        if ((rc = set(carrier, "baggage", buf)) < 0)
            return rc;
        count++;
    }
    return count;
}

int als_propagator_inject(als_setter_fn set, void *carrier)
{
    return als_propagator_inject_ctx(als_trace_get(), als_baggage_current(), set, carrier);
}

/* The two-field form of als_propagator_extract (a NULL value is no field). */
int als_trace_extract(const char *traceparent, const char *tracestate,
                      als_trace_ctx *out)
{
    const als_header h[] = {{"traceparent", traceparent}, {"tracestate", tracestate},
                            {NULL, NULL}};
    return als_propagator_extract(als_headers_get, (void *)h, out, NULL);
}
