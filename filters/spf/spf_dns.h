/*
 * spf_dns.h - the DNS layer of the spf filter: libspf2 over pc_dns_query()
 *
 * libspf2 asks its DNS questions through an SPF_dns_server_t, a table of
 * functions ("a layer"). Its own resolv layer calls res_query() with the
 * system's resolver; this one calls a query function with the signature
 * of pc_dns_query() instead, so SPF lookups go through Portcullis' [dns]
 * servers, timeout, retries and cache like every other filter's, and the
 * tests can point them at a DNS server on a loopback port.
 *
 * spf_dns_new() builds a layer around a query function. libspf2 calls
 * its lookup for one name and type and gets an SPF_dns_rr_t whose herrno
 * says what DNS said (RFC 7208 sections 4.3, 4.4 and 5):
 *
 *	NETDB_SUCCESS	records of the type (num_rr of them)
 *	HOST_NOT_FOUND	NXDOMAIN, a CNAME loop, or a name that cannot
 *			exist (an empty label, a label over 63 octets)
 *	NO_DATA		the name exists, without records of the type
 *	TRY_AGAIN	SERVFAIL, any other error rcode, no answer within
 *			the resolver's timeout and retries, a reply that
 *			cannot be parsed, or a local failure: libspf2's
 *			"temperror"
 *
 * Queries for the SPF RR type (99) are answered NO_DATA without asking
 * anyone: RFC 7208 3.1 discontinued the type and 4.4 has check_host()
 * look at TXT only, and a receiver that still reads type 99 records can
 * reach another result than the one the domain publishes in TXT.
 *
 * spf_dns_parse() is the pure half: a whole DNS reply in, an
 * SPF_dns_rr_t out, no I/O, so the unit tests feed it hand-made replies.
 * TXT (and type 99) records made of several character-strings are
 * joined without separator (RFC 7208 3.3); records are taken from the
 * answer section when their owner is the name asked or the end of a
 * CNAME chain starting at it; the TTL is the smallest of theirs.
 *
 * The layer also fetches the explanation of an exp= modifier (RFC 7208
 * 6.2) in libspf2's place: exactly one TXT record, printable ASCII,
 * expanded as a macro-string for the request given to
 * spf_dns_set_request(). libspf2 1.2 would take the first of several
 * records and stops reading a macro-string at its first space.
 *
 * It fetches and checks the records, too (RFC 7208 4.4 to 4.6): TXT only,
 * one "v=spf1" record, valid by the RFC's grammar (spf_syntax.c), and at
 * most 10 terms with DNS lookups over the record and those it includes
 * or redirects to; PTR answers are cut to 10 names; void lookups are
 * counted (spf_dns_voids_exceeded()).
 *
 * An expanded name longer than 253 octets loses labels on its left
 * (RFC 7208 7.3) before it is asked.
 *
 * spf_dns_parse() is reentrant. A layer serves one check at a time (the
 * request it expands explanations for): spf.c builds one per check.
 */
#ifndef SPF_DNS_H
#define SPF_DNS_H

#include <stddef.h>

#include <netinet/in.h>
#include <spf2/spf.h>
#include <spf2/spf_dns.h>

/* As relay_addr.h: keep these names inside the shared object. */
#pragma GCC visibility push(hidden)

/* A query function: pc_dns_query() or a test's. */
typedef int (*spf_dns_query_fn)(const char *name, int type,
				unsigned char *answer, size_t len);

/* What the query function returns when it has no reply (filter.h). */
#define SPF_DNS_QUERY_TIMEOUT (-1)
#define SPF_DNS_QUERY_ERROR (-2)
#define SPF_DNS_QUERY_WOULDBLOCK (-3) /* on the event loop, not cached */

/*
 * spf_dns_new - a libspf2 DNS layer asking query; NULL when out of
 * memory. Free it with SPF_dns_free() (or SPF_server_free() of a server
 * made by SPF_server_new_dns(), which does not free it: see spf.c).
 */
SPF_dns_server_t *spf_dns_new(spf_dns_query_fn query);

/*
 * spf_dns_set_request - the request whose explanations the layer
 * expands (NULL: none, explanations are not fetched)
 */
void spf_dns_set_request(SPF_dns_server_t *layer, SPF_request_t *request);

/*
 * spf_dns_voids_exceeded - whether the check made more than two void
 * lookups (RFC 7208 4.6.4): then its result is "permerror", whatever
 * libspf2 says (see spf_dns.c)
 */
int spf_dns_voids_exceeded(SPF_dns_server_t *layer);

/*
 * spf_dns_would_block - whether the query function said it would have
 * to wait (SPF_DNS_QUERY_WOULDBLOCK) for some question of the check,
 * which libspf2 then saw as a temporary error: its result means nothing
 * and the check must be made again where it may wait
 */
int spf_dns_would_block(SPF_dns_server_t *layer);

/*
 * spf_dns_top_record - the first record fetched for the check (its own,
 * not an included one), normalized as libspf2 got it; NULL before
 */
const char *spf_dns_top_record(SPF_dns_server_t *layer);

/*
 * spf_dns_reset_lookups - start counting DNS terms from zero again, for
 * another evaluation with the same layer
 */
void spf_dns_reset_lookups(SPF_dns_server_t *layer);

/*
 * spf_dns_parse - the SPF_dns_rr_t of the reply msg[0..len) to the
 * question (domain, type), made by layer; NULL only when out of memory
 */
SPF_dns_rr_t *spf_dns_parse(SPF_dns_server_t *layer, const char *domain,
			    ns_type type, const unsigned char *msg, size_t len);

/*
 * spf_dns_name_valid - whether domain can be asked at all: labels of 1
 * to 63 octets, at most 253 octets without the trailing dot
 */
int spf_dns_name_valid(const char *domain);

#pragma GCC visibility pop

#endif
