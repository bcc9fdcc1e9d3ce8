/*
 * fuzz_proxyproto.c - libFuzzer target for the PROXY protocol decoder
 *
 * The header is the first thing a balancer (or anyone who reaches a
 * PROXY listener) sends, so proxy/proxyproto.c reads bytes nobody
 * vouched for. For each input, with each version mask (v1, v2, both):
 *  - proxyproto_parse() never crashes or reads past the input (it gets
 *    an exact-size copy);
 *  - it says why exactly when the header is malformed;
 *  - a done header consumed at least one byte and at most the input:
 *    v1 at most 107 bytes ending in CRLF, v2 16 to 2048 bytes; a header
 *    naming a client names source and destination of one IP family;
 *  - "more" is only said while fewer than PROXYPROTO_MAX bytes are there
 *    (whoever reads never holds more than one header);
 *  - the answer does not depend on what follows the header: the
 *    consumed bytes alone give the same result, and a prefix of the
 *    input answers "more" or what the whole input answers;
 *  - both versions taken give the answer of the version the input is.
 * Build and run it with tests/fuzz/run-fuzz.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxyproto.h"
#include "fuzz.h"


/* parse - proxyproto_parse() on an exact-size copy of n bytes */
static enum proxyproto_status parse(const uint8_t *data, size_t n, unsigned v,
				    struct proxyproto_result *r)
{
	unsigned char *copy = malloc(n ? n : 1);
	enum proxyproto_status st;

	must(copy != NULL);
	if (n)
		memcpy(copy, data, n);
	st = proxyproto_parse(copy, n, v, r);
	free(copy);
	return st;
}

/* same - two answers are the same answer */
static void same(enum proxyproto_status a, const struct proxyproto_result *ra,
		 enum proxyproto_status b, const struct proxyproto_result *rb)
{
	must(a == b);
	if (a == PROXYPROTO_DONE) {
		must(ra->consumed == rb->consumed);
		must(ra->local == rb->local);
		must(ra->srclen == rb->srclen && ra->dstlen == rb->dstlen);
		must(memcmp(&ra->src, &rb->src, ra->srclen) == 0);
		must(memcmp(&ra->dst, &rb->dst, ra->dstlen) == 0);
	}
	if (a == PROXYPROTO_MALFORMED)
		must(strcmp(ra->error, rb->error) == 0);
}

/* check - every property for one version mask */
static void check(const uint8_t *data, size_t size, unsigned v)
{
	struct proxyproto_result r, again;
	enum proxyproto_status st = parse(data, size, v, &r), st2;

	must((st == PROXYPROTO_MALFORMED) == (r.error != NULL));
	if (st == PROXYPROTO_MORE)
		must(size < PROXYPROTO_MAX);
	if (st == PROXYPROTO_DONE) {
		must(r.consumed >= 1 && r.consumed <= size);
		if (r.version == 1) {
			must(r.consumed <= PROXYPROTO_V1_MAX);
			must(data[r.consumed - 2] == '\r' && data[r.consumed - 1] == '\n');
		} else {
			must(r.version == 2);
			must(r.consumed >= PROXYPROTO_V2_FIXED && r.consumed <= PROXYPROTO_V2_MAX);
		}
		if (r.local) {
			must(r.srclen == 0 && r.dstlen == 0);
		} else {
			must(r.src.ss_family == AF_INET || r.src.ss_family == AF_INET6);
			must(r.src.ss_family == r.dst.ss_family);
			must(r.srclen == r.dstlen && r.srclen > 0);
		}
		/* The header alone decides. */
		st2 = parse(data, r.consumed, v, &again);
		same(st, &r, st2, &again);
	}
	/* A prefix answers "more" or what the whole answers. */
	for (size_t k = size / 2; k < size; k += (size - k + 1) / 2) {
		st2 = parse(data, k, v, &again);
		if (st2 != PROXYPROTO_MORE)
			same(st, &r, st2, &again);
	}
	/* Taking both versions changes nothing for the one the input is. */
	if (v != PROXYPROTO_ANY && st != PROXYPROTO_MALFORMED) {
		st2 = parse(data, size, PROXYPROTO_ANY, &again);
		same(st, &r, st2, &again);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 8192)
		return 0;
	check(data, size, PROXYPROTO_V1);
	check(data, size, PROXYPROTO_V2);
	check(data, size, PROXYPROTO_ANY);
	return 0;
}
