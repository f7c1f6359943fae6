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
#include "http/detect.h"
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

/* ---- detect_scan_mask: a masked scan finds exactly the full scan's matches
 * of the wanted detectors (block, and streamed in two halves) ---------------- */

struct mlist {
	struct detect_match m[256];
	unsigned n;
	uint64_t want; /* for the filtering collector */
};

static int collect(void *arg, const struct detect_match *m)
{
	struct mlist *l = arg;
	if (m->id < 64 && !(l->want >> m->id & 1))
		return 0;
	if (l->n < 256)
		l->m[l->n++] = *m;
	return 0;
}

static int cmp_m(const void *a, const void *b)
{
	const struct detect_match *x = a, *y = b;
	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return x->end < y->end ? -1 : x->end > y->end;
}

static bool same(struct mlist *a, struct mlist *b)
{
	qsort(a->m, a->n, sizeof(a->m[0]), cmp_m);
	qsort(b->m, b->n, sizeof(b->m[0]), cmp_m);
	if (a->n != b->n)
		return false;
	for (unsigned i = 0; i < a->n; i++)
		if (a->m[i].id != b->m[i].id || a->m[i].start != b->m[i].start ||
		    a->m[i].end != b->m[i].end)
			return false;
	return true;
}

static size_t unescape(char *s)
{
	size_t o = 0;
	for (size_t i = 0; s[i]; i++) {
		if (s[i] == '\\' && s[i + 1]) {
			i++;
			s[o++] = s[i] == 'n' ? '\n' : s[i] == 't' ? '\t' : s[i];
		} else {
			s[o++] = s[i];
		}
	}
	s[o] = 0;
	return o;
}

static void test_scan_mask(void)
{
	static const char *const files[] = {"card", "email", "iban",	"injection",
					    "ip",   "phone", "secrets", "ssn"};
	struct detect_db *db = NULL;
	struct detect_scratch *s = NULL;
	char err[256];
	unsigned lines = 0, bad = 0;

	test_begin("detect_scan_mask_equivalence");
	CHECK(detect_db_build(NULL, &db, err, sizeof(err)) == 0);
	CHECK(db && detect_scratch_new(db, &s) == 0);
	unsigned n = db ? detect_count(db) : 0;
	/* one detector at a time, a family at a time, and a mixed set */
	uint64_t masks[40];
	unsigned nm = 0;
	for (unsigned id = 0; id < n && nm < 30; id++)
		masks[nm++] = 1ULL << id;
	masks[nm++] = 1ULL << DETECT_EMAIL | 1ULL << DETECT_CARD | 1ULL << DETECT_SSN;
	masks[nm++] = 1ULL << DETECT_IPV4 | 1ULL << DETECT_PHONE;
	masks[nm++] = 1ULL << DETECT_INJ_OVERRIDE | 1ULL << DETECT_INJ_EXTRACT |
		      1ULL << DETECT_INJ_ROLE | 1ULL << DETECT_INJ_DELIMITER |
		      1ULL << DETECT_INJ_ENCODED;
	for (size_t f = 0; db && s && f < sizeof(files) / sizeof(files[0]); f++) {
		char path[256], line[8192];
		snprintf(path, sizeof(path), "tests/data/detect/%s.txt", files[f]);
		FILE *fp = fopen(path, "r");
		if (!fp) {
			test_skip("detect_scan_mask_equivalence",
				  "no corpus at %s (run from the repo root)", path);
			break;
		}
		while (fgets(line, sizeof(line), fp)) {
			char *tab = strchr(line, '\t');
			if (line[0] == '#' || !tab)
				continue;
			char *text = tab + 1;
			text[strcspn(text, "\n")] = 0;
			size_t len = unescape(text);
			lines++;
			for (unsigned k = 0; k < nm; k++) {
				struct mlist full = {.want = masks[k]}, part = {.want = ~0ULL},
					     st = {.want = ~0ULL};
				detect_scan(db, s, text, len, collect, &full);
				detect_scan_mask(db, s, text, len, masks[k], collect, &part);
				struct detect_stream *ds = NULL;
				if (detect_stream_open(db, collect, &st, &ds) == 0) {
					detect_stream_set_mask(ds, masks[k]);
					detect_stream_feed(ds, s, text, len / 2);
					detect_stream_feed(ds, s, text + len / 2, len - len / 2);
					detect_stream_finish(ds, s);
				}
				struct mlist full2 = full;
				if (!same(&full, &part) || !same(&full2, &st)) {
					if (bad++ < 5)
						test_fail(__FILE__, __LINE__,
							  "mask %#llx differs on %s: %s",
							  (unsigned long long)masks[k], files[f],
							  text);
				}
			}
		}
		fclose(fp);
	}
	CHECK_MSG(lines > 400, "only %u corpus lines", lines);
	detect_scratch_free(s);
	detect_db_free(db);
	test_end();
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
	CHECK_MSG(config_load_file(
			  write_yaml("upstream: [127.0.0.1:1]\nreflex: {max_scan_bytes: 64k}\n"),
			  &c, err, sizeof(err)) == 0,
		  "%s", err);
	CHECK(c && c->reflex.present && c->reflex.compiled);
	config_free(c);
	test_end();

	test_begin("reflex_compiles_at_load");
	c = NULL;
	CHECK_MSG(config_load_file(
			  write_yaml("upstream: [127.0.0.1:1]\n"
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
	test_scan_mask();
	return test_exit_code();
}
