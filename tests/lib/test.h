/* test.h — the tiny test protocol every test binary in tests/ speaks.
 *
 * Each check group is a named test. A binary prints one line per test:
 *   PASS <name>
 *   FAIL <name>: <file>:<line>: <what>
 *   SKIP <name>: <reason>
 * and exits 0 when nothing failed, 1 otherwise. tests/run.sh counts these
 * lines across all tiers and prints the closing "N passed, N failed" line.
 * A binary that dies without printing its lines is counted as one FAIL.
 */
#ifndef REFLEX_TEST_H
#define REFLEX_TEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Start a named test; subsequent CHECKs belong to it until test_end(). */
void test_begin(const char *name);
/* Close the current test, printing PASS or FAIL. */
void test_end(void);
/* Record a skipped test with the reason (prints SKIP immediately). */
void test_skip(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Record a failure in the current test; keeps going. */
void test_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* True if the current test has failed so far (lets a test stop early). */
bool test_failed(void);
/* Exit status for main(): 0 if no test failed. */
int test_exit_code(void);

#define CHECK(cond)                                                                \
	do {                                                                       \
		if (!(cond))                                                       \
			test_fail(__FILE__, __LINE__, "check failed: %s", #cond);  \
	} while (0)

#define CHECK_MSG(cond, ...)                                                       \
	do {                                                                       \
		if (!(cond))                                                       \
			test_fail(__FILE__, __LINE__, __VA_ARGS__);                \
	} while (0)

#define CHECK_INT(a, b)                                                            \
	do {                                                                       \
		long long a_ = (long long)(a), b_ = (long long)(b);                \
		if (a_ != b_)                                                      \
			test_fail(__FILE__, __LINE__, "%s == %lld, expected %s == %lld", \
				  #a, a_, #b, b_);                                 \
	} while (0)

#define CHECK_STR(a, b)                                                            \
	do {                                                                       \
		const char *a_ = (a), *b_ = (b);                                   \
		if (!a_ || !b_ || strcmp(a_, b_) != 0)                             \
			test_fail(__FILE__, __LINE__, "%s == \"%s\", expected \"%s\"", \
				  #a, a_ ? a_ : "(null)", b_ ? b_ : "(null)");     \
	} while (0)

/* Place len bytes of data so that the last byte sits just before an
 * unreadable page (picohttpparser's habit): any over-read faults. Returns a
 * pointer valid until the next call. */
const char *test_guard_place(const void *data, size_t len);

#endif
