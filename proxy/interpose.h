/*
 * interpose.h - library functions a filter defines for its own libraries
 *
 * A filter may define a function of a library its own libraries call, to
 * take those calls: the dkim filter answers libopendkim's OpenSSL
 * d2i_PUBKEY_bio() from a cache of decoded keys (filters/dkim/
 * dkim_keycache.h). The dynamic linker binds such a call to the first
 * definition in the global scope, the program and the libraries it was
 * linked with, before the filter's own; and the program links OpenSSL
 * (TLS), so libcrypto's would always win. The program therefore defines
 * d2i_PUBKEY_bio() itself (interpose.c) and passes each call on to the
 * loaded filter that defines one, or else to libcrypto's.
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
