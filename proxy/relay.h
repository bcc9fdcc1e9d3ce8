/*
 * relay.h - the client side of SMTP towards the backend MTA
 *
 * A relay is the backend connection of one client session. It opens at
 * the first MAIL: connect (backends tried in order), greeting, EHLO,
 * then the client's identity by XCLIENT when the backend offers it, else
 * XFORWARD, else nothing (the session then adds a Received: header).
 * MAIL, RCPT and RSET are relayed one at a time; relay_data() sends DATA
 * and streams the spooled message, dot-stuffed again. Every operation
 * ends in exactly one call of the session's callback with the reply the
 * client should see: the backend's own, or one made here when the
 * backend failed (451 4.4.1 unreachable, 451 4.4.2 lost or timed out).
 *
 * The connection stays open across transactions of the same session.
 * relay_free() parks it when it is idle (after RSET if the client left a
 * transaction open) and [backend] reuse allows: the next session adopts
 * it and says who its client is by XCLIENT again, from relay_prepare() at
 * its HELO/EHLO when the connection takes XCLIENT, else at relay_mail().
 * When the session's client changed since (a trusted peer's XCLIENT or
 * XFORWARD), relay_mail() sends XCLIENT again before MAIL.
 * A reused connection that fails before its first reply is replaced by a
 * new one, invisibly to the client (before MAIL: MAIL opens one). Otherwise relay_free() closes it:
 * QUIT when idle, a plain close in the middle of a transaction so the
 * backend discards it.
 */
#ifndef PORTCULLIS_RELAY_H
#define PORTCULLIS_RELAY_H

#include <stdbool.h>

#include "smtp.h"
#include "spool.h"
#include "backend.h"

struct relay;

/* Who the client is, as the backend should see it. */
struct relay_client {
	const char *addr;  /* numeric, without brackets */
	unsigned port;
	const char *helo;  /* NULL before HELO/EHLO */
	bool esmtp;
	const char *name;	  /* the confirmed name, or NULL */
	const char *reverse_name; /* the PTR name, or NULL */
	bool name_tempfail;	  /* the name is unknown for now: [TEMPUNAVAIL] */
	const char *login; /* the AUTH login, or NULL: XCLIENT LOGIN= */
};

/*
 * relay_done_fn - the end of one operation
 * backend is true when the reply came from the backend, false when the
 * relay made it up because the backend failed (the connection is then
 * closed and the transaction lost at the backend).
 */
typedef void (*relay_done_fn)(void *arg, const struct smtp_reply *reply,
			      bool backend);

/* relay_new - a closed relay for one session */
struct relay *relay_new(struct backend_pool *pool, relay_done_fn done, void *arg);

/* relay_free - close the backend connection and release the relay */
void relay_free(struct relay *relay);

/*
 * relay_prepare - the client's HELO/EHLO was accepted: adopt a parked
 * connection now, if one waits, and give it the client's identity before
 * MAIL comes. The backend then sees the name of this first HELO/EHLO, as
 * it does when the client says HELO again later in the session.
 */
void relay_prepare(struct relay *relay, const struct relay_client *client);

/*
 * relay_mail - open the connection if needed, then relay "MAIL FROM:..."
 * line is the full command without CRLF.
 */
void relay_mail(struct relay *relay, const struct relay_client *client,
		const char *line);

/*
 * relay_auth - open the connection if needed (as relay_mail() does),
 * then relay the client's "AUTH MECH [initial-response]" line: the
 * callback gets the backend's reply, 334 included. While it is 334,
 * relay_auth_continue() sends the client's next line ("*" cancels).
 * A connection the backend answered 235 on speaks for that login: it
 * is never parked for another session.
 */
void relay_auth(struct relay *relay, const struct relay_client *client,
		const char *line);

/* relay_auth_continue - the client's answer to the backend's 334 */
void relay_auth_continue(struct relay *relay, const char *line);

/* relay_command - relay one command line (RCPT, RSET, NOOP) */
void relay_command(struct relay *relay, const char *line);

/*
 * relay_data - DATA, then prefix (header lines, CRLF-terminated, may be
 * NULL) and the spooled content from offset skip on, then the end of data.
 * prefix and spool are borrowed until the callback or relay_cancel().
 * Only a 250 that follows the whole message after a 354 is the backend's
 * acceptance; a reply to DATA other than 354, 4xx or 5xx, or one that
 * arrives before the message was sent, is answered 451 4.4.2.
 */
void relay_data(struct relay *relay, const char *prefix, struct spool *spool,
		unsigned long long skip);

/*
 * relay_cancel - the session abandons the operation under way (it is
 * closing): no callback comes for it, and the spool handed to
 * relay_data() is no longer read. A connection in the middle of a
 * transaction is cut, so the backend discards what it had of it.
 */
void relay_cancel(struct relay *relay);

/* relay_is_open - whether a backend connection is established */
bool relay_is_open(const struct relay *relay);

/* relay_reused - whether the connection served an earlier session */
bool relay_reused(const struct relay *relay);

/*
 * relay_tls_version - the TLS of the backend connection ([backend] tls):
 * its version ("TLSv1.3"), its cipher in *cipher; NULL in clear text
 */
const char *relay_tls_version(const struct relay *relay, const char **cipher);

/*
 * relay_drop_parked - QUIT and close the pool's parked connections at
 * once (its worker stops serving)
 */
void relay_drop_parked(struct backend_pool *pool);

/* relay_identity_sent - whether XCLIENT or XFORWARD told the client's identity */
bool relay_identity_sent(const struct relay *relay);

/* relay_server - the backend in use, as configured ("" when closed) */
const char *relay_server(const struct relay *relay);

/* relay_caps - the capabilities of the open backend connection */
const struct smtp_caps *relay_caps(const struct relay *relay);

/*
 * relay_probe - connect to the first reachable backend and EHLO: its
 * capabilities go to backend_learn_caps(), backend_probe_done() follows,
 * and the connection is parked for the first session (or QUIT)
 */
void relay_probe(struct backend_pool *pool);

#endif
