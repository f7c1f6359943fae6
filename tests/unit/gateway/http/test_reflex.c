/* test_reflex — compiling the reflex section at config load (the hook
 * reflex_install sets): a set is built for a valid section, a user pattern
 * Hyperscan refuses and an unknown detector or pool are config errors that
 * name FILE:LINE and the culprit, no section means no set (no compile), an
 * empty section compiles (for rules added through the admin API).
 * The request path itself is tested end to end (tests/e2e/70_reflex_rules). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "http/reflex.h"
#include "tests/lib/test.h"

static char dir[256];

static const char *write_yaml(const char *text)
{
	static char path[300];
	static unsigned seq;
	FILE *f;

	snprintf(path, sizeof(path), "%s/c%u.yaml", dir, seq++);
	f = fopen(path, "w");
	if (!f)
		return path;
	fputs(text, f);
	fclose(f);
	return path;
}

static void expect_error(const char *yaml, unsigned line, const char *want)
{
	char err[1024], prefix[400];
	struct config *c = NULL;
	const char *p = write_yaml(yaml);

	CHECK(config_load_file(p, &c, err, sizeof(err)) == -1 && !c);
	config_free(c);
	snprintf(prefix, sizeof(prefix), "%s:%u: ", p, line);
	CHECK_MSG(!strncmp(err, prefix, strlen(prefix)) && strstr(err, want),
		  "got \"%s\", expected \"%s%s\"", err, prefix, want);
}

int main(void)
{
	char err[1024];
	struct config *c = NULL;

	snprintf(dir, sizeof(dir), "%s/reflex-test-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir)) {
		test_skip("reflex", "cannot make a temp dir");
		return 0;
	}
	reflex_install();

	test_begin("reflex_no_section_no_compile");
	CHECK(config_load_file(write_yaml("upstream: [127.0.0.1:1]\n"), &c, err, sizeof(err)) == 0);
	CHECK(c && !c->reflex.compiled);
	config_free(c);
	test_end();

	test_begin("reflex_empty_section_compiles");
	/* rules may come later through the admin API: the db must exist */
	c = NULL;
	CHECK_MSG(config_load_file(write_yaml("upstream: [127.0.0.1:1]\nreflex: {max_scan_bytes: 64k}\n"),
				   &c, err, sizeof(err)) == 0,
		  "%s", err);
	CHECK(c && c->reflex.present && c->reflex.compiled);
	config_free(c);
	test_end();

	test_begin("reflex_compiles_at_load");
	c = NULL;
	CHECK_MSG(config_load_file(write_yaml("upstream: [127.0.0.1:1]\n"
					      "pools: {alt: {endpoints: [127.0.0.1:2]}}\n"
					      "reflex:\n"
					      "  detectors:\n"
					      "    - {name: order_id, pattern: 'ORD-[0-9]{8}'}\n"
					      "  rules:\n"
					      "    - {name: a, detect: [pii, order_id], action: block}\n"
					      "    - {name: b, detect: [any], action: redact}\n"
					      "    - {name: c, header: X-Pool, action: route, pool: alt}\n"),
				   &c, err, sizeof(err)) == 0,
		  "%s", err);
	CHECK(c && c->reflex.compiled);
	config_free(c); /* releases the compiled set through the hook */
	test_end();

	test_begin("reflex_bad_pattern_names_it");
	expect_error("upstream: [127.0.0.1:1]\n"
		     "reflex:\n"
		     "  detectors:\n"
		     "    - {name: fine, pattern: 'abc'}\n"
		     "    - {name: broken_one, pattern: 'a(b'}\n",
		     5, "broken_one");
	test_end();

	test_begin("reflex_unknown_detector_and_pool");
	expect_error("upstream: [127.0.0.1:1]\n"
		     "reflex:\n"
		     "  rules:\n"
		     "    - {name: a, detect: [email], action: block}\n"
		     "    - {name: b, detect: [emial], action: block}\n",
		     5, "unknown detector \"emial\"");
	expect_error("upstream: [127.0.0.1:1]\n"
		     "reflex:\n"
		     "  rules:\n"
		     "    - {name: a, action: route, pool: nowhere}\n",
		     4, "unknown pool \"nowhere\"");
	test_end();
	return test_exit_code();
}
