/*
 * message.h - the header of a spooled message, as filters see and change it
 *
 * message_headers_read() parses the header block (RFC 5322 2.2) from the
 * start of a spool: each field keeps its raw bytes, so a field nobody
 * changed goes to the backend exactly as received. Changes (add at the
 * end, insert at the top, change or remove the n-th field of a name) are
 * applied to the list in order; message_headers_render() writes the new
 * header block, to be sent in place of the original one, which ends at
 * header_end in the spool (the blank line and the body follow there).
 */
#ifndef PORTCULLIS_MESSAGE_H
#define PORTCULLIS_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "spool.h"

/* The largest header block that can be parsed (header_size_limit's bound). */
#define MESSAGE_HEADER_MAX (1024 * 1024)

struct message_field {
	char *name;	/* as written */
	char *value;	/* unfolded (no CR, LF or NUL), outer white space removed */
	char *raw;	/* the whole field with its CRLFs; NULL once changed */
	size_t raw_len;
};

struct message_headers {
	struct message_field *fields;
	size_t n;
	size_t cap;
	unsigned long long header_end; /* spool offset where the header ended */
	unsigned long long body_start; /* after the blank line */
	size_t received;	/* Received: fields (hops), RFC 5321 6.3 */
	bool too_big;		/* the block goes on past the limit it was read with */
	bool changed;
};

/*
 * message_headers_read - parse the header block of the spooled message,
 * reading at most limit bytes of it (at most MESSAGE_HEADER_MAX): a block
 * that goes on sets too_big, and the field that crosses the limit is
 * left out; on failure (-1: out of memory, read error) h is left empty
 */
int message_headers_read(struct message_headers *h, struct spool *spool, size_t limit);

/* message_headers_parse - the same, from a buffer (tests, fuzzing) */
int message_headers_parse(struct message_headers *h, const char *buf, size_t len);

/*
 * message_headers_refusal - the reply that refuses a header block read
 * with a limit (message_headers_read()) that went past it or has more
 * Received: fields than hopcount_limit, with *reason for the record; NULL
 * when it is within both
 */
const char *message_headers_refusal(const struct message_headers *h,
				    size_t hopcount_limit, const char **reason);

/* message_headers_free - release the list */
void message_headers_free(struct message_headers *h);

/* message_header_find - index of the n-th field called name, or -1 */
long message_header_find(const struct message_headers *h, const char *name, size_t n);

/* message_header_add - append (top = false) or insert at the top */
int message_header_add(struct message_headers *h, const char *name,
		       const char *value, bool top);

/* message_header_insert - insert before field pos (pos >= the count: append) */
int message_header_insert(struct message_headers *h, size_t pos, const char *name,
			  const char *value);

/* message_header_change - new value for field i; NULL removes it */
int message_header_change(struct message_headers *h, size_t i, const char *value);

/*
 * message_header_remove_if - remove every field called name whose value
 * match() says yes to, in one pass over the list (a forged header can
 * have tens of thousands of fields); returns how many went
 */
size_t message_header_remove_if(struct message_headers *h, const char *name,
				bool (*match)(const char *value, void *arg), void *arg);

/* message_header_name_valid - RFC 5322 field name: printable, no colon */
bool message_header_name_valid(const char *name);

/*
 * message_headers_render - the header block as it is now, CRLF line ends,
 * malloc'd and NUL-terminated; *len gets its length
 */
char *message_headers_render(const struct message_headers *h, size_t *len);

#endif
