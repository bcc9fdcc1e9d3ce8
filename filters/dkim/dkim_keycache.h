/*
 * dkim_keycache.h - decoded public keys, kept across messages
 *
 * libopendkim decodes a signature's key from its DER bytes (the p= tag,
 * base64-decoded) with OpenSSL's d2i_PUBKEY_bio() for every signature it
 * checks. With OpenSSL 3 that decoding costs several times the RSA
 * verification itself: it walks the provider's decoders under locks that
 * every filter thread takes. libopendkim offers no way to hand it a
 * decoded key, so the dkim filter defines d2i_PUBKEY_bio() itself. In
 * the filter host, which links no libcrypto, the dynamic linker binds
 * libopendkim's call to this definition (dkim.so comes before its
 * dependencies in the scope of the dlopen()ed filter); the portcullis
 * program links libcrypto for TLS, so it defines the function too and
 * passes each call on to this one (proxy/interpose.h).
 *
 * The cache is keyed on the exact DER bytes, so it changes no result:
 * the key is still looked up in DNS for every signature, a new key in
 * DNS is new bytes and is decoded afresh, and a key that does not decode
 * is never kept. It holds PCDKIM_KEYCACHE_SIZE keys, the least recently
 * used goes first; a hit hands out another reference to the same
 * EVP_PKEY, which OpenSSL lets threads use together for verifying.
 *
 * A BIO that is not a memory BIO (libopendkim passes one) goes to
 * OpenSSL's own function unchanged.
 */
#ifndef PCDKIM_KEYCACHE_H
#define PCDKIM_KEYCACHE_H

#include <stdbool.h>

#pragma GCC visibility push(hidden)

#define PCDKIM_KEYCACHE_SIZE 64

/* the longest DER key kept: an RSA key of 8192 bits is 1,062 bytes */
#define PCDKIM_KEYCACHE_MAX_DER 2048

struct pcdkim_keycache_stats {
	unsigned long long calls;	/* d2i_PUBKEY_bio() calls seen */
	unsigned long long hits;	/* of which answered from the cache */
};

/* pcdkim_keycache_stats - the counters so far (for logs and tests) */
void pcdkim_keycache_stats(struct pcdkim_keycache_stats *st);

/* pcdkim_keycache_clear - drop every key (the filter's last fini) */
void pcdkim_keycache_clear(void);

#pragma GCC visibility pop

#endif
