/** @file
 * libals: async-local storage for C threads.
 *
 * Node.js's AsyncLocalStorage for C: code deep in a call tree asks "which
 * request am I serving?" without every function passing the request down,
 * and concurrent work never sees another's values. The whole public API is
 * in this header; every function's contract is written beside it.
 *
 * Model
 * -----
 * Each thread has a *current context*: for every store (als_t) either a
 * bound value or nothing. Scopes change it for the duration of a call
 * (als_run, als_exit, als_snapshot_run, bound calls, resource scopes, pool
 * tasks) and restore it exactly when the call returns. A snapshot is an
 * immutable, reference-counted copy of a whole context; capturing it twice
 * without an intervening change costs one atomic increment.
 *
 * Threads: all functions are thread-safe. Values are never copied: the
 * store hands back the pointer you bound.
 *
 * Non-local exits
 * ---------------
 * A scope ends however its call is left. A C++ exception, pthread_exit()
 * or pthread_cancel() unwinding through als_run, als_exit,
 * als_snapshot_run, a bound call, a resource scope, a pool task or an
 * als_thread_create thread function restores the context exactly as a
 * return would and releases what the scope bound, once (the library is
 * built with -fexceptions; each scope closes in a cleanup handler). A C++
 * exception caught around the call finds the caller's context intact. An
 * exception that escapes a pool task or a thread function terminates the
 * process, as with std::thread (catch inside the task); destroy, cancel and
 * on_error callbacks must not throw either. Cancellation means deferred
 * cancellation (the default): no libals function is async-cancel-safe.
 *
 * longjmp() and siglongjmp() run no cleanup. Each function-call scope
 * records its opener's stack position in a per-thread record that is not
 * on the stack, so a jump out of scopes is noticed and every scope jumped
 * out of is unwound, innermost first, exactly as its return would have
 * (values released once, the context that of the scope the jump landed
 * in), by the first of:
 *   - a scope entry or exit (als_run, als_exit, als_enter_with,
 *     als_snapshot_run, als_bound_call, als_resource_run_in_scope,
 *     als_scope_enter, als_scope_leave) or a capture (als_snapshot,
 *     als_bind, als_resource_new, als_thread_create, als_submit,
 *     als_submit_task, als_submit_after, als_submit_future,
 *     als_future_then, als_group_submit) called from the function that
 *     called setjmp, or from any function above it;
 *   - the end of any scope around the setjmp (including a pool task's);
 *   - the thread's exit.
 * Until then als_get may still return the values of the abandoned scopes,
 * and calls made from functions deeper than the landing one may not notice
 * the jump. Jumps are recognised between frames of
 * the thread's own stack only (not from a sigaltstack or a fiber's stack);
 * a jump must not leave a pool task, a thread function or a libals
 * callback, nor skip an als_scope_leave (what the explicit scope holds
 * then leaks). The first scope at each 32 levels of nesting depth takes a
 * block of records that the thread keeps until it exits; if that
 * allocation fails the scope still works (its record stays on the stack),
 * but a longjmp out of it is then not supported.
 *
 * ThreadSanitizer: a program built with -fsanitize=thread against the
 * ordinary (uninstrumented) libals is told every ordering the library
 * provides: a submit before its task, a task before the drain, wait or
 * continuation that observes its end, a capture (als_snapshot, als_bind,
 * als_resource_new) before the entries into it, every use of a value before
 * its destroy callback. No suppressions or options are needed (README,
 * "Testing your program under ThreadSanitizer").
 */
#ifndef ALS_H
#define ALS_H

#include <pthread.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @defgroup version Version
 *  @{ */
#define ALS_VERSION_MAJOR 0 /**< major version of these headers; changes with the ABI (SONAME) */
#define ALS_VERSION_MINOR 1 /**< minor version of these headers: additions only */
#define ALS_VERSION_PATCH 0 /**< patch version of these headers: fixes only */
/** These headers' version as "MAJOR.MINOR.PATCH"; als_version() gives the
 *  library's at run time. */
#define ALS_VERSION_STRING "0.1.0"
/** @} */

/** Marks the exported API. Everything else in the library is hidden.
 *  Users of the static library libals.a may define ALS_STATIC_DEFINE (CMake's
 *  als::als_static and `pkg-config --static --cflags als` do): ALS_API then
 *  expands to nothing. It changes nothing at link time on ELF platforms; it
 *  only keeps the declarations free of a visibility attribute. */
#if defined(ALS_STATIC_DEFINE)
#define ALS_API
#elif defined(__GNUC__)
#define ALS_API __attribute__((visibility("default")))
#else
#define ALS_API
#endif

/** @defgroup errors Error codes
 *  Functions that can fail return 0 (ALS_OK) or one of these negative codes.
 *  @{ */
#define ALS_OK          0      /**< success */
#define ALS_EINVAL    (-1)   /**< bad argument */
#define ALS_ENOMEM    (-2)   /**< allocation failed; nothing changed */
#define ALS_EFULL     (-3)   /**< queue full (pool, reject policy) */
#define ALS_ESHUTDOWN (-4)   /**< pool shut down */
#define ALS_EDEADLK   (-5)   /**< the call would deadlock */
#define ALS_ETIMEDOUT (-6)   /**< the wait timed out */
#define ALS_ECANCELED (-7)   /**< the work was cancelled */
/** A task of a group returned non-zero (als_group_wait). The task's own
 *  code is never returned in place of an ALS_E* code: it is reported apart,
 *  by als_group_first_error, so a task returning, say, -6 cannot be taken
 *  for ALS_ETIMEDOUT. */
#define ALS_ETASK     (-8)

/** A static English text for @p err; each ALS_E* code has its own, unknown
 *  codes get "unknown error". Never NULL. */
ALS_API const char *als_strerror(int err);

/** The library's version as "MAJOR.MINOR.PATCH" (what the library was built
 *  as; compare with ALS_VERSION_STRING for the headers you compiled with). */
ALS_API const char *als_version(void);
/** @} */

/** A function run inside a context: receives @p arg, returns a result. */
typedef void *(*als_fn)(void *arg);

/** @defgroup store Stores
 *  @{ */

/** One store: Node's AsyncLocalStorage instance. */
typedef struct als als_t;

/** Options for als_new(). Zero-initialise and set what you need. */
typedef struct als_options {
    const char *name;             /**< copied; NULL means "" */
    void *default_value;          /**< what als_get returns where nothing is bound */
    /** Optional. When set, the store owns every value bound with als_run or
     *  als_enter_with and calls destroy(value) exactly once per binding, on
     *  whichever thread drops the last reference, synchronously, once the
     *  value is reachable from no scope, snapshot, bound function, resource,
     *  queued task or thread. Never called with NULL. Binding the same pointer
     *  twice means destroy runs twice. */
    void (*destroy)(void *value);
} als_options;

/** Creates a store. @p opts may be NULL (name "", default NULL, no
 *  destroy). Returns NULL only if allocation fails. */
ALS_API als_t *als_new(const als_options *opts);

/** Frees the handle at once. Contexts still holding values of this store
 *  release them (calling destroy) when they themselves are released; nothing
 *  is destroyed by als_free itself. Do not use @p als afterwards, and do not
 *  free a store while another thread may still call functions on it.
 *  NULL is a no-op. */
ALS_API void als_free(als_t *als);

/** The store's name ("" if none was given); NULL for a NULL store. */
ALS_API const char *als_name(const als_t *als);

/** getStore(): the value bound to @p als in the calling thread's current
 *  context, or the store's default_value where none is bound or the store
 *  was disabled since. NULL for a NULL store. Never allocates or locks;
 *  its cost does not depend on nesting depth or on the number of stores. */
ALS_API void *als_get(const als_t *als);

/** ScopedValue.isBound(): 1 if a value is bound to @p als in the calling
 *  thread's current context, else 0 (als_get then returns default_value).
 *  A bound value counts whatever it is: NULL, or default_value itself, is
 *  bound as well, so this tells "bound to the default" from "not bound".
 *  Bindings are those of als_run and als_enter_with, also inside an entered
 *  capture (snapshot, bound function, resource, pool task, thread). 0
 *  inside als_exit of the store, for a binding made before the store's
 *  latest als_disable (as als_get gives the default there), and for a NULL
 *  store. Never allocates or locks; costs what als_get costs. */
ALS_API int als_has(const als_t *als);

/** Binds @p value to @p als for exactly the duration of fn(arg) and returns
 *  fn's result. When it returns, the thread's context is exactly what it was
 *  before, whatever fn did (nested runs, als_enter_with, als_exit), also
 *  when fn is left by a C++ exception, pthread_exit or a cancellation, and
 *  after a longjmp out of it as described under "Non-local exits". NULL is
 *  a value like any other. With a NULL store or fn: calls nothing, binds
 *  nothing and returns NULL. Allocates nothing unless something captures
 *  the context inside fn, and binds even then (a failing capture reports
 *  its own error). Two exceptions, each at most once per thread: a store
 *  created while more than 16 stores are live needs the calling thread's
 *  slot table grown; and the first write inside an entered snapshot (a
 *  snapshot_run, bound call, resource scope, pool task or als_thread_create
 *  thread) takes a private table, which the thread then recycles. If that
 *  allocation fails, als_run calls nothing and returns NULL (and a
 *  destroy-owning store destroys @p value, which it was handed). Besides,
 *  nesting deeper than ever before on a thread takes a block of 32 scope
 *  records, kept until the thread exits; its failure is invisible (see
 *  "Non-local exits"). */
ALS_API void *als_run(als_t *als, void *value, als_fn fn, void *arg);

/** Runs fn(arg) with @p als unbound (als_get gives the default); other
 *  stores keep their values. Same NULL rules as als_run. */
ALS_API void *als_exit(als_t *als, als_fn fn, void *arg);

/** Binds @p value for the rest of the current scope: until the innermost
 *  enclosing als_run, als_exit, als_snapshot_run, bound call, resource scope
 *  or pool task returns; at a thread's top level until the thread exits or
 *  another als_enter_with of the same store replaces it (the replaced value
 *  is released then). Returns 0, ALS_EINVAL for a NULL store, or ALS_ENOMEM
 *  (nothing changed; a destroy-owning store destroys @p value).
 *
 *  At thread exit, top-level values are released in rounds: a destroy
 *  callback may bind again, and the next round releases that too (not
 *  limited by glibc's 4 passes over thread-specific data). After 64 rounds
 *  that still bind, a top-level als_enter_with on the exiting thread
 *  returns ALS_ESHUTDOWN and does not take @p value (the caller still owns
 *  it), so a callback that rebinds forever ends. */
ALS_API int als_enter_with(als_t *als, void *value);

/** From now on als_get(als) returns the default in every context on every
 *  thread, including contexts captured before, until a later als_run or
 *  als_enter_with binds again (in its own scope only). Destroys nothing by
 *  itself: values go when the last holder lets go, and captures made after
 *  this call no longer hold them. NULL is a no-op. */
ALS_API void als_disable(als_t *als);
/** @} */

/** @defgroup snapshot Snapshots
 *  @{ */

/** An immutable, reference-counted capture of a thread's whole context. */
typedef struct als_snapshot als_snapshot_t;

/** Captures the calling thread's whole context (every store). O(1) with no
 *  allocation when the context was captured before and has not changed
 *  since. Returns NULL only if allocation fails. Release with
 *  als_snapshot_release(). */
ALS_API als_snapshot_t *als_snapshot(void);

/** Takes one more reference; returns @p snap (NULL stays NULL). */
ALS_API als_snapshot_t *als_snapshot_retain(als_snapshot_t *snap);

/** Drops one reference, from any thread; the last one releases the values
 *  (which may call destroy on this thread). NULL is a no-op. */
ALS_API void als_snapshot_release(als_snapshot_t *snap);

/** Runs fn(arg) inside @p snap, on any thread, then restores the caller's
 *  context exactly and returns fn's result. Entering and leaving allocate
 *  nothing. NULL snapshot or fn: calls nothing, returns NULL. */
ALS_API void *als_snapshot_run(als_snapshot_t *snap, als_fn fn, void *arg);

/** Storage for an explicit scope (als_scope_enter/als_scope_leave), for
 *  callers such as event loops that cannot wrap their work in a function
 *  call. Opaque; lives on the caller's stack. */
typedef struct als_scope {
    void *opaque_[12];  /**< private to the library; do not touch */
} als_scope_t;

/** Enters @p snap on the calling thread until als_scope_leave(@p scope).
 *  Scopes are strictly last-in-first-out per thread. The scope holds its own
 *  reference to @p snap. Returns 0 or ALS_EINVAL (NULL argument). */
ALS_API int als_scope_enter(als_scope_t *scope, als_snapshot_t *snap);

/** Leaves @p scope and restores the context current at its als_scope_enter.
 *  Returns 0, or ALS_EINVAL if @p scope is NULL, is not the calling thread's
 *  innermost open scope (a last-in-first-out violation: nothing changes,
 *  and a debug build says so on stderr) or was already left. */
ALS_API int als_scope_leave(als_scope_t *scope);
/** @} */

/** @defgroup bind Bound functions
 *  @{ */

/** AsyncLocalStorage.bind(fn): a function bound to the context of now. */
typedef struct als_bound als_bound_t;

/** Captures the context now. NULL if fn is NULL or allocation fails. */
ALS_API als_bound_t *als_bind(als_fn fn);

/** Runs fn(arg) inside the captured context (and, for a resource-bound
 *  function, inside the resource's async ids); returns fn's result. Any
 *  thread, any number of times, concurrently. NULL @p bound gives NULL. */
ALS_API void *als_bound_call(const als_bound_t *bound, void *arg);

/** Frees a bound function and releases its context. NULL is a no-op. */
ALS_API void als_bound_free(als_bound_t *bound);
/** @} */

/** @defgroup resource Async resources and async ids
 *  @{ */

/** AsyncResource: a captured context plus an identity for causal tracing. */
typedef struct als_resource als_resource_t;

/** Captures the context now. The resource gets a fresh, process-unique,
 *  increasing async id (> 1); its trigger id is the execution async id
 *  current at creation. @p type is copied; NULL means "". NULL only if
 *  allocation fails. */
ALS_API als_resource_t *als_resource_new(const char *type);

/** Frees the resource and releases its context. NULL is a no-op. */
ALS_API void als_resource_free(als_resource_t *res);

/** The type given at creation; NULL for NULL. */
ALS_API const char *als_resource_type(const als_resource_t *res);

/** The resource's async id; 0 for NULL. */
ALS_API uint64_t als_resource_async_id(const als_resource_t *res);

/** The execution async id current when the resource was created; 0 for NULL. */
ALS_API uint64_t als_resource_trigger_async_id(const als_resource_t *res);

/** Runs fn(arg) inside the resource's context with
 *  als_execution_async_id() == its async id and als_trigger_async_id() ==
 *  its trigger id; restores everything after. NULL resource or fn: calls
 *  nothing, returns NULL. */
ALS_API void *als_resource_run_in_scope(als_resource_t *res, als_fn fn, void *arg);

/** als_scope_enter for a resource, for event loops that cannot wrap their
 *  callback in als_resource_run_in_scope: enters the resource's context,
 *  with als_execution_async_id() == its async id and als_trigger_async_id()
 *  == its trigger id, until als_scope_leave(@p scope) restores the context
 *  and the ids current at this call. Same rules as als_scope_enter: the
 *  scope is the calling thread's, strictly last-in-first-out, and holds its
 *  own reference to the context (@p res may be freed while it is open);
 *  als_scope_leave returns ALS_EINVAL, changing nothing, for a scope that is
 *  not the thread's innermost open one or was already left. Allocates
 *  nothing. Returns 0 or ALS_EINVAL (NULL argument). */
ALS_API int als_resource_enter(als_scope_t *scope, als_resource_t *res);

/** A bound function whose calls run in the resource's scope (context and
 *  ids). Independent of @p res afterwards. NULL for NULL arguments or if
 *  allocation fails. */
ALS_API als_bound_t *als_resource_bind(als_resource_t *res, als_fn fn);

/** The async id of the execution scope the caller runs in: 1 at a thread's
 *  top level; a fresh id inside resources, pool tasks and threads made with
 *  als_thread_create. */
ALS_API uint64_t als_execution_async_id(void);

/** The async id of whoever caused the current execution scope: 0 at a
 *  thread's top level. */
ALS_API uint64_t als_trigger_async_id(void);
/** @} */

/** @defgroup thread Threads
 *  @{ */

/** pthread_create whose new thread starts inside a snapshot of the
 *  creator's context (an inheritable thread-local), with a fresh execution
 *  async id whose trigger id is the creator's execution id. Values the
 *  thread binds end with the thread, also when it ends with pthread_exit or
 *  a cancellation. A C++ exception escaping @p fn terminates the process
 *  (no handler, as with std::thread). Returns 0, ALS_EINVAL (NULL thread or
 *  fn) or ALS_ENOMEM (memory or threads exhausted). */
ALS_API int als_thread_create(pthread_t *thread, const pthread_attr_t *attr,
                              als_fn fn, void *arg);
/** @} */

/** @defgroup pool Worker pool
 *  Tasks submitted to a pool carry a snapshot of the submitter's context:
 *  the worker enters it, runs the task, then restores its own context and
 *  releases the snapshot (so destroy callbacks may run on worker threads).
 *  Each task runs with a fresh execution async id whose trigger id is the
 *  submitter's execution id. A task's scope restores the worker's context
 *  also when the task is unwound (see "Non-local exits"). A C++ exception
 *  must not escape a task: catch it inside; on a worker thread it finds no
 *  handler and terminates the process, as with std::thread.
 *
 *  fork(): as with any thread pool, do not use a pool across fork(). POSIX
 *  allows the child of a multithreaded process only async-signal-safe
 *  functions until it calls exec; create pools after forking, or have the
 *  child exec or _exit. What libals does anyway: in the child, every pool
 *  created before the fork has no workers and refuses work (als_submit and
 *  its variants, als_group_submit and als_future_then return
 *  ALS_ESHUTDOWN); tasks it had accepted never run there, nor are they
 *  cancelled; als_pool_drain and als_pool_shutdown return 0 at once; and
 *  als_pool_free frees it without waiting for workers. Stores, contexts,
 *  snapshots and the trace module keep working in the child. Forking from
 *  inside a pool task leaves the child on a copy of that worker: it must
 *  exec or _exit.
 *  @{ */

/** A pool task. A non-zero return means the task failed.
 *
 *  A task must not end its thread (pthread_exit, or a pthread_cancel that
 *  acts at a cancellation point inside it) nor longjmp out of itself. If
 *  its thread ends anyway, also inside scopes the task opened itself (its
 *  own als_run, als_snapshot_run...: they unwind first, see "Non-local
 *  exits"; an explicit als_scope_enter left open is not), the pool does
 *  not hang: that task,
 *  and any task it was running inside on that thread, counts as failed
 *  (stats.failed; on_error is called with ALS_ECANCELED; a future's task
 *  cancels its future; a group's task ends in its group with
 *  ALS_ECANCELED), what they held is released, and a new thread takes
 *  the worker's place, so queued tasks still run and drain, shutdown and
 *  free return. */
typedef int (*als_task_fn)(void *arg);

/** What als_submit does when the queue is full. */
enum als_full_policy {
    /** Wait for room. A submit from one of the pool's own workers into its
     *  full pool runs the task inline instead (in the submitter's context
     *  snapshot, as a task of its own), so nested fan-out never deadlocks. */
    ALS_FULL_BLOCK = 0,
    ALS_FULL_REJECT = 1  /**< return ALS_EFULL at once */
};
/** Task flag: run in an empty context instead of capturing one. */
#define ALS_TASK_DETACHED 1u
/** als_pool_shutdown: run everything queued (and what it submits), then stop. */
#define ALS_SHUTDOWN_DRAIN  0
/** als_pool_shutdown: run `cancel` for every task not yet started. */
#define ALS_SHUTDOWN_CANCEL 1

/** A pool of worker threads running tasks in their submitters' contexts. */
typedef struct als_pool als_pool_t;

/** Options for als_pool_new(). Zero-initialise and set what you need. */
typedef struct als_pool_options {
    /** Worker threads; 0: the CPUs this process may run on. With more
     *  workers than those CPUs, about as many workers as CPUs are awake
     *  at once: a worker that finds more tasks queued wakes another only
     *  while fewer are awake (a submit still wakes one when none is
     *  searching). Such a pool has one more thread, its monitor, named
     *  "<name>-mon", for workers stuck in a task (blocked on I/O, a lock,
     *  another task): while tasks wait, it looks every millisecond and
     *  wakes a parked worker for each awake one that started no task
     *  since its last look. It sleeps while nothing waits. */
    unsigned threads;
    /** 0: 4096; rounded up to a power of two. That many tasks can wait
     *  in the shared queue. Beyond it, a busy worker may hold up to 15 more
     *  it took off the queue together with the one it runs, and each
     *  worker keeps the newest task its own tasks submitted in a slot of
     *  its own: 1 more per worker. In a BLOCK pool whose capacity is at
     *  least 256 per worker, each worker also keeps up to 256 older tasks
     *  submitted by its own tasks in a queue of its own that idle workers
     *  steal from: at most 257 more waiting tasks per worker, the slot
     *  included; a helping drain (als_pool_drain_help) keeps such a
     *  queue too, while it runs, for its tasks' submits and for the half
     *  of the shared queue (at most 128 tasks) it takes at once. With
     *  eight workers or more on eight CPUs or more, the workers also
     *  share inboxes of up to 64 tasks submitted from outside the pool,
     *  one per four workers that can run at once (the smaller of the
     *  workers and the CPUs, over four; each outside thread deals its
     *  submits round the inboxes; a full one passes the task to the
     *  shared queue): 64 more per inbox. A
     *  REJECT pool has no such queues, so its ALS_EFULL answers count
     *  exactly: the capacity, plus a slot per worker. A
     *  one-worker pool starts the tasks submitted from outside it in the
     *  order they were accepted. */
    unsigned queue_capacity;
    enum als_full_policy on_full; /**< BLOCK (default) or REJECT */
    const char *name;          /**< workers are named "<name>-<n>"; NULL: "als" */
    /** Optional: called on the worker when a task returns non-zero, inside
     *  the context the task was submitted with (what the task bound itself
     *  has already ended). */
    void (*on_error)(int task_result, void *arg, void *user);
    void *user;                /**< passed to on_error */
} als_pool_options;

/** A task with all its options. */
typedef struct als_task {
    als_task_fn fn;            /**< required */
    void *arg;                 /**< passed to fn (or to cancel) */
    /** Optional: runs instead of fn, inside the task's context, when a
     *  cancelling shutdown drops the task before it started. */
    void (*cancel)(void *arg);
    unsigned flags;            /**< 0 or ALS_TASK_DETACHED */
} als_task;

/** Which fields als_pool_stats has: 2 added parks, wakeups,
 *  submitter_wakeups and steals. Fields are only ever appended, and each
 *  addition raises this number; the struct's size is part of the ABI
 *  (als_pool_stats_get writes all of it), so once a version is released an
 *  addition also raises ALS_VERSION_MAJOR (the SONAME). */
#define ALS_POOL_STATS_VERSION 2

/** Counters. queued and running are exact whenever the pool is quiescent.
 *  The scheduling counters (parks to steals) are what the pool's design
 *  costs, independent of the machine's speed: compare them per task. Each
 *  is exact once the threads that bump it are quiet; a pool's workers may
 *  still be parking for a moment after a drain returns. */
typedef struct als_pool_stats {
    uint64_t submitted;        /**< accepted tasks */
    uint64_t completed;        /**< fn returned 0 */
    uint64_t failed;           /**< fn returned non-zero */
    uint64_t rejected;         /**< ALS_EFULL answers */
    uint64_t cancelled;        /**< cancelled by shutdown (cancel ran, if set) */
    uint64_t queued;           /**< accepted, not started */
    uint64_t running;          /**< started, not finished */
    unsigned threads;          /**< worker threads (not the monitor) */
    /* ALS_POOL_STATS_VERSION 2 */
    /** Times a worker found no work and went to sleep on its futex (a
     *  FUTEX_WAIT system call; spinning without sleeping is not counted). */
    uint64_t parks;
    /** FUTEX_WAKE system calls made to wake a worker, by submitters,
     *  workers, the monitor and shutdown alike. A submit into a parked
     *  pool wakes one worker; submits while a worker is searching (at
     *  most half of the workers that can run at once, at least two,
     *  search; the others sleep) wake none. Shutdown wakes
     *  every worker, asleep or not, and each ending worker wakes the
     *  others. Wakes of drain, future and group waiters, and of the monitor
     *  itself, are not counted. */
    uint64_t wakeups;
    /** FUTEX_WAKE system calls made to wake submitters blocked on a full
     *  queue (ALS_FULL_BLOCK), counted apart from wakeups: about one per
     *  wait, once the queue has drained to half (however many submitters
     *  wait), and at shutdown one each time all workers are woken. */
    uint64_t submitter_wakeups;
    /** Tasks idle workers took from other workers' own queues (a steal
     *  takes up to half of one queue and counts each task it moved). */
    uint64_t steals;
} als_pool_stats;

/** Starts a pool. @p opts may be NULL (all defaults). NULL on failure
 *  (memory, threads, or queue_capacity above 2^30). */
ALS_API als_pool_t *als_pool_new(const als_pool_options *opts);

/** Submits fn(arg) with the caller's context. Returns 0, ALS_EINVAL (NULL
 *  pool or fn), ALS_ESHUTDOWN, ALS_EFULL (REJECT policy) or ALS_ENOMEM
 *  (capture failed). Nothing accepted is ever lost.
 *
 *  Throttling (as OpenMP runtimes do with deferred tasks): when a task of
 *  this pool submits while its worker's own queue holds 64 or more tasks,
 *  or the shared queue 64 or more per worker, and no worker is idle (in a
 *  pool with more workers than the CPUs this process may run on: while
 *  at least as many workers are busy as there are CPUs, since idle ones
 *  could not run beside them), the new task may run at once, inside
 *  als_submit, on the submitting thread. It runs as any task does: in the
 *  caller's context, with a fresh execution id whose trigger is the
 *  caller's, its bindings ending with it, counted in the stats and
 *  reported to on_error. Nested inline runs are bounded by a stack budget
 *  (64 KiB, or a quarter of the worker's stack if less), beyond which
 *  tasks are queued again. So a task must not submit, and then wait for,
 *  a task that needs something the submitter provides only after
 *  als_submit returns (a lock it holds, a signal it sends later).
 *  Detached tasks (als_submit_task) and submits from outside the pool's
 *  workers are always queued.
 *
 *  A task's newest submit waits in its worker's own slot (see
 *  queue_capacity), which no other worker takes from: a task that submits
 *  and then blocks until what it submitted has run (on a condition
 *  variable, a semaphore, a flag) waits forever. Wait with
 *  als_future_wait or als_group_wait, which run it, or let a completion
 *  (als_future_then) continue the work. */
ALS_API int als_submit(als_pool_t *pool, als_task_fn fn, void *arg);

/** als_submit with a cancel callback and flags. NULL task: ALS_EINVAL. */
ALS_API int als_submit_task(als_pool_t *pool, const als_task *task);

/** Waits until every task submitted before the call, and everything those
 *  tasks submit, has finished. Tasks other threads submit meanwhile are
 *  not waited for, so a steady stream of submits cannot keep it waiting;
 *  concurrent drains of one pool are served one after the other. Returns
 *  0, ALS_EINVAL (NULL), or ALS_EDEADLK when called from one of the pool's
 *  own workers. */
ALS_API int als_pool_drain(als_pool_t *pool);

/** als_pool_drain, except that the calling thread runs queued tasks of the
 *  pool while it waits, as oneTBB's task_group::wait does, instead of
 *  leaving the CPU to the workers and sleeping: for a thread that fans
 *  work out and then waits for it (a request's subtasks). While it runs a
 *  task, the pool counts the caller's CPU as taken when it decides
 *  whether a task's submits run inline (als_submit).
 *
 *  Each task it runs is the pool's task in every respect but its thread:
 *  it runs in its submit-time context (the caller's own context is back
 *  when the call returns), with its own ids, counted in the pool's stats
 *  and reported to on_error; inside it als_pool_current() returns the
 *  pool, its submits are a task's submits (als_submit), and
 *  als_pool_drain, als_pool_drain_help and als_pool_shutdown return
 *  ALS_EDEADLK. It may take any queued task, also one submitted after the
 *  call began (a newer task's own submits go back to the workers when the
 *  call returns), so it returns only between two tasks: it looks whether
 *  what it waits for has finished after each newer task it runs, and
 *  whenever it finds nothing to run.
 *
 *  What it gives up, and als_pool_drain keeps: tasks run only on the
 *  pool's named workers, and a one-worker pool starts the tasks submitted
 *  from outside it in the order they were accepted (here they may also
 *  start on the caller, out of that order). If a task run here ends the
 *  calling thread (which a task must not do), it counts as failed as on a
 *  worker and the drain is left as if it had returned; the next drain
 *  also waits for what this one waited for. Returns 0, ALS_EINVAL (NULL),
 *  or ALS_EDEADLK when called from one of the pool's own workers or from
 *  a task. */
ALS_API int als_pool_drain_help(als_pool_t *pool);

/** Stops the pool: @p how is ALS_SHUTDOWN_DRAIN or ALS_SHUTDOWN_CANCEL and
 *  the call returns when the workers have finished. While a DRAIN is in
 *  progress, submits from the pool's own running tasks are accepted and
 *  run; every other submit gives ALS_ESHUTDOWN. Idempotent: a later call
 *  waits for the same end and returns 0, except that CANCEL during a DRAIN
 *  cancels what is still queued. Returns 0, ALS_EINVAL (NULL pool, unknown
 *  @p how) or ALS_EDEADLK (from the pool's own worker). */
ALS_API int als_pool_shutdown(als_pool_t *pool, int how);

/** Frees the pool, doing a DRAIN shutdown first if none was done. Called
 *  from one of the pool's own workers it refuses: it does nothing (the pool
 *  stays usable) and, in a debug build, says so on stderr. NULL: no-op. */
ALS_API void als_pool_free(als_pool_t *pool);

/** Copies the counters into @p out. 0 or ALS_EINVAL. */
ALS_API int als_pool_stats_get(const als_pool_t *pool, als_pool_stats *out);

/** The pool whose worker runs the caller, else NULL. */
ALS_API als_pool_t *als_pool_current(void);
/** @} */

/** @defgroup compose Delayed tasks, futures and groups
 *  Each carries the context of whoever scheduled it, like als_submit.
 *  Waiting (als_future_wait, als_group_wait) on one of a pool's own workers
 *  never deadlocks: the waiting worker runs that pool's queued tasks
 *  meanwhile (as TBB does).
 *  @{ */

/** Submits fn(arg) to run, in the caller's context captured now, no
 *  earlier than @p delay_ns from now (0: as soon as possible). One timer
 *  thread per pool keeps pending tasks in a heap (O(log n) each). Counts as
 *  submitted when accepted and as queued while it waits; als_pool_drain
 *  waits for it; a DRAIN shutdown runs it when due, a CANCEL shutdown
 *  cancels it. Errors as als_submit.
 *
 *  Order: due tasks are handed to the pool's queue in due-time order (due
 *  time = submit time + @p delay_ns), tasks due at the same time in the
 *  order they were submitted; a one-worker pool starts them in that order.
 *
 *  Lateness: a task never starts early. On an idle pool (a worker free, the
 *  machine not overloaded) it starts after its due time by two thread
 *  wake-ups (the timer thread's, then a worker's), whatever the number of
 *  pending timers: bench/compose ("pending") measured p50 0.11 ms, p99
 *  about 1 ms, max 3.5 ms with 1, 1k and 100k timers pending, on a shared,
 *  loaded 2-CPU machine (release build). There is no hard bound: the OS decides when threads wake, and a due task
 *  waits behind queued tasks like any other. */
ALS_API int als_submit_after(als_pool_t *pool, uint64_t delay_ns, als_task_fn fn, void *arg);

/** A result to wait for; reference counted. */
typedef struct als_future als_future_t;

/** Submits fn(arg) in the caller's context; *out receives a future of its
 *  result (release it with als_future_release). Returns 0, ALS_EINVAL
 *  (NULL pool, fn or out), or an error of als_submit. */
ALS_API int als_submit_future(als_pool_t *pool, als_fn fn, void *arg, als_future_t **out);

/** Waits for @p f: 0 and its result in *result (if @p result is not NULL),
 *  ALS_ETIMEDOUT after @p timeout_ns (< 0: no limit) or at the deadline of
 *  the caller's cancellation scope, ALS_ECANCELED when the pool dropped the
 *  task (or f was cancelled) or the caller's scope is cancelled, ALS_EINVAL for NULL, ALS_EDEADLK at once
 *  (whatever the timeout) when the calling thread is running f's own task
 *  (its fn, at any depth of nested runs), which would wait for itself.
 *  Longer cycles are not detected and wait until the timeout (forever with
 *  a negative one): a task waiting for a future whose fn waits for that
 *  task's own future or group, a future's fn waiting for a continuation of
 *  itself, a cancel callback waiting for its own task's future. The two
 *  channels never mix: the return value is only ever one of these codes,
 *  whatever the task returned, and fn's result only ever arrives in
 *  *result (which is left untouched unless the call returns 0). */
ALS_API int als_future_wait(als_future_t *f, int64_t timeout_ns, void **result);

/** When @p f completes, fn(result of f) runs on @p pool inside the context
 *  captured now, and *out completes with its result. Always asynchronous,
 *  also when f has completed already: this call never runs fn and never
 *  waits for room; where @p pool's queue is full, the continuation goes to
 *  the pool's timer thread, which queues it as soon as there is room. If f
 *  is cancelled, *out is cancelled too and fn never runs (then on a
 *  cancelled future returns 0). The continuation is accepted by this call:
 *  a full ALS_FULL_REJECT pool does not refuse it later (when f completes
 *  it waits for room, or runs inline on a worker of that pool); if @p pool
 *  is shut down or freed before f completes, *out is cancelled (a pending
 *  continuation keeps a freed pool's memory, not its threads, until then).
 *  Its trigger id is the execution id of the caller of then.
 *  Returns 0, ALS_EINVAL (NULL argument), ALS_ESHUTDOWN (pool shut down)
 *  or ALS_ENOMEM; on failure *out is left untouched. */
ALS_API int als_future_then(als_future_t *f, als_pool_t *pool, als_fn fn, als_future_t **out);

/** Drops the caller's reference, from any thread, before or after
 *  completion. Does not cancel: the task and continuations still run.
 *  NULL is a no-op. */
ALS_API void als_future_release(als_future_t *f);

/** A set of tasks to wait for together. */
typedef struct als_group als_group_t;

/** A new empty group; NULL if allocation fails. */
ALS_API als_group_t *als_group_new(void);

/** Submits fn(arg) to @p pool as a task of @p g (a normal pool task: it
 *  counts in the pool's stats and a failure calls on_error). Tasks of a
 *  group may add tasks to it. Errors as als_submit; ALS_EINVAL for NULL. */
ALS_API int als_group_submit(als_group_t *g, als_pool_t *pool, als_task_fn fn, void *arg);

/** Waits until every task of @p g has finished. Returns 0 if every task
 *  returned 0; ALS_ETASK if a task returned non-zero (its code:
 *  als_group_first_error); else ALS_ECANCELED if tasks were cancelled
 *  (a FIRST_SUCCESS group with a success: 0); ALS_ETIMEDOUT after
 *  @p timeout_ns (< 0: no limit) or at the caller's scope's deadline;
 *  ALS_ECANCELED once the caller's scope is cancelled; ALS_EINVAL for NULL;
 *  ALS_EDEADLK at once (whatever the timeout) when the calling thread is
 *  running a task of @p g (at any depth of nested runs), which would wait
 *  for itself. A task's own code is never returned here. A task waiting
 *  for a group that one of its own waiters belongs to (a longer cycle) is
 *  not detected and waits until the timeout. */
ALS_API int als_group_wait(als_group_t *g, int64_t timeout_ns);

/** The first non-zero result a task of @p g returned, in completion order,
 *  into *result: the task's own code, whatever it is; 0 if no task has
 *  failed so far. Once set it never changes. Any thread, any time (after
 *  als_group_wait returned ALS_ETASK it is non-zero). Returns 0, or
 *  ALS_EINVAL (NULL argument; *result untouched). */
ALS_API int als_group_first_error(const als_group_t *g, int *result);

/** Releases the group, from any thread, even with tasks pending (they
 *  still run). NULL is a no-op. */
ALS_API void als_group_free(als_group_t *g);
/** @} */

/** @defgroup cancel Cancellation and deadlines
 *  A cancellation scope (Go's context.Context, .NET's CancellationToken)
 *  travels in the context like a store's value: als_cancel_run makes it the
 *  current scope, and everything captured inside (tasks of every kind,
 *  delayed tasks, futures, continuations, groups, snapshots, bound
 *  functions, resources, als_thread_create threads) carries it, so the
 *  work a request fans out sees the request's cancellation and deadline.
 *  Scopes form a tree: a new scope is a child of the current one, cancelled
 *  with it, and its deadline is never later than its parent's. Running code
 *  is never interrupted: it polls als_cancelled() or registers a callback
 *  with als_cancel_on. Detached tasks (ALS_TASK_DETACHED) run in an empty
 *  context and so outside any scope. The scope is held by the library's
 *  own store: once a scope has been made it counts as one of the live
 *  stores (see als_run), and nothing else about stores changes (it cannot
 *  be reached, disabled or freed through the store API).
 *
 *  What a cancelled scope (cancelled, or past its deadline) does to pools:
 *  - A task of any kind (als_submit and its variants, delayed tasks,
 *    futures, continuations, group tasks) whose scope is cancelled before
 *    it starts does not run: it is cancelled as a CANCEL shutdown cancels
 *    it (its cancel callback runs in its context, stats.cancelled counts
 *    it, a future completes with ALS_ECANCELED and its continuations are
 *    cancelled, a group counts it as cancelled). Queued tasks notice when a
 *    worker reaches them, so als_cancel never walks a queue.
 *  - A delayed task whose scope is cancelled leaves the timer heap at once
 *    and is cancelled then (within about a thread wake-up), not at its due
 *    time.
 *  - A submit made inside a cancelled scope (als_submit, als_submit_task,
 *    als_submit_after, als_submit_future, als_future_then, and
 *    als_group_submit into a cancelled group) returns ALS_ECANCELED and
 *    queues and counts nothing. Detached tasks have no scope.
 *  - als_future_wait and als_group_wait called inside a scope return
 *    ALS_ECANCELED as soon as the scope is cancelled, and ALS_ETIMEDOUT
 *    at the scope's deadline when it comes before their own timeout (if
 *    what they wait for is done, they return as usual).
 *  @{ */

/** A cancellation scope; reference counted. */
typedef struct als_cancel als_cancel_t;

/** A new scope, child of the calling context's current scope (if any): it
 *  is cancelled when its parent is (at once, if the parent already is).
 *  @p timeout_ns >= 0: it also cancels itself that long from now (its
 *  deadline; 0: already past, so the scope is born cancelled); < 0: no
 *  deadline of its own. Its deadline is the earlier of its own and its
 *  parent's. Deadlines are kept by one process-wide thread, started with
 *  the first scope that has one (CLOCK_MONOTONIC); a released scope's
 *  deadline is forgotten at once. NULL only if allocation (or starting that
 *  thread) fails. The caller holds one reference. */
ALS_API als_cancel_t *als_cancel_new(int64_t timeout_ns);

/** Runs fn(arg) with @p c as the current scope and returns fn's result;
 *  every capture inside (tasks of every kind, snapshots, bound functions,
 *  resources, als_thread_create) carries it, and holds a reference on @p c
 *  while it lives. Restores the caller's scope as als_run restores a store
 *  (also on non-local exits). NULL @p c or @p fn: calls nothing, returns
 *  NULL; so does a failure to allocate, exactly as for als_run. */
ALS_API void *als_cancel_run(als_cancel_t *c, als_fn fn, void *arg);

/** Cancels @p c and all its descendants, from any thread; idempotent. The
 *  callbacks of each newly cancelled scope run on the calling thread before
 *  it returns (a scope cancelled already, by another thread, may still be
 *  running its own there). O(descendants + callbacks): nothing else is
 *  walked. Returns 0, or ALS_EINVAL for NULL. */
ALS_API int als_cancel(als_cancel_t *c);

/** Takes a reference; returns @p c. NULL: no-op (returns NULL). */
ALS_API als_cancel_t *als_cancel_retain(als_cancel_t *c);

/** Drops a reference, from any thread. Dropping never cancels: the last
 *  one frees the scope, its pending deadline and the callbacks that never
 *  ran (which then never run); its children stay as they are (they keep
 *  their deadline, and can no longer be cancelled through it). NULL: no-op. */
ALS_API void als_cancel_release(als_cancel_t *c);

/** The calling context's current scope (a new reference), or NULL. */
ALS_API als_cancel_t *als_cancel_current(void);

/** 1 if the calling context's scope, or any ancestor, is cancelled or past
 *  its deadline, else 0 (0 when there is no scope). No lock, no allocation,
 *  no system call: with no scope it costs what als_get does. Only a scope
 *  with a deadline reads the clock (vDSO: the coarse clock, and the precise
 *  one within a clock tick of the deadline). Everything the canceller did
 *  before als_cancel happens before a call that returns 1 because of it. */
ALS_API int als_cancelled(void);

/** Nanoseconds until the nearest deadline in the current scope chain:
 *  INT64_MAX with none (or no scope), 0 once cancelled or past it. */
ALS_API int64_t als_deadline_remaining(void);

/** Calls fn(arg) once when @p c is cancelled: on the cancelling thread (the
 *  deadline thread, for a deadline) in that thread's context, or at once
 *  on the caller's thread, before returning, if @p c is already cancelled
 *  or past its deadline. The callbacks of one scope run one at a time, in
 *  registration order. Returns a registration id > 0 (also when fn ran at
 *  once), or ALS_EINVAL (NULL @p c or @p fn) / ALS_ENOMEM (nothing
 *  registered, fn not called). */
ALS_API int64_t als_cancel_on(als_cancel_t *c, void (*fn)(void *arg), void *arg);

/** Unregisters callback @p id of @p c: returns 0 if it was removed before
 *  it started (it will never run), ALS_EINVAL otherwise (it ran, is running,
 *  or @p id is not one of c's; NULL @p c). Once it returns the callback is
 *  not running: if another thread is running it, this waits for it to
 *  return. Called from inside that very callback it returns ALS_EINVAL at
 *  once (waiting would deadlock); from inside another callback of the same
 *  scope it returns 0 for one not started yet. */
ALS_API int als_cancel_off(als_cancel_t *c, int64_t id);

/** Policies of als_group_new_policy. */
enum als_group_policy {
    ALS_GROUP_WAIT_ALL = 0,     /**< als_group_new's behaviour */
    ALS_GROUP_FAIL_FAST = 1,    /**< the first failure cancels the group's scope */
    ALS_GROUP_FIRST_SUCCESS = 2 /**< the first task returning 0 cancels it (hedged requests) */
};

/** A group that owns a scope, child of the scope current at this call; its
 *  tasks run inside it (they see als_cancelled() once the group is
 *  cancelled, and what they submit inherits it). FAIL_FAST: als_group_wait
 *  returns the first failure as soon as all tasks have ended, and tasks not
 *  yet started are cancelled rather than run. FIRST_SUCCESS: als_group_wait
 *  returns 0 once one task succeeded and every other has ended (started
 *  ones finish, unstarted ones are cancelled); if none succeeds it reports
 *  as WAIT_ALL. als_group_new() is WAIT_ALL. als_group_submit into a group
 *  whose scope is cancelled returns ALS_ECANCELED. NULL if allocation
 *  fails or @p policy is unknown. */
ALS_API als_group_t *als_group_new_policy(enum als_group_policy policy);

/** Cancels the group's scope: its tasks not yet started are cancelled (as a
 *  CANCEL shutdown cancels them), running ones see als_cancelled(). 0 or
 *  ALS_EINVAL (NULL). */
ALS_API int als_group_cancel(als_group_t *g);

/** Cancels @p f's task if it has not started: it completes with
 *  ALS_ECANCELED and its continuations are cancelled. 0 if it was
 *  cancelled by this call, ALS_EINVAL for NULL or a task that started or
 *  ended already. */
ALS_API int als_future_cancel(als_future_t *f);
/** @} */

#ifdef __cplusplus
}
#endif

#endif /* ALS_H */
