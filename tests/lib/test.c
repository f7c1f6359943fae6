#include "test.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static const char *current;
static bool current_failed;
static int n_failed;

void test_begin(const char *name)
{
	current = name;
	current_failed = false;
}

void test_end(void)
{
	if (!current)
		return;
	if (current_failed)
		n_failed++;
	else
		printf("PASS %s\n", current);
	fflush(stdout);
	current = NULL;
}

void test_skip(const char *name, const char *fmt, ...)
{
	va_list ap;

	printf("SKIP %s: ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

void test_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	/* Only the first failure of a test prints the FAIL line that counts;
	 * later ones go out as detail so the log shows everything. */
	printf("%s %s: %s:%d: ", current_failed ? "  also" : "FAIL",
	       current ? current : "(no test)", file, line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (!current) {
		n_failed++;
		return;
	}
	current_failed = true;
}

bool test_failed(void)
{
	return current_failed;
}

int test_exit_code(void)
{
	test_end();
	return n_failed ? 1 : 0;
}

const char *test_guard_place(const void *data, size_t len)
{
	static char *region;
	static size_t region_len;
	long page = sysconf(_SC_PAGESIZE);
	size_t need = ((len + (size_t)page - 1) / (size_t)page + 1) * (size_t)page;

	if (region)
		munmap(region, region_len);
	region = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED) {
		perror("mmap");
		abort();
	}
	region_len = need;
	if (mprotect(region + need - (size_t)page, (size_t)page, PROT_NONE) != 0) {
		perror("mprotect");
		abort();
	}
	char *dst = region + need - (size_t)page - len;
	memcpy(dst, data, len);
	return dst;
}
