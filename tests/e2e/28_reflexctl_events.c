/* 28_reflexctl_events — reflexctl events: the list, the live stream
 * (--follow stays connected and prints each event as one JSON line), and a
 * clear refusal when the gateway does not trace. */
#include "lib/harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int run_sh(const char *cmd, char **out)
{
	char *argv[] = { "/bin/sh", "-c", (char *)cmd, NULL };
	return h_run(argv, 20000, out);
}

int main(void)
{
	char cmd[1024], url[128];
	char *out = NULL;

	h_init("28_reflexctl_events", 60);
	int gw = h_free_port(), o = h_free_port(), ad = h_free_port(), ad2 = h_free_port();
	if (!h_start_origin("origin", o, 1)) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflex-origin did not start");
		return test_exit_code();
	}
	const char *cfg = h_write_config("workers: 1\nlisten: [\"127.0.0.1:%d\"]\n"
					 "upstream: [\"127.0.0.1:%d\"]\n"
					 "admin: {listen: \"127.0.0.1:%d\"}\n"
					 "trace: {enabled: true, window: 500ms}\n",
					 gw, o, ad);
	struct h_proc *p = h_start_reflexd_config("reflexd", gw, cfg);
	if (!p || h_wait_port("127.0.0.1", ad, 5000) != 0) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd or its admin API did not start");
		return test_exit_code();
	}

	test_begin("events_list_is_json");
	snprintf(cmd, sizeof(cmd), "%s/reflexctl --admin 127.0.0.1:%d --json events; echo rc=$?",
		 h_build_dir(), ad);
	run_sh(cmd, &out);
	CHECK_MSG(out && out[0] == '[' && strstr(out, "rc=0"), "events: %s",
		  out ? h_excerpt(out, strlen(out), 200) : "(nothing)");
	free(out);
	out = NULL;
	test_end();

	test_begin("events_follow_streams_until_interrupted");
	/* --follow must still be connected when timeout ends it (rc 124) and
	 * print the resets provoked meanwhile, one JSON object per line */
	char follow_path[512];
	snprintf(follow_path, sizeof(follow_path), "%s/test-logs/e2e-28-follow-%d.txt",
		 h_build_dir(), (int)getpid());
	snprintf(cmd, sizeof(cmd),
		 "timeout 6 %s/reflexctl --admin 127.0.0.1:%d events --follow > %s;"
		 " echo rc=$?",
		 h_build_dir(), ad, follow_path);
	char *argv[] = { "/bin/sh", "-c", cmd, NULL };
	struct h_proc *f = h_spawn("follow", argv, NULL, 0, 0);
	/* A reset every 700 ms until one shows in the stream: reflexctl subscribes
	 * in its own time, events from before it did are not replayed, and one
	 * reset per subject is logged per window (500 ms here). */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/?reset=1", gw);
	for (bool seen = false; !seen && h_alive(f); h_sleep_ms(700)) {
		struct h_resp r;
		h_get(url, &r);
		h_resp_free(&r);
		FILE *ff = fopen(follow_path, "r");
		char line[512];
		while (ff && !seen && fgets(line, sizeof(line), ff))
			seen = strstr(line, "{\"seq\":") != NULL;
		if (ff)
			fclose(ff);
	}
	h_wait_exit(f, 10000);
	CHECK_MSG(h_log_contains(f, "rc=124"), "reflexctl events --follow ended on its own");
	snprintf(cmd, sizeof(cmd), "cat %s", follow_path);
	run_sh(cmd, &out);
	CHECK_MSG(out && strstr(out, "{\"seq\":") && strstr(out, "\"signal\":"),
		  "no event line was printed: '%s'", out ? h_excerpt(out, strlen(out), 200) : "");
	free(out);
	out = NULL;
	unlink(follow_path);
	test_end();

	test_begin("events_refused_without_trace");
	int gw2 = h_free_port();
	const char *cfg2 = h_write_config("workers: 1\nlisten: [\"127.0.0.1:%d\"]\n"
					  "upstream: [\"127.0.0.1:%d\"]\n"
					  "admin: {listen: \"127.0.0.1:%d\"}\n",
					  gw2, o, ad2);
	struct h_proc *p2 = h_start_reflexd_config("reflexd-notrace", gw2, cfg2);
	if (p2 && h_wait_port("127.0.0.1", ad2, 5000) == 0) {
		snprintf(cmd, sizeof(cmd), "%s/reflexctl --admin 127.0.0.1:%d events --follow; echo rc=$?",
			 h_build_dir(), ad2);
		run_sh(cmd, &out);
		CHECK_MSG(out && strstr(out, "rc=1") && strstr(out, "refused"),
			  "without trace: %s", out ? h_excerpt(out, strlen(out), 200) : "");
		free(out);
	} else {
		test_fail(__FILE__, __LINE__, "the second reflexd did not start");
	}
	test_end();
	return test_exit_code();
}
