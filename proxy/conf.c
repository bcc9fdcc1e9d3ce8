/*
 * conf.c - load and check the configuration file
 *
 * The file is INI (parsed by libinih). Every parameter lives in one
 * table below with its section, type, bounds and default; defaults are
 * parsed by the same code as the file's values, so a default can never
 * be of a form the file could not hold. Unknown sections and keys are
 * errors (a typo must not silently leave a default in force).
 *
 * Errors are written as "FILE:LINE: [section] key: message"; errors that
 * belong to no line (a missing required key) use the line 0.
 *
 * Listening addresses: [portcullis] listen keeps the simple case (plain
 * SMTP, the defaults of every listener setting); a [listener NAME]
 * section gives its addresses (address = ...) settings of their own,
 * such as the PROXY protocol, from its own table (conf_listener_params).
 * conf_listeners() then puts every address in conf->listen, in file
 * order, with a pointer to its settings, so the master opens them all
 * alike and each worker's listener finds its settings by index.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <ini.h>

#include "conf.h"
#include "log.h"
#include "smtp.h"

enum conf_type {
	CONF_STRING,
	CONF_UINT,	/* plain count */
	CONF_SECONDS,	/* duration in seconds */
	CONF_SIZE,	/* bytes with optional k/m/g suffix */
	CONF_ENUM,	/* one of names[] */
	CONF_ADDRS,	/* comma-separated host:port list */
	CONF_MILLIS,	/* seconds with up to three decimals, kept in ms */
	CONF_IPADDRS,	/* comma-separated IP:port list, may be empty */
	CONF_NETWORKS,	/* comma or space separated CIDR list, may be empty */
	CONF_BOOL,	/* yes or no, kept in a bool */
};

struct conf_param {
	const char *section;
	const char *key;
	enum conf_type type;
	size_t offset;	     /* of the field in struct conf */
	size_t count_offset; /* CONF_ADDRS: of the size_t count */
	const char *def;     /* NULL: no default (required or optional) */
	bool required;
	unsigned long long min, max; /* CONF_STRING: min 1 is an absolute path, or "" */
	const char *const *names; /* CONF_ENUM, NULL-terminated */
};

static const char *const bare_names[] = { "reject", "normalize", NULL };
static const char *const yesno_names[] = { "no", "yes", NULL };
static const char *const identity_names[] = { "auto", "xclient", "xforward",
					       "header", NULL };
/* Index 1 is syslog: the field reads as "use syslog". */
static const char *const diag_names[] = { "stderr", "syslog", NULL };
static const char *const level_names[] = { "debug", "info", "warning",
					    "error", NULL };
/* In the order of enum conf_proxy_protocol (the proxyproto.h masks). */
static const char *const proxy_names[] = { "off", "v1", "v2", "any", NULL };
/* In the order of enum conf_auth. */
static const char *const auth_names[] = { "off", "dovecot", "relay", NULL };
static const char *const no_yes_names[] = { "no", "yes", NULL };
/* In the order of enum conf_backend_tls. */
static const char *const backend_tls_names[] = { "none", "may", "encrypt", NULL };
/* In the order of enum conf_received. */
static const char *const received_names[] = { "auto", "always", NULL };
/* In the order of enum conf_tls. */
static const char *const tls_names[] = { "none", "starttls", "implicit", NULL };

#define F(field) offsetof(struct conf, field)
#define BIG 0xffffffffULL

/* Every parameter of the daemon, with its default. */
static const struct conf_param conf_params[] = {
	/* Required unless a [listener NAME] section gives addresses (conf_listeners). */
	{ "portcullis", "listen", CONF_ADDRS, F(listen), F(nlisten), NULL, false, 0, 0, NULL },
	{ "portcullis", "hostname", CONF_STRING, F(hostname), 0, NULL, false, 0, 0, NULL },
	{ "portcullis", "authserv_id", CONF_STRING, F(authserv_id), 0, "", false, 0, 0, NULL },
	{ "portcullis", "workers", CONF_UINT, F(workers), 0, "0", false, 0, 256, NULL },
	{ "portcullis", "user", CONF_STRING, F(user), 0, "", false, 0, 0, NULL },
	{ "portcullis", "spool_dir", CONF_STRING, F(spool_dir), 0, LOCALSTATEDIR "/spool/portcullis", false, 0, 0, NULL },
	{ "portcullis", "quarantine_dir", CONF_STRING, F(quarantine_dir), 0, "", false, 1, 0, NULL },
	{ "portcullis", "spool_memory_limit", CONF_SIZE, F(spool_memory_limit), 0, "256k", false, 0, 1ULL << 30, NULL },
	{ "portcullis", "message_size_limit", CONF_SIZE, F(message_size_limit), 0, "50m", false, 1024, 1ULL << 40, NULL },
	{ "portcullis", "header_size_limit", CONF_SIZE, F(header_size_limit), 0, "102400", false, 1024, 1ULL << 20, NULL },
	{ "portcullis", "hopcount_limit", CONF_UINT, F(hopcount_limit), 0, "50", false, 1, 1000, NULL },
	{ "portcullis", "max_recipients", CONF_UINT, F(max_recipients), 0, "1000", false, 1, 100000, NULL },
	{ "portcullis", "recipient_overshoot_limit", CONF_UINT, F(recipient_overshoot_limit), 0, "1000", false, 0, 1000000, NULL },
	{ "portcullis", "max_errors", CONF_UINT, F(max_errors), 0, "20", false, 1, 10000, NULL },
	{ "portcullis", "max_line_length", CONF_UINT, F(max_line_length), 0, "2048", false, 512, 65536, NULL },
	{ "portcullis", "client_name_lookup", CONF_ENUM, F(client_name_lookup), 0, "yes", false, 0, 0, yesno_names },
	{ "portcullis", "bare_newline", CONF_ENUM, F(bare_newline), 0, "reject", false, 0, 0, bare_names },
	{ "portcullis", "timeout_command", CONF_SECONDS, F(timeout_command), 0, "300", false, 1, 86400, NULL },
	{ "portcullis", "timeout_data", CONF_SECONDS, F(timeout_data), 0, "180", false, 1, 86400, NULL },
	{ "portcullis", "command_deadline", CONF_SECONDS, F(command_deadline), 0, "300", false, 0, 86400, NULL },
	{ "portcullis", "min_data_rate", CONF_UINT, F(min_data_rate), 0, "500", false, 0, 1U << 30, NULL },
	{ "portcullis", "max_commands", CONF_UINT, F(max_commands), 0, "10000", false, 1, 100000000, NULL },
	{ "portcullis", "junk_command_limit", CONF_UINT, F(junk_command_limit), 0, "100", false, 1, 100000000, NULL },
	{ "portcullis", "drain_timeout", CONF_SECONDS, F(drain_timeout), 0, "60", false, 0, 86400, NULL },
	{ "portcullis", "max_sessions", CONF_UINT, F(max_sessions), 0, "10000", false, 1, 1000000, NULL },
	{ "portcullis", "pid_file", CONF_STRING, F(pid_file), 0, "", false, 0, 0, NULL },
	{ "portcullis", "filters", CONF_STRING, F(filters), 0, "", false, 0, 0, NULL },
	{ "portcullis", "filter_dir", CONF_STRING, F(filter_dir), 0, PKGLIBDIR, false, 0, 0, NULL },
	{ "portcullis", "filter_threads", CONF_UINT, F(filter_threads), 0, "16", false, 1, 1024, NULL },
	{ "portcullis", "filter_queue", CONF_UINT, F(filter_queue), 0, "1024", false, 1, 1000000, NULL },
	{ "portcullis", "client_connection_limit", CONF_UINT, F(client_connection_limit), 0, "50", false, 0, 1000000, NULL },
	{ "portcullis", "client_network_connection_limit", CONF_UINT, F(client_network_connection_limit), 0, "100", false, 0, 1000000, NULL },
	{ "portcullis", "client_connection_rate_limit", CONF_UINT, F(client_connection_rate_limit), 0, "120", false, 0, 1000000, NULL },
	{ "portcullis", "client_limit_exceptions", CONF_NETWORKS, F(client_limit_exceptions), F(nclient_limit_exceptions), "", false, 0, 0, NULL },
	/* Required with SMTP listeners (conf_load): a milter-only file has none. */
	{ "backend", "servers", CONF_ADDRS, F(backends), F(nbackends), NULL, false, 0, 0, NULL },
	{ "backend", "helo_name", CONF_STRING, F(helo_name), 0, NULL, false, 0, 0, NULL },
	{ "backend", "client_identity", CONF_ENUM, F(client_identity), 0, "auto", false, 0, 0, identity_names },
	{ "backend", "received_header", CONF_ENUM, F(received_header), 0, "auto", false, 0, 0, received_names },
	{ "backend", "tls", CONF_ENUM, F(backend_tls), 0, "none", false, 0, 0, backend_tls_names },
	{ "backend", "tls_ca_file", CONF_STRING, F(backend_tls_ca_file), 0, NULL, false, 0, 0, NULL },
	{ "backend", "tls_verify_name", CONF_STRING, F(backend_tls_verify_name), 0, NULL, false, 0, 0, NULL },
	{ "backend", "tls_fingerprint", CONF_STRING, F(backend_tls_fingerprint), 0, NULL, false, 0, 0, NULL },
	{ "backend", "timeout_connect", CONF_SECONDS, F(backend_timeout_connect), 0, "30", false, 1, 3600, NULL },
	{ "backend", "timeout_greeting", CONF_SECONDS, F(backend_timeout_greeting), 0, "300", false, 1, 3600, NULL },
	{ "backend", "timeout_command", CONF_SECONDS, F(backend_timeout_command), 0, "300", false, 1, 3600, NULL },
	{ "backend", "timeout_data_init", CONF_SECONDS, F(backend_timeout_data_init), 0, "120", false, 1, 3600, NULL },
	{ "backend", "timeout_data_block", CONF_SECONDS, F(backend_timeout_data_block), 0, "180", false, 1, 3600, NULL },
	{ "backend", "timeout_data_end", CONF_SECONDS, F(backend_timeout_data_end), 0, "600", false, 1, 3600, NULL },
	{ "backend", "keepalive", CONF_SECONDS, F(backend_keepalive), 0, "60", false, 1, 3600, NULL },
	{ "backend", "reuse", CONF_UINT, F(backend_reuse), 0, "32", false, 0, 100000, NULL },
	{ "backend", "reuse_idle_time", CONF_SECONDS, F(backend_reuse_idle), 0, "5", false, 1, 3600, NULL },
	{ "backend", "reuse_time_limit", CONF_SECONDS, F(backend_reuse_time_limit), 0, "300", false, 1, 86400, NULL },
	{ "dns", "servers", CONF_IPADDRS, F(dns_servers), F(ndns_servers), "", false, 0, 0, NULL },
	{ "dns", "timeout", CONF_MILLIS, F(dns_timeout_ms), 0, "5", false, 1, 300000, NULL },
	{ "dns", "retries", CONF_UINT, F(dns_retries), 0, "2", false, 0, 10, NULL },
	{ "dns", "cache_size", CONF_UINT, F(dns_cache_size), 0, "10000", false, 0, 10000000, NULL },
	{ "dns", "max_ttl", CONF_SECONDS, F(dns_max_ttl), 0, "86400", false, 0, 2147483647, NULL },
	{ "dns", "negative_ttl", CONF_SECONDS, F(dns_negative_ttl), 0, "3600", false, 0, 2147483647, NULL },
	{ "milter", "listen", CONF_STRING, F(milter_listen), 0, "", false, 0, 0, NULL },
	{ "log", "decisions", CONF_STRING, F(decisions), 0, "syslog", false, 0, 0, NULL },
	{ "log", "diagnostics", CONF_ENUM, F(diagnostics_syslog), 0, "syslog", false, 0, 0, diag_names },
	{ "log", "level", CONF_ENUM, F(log_level), 0, "info", false, 0, 0, level_names },
};

#define NPARAMS (sizeof(conf_params) / sizeof(conf_params[0]))

#define L(field) offsetof(struct conf_listener, field)

/* The keys of a [listener NAME] section (offsets in struct conf_listener). */
static const struct conf_param conf_listener_params[] = {
	{ "listener", "address", CONF_ADDRS, L(addrs), L(naddrs), NULL, true, 0, 0, NULL },
	{ "listener", "proxy_protocol", CONF_ENUM, L(proxy_protocol), 0, "off", false, 0, 0, proxy_names },
	{ "listener", "proxy_from", CONF_NETWORKS, L(proxy_from), L(nproxy_from), "", false, 0, 0, NULL },
	{ "listener", "proxy_timeout", CONF_MILLIS, L(proxy_timeout_ms), 0, "3", false, 1, 300000, NULL },
	{ "listener", "message_size_limit", CONF_SIZE, L(message_size_limit), 0, NULL, false, 1024, 1ULL << 40, NULL },
	{ "listener", "trusted_xclient", CONF_NETWORKS, L(trusted_xclient), L(ntrusted_xclient), "", false, 0, 0, NULL },
	{ "listener", "auth", CONF_ENUM, L(auth), 0, "off", false, 0, 0, auth_names },
	{ "listener", "auth_socket", CONF_STRING, L(auth_socket), 0, NULL, false, 0, 0, NULL },
	{ "listener", "auth_require_tls", CONF_ENUM, L(auth_require_tls), 0, "yes", false, 0, 0, no_yes_names },
	{ "listener", "auth_timeout", CONF_MILLIS, L(auth_timeout_ms), 0, "10", false, 1, 300000, NULL },
	{ "listener", "auth_failure_limit", CONF_UINT, L(auth_failure_limit), 0, "5", false, 0, 1000, NULL },
	{ "listener", "auth_failure_delay", CONF_MILLIS, L(auth_failure_delay_ms), 0, "1", false, 0, 60000, NULL },
	{ "listener", "auth_failure_window", CONF_SECONDS, L(auth_failure_window), 0, "600", false, 1, 86400, NULL },
	{ "listener", "tls", CONF_ENUM, L(tls), 0, "none", false, 0, 0, tls_names },
	{ "listener", "tls_certificate", CONF_STRING, L(tls_certificate), 0, NULL, false, 0, 0, NULL },
	{ "listener", "tls_key", CONF_STRING, L(tls_key), 0, NULL, false, 0, 0, NULL },
	{ "listener", "require_tls", CONF_BOOL, L(require_tls), 0, "no", false, 0, 0, NULL },
	{ "listener", "tls_timeout", CONF_MILLIS, L(tls_timeout_ms), 0, "30", false, 1, 300000, NULL },
};

#define NLPARAMS (sizeof(conf_listener_params) / sizeof(conf_listener_params[0]))

/* The state of one load. */
struct conf_loader {
	struct conf *conf;
	FILE *errors;
	FILE *file;
	int line;
	int nerrors;
	bool seen[NPARAMS];
	struct conf_filter sections[CONF_MAX_FILTERS];
	size_t nsections;
	int filters_line;
	int milter_line; /* of [milter] listen */
	bool lseen[CONF_MAX_ADDRS][NLPARAMS]; /* keys given, per listener section */
	int llines[CONF_MAX_ADDRS][NLPARAMS]; /* and where */
};

/* conf_error - report one error at the current line */
static void __attribute__((format(printf, 5, 6)))
conf_error(struct conf_loader *ld, int line, const char *section,
	   const char *key, const char *fmt, ...)
{
	va_list ap;

	if (key)
		fprintf(ld->errors, "%s:%d: [%s] %s: ", ld->conf->path, line, section, key);
	else
		fprintf(ld->errors, "%s:%d: [%s] ", ld->conf->path, line, section);
	va_start(ap, fmt);
	vfprintf(ld->errors, fmt, ap);
	va_end(ap);
	fputc('\n', ld->errors);
	ld->nerrors++;
}

/* conf_parse_number - digits with an optional k/m/g suffix */
const char *conf_parse_number(const char *value, bool suffixes,
				     unsigned long long *out)
{
	unsigned long long n = 0, mult = 1;
	const char *p = value;

	if (!isdigit((unsigned char)*p))
		return "expected a number";
	for (; isdigit((unsigned char)*p); p++) {
		if (n > (ULLONG_MAX - 9) / 10)
			return "number too large";
		n = n * 10 + (unsigned)(*p - '0');
	}
	if (*p && suffixes) {
		switch (tolower((unsigned char)*p)) {
		case 'k': mult = 1024ULL; break;
		case 'm': mult = 1024ULL * 1024; break;
		case 'g': mult = 1024ULL * 1024 * 1024; break;
		default: return "expected a size such as 512k, 10m or 1g";
		}
		p++;
	}
	if (*p)
		return suffixes ? "expected a size such as 512k, 10m or 1g"
				: "expected a number";
	if (n > ULLONG_MAX / mult)
		return "number too large";
	*out = n * mult;
	return NULL;
}

/* conf_parse_millis - seconds, "5" or "0.25", as milliseconds */
static const char *conf_parse_millis(const char *value, unsigned long long *out)
{
	unsigned long long ms = 0, scale = 1000;
	const char *p = value;

	if (!isdigit((unsigned char)*p))
		return "expected seconds such as 5 or 0.5";
	for (; isdigit((unsigned char)*p); p++) {
		if (ms > 1000000000ULL)
			return "number too large";
		ms = ms * 10 + (unsigned)(*p - '0');
	}
	ms *= 1000;
	if (*p == '.') {
		if (!isdigit((unsigned char)*++p))
			return "expected seconds such as 5 or 0.5";
		for (; isdigit((unsigned char)*p); p++) {
			if ((scale /= 10) == 0)
				return "at most three decimals (milliseconds)";
			ms += scale * (unsigned)(*p - '0');
		}
	}
	if (*p)
		return "expected seconds such as 5 or 0.5";
	*out = ms;
	return NULL;
}

/* conf_numeric_host - whether host is an IPv4 or IPv6 literal */
static bool conf_numeric_host(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, buf) == 1 ||
	       inet_pton(AF_INET6, host, buf) == 1;
}

/* conf_parse_addr - one "host:port" or "[v6]:port" */
static const char *conf_parse_addr(const char *text, size_t len,
				   struct conf_addr *addr)
{
	const char *colon, *end = text + len;
	size_t hlen, plen;

	if (len == 0)
		return "empty address";
	if (len >= sizeof(addr->text))
		return "address too long";
	memcpy(addr->text, text, len);
	addr->text[len] = 0;
	if (text[0] == '[') {
		const char *close = memchr(text, ']', len);
		if (!close || close + 1 >= end || close[1] != ':')
			return "expected [IPv6]:port";
		hlen = (size_t)(close - text - 1);
		memcpy(addr->host, text + 1, hlen);
		colon = close + 1;
	} else {
		colon = NULL;
		for (const char *p = text; p < end; p++)
			if (*p == ':')
				colon = p;
		if (!colon || memchr(text, ':', (size_t)(colon - text)))
			return "expected host:port (write IPv6 as [addr]:port)";
		hlen = (size_t)(colon - text);
		memcpy(addr->host, text, hlen);
	}
	addr->host[hlen] = 0;
	if (hlen == 0)
		return "missing host";
	plen = (size_t)(end - colon - 1);
	if (plen == 0 || plen >= sizeof(addr->port))
		return "bad port";
	memcpy(addr->port, colon + 1, plen);
	addr->port[plen] = 0;
	for (size_t i = 0; i < plen; i++)
		if (!isdigit((unsigned char)addr->port[i]))
			return "bad port";
	if (atoi(addr->port) < 1 || atoi(addr->port) > 65535)
		return "port out of range";
	return NULL;
}

/*
 * conf_parse_net - "192.0.2.0/24", "2001:db8::/32", "[2001:db8::]/32" or
 * a bare address (a host); bits set past the prefix are refused, as the
 * filters' trusted_networks do (10.1.2.3/8 is most likely a typo)
 */
static const char *conf_parse_net(const char *text, size_t len,
				  struct conf_net *net)
{
	const char *bad = "expected a network such as 192.0.2.0/24 or 2001:db8::/32";
	const char *end = text + len, *slash = memchr(text, '/', len);
	const char *hend = slash ? slash : end;
	char host[INET6_ADDRSTRLEN + 2], digits[8];
	unsigned long long prefix;
	unsigned max;

	if (hend - text >= 2 && text[0] == '[' && hend[-1] == ']') {
		text++;
		hend--;
	}
	if (hend == text || (size_t)(hend - text) >= sizeof(host))
		return bad;
	memcpy(host, text, (size_t)(hend - text));
	host[hend - text] = 0;
	memset(net, 0, sizeof(*net));
	if (inet_pton(AF_INET, host, net->addr) == 1) {
		net->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, host, net->addr) == 1) {
		net->family = AF_INET6;
		max = 128;
	} else {
		return bad;
	}
	prefix = max;
	if (slash) {
		size_t dlen = (size_t)(end - slash - 1);
		if (dlen == 0 || dlen >= sizeof(digits))
			return "bad prefix length";
		memcpy(digits, slash + 1, dlen);
		digits[dlen] = 0;
		if (conf_parse_number(digits, false, &prefix) || prefix > max)
			return "bad prefix length";
	}
	net->prefix = (unsigned)prefix;
	for (unsigned bit = net->prefix; bit < max; bit++)
		if (net->addr[bit / 8] & (0x80 >> (bit % 8)))
			return "host bits set past the prefix length";
	return NULL;
}

/* conf_net_match - whether addr is inside one of the networks */
bool conf_net_match(const struct conf_net *nets, size_t n, int family,
		    const unsigned char *addr)
{
	for (size_t i = 0; i < n; i++) {
		unsigned whole = nets[i].prefix / 8, rest = nets[i].prefix % 8;

		if (nets[i].family != family || memcmp(nets[i].addr, addr, whole) != 0)
			continue;
		if (rest == 0 ||
		    ((nets[i].addr[whole] ^ addr[whole]) & (0xff00 >> rest) & 0xff) == 0)
			return true;
	}
	return false;
}

/*
 * conf_set - parse value into the field of param p of base (a struct
 * conf, or a struct conf_listener for its table); NULL or an error
 */
static const char *conf_set(void *base, const struct conf_param *p,
			    const char *value)
{
	char *field = (char *)base + p->offset;
	unsigned long long n;
	const char *err;

	switch (p->type) {
	case CONF_STRING: {
		char **s = (char **)field;
		if (p->min == 1 && *value && *value != '/')
			return "must be an absolute path";
		free(*s);
		*s = strdup(value);
		return NULL;
	}
	case CONF_UINT:
	case CONF_SECONDS:
	case CONF_SIZE:
		if ((err = conf_parse_number(value, p->type == CONF_SIZE, &n)))
			return err;
		if (n < p->min || n > p->max)
			return "value out of range";
		if (p->type == CONF_SIZE)
			*(unsigned long long *)field = n;
		else
			*(unsigned *)field = (unsigned)n;
		return NULL;
	case CONF_MILLIS:
		if ((err = conf_parse_millis(value, &n)))
			return err;
		if (n < p->min || n > p->max)
			return "value out of range";
		*(unsigned *)field = (unsigned)n;
		return NULL;
	case CONF_BOOL:
		if (strcasecmp(value, "yes") == 0 || strcasecmp(value, "no") == 0) {
			*(bool *)field = strcasecmp(value, "yes") == 0;
			return NULL;
		}
		return "expected yes or no";
	case CONF_ENUM:
		for (int i = 0; p->names[i]; i++) {
			if (strcasecmp(value, p->names[i]) == 0) {
				*(int *)field = i;
				return NULL;
			}
		}
		return "not one of the allowed values";
	case CONF_ADDRS:
	case CONF_IPADDRS: {
		struct conf_addr *addrs = (struct conf_addr *)field;
		size_t *count = (size_t *)((char *)base + p->count_offset);
		const char *s = value;

		*count = 0;
		while (*s) {
			const char *comma = strchr(s, ',');
			const char *end = comma ? comma : s + strlen(s);
			const char *b = s, *e = end;

			while (b < e && isspace((unsigned char)*b))
				b++;
			while (e > b && isspace((unsigned char)e[-1]))
				e--;
			if (*count == CONF_MAX_ADDRS)
				return "too many addresses";
			memset(&addrs[*count], 0, sizeof(addrs[0]));
			if ((err = conf_parse_addr(b, (size_t)(e - b), &addrs[*count])))
				return err;
			/* A name server cannot be found by name: its IP is needed. */
			if (p->type == CONF_IPADDRS && !conf_numeric_host(addrs[*count].host))
				return "expected an IP address, not a name";
			(*count)++;
			s = comma ? comma + 1 : end;
		}
		if (*count == 0 && p->type == CONF_ADDRS)
			return "no address given";
		return NULL;
	}
	case CONF_NETWORKS: {
		struct conf_net **nets = (struct conf_net **)field;
		size_t *count = (size_t *)((char *)base + p->count_offset);
		const char *s = value;

		free(*nets);
		*nets = NULL;
		*count = 0;
		while (*s) {
			size_t skip = strspn(s, ", \t"), len;
			struct conf_net *more;

			s += skip;
			if (!*s)
				break;
			len = strcspn(s, ", \t");
			more = realloc(*nets, (*count + 1) * sizeof(**nets));
			if (!more)
				return "out of memory";
			*nets = more;
			if ((err = conf_parse_net(s, len, &(*nets)[*count]))) {
				static char msg[160];
				snprintf(msg, sizeof(msg), "%s: \"%.*s\"", err,
					 (int)(len > 80 ? 80 : len), s);
				return msg;
			}
			(*count)++;
			s += len;
		}
		return NULL;
	}
	}
	return "internal error: unknown parameter type";
}

/* conf_reader - fgets for libinih that counts lines for error messages */
static char *conf_reader(char *buf, int size, void *stream)
{
	struct conf_loader *ld = stream;
	char *r = fgets(buf, size, ld->file);

	if (r)
		ld->line++;
	return r;
}

/* conf_filter_section - the [filter NAME] section, created on first use */
static struct conf_filter *conf_filter_section(struct conf_loader *ld,
					       const char *name)
{
	while (*name == ' ')
		name++;
	for (size_t i = 0; i < ld->nsections; i++)
		if (strcmp(ld->sections[i].name, name) == 0)
			return &ld->sections[i];
	if (ld->nsections == CONF_MAX_FILTERS) {
		conf_error(ld, ld->line, "filter", name, "%s", "too many filter sections");
		return NULL;
	}
	struct conf_filter *f = &ld->sections[ld->nsections++];
	f->name = strdup(name);
	f->line = ld->line;
	return f;
}

/* conf_filter_key - a key of a [filter NAME] section, checked at load */
static int conf_filter_key(struct conf_loader *ld, const char *name,
			   const char *key, const char *value)
{
	struct conf_filter *f = conf_filter_section(ld, name);

	if (!f)
		return 1;
	if (conf_filter_get(f, key)) {
		char section[300];
		snprintf(section, sizeof(section), "filter %s", f->name);
		conf_error(ld, ld->line, section, key, "%s", "given twice");
		return 1;
	}
	struct conf_kv *kv = realloc(f->kv, (f->nkv + 1) * sizeof(*kv));
	if (!kv)
		return 0;
	f->kv = kv;
	kv[f->nkv].key = strdup(key);
	kv[f->nkv].value = strdup(value);
	kv[f->nkv].line = ld->line;
	f->nkv++;
	return 1;
}

/* conf_filter_get - the value of key in a filter section */
const char *conf_filter_get(const struct conf_filter *f, const char *key)
{
	for (size_t i = 0; i < f->nkv; i++)
		if (strcasecmp(f->kv[i].key, key) == 0)
			return f->kv[i].value;
	return NULL;
}

/* conf_filter_line - where key was given */
int conf_filter_line(const struct conf_filter *f, const char *key)
{
	for (size_t i = 0; i < f->nkv; i++)
		if (strcasecmp(f->kv[i].key, key) == 0)
			return f->kv[i].line;
	return f->line;
}

/* conf_free_filter - release one filter section */
static void conf_free_filter(struct conf_filter *f)
{
	for (size_t i = 0; i < f->nkv; i++) {
		free(f->kv[i].key);
		free(f->kv[i].value);
	}
	free(f->kv);
	free(f->name);
	memset(f, 0, sizeof(*f));
}

/*
 * conf_chain - order the filter sections as the filters key lists them;
 * a listed name without a section, or a section not in the chain, is an
 * error (an unused section is most likely a forgotten list entry)
 */
static void conf_chain(struct conf_loader *ld)
{
	struct conf *conf = ld->conf;
	char *list = strdup(conf->filters), *save = NULL;
	bool used[CONF_MAX_FILTERS] = { false };

	for (char *name = strtok_r(list, ", \t", &save); name;
	     name = strtok_r(NULL, ", \t", &save)) {
		size_t i;
		for (i = 0; i < ld->nsections; i++)
			if (strcmp(ld->sections[i].name, name) == 0)
				break;
		if (i == ld->nsections) {
			conf_error(ld, ld->filters_line, "portcullis", "filters",
				   "no [filter %s] section", name);
			continue;
		}
		if (used[i]) {
			conf_error(ld, ld->filters_line, "portcullis", "filters",
				   "%s listed twice (load it twice under two names)", name);
			continue;
		}
		used[i] = true;
		conf->chain[conf->nchain++] = ld->sections[i];
	}
	for (size_t i = 0; i < ld->nsections; i++) {
		if (used[i])
			continue;
		char section[300];
		snprintf(section, sizeof(section), "filter %s", ld->sections[i].name);
		conf_error(ld, ld->sections[i].line, section, NULL,
			   "%s", "section not listed in [portcullis] filters");
		conf_free_filter(&ld->sections[i]);
	}
	free(list);
}

/* conf_listener_section - the [listener NAME] section, created on first use */
static struct conf_listener *conf_listener_section(struct conf_loader *ld,
						   const char *name, const char *key)
{
	struct conf *conf = ld->conf;
	struct conf_listener *l;

	while (*name == ' ')
		name++;
	for (size_t i = 0; i < conf->nlisteners; i++)
		if (strcmp(conf->listeners[i].name, name) == 0)
			return &conf->listeners[i];
	if (!*name) {
		conf_error(ld, ld->line, "listener", key, "%s",
			   "a listener section needs a name: [listener NAME]");
		return NULL;
	}
	if (conf->nlisteners == CONF_MAX_ADDRS) {
		conf_error(ld, ld->line, "listener", name, "too many listener sections (at most %d)",
			   CONF_MAX_ADDRS);
		return NULL;
	}
	l = &conf->listeners[conf->nlisteners++];
	l->name = strdup(name);
	l->line = ld->line;
	for (size_t i = 0; i < NLPARAMS; i++)
		if (conf_listener_params[i].def &&
		    conf_set(l, &conf_listener_params[i], conf_listener_params[i].def))
			fprintf(ld->errors, "internal error: bad default for %s\n",
				conf_listener_params[i].key);
	return l;
}

/* conf_listener_key - one key of a [listener NAME] section */
static int conf_listener_key(struct conf_loader *ld, const char *name,
			     const char *key, const char *value)
{
	struct conf_listener *l = conf_listener_section(ld, name, key);
	char section[300];
	const char *err;
	size_t li;

	if (!l)
		return 1;
	li = (size_t)(l - ld->conf->listeners);
	snprintf(section, sizeof(section), "listener %s", l->name);
	for (size_t i = 0; i < NLPARAMS; i++) {
		const struct conf_param *p = &conf_listener_params[i];

		if (strcasecmp(key, p->key) != 0)
			continue;
		if (ld->lseen[li][i])
			conf_error(ld, ld->line, section, key, "%s", "given twice");
		ld->lseen[li][i] = true;
		ld->llines[li][i] = ld->line;
		if ((err = conf_set(l, p, value)))
			conf_error(ld, ld->line, section, key, "%s: \"%s\"", err, value);
		return 1;
	}
	conf_error(ld, ld->line, section, key, "%s", "unknown key");
	return 1;
}

/* conf_lgiven - where key of listener li was given, 0 when it was not */
static int conf_lgiven(struct conf_loader *ld, size_t li, const char *key)
{
	for (size_t i = 0; i < NLPARAMS; i++)
		if (strcmp(conf_listener_params[i].key, key) == 0 && ld->lseen[li][i])
			return ld->llines[li][i];
	return 0;
}

/* conf_lline - where key of listener li was given (the section's line if not) */
static int conf_lline(struct conf_loader *ld, size_t li, const char *key)
{
	int line = conf_lgiven(ld, li, key);

	return line ? line : ld->conf->listeners[li].line;
}

/* conf_same_addr - whether two listening addresses are the same socket */
static bool conf_same_addr(const struct conf_addr *a, const struct conf_addr *b)
{
	return strcasecmp(a->host, b->host) == 0 && atoi(a->port) == atoi(b->port);
}

/*
 * conf_listener_auth - the AUTH keys of listener li agree: dovecot needs
 * its socket, and keys that only one mode reads are errors elsewhere
 * (a forgotten "auth = dovecot" would otherwise serve without AUTH)
 */
static void conf_listener_auth(struct conf_loader *ld, size_t li, const char *section)
{
	const struct conf_listener *l = &ld->conf->listeners[li];
	static const char *const auth_keys[] = { "auth_require_tls", "auth_timeout",
						 "auth_failure_limit", "auth_failure_delay",
						 "auth_failure_window" };

	if (l->auth == CONF_AUTH_DOVECOT && (!l->auth_socket || !*l->auth_socket))
		conf_error(ld, conf_lline(ld, li, "auth_socket"), section, "auth_socket",
			   "%s", "required with auth = dovecot: the path of Dovecot's auth client socket");
	if (l->auth != CONF_AUTH_DOVECOT && l->auth_socket)
		conf_error(ld, conf_lline(ld, li, "auth_socket"), section, "auth_socket",
			   "%s", "has no effect without auth = dovecot");
	if (l->auth == CONF_AUTH_OFF)
		for (size_t i = 0; i < sizeof(auth_keys) / sizeof(auth_keys[0]); i++)
			if (conf_lgiven(ld, li, auth_keys[i]))
				conf_error(ld, conf_lline(ld, li, auth_keys[i]), section, auth_keys[i],
					   "%s", "has no effect without auth");
}

/*
 * conf_listeners - check each [listener NAME] section and append its
 * addresses to conf->listen after those of [portcullis] listen, each
 * with its settings; at least one address in all, none twice
 */
static void conf_listeners(struct conf_loader *ld)
{
	struct conf *conf = ld->conf;

	for (size_t i = 0; i < conf->nlisten; i++)
		conf->listen_settings[i] = &conf->plain;
	for (size_t li = 0; li < conf->nlisteners; li++) {
		struct conf_listener *l = &conf->listeners[li];
		char section[300];

		snprintf(section, sizeof(section), "listener %s", l->name);
		for (size_t i = 0; i < NLPARAMS; i++)
			if (conf_listener_params[i].required && !ld->lseen[li][i])
				conf_error(ld, l->line, section, conf_listener_params[i].key,
					   "%s", "required key missing");
		/*
		 * A PROXY listener believes the header only from the balancers;
		 * with nobody trusted it could serve nobody, and an empty list
		 * is more likely a forgotten key than a wish.
		 */
		if (l->proxy_protocol != CONF_PROXY_OFF && l->nproxy_from == 0)
			conf_error(ld, conf_lline(ld, li, "proxy_from"), section, "proxy_from",
				   "%s", "required with proxy_protocol: the networks of the load balancers");
		if (l->proxy_protocol == CONF_PROXY_OFF) {
			if (l->nproxy_from)
				conf_error(ld, conf_lline(ld, li, "proxy_from"), section,
					   "proxy_from", "%s", "has no effect without proxy_protocol");
			if (conf_lgiven(ld, li, "proxy_timeout"))
				conf_error(ld, conf_lline(ld, li, "proxy_timeout"), section,
					   "proxy_timeout", "%s", "has no effect without proxy_protocol");
		}
		conf_listener_auth(ld, li, section);
		/* Where tls_load() says a file was given, for its errors. */
		l->tls_certificate_line = conf_lline(ld, li, "tls_certificate");
		l->tls_key_line = conf_lline(ld, li, "tls_key");
		if (l->tls != CONF_TLS_NONE) {
			if (!l->tls_certificate || !*l->tls_certificate)
				conf_error(ld, conf_lline(ld, li, "tls"), section, "tls_certificate",
					   "%s", "required with tls = starttls or implicit");
			if (!l->tls_key || !*l->tls_key)
				conf_error(ld, conf_lline(ld, li, "tls"), section, "tls_key",
					   "%s", "required with tls = starttls or implicit");
		} else {
			if (l->require_tls)
				conf_error(ld, conf_lline(ld, li, "require_tls"), section,
					   "require_tls", "%s", "needs tls = starttls (or implicit)");
			if (conf_lgiven(ld, li, "tls_certificate") || conf_lgiven(ld, li, "tls_key"))
				conf_error(ld, conf_lline(ld, li, conf_lgiven(ld, li, "tls_key") ? "tls_key" : "tls_certificate"),
					   section, conf_lgiven(ld, li, "tls_key") ? "tls_key" : "tls_certificate",
					   "%s", "has no effect without tls = starttls or implicit");
		}
		for (size_t a = 0; a < l->naddrs; a++) {
			if (conf->nlisten == CONF_MAX_ADDRS) {
				conf_error(ld, conf_lline(ld, li, "address"), section, "address",
					   "more than %d listening addresses in all", CONF_MAX_ADDRS);
				break;
			}
			conf->listen[conf->nlisten] = l->addrs[a];
			conf->listen_settings[conf->nlisten++] = l;
		}
	}
	for (size_t i = 0; i < conf->nlisten; i++)
		for (size_t j = 0; j < i; j++)
			if (conf_same_addr(&conf->listen[i], &conf->listen[j])) {
				const struct conf_listener *l = conf->listen_settings[i];
				char section[300];
				snprintf(section, sizeof(section), "listener %s", l->name ? l->name : "");
				conf_error(ld, l->name ? conf_lline(ld, (size_t)(l - conf->listeners), "address") : 0,
					   l->name ? section : "portcullis", l->name ? "address" : "listen",
					   "%s is listened on twice", conf->listen[i].text);
				break;
			}
	if (conf->nlisten == 0 && !*conf->milter_listen)
		conf_error(ld, 0, "portcullis", "listen", "%s",
			   "required key missing (or a [listener NAME] section with an "
			   "address, or [milter] listen)");
}

/*
 * conf_milter - [milter] listen is a socket libmilter takes (smfi_setconn):
 * unix:/path or local:/path, inet:port@host or inet6:port@host; and
 * [backend] servers is required when SMTP listeners relay to it
 */
static void conf_milter(struct conf_loader *ld)
{
	struct conf *conf = ld->conf;
	const char *l = conf->milter_listen;
	const char *colon = strchr(l, ':');

	if (conf->nlisten && !conf->nbackends)
		conf_error(ld, 0, "backend", "servers", "%s", "required key missing");
	if (!*l)
		return;
	if (!colon) {
		conf_error(ld, ld->milter_line, "milter", "listen",
			   "\"%s\": expected unix:/path or inet:port@host", l);
	} else if (strncmp(l, "unix:", 5) == 0 || strncmp(l, "local:", 6) == 0) {
		if (colon[1] != '/')
			conf_error(ld, ld->milter_line, "milter", "listen",
				   "\"%s\": the socket's path must be absolute", l);
	} else if (strncmp(l, "inet:", 5) == 0 || strncmp(l, "inet6:", 6) == 0) {
		unsigned long long port;
		char digits[8] = "";
		size_t n = strcspn(colon + 1, "@");

		if (n < sizeof(digits))
			memcpy(digits, colon + 1, n);
		if (!*digits || conf_parse_number(digits, false, &port) || port == 0 ||
		    port > 65535 || (colon[1 + n] == '@' && !colon[2 + n]))
			conf_error(ld, ld->milter_line, "milter", "listen",
				   "\"%s\": expected inet:port@host, port 1 to 65535", l);
	} else {
		conf_error(ld, ld->milter_line, "milter", "listen",
			   "\"%s\": expected unix:/path or inet:port@host", l);
	}
}

/* conf_handler - one "key = value" from libinih */
static int conf_handler(void *user, const char *section, const char *key,
			const char *value)
{
	struct conf_loader *ld = user;
	bool section_known = false;
	const char *err;

	if (strncasecmp(section, "filter ", 7) == 0)
		return conf_filter_key(ld, section + 7, key, value);
	if (strncasecmp(section, "listener", 8) == 0 &&
	    (section[8] == ' ' || section[8] == 0))
		return conf_listener_key(ld, section + 8, key, value);

	for (size_t i = 0; i < NPARAMS; i++) {
		const struct conf_param *p = &conf_params[i];

		if (strcasecmp(section, p->section) != 0)
			continue;
		section_known = true;
		if (strcasecmp(key, p->key) != 0)
			continue;
		if (ld->seen[i])
			conf_error(ld, ld->line, section, key, "%s",
				   "given twice");
		ld->seen[i] = true;
		if (p->offset == F(filters))
			ld->filters_line = ld->line;
		if (p->offset == F(max_sessions))
			ld->conf->max_sessions_line = ld->line;
		if (p->offset == F(backend_tls_ca_file))
			ld->conf->backend_tls_line[0] = ld->line;
		if (p->offset == F(backend_tls_verify_name))
			ld->conf->backend_tls_line[1] = ld->line;
		if (p->offset == F(backend_tls_fingerprint))
			ld->conf->backend_tls_line[2] = ld->line;
		if (p->offset == F(milter_listen))
			ld->milter_line = ld->line;
		if ((err = conf_set(ld->conf, p, value)))
			conf_error(ld, ld->line, section, key, "%s: \"%s\"",
				   err, value);
		return 1;
	}
	conf_error(ld, ld->line, section, key, "%s",
		   section_known ? "unknown key" : "unknown section");
	return 1;
}

/* conf_load - read, default and check a configuration file */
struct conf *conf_load(const char *path, FILE *errors)
{
	struct conf_loader ld = { 0 };
	struct conf *conf = calloc(1, sizeof(*conf));
	int rc;

	if (!conf)
		return NULL;
	conf->path = strdup(path);
	ld.conf = conf;
	ld.errors = errors;
	for (size_t i = 0; i < NPARAMS; i++)
		if (conf_params[i].def && conf_set(conf, &conf_params[i], conf_params[i].def))
			fprintf(errors, "internal error: bad default for %s\n",
				conf_params[i].key);
	ld.file = fopen(path, "r");
	if (!ld.file) {
		fprintf(errors, "%s: cannot open: %s\n", path, strerror(errno));
		conf_free(conf);
		return NULL;
	}
	rc = ini_parse_stream(conf_reader, &ld, conf_handler, &ld);
	fclose(ld.file);
	if (rc > 0) {
		fprintf(errors, "%s:%d: syntax error (expected [section] or key = value)\n",
			path, rc);
		ld.nerrors++;
	} else if (rc < 0) {
		fprintf(errors, "%s: cannot read\n", path);
		ld.nerrors++;
	}
	conf_chain(&ld);
	conf_listeners(&ld);
	conf_milter(&ld);
	for (size_t i = 0; i < NPARAMS; i++)
		if (conf_params[i].required && !ld.seen[i])
			conf_error(&ld, 0, conf_params[i].section,
				   conf_params[i].key, "%s", "required key missing");
	if (!conf->hostname || !*conf->hostname) {
		char name[256] = "localhost";
		gethostname(name, sizeof(name) - 1);
		free(conf->hostname);
		conf->hostname = strdup(name);
	}
	if (!smtp_domain_valid(conf->hostname, strlen(conf->hostname), false))
		conf_error(&ld, 0, "portcullis", "hostname", "%s",
			   "not a valid host name");
	if (!conf->helo_name || !*conf->helo_name) {
		free(conf->helo_name);
		conf->helo_name = strdup(conf->hostname);
	}
	if (!*conf->authserv_id) {
		free(conf->authserv_id);
		conf->authserv_id = strdup(conf->hostname);
	} else if (strpbrk(conf->authserv_id, " \t;()\"\\")) {
		conf_error(&ld, 0, "portcullis", "authserv_id", "%s",
			   "a single token is needed (RFC 8601 2.5)");
	}
	if (conf->backend_tls == CONF_BACKEND_TLS_NONE) {
		static const char *const keys[3] = { "tls_ca_file", "tls_verify_name",
						     "tls_fingerprint" };
		for (int i = 0; i < 3; i++)
			if (conf->backend_tls_line[i])
				conf_error(&ld, conf->backend_tls_line[i], "backend", keys[i], "%s",
					   "has no effect without tls = may or encrypt");
	} else if (conf->backend_tls_verify_name && !conf->backend_tls_ca_file) {
		conf_error(&ld, conf->backend_tls_line[1], "backend", "tls_verify_name", "%s",
			   "needs tls_ca_file: a name is only worth what the chain to a CA says");
	}
	if (!*conf->spool_dir || conf->spool_dir[0] != '/')
		conf_error(&ld, 0, "portcullis", "spool_dir", "%s",
			   "must be an absolute path");
	if (ld.nerrors) {
		conf_free(conf);
		return NULL;
	}
	return conf;
}

/* conf_free - release a configuration */
void conf_free(struct conf *conf)
{
	if (!conf)
		return;
	for (size_t i = 0; i < NPARAMS; i++)
		if (conf_params[i].type == CONF_STRING)
			free(*(char **)((char *)conf + conf_params[i].offset));
	free(conf->client_limit_exceptions);
	for (size_t i = 0; i < conf->nlisteners; i++) {
		free(conf->listeners[i].name);
		free(conf->listeners[i].proxy_from);
		free(conf->listeners[i].trusted_xclient);
		free(conf->listeners[i].auth_socket);
		free(conf->listeners[i].tls_certificate);
		free(conf->listeners[i].tls_key);
	}
	for (size_t i = 0; i < conf->nchain; i++)
		conf_free_filter(&conf->chain[i]);
	free(conf->path);
	free(conf);
}
