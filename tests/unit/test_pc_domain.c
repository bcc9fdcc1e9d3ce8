/*
 * test_pc_domain.c - the one form in which the filters compare domains
 *
 * Every spelling of a domain must come out as one string, and everything
 * that is no domain as -1: the relay guard, SPF and DKIM all compare
 * these strings, so a spelling that came out different would be judged
 * differently. The forms UTS #46 maps (case, NFC, fullwidth letters and
 * full stops) are pinned here, and two properties are checked over a
 * list of names: a normal form normalises to itself, and its U-label
 * spelling normalises back to it.
 */
#include <stdlib.h>
#include <string.h>

#include <idn2.h>

#include "pc_domain.h"
#include "unit.h"

/* normalize - pc_domain_normalize() of a C string, or "(invalid)" */
static const char *normalize(const char *in)
{
	static char out[PC_DOMAIN_BUF];

	if (pc_domain_normalize(in, strlen(in), out, sizeof(out)) < 0)
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
	CHECK_STR_EQ(normalize("ab-.c"), "(invalid)");
	CHECK_STR_EQ(normalize("a b.c"), "(invalid)");
	CHECK_STR_EQ(normalize("a@b.c"), "(invalid)");
	CHECK_STR_EQ(normalize("[192.0.2.1]"), "(invalid)");
	CHECK_STR_EQ(normalize("local.org\r\n"), "(invalid)");
	CHECK_INT_EQ(pc_domain_normalize("a\0b.org", 7, (char[64]){0}, 64), -1);
}

static void test_u_labels_become_a_labels(void)
{
	CHECK_STR_EQ(normalize("bücher.example"), "xn--bcher-kva.example");
	CHECK_STR_EQ(normalize("Bücher.Example"), "xn--bcher-kva.example");
	CHECK_STR_EQ(normalize("XN--BCHER-KVA.example"),
		     "xn--bcher-kva.example");
	CHECK_STR_EQ(normalize("münchen.de"), "xn--mnchen-3ya.de");
	CHECK_STR_EQ(normalize("ü.example"), "xn--tda.example");
	/* nontransitional: ß is itself, not "ss" */
	CHECK_STR_EQ(normalize("faß.de"), "xn--fa-hia.de");
	CHECK_STR_EQ(normalize("他们为什么不说中文.example"),
		     "xn--ihqwcrb4cv8a8dqg056pqjye.example");
	/* C1 controls are no letters */
	CHECK_STR_EQ(normalize("b\xc2\x85.example"), "(invalid)");
	/* a lone continuation byte, an overlong form, a surrogate */
	CHECK_STR_EQ(normalize("b\x80.example"), "(invalid)");
	CHECK_STR_EQ(normalize("b\xc0\xbc.example"), "(invalid)");
	CHECK_STR_EQ(normalize("b\xed\xa0\x80.example"), "(invalid)");
}

static void test_uts46_mapped_forms_are_one_domain(void)
{
	/* upper-case non-ASCII letters are case-folded */
	CHECK_STR_EQ(normalize("BÜCHER.EXAMPLE"), "xn--bcher-kva.example");
	CHECK_STR_EQ(normalize("MÜNCHEN.de"), "xn--mnchen-3ya.de");
	/* decomposed (NFD) input is composed */
	CHECK_STR_EQ(normalize("bu\xcc\x88" "cher.example"),
		     "xn--bcher-kva.example");
	CHECK_STR_EQ(normalize("BU\xcc\x88" "CHER.example"),
		     "xn--bcher-kva.example");
	/* fullwidth letters are their ASCII letters */
	CHECK_STR_EQ(normalize("ｌｏｃａｌ.org"), "local.org");
	CHECK_STR_EQ(normalize("ＬＯＣＡＬ.ＯＲＧ"), "local.org");
	/* the full stops IDNA reads as dots, also at the end */
	CHECK_STR_EQ(normalize("bücher。example"), "xn--bcher-kva.example");
	CHECK_STR_EQ(normalize("bücher．example"), "xn--bcher-kva.example");
	CHECK_STR_EQ(normalize("bücher｡example"), "xn--bcher-kva.example");
	CHECK_STR_EQ(normalize("local．org"), "local.org");
	CHECK_STR_EQ(normalize("bücher.example。"), "xn--bcher-kva.example");
	CHECK_STR_EQ(normalize("local.org．．"), "(invalid)");
	CHECK_STR_EQ(normalize("local。。org"), "(invalid)");
	/* what UTS #46 ignores (a soft hyphen) is not there */
	CHECK_STR_EQ(normalize("lo\xc2\xad" "cal.org"), "local.org");
}

static void test_a_labels_idna_refuses_are_no_domains(void)
{
	CHECK_STR_EQ(normalize("xn--zz.example"), "(invalid)");
	CHECK_STR_EQ(normalize("xn--garbage-zzz.example"), "(invalid)");
	CHECK_STR_EQ(normalize("xn--.example"), "(invalid)");
	CHECK_STR_EQ(normalize("xn--a.example"), "(invalid)");
	/*
	 * Punycode that decodes, but to what IDNA maps elsewhere: U+2476
	 * U+247E U+2478 (parenthesized numbers) map to "(3)(11)(5)", so the
	 * label is not the A-label of any domain (found by fuzz_relay_addr)
	 */
	CHECK_STR_EQ(normalize("xn--bsher"), "(invalid)");
	CHECK_STR_EQ(normalize("XN--BSHER.example"), "(invalid)");
	/* RFC 5890 2.3.1: only "xn--" may have hyphens third and fourth */
	CHECK_STR_EQ(normalize("ab--cd.example"), "(invalid)");
	CHECK_STR_EQ(normalize("ab--cd.bücher.example"), "(invalid)");
	CHECK_STR_EQ(normalize("ＡＢ--cd.example"), "(invalid)");
}

static void test_underscore_labels_are_kept(void)
{
	CHECK_STR_EQ(normalize("_dmarc.Example.ORG"), "_dmarc.example.org");
	CHECK_STR_EQ(normalize("_spf.bücher.example"),
		     "_spf.xn--bcher-kva.example");
	CHECK_STR_EQ(normalize("my_host.example"), "my_host.example");
	/* with a letter beyond ASCII, the label has one A-label */
	CHECK_STR_EQ(normalize("B_CÊHER.example"), "xn--b_cher-kva.example");
	CHECK_STR_EQ(normalize("xn--b_cher-kva.example"),
		     "xn--b_cher-kva.example");
}

static void test_domain_length_limits(void)
{
	char buf[1200];
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
	CHECK_INT_EQ(pc_domain_normalize(buf, strlen(buf), (char[256]){0},
					 256), 253);
	strcat(buf, "ab");
	CHECK_INT_EQ(pc_domain_normalize(buf, strlen(buf), (char[256]){0},
					 256), 255);
	strcat(buf, ".b");
	CHECK_INT_EQ(pc_domain_normalize(buf, strlen(buf), (char[300]){0},
					 300), -1);
	/* a buffer too small is refused, not overrun */
	CHECK_INT_EQ(pc_domain_normalize("local.org", 9, (char[5]){0}, 5), -1);
	CHECK_INT_EQ(pc_domain_normalize("bücher.example", 15, (char[8]){0},
					 8), -1);
	/* a label of 63 is fine, 64 is not, in either form */
	memset(buf, 'b', 64);
	strcpy(buf + 64, ".example");
	CHECK_STR_EQ(normalize(buf), "(invalid)");
	strcpy(buf + 63, ".example");
	CHECK(strcmp(normalize(buf), "(invalid)") != 0);
	CHECK_STR_EQ(normalize("他们为什么不说中文他們爲什麽不說中文"
			       "ليهمابتكلموشعربي.example"), "(invalid)");
	/* a U-label whose A-label repeats one letter stays short */
	buf[0] = '\0';
	for (i = 0; i < 30; i++)
		strcat(buf, "ü");
	strcat(buf, ".example");
	CHECK(strcmp(normalize(buf), "(invalid)") != 0);
	/* more than PC_DOMAIN_INPUT_MAX bytes is not read at all */
	memset(buf, 'a', sizeof(buf) - 1);
	buf[sizeof(buf) - 1] = '\0';
	CHECK_STR_EQ(normalize(buf), "(invalid)");
}

/* Names for the properties: valid and invalid, every path. */
static const char *const names[] = {
	"local.org", "LOCAL.ORG.", "bücher.example", "BÜCHER.example",
	"xn--bcher-kva.example", "XN--Bcher-Kva.Example", "faß.de",
	"ｌｏｃａｌ.org", "bücher。example", "_dmarc.bücher.example",
	"他们为什么不说中文.example", "ab--cd.example", "a..b", "münchen.de",
	"bu\xcc\x88" "cher.example", "xn--zz.example", "ǅ.example",
	"ΣΊΣΥΦΟΣ.gr", "ﬁ.example", "x\xe2\x80\x8dy.example", "١٢٣.example",
};

/*
 * test_normal_forms_are_fixed_points - a normal form normalises to
 * itself, and its U-label spelling normalises back to it
 */
static void test_normal_forms_are_fixed_points(void)
{
	char once[PC_DOMAIN_BUF], twice[PC_DOMAIN_BUF], back[PC_DOMAIN_BUF];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char *u = NULL;
		int n = pc_domain_normalize(names[i], strlen(names[i]), once,
					    sizeof(once));

		if (n < 0)
			continue;
		CHECK_INT_EQ(pc_domain_normalize(once, (size_t)n, twice,
						 sizeof(twice)), n);
		CHECK_STR_EQ(twice, once);
		CHECK_INT_EQ(idn2_to_unicode_8z8z(once, &u, 0), IDN2_OK);
		if (u == NULL)
			continue;
		CHECK_INT_EQ(pc_domain_normalize(u, strlen(u), back,
						 sizeof(back)), n);
		CHECK_STR_EQ(back, once);
		free(u);
	}
}

/*
 * test_ascii_path_agrees_with_libidn2 - a plain ASCII name skips libidn2;
 * what it gives must be what libidn2 would have given
 */
static void test_ascii_path_agrees_with_libidn2(void)
{
	static const char *const ascii[] = {
		"Local.ORG", "a-b.c", "a--b.c", "MiXeD.CaSe.Example.",
		"_dmarc.example", "0.example", "x.y.z",
	};
	char out[PC_DOMAIN_BUF];

	for (size_t i = 0; i < sizeof(ascii) / sizeof(ascii[0]); i++) {
		uint8_t *mapped = NULL;
		size_t len;

		CHECK(pc_domain_normalize(ascii[i], strlen(ascii[i]), out,
					  sizeof(out)) > 0);
		CHECK_INT_EQ(idn2_lookup_u8((const uint8_t *)ascii[i], &mapped,
					    IDN2_NFC_INPUT |
						    IDN2_NONTRANSITIONAL),
			     IDN2_OK);
		if (mapped == NULL)
			continue;
		len = strlen((char *)mapped);
		if (len > 0 && mapped[len - 1] == '.')
			mapped[--len] = '\0';
		CHECK_STR_EQ(out, (char *)mapped);
		idn2_free(mapped);
	}
}

int main(void)
{
	RUN(test_domains_are_lower_cased_without_trailing_dot);
	RUN(test_u_labels_become_a_labels);
	RUN(test_uts46_mapped_forms_are_one_domain);
	RUN(test_a_labels_idna_refuses_are_no_domains);
	RUN(test_underscore_labels_are_kept);
	RUN(test_domain_length_limits);
	RUN(test_normal_forms_are_fixed_points);
	RUN(test_ascii_path_agrees_with_libidn2);
	return unit_summary();
}
