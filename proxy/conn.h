/*
 * conn.h - a non-blocking stream socket with an input and an output buffer
 *
 * What a libevent bufferevent does for the proxy's two kinds of socket
 * (clients and backends), with fewer system calls per SMTP exchange:
 *
 * - Output is written as soon as the callback that queued it returns
 *   (all of it in one writev), not one loop turn later after epoll has
 *   been told to watch for writability and has said so. Only output the
 *   socket cannot take at once waits for a write event.
 * - Input is read straight into the buffer's free space; no FIONREAD
 *   ioctl before every read.
 * - The read event stays registered while reading is on, so a reply
 *   written and a command read cost no epoll_ctl.
 *
 * Callbacks run on the event loop's thread. Any of them may free the
 * conn; the conn touches nothing of itself after calling one.
 *
 * Every byte to or from the socket passes through the conn's transport:
 * plain readv()/writev() by default. conn_set_transport() puts another
 * one underneath (TLS, once STARTTLS succeeded) without the session or
 * the relay above knowing; conn_discard_input() throws away what was
 * read before such a switch, so nothing a peer sent in clear text is
 * taken as sent under the new transport.
 */
#ifndef PORTCULLIS_CONN_H
#define PORTCULLIS_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>

struct conn;
struct iovec;

/*
 * A transport moves bytes between the buffers and the socket. Each
 * function returns the bytes moved, 0 for the end of input (read only),
 * or -1 with errno set: EAGAIN/EWOULDBLOCK when the socket cannot take or
 * give more now, anything else a failure of the connection.
 */
struct conn_transport {
	const char *name;
	ssize_t (*readv)(void *ctx, int fd, const struct iovec *iov, int n);
	ssize_t (*writev)(void *ctx, int fd, const struct iovec *iov, int n);
	void (*free)(void *ctx); /* the conn is freed; may be NULL */
	/*
	 * For a transport with a handshake and a state of its own (TLS);
	 * NULL for the plain one, which so pays nothing for them:
	 * handshake - one step: 1 done, 0 waiting (want() tells for what),
	 *             -1 failed;
	 * want      - after EAGAIN from any call, what it waits for: a read
	 *             may need the socket writable and a write readable;
	 * pending   - input the transport holds that the socket no longer
	 *             shows (read before, not yet taken).
	 */
	int (*handshake)(void *ctx, int fd);
	int (*want)(void *ctx);
	size_t (*pending)(void *ctx);
};

/* What a transport's call waits for (conn_transport.want). */
enum conn_want { CONN_WANT_READ = 1, CONN_WANT_WRITE = 2 };

/* What conn_event_fn reports. */
enum conn_event {
	CONN_CONNECTED, /* conn_connect() succeeded */
	CONN_EOF,	/* the peer closed its side */
	CONN_ERROR,	/* a socket error; conn_errno() tells which */
	CONN_READY,	/* the handshake conn_start_tls() began is done */
};

/* conn_data_fn - input arrived (read) or output drained to the low mark (write) */
typedef void (*conn_data_fn)(struct conn *c, void *arg);

/* conn_event_fn - connected, end of input, or an error */
typedef void (*conn_event_fn)(struct conn *c, enum conn_event what, void *arg);

/*
 * conn_new - a conn for fd (non-blocking, owned and closed by the conn),
 * or for a socket conn_connect() opens later when fd is -1; reading is
 * off until conn_read_enable() or a successful connect
 */
struct conn *conn_new(struct event_base *base, evutil_socket_t fd);

/* conn_setcb - the callbacks and their argument */
void conn_setcb(struct conn *c, conn_data_fn read, conn_data_fn write,
		conn_event_fn event, void *arg);

/*
 * conn_connect - open a socket to sa and connect; CONN_CONNECTED or
 * CONN_ERROR follows from the loop. -1 when no socket could be made.
 */
int conn_connect(struct conn *c, const struct sockaddr *sa, socklen_t len);

/* conn_read_enable / conn_read_disable - whether input is read */
void conn_read_enable(struct conn *c);
void conn_read_disable(struct conn *c);

/*
 * conn_read_limit - stop reading while the input buffer holds max bytes
 * or more (0: no limit); reading resumes when it is drained below
 */
void conn_read_limit(struct conn *c, size_t max);

/*
 * conn_write_low - call the write callback after a write that leaves at
 * most low bytes in the output buffer (default 0: when it is empty)
 */
void conn_write_low(struct conn *c, size_t low);

/* conn_input / conn_output - the buffers (output is written by itself) */
struct evbuffer *conn_input(struct conn *c);
struct evbuffer *conn_output(struct conn *c);

/* conn_fd - the socket, or -1 */
evutil_socket_t conn_fd(const struct conn *c);

/* conn_errno - the errno of the last CONN_ERROR */
int conn_errno(const struct conn *c);

/*
 * conn_set_transport - move bytes through t from now on (ctx is its
 * state, released by t->free with the conn); NULL: plain socket calls
 */
void conn_set_transport(struct conn *c, const struct conn_transport *t,
			void *ctx);

/*
 * conn_start_tls - write the output queued so far as it is (the reply
 * that announces the switch), throw away the input read and not yet
 * consumed (what a client pipelined in clear text must never count as
 * sent under TLS, CVE-2011-0411), then move bytes through t (ctx) and
 * run its handshake from the loop: no read or write callback until it
 * is done, then CONN_READY, or CONN_ERROR (errno EPROTO: t's state
 * tells why) or CONN_EOF. The first step waits for the loop, so the
 * caller gets no callback from within this call.
 */
void conn_start_tls(struct conn *c, const struct conn_transport *t, void *ctx);

/* conn_discard_input - throw away what was read and not yet consumed */
void conn_discard_input(struct conn *c);

/*
 * conn_flush_now - write what the socket takes of the output at once,
 * without callbacks, for a last line before conn_free() (the loop may not
 * turn again); the rest is lost
 */
void conn_flush_now(struct conn *c);

/* conn_free - close the socket and release everything; unsent output is lost */
void conn_free(struct conn *c);

#endif
