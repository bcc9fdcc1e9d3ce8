/*
 * anvil_client.h - a worker's side of the anvil service (anvil.h)
 *
 * At accept, the worker asks with anvil_client_ask(): a client in
 * client_limit_exceptions, or when every limit is 0, is not asked, and
 * neither is any client while the anvil is unreachable; the worker then
 * serves it at once, uncounted. Otherwise the conn waits (unread) until
 * the anvil's answer, or ANVIL_CLIENT_DEADLINE_MS, and the answer
 * callback gets it back with the verdict: serve it (counted or not), or
 * refuse it with the text given. Answers come in the order of the asks.
 *
 * anvil_client_done() tells the anvil that a session ended; it sends a
 * notice only for a session the anvil counted. The client never blocks:
 * the socket is non-blocking, at most ANVIL_CLIENT_MAX_PENDING clients
 * wait, and a late or lost anvil means fail open (logged once per
 * ANVIL_CLIENT_LOG_INTERVAL seconds). When the anvil's connection closes
 * (the anvil died), the clients counted so far are counted no more, and
 * the client connects again.
 *
 * anvil_client_auth_failed() counts a failed AUTH the same way: its
 * callback gets the address's failures across workers, or 0 when the
 * anvil could not tell in time (the caller then counts alone).
 */
#ifndef PORTCULLIS_ANVIL_CLIENT_H
#define PORTCULLIS_ANVIL_CLIENT_H

#include <stdbool.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "conf.h"

#define ANVIL_CLIENT_DEADLINE_MS 100
#define ANVIL_CLIENT_MAX_PENDING 256
#define ANVIL_CLIENT_LOG_INTERVAL 60

struct anvil_client;
struct conn;

/*
 * anvil_client_fn - the verdict on a client that waited: refusal is NULL
 * to serve it, or why it is refused ("too many connections from ADDR")
 * with limit, the configuration key that refuses it; the callback takes c. It returns whether a session started (one
 * that did not is counted no more).
 */
typedef bool (*anvil_client_fn)(struct conn *c, const struct sockaddr *sa,
				socklen_t salen, void *data, const char *refusal,
				const char *limit, void *arg);

/*
 * anvil_client_new - a client for the anvil of the master with pid
 * master, connecting at once; NULL when out of memory
 */
struct anvil_client *anvil_client_new(struct event_base *base,
				      const struct conf *conf, int master,
				      anvil_client_fn answer, void *arg);

/*
 * anvil_client_ask - true when c (with data) now waits for the answer
 * callback; false when the caller serves it at once, uncounted
 */
bool anvil_client_ask(struct anvil_client *ac, struct conn *c,
		      const struct sockaddr *sa, socklen_t salen, void *data);

/*
 * anvil_client_done - the session of the client at the numeric address
 * addr, port port ended (or never started)
 */
void anvil_client_done(struct anvil_client *ac, const char *addr, unsigned port);

/* anvil_auth_fn - the failed AUTHs of the address within the window, 0: unknown */
typedef void (*anvil_auth_fn)(void *data, unsigned count);

/*
 * anvil_client_auth_failed - count a failed AUTH from the numeric
 * address addr over window seconds; done(data, count) follows from the
 * loop, never from this call. Returns an id for
 * anvil_client_auth_cancel(), or 0 when the anvil was not asked (done
 * is then not called).
 */
unsigned long anvil_client_auth_failed(struct anvil_client *ac, const char *addr,
				       unsigned window, anvil_auth_fn done, void *data);

/* anvil_client_auth_cancel - the asker went away: no callback for id */
void anvil_client_auth_cancel(struct anvil_client *ac, unsigned long id);

/* anvil_client_free - close, freeing the conns still waiting */
void anvil_client_free(struct anvil_client *ac);

#endif
