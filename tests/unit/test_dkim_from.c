/*
 * test_dkim_from.c - the author domains the dkim filter reads in From:
 *
 * The require policy trusts this reading: a From that a mail reader shows
 * as example.com must give example.com here, however it is dressed up
 * (display names, comments, quoted '@', groups, several mailboxes, a
 * missing bracket), or a forger could pass the policy by dressing.
 */
#include <stdlib.h>
#include <string.h>

#include "dkim_from.h"
#include "unit.h"

#define MAXD 8

/* domains - the domains of value, joined with ' '; *bad gets the rest */
static const char *domains(const char *value, size_t *bad)
{
	static char out[MAXD * PC_DOMAIN_BUF];
	char d[MAXD][PC_DOMAIN_BUF];
	size_t n = pcdkim_from_domains(value, d, MAXD, bad);

	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		if (i)
			strcat(out, " ");
		strcat(out, d[i]);
	}
	return out;
}

/* test_plain_forms - the usual ways of writing one mailbox */
static void test_plain_forms(void)
{
	static const char *const forms[] = {
		"user@example.com",
		"<user@example.com>",
		"User Name <user@example.com>",
		"\"User Name\" <user@example.com>",
		"user@example.com (User Name)",
		"(comment) User <user@Example.COM.>",
		"  user@example.com  ",
		"\"Name, with comma\" <user@example.com>",
		"User <user@example.com",	/* no closing bracket */
		"<@relay.example:user@example.com>", /* source route */
		"\"odd@name\"@example.com",
	};
	size_t bad;

	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		CHECK_STR_EQ(domains(forms[i], &bad), "example.com");
		CHECK_UINT_EQ(bad, 0);
	}
}

/* test_display_name_does_not_count - the address does, as a reader shows */
static void test_display_name_does_not_count(void)
{
	size_t bad;

	CHECK_STR_EQ(domains("\"boss@example.com\" <x@evil.example>", &bad),
		     "evil.example");
	CHECK_STR_EQ(domains("boss@example.com <x@evil.example>", &bad),
		     "evil.example");
	CHECK_STR_EQ(domains("(boss@example.com) x@evil.example", &bad),
		     "evil.example");
	CHECK_STR_EQ(domains("Name (a <b@c.example>) <x@evil.example>", &bad),
		     "evil.example");
}

/* test_several_mailboxes - every mailbox counts */
static void test_several_mailboxes(void)
{
	size_t bad;

	CHECK_STR_EQ(domains("a@one.example, B <b@two.example>", &bad),
		     "one.example two.example");
	CHECK_UINT_EQ(bad, 0);
	CHECK_STR_EQ(domains("team: a@one.example, b@two.example;", &bad),
		     "one.example two.example");
	CHECK_UINT_EQ(bad, 0);
	CHECK_STR_EQ(domains("a@one.example,, ,b@two.example", &bad),
		     "one.example two.example");
	CHECK_UINT_EQ(bad, 0);
}

/* test_unreadable_mailboxes_are_counted - and the others still read */
static void test_unreadable_mailboxes_are_counted(void)
{
	size_t bad;

	CHECK_STR_EQ(domains("nobody", &bad), "");
	CHECK_UINT_EQ(bad, 1);
	CHECK_STR_EQ(domains("user@[192.0.2.1], x@ok.example", &bad),
		     "ok.example");
	CHECK_UINT_EQ(bad, 1);
	CHECK_STR_EQ(domains("<>", &bad), "");
	CHECK_UINT_EQ(bad, 1);
	CHECK_STR_EQ(domains("", &bad), "");
	CHECK_UINT_EQ(bad, 0);
	CHECK_STR_EQ(domains("user@bad..example", &bad), "");
	CHECK_UINT_EQ(bad, 1);
}

/* test_idn_is_normalised - U-labels compare as A-labels */
static void test_idn_is_normalised(void)
{
	size_t bad;

	CHECK_STR_EQ(domains("Jürgen <j@bücher.example>", &bad),
		     "xn--bcher-kva.example");
	CHECK_UINT_EQ(bad, 0);
}

/* test_max_is_kept - more mailboxes than room: the rest are "bad" */
static void test_max_is_kept(void)
{
	char d[2][PC_DOMAIN_BUF];
	size_t bad;

	CHECK_UINT_EQ(pcdkim_from_domains("a@a.example, b@b.example, "
					  "c@c.example", d, 2, &bad), 2);
	CHECK_UINT_EQ(bad, 1);
	CHECK_STR_EQ(d[1], "b.example");
}

/* test_unbalanced_quotes_and_comments_end_safely - no overrun */
static void test_unbalanced_quotes_and_comments_end_safely(void)
{
	size_t bad;

	/* the whole rest is the quoted string: its '@' still counts */
	CHECK_STR_EQ(domains("\"unterminated <x@y.example>", &bad),
		     "y.example");
	CHECK_STR_EQ(domains("(unterminated x@y.example", &bad), "");
	CHECK_STR_EQ(domains("x@y.example \\", &bad), "");
	CHECK_UINT_EQ(bad, 1);
	CHECK_STR_EQ(domains("\"a\\", &bad), "");
}

int main(void)
{
	RUN(test_plain_forms);
	RUN(test_display_name_does_not_count);
	RUN(test_several_mailboxes);
	RUN(test_unreadable_mailboxes_are_counted);
	RUN(test_idn_is_normalised);
	RUN(test_max_is_kept);
	RUN(test_unbalanced_quotes_and_comments_end_safely);
	return unit_summary();
}
