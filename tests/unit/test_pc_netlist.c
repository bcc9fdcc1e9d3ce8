/*
 * test_pc_netlist.c - client addresses and trusted_networks lists
 *
 * The relay, spf and dkim filters spare the clients of trusted_networks
 * every check: a list that matched one address too many would open the
 * relay, so the edges are pinned here (prefixes, host bits, IPv4-mapped
 * clients, zones, what is no address at all).
 */
#include <stdlib.h>
#include <string.h>

#include "pc_netlist.h"
#include "unit.h"

/* in - whether addr is in the network list text */
static bool in(const char *list, const char *addr)
{
	struct pc_netlist nl;
	char err[256];
	bool r;

	if (pc_netlist_parse(list, &nl, err, sizeof(err)) < 0)
		return false;
	r = pc_netlist_match(&nl, addr);
	pc_netlist_free(&nl);
	return r;
}

/* valid - whether the network list text parses */
static bool valid(const char *list)
{
	struct pc_netlist nl;
	char err[256];

	if (pc_netlist_parse(list, &nl, err, sizeof(err)) < 0)
		return false;
	pc_netlist_free(&nl);
	return true;
}

static void test_cidr_ipv4(void)
{
	CHECK(in("127.0.0.0/8", "127.0.0.1"));
	CHECK(in("127.0.0.0/8", "127.255.255.255"));
	CHECK(!in("127.0.0.0/8", "128.0.0.1"));
	CHECK(in("10.0.0.0/8", "10.1.2.3"));
	CHECK(!in("10.0.0.0/8", "11.0.0.0"));
	CHECK(in("192.0.2.128/25", "192.0.2.200"));
	CHECK(!in("192.0.2.128/25", "192.0.2.127"));
	CHECK(in("192.0.2.7/32", "192.0.2.7"));
	CHECK(!in("192.0.2.7/32", "192.0.2.6"));
	CHECK(in("192.0.2.7", "192.0.2.7"));
	CHECK(!in("192.0.2.7", "192.0.2.8"));
	CHECK(in("0.0.0.0/0", "203.0.113.9"));
	CHECK(!in("0.0.0.0/0", "2001:db8::1"));
	CHECK(in("172.16.0.0/12", "172.31.255.1"));
	CHECK(!in("172.16.0.0/12", "172.32.0.1"));
}

static void test_cidr_ipv6(void)
{
	CHECK(in("::1/128", "::1"));
	CHECK(!in("::1/128", "::2"));
	CHECK(in("2001:db8::/32", "2001:db8:ffff::1"));
	CHECK(!in("2001:db8::/32", "2001:db9::1"));
	CHECK(in("2001:db8::/33", "2001:db8:7fff::1"));
	CHECK(!in("2001:db8::/33", "2001:db8:8000::1"));
	CHECK(in("[2001:db8::]/32", "2001:db8::5"));
	CHECK(in("::/0", "2001:db8::1"));
	CHECK(!in("::/0", "192.0.2.1"));
	CHECK(in("fe80::/10", "fe80::1%eth0"));
	CHECK(in("2001:DB8::1", "2001:db8:0:0:0:0:0:1"));
}

static void test_cidr_ipv4_mapped_clients_match_ipv4_networks(void)
{
	CHECK(in("127.0.0.0/8", "::ffff:127.0.0.1"));
	CHECK(in("10.0.0.0/8", "::FFFF:10.9.8.7"));
	CHECK(!in("10.0.0.0/8", "::ffff:11.0.0.1"));
	/* a network written mapped is the IPv4 network */
	CHECK(in("::ffff:10.0.0.0/104", "10.2.3.4"));
	CHECK(in("::ffff:10.0.0.0/104", "::ffff:10.2.3.4"));
	CHECK(!in("::ffff:10.0.0.0/104", "11.2.3.4"));
	/* IPv4-compatible (::a.b.c.d) is no IPv4 address */
	CHECK(!in("127.0.0.0/8", "::127.0.0.1"));
	/* default trusted networks */
	CHECK(in("127.0.0.0/8, ::1/128", "::1"));
	CHECK(in("127.0.0.0/8, ::1/128", "127.0.0.1"));
	CHECK(!in("127.0.0.0/8, ::1/128", "192.0.2.1"));
}

static void test_cidr_bad_input(void)
{
	CHECK(valid(""));
	CHECK(valid("  ,, "));
	CHECK(valid("10.0.0.0/8,192.0.2.0/24 2001:db8::/32\t::1"));
	CHECK(!valid("10.0.0.0/33"));
	CHECK(!valid("::/129"));
	CHECK(!valid("10.0.0.0/"));
	CHECK(!valid("10.0.0.0/-1"));
	CHECK(!valid("10.0.0.0/+8"));
	CHECK(!valid("10.0.0.0/8/8"));
	CHECK(!valid("10.0.0.0/0008"));
	CHECK(!valid("10.0.0/8"));
	CHECK(!valid("10.0.0.256/32"));
	CHECK(!valid("010.0.0.0/8"));
	CHECK(!valid("10.1.2.3/8"));	/* host bits set */
	CHECK(!valid("2001:db8::1/32")); /* host bits set */
	CHECK(!valid("localhost"));
	CHECK(!valid("10.0.0.0/8, bogus"));
	CHECK(!valid("[10.0.0.0]/8"));
	CHECK(!valid("2001:db8::g/32"));
	CHECK(!valid("/8"));

	struct pc_netlist nl;
	char err[256];

	CHECK_INT_EQ(pc_netlist_parse("127.0.0.0/8, 10.0.0.0/33", &nl, err,
					 sizeof(err)), -1);
	CHECK(strstr(err, "10.0.0.0/33") != NULL);
	CHECK_UINT_EQ(nl.count, 0);
	CHECK_NULL(nl.nets);

	/* clients that are no addresses never match */
	CHECK(!in("0.0.0.0/0, ::/0", ""));
	CHECK(!in("0.0.0.0/0, ::/0", "unknown"));
	CHECK(!in("0.0.0.0/0, ::/0", "192.0.2.1%eth0"));
	CHECK(!in("0.0.0.0/0, ::/0", NULL));
}

static void test_cidr_prefix_edges(void)
{
	struct pc_cidr c;
	struct pc_ip ip;

	CHECK_INT_EQ(pc_cidr_parse("0.0.0.0/0", &c), 0);
	CHECK_UINT_EQ(c.prefix, 0);
	CHECK_INT_EQ(pc_cidr_parse("::/0", &c), 0);
	CHECK_INT_EQ(c.net.family, 6);
	CHECK_INT_EQ(pc_cidr_parse("255.255.255.255/32", &c), 0);
	CHECK_INT_EQ(pc_ip_parse("255.255.255.255", 15, false, &ip), 0);
	CHECK(pc_cidr_match(&c, &ip));
	CHECK_INT_EQ(pc_cidr_parse("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
				      &c), 0);
	CHECK_UINT_EQ(c.prefix, 128);
	CHECK_INT_EQ(pc_ip_parse("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 39,
				    false, &ip), 0);
	CHECK(!pc_cidr_match(&c, &ip));
	CHECK_INT_EQ(pc_ip_parse("fe80::1%eth0", 12, false, &ip), -1);
	CHECK_INT_EQ(pc_ip_parse("fe80::1%eth0", 12, true, &ip), 0);
}

int main(void)
{
	RUN(test_cidr_ipv4);
	RUN(test_cidr_ipv6);
	RUN(test_cidr_ipv4_mapped_clients_match_ipv4_networks);
	RUN(test_cidr_bad_input);
	RUN(test_cidr_prefix_edges);
	return unit_summary();
}
