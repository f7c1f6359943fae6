/* test_accesslog — the JSON line format (valid JSON for hostile strings),
 * two producers pushing concurrently, drop counting when a ring is full,
 * and reopen after a rename (logrotate). */
#include "core/accesslog.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control/json.h"
#include "tests/lib/test.h"

static void fill(struct access_record *r, const char *path)
{
	memset(r, 0, sizeof(*r));
	r->time_ns = 1795000000123456789LL; /* 2026-11-18T... */
	strcpy(r->id, "0123456789abcdef0123456789abcdef");
	strcpy(r->client, "127.0.0.1");
	strcpy(r->method, "GET");
	strcpy(r->host, "example.com");
	snprintf(r->path, sizeof(r->path), "%s", path);
	strcpy(r->upstream, "127.0.0.1:9001");
	strcpy(r->pool, "default");
	r->status = 200;
	r->bytes_in = 78;
	r->bytes_out = 1234;
	for (int i = 0; i < STAGE_MAX; i++)
		r->t_us[i] = ACCESS_NO_TIME;
	r->t_us[STAGE_PARSE] = 3;
	r->t_us[STAGE_TOTAL] = 250;
}

static struct json *parse_line(const char *line, size_t n)
{
	char err[256];
	struct json *j = json_parse(line, n, err, sizeof(err));

	CHECK_MSG(j != NULL, "invalid JSON (%s): %.*s", err, (int)n, line);
	return j;
}

static void test_format_fields(void)
{
	struct access_record r;
	char out[8192];
	size_t n;

	test_begin("format_fields");
	fill(&r, "/v1/x");
	r.retries = 1;
	n = accesslog_format(&r, out, sizeof(out));
	CHECK(n > 0 && out[n - 1] == '\n');
	CHECK(memchr(out, '\n', n) == out + n - 1);
	struct json *j = parse_line(out, n - 1);
	if (j) {
		const char *t = json_str(json_get(j, "time"), "");
		CHECK_MSG(strlen(t) == 24 && t[10] == 'T' && t[19] == '.' && t[23] == 'Z',
			  "time %s", t);
		CHECK(!strncmp(t, "2026-11-18T", 11) && !strcmp(t + 19, ".123Z"));
		CHECK_STR(json_str(json_get(j, "id"), ""), r.id);
		CHECK_STR(json_str(json_get(j, "client"), ""), "127.0.0.1");
		CHECK_STR(json_str(json_get(j, "method"), ""), "GET");
		CHECK_STR(json_str(json_get(j, "host"), ""), "example.com");
		CHECK_STR(json_str(json_get(j, "path"), ""), "/v1/x");
		CHECK_INT(json_num(json_get(j, "status"), -1), 200);
		CHECK_INT(json_num(json_get(j, "bytes_in"), -1), 78);
		CHECK_INT(json_num(json_get(j, "bytes_out"), -1), 1234);
		CHECK_STR(json_str(json_get(j, "upstream"), ""), "127.0.0.1:9001");
		CHECK_STR(json_str(json_get(j, "pool"), ""), "default");
		CHECK(json_get(j, "cache") && json_get(j, "cache")->type == JSON_NULL);
		CHECK_INT(json_num(json_get(j, "retries"), -1), 1);
		CHECK_INT(json_num(json_path(j, "timings.parse"), -1), 3);
		CHECK_INT(json_num(json_path(j, "timings.total"), -1), 250);
		CHECK(json_path(j, "timings.route") == NULL); /* absent stages are omitted */
		CHECK(json_get(j, "reason") == NULL);	      /* none → omitted */
		json_free(j);
	}
	r.reason = REASON_UPSTREAM_CONNECT;
	r.status = 502;
	r.upstream[0] = 0;
	n = accesslog_format(&r, out, sizeof(out));
	j = parse_line(out, n - 1);
	if (j) {
		CHECK_STR(json_str(json_get(j, "reason"), ""), "upstream_connect");
		CHECK(json_get(j, "upstream")->type == JSON_NULL);
		json_free(j);
	}
	/* too small a buffer: 0, never a cut line */
	CHECK_INT(accesslog_format(&r, out, 40), 0);
	test_end();
}

static void test_format_nasty(void)
{
	static const char *const nasty[] = {
		"/a\"b\\c",		      /* quote, backslash */
		"/\n\r\t\x01\x1f\x7f",	      /* controls and DEL */
		"/\xff\xfe\x80",	      /* bytes that are never UTF-8 */
		"/\xc3\xa9t\xc3\xa9",	      /* valid UTF-8: kept */
		"/\xc3",		      /* truncated sequence */
		"/\xe0\x80\xaf",	      /* overlong */
		"/\xed\xa0\x80",	      /* a surrogate */
		"/\xf4\x90\x80\x80",	      /* above U+10FFFF */
		"/\xf0\x9f\x98\x80 ok",	      /* 4-byte valid */
		"/</script><script>alert(1)", /* not JSON's problem, must survive */
	};
	struct access_record r;
	char out[8192];

	test_begin("format_escapes_hostile_strings");
	for (size_t i = 0; i < sizeof(nasty) / sizeof(nasty[0]); i++) {
		fill(&r, nasty[i]);
		snprintf(r.host, sizeof(r.host), "%s", nasty[i]);
		snprintf(r.method, sizeof(r.method), "%.15s", nasty[i]);
		size_t n = accesslog_format(&r, out, sizeof(out));
		CHECK(n > 0);
		CHECK_MSG(memchr(out, '\n', n) == out + n - 1, "raw newline inside line %zu", i);
		struct json *j = parse_line(out, n - 1);
		if (!j)
			continue;
		const struct json *p = json_get(j, "path");
		CHECK(p && p->type == JSON_STRING);
		json_free(j);
	}
	/* bytes map to their code points: \xff → \u00ff; valid UTF-8 stays raw */
	fill(&r, "/\xff\xc3\xa9\"");
	size_t n = accesslog_format(&r, out, sizeof(out));
	out[n] = 0;
	CHECK_MSG(strstr(out, "\"path\":\"/\\u00ff\xc3\xa9\\\"\""), "%s", out);
	/* a full field without NUL (all 512 bytes used) stays within bounds */
	fill(&r, "");
	memset(r.path, '\x01', sizeof(r.path));
	n = accesslog_format(&r, out, sizeof(out));
	CHECK(n > 0);
	struct json *j = parse_line(out, n - 1);
	if (j) {
		CHECK_INT(json_get(j, "path")->len, sizeof(r.path));
		json_free(j);
	}
	test_end();
}

static void test_helpers(void)
{
	struct access_record r;

	test_begin("set_path_and_sampling");
	accesslog_set_path(&r, "/a/b?x=1", 8, false);
	CHECK_STR(r.path, "/a/b");
	accesslog_set_path(&r, "/a/b?x=1", 8, true);
	CHECK_STR(r.path, "/a/b?x=1");
	char big[2000];
	memset(big, 'x', sizeof(big));
	accesslog_set_path(&r, big, sizeof(big), false);
	CHECK_INT(strlen(r.path), sizeof(r.path) - 1);
	CHECK(accesslog_sampled(1.0, 0));
	CHECK(accesslog_sampled(1.0, UINT64_MAX));
	CHECK(!accesslog_sampled(0.0, 0));
	CHECK(accesslog_sampled(0.5, 0));
	CHECK(!accesslog_sampled(0.5, UINT64_MAX));
	unsigned hits = 0;
	uint64_t x = 88172645463325252ULL;
	for (int i = 0; i < 10000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		hits += accesslog_sampled(0.25, x);
	}
	CHECK_MSG(hits > 2200 && hits < 2800, "0.25 sampled %u of 10000", hits);
	test_end();
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b = NULL;
	size_t cap = 0, n = 0;

	if (!f)
		return NULL;
	for (;;) {
		if (n + 65536 > cap) {
			cap = (cap + 65536) * 2;
			b = realloc(b, cap + 1);
		}
		size_t got = fread(b + n, 1, 65536, f);
		n += got;
		if (!got)
			break;
	}
	fclose(f);
	b[n] = 0;
	*len = n;
	return b;
}

static void tmp_path(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/reflex-test-accesslog-%d-%s",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid(), name);
}

struct producer {
	struct accesslog *l;
	unsigned worker, n;
	unsigned pushed;
};

static void *produce(void *arg)
{
	struct producer *p = arg;
	struct access_record r;
	char path[64];

	for (unsigned i = 0; i < p->n; i++) {
		snprintf(path, sizeof(path), "/w%u/%u", p->worker, i);
		fill(&r, path);
		r.bytes_in = i;
		r.retries = (uint8_t)p->worker;
		accesslog_push(p->l, p->worker, &r);
		p->pushed++;
		if (i % 256 == 255) { /* pace a little: most records should get through */
			struct timespec ts = {0, 2000000};
			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

static void test_two_producers(void)
{
	char path[256], err[256];
	enum { N = 20000 };
	struct producer ps[2];
	pthread_t th[2];

	test_begin("two_producers_in_order_no_duplicates_exact_accounting");
	tmp_path(path, sizeof(path), "prod.log");
	unlink(path);
	struct accesslog *l = accesslog_open(path, 2, err, sizeof(err));
	CHECK_MSG(l, "open: %s", err);
	if (!l) {
		test_end();
		return;
	}
	for (unsigned i = 0; i < 2; i++) {
		ps[i] = (struct producer){l, i, N, 0};
		pthread_create(&th[i], NULL, produce, &ps[i]);
	}
	for (unsigned i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 500 && accesslog_written(l) + accesslog_dropped(l) < 2 * N; i++)
		usleep(10000);
	uint64_t written = accesslog_written(l), dropped = accesslog_dropped(l);
	accesslog_close(l); /* flushes */
	size_t len;
	char *data = slurp(path, &len);
	CHECK(data != NULL);
	unsigned next[2] = {0, 0}, lines = 0, bad = 0;
	for (char *p = data, *nl; data && (nl = memchr(p, '\n', len - (size_t)(p - data)));
	     p = nl + 1) {
		lines++;
		char jerr[128];
		struct json *j = json_parse(p, (size_t)(nl - p), jerr, sizeof(jerr));
		if (!j) {
			bad++;
			continue;
		}
		unsigned w = (unsigned)json_num(json_get(j, "retries"), 9);
		unsigned i = (unsigned)json_num(json_get(j, "bytes_in"), -1);
		/* strictly increasing per worker: in order, never twice */
		if (w > 1 || i < next[w])
			bad++;
		else
			next[w] = i + 1;
		json_free(j);
	}
	CHECK_INT(bad, 0);
	CHECK_INT(lines, written);
	CHECK_INT(written + dropped, 2 * N);
	/* a loaded shared machine (or a sanitizer) may starve the writer: the
	 * properties are order, no duplicates and exact accounting, plus both
	 * producers getting through at all */
	CHECK(next[0] > 0 && next[1] > 0);
	free(data);
	unlink(path);
	test_end();
}

static void test_drops_when_full(void)
{
	char path[256], err[256];
	enum { BURST = 200000 };
	struct access_record r;

	test_begin("drops_counted_when_full");
	/* A burst far over the ring size (4096) pushed without pause: the
	 * writer cannot keep up, so some records are dropped — counted, and
	 * written + dropped accounts for every push. */
	tmp_path(path, sizeof(path), "drop.log");
	unlink(path);
	struct accesslog *l = accesslog_open(path, 1, err, sizeof(err));
	CHECK_MSG(l, "open: %s", err);
	if (!l) {
		test_end();
		return;
	}
	fill(&r, "/burst");
	for (unsigned i = 0; i < BURST; i++)
		accesslog_push(l, 0, &r);
	for (int i = 0; i < 500 && accesslog_written(l) + accesslog_dropped(l) < BURST; i++)
		usleep(10000);
	uint64_t written = accesslog_written(l), dropped = accesslog_dropped(l);
	CHECK_MSG(dropped > 0, "a burst of %u into a 4096 ring dropped nothing", BURST);
	CHECK_INT(written + dropped, BURST);
	accesslog_push(l, 7, &r); /* no such worker: counted, not a crash */
	CHECK_INT(accesslog_dropped(l), dropped + 1);
	accesslog_close(l);
	size_t len;
	char *data = slurp(path, &len);
	uint64_t lines = 0;
	for (size_t i = 0; data && i < len; i++)
		lines += data[i] == '\n';
	free(data);
	CHECK_INT(lines, written);
	unlink(path);
	test_end();
}

static void test_reopen(void)
{
	char path[256], rotated[256], err[256];
	struct access_record r;

	test_begin("reopen_after_rename");
	tmp_path(path, sizeof(path), "rot.log");
	tmp_path(rotated, sizeof(rotated), "rot.log.1");
	unlink(path);
	unlink(rotated);
	struct accesslog *l = accesslog_open(path, 1, err, sizeof(err));
	CHECK_MSG(l, "open: %s", err);
	if (!l) {
		test_end();
		return;
	}
	fill(&r, "/before");
	accesslog_push(l, 0, &r);
	/* the writer thread runs in its own time: up to 10 s on a busy machine */
	for (int i = 0; i < 2000 && accesslog_written(l) < 1; i++)
		usleep(5000);
	CHECK_INT(accesslog_written(l), 1);
	CHECK(rename(path, rotated) == 0);
	accesslog_reopen(l);
	/* the writer reopens even without traffic */
	struct stat st;
	int i;
	for (i = 0; i < 2000 && stat(path, &st) != 0; i++)
		usleep(5000);
	CHECK_MSG(i < 2000, "the file was not recreated after reopen");
	fill(&r, "/after");
	accesslog_push(l, 0, &r);
	accesslog_close(l);
	size_t n1, n2;
	char *a = slurp(rotated, &n1), *b = slurp(path, &n2);
	CHECK(a && strstr(a, "/before") && !strstr(a, "/after"));
	CHECK(b && strstr(b, "/after") && !strstr(b, "/before"));
	free(a);
	free(b);
	unlink(path);
	unlink(rotated);
	test_end();
}

static void test_open_errors(void)
{
	char err[256];

	test_begin("open_error_names_the_path");
	struct accesslog *l = accesslog_open("/nonexistent-dir/x.log", 1, err, sizeof(err));
	CHECK(l == NULL);
	CHECK_MSG(strstr(err, "/nonexistent-dir/x.log") != NULL, "%s", err);
	accesslog_close(NULL);
	CHECK_INT(accesslog_dropped(NULL), 0);
	test_end();
}

int main(void)
{
	test_format_fields();
	test_format_nasty();
	test_helpers();
	test_two_producers();
	test_drops_when_full();
	test_reopen();
	test_open_errors();
	return test_exit_code();
}
