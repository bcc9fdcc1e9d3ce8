/*
 * fuzz_milter.c - libFuzzer target for the milter protocol codec
 *
 * What a milter sends back is read by the milter filter on a worker's
 * thread, from a peer that vouched for nothing. The input is taken as a
 * stream of packets, each read with milter_packet_parse() from an
 * exact-size copy of what is left, and decoded with milter_reply_decode():
 *  - nothing crashes or reads past the input;
 *  - a whole packet consumed its length field's worth and at most what
 *    was there; a prefix of a packet is "more", never a different packet;
 *    a length over the maximum is refused from its 4 bytes alone;
 *  - a decoded reply's strings lie inside its packet and end there with
 *    their NUL; a reply code is 4xx or 5xx and its enhanced code, when
 *    there is one, of the same class; the text lies inside the packet;
 *  - a malformed reply says why.
 * The other direction: the first bytes, taken as strings, are sent as
 * each kind of command and read back: the framing gives the same command
 * and exactly the data the strings make.
 * Build and run it with tests/fuzz/run-fuzz.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "milter_proto.h"
#include "fuzz.h"

/* inside - s and its NUL lie inside [d, d + n) */
static int inside(const char *s, const unsigned char *d, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;

	return p >= d && p < d + n && memchr(p, 0, (size_t)(d + n - p)) != NULL;
}

/* check_reply - the properties of one decoded packet */
static void check_reply(const struct milter_packet *p)
{
	struct milter_reply r;
	const char *why = milter_reply_decode(p, &r);

	if (why != NULL) {
		must(why[0] != '\0');
		return;
	}
	must(r.cmd == p->cmd);
	for (int i = 0; i < MILTER_STAGES; i++)
		must(r.macros[i] == NULL || inside(r.macros[i], p->data, p->len));
	switch (p->cmd) {
	case SMFIR_REPLYCODE:
		must(r.code >= 400 && r.code <= 599);
		must(r.enh[0] == '\0' || r.enh[0] == '0' + r.code / 100);
		must((const unsigned char *)r.text >= p->data &&
		     (const unsigned char *)r.text + r.textlen <= p->data + p->len);
		must(memchr(r.text, '\r', r.textlen) == NULL);
		break;
	case SMFIR_ADDHEADER:
	case SMFIR_INSHEADER:
	case SMFIR_CHGHEADER:
		must(inside(r.name, p->data, p->len) && r.name[0] != '\0');
		must(inside(r.value, p->data, p->len));
		break;
	case SMFIR_ADDRCPT:
	case SMFIR_DELRCPT:
	case SMFIR_ADDRCPT_PAR:
	case SMFIR_CHGFROM:
		must(inside(r.addr, p->data, p->len));
		must(r.args == NULL || inside(r.args, p->data, p->len));
		break;
	case SMFIR_QUARANTINE:
		must(inside(r.reason, p->data, p->len));
		break;
	case SMFIR_REPLBODY:
		must(r.body == p->data && r.bodylen == p->len);
		break;
	default:
		break;
	}
}

/* replies - read the input as a stream of reply packets */
static void replies(const uint8_t *data, size_t size)
{
	size_t off = 0;

	while (off < size) {
		size_t n = size - off;
		unsigned char *copy = malloc(n);
		struct milter_packet p;
		const char *why;
		enum milter_parse st;

		must(copy != NULL);
		memcpy(copy, data + off, n);
		st = milter_packet_parse(copy, n, MILTER_REPLY_MAX, &p, &why);
		must((st == MILTER_MALFORMED) == (why != NULL));
		if (st == MILTER_MALFORMED)
			must(n >= 4); /* decided from the length alone */
		if (st == MILTER_DONE) {
			must(p.consumed == p.len + 5 && p.consumed <= n);
			must(p.data == copy + 5);
			/* A prefix is "more", never another packet. */
			must(milter_packet_parse(copy, p.consumed - 1, MILTER_REPLY_MAX,
						 &p, &why) == MILTER_MORE);
			st = milter_packet_parse(copy, n, MILTER_REPLY_MAX, &p, &why);
			check_reply(&p);
			off += p.consumed;
		}
		free(copy);
		if (st != MILTER_DONE)
			break;
	}
}

/* commands - the first bytes as up to four strings, sent and read back */
static void commands(const uint8_t *data, size_t size)
{
	char *s[4] = { 0 };
	size_t n = size < 512 ? size : 512, start = 0, k = 0, want = 0;
	char *buf = malloc(n + 1);
	struct milter_buf b = { 0 };
	struct milter_packet p;
	const char *why;

	must(buf != NULL);
	memcpy(buf, data, n);
	buf[n] = '\0';
	for (size_t i = 0; i <= n && k < 4; i++)
		if (buf[i] == '\0') {
			s[k++] = buf + start;
			want += i - start + 1;
			start = i + 1;
		}
	must(k >= 1);
	must(milter_put_args(&b, SMFIC_RCPT, (const char *const *)s, k) == 0);
	must(milter_packet_parse(b.data, b.len, MILTER_REPLY_MAX, &p, &why) == MILTER_DONE);
	must(p.cmd == SMFIC_RCPT && p.consumed == b.len && p.len == want);
	must(memcmp(p.data, buf, want) == 0);
	b.len = 0;
	must(milter_put_body(&b, data, n) == 0);
	must(milter_packet_parse(b.data, b.len, MILTER_REPLY_MAX, &p, &why) == MILTER_DONE);
	must(p.cmd == SMFIC_BODY && p.len == n && (n == 0 || memcmp(p.data, data, n) == 0));
	milter_buf_free(&b);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65536)
		return 0;
	replies(data, size);
	commands(data, size);
	return 0;
}
