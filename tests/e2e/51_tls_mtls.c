/* 51_tls_mtls — a listener that verifies client certificates (client_ca):
 * a client with a certificate from the CA is served and the origin sees its
 * subject in X-Client-Subject (a value the client sent itself is dropped);
 * a client without a certificate, with one from another CA, or with an
 * expired one, is refused
 * in the handshake and the refusal is logged with reason client_cert. A
 * plain listener on the same gateway keeps working. A session from a TLS
 * listener without client_ca that shares the mTLS listener's ticket key
 * file is not resumed there (it would skip the certificate check). */
#include "50_tls.h"

static int gw_port, plain_port, tls_port, o_port;
static struct h_proc *gw;

static void test_accept(void)
{
	char u[256];
	struct tls_get g;
	static const char *const spoof[] = {"X-Client-Subject: CN=admin", NULL};
	struct tls_opt o = {
		.cert = tls_path("client.pem"), .key = tls_path("client.key"), .headers = spoof};

	test_begin("mtls_accepts_client_cert");
	snprintf(u, sizeof(u), "https://127.0.0.1:%d/echo", gw_port);
	int rc = tls_curl1(u, &o, &g);
	CHECK_MSG(rc == 0 && g.status == 200, "curl: rc %d (%s) status %ld", g.rc, g.err, g.status);
	struct h_echo e;
	if (g.body && h_echo_parse(g.body, g.len, &e) == 0) {
		const char *v = h_echo_header(&e, "X-Client-Subject");
		CHECK_MSG(v && !strcmp(v, "CN=client-one"), "X-Client-Subject: %s",
			  v ? v : "(none)");
		CHECK_INT(h_echo_count(&e, "X-Client-Subject"), 1);
		v = h_echo_header(&e, "X-Forwarded-Proto");
		CHECK_MSG(v && !strcmp(v, "https"), "X-Forwarded-Proto: %s", v ? v : "(none)");
		h_echo_free(&e);
	} else {
		CHECK_MSG(false, "no /echo answer: %s",
			  g.body ? h_excerpt(g.body, g.len, 200) : "");
	}
	tls_get_free(&g);
	test_end();
}

static void test_refuse(void)
{
	char u[256];
	struct tls_get g;

	test_begin("mtls_refuses_missing_cert");
	snprintf(u, sizeof(u), "https://127.0.0.1:%d/echo", gw_port);
	int rc = tls_curl1(u, NULL, &g);
	CHECK_MSG(rc != 0 && g.status == 0, "served without a certificate: rc %d status %ld", g.rc,
		  g.status);
	tls_get_free(&g);
	CHECK_MSG(h_wait_log(gw, "(client_cert)", 5000), "no client_cert log line within 5 s");
	test_end();

	test_begin("mtls_refuses_foreign_cert");
	struct tls_opt o = {.cert = tls_path("rogue.pem"), .key = tls_path("rogue.key")};
	rc = tls_curl1(u, &o, &g);
	CHECK_MSG(rc != 0 && g.status == 0, "served with a rogue certificate: rc %d status %ld",
		  g.rc, g.status);
	tls_get_free(&g);
	/* TLS 1.2 too: there the refusal happens inside the handshake */
	o.tls12 = true;
	rc = tls_curl1(u, &o, &g);
	CHECK_MSG(rc != 0 && g.status == 0, "TLS 1.2 served a rogue certificate: rc %d", g.rc);
	tls_get_free(&g);
	CHECK_MSG(h_wait_log(gw, "certificate verify failed", 5000),
		  "no log line naming the verify failure within 5 s");
	test_end();

	test_begin("mtls_refuses_expired_cert");
	/* from the right CA, but expired yesterday */
	o = (struct tls_opt){.cert = tls_path("expired.pem"), .key = tls_path("expired.key")};
	rc = tls_curl1(u, &o, &g);
	CHECK_MSG(rc != 0 && g.status == 0, "served with an expired certificate: rc %d status %ld",
		  g.rc, g.status);
	tls_get_free(&g);
	CHECK_MSG(h_wait_log(gw, "certificate has expired", 5000),
		  "no log line naming the expiry within 5 s");
	test_end();
}

static void test_plain(void)
{
	struct h_resp r;
	char u[256];

	test_begin("plain_listener_alongside");
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/echo", plain_port);
	CHECK_INT(h_get(u, &r), 200);
	CHECK_MSG(r.body && strstr(r.body, "[\"X-Forwarded-Proto\",\"http\"]"),
		  "plain listener: %s", r.body ? h_excerpt(r.body, r.body_len, 300) : "");
	h_resp_free(&r);
	test_end();
}

static bool has(const char *s, const char *what)
{
	return s && strstr(s, what);
}

static void test_ticket_from_other_listener(void)
{
	static const char *const vers[] = {"-tls1_3", "-tls1_2"};
	/* a request that closes: s_client -ign_eof then ends at once */
	static const char req[] =
		"GET /echo HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n";

	test_begin("mtls_no_resumption_of_other_listeners_session");
	for (int i = 0; i < 2; i++) {
		char args[1024], *out = NULL;
		const char *sess = tls_path(i ? "sess12.pem" : "sess13.pem");
		/* a session (a ticket under the shared key) from the listener
		 * that asks for no client certificate */
		snprintf(args, sizeof(args), "%s -ign_eof -sess_out %s", vers[i], sess);
		tls_sclient(tls_port, req, args, &out);
		free(out);
		out = NULL;
		/* it does resume there: the session file is good */
		snprintf(args, sizeof(args), "%s -ign_eof -sess_in %s", vers[i], sess);
		tls_sclient(tls_port, req, args, &out);
		CHECK_MSG(has(out, "Reused,"), "%s: no resumption on the listener that made it: %s",
			  vers[i], out ? h_excerpt(out, strlen(out), 300) : "");
		free(out);
		out = NULL;
		/* offered to the mTLS listener without a certificate */
		snprintf(args, sizeof(args), "%s -ign_eof -sess_in %s", vers[i], sess);
		tls_sclient(gw_port, req, args, &out);
		CHECK_MSG(
			!has(out, "Reused,") && !has(out, "HTTP/1.1 200"),
			"%s: a session from the listener without client_ca was resumed on the mTLS "
			"listener: %s",
			vers[i], out ? h_excerpt(out, strlen(out), 400) : "");
		free(out);
	}
	test_end();
}

int main(void)
{
	h_init("51_tls_mtls", 180);
	if (!tls_make_certs("tls_mtls"))
		return test_exit_code();
	o_port = h_free_port();
	gw_port = h_free_port();
	plain_port = h_free_port();
	tls_port = h_free_port();
	if (!h_start_origin("origin", o_port, 1))
		return 1;
	/* one ticket key file for both TLS listeners, as hosts sharing keys have */
	char *kf[] = {"/bin/sh",
		      "-c",
		      "head -c 80 /dev/urandom > \"$1\"",
		      "kf",
		      (char *)tls_path("tickets.key"),
		      NULL};
	char *kout = NULL;
	h_run(kf, 5000, &kout);
	free(kout);
	const char *cfg = h_write_config(
		"workers: 1\n"
		"listen:\n"
		"  - {address: \"127.0.0.1:%d\", tls: {cert: %s, key: %s, client_ca: %s, "
		"tickets: {key_file: %s}}}\n"
		"  - {address: \"127.0.0.1:%d\", tls: {cert: %s, key: %s, tickets: {key_file: "
		"%s}}}\n"
		"  - \"127.0.0.1:%d\"\n"
		"upstream: [\"127.0.0.1:%d\"]\n"
		"admin: {listen: off}\n",
		gw_port, tls_path("srv.pem"), tls_path("srv.key"), tls_path("ca.pem"),
		tls_path("tickets.key"), tls_port, tls_path("srv.pem"), tls_path("srv.key"),
		tls_path("tickets.key"), plain_port, o_port);
	gw = h_start_reflexd_config("reflexd", plain_port, cfg);
	if (!gw)
		return 1;

	test_accept();
	test_refuse();
	test_plain();
	test_ticket_from_other_listener();

	h_finish(gw, 10000);
	return test_exit_code();
}
