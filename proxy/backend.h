/*
 * backend.h - the backend mail servers of one worker
 *
 * A worker owns one backend pool: the configured servers with their
 * addresses (resolved once at start), what the backend offers (learned
 * from Portcullis's own EHLO, never from one sent in a client's name),
 * the probe that learns it before the first client is served, and the
 * idle connections parked for the next session (relay.c parks and adopts
 * them; the pool only keeps the list).
 *
 * The pool calls its owner back once, when the first probe has ended
 * (well or not), so that accepting can start; it calls relay code only
 * through the probe function it is given.
 */
#ifndef PORTCULLIS_BACKEND_H
#define PORTCULLIS_BACKEND_H

#include <stdbool.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "conf.h"
#include "smtp.h"

struct relay;
struct backend_pool;

/* One configured server. */
struct backend_server {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	const char *text; /* as configured, for logs and decisions */
};

/* A link in the list of parked connections, inside what is parked. */
struct backend_park_link {
	struct backend_park_link *next, *prev;
};

/* backend_probe_fn - start one probe of the pool's servers */
typedef void (*backend_probe_fn)(struct backend_pool *pool);

/* backend_ready_fn - the first probe ended */
typedef void (*backend_ready_fn)(void *arg);

struct backend_pool {
	struct event_base *base;
	const struct conf *conf;
	struct backend_server servers[CONF_MAX_ADDRS];
	size_t nservers;

	/* What the backend offered in reply to our own EHLO. */
	struct smtp_caps caps;
	bool caps_known;

	/* Idle connections for the next session, newest first. */
	struct backend_park_link *parked;
	unsigned nparked;
	/* A backend refused XCLIENT on a reused connection: stop parking those. */
	bool xclient_reuse_refused;
	/* The worker is stopping: nothing is parked any more. */
	bool closing;

	struct event *probe_timer;
	backend_probe_fn probe;
	backend_ready_fn ready;
	void *ready_arg;
	bool probed; /* the first probe ended */
};

/*
 * backend_pool_init - resolve the configured servers; -1 (logged) when
 * none resolves or the probe timer cannot be made
 */
int backend_pool_init(struct backend_pool *pool, struct event_base *base,
		      const struct conf *conf, backend_probe_fn probe,
		      backend_ready_fn ready, void *ready_arg);

/* backend_pool_start - probe now, and again until the capabilities are known */
void backend_pool_start(struct backend_pool *pool);

/*
 * backend_pool_close - the worker stops: no more probes, nothing parked
 * from now on (the parked connections are closed by relay_drop_parked())
 */
void backend_pool_close(struct backend_pool *pool);

/* backend_pool_free - release what backend_pool_init() made */
void backend_pool_free(struct backend_pool *pool);

/* backend_probe_done - a probe ended: the first one starts the owner */
void backend_probe_done(struct backend_pool *pool);

/*
 * backend_learn_caps - what the backend offered to our own EHLO; a
 * change is logged, and the next client's EHLO follows it
 */
void backend_learn_caps(struct backend_pool *pool, const struct smtp_caps *caps);

/* backend_caps - what the backend offers, or NULL before the first probe */
const struct smtp_caps *backend_caps(const struct backend_pool *pool);

/* backend_park - add link at the head of the parked list */
void backend_park(struct backend_pool *pool, struct backend_park_link *link);

/* backend_unpark - take link off the parked list */
void backend_unpark(struct backend_pool *pool, struct backend_park_link *link);

#endif
