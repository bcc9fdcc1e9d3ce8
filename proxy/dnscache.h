/*
 * dnscache.h - the answer cache of the resolver (pure data, no locking)
 *
 * A bounded map from (name, type) to a whole DNS reply. Names are keyed
 * in lower case without a trailing dot, so "Example.COM." and
 * "example.com" are one entry. When the cache is full the least recently
 * used entry goes.
 *
 * How long a reply is kept comes from the reply itself (dnscache_ttl()):
 *
 *   - a positive answer: the smallest TTL of its answer section;
 *   - NXDOMAIN and NODATA (NOERROR without a record of the type): the
 *     SOA of the authority section, the smaller of its TTL and its
 *     MINIMUM field (RFC 2308 5); without a SOA it is not cached
 *     (RFC 2308 5: "negative responses without SOA records SHOULD NOT
 *     be cached");
 *   - SERVFAIL and every other rcode, a truncated reply, a malformed
 *     one: never cached;
 *
 * capped by max_ttl (positive) and negative_ttl (negative); a TTL of 0
 * is not cached. Times are milliseconds of a monotonic clock passed in by
 * the caller, so the unit tests move time themselves. The caller (dns.c)
 * holds the lock.
 */
#ifndef PORTCULLIS_DNSCACHE_H
#define PORTCULLIS_DNSCACHE_H

#include <stdbool.h>
#include <stddef.h>

struct dnscache;

struct dnscache_stats {
	unsigned long long hits;
	unsigned long long misses; /* expired entries included */
	unsigned long long stored;
	unsigned long long evicted; /* to make room, not expired */
	size_t entries;
	size_t capacity;
};

/*
 * dnscache_ttl - how many seconds a reply to a question of this type may
 * be kept, or -1 when it must not be cached
 */
long dnscache_ttl(const unsigned char *reply, size_t len, int type,
		  unsigned max_ttl, unsigned negative_ttl);

/* dnscache_new - an empty cache of at most capacity (> 0) entries */
struct dnscache *dnscache_new(size_t capacity, unsigned max_ttl,
			      unsigned negative_ttl);

/* dnscache_free - release the cache and every entry */
void dnscache_free(struct dnscache *cache);

/*
 * dnscache_get - the cached reply to (name, type) at time now_ms: its
 * length, of which at most len bytes were copied to answer; -1 when it
 * is not cached or has expired
 */
int dnscache_get(struct dnscache *cache, const char *name, int type,
		 unsigned long long now_ms, unsigned char *answer, size_t len);

/*
 * dnscache_put - keep a reply for as long as dnscache_ttl() says;
 * returns whether it was stored (it replaces an entry of the same key)
 */
bool dnscache_put(struct dnscache *cache, const char *name, int type,
		  const unsigned char *reply, size_t len,
		  unsigned long long now_ms);

/* dnscache_stats - counters since dnscache_new() */
void dnscache_stats(const struct dnscache *cache, struct dnscache_stats *stats);

#endif
