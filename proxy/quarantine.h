/*
 * quarantine.h - keep a message aside, in a file, instead of delivering it
 *
 * A filter may quarantine a message (pc_quarantine()). When the chain
 * accepts it, the pipeline writes it here, on a filter thread, before the
 * client hears 250: one file per message in [portcullis] quarantine_dir,
 * named SESSION-N (the session id and the first free number from 1), mode
 * 0600. The file is written under a temporary name, synced, and then
 * linked to its name, so a file that has its name is whole.
 *
 * The file holds the envelope, a blank line, then the message as it would
 * have gone to the backend (the filters' header and body changes made),
 * CRLF line ends throughout:
 *
 *	Quarantine-Reason: the reason
 *	Envelope-From: <sender> PARAMS
 *	Envelope-To: <recipient> PARAMS		one per recipient
 *
 *	Subject: ...
 *
 * so `sed '1,/^\r$/d'` gives the message back for reinjection.
 */
#ifndef PORTCULLIS_QUARANTINE_H
#define PORTCULLIS_QUARANTINE_H

#include <stddef.h>

#include "spool.h"

/* One message to keep. */
struct quarantine_msg {
	const char *reason;
	const char *sender;	   /* "" for <> */
	const char *sender_params; /* or NULL */
	const char *const *rcpts;
	const char *const *rcpt_params; /* each may be NULL; the array too */
	size_t nrcpts;
	const char *prefix; /* header bytes sent before the content, or NULL */
	size_t prefix_len;
	struct spool *content;	 /* the rest, from skip on */
	unsigned long long skip;
};

/*
 * quarantine_write - write m into dir as SESSION-N; returns the file's
 * name (malloc'd, without the directory), or NULL with errno set
 */
char *quarantine_write(const char *dir, const char *session, const struct quarantine_msg *m);

#endif
