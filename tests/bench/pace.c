/*
 * pace.c - an SMTP load generator: open loop at a fixed rate, closed loop
 * with a fixed number of sessions, STARTTLS, and idle TLS connections
 *
 * smtp-source sends as fast as its sessions allow, which measures the
 * maximum; this one starts transactions on a schedule (one every
 * 1/rate seconds, whether the earlier ones finished or not), so it
 * measures what a client sees at a given load: the latency of each
 * transaction and how many were accepted. The benchmark runner
 * (tests/bench/run-bench) uses it for the added latency at half the
 * maximum rate and for the soak. With -s it keeps SESSIONS transactions
 * open instead, starting the next as soon as one ends (what smtp-source
 * -s does), which run-bench uses for the STARTTLS throughput that
 * smtp-source cannot measure.
 *
 * Each transaction is one connection, as smtp-source makes by default:
 * greeting, HELO, MAIL, RCPT, DATA, the message (a file, sent with CRLF
 * line ends and dot-stuffed, as smtp-source -F sends it), ".", QUIT.
 * Its latency runs from connect() to the reply to ".". Only 127.0.0.1
 * and ::1 are accepted as targets.
 *
 * With -S the transaction is greeting, EHLO, STARTTLS, the TLS handshake
 * (OpenSSL, non-blocking in the same event loop), EHLO, MAIL ... QUIT,
 * with a TLS session of its own for every connection (a full handshake);
 * -R resumes instead: every handshake offers the session the server gave
 * the previous connection of the same slot (a TLS 1.3 ticket or a TLS 1.2
 * session; a slot's first connection the latest any slot got), so full and
 * resumed handshakes are measured apart; the output counts which were
 * which. One session per slot: OpenSSL's TLS 1.3 client keeps state of
 * its own in the session it resumes from, and one session shared by
 * concurrent connections made a quarter of them full handshakes at 10
 * sessions (399 of 400 resumed at 1).
 * -C CAFILE verifies the server's certificate against it (a handshake
 * that fails to verify fails the transaction); -N NAME sends SNI.
 *
 * -A USER:PASSWORD logs in after the (last) EHLO with AUTH PLAIN and the
 * credentials as its initial response (RFC 4954 section 4, one round
 * trip), as a submission client does; a reply other than 235 fails the
 * transaction (failed_auth). -X sends, after the (last) EHLO and the
 * login, XFORWARD NAME=client.example ADDR=192.0.2.7 PROTO=ESMTP
 * HELO=client.example (Postfix's XFORWARD_README) before each MAIL, as
 * Postfix's smtpd_proxy_filter does, when the EHLO reply offers
 * XFORWARD (otherwise the transaction goes on without it and counts in
 * xforward_not_offered); a reply other than 250 fails it
 * (failed_xforward). Both make the plain session's greeting EHLO.
 *
 * With -i N (and -S) it opens N connections at RATE a second, takes each
 * through EHLO, STARTTLS, the handshake and EHLO, and holds it idle:
 * it prints one JSON line when every connection is held or failed, and
 * closes them all when its standard input ends or SECONDS pass. The
 * runner measures the server's memory in between.
 *
 * Usage: pace -r RATE -n COUNT -T SECONDS -F FILE [-f FROM] [-t TO]
 *             [-M HELO] [-c MAXOPEN] [-6] [-S [-R] [-C CAFILE] [-N NAME]]
 *             [-A USER:PASSWORD] [-X] PORT
 *        pace -s SESSIONS -n COUNT -T SECONDS -F FILE [...] PORT
 *        pace -i N -r RATE -T SECONDS -S [-R] [-C CAFILE] [-N NAME] PORT
 * It stops after COUNT transactions or SECONDS, whichever comes first, or
 * at SIGTERM (unfinished ones are counted as such), and prints one JSON
 * object:
 * started, accepted (250 to "."), rejected (any other reply), failed
 * (connection refused, reset, closed, timed out, a failed handshake, a
 * refused AUTH or XFORWARD; failed_connect, failed_closed,
 * failed_timeout, failed_tls, failed_auth and failed_xforward say which;
 * with -X also xforward_not_offered), unfinished, late (started more than 10 ms after their time
 * because MAXOPEN were open; always 0 with -s), elapsed seconds, latency
 * percentiles in microseconds, and with -S the handshakes: full,
 * resumed, and the protocol and cipher of the last one.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PACE_IO_TIMEOUT_US (30 * 1000000LL)
#define PACE_LATE_US 10000

/* The states in the order a transaction goes through them; pace_cmd[s] is
 * the command sent on entering s. */
enum pace_state {
	PACE_CONNECT,
	PACE_GREETING,
	PACE_HELO, /* HELO, or with -S the EHLO before STARTTLS */
	PACE_STARTTLS,
	PACE_HANDSHAKE,
	PACE_EHLO, /* EHLO again, under TLS */
	PACE_AUTH, /* -A: AUTH PLAIN with the initial response */
	PACE_XFORWARD, /* -X: before each MAIL, when offered */
	PACE_MAIL,
	PACE_RCPT,
	PACE_DATA,
	PACE_END,
	PACE_QUIT,
	PACE_IDLE, /* -i: held after the last EHLO */
};

/* Why a transaction failed: the return of the I/O functions below */
enum pace_fail {
	PACE_FAIL_CLOSED = -1, /* closed, reset, or a reply out of turn */
	PACE_FAIL_TLS = -2,    /* the handshake failed */
	PACE_FAIL_CONNECT = -3, /* refused */
	PACE_FAIL_AUTH = -4,    /* AUTH got another reply than 235 */
	PACE_FAIL_XFORWARD = -5, /* XFORWARD got another reply than 250 */
};

struct pace_tx {
	int fd;
	SSL *ssl;
	bool offered; /* -R offered a session */
	SSL_SESSION *session; /* -R: the last one a connection of this slot got */
	enum pace_state state;
	bool xforward; /* the EHLO reply being read offers XFORWARD */
	uint32_t events; /* what epoll watches for fd */
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
/* XFORWARD's client: a documentation address (RFC 5737) and a name of
 * its own, so a record shows whose identity it carries */
static const char pace_xforward_cmd[] =
	"XFORWARD NAME=client.example ADDR=192.0.2.7 PROTO=ESMTP HELO=client.example\r\n";

static SSL_CTX *pace_tls;            /* -S: the client context */
static bool pace_resume;             /* -R: offer the last session */
static SSL_SESSION *pace_session;    /* -R: the latest session any slot got */
static const char *pace_sni;         /* -N */
static bool pace_idle;               /* -i */
static bool pace_auth;               /* -A */
static bool pace_xforward;           /* -X */
static char pace_tls_version[32], pace_tls_cipher[64], pace_tls_key[32], pace_tls_group[32];

static uint64_t n_started, n_accepted, n_rejected, n_failed, n_late;
/* why transactions failed: connect refused, closed or reset, timed out,
 * a failed handshake */
static uint64_t f_connect, f_closed, f_timeout, f_tls, f_auth, f_xforward;
static uint64_t n_xforward_not_offered; /* -X: EHLO did not offer it */
static uint64_t n_tls_full, n_tls_resumed;
static uint64_t n_held; /* -i: connections held idle now */
static int64_t *pace_lat;
static size_t pace_nlat;
static volatile sig_atomic_t pace_stop; /* SIGTERM: report and end now */

/* pace_on_term - SIGTERM ends the run with a report of what was done */
static void pace_on_term(int sig)
{
	(void)sig;
	pace_stop = 1;
}

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
		if ((tx->state == PACE_HELO || tx->state == PACE_EHLO) && len >= 12 &&
		    strncasecmp(tx->in + start + 4, "XFORWARD", 8) == 0 &&
		    (len == 12 || tx->in[start + 12] == ' ' || tx->in[start + 12] == '\r'))
			tx->xforward = true;
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

/* pace_watch - have epoll watch tx's socket for input, and output if out */
static void pace_watch(int ep, struct pace_tx *tx, bool out)
{
	uint32_t events = EPOLLIN | (out ? EPOLLOUT : 0);

	if (events == tx->events)
		return;
	struct epoll_event ev = { .events = events, .data.ptr = tx };
	epoll_ctl(ep, EPOLL_CTL_MOD, tx->fd, &ev);
	tx->events = events;
}

/* pace_close - end a transaction and free its slot */
static void pace_close(int ep, struct pace_tx *tx, struct pace_tx **freelist,
		       size_t *open)
{
	if (tx->state == PACE_IDLE)
		n_held--;
	epoll_ctl(ep, EPOLL_CTL_DEL, tx->fd, NULL);
	/* close_notify, as a client does after QUIT; without it OpenSSL
	 * marks the session unfit to resume (the ticket -R would offer) */
	if (tx->ssl && tx->state == PACE_QUIT)
		SSL_shutdown(tx->ssl);
	SSL_free(tx->ssl);
	tx->ssl = NULL;
	close(tx->fd);
	tx->fd = -1;
	tx->next_free = *freelist;
	*freelist = tx;
	(*open)--;
}

/*
 * pace_tls_wait - after an OpenSSL call on tx returned r <= 0: watch what
 * it waits for and return 0, or return -1 when it failed.
 */
static int pace_tls_wait(int ep, struct pace_tx *tx, int r)
{
	switch (SSL_get_error(tx->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		pace_watch(ep, tx, false);
		return 0;
	case SSL_ERROR_WANT_WRITE:
		pace_watch(ep, tx, true);
		return 0;
	default:
		ERR_clear_error();
		return -1;
	}
}

/* pace_write - write what is pending; 1 done, 0 more, -1 error */
static int pace_write(int ep, struct pace_tx *tx)
{
	while (tx->outoff < tx->outlen) {
		size_t left = tx->outlen - tx->outoff;
		if (tx->ssl) {
			int n = SSL_write(tx->ssl, tx->out + tx->outoff,
					  left > INT_MAX ? INT_MAX : (int)left);
			if (n <= 0)
				return pace_tls_wait(ep, tx, n);
			tx->outoff += (size_t)n;
			continue;
		}
		ssize_t n = write(tx->fd, tx->out + tx->outoff, left);
		if (n < 0) {
			if (errno == EAGAIN) {
				pace_watch(ep, tx, true);
				return 0;
			}
			return -1;
		}
		tx->outoff += (size_t)n;
	}
	pace_watch(ep, tx, false);
	return 1;
}

/* pace_read - read into tx->in: bytes read, 0 at the end, -1 error, -2 none yet */
static ssize_t pace_read(int ep, struct pace_tx *tx)
{
	size_t room = sizeof(tx->in) - tx->inlen;

	if (tx->ssl) {
		int n = SSL_read(tx->ssl, tx->in + tx->inlen, (int)room);
		if (n > 0)
			return n;
		if (SSL_get_error(tx->ssl, n) == SSL_ERROR_ZERO_RETURN)
			return 0;
		return pace_tls_wait(ep, tx, n) == 0 ? -2 : -1;
	}
	ssize_t n = read(tx->fd, tx->in + tx->inlen, room);
	if (n < 0 && errno == EAGAIN)
		return -2;
	return n;
}

/* pace_send - start writing s (static) and move to state next */
static int pace_send(int ep, struct pace_tx *tx, const char *s, size_t len,
		     enum pace_state next)
{
	tx->out = s;
	tx->outlen = len;
	tx->outoff = 0;
	tx->state = next;
	return pace_write(ep, tx) < 0 ? PACE_FAIL_CLOSED : 0;
}

/*
 * pace_new_session - keep a session the server gave, for -R: for the next
 * connection of the same slot, and as the latest for a slot that has none
 */
static int pace_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct pace_tx *tx = SSL_get_app_data(ssl);

	if (!tx)
		return 0; /* not kept: OpenSSL frees it */
	SSL_SESSION_free(tx->session);
	tx->session = sess;
	SSL_SESSION_up_ref(sess);
	SSL_SESSION_free(pace_session);
	pace_session = sess;
	return 1; /* the reference is ours (two: the slot's, the latest) */
}

/* pace_handshake_done - note what was negotiated */
static void pace_handshake_done(struct pace_tx *tx)
{
	if (SSL_session_reused(tx->ssl)) {
		n_tls_resumed++;
	} else {
		n_tls_full++;
	}
	snprintf(pace_tls_version, sizeof(pace_tls_version), "%s", SSL_get_version(tx->ssl));
	snprintf(pace_tls_cipher, sizeof(pace_tls_cipher), "%s", SSL_get_cipher_name(tx->ssl));
	const char *group = SSL_group_to_name(tx->ssl, SSL_get_negotiated_group(tx->ssl));
	snprintf(pace_tls_group, sizeof(pace_tls_group), "%s", group ? group : "");
	/* the server's key: a resumed session still names its certificate */
	X509 *cert = SSL_get0_peer_certificate(tx->ssl);
	EVP_PKEY *key = cert ? X509_get0_pubkey(cert) : NULL;
	if (key)
		snprintf(pace_tls_key, sizeof(pace_tls_key), "%s %d",
			 EVP_PKEY_get0_type_name(key), EVP_PKEY_get_bits(key));
}

/* pace_handshake - go on with tx's handshake; at its end send EHLO */
static int pace_handshake(int ep, struct pace_tx *tx)
{
	int r = SSL_do_handshake(tx->ssl);

	if (r != 1)
		return pace_tls_wait(ep, tx, r) == 0 ? 0 : PACE_FAIL_TLS;
	pace_handshake_done(tx);
	return pace_send(ep, tx, pace_cmd[PACE_EHLO], strlen(pace_cmd[PACE_EHLO]), PACE_EHLO);
}

/* pace_starttls - the server said 220 to STARTTLS: start the handshake */
static int pace_starttls(int ep, struct pace_tx *tx)
{
	/* a byte after the 220 would be injected into the TLS session's
	 * plaintext by whoever sent it (CVE-2011-0411): refuse it */
	if (tx->inlen != 0)
		return PACE_FAIL_CLOSED;
	tx->ssl = SSL_new(pace_tls);
	if (!tx->ssl || !SSL_set_fd(tx->ssl, tx->fd))
		return PACE_FAIL_TLS;
	SSL_set_connect_state(tx->ssl);
	if (pace_sni) {
		SSL_set_tlsext_host_name(tx->ssl, pace_sni);
		SSL_set1_host(tx->ssl, pace_sni);
	}
	SSL_set_app_data(tx->ssl, tx);
	SSL_SESSION *offer = tx->session ? tx->session : pace_session;
	tx->offered = pace_resume && offer && SSL_set_session(tx->ssl, offer);
	tx->state = PACE_HANDSHAKE;
	return pace_handshake(ep, tx);
}

/*
 * pace_step - a reply arrived (code) in tx's state: send what follows.
 * Returns 1 when the transaction is over, 0 to go on, or a pace_fail.
 */
static int pace_step(int ep, struct pace_tx *tx, int code)
{
	enum pace_state s = tx->state;
	int want = s == PACE_GREETING || s == PACE_STARTTLS ? 220
		 : s == PACE_DATA			    ? 354
		 : s == PACE_QUIT			    ? 221
		 : s == PACE_AUTH			    ? 235
							    : 250;

	if (s == PACE_QUIT)
		return 1;
	if (s == PACE_IDLE || s == PACE_HANDSHAKE) {
		/* a held connection the server ended (421), or plaintext
		 * in the middle of a handshake */
		return PACE_FAIL_CLOSED;
	}
	if (code != want) {
		/* a refused login or identity fails the transaction: what is
		 * measured is a system that takes them */
		if (s == PACE_AUTH)
			return PACE_FAIL_AUTH;
		if (s == PACE_XFORWARD)
			return PACE_FAIL_XFORWARD;
		if (s == PACE_END)
			pace_lat[pace_nlat++] = pace_now() - tx->start_us;
		n_rejected++;
		return 1;
	}
	switch (s) {
	case PACE_GREETING:
		return pace_send(ep, tx, pace_cmd[PACE_HELO], strlen(pace_cmd[PACE_HELO]), PACE_HELO);
	case PACE_HELO:
		/* a plain session goes on as one does after the EHLO under TLS */
		if (pace_tls)
			return pace_send(ep, tx, pace_cmd[PACE_STARTTLS],
					 strlen(pace_cmd[PACE_STARTTLS]), PACE_STARTTLS);
		/* fall through */
	case PACE_EHLO:
		if (pace_idle) {
			tx->state = PACE_IDLE;
			n_held++;
			return 0;
		}
		if (pace_auth)
			return pace_send(ep, tx, pace_cmd[PACE_AUTH], strlen(pace_cmd[PACE_AUTH]),
					 PACE_AUTH);
		/* fall through */
	case PACE_AUTH:
		if (pace_xforward) {
			if (tx->xforward)
				return pace_send(ep, tx, pace_xforward_cmd,
						 sizeof(pace_xforward_cmd) - 1, PACE_XFORWARD);
			n_xforward_not_offered++;
		}
		/* fall through */
	case PACE_XFORWARD:
		return pace_send(ep, tx, pace_cmd[PACE_MAIL], strlen(pace_cmd[PACE_MAIL]), PACE_MAIL);
	case PACE_STARTTLS:
		/* what counts is the EHLO under TLS */
		tx->xforward = false;
		return pace_starttls(ep, tx);
	case PACE_MAIL:
	case PACE_RCPT:
		return pace_send(ep, tx, pace_cmd[s + 1], strlen(pace_cmd[s + 1]), s + 1);
	case PACE_DATA:
		return pace_send(ep, tx, pace_body, pace_bodylen, PACE_END) < 0 ? PACE_FAIL_CLOSED : 0;
	case PACE_END:
		pace_lat[pace_nlat++] = pace_now() - tx->start_us;
		n_accepted++;
		return pace_send(ep, tx, "QUIT\r\n", 6, PACE_QUIT) < 0 ? 1 : 0;
	default:
		return PACE_FAIL_CLOSED;
	}
}

/* pace_input - read and act on what arrived for tx; as pace_step */
static int pace_input(int ep, struct pace_tx *tx)
{
	int rc = 0;

	/* OpenSSL may hold a decrypted record the socket no longer signals:
	 * read until it has nothing more (a plain socket once a wake-up) */
	do {
		ssize_t r = pace_read(ep, tx);
		if (r == -2)
			break;
		if (r <= 0)
			return tx->state == PACE_QUIT ? 1 : PACE_FAIL_CLOSED;
		tx->inlen += (size_t)r;
		int code;
		while (rc == 0 && tx->state != PACE_HANDSHAKE && (code = pace_reply(tx)) != 0)
			rc = pace_step(ep, tx, code);
	} while (rc == 0 && tx->ssl && tx->state != PACE_HANDSHAKE);
	return rc;
}

/* pace_event - the socket of tx is ready (events); as pace_step */
static int pace_event(int ep, struct pace_tx *tx, uint32_t events)
{
	if (tx->state == PACE_CONNECT) {
		int err = 0;
		socklen_t len = sizeof(err);
		getsockopt(tx->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err)
			return PACE_FAIL_CONNECT;
		tx->state = PACE_GREETING;
		pace_watch(ep, tx, false);
	}
	if (tx->state == PACE_HANDSHAKE)
		return pace_handshake(ep, tx);
	/* under TLS a write may have waited for input too */
	if (tx->outoff < tx->outlen && ((events & EPOLLOUT) || tx->ssl)) {
		if (pace_write(ep, tx) < 0)
			return PACE_FAIL_CLOSED;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		return pace_input(ep, tx);
	return 0;
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

/* pace_report - print the JSON object of what happened so far */
static void pace_report(double rate, uint64_t count, size_t sessions, int64_t elapsed,
			uint64_t unfinished)
{
	double mean = 0;
	for (size_t i = 0; i < pace_nlat; i++)
		mean += (double)pace_lat[i];
	if (pace_nlat)
		mean /= (double)pace_nlat;
	printf("{\"rate\": %.3f, \"sessions\": %zu, \"count\": %llu, \"started\": %llu, "
	       "\"accepted\": %llu, \"rejected\": %llu, \"failed\": %llu, \"failed_connect\": %llu, "
	       "\"failed_closed\": %llu, \"failed_timeout\": %llu, \"failed_tls\": %llu, "
	       "\"failed_auth\": %llu, \"failed_xforward\": %llu, "
	       "\"unfinished\": %llu, \"late\": %llu, "
	       "\"elapsed\": %.6f, \"latency_us\": {\"p50\": %lld, \"p90\": %lld, \"p99\": %lld, "
	       "\"max\": %lld, \"mean\": %.1f, \"n\": %zu}",
	       rate, sessions, (unsigned long long)count, (unsigned long long)n_started,
	       (unsigned long long)n_accepted, (unsigned long long)n_rejected,
	       (unsigned long long)n_failed, (unsigned long long)f_connect,
	       (unsigned long long)f_closed, (unsigned long long)f_timeout,
	       (unsigned long long)f_tls, (unsigned long long)f_auth,
	       (unsigned long long)f_xforward, (unsigned long long)unfinished,
	       (unsigned long long)n_late, (double)elapsed / 1e6, (long long)pace_pct(50),
	       (long long)pace_pct(90), (long long)pace_pct(99),
	       (long long)(pace_nlat ? pace_lat[pace_nlat - 1] : -1), mean, pace_nlat);
	if (pace_tls)
		printf(", \"tls\": {\"full\": %llu, \"resumed\": %llu, \"version\": \"%s\", "
		       "\"cipher\": \"%s\", \"group\": \"%s\", \"server_key\": \"%s\", \"resume\": %s}",
		       (unsigned long long)n_tls_full, (unsigned long long)n_tls_resumed,
		       pace_tls_version, pace_tls_cipher, pace_tls_group, pace_tls_key,
		       pace_resume ? "true" : "false");
	if (pace_idle)
		printf(", \"held\": %llu", (unsigned long long)n_held);
	if (pace_xforward)
		printf(", \"xforward_not_offered\": %llu",
		       (unsigned long long)n_xforward_not_offered);
	printf("}\n");
	fflush(stdout);
}

/*
 * pace_plain - the AUTH PLAIN command of -A USER:PASSWORD: the initial
 * response is base64 of "\0USER\0PASSWORD" (RFC 4616, no authorization
 * identity); -1 if it is malformed or too long
 */
static int pace_plain(const char *login)
{
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *colon = strchr(login, ':');
	unsigned char raw[300];
	size_t n = 0, ulen, plen;

	if (!colon || colon == login)
		return -1;
	ulen = (size_t)(colon - login);
	plen = strlen(colon + 1);
	if (ulen + plen + 2 > sizeof(raw))
		return -1;
	raw[n++] = 0;
	memcpy(raw + n, login, ulen);
	n += ulen;
	raw[n++] = 0;
	memcpy(raw + n, colon + 1, plen);
	n += plen;

	char *out = pace_cmd[PACE_AUTH];
	size_t o = (size_t)snprintf(out, sizeof(pace_cmd[0]), "AUTH PLAIN ");
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)raw[i] << 16 | (i + 1 < n ? (unsigned)raw[i + 1] << 8 : 0) |
			     (i + 2 < n ? raw[i + 2] : 0);
		out[o++] = b64[v >> 18 & 63];
		out[o++] = b64[v >> 12 & 63];
		out[o++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? b64[v & 63] : '=';
	}
	memcpy(out + o, "\r\n", 3);
	pace_auth = true;
	return 0;
}

/* pace_tls_init - the client context of -S; NULL (said why) if it fails */
static SSL_CTX *pace_tls_init(const char *cafile)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx)
		return NULL;
	/* pace_write goes on from where a write stopped, with the same
	 * bytes at the same place or moved: what these modes allow */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				      SSL_MODE_RELEASE_BUFFERS);
	if (cafile) {
		if (SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) {
			fprintf(stderr, "pace: cannot load %s\n", cafile);
			ERR_print_errors_fp(stderr);
			SSL_CTX_free(ctx);
			return NULL;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	if (pace_resume) {
		/* the sessions go to pace_new_session, not to a cache */
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
							    SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(ctx, pace_new_session);
	} else {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	}
	return ctx;
}

static void pace_usage(void)
{
	fprintf(stderr,
		"usage: pace -r RATE -n COUNT -T SECONDS -F FILE [-f FROM] [-t TO] [-M HELO]\n"
		"            [-c MAXOPEN] [-6] [-S [-R] [-C CAFILE] [-N NAME]]\n"
		"            [-A USER:PASSWORD] [-X] PORT\n"
		"       pace -s SESSIONS -n COUNT -T SECONDS -F FILE [...] PORT\n"
		"       pace -i N -r RATE -T SECONDS [-S [-R] [-C CAFILE] [-N NAME]] PORT\n");
	exit(2);
}

int main(int argc, char **argv)
{
	double rate = 0, seconds = 0;
	uint64_t count = 0;
	size_t maxopen = 2000, open = 0, sessions = 0;
	const char *file = NULL, *cafile = NULL, *login = NULL;
	bool six = false, starttls = false;
	int c;

	while ((c = getopt(argc, argv, "r:n:T:F:f:t:M:c:6s:i:SRC:N:A:X")) != -1) {
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
		case 's': sessions = strtoul(optarg, NULL, 10); break;
		case 'i':
			pace_idle = true;
			count = strtoull(optarg, NULL, 10);
			break;
		case 'S': starttls = true; break;
		case 'R': pace_resume = true; break;
		case 'C': cafile = optarg; break;
		case 'N': pace_sni = optarg; break;
		case 'A': login = optarg; break;
		case 'X': pace_xforward = true; break;
		default: pace_usage();
		}
	}
	if (sessions) {
		/* closed loop: the next transaction as soon as one ends */
		maxopen = sessions;
		rate = 1e9;
	}
	if (pace_idle) {
		maxopen = count;
		if (sessions || file)
			pace_usage();
	} else if (!file) {
		pace_usage();
	}
	if (optind != argc - 1 || rate <= 0 || count == 0 || seconds <= 0 || maxopen == 0 ||
	    ((pace_resume || cafile || pace_sni) && !starttls) ||
	    (pace_idle && (login || pace_xforward)))
		pace_usage();
	if (login && pace_plain(login) < 0)
		pace_usage();
	int port = atoi(argv[optind]);
	if (port <= 0 || port > 65535)
		pace_usage();
	if (file && pace_load(file) < 0)
		return 2;
	if (starttls && !(pace_tls = pace_tls_init(cafile)))
		return 2;
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa_term = { .sa_handler = pace_on_term };
	sigaction(SIGTERM, &sa_term, NULL);
	snprintf(pace_cmd[PACE_HELO], sizeof(pace_cmd[0]), "%s %s\r\n",
		 starttls || pace_idle || pace_auth || pace_xforward ? "EHLO" : "HELO",
		 pace_helo);
	snprintf(pace_cmd[PACE_STARTTLS], sizeof(pace_cmd[0]), "STARTTLS\r\n");
	snprintf(pace_cmd[PACE_EHLO], sizeof(pace_cmd[0]), "EHLO %s\r\n", pace_helo);
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
	/* -i: the end of standard input releases the held connections */
	bool ready = false, released = false;
	if (pace_idle) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
		epoll_ctl(ep, EPOLL_CTL_ADD, STDIN_FILENO, &ev);
	}

	for (;;) {
		int64_t now = pace_now();
		if (pace_stop)
			break;
		/* start every transaction whose time has come */
		while (n_started < count && freelist &&
		       (sessions || t0 + (int64_t)((double)n_started * interval) <= now) &&
		       now < deadline) {
			struct pace_tx *tx = freelist;
			int64_t due = t0 + (int64_t)((double)n_started * interval);
			freelist = tx->next_free;
			open++;
			n_started++;
			if (!sessions && now - due > PACE_LATE_US)
				n_late++;
			tx->fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			tx->ssl = NULL;
			tx->inlen = 0;
			tx->out = NULL;
			tx->outlen = tx->outoff = 0;
			tx->start_us = tx->last_us = now;
			tx->state = PACE_CONNECT;
			tx->xforward = false;
			if (tx->fd < 0) {
				n_failed++;
				tx->next_free = freelist;
				freelist = tx;
				open--;
				continue;
			}
			int one = 1;
			setsockopt(tx->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			tx->events = EPOLLOUT | EPOLLIN;
			struct epoll_event ev = { .events = tx->events, .data.ptr = tx };
			epoll_ctl(ep, EPOLL_CTL_ADD, tx->fd, &ev);
			if (connect(tx->fd, (struct sockaddr *)&sa, salen) == 0)
				tx->state = PACE_GREETING;
			else if (errno != EINPROGRESS) {
				n_failed++;
				f_connect++;
				pace_close(ep, tx, &freelist, &open);
			}
		}
		bool starting = n_started < count && now < deadline;
		if (pace_idle) {
			if (!ready && !starting && open == n_held) {
				ready = true;
				pace_report(rate, count, 0, now - t0, 0);
			}
			if (released || now >= deadline + (ready ? 0 : PACE_IO_TIMEOUT_US))
				break;
		} else {
			if (!starting && open == 0)
				break;
			if (now >= deadline + PACE_IO_TIMEOUT_US)
				break;
		}

		int timeout = 100;
		if (starting && !sessions) {
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
			if (!tx) {
				/* standard input: its end (or anything) releases */
				released = true;
				continue;
			}
			if (tx->fd < 0)
				continue;
			tx->last_us = now;
			int rc = pace_event(ep, tx, evs[i].events);
			if (rc < 0) {
				if (rc == PACE_FAIL_CONNECT) {
					f_connect++;
					n_failed++;
				} else if (tx->state != PACE_QUIT) {
					n_failed++;
					if (rc == PACE_FAIL_TLS)
						f_tls++;
					else if (rc == PACE_FAIL_AUTH)
						f_auth++;
					else if (rc == PACE_FAIL_XFORWARD)
						f_xforward++;
					else
						f_closed++;
				}
				pace_close(ep, tx, &freelist, &open);
			} else if (rc > 0) {
				pace_close(ep, tx, &freelist, &open);
			}
		}
		/* a transaction silent for too long has failed; a held one waits */
		if (now - last_sweep > 1000000) {
			last_sweep = now;
			for (size_t i = 0; i < maxopen; i++) {
				if (txs[i].fd >= 0 && txs[i].state != PACE_IDLE &&
				    now - txs[i].last_us > PACE_IO_TIMEOUT_US) {
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
			if (txs[i].state != PACE_QUIT && txs[i].state != PACE_IDLE)
				unfinished++;
			SSL_free(txs[i].ssl);
			close(txs[i].fd);
		}
	}
	qsort(pace_lat, pace_nlat, sizeof(*pace_lat), pace_cmp);
	pace_report(sessions ? 0 : rate, count, sessions, elapsed, unfinished);
	return 0;
}
