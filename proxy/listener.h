/*
 * listener.h - one listening socket of a worker and its settings
 *
 * The master opens the sockets (listen setting order, before privileges
 * are dropped); each worker wraps every one in a struct listener that
 * carries what is particular to that address: its text as configured
 * (pc_listener() and the records name it), and its settings (struct
 * conf_listener): the PROXY protocol, the TLS mode with the server
 * context tls_load() made for it before the fork (the session starts
 * TLS over the conn, tls.h), and what AUTH will add.
 *
 * A listener accepts one connection per readiness event (the event is
 * level-triggered, so a backlog brings it back at the next loop turn,
 * between other sessions' events) and hands its owner a conn for it
 * through the callback it was given. A pre-session step (reading a
 * PROXY header) may run in between: the owner then gets the conn with
 * the bytes that followed the header already in its input buffer, and
 * the client's address from the header instead of the socket's peer.
 *
 * The PROXY pre-session (settings->proxy_protocol not off): a peer
 * outside proxy_from is refused at once; from the others the header
 * (proxyproto.h) is read into the conn's input buffer, parsed after each
 * read, and must be whole within proxy_timeout. Its bytes are drained
 * and nothing after them is touched. A header of the LOCAL kind (v2
 * LOCAL, v1 UNKNOWN: the balancer's own checks) hands the conn on with
 * the socket's peer as the client. A connection that ends in the
 * pre-session (untrusted, malformed, late, closed, too many waiting, or
 * the listener closed) goes to the drop callback with the action and
 * the reason for its record; the pre-session never writes to the peer.
 * At most max_pending connections wait for their header at a time. A
 * listener without the PROXY protocol has no pre-session: accept4(),
 * then the owner.
 */
#ifndef PORTCULLIS_LISTENER_H
#define PORTCULLIS_LISTENER_H

#include <stdbool.h>
#include <sys/socket.h>

#include <event2/event.h>

struct conf_listener;
struct conn;
struct listener;
struct listener_pre;

/*
 * listener_accept_fn - a connection is ready for a session (c, with the
 * client's address sa), or accepting failed (c is NULL, err is errno:
 * EMFILE and ENFILE are the owner's to handle; a listener logs nothing)
 */
typedef void (*listener_accept_fn)(struct listener *l, struct conn *c,
				   const struct sockaddr *sa, socklen_t salen,
				   int err, void *arg);

/*
 * listener_drop_fn - a connection ended in the pre-session: c (taken)
 * from the socket's peer sa, action "refused" or "dropped", and why
 */
typedef void (*listener_drop_fn)(struct listener *l, struct conn *c,
				 const struct sockaddr *sa, socklen_t salen,
				 const char *action, const char *reason, void *arg);

struct listener {
	struct event_base *base;
	evutil_socket_t fd;
	const char *text; /* the listen setting, as configured */
	const struct conf_listener *settings;
	struct event *ev;
	bool enabled;
	listener_accept_fn accept;
	listener_drop_fn drop;
	void *arg;
	struct listener_pre *pending; /* waiting for their PROXY header */
	unsigned npending, max_pending;
};

/*
 * listener_init - wrap the listening socket fd (owned from now on) with
 * its settings (kept, not copied); accepting is off until
 * listener_enable(). -1 when out of memory.
 */
int listener_init(struct listener *l, struct event_base *base, evutil_socket_t fd,
		  const char *text, const struct conf_listener *settings,
		  unsigned max_pending, listener_accept_fn accept,
		  listener_drop_fn drop, void *arg);

/* listener_proxied - whether the listener's clients come through a PROXY header */
bool listener_proxied(const struct listener *l);

/* listener_enable / listener_disable - whether connections are accepted */
void listener_enable(struct listener *l);
void listener_disable(struct listener *l);

/*
 * listener_close - close the socket (the backlog is refused by the
 * kernel); connections still waiting for a header are dropped
 */
void listener_close(struct listener *l);

#endif
