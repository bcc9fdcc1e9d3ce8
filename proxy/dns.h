/*
 * dns.h - the resolver behind pc_dns_query() (the public half is in
 * portcullis/filter.h)
 *
 * dns_init() takes the [dns] section: the servers, the timeout and
 * retries, and the cache. Call it in every process before its filters
 * are loaded (their init may already ask DNS questions); calling it again
 * (a reload) replaces the settings and empties the cache. Queries made
 * before any dns_init() use the defaults of the [dns] section, the
 * system's name servers included.
 *
 * pc_dns_query() may then be called from any thread; it blocks that
 * thread only. dns_thread_done() and dns_shutdown() exist for programs
 * that want to free everything before they exit (tests, tools).
 */
#ifndef PORTCULLIS_DNS_H
#define PORTCULLIS_DNS_H

#include "conf.h"
#include "dnscache.h"

/* dns_init - apply the [dns] section (again); 0, or -1 after logging why */
int dns_init(const struct conf *conf);

/*
 * dns_cache_only - from now on, pc_dns_query() on the calling thread
 * answers from the cache only (PC_DNS_WOULDBLOCK for the rest), or
 * asks the servers again: set around the hooks run on the event loop
 */
void dns_cache_only(bool on);

/*
 * dns_stats - the cache's counters (all zero when the cache is off);
 * returns whether there is a cache
 */
bool dns_stats(struct dnscache_stats *stats);

/* What dns_client_name() found. */
enum dns_name_status {
	DNS_NAME_CONFIRMED,   /* a PTR name whose A/AAAA records hold the address */
	DNS_NAME_UNCONFIRMED, /* PTR names, none of which leads back to the address */
	DNS_NAME_NONE,	      /* no PTR record (NXDOMAIN, NODATA, or no usable name) */
	DNS_NAME_TEMPFAIL,    /* a server failed or stayed silent: try again later */
};

/* The PTR names dns_client_name() tries to confirm, at most. */
#define DNS_NAME_MAX_TRIED 3

/*
 * dns_client_name - the client's name as Postfix's smtpd finds it: the
 * PTR records of the numeric address addr, and for each of the first
 * DNS_NAME_MAX_TRIED names (syntactically host names) its A or AAAA
 * records (the address's family), until one holds the address. So at
 * most 1 + DNS_NAME_MAX_TRIED queries through pc_dns_query(), each
 * bounded by the [dns] timeout and retries. name gets the confirmed
 * name, ptr the first PTR name (confirmed or not); both "" when there is
 * none. A forward query that failed with no name confirmed gives
 * DNS_NAME_TEMPFAIL with ptr set. Blocks the calling thread.
 */
enum dns_name_status dns_client_name(const char *addr, char *name, size_t namecap,
				     char *ptr, size_t ptrcap);

/* dns_thread_done - free the calling thread's channel now (else at thread exit) */
void dns_thread_done(void);

/* dns_shutdown - free the cache and the calling thread's channel */
void dns_shutdown(void);

#endif
