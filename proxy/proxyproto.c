/*
 * proxyproto.c - decode a PROXY protocol header, v1 or v2 (see proxyproto.h)
 *
 * Strict where the specification is: a v1 line has single spaces, a
 * protocol of TCP4, TCP6 or UNKNOWN, addresses of that family and
 * decimal ports without leading zeros, and ends in CRLF within 107
 * bytes; a v2 header has the 12-byte signature, version 2, the command
 * LOCAL or PROXY, a known family and protocol, a length that holds the
 * addresses of its family and no more than PROXYPROTO_V2_MAX, and TLVs
 * that end inside it. Lenient where it says so: whatever follows UNKNOWN
 * on a v1 line is ignored, and LOCAL's address block is not looked at
 * ("the receiver must ... discard the protocol block including the
 * family"). Errors are decided as early as the bytes allow, so garbage
 * or an oversize length ends a connection before its bytes arrive.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "proxyproto.h"

static const unsigned char v2_signature[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};
static const char v1_prefix[] = "PROXY ";
#define V1_PREFIX_LEN (sizeof(v1_prefix) - 1)

/* v2 address block sizes: two IPv4 addresses and ports, IPv6, Unix paths */
#define V2_INET_LEN 12
#define V2_INET6_LEN 36
#define V2_UNIX_LEN 216

/* proxyproto_fail - a malformed answer */
static enum proxyproto_status proxyproto_fail(struct proxyproto_result *r,
					      const char *why)
{
	r->error = why;
	return PROXYPROTO_MALFORMED;
}

/* proxyproto_set - store an address and port (network order) as a sockaddr */
static void proxyproto_set(int family, const void *addr, const void *port,
			   struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;
		in->sin_family = AF_INET;
		memcpy(&in->sin_addr, addr, 4);
		memcpy(&in->sin_port, port, 2);
		*len = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
		in6->sin6_family = AF_INET6;
		memcpy(&in6->sin6_addr, addr, 16);
		memcpy(&in6->sin6_port, port, 2);
		*len = sizeof(*in6);
	}
}

/*
 * v1_port - a decimal port of n bytes, 0 to 65535, no leading zero
 * (the specification's form); false when it is not one
 */
static bool v1_port(const char *s, size_t n, unsigned char out[2])
{
	unsigned long v = 0;

	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > 65535)
		return false;
	out[0] = (unsigned char)(v >> 8);
	out[1] = (unsigned char)(v & 0xff);
	return true;
}

/* v1_addr - an address of family af in n bytes; false when it is not one */
static bool v1_addr(int af, const char *s, size_t n, unsigned char out[16])
{
	char text[INET6_ADDRSTRLEN];

	if (n == 0 || n >= sizeof(text))
		return false;
	memcpy(text, s, n);
	text[n] = 0;
	return inet_pton(af, text, out) == 1;
}

/* v1_line - check the line between "PROXY " and CRLF (n bytes at s) */
static enum proxyproto_status v1_line(const char *s, size_t n,
				      struct proxyproto_result *r)
{
	const char *end = s + n, *tok[5];
	size_t toklen[5], ntok = 0;
	unsigned char src[16], dst[16], sport[2], dport[2];
	int af;

	if (n >= 7 && memcmp(s, "UNKNOWN", 7) == 0 && (n == 7 || s[7] == ' ')) {
		/* The rest of an UNKNOWN line is to be ignored. */
		r->local = true;
		return PROXYPROTO_DONE;
	}
	if (n < 5 || (memcmp(s, "TCP4 ", 5) != 0 && memcmp(s, "TCP6 ", 5) != 0))
		return proxyproto_fail(r, "v1 protocol is not TCP4, TCP6 or UNKNOWN");
	af = s[3] == '4' ? AF_INET : AF_INET6;
	for (const char *p = s + 5; p <= end && ntok < 5;) {
		const char *sp = memchr(p, ' ', (size_t)(end - p));
		const char *e = sp ? sp : end;

		tok[ntok] = p;
		toklen[ntok++] = (size_t)(e - p);
		if (e == p)
			return proxyproto_fail(r, "v1 fields not separated by single spaces");
		if (!sp)
			break;
		p = sp + 1;
		if (p == end)
			return proxyproto_fail(r, "v1 line ends in a space");
	}
	if (ntok != 4)
		return proxyproto_fail(r, "v1 line does not have four addresses and ports");
	if (!v1_addr(af, tok[0], toklen[0], src))
		return proxyproto_fail(r, af == AF_INET ? "v1 source is not an IPv4 address"
							: "v1 source is not an IPv6 address");
	if (!v1_addr(af, tok[1], toklen[1], dst))
		return proxyproto_fail(r, af == AF_INET ? "v1 destination is not an IPv4 address"
							: "v1 destination is not an IPv6 address");
	if (!v1_port(tok[2], toklen[2], sport) || !v1_port(tok[3], toklen[3], dport))
		return proxyproto_fail(r, "v1 port is not a number from 0 to 65535");
	proxyproto_set(af, src, sport, &r->src, &r->srclen);
	proxyproto_set(af, dst, dport, &r->dst, &r->dstlen);
	return PROXYPROTO_DONE;
}

/* v1_parse - a version 1 header: one text line */
static enum proxyproto_status v1_parse(const unsigned char *buf, size_t len,
				       struct proxyproto_result *r)
{
	size_t scan = len < PROXYPROTO_V1_MAX ? len : PROXYPROTO_V1_MAX;

	r->version = 1;
	if (memcmp(buf, v1_prefix, scan < V1_PREFIX_LEN ? scan : V1_PREFIX_LEN) != 0)
		return proxyproto_fail(r, "not a PROXY protocol header");
	for (size_t i = 0; i < scan; i++) {
		if (buf[i] == '\r') {
			if (i + 2 > PROXYPROTO_V1_MAX)
				return proxyproto_fail(r, "v1 header longer than 107 bytes");
			if (i + 1 == len)
				return PROXYPROTO_MORE;
			if (buf[i + 1] != '\n')
				return proxyproto_fail(r, "v1 CR not followed by LF");
			if (i < V1_PREFIX_LEN)
				return proxyproto_fail(r, "not a PROXY protocol header");
			r->consumed = i + 2;
			return v1_line((const char *)buf + V1_PREFIX_LEN,
				       i - V1_PREFIX_LEN, r);
		}
		if (buf[i] == '\n')
			return proxyproto_fail(r, "v1 line ends in LF without CR");
		/* Printable ASCII only: anything else is no header and no address. */
		if (buf[i] < 0x20 || buf[i] > 0x7e)
			return proxyproto_fail(r, "v1 header holds a control or 8-bit byte");
	}
	if (len >= PROXYPROTO_V1_MAX)
		return proxyproto_fail(r, "v1 header longer than 107 bytes");
	return PROXYPROTO_MORE;
}

/* v2_tlvs - the TLVs in n bytes at p: each must end inside the header */
static bool v2_tlvs(const unsigned char *p, size_t n)
{
	while (n > 0) {
		size_t vlen;

		if (n < 3)
			return false;
		vlen = (size_t)p[1] << 8 | p[2];
		if (vlen > n - 3)
			return false;
		p += 3 + vlen;
		n -= 3 + vlen;
	}
	return true;
}

/* v2_parse - a version 2 header: signature, fixed part, addresses, TLVs */
static enum proxyproto_status v2_parse(const unsigned char *buf, size_t len,
				       struct proxyproto_result *r)
{
	size_t sig = len < sizeof(v2_signature) ? len : sizeof(v2_signature);
	unsigned cmd, family, proto;
	size_t hlen, total, need = 0;

	r->version = 2;
	if (memcmp(buf, v2_signature, sig) != 0)
		return proxyproto_fail(r, "v2 signature wrong");
	if (len <= 12)
		return PROXYPROTO_MORE;
	if ((buf[12] >> 4) != 2)
		return proxyproto_fail(r, "v2 version is not 2");
	cmd = buf[12] & 0x0f;
	if (cmd > 1)
		return proxyproto_fail(r, "v2 command is neither LOCAL nor PROXY");
	if (len <= 13)
		return PROXYPROTO_MORE;
	family = buf[13] >> 4;
	proto = buf[13] & 0x0f;
	if (cmd == 1) {
		if (family > 3)
			return proxyproto_fail(r, "v2 address family unknown");
		if (proto > 2)
			return proxyproto_fail(r, "v2 transport protocol unknown");
		if ((family == 1 || family == 2) && proto != 1)
			return proxyproto_fail(r, "v2 transport is not a stream (TCP)");
		need = family == 1 ? V2_INET_LEN : family == 2 ? V2_INET6_LEN
			: family == 3 ? V2_UNIX_LEN : 0;
	}
	if (len < PROXYPROTO_V2_FIXED)
		return PROXYPROTO_MORE;
	hlen = (size_t)buf[14] << 8 | buf[15];
	total = PROXYPROTO_V2_FIXED + hlen;
	if (total > PROXYPROTO_V2_MAX)
		return proxyproto_fail(r, "v2 header longer than 2048 bytes");
	if (hlen < need)
		return proxyproto_fail(r, "v2 length too short for its addresses");
	if (len < total)
		return PROXYPROTO_MORE;
	r->consumed = total;
	/*
	 * LOCAL is the balancer speaking for itself (health checks); the
	 * unspecified and Unix families name no IP client either.
	 */
	if (cmd == 0 || family == 0 || family == 3) {
		r->local = true;
		return PROXYPROTO_DONE;
	}
	if (!v2_tlvs(buf + PROXYPROTO_V2_FIXED + need, hlen - need))
		return proxyproto_fail(r, "v2 TLV runs past the header");
	if (family == 1) {
		const unsigned char *a = buf + PROXYPROTO_V2_FIXED;
		proxyproto_set(AF_INET, a, a + 8, &r->src, &r->srclen);
		proxyproto_set(AF_INET, a + 4, a + 10, &r->dst, &r->dstlen);
	} else {
		const unsigned char *a = buf + PROXYPROTO_V2_FIXED;
		proxyproto_set(AF_INET6, a, a + 32, &r->src, &r->srclen);
		proxyproto_set(AF_INET6, a + 16, a + 34, &r->dst, &r->dstlen);
	}
	return PROXYPROTO_DONE;
}

/* proxyproto_parse - which version, then that version's decoder */
enum proxyproto_status proxyproto_parse(const unsigned char *buf, size_t len,
					unsigned versions,
					struct proxyproto_result *r)
{
	memset(r, 0, sizeof(*r));
	if (len == 0)
		return PROXYPROTO_MORE;
	/* The first byte tells them apart: 'P' or CR. */
	if (buf[0] == v1_prefix[0]) {
		if (!(versions & PROXYPROTO_V1))
			return proxyproto_fail(r, "v1 header where only v2 is taken");
		return v1_parse(buf, len, r);
	}
	if (buf[0] == v2_signature[0]) {
		if (!(versions & PROXYPROTO_V2))
			return proxyproto_fail(r, "v2 header where only v1 is taken");
		return v2_parse(buf, len, r);
	}
	return proxyproto_fail(r, "not a PROXY protocol header");
}
