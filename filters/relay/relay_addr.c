/*
 * relay_addr.c - recipient, domain and network logic of the relay filter
 *
 * See relay_addr.h for the interface. The classification is written
 * against what a backend MTA may do with an address it accepts, not only
 * against RFC 5321: Postfix and sendmail rewrite user%host@local to
 * user@host (allow_percent_hack, on by default) and host!user@local to
 * user@host (swap_bangpath), and older MTAs still obey source routes. A
 * relay guard that read such an address as "local" would hand an open
 * relay to anyone, so whatever may route elsewhere is REMOTE, and
 * whatever cannot be parsed is INVALID; only a clean address in a local
 * domain is LOCAL.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pc_list.h"
#include "relay_addr.h"

/* relay_class_name - "local", "remote" or "invalid" */
const char *relay_class_name(enum relay_class cls)
{
	switch (cls) {
	case RELAY_LOCAL:
		return "local";
	case RELAY_REMOTE:
		return "remote";
	case RELAY_INVALID:
		return "invalid";
	}
	return "invalid";
}

/* lower - ASCII lower case; other bytes as they are */
static unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* is_atext - RFC 5322 atext, the characters of a dot-string atom */
static bool is_atext(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return true;
	return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* ascii_ieq - whether s[0..len) equals the ASCII word w, ignoring case */
static bool ascii_ieq(const char *s, size_t len, const char *w)
{
	size_t i;

	if (strlen(w) != len)
		return false;
	for (i = 0; i < len; i++)
		if (lower((unsigned char)s[i]) != lower((unsigned char)w[i]))
			return false;
	return true;
}

/*
 * utf8_decode - one UTF-8 sequence at s[0..len): its length, or 0 when it
 * is not well-formed (overlong forms, surrogates and values past U+10FFFF
 * are refused, so one code point has one spelling)
 */
static size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
	uint32_t v, min;
	size_t n, i;

	if (len == 0)
		return 0;
	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	} else if ((s[0] & 0xe0) == 0xc0) {
		n = 2, v = s[0] & 0x1f, min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3, v = s[0] & 0x0f, min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4, v = s[0] & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return n;
}

/* utf8_valid - whether s[0..len) is well-formed UTF-8 */
static bool utf8_valid(const unsigned char *s, size_t len)
{
	size_t i = 0, n;
	uint32_t cp;

	while (i < len) {
		n = utf8_decode(s + i, len - i, &cp);
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/* ---------------------------------------------------------------- */
/* Domains and address literals */

/* relay_literal_parse - "[192.0.2.1]", "[IPv6:...]" or a bare address */
int relay_literal_parse(const char *in, size_t len, bool brackets_optional,
			struct pc_ip *out)
{
	bool v6tag = false;

	if (in == NULL || len == 0)
		return -1;
	if (in[0] == '[') {
		if (len < 3 || in[len - 1] != ']')
			return -1;
		in++;
		len -= 2;
		/* RFC 5321 4.1.3: IPv6 literals carry the tag "IPv6:" */
		if (len > 5 && ascii_ieq(in, 5, "IPv6:")) {
			in += 5;
			len -= 5;
			v6tag = true;
		}
	} else if (!brackets_optional) {
		return -1;
	} else {
		v6tag = memchr(in, ':', len) != NULL;
	}
	/*
	 * The tag must say what the address is: an IPv6 address has a
	 * colon (even ::ffff:192.0.2.1, which is read as IPv4 below), an
	 * IPv4 one has none
	 */
	if ((memchr(in, ':', len) != NULL) != v6tag)
		return -1;
	return pc_ip_parse(in, len, false, out);
}

/* relay_domain_normalize - the normal form of a mail domain */
int relay_domain_normalize(const char *in, size_t len, char *out,
			   size_t outsize)
{
	int n = pc_domain_normalize(in, len, out, outsize);

	/*
	 * RFC 5321 4.1.2: a mail domain is letters, digits and hyphens;
	 * the underscores of DNS names are no host a backend delivers to
	 */
	if (n < 0 || memchr(out, '_', (size_t)n) != NULL)
		return -1;
	return n;
}

/* relay_domains_init - an empty set */
void relay_domains_init(struct relay_domains *d)
{
	memset(d, 0, sizeof(*d));
}

/* push_string - append a copy of s to the array *v of *n strings */
static int push_string(char ***v, size_t *n, const char *s)
{
	char **nv = realloc(*v, (*n + 1) * sizeof(**v));

	if (nv == NULL)
		return -1;
	*v = nv;
	nv[*n] = strdup(s);
	if (nv[*n] == NULL)
		return -1;
	(*n)++;
	return 0;
}

/* push_ip - append ip to the literals of d */
static int push_ip(struct relay_domains *d, const struct pc_ip *ip)
{
	struct pc_ip *nv;

	nv = realloc(d->literals, (d->nliterals + 1) * sizeof(*nv));
	if (nv == NULL)
		return -1;
	d->literals = nv;
	nv[d->nliterals++] = *ip;
	return 0;
}

/* relay_domains_add - one entry */
int relay_domains_add(struct relay_domains *d, const char *entry,
		      char *err, size_t errsize)
{
	char norm[PC_DOMAIN_BUF];
	const char *name = entry;
	bool parent = false;
	struct pc_ip ip;
	size_t len;

	if (entry == NULL || *entry == '\0') {
		snprintf(err, errsize, "empty domain");
		return -1;
	}
	len = strlen(entry);
	if (entry[0] == '[') {
		if (relay_literal_parse(entry, len, false, &ip) < 0) {
			snprintf(err, errsize,
				 "bad address literal \"%.300s\"", entry);
			return -1;
		}
		if (push_ip(d, &ip) < 0)
			goto nomem;
		return 0;
	}
	if (entry[0] == '.') {
		parent = true;
		name = entry + 1;
	} else if (entry[0] == '*' && entry[1] == '.') {
		parent = true;
		name = entry + 2;
	}
	if (relay_domain_normalize(name, strlen(name), norm, sizeof(norm)) < 0) {
		snprintf(err, errsize, "bad domain \"%.300s\"", entry);
		return -1;
	}
	if (push_string(parent ? &d->parents : &d->exact,
			parent ? &d->nparents : &d->nexact, norm) < 0)
		goto nomem;
	return 0;
nomem:
	snprintf(err, errsize, "out of memory");
	return -1;
}

/* relay_domains_add_list - several entries */
int relay_domains_add_list(struct relay_domains *d, const char *list,
			   char *err, size_t errsize)
{
	char tok[PC_DOMAIN_INPUT_MAX + 8];
	const char *p = list, *item;
	size_t n;

	while (pc_list_next(&p, &item, &n)) {
		if (n >= sizeof(tok)) {
			snprintf(err, errsize, "domain too long: \"%.40s...\"",
				 item);
			return -1;
		}
		memcpy(tok, item, n);
		tok[n] = '\0';
		if (relay_domains_add(d, tok, err, errsize) < 0)
			return -1;
	}
	return 0;
}

/* relay_domains_add_address - a local address, bracketed or not */
int relay_domains_add_address(struct relay_domains *d, const char *addr,
			      char *err, size_t errsize)
{
	struct pc_ip ip;

	if (addr == NULL ||
	    relay_literal_parse(addr, strlen(addr), true, &ip) < 0) {
		snprintf(err, errsize, "bad address \"%.300s\"",
			 addr ? addr : "");
		return -1;
	}
	if (push_ip(d, &ip) < 0) {
		snprintf(err, errsize, "out of memory");
		return -1;
	}
	return 0;
}

/* compare_strings - qsort/bsearch order of char * elements */
static int compare_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* relay_domains_finish - sort for lookups */
void relay_domains_finish(struct relay_domains *d)
{
	if (d->nexact > 1)
		qsort(d->exact, d->nexact, sizeof(*d->exact), compare_strings);
	if (d->nparents > 1)
		qsort(d->parents, d->nparents, sizeof(*d->parents),
		      compare_strings);
	d->finished = true;
}

/* relay_domains_count - how many entries of every kind */
size_t relay_domains_count(const struct relay_domains *d)
{
	return d->nexact + d->nparents + d->nliterals;
}

/* find_string - whether s is in the sorted array v[0..n) */
static bool find_string(char *const *v, size_t n, const char *s)
{
	if (n == 0)
		return false;
	return bsearch(&s, v, n, sizeof(*v), compare_strings) != NULL;
}

/* relay_domains_match - exact entry, or strict sub-domain of a parent */
bool relay_domains_match(const struct relay_domains *d, const char *domain)
{
	const char *p;

	if (!d->finished || domain == NULL || *domain == '\0')
		return false;
	if (find_string(d->exact, d->nexact, domain))
		return true;
	/*
	 * Only whole labels count: "evil-local.org" is no sub-domain of
	 * local.org, and "local.org.evil.com" is one of evil.com.
	 */
	for (p = strchr(domain, '.'); p != NULL; p = strchr(p + 1, '.'))
		if (find_string(d->parents, d->nparents, p + 1))
			return true;
	return false;
}

/* relay_domains_match_ip - whether an address literal is local */
bool relay_domains_match_ip(const struct relay_domains *d,
			    const struct pc_ip *ip)
{
	size_t i;

	for (i = 0; i < d->nliterals; i++)
		if (pc_ip_equal(&d->literals[i], ip))
			return true;
	return false;
}

/* relay_domains_free - release the set */
void relay_domains_free(struct relay_domains *d)
{
	size_t i;

	for (i = 0; i < d->nexact; i++)
		free(d->exact[i]);
	for (i = 0; i < d->nparents; i++)
		free(d->parents[i]);
	free(d->exact);
	free(d->parents);
	free(d->literals);
	relay_domains_init(d);
}

/* ---------------------------------------------------------------- */
/* Recipients */

/*
 * dot_string_ok - RFC 5321 Dot-string with RFC 6531 UTF-8: atoms of
 * atext (or well-formed UTF-8) joined by single dots
 */
static bool dot_string_ok(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, atom = 0, n;
	uint32_t cp;

	if (len == 0)
		return false;
	while (i < len) {
		if (u[i] == '.') {
			if (atom == 0)
				return false;
			atom = 0;
			i++;
		} else if (u[i] >= 0x80) {
			n = utf8_decode(u + i, len - i, &cp);
			if (n == 0)
				return false;
			atom++;
			i += n;
		} else if (is_atext(u[i])) {
			atom++;
			i++;
		} else {
			return false;
		}
	}
	return atom > 0;
}

/*
 * quoted_end - the index just past the Quoted-string that opens s, or 0
 * when it does not close; its content, unquoted, goes to content (which
 * has room for len bytes)
 */
static size_t quoted_end(const char *s, size_t len, char *content,
			 size_t *clen)
{
	size_t i;

	*clen = 0;
	for (i = 1; i < len; i++) {
		if (s[i] == '"')
			return i + 1;
		if (s[i] == '\\') {
			if (++i >= len)
				return 0;
		}
		content[(*clen)++] = s[i];
	}
	return 0;
}

/* classify - relay_classify() with a bound on percent-hack rewrites */
static enum relay_class classify(const struct relay_policy *policy,
				 const char *rcpt, size_t len, int depth,
				 const char **reason)
{
	char content[RELAY_PATH_MAX + 1];
	char norm[PC_DOMAIN_BUF];
	const char *local, *domain, *at;
	size_t llen, dlen, clen = 0, qend, i;
	bool quoted = rcpt[0] == '"', dlocal;
	struct pc_ip ip;

	if (len == 0) {
		*reason = "empty address";
		return RELAY_INVALID;
	}
	if (len > RELAY_PATH_MAX) {
		*reason = "address too long";
		return RELAY_INVALID;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)rcpt[i];

		if (c < 0x20 || c == 0x7f) {
			*reason = "control character";
			return RELAY_INVALID;
		}
	}
	/*
	 * RFC 5321 4.1.1.3 and appendix C: "@relay:user@elsewhere" asks the
	 * first host to pass the mail on. The host strips a route before
	 * filters see the path, but a second one may hide behind it.
	 */
	if (rcpt[0] == '@') {
		if (memchr(rcpt, ':', len) != NULL) {
			*reason = "source route";
			return RELAY_REMOTE;
		}
		*reason = "empty local part";
		return RELAY_INVALID;
	}

	/* split: a quoted local part ends at its closing quote, any other
	 * at the last '@' (a domain never holds one) */
	local = rcpt;
	if (quoted) {
		qend = quoted_end(rcpt, len, content, &clen);
		if (qend == 0) {
			*reason = "unbalanced quotes";
			return RELAY_INVALID;
		}
		llen = qend;
		if (qend < len && rcpt[qend] != '@') {
			*reason = "bad local part";
			return RELAY_INVALID;
		}
		at = qend < len ? rcpt + qend : NULL;
	} else {
		at = NULL;
		for (i = len; i > 0; i--)
			if (rcpt[i - 1] == '@') {
				at = rcpt + i - 1;
				break;
			}
		llen = at ? (size_t)(at - rcpt) : len;
	}

	if (at == NULL) {
		/* RFC 5321 4.5.1: <Postmaster> is always local */
		if (!quoted && ascii_ieq(rcpt, len, "postmaster")) {
			*reason = "postmaster";
			return RELAY_LOCAL;
		}
		if (!quoted && memchr(rcpt, '!', len) != NULL) {
			*reason = "bang path";
			return RELAY_REMOTE;
		}
		*reason = "no domain";
		return RELAY_INVALID;
	}
	domain = at + 1;
	dlen = len - (size_t)(domain - rcpt);

	if (memchr(domain, '@', dlen) != NULL) {
		/* "quoted"@a@b: never mind which one a backend would use */
		*reason = "several @";
		return RELAY_REMOTE;
	}
	if (dlen == 0) {
		*reason = "empty domain";
		return RELAY_INVALID;
	}

	if (domain[0] == '[') {
		if (relay_literal_parse(domain, dlen, false, &ip) < 0) {
			*reason = "bad address literal";
			return RELAY_INVALID;
		}
		dlocal = relay_domains_match_ip(policy->domains, &ip);
	} else {
		if (relay_domain_normalize(domain, dlen, norm, sizeof(norm)) < 0) {
			*reason = "bad domain";
			return RELAY_INVALID;
		}
		dlocal = relay_domains_match(policy->domains, norm);
	}

	if (quoted) {
		/*
		 * "user@elsewhere"@local: a backend that unquotes before it
		 * routes sends it elsewhere. A plain quoted local part
		 * ("john smith") is fine.
		 */
		if (memchr(content, '@', clen) || memchr(content, '%', clen) ||
		    memchr(content, '!', clen)) {
			*reason = "quoted local part";
			return RELAY_REMOTE;
		}
		/* "" is a valid Quoted-string but names no mailbox */
		if (clen == 0) {
			*reason = "empty local part";
			return RELAY_INVALID;
		}
		if (!utf8_valid((const unsigned char *)content, clen)) {
			*reason = "bad local part";
			return RELAY_INVALID;
		}
	} else {
		if (memchr(local, '@', llen) != NULL) {
			*reason = "several @";
			return RELAY_REMOTE;
		}
		if (memchr(local, '!', llen) != NULL) {
			*reason = "bang path";
			return RELAY_REMOTE;
		}
		if (!dot_string_ok(local, llen)) {
			*reason = "bad local part";
			return RELAY_INVALID;
		}
	}
	if (llen > RELAY_LOCAL_PART_MAX) {
		*reason = "local part too long";
		return RELAY_INVALID;
	}

	if (!quoted && memchr(local, '%', llen) != NULL) {
		const char *pct = NULL;
		char rewritten[RELAY_PATH_MAX + 1];

		if (!policy->allow_percent_hack) {
			*reason = "percent hack";
			return RELAY_REMOTE;
		}
		if (!dlocal) {
			*reason = "remote domain";
			return RELAY_REMOTE;
		}
		/*
		 * Allowed: judge it as the backend will deliver it. Postfix
		 * turns the rightmost '%' into '@' and drops the local domain;
		 * each round removes one '%', so depth is bounded by len.
		 */
		for (i = llen; i > 0; i--)
			if (local[i - 1] == '%') {
				pct = local + i - 1;
				break;
			}
		if (depth > RELAY_LOCAL_PART_MAX || pct == NULL) {
			*reason = "percent hack";
			return RELAY_REMOTE;
		}
		memcpy(rewritten, local, llen);
		rewritten[pct - local] = '@';
		rewritten[llen] = '\0';
		return classify(policy, rewritten, llen, depth + 1, reason);
	}

	*reason = dlocal ? (domain[0] == '[' ? "local address literal"
					     : "local domain")
			 : (domain[0] == '[' ? "remote address literal"
					     : "remote domain");
	return dlocal ? RELAY_LOCAL : RELAY_REMOTE;
}

/* relay_classify - what the recipient is to this site */
enum relay_class relay_classify(const struct relay_policy *policy,
				const char *rcpt, const char **reason)
{
	const char *why = "empty address";
	enum relay_class cls;

	if (rcpt == NULL || policy == NULL || policy->domains == NULL) {
		cls = RELAY_INVALID;
	} else {
		size_t len = strnlen(rcpt, RELAY_PATH_MAX + 1);

		cls = classify(policy, rcpt, len, 0, &why);
	}
	if (reason != NULL)
		*reason = why;
	return cls;
}
