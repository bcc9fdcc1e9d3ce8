/*
 * dnscache.c - the answer cache of the resolver
 *
 * A chained hash table (grown by doubling, so a large cache_size costs
 * nothing until it fills) threaded on one LRU list: a hit moves the
 * entry to the front, an insertion into a full cache drops the back.
 * Expired entries are dropped when they are looked up, or when they
 * reach the back of the list. See dnscache.h for the TTL rules; replies
 * are read with libresolv's ns_initparse(), as filters read them.
 */
#include "config.h"

#include <arpa/nameser.h>
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dnscache.h"

#define DNSCACHE_MIN_BUCKETS 64
/* A name of 255 octets written with every octet escaped (\123). */
#define DNSCACHE_KEY_MAX (NS_MAXCDNAME * 4 + 1)

struct dnscache_entry {
	struct dnscache_entry *next;	/* in its bucket */
	struct dnscache_entry *newer, *older; /* the LRU list */
	unsigned long long expires;	/* ms, monotonic */
	uint32_t hash;
	int type;
	size_t len;
	unsigned char *reply;		/* after the name, same allocation */
	char name[];
};

struct dnscache {
	struct dnscache_entry **buckets;
	size_t nbuckets; /* a power of two */
	struct dnscache_entry *newest, *oldest;
	size_t capacity;
	unsigned max_ttl, negative_ttl;
	struct dnscache_stats stats;
};

/*
 * dnscache_ttl_of - an RR's TTL; RFC 2181 8: one with the top bit set
 * is to be read as zero
 */
static unsigned long dnscache_ttl_of(const ns_rr *rr)
{
	unsigned long ttl = ns_rr_ttl(*rr);

	return ttl > 0x7fffffffUL ? 0 : ttl;
}

/* dnscache_ttl - seconds a reply may be kept, or -1 */
long dnscache_ttl(const unsigned char *reply, size_t len, int type,
		  unsigned max_ttl, unsigned negative_ttl)
{
	unsigned long answer_min = 0x7fffffffUL, negative = 0;
	bool has_type = false, has_soa = false;
	ns_msg msg;
	ns_rr rr;
	int rcode;

	if (len > 65535 || ns_initparse(reply, (int)len, &msg) < 0)
		return -1;
	/* A truncated reply is not the whole answer. */
	if (ns_msg_getflag(msg, ns_f_tc) || ns_msg_getflag(msg, ns_f_qr) == 0)
		return -1;
	rcode = ns_msg_getflag(msg, ns_f_rcode);
	if (rcode != ns_r_noerror && rcode != ns_r_nxdomain)
		return -1;
	for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
		if (ns_parserr(&msg, ns_s_an, i, &rr) < 0)
			return -1;
		if (dnscache_ttl_of(&rr) < answer_min)
			answer_min = dnscache_ttl_of(&rr);
		if ((int)ns_rr_type(rr) == type)
			has_type = true;
	}
	if (rcode == ns_r_noerror && has_type)
		return (long)(answer_min < max_ttl ? answer_min : max_ttl);

	/*
	 * NXDOMAIN or NODATA (RFC 2308 2.1, 2.2), perhaps at the end of a
	 * CNAME chain whose records are then in the answer section: kept
	 * for the SOA's TTL or MINIMUM, whichever is smaller (RFC 2308 5),
	 * and no longer than the chain that led there.
	 */
	for (int i = 0; i < ns_msg_count(msg, ns_s_ns); i++) {
		if (ns_parserr(&msg, ns_s_ns, i, &rr) < 0)
			return -1;
		if (ns_rr_type(rr) != ns_t_soa || has_soa)
			continue;
		/* MNAME, RNAME (at least the root, one byte each), 5 x 32 bits. */
		if (ns_rr_rdlen(rr) < 22)
			return -1;
		unsigned long minimum = ns_get32(ns_rr_rdata(rr) + ns_rr_rdlen(rr) - 4);
		if (minimum > 0x7fffffffUL)
			minimum = 0;
		negative = dnscache_ttl_of(&rr);
		if (minimum < negative)
			negative = minimum;
		has_soa = true;
	}
	if (!has_soa)
		return -1;
	if (answer_min < negative)
		negative = answer_min;
	return (long)(negative < negative_ttl ? negative : negative_ttl);
}

/*
 * dnscache_key - the name as keyed: lower case, no trailing dot; false
 * when it does not fit (no DNS name is that long, so it is not cached)
 */
static bool dnscache_key(const char *name, char *key, size_t size, size_t *len)
{
	size_t n = strlen(name);

	/* "a.b." is "a.b", but the root "." stays, as does an escaped "\." */
	if (n > 1 && name[n - 1] == '.' && name[n - 2] != '\\')
		n--;
	if (n >= size)
		return false;
	for (size_t i = 0; i < n; i++)
		key[i] = (char)tolower((unsigned char)name[i]);
	key[n] = 0;
	*len = n;
	return true;
}

/* dnscache_hash - FNV-1a over the key and the type */
static uint32_t dnscache_hash(const char *key, size_t n, int type)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)key[i]) * 16777619u;
	h = (h ^ (unsigned)(type & 0xff)) * 16777619u;
	h = (h ^ (unsigned)((type >> 8) & 0xff)) * 16777619u;
	return h;
}

/* dnscache_new - an empty cache */
struct dnscache *dnscache_new(size_t capacity, unsigned max_ttl,
			      unsigned negative_ttl)
{
	struct dnscache *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->nbuckets = DNSCACHE_MIN_BUCKETS;
	c->buckets = calloc(c->nbuckets, sizeof(c->buckets[0]));
	if (!c->buckets) {
		free(c);
		return NULL;
	}
	c->capacity = capacity ? capacity : 1;
	c->max_ttl = max_ttl;
	c->negative_ttl = negative_ttl;
	c->stats.capacity = c->capacity;
	return c;
}

/* dnscache_free - release everything */
void dnscache_free(struct dnscache *c)
{
	if (!c)
		return;
	for (struct dnscache_entry *e = c->newest, *next; e; e = next) {
		next = e->older;
		free(e);
	}
	free(c->buckets);
	free(c);
}

/* dnscache_find - the entry of a key, or NULL */
static struct dnscache_entry *dnscache_find(struct dnscache *c, const char *key,
					    uint32_t hash, int type)
{
	for (struct dnscache_entry *e = c->buckets[hash & (c->nbuckets - 1)]; e;
	     e = e->next)
		if (e->hash == hash && e->type == type && strcmp(e->name, key) == 0)
			return e;
	return NULL;
}

/* dnscache_unlink_lru - take an entry out of the LRU list */
static void dnscache_unlink_lru(struct dnscache *c, struct dnscache_entry *e)
{
	if (e->newer)
		e->newer->older = e->older;
	else
		c->newest = e->older;
	if (e->older)
		e->older->newer = e->newer;
	else
		c->oldest = e->newer;
	e->newer = e->older = NULL;
}

/* dnscache_push_lru - make an entry the most recently used */
static void dnscache_push_lru(struct dnscache *c, struct dnscache_entry *e)
{
	e->newer = NULL;
	e->older = c->newest;
	if (c->newest)
		c->newest->newer = e;
	c->newest = e;
	if (!c->oldest)
		c->oldest = e;
}

/* dnscache_remove - drop an entry from the table and the list */
static void dnscache_remove(struct dnscache *c, struct dnscache_entry *e)
{
	struct dnscache_entry **p = &c->buckets[e->hash & (c->nbuckets - 1)];

	while (*p != e)
		p = &(*p)->next;
	*p = e->next;
	dnscache_unlink_lru(c, e);
	c->stats.entries--;
	free(e);
}

/* dnscache_grow - double the buckets once entries outnumber them */
static void dnscache_grow(struct dnscache *c)
{
	size_t n = c->nbuckets * 2;
	struct dnscache_entry **b;

	if (c->stats.entries < c->nbuckets || n > c->capacity * 2)
		return;
	b = calloc(n, sizeof(b[0]));
	if (!b)
		return; /* longer chains, still correct */
	for (size_t i = 0; i < c->nbuckets; i++) {
		for (struct dnscache_entry *e = c->buckets[i], *next; e; e = next) {
			next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	}
	free(c->buckets);
	c->buckets = b;
	c->nbuckets = n;
}

/* dnscache_get - a live cached reply, or -1 */
int dnscache_get(struct dnscache *c, const char *name, int type,
		 unsigned long long now_ms, unsigned char *answer, size_t len)
{
	char key[DNSCACHE_KEY_MAX];
	struct dnscache_entry *e = NULL;
	uint32_t hash;
	size_t n;

	if (dnscache_key(name, key, sizeof(key), &n)) {
		hash = dnscache_hash(key, n, type);
		e = dnscache_find(c, key, hash, type);
	}
	if (e && now_ms >= e->expires) {
		dnscache_remove(c, e);
		e = NULL;
	}
	if (!e) {
		c->stats.misses++;
		return -1;
	}
	dnscache_unlink_lru(c, e);
	dnscache_push_lru(c, e);
	c->stats.hits++;
	if (len)
		memcpy(answer, e->reply, e->len < len ? e->len : len);
	return (int)e->len;
}

/* dnscache_put - keep a reply for its TTL */
bool dnscache_put(struct dnscache *c, const char *name, int type,
		  const unsigned char *reply, size_t len,
		  unsigned long long now_ms)
{
	char key[DNSCACHE_KEY_MAX];
	struct dnscache_entry *e;
	uint32_t hash;
	size_t n;
	long ttl;

	if (!dnscache_key(name, key, sizeof(key), &n))
		return false;
	ttl = dnscache_ttl(reply, len, type, c->max_ttl, c->negative_ttl);
	if (ttl <= 0)
		return false;
	hash = dnscache_hash(key, n, type);
	if ((e = dnscache_find(c, key, hash, type)))
		dnscache_remove(c, e);
	while (c->stats.entries >= c->capacity && c->oldest) {
		if (now_ms < c->oldest->expires)
			c->stats.evicted++;
		dnscache_remove(c, c->oldest);
	}
	e = malloc(sizeof(*e) + n + 1 + len);
	if (!e)
		return false;
	memcpy(e->name, key, n + 1);
	e->reply = (unsigned char *)e->name + n + 1;
	memcpy(e->reply, reply, len);
	e->len = len;
	e->type = type;
	e->hash = hash;
	e->expires = now_ms + (unsigned long long)ttl * 1000;
	e->next = c->buckets[hash & (c->nbuckets - 1)];
	c->buckets[hash & (c->nbuckets - 1)] = e;
	dnscache_push_lru(c, e);
	c->stats.entries++;
	c->stats.stored++;
	dnscache_grow(c);
	return true;
}

/* dnscache_stats - the counters */
void dnscache_stats(const struct dnscache *c, struct dnscache_stats *stats)
{
	*stats = c->stats;
}
