/*
 * message.c - parse and rewrite the header block of a message
 *
 * The parser follows RFC 5322 2.2: a field is "name:" then a value that
 * continues on lines starting with white space. The header ends at the
 * first empty line; a line that is neither a field nor a continuation
 * (no colon, or a space in the name) ends it too, and belongs to the
 * body, as Postfix's cleanup treats it. The raw bytes of each field are
 * kept so an unchanged header is sent unchanged.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "message.h"

/* message_grow - room for one more field */
static int message_grow(struct message_headers *h)
{
	if (h->n < h->cap)
		return 0;
	size_t cap = h->cap ? h->cap * 2 : 32;
	struct message_field *f = realloc(h->fields, cap * sizeof(*f));
	if (!f)
		return -1;
	h->fields = f;
	h->cap = cap;
	return 0;
}

/*
 * message_unfold - the value without CRLFs and without leading white space;
 * NULs go too: the value is a C string, and cut at a NUL it would hide
 * the rest of the field from filters while the backend gets all of it
 */
static char *message_unfold(const char *v, size_t len)
{
	char *out = malloc(len + 1);
	size_t n = 0;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0')
			continue;
		/* Leading white space runs over folds: "Subject:" CRLF TAB "text". */
		if (n == 0 && (v[i] == ' ' || v[i] == '\t'))
			continue;
		out[n++] = v[i];
	}
	/* The field's own line end is not part of its value. */
	while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == '\t'))
		n--;
	out[n] = 0;
	return out;
}

/* message_name_len - length of a field name at p, or 0 if not a field */
static size_t message_name_len(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == ':')
			return i;
		if (c <= ' ' || c >= 127)
			return 0;
	}
	return 0;
}

/* message_headers_parse - parse the header block at the start of buf */
int message_headers_parse(struct message_headers *h, const char *buf, size_t len)
{
	size_t pos = 0;

	memset(h, 0, sizeof(*h));
	while (pos < len) {
		const char *line = buf + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t line_len = nl ? (size_t)(nl - line) + 1 : len - pos;

		if ((line_len == 1 && line[0] == '\n') ||
		    (line_len == 2 && line[0] == '\r' && line[1] == '\n')) {
			/*
			 * The empty line: header over. Only CRLF or LF is
			 * one; a line that merely starts with CR is body,
			 * or filters reading from body_start would skip it.
			 */
			h->header_end = pos;
			h->body_start = pos + line_len;
			return 0;
		}
		size_t name_len = message_name_len(line, line_len);
		if (name_len == 0 || !nl)
			break;
		/* The field runs on over continuation lines. */
		size_t end = pos + line_len;
		bool whole = true;
		while (end < len && (buf[end] == ' ' || buf[end] == '\t')) {
			const char *n2 = memchr(buf + end, '\n', len - end);
			if (!n2) {
				whole = false;
				break;
			}
			end = (size_t)(n2 - buf) + 1;
		}
		/*
		 * A field cut before its last line end is body, like a cut
		 * first line: kept, what follows it would be glued onto it.
		 */
		if (!whole)
			break;
		if (message_grow(h) < 0) {
			message_headers_free(h);
			return -1;
		}
		struct message_field *f = &h->fields[h->n];
		f->name = strndup(line, name_len);
		f->value = message_unfold(line + name_len + 1, end - pos - name_len - 1);
		f->raw = malloc(end - pos);
		if (!f->name || !f->value || !f->raw) {
			free(f->name);
			free(f->value);
			free(f->raw);
			message_headers_free(h);
			return -1;
		}
		memcpy(f->raw, line, end - pos);
		f->raw_len = end - pos;
		if (strcasecmp(f->name, "Received") == 0)
			h->received++;
		h->n++;
		pos = end;
	}
	/* No empty line: what follows the last field is the body. */
	h->header_end = pos;
	h->body_start = pos;
	return 0;
}

/* message_headers_read - parse the header block of a spooled message */
int message_headers_read(struct message_headers *h, struct spool *spool, size_t limit)
{
	/*
	 * Two bytes past the limit: the CRLF that ends a block of exactly
	 * the limit, or the start of a continuation of its last field.
	 */
	unsigned long long size = spool_size(spool);
	size_t want, got = 0;
	char *buf;
	int rc;

	if (limit > MESSAGE_HEADER_MAX)
		limit = MESSAGE_HEADER_MAX;
	want = size < limit + 2 ? (size_t)size : limit + 2;
	buf = malloc(want + 1);
	if (!buf)
		return -1;
	while (got < want) {
		ssize_t n = spool_read(spool, got, buf + got, want - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	rc = message_headers_parse(h, buf, got);
	/*
	 * Stopped without the empty line at a field the buffer cut: the
	 * block goes on past what was read.
	 */
	bool cut = rc == 0 && h->body_start == h->header_end && got == want &&
		   size > want &&
		   message_name_len(buf + h->header_end, got - (size_t)h->header_end) > 0;
	free(buf);
	if (rc == 0 && (h->header_end > limit || cut)) {
		/*
		 * The block goes on past the limit: the field that crosses it
		 * is left out, and the caller learns the block was too big.
		 */
		h->too_big = true;
		if (h->header_end > limit) {
			struct message_field *f = &h->fields[--h->n];
			if (strcasecmp(f->name, "Received") == 0)
				h->received--;
			h->header_end -= f->raw_len;
			h->body_start = h->header_end;
			free(f->name);
			free(f->value);
			free(f->raw);
		}
	}
	return rc;
}

/* message_headers_refusal - the reply for a header over its limits, or NULL */
const char *message_headers_refusal(const struct message_headers *h,
				    size_t hopcount_limit, const char **reason)
{
	if (h->too_big) {
		*reason = "message header too big";
		return "552 5.3.4 Error: message header size exceeds limit";
	}
	if (h->received > hopcount_limit) {
		/* Postfix's code for a mail loop (RFC 3463 X.4.6 would be the loop). */
		*reason = "too many hops";
		return "554 5.4.0 Error: too many hops";
	}
	return NULL;
}

/* message_headers_free - release the list */
void message_headers_free(struct message_headers *h)
{
	for (size_t i = 0; i < h->n; i++) {
		free(h->fields[i].name);
		free(h->fields[i].value);
		free(h->fields[i].raw);
	}
	free(h->fields);
	memset(h, 0, sizeof(*h));
}

/* message_header_find - the n-th field called name */
long message_header_find(const struct message_headers *h, const char *name, size_t n)
{
	for (size_t i = 0; i < h->n; i++)
		if (strcasecmp(h->fields[i].name, name) == 0 && n-- == 0)
			return (long)i;
	return -1;
}

/* message_header_name_valid - printable ASCII without colon (RFC 5322 2.2) */
bool message_header_name_valid(const char *name)
{
	if (!name || !*name)
		return false;
	for (const char *p = name; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 127 || *p == ':')
			return false;
	return true;
}

/* message_value_valid - no bare line ends and no NUL in a value */
static bool message_value_valid(const char *value)
{
	for (const char *p = value; *p; p++)
		if (*p == '\r' || *p == '\n')
			return false;
	return true;
}

/* message_header_add - append or insert at the top */
int message_header_add(struct message_headers *h, const char *name,
		       const char *value, bool top)
{
	return message_header_insert(h, top ? 0 : h->n, name, value);
}

/* message_header_insert - insert before field pos, or append */
int message_header_insert(struct message_headers *h, size_t pos, const char *name,
			  const char *value)
{
	if (!message_header_name_valid(name) || !value || !message_value_valid(value) ||
	    message_grow(h) < 0)
		return -1;
	struct message_field f = { strdup(name), strdup(value), NULL, 0 };
	if (!f.name || !f.value) {
		free(f.name);
		free(f.value);
		return -1;
	}
	if (pos > h->n)
		pos = h->n;
	memmove(h->fields + pos + 1, h->fields + pos, (h->n - pos) * sizeof(*h->fields));
	h->fields[pos] = f;
	h->n++;
	h->changed = true;
	return 0;
}

/* message_header_change - new value for field i, or remove it */
int message_header_change(struct message_headers *h, size_t i, const char *value)
{
	if (i >= h->n)
		return -1;
	if (!value) {
		free(h->fields[i].name);
		free(h->fields[i].value);
		free(h->fields[i].raw);
		memmove(h->fields + i, h->fields + i + 1, (h->n - i - 1) * sizeof(*h->fields));
		h->n--;
		h->changed = true;
		return 0;
	}
	if (!message_value_valid(value))
		return -1;
	char *v = strdup(value);
	if (!v)
		return -1;
	free(h->fields[i].value);
	free(h->fields[i].raw);
	h->fields[i].value = v;
	h->fields[i].raw = NULL;
	h->fields[i].raw_len = 0;
	h->changed = true;
	return 0;
}

/* message_header_remove_if - remove the matching fields in one pass */
size_t message_header_remove_if(struct message_headers *h, const char *name,
				bool (*match)(const char *value, void *arg), void *arg)
{
	size_t kept = 0, removed = 0;

	for (size_t i = 0; i < h->n; i++) {
		struct message_field *f = &h->fields[i];
		if (strcasecmp(f->name, name) == 0 && match(f->value, arg)) {
			free(f->name);
			free(f->value);
			free(f->raw);
			removed++;
			continue;
		}
		h->fields[kept++] = *f;
	}
	h->n = kept;
	if (removed)
		h->changed = true;
	return removed;
}

/* message_headers_render - the header block as it is now */
char *message_headers_render(const struct message_headers *h, size_t *len)
{
	size_t total = 1;
	char *out, *p;

	for (size_t i = 0; i < h->n; i++)
		total += h->fields[i].raw ? h->fields[i].raw_len
					  : strlen(h->fields[i].name) + strlen(h->fields[i].value) + 4;
	out = p = malloc(total);
	if (!out)
		return NULL;
	for (size_t i = 0; i < h->n; i++) {
		const struct message_field *f = &h->fields[i];
		if (f->raw) {
			memcpy(p, f->raw, f->raw_len);
			p += f->raw_len;
		} else {
			p += sprintf(p, "%s: %s\r\n", f->name, f->value);
		}
	}
	*p = 0;
	*len = (size_t)(p - out);
	return out;
}
