/* POST /forward: one downstream HTTP call per element of a JSON array, each
 * from a child span with the trace and baggage injected (forward.h). */
#define _GNU_SOURCE
#include "forward.h"

#include <als.h>
#include <als_trace.h>

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define URL_MAX 2048
#define CALLS_MAX 64

void json_string(FILE *out, const char *s, size_t n)
{
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

/* ---- just enough JSON ------------------------------------------------------ */

struct call {
    char url[URL_MAX];
    const char *args;             /* the raw JSON text of "arguments" */
    size_t args_len;
};

static const char *ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* A string at p (its opening quote); decoded into out when out is not
 * NULL (ASCII \u escapes only: a URL needs no more). Returns the end. */
static const char *string(const char *p, const char *e, char *out, size_t cap)
{
    if (p >= e || *p != '"')
        return NULL;
    size_t o = 0;
    for (p++; p < e && *p != '"'; p++) {
        char c = *p;
        if ((unsigned char)c < 0x20)
            return NULL;
        if (c == '\\') {
            if (++p >= e)
                return NULL;
            switch (*p) {
            case '"': case '\\': case '/': c = *p; break;
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': {
                unsigned v = 0;
                for (int i = 1; i <= 4; i++) {
                    char h = p + i < e ? p[i] : 0;
                    int d = h >= '0' && h <= '9' ? h - '0'
                            : h >= 'a' && h <= 'f' ? h - 'a' + 10
                            : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                    if (d < 0)
                        return NULL;
                    v = v * 16 + (unsigned)d;
                }
                p += 4;
                if (out && (v == 0 || v > 0x7f))
                    return NULL;
                c = (char)v;
                break;
            }
            default:
                return NULL;
            }
        }
        if (out) {
            if (o + 1 >= cap)
                return NULL;
            out[o++] = c;
        }
    }
    if (p >= e)
        return NULL;
    if (out)
        out[o] = '\0';
    return p + 1;
}

static const char *value(const char *p, const char *e, int depth)
{
    p = ws(p, e);
    if (p >= e || depth > 64)
        return NULL;
    if (*p == '"')
        return string(p, e, NULL, 0);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = ws(p + 1, e);
        if (p < e && *p == close)
            return p + 1;
        for (;;) {
            if (close == '}') {
                p = string(ws(p, e), e, NULL, 0);
                p = p ? ws(p, e) : NULL;
                if (!p || p >= e || *p != ':')
                    return NULL;
                p++;
            }
            p = value(p, e, depth + 1);
            p = p ? ws(p, e) : NULL;
            if (!p || p >= e)
                return NULL;
            if (*p == close)
                return p + 1;
            if (*p++ != ',')
                return NULL;
        }
    }
    /* A number, true, false or null: its characters. */
    const char *b = p;
    while (p < e && strchr("0123456789+-.eEtruefalsn", *p))
        p++;
    return p > b ? p : NULL;
}

/* [{"url": "...", "arguments": ...}, ...] into calls; -1 when malformed. */
static int parse(const char *p, const char *e, struct call *calls)
{
    int n = 0;
    p = ws(p, e);
    if (p >= e || *p++ != '[')
        return -1;
    p = ws(p, e);
    if (p < e && *p == ']')
        return ws(p + 1, e) == e ? 0 : -1;
    for (;;) {
        if (n == CALLS_MAX)
            return -1;
        struct call *c = &calls[n];
        c->url[0] = '\0';
        c->args = "null";
        c->args_len = 4;
        p = ws(p, e);
        if (p >= e || *p++ != '{')
            return -1;
        p = ws(p, e);
        while (p < e && *p != '}') {
            char key[16];
            p = string(p, e, key, sizeof key);
            if (!p) {
                return -1;
            }
            p = ws(p, e);
            if (p >= e || *p++ != ':')
                return -1;
            p = ws(p, e);
            const char *b = p;
            if (strcmp(key, "url") == 0)
                p = string(p, e, c->url, sizeof c->url);
            else
                p = value(p, e, 0);
            if (!p)
                return -1;
            if (strcmp(key, "arguments") == 0) {
                c->args = b;
                c->args_len = (size_t)(p - b);
            }
            p = ws(p, e);
            if (p < e && *p == ',')
                p = ws(p + 1, e);
        }
        if (p >= e || !c->url[0])
            return -1;
        n++;
        p = ws(p + 1, e);
        if (p < e && *p == ',') {
            p++;
            continue;
        }
        if (p < e && *p == ']')
            return ws(p + 1, e) == e ? n : -1;
        return -1;
    }
}

/* ---- the calls ------------------------------------------------------------- */

#ifdef HAVE_CURL
#include <curl/curl.h>

/* One easy handle per thread: it keeps its connections to the services
 * called, as a real service's client would. Freed when the thread ends. */
static pthread_key_t curl_key;

static void curl_free_handle(void *h)
{
    curl_easy_cleanup(h);
}

bool forward_available(void)
{
    return true;
}

bool forward_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK
           && pthread_key_create(&curl_key, curl_free_handle) == 0;
}

void forward_cleanup(void)
{
    CURL *h = pthread_getspecific(curl_key);
    if (h) {
        pthread_setspecific(curl_key, NULL);
        curl_easy_cleanup(h);
    }
    curl_global_cleanup();
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* The propagator's setter: one "name: value" header line per field. */
static int add_header(void *carrier, const char *name, const char *value)
{
    struct curl_slist **list = carrier;
    char line[ALS_BAGGAGE_BYTES_MAX + 64];
    snprintf(line, sizeof line, "%s: %s", name, value);
    struct curl_slist *l = curl_slist_append(*list, line);
    if (!l)
        return ALS_ENOMEM;
    *list = l;
    return 0;
}

struct job {
    const struct call *call;
    long status;
    const char *error;
};

/* Runs in the call's own child span. */
static void *call_body(void *p)
{
    struct job *j = p;
    CURL *h = pthread_getspecific(curl_key);
    if (!h) {
        h = curl_easy_init();
        if (!h || pthread_setspecific(curl_key, h) != 0) {
            if (h)
                curl_easy_cleanup(h);
            return NULL;
        }
    }
    j->error = "cannot build the headers";
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (!headers || als_propagator_inject(add_header, &headers) < 0) {
        curl_slist_free_all(headers);
        return NULL;
    }
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, j->call->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, j->call->args);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)j->call->args_len);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &j->status);
    else
        j->error = curl_easy_strerror(rc);
    curl_slist_free_all(headers);
    return NULL;
}

int forward_run(const char *body, size_t len, const char *req_id, FILE *out)
{
    struct call *calls = malloc(CALLS_MAX * sizeof *calls);   /* 128 KiB */
    int n = calls ? parse(body, body + len, calls) : -1;
    if (n < 0) {
        free(calls);
        return -1;
    }
    fputc('[', out);
    for (int i = 0; i < n; i++) {
        struct job j = {&calls[i], 0, "no memory"};
        als_trace_ctx span;
        als_trace_run_span(call_body, &j, NULL, &span);
        char sid[ALS_SPAN_ID_HEX + 1];
        als_trace_hex(sid, span.span_id, ALS_SPAN_ID_SIZE);
        als_trace_log("req=%s step=call index=%d status=%ld%s%s", req_id, i, j.status,
                      j.status ? "" : " error=", j.status ? "" : j.error);
        fprintf(out, "%s{\"span_id\":\"%s\",\"status\":%ld}", i ? "," : "", sid, j.status);
    }
    fputc(']', out);
    free(calls);
    return n;
}

#else /* no libcurl: the endpoint says so */

bool forward_available(void)
{
    return false;
}

bool forward_init(void)
{
    return true;
}

void forward_cleanup(void)
{
}

int forward_run(const char *body, size_t len, const char *req_id, FILE *out)
{
    (void)req_id;
    struct call *calls = malloc(CALLS_MAX * sizeof *calls);
    int n = calls ? parse(body, body + len, calls) : -1;
    free(calls);
    (void)out;
    return n < 0 ? -1 : 0;
}

#endif
