/*
 * auth.h - the SASL side of the AUTH command (RFC 4954): PLAIN and LOGIN
 *
 * Pure code, no I/O: base64 (RFC 4648 4, as RFC 4954 4 wants it: no
 * line breaks, no white space, padding required), the PLAIN message
 * (RFC 4616 2: [authzid] NUL authcid NUL passwd), and the state of one
 * exchange (struct auth_exchange): auth_start() takes the AUTH command's
 * argument, auth_step() each line the client sends after a 334, and each
 * says what to do next: ask again (with the challenge), refuse (with the
 * reply), or check the credentials now gathered. The session does the
 * I/O and the checking (Dovecot, or the backend itself).
 *
 * The password is kept only in the exchange, and auth_exchange_clear()
 * wipes it: no caller logs or records anything of struct auth_creds
 * but the user name.
 */
#ifndef PORTCULLIS_AUTH_H
#define PORTCULLIS_AUTH_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 4954 4: a line of the exchange may be this long (CRLF included). */
#define AUTH_LINE_MAX 12288
/* The longest user name and password taken (Postfix, Dovecot: 255 + more). */
#define AUTH_FIELD_MAX 1024

enum auth_mech { AUTH_MECH_NONE, AUTH_MECH_PLAIN, AUTH_MECH_LOGIN };

/* What the caller does after auth_start() or auth_step(). */
enum auth_next {
	AUTH_NEXT_CHALLENGE, /* send "334 " + challenge, then auth_step() the reply */
	AUTH_NEXT_CHECK,     /* creds are complete: verify them */
	AUTH_NEXT_REFUSE,    /* send the reply (code, enh, text), the exchange is over */
};

struct auth_creds {
	char authzid[AUTH_FIELD_MAX + 1]; /* "" when not given */
	char user[AUTH_FIELD_MAX + 1];	  /* authcid */
	char pass[AUTH_FIELD_MAX + 1];
};

struct auth_exchange {
	enum auth_mech mech;
	int step; /* LOGIN: 0 wants the user name, 1 the password */
	struct auth_creds creds;
	const char *challenge; /* base64, for AUTH_NEXT_CHALLENGE */
	int code;	       /* for AUTH_NEXT_REFUSE */
	const char *enh, *text;
};

/*
 * auth_mech_parse - the mechanism named by len bytes at name (case does
 * not matter); AUTH_MECH_NONE when it is neither PLAIN nor LOGIN
 */
enum auth_mech auth_mech_parse(const char *name, size_t len);

/* auth_mech_name - "PLAIN" or "LOGIN" ("" for none) */
const char *auth_mech_name(enum auth_mech mech);

/*
 * auth_base64_decode - decode len bytes at in into out (room for cap
 * bytes; decoding needs at most len / 4 * 3); the decoded length, or -1
 * when in is not canonical base64 or does not fit
 */
long auth_base64_decode(const char *in, size_t len, unsigned char *out, size_t cap);

/*
 * auth_base64_encode - encode len bytes into out (cap >= 4 * ((len + 2)
 * / 3) + 1), NUL-terminated; the encoded length, or 0 when it does not fit
 */
size_t auth_base64_encode(const unsigned char *in, size_t len, char *out, size_t cap);

/*
 * auth_plain_parse - split a decoded PLAIN message (RFC 4616 2) into c:
 * exactly two NULs, a non-empty authcid and password, no field longer
 * than AUTH_FIELD_MAX; -1 when it is malformed
 */
int auth_plain_parse(const unsigned char *msg, size_t len, struct auth_creds *c);

/*
 * auth_start - begin an exchange with the AUTH command's argument (arg,
 * len bytes: "MECH [initial-response]"); the answer is in x
 *   504 5.5.4 Unrecognized authentication mechanism (not PLAIN or LOGIN,
 *             or one the listener does not offer: offered is a mask of
 *             1 << AUTH_MECH_*),
 *   501 5.5.2 Invalid base64 data in the initial response,
 *   501 5.5.2 Invalid authentication data (a malformed PLAIN message).
 */
enum auth_next auth_start(struct auth_exchange *x, const char *arg, size_t len,
			  unsigned offered);

/*
 * auth_step - the client's answer (len bytes, no CRLF) to a challenge
 *   501 5.0.0 Authentication aborted ("*", RFC 4954 4),
 *   501 5.5.2 Invalid base64 data, Invalid authentication data.
 */
enum auth_next auth_step(struct auth_exchange *x, const char *line, size_t len);

/* auth_plain_message - creds as a PLAIN message, base64; 0 when it does not fit */
size_t auth_plain_message(const struct auth_creds *c, char *out, size_t cap);

/* auth_exchange_clear - forget the exchange, the password wiped */
void auth_exchange_clear(struct auth_exchange *x);

/*
 * auth_mail_param_valid - whether the value of MAIL's AUTH= parameter
 * (RFC 4954 5: an xtext mailbox, or "<>") is well-formed
 */
bool auth_mail_param_valid(const char *value);

#endif
