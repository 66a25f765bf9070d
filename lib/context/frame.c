/* Frames and heap bindings: their reference counts (als_snapshot_retain,
 * als_snapshot_release), and the empty frame.
 * uses: alloc.c, tsan.h
 *
 * A frame (struct als_snapshot) is a captured context: an immutable table
 * holding one reference on each of its bindings. Frames and heap bindings
 * are shared between threads and die with their last reference, on any
 * thread. Both the scopes that enter frames (context.c) and the captures
 * that build them (snapshot.c) release them, so the counting sits here,
 * below both. */
#include "internal.h"
#include "tsan.h"

/* The empty context: static, never counted, never freed. Detached tasks and
 * captures of an empty context use it, so they touch no shared counter. */
struct als_snapshot als__empty_frame;

void als__binding_release(struct als__binding *b)
{
    /* acq_rel: the last releaser must see every other holder's accesses
     * before destroying (the usual reference-count pairing; a fence would
     * do on the acquire side, but TSan does not model fences). */
    als__hb_release(&b->refs);
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    als__hb_acquire(&b->refs);
    void *value = b->value;
    void (*destroy)(void *) = b->destroy;
    als__free(b); /* a promoted binding, or an entry whose binding is first */
    if (destroy && value)
        destroy(value);
}

/* The last reference is gone. Out of line, so that the common release (not
 * the last) saves no registers (measured: 7 instructions per capture). */
static __attribute__((noinline)) void frame_free(struct als_snapshot *f)
{
    for (uint32_t i = 0; i < f->n; i++)
        if (f->slots[i])
            als__binding_release(f->slots[i]);
    als__free(f);
}

void als__frame_release_n(struct als_snapshot *f, uint32_t n)
{
    if (f == &als__empty_frame)
        return;
    als__hb_release(&f->n); /* not f: that is the capture edge (tsan.h) */
    if (atomic_fetch_sub_explicit(&f->refs, n, memory_order_acq_rel) != n)
        return;
    als__hb_acquire(&f->n);
    frame_free(f);
}

/* The public retain and release: here, so that the release of a snapshot
 * (after every capture a user makes) inlines the common case. */
als_snapshot_t *als_snapshot_retain(als_snapshot_t *snap)
{
    return snap ? als__frame_retain(snap) : NULL;
}

void als_snapshot_release(als_snapshot_t *snap)
{
    if (snap)
        als__frame_release(snap);
}
