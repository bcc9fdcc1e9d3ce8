/*
 * backend.c - the backend mail servers of one worker (see backend.h)
 *
 * The servers are resolved once, at start: a backend that moves needs a
 * reload, as a Postfix relayhost does. The probe runs until it has
 * reached a server, every WORKER_PROBE_RETRY seconds, so a worker that
 * starts while the backend is down learns what it offers once it is up.
 */
#include "config.h"

#include <netdb.h>
#include <string.h>

#include "backend.h"
#include "log.h"

#define BACKEND_PROBE_RETRY 30

/* backend_resolve - the servers' addresses */
static int backend_resolve(struct backend_pool *pool)
{
	for (size_t i = 0; i < pool->conf->nbackends; i++) {
		const struct conf_addr *a = &pool->conf->backends[i];
		struct addrinfo hints = { 0 }, *res;
		int rc;

		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_ADDRCONFIG;
		rc = getaddrinfo(a->host, a->port, &hints, &res);
		if (rc != 0) {
			log_error("backend %s: %s", a->text, gai_strerror(rc));
			continue;
		}
		struct backend_server *b = &pool->servers[pool->nservers++];
		memcpy(&b->addr, res->ai_addr, res->ai_addrlen);
		b->addrlen = res->ai_addrlen;
		b->text = a->text;
		freeaddrinfo(res);
	}
	if (pool->nservers == 0) {
		log_error("no backend address could be resolved");
		return -1;
	}
	return 0;
}

/* backend_probe_cb - probe until the capabilities are known */
static void backend_probe_cb(evutil_socket_t fd, short events, void *arg)
{
	struct backend_pool *pool = arg;
	struct timeval tv = { BACKEND_PROBE_RETRY, 0 };

	(void)fd;
	(void)events;
	if (pool->caps_known || pool->closing)
		return;
	pool->probe(pool);
	evtimer_add(pool->probe_timer, &tv);
}

/* backend_pool_init - resolve and get ready to probe */
int backend_pool_init(struct backend_pool *pool, struct event_base *base,
		      const struct conf *conf, backend_probe_fn probe,
		      backend_ready_fn ready, void *ready_arg)
{
	memset(pool, 0, sizeof(*pool));
	pool->base = base;
	pool->conf = conf;
	pool->probe = probe;
	pool->ready = ready;
	pool->ready_arg = ready_arg;
	if (backend_resolve(pool) < 0)
		return -1;
	pool->probe_timer = evtimer_new(base, backend_probe_cb, pool);
	if (!pool->probe_timer) {
		log_error("cannot create the backend probe timer");
		return -1;
	}
	return 0;
}

/* backend_pool_start - the first probe */
void backend_pool_start(struct backend_pool *pool)
{
	backend_probe_cb(-1, 0, pool);
}

/* backend_pool_close - no more probes, nothing parked from now on */
void backend_pool_close(struct backend_pool *pool)
{
	pool->closing = true;
	if (pool->probe_timer)
		evtimer_del(pool->probe_timer);
}

/* backend_pool_free - release the timer */
void backend_pool_free(struct backend_pool *pool)
{
	if (pool->probe_timer)
		event_free(pool->probe_timer);
	pool->probe_timer = NULL;
}

/* backend_probe_done - a probe ended */
void backend_probe_done(struct backend_pool *pool)
{
	if (pool->probed)
		return;
	pool->probed = true;
	if (pool->ready)
		pool->ready(pool->ready_arg);
}

/* backend_caps_equal - whether two offers are the same for our clients */
static bool backend_caps_equal(const struct smtp_caps *a, const struct smtp_caps *b)
{
	return a->pipelining == b->pipelining && a->size == b->size &&
	       a->size_limit == b->size_limit && a->eightbitmime == b->eightbitmime &&
	       a->smtputf8 == b->smtputf8 && a->dsn == b->dsn &&
	       a->enhancedstatuscodes == b->enhancedstatuscodes &&
	       a->starttls == b->starttls && a->chunking == b->chunking &&
	       a->xclient == b->xclient && a->xforward == b->xforward &&
	       strcmp(a->xclient_attrs, b->xclient_attrs) == 0 &&
	       strcmp(a->xforward_attrs, b->xforward_attrs) == 0;
}

/* backend_learn_caps - remember what the backend offers */
void backend_learn_caps(struct backend_pool *pool, const struct smtp_caps *caps)
{
	if (pool->caps_known && backend_caps_equal(&pool->caps, caps))
		return;
	log_info("backend %s:%s%s%s%s%s%s%s", pool->caps_known ? "now offers" : "offers",
		 caps->pipelining ? " PIPELINING" : "",
		 caps->size ? " SIZE" : "",
		 caps->eightbitmime ? " 8BITMIME" : "",
		 caps->smtputf8 ? " SMTPUTF8" : "",
		 caps->dsn ? " DSN" : "",
		 caps->xclient ? " XCLIENT" : "",
		 caps->xforward ? " XFORWARD" : "");
	pool->caps = *caps;
	pool->caps_known = true;
}

/* backend_caps - what the backend offers, or NULL */
const struct smtp_caps *backend_caps(const struct backend_pool *pool)
{
	return pool->caps_known ? &pool->caps : NULL;
}

/* backend_park - newest first */
void backend_park(struct backend_pool *pool, struct backend_park_link *link)
{
	link->prev = NULL;
	link->next = pool->parked;
	if (pool->parked)
		pool->parked->prev = link;
	pool->parked = link;
	pool->nparked++;
}

/* backend_unpark - off the list */
void backend_unpark(struct backend_pool *pool, struct backend_park_link *link)
{
	if (link->prev)
		link->prev->next = link->next;
	else
		pool->parked = link->next;
	if (link->next)
		link->next->prev = link->prev;
	link->next = link->prev = NULL;
	pool->nparked--;
}
