/*
 * smtp.c - the pure SMTP protocol codec (RFC 5321 and its extensions)
 *
 * Offers the wire-format half of the proxy, as declared in smtp.h:
 * command line scanning and splitting, the command rules a session's
 * table carries (smtp_command_check), MAIL/RCPT path and ESMTP
 * parameter parsing (RFC 5321 4.1.2, RFC 6531 UTF-8) and checking
 * against what the EHLO reply offered (RFC 1870, 3461, 6152, 6531),
 * reply reading and writing (RFC 5321 4.2, RFC 3463 enhanced codes),
 * EHLO capability parsing, the DATA transparency decoder and encoder
 * (RFC 5321 4.5.2), RFC 3461 xtext and HELO domain checks.
 *
 * Every function works on a caller's buffer and length (never assuming
 * a NUL terminator on input), does no I/O and keeps no state of its own;
 * the only allocations are the strings inside struct smtp_path and
 * struct smtp_reply, released by smtp_path_free() and
 * smtp_reply_reset(). The decoder and encoder keep their state in the
 * caller's struct, so input may arrive in chunks split anywhere.
 *
 * Malformed input is reported through struct smtp_error: the reply code,
 * the enhanced status code and a static text (without either code) that
 * the server sends back as is. An allocation failure is reported the
 * same way, as 452 4.3.1.
 */
#include "smtp.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <limits.h>
#include <strings.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- character classes (ASCII only, independent of the locale) ---- */

/* is_alpha - RFC 5234 ALPHA */
static bool is_alpha(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* is_digit - RFC 5234 DIGIT */
static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* is_alnum - RFC 5321 Let-dig */
static bool is_alnum(unsigned char c)
{
	return is_alpha(c) || is_digit(c);
}

/* to_upper - ASCII upper case, other bytes unchanged */
static unsigned char to_upper(unsigned char c)
{
	return (c >= 'a' && c <= 'z') ? (unsigned char)(c - 'a' + 'A') : c;
}

/* ascii_ieq - whether s[0..len) equals the NUL-terminated word, any case */
static bool ascii_ieq(const char *s, size_t len, const char *word)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (word[i] == '\0' ||
		    to_upper((unsigned char)s[i]) != to_upper((unsigned char)word[i]))
			return false;
	}
	return word[len] == '\0';
}

/* is_atext - RFC 5322 3.2.3 atext, the ASCII part of a dot-string atom */
static bool is_atext(unsigned char c)
{
	if (is_alnum(c))
		return true;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/*
 * utf8_seq_len - length of the well-formed UTF-8 sequence at p
 *
 * Follows the table of RFC 3629 section 4, so overlong forms, UTF-16
 * surrogates and code points above U+10FFFF are refused. Returns 0 for
 * an ASCII byte or a malformed or truncated sequence.
 */
static size_t utf8_seq_len(const unsigned char *p, size_t avail)
{
	unsigned char c, lo = 0x80, hi = 0xBF;
	size_t n, i;

	if (avail == 0)
		return 0;
	c = p[0];
	if (c >= 0xC2 && c <= 0xDF) {
		n = 2;
	} else if (c >= 0xE0 && c <= 0xEF) {
		n = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else {
		return 0;
	}
	if (avail < n)
		return 0;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < n; i++) {
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	}
	return n;
}

/* set_error - fill err (which may be NULL) with a reply */
static void set_error(struct smtp_error *err, int code, const char *enh,
		      const char *text)
{
	if (err == NULL)
		return;
	err->code = code;
	err->enh = enh;
	err->text = text;
}

/* ---- line scanning ---- */

/* smtp_line_scan - find the next command line in buf[0..len) */
enum smtp_line_status smtp_line_scan(const char *buf, size_t len,
				     size_t max_len, size_t *line_len,
				     size_t *consumed)
{
	const char *lf = NULL;
	size_t window, lfpos, end, i;
	bool bare_cr = false;

	*line_len = 0;
	*consumed = 0;
	if (buf == NULL)
		len = 0;
	/* max_len content bytes plus CRLF is the longest acceptable line. */
	window = max_len > SIZE_MAX - 2 ? SIZE_MAX : max_len + 2;
	if (len > 0)
		lf = memchr(buf, '\n', len);

	if (lf == NULL) {
		if (len >= window) {
			*consumed = len;
			return SMTP_LINE_TOO_LONG;
		}
		/* A CR as the last byte may still be followed by its LF. */
		for (i = 0; i + 1 < len; i++) {
			if (buf[i] == '\r')
				bare_cr = true;
		}
		if (bare_cr && len > max_len) {
			*consumed = len;
			return SMTP_LINE_TOO_LONG;
		}
		return SMTP_LINE_INCOMPLETE;
	}

	lfpos = (size_t)(lf - buf);
	/*
	 * An over-long line is discarded only up to its LF, so the caller's
	 * smtp_line_skip() ends on that LF and the next line survives.
	 */
	if (lfpos >= window) {
		*consumed = lfpos;
		return SMTP_LINE_TOO_LONG;
	}
	end = lfpos;
	if (lfpos > 0 && buf[lfpos - 1] == '\r')
		end = lfpos - 1;
	if (end > max_len) {
		*consumed = lfpos;
		return SMTP_LINE_TOO_LONG;
	}
	/* Before the line end, every CR is one not followed by LF. */
	for (i = 0; i < end; i++) {
		if (buf[i] == '\r')
			bare_cr = true;
	}
	*line_len = end;
	*consumed = lfpos + 1;
	if (bare_cr)
		return SMTP_LINE_BARE_CR;
	if (end == lfpos)
		return SMTP_LINE_BARE_LF;
	return SMTP_LINE_OK;
}

/* smtp_line_skip - discard up to and including the next LF */
size_t smtp_line_skip(const char *buf, size_t len, bool *found)
{
	const char *lf = NULL;

	if (buf == NULL)
		len = 0;
	if (len > 0)
		lf = memchr(buf, '\n', len);
	*found = lf != NULL;
	return lf != NULL ? (size_t)(lf - buf) + 1 : len;
}

/* ---- commands ---- */

static const char *const verb_names[SMTP_VERB_COUNT] = {
	[SMTP_VERB_UNKNOWN] = "UNKNOWN",
	[SMTP_VERB_HELO] = "HELO",
	[SMTP_VERB_EHLO] = "EHLO",
	[SMTP_VERB_MAIL] = "MAIL",
	[SMTP_VERB_RCPT] = "RCPT",
	[SMTP_VERB_DATA] = "DATA",
	[SMTP_VERB_RSET] = "RSET",
	[SMTP_VERB_NOOP] = "NOOP",
	[SMTP_VERB_QUIT] = "QUIT",
	[SMTP_VERB_VRFY] = "VRFY",
	[SMTP_VERB_EXPN] = "EXPN",
	[SMTP_VERB_HELP] = "HELP",
	[SMTP_VERB_STARTTLS] = "STARTTLS",
	[SMTP_VERB_AUTH] = "AUTH",
	[SMTP_VERB_BDAT] = "BDAT",
	[SMTP_VERB_XCLIENT] = "XCLIENT",
	[SMTP_VERB_XFORWARD] = "XFORWARD",
	[SMTP_VERB_ETRN] = "ETRN",
	[SMTP_VERB_TURN] = "TURN",
};

/* smtp_command_parse - split one command line (without CRLF) */
int smtp_command_parse(const char *line, size_t len, struct smtp_command *cmd,
		       struct smtp_error *err)
{
	size_t i, vlen;
	int v;
	bool blank = true;

	if (line == NULL)
		len = 0;
	cmd->verb = SMTP_VERB_UNKNOWN;
	cmd->arg = line;
	cmd->arg_len = 0;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];

		/*
		 * RFC 5321 4.1.1 commands are printable text; a NUL or other
		 * control byte is a smuggling or injection attempt.
		 */
		if ((c < 0x20 && c != '\t') || c == 0x7F) {
			set_error(err, 500, "5.5.2",
				  "Error: bad character in command");
			return -1;
		}
		if (c != ' ' && c != '\t')
			blank = false;
	}
	/* A line of only white space is as empty as an empty one. */
	if (blank) {
		set_error(err, 500, "5.5.2", "Error: bad syntax");
		return -1;
	}

	for (vlen = 0; vlen < len && line[vlen] != ' '; vlen++)
		;
	for (v = SMTP_VERB_UNKNOWN + 1; v < SMTP_VERB_COUNT; v++) {
		if (ascii_ieq(line, vlen, verb_names[v])) {
			cmd->verb = (enum smtp_verb)v;
			break;
		}
	}
	for (i = vlen; i < len && line[i] == ' '; i++)
		;
	cmd->arg = line + i;
	cmd->arg_len = len - i;
	return 0;
}

/* smtp_verb_name - the canonical upper-case name of a verb ("MAIL") */
const char *smtp_verb_name(enum smtp_verb verb)
{
	if ((int)verb < 0 || verb >= SMTP_VERB_COUNT)
		return verb_names[SMTP_VERB_UNKNOWN];
	return verb_names[verb];
}

/* The 501 texts of verbs whose argument the command table checks. */
static const char *const verb_syntax[SMTP_VERB_COUNT] = {
	[SMTP_VERB_HELO] = "Syntax: HELO hostname",
	[SMTP_VERB_EHLO] = "Syntax: EHLO hostname",
	[SMTP_VERB_DATA] = "Syntax: DATA",
	[SMTP_VERB_VRFY] = "Syntax: VRFY address",
	[SMTP_VERB_STARTTLS] = "Syntax: STARTTLS",
};

/* smtp_verb_syntax - the 501 text for a verb's argument */
const char *smtp_verb_syntax(enum smtp_verb verb)
{
	if ((int)verb < 0 || verb >= SMTP_VERB_COUNT || verb_syntax[verb] == NULL)
		return "Error: syntax error";
	return verb_syntax[verb];
}

/* arg_fits - whether an argument of len bytes suits the SMTP_CMD_ARG_* flags */
static bool arg_fits(const struct smtp_command *cmd, unsigned flags)
{
	if ((flags & SMTP_CMD_ARG_NONE) && cmd->arg_len > 0)
		return false;
	if ((flags & (SMTP_CMD_ARG_ONE | SMTP_CMD_ARG_SOME)) && cmd->arg_len == 0)
		return false;
	/* HELO takes one domain; "HELO a b" is a broken client (RFC 5321 4.1.1.1). */
	if ((flags & SMTP_CMD_ARG_ONE) && memchr(cmd->arg, ' ', cmd->arg_len))
		return false;
	return true;
}

/* smtp_command_check - whether cmd may run now under its row's flags */
int smtp_command_check(const struct smtp_command *cmd, unsigned flags,
		       const struct smtp_cmd_state *st, struct smtp_error *err)
{
	/* RFC 3207 4: before STARTTLS, only what cannot leak or change mail. */
	if (st->tls_required && !st->tls_active && !(flags & SMTP_CMD_PRE_TLS)) {
		set_error(err, 530, "5.7.0", "Must issue a STARTTLS command first");
		return -1;
	}
	if (!arg_fits(cmd, flags)) {
		set_error(err, 501, "5.5.4", smtp_verb_syntax(cmd->verb));
		return -1;
	}
	if ((flags & SMTP_CMD_NEEDS_MAIL) && !st->in_mail) {
		set_error(err, 503, "5.5.1", "Error: need MAIL command");
		return -1;
	}
	if ((flags & SMTP_CMD_NEEDS_HELO) && !st->helo) {
		set_error(err, 503, "5.5.1", "Error: send HELO/EHLO first");
		return -1;
	}
	if ((flags & SMTP_CMD_NOT_IN_MAIL) && st->in_mail) {
		/* Postfix's words, which clients and their logs know. */
		set_error(err, 503, "5.5.1",
			  cmd->verb == SMTP_VERB_MAIL ? "Error: nested MAIL command"
						      : "Error: MAIL transaction in progress");
		return -1;
	}
	return 0;
}

/* ---- domains and address literals ---- */

/*
 * domain_ok - whether s[0..len) is a Domain of RFC 5321 4.1.2
 *
 * sub-domain = Let-dig [Ldh-str]: letters, digits and inner hyphens,
 * each label 1 to 63 bytes, the whole at most SMTP_DOMAIN_MAX. RFC 6531
 * U-labels are taken as well-formed UTF-8 counted in bytes; *has8 is
 * set when one occurs. No trailing dot here.
 */
static bool domain_scan(const unsigned char *s, size_t len, bool *has8,
			bool underscore)
{
	size_t i = 0, start, n;

	if (len == 0 || len > SMTP_DOMAIN_MAX)
		return false;
	while (i < len) {
		start = i;
		while (i < len && s[i] != '.') {
			if (s[i] >= 0x80) {
				n = utf8_seq_len(s + i, len - i);
				if (n == 0)
					return false;
				*has8 = true;
				i += n;
			} else if (is_alnum(s[i]) || s[i] == '-' ||
				   (underscore && s[i] == '_')) {
				i++;
			} else {
				return false;
			}
		}
		if (i == start || i - start > 63)
			return false;
		if (s[start] == '-' || s[i - 1] == '-')
			return false;
		if (i < len) {
			/* skip the dot; a dot at the very end is an empty label */
			i++;
			if (i == len)
				return false;
		}
	}
	return true;
}

/* domain_ok - domain_scan() of a strict RFC 5321 Domain */
static bool domain_ok(const unsigned char *s, size_t len, bool *has8)
{
	return domain_scan(s, len, has8, false);
}

/* ipv4_ok - RFC 5321 4.1.3 IPv4-address-literal: 4 Snum of 0-255 */
static bool ipv4_ok(const unsigned char *s, size_t len)
{
	size_t i = 0, nd;
	unsigned int v;
	int part;

	for (part = 0; part < 4; part++) {
		if (part > 0) {
			if (i >= len || s[i] != '.')
				return false;
			i++;
		}
		v = 0;
		for (nd = 0; nd < 3 && i < len && is_digit(s[i]); nd++, i++)
			v = v * 10 + (unsigned int)(s[i] - '0');
		if (nd == 0 || v > 255)
			return false;
	}
	return i == len;
}

/* ipv6_ok - RFC 5321 4.1.3 IPv6-addr, checked by inet_pton() */
static bool ipv6_ok(const unsigned char *s, size_t len)
{
	char buf[64];
	unsigned char addr[16];
	size_t i;

	if (len == 0 || len >= sizeof(buf))
		return false;
	/* inet_pton() would stop at a NUL; allow only what IPv6 uses. */
	for (i = 0; i < len; i++) {
		if (!is_digit(s[i]) && !(s[i] >= 'a' && s[i] <= 'f') &&
		    !(s[i] >= 'A' && s[i] <= 'F') && s[i] != ':' && s[i] != '.')
			return false;
	}
	memcpy(buf, s, len);
	buf[len] = '\0';
	return inet_pton(AF_INET6, buf, addr) == 1;
}

/*
 * literal_ok - the inside of an address-literal (RFC 5321 4.1.3)
 *
 * IPv4-address-literal, "IPv6:" IPv6-addr, or General-address-literal
 * (Standardized-tag ":" 1*dcontent), the tag being an Ldh-str.
 */
static bool literal_ok(const unsigned char *s, size_t len)
{
	const unsigned char *colon;
	size_t tlen, i;

	if (len == 0)
		return false;
	colon = memchr(s, ':', len);
	if (colon == NULL)
		return ipv4_ok(s, len);
	tlen = (size_t)(colon - s);
	if (tlen == 0 || !is_alnum(s[tlen - 1]))
		return false;
	for (i = 0; i < tlen; i++) {
		if (!is_alnum(s[i]) && s[i] != '-')
			return false;
	}
	if (ascii_ieq((const char *)s, tlen, "IPv6"))
		return ipv6_ok(colon + 1, len - tlen - 1);
	if (len - tlen - 1 == 0)
		return false;
	/* dcontent = %d33-90 / %d94-126: printable except "[", "\", "]" */
	for (i = tlen + 1; i < len; i++) {
		if (s[i] < 33 || s[i] > 126 || (s[i] >= 91 && s[i] <= 93))
			return false;
	}
	return true;
}

/*
 * name_valid - a domain or an address literal, underscores in labels
 * when underscore is set; UTF-8 labels only when utf8 is
 */
static bool name_valid(const char *s, size_t len, bool utf8, bool underscore)
{
	const unsigned char *u = (const unsigned char *)s;
	bool has8 = false;

	if (s == NULL || len == 0)
		return false;
	if (u[0] == '[')
		return len >= 2 && u[len - 1] == ']' && literal_ok(u + 1, len - 2);
	/* A fully qualified name with its root dot ("mx.example.org."). */
	if (u[len - 1] == '.')
		len--;
	if (!domain_scan(u, len, &has8, underscore))
		return false;
	return utf8 || !has8;
}

/* smtp_domain_valid - whether s is a valid HELO/EHLO domain */
bool smtp_domain_valid(const char *s, size_t len, bool utf8)
{
	return name_valid(s, len, utf8, false);
}

/* smtp_helo_valid - whether s is an acceptable HELO/EHLO argument */
bool smtp_helo_valid(const char *s, size_t len, bool utf8)
{
	/* Underscores: real MTAs send them (Windows host names), Postfix takes them. */
	return name_valid(s, len, utf8, true);
}

/* ---- MAIL FROM / RCPT TO paths ---- */

/* dup_range - a NUL-terminated copy of s[0..len), NULL if out of memory */
static char *dup_range(const unsigned char *s, size_t len)
{
	char *p = malloc(len + 1);

	if (p == NULL)
		return NULL;
	if (len > 0)
		memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

/* smtp_path_free - release what smtp_path_parse() allocated */
void smtp_path_free(struct smtp_path *path)
{
	size_t i;

	if (path == NULL)
		return;
	free(path->path);
	free(path->route);
	free(path->local);
	free(path->domain);
	path->path = NULL;
	path->route = NULL;
	path->local = NULL;
	path->domain = NULL;
	if (path->nparams > SMTP_MAX_PARAMS)
		path->nparams = SMTP_MAX_PARAMS;
	for (i = 0; i < path->nparams; i++) {
		free(path->params[i].keyword);
		free(path->params[i].value);
		path->params[i].keyword = NULL;
		path->params[i].value = NULL;
	}
	path->nparams = 0;
}

/*
 * domain_extent - how many bytes from s[i] could belong to a domain
 *
 * A sub-domain holds letters, digits, hyphens, dots and UTF-8 bytes; it
 * ends at the '>', ',' or ':' that follows it, which domain_ok() does not
 * need to see.
 */
static size_t domain_extent(const unsigned char *s, size_t i, size_t len)
{
	size_t j = i;

	while (j < len && (is_alnum(s[j]) || s[j] == '-' || s[j] == '.' ||
			   s[j] >= 0x80))
		j++;
	return j - i;
}

/*
 * mailbox_domain - the Domain or address-literal of a Mailbox at s[i]
 *
 * Returns its length, or 0 when it is not valid.
 */
static size_t mailbox_domain(const unsigned char *s, size_t i, size_t len,
			     bool *has8)
{
	const unsigned char *rb;
	size_t n;

	if (i < len && s[i] == '[') {
		rb = memchr(s + i, ']', len - i);
		if (rb == NULL)
			return 0;
		n = (size_t)(rb - (s + i)) + 1;
		if (n > SMTP_DOMAIN_MAX || !literal_ok(s + i + 1, n - 2))
			return 0;
		return n;
	}
	n = domain_extent(s, i, len);
	if (!domain_ok(s + i, n, has8))
		return 0;
	return n;
}

/*
 * local_part - the Local-part of a Mailbox at s[i] (RFC 5321 4.1.2)
 *
 * Dot-string (atoms of atext joined by single dots) or Quoted-string
 * (qtextSMTP and quoted-pairSMTP between double quotes); RFC 6531 adds
 * UTF-8 to atext and qtextSMTP. Returns its length, 0 when invalid.
 */
static size_t local_part(const unsigned char *s, size_t i, size_t len,
			 bool *has8)
{
	size_t j = i, start, n;
	unsigned char c;

	if (i >= len)
		return 0;
	if (s[i] == '"') {
		for (j = i + 1; j < len; ) {
			c = s[j];
			if (c == '"')
				return j + 1 - i;
			if (c == '\\') {
				/* quoted-pairSMTP = %d92 %d32-126 */
				if (j + 1 >= len || s[j + 1] < 32 || s[j + 1] > 126)
					return 0;
				j += 2;
			} else if (c >= 0x80) {
				n = utf8_seq_len(s + j, len - j);
				if (n == 0)
					return 0;
				*has8 = true;
				j += n;
			} else if (c >= 32 && c <= 126) {
				/* qtextSMTP: all but '"' and '\' */
				j++;
			} else {
				return 0;
			}
		}
		return 0;
	}
	for (;;) {
		start = j;
		while (j < len) {
			if (s[j] >= 0x80) {
				n = utf8_seq_len(s + j, len - j);
				if (n == 0)
					return 0;
				*has8 = true;
				j += n;
			} else if (is_atext(s[j])) {
				j++;
			} else {
				break;
			}
		}
		if (j == start)
			return 0;
		if (j < len && s[j] == '.') {
			j++;
			continue;
		}
		return j - i;
	}
}

/*
 * parse_params - the Mail-parameters or Rcpt-parameters at s[i..len)
 *
 * RFC 5321 4.1.2: SP-separated esmtp-param = esmtp-keyword ["="
 * esmtp-value]. Several spaces and trailing spaces are tolerated, as
 * real clients send them. Fills out->params; returns false on a syntax
 * error (out->params may then hold allocations) or *nomem on ENOMEM.
 */
static bool parse_params(const unsigned char *s, size_t i, size_t len,
			 struct smtp_path *out, bool *nomem)
{
	size_t ks, kl, vs, vl, k, n;
	struct smtp_param *p;

	for (;;) {
		if (i >= len)
			return true;
		if (s[i] != ' ')
			return false;
		while (i < len && s[i] == ' ')
			i++;
		if (i >= len)
			return true;

		/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
		ks = i;
		if (!is_alnum(s[i]))
			return false;
		while (i < len && (is_alnum(s[i]) || s[i] == '-'))
			i++;
		kl = i - ks;

		vs = 0;
		vl = 0;
		if (i < len && s[i] == '=') {
			/* esmtp-value = 1*(%d33-60 / %d62-126), RFC 6531 UTF-8 */
			vs = ++i;
			while (i < len && s[i] != ' ') {
				if (s[i] >= 0x80) {
					n = utf8_seq_len(s + i, len - i);
					if (n == 0)
						return false;
					i += n;
				} else if (s[i] >= 33 && s[i] <= 126 &&
					   s[i] != '=') {
					i++;
				} else {
					return false;
				}
			}
			vl = i - vs;
			if (vl == 0)
				return false;
		} else if (i < len && s[i] != ' ') {
			return false;
		}

		for (k = 0; k < out->nparams; k++) {
			if (ascii_ieq((const char *)s + ks, kl,
				      out->params[k].keyword))
				return false;
		}
		if (out->nparams >= SMTP_MAX_PARAMS)
			return false;

		p = &out->params[out->nparams];
		p->keyword = dup_range(s + ks, kl);
		if (p->keyword == NULL) {
			*nomem = true;
			return false;
		}
		out->nparams++;
		for (k = 0; k < kl; k++)
			p->keyword[k] = (char)to_upper((unsigned char)p->keyword[k]);
		if (vs != 0) {
			p->value = dup_range(s + vs, vl);
			if (p->value == NULL) {
				*nomem = true;
				return false;
			}
		}
	}
}

/* smtp_path_parse - parse "FROM:<path> params" or "TO:<path> params" */
int smtp_path_parse(const char *arg, size_t len, bool is_rcpt,
		    struct smtp_path *out, struct smtp_error *err)
{
	const unsigned char *s = (const unsigned char *)arg;
	const char *syntax = is_rcpt ? "Syntax: RCPT TO:<address>"
				     : "Syntax: MAIL FROM:<address>";
	const char *bad = is_rcpt ? "Bad recipient address syntax"
				  : "Bad sender address syntax";
	const char *toolong = is_rcpt ? "Recipient address too long"
				      : "Sender address too long";
	const char *aenh = is_rcpt ? "5.1.3" : "5.1.7";
	size_t kwlen = is_rcpt ? 3 : 5;
	size_t i, n, rstart = 0, rlen = 0, mstart = 0, llen = 0, dstart = 0;
	size_t dlen = 0, close = 0;
	bool has8 = false, nomem = false;

	memset(out, 0, sizeof(*out));
	if (s == NULL)
		len = 0;

	if (len < kwlen || !ascii_ieq(arg, kwlen, is_rcpt ? "TO:" : "FROM:"))
		goto syntax_error;
	for (i = kwlen; i < len && s[i] == ' '; i++)
		;
	if (i >= len || s[i] != '<')
		goto syntax_error;
	i++;
	if (memchr(s + i, '>', len - i) == NULL)
		goto syntax_error;

	if (s[i] == '>') {
		/* RFC 5321 4.5.5: the null reverse-path, MAIL only */
		if (is_rcpt)
			goto address_error;
		out->null_path = true;
		mstart = i;
		close = i;
		goto params;
	}

	/* A-d-l: "@one,@two:" - obsolete but still to be accepted (C.) */
	if (s[i] == '@') {
		rstart = i;
		for (;;) {
			i++;
			n = domain_extent(s, i, len);
			if (!domain_ok(s + i, n, &has8))
				goto address_error;
			i += n;
			if (i < len && s[i] == ',') {
				i++;
				if (i >= len || s[i] != '@')
					goto address_error;
				continue;
			}
			if (i < len && s[i] == ':')
				break;
			goto address_error;
		}
		rlen = i - rstart;
		i++;
	}

	mstart = i;
	llen = local_part(s, i, len, &has8);
	if (llen == 0)
		goto address_error;
	i += llen;

	/* RFC 5321 4.1.1.3: RCPT TO:<Postmaster> without a domain */
	if (is_rcpt && rlen == 0 && i < len && s[i] == '>' &&
	    ascii_ieq(arg + mstart, llen, "Postmaster")) {
		out->postmaster = true;
		close = i;
		goto params;
	}

	if (i >= len || s[i] != '@')
		goto address_error;
	i++;
	dstart = i;
	dlen = mailbox_domain(s, i, len, &has8);
	if (dlen == 0)
		goto address_error;
	i += dlen;
	if (i >= len || s[i] != '>')
		goto address_error;
	close = i;

	if (llen > SMTP_LOCAL_PART_MAX || dlen > SMTP_DOMAIN_MAX)
		goto length_error;

params:
	/* RFC 5321 4.5.3.1.3: the path counts its angle brackets. */
	if (close - (rlen ? rstart : mstart) + 2 > SMTP_PATH_MAX)
		goto length_error;
	if (!parse_params(s, close + 1, len, out, &nomem)) {
		if (nomem)
			goto nomem_error;
		smtp_path_free(out);
		memset(out, 0, sizeof(*out));
		set_error(err, 501, "5.5.4", "Invalid parameter syntax");
		return -1;
	}

	out->utf8 = has8;
	out->path = dup_range(s + mstart, close - mstart);
	if (out->path == NULL)
		goto nomem_error;
	if (rlen > 0) {
		out->route = dup_range(s + rstart, rlen);
		if (out->route == NULL)
			goto nomem_error;
	}
	if (llen > 0) {
		out->local = dup_range(s + mstart, llen);
		if (out->local == NULL)
			goto nomem_error;
	}
	if (dlen > 0) {
		out->domain = dup_range(s + dstart, dlen);
		if (out->domain == NULL)
			goto nomem_error;
	}
	return 0;

syntax_error:
	set_error(err, 501, "5.5.4", syntax);
	return -1;
address_error:
	set_error(err, 501, aenh, bad);
	return -1;
length_error:
	set_error(err, 501, aenh, toolong);
	return -1;
nomem_error:
	smtp_path_free(out);
	memset(out, 0, sizeof(*out));
	set_error(err, 452, "4.3.1", "Insufficient system storage");
	return -1;
}

/* smtp_path_param - the parameter with this keyword (case-insensitive) */
const struct smtp_param *smtp_path_param(const struct smtp_path *path,
					 const char *keyword)
{
	size_t i;

	if (path == NULL || keyword == NULL)
		return NULL;
	for (i = 0; i < path->nparams && i < SMTP_MAX_PARAMS; i++) {
		const char *k = path->params[i].keyword;

		if (k != NULL && ascii_ieq(k, strlen(k), keyword))
			return &path->params[i];
	}
	return NULL;
}

/* smtp_params_text - the parameters as one string (see smtp.h) */
char *smtp_params_text(const struct smtp_param *params, size_t n)
{
	size_t len = 1;
	char *out, *o;

	for (size_t i = 0; i < n; i++)
		len += strlen(params[i].keyword) + 2 +
		       (params[i].value ? strlen(params[i].value) : 0);
	if (!(o = out = malloc(len)))
		return NULL;
	for (size_t i = 0; i < n; i++) {
		size_t k = strlen(params[i].keyword);

		if (i)
			*o++ = ' ';
		memcpy(o, params[i].keyword, k);
		o += k;
		if (params[i].value) {
			size_t v = strlen(params[i].value);

			*o++ = '=';
			memcpy(o, params[i].value, v);
			o += v;
		}
	}
	*o = 0;
	return out;
}

/* ---- ESMTP parameters of MAIL and RCPT ---- */

const struct smtp_error smtp_error_too_big = {
	552, "5.3.4", "Message size exceeds fixed maximum message size"
};

/* RFC 6531 3.4: a UTF-8 mailbox only in a transaction that said SMTPUTF8. */
static const struct smtp_error error_utf8 = {
	553, "5.6.7", "Error: UTF-8 address needs the SMTPUTF8 parameter"
};

/* value_is - whether v is one of the words (case-insensitive), NULL-ended */
static bool value_is(const char *v, const char *const *words)
{
	if (v == NULL)
		return false;
	for (; *words != NULL; words++) {
		if (ascii_ieq(v, strlen(v), *words))
			return true;
	}
	return false;
}

/* decimal - v as a decimal number; false when it is not one or overflows */
static bool decimal(const char *v, unsigned long long *out)
{
	unsigned long long n = 0;

	if (v == NULL || *v == '\0')
		return false;
	for (; *v != '\0'; v++) {
		unsigned d = (unsigned)(*v - '0');

		if (!is_digit((unsigned char)*v) || n > (ULLONG_MAX - d) / 10)
			return false;
		n = n * 10 + d;
	}
	*out = n;
	return true;
}

/*
 * notify_ok - RFC 3461 4.1 NOTIFY: "NEVER", or SUCCESS, FAILURE and DELAY
 * separated by commas, each at most once (so the list is short)
 */
static bool notify_ok(const char *v)
{
	static const char *const words[] = { "SUCCESS", "FAILURE", "DELAY" };
	unsigned seen = 0;

	if (v == NULL || *v == '\0')
		return false;
	if (ascii_ieq(v, strlen(v), "NEVER"))
		return true;
	for (;;) {
		size_t n = strcspn(v, ",");
		size_t w;

		for (w = 0; w < 3 && !ascii_ieq(v, n, words[w]); w++)
			;
		if (w == 3 || (seen & (1u << w)))
			return false;
		seen |= 1u << w;
		if (v[n] == '\0')
			return true;
		v += n + 1;
	}
}

/* size_ok - RFC 1870 SIZE=: a decimal number of bytes */
static bool size_ok(const char *v)
{
	unsigned long long size;

	return decimal(v, &size);
}

/* body_ok - RFC 6152 BODY=7BIT or BODY=8BITMIME */
static bool body_ok(const char *v)
{
	static const char *const words[] = { "7BIT", "8BITMIME", NULL };

	return value_is(v, words);
}

/* no_value - RFC 6531 3.4: SMTPUTF8 is a bare keyword */
static bool no_value(const char *v)
{
	return v == NULL;
}

/* ret_ok - RFC 3461 4.3 RET=FULL or RET=HDRS */
static bool ret_ok(const char *v)
{
	static const char *const words[] = { "FULL", "HDRS", NULL };

	return value_is(v, words);
}

/* envid_ok - RFC 3461 4.4 ENVID=xtext of at most 100 bytes */
static bool envid_ok(const char *v)
{
	return v != NULL && strlen(v) <= 100 && smtp_xtext_valid(v);
}

/* orcpt_ok - RFC 3461 4.2 ORCPT=addr-type;xtext, at most 500 bytes */
static bool orcpt_ok(const char *v)
{
	const char *semi = v != NULL ? strchr(v, ';') : NULL;

	return semi != NULL && semi != v && strlen(v) <= 500 &&
	       smtp_xtext_valid(semi + 1);
}

/* The extension a parameter belongs to, for struct smtp_offer. */
enum param_ext { EXT_SIZE, EXT_8BITMIME, EXT_SMTPUTF8, EXT_DSN };

/* One ESMTP parameter the proxy knows, for MAIL or for RCPT. */
struct param_rule {
	const char *keyword;
	bool rcpt;
	enum param_ext ext;
	bool (*valid)(const char *value); /* value NULL: no '=' */
	const char *bad;		  /* the 501 text for a bad value */
};

static const struct param_rule param_rules[] = {
	{ "SIZE", false, EXT_SIZE, size_ok, "Bad SIZE parameter" },
	{ "BODY", false, EXT_8BITMIME, body_ok, "Unsupported BODY parameter" },
	{ "SMTPUTF8", false, EXT_SMTPUTF8, no_value, "SMTPUTF8 takes no value" },
	{ "RET", false, EXT_DSN, ret_ok, "Bad RET parameter" },
	{ "ENVID", false, EXT_DSN, envid_ok, "Bad ENVID parameter" },
	{ "NOTIFY", true, EXT_DSN, notify_ok, "Bad NOTIFY parameter" },
	{ "ORCPT", true, EXT_DSN, orcpt_ok, "Bad ORCPT parameter" },
};

/* param_offered - whether the extension of a parameter was offered */
static bool param_offered(const struct smtp_offer *o, enum param_ext ext)
{
	switch (ext) {
	case EXT_SIZE:
		return o->size;
	case EXT_8BITMIME:
		return o->eightbitmime;
	case EXT_SMTPUTF8:
		return o->smtputf8;
	case EXT_DSN:
		return o->dsn;
	}
	return false;
}

/* param_rule - the rule for a keyword of MAIL (rcpt false) or RCPT, or NULL */
static const struct param_rule *param_rule(const char *keyword, bool rcpt)
{
	for (size_t i = 0; i < sizeof(param_rules) / sizeof(param_rules[0]); i++) {
		if (param_rules[i].rcpt == rcpt &&
		    strcmp(param_rules[i].keyword, keyword) == 0)
			return &param_rules[i];
	}
	return NULL;
}

/*
 * params_check - the parameters of MAIL (rcpt false) or RCPT, each in
 * turn, then the UTF-8 of the path; size_max bounds SIZE=, *smtputf8
 * is set when SMTPUTF8 is among them
 */
static int params_check(const struct smtp_path *p, const struct smtp_offer *o,
			bool rcpt, unsigned long long size_max, bool *smtputf8,
			struct smtp_error *err)
{
	if (p->nparams > 0 && !o->esmtp) {
		set_error(err, 555, "5.5.4", "Parameters need EHLO, not HELO");
		return -1;
	}
	for (size_t i = 0; i < p->nparams && i < SMTP_MAX_PARAMS; i++) {
		const char *v = p->params[i].value;
		const struct param_rule *r = param_rule(p->params[i].keyword, rcpt);
		unsigned long long size;

		if (r == NULL || !param_offered(o, r->ext)) {
			set_error(err, 555, "5.5.4", "Unsupported parameter");
			return -1;
		}
		if (!r->valid(v)) {
			set_error(err, 501, "5.5.4", r->bad);
			return -1;
		}
		if (r->ext == EXT_SIZE && decimal(v, &size) && size > size_max) {
			set_error(err, smtp_error_too_big.code, smtp_error_too_big.enh,
				  smtp_error_too_big.text);
			return -1;
		}
		if (r->ext == EXT_SMTPUTF8)
			*smtputf8 = true;
	}
	if (p->utf8 && !*smtputf8) {
		set_error(err, error_utf8.code, error_utf8.enh, error_utf8.text);
		return -1;
	}
	return 0;
}

/* smtp_mail_params_check - MAIL's parameters and path */
int smtp_mail_params_check(const struct smtp_path *p, const struct smtp_offer *o,
			   unsigned long long size_max, bool *smtputf8,
			   struct smtp_error *err)
{
	*smtputf8 = false;
	return params_check(p, o, false, size_max, smtputf8, err);
}

/* smtp_rcpt_params_check - RCPT's parameters and path */
int smtp_rcpt_params_check(const struct smtp_path *p, const struct smtp_offer *o,
			   bool smtputf8, struct smtp_error *err)
{
	return params_check(p, o, true, 0, &smtputf8, err);
}

/* ---- replies ---- */

/* enh_number - one RFC 3463 subject or detail: 0-999, no leading zero */
static bool enh_number(const char **sp)
{
	const char *s = *sp;
	size_t n = 0;

	while (n < 4 && is_digit((unsigned char)s[n]))
		n++;
	if (n == 0 || n > 3 || (n > 1 && s[0] == '0'))
		return false;
	*sp = s + n;
	return true;
}

/* smtp_enh_valid - whether enh is a valid RFC 3463 enhanced status code */
bool smtp_enh_valid(const char *enh, int code)
{
	const char *s = enh;

	if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5'))
		return false;
	/* A code of 0 (not known yet) leaves the class unchecked. */
	if (code != 0 && s[0] - '0' != code / 100)
		return false;
	if (s[1] != '.')
		return false;
	s += 2;
	if (!enh_number(&s) || *s != '.')
		return false;
	s++;
	if (!enh_number(&s))
		return false;
	return *s == '\0';
}

/* reply_enh - copy a leading enhanced status code of text into enh */
static void reply_enh(struct smtp_reply *r, const char *text, size_t len)
{
	char buf[sizeof(r->enh)];
	size_t n = 0;

	/* RFC 2034 4: the code is followed by a space or ends the line. */
	while (n < len && text[n] != ' ' && n < sizeof(buf) - 1) {
		buf[n] = text[n];
		n++;
	}
	if (n < len && text[n] != ' ')
		return;
	buf[n] = '\0';
	if (smtp_enh_valid(buf, r->code))
		memcpy(r->enh, buf, n + 1);
}

/* smtp_reply_feed - add one reply line (without CRLF) to r */
int smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len)
{
	size_t tlen;
	char *text;
	bool last;
	int code;

	if (r->complete || r->nlines >= SMTP_REPLY_MAX_LINES)
		return -1;
	if (line == NULL || len < 3 || line[0] < '2' || line[0] > '5' ||
	    !is_digit((unsigned char)line[1]) || !is_digit((unsigned char)line[2]))
		return -1;
	if (len == 3 || line[3] == ' ')
		last = true;
	else if (line[3] == '-')
		last = false;
	else
		return -1;
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	/* RFC 5321 4.2.1: every line of a multi-line reply has one code. */
	if (r->nlines > 0 && code != r->code)
		return -1;

	if (len > SMTP_REPLY_LINE_MAX)
		len = SMTP_REPLY_LINE_MAX;
	tlen = len > 4 ? len - 4 : 0;
	text = malloc(tlen + 1);
	if (text == NULL)
		return -1;
	if (tlen > 0)
		memcpy(text, line + 4, tlen);
	text[tlen] = '\0';

	if (r->nlines == 0) {
		r->code = code;
		r->enh[0] = '\0';
		reply_enh(r, text, strlen(text));
	}
	r->lines[r->nlines++] = text;
	r->complete = last;
	return last ? 1 : 0;
}

/* smtp_reply_reset - free the lines and make r empty again */
void smtp_reply_reset(struct smtp_reply *r)
{
	size_t i;

	if (r == NULL)
		return;
	for (i = 0; i < r->nlines && i < SMTP_REPLY_MAX_LINES; i++)
		free(r->lines[i]);
	memset(r, 0, sizeof(*r));
}

/* A bounded writer with snprintf() semantics for smtp_reply_format(). */
struct writer {
	char *out;
	size_t cap;
	size_t len; /* what the full text needs */
};

/* put - append s[0..n) to w, as far as it fits */
static void put(struct writer *w, const char *s, size_t n)
{
	size_t room, k;

	if (w->cap > 0 && w->len < w->cap - 1) {
		room = w->cap - 1 - w->len;
		k = n < room ? n : room;
		memcpy(w->out + w->len, s, k);
	}
	w->len += n;
}

/* smtp_reply_format - write the reply as CRLF-terminated wire lines */
size_t smtp_reply_format(const struct smtp_reply *r, const char *default_enh,
			 char *out, size_t cap)
{
	struct writer w = { out, cap, 0 };
	size_t i, nlines;
	char code[4];
	const char *text, *enh = NULL;
	int c;

	if (out == NULL)
		w.cap = 0;
	if (r->code != 0) {
		c = r->code < 0 ? 0 : r->code % 1000;
		code[0] = (char)('0' + c / 100);
		code[1] = (char)('0' + c / 10 % 10);
		code[2] = (char)('0' + c % 10);
		code[3] = '\0';
		if (r->enh[0] == '\0' && default_enh != NULL &&
		    default_enh[0] != '\0')
			enh = default_enh;
		nlines = r->nlines > SMTP_REPLY_MAX_LINES ? SMTP_REPLY_MAX_LINES
							 : r->nlines;
		/* A reply with no text is still one line on the wire. */
		for (i = 0; i < (nlines ? nlines : 1); i++) {
			text = (i < nlines && r->lines[i]) ? r->lines[i] : "";
			put(&w, code, 3);
			put(&w, i + 1 < nlines ? "-" : " ", 1);
			if (enh != NULL) {
				put(&w, enh, strlen(enh));
				if (text[0] != '\0')
					put(&w, " ", 1);
			}
			put(&w, text, strlen(text));
			put(&w, "\r\n", 2);
		}
	}
	if (w.cap > 0)
		w.out[w.len < w.cap ? w.len : w.cap - 1] = '\0';
	return w.len;
}

/* ---- EHLO capabilities ---- */

/*
 * copy_attrs - the space-separated words of s into dst[cap]
 *
 * Runs of spaces become one; a word that does not fit is left out
 * whole, so no truncated attribute name is ever advertised.
 */
static void copy_attrs(char *dst, size_t cap, const char *s)
{
	size_t n = 0, wl;

	dst[0] = '\0';
	for (;;) {
		while (*s == ' ')
			s++;
		if (*s == '\0')
			return;
		for (wl = 0; s[wl] != '\0' && s[wl] != ' '; wl++)
			;
		if (n + (n > 0) + wl + 1 > cap)
			return;
		if (n > 0)
			dst[n++] = ' ';
		memcpy(dst + n, s, wl);
		n += wl;
		dst[n] = '\0';
		s += wl;
	}
}

/* parse_size - RFC 1870 SIZE argument; 0 when absent or not a number */
static unsigned long parse_size(const char *s)
{
	unsigned long v = 0;
	unsigned int d;

	if (!is_digit((unsigned char)*s))
		return 0;
	for (; is_digit((unsigned char)*s); s++) {
		d = (unsigned int)(*s - '0');
		if (v > (ULONG_MAX - d) / 10)
			return ULONG_MAX;
		v = v * 10 + d;
	}
	return (*s == '\0' || *s == ' ') ? v : 0;
}

/* smtp_caps_parse - fill caps from a complete 250 EHLO reply */
void smtp_caps_parse(const struct smtp_reply *r, struct smtp_caps *caps)
{
	size_t i, kl;
	const char *s, *rest;

	memset(caps, 0, sizeof(*caps));
	if (r == NULL || r->code != 250)
		return;
	for (i = 1; i < r->nlines && i < SMTP_REPLY_MAX_LINES; i++) {
		s = r->lines[i];
		if (s == NULL)
			continue;
		for (kl = 0; s[kl] != '\0' && s[kl] != ' '; kl++)
			;
		for (rest = s + kl; *rest == ' '; rest++)
			;
		if (ascii_ieq(s, kl, "PIPELINING")) {
			caps->pipelining = true;
		} else if (ascii_ieq(s, kl, "SIZE")) {
			caps->size = true;
			caps->size_limit = parse_size(rest);
		} else if (ascii_ieq(s, kl, "8BITMIME")) {
			caps->eightbitmime = true;
		} else if (ascii_ieq(s, kl, "SMTPUTF8")) {
			caps->smtputf8 = true;
		} else if (ascii_ieq(s, kl, "DSN")) {
			caps->dsn = true;
		} else if (ascii_ieq(s, kl, "ENHANCEDSTATUSCODES")) {
			caps->enhancedstatuscodes = true;
		} else if (ascii_ieq(s, kl, "STARTTLS")) {
			caps->starttls = true;
		} else if (ascii_ieq(s, kl, "CHUNKING")) {
			caps->chunking = true;
		} else if (ascii_ieq(s, kl, "XCLIENT")) {
			caps->xclient = true;
			copy_attrs(caps->xclient_attrs,
				   sizeof(caps->xclient_attrs), rest);
		} else if (ascii_ieq(s, kl, "XFORWARD")) {
			caps->xforward = true;
			copy_attrs(caps->xforward_attrs,
				   sizeof(caps->xforward_attrs), rest);
		} else if (ascii_ieq(s, kl, "AUTH")) {
			caps->auth = true;
			copy_attrs(caps->auth_mechs, sizeof(caps->auth_mechs), rest);
		}
	}
}

/* ---- message data ---- */

/*
 * Decoder states. Only a CRLF leads to DEC_BOL, and only DEC_BOL can see
 * the terminating dot, so "\n.\n", "\r.\r\n" and the like never end the
 * data (SMTP smuggling). The undecided bytes of DEC_CR (a CR) and
 * DEC_DOT / DEC_DOT_CR (a leading dot, and its CR) are held back here.
 */
enum {
	DEC_BOL = 0,	/* at a line start: after DATA's CRLF or a CRLF */
	DEC_MID,	/* inside a line */
	DEC_CR,		/* a CR held: CRLF or a bare CR? */
	DEC_DOT,	/* a dot held at a line start */
	DEC_DOT_CR,	/* ".\r" held at a line start: end of data? */
	DEC_DONE,	/* <CRLF>.<CRLF> seen */
};

/* smtp_data_decoder_init - start decoding one message */
void smtp_data_decoder_init(struct smtp_data_decoder *d, bool normalize)
{
	memset(d, 0, sizeof(*d));
	d->state = DEC_BOL;
	d->normalize = normalize;
}

/* emit_bare - write a bare CR or LF, or CRLF in its place */
static size_t emit_bare(struct smtp_data_decoder *d, char c, char *out)
{
	if (c == '\r')
		d->bare_cr = true;
	else
		d->bare_lf = true;
	if (d->normalize) {
		out[0] = '\r';
		out[1] = '\n';
		return 2;
	}
	out[0] = c;
	return 1;
}

/* smtp_data_decode - decode in[0..len) into out */
size_t smtp_data_decode(struct smtp_data_decoder *d, const char *in,
			size_t len, char *out, size_t *out_len)
{
	size_t i = 0, o = 0, run;
	unsigned char c;

	if (d->done)
		d->state = DEC_DONE;
	while (i < len && d->state != DEC_DONE) {
		c = (unsigned char)in[i];
		switch (d->state) {
		case DEC_BOL:
			if (c == '.') {
				d->state = DEC_DOT;
				i++;
			} else {
				d->state = DEC_MID;
			}
			break;
		case DEC_MID:
			if (c == '\r') {
				d->state = DEC_CR;
				i++;
			} else if (c == '\n') {
				o += emit_bare(d, '\n', out + o);
				i++;
			} else {
				/* copy the run of ordinary bytes at once */
				for (run = 1; i + run < len && in[i + run] != '\r' &&
					      in[i + run] != '\n'; run++)
					;
				memcpy(out + o, in + i, run);
				o += run;
				i += run;
			}
			break;
		case DEC_CR:
			if (c == '\n') {
				out[o++] = '\r';
				out[o++] = '\n';
				d->state = DEC_BOL;
				i++;
			} else {
				/* c is looked at again inside the line */
				o += emit_bare(d, '\r', out + o);
				d->state = DEC_MID;
			}
			break;
		case DEC_DOT:
			/*
			 * RFC 5321 4.5.2: a leading dot of a line that has
			 * more on it is removed; c is then content.
			 */
			if (c == '\r') {
				d->state = DEC_DOT_CR;
				i++;
			} else {
				d->state = DEC_MID;
			}
			break;
		case DEC_DOT_CR:
			if (c == '\n') {
				/* RFC 5321 4.1.1.4: <CRLF>.<CRLF> */
				d->state = DEC_DONE;
				d->done = true;
				i++;
			} else {
				/* ".\r" then not LF: the dot goes, CR is bare */
				o += emit_bare(d, '\r', out + o);
				d->state = DEC_MID;
			}
			break;
		default:
			/* a corrupted state: stop rather than guess */
			d->state = DEC_DONE;
			d->done = true;
			break;
		}
	}
	d->bytes_out += o;
	*out_len = o;
	return i;
}

/* Encoder states: what the last byte of content was. */
enum {
	ENC_BOL = 0,	/* at the start, or after CRLF */
	ENC_MID,	/* inside a line */
	ENC_CR,		/* after a CR */
};

/* smtp_data_encoder_init - start encoding one message */
void smtp_data_encoder_init(struct smtp_data_encoder *e)
{
	e->state = ENC_BOL;
}

/*
 * smtp_data_encode - dot-stuff in[0..len) into out (room: 2 * len)
 *
 * Only CRLF starts a line, as for the decoder: content with a bare LF or
 * CR is passed on as it is, so callers must refuse or normalize it first
 * (a backend that ends lines on bare LF would otherwise read "\n.\n").
 */
size_t smtp_data_encode(struct smtp_data_encoder *e, const char *in,
			size_t len, char *out)
{
	size_t i, o = 0;
	unsigned char c;

	for (i = 0; i < len; i++) {
		c = (unsigned char)in[i];
		/* RFC 5321 4.5.2: a line starting with a dot gets another */
		if (e->state == ENC_BOL && c == '.')
			out[o++] = '.';
		out[o++] = (char)c;
		if (c == '\r')
			e->state = ENC_CR;
		else if (c == '\n' && e->state == ENC_CR)
			e->state = ENC_BOL;
		else
			e->state = ENC_MID;
	}
	return o;
}

/* smtp_data_encode_end - write the end of data into out (room: 5) */
size_t smtp_data_encode_end(struct smtp_data_encoder *e, char *out)
{
	if (e->state == ENC_BOL) {
		memcpy(out, ".\r\n", 3);
		return 3;
	}
	memcpy(out, "\r\n.\r\n", 5);
	return 5;
}

/* ---- xtext ---- */

/* smtp_xtext_encode - RFC 3461 4 xtext for XCLIENT/XFORWARD values */
size_t smtp_xtext_encode(const char *in, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *s = (const unsigned char *)(in ? in : "");
	size_t need = 0, w = 0, n;
	bool full = (out == NULL || cap == 0);
	char buf[3];

	for (; *s != '\0'; s++) {
		if (*s < '!' || *s > '~' || *s == '+' || *s == '=') {
			buf[0] = '+';
			buf[1] = hex[*s >> 4];
			buf[2] = hex[*s & 0x0F];
			n = 3;
		} else {
			buf[0] = (char)*s;
			n = 1;
		}
		/* never cut a "+XX" in two: stop writing at the first miss */
		if (!full && w + n < cap) {
			memcpy(out + w, buf, n);
			w += n;
		} else {
			full = true;
		}
		need += n;
	}
	if (out != NULL && cap > 0)
		out[w] = '\0';
	return need;
}

/* is_upper_hex - RFC 3461 4 hexchar digit: 0-9 or upper-case A-F */
static bool is_upper_hex(unsigned char c)
{
	return is_digit(c) || (c >= 'A' && c <= 'F');
}

/* smtp_xtext_valid - whether s is valid xtext */
bool smtp_xtext_valid(const char *s)
{
	const unsigned char *u = (const unsigned char *)s;

	if (u == NULL)
		return false;
	while (*u != '\0') {
		if (*u == '+') {
			if (!is_upper_hex(u[1]) || !is_upper_hex(u[2]))
				return false;
			u += 3;
		} else if (*u >= '!' && *u <= '~' && *u != '=') {
			u++;
		} else {
			return false;
		}
	}
	return true;
}

/* ---- XCLIENT and XFORWARD attributes ---- */

static const char *const xattr_names[SMTP_XA_COUNT] = {
	[SMTP_XA_NAME] = "NAME",	 [SMTP_XA_ADDR] = "ADDR",
	[SMTP_XA_PORT] = "PORT",	 [SMTP_XA_PROTO] = "PROTO",
	[SMTP_XA_HELO] = "HELO",	 [SMTP_XA_LOGIN] = "LOGIN",
	[SMTP_XA_DESTADDR] = "DESTADDR", [SMTP_XA_DESTPORT] = "DESTPORT",
	[SMTP_XA_IDENT] = "IDENT",	 [SMTP_XA_SOURCE] = "SOURCE",
};

/* The 501 text of a bad value, one per attribute (the texts are static). */
static const char *const xattr_bad[SMTP_XA_COUNT] = {
	[SMTP_XA_NAME] = "Bad NAME syntax",	    [SMTP_XA_ADDR] = "Bad ADDR syntax",
	[SMTP_XA_PORT] = "Bad PORT syntax",	    [SMTP_XA_PROTO] = "Bad PROTO syntax",
	[SMTP_XA_HELO] = "Bad HELO syntax",	    [SMTP_XA_LOGIN] = "Bad LOGIN syntax",
	[SMTP_XA_DESTADDR] = "Bad DESTADDR syntax", [SMTP_XA_DESTPORT] = "Bad DESTPORT syntax",
	[SMTP_XA_IDENT] = "Bad IDENT syntax",	    [SMTP_XA_SOURCE] = "Bad SOURCE syntax",
};

/* smtp_xattr_name - the attribute's wire name */
const char *smtp_xattr_name(enum smtp_xattr a)
{
	return (unsigned)a < SMTP_XA_COUNT ? xattr_names[a] : "";
}

/* xtext_decode - RFC 3461 4 xtext of s[0..len) into out (cap > len); false if not xtext */
static bool xtext_decode(const char *s, size_t len, char *out, size_t cap)
{
	size_t w = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (w + 1 >= cap)
			return false;
		if (c == '+') {
			unsigned char h = i + 1 < len ? (unsigned char)s[i + 1] : 0;
			unsigned char l = i + 2 < len ? (unsigned char)s[i + 2] : 0;
			if (!is_upper_hex(h) || !is_upper_hex(l))
				return false;
			c = (unsigned char)(((is_digit(h) ? h - '0' : h - 'A' + 10) << 4) |
					    (is_digit(l) ? l - '0' : l - 'A' + 10));
			if (c == 0)
				return false; /* a NUL would cut the value short */
			i += 2;
		} else if (c < '!' || c > '~' || c == '=') {
			return false;
		}
		out[w++] = (char)c;
	}
	out[w] = '\0';
	return true;
}

/* xattr_printable - every byte visible ASCII (LOGIN, IDENT) */
static bool xattr_printable(const char *v)
{
	for (; *v; v++)
		if ((unsigned char)*v < '!' || (unsigned char)*v > '~')
			return false;
	return true;
}

/*
 * xattr_addr - ADDR, DESTADDR: IPv4, or "IPV6:" (any case) and IPv6, as
 * Postfix writes them; the value is rewritten in canonical form untagged
 */
static bool xattr_addr(char *v)
{
	unsigned char bin[16];
	char text[INET6_ADDRSTRLEN];
	int family = AF_INET;
	const char *p = v;

	if (strncasecmp(v, "IPV6:", 5) == 0) {
		family = AF_INET6;
		p = v + 5;
	}
	if (inet_pton(family, p, bin) != 1 || !inet_ntop(family, bin, text, sizeof(text)))
		return false;
	memcpy(v, text, strlen(text) + 1);
	return true;
}

/* xattr_port - PORT, DESTPORT: a decimal 0..65535 */
static bool xattr_port(const char *v)
{
	unsigned long n = 0;

	if (*v == '\0' || strlen(v) > 5)
		return false;
	for (; *v; v++) {
		if (!is_digit((unsigned char)*v))
			return false;
		n = n * 10 + (unsigned long)(*v - '0');
	}
	return n <= 65535;
}

/* xattr_proto - XCLIENT: SMTP or ESMTP; XFORWARD: a word of letters and digits */
static bool xattr_proto(char *v, bool xforward)
{
	if (!xforward)
		return strcasecmp(v, "SMTP") == 0 || strcasecmp(v, "ESMTP") == 0;
	if (*v == '\0' || strlen(v) > 64)
		return false;
	for (; *v; v++)
		if (!is_alnum((unsigned char)*v))
			return false;
	return true;
}

/* xattr_valid - whether a decoded value is of its attribute's kind */
static bool xattr_valid(enum smtp_xattr a, char *v, bool xforward)
{
	switch (a) {
	case SMTP_XA_NAME:
		return smtp_helo_valid(v, strlen(v), false) && v[0] != '[';
	case SMTP_XA_HELO:
		return smtp_helo_valid(v, strlen(v), false);
	case SMTP_XA_ADDR:
	case SMTP_XA_DESTADDR:
		return xattr_addr(v);
	case SMTP_XA_PORT:
	case SMTP_XA_DESTPORT:
		return xattr_port(v);
	case SMTP_XA_PROTO:
		return xattr_proto(v, xforward);
	case SMTP_XA_LOGIN:
	case SMTP_XA_IDENT:
		return xattr_printable(v);
	case SMTP_XA_SOURCE:
		return strcasecmp(v, "LOCAL") == 0 || strcasecmp(v, "REMOTE") == 0;
	case SMTP_XA_COUNT:
		break;
	}
	return false;
}

/* smtp_xattrs_parse - XCLIENT or XFORWARD attributes */
int smtp_xattrs_parse(const char *arg, size_t len, bool xforward,
		      struct smtp_xattrs *out, struct smtp_error *err)
{
	unsigned allowed = xforward ? SMTP_XFORWARD_ATTRS : SMTP_XCLIENT_ATTRS;
	size_t i = 0;
	bool any = false;

	memset(out, 0, sizeof(*out));
	*err = (struct smtp_error){ 501, "5.5.4",
				    xforward ? "Syntax: XFORWARD attribute=value..."
					     : "Syntax: XCLIENT attribute=value..." };
	while (i < len) {
		size_t start, eq, end;
		enum smtp_xattr a;

		while (i < len && (arg[i] == ' ' || arg[i] == '\t'))
			i++;
		if (i == len)
			break;
		start = i;
		while (i < len && arg[i] != ' ' && arg[i] != '\t')
			i++;
		end = i;
		for (eq = start; eq < end && arg[eq] != '='; eq++)
			;
		if (eq == end || eq == start)
			return -1;
		for (a = 0; a < SMTP_XA_COUNT; a++)
			if (ascii_ieq(arg + start, eq - start, xattr_names[a]))
				break;
		if (a == SMTP_XA_COUNT || !(allowed & (1u << a))) {
			err->text = xforward ? "Bad XFORWARD attribute name"
					     : "Bad XCLIENT attribute name";
			return -1;
		}
		err->text = xattr_bad[a];
		if (!xtext_decode(arg + eq + 1, end - eq - 1, out->value[a],
				  sizeof(out->value[a])))
			return -1;
		if (strcasecmp(out->value[a], "[UNAVAILABLE]") == 0)
			out->state[a] = SMTP_XV_UNAVAILABLE;
		else if (a == SMTP_XA_NAME && strcasecmp(out->value[a], "[TEMPUNAVAIL]") == 0)
			out->state[a] = SMTP_XV_TEMPUNAVAIL;
		else if (out->value[a][0] != '\0' && xattr_valid(a, out->value[a], xforward))
			out->state[a] = SMTP_XV_VALUE;
		else
			return -1;
		if (out->state[a] != SMTP_XV_VALUE)
			out->value[a][0] = '\0';
		any = true;
	}
	if (!any) {
		err->text = xforward ? "Syntax: XFORWARD attribute=value..."
				     : "Syntax: XCLIENT attribute=value...";
		return -1;
	}
	return 0;
}
