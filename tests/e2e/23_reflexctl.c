/* 23_reflexctl — reflexctl against a running gateway: status, stats, pool,
 * config, reload (with and without a token, with a broken file), top in
 * text mode (--count 2) and as JSON, every --json output parses, the admin
 * API over a Unix socket, help at every level and the exit codes (0 ok,
 * 1 refused, 2 usage, 3 cannot connect). */
#include "lib/harness.h"

#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control/json.h"

#define SECRET "ctl-secret-0123456789abcdef"

static int gw_port, admin_port, o_port;
static char admin_arg[64], token_path[1024], wrong_token_path[1040];
static const char *cfg_path;

static int exit_code(int status)
{
	return status == -1 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Run reflexctl with the arguments (NULL-terminated); returns its exit code
 * and the output in *out (caller frees). */
static int ctl(char **out, ...)
{
	char path[1024], *argv[32];
	va_list ap;
	int n = 0;

	snprintf(path, sizeof(path), "%s/reflexctl", h_build_dir());
	argv[n++] = path;
	va_start(ap, out);
	for (char *a; n < 31 && (a = va_arg(ap, char *));)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	*out = NULL;
	return exit_code(h_run(argv, 15000, out));
}

/* "reflexd: ready" is printed once the workers were told to serve; each arms
 * its accept in its own time, and only then is the gateway ready: wait for
 * that (5 s) before checking what status says. */
static void wait_ready(const char *admin)
{
	for (double end = h_now_ms() + 5000; h_now_ms() < end; h_sleep_ms(100)) {
		char *out = NULL;
		bool ready = ctl(&out, "--admin", admin, "status", NULL) == 0 && out &&
			     strstr(out, "alive, ready");

		free(out);
		if (ready)
			return;
	}
}

static struct json *parse(const char *out, const char *what)
{
	char err[128];
	struct json *j = out ? json_parse(out, strlen(out), err, sizeof(err)) : NULL;

	CHECK_MSG(j, "%s --json: not JSON (%s): %s", what, err, out ? out : "");
	return j;
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

static const char *gateway_yaml(bool broken)
{
	static char buf[2048];

	snprintf(buf, sizeof(buf),
		 "workers: 2\n"
		 "listen: [\"127.0.0.1:%d\"]\n"
		 "upstream: [\"127.0.0.1:%d\"]\n"
		 "%s"
		 "admin: {listen: \"127.0.0.1:%d\", token_file: \"%s\"}\n",
		 gw_port, o_port, broken ? "timeouts: {header: 10 parsecs}\n" : "", admin_port,
		 token_path);
	return buf;
}

static void traffic(int n)
{
	char url[128];
	struct h_resp r;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/?size=100", gw_port);
	for (int i = 0; i < n; i++) {
		h_get(url, &r);
		h_resp_free(&r);
	}
}

static void test_status(void)
{
	char *out;
	int rc;

	test_begin("status_text");
	wait_ready(admin_arg);
	rc = ctl(&out, "--admin", admin_arg, "status", NULL);
	CHECK_MSG(rc == 0, "exit %d: %s", rc, out ? out : "");
	CHECK_MSG(out && strstr(out, "alive, ready") && strstr(out, "workers"), "%s",
		  out ? out : "");
	free(out);
	test_end();

	test_begin("status_json");
	rc = ctl(&out, "--admin", admin_arg, "--json", "status", NULL);
	CHECK_INT(rc, 0);
	struct json *j = parse(out, "status");
	CHECK(json_get(j, "alive") && json_get(j, "alive")->b);
	CHECK(json_get(j, "ready") && json_get(j, "ready")->b);
	CHECK_INT(json_num(json_get(j, "workers"), 0), 2);
	json_free(j);
	free(out);
	test_end();
}

static void test_reads(void)
{
	char *out, addr[64];
	int rc;

	traffic(5);
	test_begin("stats_text_and_json");
	rc = ctl(&out, "stats", "--admin", admin_arg, NULL); /* options after the command too */
	CHECK_MSG(rc == 0 && out && strstr(out, "requests") && strstr(out, "worker 1:") &&
			  strstr(out, "p99"),
		  "exit %d: %s", rc, out ? out : "");
	free(out);
	rc = ctl(&out, "--admin", admin_arg, "--json", "stats", NULL);
	CHECK_INT(rc, 0);
	struct json *j = parse(out, "stats");
	CHECK(json_num(json_path(j, "totals.requests"), 0) >= 5);
	json_free(j);
	free(out);
	test_end();

	test_begin("pool_text_and_json");
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", o_port);
	rc = ctl(&out, "--admin", admin_arg, "pool", NULL);
	CHECK_MSG(rc == 0 && out && strstr(out, addr) && strstr(out, " up ") &&
			  strstr(out, "default"),
		  "exit %d: %s", rc, out ? out : "");
	free(out);
	rc = ctl(&out, "--admin", admin_arg, "--json", "pool", NULL);
	CHECK_INT(rc, 0);
	j = parse(out, "pool");
	const struct json *pools = json_get(j, "pools");
	CHECK(pools && pools->n == 1);
	json_free(j);
	free(out);
	test_end();

	test_begin("config_text_and_json");
	rc = ctl(&out, "--admin", admin_arg, "config", NULL);
	CHECK_MSG(rc == 0 && out && strstr(out, token_path) && !strstr(out, SECRET), "exit %d: %s",
		  rc, out ? out : "");
	free(out);
	rc = ctl(&out, "--admin", admin_arg, "--json", "config", NULL);
	CHECK_INT(rc, 0);
	j = parse(out, "config");
	CHECK_INT(json_num(json_get(j, "workers"), 0), 2);
	CHECK_STR(json_str(json_path(j, "admin.token_file"), ""), token_path);
	json_free(j);
	CHECK(out && !strstr(out, SECRET));
	free(out);
	test_end();
}

static void test_reload(void)
{
	char *out;
	int rc;

	test_begin("reload_without_token_exit_1");
	rc = ctl(&out, "--admin", admin_arg, "reload", NULL);
	CHECK_MSG(rc == 1 && out && strstr(out, "401"), "exit %d: %s", rc, out ? out : "");
	free(out);
	rc = ctl(&out, "--admin", admin_arg, "--token-file", wrong_token_path, "reload", NULL);
	CHECK_MSG(rc == 1 && out && strstr(out, "401"), "wrong token: exit %d: %s", rc,
		  out ? out : "");
	free(out);
	test_end();

	test_begin("reload_with_token");
	rc = ctl(&out, "--admin", admin_arg, "--token-file", token_path, "reload", NULL);
	CHECK_MSG(rc == 0 && out && strstr(out, "reloaded"), "exit %d: %s", rc, out ? out : "");
	free(out);
	rc = ctl(&out, "--admin", admin_arg, "--token-file", token_path, "--json", "reload", NULL);
	CHECK_INT(rc, 0);
	struct json *j = parse(out, "reload");
	CHECK(json_get(j, "ok") && json_get(j, "ok")->b);
	json_free(j);
	free(out);
	test_end();

	test_begin("reload_broken_config_exit_1_file_line");
	write_file(cfg_path, gateway_yaml(true));
	rc = ctl(&out, "--admin", admin_arg, "--token-file", token_path, "reload", NULL);
	char want[1100];
	snprintf(want, sizeof(want), "%s:4:", cfg_path);
	CHECK_MSG(rc == 1 && out && strstr(out, want), "exit %d, want %s: %s", rc, want,
		  out ? out : "");
	free(out);
	write_file(cfg_path, gateway_yaml(false));
	rc = ctl(&out, "--admin", admin_arg, "status", NULL);
	CHECK_MSG(rc == 0, "status after a refused reload: exit %d: %s", rc, out ? out : "");
	free(out);
	test_end();
}

static void test_cache(void)
{
	char *out;
	int rc;

	rc = ctl(&out, "--admin", admin_arg, "--json", "cache", "show", NULL);
	if (rc == 1 && out && strstr(out, "404")) {
		test_skip("cache_show_and_purge",
			  "this reflexd has no cache endpoints (GET /cache: 404)");
		free(out);
		return;
	}
	test_begin("cache_show_and_purge");
	CHECK_INT(rc, 0);
	struct json *j = parse(out, "cache show");
	CHECK(json_get(j, "enabled") && json_get(j, "objects"));
	json_free(j);
	free(out);
	rc = ctl(&out, "--admin", admin_arg, "cache", "purge", "--prefix", "http://x/", NULL);
	CHECK_MSG(rc == 1 && out && strstr(out, "401"), "no token: exit %d: %s", rc,
		  out ? out : "");
	free(out);
	rc = ctl(&out, "--admin", admin_arg, "--token-file", token_path, "cache", "purge", "--url",
		 "http://x/a\"b", NULL);
	CHECK_MSG(rc == 0 && out && strstr(out, "purged 0 objects"), "exit %d: %s", rc,
		  out ? out : "");
	free(out);
	rc = ctl(&out, "--admin", admin_arg, "cache", "purge", NULL);
	CHECK_MSG(rc == 2, "no selector: exit %d", rc);
	free(out);
	test_end();
}

static void test_top(void)
{
	char *out;
	int rc;

	test_begin("top_text_count_2");
	traffic(3);
	rc = ctl(&out, "--admin", admin_arg, "top", "--count", "2", "--interval", "300", NULL);
	CHECK_MSG(rc == 0, "exit %d: %s", rc, out ? out : "");
	unsigned frames = 0;
	for (const char *p = out; p && (p = strstr(p, "req/s ")); p++)
		frames++;
	CHECK_MSG(frames == 2, "%u frames: %s", frames, out ? out : "");
	CHECK(out && strstr(out, "p50") && strstr(out, "p99") && strstr(out, "hit ratio") &&
	      strstr(out, "refusals:") && strstr(out, "top clients:") &&
	      strstr(out, "pool default: 1/1 up"));
	CHECK_MSG(out && !strchr(out, '\033'), "ANSI escapes when stdout is not a terminal");
	free(out);
	test_end();

	test_begin("top_json_count_2");
	rc = ctl(&out, "--admin", admin_arg, "--json", "top", "--count=2", "--interval=200", NULL);
	CHECK_INT(rc, 0);
	unsigned lines = 0;
	char *save = NULL;
	for (char *l = out ? strtok_r(out, "\n", &save) : NULL; l;
	     l = strtok_r(NULL, "\n", &save)) {
		struct json *j = parse(l, "top");
		lines++;
		if (j && lines == 2)
			CHECK(json_get(j, "rps") && json_get(j, "rps")->type == JSON_NUMBER);
		if (j)
			CHECK(json_get(j, "p99_us") && json_get(j, "pools"));
		json_free(j);
	}
	CHECK_INT(lines, 2);
	free(out);
	test_end();
}

/* Fake admin servers: what reflexctl meets when --admin points at the wrong
 * thing. Each reads the request, then misbehaves. */
static void *serve_not_json(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[4096];

	(void)!read(fd, buf, sizeof(buf));
	h_send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n<html>hi</html>");
	close(fd);
	return NULL;
}

static void *serve_escapes(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[4096];
	static const char body[] = "evil\x1b]0;pwned\x07\nsecond line\x1b[2J";

	(void)!read(fd, buf, sizeof(buf));
	snprintf(buf, sizeof(buf), "HTTP/1.1 500 Oops\r\nContent-Length: %zu\r\n\r\n%s",
		 sizeof(body) - 1, body);
	h_send_str(fd, buf);
	close(fd);
	return NULL;
}

static void *serve_empty_404(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[4096];

	(void)!read(fd, buf, sizeof(buf));
	h_send_str(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
	close(fd);
	return NULL;
}

static void *serve_silence(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[4096];

	(void)!read(fd, buf, sizeof(buf));
	h_sleep_ms(5000);
	close(fd);
	return NULL;
}

static void test_garbage_server(void)
{
	int p_json, p_esc, p_silent, p_404, rc;
	char a_json[64], a_esc[64], a_silent[64], a_404[64], *out;

	test_begin("garbage_server_one_line_errors");
	if (h_serve_tcp(serve_not_json, &p_json) || h_serve_tcp(serve_escapes, &p_esc) ||
	    h_serve_tcp(serve_silence, &p_silent) || h_serve_tcp(serve_empty_404, &p_404)) {
		CHECK_MSG(0, "%s", "cannot start the fake servers");
		test_end();
		return;
	}
	snprintf(a_json, sizeof(a_json), "127.0.0.1:%d", p_json);
	snprintf(a_esc, sizeof(a_esc), "127.0.0.1:%d", p_esc);
	snprintf(a_silent, sizeof(a_silent), "127.0.0.1:%d", p_silent);
	/* a 200 that is not JSON is no admin API: exit 3, like no answer */
	rc = ctl(&out, "--admin", a_json, "stats", NULL);
	CHECK_MSG(rc == 3 && out && strstr(out, "not JSON"), "not JSON: exit %d: %s", rc,
		  out ? out : "");
	free(out);
	/* what the server says is quoted on one line, its control bytes escaped */
	rc = ctl(&out, "--admin", a_esc, "stats", NULL);
	CHECK_MSG(rc == 1, "500: exit %d", rc);
	CHECK_MSG(out && !strchr(out, '\x1b') && strchr(out, '\n') == out + strlen(out) - 1 &&
			  strstr(out, "evil\\x1b]0;pwned"),
		  "not one clean line: %s", out ? out : "");
	free(out);
	/* an error without a body still says something */
	snprintf(a_404, sizeof(a_404), "127.0.0.1:%d", p_404);
	rc = ctl(&out, "--admin", a_404, "stats", NULL);
	CHECK_MSG(rc == 1 && out && strstr(out, "404: (no body"), "empty 404: exit %d: %s", rc,
		  out ? out : "");
	free(out);
	/* a server that never answers: exit 3 once --timeout passed */
	double t0 = h_now_ms();
	rc = ctl(&out, "--admin", a_silent, "--timeout", "300", "status", NULL);
	CHECK_MSG(rc == 3 && h_now_ms() - t0 < 3000, "silent server: exit %d after %.0f ms: %s", rc,
		  h_now_ms() - t0, out ? out : "");
	free(out);
	test_end();
}

static void test_exit_codes(void)
{
	char *out, closed[64];
	int rc;

	test_begin("exit_3_cannot_connect");
	snprintf(closed, sizeof(closed), "127.0.0.1:%d", h_free_port());
	rc = ctl(&out, "--admin", closed, "status", NULL);
	CHECK_MSG(rc == 3, "exit %d: %s", rc, out ? out : "");
	free(out);
	rc = ctl(&out, "--admin", "/nonexistent/reflex.sock", "stats", NULL);
	CHECK_MSG(rc == 3, "unix: exit %d: %s", rc, out ? out : "");
	free(out);
	test_end();

	test_begin("exit_2_usage");
	static const char *const bad[][4] = {
		{"bogus", NULL},
		{"top", "--count", "x", NULL},
		{"audit", NULL},
		{"audit", "verify", NULL},
		{"status", "extra", NULL},
		{"--admin", "ftp://x:1", "status", NULL},
		{"--admin", "127.0.0.1:99999", "status", NULL},
		{"cache", "purge", "--prefix", ""},
		{"cache", "purge", "--url", ""},
		{"--admin", "127.0.0.1:0", "status", NULL},
		{NULL},
	};
	for (int i = 0; bad[i][0]; i++) {
		rc = ctl(&out, (char *)bad[i][0], (char *)bad[i][1], (char *)bad[i][2],
			 (char *)bad[i][3], NULL);
		CHECK_MSG(rc == 2, "reflexctl %s %s: exit %d: %s", bad[i][0],
			  bad[i][1] ? bad[i][1] : "", rc, out ? out : "");
		free(out);
	}
	rc = ctl(&out, NULL);
	CHECK_MSG(rc == 2 && out && strstr(out, "usage:"), "no arguments: exit %d", rc);
	free(out);
	test_end();

	test_begin("help_at_every_level");
	static const char *const helps[][4] = {
		{"--help", NULL},	    {"-h", NULL},
		{"status", "--help", NULL}, {"top", "--help", NULL},
		{"audit", "--help", NULL},  {"audit", "verify", "--help", NULL},
		{"reload", "-h", NULL},	    {NULL},
	};
	for (int i = 0; helps[i][0]; i++) {
		rc = ctl(&out, (char *)helps[i][0], (char *)helps[i][1], (char *)helps[i][2],
			 (char *)helps[i][3], NULL);
		CHECK_MSG(rc == 0 && out && strstr(out, "usage:"),
			  "reflexctl %s %s %s: exit %d: %s", helps[i][0],
			  helps[i][1] ? helps[i][1] : "", helps[i][2] ? helps[i][2] : "", rc,
			  out ? out : "");
		free(out);
	}
	rc = ctl(&out, "--help", NULL);
	CHECK(out && strstr(out, "audit verify") && strstr(out, "top") &&
	      strstr(out, "exit codes"));
	free(out);
	test_end();
}

static void test_unix_socket(void)
{
	char sock[1024], *out;
	int port = h_free_port(), rc;

	test_begin("admin_over_unix_socket");
	snprintf(sock, sizeof(sock), "/tmp/reflex-e2e-23-%d.sock", (int)getpid());
	char lst[64], up[64];
	snprintf(lst, sizeof(lst), "127.0.0.1:%d", port);
	snprintf(up, sizeof(up), "127.0.0.1:%d", o_port);
	const char *args[] = {"--listen", lst,	     "--upstream", up,	"--workers",
			      "1",	  "--admin", sock,	   NULL};
	struct h_proc *gw2 = h_start_reflexd("reflexd-unix", port, args);
	CHECK(gw2 != NULL);
	if (gw2) {
		for (int i = 0; i < 50 && access(sock, F_OK); i++)
			h_sleep_ms(50);
		wait_ready(sock);
		rc = ctl(&out, "--admin", sock, "status", NULL);
		CHECK_MSG(rc == 0 && out && strstr(out, "alive, ready"), "exit %d: %s", rc,
			  out ? out : "");
		free(out);
		char unix_form[1100];
		snprintf(unix_form, sizeof(unix_form), "unix:%s", sock);
		rc = ctl(&out, "--admin", unix_form, "--json", "pool", NULL);
		CHECK_INT(rc, 0);
		json_free(parse(out, "pool over unix"));
		free(out);
		/* no token file configured: mutations are refused */
		rc = ctl(&out, "--admin", sock, "--token-file", token_path, "reload", NULL);
		CHECK_MSG(rc == 1 && out && strstr(out, "401"), "exit %d: %s", rc, out ? out : "");
		free(out);
	}
	test_end();
	if (gw2) {
		h_finish(gw2, 10000);
		test_begin("unix_socket_removed_at_exit");
		CHECK_MSG(access(sock, F_OK) != 0, "%s still exists", sock);
		test_end();
	}
}

int main(void)
{
	h_init("23_reflexctl", 150);
	gw_port = h_free_port();
	admin_port = h_free_port();
	o_port = h_free_port();
	snprintf(admin_arg, sizeof(admin_arg), "http://127.0.0.1:%d", admin_port);
	snprintf(token_path, sizeof(token_path), "%s/test-logs/e2e-23-%d-tokens", h_build_dir(),
		 (int)getpid());
	snprintf(wrong_token_path, sizeof(wrong_token_path), "%s.wrong", token_path);
	write_file(token_path, "# reflexctl test\nctl " SECRET "\n");
	write_file(wrong_token_path, "ctl not-the-secret-0000000000\n");
	cfg_path = h_write_config("%s", gateway_yaml(false));

	if (!h_start_origin("origin", o_port, 1))
		return test_exit_code();
	struct h_proc *gw = h_start_reflexd_config("reflexd", gw_port, cfg_path);
	if (!gw)
		return test_exit_code();
	if (h_wait_port("127.0.0.1", admin_port, 5000)) {
		test_begin("admin_listening");
		CHECK_MSG(0, "the admin API does not listen on %d", admin_port);
		test_end();
	} else {
		test_status();
		test_reads();
		test_reload();
		test_cache();
		test_top();
	}
	test_exit_codes();
	test_garbage_server();
	test_unix_socket();
	h_finish(gw, 10000);
	return test_exit_code();
}
