/*
 * pool.h - a bounded pool of threads for filter calls
 *
 * The event loop never runs a filter itself: it hands a job to the pool
 * and goes on. A job's work() runs on a pool thread; its done() runs back
 * on the event loop's thread (the pool wakes the loop through an
 * eventfd), so done() may touch sessions freely. The queue is bounded:
 * pool_submit() refuses a job when it is full, and the caller then uses
 * the filter's failure action rather than wait.
 */
#ifndef PORTCULLIS_POOL_H
#define PORTCULLIS_POOL_H

#include <stdbool.h>

#include <event2/event.h>

struct pool;

/* pool_new - start nthreads threads with room for max_queue waiting jobs */
struct pool *pool_new(struct event_base *base, unsigned nthreads,
		      unsigned max_queue);

/*
 * pool_submit - run work(arg) on a pool thread, then done(arg) on the loop
 * Returns 0, or -1 when the queue is full (nothing will be called).
 */
int pool_submit(struct pool *pool, void (*work)(void *), void (*done)(void *),
		void *arg);

/*
 * pool_detach - the loop goes away: no more done() calls, no eventfd
 * event; the threads and the pool stay, idle, until the process exits
 */
void pool_detach(struct pool *pool);

/*
 * pool_full - whether pool_submit() would refuse a job now: every thread
 * is taken and the queue holds max_queue jobs
 */
bool pool_full(struct pool *pool);

/* pool_busy - threads running a job now (for logs) */
unsigned pool_busy(struct pool *pool);

#endif
