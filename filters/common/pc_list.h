/*
 * pc_list.h - the option lists of the built-in filters
 *
 * Filter options that hold several values ("local_domains = a.org,
 * .b.org", "trusted_networks = 10.0.0.0/8 ::1/128", "require = ...")
 * separate them with commas and/or white space, in any mix. One reader
 * for all of them, so every filter splits a list the same way:
 *
 *	const char *p = list, *item;
 *	size_t len;
 *
 *	while (pc_list_next(&p, &item, &len))
 *		use(item, len);
 *
 * Pure code: no allocation, no globals, reentrant.
 */
#ifndef PC_LIST_H
#define PC_LIST_H

#include <stdbool.h>
#include <stddef.h>

/*
 * The daemon exports its own symbols to filters (--export-dynamic): keep
 * these inside each filter's shared object, so that a daemon function of
 * the same name is never called in their place.
 */
#pragma GCC visibility push(hidden)

/* What separates the items of a list. */
#define PC_LIST_SEPARATORS ", \t\r\n"

/*
 * pc_list_next - the next item of the list at *p: its start in *item,
 * its length in *len (never 0), and *p moved past it. Returns false at
 * the end of the list (or when *p is NULL).
 */
bool pc_list_next(const char **p, const char **item, size_t *len);

/* pc_list_count - how many items the list has */
size_t pc_list_count(const char *list);

#pragma GCC visibility pop

#endif
