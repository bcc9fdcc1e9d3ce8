/*
 * fuzz_smtp.c - libFuzzer target for the SMTP protocol codec
 *
 * Runs every parser of proxy/smtp.c over the input and checks the
 * properties the rest of the proxy relies on, calling abort() when one
 * breaks so libFuzzer keeps the input:
 *  - line scanning never over-reads or stalls, and a prefix that yields
 *    a line yields the same line as the whole buffer;
 *  - a parsed MAIL/RCPT path, written back out, parses to the same path;
 *  - a reply read line by line, formatted and read again, is the same;
 *  - the data decoder gives the same output and flags however the input
 *    is split (all at once, byte by byte, random chunks), and normalize
 *    mode leaves no bare CR or LF;
 *  - decode(encode(x) + end) is x, plus CRLF when x did not end in one;
 *  - xtext encoding is valid xtext that decodes back to the input;
 *  - the command rules refuse only with their replies, and never a
 *    command whose row has no flags;
 *  - the MAIL/RCPT parameter checks refuse only with their replies, take
 *    no parameter after HELO or of an extension not offered, and what
 *    they take under some offer they take when everything is offered.
 * Every parser reads a heap copy of exactly the input's size, so ASan
 * reports a read past its end. Build and run it with tests/fuzz/run-fuzz.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp.h"
#include "fuzz.h"


/* xmalloc - malloc that never returns NULL (a fuzzer may just stop) */
static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		abort();
	return p;
}

/* A small deterministic generator, seeded from the input. */
static uint64_t rng_state;

static uint32_t rng(void)
{
	rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (uint32_t)(rng_state >> 33);
}

static void rng_seed(const uint8_t *data, size_t size)
{
	size_t i;

	rng_state = 1469598103934665603ULL;
	for (i = 0; i < size; i++)
		rng_state = (rng_state ^ data[i]) * 1099511628211ULL;
}

/* ---- line scanning and commands ---- */

/* check_command - parse one line as a command, and its path if any */
static void check_path(const char *arg, size_t len, bool is_rcpt);

/* check_rules - smtp_command_check() under random flags and state */
static void check_rules(const struct smtp_command *cmd)
{
	struct smtp_cmd_state st = { false, false, false, false };
	struct smtp_error err;
	unsigned flags = rng() & 0xff;

	must(smtp_command_check(cmd, 0, &st, &err) == 0);
	st.tls_required = rng() & 1;
	st.tls_active = rng() & 1;
	st.helo = rng() & 1;
	st.in_mail = rng() & 1;
	if (smtp_command_check(cmd, flags, &st, &err) == 0) {
		must(!(flags & SMTP_CMD_ARG_NONE) || cmd->arg_len == 0);
		must(!(flags & (SMTP_CMD_ARG_ONE | SMTP_CMD_ARG_SOME)) ||
		     cmd->arg_len > 0);
		must(!(flags & SMTP_CMD_NEEDS_MAIL) || st.in_mail);
		must(!(flags & SMTP_CMD_NOT_IN_MAIL) || !st.in_mail);
		return;
	}
	must(err.code == 530 || err.code == 501 || err.code == 503);
	must(err.enh != NULL && err.text != NULL);
}

static void check_command(const char *line, size_t len)
{
	struct smtp_command cmd;
	struct smtp_error err;

	if (smtp_command_parse(line, len, &cmd, &err) != 0) {
		must(err.code == 500 && err.enh != NULL && err.text != NULL);
		return;
	}
	must(cmd.verb >= SMTP_VERB_UNKNOWN && cmd.verb < SMTP_VERB_COUNT);
	must(cmd.arg >= line && cmd.arg + cmd.arg_len == line + len);
	must(smtp_verb_name(cmd.verb) != NULL);
	must(smtp_verb_syntax(cmd.verb) != NULL);
	check_rules(&cmd);
	if (cmd.verb == SMTP_VERB_MAIL)
		check_path(cmd.arg, cmd.arg_len, false);
	else if (cmd.verb == SMTP_VERB_RCPT)
		check_path(cmd.arg, cmd.arg_len, true);
	else if (cmd.verb == SMTP_VERB_EHLO || cmd.verb == SMTP_VERB_HELO)
		(void)smtp_domain_valid(cmd.arg, cmd.arg_len, true);
}

/* scan_lines - split buf into lines the way the session does */
static void scan_lines(const char *buf, size_t len, size_t max_len)
{
	enum smtp_line_status st;
	size_t pos = 0, ll, cons, cut, ll2, cons2;
	bool found;

	while (pos < len) {
		st = smtp_line_scan(buf + pos, len - pos, max_len, &ll, &cons);
		must(cons <= len - pos);
		switch (st) {
		case SMTP_LINE_INCOMPLETE:
			must(cons == 0);
			return;
		case SMTP_LINE_OK:
		case SMTP_LINE_BARE_LF:
		case SMTP_LINE_BARE_CR:
			must(ll <= max_len && cons > ll);
			must(buf[pos + cons - 1] == '\n');
			must(memchr(buf + pos, '\n', cons - 1) == NULL);
			if (st == SMTP_LINE_OK) {
				must(cons == ll + 2 && buf[pos + ll] == '\r');
				must(memchr(buf + pos, '\r', ll) == NULL);
			}
			/* any prefix holding the LF gives the same line */
			cut = cons + rng() % (len - pos - cons + 1);
			must(smtp_line_scan(buf + pos, cut, max_len, &ll2,
					    &cons2) == st);
			must(ll2 == ll && cons2 == cons);
			check_command(buf + pos, ll);
			pos += cons;
			break;
		case SMTP_LINE_TOO_LONG:
			must(cons > max_len || memchr(buf + pos, '\r', cons));
			pos += cons;
			cons = smtp_line_skip(buf + pos, len - pos, &found);
			must(cons <= len - pos);
			must(!found || buf[pos + cons - 1] == '\n');
			pos += cons;
			break;
		default:
			must(!"unknown line status");
		}
	}
}

/* ---- paths ---- */

/* same_str - equal strings, NULL only equal to NULL */
static bool same_str(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* append - add s[0..n) at *pos in buf (size cap) */
static void append(char *buf, size_t cap, size_t *pos, const char *s,
		   size_t n)
{
	must(*pos + n <= cap);
	memcpy(buf + *pos, s, n);
	*pos += n;
}

/* check_reparse - a parsed path written out again parses the same */
static void check_reparse(const struct smtp_path *p, bool is_rcpt)
{
	struct smtp_path q;
	struct smtp_error err;
	size_t cap = 16, n = 0, i;
	char *buf;
	const char *kw = is_rcpt ? "TO:<" : "FROM:<";

	cap += strlen(p->path) + (p->route ? strlen(p->route) : 0);
	for (i = 0; i < p->nparams; i++)
		cap += 2 + strlen(p->params[i].keyword) +
		       (p->params[i].value ? strlen(p->params[i].value) : 0);
	buf = xmalloc(cap);

	append(buf, cap, &n, kw, strlen(kw));
	if (p->route != NULL) {
		append(buf, cap, &n, p->route, strlen(p->route));
		append(buf, cap, &n, ":", 1);
	}
	append(buf, cap, &n, p->path, strlen(p->path));
	append(buf, cap, &n, ">", 1);
	for (i = 0; i < p->nparams; i++) {
		append(buf, cap, &n, " ", 1);
		append(buf, cap, &n, p->params[i].keyword,
		       strlen(p->params[i].keyword));
		if (p->params[i].value != NULL) {
			append(buf, cap, &n, "=", 1);
			append(buf, cap, &n, p->params[i].value,
			       strlen(p->params[i].value));
		}
	}
	must(smtp_path_parse(buf, n, is_rcpt, &q, &err) == 0);
	must(same_str(p->path, q.path) && same_str(p->route, q.route));
	must(same_str(p->local, q.local) && same_str(p->domain, q.domain));
	must(p->null_path == q.null_path && p->postmaster == q.postmaster);
	must(p->utf8 == q.utf8 && p->nparams == q.nparams);
	for (i = 0; i < p->nparams; i++) {
		must(same_str(p->params[i].keyword, q.params[i].keyword));
		must(same_str(p->params[i].value, q.params[i].value));
	}
	smtp_path_free(&q);
	free(buf);
}

/* params_rc - the parameter check of a parsed path under offer o */
static int params_rc(const struct smtp_path *p, bool is_rcpt,
		     const struct smtp_offer *o, unsigned long long size_max,
		     bool smtputf8, struct smtp_error *err)
{
	bool utf8 = false;
	int rc;

	if (is_rcpt)
		return smtp_rcpt_params_check(p, o, smtputf8, err);
	rc = smtp_mail_params_check(p, o, size_max, &utf8, err);
	if (rc == 0)
		must(utf8 == (smtp_path_param(p, "SMTPUTF8") != NULL));
	return rc;
}

/* check_params - the ESMTP parameter checks over a parsed path */
static void check_params(const struct smtp_path *p, bool is_rcpt)
{
	static const struct smtp_offer all = { true, true, 0, true, true, true };
	struct smtp_offer o = { false, false, 0, false, false, false };
	struct smtp_error err;
	unsigned long long size_max = rng() % 100000;
	bool smtputf8 = rng() & 1;
	int rc;

	/* after HELO: no parameter at all */
	rc = params_rc(p, is_rcpt, &o, size_max, smtputf8, &err);
	if (p->nparams > 0)
		must(rc < 0 && err.code == 555);
	o.esmtp = true;
	/* nothing offered: no parameter either */
	rc = params_rc(p, is_rcpt, &o, size_max, smtputf8, &err);
	if (p->nparams > 0)
		must(rc < 0 && err.code == 555);
	o.size = rng() & 1;
	o.eightbitmime = rng() & 1;
	o.smtputf8 = rng() & 1;
	o.dsn = rng() & 1;
	rc = params_rc(p, is_rcpt, &o, size_max, smtputf8, &err);
	if (rc < 0) {
		must(err.code == 555 || err.code == 501 || err.code == 552 ||
		     err.code == 553);
		must(err.enh != NULL && err.text != NULL);
		return;
	}
	/* what a smaller offer takes, everything offered takes */
	must(params_rc(p, is_rcpt, &all, ~0ULL, true, &err) == 0);
}

static void check_path(const char *arg, size_t len, bool is_rcpt)
{
	struct smtp_path p;
	struct smtp_error err;
	size_t i;

	if (smtp_path_parse(arg, len, is_rcpt, &p, &err) != 0) {
		must(err.code == 501 || err.code == 452);
		must(err.enh != NULL && err.text != NULL);
		must(p.path == NULL && p.local == NULL && p.nparams == 0);
		smtp_path_free(&p);
		return;
	}
	must(p.path != NULL);
	must(p.nparams <= SMTP_MAX_PARAMS);
	if (p.null_path) {
		must(!is_rcpt && p.path[0] == '\0' && p.domain == NULL);
	} else if (p.postmaster) {
		must(is_rcpt && p.domain == NULL && p.route == NULL);
	} else {
		must(p.local != NULL && p.domain != NULL);
		must(strlen(p.local) <= SMTP_LOCAL_PART_MAX);
		must(strlen(p.domain) <= SMTP_DOMAIN_MAX);
		must(strlen(p.path) == strlen(p.local) + 1 + strlen(p.domain));
		must(smtp_domain_valid(p.domain, strlen(p.domain), true));
		if (!p.utf8)
			must(smtp_domain_valid(p.domain, strlen(p.domain),
					       false));
	}
	must(strlen(p.path) + 2 <= SMTP_PATH_MAX);
	for (i = 0; i < p.nparams; i++) {
		must(p.params[i].keyword != NULL && p.params[i].keyword[0]);
		must(smtp_path_param(&p, p.params[i].keyword) == &p.params[i]);
	}
	check_reparse(&p, is_rcpt);
	check_params(&p, is_rcpt);
	smtp_path_free(&p);
	must(p.path == NULL && p.nparams == 0);
	smtp_path_free(&p);
}

/* check_wrapped_path - the input as the inside of <...> in both modes */
static void check_wrapped_path(const uint8_t *data, size_t size)
{
	/* exactly "FROM:<" + data + ">": nothing past it to read */
	char *buf = xmalloc(size + 7);

	memcpy(buf, "FROM:<", 6);
	memcpy(buf + 6, data, size);
	buf[6 + size] = '>';
	check_path(buf, size + 7, false);
	memcpy(buf + 2, "TO:<", 4);
	check_path(buf + 2, size + 5, true);
	free(buf);
}

/* ---- replies ---- */

/* check_reply_roundtrip - format r, read it back, compare */
static void check_reply_roundtrip(const struct smtp_reply *r)
{
	struct smtp_reply r2;
	size_t need, n, pos = 0, i, small;
	char *out, *crlf;
	char tiny[16];
	int rc = 0;

	need = smtp_reply_format(r, NULL, NULL, 0);
	out = xmalloc(need + 1);
	must(smtp_reply_format(r, NULL, out, need + 1) == need);
	must(strlen(out) == need);

	memset(&r2, 0, sizeof(r2));
	while (pos < need) {
		crlf = strstr(out + pos, "\r\n");
		must(crlf != NULL);
		n = (size_t)(crlf - (out + pos));
		rc = smtp_reply_feed(&r2, out + pos, n);
		must(rc >= 0);
		pos += n + 2;
	}
	must(rc == 1 && r2.complete);
	must(r2.code == r->code && r2.nlines == r->nlines);
	must(strcmp(r2.enh, r->enh) == 0);
	for (i = 0; i < r->nlines; i++)
		must(strcmp(r2.lines[i], r->lines[i]) == 0);
	smtp_reply_reset(&r2);

	/* a default enhanced code and a short buffer behave like snprintf */
	small = rng() % sizeof(tiny);
	need = smtp_reply_format(r, "2.0.0", tiny, small);
	if (small > 0)
		must(strlen(tiny) == (need < small ? need : small - 1));
	free(out);
}

/* feed_replies - read the input as backend reply lines */
static void feed_replies(const char *buf, size_t len)
{
	struct smtp_reply r;
	struct smtp_caps caps;
	size_t pos = 0, n, i;
	const char *lf;
	int rc;

	memset(&r, 0, sizeof(r));
	while (pos < len) {
		const char *line = buf + pos;

		lf = memchr(line, '\n', len - pos);
		n = lf ? (size_t)(lf - line) : len - pos;
		pos += n + (lf != NULL);
		/* the CR of CRLF is not part of the line */
		if (lf != NULL && n > 0 && line[n - 1] == '\r')
			n--;
		rc = smtp_reply_feed(&r, line, n);
		if (rc < 0) {
			smtp_reply_reset(&r);
			continue;
		}
		must(r.nlines >= 1 && r.nlines <= SMTP_REPLY_MAX_LINES);
		must(r.code >= 200 && r.code <= 599);
		for (i = 0; i < r.nlines; i++)
			must(strlen(r.lines[i]) + 4 <= SMTP_REPLY_LINE_MAX);
		if (r.enh[0] != '\0')
			must(smtp_enh_valid(r.enh, r.code));
		if (rc == 1) {
			check_reply_roundtrip(&r);
			smtp_caps_parse(&r, &caps);
			must(strlen(caps.xclient_attrs) < sizeof(caps.xclient_attrs));
			must(strlen(caps.xforward_attrs) < sizeof(caps.xforward_attrs));
			smtp_reply_reset(&r);
		}
	}
	smtp_reply_reset(&r);
}

/* ---- message data ---- */

struct decoded {
	char *out;
	size_t out_len;
	size_t consumed;
	bool done, bare_lf, bare_cr;
	unsigned long long bytes_out;
};

/*
 * decode_split - decode in with chunks of a size given by mode:
 * 0 all at once, 1 byte by byte, 2 random sizes
 */
static void decode_split(const char *in, size_t len, bool normalize,
			 int mode, struct decoded *r)
{
	struct smtp_data_decoder d;
	size_t pos = 0, n, c, olen;
	char *tmp;

	memset(r, 0, sizeof(*r));
	r->out = xmalloc(2 * len + 2);
	tmp = xmalloc(2 * len + 2);
	smtp_data_decoder_init(&d, normalize);
	while (pos < len && !d.done) {
		if (mode == 0)
			n = len - pos;
		else if (mode == 1)
			n = 1;
		else
			n = 1 + rng() % (len - pos < 64 ? len - pos : 64);
		/* the output bound of smtp.h, checked with ASan's help */
		c = smtp_data_decode(&d, in + pos, n, tmp, &olen);
		must(c <= n);
		must(c == n || d.done);
		must(olen <= 2 * n + 2);
		must(r->out_len + olen <= 2 * len + 2);
		memcpy(r->out + r->out_len, tmp, olen);
		r->out_len += olen;
		pos += c;
	}
	/* after the end, nothing more is taken */
	if (d.done && pos < len) {
		must(smtp_data_decode(&d, in + pos, len - pos, tmp, &olen) == 0);
		must(olen == 0);
	}
	r->consumed = pos;
	r->done = d.done;
	r->bare_lf = d.bare_lf;
	r->bare_cr = d.bare_cr;
	r->bytes_out = d.bytes_out;
	free(tmp);
}

static void same_decoded(const struct decoded *a, const struct decoded *b)
{
	must(a->out_len == b->out_len);
	must(a->out_len == 0 || memcmp(a->out, b->out, a->out_len) == 0);
	must(a->consumed == b->consumed && a->done == b->done);
	must(a->bare_lf == b->bare_lf && a->bare_cr == b->bare_cr);
	must(a->bytes_out == b->bytes_out);
}

static void check_decoder(const char *in, size_t len)
{
	struct decoded whole, bytes, rnd, norm;
	size_t i;
	int nm;

	for (nm = 0; nm < 2; nm++) {
		decode_split(in, len, nm, 0, &whole);
		decode_split(in, len, nm, 1, &bytes);
		decode_split(in, len, nm, 2, &rnd);
		same_decoded(&whole, &bytes);
		same_decoded(&whole, &rnd);
		must(whole.bytes_out == whole.out_len);
		if (whole.done) {
			/* only <CRLF>.<CRLF> ends, DATA's CRLF being the first */
			must(whole.consumed >= 3);
			must(memcmp(in + whole.consumed - 3, ".\r\n", 3) == 0);
			must(whole.consumed == 3 ||
			     (whole.consumed >= 5 &&
			      in[whole.consumed - 5] == '\r' &&
			      in[whole.consumed - 4] == '\n'));
		} else {
			must(whole.consumed == len);
		}
		if (nm == 1) {
			/* normalized output holds CR only in CRLF */
			for (i = 0; i < whole.out_len; i++) {
				if (whole.out[i] == '\r')
					must(i + 1 < whole.out_len &&
					     whole.out[i + 1] == '\n');
				if (whole.out[i] == '\n')
					must(i > 0 && whole.out[i - 1] == '\r');
			}
			/* without bare line ends, normalizing changes nothing */
			decode_split(in, len, false, 0, &norm);
			must(norm.done == whole.done);
			if (!whole.bare_lf && !whole.bare_cr)
				same_decoded(&norm, &whole);
			free(norm.out);
		}
		free(whole.out);
		free(bytes.out);
		free(rnd.out);
	}
}

/* check_roundtrip - decode(encode(x) + end) == x (+ CRLF) */
static void check_roundtrip(const char *x, size_t len)
{
	struct smtp_data_encoder e;
	struct decoded r;
	char *enc = xmalloc(2 * len + 5);
	size_t n = 0, pos = 0, chunk;
	bool ends_crlf;

	smtp_data_encoder_init(&e);
	while (pos < len) {
		chunk = 1 + rng() % (len - pos);
		n += smtp_data_encode(&e, x + pos, chunk, enc + n);
		pos += chunk;
	}
	must(n <= 2 * len);
	n += smtp_data_encode_end(&e, enc + n);

	decode_split(enc, n, false, 2, &r);
	must(r.done && r.consumed == n);
	ends_crlf = len == 0 ||
		    (len >= 2 && x[len - 2] == '\r' && x[len - 1] == '\n');
	must(r.out_len == len + (ends_crlf ? 0 : 2));
	must(len == 0 || memcmp(r.out, x, len) == 0);
	if (!ends_crlf)
		must(memcmp(r.out + len, "\r\n", 2) == 0);
	free(r.out);
	free(enc);
}

/* crlf_only - a copy of in where every CR, LF or CRLF became CRLF */
static char *crlf_only(const char *in, size_t len, size_t *out_len)
{
	char *out = xmalloc(2 * len + 1);
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		if (in[i] == '\r' || in[i] == '\n') {
			if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
				i++;
			out[o++] = '\r';
			out[o++] = '\n';
		} else {
			out[o++] = in[i];
		}
	}
	*out_len = o;
	return out;
}

/* ---- xtext, domains, enhanced codes ---- */

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c - 'A' + 10;
}

static void check_xtext(const char *s)
{
	size_t need, cap, i, o;
	char *out, *small, *dec;

	need = smtp_xtext_encode(s, NULL, 0);
	out = xmalloc(need + 1);
	must(smtp_xtext_encode(s, out, need + 1) == need);
	must(strlen(out) == need);
	must(smtp_xtext_valid(out));

	/* decoding gives the input back */
	dec = xmalloc(need + 1);
	for (i = 0, o = 0; out[i] != '\0'; o++) {
		if (out[i] == '+') {
			dec[o] = (char)(hexval(out[i + 1]) * 16 + hexval(out[i + 2]));
			i += 3;
		} else {
			dec[o] = out[i++];
		}
	}
	dec[o] = '\0';
	must(strcmp(dec, s) == 0);

	/* a short buffer holds a valid prefix */
	cap = rng() % (need + 2);
	small = xmalloc(cap + 1);
	must(smtp_xtext_encode(s, small, cap) == need);
	if (cap > 0) {
		must(smtp_xtext_valid(small));
		must(strncmp(small, out, strlen(small)) == 0);
	}
	(void)smtp_xtext_valid(s);
	free(small);
	free(dec);
	free(out);
}

/*
 * exact_copy - data[0..size) in a heap block of exactly size bytes: the
 * parsers must never read past their input, and ASan only sees a read
 * one byte too far when nothing of the block lies there (the buffer
 * libFuzzer passes is not promised to be such a block)
 */
static char *exact_copy(const uint8_t *data, size_t size)
{
	char *p = malloc(size);

	if (p == NULL && size > 0)
		abort();
	if (size > 0)
		memcpy(p, data, size);
	return p;
}

/*
 * check_xattrs - XCLIENT/XFORWARD attributes: the answer is 0 with every
 * value of its kind, or a 501 5.5.4; what one verb takes, re-encoded as
 * xtext, parses again to the same values (the encoder and the parser agree)
 */
static void check_xattrs(const char *in, size_t len, bool xforward)
{
	struct smtp_xattrs x, y;
	struct smtp_error err;
	char *line, *p;
	size_t cap;

	if (smtp_xattrs_parse(in, len, xforward, &x, &err) < 0) {
		must(err.code == 501 && strcmp(err.enh, "5.5.4") == 0 && err.text);
		return;
	}
	cap = SMTP_XA_COUNT * (20 + 3 * SMTP_XATTR_MAX) + 1;
	line = xmalloc(cap);
	p = line;
	*p = '\0';
	for (int a = 0; a < SMTP_XA_COUNT; a++) {
		must(strlen(x.value[a]) <= SMTP_XATTR_MAX);
		if (x.state[a] == SMTP_XV_ABSENT)
			continue;
		must(((xforward ? SMTP_XFORWARD_ATTRS : SMTP_XCLIENT_ATTRS) & (1u << a)) != 0);
		if (x.state[a] != SMTP_XV_VALUE) {
			must(x.value[a][0] == '\0');
			p += sprintf(p, " %s=%s", smtp_xattr_name(a),
				     x.state[a] == SMTP_XV_TEMPUNAVAIL ? "[TEMPUNAVAIL]"
								       : "[UNAVAILABLE]");
			continue;
		}
		must(x.value[a][0] != '\0');
		/* addresses come back untagged: IPv6 takes its tag again */
		p += sprintf(p, " %s=%s", smtp_xattr_name(a),
			     (a == SMTP_XA_ADDR || a == SMTP_XA_DESTADDR) &&
					     strchr(x.value[a], ':') ? "IPV6:" : "");
		p += smtp_xtext_encode(x.value[a], p, (size_t)(line + cap - p));
	}
	must(smtp_xattrs_parse(line, strlen(line), xforward, &y, &err) == 0);
	for (int a = 0; a < SMTP_XA_COUNT; a++) {
		must(y.state[a] == x.state[a]);
		/* IPv6 addresses were canonical already; case of PROTO kept */
		must(strcmp(y.value[a], x.value[a]) == 0);
	}
	free(line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in, *str, *x;
	size_t xlen;

	if (size > 65536)
		return 0;
	rng_seed(data, size);
	in = exact_copy(data, size);

	/* one copy with a NUL at the end, for the string APIs */
	str = xmalloc(size + 1);
	memcpy(str, data, size);
	str[size] = '\0';

	scan_lines(in, size, 512);
	scan_lines(in, size, size > 0 ? data[0] % 40 : 0);
	check_command(in, size);
	check_path(in, size, false);
	check_path(in, size, true);
	check_wrapped_path(data, size);
	feed_replies(in, size);

	check_decoder(in, size);
	check_roundtrip(in, size);
	x = crlf_only(in, size, &xlen);
	check_roundtrip(x, xlen);
	free(x);

	check_xtext(str);
	check_xattrs(in, size, false);
	check_xattrs(in, size, true);
	(void)smtp_enh_valid(str, size > 0 ? 200 + data[0] % 400 : 0);
	(void)smtp_domain_valid(in, size, false);
	(void)smtp_domain_valid(in, size, true);
	if (smtp_domain_valid(in, size, false))
		must(smtp_domain_valid(in, size, true));

	free(str);
	free(in);
	return 0;
}
