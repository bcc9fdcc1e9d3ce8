/*
 * milter_proto.c - the Sendmail milter protocol, version 6: packets in and out
 *
 * See milter_proto.h. Decoding walks each packet's data once with a
 * cursor that never passes its end; encoding appends whole packets or
 * nothing.
 */
#include "milter_proto.h"

#include <stdlib.h>
#include <string.h>

/* The most data an MTA packet may carry (libmilter's default limit). */
#define MILTER_SEND_MAX MILTER_MAX_DATA_SIZE

/* get32 - a 32-bit number in network order */
static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* put32 - write a 32-bit number in network order */
static void put32(unsigned char *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

enum milter_parse milter_packet_parse(const unsigned char *buf, size_t len,
				      size_t max, struct milter_packet *p,
				      const char **why)
{
	uint32_t n;

	*why = NULL;
	if (len < MILTER_LEN_BYTES)
		return MILTER_MORE;
	n = get32(buf);
	if (n == 0) {
		*why = "a packet of length 0 (no command)";
		return MILTER_MALFORMED;
	}
	if (n > max) {
		*why = "a packet longer than the most accepted";
		return MILTER_MALFORMED;
	}
	if (len - MILTER_LEN_BYTES < n)
		return MILTER_MORE;
	p->cmd = buf[MILTER_LEN_BYTES];
	p->data = buf + MILTER_LEN_BYTES + 1;
	p->len = n - 1;
	p->consumed = MILTER_LEN_BYTES + (size_t)n;
	return MILTER_DONE;
}

/* A cursor over one packet's data. */
struct cursor {
	const unsigned char *p, *end;
};

/* take_string - the NUL-terminated string at the cursor, or NULL when it has no NUL */
static const char *take_string(struct cursor *c)
{
	const unsigned char *nul = memchr(c->p, 0, (size_t)(c->end - c->p));
	const char *s = (const char *)c->p;

	if (nul == NULL)
		return NULL;
	c->p = nul + 1;
	return s;
}

/* take32 - a 32-bit number at the cursor; false when fewer than 4 bytes are left */
static bool take32(struct cursor *c, uint32_t *v)
{
	if (c->end - c->p < MILTER_LEN_BYTES)
		return false;
	*v = get32(c->p);
	c->p += MILTER_LEN_BYTES;
	return true;
}

/* digits - how many decimal digits start s (at most max+1, to tell "too many") */
static size_t digits(const char *s, size_t len, size_t max)
{
	size_t n = 0;

	while (n < len && n <= max && s[n] >= '0' && s[n] <= '9')
		n++;
	return n;
}

/*
 * decode_replycode - "550 5.7.1 text" or "550 text", the first line of a
 * multi-line "550-5.7.1 ...\r\n550 5.7.1 ..." reply; every line must
 * carry the same code
 */
static const char *decode_replycode(const char *s, size_t len, struct milter_reply *r)
{
	const char *line = s, *end = s + len, *eol, *t;
	size_t n, a, b;
	bool last = false;

	if (len < 3 || digits(s, len, 3) != 3 || (s[0] != '4' && s[0] != '5'))
		return "a reply code that is not 4xx or 5xx";
	r->code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	while (!last) {
		eol = memchr(line, '\r', (size_t)(end - line));
		if (eol == NULL)
			eol = end;
		if (end - line < 3 || memcmp(line, s, 3) != 0)
			return "a multi-line reply whose lines differ in code";
		t = line + 3;
		last = t == eol || *t == ' ';
		if (!last && *t != '-')
			return "a reply code not followed by a space or a hyphen";
		if (last != (eol == end))
			return "a multi-line reply with a last line that is not last";
		if (!last && (eol + 1 >= end || eol[1] != '\n'))
			return "a bare CR in a reply";
		for (const char *q = t; q < eol; q++)
			if ((unsigned char)*q < 0x20 || *q == 0x7f)
				return "a control character in a reply";
		if (t < eol)
			t++;
		if (line == s) {
			/* An enhanced code "c.sss.ddd" of the same class, then a space or the end. */
			n = (size_t)(eol - t);
			a = n >= 2 && t[0] == s[0] && t[1] == '.' ? digits(t + 2, n - 2, 3) : 0;
			b = a >= 1 && a <= 3 && 2 + a < n && t[2 + a] == '.' ?
				    digits(t + 3 + a, n - 3 - a, 3) : 0;
			if (b >= 1 && b <= 3 && (3 + a + b == n || t[3 + a + b] == ' ')) {
				memcpy(r->enh, t, 3 + a + b);
				r->enh[3 + a + b] = '\0';
				t += 3 + a + b;
				if (t < eol)
					t++;
			} else if (n >= 2 && (t[0] == '2' || t[0] == '4' || t[0] == '5') &&
				   t[1] == '.') {
				return "a malformed enhanced status code, or one of another class";
			}
			r->text = t;
			r->textlen = (size_t)(eol - t);
		}
		line = last ? end : eol + 2;
	}
	return NULL;
}

/* decode_optneg - the milter's answer to SMFIC_OPTNEG, with its macro lists */
static const char *decode_optneg(struct cursor *c, struct milter_reply *r)
{
	uint32_t where;
	const char *list;

	if (!take32(c, &r->version) || !take32(c, &r->actions) || !take32(c, &r->protocol))
		return "a negotiation shorter than its 12 bytes";
	while (c->p < c->end) {
		if (!take32(c, &where))
			return "a macro list without its stage";
		if (where >= MILTER_STAGES)
			return "a macro list for an unknown stage";
		if ((list = take_string(c)) == NULL)
			return "a macro list without its NUL";
		r->macros[where] = list;
	}
	return NULL;
}

const char *milter_reply_decode(const struct milter_packet *p, struct milter_reply *r)
{
	struct cursor c = { p->data, p->data + p->len };
	const char *why = NULL;

	memset(r, 0, sizeof(*r));
	r->cmd = p->cmd;
	switch (p->cmd) {
	case SMFIC_OPTNEG:
		why = decode_optneg(&c, r);
		break;
	case SMFIR_ACCEPT:
	case SMFIR_CONTINUE:
	case SMFIR_DISCARD:
	case SMFIR_REJECT:
	case SMFIR_TEMPFAIL:
	case SMFIR_SKIP:
	case SMFIR_PROGRESS:
	case SMFIR_CONN_FAIL:
	case SMFIR_SHUTDOWN:
		break;
	case SMFIR_REPLYCODE: {
		const char *s = take_string(&c);

		why = s == NULL ? "a reply code without its NUL" :
				  decode_replycode(s, strlen(s), r);
		break;
	}
	case SMFIR_INSHEADER:
	case SMFIR_CHGHEADER:
		if (!take32(&c, &r->index)) {
			why = "a header change without its index";
			break;
		}
		/* fall through */
	case SMFIR_ADDHEADER:
		r->name = take_string(&c);
		r->value = r->name ? take_string(&c) : NULL;
		if (r->value == NULL)
			why = "a header field without the NUL of its name or value";
		else if (r->name[0] == '\0')
			why = "a header field without a name";
		break;
	case SMFIR_ADDRCPT:
	case SMFIR_DELRCPT:
		if ((r->addr = take_string(&c)) == NULL)
			why = "a recipient without its NUL";
		break;
	case SMFIR_ADDRCPT_PAR:
	case SMFIR_CHGFROM:
		if ((r->addr = take_string(&c)) == NULL)
			why = "an address without its NUL";
		else if (c.p < c.end && (r->args = take_string(&c)) == NULL)
			why = "ESMTP arguments without their NUL";
		break;
	case SMFIR_REPLBODY:
		r->body = p->data;
		r->bodylen = p->len;
		c.p = c.end;
		break;
	case SMFIR_QUARANTINE:
		if ((r->reason = take_string(&c)) == NULL)
			why = "a quarantine reason without its NUL";
		break;
	default:
		return "an unknown reply";
	}
	if (why == NULL && c.p != c.end)
		why = "bytes after the reply's fields";
	if (why == NULL && (r->cmd == SMFIR_ADDRCPT || r->cmd == SMFIR_DELRCPT ||
			    r->cmd == SMFIR_ADDRCPT_PAR) && r->addr[0] == '\0')
		why = "an empty recipient";
	return why;
}

void milter_buf_free(struct milter_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/*
 * packet_begin - room for a packet of command cmd and n data bytes at the
 * end of b, its length and command written; the data goes at the pointer
 * returned (NULL: too long, or out of memory)
 */
static unsigned char *packet_begin(struct milter_buf *b, unsigned char cmd, size_t n)
{
	size_t need;

	if (n > MILTER_SEND_MAX)
		return NULL;
	need = b->len + MILTER_LEN_BYTES + 1 + n;
	if (need > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		unsigned char *d;

		while (cap < need)
			cap *= 2;
		if ((d = realloc(b->data, cap)) == NULL)
			return NULL;
		b->data = d;
		b->cap = cap;
	}
	put32(b->data + b->len, (uint32_t)(n + 1));
	b->data[b->len + MILTER_LEN_BYTES] = cmd;
	return b->data + b->len + MILTER_LEN_BYTES + 1;
}

/* packet_strings - a packet whose data is n strings, each with its NUL */
static int packet_strings(struct milter_buf *b, unsigned char cmd,
			  const char *const *s, size_t n)
{
	size_t total = 0, k;
	unsigned char *d;

	for (size_t i = 0; i < n; i++) {
		total += strlen(s[i]) + 1;
		if (total > MILTER_SEND_MAX)
			return -1;
	}
	if ((d = packet_begin(b, cmd, total)) == NULL)
		return -1;
	for (size_t i = 0; i < n; i++) {
		k = strlen(s[i]) + 1;
		memcpy(d, s[i], k);
		d += k;
	}
	b->len += MILTER_LEN_BYTES + 1 + total;
	return 0;
}

int milter_put_optneg(struct milter_buf *b, uint32_t version, uint32_t actions,
		      uint32_t protocol)
{
	unsigned char *d = packet_begin(b, SMFIC_OPTNEG, MILTER_OPTLEN);

	if (d == NULL)
		return -1;
	put32(d, version);
	put32(d + 4, actions);
	put32(d + 8, protocol);
	b->len += MILTER_LEN_BYTES + 1 + MILTER_OPTLEN;
	return 0;
}

int milter_put_macros(struct milter_buf *b, unsigned char cmd,
		      const char *const *names, const char *const *values, size_t n)
{
	size_t total = 1, kn, kv;
	unsigned char *d;

	for (size_t i = 0; i < n; i++) {
		total += strlen(names[i]) + strlen(values[i]) + 2;
		if (total > MILTER_SEND_MAX)
			return -1;
	}
	if ((d = packet_begin(b, SMFIC_MACRO, total)) == NULL)
		return -1;
	*d++ = cmd;
	for (size_t i = 0; i < n; i++) {
		kn = strlen(names[i]) + 1;
		kv = strlen(values[i]) + 1;
		memcpy(d, names[i], kn);
		memcpy(d + kn, values[i], kv);
		d += kn + kv;
	}
	b->len += MILTER_LEN_BYTES + 1 + total;
	return 0;
}

int milter_put_connect(struct milter_buf *b, const char *host, char family,
		       unsigned port, const char *addr)
{
	size_t hl = strlen(host) + 1, al = family == SMFIA_UNKNOWN ? 0 : strlen(addr) + 1;
	size_t total = hl + 1 + (family == SMFIA_UNKNOWN ? 0 : 2 + al);
	unsigned char *d;

	if (port > 65535 || (d = packet_begin(b, SMFIC_CONNECT, total)) == NULL)
		return -1;
	memcpy(d, host, hl);
	d[hl] = (unsigned char)family;
	if (family != SMFIA_UNKNOWN) {
		d[hl + 1] = port >> 8;
		d[hl + 2] = port & 0xff;
		memcpy(d + hl + 3, addr, al);
	}
	b->len += MILTER_LEN_BYTES + 1 + total;
	return 0;
}

int milter_put_helo(struct milter_buf *b, const char *helo)
{
	return packet_strings(b, SMFIC_HELO, &helo, 1);
}

int milter_put_args(struct milter_buf *b, unsigned char cmd,
		    const char *const *args, size_t n)
{
	return packet_strings(b, cmd, args, n);
}

int milter_put_header(struct milter_buf *b, const char *name, const char *value)
{
	const char *s[2] = { name, value };

	return packet_strings(b, SMFIC_HEADER, s, 2);
}

int milter_put_body(struct milter_buf *b, const void *data, size_t len)
{
	unsigned char *d;

	if (len > MILTER_BODY_CHUNK || (d = packet_begin(b, SMFIC_BODY, len)) == NULL)
		return -1;
	if (len)
		memcpy(d, data, len);
	b->len += MILTER_LEN_BYTES + 1 + len;
	return 0;
}

int milter_put_empty(struct milter_buf *b, unsigned char cmd)
{
	if (packet_begin(b, cmd, 0) == NULL)
		return -1;
	b->len += MILTER_LEN_BYTES + 1;
	return 0;
}
