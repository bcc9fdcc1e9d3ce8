/*
 * listener.h - one listening socket of a worker and its settings
 *
 * The master opens the sockets (listen setting order, before privileges
 * are dropped); each worker wraps every one in a struct listener that
 * carries what is particular to that address: its text as configured
 * (pc_listener() and the records name it), and the settings that a TLS
 * mode, the PROXY protocol and AUTH will add per listener.
 *
 * A listener accepts one connection per readiness event (the event is
 * level-triggered, so a backlog brings it back at the next loop turn,
 * between other sessions' events) and hands its owner a conn for it
 * through the callback it was given. A pre-session step (reading a
 * PROXY header) may run in between: the owner then gets the conn with
 * the bytes that followed the header already in its input buffer, and
 * the client's address from the header instead of the socket's peer.
 */
#ifndef PORTCULLIS_LISTENER_H
#define PORTCULLIS_LISTENER_H

#include <stdbool.h>
#include <sys/socket.h>

#include <event2/event.h>

struct conn;
struct listener;

/*
 * listener_accept_fn - a connection is ready for a session (c, with the
 * client's address sa), or accepting failed (c is NULL, err is errno:
 * EMFILE and ENFILE are the owner's to handle; a listener logs nothing)
 */
typedef void (*listener_accept_fn)(struct listener *l, struct conn *c,
				   const struct sockaddr *sa, socklen_t salen,
				   int err, void *arg);

struct listener {
	struct event_base *base;
	evutil_socket_t fd;
	const char *text; /* the listen setting, as configured */
	struct event *ev;
	bool enabled;
	listener_accept_fn accept;
	void *arg;
};

/*
 * listener_init - wrap the listening socket fd (owned from now on);
 * accepting is off until listener_enable(). -1 when out of memory.
 */
int listener_init(struct listener *l, struct event_base *base, evutil_socket_t fd,
		  const char *text, listener_accept_fn accept, void *arg);

/* listener_enable / listener_disable - whether connections are accepted */
void listener_enable(struct listener *l);
void listener_disable(struct listener *l);

/* listener_close - close the socket (the backlog is refused by the kernel) */
void listener_close(struct listener *l);

#endif
