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

#include "conf.h"

/* master_run - run the service; takes conf; returns the exit status */
int master_run(struct conf *conf);

#endif
