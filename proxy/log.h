/*
 * log.h - diagnostics of the daemon (not the decision log)
 *
 * One logger for every module: messages go to stderr (foreground, tests)
 * or to syslog (mail facility), filtered by level. Call log_open() once
 * per process; log_msg() and the log_* macros are safe to call before
 * that (they write to stderr).
 */
#ifndef PORTCULLIS_LOG_H
#define PORTCULLIS_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum log_level {
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARNING,
	LOG_LEVEL_ERROR,
};

void log_open(const char *ident, bool use_syslog, enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* log_vmsg - log_msg() with a va_list, the text after a fixed prefix */
void log_vmsg(enum log_level level, const char *prefix, const char *fmt,
	      va_list ap) __attribute__((format(printf, 3, 0)));
bool log_enabled(enum log_level level);

#define log_debug(...) \
	do { \
		if (log_enabled(LOG_LEVEL_DEBUG)) \
			log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__); \
	} while (0)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
