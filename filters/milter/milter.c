/*
 * milter.c - the built-in "milter" filter: one external milter in the chain
 *
 * Calls a mail filter that speaks the Sendmail milter protocol (version 6,
 * as Postfix and Sendmail do: OpenDKIM, OpenDMARC, rspamd, clamav-milter,
 * anything built with libmilter), so that it sits in the chain like any
 * other filter. One [filter NAME] section per milter; several may sit
 * anywhere in the chain.
 *
 * Options:
 *	socket = inet:8891@127.0.0.1	the milter (required): inet:PORT@HOST,
 *					inet6:PORT@HOST, or unix:/PATH
 *	connect_timeout = 5s		to connect and negotiate
 *	command_timeout = 5s		for each reply before the message
 *	content_timeout = 8s		for the reply at the end of the message
 *					(a "progress" reply starts it again)
 *	connect_macros = j {daemon_name} v _
 *	helo_macros, mail_macros, rcpt_macros, data_macros, eoh_macros,
 *	eom_macros			the macros sent with each event (below);
 *					a milter that asks for its own lists
 *					in the negotiation gets those instead
 *
 * Keep the timeouts below the section's "timeout" (10 s by default): then
 * a milter that is too slow gets this filter's "on_error" with the reason
 * in the record ("the milter did not answer in time") rather than the
 * plain deadline.
 *
 * Events. The connection to the milter is opened at the session's first
 * hook (connect), negotiated (the actions and protocol steps the milter
 * wants), and kept for the session's transactions; the stages the milter
 * asked not to see are not sent, and no reply is awaited where it asked
 * to give none. connect sends the client (its name, else "[address]"),
 * helo the HELO/EHLO name, mail "<sender>" and the ESMTP parameters the
 * host knows (SIZE, BODY, SMTPUTF8, RET, ENVID, AUTH), rcpt "<recipient>",
 * and at the end of the message (the data hook) DATA, every header field
 * (the value as received, folded lines joined by a newline as Sendmail
 * sends them, the one space after the colon left out unless the milter
 * asks for it), the end of the header, the body in chunks of at most
 * 64 KiB read from the spool (CRLF line ends, as the message was
 * received), and the end of the message. A transaction that ends before
 * its message is told to the milter with an abort; the session's end with
 * a quit.
 *
 * Replies. continue goes on; accept means the milter wants nothing more of
 * this transaction (at connect and helo: of the session) and the chain
 * goes on without it; reject and tempfail refuse with the stage's default
 * reply, a reply code ("550 5.7.1 text") with that reply (the first line
 * of a multi-line one); discard at mail, rcpt or the end of the message
 * takes the message and delivers nothing; skip (during the body) sends no
 * more of the body; progress restarts the content timeout. At rcpt a
 * refusal is about that recipient only. At the end of the message the
 * milter may add, insert, change and delete header fields, change the
 * sender (with new ESMTP arguments, or without: the client's are kept),
 * add recipients (with ESMTP arguments by ADDRCPT_PAR) and delete them,
 * replace the body (its SMFIR_REPLBODY packets concatenated, spooled as
 * they come) and quarantine the message (with its reason): they apply in
 * the order sent, after this filter's place in the chain, when the final
 * reply accepts the message (see "Changing the message" in filter.h). A
 * quarantine that cannot be made (no [portcullis] quarantine_dir) fails
 * the filter rather than deliver what the milter wanted kept aside; a
 * recipient to delete that is not there, or an address that is not valid,
 * is logged and skipped, as a header change that cannot be made is.
 *
 * Failures. A milter that cannot be reached, does not answer in time,
 * closes the connection, sends a malformed or oversized packet (over
 * 1 MiB), a reply that does not belong at that point, or a change this
 * filter does not offer (recipients, sender, body, quarantine; a milter
 * that asks for them in the negotiation, as rspamd does whatever it is
 * offered, is held to what was offered and fails only when it makes
 * one): the hook returns PC_FAILED, so the section's on_error
 * decides, the record says why ("error"), and the milter is not called
 * again in that session (every later hook of it fails the same way).
 *
 * Macros. Those this filter can give: j (this host's name), v
 * ("Portcullis"), _ ("name [address]" of the client), i (the session id),
 * {daemon_name} (the listener), {client_addr}, {client_port},
 * {client_name}, {auth_authen}, {mail_addr}, {mail_host}, {mail_mailer},
 * {rcpt_addr}, {rcpt_host}, {rcpt_mailer}. Names in the lists above must
 * be among them; names a milter asks for that are not are left out.
 *
 * Decision record: "milter" (the last reply: continue, accept, reject,
 * tempfail, discard, replycode), "changes" (header and envelope changes
 * applied), "body" ("replaced") and "error" when it failed; the
 * transaction's "changes" object says what the message became.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <portcullis/filter.h>

#include "milter_proto.h"
#include "pc_list.h"

/* What this filter offers a milter. */
#define MILTER_ACTIONS                                                        \
	(SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_SETSYMLIST | SMFIF_ADDRCPT |    \
	 SMFIF_ADDRCPT_PAR | SMFIF_DELRCPT | SMFIF_CHGFROM | SMFIF_CHGBODY |   \
	 SMFIF_QUARANTINE)
#define MILTER_PROTOCOL                                                         \
	(SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOMAIL | SMFIP_NORCPT |         \
	 SMFIP_NOBODY | SMFIP_NOHDRS | SMFIP_NOEOH | SMFIP_NR_HDR |             \
	 SMFIP_NOUNKNOWN | SMFIP_NODATA | SMFIP_SKIP | SMFIP_NR_CONN |          \
	 SMFIP_NR_HELO | SMFIP_NR_MAIL | SMFIP_NR_RCPT | SMFIP_NR_DATA |        \
	 SMFIP_NR_UNKN | SMFIP_NR_EOH | SMFIP_NR_BODY | SMFIP_HDR_LEADSPC)

/* The most header and envelope changes taken from one milter for one message. */
#define MILTER_MAX_CHANGES 1000

/* The options; the macro lists are in stage order (SMFIM_*). */
static const char *const milter_options[] = {
	"socket",	 "connect_timeout", "command_timeout", "content_timeout",
	"connect_macros", "helo_macros",     "mail_macros",     "rcpt_macros",
	"data_macros",	 "eom_macros",	    "eoh_macros",      NULL,
};

/* Postfix's defaults, less what no stage here can give. */
static const char *const milter_default_macros[MILTER_STAGES] = {
	[SMFIM_CONNECT] = "j {daemon_name} v _",
	[SMFIM_HELO] = "",
	[SMFIM_ENVFROM] = "i {auth_authen} {mail_addr} {mail_host} {mail_mailer}",
	[SMFIM_ENVRCPT] = "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
	[SMFIM_DATA] = "i",
	[SMFIM_EOM] = "i",
	[SMFIM_EOH] = "i",
};

/* The command each stage's macros go with. */
static const unsigned char milter_stage_cmd[MILTER_STAGES] = {
	[SMFIM_CONNECT] = SMFIC_CONNECT, [SMFIM_HELO] = SMFIC_HELO,
	[SMFIM_ENVFROM] = SMFIC_MAIL,	 [SMFIM_ENVRCPT] = SMFIC_RCPT,
	[SMFIM_DATA] = SMFIC_DATA,	 [SMFIM_EOM] = SMFIC_BODYEOB,
	[SMFIM_EOH] = SMFIC_EOH,
};

/* The macros this filter can give. */
static const char *const milter_known_macros[] = {
	"j",		 "v",		  "_",		   "i",
	"{daemon_name}", "{client_addr}", "{client_port}", "{client_name}",
	"{auth_authen}", "{mail_addr}",	  "{mail_host}",   "{mail_mailer}",
	"{rcpt_addr}",	 "{rcpt_host}",	  "{rcpt_mailer}", NULL,
};

/* The MAIL parameters passed on (the ABI reads them by keyword). */
static const char *const milter_mail_params[] = {
	"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH", NULL,
};

struct milter_instance {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char *socket; /* as configured, for logs */
	int connect_ms, command_ms, content_ms;
	int budget_ms; /* what a hook may take: under the section's timeout */
	char *macros[MILTER_STAGES];
	char hostname[256];
};

/* What one session keeps. */
enum milter_state {
	MS_NEW,    /* not connected yet */
	MS_OPEN,   /* negotiated */
	MS_ACCEPTED,   /* the milter accepted the session: nothing more is sent */
	MS_FAILED, /* failed once: every later hook fails */
};

struct milter_session {
	enum milter_state state;
	int fd;
	bool tcp;	   /* inet or inet6: the TCP options below apply */
	uint32_t protocol; /* the steps the milter negotiated (SMFIP_*) */
	uint32_t actions;  /* the changes it may make (SMFIF_*) */
	char *macros[MILTER_STAGES]; /* its own lists, NULL: the section's */
	bool in_tx;	   /* MAIL was sent and the message not ended */
	bool tx_done;	   /* the milter accepted the transaction */
	unsigned char *in; /* what was read and not yet taken */
	size_t inlen, incap;
	struct milter_buf out;
	char *why; /* why it failed, for later hooks' records */
	long long hook_deadline; /* the running hook must return by then */
};

/* milter_parse_ms - a duration: digits with an optional "ms" or "s" (the default) */
static int milter_parse_ms(const char *text, int *ms)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(text, &end, 10);
	if (end == text || errno || v > 3600000)
		return -1;
	if (strcmp(end, "ms") == 0)
		*ms = (int)v;
	else if ((*end == '\0' || strcmp(end, "s") == 0) && v <= 3600)
		*ms = (int)v * 1000;
	else
		return -1;
	return *ms > 0 ? 0 : -1;
}

/* milter_parse_socket - inet:PORT@HOST, inet6:PORT@HOST or unix:/PATH */
static const char *milter_parse_socket(const char *text, struct milter_instance *mi)
{
	const char *at, *rest;
	char port[16], host[256];
	struct addrinfo hints = { 0 }, *res;
	int family;

	if (strncmp(text, "unix:", 5) == 0 || strncmp(text, "local:", 6) == 0) {
		struct sockaddr_un *un = (struct sockaddr_un *)&mi->addr;

		rest = strchr(text, ':') + 1;
		if (rest[0] != '/')
			return "a UNIX socket must be an absolute path";
		if (strlen(rest) >= sizeof(un->sun_path))
			return "the UNIX socket path is too long";
		un->sun_family = AF_UNIX;
		strcpy(un->sun_path, rest);
		mi->addrlen = sizeof(*un);
		return NULL;
	}
	if (strncmp(text, "inet:", 5) == 0) {
		family = AF_INET;
		rest = text + 5;
	} else if (strncmp(text, "inet6:", 6) == 0) {
		family = AF_INET6;
		rest = text + 6;
	} else {
		return "expected inet:PORT@HOST, inet6:PORT@HOST or unix:/PATH";
	}
	at = strchr(rest, '@');
	if (at == NULL || at == rest || (size_t)(at - rest) >= sizeof(port) || !at[1] ||
	    strlen(at + 1) >= sizeof(host))
		return "expected inet:PORT@HOST, inet6:PORT@HOST or unix:/PATH";
	memcpy(port, rest, (size_t)(at - rest));
	port[at - rest] = '\0';
	snprintf(host, sizeof(host), "%s", at + 1);
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	hints.ai_family = family;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL)
		return "cannot resolve the host or port";
	memcpy(&mi->addr, res->ai_addr, res->ai_addrlen);
	mi->addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	return NULL;
}

/* milter_macro_known - whether this filter can give the macro */
static bool milter_macro_known(const char *name, size_t len)
{
	for (size_t i = 0; milter_known_macros[i]; i++)
		if (strlen(milter_known_macros[i]) == len &&
		    memcmp(milter_known_macros[i], name, len) == 0)
			return true;
	return false;
}

/* milter_free - free an instance, complete or half-built */
static void milter_free(struct milter_instance *mi)
{
	if (!mi)
		return;
	free(mi->socket);
	for (int i = 0; i < MILTER_STAGES; i++)
		free(mi->macros[i]);
	free(mi);
}

static int milter_init(pc_config *config, void **instance)
{
	struct milter_instance *mi = calloc(1, sizeof(*mi));
	const char *v, *why, *p, *item;
	size_t len;
	int bad = 0;
	static const struct {
		const char *key;
		int def;
		size_t off;
	} timeouts[] = {
		{ "connect_timeout", 5000, offsetof(struct milter_instance, connect_ms) },
		{ "command_timeout", 5000, offsetof(struct milter_instance, command_ms) },
		{ "content_timeout", 8000, offsetof(struct milter_instance, content_ms) },
	};

	if (!mi)
		return -1;
	if ((v = pc_config_get(config, "socket")) == NULL || !*v) {
		pc_config_error(config, "socket", "required: inet:PORT@HOST or unix:/PATH");
		bad = 1;
	} else if ((why = milter_parse_socket(v, mi)) != NULL) {
		pc_config_error(config, "socket", "%s: \"%s\"", why, v);
		bad = 1;
	} else if ((mi->socket = strdup(v)) == NULL) {
		bad = 1;
	}
	for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++) {
		int *ms = (int *)((char *)mi + timeouts[i].off);

		*ms = timeouts[i].def;
		if ((v = pc_config_get(config, timeouts[i].key)) && milter_parse_ms(v, ms) < 0) {
			pc_config_error(config, timeouts[i].key,
					"expected a duration such as 5s or 500ms (up to 3600s): \"%s\"", v);
			bad = 1;
		}
	}
	for (int s = 0; s < MILTER_STAGES; s++) {
		const char *key = milter_options[4 + s];

		/* eom_macros and eoh_macros are listed in SMFIM order: EOM (5) before EOH (6). */
		v = pc_config_get(config, key);
		if (v == NULL)
			v = milter_default_macros[s];
		for (p = v; pc_list_next(&p, &item, &len);)
			if (!milter_macro_known(item, len)) {
				pc_config_error(config, key, "a macro this filter cannot give: \"%.*s\"",
						(int)len, item);
				bad = 1;
			}
		if ((mi->macros[s] = strdup(v)) == NULL)
			bad = 1;
	}
	/* Every hook returns before the chain's deadline for it, so it is
	 * never abandoned half-way with the session's connection in hand. */
	mi->budget_ms = 10000;
	if ((v = pc_config_get(config, "timeout")) != NULL) {
		double t = strtod(v, NULL);

		if (t > 0 && t <= 3600)
			mi->budget_ms = (int)(t * 1000);
	}
	mi->budget_ms -= mi->budget_ms / 10 > 1000 ? 1000 : mi->budget_ms / 10;
	if (mi->budget_ms < 1)
		mi->budget_ms = 1;
	if (gethostname(mi->hostname, sizeof(mi->hostname) - 1) < 0)
		snprintf(mi->hostname, sizeof(mi->hostname), "localhost");
	if (bad) {
		milter_free(mi);
		return -1;
	}
	*instance = mi;
	return 0;
}

static void milter_fini(void *instance)
{
	milter_free(instance);
}

/* now_ms - a monotonic clock in milliseconds */
static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * milter_wait - poll the milter's socket for events until the deadline or
 * the hook's own, whichever comes first; 1 ready, 0 late, -1 error
 */
static int milter_wait(const struct milter_session *ms, short events, long long deadline)
{
	struct pollfd pfd = { ms->fd, events, 0 };
	long long left;
	int n;

	if (ms->hook_deadline && ms->hook_deadline < deadline)
		deadline = ms->hook_deadline;
	for (;;) {
		left = deadline - now_ms();
		if (left <= 0)
			return 0;
		n = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
		if (n > 0)
			return 1;
		if (n < 0 && errno != EINTR)
			return -1;
	}
}

/*
 * milter_fail - the milter failed: log and record why, close, and fail
 * every later hook of the session
 */
static enum pc_status milter_fail(pc_ctx *ctx, struct milter_session *ms, const char *why)
{
	struct milter_instance *mi = pc_instance(ctx);

	if (ms->state != MS_FAILED) {
		pc_log(ctx, PC_LOG_WARNING, "milter %s: %s", mi->socket, why);
		free(ms->why);
		ms->why = strdup(why);
		if (ms->fd >= 0)
			close(ms->fd);
		ms->fd = -1;
		ms->state = MS_FAILED;
	}
	pc_result(ctx, "error", ms->why ? ms->why : why);
	return PC_FAILED;
}

/* milter_flush - send what is queued; NULL, or why not */
static const char *milter_flush(struct milter_session *ms, long long deadline)
{
	size_t off = 0;
	ssize_t n;
	int w;

	while (off < ms->out.len) {
		n = send(ms->fd, ms->out.data + off, ms->out.len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return "the connection to the milter failed while sending";
		if ((w = milter_wait(ms, POLLOUT, deadline)) <= 0)
			return w == 0 ? "the milter did not take what was sent in time"
				      : "the connection to the milter failed while sending";
	}
	ms->out.len = 0;
	return NULL;
}

/*
 * milter_read - the next packet from the milter, decoded, by the deadline;
 * NULL, or why not. r's strings point into ms->in until the next read.
 */
static const char *milter_read(struct milter_session *ms, long long deadline,
			       struct milter_reply *r, size_t *taken)
{
	struct milter_packet p;
	const char *why;
	ssize_t n;
	int w;

	/* What the previous packet used goes now. */
	if (*taken) {
		memmove(ms->in, ms->in + *taken, ms->inlen - *taken);
		ms->inlen -= *taken;
		*taken = 0;
	}
	for (;;) {
		switch (milter_packet_parse(ms->in, ms->inlen, MILTER_REPLY_MAX, &p, &why)) {
		case MILTER_DONE:
			*taken = p.consumed;
			return milter_reply_decode(&p, r);
		case MILTER_MALFORMED:
			return why;
		case MILTER_MORE:
			break;
		}
		if (ms->incap - ms->inlen < 4096) {
			size_t cap = ms->incap ? ms->incap * 2 : 8192;
			unsigned char *in;

			if (cap > MILTER_REPLY_MAX + 8)
				cap = MILTER_REPLY_MAX + 8;
			if (cap <= ms->incap || (in = realloc(ms->in, cap)) == NULL)
				return "out of memory for the milter's reply";
			ms->in = in;
			ms->incap = cap;
		}
		n = recv(ms->fd, ms->in + ms->inlen, ms->incap - ms->inlen, MSG_DONTWAIT);
		if (n > 0) {
			int one = 1;

			/*
			 * A libmilter milter writes each change and the final
			 * reply apart, and its Nagle holds the reply until the
			 * change is acknowledged; acknowledge now rather than
			 * after the delayed ACK's 40 ms (Linux clears the flag,
			 * so again after every read).
			 */
#ifdef TCP_QUICKACK
			if (ms->tcp)
				(void)setsockopt(ms->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
#else
			(void)one;
#endif
			ms->inlen += (size_t)n;
			continue;
		}
		if (n == 0)
			return "the milter closed the connection";
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return "the connection to the milter failed while reading";
		if ((w = milter_wait(ms, POLLIN, deadline)) <= 0)
			return w == 0 ? "the milter did not answer in time"
				      : "the connection to the milter failed while reading";
	}
}

/* milter_domain - the domain of an address ("" when it has none) */
static const char *milter_domain(const char *addr)
{
	const char *at = addr ? strrchr(addr, '@') : NULL;

	return at ? at + 1 : "";
}

/* milter_macro_value - the value of a macro now, or NULL when it has none */
static const char *milter_macro_value(pc_ctx *ctx, const char *name, char *buf, size_t cap)
{
	struct milter_instance *mi = pc_instance(ctx);
	const char *v;

	if (strcmp(name, "j") == 0)
		return mi->hostname;
	if (strcmp(name, "v") == 0)
		return "Portcullis";
	if (strcmp(name, "i") == 0)
		return pc_session_id(ctx);
	if (strcmp(name, "_") == 0) {
		v = pc_client_name(ctx);
		snprintf(buf, cap, "%s [%s]", v ? v : "unknown", pc_client_addr(ctx));
		return buf;
	}
	if (strcmp(name, "{daemon_name}") == 0)
		return pc_listener(ctx);
	if (strcmp(name, "{client_addr}") == 0)
		return pc_client_addr(ctx);
	if (strcmp(name, "{client_port}") == 0) {
		snprintf(buf, cap, "%u", pc_client_port(ctx));
		return buf;
	}
	if (strcmp(name, "{client_name}") == 0)
		return (v = pc_client_name(ctx)) ? v : "unknown";
	if (strcmp(name, "{auth_authen}") == 0)
		return pc_auth_user(ctx);
	if (strcmp(name, "{mail_addr}") == 0)
		return pc_sender(ctx);
	if (strcmp(name, "{mail_host}") == 0)
		return milter_domain(pc_sender(ctx));
	if (strcmp(name, "{rcpt_addr}") == 0)
		return pc_rcpt_current(ctx);
	if (strcmp(name, "{rcpt_host}") == 0)
		return milter_domain(pc_rcpt_current(ctx));
	if (strcmp(name, "{mail_mailer}") == 0 || strcmp(name, "{rcpt_mailer}") == 0)
		return "smtp";
	return NULL;
}

/* milter_queue_macros - queue the macros of stage s, those that have a value */
static int milter_queue_macros(pc_ctx *ctx, struct milter_session *ms, int s)
{
	struct milter_instance *mi = pc_instance(ctx);
	const char *list = ms->macros[s] ? ms->macros[s] : mi->macros[s], *p, *item;
	const char *names[32], *values[32];
	char namebuf[32][64], valbuf[32][300];
	size_t len, n = 0;

	for (p = list; pc_list_next(&p, &item, &len) && n < 32;) {
		const char *v;

		if (len >= sizeof(namebuf[0]) || !milter_macro_known(item, len))
			continue;
		memcpy(namebuf[n], item, len);
		namebuf[n][len] = '\0';
		v = milter_macro_value(ctx, namebuf[n], valbuf[n], sizeof(valbuf[n]));
		if (v == NULL)
			continue;
		names[n] = namebuf[n];
		values[n] = v;
		n++;
	}
	if (n == 0)
		return 0;
	return milter_put_macros(&ms->out, milter_stage_cmd[s], names, values, n);
}

/* milter_reply_name - a reply as recorded */
static const char *milter_reply_name(unsigned char cmd)
{
	switch (cmd) {
	case SMFIR_ACCEPT: return "accept";
	case SMFIR_CONTINUE: return "continue";
	case SMFIR_DISCARD: return "discard";
	case SMFIR_REJECT: return "reject";
	case SMFIR_TEMPFAIL: return "tempfail";
	case SMFIR_REPLYCODE: return "replycode";
	case SMFIR_CONN_FAIL: return "connfail";
	case SMFIR_SHUTDOWN: return "shutdown";
	default: return "other";
	}
}

/*
 * milter_verdict - what a final reply means at this stage (data: the end
 * of the message); tx tells whether accept is about the transaction
 */
static enum pc_status milter_verdict(pc_ctx *ctx, struct milter_session *ms,
				     const struct milter_reply *r, bool tx)
{
	pc_result(ctx, "milter", milter_reply_name(r->cmd));
	switch (r->cmd) {
	case SMFIR_CONTINUE:
		return PC_CONTINUE;
	case SMFIR_ACCEPT:
		if (tx)
			ms->tx_done = true;
		else
			ms->state = MS_ACCEPTED;
		return PC_CONTINUE;
	case SMFIR_REJECT:
		return PC_REJECT;
	case SMFIR_TEMPFAIL:
		return PC_TEMPFAIL;
	case SMFIR_DISCARD:
		if (!tx)
			return milter_fail(ctx, ms, "discard is for a message, not a connection");
		return PC_DISCARD;
	case SMFIR_CONN_FAIL:
	case SMFIR_SHUTDOWN:
		pc_set_reply(ctx, 421, "4.7.0", "Service not available, closing channel");
		return PC_TEMPFAIL;
	case SMFIR_REPLYCODE: {
		char enh[12];

		snprintf(enh, sizeof(enh), "%s", r->enh);
		if (pc_set_reply(ctx, r->code, enh[0] ? enh : NULL, "%.*s", (int)r->textlen,
				 r->text) < 0)
			return milter_fail(ctx, ms, "the milter's reply code was refused");
		return r->code >= 500 ? PC_REJECT : PC_TEMPFAIL;
	}
	default:
		return milter_fail(ctx, ms, "a reply that does not belong here");
	}
}

/*
 * milter_event - queue one event (its macros first), send it, and read
 * its reply unless the milter negotiated none (noreply); the verdict
 */
static enum pc_status milter_event(pc_ctx *ctx, struct milter_session *ms, int stage,
				   uint32_t noreply, bool tx)
{
	struct milter_instance *mi = pc_instance(ctx);
	long long deadline = now_ms() + mi->command_ms;
	struct milter_reply r;
	size_t taken = 0;
	const char *why;

	if ((why = milter_flush(ms, deadline)) != NULL)
		return milter_fail(ctx, ms, why);
	(void)stage;
	if (ms->protocol & noreply)
		return PC_CONTINUE;
	for (;;) {
		if ((why = milter_read(ms, deadline, &r, &taken)) != NULL)
			return milter_fail(ctx, ms, why);
		if (r.cmd != SMFIR_PROGRESS)
			break;
		deadline = now_ms() + mi->command_ms;
	}
	enum pc_status st = milter_verdict(ctx, ms, &r, tx);
	/* The packet is used: drop it from the buffer. */
	memmove(ms->in, ms->in + taken, ms->inlen - taken);
	ms->inlen -= taken;
	return st;
}

/* milter_connect_socket - open and connect the socket by the deadline; NULL or why not */
static const char *milter_connect_socket(struct milter_instance *mi, struct milter_session *ms,
					 long long deadline)
{
	int err = 0, w;
	socklen_t elen = sizeof(err);

	ms->fd = socket(mi->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ms->fd < 0)
		return "cannot make a socket for the milter";
	if (mi->addr.ss_family != AF_UNIX) {
		int one = 1;

		/* Events the milter does not answer go out back to back: Nagle
		 * would hold each until the milter's delayed ACK (40 ms). */
		ms->tcp = true;
		(void)setsockopt(ms->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	if (connect(ms->fd, (struct sockaddr *)&mi->addr, mi->addrlen) == 0)
		return NULL;
	if (errno != EINPROGRESS)
		return "cannot connect to the milter";
	if ((w = milter_wait(ms, POLLOUT, deadline)) <= 0)
		return w == 0 ? "the milter did not accept the connection in time"
			      : "cannot connect to the milter";
	if (getsockopt(ms->fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err != 0)
		return "cannot connect to the milter";
	return NULL;
}

/* milter_open - connect and negotiate; NULL, or why not */
static const char *milter_open(pc_ctx *ctx, struct milter_session *ms)
{
	struct milter_instance *mi = pc_instance(ctx);
	long long deadline = now_ms() + mi->connect_ms;
	struct milter_reply r;
	size_t taken = 0;
	const char *why;

	if ((why = milter_connect_socket(mi, ms, deadline)) != NULL)
		return why;
	if (milter_put_optneg(&ms->out, MILTER_PROTO_VERSION, MILTER_ACTIONS, MILTER_PROTOCOL) < 0)
		return "out of memory";
	if ((why = milter_flush(ms, deadline)) != NULL ||
	    (why = milter_read(ms, deadline, &r, &taken)) != NULL)
		return why;
	if (r.cmd != SMFIC_OPTNEG)
		return "the milter answered the negotiation with something else";
	if (r.version < 2 || r.version > MILTER_PROTO_VERSION)
		return "the milter speaks a protocol version other than 2 to 6";
	if (r.protocol & ~(uint32_t)MILTER_PROTOCOL)
		return "the milter asks for protocol steps this filter does not offer";
	/*
	 * rspamd answers with every action it knows whatever it was offered:
	 * it gets what was offered, and fails only when it makes a change
	 * outside that.
	 */
	ms->actions = r.actions & (uint32_t)MILTER_ACTIONS;
	ms->protocol = r.protocol;
	for (int s = 0; s < MILTER_STAGES; s++)
		if (r.macros[s] && (ms->macros[s] = strdup(r.macros[s])) == NULL)
			return "out of memory";
	memmove(ms->in, ms->in + taken, ms->inlen - taken);
	ms->inlen -= taken;
	ms->state = MS_OPEN;
	return NULL;
}

/*
 * milter_session_get - the session's milter state, connected and
 * negotiated on first use; NULL when the milter is out of this session
 * (it accepted it) or failed (*st then tells the verdict)
 */
static struct milter_session *milter_session_get(pc_ctx *ctx, enum pc_status *st)
{
	struct milter_session *ms = pc_session_data(ctx);
	const char *why;

	*st = PC_CONTINUE;
	if (ms == NULL) {
		if ((ms = calloc(1, sizeof(*ms))) == NULL) {
			pc_result(ctx, "error", "out of memory");
			*st = PC_FAILED;
			return NULL;
		}
		ms->fd = -1;
		pc_set_session_data(ctx, ms);
	}
	ms->hook_deadline = now_ms() + ((struct milter_instance *)pc_instance(ctx))->budget_ms;
	if (ms->state == MS_NEW && (why = milter_open(ctx, ms)) != NULL) {
		*st = milter_fail(ctx, ms, why);
		return NULL;
	}
	if (ms->state == MS_FAILED) {
		*st = milter_fail(ctx, ms, ms->why ? ms->why : "failed earlier in the session");
		return NULL;
	}
	return ms->state == MS_OPEN ? ms : NULL;
}

static enum pc_status milter_connect(pc_ctx *ctx)
{
	enum pc_status st;
	struct milter_session *ms = milter_session_get(ctx, &st);
	const char *addr = pc_client_addr(ctx), *name = pc_client_name(ctx);
	char host[300];
	char family = strchr(addr, ':') ? SMFIA_INET6 : SMFIA_INET;

	if (ms == NULL || (ms->protocol & SMFIP_NOCONNECT))
		return st;
	if (name == NULL) {
		snprintf(host, sizeof(host), "[%s]", addr);
		name = host;
	}
	if (milter_queue_macros(ctx, ms, SMFIM_CONNECT) < 0 ||
	    milter_put_connect(&ms->out, name, family, pc_client_port(ctx), addr) < 0)
		return milter_fail(ctx, ms, "an event too large for the milter protocol");
	return milter_event(ctx, ms, SMFIM_CONNECT, SMFIP_NR_CONN, false);
}

static enum pc_status milter_helo(pc_ctx *ctx)
{
	enum pc_status st;
	struct milter_session *ms = milter_session_get(ctx, &st);

	if (ms == NULL || (ms->protocol & SMFIP_NOHELO))
		return st;
	if (milter_queue_macros(ctx, ms, SMFIM_HELO) < 0 ||
	    milter_put_helo(&ms->out, pc_helo(ctx) ? pc_helo(ctx) : "") < 0)
		return milter_fail(ctx, ms, "an event too large for the milter protocol");
	return milter_event(ctx, ms, SMFIM_HELO, SMFIP_NR_HELO, false);
}

/* milter_bracket - "<addr>" into buf */
static const char *milter_bracket(const char *addr, char *buf, size_t cap)
{
	snprintf(buf, cap, "<%s>", addr ? addr : "");
	return buf;
}

static enum pc_status milter_mail(pc_ctx *ctx)
{
	enum pc_status st;
	struct milter_session *ms = milter_session_get(ctx, &st);
	const char *args[8];
	char sender[1024], params[6][600];
	size_t n = 0;

	if (ms == NULL)
		return st;
	ms->tx_done = false;
	ms->in_tx = true;
	if (ms->protocol & SMFIP_NOMAIL)
		return PC_CONTINUE;
	args[n++] = milter_bracket(pc_sender(ctx), sender, sizeof(sender));
	for (size_t i = 0; milter_mail_params[i]; i++) {
		const char *v = pc_mail_param(ctx, milter_mail_params[i]);

		if (v == NULL)
			continue;
		snprintf(params[n - 1], sizeof(params[0]), *v ? "%s=%s" : "%s%s",
			 milter_mail_params[i], v);
		args[n] = params[n - 1];
		n++;
	}
	if (milter_queue_macros(ctx, ms, SMFIM_ENVFROM) < 0 ||
	    milter_put_args(&ms->out, SMFIC_MAIL, args, n) < 0)
		return milter_fail(ctx, ms, "an event too large for the milter protocol");
	return milter_event(ctx, ms, SMFIM_ENVFROM, SMFIP_NR_MAIL, true);
}

static enum pc_status milter_rcpt(pc_ctx *ctx)
{
	enum pc_status st;
	struct milter_session *ms = milter_session_get(ctx, &st);
	char rcpt[1024];
	const char *args[1];

	if (ms == NULL || ms->tx_done || (ms->protocol & SMFIP_NORCPT))
		return st;
	args[0] = milter_bracket(pc_rcpt_current(ctx), rcpt, sizeof(rcpt));
	if (milter_queue_macros(ctx, ms, SMFIM_ENVRCPT) < 0 ||
	    milter_put_args(&ms->out, SMFIC_RCPT, args, 1) < 0)
		return milter_fail(ctx, ms, "an event too large for the milter protocol");
	return milter_event(ctx, ms, SMFIM_ENVRCPT, SMFIP_NR_RCPT, true);
}

/*
 * milter_header_value - the value of header field i as Sendmail sends it:
 * as received, folded lines joined by a newline, one leading space left
 * out unless the milter wants it; a filter-made field from its value
 */
static char *milter_header_value(pc_ctx *ctx, size_t i, bool leadspc)
{
	size_t len, o = 0, nl = strlen(pc_header_name(ctx, i));
	const char *raw = pc_header_raw(ctx, i, &len), *v;
	char *out;

	if (raw == NULL) {
		v = pc_header_value(ctx, i);
		if (v == NULL)
			return NULL;
		if (!leadspc)
			return strdup(v);
		out = malloc(strlen(v) + 2);
		if (out)
			sprintf(out, " %s", v);
		return out;
	}
	/* The name, white space, then the colon. */
	while (nl < len && (raw[nl] == ' ' || raw[nl] == '\t'))
		nl++;
	if (nl >= len || raw[nl] != ':')
		return NULL;
	raw += nl + 1;
	len -= nl + 1;
	if (!leadspc && len > 0 && raw[0] == ' ') {
		raw++;
		len--;
	}
	if ((out = malloc(len + 1)) == NULL)
		return NULL;
	for (size_t k = 0; k < len; k++) {
		if (raw[k] == '\r' && k + 1 < len && raw[k + 1] == '\n')
			continue; /* CRLF becomes LF */
		if (raw[k] == '\0')
			out[o++] = ' ';
		else
			out[o++] = raw[k];
	}
	out[o] = '\0';
	return out;
}

/* milter_unfold - a header value from a milter as the host takes it: newlines out */
static char *milter_unfold(const char *v)
{
	char *out = malloc(strlen(v) + 1), *o = out;

	if (out == NULL)
		return NULL;
	for (; *v; v++)
		if (*v != '\r' && *v != '\n')
			*o++ = *v;
	*o = '\0';
	return out;
}

/* milter_addr - an address as a milter gives it, the angle brackets taken off */
static char *milter_addr(const char *a)
{
	size_t n = strlen(a);

	if (n >= 2 && a[0] == '<' && a[n - 1] == '>')
		return strndup(a + 1, n - 2);
	return strdup(a);
}

/* milter_apply_envelope - one envelope change or the quarantine; 0 or -1 */
static int milter_apply_envelope(pc_ctx *ctx, const struct milter_reply *r)
{
	char *addr = r->cmd == SMFIR_QUARANTINE ? NULL : milter_addr(r->addr);
	int rc = -1;

	if (r->cmd != SMFIR_QUARANTINE && addr == NULL)
		return -1;
	switch (r->cmd) {
	case SMFIR_CHGFROM:
		rc = pc_set_sender(ctx, addr, r->args);
		break;
	case SMFIR_ADDRCPT:
	case SMFIR_ADDRCPT_PAR:
		rc = pc_rcpt_add(ctx, addr, r->args);
		break;
	case SMFIR_DELRCPT:
		rc = pc_rcpt_delete(ctx, addr);
		break;
	case SMFIR_QUARANTINE:
		rc = pc_quarantine(ctx, r->reason);
		break;
	}
	free(addr);
	return rc;
}

/* milter_apply - one header or envelope change from the milter, in order; 0 or -1 */
static int milter_apply(pc_ctx *ctx, const struct milter_reply *r)
{
	char *v;
	int rc = -1;

	if (r->cmd != SMFIR_ADDHEADER && r->cmd != SMFIR_INSHEADER && r->cmd != SMFIR_CHGHEADER)
		return milter_apply_envelope(ctx, r);
	if ((v = milter_unfold(r->value)) == NULL)
		return -1;
	switch (r->cmd) {
	case SMFIR_ADDHEADER:
		rc = pc_header_add(ctx, r->name, v);
		break;
	case SMFIR_INSHEADER:
		rc = pc_header_insert_at(ctx, r->index, r->name, v);
		break;
	case SMFIR_CHGHEADER:
		/* The n-th field of that name, from 1; an empty value deletes it. A
		 * field that is not there is added, as Sendmail does. */
		rc = pc_header_change(ctx, r->name, r->index ? r->index - 1 : 0,
				      v[0] ? v : NULL);
		if (rc < 0 && v[0])
			rc = pc_header_add(ctx, r->name, v);
		else if (rc < 0)
			rc = 0; /* deleting what is not there */
		break;
	}
	free(v);
	return rc;
}

/*
 * milter_send_body - the body in chunks, until its end or the milter says
 * skip: 0; 1 when the milter decided in the middle (*st is its verdict);
 * -1 when it failed (*st is PC_FAILED)
 */
static int milter_send_body(pc_ctx *ctx, struct milter_session *ms, enum pc_status *st)
{
	struct milter_instance *mi = pc_instance(ctx);
	unsigned char *chunk = malloc(MILTER_BODY_CHUNK);
	unsigned long long off = 0;
	struct milter_reply r;
	size_t taken = 0;
	const char *why = NULL;
	long long deadline;
	int rc = 0;
	ssize_t n = 0;

	if (chunk == NULL) {
		*st = milter_fail(ctx, ms, "out of memory");
		return -1;
	}
	while (rc == 0 && (n = pc_body_read(ctx, off, chunk, MILTER_BODY_CHUNK)) > 0) {
		off += (unsigned long long)n;
		deadline = now_ms() + mi->content_ms;
		if (milter_put_body(&ms->out, chunk, (size_t)n) < 0)
			why = "out of memory";
		else
			why = milter_flush(ms, deadline);
		if (why == NULL && !(ms->protocol & SMFIP_NR_BODY)) {
			do
				why = milter_read(ms, deadline, &r, &taken);
			while (why == NULL && r.cmd == SMFIR_PROGRESS &&
			       (deadline = now_ms() + mi->content_ms));
			if (why == NULL && r.cmd == SMFIR_SKIP)
				break;
			if (why == NULL && r.cmd != SMFIR_CONTINUE) {
				*st = milter_verdict(ctx, ms, &r, true);
				rc = 1;
			}
		}
		if (why != NULL) {
			*st = milter_fail(ctx, ms, why);
			rc = -1;
		}
	}
	if (rc == 0 && n < 0) {
		*st = milter_fail(ctx, ms, "cannot read the message from the spool");
		rc = -1;
	}
	if (ms->state != MS_FAILED && taken) {
		memmove(ms->in, ms->in + taken, ms->inlen - taken);
		ms->inlen -= taken;
	}
	free(chunk);
	return rc;
}

/*
 * A header or envelope change kept until the final reply accepts the
 * message: name is the header field's name, the address or the quarantine
 * reason; value the field's value or the ESMTP arguments (maybe NULL)
 */
struct milter_change {
	unsigned char cmd;
	uint32_t index;
	char *name, *value;
};

/* milter_change_action - the SMFIF_* a change needs, 0 for a reply that is no change */
static uint32_t milter_change_action(unsigned char cmd)
{
	switch (cmd) {
	case SMFIR_ADDHEADER:
	case SMFIR_INSHEADER: return SMFIF_ADDHDRS;
	case SMFIR_CHGHEADER: return SMFIF_CHGHDRS;
	case SMFIR_ADDRCPT: return SMFIF_ADDRCPT;
	case SMFIR_ADDRCPT_PAR: return SMFIF_ADDRCPT_PAR;
	case SMFIR_DELRCPT: return SMFIF_DELRCPT;
	case SMFIR_CHGFROM: return SMFIF_CHGFROM;
	case SMFIR_QUARANTINE: return SMFIF_QUARANTINE;
	case SMFIR_REPLBODY: return SMFIF_CHGBODY;
	default: return 0;
	}
}

static enum pc_status milter_data(pc_ctx *ctx)
{
	struct milter_instance *mi = pc_instance(ctx);
	enum pc_status st;
	struct milter_session *ms = milter_session_get(ctx, &st);
	struct milter_change *changes = NULL;
	size_t nchanges = 0, taken = 0;
	struct milter_reply r;
	long long deadline;
	const char *why;
	bool leadspc, replaced = false;

	if (ms == NULL || ms->tx_done)
		return st;
	leadspc = (ms->protocol & SMFIP_HDR_LEADSPC) != 0;
	if (!(ms->protocol & SMFIP_NODATA)) {
		if (milter_queue_macros(ctx, ms, SMFIM_DATA) < 0 ||
		    milter_put_empty(&ms->out, SMFIC_DATA) < 0)
			return milter_fail(ctx, ms, "out of memory");
		st = milter_event(ctx, ms, SMFIM_DATA, SMFIP_NR_DATA, true);
		if (st != PC_CONTINUE || ms->tx_done || ms->state != MS_OPEN)
			return st;
	}
	/* The header: one packet per field, replies only when negotiated. */
	if (!(ms->protocol & SMFIP_NOHDRS)) {
		for (size_t i = 0; i < pc_header_count(ctx); i++) {
			char *v = milter_header_value(ctx, i, leadspc);
			int rc = v ? milter_put_header(&ms->out, pc_header_name(ctx, i), v) : -1;

			free(v);
			if (rc < 0)
				return milter_fail(ctx, ms, "a header field too large for the milter protocol");
			if (!(ms->protocol & SMFIP_NR_HDR)) {
				st = milter_event(ctx, ms, SMFIM_EOH, SMFIP_NR_HDR, true);
				if (st != PC_CONTINUE || ms->tx_done || ms->state != MS_OPEN)
					return st;
			}
		}
	}
	if (!(ms->protocol & SMFIP_NOEOH)) {
		if (milter_queue_macros(ctx, ms, SMFIM_EOH) < 0 ||
		    milter_put_empty(&ms->out, SMFIC_EOH) < 0)
			return milter_fail(ctx, ms, "out of memory");
		st = milter_event(ctx, ms, SMFIM_EOH, SMFIP_NR_EOH, true);
		if (st != PC_CONTINUE || ms->tx_done || ms->state != MS_OPEN)
			return st;
	}
	deadline = now_ms() + mi->content_ms;
	if ((why = milter_flush(ms, deadline)) != NULL)
		return milter_fail(ctx, ms, why);
	if (!(ms->protocol & SMFIP_NOBODY) && milter_send_body(ctx, ms, &st) != 0) {
		/* The milter decided in the middle of the body, or failed. */
		ms->in_tx = false;
		ms->tx_done = true;
		return st;
	}
	if (milter_queue_macros(ctx, ms, SMFIM_EOM) < 0 ||
	    milter_put_empty(&ms->out, SMFIC_BODYEOB) < 0)
		return milter_fail(ctx, ms, "out of memory");
	deadline = now_ms() + mi->content_ms;
	if ((why = milter_flush(ms, deadline)) != NULL)
		return milter_fail(ctx, ms, why);
	/* Changes, progress, then one final reply. */
	for (;;) {
		if ((why = milter_read(ms, deadline, &r, &taken)) != NULL)
			break;
		if (r.cmd == SMFIR_PROGRESS) {
			deadline = now_ms() + mi->content_ms;
			continue;
		}
		uint32_t action = milter_change_action(r.cmd);
		if (action == 0)
			break;
		if (!(ms->actions & action)) {
			why = action == SMFIF_ADDHDRS || action == SMFIF_CHGHDRS
				      ? "a header change the milter did not negotiate"
				      : "a change the milter did not negotiate";
			break;
		}
		if (r.cmd == SMFIR_REPLBODY) {
			/*
			 * The pieces go to the spool as they come: the body may be
			 * larger than memory should hold. The chain drops it unless
			 * this hook lets the message go on.
			 */
			if (pc_body_replace(ctx, r.body, r.bodylen) < 0) {
				why = "the new body could not be spooled";
				break;
			}
			replaced = true;
			continue;
		}
		if (nchanges >= MILTER_MAX_CHANGES) {
			why = "more changes than this filter takes (1000)";
			break;
		}
		struct milter_change *c = realloc(changes, (nchanges + 1) * sizeof(*c));
		if (c == NULL) {
			why = "out of memory";
			break;
		}
		changes = c;
		c = &changes[nchanges];
		const char *name = r.name ? r.name : r.addr ? r.addr : r.reason;
		const char *value = r.name ? r.value : r.args;
		c->cmd = r.cmd;
		c->index = r.index;
		c->name = strdup(name);
		c->value = value ? strdup(value) : NULL;
		nchanges++;
		if (!c->name || (value && !c->value)) {
			why = "out of memory";
			break;
		}
	}
	ms->in_tx = false;
	if (why != NULL) {
		st = milter_fail(ctx, ms, why);
	} else {
		st = milter_verdict(ctx, ms, &r, true);
		/* Changes count when the message goes on. */
		if (st == PC_CONTINUE) {
			size_t applied = 0;

			for (size_t i = 0; i < nchanges && st == PC_CONTINUE; i++) {
				struct milter_change *k = &changes[i];
				bool header = milter_change_action(k->cmd) == SMFIF_ADDHDRS ||
					      milter_change_action(k->cmd) == SMFIF_CHGHDRS;
				struct milter_reply c = { .cmd = k->cmd, .index = k->index };
				if (header) {
					c.name = k->name;
					c.value = k->value;
				} else if (k->cmd == SMFIR_QUARANTINE) {
					c.reason = k->name;
				} else {
					c.addr = k->name;
					c.args = k->value;
				}
				if (milter_apply(ctx, &c) == 0)
					applied++;
				else if (k->cmd == SMFIR_QUARANTINE)
					/* Delivering what the milter wanted kept aside is no answer. */
					st = milter_fail(ctx, ms, "the quarantine was refused (no quarantine_dir?)");
				else
					pc_log(ctx, PC_LOG_WARNING, "milter %s: change of %s refused",
					       mi->socket, k->name);
			}
			if (nchanges)
				pc_result_int(ctx, "changes", (long long)applied);
			if (replaced)
				pc_result(ctx, "body", "replaced");
		}
		ms->tx_done = true;
	}
	if (ms->state != MS_FAILED && taken) {
		memmove(ms->in, ms->in + taken, ms->inlen - taken);
		ms->inlen -= taken;
	}
	for (size_t i = 0; i < nchanges; i++) {
		free(changes[i].name);
		free(changes[i].value);
	}
	free(changes);
	return st;
}

/* milter_reset - a transaction the milter saw began and did not end: abort it */
static void milter_reset(pc_ctx *ctx)
{
	struct milter_session *ms = pc_session_data(ctx);
	struct milter_instance *mi = pc_instance(ctx);

	if (ms == NULL)
		return;
	if (ms->state == MS_OPEN && ms->in_tx) {
		if (milter_put_empty(&ms->out, SMFIC_ABORT) < 0 ||
		    milter_flush(ms, now_ms() + mi->command_ms) != NULL)
			milter_fail(ctx, ms, "the abort could not be sent");
	}
	ms->in_tx = false;
	ms->tx_done = false;
}

/* milter_close - say goodbye and free the session's state */
static void milter_close(pc_ctx *ctx)
{
	struct milter_session *ms = pc_session_data(ctx);
	struct milter_instance *mi = pc_instance(ctx);

	if (ms == NULL)
		return;
	if (ms->fd >= 0) {
		ms->out.len = 0;
		if (milter_put_empty(&ms->out, SMFIC_QUIT) == 0)
			(void)milter_flush(ms, now_ms() + mi->command_ms);
		close(ms->fd);
	}
	for (int s = 0; s < MILTER_STAGES; s++)
		free(ms->macros[s]);
	milter_buf_free(&ms->out);
	free(ms->in);
	free(ms->why);
	free(ms);
	pc_set_session_data(ctx, NULL);
}

const struct pc_filter portcullis_filter = {
	PC_FILTER_HEADER,
	.name = "milter",
	.description = "calls an external milter (Sendmail milter protocol 6)",
	.options = milter_options,
	.init = milter_init,
	.fini = milter_fini,
	.connect = milter_connect,
	.helo = milter_helo,
	.mail = milter_mail,
	.rcpt = milter_rcpt,
	.data = milter_data,
	.reset = milter_reset,
	.close = milter_close,
};
