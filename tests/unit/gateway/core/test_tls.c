/* test_tls.c — core/tls.c without sockets: a client and a server
 * tls_conn wired back to back through their memory BIOs (certificates made
 * with the openssl CLI at run time; SKIP without it). Handshake and data
 * both ways, SNI choice (exact, wildcard, unknown), upstream verification,
 * client sessions resumed, tickets shared between two contexts through a
 * key file (two hosts), mTLS refusal, garbage, and context errors. */
#include "core/config.h"
#include "core/tls.h"
#include "tests/lib/test.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[256];

static const char *path(const char *name)
{
	static char bufs[8][512];
	static unsigned n;
	char *b = bufs[n++ % 8];
	snprintf(b, 512, "%s/%s", dir, name);
	return b;
}

static bool make_certs(void)
{
	char cmd[4096];

	snprintf(dir, sizeof(dir), "/tmp/reflex-test-tls-XXXXXX");
	if (!mkdtemp(dir))
		return false;
	snprintf(cmd, sizeof(cmd),
		 "set -e; cd %s\n"
		 "key() { openssl ecparam -name prime256v1 -genkey -noout -out $1.key; }\n"
		 "key ca; openssl req -x509 -new -key ca.key -subj /CN=ca -days 2 -out ca.pem\n"
		 "leaf() { key $1; openssl req -new -key $1.key -subj /CN=$1 -out $1.csr\n"
		 "  printf 'subjectAltName=%%s\\n' \"$2\" > $1.ext\n"
		 "  openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
		 "-extfile $1.ext -out $1.pem 2>/dev/null; }\n"
		 "leaf srv DNS:www.example.com,IP:127.0.0.1\n"
		 "leaf wild 'DNS:*.wild.example.net'\n"
		 "leaf client DNS:client\n"
		 "openssl rand 80 > tickets.key\n",
		 dir);
	int st = system(cmd);
	return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static struct cfg_tls_cert certs[2];

static struct cfg_listen_tls server_cfg(bool sni, bool mtls)
{
	struct cfg_listen_tls c = {.enabled = true,
				   .certs = certs,
				   .n_certs = sni ? 2 : 1,
				   .ticket_rotate = 3600000,
				   .session_cache = 100};
	snprintf(certs[0].cert, sizeof(certs[0].cert), "%s", path("srv.pem"));
	snprintf(certs[0].key, sizeof(certs[0].key), "%s", path("srv.key"));
	snprintf(certs[1].cert, sizeof(certs[1].cert), "%s", path("wild.pem"));
	snprintf(certs[1].key, sizeof(certs[1].key), "%s", path("wild.key"));
	if (mtls)
		snprintf(c.client_ca, sizeof(c.client_ca), "%s", path("ca.pem"));
	strcpy(c.client_subject_header, "X-Client-Subject");
	return c;
}

static struct cfg_pool_tls client_cfg(void)
{
	struct cfg_pool_tls c = {.enabled = true, .verify = true};
	snprintf(c.ca, sizeof(c.ca), "%s", path("ca.pem"));
	return c;
}

struct side {
	struct tls_conn *t;
	struct buf plain; /* received */
	ssize_t last;
};

/* Move ciphertext both ways until nothing moves (bounded). */
static void pump(struct side *a, struct side *b)
{
	for (int round = 0; round < 20; round++) {
		struct buf x = {0};
		bool moved = false;
		struct side *from[2] = {a, b}, *to[2] = {b, a};

		for (int d = 0; d < 2; d++) {
			CHECK(tls_conn_drain(from[d]->t, &x) == 0);
			if (x.len) {
				moved = true;
				CHECK(tls_conn_feed(to[d]->t, buf_head(&x), x.len) == 0);
				buf_reset(&x, 0);
			}
			char tmp[4096];
			ssize_t n;
			while ((n = tls_conn_read(to[d]->t, tmp, sizeof(tmp))) > 0)
				buf_append(&to[d]->plain, tmp, (size_t)n);
			to[d]->last = n;
			/* and the side that sent: a client starts by reading nothing */
			while ((n = tls_conn_read(from[d]->t, tmp, sizeof(tmp))) > 0)
				buf_append(&from[d]->plain, tmp, (size_t)n);
			from[d]->last = n;
		}
		buf_free(&x);
		if (!moved && round > 0)
			break;
	}
}

static void side_free(struct side *s)
{
	tls_conn_free(s->t);
	buf_free(&s->plain);
	*s = (struct side){0};
}

static void test_handshake(struct tls_ctx *srv, struct tls_ctx *cli)
{
	test_begin("handshake_and_data");
	struct side s = {.t = tls_conn_server(srv)},
		    c = {.t = tls_conn_client(cli, "127.0.0.1:443")};
	pump(&c, &s);
	CHECK(tls_conn_established(s.t) && tls_conn_established(c.t));
	CHECK_STR(tls_conn_version(s.t), "TLSv1.3");
	CHECK(tls_conn_write(c.t, "ping", 4) == 4);
	CHECK(tls_conn_write(s.t, "pong!", 5) == 5);
	pump(&c, &s);
	CHECK(s.plain.len == 4 && !memcmp(buf_head(&s.plain), "ping", 4));
	CHECK(c.plain.len == 5 && !memcmp(buf_head(&c.plain), "pong!", 5));
	CHECK(!tls_conn_resumed(c.t));
	CHECK(tls_conn_peer_subject(s.t) == NULL); /* no client certificate asked */
	tls_conn_shutdown(c.t);
	pump(&c, &s);
	CHECK_INT(s.last, -EPIPE);
	side_free(&s);
	side_free(&c);
	test_end();

	test_begin("client_session_resumed");
	s = (struct side){.t = tls_conn_server(srv)};
	c = (struct side){.t = tls_conn_client(cli, "127.0.0.1:443")};
	pump(&c, &s);
	CHECK(tls_conn_established(c.t));
	CHECK_MSG(tls_conn_resumed(c.t) && tls_conn_resumed(s.t), "second connection not resumed");
	side_free(&s);
	side_free(&c);
	test_end();
}

static void test_sni(struct tls_ctx *srv)
{
	struct cfg_pool_tls cc = client_cfg();

	test_begin("sni_exact_wildcard_unknown");
	static const struct {
		const char *sni;
		bool ok, unknown;
	} cases[] = {
		{"www.example.com", true, false},
		{"a.wild.example.net", true, false},   /* verifies only with the wildcard */
		{"a.b.wild.example.net", false, true}, /* default cert: name mismatch */
		{"other.example.org", false, true},
	};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char err[256];
		snprintf(cc.sni, sizeof(cc.sni), "%s", cases[i].sni);
		struct tls_ctx *cli = tls_client_ctx_new(&cc, err, sizeof(err));
		CHECK(cli != NULL);
		if (!cli)
			continue;
		struct side s = {.t = tls_conn_server(srv)},
			    c = {.t = tls_conn_client(cli, "ignored")};
		pump(&c, &s);
		CHECK_MSG(tls_conn_established(c.t) == cases[i].ok, "%s: established %d",
			  cases[i].sni, tls_conn_established(c.t));
		CHECK_MSG(tls_conn_unknown_sni(s.t) == cases[i].unknown, "%s: unknown_sni %d",
			  cases[i].sni, tls_conn_unknown_sni(s.t));
		if (!cases[i].ok) {
			CHECK_INT(tls_conn_fail(c.t), TLS_FAIL_PEER_VERIFY);
			CHECK_MSG(strstr(tls_conn_error(c.t), "hostname mismatch"), "%s",
				  tls_conn_error(c.t));
		}
		side_free(&s);
		side_free(&c);
		tls_ctx_unref(cli);
	}
	test_end();
}

static void test_mtls(void)
{
	char err[256];
	struct cfg_listen_tls sc = server_cfg(false, true);
	struct cfg_pool_tls cc = client_cfg();
	struct tls_ctx *srv = tls_server_ctx_new(&sc, err, sizeof(err));
	struct tls_ctx *cli = tls_client_ctx_new(&cc, err, sizeof(err));

	test_begin("mtls_refuses_missing_cert");
	CHECK(srv && cli);
	if (srv && cli) {
		CHECK_STR(tls_ctx_subject_header(srv), "X-Client-Subject");
		struct side s = {.t = tls_conn_server(srv)},
			    c = {.t = tls_conn_client(cli, "127.0.0.1")};
		pump(&c, &s);
		CHECK(!tls_conn_established(s.t) || s.last == -EPROTO);
		CHECK_INT(tls_conn_fail(s.t), TLS_FAIL_CLIENT_CERT);
		side_free(&s);
		side_free(&c);
	}
	tls_ctx_unref(srv);
	tls_ctx_unref(cli);
	test_end();
}

static void test_garbage(struct tls_ctx *srv)
{
	test_begin("garbage_is_a_protocol_error");
	struct side s = {.t = tls_conn_server(srv)};
	char tmp[64];
	CHECK(tls_conn_feed(s.t, "GET / HTTP/1.1\r\n\r\n", 18) == 0);
	CHECK_INT(tls_conn_read(s.t, tmp, sizeof(tmp)), -EPROTO);
	CHECK_INT(tls_conn_fail(s.t), TLS_FAIL_PROTOCOL);
	CHECK_MSG(strstr(tls_conn_error(s.t), "plain text"), "%s", tls_conn_error(s.t));
	/* plain text: no alert, the caller answers in text */
	CHECK(tls_conn_plaintext(s.t));
	struct buf out = {0};
	tls_conn_drain(s.t, &out);
	CHECK_INT(out.len, 0);
	buf_free(&out);
	side_free(&s);
	/* binary garbage: an alert, if anything */
	s = (struct side){.t = tls_conn_server(srv)};
	CHECK(tls_conn_feed(s.t, "\x16\x03\x03\x00\x05garbagegarbage", 19) == 0);
	CHECK_INT(tls_conn_read(s.t, tmp, sizeof(tmp)), -EPROTO);
	CHECK_INT(tls_conn_fail(s.t), TLS_FAIL_PROTOCOL);
	CHECK(!tls_conn_plaintext(s.t));
	out = (struct buf){0};
	tls_conn_drain(s.t, &out);
	CHECK_MSG(out.len == 0 || (unsigned char)buf_head(&out)[0] == 0x15, "not an alert");
	buf_free(&out);
	side_free(&s);
	test_end();
}

static void test_shared_ticket_keys(void)
{
	char err[256];
	struct cfg_listen_tls sc = server_cfg(false, false);
	struct cfg_pool_tls cc = client_cfg();

	test_begin("ticket_key_file_shared_by_two_hosts");
	snprintf(sc.ticket_key_file, sizeof(sc.ticket_key_file), "%s", path("tickets.key"));
	sc.session_cache = 0; /* only the ticket can resume */
	struct tls_ctx *a = tls_server_ctx_new(&sc, err, sizeof(err));
	struct tls_ctx *b = tls_server_ctx_new(&sc, err, sizeof(err));
	struct tls_ctx *cli = tls_client_ctx_new(&cc, err, sizeof(err));
	CHECK(a && b && cli);
	if (a && b && cli) {
		struct side s = {.t = tls_conn_server(a)},
			    c = {.t = tls_conn_client(cli, "127.0.0.1")};
		pump(&c, &s);
		CHECK(tls_conn_established(c.t));
		side_free(&s);
		side_free(&c);
		s = (struct side){.t = tls_conn_server(b)};
		c = (struct side){.t = tls_conn_client(cli, "127.0.0.1")};
		pump(&c, &s);
		CHECK_MSG(tls_conn_resumed(s.t), "host b did not resume host a's ticket");
		side_free(&s);
		side_free(&c);
	}
	tls_ctx_unref(a);
	tls_ctx_unref(b);
	tls_ctx_unref(cli);
	test_end();
}

/* One connection from cli to srv; true when it resumed. */
static bool connect_once(struct tls_ctx *srv, struct tls_ctx *cli)
{
	struct side s = {.t = tls_conn_server(srv)}, c = {.t = tls_conn_client(cli, "127.0.0.1")};
	pump(&c, &s);
	bool ok = tls_conn_established(c.t), resumed = ok && tls_conn_resumed(s.t);
	CHECK(ok);
	side_free(&s);
	side_free(&c);
	return resumed;
}

static void test_rotation(void)
{
	char err[256];
	struct cfg_listen_tls sc = server_cfg(false, false);
	struct cfg_pool_tls cc = client_cfg();

	test_begin("ticket_keys_rotate");
	sc.session_cache = 0;
	struct tls_ctx *srv = tls_server_ctx_new(&sc, err, sizeof(err));
	struct tls_ctx *cli = tls_client_ctx_new(&cc, err, sizeof(err));
	CHECK(srv && cli);
	if (srv && cli) {
		connect_once(srv, cli);
		CHECK_MSG(connect_once(srv, cli), "no resumption before a rotation");
		/* the previous key still decrypts, and the ticket is renewed */
		tls_ctx_rotate_tickets(srv);
		CHECK_MSG(connect_once(srv, cli), "a ticket under the previous key was refused");
		CHECK_MSG(connect_once(srv, cli), "the renewed ticket was refused");
		/* two rotations later the key is gone: a full handshake */
		tls_ctx_rotate_tickets(srv);
		tls_ctx_rotate_tickets(srv);
		CHECK_MSG(!connect_once(srv, cli), "a ticket outlived two rotations");
		CHECK_MSG(connect_once(srv, cli), "no resumption after the full handshake");
	}
	tls_ctx_unref(srv);
	tls_ctx_unref(cli);
	test_end();
}

static void test_ctx_errors(void)
{
	char err[512];
	struct cfg_listen_tls sc = server_cfg(false, false);

	test_begin("context_errors_name_the_file");
	snprintf(certs[0].cert, sizeof(certs[0].cert), "%s", path("missing.pem"));
	CHECK(tls_server_ctx_new(&sc, err, sizeof(err)) == NULL);
	CHECK_MSG(strstr(err, "missing.pem"), "%s", err);
	sc = server_cfg(false, false);
	snprintf(certs[0].key, sizeof(certs[0].key), "%s", path("client.key"));
	CHECK(tls_server_ctx_new(&sc, err, sizeof(err)) == NULL);
	CHECK_MSG(strstr(err, "does not match") || strstr(err, "mismatch"), "%s", err);
	sc = server_cfg(false, false);
	snprintf(sc.ticket_key_file, sizeof(sc.ticket_key_file), "%s", path("ca.pem"));
	CHECK(tls_server_ctx_new(&sc, err, sizeof(err)) == NULL);
	CHECK_MSG(strstr(err, "80 bytes"), "%s", err);
	test_end();
}

int main(void)
{
	char err[512];

	if (!make_certs()) {
		test_skip("tls", "the openssl CLI could not make test certificates");
		return test_exit_code();
	}
	struct cfg_listen_tls sc = server_cfg(true, false);
	struct cfg_pool_tls cc = client_cfg();
	struct tls_ctx *srv = tls_server_ctx_new(&sc, err, sizeof(err));
	struct tls_ctx *cli = tls_client_ctx_new(&cc, err, sizeof(err));

	test_begin("contexts");
	CHECK_MSG(srv && cli, "%s", err);
	test_end();
	if (srv && cli) {
		test_handshake(srv, cli);
		test_sni(srv);
		test_garbage(srv);
	}
	tls_ctx_unref(srv);
	tls_ctx_unref(cli);
	test_mtls();
	test_shared_ticket_keys();
	test_rotation();
	test_ctx_errors();

	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return test_exit_code();
}
