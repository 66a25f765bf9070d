/* The `tracestate` list (W3C Trace Context Level 2, § Tracestate Header):
 * validation, combination of repeated fields, truncation and the vendor
 * mutations (include/als_trace.h).
 *
 * A list is scanned into slices of its members (struct als__ts, on the
 * caller's stack: at most 32 members, so nothing is allocated), checked as
 * a whole, and written back in canonical form: members byte-exact, joined
 * by single commas. Every writer builds the result in a local buffer and
 * copies it last, so an input that points into the destination is safe. */
#include "als_trace.h"
#include "internal.h"

#include <string.h>

#define ENTRY_BIG 128   /* truncation removes members longer than this first */

static bool ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool lcalpha_digit(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* key = ( lcalpha / DIGIT ) 0*255( keychar ). Level 2's grammar: it admits
 * the simple keys and the multi-tenant `tenant@system` keys of Level 1. */
bool als__ts_key_ok(const char *k, size_t n)
{
    if (n == 0 || n > ALS_TRACESTATE_KEY_MAX || !lcalpha_digit((unsigned char)k[0]))
        return false;
    for (size_t i = 1; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if (!lcalpha_digit(c) && c != '_' && c != '-' && c != '*' && c != '/' && c != '@')
            return false;
    }
    return true;
}

/* value = 0*255( chr ) nblk-chr; chr = %x20 / nblk-chr;
 * nblk-chr = %x21-2B / %x2D-3C / %x3E-7E. */
bool als__ts_value_ok(const char *v, size_t n)
{
    if (n == 0 || n > ALS_TRACESTATE_VALUE_MAX || v[n - 1] == ' ')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c > 0x7e || c == ',' || c == '=')
            return false;
    }
    return true;
}

void als__ts_init(struct als__ts *l)
{
    l->n = 0;
    l->bad = false;
}

static bool has_key(const struct als__ts *l, const char *k, size_t kn)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->klen[i] == kn && memcmp(l->p[i], k, kn) == 0)
            return true;
    return false;
}

void als__ts_add(struct als__ts *l, const char *s, size_t len)
{
    size_t i = 0;
    while (!l->bad && i <= len) {
        size_t b = i;
        while (i < len && s[i] != ',')
            i++;
        size_t e = i++;            /* past the comma (or the end) */
        while (b < e && ows(s[b]))
            b++;
        while (e > b && ows(s[e - 1]))
            e--;
        if (b == e)
            continue;              /* empty and whitespace-only members are allowed */
        const char *m = s + b;
        size_t n = e - b;
        const char *eq = memchr(m, '=', n);
        size_t kn = eq ? (size_t)(eq - m) : n;
        if (!eq || !als__ts_key_ok(m, kn) || !als__ts_value_ok(eq + 1, n - kn - 1)) {
            l->bad = true;
        } else if (!has_key(l, m, kn)) {
            if (l->n == ALS_TRACESTATE_MEMBERS_MAX) {
                l->bad = true;     /* a 33rd member: the list is invalid */
            } else {
                l->p[l->n] = m;
                l->len[l->n] = n;
                l->klen[l->n] = kn;
                l->n++;
            }
        }
    }
}

/* Writes the members left after truncation to `out` (NUL-terminated). */
static void ts_write(const struct als__ts *l, char out[ALS_TRACESTATE_MAX + 1])
{
    bool keep[ALS_TRACESTATE_MEMBERS_MAX + 1];
    size_t total = 0, kept = 0;
    for (size_t i = 0; i < l->n; i++) {
        keep[i] = true;
        total += l->len[i];
        kept++;
    }
    /* The length counts the commas between kept members. Level 2:
     * over the limit, members over 128 characters go first, then members
     * from the end, whole members only. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = l->n; i-- > 0 && total + (kept ? kept - 1 : 0) > ALS_TRACESTATE_MAX;) {
            if (keep[i] && (pass == 1 || l->len[i] > ENTRY_BIG)) {
                keep[i] = false;
                total -= l->len[i];
                kept--;
            }
        }
    }
    size_t o = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (!keep[i])
            continue;
        if (o)
            out[o++] = ',';
        memcpy(out + o, l->p[i], l->len[i]);
        o += l->len[i];
    }
    out[o] = '\0';
}

int als__ts_finish(const struct als__ts *l, char *out)
{
    if (l->bad) {
        out[0] = '\0';
        return ALS_EINVAL;
    }
    char tmp[ALS_TRACESTATE_MAX + 1];  /* the members may point into `out` */
    ts_write(l, tmp);
    memcpy(out, tmp, strlen(tmp) + 1);
    return 0;
}

int als_trace_set_state(als_trace_ctx *ctx, const char *tracestate)
{
    if (!ctx)
        return ALS_EINVAL;
    struct als__ts l;
    als__ts_init(&l);
    if (tracestate)
        als__ts_add(&l, tracestate, strlen(tracestate));
    return als__ts_finish(&l, ctx->tracestate);
}

/* Scans a context's own list; a caller-filled one need not be terminated. */
static int ts_scan_ctx(const als_trace_ctx *ctx, struct als__ts *l)
{
    als__ts_init(l);
    als__ts_add(l, ctx->tracestate, strnlen(ctx->tracestate, ALS_TRACESTATE_MAX));
    return l->bad ? ALS_EINVAL : 0;
}

static long ts_find(const struct als__ts *l, const char *key)
{
    size_t kn = strlen(key);
    for (size_t i = 0; i < l->n; i++)
        if (l->klen[i] == kn && memcmp(l->p[i], key, kn) == 0)
            return (long)i;
    return -1;
}

int als_trace_state_get(const als_trace_ctx *ctx, const char *key, char *buf, size_t size)
{
    if (!buf || size == 0)
        return ALS_EINVAL;
    buf[0] = '\0';
    struct als__ts l;
    if (!ctx || !key || ts_scan_ctx(ctx, &l) != 0)
        return ALS_EINVAL;
    long i = ts_find(&l, key);
    if (i < 0)
        return 0;
    size_t vn = l.len[i] - l.klen[i] - 1;
    if (vn + 1 > size)
        return ALS_EINVAL;
    memcpy(buf, l.p[i] + l.klen[i] + 1, vn);
    buf[vn] = '\0';
    return (int)vn;
}

/* Removes member i from the slices. */
static void ts_drop(struct als__ts *l, size_t i)
{
    for (size_t j = i + 1; j < l->n; j++) {
        l->p[j - 1] = l->p[j];
        l->len[j - 1] = l->len[j];
        l->klen[j - 1] = l->klen[j];
    }
    l->n--;
}

int als_trace_state_put(als_trace_ctx *ctx, const char *key, const char *value)
{
    struct als__ts l;
    if (!ctx || !key || !value || ts_scan_ctx(ctx, &l) != 0)
        return ALS_EINVAL;
    size_t kn = strlen(key), vn = strlen(value);
    if (!als__ts_key_ok(key, kn) || !als__ts_value_ok(value, vn))
        return ALS_EINVAL;
    char member[ALS_TRACESTATE_KEY_MAX + 1 + ALS_TRACESTATE_VALUE_MAX];
    memcpy(member, key, kn);
    member[kn] = '=';
    memcpy(member + kn + 1, value, vn);
    long old = ts_find(&l, key);
    if (old >= 0)
        ts_drop(&l, (size_t)old);
    else if (l.n == ALS_TRACESTATE_MEMBERS_MAX)
        ts_drop(&l, l.n - 1);      /* 3.3.1.3: the right-most goes */
    for (size_t j = l.n; j > 0; j--) {
        l.p[j] = l.p[j - 1];
        l.len[j] = l.len[j - 1];
        l.klen[j] = l.klen[j - 1];
    }
    l.p[0] = member;
    l.len[0] = kn + 1 + vn;
    l.klen[0] = kn;
    l.n++;
    return als__ts_finish(&l, ctx->tracestate);
}

int als_trace_state_remove(als_trace_ctx *ctx, const char *key)
{
    struct als__ts l;
    if (!ctx || !key || ts_scan_ctx(ctx, &l) != 0)
        return ALS_EINVAL;
    long i = ts_find(&l, key);
    if (i < 0)
        return 0;
    ts_drop(&l, (size_t)i);
    als__ts_finish(&l, ctx->tracestate);
    return 1;
}
