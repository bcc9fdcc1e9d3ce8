/*
 * test_milter_proto.c - unit tests of the milter protocol codec
 *
 * The packets the milter filter sends, byte for byte as libmilter reads
 * them, and every kind of reply a milter may send, well-formed and
 * malformed, with the reason each malformed one is refused for.
 */
#include <stdlib.h>
#include <string.h>

#include "milter_proto.h"
#include "unit.h"

/* packet - a packet of command cmd and n data bytes, framed, in out (returns its size) */
static size_t packet(unsigned char *out, unsigned char cmd, const void *data, size_t n)
{
	out[0] = (n + 1) >> 24;
	out[1] = (n + 1) >> 16;
	out[2] = (n + 1) >> 8;
	out[3] = (n + 1) & 0xff;
	out[4] = cmd;
	memcpy(out + 5, data, n);
	return n + 5;
}

/* decode - decode cmd with data (n bytes) as a reply; the reason or NULL */
static const char *decode(unsigned char cmd, const void *data, size_t n, struct milter_reply *r)
{
	struct milter_packet p = { cmd, data, n, n + 5 };

	return milter_reply_decode(&p, r);
}

static void test_packet_needs_all_its_bytes(void)
{
	unsigned char buf[64];
	size_t n = packet(buf, SMFIR_ADDHEADER, "X-A\0b\0", 6);
	struct milter_packet p;
	const char *why;

	for (size_t k = 0; k < n; k++)
		CHECK_INT_EQ(milter_packet_parse(buf, k, MILTER_REPLY_MAX, &p, &why), MILTER_MORE);
	CHECK_INT_EQ(milter_packet_parse(buf, n, MILTER_REPLY_MAX, &p, &why), MILTER_DONE);
	CHECK_UINT_EQ(p.consumed, n);
	CHECK_INT_EQ(p.cmd, SMFIR_ADDHEADER);
	CHECK_MEM_EQ(p.data, p.len, "X-A\0b\0", 6);
	/* What follows is the next packet's, untouched. */
	buf[n] = 0;
	CHECK_INT_EQ(milter_packet_parse(buf, n + 1, MILTER_REPLY_MAX, &p, &why), MILTER_DONE);
	CHECK_UINT_EQ(p.consumed, n);
}

static void test_packet_length_refused_at_once(void)
{
	/* 1 GiB announced: refused when the 4 length bytes are there. */
	unsigned char big[4] = { 0x40, 0, 0, 0 }, zero[5] = { 0, 0, 0, 0, 'c' };
	struct milter_packet p;
	const char *why;

	CHECK_INT_EQ(milter_packet_parse(big, 4, MILTER_REPLY_MAX, &p, &why), MILTER_MALFORMED);
	CHECK_STR_EQ(why, "a packet longer than the most accepted");
	CHECK_INT_EQ(milter_packet_parse(zero, 5, MILTER_REPLY_MAX, &p, &why), MILTER_MALFORMED);
	CHECK_STR_EQ(why, "a packet of length 0 (no command)");
	big[0] = 0;
	big[1] = 0x10;
	big[2] = 0;
	big[3] = 1; /* 1 MiB + 1 */
	CHECK_INT_EQ(milter_packet_parse(big, 4, MILTER_REPLY_MAX, &p, &why), MILTER_MALFORMED);
	big[3] = 0; /* exactly 1 MiB: waits for it */
	CHECK_INT_EQ(milter_packet_parse(big, 4, MILTER_REPLY_MAX, &p, &why), MILTER_MORE);
}

static void test_simple_replies(void)
{
	const unsigned char kinds[] = { SMFIR_ACCEPT, SMFIR_CONTINUE, SMFIR_DISCARD,
					SMFIR_REJECT, SMFIR_TEMPFAIL, SMFIR_SKIP,
					SMFIR_PROGRESS, SMFIR_CONN_FAIL, SMFIR_SHUTDOWN };
	struct milter_reply r;

	for (size_t i = 0; i < sizeof(kinds); i++) {
		CHECK_NULL(decode(kinds[i], "", 0, &r));
		CHECK_INT_EQ(r.cmd, kinds[i]);
		CHECK_STR_EQ(decode(kinds[i], "x", 1, &r), "bytes after the reply's fields");
	}
	CHECK_STR_EQ(decode('Z', "", 0, &r), "an unknown reply");
	CHECK_STR_EQ(decode(SMFIR_SETSYMLIST, "", 0, &r), "an unknown reply");
}

static void test_optneg(void)
{
	unsigned char d[64] = { 0, 0, 0, 6, 0, 0, 0, 0x21, 0, 0, 0, 0x10 };
	struct milter_reply r;
	size_t n = 12;

	CHECK_NULL(decode(SMFIC_OPTNEG, d, 12, &r));
	CHECK_UINT_EQ(r.version, 6);
	CHECK_UINT_EQ(r.actions, SMFIF_ADDHDRS | SMFIF_QUARANTINE);
	CHECK_UINT_EQ(r.protocol, SMFIP_NOBODY);
	for (int i = 0; i < MILTER_STAGES; i++)
		CHECK_NULL(r.macros[i]);
	/* Macro lists: where, then the names. */
	memcpy(d + n, "\0\0\0\0{daemon_name} j\0", 20);
	n += 20;
	memcpy(d + n, "\0\0\0\5i\0", 6);
	n += 6;
	CHECK_NULL(decode(SMFIC_OPTNEG, d, n, &r));
	CHECK_STR_EQ(r.macros[SMFIM_CONNECT], "{daemon_name} j");
	CHECK_STR_EQ(r.macros[SMFIM_EOM], "i");
	CHECK_NULL(r.macros[SMFIM_HELO]);
	CHECK_STR_EQ(decode(SMFIC_OPTNEG, d, 11, &r), "a negotiation shorter than its 12 bytes");
	CHECK_STR_EQ(decode(SMFIC_OPTNEG, d, 14, &r), "a macro list without its stage");
	CHECK_STR_EQ(decode(SMFIC_OPTNEG, d, n - 1, &r), "a macro list without its NUL");
	d[12 + 3] = 7;
	CHECK_STR_EQ(decode(SMFIC_OPTNEG, d, n, &r), "a macro list for an unknown stage");
}

/* replycode - decode a REPLYCODE of text s; the reason or NULL */
static const char *replycode(const char *s, struct milter_reply *r)
{
	return decode(SMFIR_REPLYCODE, s, strlen(s) + 1, r);
}

static void test_replycode(void)
{
	struct milter_reply r;

	CHECK_NULL(replycode("550 5.7.1 Command rejected", &r));
	CHECK_INT_EQ(r.code, 550);
	CHECK_STR_EQ(r.enh, "5.7.1");
	CHECK_MEM_EQ(r.text, r.textlen, "Command rejected", 16);

	CHECK_NULL(replycode("451 4.7.100 Try later", &r));
	CHECK_STR_EQ(r.enh, "4.7.100");
	CHECK_NULL(replycode("554 No enhanced code", &r));
	CHECK_STR_EQ(r.enh, "");
	CHECK_MEM_EQ(r.text, r.textlen, "No enhanced code", 16);
	CHECK_NULL(replycode("550 5.7.1", &r));
	CHECK_UINT_EQ(r.textlen, 0);
	CHECK_NULL(replycode("550", &r));
	CHECK_NULL(replycode("550 1.2.3.4 is listed", &r));
	CHECK_STR_EQ(r.enh, "");

	/* Multi-line: the first line's text, every line checked. */
	CHECK_NULL(replycode("550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third", &r));
	CHECK_INT_EQ(r.code, 550);
	CHECK_STR_EQ(r.enh, "5.7.1");
	CHECK_MEM_EQ(r.text, r.textlen, "first", 5);
	CHECK_STR_EQ(replycode("550-5.7.1 a\r\n451 4.7.1 b", &r),
		     "a multi-line reply whose lines differ in code");
	CHECK_STR_EQ(replycode("550-5.7.1 a\r\n", &r),
		     "a multi-line reply whose lines differ in code");
	CHECK_STR_EQ(replycode("550 5.7.1 a\r\n550 5.7.1 b", &r),
		     "a multi-line reply with a last line that is not last");
	CHECK_STR_EQ(replycode("550-5.7.1 a\r550 b", &r), "a bare CR in a reply");

	CHECK_STR_EQ(replycode("250 2.0.0 Ok", &r), "a reply code that is not 4xx or 5xx");
	CHECK_STR_EQ(replycode("5x0 text", &r), "a reply code that is not 4xx or 5xx");
	CHECK_STR_EQ(replycode("55", &r), "a reply code that is not 4xx or 5xx");
	CHECK_STR_EQ(replycode("550x text", &r),
		     "a reply code not followed by a space or a hyphen");
	CHECK_STR_EQ(replycode("550 4.7.1 class differs", &r),
		     "a malformed enhanced status code, or one of another class");
	CHECK_STR_EQ(replycode("550 5.7777.1 long", &r),
		     "a malformed enhanced status code, or one of another class");
	CHECK_STR_EQ(replycode("550 5.7. x", &r),
		     "a malformed enhanced status code, or one of another class");
	CHECK_STR_EQ(replycode("550 5.7.1 tab\there", &r), "a control character in a reply");
	CHECK_STR_EQ(decode(SMFIR_REPLYCODE, "550 x", 5, &r), "a reply code without its NUL");
	CHECK_STR_EQ(decode(SMFIR_REPLYCODE, "550 x\0y", 7, &r), "bytes after the reply's fields");
}

static void test_header_changes(void)
{
	struct milter_reply r;

	CHECK_NULL(decode(SMFIR_ADDHEADER, "X-Spam\0yes\0", 11, &r));
	CHECK_STR_EQ(r.name, "X-Spam");
	CHECK_STR_EQ(r.value, "yes");
	CHECK_NULL(decode(SMFIR_INSHEADER, "\0\0\0\2X-A\0v\0", 10, &r));
	CHECK_UINT_EQ(r.index, 2);
	CHECK_STR_EQ(r.name, "X-A");
	CHECK_NULL(decode(SMFIR_CHGHEADER, "\0\0\0\1Subject\0\0", 13, &r));
	CHECK_UINT_EQ(r.index, 1);
	CHECK_STR_EQ(r.value, ""); /* an empty value deletes */

	CHECK_STR_EQ(decode(SMFIR_ADDHEADER, "X-Spam\0yes", 10, &r),
		     "a header field without the NUL of its name or value");
	CHECK_STR_EQ(decode(SMFIR_ADDHEADER, "X-Spam", 6, &r),
		     "a header field without the NUL of its name or value");
	CHECK_STR_EQ(decode(SMFIR_ADDHEADER, "\0v\0", 3, &r), "a header field without a name");
	CHECK_STR_EQ(decode(SMFIR_CHGHEADER, "\0\0\0", 3, &r), "a header change without its index");
	CHECK_STR_EQ(decode(SMFIR_ADDHEADER, "A\0b\0c", 5, &r), "bytes after the reply's fields");
}

static void test_envelope_changes(void)
{
	struct milter_reply r;

	CHECK_NULL(decode(SMFIR_ADDRCPT, "<a@example.org>\0", 16, &r));
	CHECK_STR_EQ(r.addr, "<a@example.org>");
	CHECK_NULL(r.args);
	CHECK_NULL(decode(SMFIR_DELRCPT, "b@example.org\0", 14, &r));
	CHECK_STR_EQ(r.addr, "b@example.org");
	CHECK_NULL(decode(SMFIR_ADDRCPT_PAR, "<c@example.org>\0NOTIFY=NEVER\0", 29, &r));
	CHECK_STR_EQ(r.args, "NOTIFY=NEVER");
	CHECK_NULL(decode(SMFIR_ADDRCPT_PAR, "<c@example.org>\0", 16, &r));
	CHECK_NULL(r.args);
	CHECK_NULL(decode(SMFIR_CHGFROM, "<>\0", 3, &r));
	CHECK_STR_EQ(r.addr, "<>");
	CHECK_NULL(decode(SMFIR_CHGFROM, "<s@example.org>\0SIZE=10\0", 24, &r));
	CHECK_STR_EQ(r.args, "SIZE=10");

	CHECK_STR_EQ(decode(SMFIR_ADDRCPT, "x", 1, &r), "a recipient without its NUL");
	CHECK_STR_EQ(decode(SMFIR_ADDRCPT, "\0", 1, &r), "an empty recipient");
	CHECK_STR_EQ(decode(SMFIR_DELRCPT, "a\0b\0", 4, &r), "bytes after the reply's fields");
	CHECK_STR_EQ(decode(SMFIR_CHGFROM, "<s>", 3, &r), "an address without its NUL");
	CHECK_STR_EQ(decode(SMFIR_CHGFROM, "<s>\0SIZE", 8, &r), "ESMTP arguments without their NUL");
	CHECK_STR_EQ(decode(SMFIR_ADDRCPT_PAR, "<s>\0A\0B\0", 8, &r),
		     "bytes after the reply's fields");
}

static void test_body_and_quarantine(void)
{
	struct milter_reply r;

	CHECK_NULL(decode(SMFIR_REPLBODY, "new\r\nbody\0\1", 11, &r));
	CHECK_MEM_EQ(r.body, r.bodylen, "new\r\nbody\0\1", 11);
	CHECK_NULL(decode(SMFIR_REPLBODY, "", 0, &r));
	CHECK_UINT_EQ(r.bodylen, 0);
	CHECK_NULL(decode(SMFIR_QUARANTINE, "virus found\0", 12, &r));
	CHECK_STR_EQ(r.reason, "virus found");
	CHECK_STR_EQ(decode(SMFIR_QUARANTINE, "virus", 5, &r),
		     "a quarantine reason without its NUL");
}

static void test_commands_as_bytes(void)
{
	struct milter_buf b = { 0 };
	const char *args[2] = { "<s@example.org>", "SIZE=100" };
	const char *names[2] = { "j", "{daemon_name}" }, *values[2] = { "mx.example.org", "pc" };
	unsigned char want[512];
	size_t n = 0;

	CHECK_INT_EQ(milter_put_optneg(&b, 6, 0x1ff, 0x1fffff), 0);
	n += packet(want + n, 'O', "\0\0\0\6\0\0\1\xff\0\x1f\xff\xff", 12);
	CHECK_INT_EQ(milter_put_macros(&b, SMFIC_CONNECT, names, values, 2), 0);
	n += packet(want + n, 'D', "Cj\0mx.example.org\0{daemon_name}\0pc\0", 35);
	CHECK_INT_EQ(milter_put_connect(&b, "client.example", SMFIA_INET, 25, "192.0.2.1"), 0);
	n += packet(want + n, 'C', "client.example\0" "4\0\x19" "192.0.2.1\0", 28);
	CHECK_INT_EQ(milter_put_connect(&b, "[UNAVAILABLE]", SMFIA_UNKNOWN, 0, NULL), 0);
	n += packet(want + n, 'C', "[UNAVAILABLE]\0U", 15);
	CHECK_INT_EQ(milter_put_helo(&b, "client.example"), 0);
	n += packet(want + n, 'H', "client.example\0", 15);
	CHECK_INT_EQ(milter_put_args(&b, SMFIC_MAIL, args, 2), 0);
	n += packet(want + n, 'M', "<s@example.org>\0SIZE=100\0", 25);
	CHECK_INT_EQ(milter_put_header(&b, "Subject", " hi"), 0);
	n += packet(want + n, 'L', "Subject\0 hi\0", 12);
	CHECK_INT_EQ(milter_put_body(&b, "a\r\nb\r\n", 6), 0);
	n += packet(want + n, 'B', "a\r\nb\r\n", 6);
	CHECK_INT_EQ(milter_put_empty(&b, SMFIC_BODYEOB), 0);
	n += packet(want + n, 'E', "", 0);
	CHECK_MEM_EQ(b.data, b.len, want, n);
	milter_buf_free(&b);
}

static void test_commands_too_long(void)
{
	struct milter_buf b = { 0 };
	char *big = calloc(1, 70000);

	CHECK_NOT_NULL(big);
	if (big == NULL)
		return;
	CHECK_INT_EQ(milter_put_body(&b, big, MILTER_BODY_CHUNK), 0);
	CHECK_UINT_EQ(b.len, MILTER_BODY_CHUNK + 5);
	CHECK_INT_EQ(milter_put_body(&b, big, MILTER_BODY_CHUNK + 1), -1);
	memset(big, 'a', 69999);
	big[69999] = '\0';
	CHECK_INT_EQ(milter_put_helo(&b, big), -1);
	CHECK_INT_EQ(milter_put_header(&b, "X", big), -1);
	CHECK_UINT_EQ(b.len, MILTER_BODY_CHUNK + 5); /* unchanged */
	milter_buf_free(&b);
	free(big);
}

int main(void)
{
	RUN(test_packet_needs_all_its_bytes);
	RUN(test_packet_length_refused_at_once);
	RUN(test_simple_replies);
	RUN(test_optneg);
	RUN(test_replycode);
	RUN(test_header_changes);
	RUN(test_envelope_changes);
	RUN(test_body_and_quarantine);
	RUN(test_commands_as_bytes);
	RUN(test_commands_too_long);
	return unit_summary();
}
