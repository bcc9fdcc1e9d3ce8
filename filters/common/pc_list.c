/*
 * pc_list.c - the option lists of the built-in filters
 *
 * See pc_list.h. Empty items (",,", a trailing comma) are skipped rather
 * than refused: an administrator who leaves a comma at the end of a
 * list means nothing by it.
 */
#include <string.h>

#include "pc_list.h"

/* pc_list_next - the next item of a comma and/or space separated list */
bool pc_list_next(const char **p, const char **item, size_t *len)
{
	if (*p == NULL)
		return false;
	*p += strspn(*p, PC_LIST_SEPARATORS);
	if (**p == '\0')
		return false;
	*item = *p;
	*len = strcspn(*p, PC_LIST_SEPARATORS);
	*p += *len;
	return true;
}

/* pc_list_count - how many items the list has */
size_t pc_list_count(const char *list)
{
	const char *item;
	size_t len, n = 0;

	while (pc_list_next(&list, &item, &len))
		n++;
	return n;
}
