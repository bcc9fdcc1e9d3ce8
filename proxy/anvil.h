/*
 * anvil.h - the connection-counting service, after Postfix's anvil(8)
 *
 * Workers share no memory, so the per-client limits (sessions per
 * address, sessions per /24 or /64, new connections per minute per
 * address) are counted by one more child of the master: anvil_run()
 * serves a Unix SOCK_SEQPACKET socket the master opened. Each worker
 * connects once (anvil_client.h) and, for every client, sends one
 * ANVIL_CONNECT with the client's address and the limits of its own
 * configuration (so a reload needs no new anvil), gets one ANVIL_ANSWER,
 * and sends one ANVIL_DISCONNECT when a counted session ends. Failed
 * AUTHs are counted here too (ANVIL_AUTH_FAILED), per address over a
 * window, so that a client guessing passwords meets auth_failure_limit
 * however it spreads its sessions over the workers.
 *
 * The anvil counts per worker connection: when a worker's connection
 * closes (the worker died, or gave up on the anvil), every session it
 * had counted is dropped from the totals. A restarted anvil starts from
 * zero; the workers, whose connections closed, count afresh.
 *
 * The table below (struct anvil_table) is the one hash table of both
 * sides: the anvil's totals and each worker's list of counted sessions.
 * Its hash is keyed with random bytes, so clients choosing addresses
 * cannot make it degrade into a list.
 */
#ifndef PORTCULLIS_ANVIL_H
#define PORTCULLIS_ANVIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

/* Messages, one per datagram, all of the size of struct anvil_msg. */
enum anvil_type {
	ANVIL_CONNECT = 1, /* worker: may this client have a session? */
	ANVIL_ANSWER,	   /* anvil: the verdict, with the request's id */
	ANVIL_DISCONNECT,  /* worker: a session counted for addr ended */
	/*
	 * worker: a failed AUTH from addr, limits[0] the window in seconds;
	 * answered ANVIL_UNCOUNTED with count, the address's failed AUTHs
	 * within the window (this one included), from every worker
	 */
	ANVIL_AUTH_FAILED,
};

enum anvil_verdict {
	ANVIL_OK,	   /* counted: tell ANVIL_DISCONNECT at the end */
	ANVIL_UNCOUNTED,   /* serve, nothing counted (the anvil is out of memory) */
	ANVIL_CONNECTIONS, /* client_connection_limit reached */
	ANVIL_NETWORK,	   /* client_network_connection_limit reached */
	ANVIL_RATE,	   /* client_connection_rate_limit reached */
};

/* The limits an ANVIL_CONNECT carries, in the order of limits[]. */
enum anvil_limit { ANVIL_LIMIT_CONN, ANVIL_LIMIT_NET, ANVIL_LIMIT_RATE, ANVIL_NLIMITS };

/* The rate limit counts connections over this window, in seconds. */
#define ANVIL_RATE_WINDOW 60

struct anvil_msg {
	uint8_t type;	 /* enum anvil_type */
	uint8_t verdict; /* ANVIL_ANSWER: enum anvil_verdict */
	uint8_t family;	 /* 4 or 6 */
	uint8_t pad;
	uint32_t id;	 /* ANVIL_CONNECT's, echoed in its answer */
	uint32_t limits[ANVIL_NLIMITS]; /* ANVIL_CONNECT; 0: no limit */
	uint32_t count;	 /* ANVIL_ANSWER: the count that met its limit */
	uint8_t addr[16]; /* IPv4 in the first 4 bytes */
};

/* A table key: an address (with its port for a worker's sessions). */
struct anvil_key {
	uint8_t kind;	/* what the entry counts (the table's user's choice) */
	uint8_t family; /* 4 or 6 */
	uint16_t port;
	uint8_t addr[16];
};

struct anvil_entry {
	struct anvil_entry *next;
	struct anvil_key key;
	unsigned count;	     /* sessions */
	unsigned rate;	     /* connections since rate_start */
	time_t rate_start;
};

struct anvil_table {
	struct anvil_entry **buckets;
	size_t nbuckets; /* a power of two, or 0 before the first insert */
	size_t count;
	uint64_t seed[2];
};

/* anvil_table_init - an empty table with a fresh random seed */
void anvil_table_init(struct anvil_table *t);

/*
 * anvil_table_get - the entry of key, made (zeroed) when create is true
 * and there is none; NULL when absent, or out of memory
 */
struct anvil_entry *anvil_table_get(struct anvil_table *t,
				    const struct anvil_key *key, bool create);

/* anvil_table_remove - take e out of the table and free it */
void anvil_table_remove(struct anvil_table *t, struct anvil_entry *e);

/* anvil_table_free - free every entry */
void anvil_table_free(struct anvil_table *t);

/*
 * anvil_address - the abstract Unix socket address of the anvil of the
 * master with pid master (no file to clean up, none left by a crash);
 * returns its length
 */
socklen_t anvil_address(int master, struct sockaddr_un *sun);

/* anvil_listen - the master's listening socket, before forking; -1 logged */
int anvil_listen(void);

/*
 * anvil_run - serve the workers on listen_fd until SIGTERM; the exit
 * status. Runs in its own process.
 */
int anvil_run(int listen_fd);

#endif
