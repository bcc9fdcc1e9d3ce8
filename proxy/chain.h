/*
 * chain.h - the filter chain: loading filters and their instances
 *
 * chain_load() opens every filter of the configuration's chain with
 * dlopen(), checks its descriptor (ABI version, size, options) and calls
 * its init() with its configuration section. Any error is reported as
 * "FILE:LINE: [filter NAME] key: message" and the whole load fails, so a
 * bad chain stops start-up (and `portcullis -t` reports it) rather than
 * run with a filter missing.
 */
#ifndef PORTCULLIS_CHAIN_H
#define PORTCULLIS_CHAIN_H

#include <stdbool.h>
#include <stdio.h>

#include <portcullis/filter.h>

#include "conf.h"

enum chain_stage {
	CHAIN_CONNECT,
	CHAIN_HELO,
	CHAIN_MAIL,
	CHAIN_RCPT,
	CHAIN_DATA,
	CHAIN_RESET,
	CHAIN_CLOSE,
	CHAIN_STAGES
};

struct chain_filter {
	char *name;
	const struct pc_filter *desc; /* &copy once checked */
	struct pc_filter copy;	      /* the plugin's descriptor, newer fields 0 */
	void *dl;
	void *instance;
	unsigned timeout_ms;
	enum pc_status on_error; /* PC_TEMPFAIL, PC_REJECT, or PC_CONTINUE (accept) */
};

struct chain {
	struct chain_filter filters[CONF_MAX_FILTERS];
	size_t n;
	bool any[CHAIN_STAGES]; /* whether some filter has a hook at the stage */
	bool inline_ok[CHAIN_STAGES]; /* every hook at the stage is nonblocking */
};

/* chain_load - load and initialise the chain; NULL after reporting errors */
struct chain *chain_load(const struct conf *conf, FILE *errors);

/* chain_free - call every fini() and unload */
void chain_free(struct chain *chain);

/* chain_has_hook - whether filter f has a hook at stage */
bool chain_has_hook(const struct chain_filter *f, enum chain_stage stage);

/* chain_stage_name - "connect", "helo", ... */
const char *chain_stage_name(enum chain_stage stage);

#endif
