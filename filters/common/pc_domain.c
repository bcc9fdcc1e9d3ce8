/*
 * pc_domain.c - domain names in the one form the filters compare
 *
 * See pc_domain.h. libidn2 does IDNA2008 with the whole UTS #46 mapping
 * (case folding, NFC, compatibility forms, the full stops), which no
 * hand-written table kept up. Plain ASCII names, the common case on the
 * event loop, take a short path that gives what libidn2 would: UTS #46
 * maps ASCII by lower-casing it and nothing else, and the label checks
 * after the mapping are the same for both paths.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <idn2.h>

#include "pc_domain.h"

/*
 * The libidn2 flags: UTS #46 nontransitional processing, as IDNA2008
 * registries and browsers do (ß and ς stay themselves), with NFC of the
 * input. No IDN2_USE_STD3_ASCII_RULES, which would refuse underscores;
 * the label check below refuses what STD3 would besides.
 */
#define PC_IDN2_FLAGS (IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL)

/* lower - ASCII lower case; other bytes as they are */
static char lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* is_label_char - letter, digit, hyphen or underscore (lower case) */
static bool is_label_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
	       c == '_';
}

/*
 * needs_idna - whether s[0..len) has a byte beyond ASCII or a label that
 * starts "xn--" (in any case): those go through libidn2, which checks an
 * A-label too
 */
static bool needs_idna(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)s[i] >= 0x80)
			return true;
		if ((i == 0 || s[i - 1] == '.') && i + 4 <= len &&
		    lower(s[i]) == 'x' && lower(s[i + 1]) == 'n' &&
		    s[i + 2] == '-' && s[i + 3] == '-')
			return true;
	}
	return false;
}

/* label_ok - whether the lower-cased label s[0..n) may be compared */
static bool label_ok(const char *s, size_t n)
{
	if (n == 0 || n > PC_LABEL_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_label_char(s[i]))
			return false;
	if (s[0] == '-' || s[n - 1] == '-')
		return false;
	/* RFC 5890 2.3.1: only "xn--" may take the two hyphens */
	if (n >= 4 && s[2] == '-' && s[3] == '-' &&
	    !(s[0] == 'x' && s[1] == 'n'))
		return false;
	return true;
}

/*
 * ascii_finish - the ASCII name s[0..len) lower-cased into out, one
 * trailing dot dropped, every label checked; its length, or -1
 */
static int ascii_finish(const char *s, size_t len, char *out, size_t outsize)
{
	size_t start = 0;

	if (len > 0 && s[len - 1] == '.')
		len--;
	if (len == 0 || len > PC_DOMAIN_MAX || len >= outsize)
		return -1;
	for (size_t i = 0; i < len; i++)
		out[i] = lower(s[i]);
	out[len] = '\0';
	for (size_t i = 0; i <= len; i++) {
		if (i < len && out[i] != '.')
			continue;
		if (!label_ok(out + start, i - start))
			return -1;
		start = i + 1;
	}
	return (int)len;
}

/*
 * a_labels_round_trip - whether the A-labels of the normal form out are
 * what libidn2 makes of their own U-labels. idn2_lookup_u8() passes an
 * A-label through once its Punycode decodes, even when the U-label is one
 * that UTS #46 maps to something else ("xn--bsher" decodes to
 * parenthesized numbers, mapped to "(3)(11)(5)"): such a label names no
 * domain, and two spellings must never be judged apart.
 */
static bool a_labels_round_trip(const char *out)
{
	char *u = NULL;
	uint8_t *back = NULL;
	bool ok = false;

	if (!needs_idna(out, strlen(out)))
		return true;
	if (idn2_to_unicode_8z8z(out, &u, 0) == IDN2_OK && u != NULL &&
	    idn2_lookup_u8((const uint8_t *)u, &back, PC_IDN2_FLAGS) == IDN2_OK &&
	    back != NULL)
		ok = strcasecmp((const char *)back, out) == 0;
	idn2_free(u);
	idn2_free(back);
	return ok;
}

/* pc_domain_normalize - the normal form of a domain */
int pc_domain_normalize(const char *in, size_t len, char *out,
			size_t outsize)
{
	char buf[PC_DOMAIN_INPUT_MAX + 1];
	uint8_t *mapped = NULL;
	int n;

	if (in == NULL || out == NULL || outsize == 0 || len == 0 ||
	    len > PC_DOMAIN_INPUT_MAX)
		return -1;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)in[i] < 0x20 || in[i] == 0x7f)
			return -1;
	if (!needs_idna(in, len))
		return ascii_finish(in, len, out, outsize);
	memcpy(buf, in, len);
	buf[len] = '\0';
	/* a bad UTF-8 sequence is IDN2_ENCODING_ERROR, not a guess */
	if (idn2_lookup_u8((const uint8_t *)buf, &mapped, PC_IDN2_FLAGS) !=
	    IDN2_OK)
		return -1;
	n = ascii_finish((const char *)mapped, strlen((const char *)mapped),
			 out, outsize);
	idn2_free(mapped);
	if (n >= 0 && !a_labels_round_trip(out))
		return -1;
	return n;
}
