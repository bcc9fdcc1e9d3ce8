/*
 * pc_domain.h - domain names in the one form the filters compare
 *
 * A domain reaches the filters in many spellings: "Example.ORG.",
 * "bücher.example", "BÜCHER.example", "xn--bcher-kva.example", the same
 * with a fullwidth full stop (U+FF0E) or an ideographic one (U+3002) for
 * a dot, with fullwidth letters, or in decomposed (NFD) Unicode. Every
 * comparison a filter makes (the relay filter's local domains and a
 * recipient's domain, the SPF identity's domain, DKIM's d= and the
 * author domain of From:) goes through pc_domain_normalize(), so that
 * two spellings of one domain are never judged differently.
 *
 * The normal form is what IDNA2008 with the UTS #46 mapping
 * (nontransitional, NFC input; libidn2's idn2_lookup_u8) gives: ASCII,
 * lower case, every label that is not plain ASCII as its A-label
 * ("xn--" + Punycode), no trailing dot. Each label is 1 to 63 bytes of
 * letters, digits, hyphens and underscores, no hyphen first or last and
 * none in both the third and fourth places unless it is an A-label
 * (RFC 5890 2.3.1: "ab--" labels are reserved); the whole is at most
 * PC_DOMAIN_MAX bytes.
 *
 * Underscores: IDNA has none, but DNS names do (_dmarc.example,
 * _spf.example, hosts that Windows administrators named), and libidn2
 * leaves them alone as long as the STD3 rules are off. An underscore
 * label has only one spelling besides its case, so it is kept, lower
 * cased; a caller that wants RFC 5321 host names only refuses it after.
 * An A-label that is not what libidn2 makes of its own U-label (bad
 * Punycode, a disallowed or upper-case code point) is refused: no
 * U-label spelling could ever equal it, and a backend would refuse it.
 *
 * Pure code, reentrant: no globals (libidn2 keeps none either).
 */
#ifndef PC_DOMAIN_H
#define PC_DOMAIN_H

#include <stddef.h>

/* The daemon exports its symbols to filters: keep these inside each .so. */
#pragma GCC visibility push(hidden)

/* RFC 1035 2.3.4 and RFC 5321 4.5.3.1.2: a label, and a domain. */
#define PC_LABEL_MAX 63
#define PC_DOMAIN_MAX 255

/* A buffer that holds any normalised domain and its NUL. */
#define PC_DOMAIN_BUF (PC_DOMAIN_MAX + 1)

/*
 * The longest spelling read: four bytes of UTF-8 for each byte of the
 * normal form. It bounds the work of one call.
 */
#define PC_DOMAIN_INPUT_MAX (4 * PC_DOMAIN_MAX)

/*
 * pc_domain_normalize - the normal form of the domain in[0..len) into
 * out (outsize bytes; PC_DOMAIN_BUF is always enough). Returns the
 * length written, or -1 when in is not a domain (bad UTF-8, a NUL or a
 * control character, a label IDNA refuses, too long) or out is too small.
 * A normal form normalises to itself.
 */
int pc_domain_normalize(const char *in, size_t len, char *out,
			size_t outsize);

#pragma GCC visibility pop

#endif
