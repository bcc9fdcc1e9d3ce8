/*
 * test_message.c - unit tests of the header model (proxy/message.c)
 *
 * One scenario per test; the names say what a filter, or the backend,
 * sees. Offsets are checked exactly: header_end is where the rendered
 * header block is spliced into the spooled message, body_start is where
 * filters start reading the body, so an off-by-one in either changes the
 * message that is delivered or hides part of it from filters.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "message.h"
#include "spool.h"
#include "unit.h"

/* A string literal and its length, embedded NULs included. */
#define S(lit) (lit), (sizeof(lit) - 1)

/* buf[0..len) holds exactly the bytes of a string literal */
#define CHECK_BYTES(buf, len, lit) CHECK_MEM_EQ(buf, len, lit, sizeof(lit) - 1)

/* ---- helpers ---- */

/* parse - parse a buffer that must parse */
static void parse(struct message_headers *h, const char *buf, size_t len)
{
	CHECK_INT_EQ(message_headers_parse(h, buf, len), 0);
}

/* CHECK_RENDERS - the header block renders to exactly the literal */
#define CHECK_RENDERS(h, lit)                                            \
	do {                                                             \
		size_t render_len_ = 12345;                              \
		char *render_ = message_headers_render((h), &render_len_); \
		CHECK_NOT_NULL(render_);                                 \
		if (render_) {                                           \
			CHECK_BYTES(render_, render_len_, lit);          \
			CHECK(render_[render_len_] == '\0');             \
		}                                                        \
		free(render_);                                           \
	} while (0)

/* spool_of - a finished spool holding buf[0..len), written in pieces */
static struct spool *spool_of(const char *buf, size_t len)
{
	struct spool *spool = spool_new("/tmp", 4096);

	CHECK_NOT_NULL(spool);
	for (size_t off = 0; off < len;) {
		size_t n = 1 + (off * 13) % 9000;
		if (n > len - off)
			n = len - off;
		CHECK_INT_EQ(spool_write(spool, buf + off, n), 0);
		off += n;
	}
	CHECK_INT_EQ(spool_finish(spool), 0);
	return spool;
}

/* same_headers - two parses agree field by field and on the offsets */
static void check_same_headers(const struct message_headers *a,
			       const struct message_headers *b)
{
	CHECK_UINT_EQ(a->n, b->n);
	CHECK_UINT_EQ(a->header_end, b->header_end);
	CHECK_UINT_EQ(a->body_start, b->body_start);
	for (size_t i = 0; i < a->n && i < b->n; i++) {
		CHECK_STR_EQ(a->fields[i].name, b->fields[i].name);
		CHECK_STR_EQ(a->fields[i].value, b->fields[i].value);
		CHECK_MEM_EQ(a->fields[i].raw, a->fields[i].raw_len,
			     b->fields[i].raw, b->fields[i].raw_len);
	}
}

/*
 * big_header - a header block of fill lines of exactly 100 bytes
 * ("X-Fill-NNNNNNN: yyy...\r\n"), nlines of them, then tail; *len gets
 * the length. Ten thousand and more lines pass MESSAGE_HEADER_MAX.
 */
static char *big_header(size_t nlines, const char *tail, size_t tail_len,
			size_t *len)
{
	char *buf = malloc(nlines * 100 + tail_len);

	CHECK_NOT_NULL(buf);
	for (size_t i = 0; i < nlines; i++) {
		char *line = buf + i * 100;
		int n = snprintf(line, 100, "X-Fill-%07zu: ", i);
		memset(line + n, 'y', 98 - (size_t)n);
		line[98] = '\r';
		line[99] = '\n';
	}
	memcpy(buf + nlines * 100, tail, tail_len);
	*len = nlines * 100 + tail_len;
	return buf;
}

/*
 * last_line - into buf, "X-Last: 000...\r\n" of len bytes (76 brings
 * 10485 fill lines to exactly MESSAGE_HEADER_MAX), then after; the length
 */
static size_t last_line(char *buf, size_t len, const char *after)
{
	memcpy(buf, "X-Last: ", 8);
	memset(buf + 8, '0', len - 10);
	memcpy(buf + len - 2, "\r\n", 2);
	memcpy(buf + len, after, strlen(after));
	return len + strlen(after);
}

/* ---- parsing ---- */

static void test_simple_header_and_body_are_split_at_blank_line(void)
{
	struct message_headers h;

	parse(&h, S("From: a@example.org\r\nSubject: hi there\r\n\r\nbody\r\n"));
	CHECK_UINT_EQ(h.n, 2);
	CHECK_STR_EQ(h.fields[0].name, "From");
	CHECK_STR_EQ(h.fields[0].value, "a@example.org");
	CHECK_BYTES(h.fields[0].raw, h.fields[0].raw_len, "From: a@example.org\r\n");
	CHECK_STR_EQ(h.fields[1].name, "Subject");
	CHECK_STR_EQ(h.fields[1].value, "hi there");
	CHECK_UINT_EQ(h.header_end, 40);
	CHECK_UINT_EQ(h.body_start, 42);
	CHECK(!h.changed);
	message_headers_free(&h);
	CHECK_UINT_EQ(h.n, 0);
	CHECK_NULL(h.fields);
}

static void test_folded_field_value_is_unfolded(void)
{
	struct message_headers h;

	parse(&h, S("Subject: a long\r\n\tsubject\r\n   line  \r\nTo: b@example.org\r\n\r\n"));
	CHECK_UINT_EQ(h.n, 2);
	CHECK_STR_EQ(h.fields[0].name, "Subject");
	/* Unfolding drops the CRLFs only; the white space that folded stays. */
	CHECK_STR_EQ(h.fields[0].value, "a long\tsubject   line");
	CHECK_BYTES(h.fields[0].raw, h.fields[0].raw_len,
		    "Subject: a long\r\n\tsubject\r\n   line  \r\n");
	CHECK_STR_EQ(h.fields[1].value, "b@example.org");
	CHECK_UINT_EQ(h.header_end, 57);
	CHECK_UINT_EQ(h.body_start, 59);
	message_headers_free(&h);
}

static void test_value_starting_on_continuation_line_has_no_leading_space(void)
{
	struct message_headers h;

	/* Long encoded subjects are often folded right after the colon. */
	parse(&h, S("Subject: \r\n\t=?UTF-8?Q?caf=C3=A9?=\r\nX:\r\n \r\n  y\r\n\r\n"));
	CHECK_UINT_EQ(h.n, 2);
	CHECK_STR_EQ(h.fields[0].value, "=?UTF-8?Q?caf=C3=A9?=");
	CHECK_STR_EQ(h.fields[1].value, "y");
	CHECK_RENDERS(&h, "Subject: \r\n\t=?UTF-8?Q?caf=C3=A9?=\r\nX:\r\n \r\n  y\r\n");
	message_headers_free(&h);
}

static void test_unchanged_header_renders_byte_identical(void)
{
	static const char msg[] =
		"Received: from x (x [192.0.2.1])\r\n"
		"\tby y; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
		"X-Tight:no space\r\n"
		"X-Tabs:\t \tvalue with tabs \t\r\n"
		"X-Empty:\r\n"
		"X-8bit: caf\xc3\xa9\r\n"
		"\r\n"
		"body\r\n";
	struct message_headers h;

	parse(&h, S(msg));
	CHECK_UINT_EQ(h.n, 5);
	CHECK_STR_EQ(h.fields[1].value, "no space");
	CHECK_STR_EQ(h.fields[2].value, "value with tabs");
	CHECK_STR_EQ(h.fields[3].value, "");
	CHECK_STR_EQ(h.fields[4].value, "caf\xc3\xa9");
	CHECK_UINT_EQ(h.header_end, sizeof(msg) - 1 - 8);
	CHECK_UINT_EQ(h.body_start, sizeof(msg) - 1 - 6);
	CHECK_RENDERS(&h,
		      "Received: from x (x [192.0.2.1])\r\n"
		      "\tby y; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
		      "X-Tight:no space\r\n"
		      "X-Tabs:\t \tvalue with tabs \t\r\n"
		      "X-Empty:\r\n"
		      "X-8bit: caf\xc3\xa9\r\n");
	message_headers_free(&h);
}

static void test_unchanged_fields_stay_raw_next_to_a_change(void)
{
	struct message_headers h;

	parse(&h, S("A: one\r\n two\r\nB:  b\r\nC:\tc\n\r\n"));
	CHECK_INT_EQ(message_header_change(&h, 1, "new b"), 0);
	CHECK_NULL(h.fields[1].raw);
	CHECK_RENDERS(&h, "A: one\r\n two\r\nB: new b\r\nC:\tc\n");
	message_headers_free(&h);
}

static void test_no_blank_line_means_no_body(void)
{
	struct message_headers h;

	parse(&h, S("A: 1\r\nB: 2\r\n"));
	CHECK_UINT_EQ(h.n, 2);
	CHECK_UINT_EQ(h.header_end, 12);
	CHECK_UINT_EQ(h.body_start, 12);
	message_headers_free(&h);
}

static void test_line_without_colon_ends_header_and_is_body(void)
{
	struct message_headers h;

	parse(&h, S("A: 1\r\nthis is body text\r\nB: 2\r\n\r\nmore\r\n"));
	CHECK_UINT_EQ(h.n, 1);
	CHECK_STR_EQ(h.fields[0].name, "A");
	CHECK_UINT_EQ(h.header_end, 6);
	CHECK_UINT_EQ(h.body_start, 6);
	CHECK_RENDERS(&h, "A: 1\r\n");
	message_headers_free(&h);
}

static void test_space_before_colon_ends_header_and_is_body(void)
{
	struct message_headers h;

	parse(&h, S("A: 1\r\nB : 2\r\nC: 3\r\n\r\n"));
	CHECK_UINT_EQ(h.n, 1);
	CHECK_UINT_EQ(h.header_end, 6);
	CHECK_UINT_EQ(h.body_start, 6);
	message_headers_free(&h);
}

static void test_empty_name_ends_header_and_is_body(void)
{
	struct message_headers h;

	parse(&h, S("A: 1\r\n: 2\r\n\r\n"));
	CHECK_UINT_EQ(h.n, 1);
	CHECK_UINT_EQ(h.header_end, 6);
	CHECK_UINT_EQ(h.body_start, 6);
	message_headers_free(&h);
}

static void test_leading_continuation_line_is_body(void)
{
	struct message_headers h;

	parse(&h, S(" folded: nothing\r\nA: 1\r\n\r\n"));
	CHECK_UINT_EQ(h.n, 0);
	CHECK_UINT_EQ(h.header_end, 0);
	CHECK_UINT_EQ(h.body_start, 0);
	message_headers_free(&h);
}

static void test_lf_only_line_ends(void)
{
	struct message_headers h;

	parse(&h, S("A: 1\nB: 2\n  more\n\nbody\n"));
	CHECK_UINT_EQ(h.n, 2);
	CHECK_STR_EQ(h.fields[0].value, "1");
	CHECK_BYTES(h.fields[0].raw, h.fields[0].raw_len, "A: 1\n");
	CHECK_STR_EQ(h.fields[1].value, "2  more");
	CHECK_BYTES(h.fields[1].raw, h.fields[1].raw_len, "B: 2\n  more\n");
	CHECK_UINT_EQ(h.header_end, 17);
	CHECK_UINT_EQ(h.body_start, 18);
	CHECK_RENDERS(&h, "A: 1\nB: 2\n  more\n");
	message_headers_free(&h);
}

static void test_empty_message_has_no_fields(void)
{
	struct message_headers h;

	parse(&h, "", 0);
	CHECK_UINT_EQ(h.n, 0);
	CHECK_UINT_EQ(h.header_end, 0);
	CHECK_UINT_EQ(h.body_start, 0);
	CHECK_RENDERS(&h, "");
	message_headers_free(&h);
}

static void test_message_starting_with_blank_line_is_all_body(void)
{
	struct message_headers h;

	parse(&h, S("\r\nSubject: in the body\r\n"));
	CHECK_UINT_EQ(h.n, 0);
	CHECK_UINT_EQ(h.header_end, 0);
	CHECK_UINT_EQ(h.body_start, 2);
	message_headers_free(&h);
}

static void test_line_starting_with_cr_is_body_not_blank_line(void)
{
	struct message_headers h;

	/*
	 * Only CRLF (or a bare LF) is the empty line. A line that merely
	 * starts with CR is body text: were it taken for the blank line,
	 * filters reading from body_start would never see it, though the
	 * backend gets it.
	 */
	parse(&h, S("A: 1\r\n\rhidden\r\n\r\nbody\r\n"));
	CHECK_UINT_EQ(h.n, 1);
	CHECK_UINT_EQ(h.header_end, 6);
	CHECK_UINT_EQ(h.body_start, 6);
	message_headers_free(&h);
}

static void test_last_line_without_line_end_is_body(void)
{
	struct message_headers h;

	parse(&h, S("A: 1\r\nB: 2"));
	CHECK_UINT_EQ(h.n, 1);
	CHECK_UINT_EQ(h.header_end, 6);
	CHECK_UINT_EQ(h.body_start, 6);
	message_headers_free(&h);
}

static void test_field_whose_continuation_has_no_line_end_is_body(void)
{
	struct message_headers h;

	/* B is not complete: taking it would glue what follows onto it. */
	parse(&h, S("A: 1\r\nB: 2\r\n more"));
	CHECK_UINT_EQ(h.n, 1);
	CHECK_STR_EQ(h.fields[0].name, "A");
	CHECK_UINT_EQ(h.header_end, 6);
	CHECK_UINT_EQ(h.body_start, 6);
	CHECK_INT_EQ(message_header_add(&h, "X", "y", false), 0);
	CHECK_RENDERS(&h, "A: 1\r\nX: y\r\n");
	message_headers_free(&h);
}

static void test_nul_in_value_does_not_hide_the_rest_from_filters(void)
{
	struct message_headers h;

	/*
	 * DATA may carry NUL bytes. The value is a C string: were it cut at
	 * the NUL, filters would see "free" while the backend gets the
	 * whole field. NULs are dropped from the value, like the CRLFs.
	 */
	parse(&h, S("Subject: free\0 money \0\r\n \0folded\r\n\r\n"));
	CHECK_UINT_EQ(h.n, 1);
	CHECK_STR_EQ(h.fields[0].value, "free money  folded");
	CHECK_UINT_EQ(h.fields[0].raw_len, 34);
	CHECK_UINT_EQ(h.header_end, 34);
	CHECK_UINT_EQ(h.body_start, 36);
	CHECK_RENDERS(&h, "Subject: free\0 money \0\r\n \0folded\r\n");
	message_headers_free(&h);
}

/* ---- finding fields ---- */

static void test_find_is_case_insensitive_and_counts_nth(void)
{
	struct message_headers h;

	parse(&h, S("Received: 1\r\nSubject: s\r\nRECEIVED: 2\r\nreceived: 3\r\n\r\n"));
	CHECK_INT_EQ(message_header_find(&h, "received", 0), 0);
	CHECK_INT_EQ(message_header_find(&h, "Received", 1), 2);
	CHECK_INT_EQ(message_header_find(&h, "rEcEiVeD", 2), 3);
	CHECK_INT_EQ(message_header_find(&h, "Received", 3), -1);
	CHECK_INT_EQ(message_header_find(&h, "SUBJECT", 0), 1);
	CHECK_INT_EQ(message_header_find(&h, "Subject", 1), -1);
	CHECK_INT_EQ(message_header_find(&h, "Subj", 0), -1);
	CHECK_INT_EQ(message_header_find(&h, "X-Missing", 0), -1);
	message_headers_free(&h);
}

/* ---- changes ---- */

static void test_add_appends_at_end(void)
{
	struct message_headers h;

	parse(&h, S("A: 1\r\n\r\nbody"));
	CHECK_INT_EQ(message_header_add(&h, "X-Spam", "no", false), 0);
	CHECK(h.changed);
	CHECK_UINT_EQ(h.n, 2);
	CHECK_STR_EQ(h.fields[1].name, "X-Spam");
	CHECK_STR_EQ(h.fields[1].value, "no");
	CHECK_RENDERS(&h, "A: 1\r\nX-Spam: no\r\n");
	/* The splice point in the spool does not move. */
	CHECK_UINT_EQ(h.header_end, 6);
	CHECK_UINT_EQ(h.body_start, 8);
	message_headers_free(&h);
}

static void test_insert_puts_field_at_top(void)
{
	struct message_headers h;

	parse(&h, S("A: 1\r\nB: 2\r\n\r\n"));
	CHECK_INT_EQ(message_header_add(&h, "Received", "by portcullis", true), 0);
	CHECK_INT_EQ(message_header_add(&h, "Top", "", true), 0);
	CHECK_UINT_EQ(h.n, 4);
	CHECK_RENDERS(&h, "Top: \r\nReceived: by portcullis\r\nA: 1\r\nB: 2\r\n");
	CHECK_INT_EQ(message_header_find(&h, "a", 0), 2);
	message_headers_free(&h);
}

static void test_add_to_empty_header(void)
{
	struct message_headers h;

	parse(&h, "", 0);
	CHECK_INT_EQ(message_header_add(&h, "A", "1", false), 0);
	CHECK_INT_EQ(message_header_add(&h, "B", "2", true), 0);
	CHECK_RENDERS(&h, "B: 2\r\nA: 1\r\n");
	message_headers_free(&h);
}

static void test_many_adds_grow_the_list(void)
{
	struct message_headers h;
	char name[32];

	parse(&h, S("A: 1\r\n\r\n"));
	for (int i = 0; i < 100; i++) {
		snprintf(name, sizeof(name), "X-%d", i);
		CHECK_INT_EQ(message_header_add(&h, name, name, i % 2 == 0), 0);
	}
	CHECK_UINT_EQ(h.n, 101);
	CHECK_STR_EQ(h.fields[0].name, "X-98");
	CHECK_STR_EQ(h.fields[50].name, "A");
	CHECK_STR_EQ(h.fields[100].name, "X-99");
	CHECK_INT_EQ(message_header_find(&h, "x-51", 0), 76);
	message_headers_free(&h);
}

static void test_change_renders_name_colon_space_value_crlf(void)
{
	struct message_headers h;

	parse(&h, S("Subject:  old\r\n folded\r\nTo: b\r\n\r\n"));
	CHECK_INT_EQ(message_header_change(&h, 0, "[SPAM] old folded"), 0);
	CHECK(h.changed);
	CHECK_STR_EQ(h.fields[0].name, "Subject");
	CHECK_STR_EQ(h.fields[0].value, "[SPAM] old folded");
	CHECK_NULL(h.fields[0].raw);
	CHECK_UINT_EQ(h.fields[0].raw_len, 0);
	CHECK_RENDERS(&h, "Subject: [SPAM] old folded\r\nTo: b\r\n");
	message_headers_free(&h);
}

static void test_change_keeps_name_as_written(void)
{
	struct message_headers h;

	parse(&h, S("sUbJeCt: x\r\n\r\n"));
	long i = message_header_find(&h, "Subject", 0);
	CHECK_INT_EQ(i, 0);
	CHECK_INT_EQ(message_header_change(&h, (size_t)i, "y"), 0);
	CHECK_RENDERS(&h, "sUbJeCt: y\r\n");
	message_headers_free(&h);
}

static void test_remove_drops_the_field(void)
{
	struct message_headers h;

	parse(&h, S("A: 1\r\nB: 2\r\n folded\r\nC: 3\r\n\r\nbody"));
	CHECK_INT_EQ(message_header_change(&h, 1, NULL), 0);
	CHECK(h.changed);
	CHECK_UINT_EQ(h.n, 2);
	CHECK_STR_EQ(h.fields[1].name, "C");
	CHECK_INT_EQ(message_header_find(&h, "B", 0), -1);
	CHECK_RENDERS(&h, "A: 1\r\nC: 3\r\n");
	CHECK_INT_EQ(message_header_change(&h, 1, NULL), 0);
	CHECK_INT_EQ(message_header_change(&h, 0, NULL), 0);
	CHECK_UINT_EQ(h.n, 0);
	CHECK_RENDERS(&h, "");
	CHECK_UINT_EQ(h.header_end, 27);
	message_headers_free(&h);
}

static void test_change_of_missing_field_fails(void)
{
	struct message_headers h;

	parse(&h, S("A: 1\r\n\r\n"));
	CHECK_INT_EQ(message_header_change(&h, 1, "x"), -1);
	CHECK_INT_EQ(message_header_change(&h, 1, NULL), -1);
	CHECK_INT_EQ(message_header_change(&h, (size_t)-1, "x"), -1);
	CHECK(!h.changed);
	CHECK_UINT_EQ(h.n, 1);
	CHECK_RENDERS(&h, "A: 1\r\n");
	message_headers_free(&h);

	parse(&h, "", 0);
	CHECK_INT_EQ(message_header_change(&h, 0, NULL), -1);
	CHECK_INT_EQ(message_header_change(&h, 0, "x"), -1);
	message_headers_free(&h);
}

static void test_invalid_names_are_refused(void)
{
	struct message_headers h;

	CHECK(message_header_name_valid("X-Ok"));
	CHECK(message_header_name_valid("!#$%&'*+-.^_`|~09azAZ"));
	CHECK(!message_header_name_valid(NULL));
	CHECK(!message_header_name_valid(""));
	CHECK(!message_header_name_valid("X:Y"));
	CHECK(!message_header_name_valid("X-Y:"));
	CHECK(!message_header_name_valid("X Y"));
	CHECK(!message_header_name_valid("X\tY"));
	CHECK(!message_header_name_valid("X-Caf\xc3\xa9"));
	CHECK(!message_header_name_valid("X\x7f"));
	CHECK(!message_header_name_valid("X\r\n"));

	parse(&h, S("A: 1\r\n\r\n"));
	CHECK_INT_EQ(message_header_add(&h, "", "v", false), -1);
	CHECK_INT_EQ(message_header_add(&h, "X:Y", "v", false), -1);
	CHECK_INT_EQ(message_header_add(&h, "X Y", "v", true), -1);
	CHECK_INT_EQ(message_header_add(&h, "X\x80", "v", false), -1);
	CHECK_INT_EQ(message_header_add(&h, NULL, "v", false), -1);
	CHECK_INT_EQ(message_header_add(&h, "X", NULL, false), -1);
	CHECK(!h.changed);
	CHECK_UINT_EQ(h.n, 1);
	CHECK_RENDERS(&h, "A: 1\r\n");
	message_headers_free(&h);
}

static void test_values_with_line_ends_are_refused(void)
{
	struct message_headers h;

	/* A CR or LF in a value would let a filter inject fields or a body. */
	parse(&h, S("A: 1\r\n\r\n"));
	CHECK_INT_EQ(message_header_add(&h, "X", "a\r\nBcc: evil", false), -1);
	CHECK_INT_EQ(message_header_add(&h, "X", "a\nb", true), -1);
	CHECK_INT_EQ(message_header_add(&h, "X", "a\rb", false), -1);
	CHECK_INT_EQ(message_header_change(&h, 0, "1\r\n\r\nbody"), -1);
	CHECK_INT_EQ(message_header_change(&h, 0, "\n"), -1);
	CHECK_INT_EQ(message_header_change(&h, 0, "x\r"), -1);
	CHECK(!h.changed);
	CHECK_UINT_EQ(h.n, 1);
	CHECK_STR_EQ(h.fields[0].value, "1");
	CHECK_NOT_NULL(h.fields[0].raw);
	CHECK_RENDERS(&h, "A: 1\r\n");
	message_headers_free(&h);
}

/* ---- reading from a spool ---- */

static void test_read_from_spool_gives_same_as_parse(void)
{
	static const char msg[] =
		"Received: from x\r\n\tby y\r\n"
		"From: a@example.org\r\n"
		"Subject: test\r\n"
		"\r\n"
		"Body: not a field\r\n";
	struct message_headers a, b;
	struct spool *spool = spool_of(S(msg));

	parse(&a, S(msg));
	CHECK_INT_EQ(message_headers_read(&b, spool, MESSAGE_HEADER_MAX), 0);
	CHECK_UINT_EQ(b.n, 3);
	CHECK_UINT_EQ(b.header_end, 61);
	CHECK_UINT_EQ(b.body_start, 63);
	check_same_headers(&a, &b);
	message_headers_free(&a);
	message_headers_free(&b);
	spool_free(spool);
}

static void test_read_from_spool_on_disk_gives_same_as_parse(void)
{
	size_t len;
	char *msg = big_header(200, S("\r\nbody\r\n"), &len);
	struct message_headers a, b;
	struct spool *spool = spool_of(msg, len);

	CHECK(spool_on_disk(spool));
	parse(&a, msg, len);
	CHECK_INT_EQ(message_headers_read(&b, spool, MESSAGE_HEADER_MAX), 0);
	CHECK_UINT_EQ(b.n, 200);
	CHECK_UINT_EQ(b.header_end, 20000);
	CHECK_UINT_EQ(b.body_start, 20002);
	CHECK_STR_EQ(b.fields[199].name, "X-Fill-0000199");
	check_same_headers(&a, &b);
	message_headers_free(&a);
	message_headers_free(&b);
	spool_free(spool);
	free(msg);
}

static void test_read_from_empty_spool(void)
{
	struct message_headers h;
	struct spool *spool = spool_of("", 0);

	CHECK_INT_EQ(message_headers_read(&h, spool, MESSAGE_HEADER_MAX), 0);
	CHECK_UINT_EQ(h.n, 0);
	CHECK_UINT_EQ(h.header_end, 0);
	CHECK_UINT_EQ(h.body_start, 0);
	message_headers_free(&h);
	spool_free(spool);
}

static void test_header_over_limit_stops_parsing_rest_is_body(void)
{
	/*
	 * 10486 lines of 100 bytes: the 10486th crosses the limit at
	 * 1048576, so the 10485 before it are the header and the rest,
	 * from 1048500, is body.
	 */
	size_t len;
	char *msg = big_header(10486, S("Subject: late\r\n\r\nbody\r\n"), &len);
	struct message_headers h;
	struct spool *spool = spool_of(msg, len);

	CHECK_UINT_EQ(MESSAGE_HEADER_MAX, 1048576);
	CHECK_INT_EQ(message_headers_read(&h, spool, MESSAGE_HEADER_MAX), 0);
	CHECK_UINT_EQ(h.n, 10485);
	CHECK_UINT_EQ(h.header_end, 1048500);
	CHECK_UINT_EQ(h.body_start, 1048500);
	CHECK_STR_EQ(h.fields[10484].name, "X-Fill-0010484");
	CHECK_INT_EQ(message_header_find(&h, "Subject", 0), -1);
	size_t rlen;
	char *r = message_headers_render(&h, &rlen);
	CHECK_NOT_NULL(r);
	CHECK_UINT_EQ(rlen, 1048500);
	CHECK(r && memcmp(r, msg, rlen) == 0);
	free(r);
	message_headers_free(&h);
	spool_free(spool);
	free(msg);
}

static void test_header_ending_exactly_at_limit_is_whole(void)
{
	/* 1048576 bytes of fields then the blank line: all of it is header. */
	size_t len;
	char tail[128];
	size_t n = last_line(tail, 76, "\r\nbody\r\n");
	char *msg = big_header(10485, tail, n, &len);
	struct message_headers h;
	struct spool *spool = spool_of(msg, len);

	CHECK_UINT_EQ(len, 1048576 + 8);
	CHECK_INT_EQ(message_headers_read(&h, spool, MESSAGE_HEADER_MAX), 0);
	CHECK_UINT_EQ(h.n, 10486);
	CHECK_STR_EQ(h.fields[10485].name, "X-Last");
	CHECK_UINT_EQ(h.header_end, 1048576);
	CHECK_UINT_EQ(h.body_start, 1048578);
	message_headers_free(&h);
	spool_free(spool);
	free(msg);
}

static void test_field_ending_just_past_limit_is_body(void)
{
	/* Its line end is one byte past the limit: the field is body. */
	size_t len;
	char tail[128];
	size_t n = last_line(tail, 77, "\r\nbody\r\n");
	char *msg = big_header(10485, tail, n, &len);
	struct message_headers h;
	struct spool *spool = spool_of(msg, len);

	CHECK_INT_EQ(message_headers_read(&h, spool, MESSAGE_HEADER_MAX), 0);
	CHECK_UINT_EQ(h.n, 10485);
	CHECK_INT_EQ(message_header_find(&h, "X-Last", 0), -1);
	CHECK_UINT_EQ(h.header_end, 1048500);
	CHECK_UINT_EQ(h.body_start, 1048500);
	CHECK_STR_EQ(h.fields[10484].name, "X-Fill-0010484");
	message_headers_free(&h);
	spool_free(spool);
	free(msg);
}

static void test_folded_field_across_limit_is_body(void)
{
	/*
	 * A field whose continuation crosses the limit is not a field: cut
	 * there, its value would be short, and a change to it would leave
	 * the rest of its line in the message after the new field.
	 */
	size_t len;
	char tail[300];
	memcpy(tail, "X-Folded: a\r\n ", 14);
	memset(tail + 14, 'b', 200);
	memcpy(tail + 214, "\r\n\r\nbody\r\n", 10);
	char *msg = big_header(10485, tail, 224, &len);
	struct message_headers h;
	struct spool *spool = spool_of(msg, len);

	CHECK_INT_EQ(message_headers_read(&h, spool, MESSAGE_HEADER_MAX), 0);
	CHECK_UINT_EQ(h.n, 10485);
	CHECK_INT_EQ(message_header_find(&h, "X-Folded", 0), -1);
	CHECK_UINT_EQ(h.header_end, 1048500);
	CHECK_UINT_EQ(h.body_start, 1048500);
	message_headers_free(&h);
	spool_free(spool);
	free(msg);
}

static void test_continuation_just_past_limit_is_not_cut_off(void)
{
	/*
	 * The last field ends exactly at the limit and its continuation
	 * starts just after: the field runs on past the limit, so it is
	 * body too, not a field with its value cut short.
	 */
	size_t len;
	char tail[128];
	size_t n = last_line(tail, 76, " continued\r\n\r\nbody\r\n");
	char *msg = big_header(10485, tail, n, &len);
	struct message_headers h;
	struct spool *spool = spool_of(msg, len);

	CHECK_INT_EQ(message_headers_read(&h, spool, MESSAGE_HEADER_MAX), 0);
	CHECK_UINT_EQ(h.n, 10485);
	CHECK_INT_EQ(message_header_find(&h, "X-Last", 0), -1);
	CHECK_UINT_EQ(h.header_end, 1048500);
	CHECK_UINT_EQ(h.body_start, 1048500);
	message_headers_free(&h);
	spool_free(spool);
	free(msg);
}

int main(void)
{
	RUN(test_simple_header_and_body_are_split_at_blank_line);
	RUN(test_folded_field_value_is_unfolded);
	RUN(test_value_starting_on_continuation_line_has_no_leading_space);
	RUN(test_unchanged_header_renders_byte_identical);
	RUN(test_unchanged_fields_stay_raw_next_to_a_change);
	RUN(test_no_blank_line_means_no_body);
	RUN(test_line_without_colon_ends_header_and_is_body);
	RUN(test_space_before_colon_ends_header_and_is_body);
	RUN(test_empty_name_ends_header_and_is_body);
	RUN(test_leading_continuation_line_is_body);
	RUN(test_lf_only_line_ends);
	RUN(test_empty_message_has_no_fields);
	RUN(test_message_starting_with_blank_line_is_all_body);
	RUN(test_line_starting_with_cr_is_body_not_blank_line);
	RUN(test_last_line_without_line_end_is_body);
	RUN(test_field_whose_continuation_has_no_line_end_is_body);
	RUN(test_nul_in_value_does_not_hide_the_rest_from_filters);
	RUN(test_find_is_case_insensitive_and_counts_nth);
	RUN(test_add_appends_at_end);
	RUN(test_insert_puts_field_at_top);
	RUN(test_add_to_empty_header);
	RUN(test_many_adds_grow_the_list);
	RUN(test_change_renders_name_colon_space_value_crlf);
	RUN(test_change_keeps_name_as_written);
	RUN(test_remove_drops_the_field);
	RUN(test_change_of_missing_field_fails);
	RUN(test_invalid_names_are_refused);
	RUN(test_values_with_line_ends_are_refused);
	RUN(test_read_from_spool_gives_same_as_parse);
	RUN(test_read_from_spool_on_disk_gives_same_as_parse);
	RUN(test_read_from_empty_spool);
	RUN(test_header_over_limit_stops_parsing_rest_is_body);
	RUN(test_header_ending_exactly_at_limit_is_whole);
	RUN(test_field_ending_just_past_limit_is_body);
	RUN(test_folded_field_across_limit_is_body);
	RUN(test_continuation_just_past_limit_is_not_cut_off);
	return unit_summary();
}
