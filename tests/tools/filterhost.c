/*
 * filterhost - run sessions through a filter chain, without sockets
 *
 *	filterhost -c portcullis.conf < sessions.jsonl
 *
 * Loads the chain of the configuration (and its [dns] section) exactly
 * as a worker does, then reads one session per input line,
 *
 *	{"client": "192.0.2.1", "port": 25000, "helo": "mx.example.com",
 *	 "mail": "user@example.com", "params": {"SIZE": "1000"},
 *	 "rcpt": ["a@example.org"], "message": "Subject: x\r\n\r\nbody\r\n",
 *	 "listener": "0.0.0.0:25"}
 *
 * (only client is required; "mail": "" is MAIL FROM:<>), runs it through
 * the real pipeline stage by stage (connect, helo, mail, each rcpt, and
 * data when there is a message and an accepted recipient), and writes one
 * line per session:
 *
 *	{"stages": [{"stage": "mail", "status": "reject", "reply": "550 ..."}],
 *	 "action": "accepted|rejected|tempfailed|discarded|refused",
 *	 "reply": "...", "filters": [...], "headers": "..."}
 *
 * "filters" holds the entries a decision record would get; "headers" is
 * the header block the backend would receive (null when no data stage
 * ran). The tests of the SPF and DKIM filters use it to run hundreds of
 * cases, with any client address, in seconds.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "chain.h"
#include "conf.h"
#include "dns.h"
#include "log.h"
#include "message.h"
#include "pipeline.h"
#include "spool.h"

struct waiter {
	bool done;
	struct pipeline_outcome out;
	char *headers;
};

static const char *status_names[] = { "continue", "accept", "reject", "tempfail", "discard" };

/* outcome_cb - a stage ended */
static void outcome_cb(void *arg, struct pipeline_outcome *out)
{
	struct waiter *w = arg;

	w->out = *out;
	w->out.headers = NULL;
	if (out->headers)
		w->headers = strndup(out->headers, out->headers_len);
	w->done = true;
}

/* run_stage - one stage, waited for; false when it refused */
static bool run_stage(struct event_base *base, struct pipeline *p,
		      struct pipeline_session *ps, enum chain_stage stage,
		      const struct pipeline_env *env, json_t *stages,
		      struct waiter *w)
{
	memset(w, 0, sizeof(*w));
	if (!pipeline_wanted(p, ps, stage)) {
		w->out.status = PC_CONTINUE;
		return true;
	}
	pipeline_run(p, ps, stage, env, outcome_cb, w);
	while (!w->done)
		event_base_loop(base, EVLOOP_ONCE);
	json_t *st = json_pack("{s:s, s:s}", "stage", chain_stage_name(stage), "status",
			       status_names[w->out.status]);
	if (env->rcpt)
		json_object_set_new(st, "recipient", json_string(env->rcpt));
	if (w->out.status == PC_REJECT || w->out.status == PC_TEMPFAIL)
		json_object_set_new(st, "reply", json_string(w->out.reply));
	json_array_append_new(stages, st);
	return w->out.status == PC_CONTINUE || w->out.status == PC_ACCEPT;
}

/* refused - the action of a refusing outcome */
static const char *refused(const struct waiter *w)
{
	return w->out.status == PC_REJECT ? "rejected"
	       : w->out.status == PC_TEMPFAIL ? "tempfailed" : "discarded";
}

/* original_headers - the message's own header block */
static char *original_headers(const char *msg, size_t len)
{
	struct message_headers h;
	char *block;

	if (message_headers_parse(&h, msg, len) < 0)
		return NULL;
	block = strndup(msg, (size_t)h.header_end);
	message_headers_free(&h);
	return block;
}

/* session - run one input line; the output object */
static json_t *session(struct event_base *base, struct pipeline *p,
		       const struct conf *conf, json_t *in, unsigned n)
{
	struct pipeline_session *ps = pipeline_session_new(p);
	struct pipeline_env env = { 0 };
	struct smtp_param params[SMTP_MAX_PARAMS];
	const char *rcpts[1024];
	json_t *out = json_object(), *stages = json_array();
	struct waiter w;
	const char *action = "accepted", *reply = NULL;
	char id[32], *headers = NULL;
	struct spool *spool = NULL;
	bool discard = false;
	const char *key;
	json_t *value;

	snprintf(id, sizeof(id), "filterhost%06u", n);
	env.session_id = id;
	env.addr = json_string_value(json_object_get(in, "client"));
	env.port = (unsigned)json_integer_value(json_object_get(in, "port"));
	env.listener = json_string_value(json_object_get(in, "listener"));
	if (!env.listener)
		env.listener = conf->nlisten ? conf->listen[0].text : "";
	env.esmtp = true;
	if (!env.addr) {
		json_object_set_new(out, "error", json_string("no client"));
		goto end;
	}
	if (!run_stage(base, p, ps, CHAIN_CONNECT, &env, stages, &w)) {
		action = "refused";
		reply = w.out.reply;
		goto end;
	}
	env.helo = json_string_value(json_object_get(in, "helo"));
	if (env.helo && !run_stage(base, p, ps, CHAIN_HELO, &env, stages, &w)) {
		action = refused(&w);
		reply = w.out.reply;
		goto end;
	}
	env.sender = json_string_value(json_object_get(in, "mail"));
	if (!env.sender)
		goto end;
	json_object_foreach(json_object_get(in, "params"), key, value) {
		if (env.nparams == SMTP_MAX_PARAMS)
			break;
		params[env.nparams].keyword = (char *)key;
		params[env.nparams].value = (char *)json_string_value(value);
		env.nparams++;
	}
	env.params = params;
	if (!run_stage(base, p, ps, CHAIN_MAIL, &env, stages, &w)) {
		if (w.out.status != PC_DISCARD) {
			action = refused(&w);
			reply = w.out.reply;
			goto end_tx;
		}
		discard = true;
	}
	env.rcpts = rcpts;
	for (size_t i = 0; i < json_array_size(json_object_get(in, "rcpt")) && env.nrcpts < 1024; i++) {
		env.rcpt = json_string_value(json_array_get(json_object_get(in, "rcpt"), i));
		if (!env.rcpt)
			continue;
		if (!discard && !run_stage(base, p, ps, CHAIN_RCPT, &env, stages, &w)) {
			if (w.out.status != PC_DISCARD)
				continue;
			discard = true;
		}
		rcpts[env.nrcpts++] = env.rcpt;
	}
	env.rcpt = NULL;
	const char *msg = json_string_value(json_object_get(in, "message"));
	if (!msg || env.nrcpts == 0)
		goto end_tx;
	if (discard) {
		action = "discarded";
		goto end_tx;
	}
	size_t len = json_string_length(json_object_get(in, "message"));
	spool = spool_new(conf->spool_dir, conf->spool_memory_limit);
	if (!spool || spool_write(spool, msg, len) < 0 || spool_finish(spool) < 0) {
		json_object_set_new(out, "error", json_string("spool failed"));
		goto end_tx;
	}
	env.spool = spool;
	if (!run_stage(base, p, ps, CHAIN_DATA, &env, stages, &w)) {
		action = refused(&w);
		reply = w.out.status == PC_DISCARD ? NULL : w.out.reply;
		goto end_tx;
	}
	headers = w.headers ? w.headers : original_headers(msg, len);
	w.headers = NULL;
end_tx:
	json_object_set_new(out, "filters", pipeline_results(ps));
	pipeline_tx_end(p, ps, &env);
end:
	if (!json_object_get(out, "filters"))
		json_object_set_new(out, "filters", pipeline_results(ps));
	pipeline_session_end(p, ps, &env);
	spool_free(spool);
	free(w.headers);
	json_object_set_new(out, "stages", stages);
	json_object_set_new(out, "action", json_string(action));
	json_object_set_new(out, "reply", reply ? json_string(reply) : json_null());
	json_object_set_new(out, "headers", headers ? json_string(headers) : json_null());
	free(headers);
	return out;
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	struct conf *conf;
	struct chain *chain = NULL;
	struct event_base *base;
	struct pipeline *p;
	char *line = NULL;
	size_t cap = 0;
	unsigned n = 0;
	int opt;

	while ((opt = getopt(argc, argv, "c:")) != -1) {
		if (opt != 'c') {
			fprintf(stderr, "usage: filterhost -c CONF < sessions.jsonl\n");
			return 2;
		}
		path = optarg;
	}
	if (!path) {
		fprintf(stderr, "usage: filterhost -c CONF < sessions.jsonl\n");
		return 2;
	}
	conf = conf_load(path, stderr);
	if (!conf)
		return 1;
	log_open("filterhost", false, (enum log_level)conf->log_level);
	/* The resolver first, as in a worker: init may ask DNS questions. */
	if (dns_init(conf) < 0)
		return 1;
	if (conf->nchain && !(chain = chain_load(conf, stderr)))
		return 1;
	base = event_base_new();
	p = pipeline_new(base, chain, conf);
	if (!base || !p) {
		fprintf(stderr, "filterhost: cannot start the pipeline\n");
		return 1;
	}
	while (getline(&line, &cap, stdin) > 0) {
		json_error_t err;
		json_t *in = json_loads(line, 0, &err);
		json_t *out;

		if (!in) {
			out = json_pack("{s:s}", "error", err.text);
		} else {
			out = session(base, p, conf, in, ++n);
			json_decref(in);
		}
		char *text = json_dumps(out, JSON_COMPACT);
		printf("%s\n", text);
		fflush(stdout);
		free(text);
		json_decref(out);
	}
	/* Let the close hooks of the last sessions run. */
	while (pipeline_sessions(p) > 0)
		event_base_loop(base, EVLOOP_ONCE);
	free(line);
	/* The pool's threads stay (parked, or in a late call): the pool too. */
	pipeline_free(p);
	event_base_free(base);
	chain_free(chain);
	conf_free(conf);
	return 0;
}
