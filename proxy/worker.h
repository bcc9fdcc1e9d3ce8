/*
 * worker.h - one worker process: an event loop over many sessions
 *
 * The master forks workers with the listening sockets already open. Each
 * worker accepts connections, runs the sessions on one libevent loop,
 * owns its backend pool (backend.h), and
 * drains on SIGTERM: it stops accepting, lets transactions in flight
 * finish up to drain_timeout, then exits.
 */
#ifndef PORTCULLIS_WORKER_H
#define PORTCULLIS_WORKER_H

#include <stdbool.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "backend.h"
#include "conf.h"

struct session;
struct pipeline;
struct chain;
struct relay;

struct worker {
	struct event_base *base;
	const struct conf *conf;
	struct backend_pool backends; /* servers, capabilities, parked connections */

	struct pipeline *pipeline; /* the filter chain of this worker */

	struct session *sessions; /* list, linked through the sessions */
	unsigned nsessions;
	bool listening;	/* accepting connections */
	bool draining;	/* SIGTERM: closing down */
	bool retiring;	/* SIGUSR2: replaced after a reload */
	unsigned session_prefix; /* random, tells workers' session ids apart */
	unsigned long long session_counter;
};

/*
 * worker_load_chain - configure the resolver (dns_init()), then load the
 * configuration's filter chain (or NULL when it has none); errors are
 * logged, and the result is -1
 */
int worker_load_chain(const struct conf *conf, struct chain **chain);

/* worker_run - serve the listening sockets until drained; the exit status */
int worker_run(const struct conf *conf, const int *listen_fds, size_t nfds);

/* worker_session_closed - a session ended (may finish a drain) */
void worker_session_closed(struct worker *w);


#endif
