/*
 * spf_syntax.c - the RFC 7208 grammar of an SPF record, checked strictly
 *
 * See spf_syntax.h. The rules below follow the ABNF of RFC 7208 section
 * 12 rule by rule; where a term could be read two ways (a "/" is both a
 * macro-literal and the start of a CIDR length), the reading is the one
 * the RFC's examples use: a CIDR length is the suffix of an "a" or "mx"
 * term, and a domain-spec never ends in one (its domain-end is a top
 * label or a macro).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "spf_syntax.h"

#define SPF_VERSION_TAG "v=spf1"

/* ABNF core rules (RFC 5234 B.1), ASCII only. */
static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
	return is_alpha(c) || is_digit(c);
}

/* lower - ASCII lower case */
static char lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* in_set - whether c (not NUL) is one of set */
static bool in_set(char c, const char *set)
{
	return c != '\0' && strchr(set, c) != NULL;
}

/* word_is - whether s[0..n) is the name w, ignoring case (RFC 7208 4.6.1) */
static bool word_is(const char *s, size_t n, const char *w)
{
	return strlen(w) == n && strncasecmp(s, w, n) == 0;
}

/* set_err - a message for the caller */
__attribute__((format(printf, 3, 4)))
static int set_err(char *err, size_t errsize, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errsize, fmt, ap);
	va_end(ap);
	return -1;
}

/*
 * macro_expand_len - the length of the macro-expand at s[0..n), 0 when
 * there is none:
 *	macro-expand = ( "%{" macro-letter transformers *delimiter "}" )
 *		       / "%%" / "%_" / "%-"
 *	transformers = *DIGIT [ "r" ]
 * "c", "r" and "t" only where explanation letters are allowed (7.1), and
 * a DIGIT transformer MUST be nonzero (7.1)
 */
static size_t macro_expand_len(const char *s, size_t n, bool exp_letters)
{
	size_t i = 2, digits = 0;
	unsigned long value = 0;
	char letter;

	if (n < 2 || s[0] != '%')
		return 0;
	if (s[1] == '%' || s[1] == '_' || s[1] == '-')
		return 2;
	if (s[1] != '{' || n < 4)
		return 0;
	letter = lower(s[i++]);
	if (!in_set(letter, "slodiphv") && !(exp_letters && in_set(letter, "crt")))
		return 0;
	while (i < n && is_digit(s[i])) {
		if (value < 1000)
			value = value * 10 + (unsigned long)(s[i] - '0');
		digits++;
		i++;
	}
	if (digits > 0 && value == 0)
		return 0;
	if (i < n && lower(s[i]) == 'r')
		i++;
	while (i < n && in_set(s[i], ".-+,/_="))
		i++;
	return (i < n && s[i] == '}') ? i + 1 : 0;
}

/*
 * macro_string_check - whether s[0..n) is a macro-string (macro-literal
 * is %x21-24 / %x26-7E); *ends_in_macro tells whether its last element
 * is a macro-expand
 */
static bool macro_string_check(const char *s, size_t n, bool exp_letters,
			       bool *ends_in_macro)
{
	size_t i = 0;

	*ends_in_macro = false;
	while (i < n) {
		if (s[i] == '%') {
			size_t m = macro_expand_len(s + i, n - i, exp_letters);

			if (m == 0)
				return false;
			i += m;
			*ends_in_macro = true;
		} else if (s[i] >= 0x21 && s[i] <= 0x7e) {
			i++;
			*ends_in_macro = false;
		} else {
			return false;
		}
	}
	return true;
}

/*
 * toplabel_check - toplabel = ( *alphanum ALPHA *alphanum ) /
 * ( 1*alphanum "-" *( alphanum / "-" ) alphanum ): letters, digits and
 * inner hyphens, not all digits
 */
static bool toplabel_check(const char *s, size_t n)
{
	bool alpha = false, hyphen = false;

	if (n == 0 || !is_alnum(s[0]) || !is_alnum(s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '-')
			hyphen = true;
		else if (is_alpha(s[i]))
			alpha = true;
		else if (!is_digit(s[i]))
			return false;
	}
	return alpha || hyphen;
}

/*
 * domain_spec_check - domain-spec = macro-string domain-end, where
 * domain-end = ( "." toplabel [ "." ] ) / macro-expand
 */
static bool domain_spec_check(const char *s, size_t n)
{
	bool ends_in_macro;
	const char *dot;
	size_t end = n;

	if (n == 0 || !macro_string_check(s, n, false, &ends_in_macro))
		return false;
	if (ends_in_macro)
		return true;
	if (s[end - 1] == '.')
		end--;
	for (dot = s + end; dot > s && dot[-1] != '.';)
		dot--;
	if (dot == s)
		return false; /* no "." toplabel */
	dot--;
	return toplabel_check(dot + 1, (size_t)(s + end - (dot + 1)));
}

/*
 * cidr_check - "/" ("0" / %x31-39 *DIGIT) with a value up to max, as the
 * whole of s[0..n)
 */
static bool cidr_check(const char *s, size_t n, unsigned max)
{
	unsigned v = 0;

	if (n < 2 || n > 4 || s[0] != '/')
		return false;
	if (s[1] == '0')
		return n == 2;
	for (size_t i = 1; i < n; i++) {
		if (!is_digit(s[i]))
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	return v <= max;
}

/* digits_suffix - where the run of digits that ends s[0..n) begins */
static size_t digits_suffix(const char *s, size_t n)
{
	while (n > 0 && is_digit(s[n - 1]))
		n--;
	return n;
}

/* A dual-cidr-length as read: -1 where a length is absent. */
struct dual_cidr {
	int v4, v6;
};

/* cidr_value - the value of a checked "/DIGITS" */
static int cidr_value(const char *s, size_t n)
{
	int v = 0;

	for (size_t i = 1; i < n; i++)
		v = v * 10 + (s[i] - '0');
	return v;
}

/*
 * strip_dual_cidr - dual-cidr-length = [ ip4-cidr-length ] [ "/"
 * ip6-cidr-length ] at the end of s[0..*n); *n becomes what is before
 * it. false when a CIDR length is there but malformed.
 */
static bool strip_dual_cidr(const char *s, size_t *n, struct dual_cidr *c)
{
	size_t d = digits_suffix(s, *n);

	c->v4 = c->v6 = -1;
	if (d < *n && d >= 2 && s[d - 1] == '/' && s[d - 2] == '/') {
		if (!cidr_check(s + d - 1, *n - d + 1, 128))
			return false;
		c->v6 = cidr_value(s + d - 1, *n - d + 1);
		*n = d - 2;
		d = digits_suffix(s, *n);
	}
	if (d < *n && d >= 1 && s[d - 1] == '/' && (d < 2 || s[d - 2] != '/')) {
		if (!cidr_check(s + d - 1, *n - d + 1, 32))
			return false;
		c->v4 = cidr_value(s + d - 1, *n - d + 1);
		*n = d - 1;
	}
	return true;
}

/* qnum_check - qnum: 0 to 255 without leading zeros */
static bool qnum_check(const char *s, size_t n)
{
	unsigned v = 0;

	if (n == 0 || n > 3 || (n > 1 && s[0] == '0'))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]))
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	return v <= 255;
}

/* ip4_network_check - qnum "." qnum "." qnum "." qnum */
static bool ip4_network_check(const char *s, size_t n)
{
	size_t start = 0, parts = 0;

	for (size_t i = 0; i <= n; i++) {
		if (i < n && s[i] != '.')
			continue;
		if (!qnum_check(s + start, i - start))
			return false;
		parts++;
		start = i + 1;
	}
	return parts == 4;
}

/* ip6_network_check - an address as RFC 4291 2.2 writes it */
static bool ip6_network_check(const char *s, size_t n)
{
	char buf[INET6_ADDRSTRLEN + 1];
	struct in6_addr a;

	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return inet_pton(AF_INET6, buf, &a) == 1;
}

/* The parts of a record that matter to the checks between terms. */
struct record_state {
	bool has_all;
	int redirects, exps;
	unsigned lookups; /* terms that cause DNS lookups (RFC 7208 4.6.4) */
};

/* The kinds of a term, for the normalized record. */
enum term_kind { TERM_MECHANISM, TERM_REDIRECT, TERM_EXP, TERM_UNKNOWN_MODIFIER };

/*
 * modifier_check - name "=" value: redirect, exp or an unknown
 * modifier; -1 after set_err()
 */
static int modifier_check(const char *t, size_t n, size_t eq,
			  struct record_state *st, enum term_kind *kind,
			  char *err, size_t errsize)
{
	const char *v = t + eq + 1;
	size_t vn = n - eq - 1;
	bool ends_in_macro;

	if (word_is(t, eq, "redirect") || word_is(t, eq, "exp")) {
		bool redirect = word_is(t, eq, "redirect");

		if (!domain_spec_check(v, vn))
			return set_err(err, errsize, "bad domain-spec in \"%.*s\"",
				       (int)n, t);
		/* RFC 7208 6: each at most once */
		if ((redirect ? ++st->redirects : ++st->exps) > 1)
			return set_err(err, errsize, "a second %.*s= modifier",
				       (int)eq, t);
		*kind = redirect ? TERM_REDIRECT : TERM_EXP;
		return 0; /* a redirect is counted if it stays (has_all) */
	}
	if (!macro_string_check(v, vn, true, &ends_in_macro))
		return set_err(err, errsize, "bad macro-string in \"%.*s\"",
			       (int)n, t);
	*kind = TERM_UNKNOWN_MODIFIER;
	return 0;
}

/* directive_check - [ qualifier ] mechanism; -1 after set_err() */
static int directive_check(const char *t, size_t n, struct record_state *st,
			   char *err, size_t errsize)
{
	const char *m = t, *r;
	size_t mn = n, name = 0, rn;

	if (in_set(m[0], "+-?~")) {
		m++;
		mn--;
	}
	while (name < mn && is_alnum(m[name]))
		name++;
	r = m + name;
	rn = mn - name;

	if (word_is(m, name, "all")) {
		if (rn != 0)
			goto bad;
		st->has_all = true;
		return 0;
	}
	if (word_is(m, name, "include") || word_is(m, name, "exists")) {
		if (rn < 2 || r[0] != ':' || !domain_spec_check(r + 1, rn - 1))
			goto bad;
		st->lookups++;
		return 0;
	}
	if (word_is(m, name, "a") || word_is(m, name, "mx")) {
		struct dual_cidr c;

		if (!strip_dual_cidr(r, &rn, &c))
			goto bad;
		if (rn != 0 && (rn < 2 || r[0] != ':' ||
				!domain_spec_check(r + 1, rn - 1)))
			goto bad;
		st->lookups++;
		return 0;
	}
	if (word_is(m, name, "ptr")) {
		if (rn != 0 && (rn < 2 || r[0] != ':' ||
				!domain_spec_check(r + 1, rn - 1)))
			goto bad;
		st->lookups++;
		return 0;
	}
	if (word_is(m, name, "ip4") || word_is(m, name, "ip6")) {
		bool v4 = word_is(m, name, "ip4");
		const char *slash;
		size_t an;

		if (rn < 2 || r[0] != ':')
			goto bad;
		slash = memchr(r, '/', rn);
		an = slash ? (size_t)(slash - r) - 1 : rn - 1;
		if (v4 ? !ip4_network_check(r + 1, an) : !ip6_network_check(r + 1, an))
			goto bad;
		if (slash && !cidr_check(slash, (size_t)(r + rn - slash), v4 ? 32 : 128))
			goto bad;
		return 0;
	}
	return set_err(err, errsize, "unknown mechanism in \"%.*s\"", (int)n, t);
bad:
	return set_err(err, errsize, "bad %.*s mechanism \"%.*s\"", (int)name, m,
		       (int)n, t);
}

/* out_add - append s[0..n) to out; false when out is full */
static bool out_add(char *out, size_t outsize, size_t *o, const char *s, size_t n)
{
	if (*o + n + 1 > outsize)
		return false;
	memcpy(out + *o, s, n);
	*o += n;
	out[*o] = '\0';
	return true;
}

/*
 * mechanism_write - append a checked mechanism (after a space) in a form
 * libspf2 1.2 evaluates as RFC 7208 does. It refuses a CIDR length of 0,
 * which RFC 7208 allows (5.6: ip4:192.0.2.0/0 matches every IPv4
 * client); what can be said in other words is:
 *	ip4:N/0		ip4:0.0.0.0/1 ip4:128.0.0.0/1	(the same set)
 *	ip6:N/0		ip6:::/1 ip6:8000::/1
 *	a:D/0		exists:D	for an IPv4 client: any A record
 *	a:D/L//0, mx...	without the length of the other family
 * (a client is IPv4 or IPv6, and only its family's length counts, 5.3,
 * 5.4). "a" or "mx" with a 0 length for the client's own family that
 * exists: cannot say (mx/0, and //0 for IPv6) stay as they are.
 */
static bool mechanism_write(const char *t, size_t n, int family, char *out,
			    size_t outsize, size_t *o)
{
	size_t qn = in_set(t[0], "+-?~") ? 1 : 0, name = 0, rn;
	const char *m = t + qn, *r;
	struct dual_cidr c;
	bool mx;

	while (name < n - qn && is_alnum(m[name]))
		name++;
	r = m + name;
	rn = n - qn - name;
	if ((word_is(m, name, "ip4") || word_is(m, name, "ip6")) && rn >= 3 &&
	    r[rn - 2] == '/' && r[rn - 1] == '0') {
		bool v4 = word_is(m, name, "ip4");
		const char *lo = v4 ? "ip4:0.0.0.0/1" : "ip6:::/1";
		const char *hi = v4 ? "ip4:128.0.0.0/1" : "ip6:8000::/1";

		return out_add(out, outsize, o, " ", 1) &&
		       out_add(out, outsize, o, t, qn) &&
		       out_add(out, outsize, o, lo, strlen(lo)) &&
		       out_add(out, outsize, o, " ", 1) &&
		       out_add(out, outsize, o, t, qn) &&
		       out_add(out, outsize, o, hi, strlen(hi));
	}
	mx = word_is(m, name, "mx");
	if ((mx || word_is(m, name, "a")) && (family == 4 || family == 6) &&
	    strip_dual_cidr(r, &rn, &c) && (c.v4 == 0 || c.v6 == 0)) {
		int own = family == 4 ? c.v4 : c.v6;
		char len[8];

		if (own == 0 && (mx || family == 6))
			return out_add(out, outsize, o, " ", 1) &&
			       out_add(out, outsize, o, t, n);
		if (!out_add(out, outsize, o, " ", 1) ||
		    !out_add(out, outsize, o, t, qn))
			return false;
		if (own == 0) /* a/0, IPv4 */
			return out_add(out, outsize, o, "exists", 6) &&
			       (rn > 0 ? out_add(out, outsize, o, r, rn)
				       : out_add(out, outsize, o, ":%{d}", 5));
		if (!out_add(out, outsize, o, m, name) ||
		    !out_add(out, outsize, o, r, rn))
			return false;
		if (own < 0)
			return true;
		snprintf(len, sizeof(len), family == 4 ? "/%d" : "//%d", own);
		return out_add(out, outsize, o, len, strlen(len));
	}
	return out_add(out, outsize, o, " ", 1) && out_add(out, outsize, o, t, n);
}

/* term_check - a directive or a modifier; -1 after set_err() */
static int term_check(const char *t, size_t n, struct record_state *st,
		      enum term_kind *kind, char *err, size_t errsize)
{
	size_t i = 0;

	for (size_t k = 0; k < n; k++)
		if (t[k] < 0x21 || t[k] > 0x7e)
			return set_err(err, errsize,
				       "a character that is not printable ASCII "
				       "in \"%.*s\"", (int)n, t);
	/* modifier: name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) "=" */
	if (is_alpha(t[0])) {
		i = 1;
		while (i < n && (is_alnum(t[i]) || in_set(t[i], "-_.")))
			i++;
		if (i < n && t[i] == '=')
			return modifier_check(t, n, i, st, kind, err, errsize);
	}
	*kind = TERM_MECHANISM;
	return directive_check(t, n, st, err, errsize);
}

/* spf_record_select - an SPF version 1 record? */
int spf_record_select(const char *txt)
{
	size_t n = strlen(SPF_VERSION_TAG);

	return strncasecmp(txt, SPF_VERSION_TAG, n) == 0 &&
	       (txt[n] == ' ' || txt[n] == '\0');
}

/* spf_record_check - check and normalize a record */
int spf_record_check(const char *record, int family, char *out,
		     size_t outsize, unsigned *lookups, char *err,
		     size_t errsize)
{
	struct { const char *t; size_t n; enum term_kind kind; } terms[256];
	size_t nterms = 0, o;
	struct record_state st = { false, 0, 0, 0 };
	const char *p;

	if (!spf_record_select(record))
		return set_err(err, errsize, "not an SPF version 1 record");
	p = record + strlen(SPF_VERSION_TAG);
	/* terms = *( 1*SP ( directive / modifier ) ), then *SP */
	for (;;) {
		size_t n;

		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		n = strcspn(p, " ");
		if (nterms == sizeof(terms) / sizeof(terms[0]))
			return set_err(err, errsize, "too many terms");
		terms[nterms].t = p;
		terms[nterms].n = n;
		if (term_check(p, n, &st, &terms[nterms].kind, err, errsize) < 0)
			return -1;
		nterms++;
		p += n;
	}

	if (outsize < strlen(SPF_VERSION_TAG) + 1)
		return set_err(err, errsize, "no room");
	strcpy(out, SPF_VERSION_TAG);
	o = strlen(out);
	for (size_t i = 0; i < nterms; i++) {
		/* RFC 7208 6: unknown modifiers are ignored; 6.1: so is a
		 * redirect beside an "all" mechanism */
		if (terms[i].kind == TERM_UNKNOWN_MODIFIER ||
		    (terms[i].kind == TERM_REDIRECT && st.has_all))
			continue;
		if (terms[i].kind == TERM_MECHANISM
			    ? !mechanism_write(terms[i].t, terms[i].n, family, out,
					       outsize, &o)
			    : !(out_add(out, outsize, &o, " ", 1) &&
				out_add(out, outsize, &o, terms[i].t, terms[i].n)))
			return set_err(err, errsize, "no room");
	}
	if (st.redirects > 0 && !st.has_all)
		st.lookups++;
	*lookups = st.lookups;
	return 0;
}
