/* reflexctl — a thin command-line client of the reflexd admin API.
 *
 * Every subcommand is one row of `commands[]`: a group ("audit", and later
 * "cache", "limits", "rules", "events") plus a name, its usage and a run
 * function. Adding a command is adding a row and a function; the help at
 * every level (`reflexctl --help`, `reflexctl GROUP --help`,
 * `reflexctl [GROUP] CMD --help`) is generated from the table.
 *
 * Exit codes: 0 ok, 1 the gateway said no or a check failed, 2 usage,
 * 3 cannot connect to the admin API.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control/client.h"
#include "control/json.h"
#include "core/audit.h"

#define DEFAULT_ADMIN "http://127.0.0.1:9901"

enum { EXIT_OK = 0, EXIT_NO = 1, EXIT_USAGE = 2, EXIT_CONNECT = 3 };

struct ctl {
	struct ctl_target target;
	const char *admin;
	const char *token_file;
	char token[512];
	char token_name[64];
	bool json;
	unsigned timeout_ms;
};

struct command {
	const char *group; /* NULL: a top-level command */
	const char *name;
	const char *args;
	const char *summary;
	const char *help; /* details, after the usage line */
	int (*run)(struct ctl *c, int argc, char **argv);
};

static const struct command commands[];
static const size_t n_commands;

static const char *prog = "reflexctl";

/* One line on stderr, whatever the message carries: error texts quote what
 * the server sent, and a garbage or hostile answer must not break the line
 * or reach the terminal as escape sequences. Control bytes print as \xNN;
 * the line stops after 1000 bytes. */
static int __attribute__((format(printf, 2, 3))) fail(int code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: ", prog);
	for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			fprintf(stderr, "\\x%02x", *p);
		else
			fputc(*p, stderr);
	}
	if (n >= (int)sizeof(msg))
		fputs("...", stderr);
	fputc('\n', stderr);
	return code;
}

/* ---- token file ------------------------------------------------------------ */

/* The first "NAME SECRET" line of the file. */
static int load_token(struct ctl *c)
{
	char line[1024];
	FILE *f;

	if (!c->token_file || c->token[0])
		return 0;
	f = fopen(c->token_file, "re");
	if (!f)
		return fail(EXIT_USAGE, "--token-file %s: %s", c->token_file, strerror(errno));
	{
		struct stat st;

		if (fstat(fileno(f), &st) == 0 && !S_ISREG(st.st_mode)) {
			fclose(f);
			return fail(EXIT_USAGE, "--token-file %s: not a regular file",
				    c->token_file);
		}
	}
	while (fgets(line, sizeof(line), f)) {
		char *p = line, *name, *secret, *save;

		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p || *p == '#' || *p == '\n' || *p == '\r')
			continue;
		name = strtok_r(p, " \t\r\n", &save);
		secret = strtok_r(NULL, " \t\r\n", &save);
		if (!name || !secret || strlen(secret) >= sizeof(c->token)) {
			fclose(f);
			return fail(EXIT_USAGE, "--token-file %s: expected \"NAME SECRET\" lines",
				    c->token_file);
		}
		snprintf(c->token_name, sizeof(c->token_name), "%s", name);
		strcpy(c->token, secret);
		memset(line, 0, sizeof(line));
		fclose(f);
		return 0;
	}
	fclose(f);
	return fail(EXIT_USAGE, "--token-file %s: no token in the file", c->token_file);
}

/* ---- requests -------------------------------------------------------------- */

/* EXIT_OK with *r filled (any status), or an exit code after a message. */
static int call_body(struct ctl *c, const char *method, const char *path, bool auth,
		     const char *body, struct ctl_resp *r)
{
	char err[512];
	int rc;

	if (auth && (rc = load_token(c)))
		return rc;
	rc = ctl_request(&c->target, method, path, auth && c->token[0] ? c->token : NULL, body,
			 body ? strlen(body) : 0, c->timeout_ms, r, err, sizeof(err));
	if (rc == CTL_ECONNECT)
		return fail(EXIT_CONNECT, "%s", err);
	if (rc)
		return fail(EXIT_CONNECT, "%s", err);
	return EXIT_OK;
}

static int call(struct ctl *c, const char *method, const char *path, bool auth, struct ctl_resp *r)
{
	return call_body(c, method, path, auth, NULL, r);
}

/* The gateway's "error" member, or the body. */
static const char *error_text(const struct ctl_resp *r, struct json **j)
{
	char err[64];

	*j = json_parse(r->body, r->len, err, sizeof(err));
	const char *e = json_str(json_get(*j, "error"), NULL);
	return e ? e : r->body;
}

static int http_failure(const char *what, const struct ctl_resp *r)
{
	struct json *j = NULL;
	const char *e = error_text(r, &j);
	int rc = fail(EXIT_NO, "%s: %d: %s", what, r->status,
		      e && *e ? e : "(no body: is this a reflex admin API?)");

	json_free(j);
	return rc;
}

/* GET path as JSON; EXIT_OK with *out, or an exit code after a message. */
static int get_json(struct ctl *c, const char *path, struct ctl_resp *r, struct json **out)
{
	char err[256];
	int rc = call(c, "GET", path, false, r);

	*out = NULL;
	if (rc)
		return rc;
	if (r->status != 200) {
		char what[300];

		snprintf(what, sizeof(what), "GET %s", path);
		rc = http_failure(what, r);
		ctl_resp_free(r);
		return rc;
	}
	*out = json_parse(r->body, r->len, err, sizeof(err));
	if (!*out) {
		/* not a reflex admin API answering: as good as no answer */
		ctl_resp_free(r);
		return fail(EXIT_CONNECT, "GET %s: the answer is not JSON (%s)", path, err);
	}
	return EXIT_OK;
}

/* ---- output helpers ---------------------------------------------------------- */

static void pp(FILE *f, const struct json *v, int indent);

static void pp_str(FILE *f, const char *s, size_t n)
{
	fputc('"', f);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static void pp_num(FILE *f, double d)
{
	if (d == floor(d) && fabs(d) < 9007199254740992.0)
		fprintf(f, "%.0f", d);
	else
		fprintf(f, "%.17g", d);
}

static void pp(FILE *f, const struct json *v, int indent)
{
	switch (v->type) {
	case JSON_NULL:
		fputs("null", f);
		break;
	case JSON_BOOL:
		fputs(v->b ? "true" : "false", f);
		break;
	case JSON_NUMBER:
		pp_num(f, v->num);
		break;
	case JSON_STRING:
		pp_str(f, v->str, v->len);
		break;
	case JSON_ARRAY:
	case JSON_OBJECT: {
		bool obj = v->type == JSON_OBJECT;
		if (!v->n) {
			fputs(obj ? "{}" : "[]", f);
			break;
		}
		fputs(obj ? "{\n" : "[\n", f);
		for (size_t i = 0; i < v->n; i++) {
			fprintf(f, "%*s", indent + 2, "");
			if (obj) {
				pp_str(f, v->keys[i], strlen(v->keys[i]));
				fputs(": ", f);
			}
			pp(f, &v->items[i], indent + 2);
			fputs(i + 1 < v->n ? ",\n" : "\n", f);
		}
		fprintf(f, "%*s%c", indent, "", obj ? '}' : ']');
		break;
	}
	}
}

static void print_body(const struct ctl_resp *r)
{
	fwrite(r->body, 1, r->len, stdout);
	if (r->len && r->body[r->len - 1] != '\n')
		fputc('\n', stdout);
}

static uint64_t u(const struct json *v, const char *path)
{
	double d = json_num(json_path(v, path), 0);
	return d > 0 ? (uint64_t)d : 0;
}

static const char *human_bytes(uint64_t b, char *out, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double d = (double)b;
	unsigned i = 0;

	while (d >= 1024 && i < 4) {
		d /= 1024;
		i++;
	}
	snprintf(out, len, i ? "%.1f %s" : "%.0f %s", d, units[i]);
	return out;
}

static const char *human_us(uint64_t us, char *out, size_t len)
{
	if (us >= 1000000)
		snprintf(out, len, "%.2f s", (double)us / 1e6);
	else if (us >= 1000)
		snprintf(out, len, "%.2f ms", (double)us / 1e3);
	else
		snprintf(out, len, "%llu µs", (unsigned long long)us);
	return out;
}

/* ---- commands ------------------------------------------------------------------ */

/* GET path and print it (pretty, or as sent with --json). */
static int show_json(struct ctl *c, const char *path)
{
	struct ctl_resp r = {0};
	struct json *j;
	int rc;

	if ((rc = get_json(c, path, &r, &j)))
		return rc;
	if (c->json) {
		print_body(&r);
	} else {
		pp(stdout, j, 0);
		fputc('\n', stdout);
	}
	json_free(j);
	ctl_resp_free(&r);
	return EXIT_OK;
}

static int cmd_status(struct ctl *c, int argc, char **argv)
{
	struct ctl_resp hz = {0}, rz = {0}, st = {0};
	struct json *ready = NULL, *stats = NULL;
	int rc;

	if (argc)
		return fail(EXIT_USAGE, "status: unexpected argument \"%s\"", argv[0]);
	if ((rc = call(c, "GET", "/healthz", false, &hz)))
		return rc;
	bool alive = hz.status == 200;
	ctl_resp_free(&hz);
	if ((rc = call(c, "GET", "/readyz", false, &rz)))
		return rc;
	char err[128];
	ready = json_parse(rz.body, rz.len, err, sizeof(err));
	bool is_ready = rz.status == 200;
	const char *reason = json_str(json_get(ready, "reason"), NULL);
	if ((rc = get_json(c, "/stats", &st, &stats))) {
		json_free(ready);
		ctl_resp_free(&rz);
		return rc;
	}
	const char *version = json_str(json_get(stats, "version"), "?");
	uint64_t uptime = u(stats, "uptime_s");
	const struct json *workers = json_get(stats, "workers");
	unsigned nw = workers && workers->type == JSON_ARRAY ? (unsigned)workers->n : 0;

	if (c->json) {
		printf("{\"admin\":");
		pp_str(stdout, c->target.text, strlen(c->target.text));
		printf(",\"alive\":%s,\"ready\":%s,\"reason\":", alive ? "true" : "false",
		       is_ready ? "true" : "false");
		if (reason)
			pp_str(stdout, reason, strlen(reason));
		else
			fputs("null", stdout);
		printf(",\"version\":");
		pp_str(stdout, version, strlen(version));
		printf(",\"uptime_s\":%llu,\"workers\":%u,\"requests\":%llu,"
		       "\"connections_open\":%llu}\n",
		       (unsigned long long)uptime, nw,
		       (unsigned long long)u(stats, "totals.requests"),
		       (unsigned long long)u(stats, "totals.connections_open"));
	} else {
		printf("reflexd %s at %s: %s, %s%s%s\n", version, c->target.text,
		       alive ? "alive" : "NOT ALIVE", is_ready ? "ready" : "NOT READY",
		       reason ? ": " : "", reason ? reason : "");
		printf("uptime %llus, %u workers, %llu requests, %llu connections open\n",
		       (unsigned long long)uptime, nw,
		       (unsigned long long)u(stats, "totals.requests"),
		       (unsigned long long)u(stats, "totals.connections_open"));
	}
	json_free(ready);
	json_free(stats);
	ctl_resp_free(&rz);
	ctl_resp_free(&st);
	return alive && is_ready ? EXIT_OK : EXIT_NO;
}

static void print_block(const struct json *s, const char *indent)
{
	char b1[32], b2[32], l1[32], l2[32];
	const struct json *ref = json_get(s, "refusals");

	printf("%srequests %llu   responses 1xx %llu  2xx %llu  3xx %llu  4xx %llu  5xx %llu\n",
	       indent, (unsigned long long)u(s, "requests"),
	       (unsigned long long)u(s, "responses.1xx"), (unsigned long long)u(s, "responses.2xx"),
	       (unsigned long long)u(s, "responses.3xx"), (unsigned long long)u(s, "responses.4xx"),
	       (unsigned long long)u(s, "responses.5xx"));
	printf("%sconnections accepted %llu  open %llu   bytes in %s  out %s\n", indent,
	       (unsigned long long)u(s, "connections_accepted"),
	       (unsigned long long)u(s, "connections_open"),
	       human_bytes(u(s, "bytes_in"), b1, sizeof(b1)),
	       human_bytes(u(s, "bytes_out"), b2, sizeof(b2)));
	printf("%supstream connects %llu  reuses %llu  retries %llu\n", indent,
	       (unsigned long long)u(s, "upstream.connects"),
	       (unsigned long long)u(s, "upstream.reuses"),
	       (unsigned long long)u(s, "upstream.retries"));
	printf("%slatency (total) p50 %s  p99 %s   upstream ttfb p50 %s  p99 %s\n", indent,
	       human_us(u(s, "latency_us.total.p50"), b1, sizeof(b1)),
	       human_us(u(s, "latency_us.total.p99"), b2, sizeof(b2)),
	       human_us(u(s, "latency_us.upstream_ttfb.p50"), l1, sizeof(l1)),
	       human_us(u(s, "latency_us.upstream_ttfb.p99"), l2, sizeof(l2)));
	printf("%srefusals", indent);
	if (!ref || !ref->n)
		printf(" none");
	for (size_t i = 0; ref && ref->type == JSON_OBJECT && i < ref->n; i++)
		printf(" %s=%.0f", ref->keys[i], ref->items[i].num);
	printf("\n");
}

static int cmd_stats(struct ctl *c, int argc, char **argv)
{
	struct ctl_resp r = {0};
	struct json *j;
	int rc;

	if (argc)
		return fail(EXIT_USAGE, "stats: unexpected argument \"%s\"", argv[0]);
	if ((rc = get_json(c, "/stats", &r, &j)))
		return rc;
	if (c->json) {
		print_body(&r);
	} else {
		printf("reflexd %s, up %llus\n", json_str(json_get(j, "version"), "?"),
		       (unsigned long long)u(j, "uptime_s"));
		printf("totals:\n");
		print_block(json_get(j, "totals"), "  ");
		const struct json *ws = json_get(j, "workers");
		for (size_t i = 0; ws && ws->type == JSON_ARRAY && i < ws->n; i++) {
			printf("worker %.0f:\n",
			       json_num(json_get(&ws->items[i], "id"), (double)i));
			print_block(&ws->items[i], "  ");
		}
		printf("access log: %s, written %llu, dropped %llu\n",
		       json_get(j, "access_log") && json_path(j, "access_log.enabled")->b ? "on"
											  : "off",
		       (unsigned long long)u(j, "access_log.written"),
		       (unsigned long long)u(j, "access_log.dropped"));
	}
	json_free(j);
	ctl_resp_free(&r);
	return EXIT_OK;
}

static int cmd_pool(struct ctl *c, int argc, char **argv)
{
	struct ctl_resp r = {0};
	struct json *j;
	int rc;

	if (argc)
		return fail(EXIT_USAGE, "pool: unexpected argument \"%s\"", argv[0]);
	if ((rc = get_json(c, "/pool", &r, &j)))
		return rc;
	if (c->json) {
		print_body(&r);
	} else {
		const struct json *pools = json_get(j, "pools");

		printf("%-16s %-28s %-8s %6s %8s %10s %6s\n", "POOL", "ENDPOINT", "STATE", "WEIGHT",
		       "INFLIGHT", "REQUESTS", "FAILS");
		for (size_t p = 0; pools && p < pools->n; p++) {
			const struct json *pl = &pools->items[p], *eps = json_get(pl, "endpoints");
			for (size_t e = 0; eps && e < eps->n; e++) {
				const struct json *ep = &eps->items[e];
				printf("%-16s %-28s %-8s %6llu %8llu %10llu %6llu\n",
				       json_str(json_get(pl, "name"), "?"),
				       json_str(json_get(ep, "address"), "?"),
				       json_str(json_get(ep, "state"), "?"),
				       (unsigned long long)u(ep, "weight"),
				       (unsigned long long)u(ep, "inflight"),
				       (unsigned long long)u(ep, "requests"),
				       (unsigned long long)u(ep, "fails"));
			}
		}
	}
	json_free(j);
	ctl_resp_free(&r);
	return EXIT_OK;
}

static int cmd_config(struct ctl *c, int argc, char **argv)
{
	if (argc)
		return fail(EXIT_USAGE, "config: unexpected argument \"%s\"", argv[0]);
	return show_json(c, "/config");
}

static int cmd_reload(struct ctl *c, int argc, char **argv)
{
	struct ctl_resp r = {0};
	int rc;

	if (argc)
		return fail(EXIT_USAGE, "reload: unexpected argument \"%s\"", argv[0]);
	if (!c->token_file)
		fprintf(stderr, "%s: reload: no --token-file given; the gateway will refuse\n",
			prog);
	if ((rc = call(c, "POST", "/reload", true, &r)))
		return rc;
	if (c->json)
		print_body(&r);
	if (r.status != 200) {
		if (c->json) {
			ctl_resp_free(&r);
			return EXIT_NO;
		}
		rc = http_failure("reload refused", &r);
		ctl_resp_free(&r);
		return rc;
	}
	if (!c->json)
		printf("configuration reloaded\n");
	ctl_resp_free(&r);
	return EXIT_OK;
}

static int cmd_audit_verify(struct ctl *c, int argc, char **argv)
{
	uint64_t bad = 0, n = 0;
	char err[512];

	if (argc != 1)
		return fail(EXIT_USAGE, "audit verify: give exactly one FILE (see --help)");
	int rc = audit_verify(argv[0], &bad, &n, err, sizeof(err));
	if (c->json) {
		printf("{\"file\":");
		pp_str(stdout, argv[0], strlen(argv[0]));
		if (rc == 0)
			printf(",\"ok\":true,\"records\":%llu}\n", (unsigned long long)n);
		else {
			printf(",\"ok\":false,\"first_bad_seq\":");
			if (rc > 0)
				printf("%llu", (unsigned long long)bad);
			else
				printf("null");
			printf(",\"error\":");
			pp_str(stdout, err, strlen(err));
			printf("}\n");
		}
	} else if (rc == 0) {
		printf("%s: %llu records, chain intact\n", argv[0], (unsigned long long)n);
	} else if (rc > 0) {
		printf("%s: chain BROKEN at record %llu: %s\n", argv[0], (unsigned long long)bad,
		       err);
	} else {
		fprintf(stderr, "%s: audit verify: %s\n", prog, err);
	}
	return rc == 0 ? EXIT_OK : EXIT_NO;
}

/* ---- top ------------------------------------------------------------------------- */

struct top_opts {
	unsigned count; /* 0: until interrupted */
	unsigned interval_ms;
};

static int parse_count(const char *flag, const char *v, unsigned *out)
{
	char *end;
	unsigned long n;

	errno = 0;
	n = v ? strtoul(v, &end, 10) : 0;
	if (!v || !*v || *end || errno || n > 1000000000)
		return fail(EXIT_USAGE, "top: %s needs a whole number", flag);
	*out = (unsigned)n;
	return 0;
}

static void top_frame(struct ctl *c, bool tty, const struct json *st, const struct json *pool,
		      double rps, bool have_rate)
{
	const struct json *t = json_get(st, "totals");
	char p50[32], p99[32], stamp[32], rate[32];
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	human_us(u(t, "latency_us.total.p50"), p50, sizeof(p50));
	human_us(u(t, "latency_us.total.p99"), p99, sizeof(p99));
	if (have_rate)
		snprintf(rate, sizeof(rate), "%.1f", rps);
	else
		snprintf(rate, sizeof(rate), "-");
	/* hits (fresh and stale) over the requests that reached the cache; a
	 * gateway without a cache has no "cache" block: 0 */
	double hits = json_num(json_path(t, "cache.hits"), 0) +
		      json_num(json_path(t, "cache.stale"), 0),
	       misses = json_num(json_path(t, "cache.misses"), 0);
	double hit = hits + misses > 0 ? 100.0 * hits / (hits + misses) : 0;
	bool has_cache = hits + misses > 0;

	if (c->json) {
		printf("{\"time\":\"%s\",\"rps\":%s,\"p50_us\":%llu,\"p99_us\":%llu,"
		       "\"hit_ratio\":%.4f,\"connections_open\":%llu,\"requests\":%llu,"
		       "\"refusals\":",
		       stamp, have_rate ? rate : "null",
		       (unsigned long long)u(t, "latency_us.total.p50"),
		       (unsigned long long)u(t, "latency_us.total.p99"), hit / 100,
		       (unsigned long long)u(t, "connections_open"),
		       (unsigned long long)u(t, "requests"));
		const struct json *ref = json_get(t, "refusals");
		printf("{");
		for (size_t i = 0; ref && i < ref->n; i++)
			printf("%s\"%s\":%.0f", i ? "," : "", ref->keys[i], ref->items[i].num);
		printf("},\"pools\":[");
		const struct json *pools = json_get(pool, "pools");
		for (size_t p = 0; pools && p < pools->n; p++) {
			const struct json *eps = json_get(&pools->items[p], "endpoints");
			unsigned up = 0;
			for (size_t e = 0; eps && e < eps->n; e++)
				up += !strcmp(json_str(json_get(&eps->items[e], "state"), ""),
					      "up");
			printf("%s{\"name\":\"%s\",\"up\":%u,\"endpoints\":%zu}", p ? "," : "",
			       json_str(json_get(&pools->items[p], "name"), "?"), up,
			       eps ? eps->n : 0);
		}
		printf("]}\n");
		fflush(stdout);
		return;
	}
	const char *bold = tty ? "\033[1m" : "", *plain = tty ? "\033[0m" : "";
	if (tty)
		fputs("\033[H\033[2J", stdout); /* home + clear: no curses needed */
	printf("%s%s  reflexd %s at %s%s\n", bold, stamp, json_str(json_get(st, "version"), "?"),
	       c->target.text, plain);
	printf("req/s %s   p50 %s   p99 %s   hit ratio %.1f%%%s   open %llu   requests %llu\n",
	       rate, p50, p99, hit, has_cache ? "" : " (no cached traffic)",
	       (unsigned long long)u(t, "connections_open"), (unsigned long long)u(t, "requests"));
	const struct json *ref = json_get(t, "refusals");
	printf("refusals:");
	if (!ref || !ref->n)
		printf(" none");
	for (size_t i = 0; ref && i < ref->n; i++)
		printf(" %s=%.0f", ref->keys[i], ref->items[i].num);
	printf("\n");
	const struct json *tc = json_get(st, "top_clients");
	printf("top clients:");
	if (!tc || tc->type != JSON_ARRAY || !tc->n)
		printf(" (not tracked by this gateway yet)");
	for (size_t i = 0; tc && tc->type == JSON_ARRAY && i < tc->n && i < 10; i++)
		printf(" %s=%.0f", json_str(json_get(&tc->items[i], "client"), "?"),
		       json_num(json_get(&tc->items[i], "requests"), 0));
	printf("\n");
	const struct json *pools = json_get(pool, "pools");
	for (size_t p = 0; pools && p < pools->n; p++) {
		const struct json *pl = &pools->items[p], *eps = json_get(pl, "endpoints");
		unsigned up = 0;

		for (size_t e = 0; eps && e < eps->n; e++)
			up += !strcmp(json_str(json_get(&eps->items[e], "state"), ""), "up");
		printf("pool %s: %u/%zu up", json_str(json_get(pl, "name"), "?"), up,
		       eps ? eps->n : 0);
		for (size_t e = 0; eps && e < eps->n; e++) {
			const struct json *ep = &eps->items[e];
			printf("  [%s %s inflight %llu]", json_str(json_get(ep, "address"), "?"),
			       json_str(json_get(ep, "state"), "?"),
			       (unsigned long long)u(ep, "inflight"));
		}
		printf("\n");
	}
	if (!tty)
		printf("\n"); /* frames are separated by an empty line */
	fflush(stdout);
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmd_top(struct ctl *c, int argc, char **argv)
{
	struct top_opts o = {.count = 0, .interval_ms = 1000};
	bool tty = isatty(STDOUT_FILENO);
	double prev_t = 0, prev_req = 0;
	bool have_prev = false;

	for (int i = 0; i < argc; i++) {
		int rc = 0;
		if (!strcmp(argv[i], "--once"))
			o.count = 1;
		else if (!strcmp(argv[i], "--count"))
			rc = parse_count("--count", i + 1 < argc ? argv[++i] : NULL, &o.count);
		else if (!strncmp(argv[i], "--count=", 8))
			rc = parse_count("--count", argv[i] + 8, &o.count);
		else if (!strcmp(argv[i], "--interval"))
			rc = parse_count("--interval", i + 1 < argc ? argv[++i] : NULL,
					 &o.interval_ms);
		else if (!strncmp(argv[i], "--interval=", 11))
			rc = parse_count("--interval", argv[i] + 11, &o.interval_ms);
		else
			return fail(EXIT_USAGE, "top: unknown argument \"%s\" (see --help)",
				    argv[i]);
		if (rc)
			return rc;
	}
	if (o.interval_ms < 100)
		o.interval_ms = 100;
	for (unsigned frame = 0; !o.count || frame < o.count; frame++) {
		struct ctl_resp rs = {0}, rp = {0};
		struct json *st = NULL, *pool = NULL;
		int rc;

		if (frame) {
			struct timespec ts = {o.interval_ms / 1000,
					      (long)(o.interval_ms % 1000) * 1000000};
			nanosleep(&ts, NULL);
		}
		if ((rc = get_json(c, "/stats", &rs, &st)))
			return rc;
		if ((rc = get_json(c, "/pool", &rp, &pool))) {
			json_free(st);
			ctl_resp_free(&rs);
			return rc;
		}
		double t = mono_s(), req = json_num(json_path(st, "totals.requests"), 0);
		double rps = have_prev && t > prev_t ? (req - prev_req) / (t - prev_t) : 0;
		top_frame(c, tty, st, pool, rps < 0 ? 0 : rps, have_prev);
		prev_t = t;
		prev_req = req;
		have_prev = true;
		json_free(st);
		json_free(pool);
		ctl_resp_free(&rs);
		ctl_resp_free(&rp);
	}
	return EXIT_OK;
}

/* ---- cache (docs/cache.md) ------------------------------------------------------- */

/* JSON string literal of s (for request bodies). */
static char *json_quote(const char *s)
{
	size_t n = strlen(s), o = 0;
	char *q = malloc(n * 6 + 3);

	if (!q)
		return NULL;
	q[o++] = '"';
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			o += (size_t)sprintf(q + o, "\\%c", ch);
		else if (ch < 0x20)
			o += (size_t)sprintf(q + o, "\\u%04x", ch);
		else
			q[o++] = (char)ch;
	}
	q[o++] = '"';
	q[o] = 0;
	return q;
}

static int cmd_cache_purge(struct ctl *c, int argc, char **argv)
{
	const char *kind = NULL, *value = NULL;
	struct ctl_resp r = {0};
	int rc;

	if (argc == 2 && (!strcmp(argv[0], "--url") || !strcmp(argv[0], "--prefix") ||
			  !strcmp(argv[0], "--tag"))) {
		kind = argv[0] + 2;
		value = argv[1];
	} else {
		return fail(EXIT_USAGE, "cache purge: give one of --url U, --prefix P, --tag T");
	}
	/* an unset shell variable ("--prefix $P") would purge every object */
	if (!*value)
		return fail(EXIT_USAGE,
			    "cache purge: --%s is empty (an empty prefix matches every "
			    "object)",
			    kind);
	char *q = json_quote(value), *body = q ? malloc(strlen(q) + 32) : NULL;
	if (!body) {
		free(q);
		return fail(EXIT_NO, "out of memory");
	}
	sprintf(body, "{\"%s\":%s}", kind, q);
	free(q);
	if (!c->token_file)
		fprintf(stderr, "%s: cache purge: no --token-file given; the gateway will refuse\n",
			prog);
	rc = call_body(c, "POST", "/cache/purge", true, body, &r);
	free(body);
	if (rc)
		return rc;
	if (c->json)
		print_body(&r);
	if (r.status != 200) {
		rc = c->json ? EXIT_NO : http_failure("cache purge refused", &r);
		ctl_resp_free(&r);
		return rc;
	}
	if (!c->json) {
		struct json *j = NULL;
		char err[64];
		j = json_parse(r.body, r.len, err, sizeof(err));
		printf("purged %.0f object%s\n", json_num(json_get(j, "purged"), 0),
		       json_num(json_get(j, "purged"), 0) == 1 ? "" : "s");
		json_free(j);
	}
	ctl_resp_free(&r);
	return EXIT_OK;
}

static int cmd_cache_show(struct ctl *c, int argc, char **argv)
{
	if (argc)
		return fail(EXIT_USAGE, "cache show: unexpected argument \"%s\"", argv[0]);
	return show_json(c, "/cache");
}

/* ---- limits (docs/ratelimit.md) ------------------------------------------------------ */

/* events: the anomaly events (docs/anomaly.md). --follow reads the live
 * server-sent-events stream and prints each event's JSON on its own line,
 * until the gateway closes the stream or the user interrupts. */
static int cmd_events(struct ctl *c, int argc, char **argv)
{
	bool follow = false;
	unsigned long long since = 0;
	char path[96], err[256];

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--follow") || !strcmp(argv[i], "-f"))
			follow = true;
		else if (!strcmp(argv[i], "--since") && i + 1 < argc)
			since = strtoull(argv[++i], NULL, 10);
		else
			return fail(EXIT_USAGE, "events: unexpected argument \"%s\"", argv[i]);
	}
	if (!follow) {
		snprintf(path, sizeof(path), "/events?since=%llu", since);
		return show_json(c, path);
	}
	int fd = ctl_connect(&c->target, c->timeout_ms, err, sizeof(err));
	if (fd < 0)
		return fail(EXIT_CONNECT, "%s", err);
	char req[256];
	int n = snprintf(req, sizeof(req),
			 "GET /events?stream=1%s%.0llu HTTP/1.1\r\nHost: reflex-admin\r\n"
			 "Accept: text/event-stream\r\n\r\n",
			 since ? "&since=" : "", since);
	if (write(fd, req, (size_t)n) != n) {
		close(fd);
		return fail(EXIT_CONNECT, "events: cannot send the request");
	}
	/* the head, then "data: {...}" lines; a blank line ends each event */
	char buf[8192], line[65536];
	size_t ll = 0;
	bool in_head = true, ok = false;
	ssize_t k;
	while ((k = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < k; i++) {
			char ch = buf[i];
			if (ch != '\n') {
				if (ll + 1 < sizeof(line))
					line[ll++] = ch;
				continue;
			}
			if (ll && line[ll - 1] == '\r')
				ll--;
			line[ll] = 0;
			if (in_head) {
				if (!ok && ll > 12 && memcmp(line, "HTTP/1.", 7) == 0)
					ok = atoi(line + 9) == 200;
				if (ll == 0) {
					in_head = false;
					if (!ok) {
						close(fd);
						return fail(EXIT_NO, "events: the gateway refused the stream "
									  "(is trace enabled?)");
					}
				}
			} else if (!strncmp(line, "data:", 5)) {
				const char *d = line + 5 + (line[5] == ' ');
				puts(d);
				fflush(stdout);
			}
			ll = 0;
		}
	}
	close(fd);
	return EXIT_OK;
}

static int cmd_limits_show(struct ctl *c, int argc, char **argv)
{
	if (argc)
		return fail(EXIT_USAGE, "limits show: unexpected argument \"%s\"", argv[0]);
	return show_json(c, "/limits");
}

static int cmd_limits_top(struct ctl *c, int argc, char **argv)
{
	char path[64];
	long n = 20;

	if (argc == 2 && !strcmp(argv[0], "--count"))
		n = strtol(argv[1], NULL, 10);
	else if (argc)
		return fail(EXIT_USAGE, "limits top: give --count N or nothing");
	if (n < 1 || n > 1000)
		return fail(EXIT_USAGE, "limits top: --count must be 1..1000");
	snprintf(path, sizeof(path), "/limits/top?n=%ld", n);
	return show_json(c, path);
}

static bool list_name_ok(const char *s)
{
	return !strcmp(s, "allow") || !strcmp(s, "deny") || !strcmp(s, "penalty");
}

static int cmd_limits_list(struct ctl *c, int argc, char **argv)
{
	char path[64];

	if (argc != 1 || !list_name_ok(argv[0]))
		return fail(EXIT_USAGE, "limits list: give allow, deny or penalty");
	snprintf(path, sizeof(path), "/limits/%s", argv[0]);
	return show_json(c, path);
}

/* A change (POST/PUT/DELETE with the token): 200 or 201 is success, anything
 * else the gateway saying no. */
static int send_mutation(struct ctl *c, const char *method, const char *path, const char *body,
			 const char *what)
{
	struct ctl_resp r = {0};
	int rc;

	if (!c->token_file)
		fprintf(stderr, "%s: %s: no --token-file given; the gateway will refuse\n", prog, what);
	if ((rc = call_body(c, method, path, true, body, &r)))
		return rc;
	bool ok = r.status == 200 || r.status == 201;
	if (c->json || ok)
		print_body(&r);
	rc = ok ? EXIT_OK : c->json ? EXIT_NO : http_failure(what, &r);
	ctl_resp_free(&r);
	return rc;
}

static int edit_list(struct ctl *c, int argc, char **argv, bool add)
{
	const char *what = add ? "limits add" : "limits del";
	char path[64], body[256];
	long ttl = 0;

	if (argc == 4 && add && !strcmp(argv[2], "--ttl"))
		ttl = strtol(argv[3], NULL, 10);
	else if (argc != 2)
		return fail(EXIT_USAGE, "%s: give LIST CIDR%s", what, add ? " [--ttl MS]" : "");
	if (!list_name_ok(argv[0]))
		return fail(EXIT_USAGE, "%s: the list is allow, deny or penalty", what);
	char *q = json_quote(argv[1]);
	if (!q || strlen(q) > 100) {
		free(q);
		return fail(EXIT_USAGE, "%s: \"%s\" is not a CIDR prefix", what, argv[1]);
	}
	snprintf(path, sizeof(path), "/limits/%s", argv[0]);
	snprintf(body, sizeof(body), "{\"cidr\":%s,\"ttl_ms\":%ld}", q, ttl > 0 ? ttl : 0);
	free(q);
	return send_mutation(c, add ? "POST" : "DELETE", path, body, what);
}

static int cmd_limits_add(struct ctl *c, int argc, char **argv)
{
	return edit_list(c, argc, argv, true);
}

static int cmd_limits_del(struct ctl *c, int argc, char **argv)
{
	return edit_list(c, argc, argv, false);
}

static int cmd_limits_set(struct ctl *c, int argc, char **argv)
{
	if (argc != 1 || argv[0][0] != '{')
		return fail(EXIT_USAGE, "limits set: give one JSON object, e.g. "
					"'{\"client\":{\"rate\":10,\"burst\":20}}'");
	return send_mutation(c, "PUT", "/limits/policy", argv[0], "limits set");
}

/* ---- rules (docs/rules.md) ---------------------------------------------------------- */

static int cmd_rules_list(struct ctl *c, int argc, char **argv)
{
	if (argc)
		return fail(EXIT_USAGE, "rules list: unexpected argument \"%s\"", argv[0]);
	return show_json(c, "/rules");
}

static int cmd_rules_add(struct ctl *c, int argc, char **argv)
{
	char path[128];

	if (argc == 3 && !strcmp(argv[1], "--before") && strlen(argv[2]) < 64)
		snprintf(path, sizeof(path), "/rules?before=%s", argv[2]);
	else if (argc == 1)
		snprintf(path, sizeof(path), "/rules");
	else
		return fail(EXIT_USAGE, "rules add: give one JSON rule [--before NAME]");
	if (argv[0][0] != '{')
		return fail(EXIT_USAGE, "rules add: the rule is a JSON object, e.g. "
					"'{\"name\":\"no-ssn\",\"detect\":[\"ssn\"],\"action\":\"block\"}'");
	return send_mutation(c, "POST", path, argv[0], "rules add");
}

static int cmd_rules_del(struct ctl *c, int argc, char **argv)
{
	char path[128];

	if (argc != 1 || strlen(argv[0]) >= 64 || strpbrk(argv[0], "/?# "))
		return fail(EXIT_USAGE, "rules del: give one rule name");
	snprintf(path, sizeof(path), "/rules/%s", argv[0]);
	return send_mutation(c, "DELETE", path, NULL, "rules del");
}

/* ---- the table --------------------------------------------------------------------- */

static const struct command commands[] = {
	{NULL, "status", "", "is the gateway alive and ready",
	 "Asks /healthz, /readyz and /stats. Exit 0 when alive and ready, 1 when not\n"
	 "ready (the reason is printed), 3 when the admin API does not answer.\n",
	 cmd_status},
	{NULL, "stats", "", "counters and latency, totals and per worker",
	 "Prints /stats: requests by status class, connections, bytes, upstream\n"
	 "connections, refusals by reason, P50/P99 latency. --json prints /stats as is.\n",
	 cmd_stats},
	{NULL, "top", "[--once | --count N] [--interval MS]", "a live view, refreshed every second",
	 "req/s, P50/P99, cache hit ratio, connections, refusals by reason, top clients\n"
	 "and pool health. On a terminal the screen is redrawn (ANSI, no curses); when\n"
	 "stdout is not a terminal each refresh prints a block of plain lines followed by\n"
	 "an empty line (--json: one JSON object per line).\n"
	 "  --once        one frame (req/s needs two: it shows \"-\")\n"
	 "  --count N     N frames, then exit 0\n"
	 "  --interval MS time between frames (default 1000, at least 100)\n",
	 cmd_top},
	{NULL, "pool", "", "upstream pools: endpoints, state, in-flight, requests, fails",
	 "State is \"up\" when the endpoint's last exchange succeeded in some worker,\n"
	 "\"failing\" otherwise.\n",
	 cmd_pool},
	{NULL, "reload", "", "reload the configuration (needs --token-file)",
	 "POST /reload: the gateway re-reads its configuration file and flags. Exit 0\n"
	 "when the new configuration runs, 1 when it was refused (the error names\n"
	 "FILE:LINE; the old configuration keeps running) or the token was refused.\n",
	 cmd_reload},
	{NULL, "config", "", "the effective configuration (secrets redacted)",
	 "GET /config, pretty-printed (--json: as sent).\n", cmd_config},
	{"audit", "verify", "FILE", "check the hash chain of an audit log",
	 "Reads FILE locally (no gateway needed). Exit 0 when every record's hash and\n"
	 "link to the previous record hold, 1 with the first broken record otherwise\n"
	 "(or when FILE cannot be read).\n",
	 cmd_audit_verify},
	{"cache", "show", "", "the L1 cache: objects, bytes, inserts, evictions",
	 "GET /cache, pretty-printed (--json: as sent).\n", cmd_cache_show},
	{"cache", "purge", "--url URL | --prefix URL | --tag TAG",
	 "drop cached objects (needs --token-file)",
	 "POST /cache/purge: drop the object stored for one URL, every object whose\n"
	 "URL starts with a prefix, or every object carrying a tag. Prints how many\n"
	 "objects were dropped. The purge is recorded in the audit log.\n",
	 cmd_cache_purge},
	{"limits", "show", "", "rate limits: L7 policy, kernel layer state and counters",
	 "GET /limits, pretty-printed (--json: as sent): the L7 rules (client, API key,\n"
	 "routes, escalation, accept-time limit), and the kernel limiter (attached\n"
	 "interfaces or why it is off, policy, drop counters by reason, events).\n",
	 cmd_limits_show},
	{"limits", "top", "[--count N]", "the most limited sources and their 429 counts",
	 "GET /limits/top?n=N (default 20).\n", cmd_limits_top},
	{"limits", "list", "allow|deny|penalty", "entries of a kernel list",
	 "The allow and deny CIDR lists, or the live penalty box entries with the time\n"
	 "each has left.\n",
	 cmd_limits_list},
	{"limits", "add", "allow|deny|penalty CIDR [--ttl MS]",
	 "add a kernel list entry (needs --token-file)",
	 "POST /limits/LIST. A penalty entry lasts --ttl MS (default: the configured\n"
	 "escalation penalty). Recorded in the audit log.\n",
	 cmd_limits_add},
	{"limits", "del", "allow|deny|penalty CIDR", "remove a kernel list entry (needs --token-file)",
	 "DELETE /limits/LIST. Exit 1 when there is no such entry.\n", cmd_limits_del},
	{"limits", "set", "JSON", "change the policy live (needs --token-file)",
	 "PUT /limits/policy with JSON such as\n"
	 "  '{\"client\":{\"rate\":10,\"burst\":20},\"api_key\":null,\n"
	 "    \"kernel\":{\"syn_rate\":50,\"syn_burst\":100,\"dry_run\":false}}'\n"
	 "null turns a rule off. Applies until the next reload.\n",
	 cmd_limits_set},
	{"rules", "list", "", "reflex rules and detectors with their hit counters",
	 "GET /rules, pretty-printed (--json: as sent): every rule in order (source\n"
	 "config or admin, action, detectors, hits) and every detector (family,\n"
	 "severity, hits).\n",
	 cmd_rules_list},
	{"rules", "add", "JSON [--before NAME]", "add a rule live (needs --token-file)",
	 "POST /rules with the rule (docs/rules.md), appended or inserted before NAME.\n"
	 "Lasts until the next reload. Exit 1 when the gateway refuses it (the reason\n"
	 "is printed).\n",
	 cmd_rules_add},
	{"rules", "del", "NAME", "remove a rule live (needs --token-file)",
	 "DELETE /rules/NAME. Exit 1 when there is no such rule.\n", cmd_rules_del},
	{NULL, "events", "[--follow] [--since ID]", "anomaly events (trace)",
	 "GET /events: the anomaly events the tracer raised (docs/anomaly.md). With\n"
	 "--follow, the live stream: one JSON event per line as they happen, until the\n"
	 "gateway closes it or you interrupt. --since ID starts after that event.\n",
	 cmd_events},
};
static const size_t n_commands = sizeof(commands) / sizeof(commands[0]);

static void usage_global(FILE *f)
{
	fprintf(f,
		"usage: %s [options] COMMAND [args]\n"
		"\n"
		"A client of the reflexd admin API.\n"
		"\n"
		"options (anywhere on the line):\n"
		"  --admin URL|PATH   admin API: http://HOST:PORT, HOST:PORT or a Unix socket\n"
		"                     path (default %s, or $REFLEX_ADMIN)\n"
		"  --token-file F     \"NAME SECRET\" lines; the first token is used for\n"
		"                     mutations (or $REFLEX_TOKEN_FILE)\n"
		"  --json             machine-readable output\n"
		"  --timeout MS       per request (default 10000)\n"
		"  -h, --help         help (also after a command or group)\n"
		"\n"
		"commands:\n",
		prog, DEFAULT_ADMIN);
	for (size_t i = 0; i < n_commands; i++) {
		char name[64];
		snprintf(name, sizeof(name), "%s%s%s", commands[i].group ? commands[i].group : "",
			 commands[i].group ? " " : "", commands[i].name);
		fprintf(f, "  %-16s %s\n", name, commands[i].summary);
	}
	fprintf(f, "\nexit codes: 0 ok, 1 the gateway said no or a check failed, 2 usage,\n"
		   "3 cannot connect to the admin API\n");
}

static void usage_group(FILE *f, const char *group)
{
	fprintf(f, "usage: %s %s COMMAND [args]\n\ncommands:\n", prog, group);
	for (size_t i = 0; i < n_commands; i++)
		if (commands[i].group && !strcmp(commands[i].group, group))
			fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

static void usage_command(FILE *f, const struct command *cmd)
{
	fprintf(f, "usage: %s %s%s%s%s%s\n\n%s.\n\n%s", prog, cmd->group ? cmd->group : "",
		cmd->group ? " " : "", cmd->name, cmd->args[0] ? " " : "", cmd->args, cmd->summary,
		cmd->help);
}

static bool is_group(const char *s)
{
	for (size_t i = 0; i < n_commands; i++)
		if (commands[i].group && !strcmp(commands[i].group, s))
			return true;
	return false;
}

static const struct command *find_command(const char *group, const char *name)
{
	for (size_t i = 0; i < n_commands; i++) {
		const struct command *cmd = &commands[i];
		if (!strcmp(cmd->name, name) &&
		    (group ? cmd->group && !strcmp(cmd->group, group) : !cmd->group))
			return cmd;
	}
	return NULL;
}

/* A global option with a value: "--name V" or "--name=V". */
static int opt_value(int argc, char **argv, int *i, const char *name, const char **out)
{
	size_t n = strlen(name);

	if (!strcmp(argv[*i], name)) {
		if (*i + 1 >= argc)
			return fail(EXIT_USAGE, "%s needs a value", name);
		*out = argv[++*i];
		return 1;
	}
	if (!strncmp(argv[*i], name, n) && argv[*i][n] == '=') {
		*out = argv[*i] + n + 1;
		return 1;
	}
	return 0;
}

/* Everything after the allocation of rest (main frees it on every path). */
static int run(struct ctl *cp, int argc, char **argv, char **rest)
{
	struct ctl c = *cp;
	int nrest = 0, rc;
	bool help = false;
	const char *timeout = NULL;
	char err[256];

	c.admin = getenv("REFLEX_ADMIN") ? getenv("REFLEX_ADMIN") : DEFAULT_ADMIN;
	c.token_file = getenv("REFLEX_TOKEN_FILE");
	for (int i = 1; i < argc; i++) {
		if ((rc = opt_value(argc, argv, &i, "--admin", &c.admin)) ||
		    (rc = opt_value(argc, argv, &i, "--token-file", &c.token_file)) ||
		    (rc = opt_value(argc, argv, &i, "--timeout", &timeout))) {
			if (rc != 1)
				return rc;
			continue;
		}
		if (!strcmp(argv[i], "--json"))
			c.json = true;
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			help = true;
		else
			rest[nrest++] = argv[i];
	}
	if (timeout) {
		char *end;
		unsigned long t = strtoul(timeout, &end, 10);
		if (!*timeout || *end || t == 0 || t > 3600000)
			return fail(EXIT_USAGE, "--timeout: \"%s\" is not a number of ms", timeout);
		c.timeout_ms = (unsigned)t;
	}
	if (!nrest) {
		usage_global(help ? stdout : stderr);
		return help ? EXIT_OK : EXIT_USAGE;
	}
	const char *group = NULL, *name = rest[0];
	int first_arg = 1;
	if (is_group(rest[0])) {
		group = rest[0];
		if (nrest < 2) {
			usage_group(help ? stdout : stderr, group);
			return help ? EXIT_OK : EXIT_USAGE;
		}
		name = rest[1];
		first_arg = 2;
	}
	const struct command *cmd = find_command(group, name);
	if (!cmd) {
		fprintf(stderr, "%s: unknown command \"%s%s%s\"\n\n", prog, group ? group : "",
			group ? " " : "", name);
		if (group)
			usage_group(stderr, group);
		else
			usage_global(stderr);
		return EXIT_USAGE;
	}
	if (help) {
		usage_command(stdout, cmd);
		return EXIT_OK;
	}
	if (ctl_target_parse(c.admin, &c.target, err, sizeof(err)))
		return fail(EXIT_USAGE, "--admin: %s", err);
	rc = cmd->run(&c, nrest - first_arg, rest + first_arg);
	memset(c.token, 0, sizeof(c.token));
	return rc;
}

int main(int argc, char **argv)
{
	struct ctl c = {.timeout_ms = 10000};
	char **rest = calloc((size_t)argc + 1, sizeof(char *));
	int rc;

	if (!rest)
		return fail(EXIT_NO, "out of memory");
	rc = run(&c, argc, argv, rest);
	free(rest);
	return rc;
}
