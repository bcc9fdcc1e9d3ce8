/*
 * tls.c - inbound TLS (OpenSSL 3): server contexts and a conn transport
 * (see tls.h)
 *
 * The transport never blocks: every SSL call that cannot go on says
 * whether it waits for the socket to become readable or writable
 * (SSL_ERROR_WANT_READ/WRITE), the transport keeps that in want, and
 * the conn registers the matching event. An SSL call does work bounded
 * by what one record holds, so the loop never waits on a peer.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "conf.h"
#include "conn.h"
#include "log.h"
#include "tls.h"

/* Mozilla's "intermediate" configuration (version 5.7). */
#define TLS_CIPHERS_12                                                        \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"          \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"          \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"          \
	"DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:"                \
	"DHE-RSA-CHACHA20-POLY1305"
#define TLS_CIPHERS_13 \
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define TLS_GROUPS "X25519:prime256v1:secp384r1"
/* Sessions the server cache of one context holds (clients without tickets). */
#define TLS_CACHE_SIZE 1024
#define TLS_CACHE_TIMEOUT 3600
/* Plaintext gathered into one record when the output is in pieces. */
#define TLS_WRITE_GATHER 16384
#define TLS_MAX_PAIRS 8

/* One SSL_CTX: the pairs whose certificates carry the same names. */
struct tls_group {
	SSL_CTX *ctx;
	X509 *cert; /* the first pair's certificate, for SNI matching */
	char *names; /* its names, for grouping */
};

struct tls_server {
	struct tls_group groups[TLS_MAX_PAIRS];
	size_t ngroups;
};

/* The client context to the backend, and what its handshakes must meet. */
struct tls_client {
	SSL_CTX *ctx;
	char *verify_name;		 /* NULL: the chain alone (or nothing) */
	unsigned char (*fingerprints)[32]; /* SHA-256 of acceptable certificates */
	size_t nfingerprints;
};

struct tls_conn {
	SSL *ssl;
	int fd;
	bool first; /* the SSL reads a memory BIO of bytes read before it */
	int want; /* enum conn_want of the last call that could not go on */
	char error[200];
};

/* tls_openssl_reason - OpenSSL's reason for the last failure, and clear the queue */
static const char *tls_openssl_reason(char *buf, size_t cap)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	if (r)
		snprintf(buf, cap, "%s", r);
	else if (e)
		ERR_error_string_n(e, buf, cap);
	else
		snprintf(buf, cap, "unknown error");
	ERR_clear_error();
	return buf;
}

/* tls_names - the certificate's DNS names (else its CN), one string for grouping */
static char *tls_names(X509 *cert)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	size_t cap = 1, len = 0;
	char *out = calloc(1, 1);

	for (int i = 0; out && sans && i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		if (g->type != GEN_DNS)
			continue;
		const char *s = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
		size_t n = (size_t)ASN1_STRING_length(g->d.dNSName);
		char *more = realloc(out, cap + n + 1);
		if (!more) {
			free(out);
			out = NULL;
			break;
		}
		out = more;
		memcpy(out + len, s, n);
		out[len + n] = ' ';
		len += n + 1;
		cap += n + 1;
		out[len] = 0;
	}
	GENERAL_NAMES_free(sans);
	if (out && len == 0) {
		char cn[256] = "";
		X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName,
					  cn, sizeof(cn));
		free(out);
		out = strdup(cn);
	}
	return out;
}

/* tls_accept_any - a client certificate is reported, never judged */
static int tls_accept_any(int ok, X509_STORE_CTX *store)
{
	(void)ok;
	(void)store;
	return 1;
}

/* tls_sni - choose the context whose certificate carries the name asked for */
static int tls_sni(SSL *ssl, int *alert, void *arg)
{
	struct tls_server *srv = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	(void)alert;
	if (!name)
		return SSL_TLSEXT_ERR_OK;
	/* The first group is the default: only another one needs a switch. */
	for (size_t i = 1; i < srv->ngroups; i++)
		if (X509_check_host(srv->groups[i].cert, name, 0, 0, NULL) == 1) {
			SSL_set_SSL_CTX(ssl, srv->groups[i].ctx);
			break;
		}
	return SSL_TLSEXT_ERR_OK;
}

/* tls_ctx_new - a server context with the settings every group shares */
static SSL_CTX *tls_ctx_new(const char *sid)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx)
		return NULL;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) ||
	    !SSL_CTX_set_ciphersuites(ctx, TLS_CIPHERS_13) ||
	    !SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) ||
	    !SSL_CTX_set_dh_auto(ctx, 1) ||
	    !SSL_CTX_set_session_id_context(ctx, (const unsigned char *)sid,
					    (unsigned)strlen(sid))) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* No renegotiation (a CPU lever for a client), no compression (CRIME). */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	/*
	 * An idle connection keeps no 16 KiB record buffers; a write may
	 * take part of the output and be retried from another address (the
	 * conn's buffer moves as it drains).
	 */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
				      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_sess_set_cache_size(ctx, TLS_CACHE_SIZE);
	SSL_CTX_set_timeout(ctx, TLS_CACHE_TIMEOUT);
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, tls_accept_any);
	return ctx;
}

/* tls_split - the next word of a FILE [FILE ...] list, or NULL */
static char *tls_split(char **save, char *list)
{
	return strtok_r(list, " \t,", save);
}

/* tls_server_free - release a listener's contexts */
static void tls_server_free(struct tls_server *srv)
{
	if (!srv)
		return;
	for (size_t i = 0; i < srv->ngroups; i++) {
		SSL_CTX_free(srv->groups[i].ctx);
		X509_free(srv->groups[i].cert);
		free(srv->groups[i].names);
	}
	free(srv);
}

/*
 * tls_add_pair - load one certificate file (with its chain) and its key
 * into the group its names belong to; NULL, or what went wrong (and
 * which key, certificate or key, in *which)
 */
static const char *tls_add_pair(struct tls_server *srv, const char *sid,
				const char *certfile, const char *keyfile,
				const char **which, char *buf, size_t cap)
{
	char reason[160];
	struct tls_group *g = NULL;
	BIO *bio;
	X509 *cert;
	char *names;

	*which = "tls_certificate";
	errno = 0;
	bio = BIO_new_file(certfile, "r");
	if (!bio) {
		/* fopen()'s reason says more than OpenSSL's "system lib". */
		snprintf(buf, cap, "%s: cannot read a certificate: %s", certfile,
			 errno ? strerror(errno) : tls_openssl_reason(reason, sizeof(reason)));
		ERR_clear_error();
		return buf;
	}
	cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (!cert) {
		snprintf(buf, cap, "%s: cannot read a certificate: %s", certfile,
			 tls_openssl_reason(reason, sizeof(reason)));
		return buf;
	}
	names = tls_names(cert);
	for (size_t i = 0; names && i < srv->ngroups; i++)
		if (strcmp(srv->groups[i].names, names) == 0)
			g = &srv->groups[i];
	if (!g) {
		if (srv->ngroups == TLS_MAX_PAIRS) {
			X509_free(cert);
			free(names);
			snprintf(buf, cap, "at most %d certificates", TLS_MAX_PAIRS);
			return buf;
		}
		g = &srv->groups[srv->ngroups];
		g->ctx = tls_ctx_new(sid);
		if (!g->ctx) {
			X509_free(cert);
			free(names);
			snprintf(buf, cap, "cannot make a TLS context: %s",
				 tls_openssl_reason(reason, sizeof(reason)));
			return buf;
		}
		g->cert = cert;
		g->names = names;
		srv->ngroups++;
	} else {
		X509_free(cert);
		free(names);
	}
	if (SSL_CTX_use_certificate_chain_file(g->ctx, certfile) != 1) {
		snprintf(buf, cap, "%s: %s", certfile, tls_openssl_reason(reason, sizeof(reason)));
		return buf;
	}
	*which = "tls_key";
	if (SSL_CTX_use_PrivateKey_file(g->ctx, keyfile, SSL_FILETYPE_PEM) != 1) {
		snprintf(buf, cap, "%s: %s", keyfile, tls_openssl_reason(reason, sizeof(reason)));
		return buf;
	}
	if (SSL_CTX_check_private_key(g->ctx) != 1) {
		snprintf(buf, cap, "%s does not match the certificate %s: %s", keyfile,
			 certfile, tls_openssl_reason(reason, sizeof(reason)));
		return buf;
	}
	return NULL;
}

/* tls_server_load - the contexts of one listener; -1 after an error written to errors */
static int tls_server_load(const struct conf *conf, struct conf_listener *l, FILE *errors)
{
	struct tls_server *srv = calloc(1, sizeof(*srv));
	char *certs = strdup(l->tls_certificate ? l->tls_certificate : "");
	char *keys = strdup(l->tls_key ? l->tls_key : "");
	char *cs = NULL, *ks = NULL, sid[SSL_MAX_SID_CTX_LENGTH], buf[1024];
	const char *err = NULL, *which = "tls_certificate";
	int rc = 0;

	if (!srv || !certs || !keys) {
		err = "out of memory";
		goto out;
	}
	snprintf(sid, sizeof(sid), "portcullis %s", l->name);
	for (char *c = tls_split(&cs, certs), *k = tls_split(&ks, keys); c || k;
	     c = tls_split(&cs, NULL), k = tls_split(&ks, NULL)) {
		if (!c || !k) {
			which = k ? "tls_key" : "tls_certificate"; /* the longer list */
			err = "tls_certificate and tls_key must list as many files each (paired in order)";
			break;
		}
		if ((err = tls_add_pair(srv, sid, c, k, &which, buf, sizeof(buf))))
			break;
	}
	if (!err && srv->ngroups == 0)
		err = "no certificate given";
	if (!err && srv->ngroups > 1) {
		/* Every SSL starts on the first group's context; SNI may switch. */
		SSL_CTX_set_tlsext_servername_callback(srv->groups[0].ctx, tls_sni);
		SSL_CTX_set_tlsext_servername_arg(srv->groups[0].ctx, srv);
	}
out:
	if (err) {
		fprintf(errors, "%s:%d: [listener %s] %s: %s\n", conf->path,
			strcmp(which, "tls_key") == 0 ? l->tls_key_line : l->tls_certificate_line,
			l->name, which, err);
		tls_server_free(srv);
		rc = -1;
	} else {
		l->tls_server = srv;
	}
	free(certs);
	free(keys);
	return rc;
}

/* tls_client_free - release the backend's client context */
static void tls_client_free(struct tls_client *cl)
{
	if (!cl)
		return;
	SSL_CTX_free(cl->ctx);
	free(cl->verify_name);
	free(cl->fingerprints);
	free(cl);
}

/*
 * tls_fingerprint_parse - one SHA-256 fingerprint: 64 hex digits, with
 * colons between pairs or not, after an optional "sha256:"; false when
 * it is not one
 */
static bool tls_fingerprint_parse(const char *text, unsigned char out[32])
{
	size_t n = 0;

	if (strncasecmp(text, "sha256:", 7) == 0)
		text += 7;
	for (const char *p = text; *p; p++) {
		int v;
		if (*p == ':')
			continue;
		if (*p >= '0' && *p <= '9')
			v = *p - '0';
		else if ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'f')
			v = (*p | 0x20) - 'a' + 10;
		else
			return false;
		if (n >= 64)
			return false;
		if (n % 2 == 0)
			out[n / 2] = (unsigned char)(v << 4);
		else
			out[n / 2] |= (unsigned char)v;
		n++;
	}
	return n == 64;
}

/* tls_client_load - the backend's client context; -1 after an error written to errors */
static int tls_client_load(struct conf *conf, FILE *errors)
{
	struct tls_client *cl = calloc(1, sizeof(*cl));
	char buf[1024], *list = NULL, *save = NULL;
	const char *err = NULL, *key = "tls";
	int line = 0;

	if (!cl || !(cl->ctx = SSL_CTX_new(TLS_client_method()))) {
		err = "out of memory";
		goto out;
	}
	if (!SSL_CTX_set_min_proto_version(cl->ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(cl->ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_cipher_list(cl->ctx, TLS_CIPHERS_12) ||
	    !SSL_CTX_set_ciphersuites(cl->ctx, TLS_CIPHERS_13) ||
	    !SSL_CTX_set1_groups_list(cl->ctx, TLS_GROUPS)) {
		err = tls_openssl_reason(buf, sizeof(buf));
		goto out;
	}
	SSL_CTX_set_options(cl->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(cl->ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
					  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (conf->backend_tls_ca_file) {
		key = "tls_ca_file";
		line = conf->backend_tls_line[0];
		if (SSL_CTX_load_verify_locations(cl->ctx, conf->backend_tls_ca_file, NULL) != 1) {
			snprintf(buf + 512, 512, "%s: %s", conf->backend_tls_ca_file,
				 tls_openssl_reason(buf, 512));
			err = buf + 512;
			goto out;
		}
		SSL_CTX_set_verify(cl->ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(cl->ctx, SSL_VERIFY_NONE, NULL);
	}
	if (conf->backend_tls_verify_name &&
	    !(cl->verify_name = strdup(conf->backend_tls_verify_name))) {
		err = "out of memory";
		goto out;
	}
	if (conf->backend_tls_fingerprint) {
		key = "tls_fingerprint";
		line = conf->backend_tls_line[2];
		if (!(list = strdup(conf->backend_tls_fingerprint))) {
			err = "out of memory";
			goto out;
		}
		for (char *w = tls_split(&save, list); w; w = tls_split(&save, NULL)) {
			unsigned char (*fp)[32] = realloc(cl->fingerprints,
							  (cl->nfingerprints + 1) * sizeof(*fp));
			if (!fp) {
				err = "out of memory";
				goto out;
			}
			cl->fingerprints = fp;
			if (!tls_fingerprint_parse(w, cl->fingerprints[cl->nfingerprints])) {
				snprintf(buf, sizeof(buf), "not a SHA-256 fingerprint (64 hex digits): \"%s\"", w);
				err = buf;
				goto out;
			}
			cl->nfingerprints++;
		}
		if (cl->nfingerprints == 0) {
			err = "empty";
			goto out;
		}
	}
out:
	free(list);
	if (err) {
		fprintf(errors, "%s:%d: [backend] %s: %s\n", conf->path, line, key, err);
		tls_client_free(cl);
		return -1;
	}
	conf->backend_tls_client = cl;
	return 0;
}

/* tls_load - every listener's contexts, and the backend's */
int tls_load(struct conf *conf, FILE *errors)
{
	int rc = 0;

	if (conf->backend_tls != CONF_BACKEND_TLS_NONE && tls_client_load(conf, errors) < 0)
		rc = -1;

	for (size_t i = 0; i < conf->nlisteners; i++) {
		struct conf_listener *l = &conf->listeners[i];
		if (l->tls != CONF_TLS_NONE && tls_server_load(conf, l, errors) < 0)
			rc = -1;
	}
	return rc;
}

/* tls_unload - release them */
void tls_unload(struct conf *conf)
{
	if (!conf)
		return;
	tls_client_free(conf->backend_tls_client);
	conf->backend_tls_client = NULL;
	for (size_t i = 0; i < conf->nlisteners; i++) {
		tls_server_free(conf->listeners[i].tls_server);
		conf->listeners[i].tls_server = NULL;
	}
}

/* tls_conn_new - an SSL for fd, waiting for the client's hello */
struct tls_conn *tls_conn_new(struct tls_server *srv, int fd,
			      const void *first, size_t len)
{
	struct tls_conn *t;
	BIO *rbio = NULL, *wbio = NULL;

	if (!srv || srv->ngroups == 0 || len > INT_MAX)
		return NULL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->fd = fd;
	t->ssl = SSL_new(srv->groups[0].ctx);
	if (!t->ssl)
		goto fail;
	if (len == 0) {
		if (SSL_set_fd(t->ssl, fd) != 1)
			goto fail;
	} else {
		/* Those bytes first, then the socket (tls_take_socket). */
		rbio = BIO_new(BIO_s_mem());
		wbio = BIO_new_socket(fd, BIO_NOCLOSE);
		if (!rbio || !wbio || BIO_write(rbio, first, (int)len) != (int)len)
			goto fail;
		BIO_set_mem_eof_return(rbio, -1); /* empty: "retry", not EOF */
		SSL_set_bio(t->ssl, rbio, wbio);
		t->first = true;
	}
	SSL_set_accept_state(t->ssl);
	return t;
fail:
	BIO_free(rbio);
	BIO_free(wbio);
	SSL_free(t->ssl);
	free(t);
	ERR_clear_error();
	return NULL;
}

/*
 * tls_take_socket - the bytes read before are all taken: the SSL reads
 * the socket from now on; false when it cannot (out of memory)
 */
static bool tls_take_socket(struct tls_conn *t)
{
	BIO *b = BIO_new_socket(t->fd, BIO_NOCLOSE);

	if (!b)
		return false;
	SSL_set0_rbio(t->ssl, b); /* frees the memory BIO */
	t->first = false;
	return true;
}

/*
 * tls_fail - an SSL call returned r: 0 with errno EAGAIN (and want set)
 * when it waits for the socket, 0 with got 0 for the end of input,
 * -1 with errno for a failure (its reason in t->error)
 */
static int tls_fail(struct tls_conn *t, int r)
{
	int e = SSL_get_error(t->ssl, r), saved = errno;
	char reason[160];

	switch (e) {
	case SSL_ERROR_WANT_READ:
		t->want = CONN_WANT_READ;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_WANT_WRITE:
		t->want = CONN_WANT_WRITE;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0; /* close_notify */
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_last_error() == 0) {
			/* A socket error, or the peer closed without close_notify. */
			ERR_clear_error();
			if (saved == 0 || saved == ECONNRESET || saved == EPIPE) {
				snprintf(t->error, sizeof(t->error), "%s",
					 saved ? strerror(saved) : "connection closed");
				if (saved == 0)
					return 0;
			}
			errno = saved ? saved : EPROTO;
			return -1;
		}
		/* fall through */
	default:
		snprintf(t->error, sizeof(t->error), "%s",
			 tls_openssl_reason(reason, sizeof(reason)));
		errno = EPROTO;
		return -1;
	}
}

/* tls_readv - decrypted input into the vectors, as many records as they hold */
static ssize_t tls_readv(void *ctx, int fd, const struct iovec *iov, int n)
{
	struct tls_conn *t = ctx;
	size_t total = 0;

	(void)fd;
	if (t->first && BIO_ctrl_pending(SSL_get_rbio(t->ssl)) == 0 && !tls_take_socket(t)) {
		errno = ENOMEM;
		return -1;
	}
	for (int i = 0; i < n; i++) {
		size_t got = 0;
		int r;

		ERR_clear_error();
		r = SSL_read_ex(t->ssl, iov[i].iov_base, iov[i].iov_len, &got);
		if (r != 1) {
			if (total)
				break; /* what was read first; the rest at the next call */
			return tls_fail(t, r);
		}
		total += got;
		if (got < iov[i].iov_len)
			break;
	}
	return (ssize_t)total;
}

/* tls_writev - the output in one record (gathered when it is in pieces) */
static ssize_t tls_writev(void *ctx, int fd, const struct iovec *iov, int n)
{
	struct tls_conn *t = ctx;
	unsigned char gather[TLS_WRITE_GATHER];
	const void *p = iov[0].iov_base;
	size_t len = iov[0].iov_len, put = 0;
	int r;

	(void)fd;
	if (n > 1 && len < sizeof(gather)) {
		/* Many small replies make one record, not one each. */
		len = 0;
		for (int i = 0; i < n && len < sizeof(gather); i++) {
			size_t take = iov[i].iov_len;
			if (take > sizeof(gather) - len)
				take = sizeof(gather) - len;
			memcpy(gather + len, iov[i].iov_base, take);
			len += take;
		}
		p = gather;
	}
	ERR_clear_error();
	r = SSL_write_ex(t->ssl, p, len, &put);
	if (r != 1) {
		int rc = tls_fail(t, r);
		if (rc == 0) {
			errno = EPIPE;
			return -1;
		}
		return rc;
	}
	return (ssize_t)put;
}

/* tls_handshake - one step of the server handshake */
static int tls_handshake(void *ctx, int fd)
{
	struct tls_conn *t = ctx;
	int r;

	(void)fd;
	ERR_clear_error();
	r = SSL_do_handshake(t->ssl);
	if (r == 1)
		return 1;
	if (tls_fail(t, r) < 0 && errno == EAGAIN) {
		/* The bytes read before are used up: the rest is in the socket. */
		if (t->first && t->want == CONN_WANT_READ &&
		    BIO_ctrl_pending(SSL_get_rbio(t->ssl)) == 0) {
			if (!tls_take_socket(t)) {
				snprintf(t->error, sizeof(t->error), "out of memory");
				return -1;
			}
			return tls_handshake(ctx, fd);
		}
		return 0;
	}
	if (!t->error[0])
		snprintf(t->error, sizeof(t->error), "connection closed");
	return -1;
}

/* tls_want - what the last call that could not go on waits for */
static int tls_want(void *ctx)
{
	return ((struct tls_conn *)ctx)->want;
}

/*
 * tls_pending - bytes the SSL holds that epoll cannot see: decrypted
 * input, or those read before it (tls_conn_new()'s first)
 */
static size_t tls_pending(void *ctx)
{
	struct tls_conn *t = ctx;

	return (size_t)SSL_pending(t->ssl) +
	       (t->first ? BIO_ctrl_pending(SSL_get_rbio(t->ssl)) : 0);
}

/*
 * tls_free - release the connection's state, after a close_notify when
 * the session ended in good order: without one, a client cannot tell our
 * close from a truncation (RFC 8446 6.1; Exim logs "TLS error on
 * connection (recv): The TLS connection was non-properly terminated"
 * after every delivery). One record, written without waiting: a full
 * socket or a gone peer loses only the alert.
 */
static void tls_free(void *ctx)
{
	struct tls_conn *t = ctx;

	if (!t)
		return;
	if (SSL_is_init_finished(t->ssl) && !t->error[0]) {
		ERR_clear_error();
		(void)SSL_shutdown(t->ssl);
		ERR_clear_error();
	}
	SSL_free(t->ssl);
	free(t);
}

const struct conn_transport tls_transport = {
	.name = "tls",
	.readv = tls_readv,
	.writev = tls_writev,
	.free = tls_free,
	.handshake = tls_handshake,
	.want = tls_want,
	.pending = tls_pending,
};

/* tls_conn_details - what was negotiated */
void tls_conn_details(struct tls_conn *t, struct tls_details *out)
{
	const char *sni = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
	X509 *peer = SSL_get0_peer_certificate(t->ssl);

	memset(out, 0, sizeof(*out));
	snprintf(out->version, sizeof(out->version), "%s", SSL_get_version(t->ssl));
	snprintf(out->cipher, sizeof(out->cipher), "%s", SSL_get_cipher_name(t->ssl));
	out->bits = SSL_get_cipher_bits(t->ssl, &out->alg_bits);
	snprintf(out->sni, sizeof(out->sni), "%s", sni ? sni : "");
	out->resumed = SSL_session_reused(t->ssl) == 1;
	if (peer) {
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned mdlen = 0;
		BIO *b = BIO_new(BIO_s_mem());

		if (b) {
			X509_NAME_print_ex(b, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253);
			int n = BIO_read(b, out->peer_subject, sizeof(out->peer_subject) - 1);
			out->peer_subject[n > 0 ? n : 0] = 0;
			BIO_free(b);
		}
		if (X509_digest(peer, EVP_sha256(), md, &mdlen) == 1) {
			char *p = out->peer_fingerprint;
			p += sprintf(p, "sha256:");
			for (unsigned i = 0; i < mdlen && i < 32; i++)
				p += sprintf(p, "%02x", md[i]);
		}
	}
	ERR_clear_error();
}

/* tls_conn_error - why it failed */
const char *tls_conn_error(const struct tls_conn *t)
{
	return t->error;
}

/* tls_client_conn_new - an SSL to the backend on fd, in the client role */
struct tls_conn *tls_client_conn_new(struct tls_client *cl, int fd)
{
	struct tls_conn *t;

	if (!cl)
		return NULL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->fd = fd;
	t->ssl = SSL_new(cl->ctx);
	if (!t->ssl || SSL_set_fd(t->ssl, fd) != 1 ||
	    (cl->verify_name && (SSL_set1_host(t->ssl, cl->verify_name) != 1 ||
				 SSL_set_tlsext_host_name(t->ssl, cl->verify_name) != 1))) {
		SSL_free(t->ssl);
		free(t);
		ERR_clear_error();
		return NULL;
	}
	SSL_set_connect_state(t->ssl);
	t->want = CONN_WANT_WRITE; /* the hello is ours to send */
	return t;
}

/* tls_client_check - the backend's certificate against tls_fingerprint */
const char *tls_client_check(const struct tls_client *cl, struct tls_conn *t)
{
	X509 *peer = SSL_get0_peer_certificate(t->ssl);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;

	if (!cl || cl->nfingerprints == 0)
		return NULL;
	if (!peer || X509_digest(peer, EVP_sha256(), md, &mdlen) != 1 || mdlen != 32)
		return "the backend presented no certificate";
	for (size_t i = 0; i < cl->nfingerprints; i++)
		if (memcmp(cl->fingerprints[i], md, 32) == 0)
			return NULL;
	return "the backend's certificate is not one of tls_fingerprint";
}
