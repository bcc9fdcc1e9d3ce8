/*
 * test_relay_addr.c - the relay filter's pure logic: recipients, domains,
 * IDN, networks
 *
 * The heart is the trick table: every way of dressing a relay attempt up
 * as a local recipient that the open-relay guard must see through, next
 * to the plain local addresses it must let pass.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "relay_addr.h"
#include "unit.h"

/* The local site of the table tests. */
#define SITE_DOMAINS                                                     \
	"local.org, xn--bcher-kva.example, münchen.example, .hosted.test, " \
	"[192.0.2.1], [IPv6:2001:db8::25]"
#define SITE_ADDRESSES "198.51.100.7, [IPv6:2001:db8::26]"

static struct relay_domains site;

/* test_site_domains_load - the domains of the table tests */
static void test_site_domains_load(void)
{
	char err[256];
	const char *addrs[] = {"198.51.100.7", "[IPv6:2001:db8::26]"};
	size_t i;

	relay_domains_init(&site);
	CHECK_INT_EQ(relay_domains_add_list(&site, SITE_DOMAINS, err,
					    sizeof(err)), 0);
	for (i = 0; i < 2; i++)
		CHECK_INT_EQ(relay_domains_add_address(&site, addrs[i], err,
						       sizeof(err)), 0);
	relay_domains_finish(&site);
}

/* classify - the class of rcpt at the test site */
static enum relay_class classify(const char *rcpt, bool percent)
{
	struct relay_policy policy = {&site, percent};
	const char *reason = NULL;
	enum relay_class cls = relay_classify(&policy, rcpt, &reason);

	if (reason == NULL || *reason == '\0')
		return (enum relay_class)-1;
	return cls;
}

#define L RELAY_LOCAL
#define R RELAY_REMOTE
#define I RELAY_INVALID

/* One row: the recipient as between the angle brackets, its class with
 * the percent hack refused, and with it allowed. */
struct trick {
	const char *rcpt;
	enum relay_class strict;
	enum relay_class percent_ok;
};

static const struct trick tricks[] = {
	/* plain local addresses pass */
	{"user@local.org", L, L},
	{"USER@LOCAL.ORG", L, L},
	{"User@Local.Org", L, L},
	{"user@local.org.", L, L},
	{"first.last+tag@local.org", L, L},
	{"\"john smith\"@local.org", L, L},
	{"\"plain\"@local.org", L, L},
	{"Postmaster", L, L},
	{"postmaster", L, L},
	{"POSTMASTER", L, L},
	{"postmaster@local.org", L, L},
	/* plain remote addresses */
	{"user@remote.example", R, R},
	{"user@remote.example.", R, R},
	{"postmaster@remote.example", R, R},
	/* percent hack */
	{"user%remote.example@local.org", R, R},
	{"user%local.org@local.org", R, L},
	{"user%remote.example%local.org@local.org", R, R},
	{"user%local.org%local.org@local.org", R, L},
	{"user%remote.example@remote.example", R, R},
	{"user%@local.org", R, I},
	/* source routes, in case the host leaves one */
	{"@local.org:user@remote.example", R, R},
	{"@local.org,@local.org:user@remote.example", R, R},
	{"@local.org:user@local.org", R, R},
	/* quoted local parts hiding a route */
	{"\"user@remote.example\"@local.org", R, R},
	{"\"user%remote.example\"@local.org", R, R},
	{"\"remote.example!user\"@local.org", R, R},
	{"\"user\\@remote.example\"@local.org", R, R},
	{"\"@remote.example:user\"@local.org", R, R},
	/* several @ */
	{"user@remote.example@local.org", R, R},
	{"user@local.org@remote.example", R, R},
	{"\"user\"@remote.example@local.org", R, R},
	/* bang paths */
	{"remote.example!user@local.org", R, R},
	{"user!remote.example@local.org", R, R},
	{"remote.example!user", R, R},
	/* sub-domain and look-alike tricks */
	{"user@evil-local.org", R, R},
	{"user@local.org.evil.com", R, R},
	{"user@local.orgevil.com", R, R},
	{"user@sub.local.org", R, R},
	{"user@xlocal.org", R, R},
	{"user@hosted.test", R, R},
	{"user@a.hosted.test", L, L},
	{"user@a.b.HOSTED.test.", L, L},
	{"user@hosted.test.evil.com", R, R},
	{"user@evilhosted.test", R, R},
	/* trailing dots */
	{"user@local.org..", I, I},
	{"user@.local.org", I, I},
	{"user@local..org", I, I},
	{"user@.", I, I},
	/* IP literals */
	{"user@[192.0.2.1]", L, L},
	{"user@[192.0.2.2]", R, R},
	{"user@[198.51.100.7]", L, L},
	{"user@[IPv6:2001:db8::25]", L, L},
	{"user@[ipv6:2001:DB8:0:0:0:0:0:25]", L, L},
	{"user@[IPv6:2001:db8::26]", L, L},
	{"user@[IPv6:2001:db8::1]", R, R},
	{"user@[IPv6:::ffff:192.0.2.1]", L, L},
	{"user@[2001:db8::25]", I, I},
	{"user@[IPv6:192.0.2.1]", I, I},
	{"user@[192.0.2.1", I, I},
	{"user@[192.0.2.256]", I, I},
	{"user@[192.0.2.01]", I, I},
	{"user@[tag:whatever]", I, I},
	{"user@[192.0.2.1].", I, I},
	{"user@192.0.2.1", R, R},
	/* IDN */
	{"user@bücher.example", L, L},
	{"user@xn--bcher-kva.example", L, L},
	{"user@XN--BCHER-KVA.EXAMPLE", L, L},
	{"user@BÜCHER.example", R, R}, /* no Unicode case folding */
	{"user@Bücher.example", L, L},
	{"user@xn--mnchen-3ya.example", L, L},
	{"user@münchen.example", L, L},
	{"user@bücher.example.evil.com", R, R},
	{"user@bucher.example", R, R},
	{"user@bücher。example", L, L},
	{"jörg@local.org", L, L},
	{"user@b\xc3\xbc\xc3\x28.example", I, I}, /* bad UTF-8 */
	{"user@b\xc0\xbc.example", I, I},	  /* overlong */
	/* empty and missing parts */
	{"", I, I},
	{"@local.org", I, I},
	{"user@", I, I},
	{"user", I, I},
	{"\"\"@local.org", I, I},
	{"\"postmaster\"", I, I},
	{"postmaster.x", I, I},
	/* dot-string syntax */
	{".user@local.org", I, I},
	{"user.@local.org", I, I},
	{"us..er@local.org", I, I},
	{"\"user\".x@local.org", I, I},
	{"\"user@local.org", I, I},
	{"user(comment)@local.org", I, I},
	{"<user@local.org>", I, I},
	/* white space and control characters */
	{"user @local.org", I, I},
	{" user@local.org", I, I},
	{"user@local.org ", I, I},
	{"user@ local.org", I, I},
	{"us\ter@local.org", I, I},
	{"user@local.org\r\nRCPT TO:<x@remote.example>", I, I},
	{"user\x7f@local.org", I, I},
	{"\"us\x01r\"@local.org", I, I},
	/* domain syntax */
	{"user@-local.org", I, I},
	{"user@local-.org", I, I},
	{"user@loc_al.org", I, I},
	{"user@local.org:25", I, I},
};

/* test_trick_table - every row of the table, both percent settings */
static void test_trick_table(void)
{
	size_t i;
	enum relay_class got;

	CHECK(sizeof(tricks) / sizeof(tricks[0]) >= 30);
	for (i = 0; i < sizeof(tricks) / sizeof(tricks[0]); i++) {
		got = classify(tricks[i].rcpt, false);
		if (got != tricks[i].strict) {
			unit_fail_begin(__FILE__, __LINE__);
			fprintf(stderr, "<");
			unit_print_mem(tricks[i].rcpt, strlen(tricks[i].rcpt));
			fprintf(stderr, "> is %s, expected %s\n",
				relay_class_name(got),
				relay_class_name(tricks[i].strict));
		}
		got = classify(tricks[i].rcpt, true);
		if (got != tricks[i].percent_ok) {
			unit_fail_begin(__FILE__, __LINE__);
			fprintf(stderr, "with allow_percent_hack: <");
			unit_print_mem(tricks[i].rcpt, strlen(tricks[i].rcpt));
			fprintf(stderr, "> is %s, expected %s\n",
				relay_class_name(got),
				relay_class_name(tricks[i].percent_ok));
		}
	}
}

/* test_overlong_addresses_are_invalid - RFC 5321 4.5.3.1 limits */
static void test_overlong_addresses_are_invalid(void)
{
	char buf[600];

	/* a local part of 64 is fine, 65 is not */
	memset(buf, 'a', 64);
	strcpy(buf + 64, "@local.org");
	CHECK_INT_EQ(classify(buf, false), RELAY_LOCAL);
	memset(buf, 'a', 65);
	strcpy(buf + 65, "@local.org");
	CHECK_INT_EQ(classify(buf, false), RELAY_INVALID);

	/* a label of 63 is fine, 64 is not */
	strcpy(buf, "user@");
	memset(buf + 5, 'b', 63);
	strcpy(buf + 68, ".hosted.test");
	CHECK_INT_EQ(classify(buf, false), RELAY_LOCAL);
	strcpy(buf, "user@");
	memset(buf + 5, 'b', 64);
	strcpy(buf + 69, ".hosted.test");
	CHECK_INT_EQ(classify(buf, false), RELAY_INVALID);

	/* a path longer than 256 bytes, even to a local domain */
	strcpy(buf, "u@");
	for (int i = 0; i < 30; i++)
		strcat(buf, "abcdefgh.");
	strcat(buf, "hosted.test");
	CHECK(strlen(buf) > RELAY_PATH_MAX);
	CHECK_INT_EQ(classify(buf, false), RELAY_INVALID);

	/* a U-label whose A-label passes 63 bytes */
	CHECK_INT_EQ(classify("user@他们为什么不说中文他們爲什麽不說中文.hosted.test",
			      false), RELAY_LOCAL);
	CHECK_INT_EQ(classify("user@他们为什么不说中文他們爲什麽不說中文"
			      "ليهمابتكلموشعربي.hosted.test", false),
		     RELAY_INVALID);
	/* ... and one that repeats a letter stays short */
	strcpy(buf, "user@");
	for (int i = 0; i < 30; i++)
		strcat(buf, "ü");
	strcat(buf, ".hosted.test");
	CHECK_INT_EQ(classify(buf, false), RELAY_LOCAL);
}

/* test_reasons_name_the_trick - the log says which trick was seen */
static void test_reasons_name_the_trick(void)
{
	struct relay_policy policy = {&site, false};
	const char *reason = NULL;

	relay_classify(&policy, "user%remote.example@local.org", &reason);
	CHECK_STR_EQ(reason, "percent hack");
	relay_classify(&policy, "@local.org:user@remote.example", &reason);
	CHECK_STR_EQ(reason, "source route");
	relay_classify(&policy, "\"a@b\"@local.org", &reason);
	CHECK_STR_EQ(reason, "quoted local part");
	relay_classify(&policy, "b!a@local.org", &reason);
	CHECK_STR_EQ(reason, "bang path");
	relay_classify(&policy, "a@b@local.org", &reason);
	CHECK_STR_EQ(reason, "several @");
	relay_classify(&policy, "a@remote.example", &reason);
	CHECK_STR_EQ(reason, "remote domain");
	relay_classify(&policy, "a@local.org", &reason);
	CHECK_STR_EQ(reason, "local domain");
	relay_classify(&policy, "Postmaster", &reason);
	CHECK_STR_EQ(reason, "postmaster");
	CHECK_INT_EQ(relay_classify(&policy, NULL, &reason), RELAY_INVALID);
	CHECK_INT_EQ(relay_classify(NULL, "a@local.org", NULL), RELAY_INVALID);
}

/* test_postmaster_is_local_without_any_domain - RFC 5321 4.5.1 */
static void test_postmaster_is_local_without_any_domain(void)
{
	struct relay_domains none;
	struct relay_policy policy = {&none, false};

	relay_domains_init(&none);
	relay_domains_finish(&none);
	CHECK_INT_EQ(relay_classify(&policy, "Postmaster", NULL), RELAY_LOCAL);
	CHECK_INT_EQ(relay_classify(&policy, "user@local.org", NULL),
		     RELAY_REMOTE);
	relay_domains_free(&none);
}

/* ---------------------------------------------------------------- */
/* domains */

/* normalize - relay_domain_normalize() of a C string, or "(invalid)" */
static const char *normalize(const char *in)
{
	static char out[RELAY_DOMAIN_BUF];

	if (relay_domain_normalize(in, strlen(in), out, sizeof(out)) < 0)
		return "(invalid)";
	return out;
}

static void test_domains_are_lower_cased_without_trailing_dot(void)
{
	CHECK_STR_EQ(normalize("Local.ORG"), "local.org");
	CHECK_STR_EQ(normalize("local.org."), "local.org");
	CHECK_STR_EQ(normalize("local.org.."), "(invalid)");
	CHECK_STR_EQ(normalize("."), "(invalid)");
	CHECK_STR_EQ(normalize(""), "(invalid)");
	CHECK_STR_EQ(normalize("a"), "a");
	CHECK_STR_EQ(normalize("a-b.c"), "a-b.c");
	CHECK_STR_EQ(normalize("a--b.c"), "a--b.c");
	CHECK_STR_EQ(normalize("-ab.c"), "(invalid)");
	CHECK_STR_EQ(normalize("a b.c"), "(invalid)");
}

static void test_u_labels_become_a_labels(void)
{
	CHECK_STR_EQ(normalize("bücher.example"), "xn--bcher-kva.example");
	CHECK_STR_EQ(normalize("Bücher.Example"), "xn--bcher-kva.example");
	CHECK_STR_EQ(normalize("XN--BCHER-KVA.example"),
		     "xn--bcher-kva.example");
	CHECK_STR_EQ(normalize("münchen.de"), "xn--mnchen-3ya.de");
	CHECK_STR_EQ(normalize("ü.example"), "xn--tda.example");
	CHECK_STR_EQ(normalize("bücher。example"), "xn--bcher-kva.example");
	CHECK_STR_EQ(normalize("bücher．example"), "xn--bcher-kva.example");
	CHECK_STR_EQ(normalize("bücher.example。"), "xn--bcher-kva.example");
	/* C1 controls are no letters */
	CHECK_STR_EQ(normalize("b\xc2\x85.example"), "(invalid)");
	/* a lone continuation byte */
	CHECK_STR_EQ(normalize("b\x80.example"), "(invalid)");
	/* a surrogate, encoded */
	CHECK_STR_EQ(normalize("b\xed\xa0\x80.example"), "(invalid)");
}

static void test_domain_length_limits(void)
{
	char buf[600];
	size_t i;

	/* 4 labels of 63 and dots: 255 bytes, the most RFC 5321 allows */
	buf[0] = '\0';
	for (i = 0; i < 4; i++) {
		size_t n = strlen(buf);

		memset(buf + n, 'a' + (char)i, i == 3 ? 61 : 63);
		buf[n + (i == 3 ? 61 : 63)] = '\0';
		if (i < 3)
			strcat(buf, ".");
	}
	CHECK_UINT_EQ(strlen(buf), 253);
	CHECK_INT_EQ(relay_domain_normalize(buf, strlen(buf), (char[256]){0},
					    256), 253);
	strcat(buf, "ab");
	CHECK_INT_EQ(relay_domain_normalize(buf, strlen(buf), (char[256]){0},
					    256), 255);
	strcat(buf, ".b");
	CHECK_INT_EQ(relay_domain_normalize(buf, strlen(buf), (char[300]){0},
					    300), -1);
	/* a buffer too small is refused, not overrun */
	CHECK_INT_EQ(relay_domain_normalize("local.org", 9, (char[5]){0}, 5),
		     -1);
}

static void test_domain_entries_and_parents(void)
{
	struct relay_domains d;
	char err[256];

	relay_domains_init(&d);
	CHECK_INT_EQ(relay_domains_add_list(&d, "Example.ORG,.parent.net "
						"*.star.net\tbücher.example.",
					    err, sizeof(err)), 0);
	relay_domains_finish(&d);
	CHECK_UINT_EQ(relay_domains_count(&d), 4);
	CHECK(relay_domains_match(&d, "example.org"));
	CHECK(!relay_domains_match(&d, "sub.example.org"));
	CHECK(!relay_domains_match(&d, "parent.net"));
	CHECK(relay_domains_match(&d, "a.parent.net"));
	CHECK(relay_domains_match(&d, "a.b.parent.net"));
	CHECK(!relay_domains_match(&d, "aparent.net"));
	CHECK(!relay_domains_match(&d, "a.parent.net.evil"));
	CHECK(relay_domains_match(&d, "x.star.net"));
	CHECK(relay_domains_match(&d, "xn--bcher-kva.example"));
	CHECK(!relay_domains_match(&d, ""));
	CHECK(!relay_domains_match(&d, NULL));
	relay_domains_free(&d);
}

static void test_bad_domain_entries_are_refused(void)
{
	struct relay_domains d;
	char err[256];

	relay_domains_init(&d);
	CHECK_INT_EQ(relay_domains_add(&d, "exa mple.org", err, sizeof(err)),
		     -1);
	CHECK_INT_EQ(relay_domains_add(&d, "local..org", err, sizeof(err)), -1);
	CHECK(strstr(err, "local..org") != NULL);
	CHECK_INT_EQ(relay_domains_add(&d, "[192.0.2.300]", err, sizeof(err)),
		     -1);
	CHECK_INT_EQ(relay_domains_add(&d, "..local.org", err, sizeof(err)),
		     -1);
	CHECK_INT_EQ(relay_domains_add(&d, "", err, sizeof(err)), -1);
	CHECK_INT_EQ(relay_domains_add_list(&d, "ok.org, bad_one.org", err,
					    sizeof(err)), -1);
	CHECK(strstr(err, "bad_one.org") != NULL);
	CHECK_INT_EQ(relay_domains_add_address(&d, "not-an-ip", err,
					       sizeof(err)), -1);
	CHECK_INT_EQ(relay_domains_add_address(&d, "[IPv6:192.0.2.1]", err,
					       sizeof(err)), -1);
	CHECK_INT_EQ(relay_domains_add_address(&d, "2001:db8::1", err,
					       sizeof(err)), 0);
	relay_domains_free(&d);
}

/* ---------------------------------------------------------------- */
/* Punycode, RFC 3492 section 7.1 */

/* puny - encode the UTF-8 string s */
static const char *puny(const char *s)
{
	static char out[256];
	uint32_t cp[128];
	size_t n = 0;
	const unsigned char *u = (const unsigned char *)s;

	/* a tiny decoder, independent of the one under test */
	while (*u && n < 128) {
		if (*u < 0x80) {
			cp[n++] = *u++;
		} else if ((*u & 0xe0) == 0xc0) {
			cp[n++] = ((uint32_t)(u[0] & 0x1f) << 6) | (u[1] & 0x3f);
			u += 2;
		} else if ((*u & 0xf0) == 0xe0) {
			cp[n++] = ((uint32_t)(u[0] & 0x0f) << 12) |
				  ((uint32_t)(u[1] & 0x3f) << 6) | (u[2] & 0x3f);
			u += 3;
		} else {
			cp[n++] = ((uint32_t)(u[0] & 0x07) << 18) |
				  ((uint32_t)(u[1] & 0x3f) << 12) |
				  ((uint32_t)(u[2] & 0x3f) << 6) | (u[3] & 0x3f);
			u += 4;
		}
	}
	if (relay_punycode_encode(cp, n, out, sizeof(out)) < 0)
		return "(error)";
	return out;
}

static void test_punycode_rfc3492_vectors(void)
{
	/* (A) Arabic (Egyptian) */
	CHECK_STR_EQ(puny("ليهمابتكلموشعربي؟"), "egbpdaj6bu4bxfgehfvwxn");
	/* (B) Chinese (simplified) */
	CHECK_STR_EQ(puny("他们为什么不说中文"), "ihqwcrb4cv8a8dqg056pqjye");
	/* (C) Chinese (traditional) */
	CHECK_STR_EQ(puny("他們爲什麽不說中文"), "ihqwctvzc91f659drss3x8bo0yb");
	/* (D) Czech, with its upper-case basic code point */
	CHECK_STR_EQ(puny("Pročprostěnemluvíčesky"),
		     "Proprostnemluvesky-uyb24dma41a");
	/* (L) 3<nen>B<gumi><kinpachi><sensei> */
	CHECK_STR_EQ(puny("3年B組金八先生"), "3B-ww4c5e180e575a65lsy2b");
	/* (S) only basic code points */
	CHECK_STR_EQ(puny("-> $1.00 <-"), "-> $1.00 <--");
	/* and the IDN examples used elsewhere */
	CHECK_STR_EQ(puny("bücher"), "bcher-kva");
	CHECK_STR_EQ(puny("ü"), "tda");
}

static void test_punycode_refuses_small_buffers_and_non_unicode(void)
{
	uint32_t cp[] = {'b', 0xfc, 'c', 'h', 'e', 'r'};
	uint32_t bad[] = {0x110000};
	char out[16];

	CHECK_INT_EQ(relay_punycode_encode(cp, 6, out, sizeof(out)), 9);
	CHECK_STR_EQ(out, "bcher-kva");
	CHECK_INT_EQ(relay_punycode_encode(cp, 6, out, 9), -1);
	CHECK_INT_EQ(relay_punycode_encode(cp, 6, out, 10), 9);
	CHECK_INT_EQ(relay_punycode_encode(bad, 1, out, sizeof(out)), -1);
	CHECK_INT_EQ(relay_punycode_encode(cp, 0, out, sizeof(out)), 0);
	CHECK_STR_EQ(out, "");
}

/* ---------------------------------------------------------------- */
/* networks */

/* in - whether addr is in the network list text */
static bool in(const char *list, const char *addr)
{
	struct relay_netlist nl;
	char err[256];
	bool r;

	if (relay_netlist_parse(list, &nl, err, sizeof(err)) < 0)
		return false;
	r = relay_netlist_match(&nl, addr);
	relay_netlist_free(&nl);
	return r;
}

/* valid - whether the network list text parses */
static bool valid(const char *list)
{
	struct relay_netlist nl;
	char err[256];

	if (relay_netlist_parse(list, &nl, err, sizeof(err)) < 0)
		return false;
	relay_netlist_free(&nl);
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

	struct relay_netlist nl;
	char err[256];

	CHECK_INT_EQ(relay_netlist_parse("127.0.0.0/8, 10.0.0.0/33", &nl, err,
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
	struct relay_cidr c;
	struct relay_ip ip;

	CHECK_INT_EQ(relay_cidr_parse("0.0.0.0/0", &c), 0);
	CHECK_UINT_EQ(c.prefix, 0);
	CHECK_INT_EQ(relay_cidr_parse("::/0", &c), 0);
	CHECK_INT_EQ(c.net.family, 6);
	CHECK_INT_EQ(relay_cidr_parse("255.255.255.255/32", &c), 0);
	CHECK_INT_EQ(relay_ip_parse("255.255.255.255", false, &ip), 0);
	CHECK(relay_cidr_match(&c, &ip));
	CHECK_INT_EQ(relay_cidr_parse("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
				      &c), 0);
	CHECK_UINT_EQ(c.prefix, 128);
	CHECK_INT_EQ(relay_ip_parse("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
				    false, &ip), 0);
	CHECK(!relay_cidr_match(&c, &ip));
	CHECK_INT_EQ(relay_ip_parse("fe80::1%eth0", false, &ip), -1);
	CHECK_INT_EQ(relay_ip_parse("fe80::1%eth0", true, &ip), 0);
}

int main(void)
{
	RUN(test_site_domains_load);
	RUN(test_trick_table);
	RUN(test_overlong_addresses_are_invalid);
	RUN(test_reasons_name_the_trick);
	RUN(test_postmaster_is_local_without_any_domain);
	RUN(test_domains_are_lower_cased_without_trailing_dot);
	RUN(test_u_labels_become_a_labels);
	RUN(test_domain_length_limits);
	RUN(test_domain_entries_and_parents);
	RUN(test_bad_domain_entries_are_refused);
	RUN(test_punycode_rfc3492_vectors);
	RUN(test_punycode_refuses_small_buffers_and_non_unicode);
	RUN(test_cidr_ipv4);
	RUN(test_cidr_ipv6);
	RUN(test_cidr_ipv4_mapped_clients_match_ipv4_networks);
	RUN(test_cidr_bad_input);
	RUN(test_cidr_prefix_edges);
	relay_domains_free(&site);
	return unit_summary();
}
