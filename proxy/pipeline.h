/*
 * pipeline.h - run the filter chain at each stage of a session
 *
 * The session asks pipeline_run() for a stage with a snapshot of what the
 * filters may see (struct pipeline_env, copied: a filter thread never
 * touches the session). The filters of the stage run in chain order on
 * the worker's thread pool; the session's callback gets one outcome on
 * the event loop: CONTINUE (or ACCEPT), or the first REJECT, TEMPFAIL or
 * DISCARD with its reply, plus the rewritten header block at the data
 * stage. Each filter call has its deadline; a filter that passes it, that
 * cannot be queued, or that returns an invalid reply gets its on_error
 * action, and the stage goes on with the next filter when that action
 * is accept.
 *
 * Each filter's verdict, results and time go into the JSON arrays of
 * struct pipeline_session, which the session copies into its decision
 * records.
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
struct pipeline_job;

/* What the filters of one session keep between calls. */
struct pipeline_session {
	void *session_data[CONF_MAX_FILTERS];
	void *tx_data[CONF_MAX_FILTERS];
	bool accept_session;	/* ACCEPT at connect or helo */
	bool accept_tx;		/* ACCEPT at mail, rcpt or data */
	unsigned long long size_limit_session; /* 0: none */
	unsigned long long size_limit_tx;
	json_t *session_results; /* filter entries of connect and helo */
	json_t *tx_results;	 /* filter entries of the transaction */
	struct pipeline_job *job; /* the call in flight, if any */
};

/* The session as the filters see it at one call. */
struct pipeline_env {
	const char *session_id;
	const char *addr;
	unsigned port;
	const char *listener;
	const char *helo;
	const char *sender;
	const struct smtp_param *params;
	size_t nparams;
	const char *const *rcpts;
	size_t nrcpts;
	const char *rcpt; /* the recipient being decided (rcpt stage) */
	struct spool *spool; /* data stage */
};

/* The decision of one stage. */
struct pipeline_outcome {
	enum pc_status status;
	char reply[600];	/* "550 5.7.1 text" for REJECT and TEMPFAIL */
	char *headers;		/* data: the new header block, or NULL if unchanged */
	size_t headers_len;
	unsigned long long header_end; /* where the original header block ended */
};

typedef void (*pipeline_done_fn)(void *arg, struct pipeline_outcome *outcome);

/* pipeline_new - the pipeline of one worker; NULL chain means no filters */
struct pipeline *pipeline_new(struct event_base *base, struct chain *chain,
			      const struct conf *conf);

/* pipeline_session_init - fresh per-session state */
void pipeline_session_init(struct pipeline_session *ps);

/*
 * pipeline_wanted - whether a call at this stage would run any filter
 * (false also when a filter already said ACCEPT)
 */
bool pipeline_wanted(const struct pipeline *p, const struct pipeline_session *ps,
		     enum chain_stage stage);

/*
 * pipeline_run - run the stage; done(arg, outcome) is called once, later,
 * on the event loop (never from within pipeline_run)
 */
void pipeline_run(struct pipeline *p, struct pipeline_session *ps,
		  enum chain_stage stage, const struct pipeline_env *env,
		  pipeline_done_fn done, void *arg);

/*
 * pipeline_tx_end - the transaction ended: run the reset hooks (in the
 * background, before any later call of this session) and clear the
 * transaction's state
 */
void pipeline_tx_end(struct pipeline *p, struct pipeline_session *ps,
		     const struct pipeline_env *env);

/*
 * pipeline_session_end - the session ended: a call in flight is orphaned
 * (its result dropped), then the reset and close hooks run in the
 * background
 */
void pipeline_session_end(struct pipeline *p, struct pipeline_session *ps,
			  const struct pipeline_env *env);

#endif
