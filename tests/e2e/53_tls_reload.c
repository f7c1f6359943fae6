/* 53_tls_reload — a configuration reload (SIGHUP) that points the TLS
 * listener at another certificate: new connections get the new one, while
 * a keep-alive connection opened before the reload goes on being served on
 * the same TLS session (nothing is dropped). A reload with a broken
 * certificate is refused and the running certificate stays. */
#include "50_tls.h"

#include <signal.h>

static int gw_port, o_port;
static struct h_proc *gw;
static char cfg_path[512];

static bool write_cfg(const char *cert, const char *key)
{
	FILE *f = fopen(cfg_path, "w");
	if (!f)
		return false;
	fprintf(f,
		"workers: 1\n"
		"listen:\n"
		"  - {address: \"127.0.0.1:%d\", tls: {cert: %s, key: %s}}\n"
		"upstream: [\"127.0.0.1:%d\"]\n"
		"admin: {listen: off}\n",
		gw_port, cert, key, o_port);
	return fclose(f) == 0;
}

/* The subject CN a new connection is served with now. */
static bool served_cn(const char *want, unsigned wait_ms)
{
	double end = h_now_ms() + wait_ms;
	bool ok = false;

	do {
		char *out = NULL;
		tls_sclient(gw_port, "", "-servername www.example.com", &out);
		ok = out && strstr(out, want);
		free(out);
		if (!ok)
			h_sleep_ms(200);
	} while (!ok && h_now_ms() < end);
	return ok;
}

int main(void)
{
	h_init("53_tls_reload", 180);
	if (!tls_make_certs("tls_reload"))
		return test_exit_code();
	o_port = h_free_port();
	gw_port = h_free_port();
	snprintf(cfg_path, sizeof(cfg_path), "%s", tls_path("reflexd.yaml"));
	if (!h_start_origin("origin", o_port, 1) ||
	    !write_cfg(tls_path("srv.pem"), tls_path("srv.key")))
		return 1;
	gw = h_start_reflexd_config("reflexd", gw_port, cfg_path);
	if (!gw)
		return 1;

	char u[256], res[128];
	struct tls_get g;
	snprintf(u, sizeof(u), "https://www.example.com:%d/?size=100", gw_port);
	snprintf(res, sizeof(res), "www.example.com:%d:127.0.0.1", gw_port);
	struct tls_opt o = {.resolve = res};
	CURL *keep = curl_easy_init();

	test_begin("before_reload");
	CHECK(served_cn("CN = www.example.com", 0));
	CHECK_MSG(tls_curl(keep, u, &o, &g) == 0 && g.status == 200, "rc %d (%s) %ld", g.rc, g.err,
		  g.status);
	tls_get_free(&g);
	test_end();

	test_begin("reload_swaps_certificate");
	CHECK(write_cfg(tls_path("srv2.pem"), tls_path("srv2.key")));
	CHECK(h_signal(gw, SIGHUP) == 0);
	CHECK_MSG(served_cn("CN = reloaded.example.com", 8000),
		  "new connections still get the old certificate");
	test_end();

	test_begin("live_connection_survives_reload");
	for (int i = 0; i < 3; i++) {
		CHECK_MSG(tls_curl(keep, u, &o, &g) == 0 && g.status == 200 && g.bytes == 100,
			  "request %d after the reload: rc %d (%s) status %ld", i, g.rc, g.err,
			  g.status);
		CHECK_MSG(g.connects == 0, "request %d needed a new connection", i);
		tls_get_free(&g);
	}
	test_end();

	test_begin("reload_with_bad_cert_refused");
	CHECK(write_cfg(tls_path("missing.pem"), tls_path("srv.key")));
	CHECK(h_signal(gw, SIGHUP) == 0);
	/* the refusal is logged once the reload has been tried: after it the
	 * old certificate must still be the one served */
	CHECK_MSG(h_wait_log(gw, "missing.pem", 8000),
		  "no log line naming the bad certificate within 8 s of SIGHUP");
	CHECK(served_cn("CN = reloaded.example.com", 0));
	test_end();

	curl_easy_cleanup(keep);
	h_finish(gw, 10000);
	return test_exit_code();
}
