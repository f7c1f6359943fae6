/* 50_tls_handshake — a TLS listener (certificates made at run time with the
 * openssl CLI): TLS 1.3 and 1.2 handshakes, 1.0 and 1.1 refused with a
 * protocol_version alert, SNI picks the certificate (exact, wildcard,
 * unknown → default), ALPN answers http/1.1, sessions resume (tickets in 1.3
 * and 1.2, the session cache with tickets off), the OCSP response is
 * stapled, renegotiation is refused and sessions allow no 0-RTT,
 * X-Forwarded-Proto is https, a client that stalls mid-handshake
 * is closed at the handshake timeout, and garbage or plain HTTP on the TLS
 * port is refused without harm — every failure logged with its reason. */
#include "50_tls.h"

#include <signal.h>

static int gw_port, o_port;
static struct h_proc *gw;

static bool has(const char *out, const char *needle)
{
	return out && strstr(out, needle);
}

static void test_tls13_curl(void)
{
	char u[256], res[128];
	struct tls_get g;

	test_begin("tls13_request");
	snprintf(u, sizeof(u), "https://www.example.com:%d/echo", gw_port);
	snprintf(res, sizeof(res), "www.example.com:%d:127.0.0.1", gw_port);
	struct tls_opt o = {.resolve = res};
	int rc = tls_curl1(u, &o, &g);
	CHECK_MSG(rc == 0 && g.status == 200, "curl: rc %d (%s) status %ld", g.rc, g.err, g.status);
	CHECK_MSG(has(g.body, "[\"X-Forwarded-Proto\",\"https\"]"),
		  "origin did not see X-Forwarded-Proto: https: %s",
		  g.body ? h_excerpt(g.body, g.len, 400) : "(no body)");
	tls_get_free(&g);
	test_end();

	test_begin("tls13_protocol_and_alpn");
	char *out = NULL;
	tls_sclient(gw_port, "", "-servername www.example.com -alpn http/1.1 -tls1_3", &out);
	CHECK_MSG(has(out, "TLSv1.3"), "no TLS 1.3: %s",
		  out ? h_excerpt(out, strlen(out), 600) : "");
	CHECK_MSG(has(out, "ALPN protocol: http/1.1"), "ALPN not http/1.1: %s",
		  out ? h_excerpt(out, strlen(out), 600) : "");
	free(out);
	out = NULL;
	/* a client offering only h2 gets no ALPN answer (and may go on) */
	tls_sclient(gw_port, "", "-servername www.example.com -alpn h2", &out);
	CHECK_MSG(has(out, "No ALPN negotiated"), "h2-only ALPN: %s",
		  out ? h_excerpt(out, strlen(out), 600) : "");
	free(out);
	test_end();
}

static void test_tls12(void)
{
	char u[256];
	struct tls_get g;
	char *out = NULL;

	test_begin("tls12_handshake");
	snprintf(u, sizeof(u), "https://127.0.0.1:%d/?size=1000", gw_port);
	struct tls_opt o = {.tls12 = true};
	CHECK_MSG(tls_curl1(u, &o, &g) == 0 && g.status == 200 && g.bytes == 1000,
		  "curl TLS 1.2: rc %d (%s) status %ld bytes %llu", g.rc, g.err, g.status,
		  (unsigned long long)g.bytes);
	tls_get_free(&g);
	tls_sclient(gw_port, "", "-tls1_2 -servername www.example.com", &out);
	CHECK_MSG(has(out, "Protocol  : TLSv1.2") && has(out, "ECDHE-ECDSA-"),
		  "s_client TLS 1.2: %s", out ? h_excerpt(out, strlen(out), 800) : "");
	free(out);
	test_end();
}

static void test_old_versions(void)
{
	static const char *const flags[] = {"-tls1", "-tls1_1"};

	test_begin("tls10_tls11_refused");
	for (int i = 0; i < 2; i++) {
		char args[128], *out = NULL;
		/* SECLEVEL=0: make our own client willing to try */
		snprintf(args, sizeof(args), "%s -cipher DEFAULT@SECLEVEL=0", flags[i]);
		tls_sclient(gw_port, "", args, &out);
		CHECK_MSG(has(out, "alert protocol version") || has(out, "unsupported protocol"),
			  "%s was not refused: %s", flags[i],
			  out ? h_excerpt(out, strlen(out), 600) : "");
		CHECK_MSG(!has(out, "Cipher is ECDHE") || has(out, "Cipher is (NONE)"),
			  "%s handshake completed", flags[i]);
		free(out);
	}
	CHECK_MSG(h_wait_log(gw, "unsupported protocol (version)", 5000),
		  "no log line with reason \"version\" within 5 s");
	test_end();
}

static void test_sni(void)
{
	struct {
		const char *sni, *want;
	} cases[] = {
		{"www.example.com", "CN = www.example.com"},
		{"api.example.com", "CN = www.example.com"},
		{"a.wild.example.net", "CN = wild.example.net"},
		{"unknown.example.org", "CN = www.example.com"}, /* the default */
	};

	test_begin("sni_picks_certificate");
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char args[256], *out = NULL;
		snprintf(args, sizeof(args), "-servername %s", cases[i].sni);
		tls_sclient(gw_port, "", args, &out);
		CHECK_MSG(has(out, cases[i].want), "SNI %s: expected %s: %s", cases[i].sni,
			  cases[i].want, out ? h_excerpt(out, strlen(out), 500) : "");
		free(out);
	}
	/* a wildcard covers one label only: a.b.wild... gets the default */
	char *out = NULL;
	tls_sclient(gw_port, "", "-servername a.b.wild.example.net", &out);
	CHECK_MSG(has(out, "CN = www.example.com"), "two-label wildcard match: %s",
		  out ? h_excerpt(out, strlen(out), 500) : "");
	free(out);
	test_end();
}

static void test_resumption(void)
{
	const char *sess = tls_path("sess.pem");
	static const char req[] =
		"GET /?size=10 HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n";
	static const char *const modes[][2] = {
		{"tls13_ticket", "-tls1_3"},
		{"tls12_ticket", "-tls1_2"},
		{"tls12_session_cache", "-tls1_2 -no_ticket"},
	};

	for (int m = 0; m < 3; m++) {
		char args[512], name[64], *out = NULL;
		snprintf(name, sizeof(name), "resumption_%s", modes[m][0]);
		test_begin(name);
		unlink(sess);
		snprintf(args, sizeof(args), "%s -servername www.example.com -ign_eof -sess_out %s",
			 modes[m][1], sess);
		tls_sclient(gw_port, req, args, &out);
		CHECK_MSG(has(out, "New, TLSv1."), "first connection: %s",
			  out ? h_excerpt(out, strlen(out), 500) : "");
		free(out);
		out = NULL;
		snprintf(args, sizeof(args), "%s -servername www.example.com -ign_eof -sess_in %s",
			 modes[m][1], sess);
		tls_sclient(gw_port, req, args, &out);
		CHECK_MSG(has(out, "Reused, TLSv1."), "second connection did not resume: %s",
			  out ? h_excerpt(out, strlen(out), 700) : "");
		CHECK_MSG(has(out, "HTTP/1.1 200"), "no response on the resumed session");
		free(out);
		test_end();
	}
}

/* openssl s_client on pipes: the test reads what it printed and types its
 * next line (or closes its stdin, which ends it normally) only once what it
 * waits for arrived, instead of feeding it from a shell with fixed sleeps
 * that a busy machine can outlast. stdbuf: its stdout would otherwise sit in
 * a stdio buffer until it exits. */
struct sclient {
	pid_t pid;
	int in, out; /* its stdin; its stdout and stderr */
	struct h_buf b;
};

static bool sclient_start(struct sclient *s, const char *args)
{
	char cmd[512];
	int in[2], out[2];

	*s = (struct sclient){.pid = -1, .in = -1, .out = -1};
	if (pipe(in) != 0)
		return false;
	if (pipe(out) != 0) {
		close(in[0]);
		close(in[1]);
		return false;
	}
	snprintf(cmd, sizeof(cmd), "exec stdbuf -o0 openssl s_client -connect 127.0.0.1:%d %s 2>&1",
		 gw_port, args);
	s->pid = fork();
	if (s->pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	s->in = in[1];
	s->out = out[0];
	return s->pid > 0;
}

/* Read its output until it contains needle: true, or false when it ended or
 * timeout_ms passed first. */
static bool sclient_wait(struct sclient *s, const char *needle, unsigned timeout_ms)
{
	return h_read_until(s->out, &s->b, needle, timeout_ms) == H_READ_DONE;
}

/* The last 600 bytes of what it printed, for a failure message. */
static const char *sclient_tail(const struct sclient *s)
{
	size_t n = s->b.len > 600 ? 600 : s->b.len;

	return h_excerpt(s->b.data ? s->b.data + s->b.len - n : NULL, n, 600);
}

/* Close its stdin, collect the rest of its output (up to 5 s), reap it. The
 * output stays in s->b (NUL-terminated; data NULL if it printed nothing)
 * until h_buf_free. */
static void sclient_end(struct sclient *s)
{
	if (s->in >= 0)
		close(s->in);
	if (s->out >= 0) {
		h_read_all(s->out, &s->b, 5000, 0);
		close(s->out);
	}
	if (s->pid > 0) {
		kill(s->pid, SIGKILL); /* gone already, unless it hung */
		waitpid(s->pid, NULL, 0);
	}
}

static void test_no_renegotiation_no_0rtt(void)
{
	struct sclient s;

	test_begin("renegotiation_refused");
	/* s_client renegotiates on an "R" line (TLS 1.2), once the handshake
	 * is done; the refusal is an alert it prints */
	if (sclient_start(&s, "-tls1_2 -servername www.example.com")) {
		bool up = sclient_wait(&s, "Verify return code", 10000);
		if (up && write(s.in, "R\n", 2) != 2)
			up = false;
		bool refused = up && sclient_wait(&s, "no renegotiation", 10000);
		sclient_end(&s);
		CHECK_MSG(up, "no TLS 1.2 handshake within 10 s: %s", sclient_tail(&s));
		CHECK_MSG(refused && has(s.b.data, "RENEGOTIATING"),
			  "renegotiation not refused within 10 s: %s", sclient_tail(&s));
		h_buf_free(&s.b);
	} else {
		CHECK_MSG(false, "cannot start openssl s_client");
	}
	test_end();

	test_begin("no_early_data");
	/* s_client prints a session's parameters when the post-handshake
	 * ticket arrives */
	if (sclient_start(&s, "-tls1_3 -servername www.example.com")) {
		bool ticket = sclient_wait(&s, "Max Early Data:", 10000);
		sclient_end(&s);
		CHECK_MSG(ticket, "no session ticket within 10 s: %s", sclient_tail(&s));
		CHECK_MSG(has(s.b.data, "Max Early Data: 0"), "sessions allow 0-RTT: %s",
			  sclient_tail(&s));
		h_buf_free(&s.b);
	} else {
		CHECK_MSG(false, "cannot start openssl s_client");
	}
	test_end();
}

static void test_ocsp(void)
{
	char *out = NULL;

	test_begin("ocsp_stapled");
	tls_sclient(gw_port, "", "-servername www.example.com -status", &out);
	CHECK_MSG(has(out, "OCSP Response Status: successful") && has(out, "Cert Status: good"),
		  "no stapled OCSP response: %s", out ? h_excerpt(out, strlen(out), 600) : "");
	free(out);
	test_end();
}

static void test_stall(void)
{
	struct h_buf b = {0};

	test_begin("handshake_timeout_closes_staller");
	int fd = h_connect("127.0.0.1", gw_port, 2000);
	CHECK(fd >= 0);
	if (fd >= 0) {
		/* the first bytes of a ClientHello record, then nothing */
		static const char part[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
		double t0 = h_now_ms();
		h_send_all(fd, part, sizeof(part) - 1);
		enum h_read_end e = h_read_all(fd, &b, 8000, 0);
		double dt = h_now_ms() - t0;
		CHECK_MSG(e == H_READ_CLOSED || e == H_READ_RESET, "read ended with %s",
			  h_read_end_name(e));
		/* timeout 1 s; generous margin for a busy machine */
		CHECK_MSG(dt >= 800 && dt < 6000, "closed after %.0f ms (timeout 1000)", dt);
		close(fd);
	}
	CHECK_MSG(h_wait_log(gw, "(handshake_timeout)", 5000),
		  "no handshake_timeout log line within 5 s");
	h_buf_free(&b);
	test_end();
}

static void test_garbage(void)
{
	static const char *const inputs[] = {
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"\x16\x03\x03\x00\x05garbagegarbagegarbage",
		"\x00\x01\x02\x03\xff\xfe\xfd\xfc\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89",
	};

	test_begin("plain_http_gets_400");
	/* as nginx: a plain HTTP client learns what went wrong, in words it can
	 * read, instead of an empty reply; any method, not only the four that
	 * OpenSSL itself recognizes */
	static const char *const plain[] = {
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"DELETE /a HTTP/1.1\r\nHost: x\r\n\r\n",
	};
	for (int i = 0; i < 2; i++) {
		struct h_buf b = {0};
		enum h_read_end e =
			h_raw_roundtrip("127.0.0.1", gw_port, plain[i], strlen(plain[i]), &b, 5000);
		CHECK_MSG(e == H_READ_CLOSED || e == H_READ_RESET, "plain %d: read ended with %s",
			  i, h_read_end_name(e));
		CHECK_MSG(b.len > 12 && !strncmp(b.data, "HTTP/1.1 400 ", 13) &&
				  memmem(b.data, b.len, "plain HTTP", 10) &&
				  memmem(b.data, b.len, "Connection: close", 17),
			  "plain %d: %s", i, h_excerpt(b.data, b.len, 200));
		h_buf_free(&b);
	}
	test_end();

	test_begin("garbage_closes_harmlessly");
	for (int i = 1; i < 3; i++) {
		struct h_buf b = {0};
		enum h_read_end e = h_raw_roundtrip("127.0.0.1", gw_port, inputs[i],
						    i == 2 ? 18 : strlen(inputs[i]), &b, 5000);
		CHECK_MSG(e == H_READ_CLOSED || e == H_READ_RESET, "input %d: read ended with %s",
			  i, h_read_end_name(e));
		/* whatever came back is a TLS alert, never an HTTP response */
		CHECK_MSG(b.len == 0 || (unsigned char)b.data[0] == 0x15,
			  "input %d: answer is not an alert: %s", i, h_excerpt(b.data, b.len, 80));
		h_buf_free(&b);
	}
	/* and the gateway still serves */
	char u[256];
	struct tls_get g;
	snprintf(u, sizeof(u), "https://127.0.0.1:%d/?size=10", gw_port);
	CHECK_MSG(tls_curl1(u, NULL, &g) == 0 && g.status == 200, "after garbage: %d %s %ld", g.rc,
		  g.err, g.status);
	tls_get_free(&g);
	CHECK_MSG(h_wait_log(gw, "(protocol)", 5000), "no protocol log line within 5 s");
	test_end();
}

int main(void)
{
	h_init("50_tls_handshake", 240);
	if (!tls_make_certs("tls_handshake"))
		return test_exit_code();
	o_port = h_free_port();
	gw_port = h_free_port();
	if (!h_start_origin("origin", o_port, 1))
		return 1;
	const char *cfg = h_write_config("workers: 1\n"
					 "listen:\n"
					 "  - address: \"127.0.0.1:%d\"\n"
					 "    tls:\n"
					 "      cert: %s\n"
					 "      key: %s\n"
					 "      ocsp: %s\n"
					 "      certs: [{cert: %s, key: %s}]\n"
					 "upstream: [\"127.0.0.1:%d\"]\n"
					 "timeouts: {tls_handshake: 1s}\n"
					 "admin: {listen: off}\n",
					 gw_port, tls_path("srv.pem"), tls_path("srv.key"),
					 tls_path("srv.ocsp"), tls_path("wild.pem"),
					 tls_path("wild.key"), o_port);
	gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw)
		return 1;

	test_tls13_curl();
	test_tls12();
	test_old_versions();
	test_sni();
	test_resumption();
	test_ocsp();
	test_no_renegotiation_no_0rtt();
	test_stall();
	test_garbage();

	h_finish(gw, 10000);
	return test_exit_code();
}
