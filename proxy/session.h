/*
 * session.h - the server side of SMTP for one client
 *
 * A session owns the client connection, reads its commands (pipelined or
 * not) and answers them strictly in order, one at a time: a command that
 * needs the backend (MAIL, RCPT, the end of DATA) holds the following
 * ones until the backend replied. The transaction (struct session_tx)
 * lives from MAIL to the final reply; every transaction and every
 * connection without one ends in a decision record.
 */
#ifndef PORTCULLIS_SESSION_H
#define PORTCULLIS_SESSION_H

#include <sys/socket.h>

#include <event2/util.h>

#include "worker.h"

struct session;

/* session_start - greet a new client and serve it; takes fd */
struct session *session_start(struct worker *w, evutil_socket_t fd,
			      const struct sockaddr *sa, socklen_t salen,
			      const char *listener);

/* session_refuse - answer 421 to a client we cannot serve, and log it */
void session_refuse(struct worker *w, evutil_socket_t fd,
		    const struct sockaddr *sa, const char *reason);

/*
 * session_drain_all - the worker is stopping: idle sessions are closed
 * with 421 now, those in a transaction right after its final reply
 */
void session_drain_all(struct worker *w);

/*
 * session_retire_all - a reload replaced the worker: each session ends
 * with 421 4.3.2 at its first command outside a transaction (the current
 * transaction finishes), so no client keeps the old configuration
 */
void session_retire_all(struct worker *w);

/* session_kill_all - the drain deadline passed: close all with 421 now */
void session_kill_all(struct worker *w);

#endif
