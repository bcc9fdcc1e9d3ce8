/*
 * dns.c - the resolver of pc_dns_query(): c-ares, and one cache per process
 *
 * Filters ask from the threads of the filter pool (and from their init),
 * and from nonblocking hooks on the event loop, which get cached answers
 * only (dns_cache_only()).
 * Each thread has its own c-ares channel, made at its first query and
 * made again after dns_init() changed the settings or after a fork, and
 * waits for its reply with poll() on that channel's sockets: no thread
 * ever waits for another one's query. c-ares sends the query over UDP
 * (again over TCP when the reply is truncated), matches the reply to it
 * (ID and question), and moves on to the next server when one stays
 * silent for "timeout".
 *
 * Two things are done here rather than by c-ares 1.18:
 *
 *   - the retries: c-ares doubles the timeout at each round over the
 *     servers (5, 10 then 20 s for three tries), where "timeout" is
 *     meant as the wait for one server. So c-ares makes one round (each
 *     server once, in the configured order) and a round without a reply
 *     is followed by another, 1 + retries rounds in all: at worst
 *     timeout x tries x servers, then PC_DNS_TIMEOUT.
 *   - the query ID: ares_send() sends the query as given, so each one
 *     gets a fresh random ID here (getrandom()), not a guessable one.
 *
 * Every reply is given back as the server sent it, SERVFAIL, REFUSED and
 * NOTIMP included (ARES_FLAG_NOCHECKRESP: without it c-ares drops such a
 * reply and reports ECONNREFUSED, as for a server that is down); the
 * caller reads the rcode. Such replies are never cached or retried.
 *
 * dns_client_name() is the forward-confirmed reverse lookup of a client's
 * address, made of such queries (the session runs it on a thread of its
 * own pool and never waits for it longer than the queries may take).
 *
 * The cache (dnscache.c) is shared by the threads behind one mutex, never
 * held while a query is on the wire: two threads that miss the same name
 * together both ask. The settings live under the same mutex; each change
 * bumps a generation number that the threads compare with their
 * channel's.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <arpa/nameser.h>

#include <portcullis/filter.h>

#include "dns.h"
#include "log.h"

/* Before any dns_init(): the defaults of conf.c's [dns] rows, no cache. */
#define DNS_DEFAULT_TIMEOUT_MS 5000
#define DNS_DEFAULT_TRIES 3

/* The settings every thread's channel is made from. */
struct dns_settings {
	char *servers; /* c-ares CSV ("127.0.0.1:5353,[::1]:53"), NULL: the system's */
	int timeout_ms;
	unsigned tries;
	unsigned generation;
};

/* One thread's channel. */
struct dns_thread {
	ares_channel channel;
	unsigned generation;
	pid_t pid;
	int timeout_ms;
	unsigned tries;
	int nservers;
};

/* What a query's callback hands back to the waiting thread. */
struct dns_wait {
	bool done;
	int status;
	unsigned char *reply;
	int len;
};

static pthread_mutex_t dns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dns_settings dns_settings = {
	NULL, DNS_DEFAULT_TIMEOUT_MS, DNS_DEFAULT_TRIES, 1
};
static struct dnscache *dns_cache; /* NULL: no cache */

static pthread_once_t dns_once = PTHREAD_ONCE_INIT;
static pthread_key_t dns_key;
static int dns_library_status = -1;
/* Also a root for leak checkers: the key alone may not count as one. */
static __thread struct dns_thread *dns_self;
static __thread bool dns_loop_thread; /* answers from the cache only */

/* dns_now_ms - a monotonic clock, in milliseconds */
static unsigned long long dns_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000 + (unsigned long long)ts.tv_nsec / 1000000;
}

/* dns_thread_free - destroy a thread's channel */
static void dns_thread_free(void *arg)
{
	struct dns_thread *t = arg;

	if (!t)
		return;
	if (t->channel)
		ares_destroy(t->channel);
	free(t);
}

/* dns_library_init - c-ares' global state, and the thread key, once */
static void dns_library_init(void)
{
	dns_library_status = ares_library_init(ARES_LIB_INIT_ALL);
	if (dns_library_status != ARES_SUCCESS)
		log_error("dns: cannot initialise c-ares: %s",
			  ares_strerror(dns_library_status));
	else if (pthread_key_create(&dns_key, dns_thread_free) != 0)
		dns_library_status = ARES_ENOMEM;
}

/*
 * dns_channel_new - a channel for these settings: one try per server
 * (the rounds are ours), servers in their order, every reply passed on
 */
static int dns_channel_new(ares_channel *channel, const char *servers,
			   int timeout_ms, int *nservers)
{
	struct ares_options opts;
	struct ares_addr_port_node *list = NULL;
	int rc;

	memset(&opts, 0, sizeof(opts));
	opts.flags = ARES_FLAG_NOCHECKRESP;
	opts.timeout = timeout_ms;
	opts.tries = 1;
	rc = ares_init_options(channel, &opts,
			       ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
				       ARES_OPT_NOROTATE);
	if (rc != ARES_SUCCESS)
		return rc;
	if (servers && (rc = ares_set_servers_ports_csv(*channel, servers)) != ARES_SUCCESS) {
		ares_destroy(*channel);
		return rc;
	}
	*nservers = 0;
	if (ares_get_servers_ports(*channel, &list) == ARES_SUCCESS) {
		for (struct ares_addr_port_node *n = list; n; n = n->next)
			(*nservers)++;
		ares_free_data(list);
	}
	if (*nservers == 0)
		*nservers = 1;
	return ARES_SUCCESS;
}

/* dns_thread_channel - this thread's channel, made or remade as needed */
static struct dns_thread *dns_thread_channel(void)
{
	struct dns_thread *t = dns_self;
	char *servers = NULL;
	int timeout_ms, rc;
	unsigned tries, generation;

	pthread_mutex_lock(&dns_lock);
	generation = dns_settings.generation;
	if (t && t->generation == generation && t->pid == getpid()) {
		pthread_mutex_unlock(&dns_lock);
		return t;
	}
	if (dns_settings.servers && !(servers = strdup(dns_settings.servers))) {
		pthread_mutex_unlock(&dns_lock);
		return NULL;
	}
	timeout_ms = dns_settings.timeout_ms;
	tries = dns_settings.tries;
	pthread_mutex_unlock(&dns_lock);

	if (t && t->channel) {
		/* After a fork this closes the child's copies of the sockets only. */
		ares_destroy(t->channel);
		t->channel = NULL;
	}
	if (!t) {
		if (!(t = calloc(1, sizeof(*t)))) {
			free(servers);
			return NULL;
		}
		dns_self = t;
		pthread_setspecific(dns_key, t);
	}
	rc = dns_channel_new(&t->channel, servers, timeout_ms, &t->nservers);
	free(servers);
	if (rc != ARES_SUCCESS) {
		log_error("dns: cannot create a resolver channel: %s", ares_strerror(rc));
		t->channel = NULL;
		return NULL;
	}
	t->generation = generation;
	t->pid = getpid();
	t->timeout_ms = timeout_ms;
	t->tries = tries;
	return t;
}

/* dns_callback - a query ended: keep a copy of the reply */
static void dns_callback(void *arg, int status, int timeouts,
			 unsigned char *abuf, int alen)
{
	struct dns_wait *w = arg;

	w->done = true;
	w->status = status;
	if (status == ARES_SUCCESS && abuf && alen > 0) {
		w->reply = malloc((size_t)alen);
		if (w->reply) {
			memcpy(w->reply, abuf, (size_t)alen);
			w->len = alen;
		} else {
			w->status = ARES_ENOMEM;
		}
	}
}

/*
 * dns_wait - run the channel until the query's callback fired. c-ares
 * keeps its own timeouts; the deadline is a guard against a bug that
 * would leave us polling for ever.
 */
static void dns_wait(struct dns_thread *t, struct dns_wait *w,
		     unsigned long long deadline)
{
	while (!w->done) {
		ares_socket_t socks[ARES_GETSOCK_MAXNUM];
		struct pollfd pfd[ARES_GETSOCK_MAXNUM];
		struct timeval tv, *tvp;
		int bits = ares_getsock(t->channel, socks, ARES_GETSOCK_MAXNUM);
		unsigned long long now = dns_now_ms();
		nfds_t n = 0;
		int ms, rc;

		if (now >= deadline) {
			log_warning("dns: a query outlived its deadline: cancelled");
			ares_cancel(t->channel);
			return;
		}
		for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
			short events = 0;

			/* Not ARES_GETSOCK_WRITABLE(): it shifts 1 into the sign bit. */
			if ((unsigned)bits & (1u << i))
				events |= POLLIN;
			if ((unsigned)bits & (1u << (i + ARES_GETSOCK_MAXNUM)))
				events |= POLLOUT;
			if (!events)
				continue;
			pfd[n].fd = socks[i];
			pfd[n].events = events;
			pfd[n].revents = 0;
			n++;
		}
		tvp = ares_timeout(t->channel, NULL, &tv);
		ms = tvp ? (int)(tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000) : 1000;
		if ((unsigned long long)ms > deadline - now)
			ms = (int)(deadline - now);
		rc = poll(pfd, n, ms);
		if (rc < 0 && errno != EINTR) {
			log_error("dns: poll: %s", strerror(errno));
			ares_cancel(t->channel);
			return;
		}
		if (rc <= 0) {
			/* Time for c-ares to give up on a server, or a signal. */
			ares_process_fd(t->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
			continue;
		}
		for (nfds_t i = 0; i < n; i++) {
			short r = pfd[i].revents;
			ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

			if (r & (POLLIN | POLLERR | POLLHUP))
				rfd = pfd[i].fd;
			if (r & (POLLOUT | POLLERR | POLLHUP))
				wfd = pfd[i].fd;
			if (rfd != ARES_SOCKET_BAD || wfd != ARES_SOCKET_BAD)
				ares_process_fd(t->channel, rfd, wfd);
		}
	}
}

/* dns_ask - ask the servers, round after round; a reply or a PC_DNS_* */
static int dns_ask(struct dns_thread *t, const char *name, int type,
		   unsigned char **reply)
{
	unsigned char *query;
	int qlen, rc;

	rc = ares_create_query(name, ns_c_in, type, 0, 1, &query, &qlen, 0);
	if (rc != ARES_SUCCESS) {
		/* A label over 63 octets, an empty one, a .onion name (RFC 7686). */
		log_debug("dns: %s: cannot ask: %s", name, ares_strerror(rc));
		return PC_DNS_ERROR;
	}
	for (unsigned round = 0; round < t->tries; round++) {
		struct dns_wait w = { false, ARES_ETIMEOUT, NULL, 0 };
		unsigned short id;
		/* A silent server costs timeout; a truncated reply, twice that. */
		unsigned long long deadline =
			dns_now_ms() + 2ULL * (unsigned)t->timeout_ms * (unsigned)t->nservers + 1000;

		if (getrandom(&id, sizeof(id), 0) != sizeof(id))
			id = (unsigned short)(dns_now_ms() ^ (unsigned long long)getpid());
		query[0] = (unsigned char)(id >> 8);
		query[1] = (unsigned char)id;
		ares_send(t->channel, query, qlen, dns_callback, &w);
		dns_wait(t, &w, deadline);
		if (w.status == ARES_SUCCESS) {
			ares_free_string(query);
			*reply = w.reply;
			return w.len;
		}
		free(w.reply);
		/* No server answered (silent or unreachable): another round. */
		if (w.status == ARES_ETIMEOUT || w.status == ARES_ECONNREFUSED ||
		    w.status == ARES_ECANCELLED)
			continue;
		log_debug("dns: %s/%d: %s", name, type, ares_strerror(w.status));
		ares_free_string(query);
		return PC_DNS_ERROR;
	}
	ares_free_string(query);
	log_debug("dns: %s/%d: no reply after %u tries", name, type, t->tries);
	return PC_DNS_TIMEOUT;
}

/* dns_cache_only - whether this thread may wait for servers */
void dns_cache_only(bool on)
{
	dns_loop_thread = on;
}

/* pc_dns_query - a query through the cache and the configured servers */
int pc_dns_query(const char *name, int type, unsigned char *answer, size_t len)
{
	struct dns_thread *t;
	unsigned char *reply = NULL;
	int n;

	if (!name || type < 0 || type > 65535 || (len && !answer))
		return PC_DNS_ERROR;
	pthread_once(&dns_once, dns_library_init);
	if (dns_library_status != ARES_SUCCESS)
		return PC_DNS_ERROR;

	pthread_mutex_lock(&dns_lock);
	n = dns_cache ? dnscache_get(dns_cache, name, type, dns_now_ms(), answer, len) : -1;
	pthread_mutex_unlock(&dns_lock);
	if (n >= 0)
		return n;
	if (dns_loop_thread)
		return PC_DNS_WOULDBLOCK;

	if (!(t = dns_thread_channel()))
		return PC_DNS_ERROR;
	n = dns_ask(t, name, type, &reply);
	if (n < 0)
		return n;
	if (len)
		memcpy(answer, reply, (size_t)n < len ? (size_t)n : len);
	pthread_mutex_lock(&dns_lock);
	/* A reload may have come meanwhile: this reply is from the old servers. */
	if (dns_cache && t->generation == dns_settings.generation)
		dnscache_put(dns_cache, name, type, reply, (size_t)n, dns_now_ms());
	pthread_mutex_unlock(&dns_lock);
	free(reply);
	return n;
}

/* dns_servers_csv - the configured servers as c-ares reads them, or NULL */
static char *dns_servers_csv(const struct conf *conf, bool *failed)
{
	char *csv = NULL;
	size_t size = 0;
	FILE *f;

	*failed = false;
	if (conf->ndns_servers == 0)
		return NULL;
	if (!(f = open_memstream(&csv, &size))) {
		*failed = true;
		return NULL;
	}
	for (size_t i = 0; i < conf->ndns_servers; i++) {
		const struct conf_addr *a = &conf->dns_servers[i];
		fprintf(f, strchr(a->host, ':') ? "%s[%s]:%s" : "%s%s:%s", i ? "," : "",
			a->host, a->port);
	}
	if (fclose(f) != 0) {
		free(csv);
		*failed = true;
		return NULL;
	}
	return csv;
}

/* dns_init - apply the [dns] section; the cache starts empty */
int dns_init(const struct conf *conf)
{
	struct dnscache *cache = NULL, *old_cache;
	ares_channel check;
	char *servers, *old_servers;
	bool failed;
	int rc, nservers;

	pthread_once(&dns_once, dns_library_init);
	if (dns_library_status != ARES_SUCCESS)
		return -1;
	servers = dns_servers_csv(conf, &failed);
	if (failed) {
		log_error("dns: out of memory");
		return -1;
	}
	/* Try the settings once here, so a bad one stops the start, not a filter. */
	rc = dns_channel_new(&check, servers, (int)conf->dns_timeout_ms, &nservers);
	if (rc != ARES_SUCCESS) {
		log_error("dns: servers %s: %s", servers ? servers : "(system)",
			  ares_strerror(rc));
		free(servers);
		return -1;
	}
	ares_destroy(check);
	if (conf->dns_cache_size &&
	    !(cache = dnscache_new(conf->dns_cache_size, conf->dns_max_ttl,
				   conf->dns_negative_ttl))) {
		log_error("dns: out of memory");
		free(servers);
		return -1;
	}

	pthread_mutex_lock(&dns_lock);
	old_servers = dns_settings.servers;
	old_cache = dns_cache;
	dns_settings.servers = servers;
	dns_settings.timeout_ms = (int)conf->dns_timeout_ms;
	dns_settings.tries = 1 + conf->dns_retries;
	dns_settings.generation++;
	dns_cache = cache;
	pthread_mutex_unlock(&dns_lock);
	free(old_servers);
	dnscache_free(old_cache);

	log_debug("dns: servers %s, timeout %u ms, %u tries, cache of %u entries",
		  servers ? servers : "(system)", conf->dns_timeout_ms,
		  1 + conf->dns_retries, conf->dns_cache_size);
	return 0;
}

/* dns_stats - the cache's counters */
bool dns_stats(struct dnscache_stats *stats)
{
	bool on;

	memset(stats, 0, sizeof(*stats));
	pthread_mutex_lock(&dns_lock);
	if ((on = dns_cache != NULL))
		dnscache_stats(dns_cache, stats);
	pthread_mutex_unlock(&dns_lock);
	return on;
}

/* dns_thread_done - free this thread's channel */
void dns_thread_done(void)
{
	struct dns_thread *t = dns_self;

	if (!t)
		return;
	dns_self = NULL;
	pthread_setspecific(dns_key, NULL);
	dns_thread_free(t);
}

/* dns_shutdown - free the cache, the settings and this thread's channel */
void dns_shutdown(void)
{
	dns_thread_done();
	pthread_mutex_lock(&dns_lock);
	dnscache_free(dns_cache);
	dns_cache = NULL;
	free(dns_settings.servers);
	dns_settings.servers = NULL;
	dns_settings.generation++;
	pthread_mutex_unlock(&dns_lock);
}

/* dns_reverse_name - the in-addr.arpa or ip6.arpa name of addr; false if not numeric */
static bool dns_reverse_name(const char *addr, int *family, unsigned char *bin,
			     char *out, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	size_t w = 0;

	if (inet_pton(AF_INET, addr, bin) == 1) {
		*family = AF_INET;
		snprintf(out, cap, "%u.%u.%u.%u.in-addr.arpa", bin[3], bin[2], bin[1], bin[0]);
		return true;
	}
	if (inet_pton(AF_INET6, addr, bin) != 1 || cap < 64 + sizeof("ip6.arpa"))
		return false;
	*family = AF_INET6;
	for (int i = 15; i >= 0; i--) {
		out[w++] = hex[bin[i] & 15];
		out[w++] = '.';
		out[w++] = hex[bin[i] >> 4];
		out[w++] = '.';
	}
	memcpy(out + w, "ip6.arpa", sizeof("ip6.arpa"));
	return true;
}

/* dns_rcode - the RCODE of a reply (RFC 1035 4.1.1), or -1 if it is too short */
static int dns_rcode(const unsigned char *reply, int len)
{
	return len >= 12 ? reply[3] & 0x0f : -1;
}

/*
 * dns_hostname_ok - whether a PTR target may be a client's name: letters,
 * digits, hyphens and dots, labels of 1 to 63, at most 253 in all (a
 * name that is not one would go to headers and XCLIENT: Postfix too
 * takes such a client as unknown)
 */
static bool dns_hostname_ok(const char *s)
{
	size_t label = 0, len = strlen(s);

	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			   (c >= '0' && c <= '9') || c == '-' || c == '_') {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return true;
}

/*
 * dns_confirms - whether name's A (AF_INET) or AAAA records hold bin:
 * 1 yes, 0 no, -1 the query failed (timeout, SERVFAIL)
 */
static int dns_confirms(const char *name, int family, const unsigned char *bin)
{
	unsigned char reply[4096];
	int n = pc_dns_query(name, family == AF_INET ? ns_t_a : ns_t_aaaa, reply, sizeof(reply));
	int rcode = dns_rcode(reply, n < (int)sizeof(reply) ? n : (int)sizeof(reply));

	if (n < 0 || n > (int)sizeof(reply) || (rcode != ns_r_noerror && rcode != ns_r_nxdomain))
		return -1;
	if (rcode == ns_r_nxdomain)
		return 0;
	if (family == AF_INET) {
		struct ares_addrttl a[16];
		int na = 16;
		if (ares_parse_a_reply(reply, n, NULL, a, &na) != ARES_SUCCESS)
			return 0;
		for (int i = 0; i < na; i++)
			if (memcmp(&a[i].ipaddr, bin, 4) == 0)
				return 1;
	} else {
		struct ares_addr6ttl a[16];
		int na = 16;
		if (ares_parse_aaaa_reply(reply, n, NULL, a, &na) != ARES_SUCCESS)
			return 0;
		for (int i = 0; i < na; i++)
			if (memcmp(&a[i].ip6addr, bin, 16) == 0)
				return 1;
	}
	return 0;
}

/* dns_client_name - the forward-confirmed reverse lookup of addr */
enum dns_name_status dns_client_name(const char *addr, char *name, size_t namecap,
				     char *ptr, size_t ptrcap)
{
	unsigned char reply[4096], bin[16];
	char rev[80];
	const char *tried[DNS_NAME_MAX_TRIED];
	struct hostent *host = NULL;
	int family, n, rcode, ntried = 0;
	bool failed = false;
	enum dns_name_status st = DNS_NAME_NONE;

	name[0] = ptr[0] = '\0';
	if (!dns_reverse_name(addr, &family, bin, rev, sizeof(rev)))
		return DNS_NAME_NONE;
	n = pc_dns_query(rev, ns_t_ptr, reply, sizeof(reply));
	if (n < 0 || n > (int)sizeof(reply))
		return DNS_NAME_TEMPFAIL; /* no reply, or one too big for us to read */
	rcode = dns_rcode(reply, n);
	if (rcode == ns_r_nxdomain)
		return DNS_NAME_NONE;
	if (rcode != ns_r_noerror)
		return DNS_NAME_TEMPFAIL;
	/* c-ares follows the CNAME of a classless delegation (RFC 2317). */
	if (ares_parse_ptr_reply(reply, n, bin, family == AF_INET ? 4 : 16, family,
				 &host) != ARES_SUCCESS || !host)
		return DNS_NAME_NONE; /* NODATA, or nothing usable */
	if (host->h_name && dns_hostname_ok(host->h_name))
		tried[ntried++] = host->h_name;
	/* c-ares lists every PTR name among the aliases, the first one too. */
	for (char **a = host->h_aliases; a && *a && ntried < DNS_NAME_MAX_TRIED; a++) {
		bool seen = false;
		for (int i = 0; i < ntried; i++)
			seen |= strcasecmp(tried[i], *a) == 0;
		if (!seen && dns_hostname_ok(*a))
			tried[ntried++] = *a;
	}
	if (ntried > 0) {
		snprintf(ptr, ptrcap, "%s", tried[0]);
		st = DNS_NAME_UNCONFIRMED;
	}
	for (int i = 0; i < ntried; i++) {
		int c = dns_confirms(tried[i], family, bin);
		if (c == 1) {
			snprintf(name, namecap, "%s", tried[i]);
			snprintf(ptr, ptrcap, "%s", tried[i]);
			st = DNS_NAME_CONFIRMED;
			break;
		}
		failed |= c < 0;
	}
	ares_free_hostent(host);
	if (st == DNS_NAME_UNCONFIRMED && failed)
		st = DNS_NAME_TEMPFAIL;
	return st;
}
