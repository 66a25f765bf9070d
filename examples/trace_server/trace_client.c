/*
 * trace_client: load and check trace_server (issue 6's end-to-end test).
 *
 * Sends many concurrent GET requests (libcurl, one easy handle per client
 * thread) with distinct traceparent headers of every kind: valid version
 * 00, a valid future version, missing, malformed (the spec's invalid
 * examples and random garbage), oversized, duplicated, with and without
 * tracestate; then a few requests with headers too large for the server
 * to accept at all, and one more to prove it is still alive. It checks
 * every response against what W3C Trace Context says should happen to
 * that header, and every line of the server's log against the request it
 * names: right trace, right span, right number of lines.
 *
 * This program deliberately does not use libals: it checks the server from
 * the outside, with its own reading of the spec.
 *
 * Usage:
 *   trace_client --spawn SERVER [options]   start SERVER on a free loopback
 *                                           port with a private log, drive,
 *                                           stop it (SIGTERM), check its log
 *   trace_client --url URL --log FILE [options]   drive a running server
 * Options:
 *   --requests N     requests to send (default 400; the cap with --seconds)
 *   --concurrency N  client threads, each with its own connection (32)
 *   --seconds S      stop sending after S seconds (default: no limit)
 *   --fan1 N --fan2 N  the server's fan-out (default 4 and 3; passed on
 *                    to a spawned server)
 *   --seed N         make the headers reproducible
 *   --deadline-ms N --work-ms M --workers W
 *                    the deadline test (passed on to a spawned server):
 *                    each request gets an N ms deadline and its subtasks
 *                    work M ms, longer, on W workers, fewer than a
 *                    request's subtasks. A running subtask holds its worker
 *                    until the deadline, so every request must report
 *                    cancelled subtasks: ran + cancelled == all, and
 *                    cancelled > 0. Without it, cancelled must be 0.
 *   --keep-log       do not delete a spawned server's log
 * Prints a closing line `<n> passed, <n> failed` and exits 0 only if every
 * request passed, no log line mismatched and the server stopped cleanly.
 */
#define _GNU_SOURCE
#include <curl/curl.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_FAN 16
#define MAX_SUBS (MAX_FAN + MAX_FAN * MAX_FAN)
#define HUGE_REQUESTS 4
#define HUGE_HEADER 40000          /* beyond libmicrohttpd's 32 KiB per connection */
#define WHY_MAX 200

static unsigned fan1 = 4, fan2 = 3;
static unsigned long deadline_ms, work_ms, workers; /* 0: not given */
static uint64_t seed;
static unsigned long run_id;       /* request ids: <run_id><6-digit index> */

/* ---- a small generator for the headers (not for the ids under test) --- */

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

struct gen {
    uint64_t s;
};

static uint64_t gnext(struct gen *g)
{
    g->s = mix(g->s);
    return g->s;
}

static void rand_hex(struct gen *g, char *out, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    do {
        for (size_t i = 0; i < n; i++)
            out[i] = hx[gnext(g) & 15];
        out[n] = '\0';
    } while (strspn(out, "0") == n);    /* never all zero: that is invalid */
}

/* ---- what to send and what to expect ------------------------------------- */

enum kind {
    K_VALID, K_VALID_STATE, K_FUTURE, K_MISSING, K_MALFORMED, K_OVERSIZED,
    K_DUPLICATE, K_LONG_STATE, K_HUGE, K_ALIVE
};

static const char *const kind_name[] = {
    "valid", "valid+tracestate", "future-version", "missing", "malformed",
    "oversized", "duplicate", "long-tracestate", "huge-header", "alive-check"
};

/* Built on the sending thread from the request's index alone (nothing is
 * kept per request but its result). */
struct spec {
    enum kind kind;
    char id[24];
    char tp[2][4200];              /* up to two traceparent values */
    int ntp;
    bool huge;                     /* K_HUGE: a header no server should take */
    char ts[2048];                 /* tracestate sent, "" for none */
    char trace[33], parent[17];    /* what a valid header carried */
    char trace2[33];               /* the second one (K_DUPLICATE) */
    unsigned flags;                /* expected flags in the answer */
    bool expect_continue;
};

/* One request's outcome, written by its client thread, read by main after
 * the join. */
struct subrec {
    char name[8];
    char span[17];
};

struct result {
    enum kind kind;
    bool done;
    bool ok;                       /* response passed every check */
    char why[WHY_MAX];
    long status;
    char trace[33], span[17];
    unsigned nsubs;                /* the subtasks that ran */
    struct subrec *subs;           /* nsubs of them */
    unsigned lines_want;           /* log lines its steps make */
    unsigned log_lines;            /* filled by the log check */
    bool log_bad;
};

static struct result *results;
static unsigned long nreq;         /* load requests (without huge/alive) */
static unsigned long ntotal;       /* all requests */

static void make_valid(struct gen *g, struct spec *s, const char *version, unsigned flags_sent)
{
    rand_hex(g, s->trace, 32);
    rand_hex(g, s->parent, 16);
    snprintf(s->tp[0], sizeof s->tp[0], "%s-%s-%s-%02x", version, s->trace, s->parent,
             flags_sent);
    s->ntp = 1;
}

static void make_malformed(struct gen *g, struct spec *s, unsigned variant)
{
    char *tp = s->tp[0];
    size_t cap = sizeof s->tp[0];
    make_valid(g, s, "00", 1);
    switch (variant % 11) {
    case 0:                                       /* upper-case hex */
        s->trace[0] = 'a';
        snprintf(tp, cap, "00-%s-%s-01", s->trace, s->parent);
        tp[3] = 'A';
        break;
    case 1:                                       /* version ff */
        tp[0] = tp[1] = 'f';
        break;
    case 2:                                       /* all-zero trace-id */
        snprintf(tp, cap, "00-%032d-%s-01", 0, s->parent);
        break;
    case 3:                                       /* all-zero parent-id */
        snprintf(tp, cap, "00-%s-%016d-01", s->trace, 0);
        break;
    case 4:                                       /* version 00 has 4 fields */
        strcat(tp, "-what-the-future-will-be-like");
        break;
    case 5:                                       /* trace-id one short */
        snprintf(tp, cap, "00-%.31s-%s-01", s->trace, s->parent);
        break;
    case 6:                                       /* wrong separator */
        tp[35] = '_';
        break;
    case 7:                                       /* version of three digits */
        snprintf(tp, cap, "000-%s-%s-01", s->trace, s->parent);
        break;
    case 8:                                       /* non-hex in parent-id */
        tp[40] = 'g';
        break;
    case 9:                                       /* flags of one digit */
        tp[54] = '\0';
        break;
    default: {                                    /* printable garbage */
        size_t n = 1 + gnext(g) % 90;
        for (size_t i = 0; i < n; i++)
            tp[i] = (char)('!' + gnext(g) % 94);
        tp[n] = '\0';
        break;
    }
    }
}

static void make_spec(struct spec *s, unsigned long i)
{
    struct gen g = {seed ^ mix(i + 1)};
    memset(s, 0, sizeof *s);
    snprintf(s->id, sizeof s->id, "%06lu%06lu", run_id, i);
    if (i >= nreq + HUGE_REQUESTS) {              /* the alive check */
        s->kind = K_ALIVE;
        make_valid(&g, s, "00", 1);
        s->flags = 1;
        s->expect_continue = true;
        return;
    }
    if (i >= nreq) {
        s->kind = K_HUGE;
        s->huge = true;
        return;
    }
    s->kind = (enum kind)(i % 8);
    s->flags = 1;                                 /* a new root: sampled */
    switch (s->kind) {
    case K_VALID:
        s->flags = (unsigned)(gnext(&g) & 1);
        make_valid(&g, s, "00", s->flags);
        s->expect_continue = true;
        break;
    case K_VALID_STATE:
        make_valid(&g, s, "00", 1);
        snprintf(s->ts, sizeof s->ts, "congo=t61rcWkgMzE,rojo=%s", s->parent);
        s->expect_continue = true;
        break;
    case K_FUTURE: {
        /* Flags 09: of a future version only the sampled bit counts. */
        make_valid(&g, s, "cc", 9);
        size_t n = strlen(s->tp[0]);
        snprintf(s->tp[0] + n, sizeof s->tp[0] - n, "-future-%lu", i);
        s->flags = 1;
        s->expect_continue = true;
        break;
    }
    case K_MISSING:
        rand_hex(&g, s->trace, 32);               /* only to tell it apart */
        snprintf(s->ts, sizeof s->ts, "dropped=1"); /* no traceparent: ignored */
        break;
    case K_MALFORMED:
        make_malformed(&g, s, (unsigned)(i / 8));
        snprintf(s->ts, sizeof s->ts, "dropped=1");
        break;
    case K_OVERSIZED: {
        make_valid(&g, s, "cc", 1);
        size_t n = strlen(s->tp[0]);
        size_t extra = 600 + gnext(&g) % 3400;    /* total beyond 512 */
        s->tp[0][n++] = '-';
        memset(s->tp[0] + n, 'x', extra);
        s->tp[0][n + extra] = '\0';
        break;
    }
    case K_DUPLICATE:
        make_valid(&g, s, "00", 1);
        memcpy(s->trace2, s->trace, sizeof s->trace2);
        strcpy(s->tp[1], s->tp[0]);
        make_valid(&g, s, "00", 1);               /* overwrites tp[0], trace */
        s->ntp = 2;
        break;
    default: {                                    /* K_LONG_STATE */
        make_valid(&g, s, "00", 1);
        size_t n = 0;
        for (int k = 0; k < 32; k++)      /* the most members a list may have */
            n += (size_t)snprintf(s->ts + n, sizeof s->ts - n, "%sk%02d=%s", k ? "," : "", k,
                                  s->parent);
        s->expect_continue = true;
        break;
    }
    }
}

/* ---- checking one response ------------------------------------------------ */

static bool is_lchex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* Finds "key":"value" in obj and copies the value (at most n-1 chars). */
static bool json_str(const char *obj, const char *key, char *out, size_t n)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(obj, pat);
    if (!p)
        return false;
    p += strlen(pat);
    const char *e = strchr(p, '"');
    if (!e || (size_t)(e - p) >= n)
        return false;
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = '\0';
    return true;
}

static bool json_u64(const char *obj, const char *key, unsigned long long *out)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(obj, pat);
    if (!p)
        return false;
    p += strlen(pat);
    if (!isdigit((unsigned char)*p))
        return false;
    *out = strtoull(p, NULL, 10);
    return true;
}

struct body {
    char *p;
    size_t len;
    char tp[128];                  /* the traceparent response header */
    char ts[1024];                 /* the tracestate response header */
    bool has_tp, has_ts;
};

/* Diagnostics are cut to WHY_MAX on purpose. */
static void set_why(struct result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_why(struct result *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof r->why, fmt, ap);
    va_end(ap);
}

#define FAIL(...)                                                   \
    do {                                                            \
        set_why(r, __VA_ARGS__);                                    \
        return false;                                               \
    } while (0)

struct subinfo {
    char name[8], trace[40], span[20], pspan[20];
    unsigned long long async_id, trigger;
    long level;
};

static bool check_response(const struct spec *s, struct result *r, const struct body *b)
{
    if (r->status != 200)
        FAIL("status %ld", r->status);
    /* The response header: version 00, our trace, the handler's span. */
    if (!b->has_tp)
        FAIL("no traceparent response header");
    const char *tp = b->tp;
    if (strlen(tp) != 55 || strncmp(tp, "00-", 3) != 0 || tp[35] != '-' || tp[52] != '-'
        || !is_lchex(tp + 3, 32) || !is_lchex(tp + 36, 16) || !is_lchex(tp + 53, 2))
        FAIL("bad traceparent response header '%.80s'", tp);
    if (strspn(tp + 3, "0") >= 32 || strspn(tp + 36, "0") >= 16)
        FAIL("all-zero id in response traceparent");

    char trace[40], span[20], parent[20], rid[32], cont[8];
    unsigned long long hasync, cancelled;
    const char *j = b->p;
    if (!json_str(j, "trace_id", trace, sizeof trace) || !json_str(j, "span_id", span, sizeof span)
        || !json_str(j, "parent_id", parent, sizeof parent)
        || !json_str(j, "request_id", rid, sizeof rid) || !json_u64(j, "async_id", &hasync)
        || !json_u64(j, "cancelled", &cancelled))
        FAIL("response JSON lacks a field");
    const char *c = strstr(j, "\"continued\":");
    if (!c)
        FAIL("response JSON lacks continued");
    snprintf(cont, sizeof cont, "%.4s", c + 12);
    if (strcmp(rid, s->id) != 0)
        FAIL("answer for request %s, not %s", rid, s->id);
    if (strlen(trace) != 32 || !is_lchex(trace, 32) || strlen(span) != 16 || !is_lchex(span, 16))
        FAIL("bad ids in JSON");
    if (strncmp(tp + 3, trace, 32) != 0 || strncmp(tp + 36, span, 16) != 0)
        FAIL("traceparent header and JSON disagree");
    unsigned flags = (unsigned)strtoul(tp + 53, NULL, 16);

    if (s->expect_continue) {
        if (strcmp(cont, "true") != 0)
            FAIL("%s header not continued", kind_name[s->kind]);
        if (strcmp(trace, s->trace) != 0)
            FAIL("trace %s, sent %s", trace, s->trace);
        if (strcmp(parent, s->parent) != 0)
            FAIL("parent %s, sent %s", parent, s->parent);
        if (strcmp(span, s->parent) == 0)
            FAIL("span id not renewed");
        if (flags != s->flags)
            FAIL("flags %02x, expected %02x", flags, s->flags);
    } else {
        if (strcmp(cont, "fals") != 0 || parent[0])
            FAIL("%s header continued", kind_name[s->kind]);
        if (strcmp(trace, s->trace) == 0 || (s->trace2[0] && strcmp(trace, s->trace2) == 0))
            FAIL("%s header's trace id was used", kind_name[s->kind]);
        if (flags != 1)
            FAIL("a new root should be sampled (flags %02x)", flags);
    }
    /* tracestate: passed through when the trace continues, never otherwise. */
    switch (s->kind) {
    case K_VALID_STATE:
        if (!b->has_ts || strcmp(b->ts, s->ts) != 0)
            FAIL("tracestate '%.60s' not passed through", b->ts);
        break;
    case K_LONG_STATE:
        if (!b->has_ts || strlen(b->ts) > 512 || strncmp(b->ts, "k00=", 4) != 0
            || strncmp(s->ts, b->ts, strlen(b->ts)) != 0
            || (s->ts[strlen(b->ts)] != ','))
            FAIL("long tracestate not cut by whole entries (%zu chars)", strlen(b->ts));
        break;
    default:
        if (b->has_ts)
            FAIL("unexpected tracestate '%.60s'", b->ts);
    }

    /* Subtasks: each saw the request's trace, its own span whose parent is
     * whoever submitted it, and async ids naming that submitter. */
    /* Log lines: start, fanout, gathered, respond; two per level-1
     * subtask that ran, one per level-2 (counted below). */
    r->lines_want = 4;
    const char *p = strstr(j, "\"subtasks\":[");
    if (!p)
        FAIL("no subtasks");
    p += 12;
    static _Thread_local struct subinfo subs[MAX_SUBS];
    unsigned n = 0;
    while (*p == '{' || *p == ',') {
        if (*p == ',')
            p++;
        const char *e = strchr(p, '}');
        if (!e || n >= MAX_SUBS || e - p > 400)
            FAIL("bad subtasks array");
        char obj[512];
        memcpy(obj, p, (size_t)(e - p + 1));
        obj[e - p + 1] = '\0';
        struct subinfo *x = &subs[n];
        unsigned long long lv;
        if (!json_str(obj, "name", x->name, sizeof x->name)
            || !json_str(obj, "trace_id", x->trace, sizeof x->trace)
            || !json_str(obj, "span_id", x->span, sizeof x->span)
            || !json_str(obj, "parent_span_id", x->pspan, sizeof x->pspan)
            || !json_u64(obj, "async_id", &x->async_id)
            || !json_u64(obj, "trigger_async_id", &x->trigger) || !json_u64(obj, "level", &lv))
            FAIL("subtask %u lacks a field", n);
        x->level = (long)lv;
        r->lines_want += lv == 1 ? 2 : 1;
        n++;
        p = e + 1;
    }
    if (*p != ']')
        FAIL("subtasks array not closed");
    /* Every subtask ran or was cancelled; with the deadline test's
     * settings some must have been cancelled, without a deadline none. */
    if (n + cancelled != fan1 + fan1 * fan2)
        FAIL("%u subtasks ran and %llu were cancelled, expected %u in all", n, cancelled,
             fan1 + fan1 * fan2);
    if (deadline_ms ? cancelled == 0 : cancelled != 0)
        FAIL("%llu subtasks cancelled, with%s a deadline", cancelled, deadline_ms ? "" : "out");
    for (unsigned i = 0; i < n; i++) {
        const struct subinfo *x = &subs[i];
        if (strcmp(x->trace, trace) != 0)
            FAIL("subtask %s in trace %s, request in %s", x->name, x->trace, trace);
        if (strlen(x->span) != 16 || !is_lchex(x->span, 16) || strspn(x->span, "0") == 16)
            FAIL("subtask %s bad span", x->name);
        if (x->async_id <= 1 || x->async_id == hasync)
            FAIL("subtask %s async id %llu", x->name, x->async_id);
        for (unsigned k = 0; k < i; k++)
            if (strcmp(subs[k].span, x->span) == 0 || subs[k].async_id == x->async_id)
                FAIL("subtasks %s and %s share an id", subs[k].name, x->name);
        if (strcmp(x->span, span) == 0)
            FAIL("subtask %s has the handler's span", x->name);
        if (x->level == 1) {
            if (strcmp(x->pspan, span) != 0)
                FAIL("level-1 %s parent %s, handler %s", x->name, x->pspan, span);
            if (x->trigger != hasync)
                FAIL("level-1 %s trigger %llu, handler %llu", x->name, x->trigger, hasync);
        } else if (x->level == 2) {
            const char *dot = strchr(x->name, '.');
            const struct subinfo *up = NULL;
            for (unsigned k = 0; dot && k < n; k++)
                if (subs[k].level == 1 && strlen(subs[k].name) == (size_t)(dot - x->name)
                    && strncmp(subs[k].name, x->name, (size_t)(dot - x->name)) == 0)
                    up = &subs[k];
            if (!up)
                FAIL("level-2 %s has no level-1 parent", x->name);
            if (strcmp(x->pspan, up->span) != 0)
                FAIL("level-2 %s parent %s, level-1 span %s", x->name, x->pspan, up->span);
            if (x->trigger != up->async_id)
                FAIL("level-2 %s trigger %llu, level-1 async %llu", x->name, x->trigger,
                     up->async_id);
        } else {
            FAIL("subtask %s level %ld", x->name, x->level);
        }
    }
    memcpy(r->trace, trace, sizeof r->trace);
    memcpy(r->span, span, sizeof r->span);
    r->subs = calloc(n, sizeof *r->subs);
    if (!r->subs)
        FAIL("out of memory");
    r->nsubs = n;
    for (unsigned i = 0; i < n; i++) {
        snprintf(r->subs[i].name, sizeof r->subs[i].name, "%.7s", subs[i].name);
        memcpy(r->subs[i].span, subs[i].span, 17);
    }
    return true;
}

/* ---- the client threads ------------------------------------------------------ */

static size_t on_body(char *data, size_t size, size_t nmemb, void *user)
{
    struct body *b = user;
    size_t n = size * nmemb;
    if (b->len + n > (1u << 20))
        return 0;                  /* absurdly large: abort the transfer */
    char *p = realloc(b->p, b->len + n + 1);
    if (!p)
        return 0;
    memcpy(p + b->len, data, n);
    b->p = p;
    b->len += n;
    b->p[b->len] = '\0';
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *user)
{
    struct body *b = user;
    size_t n = size * nmemb;
    char line[1200];
    size_t m = n < sizeof line - 1 ? n : sizeof line - 1;
    memcpy(line, data, m);
    line[m] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    char *colon = strchr(line, ':');
    if (!colon)
        return n;
    *colon = '\0';
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (strcasecmp(line, "traceparent") == 0) {
        snprintf(b->tp, sizeof b->tp, "%s", v);
        b->has_tp = true;
    } else if (strcasecmp(line, "tracestate") == 0) {
        snprintf(b->ts, sizeof b->ts, "%s", v);
        b->has_ts = true;
    }
    return n;
}

static char url[256];
static _Atomic unsigned long next_req;
static _Atomic bool time_up;
static struct timespec deadline;
static bool have_deadline;

static bool past_deadline(void)
{
    if (!have_deadline)
        return false;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline.tv_sec
           || (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec);
}

static char *huge_header;          /* "traceparent: 00-aaaa...", shared, read only */

static void send_one(CURL *h, unsigned long i)
{
    struct spec spec, *s = &spec;
    make_spec(s, i);
    struct result *r = &results[i];
    r->kind = s->kind;
    struct curl_slist *hdrs = NULL;
    /* Precisions bound every field, so gcc can see nothing is cut. */
    char line[sizeof s->tp[0] + 16];
    for (int k = 0; k < s->ntp; k++) {
        snprintf(line, sizeof line, "traceparent: %.4199s", s->tp[k]);
        hdrs = curl_slist_append(hdrs, line);
    }
    if (s->huge && huge_header)
        hdrs = curl_slist_append(hdrs, huge_header);
    if (s->ts[0]) {
        char ts[sizeof s->ts + 16];
        snprintf(ts, sizeof ts, "tracestate: %.2047s", s->ts);
        hdrs = curl_slist_append(hdrs, ts);
    }
    snprintf(line, sizeof line, "x-request-id: %.23s", s->id);
    hdrs = curl_slist_append(hdrs, line);

    struct body b;
    memset(&b, 0, sizeof b);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &b);
    CURLcode rc = curl_easy_perform(h);
    r->done = true;
    if (rc != CURLE_OK) {
        r->status = -1;
        snprintf(r->why, sizeof r->why, "curl: %s", curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    }
    if (s->kind == K_HUGE) {
        /* The server may refuse (431 and friends) or drop the connection;
         * it must not serve it as a request, nor crash (the next request
         * proves that). */
        r->ok = rc != CURLE_OK || (r->status >= 400 && r->status < 500);
        if (!r->ok)
            snprintf(r->why, sizeof r->why, "huge header answered %ld", r->status);
    } else if (rc == CURLE_OK) {
        if (!b.p)
            snprintf(r->why, sizeof r->why, "empty body (status %ld)", r->status);
        else
            r->ok = check_response(s, r, &b);
    }
    free(b.p);
    curl_slist_free_all(hdrs);
}

static void *client_thread(void *arg)
{
    (void)arg;
    CURL *h = curl_easy_init();
    if (!h)
        return NULL;
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);    /* threads: no SIGALRM */
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
    for (;;) {
        if (atomic_load(&time_up))
            break;
        unsigned long i = atomic_fetch_add(&next_req, 1);
        if (i >= nreq)
            break;
        if (past_deadline()) {
            atomic_store(&time_up, true);
            break;
        }
        send_one(h, i);
    }
    curl_easy_cleanup(h);
    return NULL;
}

/* ---- the server's log ---------------------------------------------------------- */

struct logstats {
    unsigned long lines, request_lines, server_lines, foreign, mismatches;
};

static int report_limit = 20;

static void mismatch(struct logstats *st, unsigned long lineno, const char *line, const char *why)
{
    st->mismatches++;
    if (report_limit-- > 0)
        fprintf(stderr, "trace_client: log line %lu: %s: %.160s\n", lineno, why, line);
}

static void check_log(const char *path, struct logstats *st)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "trace_client: %s: %s\n", path, strerror(errno));
        st->mismatches++;
        return;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned long lineno = 0;
    char prefix[16];
    snprintf(prefix, sizeof prefix, "%06lu", run_id);
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[n - 1] != '\n') {
            mismatch(st, lineno, line, "unterminated line");
            continue;
        }
        line[--n] = '\0';
        st->lines++;
        /* trace=<32> span=<16> <message> */
        if (n < 61 || strncmp(line, "trace=", 6) != 0 || !is_lchex(line + 6, 32)
            || strncmp(line + 38, " span=", 6) != 0 || !is_lchex(line + 44, 16)
            || line[60] != ' ') {
            mismatch(st, lineno, line, "no trace prefix");
            continue;
        }
        const char *msg = line + 61;
        if (strncmp(msg, "req=", 4) != 0) {
            /* The server's own lines run outside any request. */
            st->server_lines++;
            if (strspn(line + 6, "0") != 32 || strspn(line + 44, "0") != 16)
                mismatch(st, lineno, line, "server line inside a trace");
            continue;
        }
        char id[32];
        size_t idl = strcspn(msg + 4, " ");
        if (idl >= sizeof id) {
            mismatch(st, lineno, line, "bad req=");
            continue;
        }
        memcpy(id, msg + 4, idl);
        id[idl] = '\0';
        if (idl != 12 || strncmp(id, prefix, 6) != 0 || strspn(id, "0123456789") != 12) {
            st->foreign++;     /* another client's request */
            continue;
        }
        unsigned long i = strtoul(id + 6, NULL, 10);
        if (i >= ntotal || !results[i].ok || results[i].kind == K_HUGE) {
            mismatch(st, lineno, line, "line of a request that was not served");
            continue;
        }
        struct result *r = &results[i];
        st->request_lines++;
        r->log_lines++;
        if (strncmp(line + 6, r->trace, 32) != 0) {
            r->log_bad = true;
            mismatch(st, lineno, line, "wrong trace id for its request");
            continue;
        }
        const char *want = r->span;
        const char *sub = strstr(msg, " sub=");
        if (sub) {
            char name[16];
            size_t nl = strcspn(sub + 5, " ");
            snprintf(name, sizeof name, "%.*s", (int)(nl < 15 ? nl : 15), sub + 5);
            want = NULL;
            for (unsigned k = 0; k < r->nsubs; k++)
                if (strcmp(r->subs[k].name, name) == 0)
                    want = r->subs[k].span;
            if (!want) {
                r->log_bad = true;
                mismatch(st, lineno, line, "unknown subtask");
                continue;
            }
        }
        if (strncmp(line + 44, want, 16) != 0) {
            r->log_bad = true;
            mismatch(st, lineno, line, "wrong span id for its step");
        }
    }
    free(line);
    fclose(f);
    /* Every served request logged exactly its steps (check_response
     * counted them from the subtasks that ran). */
    for (unsigned long i = 0; i < ntotal; i++) {
        struct result *r = &results[i];
        if (!r->ok || r->kind == K_HUGE)
            continue;
        unsigned want = r->lines_want;
        if (r->log_lines != want) {
            r->log_bad = true;
            st->mismatches++;
            if (report_limit-- > 0)
                fprintf(stderr, "trace_client: request %06lu%06lu: %u log lines, expected %u\n",
                        run_id, i, r->log_lines, want);
        }
    }
}

/* ---- spawning the server ------------------------------------------------------------ */

static pid_t server_pid;
static FILE *server_out;

static void kill_server(int sig)
{
    (void)sig;
    if (server_pid > 0)
        kill(server_pid, SIGKILL);   /* async-signal-safe */
}

static bool spawn(const char *server, const char *log_path, unsigned *port)
{
    int fds[2];
    if (pipe(fds) != 0)
        return false;
    char f1[16], f2[16], dl[24], wk[24], wr[24];
    snprintf(f1, sizeof f1, "%u", fan1);
    snprintf(f2, sizeof f2, "%u", fan2);
    snprintf(dl, sizeof dl, "%lu", deadline_ms);
    snprintf(wk, sizeof wk, "%lu", work_ms);
    snprintf(wr, sizeof wr, "%lu", workers ? workers : 4);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        if (deadline_ms)
            execl(server, server, "--port", "0", "--log", log_path, "--fan1", f1, "--fan2", f2,
                  "--workers", wr, "--deadline-ms", dl, "--work-ms", wk, (char *)NULL);
        else
            execl(server, server, "--port", "0", "--log", log_path, "--fan1", f1, "--fan2", f2,
                  "--workers", wr, (char *)NULL);
        fprintf(stderr, "trace_client: exec %s: %s\n", server, strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    server_pid = pid;
    server_out = fdopen(fds[0], "r");
    if (!server_out)
        return false;
    /* Bounded wait for the first line (a sanitizer build starts slowly). */
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    if (poll(&pfd, 1, 60000) <= 0) {
        fprintf(stderr, "trace_client: the server did not start within 60 s\n");
        return false;
    }
    char line[256];
    if (!fgets(line, sizeof line, server_out)
        || sscanf(line, "listening on 127.0.0.1:%u", port) != 1 || *port == 0) {
        fprintf(stderr, "trace_client: unexpected first line from the server\n");
        return false;
    }
    return true;
}

/* SIGTERM, then a bounded wait: SIGKILL after 60 s. Returns whether the
 * server exited 0 after printing `stopped: <n> requests`. */
static bool stop_server(unsigned long *served)
{
    kill(server_pid, SIGTERM);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = kill_server;
    sigaction(SIGALRM, &sa, NULL);
    alarm(60);
    char line[256];
    bool stopped = false;
    while (fgets(line, sizeof line, server_out))
        if (sscanf(line, "stopped: %lu requests", served) == 1)
            stopped = true;
    int status = 0;
    while (waitpid(server_pid, &status, 0) < 0 && errno == EINTR)
        ;
    alarm(0);
    fclose(server_out);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "trace_client: the server exited badly (status %#x)\n", (unsigned)status);
        return false;
    }
    if (!stopped)
        fprintf(stderr, "trace_client: the server did not report its stop\n");
    return stopped;
}

/* ---- main ------------------------------------------------------------------------------ */

static bool parse_ul(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (!s[0] || s[0] == '-' || errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    const char *server = NULL, *log_path = NULL, *given_url = NULL;
    unsigned long requests = 400, conc = 32, seconds = 0, f1 = fan1, f2 = fan2, sd = 0;
    bool have_seed = false, keep_log = false;
    for (int i = 1; i < argc;) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        if (strcmp(a, "--keep-log") == 0) {
            keep_log = true;
            i++;
            continue;
        } else if (strcmp(a, "--spawn") == 0) {
            server = v;
        } else if (strcmp(a, "--url") == 0) {
            given_url = v;
        } else if (strcmp(a, "--log") == 0) {
            log_path = v;
        } else if (strcmp(a, "--requests") == 0) {
            ok = ok && parse_ul(v, 100000, &requests) && requests > 0;
        } else if (strcmp(a, "--concurrency") == 0) {
            ok = ok && parse_ul(v, 256, &conc) && conc > 0;
        } else if (strcmp(a, "--seconds") == 0) {
            ok = ok && parse_ul(v, 3600, &seconds);
        } else if (strcmp(a, "--fan1") == 0) {
            ok = ok && parse_ul(v, MAX_FAN, &f1) && f1 > 0;
        } else if (strcmp(a, "--fan2") == 0) {
            ok = ok && parse_ul(v, MAX_FAN, &f2);
        } else if (strcmp(a, "--deadline-ms") == 0) {
            ok = ok && parse_ul(v, 60000, &deadline_ms) && deadline_ms > 0;
        } else if (strcmp(a, "--work-ms") == 0) {
            ok = ok && parse_ul(v, 60000, &work_ms);
        } else if (strcmp(a, "--workers") == 0) {
            ok = ok && parse_ul(v, 256, &workers) && workers > 0;
        } else if (strcmp(a, "--seed") == 0) {
            ok = ok && parse_ul(v, ~0ul, &sd);
            have_seed = true;
        } else {
            ok = false;
        }
        if (!ok || (given_url && strlen(given_url) >= sizeof url)) {
            fprintf(stderr, "usage: trace_client (--spawn SERVER | --url URL --log FILE) "
                            "[--requests N] [--concurrency N] [--seconds S] [--fan1 N] "
                            "[--fan2 N] [--seed N] [--keep-log] [--deadline-ms N --work-ms M "
                            "--workers W]\n");
            return 2;
        }
        i += 2;
    }
    if (!server == !given_url || (given_url && !log_path)) {
        fprintf(stderr, "trace_client: give --spawn SERVER, or --url URL and --log FILE\n");
        return 2;
    }
    fan1 = (unsigned)f1;
    fan2 = (unsigned)f2;
    if (deadline_ms && (work_ms <= deadline_ms || !workers || workers >= fan1 + fan1 * fan2)) {
        fprintf(stderr, "trace_client: --deadline-ms needs --work-ms longer than it and "
                        "--workers fewer than a request's subtasks\n");
        return 2;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    seed = have_seed ? sd : mix((uint64_t)now.tv_nsec ^ ((uint64_t)getpid() << 32));
    run_id = 100000 + mix(seed) % 900000;
    signal(SIGPIPE, SIG_IGN);

    char tmp_log[] = "/tmp/trace_server_log.XXXXXX";
    unsigned port = 0;
    if (server) {
        int fd = mkstemp(tmp_log);
        if (fd < 0) {
            perror("trace_client: mkstemp");
            return 1;
        }
        close(fd);
        log_path = tmp_log;
        if (!spawn(server, log_path, &port)) {
            if (server_pid > 0)
                kill(server_pid, SIGKILL);
            unlink(tmp_log);
            printf("0 passed, 1 failed\n");
            return 1;
        }
        snprintf(url, sizeof url, "http://127.0.0.1:%u/work", port);
    } else {
        snprintf(url, sizeof url, "%s", given_url);
    }

    /* The requests: the load, then the huge ones, then one more. */
    nreq = requests;
    ntotal = requests + HUGE_REQUESTS + 1;
    results = calloc(ntotal, sizeof *results);
    huge_header = malloc(HUGE_HEADER + 16);
    if (!results || !huge_header) {
        fprintf(stderr, "trace_client: out of memory\n");
        return 1;
    }
    strcpy(huge_header, "traceparent: 00-");
    size_t hl = strlen(huge_header);
    memset(huge_header + hl, 'a', HUGE_HEADER - hl);
    huge_header[HUGE_HEADER] = '\0';

    printf("trace_client: %s, %lu requests, %lu connections, seed %llu\n", url, requests,
           conc, (unsigned long long)seed);
    fflush(stdout);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "trace_client: curl_global_init failed\n");
        return 1;
    }
    if (seconds) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += (time_t)seconds;
        have_deadline = true;
    }
    pthread_t *threads = calloc(conc, sizeof *threads);
    unsigned long started = 0;
    for (unsigned long t = 0; threads && t < conc; t++)
        if (pthread_create(&threads[started], NULL, client_thread, NULL) == 0)
            started++;
    for (unsigned long t = 0; t < started; t++)
        pthread_join(threads[t], NULL);
    free(threads);
    if (started == 0)
        fprintf(stderr, "trace_client: no client thread started\n");
    /* The huge headers one by one, then the alive check, on fresh handles. */
    CURL *h = curl_easy_init();
    if (h) {
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
        for (unsigned long i = requests; i < ntotal; i++) {
            if (i == ntotal - 1) {              /* the alive check: a new connection */
                curl_easy_cleanup(h);
                h = curl_easy_init();
                if (!h)
                    break;
                curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
                curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
            }
            send_one(h, i);
        }
        curl_easy_cleanup(h);
    }
    curl_global_cleanup();

    unsigned long served = 0;
    bool server_ok = true;
    if (server)
        server_ok = stop_server(&served);

    struct logstats st = {0};
    check_log(log_path, &st);
    if (server && !keep_log)
        unlink(tmp_log);
    else if (server)
        printf("trace_client: server log kept in %s\n", tmp_log);

    unsigned long sent = 0, passed = 0, failed = 0, per_kind_fail[10] = {0};
    for (unsigned long i = 0; i < ntotal; i++) {
        struct result *r = &results[i];
        if (!r->done)
            continue;          /* --seconds ran out first */
        sent++;
        if (r->ok && !r->log_bad) {
            passed++;
            continue;
        }
        failed++;
        per_kind_fail[r->kind]++;
        if (report_limit-- > 0)
            fprintf(stderr, "trace_client: request %06lu%06lu (%s) failed: %s\n", run_id, i,
                    kind_name[r->kind], r->log_bad ? "its log lines" : r->why);
    }
    if (server && served + HUGE_REQUESTS < sent - failed) {
        fprintf(stderr, "trace_client: the server counted %lu requests, %lu passed\n", served,
                passed);
        server_ok = false;
    }
    for (int k = 0; k < 10; k++)
        if (per_kind_fail[k])
            fprintf(stderr, "trace_client: %lu failed of kind %s\n", per_kind_fail[k],
                    kind_name[k]);
    printf("trace_client: requests sent %lu (load %lu, huge headers %d, alive check 1)\n", sent,
           sent - HUGE_REQUESTS - 1, HUGE_REQUESTS);
    printf("trace_client: log lines checked %lu (%lu in requests, %lu server, %lu foreign "
           "skipped), mismatches %lu\n",
           st.lines, st.request_lines, st.server_lines, st.foreign, st.mismatches);
    if (server)
        printf("trace_client: server on port %u stopped %s after %lu requests\n", port,
               server_ok ? "cleanly" : "BADLY", served);
    printf("%lu passed, %lu failed\n", passed, failed);
    for (unsigned long i = 0; i < ntotal; i++)
        free(results[i].subs);
    free(results);
    free(huge_header);
    return failed == 0 && st.mismatches == 0 && server_ok && sent > 0 ? 0 : 1;
}
