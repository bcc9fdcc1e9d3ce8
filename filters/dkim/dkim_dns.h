/*
 * dkim_dns.h - libopendkim's key queries through Portcullis' resolver
 *
 * pcdkim_dns_install() replaces libopendkim's own resolver (res_query on
 * /etc/resolv.conf) with pc_dns_query(), so the dkim filter asks the
 * servers of the [dns] section, shares its cache with every filter, and
 * can be tested against a DNS server on a loopback port.
 *
 * How a key query ends, as libopendkim then reports the signature:
 *	an answer (a TXT record, NXDOMAIN, NODATA)  the key or its absence:
 *						    DKIM_SIGERROR_NOKEY for
 *						    the last two
 *	no answer in time (PC_DNS_TIMEOUT)	    DKIM_SIGERROR_KEYFAIL
 *	SERVFAIL, REFUSED or any other rcode,	    DKIM_SIGERROR_KEYFAIL
 *	a reply cut short, a local failure
 *	on the event loop, a key not in the cache   DKIM_SIGERROR_KEYFAIL
 *	(PC_DNS_WOULDBLOCK)
 * so a missing key is a permanent error and a failed lookup a temporary
 * one (RFC 6376 6.1.2).
 */
#ifndef PCDKIM_DNS_H
#define PCDKIM_DNS_H

#include <stdbool.h>
#include <sys/types.h>

#include <dkim.h>

#pragma GCC visibility push(hidden)

/* pcdkim_dns_install - make lib look keys up with pc_dns_query() */
void pcdkim_dns_install(DKIM_LIB *lib);

#pragma GCC visibility pop

#endif
