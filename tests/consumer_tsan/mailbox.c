/* One-slot mailboxes between two threads, compiled WITHOUT -fsanitize=thread:
 * it stands for the event loop or queue library (libuv's uv_async_send, an
 * uninstrumented lock-free queue) through which a program hands libals
 * handles around, and whose synchronisation TSan cannot see. Only the
 * pointer travels; what it leads to must be ordered by libals itself. */
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>

void mailbox_put(int box, void *p);
void *mailbox_take(int box);

static _Atomic(void *) slots[2];

void mailbox_put(int box, void *p)
{
    void *none = NULL;
    while (!atomic_compare_exchange_weak_explicit(&slots[box], &none, p, memory_order_release,
                                                  memory_order_relaxed)) {
        none = NULL;
        sched_yield();
    }
}

void *mailbox_take(int box)
{
    void *p;
    while (!(p = atomic_exchange_explicit(&slots[box], NULL, memory_order_acquire)))
        sched_yield();
    return p;
}
