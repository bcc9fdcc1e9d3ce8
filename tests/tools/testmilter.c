/*
 * testmilter.c - a milter built with libmilter, for the milter filter's tests
 *
 * usage: testmilter [-c reject|tempfail|accept] [-l LOG] SOCKET
 *
 * SOCKET as libmilter takes it (unix:/path, inet:port@127.0.0.1). Each
 * reply and each header change a milter can make is asked for by the
 * test through the message it sends:
 *
 *	-c ACTION		the reply to every connection
 *	HELO reject.helo	550 5.7.1 HELO refused by testmilter
 *	MAIL from reject@	550 5.7.1 Sender refused by testmilter
 *	          tempfail@	tempfail (the MTA's default reply)
 *	          accept@	accept: nothing more of this message
 *	          multiline@	a two-line 550 5.7.1 reply
 *	          discard@	discard at the end of the message
 *	          eomreject@	554 5.7.1 Message refused by testmilter
 *	          sleep@	3 s before the end-of-message reply
 *	          progress@	3 s in 1 s steps, a progress reply after each
 *	          skip@		skip after the first body chunk
 *	          chgfrom@	sender changed to new-sender@ (same domain),
 *				ESMTP arguments left alone
 *	          chgfromargs@	likewise, with the arguments "BODY=7BIT"
 *	          addrcpt@	adds <added@DOMAIN> and, with ESMTP arguments
 *				"NOTIFY=NEVER", <added-par@DOMAIN>
 *	          delrcpt@	deletes the first recipient
 *	          delall@	deletes every recipient
 *	          replbody@	replaces the body with 7001 lines (154,022
 *				bytes, the first ".dot line") in two calls,
 *				so in several packets
 *	          quarantine@	quarantines ("testmilter quarantine") and
 *				changes nothing else
 *	RCPT to refused@	550 5.1.1 Recipient refused by testmilter
 *	        tempfailrcpt@	tempfail for that recipient
 *
 * Otherwise, at the end of the message it inserts X-Testmilter-Top at the
 * top and X-Testmilter-Second before the second field, adds
 * X-Testmilter (what it saw: sender, recipients, header fields, body
 * bytes and chunks), X-Testmilter-Macros and X-Testmilter-Client, changes
 * "Subject: change me" to "changed by testmilter", deletes X-Remove-Me,
 * and continues. Every event is written as one line to LOG (stderr by
 * default): connect, helo, mail, rcpt, header, eoh, body, eom, abort,
 * close, each with what it got.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

static FILE *logfile;
static const char *connect_action = "continue";

/* What one connection has seen. */
struct seen {
	char client[512];
	char helo[256];
	char sender[512];
	char macros[1024];
	char rcpt[8][512]; /* the first recipients */
	int rcpts, headers, chunks;
	long body;
	int change_subject, remove_me;
};

/* say - one line to the log */
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(logfile, fmt, ap);
	va_end(ap);
	fputc('\n', logfile);
	fflush(logfile);
}

/* sender_is - whether the sender's local part is word */
static int sender_is(const struct seen *s, const char *word)
{
	size_t n = strlen(word);

	return strncasecmp(s->sender, word, n) == 0 && s->sender[n] == '@';
}

/* local_is - whether addr ("<x@y>" or "x@y") has the local part word */
static int local_is(const char *addr, const char *word)
{
	size_t n = strlen(word);

	if (*addr == '<')
		addr++;
	return strncasecmp(addr, word, n) == 0 && addr[n] == '@';
}

/* macro - a macro's value or "-" */
static const char *macro(SMFICTX *ctx, const char *name)
{
	const char *v = smfi_getsymval(ctx, (char *)name);

	return v ? v : "-";
}

static sfsistat t_connect(SMFICTX *ctx, char *host, __attribute__((unused)) struct sockaddr *sa)
{
	struct seen *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return SMFIS_TEMPFAIL;
	smfi_setpriv(ctx, s);
	snprintf(s->client, sizeof(s->client), "%s", host);
	snprintf(s->macros, sizeof(s->macros), "j=%s {daemon_name}=%s _=%s",
		 macro(ctx, "j"), macro(ctx, "{daemon_name}"), macro(ctx, "_"));
	say("connect %s %s", host, s->macros);
	if (strcmp(connect_action, "reject") == 0)
		return SMFIS_REJECT;
	if (strcmp(connect_action, "tempfail") == 0)
		return SMFIS_TEMPFAIL;
	if (strcmp(connect_action, "accept") == 0)
		return SMFIS_ACCEPT;
	return SMFIS_CONTINUE;
}

static sfsistat t_helo(SMFICTX *ctx, char *helo)
{
	struct seen *s = smfi_getpriv(ctx);

	say("helo %s", helo);
	snprintf(s->helo, sizeof(s->helo), "%s", helo);
	if (strcmp(helo, "reject.helo") == 0) {
		smfi_setreply(ctx, "550", "5.7.1", "HELO refused by testmilter");
		return SMFIS_REJECT;
	}
	return SMFIS_CONTINUE;
}

static sfsistat t_envfrom(SMFICTX *ctx, char **argv)
{
	struct seen *s = smfi_getpriv(ctx);
	const char *a = argv[0];
	char args[512] = "";
	size_t n;

	for (int i = 1; argv[i]; i++)
		snprintf(args + strlen(args), sizeof(args) - strlen(args), " %s", argv[i]);
	say("mail %s%s i=%s {auth_authen}=%s {mail_addr}=%s", a, args, macro(ctx, "i"),
	    macro(ctx, "{auth_authen}"), macro(ctx, "{mail_addr}"));
	if (*a == '<')
		a++;
	snprintf(s->sender, sizeof(s->sender), "%s", a);
	n = strlen(s->sender);
	if (n && s->sender[n - 1] == '>')
		s->sender[n - 1] = '\0';
	s->rcpts = s->headers = s->chunks = 0;
	s->body = 0;
	s->change_subject = s->remove_me = 0;
	snprintf(s->macros + strlen(s->macros), sizeof(s->macros) - strlen(s->macros),
		 " i=%s {auth_authen}=%s", macro(ctx, "i"), macro(ctx, "{auth_authen}"));
	if (sender_is(s, "reject")) {
		smfi_setreply(ctx, "550", "5.7.1", "Sender refused by testmilter");
		return SMFIS_REJECT;
	}
	if (sender_is(s, "tempfail"))
		return SMFIS_TEMPFAIL;
	if (sender_is(s, "accept"))
		return SMFIS_ACCEPT;
	if (sender_is(s, "multiline")) {
		smfi_setmlreply(ctx, "550", "5.7.1", "first line", "second line", NULL);
		return SMFIS_REJECT;
	}
	return SMFIS_CONTINUE;
}

static sfsistat t_envrcpt(SMFICTX *ctx, char **argv)
{
	struct seen *s = smfi_getpriv(ctx);

	say("rcpt %s {rcpt_addr}=%s", argv[0], macro(ctx, "{rcpt_addr}"));
	if (local_is(argv[0], "refused")) {
		smfi_setreply(ctx, "550", "5.1.1", "Recipient refused by testmilter");
		return SMFIS_REJECT;
	}
	if (local_is(argv[0], "tempfailrcpt"))
		return SMFIS_TEMPFAIL;
	if (s->rcpts < 8)
		snprintf(s->rcpt[s->rcpts], sizeof(s->rcpt[0]), "%s", argv[0]);
	s->rcpts++;
	return SMFIS_CONTINUE;
}

/* envelope_changes - what the senders that change the envelope or body ask for */
static void envelope_changes(SMFICTX *ctx, struct seen *s)
{
	const char *domain = strchr(s->sender, '@');
	char addr[600];

	domain = domain ? domain + 1 : "invalid";
	if (sender_is(s, "chgfrom") || sender_is(s, "chgfromargs")) {
		snprintf(addr, sizeof(addr), "<new-sender@%s>", domain);
		smfi_chgfrom(ctx, addr, sender_is(s, "chgfromargs") ? "BODY=7BIT" : NULL);
	}
	if (sender_is(s, "addrcpt")) {
		snprintf(addr, sizeof(addr), "<added@%s>", domain);
		smfi_addrcpt(ctx, addr);
		snprintf(addr, sizeof(addr), "<added-par@%s>", domain);
		smfi_addrcpt_par(ctx, addr, "NOTIFY=NEVER");
	}
	if (sender_is(s, "delrcpt") && s->rcpts > 0)
		smfi_delrcpt(ctx, s->rcpt[0]);
	if (sender_is(s, "delall"))
		for (int i = 0; i < s->rcpts && i < 8; i++)
			smfi_delrcpt(ctx, s->rcpt[i]);
	if (sender_is(s, "replbody")) {
		/* 22 bytes a line: ".dot line" and 7000 numbered ones. */
		static unsigned char body[200000];
		size_t n = (size_t)sprintf((char *)body, "%-20s\r\n", ".dot line");

		for (int i = 1; i <= 7000; i++)
			n += (size_t)sprintf((char *)body + n, "replaced line %06d\r\n", i);
		smfi_replacebody(ctx, body, 100000);
		smfi_replacebody(ctx, body + 100000, (int)(n - 100000));
	}
}

static sfsistat t_header(SMFICTX *ctx, char *name, char *value)
{
	struct seen *s = smfi_getpriv(ctx);

	say("header %s: [%s]", name, value);
	s->headers++;
	if (strcasecmp(name, "Subject") == 0 && strcmp(value, "change me") == 0)
		s->change_subject = 1;
	if (strcasecmp(name, "X-Remove-Me") == 0)
		s->remove_me = 1;
	return SMFIS_CONTINUE;
}

static sfsistat t_eoh(__attribute__((unused)) SMFICTX *ctx)
{
	say("eoh");
	return SMFIS_CONTINUE;
}

static sfsistat t_body(SMFICTX *ctx, __attribute__((unused)) unsigned char *data, size_t len)
{
	struct seen *s = smfi_getpriv(ctx);

	s->body += (long)len;
	s->chunks++;
	say("body %zu", len);
	if (sender_is(s, "skip"))
		return SMFIS_SKIP;
	return SMFIS_CONTINUE;
}

static sfsistat t_eom(SMFICTX *ctx)
{
	struct seen *s = smfi_getpriv(ctx);
	char what[1024];

	say("eom i=%s", macro(ctx, "i"));
	if (sender_is(s, "discard"))
		return SMFIS_DISCARD;
	if (sender_is(s, "eomreject")) {
		smfi_setreply(ctx, "554", "5.7.1", "Message refused by testmilter");
		return SMFIS_REJECT;
	}
	if (sender_is(s, "quarantine")) {
		smfi_quarantine(ctx, "testmilter quarantine");
		return SMFIS_CONTINUE;
	}
	envelope_changes(ctx, s);
	if (sender_is(s, "sleep"))
		sleep(3);
	if (sender_is(s, "progress"))
		for (int i = 0; i < 3; i++) {
			sleep(1);
			smfi_progress(ctx);
		}
	snprintf(what, sizeof(what), "from=<%s> rcpts=%d headers=%d body=%ld chunks=%d",
		 s->sender, s->rcpts, s->headers, s->body, s->chunks);
	smfi_insheader(ctx, 0, "X-Testmilter-Top", "first");
	smfi_insheader(ctx, 1, "X-Testmilter-Second", "second");
	smfi_addheader(ctx, "X-Testmilter", what);
	smfi_addheader(ctx, "X-Testmilter-Macros", s->macros);
	snprintf(what, sizeof(what), "%s helo=%s", s->client, s->helo);
	smfi_addheader(ctx, "X-Testmilter-Client", what);
	if (s->change_subject)
		smfi_chgheader(ctx, "Subject", 1, "changed by testmilter");
	if (s->remove_me)
		smfi_chgheader(ctx, "X-Remove-Me", 1, NULL);
	return SMFIS_CONTINUE;
}

static sfsistat t_abort(__attribute__((unused)) SMFICTX *ctx)
{
	say("abort");
	return SMFIS_CONTINUE;
}

static sfsistat t_close(SMFICTX *ctx)
{
	say("close");
	free(smfi_getpriv(ctx));
	smfi_setpriv(ctx, NULL);
	return SMFIS_CONTINUE;
}

static struct smfiDesc desc = {
	.xxfi_name = "testmilter",
	.xxfi_version = SMFI_VERSION,
	.xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGFROM | SMFIF_ADDRCPT |
		      SMFIF_ADDRCPT_PAR | SMFIF_DELRCPT | SMFIF_CHGBODY | SMFIF_QUARANTINE,
	.xxfi_connect = t_connect,
	.xxfi_helo = t_helo,
	.xxfi_envfrom = t_envfrom,
	.xxfi_envrcpt = t_envrcpt,
	.xxfi_header = t_header,
	.xxfi_eoh = t_eoh,
	.xxfi_body = t_body,
	.xxfi_eom = t_eom,
	.xxfi_abort = t_abort,
	.xxfi_close = t_close,
};

int main(int argc, char **argv)
{
	int ch;

	logfile = stderr;
	while ((ch = getopt(argc, argv, "c:l:")) != -1) {
		switch (ch) {
		case 'c':
			connect_action = optarg;
			break;
		case 'l':
			if ((logfile = fopen(optarg, "a")) == NULL) {
				perror(optarg);
				return 2;
			}
			break;
		default:
			fprintf(stderr, "usage: testmilter [-c reject|tempfail|accept] [-l LOG] SOCKET\n");
			return 2;
		}
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "usage: testmilter [-c reject|tempfail|accept] [-l LOG] SOCKET\n");
		return 2;
	}
	if (smfi_setconn(argv[optind]) == MI_FAILURE || smfi_register(desc) == MI_FAILURE) {
		fprintf(stderr, "testmilter: cannot set up %s\n", argv[optind]);
		return 1;
	}
	if (strncmp(argv[optind], "unix:", 5) == 0)
		unlink(argv[optind] + 5);
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
