/*
 * portcullis/filter.h - the plugin API of Portcullis
 *
 * A filter is a shared object that exports one descriptor,
 *
 *	const struct pc_filter portcullis_filter = {
 *		PC_FILTER_HEADER,
 *		.name = "example",
 *		.rcpt = example_rcpt,
 *	};
 *
 * with one optional hook per SMTP stage, modelled on libmilter. Portcullis
 * loads the filters named in its configuration with dlopen(), in chain
 * order, and calls their hooks for every session and transaction. The
 * built-in filters (size, relay, ...) use exactly this API.
 *
 * Stages and what a hook may return
 *
 *   connect  a client connected (before the greeting)
 *   helo     HELO/EHLO was given (pc_helo())
 *   mail     MAIL FROM (pc_sender(), pc_mail_param())
 *   rcpt     one RCPT TO (pc_rcpt_current()); a verdict here is about this
 *            recipient only
 *   data     the end of the message: headers and body are readable;
 *            headers, the envelope and the body can be changed, and the
 *            message quarantined (see "Changing the message")
 *   reset    the transaction ended (delivered, refused, RSET, QUIT,
 *            disconnect): free what pc_set_tx_data() holds. No verdict.
 *   close    the session ended: free what pc_set_session_data() holds.
 *
 *   PC_CONTINUE  go on with the next filter (the default)
 *   PC_ACCEPT    accept: the remaining filters are skipped for the rest of
 *                this transaction (or, at connect and helo, the session)
 *   PC_REJECT    refuse with a 5xx reply (set by pc_set_reply(), or a
 *                default for the stage)
 *   PC_TEMPFAIL  refuse with a 4xx reply (likewise)
 *   PC_DISCARD   at mail, rcpt or data: answer 250 but deliver nothing;
 *                the transaction is logged as discarded
 *   PC_WOULDBLOCK  a nonblocking hook on the event loop that must wait
 *                after all: run it on a thread (see "Threads and time")
 *   PC_FAILED    the filter could not decide: a service it needs is down,
 *                too slow or answered nonsense. Its "on_error" action
 *                applies, as for a call past its deadline; say why with
 *                pc_result() and pc_log().
 *
 * At each stage the filters run in chain order and the first REJECT,
 * TEMPFAIL or DISCARD decides. Header changes of several filters apply in
 * chain order. A REJECT with a reply that is not 5xx, a TEMPFAIL with one
 * that is not 4xx, or a malformed enhanced status code is refused: the
 * error is logged and pc_set_reply() returns -1.
 *
 * Threads and time
 *
 * Hooks run on a pool of threads, never on the thread that does network
 * I/O, so a hook may block (DNS, a database). The hooks of one session are
 * never called concurrently, but hooks of different sessions are: what a
 * filter keeps in its instance (from init) must be thread-safe. Each
 * filter has a deadline per call ("timeout" in its configuration
 * section); a call that passes it, and a filter that cannot run because
 * the pool is full, get the filter's "on_error" action (tempfail by
 * default, or accept, or reject). A hook that passed its deadline must
 * still return some day: its thread is not reused until it does. The
 * session goes on without it meanwhile (so its later hooks may run while
 * the late one still does), and what the late call does is ignored.
 *
 * A hook that never blocks (no DNS, no file or network I/O, no lock held
 * for long) and takes microseconds can say so in the descriptor's
 * "nonblocking" bits (PC_HOOK_RCPT, ...). When every hook of a stage in
 * the chain says so, Portcullis calls them on the event loop's thread,
 * which spares a trip through the pool (two thread switches). Such a
 * call has no deadline: a nonblocking hook that blocks stalls every
 * session of its worker.
 *
 * A hook that usually decides at once but sometimes must wait (a DNS
 * answer that is not in the cache) can be marked nonblocking too, and
 * return PC_WOULDBLOCK when it finds it would have to wait: it is then
 * called again, at once, on a thread of the pool, where it may block,
 * and the stage goes on there. On the loop, pc_dns_query() answers from
 * the cache only and returns PC_DNS_WOULDBLOCK when the answer is not
 * there. What a call that returns PC_WOULDBLOCK gave through pc_result()
 * and pc_set_reply() is dropped; anything else it changed (its session
 * or transaction data, the header) stays, so it should change nothing
 * before it knows it can decide. On a thread, PC_WOULDBLOCK is an
 * invalid verdict.
 *
 * Memory
 *
 * Strings returned by accessors belong to Portcullis and stay valid until
 * the hook returns. Everything a filter gives (reply texts, header names
 * and values, results) is copied.
 *
 * ABI
 *
 * The context is opaque and reached only through the functions below, so
 * the API grows by adding functions. PC_FILTER_HEADER records the ABI
 * version and the size of the descriptor the plugin was built with; a
 * plugin built for another major ABI version is refused at load. Fields
 * added at the end of the descriptor read as 0 for a plugin built
 * before them.
 */
#ifndef PORTCULLIS_FILTER_H
#define PORTCULLIS_FILTER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PC_FILTER_ABI_VERSION 1

/*
 * What has been added to ABI 1 since its first release, for a plugin to
 * test with #if: 1 the TLS functions (pc_tls_version() ...), 2 the
 * envelope and body changes (pc_set_sender() ...). Adding functions keeps
 * ABI 1: a plugin built before them loads as it did, and one that calls
 * them needs a Portcullis that has them (dlopen() refuses it otherwise,
 * naming the missing symbol).
 */
#define PC_FILTER_ABI_MINOR 2

/* What a hook decides. */
enum pc_status {
	PC_CONTINUE = 0,
	PC_ACCEPT,
	PC_REJECT,
	PC_TEMPFAIL,
	PC_DISCARD,
	PC_WOULDBLOCK, /* on the event loop: call me again on a thread */
	PC_FAILED,     /* could not decide: the filter's on_error applies */
};

/* One hook call: the session, the transaction and the filter. Opaque. */
typedef struct pc_ctx pc_ctx;

/* The configuration section of one filter instance. Opaque. */
typedef struct pc_config pc_config;

/* The descriptor a plugin exports as `portcullis_filter`. */
struct pc_filter {
	unsigned abi_version; /* PC_FILTER_ABI_VERSION */
	size_t size;	      /* sizeof(struct pc_filter) */
	const char *name;     /* short, for logs: "size", "relay" */
	const char *description;

	/*
	 * The keys the filter reads from its configuration section, NULL-
	 * terminated. Portcullis refuses any other key (with file, line and
	 * key), besides the keys every filter has: module, timeout, on_error.
	 */
	const char *const *options;

	/*
	 * init - read the configuration (pc_config_get()) and build the
	 * instance; return 0, or -1 after pc_config_error(). Called at
	 * start-up and at every reload, in the worker processes.
	 */
	int (*init)(pc_config *config, void **instance);

	/* fini - free the instance */
	void (*fini)(void *instance);

	enum pc_status (*connect)(pc_ctx *ctx);
	enum pc_status (*helo)(pc_ctx *ctx);
	enum pc_status (*mail)(pc_ctx *ctx);
	enum pc_status (*rcpt)(pc_ctx *ctx);
	enum pc_status (*data)(pc_ctx *ctx);
	void (*reset)(pc_ctx *ctx);
	void (*close)(pc_ctx *ctx);

	/*
	 * nonblocking - PC_HOOK_* bits of the hooks that never block and
	 * may run on the event loop (see "Threads and time")
	 */
	unsigned nonblocking;
};

/* Bits of pc_filter.nonblocking, one per hook. */
#define PC_HOOK_CONNECT (1u << 0)
#define PC_HOOK_HELO (1u << 1)
#define PC_HOOK_MAIL (1u << 2)
#define PC_HOOK_RCPT (1u << 3)
#define PC_HOOK_DATA (1u << 4)
#define PC_HOOK_RESET (1u << 5)
#define PC_HOOK_CLOSE (1u << 6)

/* The descriptor's size in the first release of ABI 1 (before nonblocking). */
#define PC_FILTER_SIZE_1 offsetof(struct pc_filter, nonblocking)

#define PC_FILTER_HEADER .abi_version = PC_FILTER_ABI_VERSION, \
			 .size = sizeof(struct pc_filter)

/* Configuration (in init only). */

/* pc_config_get - the value of key in the filter's section, or NULL */
const char *pc_config_get(pc_config *config, const char *key);

/*
 * pc_parse_size - a size written as in the configuration: digits with an
 * optional k, m or g suffix (powers of 1024), white space around ignored.
 * Returns NULL, or what is wrong with it (for pc_config_error()). Usable
 * anywhere, not only in init.
 */
const char *pc_parse_size(const char *text, size_t len, unsigned long long *bytes);

/* pc_config_name - the instance name ("[filter NAME]") */
const char *pc_config_name(pc_config *config);

/*
 * pc_config_error - report a bad value of key; the message is shown as
 * "FILE:LINE: [filter NAME] key: message" and start-up stops
 */
void pc_config_error(pc_config *config, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The instance and private data. */

/* pc_instance - what init stored in *instance */
void *pc_instance(pc_ctx *ctx);

/* pc_session_data, pc_set_session_data - this filter's data for the session */
void *pc_session_data(pc_ctx *ctx);
void pc_set_session_data(pc_ctx *ctx, void *data);

/* pc_tx_data, pc_set_tx_data - this filter's data for the transaction */
void *pc_tx_data(pc_ctx *ctx);
void pc_set_tx_data(pc_ctx *ctx, void *data);

/* The client. */

/* pc_client_addr - the client's IP address, numeric ("192.0.2.1", "2001:db8::1") */
const char *pc_client_addr(pc_ctx *ctx);

/* pc_client_port - the client's TCP port */
unsigned pc_client_port(pc_ctx *ctx);

/*
 * pc_client_name - the client's host name, forward-confirmed (its PTR
 * name whose A/AAAA records hold the address, or the NAME a trusted
 * XCLIENT/XFORWARD peer gave), or NULL when it is unknown, unconfirmed
 * or the lookup failed. The session waits for the lookup (bounded by the
 * [dns] timeouts) before any filter stage, so a filter never sees NULL
 * just because the answer was late; with client_name_lookup = no it is
 * NULL unless a trusted peer named the client.
 */
const char *pc_client_name(pc_ctx *ctx);

/* pc_helo - the HELO/EHLO argument, or NULL before it */
const char *pc_helo(pc_ctx *ctx);

/* pc_tls - whether the session is encrypted */
bool pc_tls(pc_ctx *ctx);

/* pc_auth_user - the AUTH login of the session (listener auth), or NULL */
const char *pc_auth_user(pc_ctx *ctx);

/*
 * pc_listener - the local address the client connected to, as written in
 * the listen setting ("0.0.0.0:25", "[::]:587")
 */
const char *pc_listener(pc_ctx *ctx);

/*
 * pc_on_loop - whether this call runs on the event loop (a nonblocking
 * hook of a stage run there), where it may not wait, nor spend more than
 * microseconds: with more work ahead (a large message to hash, a
 * signature to make) it returns PC_WOULDBLOCK and is called again on a
 * thread
 */
bool pc_on_loop(pc_ctx *ctx);

/* pc_session_id - the session id, as in the decision log */
const char *pc_session_id(pc_ctx *ctx);

/*
 * pc_authserv_id - the authserv-id of this host's Authentication-Results:
 * header fields (RFC 8601 2.5; [portcullis] authserv_id, by default the
 * host name). Fields that claim it and came with the message are removed
 * before the data hooks run, so what a filter reads under this id was
 * written by a filter of this chain.
 */
const char *pc_authserv_id(pc_ctx *ctx);

/* The envelope. */

/*
 * pc_sender - the MAIL FROM address ("" for <>), or NULL before MAIL; in
 * the data hook, as the filters before changed it (so are the others)
 */
const char *pc_sender(pc_ctx *ctx);

/* pc_mail_param - the value of a MAIL parameter ("SIZE"), "" for one
 * without value, NULL when absent */
const char *pc_mail_param(pc_ctx *ctx, const char *keyword);

/* pc_rcpt_count - the recipients accepted so far */
size_t pc_rcpt_count(pc_ctx *ctx);

/* pc_rcpt - the i-th accepted recipient */
const char *pc_rcpt(pc_ctx *ctx, size_t i);

/* pc_rcpt_current - in the rcpt hook: the recipient being decided */
const char *pc_rcpt_current(pc_ctx *ctx);

/* The message (in the data hook). */

/* pc_message_size - the size of the message as received, in bytes */
unsigned long long pc_message_size(pc_ctx *ctx);

/* pc_header_count - how many header fields the message has */
size_t pc_header_count(pc_ctx *ctx);

/*
 * pc_header_name, pc_header_value - the i-th header field, as it is now
 * (with the changes of earlier filters). The value is unfolded: CRLF
 * before white space removed, leading white space kept out.
 */
const char *pc_header_name(pc_ctx *ctx, size_t i);
const char *pc_header_value(pc_ctx *ctx, size_t i);

/*
 * pc_header_raw - the i-th header field exactly as it was received: the
 * name, the colon and the value with its folding (the line ends and the
 * white space after them), without the line end that closes the field;
 * *len gets the length. Not NUL-terminated, and it may hold any byte:
 * use len. NULL for a field that a filter added or changed, which has no
 * received form (it goes to the backend as "name: value", from
 * pc_header_name() and pc_header_value()). For checks that need the
 * bytes themselves, such as DKIM's "simple" header canonicalization.
 */
const char *pc_header_raw(pc_ctx *ctx, size_t i, size_t *len);

/*
 * pc_header_get - the value of the n-th (from 0) field called name
 * (case-insensitive), or NULL
 */
const char *pc_header_get(pc_ctx *ctx, const char *name, size_t n);

/* pc_header_add - append a field at the end of the header */
int pc_header_add(pc_ctx *ctx, const char *name, const char *value);

/* pc_header_insert - insert a field at the top of the header */
int pc_header_insert(pc_ctx *ctx, const char *name, const char *value);

/*
 * pc_header_insert_at - insert a field before the index-th field as the
 * header is at that point of the chain (0: at the top, as
 * pc_header_insert(); past the last field: at the end)
 */
int pc_header_insert_at(pc_ctx *ctx, size_t index, const char *name, const char *value);

/*
 * pc_header_change - set the value of the n-th field called name; a NULL
 * value removes the field. Returns -1 when there is no such field.
 */
int pc_header_change(pc_ctx *ctx, const char *name, size_t n, const char *value);

/*
 * pc_body_read - read the body (what follows the header) from offset;
 * returns the byte count, 0 at the end, -1 on error. The body is read
 * from the spool as needed and never held in memory whole.
 */
ssize_t pc_body_read(pc_ctx *ctx, unsigned long long offset, void *buf, size_t len);

/*
 * Changing the message (in the data hook; PC_FILTER_ABI_MINOR >= 2)
 *
 * Besides the header, a data hook may change the envelope and the body,
 * or quarantine the message. Changes of several filters apply in chain
 * order, and the filters after one see what it changed: pc_sender(),
 * pc_mail_param(), pc_rcpt_count(), pc_rcpt() and pc_body_read() give the
 * envelope and body as they are at that point of the chain. Nothing
 * applies unless the message is accepted in the end: a REJECT, TEMPFAIL
 * or DISCARD of any filter drops every change, and so do the changes of
 * a call that returns PC_FAILED or PC_WOULDBLOCK, or passes its deadline.
 *
 * The backend sees the message as if it had come that way: MAIL and RCPT
 * went to it live while the client sent them, so when the envelope
 * changed Portcullis ends that transaction (RSET) and sends MAIL FROM
 * with the new sender (and the client's parameters unless they were
 * changed) and RCPT TO for each recipient of the final list (the client's
 * with their parameters, the added ones with theirs) before DATA. If the
 * backend refuses any of them, the client gets a 4xx or 5xx for the
 * whole message, since its recipients were all accepted already. When
 * every recipient was deleted, the message is taken (250) and delivered
 * to nobody, as Postfix does; the record says "discarded".
 *
 * Addresses are given without angle brackets ("" is the null sender <>)
 * and parameters as in the command, separated by spaces ("NOTIFY=NEVER
 * ORCPT=rfc822;bob@example.org"). Both are checked as the client's own
 * MAIL and RCPT are: a bad one is refused, -1.
 */

/*
 * pc_set_sender - a new MAIL FROM address; params NULL keeps the
 * parameters as they are (the client's, unless an earlier filter changed
 * them), a string (maybe "") replaces them
 */
int pc_set_sender(pc_ctx *ctx, const char *addr, const char *params);

/*
 * pc_rcpt_add - add a recipient at the end of the list, with its ESMTP
 * parameters (NULL: none)
 */
int pc_rcpt_add(pc_ctx *ctx, const char *addr, const char *params);

/*
 * pc_rcpt_delete - remove every recipient of that address (compared
 * without regard to case); -1 when there is none
 */
int pc_rcpt_delete(pc_ctx *ctx, const char *addr);

/*
 * pc_body_replace - replace the body (what follows the header and its
 * blank line). The first call in a hook starts a new, empty body, each
 * call appends len bytes to it, and the hook's return ends it: call it
 * in pieces of any size, the body is spooled (memory, then disk) and
 * never held whole. A bare LF or CR becomes CRLF. Returns 0, or -1 (the
 * spool could not be written: the call then counts as PC_FAILED).
 */
int pc_body_replace(pc_ctx *ctx, const void *data, size_t len);

/*
 * pc_quarantine - keep the message aside instead of delivering it: if it
 * is accepted in the end, it is written with its envelope to the
 * [portcullis] quarantine_dir (one file per message, named after the
 * session), the client gets 250 and the backend nothing. The record says
 * "quarantined", with the reason and the file. Without quarantine_dir
 * the call is refused (-1). The last reason given counts.
 */
int pc_quarantine(pc_ctx *ctx, const char *reason);

/*
 * pc_set_size_limit - lower the largest message accepted. At connect and
 * helo it holds for the session and is what EHLO advertises in SIZE; at
 * mail, for this transaction. A message that grows past it is read to its
 * end, not stored, and refused with 552 5.3.4.
 */
void pc_set_size_limit(pc_ctx *ctx, unsigned long long bytes);

/* Verdicts and results. */

/*
 * pc_set_reply - the reply that goes with the REJECT or TEMPFAIL this hook
 * returns: a 4xx or 5xx code, an RFC 3463 enhanced code of the same class
 * (or NULL for a default), and a text. Returns 0, or -1 when invalid.
 */
int pc_set_reply(pc_ctx *ctx, int code, const char *enh, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/*
 * pc_result - add "key": "value" to this filter's entry in the decision
 * record: the transaction's (also when it ends at MAIL, refused), or at
 * connect and helo, every record of the session (the connection's when
 * it has no transaction)
 */
void pc_result(pc_ctx *ctx, const char *key, const char *value);

/* pc_result_int - likewise, a number */
void pc_result_int(pc_ctx *ctx, const char *key, long long value);

/* DNS (in hooks, and in init). */

/* What pc_dns_query() returns when it has no reply to give. */
#define PC_DNS_TIMEOUT (-1) /* no server answered within timeout and retries */
#define PC_DNS_ERROR (-2)   /* a local failure: bad name, out of memory */
#define PC_DNS_WOULDBLOCK (-3) /* on the event loop: the answer is not cached */

/*
 * pc_dns_query - a DNS query (class IN, type a value of <arpa/nameser.h>
 * such as ns_t_txt) through Portcullis' resolver: the servers, timeout,
 * retries and cache of the [dns] section, one cache shared by every
 * filter of the process, honouring the TTLs of answers and of negative
 * answers (RFC 2308). Blocks the calling thread (hooks may block).
 *
 * Returns the length of the reply, a whole DNS message as res_query(3)
 * gives it, of which at most len bytes were copied into answer: parse it
 * with ns_initparse(3); its rcode tells NXDOMAIN and SERVFAIL, and a
 * NOERROR reply without records of the type is NODATA. Or PC_DNS_TIMEOUT,
 * or PC_DNS_ERROR. In a hook that runs on the event loop it never blocks:
 * what the cache does not hold gets PC_DNS_WOULDBLOCK, and the hook
 * should return PC_WOULDBLOCK (see "Threads and time").
 */
int pc_dns_query(const char *name, int type, unsigned char *answer, size_t len);

/* Diagnostics. */

enum pc_log_level { PC_LOG_DEBUG, PC_LOG_INFO, PC_LOG_WARNING, PC_LOG_ERROR };

/* pc_log - a diagnostic line, tagged with the filter and the session */
void pc_log(pc_ctx *ctx, enum pc_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * TLS of the client's connection (added after the rest of ABI 1: a
 * plugin that calls them needs a Portcullis that has them). Each string
 * is NULL, and pc_tls_bits() 0, when the session is not under TLS
 * (pc_tls() false) or the item is absent.
 */

/* pc_tls_version - the protocol version: "TLSv1.2", "TLSv1.3" */
const char *pc_tls_version(pc_ctx *ctx);

/* pc_tls_cipher - the cipher suite, as OpenSSL names it ("TLS_AES_256_GCM_SHA384") */
const char *pc_tls_cipher(pc_ctx *ctx);

/* pc_tls_bits - the cipher's secret bits (256) */
int pc_tls_bits(pc_ctx *ctx);

/* pc_tls_sni - the server name the client asked for (SNI) */
const char *pc_tls_sni(pc_ctx *ctx);

/*
 * pc_tls_peer_subject - the subject of the certificate the client
 * presented (RFC 2253 form), never verified against any CA
 */
const char *pc_tls_peer_subject(pc_ctx *ctx);

/* pc_tls_peer_fingerprint - its SHA-256 fingerprint, "sha256:" and 64 lower-case hex digits */
const char *pc_tls_peer_fingerprint(pc_ctx *ctx);

#ifdef __cplusplus
}
#endif

#endif
