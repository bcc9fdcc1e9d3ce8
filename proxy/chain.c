/*
 * chain.c - load the filters of the chain
 *
 * A filter is found as filter_dir/NAME.so for "module = NAME", or at the
 * path given when the module contains a slash. Its descriptor is the
 * symbol portcullis_filter. The same module may be loaded under several
 * names with different options: each [filter NAME] section makes its own
 * instance (dlopen hands back the same object, init() runs per section).
 */
#include "config.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chain.h"
#include "interpose.h"
#include "log.h"

/* The keys every filter section has besides the filter's own. */
static const char *const chain_common_keys[] = { "module", "timeout", "on_error", NULL };

static const char *const chain_stage_names[CHAIN_STAGES] = {
	"connect", "helo", "mail", "rcpt", "data", "reset", "close",
};

/* The configuration section handed to init(). */
struct pc_config {
	const struct conf *conf;
	const struct conf_filter *section;
	FILE *errors;
	int nerrors;
};

/* chain_stage_name - the name of a stage */
const char *chain_stage_name(enum chain_stage stage)
{
	return chain_stage_names[stage];
}

/* pc_config_get - the value of key in the filter's section */
const char *pc_config_get(pc_config *config, const char *key)
{
	return conf_filter_get(config->section, key);
}

/* pc_parse_size - a size as in the configuration */
const char *pc_parse_size(const char *text, size_t len, unsigned long long *bytes)
{
	char buf[64];

	while (len > 0 && isspace((unsigned char)*text)) {
		text++;
		len--;
	}
	while (len > 0 && isspace((unsigned char)text[len - 1]))
		len--;
	if (len == 0 || len >= sizeof(buf))
		return len ? "size too large" : "expected a size such as 512k, 10m or 1g";
	memcpy(buf, text, len);
	buf[len] = 0;
	return conf_parse_number(buf, true, bytes);
}

/* pc_config_name - the instance name */
const char *pc_config_name(pc_config *config)
{
	return config->section->name;
}

/* pc_config_error - report a bad value, with file, line and key */
void pc_config_error(pc_config *config, const char *key, const char *fmt, ...)
{
	va_list ap;

	fprintf(config->errors, "%s:%d: [filter %s] %s: ", config->conf->path,
		conf_filter_line(config->section, key), config->section->name,
		key ? key : "");
	va_start(ap, fmt);
	vfprintf(config->errors, fmt, ap);
	va_end(ap);
	fputc('\n', config->errors);
	config->nerrors++;
}

/* chain_has_hook - whether filter f has a hook at stage */
bool chain_has_hook(const struct chain_filter *f, enum chain_stage stage)
{
	const struct pc_filter *d = f->desc;

	switch (stage) {
	case CHAIN_CONNECT: return d->connect != NULL;
	case CHAIN_HELO: return d->helo != NULL;
	case CHAIN_MAIL: return d->mail != NULL;
	case CHAIN_RCPT: return d->rcpt != NULL;
	case CHAIN_DATA: return d->data != NULL;
	case CHAIN_RESET: return d->reset != NULL;
	case CHAIN_CLOSE: return d->close != NULL;
	default: return false;
	}
}

/* chain_key_known - a common key or one the filter declares */
static bool chain_key_known(const struct pc_filter *d, const char *key)
{
	for (size_t i = 0; chain_common_keys[i]; i++)
		if (strcasecmp(chain_common_keys[i], key) == 0)
			return true;
	for (size_t i = 0; d->options && d->options[i]; i++)
		if (strcasecmp(d->options[i], key) == 0)
			return true;
	return false;
}

/* chain_parse_timeout - seconds, fractions allowed ("0.5"), to ms */
static int chain_parse_timeout(const char *text, unsigned *ms)
{
	char *end;
	double s;

	errno = 0;
	s = strtod(text, &end);
	if (errno || end == text || *end || s <= 0 || s > 3600)
		return -1;
	*ms = (unsigned)(s * 1000 + 0.5);
	return *ms ? 0 : -1;
}

/* chain_open - load one filter section */
static int chain_open(struct pc_config *cfg, struct chain_filter *f)
{
	const struct conf_filter *sec = cfg->section;
	const char *module = conf_filter_get(sec, "module");
	const char *value;
	char path[4096];

	f->name = strdup(sec->name);
	f->timeout_ms = 10000;
	f->on_error = PC_TEMPFAIL;
	if (!module || !*module) {
		pc_config_error(cfg, "module", "required: a built-in filter name or the path of a .so");
		return -1;
	}
	if (strchr(module, '/'))
		snprintf(path, sizeof(path), "%s", module);
	else
		snprintf(path, sizeof(path), "%s/%s.so", cfg->conf->filter_dir, module);
	f->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!f->dl) {
		pc_config_error(cfg, "module", "cannot load %s: %s", path, dlerror());
		return -1;
	}
	interpose_filter(f->dl, path);
	f->desc = dlsym(f->dl, "portcullis_filter");
	if (!f->desc) {
		pc_config_error(cfg, "module", "%s is not a Portcullis filter: no portcullis_filter symbol", path);
		return -1;
	}
	if (f->desc->abi_version != PC_FILTER_ABI_VERSION) {
		pc_config_error(cfg, "module", "%s was built for filter ABI %u, this is ABI %u",
				path, f->desc->abi_version, PC_FILTER_ABI_VERSION);
		f->desc = NULL;
		return -1;
	}
	if (f->desc->size < PC_FILTER_SIZE_1) {
		pc_config_error(cfg, "module", "%s has a descriptor of %zu bytes, expected at least %zu",
				path, f->desc->size, (size_t)PC_FILTER_SIZE_1);
		f->desc = NULL;
		return -1;
	}
	/* A plugin built before the newest fields has them as 0. */
	memcpy(&f->copy, f->desc, f->desc->size < sizeof(f->copy) ? f->desc->size
								   : sizeof(f->copy));
	f->desc = &f->copy;
	for (size_t i = 0; i < sec->nkv; i++)
		if (!chain_key_known(f->desc, sec->kv[i].key))
			pc_config_error(cfg, sec->kv[i].key, "unknown key for filter %s",
					f->desc->name ? f->desc->name : module);
	if ((value = conf_filter_get(sec, "timeout")) &&
	    chain_parse_timeout(value, &f->timeout_ms) < 0)
		pc_config_error(cfg, "timeout", "expected seconds (0.001 to 3600): \"%s\"", value);
	if ((value = conf_filter_get(sec, "on_error"))) {
		if (strcasecmp(value, "tempfail") == 0)
			f->on_error = PC_TEMPFAIL;
		else if (strcasecmp(value, "reject") == 0)
			f->on_error = PC_REJECT;
		else if (strcasecmp(value, "accept") == 0)
			f->on_error = PC_CONTINUE;
		else
			pc_config_error(cfg, "on_error", "expected tempfail, accept or reject: \"%s\"", value);
	}
	if (cfg->nerrors)
		return -1;
	if (f->desc->init && f->desc->init(cfg, &f->instance) != 0) {
		if (cfg->nerrors == 0)
			pc_config_error(cfg, "module", "%s", "the filter refused its configuration");
		f->instance = NULL;
		f->desc = NULL;
		return -1;
	}
	return 0;
}

/* chain_load - load and initialise the chain */
struct chain *chain_load(const struct conf *conf, FILE *errors)
{
	struct chain *chain = calloc(1, sizeof(*chain));
	int nerrors = 0;

	if (!chain)
		return NULL;
	for (int s = 0; s < CHAIN_STAGES; s++)
		chain->inline_ok[s] = true;
	for (size_t i = 0; i < conf->nchain; i++) {
		struct pc_config cfg = { conf, &conf->chain[i], errors, 0 };
		struct chain_filter *f = &chain->filters[chain->n++];

		if (chain_open(&cfg, f) < 0 || cfg.nerrors) {
			nerrors++;
			continue;
		}
		for (int s = 0; s < CHAIN_STAGES; s++) {
			if (!chain_has_hook(f, (enum chain_stage)s))
				continue;
			chain->any[s] = true;
			if (!(f->desc->nonblocking & (1u << s)))
				chain->inline_ok[s] = false;
		}
	}
	if (nerrors) {
		chain_free(chain);
		return NULL;
	}
	return chain;
}

/* chain_free - call every fini() and unload */
void chain_free(struct chain *chain)
{
	if (!chain)
		return;
	for (size_t i = 0; i < chain->n; i++) {
		struct chain_filter *f = &chain->filters[i];
		if (f->desc && f->desc->fini && f->instance)
			f->desc->fini(f->instance);
		if (f->dl)
			dlclose(f->dl);
		free(f->name);
	}
	free(chain);
}
