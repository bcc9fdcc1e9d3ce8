/*
 * worker.h - one worker process: an event loop over many sessions
 *
 * The master forks workers with the listening sockets already open. Each
 * worker accepts connections, runs the sessions on one libevent loop,
 * owns its backend pool (backend.h), and
 * drains on SIGTERM: it stops accepting, lets transactions in flight
 * finish up to drain_timeout, then exits.
 */
#ifndef PORTCULLIS_WORKER_H
#define PORTCULLIS_WORKER_H

#include <stddef.h>

#include "conf.h"

struct chain;

/*
 * worker_load_chain - configure the resolver (dns_init()), then load the
 * configuration's filter chain (or NULL when it has none); errors are
 * logged, and the result is -1
 */
int worker_load_chain(const struct conf *conf, struct chain **chain);

/* worker_run - serve the listening sockets until drained; the exit status */
int worker_run(const struct conf *conf, const int *listen_fds, size_t nfds);


#endif
