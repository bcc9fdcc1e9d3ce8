/*
 * listener.c - one listening socket of a worker (see listener.h)
 *
 * Every worker accepts on the same sockets; the kernel hands each
 * connection to one of them, and the others find the backlog empty
 * (EAGAIN), which is no error.
 */
#include "config.h"

#include <errno.h>
#include <unistd.h>

#include "conn.h"
#include "listener.h"

/* listener_cb - the socket is readable: accept one connection */
static void listener_cb(evutil_socket_t fd, short events, void *arg)
{
	struct listener *l = arg;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	struct conn *c;
	int cfd;

	(void)events;
	cfd = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (cfd < 0) {
		int err = errno;
		/* Another worker took it, or the client gave up already. */
		if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR ||
		    err == ECONNABORTED)
			return;
		l->accept(l, NULL, NULL, 0, err, l->arg);
		return;
	}
	/* TCP_NODELAY comes from the listening socket (master_listen). */
	c = conn_new(l->base, cfd);
	if (!c) {
		/* conn_new() closed the socket. */
		l->accept(l, NULL, NULL, 0, ENOMEM, l->arg);
		return;
	}
	l->accept(l, c, (struct sockaddr *)&ss, len, 0, l->arg);
}

/* listener_init - wrap a listening socket */
int listener_init(struct listener *l, struct event_base *base, evutil_socket_t fd,
		  const char *text, listener_accept_fn accept, void *arg)
{
	l->base = base;
	l->fd = fd;
	l->text = text;
	l->accept = accept;
	l->arg = arg;
	l->enabled = false;
	l->ev = event_new(base, fd, EV_READ | EV_PERSIST, listener_cb, l);
	return l->ev ? 0 : -1;
}

/* listener_enable - accept connections */
void listener_enable(struct listener *l)
{
	if (l->ev && !l->enabled) {
		event_add(l->ev, NULL);
		l->enabled = true;
	}
}

/* listener_disable - leave connections in the backlog */
void listener_disable(struct listener *l)
{
	if (l->ev && l->enabled) {
		event_del(l->ev);
		l->enabled = false;
	}
}

/* listener_close - stop for good */
void listener_close(struct listener *l)
{
	if (l->ev)
		event_free(l->ev);
	l->ev = NULL;
	l->enabled = false;
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
}
