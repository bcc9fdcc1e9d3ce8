/*
 * proxyproto.h - the PROXY protocol header (HAProxy's proxy-protocol.txt),
 * versions 1 and 2, decoded from bytes: no sockets, no globals
 *
 * A load balancer that speaks the PROXY protocol sends, before anything
 * else on the connection, one header naming the client it accepted the
 * connection from. proxyproto_parse() looks at the bytes read so far and
 * says one of three things:
 *
 * - PROXYPROTO_MORE: what is there is the start of a header the
 *   versions asked for could still complete; read more and call again
 *   with all the bytes (nothing is consumed until the header is whole);
 * - PROXYPROTO_DONE: a whole, valid header of r->consumed bytes; what
 *   follows it is the application's (SMTP) and is not looked at;
 * - PROXYPROTO_MALFORMED: it can never become a valid header; r->error
 *   says why, in a few words for a log and a decision record.
 *
 * Version 1 is one text line, "PROXY TCP4|TCP6|UNKNOWN ... CRLF", of at
 * most 107 bytes; version 2 a binary block of 16 bytes and the length
 * they give (addresses, then TLVs, each checked to end inside it). The
 * header is at most PROXYPROTO_MAX bytes: whoever reads it never needs
 * to hold more, and a length over that is malformed at once, before its
 * bytes arrive. A header that names no client (v1 UNKNOWN, v2 LOCAL, the
 * balancer's own health checks, or v2's unspecified or Unix families)
 * is DONE with r->local set: the connection's own addresses stand.
 *
 * Work is bounded by the header: a call reads at most PROXYPROTO_MAX
 * bytes, whatever len is.
 */
#ifndef PORTCULLIS_PROXYPROTO_H
#define PORTCULLIS_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* The versions a listener takes (a bit mask: PROXYPROTO_ANY is both). */
#define PROXYPROTO_V1 1u
#define PROXYPROTO_V2 2u
#define PROXYPROTO_ANY (PROXYPROTO_V1 | PROXYPROTO_V2)

/* Version 1: the longest line, CRLF included (the specification's bound). */
#define PROXYPROTO_V1_MAX 107
/* Version 2: the fixed part, and the longest header taken. */
#define PROXYPROTO_V2_FIXED 16
#define PROXYPROTO_V2_MAX 2048
/* The most bytes a header can take. */
#define PROXYPROTO_MAX PROXYPROTO_V2_MAX

enum proxyproto_status {
	PROXYPROTO_MORE,
	PROXYPROTO_DONE,
	PROXYPROTO_MALFORMED,
};

struct proxyproto_result {
	unsigned version; /* 1 or 2, once known */
	size_t consumed;  /* DONE: the header's bytes */
	bool local;	  /* DONE: no client named; use the socket's addresses */
	/* DONE and not local: the client (src) and the address it reached (dst) */
	struct sockaddr_storage src, dst;
	socklen_t srclen, dstlen;
	const char *error; /* MALFORMED: why (a static string) */
};

/*
 * proxyproto_parse - decode the header at the start of the len bytes at
 * buf, taking only the versions in the mask versions; r is filled in
 * for every answer
 */
enum proxyproto_status proxyproto_parse(const unsigned char *buf, size_t len,
					unsigned versions,
					struct proxyproto_result *r);

#endif
