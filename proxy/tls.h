/*
 * tls.h - TLS (OpenSSL 3): server contexts, the backend's client context,
 * and a conn transport
 *
 * A listener with tls = starttls or implicit has one struct tls_server,
 * made from its tls_certificate / tls_key pairs when the configuration
 * is loaded (tls_load(), by the master while it is still root, so a key
 * readable by root only serves workers that run as an unprivileged
 * user). The workers inherit it by fork; the ticket keys made with it
 * are therefore the same in every worker of a generation, and a session
 * ticket issued by one worker resumes in another. A reload loads a new
 * configuration and so new contexts: new workers serve the new
 * certificates while the old workers finish their sessions with theirs.
 *
 * Pairs are grouped by the names their certificates carry: a pair whose
 * names equal an earlier pair's goes into that pair's SSL_CTX (RSA and
 * ECDSA side by side; OpenSSL picks by the client's signature
 * algorithms), any other pair gets an SSL_CTX of its own, chosen by SNI.
 * No SNI, or a name no certificate carries, gets the first pair's.
 *
 * Protocols TLS 1.2 and 1.3 only, Mozilla's "intermediate" ciphers,
 * tickets and a server-side session cache, a client certificate asked
 * for but never required nor checked (its subject and fingerprint are
 * only reported), SSL_MODE_RELEASE_BUFFERS so an idle connection holds
 * no record buffers.
 *
 * tls_conn_new() makes the state of one connection; tls_transport is
 * the conn transport over it (conn_start_tls() drives its handshake from
 * the event loop). After the handshake tls_conn_details() tells what was
 * negotiated; after a failed one tls_conn_error() tells why.
 */
/*
 * Outbound, to the backend ([backend] tls = may | encrypt): one client
 * context, made by tls_load() too, TLS 1.2 and 1.3 with the same
 * ciphers; the backend's chain is verified against tls_ca_file when one
 * is given (and its certificate must then carry tls_verify_name when
 * that is given), its certificate's SHA-256 must be one of
 * tls_fingerprint when those are given. tls_client_conn_new() makes a
 * connection's state (the relay then drives the handshake with
 * conn_start_tls() like the server side), tls_client_check() says
 * whether the finished handshake met the fingerprints.
 */
#ifndef PORTCULLIS_TLS_H
#define PORTCULLIS_TLS_H

#include <stdbool.h>
#include <stdio.h>

struct conf;
struct conf_listener;
struct conn_transport;
struct tls_conn;
struct tls_server;
struct tls_client;

/* What a handshake negotiated, copied out for the session and its records. */
struct tls_details {
	char version[16];	 /* "TLSv1.3" */
	char cipher[64];	 /* "TLS_AES_256_GCM_SHA384" */
	int bits, alg_bits;	 /* secret bits, algorithm bits */
	char sni[256];		 /* the name the client asked for, or "" */
	bool resumed;
	char peer_subject[512];	 /* RFC 2253, or "" without a client certificate */
	char peer_fingerprint[72]; /* "sha256:" and 64 hex digits, or "" */
};

/*
 * tls_load - make the server context of every listener with TLS in
 * conf; an error (a file missing, a key that does not match its
 * certificate) is written to errors as "FILE:LINE: [listener NAME] KEY:
 * what, OpenSSL's reason". Returns 0, or -1 after errors.
 */
int tls_load(struct conf *conf, FILE *errors);

/* tls_unload - release the contexts tls_load() made (before conf_free()) */
void tls_unload(struct conf *conf);

/*
 * tls_conn_new - the TLS state of one accepted connection on fd, served
 * with srv; NULL when it cannot be made now (out of memory). The len
 * bytes at first (copied; 0 for none) are the start of the client's
 * TLS, read from fd already: on an implicit TLS listener behind a PROXY
 * header, the client's hello may come in the header's segment.
 */
struct tls_conn *tls_conn_new(struct tls_server *srv, int fd,
			      const void *first, size_t len);

/* The conn transport over a struct tls_conn (its free() is SSL_free()). */
extern const struct conn_transport tls_transport;

/* tls_conn_details - what the finished handshake negotiated */
void tls_conn_details(struct tls_conn *t, struct tls_details *out);

/* tls_conn_error - why the handshake failed ("" when it did not) */
const char *tls_conn_error(const struct tls_conn *t);

/*
 * tls_client_conn_new - the TLS state of a connection to the backend on
 * fd, in the client role; NULL when it cannot be made now
 */
struct tls_conn *tls_client_conn_new(struct tls_client *cl, int fd);

/*
 * tls_client_check - whether the backend's certificate after the
 * handshake is one of tls_fingerprint (when given): NULL, or why not
 */
const char *tls_client_check(const struct tls_client *cl, struct tls_conn *t);

#endif
