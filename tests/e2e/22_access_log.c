/* 22_access_log — the JSON access log of a running gateway: one valid JSON
 * line per request with the documented fields, for a normal proxied request
 * (query dropped), a request with a body, refusals (400, 413, 431) and
 * upstream errors (502, 504) with their reason codes; per-route off switch;
 * sampling 0; SIGUSR1 reopens the file after a rename (logrotate). */
#include "lib/harness.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control/json.h"

static int gw_port, o_port, dead_port, admin_port;
static char log_path[1024], rotated_path[1040];

/* Every line of the file parsed; *n lines, *bad invalid ones. */
static struct json **read_lines(const char *path, unsigned *n, unsigned *bad)
{
	FILE *f = fopen(path, "r");
	struct json **v = NULL;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;

	*n = *bad = 0;
	if (!f)
		return NULL;
	while ((len = getline(&line, &cap, f)) > 0) {
		char err[128];

		if (line[len - 1] != '\n') { /* a line being written: not yet */
			break;
		}
		struct json *j = json_parse(line, (size_t)len - 1, err, sizeof(err));
		if (!j) {
			(*bad)++;
			if (*bad < 3)
				test_fail(__FILE__, __LINE__, "invalid JSON line (%s): %s", err,
					  h_excerpt(line, (size_t)len, 300));
			continue;
		}
		v = realloc(v, sizeof(*v) * (*n + 1));
		v[(*n)++] = j;
	}
	free(line);
	fclose(f);
	return v;
}

static void free_lines(struct json **v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		json_free(v[i]);
	free(v);
}

/* Wait up to 3 s for a line whose key equals want (string) or, with
 * want_status, whose status equals it; returns a copy of the line's tree. */
static struct json *find_line(const char *path, const char *key, const char *want, int want_status)
{
	/* the writer thread flushes in its own time: up to 10 s on a busy machine */
	for (int tries = 0; tries < 200; tries++) {
		unsigned n, bad;
		struct json **v = read_lines(path, &n, &bad);
		for (unsigned i = 0; i < n; i++) {
			bool hit = key ? !strcmp(json_str(json_get(v[i], key), ""), want)
				       : json_num(json_get(v[i], "status"), 0) == want_status;
			if (hit) {
				struct json *j = v[i];
				v[i] = NULL;
				free_lines(v, n);
				return j;
			}
		}
		free_lines(v, n);
		h_sleep_ms(50);
	}
	return NULL;
}

static long request(const char *path, const char *id, const char *method, const char *body,
		    size_t body_len, struct h_resp *r)
{
	char url[512], hdr[128];
	const char *hdrs[2] = {hdr, NULL};
	struct h_req q = {.url = url,
			  .method = method,
			  .body = body,
			  .body_len = body_len,
			  .headers = hdrs,
			  .timeout_ms = 8000,
			  .no_expect = true};

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", gw_port, path);
	snprintf(hdr, sizeof(hdr), "X-Request-ID: %s", id);
	h_http(&q, r);
	return r->status;
}

static bool rfc3339_ms(const char *t)
{
	/* 2026-11-21T06:00:00.123Z */
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";

	if (strlen(t) != sizeof(shape) - 1)
		return false;
	for (size_t i = 0; shape[i]; i++)
		if (shape[i] == 'd' ? !(t[i] >= '0' && t[i] <= '9') : t[i] != shape[i])
			return false;
	return true;
}

/* The fields every line carries. */
static void check_common(const struct json *j, const char *what)
{
	static const char *const keys[] = {"time", "id",      "client",	  "method",    "host",
					   "path", "status",  "bytes_in", "bytes_out", "upstream",
					   "pool", "retries", "timings",  "cache"};

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		CHECK_MSG(json_get(j, keys[i]), "%s: no \"%s\"", what, keys[i]);
	CHECK_MSG(rfc3339_ms(json_str(json_get(j, "time"), "")), "%s: time %s", what,
		  json_str(json_get(j, "time"), "?"));
	CHECK_STR(json_str(json_get(j, "client"), ""), "127.0.0.1");
	CHECK(json_get(j, "timings") && json_get(j, "timings")->type == JSON_OBJECT);
}

static void test_proxied(void)
{
	struct h_resp r;
	struct json *j;

	test_begin("proxied_request_line");
	CHECK_INT(request("/ok/path?secret=abc&size=300", "e2e-ok-1", NULL, NULL, 0, &r), 200);
	h_resp_free(&r);
	j = find_line(log_path, "id", "e2e-ok-1", 0);
	CHECK_MSG(j, "no access-log line for e2e-ok-1");
	if (j) {
		char host[64], up[64];
		check_common(j, "200");
		snprintf(host, sizeof(host), "127.0.0.1:%d", gw_port);
		snprintf(up, sizeof(up), "127.0.0.1:%d", o_port);
		CHECK_STR(json_str(json_get(j, "method"), ""), "GET");
		CHECK_STR(json_str(json_get(j, "host"), ""), host);
		CHECK_STR(json_str(json_get(j, "path"), ""), "/ok/path"); /* query dropped */
		CHECK_INT(json_num(json_get(j, "status"), 0), 200);
		CHECK_STR(json_str(json_get(j, "upstream"), ""), up);
		CHECK_STR(json_str(json_get(j, "pool"), ""), "default");
		CHECK_INT(json_num(json_get(j, "retries"), -1), 0);
		CHECK(json_num(json_get(j, "bytes_in"), 0) > 40);
		CHECK(json_num(json_get(j, "bytes_out"), 0) >= 300);
		CHECK(json_path(j, "timings.total") && json_path(j, "timings.parse") &&
		      json_path(j, "timings.upstream_ttfb"));
		CHECK(json_get(j, "reason") == NULL);
		json_free(j);
	}
	test_end();

	test_begin("request_body_counted");
	char body[500];
	memset(body, 'b', sizeof(body));
	CHECK_INT(request("/echo", "e2e-post", "POST", body, sizeof(body), &r), 200);
	h_resp_free(&r);
	j = find_line(log_path, "id", "e2e-post", 0);
	CHECK_MSG(j, "no line for e2e-post");
	if (j) {
		check_common(j, "POST");
		CHECK_STR(json_str(json_get(j, "method"), ""), "POST");
		CHECK(json_num(json_get(j, "bytes_in"), 0) >= 500);
		json_free(j);
	}
	test_end();
}

static void expect_reason(const char *name, const struct json *j, int status, const char *reason)
{
	CHECK_MSG(j, "%s: no line with status %d", name, status);
	if (!j)
		return;
	check_common(j, name);
	CHECK_INT(json_num(json_get(j, "status"), 0), status);
	CHECK_STR(json_str(json_get(j, "reason"), "(none)"), reason);
}

static void test_refusals(void)
{
	struct h_buf b = {0};
	struct h_resp r;
	struct json *j;

	test_begin("refusal_400_bad_request");
	const char *dup_host = "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
	h_raw_roundtrip("127.0.0.1", gw_port, dup_host, strlen(dup_host), &b, 3000);
	j = find_line(log_path, NULL, NULL, 400);
	expect_reason("400", j, 400, "bad_request");
	json_free(j);
	test_end();

	test_begin("refusal_413_body_too_large");
	char big[2000];
	memset(big, 'x', sizeof(big));
	CHECK_INT(request("/echo", "e2e-413", "POST", big, sizeof(big), &r), 413);
	h_resp_free(&r);
	j = find_line(log_path, NULL, NULL, 413);
	expect_reason("413", j, 413, "body_too_large");
	json_free(j);
	test_end();

	test_begin("refusal_431_header_too_large");
	size_t hl = 40000;
	char *req = malloc(hl + 200);
	int n = snprintf(req, 200, "GET /x HTTP/1.1\r\nHost: a\r\nX-Big: ");
	memset(req + n, 'h', hl);
	memcpy(req + n + hl, "\r\n\r\n", 5);
	b.len = 0;
	h_raw_roundtrip("127.0.0.1", gw_port, req, strlen(req), &b, 3000);
	free(req);
	j = find_line(log_path, NULL, NULL, 431);
	expect_reason("431", j, 431, "header_too_large");
	json_free(j);
	test_end();
	h_buf_free(&b);
}

static void test_upstream_errors(void)
{
	struct h_resp r;
	struct json *j;

	test_begin("upstream_error_502");
	CHECK_INT(request("/dead/x", "e2e-502", NULL, NULL, 0, &r), 502);
	h_resp_free(&r);
	j = find_line(log_path, "id", "e2e-502", 0);
	expect_reason("502", j, 502, "upstream_connect");
	if (j)
		CHECK_STR(json_str(json_get(j, "pool"), ""), "dead");
	json_free(j);
	test_end();

	test_begin("upstream_timeout_504");
	CHECK_INT(request("/?hang=1", "e2e-504", NULL, NULL, 0, &r), 504);
	h_resp_free(&r);
	j = find_line(log_path, "id", "e2e-504", 0);
	expect_reason("504", j, 504, "upstream_timeout");
	if (j)
		CHECK(json_num(json_path(j, "timings.total"), 0) >= 900000); /* ≥ 0.9 s in µs */
	json_free(j);
	test_end();
}

static void test_route_off(void)
{
	struct h_resp r;
	struct json *j;

	test_begin("route_access_log_false");
	CHECK_INT(request("/nolog/x", "e2e-nolog", NULL, NULL, 0, &r), 200);
	h_resp_free(&r);
	CHECK_INT(request("/after", "e2e-after", NULL, NULL, 0, &r), 200);
	h_resp_free(&r);
	j = find_line(log_path, "id", "e2e-after", 0);
	CHECK_MSG(j, "no line for e2e-after");
	json_free(j);
	/* one worker: e2e-nolog would have been queued before e2e-after */
	unsigned n, bad;
	struct json **v = read_lines(log_path, &n, &bad);
	for (unsigned i = 0; i < n; i++)
		CHECK_MSG(strcmp(json_str(json_get(v[i], "id"), ""), "e2e-nolog"),
			  "a route with access_log: false was logged");
	CHECK_INT(bad, 0);
	CHECK_MSG(n >= 8, "only %u lines", n);
	free_lines(v, n);
	test_end();
}

static void test_metrics_counts(void)
{
	char url[128];
	struct h_resp r;
	unsigned n, bad;

	test_begin("metrics_count_written_lines");
	struct json **v = read_lines(log_path, &n, &bad);
	free_lines(v, n);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", admin_port);
	CHECK_INT(h_get(url, &r), 200);
	static const char w[] = "\nreflex_access_log_written_total ",
			  d[] = "\nreflex_access_log_dropped_total ";
	const char *p = r.body ? strstr(r.body, w) : NULL;
	CHECK_MSG(p && strtod(p + sizeof(w) - 1, NULL) >= n, "written_total %s, %u lines",
		  p ? h_excerpt(p + 1, 50, 50) : "(missing)", n);
	p = r.body ? strstr(r.body, d) : NULL;
	CHECK(p && strtod(p + sizeof(d) - 1, NULL) == 0);
	h_resp_free(&r);
	test_end();
}

static void test_reopen(struct h_proc *gw)
{
	struct h_resp r;
	struct json *j;

	test_begin("sigusr1_reopens_after_rename");
	unlink(rotated_path);
	CHECK(rename(log_path, rotated_path) == 0);
	CHECK(h_signal(gw, SIGUSR1) == 0);
	struct stat st;
	int i;
	for (i = 0; i < 200 && stat(log_path, &st) != 0; i++)
		h_sleep_ms(50);
	CHECK_MSG(i < 200, "%s was not recreated after SIGUSR1", log_path);
	CHECK_INT(request("/rotated", "e2e-rot", NULL, NULL, 0, &r), 200);
	h_resp_free(&r);
	j = find_line(log_path, "id", "e2e-rot", 0);
	CHECK_MSG(j, "the request after the reopen is not in the new file");
	json_free(j);
	unsigned n, bad;
	struct json **v = read_lines(rotated_path, &n, &bad);
	CHECK_MSG(n >= 8, "the rotated file has %u lines", n);
	for (unsigned k = 0; k < n; k++)
		CHECK(strcmp(json_str(json_get(v[k], "id"), ""), "e2e-rot"));
	free_lines(v, n);
	test_end();
}

static void test_sample_zero(void)
{
	char path[1024], url[128];
	struct h_resp r;
	struct stat st;

	test_begin("sample_0_logs_nothing");
	snprintf(path, sizeof(path), "%s/test-logs/e2e-22-%d-sampled.log", h_build_dir(),
		 (int)getpid());
	unlink(path);
	int port = h_free_port();
	const char *cfg = h_write_config("workers: 1\nlisten: [\"127.0.0.1:%d\"]\n"
					 "upstream: [\"127.0.0.1:%d\"]\n"
					 "access_log: {path: \"%s\", sample: 0}\n"
					 "admin: {listen: off}\n",
					 port, o_port, path);
	struct h_proc *gw2 = h_start_reflexd_config("reflexd-sampled", port, cfg);
	CHECK(gw2 != NULL);
	if (gw2) {
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/?size=10", port);
		for (int i = 0; i < 5; i++) {
			CHECK_INT(h_get(url, &r), 200);
			h_resp_free(&r);
		}
		h_sleep_ms(300);
		CHECK_MSG(stat(path, &st) == 0 && st.st_size == 0, "sample 0: %lld bytes logged",
			  (long long)st.st_size);
	}
	test_end();
	h_finish(gw2, 10000);
}

int main(void)
{
	h_init("22_access_log", 120);
	gw_port = h_free_port();
	o_port = h_free_port();
	dead_port = h_free_port();
	admin_port = h_free_port();
	snprintf(log_path, sizeof(log_path), "%s/test-logs/e2e-22-%d-access.log", h_build_dir(),
		 (int)getpid());
	snprintf(rotated_path, sizeof(rotated_path), "%s.1", log_path);
	unlink(log_path);
	const char *cfg =
		h_write_config("workers: 1\n"
			       "listen: [\"127.0.0.1:%d\"]\n"
			       "limits: {body: 1k}\n"
			       "timeouts: {upstream_response: 1s}\n"
			       "access_log: {path: \"%s\", query: false}\n"
			       "pools:\n"
			       "  default: {endpoints: [\"127.0.0.1:%d\"]}\n"
			       "  dead: {endpoints: [\"127.0.0.1:%d\"]}\n"
			       "routes:\n"
			       "  - {path_prefix: /dead/, pool: dead}\n"
			       "  - {path_prefix: /nolog/, pool: default, access_log: false}\n"
			       "admin: {listen: \"127.0.0.1:%d\"}\n",
			       gw_port, log_path, o_port, dead_port, admin_port);

	if (!h_start_origin("origin", o_port, 1))
		return test_exit_code();
	struct h_proc *gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw)
		return test_exit_code();
	test_proxied();
	test_refusals();
	test_upstream_errors();
	test_route_off();
	if (h_wait_port("127.0.0.1", admin_port, 3000) == 0) {
		test_metrics_counts();
	} else {
		test_begin("metrics_count_written_lines");
		CHECK_MSG(0, "the admin API does not listen on %d", admin_port);
		test_end();
	}
	test_reopen(gw);
	test_sample_zero();
	h_finish(gw, 10000);
	return test_exit_code();
}
