/*
 * probe.c - a configurable filter for the pipeline's integration tests
 *
 * One plugin that can play every part the host must cope with: a filter
 * that says each verdict at each stage, with or without its own reply,
 * one that is slow, hangs or crashes, one that changes the header, and
 * one that only records which hooks ran. tests/integration/test_pipeline.py
 * loads it (tests/plugins/.libs/probe.so) once or several times under
 * different names. It is built by "make check" and never installed.
 *
 * Options (all optional):
 *	stage = data		the hook that acts: connect, helo, mail, rcpt
 *				or data. Every hook exists; the others only
 *				count and return PC_CONTINUE.
 *	verdict = continue	what the acting hook returns: continue,
 *				accept, reject, tempfail, discard, wouldblock,
 *				or invalid (a value outside enum pc_status)
 *	code = 550		with it, the acting hook calls pc_set_reply()
 *	enh = 5.7.1		  with this enhanced code (none: NULL)
 *	text = ...		  and this text (default "probe reply")
 *	match = SUBSTRING	act only when the stage's subject contains it:
 *				the client address (connect), the HELO name
 *				(helo), the sender (mail), the recipient
 *				(rcpt), the sender or any recipient (data)
 *	sleep = 0.5		seconds to sleep in the acting hook before it
 *				returns (3600: hang)
 *	crash = yes		raise SIGSEGV in the acting hook
 *	result = key=value	pc_result() in the acting hook
 *	result_int = key=N	pc_result_int() in the acting hook
 *	size_limit = N		pc_set_size_limit(N bytes) in the acting hook
 *	add_header = Name: value     pc_header_add() in the data hook
 *	insert_header = Name: value  pc_header_insert() in the data hook
 *	change_header = Name: value  pc_header_change() of the first Name
 *				field in the data hook; "Name:" with nothing
 *				after it removes that field
 *	count_file = PATH	append "STAGE SESSION-ID\n" for every hook
 *				call, reset and close included
 *	report_client = yes	pc_result("client", "ADDR PORT NAME HELO LOGIN")
 *				in the acting hook, "-" for each one unknown:
 *				who the filters see as the client
 *	report_thread = yes	pc_result_int("loop_thread", 1 or 0) in the
 *				acting hook: whether it runs on the worker's
 *				main thread (the event loop) or a pool thread
 *	report_tls = yes	pc_result_int("tls", pc_tls()) and, under
 *				TLS, the pc_tls_* accessors as results
 *				tls_version, tls_cipher, tls_bits, tls_sni,
 *				tls_peer_subject, tls_peer_fingerprint
 *	loop_wouldblock = yes	on the event loop, the acting hook does all
 *				of the above but the verdict, then returns
 *				PC_WOULDBLOCK; on a thread it acts as usual
 *	set_sender = ADDR [PARAMS]   pc_set_sender() in the data hook
 *				(ADDR "<>" for the null sender; without
 *				PARAMS the client's are kept)
 *	add_rcpt = ADDR [PARAMS]     pc_rcpt_add() in the data hook
 *	delete_rcpt = ADDR	pc_rcpt_delete() in the data hook
 *	replace_body = TEXT	pc_body_replace() in the data hook: TEXT and
 *				a LF, in two calls (a bare LF the host makes
 *				CRLF)
 *	quarantine = REASON	pc_quarantine() in the data hook
 *	report_envelope = yes	pc_result("envelope", "SENDER BODY=X|R1,R2|B")
 *				in the acting hook: the sender, its BODY
 *				parameter ("-" when none), the recipients and
 *				the body's first 60 bytes, as the hook sees
 *				them (after the changes of earlier filters)
 *
 * Built three times from this file: probe.so (every hook may block),
 * probe_nb.so (-DPROBE_NONBLOCKING: every hook marked nonblocking, so the
 * host runs a stage of them on the event loop) and probe_old.so
 * (-DPROBE_OLD_DESCRIPTOR: marked nonblocking too, but its descriptor
 * claims the size of the first ABI 1 release, from before that field,
 * so the host must read the marks as 0).
 *
 * The header and envelope options act in the data hook whatever stage
 * says (only there can the message change), when match, if given, matches; they are made
 * before the sleep, so a late filter has changes that must not survive.
 *
 * Session and transaction data: the first hook of a session stores a
 * malloc'd copy of the session id with pc_set_session_data(), the mail
 * hook a copy of the sender with pc_set_tx_data(); reset and close free
 * them. A hook that finds the data of another session writes
 * "STAGE SESSION-ID wrong-session-data" to the count file, and close
 * writes "close SESSION-ID tx-data-left" when reset did not run after
 * the last mail hook; the tests see three words where two are expected.
 * Under a sanitizer build a missing reset or close is a leak report.
 *
 * Errors: a bad option value stops start-up with pc_config_error()
 * naming the key. The instance is read-only after init; the count file
 * is written with one O_APPEND write(2) a line, so concurrent sessions
 * need no lock.
 */
#define _GNU_SOURCE /* gettid() */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <portcullis/filter.h>

/* A verdict outside enum pc_status, for the host's "invalid verdict". */
#define PROBE_INVALID 42

enum probe_stage {
	PROBE_CONNECT,
	PROBE_HELO,
	PROBE_MAIL,
	PROBE_RCPT,
	PROBE_DATA,
};

static const char *const probe_stage_names[] = {
	[PROBE_CONNECT] = "connect", [PROBE_HELO] = "helo",
	[PROBE_MAIL] = "mail",	     [PROBE_RCPT] = "rcpt",
	[PROBE_DATA] = "data",
};

static const struct {
	const char *name;
	int status;
} probe_verdicts[] = {
	{ "continue", PC_CONTINUE }, { "accept", PC_ACCEPT },
	{ "reject", PC_REJECT },     { "tempfail", PC_TEMPFAIL },
	{ "discard", PC_DISCARD },   { "wouldblock", PC_WOULDBLOCK },
	{ "invalid", PROBE_INVALID },
};

/* One "Name: value" option; value NULL means "remove" (change_header). */
struct probe_field {
	char *name;
	char *value;
};

struct probe {
	enum probe_stage stage;
	int verdict;
	int code; /* 0: no pc_set_reply() */
	char *enh;
	char *text;
	char *match;
	double sleep;
	bool crash;
	char *result_key, *result_value;
	char *result_int_key;
	long long result_int;
	unsigned long long size_limit;
	struct probe_field add, insert, change;
	char *count_file;
	bool report_thread;
	bool report_client;
	bool report_tls;
	bool loop_wouldblock;
	char *set_sender, *add_rcpt, *delete_rcpt, *replace_body, *quarantine;
	bool report_envelope;
};

/* probe_free - free an instance, complete or half-built */
static void probe_free(struct probe *p)
{
	if (!p)
		return;
	free(p->enh);
	free(p->text);
	free(p->match);
	free(p->result_key);
	free(p->result_value);
	free(p->result_int_key);
	free(p->add.name);
	free(p->add.value);
	free(p->insert.name);
	free(p->insert.value);
	free(p->change.name);
	free(p->change.value);
	free(p->count_file);
	free(p->set_sender);
	free(p->add_rcpt);
	free(p->delete_rcpt);
	free(p->replace_body);
	free(p->quarantine);
	free(p);
}

/* probe_trim - a copy of text[0..len) without surrounding blanks */
static char *probe_trim(const char *text, size_t len)
{
	while (len > 0 && (*text == ' ' || *text == '\t')) {
		text++;
		len--;
	}
	while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\t'))
		len--;
	return strndup(text, len);
}

/* probe_yes_no - a yes/no option into *flag (left as is when absent) */
static int probe_yes_no(pc_config *config, const char *key, bool *flag)
{
	const char *v = pc_config_get(config, key);

	if (!v)
		return 0;
	if (strcasecmp(v, "yes") == 0) {
		*flag = true;
		return 0;
	}
	if (strcasecmp(v, "no") == 0)
		return 0;
	pc_config_error(config, key, "\"%s\": expected yes or no", v);
	return -1;
}

/* probe_split - "left<sep>right" into two trimmed copies */
static const char *probe_split(const char *value, char sep, char **left,
			       char **right)
{
	const char *at = strchr(value, sep);

	if (!at)
		return sep == ':' ? "expected \"Name: value\""
				  : "expected \"key=value\"";
	*left = probe_trim(value, (size_t)(at - value));
	*right = probe_trim(at + 1, strlen(at + 1));
	if (!*left || !*right)
		return "out of memory";
	if (!**left)
		return sep == ':' ? "no header name before ':'"
				  : "no key before '='";
	return NULL;
}

/* probe_field - read one "Name: value" option; empty value allowed if
 * removal is */
static int probe_field(pc_config *config, const char *key,
		       struct probe_field *f, bool removal)
{
	const char *value = pc_config_get(config, key);
	const char *err;

	if (!value)
		return 0;
	if ((err = probe_split(value, ':', &f->name, &f->value))) {
		pc_config_error(config, key, "%s", err);
		return -1;
	}
	if (!*f->value) {
		if (!removal) {
			pc_config_error(config, key, "no value after ':'");
			return -1;
		}
		free(f->value);
		f->value = NULL;
	}
	return 0;
}

/* probe_init_choice - stage and verdict */
static int probe_init_choice(pc_config *config, struct probe *p)
{
	const char *v;
	size_t i;

	p->stage = PROBE_DATA;
	if ((v = pc_config_get(config, "stage"))) {
		for (i = 0; i <= PROBE_DATA; i++)
			if (strcasecmp(v, probe_stage_names[i]) == 0)
				break;
		if (i > PROBE_DATA) {
			pc_config_error(config, "stage",
					"\"%s\": expected connect, helo, mail, rcpt or data",
					v);
			return -1;
		}
		p->stage = (enum probe_stage)i;
	}
	p->verdict = PC_CONTINUE;
	if ((v = pc_config_get(config, "verdict"))) {
		size_t n = sizeof(probe_verdicts) / sizeof(probe_verdicts[0]);

		for (i = 0; i < n; i++)
			if (strcasecmp(v, probe_verdicts[i].name) == 0)
				break;
		if (i == n) {
			pc_config_error(config, "verdict",
					"\"%s\": expected continue, accept, reject, "
					"tempfail, discard or invalid",
					v);
			return -1;
		}
		p->verdict = probe_verdicts[i].status;
	}
	return 0;
}

/* probe_init_reply - code, enh and text: checked by the host, not here,
 * so that a mismatched reply reaches it */
static int probe_init_reply(pc_config *config, struct probe *p)
{
	const char *code = pc_config_get(config, "code");
	const char *enh = pc_config_get(config, "enh");
	const char *text = pc_config_get(config, "text");
	char *end;
	long n;

	if (code) {
		errno = 0;
		n = strtol(code, &end, 10);
		if (errno || end == code || *end || n < 100 || n > 999) {
			pc_config_error(config, "code", "\"%s\": expected a reply code",
					code);
			return -1;
		}
		p->code = (int)n;
	}
	if ((enh && *enh && !(p->enh = strdup(enh))) ||
	    !(p->text = strdup(text ? text : "probe reply"))) {
		pc_config_error(config, "text", "out of memory");
		return -1;
	}
	return 0;
}

/* probe_init_action - match, sleep, crash, result, result_int, size_limit */
static int probe_init_action(pc_config *config, struct probe *p)
{
	const char *v;
	const char *err;
	char *end, *number = NULL;

	if ((v = pc_config_get(config, "match")) && *v &&
	    !(p->match = strdup(v))) {
		pc_config_error(config, "match", "out of memory");
		return -1;
	}
	if ((v = pc_config_get(config, "sleep"))) {
		errno = 0;
		p->sleep = strtod(v, &end);
		if (errno || end == v || *end || p->sleep < 0 || p->sleep > 86400) {
			pc_config_error(config, "sleep",
					"\"%s\": expected seconds (0 to 86400)", v);
			return -1;
		}
	}
	if (probe_yes_no(config, "crash", &p->crash) < 0 ||
	    probe_yes_no(config, "report_thread", &p->report_thread) < 0 ||
	    probe_yes_no(config, "report_client", &p->report_client) < 0 ||
	    probe_yes_no(config, "report_tls", &p->report_tls) < 0 ||
	    probe_yes_no(config, "loop_wouldblock", &p->loop_wouldblock) < 0 ||
	    probe_yes_no(config, "report_envelope", &p->report_envelope) < 0)
		return -1;
	static const char *const texts[] = { "set_sender", "add_rcpt", "delete_rcpt",
					     "replace_body", "quarantine" };
	char **slots[] = { &p->set_sender, &p->add_rcpt, &p->delete_rcpt,
			   &p->replace_body, &p->quarantine };
	for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++)
		if ((v = pc_config_get(config, texts[i])) && !(*slots[i] = strdup(v))) {
			pc_config_error(config, texts[i], "out of memory");
			return -1;
		}
	if ((v = pc_config_get(config, "result")) &&
	    (err = probe_split(v, '=', &p->result_key, &p->result_value))) {
		pc_config_error(config, "result", "%s", err);
		return -1;
	}
	if ((v = pc_config_get(config, "result_int"))) {
		if ((err = probe_split(v, '=', &p->result_int_key, &number))) {
			free(number);
			pc_config_error(config, "result_int", "%s", err);
			return -1;
		}
		errno = 0;
		p->result_int = strtoll(number, &end, 10);
		if (errno || end == number || *end) {
			pc_config_error(config, "result_int",
					"\"%s\": expected an integer", number);
			free(number);
			return -1;
		}
		free(number);
	}
	if ((v = pc_config_get(config, "size_limit"))) {
		errno = 0;
		p->size_limit = strtoull(v, &end, 10);
		if (errno || end == v || *end || *v == '-' || p->size_limit == 0) {
			pc_config_error(config, "size_limit",
					"\"%s\": expected a number of bytes", v);
			return -1;
		}
	}
	return 0;
}

/* probe_init - read the options into the instance */
static int probe_init(pc_config *config, void **instance)
{
	struct probe *p = calloc(1, sizeof(*p));
	const char *v;

	if (!p) {
		pc_config_error(config, "module", "out of memory");
		return -1;
	}
	if (probe_init_choice(config, p) < 0 || probe_init_reply(config, p) < 0 ||
	    probe_init_action(config, p) < 0 ||
	    probe_field(config, "add_header", &p->add, false) < 0 ||
	    probe_field(config, "insert_header", &p->insert, false) < 0 ||
	    probe_field(config, "change_header", &p->change, true) < 0)
		goto fail;
	if ((v = pc_config_get(config, "count_file"))) {
		if (*v != '/') {
			pc_config_error(config, "count_file",
					"\"%s\": expected an absolute path", v);
			goto fail;
		}
		if (!(p->count_file = strdup(v))) {
			pc_config_error(config, "count_file", "out of memory");
			goto fail;
		}
	}
	*instance = p;
	return 0;
fail:
	probe_free(p);
	return -1;
}

/* probe_fini - free the instance */
static void probe_fini(void *instance)
{
	probe_free(instance);
}

/* probe_count - one line in the count file: "STAGE SESSION-ID[ NOTE]" */
static void probe_count(pc_ctx *ctx, const char *stage, const char *note)
{
	const struct probe *p = pc_instance(ctx);
	const char *id = pc_session_id(ctx);
	char line[512];
	int len, fd;

	if (!p->count_file)
		return;
	len = snprintf(line, sizeof(line), "%s %s%s%s\n", stage, id ? id : "-",
		       note ? " " : "", note ? note : "");
	if (len < 0 || (size_t)len >= sizeof(line))
		return;
	/* One write to an O_APPEND file: lines of concurrent sessions in
	 * several workers never interleave. */
	fd = open(p->count_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		pc_log(ctx, PC_LOG_ERROR, "cannot open %s: %s", p->count_file,
		       strerror(errno));
		return;
	}
	if (write(fd, line, (size_t)len) != len)
		pc_log(ctx, PC_LOG_ERROR, "cannot write %s", p->count_file);
	close(fd);
}

/* probe_session - check (or create) the session data; returns a note for
 * the count file when it belongs to another session */
static const char *probe_session(pc_ctx *ctx)
{
	const char *id = pc_session_id(ctx);
	char *mine = pc_session_data(ctx);

	if (!mine) {
		if (id && (mine = strdup(id)))
			pc_set_session_data(ctx, mine);
		return NULL;
	}
	return id && strcmp(mine, id) != 0 ? "wrong-session-data" : NULL;
}

/* probe_contains - whether text contains the match substring */
static bool probe_contains(const char *text, const char *match)
{
	return text && strstr(text, match) != NULL;
}

/* probe_matches - whether the match option (if any) holds at stage */
static bool probe_matches(pc_ctx *ctx, enum probe_stage stage)
{
	const struct probe *p = pc_instance(ctx);

	if (!p->match)
		return true;
	switch (stage) {
	case PROBE_CONNECT: return probe_contains(pc_client_addr(ctx), p->match);
	case PROBE_HELO: return probe_contains(pc_helo(ctx), p->match);
	case PROBE_MAIL: return probe_contains(pc_sender(ctx), p->match);
	case PROBE_RCPT: return probe_contains(pc_rcpt_current(ctx), p->match);
	case PROBE_DATA:
		if (probe_contains(pc_sender(ctx), p->match))
			return true;
		for (size_t i = 0; i < pc_rcpt_count(ctx); i++)
			if (probe_contains(pc_rcpt(ctx, i), p->match))
				return true;
		return false;
	}
	return false;
}

/* probe_headers - the header changes of the data hook */
static void probe_headers(pc_ctx *ctx)
{
	const struct probe *p = pc_instance(ctx);

	if (p->add.name && pc_header_add(ctx, p->add.name, p->add.value) < 0)
		pc_log(ctx, PC_LOG_WARNING, "pc_header_add(%s) failed", p->add.name);
	if (p->insert.name &&
	    pc_header_insert(ctx, p->insert.name, p->insert.value) < 0)
		pc_log(ctx, PC_LOG_WARNING, "pc_header_insert(%s) failed",
		       p->insert.name);
	if (p->change.name &&
	    pc_header_change(ctx, p->change.name, 0, p->change.value) < 0)
		pc_log(ctx, PC_LOG_WARNING, "pc_header_change(%s) failed",
		       p->change.name);
}

/* probe_address - "ADDR [PARAMS]" split; "<>" is the null sender */
static void probe_address(const char *opt, char *addr, size_t cap, const char **params)
{
	size_t n = strcspn(opt, " ");

	snprintf(addr, cap, "%.*s", (int)n, opt);
	if (strcmp(addr, "<>") == 0)
		addr[0] = '\0';
	*params = opt[n] ? opt + n + 1 : NULL;
}

/* probe_envelope - the envelope and body changes of the data hook */
static void probe_envelope(pc_ctx *ctx)
{
	const struct probe *p = pc_instance(ctx);
	const char *params;
	char addr[512];

	if (p->set_sender) {
		probe_address(p->set_sender, addr, sizeof(addr), &params);
		if (pc_set_sender(ctx, addr, params) < 0)
			pc_log(ctx, PC_LOG_WARNING, "pc_set_sender(%s) failed", addr);
	}
	if (p->add_rcpt) {
		probe_address(p->add_rcpt, addr, sizeof(addr), &params);
		if (pc_rcpt_add(ctx, addr, params) < 0)
			pc_log(ctx, PC_LOG_WARNING, "pc_rcpt_add(%s) failed", addr);
	}
	if (p->delete_rcpt && pc_rcpt_delete(ctx, p->delete_rcpt) < 0)
		pc_log(ctx, PC_LOG_WARNING, "pc_rcpt_delete(%s) failed", p->delete_rcpt);
	if (p->replace_body) {
		size_t half = strlen(p->replace_body) / 2;
		if (pc_body_replace(ctx, p->replace_body, half) < 0 ||
		    pc_body_replace(ctx, p->replace_body + half,
				    strlen(p->replace_body) - half) < 0 ||
		    pc_body_replace(ctx, "\n", 1) < 0)
			pc_log(ctx, PC_LOG_WARNING, "pc_body_replace() failed");
	}
	if (p->quarantine && pc_quarantine(ctx, p->quarantine) < 0)
		pc_log(ctx, PC_LOG_WARNING, "pc_quarantine() failed");
}

/* probe_report_envelope - the envelope and body as this hook sees them */
static void probe_report_envelope(pc_ctx *ctx)
{
	char out[2048], body[61];
	const char *bp = pc_mail_param(ctx, "BODY");
	ssize_t n = pc_body_read(ctx, 0, body, 60);
	size_t o;

	o = (size_t)snprintf(out, sizeof(out), "%s BODY=%s|", pc_sender(ctx) ? pc_sender(ctx) : "-",
			     bp ? bp : "-");
	for (size_t i = 0; i < pc_rcpt_count(ctx) && o < sizeof(out) - 600; i++)
		o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%s", i ? "," : "", pc_rcpt(ctx, i));
	body[n > 0 ? n : 0] = '\0';
	snprintf(out + o, sizeof(out) - o, "|%s", body);
	pc_result(ctx, "envelope", out);
}

/* probe_sleep - sleep the configured time, whatever signals arrive */
static void probe_sleep(double seconds)
{
	struct timespec left;

	left.tv_sec = (time_t)seconds;
	left.tv_nsec = (long)((seconds - (double)left.tv_sec) * 1e9);
	while (nanosleep(&left, &left) < 0 && errno == EINTR)
		continue;
}

/* probe_crash - die of SIGSEGV, as a filter with a wild pointer would */
static void probe_crash(void)
{
	struct rlimit none = { 0, 0 };

	/* No core file left behind by the tests. The default action, not a
	 * sanitizer's handler: the test is about the daemon surviving the
	 * death of a worker, not about this plugin's bug. */
	setrlimit(RLIMIT_CORE, &none);
	signal(SIGSEGV, SIG_DFL);
	raise(SIGSEGV);
	abort(); /* not reached */
}

/* probe_report_tls - what the TLS accessors say, as results */
static void probe_report_tls(pc_ctx *ctx)
{
	const char *v;

	pc_result_int(ctx, "tls", pc_tls(ctx));
	if (!pc_tls(ctx))
		return;
	pc_result_int(ctx, "tls_bits", pc_tls_bits(ctx));
	if ((v = pc_tls_version(ctx)))
		pc_result(ctx, "tls_version", v);
	if ((v = pc_tls_cipher(ctx)))
		pc_result(ctx, "tls_cipher", v);
	if ((v = pc_tls_sni(ctx)))
		pc_result(ctx, "tls_sni", v);
	if ((v = pc_tls_peer_subject(ctx)))
		pc_result(ctx, "tls_peer_subject", v);
	if ((v = pc_tls_peer_fingerprint(ctx)))
		pc_result(ctx, "tls_peer_fingerprint", v);
}

/* probe_hook - what every hook does: count, keep data, maybe act */
static enum pc_status probe_hook(pc_ctx *ctx, enum probe_stage stage)
{
	const struct probe *p = pc_instance(ctx);
	bool matches;

	probe_count(ctx, probe_stage_names[stage], probe_session(ctx));
	if (stage == PROBE_MAIL && !pc_tx_data(ctx)) {
		const char *sender = pc_sender(ctx);
		char *copy = strdup(sender ? sender : "");

		if (copy)
			pc_set_tx_data(ctx, copy);
	}
	matches = probe_matches(ctx, stage);
	if (stage == PROBE_DATA && matches) {
		probe_headers(ctx);
		probe_envelope(ctx);
	}
	if (stage != p->stage || !matches)
		return PC_CONTINUE;
	if (p->result_key)
		pc_result(ctx, p->result_key, p->result_value);
	if (p->result_int_key)
		pc_result_int(ctx, p->result_int_key, p->result_int);
	if (p->report_thread)
		pc_result_int(ctx, "loop_thread", gettid() == getpid());
	if (p->report_client) {
		char who[1200];
		const char *name = pc_client_name(ctx), *helo = pc_helo(ctx);
		const char *login = pc_auth_user(ctx);
		snprintf(who, sizeof(who), "%s %u %s %s %s", pc_client_addr(ctx),
			 pc_client_port(ctx), name ? name : "-", helo ? helo : "-",
			 login ? login : "-");
		pc_result(ctx, "client", who);
	}
	if (p->report_tls)
		probe_report_tls(ctx);
	if (p->report_envelope)
		probe_report_envelope(ctx);
	if (p->size_limit)
		pc_set_size_limit(ctx, p->size_limit);
	if (p->sleep > 0)
		probe_sleep(p->sleep);
	if (p->crash)
		probe_crash();
	if (p->code && pc_set_reply(ctx, p->code, p->enh, "%s", p->text) < 0)
		pc_log(ctx, PC_LOG_INFO, "pc_set_reply(%d) refused", p->code);
	if (p->loop_wouldblock && gettid() == getpid())
		return PC_WOULDBLOCK;
	return (enum pc_status)p->verdict;
}

/* probe_connect, ... - the stage hooks */
static enum pc_status probe_connect(pc_ctx *ctx)
{
	return probe_hook(ctx, PROBE_CONNECT);
}

static enum pc_status probe_helo(pc_ctx *ctx)
{
	return probe_hook(ctx, PROBE_HELO);
}

static enum pc_status probe_mail(pc_ctx *ctx)
{
	return probe_hook(ctx, PROBE_MAIL);
}

static enum pc_status probe_rcpt(pc_ctx *ctx)
{
	return probe_hook(ctx, PROBE_RCPT);
}

static enum pc_status probe_data(pc_ctx *ctx)
{
	return probe_hook(ctx, PROBE_DATA);
}

/* probe_reset - the transaction ended: free its data */
static void probe_reset(pc_ctx *ctx)
{
	probe_count(ctx, "reset", probe_session(ctx));
	free(pc_tx_data(ctx));
	pc_set_tx_data(ctx, NULL);
}

/* probe_close - the session ended: free its data */
static void probe_close(pc_ctx *ctx)
{
	const char *note = probe_session(ctx);
	char *tx = pc_tx_data(ctx);

	if (!note && tx)
		note = "tx-data-left";
	probe_count(ctx, "close", note);
	free(tx);
	pc_set_tx_data(ctx, NULL);
	free(pc_session_data(ctx));
	pc_set_session_data(ctx, NULL);
}

static const char *const probe_options[] = {
	"stage",	"verdict",	 "code",	  "enh",
	"text",		"match",	 "sleep",	  "crash",
	"result",	"result_int",	 "size_limit",	  "add_header",
	"insert_header", "change_header", "count_file",	  "report_thread", "report_client",
	"report_tls",
	"loop_wouldblock", "set_sender", "add_rcpt", "delete_rcpt", "replace_body",
	"quarantine", "report_envelope", NULL,
};

const struct pc_filter portcullis_filter = {
#ifdef PROBE_OLD_DESCRIPTOR
	.abi_version = PC_FILTER_ABI_VERSION,
	.size = PC_FILTER_SIZE_1,
#else
	PC_FILTER_HEADER,
#endif
	.name = "probe",
	.description = "configurable test filter: any verdict at any stage",
	.options = probe_options,
	.init = probe_init,
	.fini = probe_fini,
	.connect = probe_connect,
	.helo = probe_helo,
	.mail = probe_mail,
	.rcpt = probe_rcpt,
	.data = probe_data,
	.reset = probe_reset,
	.close = probe_close,
#if defined(PROBE_NONBLOCKING) || defined(PROBE_OLD_DESCRIPTOR)
	.nonblocking = PC_HOOK_CONNECT | PC_HOOK_HELO | PC_HOOK_MAIL | PC_HOOK_RCPT |
		       PC_HOOK_DATA | PC_HOOK_RESET | PC_HOOK_CLOSE,
#endif
};
