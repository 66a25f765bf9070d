/* A thread's context table (als__tls): where its current bindings live, and
 * the memory behind it. The table is the thread's inline base table, a
 * private heap table, or an entered frame's (shared, read only: the first
 * write copies it, copy-on-write). Private tables are recycled through a
 * per-thread spare list and freed when the thread exits.
 * uses: store.c (slot count), alloc.c
 *
 * Everything here is thread-local: no atomics, no locks. */
#include "internal.h"

#include <string.h>

_Thread_local struct als__tls als__tls __attribute__((tls_model("initial-exec")));
#define T als__tls

/* New private tables have a multiple of this many slots (a power of two). */
#define TABLE_ROUND 16u

/* Capacity for a new private table: room for every store that exists, so
 * that a thread rarely grows a table again. */
static uint32_t table_cap(uint32_t need)
{
    uint32_t c = als__slot_count();
    if (c < need)
        c = need;
    return (c + TABLE_ROUND - 1) & ~(TABLE_ROUND - 1);
}

static struct als__table *table_get(uint32_t cap, int *made)
{
    if (ALS__UNLIKELY(!T.cow_ready)) {
        T.cow_ready = true;
        T.cow.t.cap = ALS__BASE_SLOTS;
        als__table_put(&T.cow.t);
    }
    for (struct als__table **pp = &T.spare; *pp; pp = &(*pp)->next) {
        struct als__table *t = *pp;
        if (t->cap >= cap) {
            *pp = t->next;
            return t;
        }
    }
    struct als__table *t = als__malloc(sizeof *t + (size_t)cap * sizeof t->slots[0]);
    if (!t)
        return NULL;
    t->cap = cap;
    *made = ALS__TABLE_NEW; /* spare tables are freed when the thread exits */
    return t;
}

/* Copy-on-write: the current table is an entered frame's; make it private
 * with room for slot i. */
static int table_copy(uint32_t i)
{
    const struct als_snapshot *f = T.v.entered;
    uint32_t need = f->n > i ? f->n : i + 1;
    int made = 0;
    struct als__table *t = table_get(table_cap(need), &made);
    if (!t)
        return ALS_ENOMEM;
    memcpy(t->slots, f->slots, f->n * sizeof t->slots[0]);
    memset(t->slots + f->n, 0, (t->cap - f->n) * sizeof t->slots[0]);
    T.v.slots = t->slots;
    T.v.n = t->cap;
    T.v.shared = false;
    T.v.table = t;
    return made;
}

/* The current private table is too small for slot i. Rare: out of line,
 * to keep als__table_writable's copy path lean (measured). */
static __attribute__((noinline)) int table_grow(uint32_t i)
{
    if (!T.v.table && !T.v.slots) { /* first write on this thread */
        T.v.slots = T.base;
        T.v.n = ALS__BASE_SLOTS;
        if (i < T.v.n)
            return 0;
    }
    uint32_t cap = table_cap(i + 1);
    bool base = !T.v.table;
    struct als__table *old = base ? T.base_heap : T.v.table;
    bool inline_cow = old == &T.cow.t;
    struct als__table *t = als__realloc(inline_cow ? NULL : old,
                                        sizeof *t + (size_t)cap * sizeof t->slots[0]);
    if (!t)
        return ALS_ENOMEM;
    if ((base && !old) || inline_cow) /* leaving an inline table */
        memcpy(t->slots, T.v.slots, T.v.n * sizeof t->slots[0]);
    if (inline_cow)
        als__table_put(old);
    memset(t->slots + T.v.n, 0, (cap - T.v.n) * sizeof t->slots[0]);
    t->cap = cap;
    T.v.slots = t->slots;
    T.v.n = cap;
    if (!base) {
        T.v.table = t;
        return 0;
    }
    T.base_heap = t;
    return ALS__TABLE_NEW; /* freed when the thread exits */
}

int als__table_writable(uint32_t i)
{
    return T.v.shared ? table_copy(i) : table_grow(i);
}

void als__tables_free(void)
{
    /* The inline table lives in T: unlink it, free the rest. */
    struct als__table **pp = &T.spare;
    while (*pp && *pp != &T.cow.t)
        pp = &(*pp)->next;
    if (*pp)
        *pp = (*pp)->next;
    for (struct als__table *t = T.spare, *next; t; t = next) {
        next = t->next;
        als__free(t);
    }
    if (!T.v.shared && T.v.table != &T.cow.t)
        als__free(T.v.table);
    als__free(T.base_heap);
    T.spare = NULL;
    T.v = (struct als__view){ .slots = NULL };
    T.base_heap = NULL;
}
