/*
 * spool.h - where one message waits while it is received and filtered
 *
 * A spool holds the message content in memory up to a limit, then in an
 * anonymous file in the private spool directory (O_TMPFILE, or a file
 * unlinked at once where O_TMPFILE is missing): it never outlives the
 * process and costs bounded memory whatever the message size. Content is
 * appended while DATA streams in and read back by offset when it goes
 * to the backend.
 *
 * Write errors (a full disk above all) are sticky: spool_write() keeps
 * returning -1 and spool_errno() tells why, so the session can answer
 * 452 4.3.1 at the end of data instead of failing half-way.
 */
#ifndef PORTCULLIS_SPOOL_H
#define PORTCULLIS_SPOOL_H

#include <stddef.h>
#include <sys/types.h>

struct spool;

/* spool_new - an empty spool; NULL when out of memory */
struct spool *spool_new(const char *dir, size_t memory_limit);

/* spool_write - append content; 0, or -1 (see spool_errno) */
int spool_write(struct spool *spool, const void *data, size_t len);

/*
 * spool_write_text - append text, each bare LF or CR (not part of a CRLF)
 * made CRLF, as the backend must get it; the pieces may split a CRLF.
 * 0, or -1 (see spool_errno)
 */
int spool_write_text(struct spool *spool, const void *data, size_t len);

/* spool_finish - write out what is buffered (and a CR that ended the text); 0, or -1 */
int spool_finish(struct spool *spool);

/* spool_size - bytes appended so far */
unsigned long long spool_size(const struct spool *spool);

/* spool_on_disk - whether the content went past memory into a file */
int spool_on_disk(const struct spool *spool);

/* spool_errno - the first write error, 0 if none */
int spool_errno(const struct spool *spool);

/*
 * spool_read - copy up to len bytes from offset into buf
 * Returns the byte count (0 at the end), or -1 with errno set.
 */
ssize_t spool_read(struct spool *spool, unsigned long long offset, void *buf,
		   size_t len);

/*
 * spool_ref - one more holder (a filter call reading the message); each
 * holder calls spool_free(). Holders are counted on one thread only.
 */
struct spool *spool_ref(struct spool *spool);

/* spool_free - drop one holder; the last drops the content (and the file) */
void spool_free(struct spool *spool);

#endif
