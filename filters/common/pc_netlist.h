/*
 * pc_netlist.h - IP addresses and lists of networks for the filters
 *
 * The relay, spf and dkim filters each take a trusted_networks list and
 * compare the client's address with it; the relay filter also compares
 * address literals. This is the one reader of those addresses and lists.
 *
 * pc_ip_parse() reads a numeric IPv4 or IPv6 address. An IPv4-mapped
 * IPv6 address (::ffff:192.0.2.1), the way a dual-stack socket reports
 * an IPv4 client, is an IPv4 address, so IPv4 networks match it.
 * pc_netlist_parse() reads a list of CIDR blocks ("10.0.0.0/8, ::1/128,
 * [2001:db8::]/32"; a bare address is a host) and pc_netlist_match()
 * tells whether a client's address is inside one of them.
 *
 * Pure code: no sockets, no files, no globals. A parsed list is only read
 * by pc_netlist_match(), so threads may share it. Errors: -1, with a
 * message naming the bad entry where the function takes err.
 */
#ifndef PC_NETLIST_H
#define PC_NETLIST_H

#include <stdbool.h>
#include <stddef.h>

/* The daemon exports its symbols to filters: keep these inside each .so. */
#pragma GCC visibility push(hidden)

/* An IPv4 (family 4, addr[0..4)) or IPv6 (family 6) address. */
struct pc_ip {
	int family;
	unsigned char addr[16];
};

/* A network: the address with its host bits zero, and the prefix length. */
struct pc_cidr {
	struct pc_ip net;
	unsigned prefix;
};

/* A list of networks. */
struct pc_netlist {
	struct pc_cidr *nets;
	size_t count;
};

/*
 * pc_ip_parse - the numeric address text[0..len): dotted quad or IPv6,
 * nothing looser (no octal, no short forms); an IPv4-mapped IPv6 address
 * gives the IPv4 address. A "%zone" suffix of an IPv6 address is ignored
 * when allow_zone is true. Returns 0, or -1 when text is not an address.
 */
int pc_ip_parse(const char *text, size_t len, bool allow_zone,
		struct pc_ip *out);

/* pc_ip_equal - whether two parsed addresses are the same */
bool pc_ip_equal(const struct pc_ip *a, const struct pc_ip *b);

/*
 * pc_cidr_parse - "192.0.2.0/24", "2001:db8::/32", "[::1]/128" or a bare
 * address (a host). The address must have no bits set past the prefix:
 * 10.1.2.3/8 is most likely a typo and is refused. Returns 0, or -1 when
 * invalid.
 */
int pc_cidr_parse(const char *text, struct pc_cidr *out);

/* pc_cidr_match - whether ip is inside net (same family only) */
bool pc_cidr_match(const struct pc_cidr *net, const struct pc_ip *ip);

/*
 * pc_netlist_parse - a comma and/or space separated list of networks
 * (pc_list.h). Returns 0, or -1 with a message in err (errsize bytes)
 * naming the bad entry; out is then empty. An empty list is valid and
 * matches nothing.
 */
int pc_netlist_parse(const char *list, struct pc_netlist *out, char *err,
		     size_t errsize);

/*
 * pc_netlist_match - whether the numeric address addr (as the host
 * reports the client, "%zone" allowed) is in one of the networks; false
 * for anything that is not an address
 */
bool pc_netlist_match(const struct pc_netlist *list, const char *addr);

/* pc_netlist_free - release the networks */
void pc_netlist_free(struct pc_netlist *list);

#pragma GCC visibility pop

#endif
