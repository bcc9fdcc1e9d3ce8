/*
 * fuzz_spf_syntax.c - libFuzzer target for the SPF record grammar
 *
 * A TXT record is whatever a domain's owner publishes, so
 * filters/spf/spf_syntax.c reads attacker input on every check. For each
 * input, as a record for a client of each family (unknown, 4, 6):
 *  - spf_record_check() never crashes, over-reads or leaks, and keeps to
 *    the output size it promises (four times the record and 64 bytes);
 *  - a refusal says why (a non-empty err);
 *  - an accepted record's normal form is accepted again, with the same
 *    number of DNS lookups, and normalises to itself: what libspf2 gets
 *    is a fixed point, so reading it twice cannot change its meaning
 *    (unless the /0 rewrites took it past the 256 terms the checker
 *    reads: then it is refused for that and nothing else);
 *  - spf_record_select() agrees with the "v=spf1" rule of RFC 7208 4.5.
 * Build and run it with tests/fuzz/run-fuzz.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "spf_syntax.h"
#include "fuzz.h"

/* How many terms spf_record_check() reads (its terms[] in spf_syntax.c). */
#define SPF_TERMS_READ 256

/* check_family - the properties for a client of one address family */
static void check_family(const char *rec, size_t len, int family)
{
	size_t cap = 4 * len + 64;
	char *out = malloc(cap), *again = malloc(cap), err[256];
	unsigned lookups = 0, lookups2 = 0;

	must(out != NULL && again != NULL);
	err[0] = '\0';
	if (spf_record_check(rec, family, out, cap, &lookups, err,
			     sizeof(err)) != 0) {
		must(err[0] != '\0' && strlen(err) < sizeof(err));
		goto out;
	}
	must(strlen(out) < cap);
	if (spf_record_check(out, family, again, cap, &lookups2, err,
			     sizeof(err)) != 0) {
		/*
		 * The one way out: the checker reads at most
		 * SPF_TERMS_READ terms, and a /0 is written as two /1
		 * terms, so a long record may grow past that
		 */
		size_t terms = 0;

		for (const char *p = out; *p; p++)
			terms += *p == ' ';
		must(strcmp(err, "too many terms") == 0 &&
		     terms > SPF_TERMS_READ);
		goto out;
	}
	must(lookups2 == lookups);
	must(strcmp(again, out) == 0);
out:
	free(out);
	free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *rec;
	int sel;

	if (size > 4096)
		return 0;
	/* an exact-size copy, NUL included: ASan sees a read past it */
	rec = malloc(size + 1);
	must(rec != NULL);
	memcpy(rec, data, size);
	rec[size] = '\0';

	sel = spf_record_select(rec);
	must(sel == (strncasecmp(rec, "v=spf1", 6) == 0 &&
		     (rec[6] == '\0' || rec[6] == ' ')));
	check_family(rec, strlen(rec), 0);
	check_family(rec, strlen(rec), 4);
	check_family(rec, strlen(rec), 6);
	free(rec);
	return 0;
}
