/*
 * test_spf_syntax.c - the SPF record grammar of the spf filter
 *
 * Two tables: records RFC 7208 calls malformed (each a permerror, whatever
 * libspf2 would make of it), and valid records with the form they reach
 * libspf2 in (unknown modifiers and a redirect beside "all" dropped, CIDR
 * lengths of 0 in other words).
 */
#include <string.h>

#include "spf_syntax.h"
#include "unit.h"

static const char *const malformed[] = {
	"v=spf1 ip4:1.2.3.4 -all moo",		/* a term that is nothing */
	"v=spf1 moo.cow/far_out=man:dog/cat -all", /* "/" before "=" */
	"v=spf1 redirect:t2.example.com",	/* redirect is a modifier */
	"v=spf1 a:foo-bar -all",		/* no "." toplabel */
	"v=spf1 a:museum",
	"v=spf1 a:museum.",
	"v=spf1 a:foo.1",			/* numeric top label */
	"v=spf1 a:foo.-bar",
	"v=spf1 a:",
	"v=spf1 mx:",
	"v=spf1 exists:",
	"v=spf1 exists:mail.example.com/24",	/* no CIDR on exists */
	"v=spf1 include",
	"v=spf1 ptr/0 -all",
	"v=spf1 all.",
	"v=spf1 -all:foo",
	"v=spf1 ip4:1.2.3.4/032",		/* leading zero */
	"v=spf1 ip4:1.2.3.4/33",
	"v=spf1 ip4:01.2.3.4",
	"v=spf1 ip4:1.2.3",
	"v=spf1 ip4:1.2.3.256",
	"v=spf1 ip6:2001:db8::/129",
	"v=spf1 ip6:2001:db8:::1",
	"v=spf1 a//129",
	"v=spf1 a/33",
	"v=spf1 exp=",
	"v=spf1 redirect=",
	"v=spf1 -all exp=a.example.com exp=b.example.com",
	"v=spf1 redirect=a.example.com redirect=b.example.com",
	"v=spf1 -all exp=%{c}.example.com",	/* c, r, t: explanation only */
	"v=spf1 a:%{r}.example.com",
	"v=spf1 a:%{x}.example.com",
	"v=spf1 a:%{d0}.example.com",		/* a zero DIGIT transformer */
	"v=spf1 a:%{d.example.com",
	"v=spf1 a:100%.example.com",
	"v=spf1 a:example.com%",
	"v=spf1 a:ctrl.example.com\rptr -all",	/* only SP separates terms */
	"v=spf1\tall",
	"v=spf1 a:caf\xc3\xa9.example.com",
	"v=spf1 =foo -all",
	"v=spf10",
	"spf1 -all",
};

static void test_malformed_records_are_refused(void)
{
	char out[512], err[256];
	unsigned lookups;

	for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
		err[0] = '\0';
		if (spf_record_check(malformed[i], 4, out, sizeof(out), &lookups,
				     err, sizeof(err)) != -1) {
			unit_fail_begin(__FILE__, __LINE__);
			fprintf(stderr, "accepted: \"%s\" as \"%s\"\n",
				malformed[i], out);
		} else {
			CHECK(err[0] != '\0');
		}
	}
}

/* A valid record, the client's family, and what libspf2 is given. */
static const struct {
	const char *record;
	int family;
	const char *normalized;
} valid[] = {
	{ "v=spf1", 4, "v=spf1" },
	{ "V=SpF1   ~all  ", 4, "v=spf1 ~all" },
	{ "v=spf1 +a -mx ?ptr ~all", 4, "v=spf1 +a -mx ?ptr ~all" },
	{ "v=spf1 A:Example.COM MX:example.com. PTR:example.com -ALL", 4,
	  "v=spf1 A:Example.COM MX:example.com. PTR:example.com -ALL" },
	{ "v=spf1 a/24 mx//64 a:example.com/24//64", 4,
	  "v=spf1 a/24 mx//64 a:example.com/24//64" },
	{ "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ip6:::ffff:1.2.3.4", 6,
	  "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ip6:::ffff:1.2.3.4" },
	{ "v=spf1 include:_spf.example.com exists:%{ir}.%{l1r+-}._spf.%{d}", 4,
	  "v=spf1 include:_spf.example.com exists:%{ir}.%{l1r+-}._spf.%{d}" },
	{ "v=spf1 a:macro%%percent%_%_space%-url-space.example.com -all", 4,
	  "v=spf1 a:macro%%percent%_%_space%-url-space.example.com -all" },
	{ "v=spf1 a:%{H}.bar -all", 4, "v=spf1 a:%{H}.bar -all" },
	{ "v=spf1 a:mail.example...com -all", 4, "v=spf1 a:mail.example...com -all" },
	{ "v=spf1 a:1-2 a:x.1-2", 4, NULL }, /* "1-2" has no dot: invalid */
	{ "v=spf1 -all exp=%{l}.%{D2}.exp.example.com", 4,
	  "v=spf1 -all exp=%{l}.%{D2}.exp.example.com" },
	/* unknown modifiers are ignored; their names may have dots */
	{ "v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all", 4,
	  "v=spf1 ip4:1.2.3.4 -all" },
	{ "v=spf1 -all foo=%{c}bar", 4, "v=spf1 -all" },
	/* a redirect beside "all" is ignored, wherever it stands */
	{ "v=spf1 redirect=t5.example.com ~all", 4, "v=spf1 ~all" },
	{ "v=spf1 ip4:1.2.3.4 redirect=t2.example.com", 4,
	  "v=spf1 ip4:1.2.3.4 redirect=t2.example.com" },
	/* CIDR lengths of 0 */
	{ "v=spf1 -ip4:1.2.3.4/0", 4, "v=spf1 -ip4:0.0.0.0/1 -ip4:128.0.0.0/1" },
	{ "v=spf1 ip6:::1/0", 6, "v=spf1 ip6:::/1 ip6:8000::/1" },
	{ "v=spf1 a/0 -all", 4, "v=spf1 exists:%{d} -all" },
	{ "v=spf1 ~a:e.example.com/0//64", 4, "v=spf1 ~exists:e.example.com" },
	{ "v=spf1 a:e.example.com/0//64", 6, "v=spf1 a:e.example.com//64" },
	{ "v=spf1 a//0 -all", 4, "v=spf1 a -all" },
	{ "v=spf1 mx/24//0", 4, "v=spf1 mx/24" },
	{ "v=spf1 mx/0 -all", 6, "v=spf1 mx -all" },
	/* what cannot be said otherwise stays, for libspf2 to refuse */
	{ "v=spf1 mx/0 -all", 4, "v=spf1 mx/0 -all" },
	{ "v=spf1 a//0 -all", 6, "v=spf1 a//0 -all" },
	/* without a family, nothing depends on one */
	{ "v=spf1 a/0 -all", 0, "v=spf1 a/0 -all" },
};

static void test_valid_records_are_normalized(void)
{
	char out[512], err[256];
	unsigned lookups;

	for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
		int rc = spf_record_check(valid[i].record, valid[i].family, out,
					  sizeof(out), &lookups, err, sizeof(err));

		if (valid[i].normalized == NULL) {
			CHECK_INT_EQ(rc, -1);
			continue;
		}
		if (rc != 0) {
			unit_fail_begin(__FILE__, __LINE__);
			fprintf(stderr, "refused: \"%s\": %s\n", valid[i].record,
				err);
			continue;
		}
		CHECK_STR_EQ(out, valid[i].normalized);
	}
}

static void test_record_selection(void)
{
	CHECK(spf_record_select("v=spf1"));
	CHECK(spf_record_select("v=spf1 -all"));
	CHECK(spf_record_select("V=SPF1 -all"));
	CHECK(!spf_record_select("v=spf10"));
	CHECK(!spf_record_select("v=spf1-all"));
	CHECK(!spf_record_select(" v=spf1 -all"));
	CHECK(!spf_record_select("spf2.0/pra -all"));
	CHECK(!spf_record_select(""));
}

static void test_small_output_buffers_are_refused(void)
{
	char out[10], err[64];
	unsigned lookups;

	CHECK_INT_EQ(spf_record_check("v=spf1 ip4:192.0.2.1 -all", 4, out,
				      sizeof(out), &lookups, err, sizeof(err)), -1);
}

static void test_terms_with_dns_lookups_are_counted(void)
{
	static const struct {
		const char *record;
		unsigned lookups;
	} cases[] = {
		{ "v=spf1 ip4:192.0.2.1 ip6:::1 -all exp=e.example.com", 0 },
		{ "v=spf1 a mx ptr exists:%{i}.example.com include:x.example.com", 5 },
		{ "v=spf1 a redirect=r.example.com", 2 },
		{ "v=spf1 a redirect=r.example.com -all", 1 }, /* ignored */
		{ "v=spf1 a/0 -all", 1 },
	};
	char out[512], err[256];
	unsigned lookups;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		lookups = 99;
		CHECK_INT_EQ(spf_record_check(cases[i].record, 4, out, sizeof(out),
					      &lookups, err, sizeof(err)), 0);
		CHECK_UINT_EQ(lookups, cases[i].lookups);
	}
}

int main(void)
{
	RUN(test_malformed_records_are_refused);
	RUN(test_valid_records_are_normalized);
	RUN(test_record_selection);
	RUN(test_small_output_buffers_are_refused);
	RUN(test_terms_with_dns_lookups_are_counted);
	return unit_summary();
}
