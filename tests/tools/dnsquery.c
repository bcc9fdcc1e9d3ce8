/*
 * dnsquery.c - ask pc_dns_query() questions, print the replies as JSON
 *
 *	dnsquery -c CONF [-j THREADS] [-r REPEAT] [-b BUFLEN] [-s] [-v]
 *		 [NAME TYPE]...
 *
 * Loads CONF with conf_load() (a whole daemon configuration: its [dns]
 * section is what counts), calls dns_init(), then asks each NAME TYPE
 * (from the command line, else one "NAME TYPE" per line of stdin) REPEAT
 * times, from THREADS threads at once (each takes the next question),
 * and prints one JSON object per line, in the order the answers come.
 * With one thread, a line of stdin is answered as soon as it is read, so
 * a test can wait between questions (one process, one cache):
 *
 *   {"name": "example.com", "type": "TXT", "thread": 0, "ms": 1.23,
 *    "result": "reply" | "timeout" | "error", "length": 71,
 *    "rcode": "NOERROR", "answers": [{"name": ..., "type": "TXT",
 *    "ttl": 300, "data": ["v=spf1 -all"]}], "authority": [...]}
 *
 * "length" is what pc_dns_query() returned (PC_DNS_TIMEOUT and
 * PC_DNS_ERROR included); the reply is parsed when it fit in BUFLEN
 * (default 65536) bytes, else "copied" says how much was. TYPE is a
 * mnemonic (A, AAAA, TXT, MX, PTR, CNAME, NS, SOA, SPF) or a number.
 * Data: A/AAAA text, TXT/SPF a list of strings (bytes that are not
 * UTF-8 as \xNN), MX [preference, exchange], names as text, SOA [mname,
 * rname, serial, refresh, retry, expire, minimum], others hex. -s ends
 * with {"stats": {...}} of the cache, -v logs at debug level on stderr.
 */
#include "config.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <portcullis/filter.h>

#include "conf.h"
#include "dns.h"
#include "log.h"

struct question {
	char *name;
	int type;
};

static struct question *questions;
static size_t nquestions, next_question;
static size_t buflen = 65536;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static const struct {
	const char *name;
	int type;
} types[] = {
	{ "A", ns_t_a }, { "NS", ns_t_ns }, { "CNAME", ns_t_cname },
	{ "SOA", ns_t_soa }, { "PTR", ns_t_ptr }, { "MX", ns_t_mx },
	{ "TXT", ns_t_txt }, { "AAAA", ns_t_aaaa }, { "SPF", 99 },
	{ "ANY", ns_t_any },
};

static const char *const rcodes[] = { "NOERROR", "FORMERR", "SERVFAIL",
				      "NXDOMAIN", "NOTIMP", "REFUSED" };

/* type_number - a mnemonic or a number; -1 if neither */
static int type_number(const char *text)
{
	char *end;
	long n;

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcasecmp(text, types[i].name) == 0)
			return types[i].type;
	n = strtol(text, &end, 10);
	return *text && !*end && n >= 0 && n <= 65535 ? (int)n : -1;
}

/* type_json - a type as its mnemonic, or its number */
static json_t *type_json(int type)
{
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (types[i].type == type)
			return json_string(types[i].name);
	return json_integer(type);
}

/* bytes_json - bytes as a string, with \xNN for what is not UTF-8 */
static json_t *bytes_json(const unsigned char *p, size_t len)
{
	json_t *s = json_stringn((const char *)p, len);
	char *text;

	if (s)
		return s;
	text = malloc(len * 4 + 1);
	for (size_t i = 0, o = 0; i <= len; i++) {
		if (i == len)
			text[o] = 0;
		else if (p[i] < 0x80)
			text[o++] = (char)p[i];
		else
			o += (size_t)sprintf(text + o, "\\x%02x", p[i]);
	}
	s = json_string(text);
	free(text);
	return s;
}

/* name_json - a (compressed) domain name in the message, as text */
static json_t *name_json(const ns_msg *msg, const unsigned char *src)
{
	char name[NS_MAXDNAME];

	if (ns_name_uncompress(ns_msg_base(*msg), ns_msg_end(*msg), src, name,
			       sizeof(name)) < 0)
		return json_null();
	return json_string(name);
}

/* rdata_json - the data of one record */
static json_t *rdata_json(const ns_msg *msg, const ns_rr *rr)
{
	const unsigned char *d = ns_rr_rdata(*rr);
	size_t len = ns_rr_rdlen(*rr);
	char text[INET6_ADDRSTRLEN];
	json_t *v;

	switch (ns_rr_type(*rr)) {
	case ns_t_a:
	case ns_t_aaaa:
		if (len != (ns_rr_type(*rr) == ns_t_a ? 4u : 16u))
			break;
		inet_ntop(len == 4 ? AF_INET : AF_INET6, d, text, sizeof(text));
		return json_string(text);
	case ns_t_txt:
	case 99: /* SPF */
		v = json_array();
		for (size_t i = 0; i < len; i += 1 + d[i]) {
			if (i + 1 + d[i] > len)
				break;
			json_array_append_new(v, bytes_json(d + i + 1, d[i]));
		}
		return v;
	case ns_t_mx:
		if (len < 3)
			break;
		return json_pack("[io]", ns_get16(d), name_json(msg, d + 2));
	case ns_t_ptr:
	case ns_t_cname:
	case ns_t_ns:
		return name_json(msg, d);
	case ns_t_soa: {
		char mname[NS_MAXDNAME], rname[NS_MAXDNAME];
		const unsigned char *end = ns_msg_end(*msg), *p = d;
		int n = ns_name_uncompress(ns_msg_base(*msg), end, p, mname, sizeof(mname));
		if (n < 0)
			break;
		p += n;
		n = ns_name_uncompress(ns_msg_base(*msg), end, p, rname, sizeof(rname));
		if (n < 0 || p + n + 20 > d + len)
			break;
		p += n;
		return json_pack("[ssIIIII]", mname, rname, (json_int_t)ns_get32(p),
				 (json_int_t)ns_get32(p + 4), (json_int_t)ns_get32(p + 8),
				 (json_int_t)ns_get32(p + 12), (json_int_t)ns_get32(p + 16));
	}
	default:
		break;
	}
	char *hex = malloc(len * 2 + 1);
	for (size_t i = 0; i < len; i++)
		sprintf(hex + 2 * i, "%02x", d[i]);
	hex[len * 2] = 0;
	v = json_string(hex);
	free(hex);
	return v;
}

/* section_json - the records of one section */
static json_t *section_json(ns_msg *msg, ns_sect sect)
{
	json_t *list = json_array();
	ns_rr rr;

	for (int i = 0; i < ns_msg_count(*msg, sect); i++) {
		if (ns_parserr(msg, sect, i, &rr) < 0)
			break;
		json_array_append_new(list, json_pack("{sssosIso}", "name", ns_rr_name(rr),
						      "type", type_json(ns_rr_type(rr)),
						      "ttl", (json_int_t)ns_rr_ttl(rr),
						      "data", rdata_json(msg, &rr)));
	}
	return list;
}

/* ask - one question, one line of output */
static void ask(const struct question *q, int thread, unsigned char *buf)
{
	struct timespec t0, t1;
	json_t *out;
	int n;
	char *line;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	n = pc_dns_query(q->name, q->type, buf, buflen);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	out = json_pack("{sssosisfsi}", "name", q->name, "type", type_json(q->type),
			"thread", thread, "ms",
			(double)(t1.tv_sec - t0.tv_sec) * 1e3 +
				(double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
			"length", n);
	if (n == PC_DNS_TIMEOUT) {
		json_object_set_new(out, "result", json_string("timeout"));
	} else if (n < 0) {
		json_object_set_new(out, "result", json_string("error"));
	} else if ((size_t)n > buflen) {
		json_object_set_new(out, "result", json_string("reply"));
		json_object_set_new(out, "copied", json_integer((json_int_t)buflen));
	} else {
		ns_msg msg;
		json_object_set_new(out, "result", json_string("reply"));
		if (ns_initparse(buf, n, &msg) < 0) {
			json_object_set_new(out, "malformed", json_true());
		} else {
			int rcode = ns_msg_getflag(msg, ns_f_rcode);
			json_object_set_new(out, "rcode",
					    rcode < 6 ? json_string(rcodes[rcode])
						      : json_integer(rcode));
			json_object_set_new(out, "answers", section_json(&msg, ns_s_an));
			json_object_set_new(out, "authority", section_json(&msg, ns_s_ns));
		}
	}
	line = json_dumps(out, JSON_COMPACT | JSON_REAL_PRECISION(6));
	pthread_mutex_lock(&lock);
	puts(line);
	fflush(stdout);
	pthread_mutex_unlock(&lock);
	free(line);
	json_decref(out);
}

/* worker - take the next question until none is left */
static void *worker(void *arg)
{
	int thread = (int)(long)arg;
	unsigned char *buf = malloc(buflen ? buflen : 1);

	for (;;) {
		size_t i;
		pthread_mutex_lock(&lock);
		i = next_question++;
		pthread_mutex_unlock(&lock);
		if (i >= nquestions)
			break;
		ask(&questions[i], thread, buf);
	}
	free(buf);
	dns_thread_done();
	return NULL;
}

/* add - one question, REPEAT times */
static int add(const char *name, const char *type, unsigned repeat)
{
	int t = type_number(type);

	if (t < 0) {
		fprintf(stderr, "dnsquery: unknown type %s\n", type);
		return -1;
	}
	questions = realloc(questions, (nquestions + repeat) * sizeof(*questions));
	for (unsigned r = 0; r < repeat; r++) {
		questions[nquestions].name = strdup(name);
		questions[nquestions].type = t;
		nquestions++;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	unsigned threads = 1, repeat = 1;
	bool stats = false, verbose = false;
	struct conf *conf;
	pthread_t *tids;
	int opt, rc = 0;

	while ((opt = getopt(argc, argv, "c:j:r:b:sv")) != -1) {
		switch (opt) {
		case 'c': path = optarg; break;
		case 'j': threads = (unsigned)atoi(optarg); break;
		case 'r': repeat = (unsigned)atoi(optarg); break;
		case 'b': buflen = (size_t)atol(optarg); break;
		case 's': stats = true; break;
		case 'v': verbose = true; break;
		default:
			fprintf(stderr, "usage: dnsquery -c CONF [-j THREADS] [-r REPEAT] "
					"[-b BUFLEN] [-s] [-v] [NAME TYPE]...\n");
			return 2;
		}
	}
	if (!path || threads < 1 || threads > 1024 || repeat < 1 || (argc - optind) % 2) {
		fprintf(stderr, "dnsquery: -c CONF and NAME TYPE pairs are needed\n");
		return 2;
	}
	log_open("dnsquery", false, verbose ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARNING);
	conf = conf_load(path, stderr);
	if (!conf)
		return 1;
	if (dns_init(conf) < 0) {
		conf_free(conf);
		return 1;
	}
	for (int i = optind; i + 1 < argc; i += 2)
		if (add(argv[i], argv[i + 1], repeat) < 0)
			rc = 2;
	if (optind == argc) {
		char line[2048], name[1024], type[32];
		unsigned char *buf = threads == 1 ? malloc(buflen ? buflen : 1) : NULL;

		while (fgets(line, sizeof(line), stdin)) {
			if (sscanf(line, "%1023s %31s", name, type) != 2)
				continue;
			if (add(name, type, repeat) < 0) {
				rc = 2;
				continue;
			}
			/* One thread: answer at once, in this thread. */
			for (; buf && next_question < nquestions; next_question++)
				ask(&questions[next_question], 0, buf);
		}
		free(buf);
	}
	tids = calloc(threads, sizeof(*tids));
	for (unsigned i = 0; rc == 0 && i < threads; i++)
		pthread_create(&tids[i], NULL, worker, (void *)(long)i);
	for (unsigned i = 0; rc == 0 && i < threads; i++)
		pthread_join(tids[i], NULL);
	if (stats) {
		struct dnscache_stats st;
		bool on = dns_stats(&st);
		json_t *s = json_pack("{s:{sbsIsIsIsIsIsI}}", "stats", "cache", on,
				      "hits", (json_int_t)st.hits, "misses", (json_int_t)st.misses,
				      "stored", (json_int_t)st.stored, "evicted", (json_int_t)st.evicted,
				      "entries", (json_int_t)st.entries,
				      "capacity", (json_int_t)st.capacity);
		char *line = json_dumps(s, JSON_COMPACT);
		puts(line);
		free(line);
		json_decref(s);
	}
	for (size_t i = 0; i < nquestions; i++)
		free(questions[i].name);
	free(questions);
	free(tids);
	dns_shutdown();
	conf_free(conf);
	return rc;
}
