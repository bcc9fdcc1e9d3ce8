/*
 * relay_addr.h - recipient, domain and network logic of the relay filter
 *
 * The pure half of the open-relay guard: no sockets, no files, no pc_*
 * calls, no globals, so every trick an attacker may try is pinned by a
 * unit test (tests/unit/test_relay_addr.c).
 *
 * Domains. relay_domain_normalize() is pc_domain_normalize() (the one
 * form every filter compares: lower case, A-labels, no trailing dot;
 * filters/common/pc_domain.h) for mail domains: those with an underscore
 * are no RFC 5321 domain and refused. struct relay_domains is the set of
 * local domains: exact names, ".parent" entries that match every
 * sub-domain, and address literals ("[192.0.2.1]").
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
 * Client addresses and trusted_networks are filters/common/pc_netlist.h.
 *
 * Everything here is reentrant; a built struct relay_domains is only read
 * by the matching functions, so threads may share it.
 */
#ifndef RELAY_ADDR_H
#define RELAY_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pc_domain.h"
#include "pc_netlist.h"

/*
 * The daemon exports its own symbols to filters (--export-dynamic) and has
 * a module called relay too: were these names visible in relay.so, a
 * daemon function of the same name would be called in their place. Keep
 * them inside the shared object.
 */
#pragma GCC visibility push(hidden)

/* RFC 5321 4.5.3.1: the longest local part and path. */
#define RELAY_LOCAL_PART_MAX 64
#define RELAY_PATH_MAX 256

/* What a recipient is to this site. */
enum relay_class {
	RELAY_LOCAL,	/* delivered to a local domain */
	RELAY_REMOTE,	/* relaying, or an attempt at it */
	RELAY_INVALID,	/* not a valid address */
};

/* The local domains. Build with relay_domains_add*, then finish. */
struct relay_domains {
	char **exact;		 /* "local.org", sorted */
	size_t nexact;
	char **parents;		 /* "local.org" of an entry ".local.org", sorted */
	size_t nparents;
	struct pc_ip *literals; /* local address literals */
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
 * relay_domain_normalize - pc_domain_normalize() of the mail domain
 * in[0..len) into out (PC_DOMAIN_BUF bytes are always enough); -1 as
 * there, and for a name with an underscore
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
			struct pc_ip *out);

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
			    const struct pc_ip *ip);

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
