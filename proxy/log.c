/*
 * log.c - diagnostics to stderr or syslog
 *
 * Each line carries the process id, so the lines of the master and of
 * each worker can be told apart on a shared stderr. Write errors are
 * ignored: a full disk must not stop mail.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static bool log_syslog;
static enum log_level log_threshold = LOG_LEVEL_INFO;

static const char *const log_names[] = { "debug", "info", "warning", "error" };
static const int log_priorities[] = { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR };

/* log_open - choose the destination and the lowest level written */
void log_open(const char *ident, bool use_syslog, enum log_level level)
{
	if (log_syslog)
		closelog();
	log_syslog = use_syslog;
	log_threshold = level;
	if (use_syslog)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

/* log_enabled - whether a message of this level would be written */
bool log_enabled(enum log_level level)
{
	return level >= log_threshold;
}

/* log_msg - write one diagnostic line */
void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, "", fmt, ap);
	va_end(ap);
}

/* log_vmsg - write one diagnostic line: prefix, then fmt formatted */
void log_vmsg(enum log_level level, const char *prefix, const char *fmt,
	      va_list ap)
{
	char text[2048];
	size_t n;

	if (!log_enabled(level))
		return;
	n = (size_t)snprintf(text, sizeof(text), "%s", prefix);
	if (n < sizeof(text))
		vsnprintf(text + n, sizeof(text) - n, fmt, ap);
	if (log_syslog) {
		syslog(log_priorities[level], "%s: %s", log_names[level], text);
		return;
	}

	char line[2200];
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int len = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ portcullis[%d]: %s: %s\n",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, (int)getpid(),
		     log_names[level], text);
	if (len > (int)sizeof(line) - 1)
		len = sizeof(line) - 1;
	/* One write per line, so concurrent workers do not interleave. */
	if (write(STDERR_FILENO, line, (size_t)len) < 0)
		return;
}
