/* als_thread_create: a pthread that inherits its creator's context. */
#include "internal.h"

#include <errno.h>

struct start {
    als_fn fn;
    void *arg;
    struct als_snapshot *frame;
    uint64_t exec_id, trigger_id;
};

static void *thread_main(void *p)
{
    struct start st = *(struct start *)p;
    als__free(p);
    /* The thread's outermost scope: what fn binds at its top level ends
     * here, with the thread. */
    struct als__scope s;
    als__scope_open_frame(&s, st.frame, true, st.exec_id, st.trigger_id);
    void *result = st.fn(st.arg);
    als__scope_end(&s);
    als__frame_release(st.frame);
    return result;
}

int als_thread_create(pthread_t *thread, const pthread_attr_t *attr,
                      als_fn fn, void *arg)
{
    if (!thread || !fn)
        return ALS_EINVAL;
    struct start *st = als__malloc(sizeof *st);
    if (!st)
        return ALS_ENOMEM;
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
