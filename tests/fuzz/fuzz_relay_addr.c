/*
 * fuzz_relay_addr.c - libFuzzer target for the relay guard's address
 * parser and the filters' shared readers of domains, networks and lists
 *
 * The recipient of RCPT TO is the client's text; the relay guard
 * (filters/relay/relay_addr.c) judges it with the domain normaliser and
 * address parser of filters/common, which SPF and DKIM share. For each
 * input:
 *  - relay_classify() never crashes, over-reads, leaks or recurses
 *    without bound, always names a reason, and what it finds local
 *    without the percent hack is local with it too (allowing the hack
 *    only ever lets more through to local mailboxes);
 *  - pc_domain_normalize() gives, when it accepts, at most 255 bytes of
 *    lower-case letters, digits, '-', '_' and '.', a form that
 *    normalises to itself, and whose U-label spelling (libidn2's
 *    idn2_to_unicode_8z8z) normalises back to it: two spellings of one
 *    domain are one domain; relay_domain_normalize() is the same form
 *    or refuses it for an underscore;
 *  - a local_domains list the relay accepts matches each of its exact
 *    entries;
 *  - pc_netlist_parse() and pc_ip_parse() never crash or leak, and a
 *    parsed network contains its own network address;
 *  - pc_list_count() counts what pc_list_next() gives.
 * Build and run it with tests/fuzz/run-fuzz.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <idn2.h>

#include "pc_domain.h"
#include "pc_list.h"
#include "pc_netlist.h"
#include "relay_addr.h"
#include "fuzz.h"


/* The site the recipients are judged against. */
#define SITE "local.org, xn--bcher-kva.example, münchen.example, " \
	     ".hosted.test, [192.0.2.1], [IPv6:2001:db8::25]"

static struct relay_domains site;

/* site_domains - the site, built once */
static const struct relay_domains *site_domains(void)
{
	char err[256];

	if (!site.finished) {
		relay_domains_init(&site);
		must(relay_domains_add_list(&site, SITE, err, sizeof(err)) == 0);
		relay_domains_finish(&site);
	}
	return &site;
}

/* check_domain - the properties of the normal form of in[0..len) */
static void check_domain(const char *in, size_t len)
{
	char out[PC_DOMAIN_BUF], again[PC_DOMAIN_BUF], mail[PC_DOMAIN_BUF];
	char *u = NULL;
	int n = pc_domain_normalize(in, len, out, sizeof(out));
	int m = relay_domain_normalize(in, len, mail, sizeof(mail));

	if (n < 0) {
		must(m < 0);
		return;
	}
	must((size_t)n == strlen(out) && n <= PC_DOMAIN_MAX);
	for (int i = 0; i < n; i++)
		must((out[i] >= 'a' && out[i] <= 'z') ||
		     (out[i] >= '0' && out[i] <= '9') || out[i] == '-' ||
		     out[i] == '_' || out[i] == '.');
	must(pc_domain_normalize(out, (size_t)n, again, sizeof(again)) == n);
	must(strcmp(again, out) == 0);
	if (memchr(out, '_', (size_t)n) == NULL)
		must(m == n && strcmp(mail, out) == 0);
	else
		must(m < 0);
	if (idn2_to_unicode_8z8z(out, &u, 0) == IDN2_OK && u != NULL) {
		must(pc_domain_normalize(u, strlen(u), again, sizeof(again)) ==
		     n);
		must(strcmp(again, out) == 0);
	}
	free(u);
}

/* check_recipient - relay_classify() of str, both percent settings */
static void check_recipient(const char *str)
{
	struct relay_policy strict = {site_domains(), false};
	struct relay_policy lax = {site_domains(), true};
	const char *why1 = NULL, *why2 = NULL;
	enum relay_class c1 = relay_classify(&strict, str, &why1);
	enum relay_class c2 = relay_classify(&lax, str, &why2);

	must(why1 != NULL && *why1 != '\0' && why2 != NULL && *why2 != '\0');
	must(c1 == RELAY_LOCAL || c1 == RELAY_REMOTE || c1 == RELAY_INVALID);
	must(c2 == RELAY_LOCAL || c2 == RELAY_REMOTE || c2 == RELAY_INVALID);
	if (c1 == RELAY_LOCAL)
		must(c2 == RELAY_LOCAL);
}

/* check_lists - the list readers over str */
static void check_lists(const char *str)
{
	struct relay_domains d;
	struct pc_netlist nl;
	const char *p = str, *item;
	char err[512], norm[PC_DOMAIN_BUF];
	size_t len, count = 0;

	while (pc_list_next(&p, &item, &len)) {
		must(len > 0 && item + len <= str + strlen(str));
		count++;
	}
	must(count == pc_list_count(str));

	if (pc_netlist_parse(str, &nl, err, sizeof(err)) == 0) {
		for (size_t i = 0; i < nl.count; i++)
			must(pc_cidr_match(&nl.nets[i], &nl.nets[i].net));
		pc_netlist_free(&nl);
	} else {
		must(nl.count == 0 && nl.nets == NULL && err[0] != '\0');
	}

	relay_domains_init(&d);
	if (relay_domains_add_list(&d, str, err, sizeof(err)) == 0) {
		relay_domains_finish(&d);
		p = str;
		while (pc_list_next(&p, &item, &len))
			if (item[0] != '.' && item[0] != '*' &&
			    item[0] != '[' &&
			    relay_domain_normalize(item, len, norm,
						   sizeof(norm)) >= 0)
				must(relay_domains_match(&d, norm));
	}
	relay_domains_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pc_ip ip;
	char *str;

	if (size > 4096)
		return 0;
	/* an exact-size copy, NUL included: ASan sees a read past it */
	str = malloc(size + 1);
	must(str != NULL);
	memcpy(str, data, size);
	str[size] = '\0';

	check_domain(str, size);
	check_recipient(str);
	check_lists(str);
	(void)pc_ip_parse(str, size, false, &ip);
	(void)pc_ip_parse(str, size, true, &ip);
	(void)relay_literal_parse(str, size, true, &ip);
	free(str);
	return 0;
}
