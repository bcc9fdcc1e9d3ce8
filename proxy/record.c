/*
 * record.c - build and write decision records
 *
 * The JSON of a record is fixed (README, "The decision log"): the time
 * first, where a reader of the raw file looks for it, then the keys in
 * the order below. A failed write is counted and reported, and the
 * record dropped: the decision log must never stop mail.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "record.h"

/* A destination that stays full this long loses the record. */
#define RECORD_WAIT_MS 100
#define RECORD_WAITS 50
/* Lost records are reported at most this often (seconds). */
#define RECORD_REPORT_INTERVAL 60

static char *record_path; /* NULL for stdout and syslog */
static int record_fd = -1;
static int record_syslog;

/* The lock the workers share; NULL when record_share() was not called. */
static pthread_mutex_t *record_lock;

/* The line being written: kept between records, grown as needed. */
static char *record_buf;
static size_t record_cap;

/* Records lost since the last report, and when that was. */
static unsigned long record_lost;
static time_t record_reported;

static const char *record_mode; /* "milter" in the milter front-end */

/* record_share - map the workers' lock before they are forked */
void record_share(void)
{
	pthread_mutexattr_t attr;
	void *m;

	if (record_lock)
		return;
	m = mmap(NULL, sizeof(pthread_mutex_t), PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		log_warning("decision log: no shared lock (%s): long records of "
			    "several workers may interleave", strerror(errno));
		return;
	}
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	/* A worker that dies holding it (a crashing plugin) must not stop the others. */
	pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(m, &attr);
	pthread_mutexattr_destroy(&attr);
	record_lock = m;
}

/* record_open - choose the destination */
int record_open(const char *target)
{
	record_close();
	if (strcmp(target, "syslog") == 0) {
		record_syslog = 1;
		return 0;
	}
	if (strcmp(target, "stdout") == 0) {
		record_fd = STDOUT_FILENO;
		return 0;
	}
	record_fd = open(target, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (record_fd < 0)
		return -1;
	record_path = strdup(target);
	return 0;
}

/* record_reopen - open the file again by its name */
void record_reopen(void)
{
	int fd;

	if (!record_path)
		return;
	fd = open(record_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0) {
		log_error("cannot reopen decision log %s: %s", record_path,
			  strerror(errno));
		return;
	}
	close(record_fd);
	record_fd = fd;
}

/* record_close - close the destination */
void record_close(void)
{
	if (record_fd > STDERR_FILENO)
		close(record_fd);
	record_fd = -1;
	record_syslog = 0;
	free(record_path);
	record_path = NULL;
}

/* record_utf8_len - length of the valid UTF-8 sequence at p, 0 if none */
static size_t record_utf8_len(const unsigned char *p, size_t left)
{
	unsigned char c = p[0];
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (c < 0x80)
		return 1;
	/* RFC 3629 4: no overlong forms, no surrogates, nothing past U+10FFFF. */
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (left < n || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

/* record_utf8_valid - whether the bytes are all valid UTF-8 */
bool record_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;

	for (size_t i = 0; i < len;) {
		size_t n = record_utf8_len(p + i, len - i);
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/* record_string - a record's string, invalid bytes as \xNN */
json_t *record_string(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	char *buf, *o;
	json_t *j;

	if (record_utf8_valid(s, len))
		return json_stringn_nocheck(s, len);
	o = buf = malloc(len * 4 + 1);
	if (!buf)
		return NULL;
	for (size_t i = 0; i < len;) {
		size_t n = record_utf8_len(p + i, len - i);
		if (n == 0) {
			o += sprintf(o, "\\x%02x", p[i]);
			i++;
		} else {
			memcpy(o, p + i, n);
			o += n;
			i += n;
		}
	}
	j = json_stringn_nocheck(buf, (size_t)(o - buf));
	free(buf);
	return j;
}

/* record_cstring - record_string() of a C string */
json_t *record_cstring(const char *s)
{
	return s ? record_string(s, strlen(s)) : NULL;
}

/* record_reply - a reply line as logged: its first line, no CRLF */
static json_t *record_reply(const char *wire)
{
	return record_string(wire, strcspn(wire, "\r\n"));
}

/*
 * record_queue_id - the queue id in a backend's reply to the message, in
 * the forms the MTAs write it: "queued as X" (Postfix), "OK id=X" (Exim),
 * "X Message accepted for delivery" after the enhanced code (OpenSMTPD)
 */
static json_t *record_queue_id(const struct smtp_reply *r)
{
	static const char accepted[] = " Message accepted for delivery";

	for (size_t i = 0; i < r->nlines; i++) {
		const char *line = r->lines[i], *p;
		size_t len;

		if ((p = strstr(line, "queued as ")))
			p += strlen("queued as ");
		else if (!strncmp(line, "OK id=", 6))
			p = line + 6;
		else if ((p = strstr(line, accepted)) && p > line) {
			const char *end = p;

			while (p > line && p[-1] != ' ')
				p--;
			/* the id alone between the enhanced code and the text */
			if (p == end || (p != line && (size_t)(p - 1 - line) != strlen(r->enh)))
				continue;
			return record_string(p, (size_t)(end - p));
		} else
			continue;
		len = strcspn(p, " \t;,)");
		if (len > 0)
			return record_string(p, len);
	}
	return NULL;
}

/* record_time - now as RFC 3339 UTC with microseconds */
static json_t *record_time(void)
{
	char buf[64];
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);
	return json_string_nocheck(buf);
}

/* record_set_mode - the front-end every record names */
void record_set_mode(const char *mode)
{
	record_mode = mode;
}

/* record_new - a record with its time, type and session */
static json_t *record_new(const char *type, const char *session)
{
	json_t *rec = json_object();

	json_object_set_new(rec, "time", record_time());
	json_object_set_new(rec, "type", json_string_nocheck(type));
	json_object_set_new(rec, "session", record_cstring(session));
	if (record_mode)
		json_object_set_new(rec, "mode", json_string_nocheck(record_mode));
	return rec;
}

/* record_client_json - the client part */
static json_t *record_client_json(const struct record_client *c)
{
	json_t *client = json_object();

	json_object_set_new(client, "address", record_cstring(c->address));
	json_object_set_new(client, "port", json_integer(c->port));
	if (c->helo)
		json_object_set_new(client, "helo", record_cstring(c->helo));
	if (c->name)
		json_object_set_new(client, "name", record_cstring(c->name));
	if (c->reverse_name)
		json_object_set_new(client, "reverse_name", record_cstring(c->reverse_name));
	if (c->name_status)
		json_object_set_new(client, "name_status", json_string(c->name_status));
	if (c->via_address) {
		/*
		 * The PROXY header, or XCLIENT or XFORWARD (command) named the
		 * client; this is who sent it.
		 */
		json_t *via = json_object();
		json_object_set_new(via, "address", record_cstring(c->via_address));
		json_object_set_new(via, "port", json_integer(c->via_port));
		if (c->via_command)
			json_object_set_new(via, "command", json_string(c->via_command));
		json_object_set_new(client, "via", via);
	}
	return client;
}

/*
 * record_auth_json - the "auth" object: the login and its mechanism,
 * and the failed attempts when there were any; NULL when neither. Never
 * anything of the credentials but the login.
 */
static json_t *record_auth_json(const struct record_client *c)
{
	json_t *auth;

	if (!c->auth_user && !c->auth_failures)
		return NULL;
	auth = json_object();
	if (c->auth_user) {
		json_object_set_new(auth, "user", record_cstring(c->auth_user));
		json_object_set_new(auth, "mechanism", record_cstring(c->auth_mechanism));
	}
	if (c->auth_failures)
		json_object_set_new(auth, "failures", json_integer(c->auth_failures));
	return auth;
}

/* record_tls_json - the "tls" object: what the client's connection negotiated */
static json_t *record_tls_json(const struct record_tls *t)
{
	json_t *o = json_object();

	json_object_set_new(o, "version", record_cstring(t->version));
	json_object_set_new(o, "cipher", record_cstring(t->cipher));
	json_object_set_new(o, "bits", json_integer(t->bits));
	json_object_set_new(o, "sni", t->sni ? record_cstring(t->sni) : json_null());
	json_object_set_new(o, "resumed", json_boolean(t->resumed));
	if (t->peer_subject || t->peer_fingerprint) {
		json_t *peer = json_object();
		if (t->peer_subject)
			json_object_set_new(peer, "subject", record_cstring(t->peer_subject));
		if (t->peer_fingerprint)
			json_object_set_new(peer, "fingerprint",
					    record_cstring(t->peer_fingerprint));
		json_object_set_new(o, "peer", peer);
	}
	return o;
}

/* record_lost_report - count a lost record; report at most once an interval */
static void record_lost_report(const char *why)
{
	time_t now = time(NULL);

	record_lost++;
	if (record_reported && now - record_reported < RECORD_REPORT_INTERVAL)
		return;
	log_error("decision log: %lu record%s lost: %s", record_lost,
		  record_lost == 1 ? "" : "s", why);
	record_lost = 0;
	record_reported = now;
}

/*
 * record_put - write all of buf, or nothing when the destination fails at
 * once; returns 0, or -1 with errno (nothing written) or -2 (cut short)
 */
static int record_put(const char *buf, size_t len)
{
	size_t off = 0;
	int waits = 0;

	while (off < len) {
		ssize_t n = write(record_fd, buf + off, len - off);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && waits++ < RECORD_WAITS) {
			/* A nonblocking pipe whose reader lags: wait, never spin. */
			struct pollfd pfd = { record_fd, POLLOUT, 0 };
			poll(&pfd, 1, RECORD_WAIT_MS);
			continue;
		}
		if (n == 0)
			errno = EIO;
		return off ? -2 : -1;
	}
	return 0;
}

/* record_lock_take - the workers' lock, also from a worker that died with it */
static void record_lock_take(void)
{
	if (record_lock && pthread_mutex_lock(record_lock) == EOWNERDEAD)
		pthread_mutex_consistent(record_lock);
}

/* record_lock_give - release the workers' lock */
static void record_lock_give(void)
{
	if (record_lock)
		pthread_mutex_unlock(record_lock);
}

/* record_write - encode and write one record as a line; steals rec */
static void record_write(json_t *rec)
{
	const size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII;
	size_t len = json_dumpb(rec, record_buf, record_cap, flags);

	if (len + 1 > record_cap && len) {
		/* Grown once to the largest record seen, then reused. */
		size_t cap = len + 1 > 2 * record_cap ? len + 1 : 2 * record_cap;
		char *b = realloc(record_buf, cap);
		if (b) {
			record_buf = b;
			record_cap = cap;
			len = json_dumpb(rec, record_buf, record_cap, flags);
		}
	}
	json_decref(rec);
	if (len == 0 || len + 1 > record_cap) {
		record_lost_report("cannot encode the record (out of memory)");
		return;
	}
	if (record_syslog) {
		record_buf[len] = 0;
		syslog(LOG_MAIL | LOG_INFO, "%s", record_buf);
		return;
	}
	record_buf[len] = '\n';
	if (record_fd < 0) {
		record_lost_report("no destination");
		return;
	}
	record_lock_take();
	int rc = record_put(record_buf, len + 1);
	int err = errno;
	if (rc == -2) {
		/*
		 * Part of the line is out and the rest cannot follow: end it,
		 * so the next record starts on a line of its own.
		 */
		record_put("\n", 1);
	}
	record_lock_give();
	if (rc < 0) {
		char why[160];
		snprintf(why, sizeof(why), "%s%s", rc == -2 ? "cut short: " : "",
			 strerror(err));
		record_lost_report(why);
	} else if (record_lost) {
		log_error("decision log: writable again, %lu record%s lost before",
			  record_lost, record_lost == 1 ? "" : "s");
		record_lost = 0;
		record_reported = 0;
	}
}

/* record_transaction - the record of one transaction */
void record_transaction(const char *session, const struct record_client *client,
			const struct record_tx *tx, const struct record_backend *backend,
			json_t *filters)
{
	json_t *rec = record_new("transaction", session);
	json_t *rcpts = json_array();

	if (tx->queue_id)
		json_object_set_new(rec, "queue_id", record_cstring(tx->queue_id));

	json_object_set_new(rec, "transaction", json_integer(tx->number));
	json_object_set_new(rec, "client", record_client_json(client));
	json_t *auth = record_auth_json(client);
	if (auth)
		json_object_set_new(rec, "auth", auth);
	if (client->tls)
		json_object_set_new(rec, "tls", record_tls_json(client->tls));
	json_object_set_new(rec, "sender", record_cstring(tx->sender));
	for (size_t i = 0; i < tx->nrecipients; i++) {
		json_t *r = json_object();
		json_object_set_new(r, "address", record_cstring(tx->recipients[i].address));
		/* Milter mode: the MTA answers a recipient no filter refused. */
		if (tx->recipients[i].reply)
			json_object_set_new(r, "reply", record_reply(tx->recipients[i].reply));
		json_array_append_new(rcpts, r);
	}
	json_object_set_new(rec, "recipients", rcpts);
	if (tx->sized)
		json_object_set_new(rec, "size", json_integer((json_int_t)tx->size));
	json_object_set_new(rec, "action", json_string_nocheck(tx->action));
	if (tx->reply)
		json_object_set_new(rec, "reply", record_reply(tx->reply));
	if (tx->reason)
		json_object_set_new(rec, "reason", record_cstring(tx->reason));
	if (tx->changes)
		json_object_set(rec, "changes", tx->changes);
	if (backend) {
		json_t *b = json_object();
		json_object_set_new(b, "server", record_cstring(backend->server));
		json_object_set_new(b, "reused", json_boolean(backend->reused));
		if (backend->tls_version) {
			json_t *t = json_object();
			json_object_set_new(t, "version", record_cstring(backend->tls_version));
			json_object_set_new(t, "cipher", record_cstring(backend->tls_cipher));
			json_object_set_new(b, "tls", t);
		}
		if (backend->reply && backend->reply->nlines) {
			char wire[1200];
			smtp_reply_format(backend->reply, NULL, wire, sizeof(wire));
			json_object_set_new(b, "reply", record_reply(wire));
			json_t *qid = record_queue_id(backend->reply);
			if (qid)
				json_object_set_new(b, "queue_id", qid);
		}
		json_object_set_new(rec, "backend", b);
	}
	if (filters)
		json_object_set_new(rec, "filters", filters);
	record_write(rec);
}

/* record_connection - the record of a session without a transaction */
void record_connection(const char *session, const struct record_client *client,
		       const char *action, const char *reason, json_t *filters)
{
	json_t *rec = record_new("connection", session);

	json_object_set_new(rec, "client", record_client_json(client));
	json_t *auth = record_auth_json(client);
	if (auth)
		json_object_set_new(rec, "auth", auth);
	if (client->tls)
		json_object_set_new(rec, "tls", record_tls_json(client->tls));
	json_object_set_new(rec, "action", json_string_nocheck(action));
	if (reason)
		json_object_set_new(rec, "reason", record_cstring(reason));
	if (filters)
		json_object_set_new(rec, "filters", filters);
	record_write(rec);
}
