/*
 * session.h - the server side of SMTP for one client
 *
 * A session owns the client connection, reads its commands (pipelined or
 * not) and answers them strictly in order, one at a time: a command that
 * needs the backend (MAIL, RCPT, the end of DATA) holds the following
 * ones until the backend replied. The transaction (struct session_tx)
 * lives from MAIL to the final reply; every transaction and every
 * connection without one ends in a decision record.
 *
 * Who the client is: the address the connection came from (or the one
 * a PROXY header named), its name, forward-confirmed by a reverse lookup
 * started with the session (client_name_lookup), and what a trusted
 * peer (the listener's trusted_xclient) says with XCLIENT (a new session
 * for that client, greeted again) or XFORWARD (the next transaction's
 * client). Filters, the relay, the Received: header and the records all
 * see that one client.
 * TLS: on a tls = starttls listener STARTTLS puts the conn's TLS
 * transport (tls.h) under the session, which then starts again from
 * nothing (RFC 3207 4.2); on an implicit one the handshake comes before
 * the greeting. A failed or late handshake ends in a connection record.
 * What the handshake negotiated goes into every record, the filters'
 * view and the Received: header.
 */
#ifndef PORTCULLIS_SESSION_H
#define PORTCULLIS_SESSION_H

#include <sys/socket.h>

#include <event2/event.h>

#include "conf.h"

struct backend_pool;
struct conn;
struct listener;
struct pipeline;
struct pool;
struct session;

/*
 * What the sessions of one worker share. The worker owns it and the
 * sessions; they report up only through closed().
 */
struct session_host {
	struct event_base *base;
	const struct conf *conf;
	struct pipeline *pipeline;	 /* the filter chain */
	struct backend_pool *backends;	 /* what relays connect to */
	struct session *sessions;	 /* list, linked through the sessions */
	unsigned nsessions;
	unsigned id_prefix;		 /* random, tells workers' session ids apart */
	unsigned long long id_counter;
	struct pool *names;		 /* the client name lookups' threads (made at the first) */
	/* a session ended: the client's numeric address and port */
	void (*closed)(void *arg, const char *addr, unsigned port);
	/*
	 * A failed AUTH from the numeric address addr, counted across the
	 * workers: done(data, count) follows with the address's failures
	 * within window seconds (0: unknown). Returns an id for
	 * auth_failed_cancel(), or 0 when nobody was asked. NULL: each
	 * session counts its own.
	 */
	unsigned long (*auth_failed)(void *arg, const char *addr, unsigned window,
				     void (*done)(void *data, unsigned count), void *data);
	void (*auth_failed_cancel)(void *arg, unsigned long id);
	void *arg;
};

/*
 * session_start - greet a new client on c (taken, with whatever input it
 * already holds) that came in on listener l from sa, and serve it; on a
 * PROXY listener sa is the client the header named, and the socket's
 * peer (the balancer) goes into the records as the client's "via"
 */
struct session *session_start(struct session_host *h, struct conn *c,
			      const struct sockaddr *sa, socklen_t salen,
			      const struct listener *l);

/* session_refuse - answer 421 on c (taken) to a client we cannot serve, and log it */
void session_refuse(struct session_host *h, struct conn *c,
		    const struct sockaddr *sa, const char *reason);

/*
 * session_refuse_reply - the same with "421 ENH HOSTNAME TEXT" and the
 * record's reason given apart (a policy refusal: enh 4.7.0)
 */
void session_refuse_reply(struct session_host *h, struct conn *c,
			  const struct sockaddr *sa, const char *enh,
			  const char *text, const char *reason);

/*
 * session_drop - close c (taken) from sa without a word, with a
 * connection record of action ("refused", "dropped") and reason: a
 * connection that ended before a session could start (a listener's
 * PROXY pre-session)
 */
void session_drop(struct session_host *h, struct conn *c,
		  const struct sockaddr *sa, const char *action, const char *reason);

/*
 * session_drain_all - the worker is stopping: idle sessions are closed
 * with 421 now, those in a transaction right after its final reply
 */
void session_drain_all(struct session_host *h);

/*
 * session_retire_all - a reload replaced the worker: each session ends
 * with 421 4.3.2 at its first command outside a transaction (the current
 * transaction finishes), so no client keeps the old configuration
 */
void session_retire_all(struct session_host *h);

/* session_kill_all - the drain deadline passed: close all with 421 now */
void session_kill_all(struct session_host *h);

#endif
