/*
 * worker.h - one worker process: an event loop over many sessions
 *
 * The master forks workers with the listening sockets already open. Each
 * worker accepts connections, runs the sessions on one libevent loop,
 * keeps what it learned of the backend (its EHLO capabilities), and
 * drains on SIGTERM: it stops accepting, lets transactions in flight
 * finish up to drain_timeout, then exits.
 */
#ifndef PORTCULLIS_WORKER_H
#define PORTCULLIS_WORKER_H

#include <stdbool.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "conf.h"
#include "smtp.h"

struct session;
struct pipeline;
struct chain;
struct relay;

struct worker_backend {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	const char *text; /* as configured, for logs and decisions */
};

struct worker {
	struct event_base *base;
	const struct conf *conf;
	struct worker_backend backends[CONF_MAX_ADDRS];
	size_t nbackends;

	/* What the backend offered in its last EHLO reply. */
	struct smtp_caps backend_caps;
	bool backend_caps_known;

	struct pipeline *pipeline; /* the filter chain of this worker */

	/* Idle backend connections for the next session (relay.c). */
	struct relay *parked;
	unsigned nparked;
	/* A backend refused XCLIENT on a reused connection: stop parking those. */
	bool xclient_reuse_refused;

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

/* worker_probe_done - the first backend probe ended, well or not */
void worker_probe_done(struct worker *w);

/* worker_learn_caps - remember the backend's capabilities */
void worker_learn_caps(struct worker *w, const struct smtp_caps *caps);

#endif
