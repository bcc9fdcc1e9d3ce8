/*
 * decision.c - write decision records
 *
 * A failed write is reported in the diagnostics once per burst and the
 * record dropped: the decision log must never stop mail.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "decision.h"
#include "log.h"

static char *decision_path;	/* NULL for stdout and syslog */
static int decision_fd = -1;
static int decision_syslog;
static int decision_failing;

/* decision_open - choose the destination */
int decision_open(const char *target)
{
	decision_close();
	if (strcmp(target, "syslog") == 0) {
		decision_syslog = 1;
		return 0;
	}
	if (strcmp(target, "stdout") == 0) {
		decision_fd = STDOUT_FILENO;
		return 0;
	}
	decision_fd = open(target, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (decision_fd < 0)
		return -1;
	decision_path = strdup(target);
	return 0;
}

/* decision_reopen - open the file again by its name */
void decision_reopen(void)
{
	int fd;

	if (!decision_path)
		return;
	fd = open(decision_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0) {
		log_error("cannot reopen decision log %s: %s", decision_path,
			  strerror(errno));
		return;
	}
	close(decision_fd);
	decision_fd = fd;
}

/* decision_close - close the destination */
void decision_close(void)
{
	if (decision_fd > STDERR_FILENO)
		close(decision_fd);
	decision_fd = -1;
	decision_syslog = 0;
	free(decision_path);
	decision_path = NULL;
}

/* decision_time - now as RFC 3339 UTC with microseconds */
static void decision_time(char *buf, size_t cap)
{
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);
}

/* decision_write - time-stamp and write one record */
void decision_write(json_t *record)
{
	char now[64];
	char *text;
	size_t len;

	decision_time(now, sizeof(now));
	/* The time goes first, where a reader of the raw file looks for it. */
	json_t *ordered = json_object();
	json_object_set_new(ordered, "time", json_string(now));
	json_object_update(ordered, record);
	json_decref(record);
	text = json_dumps(ordered, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
	json_decref(ordered);
	if (!text)
		return;
	if (decision_syslog) {
		syslog(LOG_MAIL | LOG_INFO, "%s", text);
		free(text);
		return;
	}
	len = strlen(text);
	text[len] = '\n';
	ssize_t n = decision_fd >= 0 ? write(decision_fd, text, len + 1) : -1;
	if (n != (ssize_t)len + 1) {
		if (!decision_failing)
			log_error("cannot write the decision log: %s",
				  n < 0 ? strerror(errno) : "short write");
		decision_failing = 1;
	} else {
		decision_failing = 0;
	}
	free(text);
}
