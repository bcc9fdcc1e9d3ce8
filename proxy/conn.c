/*
 * conn.c - a non-blocking stream socket with buffers (see conn.h)
 *
 * Three events per conn: a persistent read event, registered while
 * reading is wanted; a persistent write event, registered only while
 * output waits for the socket (or a connect for its result); and a
 * flush event that is never registered with epoll but activated by
 * hand when output is queued, so the write happens once, after the
 * callback that queued it returns, in the same loop turn.
 *
 * A transport with a handshake (TLS) adds three cases, each a flag the
 * plain transport never sets: while handshaking, the read and write
 * events serve the handshake alone (the one its last step waits for);
 * a read that needs the socket writable (read_wants_write) retries
 * from the write event, a write that needs it readable
 * (write_wants_read) from the read event; and input the transport
 * decrypted and holds (pending) activates the read event by hand, as
 * epoll no longer sees it in the socket.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "conn.h"

/* Bytes asked of the kernel per read. */
#define CONN_READ_SIZE 16384
/* Output vectors handed to one write. */
#define CONN_WRITE_IOV 64

struct conn {
	struct event_base *base;
	evutil_socket_t fd;
	struct evbuffer *in;
	struct evbuffer *out;
	struct event *rev;
	struct event *wev;
	struct event *flush;
	conn_data_fn readcb;
	conn_data_fn writecb;
	conn_event_fn eventcb;
	void *arg;
	const struct conn_transport *transport;
	void *transport_ctx;
	const struct conn_transport *next; /* conn_start_tls(): after the output drains */
	void *next_ctx;
	size_t read_max;
	size_t write_low;
	bool reading;	 /* the user wants input */
	bool rev_added;
	bool wev_added;
	bool connecting; /* wev waits for the connect's result */
	bool closed;	 /* EOF or an error: no more I/O */
	bool handshaking; /* conn_start_tls() until CONN_READY */
	int hs_want;	 /* what the handshake's last step waits for, 0: nothing yet */
	bool read_wants_write;
	bool write_wants_read;
	int err;
};

static void conn_read_cb(evutil_socket_t fd, short what, void *arg);
static void conn_write_cb(evutil_socket_t fd, short what, void *arg);
static void conn_flush_cb(evutil_socket_t fd, short what, void *arg);

/* plain_readv - the socket as it is */
static ssize_t plain_readv(void *ctx, int fd, const struct iovec *iov, int n)
{
	(void)ctx;
	return readv(fd, iov, n);
}

/* plain_writev - the socket as it is; a peer gone is an error, not a signal */
static ssize_t plain_writev(void *ctx, int fd, const struct iovec *iov, int n)
{
	struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n };

	(void)ctx;
	return sendmsg(fd, &msg, MSG_NOSIGNAL);
}

static const struct conn_transport conn_plain = {
	.name = "plain",
	.readv = plain_readv,
	.writev = plain_writev,
};

/* conn_update_read - register the read event exactly when input is wanted */
static void conn_update_read(struct conn *c)
{
	bool want;

	if (c->handshaking)
		want = c->hs_want == CONN_WANT_READ;
	else
		want = (c->reading &&
			!(c->read_max && evbuffer_get_length(c->in) >= c->read_max)) ||
		       c->write_wants_read;
	want = want && c->rev && !c->connecting && !c->closed;
	if (want && !c->rev_added) {
		event_add(c->rev, NULL);
		c->rev_added = true;
	} else if (!want && c->rev_added) {
		event_del(c->rev);
		c->rev_added = false;
	}
	/* Input the transport holds: the socket will not say so. */
	if (want && !c->handshaking && c->transport->pending &&
	    c->transport->pending(c->transport_ctx) > 0)
		event_active(c->rev, EV_READ, 1);
}

/* conn_want_write - register the write event or not */
static void conn_want_write(struct conn *c, bool want)
{
	if (want && !c->wev_added) {
		event_add(c->wev, NULL);
		c->wev_added = true;
	} else if (!want && c->wev_added) {
		event_del(c->wev);
		c->wev_added = false;
	}
}

/* conn_out_cb - output was queued: write it at the end of this loop turn */
static void conn_out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
			void *arg)
{
	struct conn *c = arg;

	(void)buf;
	if (info->n_added && c->fd >= 0 && !c->wev_added && !c->closed &&
	    !c->handshaking)
		event_active(c->flush, EV_WRITE, 1);
}

/* conn_in_cb - input was consumed: reading may resume below the limit */
static void conn_in_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
		       void *arg)
{
	struct conn *c = arg;

	(void)buf;
	if (info->n_deleted && c->read_max && !c->rev_added)
		conn_update_read(c);
}

/* conn_set_fd - take fd and make its events */
static int conn_set_fd(struct conn *c, evutil_socket_t fd)
{
	c->fd = fd;
	c->rev = event_new(c->base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
	c->wev = event_new(c->base, fd, EV_WRITE | EV_PERSIST, conn_write_cb, c);
	return c->rev && c->wev ? 0 : -1;
}

/* conn_new - a conn for fd, or for a later conn_connect() */
struct conn *conn_new(struct event_base *base, evutil_socket_t fd)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->base = base;
	c->fd = -1;
	c->transport = &conn_plain;
	c->in = evbuffer_new();
	c->out = evbuffer_new();
	c->flush = event_new(base, -1, 0, conn_flush_cb, c);
	if (!c->in || !c->out || !c->flush ||
	    !evbuffer_add_cb(c->out, conn_out_cb, c) ||
	    !evbuffer_add_cb(c->in, conn_in_cb, c) ||
	    (fd >= 0 && conn_set_fd(c, fd) < 0)) {
		if (fd >= 0 && c->fd < 0)
			close(fd);
		conn_free(c);
		return NULL;
	}
	return c;
}

/* conn_setcb - the callbacks */
void conn_setcb(struct conn *c, conn_data_fn read, conn_data_fn write,
		conn_event_fn event, void *arg)
{
	c->readcb = read;
	c->writecb = write;
	c->eventcb = event;
	c->arg = arg;
}

/* conn_connect - start a connect to sa */
int conn_connect(struct conn *c, const struct sockaddr *sa, socklen_t len)
{
	evutil_socket_t fd = socket(sa->sa_family,
				    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		c->err = errno;
		return -1;
	}
	if (conn_set_fd(c, fd) < 0) {
		c->err = ENOMEM;
		return -1;
	}
	if (connect(fd, sa, len) < 0 && errno != EINPROGRESS) {
		c->err = errno;
		return -1;
	}
	/* Writable means connected, or failed: SO_ERROR tells. */
	c->connecting = true;
	event_add(c->wev, NULL);
	c->wev_added = true;
	return 0;
}

/* conn_read_enable - read input */
void conn_read_enable(struct conn *c)
{
	c->reading = true;
	conn_update_read(c);
}

/* conn_read_disable - leave input in the socket */
void conn_read_disable(struct conn *c)
{
	c->reading = false;
	conn_update_read(c);
}

/* conn_read_limit - the input buffer's high-water mark */
void conn_read_limit(struct conn *c, size_t max)
{
	c->read_max = max;
	conn_update_read(c);
}

/* conn_write_low - the output buffer's low-water mark */
void conn_write_low(struct conn *c, size_t low)
{
	c->write_low = low;
}

struct evbuffer *conn_input(struct conn *c)
{
	return c->in;
}

struct evbuffer *conn_output(struct conn *c)
{
	return c->out;
}

evutil_socket_t conn_fd(const struct conn *c)
{
	return c->fd;
}

int conn_errno(const struct conn *c)
{
	return c->err;
}

/* conn_stop - no more I/O after EOF or an error */
static void conn_stop(struct conn *c)
{
	c->closed = true;
	conn_update_read(c);
	if (c->wev_added) {
		event_del(c->wev);
		c->wev_added = false;
	}
	event_del(c->flush);
}

/* conn_fail - report a socket error */
static void conn_fail(struct conn *c, int err)
{
	c->err = err;
	conn_stop(c);
	if (c->eventcb)
		c->eventcb(c, CONN_ERROR, c->arg);
}

static void conn_write(struct conn *c);
static void conn_handshake_step(struct conn *c);

/* conn_read_cb - the socket is readable */
static void conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct evbuffer_iovec v[2];
	struct iovec iov[2];
	ssize_t got;
	int n;

	(void)what;
	if (c->handshaking) {
		conn_handshake_step(c);
		return;
	}
	if (c->write_wants_read) {
		/* A write waited for this; a read, if wanted, comes next turn. */
		c->write_wants_read = false;
		conn_update_read(c);
		conn_write(c);
		return;
	}
	n = evbuffer_reserve_space(c->in, CONN_READ_SIZE, v, 2);
	if (n <= 0) {
		conn_fail(c, ENOMEM);
		return;
	}
	for (int i = 0; i < n; i++) {
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len;
	}
	got = c->transport->readv(c->transport_ctx, fd, iov, n);
	if (got <= 0) {
		int err = errno;
		evbuffer_commit_space(c->in, v, 0);
		if (got < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)) {
			if (c->transport->want &&
			    c->transport->want(c->transport_ctx) == CONN_WANT_WRITE) {
				c->read_wants_write = true;
				conn_want_write(c, true);
			}
			return;
		}
		if (got < 0) {
			conn_fail(c, err);
			return;
		}
		conn_stop(c);
		if (c->eventcb)
			c->eventcb(c, CONN_EOF, c->arg);
		return;
	}
	/* Say how much of each reserved vector was filled. */
	size_t left = (size_t)got;
	for (int i = 0; i < n; i++) {
		if (v[i].iov_len > left)
			v[i].iov_len = left;
		left -= v[i].iov_len;
	}
	evbuffer_commit_space(c->in, v, n);
	conn_update_read(c);
	if (c->readcb)
		c->readcb(c, c->arg);
}

/*
 * conn_write_some - hand the output to the transport until it takes no
 * more; 0, or -1 with errno of a failure (EAGAIN is not one)
 */
static int conn_write_some(struct conn *c)
{
	struct evbuffer_iovec v[CONN_WRITE_IOV];
	struct iovec iov[CONN_WRITE_IOV];

	while (evbuffer_get_length(c->out) > 0) {
		int n = evbuffer_peek(c->out, -1, NULL, v, CONN_WRITE_IOV);
		if (n > CONN_WRITE_IOV)
			n = CONN_WRITE_IOV;
		for (int i = 0; i < n; i++) {
			iov[i].iov_base = v[i].iov_base;
			iov[i].iov_len = v[i].iov_len;
		}
		ssize_t put = c->transport->writev(c->transport_ctx, c->fd, iov, n);
		if (put < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
				if (c->transport->want &&
				    c->transport->want(c->transport_ctx) == CONN_WANT_READ) {
					c->write_wants_read = true;
					conn_update_read(c);
				}
				return 0;
			}
			return -1;
		}
		evbuffer_drain(c->out, (size_t)put);
		if (put == 0)
			return 0;
	}
	return 0;
}

static void conn_switch(struct conn *c);

/* conn_write - write what the socket takes; wait for it with the rest */
static void conn_write(struct conn *c)
{
	size_t len;

	if (conn_write_some(c) < 0) {
		conn_fail(c, errno);
		return;
	}
	len = evbuffer_get_length(c->out);
	if (c->next) {
		/* The clear-text reply before a handshake: no callback. */
		if (len == 0)
			conn_switch(c);
		return;
	}
	conn_want_write(c, (len > 0 && !c->write_wants_read) || c->read_wants_write);
	if (len <= c->write_low && c->writecb)
		c->writecb(c, c->arg);
}

/* conn_flush_cb - output queued during this loop turn */
static void conn_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	if (!c->wev_added && !c->closed && !c->handshaking)
		conn_write(c);
}

/* conn_write_cb - the socket is writable: connected, or room for output */
static void conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)what;
	if (c->connecting) {
		int err = 0;
		socklen_t len = sizeof(err);

		c->connecting = false;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err) {
			conn_fail(c, err);
			return;
		}
		event_del(c->wev);
		c->wev_added = false;
		c->reading = true;
		conn_update_read(c);
		/* Output queued while connecting goes out now. */
		if (evbuffer_get_length(c->out))
			event_active(c->flush, EV_WRITE, 1);
		if (c->eventcb)
			c->eventcb(c, CONN_CONNECTED, c->arg);
		return;
	}
	if (c->handshaking && !c->next) {
		conn_handshake_step(c);
		return;
	}
	if (c->read_wants_write) {
		c->read_wants_write = false;
		conn_want_write(c, evbuffer_get_length(c->out) > 0);
		conn_read_cb(fd, EV_READ, c);
		return;
	}
	conn_write(c);
}

/* conn_switch - the clear-text output is out: the new transport's handshake begins */
static void conn_switch(struct conn *c)
{
	if (c->transport->free)
		c->transport->free(c->transport_ctx);
	c->transport = c->next;
	c->transport_ctx = c->next_ctx;
	c->next = NULL;
	c->next_ctx = NULL;
	/* Whatever arrived meanwhile was sent before the switch, in clear. */
	conn_discard_input(c);
	evbuffer_drain(c->out, evbuffer_get_length(c->out));
	/*
	 * The client speaks first: in the server role wait for its hello; in
	 * the client role (the transport's state already wants to write, as
	 * a TLS connection to the backend does) write ours when the socket
	 * takes it.
	 */
	c->hs_want = c->transport->want && c->transport->want(c->transport_ctx) == CONN_WANT_WRITE
			     ? CONN_WANT_WRITE : CONN_WANT_READ;
	conn_want_write(c, c->hs_want == CONN_WANT_WRITE);
	conn_update_read(c);
	/* It may have spoken already, in bytes the transport was given. */
	if (c->transport->pending && c->transport->pending(c->transport_ctx) > 0)
		event_active(c->rev, EV_READ, 1);
}

/* conn_handshake_step - drive the handshake one step from the loop */
static void conn_handshake_step(struct conn *c)
{
	int r = c->transport->handshake(c->transport_ctx, c->fd);

	if (r == 0) {
		c->hs_want = c->transport->want(c->transport_ctx);
		conn_update_read(c);
		conn_want_write(c, c->hs_want == CONN_WANT_WRITE);
		return;
	}
	c->handshaking = false;
	c->hs_want = 0;
	conn_want_write(c, false);
	if (r < 0) {
		conn_fail(c, EPROTO);
		return;
	}
	conn_update_read(c);
	if (evbuffer_get_length(c->out))
		event_active(c->flush, EV_WRITE, 1);
	if (c->eventcb)
		c->eventcb(c, CONN_READY, c->arg);
}

/* conn_start_tls - the queued output in clear, then t and its handshake */
void conn_start_tls(struct conn *c, const struct conn_transport *t, void *ctx)
{
	conn_discard_input(c);
	c->next = t;
	c->next_ctx = ctx;
	c->handshaking = true; /* no reading until the switch */
	c->hs_want = 0;
	c->read_wants_write = c->write_wants_read = false;
	conn_update_read(c);
	if (conn_write_some(c) < 0 || evbuffer_get_length(c->out) == 0)
		conn_switch(c); /* a failed write fails the handshake */
	else
		conn_want_write(c, true);
}

/* conn_set_transport - the transport from now on */
void conn_set_transport(struct conn *c, const struct conn_transport *t,
			void *ctx)
{
	if (c->transport->free)
		c->transport->free(c->transport_ctx);
	c->transport = t ? t : &conn_plain;
	c->transport_ctx = t ? ctx : NULL;
}

/* conn_discard_input - drop what was read and not consumed */
void conn_discard_input(struct conn *c)
{
	evbuffer_drain(c->in, evbuffer_get_length(c->in));
}

/* conn_flush_now - a last write, at once and without callbacks */
void conn_flush_now(struct conn *c)
{
	if (c->fd < 0 || c->closed || c->connecting)
		return;
	if (conn_write_some(c) < 0)
		c->err = errno;
}

/* conn_free - close and release */
void conn_free(struct conn *c)
{
	if (!c)
		return;
	if (c->rev)
		event_free(c->rev);
	if (c->wev)
		event_free(c->wev);
	if (c->flush)
		event_free(c->flush);
	if (c->in) {
		evbuffer_remove_cb(c->in, conn_in_cb, c);
		evbuffer_free(c->in);
	}
	if (c->out) {
		evbuffer_remove_cb(c->out, conn_out_cb, c);
		evbuffer_free(c->out);
	}
	if (c->transport->free)
		c->transport->free(c->transport_ctx);
	if (c->next && c->next->free)
		c->next->free(c->next_ctx);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}
