/*
 * relay_addr.h - recipient, domain and network logic of the relay filter
 *
 * The pure half of the open-relay guard: no sockets, no files, no pc_*
 * calls, no globals, so every trick an attacker may try is pinned by a
 * unit test (tests/unit/test_relay_addr.c).
 *
 * Networks. relay_netlist_parse() reads a list of CIDR blocks ("10.0.0.0/8,
 * ::1/128, [2001:db8::]/32", a bare address is a host) and
 * relay_netlist_match() tells whether a numeric client address is inside
 * one. An IPv4-mapped IPv6 client (::ffff:192.0.2.1) is an IPv4 client,
 * so IPv4 networks match it.
 *
 * Domains. relay_domain_normalize() turns a domain as written in an
 * address or in the configuration into the one form that is compared:
 * ASCII lower case, no trailing dot, every label with non-ASCII characters
 * in its IDNA A-label form ("xn--" + RFC 3492 Punycode), so bücher.example
 * and xn--bcher-kva.example are the same domain. struct relay_domains is
 * the set of local domains: exact names, ".parent" entries that match
 * every sub-domain, and address literals ("[192.0.2.1]").
 *
 * Recipients. relay_classify() decides whether a recipient, as received
 * between the angle brackets of RCPT TO, is delivered to a local domain
 * (RELAY_LOCAL), leaves this site (RELAY_REMOTE), or is not an address at
 * all (RELAY_INVALID). Everything a backend might route elsewhere counts
 * as REMOTE: a source route, several '@', '!' (UUCP bang path), '%' (the
 * percent hack, unless allowed) and a quoted local part holding one of
 * them. With the percent hack allowed, user%host@local is judged as
 * user@host, the way Postfix and sendmail rewrite it.
 *
 * Everything here is reentrant; a built struct relay_domains or struct
 * relay_netlist is only read by the matching functions, so threads may
 * share it.
 */
#ifndef RELAY_ADDR_H
#define RELAY_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The daemon exports its own symbols to filters (--export-dynamic) and has
 * a module called relay too: were these names visible in relay.so, a
 * daemon function of the same name would be called in their place. Keep
 * them inside the shared object.
 */
#pragma GCC visibility push(hidden)

/* RFC 5321 4.5.3.1: the longest local part, domain and path. */
#define RELAY_LOCAL_PART_MAX 64
#define RELAY_DOMAIN_MAX 255
#define RELAY_PATH_MAX 256

/* A buffer that holds any normalised domain and its NUL. */
#define RELAY_DOMAIN_BUF (RELAY_DOMAIN_MAX + 1)

/* What a recipient is to this site. */
enum relay_class {
	RELAY_LOCAL,	/* delivered to a local domain */
	RELAY_REMOTE,	/* relaying, or an attempt at it */
	RELAY_INVALID,	/* not a valid address */
};

/* An IPv4 (family 4, addr[0..4)) or IPv6 (family 6) address. */
struct relay_ip {
	int family;
	unsigned char addr[16];
};

/* A network: the address with its host bits zero, and the prefix length. */
struct relay_cidr {
	struct relay_ip net;
	unsigned prefix;
};

/* A list of networks. */
struct relay_netlist {
	struct relay_cidr *nets;
	size_t count;
};

/* The local domains. Build with relay_domains_add*, then finish. */
struct relay_domains {
	char **exact;		 /* "local.org", sorted */
	size_t nexact;
	char **parents;		 /* "local.org" of an entry ".local.org", sorted */
	size_t nparents;
	struct relay_ip *literals; /* local address literals */
	size_t nliterals;
	bool finished;
};

/* What relay_classify() needs to know about this site. */
struct relay_policy {
	const struct relay_domains *domains;
	bool allow_percent_hack;
};

/* relay_class_name - "local", "remote" or "invalid" */
const char *relay_class_name(enum relay_class cls);

/*
 * relay_ip_parse - a numeric IPv4 or IPv6 address; an IPv4-mapped IPv6
 * address gives the IPv4 address. A "%zone" suffix is ignored when
 * allow_zone is true. Returns 0, or -1 when text is not an address.
 */
int relay_ip_parse(const char *text, bool allow_zone, struct relay_ip *out);

/* relay_ip_equal - whether two parsed addresses are the same */
bool relay_ip_equal(const struct relay_ip *a, const struct relay_ip *b);

/*
 * relay_cidr_parse - "192.0.2.0/24", "2001:db8::/32", "[::1]/128" or a
 * bare address (a host). The address must have no bits set past the
 * prefix: 10.1.2.3/8 is most likely a typo and is refused. Returns 0, or
 * -1 when invalid.
 */
int relay_cidr_parse(const char *text, struct relay_cidr *out);

/* relay_cidr_match - whether ip is inside net (same family only) */
bool relay_cidr_match(const struct relay_cidr *net, const struct relay_ip *ip);

/*
 * relay_netlist_parse - a comma and/or space separated list of networks.
 * Returns 0, or -1 with a message in err (errsize bytes) naming the bad
 * entry; out is then empty. An empty list is valid and matches nothing.
 */
int relay_netlist_parse(const char *list, struct relay_netlist *out,
			char *err, size_t errsize);

/*
 * relay_netlist_match - whether the numeric address addr (as the host
 * reports the client) is in one of the networks; false for anything that
 * is not an address
 */
bool relay_netlist_match(const struct relay_netlist *list, const char *addr);

/* relay_netlist_free - release the networks */
void relay_netlist_free(struct relay_netlist *list);

/*
 * relay_punycode_encode - RFC 3492 encoding of n code points into out
 * (outsize bytes, NUL-terminated), without the "xn--" prefix. Basic code
 * points are copied as they are. Returns the length written, or -1 when
 * out is too small, a code point is not Unicode, or the arithmetic would
 * overflow.
 */
int relay_punycode_encode(const uint32_t *cp, size_t n, char *out,
			  size_t outsize);

/*
 * relay_domain_normalize - the comparable form of the domain in[0..len):
 * one trailing dot dropped, ASCII letters lower-cased, U-labels turned
 * into A-labels ("xn--..."), the ideographic full stops U+3002, U+FF0E
 * and U+FF61 read as dots (as IDNA does). Labels are letters, digits and
 * hyphens (not first or last), 1 to 63 bytes, the whole at most
 * RELAY_DOMAIN_MAX bytes. Non-ASCII letters are not case-folded. Returns
 * the length written to out (outsize >= RELAY_DOMAIN_BUF is always
 * enough), or -1 when the domain is not valid.
 */
int relay_domain_normalize(const char *in, size_t len, char *out,
			   size_t outsize);

/*
 * relay_literal_parse - an address literal "[192.0.2.1]" or
 * "[IPv6:2001:db8::1]" (the tag in any case); with brackets_optional
 * true, also the bare addresses "192.0.2.1" and "2001:db8::1". Returns 0,
 * or -1 when invalid.
 */
int relay_literal_parse(const char *in, size_t len, bool brackets_optional,
			struct relay_ip *out);

/* relay_domains_init - an empty set */
void relay_domains_init(struct relay_domains *d);

/*
 * relay_domains_add - one entry: "local.org", "local.org." or a U-label
 * form; ".local.org" (or "*.local.org") for every sub-domain of
 * local.org but not local.org itself; "[192.0.2.1]" or "[IPv6:...]" for
 * an address literal. Returns 0, or -1 with a message in err when the
 * entry is invalid or memory ran out.
 */
int relay_domains_add(struct relay_domains *d, const char *entry,
		      char *err, size_t errsize);

/*
 * relay_domains_add_list - a comma and/or space separated list of
 * entries; likewise
 */
int relay_domains_add_list(struct relay_domains *d, const char *list,
			   char *err, size_t errsize);

/*
 * relay_domains_add_address - a local address: "192.0.2.1",
 * "2001:db8::1" or an address literal; likewise
 */
int relay_domains_add_address(struct relay_domains *d, const char *addr,
			      char *err, size_t errsize);

/* relay_domains_finish - sort for lookups; call once after the adds */
void relay_domains_finish(struct relay_domains *d);

/* relay_domains_count - how many entries of every kind */
size_t relay_domains_count(const struct relay_domains *d);

/*
 * relay_domains_match - whether the normalised domain is local: an exact
 * entry, or a strict sub-domain of a ".parent" entry
 */
bool relay_domains_match(const struct relay_domains *d, const char *domain);

/* relay_domains_match_ip - whether an address literal is local */
bool relay_domains_match_ip(const struct relay_domains *d,
			    const struct relay_ip *ip);

/* relay_domains_free - release the set */
void relay_domains_free(struct relay_domains *d);

/*
 * relay_classify - what the recipient rcpt (as between RCPT TO's angle
 * brackets) is to this site; *reason (if not NULL) gets a short static
 * text for the logs: "local domain", "percent hack", "source route", ...
 */
enum relay_class relay_classify(const struct relay_policy *policy,
				const char *rcpt, const char **reason);

#pragma GCC visibility pop

#endif
