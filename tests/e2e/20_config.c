/* 20_config — the command line contract of reflexd: --check-config accepts a
 * valid file (exit 0) and refuses broken ones (exit 1) with "FILE:LINE:
 * reason" naming the right line; reflexd refuses to start on a broken file;
 * --version and --help exit 0 and print something useful. */
#include "lib/harness.h"

#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int exit_code(int status)
{
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void test_valid(void)
{
	char *out = NULL;
	const char *cfg = h_write_config(
		"# a full, valid configuration\n"
		"workers: 2\n"
		"listen: [\"127.0.0.1:18080\", \"[::1]:18080\"]\n"
		"upstream: [\"127.0.0.1:19001\", \"127.0.0.1:19002\"]\n"
		"limits: {request_line: 8k, header_bytes: 32k, header_count: 100, body: 1m}\n"
		"timeouts: {header: 10s, body: 60s, keepalive: 75s, upstream_connect: 5s,\n"
		"           upstream_response: 60s, upstream_idle: 60s, send: 60s, drain: 500ms}\n"
		"pools:\n"
		"  api:\n"
		"    balance: round_robin\n"
		"    keepalive: 64\n"
		"    endpoints: [\"127.0.0.1:19003\", {address: \"127.0.0.1:19004\", weight: 2}]\n"
		"  other: {balance: p2c, endpoints: [\"127.0.0.1:19005\"]}\n"
		"routes:\n"
		"  - {host: api.example.com, path_prefix: /v1/, pool: api}\n"
		"  - {path_prefix: /other/, pool: other}\n");
	char *argv[] = {(char *)h_reflexd_path(), "--config", (char *)cfg, "--check-config", NULL};

	test_begin("check_config_valid");
	int st = h_run(argv, 5000, &out);
	CHECK_MSG(st != -1 && exit_code(st) == 0, "--check-config on a valid file: exit %d: %s",
		  exit_code(st), out ? out : "");
	free(out);
	test_end();
}

struct bad {
	const char *name;
	unsigned line;
	const char *yaml;
};

static const struct bad bads[] = {
	{"workers_not_a_number", 3,
	 "listen: [\"127.0.0.1:18080\"]\n"
	 "upstream: [\"127.0.0.1:19001\"]\n"
	 "workers: many\n"},
	{"bad_duration", 4,
	 "workers: 1\n"
	 "upstream: [\"127.0.0.1:19001\"]\n"
	 "timeouts:\n"
	 "  header: 10 parsecs\n"},
	{"unknown_key", 2,
	 "upstream: [\"127.0.0.1:19001\"]\n"
	 "bogus_key: 1\n"},
	{"route_unknown_pool", 6,
	 "upstream: [\"127.0.0.1:19001\"]\n"
	 "pools:\n"
	 "  api: {endpoints: [\"127.0.0.1:19002\"]}\n"
	 "routes:\n"
	 "  - {host: a.example.com, pool: api}\n"
	 "  - {path_prefix: /x/, pool: nosuch}\n"},
	{"bad_port", 1,
	 "listen: [\"127.0.0.1:99999\"]\n"
	 "upstream: [\"127.0.0.1:19001\"]\n"},
	{"bad_size_unit", 3,
	 "upstream: [\"127.0.0.1:19001\"]\n"
	 "\n"
	 "limits: {body: 12q}\n"},
	{"bad_balance", 3,
	 "upstream: [\"127.0.0.1:19001\"]\n"
	 "pools:\n"
	 "  api: {balance: random-ish, endpoints: [\"127.0.0.1:19002\"]}\n"},
	{"typo_gets_a_suggestion", 2,
	 "upstream: [\"127.0.0.1:19001\"]\n"
	 "listne: [\"127.0.0.1:18080\"]\n"},
	{"endpoint_listed_twice", 3,
	 "pools:\n"
	 "  default:\n"
	 "    endpoints: [\"127.0.0.1:19001\", \"127.0.0.1:19001\"]\n"},
	{"listen_deferred_not_a_bool", 3,
	 "upstream: [\"127.0.0.1:19001\"]\n"
	 "listen:\n"
	 "  - {address: \"127.0.0.1:18080\", deferred: maybe}\n"},
};

static void test_bad(const struct bad *b)
{
	char name[96], want[600], base[512];
	char *out = NULL;
	const char *cfg = h_write_config("%s", b->yaml);
	char *argv[] = {(char *)h_reflexd_path(), "--config", (char *)cfg, "--check-config", NULL};

	snprintf(name, sizeof(name), "check_config_%s", b->name);
	test_begin(name);
	snprintf(base, sizeof(base), "%s", cfg);
	/* The file as given or any path ending in its name, then :LINE: */
	snprintf(want, sizeof(want), "%s:%u: ", basename(base), b->line);
	int st = h_run(argv, 5000, &out);
	CHECK_MSG(st != -1 && exit_code(st) == 1, "exit %d, want 1; output: %s", exit_code(st),
		  out ? out : "");
	CHECK_MSG(out && strstr(out, want), "output lacks '%s': %s", want, out ? out : "");
	if (out && strstr(out, want)) {
		const char *reason = strstr(out, want) + strlen(want);
		CHECK_MSG(*reason && *reason != '\n', "no reason after '%s'", want);
	}
	free(out);
	test_end();
}

/* A path that is not a regular file is refused at once (a FIFO used to
 * block the loader forever), naming the file and what it is. */
static void test_not_a_file(void)
{
	char dir[600], fifo[600], *out = NULL;
	const char *cfg = h_write_config("upstream: [\"127.0.0.1:19001\"]\n");
	const char *paths[2] = {dir, fifo}, *want[2] = {"is a directory", "is not a regular file"};

	snprintf(dir, sizeof(dir), "%s.d", cfg);
	snprintf(fifo, sizeof(fifo), "%s.fifo", cfg);
	test_begin("check_config_not_a_regular_file");
	CHECK(mkdir(dir, 0700) == 0 || errno == EEXIST);
	CHECK(mkfifo(fifo, 0600) == 0 || errno == EEXIST);
	for (int i = 0; i < 2; i++) {
		char *argv[] = {(char *)h_reflexd_path(), "--config", (char *)paths[i],
				"--check-config", NULL};
		double t0 = h_now_ms();
		int st = h_run(argv, 5000, &out);

		CHECK_MSG(st != -1 && exit_code(st) == 1 && h_now_ms() - t0 < 4000,
			  "%s: exit %d after %.0f ms: %s", paths[i], exit_code(st), h_now_ms() - t0,
			  out ? out : "");
		CHECK_MSG(out && strstr(out, want[i]), "%s: output lacks '%s': %s", paths[i],
			  want[i], out ? out : "");
		free(out);
		out = NULL;
	}
	rmdir(dir);
	unlink(fifo);
	test_end();
}

/* An upstream given by host name starts a resolver thread; it used to block
 * the signal the privilege drop sends to every thread, so reflexd (as root)
 * gave up at start with "a thread did not answer". */
static void test_upstream_by_name(void)
{
	int o_port = h_free_port(), gw_port = h_free_port();
	struct h_proc *origin = h_start_origin("origin-20", o_port, 1);
	const char *cfg = h_write_config("workers: 1\n"
					 "listen: [\"127.0.0.1:%d\"]\n"
					 "upstream: [\"localhost:%d\"]\n"
					 "admin: {listen: \"off\"}\n"
					 "timeouts: {drain: 500ms}\n",
					 gw_port, o_port);
	struct h_resp r = {0};
	char url[128];

	test_begin("upstream_by_host_name_starts");
	CHECK(origin != NULL);
	struct h_proc *gw = h_start_reflexd_config("reflexd-20-names", gw_port, cfg);
	CHECK_MSG(gw != NULL, "reflexd with upstream localhost:%d did not start", o_port);
	if (gw) {
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", gw_port);
		CHECK_INT(h_get(url, &r), 200);
		h_resp_free(&r);
		CHECK_MSG(!h_log_contains(gw, "did not answer"), "%s", "privilege drop timed out");
	}
	test_end();
	h_finish(gw, 3000);
	h_stop(origin, 2000);
}

/* --check-config refuses what the start would refuse: a token file that
 * cannot be read, a log path that is a directory. It used to say "valid"
 * to these. A log in a directory that does not exist yet is fine
 * (LogsDirectory= makes it at start); nothing is created. */
static void test_check_config_files(void)
{
	char dir[600], yaml[1400], missing_log[700], *out = NULL;
	/* only its path is used: the scratch directory is named after it */
	const char *base = h_write_config("# names the scratch directory\n");
	const struct {
		const char *fmt;
		const char *want;
	} cases[] = {
		{"admin: {token_file: %s/nonexistent}\n", "token file"},
		{"admin: {token_file: %s}\n", "not a regular file"},
		{"admin: {audit_log: %s}\n", "admin.audit_log: "},
		{"access_log: %s\n", "access_log: "},
	};
	const char *fine = h_write_config("upstream: [\"127.0.0.1:19001\"]\n"
					  "access_log: /nonexistent-reflex-dir/access.log\n");

	snprintf(dir, sizeof(dir), "%s.dir", base);
	snprintf(missing_log, sizeof(missing_log), "%s/no", dir);
	test_begin("check_config_checks_files");
	CHECK(mkdir(dir, 0700) == 0 || errno == EEXIST);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int n = snprintf(yaml, sizeof(yaml), "upstream: [\"127.0.0.1:19001\"]\n");
		snprintf(yaml + n, sizeof(yaml) - (size_t)n, cases[i].fmt, dir);
		const char *cfg = h_write_config("%s", yaml);
		char *argv[] = {(char *)h_reflexd_path(), "--config", (char *)cfg, "--check-config",
				NULL};
		int st = h_run(argv, 5000, &out);

		CHECK_MSG(st != -1 && exit_code(st) == 1 && out && strstr(out, cases[i].want),
			  "case %zu: exit %d, want 1 and '%s': %s", i, exit_code(st), cases[i].want,
			  out ? out : "");
		free(out);
		out = NULL;
	}
	{
		char *argv[] = {(char *)h_reflexd_path(), "--config", (char *)fine,
				"--check-config", NULL};
		int st = h_run(argv, 5000, &out);

		CHECK_MSG(st != -1 && exit_code(st) == 0, "log in a missing directory: exit %d: %s",
			  exit_code(st), out ? out : "");
		free(out);
		out = NULL;
	}
	CHECK_MSG(access(missing_log, F_OK) != 0, "%s", "--check-config created a directory");
	rmdir(dir);
	test_end();
}

static void test_refuses_to_start(void)
{
	char *out = NULL;
	const char *cfg = h_write_config("upstream: [\"127.0.0.1:19001\"]\n"
					 "workers: many\n");
	char *argv[] = {(char *)h_reflexd_path(), "--config", (char *)cfg, NULL};

	test_begin("invalid_config_refuses_to_start");
	int st = h_run(argv, 5000, &out);
	CHECK_MSG(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) != 0,
		  "reflexd with an invalid file: status 0x%x (want a prompt non-zero exit): %s", st,
		  out ? out : "");
	CHECK_MSG(out && strstr(out, ":2: "), "no ':2: ' in the message: %s", out ? out : "");
	free(out);
	test_end();
}

/* Flags override the file: --listen on the command line replaces the
 * file's listen list. */
static void test_flags_override_file(void)
{
	int file_port = h_free_port(), flag_port = h_free_port();
	char listen[64];
	const char *cfg = h_write_config("workers: 1\n"
					 "listen: [\"127.0.0.1:%d\"]\n"
					 "upstream: [\"127.0.0.1:%d\"]\n"
					 "timeouts: {drain: 500ms}\n",
					 file_port, h_free_port());
	const char *args[] = {"--config", cfg, "--listen", listen, NULL};

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", flag_port);
	test_begin("listen_flag_overrides_file");
	struct h_proc *gw = h_start_reflexd("reflexd-override", flag_port, args);
	CHECK_MSG(gw != NULL, "reflexd --config F --listen 127.0.0.1:%d did not listen there",
		  flag_port);
	if (gw) {
		int fd = h_connect("127.0.0.1", file_port, 500);

		CHECK_MSG(fd < 0, "the file's listen address %d is open too", file_port);
		if (fd >= 0)
			close(fd);
	}
	test_end();
	h_finish(gw, 3000);
}

static void test_flag(const char *flag, const char *must_contain)
{
	char name[64], *out = NULL;
	char *argv[] = {(char *)h_reflexd_path(), (char *)flag, NULL};

	snprintf(name, sizeof(name), "flag%s", flag + 1);
	for (char *p = name; *p; p++)
		if (*p == '-')
			*p = '_';
	test_begin(name);
	int st = h_run(argv, 5000, &out);
	CHECK_MSG(st != -1 && exit_code(st) == 0, "%s: exit %d: %s", flag, exit_code(st),
		  out ? out : "");
	CHECK_MSG(out && strlen(out) > 0, "%s printed nothing", flag);
	if (must_contain)
		CHECK_MSG(out && strstr(out, must_contain), "%s output lacks '%s': %s", flag,
			  must_contain, out ? out : "");
	free(out);
	test_end();
}

int main(void)
{
	h_init("20_config", 60);
	if (access(h_reflexd_path(), X_OK) != 0) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "%s is missing (make %s)", h_reflexd_path(),
			  h_reflexd_path());
		return test_exit_code();
	}
	test_valid();
	for (unsigned i = 0; i < sizeof(bads) / sizeof(bads[0]); i++)
		test_bad(&bads[i]);
	test_not_a_file();
	test_check_config_files();
	test_refuses_to_start();
	test_upstream_by_name();
	test_flags_override_file();
	test_flag("--version", NULL);
	test_flag("--help", "--listen");
	return test_exit_code();
}
