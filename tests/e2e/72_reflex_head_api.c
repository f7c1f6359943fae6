/* 72_reflex_head_api — reflex rules (docs/rules.md), the second batch:
 * a redact rule rewrites its matches in the forwarded URL (percent-encoded
 * token) and in the headers it names; rules added through the admin API
 * survive a reload (after the file's rules, before the rule they were put
 * before, a file rule of the same name wins, one the new file cannot take
 * refuses the reload); per-rule counters follow the rule's name, not its
 * position. The origin's /echo shows the target and headers it received. */
#include "lib/harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN "head-api-secret-0123456789"

static int gw_port, admin_port, o_port;
static const char *cfg_path, *tokens;
static struct h_proc *gw, *origin;

/* version 0: the start; 1: adds "extra" and "shadow"; 2: also drops pool alt */
static const char *yaml(int version)
{
	static char buf[4096];
	char alt[128] = "";

	if (version < 2)
		snprintf(alt, sizeof(alt), "  alt: {endpoints: [\"127.0.0.1:%d\"]}\n", o_port);
	snprintf(buf, sizeof(buf),
		 "workers: 2\n"
		 "listen: [\"127.0.0.1:%d\"]\n"
		 "pools:\n"
		 "  default: {endpoints: [\"127.0.0.1:%d\"]}\n"
		 "%s"
		 "admin: {listen: \"127.0.0.1:%d\", token_file: \"%s\"}\n"
		 "reflex:\n"
		 "  hash_key: e2e-key\n"
		 "  rules:\n"
		 "    - {name: url-pii, detect: [email], in: [url], action: redact}\n"
		 "    - {name: hdr-pii, detect: [email, card], in: [headers], headers: [X-User],"
		 " action: redact}\n"
		 "    - {name: hdr-last4, detect: [card], in: [headers], headers: [X-Card],"
		 " action: redact, redact: last4}\n"
		 "    - {name: file-block, path: /file-block, action: block, status: 409}\n"
		 "%s",
		 gw_port, o_port, alt, admin_port, tokens,
		 version >= 1 ? "    - {name: extra, path: /extra, action: block, status: 410}\n"
				"    - {name: shadow, path: /shadow, action: respond, status: 202,"
				" body: from-file}\n"
			      : "");
	return buf;
}

static long admin(const char *method, const char *path, const char *body, bool auth,
		  struct h_resp *r)
{
	char url[256], hdr[256];
	const char *hdrs[3] = {"Content-Type: application/json", NULL, NULL};
	struct h_req q = {.method = method,
			  .url = url,
			  .timeout_ms = 20000,
			  .headers = hdrs,
			  .body = body,
			  .body_len = body ? strlen(body) : 0,
			  .no_expect = true};

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", admin_port, path);
	if (auth) {
		snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s", TOKEN);
		hdrs[1] = hdr;
	}
	if (h_http(&q, r) != 0)
		return -1;
	return r->status;
}

static long admin_do(const char *method, const char *path, const char *body)
{
	struct h_resp r;
	long st = admin(method, path, body, true, &r);
	h_resp_free(&r);
	return st;
}

/* GET path through the gateway; e gets the origin's echo (when 200). */
static long get(const char *path, const char *hdr, struct h_echo *e, bool *echo)
{
	char url[1024];
	const char *hdrs[2] = {hdr, NULL};
	struct h_req q = {.method = "GET", .url = url, .timeout_ms = 8000, .headers = hdrs};
	struct h_resp r;
	long st;

	*echo = false;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", gw_port, path);
	if (h_http(&q, &r) != 0)
		return -1;
	st = r.status;
	if (st == 200 && r.body && h_echo_parse(r.body, r.body_len, e) == 0)
		*echo = true;
	h_resp_free(&r);
	return st;
}

static long get_status(const char *path)
{
	struct h_echo e;
	bool echo;
	long st = get(path, NULL, &e, &echo);
	if (echo)
		h_echo_free(&e);
	return st;
}

static void test_redact_head(void)
{
	struct h_echo e;
	bool echo;

	test_begin("redact_url_query_percent_encoded");
	CHECK_INT(get("/echo?email=john.doe%40example.com&x=1", NULL, &e, &echo), 200);
	CHECK(echo);
	if (echo) {
		CHECK_STR(e.target, "/echo?email=%5BEMAIL%5D&x=1");
		h_echo_free(&e);
	}
	CHECK_INT(get("/echo?to=jane.roe@example.org&cc=a+b+max@example.net", NULL, &e, &echo),
		  200);
	CHECK(echo);
	if (echo) {
		CHECK_STR(e.target, "/echo?to=%5BEMAIL%5D&cc=a+b+%5BEMAIL%5D");
		h_echo_free(&e);
	}
	/* nothing to redact: the target goes out byte for byte */
	CHECK_INT(get("/echo?q=a%20b&n=1", NULL, &e, &echo), 200);
	if (echo) {
		CHECK_STR(e.target, "/echo?q=a%20b&n=1");
		h_echo_free(&e);
	}
	test_end();

	test_begin("redact_named_headers");
	CHECK_INT(get("/echo", "X-User: contact john.doe@example.com now", &e, &echo), 200);
	CHECK(echo);
	if (echo) {
		const char *v = h_echo_header(&e, "X-User");
		CHECK(v && !strcmp(v, "contact [EMAIL] now"));
		h_echo_free(&e);
	}
	CHECK_INT(get("/echo", "X-Card: 4111 1111 1111 1111", &e, &echo), 200);
	if (echo) {
		const char *v = h_echo_header(&e, "X-Card");
		CHECK(v && !strcmp(v, "**** **** **** 1111"));
		h_echo_free(&e);
	}
	/* a header no redact rule names is forwarded as it is */
	CHECK_INT(get("/echo", "X-Other: john.doe@example.com", &e, &echo), 200);
	if (echo) {
		const char *v = h_echo_header(&e, "X-Other");
		CHECK(v && !strcmp(v, "john.doe@example.com"));
		h_echo_free(&e);
	}
	test_end();
}

/* The "hits" of rule `name` in GET /rules, or -1. */
static long long rule_hits(const char *name)
{
	struct h_resp r;
	char key[128];
	long long hits = -1;

	if (admin("GET", "/rules", NULL, false, &r) != 200) {
		h_resp_free(&r);
		return -1;
	}
	snprintf(key, sizeof(key), "{\"name\":\"%s\",", name);
	const char *p = r.body ? strstr(r.body, key) : NULL;
	const char *end = p ? strstr(p, "\"hits\":") : NULL;
	if (end)
		hits = atoll(end + 7);
	h_resp_free(&r);
	return hits;
}

/* The reflex_rules_rule_hits_total sample of rule `name`, or -1. */
static long long metric_hits(const char *name)
{
	struct h_resp r;
	char key[160];
	long long hits = -1;

	if (admin("GET", "/metrics", NULL, false, &r) != 200) {
		h_resp_free(&r);
		return -1;
	}
	snprintf(key, sizeof(key), "reflex_rules_rule_hits_total{rule=\"%s\",", name);
	const char *p = r.body ? strstr(r.body, key) : NULL;
	const char *sp = p ? strstr(p, "} ") : NULL;
	if (sp)
		hits = atoll(sp + 2);
	h_resp_free(&r);
	return hits;
}

static void test_counters_by_name(void)
{
	test_begin("rule_counters_follow_the_name");
	long long fb = rule_hits("file-block");
	CHECK(fb >= 0);
	CHECK_INT(get_status("/file-block"), 409);
	CHECK_INT(get_status("/file-block"), 409);
	CHECK_INT(rule_hits("file-block"), fb + 2);
	CHECK_INT(metric_hits("file-block"), fb + 2);
	/* a rule in front of it: positions shift, counters do not */
	CHECK_INT(admin_do("POST", "/rules?before=url-pii",
			   "{\"name\":\"front\",\"path\":\"/front\",\"action\":\"block\","
			   "\"status\":418}"),
		  201);
	CHECK_INT(rule_hits("file-block"), fb + 2);
	CHECK_INT(metric_hits("file-block"), fb + 2);
	CHECK_INT(rule_hits("front"), 0);
	CHECK_INT(get_status("/front"), 418);
	CHECK_INT(rule_hits("front"), 1);
	CHECK_INT(rule_hits("file-block"), fb + 2);
	/* removed again: the others keep theirs */
	CHECK_INT(admin_do("DELETE", "/rules/front", NULL), 200);
	CHECK_INT(rule_hits("file-block"), fb + 2);
	CHECK_INT(metric_hits("file-block"), fb + 2);
	CHECK_INT(get_status("/file-block"), 409);
	CHECK_INT(metric_hits("file-block"), fb + 3);
	test_end();
}

static bool write_config(int version)
{
	FILE *f = fopen(cfg_path, "w");
	if (!f)
		return false;
	fputs(yaml(version), f);
	fclose(f);
	return true;
}

static void test_reload(void)
{
	struct h_resp r;

	test_begin("api_rules_survive_reload");
	CHECK_INT(admin_do("POST", "/rules",
			   "{\"name\":\"api-deny\",\"path\":\"/api-deny\",\"action\":\"block\","
			   "\"status\":418}"),
		  201);
	CHECK_INT(admin_do("POST", "/rules?before=file-block",
			   "{\"name\":\"api-early\",\"path_prefix\":\"/file-block\",\"action\":"
			   "\"respond\",\"status\":203,\"body\":\"early\"}"),
		  201);
	CHECK_INT(admin_do("POST", "/rules",
			   "{\"name\":\"shadow\",\"path\":\"/shadow\",\"action\":\"block\","
			   "\"status\":418}"),
		  201);
	CHECK_INT(get_status("/api-deny"), 418);
	CHECK_INT(get_status("/file-block"), 203);
	CHECK_INT(get_status("/shadow"), 418);
	long long deny_hits = rule_hits("api-deny");
	long long early_hits = rule_hits("api-early");
	CHECK(write_config(1));
	CHECK_INT(admin("POST", "/reload", NULL, true, &r), 200);
	h_resp_free(&r);
	CHECK_INT(get_status("/extra"), 410);	   /* the file's new rule */
	CHECK_INT(get_status("/api-deny"), 418);   /* the API's rules are still there */
	CHECK_INT(get_status("/file-block"), 203); /* ... and still before file-block */
	CHECK_INT(get_status("/shadow"), 202);	   /* the file's rule of that name wins */
	/* their counters went on */
	CHECK_INT(rule_hits("api-deny"), deny_hits + 1);
	CHECK_INT(rule_hits("api-early"), early_hits + 1);
	CHECK_INT(admin("GET", "/rules", NULL, false, &r), 200);
	const char *deny = r.body ? strstr(r.body, "{\"name\":\"api-deny\"") : NULL;
	const char *extra = r.body ? strstr(r.body, "{\"name\":\"extra\"") : NULL;
	const char *early = r.body ? strstr(r.body, "{\"name\":\"api-early\"") : NULL;
	const char *fblock = r.body ? strstr(r.body, "{\"name\":\"file-block\"") : NULL;
	CHECK_MSG(deny && extra && deny > extra, "api rules after the file's: %s",
		  h_excerpt(r.body, r.body_len, 600));
	CHECK(early && fblock && early < fblock);
	CHECK(deny && strstr(deny, "\"source\":\"admin\""));
	h_resp_free(&r);
	test_end();

	test_begin("api_rule_delete_is_for_good");
	CHECK_INT(admin_do("DELETE", "/rules/api-early", NULL), 200);
	CHECK_INT(get_status("/file-block"), 409);
	CHECK_INT(admin("POST", "/reload", NULL, true, &r), 200);
	h_resp_free(&r);
	CHECK_INT(get_status("/file-block"), 409);
	CHECK_INT(get_status("/api-deny"), 418);
	test_end();

	test_begin("api_rule_the_new_file_cannot_take_refuses_reload");
	CHECK_INT(admin_do("POST", "/rules",
			   "{\"name\":\"to-alt\",\"header\":\"X-Alt\",\"action\":\"route\","
			   "\"pool\":\"alt\"}"),
		  201);
	CHECK(write_config(2)); /* no pool alt */
	CHECK_INT(admin("POST", "/reload", NULL, true, &r), 400);
	CHECK_MSG(r.body && strstr(r.body, "to-alt"), "reload error: %s",
		  h_excerpt(r.body, r.body_len, 300));
	h_resp_free(&r);
	CHECK_INT(get_status("/extra"), 410); /* the old config runs */
	CHECK_INT(admin_do("DELETE", "/rules/to-alt", NULL), 200);
	CHECK_INT(admin("POST", "/reload", NULL, true, &r), 200);
	h_resp_free(&r);
	CHECK_INT(get_status("/api-deny"), 418);
	test_end();
}

int main(void)
{
	h_init("72_reflex_head_api", 120);
	gw_port = h_free_port();
	admin_port = h_free_port();
	o_port = h_free_port();
	tokens = h_write_config("ops %s\n", TOKEN);
	origin = h_start_origin("main", o_port, 1);
	cfg_path = h_write_config("%s", yaml(0));
	gw = origin ? h_start_reflexd_config("reflexd", gw_port, cfg_path) : NULL;
	if (!gw) {
		test_begin("start");
		CHECK_MSG(false, "could not start the origin or reflexd");
		test_end();
		return test_exit_code();
	}
	h_wait_port("127.0.0.1", admin_port, 10000);
	test_redact_head();
	test_counters_by_name();
	test_reload();
	h_finish(gw, 10000);
	return test_exit_code();
}
