/* test_log.c — the diagnostic log: line format, levels, truncation, and
 * whole lines from concurrent threads. stderr is pointed at a temp file. */
#include "core/log.h"
#include "tests/lib/test.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <stdlib.h>
#include <unistd.h>

static char path[256];
static int saved_stderr = -1;

static int capture_begin(void)
{
	int fd;

	snprintf(path, sizeof(path), "%s/reflex-test-log-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	fd = mkstemp(path);
	if (fd < 0)
		return -1;
	saved_stderr = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
	return 0;
}

/* Restore stderr; returns the captured text (malloc'd). */
static char *capture_end(void)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = calloc(1, (size_t)n + 1);
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	unlink(path);
	return buf;
}

static unsigned count_lines(const char *s)
{
	unsigned n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

#define NTHREADS 4
#define PER_THREAD 300

static void *writer(void *arg)
{
	long id = (long)arg;

	for (int i = 0; i < PER_THREAD; i++)
		log_info("thread %ld line %d %s", id, i,
			 "padding-padding-padding-padding-padding-padding-padding-padding");
	return NULL;
}

int main(void)
{
	regex_t re;
	char *out, *line, *save;
	char big[3 * LOG_LINE_MAX];
	unsigned bad = 0, n = 0;
	int rc;

	if (capture_begin()) {
		test_skip("log", "cannot create a temp file");
		return 0;
	}
	log_set_level(LOG_INFO);
	log_error("disk %s", "full");
	log_warn("two\n");
	log_info("three %d", 3);
	log_debug("not shown");
	log_set_level(LOG_DEBUG);
	log_debug("shown");
	log_set_level(LOG_ERROR);
	log_warn("not shown either");
	log_set_level(99); /* clamped to debug */
	errno = ENOENT;
	log_debug("errno kept: %m");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	log_info("%s", big);
	log_set_ident("other");
	log_info("ident");
	log_set_ident("reflexd");
	out = capture_end();

	test_begin("log_format_and_levels");
	CHECK(out != NULL);
	if (out) {
		CHECK_INT(count_lines(out), 7);
		rc = regcomp(&re,
			     "^20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9]\\."
			     "[0-9]{3}Z [a-z]+\\[[0-9]+\\] (ERROR|WARN|INFO|DEBUG) .*$",
			     REG_EXTENDED | REG_NOSUB);
		CHECK(rc == 0);
		for (line = strtok_r(out, "\n", &save); line && !rc;
		     line = strtok_r(NULL, "\n", &save)) {
			char want[64];

			if (regexec(&re, line, 0, NULL, 0) != 0)
				test_fail(__FILE__, __LINE__, "line %u malformed: %.80s", n, line);
			snprintf(want, sizeof(want), "reflexd[%d] ", (int)getpid());
			switch (n) {
			case 0:
				CHECK(strstr(line, want) && strstr(line, " ERROR disk full"));
				break;
			case 1:
				CHECK(strstr(line, " WARN two") && !strstr(line, "two\n"));
				break;
			case 2:
				CHECK(strstr(line, " INFO three 3"));
				break;
			case 3:
				CHECK(strstr(line, " DEBUG shown"));
				break;
			case 4:
				CHECK(strstr(line, "errno kept: No such file or directory"));
				break;
			case 5:
				/* truncated to the line limit, newline included */
				CHECK_INT(strlen(line) + 1, LOG_LINE_MAX);
				break;
			case 6:
				snprintf(want, sizeof(want), "other[%d] INFO ident", (int)getpid());
				CHECK(strstr(line, want));
				break;
			}
			n++;
		}
		if (!rc)
			regfree(&re);
	}
	free(out);
	test_end();

	test_begin("log_level_names");
	CHECK_INT(log_level_from_name("error"), LOG_ERROR);
	CHECK_INT(log_level_from_name("WARN"), LOG_WARN);
	CHECK_INT(log_level_from_name("warning"), LOG_WARN);
	CHECK_INT(log_level_from_name("info"), LOG_INFO);
	CHECK_INT(log_level_from_name("debug"), LOG_DEBUG);
	CHECK_INT(log_level_from_name("loud"), -1);
	log_set_level(-5);
	CHECK_INT(log_get_level(), LOG_ERROR);
	test_end();

	/* Lines written concurrently arrive whole (one write(2) each). */
	test_begin("log_threads_whole_lines");
	log_set_level(LOG_INFO);
	if (capture_begin()) {
		test_fail(__FILE__, __LINE__, "cannot create a temp file");
	} else {
		pthread_t th[NTHREADS];
		unsigned seen[NTHREADS] = {0};

		for (long i = 0; i < NTHREADS; i++)
			pthread_create(&th[i], NULL, writer, (void *)i);
		for (int i = 0; i < NTHREADS; i++)
			pthread_join(th[i], NULL);
		out = capture_end();
		CHECK(out != NULL);
		n = 0;
		for (line = out ? strtok_r(out, "\n", &save) : NULL; line;
		     line = strtok_r(NULL, "\n", &save)) {
			long id;
			int i;
			const char *m = strstr(line, " INFO thread ");

			if (!m || sscanf(m, " INFO thread %ld line %d", &id, &i) != 2 || id < 0 ||
			    id >= NTHREADS || (int)seen[id] != i ||
			    !strstr(m, "padding-padding-padding-padding-padding-padding-padding-"
				       "padding") ||
			    strstr(m + 1, " INFO "))
				bad++;
			else
				seen[id]++;
			n++;
		}
		CHECK_INT(n, NTHREADS * PER_THREAD);
		CHECK_INT(bad, 0);
		free(out);
	}
	test_end();
	return test_exit_code();
}
