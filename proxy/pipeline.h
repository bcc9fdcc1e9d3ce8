/*
 * pipeline.h - run the filter chain at each stage of a session
 *
 * The session asks pipeline_run() for a stage with a snapshot of what the
 * filters may see (struct pipeline_env, copied: a filter thread never
 * touches the session). The filters of the stage run in chain order on
 * the worker's thread pool; the session's callback gets one outcome on
 * the event loop: CONTINUE (or ACCEPT), or the first REJECT, TEMPFAIL or
 * DISCARD with its reply, plus at the data stage the rewritten header
 * block, the header changes that made it one by one (the milter
 * front-end hands those to the MTA), and what else the filters changed
 * (sender, recipients, body, quarantine: struct pipeline_envelope). A
 * quarantined message is written to its file on the filter thread,
 * before the outcome; when that fails the outcome is a TEMPFAIL.
 *
 * Each filter call has its deadline. A call that passes it, a job that
 * cannot be queued, an invalid verdict: each gets the filter's on_error
 * action, and when that action is accept the stage goes on with the next
 * filter (on another thread: the late call is abandoned, its thread is
 * lost to the pool until the call returns, and what it does then is
 * ignored).
 *
 * The calls of one session run one at a time, in the order asked: the
 * reset hooks of a transaction before the calls of the next one, the
 * close hooks last. The per-session state (struct pipeline_session) is
 * owned by the pipeline: after pipeline_session_end() it lives on until
 * the close hooks ran, then goes away by itself.
 */
#ifndef PORTCULLIS_PIPELINE_H
#define PORTCULLIS_PIPELINE_H

#include <stdbool.h>

#include <event2/event.h>
#include <jansson.h>

#include "chain.h"
#include "smtp.h"
#include "spool.h"

struct pipeline;
struct pipeline_session;

/* The session as the filters see it at one call (copied by the pipeline). */
struct pipeline_env {
	const char *session_id;
	const char *addr;
	unsigned port;
	const char *listener;
	const char *helo;
	const char *name;     /* the confirmed host name, or NULL */
	bool esmtp;
	const char *auth_user; /* the AUTH login, or a trusted peer's XCLIENT LOGIN, or NULL */
	const char *sender; /* NULL before MAIL */
	const struct smtp_param *params;
	size_t nparams;
	const char *const *rcpts; /* accepted recipients */
	size_t nrcpts;
	const char *rcpt;     /* the recipient being decided (rcpt stage) */
	struct spool *spool;  /* data stage: the finished message */
	bool smtputf8;
	bool tls;	      /* the session is under TLS (milter: {tls_version}); then: */
	const char *tls_version, *tls_cipher;
	int tls_bits;
	const char *tls_sni, *tls_peer_subject, *tls_peer_fingerprint; /* or NULL */
};

/*
 * One header change a filter made at the data stage, as the pipeline
 * applied it to the header list as it was then (the milter front-end
 * hands these to the MTA one by one).
 */
enum pipeline_change_kind {
	PIPELINE_ADD,	 /* append name: value */
	PIPELINE_INSERT, /* insert before field n (n >= the count: append) */
	PIPELINE_CHANGE, /* the n-th field called name (0: the first) gets value; NULL removes */
	PIPELINE_STRIP,	 /* remove every name field whose authserv-id is value */
};

struct pipeline_change {
	enum pipeline_change_kind kind;
	const char *name;
	size_t n;
	const char *value;
};

/* One recipient of a changed envelope's final list. */
struct pipeline_rcpt {
	char *addr;
	char *params; /* an added one's ESMTP parameters ("" for none); NULL
		       * for one of the client's (sent as the client sent it) */
	size_t index; /* one of the client's: its place in env->rcpts */
};

/*
 * What the data stage's filters changed beyond the header (see "Changing
 * the message" in filter.h); each part NULL, or false, when unchanged
 */
struct pipeline_envelope {
	char *sender;	     /* the new sender, "" for <> */
	char *sender_params; /* its parameters, NULL: the client's */
	bool rcpts_changed;
	struct pipeline_rcpt *rcpts; /* the final list, when rcpts_changed */
	size_t nrcpts;
	struct spool *body;	/* the new body (one reference), sent after the
				 * header block and its blank line */
	char *quarantine;	/* the reason: the message is in ... */
	char *quarantine_file;	/* ... this file of quarantine_dir */
	json_t *changes;	/* the record's "changes" object */
};

/* pipeline_envelope_free - release an envelope taken from an outcome */
void pipeline_envelope_free(struct pipeline_envelope *e);

/* The decision of one stage. */
struct pipeline_outcome {
	enum pc_status status;	/* CONTINUE (also after an ACCEPT), REJECT, TEMPFAIL, DISCARD */
	char reply[600];	/* "550 5.7.1 text", without CRLF, for REJECT and TEMPFAIL */
	const char *reason;	/* the record's reason when the pipeline itself
				 * refused (header caps), or NULL: a filter did */
	char *headers;		/* data: the new header block, or NULL if unchanged */
	size_t headers_len;
	unsigned long long header_end; /* where the original header block ends */
	struct pipeline_envelope *envelope; /* data: the other changes, or NULL;
					     * done() may take it (and set NULL) */
	const struct pipeline_change *changes; /* data: what made headers, in order */
	size_t nchanges;
};

typedef void (*pipeline_done_fn)(void *arg, struct pipeline_outcome *outcome);

/* pipeline_new - the pipeline of one worker; NULL on failure */
struct pipeline *pipeline_new(struct event_base *base, struct chain *chain,
			      const struct conf *conf);

/*
 * pipeline_free - release the pipeline once no session state is left;
 * the thread pool is not freed (a late call may still hold a thread)
 */
void pipeline_free(struct pipeline *p);

/* pipeline_active - whether the chain has any filter */
bool pipeline_active(const struct pipeline *p);

/*
 * pipeline_saturated - whether the filter pool is at its limit (a call
 * now would get its filter's on_error at once); false without filters
 */
bool pipeline_saturated(const struct pipeline *p);

/* pipeline_session_new - the filter state of a new session */
struct pipeline_session *pipeline_session_new(struct pipeline *p);

/* pipeline_sessions - session states alive (ended ones until their close hooks ran) */
unsigned pipeline_sessions(const struct pipeline *p);

/*
 * pipeline_wanted - whether a call at this stage would run any filter
 * (false also when a filter already said ACCEPT)
 */
bool pipeline_wanted(const struct pipeline *p, const struct pipeline_session *ps,
		     enum chain_stage stage);

/*
 * pipeline_run - run the stage; done(arg, outcome) is called once, later,
 * on the event loop (never from within pipeline_run). The outcome and its
 * header block belong to the pipeline: copy what must outlive done().
 */
void pipeline_run(struct pipeline *p, struct pipeline_session *ps,
		  enum chain_stage stage, const struct pipeline_env *env,
		  pipeline_done_fn done, void *arg);

/*
 * pipeline_tx_end - the transaction ended: its reset hooks run before any
 * later call of this session, and its results and ACCEPT are forgotten
 */
void pipeline_tx_end(struct pipeline *p, struct pipeline_session *ps,
		     const struct pipeline_env *env);

/*
 * pipeline_session_end - the session ended: a call in flight still runs
 * but its outcome is dropped; then the close hooks run (after the reset hooks of
 * pipeline_tx_end(), which the session calls first) and the
 * state is freed. ps must not be used afterwards.
 */
void pipeline_session_end(struct pipeline *p, struct pipeline_session *ps,
			  const struct pipeline_env *env);

/*
 * pipeline_authres_claims - whether an Authentication-Results: value
 * claims the authserv-id id (what PIPELINE_STRIP removes)
 */
bool pipeline_authres_claims(const char *value, void *id);

/* pipeline_size_limit - the lowest limit a filter set, 0 when none */
unsigned long long pipeline_size_limit(const struct pipeline_session *ps);

/*
 * pipeline_results - a new array of the filter entries of the session
 * (connect, helo) and of the transaction, for a decision record
 */
json_t *pipeline_results(const struct pipeline_session *ps);

/*
 * pipeline_record_filters - the same for a record's "filters": NULL
 * without a session or when no filter ran
 */
json_t *pipeline_record_filters(const struct pipeline_session *ps);

#endif
