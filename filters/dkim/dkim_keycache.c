/*
 * dkim_keycache.c - decoded public keys, kept across messages (see the
 * header for why this file defines an OpenSSL function)
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "dkim_keycache.h"

struct keycache_entry {
	uint64_t hash;
	size_t len;			/* 0: a free slot */
	unsigned char *der;
	EVP_PKEY *pkey;
	unsigned long long used;	/* when last handed out (a counter) */
};

static pthread_mutex_t keycache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct keycache_entry keycache[PCDKIM_KEYCACHE_SIZE];
static unsigned long long keycache_clock;
static struct pcdkim_keycache_stats keycache_counts;

/* keycache_hash - FNV-1a of the DER bytes */
static uint64_t keycache_hash(const unsigned char *p, size_t len)
{
	uint64_t h = 14695981039346656037ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/*
 * keycache_der_len - the length of the DER value data starts with (its
 * header says it, so bytes after it never change what it decodes to),
 * or 0 when the header is bad or the value runs past len
 */
static size_t keycache_der_len(const unsigned char *data, size_t len)
{
	const unsigned char *q = data;
	long clen;
	int tag, xclass, r;

	r = ASN1_get_object(&q, &clen, &tag, &xclass, (long)len);
	/* 0x80: an error; bit 0: an indefinite length, which DER has not */
	if ((r & 0x80) || (r & 1))
		return 0;
	return (size_t)(q - data) + (size_t)clen;
}

/* keycache_find - the entry of these DER bytes (hash h); under the lock */
static struct keycache_entry *keycache_find(const unsigned char *der, size_t len,
					    uint64_t h)
{
	for (size_t i = 0; i < PCDKIM_KEYCACHE_SIZE; i++) {
		struct keycache_entry *e = &keycache[i];

		if (e->len == len && e->hash == h && memcmp(e->der, der, len) == 0)
			return e;
	}
	return NULL;
}

/* keycache_put - keep a decoded key, dropping the least recently used */
static void keycache_put(const unsigned char *der, size_t len, uint64_t h,
			 EVP_PKEY *pkey)
{
	struct keycache_entry *victim = &keycache[0];
	unsigned char *copy = malloc(len);

	if (!copy)
		return;
	memcpy(copy, der, len);
	pthread_mutex_lock(&keycache_lock);
	if (keycache_find(der, len, h)) {
		/* Another thread decoded the same key meanwhile. */
		pthread_mutex_unlock(&keycache_lock);
		free(copy);
		return;
	}
	for (size_t i = 0; i < PCDKIM_KEYCACHE_SIZE; i++) {
		if (!keycache[i].len) {
			victim = &keycache[i];
			break;
		}
		if (keycache[i].used < victim->used)
			victim = &keycache[i];
	}
	if (victim->len) {
		EVP_PKEY_free(victim->pkey);
		free(victim->der);
	}
	EVP_PKEY_up_ref(pkey);
	victim->hash = h;
	victim->len = len;
	victim->der = copy;
	victim->pkey = pkey;
	victim->used = ++keycache_clock;
	pthread_mutex_unlock(&keycache_lock);
}

/* keycache_decode - what OpenSSL's own d2i_PUBKEY_bio() does */
static EVP_PKEY *keycache_decode(BIO *bp, EVP_PKEY **a)
{
	return ASN1_d2i_bio_of(EVP_PKEY, EVP_PKEY_new, d2i_PUBKEY, bp, a);
}

/*
 * d2i_PUBKEY_bio - OpenSSL's function, answered from the cache when the
 * BIO is a memory BIO (libopendkim's) and no object is to be reused
 */
__attribute__((visibility("default")))
EVP_PKEY *d2i_PUBKEY_bio(BIO *bp, EVP_PKEY **a)
{
	unsigned char der[PCDKIM_KEYCACHE_MAX_DER];
	char *data;
	long avail, left;
	size_t len;
	uint64_t h;
	EVP_PKEY *pkey;

	if (a || !bp || BIO_method_type(bp) != BIO_TYPE_MEM)
		return keycache_decode(bp, a);
	avail = BIO_get_mem_data(bp, &data);
	if (avail <= 0)
		return keycache_decode(bp, a);
	len = (size_t)avail < sizeof(der) ? (size_t)avail : sizeof(der);
	memcpy(der, data, len);
	len = keycache_der_len(der, len);
	h = keycache_hash(der, len);

	pthread_mutex_lock(&keycache_lock);
	keycache_counts.calls++;
	struct keycache_entry *e = len ? keycache_find(der, len, h) : NULL;
	if (e) {
		pkey = e->pkey;
		EVP_PKEY_up_ref(pkey);
		e->used = ++keycache_clock;
		keycache_counts.hits++;
		pthread_mutex_unlock(&keycache_lock);
		/* Consume the value, as decoding it would have. */
		if (BIO_read(bp, der, (int)len) != (int)len) {
			EVP_PKEY_free(pkey);
			return NULL;
		}
		return pkey;
	}
	pthread_mutex_unlock(&keycache_lock);

	pkey = keycache_decode(bp, NULL);
	left = BIO_get_mem_data(bp, &data);
	/* Kept only when OpenSSL took exactly the value the header gave. */
	if (pkey && len && (size_t)(avail - (left > 0 ? left : 0)) == len)
		keycache_put(der, len, h, pkey);
	return pkey;
}

void pcdkim_keycache_stats(struct pcdkim_keycache_stats *st)
{
	pthread_mutex_lock(&keycache_lock);
	*st = keycache_counts;
	pthread_mutex_unlock(&keycache_lock);
}

void pcdkim_keycache_clear(void)
{
	pthread_mutex_lock(&keycache_lock);
	for (size_t i = 0; i < PCDKIM_KEYCACHE_SIZE; i++) {
		struct keycache_entry *e = &keycache[i];

		if (!e->len)
			continue;
		EVP_PKEY_free(e->pkey);
		free(e->der);
		memset(e, 0, sizeof(*e));
	}
	pthread_mutex_unlock(&keycache_lock);
}
