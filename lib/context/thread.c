/* als_thread_create: a pthread that inherits its creator's context.
 * uses: frame.c, context.c, snapshot.c (capture), resource.c (ids), alloc.c */
#include "internal.h"

#include <errno.h>

struct start {
    als_fn fn;
    void *arg;
    struct als_snapshot *frame;
    uint64_t exec_id, trigger_id;
};

/* The thread's outermost scope and the frame it entered. */
struct outer {
    struct als__scope s;
    struct als_snapshot *frame;
};

/* Ends the outermost scope however fn is left: a return, or pthread_exit
 * or a cancellation unwinding (an exception that escapes fn finds no
 * handler and terminates the process before any cleanup runs). */
static void outer_end(struct outer *o)
{
    als__scope_end(&o->s);
    als__frame_release(o->frame);
}

static void *thread_main(void *p)
{
    struct start st = *(struct start *)p;
    als__free(p);
    /* What fn binds at its top level ends here, with the thread. */
    struct outer o __attribute__((cleanup(outer_end))) = { .frame = st.frame };
    als__scope_open_frame(&o.s, st.frame, true, st.exec_id, st.trigger_id);
    return st.fn(st.arg);
}

int als_thread_create(pthread_t *thread, const pthread_attr_t *attr,
                      als_fn fn, void *arg)
{
    if (!thread || !fn)
        return ALS_EINVAL;
    struct start *st = als__malloc(sizeof *st);
    if (!st)
        return ALS_ENOMEM;
    als__jump_check(ALS__NSP());
    st->frame = als__capture();
    if (!st->frame) {
        als__free(st);
        return ALS_ENOMEM;
    }
    st->fn = fn;
    st->arg = arg;
    /* Trigger first: it may draw a pool task's lazy id (see resource.c). */
    st->trigger_id = als_execution_async_id();
    st->exec_id = als__async_id_next();
    int rc = pthread_create(thread, attr, thread_main, st);
    if (rc) {
        als__frame_release(st->frame);
        als__free(st);
        return rc == EINVAL ? ALS_EINVAL : ALS_ENOMEM;
    }
    return 0;
}
