/*
 * dkim_signkey.c - decoded signing keys, handed to libopendkim (see the
 * header for why this file defines two OpenSSL functions)
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "dkim_signkey.h"

struct signkey {
	struct signkey *next;
	char *text;		/* the key's text: cleansed before it is freed */
	size_t len;
	bool pem;		/* read by PEM_read_bio_PrivateKey(), else DER */
	size_t consumed;	/* what OpenSSL's decoding took from the BIO */
	EVP_PKEY *pkey;
	unsigned refs;		/* pcdkim_signkey_add() calls not undone */
};

static pthread_mutex_t signkey_lock = PTHREAD_MUTEX_INITIALIZER;
static struct signkey *signkeys;
static struct pcdkim_signkey_stats signkey_counts;

/* signkey_no_password - no passphrase prompt, ever: a key must be plain */
static int signkey_no_password(char *buf, int size, int rwflag, void *u)
{
	return 0;
}

/* signkey_is_pem - libopendkim's rule for which reader a text gets */
static bool signkey_is_pem(const char *text, size_t len)
{
	return len >= 5 && memcmp(text, "-----", 5) == 0;
}

/* signkey_is - whether entry k is this text for this reader */
static bool signkey_is(const struct signkey *k, const char *text, size_t len, bool pem)
{
	return k->pem == pem && k->len == len && memcmp(k->text, text, len) == 0;
}

/* signkey_find - the entry of this text for this reader; under the lock */
static struct signkey *signkey_find(const char *text, size_t len, bool pem)
{
	for (struct signkey *k = signkeys; k; k = k->next)
		if (signkey_is(k, text, len, pem))
			return k;
	return NULL;
}

/* signkey_free - one entry, its text cleansed */
static void signkey_free(struct signkey *k)
{
	OPENSSL_cleanse(k->text, k->len);
	free(k->text);
	EVP_PKEY_free(k->pkey);
	free(k);
}

/* signkey_decode - the key of a text as OpenSSL decodes it, and how
 * many bytes of the BIO that took */
static EVP_PKEY *signkey_decode(const char *text, size_t len, bool pem,
				size_t *consumed)
{
	BIO *bio = BIO_new_mem_buf(text, (int)len);
	EVP_PKEY *pkey;

	if (!bio)
		return NULL;
	pkey = pem ? PEM_read_bio_PrivateKey_ex(bio, NULL, signkey_no_password,
						NULL, NULL, NULL)
		   : d2i_PrivateKey_ex_bio(bio, NULL, NULL, NULL);
	*consumed = len - BIO_pending(bio);
	BIO_free(bio);
	return pkey;
}

EVP_PKEY *pcdkim_signkey_add(const char *text, size_t len)
{
	bool pem = signkey_is_pem(text, len);
	struct signkey *k, *other;

	if (len > 0x7fffffff)
		return NULL;
	k = calloc(1, sizeof(*k));
	if (!k || !(k->text = malloc(len ? len : 1))) {
		free(k);
		return NULL;
	}
	memcpy(k->text, text, len);
	k->len = len;
	k->pem = pem;
	k->refs = 1;
	k->pkey = signkey_decode(text, len, pem, &k->consumed);
	if (!k->pkey) {
		signkey_free(k);
		return NULL;
	}
	pthread_mutex_lock(&signkey_lock);
	other = signkey_find(text, len, pem);
	if (other) {
		/* Another instance signs with this key: share its object. */
		other->refs++;
		EVP_PKEY_up_ref(other->pkey);
		pthread_mutex_unlock(&signkey_lock);
		signkey_free(k);
		return other->pkey;
	}
	k->next = signkeys;
	signkeys = k;
	EVP_PKEY_up_ref(k->pkey);
	pthread_mutex_unlock(&signkey_lock);
	return k->pkey;
}

void pcdkim_signkey_remove(const char *text, size_t len)
{
	struct signkey **p, *gone = NULL;
	bool pem = signkey_is_pem(text, len);

	pthread_mutex_lock(&signkey_lock);
	for (p = &signkeys; *p; p = &(*p)->next) {
		struct signkey *k = *p;

		if (!signkey_is(k, text, len, pem))
			continue;
		if (--k->refs == 0) {
			*p = k->next;
			gone = k;
		}
		break;
	}
	pthread_mutex_unlock(&signkey_lock);
	/* A signature under way holds its own reference to the key. */
	if (gone)
		signkey_free(gone);
}

void pcdkim_signkey_stats(struct pcdkim_signkey_stats *st)
{
	pthread_mutex_lock(&signkey_lock);
	*st = signkey_counts;
	pthread_mutex_unlock(&signkey_lock);
}

/*
 * signkey_lookup - the added key whose text a memory BIO holds, for the
 * reader pem says, with the BIO consumed as decoding would; NULL when
 * there is none and OpenSSL must decode
 */
static EVP_PKEY *signkey_lookup(BIO *bp, bool pem)
{
	struct signkey *k;
	EVP_PKEY *pkey;
	char *data, sink[512];
	long avail;
	size_t left;

	if (!bp || BIO_method_type(bp) != BIO_TYPE_MEM)
		return NULL;
	avail = BIO_get_mem_data(bp, &data);
	if (avail <= 0)
		return NULL;
	pthread_mutex_lock(&signkey_lock);
	signkey_counts.calls++;
	k = signkey_find(data, (size_t)avail, pem);
	if (!k) {
		pthread_mutex_unlock(&signkey_lock);
		return NULL;
	}
	signkey_counts.hits++;
	pkey = k->pkey;
	EVP_PKEY_up_ref(pkey);
	left = k->consumed;
	pthread_mutex_unlock(&signkey_lock);
	while (left > 0) {
		int n = BIO_read(bp, sink, left < sizeof(sink) ? (int)left : (int)sizeof(sink));

		if (n <= 0)
			break;
		left -= (size_t)n;
	}
	return pkey;
}

/*
 * PEM_read_bio_PrivateKey - OpenSSL's function, answered from the table
 * when the BIO holds an added PEM text and no object is to be reused
 */
__attribute__((visibility("default")))
EVP_PKEY *PEM_read_bio_PrivateKey(BIO *bp, EVP_PKEY **x, pem_password_cb *cb,
				  void *u)
{
	EVP_PKEY *pkey = x ? NULL : signkey_lookup(bp, true);

	/* what OpenSSL's own PEM_read_bio_PrivateKey() does */
	return pkey ? pkey : PEM_read_bio_PrivateKey_ex(bp, x, cb, u, NULL, NULL);
}

/*
 * d2i_PrivateKey_bio - OpenSSL's function, answered from the table when
 * the BIO holds an added DER key and no object is to be reused
 */
__attribute__((visibility("default")))
EVP_PKEY *d2i_PrivateKey_bio(BIO *bp, EVP_PKEY **a)
{
	EVP_PKEY *pkey = a ? NULL : signkey_lookup(bp, false);

	/* what OpenSSL's own d2i_PrivateKey_bio() does */
	return pkey ? pkey : d2i_PrivateKey_ex_bio(bp, a, NULL, NULL);
}
