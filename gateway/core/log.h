/* log.h — the daemon's diagnostic log (not the access log).
 *
 * One line per call on stderr, written with a single write(2) so lines from
 * different threads never interleave:
 *   2026-11-21T06:00:00.123Z reflexd[1234] WARN message
 * Times are UTC wall clock. Lines longer than LOG_LINE_MAX are truncated; a
 * trailing newline in the message is dropped (the line gets exactly one).
 * Safe from any thread; nothing allocates. errno is preserved.
 */
#ifndef REFLEX_CORE_LOG_H
#define REFLEX_CORE_LOG_H

enum log_level {
	LOG_ERROR = 0,
	LOG_WARN = 1,
	LOG_INFO = 2, /* the default */
	LOG_DEBUG = 3,
};

#define LOG_LINE_MAX 2048

/* Messages above `level` are dropped. Values are clamped to 0..3. */
void log_set_level(int level);
int log_get_level(void);
/* The name printed before [pid]; default "reflexd". The string must outlive
 * all logging (a literal or argv[0]'s basename). */
void log_set_ident(const char *ident);
/* "error", "warn", "info", "debug" → 0..3; -1 for anything else. */
int log_level_from_name(const char *name);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
