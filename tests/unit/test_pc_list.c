/*
 * test_pc_list.c - how the filters split their option lists
 *
 * One reader for local_domains, local_addresses, trusted_networks,
 * require and sign: commas and white space in any mix separate items,
 * empty items are skipped, and nothing is read past the end.
 */
#include <string.h>

#include "pc_list.h"
#include "unit.h"

/* joined - the items of list joined with '|' */
static const char *joined(const char *list)
{
	static char out[256];
	const char *p = list, *item;
	size_t len, o = 0;

	out[0] = '\0';
	while (pc_list_next(&p, &item, &len)) {
		if (o + len + 2 >= sizeof(out))
			return "(too long)";
		if (o > 0)
			out[o++] = '|';
		memcpy(out + o, item, len);
		o += len;
		out[o] = '\0';
	}
	return out;
}

static void test_commas_and_white_space_separate_items(void)
{
	CHECK_STR_EQ(joined("a.org, .b.org c.org\td.org"),
		     "a.org|.b.org|c.org|d.org");
	CHECK_STR_EQ(joined("a,b"), "a|b");
	CHECK_STR_EQ(joined("a ,\t, b\r\n"), "a|b");
	CHECK_STR_EQ(joined("one"), "one");
}

static void test_empty_lists_and_items_give_nothing(void)
{
	const char *p = NULL, *item;
	size_t len;

	CHECK_STR_EQ(joined(""), "");
	CHECK_STR_EQ(joined(" ,, \t"), "");
	CHECK_STR_EQ(joined(",a,,b,"), "a|b");
	CHECK(!pc_list_next(&p, &item, &len));
	CHECK_UINT_EQ(pc_list_count(""), 0);
	CHECK_UINT_EQ(pc_list_count(NULL), 0);
	CHECK_UINT_EQ(pc_list_count("a, b c,,d"), 4);
}

int main(void)
{
	RUN(test_commas_and_white_space_separate_items);
	RUN(test_empty_lists_and_items_give_nothing);
	return unit_summary();
}
