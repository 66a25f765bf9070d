/* forward: the trace server's calls to other services (POST /forward).
 *
 * The body is a JSON array of {"url": "...", "arguments": <any JSON>}; each
 * element, in order, becomes an HTTP POST of `arguments` to `url` from a
 * child span of the current trace context, with traceparent, tracestate and
 * baggage injected (als_propagator_inject). This is the contract of the
 * W3C Trace Context test suite's service, and what a real service does
 * when it calls downstream. */
#ifndef TRACE_SERVER_FORWARD_H
#define TRACE_SERVER_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Whether this build can make calls (it has libcurl). */
bool forward_available(void);

/* Process-wide set-up and tear-down (curl_global_*), before and after any
 * thread calls forward_run. */
bool forward_init(void);
void forward_cleanup(void);

/* Runs the calls of `body` (len bytes) in the current trace context and
 * writes a JSON array of their outcomes to `out`:
 * [{"span_id": <the call's span>, "status": <HTTP status, 0 on failure>}].
 * Each call logs a line with `req=<req_id>`. Returns the number of calls
 * made, or -1 (nothing written) when `body` is not such an array. */
int forward_run(const char *body, size_t len, const char *req_id, FILE *out);

/* Writes `s` (n bytes) as a JSON string, quotes included. */
void json_string(FILE *out, const char *s, size_t n);

#endif
