/* Stores: handles, slot indices and liveness epochs.
 *
 * Each live store owns one slot index, used to index every context table.
 * Indices are recycled after als_free, so a context may still hold a
 * binding of a freed store in a slot a new store now uses. Bindings carry
 * the epoch of their store at bind time; epochs are globally unique and
 * never reused, and a store's current epoch lives in a registry cell that
 * outlives the store. A binding is live iff its epoch equals its slot's
 * cell: als_disable and als_free just give the cell a fresh epoch.
 *
 * Cells live in fixed chunks that are never freed or moved, so readers on
 * any thread (captures dropping dead bindings) need no lock. als_new and
 * als_free take a mutex: they are not hot paths.
 * uses: alloc.c
 */
#include "internal.h"

#include <pthread.h>
#include <string.h>

#define CHUNK_BITS 10
#define CHUNK_SIZE (1u << CHUNK_BITS)
#define MAX_CHUNKS 1024            /* 2^20 live stores at most */
#define FREE_SLOTS_FIRST 64        /* first capacity of the free index list */

static _Atomic(_Atomic uint64_t *) chunks[MAX_CHUNKS];
static _Atomic uint64_t next_epoch = 1;
static _Atomic uint32_t slot_count;  /* indices ever handed out */

/* Bumped by every als_disable once the store's cell holds its new epoch.
 * Captures compare it with the value they saw last to know whether a
 * cached or entered frame may hold values of a store disabled since (see
 * als__capture). Release/acquire: whoever sees the new count also sees the
 * new epoch. */
_Atomic uint64_t als__disable_gen;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t *free_slots;         /* recycled indices, under lock */
static uint32_t free_len, free_cap;

/* A globally unique, never reused epoch (never 0). */
static uint64_t epoch_next(void)
{
    /* Uniqueness is all that matters: relaxed. */
    return atomic_fetch_add_explicit(&next_epoch, 1, memory_order_relaxed);
}

uint32_t als__slot_count(void)
{
    return atomic_load_explicit(&slot_count, memory_order_relaxed);
}

static _Atomic uint64_t *cell(uint32_t index)
{
    /* Acquire pairs with the release that published the chunk: its zeroed
     * cells are visible before we read them. */
    _Atomic uint64_t *c = atomic_load_explicit(&chunks[index >> CHUNK_BITS],
                                               memory_order_acquire);
    return &c[index & (CHUNK_SIZE - 1)];
}

bool als__epoch_live(uint32_t index, uint64_t epoch)
{
    return atomic_load_explicit(cell(index), memory_order_relaxed) == epoch;
}

/* Takes a free index, or a new one (creating its chunk). Under lock. */
static int slot_take(uint32_t *out)
{
    if (free_len > 0) {
        *out = free_slots[--free_len];
        return 0;
    }
    uint32_t i = atomic_load_explicit(&slot_count, memory_order_relaxed);
    if (i >= (uint32_t)MAX_CHUNKS * CHUNK_SIZE)
        return ALS_ENOMEM;
    /* The chunk may exist already: made by an earlier call that failed
     * afterwards. */
    if ((i & (CHUNK_SIZE - 1)) == 0 &&
        !atomic_load_explicit(&chunks[i >> CHUNK_BITS], memory_order_relaxed)) {
        _Atomic uint64_t *c = als__calloc(CHUNK_SIZE, sizeof *c);
        if (!c)
            return ALS_ENOMEM;
        atomic_store_explicit(&chunks[i >> CHUNK_BITS], c, memory_order_release);
    }
    /* Make room to give the index back later, so that als_free cannot fail. */
    if (free_cap <= i) {
        uint32_t cap = free_cap ? free_cap * 2 : FREE_SLOTS_FIRST;
        while (cap <= i)
            cap *= 2;
        uint32_t *f = als__realloc(free_slots, cap * sizeof *f);
        if (!f)
            return ALS_ENOMEM; /* the chunk stays: it is reused next time */
        free_slots = f;
        free_cap = cap;
    }
    atomic_store_explicit(&slot_count, i + 1, memory_order_relaxed);
    *out = i;
    return 0;
}

als_t *als_new(const als_options *opts)
{
    const char *name = opts && opts->name ? opts->name : "";
    size_t len = strlen(name) + 1;
    als_t *als = als__malloc(sizeof *als + len);
    if (!als)
        return NULL;
    memcpy(als->name, name, len);
    als->default_value = opts ? opts->default_value : NULL;
    als->destroy = opts ? opts->destroy : NULL;

    pthread_mutex_lock(&lock);
    int rc = slot_take(&als->index);
    pthread_mutex_unlock(&lock);
    if (rc) {
        als__free(als);
        return NULL;
    }
    als->epoch = cell(als->index);
    atomic_store_explicit(als->epoch, epoch_next(), memory_order_relaxed);
    return als;
}

void als_free(als_t *als)
{
    if (!als)
        return;
    /* Every binding of this store is dead from now on, wherever it is. */
    atomic_store_explicit(als->epoch, epoch_next(), memory_order_relaxed);
    pthread_mutex_lock(&lock);
    free_slots[free_len++] = als->index;
    pthread_mutex_unlock(&lock);
    als__free(als);
}

const char *als_name(const als_t *als)
{
    return als ? als->name : NULL;
}

void als_disable(als_t *als)
{
    /* Relaxed: "from then on" means for whoever is ordered after this call
     * by other synchronisation, and coherence gives them the new epoch. */
    if (!als)
        return;
    atomic_store_explicit(als->epoch, epoch_next(), memory_order_relaxed);
    atomic_fetch_add_explicit(&als__disable_gen, 1, memory_order_release);
}
