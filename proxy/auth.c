/*
 * auth.c - SASL PLAIN and LOGIN for the AUTH command (RFC 4954, 4616)
 *
 * The exchange is a small state machine with no I/O (auth.h). A refusal
 * carries the reply the client gets; the texts are Postfix's where it
 * has one, so clients and administrators meet what they know.
 */
#include "config.h"

#include <string.h>
#include <strings.h>

#include "auth.h"
#include "smtp.h"

/* LOGIN's challenges (draft-murchison-sasl-login): "Username:", "Password:". */
#define AUTH_LOGIN_USER "VXNlcm5hbWU6"
#define AUTH_LOGIN_PASS "UGFzc3dvcmQ6"

static const char auth_b64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* auth_mech_parse - PLAIN or LOGIN by name */
enum auth_mech auth_mech_parse(const char *name, size_t len)
{
	if (len == 5 && strncasecmp(name, "PLAIN", 5) == 0)
		return AUTH_MECH_PLAIN;
	if (len == 5 && strncasecmp(name, "LOGIN", 5) == 0)
		return AUTH_MECH_LOGIN;
	return AUTH_MECH_NONE;
}

/* auth_mech_name - the mechanism's name */
const char *auth_mech_name(enum auth_mech mech)
{
	switch (mech) {
	case AUTH_MECH_PLAIN: return "PLAIN";
	case AUTH_MECH_LOGIN: return "LOGIN";
	default: return "";
	}
}

/* b64_value - the 6 bits of one base64 character, -1 for any other */
static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * auth_base64_decode - canonical base64 only: a length that is a
 * multiple of four, '=' only as the last one or two characters, and the
 * bits that padding leaves over zero (so one message has one encoding)
 */
long auth_base64_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
	size_t n = 0;

	if (len % 4 != 0)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)in[i + k];
			if (c == '=' && i + 4 == len && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad) /* data after '=' */
				return -1;
			v[k] = b64_value(c);
			if (v[k] < 0)
				return -1;
		}
		if ((pad == 1 && (v[2] & 0x3)) || (pad == 2 && (v[1] & 0xf)))
			return -1;
		size_t got = (size_t)(3 - pad);
		if (n + got > cap)
			return -1;
		unsigned w = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 |
			     (unsigned)v[2] << 6 | (unsigned)v[3];
		out[n++] = (unsigned char)(w >> 16);
		if (got > 1)
			out[n++] = (unsigned char)(w >> 8);
		if (got > 2)
			out[n++] = (unsigned char)w;
	}
	return (long)n;
}

/* auth_base64_encode - RFC 4648 4 with padding */
size_t auth_base64_encode(const unsigned char *in, size_t len, char *out, size_t cap)
{
	size_t need = 4 * ((len + 2) / 3), n = 0;

	if (need + 1 > cap)
		return 0;
	for (size_t i = 0; i < len; i += 3) {
		unsigned w = (unsigned)in[i] << 16;
		if (i + 1 < len)
			w |= (unsigned)in[i + 1] << 8;
		if (i + 2 < len)
			w |= in[i + 2];
		out[n++] = auth_b64[(w >> 18) & 63];
		out[n++] = auth_b64[(w >> 12) & 63];
		out[n++] = i + 1 < len ? auth_b64[(w >> 6) & 63] : '=';
		out[n++] = i + 2 < len ? auth_b64[w & 63] : '=';
	}
	out[n] = 0;
	return n;
}

/* field_copy - one field into its buffer; false when it does not fit */
static bool field_copy(char *dst, const unsigned char *src, size_t len)
{
	if (len > AUTH_FIELD_MAX)
		return false;
	memcpy(dst, src, len);
	dst[len] = 0;
	return true;
}

/* auth_plain_parse - authzid NUL authcid NUL passwd */
int auth_plain_parse(const unsigned char *msg, size_t len, struct auth_creds *c)
{
	const unsigned char *a = memchr(msg, 0, len);
	const unsigned char *b, *end = msg + len;

	if (!a)
		return -1;
	b = memchr(a + 1, 0, (size_t)(end - (a + 1)));
	if (!b || memchr(b + 1, 0, (size_t)(end - (b + 1))))
		return -1;
	if (b == a + 1 || b + 1 == end) /* empty authcid or password */
		return -1;
	if (!field_copy(c->authzid, msg, (size_t)(a - msg)) ||
	    !field_copy(c->user, a + 1, (size_t)(b - (a + 1))) ||
	    !field_copy(c->pass, b + 1, (size_t)(end - (b + 1))))
		return -1;
	return 0;
}

/* refuse - end the exchange with a reply */
static enum auth_next refuse(struct auth_exchange *x, int code, const char *enh,
			     const char *text)
{
	x->code = code;
	x->enh = enh;
	x->text = text;
	memset(&x->creds, 0, sizeof(x->creds));
	return AUTH_NEXT_REFUSE;
}

/* challenge - ask the client for the next piece */
static enum auth_next challenge(struct auth_exchange *x, const char *b64)
{
	x->challenge = b64;
	return AUTH_NEXT_CHALLENGE;
}

/*
 * response - one client response (the initial one or an answer): its
 * decoded bytes go where the exchange stands
 */
static enum auth_next response(struct auth_exchange *x, const char *in, size_t len)
{
	/* Decoded, a line of AUTH_LINE_MAX fits; "=" is an empty response. */
	unsigned char buf[AUTH_LINE_MAX / 4 * 3 + 3];
	long n;

	if (len == 1 && in[0] == '=')
		n = 0;
	else if ((n = auth_base64_decode(in, len, buf, sizeof(buf))) < 0)
		return refuse(x, 501, "5.5.2", "Invalid base64 data");
	if (x->mech == AUTH_MECH_PLAIN) {
		int rc = auth_plain_parse(buf, (size_t)n, &x->creds);
		memset(buf, 0, sizeof(buf));
		if (rc < 0)
			return refuse(x, 501, "5.5.2", "Invalid authentication data");
		return AUTH_NEXT_CHECK;
	}
	/* LOGIN: a user name, then a password; neither may hold a NUL. */
	if (n == 0 || memchr(buf, 0, (size_t)n) ||
	    !field_copy(x->step == 0 ? x->creds.user : x->creds.pass, buf, (size_t)n)) {
		memset(buf, 0, sizeof(buf));
		return refuse(x, 501, "5.5.2", "Invalid authentication data");
	}
	memset(buf, 0, sizeof(buf));
	if (x->step++ == 0)
		return challenge(x, AUTH_LOGIN_PASS);
	return AUTH_NEXT_CHECK;
}

/* auth_start - "MECH [initial-response]" */
enum auth_next auth_start(struct auth_exchange *x, const char *arg, size_t len,
			  unsigned offered)
{
	size_t ml = 0, rest;

	memset(x, 0, sizeof(*x));
	while (ml < len && arg[ml] != ' ')
		ml++;
	x->mech = auth_mech_parse(arg, ml);
	if (x->mech == AUTH_MECH_NONE || !(offered & (1u << x->mech)))
		return refuse(x, 504, "5.5.4", "Unrecognized authentication mechanism");
	rest = ml;
	while (rest < len && arg[rest] == ' ')
		rest++;
	if (rest < len) {
		if (memchr(arg + rest, ' ', len - rest))
			return refuse(x, 501, "5.5.2", "Invalid base64 data");
		return response(x, arg + rest, len - rest);
	}
	/* No initial response: PLAIN asks with an empty challenge. */
	return challenge(x, x->mech == AUTH_MECH_PLAIN ? "" : AUTH_LOGIN_USER);
}

/* auth_step - the answer to a 334 */
enum auth_next auth_step(struct auth_exchange *x, const char *line, size_t len)
{
	if (len == 1 && line[0] == '*')
		return refuse(x, 501, "5.0.0", "Authentication aborted");
	if (len == 1 && line[0] == '=')
		/* "=" is the initial response's empty form only (RFC 4954 4). */
		return refuse(x, 501, "5.5.2", "Invalid base64 data");
	return response(x, line, len);
}

/* auth_plain_message - base64 of authzid NUL authcid NUL passwd */
size_t auth_plain_message(const struct auth_creds *c, char *out, size_t cap)
{
	unsigned char msg[3 * AUTH_FIELD_MAX + 2];
	size_t za = strlen(c->authzid), u = strlen(c->user), p = strlen(c->pass);
	size_t n;

	memcpy(msg, c->authzid, za);
	msg[za] = 0;
	memcpy(msg + za + 1, c->user, u);
	msg[za + 1 + u] = 0;
	memcpy(msg + za + u + 2, c->pass, p);
	n = auth_base64_encode(msg, za + u + p + 2, out, cap);
	memset(msg, 0, sizeof(msg));
	return n;
}

/* auth_exchange_clear - wipe the password (explicit_bzero: not optimized away) */
void auth_exchange_clear(struct auth_exchange *x)
{
	explicit_bzero(x, sizeof(*x));
}

/* auth_mail_param_valid - AUTH=<> or an xtext mailbox */
bool auth_mail_param_valid(const char *value)
{
	if (!value || !*value)
		return false;
	return strcmp(value, "<>") == 0 || smtp_xtext_valid(value);
}
