/*
 * pace.c - an open-loop SMTP load generator at a fixed rate
 *
 * smtp-source sends as fast as its sessions allow, which measures the
 * maximum; this one starts transactions on a schedule (one every
 * 1/rate seconds, whether the earlier ones finished or not), so it
 * measures what a client sees at a given load: the latency of each
 * transaction and how many were accepted. The benchmark runner
 * (tests/bench/run-bench) uses it for the added latency at half the
 * maximum rate and for the soak.
 *
 * Each transaction is one connection, as smtp-source makes by default:
 * greeting, HELO, MAIL, RCPT, DATA, the message (a file, sent with CRLF
 * line ends and dot-stuffed, as smtp-source -F sends it), ".", QUIT.
 * Its latency runs from connect() to the reply to ".". Only 127.0.0.1
 * and ::1 are accepted as targets.
 *
 * Usage: pace -r RATE -n COUNT -T SECONDS -F FILE [-f FROM] [-t TO]
 *             [-M HELO] [-c MAXOPEN] [-6] PORT
 * It stops after COUNT transactions or SECONDS, whichever comes first
 * (unfinished ones are counted as such), and prints one JSON object:
 * started, accepted (250 to "."), rejected (any other reply), failed
 * (connection refused, reset, closed or timed out; failed_connect,
 * failed_closed and failed_timeout say which), unfinished, late
 * (started more than 10 ms after their time because MAXOPEN were open),
 * elapsed seconds, and latency percentiles in microseconds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PACE_IO_TIMEOUT_US (30 * 1000000LL)
#define PACE_LATE_US 10000

enum pace_state {
	PACE_CONNECT,
	PACE_GREETING,
	PACE_HELO,
	PACE_MAIL,
	PACE_RCPT,
	PACE_DATA,
	PACE_BODY,
	PACE_END,
	PACE_QUIT,
};

struct pace_tx {
	int fd;
	enum pace_state state;
	int64_t start_us;
	int64_t last_us;
	char in[4096];
	size_t inlen;
	const char *out; /* what is being written */
	size_t outlen, outoff;
	struct pace_tx *next_free;
};

static const char *pace_from = "bench@bench.test";
static const char *pace_to = "bench@example.test";
static const char *pace_helo = "client.bench.test";
static char *pace_body; /* the dot-stuffed message with ".\r\n" */
static size_t pace_bodylen;
static char pace_cmd[PACE_QUIT + 1][512];

static uint64_t n_started, n_accepted, n_rejected, n_failed, n_late;
/* why transactions failed: connect refused, closed or reset, timed out */
static uint64_t f_connect, f_closed, f_timeout;
static int64_t *pace_lat;
static size_t pace_nlat;

/* pace_now - monotonic microseconds */
static int64_t pace_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* pace_load - read FILE, make CRLF line ends, dot-stuff, add ".\r\n" */
static int pace_load(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *line = NULL;
	size_t cap = 0, size = 1 << 16;
	ssize_t n;

	if (!f) {
		perror(path);
		return -1;
	}
	pace_body = malloc(size);
	pace_bodylen = 0;
	while ((n = getline(&line, &cap, f)) >= 0) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			n--;
		while (pace_bodylen + (size_t)n + 4 > size) {
			size *= 2;
			pace_body = realloc(pace_body, size);
		}
		if (n > 0 && line[0] == '.')
			pace_body[pace_bodylen++] = '.';
		memcpy(pace_body + pace_bodylen, line, (size_t)n);
		pace_bodylen += (size_t)n;
		pace_body[pace_bodylen++] = '\r';
		pace_body[pace_bodylen++] = '\n';
	}
	free(line);
	fclose(f);
	if (pace_bodylen + 3 > size)
		pace_body = realloc(pace_body, pace_bodylen + 3);
	memcpy(pace_body + pace_bodylen, ".\r\n", 3);
	pace_bodylen += 3;
	return 0;
}

/* pace_reply - the code of the complete reply in tx->in, 0 if not yet */
static int pace_reply(struct pace_tx *tx)
{
	size_t start = 0;

	for (size_t i = 0; i < tx->inlen; i++) {
		if (tx->in[i] != '\n')
			continue;
		/* a line "NNN " or "NNN" ends the reply; "NNN-" continues it */
		size_t len = i - start;
		if (len >= 3 && (len == 3 || tx->in[start + 3] != '-')) {
			int code = atoi(tx->in + start);
			memmove(tx->in, tx->in + i + 1, tx->inlen - i - 1);
			tx->inlen -= i + 1;
			return code > 0 ? code : -1;
		}
		start = i + 1;
	}
	if (tx->inlen == sizeof(tx->in)) {
		/* an endless continuation: drop what was read so far */
		tx->inlen = 0;
	}
	return 0;
}

/* pace_close - end a transaction and free its slot */
static void pace_close(int ep, struct pace_tx *tx, struct pace_tx **freelist,
		       size_t *open)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, tx->fd, NULL);
	close(tx->fd);
	tx->fd = -1;
	tx->next_free = *freelist;
	*freelist = tx;
	(*open)--;
}

/* pace_write - write what is pending; 1 done, 0 more, -1 error */
static int pace_write(int ep, struct pace_tx *tx)
{
	while (tx->outoff < tx->outlen) {
		ssize_t n = write(tx->fd, tx->out + tx->outoff, tx->outlen - tx->outoff);
		if (n < 0) {
			if (errno == EAGAIN) {
				struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = tx };
				epoll_ctl(ep, EPOLL_CTL_MOD, tx->fd, &ev);
				return 0;
			}
			return -1;
		}
		tx->outoff += (size_t)n;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = tx };
	epoll_ctl(ep, EPOLL_CTL_MOD, tx->fd, &ev);
	return 1;
}

/* pace_send - start writing s (static) and move to state next */
static int pace_send(int ep, struct pace_tx *tx, const char *s, size_t len,
		     enum pace_state next)
{
	tx->out = s;
	tx->outlen = len;
	tx->outoff = 0;
	tx->state = next;
	return pace_write(ep, tx) < 0 ? -1 : 0;
}

/*
 * pace_step - a reply arrived (code) in tx's state: send what follows.
 * Returns 1 when the transaction is over, 0 to go on.
 */
static int pace_step(int ep, struct pace_tx *tx, int code)
{
	enum pace_state s = tx->state;
	int want = s == PACE_GREETING ? 220 : s == PACE_DATA ? 354 : s == PACE_QUIT ? 221 : 250;

	if (s == PACE_QUIT)
		return 1;
	if (code != want) {
		if (s == PACE_END)
			pace_lat[pace_nlat++] = pace_now() - tx->start_us;
		n_rejected++;
		return 1;
	}
	switch (s) {
	case PACE_GREETING:
	case PACE_HELO:
	case PACE_MAIL:
	case PACE_RCPT:
		return pace_send(ep, tx, pace_cmd[s + 1], strlen(pace_cmd[s + 1]), s + 1) < 0 ? -1 : 0;
	case PACE_DATA:
		return pace_send(ep, tx, pace_body, pace_bodylen, PACE_END) < 0 ? -1 : 0;
	case PACE_END:
		pace_lat[pace_nlat++] = pace_now() - tx->start_us;
		n_accepted++;
		return pace_send(ep, tx, "QUIT\r\n", 6, PACE_QUIT) < 0 ? 1 : 0;
	default:
		return -1;
	}
}

/* pace_cmp - qsort order of latencies */
static int pace_cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* pace_pct - the p-th percentile of the sorted latencies */
static int64_t pace_pct(double p)
{
	if (pace_nlat == 0)
		return -1;
	size_t i = (size_t)(p / 100.0 * (double)(pace_nlat - 1) + 0.5);
	return pace_lat[i];
}

static void pace_usage(void)
{
	fprintf(stderr, "usage: pace -r RATE -n COUNT -T SECONDS -F FILE [-f FROM] [-t TO] "
			"[-M HELO] [-c MAXOPEN] [-6] PORT\n");
	exit(2);
}

int main(int argc, char **argv)
{
	double rate = 0, seconds = 0;
	uint64_t count = 0;
	size_t maxopen = 2000, open = 0;
	const char *file = NULL;
	bool six = false;
	int c;

	while ((c = getopt(argc, argv, "r:n:T:F:f:t:M:c:6")) != -1) {
		switch (c) {
		case 'r': rate = atof(optarg); break;
		case 'n': count = strtoull(optarg, NULL, 10); break;
		case 'T': seconds = atof(optarg); break;
		case 'F': file = optarg; break;
		case 'f': pace_from = optarg; break;
		case 't': pace_to = optarg; break;
		case 'M': pace_helo = optarg; break;
		case 'c': maxopen = strtoul(optarg, NULL, 10); break;
		case '6': six = true; break;
		default: pace_usage();
		}
	}
	if (optind != argc - 1 || rate <= 0 || count == 0 || seconds <= 0 || !file || maxopen == 0)
		pace_usage();
	int port = atoi(argv[optind]);
	if (port <= 0 || port > 65535)
		pace_usage();
	if (pace_load(file) < 0)
		return 2;
	snprintf(pace_cmd[PACE_HELO], sizeof(pace_cmd[0]), "HELO %s\r\n", pace_helo);
	snprintf(pace_cmd[PACE_MAIL], sizeof(pace_cmd[0]), "MAIL FROM:<%s>\r\n", pace_from);
	snprintf(pace_cmd[PACE_RCPT], sizeof(pace_cmd[0]), "RCPT TO:<%s>\r\n", pace_to);
	snprintf(pace_cmd[PACE_DATA], sizeof(pace_cmd[0]), "DATA\r\n");

	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < maxopen + 64) {
		rl.rlim_cur = rl.rlim_max < maxopen + 64 ? rl.rlim_max : maxopen + 64;
		setrlimit(RLIMIT_NOFILE, &rl);
		if (rl.rlim_cur < maxopen + 64)
			maxopen = rl.rlim_cur > 128 ? rl.rlim_cur - 64 : 64;
	}

	/* loopback only: this tool is never pointed elsewhere */
	struct sockaddr_storage sa = { 0 };
	socklen_t salen;
	if (six) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&sa;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		s6->sin6_addr = in6addr_loopback;
		salen = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&sa;
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		salen = sizeof(*s4);
	}

	pace_lat = malloc(count * sizeof(*pace_lat));
	struct pace_tx *txs = calloc(maxopen, sizeof(*txs));
	struct pace_tx *freelist = NULL;
	if (!pace_lat || !txs) {
		fprintf(stderr, "pace: out of memory\n");
		return 2;
	}
	for (size_t i = 0; i < maxopen; i++) {
		txs[i].fd = -1;
		txs[i].next_free = freelist;
		freelist = &txs[i];
	}
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event evs[256];
	int64_t t0 = pace_now(), deadline = t0 + (int64_t)(seconds * 1e6);
	double interval = 1e6 / rate;
	int64_t last_sweep = t0;

	for (;;) {
		int64_t now = pace_now();
		/* start every transaction whose time has come */
		while (n_started < count && freelist &&
		       t0 + (int64_t)((double)n_started * interval) <= now && now < deadline) {
			struct pace_tx *tx = freelist;
			int64_t due = t0 + (int64_t)((double)n_started * interval);
			freelist = tx->next_free;
			open++;
			n_started++;
			if (now - due > PACE_LATE_US)
				n_late++;
			tx->fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			tx->inlen = 0;
			tx->out = NULL;
			tx->outlen = tx->outoff = 0;
			tx->start_us = tx->last_us = now;
			tx->state = PACE_CONNECT;
			if (tx->fd < 0) {
				n_failed++;
				tx->next_free = freelist;
				freelist = tx;
				open--;
				continue;
			}
			int one = 1;
			setsockopt(tx->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN, .data.ptr = tx };
			epoll_ctl(ep, EPOLL_CTL_ADD, tx->fd, &ev);
			if (connect(tx->fd, (struct sockaddr *)&sa, salen) == 0)
				tx->state = PACE_GREETING;
			else if (errno != EINPROGRESS) {
				n_failed++;
				f_connect++;
				pace_close(ep, tx, &freelist, &open);
			}
		}
		if ((n_started >= count || now >= deadline) && open == 0)
			break;
		if (now >= deadline + PACE_IO_TIMEOUT_US)
			break;

		int timeout = 100;
		if (n_started < count && now < deadline) {
			int64_t next = t0 + (int64_t)((double)n_started * interval);
			int64_t wait = next - now;
			timeout = wait <= 0 ? 0 : (int)((wait + 999) / 1000);
			if (!freelist)
				timeout = 100;
		}
		int n = epoll_wait(ep, evs, 256, timeout > 100 ? 100 : timeout);
		now = pace_now();
		for (int i = 0; i < n; i++) {
			struct pace_tx *tx = evs[i].data.ptr;
			int rc = 0;
			if (tx->fd < 0)
				continue;
			tx->last_us = now;
			if (tx->state == PACE_CONNECT) {
				int err = 0;
				socklen_t len = sizeof(err);
				getsockopt(tx->fd, SOL_SOCKET, SO_ERROR, &err, &len);
				if (err) {
					n_failed++;
					f_connect++;
					pace_close(ep, tx, &freelist, &open);
					continue;
				}
				tx->state = PACE_GREETING;
				struct epoll_event ev = { .events = EPOLLIN, .data.ptr = tx };
				epoll_ctl(ep, EPOLL_CTL_MOD, tx->fd, &ev);
			}
			if ((evs[i].events & EPOLLOUT) && tx->outoff < tx->outlen) {
				if (pace_write(ep, tx) < 0)
					rc = -1;
			}
			if (rc == 0 && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
				ssize_t r = read(tx->fd, tx->in + tx->inlen, sizeof(tx->in) - tx->inlen);
				if (r <= 0 && !(r < 0 && errno == EAGAIN)) {
					rc = tx->state == PACE_QUIT ? 1 : -1;
				} else if (r > 0) {
					tx->inlen += (size_t)r;
					int code;
					while (rc == 0 && (code = pace_reply(tx)) != 0)
						rc = pace_step(ep, tx, code);
				}
			}
			if (rc < 0) {
				if (tx->state != PACE_QUIT) {
					n_failed++;
					f_closed++;
				}
				pace_close(ep, tx, &freelist, &open);
			} else if (rc > 0) {
				pace_close(ep, tx, &freelist, &open);
			}
		}
		/* a transaction silent for too long has failed */
		if (now - last_sweep > 1000000) {
			last_sweep = now;
			for (size_t i = 0; i < maxopen; i++) {
				if (txs[i].fd >= 0 && now - txs[i].last_us > PACE_IO_TIMEOUT_US) {
					if (txs[i].state != PACE_QUIT) {
						n_failed++;
						f_timeout++;
					}
					pace_close(ep, &txs[i], &freelist, &open);
				}
			}
		}
	}
	int64_t elapsed = pace_now() - t0;
	uint64_t unfinished = 0;
	for (size_t i = 0; i < maxopen; i++) {
		if (txs[i].fd >= 0) {
			if (txs[i].state != PACE_QUIT)
				unfinished++;
			close(txs[i].fd);
		}
	}
	qsort(pace_lat, pace_nlat, sizeof(*pace_lat), pace_cmp);
	double mean = 0;
	for (size_t i = 0; i < pace_nlat; i++)
		mean += (double)pace_lat[i];
	if (pace_nlat)
		mean /= (double)pace_nlat;
	printf("{\"rate\": %.3f, \"count\": %llu, \"started\": %llu, \"accepted\": %llu, "
	       "\"rejected\": %llu, \"failed\": %llu, \"failed_connect\": %llu, "
	       "\"failed_closed\": %llu, \"failed_timeout\": %llu, \"unfinished\": %llu, \"late\": %llu, "
	       "\"elapsed\": %.6f, \"latency_us\": {\"p50\": %lld, \"p90\": %lld, \"p99\": %lld, "
	       "\"max\": %lld, \"mean\": %.1f, \"n\": %zu}}\n",
	       rate, (unsigned long long)count, (unsigned long long)n_started,
	       (unsigned long long)n_accepted, (unsigned long long)n_rejected,
	       (unsigned long long)n_failed, (unsigned long long)f_connect,
	       (unsigned long long)f_closed, (unsigned long long)f_timeout, (unsigned long long)unfinished,
	       (unsigned long long)n_late, (double)elapsed / 1e6, (long long)pace_pct(50),
	       (long long)pace_pct(90), (long long)pace_pct(99),
	       (long long)(pace_nlat ? pace_lat[pace_nlat - 1] : -1), mean, pace_nlat);
	return 0;
}
