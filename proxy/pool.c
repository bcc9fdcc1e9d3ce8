/*
 * pool.c - worker threads for filter calls
 *
 * One mutex guards two lists: jobs waiting for a thread, and jobs done
 * waiting for the event loop. A thread that finishes a job appends it to
 * the done list and, if the list was empty, writes the eventfd; the loop
 * then takes the whole list at once. Threads are never cancelled: a
 * filter that hangs keeps its thread, which is why the queue is bounded
 * and why a full queue is a filter failure, not a wait.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "pool.h"

struct pool_job {
	void (*work)(void *);
	void (*done)(void *);
	void *arg;
	struct pool_job *next;
};

struct pool {
	pthread_mutex_t lock;
	pthread_cond_t ready;
	struct pool_job *queue, *queue_tail;
	unsigned queued;
	unsigned max_queue;
	struct pool_job *done, *done_tail;
	unsigned busy;
	unsigned idle;
	int efd;
	struct event *ev;
};

/* pool_thread - take jobs and run them, forever */
static void *pool_thread(void *arg)
{
	struct pool *pool = arg;

	pthread_mutex_lock(&pool->lock);
	for (;;) {
		while (!pool->queue) {
			pool->idle++;
			pthread_cond_wait(&pool->ready, &pool->lock);
			pool->idle--;
		}
		struct pool_job *job = pool->queue;
		pool->queue = job->next;
		if (!pool->queue)
			pool->queue_tail = NULL;
		pool->queued--;
		pool->busy++;
		pthread_mutex_unlock(&pool->lock);

		job->work(job->arg);

		pthread_mutex_lock(&pool->lock);
		pool->busy--;
		job->next = NULL;
		bool wake = pool->done == NULL;
		if (pool->done_tail)
			pool->done_tail->next = job;
		else
			pool->done = job;
		pool->done_tail = job;
		if (wake) {
			uint64_t one = 1;
			if (write(pool->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
				log_error("pool: eventfd write: %s", strerror(errno));
		}
	}
	return NULL;
}

/* pool_wake - on the loop: run done() of every finished job */
static void pool_wake(evutil_socket_t fd, short events, void *arg)
{
	struct pool *pool = arg;
	uint64_t n;
	struct pool_job *job, *next;

	if (read(pool->efd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_error("pool: eventfd read: %s", strerror(errno));
	pthread_mutex_lock(&pool->lock);
	job = pool->done;
	pool->done = pool->done_tail = NULL;
	pthread_mutex_unlock(&pool->lock);
	for (; job; job = next) {
		next = job->next;
		job->done(job->arg);
		free(job);
	}
}

/* pool_new - start the threads */
struct pool *pool_new(struct event_base *base, unsigned nthreads,
		      unsigned max_queue)
{
	struct pool *pool = calloc(1, sizeof(*pool));
	pthread_attr_t attr;

	if (!pool)
		return NULL;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->ready, NULL);
	pool->max_queue = max_queue;
	pool->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (pool->efd < 0) {
		free(pool);
		return NULL;
	}
	pool->ev = event_new(base, pool->efd, EV_READ | EV_PERSIST, pool_wake, pool);
	event_add(pool->ev, NULL);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	/* Filters are plain C: a modest stack keeps 16 threads cheap. */
	pthread_attr_setstacksize(&attr, 1024 * 1024);
	for (unsigned i = 0; i < nthreads; i++) {
		pthread_t t;
		if (pthread_create(&t, &attr, pool_thread, pool) != 0)
			log_error("pool: cannot start thread %u: %s", i, strerror(errno));
	}
	pthread_attr_destroy(&attr);
	return pool;
}

/* pool_submit - queue a job */
int pool_submit(struct pool *pool, void (*work)(void *), void (*done)(void *),
		void *arg)
{
	struct pool_job *job = malloc(sizeof(*job));

	if (!job)
		return -1;
	job->work = work;
	job->done = done;
	job->arg = arg;
	job->next = NULL;
	pthread_mutex_lock(&pool->lock);
	/* Jobs waiting beyond the idle threads count against the queue. */
	if (pool->queued >= pool->max_queue + pool->idle) {
		pthread_mutex_unlock(&pool->lock);
		free(job);
		return -1;
	}
	if (pool->queue_tail)
		pool->queue_tail->next = job;
	else
		pool->queue = job;
	pool->queue_tail = job;
	pool->queued++;
	pthread_cond_signal(&pool->ready);
	pthread_mutex_unlock(&pool->lock);
	return 0;
}

/* pool_detach - stop waking the loop */
void pool_detach(struct pool *pool)
{
	if (!pool)
		return;
	event_free(pool->ev);
	pool->ev = NULL;
}

/* pool_full - whether a job would be refused now (as pool_submit() judges) */
bool pool_full(struct pool *pool)
{
	pthread_mutex_lock(&pool->lock);
	bool full = pool->queued >= pool->max_queue + pool->idle;
	pthread_mutex_unlock(&pool->lock);
	return full;
}

/* pool_busy - threads running a job now */
unsigned pool_busy(struct pool *pool)
{
	pthread_mutex_lock(&pool->lock);
	unsigned n = pool->busy;
	pthread_mutex_unlock(&pool->lock);
	return n;
}
