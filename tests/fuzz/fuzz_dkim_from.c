/*
 * fuzz_dkim_from.c - libFuzzer target for DKIM's From: reader
 *
 * The From: field is the sender's text, and filters/dkim/dkim_from.c
 * reads it to find the author domains the require policy and the
 * signature choice compare with d=. For each input, as a From value:
 *  - pcdkim_from_domains() never crashes, over-reads or leaks;
 *  - it writes at most max domains, and every one is in normal form
 *    (pc_domain_normalize() gives it back unchanged), so a comparison
 *    with d= cannot depend on how the From spelled it;
 *  - how many mailboxes it sees does not depend on max: domains written
 *    plus those counted bad is the same for max 0, 1 and 8.
 * Build and run it with tests/fuzz/run-fuzz.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkim_from.h"
#include "pc_domain.h"
#include "fuzz.h"


#define MAXD 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char d[MAXD][PC_DOMAIN_BUF], again[PC_DOMAIN_BUF];
	size_t n, bad = 0, n1, bad1 = 0, n0, bad0 = 0;
	char *value;

	if (size > 8192)
		return 0;
	/* an exact-size copy, NUL included: ASan sees a read past it */
	value = malloc(size + 1);
	must(value != NULL);
	memcpy(value, data, size);
	value[size] = '\0';

	n = pcdkim_from_domains(value, d, MAXD, &bad);
	must(n <= MAXD);
	for (size_t i = 0; i < n; i++) {
		size_t len = strnlen(d[i], PC_DOMAIN_BUF);

		must(len > 0 && len < PC_DOMAIN_BUF);
		must(pc_domain_normalize(d[i], len, again, sizeof(again)) ==
		     (int)len);
		must(strcmp(again, d[i]) == 0);
	}
	n1 = pcdkim_from_domains(value, d, 1, &bad1);
	n0 = pcdkim_from_domains(value, d, 0, &bad0);
	must(n1 <= 1 && n0 == 0);
	must(n + bad == n1 + bad1 && n + bad == bad0);
	free(value);
	return 0;
}
