/*
 * listener.c - one listening socket of a worker, and the PROXY
 * pre-session (see listener.h)
 *
 * Every worker accepts on the same sockets; the kernel hands each
 * connection to one of them, and the others find the backlog empty
 * (EAGAIN), which is no error.
 *
 * The pre-session's work is bounded per connection: the input buffer
 * never needs more than PROXYPROTO_MAX bytes for a header (the decoder
 * says malformed past that), each read costs one parse of at most that
 * many bytes, and proxy_timeout ends it. A connection the deadline or a
 * bad header ends costs the listener nothing more.
 */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "conf.h"
#include "conn.h"
#include "listener.h"
#include "proxyproto.h"

/* A connection waiting for its PROXY header. */
struct listener_pre {
	struct listener *l;
	struct conn *c;
	struct event *timer;
	struct sockaddr_storage peer; /* the balancer */
	socklen_t peerlen;
	struct listener_pre *prev, *next;
};

static void listener_pre_read(struct conn *c, void *arg);
static void listener_pre_event(struct conn *c, enum conn_event what, void *arg);
static void listener_pre_timeout(evutil_socket_t fd, short events, void *arg);

/* listener_proxied - whether a PROXY header comes first */
bool listener_proxied(const struct listener *l)
{
	return l->settings && l->settings->proxy_protocol != CONF_PROXY_OFF;
}

/*
 * listener_trusted - whether the peer may send a PROXY header: it is in
 * proxy_from (an IPv4 peer of a dual-stack socket as IPv4)
 */
static bool listener_trusted(const struct listener *l, const struct sockaddr *sa)
{
	const struct conf_listener *set = l->settings;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		return conf_net_match(set->proxy_from, set->nproxy_from, AF_INET,
				      (const unsigned char *)&in->sin_addr);
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			return conf_net_match(set->proxy_from, set->nproxy_from, AF_INET,
					      &in6->sin6_addr.s6_addr[12]);
		return conf_net_match(set->proxy_from, set->nproxy_from, AF_INET6,
				      in6->sin6_addr.s6_addr);
	}
	return false;
}

/* listener_pre_release - forget p; its conn is the caller's, unread and without callbacks */
static struct conn *listener_pre_release(struct listener_pre *p)
{
	struct listener *l = p->l;
	struct conn *c = p->c;

	if (p->prev)
		p->prev->next = p->next;
	else
		l->pending = p->next;
	if (p->next)
		p->next->prev = p->prev;
	l->npending--;
	if (p->timer)
		event_free(p->timer);
	conn_read_disable(c);
	conn_read_limit(c, 0);
	conn_setcb(c, NULL, NULL, NULL, NULL);
	return c;
}

/* listener_pre_drop - end a pre-session: the owner records and closes it */
static void listener_pre_drop(struct listener_pre *p, const char *action,
			      const char *reason)
{
	struct listener *l = p->l;
	struct conn *c = listener_pre_release(p);

	l->drop(l, c, (struct sockaddr *)&p->peer, p->peerlen, action, reason, l->arg);
	free(p);
}

/* listener_pre_read - input arrived: is the header whole? */
static void listener_pre_read(struct conn *c, void *arg)
{
	struct listener_pre *p = arg;
	struct listener *l = p->l;
	struct evbuffer *in = conn_input(c);
	size_t n = evbuffer_get_length(in);
	struct proxyproto_result r;
	const unsigned char *buf;
	char reason[160];

	if (n > PROXYPROTO_MAX)
		n = PROXYPROTO_MAX;
	buf = evbuffer_pullup(in, (ev_ssize_t)n);
	if (!buf) {
		listener_pre_drop(p, "dropped", "out of memory");
		return;
	}
	switch (proxyproto_parse(buf, n, (unsigned)l->settings->proxy_protocol, &r)) {
	case PROXYPROTO_MORE:
		return;
	case PROXYPROTO_MALFORMED:
		snprintf(reason, sizeof(reason), "malformed PROXY header: %s", r.error);
		listener_pre_drop(p, "dropped", reason);
		return;
	case PROXYPROTO_DONE:
		break;
	}
	/* What follows the header is the client's SMTP: it stays. */
	evbuffer_drain(in, r.consumed);
	c = listener_pre_release(p);
	if (r.local)
		l->accept(l, c, (struct sockaddr *)&p->peer, p->peerlen, 0, l->arg);
	else
		l->accept(l, c, (struct sockaddr *)&r.src, r.srclen, 0, l->arg);
	free(p);
}

/* listener_pre_event - the peer left (or failed) before its header was whole */
static void listener_pre_event(struct conn *c, enum conn_event what, void *arg)
{
	(void)c;
	listener_pre_drop(arg, "dropped", what == CONN_EOF
			  ? "connection closed before the PROXY header"
			  : "connection error before the PROXY header");
}

/* listener_pre_timeout - proxy_timeout passed without a whole header */
static void listener_pre_timeout(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	listener_pre_drop(arg, "dropped", "no whole PROXY header within proxy_timeout");
}

/* listener_pre_start - wait for the PROXY header of a new connection */
static void listener_pre_start(struct listener *l, struct conn *c,
			       const struct sockaddr_storage *ss, socklen_t len)
{
	unsigned ms = l->settings->proxy_timeout_ms;
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	struct listener_pre *p;

	if (!listener_trusted(l, (const struct sockaddr *)ss)) {
		l->drop(l, c, (const struct sockaddr *)ss, len, "refused",
			"PROXY header from an untrusted address", l->arg);
		return;
	}
	if (l->npending >= l->max_pending) {
		l->drop(l, c, (const struct sockaddr *)ss, len, "dropped",
			"too many connections waiting for a PROXY header", l->arg);
		return;
	}
	p = calloc(1, sizeof(*p));
	if (p)
		p->timer = evtimer_new(l->base, listener_pre_timeout, p);
	if (!p || !p->timer) {
		free(p);
		l->drop(l, c, (const struct sockaddr *)ss, len, "dropped", "out of memory",
			l->arg);
		return;
	}
	p->l = l;
	p->c = c;
	memcpy(&p->peer, ss, len);
	p->peerlen = len;
	p->next = l->pending;
	if (p->next)
		p->next->prev = p;
	l->pending = p;
	l->npending++;
	evtimer_add(p->timer, &tv);
	conn_setcb(c, listener_pre_read, NULL, listener_pre_event, p);
	/* No header is longer: past this the decoder has said malformed. */
	conn_read_limit(c, PROXYPROTO_MAX);
	conn_read_enable(c);
}

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
	if (listener_proxied(l)) {
		listener_pre_start(l, c, &ss, len);
		return;
	}
	l->accept(l, c, (struct sockaddr *)&ss, len, 0, l->arg);
}

/* listener_init - wrap a listening socket */
int listener_init(struct listener *l, struct event_base *base, evutil_socket_t fd,
		  const char *text, const struct conf_listener *settings,
		  unsigned max_pending, listener_accept_fn accept,
		  listener_drop_fn drop, void *arg)
{
	l->base = base;
	l->fd = fd;
	l->text = text;
	l->settings = settings;
	l->max_pending = max_pending;
	l->pending = NULL;
	l->npending = 0;
	l->accept = accept;
	l->drop = drop;
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
	while (l->pending)
		listener_pre_drop(l->pending, "dropped", "service shutting down");
}
