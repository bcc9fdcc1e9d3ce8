/*
 * interpose.c - d2i_PUBKEY_bio() passed on to the filter that defines it
 *
 * See interpose.h. The types are OpenSSL's BIO and EVP_PKEY; only
 * pointers to them pass through here, so this file needs no OpenSSL
 * header and no link to libcrypto (the filter host links none).
 */
#include "config.h"

#include <dlfcn.h>
#include <string.h>

#include "interpose.h"
#include "log.h"

typedef void *(*d2i_fn)(void *bp, void **a);

/* The filter's definition, and libcrypto's (set once, read by any thread). */
static d2i_fn interpose_override, interpose_real;

/*
 * d2i_PUBKEY_bio - OpenSSL's function as every library of the process
 * finds it: the filter's, or libcrypto's
 */
__attribute__((visibility("default"))) void *d2i_PUBKEY_bio(void *bp, void **a);

void *d2i_PUBKEY_bio(void *bp, void **a)
{
	d2i_fn f = __atomic_load_n(&interpose_override, __ATOMIC_ACQUIRE);

	if (!f)
		f = __atomic_load_n(&interpose_real, __ATOMIC_ACQUIRE);
	if (!f) {
		/* libcrypto in the global scope: the program's own (TLS). */
		f = (d2i_fn)dlvsym(RTLD_NEXT, "d2i_PUBKEY_bio", "OPENSSL_3.0.0");
		if (!f)
			f = (d2i_fn)dlsym(RTLD_NEXT, "d2i_PUBKEY_bio");
		if (!f)
			return NULL; /* no libcrypto: nobody could have asked */
		__atomic_store_n(&interpose_real, f, __ATOMIC_RELEASE);
	}
	return f(bp, a);
}

void interpose_filter(void *dl, const char *path)
{
	void *sym = dlsym(dl, "d2i_PUBKEY_bio");
	Dl_info di;

	if (!sym || sym == (void *)d2i_PUBKEY_bio)
		return;
	if (dladdr(sym, &di) && di.dli_fname && strcmp(di.dli_fname, path) == 0) {
		if (!interpose_override) {
			__atomic_store_n(&interpose_override, (d2i_fn)sym, __ATOMIC_RELEASE);
			log_debug("d2i_PUBKEY_bio() of the filters' libraries: %s's", path);
		}
	} else if (!interpose_real) {
		/* A library of the filter's: libcrypto, loaded for it alone. */
		__atomic_store_n(&interpose_real, (d2i_fn)sym, __ATOMIC_RELEASE);
	}
}
