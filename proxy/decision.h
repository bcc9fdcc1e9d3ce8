/*
 * decision.h - the decision log: one JSON object per line
 *
 * Every transaction and every refused or dropped connection ends in one
 * record (built by the session with jansson) written as one line to a
 * file, to stdout or to syslog. The file is opened in append mode and
 * each record is one write(2), so the workers of one daemon can share
 * it; decision_reopen() (on SIGUSR1) lets logrotate move it away.
 */
#ifndef PORTCULLIS_DECISION_H
#define PORTCULLIS_DECISION_H

#include <jansson.h>

/*
 * decision_open - choose the destination: a path, "stdout" or "syslog"
 * Returns 0, or -1 with errno set (the file could not be opened).
 */
int decision_open(const char *target);

/* decision_reopen - open the file again by its name (log rotation) */
void decision_reopen(void);

/* decision_close - close the destination */
void decision_close(void);

/* decision_write - add the RFC 3339 time to record and write it; steals record */
void decision_write(json_t *record);

#endif
