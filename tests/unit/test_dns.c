/*
 * test_dns.c - the resolver's cache: how long a reply is kept (RFC 2308),
 * keys, expiry, the size bound and its LRU order
 *
 * Replies are built byte by byte here, so every case shows the exact
 * message the rule is about; time is passed in, so nothing sleeps.
 */
#include "config.h"

#include <arpa/nameser.h>
#include <stdlib.h>
#include <string.h>

#include "dnscache.h"
#include "unit.h"

#define MAX_TTL 86400
#define NEG_TTL 3600

/* A DNS message under construction. */
struct pkt {
	unsigned char b[2048];
	size_t n;
};

static void put8(struct pkt *p, unsigned v) { p->b[p->n++] = (unsigned char)v; }
static void put16(struct pkt *p, unsigned v) { put8(p, v >> 8); put8(p, v & 0xff); }
static void put32(struct pkt *p, unsigned long v)
{
	put16(p, (unsigned)(v >> 16));
	put16(p, (unsigned)(v & 0xffff));
}

/* put_name - a name as labels, without compression */
static void put_name(struct pkt *p, const char *name)
{
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t len = dot ? (size_t)(dot - name) : strlen(name);
		put8(p, (unsigned)len);
		memcpy(p->b + p->n, name, len);
		p->n += len;
		name += len + (dot ? 1 : 0);
	}
	put8(p, 0);
}

/* reply - a reply header and the question (name, type) */
static void reply(struct pkt *p, int rcode, bool tc, const char *qname, int qtype,
		  unsigned an, unsigned ns)
{
	p->n = 0;
	put16(p, 0x1234);
	put8(p, 0x81 | (tc ? 0x02 : 0)); /* QR, RD (, TC) */
	put8(p, 0x80 | (unsigned)rcode); /* RA, rcode */
	put16(p, 1);
	put16(p, an);
	put16(p, ns);
	put16(p, 0);
	put_name(p, qname);
	put16(p, (unsigned)qtype);
	put16(p, ns_c_in);
}

/* rr_a - an A record */
static void rr_a(struct pkt *p, const char *name, unsigned long ttl)
{
	put_name(p, name);
	put16(p, ns_t_a);
	put16(p, ns_c_in);
	put32(p, ttl);
	put16(p, 4);
	put32(p, 0xc0000201); /* 192.0.2.1 */
}

/* rr_txt - a TXT record of one string */
static void rr_txt(struct pkt *p, const char *name, unsigned long ttl, const char *text)
{
	put_name(p, name);
	put16(p, ns_t_txt);
	put16(p, ns_c_in);
	put32(p, ttl);
	put16(p, (unsigned)strlen(text) + 1);
	put8(p, (unsigned)strlen(text));
	memcpy(p->b + p->n, text, strlen(text));
	p->n += strlen(text);
}

/* rr_cname - a CNAME record */
static void rr_cname(struct pkt *p, const char *name, unsigned long ttl, const char *target)
{
	size_t at;

	put_name(p, name);
	put16(p, ns_t_cname);
	put16(p, ns_c_in);
	put32(p, ttl);
	at = p->n;
	put16(p, 0);
	put_name(p, target);
	p->b[at] = (unsigned char)((p->n - at - 2) >> 8);
	p->b[at + 1] = (unsigned char)(p->n - at - 2);
}

/* rr_soa - a SOA record with this TTL and MINIMUM */
static void rr_soa(struct pkt *p, const char *zone, unsigned long ttl, unsigned long minimum)
{
	size_t at;

	put_name(p, zone);
	put16(p, ns_t_soa);
	put16(p, ns_c_in);
	put32(p, ttl);
	at = p->n;
	put16(p, 0);
	put_name(p, "ns.example.com");
	put_name(p, "hostmaster.example.com");
	put32(p, 2024010101);
	put32(p, 7200);
	put32(p, 3600);
	put32(p, 1209600);
	put32(p, minimum);
	p->b[at] = (unsigned char)((p->n - at - 2) >> 8);
	p->b[at + 1] = (unsigned char)(p->n - at - 2);
}

/* ttl - dnscache_ttl() of a message with the usual caps */
static long ttl(const struct pkt *p, int type)
{
	return dnscache_ttl(p->b, p->n, type, MAX_TTL, NEG_TTL);
}

static void test_a_positive_answer_is_kept_for_its_smallest_ttl(void)
{
	struct pkt p;

	reply(&p, ns_r_noerror, false, "example.com", ns_t_a, 2, 0);
	rr_a(&p, "example.com", 300);
	rr_a(&p, "example.com", 60);
	CHECK_INT_EQ(ttl(&p, ns_t_a), 60);
}

static void test_a_positive_ttl_is_capped_by_max_ttl(void)
{
	struct pkt p;

	reply(&p, ns_r_noerror, false, "example.com", ns_t_txt, 1, 0);
	rr_txt(&p, "example.com", 604800, "v=spf1 -all");
	CHECK_INT_EQ(ttl(&p, ns_t_txt), MAX_TTL);
	CHECK_INT_EQ(dnscache_ttl(p.b, p.n, ns_t_txt, 10, NEG_TTL), 10);
}

static void test_a_cname_chain_counts_towards_the_smallest_ttl(void)
{
	struct pkt p;

	reply(&p, ns_r_noerror, false, "www.example.com", ns_t_a, 2, 0);
	rr_cname(&p, "www.example.com", 30, "host.example.com");
	rr_a(&p, "host.example.com", 3600);
	CHECK_INT_EQ(ttl(&p, ns_t_a), 30);
}

static void test_nxdomain_is_kept_for_the_soa_minimum_when_smaller(void)
{
	struct pkt p;

	reply(&p, ns_r_nxdomain, false, "nope.example.com", ns_t_a, 0, 1);
	rr_soa(&p, "example.com", 900, 300);
	CHECK_INT_EQ(ttl(&p, ns_t_a), 300);
}

static void test_nxdomain_is_kept_for_the_soa_ttl_when_smaller(void)
{
	struct pkt p;

	reply(&p, ns_r_nxdomain, false, "nope.example.com", ns_t_a, 0, 1);
	rr_soa(&p, "example.com", 120, 86400);
	CHECK_INT_EQ(ttl(&p, ns_t_a), 120);
}

static void test_nodata_is_kept_like_nxdomain(void)
{
	struct pkt p;

	reply(&p, ns_r_noerror, false, "example.com", ns_t_aaaa, 0, 1);
	rr_soa(&p, "example.com", 900, 600);
	CHECK_INT_EQ(ttl(&p, ns_t_aaaa), 600);
}

static void test_nodata_after_a_cname_is_no_longer_than_the_cname(void)
{
	struct pkt p;

	reply(&p, ns_r_noerror, false, "www.example.com", ns_t_txt, 1, 1);
	rr_cname(&p, "www.example.com", 20, "host.example.com");
	rr_soa(&p, "example.com", 900, 600);
	CHECK_INT_EQ(ttl(&p, ns_t_txt), 20);
}

static void test_an_answer_of_another_type_only_is_nodata(void)
{
	struct pkt p;

	/* A TXT question answered by an A record: no TXT, no SOA. */
	reply(&p, ns_r_noerror, false, "example.com", ns_t_txt, 1, 0);
	rr_a(&p, "example.com", 300);
	CHECK_INT_EQ(ttl(&p, ns_t_txt), -1);
}

static void test_negative_ttl_is_capped_by_negative_ttl(void)
{
	struct pkt p;

	reply(&p, ns_r_nxdomain, false, "nope.example.com", ns_t_a, 0, 1);
	rr_soa(&p, "example.com", 86400, 86400);
	CHECK_INT_EQ(ttl(&p, ns_t_a), NEG_TTL);
	CHECK_INT_EQ(dnscache_ttl(p.b, p.n, ns_t_a, MAX_TTL, 5), 5);
}

static void test_negative_answers_without_soa_are_not_cached(void)
{
	struct pkt p;

	reply(&p, ns_r_nxdomain, false, "nope.example.com", ns_t_a, 0, 0);
	CHECK_INT_EQ(ttl(&p, ns_t_a), -1);
	reply(&p, ns_r_noerror, false, "example.com", ns_t_a, 0, 0);
	CHECK_INT_EQ(ttl(&p, ns_t_a), -1);
}

static void test_servfail_and_refused_are_not_cached(void)
{
	struct pkt p;

	reply(&p, ns_r_servfail, false, "example.com", ns_t_a, 0, 1);
	rr_soa(&p, "example.com", 900, 600);
	CHECK_INT_EQ(ttl(&p, ns_t_a), -1);
	reply(&p, ns_r_refused, false, "example.com", ns_t_a, 0, 0);
	CHECK_INT_EQ(ttl(&p, ns_t_a), -1);
	reply(&p, ns_r_formerr, false, "example.com", ns_t_a, 0, 0);
	CHECK_INT_EQ(ttl(&p, ns_t_a), -1);
}

static void test_a_truncated_reply_is_not_cached(void)
{
	struct pkt p;

	reply(&p, ns_r_noerror, true, "example.com", ns_t_a, 1, 0);
	rr_a(&p, "example.com", 300);
	CHECK_INT_EQ(ttl(&p, ns_t_a), -1);
}

static void test_a_malformed_reply_is_not_cached(void)
{
	struct pkt p;

	reply(&p, ns_r_noerror, false, "example.com", ns_t_a, 1, 0);
	rr_a(&p, "example.com", 300);
	CHECK_INT_EQ(dnscache_ttl(p.b, p.n - 3, ns_t_a, MAX_TTL, NEG_TTL), -1);
	CHECK_INT_EQ(dnscache_ttl(p.b, 5, ns_t_a, MAX_TTL, NEG_TTL), -1);
	/* A question, not a reply. */
	p.b[2] &= 0x7f;
	CHECK_INT_EQ(dnscache_ttl(p.b, p.n, ns_t_a, MAX_TTL, NEG_TTL), -1);
}

static void test_a_ttl_with_the_top_bit_set_reads_as_zero(void)
{
	struct pkt p;

	/* RFC 2181 8 */
	reply(&p, ns_r_noerror, false, "example.com", ns_t_a, 1, 0);
	rr_a(&p, "example.com", 0x80000010UL);
	CHECK_INT_EQ(ttl(&p, ns_t_a), 0);
}

/* positive - an A reply for name with ttl */
static void positive(struct pkt *p, const char *name, unsigned long t)
{
	reply(p, ns_r_noerror, false, name, ns_t_a, 1, 0);
	rr_a(p, name, t);
}

static void test_cache_returns_what_was_put_until_it_expires(void)
{
	struct dnscache *c = dnscache_new(10, MAX_TTL, NEG_TTL);
	unsigned char buf[512];
	struct pkt p;

	positive(&p, "example.com", 60);
	CHECK(dnscache_put(c, "example.com", ns_t_a, p.b, p.n, 1000));
	CHECK_INT_EQ(dnscache_get(c, "example.com", ns_t_a, 1000, buf, sizeof(buf)), p.n);
	CHECK_MEM_EQ(buf, p.n, p.b, p.n);
	CHECK_INT_EQ(dnscache_get(c, "example.com", ns_t_a, 60999, buf, sizeof(buf)), p.n);
	CHECK_INT_EQ(dnscache_get(c, "example.com", ns_t_a, 61000, buf, sizeof(buf)), -1);
	dnscache_free(c);
}

static void test_cache_keys_ignore_case_and_a_trailing_dot_but_not_type(void)
{
	struct dnscache *c = dnscache_new(10, MAX_TTL, NEG_TTL);
	unsigned char buf[512];
	struct pkt p;

	positive(&p, "Example.COM", 60);
	CHECK(dnscache_put(c, "Example.COM.", ns_t_a, p.b, p.n, 0));
	CHECK_INT_EQ(dnscache_get(c, "example.com", ns_t_a, 0, buf, sizeof(buf)), p.n);
	CHECK_INT_EQ(dnscache_get(c, "EXAMPLE.com.", ns_t_a, 0, buf, sizeof(buf)), p.n);
	CHECK_INT_EQ(dnscache_get(c, "example.com", ns_t_txt, 0, buf, sizeof(buf)), -1);
	CHECK_INT_EQ(dnscache_get(c, "www.example.com", ns_t_a, 0, buf, sizeof(buf)), -1);
	dnscache_free(c);
}

static void test_cache_copies_at_most_len_and_returns_the_whole_length(void)
{
	struct dnscache *c = dnscache_new(10, MAX_TTL, NEG_TTL);
	unsigned char buf[512];
	struct pkt p;

	positive(&p, "example.com", 60);
	dnscache_put(c, "example.com", ns_t_a, p.b, p.n, 0);
	memset(buf, 0xee, sizeof(buf));
	CHECK_INT_EQ(dnscache_get(c, "example.com", ns_t_a, 0, buf, 12), p.n);
	CHECK_MEM_EQ(buf, 12, p.b, 12);
	CHECK_UINT_EQ(buf[12], 0xee);
	CHECK_INT_EQ(dnscache_get(c, "example.com", ns_t_a, 0, NULL, 0), p.n);
	dnscache_free(c);
}

static void test_cache_stores_nothing_it_may_not_keep(void)
{
	struct dnscache *c = dnscache_new(10, MAX_TTL, NEG_TTL);
	struct dnscache_stats st;
	struct pkt p;

	reply(&p, ns_r_servfail, false, "example.com", ns_t_a, 0, 0);
	CHECK(!dnscache_put(c, "example.com", ns_t_a, p.b, p.n, 0));
	positive(&p, "example.com", 0);
	CHECK(!dnscache_put(c, "example.com", ns_t_a, p.b, p.n, 0));
	dnscache_stats(c, &st);
	CHECK_UINT_EQ(st.entries, 0);
	dnscache_free(c);
}

static void test_cache_replaces_an_entry_of_the_same_key(void)
{
	struct dnscache *c = dnscache_new(10, MAX_TTL, NEG_TTL);
	struct dnscache_stats st;
	unsigned char buf[512];
	struct pkt p, q;

	positive(&p, "example.com", 60);
	dnscache_put(c, "example.com", ns_t_a, p.b, p.n, 0);
	reply(&q, ns_r_nxdomain, false, "example.com", ns_t_a, 0, 1);
	rr_soa(&q, "example.com", 10, 10);
	dnscache_put(c, "example.com", ns_t_a, q.b, q.n, 0);
	CHECK_INT_EQ(dnscache_get(c, "example.com", ns_t_a, 0, buf, sizeof(buf)), q.n);
	CHECK_INT_EQ(dnscache_get(c, "example.com", ns_t_a, 10000, buf, sizeof(buf)), -1);
	dnscache_stats(c, &st);
	CHECK_UINT_EQ(st.entries, 0);
	dnscache_free(c);
}

static void test_a_full_cache_drops_the_least_recently_used(void)
{
	struct dnscache *c = dnscache_new(3, MAX_TTL, NEG_TTL);
	struct dnscache_stats st;
	struct pkt a, b, cc, d;

	positive(&a, "a.example", 60);
	positive(&b, "b.example", 60);
	positive(&cc, "c.example", 60);
	positive(&d, "d.example", 60);
	dnscache_put(c, "a.example", ns_t_a, a.b, a.n, 0);
	dnscache_put(c, "b.example", ns_t_a, b.b, b.n, 0);
	dnscache_put(c, "c.example", ns_t_a, cc.b, cc.n, 0);
	/* a is used again, so b is now the oldest */
	CHECK(dnscache_get(c, "a.example", ns_t_a, 1, NULL, 0) > 0);
	dnscache_put(c, "d.example", ns_t_a, d.b, d.n, 2);
	CHECK(dnscache_get(c, "a.example", ns_t_a, 3, NULL, 0) > 0);
	CHECK_INT_EQ(dnscache_get(c, "b.example", ns_t_a, 3, NULL, 0), -1);
	CHECK(dnscache_get(c, "c.example", ns_t_a, 3, NULL, 0) > 0);
	CHECK(dnscache_get(c, "d.example", ns_t_a, 3, NULL, 0) > 0);
	dnscache_stats(c, &st);
	CHECK_UINT_EQ(st.entries, 3);
	CHECK_UINT_EQ(st.evicted, 1);
	CHECK_UINT_EQ(st.hits, 4);
	CHECK_UINT_EQ(st.misses, 1);
	dnscache_free(c);
}

static void test_a_large_cache_keeps_every_entry_as_it_grows(void)
{
	struct dnscache *c = dnscache_new(5000, MAX_TTL, NEG_TTL);
	struct dnscache_stats st;
	char name[64];
	struct pkt p;
	int missing = 0;

	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "host%d.example", i);
		positive(&p, name, 60);
		dnscache_put(c, name, ns_t_a, p.b, p.n, 0);
	}
	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "host%d.example", i);
		if (dnscache_get(c, name, ns_t_a, 0, NULL, 0) < 0)
			missing++;
	}
	CHECK_INT_EQ(missing, 0);
	/* One more pushes out the least recently used: host0. */
	positive(&p, "one.more", 60);
	dnscache_put(c, "one.more", ns_t_a, p.b, p.n, 0);
	CHECK_INT_EQ(dnscache_get(c, "host0.example", ns_t_a, 0, NULL, 0), -1);
	dnscache_stats(c, &st);
	CHECK_UINT_EQ(st.entries, 5000);
	dnscache_free(c);
}

static void test_an_impossibly_long_name_is_never_cached(void)
{
	struct dnscache *c = dnscache_new(10, MAX_TTL, NEG_TTL);
	char *name = malloc(5000);
	struct pkt p;

	memset(name, 'a', 4999);
	name[4999] = 0;
	positive(&p, "example.com", 60);
	CHECK(!dnscache_put(c, name, ns_t_a, p.b, p.n, 0));
	CHECK_INT_EQ(dnscache_get(c, name, ns_t_a, 0, NULL, 0), -1);
	free(name);
	dnscache_free(c);
}

int main(void)
{
	RUN(test_a_positive_answer_is_kept_for_its_smallest_ttl);
	RUN(test_a_positive_ttl_is_capped_by_max_ttl);
	RUN(test_a_cname_chain_counts_towards_the_smallest_ttl);
	RUN(test_nxdomain_is_kept_for_the_soa_minimum_when_smaller);
	RUN(test_nxdomain_is_kept_for_the_soa_ttl_when_smaller);
	RUN(test_nodata_is_kept_like_nxdomain);
	RUN(test_nodata_after_a_cname_is_no_longer_than_the_cname);
	RUN(test_an_answer_of_another_type_only_is_nodata);
	RUN(test_negative_ttl_is_capped_by_negative_ttl);
	RUN(test_negative_answers_without_soa_are_not_cached);
	RUN(test_servfail_and_refused_are_not_cached);
	RUN(test_a_truncated_reply_is_not_cached);
	RUN(test_a_malformed_reply_is_not_cached);
	RUN(test_a_ttl_with_the_top_bit_set_reads_as_zero);
	RUN(test_cache_returns_what_was_put_until_it_expires);
	RUN(test_cache_keys_ignore_case_and_a_trailing_dot_but_not_type);
	RUN(test_cache_copies_at_most_len_and_returns_the_whole_length);
	RUN(test_cache_stores_nothing_it_may_not_keep);
	RUN(test_cache_replaces_an_entry_of_the_same_key);
	RUN(test_a_full_cache_drops_the_least_recently_used);
	RUN(test_a_large_cache_keeps_every_entry_as_it_grows);
	RUN(test_an_impossibly_long_name_is_never_cached);
	return unit_summary();
}
