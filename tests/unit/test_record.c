/*
 * test_record.c - unit tests of the decision record's strings
 *
 * record_string() keeps every byte: valid UTF-8 as it is, each byte that
 * is not part of valid UTF-8 (RFC 3629: no overlong forms, surrogates or
 * code points past U+10FFFF) as the text \xNN.
 */
#include "config.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"
#include "unit.h"

#define S(lit) (lit), (sizeof(lit) - 1)

/* json_of - the JSON text of the record string of len bytes at s */
static char *json_of(const char *s, size_t len)
{
	json_t *j = record_string(s, len);
	char *text = json_dumps(j, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);

	json_decref(j);
	return text;
}

#define CHECK_JSON(in, want)                          \
	do {                                          \
		char *got_ = json_of(S(in));          \
		CHECK_STR_EQ(got_, want);             \
		free(got_);                           \
	} while (0)

static void test_valid_utf8_is_kept_as_it_is(void)
{
	CHECK_JSON("250 2.0.0 Ok", "\"250 2.0.0 Ok\"");
	CHECK_JSON("caf\xc3\xa9", "\"caf\\u00E9\"");
	CHECK_JSON("\xf0\x9f\x93\xa7", "\"\\uD83D\\uDCE7\"");
	CHECK_JSON("", "\"\"");
}

static void test_each_invalid_byte_becomes_backslash_x(void)
{
	CHECK_JSON("Q\xe9\xff" "1", "\"Q\\\\xe9\\\\xff1\"");
	CHECK_JSON("\x80", "\"\\\\x80\"");
	/* A sequence cut short: its bytes one by one, the rest kept. */
	CHECK_JSON("a\xc3", "\"a\\\\xc3\"");
	CHECK_JSON("\xe2\x82z", "\"\\\\xe2\\\\x82z\"");
}

static void test_overlong_surrogate_and_too_big_are_invalid(void)
{
	CHECK(!record_utf8_valid(S("\xc0\xaf")));
	CHECK(!record_utf8_valid(S("\xe0\x80\xaf")));
	CHECK(!record_utf8_valid(S("\xed\xa0\x80")));
	CHECK(!record_utf8_valid(S("\xf4\x90\x80\x80")));
	CHECK(!record_utf8_valid(S("\xf5\x80\x80\x80")));
	CHECK(record_utf8_valid(S("\xed\x9f\xbf")));
	CHECK(record_utf8_valid(S("\xf4\x8f\xbf\xbf")));
}

static void test_nul_byte_is_kept(void)
{
	CHECK_JSON("a\0b", "\"a\\u0000b\"");
}

int main(void)
{
	RUN(test_valid_utf8_is_kept_as_it_is);
	RUN(test_each_invalid_byte_becomes_backslash_x);
	RUN(test_overlong_surrogate_and_too_big_are_invalid);
	RUN(test_nul_byte_is_kept);
	return unit_summary();
}
