/*
 * test_dkim_keycache.c - the dkim filter's cache of decoded public keys
 *
 * The cache defines OpenSSL's d2i_PUBKEY_bio(); linked into this program,
 * it answers every call made here, as it answers libopendkim's in the
 * filter. Keys are EC P-256 (quick to make); the cache does not care
 * which type a key is.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "dkim_keycache.h"
#include "unit.h"

struct der {
	unsigned char *p;
	int len;
};

/* new_key_der - the SubjectPublicKeyInfo DER of a fresh key */
static struct der new_key_der(void)
{
	struct der d = { NULL, 0 };
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

	if (k)
		d.len = i2d_PUBKEY(k, &d.p);
	EVP_PKEY_free(k);
	return d;
}

/* decode - d2i_PUBKEY_bio() on a memory BIO holding data; left: bytes
 * the decoding did not consume */
static EVP_PKEY *decode(const void *data, int len, long *left)
{
	BIO *b = BIO_new_mem_buf(data, len);
	EVP_PKEY *k = d2i_PUBKEY_bio(b, NULL);
	char *rest;

	if (left)
		*left = BIO_get_mem_data(b, &rest);
	BIO_free(b);
	return k;
}

static struct pcdkim_keycache_stats stats(void)
{
	struct pcdkim_keycache_stats st;

	pcdkim_keycache_stats(&st);
	return st;
}

static void test_the_second_decoding_is_the_same_key_from_the_cache(void)
{
	struct der d = new_key_der();
	struct pcdkim_keycache_stats before = stats();
	long left = -1;

	pcdkim_keycache_clear();
	EVP_PKEY *a = decode(d.p, d.len, &left);
	CHECK_NOT_NULL(a);
	CHECK_INT_EQ(left, 0);
	EVP_PKEY *b = decode(d.p, d.len, &left);
	CHECK(a == b);
	CHECK_INT_EQ(left, 0);
	CHECK_UINT_EQ(stats().calls - before.calls, 2);
	CHECK_UINT_EQ(stats().hits - before.hits, 1);
	/* each caller got its own reference */
	EVP_PKEY_free(a);
	CHECK_INT_EQ(EVP_PKEY_get_bits(b), 256);
	EVP_PKEY_free(b);
	OPENSSL_free(d.p);
}

static void test_bytes_after_the_key_are_left_in_the_bio(void)
{
	struct der d = new_key_der();
	unsigned char *buf = malloc((size_t)d.len + 5);
	long left = -1;

	pcdkim_keycache_clear();
	memcpy(buf, d.p, (size_t)d.len);
	memcpy(buf + d.len, "tail!", 5);
	EVP_PKEY *a = decode(buf, d.len + 5, &left);
	CHECK_NOT_NULL(a);
	CHECK_INT_EQ(left, 5);
	/* a hit consumes exactly as much; other trailing bytes do not matter */
	memcpy(buf + d.len, "other", 5);
	EVP_PKEY *b = decode(buf, d.len + 5, &left);
	CHECK(a == b);
	CHECK_INT_EQ(left, 5);
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
	free(buf);
	OPENSSL_free(d.p);
}

static void test_different_keys_stay_apart(void)
{
	struct der d1 = new_key_der(), d2 = new_key_der();

	pcdkim_keycache_clear();
	EVP_PKEY *a = decode(d1.p, d1.len, NULL);
	EVP_PKEY *b = decode(d2.p, d2.len, NULL);
	EVP_PKEY *a2 = decode(d1.p, d1.len, NULL);
	EVP_PKEY *b2 = decode(d2.p, d2.len, NULL);
	CHECK(a && b && a != b);
	CHECK(a2 == a);
	CHECK(b2 == b);
	CHECK_INT_EQ(EVP_PKEY_eq(a, b), 0);
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
	EVP_PKEY_free(a2);
	EVP_PKEY_free(b2);
	OPENSSL_free(d1.p);
	OPENSSL_free(d2.p);
}

static void test_a_key_one_byte_apart_is_decoded_afresh(void)
{
	struct der d = new_key_der();

	pcdkim_keycache_clear();
	EVP_PKEY *a = decode(d.p, d.len, NULL);
	struct pcdkim_keycache_stats before = stats();
	/* the last byte is part of the EC point: another point, or no key */
	d.p[d.len - 1] ^= 1;
	EVP_PKEY *b = decode(d.p, d.len, NULL);
	CHECK(a != b);
	CHECK_UINT_EQ(stats().hits - before.hits, 0);
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
	OPENSSL_free(d.p);
}

static void test_garbage_decodes_to_nothing_and_is_never_kept(void)
{
	static const unsigned char junk[] = "\x30\x03\x02\x01\x05 not a key";
	struct pcdkim_keycache_stats before = stats();

	pcdkim_keycache_clear();
	CHECK_NULL(decode(junk, sizeof(junk) - 1, NULL));
	CHECK_NULL(decode(junk, sizeof(junk) - 1, NULL));
	CHECK_NULL(decode("", 0, NULL));
	CHECK_UINT_EQ(stats().hits - before.hits, 0);
}

static void test_the_least_recently_used_key_goes_first(void)
{
	struct der d[PCDKIM_KEYCACHE_SIZE + 1];
	EVP_PKEY *first, *k;
	struct pcdkim_keycache_stats before;

	pcdkim_keycache_clear();
	for (int i = 0; i <= PCDKIM_KEYCACHE_SIZE; i++)
		d[i] = new_key_der();
	first = decode(d[0].p, d[0].len, NULL);
	for (int i = 1; i < PCDKIM_KEYCACHE_SIZE; i++) {
		EVP_PKEY_free(decode(d[i].p, d[i].len, NULL));
		/* key 0 stays in use; key 1 becomes the oldest */
		EVP_PKEY_free(decode(d[0].p, d[0].len, NULL));
	}
	/* one more than fits: key 1 goes */
	EVP_PKEY_free(decode(d[PCDKIM_KEYCACHE_SIZE].p, d[PCDKIM_KEYCACHE_SIZE].len, NULL));
	before = stats();
	k = decode(d[0].p, d[0].len, NULL);
	CHECK(k == first);
	CHECK_UINT_EQ(stats().hits - before.hits, 1);
	EVP_PKEY_free(k);
	before = stats();
	EVP_PKEY_free(decode(d[2].p, d[2].len, NULL));
	CHECK_UINT_EQ(stats().hits - before.hits, 1);
	/* (decoding key 1 again makes room by dropping the next oldest) */
	before = stats();
	EVP_PKEY_free(decode(d[1].p, d[1].len, NULL));
	CHECK_UINT_EQ(stats().hits - before.hits, 0);
	EVP_PKEY_free(first);
	for (int i = 0; i <= PCDKIM_KEYCACHE_SIZE; i++)
		OPENSSL_free(d[i].p);
}

static void test_other_bios_and_reuse_go_to_openssl_unchanged(void)
{
	struct der d = new_key_der();
	struct pcdkim_keycache_stats before;
	FILE *f = tmpfile();
	BIO *b;
	EVP_PKEY *k, *into = NULL;

	pcdkim_keycache_clear();
	fwrite(d.p, 1, (size_t)d.len, f);
	rewind(f);
	before = stats();
	b = BIO_new_fp(f, BIO_NOCLOSE);
	k = d2i_PUBKEY_bio(b, NULL);
	CHECK_NOT_NULL(k);
	BIO_free(b);
	EVP_PKEY_free(k);
	/* an object to fill in is OpenSSL's business too */
	b = BIO_new_mem_buf(d.p, d.len);
	k = d2i_PUBKEY_bio(b, &into);
	CHECK_NOT_NULL(k);
	CHECK(k == into);
	BIO_free(b);
	EVP_PKEY_free(k);
	CHECK_UINT_EQ(stats().calls - before.calls, 0);
	fclose(f);
	OPENSSL_free(d.p);
}

static void test_clear_forgets_every_key(void)
{
	struct der d = new_key_der();
	struct pcdkim_keycache_stats before;

	EVP_PKEY_free(decode(d.p, d.len, NULL));
	pcdkim_keycache_clear();
	before = stats();
	EVP_PKEY_free(decode(d.p, d.len, NULL));
	CHECK_UINT_EQ(stats().hits - before.hits, 0);
	pcdkim_keycache_clear();
	OPENSSL_free(d.p);
}

int main(void)
{
	RUN(test_the_second_decoding_is_the_same_key_from_the_cache);
	RUN(test_bytes_after_the_key_are_left_in_the_bio);
	RUN(test_different_keys_stay_apart);
	RUN(test_a_key_one_byte_apart_is_decoded_afresh);
	RUN(test_garbage_decodes_to_nothing_and_is_never_kept);
	RUN(test_the_least_recently_used_key_goes_first);
	RUN(test_other_bios_and_reuse_go_to_openssl_unchanged);
	RUN(test_clear_forgets_every_key);
	pcdkim_keycache_clear();
	return unit_summary();
}
