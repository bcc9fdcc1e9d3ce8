/*
 * interpose.c - OpenSSL functions passed on to the filter that defines them
 *
 * See interpose.h. The types are OpenSSL's BIO, EVP_PKEY and
 * pem_password_cb; only pointers to them pass through here, so this file
 * needs no OpenSSL header and no link to libcrypto (the filter host
 * links none).
 */
#include "config.h"

#include <dlfcn.h>
#include <string.h>

#include "interpose.h"
#include "log.h"

/*
 * The program's own definitions, the functions every library of the
 * process finds: each passes the call on to the filter's definition, or
 * else to libcrypto's.
 */
#define INTERPOSE_DEFAULT __attribute__((visibility("default")))
INTERPOSE_DEFAULT void *d2i_PUBKEY_bio(void *bp, void **a);
INTERPOSE_DEFAULT void *d2i_PrivateKey_bio(void *bp, void **a);
INTERPOSE_DEFAULT void *PEM_read_bio_PrivateKey(void *bp, void **x, void *cb, void *u);

typedef void *(*interpose_d2i_fn)(void *bp, void **a);
typedef void *(*interpose_pem_fn)(void *bp, void **x, void *cb, void *u);

/*
 * One row per function: its name, the version libopendkim binds it at
 * (nm -D libopendkim.so), the program's definition, and the filter's
 * and libcrypto's (each set once, read by any thread).
 */
enum { INTERPOSE_D2I_PUBKEY, INTERPOSE_D2I_PRIVATEKEY, INTERPOSE_PEM_PRIVATEKEY };

static struct interpose_fn {
	const char *name;
	const char *version;
	void *self;
	void *override, *real;
} interpose_fns[] = {
	[INTERPOSE_D2I_PUBKEY] = { "d2i_PUBKEY_bio", "OPENSSL_3.0.0",
				   (void *)d2i_PUBKEY_bio, NULL, NULL },
	[INTERPOSE_D2I_PRIVATEKEY] = { "d2i_PrivateKey_bio", "OPENSSL_3.0.0",
				       (void *)d2i_PrivateKey_bio, NULL, NULL },
	[INTERPOSE_PEM_PRIVATEKEY] = { "PEM_read_bio_PrivateKey", "OPENSSL_3.0.0",
				       (void *)PEM_read_bio_PrivateKey, NULL, NULL },
};

#define INTERPOSE_NFNS (sizeof(interpose_fns) / sizeof(interpose_fns[0]))

/*
 * interpose_target - where a call of row i goes: the filter's function,
 * or libcrypto's, or NULL when there is no libcrypto (then nobody could
 * have asked)
 */
static void *interpose_target(size_t i)
{
	struct interpose_fn *fn = &interpose_fns[i];
	void *f = __atomic_load_n(&fn->override, __ATOMIC_ACQUIRE);

	if (!f)
		f = __atomic_load_n(&fn->real, __ATOMIC_ACQUIRE);
	if (!f) {
		/* libcrypto in the global scope: the program's own (TLS). */
		f = dlvsym(RTLD_NEXT, fn->name, fn->version);
		if (!f)
			f = dlsym(RTLD_NEXT, fn->name);
		if (f)
			__atomic_store_n(&fn->real, f, __ATOMIC_RELEASE);
	}
	return f;
}

/* d2i_PUBKEY_bio - OpenSSL's function, passed on */
void *d2i_PUBKEY_bio(void *bp, void **a)
{
	interpose_d2i_fn f = (interpose_d2i_fn)interpose_target(INTERPOSE_D2I_PUBKEY);

	return f ? f(bp, a) : NULL;
}

/* d2i_PrivateKey_bio - OpenSSL's function, passed on */
void *d2i_PrivateKey_bio(void *bp, void **a)
{
	interpose_d2i_fn f = (interpose_d2i_fn)interpose_target(INTERPOSE_D2I_PRIVATEKEY);

	return f ? f(bp, a) : NULL;
}

/* PEM_read_bio_PrivateKey - OpenSSL's function, passed on */
void *PEM_read_bio_PrivateKey(void *bp, void **x, void *cb, void *u)
{
	interpose_pem_fn f = (interpose_pem_fn)interpose_target(INTERPOSE_PEM_PRIVATEKEY);

	return f ? f(bp, x, cb, u) : NULL;
}

void interpose_filter(void *dl, const char *path)
{
	for (size_t i = 0; i < INTERPOSE_NFNS; i++) {
		struct interpose_fn *fn = &interpose_fns[i];
		void *sym = dlsym(dl, fn->name);
		Dl_info di;

		if (!sym || sym == fn->self)
			continue;
		if (dladdr(sym, &di) && di.dli_fname && strcmp(di.dli_fname, path) == 0) {
			if (!fn->override) {
				__atomic_store_n(&fn->override, sym, __ATOMIC_RELEASE);
				log_debug("%s() of the filters' libraries: %s's", fn->name, path);
			}
		} else if (!fn->real) {
			/* A library of the filter's: libcrypto, loaded for it alone. */
			__atomic_store_n(&fn->real, sym, __ATOMIC_RELEASE);
		}
	}
}
