/* The scope record and the deadline thread's interface, private to
 * lib/context/cancel.c and lib/context/deadline.c (the cancellation layer;
 * internal.h declares what the layers above use). */
#ifndef ALS_CANCEL_H
#define ALS_CANCEL_H

#include "internal.h"

#include <pthread.h>
#include <time.h>

struct als_cancel {
    _Atomic uint32_t refs;
    /* Set once, under `lock`; read anywhere. Release/acquire: what the
     * canceller did before als_cancel is visible to code that sees it. */
    _Atomic bool cancelled;
    /* Absolute CLOCK_MONOTONIC ns, INT64_MAX: none. Immutable: published
     * with the scope itself (its creation, or the capture that hands it on). */
    int64_t deadline;
    /* Under `lock`: */
    struct als_cancel *parent, *child, *next, *prev; /* the tree */
    struct als__cancel_hook hooks;                   /* circular list, sentinel */
    const struct als__cancel_hook *running;          /* callback in progress */
    int64_t running_id;                              /* its id (it may be freed) */
    pthread_t run_thread;                            /* the thread running it */
    size_t heap_at;                                  /* heap index + 1; 0: none */
    struct als_cancel *runq;                         /* a canceller's list */
};

/* One mutex for every cold path of cancellation (new, cancel, release,
 * on/off, the deadline thread), and the condition a finished callback
 * signals. Defined in deadline.c, the lower of the two files. */
extern pthread_mutex_t als__cancel_lock;
extern pthread_cond_t als__cancel_done_cv;

/* Clock `id` in ns; als__deadline_now: CLOCK_MONOTONIC, the clock of
 * every deadline. */
int64_t als__deadline_clock(clockid_t id);
static inline int64_t als__deadline_now(void)
{
    return als__deadline_clock(CLOCK_MONOTONIC);
}
/* Once, before any deadline: `expire` is what the deadline thread calls
 * for a scope whose deadline passed, under als__cancel_lock, which it must
 * hold again when it returns. Also installs the fork handlers. */
void als__deadline_init(void (*expire)(struct als_cancel *c));
/* Under als__cancel_lock: adds c (deadline set, heap_at 0) to the heap,
 * starting the deadline thread the first time. 0 or ALS_ENOMEM. */
int als__deadline_add(struct als_cancel *c);
/* Under als__cancel_lock: removes c (heap_at != 0) from the heap. */
void als__deadline_remove(struct als_cancel *c);

#endif
