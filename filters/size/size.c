/*
 * size.c - the built-in "size" filter: a message size limit per listener
 *
 * Options:
 *	limit = 10m			 the largest message accepted (required)
 *	listener_limits = 127.0.0.1:2526=5m, [::]:587=20m
 *					 other limits on some listen
 *					 addresses, written exactly as in
 *					 the listen setting
 *
 * At connect the limit of the client's listener becomes the session's
 * size limit (pc_set_size_limit()), so EHLO advertises SIZE with the lower
 * of the backend's limit and this one, and the host stops storing a
 * message that grows past it. At MAIL a declared SIZE= (RFC 1870) over the
 * limit is refused at once with 552 5.3.4, before the client sends a byte
 * of the message. At the end of DATA a message over the limit is refused
 * the same way: a backstop for the host's own check.
 *
 * The instance is built by init and only read afterwards, so the hooks of
 * concurrent sessions share it without a lock. Bad option values are
 * reported with pc_config_error() naming the key.
 */
#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <portcullis/filter.h>

/* RFC 1870 section 6: the reply to a message over a fixed limit. */
#define SIZE_REPLY_CODE 552
#define SIZE_REPLY_ENH "5.3.4"
#define SIZE_REPLY_TEXT "Message size exceeds fixed maximum message size"

struct size_listener {
	char *listen;		  /* as written in the listen setting */
	unsigned long long limit; /* bytes */
};

struct size_instance {
	unsigned long long limit; /* for every other listener */
	struct size_listener *listeners;
	size_t nlisteners;
};

/* size_parse - a limit: a size as the host reads them, and not zero */
static const char *size_parse(const char *text, size_t len,
			      unsigned long long *out)
{
	unsigned long long n;
	const char *err = pc_parse_size(text, len, &n);

	if (err)
		return err;
	if (n == 0)
		/* A zero limit would refuse every message, even an empty one;
		 * that is a typo, not a policy. */
		return "the limit must be at least 1 byte";
	*out = n;
	return NULL;
}

/* size_trim - the bounds of text[0..len) without surrounding white space */
static void size_trim(const char **text, size_t *len)
{
	while (*len > 0 && isspace((unsigned char)**text)) {
		(*text)++;
		(*len)--;
	}
	while (*len > 0 && isspace((unsigned char)(*text)[*len - 1]))
		(*len)--;
}

/* size_free - free an instance, complete or half-built */
static void size_free(struct size_instance *inst)
{
	if (!inst)
		return;
	for (size_t i = 0; i < inst->nlisteners; i++)
		free(inst->listeners[i].listen);
	free(inst->listeners);
	free(inst);
}

/* size_parse_listener - one "LISTEN=SIZE" pair of listener_limits */
static int size_parse_listener(pc_config *config, struct size_instance *inst,
			       const char *item, size_t len)
{
	const char *eq = memchr(item, '=', len);
	const char *addr = item, *value;
	size_t alen, vlen;
	unsigned long long limit;
	const char *err;

	if (!eq) {
		pc_config_error(config, "listener_limits",
				"\"%.*s\": expected LISTEN=SIZE", (int)len, item);
		return -1;
	}
	alen = (size_t)(eq - item);
	value = eq + 1;
	vlen = len - alen - 1;
	size_trim(&addr, &alen);
	size_trim(&value, &vlen);
	if (alen == 0) {
		pc_config_error(config, "listener_limits",
				"\"%.*s\": no listen address before '='",
				(int)len, item);
		return -1;
	}
	if ((err = size_parse(value, vlen, &limit))) {
		pc_config_error(config, "listener_limits", "%.*s: %s",
				(int)alen, addr, err);
		return -1;
	}
	for (size_t i = 0; i < inst->nlisteners; i++) {
		if (strlen(inst->listeners[i].listen) == alen &&
		    memcmp(inst->listeners[i].listen, addr, alen) == 0) {
			pc_config_error(config, "listener_limits",
					"%.*s is given twice", (int)alen, addr);
			return -1;
		}
	}
	inst->listeners[inst->nlisteners].listen = strndup(addr, alen);
	if (!inst->listeners[inst->nlisteners].listen) {
		pc_config_error(config, "listener_limits", "out of memory");
		return -1;
	}
	inst->listeners[inst->nlisteners].limit = limit;
	inst->nlisteners++;
	return 0;
}

/* size_parse_listeners - the comma-separated listener_limits value */
static int size_parse_listeners(pc_config *config, struct size_instance *inst,
				const char *text)
{
	size_t n = 1;
	const char *p, *end;

	for (p = text; *p; p++)
		if (*p == ',')
			n++;
	inst->listeners = calloc(n, sizeof(*inst->listeners));
	if (!inst->listeners) {
		pc_config_error(config, "listener_limits", "out of memory");
		return -1;
	}
	for (p = text;; p = end + 1) {
		const char *item = p;
		size_t len;

		end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		len = (size_t)(end - p);
		size_trim(&item, &len);
		if (len == 0) {
			pc_config_error(config, "listener_limits",
					"empty item in the list");
			return -1;
		}
		if (size_parse_listener(config, inst, item, len) < 0)
			return -1;
		if (!*end)
			break;
	}
	return 0;
}

/* size_init - read limit and listener_limits */
static int size_init(pc_config *config, void **instance)
{
	struct size_instance *inst;
	const char *limit = pc_config_get(config, "limit");
	const char *listeners = pc_config_get(config, "listener_limits");
	const char *err;

	if (!limit) {
		pc_config_error(config, "limit",
				"missing: the size filter needs a limit");
		return -1;
	}
	inst = calloc(1, sizeof(*inst));
	if (!inst) {
		pc_config_error(config, "limit", "out of memory");
		return -1;
	}
	{
		const char *v = limit;
		size_t len = strlen(limit);

		size_trim(&v, &len);
		if ((err = size_parse(v, len, &inst->limit))) {
			pc_config_error(config, "limit", "\"%s\": %s", limit,
					err);
			size_free(inst);
			return -1;
		}
	}
	if (listeners && *listeners &&
	    size_parse_listeners(config, inst, listeners) < 0) {
		size_free(inst);
		return -1;
	}
	*instance = inst;
	return 0;
}

/* size_fini - free the instance */
static void size_fini(void *instance)
{
	size_free(instance);
}

/* size_limit - the limit for the listener the client connected to */
static unsigned long long size_limit(pc_ctx *ctx)
{
	const struct size_instance *inst = pc_instance(ctx);
	const char *listen = pc_listener(ctx);

	if (listen)
		for (size_t i = 0; i < inst->nlisteners; i++)
			if (strcmp(inst->listeners[i].listen, listen) == 0)
				return inst->listeners[i].limit;
	return inst->limit;
}

/* size_refuse - the RFC 1870 refusal of a message over the limit */
static enum pc_status size_refuse(pc_ctx *ctx)
{
	pc_set_reply(ctx, SIZE_REPLY_CODE, SIZE_REPLY_ENH, "%s",
		     SIZE_REPLY_TEXT);
	return PC_REJECT;
}

/* size_connect - make this listener's limit the session's */
static enum pc_status size_connect(pc_ctx *ctx)
{
	/* Set at connect, so EHLO already advertises it and the host stops
	 * storing a message past it without a filter call per block. */
	pc_set_size_limit(ctx, size_limit(ctx));
	return PC_CONTINUE;
}

/* size_mail - refuse a declared SIZE= over the limit before any data */
static enum pc_status size_mail(pc_ctx *ctx)
{
	unsigned long long limit = size_limit(ctx), declared = 0;
	const char *param = pc_mail_param(ctx, "SIZE");
	const char *p;
	bool huge = false;

	pc_result_int(ctx, "limit", (long long)limit);
	if (!param || !*param)
		return PC_CONTINUE;
	/* RFC 1870: size-value ::= 1*20DIGIT. Anything else is a syntax
	 * question for the host and the backend, not a size verdict. */
	for (p = param; isdigit((unsigned char)*p); p++) {
		if (declared > (ULLONG_MAX - 9) / 10)
			huge = true; /* 20 digits can pass 2^64: surely too big */
		else
			declared = declared * 10 + (unsigned)(*p - '0');
	}
	if (*p || p == param) {
		pc_log(ctx, PC_LOG_DEBUG, "SIZE=%s is not a number; ignored",
		       param);
		return PC_CONTINUE;
	}
	pc_result(ctx, "declared_size", param);
	if (huge || declared > limit) {
		pc_log(ctx, PC_LOG_INFO, "declared SIZE=%s over the limit %llu",
		       param, limit);
		return size_refuse(ctx);
	}
	return PC_CONTINUE;
}

/* size_data - refuse a message that arrived over the limit anyway */
static enum pc_status size_data(pc_ctx *ctx)
{
	unsigned long long limit = size_limit(ctx);
	unsigned long long size = pc_message_size(ctx);

	/* The host already refuses a message that grows past the limit set
	 * at connect; this catches a client that declared no SIZE= and a
	 * host that let a message through, whatever the reason. */
	if (size > limit) {
		pc_result_int(ctx, "size", (long long)size);
		pc_log(ctx, PC_LOG_INFO, "message of %llu bytes over the limit %llu",
		       size, limit);
		return size_refuse(ctx);
	}
	return PC_CONTINUE;
}

static const char *const size_options[] = {
	"limit",
	"listener_limits",
	NULL,
};

const struct pc_filter portcullis_filter = {
	PC_FILTER_HEADER,
	.name = "size",
	.description = "message size limit, per listener (RFC 1870)",
	.options = size_options,
	.init = size_init,
	.fini = size_fini,
	.connect = size_connect,
	.mail = size_mail,
	.data = size_data,
	/* Arithmetic on sizes only: no thread needed. */
	.nonblocking = PC_HOOK_CONNECT | PC_HOOK_MAIL | PC_HOOK_DATA,
};
