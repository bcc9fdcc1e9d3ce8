/*
 * dkim_signkey.h - decoded signing keys, handed to libopendkim
 *
 * libopendkim takes a signing key as text (dkim_sign()) and decodes it
 * again at the end of every message it signs (dkim_privkey_load(): a
 * memory BIO over the text, then OpenSSL's PEM_read_bio_PrivateKey()
 * when the text starts with "-----", else d2i_PrivateKey_bio()). With
 * OpenSSL 3 that decoding, and the RSA blinding that a freshly decoded
 * key sets up again, cost about as much as the RSA signature itself.
 * libopendkim offers no way to hand it a decoded key, so the dkim filter
 * defines both functions, as it defines d2i_PUBKEY_bio() for the keys it
 * verifies with (dkim_keycache.h says how the call reaches the filter;
 * proxy/interpose.h why the program passes it on).
 *
 * The filter adds the text of each configured key at init
 * (pcdkim_signkey_add() decodes it as libopendkim would, and gives the
 * key back for checking) and removes it at fini; a text that two
 * instances added (two [filter] sections signing with one key) stays
 * until both removed it. A call whose BIO is a memory BIO holding exactly
 * an added text, read by the function libopendkim uses for that text,
 * with no object to reuse, gets another reference to the decoded
 * EVP_PKEY, and the BIO is consumed as far as OpenSSL's decoding consumed
 * it; OpenSSL lets threads sign with one EVP_PKEY (its RSA blinding is
 * shared under OpenSSL's own lock). Anything else goes to OpenSSL's own
 * function unchanged, so the table changes no result: only its cost.
 *
 * The table is process-wide (the interposed functions have no instance)
 * and every function here is safe to call from any thread.
 */
#ifndef PCDKIM_SIGNKEY_H
#define PCDKIM_SIGNKEY_H

#include <stddef.h>

#include <openssl/evp.h>

#pragma GCC visibility push(hidden)

struct pcdkim_signkey_stats {
	unsigned long long calls;	/* decodings of a memory BIO seen */
	unsigned long long hits;	/* of which answered from the table */
};

/*
 * pcdkim_signkey_add - decode a key text (PEM when it starts with
 * "-----", else DER; never with a passphrase) and answer libopendkim's
 * decoding of it from now on: a new reference to the key, or NULL when
 * it does not decode (OpenSSL's error queue says why) or memory ran out
 */
EVP_PKEY *pcdkim_signkey_add(const char *text, size_t len);

/* pcdkim_signkey_remove - undo one pcdkim_signkey_add() of this text */
void pcdkim_signkey_remove(const char *text, size_t len);

/* pcdkim_signkey_stats - the counters so far (for logs and tests) */
void pcdkim_signkey_stats(struct pcdkim_signkey_stats *st);

#pragma GCC visibility pop

#endif
