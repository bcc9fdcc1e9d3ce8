/*
 * milter_front.c - serve the filter chain to an MTA through libmilter
 *
 * Threads: libmilter's listener runs on the main thread (smfi_main())
 * and starts one thread per MTA connection; those threads are the only
 * ones that call smfi_*() and the only ones that read or write a
 * connection's struct mf_conn, except while they wait. The pipeline,
 * whose state is the event loop's alone (pipeline.h), runs on the loop
 * thread with its thread pool. A callback puts a request on mf.queue,
 * wakes the loop through an eventfd and sleeps on its connection's
 * condition variable; the loop runs the request (a stage, the end of a
 * transaction with its decision record, the end of the session) and
 * signals the answer. While the callback's thread sleeps, the loop may
 * read the connection's fields (the environment the pipeline copies)
 * and write the answer's: the lock hands them over both ways.
 *
 * Why the stages go to the loop instead of each thread calling the
 * filters itself: deadlines, on_error, the pool's bound, header changes
 * and records are then exactly those of proxy mode, from the same code.
 * The answer comes back within the filters' deadlines, which the
 * administrator keeps under the MTA's milter timeouts (portcullis.8).
 *
 * The message: each header field the MTA sends is written to a spool as
 * "Name:value" CRLF (SMFIP_HDR_LEADSPC: values come with their leading
 * white space, so the field is the one the client sent), then the blank
 * line and the body chunks, so the data stage reads the same message as
 * in proxy mode and pc_body_read() streams it from memory or disk. The
 * header changes of the chain go back to the MTA one by one, in chain
 * order: smfi_addheader, smfi_insheader, smfi_chgheader (removals of
 * forged Authentication-Results fields as chgheader with no value, from
 * the last to the first so that the indexes hold).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <event2/event.h>
#include <libmilter/mfapi.h>

#include "chain.h"
#include "log.h"
#include "message.h"
#include "milter_front.h"
#include "pipeline.h"
#include "record.h"
#include "smtp.h"
#include "spool.h"
#include "worker.h"

#define MF_OPEN_PAUSE_MS 50
#define MF_OPEN_TRIES 200 /* 10 s for the previous generation to let go of the socket */
#define MF_REPLY_MAX 600

enum mf_op { MF_OPEN, MF_RUN, MF_TX_END, MF_CLOSE, MF_STOP };

/* The most body bytes one smfi_replacebody() call takes. */
#define MF_BODY_CHUNK 65536

/* The changes the chain may ask of the MTA (every one the pipeline knows). */
#define MF_ACTIONS                                                            \
	(SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGFROM | SMFIF_ADDRCPT |       \
	 SMFIF_ADDRCPT_PAR | SMFIF_DELRCPT | SMFIF_CHGBODY | SMFIF_QUARANTINE)

/* One header change, copied out of the pipeline's outcome. */
struct mf_change {
	enum pipeline_change_kind kind;
	char *name;
	size_t n;
	char *value;
};

/* One MTA connection: a session of the pipeline. */
struct mf_conn {
	char id[32];
	bool opened;  /* the connect callback came (a record is due) */
	bool leadspc; /* header values come and go with their leading space */
	char addr[INET6_ADDRSTRLEN];
	unsigned port;
	char *name;	/* the MTA's verified client name, or NULL */
	char *helo;
	char *login;	/* {auth_authen} */
	char *listener; /* {daemon_name}, or j */
	bool tls;	/* {tls_version} */
	char *tls_version, *tls_cipher; /* {tls_version}, {cipher} */
	int tls_bits;	/* {cipher_bits} */
	const char *refused; /* the connect filters refused the client */
	unsigned ntx;	/* transactions recorded */
	pthread_cond_t cond;

	/* The loop's: the filters' state, and the limit they set. */
	struct pipeline_session *ps;
	unsigned long long size_limit;

	/* The transaction (MAIL to end of message or abort). */
	bool in_tx;
	unsigned txn;
	char *sender;
	struct smtp_param *params;
	size_t nparams;
	bool smtputf8;
	char **rcpts; /* accepted */
	size_t nrcpts;
	struct record_rcpt *recipients; /* every RCPT and its refusal */
	size_t nrecipients;
	struct spool *spool; /* NULL when the MTA sends no header or body */
	bool oom;	     /* the spool could not be made */
	unsigned long long size;
	bool too_big;
	char queue_id[64];
};

/* One request to the loop; the answer is written before done. */
struct mf_req {
	struct mf_req *next;
	enum mf_op op;
	struct mf_conn *c;
	enum chain_stage stage;
	const char *helo, *rcpt; /* what the stage decides */
	const char *action, *reply, *reason; /* MF_TX_END, MF_CLOSE: the record */

	bool done;
	bool ran; /* MF_RUN: a filter was called */
	enum pc_status status;
	char out_reply[MF_REPLY_MAX];
	char out_reason[128];
	struct mf_change *changes;
	size_t nchanges;
	/*
	 * MF_RUN at the data stage: what else the chain changed (sender,
	 * recipients, body, quarantine), handed on to MF_TX_END, which frees
	 * it on the loop (its body is a spool reference)
	 */
	struct pipeline_envelope *envelope;
};

static struct {
	const struct conf *conf;
	struct chain *chain;
	struct event_base *base;
	struct pipeline *pipeline;
	pthread_mutex_t lock;
	struct mf_req *head, *tail;
	int efd;
	unsigned nconns;
	unsigned id_prefix;
	unsigned long long next_id;
	int listen_fd;		  /* libmilter's listening socket */
	bool draining;		  /* loop: no longer listening, finishing */
	bool finishing;		  /* loop: the last close hooks, then exit */
	time_t drain_deadline;	  /* loop */
	struct event *drain_timer; /* loop */
} mf = { .lock = PTHREAD_MUTEX_INITIALIZER, .efd = -1, .listen_fd = -1 };

/* mf_answer - the loop is done with a request: wake its thread (loop) */
static void mf_answer(struct mf_req *req)
{
	pthread_mutex_lock(&mf.lock);
	req->done = true;
	if (req->c)
		pthread_cond_signal(&req->c->cond);
	pthread_mutex_unlock(&mf.lock);
}

/* mf_call - hand a request to the loop and wait for its answer (milter thread) */
static void mf_call(struct mf_req *req)
{
	struct mf_conn *c = req->c; /* MF_STOP's request is the loop's to free */
	uint64_t one = 1;

	pthread_mutex_lock(&mf.lock);
	if (mf.tail)
		mf.tail->next = req;
	else
		mf.head = req;
	mf.tail = req;
	pthread_mutex_unlock(&mf.lock);
	while (write(mf.efd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	if (!c)
		return;
	pthread_mutex_lock(&mf.lock);
	while (!req->done)
		pthread_cond_wait(&c->cond, &mf.lock);
	pthread_mutex_unlock(&mf.lock);
}

/* mf_env - what the filters see now (loop, while the thread waits) */
static void mf_env(const struct mf_conn *c, struct pipeline_env *env)
{
	memset(env, 0, sizeof(*env));
	env->session_id = c->id;
	env->addr = c->addr;
	env->port = c->port;
	env->listener = c->listener ? c->listener : "";
	env->helo = c->helo;
	env->name = c->name;
	env->auth_user = c->login;
	env->tls = c->tls;
	if (c->tls) {
		env->tls_version = c->tls_version;
		env->tls_cipher = c->tls_cipher;
		env->tls_bits = c->tls_bits;
	}
	/* The MTA speaks ESMTP to the client when it passes ESMTP arguments. */
	env->esmtp = c->nparams > 0;
	if (!c->in_tx)
		return;
	env->sender = c->sender;
	env->params = c->params;
	env->nparams = c->nparams;
	env->smtputf8 = c->smtputf8;
	env->rcpts = (const char *const *)c->rcpts;
	env->nrcpts = c->nrcpts;
}

/* mf_record_client - who the client is, for a decision record */
static struct record_client mf_record_client(const struct mf_conn *c)
{
	return (struct record_client){
		.address = c->addr,
		.port = c->port,
		.helo = c->helo,
		.listener = c->listener,
		.name = c->name,
		.name_status = c->name ? "confirmed" : NULL,
	};
}

/* mf_filters_json - the filter entries for a record, or NULL if none (loop) */
static json_t *mf_filters_json(const struct mf_conn *c)
{
	return pipeline_record_filters(c->ps);
}

/* mf_size_limit - the largest message: the host's, or a filter's lower one (loop) */
static void mf_size_limit(struct mf_conn *c)
{
	unsigned long long limit = mf.conf->message_size_limit;

	if (c->ps) {
		unsigned long long f = pipeline_size_limit(c->ps);
		if (f && f < limit)
			limit = f;
	}
	c->size_limit = limit;
}

/* mf_stage_done - the pipeline's outcome of a stage (loop) */
static void mf_stage_done(void *arg, struct pipeline_outcome *out)
{
	struct mf_req *req = arg;

	req->status = out->status;
	snprintf(req->out_reply, sizeof(req->out_reply), "%s", out->reply);
	/* Taken: it goes to the MTA, then to MF_TX_END, which frees it here. */
	req->envelope = out->envelope;
	out->envelope = NULL;
	if (out->reason)
		snprintf(req->out_reason, sizeof(req->out_reason), "%s", out->reason);
	if (out->nchanges && (req->changes = calloc(out->nchanges, sizeof(*req->changes)))) {
		for (size_t i = 0; i < out->nchanges; i++) {
			const struct pipeline_change *ch = &out->changes[i];
			struct mf_change *m = &req->changes[req->nchanges++];
			m->kind = ch->kind;
			m->name = strdup(ch->name);
			m->n = ch->n;
			m->value = ch->value ? strdup(ch->value) : NULL;
		}
	}
	mf_size_limit(req->c);
	mf_answer(req);
}

/* mf_record_tx - the decision record of the transaction (loop) */
static void mf_record_tx(struct mf_conn *c, const struct mf_req *req)
{
	struct record_client client = mf_record_client(c);
	struct record_tx rtx = {
		.number = c->txn,
		.sender = c->sender,
		.recipients = c->recipients,
		.nrecipients = c->nrecipients,
		.sized = c->spool != NULL,
		.size = c->size,
		.action = req->action,
		.reply = req->reply,
		.reason = req->reason,
		.queue_id = *c->queue_id ? c->queue_id : NULL,
		.changes = req->envelope ? req->envelope->changes : NULL,
	};

	record_transaction(c->id, &client, &rtx, NULL, mf_filters_json(c));
	c->ntx++;
}

/*
 * mf_exit_when_idle - exit once the close hooks of the last sessions ran
 * (a filter may close what it holds there), or after 2 s, within the
 * master's margin past drain_timeout (loop). The
 * process ends here, from the loop thread, while libmilter's listener
 * still blocks the main thread: smfi_stop() would make it remove a UNIX
 * socket's path, which by now may be the next generation's.
 */
static void mf_exit_when_idle(evutil_socket_t fd, short events, void *arg)
{
	static unsigned tries;
	struct timeval tv = { 0, 100000 };
	unsigned left;

	if (mf.pipeline && pipeline_sessions(mf.pipeline) > 0 && ++tries < 20 &&
	    event_base_once(mf.base, -1, EV_TIMEOUT, mf_exit_when_idle, NULL, &tv) == 0)
		return;
	pthread_mutex_lock(&mf.lock);
	left = mf.nconns;
	pthread_mutex_unlock(&mf.lock);
	record_close();
	log_info("milter: done");
	_exit(left ? 1 : 0);
}

/* mf_finish - stop for good: the filters' close hooks, then exit (loop) */
static void mf_finish(void)
{
	if (mf.finishing)
		return;
	mf.finishing = true;
	if (mf.drain_timer)
		evtimer_del(mf.drain_timer);
	mf_exit_when_idle(-1, 0, NULL);
}

/* mf_drain_check - the MTA's connections are done, or the time is up (loop) */
static void mf_drain_check(evutil_socket_t fd, short events, void *arg)
{
	struct timeval tv = { 0, 100000 };
	unsigned left;

	pthread_mutex_lock(&mf.lock);
	left = mf.nconns;
	pthread_mutex_unlock(&mf.lock);
	if (left && time(NULL) < mf.drain_deadline) {
		evtimer_add(mf.drain_timer, &tv);
		return;
	}
	if (left)
		log_warning("milter: drain deadline: closing %u MTA connections", left);
	mf_finish();
}

/*
 * mf_park_listener - stop accepting: libmilter's listening socket is
 * replaced (dup2) by one bound to an unnamed abstract address nobody can
 * reach, so the port or path is free for the next generation at once,
 * while the listener thread waits on a socket that never wakes it.
 * libmilter's only way to stop, smfi_stop(), also stops serving the
 * connections already open (the Debian build polls them all from the
 * listener's side), which are what a drain lets finish. (loop)
 */
static void mf_park_listener(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	if (mf.listen_fd < 0)
		return;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	/* Binding only the family autobinds an abstract name (unix(7)). */
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sa_family_t)) < 0 ||
	    listen(fd, 1) < 0 || dup2(fd, mf.listen_fd) < 0)
		log_error("milter: cannot stop listening: %s", strerror(errno));
	if (fd >= 0)
		close(fd);
}

/*
 * mf_drain - stop accepting and let the MTA's connections finish for up
 * to drain_timeout (loop)
 */
static void mf_drain(void)
{
	if (mf.draining || mf.finishing)
		return;
	mf.draining = true;
	mf_park_listener();
	mf.drain_deadline = time(NULL) + mf.conf->drain_timeout;
	pthread_mutex_lock(&mf.lock);
	log_info("milter: finishing %u MTA connections", mf.nconns);
	pthread_mutex_unlock(&mf.lock);
	mf.drain_timer = evtimer_new(mf.base, mf_drain_check, NULL);
	if (!mf.drain_timer) {
		mf_finish();
		return;
	}
	mf_drain_check(-1, 0, NULL);
}

/* mf_handle - run one request (loop) */
static void mf_handle(struct mf_req *req)
{
	struct mf_conn *c = req->c;
	struct pipeline_env env;

	switch (req->op) {
	case MF_OPEN:
		if (pipeline_active(mf.pipeline))
			c->ps = pipeline_session_new(mf.pipeline);
		mf_size_limit(c);
		break;
	case MF_RUN:
		if (!c->ps || !pipeline_wanted(mf.pipeline, c->ps, req->stage))
			break;
		mf_env(c, &env);
		if (req->helo)
			env.helo = req->helo;
		env.rcpt = req->rcpt;
		if (req->stage == CHAIN_DATA)
			env.spool = c->spool;
		req->ran = true;
		pipeline_run(mf.pipeline, c->ps, req->stage, &env, mf_stage_done, req);
		return;
	case MF_TX_END:
		if (req->action)
			mf_record_tx(c, req);
		pipeline_envelope_free(req->envelope);
		req->envelope = NULL;
		if (c->ps) {
			mf_env(c, &env);
			pipeline_tx_end(mf.pipeline, c->ps, &env);
		}
		/* Spool holders are counted on the loop only (spool.h). */
		spool_free(c->spool);
		c->spool = NULL;
		mf_size_limit(c);
		break;
	case MF_CLOSE:
		if (req->action && c->ntx == 0) {
			struct record_client client = mf_record_client(c);
			record_connection(c->id, &client, req->action, req->reason,
					  mf_filters_json(c));
		}
		if (c->ps) {
			mf_env(c, &env);
			pipeline_session_end(mf.pipeline, c->ps, &env);
			c->ps = NULL;
		}
		break;
	case MF_STOP:
		free(req);
		mf_finish();
		return;
	}
	req->status = PC_CONTINUE;
	mf_answer(req);
}

/* mf_wake - requests are waiting (loop) */
static void mf_wake(evutil_socket_t fd, short events, void *arg)
{
	uint64_t n;
	struct mf_req *req;

	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_error("milter: eventfd read: %s", strerror(errno));
	for (;;) {
		pthread_mutex_lock(&mf.lock);
		req = mf.head;
		if (req) {
			mf.head = req->next;
			if (!mf.head)
				mf.tail = NULL;
			req->next = NULL;
		}
		pthread_mutex_unlock(&mf.lock);
		if (!req)
			break;
		mf_handle(req);
	}
}

/*
 * mf_signal - SIGUSR1 reopens the decision log; SIGUSR2, the master's
 * word on a reload or a stop, drains (loop)
 */
static void mf_signal(evutil_socket_t sig, short events, void *arg)
{
	if (sig == SIGUSR1) {
		record_reopen();
		return;
	}
	mf_drain();
}

/* mf_loop - the loop thread */
static void *mf_loop(void *arg)
{
	sigset_t set;

	/* Only this thread takes SIGUSR1 and SIGUSR2, through libevent. */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	event_base_dispatch(mf.base);
	return NULL;
}

/* mf_free_list - free a strdup'd array */
static void mf_free_list(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

/* mf_tx_free - forget the transaction (milter thread, after MF_TX_END) */
static void mf_tx_free(struct mf_conn *c)
{
	for (size_t i = 0; i < c->nparams; i++) {
		free(c->params[i].keyword);
		free(c->params[i].value);
	}
	free(c->params);
	c->params = NULL;
	c->nparams = 0;
	free(c->sender);
	c->sender = NULL;
	mf_free_list(c->rcpts, c->nrcpts);
	c->rcpts = NULL;
	c->nrcpts = 0;
	for (size_t i = 0; i < c->nrecipients; i++) {
		free(c->recipients[i].address);
		free(c->recipients[i].reply);
	}
	free(c->recipients);
	c->recipients = NULL;
	c->nrecipients = 0;
	c->size = 0;
	c->too_big = false;
	c->oom = false;
	c->in_tx = false;
}

/*
 * mf_tx_end - end the transaction: its record when action is not NULL,
 * the filters' reset hooks, the spool (milter thread)
 */
static void mf_tx_end(struct mf_conn *c, struct pipeline_envelope *e, const char *action,
		      const char *reply, const char *reason)
{
	struct mf_req req = { .op = MF_TX_END, .c = c, .action = action, .reply = reply,
			      .reason = reason, .envelope = e };

	if (!c->in_tx) {
		if (e) {
			/* Nothing to record: only the envelope to free on the loop. */
			req.action = NULL;
			mf_call(&req);
		}
		return;
	}
	mf_call(&req);
	mf_tx_free(c);
}

/* mf_req_clear - free the answer's copies */
static void mf_req_clear(struct mf_req *req)
{
	for (size_t i = 0; i < req->nchanges; i++) {
		free(req->changes[i].name);
		free(req->changes[i].value);
	}
	free(req->changes);
	req->changes = NULL;
	req->nchanges = 0;
}

/* mf_run - run a stage and wait for its outcome (milter thread) */
static void mf_run(struct mf_conn *c, struct mf_req *req, enum chain_stage stage,
		   const char *helo, const char *rcpt)
{
	*req = (struct mf_req){ .op = MF_RUN, .c = c, .stage = stage, .helo = helo,
				.rcpt = rcpt, .status = PC_CONTINUE };
	mf_call(req);
}

/*
 * mf_reply - hand a refusal's reply ("550 5.7.1 text") to the MTA; the
 * status to return (milter thread)
 */
static sfsistat mf_reply(SMFICTX *ctx, enum pc_status status, const char *reply)
{
	char code[4] = "", enh[16] = "", text[2 * MF_REPLY_MAX];
	const char *p = reply;
	size_t n, t = 0;

	if (status == PC_DISCARD)
		return SMFIS_DISCARD;
	if (status != PC_REJECT && status != PC_TEMPFAIL)
		return SMFIS_CONTINUE;
	memcpy(code, p, 3);
	p += strspn(p, "0123456789");
	p += strspn(p, " ");
	n = strspn(p, "0123456789.");
	if (n > 0 && n < sizeof(enh) && (p[n] == ' ' || !p[n])) {
		memcpy(enh, p, n);
		p += n;
		p += strspn(p, " ");
	}
	/* libmilter drops a text with a single '%' (smfi_setreply(3)): double it. */
	for (; *p && t + 2 < sizeof(text); p++) {
		text[t++] = *p;
		if (*p == '%')
			text[t++] = '%';
	}
	text[t] = 0;
	if (smfi_setreply(ctx, code, *enh ? enh : NULL, text) != MI_SUCCESS)
		log_warning("milter: the MTA's library refused the reply \"%s\"", reply);
	return status == PC_REJECT ? SMFIS_REJECT : SMFIS_TEMPFAIL;
}

/* mf_macro - a macro of the MTA, or NULL */
static const char *mf_macro(SMFICTX *ctx, const char *name)
{
	const char *v = smfi_getsymval(ctx, (char *)name);

	return v && *v ? v : NULL;
}

/* mf_set - replace a string field with a copy of v */
static void mf_set(char **field, const char *v)
{
	if (!v)
		return;
	free(*field);
	*field = strdup(v);
}

/* mf_queue_id - note the MTA's queue id when it has one ({i}) */
static void mf_queue_id(SMFICTX *ctx, struct mf_conn *c)
{
	const char *i = mf_macro(ctx, "i");

	if (i)
		snprintf(c->queue_id, sizeof(c->queue_id), "%s", i);
}

/* mf_path - an address without its angle brackets */
static char *mf_path(const char *arg)
{
	size_t len = strlen(arg);

	if (len >= 2 && arg[0] == '<' && arg[len - 1] == '>')
		return strndup(arg + 1, len - 2);
	return strdup(arg);
}

/* mf_conn_of - the connection of a callback */
static struct mf_conn *mf_conn_of(SMFICTX *ctx)
{
	return smfi_getpriv(ctx);
}

/*
 * mf_conn_new - the state of a new MTA connection, made at negotiation
 * (or at connect with an MTA that does not negotiate)
 */
static struct mf_conn *mf_conn_new(SMFICTX *ctx)
{
	struct mf_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	pthread_cond_init(&c->cond, NULL);
	pthread_mutex_lock(&mf.lock);
	snprintf(c->id, sizeof(c->id), "%06x%06llx", mf.id_prefix & 0xffffff,
		 (mf.next_id++) & 0xffffffULL);
	mf.nconns++;
	pthread_mutex_unlock(&mf.lock);
	smfi_setpriv(ctx, c);
	return c;
}

/* mf_connect - xxfi_connect: a new session for the MTA's client */
static sfsistat mf_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *hostaddr)
{
	struct mf_conn *c = mf_conn_of(ctx);
	struct mf_req req = { .op = MF_OPEN };
	sfsistat rc;

	if (!c && !(c = mf_conn_new(ctx)))
		return SMFIS_TEMPFAIL;
	c->opened = true;
	if (hostaddr && hostaddr->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)hostaddr;
		inet_ntop(AF_INET, &sin->sin_addr, c->addr, sizeof(c->addr));
		c->port = ntohs(sin->sin_port);
	} else if (hostaddr && hostaddr->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const void *)hostaddr;
		inet_ntop(AF_INET6, &sin6->sin6_addr, c->addr, sizeof(c->addr));
		c->port = ntohs(sin6->sin6_port);
	} else {
		/* A local submission (sendmail -bs): no network client. */
		snprintf(c->addr, sizeof(c->addr), "127.0.0.1");
	}
	/* Postfix passes "unknown" or "[addr]" when the name was not confirmed. */
	if (hostname && *hostname && *hostname != '[' && strcasecmp(hostname, "unknown") != 0)
		c->name = strdup(hostname);
	mf_set(&c->listener, mf_macro(ctx, "{daemon_name}"));
	if (!c->listener)
		mf_set(&c->listener, mf_macro(ctx, "j"));
	req.c = c;
	mf_call(&req);
	mf_run(c, &req, CHAIN_CONNECT, NULL, NULL);
	/*
	 * No reply text at connect (smfi_setreply(3)): the MTA refuses the
	 * client in its own words (Postfix: 554 or 421 as its greeting).
	 */
	rc = req.status == PC_REJECT	 ? SMFIS_REJECT
	     : req.status == PC_TEMPFAIL ? SMFIS_TEMPFAIL
					 : SMFIS_CONTINUE;
	if (rc != SMFIS_CONTINUE)
		c->refused = "refused";
	return rc;
}

/* mf_helo - xxfi_helo */
static sfsistat mf_helo(SMFICTX *ctx, char *helo)
{
	struct mf_conn *c = mf_conn_of(ctx);
	struct mf_req req;
	sfsistat rc;

	if (!c)
		return SMFIS_TEMPFAIL;
	/* TLS is known once the client said HELO again after STARTTLS. */
	c->tls = mf_macro(ctx, "{tls_version}") != NULL || mf_macro(ctx, "{cipher}") != NULL;
	mf_set(&c->tls_version, mf_macro(ctx, "{tls_version}"));
	mf_set(&c->tls_cipher, mf_macro(ctx, "{cipher}"));
	c->tls_bits = mf_macro(ctx, "{cipher_bits}") ? atoi(mf_macro(ctx, "{cipher_bits}")) : 0;
	mf_run(c, &req, CHAIN_HELO, helo, NULL);
	rc = mf_reply(ctx, req.status, req.out_reply);
	/* A refused HELO name is not the session's (as in proxy mode). */
	if (rc == SMFIS_CONTINUE)
		mf_set(&c->helo, helo);
	return rc;
}

/* mf_envfrom - xxfi_envfrom: MAIL with its ESMTP arguments */
static sfsistat mf_envfrom(SMFICTX *ctx, char **argv)
{
	struct mf_conn *c = mf_conn_of(ctx);
	struct mf_req req;
	size_t n = 0;
	sfsistat rc;

	if (!c || !argv || !argv[0])
		return SMFIS_TEMPFAIL;
	/* A transaction the MTA left without abort (RSET): over, unrecorded. */
	mf_tx_end(c, NULL, NULL, NULL, NULL);
	c->in_tx = true;
	c->txn++;
	*c->queue_id = 0;
	c->sender = mf_path(argv[0]);
	while (argv[1 + n])
		n++;
	c->params = n ? calloc(n, sizeof(*c->params)) : NULL;
	for (size_t i = 0; c->params && i < n; i++) {
		const char *eq = strchr(argv[1 + i], '=');
		c->params[c->nparams].keyword =
			eq ? strndup(argv[1 + i], (size_t)(eq - argv[1 + i])) : strdup(argv[1 + i]);
		c->params[c->nparams].value = eq ? strdup(eq + 1) : NULL;
		if (strcasecmp(c->params[c->nparams].keyword, "SMTPUTF8") == 0)
			c->smtputf8 = true;
		c->nparams++;
	}
	mf_set(&c->login, mf_macro(ctx, "{auth_authen}"));
	mf_queue_id(ctx, c);
	mf_run(c, &req, CHAIN_MAIL, NULL, NULL);
	rc = mf_reply(ctx, req.status, req.out_reply);
	if (rc == SMFIS_REJECT || rc == SMFIS_TEMPFAIL)
		mf_tx_end(c, NULL, rc == SMFIS_REJECT ? "rejected" : "tempfailed", req.out_reply,
			  "MAIL refused by a filter");
	else if (rc == SMFIS_DISCARD)
		/* The MTA drops the message and sends us nothing more of it. */
		mf_tx_end(c, NULL, "discarded", NULL, "discarded by a filter");
	return rc;
}

/* mf_add_recipient - note a RCPT and its refusal (NULL: passed on to the MTA) */
static void mf_add_recipient(struct mf_conn *c, const char *rcpt, const char *reply)
{
	struct record_rcpt *r = realloc(c->recipients, (c->nrecipients + 1) * sizeof(*r));

	if (!r)
		return;
	c->recipients = r;
	r[c->nrecipients++] = (struct record_rcpt){ strdup(rcpt), reply ? strdup(reply) : NULL };
}

/* mf_envrcpt - xxfi_envrcpt */
static sfsistat mf_envrcpt(SMFICTX *ctx, char **argv)
{
	struct mf_conn *c = mf_conn_of(ctx);
	struct mf_req req;
	char *rcpt;
	sfsistat rc;

	if (!c || !c->in_tx || !argv || !argv[0])
		return SMFIS_TEMPFAIL;
	rcpt = mf_path(argv[0]);
	if (!rcpt)
		return SMFIS_TEMPFAIL;
	mf_queue_id(ctx, c);
	mf_run(c, &req, CHAIN_RCPT, NULL, rcpt);
	rc = mf_reply(ctx, req.status, req.out_reply);
	mf_add_recipient(c, rcpt, rc == SMFIS_CONTINUE || rc == SMFIS_DISCARD ? NULL : req.out_reply);
	if (rc == SMFIS_CONTINUE) {
		char **v = realloc(c->rcpts, (c->nrcpts + 1) * sizeof(*v));
		if (v) {
			c->rcpts = v;
			v[c->nrcpts++] = rcpt;
			rcpt = NULL;
		}
	} else if (rc == SMFIS_DISCARD) {
		mf_tx_end(c, NULL, "discarded", NULL, "discarded by a filter");
	}
	free(rcpt);
	return rc;
}

/*
 * mf_too_big - the message passed the size limit: 552 at its end, as in
 * proxy mode (RFC 5321 4.5.3.1.10) (milter thread)
 */
static sfsistat mf_too_big(SMFICTX *ctx, struct mf_conn *c)
{
	char reply[MF_REPLY_MAX];

	snprintf(reply, sizeof(reply), "%d %s %s", smtp_error_too_big.code,
		 smtp_error_too_big.enh, smtp_error_too_big.text);
	mf_tx_end(c, NULL, "rejected", reply, "message too big");
	return mf_reply(ctx, PC_REJECT, reply);
}

/*
 * mf_write - append message bytes to the spool, created at the first;
 * past the size limit they are only counted
 */
static void mf_write(struct mf_conn *c, const void *data, size_t len)
{
	if (!c->spool) {
		c->spool = spool_new(mf.conf->spool_dir, mf.conf->spool_memory_limit);
		if (!c->spool) {
			c->oom = true; /* the end of the message says 451 */
			return;
		}
	}
	/* Counted to the end, as proxy mode reads a message that is too big. */
	c->size += len;
	if (c->size > c->size_limit)
		c->too_big = true;
	if (!c->too_big)
		spool_write(c->spool, data, len);
}

/* mf_header - xxfi_header: one field of the message's header */
static sfsistat mf_header(SMFICTX *ctx, char *name, char *value)
{
	struct mf_conn *c = mf_conn_of(ctx);
	const char *p = value;

	if (!c || !c->in_tx)
		return SMFIS_CONTINUE;
	mf_write(c, name, strlen(name));
	/* Without SMFIP_HDR_LEADSPC the MTA took one space after the colon. */
	mf_write(c, c->leadspc ? ":" : ": ", c->leadspc ? 1 : 2);
	/* The MTA ends the lines of a folded field with LF alone. */
	while (*p) {
		size_t n = strcspn(p, "\r\n");
		mf_write(c, p, n);
		p += n;
		if (*p == '\r' && p[1] == '\n')
			p++;
		if (*p) {
			mf_write(c, "\r\n", 2);
			p++;
		}
	}
	mf_write(c, "\r\n", 2);
	return SMFIS_CONTINUE;
}

/* mf_eoh - xxfi_eoh: the blank line after the header */
static sfsistat mf_eoh(SMFICTX *ctx)
{
	struct mf_conn *c = mf_conn_of(ctx);

	if (!c || !c->in_tx)
		return SMFIS_CONTINUE;
	mf_write(c, "\r\n", 2);
	return SMFIS_CONTINUE;
}

/* mf_body - xxfi_body: a chunk of the body, as the MTA sends it (CRLF) */
static sfsistat mf_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
	struct mf_conn *c = mf_conn_of(ctx);

	if (!c || !c->in_tx)
		return SMFIS_CONTINUE;
	mf_write(c, chunk, len);
	return SMFIS_CONTINUE;
}

/*
 * mf_strip - remove the name fields that claim the authserv-id id, from
 * the last to the first so that each index the MTA gets still holds; one
 * pass over the header (a forged one may have tens of thousands of them)
 */
static int mf_strip(SMFICTX *ctx, struct message_headers *h, const char *name,
		    const char *id)
{
	size_t *hits = h->n ? malloc(h->n * sizeof(*hits)) : NULL;
	size_t nhits = 0, k = 0;
	int rc = MI_SUCCESS;

	if (h->n && !hits)
		return MI_FAILURE;
	for (size_t f = 0; f < h->n; f++) {
		if (strcasecmp(h->fields[f].name, name) != 0)
			continue;
		if (pipeline_authres_claims(h->fields[f].value, (void *)id))
			hits[nhits++] = k;
		k++;
	}
	/* smfi_chgheader counts the fields of a name from 1. */
	while (nhits-- > 0)
		if (smfi_chgheader(ctx, (char *)name, (int)hits[nhits] + 1, NULL) != MI_SUCCESS)
			rc = MI_FAILURE;
	free(hits);
	message_header_remove_if(h, name, pipeline_authres_claims, (void *)id);
	return rc;
}

/*
 * mf_changes - give the MTA the chain's header changes in order, each
 * also applied to a copy of the header as the MTA has it, which says
 * which fields a removal of forged Authentication-Results fields means
 * (milter thread)
 */
static void mf_changes(SMFICTX *ctx, struct mf_conn *c, const struct mf_req *req)
{
	struct message_headers h = { 0 };
	bool have = message_headers_read(&h, c->spool, (size_t)mf.conf->header_size_limit) == 0;

	for (size_t i = 0; i < req->nchanges; i++) {
		const struct mf_change *ch = &req->changes[i];
		char *v = NULL;
		int rc = MI_SUCCESS;

		/* SMFIP_HDR_LEADSPC: the value as it follows the colon. */
		if (ch->value && asprintf(&v, "%s%s", c->leadspc ? " " : "", ch->value) < 0)
			v = NULL;
		switch (ch->kind) {
		case PIPELINE_ADD:
			rc = v ? smfi_addheader(ctx, ch->name, v) : MI_FAILURE;
			if (have)
				message_header_add(&h, ch->name, ch->value, false);
			break;
		case PIPELINE_INSERT:
			rc = v ? smfi_insheader(ctx, (int)ch->n, ch->name, v) : MI_FAILURE;
			if (have)
				message_header_insert(&h, ch->n, ch->name, ch->value);
			break;
		case PIPELINE_CHANGE:
			/* smfi_chgheader counts the fields of a name from 1. */
			rc = smfi_chgheader(ctx, ch->name, (int)ch->n + 1, v);
			if (have) {
				long at = message_header_find(&h, ch->name, ch->n);
				if (at >= 0)
					message_header_change(&h, (size_t)at, ch->value);
			}
			break;
		case PIPELINE_STRIP:
			rc = have ? mf_strip(ctx, &h, ch->name, ch->value) : MI_FAILURE;
			break;
		}
		if (rc != MI_SUCCESS)
			log_error("milter: session %s: the MTA's library refused a change of %s",
				  c->id, ch->name);
		free(v);
	}
	if (have)
		message_headers_free(&h);
}

/* mf_bracket - "<addr>" for the MTA's library */
static char *mf_bracket(const char *addr)
{
	char *out = NULL;

	if (asprintf(&out, "<%s>", addr ? addr : "") < 0)
		return NULL;
	return out;
}

/*
 * mf_envelope - the chain's other changes, to the MTA: the sender
 * (smfi_chgfrom, with the client's parameters unless a filter gave
 * others), the recipients (smfi_delrcpt for each of the client's that the
 * final list leaves out, smfi_addrcpt_par for each added one), the body
 * (smfi_replacebody from the spool, 64 KiB a call) and a quarantine
 * (smfi_quarantine: Postfix's hold queue); 0, or -1 when the library
 * refused one (milter thread)
 */
static int mf_envelope(SMFICTX *ctx, struct mf_conn *c, const struct pipeline_envelope *e)
{
	int rc = 0;

	if (e->sender) {
		char *from = mf_bracket(e->sender);
		char *args = e->sender_params ? strdup(e->sender_params)
					      : smtp_params_text(c->params, c->nparams);

		if (args && !*args) {
			/* none: the library takes NULL for that */
			free(args);
			args = NULL;
		}
		if (!from || smfi_chgfrom(ctx, from, args) != MI_SUCCESS)
			rc = -1;
		free(from);
		free(args);
	}
	if (e->rcpts_changed) {
		bool *kept = calloc(c->nrcpts ? c->nrcpts : 1, sizeof(*kept));
		if (!kept)
			return -1;
		for (size_t i = 0; i < e->nrcpts; i++)
			if (!e->rcpts[i].params && e->rcpts[i].index < c->nrcpts)
				kept[e->rcpts[i].index] = true;
		for (size_t i = 0; i < c->nrcpts; i++) {
			char *to = kept[i] ? NULL : mf_bracket(c->rcpts[i]);
			if (!kept[i] && (!to || smfi_delrcpt(ctx, to) != MI_SUCCESS))
				rc = -1;
			free(to);
		}
		for (size_t i = 0; i < e->nrcpts; i++) {
			if (!e->rcpts[i].params)
				continue;
			char *to = mf_bracket(e->rcpts[i].addr);
			if (!to || smfi_addrcpt_par(ctx, to, *e->rcpts[i].params ? e->rcpts[i].params
										   : NULL) != MI_SUCCESS)
				rc = -1;
			free(to);
		}
		free(kept);
	}
	if (e->body) {
		unsigned char *buf = malloc(MF_BODY_CHUNK);
		unsigned long long off = 0;
		ssize_t n = 0;

		if (!buf)
			return -1;
		while ((n = spool_read(e->body, off, buf, MF_BODY_CHUNK)) > 0) {
			if (smfi_replacebody(ctx, buf, (int)n) != MI_SUCCESS) {
				rc = -1;
				break;
			}
			off += (unsigned long long)n;
		}
		if (n < 0)
			rc = -1;
		else if (off == 0 && smfi_replacebody(ctx, buf, 0) != MI_SUCCESS)
			rc = -1; /* an empty body */
		free(buf);
	}
	if (e->quarantine && smfi_quarantine(ctx, e->quarantine) != MI_SUCCESS)
		rc = -1;
	if (rc < 0)
		log_error("milter: session %s: the MTA's library refused a change of the envelope "
			  "or the body", c->id);
	return rc;
}

/* mf_eom - xxfi_eom: the data stage */
static sfsistat mf_eom(SMFICTX *ctx)
{
	struct mf_conn *c = mf_conn_of(ctx);
	struct mf_req req;
	sfsistat rc;

	if (!c || !c->in_tx)
		return SMFIS_CONTINUE;
	mf_queue_id(ctx, c);
	if (c->too_big)
		return mf_too_big(ctx, c);
	if (c->oom) {
		const char *reply = "451 4.3.0 Error: out of memory, try again later";
		mf_tx_end(c, NULL, "tempfailed", reply, "out of memory");
		return mf_reply(ctx, PC_TEMPFAIL, reply);
	}
	/*
	 * Without a spool no filter reads the message: the header and body
	 * were negotiated away (mf_negotiate), and the MTA checks its limits.
	 */
	if (c->spool && spool_finish(c->spool) < 0) {
		const char *reply = "452 4.3.1 Insufficient system storage, try again later";
		log_error("milter: session %s: spool write failed: %s", c->id,
			  strerror(spool_errno(c->spool)));
		mf_tx_end(c, NULL, "tempfailed", reply, strerror(spool_errno(c->spool)));
		return mf_reply(ctx, PC_TEMPFAIL, reply);
	}
	mf_run(c, &req, CHAIN_DATA, NULL, NULL);
	if (!req.ran && c->spool) {
		/* No filter read the header: check its limits here, as proxy mode does. */
		struct message_headers h = { 0 };
		const char *reply = NULL, *reason = NULL;
		if (message_headers_read(&h, c->spool, (size_t)mf.conf->header_size_limit) == 0) {
			reply = message_headers_refusal(&h, mf.conf->hopcount_limit, &reason);
			message_headers_free(&h);
		}
		if (reply) {
			req.status = PC_REJECT;
			snprintf(req.out_reply, sizeof(req.out_reply), "%s", reply);
			snprintf(req.out_reason, sizeof(req.out_reason), "%s", reason);
		}
	}
	rc = mf_reply(ctx, req.status, req.out_reply);
	switch (rc) {
	case SMFIS_CONTINUE:
		mf_changes(ctx, c, &req);
		if (req.envelope && mf_envelope(ctx, c, req.envelope) < 0) {
			/* Half a change would deliver what no filter meant. */
			const char *reply = "451 4.3.0 Error: the MTA refused a change of the envelope";
			mf_tx_end(c, req.envelope, "tempfailed", reply,
				  "the MTA's library refused an envelope change");
			req.envelope = NULL;
			rc = mf_reply(ctx, PC_TEMPFAIL, reply);
			break;
		}
		mf_tx_end(c, req.envelope,
			  req.envelope && req.envelope->quarantine ? "quarantined" : "accepted",
			  NULL, NULL);
		break;
	case SMFIS_DISCARD:
		mf_tx_end(c, req.envelope, "discarded", NULL, "discarded by a filter");
		break;
	default:
		mf_tx_end(c, req.envelope, rc == SMFIS_REJECT ? "rejected" : "tempfailed",
			  req.out_reply,
			  *req.out_reason ? req.out_reason : "message refused by a filter");
		break;
	}
	req.envelope = NULL;
	mf_req_clear(&req);
	return rc;
}

/* mf_abort - xxfi_abort: the MTA dropped the transaction */
static sfsistat mf_abort(SMFICTX *ctx)
{
	struct mf_conn *c = mf_conn_of(ctx);

	/* RSET, QUIT or a lost client: proxy mode records these as aborted too. */
	if (c)
		mf_tx_end(c, NULL, "aborted", NULL, "aborted by the MTA");
	return SMFIS_CONTINUE;
}

/* mf_close - xxfi_close: the session is over */
static sfsistat mf_close(SMFICTX *ctx)
{
	struct mf_conn *c = mf_conn_of(ctx);
	struct mf_req req = { .op = MF_CLOSE };

	if (!c)
		return SMFIS_CONTINUE;
	mf_tx_end(c, NULL, "aborted", NULL, "the MTA closed the connection");
	if (c->opened) {
		req.c = c;
		req.action = c->refused ? c->refused : "closed";
		req.reason = c->refused ? "refused by a filter" : "the MTA closed the connection";
		mf_call(&req);
	}
	smfi_setpriv(ctx, NULL);
	free(c->name);
	free(c->helo);
	free(c->login);
	free(c->tls_version);
	free(c->tls_cipher);
	free(c->listener);
	pthread_cond_destroy(&c->cond);
	free(c);
	pthread_mutex_lock(&mf.lock);
	mf.nconns--;
	pthread_mutex_unlock(&mf.lock);
	return SMFIS_CONTINUE;
}

/*
 * mf_negotiate - xxfi_negotiate: the actions we take (add and change
 * header fields), header values with their leading space, and no
 * header or body events when no filter reads the message at the data
 * stage; the other stages come always, for the records
 */
static sfsistat mf_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
			     unsigned long f2, unsigned long f3, unsigned long *pf0,
			     unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
	unsigned long want = SMFIP_NODATA | SMFIP_NOUNKNOWN | SMFIP_HDR_LEADSPC;
	struct mf_conn *c = mf_conn_of(ctx);

	if (!c && !(c = mf_conn_new(ctx)))
		return SMFIS_TEMPFAIL;
	if (!mf.chain || !mf.chain->any[CHAIN_DATA])
		want |= SMFIP_NOHDRS | SMFIP_NOEOH | SMFIP_NOBODY;
	*pf0 = MF_ACTIONS & f0;
	*pf1 = want & f1;
	c->leadspc = (*pf1 & SMFIP_HDR_LEADSPC) != 0;
	*pf2 = 0;
	*pf3 = 0;
	return SMFIS_CONTINUE;
}

/*
 * mf_check_timeouts - warn when the filters of a stage may take longer
 * than the MTA waits for the milter's answer (Postfix's defaults:
 * milter_command_timeout 30s, milter_content_timeout 300s at the end of
 * the message): the MTA would give up and apply its milter_default_action
 * before the filters' on_error could answer
 */
static void mf_check_timeouts(const struct chain *chain)
{
	for (int st = CHAIN_CONNECT; chain && st <= CHAIN_DATA; st++) {
		unsigned long long ms = 0;
		for (size_t i = 0; i < chain->n; i++)
			if (chain_has_hook(&chain->filters[i], (enum chain_stage)st))
				ms += chain->filters[i].timeout_ms;
		unsigned long long mta = st == CHAIN_DATA ? 300000 : 30000;
		if (ms >= mta)
			log_warning("milter: the filters at %s may take %llu ms in all, not less than "
				    "the %llu ms Postfix waits by default (%s): raise it or lower "
				    "the filters' timeouts", chain_stage_name((enum chain_stage)st), ms,
				    mta, st == CHAIN_DATA ? "milter_content_timeout"
							  : "milter_command_timeout");
	}
}

/* mf_listening_fd - the highest descriptor that is a listening socket, or -1 */
static int mf_listening_fd(void)
{
	int found = -1;
	long max = sysconf(_SC_OPEN_MAX);

	for (int fd = 0; fd < (max > 0 && max < 65536 ? max : 65536); fd++) {
		int on = 0;
		socklen_t len = sizeof(on);
		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on)
			found = fd;
	}
	return found;
}

/* mf_open - open the socket, waiting for a previous generation to close it */
static int mf_open(const char *conn)
{
	bool unix_socket = strncmp(conn, "unix:", 5) == 0 || strncmp(conn, "local:", 6) == 0;
	const char *path = strchr(conn, ':') + 1;

	for (int i = 0; i < MF_OPEN_TRIES; i++) {
		bool stale = false;
		if (unix_socket) {
			/* A socket nobody answers on is left over: remove it. */
			struct sockaddr_un sun = { .sun_family = AF_UNIX };
			int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
			snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
			stale = fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 &&
				errno == ECONNREFUSED;
			if (fd >= 0)
				close(fd);
		}
		/*
		 * Group read and write: the MTA's user (postfix) connects to a
		 * UNIX socket as a member of our group (portcullis.8).
		 */
		mode_t old = umask(007);
		int before = mf_listening_fd();
		int rc = smfi_opensocket(stale);
		umask(old);
		if (rc == MI_SUCCESS) {
			/* The one libmilter opened, to stop listening with (mf_drain). */
			mf.listen_fd = mf_listening_fd();
			if (mf.listen_fd == before)
				mf.listen_fd = -1;
			if (mf.listen_fd >= 0 && !unix_socket) {
				/*
				 * The MTA's connections inherit it (Linux): libmilter
				 * writes a reply in pieces, and the last one would wait
				 * for the MTA's delayed ACK of the first, 40 ms a time.
				 */
				int one = 1;
				if (setsockopt(mf.listen_fd, IPPROTO_TCP, TCP_NODELAY, &one,
					       sizeof(one)) < 0)
					log_warning("milter: TCP_NODELAY: %s", strerror(errno));
			}
			return 0;
		}
		struct timespec pause = { 0, MF_OPEN_PAUSE_MS * 1000000L };
		nanosleep(&pause, NULL);
	}
	return -1;
}

/* milter_front_run - serve the chain until stopped */
int milter_front_run(const struct conf *conf)
{
	struct smfiDesc desc = {
		.xxfi_name = "portcullis",
		.xxfi_version = SMFI_VERSION,
		.xxfi_flags = MF_ACTIONS,
		.xxfi_connect = mf_connect,
		.xxfi_helo = mf_helo,
		.xxfi_envfrom = mf_envfrom,
		.xxfi_envrcpt = mf_envrcpt,
		.xxfi_header = mf_header,
		.xxfi_eoh = mf_eoh,
		.xxfi_body = mf_body,
		.xxfi_eom = mf_eom,
		.xxfi_abort = mf_abort,
		.xxfi_close = mf_close,
		.xxfi_negotiate = mf_negotiate,
	};
	struct event *wake = NULL, *sigs[2] = { NULL, NULL };
	struct timespec now;
	pthread_t loop;
	sigset_t set;
	int rc;

	prctl(PR_SET_PDEATHSIG, SIGTERM);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);
	/*
	 * Before any thread starts: libmilter's own thread takes SIGTERM,
	 * SIGHUP and SIGINT with sigwait(), the loop thread SIGUSR1 and
	 * SIGUSR2; no other thread may take them.
	 */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	mf.conf = conf;
	clock_gettime(CLOCK_REALTIME, &now);
	mf.id_prefix = (unsigned)(now.tv_nsec ^ (getpid() << 12) ^ now.tv_sec);
	record_set_mode("milter");
	if (record_open(conf->decisions) < 0) {
		log_error("cannot open decision log %s: %s", conf->decisions, strerror(errno));
		return 1;
	}
	if (!(mf.base = event_base_new()) || worker_load_chain(conf, &mf.chain) < 0 ||
	    !(mf.pipeline = pipeline_new(mf.base, mf.chain, conf))) {
		log_error("milter: cannot start the filter chain");
		return 1;
	}
	mf_check_timeouts(mf.chain);
	mf.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	wake = mf.efd >= 0 ? event_new(mf.base, mf.efd, EV_READ | EV_PERSIST, mf_wake, NULL) : NULL;
	sigs[0] = evsignal_new(mf.base, SIGUSR1, mf_signal, NULL);
	sigs[1] = evsignal_new(mf.base, SIGUSR2, mf_signal, NULL);
	if (!wake || !sigs[0] || !sigs[1] || event_add(wake, NULL) < 0 ||
	    evsignal_add(sigs[0], NULL) < 0 || evsignal_add(sigs[1], NULL) < 0) {
		log_error("milter: cannot make the event loop");
		return 1;
	}
	if (smfi_setconn(conf->milter_listen) != MI_SUCCESS ||
	    smfi_register(desc) != MI_SUCCESS || mf_open(conf->milter_listen) < 0) {
		log_error("milter: cannot listen on %s", conf->milter_listen);
		return 1;
	}
	if (pthread_create(&loop, NULL, mf_loop, NULL) != 0) {
		log_error("milter: cannot start the loop thread");
		return 1;
	}
	log_info("milter: listening on %s", conf->milter_listen);
	rc = smfi_main();

	/*
	 * libmilter stopped by itself (SIGTERM, SIGHUP or SIGINT sent to
	 * this process, not the master's SIGUSR2): the connections it had
	 * are served no more, so finish at once; the loop thread exits.
	 */
	log_warning("milter: libmilter stopped (%s): finishing now",
		    rc == MI_SUCCESS ? "a signal" : "an error");
	struct mf_req *stop = calloc(1, sizeof(*stop));
	if (stop) {
		stop->op = MF_STOP;
		mf_call(stop);
		pthread_join(loop, NULL);
	}
	return 1;
}
