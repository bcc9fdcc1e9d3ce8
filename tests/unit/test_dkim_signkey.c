/*
 * test_dkim_signkey.c - the dkim filter's table of decoded signing keys
 *
 * The table defines OpenSSL's PEM_read_bio_PrivateKey() and
 * d2i_PrivateKey_bio(); linked into this program, it answers every call
 * made here, as it answers libopendkim's in the filter. Keys are EC P-256
 * (quick to make) except where threads sign with RSA; the table does not
 * care which type a key is.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "dkim_signkey.h"
#include "unit.h"

struct text {
	char *p;
	size_t len;
};

/* key_pem - the PEM text (PKCS#8) of a key, NUL-terminated */
static struct text key_pem(EVP_PKEY *k)
{
	struct text t = { NULL, 0 };
	BIO *b = BIO_new(BIO_s_mem());
	char *data;
	long n;

	if (b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) &&
	    (n = BIO_get_mem_data(b, &data)) > 0 && (t.p = malloc((size_t)n + 1))) {
		memcpy(t.p, data, (size_t)n);
		t.p[n] = '\0';
		t.len = (size_t)n;
	}
	BIO_free(b);
	return t;
}

/* new_key - a fresh EC P-256 key */
static EVP_PKEY *new_key(void)
{
	return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

/* new_key_pem - the PEM text of a fresh key */
static struct text new_key_pem(void)
{
	EVP_PKEY *k = new_key();
	struct text t = key_pem(k);

	EVP_PKEY_free(k);
	return t;
}

/* read_pem - PEM_read_bio_PrivateKey() on a memory BIO holding data;
 * left: bytes the decoding did not consume */
static EVP_PKEY *read_pem(const void *data, size_t len, long *left)
{
	BIO *b = BIO_new_mem_buf(data, (int)len);
	EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	char *rest;

	if (left)
		*left = BIO_get_mem_data(b, &rest);
	BIO_free(b);
	return k;
}

/* read_der - d2i_PrivateKey_bio() on a memory BIO holding data */
static EVP_PKEY *read_der(const void *data, size_t len)
{
	BIO *b = BIO_new_mem_buf(data, (int)len);
	EVP_PKEY *k = d2i_PrivateKey_bio(b, NULL);

	BIO_free(b);
	return k;
}

static struct pcdkim_signkey_stats stats(void)
{
	struct pcdkim_signkey_stats st;

	pcdkim_signkey_stats(&st);
	return st;
}

static void test_an_added_key_text_gives_the_same_key_back(void)
{
	struct text t = new_key_pem();
	struct pcdkim_signkey_stats before;
	long left = -1, openssl_left = -1;
	BIO *b;

	EVP_PKEY *added = pcdkim_signkey_add(t.p, t.len);
	CHECK_NOT_NULL(added);
	before = stats();
	EVP_PKEY *k = read_pem(t.p, t.len, &left);
	CHECK(k == added);
	CHECK_UINT_EQ(stats().calls - before.calls, 1);
	CHECK_UINT_EQ(stats().hits - before.hits, 1);
	/* the BIO is left as OpenSSL's own decoding leaves it */
	b = BIO_new_mem_buf(t.p, (int)t.len);
	EVP_PKEY *fresh = PEM_read_bio_PrivateKey_ex(b, NULL, NULL, NULL, NULL, NULL);
	openssl_left = BIO_pending(b);
	BIO_free(b);
	CHECK_INT_EQ(left, openssl_left);
	CHECK_INT_EQ(EVP_PKEY_eq(k, fresh), 1);
	/* each caller holds its own reference */
	EVP_PKEY_free(k);
	EVP_PKEY_free(added);
	pcdkim_signkey_remove(t.p, t.len);
	CHECK_INT_EQ(EVP_PKEY_get_bits(fresh), 256);
	EVP_PKEY_free(fresh);
	free(t.p);
}

static void test_other_texts_go_to_openssl(void)
{
	struct text t = new_key_pem(), other = new_key_pem();
	struct pcdkim_signkey_stats before;
	char *longer = malloc(t.len + 2);

	EVP_PKEY *added = pcdkim_signkey_add(t.p, t.len);
	before = stats();
	/* another key */
	EVP_PKEY *k = read_pem(other.p, other.len, NULL);
	CHECK(k && k != added);
	CHECK_INT_EQ(EVP_PKEY_eq(k, added), 0);
	EVP_PKEY_free(k);
	/* the same key in other bytes (one more newline) is decoded afresh */
	memcpy(longer, t.p, t.len);
	memcpy(longer + t.len, "\n", 2);
	k = read_pem(longer, t.len + 1, NULL);
	CHECK(k && k != added);
	CHECK_INT_EQ(EVP_PKEY_eq(k, added), 1);
	EVP_PKEY_free(k);
	/* as is a prefix of it, which is no key at all */
	CHECK_NULL(read_pem(t.p, t.len - 30, NULL));
	CHECK_UINT_EQ(stats().hits - before.hits, 0);
	EVP_PKEY_free(added);
	pcdkim_signkey_remove(t.p, t.len);
	free(longer);
	free(t.p);
	free(other.p);
}

static void test_each_reader_answers_only_its_own_encoding(void)
{
	EVP_PKEY *key = new_key();
	struct text pem = key_pem(key);
	unsigned char *der = NULL;
	int derlen = i2d_PrivateKey(key, &der);
	struct pcdkim_signkey_stats before;

	EVP_PKEY *by_pem = pcdkim_signkey_add(pem.p, pem.len);
	EVP_PKEY *by_der = pcdkim_signkey_add((const char *)der, (size_t)derlen);
	CHECK(by_pem && by_der);
	before = stats();
	/* what OpenSSL would answer: the PEM text is no DER, and not PEM */
	CHECK_NULL(read_der(pem.p, pem.len));
	CHECK_NULL(read_pem(der, (size_t)derlen, NULL));
	CHECK_UINT_EQ(stats().hits - before.hits, 0);
	/* each from its own reader */
	EVP_PKEY *k = read_der(der, (size_t)derlen);
	CHECK(k == by_der);
	EVP_PKEY_free(k);
	k = read_pem(pem.p, pem.len, NULL);
	CHECK(k == by_pem);
	EVP_PKEY_free(k);
	CHECK_UINT_EQ(stats().hits - before.hits, 2);
	EVP_PKEY_free(by_pem);
	EVP_PKEY_free(by_der);
	pcdkim_signkey_remove(pem.p, pem.len);
	pcdkim_signkey_remove((const char *)der, (size_t)derlen);
	OPENSSL_free(der);
	free(pem.p);
	EVP_PKEY_free(key);
}

static void test_other_bios_and_reuse_go_to_openssl_unchanged(void)
{
	struct text t = new_key_pem();
	struct pcdkim_signkey_stats before;
	FILE *f = tmpfile();
	EVP_PKEY *k, *into = NULL;
	BIO *b;

	EVP_PKEY *added = pcdkim_signkey_add(t.p, t.len);
	fwrite(t.p, 1, t.len, f);
	rewind(f);
	before = stats();
	b = BIO_new_fp(f, BIO_NOCLOSE);
	k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	CHECK(k && k != added);
	BIO_free(b);
	EVP_PKEY_free(k);
	/* an object to fill in is OpenSSL's business too */
	b = BIO_new_mem_buf(t.p, (int)t.len);
	k = PEM_read_bio_PrivateKey(b, &into, NULL, NULL);
	CHECK(k && k == into && k != added);
	BIO_free(b);
	EVP_PKEY_free(k);
	CHECK_UINT_EQ(stats().calls - before.calls, 0);
	EVP_PKEY_free(added);
	pcdkim_signkey_remove(t.p, t.len);
	fclose(f);
	free(t.p);
}

static void test_a_removed_key_is_decoded_afresh(void)
{
	struct text t = new_key_pem();
	struct pcdkim_signkey_stats before;

	EVP_PKEY *added = pcdkim_signkey_add(t.p, t.len);
	EVP_PKEY *held = read_pem(t.p, t.len, NULL);
	pcdkim_signkey_remove(t.p, t.len);
	before = stats();
	EVP_PKEY *k = read_pem(t.p, t.len, NULL);
	CHECK(k && k != added);
	CHECK_UINT_EQ(stats().hits - before.hits, 0);
	/* a key handed out before stays the caller's (a signature under way) */
	CHECK(held == added);
	CHECK_INT_EQ(EVP_PKEY_eq(held, k), 1);
	EVP_PKEY_free(held);
	EVP_PKEY_free(added);
	EVP_PKEY_free(k);
	free(t.p);
}

static void test_a_text_two_instances_added_stays_until_both_removed_it(void)
{
	struct text t = new_key_pem();

	EVP_PKEY *a = pcdkim_signkey_add(t.p, t.len);
	EVP_PKEY *b = pcdkim_signkey_add(t.p, t.len);
	CHECK(a && a == b);
	pcdkim_signkey_remove(t.p, t.len);
	EVP_PKEY *k = read_pem(t.p, t.len, NULL);
	CHECK(k == a);
	EVP_PKEY_free(k);
	pcdkim_signkey_remove(t.p, t.len);
	k = read_pem(t.p, t.len, NULL);
	CHECK(k && k != a);
	EVP_PKEY_free(k);
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
	free(t.p);
}

static void test_what_does_not_decode_is_not_added(void)
{
	static const char junk[] = "-----BEGIN PRIVATE KEY-----\nnot base64\n"
				   "-----END PRIVATE KEY-----\n";
	EVP_PKEY *key = new_key();
	BIO *b = BIO_new(BIO_s_mem());
	char *enc;
	long n;

	CHECK_NULL(pcdkim_signkey_add(junk, sizeof(junk) - 1));
	CHECK_NULL(pcdkim_signkey_add("\x30\x03\x02\x01\x05", 5));
	/* a key under a passphrase: refused, never a prompt */
	PEM_write_bio_PrivateKey(b, key, EVP_aes_128_cbc(), NULL, 0, NULL, "secret");
	n = BIO_get_mem_data(b, &enc);
	CHECK_NULL(pcdkim_signkey_add(enc, (size_t)n));
	BIO_free(b);
	EVP_PKEY_free(key);
}

/* What one signing thread does: decode as libopendkim does, sign. */
struct signer {
	const struct text *text;
	EVP_PKEY *added;
	int same, verified;
};

/* signer_run - 40 messages signed with the key the table hands out */
static void *signer_run(void *arg)
{
	struct signer *s = arg;
	static const unsigned char msg[] = "a message to sign";

	for (int i = 0; i < 40; i++) {
		EVP_PKEY *k = read_pem(s->text->p, s->text->len, NULL);
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		unsigned char sig[512];
		size_t siglen = sizeof(sig);

		if (k == s->added)
			s->same++;
		if (k && md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) == 1 &&
		    EVP_DigestSign(md, sig, &siglen, msg, sizeof(msg)) == 1) {
			EVP_MD_CTX_reset(md);
			if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k) == 1 &&
			    EVP_DigestVerify(md, sig, siglen, msg, sizeof(msg)) == 1)
				s->verified++;
		}
		EVP_MD_CTX_free(md);
		EVP_PKEY_free(k);
	}
	return NULL;
}

static void test_threads_sign_with_one_key_together(void)
{
	EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	struct text t = key_pem(rsa);
	struct signer s[4];
	pthread_t th[4];

	EVP_PKEY *added = pcdkim_signkey_add(t.p, t.len);
	CHECK_NOT_NULL(added);
	for (int i = 0; i < 4; i++) {
		s[i] = (struct signer){ &t, added, 0, 0 };
		pthread_create(&th[i], NULL, signer_run, &s[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK_INT_EQ(s[i].same, 40);
		CHECK_INT_EQ(s[i].verified, 40);
	}
	EVP_PKEY_free(added);
	pcdkim_signkey_remove(t.p, t.len);
	EVP_PKEY_free(rsa);
	free(t.p);
}

int main(void)
{
	RUN(test_an_added_key_text_gives_the_same_key_back);
	RUN(test_other_texts_go_to_openssl);
	RUN(test_each_reader_answers_only_its_own_encoding);
	RUN(test_other_bios_and_reuse_go_to_openssl_unchanged);
	RUN(test_a_removed_key_is_decoded_afresh);
	RUN(test_a_text_two_instances_added_stays_until_both_removed_it);
	RUN(test_what_does_not_decode_is_not_added);
	RUN(test_threads_sign_with_one_key_together);
	return unit_summary();
}
