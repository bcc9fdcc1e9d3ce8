/*
 * dkim_from.c - the author domains of a From: field
 *
 * From: holds a mailbox-list (RFC 5322 3.6.2, 3.4): mailboxes separated
 * by commas, each a bare addr-spec or a display name with an angle
 * address, with comments and quoted strings anywhere, and now and then a
 * group ("name: a@b, c@d;") from a sender that should not write one.
 * What matters to the require policy is the domain a reader sees, so the
 * reading is lenient rather than strict: a mailbox that is not quite
 * RFC 5322 still gives the domain after its last '@', because a mail
 * reader would show it, and refusing to read it would let a forger slip
 * past the policy with a broken From.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "dkim_from.h"

/* One mailbox being read: the text outside brackets, and the address. */
struct from_mailbox {
	char *bare;	/* outside comments and <>: an addr-spec, or a name */
	size_t nbare;
	char *angle;	/* inside the last <...> */
	size_t nangle;
	bool has_angle;
};

/* from_domain - the domain of one mailbox, normalised; false when none */
static bool from_domain(const char *addr, size_t len, char *out)
{
	const char *at = NULL, *end = addr + len;

	for (const char *p = addr; p < end; p++)
		if (*p == '@')
			at = p;
	if (!at)
		return false;
	at++;
	/* the white space and stray brackets a reader would not show */
	while (at < end && (*at == ' ' || *at == '\t'))
		at++;
	while (end > at && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '>'))
		end--;
	if (end == at)
		return false;
	return pc_domain_normalize(at, (size_t)(end - at), out,
				      PC_DOMAIN_BUF) >= 0;
}

/* from_finish - the mailbox is read: store its domain, start the next */
static void from_finish(struct from_mailbox *m, char (*out)[PC_DOMAIN_BUF],
			size_t max, size_t *n, size_t *bad)
{
	const char *addr = m->has_angle ? m->angle : m->bare;
	size_t len = m->has_angle ? m->nangle : m->nbare;
	size_t blank = 0;

	while (blank < len && (addr[blank] == ' ' || addr[blank] == '\t'))
		blank++;
	if (blank < len || m->has_angle) {
		/* an empty item (",," or a group's end) is not a mailbox */
		if (*n < max && from_domain(addr, len, out[*n]))
			(*n)++;
		else
			(*bad)++;
	}
	m->nbare = m->nangle = 0;
	m->has_angle = false;
}

/* pcdkim_from_domains - the domains of the mailboxes of a From value */
size_t pcdkim_from_domains(const char *value, char (*out)[PC_DOMAIN_BUF],
			   size_t max, size_t *bad)
{
	size_t len = strlen(value), n = 0, nbad = 0;
	struct from_mailbox m = { 0 };
	unsigned depth = 0; /* comment nesting */
	bool quoted = false, in_angle = false;

	m.bare = malloc(len + 1);
	m.angle = malloc(len + 1);
	if (!m.bare || !m.angle) {
		free(m.bare);
		free(m.angle);
		if (bad)
			*bad = 1;
		return 0;
	}
	for (size_t i = 0; i < len; i++) {
		char c = value[i];
		char *buf = in_angle ? m.angle : m.bare;
		size_t *nbuf = in_angle ? &m.nangle : &m.nbare;

		if (quoted) {
			/* kept: a quoted local part may hold '@' */
			buf[(*nbuf)++] = c;
			if (c == '\\' && i + 1 < len)
				buf[(*nbuf)++] = value[++i];
			else if (c == '"')
				quoted = false;
			continue;
		}
		if (depth > 0) {
			if (c == '\\' && i + 1 < len)
				i++;
			else if (c == '(')
				depth++;
			else if (c == ')')
				depth--;
			continue;
		}
		if (c == '(') {
			depth = 1;
			buf[(*nbuf)++] = ' '; /* a comment separates like space */
			continue;
		}
		if (c == '"') {
			quoted = true;
			buf[(*nbuf)++] = c;
			continue;
		}
		if (in_angle) {
			if (c == '>')
				in_angle = false;
			else
				m.angle[m.nangle++] = c;
			continue;
		}
		switch (c) {
		case '<':
			/* the last angle address of a mailbox is the one shown */
			in_angle = true;
			m.has_angle = true;
			m.nangle = 0;
			break;
		case ',':
		case ';':
			from_finish(&m, out, max, &n, &nbad);
			break;
		case ':':
			/* a group's display name ends here; its members follow */
			m.nbare = 0;
			break;
		default:
			m.bare[m.nbare++] = c;
		}
	}
	from_finish(&m, out, max, &n, &nbad);
	free(m.bare);
	free(m.angle);
	if (bad)
		*bad = nbad;
	return n;
}
