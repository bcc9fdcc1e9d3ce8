/*
 * fuzz_message.c - libFuzzer target for the header model (proxy/message.c)
 *
 * Parses the input as the start of a message, applies a few header
 * changes derived from the input, renders the header block and checks
 * the properties the proxy relies on, calling abort() when one breaks
 * so libFuzzer keeps the input:
 *  - the fields' raw bytes, end to end, are the input up to header_end,
 *    and between header_end and body_start there is only the empty line;
 *  - parsing stops only where the next line cannot be a whole field, and
 *    never before a continuation of the last field;
 *  - message_headers_read() on a spool gives the same as the parse;
 *  - an add, insert, change or removal does what it says, and one with
 *    an invalid name or a value holding CR or LF changes nothing;
 *  - the rendered block holds each unchanged field byte for byte and
 *    each changed one as "name: value" CRLF, with no other line end;
 *  - the rendered block plus CRLF parses to the same fields (values
 *    compared without outer white space, which the parser drops).
 * Build and run it with tests/fuzz/run-fuzz.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "message.h"
#include "spool.h"
#include "fuzz.h"


/* xmalloc - malloc that never returns NULL (a fuzzer may just stop) */
static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		abort();
	return p;
}

/* A small deterministic generator, seeded from the input. */
static uint64_t rng_state;

static uint32_t rng(void)
{
	rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (uint32_t)(rng_state >> 33);
}

static void rng_seed(const uint8_t *data, size_t size)
{
	size_t i;

	rng_state = 1469598103934665603ULL;
	for (i = 0; i < size; i++)
		rng_state = (rng_state ^ data[i]) * 1099511628211ULL;
}

/* ---- reference predicates, written apart from message.c ---- */

/* name_ok - printable ASCII but colon, at least one byte (RFC 5322 2.2) */
static bool name_ok(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 33 || (unsigned char)*s > 126 || *s == ':')
			return false;
	return true;
}

/* value_ok - no CR or LF */
static bool value_ok(const char *s)
{
	return strpbrk(s, "\r\n") == NULL;
}

/* is_wsp - SP or HTAB, the white space that folds */
static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* same_trimmed - a equals b without b's leading and trailing white space */
static bool same_trimmed(const char *a, const char *b)
{
	size_t n;

	while (is_wsp(*b))
		b++;
	n = strlen(b);
	while (n > 0 && is_wsp(b[n - 1]))
		n--;
	return strlen(a) == n && memcmp(a, b, n) == 0;
}

/* slice - a NUL-terminated copy of up to max bytes of the input */
static char *slice(const uint8_t *data, size_t size, size_t max)
{
	size_t off = size ? rng() % size : 0;
	size_t n = size - off < max ? size - off : max;
	char *s = xmalloc(n + 1);

	n = n ? rng() % (n + 1) : 0;
	memcpy(s, data + off, n);
	s[n] = '\0';
	return s;
}

/* ---- the parse ---- */

/* whole_field_at - whether buf[0..len) starts with a complete field */
static bool whole_field_at(const char *buf, size_t len)
{
	const char *lf = memchr(buf, '\n', len);
	size_t i, end;

	if (lf == NULL)
		return false;
	for (i = 0; buf + i < lf && buf[i] != ':'; i++)
		if ((unsigned char)buf[i] < 33 || (unsigned char)buf[i] > 126)
			return false;
	if (i == 0 || buf + i == lf)
		return false;
	/* Continuation lines must end too. */
	for (end = (size_t)(lf - buf) + 1; end < len && is_wsp(buf[end]);) {
		lf = memchr(buf + end, '\n', len - end);
		if (lf == NULL)
			return false;
		end = (size_t)(lf - buf) + 1;
	}
	return true;
}

/* check_parse - the parse of buf[0..len) accounts for every byte */
static void check_parse(const struct message_headers *h, const char *buf,
			size_t len)
{
	size_t off = 0, i;

	must(h->header_end <= h->body_start && h->body_start <= len);
	must(!h->changed);
	for (i = 0; i < h->n; i++) {
		const struct message_field *f = &h->fields[i];
		size_t nl = strlen(f->name);

		must(f->raw != NULL && f->raw_len > nl);
		must(memcmp(f->raw, buf + off, f->raw_len) == 0);
		must(memcmp(f->raw, f->name, nl) == 0 && f->raw[nl] == ':');
		must(name_ok(f->name) && message_header_name_valid(f->name));
		must(value_ok(f->value));
		must(same_trimmed(f->value, f->value));
		must(f->raw[f->raw_len - 1] == '\n');
		/* every line but the first is a continuation */
		for (size_t k = 0; k + 1 < f->raw_len; k++)
			if (f->raw[k] == '\n')
				must(is_wsp(f->raw[k + 1]));
		off += f->raw_len;
	}
	must(off == h->header_end);
	if (h->body_start == h->header_end + 1)
		must(buf[h->header_end] == '\n');
	else if (h->body_start == h->header_end + 2)
		must(buf[h->header_end] == '\r' && buf[h->header_end + 1] == '\n');
	else
		must(h->body_start == h->header_end);
	/*
	 * The parse stopped at the empty line, or where no field could be;
	 * and not at a continuation, which the backend would take as part
	 * of the last field, changed or not.
	 */
	if (h->body_start == h->header_end) {
		must(!whole_field_at(buf + off, len - off));
		must(h->n == 0 || off == len || !is_wsp(buf[off]));
	}
}

/* check_same - two parses agree field by field and on the offsets */
static void check_same(const struct message_headers *a,
		       const struct message_headers *b)
{
	must(a->n == b->n);
	must(a->header_end == b->header_end && a->body_start == b->body_start);
	for (size_t i = 0; i < a->n; i++) {
		must(strcmp(a->fields[i].name, b->fields[i].name) == 0);
		must(strcmp(a->fields[i].value, b->fields[i].value) == 0);
		must(a->fields[i].raw_len == b->fields[i].raw_len);
		must(memcmp(a->fields[i].raw, b->fields[i].raw,
			    a->fields[i].raw_len) == 0);
	}
}

/* check_spool - message_headers_read() on the same bytes in a spool */
static void check_spool(const struct message_headers *h, const char *buf,
			size_t len)
{
	struct message_headers r;
	struct spool *spool = spool_new("/tmp", 1024 * 1024);

	must(spool != NULL);
	/* No empty write: spool_write() would do arithmetic on a NULL buffer. */
	if (len > 0)
		must(spool_write(spool, buf, len) == 0);
	must(spool_finish(spool) == 0);
	must(message_headers_read(&r, spool, MESSAGE_HEADER_MAX) == 0);
	check_same(h, &r);
	message_headers_free(&r);
	spool_free(spool);
}

/* ---- changes ---- */

/* pick_name - a name to add or look for: often valid, sometimes not */
static char *pick_name(const struct message_headers *h, const uint8_t *data,
		       size_t size)
{
	char *s;

	switch (rng() % 4) {
	case 0:
		if (h->n > 0) {
			s = strdup(h->fields[rng() % h->n].name);
			must(s != NULL);
			/* find is case-insensitive */
			for (char *p = s; *p; p++)
				if (((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z') &&
				    rng() % 2)
					*p ^= 0x20;
			return s;
		}
		/* fall through */
	case 1:
		s = strdup(rng() % 2 ? "X-Portcullis" : "Received");
		must(s != NULL);
		return s;
	default:
		return slice(data, size, 24);
	}
}

/* pick_value - a value: input bytes (CR/LF and all), or a plain one */
static char *pick_value(const uint8_t *data, size_t size)
{
	char *s;

	if (rng() % 3 == 0) {
		s = strdup(rng() % 2 ? "" : " spaced value\t");
		must(s != NULL);
		return s;
	}
	return slice(data, size, 80);
}

/* op_add - append or insert, as message_header_add() promises */
static void op_add(struct message_headers *h, const char *name,
		   const char *value, bool top)
{
	size_t n = h->n;
	bool changed = h->changed;
	char *first = n ? h->fields[0].name : NULL;
	bool ok = name_ok(name) && value_ok(value);

	must(message_header_name_valid(name) == name_ok(name));
	must((message_header_add(h, name, value, top) == 0) == ok);
	if (!ok) {
		must(h->n == n && h->changed == changed);
		return;
	}
	struct message_field *f = &h->fields[top ? 0 : n];
	must(h->n == n + 1 && h->changed);
	must(strcmp(f->name, name) == 0 && strcmp(f->value, value) == 0);
	must(f->raw == NULL);
	if (first)
		must(h->fields[top ? 1 : 0].name == first);
}

/* op_change - new value for the k-th field called name, if there is one */
static void op_change(struct message_headers *h, const char *name, size_t k,
		      const char *value)
{
	long i = message_header_find(h, name, k);
	size_t n = h->n;

	if (i < 0) {
		must(message_header_change(h, n, value) == -1);
		must(h->n == n);
		return;
	}
	must((size_t)i < n && strcasecmp(h->fields[i].name, name) == 0);
	char *old = h->fields[i].name;
	if (value_ok(value)) {
		must(message_header_change(h, (size_t)i, value) == 0);
		must(h->changed && h->n == n);
		must(h->fields[i].name == old && h->fields[i].raw == NULL);
		must(strcmp(h->fields[i].value, value) == 0);
	} else {
		must(message_header_change(h, (size_t)i, value) == -1);
		must(h->n == n && h->fields[i].name == old);
	}
}

/* op_remove - remove the k-th field called name, if there is one */
static void op_remove(struct message_headers *h, const char *name, size_t k)
{
	long i = message_header_find(h, name, k);
	size_t n = h->n;

	if (i < 0) {
		must(message_header_change(h, n, NULL) == -1 && h->n == n);
		return;
	}
	char *next = (size_t)i + 1 < n ? h->fields[i + 1].name : NULL;
	must(message_header_change(h, (size_t)i, NULL) == 0);
	must(h->n == n - 1 && h->changed);
	if (next)
		must(h->fields[i].name == next);
}

/* check_find - find counts the fields called name, whatever the case */
static void check_find(const struct message_headers *h, const char *name)
{
	size_t count = 0;

	for (size_t i = 0; i < h->n; i++)
		if (strcasecmp(h->fields[i].name, name) == 0) {
			must(message_header_find(h, name, count) == (long)i);
			count++;
		}
	must(message_header_find(h, name, count) == -1);
}

/* ---- the rendered block ---- */

/* check_render - render, then read the result back */
static void check_render(const struct message_headers *h)
{
	struct message_headers r;
	size_t len = 0, off = 0;
	char *out = message_headers_render(h, &len);
	char *again;

	must(out != NULL && out[len] == '\0');
	for (size_t i = 0; i < h->n; i++) {
		const struct message_field *f = &h->fields[i];
		size_t nl = strlen(f->name), vl = strlen(f->value);

		if (f->raw) {
			must(off + f->raw_len <= len);
			must(memcmp(out + off, f->raw, f->raw_len) == 0);
			off += f->raw_len;
			continue;
		}
		/* "name: value" CRLF, and no other CR or LF */
		must(off + nl + vl + 4 <= len);
		must(memcmp(out + off, f->name, nl) == 0);
		must(memcmp(out + off + nl, ": ", 2) == 0);
		must(memcmp(out + off + nl + 2, f->value, vl) == 0);
		must(memcmp(out + off + nl + 2 + vl, "\r\n", 2) == 0);
		must(memchr(out + off, '\r', nl + vl + 2) == NULL);
		must(memchr(out + off, '\n', nl + vl + 2) == NULL);
		off += nl + vl + 4;
	}
	must(off == len);

	again = xmalloc(len + 2);
	memcpy(again, out, len);
	memcpy(again + len, "\r\n", 2);
	must(message_headers_parse(&r, again, len + 2) == 0);
	must(r.n == h->n);
	must(r.header_end == len && r.body_start == len + 2);
	for (size_t i = 0; i < h->n; i++) {
		must(strcmp(r.fields[i].name, h->fields[i].name) == 0);
		must(same_trimmed(r.fields[i].value, h->fields[i].value));
	}
	message_headers_free(&r);
	free(again);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	struct message_headers h;
	char *first, *name, *value;
	int nops;

	if (size > 65536)
		return 0;
	rng_seed(data, size);

	must(message_headers_parse(&h, in, size) == 0);
	check_parse(&h, in, size);
	check_spool(&h, in, size);
	check_render(&h);

	/* The 0th field of the first name, as a filter finds it. */
	first = strdup(h.n > 0 ? h.fields[0].name : "Subject");
	must(first != NULL);
	nops = 1 + (int)(rng() % 8);
	for (int k = 0; k < nops; k++) {
		switch (rng() % 5) {
		case 0:
		case 1:
			name = pick_name(&h, data, size);
			value = pick_value(data, size);
			op_add(&h, name, value, rng() % 2);
			check_find(&h, name);
			free(name);
			free(value);
			break;
		case 2:
			value = pick_value(data, size);
			op_change(&h, first, 0, value);
			free(value);
			break;
		case 3:
			name = pick_name(&h, data, size);
			value = pick_value(data, size);
			op_change(&h, name, rng() % 3, value);
			free(name);
			free(value);
			break;
		default:
			name = pick_name(&h, data, size);
			op_remove(&h, name, rng() % 2);
			check_find(&h, name);
			free(name);
			break;
		}
	}
	check_find(&h, first);
	check_render(&h);
	free(first);
	message_headers_free(&h);
	must(h.n == 0 && h.fields == NULL);
	return 0;
}
