/*
 * anvil_client.c - ask the anvil about each client, tell it each end
 *
 * One SOCK_SEQPACKET connection per worker; one datagram per request,
 * answer and notice, so a counted client costs three system calls on
 * the worker's side (send, recv, send) and nothing blocks: a send the
 * socket cannot take at once is not retried.
 *
 * The clients waiting for an answer are a ring of at most
 * ANVIL_CLIENT_MAX_PENDING, in the order asked; the anvil answers in
 * that order, so each answer must be the oldest request's. An answer for
 * a request given up on (its deadline passed, the client was served
 * uncounted) that counted the client is taken back at once with a
 * notice; any other answer is a protocol error, and the connection is
 * closed (the anvil then drops this worker's counts) and made again.
 *
 * The sessions the anvil counted are kept in a table by address and
 * port, the identity the session gives when it ends; a session not in
 * it (exempt, served while the anvil was away, counted by an anvil that
 * has since died) sends nothing.
 *
 * After a deadline passes, the anvil is asked about at most one client
 * a second until it answers again, so an anvil that hangs costs each
 * client nothing rather than the deadline.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "anvil.h"
#include "anvil_client.h"
#include "conn.h"
#include "log.h"

/* How long after a missed deadline the next client is asked. */
#define ANVIL_CLIENT_STALL_MS 1000
/* How long to wait before connecting again after a failed connect. */
#define ANVIL_CLIENT_RETRY_SEC 1

/* The kind of the session table's entries. */
#define ANVIL_KIND_SESSION 3

struct anvil_pending {
	uint32_t id;
	unsigned gen; /* of the connection it was asked on */
	long long deadline_ms;
	struct conn *c;
	struct sockaddr_storage sa;
	socklen_t salen;
	void *data;
	struct anvil_key key; /* the client's address and port */
	bool auth;	      /* a failed AUTH, not a client (c is NULL) */
	anvil_auth_fn auth_done; /* NULL once cancelled */
};

struct anvil_client {
	struct event_base *base;
	const struct conf *conf;
	struct sockaddr_un addr;
	socklen_t addrlen;
	evutil_socket_t fd; /* -1: not connected */
	unsigned gen;	    /* connections made so far */
	struct event *rev;
	struct event *deadline; /* the oldest pending's deadline */
	struct event *retry;	/* connect again */
	struct anvil_pending pending[ANVIL_CLIENT_MAX_PENDING];
	size_t head, npending;
	uint32_t next_id;
	long long stalled_until_ms;
	struct anvil_table sessions; /* counted sessions, by address and port */
	time_t logged;		     /* when failing open was last logged */
	unsigned unserved;	     /* clients served uncounted since */
	anvil_client_fn answer;
	void *arg;
};

static void anvil_client_connect(struct anvil_client *ac);

/* anvil_client_now_ms - a monotonic clock (vDSO: no system call) */
static long long anvil_client_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* anvil_client_fail_open - a client served without asking: log now and then */
static void anvil_client_fail_open(struct anvil_client *ac, const char *why)
{
	time_t now = time(NULL);

	ac->unserved++;
	if (ac->logged && now - ac->logged < ANVIL_CLIENT_LOG_INTERVAL)
		return;
	log_warning("anvil %s: %u clients served without per-client limits "
		    "in the last %d s", why, ac->unserved, ANVIL_CLIENT_LOG_INTERVAL);
	ac->logged = now;
	ac->unserved = 0;
}

/*
 * anvil_client_key - the key of a socket address: an IPv4 client on a
 * dual-stack socket is an IPv4 client, as the session names it
 */
static bool anvil_client_key(const struct sockaddr *sa, struct anvil_key *key)
{
	memset(key, 0, sizeof(*key));
	key->kind = ANVIL_KIND_SESSION;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		key->family = 4;
		memcpy(key->addr, &in->sin_addr, 4);
		key->port = ntohs(in->sin_port);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			key->family = 4;
			memcpy(key->addr, &in6->sin6_addr.s6_addr[12], 4);
		} else {
			key->family = 6;
			memcpy(key->addr, &in6->sin6_addr, 16);
		}
		key->port = ntohs(in6->sin6_port);
		return true;
	}
	return false;
}

/* anvil_client_send - one datagram to the anvil; false when not sent */
static bool anvil_client_send(struct anvil_client *ac, enum anvil_type type,
			      uint32_t id, const struct anvil_key *key)
{
	struct anvil_msg m = { 0 };

	m.type = (uint8_t)type;
	m.id = id;
	m.family = key->family;
	memcpy(m.addr, key->addr, sizeof(m.addr));
	if (type == ANVIL_CONNECT) {
		m.limits[ANVIL_LIMIT_CONN] = ac->conf->client_connection_limit;
		m.limits[ANVIL_LIMIT_NET] = ac->conf->client_network_connection_limit;
		m.limits[ANVIL_LIMIT_RATE] = ac->conf->client_connection_rate_limit;
	}
	return send(ac->fd, &m, sizeof(m), MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)sizeof(m);
}

/*
 * anvil_client_reset - give up the connection: the anvil drops what it
 * counted for us, so we forget it too. No callback runs here (this is
 * called from inside them): the clients still waiting are served, as
 * given up on, by the deadline event on the next loop turn.
 */
static void anvil_client_reset(struct anvil_client *ac, const char *why)
{
	if (ac->fd < 0)
		return;
	log_warning("anvil connection lost (%s): connecting again", why);
	event_free(ac->rev);
	ac->rev = NULL;
	close(ac->fd);
	ac->fd = -1;
	anvil_table_free(&ac->sessions);
	if (ac->npending)
		event_active(ac->deadline, EV_TIMEOUT, 0);
	anvil_client_connect(ac);
}

/* anvil_client_arm - the deadline event for the oldest waiting client */
static void anvil_client_arm(struct anvil_client *ac)
{
	long long left;
	struct timeval tv;

	if (!ac->npending) {
		evtimer_del(ac->deadline);
		return;
	}
	left = ac->pending[ac->head].deadline_ms - anvil_client_now_ms();
	if (left < 0)
		left = 0;
	tv.tv_sec = (time_t)(left / 1000);
	tv.tv_usec = (suseconds_t)(left % 1000) * 1000;
	evtimer_add(ac->deadline, &tv);
}

/* anvil_client_pop - take the oldest waiting client off the ring */
static struct anvil_pending anvil_client_pop(struct anvil_client *ac)
{
	struct anvil_pending p = ac->pending[ac->head];

	ac->head = (ac->head + 1) % ANVIL_CLIENT_MAX_PENDING;
	ac->npending--;
	return p;
}

/*
 * anvil_client_expire - serve, uncounted, the waiting clients whose
 * deadline passed or whose connection is gone
 */
static void anvil_client_expire(struct anvil_client *ac)
{
	long long now = anvil_client_now_ms();

	while (ac->npending) {
		const struct anvil_pending *head = &ac->pending[ac->head];
		if (head->gen == ac->gen && ac->fd >= 0 && head->deadline_ms > now)
			break;
		struct anvil_pending p = anvil_client_pop(ac);
		if (p.gen == ac->gen && ac->fd >= 0) {
			anvil_client_fail_open(ac, "did not answer in time");
			ac->stalled_until_ms = now + ANVIL_CLIENT_STALL_MS;
		} else {
			anvil_client_fail_open(ac, "went away");
		}
		if (p.auth) {
			if (p.auth_done)
				p.auth_done(p.data, 0);
			continue;
		}
		ac->answer(p.c, (struct sockaddr *)&p.sa, p.salen, p.data, NULL, NULL,
			   ac->arg);
	}
	anvil_client_arm(ac);
}

/* anvil_client_deadline - the oldest waiting client waited long enough */
static void anvil_client_deadline(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	anvil_client_expire(arg);
}

/* anvil_client_refusal - the 421's text for a verdict, and the key of its limit */
static const char *anvil_client_refusal(const struct anvil_msg *m, char *text,
					size_t cap)
{
	char addr[INET6_ADDRSTRLEN];
	unsigned char net[16];

	inet_ntop(m->family == 4 ? AF_INET : AF_INET6, m->addr, addr, sizeof(addr));
	switch (m->verdict) {
	case ANVIL_CONNECTIONS:
		snprintf(text, cap, "too many connections from %s", addr);
		return "client_connection_limit";
	case ANVIL_NETWORK:
		memcpy(net, m->addr, sizeof(net));
		if (m->family == 4)
			net[3] = 0;
		else
			memset(net + 8, 0, 8);
		inet_ntop(m->family == 4 ? AF_INET : AF_INET6, net, addr, sizeof(addr));
		snprintf(text, cap, "too many connections from network %s/%d",
			 addr, m->family == 4 ? 24 : 64);
		return "client_network_connection_limit";
	case ANVIL_RATE:
		snprintf(text, cap, "too many connections per minute from %s", addr);
		return "client_connection_rate_limit";
	}
	return NULL;
}

/* anvil_client_verdict - the anvil's answer for the oldest waiting client */
static void anvil_client_verdict(struct anvil_client *ac, const struct anvil_msg *m)
{
	struct anvil_pending p = anvil_client_pop(ac);
	struct anvil_entry *e = NULL;
	char text[160];
	const char *limit;

	anvil_client_arm(ac);
	if (p.auth) {
		if (p.auth_done)
			p.auth_done(p.data, m->count);
		return;
	}
	if (m->verdict == ANVIL_OK) {
		e = anvil_table_get(&ac->sessions, &p.key, true);
		if (!e) {
			/* Nowhere to remember it: count it not at all. */
			anvil_client_send(ac, ANVIL_DISCONNECT, 0, &p.key);
		} else {
			e->count++;
		}
	}
	if (m->verdict == ANVIL_OK || m->verdict == ANVIL_UNCOUNTED) {
		if (!ac->answer(p.c, (struct sockaddr *)&p.sa, p.salen, p.data, NULL,
				NULL, ac->arg) && e) {
			char addr[INET6_ADDRSTRLEN];
			inet_ntop(p.key.family == 4 ? AF_INET : AF_INET6, p.key.addr,
				  addr, sizeof(addr));
			anvil_client_done(ac, addr, p.key.port);
		}
		return;
	}
	limit = anvil_client_refusal(m, text, sizeof(text));
	ac->answer(p.c, (struct sockaddr *)&p.sa, p.salen, p.data, text, limit,
		   ac->arg);
}

/* anvil_client_read - answers from the anvil */
static void anvil_client_read(evutil_socket_t fd, short events, void *arg)
{
	struct anvil_client *ac = arg;
	unsigned gen = ac->gen;

	(void)events;
	/* Whatever waits from a closed connection goes first. */
	anvil_client_expire(ac);
	for (int i = 0; i < ANVIL_CLIENT_MAX_PENDING && ac->fd == fd && ac->gen == gen; i++) {
		struct anvil_msg m;
		ssize_t n = recv(fd, &m, sizeof(m), MSG_TRUNC | MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n <= 0) {
			anvil_client_reset(ac, n == 0 ? "closed by the anvil" : strerror(errno));
			return;
		}
		if (n != (ssize_t)sizeof(m) || m.type != ANVIL_ANSWER ||
		    (m.family != 4 && m.family != 6) || m.verdict > ANVIL_RATE) {
			anvil_client_reset(ac, "a malformed answer");
			return;
		}
		ac->stalled_until_ms = 0;
		if (ac->npending && ac->pending[ac->head].id == m.id) {
			anvil_client_verdict(ac, &m);
		} else if (!ac->npending || (int32_t)(m.id - ac->pending[ac->head].id) < 0) {
			/* Late: the client was served uncounted; so be it. */
			if (m.verdict == ANVIL_OK) {
				struct anvil_key key = { 0 };
				key.family = m.family;
				memcpy(key.addr, m.addr, sizeof(key.addr));
				anvil_client_send(ac, ANVIL_DISCONNECT, 0, &key);
			}
		} else {
			anvil_client_reset(ac, "an answer to no request");
			return;
		}
	}
}

/* anvil_client_retry - the retry timer: connect again */
static void anvil_client_retry(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	anvil_client_connect(arg);
}

/*
 * anvil_client_connect - connect to the anvil's socket. The master holds
 * it, so a connect succeeds even while the anvil is being restarted (the
 * connection waits in the backlog); failing means something worse, and
 * the next try is a second later.
 */
static void anvil_client_connect(struct anvil_client *ac)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0 || connect(fd, (struct sockaddr *)&ac->addr, ac->addrlen) < 0) {
		struct timeval tv = { ANVIL_CLIENT_RETRY_SEC, 0 };
		log_debug("anvil: connect: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		evtimer_add(ac->retry, &tv);
		return;
	}
	ac->rev = event_new(ac->base, fd, EV_READ | EV_PERSIST, anvil_client_read, ac);
	if (!ac->rev || event_add(ac->rev, NULL) < 0) {
		struct timeval tv = { ANVIL_CLIENT_RETRY_SEC, 0 };
		if (ac->rev)
			event_free(ac->rev);
		ac->rev = NULL;
		close(fd);
		evtimer_add(ac->retry, &tv);
		return;
	}
	ac->fd = fd;
	ac->gen++;
	anvil_table_init(&ac->sessions);
}

/* anvil_client_new - a client, connecting at once */
struct anvil_client *anvil_client_new(struct event_base *base,
				      const struct conf *conf, int master,
				      anvil_client_fn answer, void *arg)
{
	struct anvil_client *ac = calloc(1, sizeof(*ac));

	if (!ac)
		return NULL;
	ac->base = base;
	ac->conf = conf;
	ac->fd = -1;
	ac->answer = answer;
	ac->arg = arg;
	ac->addrlen = anvil_address(master, &ac->addr);
	anvil_table_init(&ac->sessions);
	ac->deadline = evtimer_new(base, anvil_client_deadline, ac);
	ac->retry = evtimer_new(base, anvil_client_retry, ac);
	if (!ac->deadline || !ac->retry) {
		anvil_client_free(ac);
		return NULL;
	}
	anvil_client_connect(ac);
	return ac;
}

/* anvil_client_ask - send the client's address, or say to serve it now */
bool anvil_client_ask(struct anvil_client *ac, struct conn *c,
		      const struct sockaddr *sa, socklen_t salen, void *data)
{
	const struct conf *conf = ac->conf;
	struct anvil_pending *p;
	struct anvil_key key;
	long long now;

	if (!conf->client_connection_limit && !conf->client_network_connection_limit &&
	    !conf->client_connection_rate_limit)
		return false;
	if (!anvil_client_key(sa, &key) || salen > sizeof(p->sa))
		return false;
	if (conf_net_match(conf->client_limit_exceptions, conf->nclient_limit_exceptions,
			   key.family == 4 ? AF_INET : AF_INET6, key.addr))
		return false;
	now = anvil_client_now_ms();
	if (ac->fd < 0) {
		anvil_client_fail_open(ac, "unreachable");
		return false;
	}
	if (now < ac->stalled_until_ms) {
		anvil_client_fail_open(ac, "did not answer in time");
		return false;
	}
	if (ac->npending == ANVIL_CLIENT_MAX_PENDING) {
		anvil_client_fail_open(ac, "is behind");
		return false;
	}
	if (!anvil_client_send(ac, ANVIL_CONNECT, ac->next_id, &key)) {
		anvil_client_fail_open(ac, "cannot take a request");
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			anvil_client_reset(ac, strerror(errno));
		return false;
	}
	p = &ac->pending[(ac->head + ac->npending) % ANVIL_CLIENT_MAX_PENDING];
	p->auth = false;
	p->id = ac->next_id++;
	p->gen = ac->gen;
	p->deadline_ms = now + ANVIL_CLIENT_DEADLINE_MS;
	p->c = c;
	memcpy(&p->sa, sa, salen);
	p->salen = salen;
	p->data = data;
	p->key = key;
	if (ac->npending++ == 0)
		anvil_client_arm(ac);
	return true;
}

/* anvil_client_auth_failed - count a failed AUTH across the workers */
unsigned long anvil_client_auth_failed(struct anvil_client *ac, const char *addr,
				       unsigned window, anvil_auth_fn done, void *data)
{
	struct anvil_msg m = { 0 };
	struct anvil_pending *p;
	long long now = anvil_client_now_ms();

	if (inet_pton(AF_INET, addr, m.addr) == 1)
		m.family = 4;
	else if (inet_pton(AF_INET6, addr, m.addr) == 1)
		m.family = 6;
	else
		return 0;
	if (ac->fd < 0 || now < ac->stalled_until_ms ||
	    ac->npending == ANVIL_CLIENT_MAX_PENDING)
		return 0;
	m.type = ANVIL_AUTH_FAILED;
	m.id = ac->next_id;
	m.limits[0] = window;
	if (send(ac->fd, &m, sizeof(m), MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)sizeof(m))
		return 0;
	p = &ac->pending[(ac->head + ac->npending) % ANVIL_CLIENT_MAX_PENDING];
	memset(p, 0, sizeof(*p));
	p->auth = true;
	p->auth_done = done;
	p->data = data;
	p->id = ac->next_id++;
	p->gen = ac->gen;
	p->deadline_ms = now + ANVIL_CLIENT_DEADLINE_MS;
	if (ac->npending++ == 0)
		anvil_client_arm(ac);
	/* 0 means "not asked": ids run on past it. */
	return (unsigned long)p->id + 1;
}

/* anvil_client_auth_cancel - forget the callback of a failed AUTH's count */
void anvil_client_auth_cancel(struct anvil_client *ac, unsigned long id)
{
	for (size_t i = 0; i < ac->npending; i++) {
		struct anvil_pending *p = &ac->pending[(ac->head + i) % ANVIL_CLIENT_MAX_PENDING];
		if (p->auth && (unsigned long)p->id + 1 == id)
			p->auth_done = NULL;
	}
}

/* anvil_client_done - a session ended: a notice if the anvil counted it */
void anvil_client_done(struct anvil_client *ac, const char *addr, unsigned port)
{
	struct anvil_key key = { 0 };
	struct anvil_entry *e;

	key.kind = ANVIL_KIND_SESSION;
	key.port = (uint16_t)port;
	if (inet_pton(AF_INET, addr, key.addr) == 1)
		key.family = 4;
	else if (inet_pton(AF_INET6, addr, key.addr) == 1)
		key.family = 6;
	else
		return;
	if (ac->fd < 0 || !(e = anvil_table_get(&ac->sessions, &key, false)))
		return;
	if (--e->count == 0)
		anvil_table_remove(&ac->sessions, e);
	/*
	 * A notice the socket cannot take would leave the session counted
	 * for ever: give the connection up instead, which takes back all
	 * that this worker counted.
	 */
	if (!anvil_client_send(ac, ANVIL_DISCONNECT, 0, &key))
		anvil_client_reset(ac, "cannot send a notice");
}

/* anvil_client_free - close, dropping the clients still waiting */
void anvil_client_free(struct anvil_client *ac)
{
	if (!ac)
		return;
	while (ac->npending) {
		struct anvil_pending p = anvil_client_pop(ac);
		if (!p.auth)
			conn_free(p.c);
	}
	if (ac->rev)
		event_free(ac->rev);
	if (ac->fd >= 0)
		close(ac->fd);
	if (ac->deadline)
		event_free(ac->deadline);
	if (ac->retry)
		event_free(ac->retry);
	anvil_table_free(&ac->sessions);
	free(ac);
}
