/* W3C Baggage (include/als_trace.h): the immutable list, its header format
 * and the store that carries the current one.
 *
 * A list is one allocation: the header, the entry table, then the strings
 * (each NUL-terminated). Lists are never changed after they are built, so
 * any number of scopes, snapshots and tasks share one by reference count;
 * a change builds a new list (copy-on-write). Building goes through a
 * table of slices on the stack (struct member), which is also how a parse
 * collects members before it knows how many there are. */
#include "als_trace.h"
#include "internal.h"

#include <string.h>

struct als_baggage {
    _Atomic size_t refs;
    size_t n;
    size_t wire;                  /* bytes of the members as received, with commas */
    als_baggage_entry e[];        /* then the strings */
};

/* A member to be built: slices into someone else's memory. */
struct member {
    const char *key, *value, *props;
    size_t klen, vlen, plen;
    bool encoded;                 /* value is still percent-encoded */
};

/* ---- the grammar ------------------------------------------------------- */

static bool ows(char c)
{
    return c == ' ' || c == '\t';
}

/* RFC 7230 tchar. */
static bool tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool token_ok(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!tchar((unsigned char)s[i]))
            return false;
    return true;
}

/* baggage-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E */
static bool octet(unsigned char c)
{
    return c >= 0x21 && c <= 0x7e && c != '"' && c != ',' && c != ';' && c != '\\';
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A value: baggage-octets, every `%` starting a %XX escape. */
static bool value_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!octet((unsigned char)s[i]))
            return false;
        if (s[i] == '%' && (i + 2 >= n || hexval((unsigned char)s[i + 1]) < 0
                            || hexval((unsigned char)s[i + 2]) < 0))
            return false;
    }
    return true;
}

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && ows((*s)[0])) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ows((*s)[*n - 1]))
        (*n)--;
}

/* property = key OWS "=" OWS value / key OWS, separated by OWS ";" OWS.
 * Property values are opaque to us (kept, not decoded): only their
 * characters are checked. */
static bool props_ok(const char *s, size_t n)
{
    size_t i = 0;
    do {
        size_t b = i;
        while (i < n && s[i] != ';')
            i++;
        const char *p = s + b;
        size_t pn = i - b;
        const char *eq = memchr(p, '=', pn);
        const char *k = p, *v = eq ? eq + 1 : NULL;
        size_t kn = eq ? (size_t)(eq - p) : pn, vn = eq ? pn - kn - 1 : 0;
        trim(&k, &kn);
        if (!token_ok(k, kn))
            return false;
        if (v) {
            trim(&v, &vn);
            for (size_t j = 0; j < vn; j++)
                if (!octet((unsigned char)v[j]))
                    return false;
        }
    } while (i++ < n);
    return true;
}

/* ---- percent-decoding and UTF-8 ------------------------------------------ */

/* Length of the valid UTF-8 sequence at s, or 0; *bad gets the length of
 * its maximal valid prefix (what one U+FFFD replaces) when it is invalid. */
static size_t utf8_len(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        need = 1;
    else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        *bad = 1;
        return 0;
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *bad = i;
            return 0;
        }
        lo = 0x80;
        hi = 0xbf;
    }
    return need + 1;
}

/* Decodes a checked value (value_ok) into dst; returns its length. Bytes
 * that are not UTF-8 become U+FFFD (§ value): never longer than the
 * input, since only %XX (3 characters) can yield a bad byte. */
static size_t decode(const char *s, size_t n, char *dst)
{
    unsigned char raw[ALS_BAGGAGE_BYTES_MAX];
    size_t r = 0;
    for (size_t i = 0; i < n && r < sizeof raw; i++) {
        if (s[i] == '%') {
            raw[r++] = (unsigned char)(hexval((unsigned char)s[i + 1]) << 4
                                       | hexval((unsigned char)s[i + 2]));
            i += 2;
        } else {
            raw[r++] = (unsigned char)s[i];
        }
    }
    size_t o = 0;
    for (size_t i = 0; i < r;) {
        size_t bad = 0, k = utf8_len(raw + i, r - i, &bad);
        if (k) {
            memcpy(dst + o, raw + i, k);
            o += k;
            i += k;
        } else {
            memcpy(dst + o, "\xef\xbf\xbd", 3);
            o += 3;
            i += bad;
        }
    }
    return o;
}

/* ---- building lists -------------------------------------------------------- */

static als_baggage *build(const struct member *m, size_t n, size_t wire)
{
    size_t bytes = sizeof(als_baggage) + n * sizeof(als_baggage_entry);
    for (size_t i = 0; i < n; i++)
        bytes += m[i].klen + m[i].vlen + m[i].plen + 3;
    als_baggage *b = als__malloc(bytes);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    b->n = n;
    b->wire = wire;
    char *p = (char *)&b->e[n];
    for (size_t i = 0; i < n; i++) {
        als_baggage_entry *e = &b->e[i];
        e->key = p;
        memcpy(p, m[i].key, m[i].klen);
        p += m[i].klen;
        *p++ = '\0';
        e->value = p;
        e->value_len = m[i].encoded ? decode(m[i].value, m[i].vlen, p) : m[i].vlen;
        if (!m[i].encoded)
            memcpy(p, m[i].value, m[i].vlen);
        p += e->value_len;
        *p++ = '\0';
        e->properties = p;
        memcpy(p, m[i].props, m[i].plen);
        p += m[i].plen;
        *p++ = '\0';
    }
    return b;
}

/* The members of an existing list, as slices. */
static size_t load(const als_baggage *b, struct member *m)
{
    size_t n = b ? b->n : 0;
    for (size_t i = 0; i < n; i++) {
        const als_baggage_entry *e = &b->e[i];
        m[i] = (struct member){e->key, e->value, e->properties, strlen(e->key),
                               e->value_len, strlen(e->properties), false};
    }
    return n;
}

int als_baggage_parse(const als_baggage *prev, const char *s, size_t len, als_baggage **out)
{
    if (!out || (!s && len > 0))
        return ALS_EINVAL;
    *out = NULL;
    struct member m[ALS_BAGGAGE_MEMBERS_MAX];
    size_t n = load(prev, m), wire = prev ? prev->wire : 0;
    for (size_t i = 0; i <= len && n < ALS_BAGGAGE_MEMBERS_MAX;) {
        size_t b = i;
        while (i < len && s[i] != ',')
            i++;
        const char *mem = s + b;
        size_t mn = i++ - b;
        trim(&mem, &mn);
        if (mn == 0)
            continue;
        const char *semi = memchr(mem, ';', mn);
        size_t kvn = semi ? (size_t)(semi - mem) : mn;
        const char *eq = memchr(mem, '=', kvn);
        if (!eq)
            continue;                          /* no value: not a member */
        const char *k = mem, *v = eq + 1, *p = semi ? semi + 1 : mem + mn;
        size_t kn = (size_t)(eq - mem), vn = kvn - kn - 1, pn = semi ? mn - kvn - 1 : 0;
        trim(&k, &kn);
        trim(&v, &vn);
        trim(&p, &pn);
        if (!token_ok(k, kn) || !value_ok(v, vn) || (semi && !props_ok(p, pn)))
            continue;                          /* dropped, the rest kept */
        size_t add = mn + (n > 0);
        if (wire + add > ALS_BAGGAGE_BYTES_MAX)
            break;                             /* § Limits: whole members only */
        wire += add;
        m[n++] = (struct member){k, v, p, kn, vn, pn, true};
    }
    if (n == 0)
        return 0;
    *out = build(m, n, wire);
    return *out ? (int)n : ALS_ENOMEM;
}

/* ---- formatting -------------------------------------------------------------- */

static const char hexdig[] = "0123456789ABCDEF";

/* The encoded length of a value. */
static size_t enc_len(const char *v, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += octet((unsigned char)v[i]) && v[i] != '%' ? 1 : 3;
    return k;
}

int als_baggage_format(const als_baggage *b, char *buf, size_t size)
{
    if (!buf || size == 0)
        return ALS_EINVAL;
    size_t o = 0, kept = 0;
    for (size_t i = 0; b && i < b->n && kept < ALS_BAGGAGE_MEMBERS_MAX; i++) {
        const als_baggage_entry *e = &b->e[i];
        size_t kn = strlen(e->key), pn = strlen(e->properties);
        size_t need = (o > 0) + kn + 1 + enc_len(e->value, e->value_len) + (pn ? pn + 1 : 0);
        if (o + need > ALS_BAGGAGE_BYTES_MAX)
            continue;                          /* never a partial member */
        if (o + need >= size) {
            buf[0] = '\0';
            return ALS_EINVAL;
        }
        if (o > 0)
            buf[o++] = ',';
        memcpy(buf + o, e->key, kn);
        o += kn;
        buf[o++] = '=';
        for (size_t j = 0; j < e->value_len; j++) {
            unsigned char c = (unsigned char)e->value[j];
            if (octet(c) && c != '%') {        /* § value: `%` MUST be encoded */
                buf[o++] = (char)c;
            } else {
                buf[o++] = '%';
                buf[o++] = hexdig[c >> 4];
                buf[o++] = hexdig[c & 15];
            }
        }
        if (pn) {
            buf[o++] = ';';
            memcpy(buf + o, e->properties, pn);
            o += pn;
        }
        kept++;
    }
    buf[o] = '\0';
    return (int)o;
}

/* ---- reading and changing lists ---------------------------------------------- */

size_t als_baggage_count(const als_baggage *b)
{
    return b ? b->n : 0;
}

int als_baggage_entry_at(const als_baggage *b, size_t i, als_baggage_entry *out)
{
    if (!b || !out || i >= b->n)
        return ALS_EINVAL;
    *out = b->e[i];
    return 0;
}

const char *als_baggage_find(const als_baggage *b, const char *key, size_t *len)
{
    for (size_t i = 0; b && key && i < b->n; i++) {
        if (strcmp(b->e[i].key, key) == 0) {
            if (len)
                *len = b->e[i].value_len;
            return b->e[i].value;
        }
    }
    return NULL;
}

/* Members of b without `key`; their wire size into *wire. */
static size_t load_without(const als_baggage *b, const char *key, struct member *m, size_t *wire)
{
    size_t n = load(b, m), k = 0;
    *wire = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(m[i].key, key) == 0)
            continue;
        m[k++] = m[i];
        *wire += (k > 1) + m[i].klen + 1 + enc_len(m[i].value, m[i].vlen)
                 + (m[i].plen ? m[i].plen + 1 : 0);
    }
    return k;
}

int als_baggage_with(const als_baggage *b, const char *key, const char *value,
                     size_t value_len, const char *properties, als_baggage **out)
{
    if (!out)
        return ALS_EINVAL;
    *out = NULL;
    size_t pn = properties ? strlen(properties) : 0;
    if (!key || !token_ok(key, strlen(key)) || (!value && value_len > 0)
        || (pn && !props_ok(properties, pn)))
        return ALS_EINVAL;
    struct member m[ALS_BAGGAGE_MEMBERS_MAX + 1];
    size_t wire, n = load_without(b, key, m, &wire);
    if (n == ALS_BAGGAGE_MEMBERS_MAX)
        return ALS_EINVAL;
    size_t kn = strlen(key);
    m[n++] = (struct member){key, value ? value : "", pn ? properties : "", kn, value_len, pn,
                             false};
    wire += (n > 1) + kn + 1 + enc_len(value ? value : "", value_len) + (pn ? pn + 1 : 0);
    *out = build(m, n, wire);
    return *out ? 0 : ALS_ENOMEM;
}

int als_baggage_without(const als_baggage *b, const char *key, als_baggage **out)
{
    if (!out || !key)
        return ALS_EINVAL;
    *out = NULL;
    struct member m[ALS_BAGGAGE_MEMBERS_MAX];
    size_t wire, n = load_without(b, key, m, &wire);
    if (n == 0)
        return 0;
    *out = build(m, n, wire);
    return *out ? 0 : ALS_ENOMEM;
}

als_baggage *als_baggage_retain(const als_baggage *b)
{
    als_baggage *m = (als_baggage *)b;   /* only the count changes */
    if (m)
        atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void als_baggage_release(als_baggage *b)
{
    /* Release: our reads of the list happen before whoever frees it;
     * the acquire fence on the last drop orders the free after them. */
    if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_release) == 1) {
        atomic_thread_fence(memory_order_acquire);
        als__free(b);
    }
}

/* ---- the current baggage -------------------------------------------------- */

static _Atomic(als_t *) bag_store;

static void bag_destroy(void *value)
{
    als_baggage_release(value);
}

als_t *als_baggage_store(void)
{
    als_t *s = atomic_load_explicit(&bag_store, memory_order_acquire);
    if (ALS__LIKELY(s))
        return s;
    als_options o = {.name = "als.baggage", .default_value = NULL, .destroy = bag_destroy};
    als_t *mine = als_new(&o);
    if (!mine)
        return NULL;
    als_t *expected = NULL;
    /* As als_trace_store: racing first calls agree on one store. */
    if (atomic_compare_exchange_strong_explicit(&bag_store, &expected, mine,
                                                memory_order_acq_rel, memory_order_acquire))
        return mine;
    als_free(mine);
    return expected;
}

const als_baggage *als_baggage_current(void)
{
    als_t *s = atomic_load_explicit(&bag_store, memory_order_acquire);
    return s ? als_get(s) : NULL;
}

const char *als_baggage_get(const char *key, size_t *len)
{
    return als_baggage_find(als_baggage_current(), key, len);
}

int als_baggage_enter(const als_baggage *b)
{
    als_t *s = als_baggage_store();
    if (!s)
        return ALS_ENOMEM;
    /* The binding owns a reference; on failure the store drops it. */
    return als_enter_with(s, als_baggage_retain(b));
}

/* Binds a list made for the current scope (its one reference goes to the
 * store, whatever happens). */
static int enter_owned(int rc, als_baggage *made)
{
    if (rc != 0)
        return rc;
    als_t *s = als_baggage_store();
    if (!s) {
        als_baggage_release(made);
        return ALS_ENOMEM;
    }
    return als_enter_with(s, made);
}

int als_baggage_set(const char *key, const char *value, const char *properties)
{
    als_baggage *made;
    int rc = als_baggage_with(als_baggage_current(), key, value,
                              value ? strlen(value) : 0, properties, &made);
    return enter_owned(rc, made);
}

int als_baggage_remove(const char *key)
{
    als_baggage *made;
    int rc = als_baggage_without(als_baggage_current(), key, &made);
    return enter_owned(rc, made);
}

int als_baggage_run(const als_baggage *b, als_fn fn, void *arg, void **result)
{
    if (!fn)
        return ALS_EINVAL;
    als_t *s = als_baggage_store();
    if (!s)
        return ALS_ENOMEM;
    return als__run_owned(s, als_baggage_retain(b), fn, arg, result);
}
