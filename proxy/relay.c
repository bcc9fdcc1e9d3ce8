/*
 * relay.c - the backend side of a session
 *
 * One explicit state machine per backend connection. The handshake
 * states (CONNECTING to XFORWARD) fall through to the next configured
 * backend on any failure; once a transaction is under way, a failure
 * ends the current operation with a 451 made up here and closes the
 * connection, so the backend discards whatever it had of the message.
 *
 * Every wait has a timer of its own (RFC 5321 4.5.3.2 values by default),
 * and a reply larger than RELAY_MAX_INPUT is a protocol error: a broken
 * backend cannot make a worker buffer without bound.
 */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conn.h"
#include "log.h"
#include "relay.h"
#include "tls.h"

#define RELAY_MAX_INPUT (1024 * 1024)
#define RELAY_CHUNK 65536
#define RELAY_HIGH_WATER (256 * 1024)
#define RELAY_QUIT_TIMEOUT 10
/* Replies made up here, each written once. */
#define REPLY_BACKEND_OOM "451 4.3.0 Out of memory, try again later"
#define REPLY_BACKEND_UNAVAILABLE "451 4.4.1 Backend mail server not available, try again later"
#define REPLY_BACKEND_NO_CONNECTION \
	"451 4.4.2 No connection to the backend mail server, try again later"
/* What the client hears when no backend would give the TLS it must use. */
#define REPLY_BACKEND_NO_TLS \
	"451 4.7.5 No TLS to the backend mail server as required, try again later"

enum relay_state {
	RELAY_CLOSED,
	RELAY_CONNECTING,
	RELAY_GREETING,
	RELAY_EHLO,
	RELAY_STARTTLS,	/* STARTTLS sent, waiting for 220 */
	RELAY_TLS,	/* the TLS handshake with the backend runs */
	RELAY_XCLIENT,
	RELAY_XFORWARD,
	RELAY_RSET,	/* silent RSET before a new MAIL */
	RELAY_IDLE,	/* open, waiting for the next operation */
	RELAY_COMMAND,	/* MAIL, RCPT or RSET sent */
	RELAY_AUTH,	/* a line of the client's AUTH exchange sent */
	RELAY_AUTH_CONT, /* the backend said 334: the client's turn */
	RELAY_NOOP,	/* keeping the backend awake while the client sends */
	RELAY_DATA,	/* DATA sent, waiting for 354 */
	RELAY_BODY,	/* streaming the message */
	RELAY_DOT,	/* end of data sent, waiting for the final reply */
	RELAY_QUIT,	/* detached from the session, closing politely */
	RELAY_PARK_RSET, /* detached, ending an open transaction before parking */
	RELAY_PARKED,	/* detached, idle, waiting for the next session */
};

static const char *const relay_state_names[] = {
	"closed", "connecting", "greeting", "EHLO", "STARTTLS", "TLS handshake", "XCLIENT", "XFORWARD",
	"RSET", "idle", "command", "AUTH", "AUTH challenge", "NOOP", "DATA", "message body", "end of data", "QUIT",
	"RSET before reuse", "parked",
};

/*
 * The phases. Opening: the connection and the client's identity, before
 * anything of a transaction; a failure tries the next backend. Detached:
 * the session is gone (closing, or parking for the next one). Every other
 * state serves an operation of the session.
 */

/* relay_opening - connecting, greeting, EHLO, STARTTLS, TLS, XCLIENT or XFORWARD */
static bool relay_opening(enum relay_state st)
{
	return st == RELAY_CONNECTING || st == RELAY_GREETING || st == RELAY_EHLO ||
	       st == RELAY_STARTTLS || st == RELAY_TLS || st == RELAY_XCLIENT ||
	       st == RELAY_XFORWARD;
}

/* relay_detached - QUIT, RSET before parking, or parked */
static bool relay_detached(enum relay_state st)
{
	return st == RELAY_QUIT || st == RELAY_PARK_RSET || st == RELAY_PARKED;
}

struct relay;
static bool relay_awaited(const struct relay *relay);

struct relay {
	struct backend_pool *pool;
	relay_done_fn done;
	void *arg;
	enum relay_state state;
	struct conn *conn;
	struct event *timer;
	size_t backend;		/* index in pool->servers being used or tried */
	struct smtp_reply reply;
	struct smtp_caps caps;
	bool probe;		/* a capability probe, no session */
	bool xclient_done;	/* XCLIENT accepted: EHLO again, identity known */
	bool identity_sent;
	bool in_tx;		/* the backend has a MAIL transaction open */
	bool login_sent;	/* XCLIENT gave the backend the client's login */
	bool authenticated;	/* the backend answered 235 to a relayed AUTH */
	bool pending_auth;	/* pending is an AUTH line, not MAIL */
	/*
	 * TLS to the backend ([backend] tls): tls is the connection's state
	 * once STARTTLS was accepted (the conn's transport owns it), tls_on
	 * once the handshake is done. tls_plain: with "may", this backend's
	 * handshake failed, so the connection made again goes without.
	 * tls_failed: with "encrypt", a backend was given up for want of TLS
	 * (the client then hears 4.7.5, not 4.4.1).
	 */
	struct tls_conn *tls;
	bool tls_on, tls_plain, tls_failed;
	char tls_version[16], tls_cipher[64];
	/*
	 * Reuse across sessions: relay_free() parks an idle connection on
	 * the pool's list, the next session's relay_mail() adopts it.
	 */
	struct backend_park_link park;
	time_t opened;		/* CLOCK_MONOTONIC second of the connect */
	unsigned long uses;	/* sessions served by this connection */
	bool reused;		/* adopted and not yet answered: a failure retries fresh */
	bool carried;		/* adopted with an earlier client's XCLIENT identity */
	bool preparing;		/* identity on its way before MAIL, nobody waits */
	char *pending;		/* MAIL line waiting for the handshake */
	char *queued;		/* RCPT line waiting for a keepalive NOOP */
	bool queued_data;	/* relay_data() waiting for a keepalive NOOP */
	bool queued_mail;	/* a MAIL (pending) waiting for one: a filter changed the envelope */
	/*
	 * The backend that refused a message as it streamed, whose
	 * connection was then closed: its reply is the transaction's.
	 */
	const char *closed_server;
	char *client_addr;
	unsigned client_port;
	char *client_helo;
	bool client_esmtp;
	char *client_name;	   /* confirmed, or NULL */
	char *client_reverse_name; /* the PTR name, or NULL */
	bool client_name_tempfail;
	bool identity_stale;	   /* the client changed since XCLIENT told it */
	char *client_login;

	/* Message streaming. */
	const char *prefix;
	size_t prefix_len;
	size_t prefix_off;
	struct spool *spool;
	unsigned long long spool_off;
	struct smtp_data_encoder enc;
};

static void relay_try(struct relay *relay);

/*
 * relay_awaited - whether the session waits for an answer from the
 * connection: not when it is idle between operations, or only keeping
 * the backend awake with nothing queued behind the NOOP
 */
static bool relay_awaited(const struct relay *relay)
{
	if (relay->state == RELAY_IDLE || relay->state == RELAY_AUTH_CONT)
		return false;
	if (relay->state == RELAY_NOOP)
		return relay->queued || relay->queued_data || relay->queued_mail;
	return true;
}
static void relay_send(struct relay *relay, enum relay_state state,
		       unsigned timeout, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void relay_read_cb(struct conn *c, void *arg);
static void relay_write_cb(struct conn *c, void *arg);
static void relay_event_cb(struct conn *c, enum conn_event what, void *arg);
static void relay_timer_cb(evutil_socket_t fd, short events, void *arg);

/* relay_new - a closed relay for one session */
struct relay *relay_new(struct backend_pool *pool, relay_done_fn done, void *arg)
{
	struct relay *relay = calloc(1, sizeof(*relay));

	if (!relay)
		return NULL;
	relay->pool = pool;
	relay->done = done;
	relay->arg = arg;
	relay->timer = evtimer_new(pool->base, relay_timer_cb, relay);
	if (!relay->timer) {
		free(relay);
		return NULL;
	}
	return relay;
}

/* relay_arm - (re)start the timer of the current wait */
static void relay_arm(struct relay *relay, unsigned seconds)
{
	struct timeval tv = { seconds, 0 };

	evtimer_add(relay->timer, &tv);
}

/* relay_close - drop the connection, keep the relay */
static void relay_close(struct relay *relay)
{
	conn_free(relay->conn);
	relay->conn = NULL;
	evtimer_del(relay->timer);
	smtp_reply_reset(&relay->reply);
	relay->state = RELAY_CLOSED;
	relay->in_tx = false;
	relay->xclient_done = false;
	relay->identity_sent = false;
	relay->login_sent = false;
	relay->authenticated = false;
	relay->spool = NULL;
	relay->tls = NULL; /* freed with the conn, its transport */
	relay->tls_on = false;
	relay->tls_version[0] = relay->tls_cipher[0] = '\0';
}

/* relay_forget_pending - drop the line waiting for the handshake, wiped (AUTH's holds credentials) */
static void relay_forget_pending(struct relay *relay)
{
	if (relay->pending) {
		explicit_bzero(relay->pending, strlen(relay->pending));
		free(relay->pending);
		relay->pending = NULL;
	}
	relay->pending_auth = false;
}

/* relay_destroy - release everything */
static void relay_destroy(struct relay *relay)
{
	relay_close(relay);
	event_free(relay->timer);
	relay_forget_pending(relay);
	free(relay->queued);
	free(relay->client_addr);
	free(relay->client_helo);
	free(relay->client_name);
	free(relay->client_reverse_name);
	free(relay->client_login);
	free(relay);
}

/* relay_now - seconds on the monotonic clock */
static time_t relay_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* relay_quit - detach from the session and close politely */
static void relay_quit(struct relay *relay)
{
	relay->done = NULL;
	relay->reused = false;
	relay->state = RELAY_QUIT;
	relay_forget_pending(relay);
	smtp_reply_reset(&relay->reply);
	evbuffer_add(conn_output(relay->conn), "QUIT\r\n", 6);
	relay_arm(relay, RELAY_QUIT_TIMEOUT);
}

/* relay_of - the relay a parked list link is in */
static struct relay *relay_of(struct backend_park_link *link)
{
	return link ? (struct relay *)((char *)link - offsetof(struct relay, park)) : NULL;
}

/* relay_unpark - take a parked relay off the pool's list */
static void relay_unpark(struct relay *relay)
{
	backend_unpark(relay->pool, &relay->park);
}

/*
 * relay_reusable - whether the connection may serve another session:
 * reuse is on, the worker is not closing down, the connection is idle
 * and younger than reuse_time_limit. A connection that speaks for its
 * client by XCLIENT must be able to take the next client's XCLIENT: its
 * last EHLO offered XCLIENT (Postfix stops offering it when the address
 * XCLIENT gave is not in smtpd_authorized_xclient_hosts) and the backend
 * has not refused a second XCLIENT before.
 */
static bool relay_reusable(const struct relay *relay)
{
	const struct backend_pool *pool = relay->pool;

	/* A login, given by XCLIENT or by AUTH, is one client's only. */
	return pool->conf->backend_reuse > 0 && !pool->closing &&
	       relay->state == RELAY_IDLE && !relay->login_sent && !relay->authenticated &&
	       !(relay->xclient_done && (!relay->caps.xclient || pool->xclient_reuse_refused)) &&
	       relay_now() - relay->opened < (time_t)pool->conf->backend_reuse_time_limit;
}

/*
 * relay_park - keep an idle connection (no transaction open) for the next
 * session, for reuse_idle_time at most; the newest is taken first, so the
 * list's tail ages out when the load drops
 */
static void relay_park(struct relay *relay)
{
	struct backend_pool *pool = relay->pool;

	if (pool->nparked >= pool->conf->backend_reuse || !relay_reusable(relay)) {
		relay_quit(relay);
		return;
	}
	relay->done = NULL;
	relay->arg = NULL;
	relay->state = RELAY_PARKED;
	smtp_reply_reset(&relay->reply);
	backend_park(pool, &relay->park);
	relay_arm(relay, pool->conf->backend_reuse_idle);
}

/* relay_free - park or close the connection, release the relay */
void relay_free(struct relay *relay)
{
	if (!relay)
		return;
	relay->done = NULL;
	relay->arg = NULL;
	if (relay->preparing) {
		/* The handshake goes on; relay_start() parks the connection. */
		return;
	}
	if (relay_reusable(relay)) {
		/* A transaction the client left open must not reach the next one. */
		if (relay->in_tx)
			relay_send(relay, RELAY_PARK_RSET,
				   relay->pool->conf->backend_timeout_command, "RSET");
		else
			relay_park(relay);
		return;
	}
	/*
	 * An idle connection, or one with only MAIL/RCPT given, ends with
	 * QUIT so the backend logs a clean end; in the middle of the message
	 * it is cut, so the backend never takes a half-sent message.
	 */
	if (relay->state == RELAY_IDLE || relay->state == RELAY_COMMAND ||
	    relay->state == RELAY_NOOP || relay->state == RELAY_AUTH_CONT) {
		relay_quit(relay);
		return;
	}
	relay_destroy(relay);
}

/*
 * relay_drop_parked - close every parked connection at once (the worker
 * is closing down): QUIT goes straight to the socket, since the loop may
 * not turn again
 */
void relay_drop_parked(struct backend_pool *pool)
{
	while (pool->parked) {
		struct relay *relay = relay_of(pool->parked);

		relay_unpark(relay);
		evbuffer_add(conn_output(relay->conn), "QUIT\r\n", 6);
		conn_flush_now(relay->conn);
		if (conn_errno(relay->conn))
			log_debug("backend %s: QUIT: %s", relay_server(relay),
				  strerror(conn_errno(relay->conn)));
		relay_destroy(relay);
	}
}

/* relay_send - write one command line */
static void relay_send(struct relay *relay, enum relay_state state,
		       unsigned timeout, const char *fmt, ...)
{
	struct evbuffer *out = conn_output(relay->conn);
	va_list ap;

	/* The previous reply was used by now; the next one starts empty. */
	smtp_reply_reset(&relay->reply);
	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\r\n", 2);
	relay->state = state;
	relay_arm(relay, timeout);
}

/* relay_made_up - a reply of our own, for a failed backend */
static void relay_made_up(struct smtp_reply *r, const char *line)
{
	smtp_reply_reset(r);
	smtp_reply_feed(r, line, strlen(line));
}

/* relay_finish - end the current operation with reply */
static void relay_finish(struct relay *relay, const struct smtp_reply *reply,
			 bool backend)
{
	relay_done_fn done = relay->done;

	if (done)
		done(relay->arg, reply, backend);
}

/*
 * relay_drop_prepared - a connection prepared ahead of MAIL failed before
 * MAIL came: nobody waits for an answer, so it just closes (MAIL opens
 * another one), and goes away with its session if that has ended
 */
static bool relay_drop_prepared(struct relay *relay, const char *why)
{
	if (!relay->preparing)
		return false;
	log_info("backend %s: reused connection failed before MAIL (%s)",
		 relay->pool->servers[relay->backend].text, why);
	relay->preparing = false;
	if (!relay->done) {
		relay_destroy(relay);
		return true;
	}
	relay_close(relay);
	relay->reused = false;
	relay->carried = false;
	relay->backend = 0;
	return true;
}

/*
 * relay_fail - the backend failed during an operation: close, and end the
 * operation with a 451 (the session's transaction is lost at the backend)
 */
static void relay_fail(struct relay *relay, const char *line, const char *why)
{
	struct smtp_reply r = { 0 };

	if (relay_drop_prepared(relay, why))
		return;
	log_warning("backend %s failed in %s: %s",
		    relay->pool->servers[relay->backend].text,
		    relay_state_names[relay->state], why);
	if (relay->state == RELAY_PARKED)
		relay_unpark(relay);
	if (relay_detached(relay->state) || relay->probe) {
		relay_destroy(relay);
		return;
	}
	if (!relay_awaited(relay)) {
		/* Nobody waits: the next operation finds the relay closed. */
		relay_close(relay);
		return;
	}
	relay_close(relay);
	relay_made_up(&r, line);
	relay_finish(relay, &r, false);
	smtp_reply_reset(&r);
}

/* relay_next_backend - the handshake failed: try the next backend */
static void relay_next_backend(struct relay *relay, const char *why)
{
	if (relay_drop_prepared(relay, why))
		return;
	log_warning("backend %s: %s", relay->pool->servers[relay->backend].text,
		    why);
	relay_close(relay);
	relay->backend++;
	relay->tls_plain = false;
	if (relay->backend < relay->pool->nservers) {
		relay_try(relay);
		return;
	}
	relay->backend = 0;
	relay_forget_pending(relay);
	bool tls = relay->tls_failed;
	relay->tls_failed = false;
	if (relay->probe) {
		log_warning("backend capability probe failed: no backend reachable");
		backend_probe_done(relay->pool);
		relay_destroy(relay);
		return;
	}
	struct smtp_reply r = { 0 };
	relay_made_up(&r, tls ? REPLY_BACKEND_NO_TLS
			      : REPLY_BACKEND_UNAVAILABLE);
	relay_finish(relay, &r, false);
	smtp_reply_reset(&r);
}

/*
 * relay_restart - an adopted connection failed before its first reply
 * (the backend closed it while it was parked, or said 421): nothing of
 * this session reached the backend, so start over on a new connection
 */
static void relay_restart(struct relay *relay, const char *why)
{
	if (relay_drop_prepared(relay, why))
		return;
	log_info("backend %s: reused connection failed (%s), opening a new one",
		 relay->pool->servers[relay->backend].text, why);
	relay_close(relay);
	relay->reused = false;
	relay->carried = false;
	relay->backend = 0;
	relay_try(relay);
}

/* relay_try - connect to relay->backend */
static void relay_try(struct relay *relay)
{
	const struct backend_server *b = &relay->pool->servers[relay->backend];

	relay->conn = conn_new(relay->pool->base, -1);
	if (!relay->conn) {
		relay_next_backend(relay, "out of memory");
		return;
	}
	conn_setcb(relay->conn, relay_read_cb, relay_write_cb, relay_event_cb, relay);
	/* Refill the message stream when a quarter of the high mark is left. */
	conn_write_low(relay->conn, RELAY_HIGH_WATER / 4);
	relay->state = RELAY_CONNECTING;
	relay_arm(relay, relay->pool->conf->backend_timeout_connect);
	if (conn_connect(relay->conn, (struct sockaddr *)&b->addr, b->addrlen) < 0) {
		char why[128];
		snprintf(why, sizeof(why), "connect failed: %s",
			 strerror(conn_errno(relay->conn)));
		relay_next_backend(relay, why);
	}
}

/*
 * relay_attr - append " KEY=xtext(value)" when the backend takes KEY; a
 * value is never cut (a cut HELO or address would be a lie told in the
 * client's name)
 */
static void relay_attr(struct evbuffer *out, const char *attrs,
		       const char *key, const char *value)
{
	char text[512];
	size_t klen = strlen(key);

	/* The backend lists the attributes it takes (Postfix does). */
	for (const char *p = attrs; (p = strstr(p, key)); p += klen) {
		if ((p == attrs || p[-1] == ' ') && (p[klen] == ' ' || p[klen] == 0)) {
			size_t need = smtp_xtext_encode(value, text, sizeof(text));
			char *big = need < sizeof(text) ? NULL : malloc(need + 1);
			const char *v = text;
			if (big) {
				smtp_xtext_encode(value, big, need + 1);
				v = big;
			} else if (need >= sizeof(text)) {
				/* Out of memory: unknown, never half (nor the last client's). */
				v = "[UNAVAILABLE]";
			}
			evbuffer_add_printf(out, " %s=%s", key, v);
			free(big);
			return;
		}
	}
}

/* relay_identity - XCLIENT or XFORWARD attributes of the client */
static void relay_identity(struct relay *relay, const char *verb,
			   const char *attrs, enum relay_state state)
{
	struct evbuffer *out = conn_output(relay->conn);
	char addr[80], port[16];

	/* Postfix wants IPv6 addresses tagged (XCLIENT_README). */
	snprintf(addr, sizeof(addr), "%s%s",
		 strchr(relay->client_addr, ':') ? "IPV6:" : "",
		 relay->client_addr);
	snprintf(port, sizeof(port), "%u", relay->client_port);
	evbuffer_add_printf(out, "%s", verb);
	/*
	 * The session's forward-confirmed name; REVERSE_NAME is what PTR
	 * said, confirmed or not (Postfix's reverse_client_name).
	 */
	const char *unknown = relay->client_name_tempfail ? "[TEMPUNAVAIL]" : "[UNAVAILABLE]";
	relay_attr(out, attrs, "NAME", relay->client_name ? relay->client_name : unknown);
	relay_attr(out, attrs, "REVERSE_NAME",
		   relay->client_reverse_name ? relay->client_reverse_name : unknown);
	relay_attr(out, attrs, "ADDR", addr);
	relay_attr(out, attrs, "PORT", port);
	relay_attr(out, attrs, "PROTO", relay->client_esmtp ? "ESMTP" : "SMTP");
	relay_attr(out, attrs, "HELO",
		   relay->client_helo ? relay->client_helo : "[UNAVAILABLE]");
	if (state == RELAY_XCLIENT && relay->client_login)
		relay_attr(out, attrs, "LOGIN", relay->client_login);
	if (state == RELAY_XFORWARD)
		relay_attr(out, attrs, "SOURCE", "REMOTE");
	if (state == RELAY_XCLIENT)
		relay->identity_stale = false;
	relay_send(relay, state, relay->pool->conf->backend_timeout_command, "%s", "");
}

/* relay_wants - whether the configured identity mode allows this way */
static bool relay_wants(const struct relay *relay, int mode)
{
	int configured = relay->pool->conf->client_identity;

	return configured == CONF_IDENTITY_AUTO || configured == mode;
}

static void relay_start(struct relay *relay);

/* relay_send_mail - XFORWARD (once per transaction) or RSET, then MAIL (or AUTH) */
static void relay_send_mail(struct relay *relay)
{
	unsigned t = relay->pool->conf->backend_timeout_command;

	if (relay->in_tx) {
		relay_send(relay, RELAY_RSET, t, "RSET");
		return;
	}
	if (relay->xclient_done && relay->identity_stale) {
		/* A trusted peer's XCLIENT or XFORWARD named another client. */
		relay->xclient_done = false;
		relay->identity_sent = false;
		relay_start(relay);
		return;
	}
	if (relay->pending_auth) {
		/* pending stays until answered, as MAIL's does (relay_restart). */
		relay_send(relay, RELAY_AUTH, t, "%s", relay->pending);
		return;
	}
	/* Postfix forgets XFORWARD attributes at the end of each transaction. */
	if (!relay->xclient_done && relay->caps.xforward &&
	    relay_wants(relay, CONF_IDENTITY_XFORWARD) &&
	    relay->state != RELAY_XFORWARD) {
		relay_identity(relay, "XFORWARD", relay->caps.xforward_attrs,
			       RELAY_XFORWARD);
		return;
	}
	relay->in_tx = true;
	/* pending stays: a reused connection may need it again (relay_restart). */
	relay_send(relay, RELAY_COMMAND, t, "%s", relay->pending);
}

/*
 * relay_login_due - the client logged in (AUTH with Dovecot) after the
 * backend heard its XCLIENT: it must hear the login by another XCLIENT
 * before the client's mail
 */
static bool relay_login_due(const struct relay *relay)
{
	return relay->client_login && !relay->login_sent && !relay->authenticated &&
	       !relay->in_tx && relay->caps.xclient_attrs[0] &&
	       strstr(relay->caps.xclient_attrs, "LOGIN");
}

/*
 * relay_start - the connection is ready: the client's identity, then MAIL;
 * prepared ahead of MAIL (relay_prepare), it waits for MAIL instead, or
 * is parked when its session ended meanwhile
 */
static void relay_start(struct relay *relay)
{
	if ((!relay->xclient_done || relay_login_due(relay)) && relay->caps.xclient &&
	    relay_wants(relay, CONF_IDENTITY_XCLIENT)) {
		relay_identity(relay, "XCLIENT", relay->caps.xclient_attrs,
			       RELAY_XCLIENT);
		return;
	}
	if (!relay->pending) {
		relay->preparing = false;
		relay->state = RELAY_IDLE;
		if (!relay->done)
			relay_park(relay);
		return;
	}
	relay_send_mail(relay);
}

/*
 * relay_tls_refused - this backend cannot give the TLS tls = encrypt
 * requires: never a clear-text send; the next backend is tried, and the
 * client hears 4.7.5 when none can
 */
static void relay_ehlo_use(struct relay *relay);

static void relay_tls_refused(struct relay *relay, const char *why)
{
	char line[400];

	snprintf(line, sizeof(line), "TLS: %s", why);
	relay->tls_failed = true;
	relay_next_backend(relay, line);
}

/*
 * relay_tls_begin - the backend said 220 to STARTTLS: the handshake from
 * the loop (conn_start_tls() drops whatever the backend sent after the
 * 220 in clear text, as the client side does); CONN_READY or CONN_ERROR
 * in relay_event_cb ends it
 */
static void relay_tls_begin(struct relay *relay)
{
	struct tls_conn *t = tls_client_conn_new(relay->pool->conf->backend_tls_client,
						 conn_fd(relay->conn));

	if (!t) {
		relay_next_backend(relay, "TLS: out of memory");
		return;
	}
	relay->tls = t;
	relay->state = RELAY_TLS;
	smtp_reply_reset(&relay->reply);
	relay_arm(relay, relay->pool->conf->backend_timeout_command);
	conn_start_tls(relay->conn, &tls_transport, t);
}

/*
 * relay_tls_ready - the handshake is done: check the fingerprints (tls =
 * encrypt), then EHLO again: RFC 3207 4.2, nothing said before counts
 */
static void relay_tls_ready(struct relay *relay)
{
	struct tls_details d;
	const char *why = NULL;

	if (relay->pool->conf->backend_tls == CONF_BACKEND_TLS_ENCRYPT)
		why = tls_client_check(relay->pool->conf->backend_tls_client, relay->tls);
	if (why) {
		relay_tls_refused(relay, why);
		return;
	}
	tls_conn_details(relay->tls, &d);
	snprintf(relay->tls_version, sizeof(relay->tls_version), "%s", d.version);
	snprintf(relay->tls_cipher, sizeof(relay->tls_cipher), "%s", d.cipher);
	log_info("backend %s: %s with cipher %s (%d/%d bits)", relay_server(relay), d.version,
		 d.cipher, d.bits, d.alg_bits);
	relay->tls_on = true;
	relay_send(relay, RELAY_EHLO, relay->pool->conf->backend_timeout_command, "EHLO %s",
		   relay->pool->conf->helo_name);
}

/*
 * relay_tls_failed - the handshake failed: with encrypt the backend is
 * given up; with may the connection is made again, without TLS this time,
 * as Postfix's smtp client falls back for an opportunistic level
 */
static void relay_tls_failed(struct relay *relay, const char *reason)
{
	char why[300];

	snprintf(why, sizeof(why), "handshake failed: %s", reason);
	if (relay->pool->conf->backend_tls == CONF_BACKEND_TLS_ENCRYPT) {
		relay_tls_refused(relay, why);
		return;
	}
	log_warning("backend %s: TLS %s: trying again without TLS", relay_server(relay), why);
	relay_close(relay);
	relay->tls_plain = true;
	relay_try(relay);
}

/* relay_ehlo_done - the backend answered EHLO */
static void relay_ehlo_done(struct relay *relay)
{
	int mode = relay->pool->conf->backend_tls;

	smtp_caps_parse(&relay->reply, &relay->caps);
	if (mode != CONF_BACKEND_TLS_NONE && !relay->tls_on && !relay->tls_plain) {
		if (relay->caps.starttls) {
			/* What it offers under TLS is what counts: learnt after. */
			relay_send(relay, RELAY_STARTTLS, relay->pool->conf->backend_timeout_command,
				   "STARTTLS");
			return;
		}
		if (mode == CONF_BACKEND_TLS_ENCRYPT) {
			relay_tls_refused(relay, "does not offer STARTTLS (tls = encrypt)");
			return;
		}
	}
	relay_ehlo_use(relay);
}

/*
 * relay_ehlo_use - the EHLO that counts is in: learn from it, hand a
 * probe's connection on, or go on to the client's identity
 */
static void relay_ehlo_use(struct relay *relay)
{
	/*
	 * Only an EHLO in our own name says what the backend offers: after
	 * XCLIENT it answers as it would the client, and one client's
	 * restrictions must not shape everyone's offer.
	 */
	if (!relay->xclient_done)
		backend_learn_caps(relay->pool, &relay->caps);
	if (relay->probe) {
		/* The probe's connection can serve the first session. */
		backend_probe_done(relay->pool);
		relay->probe = false;
		relay->uses = 0; /* no session used it yet */
		relay->state = RELAY_IDLE;
		relay_free(relay);
		return;
	}
	relay_start(relay);
}

/*
 * relay_idle - between operations. While the client sends a long message
 * the backend hears nothing, and Postfix gives up after smtpd_timeout
 * (300 s): a NOOP every keepalive seconds keeps its transaction alive.
 */
static void relay_idle(struct relay *relay)
{
	relay->state = RELAY_IDLE;
	if (relay->in_tx)
		relay_arm(relay, relay->pool->conf->backend_keepalive);
}

/*
 * relay_violation - the backend said something nobody asked for, or a
 * reply that cannot answer what was asked: it is out of step with us, so
 * nothing it says later can be trusted to answer our commands. Opening,
 * the next backend is tried; in a transaction the client gets 451 4.4.2;
 * the connection is closed either way and never parked.
 */
static void relay_violation(struct relay *relay, const char *why)
{
	if (relay_opening(relay->state)) {
		relay_next_backend(relay, why);
		return;
	}
	relay_fail(relay, "451 4.4.2 Protocol error from the backend mail server, try again later",
		   why);
}

/* relay_reply_opening - a reply while the connection opens */
static void relay_reply_opening(struct relay *relay, struct smtp_reply *r)
{
	unsigned t = relay->pool->conf->backend_timeout_command;

	switch (relay->state) {
	case RELAY_GREETING:
		if (r->code != 220) {
			relay_next_backend(relay, "refused the connection");
			return;
		}
		relay_send(relay, RELAY_EHLO, t, "EHLO %s", relay->pool->conf->helo_name);
		return;
	case RELAY_EHLO:
		if (r->code != 250) {
			relay_next_backend(relay, "refused EHLO");
			return;
		}
		relay_ehlo_done(relay);
		return;
	case RELAY_STARTTLS:
		if (r->code == 220) {
			relay_tls_begin(relay);
			return;
		}
		if (relay->pool->conf->backend_tls == CONF_BACKEND_TLS_ENCRYPT) {
			relay_tls_refused(relay, "refused STARTTLS");
			return;
		}
		log_warning("backend %s refused STARTTLS: %d %s: going on without TLS",
			    relay_server(relay), r->code, r->nlines ? r->lines[0] : "");
		/* The caps are those of the EHLO before. */
		relay->tls_plain = true;
		relay_ehlo_use(relay);
		return;
	case RELAY_XCLIENT:
		if (r->code / 100 == 2) {
			/*
			 * XCLIENT starts a new session: Postfix greets again with
			 * 220 (XCLIENT_README); some servers say 250. EHLO anyway.
			 */
			relay->xclient_done = true;
			relay->identity_sent = true;
			relay->carried = false;
			relay->login_sent = relay->client_login != NULL;
			/* This EHLO is the client's: it sets the HELO the backend sees. */
			relay_send(relay, RELAY_EHLO, t, "EHLO %s",
				   relay->client_helo ? relay->client_helo
						      : relay->pool->conf->helo_name);
			return;
		}
		log_warning("backend %s refused XCLIENT: %d %s",
			    relay->pool->servers[relay->backend].text, r->code,
			    r->nlines ? r->lines[0] : "");
		if (relay->carried) {
			/*
			 * It still speaks for the earlier client: never use it.
			 * Postfix checks smtpd_authorized_xclient_hosts again
			 * against the address the last XCLIENT gave, so this
			 * backend will refuse it again: stop parking such
			 * connections.
			 */
			if (!relay->pool->xclient_reuse_refused)
				log_warning("backend %s refuses XCLIENT on a reused connection: "
					    "connections that used XCLIENT are no longer reused "
					    "(authorize every address for XCLIENT on the listener "
					    "only portcullis reaches to allow it)",
					    relay->pool->servers[relay->backend].text);
			relay->pool->xclient_reuse_refused = true;
			relay_restart(relay, "XCLIENT refused");
			return;
		}
		relay->xclient_done = false;
		relay->caps.xclient = false;
		relay_start(relay);
		return;
	case RELAY_XFORWARD:
		if (r->code == 250)
			relay->identity_sent = true;
		else
			log_warning("backend %s refused XFORWARD: %d %s",
				    relay->pool->servers[relay->backend].text,
				    r->code, r->nlines ? r->lines[0] : "");
		relay->in_tx = true;
		relay_send(relay, RELAY_COMMAND, t, "%s", relay->pending);
		return;
	default:
		relay_violation(relay, "reply in an unexpected state");
		return;
	}
}

/*
 * relay_reply_body - a reply while the message streams: the backend
 * refused it before its end (Postfix does when a limit is passed). The
 * refusal is the client's answer; the connection is closed, since the
 * backend's idea of where the dialogue stands can no longer be known.
 * Anything but a refusal cannot come before the end of the data.
 */
static void relay_reply_body(struct relay *relay)
{
	struct smtp_reply r = relay->reply;

	if (r.code / 100 != 4 && r.code / 100 != 5) {
		relay_violation(relay, "reply before the end of the message");
		return;
	}
	log_info("backend %s refused the message before its end: %d %s",
		 relay->pool->servers[relay->backend].text, r.code,
		 r.nlines ? r.lines[0] : "");
	/* The reply outlives the connection's buffers. */
	memset(&relay->reply, 0, sizeof(relay->reply));
	relay_close(relay);
	relay->closed_server = relay->pool->servers[relay->backend].text;
	relay_finish(relay, &r, true);
	smtp_reply_reset(&r);
}

/* relay_reply_session - a reply to one of the session's operations */
static void relay_reply_session(struct relay *relay, struct smtp_reply *r)
{
	unsigned t = relay->pool->conf->backend_timeout_command;

	switch (relay->state) {
	case RELAY_RSET:
		relay->in_tx = false;
		relay_send_mail(relay);
		return;
	case RELAY_COMMAND:
	case RELAY_DATA:
	case RELAY_DOT:
		if (r->code == 421) {
			/* The backend is closing: no later command would work. */
			char line[600];
			snprintf(line, sizeof(line),
				 "451 4.4.2 Backend mail server closed the session: %.500s",
				 r->nlines ? r->lines[0] : "");
			relay_fail(relay, line, "421 reply");
			return;
		}
		if (relay->state == RELAY_DATA) {
			if (r->code == 354) {
				relay->state = RELAY_BODY;
				evtimer_del(relay->timer);
				smtp_reply_reset(r);
				relay_write_cb(relay->conn, relay);
				return;
			}
			/*
			 * DATA is refused (4xx, 5xx) or it is not: a 2xx here would
			 * accept a message that was never sent.
			 */
			if (r->code / 100 != 4 && r->code / 100 != 5) {
				relay_violation(relay, "DATA answered without 354");
				return;
			}
		}
		if (relay->state == RELAY_DOT)
			relay->in_tx = false;
		relay_idle(relay);
		relay_finish(relay, r, true);
		return;
	case RELAY_BODY:
		relay_reply_body(relay);
		return;
	case RELAY_AUTH:
		/* The AUTH line holds the client's credentials: gone once answered. */
		relay_forget_pending(relay);
		if (r->code == 421) {
			relay_fail(relay, "454 4.7.0 Temporary authentication failure",
				   "421 reply to AUTH");
			return;
		}
		if (r->code == 334) {
			/* The client's turn: its own timeout runs, not ours. */
			relay->state = RELAY_AUTH_CONT;
		} else {
			relay->authenticated = r->code == 235;
			relay_idle(relay);
		}
		relay_finish(relay, r, true);
		return;
	case RELAY_NOOP:
		if (r->code == 421 || r->code / 100 != 2) {
			relay_fail(relay, "451 4.4.2 Backend mail server closed the session, try again later",
				   "keepalive NOOP refused");
			return;
		}
		relay_idle(relay);
		if (relay->queued_data) {
			relay->queued_data = false;
			relay_send(relay, RELAY_DATA, relay->pool->conf->backend_timeout_data_init,
				   "DATA");
		} else if (relay->queued) {
			relay_send(relay, RELAY_COMMAND, t, "%s", relay->queued);
			free(relay->queued);
			relay->queued = NULL;
		} else if (relay->queued_mail) {
			relay->queued_mail = false;
			relay_send_mail(relay);
		}
		return;
	default:
		/* Idle: a 421 before the backend's timeout, or a stray reply. */
		log_info("backend %s: reply while idle, closing: %d %s",
			 relay->pool->servers[relay->backend].text, r->code,
			 r->nlines ? r->lines[0] : "");
		relay_close(relay);
		return;
	}
}

/* relay_reply_detached - a reply on a connection without a session */
static void relay_reply_detached(struct relay *relay, struct smtp_reply *r)
{
	switch (relay->state) {
	case RELAY_PARK_RSET:
		if (r->code == 250) {
			relay->in_tx = false;
			relay->state = RELAY_IDLE;
			relay_park(relay);
		} else {
			relay_quit(relay);
		}
		return;
	case RELAY_PARKED:
		/* A 421 before the backend's idle timeout, usually. */
		log_debug("backend %s closed a parked connection: %d %s",
			  relay->pool->servers[relay->backend].text, r->code,
			  r->nlines ? r->lines[0] : "");
		relay_unpark(relay);
		relay_destroy(relay);
		return;
	default: /* RELAY_QUIT */
		relay_destroy(relay);
		return;
	}
}

/* relay_reply - one complete reply arrived; the phase's handler takes it */
static void relay_reply(struct relay *relay)
{
	struct smtp_reply *r = &relay->reply;

	evtimer_del(relay->timer);
	if (relay->reused) {
		if (r->code == 421) {
			relay_restart(relay, "421 reply");
			return;
		}
		relay->reused = false;
	}
	if (relay_opening(relay->state))
		relay_reply_opening(relay, r);
	else if (relay_detached(relay->state))
		relay_reply_detached(relay, r);
	else
		relay_reply_session(relay, r);
}

/*
 * relay_read_cb - reply lines from the backend. Commands go one at a
 * time, so exactly one reply answers each: bytes that follow a complete
 * reply in the same read were sent before the backend saw our next
 * command, and answer nothing (a second reply to MAIL would otherwise
 * answer the RCPT after it, and so on to a 250 for a message never sent).
 */
static void relay_read_cb(struct conn *c, void *arg)
{
	struct relay *relay = arg;
	struct evbuffer *in = conn_input(c);
	char *line;
	size_t len;

	while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF))) {
		int rc = smtp_reply_feed(&relay->reply, line, len);
		free(line);
		if (rc < 0) {
			relay_violation(relay, "malformed reply");
			return;
		}
		if (rc == 1) {
			if (evbuffer_get_length(in) > 0 && !relay_detached(relay->state)) {
				relay_violation(relay, "more than one reply to a command");
				return;
			}
			relay_reply(relay);
			/* The callback may have freed or reused the relay. */
			return;
		}
	}
	if (evbuffer_get_length(in) > RELAY_MAX_INPUT)
		relay_violation(relay, "reply too long");
}

/* relay_fill - stream more of the message while the backend keeps up */
static void relay_fill(struct relay *relay)
{
	struct evbuffer *out = conn_output(relay->conn);
	/*
	 * One pair of buffers for the whole worker: they are used only
	 * within this call, on the loop's one thread, and a buffer per
	 * message would be freed and faulted in again for every message.
	 */
	static char *chunk, *encoded;

	if (!chunk) {
		chunk = malloc(RELAY_CHUNK);
		encoded = malloc(2 * RELAY_CHUNK + 8);
		if (!chunk || !encoded) {
			free(chunk);
			free(encoded);
			chunk = encoded = NULL;
			relay_fail(relay, REPLY_BACKEND_OOM,
				   "out of memory");
			return;
		}
	}
	while (evbuffer_get_length(out) < RELAY_HIGH_WATER) {
		size_t n;

		if (relay->prefix_off < relay->prefix_len) {
			size_t take = relay->prefix_len - relay->prefix_off;
			if (take > RELAY_CHUNK)
				take = RELAY_CHUNK;
			n = smtp_data_encode(&relay->enc, relay->prefix + relay->prefix_off,
					     take, encoded);
			relay->prefix_off += take;
			evbuffer_add(out, encoded, n);
			continue;
		}
		ssize_t got = spool_read(relay->spool, relay->spool_off,
					 chunk, RELAY_CHUNK);
		if (got < 0) {
			/* Our disk failed, not the backend: cut, never send half. */
			relay_fail(relay, "451 4.3.0 Local error reading the message, try again later",
				   strerror(errno));
			return;
		}
		if (got == 0) {
			n = smtp_data_encode_end(&relay->enc, encoded);
			evbuffer_add(out, encoded, n);
			relay->state = RELAY_DOT;
			relay_arm(relay, relay->pool->conf->backend_timeout_data_end);
			return;
		}
		relay->spool_off += (unsigned long long)got;
		n = smtp_data_encode(&relay->enc, chunk, (size_t)got,
				     encoded);
		evbuffer_add(out, encoded, n);
	}
	relay_arm(relay, relay->pool->conf->backend_timeout_data_block);
}

/* relay_write_cb - the output drained below the low-water mark */
static void relay_write_cb(struct conn *c, void *arg)
{
	struct relay *relay = arg;

	if (relay->state == RELAY_BODY)
		relay_fill(relay);
}

/* relay_event_cb - connected, closed by the backend, or a socket error */
static void relay_event_cb(struct conn *c, enum conn_event what, void *arg)
{
	struct relay *relay = arg;
	char why[128];

	if (what == CONN_CONNECTED) {
		int one = 1;
		relay->opened = relay_now();
		relay->uses = 1;
		/* Commands and the end of data go out at once: with Nagle the
		 * final ".\r\n" of a message waits for a delayed ACK (40 ms). */
		if (setsockopt(conn_fd(c), IPPROTO_TCP, TCP_NODELAY,
			       &one, sizeof(one)) < 0)
			log_debug("backend %s: TCP_NODELAY: %s", relay_server(relay), strerror(errno));
		relay->state = RELAY_GREETING;
		relay_arm(relay, relay->pool->conf->backend_timeout_greeting);
		return;
	}
	if (what == CONN_READY && relay->state == RELAY_TLS) {
		relay_tls_ready(relay);
		return;
	}
	if (relay->state == RELAY_TLS) {
		relay_tls_failed(relay, relay->tls && *tls_conn_error(relay->tls)
						? tls_conn_error(relay->tls)
						: what == CONN_EOF ? "connection closed"
								   : strerror(conn_errno(c)));
		return;
	}
	if (what == CONN_EOF)
		snprintf(why, sizeof(why), "connection closed");
	else
		snprintf(why, sizeof(why), "%s", strerror(conn_errno(c)));
	if (relay->state == RELAY_PARKED) {
		log_debug("backend %s closed a parked connection: %s",
			  relay->pool->servers[relay->backend].text, why);
		relay_unpark(relay);
		relay_destroy(relay);
		return;
	}
	if (relay->reused) {
		relay_restart(relay, why);
		return;
	}
	if (relay_opening(relay->state)) {
		relay_next_backend(relay, why);
	} else if (!relay_detached(relay->state) && !relay_awaited(relay)) {
		log_debug("backend %s closed an idle session",
			  relay->pool->servers[relay->backend].text);
		relay_close(relay);
	} else {
		relay_fail(relay, "451 4.4.2 Lost connection to the backend mail server, try again later",
			   why);
	}
}

/* relay_timer_cb - a wait ran out */
static void relay_timer_cb(evutil_socket_t fd, short events, void *arg)
{
	struct relay *relay = arg;

	if (relay->state == RELAY_TLS)
		relay_tls_failed(relay, "timed out");
	else if (relay_opening(relay->state))
		relay_next_backend(relay, "timed out");
	else if (relay->state == RELAY_IDLE)
		relay_send(relay, RELAY_NOOP, relay->pool->conf->backend_timeout_command,
			   "NOOP");
	else if (relay->state == RELAY_QUIT)
		relay_destroy(relay);
	else if (relay->state == RELAY_PARKED) {
		relay_unpark(relay);
		relay_quit(relay);
	} else
		relay_fail(relay, "451 4.4.2 Backend mail server timed out, try again later",
			   "timed out");
}

/* relay_same - whether two optional strings are equal */
static bool relay_same(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

/*
 * relay_set_client - remember who the client is; when it is not the one
 * an XCLIENT already told the backend (a trusted peer's XCLIENT or
 * XFORWARD changed it), the next MAIL tells it again
 */
static void relay_set_client(struct relay *relay, const struct relay_client *client)
{
	bool same = relay_same(relay->client_addr, client->addr) &&
		    relay->client_port == client->port &&
		    relay_same(relay->client_helo, client->helo) &&
		    relay->client_esmtp == client->esmtp &&
		    relay_same(relay->client_name, client->name) &&
		    relay_same(relay->client_reverse_name, client->reverse_name) &&
		    relay->client_name_tempfail == client->name_tempfail;

	if (!same)
		relay->identity_stale = true; /* XCLIENT clears it */
	free(relay->client_addr);
	free(relay->client_helo);
	free(relay->client_name);
	free(relay->client_reverse_name);
	relay->client_addr = strdup(client->addr);
	relay->client_helo = client->helo ? strdup(client->helo) : NULL;
	relay->client_port = client->port;
	relay->client_esmtp = client->esmtp;
	relay->client_name = client->name ? strdup(client->name) : NULL;
	relay->client_reverse_name = client->reverse_name ? strdup(client->reverse_name) : NULL;
	relay->client_name_tempfail = client->name_tempfail;
	free(relay->client_login);
	relay->client_login = client->login ? strdup(client->login) : NULL;
}

/*
 * relay_adopt - take over the newest parked connection, if any: its
 * socket, backend and capabilities; the identity of its earlier client
 * is replaced by XCLIENT before anything else is sent
 */
static bool relay_adopt(struct relay *relay)
{
	struct relay *p = relay_of(relay->pool->parked);

	if (!p)
		return false;
	/* relay_reusable() parked only connections that can take the XCLIENT. */
	relay_unpark(p);
	relay->conn = p->conn;
	p->conn = NULL;
	conn_setcb(relay->conn, relay_read_cb, relay_write_cb, relay_event_cb, relay);
	relay->backend = p->backend;
	relay->caps = p->caps;
	relay->opened = p->opened;
	relay->uses = p->uses + 1;
	relay->carried = p->xclient_done;
	relay->reused = true;
	relay->tls = p->tls;
	relay->tls_on = p->tls_on;
	memcpy(relay->tls_version, p->tls_version, sizeof(relay->tls_version));
	memcpy(relay->tls_cipher, p->tls_cipher, sizeof(relay->tls_cipher));
	p->tls = NULL;
	relay->xclient_done = false;
	relay->identity_sent = false;
	relay->in_tx = false;
	relay_destroy(p);
	return true;
}

/*
 * relay_prepare - the client said HELO or EHLO: when a parked connection
 * that takes XCLIENT waits, adopt it now and send the client's identity
 * (XCLIENT, then EHLO) while the client is on its way to MAIL, which then
 * costs one round trip to the backend instead of three. Nothing new is
 * opened here, so a session that never sends MAIL costs the backend no
 * connection; if the handshake fails, MAIL opens one as usual.
 */
void relay_prepare(struct relay *relay, const struct relay_client *client)
{
	const struct relay *p = relay_of(relay->pool->parked);

	if (relay->state != RELAY_CLOSED || !p || !p->caps.xclient ||
	    !relay_wants(relay, CONF_IDENTITY_XCLIENT))
		return;
	relay_forget_pending(relay);
	relay_set_client(relay, client);
	if (!relay_adopt(relay))
		return;
	relay->preparing = true;
	relay_start(relay);
}

/*
 * relay_open_for - open if needed, then send line: MAIL, or the AUTH
 * that starts a relayed exchange (auth)
 */
static void relay_open_for(struct relay *relay, const struct relay_client *client,
			   const char *line, bool auth)
{
	relay->closed_server = NULL;
	relay_forget_pending(relay);
	relay->pending = strdup(line);
	relay->pending_auth = auth;
	if (!relay->pending) {
		/* Without the line nothing would ever answer this MAIL. */
		struct smtp_reply r = { 0 };
		relay_made_up(&r, REPLY_BACKEND_OOM);
		relay_finish(relay, &r, false);
		smtp_reply_reset(&r);
		return;
	}
	/* Before the check below: a prepared XCLIENT may be stale now. */
	relay_set_client(relay, client);
	if (relay->preparing) {
		/*
		 * The identity of the client's first HELO/EHLO is on its way;
		 * relay_start() sends MAIL when the backend has taken it (after
		 * another XCLIENT if the client changed or logged in meanwhile).
		 */
		relay->preparing = false;
		return;
	}
	if (relay->state == RELAY_IDLE) {
		if (relay_login_due(relay)) {
			relay_start(relay);
			return;
		}
		relay_send_mail(relay);
		return;
	}
	if (relay->state == RELAY_NOOP && !auth) {
		/* A new MAIL in the transaction (RSET first), after the NOOP's reply. */
		relay->queued_mail = true;
		return;
	}
	if (relay->state != RELAY_CLOSED) {
		log_error("internal error: MAIL while the relay is in %s",
			  relay_state_names[relay->state]);
		relay_fail(relay, "451 4.3.0 Internal error, try again later",
			   "unexpected MAIL");
		return;
	}
	if (relay_adopt(relay)) {
		relay_start(relay);
		return;
	}
	relay->backend = 0;
	relay_try(relay);
}

/* relay_mail - open if needed, then relay MAIL */
void relay_mail(struct relay *relay, const struct relay_client *client,
		const char *line)
{
	relay_open_for(relay, client, line, false);
}

/* relay_auth - open if needed, then relay the client's AUTH line */
void relay_auth(struct relay *relay, const struct relay_client *client,
		const char *line)
{
	relay_open_for(relay, client, line, true);
}

/* relay_auth_continue - the client's next line of the exchange */
void relay_auth_continue(struct relay *relay, const char *line)
{
	if (relay->state != RELAY_AUTH_CONT) {
		/* The backend went away while the client typed. */
		struct smtp_reply r = { 0 };
		relay_made_up(&r, "454 4.7.0 Temporary authentication failure");
		relay_finish(relay, &r, false);
		smtp_reply_reset(&r);
		return;
	}
	relay_send(relay, RELAY_AUTH, relay->pool->conf->backend_timeout_command,
		   "%s", line);
}

/* relay_command - relay RCPT, RSET or NOOP */
void relay_command(struct relay *relay, const char *line)
{
	if (relay->state == RELAY_NOOP) {
		free(relay->queued);
		relay->queued = strdup(line);
		return;
	}
	if (relay->state != RELAY_IDLE) {
		struct smtp_reply r = { 0 };
		relay_made_up(&r, REPLY_BACKEND_NO_CONNECTION);
		relay_finish(relay, &r, false);
		smtp_reply_reset(&r);
		return;
	}
	relay_send(relay, RELAY_COMMAND, relay->pool->conf->backend_timeout_command,
		   "%s", line);
}

/* relay_data - DATA, then the message */
void relay_data(struct relay *relay, const char *prefix, struct spool *spool,
		unsigned long long skip)
{
	if (relay->state != RELAY_IDLE && relay->state != RELAY_NOOP) {
		struct smtp_reply r = { 0 };
		relay_made_up(&r, REPLY_BACKEND_NO_CONNECTION);
		relay_finish(relay, &r, false);
		smtp_reply_reset(&r);
		return;
	}
	relay->prefix = prefix;
	relay->prefix_len = prefix ? strlen(prefix) : 0;
	relay->prefix_off = 0;
	relay->spool = spool;
	relay->spool_off = skip;
	smtp_data_encoder_init(&relay->enc);
	if (relay->state == RELAY_NOOP) {
		relay->queued_data = true;
		return;
	}
	relay_send(relay, RELAY_DATA, relay->pool->conf->backend_timeout_data_init,
		   "DATA");
}

/* relay_cancel - the session no longer waits for the operation */
void relay_cancel(struct relay *relay)
{
	if (relay->state == RELAY_CLOSED || relay->preparing ||
	    relay_detached(relay->state) || !relay_awaited(relay))
		return;
	log_debug("backend %s: operation in %s cancelled by its session",
		  relay->pool->servers[relay->backend].text,
		  relay_state_names[relay->state]);
	relay_close(relay);
	free(relay->queued);
	relay->queued = NULL;
	relay->queued_data = false;
	relay->queued_mail = false;
	relay->prefix = NULL;
	relay->prefix_len = 0;
}

/* relay_is_open - whether a backend connection is established */
bool relay_is_open(const struct relay *relay)
{
	return relay->state == RELAY_IDLE || relay->state == RELAY_NOOP;
}

/* relay_reused - whether the connection served an earlier session */
bool relay_reused(const struct relay *relay)
{
	return relay->uses > 1;
}

/* relay_tls_version - the TLS to the backend ("TLSv1.3", its cipher in *cipher), or NULL */
const char *relay_tls_version(const struct relay *relay, const char **cipher)
{
	if (!relay->tls_on)
		return NULL;
	*cipher = relay->tls_cipher;
	return relay->tls_version;
}

/* relay_identity_sent - whether the backend knows the client's identity */
bool relay_identity_sent(const struct relay *relay)
{
	return relay->identity_sent;
}

/* relay_server - the backend in use */
const char *relay_server(const struct relay *relay)
{
	if (relay->state == RELAY_CLOSED)
		return relay->closed_server ? relay->closed_server : "";
	return relay->pool->servers[relay->backend].text;
}

/* relay_caps - the capabilities of the open connection */
const struct smtp_caps *relay_caps(const struct relay *relay)
{
	return &relay->caps;
}

/* relay_probe - learn the backend's capabilities */
void relay_probe(struct backend_pool *pool)
{
	struct relay *relay = relay_new(pool, NULL, NULL);

	if (!relay)
		return;
	relay->probe = true;
	relay_try(relay);
}
