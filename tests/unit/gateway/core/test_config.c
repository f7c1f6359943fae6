/* test_config.c — YAML files in a temp dir and argv vectors → struct config,
 * and every error naming its place ("FILE:LINE: ..." or "--flag: ..."). */
#include "core/config.h"
#include "tests/lib/test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];
static unsigned file_seq;

/* Write text to a fresh file in the temp dir; returns its path (static). */
static const char *write_yaml(const char *text)
{
	static char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/c%u.yaml", tmpdir, file_seq++);
	f = fopen(path, "w");
	if (!f)
		return NULL;
	fputs(text, f);
	fclose(f);
	return path;
}

static unsigned port_of(const struct cfg_addr *a)
{
	if (a->ss.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
	if (a->ss.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
	return 0;
}

static bool is_v4(const struct cfg_addr *a, const char *ip, unsigned port)
{
	const struct sockaddr_in *s = (const struct sockaddr_in *)&a->ss;
	struct in_addr want;

	return a->ss.ss_family == AF_INET && a->len == sizeof(*s) &&
	       inet_pton(AF_INET, ip, &want) == 1 && s->sin_addr.s_addr == want.s_addr &&
	       ntohs(s->sin_port) == port;
}

static bool is_v6(const struct cfg_addr *a, const char *ip, unsigned port)
{
	const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)&a->ss;
	struct in6_addr want;

	return a->ss.ss_family == AF_INET6 && a->len == sizeof(*s) &&
	       inet_pton(AF_INET6, ip, &want) == 1 && !memcmp(&s->sin6_addr, &want, sizeof(want)) &&
	       ntohs(s->sin6_port) == port;
}

/* argv helper: NULL-terminated list of strings after the program name. */
#define ARGS(...) ((char *[]){"reflexd", __VA_ARGS__, NULL})
static int argc_of(char **argv)
{
	int n = 0;

	while (argv[n])
		n++;
	return n;
}

static int from_args(char **argv, struct config **c, enum config_action *act, char *err,
		     size_t errlen)
{
	return config_from_args(argc_of(argv), argv, c, act, err, errlen);
}

/* ---- a full file maps to the struct exactly ------------------------------ */

static const char full_yaml[] =
	"# every key, none at its default\n"						  /* 1 */
	"workers: 3\n"									  /* 2 */
	"listen: [\"127.0.0.1:8081\", \"[::1]:8082\"]\n"				  /* 3 */
	"access_log: /var/log/reflex/access.log\n"					  /* 4 */
	"log_level: debug\n"								  /* 5 */
	"limits: {request_line: 4k, header_bytes: 16K, header_count: 50, body: 0}\n"	  /* 6 */
	"timeouts:\n"									  /* 7 */
	"  header: 250ms\n"								  /* 8 */
	"  body: 2m\n"									  /* 9 */
	"  keepalive: 1h\n"								  /* 10 */
	"  upstream_connect: 3\n"							  /* 11 */
	"  upstream_response: 45s\n"							  /* 12 */
	"  upstream_idle: 30s\n"							  /* 13 */
	"  send: 20s\n"									  /* 14 */
	"  drain: 0\n"									  /* 15 */
	"pools:\n"									  /* 16 */
	"  default: {endpoints: [\"127.0.0.1:9001\"]}\n"				  /* 17 */
	"  api:\n"									  /* 18 */
	"    balance: round_robin\n"							  /* 19 */
	"    keepalive: 8\n"								  /* 20 */
	"    endpoints: [\"127.0.0.1:9002\", {address: \"127.0.0.1:9003\", weight: 2}]\n" /* 21 */
	"routes:\n"									  /* 22 */
	"  - {host: API.Example.com, path_prefix: /v1/, pool: api}\n"			  /* 23 */
	"  - host: \"*.example.org\"\n"							  /* 24 */
	"    pool: default\n"								  /* 25 */
	"  - {host: \"*\", path_prefix: /x, pool: api}\n";				  /* 26 */

static void check_full(const struct config *c, const char *path)
{
	const struct cfg_pool *d, *api;
	int ia;

	CHECK_STR(c->source, path);
	CHECK_INT(c->workers, 3);
	CHECK_INT(c->n_listens, 2);
	if (c->n_listens == 2) {
		CHECK(is_v4(&c->listens[0], "127.0.0.1", 8081));
		CHECK_STR(c->listens[0].text, "127.0.0.1:8081");
		CHECK(is_v6(&c->listens[1], "::1", 8082));
		CHECK_STR(c->listens[1].text, "[::1]:8082");
	}
	CHECK_STR(c->access_log, "/var/log/reflex/access.log");
	CHECK_INT(c->log_level, 3);
	CHECK_INT(c->limits.request_line, 4096);
	CHECK_INT(c->limits.header_bytes, 16384);
	CHECK_INT(c->limits.header_count, 50);
	CHECK_INT(c->limits.body, 0);
	CHECK_INT(c->timeouts.header, 250);
	CHECK_INT(c->timeouts.body, 120000);
	CHECK_INT(c->timeouts.keepalive, 3600000);
	CHECK_INT(c->timeouts.upstream_connect, 3000);
	CHECK_INT(c->timeouts.upstream_response, 45000);
	CHECK_INT(c->timeouts.upstream_idle, 30000);
	CHECK_INT(c->timeouts.send, 20000);
	CHECK_INT(c->timeouts.drain, 0);
	CHECK_INT(c->n_pools, 2);
	CHECK_INT(config_pool_index(c, "default"), 0);
	ia = config_pool_index(c, "api");
	CHECK_INT(ia, 1);
	CHECK_INT(config_pool_index(c, "nope"), -1);
	if (c->n_pools != 2 || ia != 1)
		return;
	d = &c->pools[0];
	api = &c->pools[1];
	CHECK_STR(d->name, "default");
	CHECK_INT(d->balance, CFG_BALANCE_P2C);
	CHECK_INT(d->keepalive, 64);
	CHECK_INT(d->n_endpoints, 1);
	CHECK(is_v4(&d->endpoints[0].addr, "127.0.0.1", 9001));
	CHECK_INT(d->endpoints[0].weight, 1);
	CHECK_STR(api->name, "api");
	CHECK_INT(api->balance, CFG_BALANCE_ROUND_ROBIN);
	CHECK_INT(api->keepalive, 8);
	CHECK_INT(api->n_endpoints, 2);
	if (api->n_endpoints == 2) {
		CHECK(is_v4(&api->endpoints[0].addr, "127.0.0.1", 9002));
		CHECK_INT(api->endpoints[0].weight, 1);
		CHECK(is_v4(&api->endpoints[1].addr, "127.0.0.1", 9003));
		CHECK_STR(api->endpoints[1].addr.text, "127.0.0.1:9003");
		CHECK_INT(api->endpoints[1].weight, 2);
	}
	CHECK_INT(c->n_routes, 3);
	if (c->n_routes == 3) {
		CHECK_STR(c->routes[0].host, "api.example.com"); /* lower-cased */
		CHECK_STR(c->routes[0].path_prefix, "/v1/");
		CHECK_INT(c->routes[0].pool, 1);
		CHECK_INT(c->routes[0].line, 23);
		CHECK_STR(c->routes[1].host, "*.example.org");
		CHECK_STR(c->routes[1].path_prefix, "");
		CHECK_INT(c->routes[1].pool, 0);
		CHECK_INT(c->routes[1].line, 24);
		CHECK_STR(c->routes[2].host, ""); /* "*" is any host */
		CHECK_STR(c->routes[2].path_prefix, "/x");
		CHECK_INT(c->routes[2].pool, 1);
		CHECK_INT(c->routes[2].line, 26);
	}
}

static void test_full(void)
{
	const char *p = write_yaml(full_yaml);
	char path[512], err[1024];
	struct config *c = NULL;
	enum config_action act = CONFIG_HELP;

	snprintf(path, sizeof(path), "%s", p);
	/* the reload entry point */
	CHECK_MSG(config_load_file(path, &c, err, sizeof(err)) == 0, "load: %s", err);
	if (c)
		check_full(c, path);
	config_free(c);
	c = NULL;
	/* and the command-line one, same result */
	CHECK_MSG(from_args(ARGS("--config", path), &c, &act, err, sizeof(err)) == 0, "args: %s",
		  err);
	CHECK_INT(act, CONFIG_RUN);
	if (c)
		check_full(c, path);
	config_free(c);
}

/* The example of the task's schema, with the shorthand instead of
 * pools.default (both at once is refused, see the error table). */
static void test_schema_example(void)
{
	const char *p = write_yaml(
		"workers: 2\n"
		"listen: [\"127.0.0.1:8080\", \"[::1]:8080\"]\n"
		"upstream: [\"127.0.0.1:9001\"]\n"
		"access_log: \"-\"\n"
		"log_level: info\n"
		"limits: {request_line: 8k, header_bytes: 32k, header_count: 100, body: 1m}\n"
		"timeouts: {header: 10s, body: 60s, keepalive: 75s, upstream_connect: 5s, "
		"upstream_response: 60s, upstream_idle: 60s, send: 60s, drain: 30s}\n"
		"pools:\n"
		"  api:\n"
		"    balance: p2c\n"
		"    keepalive: 64\n"
		"    endpoints: [\"127.0.0.1:9002\", {address: \"127.0.0.1:9003\", weight: 2}]\n"
		"routes:\n"
		"  - {host: api.example.com, path_prefix: /v1/, pool: api}\n");
	struct config *c = NULL;
	char err[1024];

	CHECK_MSG(config_load_file(p, &c, err, sizeof(err)) == 0, "%s", err);
	if (!c)
		return;
	CHECK_INT(c->n_pools, 2);
	CHECK_INT(config_pool_index(c, "default"), 0);
	CHECK_INT(c->pools[0].n_endpoints, 1);
	CHECK_INT(c->pools[0].keepalive, 64);
	CHECK_STR(c->access_log, "-");
	CHECK_INT(c->routes[0].pool, 1);
	CHECK_INT(c->limits.request_line, 8192);
	CHECK_INT(c->limits.body, 1 << 20);
	CHECK_INT(c->timeouts.keepalive, 75000);
	config_free(c);
}

static void check_defaults(const struct config *c)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	CHECK_INT(c->workers, ncpu > 0 ? ncpu : 1);
	CHECK_INT(c->n_listens, 1);
	if (c->n_listens)
		CHECK(is_v4(&c->listens[0], "127.0.0.1", 8080));
	CHECK_INT(c->limits.request_line, 8192);
	CHECK_INT(c->limits.header_bytes, 32768);
	CHECK_INT(c->limits.header_count, 100);
	CHECK_INT(c->limits.body, 1048576);
	CHECK_INT(c->timeouts.header, 10000);
	CHECK_INT(c->timeouts.body, 60000);
	CHECK_INT(c->timeouts.keepalive, 75000);
	CHECK_INT(c->timeouts.upstream_connect, 5000);
	CHECK_INT(c->timeouts.upstream_response, 60000);
	CHECK_INT(c->timeouts.upstream_idle, 60000);
	CHECK_INT(c->timeouts.send, 60000);
	CHECK_INT(c->timeouts.drain, 30000);
	CHECK_STR(c->access_log, "");
	CHECK_INT(c->log_level, 2);
	CHECK_INT(c->n_routes, 0);
	CHECK_INT(c->n_pools, 1);
	if (c->n_pools) {
		CHECK_STR(c->pools[0].name, "default");
		CHECK_INT(c->pools[0].balance, CFG_BALANCE_P2C);
		CHECK_INT(c->pools[0].keepalive, 64);
		CHECK_INT(c->pools[0].n_endpoints, 1);
		CHECK_INT(c->pools[0].endpoints[0].weight, 1);
	}
}

static void test_defaults(void)
{
	struct config *c = NULL;
	enum config_action act;
	char err[1024];
	const char *p;

	/* flags only */
	CHECK_MSG(from_args(ARGS("--upstream", "127.0.0.1:9001"), &c, &act, err, sizeof(err)) == 0,
		  "%s", err);
	if (c) {
		check_defaults(c);
		CHECK_STR(c->source, "");
		CHECK(is_v4(&c->pools[0].endpoints[0].addr, "127.0.0.1", 9001));
	}
	config_free(c);
	c = NULL;
	/* a file with only the upstream shorthand (a single scalar is a list of one) */
	p = write_yaml("upstream: 127.0.0.1:9001\n");
	CHECK_MSG(config_load_file(p, &c, err, sizeof(err)) == 0, "%s", err);
	if (c)
		check_defaults(c);
	config_free(c);
	c = NULL;
	/* an empty file is all defaults (and then has no upstream) */
	p = write_yaml("# nothing\n");
	CHECK_INT(config_load_file(p, &c, err, sizeof(err)), -1);
	CHECK_STR(err, "no upstream: give --upstream or pools.default");
	CHECK(c == NULL);
	CHECK_INT(from_args(ARGS("--config", (char *)p, "--upstream", "127.0.0.1:1"), &c, &act, err,
			    sizeof(err)),
		  0);
	if (c)
		CHECK_INT(c->n_listens, 1);
	config_free(c);
	c = NULL;
	/* no flags at all */
	CHECK_INT(config_from_args(1, ARGS("x"), &c, &act, err, sizeof(err)), -1);
	CHECK_STR(err, "no upstream: give --upstream or pools.default");
}

/* ---- errors name FILE:LINE ------------------------------------------------ */

struct err_case {
	const char *yaml;
	unsigned line;	  /* 0: "FILE: " without a line */
	const char *want; /* substring of the reason */
};

static const struct err_case err_cases[] = {
	/* unknown keys, at every depth */
	{"workers: 2\nbogus: 1\n", 2, "unknown key \"bogus\""},
	{"upstream: 127.0.0.1:1\nlimits:\n  body: 1m\n  bodyy: 2\n", 4,
	 "unknown key \"limits.bodyy\""},
	{"upstream: 127.0.0.1:1\ntimeouts: {header: 1s, idle: 2s}\n", 2, "timeouts.idle"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    weight: 3\n", 4, "pools.a.weight"},
	{"pools:\n  a:\n    endpoints:\n      - {address: 127.0.0.1:1, wieght: 2}\n", 4, "wieght"},
	{"upstream: 127.0.0.1:1\nroutes:\n  - pool: default\n    hots: a.com\n", 4, "\"hots\""},
	/* a typo a key away gets a suggestion; a word nowhere near gets none */
	{"upstream: 127.0.0.1:1\nlistne: 127.0.0.1:2\n", 2,
	 "unknown key \"listne\" (did you mean \"listen\"?)"},
	{"upstream: 127.0.0.1:1\ntimeouts: {haeder: 1s}\n", 2,
	 "\"timeouts.haeder\" (did you mean \"header\"?)"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    ballance: p2c\n", 4,
	 "\"pools.a.ballance\" (did you mean \"balance\"?)"},
	{"upstream: 127.0.0.1:1\nroutes:\n  - {pool: default, path_prefx: /a}\n", 3,
	 "\"path_prefx\" (did you mean \"path_prefix\"?)"},
	{"upstream: 127.0.0.1:1\nzzz: 1\n", 2, "unknown key \"zzz\""},
	{"upstream: 127.0.0.1:1\ncache: {enabeld: true}\n", 2,
	 "\"cache.enabeld\" (did you mean \"enabled\"?)"},
	{"upstream: 127.0.0.1:1\ntrace: {windwo: 1s}\n", 2,
	 "\"trace.windwo\" (did you mean \"window\"?)"},
	{"upstream: 127.0.0.1:1\nadmin: {token_flie: x}\n", 2,
	 "\"admin.token_flie\" (did you mean \"token_file\"?)"},
	{"upstream: 127.0.0.1:1\nratelimit: {clinet: {rate: 1}}\n", 2,
	 "\"ratelimit.clinet\" (did you mean \"client\"?)"},
	/* an unknown key is named as such even when its value has the wrong shape */
	{"upstream: 127.0.0.1:1\nreflex: {rulse: []}\n", 2,
	 "unknown key \"rulse\" (did you mean \"rules\"?)"},
	{"upstream: 127.0.0.1:1\naccess_log: {paht: x}\n", 2,
	 "\"access_log.paht\" (did you mean \"path\"?)"},
	{"upstream: 127.0.0.1:1\nlisten: [{adress: 127.0.0.1:1}]\n", 2,
	 "\"listen.adress\" (did you mean \"address\"?)"},
	/* wrong types */
	{"workers: [1]\n", 1, "workers: expected a value, found a list"},
	{"upstream: 127.0.0.1:1\nlisten: {a: 1}\n", 2, "listen: expected a list"},
	{"upstream: 127.0.0.1:1\nlimits: 5\n", 2, "limits: expected a mapping"},
	{"upstream: 127.0.0.1:1\nroutes: {a: 1}\n", 2, "routes: expected a list"},
	{"upstream: 127.0.0.1:1\nroutes:\n  - a.com\n", 3, "expected a mapping"},
	{"upstream: 127.0.0.1:1\naccess_log: [a]\n", 2, "access_log: expected a value"},
	{"pools: [a]\n", 1, "pools: expected a mapping"},
	{"pools:\n  a: [127.0.0.1:1]\n", 2, "pools.a: expected a mapping"},
	{"- a\n- b\n", 1, "must be a mapping"},
	/* values */
	{"workers: 0\n", 1, "workers: must be at least 1"},
	{"workers: two\n", 1, "workers: \"two\" is not a number"},
	{"workers: -1\n", 1, "negative"},
	{"workers: 100000\n", 1, "too large"},
	{"upstream: 127.0.0.1:1\nlog_level: loud\n", 2, "log_level: \"loud\" is not a log level"},
	{"pools:\n  a:\n    balance: random\n    endpoints: [127.0.0.1:1]\n", 3,
	 "not p2c, round_robin or hash"},
	{"pools:\n  a:\n    keepalive: many\n    endpoints: [127.0.0.1:1]\n", 3,
	 "pools.a.keepalive"},
	{"pools:\n  a:\n    endpoints:\n      - {address: 127.0.0.1:1, weight: 0}\n", 4,
	 "weight: must be at least 1"},
	{"pools:\n  a:\n    endpoints:\n      - {weight: 2}\n", 4, "no address"},
	{"pools:\n  \"a b\": {endpoints: [127.0.0.1:1]}\n", 2, "pool name"},
	/* addresses */
	{"upstream: 127.0.0.1:1\nlisten: [\"127.0.0.1\"]\n", 2, "has no port"},
	{"upstream: 127.0.0.1:1\nlisten:\n  - 127.0.0.1:8080\n  - 127.0.0.1:99999\n", 4,
	 "bad port"},
	{"upstream: 127.0.0.1:1\nlisten: [\"::1:80\"]\n", 2, "needs brackets"},
	{"upstream: 127.0.0.1:1\nlisten: [\"[::1]80\"]\n", 2, "[IPv6]:PORT"},
	{"upstream: 127.0.0.1:1\nlisten: [\"[127.0.0.1]:80\"]\n", 2,
	 "\"127.0.0.1\" is not an IPv6 address"},
	{"upstream: 127.0.0.1:1\nlisten: [\"127.0.0.1:+80\"]\n", 2, "bad port"},
	{"upstream: \"[::1:80\"\n", 1, "is not [IPv6]:PORT"},
	{"upstream: "
	 "\"["
	 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]:80\"\n",
	 1, "too long"},
	{"upstream: "
	 "\"["
	 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]:80\"\n",
	 1, "too long"},
	{"upstream: 127.0.0.1:1\nlisten: [\"127.0.0.1:x\"]\n", 2, "bad port"},
	{"upstream: 127.0.0.1:1\nlisten: [127.0.0.1:80, 127.0.0.1:80]\n", 2, "listed twice"},
	/* the same endpoint twice would be two metric series with one label set */
	{"upstream: [127.0.0.1:1, 127.0.0.1:1]\n", 1, "\"127.0.0.1:1\" is listed twice"},
	{"pools:\n  a:\n    endpoints:\n      - 127.0.0.1:1\n      - {address: 127.0.0.1:1, "
	 "weight: 2}\n",
	 5, "pools.a.endpoints: \"127.0.0.1:1\" is listed twice"},
	{"upstream: 127.0.0.1:0\n", 1, "bad port"},
	{"upstream: \":80\"\n", 1, "has no host"},
	{"upstream:\n  - 127.0.0.1:1\n  - nonexistent-host.invalid:80\n", 3, "cannot resolve"},
	/* structure */
	{"upstream: 127.0.0.1:1\nlisten: []\n", 2, "no listen address"},
	{"upstream: []\n", 1, "upstream: empty list"},
	{"pools:\n  api: {balance: p2c}\n", 2, "pool \"api\" has no endpoints"},
	{"pools:\n  api:\n    endpoints: []\n", 3, "pool \"api\" has no endpoints"},
	{"pools:\n  a: {endpoints: [127.0.0.1:1]}\n  b: {endpoints: [127.0.0.1:2]}\n"
	 "  a: {endpoints: [127.0.0.1:3]}\n",
	 4, "pools.a: given twice (first at line 2)"},
	{"workers: 1\nworkers: 2\n", 2, "workers: given twice (first at line 1)"},
	{"upstream: 127.0.0.1:1\npools:\n  default: {endpoints: [127.0.0.1:2]}\n", 3,
	 "conflicts with upstream (line 1)"},
	{"pools:\n  default: {endpoints: [127.0.0.1:2]}\nupstream: 127.0.0.1:1\n", 3,
	 "conflicts with pools.default (line 2)"},
	{"upstream: 127.0.0.1:1\nroutes:\n  - {host: a.com, pool: default}\n  - {host: b.com, "
	 "pool: api}\n",
	 4, "routes[1].pool: unknown pool \"api\""},
	{"upstream: 127.0.0.1:1\nroutes:\n  - {host: a.com}\n", 3, "needs a pool"},
	{"upstream: 127.0.0.1:1\nroutes:\n  - {host: \"a.com:80\", pool: default}\n", 3,
	 "not a host name"},
	{"upstream: 127.0.0.1:1\nroutes:\n  - {path_prefix: v1, pool: default}\n", 3,
	 "must start with /"},
	/* sizes */
	{"upstream: 127.0.0.1:1\nlimits: {body: 12x}\n", 2, "unknown unit \"x\""},
	{"upstream: 127.0.0.1:1\nlimits: {body: 8kb}\n", 2, "unknown unit \"kb\""},
	{"upstream: 127.0.0.1:1\nlimits:\n  body: -1\n", 3, "negative"},
	{"upstream: 127.0.0.1:1\nlimits: {body: 99999999999999999999}\n", 2, "too large"},
	{"upstream: 127.0.0.1:1\nlimits: {body: 17179869184g}\n", 2, "too large"},
	{"upstream: 127.0.0.1:1\nlimits: {request_line: 4g}\n", 2, "too large"},
	{"upstream: 127.0.0.1:1\nlimits: {request_line: 4294967296}\n", 2, "too large"},
	{"upstream: 127.0.0.1:1\nlimits: {header_count: 8k}\n", 2, "header_count"},
	{"upstream: 127.0.0.1:1\nlimits: {header_count: 0}\n", 2, "must be at least 1"},
	{"upstream: 127.0.0.1:1\nlimits: {header_count: 32768}\n", 2, "too large (max 32767)"},
	{"upstream: 127.0.0.1:1\nlimits: {header_bytes: 65m}\n", 2, "too large"},
	{"upstream: 127.0.0.1:1\nlimits: {request_line: 15}\n", 2, "must be at least 16"},
	{"upstream: 127.0.0.1:1\nlimits:\n  request_line: 64k\n", 3,
	 "limits: request_line (65536) is larger than header_bytes (32768)"},
	{"upstream: 127.0.0.1:1\nlimits: {body: \"\"}\n", 2, "is not a size"},
	{"upstream: 127.0.0.1:1\nlimits: {body: k}\n", 2, "is not a size"},
	{"upstream: 127.0.0.1:1\nlimits: {body: 1.5m}\n", 2, "unknown unit"},
	/* durations */
	{"upstream: 127.0.0.1:1\ntimeouts: {header: 5x}\n", 2, "unknown unit \"x\""},
	{"upstream: 127.0.0.1:1\ntimeouts: {header: 2d}\n", 2, "unknown unit \"d\""},
	{"upstream: 127.0.0.1:1\ntimeouts: {header: 10 s}\n", 2, "unknown unit \" s\""},
	{"upstream: 127.0.0.1:1\ntimeouts:\n  send: 1s\n  header: -5s\n", 4, "negative"},
	{"upstream: 127.0.0.1:1\ntimeouts: {header: 1194h}\n", 2, "too large"},
	{"upstream: 127.0.0.1:1\ntimeouts: {header: 4294968s}\n", 2, "too large"},
	{"upstream: 127.0.0.1:1\ntimeouts: {header: 99999999999999999999999ms}\n", 2, "too large"},
	{"upstream: 127.0.0.1:1\ntimeouts: {header: 0}\n", 2, "must be at least 1 ms"},
	{"upstream: 127.0.0.1:1\ntimeouts: {header: ms}\n", 2, "not a duration"},
	/* tls (docs/tls.md) */
	{"upstream: 127.0.0.1:1\nlisten:\n  - {tls: {cert: a, key: b}}\n", 3, "needs an address"},
	{"upstream: 127.0.0.1:1\nlisten:\n  - {address: \"127.0.0.1:1\", port: 1}\n", 3,
	 "unknown key \"listen.port\""},
	{"upstream: 127.0.0.1:1\nlisten:\n  - address: 127.0.0.1:1\n    tls: {cert: a, key: b, x: "
	 "1}\n",
	 4, "unknown key \"listen.tls.x\""},
	{"upstream: 127.0.0.1:1\nlisten:\n  - address: 127.0.0.1:1\n    tls: {cert: a}\n", 4,
	 "needs cert and key"},
	{"upstream: 127.0.0.1:1\nlisten:\n  - address: 127.0.0.1:1\n    tls:\n      cert: a\n"
	 "      key: b\n      certs: [{cert: c}]\n",
	 7, "listen.tls.certs[]: needs both cert and key"},
	{"upstream: 127.0.0.1:1\nlisten:\n  - address: 127.0.0.1:1\n    tls:\n      cert: a\n"
	 "      key: b\n      tickets: {rotate: 10s}\n",
	 7, "rotate: must be at least 1m"},
	{"upstream: 127.0.0.1:1\nlisten:\n  - address: 127.0.0.1:1\n    tls:\n"
	 "      cert: /nonexistent/reflex.pem\n      key: /nonexistent/reflex.key\n",
	 5, "listen 127.0.0.1:1: tls: cert /nonexistent/reflex.pem: No such file"},
	{"upstream: 127.0.0.1:1\nlisten:\n  - address: 127.0.0.1:1\n    tls:\n      cert: a\n"
	 "      key: b\n      client_subject_header: \"X Bad\"\n",
	 7, "is not a header name"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    tls: {verify: maybe}\n", 4,
	 "pools.a.tls.verify"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    tls: {bogus: 1}\n", 4,
	 "unknown key \"pools.a.tls.bogus\""},
	{"pools:\n  default:\n    endpoints: [127.0.0.1:1]\n    tls: {ca: /nonexistent/ca.pem}\n",
	 2, "pools.default.tls: tls: ca /nonexistent/ca.pem: No such file"},
	{"upstream: 127.0.0.1:1\ntimeouts: {tls_handshake: 0}\n", 2, "must be at least 1 ms"},
	/* the admin API on a data port would retry its bind forever */
	{"upstream: 127.0.0.1:1\nlisten: 127.0.0.1:8081\nadmin: {listen: 127.0.0.1:8081}\n", 3,
	 "admin.listen 127.0.0.1:8081: is also listen 127.0.0.1:8081"},
	{"upstream: 127.0.0.1:1\nlisten: \"*:8081\"\nadmin:\n  listen: 127.0.0.1:8081\n", 4,
	 "is also listen *:8081"},
	{"upstream: 127.0.0.1:1\nadmin: {listen: 127.0.0.1:8080}\n", 2,
	 "is also listen 127.0.0.1:8080"},
	/* rates the limiter's 64-bit nanosecond arithmetic cannot hold */
	{"upstream: 127.0.0.1:1\nratelimit:\n  client: {rate: 1e-300/s}\n", 3, "too slow"},
	{"upstream: 127.0.0.1:1\nratelimit:\n  client: {rate: 0.01/s, burst: 1000000000}\n", 3,
	 "more than 30 years to refill"},
	{"upstream: 127.0.0.1:1\nratelimit:\n  routes:\n    - {path_prefix: /a, rate: 0.01/s, "
	 "burst: 1000000000}\n",
	 4, "more than 30 years to refill"},
	{"upstream: 127.0.0.1:1\nratelimit:\n  client: {rate: 0x10/s}\n", 3, "is not a rate"},
	{"upstream: 127.0.0.1:1\nratelimit:\n  client: {rate: inf}\n", 3, "is not a rate"},
	{"upstream: 127.0.0.1:1\naccess_log: {path: /x, sample: 0x1p-2}\n", 2,
	 "is not a number from 0 to 1"},
	/* YAML itself */
	{"upstream: 127.0.0.1:1\nworkers: 2\n  bad: indent\n", 3, "mapping values are not allowed"},
	{"upstream: 127.0.0.1:1\nlisten: [\"127.0.0.1:1\"\n", 3, "flow sequence started at line 2"},
	{"upstream: 127.0.0.1:1\naccess_log: \"unterminated\n", 3,
	 "quoted scalar started at line 2"},
	{"upstream: 127.0.0.1:1\n---\nworkers: 2\n", 3, "only one YAML document"},
};

static void test_errors(void)
{
	char err[1024], want[1024];

	for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++) {
		const struct err_case *e = &err_cases[i];
		const char *p = write_yaml(e->yaml);
		struct config *c = NULL;
		size_t n;

		err[0] = 0;
		if (config_load_file(p, &c, err, sizeof(err)) != -1 || c) {
			test_fail(__FILE__, __LINE__, "case %zu: loaded, expected \"%s\"", i,
				  e->want);
			config_free(c);
			continue;
		}
		if (getenv("SHOW_ERRORS"))
			printf("# %s\n", err);
		n = (size_t)snprintf(want, sizeof(want), "%s:%u: ", p, e->line);
		CHECK_MSG(!strncmp(err, want, n) && strstr(err + n, e->want),
			  "case %zu: got \"%s\", expected \"%s%s\"", i, err, want, e->want);
	}
	/* a file that cannot be opened: "FILE: reason" */
	{
		struct config *c = NULL;
		char path[600];

		snprintf(path, sizeof(path), "%s/missing.yaml", tmpdir);
		CHECK_INT(config_load_file(path, &c, err, sizeof(err)), -1);
		snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
		CHECK_STR(err, want);
	}
	/* not a regular file: refused at once, never read (a FIFO would block) */
	{
		struct config *c = NULL;
		char path[600];
		const char *kinds[] = {"dir", "fifo"};

		for (unsigned i = 0; i < 2; i++) {
			snprintf(path, sizeof(path), "%s/%s.yaml", tmpdir, kinds[i]);
			CHECK_INT(i ? mkfifo(path, 0600) : mkdir(path, 0700), 0);
			CHECK_INT(config_load_file(path, &c, err, sizeof(err)), -1);
			snprintf(want, sizeof(want), "%s: %s", path,
				 i ? "is not a regular file" : "is a directory");
			CHECK_MSG(!strncmp(err, want, strlen(want)), "got \"%s\"", err);
			CHECK(c == NULL);
		}
		CHECK_INT(config_load_file("/dev/zero", &c, err, sizeof(err)), -1);
		CHECK_MSG(strstr(err, "is not a regular file") != NULL, "got \"%s\"", err);
	}
	/* a file past 16 MiB is refused by its size, before it is parsed */
	{
		struct config *c = NULL;
		char path[600];
		FILE *f;

		snprintf(path, sizeof(path), "%s/huge.yaml", tmpdir);
		f = fopen(path, "w");
		CHECK(f != NULL);
		if (f) {
			fputs("upstream: 127.0.0.1:1\n", f);
			CHECK_INT(ftruncate(fileno(f), (16 << 20) + 1), 0);
			fclose(f);
			CHECK_INT(config_load_file(path, &c, err, sizeof(err)), -1);
			snprintf(want, sizeof(want),
				 "%s: is 16777217 bytes; a configuration file is at most 16 MiB",
				 path);
			CHECK_STR(err, want);
			unlink(path);
		}
	}
	/* a tiny error buffer truncates, never overflows */
	{
		struct config *c = NULL;
		char small[8];

		CHECK_INT(config_load_file(write_yaml("bogus: 1\n"), &c, small, sizeof(small)), -1);
		CHECK(strlen(small) < sizeof(small));
	}
}

/* 4096 routes and pools load; one more of either is refused at its line. */
static void test_counts(void)
{
	size_t cap = 4200 * 64, n;
	char *y = malloc(cap), err[1024], want[600];
	struct config *c = NULL;
	const char *p;

	if (!y)
		return;
	for (int extra = 0; extra < 2; extra++) {
		n = (size_t)snprintf(y, cap, "upstream: 127.0.0.1:1\nroutes:\n");
		for (int i = 0; i < 4096 + extra; i++)
			n += (size_t)snprintf(y + n, cap - n,
					      "  - {path_prefix: /p%d, pool: default}\n", i);
		p = write_yaml(y);
		c = NULL;
		if (!extra) {
			CHECK_MSG(config_load_file(p, &c, err, sizeof(err)) == 0, "%s", err);
			CHECK(c && c->n_routes == 4096);
		} else {
			CHECK_INT(config_load_file(p, &c, err, sizeof(err)), -1);
			snprintf(want, sizeof(want), "%s:4099: routes: more than 4096 routes", p);
			CHECK_STR(err, want);
		}
		config_free(c);
		n = (size_t)snprintf(y, cap, "pools:\n");
		for (int i = 0; i < 4096 + extra; i++)
			n += (size_t)snprintf(y + n, cap - n, "  p%d: {endpoints: [127.0.0.1:1]}\n",
					      i);
		n += (size_t)snprintf(y + n, cap - n, "upstream: 127.0.0.1:1\n");
		p = write_yaml(y);
		c = NULL;
		if (!extra) {
			/* 4096 named pools and upstream's "default" would be 4097 */
			CHECK_INT(config_load_file(p, &c, err, sizeof(err)), -1);
			CHECK_MSG(strstr(err, "more than 4096 pools") != NULL, "%s", err);
		} else {
			CHECK_INT(config_load_file(p, &c, err, sizeof(err)), -1);
			snprintf(want, sizeof(want), "%s:4098: pools.p4096: more than 4096 pools",
				 p);
			CHECK_STR(err, want);
		}
		config_free(c);
	}
	free(y);
}

/* Edge values that must be accepted. */
static void test_units(void)
{
	const char *p =
		write_yaml("upstream: 127.0.0.1:1\n"
			   "limits: {request_line: 16m, header_bytes: 65536k, "
			   "header_count: 32767, body: 17179869183g}\n"
			   "timeouts: {header: 4294967295ms, body: 1193h, keepalive: 71582m, "
			   "upstream_connect: 4294967s, upstream_response: 4294967, "
			   "upstream_idle: \"1\", send: 007s, drain: 0ms}\n"
			   "workers: auto\n"
			   "log_level: 0\n");
	struct config *c = NULL;
	char err[1024];

	CHECK_MSG(config_load_file(p, &c, err, sizeof(err)) == 0, "%s", err);
	if (!c)
		return;
	CHECK_INT(c->limits.request_line, 16 << 20);
	CHECK_INT(c->limits.header_bytes, 64 << 20);
	CHECK_INT(c->limits.header_count, 32767);
	CHECK(c->limits.body == 17179869183ull << 30);
	CHECK_INT(c->timeouts.header, 4294967295ull);
	CHECK_INT(c->timeouts.body, 1193ull * 3600000);
	CHECK_INT(c->timeouts.keepalive, 71582ull * 60000);
	CHECK_INT(c->timeouts.upstream_connect, 4294967000ull);
	CHECK_INT(c->timeouts.upstream_response, 4294967000ull);
	CHECK_INT(c->timeouts.upstream_idle, 1000);
	CHECK_INT(c->timeouts.send, 7000);
	CHECK_INT(c->timeouts.drain, 0);
	CHECK(c->workers >= 1);
	CHECK_INT(c->log_level, 0);
	config_free(c);
}

/* ---- flags ----------------------------------------------------------------- */

static void test_flags_override(void)
{
	char path[512], err[1024];
	struct config *c = NULL;
	enum config_action act;
	int api;

	snprintf(path, sizeof(path), "%s", write_yaml(full_yaml));
	CHECK_MSG(from_args(ARGS("--config", path, "--workers", "5", "--listen", "127.0.0.1:7000",
				 "--upstream=127.0.0.1:9100", "--upstream", "localhost:9101",
				 "--log-level", "warn", "--access-log=-"),
			    &c, &act, err, sizeof(err)) == 0,
		  "%s", err);
	if (!c)
		return;
	CHECK_INT(act, CONFIG_RUN);
	CHECK_INT(c->workers, 5);
	CHECK_INT(c->n_listens, 1);
	CHECK(is_v4(&c->listens[0], "127.0.0.1", 7000));
	CHECK_INT(c->log_level, 1);
	CHECK_STR(c->access_log, "-");
	CHECK_INT(c->n_pools, 2);
	CHECK_STR(c->pools[0].name, "default");
	CHECK_INT(c->pools[0].n_endpoints, 2);
	if (c->pools[0].n_endpoints == 2) {
		CHECK(is_v4(&c->pools[0].endpoints[0].addr, "127.0.0.1", 9100));
		CHECK_INT(port_of(&c->pools[0].endpoints[1].addr), 9101);
		CHECK_STR(c->pools[0].endpoints[1].addr.text, "localhost:9101");
	}
	api = config_pool_index(c, "api");
	CHECK(api >= 0 && c->pools[api].n_endpoints == 2); /* untouched */
	/* the rest of the file stays */
	CHECK_INT(c->timeouts.header, 250);
	CHECK_INT(c->n_routes, 3);
	config_free(c);
	c = NULL;

	/* without --listen the file's list stays; --upstream creates the default
	 * pool a route of the file names */
	snprintf(path, sizeof(path), "%s",
		 write_yaml("listen: [\"127.0.0.1:8081\", \"127.0.0.1:8082\"]\n"
			    "routes:\n  - {path_prefix: /, pool: default}\n"));
	CHECK_MSG(from_args(ARGS("--upstream", "127.0.0.1:9100", "--config", path), &c, &act, err,
			    sizeof(err)) == 0,
		  "%s", err);
	if (c) {
		CHECK_INT(c->n_listens, 2);
		CHECK_INT(c->n_pools, 1);
		CHECK_INT(c->routes[0].pool, 0);
	}
	config_free(c);
	c = NULL;
	/* ...and without it the route's pool is unknown, at the route's line */
	CHECK_INT(from_args(ARGS("--config", path), &c, &act, err, sizeof(err)), -1);
	{
		char want[600];

		snprintf(want, sizeof(want), "%s:3: routes[0].pool: unknown pool \"default\"",
			 path);
		CHECK_STR(err, want);
	}
}

struct flag_err {
	char **argv;
	const char *want; /* prefix of the message */
};

static void test_flag_errors(void)
{
	const struct flag_err cases[] = {
		{ARGS("--workers", "abc", "--upstream", "127.0.0.1:1"),
		 "--workers: \"abc\" is not"},
		{ARGS("--upstream", "127.0.0.1:1", "--workers", "0"),
		 "--workers: must be at least 1"},
		{ARGS("--upstream", "127.0.0.1:1", "--workers"), "--workers: needs a value"},
		{ARGS("--listen", "nohost", "--upstream", "127.0.0.1:1"),
		 "--listen: \"nohost\" has no port"},
		{ARGS("--listen", "127.0.0.1:1", "--listen", "127.0.0.1:1", "--upstream",
		      "127.0.0.1:1"),
		 "--listen: \"127.0.0.1:1\" is given twice"},
		{ARGS("--upstream", "nonexistent-host.invalid:80"), "--upstream: cannot resolve"},
		{ARGS("--upstream", "127.0.0.1:0"), "--upstream: \"127.0.0.1:0\" has a bad port"},
		{ARGS("--upstream", "127.0.0.1:1", "--upstream", "127.0.0.1:1"),
		 "--upstream: \"127.0.0.1:1\" is given twice"},
		{ARGS("--bogus"), "--bogus: unknown option"},
		{ARGS("--bogus=1"), "--bogus: unknown option"},
		{ARGS("-x"), "-x: unknown option"},
		{ARGS("stray"), "stray: unexpected argument"},
		{ARGS("--help=1"), "--help: takes no value"},
		{ARGS("--upstream", "127.0.0.1:1", "--log-level", "loud"), "--log-level: \"loud\""},
		{ARGS("--config"), "--config: needs a value"},
	};
	char err[1024];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *c = NULL;
		enum config_action act;
		int rc = from_args(cases[i].argv, &c, &act, err, sizeof(err));

		if (getenv("SHOW_ERRORS"))
			printf("# %s\n", err);
		CHECK_MSG(rc == -1 && !c && !strncmp(err, cases[i].want, strlen(cases[i].want)),
			  "case %zu: rc %d, got \"%s\", expected \"%s...\"", i, rc, err,
			  cases[i].want);
		config_free(c);
	}
	/* a file error through --config still names the file and line */
	{
		const char *p = write_yaml("workers: 2\nlisten: 5\n");
		char path[512], want[600];
		struct config *c = NULL;
		enum config_action act;

		snprintf(path, sizeof(path), "%s", p);
		CHECK_INT(from_args(ARGS("--config", path, "--upstream", "127.0.0.1:1"), &c, &act,
				    err, sizeof(err)),
			  -1);
		snprintf(want, sizeof(want), "%s:2: listen: \"5\" has no port (HOST:PORT)", path);
		CHECK_STR(err, want);
	}
}

static void test_ipv6_and_names(void)
{
	struct config *c = NULL;
	enum config_action act;
	char err[1024];

	CHECK_MSG(
		from_args(ARGS("--listen", "[::1]:0", "--listen", "[::]:8443", "--listen", "*:8080",
			       "--upstream", "[::1]:9001", "--upstream", "localhost:9002"),
			  &c, &act, err, sizeof(err)) == 0,
		"%s", err);
	if (!c)
		return;
	CHECK_INT(c->n_listens, 3);
	if (c->n_listens == 3) {
		CHECK(is_v6(&c->listens[0], "::1", 0));
		CHECK(is_v6(&c->listens[1], "::", 8443));
		CHECK(is_v4(&c->listens[2], "0.0.0.0", 8080));
	}
	CHECK(is_v6(&c->pools[0].endpoints[0].addr, "::1", 9001));
	CHECK(c->pools[0].endpoints[1].addr.ss.ss_family == AF_INET ||
	      c->pools[0].endpoints[1].addr.ss.ss_family == AF_INET6);
	CHECK_INT(port_of(&c->pools[0].endpoints[1].addr), 9002);
	config_free(c);
	c = NULL;
	/* in a file too */
	CHECK_MSG(config_load_file(write_yaml("listen: [\"[::1]:8080\"]\n"
					      "upstream: [\"[::1]:9001\", localhost:9002]\n"),
				   &c, err, sizeof(err)) == 0,
		  "%s", err);
	if (c) {
		CHECK(is_v6(&c->listens[0], "::1", 8080));
		CHECK_INT(c->pools[0].n_endpoints, 2);
	}
	config_free(c);
}

static void test_actions(void)
{
	char path[512], err[1024];
	struct config *c = NULL;
	enum config_action act = CONFIG_RUN;

	snprintf(path, sizeof(path), "%s", write_yaml(full_yaml));
	CHECK_MSG(from_args(ARGS("--check-config", "--config", path), &c, &act, err, sizeof(err)) ==
			  0,
		  "%s", err);
	CHECK_INT(act, CONFIG_CHECK);
	CHECK(c && c->n_pools == 2);
	config_free(c);
	c = NULL;
	/* --check-config still fails on a bad file */
	CHECK_INT(from_args(ARGS("--check-config", "--config", (char *)write_yaml("workers: x\n")),
			    &c, &act, err, sizeof(err)),
		  -1);
	CHECK(strstr(err, ":1: workers:") != NULL);
	CHECK_INT(act, CONFIG_CHECK); /* so main can say "configuration is invalid" */
	/* --version and --help answer even without an upstream or with a bad file */
	act = CONFIG_RUN;
	CHECK_INT(from_args(ARGS("--version"), &c, &act, err, sizeof(err)), 0);
	CHECK_INT(act, CONFIG_VERSION);
	CHECK(c != NULL);
	config_free(c);
	c = NULL;
	CHECK_INT(from_args(ARGS("--config", (char *)write_yaml("workers: x\n"), "--help"), &c,
			    &act, err, sizeof(err)),
		  0);
	CHECK_INT(act, CONFIG_HELP);
	config_free(c);
	c = NULL;
	CHECK_INT(from_args(ARGS("-h"), &c, &act, err, sizeof(err)), 0);
	CHECK_INT(act, CONFIG_HELP);
	config_free(c);
	c = NULL;
	CHECK(strstr(config_usage(), "--listen") && strstr(config_usage(), "--upstream") &&
	      strstr(config_usage(), "--check-config") && strstr(config_usage(), "--workers"));
	config_free(NULL);
}

/* Pool resilience (docs/pool.md): every key, the defaults, and errors. */
static const struct err_case pool_err_cases[] = {
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    health: {pth: /}\n", 4,
	 "unknown key \"pools.a.health.pth\""},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    health: {expect: 200-99}\n", 4,
	 "not a status range"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    health: {path: nope}\n", 4,
	 "a path starting with /"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    health: {rise: 0}\n", 4,
	 "pools.a.health.rise: must be at least 1"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    outlier: {max_ejected: 150%}\n", 4,
	 "percentage"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    breaker: {error_rate: 0}\n", 4,
	 "must be at least 1"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    retry: {statuses: [99]}\n", 4,
	 "not a status code"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    retry: {attempts: 11}\n", 4,
	 "pools.a.retry.attempts"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    retry: {methods: some}\n", 4,
	 "not idempotent or all"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    hedge: {delay: p99}\n", 4,
	 "(or p95)"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    queue: {size: 10, wait: 1s}\n", 4,
	 "pools.a.queue.wait"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    balance: hash\n", 2,
	 "balance: hash needs hash_key"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    hash_key: query:x\n", 4,
	 "header:NAME, cookie:NAME or cache_key"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    slow_start: fast\n", 4, "not a duration"},
	{"pools:\n  a:\n    endpoints: [127.0.0.1:1]\n    resolve: 10ms\n", 4, "at least 1s"},
};

static void test_pool_resilience(void)
{
	static const char yaml[] =
		"pools:\n"
		"  default: {endpoints: [127.0.0.1:1]}\n"
		"  api:\n"
		"    endpoints: [127.0.0.1:2, 127.0.0.1:3]\n"
		"    balance: hash\n"
		"    hash_key: \"cookie:session\"\n"
		"    health: {path: /healthz, method: HEAD, expect: 200-204, interval: 2s,\n"
		"             timeout: 500ms, rise: 3, fall: 4}\n"
		"    outlier: {consecutive_failures: 7, ejection_time: 5s, max_ejection_time: 1m,\n"
		"              max_ejected: 30%, latency_factor: 4}\n"
		"    breaker: {window: 40, min_requests: 8, error_rate: 60%, open_time: 3s, probes: 2}\n"
		"    limits: {connections: 100, retries: 5}\n"
		"    retry: {attempts: 4, statuses: [503, 429], budget: 10%, min_retries: 1,\n"
		"            backoff: 10ms, max_backoff: 1s, per_try_timeout: 2s, timeout: 10s,\n"
		"            methods: all, idempotency_header: X-Idem}\n"
		"    hedge: {delay: p95, min_delay: 20ms}\n"
		"    queue: {size: 50, timeout: 250ms}\n"
		"    slow_start: 30s\n"
		"    resolve: 10s\n"
		"  other:\n"
		"    endpoints: [127.0.0.1:4]\n"
		"    retry: {}\n"
		"    hedge: {delay: 40ms}\n"
		"    outlier: off\n"
		"routes:\n"
		"  - {path_prefix: /a/, pool: api, hedge: false, retry_unsafe: true}\n"
		"  - {path_prefix: /b/, pool: other, hedge: true}\n"
		"  - {path_prefix: /c/, pool: other}\n";
	struct config *c = NULL;
	char err[1024], want[1024];

	CHECK_MSG(config_load_file(write_yaml(yaml), &c, err, sizeof(err)) == 0, "load: %s", err);
	if (!c)
		return;
	const struct cfg_pool *d = &c->pools[0], *a = &c->pools[1], *o = &c->pools[2];
	/* defaults */
	CHECK(!d->health.enabled && !d->breaker.enabled && !d->hedge.enabled);
	CHECK_INT(d->retry.attempts, 1);
	CHECK_INT(d->retry.n_statuses, 3);
	CHECK_INT(d->retry.statuses[0], 502);
	CHECK_INT(d->retry.budget, 20);
	CHECK_INT(d->outlier.consecutive_failures, 5);
	CHECK_INT(d->outlier.max_ejected, 50);
	CHECK_INT(d->queue.size, 0);
	CHECK_INT(d->limits.connections, 0);
	CHECK_INT(d->slow_start, 0);
	CHECK_STR(d->retry.idempotency_header, "Idempotency-Key");
	/* everything set */
	CHECK_INT(a->balance, CFG_BALANCE_HASH);
	CHECK_INT(a->hash_key, CFG_HASH_COOKIE);
	CHECK_STR(a->hash_name, "session");
	CHECK(a->health.enabled);
	CHECK_STR(a->health.path, "/healthz");
	CHECK_STR(a->health.method, "HEAD");
	CHECK_INT(a->health.expect_lo, 200);
	CHECK_INT(a->health.expect_hi, 204);
	CHECK_INT(a->health.interval, 2000);
	CHECK_INT(a->health.timeout, 500);
	CHECK_INT(a->health.rise, 3);
	CHECK_INT(a->health.fall, 4);
	CHECK_INT(a->outlier.consecutive_failures, 7);
	CHECK_INT(a->outlier.ejection_time, 5000);
	CHECK_INT(a->outlier.max_ejection_time, 60000);
	CHECK_INT(a->outlier.max_ejected, 30);
	CHECK_INT(a->outlier.latency_factor, 4);
	CHECK_INT(d->outlier.latency_factor, 0);
	CHECK(a->breaker.enabled);
	CHECK_INT(a->breaker.window, 40);
	CHECK_INT(a->breaker.min_requests, 8);
	CHECK_INT(a->breaker.error_rate, 60);
	CHECK_INT(a->breaker.open_time, 3000);
	CHECK_INT(a->breaker.probes, 2);
	CHECK_INT(a->limits.connections, 100);
	CHECK_INT(a->limits.retries, 5);
	CHECK_INT(a->retry.attempts, 4);
	CHECK_INT(a->retry.n_statuses, 2);
	CHECK_INT(a->retry.statuses[1], 429);
	CHECK_INT(a->retry.budget, 10);
	CHECK_INT(a->retry.min_retries, 1);
	CHECK_INT(a->retry.backoff, 10);
	CHECK_INT(a->retry.max_backoff, 1000);
	CHECK_INT(a->retry.per_try_timeout, 2000);
	CHECK_INT(a->retry.timeout, 10000);
	CHECK(a->retry.all_methods);
	CHECK_STR(a->retry.idempotency_header, "X-Idem");
	CHECK(a->hedge.enabled && a->hedge.p95);
	CHECK_INT(a->hedge.delay, 20);
	CHECK_INT(a->queue.size, 50);
	CHECK_INT(a->queue.timeout, 250);
	CHECK_INT(a->slow_start, 30000);
	CHECK_INT(a->resolve, 10000);
	CHECK_INT(d->resolve, 30000);
	/* "retry: {}" turns retries on with the defaults */
	CHECK_INT(o->retry.attempts, 3);
	CHECK(o->hedge.enabled && !o->hedge.p95);
	CHECK_INT(o->hedge.delay, 40);
	CHECK_INT(o->outlier.consecutive_failures, 0);
	CHECK_INT(c->n_routes, 3);
	if (c->n_routes == 3) {
		CHECK_INT(c->routes[0].hedge, CFG_ROUTE_HEDGE_OFF);
		CHECK(c->routes[0].retry_unsafe);
		CHECK_INT(c->routes[1].hedge, CFG_ROUTE_HEDGE_ON);
		CHECK(!c->routes[1].retry_unsafe);
		CHECK_INT(c->routes[2].hedge, CFG_ROUTE_HEDGE_POOL);
	}
	CHECK(d->hedge.p95); /* the default delay when a route turns hedging on */
	config_free(c);

	for (size_t i = 0; i < sizeof(pool_err_cases) / sizeof(pool_err_cases[0]); i++) {
		const struct err_case *e = &pool_err_cases[i];
		const char *p = write_yaml(e->yaml);
		size_t n;

		c = NULL;
		err[0] = 0;
		if (config_load_file(p, &c, err, sizeof(err)) != -1 || c) {
			test_fail(__FILE__, __LINE__, "pool case %zu: loaded, expected \"%s\"", i,
				  e->want);
			config_free(c);
			continue;
		}
		n = (size_t)snprintf(want, sizeof(want), "%s:%u: ", p, e->line);
		CHECK_MSG(!strncmp(err, want, n) && strstr(err + n, e->want),
			  "pool case %zu: got \"%s\", expected \"%s%s\"", i, err, want, e->want);
	}
}

/* the cache section and per-route cache (docs/cache.md) */
static const struct err_case cache_err_cases[] = {
	{"upstream: [127.0.0.1:1]\ncache: {enabeld: true}\n", 2, "unknown key \"cache.enabeld\""},
	{"upstream: [127.0.0.1:1]\ncache: {memory: 10k}\n", 2, "cache.memory: must be at least"},
	{"upstream: [127.0.0.1:1]\ncache: {enabled: maybe}\n", 2, "cache.enabled"},
	{"upstream: [127.0.0.1:1]\ncache: {redis: \"nohost\"}\n", 2, "cache.redis"},
	{"upstream: [127.0.0.1:1]\ncache: {tag_header: \"a b\"}\n", 2, "not a header name"},
	{"upstream: [127.0.0.1:1]\ncache: {redis_timeout: 2m}\n", 2, "cache.redis_timeout"},
	{"upstream: [127.0.0.1:1]\ncache: [1]\n", 2, "cache"},
	{"upstream: [127.0.0.1:1]\nroutes:\n  - {pool: default, cache: {pots: true}}\n", 3,
	 "cache: unknown key \"pots\""},
	{"upstream: [127.0.0.1:1]\nroutes:\n  - {pool: default, cache: sometimes}\n", 3,
	 "routes[0].cache"},
};

static void test_cache(void)
{
	char err[1024], want[600];
	struct config *c = NULL;
	const char *p = write_yaml("upstream: [127.0.0.1:1]\n");

	CHECK(config_load_file(p, &c, err, sizeof(err)) == 0 && c);
	if (c) { /* defaults */
		CHECK(!c->cache.enabled);
		CHECK(c->cache.memory == 256ULL << 20 && c->cache.max_object == 4ULL << 20);
		CHECK(c->cache.redis.len == 0 && c->cache.redis_timeout == 50);
		CHECK(c->cache.coalesce_timeout == 10000 && c->cache.grace == 0);
		CHECK_STR(c->cache.tag_header, "Surrogate-Key");
		config_free(c);
	}
	c = NULL;
	p = write_yaml("upstream: [127.0.0.1:1]\n"
		       "cache: {enabled: true, memory: 64m, max_object: 512k, grace: 30s,\n"
		       "        coalesce_timeout: 2s, tag_header: X-Tags, redis: \"127.0.0.1:6379\",\n"
		       "        redis_timeout: 20ms, post_body_max: 8k}\n"
		       "routes:\n"
		       "  - {path_prefix: /a/, pool: default, cache: false}\n"
		       "  - {path_prefix: /b/, pool: default, cache: {post: true}}\n"
		       "  - {path_prefix: /c/, pool: default}\n");
	CHECK_MSG(config_load_file(p, &c, err, sizeof(err)) == 0 && c, "%s", err);
	if (c) {
		CHECK(c->cache.enabled && c->cache.memory == 64ULL << 20);
		CHECK(c->cache.max_object == 512 << 10 && c->cache.grace == 30000);
		CHECK(c->cache.coalesce_timeout == 2000 && c->cache.redis_timeout == 20);
		CHECK(c->cache.post_body_max == 8 << 10 && c->cache.redis.len > 0);
		CHECK_STR(c->cache.tag_header, "X-Tags");
		CHECK(c->n_routes == 3 && !c->routes[0].cache && c->routes[1].cache &&
		      c->routes[1].cache_post && c->routes[2].cache && !c->routes[2].cache_post);
		config_free(c);
	}
	for (size_t i = 0; i < sizeof(cache_err_cases) / sizeof(cache_err_cases[0]); i++) {
		const struct err_case *e = &cache_err_cases[i];
		p = write_yaml(e->yaml);
		c = NULL;
		err[0] = 0;
		if (config_load_file(p, &c, err, sizeof(err)) != -1 || c) {
			test_fail(__FILE__, __LINE__, "cache case %zu: loaded, expected \"%s\"", i,
				  e->want);
			config_free(c);
			continue;
		}
		size_t n = (size_t)snprintf(want, sizeof(want), "%s:%u: ", p, e->line);
		CHECK_MSG(!strncmp(err, want, n) && strstr(err + n, e->want),
			  "cache case %zu: got \"%s\", expected \"%s%s\"", i, err, want, e->want);
	}
}

/* the reflex section (docs/rules.md); compiling is the reflex module's
 * (tests/unit/gateway/http/test_reflex.c): no hook here, so parse only */
static const struct err_case reflex_err_cases[] = {
	{"upstream: [127.0.0.1:1]\nreflex: {max_scan: 1k}\n", 2, "reflex: unknown key \"max_scan\""},
	{"upstream: [127.0.0.1:1]\nreflex: {max_scan_bytes: 0}\n", 2, "reflex.max_scan_bytes"},
	{"upstream: [127.0.0.1:1]\nreflex:\n  rules:\n    - {action: block}\n", 4,
	 "a rule needs a name"},
	{"upstream: [127.0.0.1:1]\nreflex:\n  rules:\n    - {name: a}\n", 4, "needs an action"},
	{"upstream: [127.0.0.1:1]\nreflex:\n  rules:\n    - {name: a, action: zap}\n", 4,
	 "reflex.rules[0].action: \"zap\""},
	{"upstream: [127.0.0.1:1]\nreflex:\n  rules:\n    - {name: a, action: block, colour: red}\n",
	 4, "unknown key \"colour\""},
	{"upstream: [127.0.0.1:1]\nreflex:\n  rules:\n    - {name: a, action: redact}\n", 4,
	 "redact needs detect"},
	{"upstream: [127.0.0.1:1]\nreflex:\n  rules:\n    - {name: a, action: route}\n", 4,
	 "route needs a pool"},
	{"upstream: [127.0.0.1:1]\nreflex:\n  rules:\n    - {name: a, action: block, in: [nose]}\n",
	 4, "is not url, headers, body or response"},
	{"upstream: [127.0.0.1:1]\nreflex:\n  rules:\n    - {name: a, action: block, detect: [email], in: [response]}\n",
	 4, "in: response only works with action: redact"},
	{"upstream: [127.0.0.1:1]\nreflex:\n  rules:\n    - {name: a, action: block, in: headers}\n",
	 4, "in: headers needs headers"},
	{"upstream: [127.0.0.1:1]\nreflex:\n  rules:\n    - {name: a, action: block, on_oversize: maybe}\n",
	 4, "on_oversize"},
	{"upstream: [127.0.0.1:1]\nreflex:\n  rules:\n    - {name: a, action: block}\n"
	 "    - {name: a, action: tag}\n",
	 5, "given twice"},
	{"upstream: [127.0.0.1:1]\nreflex:\n  detectors:\n    - {name: x}\n", 4,
	 "needs a name and a pattern"},
	{"upstream: [127.0.0.1:1]\nreflex:\n  detectors:\n    - {name: x, pattern: a, severity: dire}\n",
	 4, "severity"},
};

static void test_reflex(void)
{
	char err[1024], want[600];
	struct config *c = NULL;
	const char *p = write_yaml("upstream: [127.0.0.1:1]\n");

	CHECK(config_load_file(p, &c, err, sizeof(err)) == 0 && c);
	if (c) {
		CHECK(c->reflex.max_scan_bytes == 1 << 20 && !c->reflex.n_rules && !c->reflex.compiled);
		config_free(c);
	}
	c = NULL;
	p = write_yaml("upstream: [127.0.0.1:1]\n"
		       "reflex:\n"
		       "  max_scan_bytes: 64k\n"
		       "  hash_key: k1\n"
		       "  detectors:\n"
		       "    - {name: order_id, pattern: 'ORD-[0-9]+', severity: high, caseless: true}\n"
		       "  rules:\n"
		       "    - {name: b, method: POST, host: API.example.com, path_prefix: /v1/,\n"
		       "       header: \"X-Env: prod\", query: debug=1, detect: [pii, order_id],\n"
		       "       in: [body], action: block, status: 422, on_oversize: block}\n"
		       "    - {name: r, detect: email, action: redact, redact: last4}\n"
		       "    - {name: t, path: /exact, action: tag, tag: hello, tag_header: X-T}\n"
		       "    - name: canned\n"
		       "      action: respond\n"
		       "      body: hi\n"
		       "      content_type: text/plain\n"
		       "      respond_headers: {X-A: \"1\", X-B: two}\n"
		       "    - {name: h, detect: [injection], headers: [X-Prompt], action: block}\n");
	CHECK_MSG(config_load_file(p, &c, err, sizeof(err)) == 0 && c, "%s", err);
	if (c) {
		const struct cfg_reflex *rc = &c->reflex;
		CHECK(rc->max_scan_bytes == 64 << 10);
		CHECK_STR(rc->hash_key, "k1");
		CHECK(rc->n_detectors == 1 && rc->detectors[0].severity == 3 &&
		      rc->detectors[0].caseless);
		CHECK(rc->n_rules == 5);
		if (rc->n_rules == 5) {
			const struct cfg_rx_rule *b = &rc->rules[0];
			CHECK_STR(b->method, "POST");
			CHECK_STR(b->host, "api.example.com");
			CHECK(!b->path_exact && !strcmp(b->path, "/v1/"));
			CHECK(!strcmp(b->header, "X-Env") && b->has_header_value &&
			      !strcmp(b->header_value, "prod"));
			CHECK(!strcmp(b->query, "debug") && !strcmp(b->query_value, "1"));
			CHECK(b->n_detect == 2 && b->in == CFG_RX_IN_BODY && b->status == 422 &&
			      b->oversize_block && b->action == CFG_RX_BLOCK);
			CHECK(rc->rules[1].redact == CFG_RX_LAST4 && rc->rules[1].status == 403 &&
			      rc->rules[1].in == (CFG_RX_IN_URL | CFG_RX_IN_BODY));
			CHECK(rc->rules[2].path_exact && !strcmp(rc->rules[2].tag, "hello") &&
			      !strcmp(rc->rules[2].tag_header, "X-T"));
			CHECK(rc->rules[3].status == 200 && !strcmp(rc->rules[3].body, "hi") &&
			      !strcmp(rc->rules[3].resp_headers, "X-A: 1\r\nX-B: two\r\n") &&
			      !strcmp(rc->rules[3].content_type, "text/plain"));
			CHECK(rc->rules[4].in == (CFG_RX_IN_URL | CFG_RX_IN_HEADERS | CFG_RX_IN_BODY));
		}
		config_free(c);
	}
	/* the admin API's rule text: the same parser */
	struct cfg_rx_rule r;
	const char *json = "{\"name\":\"x\",\"detect\":[\"ssn\"],\"action\":\"block\"}";
	CHECK_MSG(config_parse_rx_rule(json, strlen(json), &r, err, sizeof(err)) == 0, "%s", err);
	CHECK(r.n_detect == 1 && !strcmp(r.detect[0], "ssn") && r.line == 0);
	config_rx_rule_fini(&r);
	json = "{\"name\":\"x\",\"action\":\"nope\"}";
	CHECK(config_parse_rx_rule(json, strlen(json), &r, err, sizeof(err)) == -1);
	CHECK_MSG(strstr(err, "\"nope\""), "%s", err);
	CHECK(config_parse_rx_rule("[1,", 3, &r, err, sizeof(err)) == -1);

	for (size_t i = 0; i < sizeof(reflex_err_cases) / sizeof(reflex_err_cases[0]); i++) {
		const struct err_case *e = &reflex_err_cases[i];
		p = write_yaml(e->yaml);
		c = NULL;
		err[0] = 0;
		if (config_load_file(p, &c, err, sizeof(err)) != -1 || c) {
			test_fail(__FILE__, __LINE__, "reflex case %zu: loaded, expected \"%s\"", i,
				  e->want);
			config_free(c);
			continue;
		}
		size_t n = (size_t)snprintf(want, sizeof(want), "%s:%u: ", p, e->line);
		CHECK_MSG(!strncmp(err, want, n) && strstr(err + n, e->want),
			  "reflex case %zu: got \"%s\", expected \"%s%s\"", i, err, want, e->want);
	}
}

/* listen entries as mappings, TLS on listeners and pools (the contexts are
 * built at load: certificates come from the openssl CLI, SKIP without it) */
static void test_tls(void)
{
	char err[1024], cmd[1024];
	struct config *c = NULL;
	const char *p = write_yaml("listen:\n"
				   "  - {address: \"127.0.0.1:1\"}\n"
				   "  - \"127.0.0.1:2\"\n"
				   "pools:\n"
				   "  default: {endpoints: [\"127.0.0.1:3\"], tls: {verify: false, sni: x.example}}\n"
				   "  b: {endpoints: [\"127.0.0.1:4\"], tls: true}\n"
				   "  c: {endpoints: [\"127.0.0.1:5\"], tls: false}\n"
				   "timeouts: {tls_handshake: 3s}\n");

	test_begin("config_tls_schema");
	CHECK_MSG(config_load_file(p, &c, err, sizeof(err)) == 0, "%s", err);
	if (c) {
		CHECK_INT(c->n_listens, 2);
		CHECK(!c->listen_tls[0].enabled && !c->listen_tls[1].enabled);
		CHECK(c->pools[0].tls.enabled && !c->pools[0].tls.verify && c->pools[0].tls.ctx);
		CHECK_STR(c->pools[0].tls.sni, "x.example");
		CHECK(c->pools[1].tls.enabled && c->pools[1].tls.verify && c->pools[1].tls.ctx);
		CHECK(!c->pools[2].tls.enabled && !c->pools[2].tls.ctx);
		CHECK_INT(c->timeouts.tls_handshake, 3000);
	}
	config_free(c);
	c = NULL;
	test_end();

	snprintf(cmd, sizeof(cmd),
		 "cd %s && openssl ecparam -name prime256v1 -genkey -noout -out k.pem 2>/dev/null && "
		 "openssl req -x509 -new -key k.pem -subj /CN=t -days 1 -out c.pem 2>/dev/null && "
		 "openssl rand 80 > t.key",
		 tmpdir);
	int st = system(cmd);
	if (st != 0) {
		test_skip("config_tls_listener", "the openssl CLI could not make a certificate");
		return;
	}
	test_begin("config_tls_listener");
	char yaml[2048];
	snprintf(yaml, sizeof(yaml), "upstream: 127.0.0.1:1\n"
		       "listen:\n"
		       "  - address: \"127.0.0.1:1\"\n"
		       "    tls:\n"
		       "      cert: %1$s/c.pem\n"
		       "      key: %1$s/k.pem\n"
		       "      certs: [{cert: %1$s/c.pem, key: %1$s/k.pem}]\n"
		       "      client_ca: %1$s/c.pem\n"
		       "      client_subject_header: X-Cert-Subject\n"
		       "      session_cache: 100\n"
		       "      tickets: {rotate: 1h, key_file: %1$s/t.key}\n",
		 tmpdir);
	p = write_yaml(yaml);
	CHECK_MSG(p != NULL, "write_yaml");
	CHECK_MSG(config_load_file(p, &c, err, sizeof(err)) == 0, "%s", err);
	if (c) {
		const struct cfg_listen_tls *t = &c->listen_tls[0];
		CHECK(t->enabled && t->ctx);
		CHECK_INT(t->n_certs, 2);
		CHECK_STR(t->client_subject_header, "X-Cert-Subject");
		CHECK_INT(t->session_cache, 100);
		CHECK_INT(t->ticket_rotate, 3600000);
		CHECK_INT(t->line, 5); /* the first line of the tls mapping */
	}
	config_free(c);
	test_end();
}

/* ---- ratelimit (docs/ratelimit.md) ----------------------------------------- */

static void test_ratelimit(void)
{
	static const char yaml[] =
		"listen: [\"127.0.0.1:8081\"]\n"
		"upstream: 127.0.0.1:9\n"
		"ratelimit:\n"
		"  client: {rate: 600/m, burst: 20}\n"
		"  api_key: {header: Authorization, rate: 5, global: true}\n"
		"  routes:\n"
		"    - {path_prefix: /api/, host: API.example.com, rate: 0.5/s, burst: 2}\n"
		"  escalate: {refusals: 10, window: 5s, penalty: 2m}\n"
		"  redis: 127.0.0.1:6379\n"
		"  redis_timeout: 20ms\n"
		"  hosts: 3\n"
		"  redis_failure: closed\n"
		"  kernel:\n"
		"    interfaces: [eth0, veth1]\n"
		"    attach: tc\n"
		"    syn_rate: 20\n"
		"    pkt_rate: 1000\n"
		"    pkt_burst: 3000\n"
		"    prefix_v6: 56\n"
		"    allow: [10.0.0.0/8, \"2001:db8::/32\"]\n"
		"    deny: [192.0.2.7]\n"
		"    dry_run: true\n";
	struct config *c = NULL;
	char err[1024];

	CHECK_MSG(config_load_file(write_yaml(yaml), &c, err, sizeof(err)) == 0, "load: %s", err);
	if (!c)
		return;
	const struct cfg_ratelimit *r = &c->ratelimit;
	CHECK(r->client.enabled && r->client.rate == 10.0 && r->client.burst == 20);
	CHECK(!r->client.global);
	CHECK(r->api_key.enabled && r->api_key.global && r->api_key.burst == 5);
	CHECK_STR(r->key_header, "Authorization");
	CHECK_INT(r->n_routes, 1);
	CHECK_STR(r->routes[0].host, "api.example.com");
	CHECK_STR(r->routes[0].path_prefix, "/api/");
	CHECK(r->routes[0].lim.rate == 0.5 && r->routes[0].lim.burst == 2);
	CHECK_INT(r->escalate_refusals, 10);
	CHECK_INT(r->escalate_window, 5000);
	CHECK_INT(r->escalate_penalty, 120000);
	CHECK(r->redis.len > 0);
	CHECK_INT(r->redis_timeout, 20);
	CHECK_INT(r->hosts, 3);
	CHECK_INT(r->fallback, CFG_RL_FALLBACK_CLOSED);
	CHECK_INT(r->kernel.n_interfaces, 2);
	CHECK_STR(r->kernel.interfaces[1], "veth1");
	CHECK_STR(r->kernel.attach, "tc");
	CHECK_INT(r->kernel.syn_rate, 20);
	CHECK_INT(r->kernel.syn_burst, 20); /* defaults to the rate */
	CHECK_INT(r->kernel.pkt_burst, 3000);
	CHECK_INT(r->kernel.prefix_v4, 32);
	CHECK_INT(r->kernel.prefix_v6, 56);
	CHECK_INT(r->kernel.n_allow, 2);
	CHECK_STR(r->kernel.allow[1], "2001:db8::/32");
	CHECK_INT(r->kernel.n_deny, 1);
	CHECK(r->kernel.dry_run);
	/* limits: (request sizes) is a different section and keeps its defaults */
	CHECK_INT(c->limits.header_bytes, 32 << 10);
	config_free(c);
	c = NULL;

	/* defaults: nothing limited */
	CHECK(config_load_file(write_yaml("upstream: 127.0.0.1:9\n"), &c, err, sizeof(err)) ==
	      0);
	if (c) {
		CHECK(!c->ratelimit.client.enabled && !c->ratelimit.api_key.enabled);
		CHECK_STR(c->ratelimit.key_header, "X-API-Key");
		CHECK_INT(c->ratelimit.kernel.n_interfaces, 0);
		CHECK_INT(c->ratelimit.hosts, 1);
		CHECK_INT(c->ratelimit.fallback, CFG_RL_FALLBACK_LOCAL);
		config_free(c);
		c = NULL;
	}

	static const struct {
		const char *yaml, *want;
	} bad[] = {
		{"ratelimit:\n  client: {burst: 3}\n", ":2: ratelimit.client: rate is missing"},
		{"ratelimit:\n  client: {rate: fast}\n", ":2: ratelimit.client.rate: \"fast\""},
		{"ratelimit:\n  client: {rate: 5, burst: 0}\n",
		 ":2: ratelimit.client.burst: must be at least 1"},
		{"ratelimit:\n  client: {rate: 5, bogus: 1}\n", "unknown key \"ratelimit.client.bogus\""},
		{"ratelimit:\n  nope: 1\n", ":2: unknown key \"ratelimit.nope\""},
		{"ratelimit:\n  kernel:\n    deny: [10.1.2.3/8]\n", ":3: ratelimit.kernel.deny:"},
		{"ratelimit:\n  kernel:\n    allow: [not-an-ip]\n", ":3: ratelimit.kernel.allow:"},
		{"ratelimit:\n  kernel:\n    attach: magic\n", ":3: ratelimit.kernel.attach:"},
		{"ratelimit:\n  kernel:\n    prefix_v4: 33\n", ":3: ratelimit.kernel.prefix_v4:"},
		{"ratelimit:\n  redis_failure: maybe\n", ":2: ratelimit.redis_failure:"},
		{"ratelimit:\n  routes:\n    - {path_prefix: api, rate: 1}\n",
		 ":3: ratelimit.routes[].path_prefix:"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		c = NULL;
		int rc = config_load_file(write_yaml(bad[i].yaml), &c, err, sizeof(err));
		CHECK_MSG(rc != 0 && strstr(err, bad[i].want), "case %zu: rc %d err \"%s\" want \"%s\"",
			  i, rc, err, bad[i].want);
		config_free(c);
	}
}

static void test_trace(void)
{
	static const char yaml[] = "upstream: 127.0.0.1:9\n"
				   "trace:\n"
				   "  enabled: true\n"
				   "  window: 2s\n"
				   "  slow_connect: 50ms\n"
				   "  sensitivity: 7\n"
				   "  min_samples: 4\n"
				   "  min_requests: 10\n"
				   "  prefix_v4: 16\n"
				   "  eject: true\n"
				   "  eject_time: 1m\n"
				   "  penalty: yes\n";
	struct config *c = NULL;
	char err[1024];

	CHECK_MSG(config_load_file(write_yaml(yaml), &c, err, sizeof(err)) == 0, "load: %s", err);
	if (c) {
		const struct cfg_trace *t = &c->trace;
		CHECK(t->enabled && t->eject && t->penalty);
		CHECK_INT(t->window, 2000);
		CHECK_INT(t->slow_connect, 50);
		CHECK_INT(t->sensitivity, 7);
		CHECK_INT(t->min_samples, 4);
		CHECK_INT(t->min_requests, 10);
		CHECK_INT(t->prefix_v4, 16);
		CHECK_INT(t->prefix_v6, 64);
		CHECK_INT(t->eject_time, 60000);
		CHECK_INT(t->penalty_time, 60000);
		CHECK_INT(t->events_per_sec, 1000);
		config_free(c);
		c = NULL;
	}
	CHECK(config_load_file(write_yaml("upstream: 127.0.0.1:9\n"), &c, err, sizeof(err)) == 0);
	if (c) {
		CHECK(!c->trace.enabled && !c->trace.eject && !c->trace.penalty);
		CHECK_INT(c->trace.window, 5000);
		CHECK_INT(c->trace.sensitivity, 5);
		config_free(c);
		c = NULL;
	}
	static const struct {
		const char *yaml, *want;
	} bad[] = {
		{"trace:\n  enabled: maybe\n", ":2: trace.enabled:"},
		{"trace:\n  window: 10ms\n", ":2: trace.window: must be at least 100"},
		{"trace:\n  prefix_v4: 33\n", ":2: trace.prefix_v4:"},
		{"trace:\n  nope: 1\n", ":2: unknown key \"trace.nope\""},
		{"trace: on\n", ":1:"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		c = NULL;
		int rc = config_load_file(write_yaml(bad[i].yaml), &c, err, sizeof(err));
		CHECK_MSG(rc != 0 && strstr(err, bad[i].want), "case %zu: rc %d err \"%s\" want \"%s\"",
			  i, rc, err, bad[i].want);
		config_free(c);
	}
}

static void test_user(void)
{
	struct config *c = NULL;
	char err[1024];

	CHECK_MSG(config_load_file(write_yaml("upstream: 127.0.0.1:9\nuser: reflex\n"), &c, err,
				   sizeof(err)) == 0,
		  "load: %s", err);
	if (c)
		CHECK_STR(c->user, "reflex");
	config_free(c);
	c = NULL;
	CHECK(config_load_file(write_yaml("upstream: 127.0.0.1:9\n"), &c, err, sizeof(err)) == 0);
	if (c)
		CHECK_STR(c->user, ""); /* stay as started */
	config_free(c);
	static const char *const bad[] = { "user: \"a b\"\n", "user: ../root\n", "user: 1abc\n",
					   "user: [x]\n" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		c = NULL;
		int rc = config_load_file(write_yaml(bad[i]), &c, err, sizeof(err));
		CHECK_MSG(rc != 0 && strstr(err, ":1:"), "case %zu: rc %d err \"%s\"", i, rc, err);
		config_free(c);
	}
}

int main(void)
{
	char cmd[300];

	snprintf(tmpdir, sizeof(tmpdir), "%s/reflex-test-config-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir)) {
		test_skip("config", "cannot make a temp dir");
		return 0;
	}

	test_begin("config_full_file");
	test_full();
	test_end();

	test_begin("config_schema_example");
	test_schema_example();
	test_end();

	test_begin("config_defaults");
	test_defaults();
	test_end();

	test_begin("config_errors_file_line");
	test_errors();
	test_end();

	test_tls();

	test_begin("config_route_and_pool_counts");
	test_counts();
	test_end();
	test_begin("config_units_edges");
	test_units();
	test_end();

	test_begin("config_reflex");
	test_reflex();
	test_end();

	test_begin("config_flags_override");
	test_flags_override();
	test_end();

	test_begin("config_flag_errors");
	test_flag_errors();
	test_end();

	test_begin("config_ipv6_and_names");
	test_ipv6_and_names();
	test_end();

	test_begin("config_pool_resilience");
	test_pool_resilience();
	test_end();

	test_begin("config_actions");
	test_actions();
	test_end();

	test_begin("config_ratelimit");
	test_ratelimit();
	test_end();

	test_begin("config_trace");
	test_trace();
	test_end();

	test_begin("config_cache");
	test_cache();
	test_end();

	test_begin("config_user");
	test_user();
	test_end();

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return test_exit_code();
}
