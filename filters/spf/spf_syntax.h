/*
 * spf_syntax.h - the RFC 7208 grammar of an SPF record, checked strictly
 *
 * libspf2 1.2 compiles records leniently in some places (a domain-spec
 * without a valid top label, "%{c}" outside an explanation, a second
 * redirect=, a CIDR length with a leading zero, a tab between terms) and
 * strictly in others (a modifier name with a dot), so a record's fate
 * could depend on the library's reading of it instead of the RFC's. The
 * DNS layer (spf_dns.c) hands every record through spf_record_check()
 * first:
 *
 * - a record that does not match the ABNF of RFC 7208 section 12 (with
 *   the rules of 4.6.1 and 7.1: case-insensitive names, "c", "r" and "t"
 *   macros in explanations only, at most one redirect= and one exp=) is
 *   a syntax error: check_host() gives "permerror" (RFC 7208 4.6);
 * - a valid record is handed to libspf2 normalized as RFC 7208 says to
 *   read it: unknown modifiers dropped (section 6: they MUST be
 *   ignored), redirect= dropped when the record has an "all" mechanism
 *   (6.1: it MUST be ignored then), terms separated by one space, and
 *   the CIDR lengths of 0 that libspf2 refuses written in other words
 *   where the client's address family allows (spf_syntax.c).
 *
 * Pure code: no I/O, no libspf2, no globals; reentrant.
 */
#ifndef SPF_SYNTAX_H
#define SPF_SYNTAX_H

#include <stddef.h>

#pragma GCC visibility push(hidden)

/*
 * spf_record_check - check record (beginning "v=spf1", as selected by RFC
 * 7208 4.5) for a client of address family 4 or 6 (0: unknown); 0 with
 * the normalized record in out (outsize bytes; four times the record's
 * length and 64 bytes more are always enough) and in *lookups the number
 * of its terms that cause DNS lookups (include, a, mx, ptr, exists and a
 * redirect that stays: RFC 7208 4.6.4), or -1 with what is wrong in err
 * (errsize bytes)
 */
int spf_record_check(const char *record, int family, char *out,
		     size_t outsize, unsigned *lookups, char *err,
		     size_t errsize);

/*
 * spf_record_select - whether a TXT string is an SPF version 1 record
 * (RFC 7208 4.5: "v=spf1", case-insensitive, then a space or the end)
 */
int spf_record_select(const char *txt);

#pragma GCC visibility pop

#endif
