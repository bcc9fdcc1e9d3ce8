/*
 * spf.c - the built-in "spf" filter: Sender Policy Framework (RFC 7208)
 *
 * Options (section [filter NAME]):
 *	trusted_networks = 127.0.0.0/8, ::1/128	(the default)
 *		clients whose mail is not checked (the decision record says
 *		"spf": "skipped", "reason": "trusted"); an empty value
 *		trusts no one
 *	receiver = mx.example.org	(default: the authserv-id)
 *		this host's name in Received-SPF: and in explanations (%{r})
 *	fail = reject | tempfail | accept		(reject)
 *	softfail = accept | reject | tempfail		(accept)
 *	neutral = accept | reject | tempfail		(accept)
 *	none = accept | reject | tempfail		(accept)
 *	permerror = accept | reject | tempfail		(accept)
 *	temperror = tempfail | accept			(tempfail)
 *		what each result does to the MAIL command; a pass is always
 *		accepted
 *
 * At MAIL the filter evaluates check_host() with libspf2 for the client
 * address (IPv4 or IPv6; an IPv4-mapped IPv6 address is IPv4, RFC 7208
 * 5) and the MAIL FROM identity, or, for MAIL FROM:<>, the HELO identity
 * (RFC 7208 2.3, 2.4). The identity's domain is checked in the form
 * pc_domain_normalize() gives (A-labels, RFC 8616 3), so every spelling
 * of one domain gets one result. A refusal is answered to MAIL itself (RFC 7208
 * 8.4, RFC 7372 codes):
 *
 *	fail, softfail, neutral, none	550 5.7.23 / 451 4.7.23
 *	permerror			550 5.7.24 / 451 4.7.24
 *	temperror			451 4.7.24
 *
 * with the domain's explanation (exp=, RFC 7208 6.2) for fail, softfail
 * and neutral, or a text of ours when it gives none. The result goes to
 * the decision record ("spf", "identity", "domain", "mechanism", and
 * "explanation" with "explanation_source" on fail, "error" on the two
 * errors) and is kept with the transaction: at DATA the filter puts
 * Received-SPF: (RFC 7208 9.1) and Authentication-Results: (RFC 8601)
 * fields at the top of the header.
 *
 * Every DNS question goes through pc_dns_query() (spf_dns.c), not
 * through the system resolver: the [dns] section's servers, timeout,
 * retries and cache hold for SPF too. The filter's own timeout should
 * allow for a few of the resolver's timeouts in a row. That DNS layer
 * also fetches the records and checks them against the RFC's grammar
 * (spf_syntax.c), fetches explanations and keeps the lookup limits,
 * where libspf2 1.2 departs from RFC 7208 (tests/spf/README.md). libspf2
 * does not say which mechanism matched; spf_matched_mechanism() finds
 * it.
 *
 * The mail hook is marked nonblocking: when the stage runs on the event
 * loop, pc_dns_query() answers from the cache only. A check that needed
 * an answer the cache does not hold is thrown away, and the hook returns
 * PC_WOULDBLOCK to be called again on a thread, where the questions are
 * asked. With the domains of the day in the cache, the check costs no
 * trip through the filter pool.
 *
 * libspf2 gives a loopback client a pass without looking at DNS; this
 * filter does not: which clients are spared is trusted_networks' call
 * (which spares loopback by default).
 *
 * The instance is built by init and only read afterwards; each check
 * builds its own libspf2 server, DNS layer and request, so concurrent
 * sessions share nothing. Bad option values are reported with
 * pc_config_error() naming the key.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <netinet/in.h>

#include <portcullis/filter.h>

#include "pc_domain.h"
#include "pc_netlist.h"
#include "spf_dns.h"

#define SPF_DEFAULT_TRUSTED "127.0.0.0/8, ::1/128"

/* RFC 7372: X.7.23 SPF validation failed, X.7.24 SPF validation error. */
#define SPF_FAILED_ENH_5 "5.7.23"
#define SPF_FAILED_ENH_4 "4.7.23"
#define SPF_ERROR_ENH_5 "5.7.24"
#define SPF_ERROR_ENH_4 "4.7.24"

/* The longest reply text, explanation or comment taken from libspf2. */
#define SPF_TEXT_MAX 400

/* The longest value written into a header field's key-value pair. */
#define SPF_VALUE_MAX 255

/* The results of check_host() (RFC 7208 2.6), as written in headers. */
enum spf_result {
	SPF_PASS,
	SPF_FAIL,
	SPF_SOFTFAIL,
	SPF_NEUTRAL,
	SPF_NONE,
	SPF_TEMPERROR,
	SPF_PERMERROR,
	SPF_NRESULTS
};

static const char *const spf_result_names[SPF_NRESULTS] = {
	"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror",
};

/* What a result does to MAIL. */
enum spf_action { SPF_ACCEPT, SPF_REJECT, SPF_TEMPFAIL };

#define ACT(a) (1u << (a))

/* The per-result options, their defaults and allowed values. */
static const struct spf_policy_option {
	const char *key;
	enum spf_result result;
	enum spf_action fallback;
	unsigned allowed;
} spf_policy_options[] = {
	{ "fail", SPF_FAIL, SPF_REJECT,
	  ACT(SPF_REJECT) | ACT(SPF_TEMPFAIL) | ACT(SPF_ACCEPT) },
	{ "softfail", SPF_SOFTFAIL, SPF_ACCEPT,
	  ACT(SPF_ACCEPT) | ACT(SPF_REJECT) | ACT(SPF_TEMPFAIL) },
	{ "neutral", SPF_NEUTRAL, SPF_ACCEPT,
	  ACT(SPF_ACCEPT) | ACT(SPF_REJECT) | ACT(SPF_TEMPFAIL) },
	{ "none", SPF_NONE, SPF_ACCEPT,
	  ACT(SPF_ACCEPT) | ACT(SPF_REJECT) | ACT(SPF_TEMPFAIL) },
	{ "permerror", SPF_PERMERROR, SPF_ACCEPT,
	  ACT(SPF_ACCEPT) | ACT(SPF_REJECT) | ACT(SPF_TEMPFAIL) },
	/* a temporary error is no reason to refuse for good */
	{ "temperror", SPF_TEMPERROR, SPF_TEMPFAIL,
	  ACT(SPF_TEMPFAIL) | ACT(SPF_ACCEPT) },
};

#define SPF_NPOLICY (sizeof(spf_policy_options) / sizeof(spf_policy_options[0]))

static const char *const spf_action_names[] = { "accept", "reject", "tempfail" };

static const char *const spf_options[] = {
	"trusted_networks",
	"receiver",
	"fail",
	"softfail",
	"neutral",
	"none",
	"permerror",
	"temperror",
	NULL,
};

struct spf_instance {
	struct pc_netlist trusted;
	char *receiver; /* NULL: the authserv-id */
	enum spf_action action[SPF_NRESULTS];
};

/* What MAIL found, kept for DATA. */
struct spf_tx {
	enum spf_result result;
	bool helo_identity; /* MAIL FROM:<>: the HELO was checked */
	char *client_ip;    /* as written in client-ip= */
	char *sender;	    /* MAIL FROM ("" for <>) */
	char *helo;	    /* NULL without HELO */
	char *domain;	    /* the identity's domain, normalised if it can be */
	char *check_from;   /* MAIL FROM as checked: local@domain */
	char *check_helo;   /* the HELO as checked: normalised if it can be */
	char *receiver;
	char *comment;	    /* libspf2's header comment, or ours */
	char *mechanism;    /* NULL when none matched */
	char *problem;	    /* the error of a permerror or temperror */
	char *explanation;  /* for a fail, softfail or neutral */
	bool explanation_local; /* ours, not the domain's */
};

/* ---------------------------------------------------------------- */
/* Configuration */

/* spf_free - release an instance, complete or not */
static void spf_free(struct spf_instance *si)
{
	if (si == NULL)
		return;
	pc_netlist_free(&si->trusted);
	free(si->receiver);
	free(si);
}

/* spf_parse_action - one per-result option; -1 after pc_config_error() */
static int spf_parse_action(pc_config *config, const struct spf_policy_option *o,
			    enum spf_action *out)
{
	const char *value = pc_config_get(config, o->key);
	char word[16];
	size_t n;

	*out = o->fallback;
	if (value == NULL)
		return 0;
	while (isspace((unsigned char)*value))
		value++;
	n = strlen(value);
	while (n > 0 && isspace((unsigned char)value[n - 1]))
		n--;
	if (n < sizeof(word)) {
		memcpy(word, value, n);
		word[n] = '\0';
		for (unsigned a = SPF_ACCEPT; a <= SPF_TEMPFAIL; a++) {
			if (strcasecmp(word, spf_action_names[a]) != 0)
				continue;
			if (!(o->allowed & ACT(a)))
				break;
			*out = (enum spf_action)a;
			return 0;
		}
	}
	pc_config_error(config, o->key, "expected %s, not \"%s\"",
			o->result == SPF_TEMPERROR ? "tempfail or accept"
						   : "reject, tempfail or accept",
			value);
	return -1;
}

/* spf_receiver_valid - a receiver is a host name: it goes into headers */
static bool spf_receiver_valid(const char *r)
{
	if (*r == '\0' || strlen(r) > SPF_VALUE_MAX)
		return false;
	for (const char *p = r; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' &&
		    *p != '_')
			return false;
	return true;
}

static pthread_once_t spf_quiet_once = PTHREAD_ONCE_INIT;

/*
 * spf_quiet - libspf2 prints its warnings and notes on stdout and stderr
 * (process-wide handlers); what matters of them is in the response and
 * reaches our log from there. Its error handler stays: it is called on
 * broken internal invariants only, and aborts.
 */
static void spf_quiet(void)
{
	SPF_warning_handler = NULL;
	SPF_info_handler = NULL;
	SPF_debug_handler = NULL;
}

/* spf_init - read the options and build the instance */
static int spf_init(pc_config *config, void **instance)
{
	const char *trusted = pc_config_get(config, "trusted_networks");
	const char *receiver = pc_config_get(config, "receiver");
	struct spf_instance *si;
	char err[512];

	si = calloc(1, sizeof(*si));
	if (si == NULL) {
		pc_config_error(config, "module", "out of memory");
		return -1;
	}
	if (trusted == NULL)
		trusted = SPF_DEFAULT_TRUSTED;
	if (pc_netlist_parse(trusted, &si->trusted, err, sizeof(err)) < 0) {
		pc_config_error(config, "trusted_networks", "%s", err);
		goto fail;
	}
	if (receiver != NULL) {
		if (!spf_receiver_valid(receiver)) {
			pc_config_error(config, "receiver",
					"\"%s\" is not a host name", receiver);
			goto fail;
		}
		if ((si->receiver = strdup(receiver)) == NULL) {
			pc_config_error(config, "receiver", "out of memory");
			goto fail;
		}
	}
	si->action[SPF_PASS] = SPF_ACCEPT;
	for (size_t i = 0; i < SPF_NPOLICY; i++)
		if (spf_parse_action(config, &spf_policy_options[i],
				     &si->action[spf_policy_options[i].result]) < 0)
			goto fail;

	pthread_once(&spf_quiet_once, spf_quiet);
	*instance = si;
	return 0;
fail:
	spf_free(si);
	return -1;
}

/* spf_fini - free the instance */
static void spf_fini(void *instance)
{
	spf_free(instance);
}

/* ---------------------------------------------------------------- */
/* Text helpers */

/* spf_clean - a copy of s (at most max bytes) in printable ASCII */
static char *spf_clean(const char *s, size_t max)
{
	size_t n = strnlen(s, max);
	char *out = malloc(n + 1);

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	out[n] = '\0';
	return out;
}

/* buf_add - append printf output to buf (size bytes), cutting at its end */
__attribute__((format(printf, 4, 5)))
static void buf_add(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*len >= size - 1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf + *len, size - *len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	*len += (size_t)n < size - *len ? (size_t)n : size - *len - 1;
}

/*
 * buf_value - append a key-value value: bare when it is a plain token of
 * letters, digits and ".-_" (a dot-atom of RFC 7208 9.1 and a token of
 * RFC 8601 alike), else a quoted-string
 */
static void buf_value(char *buf, size_t size, size_t *len, const char *v)
{
	bool bare = *v != '\0';

	for (const char *p = v; *p && bare; p++)
		bare = isalnum((unsigned char)*p) || *p == '.' || *p == '-' ||
		       *p == '_';
	if (bare) {
		buf_add(buf, size, len, "%s", v);
		return;
	}
	buf_add(buf, size, len, "\"");
	for (const char *p = v; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '"' || c == '\\')
			buf_add(buf, size, len, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			buf_add(buf, size, len, "?");
		else
			buf_add(buf, size, len, "%c", c);
	}
	buf_add(buf, size, len, "\"");
}

/* buf_comment - append text as an RFC 5322 comment's content */
static void buf_comment(char *buf, size_t size, size_t *len, const char *text)
{
	for (const char *p = text; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '(' || c == ')' || c == '\\')
			buf_add(buf, size, len, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			buf_add(buf, size, len, "?");
		else
			buf_add(buf, size, len, "%c", c);
	}
}

/* ---------------------------------------------------------------- */
/* The check */

/* spf_tx_free - release what MAIL kept */
static void spf_tx_free(struct spf_tx *tx)
{
	if (tx == NULL)
		return;
	free(tx->client_ip);
	free(tx->sender);
	free(tx->helo);
	free(tx->domain);
	free(tx->check_from);
	free(tx->check_helo);
	free(tx->receiver);
	free(tx->comment);
	free(tx->mechanism);
	free(tx->problem);
	free(tx->explanation);
	free(tx);
}

/* spf_set - replace *field by a printable copy of s (NULL stays NULL) */
static int spf_set(char **field, const char *s)
{
	free(*field);
	*field = NULL;
	if (s == NULL)
		return 0;
	*field = spf_clean(s, SPF_TEXT_MAX);
	return *field ? 0 : -1;
}

/*
 * spf_domain_checkable - RFC 7208 4.3: a domain that is malformed or not
 * multi-label (a bare word, an address literal) gives "none" at once
 */
static bool spf_domain_checkable(const char *domain)
{
	const char *dot;

	if (domain == NULL || !spf_dns_name_valid(domain))
		return false;
	for (const char *p = domain; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' &&
		    *p != '_' && !((unsigned char)*p & 0x80))
			return false; /* "[192.0.2.1]", "a b": no domain */
	dot = strchr(domain, '.');
	return dot != NULL && dot[1] != '\0';
}

/*
 * spf_normal_or_clean - the normal form of the domain in[0..len) into
 * *field (pc_domain.h), or, when it has none, a printable copy for
 * spf_domain_checkable() to judge; -1 when out of memory
 */
static int spf_normal_or_clean(char **field, const char *in, size_t len)
{
	char norm[PC_DOMAIN_BUF];
	char *copy;
	int rc;

	if (pc_domain_normalize(in, len, norm, sizeof(norm)) >= 0)
		return spf_set(field, norm);
	copy = strndup(in, len);
	if (copy == NULL)
		return -1;
	rc = spf_set(field, copy);
	free(copy);
	return rc;
}

/*
 * spf_identities - the domain to check and what libspf2 gets for MAIL
 * FROM and HELO; -1 when out of memory.
 *
 * RFC 8616 3: an internationalised domain is checked by its A-labels,
 * the form its SPF record is published under; and however the client
 * spells it (upper case, NFD, fullwidth letters or full stops), one
 * domain gets one result. A name IDNA refuses keeps its spelling, made
 * printable, and RFC 7208 4.3 decides on it (spf_domain_checkable()):
 * libspf2 and the RFC's test suite pin what a malformed ASCII name gets.
 */
static int spf_identities(struct spf_tx *tx, const char *sender,
			  const char *helo)
{
	const char *at = strrchr(sender, '@');
	size_t need;

	if (helo != NULL &&
	    spf_normal_or_clean(&tx->check_helo, helo, strlen(helo)) < 0)
		return -1;
	if (tx->helo_identity)
		return spf_set(&tx->domain, tx->check_helo ? tx->check_helo : "");
	if (at == NULL)
		return spf_set(&tx->domain, "") < 0 ||
		       spf_set(&tx->check_from, sender) < 0 ? -1 : 0;
	if (spf_normal_or_clean(&tx->domain, at + 1, strlen(at + 1)) < 0)
		return -1;
	/* the local part as it came (made printable), for %{l} */
	need = (size_t)(at - sender) + 1 + strlen(tx->domain) + 1;
	tx->check_from = malloc(need);
	if (tx->check_from == NULL)
		return -1;
	snprintf(tx->check_from, need, "%.*s@%s", (int)(at - sender), sender,
		 tx->domain);
	for (char *p = tx->check_from; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	return 0;
}

/* spf_map_result - libspf2's result in ours */
static enum spf_result spf_map_result(SPF_result_t r)
{
	switch (r) {
	case SPF_RESULT_PASS:
		return SPF_PASS;
	case SPF_RESULT_FAIL:
		return SPF_FAIL;
	case SPF_RESULT_SOFTFAIL:
		return SPF_SOFTFAIL;
	case SPF_RESULT_NEUTRAL:
		return SPF_NEUTRAL;
	case SPF_RESULT_NONE:
		return SPF_NONE;
	case SPF_RESULT_TEMPERROR:
		return SPF_TEMPERROR;
	case SPF_RESULT_PERMERROR:
	case SPF_RESULT_INVALID:
	default:
		/* INVALID: the record did not compile (RFC 7208 4.6) */
		return SPF_PERMERROR;
	}
}

/*
 * spf_term_alone - whether the term of the check's record, evaluated
 * alone, matches with the result the whole record gave
 */
static bool spf_term_alone(SPF_request_t *req, SPF_dns_server_t *layer,
			   bool helo, const char *term, size_t n,
			   SPF_result_t result)
{
	SPF_record_t *record = NULL;
	SPF_response_t *resp = SPF_response_new(req);
	char text[SPF_TEXT_MAX + 16];
	bool match = false;

	if (resp == NULL || n > SPF_TEXT_MAX)
		goto out;
	snprintf(text, sizeof(text), "v=spf1 %.*s", (int)n, term);
	if (SPF_record_compile(req->spf_server, resp, &record, text) !=
	    SPF_E_SUCCESS || record == NULL)
		goto out;
	req->cur_dom = helo ? req->helo_dom : req->env_from_dp;
	spf_dns_reset_lookups(layer);
	resp->spf_record_exp = record;
	SPF_record_interpret(record, req, resp, 0);
	match = SPF_response_reason(resp) == SPF_REASON_MECH &&
		SPF_response_result(resp) == result;
out:
	if (record != NULL)
		SPF_record_free(record);
	if (resp != NULL)
		SPF_response_free(resp);
	return match;
}

/*
 * spf_matched_mechanism - the mechanism that matched, for the record
 * and Received-SPF: (RFC 7208 9.1); *out points into a static string or
 * into buf
 *
 * libspf2 1.2 tells only that some mechanism matched. Mechanisms are
 * tried in order and the first match decides (RFC 7208 4.6.2), so the
 * first term of the check's own record that matches alone, with the same
 * result, is the one; its lookups come from the resolver's cache. When
 * none does, the match was in the record a redirect= led to, and that
 * modifier is named instead.
 */
static void spf_matched_mechanism(SPF_request_t *req, SPF_dns_server_t *layer,
				  bool helo, SPF_response_t *resp, char *buf,
				  size_t size, const char **out)
{
	const char *top = spf_dns_top_record(layer), *p, *redirect = NULL;
	size_t n, rn = 0;

	*out = NULL;
	switch (SPF_response_reason(resp)) {
	case SPF_REASON_DEFAULT:
		*out = "default"; /* RFC 7208 9.1: no mechanism matched */
		return;
	case SPF_REASON_MECH:
		break;
	default:
		return;
	}
	*out = "mechanism"; /* libspf2's word, if nothing better is found */
	if (top == NULL)
		return;
	for (p = top + strcspn(top, " "); *p; p += n) {
		p += strspn(p, " ");
		n = strcspn(p, " ");
		if (n == 0)
			break;
		/* a modifier: name "=" before any ":" or "/" */
		if (strcspn(p, "=:/") < n && p[strcspn(p, "=:/")] == '=') {
			if (n > 9 && strncasecmp(p, "redirect=", 9) == 0) {
				redirect = p;
				rn = n;
			}
			continue;
		}
		if (spf_term_alone(req, layer, helo, p, n,
				   SPF_response_result(resp))) {
			snprintf(buf, size, "%.*s", (int)n, p);
			*out = buf;
			return;
		}
	}
	if (redirect != NULL) {
		snprintf(buf, size, "%.*s", (int)rn, redirect);
		*out = buf;
	}
}

/*
 * spf_query - check_host() as SPF_request_query_mailfrom() does it, but
 * without its free pass for loopback clients; *respp is set unless
 * memory ran out
 */
static void spf_query(SPF_request_t *req, bool helo, SPF_response_t **respp)
{
	SPF_record_t *record = NULL;
	SPF_response_t *resp;
	SPF_errcode_t err;

	*respp = resp = SPF_response_new(req);
	if (resp == NULL)
		return;
	req->use_helo = helo;
	req->cur_dom = helo ? req->helo_dom : req->env_from_dp;
	err = SPF_server_get_record(req->spf_server, req, resp, &record);
	if (err != SPF_E_SUCCESS) {
		SPF_result_t result = resp->result;

		if (record != NULL)
			SPF_record_free(record);
		/*
		 * libspf2 1.2.10 sets a result for "no record" and "several
		 * records" only; a DNS failure (our layer's TRY_AGAIN) and a
		 * record that does not compile come back without one.
		 */
		if (result == SPF_RESULT_INVALID)
			result = err == SPF_E_DNS_ERROR ? SPF_RESULT_TEMPERROR
							: SPF_RESULT_PERMERROR;
		SPF_i_done(resp, result, resp->reason, err);
		return;
	}
	resp->spf_record_exp = record;
	SPF_record_interpret(record, req, resp, 0);
	SPF_record_free(record);
}

/*
 * spf_last_error - the last error message of a response (the one that
 * ended the evaluation), or NULL
 */
static const char *spf_last_error(SPF_response_t *resp)
{
	for (int i = SPF_response_messages(resp) - 1; i >= 0; i--) {
		SPF_error_t *e = SPF_response_message(resp, i);

		if (e != NULL && SPF_error_errorp(e))
			return SPF_error_message(e);
	}
	return NULL;
}

_Static_assert(SPF_DNS_QUERY_TIMEOUT == PC_DNS_TIMEOUT &&
		       SPF_DNS_QUERY_ERROR == PC_DNS_ERROR &&
		       SPF_DNS_QUERY_WOULDBLOCK == PC_DNS_WOULDBLOCK,
	       "spf_dns.h and filter.h disagree");

/*
 * spf_evaluate - run check_host() for the client, fill tx; -1 when out of
 * memory, 1 when some answer was not in the cache of the event loop
 */
static int spf_evaluate(pc_ctx *ctx, const struct pc_ip *ip,
			struct spf_tx *tx)
{
	SPF_dns_server_t *layer = NULL;
	SPF_server_t *server = NULL;
	SPF_request_t *req = NULL;
	SPF_response_t *resp = NULL, *scratch = NULL;
	const char *text;
	int rc = -1;

	layer = spf_dns_new(pc_dns_query);
	if (layer == NULL)
		goto out;
	server = SPF_server_new_dns(layer, 0);
	if (server == NULL)
		goto out;
	/*
	 * An empty default explanation: libspf2's own points at a web site
	 * that is gone. Empty means "the domain gave none", and ours is used.
	 */
	if (SPF_server_set_explanation(server, "", &scratch) != SPF_E_SUCCESS)
		pc_log(ctx, PC_LOG_DEBUG, "libspf2 keeps its default explanation");
	if (scratch != NULL)
		SPF_response_free(scratch);
	SPF_server_set_sanitize(server, 1);
	if (SPF_server_set_rec_dom(server, tx->receiver) != SPF_E_SUCCESS)
		goto out;
	req = SPF_request_new(server);
	if (req == NULL)
		goto out;
	spf_dns_set_request(layer, req);
	if (ip->family == 4) {
		struct in_addr a;

		memcpy(&a, ip->addr, 4);
		SPF_request_set_ipv4(req, a);
	} else {
		struct in6_addr a;

		memcpy(&a, ip->addr, 16);
		SPF_request_set_ipv6(req, a);
	}
	/*
	 * The order matters to libspf2: a HELO set while no sender is set
	 * becomes the sender, and a null sender becomes postmaster@HELO
	 * (RFC 7208 2.4).
	 */
	if (tx->helo_identity) {
		if (SPF_request_set_helo_dom(req, tx->check_helo) != SPF_E_SUCCESS ||
		    SPF_request_set_env_from(req, "") != 0)
			goto out;
	} else {
		if (SPF_request_set_env_from(req, tx->check_from) != 0)
			goto out;
		if (tx->check_helo != NULL &&
		    SPF_request_set_helo_dom(req, tx->check_helo) != SPF_E_SUCCESS)
			goto out;
	}

	spf_query(req, tx->helo_identity, &resp);
	if (resp == NULL)
		goto out;
	if (spf_dns_voids_exceeded(layer)) {
		/* RFC 7208 4.6.4: evaluation ends at the third void lookup */
		SPF_response_add_error(resp, SPF_E_BIG_DNS,
				       "More than 2 void DNS lookups");
		SPF_i_done(resp, SPF_RESULT_PERMERROR, SPF_REASON_NONE,
			   SPF_E_BIG_DNS);
	}
	tx->result = spf_map_result(SPF_response_result(resp));
	if (spf_set(&tx->comment, SPF_response_get_header_comment(resp)) < 0)
		goto out;
	if (tx->result != SPF_TEMPERROR && tx->result != SPF_PERMERROR &&
	    tx->result != SPF_NONE) {
		char mech[SPF_TEXT_MAX + 1];
		const char *m;

		spf_matched_mechanism(req, layer, tx->helo_identity, resp, mech,
				      sizeof(mech), &m);
		if (spf_set(&tx->mechanism, m) < 0)
			goto out;
	}
	if (tx->result == SPF_TEMPERROR || tx->result == SPF_PERMERROR) {
		text = spf_last_error(resp);
		if (text == NULL)
			text = SPF_strerror(SPF_response_errcode(resp));
		if (spf_set(&tx->problem, text) < 0)
			goto out;
	}
	if (tx->result == SPF_FAIL || tx->result == SPF_SOFTFAIL ||
	    tx->result == SPF_NEUTRAL) {
		text = SPF_response_get_explanation(resp);
		if (text != NULL && *text != '\0') {
			if (spf_set(&tx->explanation, text) < 0)
				goto out;
		}
	}
	if (spf_dns_would_block(layer)) {
		/* some answer, of the check or of the matched-mechanism pass */
		rc = 1;
		goto out;
	}
	for (int i = 0; i < SPF_response_messages(resp); i++)
		pc_log(ctx, PC_LOG_DEBUG, "libspf2: %s",
		       SPF_error_message(SPF_response_message(resp, i)));
	rc = 0;
out:
	if (resp != NULL)
		SPF_response_free(resp);
	if (req != NULL)
		SPF_request_free(req);
	if (server != NULL)
		SPF_server_free(server);
	if (layer != NULL)
		SPF_dns_free(layer);
	return rc;
}

/*
 * spf_own_words - "SPF RESULT: " and the comment without the receiver in
 * front ("domain of example.com does not designate 192.0.2.1 as
 * permitted sender"): the reply text when the domain explains nothing
 */
static void spf_own_words(const struct spf_tx *tx, char *buf, size_t size)
{
	const char *c = tx->comment ? tx->comment : "";
	size_t rl = strlen(tx->receiver), len = 0;

	if (strncmp(c, tx->receiver, rl) == 0 && strncmp(c + rl, ": ", 2) == 0)
		c += rl + 2;
	buf[0] = '\0';
	buf_add(buf, size, &len, "SPF %s: %s", spf_result_names[tx->result], c);
}

/*
 * spf_default_explanation - ours, for a domain that gives none: what
 * the comment says, without the receiver in front
 */
static int spf_default_explanation(struct spf_tx *tx)
{
	char buf[SPF_TEXT_MAX + 1];

	spf_own_words(tx, buf, sizeof(buf));
	tx->explanation_local = true;
	return spf_set(&tx->explanation, buf);
}

/* spf_record - the decision record's fields */
static void spf_record(pc_ctx *ctx, const struct spf_tx *tx)
{
	pc_result(ctx, "spf", spf_result_names[tx->result]);
	pc_result(ctx, "identity", tx->helo_identity ? "helo" : "mailfrom");
	pc_result(ctx, "domain", tx->domain ? tx->domain : "");
	if (tx->mechanism)
		pc_result(ctx, "mechanism", tx->mechanism);
	if (tx->result == SPF_FAIL && tx->explanation) {
		pc_result(ctx, "explanation", tx->explanation);
		pc_result(ctx, "explanation_source",
			  tx->explanation_local ? "local" : "domain");
	}
	if (tx->problem)
		pc_result(ctx, "error", tx->problem);
}

/* spf_refuse - the reply of a result whose action is not accept */
static enum pc_status spf_refuse(pc_ctx *ctx, const struct spf_tx *tx,
				 enum spf_action action)
{
	bool perm = action == SPF_REJECT;
	bool error = tx->result == SPF_PERMERROR || tx->result == SPF_TEMPERROR;
	const char *enh = error ? (perm ? SPF_ERROR_ENH_5 : SPF_ERROR_ENH_4)
				: (perm ? SPF_FAILED_ENH_5 : SPF_FAILED_ENH_4);
	char text[SPF_TEXT_MAX + 64];
	size_t len = 0;

	text[0] = '\0';
	if (tx->explanation) {
		/* RFC 7208 6.2: the domain's explanation goes to the sender */
		buf_add(text, sizeof(text), &len, "%s", tx->explanation);
	} else {
		spf_own_words(tx, text, sizeof(text));
		len = strlen(text);
		if (tx->result == SPF_TEMPERROR)
			buf_add(text, sizeof(text), &len, "; try again later");
	}
	if (pc_set_reply(ctx, perm ? 550 : 451, enh, "%s", text) < 0 &&
	    pc_set_reply(ctx, perm ? 550 : 451, enh, "SPF %s",
			 spf_result_names[tx->result]) < 0)
		pc_log(ctx, PC_LOG_WARNING, "reply refused by the host");
	return perm ? PC_REJECT : PC_TEMPFAIL;
}

/* spf_mail - check the MAIL FROM (or HELO) identity and decide */
static enum pc_status spf_mail(pc_ctx *ctx)
{
	const struct spf_instance *si = pc_instance(ctx);
	const char *addr = pc_client_addr(ctx);
	const char *sender = pc_sender(ctx);
	const char *helo = pc_helo(ctx);
	const char *receiver;
	struct spf_tx *tx = NULL;
	struct pc_ip ip;
	char ipbuf[INET6_ADDRSTRLEN];
	enum spf_action action;

	spf_tx_free(pc_tx_data(ctx));
	pc_set_tx_data(ctx, NULL);
	if (si == NULL || sender == NULL) {
		pc_log(ctx, PC_LOG_ERROR, "no instance or no sender at mail");
		pc_set_reply(ctx, 451, "4.3.0", "Internal error");
		return PC_TEMPFAIL;
	}
	if (addr == NULL || pc_ip_parse(addr, strlen(addr), true, &ip) < 0) {
		/* a client without an IP address (a local socket) */
		pc_result(ctx, "spf", "skipped");
		pc_result(ctx, "reason", "no client address");
		return PC_CONTINUE;
	}
	if (pc_netlist_match(&si->trusted, addr)) {
		pc_result(ctx, "spf", "skipped");
		pc_result(ctx, "reason", "trusted");
		return PC_CONTINUE;
	}
	receiver = si->receiver ? si->receiver : pc_authserv_id(ctx);
	if (receiver == NULL || !spf_receiver_valid(receiver))
		receiver = "localhost";

	tx = calloc(1, sizeof(*tx));
	if (tx == NULL)
		goto oom;
	tx->helo_identity = *sender == '\0';
	inet_ntop(ip.family == 4 ? AF_INET : AF_INET6, ip.addr, ipbuf,
		  sizeof(ipbuf));
	if (spf_set(&tx->client_ip, ipbuf) < 0 ||
	    spf_set(&tx->sender, sender) < 0 || spf_set(&tx->helo, helo) < 0 ||
	    spf_set(&tx->receiver, receiver) < 0)
		goto oom;
	if (spf_identities(tx, sender, helo) < 0)
		goto oom;

	if (!spf_domain_checkable(tx->domain)) {
		/* RFC 7208 4.3: "none", without a DNS query */
		char c[SPF_TEXT_MAX + 1];
		size_t len = 0;

		tx->result = SPF_NONE;
		c[0] = '\0';
		buf_add(c, sizeof(c), &len, "%s: %s %s is not a domain SPF can check",
			tx->receiver, tx->helo_identity ? "HELO" : "sender domain",
			tx->domain && *tx->domain ? tx->domain : "(empty)");
		if (spf_set(&tx->comment, c) < 0)
			goto oom;
	} else {
		int rc = spf_evaluate(ctx, &ip, tx);

		if (rc < 0)
			goto oom;
		if (rc > 0) {
			/* on the event loop, without every answer cached */
			spf_tx_free(tx);
			return PC_WOULDBLOCK;
		}
	}
	if (tx->result == SPF_FAIL && !tx->explanation &&
	    spf_default_explanation(tx) < 0)
		goto oom;

	spf_record(ctx, tx);
	action = si->action[tx->result];
	pc_log(ctx, PC_LOG_INFO, "spf=%s identity=%s domain=%s client=%s: %s",
	       spf_result_names[tx->result],
	       tx->helo_identity ? "helo" : "mailfrom",
	       tx->domain ? tx->domain : "", tx->client_ip,
	       spf_action_names[action]);
	pc_set_tx_data(ctx, tx);
	if (action == SPF_ACCEPT)
		return PC_CONTINUE;
	return spf_refuse(ctx, tx, action);

oom:
	spf_tx_free(tx);
	pc_log(ctx, PC_LOG_ERROR, "out of memory");
	pc_set_reply(ctx, 451, "4.3.0", "Internal error");
	return PC_TEMPFAIL;
}

/* spf_received - the Received-SPF: value (RFC 7208 9.1) */
static void spf_received(const struct spf_tx *tx, char *buf, size_t size)
{
	size_t len = 0;

	buf[0] = '\0';
	buf_add(buf, size, &len, "%s", spf_result_names[tx->result]);
	if (tx->comment && *tx->comment) {
		buf_add(buf, size, &len, " (");
		buf_comment(buf, size, &len, tx->comment);
		buf_add(buf, size, &len, ")");
	}
	buf_add(buf, size, &len, " client-ip=");
	buf_value(buf, size, &len, tx->client_ip);
	if (!tx->helo_identity && strlen(tx->sender) <= SPF_VALUE_MAX) {
		buf_add(buf, size, &len, "; envelope-from=");
		buf_value(buf, size, &len, tx->sender);
	}
	if (tx->helo && strlen(tx->helo) <= SPF_VALUE_MAX) {
		buf_add(buf, size, &len, "; helo=");
		buf_value(buf, size, &len, tx->helo);
	}
	buf_add(buf, size, &len, "; receiver=");
	buf_value(buf, size, &len, tx->receiver);
	buf_add(buf, size, &len, "; identity=%s",
		tx->helo_identity ? "helo" : "mailfrom");
	if (tx->mechanism) {
		buf_add(buf, size, &len, "; mechanism=");
		buf_value(buf, size, &len, tx->mechanism);
	}
	if (tx->problem) {
		buf_add(buf, size, &len, "; problem=");
		buf_value(buf, size, &len, tx->problem);
	}
}

/* spf_auth_results - the Authentication-Results: value (RFC 8601) */
static void spf_auth_results(pc_ctx *ctx, const struct spf_tx *tx, char *buf,
			     size_t size)
{
	const char *authserv = pc_authserv_id(ctx);
	size_t len = 0;

	buf[0] = '\0';
	buf_add(buf, size, &len, "%s; spf=%s", authserv ? authserv : "localhost",
		spf_result_names[tx->result]);
	/* RFC 8601 2.7.2: the domain checked, as smtp.mailfrom or smtp.helo */
	if (tx->domain && *tx->domain && strlen(tx->domain) <= SPF_VALUE_MAX) {
		buf_add(buf, size, &len, " smtp.%s=",
			tx->helo_identity ? "helo" : "mailfrom");
		buf_value(buf, size, &len, tx->domain);
	}
}

/* spf_data - stamp the message with what MAIL found */
static enum pc_status spf_data(pc_ctx *ctx)
{
	const struct spf_tx *tx = pc_tx_data(ctx);
	char buf[1024];

	if (tx == NULL)
		return PC_CONTINUE; /* skipped (trusted), or MAIL not ours */
	/* inserted in this order, Received-SPF: ends up on top */
	spf_auth_results(ctx, tx, buf, sizeof(buf));
	if (pc_header_insert(ctx, "Authentication-Results", buf) < 0)
		pc_log(ctx, PC_LOG_WARNING, "could not add Authentication-Results");
	spf_received(tx, buf, sizeof(buf));
	if (pc_header_insert(ctx, "Received-SPF", buf) < 0)
		pc_log(ctx, PC_LOG_WARNING, "could not add Received-SPF");
	return PC_CONTINUE;
}

/* spf_reset - the transaction ended: free what MAIL kept */
static void spf_reset(pc_ctx *ctx)
{
	spf_tx_free(pc_tx_data(ctx));
	pc_set_tx_data(ctx, NULL);
}

const struct pc_filter portcullis_filter = {
	PC_FILTER_HEADER,
	.name = "spf",
	.description = "Sender Policy Framework (RFC 7208) check of the MAIL "
		       "FROM or HELO identity, with libspf2",
	.options = spf_options,
	.init = spf_init,
	.fini = spf_fini,
	.mail = spf_mail,
	.data = spf_data,
	.reset = spf_reset,
	/*
	 * Only mail asks DNS, and it runs on the event loop while the cache
	 * has every answer (PC_WOULDBLOCK otherwise); data writes what mail
	 * found, reset frees it.
	 */
	.nonblocking = PC_HOOK_MAIL | PC_HOOK_DATA | PC_HOOK_RESET,
};
