/** @file
 * libals trace: W3C Trace Context propagation on top of async-local storage.
 *
 * A service receives a `traceparent` header, serves the request on several
 * threads, logs with the trace id, and calls downstream with a child
 * `traceparent`. This module gives it everything for that:
 *
 *  - parsing, validating and formatting `traceparent` and `tracestate`
 *    (W3C Trace Context Level 2, https://www.w3.org/TR/trace-context-2/):
 *    list-members validated, combined over repeated fields, truncated by
 *    whole members, and the vendor mutations;
 *  - W3C Baggage (https://www.w3.org/TR/baggage/): immutable lists, and the
 *    current baggage beside the current trace context;
 *  - a propagator in OpenTelemetry's manner: extract from and inject into
 *    any header collection through getter/setter callbacks, all three
 *    headers in one call (checked against OpenTelemetry JS by
 *    examples/trace_server/interop);
 *  - fast random trace and span ids (per-thread generator, no lock);
 *  - a ready-made store holding the *current trace context*: run a function
 *    inside a context, start child spans, read the context anywhere below;
 *  - a logging helper prefixing each line with `trace=<32 hex> span=<16 hex>`;
 *  - inject (current context -> outgoing `traceparent`) and extract
 *    (incoming header -> context, or a new trace when it is missing or
 *    invalid, as the spec says).
 *
 * The trace context lives in an ordinary store (als_trace_store()), so it
 * flows wherever libals carries a context: nested calls, snapshots, bound
 * functions, resources, als_thread_create and pool tasks. Nothing
 * trace-specific is needed in the pool.
 *
 * Ownership
 * ---------
 * als_trace_ctx is a plain value: callers own theirs (usually on the
 * stack) and may copy it with `=`. Functions that bind a context
 * (als_trace_run, als_trace_run_span, als_trace_enter) bind a private heap
 * copy; the store owns those copies and frees each exactly once, when the
 * last scope, snapshot, bound function, resource, thread or queued task
 * holding it lets go (als_options.destroy). So a caller may pass a context
 * on its stack and return at once, even if pool tasks inside still run.
 *
 * Threads: every function is thread-safe. No hot path takes a lock: the
 * only ones taken are a thread's one-time generator seeding and the
 * store's one-time creation (als_new).
 */
#ifndef ALS_TRACE_H
#define ALS_TRACE_H

#include "als.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @defgroup trace Trace context
 *  @{ */

#define ALS_TRACE_ID_SIZE 16        /**< trace-id bytes */
#define ALS_SPAN_ID_SIZE 8          /**< parent-id / span-id bytes */
#define ALS_TRACE_ID_HEX 32         /**< trace-id hex digits */
#define ALS_SPAN_ID_HEX 16          /**< span-id hex digits */
/** Length of a version-00 `traceparent` value. */
#define ALS_TRACEPARENT_LEN 55
/** Buffer size for a formatted `traceparent` (the value and its NUL). */
#define ALS_TRACEPARENT_SIZE (ALS_TRACEPARENT_LEN + 1)
/** Longest `traceparent` value accepted (a higher version may carry more
 *  fields after the four we know). Anything longer is "prohibitively
 *  large" in the spec's words and is rejected. */
#define ALS_TRACEPARENT_MAX 512
/** Longest `tracestate` kept, in characters (the spec asks to propagate at
 *  least 512). Longer ones are cut by whole members; see als_trace_set_state. */
#define ALS_TRACESTATE_MAX 512
/** The `sampled` bit of trace-flags. */
#define ALS_TRACE_FLAG_SAMPLED 0x01u
/** The `random-trace-id` bit of trace-flags (Trace Context Level 2): kept
 *  from an incoming `traceparent` and passed on with the same trace id. */
#define ALS_TRACE_FLAG_RANDOM 0x02u
/** The flags this library knows; the others are reserved and sent as zero. */
#define ALS_TRACE_FLAGS_KNOWN (ALS_TRACE_FLAG_SAMPLED | ALS_TRACE_FLAG_RANDOM)
/** Most `tracestate` list-members (Level 2). */
#define ALS_TRACESTATE_MEMBERS_MAX 32
/** Longest `tracestate` key, in characters. */
#define ALS_TRACESTATE_KEY_MAX 256
/** Longest `tracestate` value, in characters. */
#define ALS_TRACESTATE_VALUE_MAX 256

/** One position in a distributed trace: which trace, which span (the
 *  current operation), which span caused it, and what to pass along.
 *  A context is *valid* when trace_id and span_id are both non-zero; every
 *  function that produces one produces a valid one, or reports an error and
 *  leaves an all-zero (invalid) context. */
typedef struct als_trace_ctx {
    uint8_t trace_id[ALS_TRACE_ID_SIZE];   /**< the whole trace */
    uint8_t span_id[ALS_SPAN_ID_SIZE];     /**< this operation */
    /** The span that caused this one (the caller's span-id for an extracted
     *  context, the enclosing span for a child); all zero for a new root
     *  and for what als_trace_parse returns. Not sent on the wire. */
    uint8_t parent_id[ALS_SPAN_ID_SIZE];
    uint8_t flags;                         /**< trace-flags (ALS_TRACE_FLAG_*) */
    /** The `tracestate` list, NUL-terminated, "" if none: its members
     *  byte-exact, joined by commas (als_trace_set_state). Always printable
     *  ASCII: safe to log and to send as a header. */
    char tracestate[ALS_TRACESTATE_MAX + 1];
} als_trace_ctx;

/* ---- ids ------------------------------------------------------------- */

/** Fills @p out with a random, non-zero trace id. Uses a per-thread
 *  xoshiro256** generator seeded from getrandom(2) on the thread's first
 *  use (and again in a child after fork), so no lock and no system call on
 *  the hot path. Not for secrets. NULL: no-op. */
ALS_API void als_trace_random_trace_id(uint8_t out[ALS_TRACE_ID_SIZE]);

/** Fills @p out with a random, non-zero span id; as above. NULL: no-op. */
ALS_API void als_trace_random_span_id(uint8_t out[ALS_SPAN_ID_SIZE]);

/** Writes @p n bytes of @p id as 2n lower-case hex digits and a NUL into
 *  @p out (which must hold 2n + 1 chars). Returns 2n, or ALS_EINVAL for a
 *  NULL argument or an @p n whose 2n does not fit an int (nothing
 *  written). */
ALS_API int als_trace_hex(char *out, const uint8_t *id, size_t n);

/** Whether @p ctx is valid (non-NULL, non-zero trace and span ids): 1 or 0. */
ALS_API int als_trace_valid(const als_trace_ctx *ctx);

/** A new root: random trace and span ids, no parent, flags =
 *  ALS_TRACE_FLAG_SAMPLED (this library logs every span it runs), empty
 *  tracestate. Returns 0 or ALS_EINVAL (NULL @p out). */
ALS_API int als_trace_new_root(als_trace_ctx *out);

/** A child span of @p parent: same trace id, flags and tracestate, a new
 *  random span id, parent_id = parent's span id. @p out may be @p parent.
 *  Returns 0, or ALS_EINVAL if either is NULL or @p parent is invalid
 *  (@p out is then zeroed unless it is @p parent). */
ALS_API int als_trace_child(const als_trace_ctx *parent, als_trace_ctx *out);

/* ---- the wire format --------------------------------------------------- */

/** Parses a `traceparent` value of @p len bytes (no NUL needed; NULs inside
 *  are ordinary invalid characters) per W3C Trace Context level 1:
 *
 *  - version 00: exactly `00-<32 hex>-<16 hex>-<2 hex>`, 55 characters;
 *  - a higher version (01..fe), by the spec's forward-compatibility rule:
 *    at least 55 characters, the same first four fields, then either the
 *    end or `-` followed by fields we do not interpret (they must be
 *    visible ASCII, 0x21-0x7e);
 *  - rejected: version ff, hex that is not lower case, all-zero trace-id or
 *    parent-id, a field of the wrong length, any other character, and
 *    values longer than ALS_TRACEPARENT_MAX.
 *  Spaces and tabs around the value (HTTP's optional whitespace) are
 *  ignored.
 *
 *  On success @p out gets trace_id, span_id = the header's parent-id (the
 *  caller's span), parent_id = 0, flags (the known bits,
 *  ALS_TRACE_FLAGS_KNOWN: the others are reserved), tracestate "" and the call returns
 *  0. Otherwise it returns ALS_EINVAL and, if @p out is not NULL, zeroes it
 *  (an invalid context): invalid input never yields a usable context.
 *  A NULL @p s is invalid whatever @p len. */
ALS_API int als_trace_parse_n(const char *s, size_t len, als_trace_ctx *out);

/** als_trace_parse_n on a NUL-terminated string. */
ALS_API int als_trace_parse(const char *s, als_trace_ctx *out);

/** Formats @p ctx as a version-00 `traceparent`:
 *  `00-<trace_id>-<span_id>-<flags>` (55 characters and a NUL; the reserved
 *  flag bits are written as 0) into @p buf
 *  of @p size bytes. The span id goes out as the parent-id: the receiver's
 *  parent is our span. Returns ALS_TRACEPARENT_LEN, or ALS_EINVAL (NULL
 *  argument, @p size < ALS_TRACEPARENT_SIZE, or an invalid @p ctx), in which
 *  case @p buf, if it has room, holds "". */
ALS_API int als_trace_format(const als_trace_ctx *ctx, char *buf, size_t size);

/* ---- tracestate (W3C Trace Context Level 2, § Tracestate Header) --------------
 * ctx->tracestate holds the list in a canonical form: the list-members,
 * each byte-exact as received minus the optional whitespace around it,
 * joined by single commas, empty members gone. So it can be sent as it is,
 * and the functions below read and edit it in place. */

/** Parses one `tracestate` field value (NUL-terminated; NULL or "" is an
 *  empty list) into ctx->tracestate, replacing what was there. The whole
 *  value is rejected (ctx->tracestate becomes "", ALS_EINVAL) when a
 *  list-member is malformed: a key that is not `(lcalpha / DIGIT)
 *  0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@")` (this covers
 *  simple and multi-tenant `tenant@system` keys), a value that is empty,
 *  longer than 256 characters, or holds a character outside 0x20-0x7e or a
 *  comma or `=`; or when there are more than 32 list-members. A key that
 *  repeats is kept once, at its first place (the spec lets a vendor drop
 *  duplicates). Spaces and tabs around members are dropped; a value's
 *  leading spaces are kept. If the result is longer than
 *  ALS_TRACESTATE_MAX, whole members are removed: those over 128
 *  characters first, right to left, then from the right. @p tracestate may
 *  point into ctx->tracestate. Returns 0; ALS_EINVAL as above or for a
 *  NULL @p ctx. Repeated `tracestate` header fields are combined by
 *  als_propagator_extract. */
ALS_API int als_trace_set_state(als_trace_ctx *ctx, const char *tracestate);

/** Copies the value of list-member @p key of ctx->tracestate and a NUL
 *  into @p buf of @p size bytes. Returns the value's length (>= 1), 0 when
 *  the key is absent (@p buf holds ""), ALS_EINVAL for a NULL argument, a
 *  @p size too small for the value (buf holds "") or a ctx->tracestate that
 *  is not a valid list. */
ALS_API int als_trace_state_get(const als_trace_ctx *ctx, const char *key, char *buf,
                                size_t size);

/** The mutation a vendor makes to `tracestate` (Level 2): sets
 *  @p key to @p value and moves the member to the left end; the other
 *  members keep their order. If that makes 33 members, the right-most is
 *  removed; if the list grows beyond ALS_TRACESTATE_MAX, it is cut as in
 *  als_trace_set_state (the new member, at the left, goes last). Returns 0,
 *  or ALS_EINVAL (nothing changed) for a NULL argument, a key or value the
 *  grammar above rejects, or an invalid ctx->tracestate. */
ALS_API int als_trace_state_put(als_trace_ctx *ctx, const char *key, const char *value);

/** Removes list-member @p key. Returns 1 if it was there, 0 if not,
 *  ALS_EINVAL for a NULL argument or an invalid ctx->tracestate. */
ALS_API int als_trace_state_remove(als_trace_ctx *ctx, const char *key);

/** The receiving side of a call: from the incoming `traceparent` (NULL if
 *  the request had none) and `tracestate` (NULL if none) makes the context
 *  of the span that serves the request. A wrapper over
 *  als_propagator_extract, which also takes repeated fields and baggage.
 *
 *  - A valid @p traceparent continues that trace: same trace id and flags,
 *    parent_id = the header's parent-id, a new random span id, and
 *    @p tracestate kept (see als_trace_set_state; a bad one is dropped
 *    without affecting the rest). Returns 1.
 *  - A missing or invalid one starts a new trace, as the spec says
 *    (als_trace_new_root); @p tracestate is then ignored. Returns 0.
 *  ALS_EINVAL for a NULL @p out. Never fails otherwise. */
ALS_API int als_trace_extract(const char *traceparent, const char *tracestate,
                              als_trace_ctx *out);

/** The calling side: formats the current context (als_trace_get) as the
 *  `traceparent` to send, into @p buf of @p size bytes. Send
 *  als_trace_get()->tracestate as `tracestate` if it is not empty.
 *  Returns ALS_TRACEPARENT_LEN; 0 when there is no current context (@p buf
 *  holds "" and the caller should send no header); ALS_EINVAL for a NULL
 *  @p buf or @p size < ALS_TRACEPARENT_SIZE. */
ALS_API int als_trace_inject(char *buf, size_t size);

/* ---- the current trace context ---------------------------------------- */

/** The store holding the current trace context, created on first use by
 *  any function of this module (lock-free; racing first calls agree on one
 *  store). It owns the contexts bound to it (see Ownership above) and
 *  lives until the process exits: do not als_free it. Use it with the
 *  generic API if needed (als_exit(als_trace_store(), ...) runs code
 *  outside any trace). Returns NULL only if creating it failed for lack of
 *  memory; a later call tries again. */
ALS_API als_t *als_trace_store(void);

/** The current trace context, or NULL outside any. Borrowed: valid until
 *  the innermost scope that bound it ends (or, at a thread's top level,
 *  until als_trace_enter replaces it); copy it (`*ctx`) to keep it. No
 *  allocation, no lock. */
ALS_API const als_trace_ctx *als_trace_get(void);

/** Copies the current trace context into @p out. Returns 1 if there is one,
 *  0 if not (@p out zeroed), ALS_EINVAL for a NULL @p out. */
ALS_API int als_trace_current(als_trace_ctx *out);

/** Runs fn(arg) with @p ctx (copied; see Ownership) as the current trace
 *  context, then restores the previous one, like als_run. Stores fn's
 *  result in @p *result when @p result is not NULL. Returns 0 when fn ran;
 *  otherwise fn was not called and the call returns ALS_EINVAL (NULL @p ctx
 *  or @p fn, invalid @p ctx) or ALS_ENOMEM (copy or binding failed). */
ALS_API int als_trace_run(const als_trace_ctx *ctx, als_fn fn, void *arg,
                          void **result);

/** Starts a child span of the current context (a new root when there is
 *  none) and runs fn(arg) in it; same results as als_trace_run. When
 *  @p span is not NULL it receives a copy of the new span's context (also
 *  when fn was not called). */
ALS_API int als_trace_run_span(als_fn fn, void *arg, void **result,
                               als_trace_ctx *span);

/** Makes a copy of @p ctx the current trace context for the rest of the
 *  current scope (als_enter_with), e.g. at the top of a pool task or a
 *  thread. Returns 0, ALS_EINVAL (NULL or invalid @p ctx) or ALS_ENOMEM
 *  (nothing changed). */
ALS_API int als_trace_enter(const als_trace_ctx *ctx);

/* ---- baggage (W3C Baggage, https://www.w3.org/TR/baggage/) -------------
 * Application key/value pairs that travel with a request: an immutable,
 * reference-counted list (als_baggage) bound in a store of its own beside
 * the trace context, so it flows into nested calls, snapshots, threads and
 * pool tasks exactly as the trace does. Changing it in a scope binds a new
 * list there (copy-on-write): the caller's and its siblings' lists never
 * change. */

/** Most list-members of a `baggage` header that this library keeps and
 *  sends (the spec's minimum: § Limits). */
#define ALS_BAGGAGE_MEMBERS_MAX 64
/** Most bytes of a `baggage` header kept and sent (§ Limits). */
#define ALS_BAGGAGE_BYTES_MAX 8192

/** An immutable baggage list. NULL is the empty list everywhere. */
typedef struct als_baggage als_baggage;

/** One list-member, as als_baggage_entry gives it. Every pointer is into
 *  the list and NUL-terminated, valid while the list is. */
typedef struct als_baggage_entry {
    const char *key;          /**< an RFC 7230 token */
    const char *value;        /**< decoded (percent-decoding undone): any bytes */
    size_t value_len;         /**< may hold NULs: use this, not strlen */
    /** The member's properties as received, e.g. `k1=v1;k2` (no leading
     *  `;`), "" if none. Opaque: kept and sent byte-exact. */
    const char *properties;
} als_baggage_entry;

/** Parses one `baggage` field value of @p len bytes into a new list in
 *  @p *out (NULL when nothing valid was found). Each list-member is
 *  `key OWS "=" OWS value *(OWS ";" OWS property)`: a member whose key is
 *  not a token, whose value holds a character outside baggage-octet or a
 *  `%` not followed by two hex digits, or whose properties break the
 *  grammar is dropped, the others kept in order (duplicates too). Values
 *  are percent-decoded; decoded bytes that are not UTF-8 become U+FFFD.
 *  At most ALS_BAGGAGE_MEMBERS_MAX members and ALS_BAGGAGE_BYTES_MAX
 *  bytes of them (counted as received, with separating commas) are kept:
 *  parsing stops at the member that would cross either. @p prev, if not
 *  NULL, is a list to append to (repeated `baggage` fields combine in
 *  order; the limits count them together); it is not changed. Returns the
 *  number of members in @p *out, ALS_EINVAL (NULL @p out, or NULL @p s
 *  with @p len > 0) or ALS_ENOMEM (*out NULL). */
ALS_API int als_baggage_parse(const als_baggage *prev, const char *s, size_t len,
                              als_baggage **out);

/** Writes @p b as a `baggage` field value and a NUL into @p buf of @p size
 *  bytes: `key=value;properties` joined by `,`, values percent-encoded
 *  (every byte outside baggage-octet, and `%`, as %XX). Whole members
 *  only: a member that would take the value past ALS_BAGGAGE_BYTES_MAX, or
 *  past the 64th, is left out. Returns the length (0 for an empty list),
 *  or ALS_EINVAL for a NULL @p buf or a @p size too small for the value
 *  (@p buf then holds "" if @p size > 0). ALS_BAGGAGE_BYTES_MAX + 1 bytes
 *  always suffice. */
ALS_API int als_baggage_format(const als_baggage *b, char *buf, size_t size);

/** Number of members of @p b (0 for NULL). */
ALS_API size_t als_baggage_count(const als_baggage *b);

/** Member @p i of @p b into @p out. Returns 0, or ALS_EINVAL (NULL
 *  argument, @p i out of range). */
ALS_API int als_baggage_entry_at(const als_baggage *b, size_t i, als_baggage_entry *out);

/** The value of the first member named @p key in @p b, or NULL; its length
 *  into @p *len when @p len is not NULL. */
ALS_API const char *als_baggage_find(const als_baggage *b, const char *key, size_t *len);

/** A new list: @p b with every member named @p key removed and
 *  `key=value;properties` appended (@p value of @p value_len bytes, any
 *  bytes; @p properties NULL or "" for none, otherwise a `;`-separated
 *  list of `key` or `key=value` properties whose values are baggage-octets).
 *  @p b is not changed. Returns 0 and the list in @p *out, ALS_EINVAL
 *  (NULL @p out or @p key, @p key not a token, bad @p properties, or the
 *  list would exceed ALS_BAGGAGE_MEMBERS_MAX) or ALS_ENOMEM. */
ALS_API int als_baggage_with(const als_baggage *b, const char *key, const char *value,
                             size_t value_len, const char *properties, als_baggage **out);

/** A new list: @p b without the members named @p key (NULL if none is
 *  left). Returns 0, ALS_EINVAL (NULL @p out or @p key) or ALS_ENOMEM. */
ALS_API int als_baggage_without(const als_baggage *b, const char *key, als_baggage **out);

/** Takes a reference to @p b (returned; NULL gives NULL). */
ALS_API als_baggage *als_baggage_retain(const als_baggage *b);

/** Drops a reference; the last one frees the list. NULL: no-op. */
ALS_API void als_baggage_release(als_baggage *b);

/** The store holding the current baggage (created on first use, lives
 *  until exit; see als_trace_store). NULL only for lack of memory. */
ALS_API als_t *als_baggage_store(void);

/** The current baggage, or NULL for none. Borrowed like als_trace_get. */
ALS_API const als_baggage *als_baggage_current(void);

/** The value of @p key in the current baggage, or NULL (als_baggage_find). */
ALS_API const char *als_baggage_get(const char *key, size_t *len);

/** Sets @p key (NUL-terminated @p value) in the current baggage for the
 *  rest of the current scope (als_baggage_with, then als_enter_with):
 *  enclosing scopes and other tasks keep theirs. Returns 0, ALS_EINVAL or
 *  ALS_ENOMEM (nothing changed). */
ALS_API int als_baggage_set(const char *key, const char *value, const char *properties);

/** Removes @p key from the current baggage for the rest of the current
 *  scope. Returns 0, ALS_EINVAL or ALS_ENOMEM (nothing changed). */
ALS_API int als_baggage_remove(const char *key);

/** Runs fn(arg) with @p b (NULL: no baggage) as the current baggage, like
 *  als_trace_run: 0 when fn ran (its result in @p *result if not NULL),
 *  ALS_EINVAL (NULL @p fn) or ALS_ENOMEM. */
ALS_API int als_baggage_run(const als_baggage *b, als_fn fn, void *arg, void **result);

/** Makes @p b the current baggage for the rest of the current scope.
 *  Returns 0 or ALS_ENOMEM (nothing changed). */
ALS_API int als_baggage_enter(const als_baggage *b);

/* ---- propagation through any carrier ------------------------------------
 * OpenTelemetry's TextMapPropagator for W3C Trace Context and Baggage in one
 * call each way: the caller adapts its header collection (HTTP headers, a
 * message's properties...) with a getter or a setter callback. */

/** Getter: the @p index-th (0-based, in the order received) value of the
 *  field named @p name, with its length in @p *len; NULL when there is no
 *  such one. @p name is given in lower case; a carrier whose names have
 *  any case must compare case-insensitively (als_headers_get does). The
 *  value need not be NUL-terminated and must stay valid during the
 *  extract call. */
typedef const char *(*als_getter_fn)(void *carrier, const char *name, size_t index,
                                     size_t *len);

/** Setter: adds field @p name (lower case) with the NUL-terminated
 *  @p value, valid only during the call (copy it). Returns 0, or a negative
 *  error that aborts the inject call. */
typedef int (*als_setter_fn)(void *carrier, const char *name, const char *value);

/** A ready-made carrier: an array of name/value pairs ending with a NULL
 *  name (e.g. collected from an HTTP library), read by als_headers_get. */
typedef struct als_header {
    const char *name;             /**< the field name, any case; NULL ends the array */
    const char *value;            /**< NUL-terminated; NULL: the pair is skipped */
} als_header;

/** An als_getter_fn over a `const als_header[]` (@p carrier): names compare
 *  ASCII case-insensitively, repeated fields come in array order. */
ALS_API const char *als_headers_get(void *carrier, const char *name, size_t index,
                                    size_t *len);

/** The receiving side, from any carrier: reads `traceparent`, `tracestate`
 *  and `baggage` through @p get.
 *
 *  - One valid `traceparent` continues that trace (as als_trace_extract:
 *    same trace id and flags, parent_id = the caller's span, a new span
 *    id) and returns 1; `tracestate` fields are combined in order (RFC
 *    9110 § Field Order) and parsed as als_trace_set_state; an invalid list
 *    is dropped, the trace kept.
 *  - None, an invalid one, or more than one `traceparent` field starts a
 *    new trace (als_trace_new_root) and drops `tracestate`; returns 0.
 *  - If @p baggage is not NULL it receives the combined `baggage` fields
 *    (als_baggage_parse; NULL if none), whatever traceparent was; the
 *    caller owns it (als_baggage_release).
 *  ALS_EINVAL for a NULL @p get or @p out; ALS_ENOMEM if the baggage could
 *  not be allocated (@p out is still filled, *baggage is NULL). */
ALS_API int als_propagator_extract(als_getter_fn get, void *carrier, als_trace_ctx *out,
                                   als_baggage **baggage);

/** The calling side, into any carrier: sets `traceparent` (and
 *  `tracestate` when not empty) from @p ctx, and `baggage` from @p bag
 *  when it formats to something. A NULL or invalid @p ctx sets no trace
 *  fields. Returns the number of fields set, or ALS_EINVAL (NULL @p set),
 *  or the setter's error. */
ALS_API int als_propagator_inject_ctx(const als_trace_ctx *ctx, const als_baggage *bag,
                                      als_setter_fn set, void *carrier);

/** als_propagator_inject_ctx with the current trace context and baggage,
 *  from a child span when calling out of a span is what you want: run the
 *  call in als_trace_run_span. */
ALS_API int als_propagator_inject(als_setter_fn set, void *carrier);

/* ---- logging ----------------------------------------------------------- */

/** Longest log line, newline included; longer lines are cut and end in
 *  "...\n" (after whole characters: an escape is never split). */
#define ALS_TRACE_LOG_LINE_MAX 1024
/** Length of the prefix als_trace_log_prefix writes:
 *  "trace=" 32 hex " span=" 16 hex. */
#define ALS_TRACE_PREFIX_LEN (6 + ALS_TRACE_ID_HEX + 6 + ALS_SPAN_ID_HEX)

/** Writes `trace=<32 hex> span=<16 hex>` for the current context (all
 *  zeros outside any: the spec's "no id", and it keeps lines fixed-width)
 *  and a NUL into @p buf of @p size bytes. Returns ALS_TRACE_PREFIX_LEN, or
 *  ALS_EINVAL (NULL @p buf, @p size <= ALS_TRACE_PREFIX_LEN). */
ALS_API int als_trace_log_prefix(char *buf, size_t size);

/** Sets the file descriptor log lines go to (initially 2, stderr); the
 *  caller keeps owning it. Returns the previous one, or ALS_EINVAL for a
 *  negative @p fd. */
ALS_API int als_trace_log_set_fd(int fd);

/** Writes one line: the prefix, a space, the printf-style message and a
 *  newline, with a single write(2), so lines from concurrent threads never
 *  interleave (pipes: lines up to PIPE_BUF, which ALS_TRACE_LOG_LINE_MAX
 *  is below; regular files: use O_APPEND when several processes share
 *  one). A trailing newline in the message (LF or CR LF) is dropped and
 *  does not count toward the line's length; newlines inside it are written
 *  as spaces so a message cannot forge a line of another trace. Other
 *  control characters (0x00-0x1f except tab, and 0x7f: NUL, ESC...) are
 *  written as four characters, a backslash, 'x' and two lower-case hex
 *  digits (ESC as `\x1b`), so a message cannot drive the terminal of
 *  whoever reads the log; a backslash itself is not escaped (the form is
 *  for safety, not a reversible encoding) and bytes from 0x80 up pass
 *  unchanged (UTF-8 text). Returns the bytes written, or ALS_EINVAL (NULL
 *  @p fmt, a formatting error, or the write failed). */
ALS_API int als_trace_log(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/** als_trace_log with a va_list. */
ALS_API int als_trace_logv(const char *fmt, va_list ap)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 0)))
#endif
    ;
/** @} */

#ifdef __cplusplus
}
#endif

#endif /* ALS_TRACE_H */
