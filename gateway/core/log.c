/* log.c — see log.h. */
#include "core/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Read on every call from every thread; relaxed atomics are enough because a
 * level change need not be ordered with anything else. */
static int log_level = LOG_INFO;
static const char *log_ident = "reflexd";

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void log_set_level(int level)
{
	if (level < LOG_ERROR)
		level = LOG_ERROR;
	if (level > LOG_DEBUG)
		level = LOG_DEBUG;
	__atomic_store_n(&log_level, level, __ATOMIC_RELAXED);
}

int log_get_level(void)
{
	return __atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

void log_set_ident(const char *ident)
{
	__atomic_store_n(&log_ident, ident, __ATOMIC_RELAXED);
}

int log_level_from_name(const char *name)
{
	for (int i = 0; i <= LOG_DEBUG; i++)
		if (strcasecmp(name, level_names[i]) == 0)
			return i;
	if (strcasecmp(name, "warning") == 0)
		return LOG_WARN;
	return -1;
}

void log_msg(int level, const char *fmt, ...)
{
	char buf[LOG_LINE_MAX];
	struct timespec ts;
	struct tm tm;
	size_t n;
	int saved_errno = errno, r;
	va_list ap;

	if (level > log_get_level())
		return;
	if (level < LOG_ERROR)
		level = LOG_ERROR;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	r = snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%d] %s ",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		     ts.tv_nsec / 1000000, __atomic_load_n(&log_ident, __ATOMIC_RELAXED),
		     (int)getpid(), level_names[level]);
	n = r < 0 ? 0 : (size_t)r;
	if (n < sizeof(buf) - 1) {
		errno = saved_errno; /* so %m names the caller's error */
		va_start(ap, fmt);
		r = vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
		va_end(ap);
		if (r > 0)
			n += (size_t)r;
	}
	if (n > sizeof(buf) - 1)
		n = sizeof(buf) - 1; /* truncated: keep room for the newline */
	while (n > 0 && buf[n - 1] == '\n')
		n--;
	buf[n++] = '\n';
	/* Best effort: a full or closed stderr must not take the daemon down. */
	if (write(STDERR_FILENO, buf, n) < 0) {
	}
	errno = saved_errno;
}
