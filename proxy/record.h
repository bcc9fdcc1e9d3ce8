/*
 * record.h - the decision log: one JSON record per line
 *
 * Every transaction and every refused or dropped connection ends in one
 * record, built here from plain structs (the session fills them, nobody
 * hands this module a session) and written as one line to a file, to
 * stdout or to syslog. There is one entry point per kind of record,
 * record_transaction() and record_connection(): what counts records
 * (metrics) sits there.
 *
 * Writing: a record is written whole or not at all. The workers of one
 * daemon share the destination; a lock in memory the master maps before
 * it forks (record_share()) keeps their lines apart however long they
 * are, and short writes, EINTR and EAGAIN are retried under it. A record
 * that cannot be written is dropped and counted, and the count reported
 * in the diagnostics at most once a minute. record_reopen() (SIGUSR1)
 * lets logrotate move the file away.
 *
 * Strings: record_string() makes every string of a record. Bytes that
 * are not UTF-8 are kept, each as the four characters \xNN (lower-case
 * hex), so a field is never missing because the peer sent Latin-1.
 */
#ifndef PORTCULLIS_RECORD_H
#define PORTCULLIS_RECORD_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "smtp.h"

/* What TLS the client's connection has (strings NULL when absent). */
struct record_tls {
	const char *version; /* "TLSv1.3" */
	const char *cipher;
	int bits;
	const char *sni;
	bool resumed;
	const char *peer_subject;     /* the client's certificate, if it gave one */
	const char *peer_fingerprint; /* "sha256:..." */
};

/* Who the client is. */
struct record_client {
	const char *address;
	unsigned port;
	const char *helo;     /* NULL before HELO/EHLO */
	const char *listener; /* the listen setting it came in on (not logged) */
	const char *via_address; /* the load balancer it came through, or NULL */
	unsigned via_port;
	const char *via_command; /* "XCLIENT" or "XFORWARD" when via sent it, or NULL */
	const char *name;	  /* the confirmed host name, or NULL */
	const char *reverse_name; /* the PTR name, confirmed or not, or NULL */
	const char *name_status;  /* confirmed, unconfirmed, unavailable,
				   * tempunavail; NULL: not looked up */
	const char *auth_user;	 /* the AUTH login, or NULL */
	const char *auth_mechanism; /* its mechanism ("" or NULL: none) */
	unsigned auth_failures;	 /* failed AUTH attempts of the session */
	const struct record_tls *tls; /* the record's "tls" object; NULL without TLS */
};

/* One recipient and the reply it got (the session's own list). */
struct record_rcpt {
	char *address;
	char *reply; /* the reply line as sent, no CRLF; NULL in milter mode
		      * when the MTA gave its own */
};

/* One mail transaction. */
struct record_tx {
	unsigned number;
	const char *sender;
	const struct record_rcpt *recipients;
	size_t nrecipients;
	bool sized; /* the message was read: size is known */
	unsigned long long size;
	const char *action; /* accepted, rejected, tempfailed, discarded, quarantined, aborted */
	const char *reply;  /* the final reply sent, or NULL */
	const char *reason; /* or NULL */
	json_t *changes;    /* what filters changed beyond the header, or NULL (borrowed) */
	const char *queue_id; /* milter mode: the MTA's queue id, or NULL */
};

/* The backend part of a transaction. */
struct record_backend {
	const char *server;
	bool reused;
	const struct smtp_reply *reply; /* its last reply, or NULL */
	const char *tls_version;	/* the connection's TLS, or NULL in clear */
	const char *tls_cipher;
};

/*
 * record_share - map the lock the workers share; the master calls it
 * once before it forks them (without it, records go out unlocked)
 */
void record_share(void);

/*
 * record_open - choose the destination: a path, "stdout" or "syslog"
 * Returns 0, or -1 with errno set (the file could not be opened).
 */
int record_open(const char *target);

/* record_reopen - open the file again by its name (log rotation) */
void record_reopen(void);

/*
 * record_set_mode - name the front-end of this process in every record
 * ("mode": "milter"); proxy mode, the default (NULL), is not named
 */
void record_set_mode(const char *mode);

/* record_close - close the destination */
void record_close(void);

/*
 * record_transaction - write the record of one transaction; backend is
 * NULL when no backend took part, filters (stolen, may be NULL) the
 * filter entries
 */
void record_transaction(const char *session, const struct record_client *client,
			const struct record_tx *tx, const struct record_backend *backend,
			json_t *filters);

/* record_connection - write the record of a session without a transaction */
void record_connection(const char *session, const struct record_client *client,
		       const char *action, const char *reason, json_t *filters);

/*
 * record_string - the JSON string of len bytes at s, each byte that is
 * not part of valid UTF-8 written as \xNN; NULL only when out of memory
 */
json_t *record_string(const char *s, size_t len);

/* record_cstring - record_string() of a C string; NULL for NULL */
json_t *record_cstring(const char *s);

/* record_utf8_valid - whether len bytes at s are all valid UTF-8 (RFC 3629) */
bool record_utf8_valid(const char *s, size_t len);

#endif
