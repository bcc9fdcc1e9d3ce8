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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay_addr.h"

/* RFC 3492 section 5: the Punycode parameters of IDNA. */
#define PUNY_BASE 36
#define PUNY_TMIN 1
#define PUNY_TMAX 26
#define PUNY_SKEW 38
#define PUNY_DAMP 700
#define PUNY_INITIAL_BIAS 72
#define PUNY_INITIAL_N 128

/* RFC 1035 2.3.4: a label is at most 63 octets. */
#define LABEL_MAX 63

/* The separators of option lists: "a, b c". */
#define LIST_SEPARATORS ", \t\r\n"

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

/* is_ldh - letter, digit or hyphen: the ASCII of a host name label */
static bool is_ldh(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '-';
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
/* Addresses and networks */

/*
 * ip_from_mapped - an IPv4-mapped IPv6 address (::ffff:a.b.c.d) becomes
 * the IPv4 address: a dual-stack socket reports IPv4 clients that way,
 * and they must meet the IPv4 networks an administrator wrote
 */
static void ip_from_mapped(struct relay_ip *ip)
{
	static const unsigned char prefix[12] = {0, 0, 0, 0, 0, 0,
						 0, 0, 0, 0, 0xff, 0xff};

	if (ip->family == 6 && memcmp(ip->addr, prefix, 12) == 0) {
		memmove(ip->addr, ip->addr + 12, 4);
		memset(ip->addr + 4, 0, 12);
		ip->family = 4;
	}
}

/* parse_ip - a numeric address in s[0..len) without zone or mapping */
static int parse_ip(const char *s, size_t len, struct relay_ip *out)
{
	char buf[INET6_ADDRSTRLEN + 1];

	memset(out, 0, sizeof(*out));
	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	/* inet_pton() takes exactly dotted quads (no octal, no short forms) */
	if (inet_pton(AF_INET, buf, out->addr) == 1) {
		out->family = 4;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, out->addr) == 1) {
		out->family = 6;
		return 0;
	}
	return -1;
}

/* relay_ip_parse - a numeric address; mapped IPv4 becomes IPv4 */
int relay_ip_parse(const char *text, bool allow_zone, struct relay_ip *out)
{
	size_t len;
	const char *pct;

	if (text == NULL)
		return -1;
	len = strlen(text);
	pct = memchr(text, '%', len);
	if (pct != NULL) {
		if (!allow_zone || memchr(text, ':', len) == NULL)
			return -1;
		len = (size_t)(pct - text);
	}
	if (parse_ip(text, len, out) < 0)
		return -1;
	ip_from_mapped(out);
	return 0;
}

/* relay_ip_equal - whether two parsed addresses are the same */
bool relay_ip_equal(const struct relay_ip *a, const struct relay_ip *b)
{
	size_t n = a->family == 4 ? 4 : 16;

	return a->family == b->family && memcmp(a->addr, b->addr, n) == 0;
}

/* relay_cidr_parse - "net/prefix", "[v6]/prefix" or a host address */
int relay_cidr_parse(const char *text, struct relay_cidr *out)
{
	const char *slash, *addr = text, *end;
	size_t len, alen, i;
	unsigned prefix = 0, max, bits;
	struct relay_ip ip;

	memset(out, 0, sizeof(*out));
	if (text == NULL || *text == '\0')
		return -1;
	len = strlen(text);
	slash = memchr(text, '/', len);
	end = slash ? slash : text + len;
	alen = (size_t)(end - addr);
	/* Postfix writes IPv6 networks as [2001:db8::]/32; accept both. */
	if (alen >= 2 && addr[0] == '[' && addr[alen - 1] == ']') {
		addr++;
		alen -= 2;
		if (memchr(addr, ':', alen) == NULL)
			return -1;
	}
	if (parse_ip(addr, alen, &ip) < 0)
		return -1;
	max = ip.family == 4 ? 32 : 128;
	if (slash != NULL) {
		const char *p = slash + 1;

		if (*p == '\0' || strlen(p) > 3)
			return -1;
		for (; *p; p++) {
			if (*p < '0' || *p > '9')
				return -1;
			prefix = prefix * 10 + (unsigned)(*p - '0');
		}
		if (prefix > max)
			return -1;
	} else {
		prefix = max;
	}
	/* no host bits past the prefix */
	for (i = 0; i < max / 8; i++) {
		bits = prefix > i * 8 ? prefix - (unsigned)i * 8 : 0;
		if (bits >= 8)
			continue;
		if (ip.addr[i] & (0xffu >> bits))
			return -1;
	}
	/* ::ffff:10.0.0.0/104 is the IPv4 network 10.0.0.0/8 */
	if (ip.family == 6 && prefix >= 96) {
		struct relay_ip v4 = ip;

		ip_from_mapped(&v4);
		if (v4.family == 4) {
			ip = v4;
			prefix -= 96;
		}
	}
	out->net = ip;
	out->prefix = prefix;
	return 0;
}

/* relay_cidr_match - whether ip is inside net */
bool relay_cidr_match(const struct relay_cidr *net, const struct relay_ip *ip)
{
	unsigned full = net->prefix / 8, rest = net->prefix % 8;
	unsigned char mask;

	if (net->net.family != ip->family)
		return false;
	if (memcmp(net->net.addr, ip->addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	mask = (unsigned char)(0xff00u >> rest);
	return (net->net.addr[full] & mask) == (ip->addr[full] & mask);
}

/* relay_netlist_parse - a list of networks */
int relay_netlist_parse(const char *list, struct relay_netlist *out,
			char *err, size_t errsize)
{
	const char *p = list;
	size_t n;
	char tok[128];
	struct relay_cidr *nets;

	memset(out, 0, sizeof(*out));
	while (p != NULL && *p) {
		p += strspn(p, LIST_SEPARATORS);
		n = strcspn(p, LIST_SEPARATORS);
		if (n == 0)
			break;
		if (n >= sizeof(tok)) {
			snprintf(err, errsize, "bad network \"%.40s...\"", p);
			goto fail;
		}
		memcpy(tok, p, n);
		tok[n] = '\0';
		p += n;
		nets = realloc(out->nets, (out->count + 1) * sizeof(*nets));
		if (nets == NULL) {
			snprintf(err, errsize, "out of memory");
			goto fail;
		}
		out->nets = nets;
		if (relay_cidr_parse(tok, &out->nets[out->count]) < 0) {
			snprintf(err, errsize,
				 "bad network \"%s\" (expected address/prefix "
				 "with no host bits set, e.g. 192.0.2.0/24 or "
				 "2001:db8::/32)",
				 tok);
			goto fail;
		}
		out->count++;
	}
	return 0;
fail:
	relay_netlist_free(out);
	return -1;
}

/* relay_netlist_match - whether the client address is in the list */
bool relay_netlist_match(const struct relay_netlist *list, const char *addr)
{
	struct relay_ip ip;
	size_t i;

	if (relay_ip_parse(addr, true, &ip) < 0)
		return false;
	for (i = 0; i < list->count; i++)
		if (relay_cidr_match(&list->nets[i], &ip))
			return true;
	return false;
}

/* relay_netlist_free - release the networks */
void relay_netlist_free(struct relay_netlist *list)
{
	free(list->nets);
	list->nets = NULL;
	list->count = 0;
}

/* ---------------------------------------------------------------- */
/* Punycode and domains */

/* puny_digit - the basic code point of digit d (0..35): a-z, 0-9 */
static char puny_digit(uint32_t d)
{
	return (char)(d < 26 ? 'a' + d : '0' + (d - 26));
}

/* puny_adapt - RFC 3492 6.1: the bias after a delta */
static uint32_t puny_adapt(uint32_t delta, uint32_t numpoints, bool first)
{
	uint32_t k = 0;

	delta = first ? delta / PUNY_DAMP : delta / 2;
	delta += delta / numpoints;
	while (delta > ((PUNY_BASE - PUNY_TMIN) * PUNY_TMAX) / 2) {
		delta /= PUNY_BASE - PUNY_TMIN;
		k += PUNY_BASE;
	}
	return k + (PUNY_BASE - PUNY_TMIN + 1) * delta / (delta + PUNY_SKEW);
}

/* relay_punycode_encode - RFC 3492 6.3 */
int relay_punycode_encode(const uint32_t *cp, size_t n, char *out,
			  size_t outsize)
{
	uint32_t cur = PUNY_INITIAL_N, delta = 0, bias = PUNY_INITIAL_BIAS;
	uint32_t h, b, m, q, k, t;
	size_t j, o = 0;

	if (n > UINT32_MAX / 2 || outsize == 0)
		return -1;
	for (j = 0; j < n; j++) {
		if (cp[j] > 0x10ffff)
			return -1;
		if (cp[j] < 0x80) {
			if (o + 1 >= outsize)
				return -1;
			out[o++] = (char)cp[j];
		}
	}
	h = b = (uint32_t)o;
	if (b > 0) {
		if (o + 1 >= outsize)
			return -1;
		out[o++] = '-';
	}
	while (h < n) {
		m = UINT32_MAX;
		for (j = 0; j < n; j++)
			if (cp[j] >= cur && cp[j] < m)
				m = cp[j];
		if (m - cur > (UINT32_MAX - delta) / (h + 1))
			return -1;
		delta += (m - cur) * (h + 1);
		cur = m;
		for (j = 0; j < n; j++) {
			if (cp[j] < cur && ++delta == 0)
				return -1;
			if (cp[j] != cur)
				continue;
			q = delta;
			for (k = PUNY_BASE;; k += PUNY_BASE) {
				t = k <= bias ? PUNY_TMIN
				    : k >= bias + PUNY_TMAX ? PUNY_TMAX
							    : k - bias;
				if (q < t)
					break;
				if (o + 1 >= outsize)
					return -1;
				out[o++] = puny_digit(t + (q - t) % (PUNY_BASE - t));
				q = (q - t) / (PUNY_BASE - t);
			}
			if (o + 1 >= outsize)
				return -1;
			out[o++] = puny_digit(q);
			bias = puny_adapt(delta, h + 1, h == b);
			delta = 0;
			h++;
		}
		delta++;
		cur++;
	}
	out[o] = '\0';
	return (int)o;
}

/* is_ideographic_stop - the full stops IDNA reads as '.' (UTS #46) */
static bool is_ideographic_stop(uint32_t cp)
{
	return cp == 0x3002 || cp == 0xff0e || cp == 0xff61;
}

/*
 * label_append - the label cp[0..n) in its A-label form at out[o..);
 * returns the new o, or -1 when the label is invalid or too long
 */
static int label_append(const uint32_t *cp, size_t n, char *out, size_t o,
			size_t outsize)
{
	char puny[LABEL_MAX + 2];
	bool ascii = true;
	size_t j, plen;
	int r;

	if (n == 0 || n > LABEL_MAX)
		return -1;
	for (j = 0; j < n; j++) {
		if (cp[j] >= 0x80) {
			/* C1 controls and noncharacters are no letters */
			if (cp[j] < 0xa0 || cp[j] == 0xfffe || cp[j] == 0xffff)
				return -1;
			ascii = false;
		} else if (!is_ldh((unsigned char)cp[j])) {
			return -1;
		}
	}
	if (cp[0] == '-' || cp[n - 1] == '-')
		return -1;
	if (ascii) {
		if (o + n >= outsize)
			return -1;
		for (j = 0; j < n; j++)
			out[o++] = (char)lower((unsigned char)cp[j]);
		return (int)o;
	}
	{
		uint32_t low[LABEL_MAX];

		for (j = 0; j < n; j++)
			low[j] = cp[j] < 0x80 ? lower((unsigned char)cp[j]) : cp[j];
		r = relay_punycode_encode(low, n, puny, sizeof(puny));
	}
	if (r < 0 || (size_t)r + 4 > LABEL_MAX)
		return -1;
	plen = (size_t)r;
	if (o + 4 + plen >= outsize)
		return -1;
	memcpy(out + o, "xn--", 4);
	memcpy(out + o + 4, puny, plen);
	return (int)(o + 4 + plen);
}

/* relay_domain_normalize - the comparable form of a domain */
int relay_domain_normalize(const char *in, size_t len, char *out,
			   size_t outsize)
{
	/* a label of more than 63 code points is too long in any form */
	uint32_t label[LABEL_MAX + 1];
	const unsigned char *s = (const unsigned char *)in;
	size_t i = 0, n = 0, step;
	uint32_t cp;
	int o = 0;
	bool end;

	if (in == NULL || len == 0 || outsize == 0)
		return -1;
	/* "local.org." is the fully qualified local.org */
	if (s[len - 1] == '.')
		len--;
	else if (len >= 3 && utf8_decode(s + len - 3, 3, &cp) == 3 &&
		 is_ideographic_stop(cp))
		len -= 3;
	if (len == 0 || len > 4 * RELAY_DOMAIN_MAX)
		return -1;
	for (;;) {
		end = i >= len;
		if (!end) {
			step = utf8_decode(s + i, len - i, &cp);
			if (step == 0)
				return -1;
			i += step;
		}
		if (end || cp == '.' || is_ideographic_stop(cp)) {
			if (o > 0) {
				if ((size_t)o + 1 >= outsize)
					return -1;
				out[o++] = '.';
			}
			o = label_append(label, n, out, (size_t)o, outsize);
			if (o < 0)
				return -1;
			n = 0;
			if (end)
				break;
			continue;
		}
		if (n >= LABEL_MAX)
			return -1;
		label[n++] = cp;
	}
	if (o > RELAY_DOMAIN_MAX)
		return -1;
	out[o] = '\0';
	return o;
}

/* relay_literal_parse - "[192.0.2.1]", "[IPv6:...]" or a bare address */
int relay_literal_parse(const char *in, size_t len, bool brackets_optional,
			struct relay_ip *out)
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
	if (parse_ip(in, len, out) < 0)
		return -1;
	if ((out->family == 6) != v6tag)
		return -1;
	ip_from_mapped(out);
	return 0;
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
static int push_ip(struct relay_domains *d, const struct relay_ip *ip)
{
	struct relay_ip *nv;

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
	char norm[RELAY_DOMAIN_BUF];
	const char *name = entry;
	bool parent = false;
	struct relay_ip ip;
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
	char tok[4 * RELAY_DOMAIN_MAX + 8];
	const char *p = list;
	size_t n;

	while (p != NULL && *p) {
		p += strspn(p, LIST_SEPARATORS);
		n = strcspn(p, LIST_SEPARATORS);
		if (n == 0)
			break;
		if (n >= sizeof(tok)) {
			snprintf(err, errsize, "domain too long: \"%.40s...\"",
				 p);
			return -1;
		}
		memcpy(tok, p, n);
		tok[n] = '\0';
		p += n;
		if (relay_domains_add(d, tok, err, errsize) < 0)
			return -1;
	}
	return 0;
}

/* relay_domains_add_address - a local address, bracketed or not */
int relay_domains_add_address(struct relay_domains *d, const char *addr,
			      char *err, size_t errsize)
{
	struct relay_ip ip;

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
			    const struct relay_ip *ip)
{
	size_t i;

	for (i = 0; i < d->nliterals; i++)
		if (relay_ip_equal(&d->literals[i], ip))
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
	char norm[RELAY_DOMAIN_BUF];
	const char *local, *domain, *at;
	size_t llen, dlen, clen = 0, qend, i;
	bool quoted = rcpt[0] == '"', dlocal;
	struct relay_ip ip;

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
