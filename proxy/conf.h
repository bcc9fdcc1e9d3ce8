/*
 * conf.h - the configuration file (INI) of the daemon
 *
 * conf_load() reads one file into a struct conf, with every key checked
 * against one table of parameters and their defaults (conf.c). Every
 * error names the file, the line and the key; all errors are reported,
 * not just the first. The struct is read-only once loaded: a reload
 * loads a new one and the master hands it to new workers.
 */
#ifndef PORTCULLIS_CONF_H
#define PORTCULLIS_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define CONF_MAX_ADDRS 16

/* A host:port as written, split into its parts. */
struct conf_addr {
	char host[256]; /* without the brackets of an IPv6 literal */
	char port[8];
	char text[272]; /* as written, for logs */
};

/* One "key = value" of a [filter NAME] section, with its line. */
struct conf_kv {
	char *key;
	char *value;
	int line;
};

/* A [filter NAME] section: the filter's own keys are checked at load. */
struct conf_filter {
	char *name;
	int line;
	struct conf_kv *kv;
	size_t nkv;
};

#define CONF_MAX_FILTERS 64

/* A network of client_limit_exceptions: the address with its host bits zero. */
struct conf_net {
	int family; /* AF_INET or AF_INET6 */
	unsigned prefix;
	unsigned char addr[16];
};

/*
 * The PROXY protocol a listener expects: the values are the version masks
 * of proxyproto.h (off 0, v1 1, v2 2, any 3).
 */
enum conf_proxy_protocol {
	CONF_PROXY_OFF,
	CONF_PROXY_V1,
	CONF_PROXY_V2,
	CONF_PROXY_ANY,
};

/* Who checks AUTH's credentials on a listener. */
enum conf_auth {
	CONF_AUTH_OFF,	   /* AUTH is not offered */
	CONF_AUTH_DOVECOT, /* Dovecot's auth service, over auth_socket */
	CONF_AUTH_RELAY,   /* the backend: the exchange is relayed to it */
};
/* A listener's TLS: none, STARTTLS (RFC 3207), or TLS at once (RFC 8314 port 465). */
enum conf_tls { CONF_TLS_NONE, CONF_TLS_STARTTLS, CONF_TLS_IMPLICIT };

struct tls_server;

/*
 * The settings of listening addresses: those of [portcullis] listen share
 * the defaults (conf->plain), each [listener NAME] section has its own.
 * What a TLS mode, certificates, AUTH or trusted XCLIENT will need per
 * listener belongs here too.
 */
struct conf_listener {
	char *name; /* the section's NAME; NULL for [portcullis] listen */
	int line;   /* of the section */
	struct conf_addr addrs[CONF_MAX_ADDRS]; /* address = ... */
	size_t naddrs;
	int proxy_protocol;		/* enum conf_proxy_protocol */
	struct conf_net *proxy_from;	/* who may send the header */
	size_t nproxy_from;
	unsigned proxy_timeout_ms;	/* the header must be whole within it */
	unsigned long long message_size_limit; /* 0: [portcullis] message_size_limit */
	struct conf_net *trusted_xclient; /* who may send XCLIENT and XFORWARD */
	size_t ntrusted_xclient;
	int auth;			/* enum conf_auth */
	char *auth_socket;		/* Dovecot's auth client socket */
	int auth_require_tls;		/* 1: AUTH offered and taken only under TLS */
	unsigned auth_timeout_ms;	/* for the checker's answer */
	unsigned auth_failure_limit;	/* failed AUTHs before 421, 0: none */
	unsigned auth_failure_delay_ms;	/* the first failure's delay, doubling */
	unsigned auth_failure_window;	/* seconds failures of an address are counted */
	int tls;			/* enum conf_tls */
	char *tls_certificate;		/* FILE [FILE ...], paired with tls_key */
	char *tls_key;
	int tls_certificate_line, tls_key_line; /* where they were given */
	bool require_tls;		/* MAIL and the like only under TLS */
	unsigned tls_timeout_ms;	/* the handshake must be done within it */
	struct tls_server *tls_server;	/* made by tls_load() (tls.h) */
};

enum conf_bare_newline { CONF_BARE_REJECT, CONF_BARE_NORMALIZE };

/* When the session writes its own Received: header ([backend] received_header). */
enum conf_received { CONF_RECEIVED_AUTO, CONF_RECEIVED_ALWAYS };

/* TLS to the backend: never, when offered (STARTTLS), or required. */
enum conf_backend_tls { CONF_BACKEND_TLS_NONE, CONF_BACKEND_TLS_MAY, CONF_BACKEND_TLS_ENCRYPT };

struct tls_client;

enum conf_identity {
	CONF_IDENTITY_AUTO,
	CONF_IDENTITY_XCLIENT,
	CONF_IDENTITY_XFORWARD,
	CONF_IDENTITY_HEADER,
};

struct conf {
	char *path;

	/*
	 * Every listening address: those of [portcullis] listen, then those
	 * of each [listener NAME] section in file order; listen_settings[i]
	 * are the settings of listen[i] (&plain or one of listeners[]).
	 */
	struct conf_addr listen[CONF_MAX_ADDRS];
	size_t nlisten;
	const struct conf_listener *listen_settings[CONF_MAX_ADDRS];
	struct conf_listener plain;
	struct conf_listener listeners[CONF_MAX_ADDRS];
	size_t nlisteners;

	/* [portcullis] */
	char *hostname;
	unsigned workers;
	char *user;
	char *spool_dir;
	char *quarantine_dir; /* "" without: pc_quarantine() is refused */
	unsigned long long spool_memory_limit;
	unsigned long long message_size_limit;
	unsigned long long header_size_limit; /* the header block, bytes */
	unsigned hopcount_limit;	      /* Received: fields */
	unsigned max_recipients;
	unsigned recipient_overshoot_limit; /* RCPTs over max_recipients that are not errors */
	unsigned max_errors;
	unsigned max_line_length;
	int bare_newline;
	unsigned timeout_command;
	unsigned timeout_data;
	unsigned command_deadline; /* seconds from a command line's first byte to its end, 0: off */
	unsigned min_data_rate;	   /* bytes/s DATA must keep up past timeout_data, 0: off */
	unsigned max_commands;	   /* command lines per session */
	unsigned junk_command_limit; /* NOOP, RSET, VRFY, ETRN, HELP between delivered messages */
	unsigned drain_timeout;
	int client_name_lookup; /* 1: the client's name by PTR, forward-confirmed */
	unsigned max_sessions;
	int max_sessions_line; /* where it was set, 0 for the default (messages) */
	char *pid_file;
	char *authserv_id; /* Authentication-Results: (RFC 8601); default hostname */
	char *filters;	  /* the chain, as written */
	char *filter_dir; /* where "module = NAME" is found as NAME.so */
	unsigned filter_threads;
	unsigned filter_queue;
	/* Per-client limits, counted by the anvil service (anvil.h); 0: none. */
	unsigned client_connection_limit;	  /* sessions per address */
	unsigned client_network_connection_limit; /* sessions per /24 or /64 */
	unsigned client_connection_rate_limit;	  /* new connections per minute */
	struct conf_net *client_limit_exceptions; /* exempt from all three */
	size_t nclient_limit_exceptions;

	/* [filter NAME] sections, in the order of the chain */
	struct conf_filter chain[CONF_MAX_FILTERS];
	size_t nchain;

	/* [backend] */
	struct conf_addr backends[CONF_MAX_ADDRS];
	size_t nbackends;
	char *helo_name;
	int client_identity;
	int received_header;		/* enum conf_received */
	int backend_tls;		/* enum conf_backend_tls */
	char *backend_tls_ca_file;	/* verify the backend's chain against it */
	char *backend_tls_verify_name;	/* and the name its certificate must carry */
	char *backend_tls_fingerprint;	/* or the SHA-256 of its certificate (a list) */
	int backend_tls_line[3];	/* where tls_ca_file, _verify_name, _fingerprint were */
	struct tls_client *backend_tls_client; /* made by tls_load() (tls.h) */
	unsigned backend_timeout_connect;
	unsigned backend_timeout_greeting;
	unsigned backend_timeout_command;
	unsigned backend_timeout_data_init;
	unsigned backend_timeout_data_block;
	unsigned backend_timeout_data_end;
	unsigned backend_keepalive;
	unsigned backend_reuse;		  /* parked connections per worker, 0: off */
	unsigned backend_reuse_idle;	  /* seconds a parked connection waits */
	unsigned backend_reuse_time_limit; /* seconds a connection may be reused */

	/* [dns]: the resolver of pc_dns_query() (dns.c) */
	struct conf_addr dns_servers[CONF_MAX_ADDRS]; /* IP:port literals */
	size_t ndns_servers; /* 0: the system's (/etc/resolv.conf) */
	unsigned dns_timeout_ms; /* per server and try */
	unsigned dns_retries;	 /* tries after the first */
	unsigned dns_cache_size; /* entries; 0: no cache */
	unsigned dns_max_ttl;
	unsigned dns_negative_ttl;

	/* [milter]: the chain served to an MTA as a milter (milter_front.h) */
	char *milter_listen; /* libmilter's socket: unix:/path, inet:port@host; "" off */

	/* [log] */
	char *decisions;
	int diagnostics_syslog; /* 0 stderr, 1 syslog (an enum like the others) */
	int log_level;
};

/*
 * conf_load - read and check a configuration file
 *
 * Returns the configuration, or NULL after writing one line per error to
 * errors ("FILE:LINE: [section] key: message").
 */
struct conf *conf_load(const char *path, FILE *errors);

/* conf_filter_get - the value of key in a filter section, or NULL */
const char *conf_filter_get(const struct conf_filter *f, const char *key);

/* conf_filter_line - the line of key in a filter section (the section's own line if absent) */
int conf_filter_line(const struct conf_filter *f, const char *key);

/*
 * conf_parse_number - digits, with an optional k/m/g suffix when suffixes
 * is true; NULL, or what is wrong
 */
const char *conf_parse_number(const char *value, bool suffixes,
			      unsigned long long *out);

/*
 * conf_net_match - whether the address (AF_INET: 4 bytes, AF_INET6: 16)
 * is inside one of the n networks
 */
bool conf_net_match(const struct conf_net *nets, size_t n, int family,
		    const unsigned char *addr);

/* conf_free - release a configuration */
void conf_free(struct conf *conf);

#endif
