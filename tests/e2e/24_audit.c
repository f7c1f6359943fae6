/* 24_audit — the audit log of a running gateway: every admin mutation (a
 * reload that works, one that is refused for its config, and attempts
 * without or with a wrong token) is one hash-chained record naming who and
 * what; `reflexctl audit verify` accepts the chain, the chain continues
 * across a restart, and a one-byte change is reported at its record. */
#include "lib/harness.h"

#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control/json.h"

#define SECRET "audit-secret-0123456789abcdef"

static int gw_port, admin_port, o_port;
static char audit_path[1024], token_path[1024];

static int exit_code(int status)
{
	return status == -1 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int ctl(char **out, ...)
{
	char path[1024], *argv[16];
	va_list ap;
	int n = 0;

	snprintf(path, sizeof(path), "%s/reflexctl", h_build_dir());
	argv[n++] = path;
	va_start(ap, out);
	for (char *a; n < 15 && (a = va_arg(ap, char *));)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	*out = NULL;
	return exit_code(h_run(argv, 15000, out));
}

static long reload(const char *token)
{
	char url[128], auth[128];
	const char *hdrs[2] = {auth, NULL};
	struct h_req q = {
		.method = "POST", .url = url, .timeout_ms = 5000, .headers = token ? hdrs : NULL};
	struct h_resp r;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/reload", admin_port);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token ? token : "");
	h_http(&q, &r);
	long st = r.status;
	h_resp_free(&r);
	return st;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b;
	long n;

	*len = 0;
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	b = malloc((size_t)n + 1);
	*len = fread(b, 1, (size_t)n, f);
	b[*len] = 0;
	fclose(f);
	return b;
}

static struct json **records(unsigned *n)
{
	size_t len;
	char *data = slurp(audit_path, &len), *save = NULL;
	struct json **v = calloc(64, sizeof(*v));

	*n = 0;
	for (char *l = data ? strtok_r(data, "\n", &save) : NULL; l && *n < 64;
	     l = strtok_r(NULL, "\n", &save)) {
		char err[128];
		v[*n] = json_parse(l, strlen(l), err, sizeof(err));
		CHECK_MSG(v[*n], "audit record %u is not JSON (%s)", *n + 1, err);
		if (v[*n])
			(*n)++;
	}
	free(data);
	return v;
}

static void free_records(struct json **v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		json_free(v[i]);
	free(v);
}

static const char *yaml(const char *cfg_extra)
{
	static char buf[4096];

	snprintf(buf, sizeof(buf),
		 "workers: 1\n"
		 "listen: [\"127.0.0.1:%d\"]\n"
		 "upstream: [\"127.0.0.1:%d\"]\n"
		 "%s"
		 "admin: {listen: \"127.0.0.1:%d\", token_file: \"%s\", audit_log: \"%s\"}\n",
		 gw_port, o_port, cfg_extra, admin_port, token_path, audit_path);
	return buf;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f) {
		fputs(text, f);
		fclose(f);
	}
	chmod(path, 0600);
}

static struct h_proc *start(const char *name, const char *cfg)
{
	struct h_proc *p = h_start_reflexd_config(name, gw_port, cfg);

	if (p && h_wait_port("127.0.0.1", admin_port, 5000)) {
		test_begin("admin_listening");
		CHECK_MSG(0, "the admin API does not listen on %d", admin_port);
		test_end();
		return NULL;
	}
	return p;
}

int main(void)
{
	char *out;
	int rc;
	unsigned n;

	h_init("24_audit", 120);
	gw_port = h_free_port();
	admin_port = h_free_port();
	o_port = h_free_port();
	snprintf(audit_path, sizeof(audit_path), "%s/test-logs/e2e-24-%d-audit.log", h_build_dir(),
		 (int)getpid());
	snprintf(token_path, sizeof(token_path), "%s/test-logs/e2e-24-%d-tokens", h_build_dir(),
		 (int)getpid());
	unlink(audit_path);
	write_file(token_path, "alice " SECRET "\n");
	const char *cfg = h_write_config("%s", yaml(""));

	if (!h_start_origin("origin", o_port, 1))
		return test_exit_code();
	struct h_proc *gw = start("reflexd", cfg);
	if (!gw)
		return test_exit_code();

	test_begin("mutations_recorded");
	CHECK_INT(reload(SECRET), 200);
	CHECK_INT(reload(NULL), 401);
	CHECK_INT(reload("not-the-secret"), 401);
	write_file(cfg, yaml("bogus: 1\n"));
	CHECK_INT(reload(SECRET), 400);
	write_file(cfg, yaml(""));
	struct json **v = records(&n);
	CHECK_INT(n, 4);
	if (n == 4) {
		CHECK_STR(json_str(json_get(v[0], "who"), ""), "alice");
		CHECK_STR(json_str(json_get(v[0], "what"), ""), "POST /reload");
		CHECK_STR(json_str(json_get(v[0], "result"), ""), "ok");
		CHECK_STR(json_str(json_get(v[1], "who"), ""), "-");
		CHECK(strstr(json_str(json_get(v[1], "result"), ""), "401"));
		CHECK(strstr(json_str(json_get(v[2], "result"), ""), "wrong token"));
		CHECK_STR(json_str(json_get(v[3], "who"), ""), "alice");
		CHECK_MSG(strstr(json_str(json_get(v[3], "result"), ""), "400") &&
				  strstr(json_str(json_get(v[3], "result"), ""), "bogus"),
			  "refused reload result: %s", json_str(json_get(v[3], "result"), ""));
		for (unsigned i = 0; i < n; i++) {
			CHECK_INT(json_num(json_get(v[i], "seq"), 0), i + 1);
			CHECK(strlen(json_str(json_get(v[i], "hash"), "")) == 64);
			CHECK(strlen(json_str(json_get(v[i], "prev"), "")) == 64);
			CHECK(strlen(json_str(json_get(v[i], "time"), "")) == 24);
		}
	}
	free_records(v, n);
	/* reads are not mutations: nothing recorded */
	struct h_resp r;
	char url[128];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/stats", admin_port);
	h_get(url, &r);
	h_resp_free(&r);
	v = records(&n);
	CHECK_INT(n, 4);
	free_records(v, n);
	test_end();

	test_begin("verify_ok");
	rc = ctl(&out, "audit", "verify", audit_path, NULL);
	CHECK_MSG(rc == 0 && out && strstr(out, "4 records") && strstr(out, "intact"),
		  "exit %d: %s", rc, out ? out : "");
	free(out);
	test_end();

	h_finish(gw, 10000);
	test_begin("chain_continues_after_restart");
	gw = start("reflexd-2", cfg);
	CHECK(gw != NULL);
	if (gw)
		CHECK_INT(reload(SECRET), 200);
	v = records(&n);
	CHECK_INT(n, 5);
	if (n == 5)
		CHECK_INT(json_num(json_get(v[4], "seq"), 0), 5);
	free_records(v, n);
	rc = ctl(&out, "--json", "audit", "verify", audit_path, NULL);
	CHECK_INT(rc, 0);
	char err[128];
	struct json *j = out ? json_parse(out, strlen(out), err, sizeof(err)) : NULL;
	CHECK_MSG(j && json_get(j, "ok") && json_get(j, "ok")->b &&
			  json_num(json_get(j, "records"), 0) == 5,
		  "%s", out ? out : "");
	json_free(j);
	free(out);
	test_end();

	test_begin("tamper_one_byte_reported");
	size_t len;
	char *orig = slurp(audit_path, &len);
	/* change one byte inside record 2's "what" */
	char *rec2 = orig ? strchr(orig, '\n') + 1 : NULL;
	char *what = rec2 ? strstr(rec2, "POST /reload") : NULL;
	CHECK(what != NULL);
	if (what) {
		what[1] = 'U'; /* POST → PUST */
		FILE *f = fopen(audit_path, "wb");
		fwrite(orig, 1, len, f);
		fclose(f);
		rc = ctl(&out, "audit", "verify", audit_path, NULL);
		CHECK_MSG(rc == 1 && out && strstr(out, "record 2") && strstr(out, "BROKEN"),
			  "exit %d: %s", rc, out ? out : "");
		free(out);
		rc = ctl(&out, "--json", "audit", "verify", audit_path, NULL);
		CHECK_INT(rc, 1);
		j = out ? json_parse(out, strlen(out), err, sizeof(err)) : NULL;
		CHECK_MSG(j && json_num(json_get(j, "first_bad_seq"), 0) == 2, "%s",
			  out ? out : "");
		json_free(j);
		free(out);
		/* a deleted record is caught at the one after it */
		what[1] = 'O';
		char *rec3 = strchr(rec2, '\n') + 1;
		memmove(rec2, rec3, len - (size_t)(rec3 - orig));
		f = fopen(audit_path, "wb");
		fwrite(orig, 1, len - (size_t)(rec3 - rec2), f);
		fclose(f);
		rc = ctl(&out, "audit", "verify", audit_path, NULL);
		CHECK_MSG(rc == 1 && out && strstr(out, "record 2"), "deleted record: exit %d: %s",
			  rc, out ? out : "");
		free(out);
	}
	free(orig);
	rc = ctl(&out, "audit", "verify", "/nonexistent/audit.log", NULL);
	CHECK_MSG(rc == 1, "missing file: exit %d: %s", rc, out ? out : "");
	free(out);
	test_end();

	h_finish(gw, 10000);
	return test_exit_code();
}
