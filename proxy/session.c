/*
 * session.c - the server side of SMTP (RFC 5321) for one client
 *
 * The session is an explicit state machine over one conn (conn.h). Input
 * is read into the conn's buffer and handled by session_process()
 * one command at a time; a command that waits for the backend sets
 * `busy`, and the commands pipelined behind it stay in the buffer until
 * the relay's callback answered it (RFC 2920: replies in order). Reading
 * stops when the buffer holds SESSION_MAX_INPUT, so a client that
 * pipelines without reading cannot make us buffer without bound.
 *
 * The client timer is an idle timeout (timeout_command, timeout_data)
 * that restarts on every read, and under it two deadlines that do not:
 * a command line must be complete within command_deadline of its first
 * byte, and the DATA phase within timeout_data plus one second per
 * min_data_rate bytes read (Postfix's smtpd_per_request_deadline and
 * smtpd_min_data_rate), so a client that trickles a byte now and then
 * cannot hold a session for ever. Every command line counts against
 * max_commands, and NOOP, RSET, VRFY, ETRN and HELP since the last
 * delivered message against junk_command_limit.
 *
 * Commands are dispatched through one table (session_commands[]): a verb
 * maps to its handler and to the rules of where it is allowed (before
 * HELO, in a transaction, before TLS, its argument), which the
 * dispatcher checks with the codec's smtp_command_check() so handlers
 * hold only what is particular to their verb. Each handler either
 * answers at once or hands the command to the relay. Message data is decoded by the smtp codec (only
 * <CRLF>.<CRLF> ends it), checked for bare CR/LF and for size, and kept
 * in a spool until the backend has taken it. The client gets 250 for a
 * message only when the backend answered 250 for it.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>

#include "auth.h"
#include "conf.h"
#include "conn.h"
#include "dns.h"
#include "dovecot_auth.h"
#include "listener.h"
#include "log.h"
#include "message.h"
#include "pipeline.h"
#include "pool.h"
#include "record.h"
#include "relay.h"
#include "session.h"
#include "spool.h"
#include "tls.h"

#define SESSION_MAX_INPUT (256 * 1024)
#define SESSION_MAX_OUTPUT (64 * 1024)
#define SESSION_DATA_CHUNK 16384
#define SESSION_LINGER 10
/* An over-long command line may run on this far before we hang up. */
#define SESSION_MAX_SKIP (64 * 1024)

enum session_state {
	SESSION_COMMAND, /* waiting for a command */
	SESSION_DATA,	 /* reading message data */
	SESSION_CLOSING, /* last reply queued, closing when written */
};

/* One mail transaction, from MAIL to the final reply. */
struct session_tx {
	unsigned number;
	char *sender;
	bool smtputf8;
	struct record_rcpt *recipients; /* every RCPT answered, in order */
	size_t nrecipients, cap_recipients;
	const char **accepted; /* the addresses of those answered 2xx */
	char **accepted_lines; /* their RCPT lines, for a changed envelope */
	unsigned naccepted;
	char *mail_line;       /* the MAIL line sent, likewise */
	struct pipeline_envelope *envelope; /* the data filters' other changes */
	size_t envelope_step;  /* the envelope command under way: 0 MAIL, then RCPTs */
	struct spool *spool;
	struct smtp_data_decoder decoder;
	bool too_big;
	bool discard;	/* a filter said DISCARD: answer 250, deliver nothing */
	char *prefix;	/* header lines sent in front of the message */
	unsigned long long prefix_skip; /* spool bytes the prefix replaces */
	struct smtp_param params[SMTP_MAX_PARAMS]; /* MAIL's, for filters */
	size_t nparams;
	long long data_started; /* ms (session_now()) when DATA began, 0 before */
	unsigned long long data_read; /* bytes read in DATA, dots and CRLFs included */
};

/* What the session waits for from the relay, the filters, the resolver or the AUTH checker. */
enum session_wait {
	WAIT_NONE, WAIT_MAIL, WAIT_RCPT, WAIT_DATA, WAIT_FILTER, WAIT_NAME, WAIT_AUTH,
	WAIT_ENVELOPE, /* the changed envelope's MAIL or RCPT, before DATA */
};

/* What is known of the client's name. */
enum session_name {
	NAME_NONE,	  /* not looked up (client_name_lookup = no, a trusted peer) */
	NAME_PENDING,	  /* the lookup runs */
	NAME_CONFIRMED,	  /* name holds it */
	NAME_UNCONFIRMED, /* a PTR name (reverse_name) that does not lead back */
	NAME_UNAVAILABLE, /* no PTR record, or a peer said [UNAVAILABLE] */
	NAME_TEMPUNAVAIL, /* the resolver failed or was too slow, or a peer said so */
};

/* The client name lookups' threads: few, since most answers are cached. */
#define SESSION_NAME_THREADS 4
#define SESSION_NAME_QUEUE 4096

/*
 * One reverse lookup on a thread of the host's names pool. The session
 * may stop waiting for it (its deadline, its end) before it is done:
 * then s is NULL and done() only frees it, and cancelled tells a lookup
 * still queued not to ask at all.
 */
struct session_lookup {
	struct session *s;  /* loop thread only */
	atomic_bool cancelled;
	char addr[INET6_ADDRSTRLEN];
	enum dns_name_status status;
	char name[256], ptr[256];
};

/*
 * The client of the connection, kept aside while an XFORWARD names the
 * transaction's client (session_xforward_apply(), session_xforward_end())
 */
struct session_saved {
	char addr[INET6_ADDRSTRLEN];
	unsigned port;
	char *helo, *name, *reverse_name, *proto;
	enum session_name name_status;
	char via_addr[INET6_ADDRSTRLEN];
	unsigned via_port;
	const char *via_command;
};

/* What the client timer runs for now: its expiry names the limit passed. */
enum session_limit {
	LIMIT_IDLE,
	LIMIT_COMMAND_DEADLINE,
	LIMIT_DATA_RATE,
	LIMIT_TLS,	     /* the handshake's deadline (tls_timeout) */
	LIMIT_TLS_UNAVAILABLE, /* at once: no TLS state could be made for implicit TLS */
};

struct session {
	struct session_host *h;
	struct session *prev, *next;
	struct conn *conn;
	struct event *timer;
	char id[24];
	char addr[INET6_ADDRSTRLEN];
	unsigned port;
	char via_addr[INET6_ADDRSTRLEN]; /* the balancer, on a PROXY listener; else "" */
	unsigned via_port;
	const struct listener *listener; /* the client came in on it */
	char *helo;
	struct smtp_offer offer; /* what the client was told in the EHLO reply */
	enum session_state state;
	enum session_wait wait;
	bool skipping;	    /* discarding the rest of an overlong line */
	size_t skipped;	    /* bytes of that line discarded so far */
	bool draining;	    /* close after the current transaction */
	bool retiring;	    /* close at the next command outside a transaction */
	unsigned errors;
	unsigned overshoot; /* RCPTs refused for max_recipients, this session */
	unsigned ntransactions; /* logged so far */
	unsigned ncommands;	/* command lines read, for max_commands */
	unsigned njunk;		/* junk commands since the last delivered message */
	bool line_open;		/* part of a command line is buffered, no CRLF yet */
	long long line_started;	/* ms (session_now()) since we wait for its end */
	enum session_limit timer_for;
	struct session_tx *tx;
	struct relay *relay;
	char *rcpt_pending; /* the address of the RCPT waiting for the backend */
	char *rcpt_line;    /* and its line */
	struct pipeline_session *ps; /* the filters' state */
	char *line_pending;  /* MAIL or RCPT line waiting for the filters */
	char *helo_pending;  /* HELO argument waiting for the filters */
	bool ehlo_pending;
	/* Who the client is beyond its address (session_name_*, cmd_xclient, cmd_xforward). */
	char peer_addr[INET6_ADDRSTRLEN]; /* as accepted: what closed() reports */
	unsigned peer_port;
	char *name;	    /* the confirmed name, or NULL */
	char *reverse_name; /* the PTR name, or NULL */
	enum session_name name_status;
	char *login;	    /* a trusted peer's XCLIENT LOGIN */
	char *proto;	    /* a trusted peer's PROTO, or NULL: what the client spoke */
	const char *via_command; /* "XCLIENT", "XFORWARD": what via_addr sent */
	struct session_lookup *lookup; /* under way, or NULL */
	struct event *name_timer;      /* how long the session waits for it */
	bool connect_pending;	       /* the connect filters wait for the name */
	struct smtp_xattrs *xforward;  /* for the next transaction, or NULL */
	struct session_saved *saved;   /* the connection's client during that one */
	/* AUTH (RFC 4954): the exchange under way, and what it gave. */
	struct auth_exchange *auth_x; /* non-NULL from AUTH to its last reply */
	bool auth_client_turn;	      /* a 334 went out: the next line is the exchange's */
	unsigned long auth_request;   /* Dovecot's request id while it decides */
	struct dovecot_auth *auth_da;
	struct event *auth_timer;     /* the delay of a failure's reply */
	bool auth_refused_here;	      /* relay: our refusal replaces the backend's reply to "*" */
	char *auth_reply;	      /* a failure's reply, waiting for its delay */
	char *auth_user;	      /* the login, once 235 went out */
	enum auth_mech auth_mech;
	unsigned auth_failures;	      /* this session's */
	unsigned auth_count;	      /* the address's, across workers, at the last one */
	unsigned long auth_anvil;     /* the anvil counts the last failure */
	struct tls_conn *tls;	 /* the conn's TLS state, once a handshake began */
	bool tls_handshaking;	 /* from STARTTLS (or accept) to CONN_READY */
	struct tls_details *tlsd; /* what the handshake gave, NULL without TLS */
	struct record_tls rtls;	 /* the same for the records, pointing into it */
};

static void session_process(struct session *s);
static void session_tx_done(struct session *s);
static void session_xforward_end(struct session *s);
static void session_connect(struct session *s);
static void cmd_not_offered(struct session *s, const struct smtp_command *cmd);
static bool session_input_follows(struct session *s);
static void session_tls_failed(struct session *s, const char *why);
static void session_relay_done(void *arg, const struct smtp_reply *reply,
			       bool backend);
static void session_auth_end(struct session *s);
static void session_auth_relay_reply(struct session *s, const struct smtp_reply *reply,
				     bool backend);
static void session_envelope_reply(struct session *s, const struct smtp_reply *reply,
				   bool backend);

/*
 * session_decode_buffer - where message data is decoded before the spool:
 * one for the worker (used within one call, on the loop's thread), made
 * at the first DATA; NULL when out of memory
 */
static char *session_decode_buffer(void)
{
	static char *buf;

	if (!buf)
		buf = malloc(2 * SESSION_DATA_CHUNK + 2);
	return buf;
}

/* session_link - add to the host's list */
static void session_link(struct session *s)
{
	s->next = s->h->sessions;
	if (s->next)
		s->next->prev = s;
	s->h->sessions = s;
	s->h->nsessions++;
}

/* session_unlink - remove from the host's list */
static void session_unlink(struct session *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		s->h->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->h->nsessions--;
}

/* session_filters - whether this session runs filters at stage */
static bool session_filters(const struct session *s, enum chain_stage stage)
{
	return s->ps && pipeline_wanted(s->h->pipeline, s->ps, stage);
}

/* session_env - what the filters see now */
static void session_env(struct session *s, struct pipeline_env *env)
{
	struct session_tx *tx = s->tx;

	memset(env, 0, sizeof(*env));
	env->session_id = s->id;
	env->addr = s->addr;
	env->port = s->port;
	env->listener = s->listener ? s->listener->text : "";
	env->helo = s->helo;
	env->name = s->name_status == NAME_CONFIRMED ? s->name : NULL;
	env->esmtp = s->offer.esmtp;
	env->auth_user = s->auth_user ? s->auth_user : s->login;
	if (s->tlsd) {
		env->tls = true;
		env->tls_version = s->tlsd->version;
		env->tls_cipher = s->tlsd->cipher;
		env->tls_bits = s->tlsd->bits;
		env->tls_sni = s->rtls.sni;
		env->tls_peer_subject = s->rtls.peer_subject;
		env->tls_peer_fingerprint = s->rtls.peer_fingerprint;
	}
	if (!tx)
		return;
	env->sender = tx->sender;
	env->params = tx->params;
	env->nparams = tx->nparams;
	env->smtputf8 = tx->smtputf8;
	env->rcpts = tx->accepted;
	env->nrcpts = tx->naccepted;
}

/*
 * session_filter - run the filters of a stage; done() gets the outcome
 * and must clear s->wait. helo overrides the session's HELO name (the
 * one being decided), rcpt is the recipient being decided.
 */
static void session_filter(struct session *s, enum chain_stage stage,
			   pipeline_done_fn done, const char *helo,
			   const char *rcpt)
{
	struct pipeline_env env;

	session_env(s, &env);
	if (helo)
		env.helo = helo;
	env.rcpt = rcpt;
	if (stage == CHAIN_DATA)
		env.spool = s->tx->spool;
	s->wait = WAIT_FILTER;
	pipeline_run(s->h->pipeline, s->ps, stage, &env, done, s);
}

/* session_filters_json - the filter entries for a record, or NULL if none */
static json_t *session_filters_json(const struct session *s)
{
	return pipeline_record_filters(s->ps);
}

/* session_tx_free - end a transaction */
static void session_tx_free(struct session *s)
{
	struct session_tx *tx = s->tx;

	if (!tx)
		return;
	if (s->wait == WAIT_MAIL || s->wait == WAIT_RCPT || s->wait == WAIT_DATA ||
	    s->wait == WAIT_ENVELOPE) {
		/*
		 * Closing in the middle of an operation (the drain deadline):
		 * the relay reads the spool freed below and would answer a
		 * transaction that is gone; cut it first.
		 */
		relay_cancel(s->relay);
		s->wait = WAIT_NONE;
	}
	if (s->ps) {
		struct pipeline_env env;
		session_env(s, &env);
		pipeline_tx_end(s->h->pipeline, s->ps, &env);
	}
	for (size_t i = 0; i < tx->nparams; i++) {
		free(tx->params[i].keyword);
		free(tx->params[i].value);
	}
	free(tx->sender);
	for (size_t i = 0; i < tx->nrecipients; i++) {
		free(tx->recipients[i].address);
		free(tx->recipients[i].reply);
	}
	free(tx->recipients);
	free(tx->accepted);
	for (size_t i = 0; i < tx->naccepted; i++)
		free(tx->accepted_lines[i]);
	free(tx->accepted_lines);
	free(tx->mail_line);
	pipeline_envelope_free(tx->envelope);
	spool_free(tx->spool);
	free(tx->prefix);
	free(tx);
	s->tx = NULL;
	session_xforward_end(s);
}

/* session_name_status - the record's name_status, NULL when not looked up */
static const char *session_name_status(enum session_name st)
{
	switch (st) {
	case NAME_NONE:
		return NULL;
	case NAME_CONFIRMED:
		return "confirmed";
	case NAME_UNCONFIRMED:
		return "unconfirmed";
	case NAME_UNAVAILABLE:
		return "unavailable";
	case NAME_PENDING: /* the session ended before the answer */
	case NAME_TEMPUNAVAIL:
		return "tempunavail";
	}
	return NULL;
}

/* session_record_client - who the client is, for a decision record */
static struct record_client session_record_client(const struct session *s)
{
	return (struct record_client){ s->addr, s->port, s->helo,
				       s->listener ? s->listener->text : NULL,
				       s->via_addr[0] ? s->via_addr : NULL, s->via_port,
				       s->via_addr[0] ? s->via_command : NULL,
				       s->name_status == NAME_CONFIRMED ? s->name : NULL,
				       s->reverse_name, session_name_status(s->name_status),
				       s->auth_user, auth_mech_name(s->auth_mech),
				       s->auth_failures, s->tlsd ? &s->rtls : NULL };
}

/*
 * session_trusted - whether the client may send XCLIENT and XFORWARD:
 * its address is in the listener's trusted_xclient. The address is the
 * session's client: on a PROXY listener the one the header named (not
 * the balancer, which would trust everyone behind it), and after an
 * XCLIENT the client it named, as Postfix checks again.
 */
static bool session_trusted(const struct session *s)
{
	const struct conf_listener *set = s->listener ? s->listener->settings : NULL;
	unsigned char bin[16];

	if (!set || set->ntrusted_xclient == 0)
		return false;
	if (inet_pton(AF_INET, s->addr, bin) == 1)
		return conf_net_match(set->trusted_xclient, set->ntrusted_xclient, AF_INET, bin);
	return inet_pton(AF_INET6, s->addr, bin) == 1 &&
	       conf_net_match(set->trusted_xclient, set->ntrusted_xclient, AF_INET6, bin);
}

/* session_name_set - what is known of the client's name (name and reverse copied) */
static void session_name_set(struct session *s, enum session_name st,
			     const char *name, const char *reverse)
{
	free(s->name);
	free(s->reverse_name);
	s->name = name && *name ? strdup(name) : NULL;
	s->reverse_name = reverse && *reverse ? strdup(reverse) : NULL;
	s->name_status = st;
	if (st == NAME_CONFIRMED && !s->name)
		s->name_status = NAME_TEMPUNAVAIL; /* out of memory */
}

/*
 * session_name_given - NAME from a trusted peer. Without one, a new ADDR
 * leaves the name unknown: no lookup is made for an address a peer gave
 * (it had the client, and the chance to look it up).
 */
static void session_name_given(struct session *s, const struct smtp_xattrs *x)
{
	switch (x->state[SMTP_XA_NAME]) {
	case SMTP_XV_VALUE:
		session_name_set(s, NAME_CONFIRMED, x->value[SMTP_XA_NAME],
				 x->value[SMTP_XA_NAME]);
		break;
	case SMTP_XV_UNAVAILABLE:
		session_name_set(s, NAME_UNAVAILABLE, NULL, NULL);
		break;
	case SMTP_XV_TEMPUNAVAIL:
		session_name_set(s, NAME_TEMPUNAVAIL, NULL, NULL);
		break;
	case SMTP_XV_ABSENT:
		if (x->state[SMTP_XA_ADDR] != SMTP_XV_ABSENT)
			session_name_set(s, NAME_UNAVAILABLE, NULL, NULL);
		break;
	}
}

/* session_xattr_dup - a given attribute's value (NULL for [UNAVAILABLE]), or a copy of old */
static char *session_xattr_dup(const struct smtp_xattrs *x, enum smtp_xattr a,
			       const char *old)
{
	if (x->state[a] == SMTP_XV_ABSENT)
		return old ? strdup(old) : NULL;
	return x->state[a] == SMTP_XV_VALUE ? strdup(x->value[a]) : NULL;
}

/* session_xattr_addr - ADDR and PORT a peer gave, into the session's client */
static void session_xattr_addr(struct session *s, const struct smtp_xattrs *x)
{
	/* [UNAVAILABLE] keeps the address: filters and records need a numeric one. */
	if (x->state[SMTP_XA_ADDR] == SMTP_XV_VALUE)
		/* canonical numeric form (smtp_xattrs_parse()): it fits */
		snprintf(s->addr, sizeof(s->addr), "%.*s", (int)sizeof(s->addr) - 1,
			 x->value[SMTP_XA_ADDR]);
	if (x->state[SMTP_XA_PORT] == SMTP_XV_VALUE)
		s->port = (unsigned)strtoul(x->value[SMTP_XA_PORT], NULL, 10);
	else if (x->state[SMTP_XA_PORT] == SMTP_XV_UNAVAILABLE)
		s->port = 0;
}

/* session_lookup_detach - stop waiting for the name lookup (it frees itself) */
static void session_lookup_detach(struct session *s)
{
	if (!s->lookup)
		return;
	atomic_store(&s->lookup->cancelled, true);
	s->lookup->s = NULL;
	s->lookup = NULL;
	evtimer_del(s->name_timer);
}

/*
 * session_xforward_apply - the transaction just begun is that of the
 * client the XFORWARD attributes name (Postfix's smtpd_proxy_filter
 * sends them before each MAIL): the connection's client is kept aside
 * until the transaction ends, and the peer becomes the record's via
 */
static void session_xforward_apply(struct session *s)
{
	struct smtp_xattrs *x = s->xforward;
	struct session_saved *sv;

	if (!x)
		return;
	s->xforward = NULL;
	sv = calloc(1, sizeof(*sv));
	if (!sv) {
		log_error("session %s: out of memory: XFORWARD attributes ignored", s->id);
		free(x);
		return;
	}
	memcpy(sv->addr, s->addr, sizeof(sv->addr));
	sv->port = s->port;
	sv->helo = s->helo;
	sv->name = s->name;
	sv->reverse_name = s->reverse_name;
	sv->proto = s->proto;
	sv->name_status = s->name_status;
	memcpy(sv->via_addr, s->via_addr, sizeof(sv->via_addr));
	sv->via_port = s->via_port;
	sv->via_command = s->via_command;
	s->saved = sv;

	s->helo = session_xattr_dup(x, SMTP_XA_HELO, sv->helo);
	s->proto = session_xattr_dup(x, SMTP_XA_PROTO, sv->proto);
	s->name = sv->name ? strdup(sv->name) : NULL;
	s->reverse_name = sv->reverse_name ? strdup(sv->reverse_name) : NULL;
	session_xattr_addr(s, x);
	session_name_given(s, x);
	memcpy(s->via_addr, sv->addr, sizeof(s->via_addr));
	s->via_port = sv->port;
	s->via_command = "XFORWARD";
	log_debug("session %s: transaction %u for [%s]:%u (XFORWARD from [%s]:%u)", s->id,
		  s->tx ? s->tx->number : 0, s->addr, s->port, sv->addr, sv->port);
	free(x);
}

/* session_xforward_end - the transaction ended: the connection's client again */
static void session_xforward_end(struct session *s)
{
	struct session_saved *sv = s->saved;

	if (!sv)
		return;
	s->saved = NULL;
	free(s->helo);
	free(s->name);
	free(s->reverse_name);
	free(s->proto);
	memcpy(s->addr, sv->addr, sizeof(s->addr));
	s->port = sv->port;
	s->helo = sv->helo;
	s->name = sv->name;
	s->reverse_name = sv->reverse_name;
	s->proto = sv->proto;
	s->name_status = sv->name_status;
	memcpy(s->via_addr, sv->via_addr, sizeof(s->via_addr));
	s->via_port = sv->via_port;
	s->via_command = sv->via_command;
	free(sv);
}

/* session_tls_mode - the listener's TLS mode (enum conf_tls) */
static int session_tls_mode(const struct session *s)
{
	return s->listener && s->listener->settings ? s->listener->settings->tls
						    : CONF_TLS_NONE;
}

/*
 * session_log_tx - the decision record of the current transaction
 * action: accepted, rejected, tempfailed, discarded or aborted.
 */
static void session_log_tx(struct session *s, const char *action,
			   const char *reply, const struct smtp_reply *backend,
			   const char *reason)
{
	const struct session_tx *tx = s->tx;
	struct record_client client = session_record_client(s);
	struct record_tx rtx = {
		.number = tx->number,
		.sender = tx->sender,
		.recipients = tx->recipients,
		.nrecipients = tx->nrecipients,
		.sized = tx->spool != NULL,
		.size = tx->decoder.bytes_out,
		.action = action,
		.reply = reply,
		.reason = reason,
		.changes = tx->envelope ? tx->envelope->changes : NULL,
	};
	struct record_backend rb = { 0 };
	bool with_backend = s->relay && *relay_server(s->relay);

	if (with_backend) {
		rb.server = relay_server(s->relay);
		rb.reused = relay_reused(s->relay);
		rb.reply = backend;
		rb.tls_version = relay_tls_version(s->relay, &rb.tls_cipher);
	}
	record_transaction(s->id, &client, &rtx, with_backend ? &rb : NULL,
			   session_filters_json(s));
	s->ntransactions++;
}

/* session_log_connection - the record of this session without a transaction */
static void session_log_connection(struct session *s, const char *action,
				   const char *reason)
{
	struct record_client client = session_record_client(s);

	record_connection(s->id, &client, action, reason, session_filters_json(s));
}

/* session_free - release the session; the connection is closed */
static void session_free(struct session *s, const char *action,
			 const char *reason)
{
	if (s->tx)
		session_log_tx(s, "aborted", NULL, NULL, reason);
	else if (s->ntransactions == 0)
		session_log_connection(s, action, reason);
	log_debug("session %s from [%s]:%u ended: %s", s->id, s->addr, s->port,
		  reason);
	session_tx_free(s);
	if (s->ps) {
		struct pipeline_env env;
		session_env(s, &env);
		pipeline_session_end(s->h->pipeline, s->ps, &env);
		s->ps = NULL;
	}
	/* Closing the relay here aborts a half-sent message at the backend. */
	relay_free(s->relay);
	conn_free(s->conn);
	event_free(s->timer);
	session_lookup_detach(s);
	event_free(s->name_timer);
	session_xforward_end(s);
	session_unlink(s);
	free(s->helo);
	free(s->rcpt_pending);
	free(s->rcpt_line);
	free(s->line_pending);
	free(s->helo_pending);
	free(s->name);
	free(s->reverse_name);
	free(s->login);
	free(s->proto);
	free(s->xforward);
	session_auth_end(s);
	if (s->auth_anvil && s->h->auth_failed_cancel)
		s->h->auth_failed_cancel(s->h->arg, s->auth_anvil);
	if (s->auth_timer)
		event_free(s->auth_timer);
	free(s->auth_user);
	free(s->auth_reply);
	free(s->tlsd);
	struct session_host *h = s->h;
	/* The address the connection was counted under, whatever XCLIENT said. */
	char addr[sizeof(s->peer_addr)];
	unsigned port = s->peer_port;
	memcpy(addr, s->peer_addr, sizeof(addr));
	free(s);
	h->closed(h->arg, addr, port);
}

/*
 * Replies sent from more than one place, written once: each stands for
 * the code, enhanced code and text arguments of session_send(),
 * session_error() and session_close().
 */
#define REPLY_OK 250, "2.0.0", "Ok"
#define REPLY_RCPT_OK 250, "2.1.5", "Ok"
#define REPLY_OOM 451, "4.3.0", "Error: out of memory, try again later"
#define REPLY_TOO_MANY_RCPTS 452, "4.5.3", "Error: too many recipients"
#define REPLY_SHUTDOWN 421, "4.3.2", "Service shutting down, try again later"
#define REPLY_TOO_MANY_ERRORS 421, "4.7.0", "Error: too many errors"

/* session_send_wire - queue a whole reply line given without CRLF */
static void session_send_wire(struct session *s, const char *wire)
{
	evbuffer_add_printf(conn_output(s->conn), "%s\r\n", wire);
}

/*
 * session_send - queue one reply line "CODE ENH TEXT" and give it back
 * (without CRLF) for the record, so the text sent and the text logged
 * are one string; it stays valid until the next reply
 */
static const char *session_send(struct session *s, int code, const char *enh,
				const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static const char *session_send(struct session *s, int code, const char *enh,
				const char *fmt, ...)
{
	/* One loop thread per worker: one line at a time. */
	static char line[SMTP_REPLY_LINE_MAX];
	int n = enh ? snprintf(line, sizeof(line), "%d %s ", code, enh)
		    : snprintf(line, sizeof(line), "%d ", code);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	session_send_wire(s, line);
	return line;
}

/*
 * session_closing_timer - the last reply is queued: free the session when
 * it is written (write callback), or after SESSION_LINGER seconds if the
 * client does not read it
 */
static void session_closing_timer(struct session *s)
{
	struct timeval tv = { SESSION_LINGER, 0 };

	evtimer_add(s->timer, &tv);
}

/*
 * session_close_wire - send a last reply (a whole line without CRLF),
 * then close once it is written; action is that of the connection
 * record when the session had no transaction
 */
static void session_close_wire(struct session *s, const char *wire,
			       const char *action, const char *reason)
{
	session_send_wire(s, wire);
	s->state = SESSION_CLOSING;
	conn_read_disable(s->conn);
	/* Keep the reason for the record written when the socket closes. */
	if (s->tx)
		session_log_tx(s, "aborted", NULL, NULL, reason);
	session_tx_free(s);
	if (s->ntransactions == 0) {
		session_log_connection(s, action, reason);
		s->ntransactions = 1; /* logged */
	}
	session_closing_timer(s);
}

/* session_close - send a last reply, then close once it is written */
static void session_close(struct session *s, int code, const char *enh,
			  const char *text, const char *reason)
{
	char wire[600];

	snprintf(wire, sizeof(wire), "%d %s %s %s", code, enh, s->h->conf->hostname, text);
	session_close_wire(s, wire, "dropped", reason);
}

/*
 * session_error - answer a client error; too many of them end the session
 * (a client looping on errors, or guessing addresses, is cut off).
 */
static void session_error(struct session *s, int code, const char *enh,
			  const char *text)
{
	session_send(s, code, enh, "%s", text);
	if (++s->errors >= s->h->conf->max_errors)
		session_close(s, REPLY_TOO_MANY_ERRORS, "too many errors");
}

/* session_smtp_error - answer a parser error */
static void session_smtp_error(struct session *s, const struct smtp_error *err)
{
	session_error(s, err->code, err->enh, err->text);
}

/* session_now - a monotonic clock in milliseconds, for the deadlines */
static long long session_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * session_deadline - when the client must be done with what it sends now
 * (ms, session_now()), or -1 when no deadline runs: the end of a command
 * line begun, or the end of the message, which may take timeout_data and
 * one more second per min_data_rate bytes read. The rate is judged once
 * DATA has bytes: a client silent after 354 meets the idle timeout.
 */
static long long session_deadline(const struct session *s)
{
	const struct conf *c = s->h->conf;
	const struct session_tx *tx = s->tx;

	if (s->state == SESSION_COMMAND && s->line_open && c->command_deadline)
		return s->line_started + 1000LL * c->command_deadline;
	if (s->state == SESSION_DATA && c->min_data_rate && tx &&
	    tx->data_started && tx->data_read)
		return tx->data_started + 1000LL * c->timeout_data +
		       (long long)(tx->data_read * 1000 / c->min_data_rate);
	return -1;
}

/*
 * session_arm - set the client timer for what we now wait for: the idle
 * timeout, or the deadline when that comes first
 */
static void session_arm(struct session *s)
{
	const struct conf *c = s->h->conf;
	long long ms, deadline;
	struct timeval tv;

	if (s->state == SESSION_CLOSING || s->tls_handshaking)
		return; /* the handshake has its own deadline (session_tls_start) */
	if (s->wait != WAIT_NONE) {
		/* The client waits for us: no client timeout now. */
		evtimer_del(s->timer);
		return;
	}
	ms = 1000LL * (s->state == SESSION_DATA ? c->timeout_data : c->timeout_command);
	s->timer_for = LIMIT_IDLE;
	deadline = session_deadline(s);
	if (deadline >= 0) {
		long long left = deadline - session_now();
		if (left < ms) {
			ms = left > 0 ? left : 0;
			s->timer_for = s->state == SESSION_DATA ? LIMIT_DATA_RATE
								: LIMIT_COMMAND_DEADLINE;
		}
	}
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	evtimer_add(s->timer, &tv);
}

/*
 * session_tls_failed - a handshake did not finish: log why, write a
 * connection record (also after earlier transactions: this connection
 * ends now for a TLS reason) and close without a word
 */
static void session_tls_failed(struct session *s, const char *why)
{
	char reason[300];

	snprintf(reason, sizeof(reason), "TLS handshake failed: %s", why);
	log_info("session %s from [%s]:%u: %s", s->id, s->addr, s->port, reason);
	session_log_connection(s, "dropped", reason);
	s->ntransactions++; /* logged */
	session_free(s, "dropped", reason);
}

/* session_timeout - the client was silent too long, or is past a deadline */
static void session_timeout(evutil_socket_t fd, short events, void *arg)
{
	struct session *s = arg;

	if (s->state == SESSION_CLOSING) {
		session_free(s, "dropped", "client did not read the last reply");
		return;
	}
	switch (s->timer_for) {
	case LIMIT_COMMAND_DEADLINE:
		session_close(s, 421, "4.4.2", "Error: command deadline exceeded",
			      "command deadline");
		break;
	case LIMIT_DATA_RATE:
		session_close(s, 421, "4.4.2", "Error: data rate too low",
			      "data rate too low");
		break;
	case LIMIT_IDLE:
		session_close(s, 421, "4.4.2", "Error: timeout exceeded", "timeout");
		break;
	case LIMIT_TLS:
		/* Nothing can be said in clear inside a handshake: hang up. */
		session_tls_failed(s, "timeout");
		break;
	case LIMIT_TLS_UNAVAILABLE:
		session_tls_failed(s, "TLS not available (out of memory)");
		break;
	}
}

/*
 * session_own_limit - the largest message this listener takes: its own
 * message_size_limit, else the [portcullis] one
 */
static unsigned long long session_own_limit(const struct session *s)
{
	const struct conf_listener *l = s->listener ? s->listener->settings : NULL;

	return l && l->message_size_limit ? l->message_size_limit
					  : s->h->conf->message_size_limit;
}

/* session_host_limit - the largest message the host and backend take */
static unsigned long long session_host_limit(const struct session *s)
{
	unsigned long long limit = session_own_limit(s);
	const struct smtp_caps *caps = backend_caps(s->h->backends);

	if (caps && caps->size && caps->size_limit &&
	    caps->size_limit < limit)
		limit = caps->size_limit;
	return limit;
}

/*
 * session_size_limit - the largest message this session accepts: the
 * host's, or lower when a filter said so
 */
static unsigned long long session_size_limit(const struct session *s)
{
	unsigned long long limit = session_host_limit(s);

	if (s->ps) {
		unsigned long long f = pipeline_size_limit(s->ps);
		if (f && f < limit)
			limit = f;
	}
	return limit;
}

/*
 * session_resume - after an answer the session waited for: go on with
 * the commands the client pipelined behind it
 */
static void session_resume(struct session *s)
{
	if (s->state == SESSION_CLOSING)
		return;
	if (s->errors >= s->h->conf->max_errors) {
		session_close(s, REPLY_TOO_MANY_ERRORS, "too many errors");
		return;
	}
	session_process(s);
}

/*
 * session_filter_back - the filters answered: false when the session no
 * longer waits for them (it is closing)
 */
static bool session_filter_back(struct session *s)
{
	if (s->wait != WAIT_FILTER || s->state == SESSION_CLOSING) {
		free(s->line_pending);
		s->line_pending = NULL;
		free(s->helo_pending);
		s->helo_pending = NULL;
		return false;
	}
	s->wait = WAIT_NONE;
	return true;
}

/*
 * session_line_back - the filters answered on a MAIL or RCPT: its line,
 * the caller's now, or NULL when the session no longer waits (closing)
 */
static char *session_line_back(struct session *s)
{
	char *line;

	if (!session_filter_back(s))
		return NULL;
	line = s->line_pending;
	s->line_pending = NULL;
	return line;
}

/* session_reset - forget the transaction (RSET, HELO, EHLO) */
static void session_reset(struct session *s, const char *why)
{
	if (s->tx)
		session_log_tx(s, "aborted", NULL, NULL, why);
	session_tx_free(s);
}

/* session_esmtp - whether the client speaks ESMTP (a trusted peer's PROTO first) */
static bool session_esmtp(const struct session *s)
{
	return s->proto ? strcasecmp(s->proto, "SMTP") != 0 : s->offer.esmtp;
}

/* session_relay_client - who the client is, as the relay tells the backend */
static struct relay_client session_relay_client(const struct session *s)
{
	return (struct relay_client){
		.addr = s->addr, .port = s->port, .helo = s->helo, .esmtp = session_esmtp(s),
		.name = s->name_status == NAME_CONFIRMED ? s->name : NULL,
		.reverse_name = s->reverse_name,
		.name_tempfail = s->name_status == NAME_TEMPUNAVAIL ||
				 s->name_status == NAME_PENDING,
		.login = s->auth_user ? s->auth_user : s->login,
	};
}

/*
 * AUTH (RFC 4954). The exchange's SASL side is auth.c's; here are its
 * replies, who checks the credentials (Dovecot, or the backend the
 * exchange is relayed to), and what a failure costs. Failures are
 * counted per client address over auth_failure_window by the anvil, so
 * across sessions and workers (each session alone when the anvil cannot
 * tell); a failure's reply waits auth_failure_delay, doubled with each
 * failure counted (on the session's own timer: the loop never sleeps),
 * and the one that reaches auth_failure_limit ends the session with 421.
 * The password is never logged nor recorded; the login is, once 235
 * went out.
 */
#define REPLY_AUTH_TEMPFAIL 454, "4.7.0", "Temporary authentication failure"
#define REPLY_AUTH_OK 235, "2.7.0", "Authentication successful"
#define REPLY_AUTH_INVALID 535, "5.7.8", "Authentication credentials invalid"
/* RFC 4954 6; Postfix says 530 5.7.0 for smtpd_tls_auth_only. */
#define REPLY_AUTH_NEEDS_TLS 538, "5.7.11", "Encryption required for requested authentication mechanism"
/* The longest a failure's reply waits, however many came before. */
#define SESSION_AUTH_DELAY_MAX_MS 30000

/*
 * session_tls_active - whether the session is under TLS: the one place
 * AUTH asks (auth_require_tls, Dovecot's "secured")
 */
static bool session_tls_active(const struct session *s)
{
	return s->tlsd != NULL;
}

/* session_auth_conf - the listener's AUTH settings, or NULL when it offers none */
static const struct conf_listener *session_auth_conf(const struct session *s)
{
	const struct conf_listener *l = s->listener ? s->listener->settings : NULL;

	return l && l->auth != CONF_AUTH_OFF ? l : NULL;
}

/*
 * session_auth_mechs - the mechanisms AUTH takes now (1 << AUTH_MECH_*):
 * none without TLS when the listener requires it; with Dovecot those it
 * announced (LOGIN is checked as PLAIN, so it needs PLAIN too; PLAIN and
 * LOGIN before the first handshake); relayed, those the backend offers
 */
static unsigned session_auth_mechs(struct session *s)
{
	const struct conf_listener *l = session_auth_conf(s);
	const unsigned both = 1u << AUTH_MECH_PLAIN | 1u << AUTH_MECH_LOGIN;

	if (!l || (l->auth_require_tls && !session_tls_active(s)))
		return 0;
	if (l->auth == CONF_AUTH_DOVECOT) {
		unsigned m;
		if (!s->auth_da)
			s->auth_da = dovecot_auth_for(s->h->base, l->auth_socket,
						      l->auth_timeout_ms);
		m = s->auth_da ? dovecot_auth_mechs(s->auth_da) : 0;
		if (m == 0)
			return both;
		return m & (1u << AUTH_MECH_PLAIN) ? m & both : 0;
	}
	const struct smtp_caps *caps = backend_caps(s->h->backends);
	unsigned m = 0;
	if (caps && caps->auth) {
		const char *p = caps->auth_mechs;
		while (*p) {
			size_t len = strcspn(p, " ");
			m |= 1u << auth_mech_parse(p, len);
			p += len;
			p += strspn(p, " ");
		}
	}
	return m & both;
}

/* session_auth_line - the EHLO line "AUTH PLAIN LOGIN", or false for none */
static bool session_auth_line(struct session *s, char *buf, size_t cap)
{
	unsigned m = session_auth_mechs(s);

	if (!m)
		return false;
	snprintf(buf, cap, "AUTH%s%s", m & (1u << AUTH_MECH_PLAIN) ? " PLAIN" : "",
		 m & (1u << AUTH_MECH_LOGIN) ? " LOGIN" : "");
	return true;
}

/* session_auth_end - the exchange is over: forget it, the password wiped */
static void session_auth_end(struct session *s)
{
	if (s->auth_request && s->auth_da)
		dovecot_auth_cancel(s->auth_da, s->auth_request);
	s->auth_request = 0;
	if (s->auth_x) {
		auth_exchange_clear(s->auth_x);
		free(s->auth_x);
		s->auth_x = NULL;
	}
	s->auth_client_turn = false;
	s->auth_refused_here = false;
}

/* session_auth_refuse - a reply that ends the exchange, counted as an error */
static void session_auth_refuse(struct session *s, int code, const char *enh,
				const char *text)
{
	session_auth_end(s);
	session_error(s, code, enh, text);
}

/* session_auth_success - 235: the session is the user's from now on */
static void session_auth_success(struct session *s, const char *user)
{
	char *login = strdup(user);

	if (!login) {
		session_auth_refuse(s, REPLY_AUTH_TEMPFAIL);
		return;
	}
	s->auth_user = login;
	s->auth_mech = s->auth_x->mech;
	session_auth_end(s);
	log_info("session %s from [%s]:%u: AUTH %s as %s", s->id, s->addr, s->port,
		 auth_mech_name(s->auth_mech), s->auth_user);
	session_send(s, REPLY_AUTH_OK);
}

/* session_auth_delayed - a failure's delay is over: its reply, or 421 */
static void session_auth_delayed(evutil_socket_t fd, short events, void *arg)
{
	struct session *s = arg;
	const struct conf_listener *l = session_auth_conf(s);

	s->wait = WAIT_NONE;
	if (l && l->auth_failure_limit && s->auth_count >= l->auth_failure_limit) {
		session_close(s, 421, "4.7.0", "Too many failed authentication attempts",
			      "too many failed authentication attempts");
		return;
	}
	session_send_wire(s, s->auth_reply);
	free(s->auth_reply);
	s->auth_reply = NULL;
	s->errors++;
	session_resume(s);
}

/*
 * session_auth_penalty - the failures of the address are known (count,
 * 0 when the anvil could not tell: the session's own then): the reply
 * waits auth_failure_delay, doubled for each failure before this one
 */
static void session_auth_penalty(void *data, unsigned count)
{
	struct session *s = data;
	const struct conf_listener *l = session_auth_conf(s);
	unsigned long long ms = l ? l->auth_failure_delay_ms : 0;
	struct timeval tv;

	s->auth_anvil = 0;
	s->auth_count = count > s->auth_failures ? count : s->auth_failures;
	for (unsigned i = 1; i < s->auth_count && ms < SESSION_AUTH_DELAY_MAX_MS; i++)
		ms *= 2;
	if (ms > SESSION_AUTH_DELAY_MAX_MS)
		ms = SESSION_AUTH_DELAY_MAX_MS;
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	evtimer_add(s->auth_timer, &tv);
}

/*
 * session_auth_failure - wrong credentials: reply (a whole line) goes
 * out after the delay (session_auth_penalty), once the anvil counted
 * the failure
 */
static void session_auth_failure(struct session *s, const char *reply)
{
	const struct conf_listener *l = session_auth_conf(s);

	log_info("session %s from [%s]:%u: AUTH %s failed", s->id, s->addr, s->port,
		 s->auth_x ? auth_mech_name(s->auth_x->mech) : "");
	session_auth_end(s);
	s->auth_failures++;
	free(s->auth_reply);
	s->auth_reply = strdup(reply);
	if (!s->auth_reply || (!s->auth_timer &&
	    !(s->auth_timer = evtimer_new(s->h->base, session_auth_delayed, s)))) {
		free(s->auth_reply);
		s->auth_reply = NULL;
		session_error(s, REPLY_AUTH_TEMPFAIL);
		return;
	}
	s->wait = WAIT_AUTH;
	if (s->h->auth_failed)
		s->auth_anvil = s->h->auth_failed(s->h->arg, s->addr, l->auth_failure_window,
						  session_auth_penalty, s);
	if (!s->auth_anvil)
		session_auth_penalty(s, 0);
}

/* session_auth_dovecot_done - Dovecot decided */
static void session_auth_dovecot_done(void *arg, enum dovecot_result result,
				      const char *user)
{
	struct session *s = arg;
	char wire[128];

	s->auth_request = 0;
	s->wait = WAIT_NONE;
	switch (result) {
	case DOVECOT_OK:
		/* Dovecot's name for the login (it may map the one given). */
		session_auth_success(s, user ? user : s->auth_x->creds.user);
		break;
	case DOVECOT_FAIL:
		snprintf(wire, sizeof(wire), "%d %s %s", REPLY_AUTH_INVALID);
		session_auth_failure(s, wire);
		if (s->wait == WAIT_AUTH)
			return; /* the delay's timer resumes the session */
		break;
	case DOVECOT_TEMPFAIL:
		session_auth_refuse(s, REPLY_AUTH_TEMPFAIL);
		break;
	}
	session_resume(s);
}

/* session_auth_check - the credentials are complete: ask who checks them */
static void session_auth_check(struct session *s)
{
	char resp[4 * ((3 * AUTH_FIELD_MAX + 2 + 2) / 3) + 1];

	if (!auth_plain_message(&s->auth_x->creds, resp, sizeof(resp))) {
		session_auth_refuse(s, 501, "5.5.2", "Invalid authentication data");
		return;
	}
	s->auth_client_turn = false;
	s->wait = WAIT_AUTH;
	s->auth_request = s->auth_da ? dovecot_auth_request(s->auth_da, resp, s->addr,
							    session_tls_active(s),
							    session_auth_dovecot_done, s)
				     : 0;
	explicit_bzero(resp, sizeof(resp));
	if (!s->auth_request) {
		s->wait = WAIT_NONE;
		session_auth_refuse(s, REPLY_AUTH_TEMPFAIL);
	}
}

/* session_auth_next - after the exchange took a line: ask, refuse or check */
static void session_auth_next(struct session *s, enum auth_next next)
{
	switch (next) {
	case AUTH_NEXT_CHALLENGE:
		s->auth_client_turn = true;
		evbuffer_add_printf(conn_output(s->conn), "334 %s\r\n", s->auth_x->challenge);
		break;
	case AUTH_NEXT_REFUSE:
		session_auth_refuse(s, s->auth_x->code, s->auth_x->enh, s->auth_x->text);
		break;
	case AUTH_NEXT_CHECK:
		session_auth_check(s);
		break;
	}
}

/* session_auth_relay_send - hand a line of the exchange to the backend */
static void session_auth_relay_send(struct session *s, const char *line, bool first)
{
	s->auth_client_turn = false;
	s->wait = WAIT_AUTH;
	if (first) {
		struct relay_client client = session_relay_client(s);
		relay_auth(s->relay, &client, line);
	} else {
		relay_auth_continue(s->relay, line);
	}
}

/*
 * session_auth_relay_reply - the backend answered a line of a relayed
 * exchange: 334 goes to the client, 235 makes the login what the client
 * sent, a 5xx is a failure (its reply delayed), anything else 454
 */
static void session_auth_relay_reply(struct session *s, const struct smtp_reply *reply,
				     bool backend)
{
	char wire[1200];
	size_t n;

	if (s->auth_refused_here) {
		/* The backend took our "*": the client gets our own refusal. */
		session_auth_refuse(s, s->auth_x->code, s->auth_x->enh, s->auth_x->text);
	} else if (!backend || reply->code / 100 == 4 || reply->code / 100 == 1 ||
		   (reply->code / 100 == 3 && reply->code != 334)) {
		if (backend)
			log_info("session %s: backend answered AUTH with %d", s->id, reply->code);
		session_auth_refuse(s, REPLY_AUTH_TEMPFAIL);
	} else if (reply->code == 334) {
		s->auth_client_turn = true;
		evbuffer_add_printf(conn_output(s->conn), "334 %s\r\n",
				    reply->nlines ? reply->lines[0] : "");
	} else if (reply->code / 100 == 2) {
		if (!s->auth_x->creds.user[0])
			/* An exchange we could not follow: the backend knows who. */
			session_auth_success(s, "[unknown]");
		else
			session_auth_success(s, s->auth_x->creds.user);
	} else {
		n = smtp_reply_format(reply, "5.7.8", wire, sizeof(wire));
		if (n >= sizeof(wire))
			snprintf(wire, sizeof(wire), "%d %s %s", REPLY_AUTH_INVALID);
		wire[strcspn(wire, "\r\n")] = 0; /* one line: the first */
		session_auth_failure(s, wire);
		if (s->wait == WAIT_AUTH)
			return;
	}
	session_resume(s);
}

/* session_auth_input - the client's answer to a 334 (len bytes, no CRLF) */
static void session_auth_input(struct session *s, const char *line, size_t len)
{
	enum auth_next next = auth_step(s->auth_x, line, len);

	if (session_auth_conf(s)->auth == CONF_AUTH_RELAY) {
		char *copy;
		if (next == AUTH_NEXT_REFUSE) {
			/* The backend's half of the exchange ends too (RFC 4954 4). */
			s->auth_refused_here = true;
			session_auth_relay_send(s, "*", false);
			return;
		}
		copy = strndup(line, len);
		if (!copy) {
			s->auth_refused_here = true;
			s->auth_x->code = 454;
			s->auth_x->enh = "4.7.0";
			s->auth_x->text = "Temporary authentication failure";
			session_auth_relay_send(s, "*", false);
			return;
		}
		session_auth_relay_send(s, copy, false);
		explicit_bzero(copy, len);
		free(copy);
		return;
	}
	session_auth_next(s, next);
}

/* session_auth_too_long - an exchange line past RFC 4954's 12288 bytes */
static void session_auth_too_long(struct session *s)
{
	if (session_auth_conf(s)->auth == CONF_AUTH_RELAY) {
		s->auth_refused_here = true;
		s->auth_x->code = 500;
		s->auth_x->enh = "5.5.6";
		s->auth_x->text = "Authentication Exchange line is too long";
		session_auth_relay_send(s, "*", false);
		return;
	}
	session_auth_refuse(s, 500, "5.5.6", "Authentication Exchange line is too long");
}

/* cmd_auth - AUTH (RFC 4954 4) */
static void cmd_auth(struct session *s, const struct smtp_command *cmd)
{
	const struct conf_listener *l = session_auth_conf(s);
	enum auth_next next;
	unsigned mechs;

	if (!l) {
		session_error(s, 502, "5.5.1", "Error: command not implemented");
		return;
	}
	if (s->auth_user) {
		session_error(s, 503, "5.5.1", "Error: already authenticated");
		return;
	}
	mechs = session_auth_mechs(s);
	if (!mechs) {
		if (l->auth_require_tls && !session_tls_active(s))
			session_error(s, REPLY_AUTH_NEEDS_TLS);
		else /* relayed to a backend that offers neither PLAIN nor LOGIN */
			session_error(s, 504, "5.5.4", "Unrecognized authentication mechanism");
		return;
	}
	s->auth_x = calloc(1, sizeof(*s->auth_x));
	if (!s->auth_x) {
		session_error(s, REPLY_OOM);
		return;
	}
	next = auth_start(s->auth_x, cmd->arg, cmd->arg_len, mechs);
	if (l->auth == CONF_AUTH_RELAY && next != AUTH_NEXT_REFUSE) {
		char *line = NULL;
		if (asprintf(&line, "AUTH %.*s", (int)cmd->arg_len, cmd->arg) < 0) {
			session_auth_refuse(s, REPLY_AUTH_TEMPFAIL);
			return;
		}
		session_auth_relay_send(s, line, true);
		explicit_bzero(line, strlen(line));
		free(line);
		return;
	}
	session_auth_next(s, next);
}

/*
 * session_mail_auth_param - drop MAIL's AUTH= parameter (RFC 4954 5)
 * where AUTH is offered, once checked: it is ours to take, and the
 * backend, which did not offer AUTH to us, would refuse it. 0, or -1
 * after the error reply.
 */
static int session_mail_auth_param(struct session *s, struct smtp_path *path)
{
	for (size_t i = 0; i < path->nparams; i++) {
		if (strcasecmp(path->params[i].keyword, "AUTH") != 0)
			continue;
		if (!session_auth_conf(s))
			return 0; /* not offered: the codec refuses it */
		if (!auth_mail_param_valid(path->params[i].value)) {
			session_error(s, 501, "5.5.4", "Bad AUTH parameter");
			return -1;
		}
		free(path->params[i].keyword);
		free(path->params[i].value);
		memmove(&path->params[i], &path->params[i + 1],
			(path->nparams - i - 1) * sizeof(path->params[0]));
		path->nparams--;
		i--;
	}
	return 0;
}

/* session_helo_finish - the HELO or EHLO reply; takes helo */
static void session_helo_finish(struct session *s, char *helo, bool ehlo)
{
	static const struct smtp_caps unknown; /* before the first probe: nothing */
	const struct smtp_caps *caps = backend_caps(s->h->backends);
	bool known = caps != NULL;
	struct evbuffer *out = conn_output(s->conn);
	const char *lines[12];
	char size_line[40], auth_line[40];
	size_t n = 0;

	session_reset(s, ehlo ? "EHLO" : "HELO");
	free(s->helo);
	s->helo = helo;
	memset(&s->offer, 0, sizeof(s->offer));
	s->offer.esmtp = ehlo;
	struct relay_client client = session_relay_client(s);
	relay_prepare(s->relay, &client);
	if (!ehlo) {
		session_send(s, 250, NULL, "%s", s->h->conf->hostname);
		return;
	}
	/*
	 * Offer what the backend offers to our own EHLO, and only that: a
	 * parameter accepted here must be one the backend takes.
	 */
	if (!known)
		caps = &unknown;
	s->offer.size = known && caps->size;
	s->offer.size_limit = caps->size_limit ? caps->size_limit : session_own_limit(s);
	if (s->offer.size_limit > session_own_limit(s))
		s->offer.size_limit = session_own_limit(s);
	if (s->ps) {
		/* A filter's limit (the size filter's) is what we announce. */
		unsigned long long f = pipeline_size_limit(s->ps);
		if (f && f < s->offer.size_limit)
			s->offer.size_limit = f;
	}
	s->offer.eightbitmime = known && caps->eightbitmime;
	s->offer.smtputf8 = known && caps->smtputf8;
	s->offer.dsn = known && caps->dsn;

	lines[n++] = "PIPELINING";
	if (s->offer.size) {
		snprintf(size_line, sizeof(size_line), "SIZE %llu", s->offer.size_limit);
		lines[n++] = size_line;
	}
	if (s->offer.eightbitmime)
		lines[n++] = "8BITMIME";
	if (s->offer.smtputf8)
		lines[n++] = "SMTPUTF8";
	if (s->offer.dsn)
		lines[n++] = "DSN";
	if (session_trusted(s)) {
		/* What smtp_xattrs_parse() takes: SMTP_XCLIENT_ATTRS, SMTP_XFORWARD_ATTRS. */
		lines[n++] = "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT";
		lines[n++] = "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE";
	}
	if (session_auth_line(s, auth_line, sizeof(auth_line)))
		lines[n++] = auth_line;
	/* RFC 3207 4.2: not once TLS is on. */
	if (session_tls_mode(s) == CONF_TLS_STARTTLS && !s->tlsd)
		lines[n++] = "STARTTLS";
	lines[n++] = "ENHANCEDSTATUSCODES";
	evbuffer_add_printf(out, "250-%s\r\n", s->h->conf->hostname);
	for (size_t i = 0; i < n; i++)
		evbuffer_add_printf(out, "250%c%s\r\n", i + 1 < n ? '-' : ' ', lines[i]);
}

/* session_helo_done - the filters decided on HELO/EHLO */
static void session_helo_done(void *arg, struct pipeline_outcome *out)
{
	struct session *s = arg;
	char *helo = s->helo_pending;

	if (!session_filter_back(s))
		return;
	s->helo_pending = NULL;
	if (out->status == PC_CONTINUE) {
		session_helo_finish(s, helo, s->ehlo_pending);
	} else {
		/* Refused: the session stays as it was before this HELO. */
		free(helo);
		session_send_wire(s, out->reply);
		s->errors++;
	}
	session_resume(s);
}

/* cmd_helo - HELO and EHLO (RFC 5321 4.1.1.1) */
static void cmd_helo(struct session *s, const struct smtp_command *cmd)
{
	bool ehlo = cmd->verb == SMTP_VERB_EHLO;
	char *helo;

	/*
	 * RFC 5321 4.1.1.1: a Domain or an address literal. What is not
	 * goes neither to the backend (in XCLIENT or Received:) nor to the
	 * record. A UTF-8 name only where SMTPUTF8 is on offer (RFC 6531 3.7.1).
	 */
	if (!smtp_helo_valid(cmd->arg, cmd->arg_len,
			     ehlo && backend_caps(s->h->backends) &&
			     backend_caps(s->h->backends)->smtputf8)) {
		session_error(s, 501, "5.5.2", "Error: invalid HELO/EHLO hostname");
		return;
	}
	helo = strndup(cmd->arg, cmd->arg_len);
	if (!helo) {
		session_error(s, REPLY_OOM);
		return;
	}
	if (session_filters(s, CHAIN_HELO)) {
		free(s->helo_pending);
		s->helo_pending = helo;
		s->ehlo_pending = ehlo;
		session_filter(s, CHAIN_HELO, session_helo_done, helo, NULL);
		return;
	}
	session_helo_finish(s, helo, ehlo);
}

/* session_path_line - "VERB:<path> params" rebuilt from what we checked */
static char *session_path_line(const char *verb, const struct smtp_path *p)
{
	struct evbuffer *b = evbuffer_new();
	char *line;
	size_t len;

	/* The source route is dropped, as RFC 5321 C says a relay may. */
	evbuffer_add_printf(b, "%s<%s>", verb, p->path);
	for (size_t i = 0; i < p->nparams; i++) {
		if (p->params[i].value)
			evbuffer_add_printf(b, " %s=%s", p->params[i].keyword,
					    p->params[i].value);
		else
			evbuffer_add_printf(b, " %s", p->params[i].keyword);
	}
	len = evbuffer_get_length(b);
	line = malloc(len + 1);
	if (line) {
		evbuffer_remove(b, line, len);
		line[len] = 0;
	}
	evbuffer_free(b);
	return line;
}

/* session_tx_refused - a filter's REJECT or TEMPFAIL ends the transaction */
static void session_tx_refused(struct session *s, const struct pipeline_outcome *out,
			       const char *reason)
{
	session_send_wire(s, out->reply);
	s->errors++;
	session_log_tx(s, out->status == PC_REJECT ? "rejected" : "tempfailed",
		       out->reply, NULL, reason);
	session_tx_done(s);
}

/* session_mail_relay - hand MAIL to the backend; takes line */
static void session_mail_relay(struct session *s, char *line)
{
	struct relay_client client = session_relay_client(s);

	s->wait = WAIT_MAIL;
	relay_mail(s->relay, &client, line);
	free(line);
}

/* session_mail_done - the filters decided on MAIL */
static void session_mail_done(void *arg, struct pipeline_outcome *out)
{
	struct session *s = arg;
	char *line = session_line_back(s);

	if (!line)
		return;
	switch (out->status) {
	case PC_DISCARD:
		/* 250 to everything, nothing to the backend. */
		s->tx->discard = true;
		session_send(s, 250, "2.1.0", "Ok");
		break;
	case PC_REJECT:
	case PC_TEMPFAIL:
		session_tx_refused(s, out, "MAIL refused by a filter");
		break;
	default:
		session_mail_relay(s, line);
		return; /* the relay's answer resumes the session */
	}
	free(line);
	session_resume(s);
}

/* cmd_mail - MAIL FROM (RFC 5321 4.1.1.2) */
static void cmd_mail(struct session *s, const struct smtp_command *cmd)
{
	struct smtp_path path = { 0 };
	struct smtp_error err;
	bool smtputf8;
	char *line;

	if (s->draining) {
		session_close(s, REPLY_SHUTDOWN, "shutting down");
		return;
	}
	if (smtp_path_parse(cmd->arg, cmd->arg_len, false, &path, &err) < 0) {
		session_smtp_error(s, &err);
		return;
	}
	if (session_mail_auth_param(s, &path) < 0) {
		smtp_path_free(&path);
		return;
	}
	/* A filter's lower limit is the filter's to enforce, so its
	 * refusal is logged with its reasons: SIZE= is held to the host's. */
	if (smtp_mail_params_check(&path, &s->offer, session_host_limit(s),
				   &smtputf8, &err) < 0) {
		smtp_path_free(&path);
		session_smtp_error(s, &err);
		return;
	}
	line = session_path_line("MAIL FROM:", &path);
	s->tx = calloc(1, sizeof(*s->tx));
	if (!line || !s->tx || !(s->tx->sender = strdup(path.path))) {
		free(line);
		smtp_path_free(&path);
		session_tx_free(s);
		session_error(s, REPLY_OOM);
		return;
	}
	s->tx->number = s->ntransactions + 1;
	s->tx->smtputf8 = smtputf8;
	if (!(s->tx->mail_line = strdup(line))) {
		session_tx_free(s);
		session_error(s, REPLY_OOM);
		free(line);
		smtp_path_free(&path);
		return;
	}
	session_xforward_apply(s);
	for (size_t i = 0; i < path.nparams; i++) {
		/* Kept for the filters (pc_mail_param()). */
		struct smtp_param *tp = &s->tx->params[s->tx->nparams++];
		tp->keyword = strdup(path.params[i].keyword);
		tp->value = path.params[i].value ? strdup(path.params[i].value) : NULL;
	}
	smtp_path_free(&path);

	if (session_filters(s, CHAIN_MAIL)) {
		free(s->line_pending);
		s->line_pending = line;
		session_filter(s, CHAIN_MAIL, session_mail_done, NULL, NULL);
		return;
	}
	session_mail_relay(s, line);
}

/*
 * session_rcpt_record - the pending recipient and the reply it got; the
 * lists grow by doubling, so a transaction costs a few allocations
 */
static void session_rcpt_record(struct session *s, const char *wire)
{
	struct session_tx *tx = s->tx;
	size_t len = strcspn(wire, "\r\n");
	char *reply = strndup(wire, len);

	if (tx->nrecipients == tx->cap_recipients) {
		size_t cap = tx->cap_recipients ? 2 * tx->cap_recipients : 8;
		struct record_rcpt *r = realloc(tx->recipients, cap * sizeof(*r));
		if (r)
			tx->recipients = r;
		const char **a = realloc(tx->accepted, cap * sizeof(*a));
		if (a)
			tx->accepted = a;
		char **l = realloc(tx->accepted_lines, cap * sizeof(*l));
		if (l)
			tx->accepted_lines = l;
		if (r && a && l)
			tx->cap_recipients = cap;
	}
	if (!reply || !s->rcpt_pending || tx->nrecipients == tx->cap_recipients) {
		/* Out of memory: the reply went out, the record lacks the line. */
		log_error("session %s: out of memory recording a recipient", s->id);
		free(reply);
		return;
	}
	/* The pending address is the list's now. */
	tx->recipients[tx->nrecipients++] = (struct record_rcpt){ s->rcpt_pending, reply };
	if (wire[0] == '2') {
		tx->accepted_lines[tx->naccepted] = s->rcpt_line;
		tx->accepted[tx->naccepted++] = s->rcpt_pending;
		s->rcpt_line = NULL;
	}
	s->rcpt_pending = NULL;
}

/* session_rcpt_relay - hand RCPT to the backend; takes line */
static void session_rcpt_relay(struct session *s, char *line)
{
	s->wait = WAIT_RCPT;
	relay_command(s->relay, line);
	free(line);
}

/*
 * session_rcpt_done - the filters decided on one RCPT. It reads as
 * session_mail_done() because both answer a filter verdict on one line;
 * what each verdict does differs (a refused MAIL ends the transaction, a
 * refused RCPT only that recipient), so they stay two functions.
 */
static void session_rcpt_done(void *arg, struct pipeline_outcome *out)
{
	struct session *s = arg;
	char *line = session_line_back(s);

	if (!line)
		return;
	switch (out->status) {
	case PC_DISCARD:
		s->tx->discard = true;
		session_rcpt_record(s, session_send(s, REPLY_RCPT_OK));
		break;
	case PC_REJECT:
	case PC_TEMPFAIL:
		/* This recipient only: the transaction goes on. */
		session_send_wire(s, out->reply);
		session_rcpt_record(s, out->reply);
		s->errors++;
		break;
	default:
		session_rcpt_relay(s, line);
		return; /* the relay's answer resumes the session */
	}
	free(line);
	session_resume(s);
}

/* cmd_rcpt - RCPT TO (RFC 5321 4.1.1.3) */
static void cmd_rcpt(struct session *s, const struct smtp_command *cmd)
{
	struct smtp_path path = { 0 };
	struct smtp_error err;
	char *line;

	if (smtp_path_parse(cmd->arg, cmd->arg_len, true, &path, &err) < 0) {
		session_smtp_error(s, &err);
		return;
	}
	if (smtp_rcpt_params_check(&path, &s->offer, s->tx->smtputf8, &err) < 0) {
		smtp_path_free(&path);
		session_smtp_error(s, &err);
		return;
	}
	if (s->tx->naccepted >= s->h->conf->max_recipients) {
		/*
		 * A client that pipelines more recipients than we take sends
		 * the rest again in another transaction (RFC 5321 4.5.3.1.10):
		 * that is no error, or the 421 for too many errors would lose
		 * the message to the recipients already accepted. Only a client
		 * far past the limit (Postfix's smtpd_recipient_overshoot_limit)
		 * is counted as erring.
		 */
		smtp_path_free(&path);
		if (++s->overshoot > s->h->conf->recipient_overshoot_limit)
			session_error(s, REPLY_TOO_MANY_RCPTS);
		else
			session_send(s, REPLY_TOO_MANY_RCPTS);
		return;
	}
	line = session_path_line("RCPT TO:", &path);
	free(s->rcpt_pending);
	s->rcpt_pending = strdup(path.path);
	free(s->rcpt_line);
	s->rcpt_line = line ? strdup(line) : NULL;
	smtp_path_free(&path);
	if (!line || !s->rcpt_pending || !s->rcpt_line) {
		free(line);
		session_error(s, REPLY_OOM);
		return;
	}
	if (s->tx->discard) {
		/* The transaction goes nowhere: no need to ask anyone. */
		free(line);
		session_rcpt_record(s, session_send(s, REPLY_RCPT_OK));
		return;
	}
	if (session_filters(s, CHAIN_RCPT)) {
		free(s->line_pending);
		s->line_pending = line;
		session_filter(s, CHAIN_RCPT, session_rcpt_done, NULL, s->rcpt_pending);
		return;
	}
	session_rcpt_relay(s, line);
}

/* cmd_data - DATA (RFC 5321 4.1.1.4) */
static void cmd_data(struct session *s, const struct smtp_command *cmd)
{
	if (s->tx->nrecipients == 0) {
		session_error(s, 503, "5.5.1", "Error: need RCPT command");
		return;
	}
	if (s->tx->naccepted == 0) {
		session_error(s, 554, "5.5.1", "Error: no valid recipients");
		return;
	}
	if (!s->tx->discard && !relay_is_open(s->relay)) {
		/* The backend went away after RCPT: nothing could be delivered. */
		session_log_tx(s, "tempfailed",
			       session_send(s, 451, "4.4.2",
					    "Lost connection to the backend mail server, try again later"),
			       NULL, "backend lost before DATA");
		session_tx_free(s);
		return;
	}
	s->tx->spool = spool_new(s->h->conf->spool_dir, s->h->conf->spool_memory_limit);
	if (!s->tx->spool || !session_decode_buffer()) {
		session_error(s, REPLY_OOM);
		return;
	}
	smtp_data_decoder_init(&s->tx->decoder,
			       s->h->conf->bare_newline == CONF_BARE_NORMALIZE);
	session_send(s, 354, NULL, "End data with <CR><LF>.<CR><LF>");
	s->state = SESSION_DATA;
}

/* cmd_rset - RSET (RFC 5321 4.1.1.5) */
static void cmd_rset(struct session *s, const struct smtp_command *cmd)
{
	/* The relay sends RSET itself before the backend's next MAIL. */
	session_reset(s, "RSET");
	session_send(s, REPLY_OK);
}

/* cmd_noop - NOOP (RFC 5321 4.1.1.9) */
static void cmd_noop(struct session *s, const struct smtp_command *cmd)
{
	session_send(s, REPLY_OK);
}

/* cmd_quit - QUIT (RFC 5321 4.1.1.10) */
static void cmd_quit(struct session *s, const struct smtp_command *cmd)
{
	session_reset(s, "QUIT");
	session_send(s, 221, "2.0.0", "Bye");
	s->state = SESSION_CLOSING;
	conn_read_disable(s->conn);
	if (s->ntransactions == 0) {
		session_log_connection(s, "closed", "QUIT");
		s->ntransactions = 1;
	}
	session_closing_timer(s);
}

/* cmd_vrfy - VRFY: never confirm addresses (RFC 5321 3.5.3) */
static void cmd_vrfy(struct session *s, const struct smtp_command *cmd)
{
	session_send(s, 252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery");
}

/* cmd_help - HELP (RFC 5321 4.1.1.8) */
static void cmd_help(struct session *s, const struct smtp_command *cmd)
{
	session_send(s, 214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY");
}

/*
 * session_tls_start - the conn goes over t from now on: its handshake
 * runs from the loop under tls_timeout, and the session starts again
 * from nothing once it is done (session_tls_ready)
 */
static void session_tls_start(struct session *s, struct tls_conn *t)
{
	const struct conf_listener *ls = s->listener->settings;
	struct timeval tv = { (time_t)(ls->tls_timeout_ms / 1000),
			      (suseconds_t)(ls->tls_timeout_ms % 1000) * 1000 };

	s->tls = t;
	s->tls_handshaking = true;
	conn_start_tls(s->conn, &tls_transport, t);
	s->timer_for = LIMIT_TLS;
	evtimer_add(s->timer, &tv);
}

/*
 * cmd_starttls - STARTTLS (RFC 3207): 220, then the handshake. What the
 * client pipelined behind it in clear text is thrown away unread
 * (CVE-2011-0411), and all it said before is forgotten (4.2): it says
 * EHLO again under TLS.
 */
static void cmd_starttls(struct session *s, const struct smtp_command *cmd)
{
	struct tls_conn *t;

	/*
	 * Its argument and place are checked here, not by the table: where
	 * STARTTLS is not offered it is 502 whatever the client wrote.
	 */
	if (s->tlsd) {
		session_error(s, 503, "5.5.1", "Error: TLS already active");
		return;
	}
	if (session_tls_mode(s) != CONF_TLS_STARTTLS) {
		cmd_not_offered(s, cmd);
		return;
	}
	if (cmd->arg_len) {
		session_error(s, 501, "5.5.4", smtp_verb_syntax(cmd->verb));
		return;
	}
	if (s->tx) {
		session_error(s, 503, "5.5.1", "Error: MAIL transaction in progress");
		return;
	}
	t = tls_conn_new(s->listener->settings->tls_server, conn_fd(s->conn), NULL, 0);
	if (!t) {
		session_error(s, 454, "4.7.0", "TLS not available due to temporary reason");
		return;
	}
	if (session_input_follows(s))
		log_info("session %s from [%s]:%u: %zu bytes pipelined after STARTTLS discarded",
			 s->id, s->addr, s->port, evbuffer_get_length(conn_input(s->conn)));
	session_send(s, 220, "2.0.0", "Ready to start TLS");
	/* As a new EHLO would: no transaction, no HELO, nothing offered. */
	session_reset(s, "STARTTLS");
	free(s->helo);
	s->helo = NULL;
	memset(&s->offer, 0, sizeof(s->offer));
	s->line_open = false;
	s->skipping = false;
	/* Nor a login, nor what a trusted peer's XFORWARD said. */
	session_auth_end(s);
	free(s->auth_user);
	s->auth_user = NULL;
	free(s->xforward);
	s->xforward = NULL;
	session_tls_start(s, t);
}

/* cmd_not_offered - a known verb of an extension we do not offer */
static void cmd_not_offered(struct session *s, const struct smtp_command *cmd)
{
	session_error(s, 502, "5.5.1", "Error: command not implemented");
}

/* cmd_unknown - a verb we do not know */
static void cmd_unknown(struct session *s, const struct smtp_command *cmd)
{
	session_error(s, 500, "5.5.1", "Error: command not recognized");
}

/*
 * session_xattrs - the attributes of XCLIENT or XFORWARD (xforward), or
 * NULL after the refusal: in Postfix's order, an empty command's syntax
 * (501 5.5.4), a peer outside trusted_xclient (550 5.7.0, what Postfix
 * answers a host not in smtpd_authorized_xclient_hosts), then the
 * attributes (501 5.5.4)
 */
static struct smtp_xattrs *session_xattrs(struct session *s, const struct smtp_command *cmd,
					  bool xforward)
{
	struct smtp_xattrs *x = malloc(sizeof(*x));
	struct smtp_error err;

	if (!x) {
		session_error(s, REPLY_OOM);
		return NULL;
	}
	if (cmd->arg_len > 0 && !session_trusted(s)) {
		log_info("session %s: %s refused from [%s]:%u: not in trusted_xclient", s->id,
			 xforward ? "XFORWARD" : "XCLIENT", s->addr, s->port);
		session_error(s, 550, "5.7.0", "Error: insufficient authorization");
		free(x);
		return NULL;
	}
	if (smtp_xattrs_parse(cmd->arg, cmd->arg_len, xforward, x, &err) < 0) {
		session_smtp_error(s, &err);
		free(x);
		return NULL;
	}
	return x;
}

/*
 * cmd_xclient - XCLIENT (Postfix's XCLIENT_README) from a trusted peer:
 * the session starts again as a new connection from the client it names
 * (new filter state, connect filters, a new 220 greeting); what it does
 * not name is forgotten (HELO, LOGIN, PROTO) or kept (ADDR, PORT)
 */
static void cmd_xclient(struct session *s, const struct smtp_command *cmd)
{
	struct smtp_xattrs *x = session_xattrs(s, cmd, false);
	struct pipeline_env env;

	if (!x)
		return;
	if (!s->via_command || strcmp(s->via_command, "XCLIENT") != 0) {
		/* The peer that speaks for the client; a second XCLIENT keeps it. */
		memcpy(s->via_addr, s->addr, sizeof(s->via_addr));
		s->via_port = s->port;
		s->via_command = "XCLIENT";
	}
	session_lookup_detach(s);
	session_xattr_addr(s, x);
	session_name_given(s, x);
	free(s->helo);
	s->helo = session_xattr_dup(x, SMTP_XA_HELO, NULL);
	free(s->login);
	s->login = session_xattr_dup(x, SMTP_XA_LOGIN, NULL);
	free(s->proto);
	s->proto = session_xattr_dup(x, SMTP_XA_PROTO, NULL);
	free(s->xforward);
	s->xforward = NULL;
	memset(&s->offer, 0, sizeof(s->offer));
	s->errors = 0;
	s->njunk = 0;
	log_info("session %s: XCLIENT from [%s]:%u: client [%s]:%u name %s", s->id,
		 s->via_addr, s->via_port, s->addr, s->port, s->name ? s->name : "unknown");
	free(x);
	if (s->ps) {
		/* A new connection for the filters too: close hooks, then connect. */
		session_env(s, &env);
		pipeline_session_end(s->h->pipeline, s->ps, &env);
		s->ps = pipeline_session_new(s->h->pipeline);
		if (!s->ps) {
			session_close(s, 421, "4.3.0", "Error: out of memory", "out of memory");
			return;
		}
	}
	session_connect(s);
}

/*
 * cmd_xforward - XFORWARD (Postfix's XFORWARD_README) from a trusted
 * peer: attributes add up until the next MAIL, whose transaction is that
 * client's (session_xforward_apply())
 */
static void cmd_xforward(struct session *s, const struct smtp_command *cmd)
{
	struct smtp_xattrs *x = session_xattrs(s, cmd, true);

	if (!x)
		return;
	if (!s->xforward) {
		s->xforward = x;
	} else {
		for (int a = 0; a < SMTP_XA_COUNT; a++) {
			if (x->state[a] == SMTP_XV_ABSENT)
				continue;
			s->xforward->state[a] = x->state[a];
			memcpy(s->xforward->value[a], x->value[a], sizeof(x->value[a]));
		}
		free(x);
	}
	session_send(s, REPLY_OK);
}

/*
 * One row per verb: its handler and what it may do (SMTP_CMD_*, smtp.h).
 * session_dispatch() applies the rules before it calls the handler, so a
 * handler runs only where its verb is allowed. Adding a command is adding
 * a row.
 *
 * SMTP_CMD_PRE_TLS: what RFC 3207 4 lets through before STARTTLS where
 * a listener requires TLS (EHLO, STARTTLS, NOOP, QUIT), and what gives
 * nothing away nor starts mail (HELO, RSET, HELP), as Postfix has it: on
 * a listener with require_tls = yes the rest gets 530 5.7.0 before TLS.
 * SMTP_CMD_LAST: RFC 2920 3.1 (EHLO, DATA, VRFY, EXPN, TURN, QUIT,
 * NOOP), and HELO, STARTTLS (RFC 3207 4.2) and AUTH, whose replies
 * change what the client may send next. The dispatcher answers input
 * pipelined after such a command as it comes (PIPELINING clients do
 * not send it, and the replies stay in order); a handler for which that
 * input is dangerous (STARTTLS) asks session_input_follows().
 */
struct session_command {
	void (*handler)(struct session *s, const struct smtp_command *cmd);
	unsigned flags;
};

static const struct session_command session_commands[SMTP_VERB_COUNT] = {
	[SMTP_VERB_UNKNOWN] = { cmd_unknown, 0 },
	[SMTP_VERB_HELO] = { cmd_helo, SMTP_CMD_PRE_TLS | SMTP_CMD_ARG_ONE | SMTP_CMD_LAST },
	[SMTP_VERB_EHLO] = { cmd_helo, SMTP_CMD_PRE_TLS | SMTP_CMD_ARG_ONE | SMTP_CMD_LAST },
	[SMTP_VERB_MAIL] = { cmd_mail, SMTP_CMD_NEEDS_HELO | SMTP_CMD_NOT_IN_MAIL },
	[SMTP_VERB_RCPT] = { cmd_rcpt, SMTP_CMD_NEEDS_HELO | SMTP_CMD_NEEDS_MAIL },
	[SMTP_VERB_DATA] = { cmd_data, SMTP_CMD_NEEDS_HELO | SMTP_CMD_NEEDS_MAIL |
					SMTP_CMD_ARG_NONE | SMTP_CMD_LAST },
	[SMTP_VERB_RSET] = { cmd_rset, SMTP_CMD_PRE_TLS },
	[SMTP_VERB_NOOP] = { cmd_noop, SMTP_CMD_PRE_TLS | SMTP_CMD_LAST },
	[SMTP_VERB_QUIT] = { cmd_quit, SMTP_CMD_PRE_TLS | SMTP_CMD_LAST },
	[SMTP_VERB_VRFY] = { cmd_vrfy, SMTP_CMD_ARG_SOME | SMTP_CMD_LAST },
	[SMTP_VERB_EXPN] = { cmd_not_offered, SMTP_CMD_LAST },
	[SMTP_VERB_HELP] = { cmd_help, SMTP_CMD_PRE_TLS },
	[SMTP_VERB_STARTTLS] = { cmd_starttls, SMTP_CMD_PRE_TLS | SMTP_CMD_LAST },
	[SMTP_VERB_AUTH] = { cmd_auth, SMTP_CMD_NEEDS_HELO | SMTP_CMD_NOT_IN_MAIL |
					SMTP_CMD_ARG_SOME | SMTP_CMD_LAST },
	[SMTP_VERB_BDAT] = { cmd_not_offered, 0 },
	[SMTP_VERB_XCLIENT] = { cmd_xclient, SMTP_CMD_NOT_IN_MAIL | SMTP_CMD_LAST },
	[SMTP_VERB_XFORWARD] = { cmd_xforward, SMTP_CMD_NOT_IN_MAIL },
	[SMTP_VERB_ETRN] = { cmd_not_offered, 0 },
	[SMTP_VERB_TURN] = { cmd_not_offered, SMTP_CMD_LAST },
};

/*
 * session_input_follows - whether the client sent more than the command
 * being handled (pipelined after it, not yet read by the dispatcher)
 */
static bool session_input_follows(struct session *s)
{
	return evbuffer_get_length(conn_input(s->conn)) > 0;
}

/* session_dispatch - check a command against its row, then run its handler */
static void session_dispatch(struct session *s, const struct smtp_command *cmd)
{
	const struct session_command *row = &session_commands[cmd->verb];
	struct smtp_cmd_state st = { .tls_required = s->listener && s->listener->settings &&
						     s->listener->settings->require_tls,
				     .tls_active = s->tlsd != NULL,
				     /* the connection's HELO, not an XFORWARD's */
				     .helo = (s->saved ? s->saved->helo : s->helo) != NULL,
				     .in_mail = s->tx != NULL };
	struct smtp_error err;

	if (smtp_command_check(cmd, row->flags, &st, &err) < 0) {
		session_smtp_error(s, &err);
		return;
	}
	if ((row->flags & SMTP_CMD_LAST) && session_input_follows(s))
		log_debug("session %s: input pipelined after %s", s->id,
			  smtp_verb_name(cmd->verb));
	row->handler(s, cmd);
}

/* session_rfc5322_date - the date of a Received: header */
static void session_rfc5322_date(char *buf, size_t cap)
{
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(buf, cap, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

/*
 * session_received - the Received: header (RFC 5321 4.4) for a backend
 * that took neither XCLIENT nor XFORWARD, so it still learns who the
 * client was (Exchange, for one).
 */
static char *session_received(struct session *s)
{
	char date[64];
	char *text = NULL;
	bool one = s->tx->nrecipients == 1;
	int n;

	char using[200] = "";
	char with[16];

	session_rfc5322_date(date, sizeof(date));
	/*
	 * RFC 3848 (and RFC 6531 for UTF8SMTP): S for TLS, A for AUTH
	 * (ESMTPSA).
	 */
	snprintf(with, sizeof(with), "%s%s%s",
		 s->tx->smtputf8 ? "UTF8SMTP" : session_esmtp(s) ? "ESMTP" : "SMTP",
		 s->tlsd ? "S" : "", s->auth_user ? "A" : "");
	if (s->tlsd)
		/* As Postfix writes it. */
		snprintf(using, sizeof(using), "\t(using %s with cipher %s (%d/%d bits))\r\n",
			 s->tlsd->version, s->tlsd->cipher, s->tlsd->bits, s->tlsd->alg_bits);
	/* As Postfix writes it: "from HELO (NAME [ADDR])", NAME "unknown" unless confirmed. */
	const char *name = s->name_status == NAME_CONFIRMED ? s->name : "unknown";
	n = asprintf(&text,
		     "Received: from %s (%s [%s%s])\r\n"
		     "%s"
		     "\tby %s (Portcullis) with %s id %s.%u%s%s%s;\r\n"
		     "\t%s\r\n",
		     s->helo ? s->helo : name, name,
		     strchr(s->addr, ':') ? "IPv6:" : "", s->addr, using,
		     s->h->conf->hostname, with,
		     s->id, s->tx->number, one ? "\r\n\tfor <" : "",
		     one ? s->tx->recipients[0].address : "",
		     one ? ">" : "", date);
	return n < 0 ? NULL : text;
}

/* session_discarded - a filter said DISCARD: 250, and nothing delivered */
static void session_discarded(struct session *s)
{
	session_log_tx(s, "discarded", session_send(s, REPLY_OK), NULL,
		       "discarded by a filter");
	session_tx_done(s);
}

/* session_data_send - DATA and the message, once the backend has the envelope */
static void session_data_send(struct session *s)
{
	struct session_tx *tx = s->tx;
	struct spool *body = tx->envelope && tx->envelope->body ? tx->envelope->body : tx->spool;

	s->wait = WAIT_DATA;
	relay_data(s->relay, tx->prefix, body, tx->prefix_skip);
}

/*
 * session_envelope_line - the changed envelope's command at step (0: MAIL,
 * then one RCPT per recipient of the final list), or NULL past the last;
 * *oom when it could not be made
 */
static char *session_envelope_line(const struct session *s, size_t step, bool *oom)
{
	const struct session_tx *tx = s->tx;
	const struct pipeline_envelope *e = tx->envelope;
	char *line = NULL;
	int n = 0;

	*oom = false;
	if (step == 0) {
		/* The client's parameters follow its path in the MAIL line sent. */
		size_t at = strlen("MAIL FROM:<") + strlen(tx->sender) + 1;
		const char *params = e->sender_params ? e->sender_params
				     : strlen(tx->mail_line) > at ? tx->mail_line + at + 1 : "";
		n = asprintf(&line, "MAIL FROM:<%s>%s%s", e->sender ? e->sender : tx->sender,
			     *params ? " " : "", params);
	} else if (!e->rcpts_changed) {
		if (step > tx->naccepted)
			return NULL;
		line = strdup(tx->accepted_lines[step - 1]);
	} else {
		if (step > e->nrcpts)
			return NULL;
		const struct pipeline_rcpt *r = &e->rcpts[step - 1];
		if (!r->params)
			line = strdup(tx->accepted_lines[r->index]);
		else
			n = asprintf(&line, "RCPT TO:<%s>%s%s", r->addr, *r->params ? " " : "",
				     r->params);
	}
	*oom = n < 0 || !line;
	return n < 0 ? NULL : line;
}

/*
 * session_envelope_next - send the changed envelope's next command, or the
 * message after the last one. MAIL and RCPT went to the backend live,
 * before the filters changed them: relay_mail() ends that transaction
 * (RSET) before the new MAIL.
 */
static void session_envelope_next(struct session *s)
{
	struct session_tx *tx = s->tx;
	bool oom;
	char *line = session_envelope_line(s, tx->envelope_step, &oom);

	if (oom) {
		session_log_tx(s, "tempfailed", session_send(s, REPLY_OOM), NULL, "out of memory");
		session_tx_done(s);
		session_resume(s);
		return;
	}
	if (!line) {
		session_data_send(s);
		return;
	}
	s->wait = WAIT_ENVELOPE;
	if (tx->envelope_step++ == 0) {
		struct relay_client client = session_relay_client(s);
		relay_mail(s->relay, &client, line);
	} else {
		relay_command(s->relay, line);
	}
	free(line);
}

/*
 * session_envelope_reply - the backend answered a command of the changed
 * envelope. Its recipients were all accepted from the client already, so
 * a refusal of any command refuses the whole message: 4xx (retried with
 * every recipient) or 5xx, with the backend's reply in the record.
 */
static void session_envelope_reply(struct session *s, const struct smtp_reply *reply,
				   bool backend)
{
	char reason[1400], wire[1200];
	const char *sent;
	int cls = reply->code / 100;

	if (cls == 2) {
		session_envelope_next(s);
		return;
	}
	smtp_reply_format(reply, NULL, wire, sizeof(wire));
	wire[strcspn(wire, "\r\n")] = 0;
	snprintf(reason, sizeof(reason), "the backend refused the changed envelope at %s: %s",
		 s->tx->envelope_step <= 1 ? "MAIL" : "RCPT", wire);
	if (cls == 5)
		sent = session_send(s, 554, "5.1.0",
				    "Error: the backend mail server refused the changed envelope");
	else
		sent = session_send(s, 451, "4.3.0",
				    "Error: the backend mail server refused the changed envelope, try again later");
	s->errors++;
	session_log_tx(s, cls == 5 ? "rejected" : "tempfailed", sent, backend ? reply : NULL,
		       reason);
	session_tx_done(s);
	session_resume(s);
}

/*
 * session_data_relay - send the message to the backend: our Received:
 * header if needed, then the header block the filters rewrote (which
 * replaces the spool's first header_end bytes) or the spool as it is;
 * a replaced body follows the rewritten block and its blank line, after
 * the changed envelope if there is one
 */
static bool session_data_relay(struct session *s, const char *headers,
			       size_t headers_len, unsigned long long header_end)
{
	struct session_tx *tx = s->tx;
	bool always = s->h->conf->received_header == CONF_RECEIVED_ALWAYS;
	char *received = relay_identity_sent(s->relay) && !always ? NULL : session_received(s);
	size_t rlen = received ? strlen(received) : 0;
	bool body = tx->envelope && tx->envelope->body;

	free(tx->prefix);
	tx->prefix = NULL;
	tx->prefix_skip = 0;
	if (headers) {
		tx->prefix = malloc(rlen + headers_len + 3);
		if (!tx->prefix) {
			free(received);
			session_log_tx(s, "tempfailed", session_send(s, REPLY_OOM), NULL,
				       "out of memory");
			session_tx_done(s);
			return false;
		}
		if (received)
			memcpy(tx->prefix, received, rlen);
		memcpy(tx->prefix + rlen, headers, headers_len);
		tx->prefix[rlen + headers_len] = 0;
		tx->prefix_skip = header_end;
		if (body) {
			strcat(tx->prefix + rlen + headers_len, "\r\n");
			tx->prefix_skip = 0;
		}
		free(received);
	} else {
		tx->prefix = received;
	}
	if (tx->envelope && (tx->envelope->sender || tx->envelope->sender_params ||
			     tx->envelope->rcpts_changed)) {
		tx->envelope_step = 0;
		session_envelope_next(s);
		return true;
	}
	session_data_send(s);
	return true;
}

/*
 * session_data_kept - a quarantined message, or one whose every recipient
 * a filter deleted: 250, and nothing delivered (Postfix, too, takes a
 * message a milter left without recipients); true when it was one
 */
static bool session_data_kept(struct session *s)
{
	const struct pipeline_envelope *e = s->tx->envelope;
	char reason[700];

	if (e && e->quarantine && !e->quarantine_file) {
		/* The pipeline writes the file before its outcome: never deliver instead. */
		session_log_tx(s, "tempfailed",
			       session_send(s, 451, "4.3.0", "Error: the message could not be "
							     "quarantined, try again later"),
			       NULL, "quarantine without its file");
	} else if (e && e->quarantine) {
		snprintf(reason, sizeof(reason), "quarantined by a filter: %s", e->quarantine);
		session_log_tx(s, "quarantined", session_send(s, REPLY_OK), NULL, reason);
	} else if (e && e->rcpts_changed && e->nrcpts == 0) {
		session_log_tx(s, "discarded", session_send(s, REPLY_OK), NULL,
			       "every recipient was deleted by a filter");
	} else {
		return false;
	}
	session_tx_done(s);
	return true;
}

/* session_data_done - the filters decided on the message */
static void session_data_done(void *arg, struct pipeline_outcome *out)
{
	struct session *s = arg;

	if (!session_filter_back(s))
		return;
	switch (out->status) {
	case PC_DISCARD:
		session_discarded(s);
		break;
	case PC_REJECT:
	case PC_TEMPFAIL:
		session_tx_refused(s, out, out->reason ? out->reason
						       : "message refused by a filter");
		break;
	default:
		/* The envelope outlives the outcome: it is the transaction's now. */
		s->tx->envelope = out->envelope;
		out->envelope = NULL;
		if (session_data_kept(s))
			break;
		if (session_data_relay(s, out->headers, out->headers_len, out->header_end))
			return;
		break;
	}
	session_resume(s);
}

/*
 * session_header_refused - with no filter at the data stage nothing else
 * reads the header: check header_size_limit and hopcount_limit here (one
 * pass over at most header_size_limit bytes), and refuse the message
 * when it is past one; false when it is within both
 */
static bool session_header_refused(struct session *s)
{
	struct message_headers h = { 0 };
	const char *reply = NULL, *reason = NULL;

	if (message_headers_read(&h, s->tx->spool,
				 (size_t)s->h->conf->header_size_limit) < 0)
		return false; /* out of memory or a read error: the backend judges */
	reply = message_headers_refusal(&h, s->h->conf->hopcount_limit, &reason);
	message_headers_free(&h);
	if (!reply)
		return false;
	session_send_wire(s, reply);
	s->errors++;
	session_log_tx(s, "rejected", reply, NULL, reason);
	session_tx_done(s);
	return true;
}

/* session_data_end - the client sent <CRLF>.<CRLF> */
static void session_data_end(struct session *s)
{
	struct session_tx *tx = s->tx;

	s->state = SESSION_COMMAND;
	if ((tx->decoder.bare_lf || tx->decoder.bare_cr) &&
	    s->h->conf->bare_newline == CONF_BARE_REJECT) {
		/* RFC 5321 2.3.8: a bare CR or LF is where smuggling starts. */
		session_log_tx(s, "rejected",
			       session_send(s, 550, "5.6.0",
					    "Error: message contains bare CR or LF characters"),
			       NULL, tx->decoder.bare_lf ? "bare LF" : "bare CR");
		session_tx_free(s);
		s->errors++;
		return;
	}
	if (tx->too_big) {
		session_log_tx(s, "rejected",
			       session_send(s, smtp_error_too_big.code, smtp_error_too_big.enh,
					    "%s", smtp_error_too_big.text),
			       NULL, "message too big");
		session_tx_free(s);
		return;
	}
	if (spool_finish(tx->spool) < 0) {
		int e = spool_errno(tx->spool);
		log_error("session %s: spool write failed: %s", s->id, strerror(e));
		session_log_tx(s, "tempfailed",
			       session_send(s, 452, "4.3.1",
					    "Insufficient system storage, try again later"),
			       NULL, strerror(e));
		session_tx_free(s);
		return;
	}
	if (tx->discard) {
		session_discarded(s);
		return;
	}
	if (session_filters(s, CHAIN_DATA)) {
		/* The pipeline reads the header and checks its limits first. */
		session_filter(s, CHAIN_DATA, session_data_done, NULL, NULL);
		return;
	}
	if (session_header_refused(s))
		return;
	session_data_relay(s, NULL, 0, 0);
}

/*
 * session_data_input - decode buffered message data
 * Returns false when more input is needed.
 */
static bool session_data_input(struct session *s)
{
	struct evbuffer *in = conn_input(s->conn);
	struct session_tx *tx = s->tx;
	struct evbuffer_iovec vec;
	char *decoded = session_decode_buffer();

	while (evbuffer_peek(in, SESSION_DATA_CHUNK, NULL, &vec, 1) > 0) {
		size_t len = vec.iov_len < SESSION_DATA_CHUNK ? vec.iov_len : SESSION_DATA_CHUNK;
		size_t out_len = 0;
		size_t used = smtp_data_decode(&tx->decoder, vec.iov_base, len,
					       decoded, &out_len);

		if (out_len && !tx->too_big) {
			if (tx->decoder.bytes_out > session_size_limit(s)) {
				/* Keep reading to the end, then 552 (RFC 5321 4.5.3.1.10). */
				tx->too_big = true;
			} else {
				spool_write(tx->spool, decoded, out_len);
			}
		}
		evbuffer_drain(in, used);
		tx->data_read += used;
		if (tx->decoder.done) {
			session_data_end(s);
			return true;
		}
		if (used == 0)
			break;
	}
	return false;
}

/*
 * session_line_waiting - part of a command line is in, its end is not:
 * the command deadline runs from the first time we wait for it
 */
static void session_line_waiting(struct session *s)
{
	if (s->line_open)
		return;
	s->line_open = true;
	s->line_started = session_now();
}

/*
 * session_count_command - count one command line (verb UNKNOWN for one
 * that did not parse); false when it passes a limit and the session was
 * closed with 421 4.7.0 instead of answering it
 */
static bool session_count_command(struct session *s, enum smtp_verb verb)
{
	const struct conf *c = s->h->conf;

	if (++s->ncommands > c->max_commands) {
		session_close(s, 421, "4.7.0", "Error: too many commands",
			      "too many commands");
		return false;
	}
	/* Postfix's smtpd_junk_command_limit: what moves no mail. */
	switch (verb) {
	case SMTP_VERB_NOOP:
	case SMTP_VERB_RSET:
	case SMTP_VERB_VRFY:
	case SMTP_VERB_ETRN:
	case SMTP_VERB_HELP:
		if (++s->njunk > c->junk_command_limit) {
			session_close(s, 421, "4.7.0", "Error: too many junk commands",
				      "too many junk commands");
			return false;
		}
		break;
	default:
		break;
	}
	return true;
}

/*
 * session_skip_input - discard the rest of an over-long command line (its
 * 500 went out when the limit was passed); false: need more. A line that
 * runs on SESSION_MAX_SKIP bytes past max_line_length is no mail client's:
 * the session is closed rather than reading it for ever.
 */
static bool session_skip_input(struct session *s)
{
	struct evbuffer *in = conn_input(s->conn);
	struct evbuffer_iovec vec[4];
	size_t consumed = 0;
	bool found = false;
	int n = evbuffer_peek(in, -1, NULL, vec, 4);

	for (int i = 0; i < n && i < 4 && !found; i++)
		consumed += smtp_line_skip(vec[i].iov_base, vec[i].iov_len, &found);
	evbuffer_drain(in, consumed);
	s->skipped += consumed;
	if (found) {
		s->skipping = false;
		s->line_open = false;
		return true;
	}
	if (s->skipped > (size_t)s->h->conf->max_line_length + SESSION_MAX_SKIP) {
		session_close(s, 421, "4.7.0", "Error: line too long, closing connection",
			      "line too long");
		return true;
	}
	session_line_waiting(s);
	/* More than four chunks buffered: the loop comes back for the rest. */
	return n > 4;
}

/* session_command_input - handle one buffered command line; false: need more */
static bool session_command_input(struct session *s)
{
	struct evbuffer *in = conn_input(s->conn);
	size_t avail = evbuffer_get_length(in);
	size_t window, line_len = 0, consumed = 0;
	/* A line of an AUTH exchange may be longer (RFC 4954 4). */
	unsigned max = s->auth_client_turn ? AUTH_LINE_MAX - 2 : s->h->conf->max_line_length;
	const char *buf;

	if (avail == 0)
		return false;
	if (s->skipping)
		return session_skip_input(s);
	window = avail < (size_t)max + 3 ? avail : (size_t)max + 3;
	buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)window);
	enum smtp_line_status st = smtp_line_scan(buf, window, max, &line_len, &consumed);
	if (st != SMTP_LINE_INCOMPLETE && st != SMTP_LINE_TOO_LONG)
		s->line_open = false; /* its end is here */
	switch (st) {
	case SMTP_LINE_INCOMPLETE:
		session_line_waiting(s);
		return false;
	case SMTP_LINE_TOO_LONG:
		/*
		 * Answer now, not when the LF comes: a client that sends a
		 * megabyte without one learns at once, and the rest of the
		 * line is discarded as it arrives (session_skip_input). Its
		 * deadline still runs from its first byte.
		 */
		evbuffer_drain(in, consumed);
		s->skipping = true;
		s->skipped = consumed;
		session_line_waiting(s);
		if (s->auth_client_turn)
			session_auth_too_long(s);
		else if (session_count_command(s, SMTP_VERB_UNKNOWN))
			session_error(s, 500, "5.5.2", "Error: line too long");
		return true;
	case SMTP_LINE_BARE_CR:
		evbuffer_drain(in, consumed);
		if (session_count_command(s, SMTP_VERB_UNKNOWN))
			session_error(s, 500, "5.5.2", "Error: bare CR received");
		return true;
	case SMTP_LINE_BARE_LF:
		if (s->h->conf->bare_newline != CONF_BARE_NORMALIZE) {
			evbuffer_drain(in, consumed);
			if (session_count_command(s, SMTP_VERB_UNKNOWN))
				session_error(s, 500, "5.5.2", "Error: bare LF received");
			return true;
		}
		break;
	case SMTP_LINE_OK:
		break;
	}

	struct smtp_command cmd;
	struct smtp_error err;
	char *line = malloc(line_len + 1);

	if (!line) {
		session_close(s, 421, "4.3.0", "Error: out of memory", "out of memory");
		return true;
	}
	memcpy(line, buf, line_len);
	line[line_len] = 0;
	evbuffer_drain(in, consumed);
	if (s->auth_client_turn) {
		/* A line of an AUTH exchange: it may hold a password. */
		session_auth_input(s, line, line_len);
		explicit_bzero(line, line_len);
		free(line);
		return true;
	}
	if (smtp_command_parse(line, line_len, &cmd, &err) < 0) {
		if (session_count_command(s, SMTP_VERB_UNKNOWN))
			session_smtp_error(s, &err);
	} else if (session_count_command(s, cmd.verb)) {
		if (s->retiring && !s->tx && cmd.verb != SMTP_VERB_QUIT)
			/* The 421 answers this command: a pipelining client reads it in order. */
			session_close(s, 421, "4.3.2", "Service reloaded, try again",
				      "worker retired after a reload");
		else
			session_dispatch(s, &cmd);
	}
	free(line);
	return true;
}

/* session_process - handle buffered input until we must wait */
static void session_process(struct session *s)
{
	struct evbuffer *out = conn_output(s->conn);

	while (s->state != SESSION_CLOSING && s->wait == WAIT_NONE) {
		/* A client that does not read its replies gets no more. */
		if (evbuffer_get_length(out) > SESSION_MAX_OUTPUT)
			break;
		if (s->state == SESSION_DATA) {
			if (!s->tx->data_started)
				s->tx->data_started = session_now();
			if (!session_data_input(s))
				break;
		} else if (s->lookup && evbuffer_get_length(conn_input(s->conn)) > 0) {
			/*
			 * Filters, the relay and Received: take the client's name:
			 * the next command waits for the lookup (at most
			 * session_name_wait_ms()), which ran while the greeting and
			 * the command travelled.
			 */
			s->wait = WAIT_NAME;
			break;
		} else if (!session_command_input(s)) {
			break;
		}
	}
	if (s->state != SESSION_CLOSING)
		session_arm(s);
}

/* session_tx_done - the final reply of a transaction went out */
static void session_tx_done(struct session *s)
{
	session_tx_free(s);
	if (s->draining)
		session_close(s, REPLY_SHUTDOWN, "shutting down");
}

/* session_relay_done - the backend (or the relay for it) answered */
static void session_relay_done(void *arg, const struct smtp_reply *reply,
			       bool backend)
{
	struct session *s = arg;
	struct evbuffer *out = conn_output(s->conn);
	enum session_wait wait = s->wait;
	const char *def_enh;
	char wire[8192];
	int cls = reply->code / 100;

	if (wait == WAIT_AUTH) {
		s->wait = WAIT_NONE;
		session_auth_relay_reply(s, reply, backend);
		return;
	}
	if (wait == WAIT_ENVELOPE) {
		s->wait = WAIT_NONE;
		session_envelope_reply(s, reply, backend);
		return;
	}
	s->wait = WAIT_NONE;
	/* A backend without ENHANCEDSTATUSCODES still gives our clients one. */
	switch (wait) {
	case WAIT_MAIL: def_enh = cls == 2 ? "2.1.0" : cls == 4 ? "4.0.0" : "5.0.0"; break;
	case WAIT_RCPT: def_enh = cls == 2 ? "2.1.5" : cls == 4 ? "4.0.0" : "5.0.0"; break;
	default: def_enh = cls == 2 ? "2.0.0" : cls == 4 ? "4.0.0" : "5.0.0"; break;
	}
	if (reply->code < 200 || reply->code > 599 || cls == 3) {
		/* Only 354 is expected below 400 and it never reaches us. */
		snprintf(wire, sizeof(wire), "451 4.4.2 Unexpected reply from the backend mail server\r\n");
		backend = false;
	} else {
		size_t n = smtp_reply_format(reply, def_enh, wire, sizeof(wire));
		if (n >= sizeof(wire)) {
			/* Cut a huge reply at a line end, keep it well-formed. */
			snprintf(wire, sizeof(wire), "%d %s Reply from the backend mail server too long\r\n",
				 reply->code, def_enh);
		}
	}
	evbuffer_add(out, wire, strlen(wire));
	if (cls != 2)
		s->errors++;

	switch (wait) {
	case WAIT_MAIL:
		if (cls != 2) {
			session_log_tx(s, cls == 4 ? "tempfailed" : "rejected", wire,
				       backend ? reply : NULL, "MAIL refused");
			session_tx_done(s);
		}
		break;
	case WAIT_RCPT:
		session_rcpt_record(s, wire);
		break;
	case WAIT_DATA:
		if (cls == 2)
			s->njunk = 0; /* as Postfix: a delivered message forgives */
		session_log_tx(s, cls == 2 ? "accepted" : cls == 4 ? "tempfailed" : "rejected",
			       wire, backend ? reply : NULL, backend ? NULL : "backend failed");
		session_tx_done(s);
		break;
	case WAIT_NONE:
	case WAIT_FILTER:
	case WAIT_NAME:
	case WAIT_AUTH:
	case WAIT_ENVELOPE:
		log_error("internal error: session %s got a backend reply it did not wait for", s->id);
		break;
	}
	session_resume(s);
}

/* session_read_cb - input arrived */
static void session_read_cb(struct conn *c, void *arg)
{
	session_process(arg);
}

/* session_write_cb - the output drained */
static void session_write_cb(struct conn *c, void *arg)
{
	struct session *s = arg;

	if (s->state == SESSION_CLOSING) {
		session_free(s, "dropped", "closed by server");
		return;
	}
	session_process(s);
}


/*
 * session_tls_ready - the handshake is done: keep what it negotiated
 * for the records, the filters and the Received: header, then greet (TLS
 * from the first byte, RFC 8314) or wait for the client's new EHLO
 */
static void session_tls_ready(struct session *s)
{
	struct tls_details *d = calloc(1, sizeof(*d));

	s->tls_handshaking = false;
	evtimer_del(s->timer);
	if (!d) {
		session_free(s, "dropped", "out of memory");
		return;
	}
	tls_conn_details(s->tls, d);
	s->tlsd = d;
	s->rtls = (struct record_tls){
		.version = d->version,
		.cipher = d->cipher,
		.bits = d->bits,
		.sni = d->sni[0] ? d->sni : NULL,
		.resumed = d->resumed,
		.peer_subject = d->peer_subject[0] ? d->peer_subject : NULL,
		.peer_fingerprint = d->peer_fingerprint[0] ? d->peer_fingerprint : NULL,
	};
	log_info("session %s from [%s]:%u: %s with cipher %s (%d/%d bits)%s%s%s",
		 s->id, s->addr, s->port, d->version, d->cipher, d->bits, d->alg_bits,
		 d->resumed ? ", resumed" : "", d->peer_subject[0] ? ", client " : "",
		 d->peer_subject);
	if (session_tls_mode(s) == CONF_TLS_IMPLICIT) {
		session_connect(s);
		return;
	}
	session_arm(s);
}

/* session_event_cb - the client closed the connection, or a socket error */
static void session_event_cb(struct conn *c, enum conn_event what, void *arg)
{
	struct session *s = arg;

	if (what == CONN_READY) {
		session_tls_ready(s);
		return;
	}
	if (s->tls_handshaking) {
		const char *why = tls_conn_error(s->tls);
		session_tls_failed(s, *why ? why : what == CONN_EOF ? "connection closed"
								   : strerror(conn_errno(c)));
		return;
	}
	if (s->state == SESSION_CLOSING) {
		session_free(s, "dropped", "closed by server");
		return;
	}
	session_free(s, "closed", what == CONN_EOF ? "client disconnected"
						   : "connection error");
}

/* session_addr - the numeric address and port of a socket address */
static void session_addr(const struct sockaddr *sa, char *addr, size_t cap,
			 unsigned *port)
{
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		/* An IPv4 client on a dual-stack socket is an IPv4 client. */
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], addr, (socklen_t)cap);
		else
			inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)cap);
		*port = ntohs(in6->sin6_port);
	} else {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)cap);
		*port = ntohs(in->sin_port);
	}
}

/* session_new_id - a session id unique across workers and restarts */
static void session_new_id(struct session_host *h, char *id, size_t cap)
{
	snprintf(id, cap, "%06x%06llx", h->id_prefix & 0xffffff,
		 ++h->id_counter & 0xffffffULL);
}

/* session_greet - the 220 greeting (RFC 5321 4.3.1) */
static void session_greet(struct session *s)
{
	session_send(s, 220, NULL, "%s ESMTP", s->h->conf->hostname);
}

/* session_connect_done - the filters decided on the connection */
static void session_connect_done(void *arg, struct pipeline_outcome *out)
{
	struct session *s = arg;

	if (!session_filter_back(s))
		return;
	if (out->status == PC_REJECT || out->status == PC_TEMPFAIL) {
		/* The reply takes the greeting's place (RFC 5321 3.1). */
		session_close_wire(s, out->reply, "refused", "refused by a filter");
		return;
	}
	session_greet(s);
	session_resume(s);
}

/*
 * session_connect - a new client (or the one an XCLIENT named): the
 * connect filters, which wait for the client's name first (they may ask
 * pc_client_name(); Postfix too looks the name up before its greeting),
 * or the greeting at once when there are none
 */
static void session_connect(struct session *s)
{
	if (session_filters(s, CHAIN_CONNECT)) {
		if (s->lookup) {
			s->wait = WAIT_NAME;
			s->connect_pending = true;
			session_arm(s);
			return;
		}
		/* The greeting waits for the filters' word on the client. */
		session_filter(s, CHAIN_CONNECT, session_connect_done, NULL, NULL);
		return;
	}
	session_greet(s);
	session_arm(s);
}

/* session_name_known - the name is settled: go on with what waited for it */
static void session_name_known(struct session *s)
{
	if (s->wait != WAIT_NAME || s->state == SESSION_CLOSING)
		return;
	s->wait = WAIT_NONE;
	if (s->connect_pending) {
		s->connect_pending = false;
		session_connect(s);
		return;
	}
	session_resume(s);
}

/* session_lookup_work - the lookup, on a thread of the names pool */
static void session_lookup_work(void *arg)
{
	struct session_lookup *l = arg;

	if (atomic_load(&l->cancelled)) {
		l->status = DNS_NAME_TEMPFAIL; /* nobody waits: ask nothing */
		return;
	}
	l->status = dns_client_name(l->addr, l->name, sizeof(l->name), l->ptr, sizeof(l->ptr));
}

/* session_lookup_done - the lookup's answer, back on the loop */
static void session_lookup_done(void *arg)
{
	static const enum session_name names[] = {
		[DNS_NAME_CONFIRMED] = NAME_CONFIRMED,
		[DNS_NAME_UNCONFIRMED] = NAME_UNCONFIRMED,
		[DNS_NAME_NONE] = NAME_UNAVAILABLE,
		[DNS_NAME_TEMPFAIL] = NAME_TEMPUNAVAIL,
	};
	struct session_lookup *l = arg;
	struct session *s = l->s;

	if (!s) {
		free(l);
		return;
	}
	s->lookup = NULL;
	evtimer_del(s->name_timer);
	session_name_set(s, names[l->status], l->name, l->ptr);
	log_debug("session %s: client [%s] name %s (%s)", s->id, s->addr,
		  l->ptr[0] ? l->ptr : "-", session_name_status(s->name_status));
	free(l);
	session_name_known(s);
}

/* session_name_timeout - the lookup took longer than the resolver may */
static void session_name_timeout(evutil_socket_t fd, short events, void *arg)
{
	struct session *s = arg;

	log_info("session %s: the name of [%s] is unknown for now: DNS too slow", s->id,
		 s->addr);
	session_lookup_detach(s);
	session_name_set(s, NAME_TEMPUNAVAIL, NULL, NULL);
	session_name_known(s);
}

/*
 * session_name_wait_ms - how long the session waits for the name at
 * most: what one query may take ([dns] timeout, for each server, 1 +
 * retries rounds; three servers when they are the system's), and half
 * a second for the threads. The lookup's further queries (the forward
 * confirmation) fit in it when the servers answer; when they do not,
 * the name is [TEMPUNAVAIL] and the session goes on.
 */
static long long session_name_wait_ms(const struct conf *c)
{
	unsigned long long servers = c->ndns_servers ? c->ndns_servers : 3;

	return (long long)((unsigned long long)c->dns_timeout_ms * (c->dns_retries + 1ULL) *
			   servers) + 500;
}

/*
 * session_lookup_start - look the client's name up while the greeting
 * goes out (client_name_lookup); a peer in trusted_xclient is an MTA
 * that names its clients itself, and gets none
 */
static void session_lookup_start(struct session *s)
{
	struct session_host *h = s->h;
	struct session_lookup *l;
	long long ms = session_name_wait_ms(h->conf);
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

	if (!h->conf->client_name_lookup || session_trusted(s))
		return;
	if (!h->names)
		h->names = pool_new(h->base, SESSION_NAME_THREADS, SESSION_NAME_QUEUE);
	l = calloc(1, sizeof(*l));
	if (l) {
		/* Before the thread can see it: it may run before we go on. */
		l->s = s;
		memcpy(l->addr, s->addr, sizeof(l->addr));
	}
	if (!h->names || !l || pool_submit(h->names, session_lookup_work,
					   session_lookup_done, l) < 0) {
		log_warning("session %s: cannot look up the name of [%s]: %s", s->id, s->addr,
			    h->names && l ? "too many lookups waiting" : "out of memory");
		free(l);
		s->name_status = NAME_TEMPUNAVAIL;
		return;
	}
	s->lookup = l;
	s->name_status = NAME_PENDING;
	evtimer_add(s->name_timer, &tv);
}

/* session_start - greet a new client */
struct session *session_start(struct session_host *h, struct conn *c,
			      const struct sockaddr *sa, socklen_t salen,
			      const struct listener *l)
{
	struct session *s = calloc(1, sizeof(*s));

	(void)salen;
	if (!s) {
		conn_free(c);
		return NULL;
	}
	s->h = h;
	s->listener = l;
	s->conn = c;
	session_new_id(h, s->id, sizeof(s->id));
	session_addr(sa, s->addr, sizeof(s->addr), &s->port);
	memcpy(s->peer_addr, s->addr, sizeof(s->peer_addr));
	s->peer_port = s->port;
	if (l && listener_proxied(l)) {
		/* sa came from the PROXY header: the socket's peer is the balancer. */
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		if (getpeername(conn_fd(c), (struct sockaddr *)&peer, &plen) == 0)
			session_addr((struct sockaddr *)&peer, s->via_addr,
				     sizeof(s->via_addr), &s->via_port);
	}
	s->timer = evtimer_new(h->base, session_timeout, s);
	s->name_timer = evtimer_new(h->base, session_name_timeout, s);
	s->relay = relay_new(h->backends, session_relay_done, s);
	if (pipeline_active(h->pipeline))
		s->ps = pipeline_session_new(h->pipeline);
	if (!s->timer || !s->name_timer || !s->relay ||
	    (pipeline_active(h->pipeline) && !s->ps)) {
		conn_free(s->conn);
		if (s->timer)
			event_free(s->timer);
		if (s->name_timer)
			event_free(s->name_timer);
		relay_free(s->relay);
		free(s->ps);
		free(s);
		return NULL;
	}
	session_link(s);
	conn_setcb(s->conn, session_read_cb, session_write_cb, session_event_cb, s);
	conn_read_limit(s->conn, SESSION_MAX_INPUT);
	conn_read_enable(s->conn);
	log_debug("session %s from [%s]:%u", s->id, s->addr, s->port);
	session_lookup_start(s);
	if (session_tls_mode(s) == CONF_TLS_IMPLICIT) {
		/*
		 * RFC 8314 3.3: TLS from the first byte; greeted once it is up.
		 * What a PROXY pre-session read after its header is the
		 * client's hello: the handshake reads it first.
		 */
		struct evbuffer *in = conn_input(c);
		size_t first = evbuffer_get_length(in);
		struct tls_conn *t = tls_conn_new(l->settings->tls_server, conn_fd(c),
						  first ? evbuffer_pullup(in, -1) : NULL,
						  first);
		if (!t) {
			/* Ended from the loop: the caller counts a started session. */
			struct timeval now = { 0, 0 };
			s->tls_handshaking = true;
			s->timer_for = LIMIT_TLS_UNAVAILABLE;
			conn_read_disable(c);
			evtimer_add(s->timer, &now);
			return s;
		}
		session_tls_start(s, t);
		return s;
	}
	session_connect(s);
	return s;
}

/* session_refuse - 421 to a client we cannot serve */
void session_refuse(struct session_host *h, struct conn *c,
		    const struct sockaddr *sa, const char *reason)
{
	char text[256];

	/* RFC 3463 X.3.2: system not accepting network messages. */
	snprintf(text, sizeof(text), "%s, try again later", reason);
	session_refuse_reply(h, c, sa, "4.3.2", text, reason);
}

/*
 * session_refused_via - the balancer a refused client came through: the
 * socket's peer when it is not the client sa names (a PROXY header named
 * it); false for a direct client
 */
static bool session_refused_via(struct conn *c, const char *addr, unsigned port,
				char *via, size_t cap, unsigned *via_port)
{
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);

	if (getpeername(conn_fd(c), (struct sockaddr *)&peer, &plen) < 0)
		return false;
	session_addr((struct sockaddr *)&peer, via, cap, via_port);
	return strcmp(via, addr) != 0 || *via_port != port;
}

/* session_refuse_reply - 421 with a given text, before any greeting */
void session_refuse_reply(struct session_host *h, struct conn *c,
			  const struct sockaddr *sa, const char *enh,
			  const char *text, const char *reason)
{
	char addr[INET6_ADDRSTRLEN], id[24], via[INET6_ADDRSTRLEN];
	unsigned port, via_port = 0;
	bool proxied;

	session_new_id(h, id, sizeof(id));
	session_addr(sa, addr, sizeof(addr), &port);
	proxied = session_refused_via(c, addr, port, via, sizeof(via), &via_port);
	/* A best effort: the socket is fresh, the line fits its buffer. */
	evbuffer_add_printf(conn_output(c), "421 %s %s %s\r\n", enh,
			    h->conf->hostname, text);
	conn_flush_now(c);
	if (conn_errno(c))
		log_debug("refused client [%s]:%u went away", addr, port);
	conn_free(c);
	struct record_client client = { .address = addr, .port = port,
					 .via_address = proxied ? via : NULL,
					 .via_port = via_port };
	record_connection(id, &client, "refused", reason, NULL);
}

/* session_drop - record a connection that never became a session, and close it */
void session_drop(struct session_host *h, struct conn *c,
		  const struct sockaddr *sa, const char *action, const char *reason)
{
	char addr[INET6_ADDRSTRLEN], id[24];
	unsigned port;

	session_new_id(h, id, sizeof(id));
	session_addr(sa, addr, sizeof(addr), &port);
	conn_free(c);
	log_debug("connection from [%s]:%u %s: %s", addr, port, action, reason);
	struct record_client client = { .address = addr, .port = port };
	record_connection(id, &client, action, reason, NULL);
}

/* session_drain_all - close idle sessions, mark the others */
void session_drain_all(struct session_host *h)
{
	struct session *s, *next;

	for (s = h->sessions; s; s = next) {
		next = s->next;
		s->draining = true;
		if (s->tls_handshaking)
			/* Nothing can be said inside a handshake. */
			session_free(s, "dropped", "shutting down");
		else if (!s->tx && (s->wait == WAIT_NONE || s->wait == WAIT_NAME) &&
			 s->state == SESSION_COMMAND)
			session_close(s, REPLY_SHUTDOWN, "shutting down");
	}
}

/* session_retire_all - mark every session to end at its next command */
void session_retire_all(struct session_host *h)
{
	for (struct session *s = h->sessions; s; s = s->next)
		s->retiring = true;
}

/* session_kill_all - the drain deadline passed */
void session_kill_all(struct session_host *h)
{
	struct session *s, *next;

	for (s = h->sessions; s; s = next) {
		next = s->next;
		if (s->state == SESSION_CLOSING || s->tls_handshaking)
			session_free(s, "dropped", "shutting down");
		else
			session_close(s, REPLY_SHUTDOWN, "drain deadline");
	}
}
