/*
 * test_auth.c - SASL PLAIN and LOGIN for AUTH (proxy/auth.c) and the
 * line parser of Dovecot's auth protocol (proxy/dovecot_auth.c)
 *
 * base64 both ways and its refusals (non-canonical padding, stray bytes,
 * white space); PLAIN messages with and without an authzid and the
 * malformed ones; every path of an exchange: PLAIN with and without the
 * initial response, LOGIN in two steps and with the user name given at
 * once, "*", bad base64, an unknown or unoffered mechanism; MAIL's AUTH=
 * values; and Dovecot's lines: the handshake, OK/FAIL/CONT with their
 * fields, and the malformed ones.
 */
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "dovecot_auth.h"
#include "unit.h"

static const unsigned both = 1u << AUTH_MECH_PLAIN | 1u << AUTH_MECH_LOGIN;

/* dec - decode a C string; -1 or the length */
static long dec(const char *in, unsigned char *out, size_t cap)
{
	return auth_base64_decode(in, strlen(in), out, cap);
}

static void test_base64_round_trips(void)
{
	unsigned char out[64];
	char enc[64];
	const char *words[] = { "", "a", "ab", "abc", "abcd", "\0alice\0pw" };
	size_t lens[] = { 0, 1, 2, 3, 4, 9 };

	for (size_t i = 0; i < 6; i++) {
		size_t n = auth_base64_encode((const unsigned char *)words[i], lens[i], enc, sizeof(enc));
		CHECK_UINT_EQ(n, 4 * ((lens[i] + 2) / 3));
		CHECK_INT_EQ(dec(enc, out, sizeof(out)), (long)lens[i]);
		CHECK_MEM_EQ(out, lens[i], words[i], lens[i]);
	}
	CHECK_STR_EQ((auth_base64_encode((const unsigned char *)"\0alice\0pw", 9, enc, sizeof(enc)), enc),
		     "AGFsaWNlAHB3");
	/* Too small a buffer: nothing, never half. */
	CHECK_UINT_EQ(auth_base64_encode((const unsigned char *)"abcd", 4, enc, 8), 0);
	CHECK_INT_EQ(dec("YWJjZA==", out, 3), -1);
}

static void test_base64_refuses_what_is_not_canonical(void)
{
	unsigned char out[64];

	CHECK_INT_EQ(dec("YWJ", out, sizeof(out)), -1);	  /* not a multiple of 4 */
	CHECK_INT_EQ(dec("YW=j", out, sizeof(out)), -1);  /* data after padding */
	CHECK_INT_EQ(dec("=WJj", out, sizeof(out)), -1);
	CHECK_INT_EQ(dec("YQ==YQ==", out, sizeof(out)), -1); /* padding inside */
	CHECK_INT_EQ(dec("YR==", out, sizeof(out)), -1);  /* leftover bits set */
	CHECK_INT_EQ(dec("YWF=", out, sizeof(out)), -1);
	CHECK_INT_EQ(dec("YW Jj", out, sizeof(out)), -1);
	CHECK_INT_EQ(dec("YWJj\r\n", out, sizeof(out)), -1);
	CHECK_INT_EQ(dec("YW-j", out, sizeof(out)), -1);  /* base64url is not base64 */
	CHECK_INT_EQ(dec("====", out, sizeof(out)), -1);
	CHECK_INT_EQ(dec("", out, sizeof(out)), 0);
}

static void test_plain_message_fields(void)
{
	struct auth_creds c;

	CHECK_INT_EQ(auth_plain_parse((const unsigned char *)"\0alice\0pw", 9, &c), 0);
	CHECK_STR_EQ(c.authzid, "");
	CHECK_STR_EQ(c.user, "alice");
	CHECK_STR_EQ(c.pass, "pw");
	CHECK_INT_EQ(auth_plain_parse((const unsigned char *)"bob\0alice\0pw", 12, &c), 0);
	CHECK_STR_EQ(c.authzid, "bob");
	CHECK_INT_EQ(auth_plain_parse((const unsigned char *)"alice\0pw", 8, &c), -1);
	CHECK_INT_EQ(auth_plain_parse((const unsigned char *)"\0\0pw", 4, &c), -1);
	CHECK_INT_EQ(auth_plain_parse((const unsigned char *)"\0alice\0", 7, &c), -1);
	CHECK_INT_EQ(auth_plain_parse((const unsigned char *)"\0a\0b\0c", 6, &c), -1);
	CHECK_INT_EQ(auth_plain_parse((const unsigned char *)"", 0, &c), -1);

	char *big = calloc(1, AUTH_FIELD_MAX + 10);
	memset(big + 2, 'x', AUTH_FIELD_MAX + 1);
	big[0] = 0;
	big[1] = 'u';
	big[2] = 0;
	/* "\0u\0" + a password one byte too long */
	CHECK_INT_EQ(auth_plain_parse((unsigned char *)big, AUTH_FIELD_MAX + 4, &c), -1);
	free(big);
}

static void test_plain_with_initial_response_checks_at_once(void)
{
	struct auth_exchange x;
	const char *arg = "PLAIN AGFsaWNlAHB3";

	CHECK_INT_EQ(auth_start(&x, arg, strlen(arg), both), AUTH_NEXT_CHECK);
	CHECK_INT_EQ(x.mech, AUTH_MECH_PLAIN);
	CHECK_STR_EQ(x.creds.user, "alice");
	CHECK_STR_EQ(x.creds.pass, "pw");
	char b64[64];
	CHECK(auth_plain_message(&x.creds, b64, sizeof(b64)) > 0);
	CHECK_STR_EQ(b64, "AGFsaWNlAHB3");
	auth_exchange_clear(&x);
	CHECK_STR_EQ(x.creds.pass, "");
}

static void test_plain_without_initial_response_asks_with_an_empty_challenge(void)
{
	struct auth_exchange x;

	CHECK_INT_EQ(auth_start(&x, "plain", 5, both), AUTH_NEXT_CHALLENGE);
	CHECK_STR_EQ(x.challenge, "");
	CHECK_INT_EQ(auth_step(&x, "AGFsaWNlAHB3", 12), AUTH_NEXT_CHECK);
	CHECK_STR_EQ(x.creds.user, "alice");
}

static void test_login_takes_two_steps(void)
{
	struct auth_exchange x;

	CHECK_INT_EQ(auth_start(&x, "LOGIN", 5, both), AUTH_NEXT_CHALLENGE);
	CHECK_STR_EQ(x.challenge, "VXNlcm5hbWU6");
	CHECK_INT_EQ(auth_step(&x, "YWxpY2U=", 8), AUTH_NEXT_CHALLENGE);
	CHECK_STR_EQ(x.challenge, "UGFzc3dvcmQ6");
	CHECK_INT_EQ(auth_step(&x, "cHc=", 4), AUTH_NEXT_CHECK);
	CHECK_STR_EQ(x.creds.user, "alice");
	CHECK_STR_EQ(x.creds.pass, "pw");
	/* The user name as the initial response skips the first question. */
	CHECK_INT_EQ(auth_start(&x, "LOGIN YWxpY2U=", 14, both), AUTH_NEXT_CHALLENGE);
	CHECK_STR_EQ(x.challenge, "UGFzc3dvcmQ6");
}

static void test_refusals_carry_their_replies(void)
{
	struct auth_exchange x;

	CHECK_INT_EQ(auth_start(&x, "CRAM-MD5", 8, both), AUTH_NEXT_REFUSE);
	CHECK_INT_EQ(x.code, 504);
	CHECK_STR_EQ(x.enh, "5.5.4");
	CHECK_STR_EQ(x.text, "Unrecognized authentication mechanism");
	CHECK_INT_EQ(auth_start(&x, "LOGIN", 5, 1u << AUTH_MECH_PLAIN), AUTH_NEXT_REFUSE);
	CHECK_INT_EQ(x.code, 504);
	CHECK_INT_EQ(auth_start(&x, "PLAIN !!!!", 10, both), AUTH_NEXT_REFUSE);
	CHECK_INT_EQ(x.code, 501);
	CHECK_STR_EQ(x.enh, "5.5.2");
	CHECK_STR_EQ(x.text, "Invalid base64 data");
	CHECK_INT_EQ(auth_start(&x, "PLAIN YWxpY2U=", 14, both), AUTH_NEXT_REFUSE);
	CHECK_STR_EQ(x.text, "Invalid authentication data");
	CHECK_INT_EQ(auth_start(&x, "PLAIN =", 7, both), AUTH_NEXT_REFUSE); /* empty */
	CHECK_INT_EQ(auth_start(&x, "PLAIN AGFsaWNlAHB3 x", 20, both), AUTH_NEXT_REFUSE);

	CHECK_INT_EQ(auth_start(&x, "LOGIN", 5, both), AUTH_NEXT_CHALLENGE);
	CHECK_INT_EQ(auth_step(&x, "*", 1), AUTH_NEXT_REFUSE);
	CHECK_INT_EQ(x.code, 501);
	CHECK_STR_EQ(x.enh, "5.0.0");
	CHECK_STR_EQ(x.text, "Authentication aborted");
	CHECK_INT_EQ(auth_start(&x, "LOGIN", 5, both), AUTH_NEXT_CHALLENGE);
	CHECK_INT_EQ(auth_step(&x, "YWxpY2U=", 8), AUTH_NEXT_CHALLENGE);
	CHECK_INT_EQ(auth_step(&x, "not base64", 10), AUTH_NEXT_REFUSE);
	CHECK_STR_EQ(x.creds.user, ""); /* wiped */
	CHECK_INT_EQ(auth_start(&x, "LOGIN", 5, both), AUTH_NEXT_CHALLENGE);
	CHECK_INT_EQ(auth_step(&x, "AGE=", 4), AUTH_NEXT_REFUSE); /* a NUL in the name */
	CHECK_INT_EQ(auth_start(&x, "PLAIN", 5, both), AUTH_NEXT_CHALLENGE);
	CHECK_INT_EQ(auth_step(&x, "=", 1), AUTH_NEXT_REFUSE);
}

static void test_mail_auth_parameter(void)
{
	CHECK(auth_mail_param_valid("<>"));
	CHECK(auth_mail_param_valid("alice@example.org"));
	CHECK(auth_mail_param_valid("a+2Bb@example.org"));
	CHECK(!auth_mail_param_valid(""));
	CHECK(!auth_mail_param_valid(NULL));
	CHECK(!auth_mail_param_valid("a+zz@example.org"));
}

/* parse - dovecot_auth_parse() of a C string */
static int parse(const char *line, struct dovecot_reply *r)
{
	return dovecot_auth_parse(line, strlen(line), r);
}

static void test_dovecot_handshake_lines(void)
{
	struct dovecot_reply r;

	CHECK_INT_EQ(parse("VERSION\t1\t2", &r), 0);
	CHECK_INT_EQ(r.kind, DOVECOT_LINE_VERSION);
	CHECK_UINT_EQ(r.major, 1);
	CHECK_INT_EQ(parse("MECH\tPLAIN\tplaintext", &r), 0);
	CHECK_INT_EQ(r.kind, DOVECOT_LINE_MECH);
	CHECK_MEM_EQ(r.mech, r.mech_len, "PLAIN", 5);
	CHECK(r.plaintext);
	CHECK_INT_EQ(parse("MECH\tCRAM-MD5\tdictionary\tactive", &r), 0);
	CHECK(!r.plaintext);
	CHECK_INT_EQ(parse("DONE", &r), 0);
	CHECK_INT_EQ(r.kind, DOVECOT_LINE_DONE);
	CHECK_INT_EQ(parse("SPID\t24709", &r), 0);
	CHECK_INT_EQ(r.kind, DOVECOT_LINE_OTHER);
	CHECK_INT_EQ(parse("COOKIE\t3b9979edc24ef7ac71e7ab88d9a9f5bb", &r), 0);
	CHECK_INT_EQ(parse("", &r), 0);
	CHECK_INT_EQ(r.kind, DOVECOT_LINE_OTHER);
}

static void test_dovecot_answers(void)
{
	struct dovecot_reply r;

	CHECK_INT_EQ(parse("OK\t1\tuser=alice", &r), 0);
	CHECK_INT_EQ(r.kind, DOVECOT_LINE_OK);
	CHECK_UINT_EQ(r.id, 1);
	CHECK_MEM_EQ(r.user, r.user_len, "alice", 5);
	CHECK_INT_EQ(parse("FAIL\t22\tuser=alice\treason=bad", &r), 0);
	CHECK_INT_EQ(r.kind, DOVECOT_LINE_FAIL);
	CHECK_UINT_EQ(r.id, 22);
	CHECK(!r.temp);
	CHECK_INT_EQ(parse("FAIL\t3\ttemp", &r), 0);
	CHECK(r.temp);
	CHECK_NULL(r.user);
	CHECK_INT_EQ(parse("CONT\t3\tVXNlcm5hbWU6", &r), 0);
	CHECK_INT_EQ(r.kind, DOVECOT_LINE_CONT);
	CHECK_UINT_EQ(r.id, 3);
}

static void test_dovecot_malformed_lines(void)
{
	struct dovecot_reply r;

	CHECK_INT_EQ(parse("VERSION", &r), -1);
	CHECK_INT_EQ(parse("VERSION\tx\t1", &r), -1);
	CHECK_INT_EQ(parse("MECH", &r), -1);
	CHECK_INT_EQ(parse("MECH\t", &r), -1);
	CHECK_INT_EQ(parse("OK", &r), -1);
	CHECK_INT_EQ(parse("OK\t", &r), -1);
	CHECK_INT_EQ(parse("OK\t-1", &r), -1);
	CHECK_INT_EQ(parse("FAIL\t1234567890", &r), -1);
	CHECK_INT_EQ(parse("CONT\tx", &r), -1);
	CHECK_INT_EQ(dovecot_auth_parse("OK\t1\0", 5, &r), -1);
}

int main(void)
{
	RUN(test_base64_round_trips);
	RUN(test_base64_refuses_what_is_not_canonical);
	RUN(test_plain_message_fields);
	RUN(test_plain_with_initial_response_checks_at_once);
	RUN(test_plain_without_initial_response_asks_with_an_empty_challenge);
	RUN(test_login_takes_two_steps);
	RUN(test_refusals_carry_their_replies);
	RUN(test_mail_auth_parameter);
	RUN(test_dovecot_handshake_lines);
	RUN(test_dovecot_answers);
	RUN(test_dovecot_malformed_lines);
	return unit_summary();
}
