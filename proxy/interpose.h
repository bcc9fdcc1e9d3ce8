/*
 * interpose.h - library functions a filter defines for its own libraries
 *
 * A filter may define a function of a library its own libraries call, to
 * take those calls: the dkim filter answers libopendkim's OpenSSL
 * d2i_PUBKEY_bio() from a cache of decoded public keys (filters/dkim/
 * dkim_keycache.h), and its PEM_read_bio_PrivateKey() and
 * d2i_PrivateKey_bio() from the signing keys it decoded at init
 * (filters/dkim/dkim_signkey.h). The dynamic linker binds such a call to
 * the first definition in the global scope, the program and the libraries
 * it was linked with, before the filter's own; and the program links
 * OpenSSL (TLS), so libcrypto's would always win. The program therefore
 * defines these functions itself (interpose.c, one row of a table each)
 * and passes each call on to the loaded filter that defines the function,
 * or else to libcrypto's, at the symbol version libopendkim binds.
 */
#ifndef PORTCULLIS_INTERPOSE_H
#define PORTCULLIS_INTERPOSE_H

/*
 * interpose_filter - the filter loaded from path as dl was just opened:
 * take its own definition, if it has one (the first filter that has one
 * keeps it)
 */
void interpose_filter(void *dl, const char *path);

#endif
