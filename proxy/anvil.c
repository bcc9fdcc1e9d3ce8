/*
 * anvil.c - the connection-counting service (protocol in anvil.h)
 *
 * One process, one libevent loop: the listening socket (made by the
 * master before it forked anyone, inherited here) and one read event per
 * worker connection. Each request is answered at once, in the order it
 * came, with the verdict of its own limits: a worker's replies match its
 * requests one to one.
 *
 * The totals are one table of entries: a client address (sessions, and
 * the connections of its current rate window) and a client network (/24
 * or /64: sessions). Each worker connection has its own table of the
 * sessions it counted per address, so that its closing takes them all
 * back. Entries left at zero are swept once a rate window, so memory is
 * bounded by the clients of the last minute and the sessions open.
 *
 * Errors: a datagram of the wrong size or type is a worker's bug; the
 * connection is closed (dropping its counts) and logged.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "anvil.h"
#include "log.h"

/* Requests read per worker and loop turn: one busy worker cannot starve the others. */
#define ANVIL_BATCH 64

/* Entry kinds of the anvil's tables. */
enum anvil_kind { ANVIL_KIND_ADDR = 1, ANVIL_KIND_NET, ANVIL_KIND_AUTH = 4 };

/* One worker's connection. */
struct anvil_peer {
	struct anvil_peer *prev, *next;
	struct anvil_service *svc;
	evutil_socket_t fd;
	struct event *ev;
	struct anvil_table own; /* ANVIL_KIND_ADDR: the sessions it counted */
};

struct anvil_service {
	struct event_base *base;
	struct anvil_table totals;
	struct anvil_peer *peers;
	time_t now; /* of the current loop turn */
};

/* anvil_rotl - rotate left, for the hash */
static inline uint64_t anvil_rotl(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

/*
 * anvil_hash - SipHash-2-4 of the key under the table's seed: the clients
 * choose the addresses, so a hash they could predict would let them
 * chain every entry into one bucket
 */
static uint64_t anvil_hash(const struct anvil_table *t, const struct anvil_key *key)
{
	uint64_t v0 = 0x736f6d6570736575ULL ^ t->seed[0];
	uint64_t v1 = 0x646f72616e646f6dULL ^ t->seed[1];
	uint64_t v2 = 0x6c7967656e657261ULL ^ t->seed[0];
	uint64_t v3 = 0x7465646279746573ULL ^ t->seed[1];
	unsigned char in[24] = { 0 };
	uint64_t m;

	memcpy(in, key, sizeof(*key));
	in[23] = sizeof(*key);
#define SIPROUND                                                              \
	do {                                                                  \
		v0 += v1; v1 = anvil_rotl(v1, 13); v1 ^= v0; v0 = anvil_rotl(v0, 32); \
		v2 += v3; v3 = anvil_rotl(v3, 16); v3 ^= v2;                  \
		v0 += v3; v3 = anvil_rotl(v3, 21); v3 ^= v0;                  \
		v2 += v1; v1 = anvil_rotl(v1, 17); v1 ^= v2; v2 = anvil_rotl(v2, 32); \
	} while (0)
	for (size_t i = 0; i < sizeof(in); i += 8) {
		memcpy(&m, in + i, 8);
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
#undef SIPROUND
	return v0 ^ v1 ^ v2 ^ v3;
}

/* anvil_table_init - an empty table with a fresh random seed */
void anvil_table_init(struct anvil_table *t)
{
	memset(t, 0, sizeof(*t));
	if (getrandom(t->seed, sizeof(t->seed), GRND_NONBLOCK) != sizeof(t->seed)) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		t->seed[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
		t->seed[1] = (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)t;
	}
}

/* anvil_table_grow - double the buckets (load factor one) */
static bool anvil_table_grow(struct anvil_table *t)
{
	size_t n = t->nbuckets ? t->nbuckets * 2 : 64;
	struct anvil_entry **b = calloc(n, sizeof(*b));

	if (!b)
		return false;
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct anvil_entry *e, *next;
		for (e = t->buckets[i]; e; e = next) {
			size_t j = anvil_hash(t, &e->key) & (n - 1);
			next = e->next;
			e->next = b[j];
			b[j] = e;
		}
	}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = n;
	return true;
}

/* anvil_table_get - find, or make, the entry of key */
struct anvil_entry *anvil_table_get(struct anvil_table *t,
				    const struct anvil_key *key, bool create)
{
	struct anvil_entry *e;
	size_t i;

	if (t->nbuckets) {
		i = anvil_hash(t, key) & (t->nbuckets - 1);
		for (e = t->buckets[i]; e; e = e->next)
			if (memcmp(&e->key, key, sizeof(*key)) == 0)
				return e;
	}
	if (!create)
		return NULL;
	if (t->count >= t->nbuckets && !anvil_table_grow(t) && t->nbuckets == 0)
		return NULL;
	if (!(e = calloc(1, sizeof(*e))))
		return NULL;
	e->key = *key;
	i = anvil_hash(t, key) & (t->nbuckets - 1);
	e->next = t->buckets[i];
	t->buckets[i] = e;
	t->count++;
	return e;
}

/* anvil_table_remove - unlink and free one entry */
void anvil_table_remove(struct anvil_table *t, struct anvil_entry *e)
{
	struct anvil_entry **p = &t->buckets[anvil_hash(t, &e->key) & (t->nbuckets - 1)];

	for (; *p; p = &(*p)->next) {
		if (*p == e) {
			*p = e->next;
			t->count--;
			free(e);
			return;
		}
	}
}

/* anvil_table_free - free every entry */
void anvil_table_free(struct anvil_table *t)
{
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct anvil_entry *e, *next;
		for (e = t->buckets[i]; e; e = next) {
			next = e->next;
			free(e);
		}
	}
	free(t->buckets);
	t->buckets = NULL;
	t->nbuckets = t->count = 0;
}

/* anvil_address - the abstract socket address for the master's pid */
socklen_t anvil_address(int master, struct sockaddr_un *sun)
{
	int n;

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	/* sun_path[0] == 0: the abstract namespace (unix(7)). */
	n = snprintf(sun->sun_path + 1, sizeof(sun->sun_path) - 1,
		     "portcullis-anvil-%d", master);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

/* anvil_listen - the listening socket, made by the master */
int anvil_listen(void)
{
	struct sockaddr_un sun;
	socklen_t len = anvil_address((int)getpid(), &sun);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, len) < 0 || listen(fd, 256) < 0) {
		log_error("anvil socket @%s: %s", sun.sun_path + 1, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* anvil_net_key - the key of the client's network: /24 for IPv4, /64 for IPv6 */
static void anvil_net_key(const struct anvil_key *addr, struct anvil_key *net)
{
	*net = *addr;
	net->kind = ANVIL_KIND_NET;
	if (net->family == 4)
		net->addr[3] = 0;
	else
		memset(net->addr + 8, 0, 8);
}

/* anvil_release - take n sessions of an address back from the totals */
static void anvil_release(struct anvil_service *svc, const struct anvil_key *addr,
			  unsigned n)
{
	struct anvil_key nkey;
	struct anvil_entry *a = anvil_table_get(&svc->totals, addr, false), *net;

	anvil_net_key(addr, &nkey);
	net = anvil_table_get(&svc->totals, &nkey, false);
	if (a)
		a->count = a->count > n ? a->count - n : 0;
	if (net)
		net->count = net->count > n ? net->count - n : 0;
}

/* anvil_peer_close - a worker went away, or misbehaved: drop its counts */
static void anvil_peer_close(struct anvil_peer *p)
{
	struct anvil_service *svc = p->svc;

	for (size_t i = 0; i < p->own.nbuckets; i++)
		for (struct anvil_entry *e = p->own.buckets[i]; e; e = e->next)
			anvil_release(svc, &e->key, e->count);
	anvil_table_free(&p->own);
	if (p->prev)
		p->prev->next = p->next;
	else
		svc->peers = p->next;
	if (p->next)
		p->next->prev = p->prev;
	event_free(p->ev);
	close(p->fd);
	free(p);
}

/*
 * anvil_decide - count one new connection of a client against the
 * limits it came with; the answer goes into m. The rate counts every
 * attempt, refused ones too (as Postfix's anvil does): a client that
 * keeps hammering stays over the limit until it slows down.
 */
static void anvil_decide(struct anvil_peer *p, struct anvil_msg *m,
			 const struct anvil_key *key)
{
	struct anvil_service *svc = p->svc;
	struct anvil_key nkey;
	struct anvil_entry *a, *net, *own;

	anvil_net_key(key, &nkey);
	a = anvil_table_get(&svc->totals, key, true);
	net = a ? anvil_table_get(&svc->totals, &nkey, true) : NULL;
	own = net ? anvil_table_get(&p->own, key, true) : NULL;
	m->type = ANVIL_ANSWER;
	m->count = 0;
	if (!own) {
		/* Out of memory: serve the client rather than refuse it. */
		m->verdict = ANVIL_UNCOUNTED;
		return;
	}
	if (svc->now - a->rate_start >= ANVIL_RATE_WINDOW) {
		a->rate_start = svc->now;
		a->rate = 0;
	}
	if (a->rate < UINT32_MAX)
		a->rate++;
	if (m->limits[ANVIL_LIMIT_RATE] && a->rate > m->limits[ANVIL_LIMIT_RATE]) {
		m->verdict = ANVIL_RATE;
		m->count = a->rate;
	} else if (m->limits[ANVIL_LIMIT_CONN] && a->count >= m->limits[ANVIL_LIMIT_CONN]) {
		m->verdict = ANVIL_CONNECTIONS;
		m->count = a->count;
	} else if (m->limits[ANVIL_LIMIT_NET] && net->count >= m->limits[ANVIL_LIMIT_NET]) {
		m->verdict = ANVIL_NETWORK;
		m->count = net->count;
	} else {
		m->verdict = ANVIL_OK;
		a->count++;
		net->count++;
		own->count++;
	}
	if (own->count == 0)
		anvil_table_remove(&p->own, own);
}

/*
 * anvil_auth_failed - count one failed AUTH of an address over the
 * window the worker gives (kept in the entry's rate, for the sweep); the
 * answer, with the count, goes into m. Out of memory the count is 0:
 * the worker then counts its session alone.
 */
static void anvil_auth_failed(struct anvil_service *svc, struct anvil_msg *m,
			      const struct anvil_key *key)
{
	struct anvil_entry *e = anvil_table_get(&svc->totals, key, true);
	uint32_t window = m->limits[0] ? m->limits[0] : 1;

	m->type = ANVIL_ANSWER;
	m->verdict = ANVIL_UNCOUNTED; /* no session to take back: see anvil_client_read() */
	m->count = 0;
	if (!e)
		return;
	if (e->count == 0 || svc->now - e->rate_start >= (time_t)e->rate) {
		e->count = 0;
		e->rate_start = svc->now;
	}
	e->rate = window;
	if (e->count < UINT32_MAX)
		e->count++;
	m->count = e->count;
}

/* anvil_disconnect - a session the worker had counted ended */
static void anvil_disconnect(struct anvil_peer *p, const struct anvil_key *key)
{
	struct anvil_entry *own = anvil_table_get(&p->own, key, false);

	/* Not ours to take: it would be another worker's session. */
	if (!own) {
		log_warning("anvil: a worker ended a session it had not counted");
		return;
	}
	anvil_release(p->svc, key, 1);
	if (--own->count == 0)
		anvil_table_remove(&p->own, own);
}

/* anvil_peer_read - requests from one worker, answered in order */
static void anvil_peer_read(evutil_socket_t fd, short events, void *arg)
{
	struct anvil_peer *p = arg;

	(void)events;
	p->svc->now = time(NULL);
	for (int i = 0; i < ANVIL_BATCH; i++) {
		struct anvil_msg m;
		struct anvil_key key = { 0 };
		ssize_t n = recv(fd, &m, sizeof(m), MSG_TRUNC);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n == 0 || (n < 0 && errno == ECONNRESET)) {
			anvil_peer_close(p);
			return;
		}
		if (n != (ssize_t)sizeof(m) || (m.family != 4 && m.family != 6) ||
		    (m.type != ANVIL_CONNECT && m.type != ANVIL_DISCONNECT &&
		     m.type != ANVIL_AUTH_FAILED)) {
			log_error("anvil: %s from a worker: closing its connection",
				  n < 0 ? strerror(errno) : "a malformed request");
			anvil_peer_close(p);
			return;
		}
		key.kind = ANVIL_KIND_ADDR;
		key.family = m.family;
		memcpy(key.addr, m.addr, m.family == 4 ? 4 : 16);
		if (m.type == ANVIL_DISCONNECT) {
			anvil_disconnect(p, &key);
			continue;
		}
		if (m.type == ANVIL_AUTH_FAILED) {
			key.kind = ANVIL_KIND_AUTH;
			anvil_auth_failed(p->svc, &m, &key);
			/* A worker that does not read gives up on the answer itself. */
			(void)send(fd, &m, sizeof(m), MSG_DONTWAIT | MSG_NOSIGNAL);
			continue;
		}
		anvil_decide(p, &m, &key);
		if (send(fd, &m, sizeof(m), MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)sizeof(m) &&
		    m.verdict == ANVIL_OK) {
			/*
			 * The worker is not reading: it will serve the client
			 * uncounted when its deadline passes, so count nothing.
			 */
			anvil_disconnect(p, &key);
		}
	}
}

/* anvil_accept - a worker connected */
static void anvil_accept(evutil_socket_t fd, short events, void *arg)
{
	struct anvil_service *svc = arg;
	struct anvil_peer *p;
	int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	(void)events;
	if (c < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
		    errno != ECONNABORTED)
			log_warning("anvil: accept: %s", strerror(errno));
		return;
	}
	if (!(p = calloc(1, sizeof(*p)))) {
		close(c);
		return;
	}
	p->svc = svc;
	p->fd = c;
	anvil_table_init(&p->own);
	p->ev = event_new(svc->base, c, EV_READ | EV_PERSIST, anvil_peer_read, p);
	if (!p->ev || event_add(p->ev, NULL) < 0) {
		if (p->ev)
			event_free(p->ev);
		close(c);
		free(p);
		return;
	}
	p->next = svc->peers;
	if (p->next)
		p->next->prev = p;
	svc->peers = p;
}

/* anvil_sweep - forget the addresses and networks with nothing left to count */
static void anvil_sweep(evutil_socket_t fd, short events, void *arg)
{
	struct anvil_service *svc = arg;
	time_t now = time(NULL);

	(void)fd;
	(void)events;
	for (size_t i = 0; i < svc->totals.nbuckets; i++) {
		struct anvil_entry *e, *next;
		for (e = svc->totals.buckets[i]; e; e = next) {
			next = e->next;
			/* Failed AUTHs are forgotten when their window is over. */
			if ((e->count == 0 && now - e->rate_start >= ANVIL_RATE_WINDOW) ||
			    (e->key.kind == ANVIL_KIND_AUTH && now - e->rate_start >= (time_t)e->rate))
				anvil_table_remove(&svc->totals, e);
		}
	}
}

/* anvil_stop - SIGTERM: the master is done with us */
static void anvil_stop(evutil_socket_t sig, short events, void *arg)
{
	(void)sig;
	(void)events;
	event_base_loopexit(arg, NULL);
}

/* anvil_run - the service's process */
int anvil_run(int listen_fd)
{
	struct anvil_service svc = { 0 };
	struct event *lev, *sweep, *term;
	struct timeval every = { ANVIL_RATE_WINDOW, 0 };

	prctl(PR_SET_PDEATHSIG, SIGTERM);
	/* Told apart from the workers in ps and by the tests. */
	prctl(PR_SET_NAME, "pc-anvil");
	signal(SIGPIPE, SIG_IGN);
	/* The master signals its workers, not us; ^C reaches the whole group. */
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	anvil_table_init(&svc.totals);
	svc.base = event_base_new();
	if (!svc.base) {
		log_error("anvil: cannot create the event loop");
		return 1;
	}
	lev = event_new(svc.base, listen_fd, EV_READ | EV_PERSIST, anvil_accept, &svc);
	sweep = event_new(svc.base, -1, EV_PERSIST, anvil_sweep, &svc);
	term = evsignal_new(svc.base, SIGTERM, anvil_stop, svc.base);
	if (!lev || !sweep || !term || event_add(lev, NULL) < 0 ||
	    event_add(sweep, &every) < 0 || event_add(term, NULL) < 0) {
		log_error("anvil: cannot set up the event loop");
		return 1;
	}
	log_debug("anvil ready");
	event_base_dispatch(svc.base);
	while (svc.peers)
		anvil_peer_close(svc.peers);
	event_free(lev);
	event_free(sweep);
	event_free(term);
	anvil_table_free(&svc.totals);
	event_base_free(svc.base);
	return 0;
}
