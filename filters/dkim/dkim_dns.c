/*
 * dkim_dns.c - libopendkim's key queries through Portcullis' resolver
 *
 * libopendkim asks its resolver in three steps: start a query, wait for
 * the reply, cancel (free) the query; it always cancels after waiting.
 * pc_dns_query() blocks, which hooks may do, so the whole query runs in
 * the start step and the wait step only hands over what it got. Every
 * query is its own allocation: the hooks of many sessions run at once on
 * one DKIM_LIB, so nothing here is shared.
 */
#include <arpa/nameser.h>
#include <stdlib.h>

#include <portcullis/filter.h>

#include "dkim_dns.h"

/* One query: its outcome, held from start to cancel. */
struct dns_query {
	int status; /* DKIM_DNS_SUCCESS, _EXPIRED or _ERROR */
	size_t len; /* of the reply in the caller's buffer */
};

/* The service handle: anything not NULL, or libopendkim starts its own. */
static int dns_service;

/* dns_start - run the query to its end; the reply lands in buf */
static int dns_start(void *service, int type, unsigned char *name,
		     unsigned char *buf, size_t buflen, void **handle)
{
	struct dns_query *q = calloc(1, sizeof(*q));
	int n, rcode;

	if (!q)
		return -1; /* libopendkim: "query failed", a temporary error */
	n = pc_dns_query((const char *)name, type, buf, buflen);
	if (n == PC_DNS_TIMEOUT) {
		q->status = DKIM_DNS_EXPIRED;
	} else if (n < HFIXEDSZ || (size_t)n > buflen) {
		/* a local failure, a runt, or more than the buffer holds */
		q->status = DKIM_DNS_ERROR;
	} else {
		rcode = buf[3] & 0x0f;
		/*
		 * NXDOMAIN and NODATA say the key does not exist, which
		 * libopendkim reads from the reply. Any other failure says
		 * nothing about the key: SERVFAIL would otherwise read as a
		 * reply without records, that is as no key at all.
		 */
		if (rcode != ns_r_noerror && rcode != ns_r_nxdomain) {
			q->status = DKIM_DNS_ERROR;
		} else {
			q->status = DKIM_DNS_SUCCESS;
			q->len = (size_t)n;
		}
	}
	*handle = q;
	return 0;
}

/* dns_waitreply - the outcome of a started query (it has ended) */
static int dns_waitreply(void *service, void *handle, struct timeval *timeout,
			 size_t *bytes, int *error, int *dnssec)
{
	const struct dns_query *q = handle;

	if (bytes)
		*bytes = q->len;
	if (error)
		*error = 0;
	if (dnssec)
		*dnssec = DKIM_DNSSEC_UNKNOWN;
	return q->status;
}

/* dns_cancel - free a query */
static int dns_cancel(void *service, void *handle)
{
	free(handle);
	return 0;
}

/* pcdkim_dns_install - make lib look keys up with pc_dns_query() */
void pcdkim_dns_install(DKIM_LIB *lib)
{
	/* no init and no close: there is no resolver state to set up */
	dkim_dns_set_init(lib, NULL);
	dkim_dns_set_close(lib, NULL);
	dkim_dns_set_query_service(lib, &dns_service);
	dkim_dns_set_query_start(lib, dns_start);
	dkim_dns_set_query_waitreply(lib, dns_waitreply);
	dkim_dns_set_query_cancel(lib, dns_cancel);
}
