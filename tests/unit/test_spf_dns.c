/*
 * test_spf_dns.c - the spf filter's DNS layer: replies in, libspf2 records
 * out
 *
 * Replies are built byte by byte here, so each test shows what a server
 * sent: several TXT strings, CNAME chains, NXDOMAIN against NODATA,
 * SERVFAIL, compressed names, records that run past their rdata. The
 * layer's lookup is driven with a fake query function standing in for
 * pc_dns_query(): timeouts, local errors, replies longer than the first
 * buffer, and the questions it must not ask at all.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <arpa/nameser.h>

#include "spf_dns.h"
#include "unit.h"

/* ---------------------------------------------------------------- */
/* A reply builder */

struct msg {
	unsigned char b[70000];
	size_t len;
	size_t ancount_at;
	unsigned ancount;
};

static void put8(struct msg *m, unsigned v)
{
	m->b[m->len++] = (unsigned char)v;
}

static void put16(struct msg *m, unsigned v)
{
	put8(m, v >> 8);
	put8(m, v & 0xff);
}

static void put32(struct msg *m, unsigned long v)
{
	put16(m, (unsigned)(v >> 16));
	put16(m, (unsigned)(v & 0xffff));
}

/* put_name - a name in labels, uncompressed */
static void put_name(struct msg *m, const char *name)
{
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t n = dot ? (size_t)(dot - name) : strlen(name);

		put8(m, (unsigned)n);
		memcpy(m->b + m->len, name, n);
		m->len += n;
		name += n;
		if (*name == '.')
			name++;
	}
	put8(m, 0);
}

/* msg_start - a reply header with rcode and the question (qname, qtype) */
static void msg_start(struct msg *m, unsigned rcode, const char *qname,
		      unsigned qtype)
{
	m->len = 0;
	m->ancount = 0;
	put16(m, 0x1234);		/* id */
	put16(m, 0x8180 | rcode);	/* QR RD RA, rcode */
	put16(m, 1);			/* qdcount */
	m->ancount_at = m->len;
	put16(m, 0);			/* ancount, set by msg_rr */
	put16(m, 0);			/* nscount */
	put16(m, 0);			/* arcount */
	put_name(m, qname);
	put16(m, qtype);
	put16(m, ns_c_in);
}

/* msg_rr - one answer; owner NULL is a pointer to the question's name */
static void msg_rr(struct msg *m, const char *owner, unsigned type,
		   unsigned long ttl, const void *rdata, size_t rdlen)
{
	if (owner)
		put_name(m, owner);
	else
		put16(m, 0xc00c);
	put16(m, type);
	put16(m, ns_c_in);
	put32(m, ttl);
	put16(m, (unsigned)rdlen);
	memcpy(m->b + m->len, rdata, rdlen);
	m->len += rdlen;
	m->ancount++;
	m->b[m->ancount_at] = (unsigned char)(m->ancount >> 8);
	m->b[m->ancount_at + 1] = (unsigned char)(m->ancount & 0xff);
}

/* txt_rdata - character-strings from a NULL-terminated list */
static size_t txt_rdata(unsigned char *out, const char *const *strings)
{
	size_t o = 0;

	for (; *strings; strings++) {
		size_t n = strlen(*strings);

		out[o++] = (unsigned char)n;
		memcpy(out + o, *strings, n);
		o += n;
	}
	return o;
}

/* name_rdata - an uncompressed name as rdata */
static size_t name_rdata(unsigned char *out, const char *name)
{
	struct msg tmp;

	tmp.len = 0;
	put_name(&tmp, name);
	memcpy(out, tmp.b, tmp.len);
	return tmp.len;
}

static struct msg m;
static SPF_dns_server_t *layer;

/* parse - the reply in m to (domain, type) */
static SPF_dns_rr_t *parse(const char *domain, ns_type type)
{
	return spf_dns_parse(layer, domain, type, m.b, m.len);
}

/* ---------------------------------------------------------------- */
/* Parsing */

static void test_txt_strings_are_joined_without_separator(void)
{
	static const char *const parts[] = { "v=spf1 ip4:", "192.0.2.5 -all", NULL };
	unsigned char rd[512];
	SPF_dns_rr_t *rr;

	msg_start(&m, ns_r_noerror, "example.com", ns_t_txt);
	msg_rr(&m, NULL, ns_t_txt, 300, rd, txt_rdata(rd, parts));
	rr = parse("example.com", ns_t_txt);
	CHECK_NOT_NULL(rr);
	CHECK_INT_EQ(rr->herrno, NETDB_SUCCESS);
	CHECK_INT_EQ(rr->num_rr, 1);
	CHECK_STR_EQ(rr->rr[0]->txt, "v=spf1 ip4:192.0.2.5 -all");
	CHECK_INT_EQ(rr->ttl, 300);
	SPF_dns_rr_free(rr);
}

static void test_several_txt_records_stay_apart(void)
{
	static const char *const a[] = { "v=spf1 -all", NULL };
	static const char *const b[] = { "google-site-verification=x", NULL };
	static const char *const empty[] = { "", NULL };
	unsigned char rd[512];
	SPF_dns_rr_t *rr;

	msg_start(&m, ns_r_noerror, "example.com", ns_t_txt);
	msg_rr(&m, NULL, ns_t_txt, 600, rd, txt_rdata(rd, a));
	msg_rr(&m, NULL, ns_t_txt, 60, rd, txt_rdata(rd, b));
	msg_rr(&m, NULL, ns_t_txt, 600, rd, txt_rdata(rd, empty));
	rr = parse("example.com", ns_t_txt);
	CHECK_INT_EQ(rr->num_rr, 3);
	CHECK_STR_EQ(rr->rr[0]->txt, "v=spf1 -all");
	CHECK_STR_EQ(rr->rr[1]->txt, "google-site-verification=x");
	CHECK_STR_EQ(rr->rr[2]->txt, "");
	CHECK_INT_EQ(rr->ttl, 60); /* the smallest */
	SPF_dns_rr_free(rr);
}

static void test_nxdomain_is_host_not_found(void)
{
	SPF_dns_rr_t *rr;

	msg_start(&m, ns_r_nxdomain, "nowhere.example.com", ns_t_txt);
	rr = parse("nowhere.example.com", ns_t_txt);
	CHECK_INT_EQ(rr->herrno, HOST_NOT_FOUND);
	CHECK_INT_EQ(rr->num_rr, 0);
	SPF_dns_rr_free(rr);
}

static void test_noerror_without_records_is_no_data(void)
{
	unsigned char a[4] = { 192, 0, 2, 1 };
	SPF_dns_rr_t *rr;

	msg_start(&m, ns_r_noerror, "example.com", ns_t_txt);
	rr = parse("example.com", ns_t_txt);
	CHECK_INT_EQ(rr->herrno, NO_DATA);
	SPF_dns_rr_free(rr);

	/* records of another type are no answer either */
	msg_start(&m, ns_r_noerror, "example.com", ns_t_txt);
	msg_rr(&m, NULL, ns_t_a, 60, a, 4);
	rr = parse("example.com", ns_t_txt);
	CHECK_INT_EQ(rr->herrno, NO_DATA);
	CHECK_INT_EQ(rr->num_rr, 0);
	SPF_dns_rr_free(rr);
}

static void test_servfail_and_other_rcodes_are_try_again(void)
{
	unsigned rcodes[] = { ns_r_servfail, ns_r_formerr, ns_r_notimpl,
			      ns_r_refused };

	for (size_t i = 0; i < sizeof(rcodes) / sizeof(rcodes[0]); i++) {
		SPF_dns_rr_t *rr;

		msg_start(&m, rcodes[i], "example.com", ns_t_txt);
		rr = parse("example.com", ns_t_txt);
		CHECK_INT_EQ(rr->herrno, TRY_AGAIN);
		SPF_dns_rr_free(rr);
	}
}

static void test_cname_chain_is_followed_to_its_end(void)
{
	unsigned char rd[256];
	unsigned char a1[4] = { 192, 0, 2, 1 }, a2[4] = { 192, 0, 2, 2 };
	SPF_dns_rr_t *rr;

	msg_start(&m, ns_r_noerror, "www.example.com", ns_t_a);
	msg_rr(&m, NULL, ns_t_cname, 60, rd, name_rdata(rd, "Mid.Example.NET"));
	msg_rr(&m, "mid.example.net", ns_t_cname, 60, rd,
	       name_rdata(rd, "host.example.org"));
	msg_rr(&m, "host.example.org", ns_t_a, 60, a1, 4);
	/* a record of a name nobody asked for is not an answer */
	msg_rr(&m, "other.example.org", ns_t_a, 60, a2, 4);
	rr = parse("www.example.com", ns_t_a);
	CHECK_INT_EQ(rr->herrno, NETDB_SUCCESS);
	CHECK_INT_EQ(rr->num_rr, 1);
	if (rr->num_rr == 1)
		CHECK_INT_EQ(memcmp(&rr->rr[0]->a, a1, 4), 0);
	SPF_dns_rr_free(rr);
}

static void test_cname_loop_leads_nowhere(void)
{
	unsigned char rd[256];
	SPF_dns_rr_t *rr;

	msg_start(&m, ns_r_noerror, "a.example.com", ns_t_txt);
	msg_rr(&m, NULL, ns_t_cname, 60, rd, name_rdata(rd, "b.example.com"));
	msg_rr(&m, "b.example.com", ns_t_cname, 60, rd,
	       name_rdata(rd, "a.example.com"));
	rr = parse("a.example.com", ns_t_txt);
	CHECK_INT_EQ(rr->herrno, HOST_NOT_FOUND);
	SPF_dns_rr_free(rr);
}

static void test_mx_ptr_and_aaaa(void)
{
	unsigned char rd[256], aaaa[16];
	SPF_dns_rr_t *rr;
	size_t n;

	/* MX exchanges, one compressed against the question */
	msg_start(&m, ns_r_noerror, "example.com", ns_t_mx);
	rd[0] = 0, rd[1] = 10;
	n = 2 + name_rdata(rd + 2, "mx1.example.com");
	msg_rr(&m, NULL, ns_t_mx, 60, rd, n);
	rd[0] = 0, rd[1] = 20;
	rd[2] = 3, memcpy(rd + 3, "mx2", 3);
	rd[6] = 0xc0, rd[7] = 0x0c; /* pointer to "example.com" */
	msg_rr(&m, NULL, ns_t_mx, 60, rd, 8);
	rr = parse("example.com", ns_t_mx);
	CHECK_INT_EQ(rr->num_rr, 2);
	if (rr->num_rr == 2) {
		CHECK_STR_EQ(rr->rr[0]->mx, "mx1.example.com");
		CHECK_STR_EQ(rr->rr[1]->mx, "mx2.example.com");
	}
	SPF_dns_rr_free(rr);

	msg_start(&m, ns_r_noerror, "1.2.0.192.in-addr.arpa", ns_t_ptr);
	msg_rr(&m, NULL, ns_t_ptr, 60, rd, name_rdata(rd, "mail.example.com"));
	rr = parse("1.2.0.192.in-addr.arpa", ns_t_ptr);
	CHECK_INT_EQ(rr->num_rr, 1);
	if (rr->num_rr == 1)
		CHECK_STR_EQ(rr->rr[0]->ptr, "mail.example.com");
	SPF_dns_rr_free(rr);

	inet_pton(AF_INET6, "2001:db8::25", aaaa);
	msg_start(&m, ns_r_noerror, "example.com", ns_t_aaaa);
	msg_rr(&m, NULL, ns_t_aaaa, 60, aaaa, 16);
	rr = parse("example.com", ns_t_aaaa);
	CHECK_INT_EQ(rr->num_rr, 1);
	if (rr->num_rr == 1)
		CHECK_INT_EQ(memcmp(&rr->rr[0]->aaaa, aaaa, 16), 0);
	SPF_dns_rr_free(rr);
}

static void test_malformed_replies_are_try_again(void)
{
	unsigned char rd[64] = { 20, 'v', '=', 's', 'p', 'f', '1' };
	unsigned char a[3] = { 192, 0, 2 };
	SPF_dns_rr_t *rr;

	/* a character-string longer than what is left of the rdata */
	msg_start(&m, ns_r_noerror, "example.com", ns_t_txt);
	msg_rr(&m, NULL, ns_t_txt, 60, rd, 7);
	rr = parse("example.com", ns_t_txt);
	CHECK_INT_EQ(rr->herrno, TRY_AGAIN);
	CHECK_INT_EQ(rr->num_rr, 0);
	SPF_dns_rr_free(rr);

	/* an A record of three bytes */
	msg_start(&m, ns_r_noerror, "example.com", ns_t_a);
	msg_rr(&m, NULL, ns_t_a, 60, a, 3);
	rr = parse("example.com", ns_t_a);
	CHECK_INT_EQ(rr->herrno, TRY_AGAIN);
	SPF_dns_rr_free(rr);

	/* a reply cut in the middle of its answer */
	msg_start(&m, ns_r_noerror, "example.com", ns_t_a);
	msg_rr(&m, NULL, ns_t_a, 60, rd, 4);
	m.len -= 3;
	rr = parse("example.com", ns_t_a);
	CHECK_INT_EQ(rr->herrno, TRY_AGAIN);
	SPF_dns_rr_free(rr);

	/* no DNS message at all */
	memcpy(m.b, "garbage", 7);
	m.len = 7;
	rr = parse("example.com", ns_t_a);
	CHECK_INT_EQ(rr->herrno, TRY_AGAIN);
	SPF_dns_rr_free(rr);
}

static void test_nul_in_txt_cannot_shorten_a_record(void)
{
	unsigned char rd[64];
	SPF_dns_rr_t *rr;

	rd[0] = 16;
	memcpy(rd + 1, "v=spf1 +all\0-all", 16);
	msg_start(&m, ns_r_noerror, "example.com", ns_t_txt);
	msg_rr(&m, NULL, ns_t_txt, 60, rd, 17);
	rr = parse("example.com", ns_t_txt);
	CHECK_INT_EQ(rr->num_rr, 1);
	if (rr->num_rr == 1)
		CHECK_STR_EQ(rr->rr[0]->txt, "v=spf1 +all\x7f-all");
	SPF_dns_rr_free(rr);
}

/* ---------------------------------------------------------------- */
/* Lookups through a query function */

static int fake_result;	  /* what fake_query returns when not a length */
static unsigned fake_calls;
static size_t fake_last_len;
static char fake_last_name[1024];

/* fake_query - hands back m, or fake_result when it is set */
static int fake_query(const char *name, int type, unsigned char *answer,
		      size_t len)
{
	(void)type;
	fake_calls++;
	fake_last_len = len;
	snprintf(fake_last_name, sizeof(fake_last_name), "%s", name);
	if (fake_result)
		return fake_result;
	memcpy(answer, m.b, m.len < len ? m.len : len);
	return (int)m.len;
}

static void test_lookup_timeout_and_error_are_try_again(void)
{
	int results[] = { SPF_DNS_QUERY_TIMEOUT, SPF_DNS_QUERY_ERROR };

	for (size_t i = 0; i < 2; i++) {
		SPF_dns_rr_t *rr;

		fake_result = results[i];
		rr = SPF_dns_lookup(layer, "example.com", ns_t_txt, 1);
		CHECK_INT_EQ(rr->herrno, TRY_AGAIN);
		SPF_dns_rr_free(rr);
	}
	fake_result = 0;
}

static void test_lookup_of_spf_type_asks_nobody(void)
{
	SPF_dns_rr_t *rr;

	fake_calls = 0;
	rr = SPF_dns_lookup(layer, "example.com", ns_t_spf, 1);
	CHECK_INT_EQ(rr->herrno, NO_DATA);
	CHECK_UINT_EQ(fake_calls, 0);
	SPF_dns_rr_free(rr);
}

static void test_lookup_of_impossible_names_asks_nobody(void)
{
	char longlabel[80];
	const char *names[] = { "", ".", "a..example.com", ".example.com",
				longlabel };

	memset(longlabel, 'a', 64);
	strcpy(longlabel + 64, ".example.com");
	fake_calls = 0;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		SPF_dns_rr_t *rr = SPF_dns_lookup(layer, names[i], ns_t_txt, 1);

		CHECK_INT_EQ(rr->herrno, HOST_NOT_FOUND);
		SPF_dns_rr_free(rr);
	}
	CHECK_UINT_EQ(fake_calls, 0);
}

static void test_long_names_lose_labels_on_the_left(void)
{
	char longname[300];
	SPF_dns_rr_t *rr;

	/* RFC 7208 7.3: 62 * "abc." + "example" is 255 octets */
	for (size_t i = 0; i < 62; i++)
		memcpy(longname + 4 * i, "abc.", 4);
	strcpy(longname + 248, "example");
	msg_start(&m, ns_r_nxdomain, "x", ns_t_txt);
	rr = SPF_dns_lookup(layer, longname, ns_t_txt, 1);
	CHECK_INT_EQ(rr->herrno, HOST_NOT_FOUND);
	CHECK_STR_EQ(fake_last_name, longname + 4);
	CHECK_UINT_EQ(strlen(fake_last_name), 251);
	SPF_dns_rr_free(rr);
}

static void test_lookup_of_a_long_reply_asks_again_with_room(void)
{
	unsigned char rd[256];
	char text[201];
	const char *parts[] = { text, NULL };
	SPF_dns_rr_t *rr;

	memset(text, 'x', 200);
	text[200] = '\0';
	msg_start(&m, ns_r_noerror, "example.com", ns_t_txt);
	for (int i = 0; i < 40; i++) /* about 8 kB */
		msg_rr(&m, NULL, ns_t_txt, 60, rd, txt_rdata(rd, parts));
	fake_calls = 0;
	rr = SPF_dns_lookup(layer, "example.com", ns_t_txt, 1);
	CHECK_UINT_EQ(fake_calls, 2);
	CHECK_UINT_EQ(fake_last_len, m.len);
	CHECK_INT_EQ(rr->herrno, NETDB_SUCCESS);
	CHECK_INT_EQ(rr->num_rr, 40);
	SPF_dns_rr_free(rr);
}

/* explain - what the layer's get_exp makes of the reply in m; NULL on error */
static char *explain(void)
{
	SPF_server_t *server = SPF_server_new_dns(layer, 0);
	SPF_request_t *req = SPF_request_new(server);
	struct in_addr a;
	char *buf = malloc(1);
	size_t len = 1;
	SPF_errcode_t err;

	inet_pton(AF_INET, "192.0.2.7", &a);
	SPF_request_set_ipv4(req, a);
	SPF_request_set_env_from(req, "user@example.com");
	req->cur_dom = req->env_from_dp;
	spf_dns_set_request(layer, req);
	strcpy(buf, "");
	err = layer->get_exp(server, "exp.example.com", &buf, &len);
	spf_dns_set_request(layer, NULL);
	SPF_request_free(req);
	SPF_server_free(server);
	if (err != SPF_E_SUCCESS) {
		free(buf);
		return NULL;
	}
	return buf;
}

static void test_explanations_keep_spaces_and_expand_macros(void)
{
	static const char *const one[] = { "%{i} may not send for %{d}", "." , NULL };
	unsigned char rd[512];
	char *text;

	msg_start(&m, ns_r_noerror, "exp.example.com", ns_t_txt);
	msg_rr(&m, NULL, ns_t_txt, 60, rd, txt_rdata(rd, one));
	text = explain();
	CHECK_STR_EQ(text, "192.0.2.7 may not send for example.com.");
	free(text);
}

static void test_bad_explanations_are_ignored(void)
{
	static const char *const a[] = { "one", NULL };
	static const char *const b[] = { "two", NULL };
	static const char *const nonascii[] = { "caf\xc3\xa9", NULL };
	static const char *const badmacro[] = { "100% sure", NULL };
	unsigned char rd[512];
	char *text;

	/* RFC 7208 6.2: more than one record, or none, is no explanation */
	msg_start(&m, ns_r_noerror, "exp.example.com", ns_t_txt);
	msg_rr(&m, NULL, ns_t_txt, 60, rd, txt_rdata(rd, a));
	msg_rr(&m, NULL, ns_t_txt, 60, rd, txt_rdata(rd, b));
	CHECK_NULL(text = explain());
	free(text);
	msg_start(&m, ns_r_noerror, "exp.example.com", ns_t_txt);
	CHECK_NULL(text = explain());
	free(text);
	msg_start(&m, ns_r_noerror, "exp.example.com", ns_t_txt);
	msg_rr(&m, NULL, ns_t_txt, 60, rd, txt_rdata(rd, nonascii));
	CHECK_NULL(text = explain());
	free(text);
	msg_start(&m, ns_r_noerror, "exp.example.com", ns_t_txt);
	msg_rr(&m, NULL, ns_t_txt, 60, rd, txt_rdata(rd, badmacro));
	CHECK_NULL(text = explain());
	free(text);
}

static void test_void_lookups_of_terms_are_counted(void)
{
	SPF_dns_server_t *l = spf_dns_new(fake_query);
	unsigned char rd[256];
	SPF_dns_rr_t *rr;

	/* an MX answer: its hosts' address lookups are not terms */
	msg_start(&m, ns_r_noerror, "example.com", ns_t_mx);
	rd[0] = 0, rd[1] = 10;
	msg_rr(&m, NULL, ns_t_mx, 60, rd, 2 + name_rdata(rd + 2, "mx1.example.com"));
	SPF_dns_rr_free(SPF_dns_lookup(l, "example.com", ns_t_mx, 1));
	msg_start(&m, ns_r_nxdomain, "mx1.example.com", ns_t_a);
	for (int i = 0; i < 3; i++)
		SPF_dns_rr_free(SPF_dns_lookup(l, "mx1.example.com", ns_t_a, 1));
	CHECK(!spf_dns_voids_exceeded(l));
	/* two void terms are allowed, the third is one too many */
	msg_start(&m, ns_r_nxdomain, "err.example.com", ns_t_a);
	SPF_dns_rr_free(SPF_dns_lookup(l, "err.example.com", ns_t_a, 1));
	msg_start(&m, ns_r_noerror, "err1.example.com", ns_t_aaaa);
	SPF_dns_rr_free(SPF_dns_lookup(l, "err1.example.com", ns_t_aaaa, 1));
	CHECK(!spf_dns_voids_exceeded(l));
	/* a PTR lookup is never counted (the %{p} macro makes them) */
	msg_start(&m, ns_r_nxdomain, "4.3.2.1.in-addr.arpa", ns_t_ptr);
	rr = SPF_dns_lookup(l, "4.3.2.1.in-addr.arpa", ns_t_ptr, 1);
	SPF_dns_rr_free(rr);
	CHECK(!spf_dns_voids_exceeded(l));
	msg_start(&m, ns_r_noerror, "err2.example.com", ns_t_mx);
	SPF_dns_rr_free(SPF_dns_lookup(l, "err2.example.com", ns_t_mx, 1));
	CHECK(spf_dns_voids_exceeded(l));
	SPF_dns_free(l);
}

static void test_ptr_answers_are_cut_to_ten_names(void)
{
	unsigned char rd[256];
	char name[64];
	SPF_dns_rr_t *rr;

	msg_start(&m, ns_r_noerror, "5.3.2.1.in-addr.arpa", ns_t_ptr);
	for (int i = 0; i < 12; i++) {
		snprintf(name, sizeof(name), "e%d.example.com", i);
		msg_rr(&m, NULL, ns_t_ptr, 60, rd, name_rdata(rd, name));
	}
	rr = SPF_dns_lookup(layer, "5.3.2.1.in-addr.arpa", ns_t_ptr, 1);
	CHECK_INT_EQ(rr->herrno, NETDB_SUCCESS);
	CHECK_INT_EQ(rr->num_rr, 10);
	if (rr->num_rr == 10)
		CHECK_STR_EQ(rr->rr[9]->ptr, "e9.example.com");
	SPF_dns_rr_free(rr);
}

static void test_name_validity(void)
{
	CHECK(spf_dns_name_valid("example.com"));
	CHECK(spf_dns_name_valid("example.com."));
	CHECK(spf_dns_name_valid("com"));
	CHECK(!spf_dns_name_valid(NULL));
	CHECK(!spf_dns_name_valid(""));
	CHECK(!spf_dns_name_valid("example..com"));
	CHECK(!spf_dns_name_valid("example.com.."));
}

int main(void)
{
	layer = spf_dns_new(fake_query);
	/* without the layer no test can run: one failure, counted */
	CHECK_NOT_NULL(layer);
	if (layer == NULL)
		return unit_summary();
	RUN(test_txt_strings_are_joined_without_separator);
	RUN(test_several_txt_records_stay_apart);
	RUN(test_nxdomain_is_host_not_found);
	RUN(test_noerror_without_records_is_no_data);
	RUN(test_servfail_and_other_rcodes_are_try_again);
	RUN(test_cname_chain_is_followed_to_its_end);
	RUN(test_cname_loop_leads_nowhere);
	RUN(test_mx_ptr_and_aaaa);
	RUN(test_malformed_replies_are_try_again);
	RUN(test_nul_in_txt_cannot_shorten_a_record);
	RUN(test_lookup_timeout_and_error_are_try_again);
	RUN(test_lookup_of_spf_type_asks_nobody);
	RUN(test_lookup_of_impossible_names_asks_nobody);
	RUN(test_long_names_lose_labels_on_the_left);
	RUN(test_lookup_of_a_long_reply_asks_again_with_room);
	RUN(test_explanations_keep_spaces_and_expand_macros);
	RUN(test_bad_explanations_are_ignored);
	RUN(test_void_lookups_of_terms_are_counted);
	RUN(test_ptr_answers_are_cut_to_ten_names);
	RUN(test_name_validity);
	SPF_dns_free(layer);
	return unit_summary();
}
