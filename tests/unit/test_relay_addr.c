/*
 * test_relay_addr.c - the relay filter's pure logic: recipients and
 * local domains
 *
 * The heart is the trick table: every way of dressing a relay attempt up
 * as a local recipient that the open-relay guard must see through, next
 * to the plain local addresses it must let pass.
 */
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
	{"user@BÜCHER.example", L, L},
	{"user@Bücher.example", L, L},
	{"user@xn--mnchen-3ya.example", L, L},
	{"user@münchen.example", L, L},
	{"user@bücher.example.evil.com", R, R},
	{"user@bucher.example", R, R},
	{"user@bücher。example", L, L},
	{"jörg@local.org", L, L},
	{"user@b\xc3\xbc\xc3\x28.example", I, I}, /* bad UTF-8 */
	{"user@b\xc0\xbc.example", I, I},	  /* overlong */
	/* what UTS #46 maps: every spelling of a local domain is local */
	{"user@BÜCHER.EXAMPLE", L, L},			/* upper-case U-label */
	{"user@MÜNCHEN.example", L, L},			/* local as U-label */
	{"user@XN--MNCHEN-3YA.EXAMPLE", L, L},		/* ... as A-label */
	{"user@bu\xcc\x88" "cher.example", L, L},		/* NFD */
	{"user@MU\xcc\x88NCHEN.example", L, L},		/* NFD upper case */
	{"user@\xef\xbd\x8c\xef\xbd\x8f\xef\xbd\x83\xef\xbd\x81\xef\xbd\x8c.org", L, L},	/* fullwidth */
	{"user@\xef\xbc\xac\xef\xbc\xaf\xef\xbc\xa3\xef\xbc\xa1\xef\xbc\xac.org", L, L},	/* FULLWIDTH */
	{"user@local\xef\xbc\x8e" "org", L, L},		/* U+FF0E */
	{"user@local\xe3\x80\x82" "org", L, L},		/* U+3002 */
	{"user@local\xef\xbd\xa1" "org", L, L},		/* U+FF61 */
	{"user@local.org\xef\xbc\x8e", L, L},		/* trailing U+FF0E */
	{"user@a\xe3\x80\x82" "hosted.test", L, L},
	{"user@lo\xc2\xad" "cal.org", L, L},		/* soft hyphen: ignored */
	/* ... and a spelling of a remote domain stays remote */
	{"user@local.org\xef\xbc\x8e" "evil.com", R, R},
	{"user@local\xe3\x80\x82" "org.evil.com", R, R},
	{"user@\xef\xbd\x92" "emote.example", R, R},
	{"user@bücher\xe3\x80\x82" "example\xe3\x80\x82" "evil.com", R, R},
	{"\"user@remote.example\"@ｌocal.org", R, R},
	{"user%remote.example@ＬＯＣＡＬ.ORG", R, R},
	{"user%ｌocal.org@local.org", R, L},
	/* what IDNA refuses is no domain */
	{"user@xn--zz.example", I, I},			/* bad Punycode */
	{"user@xn--garbage-zzz.example", I, I},	/* not its own A-label */
	{"user@ab--cd.local.org", I, I},		/* reserved hyphens */
	{"user@local.org\xef\xbc\x8e\xef\xbc\x8e", I, I},
	{"user@b\xc2\x85.example", I, I},		/* C1 control */
	{"user\xef\xbc\xa0local.org", I, I},		/* fullwidth '@' */
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
/* local domains */

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

int main(void)
{
	RUN(test_site_domains_load);
	RUN(test_trick_table);
	RUN(test_overlong_addresses_are_invalid);
	RUN(test_reasons_name_the_trick);
	RUN(test_postmaster_is_local_without_any_domain);
	RUN(test_domain_entries_and_parents);
	RUN(test_bad_domain_entries_are_refused);
	relay_domains_free(&site);
	return unit_summary();
}
