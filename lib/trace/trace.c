/* W3C Trace Context propagation (include/als_trace.h).
 *
 * Built only on the public API, except for als__malloc/als__free (from
 * internal.h): going through the library's allocator lets test builds fail
 * the n-th allocation and prove the ALS_ENOMEM paths here, like everywhere
 * else in libals.
 *
 * The current trace context is simply the value of one ordinary store, so
 * every way libals carries a context (snapshots, bound functions,
 * resources, threads, pool tasks) carries the trace too. Values bound to
 * that store are heap copies the store owns (destroy = free), because a
 * capture inside a scope (a pool task, say) may outlive the caller's
 * stack copy.
 */
#include "als_trace.h"
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---- hex -------------------------------------------------------------- */

static const char hexdig[] = "0123456789abcdef";

static void hex_put(char *out, const uint8_t *id, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[id[i] >> 4];
        out[2 * i + 1] = hexdig[id[i] & 15];
    }
}

int als_trace_hex(char *out, const uint8_t *id, size_t n)
{
    if (!out || !id || n > (size_t)INT_MAX / 2)
        return ALS_EINVAL;
    hex_put(out, id, n);
    out[2 * n] = '\0';
    return (int)(2 * n);
}

/* Lower-case hex digit value, or -1: the spec's HEXDIGLC only. */
static inline int hexval(unsigned char c)
{
    if ((unsigned)(c - '0') < 10u)
        return c - '0';
    if ((unsigned)(c - 'a') < 6u)
        return c - 'a' + 10;
    return -1;
}

/* Decodes 2n lower-case hex digits into n bytes; false on any other char. */
static bool hex_get(uint8_t *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval((unsigned char)s[2 * i]);
        int lo = hexval((unsigned char)s[2 * i + 1]);
        if ((hi | lo) < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

/* ---- contexts --------------------------------------------------------- */

int als_trace_valid(const als_trace_ctx *ctx)
{
    return ctx && !all_zero(ctx->trace_id, sizeof ctx->trace_id)
           && !all_zero(ctx->span_id, sizeof ctx->span_id);
}

int als_trace_new_root(als_trace_ctx *out)
{
    if (!out)
        return ALS_EINVAL;
    als_trace_random_trace_id(out->trace_id);
    als_trace_random_span_id(out->span_id);
    memset(out->parent_id, 0, sizeof out->parent_id);
    out->flags = ALS_TRACE_FLAG_SAMPLED;
    out->tracestate[0] = '\0';
    return 0;
}

int als_trace_child(const als_trace_ctx *parent, als_trace_ctx *out)
{
    if (!out)
        return ALS_EINVAL;
    if (!als_trace_valid(parent)) {
        if (out != parent)
            memset(out, 0, sizeof *out);
        return ALS_EINVAL;
    }
    if (out != parent) {
        memcpy(out->trace_id, parent->trace_id, sizeof out->trace_id);
        out->flags = parent->flags;
        /* Bounded: a caller-filled context need not be NUL-terminated. */
        size_t n = strnlen(parent->tracestate, ALS_TRACESTATE_MAX);
        memcpy(out->tracestate, parent->tracestate, n);
        out->tracestate[n] = '\0';
    }
    memcpy(out->parent_id, parent->span_id, sizeof out->parent_id);
    als_trace_random_span_id(out->span_id);
    return 0;
}

/* ---- traceparent ------------------------------------------------------ */

static bool ows(char c)
{
    return c == ' ' || c == '\t';
}

int als_trace_parse_n(const char *s, size_t len, als_trace_ctx *out)
{
    if (!s)
        goto invalid;
    while (len > 0 && ows(s[0])) {
        s++;
        len--;
    }
    while (len > 0 && ows(s[len - 1]))
        len--;
    /* "00-" + 32 + "-" + 16 + "-" + 2 = 55: the layout of every version. */
    if (len < ALS_TRACEPARENT_LEN || len > ALS_TRACEPARENT_MAX)
        goto invalid;
    uint8_t version, flags, trace_id[ALS_TRACE_ID_SIZE], parent_id[ALS_SPAN_ID_SIZE];
    if (!hex_get(&version, s, 1) || s[2] != '-' || version == 0xff)
        goto invalid;
    if (!hex_get(trace_id, s + 3, ALS_TRACE_ID_SIZE) || s[35] != '-'
        || !hex_get(parent_id, s + 36, ALS_SPAN_ID_SIZE) || s[52] != '-'
        || !hex_get(&flags, s + 53, 1))
        goto invalid;
    if (len > ALS_TRACEPARENT_LEN) {
        /* Version 00 has exactly four fields. A higher version may append
         * fields after a dash; we must not interpret them, only refuse
         * bytes no header could carry. */
        if (version == 0 || s[55] != '-')
            goto invalid;
        for (size_t i = 56; i < len; i++)
            if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
                goto invalid;
    }
    if (all_zero(trace_id, sizeof trace_id) || all_zero(parent_id, sizeof parent_id))
        goto invalid;
    if (out) {
        memcpy(out->trace_id, trace_id, sizeof trace_id);
        memcpy(out->span_id, parent_id, sizeof parent_id);
        memset(out->parent_id, 0, sizeof out->parent_id);
        /* We know the sampled and random-trace-id bits; the others are
         * reserved, and Level 2 says to send them as zero, for
         * version 00 as for the higher versions we re-emit as 00. */
        out->flags = (uint8_t)(flags & ALS_TRACE_FLAGS_KNOWN);
        out->tracestate[0] = '\0';
    }
    return 0;
invalid:
    if (out)
        memset(out, 0, sizeof *out);
    return ALS_EINVAL;
}

int als_trace_parse(const char *s, als_trace_ctx *out)
{
    return als_trace_parse_n(s, s ? strlen(s) : 0, out);
}

/* Writes the 55 characters (no NUL) of a valid context. */
static void format_tp(const als_trace_ctx *ctx, char *b)
{
    b[0] = '0';
    b[1] = '0';
    b[2] = '-';
    hex_put(b + 3, ctx->trace_id, ALS_TRACE_ID_SIZE);
    b[35] = '-';
    hex_put(b + 36, ctx->span_id, ALS_SPAN_ID_SIZE);
    b[52] = '-';
    uint8_t flags = ctx->flags & ALS_TRACE_FLAGS_KNOWN; /* reserved bits go out as 0 */
    hex_put(b + 53, &flags, 1);
}

int als_trace_format(const als_trace_ctx *ctx, char *buf, size_t size)
{
    if (!buf || size < ALS_TRACEPARENT_SIZE) {
        if (buf && size > 0)
            buf[0] = '\0';
        return ALS_EINVAL;
    }
    if (!als_trace_valid(ctx)) {
        buf[0] = '\0';
        return ALS_EINVAL;
    }
    format_tp(ctx, buf);
    buf[ALS_TRACEPARENT_LEN] = '\0';
    return ALS_TRACEPARENT_LEN;
}

/* ---- tracestate ------------------------------------------------------- */

static bool state_char_ok(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c <= 0x7e);
}

/* Parsing, combining and editing the list: tracestate.c. */

/* ---- extract / inject ------------------------------------------------- */

/* als_trace_extract: propagator.c (it is an extract from two headers). */

int als_trace_inject(char *buf, size_t size)
{
    if (!buf || size < ALS_TRACEPARENT_SIZE) {
        if (buf && size > 0)
            buf[0] = '\0';
        return ALS_EINVAL;
    }
    const als_trace_ctx *cur = als_trace_get();
    if (!cur) {
        buf[0] = '\0';
        return 0;
    }
    format_tp(cur, buf);
    buf[ALS_TRACEPARENT_LEN] = '\0';
    return ALS_TRACEPARENT_LEN;
}

/* ---- the store -------------------------------------------------------- */

static _Atomic(als_t *) trace_store;

static void ctx_destroy(void *value)
{
    als__free(value);
}

static als_t *store_create(void)
{
    als_options o = {.name = "als.trace", .default_value = NULL,
                     .destroy = ctx_destroy};
    als_t *mine = als_new(&o);
    if (!mine)
        return NULL;     /* nothing published: the next call retries */
    als_t *expected = NULL;
    /* Release publishes the initialised store; acq_rel on success, acquire
     * on failure so the winner's store is visible to us. */
    if (atomic_compare_exchange_strong_explicit(&trace_store, &expected, mine,
                                                memory_order_acq_rel,
                                                memory_order_acquire))
        return mine;
    als_free(mine);      /* lost the race: nothing was ever bound to it */
    return expected;
}

als_t *als_trace_store(void)
{
    als_t *s = atomic_load_explicit(&trace_store, memory_order_acquire);
    if (ALS__LIKELY(s))
        return s;
    return store_create();
}

const als_trace_ctx *als_trace_get(void)
{
    /* No store yet means nothing was ever bound: no need to create one. */
    als_t *s = atomic_load_explicit(&trace_store, memory_order_acquire);
    return s ? als_get(s) : NULL;
}

int als_trace_current(als_trace_ctx *out)
{
    if (!out)
        return ALS_EINVAL;
    const als_trace_ctx *cur = als_trace_get();
    if (!cur) {
        memset(out, 0, sizeof *out);
        return 0;
    }
    *out = *cur;
    return 1;
}

/* A heap copy for the store to own. A caller-filled tracestate is cut at
 * its bound and dropped if it holds bytes we promise never to emit. */
static als_trace_ctx *ctx_dup(const als_trace_ctx *ctx)
{
    als_trace_ctx *c = als__malloc(sizeof *c);
    if (!c)
        return NULL;
    memcpy(c, ctx, sizeof *c);
    c->tracestate[ALS_TRACESTATE_MAX] = '\0';
    for (const char *p = c->tracestate; *p; p++) {
        if (!state_char_ok((unsigned char)*p)) {
            c->tracestate[0] = '\0';
            break;
        }
    }
    return c;
}

struct tramp {
    als_fn fn;
    void *arg;
    void *result;
    bool ran;
};

static void *tramp_call(void *p)
{
    struct tramp *t = p;
    t->ran = true;
    t->result = t->fn(t->arg);
    return NULL;
}

/* Binds `owned` (handed over to the store whatever happens) around fn.
 * als_run reports "did not run" only through NULL, which fn may return
 * too: the trampoline tells the cases apart. Baggage uses it too. */
int als__run_owned(als_t *store, void *owned, als_fn fn, void *arg, void **result)
{
    struct tramp t = {fn, arg, NULL, false};
    als_run(store, owned, tramp_call, &t);
    if (!t.ran)
        return ALS_ENOMEM; /* als_run destroyed `owned` */
    if (result)
        *result = t.result;
    return 0;
}

int als_trace_run(const als_trace_ctx *ctx, als_fn fn, void *arg, void **result)
{
    if (!fn || !als_trace_valid(ctx))
        return ALS_EINVAL;
    als_t *store = als_trace_store();
    if (!store)
        return ALS_ENOMEM;
    als_trace_ctx *c = ctx_dup(ctx);
    if (!c)
        return ALS_ENOMEM;
    return als__run_owned(store, c, fn, arg, result);
}

int als_trace_run_span(als_fn fn, void *arg, void **result, als_trace_ctx *span)
{
    if (!fn) {
        if (span)
            memset(span, 0, sizeof *span);
        return ALS_EINVAL;
    }
    als_t *store = als_trace_store();
    als_trace_ctx *c = store ? als__malloc(sizeof *c) : NULL;
    als_trace_ctx tmp;
    /* Without memory we still report the span we would have started. */
    als_trace_ctx *dst = c ? c : &tmp;
    const als_trace_ctx *cur = store ? als_get(store) : NULL;
    if (cur)
        als_trace_child(cur, dst);
    else
        als_trace_new_root(dst);
    if (span)
        *span = *dst;
    if (!c)
        return ALS_ENOMEM;
    return als__run_owned(store, c, fn, arg, result);
}

int als_trace_enter(const als_trace_ctx *ctx)
{
    if (!als_trace_valid(ctx))
        return ALS_EINVAL;
    als_t *store = als_trace_store();
    if (!store)
        return ALS_ENOMEM;
    als_trace_ctx *c = ctx_dup(ctx);
    if (!c)
        return ALS_ENOMEM;
    return als_enter_with(store, c); /* on failure the store destroyed c */
}

/* ---- logging ---------------------------------------------------------- */

static _Atomic int log_fd = 2;

static const uint8_t zero_id[ALS_TRACE_ID_SIZE];

static void put_prefix(char *b, const als_trace_ctx *c)
{
    memcpy(b, "trace=", 6);
    hex_put(b + 6, c ? c->trace_id : zero_id, ALS_TRACE_ID_SIZE);
    memcpy(b + 6 + ALS_TRACE_ID_HEX, " span=", 6);
    hex_put(b + 12 + ALS_TRACE_ID_HEX, c ? c->span_id : zero_id, ALS_SPAN_ID_SIZE);
}

int als_trace_log_prefix(char *buf, size_t size)
{
    if (!buf || size <= ALS_TRACE_PREFIX_LEN) {
        if (buf && size > 0)
            buf[0] = '\0';
        return ALS_EINVAL;
    }
    put_prefix(buf, als_trace_get());
    buf[ALS_TRACE_PREFIX_LEN] = '\0';
    return ALS_TRACE_PREFIX_LEN;
}

int als_trace_log_set_fd(int fd)
{
    if (fd < 0)
        return ALS_EINVAL;
    return atomic_exchange_explicit(&log_fd, fd, memory_order_relaxed);
}

/* Bytes `c` takes in a log line: control characters become \xNN (a raw
 * ESC or NUL in a log someone cats is terminal-escape injection); newline
 * and carriage return inside a message become a space, so a message cannot
 * forge a line of another trace; tab and everything else pass. */
static size_t esc_len(unsigned char c)
{
    return (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f ? 4 : 1;
}

static size_t esc_put(char *out, unsigned char c)
{
    if (esc_len(c) == 4) {
        out[0] = '\\';
        out[1] = 'x';
        out[2] = hexdig[c >> 4];
        out[3] = hexdig[c & 15];
        return 4;
    }
    out[0] = c == '\n' || c == '\r' ? ' ' : (char)c;
    return 1;
}

int als_trace_logv(const char *fmt, va_list ap)
{
    if (!fmt)
        return ALS_EINVAL;
    /* The whole line is built on the stack and leaves in one write(2):
     * that, not a lock, is what keeps concurrent lines whole. */
    char line[ALS_TRACE_LOG_LINE_MAX];
    put_prefix(line, als_trace_get());
    size_t p = ALS_TRACE_PREFIX_LEN;
    line[p++] = ' ';
    size_t room = sizeof line - p - 1;          /* keep one for '\n' */
    /* The raw message, with two bytes to spare: a trailing "\n" or "\r\n"
     * is stripped, so it must not make a message that fits look cut. */
    char msg[ALS_TRACE_LOG_LINE_MAX - ALS_TRACE_PREFIX_LEN + 1]; /* room + 2 + NUL */
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n < 0)
        return ALS_EINVAL;
    size_t have = (size_t)n < sizeof msg - 1 ? (size_t)n : sizeof msg - 1;
    bool cut = (size_t)n > have;
    while (!cut && have > 0 && (msg[have - 1] == '\n' || msg[have - 1] == '\r'))
        have--;
    size_t need = 0;
    for (size_t i = 0; i < have && need <= room; i++)
        need += esc_len((unsigned char)msg[i]);
    cut = cut || need > room;
    /* A cut line ends in "..." after whole characters (no half escape). */
    size_t limit = p + (cut ? room - 3 : room), len = p;
    for (size_t i = 0; i < have && len + esc_len((unsigned char)msg[i]) <= limit; i++)
        len += esc_put(line + len, (unsigned char)msg[i]);
    if (cut) {
        memcpy(line + len, "...", 3);
        len += 3;
    }
    line[len++] = '\n';
    int fd = atomic_load_explicit(&log_fd, memory_order_relaxed);
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, line + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return ALS_EINVAL;
        }
        off += (size_t)w;
    }
    return (int)len;
}

int als_trace_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = als_trace_logv(fmt, ap);
    va_end(ap);
    return r;
}
