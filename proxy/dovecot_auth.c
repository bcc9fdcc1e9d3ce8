/*
 * dovecot_auth.c - Dovecot's auth client protocol, parser and client
 *
 * The parser is pure. The client (dovecot_auth.h) keeps its requests in
 * one list in the order made; each has its own timer, which is also how
 * a request fails later rather than inside the call that made it (a
 * timer of zero), so a session never sees its callback before it has
 * returned from asking. Any trouble with the connection (refused,
 * closed, a malformed or over-long line, a request past its time) closes
 * it and fails every request on it with TEMPFAIL: the session answers
 * 454 4.7.0 and the next request connects afresh.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "auth.h"
#include "conn.h"
#include "dovecot_auth.h"
#include "log.h"

/* field_eq - whether the field of len bytes at f is the word w */
static bool field_eq(const char *f, size_t len, const char *w)
{
	return strlen(w) == len && memcmp(f, w, len) == 0;
}

/* field_number - a decimal field of at most 9 digits; false otherwise */
static bool field_number(const char *f, size_t len, unsigned long *out)
{
	unsigned long v = 0;

	if (len == 0 || len > 9)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (f[i] < '0' || f[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(f[i] - '0');
	}
	*out = v;
	return true;
}

/* dovecot_auth_parse - one server line */
int dovecot_auth_parse(const char *line, size_t len, struct dovecot_reply *r)
{
	const char *f[64];
	size_t fl[64], n = 0, start = 0;
	unsigned long num;

	memset(r, 0, sizeof(*r));
	if (memchr(line, 0, len))
		return -1;
	/* Split at tabs; fields past the 64th are not looked at. */
	for (size_t i = 0; i <= len && n < 64; i++) {
		if (i == len || line[i] == '\t') {
			f[n] = line + start;
			fl[n++] = i - start;
			start = i + 1;
		}
	}
	if (field_eq(f[0], fl[0], "VERSION")) {
		if (n < 2 || !field_number(f[1], fl[1], &num))
			return -1;
		r->kind = DOVECOT_LINE_VERSION;
		r->major = (unsigned)num;
		return 0;
	}
	if (field_eq(f[0], fl[0], "MECH")) {
		if (n < 2 || fl[1] == 0)
			return -1;
		r->kind = DOVECOT_LINE_MECH;
		r->mech = f[1];
		r->mech_len = fl[1];
		for (size_t i = 2; i < n; i++)
			if (field_eq(f[i], fl[i], "plaintext"))
				r->plaintext = true;
		return 0;
	}
	if (field_eq(f[0], fl[0], "DONE")) {
		r->kind = DOVECOT_LINE_DONE;
		return 0;
	}
	if (field_eq(f[0], fl[0], "OK"))
		r->kind = DOVECOT_LINE_OK;
	else if (field_eq(f[0], fl[0], "CONT"))
		r->kind = DOVECOT_LINE_CONT;
	else if (field_eq(f[0], fl[0], "FAIL"))
		r->kind = DOVECOT_LINE_FAIL;
	else
		return 0; /* OTHER */
	if (n < 2 || !field_number(f[1], fl[1], &r->id))
		return -1;
	if (r->kind == DOVECOT_LINE_CONT)
		return 0; /* the rest is the challenge, not key=value */
	for (size_t i = 2; i < n; i++) {
		if (fl[i] >= 5 && memcmp(f[i], "user=", 5) == 0) {
			r->user = f[i] + 5;
			r->user_len = fl[i] - 5;
		} else if (field_eq(f[i], fl[i], "temp")) {
			r->temp = true;
		}
	}
	return 0;
}

/* ---- the client ---- */

enum dovecot_state { DA_CLOSED, DA_CONNECTING, DA_HANDSHAKE, DA_READY };

struct dovecot_req {
	struct dovecot_req *next;
	struct dovecot_auth *da;
	unsigned long id;
	char *line;	/* the AUTH line, wiped when freed (it holds the password) */
	bool sent;
	bool failed;	/* the timer fires at once: TEMPFAIL */
	struct event *timer;
	dovecot_auth_fn done;
	void *arg;
};

struct dovecot_auth {
	struct dovecot_auth *next; /* the worker's clients */
	struct event_base *base;
	char *path;
	unsigned timeout_ms;
	enum dovecot_state state;
	struct conn *conn;
	unsigned long next_id;
	unsigned mechs, mechs_seen; /* the last handshake's, the current one's */
	struct dovecot_req *reqs;
};

/* One loop per worker process: its clients, one per socket path. */
static struct dovecot_auth *dovecot_clients;

static void da_read_cb(struct conn *c, void *arg);
static void da_event_cb(struct conn *c, enum conn_event what, void *arg);

/* req_free - unlink and release a request */
static void req_free(struct dovecot_req *q)
{
	struct dovecot_req **pp;

	for (pp = &q->da->reqs; *pp; pp = &(*pp)->next)
		if (*pp == q) {
			*pp = q->next;
			break;
		}
	if (q->line) {
		explicit_bzero(q->line, strlen(q->line));
		free(q->line);
	}
	event_free(q->timer);
	free(q);
}

/* req_finish - end a request with its result */
static void req_finish(struct dovecot_req *q, enum dovecot_result result,
		       const char *user)
{
	dovecot_auth_fn done = q->done;
	void *arg = q->arg;

	req_free(q);
	done(arg, result, user);
}

/* req_fail_later - fail the request from the loop, not from this call */
static void req_fail_later(struct dovecot_req *q)
{
	struct timeval now = { 0, 0 };

	q->failed = true;
	evtimer_add(q->timer, &now);
}

/* da_close - close the connection; every request on it fails */
static void da_close(struct dovecot_auth *da, const char *why)
{
	if (da->state != DA_CLOSED)
		log_warning("dovecot auth %s: %s", da->path, why);
	conn_free(da->conn);
	da->conn = NULL;
	da->state = DA_CLOSED;
	for (struct dovecot_req *q = da->reqs; q; q = q->next)
		req_fail_later(q);
}

/* da_send - write a request's line */
static void da_send(struct dovecot_auth *da, struct dovecot_req *q)
{
	evbuffer_add(conn_output(da->conn), q->line, strlen(q->line));
	q->sent = true;
}

/* da_connect - connect and say who we are */
static void da_connect(struct dovecot_auth *da)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };

	if (strlen(da->path) >= sizeof(sun.sun_path)) {
		da_close(da, "socket path too long");
		return;
	}
	memcpy(sun.sun_path, da->path, strlen(da->path) + 1);
	da->conn = conn_new(da->base, -1);
	if (!da->conn) {
		da_close(da, "out of memory");
		return;
	}
	conn_setcb(da->conn, da_read_cb, NULL, da_event_cb, da);
	da->state = DA_CONNECTING;
	da->mechs_seen = 0;
	if (conn_connect(da->conn, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		char why[160];
		snprintf(why, sizeof(why), "connect: %s", strerror(conn_errno(da->conn)));
		da_close(da, why);
		return;
	}
	evbuffer_add_printf(conn_output(da->conn), "VERSION\t1\t1\nCPID\t%ld\n",
			    (long)getpid());
}

/* da_find - the request of id */
static struct dovecot_req *da_find(struct dovecot_auth *da, unsigned long id)
{
	for (struct dovecot_req *q = da->reqs; q; q = q->next)
		if (q->id == id && q->sent)
			return q;
	return NULL;
}

/* da_line - one server line; false when the connection was closed */
static bool da_line(struct dovecot_auth *da, const char *line, size_t len)
{
	struct dovecot_reply r;
	struct dovecot_req *q;
	char user[AUTH_FIELD_MAX + 1];

	if (dovecot_auth_parse(line, len, &r) < 0) {
		da_close(da, "malformed line from the server");
		return false;
	}
	switch (r.kind) {
	case DOVECOT_LINE_VERSION:
		if (r.major != 1) {
			da_close(da, "the server speaks another major version");
			return false;
		}
		return true;
	case DOVECOT_LINE_MECH:
		da->mechs_seen |= 1u << auth_mech_parse(r.mech, r.mech_len);
		return true;
	case DOVECOT_LINE_DONE:
		if (da->state != DA_HANDSHAKE)
			return true;
		da->state = DA_READY;
		da->mechs = da->mechs_seen & ~1u; /* AUTH_MECH_NONE is no mechanism */
		for (q = da->reqs; q; q = q->next)
			if (!q->sent && !q->failed)
				da_send(da, q);
		return true;
	case DOVECOT_LINE_OK:
	case DOVECOT_LINE_FAIL:
	case DOVECOT_LINE_CONT:
		q = da_find(da, r.id);
		if (!q)
			return true; /* cancelled: its answer is nobody's */
		if (r.kind == DOVECOT_LINE_CONT) {
			/* The whole PLAIN message went with the request: no challenge is due. */
			log_warning("dovecot auth %s: unexpected challenge to request %lu",
				    da->path, r.id);
			req_finish(q, DOVECOT_TEMPFAIL, NULL);
			return true;
		}
		user[0] = 0;
		if (r.user && r.user_len <= AUTH_FIELD_MAX) {
			memcpy(user, r.user, r.user_len);
			user[r.user_len] = 0;
		}
		req_finish(q, r.kind == DOVECOT_LINE_OK ? DOVECOT_OK
			   : r.temp ? DOVECOT_TEMPFAIL : DOVECOT_FAIL,
			   user[0] ? user : NULL);
		return true;
	case DOVECOT_LINE_OTHER:
		return true;
	}
	return true;
}

/* da_read_cb - lines from the server */
static void da_read_cb(struct conn *c, void *arg)
{
	struct dovecot_auth *da = arg;
	struct evbuffer *in = conn_input(c);
	char *line;
	size_t len;

	while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF))) {
		bool open = da_line(da, line, len);
		free(line);
		if (!open)
			return;
	}
	if (evbuffer_get_length(in) > DOVECOT_AUTH_LINE_MAX)
		da_close(da, "line too long from the server");
}

/* da_event_cb - connected, closed or failed */
static void da_event_cb(struct conn *c, enum conn_event what, void *arg)
{
	struct dovecot_auth *da = arg;
	char why[160];

	if (what == CONN_CONNECTED) {
		da->state = DA_HANDSHAKE;
		return;
	}
	if (what == CONN_EOF)
		snprintf(why, sizeof(why), "connection closed by the server");
	else
		snprintf(why, sizeof(why), "%s", strerror(conn_errno(c)));
	da_close(da, why);
}

/* req_timer_cb - a request failed, or ran out of time */
static void req_timer_cb(evutil_socket_t fd, short events, void *arg)
{
	struct dovecot_req *q = arg;
	struct dovecot_auth *da = q->da;

	(void)fd;
	(void)events;
	if (!q->failed) {
		/* A service that sits on one request is stuck for all of them. */
		char why[96];
		snprintf(why, sizeof(why), "no answer within %u ms", da->timeout_ms);
		req_finish(q, DOVECOT_TEMPFAIL, NULL);
		da_close(da, why);
		return;
	}
	req_finish(q, DOVECOT_TEMPFAIL, NULL);
}

/* dovecot_auth_for - the worker's client of path */
struct dovecot_auth *dovecot_auth_for(struct event_base *base, const char *path,
				      unsigned timeout_ms)
{
	struct dovecot_auth *da;

	for (da = dovecot_clients; da; da = da->next)
		if (da->base == base && strcmp(da->path, path) == 0) {
			da->timeout_ms = timeout_ms;
			return da;
		}
	da = calloc(1, sizeof(*da));
	if (!da || !(da->path = strdup(path))) {
		free(da);
		return NULL;
	}
	da->base = base;
	da->timeout_ms = timeout_ms;
	da->next = dovecot_clients;
	dovecot_clients = da;
	return da;
}

/* dovecot_auth_request - one AUTH request */
unsigned long dovecot_auth_request(struct dovecot_auth *da, const char *resp,
				   const char *rip, bool secured,
				   dovecot_auth_fn done, void *arg)
{
	struct dovecot_req *q = calloc(1, sizeof(*q));
	struct timeval tv = { da->timeout_ms / 1000, (da->timeout_ms % 1000) * 1000 };
	struct dovecot_req **tail;

	if (!q)
		return 0;
	q->da = da;
	q->id = ++da->next_id;
	if (q->id == 0 || q->id > 999999999) /* field_number() takes 9 digits */
		q->id = da->next_id = 1;
	q->done = done;
	q->arg = arg;
	q->timer = evtimer_new(da->base, req_timer_cb, q);
	/* nologin: we only check the password; no login process follows. */
	if (!q->timer ||
	    asprintf(&q->line, "AUTH\t%lu\tPLAIN\tservice=smtp\tnologin%s\trip=%s\tresp=%s\n",
		     q->id, secured ? "\tsecured" : "", rip, resp) < 0) {
		q->line = NULL;
		if (q->timer)
			event_free(q->timer);
		free(q);
		return 0;
	}
	for (tail = &da->reqs; *tail; tail = &(*tail)->next)
		;
	*tail = q;
	evtimer_add(q->timer, &tv);
	if (da->state == DA_CLOSED)
		da_connect(da);
	else if (da->state == DA_READY)
		da_send(da, q);
	return q->id;
}

/* dovecot_auth_cancel - forget a request */
void dovecot_auth_cancel(struct dovecot_auth *da, unsigned long id)
{
	for (struct dovecot_req *q = da->reqs; q; q = q->next)
		if (q->id == id) {
			req_free(q);
			return;
		}
}

/* dovecot_auth_mechs - what the server offered */
unsigned dovecot_auth_mechs(const struct dovecot_auth *da)
{
	return da->mechs;
}
