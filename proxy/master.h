/*
 * master.h - the master process: sockets, privileges, workers
 *
 * master_run() opens the listening sockets, prepares the spool directory
 * and the decision log, drops root privileges, forks the workers and
 * supervises them: a worker that dies is replaced, SIGHUP loads the
 * configuration again and replaces the workers gracefully (the old ones
 * finish their sessions), SIGTERM drains every worker and exits.
 */
#ifndef PORTCULLIS_MASTER_H
#define PORTCULLIS_MASTER_H

#include <stdbool.h>
#include <stdio.h>

#include "conf.h"

/*
 * master_fd_limit - make sure a worker may open the descriptors that
 * max_sessions needs: raise the soft RLIMIT_NOFILE (up to the hard one)
 * when raise is true, and write "FILE:LINE: [portcullis] max_sessions:
 * ..." to errors and return -1 when the hard limit cannot serve it. A
 * max_sessions left at its default is lowered to what the limit serves.
 */
int master_fd_limit(struct conf *conf, bool raise, FILE *errors);

/* master_run - run the service; takes conf; returns the exit status */
int master_run(struct conf *conf);

#endif
