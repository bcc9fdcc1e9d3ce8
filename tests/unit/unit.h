/*
 * unit.h - a tiny header-only harness for the C unit tests
 *
 * Each test is a static void function of no arguments that makes checks;
 * main() runs them with RUN() and ends with unit_summary():
 *
 *	static void test_adds_small_numbers(void)
 *	{
 *		CHECK_INT_EQ(add(2, 2), 4);
 *	}
 *
 *	int main(void)
 *	{
 *		RUN(test_adds_small_numbers);
 *		return unit_summary();
 *	}
 *
 * A failed check prints "file:line: test: what failed" on stderr and
 * marks the test failed; the test goes on, so one run shows every broken
 * check. A failed check outside any test (in main) counts as one failed
 * test. unit_summary() prints the last line, exactly "N passed, N
 * failed" (counting tests, not checks), and returns the exit status:
 * 0 when nothing failed, 1 otherwise, and 1 when no test ran. A program
 * that exits before unit_summary() (a crash, a setup that failed) prints
 * no such line: tests/run counts it as one failure.
 *
 * CHECK(cond)                   cond is true
 * CHECK_INT_EQ(a, b)            integers, compared as long long
 * CHECK_UINT_EQ(a, b)           unsigned integers (sizes, counts)
 * CHECK_STR_EQ(a, b)            NUL-terminated strings; NULL equals NULL
 * CHECK_MEM_EQ(a, alen, b, blen) byte buffers, printed escaped on failure
 * CHECK_NULL(p) / CHECK_NOT_NULL(p)
 */
#ifndef PORTCULLIS_UNIT_H
#define PORTCULLIS_UNIT_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct unit_state {
	const char *test; /* the test running now */
	bool failed;	  /* whether it has failed a check */
	int passed;
	int nfailed;
};

static struct unit_state unit_state __attribute__((unused));

/* unit_fail_begin - start a failure report; the caller adds the details */
static inline void unit_fail_begin(const char *file, int line)
{
	/* A check outside RUN (in main) has no test to mark: it is one. */
	if (unit_state.test == NULL)
		unit_state.nfailed++;
	unit_state.failed = true;
	fprintf(stderr, "%s:%d: %s: ", file, line,
		unit_state.test ? unit_state.test : "(no test)");
}

/* unit_print_mem - buf[0..len) with C escapes, so CR/LF/NUL show up */
static inline void unit_print_mem(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t i;

	if (p == NULL) {
		fputs("NULL", stderr);
		return;
	}
	fputc('"', stderr);
	for (i = 0; i < len; i++) {
		if (p[i] == '\r')
			fputs("\\r", stderr);
		else if (p[i] == '\n')
			fputs("\\n", stderr);
		else if (p[i] == '"' || p[i] == '\\')
			fprintf(stderr, "\\%c", p[i]);
		else if (p[i] < 0x20 || p[i] >= 0x7f)
			fprintf(stderr, "\\x%02x", p[i]);
		else
			fputc(p[i], stderr);
	}
	fputc('"', stderr);
}

/* unit_run - run one test function and count it */
static inline void unit_run(void (*fn)(void), const char *name)
{
	unit_state.test = name;
	unit_state.failed = false;
	fn();
	if (unit_state.failed)
		unit_state.nfailed++;
	else
		unit_state.passed++;
	unit_state.test = NULL;
}

/*
 * unit_summary - print "N passed, N failed"; the exit status for main()
 *
 * A program that ran no test at all fails: a main() that lost its RUN
 * lines must not pass as "0 passed, 0 failed".
 */
static inline int unit_summary(void)
{
	if (unit_state.passed + unit_state.nfailed == 0) {
		fputs("unit: no test ran\n", stderr);
		unit_state.nfailed = 1;
	}
	printf("%d passed, %d failed\n", unit_state.passed, unit_state.nfailed);
	fflush(stdout);
	return unit_state.nfailed == 0 ? 0 : 1;
}

#define RUN(fn) unit_run((fn), #fn)

#define CHECK(cond)                                                      \
	do {                                                             \
		if (!(cond)) {                                           \
			unit_fail_begin(__FILE__, __LINE__);             \
			fprintf(stderr, "CHECK(%s) failed\n", #cond);    \
		}                                                        \
	} while (0)

#define CHECK_INT_EQ(a, b)                                               \
	do {                                                             \
		long long unit_a_ = (long long)(a);                      \
		long long unit_b_ = (long long)(b);                      \
		if (unit_a_ != unit_b_) {                                \
			unit_fail_begin(__FILE__, __LINE__);             \
			fprintf(stderr, "%s == %s: %lld != %lld\n", #a,  \
				#b, unit_a_, unit_b_);                   \
		}                                                        \
	} while (0)

#define CHECK_UINT_EQ(a, b)                                              \
	do {                                                             \
		unsigned long long unit_a_ = (unsigned long long)(a);    \
		unsigned long long unit_b_ = (unsigned long long)(b);    \
		if (unit_a_ != unit_b_) {                                \
			unit_fail_begin(__FILE__, __LINE__);             \
			fprintf(stderr, "%s == %s: %llu != %llu\n", #a,  \
				#b, unit_a_, unit_b_);                   \
		}                                                        \
	} while (0)

#define CHECK_STR_EQ(a, b)                                               \
	do {                                                             \
		const char *unit_a_ = (a);                               \
		const char *unit_b_ = (b);                               \
		if (!(unit_a_ == NULL && unit_b_ == NULL) &&             \
		    (unit_a_ == NULL || unit_b_ == NULL ||               \
		     strcmp(unit_a_, unit_b_) != 0)) {                   \
			unit_fail_begin(__FILE__, __LINE__);             \
			fprintf(stderr, "%s == %s: ", #a, #b);           \
			unit_print_mem(unit_a_,                          \
				       unit_a_ ? strlen(unit_a_) : 0);   \
			fputs(" != ", stderr);                           \
			unit_print_mem(unit_b_,                          \
				       unit_b_ ? strlen(unit_b_) : 0);   \
			fputc('\n', stderr);                             \
		}                                                        \
	} while (0)

#define CHECK_MEM_EQ(a, alen, b, blen)                                   \
	do {                                                             \
		const void *unit_a_ = (a);                               \
		const void *unit_b_ = (b);                               \
		size_t unit_al_ = (alen), unit_bl_ = (blen);             \
		if (unit_al_ != unit_bl_ ||                              \
		    (unit_al_ > 0 &&                                     \
		     memcmp(unit_a_, unit_b_, unit_al_) != 0)) {         \
			unit_fail_begin(__FILE__, __LINE__);             \
			fprintf(stderr, "%s == %s: ", #a, #b);           \
			unit_print_mem(unit_a_, unit_al_);               \
			fputs(" != ", stderr);                           \
			unit_print_mem(unit_b_, unit_bl_);               \
			fputc('\n', stderr);                             \
		}                                                        \
	} while (0)

#define CHECK_NULL(p)                                                    \
	do {                                                             \
		if ((p) != NULL) {                                       \
			unit_fail_begin(__FILE__, __LINE__);             \
			fprintf(stderr, "%s is not NULL\n", #p);         \
		}                                                        \
	} while (0)

#define CHECK_NOT_NULL(p)                                                \
	do {                                                             \
		if ((p) == NULL) {                                       \
			unit_fail_begin(__FILE__, __LINE__);             \
			fprintf(stderr, "%s is NULL\n", #p);             \
		}                                                        \
	} while (0)

#endif
