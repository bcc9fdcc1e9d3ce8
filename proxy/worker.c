/*
 * worker.c - one worker process
 *
 * A worker inherits the listening sockets from the master, accepts on
 * them (every worker accepts; the kernel hands each connection to one),
 * and runs its sessions on one event loop. It owns the backend pool
 * (backend.h), which learns what the backend offers by a probe at start.
 *
 * Signals: SIGTERM and SIGINT drain (stop accepting, finish transactions
 * in flight up to drain_timeout); SIGUSR2 retires the worker after a
 * reload (stop accepting, transactions in flight finish, then each
 * session gets 421 at its next command, all are closed at drain_timeout);
 * SIGUSR1 reopens the decision log. The worker also ends when its master dies
 * (PR_SET_PDEATHSIG).
 *
 * A worker starts accepting only after its first backend probe ended, so
 * the very first client is offered what the backend offers.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "anvil_client.h"
#include "backend.h"
#include "chain.h"
#include "conn.h"
#include "dns.h"
#include "listener.h"
#include "log.h"
#include "pipeline.h"
#include "record.h"
#include "relay.h"
#include "session.h"
#include "worker.h"

/* Out of descriptors: how long accepting pauses, and how often it is logged. */
#define WORKER_ACCEPT_PAUSE_USEC 250000
#define WORKER_FD_LOG_INTERVAL 10

/* A worker: it owns its listeners, its sessions and its backend pool. */
struct worker {
	struct event_base *base;
	const struct conf *conf;
	struct listener listeners[CONF_MAX_ADDRS];
	size_t nlisteners;
	struct session_host sessions;	/* what the sessions share */
	struct backend_pool backends;	/* servers, capabilities, parked connections */
	struct pipeline *pipeline;	/* the filter chain of this worker */
	struct anvil_client *anvil;	/* the per-client limits */
	bool listening;	/* accepting connections */
	bool draining;	/* SIGTERM: closing down */
	bool retiring;	/* SIGUSR2: replaced after a reload */
};

static struct event *worker_drain_timer;
static struct event *worker_resume_timer;
static time_t worker_fd_logged;	  /* when running out was last logged */
static unsigned worker_fd_pauses; /* pauses since then */

/* worker_listen - accept on every listener, or on none */
static void worker_listen(struct worker *w, bool on)
{
	for (size_t i = 0; i < w->nlisteners; i++) {
		if (on)
			listener_enable(&w->listeners[i]);
		else
			listener_disable(&w->listeners[i]);
	}
}

/* worker_resume_accepting - the pause is over: listen again */
static void worker_resume_accepting(evutil_socket_t fd, short events, void *arg)
{
	struct worker *w = arg;

	if (!w->listening || w->draining || w->retiring)
		return;
	worker_listen(w, true);
}

/*
 * worker_pause_accepting - accept4() found no descriptor. The listeners
 * are level-triggered: left in the loop they fire again at once and the
 * worker spins on the same failure. So they leave the loop for a moment
 * (the connections wait in the backlog; sessions that end meanwhile give
 * descriptors back), and the failure is logged once per interval.
 */
static void worker_pause_accepting(struct worker *w, int err)
{
	struct timeval tv = { 0, WORKER_ACCEPT_PAUSE_USEC };
	time_t now = time(NULL);

	if (!worker_resume_timer)
		worker_resume_timer = evtimer_new(w->base, worker_resume_accepting, w);
	if (!worker_resume_timer)
		return;
	worker_listen(w, false);
	evtimer_add(worker_resume_timer, &tv);
	worker_fd_pauses++;
	if (now - worker_fd_logged >= WORKER_FD_LOG_INTERVAL) {
		log_warning("accept: %s: pausing for %d ms (%u sessions; %u pauses "
			    "in the last %d s)", strerror(err),
			    WORKER_ACCEPT_PAUSE_USEC / 1000, w->sessions.nsessions,
			    worker_fd_pauses, WORKER_FD_LOG_INTERVAL);
		worker_fd_logged = now;
		worker_fd_pauses = 0;
	}
}

/*
 * worker_accepted - a listener has a connection for a session, or found
 * no descriptor for one
 */
static void worker_accepted(struct listener *l, struct conn *c,
			    const struct sockaddr *sa, socklen_t salen, int err,
			    void *arg)
{
	struct worker *w = arg;

	if (!c) {
		if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM)
			worker_pause_accepting(w, err);
		else
			log_warning("accept on %s: %s", l->text, strerror(err));
		return;
	}
	if (w->sessions.nsessions >= w->conf->max_sessions) {
		session_refuse(&w->sessions, c, sa, "Too many connections");
		return;
	}
	/*
	 * Every filter call of a new client would fail at once: turn it
	 * away with a 421 now rather than serve it into on_error. Sessions
	 * already open keep their on_error for the calls that find it full.
	 */
	if (pipeline_saturated(w->pipeline)) {
		session_refuse(&w->sessions, c, sa, "Filter pool full");
		return;
	}
	/* Per-client limits: the session starts when the anvil said yes. */
	if (w->anvil && anvil_client_ask(w->anvil, c, sa, salen, l))
		return;
	session_start(&w->sessions, c, sa, salen, l);
}

/*
 * worker_dropped - a listener ended a connection before it was handed on
 * (a PROXY header untrusted, malformed or late): its record, no session
 */
static void worker_dropped(struct listener *l, struct conn *c,
			   const struct sockaddr *sa, socklen_t salen,
			   const char *action, const char *reason, void *arg)
{
	struct worker *w = arg;

	(void)l;
	(void)salen;
	session_drop(&w->sessions, c, sa, action, reason);
}

/* worker_auth_failed - a session's failed AUTH, counted by the anvil */
static unsigned long worker_auth_failed(void *arg, const char *addr, unsigned window,
					void (*done)(void *data, unsigned count), void *data)
{
	struct worker *w = arg;

	return w->anvil ? anvil_client_auth_failed(w->anvil, addr, window, done, data) : 0;
}

/* worker_auth_failed_cancel - the session went away before the count came */
static void worker_auth_failed_cancel(void *arg, unsigned long id)
{
	struct worker *w = arg;

	if (w->anvil)
		anvil_client_auth_cancel(w->anvil, id);
}

/*
 * worker_anvil_answer - the anvil's verdict on a client that waited for
 * it: refused before the greeting (as Postfix's smtpd does, 421 4.7.0),
 * or served if the worker still serves
 */
static bool worker_anvil_answer(struct conn *c, const struct sockaddr *sa,
				socklen_t salen, void *data, const char *refusal,
				const char *limit, void *arg)
{
	struct worker *w = arg;
	char text[200], reason[240];

	if (refusal) {
		snprintf(text, sizeof(text), "Error: %s", refusal);
		snprintf(reason, sizeof(reason), "%s (%s)", refusal, limit);
		session_refuse_reply(&w->sessions, c, sa, "4.7.0", text, reason);
		return false;
	}
	if (w->draining || w->retiring) {
		session_refuse(&w->sessions, c, sa, "Service shutting down");
		return false;
	}
	/* Others may have started while it waited. */
	if (w->sessions.nsessions >= w->conf->max_sessions) {
		session_refuse(&w->sessions, c, sa, "Too many connections");
		return false;
	}
	return session_start(&w->sessions, c, sa, salen, data) != NULL;
}

/* worker_stop_listening - accept no more connections */
static void worker_stop_listening(struct worker *w)
{
	for (size_t i = 0; i < w->nlisteners; i++)
		listener_close(&w->listeners[i]);
	w->nlisteners = 0;
}

/* worker_drain_deadline - sessions still busy when time is up */
static void worker_drain_deadline(evutil_socket_t fd, short events, void *arg)
{
	struct worker *w = arg;
	struct timeval tv = { 1, 0 };

	log_warning("drain deadline: closing %u sessions", w->sessions.nsessions);
	session_kill_all(&w->sessions);
	/* Give the 421 replies a moment to leave, then stop regardless. */
	event_base_loopexit(w->base, &tv);
}

/* worker_drain - stop accepting, let transactions finish */
static void worker_drain(struct worker *w)
{
	struct timeval tv = { w->conf->drain_timeout, 0 };

	if (w->draining)
		return;
	w->draining = true;
	log_info("draining %u sessions", w->sessions.nsessions);
	worker_stop_listening(w);
	backend_pool_close(&w->backends);
	relay_drop_parked(&w->backends);
	session_drain_all(&w->sessions);
	if (w->sessions.nsessions == 0) {
		event_base_loopexit(w->base, NULL);
		return;
	}
	/* A retired worker has its deadline already: SIGTERM starts it anew. */
	if (!worker_drain_timer)
		worker_drain_timer = evtimer_new(w->base, worker_drain_deadline, w);
	if (worker_drain_timer)
		evtimer_add(worker_drain_timer, &tv);
}

/*
 * worker_retire - a reload started new workers: stop accepting, let the
 * transactions in flight finish, and end each session with 421 4.3.2 at
 * its next command, so the old configuration serves no client for long;
 * drain_timeout after the reload whatever is left is closed. Unlike a
 * drain, an idle session is not told 421 before it speaks.
 */
static void worker_retire(struct worker *w)
{
	struct timeval tv = { w->conf->drain_timeout, 0 };

	if (w->retiring || w->draining)
		return;
	w->retiring = true;
	log_info("retiring after a reload: %u sessions left", w->sessions.nsessions);
	worker_stop_listening(w);
	backend_pool_close(&w->backends);
	relay_drop_parked(&w->backends);
	session_retire_all(&w->sessions);
	if (w->sessions.nsessions == 0) {
		event_base_loopexit(w->base, NULL);
		return;
	}
	worker_drain_timer = evtimer_new(w->base, worker_drain_deadline, w);
	if (worker_drain_timer)
		evtimer_add(worker_drain_timer, &tv);
}

/* worker_session_closed - a session ended */
static void worker_session_closed(void *arg, const char *addr, unsigned port)
{
	struct worker *w = arg;

	if (w->anvil)
		anvil_client_done(w->anvil, addr, port);
	if ((w->draining || w->retiring) && w->sessions.nsessions == 0)
		event_base_loopexit(w->base, NULL);
}

/* worker_backend_ready - the first probe ended: start accepting */
static void worker_backend_ready(void *arg)
{
	struct worker *w = arg;

	/*
	 * Accepting only now means the first client already sees what the
	 * backend offers; connections wait in the backlog meanwhile (at most
	 * the backend's connect and greeting timeouts).
	 */
	if (w->listening || w->draining || w->retiring)
		return;
	w->listening = true;
	worker_listen(w, true);
	log_debug("worker accepting connections");
}

/* worker_signal_cb - SIGTERM, SIGINT, SIGUSR1, SIGUSR2 */
static void worker_signal_cb(evutil_socket_t sig, short events, void *arg)
{
	struct worker *w = arg;

	if (sig == SIGUSR1) {
		record_reopen();
		return;
	}
	if (sig == SIGUSR2) {
		worker_retire(w);
		return;
	}
	worker_drain(w);
}

/* worker_load_chain - load the filter chain, logging its errors */
int worker_load_chain(const struct conf *conf, struct chain **chain)
{
	char *err = NULL;
	size_t errlen = 0;
	FILE *errs;

	*chain = NULL;
	/* The resolver first: a filter's init may already ask DNS questions. */
	if (dns_init(conf) < 0)
		return -1;
	if (conf->nchain == 0)
		return 0;
	errs = open_memstream(&err, &errlen);
	if (!errs)
		return -1;
	*chain = chain_load(conf, errs);
	fclose(errs);
	if (!*chain)
		log_error("cannot load the filter chain:\n%s", err);
	free(err);
	return *chain ? 0 : -1;
}

/* worker_run - serve until drained */
int worker_run(const struct conf *conf, const int *listen_fds, size_t nfds)
{
	struct worker w = { 0 };
	struct event *sigs[5];
	const int signums[5] = { SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGHUP };
	struct timespec now;

	prctl(PR_SET_PDEATHSIG, SIGTERM);
	signal(SIGPIPE, SIG_IGN);
	/* A file size limit must fail the spool write (452 4.3.1), not kill us. */
	signal(SIGXFSZ, SIG_IGN);
	w.conf = conf;
	/*
	 * With the changelist, write interest switched on and off in one
	 * loop turn (a reply written, then flushed) costs no epoll_ctl.
	 */
	struct event_config *cfg = event_config_new();
	if (cfg) {
		event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
		w.base = event_base_new_with_config(cfg);
		event_config_free(cfg);
	}
	if (!w.base)
		w.base = event_base_new();
	if (!w.base) {
		log_error("cannot create the event loop");
		return 1;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	w.sessions.id_prefix = (unsigned)(now.tv_nsec ^ (getpid() << 12) ^ now.tv_sec);
	if (backend_pool_init(&w.backends, w.base, conf, relay_probe,
			      worker_backend_ready, &w) < 0)
		return 1;
	struct chain *chain = NULL;
	if (worker_load_chain(conf, &chain) < 0)
		return 1;
	w.pipeline = pipeline_new(w.base, chain, conf);
	if (!w.pipeline) {
		log_error("cannot start the filter threads");
		return 1;
	}
	if (record_open(conf->decisions) < 0) {
		log_error("cannot open decision log %s: %s", conf->decisions,
			  strerror(errno));
		return 1;
	}
	for (size_t i = 0; i < 5; i++) {
		sigs[i] = evsignal_new(w.base, signums[i], worker_signal_cb, &w);
		if (signums[i] == SIGHUP)
			signal(SIGHUP, SIG_IGN); /* the master reloads, not us */
		else
			evsignal_add(sigs[i], NULL);
	}
	w.sessions.base = w.base;
	w.sessions.conf = conf;
	w.sessions.pipeline = w.pipeline;
	w.sessions.backends = &w.backends;
	w.sessions.closed = worker_session_closed;
	w.sessions.auth_failed = worker_auth_failed;
	w.sessions.auth_failed_cancel = worker_auth_failed_cancel;
	w.sessions.arg = &w;
	for (size_t i = 0; i < nfds && i < CONF_MAX_ADDRS; i++) {
		/* The master opened them in the order of the listen setting. */
		/* A PROXY listener holds no more headers than sessions. */
		if (listener_init(&w.listeners[i], w.base, listen_fds[i],
				  i < conf->nlisten ? conf->listen[i].text : "",
				  i < conf->nlisten ? conf->listen_settings[i] : NULL,
				  conf->max_sessions, worker_accepted, worker_dropped,
				  &w) < 0) {
			log_error("cannot make the listeners");
			return 1;
		}
		w.nlisteners++;
	}
	/* The master, our parent, named the anvil's socket after its pid. */
	w.anvil = anvil_client_new(w.base, conf, (int)getppid(), worker_anvil_answer, &w);
	if (!w.anvil) {
		log_error("cannot make the anvil client");
		return 1;
	}
	backend_pool_start(&w.backends);
	log_debug("worker ready");

	event_base_dispatch(w.base);

	log_info("worker done");
	worker_stop_listening(&w);
	relay_drop_parked(&w.backends);
	anvil_client_free(w.anvil);
	for (size_t i = 0; i < 5; i++)
		event_free(sigs[i]);
	if (worker_drain_timer)
		event_free(worker_drain_timer);
	if (worker_resume_timer)
		event_free(worker_resume_timer);
	backend_pool_free(&w.backends);
	record_close();
	return 0;
}
