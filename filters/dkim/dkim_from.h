/*
 * dkim_from.h - the author domains of a From: field
 *
 * pcdkim_from_domains() reads the value of a From: field (RFC 5322 3.6.2:
 * a mailbox-list) the way a mail reader shows it, and gives the domain of
 * each mailbox in the form pc_domain_normalize() gives (lower case,
 * A-labels), so that it compares with a d= tag or a configured domain.
 * Pure code: no I/O, no globals, reentrant.
 */
#ifndef PCDKIM_FROM_H
#define PCDKIM_FROM_H

#include <stddef.h>

#include "pc_domain.h"

/* The daemon exports its symbols to filters: keep these inside dkim.so. */
#pragma GCC visibility push(hidden)

/*
 * pcdkim_from_domains - the domains of the mailboxes of the From value,
 * at most max of them into out (each PC_DOMAIN_BUF bytes). Display
 * names, comments, quoted strings and groups are skipped; in a mailbox
 * with an angle address the last one counts, as a reader shows it.
 * Returns how many domains were written; *bad (when not NULL) gets the
 * number of mailboxes whose domain could not be read (none, an address
 * literal, a malformed name) or that did not fit.
 */
size_t pcdkim_from_domains(const char *value, char (*out)[PC_DOMAIN_BUF],
			   size_t max, size_t *bad);

#pragma GCC visibility pop

#endif
