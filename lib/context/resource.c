/* AsyncResource and async ids: identities for rebuilding the causal tree
 * of work across threads (which scope caused which).
 * uses: frame.c, context.c, snapshot.c (capture, scopes, bound functions),
 * alloc.c, tsan.h */
#include "internal.h"
#include "tsan.h"

#include <assert.h>
#include <string.h>

#define T als__tls

/* Reserved ids: 0, no trigger (and, in als__tls.exec_id, the top level);
 * ID_TOP, a thread's top level as reported. */
#define ID_TOP 1
static _Atomic uint64_t next_async_id = ID_TOP + 1;

uint64_t als__async_id_next(void)
{
    /* Uniqueness and increase in modification order are all we promise:
     * relaxed is enough. */
    return atomic_fetch_add_explicit(&next_async_id, 1, memory_order_relaxed);
}

/* The innermost scope at or outside `s` that set the execution ids, whose
 * saved ids are those of the code the current execution was started from;
 * NULL at a thread's top level. */
static struct als__scope *ids_scope(struct als__scope *s)
{
    while (s && !s->ids)
        s = s->outer;
    return s;
}

/* An id as reported: 0 (a thread's top level) reads as ID_TOP. */
static uint64_t id_shown(uint64_t id)
{
    return id ? id : ID_TOP;
}

/* Resolves the ids that ids scope `s` saved, drawing each lazy id only
 * after the id of whatever triggered it, so ids increase along the causal
 * chain. Inline task runs nest (pool.c), so the chain of unknown triggers
 * can be long: each pass resolves its outermost link, without recursion. */
static void saved_ids_resolve(struct als__scope *s)
{
    while (s->trigger_id == ALS__ID_PARENT) {
        struct als__scope *x = s, *o = ids_scope(s->outer);
        while (o && o->trigger_id == ALS__ID_PARENT) {
            x = o;
            o = ids_scope(o->outer);
        }
        if (!o) {
            /* Cannot happen: ALS__ID_PARENT is only ever set by an ids
             * scope (an inline run), which stays open outside `x`. */
            assert(!"a scope saved ALS__ID_PARENT outside any ids scope");
            x->trigger_id = ID_TOP;
            continue;
        }
        if (o->exec_id == ALS__ID_LAZY)
            o->exec_id = als__async_id_next();
        x->trigger_id = id_shown(o->exec_id);
    }
    if (s->exec_id == ALS__ID_LAZY)
        s->exec_id = als__async_id_next();
}

static uint64_t trigger_resolve(void)
{
    struct als__scope *s = ids_scope(T.scope);
    if (!s) {
        assert(!"ALS__ID_PARENT set outside any ids scope"); /* as above */
        return T.trigger_id = ID_TOP;
    }
    saved_ids_resolve(s);
    return T.trigger_id = id_shown(s->exec_id);
}

uint64_t als_execution_async_id(void)
{
    uint64_t id = T.exec_id;
    if (ALS__UNLIKELY(id == ALS__ID_LAZY)) {
        if (T.trigger_id == ALS__ID_PARENT)
            trigger_resolve();
        id = T.exec_id = als__async_id_next();
    }
    return id_shown(id);
}

uint64_t als_trigger_async_id(void)
{
    uint64_t id = T.trigger_id;
    return ALS__UNLIKELY(id == ALS__ID_PARENT) ? trigger_resolve() : id;
}

struct als_resource {
    struct als_snapshot *frame;
    uint64_t async_id, trigger_id;
    char type[];
};

als_resource_t *als_resource_new(const char *type)
{
    if (!type)
        type = "";
    size_t len = strlen(type) + 1;
    als_resource_t *r = als__malloc(sizeof *r + len);
    if (!r)
        return NULL;
    als__jump_check(ALS__NSP());
    r->frame = als__capture();
    if (!r->frame) {
        als__free(r);
        return NULL;
    }
    memcpy(r->type, type, len);
    /* Trigger first: inside a pool task it may draw the task's lazy id,
     * which must come before the id of what the task creates. */
    r->trigger_id = als_execution_async_id();
    r->async_id = als__async_id_next();
    als__hb_release(r); /* to als_resource_run_in_scope on any thread */
    return r;
}

void als_resource_free(als_resource_t *res)
{
    if (!res)
        return;
    als__frame_release(res->frame);
    als__free(res);
}

const char *als_resource_type(const als_resource_t *res)
{
    return res ? res->type : NULL;
}

uint64_t als_resource_async_id(const als_resource_t *res)
{
    return res ? res->async_id : 0;
}

uint64_t als_resource_trigger_async_id(const als_resource_t *res)
{
    return res ? res->trigger_id : 0;
}

void *als_resource_run_in_scope(als_resource_t *res, als_fn fn, void *arg)
{
    if (!res || !fn)
        return NULL;
    als__hb_acquire(res);
    struct als__rec fallback;
    ALS__REC r = als__rec_open_frame(&fallback, ALS__NSP(), res->frame, true, res->async_id,
                                     res->trigger_id);
    (void)r;
    return fn(arg);
}

int als_resource_enter(als_scope_t *scope, als_resource_t *res)
{
    if (!scope || !res)
        return ALS_EINVAL;
    als__hb_acquire(res);
    als__jump_check(ALS__NSP());
    als__scope_enter((struct als__scope *)(void *)scope, res->frame, true,
                     res->async_id, res->trigger_id);
    return 0;
}

als_bound_t *als_resource_bind(als_resource_t *res, als_fn fn)
{
    if (!res || !fn)
        return NULL;
    als_bound_t *b = als__bound_new(fn, als__frame_retain(res->frame), true,
                                    res->async_id, res->trigger_id);
    if (!b)
        als__frame_release(res->frame);
    return b;
}
