/*
 * dovecot_auth.h - a client of Dovecot's authentication service
 *
 * What Postfix speaks for smtpd_sasl_type = dovecot (Dovecot's "auth
 * client" protocol, version 1): over a UNIX stream socket, tab-separated
 * lines. We send "VERSION\t1\t1" and "CPID\tpid"; the server sends
 * VERSION, one MECH line per mechanism, SPID, CUID, COOKIE, then DONE.
 * Then each "AUTH\tid\tmech\tservice=smtp[\tsecured]\trip=..\tresp=.."
 * gets one of OK (user=), CONT (a challenge), or FAIL (temp: the service
 * could not decide), with the request's id.
 *
 * Two parts. dovecot_auth_parse() is pure: one line in, its kind and
 * fields out, for the unit tests and the fuzzer. struct dovecot_auth is
 * the event-driven client: one connection per worker and socket path
 * (dovecot_auth_for()), made on first use and reused by every session
 * with a request id of its own; a request made while it connects waits
 * for DONE. Every request ends in exactly one call of its callback: OK,
 * FAIL, or TEMPFAIL when the service is unreachable, closes, says
 * something malformed or does not answer within the timeout; the
 * connection is then closed and the next request connects again. The
 * callback is never called from inside dovecot_auth_request() or
 * dovecot_auth_cancel(). The password is only ever in the resp= of the
 * line sent; nothing here logs it.
 */
#ifndef PORTCULLIS_DOVECOT_AUTH_H
#define PORTCULLIS_DOVECOT_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

/* The longest line taken from the server (Dovecot's own limit is 8 KB). */
#define DOVECOT_AUTH_LINE_MAX 16384

enum dovecot_line {
	DOVECOT_LINE_OTHER, /* a line this client has no use for (SPID, CUID, COOKIE, ...) */
	DOVECOT_LINE_VERSION,
	DOVECOT_LINE_MECH,
	DOVECOT_LINE_DONE,
	DOVECOT_LINE_OK,
	DOVECOT_LINE_CONT,
	DOVECOT_LINE_FAIL,
};

/* One parsed line; the strings point into the line given. */
struct dovecot_reply {
	enum dovecot_line kind;
	unsigned major;	      /* VERSION */
	unsigned long id;     /* OK, CONT, FAIL */
	const char *mech;     /* MECH: its name */
	size_t mech_len;
	bool plaintext;	      /* MECH: the "plaintext" flag (needs a secured session) */
	const char *user;     /* OK, FAIL: user=, or NULL */
	size_t user_len;
	bool temp;	      /* FAIL: "temp" (the service could not decide) */
};

/*
 * dovecot_auth_parse - one line (len bytes, no LF) from the server into
 * r; -1 when it is malformed: a known kind without its fields (VERSION
 * without a number, OK/CONT/FAIL without a decimal id, MECH without a
 * name), or a NUL in it
 */
int dovecot_auth_parse(const char *line, size_t len, struct dovecot_reply *r);

enum dovecot_result { DOVECOT_OK, DOVECOT_FAIL, DOVECOT_TEMPFAIL };

/* dovecot_auth_fn - how a request ended; user is Dovecot's name for the login on OK */
typedef void (*dovecot_auth_fn)(void *arg, enum dovecot_result result,
				const char *user);

struct dovecot_auth;

/*
 * dovecot_auth_for - the worker's client for the socket at path,
 * timeout_ms for each request; made on first use, NULL when out of
 * memory. It lives as long as the worker.
 */
struct dovecot_auth *dovecot_auth_for(struct event_base *base, const char *path,
				      unsigned timeout_ms);

/*
 * dovecot_auth_request - check a PLAIN message (resp, base64) for the
 * client at rip (numeric); secured says the session is under TLS. The
 * request's id, for dovecot_auth_cancel(); the callback comes later.
 */
unsigned long dovecot_auth_request(struct dovecot_auth *da, const char *resp,
				   const char *rip, bool secured,
				   dovecot_auth_fn done, void *arg);

/* dovecot_auth_cancel - the requester went away: no callback for id */
void dovecot_auth_cancel(struct dovecot_auth *da, unsigned long id);

/*
 * dovecot_auth_mechs - the mechanisms the server announced, as a mask
 * of 1 << AUTH_MECH_* (auth.h); 0 before the first handshake
 */
unsigned dovecot_auth_mechs(const struct dovecot_auth *da);

#endif
