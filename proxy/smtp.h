/*
 * smtp.h - the pure SMTP protocol codec (RFC 5321 and its extensions)
 *
 * This module knows the wire format of SMTP and nothing else: it takes
 * bytes and returns parsed commands, paths, parameters, replies and
 * decoded message data. It does no I/O, keeps no globals and allocates
 * only inside the structures it documents, so it is unit-tested and
 * fuzzed on its own (tests/unit/test_smtp.c, tests/fuzz/fuzz_smtp.c).
 *
 * Both sides of the proxy use it: the session (server side) for the
 * client's command lines and message data, the relay (client side) for
 * the backend's replies and EHLO capabilities, and for dot-stuffing the
 * message again on its way to the backend.
 *
 * Errors are returned as a struct smtp_error carrying the SMTP reply that
 * the server should send (code, enhanced status code, human text), so the
 * caller never invents a reply of its own for a syntax problem.
 */
#ifndef PORTCULLIS_SMTP_H
#define PORTCULLIS_SMTP_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 4.5.3.1: limits used as defaults by the callers. */
#define SMTP_LOCAL_PART_MAX 64
#define SMTP_DOMAIN_MAX 255
#define SMTP_PATH_MAX 256
#define SMTP_MAX_PARAMS 16
#define SMTP_REPLY_MAX_LINES 64
#define SMTP_REPLY_LINE_MAX 1024

/* A reply the server should send for a malformed input. */
struct smtp_error {
	int code;	  /* e.g. 501 */
	const char *enh;  /* e.g. "5.5.4" */
	const char *text; /* e.g. "Syntax error in parameters" (static) */
};

/*
 * Line scanning (commands). Only CRLF ends a command line; a bare LF or
 * a bare CR inside a line is reported so the session can refuse it (SMTP
 * smuggling, RFC 5321 2.3.8).
 */
enum smtp_line_status {
	SMTP_LINE_INCOMPLETE, /* no line end yet, nothing consumed */
	SMTP_LINE_OK,	      /* one complete CRLF-terminated line */
	SMTP_LINE_TOO_LONG,   /* over max_len without CRLF */
	SMTP_LINE_BARE_LF,    /* the line ended with LF not preceded by CR */
	SMTP_LINE_BARE_CR,    /* a CR not followed by LF inside the line */
};

/*
 * smtp_line_scan - find the next command line in buf[0..len)
 *
 * SMTP_LINE_OK: *line_len is the length of the line without CRLF,
 * *consumed the length including CRLF.
 * SMTP_LINE_BARE_LF: the line runs to a LF that has no CR before it;
 * *line_len is the length up to that LF, *consumed includes the LF.
 * SMTP_LINE_BARE_CR: a CR followed by anything other than LF was found
 * before any LF; the line is consumed through the next LF (if there is
 * one in buf; else SMTP_LINE_INCOMPLETE is returned unless len > max_len).
 * SMTP_LINE_TOO_LONG: no LF in the first max_len + 2 bytes; *consumed is
 * len (everything so far is to be discarded; the caller then skips up to
 * and including the next LF with smtp_line_skip()).
 * SMTP_LINE_INCOMPLETE: nothing consumed; wait for more bytes.
 * A CR as the very last byte of buf is not yet a bare CR (LF may follow).
 * (Clarification: a line whose text is longer than max_len is TOO_LONG
 * even when its LF is in buf; when an LF is in buf, TOO_LONG's *consumed
 * stops just before it, so the smtp_line_skip() that follows ends on
 * that LF and the next line is kept. OK, BARE_LF and BARE_CR always have
 * *line_len <= max_len; for BARE_CR it runs up to the LF, less a CR
 * just before it.)
 */
enum smtp_line_status smtp_line_scan(const char *buf, size_t len,
				     size_t max_len, size_t *line_len,
				     size_t *consumed);

/*
 * smtp_line_skip - discard up to and including the next LF
 *
 * Returns the number of bytes to discard; *found is true when the LF was
 * in buf (the discarding is over).
 */
size_t smtp_line_skip(const char *buf, size_t len, bool *found);

/* Commands. */
enum smtp_verb {
	SMTP_VERB_UNKNOWN = 0,
	SMTP_VERB_HELO,
	SMTP_VERB_EHLO,
	SMTP_VERB_MAIL,
	SMTP_VERB_RCPT,
	SMTP_VERB_DATA,
	SMTP_VERB_RSET,
	SMTP_VERB_NOOP,
	SMTP_VERB_QUIT,
	SMTP_VERB_VRFY,
	SMTP_VERB_EXPN,
	SMTP_VERB_HELP,
	SMTP_VERB_STARTTLS,
	SMTP_VERB_AUTH,
	SMTP_VERB_BDAT,
	SMTP_VERB_XCLIENT,
	SMTP_VERB_XFORWARD,
	SMTP_VERB_ETRN,
	SMTP_VERB_TURN,
	SMTP_VERB_COUNT
};

/*
 * smtp_command - a command line split into verb and argument
 *
 * arg points into the caller's line (not NUL-terminated: use arg_len);
 * it is what follows the verb and the spaces after it. For MAIL and RCPT
 * the verb is "MAIL"/"RCPT" and arg starts at "FROM:"/"TO:".
 */
struct smtp_command {
	enum smtp_verb verb;
	const char *arg;
	size_t arg_len;
};

/*
 * smtp_command_parse - split one command line (without CRLF)
 *
 * Verbs are matched case-insensitively. A verb must be followed by end of
 * line or a space. Returns 0 and fills cmd (verb SMTP_VERB_UNKNOWN for a
 * verb not in the table); returns -1 with err (500 5.5.2) for a line with
 * a NUL byte or other control character than TAB, or an empty line.
 * (Clarification: DEL counts as a control character; a line of only
 * spaces and TABs counts as empty.)
 */
int smtp_command_parse(const char *line, size_t len, struct smtp_command *cmd,
		       struct smtp_error *err);

/* smtp_verb_name - the canonical upper-case name of a verb ("MAIL") */
const char *smtp_verb_name(enum smtp_verb verb);

/*
 * What a verb may do: the flags of a row of the session's command table
 * (as Postfix's SMTPD_CMD_FLAG_*). smtp_command_check() applies those a
 * dispatcher checks before it calls the verb's handler; SMTP_CMD_LAST is
 * for the handler (a command that changes what the input means, such as
 * STARTTLS, refuses or discards what was pipelined after it:
 * CVE-2011-0411).
 */
enum smtp_cmd_flag {
	SMTP_CMD_PRE_TLS = 1u << 0,	/* allowed before STARTTLS where TLS is required (RFC 3207 4) */
	SMTP_CMD_NEEDS_HELO = 1u << 1,	/* only after HELO/EHLO */
	SMTP_CMD_NEEDS_MAIL = 1u << 2,	/* only inside a mail transaction */
	SMTP_CMD_NOT_IN_MAIL = 1u << 3, /* never inside a mail transaction */
	SMTP_CMD_ARG_NONE = 1u << 4,	/* takes no argument (DATA) */
	SMTP_CMD_ARG_ONE = 1u << 5,	/* takes one word (HELO, EHLO) */
	SMTP_CMD_ARG_SOME = 1u << 6,	/* takes a non-empty argument (VRFY) */
	SMTP_CMD_LAST = 1u << 7,	/* must end a pipelined group (RFC 2920 3.1) */
};

/* Where the session stands, for smtp_command_check(). */
struct smtp_cmd_state {
	bool tls_required; /* the listener requires TLS */
	bool tls_active;   /* STARTTLS succeeded */
	bool helo;	   /* HELO or EHLO was accepted */
	bool in_mail;	   /* a mail transaction is open (MAIL accepted) */
};

/*
 * smtp_command_check - whether cmd may run now under its row's flags
 *
 * Returns 0, or -1 with err, checked in this order:
 *   530 5.7.0 Must issue a STARTTLS command first (TLS required, not
 *             active, verb without SMTP_CMD_PRE_TLS),
 *   501 5.5.4 smtp_verb_syntax() (argument against SMTP_CMD_ARG_*),
 *   503 5.5.1 Error: need MAIL command (SMTP_CMD_NEEDS_MAIL),
 *   503 5.5.1 Error: send HELO/EHLO first (SMTP_CMD_NEEDS_HELO),
 *   503 5.5.1 Error: nested MAIL command (MAIL), or Error: MAIL
 *             transaction in progress (another SMTP_CMD_NOT_IN_MAIL verb).
 * The order keeps what clients were told before the table carried the
 * rules: "DATA x" outside a transaction is a syntax error, RCPT before
 * HELO needs MAIL.
 */
int smtp_command_check(const struct smtp_command *cmd, unsigned flags,
		       const struct smtp_cmd_state *st, struct smtp_error *err);

/*
 * smtp_verb_syntax - the 501 text for a verb's argument ("Syntax: HELO
 * hostname"), or "Error: syntax error" for a verb without one
 */
const char *smtp_verb_syntax(enum smtp_verb verb);

/* One ESMTP parameter: KEYWORD or KEYWORD=VALUE (RFC 5321 4.1.2). */
struct smtp_param {
	char *keyword; /* upper-cased */
	char *value;   /* NULL when there was no '=' */
};

/*
 * smtp_path - the parsed argument of MAIL FROM: or RCPT TO:
 *
 * path is the mailbox exactly as written between < and > (so it can be
 * relayed unchanged), without a source route: "@a,@b:user@dom" gives
 * route "@a,@b" and path "user@dom". For MAIL FROM:<> path is "" and
 * null_path is true. For RCPT TO:<Postmaster> (RFC 5321 4.1.1.3) path is
 * "Postmaster", domain NULL and postmaster true.
 * local is the local part as written (quotes kept); domain is the domain
 * or the address literal ("[192.0.2.1]", "[IPv6:...]") as written.
 * utf8 is true when the path holds any byte >= 0x80 (needs SMTPUTF8).
 * params holds the ESMTP parameters in their order, keywords upper-cased.
 * All strings are owned by the struct: free with smtp_path_free().
 */
struct smtp_path {
	char *path;
	char *route;
	char *local;
	char *domain;
	bool null_path;
	bool postmaster;
	bool utf8;
	size_t nparams;
	struct smtp_param params[SMTP_MAX_PARAMS];
};

/*
 * smtp_path_parse - parse "FROM:<path> params" or "TO:<path> params"
 *
 * arg/len is struct smtp_command's arg. is_rcpt selects "TO:" (and allows
 * <Postmaster>) or "FROM:" (and allows <>). Spaces between the colon and
 * the '<' are tolerated (many clients send them). The path follows RFC
 * 5321 4.1.2 (dot-string or quoted-string local part, domain of
 * sub-domains or an address literal) with RFC 6531 UTF-8 allowed in both
 * parts; a path with a bare LF, CR, NUL, or unbalanced quotes or brackets
 * is refused. Returns 0, or -1 with err:
 *   501 5.5.4 for a missing/garbled "FROM:"/"TO:", missing angle brackets,
 *             or a bad parameter syntax (empty keyword, bad characters,
 *             duplicated keyword, more than SMTP_MAX_PARAMS),
 *   501 5.1.7 for a bad sender address syntax (MAIL),
 *   501 5.1.3 for a bad recipient address syntax (RCPT).
 * Lengths are checked against SMTP_LOCAL_PART_MAX, SMTP_DOMAIN_MAX and
 * SMTP_PATH_MAX (501 with the same codes).
 * On error, nothing needs freeing.
 * (Clarification: SMTP_PATH_MAX counts the route, the mailbox and the
 * angle brackets, RFC 5321 4.5.3.1.3; each domain label is at most 63
 * bytes, UTF-8 counted in bytes. For <Postmaster>, local is set too.
 * utf8 looks at the path only, not at parameter values. Spaces after
 * the last parameter are tolerated. Out of memory gives 452 4.3.1. On
 * error *out is left zeroed.)
 */
int smtp_path_parse(const char *arg, size_t len, bool is_rcpt,
		    struct smtp_path *out, struct smtp_error *err);

/* smtp_path_free - release what smtp_path_parse() allocated */
void smtp_path_free(struct smtp_path *path);

/* smtp_path_param - the parameter with this keyword (case-insensitive) */
const struct smtp_param *smtp_path_param(const struct smtp_path *path,
					 const char *keyword);

/*
 * smtp_params_text - params[0..n) as they are written after a path:
 * "KEYWORD" or "KEYWORD=value", space-separated; "" for none, NULL when
 * out of memory (the caller frees it)
 */
char *smtp_params_text(const struct smtp_param *params, size_t n);

/*
 * What a server offered in its EHLO reply. A parameter of an extension
 * not offered is refused, since a parameter accepted must be one the
 * backend takes.
 */
struct smtp_offer {
	bool esmtp; /* the client said EHLO: parameters at all */
	bool size;
	unsigned long long size_limit; /* what SIZE announced */
	bool eightbitmime;
	bool smtputf8;
	bool dsn;
};

/* The reply to a message or a SIZE= over the limit (RFC 1870 6.1). */
extern const struct smtp_error smtp_error_too_big;

/*
 * smtp_mail_params_check - MAIL's parameters (RFC 5321 4.1.1.11) and path
 *
 * p is a parsed MAIL FROM:, o what the client was offered, size_max the
 * largest SIZE= taken. Returns 0 (*smtputf8: SMTPUTF8 was given), or -1
 * with err (the first parameter in error decides):
 *   555 5.5.4 Parameters need EHLO, not HELO (any parameter after HELO),
 *   555 5.5.4 Unsupported parameter (unknown, or its extension not offered),
 *   501 5.5.4 Bad SIZE parameter (not decimal digits, or past 2^64),
 *   552 5.3.4 smtp_error_too_big (SIZE over size_max),
 *   501 5.5.4 Unsupported BODY parameter (not 7BIT or 8BITMIME),
 *   501 5.5.4 SMTPUTF8 takes no value,
 *   501 5.5.4 Bad RET parameter (not FULL or HDRS),
 *   501 5.5.4 Bad ENVID parameter (not xtext, or over 100 bytes),
 *   553 5.6.7 Error: UTF-8 address needs the SMTPUTF8 parameter.
 * Values are matched case-insensitively.
 */
int smtp_mail_params_check(const struct smtp_path *p, const struct smtp_offer *o,
			   unsigned long long size_max, bool *smtputf8,
			   struct smtp_error *err);

/*
 * smtp_rcpt_params_check - RCPT's parameters (RFC 3461 4) and path
 *
 * smtputf8: the transaction's MAIL had SMTPUTF8. Returns 0, or -1 with
 * err as smtp_mail_params_check() for the EHLO, unsupported and UTF-8
 * cases, and:
 *   501 5.5.4 Bad NOTIFY parameter (not NEVER alone, nor a list of
 *             SUCCESS, FAILURE and DELAY each at most once),
 *   501 5.5.4 Bad ORCPT parameter (not addr-type ";" xtext, or over 500
 *             bytes).
 */
int smtp_rcpt_params_check(const struct smtp_path *p, const struct smtp_offer *o,
			   bool smtputf8, struct smtp_error *err);

/*
 * Replies (RFC 5321 4.2). Used by the relay to read the backend's
 * replies, one line at a time, multi-line replies included.
 */
struct smtp_reply {
	int code;		      /* 3-digit code, 0 until known */
	char enh[16];		      /* enhanced status code of line 1, "" if none */
	size_t nlines;
	char *lines[SMTP_REPLY_MAX_LINES]; /* text after "NNN-"/"NNN ", NUL-terminated */
	bool complete;
};

/*
 * smtp_reply_feed - add one reply line (without CRLF) to r
 *
 * Returns 1 when the reply is complete (last line "NNN " or bare "NNN"),
 * 0 when more lines follow ("NNN-"), -1 when the line is malformed (not
 * three digits 2-5 then ' ', '-' or end; a code differing from the first
 * line's; more than SMTP_REPLY_MAX_LINES lines). Lines longer than
 * SMTP_REPLY_LINE_MAX are cut there. When line 1 starts with an enhanced
 * status code (RFC 3463, class matching the reply's first digit), it is
 * copied into enh and stays in lines[0] as received.
 * (Clarification: SMTP_REPLY_LINE_MAX counts the code too. A line fed to
 * a complete reply gives -1: reset r first. On -1, r is unchanged.)
 */
int smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len);

/* smtp_reply_reset - free the lines and make r empty again */
void smtp_reply_reset(struct smtp_reply *r);

/*
 * smtp_reply_format - write the reply as CRLF-terminated wire lines
 *
 * Writes "code-..." / "code ..." lines into out (at most cap bytes,
 * NUL-terminated) and returns the length that the full text needs (like
 * snprintf). When r->enh is empty and default_enh is not NULL, every line
 * gets default_enh inserted after the code, so clients of a backend
 * without ENHANCEDSTATUSCODES still see one.
 * (Clarification: a line with empty text is written "NNN " or, with a
 * default code, "NNN enh"; a reply with no lines but a code is written
 * as one empty line.)
 */
size_t smtp_reply_format(const struct smtp_reply *r, const char *default_enh,
			 char *out, size_t cap);

/*
 * smtp_enh_valid - whether enh is a valid RFC 3463 enhanced status code
 * ("class.subject.detail", class 2, 4 or 5 equal to code's first digit,
 * subject 0-999, detail 0-999, no leading zeros beyond a single 0).
 * (Clarification: a code of 0 leaves the class unchecked.)
 */
bool smtp_enh_valid(const char *enh, int code);

/* EHLO capabilities of a server, read from its EHLO reply. */
struct smtp_caps {
	bool pipelining;
	bool size;
	unsigned long size_limit; /* 0 when SIZE has no argument */
	bool eightbitmime;
	bool smtputf8;
	bool dsn;
	bool enhancedstatuscodes;
	bool starttls;
	bool chunking;
	bool xclient;
	char xclient_attrs[128]; /* e.g. "NAME ADDR PORT PROTO HELO" */
	bool xforward;
	char xforward_attrs[128];
	bool auth;
	char auth_mechs[128]; /* e.g. "PLAIN LOGIN" */
};

/*
 * smtp_caps_parse - fill caps from a complete 250 EHLO reply
 *
 * Line 1 is the greeting; each further line is "KEYWORD [params]",
 * keywords case-insensitive. Unknown keywords are ignored.
 * (Clarification: caps is zeroed first and stays so unless r's code is
 * 250. Attribute lists are copied with single spaces and cut before the
 * first word that does not fit, never inside one.)
 */
void smtp_caps_parse(const struct smtp_reply *r, struct smtp_caps *caps);

/*
 * Message data (RFC 5321 4.5.2 transparency, 4.1.1.4 end of data).
 *
 * The decoder takes the raw bytes that follow DATA's 354 and returns the
 * message content: leading dots removed, the end of data recognised only
 * as <CRLF>.<CRLF> (the DATA line's CRLF counts as the first CRLF, so a
 * message that is just ".\r\n" is empty). A line starts only after CRLF:
 * "\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r", "\r\n\0.\r\n" never end the
 * data. bare_lf/bare_cr record whether the content held a LF without CR
 * before it or a CR without LF after it.
 * With normalize set, each bare LF and bare CR in the content is written
 * as CRLF instead (it still never ends the data).
 */
struct smtp_data_decoder {
	int state; /* private */
	bool normalize;
	bool bare_lf;
	bool bare_cr;
	bool done;
	unsigned long long bytes_out; /* content bytes produced so far */
};

/* smtp_data_decoder_init - start decoding one message */
void smtp_data_decoder_init(struct smtp_data_decoder *d, bool normalize);

/*
 * smtp_data_decode - decode in[0..len) into out
 *
 * out must have room for 2 * len + 2 bytes. Returns the number of input
 * bytes consumed; *out_len gets the number of content bytes written.
 * When the end of data is reached, d->done is set and the bytes after the
 * terminator are not consumed (they are the next pipelined command).
 * Bytes held back while undecided (a CR, a dot at line start) are kept
 * in the decoder state and written by a later call.
 */
size_t smtp_data_decode(struct smtp_data_decoder *d, const char *in,
			size_t len, char *out, size_t *out_len);

/*
 * The encoder dot-stuffs message content for sending after DATA: a '.'
 * at the start of a line (after CRLF, or at the very start) is doubled.
 * Content is expected with CRLF line ends; a message not ending in CRLF
 * gets one before the terminator.
 * (Clarification: as in the decoder, only CRLF starts a line, so a dot
 * after a bare LF or CR is not doubled; refuse or normalize bare line
 * ends before encoding, or a backend that ends lines on a bare LF could
 * read "\n.\n" as the end of data.)
 */
struct smtp_data_encoder {
	int state; /* private */
};

/* smtp_data_encoder_init - start encoding one message */
void smtp_data_encoder_init(struct smtp_data_encoder *e);

/*
 * smtp_data_encode - dot-stuff in[0..len) into out (room: 2 * len)
 * Returns the number of bytes written.
 */
size_t smtp_data_encode(struct smtp_data_encoder *e, const char *in,
			size_t len, char *out);

/*
 * smtp_data_encode_end - write the end of data into out (room: 5)
 * ("\r\n.\r\n", or ".\r\n" when the content ended with CRLF or was empty)
 * Returns the number of bytes written.
 */
size_t smtp_data_encode_end(struct smtp_data_encoder *e, char *out);

/*
 * smtp_xtext_encode - RFC 3461 4 xtext for XCLIENT/XFORWARD values
 *
 * Bytes outside '!'..'~', '+' and '=' become "+XX". Writes at most cap
 * bytes including the NUL; returns the length the full text needs.
 */
size_t smtp_xtext_encode(const char *in, char *out, size_t cap);

/*
 * smtp_xtext_valid - whether s is valid xtext (for ENVID and ORCPT values,
 * RFC 3461 4: chars '!'..'~' except '+' and '=', or "+XX" upper hex)
 */
bool smtp_xtext_valid(const char *s);

/*
 * XCLIENT and XFORWARD attributes (Postfix's XCLIENT_README and
 * XFORWARD_README): "NAME=value ..." with xtext values. Each attribute is
 * given, [UNAVAILABLE], [TEMPUNAVAIL] (NAME only) or a value checked
 * for its kind: NAME a host name; ADDR,
 * DESTADDR an IPv4 address or "IPV6:" and an IPv6 address (kept
 * without the tag); PORT, DESTPORT 0..65535; PROTO SMTP or ESMTP for
 * XCLIENT, a protocol word for XFORWARD; HELO a HELO argument
 * (smtp_helo_valid()); LOGIN and IDENT printable; SOURCE LOCAL or
 * REMOTE. A later occurrence of an attribute replaces an earlier one.
 */
enum smtp_xattr {
	SMTP_XA_NAME,
	SMTP_XA_ADDR,
	SMTP_XA_PORT,
	SMTP_XA_PROTO,
	SMTP_XA_HELO,
	SMTP_XA_LOGIN,
	SMTP_XA_DESTADDR,
	SMTP_XA_DESTPORT,
	SMTP_XA_IDENT,
	SMTP_XA_SOURCE,
	SMTP_XA_COUNT
};

/* What each verb takes (bits 1u << SMTP_XA_*), as the EHLO reply lists them. */
#define SMTP_XCLIENT_ATTRS                                                       \
	((1u << SMTP_XA_NAME) | (1u << SMTP_XA_ADDR) | (1u << SMTP_XA_PORT) |    \
	 (1u << SMTP_XA_PROTO) | (1u << SMTP_XA_HELO) | (1u << SMTP_XA_LOGIN) |  \
	 (1u << SMTP_XA_DESTADDR) | (1u << SMTP_XA_DESTPORT))
#define SMTP_XFORWARD_ATTRS                                                      \
	((1u << SMTP_XA_NAME) | (1u << SMTP_XA_ADDR) | (1u << SMTP_XA_PORT) |    \
	 (1u << SMTP_XA_PROTO) | (1u << SMTP_XA_HELO) | (1u << SMTP_XA_IDENT) |  \
	 (1u << SMTP_XA_SOURCE))

/* The longest decoded value (Postfix's limit for names and HELO). */
#define SMTP_XATTR_MAX 255

enum smtp_xvalue { SMTP_XV_ABSENT, SMTP_XV_VALUE, SMTP_XV_UNAVAILABLE, SMTP_XV_TEMPUNAVAIL };

struct smtp_xattrs {
	enum smtp_xvalue state[SMTP_XA_COUNT];
	char value[SMTP_XA_COUNT][SMTP_XATTR_MAX + 1]; /* decoded, for SMTP_XV_VALUE */
};

/* smtp_xattr_name - the attribute's name as written on the wire ("NAME") */
const char *smtp_xattr_name(enum smtp_xattr a);

/*
 * smtp_xattrs_parse - parse the argument of XCLIENT (xforward false) or
 * XFORWARD (true) into out (cleared first). Returns 0, or -1 with err:
 *   501 5.5.4 Syntax: XCLIENT attribute=value... (empty, or a word without '='),
 *   501 5.5.4 Bad XCLIENT attribute name (one the verb does not take),
 *   501 5.5.4 Bad NAME syntax (and one text per attribute: a value that
 *             is not xtext, decodes to more than SMTP_XATTR_MAX bytes or
 *             is not of the attribute's kind),
 * with XFORWARD in place of XCLIENT for XFORWARD.
 */
int smtp_xattrs_parse(const char *arg, size_t len, bool xforward,
		      struct smtp_xattrs *out, struct smtp_error *err);

/*
 * smtp_domain_valid - whether s is a syntactically valid domain for
 * HELO/EHLO: sub-domains of letters, digits and hyphens (UTF-8 allowed
 * when utf8), or an address literal "[...]". Trailing dot tolerated.
 */
bool smtp_domain_valid(const char *s, size_t len, bool utf8);

/*
 * smtp_helo_valid - whether s is an acceptable HELO/EHLO argument: as
 * smtp_domain_valid(), and underscores allowed in labels (many real
 * clients send them); no control characters, no empty labels, no
 * non-ASCII unless utf8 (and then only well-formed UTF-8)
 */
bool smtp_helo_valid(const char *s, size_t len, bool utf8);

#endif
