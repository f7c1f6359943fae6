/* 21_admin — the admin API against a running gateway: every endpoint and its
 * auth (mutations: 401 without a token and with a wrong one, 200 with a
 * right one), 400 for a malformed admin request, 404, 405, its own limits
 * (body, connections), readiness turning 503 with a reason when a pool has
 * no healthy endpoint, /config never showing a secret, /metrics as valid
 * Prometheus text exposition whose counters move with traffic, and the
 * admin section's config errors naming FILE:LINE. */
#include "lib/harness.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control/json.h"

#define SECRET_OPS "ops-secret-0123456789abcdef"
#define SECRET_CI "ci-secret-fedcba9876543210"

static int gw_port, admin_port, o_port, dead_port;
static const char *cfg_path, *token_path, *audit_path;
static struct h_proc *gw;

static char *file_path(const char *name)
{
	static char p[4][1024];
	static int n;
	char *s = p[n++ % 4];

	snprintf(s, 1024, "%s/test-logs/e2e-21-%d-%s", h_build_dir(), (int)getpid(), name);
	return s;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

/* Set by test_metrics_after_reorder: the same pools and routes in another
 * order, with one more of each in front. */
static bool reordered;

static const char *gateway_yaml(bool broken)
{
	static char buf[4096];

	if (reordered) {
		snprintf(buf, sizeof(buf),
			 "workers: 2\n"
			 "listen: [\"127.0.0.1:%d\"]\n"
			 "pools:\n"
			 "  extra: {endpoints: [\"127.0.0.1:%d\"]}\n"
			 "  dead: {endpoints: [\"127.0.0.1:%d\"]}\n"
			 "  default: {endpoints: [\"127.0.0.1:%d\"]}\n"
			 "routes:\n"
			 "  - {path_prefix: /extra/, pool: extra}\n"
			 "  - {path_prefix: /dead/, pool: dead}\n"
			 "admin: {listen: \"127.0.0.1:%d\", token_file: \"%s\", audit_log: \"%s\"}\n",
			 gw_port, o_port, dead_port, o_port, admin_port, token_path, audit_path);
		return buf;
	}
	snprintf(buf, sizeof(buf),
		 "workers: 2\n"
		 "listen: [\"127.0.0.1:%d\"]\n"
		 "%s"
		 "pools:\n"
		 "  default: {endpoints: [\"127.0.0.1:%d\"]}\n"
		 "  dead: {endpoints: [\"127.0.0.1:%d\"]}\n"
		 "routes:\n"
		 "  - {path_prefix: /dead/, pool: dead}\n"
		 "admin: {listen: \"127.0.0.1:%d\", token_file: \"%s\", audit_log: \"%s\"}\n",
		 gw_port, broken ? "bogus_key: 1\n" : "", o_port, dead_port, admin_port, token_path,
		 audit_path);
	return buf;
}

/* An admin request through libcurl. token NULL: no Authorization. */
static long admin(const char *method, const char *path, const char *token, struct h_resp *r)
{
	char url[256], auth[256];
	const char *hdrs[2] = {NULL, NULL};
	struct h_req q = {.method = method, .url = url, .timeout_ms = 5000, .headers = hdrs};

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", admin_port, path);
	if (token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		hdrs[0] = auth;
	}
	if (h_http(&q, r) != 0)
		return -1;
	return r->status;
}

static struct json *admin_json(const char *path, long *status)
{
	struct h_resp r;
	char err[256];
	struct json *j;

	*status = admin("GET", path, NULL, &r);
	j = r.body ? json_parse(r.body, r.body_len, err, sizeof(err)) : NULL;
	CHECK_MSG(j, "GET %s: status %ld, not JSON (%s): %s", path, *status, err,
		  h_excerpt(r.body, r.body_len, 200));
	h_resp_free(&r);
	return j;
}

/* ---- a Prometheus text-format (0.0.4) validator ----------------------------- */

struct family {
	char name[128];
	char type[16];
	bool help;
};

struct series {
	char key[512]; /* name{labels} with le removed, for histograms */
	double le_prev, cum_prev;
	bool has_inf, has_sum, has_count;
	double inf, count;
};

static bool name_ok(const char *s, size_t n)
{
	if (!n || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
			return false;
	return true;
}

static bool parse_value(const char *s, double *v)
{
	char *end;

	if (!strcmp(s, "+Inf")) {
		*v = INFINITY;
		return true;
	}
	if (!strcmp(s, "-Inf")) {
		*v = -INFINITY;
		return true;
	}
	if (!strcmp(s, "NaN")) {
		*v = NAN;
		return true;
	}
	*v = strtod(s, &end);
	return end != s && !*end;
}

/* Validates the exposition; returns the number of problems (each reported). */
static int prom_validate(const char *text, size_t len, unsigned *n_samples)
{
	struct family fams[256];
	struct series *ser = calloc(2048, sizeof(*ser));
	char **all = calloc(8192, sizeof(*all));
	unsigned n_all = 0;
	unsigned nf = 0, ns = 0, problems = 0, lineno = 0;
	int cur_family = -1;
	char seen_done[256] = {0}; /* families whose block ended */
	char *copy = strndup(text, len), *save, *line;

	*n_samples = 0;
#define BAD(fmt, ...)                                                                  \
	do {                                                                           \
		if (problems++ < 10)                                                   \
			test_fail(__FILE__, __LINE__, "metrics line %u: " fmt, lineno, \
				  __VA_ARGS__);                                        \
	} while (0)
	if (len && text[len - 1] != '\n')
		BAD("%s", "exposition does not end with a newline");
	for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		lineno++;
		if (line[0] == '#') {
			char kw[8], name[128], rest[512] = "";
			if (sscanf(line, "# %7s %127s %511[^\n]", kw, name, rest) < 2)
				continue; /* a plain comment */
			if (strcmp(kw, "HELP") && strcmp(kw, "TYPE"))
				continue;
			if (!name_ok(name, strlen(name)))
				BAD("bad metric name in %s: %s", kw, name);
			int f = -1;
			for (unsigned i = 0; i < nf; i++)
				if (!strcmp(fams[i].name, name))
					f = (int)i;
			if (f < 0) {
				if (nf >= 256) {
					BAD("%s", "too many families");
					continue;
				}
				f = (int)nf++;
				memset(&fams[f], 0, sizeof(fams[f]));
				snprintf(fams[f].name, sizeof(fams[f].name), "%s", name);
			} else if (seen_done[f]) {
				BAD("family %s declared again after its samples", name);
			}
			if (cur_family >= 0 && cur_family != f)
				seen_done[cur_family] = 1;
			cur_family = f;
			if (!strcmp(kw, "TYPE")) {
				if (fams[f].type[0])
					BAD("second TYPE for %s", name);
				if (strcmp(rest, "counter") && strcmp(rest, "gauge") &&
				    strcmp(rest, "histogram") && strcmp(rest, "summary") &&
				    strcmp(rest, "untyped"))
					BAD("unknown type \"%s\" for %s", rest, name);
				snprintf(fams[f].type, sizeof(fams[f].type), "%s", rest);
			} else {
				if (fams[f].help)
					BAD("second HELP for %s", name);
				fams[f].help = true;
			}
			continue;
		}
		/* a sample: name[{labels}] value [timestamp] */
		const char *p = line;
		size_t nlen = strcspn(p, "{ ");
		char name[128], labels[512] = "", le[256] = "";
		size_t lo = 0;
		if (!name_ok(p, nlen) || nlen >= sizeof(name)) {
			BAD("bad sample name: %s", line);
			continue;
		}
		memcpy(name, p, nlen);
		name[nlen] = 0;
		p += nlen;
		if (*p == '{') {
			p++;
			bool first = true;
			while (*p != '}') {
				if (!first) {
					if (*p != ',') {
						BAD("expected ',' in labels: %s", line);
						goto next;
					}
					p++;
					if (*p == '}')
						break; /* trailing comma is allowed */
				}
				first = false;
				size_t ln = strcspn(p, "=");
				if (!name_ok(p, ln) || memchr(p, ':', ln) || p[ln] != '=' ||
				    p[ln + 1] != '"') {
					BAD("bad label: %s", line);
					goto next;
				}
				bool is_le = ln == 2 && !memcmp(p, "le", 2);
				char lname[64];
				snprintf(lname, sizeof(lname), "%.*s", (int)ln, p);
				p += ln + 2;
				char val[256];
				size_t vn = 0;
				while (*p && *p != '"') {
					if (*p == '\\') {
						p++;
						if (*p != '\\' && *p != '"' && *p != 'n') {
							BAD("bad escape in label value: %s", line);
							goto next;
						}
					}
					if (vn < sizeof(val) - 1)
						val[vn++] = *p;
					p++;
				}
				val[vn] = 0;
				if (*p != '"') {
					BAD("unterminated label value: %s", line);
					goto next;
				}
				p++;
				if (is_le)
					snprintf(le, sizeof(le), "%s", val);
				else
					lo += (size_t)snprintf(labels + lo, sizeof(labels) - lo,
							       "%s%s=\"%s\"", lo ? "," : "", lname,
							       val);
				if (lo >= sizeof(labels))
					lo = sizeof(labels) - 1;
			}
			p++;
		}
		if (*p != ' ') {
			BAD("expected a space before the value: %s", line);
			continue;
		}
		p++;
		char valtxt[64];
		double v;
		size_t vl = strcspn(p, " ");
		snprintf(valtxt, sizeof(valtxt), "%.*s", (int)vl, p);
		if (!parse_value(valtxt, &v)) {
			BAD("bad value: %s", line);
			continue;
		}
		(*n_samples)++;
		{
			/* the same series twice makes Prometheus drop the scrape */
			char key[800];
			snprintf(key, sizeof(key), "%s{%s}le=%s", name, labels, le);
			bool dup = false;
			for (unsigned i = 0; i < n_all && !dup; i++)
				dup = !strcmp(all[i], key);
			if (dup)
				BAD("duplicate series: %s", line);
			else if (n_all < 8192 && (all[n_all] = strdup(key)))
				n_all++;
		}
		/* which family: the name, or a histogram's base */
		int f = -1;
		const char *suffix = "";
		for (unsigned i = 0; i < nf; i++) {
			size_t fl = strlen(fams[i].name);
			if (!strcmp(fams[i].name, name)) {
				f = (int)i;
				suffix = "";
			} else if (!strcmp(fams[i].type, "histogram") &&
				   !strncmp(name, fams[i].name, fl) &&
				   (!strcmp(name + fl, "_bucket") || !strcmp(name + fl, "_sum") ||
				    !strcmp(name + fl, "_count"))) {
				f = (int)i;
				suffix = name + fl;
			}
		}
		if (f < 0 || !fams[f].type[0]) {
			BAD("sample %s has no TYPE", name);
			continue;
		}
		if (f != cur_family || seen_done[f])
			BAD("sample %s is outside its family's block", name);
		if (!strcmp(fams[f].type, "counter")) {
			if (strlen(name) < 6 || strcmp(name + strlen(name) - 6, "_total"))
				BAD("counter %s does not end in _total", name);
			if (v < 0)
				BAD("negative counter %s", name);
		}
		if (strncmp(name, "reflex_", 7))
			BAD("%s lacks the reflex_ prefix", name);
		if (!strcmp(fams[f].type, "histogram")) {
			char key[512];
			snprintf(key, sizeof(key), "%s{%s}", fams[f].name, labels);
			struct series *s = NULL;
			for (unsigned i = 0; i < ns; i++)
				if (!strcmp(ser[i].key, key))
					s = &ser[i];
			if (!s && ns < 2048) {
				s = &ser[ns++];
				snprintf(s->key, sizeof(s->key), "%s", key);
				s->le_prev = -INFINITY;
				s->cum_prev = 0;
			}
			if (!s)
				continue;
			if (!strcmp(suffix, "_bucket")) {
				double lev;
				if (!le[0] || !parse_value(le, &lev)) {
					BAD("bucket without a valid le: %s", line);
					continue;
				}
				if (!(lev > s->le_prev))
					BAD("le not increasing: %s", line);
				if (v < s->cum_prev)
					BAD("bucket counts not cumulative: %s", line);
				s->le_prev = lev;
				s->cum_prev = v;
				if (isinf(lev)) {
					s->has_inf = true;
					s->inf = v;
				}
			} else if (!strcmp(suffix, "_sum")) {
				s->has_sum = true;
			} else if (!strcmp(suffix, "_count")) {
				s->has_count = true;
				s->count = v;
			} else {
				BAD("histogram sample %s without suffix", name);
			}
		}
	next:;
	}
	for (unsigned i = 0; i < ns; i++) {
		if (!ser[i].has_inf || !ser[i].has_sum || !ser[i].has_count)
			BAD("histogram %s lacks +Inf, _sum or _count", ser[i].key);
		else if (ser[i].inf != ser[i].count)
			BAD("histogram %s: _count %.0f != +Inf bucket %.0f", ser[i].key,
			    ser[i].count, ser[i].inf);
	}
	for (unsigned i = 0; i < nf; i++)
		if (!fams[i].type[0] || !fams[i].help)
			BAD("family %s lacks TYPE or HELP", fams[i].name);
#undef BAD
	for (unsigned i = 0; i < n_all; i++)
		free(all[i]);
	free(all);
	free(copy);
	free(ser);
	return (int)problems;
}

/* The value of one sample ("name" or "name{labels}" exactly as printed). */
static double metric(const char *text, const char *sample)
{
	size_t n = strlen(sample);
	const char *p = text;

	while ((p = strstr(p, sample))) {
		if ((p == text || p[-1] == '\n') && p[n] == ' ')
			return strtod(p + n + 1, NULL);
		p += n;
	}
	return -1;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_health(void)
{
	struct h_resp r;
	long st;

	test_begin("healthz_ok");
	st = admin("GET", "/healthz", NULL, &r);
	CHECK_INT(st, 200);
	CHECK(r.body_len >= 2 && !memcmp(r.body, "ok", 2));
	h_resp_free(&r);
	/* HEAD of a GET endpoint: same status, no body */
	struct h_req q = {.url = NULL, .head = true, .timeout_ms = 5000};
	char url[128];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", admin_port);
	q.url = url;
	h_http(&q, &r);
	CHECK_INT(r.status, 200);
	CHECK_INT(r.body_len, 0);
	h_resp_free(&r);
	test_end();

	test_begin("readyz_ready");
	/* "reflexd: ready" is printed once the workers were told to serve; each
	 * arms its accept in its own time: ready within 5 s */
	struct json *j = admin_json("/readyz", &st);
	for (double end = h_now_ms() + 5000; st != 200 && h_now_ms() < end;) {
		h_sleep_ms(50);
		json_free(j);
		j = admin_json("/readyz", &st);
	}
	CHECK_MSG(st == 200, "GET /readyz: %ld (%s)", st,
		  json_str(json_get(j, "reason"), "no reason"));
	CHECK(json_get(j, "ready") && json_get(j, "ready")->b);
	json_free(j);
	test_end();
}

static void test_read_endpoints(void)
{
	long st;

	test_begin("stats_json");
	struct json *j = admin_json("/stats", &st);
	CHECK_INT(st, 200);
	const struct json *w = json_get(j, "workers");
	CHECK(w && w->type == JSON_ARRAY && w->n == 2);
	CHECK(json_path(j, "totals.requests") != NULL);
	CHECK(json_path(j, "totals.latency_us.total.p50") != NULL);
	CHECK(json_path(j, "totals.latency_us.total.p99") != NULL);
	CHECK(json_get(j, "version") != NULL);
	json_free(j);
	test_end();

	test_begin("config_json_without_secrets");
	struct h_resp r;
	st = admin("GET", "/config", NULL, &r);
	CHECK_INT(st, 200);
	CHECK_MSG(r.body && !strstr(r.body, SECRET_OPS) && !strstr(r.body, SECRET_CI),
		  "a token secret appears in /config");
	char err[128];
	j = r.body ? json_parse(r.body, r.body_len, err, sizeof(err)) : NULL;
	CHECK_MSG(j, "not JSON: %s", err);
	CHECK_STR(json_str(json_path(j, "admin.token_file"), ""), token_path);
	CHECK_INT(json_num(json_path(j, "admin.tokens"), -1), 2);
	CHECK(json_path(j, "pools.default") && json_path(j, "pools.dead"));
	CHECK_INT(json_num(json_get(j, "workers"), 0), 2);
	json_free(j);
	h_resp_free(&r);
	test_end();

	test_begin("pool_json");
	j = admin_json("/pool", &st);
	CHECK_INT(st, 200);
	const struct json *pools = json_get(j, "pools");
	CHECK(pools && pools->n == 2);
	bool found = false;
	for (size_t i = 0; pools && i < pools->n; i++) {
		const struct json *eps = json_get(&pools->items[i], "endpoints");
		for (size_t e = 0; eps && e < eps->n; e++) {
			const struct json *ep = &eps->items[e];
			CHECK(json_get(ep, "address") && json_get(ep, "weight") &&
			      json_get(ep, "inflight") && json_get(ep, "requests") &&
			      json_get(ep, "fails") && json_get(ep, "state"));
			char want[64];
			snprintf(want, sizeof(want), "127.0.0.1:%d", o_port);
			if (!strcmp(json_str(json_get(ep, "address"), ""), want)) {
				found = true;
				CHECK_STR(json_str(json_get(ep, "state"), ""), "up");
			}
		}
	}
	CHECK(found);
	json_free(j);
	test_end();
}

static void test_auth(void)
{
	struct h_resp r;
	long st;

	test_begin("reload_401_without_token");
	st = admin("POST", "/reload", NULL, &r);
	CHECK_INT(st, 401);
	char v[256];
	CHECK(h_resp_header(&r, "WWW-Authenticate", v, sizeof(v)));
	h_resp_free(&r);
	test_end();

	test_begin("reload_401_wrong_token");
	st = admin("POST", "/reload", "ops-secret-0123456789abcdeX", &r);
	CHECK_INT(st, 401);
	h_resp_free(&r);
	st = admin("POST", "/reload", "ops-secret", &r); /* a prefix of a real one */
	CHECK_INT(st, 401);
	h_resp_free(&r);
	st = admin("POST", "/reload", SECRET_OPS "0", &r); /* longer */
	CHECK_INT(st, 401);
	h_resp_free(&r);
	test_end();

	test_begin("reload_200_with_token");
	st = admin("POST", "/reload", SECRET_OPS, &r);
	CHECK_MSG(st == 200, "status %ld: %s", st, h_excerpt(r.body, r.body_len, 300));
	CHECK(r.body && strstr(r.body, "\"ok\":true"));
	h_resp_free(&r);
	st = admin("POST", "/reload", SECRET_CI, &r); /* the second token works too */
	CHECK_INT(st, 200);
	h_resp_free(&r);
	test_end();

	test_begin("reload_invalid_config_400_file_line");
	write_file(cfg_path, gateway_yaml(true));
	st = admin("POST", "/reload", SECRET_OPS, &r);
	CHECK_INT(st, 400);
	char want[1100];
	snprintf(want, sizeof(want), "%s:3:", cfg_path);
	CHECK_MSG(r.body && strstr(r.body, want) && strstr(r.body, "bogus_key"),
		  "error should name %s and the key: %s", want, h_excerpt(r.body, r.body_len, 300));
	h_resp_free(&r);
	write_file(cfg_path, gateway_yaml(false));
	/* the old configuration still serves */
	char url[128];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/?size=10", gw_port);
	CHECK_INT(h_get(url, &r), 200);
	h_resp_free(&r);
	test_end();
}

static char *scrape(void);

static void test_errors(void)
{
	struct h_resp r;
	struct h_buf b = {0};
	long st;

	test_begin("unknown_path_404");
	st = admin("GET", "/nope", NULL, &r);
	CHECK_INT(st, 404);
	CHECK(r.body && strstr(r.body, "error"));
	h_resp_free(&r);
	test_end();

	test_begin("wrong_method_405");
	st = admin("GET", "/reload", NULL, &r);
	CHECK_INT(st, 405);
	char allow[64];
	CHECK(h_resp_header(&r, "Allow", allow, sizeof(allow)) && !strcmp(allow, "POST"));
	h_resp_free(&r);
	st = admin("DELETE", "/metrics", NULL, &r);
	CHECK_INT(st, 405);
	h_resp_free(&r);
	test_end();

	test_begin("malformed_request_400_with_reason");
	static const char *const bad[] = {
		"GARBAGE\r\n\r\n", "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
		"GET /healthz HTTP/1.1\r\n\r\n",      /* 1.1 without Host */
		"GET /healthz HTTP/1.1\nHost: x\n\n", /* bare LF */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		b.len = 0;
		enum h_read_end e =
			h_raw_roundtrip("127.0.0.1", admin_port, bad[i], strlen(bad[i]), &b, 3000);
		int codes[4];
		int n = h_statuses(b.data, b.len, codes, 4);
		CHECK_MSG(n == 1 && codes[0] == 400, "request %zu: %d responses, first %d (%s)", i,
			  n, n ? codes[0] : 0, h_read_end_name(e));
		CHECK_MSG(b.len && h_excerpt(b.data, b.len, 400) &&
				  strstr(h_excerpt(b.data, b.len, 400), "malformed"),
			  "no reason in the 400: %s", h_excerpt(b.data, b.len, 300));
		CHECK_MSG(e == H_READ_CLOSED, "connection not closed after a 400: %s",
			  h_read_end_name(e));
	}
	test_end();

	test_begin("admin_limits_head_and_body");
	/* a head over 8 KiB → 431; a body over 1 MiB → 413 (announced, not sent) */
	char *big = malloc(12000);
	int n = snprintf(big, 12000, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
	memset(big + n, 'a', 10000);
	memcpy(big + n + 10000, "\r\n\r\n", 5);
	b.len = 0;
	h_raw_roundtrip("127.0.0.1", admin_port, big, strlen(big), &b, 3000);
	int codes[2];
	CHECK_MSG(h_statuses(b.data, b.len, codes, 2) >= 1 && codes[0] == 431, "big head: %s",
		  h_excerpt(b.data, b.len, 200));
	free(big);
	const char *huge = "POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n";
	b.len = 0;
	h_raw_roundtrip("127.0.0.1", admin_port, huge, strlen(huge), &b, 3000);
	CHECK_MSG(h_statuses(b.data, b.len, codes, 2) >= 1 && codes[0] == 413, "big body: %s",
		  h_excerpt(b.data, b.len, 200));
	test_end();

	test_begin("admin_connection_limit");
	/* 70 connections that each sent a partial head fill the 64 slots; a
	 * newcomer still gets its /healthz (the connection without progress for
	 * longest makes room: the oldest ones are closed), and the gateway's
	 * own port is not affected */
	int fds[70], nfd = 0;
	for (int i = 0; i < 70; i++) {
		int fd = h_connect("127.0.0.1", admin_port, 2000);
		if (fd >= 0) {
			fds[nfd++] = fd;
			h_send_str(fd, "GET /heal");
		}
		h_sleep_ms(2); /* distinct progress times: the first is the oldest */
	}
	CHECK_INT(nfd, 70);
	long hs = admin("GET", "/healthz", NULL, &r);
	h_resp_free(&r);
	CHECK_MSG(hs == 200, "/healthz with the table full of partial heads: %ld", hs);
	b.len = 0;
	enum h_read_end e = h_read_all(fds[0], &b, 3000, 0);
	CHECK_MSG(e == H_READ_CLOSED || e == H_READ_RESET, "the oldest connection: %s",
		  h_read_end_name(e));
	char url[128];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/?size=10", gw_port);
	CHECK_INT(h_get(url, &r), 200);
	h_resp_free(&r);
	for (int i = 0; i < nfd; i++)
		close(fds[i]);
	char *m = scrape();
	CHECK_MSG(m && metric(m, "reflex_admin_connections_evicted_total") >= 7, "evictions %.0f",
		  m ? metric(m, "reflex_admin_connections_evicted_total") : -1);
	free(m);
	test_end();

	test_begin("admin_slowloris_408");
	/* a head that trickles in (a header line a second) is cut off 10 s after
	 * its first byte with 408, however steady the trickle */
	int sfd = h_connect("127.0.0.1", admin_port, 2000);
	double t0 = h_now_ms();
	CHECK(sfd >= 0 && h_send_str(sfd, "GET /healthz HTTP/1.1\r\n") == 0);
	b.len = 0;
	e = H_READ_TIMEOUT;
	for (int i = 0; i < 14 && e == H_READ_TIMEOUT; i++) {
		h_send_str(sfd, "X-Slow: 1\r\n");
		e = h_read_all(sfd, &b, 1000, 0);
	}
	double took = h_now_ms() - t0;
	CHECK_MSG(e == H_READ_CLOSED && h_statuses(b.data, b.len, codes, 2) == 1 && codes[0] == 408,
		  "after %.0f ms: %s, %s", took, h_read_end_name(e), h_excerpt(b.data, b.len, 200));
	if (sfd >= 0)
		close(sfd);
	test_end();

	test_begin("keepalive_and_pipelining");
	int fd = h_connect("127.0.0.1", admin_port, 2000);
	const char *two = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
			  "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
	CHECK(fd >= 0 && h_send_str(fd, two) == 0);
	b.len = 0;
	CHECK_INT(h_read_responses(fd, &b, 2, 3000), H_READ_DONE);
	int c2[3];
	CHECK_INT(h_statuses(b.data, b.len, c2, 3), 2);
	close(fd);
	test_end();
	h_buf_free(&b);
}

static char *scrape(void)
{
	struct h_resp r;
	long st = admin("GET", "/metrics", NULL, &r);
	char *text = NULL;

	if (st == 200 && r.body)
		text = strndup(r.body, r.body_len);
	char ct[128] = "";
	h_resp_header(&r, "Content-Type", ct, sizeof(ct));
	CHECK_MSG(strstr(ct, "text/plain") && strstr(ct, "version=0.0.4"), "Content-Type %s", ct);
	h_resp_free(&r);
	CHECK_MSG(text, "GET /metrics: %ld", st);
	return text;
}

static void test_metrics(void)
{
	unsigned ns;
	char *before, *after;

	test_begin("metrics_valid_exposition");
	before = scrape();
	if (before) {
		CHECK_INT(prom_validate(before, strlen(before), &ns), 0);
		CHECK_MSG(ns > 100, "only %u samples", ns);
		CHECK(metric(before, "reflex_build_info{version=\"0.1.0\"}") == 1 ||
		      strstr(before, "reflex_build_info{version="));
		CHECK(metric(before, "reflex_process_start_time_seconds") > 1.6e9);
		CHECK(strstr(before,
			     "reflex_stage_duration_seconds_bucket{stage=\"total\",le=\"5e-05\"}"));
		CHECK(strstr(before, "reflex_stage_duration_seconds_bucket{stage=\"upstream_ttfb\","
				     "le=\"+Inf\"}"));
		CHECK(strstr(before, "reflex_refusals_total{reason=\"bad_request\"}"));
		CHECK(strstr(before, "reflex_connections_closed_total{reason=\"idle\"}"));
		CHECK(strstr(before,
			     "reflex_pool_responses_total{pool=\"default\",class=\"2xx\"}"));
		CHECK(strstr(before, "reflex_access_log_dropped_total"));
		CHECK(strstr(before, "reflex_route_responses_total{route=\"0\",host=\"\","
				     "path_prefix=\"/dead/\",class=\"5xx\"}"));
		CHECK(strstr(before, "reflex_cache_requests_total{result=\"hit\"}"));
		CHECK(strstr(before, "reflex_upstream_endpoint_available{pool=\"default\""));
		CHECK(strstr(before, "reflex_pool_retries_total"));
	}
	test_end();

	test_begin("metrics_counters_move_with_traffic");
	char url[128];
	struct h_resp r;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/?size=1000", gw_port);
	for (int i = 0; i < 10; i++) {
		CHECK_INT(h_get(url, &r), 200);
		h_resp_free(&r);
	}
	/* one refusal: a malformed request to the gateway */
	struct h_buf b = {0};
	h_raw_roundtrip("127.0.0.1", gw_port, "BAD\r\n\r\n", 7, &b, 3000);
	h_buf_free(&b);
	static const struct {
		const char *sample;
		int n;
	} grow[] = {
		{"reflex_requests_total", 10},
		{"reflex_responses_total{class=\"2xx\"}", 10},
		{"reflex_pool_responses_total{pool=\"default\",class=\"2xx\"}", 10},
		{"reflex_connections_accepted_total", 10},
		{"reflex_client_bytes_out_total", 10000},
		{"reflex_client_bytes_in_total", 10 * 40},
		{"reflex_stage_duration_seconds_count{stage=\"total\"}", 10},
		{"reflex_stage_duration_seconds_count{stage=\"upstream_ttfb\"}", 10},
		{"reflex_stage_duration_seconds_bucket{stage=\"total\",le=\"+Inf\"}", 10},
		{"reflex_refusals_total{reason=\"bad_request\"}", 1},
		{"reflex_responses_total{class=\"4xx\"}", 1},
		{"reflex_admin_requests_total", 1},
	};
	size_t n_grow = sizeof(grow) / sizeof(grow[0]), grown = 0;
	/* A worker counts a request once its response went out, which may be
	 * after the client has it: scrape until the counters caught up (5 s). */
	after = NULL;
	for (double end = h_now_ms() + 5000;; h_sleep_ms(50)) {
		free(after);
		after = scrape();
		for (grown = 0; before && after && grown < n_grow; grown++)
			if (metric(after, grow[grown].sample) - metric(before, grow[grown].sample) <
			    grow[grown].n)
				break;
		if (!before || !after || grown == n_grow || h_now_ms() >= end)
			break;
	}
	if (before && after) {
		CHECK_INT(prom_validate(after, strlen(after), &ns), 0);
		for (size_t i = 0; i < n_grow; i++)
			CHECK_MSG(metric(after, grow[i].sample) - metric(before, grow[i].sample) >=
					  grow[i].n,
				  "%s: %.0f → %.0f (want +%d)", grow[i].sample,
				  metric(before, grow[i].sample), metric(after, grow[i].sample),
				  grow[i].n);
		CHECK(metric(after, "reflex_upstream_connections_opened_total") >= 1);
		CHECK(metric(after, "reflex_stage_duration_seconds_sum{stage=\"total\"}") > 0);
	}
	free(before);
	free(after);
	test_end();
}

/* A reload that reorders pools and routes moves no counts between series:
 * pools are counted by name, routes by their label set. */
static void test_metrics_after_reorder(void)
{
	static const char *def2 = "reflex_pool_responses_total{pool=\"default\",class=\"2xx\"}",
			  *dead5 = "reflex_pool_responses_total{pool=\"dead\",class=\"5xx\"}",
			  *extra2 = "reflex_pool_responses_total{pool=\"extra\",class=\"2xx\"}",
			  *rdead0 = "reflex_route_responses_total{route=\"0\",host=\"\","
				    "path_prefix=\"/dead/\",class=\"5xx\"}",
			  *rdead1 = "reflex_route_responses_total{route=\"1\",host=\"\","
				    "path_prefix=\"/dead/\",class=\"5xx\"}",
			  *rextra0 = "reflex_route_responses_total{route=\"0\",host=\"\","
				     "path_prefix=\"/extra/\",class=\"2xx\"}";
	struct h_resp r;
	char url[128];
	char *before, *after = NULL;

	test_begin("metrics_pools_keep_counts_across_reorder");
	before = scrape();
	CHECK(before && metric(before, def2) >= 10 && metric(before, dead5) >= 1 &&
	      metric(before, rdead0) >= 1);
	reordered = true;
	write_file(cfg_path, gateway_yaml(false));
	CHECK_INT(admin("POST", "/reload", SECRET_OPS, &r), 200);
	h_resp_free(&r);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/extra/?size=10", gw_port);
	CHECK_INT(h_get(url, &r), 200);
	h_resp_free(&r);
	/* counted once its response went out: scrape until it shows (5 s) */
	for (double end = h_now_ms() + 5000; h_now_ms() < end; h_sleep_ms(50)) {
		free(after);
		after = scrape();
		if (!after || metric(after, extra2) >= 1)
			break;
	}
	if (before && after) {
		CHECK_MSG(metric(after, def2) == metric(before, def2), "default 2xx: %.0f → %.0f",
			  metric(before, def2), metric(after, def2));
		CHECK_MSG(metric(after, dead5) == metric(before, dead5), "dead 5xx: %.0f → %.0f",
			  metric(before, dead5), metric(after, dead5));
		CHECK_MSG(metric(after, extra2) == 1, "extra 2xx: %.0f", metric(after, extra2));
		/* the /dead/ route is route 1 now: a new series; route 0 is /extra/'s */
		CHECK_MSG(metric(after, rdead1) == 0, "%s %.0f", rdead1, metric(after, rdead1));
		CHECK_MSG(metric(after, rextra0) == 1, "%s %.0f", rextra0, metric(after, rextra0));
		CHECK(metric(after, rdead0) == -1);
	}
	free(before);
	free(after);
	reordered = false;
	write_file(cfg_path, gateway_yaml(false));
	CHECK_INT(admin("POST", "/reload", SECRET_OPS, &r), 200);
	h_resp_free(&r);
	test_end();
}

/* A pool whose only endpoint refuses becomes unready once every worker has
 * seen it fail. */
static void test_readyz_unready(void)
{
	struct h_resp r;
	char url[128];
	long st = 200;
	struct json *j = NULL;

	test_begin("readyz_503_with_reason");
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/dead/x", gw_port);
	for (int i = 0; i < 30 && st == 200; i++) {
		long s = h_get(url, &r); /* a fresh connection each: both workers get some */
		CHECK_MSG(s == 502, "dead pool: %ld", s);
		h_resp_free(&r);
		json_free(j);
		j = admin_json("/readyz", &st);
	}
	CHECK_INT(st, 503);
	CHECK_MSG(strstr(json_str(json_get(j, "reason"), ""), "dead"), "reason: %s",
		  json_str(json_get(j, "reason"), "(none)"));
	json_free(j);
	j = admin_json("/pool", &st);
	const struct json *pools = json_get(j, "pools");
	for (size_t i = 0; pools && i < pools->n; i++)
		if (!strcmp(json_str(json_get(&pools->items[i], "name"), ""), "dead")) {
			const struct json *ep = &json_get(&pools->items[i], "endpoints")->items[0];
			CHECK_STR(json_str(json_get(ep, "state"), ""), "failing");
			CHECK(json_num(json_get(ep, "fails"), 0) >= 1);
		}
	json_free(j);
	test_end();
}

static int exit_code(int status)
{
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void check_config_error(const char *name, const char *yaml, unsigned line,
			       const char *needle)
{
	char *out = NULL;
	const char *cfg = h_write_config("%s", yaml);
	char *argv[] = {(char *)h_reflexd_path(), "--config", (char *)cfg, "--check-config", NULL};
	char want[1100];

	test_begin(name);
	int st = h_run(argv, 5000, &out);
	snprintf(want, sizeof(want), "%s:%u:", cfg, line);
	CHECK_MSG(exit_code(st) == 1, "exit %d: %s", exit_code(st), out ? out : "");
	CHECK_MSG(out && strstr(out, want) && strstr(out, needle), "want \"%s\" and \"%s\" in: %s",
		  want, needle, out ? out : "");
	free(out);
	test_end();
}

/* The admin API on a non-loopback address says at start that its reads
 * are open; on loopback (the default, and this scenario's gateway) it
 * says nothing. */
static void test_non_loopback_warning(void)
{
	int port = h_free_port(), aport = h_free_port();
	const char *cfg =
		h_write_config("workers: 1\nlisten: [\"127.0.0.1:%d\"]\n"
			       "upstream: [\"127.0.0.1:%d\"]\n"
			       "admin: {listen: \"0.0.0.0:%d\"}\ntimeouts: {drain: 500ms}\n",
			       port, o_port, aport);

	test_begin("admin_non_loopback_warns");
	CHECK_MSG(!h_log_contains(gw, "not a loopback address"), "%s",
		  "a loopback admin API warned about being open");
	struct h_proc *open_gw = h_start_reflexd_config("reflexd-open-admin", port, cfg);
	CHECK(open_gw != NULL);
	if (open_gw)
		CHECK_MSG(h_wait_log(open_gw, "is not a loopback address", 5000),
			  "no warning for admin.listen 0.0.0.0:%d", aport);
	test_end();
	h_finish(open_gw, 5000);
}

static void test_config_errors(void)
{
	char *out = NULL;

	check_config_error("config_admin_unknown_key",
			   "upstream: [\"127.0.0.1:19001\"]\nadmin:\n  listen: 127.0.0.1:9\n"
			   "  tokens: x\n",
			   4, "admin.tokens");
	check_config_error("config_admin_bad_listen",
			   "upstream: [\"127.0.0.1:19001\"]\nadmin: {listen: \"nohost\"}\n", 2,
			   "admin.listen");
	check_config_error("config_access_log_bad_sample",
			   "upstream: [\"127.0.0.1:19001\"]\naccess_log:\n  path: /tmp/x.log\n"
			   "  sample: 1.5\n",
			   4, "access_log.sample");
	check_config_error("config_route_access_log_not_bool",
			   "upstream: [\"127.0.0.1:19001\"]\nroutes:\n"
			   "  - {path_prefix: /a/, pool: default, access_log: maybe}\n",
			   3, "access_log");

	test_begin("config_admin_valid_forms");
	/* the token file must exist now: --check-config reads it as the start does */
	const char *cfg = h_write_config(
		"upstream: [\"127.0.0.1:19001\"]\n"
		"admin: {listen: /tmp/reflex-admin.sock, token_file: \"%s\", audit_log: /y}\n"
		"access_log: {path: \"-\", sample: 0.25, query: true}\n"
		"routes:\n  - {path_prefix: /a/, pool: default, access_log: false}\n",
		token_path);
	char *argv[] = {(char *)h_reflexd_path(), "--config", (char *)cfg, "--check-config", NULL};
	int st = h_run(argv, 5000, &out);
	CHECK_MSG(exit_code(st) == 0, "exit %d: %s", exit_code(st), out ? out : "");
	free(out);
	out = NULL;
	char *argv2[] = {
		(char *)h_reflexd_path(), "--upstream", "127.0.0.1:19001", "--admin", "off",
		"--check-config",	  NULL};
	st = h_run(argv2, 5000, &out);
	CHECK_MSG(exit_code(st) == 0, "--admin off: exit %d: %s", exit_code(st), out ? out : "");
	free(out);
	out = NULL;
	char *argv3[] = {
		(char *)h_reflexd_path(), "--upstream", "127.0.0.1:19001", "--admin", "nohost",
		"--check-config",	  NULL};
	st = h_run(argv3, 5000, &out);
	CHECK_MSG(exit_code(st) == 1 && out && strstr(out, "--admin:"),
		  "--admin nohost: exit %d: %s", exit_code(st), out ? out : "");
	free(out);
	test_end();
}

int main(void)
{
	h_init("21_admin", 120);
	gw_port = h_free_port();
	admin_port = h_free_port();
	o_port = h_free_port();
	dead_port = h_free_port(); /* nothing listens there */
	token_path = file_path("tokens");
	audit_path = file_path("audit.log");
	unlink(audit_path);
	write_file(token_path, "# admin tokens\nops " SECRET_OPS "\n\nci " SECRET_CI "\n");
	chmod(token_path, 0600);
	cfg_path = h_write_config("%s", gateway_yaml(false));

	if (!h_start_origin("origin", o_port, 1))
		return test_exit_code();
	gw = h_start_reflexd_config("reflexd", gw_port, cfg_path);
	if (!gw)
		return test_exit_code();
	if (h_wait_port("127.0.0.1", admin_port, 5000)) {
		test_begin("admin_listening");
		CHECK_MSG(0,
			  "the admin API does not listen on %d (is admin_start linked into "
			  "reflexd?)",
			  admin_port);
		test_end();
		h_finish(gw, 10000);
		return test_exit_code();
	}
	test_health();
	test_read_endpoints();
	test_auth();
	test_errors();
	test_metrics();
	test_readyz_unready();
	test_metrics_after_reorder();
	test_config_errors();
	test_non_loopback_warning();
	h_finish(gw, 10000);
	return test_exit_code();
}
