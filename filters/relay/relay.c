/*
 * relay.c - the built-in "relay" filter: the open-relay guard
 *
 * Options (section [filter NAME]):
 *	local_domains = example.org, .example.net, [192.0.2.1]
 *		the domains delivered here; ".example.net" stands for every
 *		sub-domain of example.net (not example.net itself);
 *		"[192.0.2.1]" or "[IPv6:2001:db8::1]" makes an address literal
 *		local; U-labels and A-labels are the same domain
 *	local_domains_file = /etc/portcullis/local-domains
 *		the same, one or more per line, "#" starts a comment; read
 *		at start-up and reload only
 *	trusted_networks = 127.0.0.0/8, ::1/128	(the default)
 *		clients that may relay to anywhere; an empty value trusts
 *		no one
 *	allow_percent_hack = no			(the default)
 *		yes: user%host@local is judged as user@host (the way
 *		Postfix and sendmail rewrite it) instead of refused
 *	local_addresses = 192.0.2.1, 2001:db8::1
 *		address literals that are local, bracketed or not
 * One of local_domains and local_domains_file is required.
 *
 * At each RCPT a client in trusted_networks or one that authenticated may
 * send to any recipient; anyone else only to the local domains. A
 * recipient elsewhere, or one a backend might route elsewhere (percent
 * hack, bang path, source route, quoted '@'; see relay_addr.c), is
 * refused with 554 5.7.1 "Relay access denied", an address that is no
 * address with 501 5.1.3. The decision goes into the decision record:
 * "relay" is "trusted", "authenticated", "local" or "denied", and
 * "reason" says why in the last two cases.
 *
 * The instance is built by init and only read afterwards, so the hooks of
 * concurrent sessions share it without a lock. Bad option values are
 * reported with pc_config_error() naming the key.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <portcullis/filter.h>

#include "pc_list.h"
#include "relay_addr.h"

#define RELAY_DEFAULT_TRUSTED "127.0.0.0/8, ::1/128"

/* The longest line of a local_domains_file. */
#define RELAY_FILE_LINE_MAX 4096

/* RFC 5321 and RFC 3463 X.7.1: delivery not authorized. */
#define RELAY_DENIED_CODE 554
#define RELAY_DENIED_ENH "5.7.1"
#define RELAY_DENIED_TEXT "Relay access denied"

/* RFC 3463 X.1.3: bad destination mailbox address syntax. */
#define RELAY_INVALID_CODE 501
#define RELAY_INVALID_ENH "5.1.3"
#define RELAY_INVALID_TEXT "Bad recipient address syntax"

struct relay_instance {
	struct relay_domains domains;
	struct pc_netlist trusted;
	struct relay_policy policy;
};

static const char *const relay_options[] = {
	"local_domains",
	"local_domains_file",
	"trusted_networks",
	"allow_percent_hack",
	"local_addresses",
	NULL,
};

/* relay_free - release an instance, complete or not */
static void relay_free(struct relay_instance *ri)
{
	if (ri == NULL)
		return;
	relay_domains_free(&ri->domains);
	pc_netlist_free(&ri->trusted);
	free(ri);
}

/* relay_parse_bool - "yes"/"no" and their usual spellings; -1 if neither */
static int relay_parse_bool(const char *value)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(value, yes[i]) == 0)
			return 1;
		if (strcasecmp(value, no[i]) == 0)
			return 0;
	}
	return -1;
}

/*
 * relay_read_file - add the entries of a local_domains_file; -1 after
 * pc_config_error()
 */
static int relay_read_file(pc_config *config, struct relay_domains *d,
			   const char *path)
{
	char line[RELAY_FILE_LINE_MAX + 2], err[512];
	unsigned lineno = 0;
	FILE *fp;
	char *hash;
	size_t n;
	int rc = 0;

	fp = fopen(path, "r");
	if (fp == NULL) {
		pc_config_error(config, "local_domains_file", "%s: %s", path,
				strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), fp) != NULL) {
		lineno++;
		n = strlen(line);
		/* a cut line would silently become two domains */
		if (n > 0 && line[n - 1] != '\n' && !feof(fp)) {
			pc_config_error(config, "local_domains_file",
					"%s:%u: line too long", path, lineno);
			rc = -1;
			break;
		}
		hash = strchr(line, '#');
		if (hash != NULL)
			*hash = '\0';
		if (relay_domains_add_list(d, line, err, sizeof(err)) < 0) {
			pc_config_error(config, "local_domains_file",
					"%s:%u: %s", path, lineno, err);
			rc = -1;
			break;
		}
	}
	if (rc == 0 && ferror(fp)) {
		pc_config_error(config, "local_domains_file", "%s: read error",
				path);
		rc = -1;
	}
	fclose(fp);
	return rc;
}

/*
 * relay_add_addresses - the local_addresses list; -1 after
 * pc_config_error()
 */
static int relay_add_addresses(pc_config *config, struct relay_domains *d,
			       const char *list)
{
	char tok[128], err[512];
	const char *p = list, *item;
	size_t n;

	while (pc_list_next(&p, &item, &n)) {
		if (n >= sizeof(tok)) {
			pc_config_error(config, "local_addresses",
					"bad address \"%.40s...\"", item);
			return -1;
		}
		memcpy(tok, item, n);
		tok[n] = '\0';
		if (relay_domains_add_address(d, tok, err, sizeof(err)) < 0) {
			pc_config_error(config, "local_addresses", "%s", err);
			return -1;
		}
	}
	return 0;
}

/* relay_init - read the options and build the instance */
static int relay_init(pc_config *config, void **instance)
{
	const char *domains, *file, *trusted, *percent, *addresses;
	struct relay_instance *ri;
	char err[512];
	int b;

	ri = calloc(1, sizeof(*ri));
	if (ri == NULL) {
		pc_config_error(config, "module", "out of memory");
		return -1;
	}
	relay_domains_init(&ri->domains);

	trusted = pc_config_get(config, "trusted_networks");
	if (trusted == NULL)
		trusted = RELAY_DEFAULT_TRUSTED;
	if (pc_netlist_parse(trusted, &ri->trusted, err, sizeof(err)) < 0) {
		pc_config_error(config, "trusted_networks", "%s", err);
		goto fail;
	}

	ri->policy.allow_percent_hack = false;
	percent = pc_config_get(config, "allow_percent_hack");
	if (percent != NULL) {
		b = relay_parse_bool(percent);
		if (b < 0) {
			pc_config_error(config, "allow_percent_hack",
					"expected yes or no, not \"%s\"",
					percent);
			goto fail;
		}
		ri->policy.allow_percent_hack = b == 1;
	}

	domains = pc_config_get(config, "local_domains");
	file = pc_config_get(config, "local_domains_file");
	if (domains == NULL && (file == NULL || *file == '\0')) {
		pc_config_error(config, "local_domains",
				"local_domains or local_domains_file is "
				"required");
		goto fail;
	}
	if (domains != NULL &&
	    relay_domains_add_list(&ri->domains, domains, err,
				   sizeof(err)) < 0) {
		pc_config_error(config, "local_domains", "%s", err);
		goto fail;
	}
	if (file != NULL && *file != '\0' &&
	    relay_read_file(config, &ri->domains, file) < 0)
		goto fail;
	/*
	 * An empty local_domains with no file would refuse every untrusted
	 * recipient but Postmaster: surely a mistake. An empty file is not
	 * (its domains may all have gone).
	 */
	if (relay_domains_count(&ri->domains) == 0 &&
	    (file == NULL || *file == '\0')) {
		pc_config_error(config, "local_domains", "no domain given");
		goto fail;
	}

	addresses = pc_config_get(config, "local_addresses");
	if (addresses != NULL &&
	    relay_add_addresses(config, &ri->domains, addresses) < 0)
		goto fail;

	relay_domains_finish(&ri->domains);
	ri->policy.domains = &ri->domains;
	*instance = ri;
	return 0;
fail:
	relay_free(ri);
	return -1;
}

/* relay_fini - free the instance */
static void relay_fini(void *instance)
{
	relay_free(instance);
}

/* relay_rcpt - let trusted clients relay; others reach local domains only */
static enum pc_status relay_rcpt(pc_ctx *ctx)
{
	const struct relay_instance *ri = pc_instance(ctx);
	const char *addr = pc_client_addr(ctx);
	const char *rcpt = pc_rcpt_current(ctx);
	const char *reason = NULL;
	enum relay_class cls;

	if (ri == NULL || rcpt == NULL) {
		/* a host that calls us so is broken: fail safe, not open */
		pc_log(ctx, PC_LOG_ERROR, "no instance or no recipient at rcpt");
		pc_set_reply(ctx, 451, "4.3.0", "Internal error");
		return PC_TEMPFAIL;
	}
	if (addr != NULL && pc_netlist_match(&ri->trusted, addr)) {
		pc_result(ctx, "relay", "trusted");
		return PC_CONTINUE;
	}
	if (pc_auth_user(ctx) != NULL) {
		pc_result(ctx, "relay", "authenticated");
		return PC_CONTINUE;
	}

	cls = relay_classify(&ri->policy, rcpt, &reason);
	if (cls == RELAY_LOCAL) {
		pc_result(ctx, "relay", "local");
		pc_result(ctx, "reason", reason);
		return PC_CONTINUE;
	}
	pc_result(ctx, "relay", "denied");
	pc_result(ctx, "reason", reason);
	if (cls == RELAY_INVALID) {
		pc_log(ctx, PC_LOG_INFO,
		       "relay denied: client %s, invalid recipient: %s",
		       addr ? addr : "unknown", reason);
		/* the address may be anything: do not echo it */
		if (pc_set_reply(ctx, RELAY_INVALID_CODE, RELAY_INVALID_ENH,
				 RELAY_INVALID_TEXT) < 0)
			pc_log(ctx, PC_LOG_WARNING, "reply refused by the host");
		return PC_REJECT;
	}
	pc_log(ctx, PC_LOG_INFO, "relay denied: client %s, recipient <%s>: %s",
	       addr ? addr : "unknown", rcpt, reason);
	/*
	 * The text names the recipient like Postfix does. A host that will
	 * not put UTF-8 in a reply refuses it: then say it without.
	 */
	if (pc_set_reply(ctx, RELAY_DENIED_CODE, RELAY_DENIED_ENH,
			 "<%s>: " RELAY_DENIED_TEXT, rcpt) < 0 &&
	    pc_set_reply(ctx, RELAY_DENIED_CODE, RELAY_DENIED_ENH,
			 RELAY_DENIED_TEXT) < 0)
		pc_log(ctx, PC_LOG_WARNING, "reply refused by the host");
	return PC_REJECT;
}

const struct pc_filter portcullis_filter = {
	PC_FILTER_HEADER,
	.name = "relay",
	.description = "open-relay guard: only trusted or authenticated "
		       "clients may send to non-local domains",
	.options = relay_options,
	.init = relay_init,
	.fini = relay_fini,
	.rcpt = relay_rcpt,
	/* Table lookups in memory only: no thread needed. */
	.nonblocking = PC_HOOK_RCPT,
};
