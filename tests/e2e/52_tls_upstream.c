/* 52_tls_upstream — pools that speak TLS to their endpoints (openssl
 * s_server -www as the upstream): a certificate from the configured CA with
 * the endpoint's IP or the configured SNI name is accepted and the session
 * is resumed on the next connection; an expired certificate, one from an
 * unknown CA and a name mismatch each give 502 naming the reason (and a log
 * line, reason peer_verify); verify: false accepts what it gets. A response
 * whose body runs until the connection closes is complete only when the
 * upstream ends it with close_notify: a bare TCP close mid-body (a
 * truncation an attacker on the path can forge) is relayed as an abort,
 * never as a complete response. */
#include "50_tls.h"

static int gw_port;
static struct h_proc *gw;

static struct h_proc *start_sserver(const char *name, int port, const char *cert, const char *key)
{
	char acc[64];
	snprintf(acc, sizeof(acc), "127.0.0.1:%d", port);
	char *argv[] = {"/usr/bin/openssl", "s_server", "-www",	     "-accept", acc, "-cert",
			(char *)cert,	    "-key",	(char *)key, "-quiet",	NULL};
	return h_spawn(name, argv, "127.0.0.1", port, 10000);
}

/* A scripted TLS upstream (srv.pem): answers with a body delimited by the
 * close, then ends with close_notify ("/close/clean") or with a bare TCP
 * close and no close_notify ("/close/bare"). */
static SSL_CTX *trunc_ctx;

static void *serve_trunc(void *arg)
{
	int fd = (int)(intptr_t)arg;
	SSL *s = SSL_new(trunc_ctx);
	char req[4096];
	size_t n = 0;

	if (!s || !SSL_set_fd(s, fd) || SSL_accept(s) != 1)
		goto out;
	while (n < sizeof(req) - 1) {
		int k = SSL_read(s, req + n, (int)(sizeof(req) - 1 - n));
		if (k <= 0)
			goto out;
		n += (size_t)k;
		req[n] = 0;
		if (strstr(req, "\r\n\r\n"))
			break;
	}
	static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
				   "Cache-Control: max-age=60\r\n\r\n";
	static const char body[] = "first part of the body, ";
	if (SSL_write(s, head, sizeof(head) - 1) <= 0 || SSL_write(s, body, sizeof(body) - 1) <= 0)
		goto out;
	if (strstr(req, "/close/clean"))
		SSL_shutdown(s);
out:
	SSL_free(s);
	close(fd);
	return NULL;
}

static long get(const char *path, struct h_resp *r)
{
	char u[256];
	snprintf(u, sizeof(u), "http://127.0.0.1:%d%s", gw_port, path);
	return h_get(u, r);
}

static void test_verified(void)
{
	struct h_resp r;

	test_begin("upstream_tls_verified_ip");
	CHECK_INT(get("/good/", &r), 200);
	CHECK_MSG(r.body && strstr(r.body, "TLSv1.3"), "not the s_server page over TLS 1.3: %s",
		  r.body ? h_excerpt(r.body, r.body_len, 200) : "");
	h_resp_free(&r);
	test_end();

	test_begin("upstream_tls_verified_sni");
	CHECK_INT(get("/sni/", &r), 200);
	h_resp_free(&r);
	test_end();

	test_begin("upstream_tls_session_reuse");
	/* s_server -www closes after each answer: every request is a new
	 * connection, and from the second on it resumes */
	bool reused = false;
	for (int i = 0; i < 3 && !reused; i++) {
		CHECK_INT(get("/good/", &r), 200);
		reused = r.body && strstr(r.body, "Reused, TLSv1.3");
		h_resp_free(&r);
	}
	CHECK_MSG(reused, "no connection resumed the upstream session");
	test_end();
}

static void test_refused(void)
{
	static const struct {
		const char *name, *path, *why;
	} cases[] = {
		{"upstream_tls_expired_502", "/expired/", "certificate has expired"},
		{"upstream_tls_unknown_ca_502", "/foreign/", "unable to get local issuer"},
		{"upstream_tls_name_mismatch_502", "/wrongname/", "hostname mismatch"},
	};

	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct h_resp r;
		test_begin(cases[i].name);
		CHECK_INT(get(cases[i].path, &r), 502);
		CHECK_MSG(r.body && strstr(r.body, "upstream TLS") && strstr(r.body, cases[i].why),
			  "502 body does not name the reason \"%s\": %s", cases[i].why,
			  r.body ? h_excerpt(r.body, r.body_len, 300) : "");
		h_resp_free(&r);
		test_end();
	}
	test_begin("upstream_tls_failure_logged");
	CHECK_MSG(h_wait_log(gw, "(peer_verify)", 5000), "no peer_verify log line within 5 s");
	test_end();

	struct h_resp r;
	test_begin("upstream_tls_verify_off");
	CHECK_INT(get("/noverify/", &r), 200);
	h_resp_free(&r);
	test_end();
}

static void test_truncation(void)
{
	struct h_resp r;

	test_begin("upstream_tls_close_notify_ends_body");
	CHECK_INT(get("/close/clean", &r), 200);
	CHECK_MSG(r.curl_rc == 0 && r.body && !strcmp(r.body, "first part of the body, "),
		  "curl %d (%s), body %s", r.curl_rc, r.error,
		  r.body ? h_excerpt(r.body, r.body_len, 100) : "");
	h_resp_free(&r);
	test_end();

	test_begin("upstream_tls_bare_close_is_truncation");
	/* a 502 when the close came before the head left, else an abort
	 * (curl 18, partial file); never a complete 200 */
	get("/close/bare", &r);
	CHECK_MSG(r.curl_rc != 0 || r.status == 502,
		  "a body cut by a TCP close without close_notify was relayed as complete "
		  "(status %ld, %zu bytes)",
		  r.status, r.body_len);
	h_resp_free(&r);
	/* and it was not stored: the next request is not a complete hit */
	get("/close/bare", &r);
	CHECK_MSG(r.curl_rc != 0 || r.status == 502,
		  "second request: a truncated body came back complete (status %ld)", r.status);
	h_resp_free(&r);
	CHECK_MSG(h_wait_log(gw, "response truncated", 5000), "no 'response truncated' log line");
	test_end();
}

int main(void)
{
	h_init("52_tls_upstream", 180);
	if (!tls_make_certs("tls_upstream"))
		return test_exit_code();
	int good = h_free_port(), expired = h_free_port(), foreign = h_free_port();
	gw_port = h_free_port();
	if (!start_sserver("sserver-good", good, tls_path("srv.pem"), tls_path("srv.key")) ||
	    !start_sserver("sserver-expired", expired, tls_path("expired.pem"),
			   tls_path("expired.key")) ||
	    !start_sserver("sserver-foreign", foreign, tls_path("foreign.pem"),
			   tls_path("foreign.key"))) {
		test_skip("tls_upstream", "openssl s_server did not start");
		return test_exit_code();
	}
	const char *ca = tls_path("ca.pem");
	int trunc = 0;
	trunc_ctx = SSL_CTX_new(TLS_server_method());
	if (!trunc_ctx || SSL_CTX_use_certificate_chain_file(trunc_ctx, tls_path("srv.pem")) != 1 ||
	    SSL_CTX_use_PrivateKey_file(trunc_ctx, tls_path("srv.key"), SSL_FILETYPE_PEM) != 1 ||
	    h_serve_tcp(serve_trunc, &trunc)) {
		test_begin("scripted_tls_upstream");
		CHECK_MSG(false, "cannot start the scripted TLS upstream");
		test_end();
		return test_exit_code();
	}
	const char *cfg = h_write_config(
		"workers: 1\n"
		"listen: [\"127.0.0.1:%d\"]\n"
		"pools:\n"
		"  good: {endpoints: [\"127.0.0.1:%d\"], keepalive: 0, tls: {ca: %s}}\n"
		"  sni: {endpoints: [\"127.0.0.1:%d\"], tls: {ca: %s, sni: www.example.com}}\n"
		"  expired: {endpoints: [\"127.0.0.1:%d\"], tls: {ca: %s}}\n"
		"  foreign: {endpoints: [\"127.0.0.1:%d\"], tls: {ca: %s}}\n"
		"  wrongname: {endpoints: [\"127.0.0.1:%d\"], tls: {ca: %s, sni: "
		"nope.example.org}}\n"
		"  noverify: {endpoints: [\"127.0.0.1:%d\"], tls: {verify: false}}\n"
		"  trunc: {endpoints: [\"127.0.0.1:%d\"], keepalive: 0, tls: {ca: %s}}\n"
		"routes:\n"
		"  - {path_prefix: /close/, pool: trunc}\n"
		"  - {path_prefix: /good/, pool: good}\n"
		"  - {path_prefix: /sni/, pool: sni}\n"
		"  - {path_prefix: /expired/, pool: expired}\n"
		"  - {path_prefix: /foreign/, pool: foreign}\n"
		"  - {path_prefix: /wrongname/, pool: wrongname}\n"
		"  - {path_prefix: /noverify/, pool: noverify}\n"
		"admin: {listen: off}\n",
		gw_port, good, ca, good, ca, expired, ca, foreign, ca, good, ca, foreign, trunc,
		ca);
	gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw)
		return 1;

	test_verified();
	test_refused();
	test_truncation();

	h_finish(gw, 10000);
	return test_exit_code();
}
