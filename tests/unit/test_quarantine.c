/*
 * test_quarantine.c - a quarantined message's file: its name, mode and bytes
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "quarantine.h"
#include "spool.h"
#include "unit.h"

static char dir[] = "/tmp/portcullis-quarantine-test.XXXXXX";

/* slurp - a file of dir, whole; NULL when it is not there */
static char *slurp(const char *name, size_t *len)
{
	char path[512];
	FILE *f;
	char *buf;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (!(f = fopen(path, "rb")))
		return NULL;
	buf = malloc(1 << 20);
	*len = fread(buf, 1, (1 << 20) - 1, f);
	buf[*len] = 0;
	fclose(f);
	return buf;
}

/* entries - files in dir besides . and .. */
static int entries(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	while (d && (e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	if (d)
		closedir(d);
	return n;
}

static void test_envelope_blank_line_then_the_message(void)
{
	struct spool *sp = spool_new(dir, 1024);
	const char *rcpts[] = { "bob@example.test", "carol@example.test" };
	const char *params[] = { NULL, "NOTIFY=NEVER" };
	struct quarantine_msg m = {
		.reason = "a virus\r\nForged: header",
		.sender = "", .sender_params = "SIZE=10",
		.rcpts = rcpts, .rcpt_params = params, .nrcpts = 2,
		.content = sp,
	};
	size_t len;

	CHECK_INT_EQ(spool_write(sp, "Subject: x\r\n\r\nbody\r\n", 20), 0);
	CHECK_INT_EQ(spool_finish(sp), 0);
	char *name = quarantine_write(dir, "abc123", &m);
	CHECK_STR_EQ(name, "abc123-1");
	char *got = slurp("abc123-1", &len);
	/* the reason's line end cannot start a field of its own */
	CHECK_STR_EQ(got, "Quarantine-Reason: a virus  Forged: header\r\n"
			  "Envelope-From: <> SIZE=10\r\n"
			  "Envelope-To: <bob@example.test>\r\n"
			  "Envelope-To: <carol@example.test> NOTIFY=NEVER\r\n"
			  "\r\n"
			  "Subject: x\r\n\r\nbody\r\n");
	char path[512];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	CHECK_INT_EQ(stat(path, &st), 0);
	CHECK_INT_EQ((int)(st.st_mode & 0777), 0600);
	free(got);
	free(name);
	spool_free(sp);
}

static void test_prefix_replaces_what_skip_leaves_out(void)
{
	struct spool *sp = spool_new(dir, 1024);
	struct quarantine_msg m = {
		.reason = "r", .sender = "a@example.test", .nrcpts = 0,
		.prefix = "Subject: new\r\n", .prefix_len = 14,
		.content = sp, .skip = 12,
	};
	size_t len;

	CHECK_INT_EQ(spool_write(sp, "Subject: x\r\n\r\nbody\r\n", 20), 0);
	CHECK_INT_EQ(spool_finish(sp), 0);
	char *name = quarantine_write(dir, "abc123", &m);
	/* the first number free: the first message has -1 */
	CHECK_STR_EQ(name, "abc123-2");
	char *got = slurp(name, &len);
	CHECK_STR_EQ(got, "Quarantine-Reason: r\r\nEnvelope-From: <a@example.test>\r\n\r\n"
			  "Subject: new\r\n\r\nbody\r\n");
	/* nothing left under a temporary name */
	CHECK_INT_EQ(entries(), 2);
	free(got);
	free(name);
	spool_free(sp);
}

static void test_missing_directory_is_an_error(void)
{
	struct spool *sp = spool_new(dir, 1024);
	struct quarantine_msg m = { .reason = "r", .sender = "", .content = sp };

	CHECK_NULL(quarantine_write("/nonexistent/portcullis-quarantine", "abc", &m));
	CHECK_INT_EQ(errno, ENOENT);
	spool_free(sp);
}

int main(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		CHECK(!"mkdtemp of the quarantine directory");
		return unit_summary();
	}
	RUN(test_envelope_blank_line_then_the_message);
	RUN(test_prefix_replaces_what_skip_leaves_out);
	RUN(test_missing_directory_is_an_error);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		perror(cmd);
	return unit_summary();
}
