/*
 * test_proxyproto.c - the PROXY protocol header decoder (proxy/proxyproto.c)
 *
 * Every answer of proxyproto_parse(): v1 lines for TCP4, TCP6 and
 * UNKNOWN, v2 blocks for PROXY over IPv4 and IPv6 (with TLVs), LOCAL,
 * the unspecified and Unix families; every prefix of a valid header is
 * "more", never "done" or "malformed"; and a table of malformed headers,
 * each with the reason a decision record will carry.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "proxyproto.h"
#include "unit.h"

static const unsigned char sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				       0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

/* v2 - a v2 header: ver_cmd, fam, then body of blen bytes; its length */
static size_t v2(unsigned char *out, unsigned ver_cmd, unsigned fam,
		 const unsigned char *body, size_t blen)
{
	memcpy(out, sig, 12);
	out[12] = (unsigned char)ver_cmd;
	out[13] = (unsigned char)fam;
	out[14] = (unsigned char)(blen >> 8);
	out[15] = (unsigned char)(blen & 0xff);
	if (blen)
		memcpy(out + 16, body, blen);
	return 16 + blen;
}

/* v2_inet - a PROXY TCP4 body 192.0.2.7:53428 -> 198.51.100.1:25, extra bytes after */
static size_t v2_inet(unsigned char *body, const unsigned char *extra, size_t n)
{
	static const unsigned char a[12] = { 192, 0, 2, 7, 198, 51, 100, 1,
					     0xd0, 0xb4, 0, 25 };
	memcpy(body, a, 12);
	if (n)
		memcpy(body + 12, extra, n);
	return 12 + n;
}

/* addr_of - the numeric text and port of a result's address */
static void addr_of(const struct sockaddr_storage *ss, char *text, unsigned *port)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &in->sin_addr, text, INET6_ADDRSTRLEN);
		*port = ntohs(in->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, text, INET6_ADDRSTRLEN);
		*port = ntohs(in6->sin6_port);
	} else {
		strcpy(text, "?");
		*port = 0;
	}
}

/* parse_str - parse a C string with the versions given */
static enum proxyproto_status parse_str(const char *s, unsigned versions,
					struct proxyproto_result *r)
{
	return proxyproto_parse((const unsigned char *)s, strlen(s), versions, r);
}

/* every_prefix_is_more - each proper prefix of buf answers MORE */
static void every_prefix_is_more(const unsigned char *buf, size_t len, unsigned versions)
{
	struct proxyproto_result r;

	for (size_t i = 0; i < len; i++) {
		enum proxyproto_status st = proxyproto_parse(buf, i, versions, &r);
		if (st != PROXYPROTO_MORE) {
			CHECK_UINT_EQ(i, len); /* names the prefix that failed */
			CHECK_STR_EQ(r.error, NULL);
		}
	}
}

static void test_v1_tcp4_gives_the_client_and_leaves_smtp_bytes(void)
{
	const char *h = "PROXY TCP4 192.0.2.7 198.51.100.1 53428 25\r\nEHLO x\r\n";
	struct proxyproto_result r;
	char a[INET6_ADDRSTRLEN];
	unsigned port;

	CHECK_INT_EQ(parse_str(h, PROXYPROTO_ANY, &r), PROXYPROTO_DONE);
	CHECK_UINT_EQ(r.version, 1);
	CHECK_UINT_EQ(r.consumed, strlen(h) - strlen("EHLO x\r\n"));
	CHECK(!r.local);
	addr_of(&r.src, a, &port);
	CHECK_STR_EQ(a, "192.0.2.7");
	CHECK_UINT_EQ(port, 53428);
	CHECK_UINT_EQ(r.srclen, sizeof(struct sockaddr_in));
	addr_of(&r.dst, a, &port);
	CHECK_STR_EQ(a, "198.51.100.1");
	CHECK_UINT_EQ(port, 25);
	every_prefix_is_more((const unsigned char *)h, r.consumed, PROXYPROTO_V1);
}

static void test_v1_tcp6_gives_the_client(void)
{
	const char *h = "PROXY TCP6 2001:db8::7 2001:db8::1 0 65535\r\n";
	struct proxyproto_result r;
	char a[INET6_ADDRSTRLEN];
	unsigned port;

	CHECK_INT_EQ(parse_str(h, PROXYPROTO_V1, &r), PROXYPROTO_DONE);
	CHECK_UINT_EQ(r.consumed, strlen(h));
	addr_of(&r.src, a, &port);
	CHECK_STR_EQ(a, "2001:db8::7");
	CHECK_UINT_EQ(port, 0);
	CHECK_UINT_EQ(r.srclen, sizeof(struct sockaddr_in6));
	addr_of(&r.dst, a, &port);
	CHECK_STR_EQ(a, "2001:db8::1");
	CHECK_UINT_EQ(port, 65535);
}

static void test_v1_unknown_is_local_whatever_follows(void)
{
	struct proxyproto_result r;

	CHECK_INT_EQ(parse_str("PROXY UNKNOWN\r\n", PROXYPROTO_ANY, &r), PROXYPROTO_DONE);
	CHECK(r.local);
	CHECK_UINT_EQ(r.consumed, 15);
	CHECK_INT_EQ(parse_str("PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\nQUIT\r\n",
			       PROXYPROTO_ANY, &r), PROXYPROTO_DONE);
	CHECK(r.local);
	CHECK_UINT_EQ(r.consumed, 39);
}

static void test_v1_longest_lines_are_taken(void)
{
	/* 107 bytes exactly: the specification's worst case. */
	const char *unknown = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
			      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	const char *tcp6 = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
			   "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	struct proxyproto_result r;

	CHECK_UINT_EQ(strlen(unknown), 107);
	CHECK_INT_EQ(parse_str(unknown, PROXYPROTO_V1, &r), PROXYPROTO_DONE);
	CHECK_UINT_EQ(r.consumed, 107);
	CHECK(r.local);
	CHECK_INT_EQ(parse_str(tcp6, PROXYPROTO_V1, &r), PROXYPROTO_DONE);
	CHECK_UINT_EQ(r.consumed, 104);
	CHECK(!r.local);
}

static void test_v2_proxy_tcp4_with_tlvs(void)
{
	unsigned char body[64], buf[128];
	const unsigned char tlvs[] = { 0x04, 0x00, 0x02, 'o', 'k', /* NOOP */
				       0x20, 0x00, 0x00 };	  /* empty SSL */
	size_t n = v2(buf, 0x21, 0x11, body, v2_inet(body, tlvs, sizeof(tlvs)));
	struct proxyproto_result r;
	char a[INET6_ADDRSTRLEN];
	unsigned port;

	memcpy(buf + n, "EHLO", 4);
	CHECK_INT_EQ(proxyproto_parse(buf, n + 4, PROXYPROTO_ANY, &r), PROXYPROTO_DONE);
	CHECK_UINT_EQ(r.version, 2);
	CHECK_UINT_EQ(r.consumed, n);
	CHECK(!r.local);
	addr_of(&r.src, a, &port);
	CHECK_STR_EQ(a, "192.0.2.7");
	CHECK_UINT_EQ(port, 53428);
	addr_of(&r.dst, a, &port);
	CHECK_STR_EQ(a, "198.51.100.1");
	CHECK_UINT_EQ(port, 25);
	every_prefix_is_more(buf, n, PROXYPROTO_V2);
}

static void test_v2_proxy_tcp6(void)
{
	unsigned char body[36] = { 0 }, buf[64];
	struct proxyproto_result r;
	char a[INET6_ADDRSTRLEN];
	unsigned port;
	size_t n;

	inet_pton(AF_INET6, "2001:db8::7", body);
	inet_pton(AF_INET6, "2001:db8::1", body + 16);
	body[32] = 0x04, body[33] = 0x00; /* 1024 */
	body[34] = 0x00, body[35] = 0x19; /* 25 */
	n = v2(buf, 0x21, 0x21, body, 36);
	CHECK_INT_EQ(proxyproto_parse(buf, n, PROXYPROTO_V2, &r), PROXYPROTO_DONE);
	CHECK_UINT_EQ(r.consumed, 52);
	addr_of(&r.src, a, &port);
	CHECK_STR_EQ(a, "2001:db8::7");
	CHECK_UINT_EQ(port, 1024);
	CHECK_UINT_EQ(r.srclen, sizeof(struct sockaddr_in6));
	addr_of(&r.dst, a, &port);
	CHECK_STR_EQ(a, "2001:db8::1");
	CHECK_UINT_EQ(port, 25);
}

static void test_v2_local_and_addressless_families_are_local(void)
{
	unsigned char body[216] = { 0 }, buf[256];
	struct proxyproto_result r;
	size_t n;

	/* LOCAL: the block is skipped whatever its family says. */
	n = v2(buf, 0x20, 0x00, body, 0);
	CHECK_INT_EQ(proxyproto_parse(buf, n, PROXYPROTO_ANY, &r), PROXYPROTO_DONE);
	CHECK(r.local);
	CHECK_UINT_EQ(r.consumed, 16);
	n = v2(buf, 0x20, 0x11, body, 5);
	CHECK_INT_EQ(proxyproto_parse(buf, n, PROXYPROTO_ANY, &r), PROXYPROTO_DONE);
	CHECK(r.local);
	CHECK_UINT_EQ(r.consumed, 21);
	/* PROXY for an unspecified family, or a Unix socket: no IP client. */
	n = v2(buf, 0x21, 0x00, body, 3);
	CHECK_INT_EQ(proxyproto_parse(buf, n, PROXYPROTO_ANY, &r), PROXYPROTO_DONE);
	CHECK(r.local);
	n = v2(buf, 0x21, 0x31, body, 216);
	CHECK_INT_EQ(proxyproto_parse(buf, n, PROXYPROTO_ANY, &r), PROXYPROTO_DONE);
	CHECK(r.local);
	CHECK_UINT_EQ(r.consumed, 232);
}

static void test_v2_longest_header_is_taken(void)
{
	unsigned char body[PROXYPROTO_V2_MAX], buf[PROXYPROTO_V2_MAX + 16];
	unsigned char tlv[PROXYPROTO_V2_MAX];
	size_t tl = PROXYPROTO_V2_MAX - 16 - 12;
	struct proxyproto_result r;
	size_t n;

	memset(tlv, 'x', sizeof(tlv));
	tlv[0] = 0x04;
	tlv[1] = (unsigned char)((tl - 3) >> 8);
	tlv[2] = (unsigned char)((tl - 3) & 0xff);
	n = v2(buf, 0x21, 0x11, body, v2_inet(body, tlv, tl));
	CHECK_UINT_EQ(n, PROXYPROTO_V2_MAX);
	CHECK_INT_EQ(proxyproto_parse(buf, n, PROXYPROTO_V2, &r), PROXYPROTO_DONE);
	CHECK_UINT_EQ(r.consumed, PROXYPROTO_V2_MAX);
}

static void test_empty_input_wants_more(void)
{
	struct proxyproto_result r;

	CHECK_INT_EQ(proxyproto_parse((const unsigned char *)"", 0, PROXYPROTO_ANY, &r),
		     PROXYPROTO_MORE);
}

/* A malformed v1 line and the reason it gets. */
struct bad_v1 {
	const char *text;
	unsigned versions;
	const char *error;
};

static void test_v1_malformed_table(void)
{
	static const struct bad_v1 table[] = {
		{ "EHLO client.example\r\n", PROXYPROTO_ANY, "not a PROXY protocol header" },
		{ "PROXZ TCP4", PROXYPROTO_ANY, "not a PROXY protocol header" },
		{ "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", PROXYPROTO_ANY, "not a PROXY protocol header" },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\n", PROXYPROTO_V2,
		  "v1 header where only v2 is taken" },
		{ "PROXY TCP5 192.0.2.7 198.51.100.1 1 2\r\n", PROXYPROTO_ANY,
		  "v1 protocol is not TCP4, TCP6 or UNKNOWN" },
		{ "PROXY UNKNOWNX\r\n", PROXYPROTO_ANY, "v1 protocol is not TCP4, TCP6 or UNKNOWN" },
		{ "PROXY \r\n", PROXYPROTO_ANY, "v1 protocol is not TCP4, TCP6 or UNKNOWN" },
		{ "PROXY TCP4 192.0.2.7  198.51.100.1 1 2\r\n", PROXYPROTO_ANY,
		  "v1 fields not separated by single spaces" },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 1 2 \r\n", PROXYPROTO_ANY,
		  "v1 line ends in a space" },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n", PROXYPROTO_ANY,
		  "v1 line does not have four addresses and ports" },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 1 2 3\r\n", PROXYPROTO_ANY,
		  "v1 line does not have four addresses and ports" },
		{ "PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n", PROXYPROTO_ANY,
		  "v1 source is not an IPv4 address" },
		{ "PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n", PROXYPROTO_ANY,
		  "v1 source is not an IPv6 address" },
		{ "PROXY TCP4 192.0.2.7 198.51.100.256 1 2\r\n", PROXYPROTO_ANY,
		  "v1 destination is not an IPv4 address" },
		{ "PROXY TCP6 2001:db8::7 2001:db8:::1 1 2\r\n", PROXYPROTO_ANY,
		  "v1 destination is not an IPv6 address" },
		{ "PROXY TCP4 192.0.2.07 198.51.100.1 1 2\r\n", PROXYPROTO_ANY,
		  "v1 source is not an IPv4 address" },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n", PROXYPROTO_ANY,
		  "v1 port is not a number from 0 to 65535" },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 1 025\r\n", PROXYPROTO_ANY,
		  "v1 port is not a number from 0 to 65535" },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 -1 25\r\n", PROXYPROTO_ANY,
		  "v1 port is not a number from 0 to 65535" },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n", PROXYPROTO_ANY,
		  "v1 line ends in LF without CR" },
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 1 2\rX", PROXYPROTO_ANY,
		  "v1 CR not followed by LF" },
		{ "PROXY TCP4 192.0.2.7\t198.51.100.1 1 2\r\n", PROXYPROTO_ANY,
		  "v1 header holds a control or 8-bit byte" },
		{ "PROXY TCP4 192.0.2.\xe9 198.51.100.1 1 2\r\n", PROXYPROTO_ANY,
		  "v1 header holds a control or 8-bit byte" },
	};
	struct proxyproto_result r;

	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		CHECK_INT_EQ(parse_str(table[i].text, table[i].versions, &r),
			     PROXYPROTO_MALFORMED);
		CHECK_STR_EQ(r.error, table[i].error);
	}
}

static void test_v1_over_107_bytes_is_malformed_without_a_line_end(void)
{
	char h[200];
	struct proxyproto_result r;

	memset(h, 'A', sizeof(h));
	memcpy(h, "PROXY UNKNOWN ", 14);
	/* 106 bytes without an end may still become a header. */
	CHECK_INT_EQ(proxyproto_parse((unsigned char *)h, 106, PROXYPROTO_V1, &r),
		     PROXYPROTO_MORE);
	CHECK_INT_EQ(proxyproto_parse((unsigned char *)h, 107, PROXYPROTO_V1, &r),
		     PROXYPROTO_MALFORMED);
	CHECK_STR_EQ(r.error, "v1 header longer than 107 bytes");
	/* A CR at 107 would make the line 108 bytes long. */
	h[106] = '\r';
	CHECK_INT_EQ(proxyproto_parse((unsigned char *)h, 107, PROXYPROTO_V1, &r),
		     PROXYPROTO_MALFORMED);
	CHECK_STR_EQ(r.error, "v1 header longer than 107 bytes");
	CHECK_INT_EQ(proxyproto_parse((unsigned char *)h, sizeof(h), PROXYPROTO_V1, &r),
		     PROXYPROTO_MALFORMED);
}

/* A malformed v2 header: its first 16 bytes, body length, and reason. */
static void check_bad_v2(unsigned ver_cmd, unsigned fam, size_t blen,
			 unsigned versions, const char *error)
{
	unsigned char body[300], buf[400];
	struct proxyproto_result r;
	size_t n;

	memset(body, 0, sizeof(body));
	n = v2(buf, ver_cmd, fam, body, blen);
	CHECK_INT_EQ(proxyproto_parse(buf, n, versions, &r), PROXYPROTO_MALFORMED);
	CHECK_STR_EQ(r.error, error);
}

static void test_v2_malformed_table(void)
{
	check_bad_v2(0x11, 0x11, 12, PROXYPROTO_ANY, "v2 version is not 2");
	check_bad_v2(0x31, 0x11, 12, PROXYPROTO_ANY, "v2 version is not 2");
	check_bad_v2(0x22, 0x11, 12, PROXYPROTO_ANY, "v2 command is neither LOCAL nor PROXY");
	check_bad_v2(0x2f, 0x11, 12, PROXYPROTO_ANY, "v2 command is neither LOCAL nor PROXY");
	check_bad_v2(0x21, 0x41, 12, PROXYPROTO_ANY, "v2 address family unknown");
	check_bad_v2(0x21, 0x13, 12, PROXYPROTO_ANY, "v2 transport protocol unknown");
	check_bad_v2(0x21, 0x12, 12, PROXYPROTO_ANY, "v2 transport is not a stream (TCP)");
	check_bad_v2(0x21, 0x10, 12, PROXYPROTO_ANY, "v2 transport is not a stream (TCP)");
	check_bad_v2(0x21, 0x22, 36, PROXYPROTO_ANY, "v2 transport is not a stream (TCP)");
	check_bad_v2(0x21, 0x11, 11, PROXYPROTO_ANY, "v2 length too short for its addresses");
	check_bad_v2(0x21, 0x21, 12, PROXYPROTO_ANY, "v2 length too short for its addresses");
	check_bad_v2(0x21, 0x31, 36, PROXYPROTO_ANY, "v2 length too short for its addresses");
	check_bad_v2(0x21, 0x11, 12, PROXYPROTO_V1, "v2 header where only v1 is taken");
	/* Zero bytes after the addresses are no TLV: one needs three. */
	check_bad_v2(0x21, 0x11, 13, PROXYPROTO_ANY, "v2 TLV runs past the header");
	check_bad_v2(0x21, 0x11, 14, PROXYPROTO_ANY, "v2 TLV runs past the header");
}

static void test_v2_tlv_longer_than_the_header_is_malformed(void)
{
	unsigned char body[64], buf[128];
	const unsigned char tlv[] = { 0x01, 0x00, 0x05, 'h', '2' };
	struct proxyproto_result r;
	size_t n = v2(buf, 0x21, 0x11, body, v2_inet(body, tlv, sizeof(tlv)));

	CHECK_INT_EQ(proxyproto_parse(buf, n, PROXYPROTO_ANY, &r), PROXYPROTO_MALFORMED);
	CHECK_STR_EQ(r.error, "v2 TLV runs past the header");
}

static void test_v2_errors_come_before_the_bytes(void)
{
	unsigned char buf[16];
	struct proxyproto_result r;

	/* A bad signature at its first wrong byte. */
	memcpy(buf, sig, 12);
	buf[5] = 'X';
	CHECK_INT_EQ(proxyproto_parse(buf, 6, PROXYPROTO_ANY, &r), PROXYPROTO_MALFORMED);
	CHECK_STR_EQ(r.error, "v2 signature wrong");
	/* A bad version with the thirteenth byte. */
	memcpy(buf, sig, 12);
	buf[12] = 0x21;
	CHECK_INT_EQ(proxyproto_parse(buf, 13, PROXYPROTO_ANY, &r), PROXYPROTO_MORE);
	buf[12] = 0x01;
	CHECK_INT_EQ(proxyproto_parse(buf, 13, PROXYPROTO_ANY, &r), PROXYPROTO_MALFORMED);
	/* An oversize length with the sixteenth, not 64 KiB later. */
	v2(buf, 0x21, 0x11, NULL, 0);
	buf[14] = 0xff;
	buf[15] = 0xff;
	CHECK_INT_EQ(proxyproto_parse(buf, 16, PROXYPROTO_ANY, &r), PROXYPROTO_MALFORMED);
	CHECK_STR_EQ(r.error, "v2 header longer than 2048 bytes");
	buf[14] = (PROXYPROTO_V2_MAX - 15) >> 8;
	buf[15] = (PROXYPROTO_V2_MAX - 15) & 0xff;
	CHECK_INT_EQ(proxyproto_parse(buf, 16, PROXYPROTO_ANY, &r), PROXYPROTO_MALFORMED);
	buf[14] = (PROXYPROTO_V2_MAX - 16) >> 8;
	buf[15] = (PROXYPROTO_V2_MAX - 16) & 0xff;
	CHECK_INT_EQ(proxyproto_parse(buf, 16, PROXYPROTO_ANY, &r), PROXYPROTO_MORE);
}

static void test_garbage_and_tls_are_not_headers(void)
{
	const unsigned char tls[] = { 0x16, 0x03, 0x01, 0x00, 0xa5 };
	struct proxyproto_result r;

	CHECK_INT_EQ(proxyproto_parse(tls, sizeof(tls), PROXYPROTO_ANY, &r),
		     PROXYPROTO_MALFORMED);
	CHECK_STR_EQ(r.error, "not a PROXY protocol header");
	CHECK_INT_EQ(proxyproto_parse((const unsigned char *)"\0", 1, PROXYPROTO_ANY, &r),
		     PROXYPROTO_MALFORMED);
	CHECK_INT_EQ(parse_str("\r\nQUIT", PROXYPROTO_ANY, &r), PROXYPROTO_MALFORMED);
	CHECK_STR_EQ(r.error, "v2 signature wrong");
}

int main(void)
{
	RUN(test_v1_tcp4_gives_the_client_and_leaves_smtp_bytes);
	RUN(test_v1_tcp6_gives_the_client);
	RUN(test_v1_unknown_is_local_whatever_follows);
	RUN(test_v1_longest_lines_are_taken);
	RUN(test_v2_proxy_tcp4_with_tlvs);
	RUN(test_v2_proxy_tcp6);
	RUN(test_v2_local_and_addressless_families_are_local);
	RUN(test_v2_longest_header_is_taken);
	RUN(test_empty_input_wants_more);
	RUN(test_v1_malformed_table);
	RUN(test_v1_over_107_bytes_is_malformed_without_a_line_end);
	RUN(test_v2_malformed_table);
	RUN(test_v2_tlv_longer_than_the_header_is_malformed);
	RUN(test_v2_errors_come_before_the_bytes);
	RUN(test_garbage_and_tls_are_not_headers);
	return unit_summary();
}
