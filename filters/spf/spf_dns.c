/*
 * spf_dns.c - the DNS layer of the spf filter: libspf2 over pc_dns_query()
 *
 * See spf_dns.h for the interface. Written against libspf2 1.2's layer
 * contract (spf_dns.h, spf_dns_rr.h): lookup() returns a fresh
 * SPF_dns_rr_t that the caller frees, with herrno set to one of the
 * netdb codes libspf2's record fetching and mechanism code switch on,
 * and NULL only when memory ran out.
 */
#include <netdb.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/nameser.h>
#include <ctype.h>
#include <netinet/in.h>
#include <resolv.h>

#include "spf_dns.h"
#include "spf_syntax.h"

/* The first reply buffer; a longer reply is asked again with its size. */
#define SPF_DNS_BUF 4096

/* The largest DNS message (RFC 1035 4.2.2: a TCP length is 16 bits). */
#define SPF_DNS_MSG_MAX 65535

/* RFC 7208 4.6.4: terms with DNS lookups per check, PTR names checked,
 * void lookups. */
#define SPF_DNS_LOOKUPS_MAX 10
#define SPF_DNS_PTR_MAX 10
#define SPF_DNS_VOIDS_MAX 2

/* CNAME links followed inside one reply before giving up on it. */
#define SPF_DNS_CHAIN_MAX 8

/* RFC 1035 2.3.4, and RFC 7208 4.3's "malformed" domain. */
#define SPF_DNS_LABEL_MAX 63
#define SPF_DNS_NAME_MAX 253

/* The hook of a layer. */
struct spf_dns_layer {
	spf_dns_query_fn query;
	SPF_request_t *request; /* the check under way, for explanations */
	unsigned lookups;	/* DNS terms of the records fetched for it */
	unsigned voids;		/* void lookups of its terms */
	char **hosts;		/* names from MX and PTR answers */
	size_t nhosts;
	char *top;		/* the first record fetched, as compiled */
	bool would_block;	/* a question could not be answered without waiting */
};

/*
 * spf_dns_truncate - RFC 7208 7.3: a name longer than 253 octets (after
 * macro expansion) loses labels on its left until it fits
 */
static const char *spf_dns_truncate(const char *domain)
{
	size_t len = strlen(domain);

	if (len > 0 && domain[len - 1] == '.')
		len--;
	while (len > SPF_DNS_NAME_MAX) {
		const char *dot = strchr(domain, '.');

		if (dot == NULL)
			break;
		len -= (size_t)(dot + 1 - domain);
		domain = dot + 1;
	}
	return domain;
}

/* spf_dns_name_valid - whether domain can be asked at all */
int spf_dns_name_valid(const char *domain)
{
	size_t len, label = 0;

	if (domain == NULL)
		return 0;
	len = strlen(domain);
	if (len > 0 && domain[len - 1] == '.')
		len--;
	if (len == 0 || len > SPF_DNS_NAME_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (domain[i] == '.') {
			if (label == 0)
				return 0;
			label = 0;
		} else if (++label > SPF_DNS_LABEL_MAX) {
			return 0;
		}
	}
	return label > 0;
}

/*
 * name_unescape - a name as ns_rr_name() presents it ("a\\032b" for a
 * space, "\\." for a dot inside a label) back to its octets; a dot inside
 * a label stays escaped so it cannot pass for a label separator
 */
static void name_unescape(const char *in, char *out, size_t cap)
{
	size_t n = 0;

	while (*in && n + 2 < cap) {
		if (in[0] == '\\' && isdigit((unsigned char)in[1]) &&
		    isdigit((unsigned char)in[2]) && isdigit((unsigned char)in[3])) {
			int c = (in[1] - '0') * 100 + (in[2] - '0') * 10 + (in[3] - '0');
			if (c == '.' || c == '\\' || c > 255) {
				out[n++] = '\\';
				out[n++] = (char)(c > 255 ? '?' : c);
			} else {
				out[n++] = (char)c;
			}
			in += 4;
		} else if (in[0] == '\\' && in[1]) {
			if (in[1] == '.' || in[1] == '\\')
				out[n++] = '\\';
			out[n++] = in[1];
			in += 2;
		} else {
			out[n++] = *in++;
		}
	}
	out[n] = 0;
}

/*
 * name_equal - an owner name from a reply (escaped, see name_unescape)
 * and a name we asked for, alike ignoring case and a final dot
 */
static int name_equal(const char *owner, const char *b)
{
	char a[NS_MAXDNAME * 4 + 1];
	size_t la, lb = strlen(b);

	name_unescape(owner, a, sizeof(a));
	la = strlen(a);
	if (la > 0 && a[la - 1] == '.')
		la--;
	if (lb > 0 && b[lb - 1] == '.')
		lb--;
	return la == lb && strncasecmp(a, b, la) == 0;
}

/* rr_status - an empty answer with a netdb status */
static SPF_dns_rr_t *rr_status(SPF_dns_server_t *layer, const char *domain,
			       ns_type type, int ttl, SPF_dns_stat_t herrno)
{
	return SPF_dns_rr_new_init(layer, domain, type, ttl, herrno);
}

/*
 * chain_end - where the CNAME chain from qname ends inside the answer
 * section (qname itself without CNAMEs), in end[NS_MAXDNAME]; -1 when
 * the section cannot be parsed, -2 when the chain loops or runs too long
 */
static int chain_end(ns_msg *handle, const char *qname, char *end)
{
	int count = ns_msg_count(*handle, ns_s_an);
	char target[NS_MAXDNAME];
	ns_rr rr;

	if (strlen(qname) >= NS_MAXDNAME)
		return -1;
	strcpy(end, qname);
	for (int hop = 0; hop <= SPF_DNS_CHAIN_MAX; hop++) {
		int moved = 0;

		for (int i = 0; i < count; i++) {
			if (ns_parserr(handle, ns_s_an, i, &rr) < 0)
				return -1;
			if (ns_rr_type(rr) != ns_t_cname ||
			    ns_rr_class(rr) != ns_c_in ||
			    !name_equal(ns_rr_name(rr), end))
				continue;
			if (ns_name_uncompress(ns_msg_base(*handle),
					       ns_msg_end(*handle), ns_rr_rdata(rr),
					       target, sizeof(target)) < 0)
				return -1;
			strcpy(end, target);
			moved = 1;
			break;
		}
		if (!moved)
			return 0;
	}
	return -2; /* a loop, or a chain no resolver would hand back */
}

/*
 * txt_join - the character-strings of a TXT rdata joined into out (of at
 * least rdlen bytes); -1 when a string runs past the rdata. A NUL byte
 * becomes DEL: no SPF record holds either (RFC 7208 3), and a C string
 * cut at the NUL would be another, shorter record.
 */
static int txt_join(const unsigned char *rdata, size_t rdlen, char *out)
{
	size_t i = 0, o = 0;

	while (i < rdlen) {
		size_t n = rdata[i++];

		if (n > rdlen - i)
			return -1;
		for (size_t k = 0; k < n; k++)
			out[o++] = rdata[i + k] ? (char)rdata[i + k] : '\x7f';
		i += n;
	}
	out[o] = '\0';
	return 0;
}

/*
 * rr_add - record i of spfrr from one answer RR of the type asked; 0, -1
 * for a malformed record, -2 when out of memory
 */
static int rr_add(SPF_dns_rr_t *spfrr, int i, ns_msg *handle, ns_rr *rr)
{
	const unsigned char *rdata = ns_rr_rdata(*rr);
	size_t rdlen = ns_rr_rdlen(*rr);
	char name[NS_MAXDNAME];
	size_t need;

	switch (ns_rr_type(*rr)) {
	case ns_t_a:
		if (rdlen != 4)
			return -1;
		if (SPF_dns_rr_buf_realloc(spfrr, i, sizeof(struct in_addr)) != SPF_E_SUCCESS)
			return -2;
		memcpy(&spfrr->rr[i]->a, rdata, 4);
		return 0;
	case ns_t_aaaa:
		if (rdlen != 16)
			return -1;
		if (SPF_dns_rr_buf_realloc(spfrr, i, sizeof(struct in6_addr)) != SPF_E_SUCCESS)
			return -2;
		memcpy(&spfrr->rr[i]->aaaa, rdata, 16);
		return 0;
	case ns_t_mx:
	case ns_t_ptr:
		if (ns_rr_type(*rr) == ns_t_mx) {
			/* the preference, then the exchange */
			if (rdlen < NS_INT16SZ)
				return -1;
			rdata += NS_INT16SZ;
		}
		if (ns_name_uncompress(ns_msg_base(*handle), ns_msg_end(*handle),
				       rdata, name, sizeof(name)) < 0)
			return -1;
		need = strlen(name) + 1;
		if (SPF_dns_rr_buf_realloc(spfrr, i, need) != SPF_E_SUCCESS)
			return -2;
		/* mx and ptr are the same bytes of the union */
		memcpy(spfrr->rr[i]->ptr, name, need);
		return 0;
	case ns_t_txt:
	case ns_t_spf:
		/* the joined text is shorter than rdata: it loses the length
		 * bytes, of which there is at least one per string */
		if (SPF_dns_rr_buf_realloc(spfrr, i, rdlen + 1) != SPF_E_SUCCESS)
			return -2;
		return txt_join(rdata, rdlen, spfrr->rr[i]->txt);
	default:
		return -1; /* a type libspf2 never asks */
	}
}

/* spf_dns_parse - the SPF_dns_rr_t of a whole reply */
SPF_dns_rr_t *spf_dns_parse(SPF_dns_server_t *layer, const char *domain,
			    ns_type type, const unsigned char *msg, size_t len)
{
	char owner[NS_MAXDNAME];
	SPF_dns_rr_t *spfrr;
	unsigned long ttl = 0;
	ns_msg handle;
	int count, n = 0;
	ns_rr rr;

	if (len > SPF_DNS_MSG_MAX || ns_initparse(msg, (int)len, &handle) < 0)
		return rr_status(layer, domain, type, 0, TRY_AGAIN);
	switch (ns_msg_getflag(handle, ns_f_rcode)) {
	case ns_r_noerror:
		break;
	case ns_r_nxdomain:
		/* RFC 2308: negative answers are cached by the resolver; the
		 * TTL here only matters to a caching layer above us */
		return rr_status(layer, domain, type, 0, HOST_NOT_FOUND);
	default:
		/* RFC 7208 2.6.7 and 5: SERVFAIL and any other rcode are
		 * temperror, not "no such record" */
		return rr_status(layer, domain, type, 0, TRY_AGAIN);
	}
	switch (chain_end(&handle, domain, owner)) {
	case -1:
		return rr_status(layer, domain, type, 0, TRY_AGAIN);
	case -2:
		/*
		 * A CNAME loop is the zone's lasting mistake, not a passing
		 * failure: the name leads nowhere (so RFC 7208 5.5 skips it
		 * instead of giving temperror to mail that would be retried
		 * for days).
		 */
		return rr_status(layer, domain, type, 0, HOST_NOT_FOUND);
	}

	spfrr = rr_status(layer, domain, type, 0, NETDB_SUCCESS);
	if (spfrr == NULL)
		return NULL;
	count = ns_msg_count(handle, ns_s_an);
	for (int i = 0; i < count; i++) {
		int rc;

		if (ns_parserr(&handle, ns_s_an, i, &rr) < 0)
			goto malformed;
		if (ns_rr_type(rr) != type || ns_rr_class(rr) != ns_c_in ||
		    !name_equal(ns_rr_name(rr), owner))
			continue;
		rc = rr_add(spfrr, n, &handle, &rr);
		if (rc == -2) {
			SPF_dns_rr_free(spfrr);
			return NULL;
		}
		if (rc < 0)
			goto malformed;
		if (n == 0 || ns_rr_ttl(rr) < ttl)
			ttl = ns_rr_ttl(rr);
		spfrr->num_rr = ++n;
	}
	spfrr->ttl = (time_t)ttl;
	if (n == 0)
		spfrr->herrno = NO_DATA; /* RFC 2308 2.2: NODATA */
	return spfrr;

malformed:
	/* half a record set could change a result: none of it counts */
	SPF_dns_rr_free(spfrr);
	return rr_status(layer, domain, type, 0, TRY_AGAIN);
}

/* spf_dns_ask - one question: ask, then parse */
static SPF_dns_rr_t *spf_dns_ask(SPF_dns_server_t *layer, const char *domain,
				 ns_type type)
{
	struct spf_dns_layer *l = layer->hook;
	unsigned char stackbuf[SPF_DNS_BUF];
	unsigned char *buf = stackbuf, *big = NULL;
	SPF_dns_rr_t *spfrr;
	int len;

	if (type == ns_t_spf)
		return rr_status(layer, domain, type, 0, NO_DATA);
	domain = spf_dns_truncate(domain);
	if (!spf_dns_name_valid(domain))
		/* RFC 7208 4.3: a malformed name is "none", as NXDOMAIN */
		return rr_status(layer, domain, type, 0, HOST_NOT_FOUND);

	len = l->query(domain, (int)type, buf, sizeof(stackbuf));
	if (len > (int)sizeof(stackbuf)) {
		/* the same question again, now answered from the cache */
		size_t size = (size_t)len;

		big = malloc(size);
		if (big == NULL)
			return NULL;
		buf = big;
		len = l->query(domain, (int)type, buf, size);
		if (len > (int)size)
			len = SPF_DNS_QUERY_ERROR; /* it grew again: give up */
	}
	if (len == SPF_DNS_QUERY_WOULDBLOCK)
		l->would_block = true;
	if (len <= 0) {
		/* SPF_DNS_QUERY_TIMEOUT, _ERROR, _WOULDBLOCK: temperror */
		free(big);
		return rr_status(layer, domain, type, 0, TRY_AGAIN);
	}
	spfrr = spf_dns_parse(layer, domain, type, buf, (size_t)len);
	free(big);
	return spfrr;
}

/* host_listed - whether name came in an MX or PTR answer of this check */
static bool host_listed(const struct spf_dns_layer *l, const char *name)
{
	for (size_t i = 0; i < l->nhosts; i++)
		if (name_equal(l->hosts[i], name))
			return true;
	return false;
}

/* host_list - remember the names of an MX or PTR answer; -1 when out of
 * memory */
static int host_list(struct spf_dns_layer *l, const SPF_dns_rr_t *spfrr)
{
	char **hosts = realloc(l->hosts, (l->nhosts + (size_t)spfrr->num_rr) *
					     sizeof(*hosts));

	if (hosts == NULL)
		return -1;
	l->hosts = hosts;
	for (int i = 0; i < spfrr->num_rr; i++) {
		/* mx and ptr are the same bytes of the union */
		if ((hosts[l->nhosts] = strdup(spfrr->rr[i]->ptr)) == NULL)
			return -1;
		l->nhosts++;
	}
	return 0;
}

/*
 * spf_dns_lookup - the layer's lookup, for libspf2: a question, with the
 * accounting of RFC 7208 4.6.4
 *
 * - Of more than 10 PTR names, all but the first 10 MUST be ignored
 *   (libspf2 would make it a permerror instead).
 * - "Void lookups" (NXDOMAIN, or no records) of terms SHOULD be limited
 *   to two; libspf2 has no such limit, so the layer counts them and the
 *   filter reads spf_dns_voids_exceeded() after the check. A term's
 *   lookup is an A, AAAA or MX question for a name that no MX or PTR
 *   answer of this check gave: the address lookups of MX hosts and PTR
 *   names are not terms of their own, and a PTR lookup may be the %{p}
 *   macro's, for a client that has no reverse name at all.
 */
static SPF_dns_rr_t *spf_dns_lookup(SPF_dns_server_t *layer, const char *domain,
				    ns_type type, int should_cache)
{
	struct spf_dns_layer *l = layer->hook;
	SPF_dns_rr_t *spfrr;

	(void)should_cache; /* pc_dns_query() caches every answer */
	spfrr = spf_dns_ask(layer, domain, type);
	if (spfrr == NULL)
		return NULL;
	if (type == ns_t_ptr && spfrr->num_rr > SPF_DNS_PTR_MAX)
		spfrr->num_rr = SPF_DNS_PTR_MAX;
	if ((type == ns_t_mx || type == ns_t_ptr) &&
	    spfrr->herrno == NETDB_SUCCESS && host_list(l, spfrr) < 0) {
		SPF_dns_rr_free(spfrr);
		return NULL;
	}
	if ((type == ns_t_a || type == ns_t_aaaa || type == ns_t_mx) &&
	    (spfrr->herrno == HOST_NOT_FOUND || spfrr->herrno == NO_DATA) &&
	    !host_listed(l, domain))
		l->voids++;
	return spfrr;
}

/* spf_dns_would_block - whether a question of the check would have waited */
int spf_dns_would_block(SPF_dns_server_t *layer)
{
	const struct spf_dns_layer *l = layer->hook;

	return l->would_block;
}

/* spf_dns_top_record - the check's own record, as given to libspf2 */
const char *spf_dns_top_record(SPF_dns_server_t *layer)
{
	const struct spf_dns_layer *l = layer->hook;

	return l->top;
}

/* spf_dns_reset_lookups - count the DNS terms of a check from zero again */
void spf_dns_reset_lookups(SPF_dns_server_t *layer)
{
	struct spf_dns_layer *l = layer->hook;

	l->lookups = 0;
}

/* spf_dns_voids_exceeded - more than two void lookups in this check? */
int spf_dns_voids_exceeded(SPF_dns_server_t *layer)
{
	const struct spf_dns_layer *l = layer->hook;

	return l->voids > SPF_DNS_VOIDS_MAX;
}

/*
 * exp_escape - an explanation TXT record as libspf2's macro compiler can
 * take it: it ends a macro-string at the first space, so each space
 * becomes the space macro "%_" (the same text once expanded). NULL when
 * the record is no explanation-string (RFC 7208 6.2, 7.1: printable
 * ASCII and spaces; "%" followed by "%", "_", "-" or "{"), which is then
 * ignored as a syntax error must be.
 */
static char *exp_escape(const char *txt)
{
	char *out = malloc(2 * strlen(txt) + 1), *o = out;

	if (out == NULL)
		return NULL;
	for (const char *p = txt; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == ' ') {
			*o++ = '%';
			*o++ = '_';
		} else if (c < 0x20 || c > 0x7e) {
			goto invalid;
		} else if (c == '%') {
			if (p[1] != '%' && p[1] != '_' && p[1] != '-' &&
			    p[1] != '{')
				goto invalid;
			*o++ = *p++;
			*o++ = *p;
		} else {
			*o++ = (char)c;
		}
	}
	*o = '\0';
	return out;
invalid:
	free(out);
	return NULL;
}

/*
 * spf_dns_get_exp - the explanation of an exp= modifier (RFC 7208 6.2):
 * the TXT record at domain, expanded as a macro-string into *bufp. Any
 * error (DNS, no record, more than one, bad syntax) returns non-success,
 * and libspf2 then has no explanation: the filter uses its own.
 * libspf2's own fetch takes the first of several records and cannot
 * parse spaces; this one is given the layer's request to expand with.
 */
static SPF_errcode_t spf_dns_get_exp(SPF_server_t *server, const char *domain,
				     char **bufp, size_t *buflenp)
{
	SPF_dns_server_t *layer = server->resolver;
	const struct spf_dns_layer *l = layer->hook;
	SPF_response_t *scratch = NULL;
	SPF_macro_t *macro = NULL;
	char name[NS_MAXDNAME];
	SPF_dns_rr_t *rr;
	SPF_errcode_t err;
	char *text = NULL;

	if (l->request == NULL)
		return SPF_E_NOT_CONFIG;
	/* domain is *bufp, which the expansion overwrites */
	if (strlen(domain) >= sizeof(name))
		return SPF_E_BIG_STRING;
	strcpy(name, domain);
	rr = spf_dns_ask(layer, name, ns_t_txt);
	if (rr == NULL)
		return SPF_E_NO_MEMORY;
	err = SPF_E_NOT_SPF;
	if (rr->herrno == NETDB_SUCCESS && rr->num_rr == 1 &&
	    (text = exp_escape(rr->rr[0]->txt)) != NULL &&
	    (scratch = SPF_response_new(l->request)) != NULL) {
		err = SPF_record_compile_macro(server, scratch, &macro, text);
		if (err == SPF_E_SUCCESS && SPF_response_errors(scratch) > 0)
			err = SPF_E_SYNTAX;
		if (err == SPF_E_SUCCESS)
			/* the compiled data follows the header (spf_record.h) */
			err = SPF_record_expand_data(
				server, l->request, scratch,
				(SPF_data_t *)((char *)macro + sizeof(*macro)),
				macro->macro_len, bufp, buflenp);
	}
	if (macro != NULL)
		SPF_macro_free(macro);
	if (scratch != NULL)
		SPF_response_free(scratch);
	free(text);
	SPF_dns_rr_free(rr);
	return err;
}

/* spf_fail_record - end a record fetch with a result and an error */
static SPF_errcode_t spf_fail_record(SPF_response_t *response, SPF_result_t result,
				     SPF_errcode_t code, const char *fmt,
				     const char *domain, const char *detail)
{
	response->result = result;
	response->reason = SPF_REASON_FAILURE;
	return SPF_response_add_error(response, code, fmt, domain, detail);
}

/*
 * spf_dns_get_spf - the record of request->cur_dom, compiled (RFC 7208
 * 4.4, 4.5, 4.6), in libspf2's place: TXT only; no record, or a name
 * that does not exist, is "none"; a DNS failure is "temperror"; several
 * records, or one that breaks the grammar (spf_syntax.c), "permerror".
 * libspf2 calls this for the first record and for every include and
 * redirect; its error code tells temperror (SPF_E_DNS_ERROR) from the
 * rest there.
 */
static SPF_errcode_t spf_dns_get_spf(SPF_server_t *server, SPF_request_t *request,
				     SPF_response_t *response,
				     SPF_record_t **recordp)
{
	struct spf_dns_layer *l = server->resolver->hook;
	const char *domain = request->cur_dom;
	unsigned lookups = 0;
	char err[256], *text = NULL;
	SPF_dns_rr_t *rr;
	SPF_errcode_t code;
	int found = -1, count = 0;
	size_t size;

	*recordp = NULL;
	if (domain == NULL)
		return spf_fail_record(response, SPF_RESULT_PERMERROR, SPF_E_NOT_CONFIG,
				       "No domain to check%s%s", "", "");
	rr = SPF_dns_lookup(server->resolver, domain, ns_t_txt, 1);
	if (rr == NULL)
		return spf_fail_record(response, SPF_RESULT_TEMPERROR, SPF_E_NO_MEMORY,
				       "Out of memory looking up '%s'%s", domain, "");
	if (rr->herrno == TRY_AGAIN) {
		SPF_dns_rr_free(rr);
		return spf_fail_record(response, SPF_RESULT_TEMPERROR, SPF_E_DNS_ERROR,
				       "Temporary DNS failure for '%s'%s", domain, "");
	}
	for (int i = 0; rr->herrno == NETDB_SUCCESS && i < rr->num_rr; i++)
		if (spf_record_select(rr->rr[i]->txt)) {
			found = i;
			count++;
		}
	if (count == 0) {
		SPF_dns_rr_free(rr);
		return spf_fail_record(response, SPF_RESULT_NONE, SPF_E_NOT_SPF,
				       "No SPF record for '%s'%s", domain, "");
	}
	if (count > 1) {
		SPF_dns_rr_free(rr);
		return spf_fail_record(response, SPF_RESULT_PERMERROR,
				       SPF_E_MULTIPLE_RECORDS,
				       "Several SPF records for '%s'%s", domain, "");
	}
	size = 4 * strlen(rr->rr[found]->txt) + 64;
	text = malloc(size);
	if (text == NULL) {
		SPF_dns_rr_free(rr);
		return spf_fail_record(response, SPF_RESULT_TEMPERROR, SPF_E_NO_MEMORY,
				       "Out of memory for the record of '%s'%s",
				       domain, "");
	}
	if (spf_record_check(rr->rr[found]->txt,
			     request->client_ver == AF_INET6 ? 6
			     : request->client_ver == AF_INET ? 4 : 0,
			     text, size, &lookups, err, sizeof(err)) < 0) {
		SPF_dns_rr_free(rr);
		free(text);
		return spf_fail_record(response, SPF_RESULT_PERMERROR, SPF_E_SYNTAX,
				       "Syntax error in the SPF record of '%s': %s",
				       domain, err);
	}
	SPF_dns_rr_free(rr);
	/*
	 * RFC 7208 4.6.4: at most 10 terms with DNS lookups per check, the
	 * included and redirected records' too. libspf2 counts per record;
	 * the sum is kept here, counted as a record is fetched (processing
	 * limits are part of the syntax check, 4.6).
	 */
	if (l->top == NULL && (l->top = strdup(text)) == NULL) {
		free(text);
		return spf_fail_record(response, SPF_RESULT_TEMPERROR, SPF_E_NO_MEMORY,
				       "Out of memory for the record of '%s'%s",
				       domain, "");
	}
	l->lookups += lookups;
	if (l->lookups > SPF_DNS_LOOKUPS_MAX) {
		free(text);
		return spf_fail_record(response, SPF_RESULT_PERMERROR, SPF_E_BIG_DNS,
				       "More than 10 DNS lookups with the record of '%s'%s",
				       domain, "");
	}
	code = SPF_record_compile(server, response, recordp, text);
	free(text);
	if (code != SPF_E_SUCCESS) {
		/* valid by RFC 7208, refused by libspf2 (see the README) */
		if (*recordp != NULL)
			SPF_record_free(*recordp);
		*recordp = NULL;
		response->result = SPF_RESULT_PERMERROR;
		response->reason = SPF_REASON_FAILURE;
	}
	return code;
}

/* spf_dns_set_request - the check the layer serves now */
void spf_dns_set_request(SPF_dns_server_t *layer, SPF_request_t *request)
{
	struct spf_dns_layer *l = layer->hook;

	l->request = request;
}

/* spf_dns_destroy - free a layer */
static void spf_dns_destroy(SPF_dns_server_t *layer)
{
	struct spf_dns_layer *l;

	if (layer == NULL)
		return;
	l = layer->hook;
	for (size_t i = 0; i < l->nhosts; i++)
		free(l->hosts[i]);
	free(l->hosts);
	free(l->top);
	free(l);
	free(layer);
}

/* spf_dns_new - a layer asking query */
SPF_dns_server_t *spf_dns_new(spf_dns_query_fn query)
{
	SPF_dns_server_t *layer = calloc(1, sizeof(*layer));
	struct spf_dns_layer *l = calloc(1, sizeof(*l));

	if (layer == NULL || l == NULL) {
		free(layer);
		free(l);
		return NULL;
	}
	l->query = query;
	layer->destroy = spf_dns_destroy;
	layer->lookup = spf_dns_lookup;
	layer->get_spf = spf_dns_get_spf;
	layer->get_exp = spf_dns_get_exp;
	layer->add_cache = NULL;
	layer->layer_below = NULL;
	layer->name = "portcullis";
	layer->hook = l;
	return layer;
}
