/*
 * spool.c - message content in memory, then in a private file
 *
 * The memory part grows by doubling up to the limit; the first write
 * that would pass it moves everything to a file and frees the memory,
 * so a spool costs at most memory_limit bytes (plus a small write
 * buffer) however large the message.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spool.h"

#define SPOOL_WBUF 65536

struct spool {
	unsigned refs;	/* the transaction, and filter calls reading it */
	char *dir;
	size_t memory_limit;
	char *mem;	/* content while in memory */
	size_t mem_len;
	size_t mem_cap;
	int fd;		/* -1 while in memory */
	char *wbuf;	/* pending file writes */
	size_t wbuf_len;
	unsigned long long size;
	int error;
	bool text_cr; /* spool_write_text(): the last byte was a CR */
};

/* spool_new - an empty spool */
struct spool *spool_new(const char *dir, size_t memory_limit)
{
	struct spool *spool = calloc(1, sizeof(*spool));

	if (!spool)
		return NULL;
	spool->dir = strdup(dir);
	if (!spool->dir) {
		free(spool);
		return NULL;
	}
	spool->memory_limit = memory_limit;
	spool->fd = -1;
	spool->refs = 1;
	return spool;
}

/* spool_file_open - an anonymous file in the spool directory */
static int spool_file_open(const char *dir)
{
	int fd;

#ifdef O_TMPFILE
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
		return fd;
#endif
	/* Older kernels and some file systems: create, then unlink at once. */
	char path[4096];
	if (snprintf(path, sizeof(path), "%s/msg.XXXXXX", dir) >= (int)sizeof(path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = mkostemp(path, O_CLOEXEC);
	if (fd >= 0)
		unlink(path);
	return fd;
}

/* spool_write_all - write(2) until done or error */
static int spool_write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* spool_flush - write the pending buffer to the file */
static int spool_flush(struct spool *spool)
{
	if (spool->wbuf_len == 0)
		return 0;
	if (spool_write_all(spool->fd, spool->wbuf, spool->wbuf_len) < 0) {
		spool->error = errno ? errno : EIO;
		return -1;
	}
	spool->wbuf_len = 0;
	return 0;
}

/* spool_to_disk - move the memory content into a new file */
static int spool_to_disk(struct spool *spool)
{
	spool->fd = spool_file_open(spool->dir);
	if (spool->fd < 0) {
		spool->error = errno;
		return -1;
	}
	spool->wbuf = malloc(SPOOL_WBUF);
	if (!spool->wbuf) {
		spool->error = ENOMEM;
		return -1;
	}
	if (spool_write_all(spool->fd, spool->mem, spool->mem_len) < 0) {
		spool->error = errno;
		return -1;
	}
	free(spool->mem);
	spool->mem = NULL;
	spool->mem_len = spool->mem_cap = 0;
	return 0;
}

/* spool_write - append content */
int spool_write(struct spool *spool, const void *data, size_t len)
{
	if (spool->error)
		return -1;
	if (len == 0)
		return 0;
	if (spool->fd < 0 && spool->mem_len + len > spool->memory_limit &&
	    spool_to_disk(spool) < 0)
		return -1;
	if (spool->fd < 0) {
		if (spool->mem_len + len > spool->mem_cap) {
			size_t cap = spool->mem_cap ? spool->mem_cap : 4096;
			while (cap < spool->mem_len + len)
				cap *= 2;
			if (cap > spool->memory_limit)
				cap = spool->memory_limit;
			char *mem = realloc(spool->mem, cap);
			if (!mem) {
				spool->error = ENOMEM;
				return -1;
			}
			spool->mem = mem;
			spool->mem_cap = cap;
		}
		memcpy(spool->mem + spool->mem_len, data, len);
		spool->mem_len += len;
	} else {
		if (spool->wbuf_len + len > SPOOL_WBUF && spool_flush(spool) < 0)
			return -1;
		if (len >= SPOOL_WBUF) {
			if (spool_write_all(spool->fd, data, len) < 0) {
				spool->error = errno;
				return -1;
			}
		} else {
			memcpy(spool->wbuf + spool->wbuf_len, data, len);
			spool->wbuf_len += len;
		}
	}
	spool->size += len;
	return 0;
}

/*
 * spool_write_text - append text whose line ends may be bare: each LF or
 * CR that is not part of a CRLF becomes CRLF. The pieces may split a
 * CRLF anywhere; a CR at the end of one waits for the next.
 */
int spool_write_text(struct spool *spool, const void *data, size_t len)
{
	const unsigned char *in = data;
	char out[8192];
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		/* Room for a CRLF of a bare end plus one byte or another CRLF. */
		if (o + 4 > sizeof(out)) {
			if (spool_write(spool, out, o) < 0)
				return -1;
			o = 0;
		}
		if (in[i] == '\n') {
			spool->text_cr = false;
			out[o++] = '\r';
			out[o++] = '\n';
			continue;
		}
		if (spool->text_cr) {
			out[o++] = '\r';
			out[o++] = '\n';
		}
		spool->text_cr = in[i] == '\r';
		if (!spool->text_cr)
			out[o++] = (char)in[i];
	}
	return spool_write(spool, out, o);
}

/* spool_finish - write out what is buffered */
int spool_finish(struct spool *spool)
{
	if (spool->error)
		return -1;
	if (spool->text_cr) {
		spool->text_cr = false;
		if (spool_write(spool, "\r\n", 2) < 0)
			return -1;
	}
	return spool->fd >= 0 ? spool_flush(spool) : 0;
}

/* spool_size - bytes appended so far */
unsigned long long spool_size(const struct spool *spool)
{
	return spool->size;
}

/* spool_on_disk - whether the content is in a file */
int spool_on_disk(const struct spool *spool)
{
	return spool->fd >= 0;
}

/* spool_errno - the first write error */
int spool_errno(const struct spool *spool)
{
	return spool->error;
}

/* spool_read - copy content from offset */
ssize_t spool_read(struct spool *spool, unsigned long long offset, void *buf,
		   size_t len)
{
	if (spool->error) {
		errno = spool->error;
		return -1;
	}
	if (offset >= spool->size)
		return 0;
	if (len > spool->size - offset)
		len = (size_t)(spool->size - offset);
	if (spool->fd < 0) {
		memcpy(buf, spool->mem + offset, len);
		return (ssize_t)len;
	}
	if (spool_flush(spool) < 0) {
		errno = spool->error;
		return -1;
	}
	for (;;) {
		ssize_t n = pread(spool->fd, buf, len, (off_t)offset);
		if (n < 0 && errno == EINTR)
			continue;
		return n;
	}
}

/* spool_ref - one more holder of the spool */
struct spool *spool_ref(struct spool *spool)
{
	spool->refs++;
	return spool;
}

/* spool_free - drop one holder; the last one drops the content and file */
void spool_free(struct spool *spool)
{
	if (!spool || --spool->refs > 0)
		return;
	if (spool->fd >= 0)
		close(spool->fd);
	free(spool->mem);
	free(spool->wbuf);
	free(spool->dir);
	free(spool);
}
