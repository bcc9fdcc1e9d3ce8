/*
 * milter_front.h - the filter chain served to an MTA as a milter
 *
 * The second front-end beside the SMTP listeners: the master forks one
 * process that serves [milter] listen with libmilter (Postfix's
 * smtpd_milters, Sendmail's INPUT_MAIL_FILTER). Each MTA connection is a
 * session of the same pipeline proxy mode uses: the same stages, filter
 * deadlines, on_error actions, thread pool, header changes and decision
 * records (with "mode": "milter" and the MTA's queue id).
 *
 * libmilter owns the process's main thread (smfi_main()) and runs one
 * thread per MTA connection that blocks in each callback. The pipeline
 * runs on a libevent loop on a thread of its own: a callback hands its
 * stage to the loop and waits for the outcome, which the pipeline
 * delivers within the filters' deadlines.
 *
 * Signals: SIGTERM (libmilter's) and SIGUSR2 (a reload: the master
 * started the next generation) stop accepting and let the MTA's
 * connections finish for up to drain_timeout; SIGUSR1 reopens the
 * decision log.
 */
#ifndef PORTCULLIS_MILTER_FRONT_H
#define PORTCULLIS_MILTER_FRONT_H

#include "conf.h"

/* milter_front_run - serve conf->milter_listen until stopped; the exit status */
int milter_front_run(const struct conf *conf);

#endif
