/*
 * fuzz_auth.c - libFuzzer target for what AUTH reads from strangers:
 * the SASL exchange of proxy/auth.c (base64 and PLAIN messages from any
 * client) and the line parser of proxy/dovecot_auth.c (what comes back
 * from the auth service's socket). The first byte picks the part:
 *  0: auth_base64_decode() on an exact-size copy: a decoded input is
 *     canonical (encoding the bytes gives the input back) and at most
 *     len / 4 * 3 long;
 *  1: an exchange, one line per LF: auth_start() with the first, then
 *     auth_step() with the others while it asks. A refusal carries 501,
 *     504 or nothing else; credentials to check have a user and a
 *     password, and their PLAIN message (auth_plain_message()) decodes
 *     and parses to the same three fields;
 *  2: dovecot_auth_parse() on an exact-size copy: the strings it gives
 *     lie within the line, and an id comes with OK, CONT and FAIL only.
 * Build and run it with tests/fuzz/run-fuzz.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "dovecot_auth.h"
#include "fuzz.h"

/* copy - an exact-size copy of n bytes, so reading past them is caught */
static char *copy(const uint8_t *data, size_t n)
{
	char *c = malloc(n ? n : 1);

	must(c != NULL);
	if (n)
		memcpy(c, data, n);
	return c;
}

/* fuzz_base64 - canonical decoding */
static void fuzz_base64(const uint8_t *data, size_t n)
{
	char *in = copy(data, n);
	size_t cap = n / 4 * 3 + 1;
	unsigned char *out = malloc(cap);
	long got = auth_base64_decode(in, n, out, cap);

	if (got >= 0) {
		char *enc = malloc(n + 1);
		must((size_t)got <= n / 4 * 3);
		must(auth_base64_encode(out, (size_t)got, enc, n + 1) == n);
		must(memcmp(enc, in, n) == 0);
		free(enc);
	}
	free(out);
	free(in);
}

/* check_creds - complete credentials make a PLAIN message that gives them back */
static void check_creds(const struct auth_creds *c)
{
	static char b64[4 * ((3 * AUTH_FIELD_MAX + 4) / 3) + 1];
	static unsigned char dec[3 * AUTH_FIELD_MAX + 4];
	struct auth_creds back;
	size_t n;
	long m;

	must(c->user[0] && c->pass[0]);
	n = auth_plain_message(c, b64, sizeof(b64));
	must(n > 0);
	m = auth_base64_decode(b64, n, dec, sizeof(dec));
	must(m > 0);
	must(auth_plain_parse(dec, (size_t)m, &back) == 0);
	must(strcmp(back.authzid, c->authzid) == 0);
	must(strcmp(back.user, c->user) == 0);
	must(strcmp(back.pass, c->pass) == 0);
}

/* fuzz_exchange - an exchange of LF-separated lines */
static void fuzz_exchange(const uint8_t *data, size_t n)
{
	static struct auth_exchange x;
	const unsigned offered = 1u << AUTH_MECH_PLAIN | 1u << AUTH_MECH_LOGIN;
	size_t pos = 0, steps = 0;
	enum auth_next next = AUTH_NEXT_CHALLENGE;

	while (pos <= n && next == AUTH_NEXT_CHALLENGE && steps < 8) {
		const uint8_t *nl = memchr(data + pos, '\n', n - pos);
		size_t len = nl ? (size_t)(nl - (data + pos)) : n - pos;
		char *line = copy(data + pos, len);

		next = steps == 0 ? auth_start(&x, line, len, offered)
				  : auth_step(&x, line, len);
		free(line);
		steps++;
		pos += len + 1;
		if (next == AUTH_NEXT_REFUSE)
			must(x.code == 501 || x.code == 504);
		if (next == AUTH_NEXT_CHECK)
			check_creds(&x.creds);
		if (next == AUTH_NEXT_CHALLENGE)
			must(x.challenge != NULL);
	}
	auth_exchange_clear(&x);
}

/* fuzz_dovecot - one server line */
static void fuzz_dovecot(const uint8_t *data, size_t n)
{
	char *line = copy(data, n);
	struct dovecot_reply r;

	if (dovecot_auth_parse(line, n, &r) == 0) {
		if (r.mech)
			must(r.mech >= line && r.mech + r.mech_len <= line + n);
		if (r.user)
			must(r.user >= line && r.user + r.user_len <= line + n);
		if (r.kind != DOVECOT_LINE_OK && r.kind != DOVECOT_LINE_CONT &&
		    r.kind != DOVECOT_LINE_FAIL)
			must(r.id == 0);
		must(r.id <= 999999999);
	}
	free(line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	switch (data[0] % 3) {
	case 0: fuzz_base64(data + 1, size - 1); break;
	case 1: fuzz_exchange(data + 1, size - 1); break;
	default: fuzz_dovecot(data + 1, size - 1); break;
	}
	return 0;
}
