/*
 * milter_proto.h - the Sendmail milter protocol, version 6, as an MTA speaks it
 *
 * Pure code, no I/O: the milter filter builds the packets it sends to a
 * milter with the milter_put_*() functions and decodes what comes back
 * with milter_packet_parse() and milter_reply_decode(). The constants
 * (SMFIC_*, SMFIR_*, SMFIP_*, SMFIF_*, SMFIM_*) are libmilter's own, from
 * <libmilter/mfdef.h> and <libmilter/mfapi.h>.
 *
 * A packet is a 4-byte length in network order, then that many bytes: a
 * command byte and its data. Strings in the data end with a NUL. What a
 * milter sends is read by a peer that vouched for nothing: a length
 * larger than the reader's maximum is refused as soon as its 4 bytes are
 * there, every string must end inside its packet, and every reply must
 * have exactly the fields of its kind (milter_reply_decode() says what is
 * wrong otherwise).
 */
#ifndef PORTCULLIS_MILTER_PROTO_H
#define PORTCULLIS_MILTER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libmilter/mfapi.h>
#include <libmilter/mfdef.h>

/* The protocol version offered (and the least accepted: 2). */
#define MILTER_PROTO_VERSION 6

/* The most body bytes in one SMFIC_BODY packet. */
#define MILTER_BODY_CHUNK 65535

/*
 * The largest reply packet read (command byte and data): a replaced body
 * comes in chunks of at most 64 KiB, a header field is far smaller; 1 MiB
 * leaves room for a milter that negotiates nothing and still refuses a
 * length that would make the reader hold gigabytes.
 */
#define MILTER_REPLY_MAX (1024 * 1024)

/* The macro stages (SMFIM_CONNECT .. SMFIM_EOH). */
#define MILTER_STAGES (SMFIM_EOH + 1)

/* What milter_packet_parse() found. */
enum milter_parse {
	MILTER_MORE,	  /* the packet is not whole yet */
	MILTER_DONE,	  /* one packet; consumed tells its size */
	MILTER_MALFORMED, /* why tells what is wrong */
};

/* One packet as read: its command and data point into the input. */
struct milter_packet {
	unsigned char cmd;
	const unsigned char *data;
	size_t len;	 /* of data, without the command byte */
	size_t consumed; /* 4 + 1 + len */
};

/*
 * milter_packet_parse - the first packet of buf, when it is whole; a
 * length of 0 (no command byte) or over max (bytes after the length)
 * is malformed, said in *why
 */
enum milter_parse milter_packet_parse(const unsigned char *buf, size_t len,
				      size_t max, struct milter_packet *p,
				      const char **why);

/*
 * A reply decoded. Strings point into the packet's data (they end with
 * the NUL that ends them there); fields a kind does not have are zero.
 */
struct milter_reply {
	unsigned char cmd; /* SMFIR_*, or SMFIC_OPTNEG for the negotiation */

	/* SMFIC_OPTNEG: what the milter takes, and the macros it asks for per stage */
	uint32_t version, actions, protocol;
	const char *macros[MILTER_STAGES]; /* NULL: the MTA's choice */

	/* SMFIR_REPLYCODE: the first line's code, enhanced code and text */
	int code;
	char enh[12]; /* "5.7.1", or "" when the reply has none */
	const char *text;
	size_t textlen; /* the text is not NUL-terminated after the first line */

	/* SMFIR_ADDHEADER, SMFIR_INSHEADER, SMFIR_CHGHEADER */
	uint32_t index; /* INSHEADER: position from 0; CHGHEADER: n-th of name, from 1 */
	const char *name, *value;

	/* SMFIR_ADDRCPT, _ADDRCPT_PAR, _DELRCPT, _CHGFROM: the address and its ESMTP arguments */
	const char *addr, *args; /* args NULL when absent */

	/* SMFIR_REPLBODY: a chunk of the new body */
	const unsigned char *body;
	size_t bodylen;

	/* SMFIR_QUARANTINE: the reason */
	const char *reason;
};

/*
 * milter_reply_decode - decode a packet a milter sent; NULL, or what is
 * wrong with it (unknown command, a string without its NUL, a field
 * missing or left over, a reply code that is not 4xx/5xx with a matching
 * enhanced code)
 */
const char *milter_reply_decode(const struct milter_packet *p, struct milter_reply *r);

/* A growing output buffer for the packets to send. */
struct milter_buf {
	unsigned char *data;
	size_t len, cap;
};

/* milter_buf_free - release the buffer's memory */
void milter_buf_free(struct milter_buf *b);

/*
 * The packets an MTA sends. Each appends one packet to b and returns 0,
 * or -1 when out of memory or when the packet would be longer than the
 * protocol allows (b is then unchanged).
 */

/* milter_put_optneg - SMFIC_OPTNEG: version, actions and protocol steps offered */
int milter_put_optneg(struct milter_buf *b, uint32_t version, uint32_t actions,
		      uint32_t protocol);

/*
 * milter_put_macros - SMFIC_MACRO for the command cmd (SMFIC_CONNECT,
 * ...): n name/value pairs as names[i], values[i]
 */
int milter_put_macros(struct milter_buf *b, unsigned char cmd,
		      const char *const *names, const char *const *values, size_t n);

/*
 * milter_put_connect - SMFIC_CONNECT: the client's host name, and its
 * family (SMFIA_INET, SMFIA_INET6, SMFIA_UNKNOWN), port and address
 * (no port or address for SMFIA_UNKNOWN)
 */
int milter_put_connect(struct milter_buf *b, const char *host, char family,
		       unsigned port, const char *addr);

/* milter_put_helo - SMFIC_HELO */
int milter_put_helo(struct milter_buf *b, const char *helo);

/*
 * milter_put_args - SMFIC_MAIL or SMFIC_RCPT: the address in angle
 * brackets, then its ESMTP arguments ("SIZE=100"), n strings in all
 */
int milter_put_args(struct milter_buf *b, unsigned char cmd,
		    const char *const *args, size_t n);

/* milter_put_header - SMFIC_HEADER: a field's name and value */
int milter_put_header(struct milter_buf *b, const char *name, const char *value);

/* milter_put_body - SMFIC_BODY: at most MILTER_BODY_CHUNK bytes of the body */
int milter_put_body(struct milter_buf *b, const void *data, size_t len);

/*
 * milter_put_empty - a command without data: SMFIC_DATA, SMFIC_EOH,
 * SMFIC_BODYEOB, SMFIC_ABORT, SMFIC_QUIT, SMFIC_QUIT_NC
 */
int milter_put_empty(struct milter_buf *b, unsigned char cmd);

#endif
