/*
 * quarantine.c - write a quarantined message to its file
 *
 * Blocking file I/O: called on a filter thread, never on the event loop
 * (see quarantine.h for the file's name and format).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quarantine.h"

#define QUARANTINE_CHUNK 65536
#define QUARANTINE_MAX_TRIES 10000

/* put_all - write(2) until done; 0 or -1 */
static int put_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* put_line - "name: <addr> params" CRLF, control bytes of the text made spaces */
static int put_line(int fd, const char *name, const char *text, bool brackets,
		    const char *params)
{
	size_t cap = strlen(name) + strlen(text) + (params ? strlen(params) : 0) + 8;
	char *line = malloc(cap);
	int rc;

	if (!line)
		return -1;
	int n = snprintf(line, cap, "%s: %s%s%s%s%s\r\n", name, brackets ? "<" : "", text,
			 brackets ? ">" : "", params && *params ? " " : "", params ? params : "");
	for (int i = 0; i < n - 2; i++)
		if ((unsigned char)line[i] < ' ' || line[i] == 127)
			line[i] = ' ';
	rc = put_all(fd, line, (size_t)n);
	free(line);
	return rc;
}

/* put_message - the envelope, the blank line and the content */
static int put_message(int fd, const struct quarantine_msg *m)
{
	char *buf;
	unsigned long long off = m->skip;
	ssize_t n;

	if (put_line(fd, "Quarantine-Reason", m->reason ? m->reason : "", false, NULL) < 0 ||
	    put_line(fd, "Envelope-From", m->sender, true, m->sender_params) < 0)
		return -1;
	for (size_t i = 0; i < m->nrcpts; i++)
		if (put_line(fd, "Envelope-To", m->rcpts[i], true,
			     m->rcpt_params ? m->rcpt_params[i] : NULL) < 0)
			return -1;
	if (put_all(fd, "\r\n", 2) < 0 ||
	    (m->prefix && put_all(fd, m->prefix, m->prefix_len) < 0))
		return -1;
	if (!(buf = malloc(QUARANTINE_CHUNK)))
		return -1;
	while ((n = spool_read(m->content, off, buf, QUARANTINE_CHUNK)) > 0) {
		if (put_all(fd, buf, (size_t)n) < 0) {
			n = -1;
			break;
		}
		off += (unsigned long long)n;
	}
	free(buf);
	return n < 0 ? -1 : 0;
}

/* quarantine_write - the message in its own file, synced */
char *quarantine_write(const char *dir, const char *session, const struct quarantine_msg *m)
{
	char tmp[4096], path[4096];
	char *name = NULL;
	int fd, e = 0;

	if (snprintf(tmp, sizeof(tmp), "%s/.tmp.%s.XXXXXX", dir, session) >= (int)sizeof(tmp)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0)
		return NULL;
	if (put_message(fd, m) < 0 || fsync(fd) < 0)
		e = errno ? errno : EIO;
	if (close(fd) < 0 && !e)
		e = errno;
	/* link() refuses a name that exists: the first free number wins. */
	for (unsigned i = 1; !e && !name && i <= QUARANTINE_MAX_TRIES; i++) {
		snprintf(path, sizeof(path), "%s/%s-%u", dir, session, i);
		if (link(tmp, path) == 0)
			name = strdup(strrchr(path, '/') + 1);
		else if (errno != EEXIST)
			e = errno;
	}
	if (!e && !name)
		e = EEXIST;
	unlink(tmp);
	if (name) {
		/* The new name must survive a crash too. */
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
		return name;
	}
	errno = e ? e : ENOMEM;
	return NULL;
}
