/* 50_tls.h — shared by the TLS scenarios (tests/e2e/5x_tls_*.c).
 *
 * Test certificates are made at run time with the openssl CLI in a fresh
 * temporary directory (removed at exit), all ECDSA P-256:
 *   ca          "Reflex Test CA", the issuer of everything below but rogue/foreign
 *   other       "Other CA"
 *   srv         CN www.example.com, SANs www.example.com api.example.com
 *               localhost 127.0.0.1; srv.ocsp is a good OCSP response for it
 *   wild        *.wild.example.net
 *   expired     localhost / 127.0.0.1, expired yesterday
 *   srv2        CN reloaded.example.com (the reload scenario swaps to it)
 *   client      CN client-one, a client certificate from ca
 *   rogue       CN rogue-client, a client certificate from other
 *   foreign     localhost / 127.0.0.1 from other (an upstream nobody trusts)
 *
 * Clients: the openssl CLI (s_client) through tls_sclient(), and a small
 * blocking OpenSSL client (struct tls_cli) for raw byte streams.
 */
#ifndef REFLEX_E2E_TLS_H
#define REFLEX_E2E_TLS_H

#include "lib/harness.h"

#include <ftw.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static char tls_dir[256];

static int tls_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void tls_cleanup(void)
{
	if (tls_dir[0])
		nftw(tls_dir, tls_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Path of a generated file ("srv.pem"): static storage, 8 live at a time. */
static const char *tls_path(const char *name)
{
	static char bufs[8][512];
	static unsigned next;
	char *b = bufs[next++ % 8];

	snprintf(b, 512, "%s/%s", tls_dir, name);
	return b;
}

static const char tls_cert_script[] =
	"set -e\n"
	"cd \"$1\"\n"
	"key() { openssl ecparam -name prime256v1 -genkey -noout -out \"$1.key\"; }\n"
	"ca() { key \"$1\"; openssl req -x509 -new -key \"$1.key\" -subj \"/CN=$2\" -days 2 "
	"-out \"$1.pem\"; }\n"
	"leaf() {\n"
	"  key \"$1\"\n"
	"  openssl req -new -key \"$1.key\" -subj \"/CN=$2\" -out \"$1.csr\"\n"
	"  printf 'subjectAltName=%s\\n' \"$3\" > \"$1.ext\"\n"
	"  [ -z \"$6\" ] || printf 'extendedKeyUsage=clientAuth\\n' >> \"$1.ext\"\n"
	"  openssl x509 -req -in \"$1.csr\" -CA \"$5.pem\" -CAkey \"$5.key\" -CAcreateserial "
	"-days \"$4\" -extfile \"$1.ext\" -out \"$1.pem\" 2>/dev/null\n"
	"}\n"
	"ca ca 'Reflex Test CA'\n"
	"ca other 'Other CA'\n"
	"leaf srv www.example.com "
	"DNS:www.example.com,DNS:api.example.com,DNS:localhost,IP:127.0.0.1 2 ca\n"
	"leaf wild wild.example.net 'DNS:*.wild.example.net' 2 ca\n"
	"leaf expired localhost DNS:localhost,IP:127.0.0.1 -1 ca\n"
	"leaf srv2 reloaded.example.com DNS:www.example.com,DNS:localhost,IP:127.0.0.1 2 ca\n"
	"leaf client client-one DNS:client-one 2 ca client\n"
	"leaf rogue rogue-client DNS:rogue 2 other client\n"
	"leaf foreign localhost DNS:localhost,IP:127.0.0.1 2 other\n"
	/* an OCSP response for srv, signed by the CA */
	"s=$(openssl x509 -in srv.pem -noout -serial | cut -d= -f2)\n"
	"printf 'V\\t301231000000Z\\t\\t%s\\tunknown\\t/CN=www.example.com\\n' \"$s\" > index.txt\n"
	"openssl ocsp -issuer ca.pem -cert srv.pem -reqout ocsp.req -no_nonce >/dev/null 2>&1\n"
	"openssl ocsp -index index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem -reqin ocsp.req "
	"-respout srv.ocsp -ndays 1 >/dev/null 2>&1\n";

/* Make the certificates; false (after a SKIP line naming `what`) when the
 * openssl CLI is missing or fails. */
static bool tls_make_certs(const char *what)
{
	char *out = NULL;
	char tmpl[] = "/tmp/reflex-tls-XXXXXX";

	if (!mkdtemp(tmpl)) {
		test_skip(what, "mkdtemp: %s", strerror(errno));
		return false;
	}
	snprintf(tls_dir, sizeof(tls_dir), "%s", tmpl);
	atexit(tls_cleanup);
	char *argv[] = {"/bin/sh", "-c", (char *)tls_cert_script, "certs", tls_dir, NULL};
	int st = h_run(argv, 60000, &out);
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		test_skip(what, "openssl CLI could not make test certificates: %s",
			  out ? h_excerpt(out, strlen(out), 300) : "no output");
		free(out);
		return false;
	}
	free(out);
	return true;
}

/* Run `input | openssl s_client -connect 127.0.0.1:port ARGS` (ARGS is
 * shell text), stdout and stderr into *out. Returns the exit status. */
static __attribute__((unused)) int tls_sclient(int port, const char *input, const char *args,
					       char **out)
{
	char cmd[4096];

	snprintf(cmd, sizeof(cmd),
		 "printf '%s' | timeout 10 openssl s_client -connect 127.0.0.1:%d %s 2>&1",
		 input ? input : "", port, args);
	char *argv[] = {"/bin/sh", "-c", cmd, NULL};
	return h_run(argv, 15000, out);
}

/* ---- a blocking OpenSSL client ------------------------------------------- */

struct tls_cli {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
};

static void tls_cli_close(struct tls_cli *c)
{
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->ctx)
		SSL_CTX_free(c->ctx);
	if (c->fd >= 0)
		close(c->fd);
	*c = (struct tls_cli){.fd = -1};
}

/* Connect and handshake (verifying against the test CA): 0 or -1. */
static __attribute__((unused)) int tls_cli_open(struct tls_cli *c, int port, const char *sni)
{
	struct timeval tv = {.tv_sec = 10};

	*c = (struct tls_cli){.fd = -1};
	c->fd = h_connect("127.0.0.1", port, 5000);
	if (c->fd < 0)
		return -1;
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	c->ctx = SSL_CTX_new(TLS_client_method());
	if (!c->ctx || SSL_CTX_load_verify_locations(c->ctx, tls_path("ca.pem"), NULL) != 1)
		goto fail;
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	c->ssl = SSL_new(c->ctx);
	if (!c->ssl)
		goto fail;
	SSL_set_fd(c->ssl, c->fd);
	if (sni)
		SSL_set_tlsext_host_name(c->ssl, sni);
	if (SSL_connect(c->ssl) != 1)
		goto fail;
	return 0;
fail:
	ERR_clear_error();
	tls_cli_close(c);
	return -1;
}

static __attribute__((unused)) int tls_cli_send(struct tls_cli *c, const void *p, size_t n)
{
	size_t w;
	return SSL_write_ex(c->ssl, p, n, &w) == 1 && w == n ? 0 : -1;
}

/* Read until want complete responses are in b, the peer closes, or
 * timeout_ms passes. Returns the number of complete final responses. */
static __attribute__((unused)) int tls_cli_read_responses(struct tls_cli *c, struct h_buf *b,
							  int want, unsigned timeout_ms)
{
	double end = h_now_ms() + timeout_ms;
	struct h_raw_resp rs[64];
	int got = 0;

	while (h_now_ms() < end) {
		char tmp[16384];
		size_t n = 0;
		if (SSL_read_ex(c->ssl, tmp, sizeof(tmp), &n) != 1 || n == 0)
			break;
		if (b->len + n + 1 > b->cap) {
			size_t cap = (b->len + n + 1) * 2;
			char *d = realloc(b->data, cap);
			if (!d)
				break;
			b->data = d;
			b->cap = cap;
		}
		memcpy(b->data + b->len, tmp, n);
		b->len += n;
		b->data[b->len] = 0;
		int k = h_parse_responses(b->data, b->len, rs, 64, NULL);
		got = 0;
		for (int i = 0; i < k; i++)
			if (rs[i].complete && rs[i].status >= 200)
				got++;
		h_raw_resp_free(rs, k);
		if (got >= want)
			break;
	}
	ERR_clear_error();
	return got;
}

/* ---- libcurl over TLS (the harness's h_http speaks plain HTTP) ------------ */

#include <curl/curl.h>

struct tls_get {
	int rc; /* CURLcode */
	char err[CURL_ERROR_SIZE];
	long status;
	char *body; /* up to 1 MiB kept, NUL-terminated */
	size_t len;
	uint64_t bytes, hash; /* everything received: count and FNV-1a */
	char *hdrs;
	size_t hlen;
	long connects;
	double t_first_ms, t_last_ms; /* body arrival (h_now_ms) */
	unsigned pieces;
};

struct tls_opt {
	const char *resolve;	/* "name:port:127.0.0.1" */
	const char *cert, *key; /* client certificate */
	const char *const *headers;
	const char *method;
	uint64_t upload; /* bytes of the origin pattern to POST */
	bool tls12;	 /* cap at TLS 1.2 */
	long timeout_ms;
};

static size_t tls_on_body(char *p, size_t sz, size_t n, void *arg)
{
	struct tls_get *g = arg;
	size_t len = sz * n;
	double now = h_now_ms();

	if (!g->pieces++)
		g->t_first_ms = now;
	g->t_last_ms = now;
	g->bytes += len;
	g->hash = h_fnv1a(g->hash, p, len);
	if (g->len + len < (1u << 20)) {
		char *b = realloc(g->body, g->len + len + 1);
		if (!b)
			return 0;
		g->body = b;
		memcpy(b + g->len, p, len);
		g->len += len;
		b[g->len] = 0;
	}
	return len;
}

static size_t tls_on_header(char *p, size_t sz, size_t n, void *arg)
{
	struct tls_get *g = arg;
	size_t len = sz * n;
	char *b = realloc(g->hdrs, g->hlen + len + 1);

	if (!b)
		return 0;
	g->hdrs = b;
	memcpy(b + g->hlen, p, len);
	g->hlen += len;
	b[g->hlen] = 0;
	return len;
}

struct tls_upload {
	uint64_t off, total;
};

static size_t tls_on_read(char *p, size_t sz, size_t n, void *arg)
{
	struct tls_upload *u = arg;
	size_t len = sz * n;

	if (len > u->total - u->off)
		len = (size_t)(u->total - u->off);
	h_pattern_fill(p, len, u->off);
	u->off += len;
	return len;
}

static __attribute__((unused)) void tls_get_free(struct tls_get *g)
{
	free(g->body);
	free(g->hdrs);
	*g = (struct tls_get){0};
}

/* One request on handle c (kept: a reused handle reuses its connection). */
static int tls_curl(CURL *c, const char *url, const struct tls_opt *o, struct tls_get *g)
{
	struct curl_slist *res = NULL, *hdrs = NULL;
	struct tls_upload up = {0, o ? o->upload : 0};

	*g = (struct tls_get){.hash = H_FNV_INIT};
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CAINFO, tls_path("ca.pem"));
	curl_easy_setopt(c, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tls_on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, g);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, tls_on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, g);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, g->err);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, o && o->timeout_ms ? o->timeout_ms : 10000L);
	if (o && o->resolve) {
		res = curl_slist_append(NULL, o->resolve);
		curl_easy_setopt(c, CURLOPT_RESOLVE, res);
	}
	if (o && o->cert) {
		curl_easy_setopt(c, CURLOPT_SSLCERT, o->cert);
		curl_easy_setopt(c, CURLOPT_SSLKEY, o->key);
	}
	if (o && o->tls12)
		curl_easy_setopt(c, CURLOPT_SSLVERSION,
				 (long)(CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2));
	for (const char *const *h = o && o->headers ? o->headers : NULL; h && *h; h++)
		hdrs = curl_slist_append(hdrs, *h);
	if (o && o->upload) {
		hdrs = curl_slist_append(hdrs, "Expect:");
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, tls_on_read);
		curl_easy_setopt(c, CURLOPT_READDATA, &up);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->upload);
	}
	if (o && o->method)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, o->method);
	if (hdrs)
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	g->rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &g->status);
	curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &g->connects);
	curl_slist_free_all(res);
	curl_slist_free_all(hdrs);
	return g->rc == CURLE_OK ? 0 : -1;
}

/* A fresh handle per call. */
static __attribute__((unused)) int tls_curl1(const char *url, const struct tls_opt *o,
					     struct tls_get *g)
{
	CURL *c = curl_easy_init();
	int rc;

	if (!c) {
		*g = (struct tls_get){.rc = -1};
		return -1;
	}
	rc = tls_curl(c, url, o, g);
	curl_easy_cleanup(c);
	return rc;
}

#endif
