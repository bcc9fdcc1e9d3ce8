/*
 * test_smtp.c - unit tests of the SMTP protocol codec (proxy/smtp.c)
 *
 * One scenario per test; the names say the behaviour that is expected.
 * The data codec tests include the SMTP smuggling inputs: only a real
 * <CRLF>.<CRLF> may end the message data.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp.h"
#include "unit.h"

/* A string literal and its length, embedded NULs included. */
#define S(lit) (lit), (sizeof(lit) - 1)

/* buf[0..len) holds exactly the bytes of a string literal */
#define CHECK_BYTES(buf, len, lit) CHECK_MEM_EQ(buf, len, lit, sizeof(lit) - 1)

/* ---- helpers ---- */

static int parse_mail(const char *arg, struct smtp_path *p,
		      struct smtp_error *e)
{
	return smtp_path_parse(arg, strlen(arg), false, p, e);
}

static int parse_rcpt(const char *arg, struct smtp_path *p,
		      struct smtp_error *e)
{
	return smtp_path_parse(arg, strlen(arg), true, p, e);
}

/* mail_error_enh - the enhanced code MAIL FROM gives for arg, or "ok" */
static const char *mail_error_enh(const char *arg)
{
	struct smtp_path p;
	struct smtp_error e = { 0, NULL, NULL };

	if (parse_mail(arg, &p, &e) == 0) {
		smtp_path_free(&p);
		return "ok";
	}
	return e.enh;
}

/* rcpt_error_enh - the enhanced code RCPT TO gives for arg, or "ok" */
static const char *rcpt_error_enh(const char *arg)
{
	struct smtp_path p;
	struct smtp_error e = { 0, NULL, NULL };

	if (parse_rcpt(arg, &p, &e) == 0) {
		smtp_path_free(&p);
		return "ok";
	}
	return e.enh;
}

static int feed(struct smtp_reply *r, const char *line)
{
	return smtp_reply_feed(r, line, strlen(line));
}

struct decoded {
	char out[8192];
	size_t out_len;
	size_t consumed;
	bool done;
	bool bare_lf;
	bool bare_cr;
	unsigned long long bytes_out;
};

/* decode - run the decoder over in, chunk bytes per call (0: all at once) */
static void decode(const char *in, size_t len, bool normalize, size_t chunk,
		   struct decoded *r)
{
	struct smtp_data_decoder d;
	char tmp[2 * 8192 + 2];
	size_t pos = 0, n, c, olen;

	memset(r, 0, sizeof(*r));
	smtp_data_decoder_init(&d, normalize);
	if (chunk == 0)
		chunk = len ? len : 1;
	while (pos < len && !d.done) {
		n = len - pos < chunk ? len - pos : chunk;
		c = smtp_data_decode(&d, in + pos, n, tmp, &olen);
		if (r->out_len + olen <= sizeof(r->out)) {
			memcpy(r->out + r->out_len, tmp, olen);
			r->out_len += olen;
		}
		pos += c;
		if (c < n && !d.done)
			break; /* should not happen: the decoder stalled */
	}
	r->consumed = pos;
	r->done = d.done;
	r->bare_lf = d.bare_lf;
	r->bare_cr = d.bare_cr;
	r->bytes_out = d.bytes_out;
}

/* encode - dot-stuff in and add the end of data into out; its length */
static size_t encode(const char *in, size_t len, char *out)
{
	struct smtp_data_encoder e;
	size_t n;

	smtp_data_encoder_init(&e);
	n = smtp_data_encode(&e, in, len, out);
	return n + smtp_data_encode_end(&e, out + n);
}

/* ---- line scanning ---- */

static void test_line_crlf_ends_line(void)
{
	size_t ll, cons;

	CHECK_INT_EQ(smtp_line_scan(S("NOOP\r\nQUIT\r\n"), 512, &ll, &cons),
		     SMTP_LINE_OK);
	CHECK_UINT_EQ(ll, 4);
	CHECK_UINT_EQ(cons, 6);
}

static void test_line_empty_line_is_ok_with_zero_length(void)
{
	size_t ll = 99, cons;

	CHECK_INT_EQ(smtp_line_scan(S("\r\n"), 512, &ll, &cons), SMTP_LINE_OK);
	CHECK_UINT_EQ(ll, 0);
	CHECK_UINT_EQ(cons, 2);
}

static void test_line_without_end_is_incomplete(void)
{
	size_t ll, cons = 99;

	CHECK_INT_EQ(smtp_line_scan(S("NOOP"), 512, &ll, &cons),
		     SMTP_LINE_INCOMPLETE);
	CHECK_UINT_EQ(cons, 0);
	CHECK_INT_EQ(smtp_line_scan("", 0, 512, &ll, &cons),
		     SMTP_LINE_INCOMPLETE);
	CHECK_INT_EQ(smtp_line_scan(NULL, 0, 512, &ll, &cons),
		     SMTP_LINE_INCOMPLETE);
}

static void test_line_bare_lf_is_reported(void)
{
	size_t ll, cons;

	CHECK_INT_EQ(smtp_line_scan(S("NOOP\nQUIT\r\n"), 512, &ll, &cons),
		     SMTP_LINE_BARE_LF);
	CHECK_UINT_EQ(ll, 4);
	CHECK_UINT_EQ(cons, 5);
}

static void test_line_bare_cr_is_consumed_through_next_lf(void)
{
	size_t ll, cons;

	CHECK_INT_EQ(smtp_line_scan(S("NO\rOP\r\nQUIT\r\n"), 512, &ll, &cons),
		     SMTP_LINE_BARE_CR);
	CHECK_UINT_EQ(cons, 7);
	CHECK_UINT_EQ(ll, 5);
}

static void test_line_bare_cr_wins_over_bare_lf(void)
{
	size_t ll, cons;

	CHECK_INT_EQ(smtp_line_scan(S("a\rb\nc"), 512, &ll, &cons),
		     SMTP_LINE_BARE_CR);
	CHECK_UINT_EQ(cons, 4);
}

static void test_line_cr_cr_lf_is_bare_cr(void)
{
	size_t ll, cons;

	CHECK_INT_EQ(smtp_line_scan(S("NOOP\r\r\n"), 512, &ll, &cons),
		     SMTP_LINE_BARE_CR);
	CHECK_UINT_EQ(cons, 7);
}

static void test_line_bare_cr_without_lf_waits(void)
{
	size_t ll, cons = 99;

	CHECK_INT_EQ(smtp_line_scan(S("NO\rOP"), 512, &ll, &cons),
		     SMTP_LINE_INCOMPLETE);
	CHECK_UINT_EQ(cons, 0);
}

static void test_line_bare_cr_without_lf_over_max_len_is_too_long(void)
{
	size_t ll, cons;

	CHECK_INT_EQ(smtp_line_scan(S("ab\rcdef"), 5, &ll, &cons),
		     SMTP_LINE_TOO_LONG);
	CHECK_UINT_EQ(cons, 7);
}

static void test_line_cr_as_last_byte_is_not_yet_bare(void)
{
	size_t ll, cons;

	CHECK_INT_EQ(smtp_line_scan(S("NOOP\r"), 512, &ll, &cons),
		     SMTP_LINE_INCOMPLETE);
	CHECK_UINT_EQ(cons, 0);
	/* the LF arrives with the next read */
	CHECK_INT_EQ(smtp_line_scan(S("NOOP\r\n"), 512, &ll, &cons),
		     SMTP_LINE_OK);
	CHECK_UINT_EQ(ll, 4);
}

static void test_line_cr_as_last_byte_at_max_len_still_waits(void)
{
	size_t ll, cons;

	/* 5 bytes + CR is max_len + 1 bytes: its LF would make it fit */
	CHECK_INT_EQ(smtp_line_scan(S("abcde\r"), 5, &ll, &cons),
		     SMTP_LINE_INCOMPLETE);
	CHECK_INT_EQ(smtp_line_scan(S("abcde\r\n"), 5, &ll, &cons),
		     SMTP_LINE_OK);
}

static void test_line_of_exactly_max_len_is_ok(void)
{
	size_t ll, cons;

	CHECK_INT_EQ(smtp_line_scan(S("abcde\r\n"), 5, &ll, &cons),
		     SMTP_LINE_OK);
	CHECK_UINT_EQ(ll, 5);
	CHECK_UINT_EQ(cons, 7);
}

static void test_line_one_over_max_len_is_too_long_up_to_its_lf(void)
{
	size_t ll, cons;

	CHECK_INT_EQ(smtp_line_scan(S("abcdef\r\nNOOP\r\n"), 5, &ll, &cons),
		     SMTP_LINE_TOO_LONG);
	/* discarded up to the LF, which the skip then finds at once */
	CHECK_UINT_EQ(cons, 7);
}

static void test_line_bare_lf_over_max_len_is_too_long(void)
{
	size_t ll, cons;

	CHECK_INT_EQ(smtp_line_scan(S("abcdef\nx"), 5, &ll, &cons),
		     SMTP_LINE_TOO_LONG);
	CHECK_UINT_EQ(cons, 6);
}

static void test_line_without_lf_past_max_len_is_too_long(void)
{
	size_t ll, cons;

	CHECK_INT_EQ(smtp_line_scan(S("abcdefg"), 5, &ll, &cons),
		     SMTP_LINE_TOO_LONG);
	CHECK_UINT_EQ(cons, 7);
	/* max_len + 1 bytes could still be max_len bytes and a CR */
	CHECK_INT_EQ(smtp_line_scan(S("abcdef"), 5, &ll, &cons),
		     SMTP_LINE_INCOMPLETE);
}

static void test_line_too_long_then_skip_keeps_next_line(void)
{
	const char buf[] = "xxxxxxxxxxxx\r\nQUIT\r\n";
	size_t len = sizeof(buf) - 1, ll, cons, skip, pos;
	bool found;

	CHECK_INT_EQ(smtp_line_scan(buf, len, 5, &ll, &cons),
		     SMTP_LINE_TOO_LONG);
	pos = cons;
	skip = smtp_line_skip(buf + pos, len - pos, &found);
	CHECK(found);
	pos += skip;
	CHECK_INT_EQ(smtp_line_scan(buf + pos, len - pos, 5, &ll, &cons),
		     SMTP_LINE_OK);
	CHECK_BYTES(buf + pos, ll, "QUIT");
}

static void test_line_skip_finds_lf(void)
{
	bool found = false;

	CHECK_UINT_EQ(smtp_line_skip(S("junk\r\nNOOP"), &found), 6);
	CHECK(found);
}

static void test_line_skip_without_lf_discards_all(void)
{
	bool found = true;

	CHECK_UINT_EQ(smtp_line_skip(S("junk"), &found), 4);
	CHECK(!found);
	CHECK_UINT_EQ(smtp_line_skip("", 0, &found), 0);
	CHECK(!found);
}

static void test_line_nul_byte_does_not_end_line(void)
{
	size_t ll, cons;

	CHECK_INT_EQ(smtp_line_scan(S("NO\0OP\r\n"), 512, &ll, &cons),
		     SMTP_LINE_OK);
	CHECK_UINT_EQ(ll, 5);
}

/* ---- commands ---- */

static void test_command_every_verb_is_recognised(void)
{
	struct smtp_command cmd;
	struct smtp_error e;
	int v;

	for (v = SMTP_VERB_HELO; v < SMTP_VERB_COUNT; v++) {
		const char *name = smtp_verb_name((enum smtp_verb)v);

		CHECK_INT_EQ(smtp_command_parse(name, strlen(name), &cmd, &e), 0);
		CHECK_INT_EQ(cmd.verb, v);
		CHECK_UINT_EQ(cmd.arg_len, 0);
	}
}

static void test_command_verb_is_case_insensitive(void)
{
	struct smtp_command cmd;
	struct smtp_error e;

	CHECK_INT_EQ(smtp_command_parse(S("eHlO client.example"), &cmd, &e), 0);
	CHECK_INT_EQ(cmd.verb, SMTP_VERB_EHLO);
	CHECK_BYTES(cmd.arg, cmd.arg_len, "client.example");
	CHECK_INT_EQ(smtp_command_parse(S("starttls"), &cmd, &e), 0);
	CHECK_INT_EQ(cmd.verb, SMTP_VERB_STARTTLS);
}

static void test_command_mail_arg_starts_at_from(void)
{
	struct smtp_command cmd;
	struct smtp_error e;

	CHECK_INT_EQ(smtp_command_parse(S("MAIL FROM:<a@b.example> SIZE=10"),
					&cmd, &e), 0);
	CHECK_INT_EQ(cmd.verb, SMTP_VERB_MAIL);
	CHECK_BYTES(cmd.arg, cmd.arg_len, "FROM:<a@b.example> SIZE=10");
}

static void test_command_rcpt_arg_starts_at_to(void)
{
	struct smtp_command cmd;
	struct smtp_error e;

	CHECK_INT_EQ(smtp_command_parse(S("rcpt   TO:<a@b.example>"), &cmd, &e),
		     0);
	CHECK_INT_EQ(cmd.verb, SMTP_VERB_RCPT);
	CHECK_BYTES(cmd.arg, cmd.arg_len, "TO:<a@b.example>");
}

static void test_command_unknown_verb_is_parsed(void)
{
	struct smtp_command cmd;
	struct smtp_error e;

	CHECK_INT_EQ(smtp_command_parse(S("FOO bar"), &cmd, &e), 0);
	CHECK_INT_EQ(cmd.verb, SMTP_VERB_UNKNOWN);
	CHECK_BYTES(cmd.arg, cmd.arg_len, "bar");
}

static void test_command_verb_must_end_at_space(void)
{
	struct smtp_command cmd;
	struct smtp_error e;

	CHECK_INT_EQ(smtp_command_parse(S("MAILFROM:<a@b>"), &cmd, &e), 0);
	CHECK_INT_EQ(cmd.verb, SMTP_VERB_UNKNOWN);
	CHECK_INT_EQ(smtp_command_parse(S("DATAX"), &cmd, &e), 0);
	CHECK_INT_EQ(cmd.verb, SMTP_VERB_UNKNOWN);
	CHECK_INT_EQ(smtp_command_parse(S("DAT"), &cmd, &e), 0);
	CHECK_INT_EQ(cmd.verb, SMTP_VERB_UNKNOWN);
	CHECK_INT_EQ(smtp_command_parse(S("QUIT\tnow"), &cmd, &e), 0);
	CHECK_INT_EQ(cmd.verb, SMTP_VERB_UNKNOWN);
}

static void test_command_with_nul_byte_is_refused(void)
{
	struct smtp_command cmd;
	struct smtp_error e = { 0, NULL, NULL };

	CHECK_INT_EQ(smtp_command_parse(S("NOOP\0QUIT"), &cmd, &e), -1);
	CHECK_INT_EQ(e.code, 500);
	CHECK_STR_EQ(e.enh, "5.5.2");
	CHECK_NOT_NULL(e.text);
}

static void test_command_with_control_character_is_refused(void)
{
	struct smtp_command cmd;
	struct smtp_error e = { 0, NULL, NULL };

	CHECK_INT_EQ(smtp_command_parse(S("NOOP \x1b[1m"), &cmd, &e), -1);
	CHECK_INT_EQ(e.code, 500);
	CHECK_INT_EQ(smtp_command_parse(S("NOOP\rQUIT"), &cmd, &e), -1);
	CHECK_INT_EQ(smtp_command_parse(S("NOOP\nQUIT"), &cmd, &e), -1);
	CHECK_INT_EQ(smtp_command_parse(S("NOOP \x7f"), &cmd, &e), -1);
}

static void test_command_tab_and_utf8_are_allowed(void)
{
	struct smtp_command cmd;
	struct smtp_error e;

	CHECK_INT_EQ(smtp_command_parse(S("NOOP a\tb"), &cmd, &e), 0);
	CHECK_INT_EQ(cmd.verb, SMTP_VERB_NOOP);
	CHECK_INT_EQ(smtp_command_parse(S("VRFY \xe7\x94\xa8"), &cmd, &e), 0);
	CHECK_INT_EQ(cmd.verb, SMTP_VERB_VRFY);
}

static void test_command_empty_line_is_refused(void)
{
	struct smtp_command cmd;
	struct smtp_error e = { 0, NULL, NULL };

	CHECK_INT_EQ(smtp_command_parse("", 0, &cmd, &e), -1);
	CHECK_INT_EQ(e.code, 500);
	CHECK_STR_EQ(e.enh, "5.5.2");
	CHECK_STR_EQ(e.text, "Error: bad syntax");
}

static void test_command_blank_line_is_refused_as_empty(void)
{
	struct smtp_command cmd;
	struct smtp_error e = { 0, NULL, NULL };

	CHECK_INT_EQ(smtp_command_parse(S("   "), &cmd, &e), -1);
	CHECK_STR_EQ(e.text, "Error: bad syntax");
}

static void test_command_trailing_spaces_stay_in_arg(void)
{
	struct smtp_command cmd;
	struct smtp_error e;

	CHECK_INT_EQ(smtp_command_parse(S("HELO  x "), &cmd, &e), 0);
	CHECK_BYTES(cmd.arg, cmd.arg_len, "x ");
	CHECK_INT_EQ(smtp_command_parse(S("QUIT   "), &cmd, &e), 0);
	CHECK_INT_EQ(cmd.verb, SMTP_VERB_QUIT);
	CHECK_UINT_EQ(cmd.arg_len, 0);
}

static void test_verb_name_is_canonical(void)
{
	CHECK_STR_EQ(smtp_verb_name(SMTP_VERB_MAIL), "MAIL");
	CHECK_STR_EQ(smtp_verb_name(SMTP_VERB_XFORWARD), "XFORWARD");
	CHECK_STR_EQ(smtp_verb_name(SMTP_VERB_UNKNOWN), "UNKNOWN");
	CHECK_STR_EQ(smtp_verb_name(SMTP_VERB_COUNT), "UNKNOWN");
}

/* ---- paths ---- */

static void test_path_simple_mailbox(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_mail("FROM:<john@example.org>", &p, &e), 0);
	CHECK_STR_EQ(p.path, "john@example.org");
	CHECK_STR_EQ(p.local, "john");
	CHECK_STR_EQ(p.domain, "example.org");
	CHECK_NULL(p.route);
	CHECK(!p.null_path);
	CHECK(!p.postmaster);
	CHECK(!p.utf8);
	CHECK_UINT_EQ(p.nparams, 0);
	smtp_path_free(&p);
}

static void test_path_from_keyword_is_case_insensitive(void)
{
	CHECK_STR_EQ(mail_error_enh("from:<a@b.example>"), "ok");
	CHECK_STR_EQ(rcpt_error_enh("To:<a@b.example>"), "ok");
}

static void test_path_null_reverse_path_for_mail(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_mail("FROM:<>", &p, &e), 0);
	CHECK(p.null_path);
	CHECK_STR_EQ(p.path, "");
	CHECK_NULL(p.local);
	CHECK_NULL(p.domain);
	smtp_path_free(&p);
}

static void test_path_null_path_is_refused_for_rcpt(void)
{
	struct smtp_path p;
	struct smtp_error e = { 0, NULL, NULL };

	CHECK_INT_EQ(parse_rcpt("TO:<>", &p, &e), -1);
	CHECK_INT_EQ(e.code, 501);
	CHECK_STR_EQ(e.enh, "5.1.3");
}

static void test_path_postmaster_without_domain_for_rcpt(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_rcpt("TO:<pOsTmAsTeR>", &p, &e), 0);
	CHECK(p.postmaster);
	CHECK_STR_EQ(p.path, "pOsTmAsTeR");
	CHECK_NULL(p.domain);
	smtp_path_free(&p);
}

static void test_path_postmaster_without_domain_is_refused_for_mail(void)
{
	CHECK_STR_EQ(mail_error_enh("FROM:<Postmaster>"), "5.1.7");
}

static void test_path_postmaster_with_domain_is_an_ordinary_mailbox(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_rcpt("TO:<postmaster@example.org>", &p, &e), 0);
	CHECK(!p.postmaster);
	CHECK_STR_EQ(p.domain, "example.org");
	smtp_path_free(&p);
}

static void test_path_mailbox_without_domain_is_refused(void)
{
	CHECK_STR_EQ(mail_error_enh("FROM:<john>"), "5.1.7");
	CHECK_STR_EQ(rcpt_error_enh("TO:<john>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<john@>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<@example.org>"), "5.1.3");
}

static void test_path_quoted_local_part_with_space(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_mail("FROM:<\"john doe\"@ex.com>", &p, &e), 0);
	CHECK_STR_EQ(p.local, "\"john doe\"");
	CHECK_STR_EQ(p.path, "\"john doe\"@ex.com");
	CHECK_STR_EQ(p.domain, "ex.com");
	smtp_path_free(&p);
}

static void test_path_quoted_local_part_with_at_sign(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_rcpt("TO:<\"a@b\"@ex.com>", &p, &e), 0);
	CHECK_STR_EQ(p.local, "\"a@b\"");
	CHECK_STR_EQ(p.domain, "ex.com");
	smtp_path_free(&p);
}

static void test_path_quoted_local_part_with_angle_bracket(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_rcpt("TO:<\"a>b\"@ex.com> NOTIFY=NEVER", &p, &e), 0);
	CHECK_STR_EQ(p.local, "\"a>b\"");
	CHECK_UINT_EQ(p.nparams, 1);
	smtp_path_free(&p);
}

static void test_path_quoted_pair_in_local_part(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_mail("FROM:<\"a\\\"b\\\\c\"@ex.com>", &p, &e), 0);
	CHECK_STR_EQ(p.local, "\"a\\\"b\\\\c\"");
	smtp_path_free(&p);
}

static void test_path_empty_quoted_local_part_is_accepted(void)
{
	CHECK_STR_EQ(mail_error_enh("FROM:<\"\"@ex.com>"), "ok");
}

static void test_path_unbalanced_quote_is_refused(void)
{
	CHECK_STR_EQ(mail_error_enh("FROM:<\"john@ex.com>"), "5.1.7");
	CHECK_STR_EQ(mail_error_enh("FROM:<john\"@ex.com>"), "5.1.7");
	CHECK_STR_EQ(mail_error_enh("FROM:<\"a\\\"@ex.com>"), "5.1.7");
}

static void test_path_quoted_string_with_control_is_refused(void)
{
	CHECK_STR_EQ(mail_error_enh("FROM:<\"a\tb\"@ex.com>"), "5.1.7");
	CHECK_STR_EQ(mail_error_enh("FROM:<\"a\\\tb\"@ex.com>"), "5.1.7");
}

static void test_path_utf8_mailbox_sets_utf8(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_rcpt("TO:<用户@例子.广告>", &p, &e), 0);
	CHECK(p.utf8);
	CHECK_STR_EQ(p.local, "用户");
	CHECK_STR_EQ(p.domain, "例子.广告");
	CHECK_STR_EQ(p.path, "用户@例子.广告");
	smtp_path_free(&p);
}

static void test_path_utf8_in_quoted_local_part(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_mail("FROM:<\"jöhn dœ\"@ex.com>", &p, &e), 0);
	CHECK(p.utf8);
	smtp_path_free(&p);
}

static void test_path_invalid_utf8_is_refused(void)
{
	/* lone continuation byte */
	CHECK_STR_EQ(mail_error_enh("FROM:<a\x80@ex.com>"), "5.1.7");
	/* overlong encoding of '/' */
	CHECK_STR_EQ(mail_error_enh("FROM:<a\xc0\xaf@ex.com>"), "5.1.7");
	/* truncated sequence */
	CHECK_STR_EQ(mail_error_enh("FROM:<a\xe7\x94@ex.com>"), "5.1.7");
	/* UTF-16 surrogate */
	CHECK_STR_EQ(mail_error_enh("FROM:<a\xed\xa0\x80@ex.com>"), "5.1.7");
	/* above U+10FFFF */
	CHECK_STR_EQ(rcpt_error_enh("TO:<a@\xf4\x90\x80\x80.com>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<a@ex\xff.com>"), "5.1.3");
}

static void test_path_source_route_is_split_off(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_rcpt("TO:<@a.example,@b.example:user@dom.example>",
				&p, &e), 0);
	CHECK_STR_EQ(p.route, "@a.example,@b.example");
	CHECK_STR_EQ(p.path, "user@dom.example");
	CHECK_STR_EQ(p.local, "user");
	CHECK_STR_EQ(p.domain, "dom.example");
	smtp_path_free(&p);
}

static void test_path_single_hop_source_route(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_mail("FROM:<@relay.example:u@d.example>", &p, &e), 0);
	CHECK_STR_EQ(p.route, "@relay.example");
	CHECK_STR_EQ(p.path, "u@d.example");
	smtp_path_free(&p);
}

static void test_path_malformed_source_route_is_refused(void)
{
	CHECK_STR_EQ(rcpt_error_enh("TO:<@a.example,b.example:u@d>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<@a.example u@d>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<@:u@d>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<@a.example,:u@d>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<@a.example:>"), "5.1.3");
}

static void test_path_ipv4_address_literal(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_rcpt("TO:<user@[192.0.2.1]>", &p, &e), 0);
	CHECK_STR_EQ(p.domain, "[192.0.2.1]");
	smtp_path_free(&p);
}

static void test_path_bad_ipv4_address_literal_is_refused(void)
{
	CHECK_STR_EQ(rcpt_error_enh("TO:<u@[192.0.2.256]>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<u@[192.0.2]>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<u@[192.0.2.1.5]>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<u@[]>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<u@[192.0.2.1>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<u@192.0.2.1]>"), "5.1.3");
}

static void test_path_ipv6_address_literal(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_rcpt("TO:<user@[IPv6:2001:db8::1]>", &p, &e), 0);
	CHECK_STR_EQ(p.domain, "[IPv6:2001:db8::1]");
	smtp_path_free(&p);
	CHECK_STR_EQ(rcpt_error_enh("TO:<u@[IPv6:::ffff:192.0.2.1]>"), "ok");
}

static void test_path_bad_ipv6_address_literal_is_refused(void)
{
	CHECK_STR_EQ(rcpt_error_enh("TO:<u@[IPv6:2001:db8:::1]>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<u@[IPv6:]>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<u@[IPv6:2001:db8::g]>"), "5.1.3");
}

static void test_path_general_address_literal(void)
{
	CHECK_STR_EQ(rcpt_error_enh("TO:<u@[x-tag:some.thing]>"), "ok");
	CHECK_STR_EQ(rcpt_error_enh("TO:<u@[x-:thing]>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<u@[tag:]>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<u@[tag:a\\b]>"), "5.1.3");
	/* RFC 5321 grammar: "2001" is a Standardized-tag like any other */
	CHECK_STR_EQ(rcpt_error_enh("TO:<u@[2001:db8::1]>"), "ok");
}

static void test_path_missing_angle_brackets_is_syntax_error(void)
{
	struct smtp_path p;
	struct smtp_error e = { 0, NULL, NULL };

	CHECK_INT_EQ(parse_mail("FROM:john@example.org", &p, &e), -1);
	CHECK_INT_EQ(e.code, 501);
	CHECK_STR_EQ(e.enh, "5.5.4");
	CHECK_STR_EQ(e.text, "Syntax: MAIL FROM:<address>");
	CHECK_INT_EQ(parse_rcpt("TO:<john@example.org", &p, &e), -1);
	CHECK_STR_EQ(e.enh, "5.5.4");
	CHECK_STR_EQ(e.text, "Syntax: RCPT TO:<address>");
}

static void test_path_missing_from_or_to_is_syntax_error(void)
{
	CHECK_STR_EQ(mail_error_enh("<a@b.example>"), "5.5.4");
	CHECK_STR_EQ(mail_error_enh("FROM <a@b.example>"), "5.5.4");
	CHECK_STR_EQ(mail_error_enh("TO:<a@b.example>"), "5.5.4");
	CHECK_STR_EQ(rcpt_error_enh("FROM:<a@b.example>"), "5.5.4");
	CHECK_STR_EQ(rcpt_error_enh(""), "5.5.4");
	CHECK_STR_EQ(rcpt_error_enh("TO:"), "5.5.4");
}

static void test_path_spaces_after_colon_are_tolerated(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_mail("FROM:   <a@b.example>", &p, &e), 0);
	CHECK_STR_EQ(p.path, "a@b.example");
	smtp_path_free(&p);
	CHECK_STR_EQ(mail_error_enh("FROM: <>"), "ok");
}

static void test_path_spaces_inside_brackets_are_refused(void)
{
	CHECK_STR_EQ(mail_error_enh("FROM:< a@b.example>"), "5.1.7");
	CHECK_STR_EQ(mail_error_enh("FROM:<a@b.example >"), "5.1.7");
	CHECK_STR_EQ(mail_error_enh("FROM:<a @b.example>"), "5.1.7");
}

static void test_path_bad_dot_string_is_refused(void)
{
	CHECK_STR_EQ(mail_error_enh("FROM:<.john@ex.com>"), "5.1.7");
	CHECK_STR_EQ(mail_error_enh("FROM:<john.@ex.com>"), "5.1.7");
	CHECK_STR_EQ(mail_error_enh("FROM:<jo..hn@ex.com>"), "5.1.7");
	CHECK_STR_EQ(mail_error_enh("FROM:<jo(hn@ex.com>"), "5.1.7");
	CHECK_STR_EQ(mail_error_enh("FROM:<a.b+tag@ex.com>"), "ok");
	CHECK_STR_EQ(mail_error_enh("FROM:<!#$%&'*+-/=?^_`{|}~@ex.com>"), "ok");
}

static void test_path_bad_domain_is_refused(void)
{
	CHECK_STR_EQ(rcpt_error_enh("TO:<a@-ex.com>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<a@ex-.com>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<a@ex..com>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<a@ex.com.>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<a@.ex.com>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<a@ex_ample.com>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<a@b@ex.com>"), "5.1.3");
	CHECK_STR_EQ(rcpt_error_enh("TO:<a@e-x.com>"), "ok");
}

static void test_path_control_characters_are_refused(void)
{
	struct smtp_path p;
	struct smtp_error e = { 0, NULL, NULL };

	CHECK_INT_EQ(smtp_path_parse(S("FROM:<a\r@b.example>"), false, &p, &e),
		     -1);
	CHECK_STR_EQ(e.enh, "5.1.7");
	CHECK_INT_EQ(smtp_path_parse(S("FROM:<a\n@b.example>"), false, &p, &e),
		     -1);
	CHECK_INT_EQ(smtp_path_parse(S("FROM:<a\0@b.example>"), false, &p, &e),
		     -1);
	CHECK_INT_EQ(smtp_path_parse(S("TO:<a@b.ex\0ample>"), true, &p, &e), -1);
	CHECK_STR_EQ(e.enh, "5.1.3");
}

static void test_path_local_part_length_limit(void)
{
	char arg[200];
	struct smtp_path p;
	struct smtp_error e = { 0, NULL, NULL };

	memset(arg, 0, sizeof(arg));
	strcpy(arg, "FROM:<");
	memset(arg + 6, 'a', 64);
	strcat(arg, "@ex.com>");
	CHECK_INT_EQ(parse_mail(arg, &p, &e), 0);
	smtp_path_free(&p);

	memset(arg, 0, sizeof(arg));
	strcpy(arg, "FROM:<");
	memset(arg + 6, 'a', 65);
	strcat(arg, "@ex.com>");
	CHECK_INT_EQ(parse_mail(arg, &p, &e), -1);
	CHECK_INT_EQ(e.code, 501);
	CHECK_STR_EQ(e.enh, "5.1.7");
}

static void test_path_label_over_63_bytes_is_refused(void)
{
	char arg[200];

	memset(arg, 0, sizeof(arg));
	strcpy(arg, "TO:<a@");
	memset(arg + 6, 'd', 63);
	strcat(arg, ".com>");
	CHECK_STR_EQ(rcpt_error_enh(arg), "ok");

	memset(arg, 0, sizeof(arg));
	strcpy(arg, "TO:<a@");
	memset(arg + 6, 'd', 64);
	strcat(arg, ".com>");
	CHECK_STR_EQ(rcpt_error_enh(arg), "5.1.3");
}

/* long_domain - n bytes of labels "ddd...d." ending in a letter */
static void long_domain(char *out, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		out[i] = (i % 50 == 49) ? '.' : 'd';
	out[n - 1] = 'x';
	out[n] = '\0';
}

static void test_path_domain_over_255_bytes_is_refused(void)
{
	char arg[400];

	strcpy(arg, "TO:<a@");
	long_domain(arg + 6, 256);
	strcat(arg, ">");
	CHECK_STR_EQ(rcpt_error_enh(arg), "5.1.3");
}

static void test_path_over_256_bytes_is_refused(void)
{
	char arg[400];

	/* "<" + 1 + "@" + 253 + ">" = 257 bytes */
	strcpy(arg, "TO:<a@");
	long_domain(arg + 6, 253);
	strcat(arg, ">");
	CHECK_STR_EQ(rcpt_error_enh(arg), "5.1.3");

	/* 256 bytes is still fine */
	strcpy(arg, "TO:<a@");
	long_domain(arg + 6, 252);
	strcat(arg, ">");
	CHECK_STR_EQ(rcpt_error_enh(arg), "ok");
}

static void test_path_params_size_and_body(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_mail("FROM:<a@b.example> SIZE=1000 BODY=8BITMIME",
				&p, &e), 0);
	CHECK_UINT_EQ(p.nparams, 2);
	CHECK_STR_EQ(p.params[0].keyword, "SIZE");
	CHECK_STR_EQ(p.params[0].value, "1000");
	CHECK_STR_EQ(p.params[1].keyword, "BODY");
	CHECK_STR_EQ(p.params[1].value, "8BITMIME");
	smtp_path_free(&p);
}

static void test_path_param_keyword_upper_cased_value_kept(void)
{
	struct smtp_path p;
	struct smtp_error e;
	const struct smtp_param *sp;

	CHECK_INT_EQ(parse_mail("FROM:<a@b.example> body=8bitMime", &p, &e), 0);
	CHECK_STR_EQ(p.params[0].keyword, "BODY");
	CHECK_STR_EQ(p.params[0].value, "8bitMime");
	sp = smtp_path_param(&p, "Body");
	CHECK(sp == &p.params[0]);
	CHECK_NULL(smtp_path_param(&p, "SIZE"));
	smtp_path_free(&p);
}

static void test_path_param_without_value(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_mail("FROM:<a@b.example> SMTPUTF8 REQUIRETLS", &p, &e),
		     0);
	CHECK_UINT_EQ(p.nparams, 2);
	CHECK_STR_EQ(p.params[0].keyword, "SMTPUTF8");
	CHECK_NULL(p.params[0].value);
	smtp_path_free(&p);
}

static void test_path_params_after_null_path(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_mail("FROM:<> SIZE=0", &p, &e), 0);
	CHECK(p.null_path);
	CHECK_UINT_EQ(p.nparams, 1);
	smtp_path_free(&p);
}

static void test_path_duplicate_param_is_refused(void)
{
	struct smtp_path p;
	struct smtp_error e = { 0, NULL, NULL };

	CHECK_INT_EQ(parse_mail("FROM:<a@b.example> SIZE=1 size=2", &p, &e), -1);
	CHECK_INT_EQ(e.code, 501);
	CHECK_STR_EQ(e.enh, "5.5.4");
	CHECK_NULL(p.path);
	CHECK_UINT_EQ(p.nparams, 0);
}

static void test_path_param_bad_characters_are_refused(void)
{
	CHECK_STR_EQ(mail_error_enh("FROM:<a@b.example> SIZE=1=2"), "5.5.4");
	CHECK_STR_EQ(mail_error_enh("FROM:<a@b.example> SI_ZE=1"), "5.5.4");
	CHECK_STR_EQ(mail_error_enh("FROM:<a@b.example> -SIZE=1"), "5.5.4");
	CHECK_STR_EQ(mail_error_enh("FROM:<a@b.example> SIZE=1\t"), "5.5.4");
	CHECK_STR_EQ(mail_error_enh("FROM:<a@b.example> ENVID=\xc0\xaf"),
		     "5.5.4");
	CHECK_STR_EQ(mail_error_enh("FROM:<a@b.example> X=\xc3\xa9"), "ok");
	CHECK_STR_EQ(mail_error_enh("FROM:<a@b.example> X-Y1=<v>"), "ok");
}

static void test_path_param_empty_value_or_keyword_is_refused(void)
{
	CHECK_STR_EQ(mail_error_enh("FROM:<a@b.example> SIZE="), "5.5.4");
	CHECK_STR_EQ(mail_error_enh("FROM:<a@b.example> =1"), "5.5.4");
	CHECK_STR_EQ(mail_error_enh("FROM:<a@b.example> SIZE= BODY=7BIT"),
		     "5.5.4");
}

static void test_path_param_needs_a_space_after_bracket(void)
{
	CHECK_STR_EQ(mail_error_enh("FROM:<a@b.example>SIZE=1"), "5.5.4");
	CHECK_STR_EQ(mail_error_enh("FROM:<a@b.example>>"), "5.5.4");
}

static void test_path_params_tolerate_extra_and_trailing_spaces(void)
{
	struct smtp_path p;
	struct smtp_error e;

	CHECK_INT_EQ(parse_mail("FROM:<a@b.example>  SIZE=1   BODY=7BIT  ",
				&p, &e), 0);
	CHECK_UINT_EQ(p.nparams, 2);
	smtp_path_free(&p);
	CHECK_STR_EQ(mail_error_enh("FROM:<a@b.example> "), "ok");
}

static void test_path_sixteen_params_ok_seventeen_refused(void)
{
	char arg[512];
	int i;

	strcpy(arg, "FROM:<a@b.example>");
	for (i = 0; i < SMTP_MAX_PARAMS; i++)
		sprintf(arg + strlen(arg), " P%d=%d", i, i);
	CHECK_STR_EQ(mail_error_enh(arg), "ok");
	strcat(arg, " P99");
	CHECK_STR_EQ(mail_error_enh(arg), "5.5.4");
}

static void test_path_orcpt_value_is_xtext(void)
{
	struct smtp_path p;
	struct smtp_error e;
	const struct smtp_param *orcpt;

	CHECK_INT_EQ(parse_rcpt("TO:<y@ex.com> NOTIFY=SUCCESS,FAILURE "
				"ORCPT=rfc822;x+40y", &p, &e), 0);
	orcpt = smtp_path_param(&p, "orcpt");
	CHECK_NOT_NULL(orcpt);
	if (orcpt != NULL) {
		CHECK_STR_EQ(orcpt->value, "rfc822;x+40y");
		CHECK(smtp_xtext_valid(orcpt->value));
	}
	smtp_path_free(&p);
}

static void test_path_free_is_safe_on_zeroed_struct_and_twice(void)
{
	struct smtp_path p;
	struct smtp_error e;

	memset(&p, 0, sizeof(p));
	smtp_path_free(&p);
	CHECK_INT_EQ(parse_mail("FROM:<a@b.example> SIZE=1", &p, &e), 0);
	smtp_path_free(&p);
	CHECK_NULL(p.path);
	CHECK_NULL(p.local);
	CHECK_UINT_EQ(p.nparams, 0);
	smtp_path_free(&p);
	smtp_path_free(NULL);
}

static void test_path_error_leaves_nothing_to_free(void)
{
	struct smtp_path p;
	struct smtp_error e;

	memset(&p, 0xAA, sizeof(p));
	CHECK_INT_EQ(parse_mail("FROM:<a@b.example> X=1 X=2", &p, &e), -1);
	CHECK_NULL(p.path);
	CHECK_NULL(p.route);
	CHECK_NULL(p.local);
	CHECK_NULL(p.domain);
	CHECK_UINT_EQ(p.nparams, 0);
	smtp_path_free(&p);
}

static void test_path_error_texts_carry_no_code(void)
{
	struct smtp_path p;
	struct smtp_error e = { 0, NULL, NULL };

	CHECK_INT_EQ(parse_mail("FROM:<a@@b>", &p, &e), -1);
	CHECK_STR_EQ(e.text, "Bad sender address syntax");
	CHECK_INT_EQ(parse_rcpt("TO:<a@@b>", &p, &e), -1);
	CHECK_STR_EQ(e.text, "Bad recipient address syntax");
	CHECK_INT_EQ(parse_rcpt("TO:<a@b> =", &p, &e), -1);
	CHECK_STR_EQ(e.text, "Invalid parameter syntax");
}

/* ---- replies ---- */

static void test_reply_single_line(void)
{
	struct smtp_reply r;

	memset(&r, 0, sizeof(r));
	CHECK_INT_EQ(feed(&r, "250 Ok"), 1);
	CHECK_INT_EQ(r.code, 250);
	CHECK_UINT_EQ(r.nlines, 1);
	CHECK_STR_EQ(r.lines[0], "Ok");
	CHECK_STR_EQ(r.enh, "");
	CHECK(r.complete);
	smtp_reply_reset(&r);
}

static void test_reply_multi_line_without_enhanced_code(void)
{
	struct smtp_reply r;

	memset(&r, 0, sizeof(r));
	CHECK_INT_EQ(feed(&r, "250-mx.example.org"), 0);
	CHECK(!r.complete);
	CHECK_INT_EQ(feed(&r, "250-PIPELINING"), 0);
	CHECK_INT_EQ(feed(&r, "250 8BITMIME"), 1);
	CHECK_UINT_EQ(r.nlines, 3);
	CHECK_STR_EQ(r.lines[2], "8BITMIME");
	CHECK_STR_EQ(r.enh, "");
	smtp_reply_reset(&r);
}

static void test_reply_multi_line_with_enhanced_code(void)
{
	struct smtp_reply r;

	memset(&r, 0, sizeof(r));
	CHECK_INT_EQ(feed(&r, "550-5.1.1 No such user"), 0);
	CHECK_INT_EQ(feed(&r, "550 5.1.1 here"), 1);
	CHECK_STR_EQ(r.enh, "5.1.1");
	CHECK_STR_EQ(r.lines[0], "5.1.1 No such user");
	smtp_reply_reset(&r);
}

static void test_reply_enhanced_code_of_other_class_is_ignored(void)
{
	struct smtp_reply r;

	memset(&r, 0, sizeof(r));
	CHECK_INT_EQ(feed(&r, "250 5.1.1 odd"), 1);
	CHECK_STR_EQ(r.enh, "");
	smtp_reply_reset(&r);
	CHECK_INT_EQ(feed(&r, "250 2.0.0x not a code"), 1);
	CHECK_STR_EQ(r.enh, "");
	smtp_reply_reset(&r);
	CHECK_INT_EQ(feed(&r, "250 2.0.0"), 1);
	CHECK_STR_EQ(r.enh, "2.0.0");
	smtp_reply_reset(&r);
}

static void test_reply_bare_code_is_final(void)
{
	struct smtp_reply r;

	memset(&r, 0, sizeof(r));
	CHECK_INT_EQ(feed(&r, "250"), 1);
	CHECK(r.complete);
	CHECK_STR_EQ(r.lines[0], "");
	smtp_reply_reset(&r);
}

static void test_reply_mismatched_codes_are_refused(void)
{
	struct smtp_reply r;

	memset(&r, 0, sizeof(r));
	CHECK_INT_EQ(feed(&r, "250-first"), 0);
	CHECK_INT_EQ(feed(&r, "251 second"), -1);
	CHECK_UINT_EQ(r.nlines, 1);
	CHECK(!r.complete);
	smtp_reply_reset(&r);
}

static void test_reply_malformed_lines_are_refused(void)
{
	struct smtp_reply r;

	memset(&r, 0, sizeof(r));
	CHECK_INT_EQ(feed(&r, ""), -1);
	CHECK_INT_EQ(feed(&r, "25"), -1);
	CHECK_INT_EQ(feed(&r, "2x0 Ok"), -1);
	CHECK_INT_EQ(feed(&r, "150 Ok"), -1);
	CHECK_INT_EQ(feed(&r, "650 Ok"), -1);
	CHECK_INT_EQ(feed(&r, "250Ok"), -1);
	CHECK_INT_EQ(feed(&r, "250_Ok"), -1);
	CHECK_INT_EQ(feed(&r, "Ok 250"), -1);
	CHECK_UINT_EQ(r.nlines, 0);
	CHECK_INT_EQ(r.code, 0);
	smtp_reply_reset(&r);
}

static void test_reply_too_many_lines_are_refused(void)
{
	struct smtp_reply r;
	int i;

	memset(&r, 0, sizeof(r));
	for (i = 0; i < SMTP_REPLY_MAX_LINES; i++)
		CHECK_INT_EQ(feed(&r, "250-x"), 0);
	CHECK_INT_EQ(feed(&r, "250 last"), -1);
	CHECK_UINT_EQ(r.nlines, SMTP_REPLY_MAX_LINES);
	smtp_reply_reset(&r);
}

static void test_reply_of_max_lines_is_accepted(void)
{
	struct smtp_reply r;
	int i;

	memset(&r, 0, sizeof(r));
	for (i = 0; i < SMTP_REPLY_MAX_LINES - 1; i++)
		CHECK_INT_EQ(feed(&r, "250-x"), 0);
	CHECK_INT_EQ(feed(&r, "250 last"), 1);
	smtp_reply_reset(&r);
}

static void test_reply_long_line_is_cut(void)
{
	struct smtp_reply r;
	static char line[3000];

	memset(line, 'x', sizeof(line));
	memcpy(line, "250 ", 4);
	memset(&r, 0, sizeof(r));
	CHECK_INT_EQ(smtp_reply_feed(&r, line, sizeof(line)), 1);
	CHECK_UINT_EQ(strlen(r.lines[0]), SMTP_REPLY_LINE_MAX - 4);
	smtp_reply_reset(&r);
}

static void test_reply_feed_after_complete_is_refused(void)
{
	struct smtp_reply r;

	memset(&r, 0, sizeof(r));
	CHECK_INT_EQ(feed(&r, "250 Ok"), 1);
	CHECK_INT_EQ(feed(&r, "250 Again"), -1);
	smtp_reply_reset(&r);
	CHECK_INT_EQ(r.code, 0);
	CHECK_UINT_EQ(r.nlines, 0);
	CHECK(!r.complete);
	CHECK_INT_EQ(feed(&r, "354 go"), 1);
	CHECK_INT_EQ(r.code, 354);
	smtp_reply_reset(&r);
}

static void test_reply_format_reproduces_the_wire(void)
{
	struct smtp_reply r;
	char out[256];
	const char *want = "250-mx.example.org\r\n250-SIZE 100\r\n250 DSN\r\n";

	memset(&r, 0, sizeof(r));
	feed(&r, "250-mx.example.org");
	feed(&r, "250-SIZE 100");
	feed(&r, "250 DSN");
	CHECK_UINT_EQ(smtp_reply_format(&r, NULL, out, sizeof(out)),
		      strlen(want));
	CHECK_STR_EQ(out, want);
	/* an enhanced code of the backend's own is not doubled */
	smtp_reply_reset(&r);
	feed(&r, "550 5.7.1 Go away");
	smtp_reply_format(&r, "5.0.0", out, sizeof(out));
	CHECK_STR_EQ(out, "550 5.7.1 Go away\r\n");
	smtp_reply_reset(&r);
}

static void test_reply_format_inserts_default_enhanced_code(void)
{
	struct smtp_reply r;
	char out[256];

	memset(&r, 0, sizeof(r));
	feed(&r, "451-Try");
	feed(&r, "451 again later");
	smtp_reply_format(&r, "4.3.0", out, sizeof(out));
	CHECK_STR_EQ(out, "451-4.3.0 Try\r\n451 4.3.0 again later\r\n");
	smtp_reply_reset(&r);
}

static void test_reply_format_empty_text(void)
{
	struct smtp_reply r;
	char out[64];

	memset(&r, 0, sizeof(r));
	feed(&r, "250");
	smtp_reply_format(&r, NULL, out, sizeof(out));
	CHECK_STR_EQ(out, "250 \r\n");
	smtp_reply_format(&r, "2.0.0", out, sizeof(out));
	CHECK_STR_EQ(out, "250 2.0.0\r\n");
	smtp_reply_reset(&r);
}

static void test_reply_format_truncates_like_snprintf(void)
{
	struct smtp_reply r;
	char out[8];
	size_t need;

	memset(&r, 0, sizeof(r));
	feed(&r, "250 Hello world");
	need = smtp_reply_format(&r, NULL, out, sizeof(out));
	CHECK_UINT_EQ(need, strlen("250 Hello world\r\n"));
	CHECK_STR_EQ(out, "250 Hel");
	CHECK_UINT_EQ(smtp_reply_format(&r, NULL, NULL, 0), need);
	smtp_reply_reset(&r);
}

static void test_enh_valid_accepts_rfc3463_codes(void)
{
	CHECK(smtp_enh_valid("2.0.0", 250));
	CHECK(smtp_enh_valid("5.1.10", 550));
	CHECK(smtp_enh_valid("4.999.999", 451));
	CHECK(smtp_enh_valid("5.7.1", 0));
}

static void test_enh_valid_refuses_malformed_codes(void)
{
	CHECK(!smtp_enh_valid("5.1.1", 250));
	CHECK(!smtp_enh_valid("3.0.0", 354));
	CHECK(!smtp_enh_valid("2.00.0", 250));
	CHECK(!smtp_enh_valid("2.0.01", 250));
	CHECK(!smtp_enh_valid("2.1000.0", 250));
	CHECK(!smtp_enh_valid("2.0", 250));
	CHECK(!smtp_enh_valid("2.0.0.", 250));
	CHECK(!smtp_enh_valid("2..0", 250));
	CHECK(!smtp_enh_valid("", 250));
	CHECK(!smtp_enh_valid(NULL, 250));
	CHECK(!smtp_enh_valid("2.0.0 ", 250));
}

/* ---- EHLO capabilities ---- */

static void feed_postfix_ehlo(struct smtp_reply *r)
{
	static const char *const lines[] = {
		"250-mx.example.org", "250-PIPELINING", "250-SIZE 10240000",
		"250-VRFY", "250-ETRN", "250-STARTTLS",
		"250-XCLIENT NAME ADDR PROTO HELO", "250-ENHANCEDSTATUSCODES",
		"250-8BITMIME", "250-DSN", "250-SMTPUTF8", "250 CHUNKING",
	};
	size_t i;

	memset(r, 0, sizeof(*r));
	for (i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		feed(r, lines[i]);
}

static void test_caps_from_postfix_ehlo_reply(void)
{
	struct smtp_reply r;
	struct smtp_caps c;

	feed_postfix_ehlo(&r);
	CHECK(r.complete);
	smtp_caps_parse(&r, &c);
	CHECK(c.pipelining);
	CHECK(c.size);
	CHECK_UINT_EQ(c.size_limit, 10240000);
	CHECK(c.starttls);
	CHECK(c.xclient);
	CHECK_STR_EQ(c.xclient_attrs, "NAME ADDR PROTO HELO");
	CHECK(c.enhancedstatuscodes);
	CHECK(c.eightbitmime);
	CHECK(c.dsn);
	CHECK(c.smtputf8);
	CHECK(c.chunking);
	CHECK(!c.xforward);
	CHECK_STR_EQ(c.xforward_attrs, "");
	smtp_reply_reset(&r);
}

static void test_caps_keywords_case_insensitive_unknown_ignored(void)
{
	struct smtp_reply r;
	struct smtp_caps c;

	memset(&r, 0, sizeof(r));
	feed(&r, "250-hello");
	feed(&r, "250-pipelining");
	feed(&r, "250-X-UNKNOWN foo");
	feed(&r, "250-AUTH PLAIN LOGIN");
	feed(&r, "250 xforward  NAME   ADDR ");
	smtp_caps_parse(&r, &c);
	CHECK(c.pipelining);
	CHECK(c.xforward);
	CHECK_STR_EQ(c.xforward_attrs, "NAME ADDR");
	CHECK(!c.size);
	smtp_reply_reset(&r);
}

static void test_caps_greeting_line_is_not_a_keyword(void)
{
	struct smtp_reply r;
	struct smtp_caps c;

	memset(&r, 0, sizeof(r));
	feed(&r, "250-PIPELINING");
	feed(&r, "250 DSN");
	smtp_caps_parse(&r, &c);
	CHECK(!c.pipelining);
	CHECK(c.dsn);
	smtp_reply_reset(&r);
}

static void test_caps_size_without_number(void)
{
	struct smtp_reply r;
	struct smtp_caps c;

	memset(&r, 0, sizeof(r));
	feed(&r, "250-mx");
	feed(&r, "250-SIZE");
	feed(&r, "250 SMTPUTF8");
	smtp_caps_parse(&r, &c);
	CHECK(c.size);
	CHECK_UINT_EQ(c.size_limit, 0);
	smtp_reply_reset(&r);

	feed(&r, "250-mx");
	feed(&r, "250 SIZE 12abc");
	smtp_caps_parse(&r, &c);
	CHECK(c.size);
	CHECK_UINT_EQ(c.size_limit, 0);
	smtp_reply_reset(&r);
}

static void test_caps_of_non_250_reply_are_empty(void)
{
	struct smtp_reply r;
	struct smtp_caps c;

	memset(&r, 0, sizeof(r));
	feed(&r, "502-mx");
	feed(&r, "502 PIPELINING");
	smtp_caps_parse(&r, &c);
	CHECK(!c.pipelining);
	smtp_reply_reset(&r);
}

static void test_caps_long_xclient_attrs_cut_at_a_word(void)
{
	struct smtp_reply r;
	struct smtp_caps c;
	char line[400];
	size_t n;
	int i;

	strcpy(line, "250 XCLIENT");
	for (i = 0; i < 40; i++)
		strcat(line, " ATTRIB");
	memset(&r, 0, sizeof(r));
	feed(&r, "250-mx");
	feed(&r, line);
	smtp_caps_parse(&r, &c);
	CHECK(c.xclient);
	n = strlen(c.xclient_attrs);
	CHECK(n < sizeof(c.xclient_attrs));
	CHECK(n > 100);
	/* 127 bytes hold 18 words of 6 and the 17 spaces between them */
	CHECK_UINT_EQ(n, 18 * 7 - 1);
	CHECK(c.xclient_attrs[n - 1] == 'B');
	smtp_reply_reset(&r);
}

/* ---- message data: decoder ---- */

static void test_data_simple_message_ends_at_crlf_dot_crlf(void)
{
	struct decoded r;

	decode(S("Subject: x\r\n\r\nbody\r\n.\r\n"), false, 0, &r);
	CHECK(r.done);
	CHECK_BYTES(r.out, r.out_len, "Subject: x\r\n\r\nbody\r\n");
	CHECK_UINT_EQ(r.consumed, 23);
	CHECK(!r.bare_lf);
	CHECK(!r.bare_cr);
	CHECK_UINT_EQ(r.bytes_out, r.out_len);
}

static void test_data_empty_message(void)
{
	struct decoded r;

	decode(S(".\r\n"), false, 0, &r);
	CHECK(r.done);
	CHECK_UINT_EQ(r.out_len, 0);
	CHECK_UINT_EQ(r.consumed, 3);
}

static void test_data_leading_dots_are_removed(void)
{
	struct decoded r;

	decode(S("..\r\n..x\r\n.y\r\na.b\r\n...\r\n.\r\n"), false, 0, &r);
	CHECK(r.done);
	CHECK_BYTES(r.out, r.out_len, ".\r\n.x\r\ny\r\na.b\r\n..\r\n");
}

static void test_data_crlf_dot_dot_crlf_does_not_end(void)
{
	struct decoded r;

	decode(S("a\r\n..\r\nb\r\n.\r\n"), false, 0, &r);
	CHECK(r.done);
	CHECK_BYTES(r.out, r.out_len, "a\r\n.\r\nb\r\n");
}

static void test_data_lf_dot_lf_does_not_end(void)
{
	struct decoded r;

	decode(S("a\n.\nMAIL FROM:<x@y>\r\n"), false, 0, &r);
	CHECK(!r.done);
	CHECK(r.bare_lf);
	CHECK_BYTES(r.out, r.out_len, "a\n.\nMAIL FROM:<x@y>\r\n");
}

static void test_data_lf_dot_crlf_does_not_end(void)
{
	struct decoded r;

	decode(S("a\n.\r\nRSET\r\n"), false, 0, &r);
	CHECK(!r.done);
	CHECK(r.bare_lf);
	CHECK_BYTES(r.out, r.out_len, "a\n.\r\nRSET\r\n");
}

static void test_data_cr_dot_crlf_does_not_end(void)
{
	struct decoded r;

	decode(S("a\r.\r\nRSET\r\n"), false, 0, &r);
	CHECK(!r.done);
	CHECK(r.bare_cr);
	CHECK_BYTES(r.out, r.out_len, "a\r.\r\nRSET\r\n");
}

static void test_data_crlf_dot_cr_does_not_end(void)
{
	struct decoded r;

	decode(S("a\r\n.\rRSET\r\n"), false, 0, &r);
	CHECK(!r.done);
	CHECK(r.bare_cr);
	/* the line ".\rRSET" had its leading dot removed */
	CHECK_BYTES(r.out, r.out_len, "a\r\n\rRSET\r\n");
}

static void test_data_crlf_nul_dot_crlf_does_not_end(void)
{
	struct decoded r;

	decode(S("a\r\n\0.\r\nRSET\r\n"), false, 0, &r);
	CHECK(!r.done);
	CHECK_BYTES(r.out, r.out_len, "a\r\n\0.\r\nRSET\r\n");
}

static void test_data_dot_lf_at_start_does_not_end(void)
{
	struct decoded r;

	decode(S(".\nRSET\r\n"), false, 0, &r);
	CHECK(!r.done);
	CHECK(r.bare_lf);
	CHECK_BYTES(r.out, r.out_len, "\nRSET\r\n");
}

static void test_data_smuggled_end_then_real_end(void)
{
	struct decoded r;

	decode(S("a\r\n.\nb\r\n.\r\nQUIT\r\n"), false, 0, &r);
	CHECK(r.done);
	CHECK(r.bare_lf);
	CHECK_BYTES(r.out, r.out_len, "a\r\n\nb\r\n");
	CHECK_UINT_EQ(r.consumed, 11);
}

static void test_data_bare_flags_are_set_separately(void)
{
	struct decoded r;

	decode(S("a\nb\r\n.\r\n"), false, 0, &r);
	CHECK(r.bare_lf);
	CHECK(!r.bare_cr);
	decode(S("a\rb\r\n.\r\n"), false, 0, &r);
	CHECK(!r.bare_lf);
	CHECK(r.bare_cr);
	decode(S("a\r\r\n.\r\n"), false, 0, &r);
	CHECK(r.bare_cr);
	CHECK_BYTES(r.out, r.out_len, "a\r\r\n");
}

static void test_data_normalize_writes_crlf_for_bare_lf_and_cr(void)
{
	struct decoded r;

	decode(S("a\nb\rc\r\r\n.\r\n"), true, 0, &r);
	CHECK(r.done);
	CHECK(r.bare_lf);
	CHECK(r.bare_cr);
	CHECK_BYTES(r.out, r.out_len, "a\r\nb\r\nc\r\n\r\n");
	CHECK_UINT_EQ(r.bytes_out, r.out_len);
}

static void test_data_normalize_still_never_ends_on_bare_lf(void)
{
	struct decoded r;

	decode(S("a\n.\nb\n.\r\nc"), true, 0, &r);
	CHECK(!r.done);
	CHECK_BYTES(r.out, r.out_len, "a\r\n.\r\nb\r\n.\r\nc");
}

static void test_data_normalize_dot_cr_at_line_start(void)
{
	struct decoded r;

	decode(S(".\rx\r\n.\r\n"), true, 0, &r);
	CHECK(r.done);
	CHECK(r.bare_cr);
	CHECK_BYTES(r.out, r.out_len, "\r\nx\r\n");
}

static void test_data_pipelined_bytes_are_not_consumed(void)
{
	struct smtp_data_decoder d;
	char out[64];
	size_t olen, n;
	const char in[] = "hi\r\n.\r\nMAIL FROM:<>\r\n";

	smtp_data_decoder_init(&d, false);
	n = smtp_data_decode(&d, in, sizeof(in) - 1, out, &olen);
	CHECK(d.done);
	CHECK_UINT_EQ(n, 7);
	CHECK_BYTES(out, olen, "hi\r\n");
	/* once done, nothing more is taken */
	CHECK_UINT_EQ(smtp_data_decode(&d, in + n, sizeof(in) - 1 - n, out,
				       &olen), 0);
	CHECK_UINT_EQ(olen, 0);
}

static void test_data_held_bytes_are_written_by_a_later_call(void)
{
	struct smtp_data_decoder d;
	char out[16];
	size_t olen;

	smtp_data_decoder_init(&d, false);
	CHECK_UINT_EQ(smtp_data_decode(&d, S("a\r"), out, &olen), 2);
	CHECK_BYTES(out, olen, "a");
	CHECK_UINT_EQ(smtp_data_decode(&d, S("\n."), out, &olen), 2);
	CHECK_BYTES(out, olen, "\r\n");
	CHECK_UINT_EQ(smtp_data_decode(&d, S("\r"), out, &olen), 1);
	CHECK_UINT_EQ(olen, 0);
	CHECK(!d.done);
	CHECK_UINT_EQ(smtp_data_decode(&d, S("\nX"), out, &olen), 1);
	CHECK(d.done);
	CHECK_UINT_EQ(d.bytes_out, 3);
}

static void test_data_any_chunk_split_gives_the_same_result(void)
{
	static const char *const inputs[] = {
		"a\r\n.\rb\n.\n\r.\r\n..\r\n\r\r\n.x\r\n.\r\nrest",
		".\r\n",
		".\r.\n..\r\n.\r\n",
		"\r\n\r\n.\r\r\n.\r\n",
		"x\r\n.\r",
	};
	struct decoded whole, split;
	size_t i, chunk, len;
	int norm;

	for (i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		len = strlen(inputs[i]);
		for (norm = 0; norm < 2; norm++) {
			decode(inputs[i], len, norm, 0, &whole);
			for (chunk = 1; chunk <= len; chunk++) {
				decode(inputs[i], len, norm, chunk, &split);
				CHECK_MEM_EQ(split.out, split.out_len, whole.out,
					     whole.out_len);
				CHECK_UINT_EQ(split.consumed, whole.consumed);
				CHECK(split.done == whole.done);
				CHECK(split.bare_lf == whole.bare_lf);
				CHECK(split.bare_cr == whole.bare_cr);
			}
		}
	}
}

static void test_data_output_fits_two_len_plus_two(void)
{
	struct smtp_data_decoder d;
	char out[2 * 1 + 2];
	size_t olen;

	/* a held CR resolved by a bare LF: the worst case for one byte */
	smtp_data_decoder_init(&d, true);
	smtp_data_decode(&d, S("\r"), out, &olen);
	CHECK_UINT_EQ(smtp_data_decode(&d, S("\n"), out, &olen), 1);
	smtp_data_decoder_init(&d, true);
	smtp_data_decode(&d, S("a\r"), out, &olen);
	CHECK_UINT_EQ(smtp_data_decode(&d, S("\n"), out, &olen), 1);
	CHECK_UINT_EQ(olen, 2);
	smtp_data_decoder_init(&d, true);
	smtp_data_decode(&d, S("x\r"), out, &olen);
	smtp_data_decode(&d, S("\r"), out, &olen);
	CHECK_UINT_EQ(olen, 2);
	CHECK_UINT_EQ(smtp_data_decode(&d, S("\n"), out, &olen), 1);
	CHECK_UINT_EQ(olen, 2);
}

/* ---- message data: encoder ---- */

static void test_encode_doubles_leading_dot(void)
{
	char out[64];
	size_t n = encode(S(".hidden\r\n"), out);

	CHECK_BYTES(out, n, "..hidden\r\n.\r\n");
}

static void test_encode_doubles_dot_lines(void)
{
	char out[64];
	size_t n = encode(S("a\r\n.\r\n..\r\nb.c\r\n"), out);

	CHECK_BYTES(out, n, "a\r\n..\r\n...\r\nb.c\r\n.\r\n");
}

static void test_encode_adds_missing_final_crlf(void)
{
	char out[64];
	size_t n = encode(S("no newline"), out);

	CHECK_BYTES(out, n, "no newline\r\n.\r\n");
}

static void test_encode_empty_message(void)
{
	char out[64];
	size_t n = encode("", 0, out);

	CHECK_BYTES(out, n, ".\r\n");
}

static void test_encode_dot_after_bare_lf_is_not_a_line_start(void)
{
	char out[64];
	size_t n = encode(S("a\n.b\r\n"), out);

	CHECK_BYTES(out, n, "a\n.b\r\n.\r\n");
}

static void test_encode_state_spans_calls(void)
{
	struct smtp_data_encoder e;
	char out[64];
	size_t n;

	smtp_data_encoder_init(&e);
	n = smtp_data_encode(&e, S("a\r"), out);
	n += smtp_data_encode(&e, S("\n"), out + n);
	n += smtp_data_encode(&e, S(".x\r\n"), out + n);
	n += smtp_data_encode_end(&e, out + n);
	CHECK_BYTES(out, n, "a\r\n..x\r\n.\r\n");
}

static void test_encode_then_decode_round_trips(void)
{
	static const char *const msgs[] = {
		"", ".", "..", ".\r\n", "a\r\n.\r\nb", "\r\n\r\n", "x\r\n..\r\n",
		".\r\n.\r\n.", "trailing",
	};
	char enc[128];
	struct decoded r;
	size_t i, n, len;
	char want[64];
	size_t wlen;

	for (i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
		len = strlen(msgs[i]);
		n = encode(msgs[i], len, enc);
		decode(enc, n, false, 0, &r);
		memcpy(want, msgs[i], len);
		wlen = len;
		if (len > 0 && (len < 2 || memcmp(msgs[i] + len - 2, "\r\n", 2))) {
			memcpy(want + wlen, "\r\n", 2);
			wlen += 2;
		}
		CHECK(r.done);
		CHECK_UINT_EQ(r.consumed, n);
		CHECK_MEM_EQ(r.out, r.out_len, want, wlen);
	}
}

/* ---- xtext ---- */

static void test_xtext_encode_escapes_plus_equals_and_controls(void)
{
	char out[64];

	CHECK_UINT_EQ(smtp_xtext_encode("a+b=c d\x01\xc3\xa9", out, sizeof(out)),
		      strlen("a+2Bb+3Dc+20d+01+C3+A9"));
	CHECK_STR_EQ(out, "a+2Bb+3Dc+20d+01+C3+A9");
	smtp_xtext_encode("[192.0.2.1]", out, sizeof(out));
	CHECK_STR_EQ(out, "[192.0.2.1]");
	smtp_xtext_encode("", out, sizeof(out));
	CHECK_STR_EQ(out, "");
}

static void test_xtext_encode_never_cuts_an_escape(void)
{
	char out[5];

	/* "ab+20" needs 5 bytes and the NUL; only "ab" fits whole */
	CHECK_UINT_EQ(smtp_xtext_encode("ab c", out, sizeof(out)), 6);
	CHECK_STR_EQ(out, "ab");
	CHECK_UINT_EQ(smtp_xtext_encode("ab c", NULL, 0), 6);
}

static void test_xtext_valid(void)
{
	CHECK(smtp_xtext_valid("rfc822;x+40y"));
	CHECK(smtp_xtext_valid(""));
	CHECK(smtp_xtext_valid("+2B+3D"));
	CHECK(!smtp_xtext_valid("a+4"));
	CHECK(!smtp_xtext_valid("a+"));
	CHECK(!smtp_xtext_valid("a+2b"));
	CHECK(!smtp_xtext_valid("a=b"));
	CHECK(!smtp_xtext_valid("a b"));
	CHECK(!smtp_xtext_valid("\xc3\xa9"));
	CHECK(!smtp_xtext_valid(NULL));
}

/* ---- command rules (the session's table) ---- */

/* reply_text - "CODE ENH TEXT" of a failed check, or "ok" (static) */
static const char *reply_text(int rc, const struct smtp_error *e)
{
	static char buf[512];

	if (rc == 0)
		return "ok";
	snprintf(buf, sizeof(buf), "%d %s %s", e->code, e->enh, e->text);
	return buf;
}

/* check_cmd - what smtp_command_check() says of line under flags and st */
static const char *check_cmd(const char *line, unsigned flags,
			     struct smtp_cmd_state st)
{
	struct smtp_command cmd;
	struct smtp_error e = { 0, NULL, NULL };

	if (smtp_command_parse(line, strlen(line), &cmd, &e) < 0)
		return "unparsed";
	return reply_text(smtp_command_check(&cmd, flags, &st, &e), &e);
}

static const struct smtp_cmd_state st_new = { false, false, false, false };
static const struct smtp_cmd_state st_helo = { false, false, true, false };
static const struct smtp_cmd_state st_mail = { false, false, true, true };

static void test_rule_no_flags_allows_anything_anywhere(void)
{
	CHECK_STR_EQ(check_cmd("NOOP", 0, st_new), "ok");
	CHECK_STR_EQ(check_cmd("NOOP anything", 0, st_mail), "ok");
	CHECK_STR_EQ(check_cmd("FROB", 0, st_helo), "ok");
	/* LAST is for the handler: it never refuses a command. */
	CHECK_STR_EQ(check_cmd("QUIT", SMTP_CMD_LAST, st_new), "ok");
}

static void test_rule_tls_required_refuses_all_but_pre_tls(void)
{
	struct smtp_cmd_state st = { true, false, true, false };

	CHECK_STR_EQ(check_cmd("MAIL FROM:<a@b>", SMTP_CMD_NEEDS_HELO, st),
		     "530 5.7.0 Must issue a STARTTLS command first");
	/* before any other check: a syntax error gives nothing away */
	CHECK_STR_EQ(check_cmd("DATA x", SMTP_CMD_ARG_NONE, st),
		     "530 5.7.0 Must issue a STARTTLS command first");
	CHECK_STR_EQ(check_cmd("EHLO a.example", SMTP_CMD_PRE_TLS | SMTP_CMD_ARG_ONE, st),
		     "ok");
	st.tls_active = true;
	CHECK_STR_EQ(check_cmd("MAIL FROM:<a@b>", SMTP_CMD_NEEDS_HELO, st), "ok");
	st.tls_required = false;
	st.tls_active = false;
	CHECK_STR_EQ(check_cmd("MAIL FROM:<a@b>", SMTP_CMD_NEEDS_HELO, st), "ok");
}

static void test_rule_arg_none_refuses_an_argument(void)
{
	CHECK_STR_EQ(check_cmd("DATA", SMTP_CMD_ARG_NONE, st_mail), "ok");
	CHECK_STR_EQ(check_cmd("DATA now", SMTP_CMD_ARG_NONE, st_mail),
		     "501 5.5.4 Syntax: DATA");
}

static void test_rule_arg_one_wants_exactly_one_word(void)
{
	CHECK_STR_EQ(check_cmd("HELO a.example", SMTP_CMD_ARG_ONE, st_new), "ok");
	CHECK_STR_EQ(check_cmd("HELO", SMTP_CMD_ARG_ONE, st_new),
		     "501 5.5.4 Syntax: HELO hostname");
	CHECK_STR_EQ(check_cmd("EHLO a.example b", SMTP_CMD_ARG_ONE, st_new),
		     "501 5.5.4 Syntax: EHLO hostname");
	/* spaces after the verb are no argument */
	CHECK_STR_EQ(check_cmd("EHLO    ", SMTP_CMD_ARG_ONE, st_new),
		     "501 5.5.4 Syntax: EHLO hostname");
}

static void test_rule_arg_some_wants_an_argument(void)
{
	CHECK_STR_EQ(check_cmd("VRFY John Smith", SMTP_CMD_ARG_SOME, st_new), "ok");
	CHECK_STR_EQ(check_cmd("VRFY", SMTP_CMD_ARG_SOME, st_new),
		     "501 5.5.4 Syntax: VRFY address");
}

static void test_rule_syntax_comes_before_the_state(void)
{
	/* "DATA x" outside a transaction was always a syntax error */
	CHECK_STR_EQ(check_cmd("DATA x", SMTP_CMD_NEEDS_HELO | SMTP_CMD_NEEDS_MAIL |
					     SMTP_CMD_ARG_NONE, st_new),
		     "501 5.5.4 Syntax: DATA");
}

static void test_rule_needs_mail(void)
{
	unsigned rcpt = SMTP_CMD_NEEDS_HELO | SMTP_CMD_NEEDS_MAIL;

	CHECK_STR_EQ(check_cmd("RCPT TO:<a@b>", rcpt, st_helo),
		     "503 5.5.1 Error: need MAIL command");
	/* before HELO as well: what RCPT lacks first is MAIL */
	CHECK_STR_EQ(check_cmd("RCPT TO:<a@b>", rcpt, st_new),
		     "503 5.5.1 Error: need MAIL command");
	CHECK_STR_EQ(check_cmd("RCPT TO:<a@b>", rcpt, st_mail), "ok");
}

static void test_rule_needs_helo(void)
{
	unsigned mail = SMTP_CMD_NEEDS_HELO | SMTP_CMD_NOT_IN_MAIL;

	CHECK_STR_EQ(check_cmd("MAIL FROM:<a@b>", mail, st_new),
		     "503 5.5.1 Error: send HELO/EHLO first");
	CHECK_STR_EQ(check_cmd("MAIL FROM:<a@b>", mail, st_helo), "ok");
}

static void test_rule_not_in_mail(void)
{
	unsigned mail = SMTP_CMD_NEEDS_HELO | SMTP_CMD_NOT_IN_MAIL;

	CHECK_STR_EQ(check_cmd("MAIL FROM:<a@b>", mail, st_mail),
		     "503 5.5.1 Error: nested MAIL command");
	CHECK_STR_EQ(check_cmd("STARTTLS", SMTP_CMD_NOT_IN_MAIL, st_mail),
		     "503 5.5.1 Error: MAIL transaction in progress");
	CHECK_STR_EQ(check_cmd("STARTTLS", SMTP_CMD_NOT_IN_MAIL, st_helo), "ok");
}

static void test_verb_syntax_texts(void)
{
	CHECK_STR_EQ(smtp_verb_syntax(SMTP_VERB_HELO), "Syntax: HELO hostname");
	CHECK_STR_EQ(smtp_verb_syntax(SMTP_VERB_EHLO), "Syntax: EHLO hostname");
	CHECK_STR_EQ(smtp_verb_syntax(SMTP_VERB_DATA), "Syntax: DATA");
	CHECK_STR_EQ(smtp_verb_syntax(SMTP_VERB_VRFY), "Syntax: VRFY address");
	CHECK_STR_EQ(smtp_verb_syntax(SMTP_VERB_STARTTLS), "Syntax: STARTTLS");
	CHECK_STR_EQ(smtp_verb_syntax(SMTP_VERB_NOOP), "Error: syntax error");
	CHECK_STR_EQ(smtp_verb_syntax(SMTP_VERB_COUNT), "Error: syntax error");
}

/* ---- MAIL and RCPT parameters against the EHLO offer ---- */

static const struct smtp_offer offer_all = { true, true, 1000, true, true, true };
static const struct smtp_offer offer_none = { true, false, 0, false, false, false };
static const struct smtp_offer offer_helo = { false, false, 0, false, false, false };

/* mail_params - the reply the MAIL check gives for arg ("FROM:<...> ..."); *utf8 */
static const char *mail_params(const char *arg, const struct smtp_offer *o,
			       unsigned long long max, bool *utf8)
{
	struct smtp_path p;
	struct smtp_error e = { 0, NULL, NULL };
	bool u = false;
	int rc;

	if (parse_mail(arg, &p, &e) < 0)
		return "unparsed";
	rc = smtp_mail_params_check(&p, o, max, &u, &e);
	smtp_path_free(&p);
	if (utf8)
		*utf8 = u;
	return reply_text(rc, &e);
}

/* rcpt_params - the reply the RCPT check gives for arg ("TO:<...> ...") */
static const char *rcpt_params(const char *arg, const struct smtp_offer *o,
			       bool smtputf8)
{
	struct smtp_path p;
	struct smtp_error e = { 0, NULL, NULL };
	int rc;

	if (parse_rcpt(arg, &p, &e) < 0)
		return "unparsed";
	rc = smtp_rcpt_params_check(&p, o, smtputf8, &e);
	smtp_path_free(&p);
	return reply_text(rc, &e);
}

static void test_params_none_pass_after_helo_and_ehlo(void)
{
	CHECK_STR_EQ(mail_params("FROM:<a@b.example>", &offer_helo, 1000, NULL), "ok");
	CHECK_STR_EQ(rcpt_params("TO:<a@b.example>", &offer_helo, false), "ok");
	CHECK_STR_EQ(mail_params("FROM:<>", &offer_none, 1000, NULL), "ok");
}

static void test_params_after_helo_are_refused(void)
{
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> SIZE=10", &offer_helo, 1000, NULL),
		     "555 5.5.4 Parameters need EHLO, not HELO");
	CHECK_STR_EQ(rcpt_params("TO:<a@b.example> NOTIFY=NEVER", &offer_helo, false),
		     "555 5.5.4 Parameters need EHLO, not HELO");
}

static void test_params_unknown_or_not_offered_are_555(void)
{
	static const char *const mail[] = {
		"FROM:<a@b.example> XYZZY", "FROM:<a@b.example> SIZE=10",
		"FROM:<a@b.example> BODY=8BITMIME", "FROM:<a@b.example> SMTPUTF8",
		"FROM:<a@b.example> RET=FULL", "FROM:<a@b.example> ENVID=x",
	};

	for (size_t i = 0; i < sizeof(mail) / sizeof(mail[0]); i++)
		CHECK_STR_EQ(mail_params(mail[i], &offer_none, 1000, NULL),
			     "555 5.5.4 Unsupported parameter");
	CHECK_STR_EQ(rcpt_params("TO:<a@b.example> NOTIFY=NEVER", &offer_none, false),
		     "555 5.5.4 Unsupported parameter");
	CHECK_STR_EQ(rcpt_params("TO:<a@b.example> ORCPT=rfc822;a@b", &offer_none, false),
		     "555 5.5.4 Unsupported parameter");
	/* each command has its own: NOTIFY is RCPT's, SIZE is MAIL's */
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> NOTIFY=NEVER", &offer_all, 1000, NULL),
		     "555 5.5.4 Unsupported parameter");
	CHECK_STR_EQ(rcpt_params("TO:<a@b.example> SIZE=10", &offer_all, false),
		     "555 5.5.4 Unsupported parameter");
	CHECK_STR_EQ(rcpt_params("TO:<a@b.example> XYZZY=1", &offer_all, false),
		     "555 5.5.4 Unsupported parameter");
}

static void test_params_size(void)
{
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> SIZE=0", &offer_all, 1000, NULL), "ok");
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> SIZE=1000", &offer_all, 1000, NULL), "ok");
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> SIZE=1001", &offer_all, 1000, NULL),
		     "552 5.3.4 Message size exceeds fixed maximum message size");
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> SIZE=18446744073709551615",
				 &offer_all, 18446744073709551615ULL, NULL), "ok");
	static const char *const bad[] = {
		"FROM:<a@b.example> SIZE", "FROM:<a@b.example> SIZE=abc",
		"FROM:<a@b.example> SIZE=-1", "FROM:<a@b.example> SIZE=+1",
		"FROM:<a@b.example> SIZE=1k", "FROM:<a@b.example> SIZE=0x10",
		"FROM:<a@b.example> SIZE=18446744073709551616",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_STR_EQ(mail_params(bad[i], &offer_all, 18446744073709551615ULL, NULL),
			     "501 5.5.4 Bad SIZE parameter");
}

static void test_params_body(void)
{
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> BODY=7BIT", &offer_all, 1000, NULL), "ok");
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> BODY=8bitmime", &offer_all, 1000, NULL), "ok");
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> BODY=BINARYMIME", &offer_all, 1000, NULL),
		     "501 5.5.4 Unsupported BODY parameter");
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> BODY", &offer_all, 1000, NULL),
		     "501 5.5.4 Unsupported BODY parameter");
}

static void test_params_smtputf8(void)
{
	bool utf8 = true;

	CHECK_STR_EQ(mail_params("FROM:<a@b.example>", &offer_all, 1000, &utf8), "ok");
	CHECK(!utf8);
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> SMTPUTF8", &offer_all, 1000, &utf8), "ok");
	CHECK(utf8);
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> SMTPUTF8=yes", &offer_all, 1000, NULL),
		     "501 5.5.4 SMTPUTF8 takes no value");
}

static void test_params_ret_and_envid(void)
{
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> RET=FULL", &offer_all, 1000, NULL), "ok");
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> RET=hdrs", &offer_all, 1000, NULL), "ok");
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> RET=NONE", &offer_all, 1000, NULL),
		     "501 5.5.4 Bad RET parameter");
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> RET", &offer_all, 1000, NULL),
		     "501 5.5.4 Bad RET parameter");
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> ENVID=QQ+2B1", &offer_all, 1000, NULL), "ok");
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> ENVID=a+2b", &offer_all, 1000, NULL),
		     "501 5.5.4 Bad ENVID parameter");
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> ENVID", &offer_all, 1000, NULL),
		     "501 5.5.4 Bad ENVID parameter");

	char line[200] = "FROM:<a@b.example> ENVID=";
	size_t n = strlen(line);
	memset(line + n, 'x', 100);
	line[n + 100] = 0;
	CHECK_STR_EQ(mail_params(line, &offer_all, 1000, NULL), "ok");
	line[n + 100] = 'x';
	line[n + 101] = 0;
	CHECK_STR_EQ(mail_params(line, &offer_all, 1000, NULL),
		     "501 5.5.4 Bad ENVID parameter");
}

static void test_params_first_in_error_decides(void)
{
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> SIZE=5000 BODY=BAD", &offer_all, 1000, NULL),
		     "552 5.3.4 Message size exceeds fixed maximum message size");
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> BODY=BAD SIZE=5000", &offer_all, 1000, NULL),
		     "501 5.5.4 Unsupported BODY parameter");
	CHECK_STR_EQ(mail_params("FROM:<a@b.example> XYZZY SIZE=x", &offer_all, 1000, NULL),
		     "555 5.5.4 Unsupported parameter");
	/* a parameter error comes before the address's UTF-8 */
	CHECK_STR_EQ(mail_params("FROM:<\xc3\xa9@b.example> RET=x", &offer_all, 1000, NULL),
		     "501 5.5.4 Bad RET parameter");
}

static void test_params_utf8_address_needs_smtputf8(void)
{
	CHECK_STR_EQ(mail_params("FROM:<\xc3\xa9@b.example>", &offer_all, 1000, NULL),
		     "553 5.6.7 Error: UTF-8 address needs the SMTPUTF8 parameter");
	CHECK_STR_EQ(mail_params("FROM:<\xc3\xa9@b.example> SMTPUTF8", &offer_all, 1000, NULL),
		     "ok");
	CHECK_STR_EQ(rcpt_params("TO:<\xc3\xa9@b.example>", &offer_all, false),
		     "553 5.6.7 Error: UTF-8 address needs the SMTPUTF8 parameter");
	CHECK_STR_EQ(rcpt_params("TO:<\xc3\xa9@b.example>", &offer_all, true), "ok");
	CHECK_STR_EQ(rcpt_params("TO:<a@b.example>", &offer_all, false), "ok");
}

static void test_params_notify(void)
{
	static const char *const good[] = {
		"TO:<a@b.example> NOTIFY=NEVER", "TO:<a@b.example> NOTIFY=never",
		"TO:<a@b.example> NOTIFY=SUCCESS", "TO:<a@b.example> NOTIFY=delay,Failure",
		"TO:<a@b.example> NOTIFY=SUCCESS,FAILURE,DELAY",
	};
	static const char *const bad[] = {
		"TO:<a@b.example> NOTIFY", "TO:<a@b.example> NOTIFY=SOMETIMES",
		"TO:<a@b.example> NOTIFY=NEVER,SUCCESS", "TO:<a@b.example> NOTIFY=SUCCESS,NEVER",
		"TO:<a@b.example> NOTIFY=SUCCESS,", "TO:<a@b.example> NOTIFY=,SUCCESS",
		"TO:<a@b.example> NOTIFY=SUCCESS,,DELAY", "TO:<a@b.example> NOTIFY=SUCCESS,SUCCESS",
		"TO:<a@b.example> NOTIFY=SUCCESSFAILURE",
	};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		CHECK_STR_EQ(rcpt_params(good[i], &offer_all, false), "ok");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_STR_EQ(rcpt_params(bad[i], &offer_all, false),
			     "501 5.5.4 Bad NOTIFY parameter");
}

static void test_params_orcpt(void)
{
	CHECK_STR_EQ(rcpt_params("TO:<a@b.example> ORCPT=rfc822;a+40b.example", &offer_all, false),
		     "ok");
	static const char *const bad[] = {
		"TO:<a@b.example> ORCPT", "TO:<a@b.example> ORCPT=rfc822",
		"TO:<a@b.example> ORCPT=;a@b", "TO:<a@b.example> ORCPT=rfc822;a+4",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_STR_EQ(rcpt_params(bad[i], &offer_all, false),
			     "501 5.5.4 Bad ORCPT parameter");

	char line[600] = "TO:<a@b.example> ORCPT=rfc822;";
	size_t n = strlen(line), head = strlen("rfc822;");
	memset(line + n, 'x', 500 - head);
	line[n + 500 - head] = 0;
	CHECK_STR_EQ(rcpt_params(line, &offer_all, false), "ok");
	line[n + 500 - head] = 'x';
	line[n + 501 - head] = 0;
	CHECK_STR_EQ(rcpt_params(line, &offer_all, false), "501 5.5.4 Bad ORCPT parameter");
}

static void test_too_big_reply(void)
{
	CHECK_INT_EQ(smtp_error_too_big.code, 552);
	CHECK_STR_EQ(smtp_error_too_big.enh, "5.3.4");
	CHECK_STR_EQ(smtp_error_too_big.text, "Message size exceeds fixed maximum message size");
}

/* ---- HELO domains ---- */

static bool domain(const char *s, bool utf8)
{
	return smtp_domain_valid(s, strlen(s), utf8);
}

static void test_domain_valid_names(void)
{
	CHECK(domain("mx.example.org", false));
	CHECK(domain("localhost", false));
	CHECK(domain("mx.example.org.", false));
	CHECK(domain("a-b.c0", false));
	CHECK(domain("123.example", false));
}

static void test_domain_invalid_names(void)
{
	CHECK(!domain("", false));
	CHECK(!domain(".", false));
	CHECK(!domain("-mx.example", false));
	CHECK(!domain("mx-.example", false));
	CHECK(!domain("mx..example", false));
	CHECK(!domain(".example", false));
	CHECK(!domain("mx.example..", false));
	CHECK(!domain("mx_1.example", false));
	CHECK(!domain("mx example", false));
	CHECK(!smtp_domain_valid(S("mx\0.example"), false));
	CHECK(!smtp_domain_valid(NULL, 0, false));
}

static void test_domain_label_and_total_length_limits(void)
{
	char name[300];

	memset(name, 'a', 63);
	strcpy(name + 63, ".com");
	CHECK(domain(name, false));
	memset(name, 'a', 64);
	strcpy(name + 64, ".com");
	CHECK(!domain(name, false));
	long_domain(name, 255);
	CHECK(domain(name, false));
	long_domain(name, 256);
	CHECK(!domain(name, false));
}

static void test_domain_utf8_only_when_allowed(void)
{
	CHECK(domain("例子.广告", true));
	CHECK(!domain("例子.广告", false));
	CHECK(!domain("ex\xff.com", true));
	CHECK(!domain("ex\xc3.com", true));
}

static bool helo(const char *s, bool utf8)
{
	return smtp_helo_valid(s, strlen(s), utf8);
}

static void test_helo_takes_underscores_and_literals(void)
{
	CHECK(helo("mail_host.example.org", false));
	CHECK(helo("WIN-PC_01", false));
	CHECK(helo("_a.example", false));
	CHECK(helo("[192.0.2.1]", false));
	CHECK(helo("[IPv6:2001:db8::1]", false));
	CHECK(helo("mx.example.org.", false));
	/* The strict check for our own names is unchanged. */
	CHECK(!domain("mail_host.example.org", false));
}

static void test_helo_refuses_bad_names(void)
{
	CHECK(!helo("", false));
	CHECK(!helo("a..example", false));
	CHECK(!helo(".example", false));
	CHECK(!helo("-a.example", false));
	CHECK(!helo("a b", false));
	CHECK(!helo("ctl\x01.example", false));
	CHECK(!helo("semi;colon.example", false));
	CHECK(!helo("caf\xe9.example", false));
	CHECK(!helo("caf\xe9.example", true));
	CHECK(!helo("\x80\xff", true));
	CHECK(!helo("caf\xc3\xa9.example", false));
	CHECK(helo("caf\xc3\xa9.example", true));
	CHECK(!helo("[300.1.1.1]", false));
	CHECK(!helo("[IPv6:zz]", false));
	CHECK(!smtp_helo_valid(S("a\0.example"), false));
}

static void test_domain_address_literals(void)
{
	CHECK(domain("[192.0.2.1]", false));
	CHECK(domain("[IPv6:2001:db8::1]", false));
	CHECK(domain("[ipv6:::1]", false));
	CHECK(!domain("[192.0.2.300]", false));
	CHECK(!domain("[192.0.2.1", false));
	CHECK(!domain("[]", false));
	CHECK(!domain("[", false));
	CHECK(!domain("[IPv6:2001:db8::1%eth0]", false));
	CHECK(!domain("[IPv6:1.2.3.4]", false));
}

/* ---- XCLIENT and XFORWARD attributes ---- */

/* xattrs - parse a C string as XCLIENT (xforward false) or XFORWARD */
static int xattrs(const char *arg, bool xforward, struct smtp_xattrs *x,
		  struct smtp_error *e)
{
	return smtp_xattrs_parse(arg, strlen(arg), xforward, x, e);
}

/* xattr_error - the 501 text arg gets, or "ok" */
static const char *xattr_error(const char *arg, bool xforward)
{
	static struct smtp_xattrs x;
	struct smtp_error e = { 0, NULL, NULL };

	if (xattrs(arg, xforward, &x, &e) == 0)
		return "ok";
	CHECK_INT_EQ(e.code, 501);
	CHECK_STR_EQ(e.enh, "5.5.4");
	return e.text;
}

static void test_xclient_every_attribute_is_parsed(void)
{
	struct smtp_xattrs x;
	struct smtp_error e;

	CHECK_INT_EQ(xattrs("NAME=mail.example.org ADDR=192.0.2.7 PORT=4711 PROTO=ESMTP "
			    "HELO=[192.0.2.7] LOGIN=alice DESTADDR=IPV6:2001:DB8::0:1 DESTPORT=25",
			    false, &x, &e), 0);
	CHECK_STR_EQ(x.value[SMTP_XA_NAME], "mail.example.org");
	CHECK_STR_EQ(x.value[SMTP_XA_ADDR], "192.0.2.7");
	CHECK_STR_EQ(x.value[SMTP_XA_PORT], "4711");
	CHECK_STR_EQ(x.value[SMTP_XA_PROTO], "ESMTP");
	CHECK_STR_EQ(x.value[SMTP_XA_HELO], "[192.0.2.7]");
	CHECK_STR_EQ(x.value[SMTP_XA_LOGIN], "alice");
	/* the IPv6 address comes back canonical and without its tag */
	CHECK_STR_EQ(x.value[SMTP_XA_DESTADDR], "2001:db8::1");
	CHECK_STR_EQ(x.value[SMTP_XA_DESTPORT], "25");
	for (int a = 0; a < SMTP_XA_COUNT; a++)
		CHECK_INT_EQ(x.state[a], (SMTP_XCLIENT_ATTRS & (1u << a)) ? SMTP_XV_VALUE
									   : SMTP_XV_ABSENT);
}

static void test_xclient_names_and_tags_in_any_case(void)
{
	struct smtp_xattrs x;
	struct smtp_error e;

	CHECK_INT_EQ(xattrs("addr=ipv6:::1 proto=smtp", false, &x, &e), 0);
	CHECK_STR_EQ(x.value[SMTP_XA_ADDR], "::1");
	CHECK_INT_EQ(x.state[SMTP_XA_PROTO], SMTP_XV_VALUE);
}

static void test_xclient_unavailable_and_tempunavail(void)
{
	struct smtp_xattrs x;
	struct smtp_error e;

	CHECK_INT_EQ(xattrs("NAME=[TEMPUNAVAIL] ADDR=[UNAVAILABLE] HELO=[unavailable]",
			    false, &x, &e), 0);
	CHECK_INT_EQ(x.state[SMTP_XA_NAME], SMTP_XV_TEMPUNAVAIL);
	CHECK_INT_EQ(x.state[SMTP_XA_ADDR], SMTP_XV_UNAVAILABLE);
	CHECK_INT_EQ(x.state[SMTP_XA_HELO], SMTP_XV_UNAVAILABLE);
	CHECK_STR_EQ(x.value[SMTP_XA_NAME], "");
	/* only a name lookup can fail for a while */
	CHECK_STR_EQ(xattr_error("HELO=[TEMPUNAVAIL]", false), "Bad HELO syntax");
}

static void test_xclient_xtext_is_decoded(void)
{
	struct smtp_xattrs x;
	struct smtp_error e;

	CHECK_INT_EQ(xattrs("LOGIN=a+2Bb+3Dc HELO=x+2Eexample", false, &x, &e), 0);
	CHECK_STR_EQ(x.value[SMTP_XA_LOGIN], "a+b=c");
	CHECK_STR_EQ(x.value[SMTP_XA_HELO], "x.example");
}

static void test_xclient_bad_xtext_is_refused(void)
{
	CHECK_STR_EQ(xattr_error("LOGIN=a+2", false), "Bad LOGIN syntax");
	CHECK_STR_EQ(xattr_error("LOGIN=a+2b", false), "Bad LOGIN syntax");
	CHECK_STR_EQ(xattr_error("LOGIN=a+00b", false), "Bad LOGIN syntax");
	CHECK_STR_EQ(xattr_error("LOGIN=a=b", false), "Bad LOGIN syntax");
	CHECK_STR_EQ(xattr_error("LOGIN=\xc3\xa9", false), "Bad LOGIN syntax");
	/* decoded, a space is not a login */
	CHECK_STR_EQ(xattr_error("LOGIN=a+20b", false), "Bad LOGIN syntax");
}

static void test_xclient_values_are_checked_for_their_kind(void)
{
	CHECK_STR_EQ(xattr_error("ADDR=192.0.2", false), "Bad ADDR syntax");
	CHECK_STR_EQ(xattr_error("ADDR=2001:db8::1", false), "Bad ADDR syntax");
	CHECK_STR_EQ(xattr_error("ADDR=IPV6:192.0.2.1", false), "Bad ADDR syntax");
	CHECK_STR_EQ(xattr_error("DESTADDR=host", false), "Bad DESTADDR syntax");
	CHECK_STR_EQ(xattr_error("PORT=65536", false), "Bad PORT syntax");
	CHECK_STR_EQ(xattr_error("PORT=-1", false), "Bad PORT syntax");
	CHECK_STR_EQ(xattr_error("PORT=000025", false), "Bad PORT syntax");
	CHECK_STR_EQ(xattr_error("DESTPORT=2x", false), "Bad DESTPORT syntax");
	CHECK_STR_EQ(xattr_error("PROTO=QMQP", false), "Bad PROTO syntax");
	CHECK_STR_EQ(xattr_error("HELO=bad..name", false), "Bad HELO syntax");
	CHECK_STR_EQ(xattr_error("NAME=[192.0.2.1]", false), "Bad NAME syntax");
	CHECK_STR_EQ(xattr_error("NAME=", false), "Bad NAME syntax");
	CHECK_STR_EQ(xattr_error("PORT=0", false), "ok");
	CHECK_STR_EQ(xattr_error("PORT=65535", false), "ok");
}

static void test_xclient_value_over_255_bytes_is_refused(void)
{
	char arg[600];

	strcpy(arg, "LOGIN=");
	memset(arg + 6, 'a', 255);
	arg[6 + 255] = 0;
	CHECK_STR_EQ(xattr_error(arg, false), "ok");
	strcat(arg, "a");
	CHECK_STR_EQ(xattr_error(arg, false), "Bad LOGIN syntax");
	/* its xtext may be longer: what counts is what it decodes to */
	strcpy(arg, "LOGIN=");
	for (int i = 0; i < 85; i++)
		strcat(arg, "+41");
	CHECK_STR_EQ(xattr_error(arg, false), "ok");
}

static void test_xclient_syntax_errors(void)
{
	CHECK_STR_EQ(xattr_error("", false), "Syntax: XCLIENT attribute=value...");
	CHECK_STR_EQ(xattr_error("   ", false), "Syntax: XCLIENT attribute=value...");
	CHECK_STR_EQ(xattr_error("NAME", false), "Syntax: XCLIENT attribute=value...");
	CHECK_STR_EQ(xattr_error("=x", false), "Syntax: XCLIENT attribute=value...");
	CHECK_STR_EQ(xattr_error("", true), "Syntax: XFORWARD attribute=value...");
}

static void test_xclient_and_xforward_take_their_own_attributes(void)
{
	CHECK_STR_EQ(xattr_error("IDENT=abc", false), "Bad XCLIENT attribute name");
	CHECK_STR_EQ(xattr_error("SOURCE=LOCAL", false), "Bad XCLIENT attribute name");
	CHECK_STR_EQ(xattr_error("FOO=bar", false), "Bad XCLIENT attribute name");
	CHECK_STR_EQ(xattr_error("LOGIN=a", true), "Bad XFORWARD attribute name");
	CHECK_STR_EQ(xattr_error("DESTADDR=192.0.2.1", true), "Bad XFORWARD attribute name");
	CHECK_STR_EQ(xattr_error("NAMES=x", true), "Bad XFORWARD attribute name");
}

static void test_xforward_attributes(void)
{
	struct smtp_xattrs x;
	struct smtp_error e;

	CHECK_INT_EQ(xattrs("NAME=spike.porcupine.org ADDR=168.100.189.2 PORT=1234 "
			    "PROTO=QMQP HELO=spike IDENT=4Lx2 SOURCE=REMOTE",
			    true, &x, &e), 0);
	CHECK_STR_EQ(x.value[SMTP_XA_PROTO], "QMQP");
	CHECK_STR_EQ(x.value[SMTP_XA_IDENT], "4Lx2");
	CHECK_STR_EQ(x.value[SMTP_XA_SOURCE], "REMOTE");
	CHECK_STR_EQ(xattr_error("SOURCE=ELSEWHERE", true), "Bad SOURCE syntax");
	CHECK_STR_EQ(xattr_error("PROTO=E-SMTP", true), "Bad PROTO syntax");
	CHECK_STR_EQ(xattr_error("IDENT=[UNAVAILABLE]", true), "ok");
}

static void test_xattrs_later_attribute_wins_and_earlier_are_kept(void)
{
	struct smtp_xattrs x;
	struct smtp_error e;

	CHECK_INT_EQ(xattrs("ADDR=192.0.2.1 NAME=a.example ADDR=192.0.2.2", true, &x, &e), 0);
	CHECK_STR_EQ(x.value[SMTP_XA_ADDR], "192.0.2.2");
	CHECK_STR_EQ(x.value[SMTP_XA_NAME], "a.example");
	CHECK_INT_EQ(xattrs("ADDR=192.0.2.1 ADDR=[UNAVAILABLE]", true, &x, &e), 0);
	CHECK_INT_EQ(x.state[SMTP_XA_ADDR], SMTP_XV_UNAVAILABLE);
	CHECK_STR_EQ(x.value[SMTP_XA_ADDR], "");
}

static void test_xattr_names(void)
{
	CHECK_STR_EQ(smtp_xattr_name(SMTP_XA_DESTPORT), "DESTPORT");
	CHECK_STR_EQ(smtp_xattr_name(SMTP_XA_COUNT), "");
}

int main(void)
{
	RUN(test_line_crlf_ends_line);
	RUN(test_line_empty_line_is_ok_with_zero_length);
	RUN(test_line_without_end_is_incomplete);
	RUN(test_line_bare_lf_is_reported);
	RUN(test_line_bare_cr_is_consumed_through_next_lf);
	RUN(test_line_bare_cr_wins_over_bare_lf);
	RUN(test_line_cr_cr_lf_is_bare_cr);
	RUN(test_line_bare_cr_without_lf_waits);
	RUN(test_line_bare_cr_without_lf_over_max_len_is_too_long);
	RUN(test_line_cr_as_last_byte_is_not_yet_bare);
	RUN(test_line_cr_as_last_byte_at_max_len_still_waits);
	RUN(test_line_of_exactly_max_len_is_ok);
	RUN(test_line_one_over_max_len_is_too_long_up_to_its_lf);
	RUN(test_line_bare_lf_over_max_len_is_too_long);
	RUN(test_line_without_lf_past_max_len_is_too_long);
	RUN(test_line_too_long_then_skip_keeps_next_line);
	RUN(test_line_skip_finds_lf);
	RUN(test_line_skip_without_lf_discards_all);
	RUN(test_line_nul_byte_does_not_end_line);

	RUN(test_command_every_verb_is_recognised);
	RUN(test_command_verb_is_case_insensitive);
	RUN(test_command_mail_arg_starts_at_from);
	RUN(test_command_rcpt_arg_starts_at_to);
	RUN(test_command_unknown_verb_is_parsed);
	RUN(test_command_verb_must_end_at_space);
	RUN(test_command_with_nul_byte_is_refused);
	RUN(test_command_with_control_character_is_refused);
	RUN(test_command_tab_and_utf8_are_allowed);
	RUN(test_command_empty_line_is_refused);
	RUN(test_command_blank_line_is_refused_as_empty);
	RUN(test_command_trailing_spaces_stay_in_arg);
	RUN(test_verb_name_is_canonical);

	RUN(test_path_simple_mailbox);
	RUN(test_path_from_keyword_is_case_insensitive);
	RUN(test_path_null_reverse_path_for_mail);
	RUN(test_path_null_path_is_refused_for_rcpt);
	RUN(test_path_postmaster_without_domain_for_rcpt);
	RUN(test_path_postmaster_without_domain_is_refused_for_mail);
	RUN(test_path_postmaster_with_domain_is_an_ordinary_mailbox);
	RUN(test_path_mailbox_without_domain_is_refused);
	RUN(test_path_quoted_local_part_with_space);
	RUN(test_path_quoted_local_part_with_at_sign);
	RUN(test_path_quoted_local_part_with_angle_bracket);
	RUN(test_path_quoted_pair_in_local_part);
	RUN(test_path_empty_quoted_local_part_is_accepted);
	RUN(test_path_unbalanced_quote_is_refused);
	RUN(test_path_quoted_string_with_control_is_refused);
	RUN(test_path_utf8_mailbox_sets_utf8);
	RUN(test_path_utf8_in_quoted_local_part);
	RUN(test_path_invalid_utf8_is_refused);
	RUN(test_path_source_route_is_split_off);
	RUN(test_path_single_hop_source_route);
	RUN(test_path_malformed_source_route_is_refused);
	RUN(test_path_ipv4_address_literal);
	RUN(test_path_bad_ipv4_address_literal_is_refused);
	RUN(test_path_ipv6_address_literal);
	RUN(test_path_bad_ipv6_address_literal_is_refused);
	RUN(test_path_general_address_literal);
	RUN(test_path_missing_angle_brackets_is_syntax_error);
	RUN(test_path_missing_from_or_to_is_syntax_error);
	RUN(test_path_spaces_after_colon_are_tolerated);
	RUN(test_path_spaces_inside_brackets_are_refused);
	RUN(test_path_bad_dot_string_is_refused);
	RUN(test_path_bad_domain_is_refused);
	RUN(test_path_control_characters_are_refused);
	RUN(test_path_local_part_length_limit);
	RUN(test_path_label_over_63_bytes_is_refused);
	RUN(test_path_domain_over_255_bytes_is_refused);
	RUN(test_path_over_256_bytes_is_refused);
	RUN(test_path_params_size_and_body);
	RUN(test_path_param_keyword_upper_cased_value_kept);
	RUN(test_path_param_without_value);
	RUN(test_path_params_after_null_path);
	RUN(test_path_duplicate_param_is_refused);
	RUN(test_path_param_bad_characters_are_refused);
	RUN(test_path_param_empty_value_or_keyword_is_refused);
	RUN(test_path_param_needs_a_space_after_bracket);
	RUN(test_path_params_tolerate_extra_and_trailing_spaces);
	RUN(test_path_sixteen_params_ok_seventeen_refused);
	RUN(test_path_orcpt_value_is_xtext);
	RUN(test_path_free_is_safe_on_zeroed_struct_and_twice);
	RUN(test_path_error_leaves_nothing_to_free);
	RUN(test_path_error_texts_carry_no_code);

	RUN(test_reply_single_line);
	RUN(test_reply_multi_line_without_enhanced_code);
	RUN(test_reply_multi_line_with_enhanced_code);
	RUN(test_reply_enhanced_code_of_other_class_is_ignored);
	RUN(test_reply_bare_code_is_final);
	RUN(test_reply_mismatched_codes_are_refused);
	RUN(test_reply_malformed_lines_are_refused);
	RUN(test_reply_too_many_lines_are_refused);
	RUN(test_reply_of_max_lines_is_accepted);
	RUN(test_reply_long_line_is_cut);
	RUN(test_reply_feed_after_complete_is_refused);
	RUN(test_reply_format_reproduces_the_wire);
	RUN(test_reply_format_inserts_default_enhanced_code);
	RUN(test_reply_format_empty_text);
	RUN(test_reply_format_truncates_like_snprintf);
	RUN(test_enh_valid_accepts_rfc3463_codes);
	RUN(test_enh_valid_refuses_malformed_codes);

	RUN(test_caps_from_postfix_ehlo_reply);
	RUN(test_caps_keywords_case_insensitive_unknown_ignored);
	RUN(test_caps_greeting_line_is_not_a_keyword);
	RUN(test_caps_size_without_number);
	RUN(test_caps_of_non_250_reply_are_empty);
	RUN(test_caps_long_xclient_attrs_cut_at_a_word);

	RUN(test_data_simple_message_ends_at_crlf_dot_crlf);
	RUN(test_data_empty_message);
	RUN(test_data_leading_dots_are_removed);
	RUN(test_data_crlf_dot_dot_crlf_does_not_end);
	RUN(test_data_lf_dot_lf_does_not_end);
	RUN(test_data_lf_dot_crlf_does_not_end);
	RUN(test_data_cr_dot_crlf_does_not_end);
	RUN(test_data_crlf_dot_cr_does_not_end);
	RUN(test_data_crlf_nul_dot_crlf_does_not_end);
	RUN(test_data_dot_lf_at_start_does_not_end);
	RUN(test_data_smuggled_end_then_real_end);
	RUN(test_data_bare_flags_are_set_separately);
	RUN(test_data_normalize_writes_crlf_for_bare_lf_and_cr);
	RUN(test_data_normalize_still_never_ends_on_bare_lf);
	RUN(test_data_normalize_dot_cr_at_line_start);
	RUN(test_data_pipelined_bytes_are_not_consumed);
	RUN(test_data_held_bytes_are_written_by_a_later_call);
	RUN(test_data_any_chunk_split_gives_the_same_result);
	RUN(test_data_output_fits_two_len_plus_two);

	RUN(test_encode_doubles_leading_dot);
	RUN(test_encode_doubles_dot_lines);
	RUN(test_encode_adds_missing_final_crlf);
	RUN(test_encode_empty_message);
	RUN(test_encode_dot_after_bare_lf_is_not_a_line_start);
	RUN(test_encode_state_spans_calls);
	RUN(test_encode_then_decode_round_trips);

	RUN(test_xtext_encode_escapes_plus_equals_and_controls);
	RUN(test_xtext_encode_never_cuts_an_escape);
	RUN(test_xtext_valid);

	RUN(test_rule_no_flags_allows_anything_anywhere);
	RUN(test_rule_tls_required_refuses_all_but_pre_tls);
	RUN(test_rule_arg_none_refuses_an_argument);
	RUN(test_rule_arg_one_wants_exactly_one_word);
	RUN(test_rule_arg_some_wants_an_argument);
	RUN(test_rule_syntax_comes_before_the_state);
	RUN(test_rule_needs_mail);
	RUN(test_rule_needs_helo);
	RUN(test_rule_not_in_mail);
	RUN(test_verb_syntax_texts);

	RUN(test_params_none_pass_after_helo_and_ehlo);
	RUN(test_params_after_helo_are_refused);
	RUN(test_params_unknown_or_not_offered_are_555);
	RUN(test_params_size);
	RUN(test_params_body);
	RUN(test_params_smtputf8);
	RUN(test_params_ret_and_envid);
	RUN(test_params_first_in_error_decides);
	RUN(test_params_utf8_address_needs_smtputf8);
	RUN(test_params_notify);
	RUN(test_params_orcpt);
	RUN(test_too_big_reply);

	RUN(test_domain_valid_names);
	RUN(test_domain_invalid_names);
	RUN(test_domain_label_and_total_length_limits);
	RUN(test_domain_utf8_only_when_allowed);
	RUN(test_helo_takes_underscores_and_literals);
	RUN(test_helo_refuses_bad_names);
	RUN(test_domain_address_literals);

	RUN(test_xclient_every_attribute_is_parsed);
	RUN(test_xclient_names_and_tags_in_any_case);
	RUN(test_xclient_unavailable_and_tempunavail);
	RUN(test_xclient_xtext_is_decoded);
	RUN(test_xclient_bad_xtext_is_refused);
	RUN(test_xclient_values_are_checked_for_their_kind);
	RUN(test_xclient_value_over_255_bytes_is_refused);
	RUN(test_xclient_syntax_errors);
	RUN(test_xclient_and_xforward_take_their_own_attributes);
	RUN(test_xforward_attributes);
	RUN(test_xattrs_later_attribute_wins_and_earlier_are_kept);
	RUN(test_xattr_names);

	return unit_summary();
}
