/*
 * pc_netlist.c - IP addresses and lists of networks for the filters
 *
 * See pc_netlist.h. Addresses are read with inet_pton(), which takes
 * exactly the dotted quad and the IPv6 forms: inet_aton()'s octal and
 * short forms (010.1, 127.1) would let one network be written in ways
 * an administrator does not expect to match.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pc_list.h"
#include "pc_netlist.h"

/* The longest network entry: an IPv6 address in brackets and a prefix. */
#define NET_ENTRY_MAX 127

/*
 * ip_from_mapped - an IPv4-mapped IPv6 address (::ffff:a.b.c.d) becomes
 * the IPv4 address: a dual-stack socket reports IPv4 clients that way,
 * and they must meet the IPv4 networks an administrator wrote
 */
static void ip_from_mapped(struct pc_ip *ip)
{
	static const unsigned char prefix[12] = {0, 0, 0, 0, 0, 0,
						 0, 0, 0, 0, 0xff, 0xff};

	if (ip->family == 6 && memcmp(ip->addr, prefix, 12) == 0) {
		memmove(ip->addr, ip->addr + 12, 4);
		memset(ip->addr + 4, 0, 12);
		ip->family = 4;
	}
}

/* parse_ip - a numeric address in s[0..len) without zone or mapping */
static int parse_ip(const char *s, size_t len, struct pc_ip *out)
{
	char buf[INET6_ADDRSTRLEN + 1];

	memset(out, 0, sizeof(*out));
	if (len == 0 || len >= sizeof(buf) || memchr(s, '\0', len) != NULL)
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET, buf, out->addr) == 1) {
		out->family = 4;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, out->addr) == 1) {
		out->family = 6;
		return 0;
	}
	return -1;
}

/* pc_ip_parse - a numeric address; mapped IPv4 becomes IPv4 */
int pc_ip_parse(const char *text, size_t len, bool allow_zone,
		struct pc_ip *out)
{
	const char *pct;

	memset(out, 0, sizeof(*out));
	if (text == NULL)
		return -1;
	pct = memchr(text, '%', len);
	if (pct != NULL) {
		/* a zone belongs to an IPv6 link-local address only */
		if (!allow_zone || memchr(text, ':', len) == NULL)
			return -1;
		len = (size_t)(pct - text);
	}
	if (parse_ip(text, len, out) < 0)
		return -1;
	ip_from_mapped(out);
	return 0;
}

/* pc_ip_equal - whether two parsed addresses are the same */
bool pc_ip_equal(const struct pc_ip *a, const struct pc_ip *b)
{
	size_t n = a->family == 4 ? 4 : 16;

	return a->family == b->family && memcmp(a->addr, b->addr, n) == 0;
}

/* pc_cidr_parse - "net/prefix", "[v6]/prefix" or a host address */
int pc_cidr_parse(const char *text, struct pc_cidr *out)
{
	const char *slash, *addr = text, *end;
	size_t len, alen, i;
	unsigned prefix = 0, max, bits;
	struct pc_ip ip;

	memset(out, 0, sizeof(*out));
	if (text == NULL || *text == '\0')
		return -1;
	len = strlen(text);
	slash = memchr(text, '/', len);
	end = slash ? slash : text + len;
	alen = (size_t)(end - addr);
	/* Postfix writes IPv6 networks as [2001:db8::]/32; accept both. */
	if (alen >= 2 && addr[0] == '[' && addr[alen - 1] == ']') {
		addr++;
		alen -= 2;
		if (memchr(addr, ':', alen) == NULL)
			return -1;
	}
	if (parse_ip(addr, alen, &ip) < 0)
		return -1;
	max = ip.family == 4 ? 32 : 128;
	if (slash != NULL) {
		const char *p = slash + 1;

		if (*p == '\0' || strlen(p) > 3)
			return -1;
		for (; *p; p++) {
			if (*p < '0' || *p > '9')
				return -1;
			prefix = prefix * 10 + (unsigned)(*p - '0');
		}
		if (prefix > max)
			return -1;
	} else {
		prefix = max;
	}
	/* no host bits past the prefix */
	for (i = 0; i < max / 8; i++) {
		bits = prefix > i * 8 ? prefix - (unsigned)i * 8 : 0;
		if (bits >= 8)
			continue;
		if (ip.addr[i] & (0xffu >> bits))
			return -1;
	}
	/* ::ffff:10.0.0.0/104 is the IPv4 network 10.0.0.0/8 */
	if (ip.family == 6 && prefix >= 96) {
		struct pc_ip v4 = ip;

		ip_from_mapped(&v4);
		if (v4.family == 4) {
			ip = v4;
			prefix -= 96;
		}
	}
	out->net = ip;
	out->prefix = prefix;
	return 0;
}

/* pc_cidr_match - whether ip is inside net */
bool pc_cidr_match(const struct pc_cidr *net, const struct pc_ip *ip)
{
	unsigned full = net->prefix / 8, rest = net->prefix % 8;
	unsigned char mask;

	if (net->net.family != ip->family)
		return false;
	if (memcmp(net->net.addr, ip->addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	mask = (unsigned char)(0xff00u >> rest);
	return (net->net.addr[full] & mask) == (ip->addr[full] & mask);
}

/* pc_netlist_parse - a list of networks */
int pc_netlist_parse(const char *list, struct pc_netlist *out, char *err,
		     size_t errsize)
{
	const char *p = list, *item;
	char tok[NET_ENTRY_MAX + 1];
	struct pc_cidr *nets;
	size_t n;

	memset(out, 0, sizeof(*out));
	while (pc_list_next(&p, &item, &n)) {
		if (n >= sizeof(tok)) {
			snprintf(err, errsize, "bad network \"%.40s...\"", item);
			goto fail;
		}
		memcpy(tok, item, n);
		tok[n] = '\0';
		nets = realloc(out->nets, (out->count + 1) * sizeof(*nets));
		if (nets == NULL) {
			snprintf(err, errsize, "out of memory");
			goto fail;
		}
		out->nets = nets;
		if (pc_cidr_parse(tok, &out->nets[out->count]) < 0) {
			snprintf(err, errsize,
				 "bad network \"%s\" (expected address/prefix "
				 "with no host bits set, e.g. 192.0.2.0/24 or "
				 "2001:db8::/32)",
				 tok);
			goto fail;
		}
		out->count++;
	}
	return 0;
fail:
	pc_netlist_free(out);
	return -1;
}

/* pc_netlist_match - whether the client address is in the list */
bool pc_netlist_match(const struct pc_netlist *list, const char *addr)
{
	struct pc_ip ip;
	size_t i;

	if (addr == NULL || pc_ip_parse(addr, strlen(addr), true, &ip) < 0)
		return false;
	for (i = 0; i < list->count; i++)
		if (pc_cidr_match(&list->nets[i], &ip))
			return true;
	return false;
}

/* pc_netlist_free - release the networks */
void pc_netlist_free(struct pc_netlist *list)
{
	free(list->nets);
	list->nets = NULL;
	list->count = 0;
}
