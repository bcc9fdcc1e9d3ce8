/*
 * pipeline.c - run the filters of a stage on the thread pool
 *
 * A job is one stage of one session (or the reset or close hooks). It
 * carries a copy of everything its filters may see or change: the
 * environment, the filters' private data, the size limits, and at the
 * data stage the parsed header with the log of changes made to it. The
 * job's thread runs the filters in chain order; after each one it
 * commits, under the job's lock, what that filter did (its entry in the
 * decision record, its header changes). The event loop arms a timer on
 * the job: when the filter running now passed its deadline, the loop
 * marks the job abandoned and takes what was committed, so the changes
 * of the filters before the late one survive, and goes on per the late
 * filter's on_error. The abandoned job is freed when its thread finally
 * returns.
 *
 * A stage whose every hook is nonblocking (pc_filter.nonblocking) runs on
 * the loop instead, at once, and ends like a pool job would: from a
 * callback of its own (inline_ev), after the code that started it
 * returned. There pc_dns_query() answers from the cache only, and a hook
 * that would have to wait returns PC_WOULDBLOCK: the same job then goes
 * to the pool and goes on from that hook, with what the hooks before it
 * did on the loop.
 *
 * Everything of a session (struct pipeline_session) is touched on the
 * event loop only, except through a job's copies.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "dns.h"
#include "log.h"
#include "message.h"
#include "pipeline.h"
#include "quarantine.h"
#include "record.h"
#include "pool.h"

#define PIPELINE_RETRY_MS 100
#define PIPELINE_REPLY_MAX 512

struct pipeline {
	struct event_base *base;
	struct chain *chain;
	const struct conf *conf;
	struct pool *pool;
	unsigned nsessions; /* states alive, ended or not */
	struct event *inline_ev; /* ends the jobs run on the loop */
	struct pipeline_job *inline_head, *inline_tail;
};

/* A copy of the environment, shared by the jobs of one call (loop only). */
struct snap {
	unsigned refs;
	struct pipeline_env env;
	char *strings[16];
	struct smtp_param *params;
	char **rcpts;
};

/*
 * One change of the message, kept to replay on a fresh parse. The header
 * changes come first, with pipeline.h's kinds (the milter front-end gets
 * them one by one); OP_STRIP removes every name field whose authserv-id
 * is value. The others change the envelope view (name: the address,
 * value: its parameters or the reason) or the body.
 */
enum op_kind {
	OP_ADD = PIPELINE_ADD,
	OP_INSERT = PIPELINE_INSERT,
	OP_CHANGE = PIPELINE_CHANGE,
	OP_STRIP = PIPELINE_STRIP,
	OP_SENDER, OP_RCPT_ADD, OP_RCPT_DEL, OP_BODY, OP_QUARANTINE,
};

struct op {
	struct op *next;
	enum op_kind kind;
	char *name;
	size_t n;
	char *value; /* NULL: remove (OP_CHANGE), keep the parameters (OP_SENDER) */
	struct spool *body; /* OP_BODY: the new body, one reference */
};

/* One recipient of the envelope as the data stage's filters see it. */
struct view_rcpt {
	char *addr;
	char *params; /* NULL: the client's own (index), else an added one's */
	size_t index;
};

/*
 * The envelope and body at one point of the data stage's chain: the
 * snapshot's, with the envelope changes of the filters so far applied
 */
struct view {
	bool ready;
	char *sender;	      /* NULL: the snapshot's */
	char *sender_params;  /* NULL: the snapshot's parameters */
	struct smtp_path *sender_path; /* sender_params parsed, for pc_mail_param() */
	struct view_rcpt *rcpts;
	size_t nrcpts, cap;
	bool rcpts_changed;
	struct spool *body; /* the replaced body (its op's), or NULL */
	char *quarantine;   /* the reason, or NULL */
};

/* What the filters of a session keep and decided, by filter index. */
struct filter_state {
	void *session_data[CONF_MAX_FILTERS];
	void *tx_data[CONF_MAX_FILTERS];
	bool accept_session;
	bool accept_tx;
	unsigned long long limit_session;
	unsigned long long limit_tx;
};

struct pipeline_session {
	struct pipeline *p;
	struct filter_state st;
	json_t *session_results;
	json_t *tx_results;
	struct pipeline_job *running;		  /* submitted, not finished */
	struct pipeline_job *queue, *queue_tail; /* waiting their turn */
	bool ended;
};

struct pipeline_job {
	struct pipeline *p;
	struct pipeline_session *ps; /* NULL once abandoned */
	struct pipeline_job *next;   /* in the session's queue, or inline_head's */
	enum chain_stage stage;
	struct snap *snap;
	pipeline_done_fn done; /* NULL once the session ended */
	void *arg;
	size_t first; /* the first filter to consider */
	struct event *timer;
	bool submitted;
	bool on_loop; /* running on the event loop now */
	bool moved;   /* a hook on the loop would block: on to the pool */
	bool headers_read;
	struct spool *spool; /* a reference, at the data stage */

	/* A copy the filters work on; read back when the job ends. */
	struct filter_state st;

	/* The data stage: the header, and the changes to replay. */
	struct message_headers headers;
	bool headers_ok;
	struct op *ops, *ops_tail;
	size_t nops;
	struct view view;
	char *rendered;
	size_t rendered_len;
	char *quarantine_file; /* written at the end of an accepted data stage */
	char reason_buf[256];  /* a reason made up here (reason points to it) */

	/* Shared between the thread and the loop, under lock. */
	pthread_mutex_t lock;
	size_t current;		 /* the filter running, SIZE_MAX if none */
	struct timespec started; /* when it started, or when the job was queued */
	size_t committed;	 /* filters before this index are done */
	size_t ops_committed;
	json_t *entries; /* one per filter that ran */
	bool abandoned;
	bool finished;

	/* The verdict, written by the thread before finished. */
	enum pc_status status;
	char reply[PIPELINE_REPLY_MAX];
	const char *reason; /* a refusal of the pipeline's own, or NULL */
};

/* One hook call: what the pc_* functions act on. */
struct pc_ctx {
	struct pipeline_job *job;
	size_t index;
	const struct chain_filter *filter;
	json_t *results;
	bool reply_set;
	int reply_code;
	char reply[PIPELINE_REPLY_MAX];
	struct spool *body; /* pc_body_replace(): the new body so far */
};

static void job_submit(struct pipeline_job *job);
static void job_kick(struct pipeline_session *ps);

/* now_ts - the monotonic clock */
static struct timespec now_ts(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts;
}

/* elapsed_us - microseconds since t */
static long long elapsed_us(struct timespec t)
{
	struct timespec n = now_ts();

	return (long long)(n.tv_sec - t.tv_sec) * 1000000 + (n.tv_nsec - t.tv_nsec) / 1000;
}

/* snap_new - copy the environment */
static struct snap *snap_new(const struct pipeline_env *env)
{
	struct snap *s = calloc(1, sizeof(*s));
	size_t k = 0;

	if (!s)
		return NULL;
	s->refs = 1;
	s->env = *env;
#define SNAP_STR(field)                                                     \
	do {                                                                \
		if (env->field) {                                           \
			s->strings[k] = strdup(env->field);                 \
			s->env.field = s->strings[k++];                     \
		}                                                           \
	} while (0)
	SNAP_STR(session_id);
	SNAP_STR(addr);
	SNAP_STR(listener);
	SNAP_STR(helo);
	SNAP_STR(name);
	SNAP_STR(auth_user);
	SNAP_STR(sender);
	SNAP_STR(rcpt);
	SNAP_STR(tls_version);
	SNAP_STR(tls_cipher);
	SNAP_STR(tls_sni);
	SNAP_STR(tls_peer_subject);
	SNAP_STR(tls_peer_fingerprint);
#undef SNAP_STR
	if (env->nparams) {
		s->params = calloc(env->nparams, sizeof(*s->params));
		for (size_t i = 0; s->params && i < env->nparams; i++) {
			s->params[i].keyword = strdup(env->params[i].keyword);
			s->params[i].value = env->params[i].value ? strdup(env->params[i].value) : NULL;
		}
		s->env.params = s->params;
		s->env.nparams = s->params ? env->nparams : 0;
	}
	if (env->nrcpts) {
		s->rcpts = calloc(env->nrcpts, sizeof(*s->rcpts));
		for (size_t i = 0; s->rcpts && i < env->nrcpts; i++)
			s->rcpts[i] = strdup(env->rcpts[i]);
		s->env.rcpts = (const char *const *)s->rcpts;
		s->env.nrcpts = s->rcpts ? env->nrcpts : 0;
	}
	s->env.spool = NULL; /* the job holds its own reference */
	return s;
}

/* snap_unref - drop one holder */
static void snap_unref(struct snap *s)
{
	if (!s || --s->refs > 0)
		return;
	for (size_t i = 0; i < sizeof(s->strings) / sizeof(s->strings[0]); i++)
		free(s->strings[i]);
	for (size_t i = 0; s->params && i < s->env.nparams; i++) {
		free(s->params[i].keyword);
		free(s->params[i].value);
	}
	free(s->params);
	for (size_t i = 0; s->rcpts && i < s->env.nrcpts; i++)
		free(s->rcpts[i]);
	free(s->rcpts);
	free(s);
}

/* ops_free - free a list of header changes */
static void ops_free(struct op *op)
{
	while (op) {
		struct op *next = op->next;
		free(op->name);
		free(op->value);
		spool_free(op->body);
		free(op);
		op = next;
	}
}

/*
 * ops_prefix - a copy of the first count changes of a list that a late
 * thread may still append to: the next pointer of the last node wanted
 * is never read (loop)
 */
static struct op *ops_prefix(const struct op *op, size_t count)
{
	struct op *head = NULL, **tail = &head;

	for (size_t n = 0; n < count && op; n++) {
		struct op *copy = calloc(1, sizeof(*copy));
		if (!copy)
			break;
		copy->kind = op->kind;
		copy->n = op->n;
		copy->name = strdup(op->name);
		copy->value = op->value ? strdup(op->value) : NULL;
		copy->body = op->body ? spool_ref(op->body) : NULL;
		*tail = copy;
		tail = &copy->next;
		if (n + 1 < count)
			op = op->next;
	}
	return head;
}

/* authres_id - the authserv-id of an Authentication-Results: value */
static size_t authres_id(const char *value, const char **id)
{
	const char *p = value;

	/* RFC 8601 2.2: authserv-id [CFWS version] ";" ...; comments skipped. */
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p != '(')
			break;
		for (int depth = 0; *p; p++) {
			if (*p == '(')
				depth++;
			else if (*p == ')' && --depth == 0) {
				p++;
				break;
			}
		}
	}
	*id = p;
	return strcspn(p, " \t;(");
}

/* pipeline_authres_claims - whether an Authentication-Results: value claims id */
bool pipeline_authres_claims(const char *value, void *id)
{
	const char *got;
	size_t len = authres_id(value, &got);

	return len == strlen(id) && strncasecmp(got, id, len) == 0;
}

/* op_apply - apply one change to a header list */
static int op_apply(struct message_headers *h, const struct op *op)
{
	long i;

	switch (op->kind) {
	case OP_ADD:
		return message_header_add(h, op->name, op->value, false);
	case OP_INSERT:
		return message_header_insert(h, op->n, op->name, op->value);
	case OP_CHANGE:
		i = message_header_find(h, op->name, op->n);
		return i < 0 ? -1 : message_header_change(h, (size_t)i, op->value);
	case OP_STRIP:
		message_header_remove_if(h, op->name, pipeline_authres_claims, op->value);
		return 0;
	default:
		return 0; /* not a header change */
	}
}

/* view_init - the envelope as the client gave it */
static int view_init(struct view *v, const struct pipeline_env *env)
{
	memset(v, 0, sizeof(*v));
	v->cap = env->nrcpts ? env->nrcpts : 1;
	if (!(v->rcpts = calloc(v->cap, sizeof(*v->rcpts))))
		return -1;
	for (size_t i = 0; i < env->nrcpts; i++) {
		v->rcpts[i].addr = strdup(env->rcpts[i]);
		v->rcpts[i].index = i;
		v->nrcpts++;
		if (!v->rcpts[i].addr)
			return -1;
	}
	v->ready = true;
	return 0;
}

/* view_free - release a view */
static void view_free(struct view *v)
{
	free(v->sender);
	free(v->sender_params);
	if (v->sender_path) {
		smtp_path_free(v->sender_path);
		free(v->sender_path);
	}
	for (size_t i = 0; i < v->nrcpts; i++) {
		free(v->rcpts[i].addr);
		free(v->rcpts[i].params);
	}
	free(v->rcpts);
	free(v->quarantine);
	memset(v, 0, sizeof(*v));
}

/*
 * path_parse - "FROM:<addr> params" or "TO:..." checked as the client's
 * own command is; a new smtp_path, or NULL
 */
static struct smtp_path *path_parse(bool rcpt, const char *addr, const char *params)
{
	struct smtp_path *path = calloc(1, sizeof(*path));
	struct smtp_error err;
	char *arg = NULL;
	int n;

	if (!path)
		return NULL;
	n = asprintf(&arg, "%s<%s>%s%s", rcpt ? "TO:" : "FROM:", addr,
		     params && *params ? " " : "", params ? params : "");
	if (n < 0 || smtp_path_parse(arg, (size_t)n, rcpt, path, &err) < 0) {
		free(arg);
		free(path);
		return NULL;
	}
	free(arg);
	return path;
}

/* view_apply - apply one envelope or body change; 0, or -1 when it cannot be */
static int view_apply(struct view *v, const struct op *op)
{
	switch (op->kind) {
	case OP_SENDER: {
		char *sender = strdup(op->name);
		if (!sender)
			return -1;
		if (op->value) {
			char *params = strdup(op->value);
			struct smtp_path *path = path_parse(false, op->name, op->value);
			if (!params || !path) {
				free(sender);
				free(params);
				free(path);
				return -1;
			}
			free(v->sender_params);
			v->sender_params = params;
			if (v->sender_path) {
				smtp_path_free(v->sender_path);
				free(v->sender_path);
			}
			v->sender_path = path;
		}
		free(v->sender);
		v->sender = sender;
		return 0;
	}
	case OP_RCPT_ADD:
		if (v->nrcpts == v->cap) {
			struct view_rcpt *r = realloc(v->rcpts, 2 * v->cap * sizeof(*r));
			if (!r)
				return -1;
			v->rcpts = r;
			v->cap *= 2;
		}
		v->rcpts[v->nrcpts] = (struct view_rcpt){ strdup(op->name),
							   strdup(op->value ? op->value : ""), SIZE_MAX };
		if (!v->rcpts[v->nrcpts].addr || !v->rcpts[v->nrcpts].params) {
			free(v->rcpts[v->nrcpts].addr);
			free(v->rcpts[v->nrcpts].params);
			return -1;
		}
		v->nrcpts++;
		v->rcpts_changed = true;
		return 0;
	case OP_RCPT_DEL: {
		size_t kept = 0, before = v->nrcpts;
		for (size_t i = 0; i < v->nrcpts; i++) {
			if (strcasecmp(v->rcpts[i].addr, op->name) == 0) {
				free(v->rcpts[i].addr);
				free(v->rcpts[i].params);
			} else {
				v->rcpts[kept++] = v->rcpts[i];
			}
		}
		v->nrcpts = kept;
		if (kept == before)
			return -1;
		v->rcpts_changed = true;
		return 0;
	}
	case OP_BODY:
		v->body = op->body;
		return 0;
	case OP_QUARANTINE: {
		char *reason = strdup(op->value);
		if (!reason)
			return -1;
		free(v->quarantine);
		v->quarantine = reason;
		return 0;
	}
	default:
		return 0; /* a header change */
	}
}

/* view_changed - whether a view differs from the client's envelope and body */
static bool view_changed(const struct view *v)
{
	return v->ready && (v->sender || v->rcpts_changed || v->body || v->quarantine);
}

static int job_add_op(struct pipeline_job *job, struct op *op);

/* job_record - append a change to the job's log (thread) */
static int job_record(struct pipeline_job *job, enum op_kind kind,
		      const char *name, size_t n, const char *value)
{
	struct op *op = calloc(1, sizeof(*op));

	if (!op || !(op->name = strdup(name)) || (value && !(op->value = strdup(value)))) {
		if (op)
			free(op->name);
		free(op);
		return -1;
	}
	op->kind = kind;
	op->n = n;
	return job_add_op(job, op);
}

/* job_add_op - apply a change and append it to the job's log (thread); takes op */
static int job_add_op(struct pipeline_job *job, struct op *op)
{
	if (op_apply(&job->headers, op) < 0 || view_apply(&job->view, op) < 0) {
		ops_free(op);
		return -1;
	}
	/* The loop reads only the first ops_committed nodes. */
	if (job->ops_tail)
		job->ops_tail->next = op;
	else
		job->ops = op;
	job->ops_tail = op;
	job->nops++;
	return 0;
}

/* job_new - a job of a session (loop) */
static struct pipeline_job *job_new(struct pipeline_session *ps, enum chain_stage stage,
				    struct snap *snap)
{
	struct pipeline_job *job = calloc(1, sizeof(*job));

	if (!job)
		return NULL;
	job->p = ps->p;
	job->ps = ps;
	job->stage = stage;
	job->snap = snap;
	if (snap)
		snap->refs++;
	job->current = SIZE_MAX;
	job->entries = json_array();
	pthread_mutex_init(&job->lock, NULL);
	return job;
}

/* job_for - a job of a session with its own copy of env (loop) */
static struct pipeline_job *job_for(struct pipeline_session *ps, enum chain_stage stage,
				    const struct pipeline_env *env)
{
	struct snap *snap = snap_new(env);
	struct pipeline_job *job = snap ? job_new(ps, stage, snap) : NULL;

	snap_unref(snap);
	return job;
}

/*
 * job_decides - a stage job, whose filters give verdicts; the reset and
 * close jobs only let the filters free what they hold
 */
static bool job_decides(const struct pipeline_job *job)
{
	return job->stage < CHAIN_RESET;
}

/* job_free - release a job that no thread holds (loop) */
static void job_free(struct pipeline_job *job)
{
	if (job->timer)
		event_free(job->timer);
	snap_unref(job->snap);
	spool_free(job->spool);
	message_headers_free(&job->headers);
	view_free(&job->view);
	ops_free(job->ops);
	free(job->rendered);
	free(job->quarantine_file);
	json_decref(job->entries);
	pthread_mutex_destroy(&job->lock);
	free(job);
}

/* job_hook - whether filter i takes part in this job */
static bool job_hook(const struct pipeline_job *job, size_t i)
{
	return chain_has_hook(&job->p->chain->filters[i], job->stage);
}

/* job_next_filter - the first filter from i with a hook, or chain->n */
static size_t job_next_filter(const struct pipeline_job *job, size_t i)
{
	while (i < job->p->chain->n && !job_hook(job, i))
		i++;
	return i;
}

/*
 * job_min_timeout - the shortest deadline (ms) of the filters from i on:
 * a deadline check is due no later than that after any check, since a
 * filter that starts later has its deadline later still
 */
static long long job_min_timeout(const struct pipeline_job *job, size_t i)
{
	long long ms = -1;

	for (i = job_next_filter(job, i); i < job->p->chain->n; i = job_next_filter(job, i + 1))
		if (ms < 0 || job->p->chain->filters[i].timeout_ms < ms)
			ms = job->p->chain->filters[i].timeout_ms;
	return ms;
}

/* status_name - a verdict as logged */
static const char *status_name(enum pc_status st)
{
	switch (st) {
	case PC_CONTINUE: return "continue";
	case PC_ACCEPT: return "accept";
	case PC_REJECT: return "reject";
	case PC_TEMPFAIL: return "tempfail";
	case PC_DISCARD: return "discard";
	case PC_WOULDBLOCK: return "wouldblock";
	case PC_FAILED: return "failed";
	}
	return "invalid";
}

/* on_error_name - a filter's failure action as logged */
static const char *on_error_name(enum pc_status st)
{
	return st == PC_CONTINUE ? "accept" : st == PC_REJECT ? "reject" : "tempfail";
}

/* default_reply - the reply of a verdict without one of its own */
static void default_reply(char *buf, size_t cap, enum chain_stage stage,
			  enum pc_status st, bool failure)
{
	static const char *const what[] = {
		[CHAIN_CONNECT] = "Connection", [CHAIN_HELO] = "HELO",
		[CHAIN_MAIL] = "Sender",	[CHAIN_RCPT] = "Recipient",
		[CHAIN_DATA] = "Message",
	};
	const char *w = stage < CHAIN_RESET ? what[stage] : "Command";

	if (failure && st == PC_REJECT)
		snprintf(buf, cap, "%d 5.7.1 Error: refused by a message filter",
			 stage == CHAIN_CONNECT ? 554 : 550);
	else if (failure)
		snprintf(buf, cap, "%d 4.3.0 Error: message filter unavailable, try again later",
			 stage == CHAIN_CONNECT ? 421 : 451);
	else if (st == PC_REJECT)
		snprintf(buf, cap, "%d 5.7.1 %s rejected", stage == CHAIN_CONNECT ? 554 : 550, w);
	else
		snprintf(buf, cap, "%d 4.7.1 %s temporarily rejected, try again later",
			 stage == CHAIN_CONNECT ? 421 : 451, w);
}

/* entry_new - the decision record entry of one filter call */
static json_t *entry_new(const struct pipeline_job *job, size_t i)
{
	json_t *e = json_object();

	json_object_set_new(e, "filter", record_cstring(job->p->chain->filters[i].name));
	json_object_set_new(e, "stage", record_cstring(chain_stage_name(job->stage)));
	if (job->stage == CHAIN_RCPT && job->snap->env.rcpt)
		json_object_set_new(e, "recipient", record_cstring(job->snap->env.rcpt));
	return e;
}

/*
 * job_call - one filter call on the thread; returns the verdict, with the
 * failure action already applied (an invalid verdict is a failure)
 */
static enum pc_status job_call(struct pipeline_job *job, size_t i, json_t **entry)
{
	const struct chain_filter *f = &job->p->chain->filters[i];
	const struct pc_filter *d = f->desc;
	struct pc_ctx ctx = { job, i, f, NULL, false, 0, "", NULL };
	struct timespec t0 = now_ts();
	enum pc_status st = PC_CONTINUE;
	const char *error = NULL;

	switch (job->stage) {
	case CHAIN_CONNECT: st = d->connect(&ctx); break;
	case CHAIN_HELO: st = d->helo(&ctx); break;
	case CHAIN_MAIL: st = d->mail(&ctx); break;
	case CHAIN_RCPT: st = d->rcpt(&ctx); break;
	case CHAIN_DATA: st = d->data(&ctx); break;
	case CHAIN_RESET: d->reset(&ctx); break;
	case CHAIN_CLOSE: d->close(&ctx); break;
	default: break;
	}
	long long us = elapsed_us(t0);

	if (st == PC_WOULDBLOCK && job->on_loop && job_decides(job)) {
		/* It is called again on a thread: this call leaves nothing. */
		json_decref(ctx.results);
		spool_free(ctx.body);
		*entry = NULL;
		return st;
	}
	if (!job_decides(job)) {
		json_decref(ctx.results);
		spool_free(ctx.body);
		*entry = NULL;
		return PC_CONTINUE;
	}
	json_t *e = entry_new(job, i);
	if (st == PC_FAILED)
		error = "the filter failed";
	else if ((unsigned)st > PC_DISCARD ||
		 (st == PC_DISCARD && (job->stage == CHAIN_CONNECT || job->stage == CHAIN_HELO)))
		error = "invalid verdict";
	if (ctx.body) {
		/* The hook's return ends the new body; only a message that goes on needs it. */
		struct op *op = NULL;
		if (!error && (st == PC_CONTINUE || st == PC_ACCEPT)) {
			if (spool_finish(ctx.body) < 0 || !(op = calloc(1, sizeof(*op))) ||
			    !(op->name = strdup(""))) {
				log_error("filter %s: session %s: the new body could not be spooled: %s",
					  f->name, job->snap->env.session_id,
					  strerror(spool_errno(ctx.body) ? spool_errno(ctx.body) : ENOMEM));
				error = "the new body could not be spooled";
				st = PC_FAILED;
				free(op);
				op = NULL;
			}
		}
		if (op) {
			op->kind = OP_BODY;
			op->body = ctx.body;
			ctx.body = NULL;
			if (job_add_op(job, op) < 0) {
				error = "out of memory";
				st = PC_FAILED;
			}
		}
		spool_free(ctx.body);
	}
	json_object_set_new(e, "verdict", record_cstring(status_name(st)));
	json_object_set_new(e, "usec", json_integer(us));
	if (ctx.results)
		json_object_set_new(e, "results", ctx.results);
	if (error) {
		if (st == PC_FAILED)
			log_warning("filter %s: session %s: failed at %s: using on_error (%s)",
				    f->name, job->snap->env.session_id,
				    chain_stage_name(job->stage), on_error_name(f->on_error));
		else
			log_error("filter %s: session %s: %s %d at %s: using on_error (%s)", f->name,
				  job->snap->env.session_id, error, (int)st,
				  chain_stage_name(job->stage), on_error_name(f->on_error));
		json_object_set_new(e, "error", record_cstring(error));
		json_object_set_new(e, "action", record_cstring(on_error_name(f->on_error)));
		st = f->on_error;
		default_reply(job->reply, sizeof(job->reply), job->stage, st, true);
	} else if (st == PC_REJECT || st == PC_TEMPFAIL) {
		int want = st == PC_REJECT ? 5 : 4;
		if (ctx.reply_set && ctx.reply_code / 100 == want) {
			snprintf(job->reply, sizeof(job->reply), "%s", ctx.reply);
		} else {
			if (ctx.reply_set) {
				log_error("filter %s: session %s: %s with a %d reply: refused, default reply used",
					  f->name, job->snap->env.session_id, status_name(st),
					  ctx.reply_code);
				json_object_set_new(e, "error", record_cstring("reply does not match the verdict"));
			}
			default_reply(job->reply, sizeof(job->reply), job->stage, st, false);
		}
	}
	*entry = e;
	return st;
}

/*
 * job_strip_forged - remove the Authentication-Results: fields that claim
 * this host's authserv-id (RFC 8601 5): only this chain may write them.
 * One change that removes them all in one pass over the header (a forged
 * message may carry tens of thousands), recorded so it survives a late
 * filter. (thread, or the loop)
 */
static void job_strip_forged(struct pipeline_job *job)
{
	const char *mine = job->p->conf->authserv_id;
	size_t before = job->headers.n;

	if (message_header_find(&job->headers, "Authentication-Results", 0) >= 0) {
		job_record(job, OP_STRIP, "Authentication-Results", 0, mine);
		if (job->headers.n < before)
			log_info("session %s: removed %zu Authentication-Results fields that claim %s",
				 job->snap->env.session_id, before - job->headers.n, mine);
	}
	pthread_mutex_lock(&job->lock);
	job->ops_committed = job->nops;
	pthread_mutex_unlock(&job->lock);
}

/*
 * job_header_refused - the header block is over header_size_limit or has
 * more hops than hopcount_limit: the reply to refuse it with, or NULL.
 * Checked before any filter, so no filter works on such a header.
 */
static const char *job_header_refused(struct pipeline_job *job, const char **reason)
{
	return message_headers_refusal(&job->headers, job->p->conf->hopcount_limit,
				       reason);
}

#define PIPELINE_QUARANTINE_FAILED \
	"451 4.3.0 Error: the message could not be quarantined, try again later"

/*
 * job_quarantine - write the message of an accepted data stage to its
 * quarantine file: the file's name, or NULL with why in reason (the
 * filter thread; on the loop only after a late last filter)
 */
static char *job_quarantine(struct pipeline *p, const struct pipeline_env *env,
			    const struct view *v, const char *rendered, size_t rendered_len,
			    unsigned long long header_end, struct spool *spool,
			    char *reason, size_t cap)
{
	struct quarantine_msg m = {
		.reason = v->quarantine,
		.sender = v->sender ? v->sender : env->sender,
		.nrcpts = v->nrcpts,
		.content = v->body ? v->body : spool,
	};
	const char **rcpts = calloc(v->nrcpts + 1, sizeof(*rcpts));
	const char **params = calloc(v->nrcpts + 1, sizeof(*params));
	char *prefix = NULL, *name = NULL, *client_params = NULL;

	if (!v->sender_params && env->nparams) {
		/* The client's parameters, written as it sent them. */
		struct smtp_path path = { .nparams = env->nparams };
		for (size_t i = 0; i < env->nparams && i < SMTP_MAX_PARAMS; i++)
			path.params[i] = env->params[i];
		client_params = smtp_params_text(path.params, path.nparams);
	}
	m.sender_params = v->sender_params ? v->sender_params : client_params;
	if (rendered && v->body) {
		/* The rendered header block, its blank line, the new body. */
		if ((prefix = malloc(rendered_len + 2))) {
			memcpy(prefix, rendered, rendered_len);
			memcpy(prefix + rendered_len, "\r\n", 2);
		}
		m.prefix = prefix;
		m.prefix_len = rendered_len + 2;
	} else if (rendered) {
		m.prefix = rendered;
		m.prefix_len = rendered_len;
		m.skip = header_end;
	}
	if (rcpts && params && (!rendered || !v->body || prefix)) {
		for (size_t i = 0; i < v->nrcpts; i++) {
			rcpts[i] = v->rcpts[i].addr;
			params[i] = v->rcpts[i].params;
		}
		m.rcpts = rcpts;
		m.rcpt_params = params;
		name = quarantine_write(p->conf->quarantine_dir, env->session_id, &m);
	} else {
		errno = ENOMEM;
	}
	if (!name) {
		snprintf(reason, cap, "quarantine failed: %s: %s", p->conf->quarantine_dir,
			 strerror(errno));
		log_error("session %s: %s", env->session_id, reason);
	} else {
		log_info("session %s: quarantined as %s/%s: %s", env->session_id,
			 p->conf->quarantine_dir, name, v->quarantine);
	}
	free(client_params);
	free(prefix);
	free(rcpts);
	free(params);
	return name;
}

/* json_rcpts - an array of the view's recipients (the added ones only, or all) */
static json_t *json_rcpts(const struct view *v, bool added_only)
{
	json_t *a = json_array();

	for (size_t i = 0; i < v->nrcpts; i++)
		if (!added_only || v->rcpts[i].params)
			json_array_append_new(a, record_cstring(v->rcpts[i].addr));
	return a;
}

/*
 * view_outcome - what the session gets of a view that changed anything
 * (loop), or NULL; takes the quarantine file's name
 */
static struct pipeline_envelope *view_outcome(const struct view *v,
					      const struct pipeline_env *env, char *file)
{
	struct pipeline_envelope *e;
	json_t *ch;

	if (!view_changed(v) || !(e = calloc(1, sizeof(*e)))) {
		free(file);
		return NULL;
	}
	ch = e->changes = json_object();
	if (v->sender) {
		e->sender = strdup(v->sender);
		json_object_set_new(ch, "sender", record_cstring(v->sender));
	}
	if (v->sender_params) {
		e->sender_params = strdup(v->sender_params);
		json_object_set_new(ch, "sender_parameters", record_cstring(v->sender_params));
	}
	if (v->rcpts_changed) {
		json_t *deleted = json_array();
		e->rcpts_changed = true;
		e->rcpts = calloc(v->nrcpts ? v->nrcpts : 1, sizeof(*e->rcpts));
		for (size_t i = 0; e->rcpts && i < v->nrcpts; i++) {
			e->rcpts[i].addr = strdup(v->rcpts[i].addr);
			e->rcpts[i].params = v->rcpts[i].params ? strdup(v->rcpts[i].params) : NULL;
			e->rcpts[i].index = v->rcpts[i].index;
			e->nrcpts++;
		}
		/* Deleted: the client's recipients that are not in the list now. */
		for (size_t i = 0; i < env->nrcpts; i++) {
			bool kept = false;
			for (size_t j = 0; j < v->nrcpts && !kept; j++)
				kept = v->rcpts[j].index == i;
			if (!kept)
				json_array_append_new(deleted, record_cstring(env->rcpts[i]));
		}
		json_object_set_new(ch, "recipients_added", json_rcpts(v, true));
		json_object_set_new(ch, "recipients_deleted", deleted);
		json_object_set_new(ch, "recipients", json_rcpts(v, false));
	}
	if (v->body) {
		e->body = spool_ref(v->body);
		json_object_set_new(ch, "body", json_string("replaced"));
		json_object_set_new(ch, "body_size", json_integer((json_int_t)spool_size(v->body)));
	}
	if (v->quarantine) {
		json_t *q = json_object();
		e->quarantine = strdup(v->quarantine);
		e->quarantine_file = file;
		file = NULL;
		json_object_set_new(q, "reason", record_cstring(v->quarantine));
		if (e->quarantine_file)
			json_object_set_new(q, "file", record_cstring(e->quarantine_file));
		json_object_set_new(ch, "quarantine", q);
	}
	free(file);
	return e;
}

/* pipeline_envelope_free - release an envelope */
void pipeline_envelope_free(struct pipeline_envelope *e)
{
	if (!e)
		return;
	free(e->sender);
	free(e->sender_params);
	for (size_t i = 0; i < e->nrcpts; i++) {
		free(e->rcpts[i].addr);
		free(e->rcpts[i].params);
	}
	free(e->rcpts);
	spool_free(e->body);
	free(e->quarantine);
	free(e->quarantine_file);
	json_decref(e->changes);
	free(e);
}

/* job_work - run the job's filters (pool thread) */
static void job_work(void *arg)
{
	struct pipeline_job *job = arg;
	struct chain *chain = job->p->chain;
	enum pc_status verdict = PC_CONTINUE;
	const char *refusal = NULL;

	if (job->stage == CHAIN_DATA && job->spool && !job->headers_read) {
		/* A fresh parse, plus the changes of filters before a late one. */
		job->headers_read = true;
		if (message_headers_read(&job->headers, job->spool,
					 (size_t)job->p->conf->header_size_limit) == 0) {
			job->headers_ok = view_init(&job->view, &job->snap->env) == 0;
			refusal = job_header_refused(job, &job->reason);
			if (!refusal && job->ops)
				for (struct op *op = job->ops; op; op = op->next) {
					op_apply(&job->headers, op);
					view_apply(&job->view, op);
				}
			else if (!refusal)
				job_strip_forged(job);
		}
	}
	for (size_t i = job_next_filter(job, job->first); !refusal && i < chain->n;
	     i = job_next_filter(job, i + 1)) {
		if (job_decides(job) &&
		    (job->st.accept_session || (job->stage >= CHAIN_MAIL && job->st.accept_tx)))
			break;
		pthread_mutex_lock(&job->lock);
		if (job->abandoned) {
			pthread_mutex_unlock(&job->lock);
			return;
		}
		job->current = i;
		job->started = now_ts();
		pthread_mutex_unlock(&job->lock);

		json_t *entry = NULL;
		enum pc_status st = job_call(job, i, &entry);

		if (st == PC_WOULDBLOCK) {
			/* On the loop: job_submit() goes on from this filter. */
			job->current = SIZE_MAX;
			job->first = i;
			job->moved = true;
			return;
		}
		pthread_mutex_lock(&job->lock);
		if (job->abandoned) {
			pthread_mutex_unlock(&job->lock);
			json_decref(entry);
			return;
		}
		if (entry)
			json_array_append_new(job->entries, entry);
		job->committed = i + 1;
		job->ops_committed = job->nops;
		job->current = SIZE_MAX;
		job->started = now_ts();
		pthread_mutex_unlock(&job->lock);

		if (st == PC_ACCEPT) {
			if (job->stage <= CHAIN_HELO)
				job->st.accept_session = true;
			else
				job->st.accept_tx = true;
			break;
		}
		if (st != PC_CONTINUE) {
			verdict = st;
			break;
		}
	}
	if (refusal) {
		verdict = PC_REJECT;
		snprintf(job->reply, sizeof(job->reply), "%s", refusal);
	}
	/* A replaced body goes after the header block as rendered. */
	if (verdict == PC_CONTINUE && job->headers_ok && (job->headers.changed || job->view.body))
		job->rendered = message_headers_render(&job->headers, &job->rendered_len);
	if (verdict == PC_CONTINUE && job->headers_ok && job->view.quarantine &&
	    !(job->quarantine_file = job_quarantine(job->p, &job->snap->env, &job->view,
						    job->rendered, job->rendered_len,
						    job->headers.header_end, job->spool,
						    job->reason_buf, sizeof(job->reason_buf)))) {
		verdict = PC_TEMPFAIL;
		snprintf(job->reply, sizeof(job->reply), "%s", PIPELINE_QUARANTINE_FAILED);
		job->reason = job->reason_buf;
	}
	job->status = verdict;
	pthread_mutex_lock(&job->lock);
	job->finished = true;
	pthread_mutex_unlock(&job->lock);
}

/* session_free_state - the session's state, once nothing refers to it */
static void session_free_state(struct pipeline_session *ps)
{
	ps->p->nsessions--;
	json_decref(ps->session_results);
	json_decref(ps->tx_results);
	free(ps);
}

/*
 * job_deliver - hand a finished stage to the session (loop); headers is
 * the new header block at the data stage, or NULL
 */
static void job_deliver(struct pipeline_job *job, enum pc_status status,
			const char *reply, char *headers, size_t headers_len,
			unsigned long long header_end, struct pipeline_envelope *envelope,
			const struct op *ops, size_t nops)
{
	struct pipeline_session *ps = job->ps;
	json_t *results = job->stage <= CHAIN_HELO ? ps->session_results : ps->tx_results;
	struct pipeline_outcome out = { .status = status };
	struct pipeline_change *changes = NULL;

	json_array_extend(results, job->entries);
	if (status == PC_REJECT || status == PC_TEMPFAIL)
		snprintf(out.reply, sizeof(out.reply), "%s", reply);
	out.reason = job->reason;
	if (status == PC_CONTINUE && headers) {
		out.headers = headers;
		out.headers_len = headers_len;
		out.header_end = header_end;
		/* The same changes one by one, for a front-end that forwards them. */
		changes = nops ? calloc(nops, sizeof(*changes)) : NULL;
		for (const struct op *op = ops; changes && op && out.nchanges < nops; op = op->next)
			if (op->kind <= OP_STRIP) /* the envelope's and body's are not these */
				changes[out.nchanges++] = (struct pipeline_change){
					(enum pipeline_change_kind)op->kind, op->name, op->n, op->value
				};
		out.changes = changes;
	}
	if (status == PC_CONTINUE)
		out.envelope = envelope;
	else
		pipeline_envelope_free(envelope);
	if (job->done)
		job->done(job->arg, &out);
	pipeline_envelope_free(out.envelope);
	free(changes);
}

/* job_take_back - the job's copies become the session's state (loop) */
static void job_take_back(struct pipeline_job *job, size_t skip)
{
	struct pipeline_session *ps = job->ps;

	for (size_t i = 0; i < job->p->chain->n; i++) {
		if (i == skip) {
			/* A late call may still change its slot: forget it. */
			ps->st.session_data[i] = NULL;
			ps->st.tx_data[i] = NULL;
			continue;
		}
		ps->st.session_data[i] = job->st.session_data[i];
		if (job->stage != CHAIN_RESET)
			ps->st.tx_data[i] = job->st.tx_data[i];
	}
	if (!job_decides(job))
		return;
	ps->st.accept_session |= job->st.accept_session;
	ps->st.accept_tx |= job->st.accept_tx;
	ps->st.limit_session = job->st.limit_session;
	ps->st.limit_tx = job->st.limit_tx;
}

/* job_end - a job of the session is over: start the next (loop) */
static void job_end(struct pipeline_session *ps)
{
	ps->running = NULL;
	job_kick(ps);
}

/* job_done - the thread finished the job (loop) */
static void job_done(void *arg)
{
	struct pipeline_job *job = arg;
	struct pipeline_session *ps = job->ps;

	if (job->abandoned) {
		/* Its call came back after the deadline: nobody waits. */
		job_free(job);
		return;
	}
	if (job->timer)
		evtimer_del(job->timer);
	job_take_back(job, SIZE_MAX);
	if (job_decides(job)) {
		struct pipeline_envelope *e = NULL;
		if (job->status == PC_CONTINUE)
			e = view_outcome(&job->view, &job->snap->env, job->quarantine_file);
		else
			free(job->quarantine_file);
		job->quarantine_file = NULL;
		job_deliver(job, job->status, job->reply, job->rendered,
			    job->rendered_len, job->headers.header_end, e, job->ops, job->nops);
	}
	job_free(job);
	job_end(ps);
}

/* job_continue - after a late or failed filter, go on from the next (loop) */
static void job_continue(struct pipeline_job *old, size_t late, json_t *entry)
{
	struct pipeline_session *ps = old->ps;
	struct pipeline_job *job = job_new(ps, old->stage, old->snap);

	if (!job) {
		json_decref(entry);
		job_deliver(old, PC_TEMPFAIL, "451 4.3.0 Error: out of memory, try again later",
			    NULL, 0, 0, NULL, NULL, 0);
		return;
	}
	job->done = old->done;
	job->arg = old->arg;
	job->first = late + 1;
	job->st = ps->st;
	job->spool = old->spool ? spool_ref(old->spool) : NULL;
	json_array_extend(job->entries, old->entries);
	json_array_append_new(job->entries, entry);
	/* The header changes of the filters that finished in time. */
	job->ops = ops_prefix(old->ops, old->ops_committed);
	for (job->ops_tail = job->ops; job->ops_tail && job->ops_tail->next;)
		job->ops_tail = job->ops_tail->next;
	ps->running = job;
	job_submit(job);
}

/*
 * job_fail - filter `late` of a stage job timed out or could not run:
 * apply its on_error (loop). The job is no longer the session's.
 */
static void job_fail(struct pipeline_job *job, size_t late, const char *why,
		     long long us)
{
	struct pipeline_session *ps = job->ps;
	const struct chain_filter *f = &job->p->chain->filters[late];
	json_t *entry = entry_new(job, late);
	char reply[PIPELINE_REPLY_MAX];

	log_warning("filter %s: session %s: %s at %s: using on_error (%s)", f->name,
		    job->snap->env.session_id, why, chain_stage_name(job->stage),
		    on_error_name(f->on_error));
	json_object_set_new(entry, "verdict", record_cstring(why));
	json_object_set_new(entry, "usec", json_integer(us));
	json_object_set_new(entry, "action", record_cstring(on_error_name(f->on_error)));
	if (f->on_error == PC_CONTINUE && job_next_filter(job, late + 1) < job->p->chain->n) {
		job_continue(job, late, entry);
		return;
	}
	json_array_append_new(job->entries, entry);
	if (f->on_error == PC_CONTINUE) {
		/* The last filter failed and accept lets the message pass,
		 * with what the filters before it changed in the header. */
		char *headers = NULL;
		size_t len = 0;
		unsigned long long end = 0;
		struct message_headers h;
		struct pipeline_envelope *e = NULL;
		struct view v = { 0 };
		char qwhy[256];
		struct op *ops = NULL;

		if (job->stage == CHAIN_DATA && job->ops_committed && job->spool &&
		    message_headers_read(&h, job->spool,
					 (size_t)job->p->conf->header_size_limit) == 0) {
			ops = ops_prefix(job->ops, job->ops_committed);
			bool ok = view_init(&v, &job->snap->env) == 0;
			for (struct op *op = ops; op; op = op->next) {
				op_apply(&h, op);
				view_apply(&v, op);
			}
			headers = message_headers_render(&h, &len);
			end = h.header_end;
			message_headers_free(&h);
			char *file = NULL;
			/* Rare: the late filter was the last; the file is written here. */
			if (ok && v.quarantine &&
			    !(file = job_quarantine(job->p, &job->snap->env, &v, headers, len,
						    end, job->spool, qwhy, sizeof(qwhy)))) {
				view_free(&v);
				ops_free(ops);
				free(headers);
				job->reason = qwhy;
				job_deliver(job, PC_TEMPFAIL, PIPELINE_QUARANTINE_FAILED, NULL, 0, 0, NULL,
					    NULL, 0);
				job_end(ps);
				return;
			}
			if (ok)
				e = view_outcome(&v, &job->snap->env, file);
			view_free(&v);
		}
		job_deliver(job, PC_CONTINUE, NULL, headers, len, end, e, ops, job->ops_committed);
		ops_free(ops);
		free(headers);
	} else {
		default_reply(reply, sizeof(reply), job->stage, f->on_error, true);
		job_deliver(job, f->on_error, reply, NULL, 0, 0, NULL, NULL, 0);
	}
	job_end(ps);
}

/* job_timer - a deadline check, or a job that could not be queued (loop) */
static void job_timer(evutil_socket_t fd, short events, void *arg)
{
	struct pipeline_job *job = arg;
	struct chain *chain = job->p->chain;

	if (!job_decides(job)) {
		/* The pool was full: try again. */
		job_submit(job);
		return;
	}
	if (!job->submitted) {
		size_t i = job_next_filter(job, job->first);
		/* What the filters before it did on the loop stands. */
		if (job->moved)
			job_take_back(job, SIZE_MAX);
		job_fail(job, i < chain->n ? i : chain->n - 1, "unavailable", 0);
		job_free(job);
		return;
	}
	pthread_mutex_lock(&job->lock);
	if (job->finished) {
		pthread_mutex_unlock(&job->lock);
		return; /* job_done() comes next */
	}
	size_t i = job->current != SIZE_MAX ? job->current
					    : job_next_filter(job, job->committed > job->first
									   ? job->committed
									   : job->first);
	if (i >= chain->n) {
		pthread_mutex_unlock(&job->lock);
		struct timeval tv = { 0, 10000 };
		evtimer_add(job->timer, &tv);
		return;
	}
	long long us = elapsed_us(job->started);
	long long limit = (long long)chain->filters[i].timeout_ms * 1000;
	if (us < limit) {
		pthread_mutex_unlock(&job->lock);
		long long left = limit - us;
		long long later = job_min_timeout(job, i + 1);
		if (later >= 0 && later * 1000 < left)
			left = later * 1000;
		struct timeval tv = { (time_t)(left / 1000000), (suseconds_t)(left % 1000000) };
		evtimer_add(job->timer, &tv);
		return;
	}
	job->abandoned = true;
	pthread_mutex_unlock(&job->lock);
	/* What the filters before the late one did is committed: keep it. */
	job_take_back(job, i);
	job_fail(job, i, "timeout", us);
	/* The thread frees the job when its call returns (job_done). */
	job->ps = NULL;
}

/* pipeline_inline_cb - end the jobs that ran on the loop (loop) */
static void pipeline_inline_cb(evutil_socket_t fd, short events, void *arg)
{
	struct pipeline *p = arg;
	struct pipeline_job *job;

	/* job_done() may start more inline jobs: they join this list. */
	while ((job = p->inline_head)) {
		p->inline_head = job->next;
		if (!p->inline_head)
			p->inline_tail = NULL;
		job->next = NULL;
		job_done(job);
	}
}

/* job_submit - hand the job to the pool, or run it now (loop) */
static void job_submit(struct pipeline_job *job)
{
	struct pipeline *p = job->p;

	if (p->chain->inline_ok[job->stage] && !job->moved) {
		/*
		 * No deadline: nonblocking hooks return at once by contract,
		 * and DNS answers them from the cache only.
		 */
		job->submitted = true;
		job->on_loop = true;
		job->started = now_ts();
		dns_cache_only(true);
		job_work(job);
		dns_cache_only(false);
		job->on_loop = false;
		if (!job->moved) {
			if (p->inline_tail)
				p->inline_tail->next = job;
			else
				p->inline_head = job;
			p->inline_tail = job;
			event_active(p->inline_ev, EV_TIMEOUT, 1);
			return;
		}
		/* A hook would block: the rest of the stage runs on the pool. */
		log_debug("filter %s: session %s: would block at %s on the event loop: "
			  "called again on a thread", p->chain->filters[job->first].name,
			  job->snap->env.session_id, chain_stage_name(job->stage));
		job->submitted = false;
	}
	if (!job->timer)
		job->timer = evtimer_new(p->base, job_timer, job);
	job->started = now_ts();
	if (pool_submit(p->pool, job_work, job_done, job) == 0) {
		job->submitted = true;
		if (job_decides(job)) {
			long long ms = job_min_timeout(job, job->first);
			if (ms < 0)
				ms = 1000;
			struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
			evtimer_add(job->timer, &tv);
		}
		return;
	}
	/* The pool is full: fail the stage, or retry a reset later. */
	struct timeval tv = { 0, job_decides(job) ? 0 : PIPELINE_RETRY_MS * 1000 };
	evtimer_add(job->timer, &tv);
}

/* job_kick - start the session's next job if none runs (loop) */
static void job_kick(struct pipeline_session *ps)
{
	struct pipeline_job *job = ps->queue;

	if (ps->running)
		return;
	if (!job) {
		if (ps->ended)
			session_free_state(ps);
		return;
	}
	ps->queue = job->next;
	if (!ps->queue)
		ps->queue_tail = NULL;
	job->next = NULL;
	/* The job starts from the state the jobs before it left. */
	job->st = ps->st;
	if (job->stage == CHAIN_RESET)
		memset(ps->st.tx_data, 0, sizeof(ps->st.tx_data));
	ps->running = job;
	job_submit(job);
}

/* job_enqueue - add a job behind the session's others (loop) */
static void job_enqueue(struct pipeline_session *ps, struct pipeline_job *job)
{
	if (ps->queue_tail)
		ps->queue_tail->next = job;
	else
		ps->queue = job;
	ps->queue_tail = job;
	job_kick(ps);
}

/* pipeline_new - the pipeline of one worker */
struct pipeline *pipeline_new(struct event_base *base, struct chain *chain,
			      const struct conf *conf)
{
	struct pipeline *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->base = base;
	p->chain = chain;
	p->conf = conf;
	if (chain && chain->n) {
		p->pool = pool_new(base, conf->filter_threads, conf->filter_queue);
		p->inline_ev = event_new(base, -1, 0, pipeline_inline_cb, p);
		if (!p->pool || !p->inline_ev) {
			if (p->inline_ev)
				event_free(p->inline_ev);
			pool_detach(p->pool);
			free(p);
			return NULL;
		}
	}
	return p;
}

/* pipeline_free - release the pipeline (not its pool) */
void pipeline_free(struct pipeline *p)
{
	if (!p)
		return;
	pool_detach(p->pool);
	if (p->inline_ev)
		event_free(p->inline_ev);
	free(p);
}

/* pipeline_active - whether there is a chain */
bool pipeline_active(const struct pipeline *p)
{
	return p && p->chain && p->chain->n > 0;
}

/* pipeline_saturated - whether the pool would refuse a job now */
bool pipeline_saturated(const struct pipeline *p)
{
	return pipeline_active(p) && p->pool && pool_full(p->pool);
}

/* pipeline_session_new - fresh per-session state */
struct pipeline_session *pipeline_session_new(struct pipeline *p)
{
	struct pipeline_session *ps = calloc(1, sizeof(*ps));

	if (!ps)
		return NULL;
	ps->p = p;
	p->nsessions++;
	ps->session_results = json_array();
	ps->tx_results = json_array();
	return ps;
}

/* pipeline_sessions - session states alive */
unsigned pipeline_sessions(const struct pipeline *p)
{
	return p->nsessions;
}

/* pipeline_wanted - whether a stage has work */
bool pipeline_wanted(const struct pipeline *p, const struct pipeline_session *ps,
		     enum chain_stage stage)
{
	if (!p->chain || !p->chain->any[stage] || ps->st.accept_session)
		return false;
	if (stage >= CHAIN_MAIL && stage <= CHAIN_DATA && ps->st.accept_tx)
		return false;
	return true;
}

/* pipeline_run - run a stage */
void pipeline_run(struct pipeline *p, struct pipeline_session *ps,
		  enum chain_stage stage, const struct pipeline_env *env,
		  pipeline_done_fn done, void *arg)
{
	struct pipeline_job *job = job_for(ps, stage, env);

	if (!job) {
		/*
		 * done() may not be called from here and there is no job to
		 * call it later: the worker stops, its clients got no 250 for
		 * anything not delivered, and the master starts another.
		 */
		log_error("session %s: out of memory for a filter call", env->session_id);
		abort();
	}
	job->done = done;
	job->arg = arg;
	if (env->spool)
		job->spool = spool_ref(env->spool);
	job_enqueue(ps, job);
}

/* pipeline_tx_end - the transaction is over */
void pipeline_tx_end(struct pipeline *p, struct pipeline_session *ps,
		     const struct pipeline_env *env)
{
	ps->st.accept_tx = false;
	ps->st.limit_tx = 0;
	json_array_clear(ps->tx_results);
	if (!p->chain || !p->chain->any[CHAIN_RESET]) {
		memset(ps->st.tx_data, 0, sizeof(ps->st.tx_data));
		return;
	}
	struct pipeline_job *job = job_for(ps, CHAIN_RESET, env);
	if (job)
		job_enqueue(ps, job);
}

/* pipeline_session_end - the session is over */
void pipeline_session_end(struct pipeline *p, struct pipeline_session *ps,
			  const struct pipeline_env *env)
{
	/* Outcomes of calls still queued or running go nowhere now. */
	if (ps->running)
		ps->running->done = NULL;
	for (struct pipeline_job *j = ps->queue; j; j = j->next)
		j->done = NULL;
	/* The session ended its transaction first (pipeline_tx_end). */
	if (p->chain && p->chain->any[CHAIN_CLOSE]) {
		struct pipeline_job *job = job_for(ps, CHAIN_CLOSE, env);
		if (job)
			job_enqueue(ps, job);
	}
	ps->ended = true;
	job_kick(ps);
}

/* pipeline_size_limit - the lowest limit a filter set */
unsigned long long pipeline_size_limit(const struct pipeline_session *ps)
{
	unsigned long long a = ps->st.limit_session, b = ps->st.limit_tx;

	if (!a)
		return b;
	if (!b)
		return a;
	return a < b ? a : b;
}

/* pipeline_results - the filter entries for a decision record */
json_t *pipeline_results(const struct pipeline_session *ps)
{
	json_t *all = json_array();

	json_array_extend(all, ps->session_results);
	json_array_extend(all, ps->tx_results);
	return all;
}

/* pipeline_record_filters - the entries, or NULL when there are none */
json_t *pipeline_record_filters(const struct pipeline_session *ps)
{
	json_t *a;

	if (!ps)
		return NULL;
	a = pipeline_results(ps);
	if (json_array_size(a) == 0) {
		json_decref(a);
		return NULL;
	}
	return a;
}

/*
 * The plugin API. These run on a pool thread, inside a hook, and touch
 * only the job's copies.
 */

static const struct pipeline_env *ctx_env(pc_ctx *ctx)
{
	return &ctx->job->snap->env;
}

static bool ctx_data_stage(pc_ctx *ctx)
{
	return ctx->job->stage == CHAIN_DATA &&
	       ctx->job->headers_ok;
}

void *pc_instance(pc_ctx *ctx)
{
	return ctx->filter->instance;
}

void *pc_session_data(pc_ctx *ctx)
{
	return ctx->job->st.session_data[ctx->index];
}

void pc_set_session_data(pc_ctx *ctx, void *data)
{
	ctx->job->st.session_data[ctx->index] = data;
}

void *pc_tx_data(pc_ctx *ctx)
{
	return ctx->job->st.tx_data[ctx->index];
}

void pc_set_tx_data(pc_ctx *ctx, void *data)
{
	ctx->job->st.tx_data[ctx->index] = data;
}

const char *pc_client_addr(pc_ctx *ctx)
{
	return ctx_env(ctx)->addr;
}

unsigned pc_client_port(pc_ctx *ctx)
{
	return ctx_env(ctx)->port;
}

const char *pc_client_name(pc_ctx *ctx)
{
	return ctx_env(ctx)->name;
}

const char *pc_helo(pc_ctx *ctx)
{
	return ctx_env(ctx)->helo;
}

bool pc_tls(pc_ctx *ctx)
{
	return ctx_env(ctx)->tls;
}

const char *pc_auth_user(pc_ctx *ctx)
{
	return ctx_env(ctx)->auth_user;
}

const char *pc_listener(pc_ctx *ctx)
{
	return ctx_env(ctx)->listener;
}

const char *pc_tls_version(pc_ctx *ctx)
{
	return ctx_env(ctx)->tls_version;
}

const char *pc_tls_cipher(pc_ctx *ctx)
{
	return ctx_env(ctx)->tls_cipher;
}

int pc_tls_bits(pc_ctx *ctx)
{
	return ctx_env(ctx)->tls_bits;
}

const char *pc_tls_sni(pc_ctx *ctx)
{
	return ctx_env(ctx)->tls_sni;
}

const char *pc_tls_peer_subject(pc_ctx *ctx)
{
	return ctx_env(ctx)->tls_peer_subject;
}

const char *pc_tls_peer_fingerprint(pc_ctx *ctx)
{
	return ctx_env(ctx)->tls_peer_fingerprint;
}

bool pc_on_loop(pc_ctx *ctx)
{
	return ctx->job->on_loop;
}

const char *pc_session_id(pc_ctx *ctx)
{
	return ctx_env(ctx)->session_id;
}

const char *pc_authserv_id(pc_ctx *ctx)
{
	return ctx->job->p->conf->authserv_id;
}

/* ctx_view - the envelope as changed so far, or NULL outside the data stage */
static const struct view *ctx_view(pc_ctx *ctx)
{
	return ctx_data_stage(ctx) && ctx->job->view.ready ? &ctx->job->view : NULL;
}

const char *pc_sender(pc_ctx *ctx)
{
	const struct view *v = ctx_view(ctx);

	return v && v->sender ? v->sender : ctx_env(ctx)->sender;
}

const char *pc_mail_param(pc_ctx *ctx, const char *keyword)
{
	const struct pipeline_env *env = ctx_env(ctx);
	const struct view *v = ctx_view(ctx);

	if (v && v->sender_path) {
		const struct smtp_param *sp = keyword ? smtp_path_param(v->sender_path, keyword) : NULL;
		return !sp ? NULL : sp->value ? sp->value : "";
	}
	for (size_t i = 0; keyword && i < env->nparams; i++)
		if (strcasecmp(env->params[i].keyword, keyword) == 0)
			return env->params[i].value ? env->params[i].value : "";
	return NULL;
}

size_t pc_rcpt_count(pc_ctx *ctx)
{
	const struct view *v = ctx_view(ctx);

	return v ? v->nrcpts : ctx_env(ctx)->nrcpts;
}

const char *pc_rcpt(pc_ctx *ctx, size_t i)
{
	const struct pipeline_env *env = ctx_env(ctx);
	const struct view *v = ctx_view(ctx);

	if (v)
		return i < v->nrcpts ? v->rcpts[i].addr : NULL;
	return i < env->nrcpts ? env->rcpts[i] : NULL;
}

const char *pc_rcpt_current(pc_ctx *ctx)
{
	return ctx->job->stage == CHAIN_RCPT ? ctx_env(ctx)->rcpt : NULL;
}

unsigned long long pc_message_size(pc_ctx *ctx)
{
	return ctx->job->spool ? spool_size(ctx->job->spool) : 0;
}

size_t pc_header_count(pc_ctx *ctx)
{
	return ctx_data_stage(ctx) ? ctx->job->headers.n : 0;
}

const char *pc_header_name(pc_ctx *ctx, size_t i)
{
	if (!ctx_data_stage(ctx) || i >= ctx->job->headers.n)
		return NULL;
	return ctx->job->headers.fields[i].name;
}

const char *pc_header_value(pc_ctx *ctx, size_t i)
{
	if (!ctx_data_stage(ctx) || i >= ctx->job->headers.n)
		return NULL;
	return ctx->job->headers.fields[i].value;
}

const char *pc_header_raw(pc_ctx *ctx, size_t i, size_t *len)
{
	const struct message_field *f;
	size_t n;

	if (!ctx_data_stage(ctx) || i >= ctx->job->headers.n || !len)
		return NULL;
	f = &ctx->job->headers.fields[i];
	if (!f->raw)
		return NULL;
	n = f->raw_len;
	/* the line end closes the field; it is not part of it */
	if (n > 0 && f->raw[n - 1] == '\n')
		n--;
	if (n > 0 && f->raw[n - 1] == '\r')
		n--;
	*len = n;
	return f->raw;
}

const char *pc_header_get(pc_ctx *ctx, const char *name, size_t n)
{
	long i;

	if (!ctx_data_stage(ctx) || !name)
		return NULL;
	i = message_header_find(&ctx->job->headers, name, n);
	return i < 0 ? NULL : ctx->job->headers.fields[i].value;
}

/* ctx_header_op - a header change from a hook */
static int ctx_header_op(pc_ctx *ctx, enum op_kind kind, const char *name,
			 size_t n, const char *value)
{
	if (!ctx_data_stage(ctx) || !name || (kind != OP_CHANGE && !value))
		return -1;
	if (job_record(ctx->job, kind, name, n, value) < 0) {
		log_warning("filter %s: session %s: header change of %s refused",
			    ctx->filter->name, ctx_env(ctx)->session_id, name);
		return -1;
	}
	return 0;
}

int pc_header_add(pc_ctx *ctx, const char *name, const char *value)
{
	return ctx_header_op(ctx, OP_ADD, name, 0, value);
}

int pc_header_insert(pc_ctx *ctx, const char *name, const char *value)
{
	return ctx_header_op(ctx, OP_INSERT, name, 0, value);
}

int pc_header_insert_at(pc_ctx *ctx, size_t index, const char *name, const char *value)
{
	return ctx_header_op(ctx, OP_INSERT, name, index, value);
}

int pc_header_change(pc_ctx *ctx, const char *name, size_t n, const char *value)
{
	return ctx_header_op(ctx, OP_CHANGE, name, n, value);
}

ssize_t pc_body_read(pc_ctx *ctx, unsigned long long offset, void *buf, size_t len)
{
	struct pipeline_job *job = ctx->job;

	if (!ctx_data_stage(ctx) || !buf) {
		errno = EINVAL;
		return -1;
	}
	if (job->view.body)
		return spool_read(job->view.body, offset, buf, len);
	if (offset > ULLONG_MAX - job->headers.body_start)
		return 0;
	return spool_read(job->spool, job->headers.body_start + offset, buf, len);
}

/* ctx_refused - log a change a hook asked for and cannot have; -1 */
static int ctx_refused(pc_ctx *ctx, const char *what, const char *addr)
{
	log_warning("filter %s: session %s: %s%s%s%s refused", ctx->filter->name,
		    ctx_env(ctx)->session_id, what, addr ? " <" : "", addr ? addr : "",
		    addr ? ">" : "");
	return -1;
}

/* ctx_envelope_op - an envelope change from a hook, its address checked */
static int ctx_envelope_op(pc_ctx *ctx, enum op_kind kind, const char *what,
			   const char *addr, const char *params)
{
	struct smtp_path *path;
	char *norm = NULL;
	int rc;

	if (!ctx_data_stage(ctx) || !addr)
		return ctx_refused(ctx, what, addr);
	if (kind == OP_RCPT_DEL)
		return job_record(ctx->job, kind, addr, 0, NULL) < 0 ? ctx_refused(ctx, what, addr) : 0;
	/* As the client's own MAIL or RCPT would be: no line end gets through. */
	if (!(path = path_parse(kind == OP_RCPT_ADD, addr, params)))
		return ctx_refused(ctx, what, addr);
	if (params && !(norm = smtp_params_text(path->params, path->nparams))) {
		smtp_path_free(path);
		free(path);
		return ctx_refused(ctx, what, addr);
	}
	rc = job_record(ctx->job, kind, path->path, 0, norm);
	smtp_path_free(path);
	free(path);
	free(norm);
	return rc < 0 ? ctx_refused(ctx, what, addr) : 0;
}

int pc_set_sender(pc_ctx *ctx, const char *addr, const char *params)
{
	return ctx_envelope_op(ctx, OP_SENDER, "sender change to", addr, params);
}

int pc_rcpt_add(pc_ctx *ctx, const char *addr, const char *params)
{
	return ctx_envelope_op(ctx, OP_RCPT_ADD, "recipient addition of", addr,
			       params ? params : "");
}

int pc_rcpt_delete(pc_ctx *ctx, const char *addr)
{
	return ctx_envelope_op(ctx, OP_RCPT_DEL, "recipient deletion of", addr, NULL);
}

int pc_body_replace(pc_ctx *ctx, const void *data, size_t len)
{
	const struct conf *conf = ctx->job->p->conf;

	if (!ctx_data_stage(ctx) || (!data && len))
		return ctx_refused(ctx, "body replacement", NULL);
	if (!ctx->body &&
	    !(ctx->body = spool_new(conf->spool_dir, (size_t)conf->spool_memory_limit)))
		return ctx_refused(ctx, "body replacement", NULL);
	return spool_write_text(ctx->body, data, len);
}

int pc_quarantine(pc_ctx *ctx, const char *reason)
{
	char text[PIPELINE_REPLY_MAX];

	if (!ctx_data_stage(ctx) || !*ctx->job->p->conf->quarantine_dir)
		return ctx_refused(ctx, "quarantine (no quarantine_dir?)", NULL);
	/* One line of printable text, as a reply's. */
	snprintf(text, sizeof(text), "%s", reason && *reason ? reason : "quarantined by a filter");
	for (char *c = text; *c; c++)
		if ((unsigned char)*c < ' ' || (unsigned char)*c == 127)
			*c = ' ';
	return job_record(ctx->job, OP_QUARANTINE, "", 0, text) < 0
		       ? ctx_refused(ctx, "quarantine", NULL) : 0;
}

void pc_set_size_limit(pc_ctx *ctx, unsigned long long bytes)
{
	struct pipeline_job *job = ctx->job;
	unsigned long long *limit;

	if (!job_decides(job) || bytes == 0)
		return;
	limit = job->stage <= CHAIN_HELO ? &job->st.limit_session : &job->st.limit_tx;
	if (*limit == 0 || bytes < *limit)
		*limit = bytes;
}

/* enh_valid - an RFC 3463 code "C.S.D" of class cls */
static bool enh_valid(const char *enh, int cls)
{
	const char *p = enh;
	int parts = 0;

	if (!enh || p[0] - '0' != cls || p[1] != '.')
		return false;
	p += 2;
	for (parts = 0; parts < 2; parts++) {
		size_t n = 0;
		if (*p == '0' && p[1] >= '0' && p[1] <= '9')
			return false; /* no leading zeros */
		while (p[n] >= '0' && p[n] <= '9')
			n++;
		if (n == 0 || n > 3)
			return false;
		p += n;
		if (parts == 0 && *p++ != '.')
			return false;
	}
	return *p == 0;
}

int pc_set_reply(pc_ctx *ctx, int code, const char *enh, const char *fmt, ...)
{
	char text[PIPELINE_REPLY_MAX - 16];
	va_list ap;
	int cls = code / 100;

	if (!job_decides(ctx->job) || code < 400 || code > 599 ||
	    (enh && !enh_valid(enh, cls)) || !fmt) {
		log_error("filter %s: session %s: invalid reply %d %s refused",
			  ctx->filter->name, ctx_env(ctx)->session_id, code,
			  enh ? enh : "");
		return -1;
	}
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	/* One line of printable text: a CR or LF would forge more replies. */
	for (char *c = text; *c; c++)
		if ((unsigned char)*c < ' ' || (unsigned char)*c == 127)
			*c = ' ';
	if (!enh)
		enh = cls == 4 ? "4.7.1" : "5.7.1";
	snprintf(ctx->reply, sizeof(ctx->reply), "%d %s %s", code, enh, text);
	ctx->reply_code = code;
	ctx->reply_set = true;
	return 0;
}

/* ctx_results - this call's results object */
static json_t *ctx_results(pc_ctx *ctx)
{
	if (!ctx->results)
		ctx->results = json_object();
	return ctx->results;
}

void pc_result(pc_ctx *ctx, const char *key, const char *value)
{
	if (key && value)
		json_object_set_new(ctx_results(ctx), key, record_cstring(value));
}

void pc_result_int(pc_ctx *ctx, const char *key, long long value)
{
	if (key)
		json_object_set_new(ctx_results(ctx), key, json_integer(value));
}

void pc_log(pc_ctx *ctx, enum pc_log_level level, const char *fmt, ...)
{
	static const enum log_level levels[] = { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO,
						 LOG_LEVEL_WARNING, LOG_LEVEL_ERROR };
	enum log_level l = (unsigned)level <= PC_LOG_ERROR ? levels[level] : LOG_LEVEL_ERROR;
	char prefix[256];
	va_list ap;

	if (!log_enabled(l))
		return;
	snprintf(prefix, sizeof(prefix), "filter %s: session %s: ", ctx->filter->name,
		 ctx_env(ctx)->session_id);
	va_start(ap, fmt);
	log_vmsg(l, prefix, fmt, ap);
	va_end(ap);
}
