/*
 * test_spool.c - the message spool: memory, then a private file
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool.h"
#include "unit.h"

static char spool_dir[] = "/tmp/portcullis-spool-test.XXXXXX";

/* count_files - entries in the spool directory besides . and .. */
static int count_files(void)
{
	DIR *d = opendir(spool_dir);
	struct dirent *e;
	int n = 0;

	while (d && (e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	if (d)
		closedir(d);
	return n;
}

/* read_all - the whole content back */
static char *read_all(struct spool *spool, size_t *len)
{
	unsigned long long size = spool_size(spool);
	char *buf = malloc(size + 1);
	unsigned long long off = 0;
	ssize_t n;

	while ((n = spool_read(spool, off, buf + off, 7777)) > 0)
		off += (unsigned long long)n;
	*len = (size_t)off;
	return buf;
}

static void test_small_message_stays_in_memory(void)
{
	struct spool *spool = spool_new(spool_dir, 1024);
	size_t len;

	CHECK_INT_EQ(spool_write(spool, "Subject: hi\r\n\r\nbody\r\n", 21), 0);
	CHECK_INT_EQ(spool_finish(spool), 0);
	CHECK(!spool_on_disk(spool));
	CHECK_UINT_EQ(spool_size(spool), 21);
	char *got = read_all(spool, &len);
	CHECK_MEM_EQ(got, len, "Subject: hi\r\n\r\nbody\r\n", 21);
	free(got);
	spool_free(spool);
}

static void test_large_message_moves_to_disk_intact(void)
{
	struct spool *spool = spool_new(spool_dir, 4096);
	size_t total = 3 * 1024 * 1024, len;
	char *want = malloc(total);

	for (size_t i = 0; i < total; i++)
		want[i] = (char)('a' + (i * 7 + i / 1000) % 26);
	/* Written in uneven pieces, as DATA arrives. */
	for (size_t off = 0; off < total;) {
		size_t n = 1 + (off * 31) % 70000;
		if (n > total - off)
			n = total - off;
		CHECK_INT_EQ(spool_write(spool, want + off, n), 0);
		off += n;
	}
	CHECK_INT_EQ(spool_finish(spool), 0);
	CHECK(spool_on_disk(spool));
	char *got = read_all(spool, &len);
	CHECK_UINT_EQ(len, total);
	CHECK(memcmp(got, want, total) == 0);
	free(got);
	free(want);
	spool_free(spool);
}

static void test_spool_file_never_visible_in_directory(void)
{
	struct spool *spool = spool_new(spool_dir, 16);
	char block[4096];

	memset(block, 'x', sizeof(block));
	CHECK_INT_EQ(spool_write(spool, block, sizeof(block)), 0);
	CHECK(spool_on_disk(spool));
	CHECK_INT_EQ(count_files(), 0);
	spool_free(spool);
	CHECK_INT_EQ(count_files(), 0);
}

static void test_missing_spool_directory_is_a_sticky_error(void)
{
	struct spool *spool = spool_new("/nonexistent/portcullis/spool", 8);

	CHECK_INT_EQ(spool_write(spool, "0123456789", 10), -1);
	CHECK(spool_errno(spool) != 0);
	CHECK_INT_EQ(spool_write(spool, "x", 1), -1);
	CHECK_INT_EQ(spool_finish(spool), -1);
	spool_free(spool);
}

static void test_full_disk_is_reported_not_crashed(void)
{
	/*
	 * A file size limit makes write(2) fail the way a full disk does,
	 * without needing one: EFBIG instead of ENOSPC, same path.
	 */
	struct spool *spool = spool_new(spool_dir, 1024);
	struct rlimit old, small = { 65536, 0 };
	char block[8192];
	int rc = 0;

	memset(block, 'y', sizeof(block));
	getrlimit(RLIMIT_FSIZE, &old);
	small.rlim_max = old.rlim_max;
	signal(SIGXFSZ, SIG_IGN);
	setrlimit(RLIMIT_FSIZE, &small);
	for (int i = 0; i < 128 && rc == 0; i++)
		rc = spool_write(spool, block, sizeof(block));
	if (rc == 0)
		rc = spool_finish(spool);
	setrlimit(RLIMIT_FSIZE, &old);
	CHECK_INT_EQ(rc, -1);
	CHECK_INT_EQ(spool_errno(spool), EFBIG);
	CHECK_INT_EQ(spool_write(spool, "z", 1), -1);
	spool_free(spool);
}

/* text_of - the content after writing the pieces with spool_write_text() */
static char *text_of(const char *const *pieces, size_t n, size_t *len)
{
	struct spool *spool = spool_new(spool_dir, 64);
	char *got;

	for (size_t i = 0; i < n; i++)
		CHECK_INT_EQ(spool_write_text(spool, pieces[i], strlen(pieces[i])), 0);
	CHECK_INT_EQ(spool_finish(spool), 0);
	got = read_all(spool, len);
	got[*len] = 0;
	spool_free(spool);
	return got;
}

static void test_text_line_ends_become_crlf(void)
{
	/* A CRLF split between pieces stays one; bare LF, bare CR and a CR
	 * at the very end each become one CRLF. */
	const char *pieces[] = { "a\r", "\nb\nc\r", "d\r\r\n.\n", "\r" };
	size_t len;
	char *got = text_of(pieces, 4, &len);

	CHECK_STR_EQ(got, "a\r\nb\r\nc\r\nd\r\n\r\n.\r\n\r\n");
	free(got);
}

static void test_text_large_body_moves_to_disk_intact(void)
{
	/* 200 kB of LF-only lines through a 64-byte memory limit. */
	struct spool *spool = spool_new(spool_dir, 64);
	unsigned long long want = 0;
	size_t len;
	char line[100];

	for (int i = 0; i < 2000; i++) {
		snprintf(line, sizeof(line), "%097d\n", i);
		CHECK_INT_EQ(spool_write_text(spool, line, strlen(line)), 0);
		want += strlen(line) + 1;
	}
	CHECK_INT_EQ(spool_finish(spool), 0);
	CHECK(spool_on_disk(spool));
	CHECK_UINT_EQ(spool_size(spool), want);
	char *got = read_all(spool, &len);
	CHECK_UINT_EQ(len, want);
	CHECK(memcmp(got + 97, "\r\n0", 3) == 0);
	CHECK(memcmp(got + len - 6, "1999\r\n", 6) == 0);
	free(got);
	spool_free(spool);
}

int main(void)
{
	if (!mkdtemp(spool_dir)) {
		perror("mkdtemp");
		/* no test can run without it: one failure, counted */
		CHECK(!"mkdtemp of the spool directory");
		return unit_summary();
	}
	RUN(test_small_message_stays_in_memory);
	RUN(test_large_message_moves_to_disk_intact);
	RUN(test_spool_file_never_visible_in_directory);
	RUN(test_missing_spool_directory_is_a_sticky_error);
	RUN(test_full_disk_is_reported_not_crashed);
	RUN(test_text_line_ends_become_crlf);
	RUN(test_text_large_body_moves_to_disk_intact);
	rmdir(spool_dir);
	return unit_summary();
}
