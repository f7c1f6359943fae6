#include "core/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/config.h"

/* Mozilla "intermediate" (v5.7) without the DHE suites: ECDHE only. */
#define TLS12_CIPHERS                                                \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define TLS_GROUPS "X25519:P-256:P-384"

/* The session id context until tls_server_ctx_new sets the listener's own
 * (sid_ctx_set): sessions are only resumed by reflexd listeners. */
static const unsigned char sid_ctx[] = "reflex";

#define TICKET_KEY_LEN 80 /* name 16 + HMAC 32 + AES 32: nginx's 80-byte format */
#define TICKET_KEYS_MAX 4 /* [0] encrypts; all decrypt */
#define CLIENT_SESSION_SLOTS 64
#define SUBJECT_MAX 1024

struct ticket_key {
	unsigned char name[16], hmac[32], aes[32];
};

struct sni_name {
	char *name;    /* lower case; "*.example.com" for a wildcard */
	unsigned cert; /* index into tls_ctx.certs */
};

struct cert_ctx {
	SSL_CTX *ssl;
	unsigned char *ocsp; /* DER OCSP response to staple, or NULL */
	size_t ocsp_len;
};

struct client_session {
	char host[CFG_HOST_MAX];
	SSL_SESSION *sess;
};

struct tls_ctx {
	unsigned refs; /* atomic */
	bool server;
	bool verify; /* client side */
	char sni[CFG_HOST_MAX];

	/* server: certs[0] is the default; the SNI callback switches to others */
	struct cert_ctx *certs;
	unsigned n_certs;
	struct sni_name *names;
	unsigned n_names;
	char subject_header[CFG_NAME_MAX]; /* "" when no client certificates are asked */

	/* ticket keys, shared by every worker: the lock is taken once per full
	 * handshake or resumption, never per record */
	pthread_mutex_t lock;
	struct ticket_key keys[TICKET_KEYS_MAX];
	unsigned n_keys;
	uint64_t rotate_ns, next_rotate_ns;
	char key_file[CFG_PATH_MAX];

	/* client: the latest session per upstream name (slot by hash) */
	SSL_CTX *client;
	struct client_session sessions[CLIENT_SESSION_SLOTS];
};

struct tls_conn {
	SSL *ssl;
	BIO *rbio, *wbio;
	struct tls_ctx *ctx;
	enum tls_fail fail;
	bool unknown_sni;
	bool was_up; /* the handshake finished once */
	bool subject_done;
	bool plaintext;		/* server: the failed first flight was plain text */
	unsigned char first[8]; /* server: the first bytes received */
	unsigned first_len;
	char *subject;
	char host[CFG_HOST_MAX]; /* client: the name sessions are kept under */
	char error[256];
};

static int tls_conn_index = -1; /* SSL ex_data slot: the tls_conn */
static int tls_ctx_index = -1;	/* SSL_CTX ex_data slot: the tls_ctx */
/* fetched once: OpenSSL 3 looks a cipher up by name on every implicit use */
static EVP_CIPHER *ticket_cipher;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init_once(void)
{
	tls_conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	tls_ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* "what: OpenSSL's reason" into err; clears the thread's error queue. */
static void __attribute__((format(printf, 3, 4)))
ssl_err(char *err, size_t errlen, const char *fmt, ...)
{
	unsigned long e = ERR_peek_last_error();
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	if (e && n >= 0 && (size_t)n < errlen) {
		const char *r = ERR_reason_error_string(e);
		snprintf(err + n, errlen - (size_t)n, ": %s", r ? r : "unknown error");
	}
	ERR_clear_error();
}

/* ---- ticket keys ----------------------------------------------------------- */

static int read_key_file(const char *path, struct ticket_key *keys, unsigned *n, char *err,
			 size_t errlen)
{
	unsigned char raw[TICKET_KEY_LEN * TICKET_KEYS_MAX + 1];
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		snprintf(err, errlen, "tickets.key_file %s: %s", path, strerror(errno));
		return -1;
	}
	while (got < sizeof(raw)) {
		ssize_t r = read(fd, raw + got, sizeof(raw) - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	if (got == 0 || got % TICKET_KEY_LEN || got > TICKET_KEY_LEN * TICKET_KEYS_MAX) {
		snprintf(err, errlen,
			 "tickets.key_file %s: must hold 1 to %d keys of %d bytes "
			 "(openssl rand %d > FILE), has %zu bytes",
			 path, TICKET_KEYS_MAX, TICKET_KEY_LEN, TICKET_KEY_LEN, got);
		return -1;
	}
	*n = (unsigned)(got / TICKET_KEY_LEN);
	for (unsigned i = 0; i < *n; i++) {
		const unsigned char *k = raw + i * TICKET_KEY_LEN;
		memcpy(keys[i].name, k, 16);
		memcpy(keys[i].hmac, k + 16, 32);
		memcpy(keys[i].aes, k + 48, 32);
	}
	OPENSSL_cleanse(raw, sizeof(raw));
	return 0;
}

/* Called with the lock held. Generated keys: a new one encrypts, the
 * previous one still decrypts (so a ticket lives one to two periods). A key
 * file: re-read, so hosts sharing it rotate together; if the file went bad
 * the keys in use stay. */
static void rotate_keys(struct tls_ctx *t, uint64_t now)
{
	t->next_rotate_ns = now + t->rotate_ns;
	if (t->key_file[0]) {
		struct ticket_key keys[TICKET_KEYS_MAX];
		unsigned n;
		char err[256];
		if (read_key_file(t->key_file, keys, &n, err, sizeof(err)) == 0) {
			memcpy(t->keys, keys, sizeof(keys));
			t->n_keys = n;
		}
		OPENSSL_cleanse(keys, sizeof(keys));
		return;
	}
	memmove(&t->keys[1], &t->keys[0], sizeof(t->keys[0]));
	if (RAND_bytes((unsigned char *)&t->keys[0], sizeof(t->keys[0])) != 1) {
		memmove(&t->keys[0], &t->keys[1], sizeof(t->keys[0])); /* keep the old one */
		ERR_clear_error();
		return;
	}
	t->n_keys = t->n_keys ? 2 : 1;
}

static int on_ticket_key(SSL *s, unsigned char key_name[16], unsigned char *iv,
			 EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc)
{
	struct tls_ctx *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), tls_ctx_index);
	struct ticket_key k;
	int rc = 1;
	uint64_t now = mono_ns();

	if (!t || !ticket_cipher)
		return -1;
	pthread_mutex_lock(&t->lock);
	if (now >= t->next_rotate_ns)
		rotate_keys(t, now);
	if (!t->n_keys) {
		pthread_mutex_unlock(&t->lock);
		return enc ? -1 : 0;
	}
	if (enc) {
		k = t->keys[0];
	} else {
		unsigned i;
		for (i = 0; i < t->n_keys; i++)
			if (!memcmp(t->keys[i].name, key_name, 16))
				break;
		if (i == t->n_keys) {
			pthread_mutex_unlock(&t->lock);
			return 0; /* unknown key: full handshake */
		}
		k = t->keys[i];
		/* 2: accept and issue a new ticket. Always in TLS 1.3, whose
		 * clients use a ticket once: without a new one the next
		 * connection would be a full handshake. In 1.2 only when the
		 * ticket is under an old key. */
		rc = i == 0 && SSL_version(s) != TLS1_3_VERSION ? 1 : 2;
	}
	pthread_mutex_unlock(&t->lock);

	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof(k.hmac)),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	if (enc) {
		memcpy(key_name, k.name, 16);
		if (RAND_bytes(iv, 16) != 1 ||
		    !EVP_EncryptInit_ex(ectx, ticket_cipher, NULL, k.aes, iv))
			rc = -1;
	} else if (!EVP_DecryptInit_ex(ectx, ticket_cipher, NULL, k.aes, iv)) {
		rc = -1;
	}
	if (rc > 0 && !EVP_MAC_CTX_set_params(hctx, params))
		rc = -1;
	OPENSSL_cleanse(&k, sizeof(k));
	return rc;
}

/* ---- server contexts ------------------------------------------------------- */

static int on_alpn(SSL *s, const unsigned char **out, unsigned char *outlen,
		   const unsigned char *in, unsigned inlen, void *arg)
{
	for (unsigned i = 0; i < inlen;) {
		unsigned n = in[i];
		if (i + 1 + n > inlen)
			break;
		if (n == 8 && !memcmp(in + i + 1, "http/1.1", 8)) {
			*out = in + i + 1;
			*outlen = 8;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + n;
	}
	/* Only other protocols offered (h2 alone): go on without ALPN; the
	 * client then speaks HTTP/1.1 or gives up on its own. */
	return SSL_TLSEXT_ERR_NOACK;
}

static bool name_matches(const char *pattern, const char *name)
{
	if (pattern[0] == '*' && pattern[1] == '.') {
		const char *dot = strchr(name, '.');
		/* one label only: "*.example.com" matches a.example.com, not
		 * example.com nor a.b.example.com */
		return dot && dot != name && !strcasecmp(dot + 1, pattern + 2);
	}
	return !strcasecmp(pattern, name);
}

static int on_servername(SSL *s, int *al, void *arg)
{
	struct tls_ctx *t = arg;
	struct tls_conn *c = SSL_get_ex_data(s, tls_conn_index);
	const char *name = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
	int found = -1;

	if (!name || !*name)
		return SSL_TLSEXT_ERR_OK;
	/* exact names first, then wildcards */
	for (unsigned pass = 0; pass < 2 && found < 0; pass++)
		for (unsigned i = 0; i < t->n_names && found < 0; i++) {
			bool wild = t->names[i].name[0] == '*';
			if (wild == (pass == 1) && name_matches(t->names[i].name, name))
				found = (int)t->names[i].cert;
		}
	if (found < 0) {
		if (c)
			c->unknown_sni = true;
		return SSL_TLSEXT_ERR_OK;
	}
	if (found > 0 && !SSL_set_SSL_CTX(s, t->certs[found].ssl))
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	return SSL_TLSEXT_ERR_OK;
}

static int on_status(SSL *s, void *arg)
{
	struct cert_ctx *cc = arg;
	unsigned char *copy;

	if (!cc || !cc->ocsp)
		return SSL_TLSEXT_ERR_NOACK;
	copy = OPENSSL_memdup(cc->ocsp, cc->ocsp_len);
	if (!copy)
		return SSL_TLSEXT_ERR_NOACK;
	if (!SSL_set_tlsext_status_ocsp_resp(s, copy, (long)cc->ocsp_len)) {
		OPENSSL_free(copy);
		return SSL_TLSEXT_ERR_NOACK;
	}
	return SSL_TLSEXT_ERR_OK;
}

static void common_settings(SSL_CTX *s)
{
	SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(s, TLS1_3_VERSION);
	/* IGNORE_UNEXPECTED_EOF: a FIN without close_notify is an ordinary
	 * EOF to us; HTTP framing says whether a message was complete. */
	SSL_CTX_set_options(s, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
				       SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_clear_options(s, SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* Idle keep-alive connections give their 2×16 KiB record buffers back.
	 * NO_AUTO_CHAIN: send the chain the certificate file holds, as nginx
	 * does, instead of building one from the verify store on every
	 * handshake (with a leaf-only file that was an X509_verify_cert per
	 * full handshake, and with a client_ca store a chain from it). */
	SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN);
	SSL_CTX_set_max_early_data(s, 0);
	SSL_CTX_set_recv_max_early_data(s, 0);
}

/* A clearer reason than OpenSSL's "system lib" for the common mistake. */
static int readable(const char *what, const char *path, char *err, size_t errlen)
{
	if (access(path, R_OK) == 0)
		return 0;
	snprintf(err, errlen, "tls: %s %s: %s", what, path, strerror(errno));
	return -1;
}

static int load_file(const char *path, unsigned char **out, size_t *len, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rbe");
	unsigned char *p = NULL;
	long n;

	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fseek(f, 0, SEEK_END) || (n = ftell(f)) <= 0 || n > (1 << 20) ||
	    fseek(f, 0, SEEK_SET) || !(p = malloc((size_t)n)) ||
	    fread(p, 1, (size_t)n, f) != (size_t)n) {
		snprintf(err, errlen, "%s: empty, unreadable or larger than 1 MiB", path);
		free(p);
		fclose(f);
		return -1;
	}
	fclose(f);
	*out = p;
	*len = (size_t)n;
	return 0;
}

static int add_name(struct tls_ctx *t, const char *name, size_t len, unsigned cert)
{
	struct sni_name *arr = realloc(t->names, (t->n_names + 1) * sizeof(*arr));
	char *copy;

	if (!arr)
		return -1;
	t->names = arr;
	copy = strndup(name, len);
	if (!copy)
		return -1;
	for (char *q = copy; *q; q++)
		if (*q >= 'A' && *q <= 'Z')
			*q = (char)(*q - 'A' + 'a');
	arr[t->n_names++] = (struct sni_name){.name = copy, .cert = cert};
	return 0;
}

/* The DNS names a certificate is for: its subjectAltName DNS entries, or
 * its common name when it has none. */
static int cert_names(struct tls_ctx *t, X509 *x, unsigned cert)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	int rc = 0, n_dns = 0;

	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type != GEN_DNS)
			continue;
		const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
		int len = ASN1_STRING_length(g->d.dNSName);
		if (len > 0 && len < CFG_HOST_MAX && !memchr(d, 0, (size_t)len)) {
			n_dns++;
			if (add_name(t, (const char *)d, (size_t)len, cert))
				rc = -1;
		}
	}
	GENERAL_NAMES_free(gens);
	if (n_dns || rc)
		return rc;
	char cn[CFG_HOST_MAX];
	int len =
		X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
	return len > 0 ? add_name(t, cn, (size_t)len, cert) : 0;
}

static SSL_CTX *new_server_ssl(struct tls_ctx *t, const struct cfg_listen_tls *cfg,
			       const struct cfg_tls_cert *cc, struct cert_ctx *out, char *err,
			       size_t errlen)
{
	SSL_CTX *s = SSL_CTX_new(TLS_server_method());

	if (!s) {
		ssl_err(err, errlen, "tls: cannot create a context");
		return NULL;
	}
	common_settings(s);
	if (!SSL_CTX_set_cipher_list(s, TLS12_CIPHERS) ||
	    !SSL_CTX_set_ciphersuites(s, TLS13_SUITES) ||
	    !SSL_CTX_set1_groups_list(s, TLS_GROUPS)) {
		ssl_err(err, errlen, "tls: cipher settings");
		goto fail;
	}
	if (readable("cert", cc->cert, err, errlen) || readable("key", cc->key, err, errlen))
		goto fail;
	if (SSL_CTX_use_certificate_chain_file(s, cc->cert) != 1) {
		ssl_err(err, errlen, "tls: cert %s", cc->cert);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(s, cc->key, SSL_FILETYPE_PEM) != 1) {
		ssl_err(err, errlen, "tls: key %s", cc->key);
		goto fail;
	}
	if (SSL_CTX_check_private_key(s) != 1) {
		ssl_err(err, errlen, "tls: key %s does not match cert %s", cc->key, cc->cert);
		goto fail;
	}
	if (cc->ocsp[0]) {
		if (load_file(cc->ocsp, &out->ocsp, &out->ocsp_len, err, errlen))
			goto fail;
		SSL_CTX_set_tlsext_status_cb(s, on_status);
		SSL_CTX_set_tlsext_status_arg(s, out);
	}
	SSL_CTX_set_alpn_select_cb(s, on_alpn, NULL);
	SSL_CTX_set_session_id_context(s, sid_ctx, sizeof(sid_ctx) - 1);
	if (cfg->session_cache) {
		SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_SERVER);
		SSL_CTX_sess_set_cache_size(s, (long)cfg->session_cache);
	} else {
		SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
	}
	/* a session outlives neither its ticket key (two rotation periods) nor a day */
	uint64_t life = (uint64_t)cfg->ticket_rotate / 1000;
	SSL_CTX_set_timeout(s, (long)(life && life < 86400 ? life : 86400));
	SSL_CTX_set_tlsext_ticket_key_evp_cb(s, on_ticket_key);
	SSL_CTX_set_num_tickets(s, 1);
	if (cfg->client_ca[0]) {
		if (readable("client_ca", cfg->client_ca, err, errlen))
			goto fail;
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->client_ca);
		if (!names || SSL_CTX_load_verify_locations(s, cfg->client_ca, NULL) != 1) {
			sk_X509_NAME_pop_free(names, X509_NAME_free);
			ssl_err(err, errlen, "tls: client_ca %s", cfg->client_ca);
			goto fail;
		}
		SSL_CTX_set_client_CA_list(s, names);
		SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	}
	SSL_CTX_set_ex_data(s, tls_ctx_index, t);
	out->ssl = s;
	return s;
fail:
	SSL_CTX_free(s);
	return NULL;
}

/* A listener's session id context: SHA-256 of its certificates and of
 * whether and against which CA names it verifies clients (nginx hashes the
 * same). OpenSSL resumes a session (id or ticket) only in the context that
 * made it, so a ticket from a listener without client_ca, or with another
 * CA, is not resumed on an mTLS listener even when both share a
 * tickets.key_file: it would skip the client certificate check. Listeners
 * (and reloads) with the same certificates and settings share it. */
static int sid_ctx_set(struct tls_ctx *t, const struct cfg_listen_tls *cfg)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	EVP_MD_CTX *h = EVP_MD_CTX_new();
	int ok = h && EVP_DigestInit_ex(h, EVP_sha256(), NULL) &&
		 EVP_DigestUpdate(h, "reflex-sid-1", 12) &&
		 EVP_DigestUpdate(h, cfg->client_ca[0] ? "V" : "-", 1);

	for (unsigned i = 0; ok && i < t->n_certs; i++) {
		unsigned char *der = NULL;
		int n = i2d_X509(SSL_CTX_get0_certificate(t->certs[i].ssl), &der);
		ok = n > 0 && EVP_DigestUpdate(h, der, (size_t)n);
		OPENSSL_free(der);
	}
	STACK_OF(X509_NAME) *names = SSL_CTX_get_client_CA_list(t->certs[0].ssl);
	for (int i = 0; ok && names && i < sk_X509_NAME_num(names); i++) {
		unsigned char *der = NULL;
		int n = i2d_X509_NAME(sk_X509_NAME_value(names, i), &der);
		ok = n > 0 && EVP_DigestUpdate(h, der, (size_t)n);
		OPENSSL_free(der);
	}
	ok = ok && EVP_DigestFinal_ex(h, md, &mdlen);
	EVP_MD_CTX_free(h);
	if (mdlen > SSL_MAX_SID_CTX_LENGTH)
		mdlen = SSL_MAX_SID_CTX_LENGTH;
	for (unsigned i = 0; ok && i < t->n_certs; i++)
		ok = SSL_CTX_set_session_id_context(t->certs[i].ssl, md, mdlen);
	return ok ? 0 : -1;
}

static struct tls_ctx *ctx_alloc(bool server)
{
	struct tls_ctx *t;

	pthread_once(&once, init_once);
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->refs = 1;
	t->server = server;
	pthread_mutex_init(&t->lock, NULL);
	return t;
}

struct tls_ctx *tls_server_ctx_new(const struct cfg_listen_tls *cfg, char *err, size_t errlen)
{
	struct tls_ctx *t = ctx_alloc(true);

	if (!t) {
		snprintf(err, errlen, "tls: out of memory");
		return NULL;
	}
	if (!cfg->n_certs) {
		snprintf(err, errlen, "tls: no certificate");
		goto fail;
	}
	t->certs = calloc(cfg->n_certs, sizeof(*t->certs));
	if (!t->certs) {
		snprintf(err, errlen, "tls: out of memory");
		goto fail;
	}
	t->n_certs = cfg->n_certs;
	for (unsigned i = 0; i < cfg->n_certs; i++) {
		if (!new_server_ssl(t, cfg, &cfg->certs[i], &t->certs[i], err, errlen))
			goto fail;
		if (cert_names(t, SSL_CTX_get0_certificate(t->certs[i].ssl), i)) {
			snprintf(err, errlen, "tls: out of memory");
			goto fail;
		}
	}
	if (sid_ctx_set(t, cfg)) {
		ssl_err(err, errlen, "tls: session id context");
		goto fail;
	}
	SSL_CTX_set_tlsext_servername_callback(t->certs[0].ssl, on_servername);
	SSL_CTX_set_tlsext_servername_arg(t->certs[0].ssl, t);
	if (cfg->client_ca[0])
		snprintf(t->subject_header, sizeof(t->subject_header), "%s",
			 cfg->client_subject_header);
	t->rotate_ns = (uint64_t)cfg->ticket_rotate * 1000000ull;
	snprintf(t->key_file, sizeof(t->key_file), "%s", cfg->ticket_key_file);
	if (t->key_file[0] && read_key_file(t->key_file, t->keys, &t->n_keys, err, errlen))
		goto fail;
	if (!t->key_file[0])
		rotate_keys(t, mono_ns());
	t->next_rotate_ns = mono_ns() + t->rotate_ns;
	if (!t->n_keys) {
		snprintf(err, errlen, "tls: no random bytes for ticket keys");
		goto fail;
	}
	return t;
fail:
	tls_ctx_unref(t);
	return NULL;
}

/* ---- client contexts ------------------------------------------------------- */

static unsigned slot_of(const char *host)
{
	uint32_t h = 2166136261u;

	for (const char *p = host; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h % CLIENT_SESSION_SLOTS;
}

/* A new session from an upstream: keep it as the one to offer next time.
 * In TLS 1.3 it arrives after the handshake, with the first records. */
static int on_new_session(SSL *s, SSL_SESSION *sess)
{
	struct tls_conn *c = SSL_get_ex_data(s, tls_conn_index);
	struct tls_ctx *t = c ? c->ctx : NULL;
	struct client_session *slot;
	SSL_SESSION *old;

	if (!t || !c->host[0])
		return 0;
	slot = &t->sessions[slot_of(c->host)];
	pthread_mutex_lock(&t->lock);
	old = slot->sess;
	slot->sess = sess; /* returning 1 hands us the reference */
	snprintf(slot->host, sizeof(slot->host), "%s", c->host);
	pthread_mutex_unlock(&t->lock);
	SSL_SESSION_free(old);
	return 1;
}

struct tls_ctx *tls_client_ctx_new(const struct cfg_pool_tls *cfg, char *err, size_t errlen)
{
	struct tls_ctx *t = ctx_alloc(false);
	SSL_CTX *s;

	if (!t) {
		snprintf(err, errlen, "tls: out of memory");
		return NULL;
	}
	t->verify = cfg->verify;
	snprintf(t->sni, sizeof(t->sni), "%s", cfg->sni);
	s = t->client = SSL_CTX_new(TLS_client_method());
	if (!s) {
		ssl_err(err, errlen, "tls: cannot create a context");
		goto fail;
	}
	common_settings(s);
	if (!SSL_CTX_set_cipher_list(s, TLS12_CIPHERS) ||
	    !SSL_CTX_set_ciphersuites(s, TLS13_SUITES) ||
	    !SSL_CTX_set1_groups_list(s, TLS_GROUPS) ||
	    SSL_CTX_set_alpn_protos(s, (const unsigned char *)"\x08http/1.1", 9) != 0) {
		ssl_err(err, errlen, "tls: cipher settings");
		goto fail;
	}
	if (cfg->ca[0]) {
		if (readable("ca", cfg->ca, err, errlen))
			goto fail;
		if (SSL_CTX_load_verify_locations(s, cfg->ca, NULL) != 1) {
			ssl_err(err, errlen, "tls: ca %s", cfg->ca);
			goto fail;
		}
	} else if (SSL_CTX_set_default_verify_paths(s) != 1) {
		ssl_err(err, errlen, "tls: the system CA store");
		goto fail;
	}
	SSL_CTX_set_verify(s, cfg->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(s, on_new_session);
	SSL_CTX_set_ex_data(s, tls_ctx_index, t);
	return t;
fail:
	tls_ctx_unref(t);
	return NULL;
}

void tls_ctx_rotate_tickets(struct tls_ctx *t)
{
	if (!t || !t->server)
		return;
	pthread_mutex_lock(&t->lock);
	rotate_keys(t, mono_ns());
	pthread_mutex_unlock(&t->lock);
}

void tls_ctx_ref(struct tls_ctx *t)
{
	__atomic_add_fetch(&t->refs, 1, __ATOMIC_RELAXED);
}

void tls_ctx_unref(struct tls_ctx *t)
{
	if (!t || __atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (unsigned i = 0; i < t->n_certs; i++) {
		SSL_CTX_free(t->certs[i].ssl);
		free(t->certs[i].ocsp);
	}
	free(t->certs);
	for (unsigned i = 0; i < t->n_names; i++)
		free(t->names[i].name);
	free(t->names);
	SSL_CTX_free(t->client);
	for (unsigned i = 0; i < CLIENT_SESSION_SLOTS; i++)
		SSL_SESSION_free(t->sessions[i].sess);
	OPENSSL_cleanse(t->keys, sizeof(t->keys));
	pthread_mutex_destroy(&t->lock);
	free(t);
}

const char *tls_ctx_subject_header(const struct tls_ctx *t)
{
	return t && t->subject_header[0] ? t->subject_header : NULL;
}

/* ---- connections ----------------------------------------------------------- */

/* SSL_get_error() needs an empty error queue before the call it judges. It
 * is empty nearly always (every failure path here clears it), and
 * ERR_clear_error() is not free in OpenSSL 3.0 (it walks and frees all 16
 * slots): ~0.4 us a call, three calls per proxied request. Peeking is a
 * thread-local lookup. */
static inline void err_clear(void)
{
	if (ERR_peek_error())
		ERR_clear_error();
}

const char *tls_conn_subject_header(const struct tls_conn *c)
{
	return tls_ctx_subject_header(c->ctx);
}

static struct tls_conn *conn_new(struct tls_ctx *ctx, SSL_CTX *s)
{
	struct tls_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->ssl = SSL_new(s);
	c->rbio = BIO_new(BIO_s_mem());
	c->wbio = BIO_new(BIO_s_mem());
	if (!c->ssl || !c->rbio || !c->wbio) {
		SSL_free(c->ssl);
		BIO_free(c->rbio);
		BIO_free(c->wbio);
		free(c);
		ERR_clear_error();
		return NULL;
	}
	/* an empty memory BIO means "try again", never EOF */
	BIO_set_mem_eof_return(c->rbio, -1);
	BIO_set_mem_eof_return(c->wbio, -1);
	SSL_set_bio(c->ssl, c->rbio, c->wbio);
	SSL_set_ex_data(c->ssl, tls_conn_index, c);
	tls_ctx_ref(ctx);
	c->ctx = ctx;
	return c;
}

struct tls_conn *tls_conn_server(struct tls_ctx *ctx)
{
	struct tls_conn *c = conn_new(ctx, ctx->certs[0].ssl);

	if (c)
		SSL_set_accept_state(c->ssl);
	return c;
}

static bool is_ip(const char *h)
{
	unsigned char tmp[16];
	return inet_pton(AF_INET, h, tmp) == 1 || inet_pton(AF_INET6, h, tmp) == 1;
}

struct tls_conn *tls_conn_client(struct tls_ctx *ctx, const char *host)
{
	struct tls_conn *c = conn_new(ctx, ctx->client);
	char name[CFG_HOST_MAX];

	if (!c)
		return NULL;
	/* "name:port", "[v6]:port" → name */
	const char *h = ctx->sni[0] ? ctx->sni : host;
	size_t n = strlen(h);
	if (!ctx->sni[0]) {
		if (h[0] == '[') {
			const char *e = strchr(h, ']');
			h++;
			n = e ? (size_t)(e - h) : strlen(h);
		} else {
			const char *colon = strrchr(h, ':');
			if (colon && colon == strchr(h, ':'))
				n = (size_t)(colon - h);
		}
	}
	if (n >= sizeof(name))
		n = sizeof(name) - 1;
	memcpy(name, h, n);
	name[n] = 0;
	snprintf(c->host, sizeof(c->host), "%s", name);
	SSL_set_connect_state(c->ssl);
	if (is_ip(name)) {
		if (ctx->verify)
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name);
	} else {
		SSL_set_tlsext_host_name(c->ssl, name);
		if (ctx->verify)
			SSL_set1_host(c->ssl, name);
	}
	struct client_session *slot = &ctx->sessions[slot_of(name)];
	pthread_mutex_lock(&ctx->lock);
	if (slot->sess && !strcmp(slot->host, name))
		SSL_set_session(c->ssl, slot->sess);
	pthread_mutex_unlock(&ctx->lock);
	ERR_clear_error();
	return c;
}

void tls_conn_free(struct tls_conn *c)
{
	if (!c)
		return;
	/* An HTTP connection often ends with a FIN and no close_notify (an
	 * upstream closing a keep-alive connection, a client going away):
	 * that must not cost the session its resumption, which OpenSSL
	 * withdraws from a connection freed "unclean". Failed ones lose it. */
	if (!c->fail && SSL_is_init_finished(c->ssl))
		SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(c->ssl); /* frees the BIOs */
	tls_ctx_unref(c->ctx);
	free(c->subject);
	free(c);
}

int tls_conn_feed(struct tls_conn *c, const void *data, size_t len)
{
	if (c->first_len < sizeof(c->first) && !c->was_up) {
		size_t k = sizeof(c->first) - c->first_len;
		k = k < len ? k : len;
		memcpy(c->first + c->first_len, data, k);
		c->first_len += (unsigned)k;
	}
	while (len) {
		int chunk = len > (1u << 30) ? 1 << 30 : (int)len;
		int n = BIO_write(c->rbio, data, chunk);
		if (n <= 0) {
			ERR_clear_error();
			return -ENOMEM;
		}
		data = (const char *)data + n;
		len -= (size_t)n;
	}
	return 0;
}

static enum tls_fail classify(struct tls_conn *c, unsigned long e)
{
	int lib = ERR_GET_LIB(e), r = ERR_GET_REASON(e);

	if (lib != ERR_LIB_SSL)
		return r == ERR_R_MALLOC_FAILURE ? TLS_FAIL_INTERNAL : TLS_FAIL_PROTOCOL;
	switch (r) {
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_VERSION_TOO_LOW:
	case SSL_R_VERSION_TOO_HIGH:
	case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
	case SSL_R_UNSUPPORTED_SSL_VERSION:
	case SSL_R_NO_PROTOCOLS_AVAILABLE:
		return TLS_FAIL_VERSION;
	case SSL_R_NO_SHARED_CIPHER:
	case SSL_R_NO_SHARED_GROUPS:
	case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
	case SSL_R_NO_CIPHERS_AVAILABLE:
		return TLS_FAIL_CIPHER;
	case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
		/* the peer's verdict: during a handshake most likely nothing
		 * in common; afterwards (a refused renegotiation) a protocol matter */
		return c->was_up ? TLS_FAIL_PROTOCOL : TLS_FAIL_CIPHER;
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
	case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
		return TLS_FAIL_CLIENT_CERT;
	case SSL_R_CERTIFICATE_VERIFY_FAILED:
		return SSL_is_server(c->ssl) ? TLS_FAIL_CLIENT_CERT : TLS_FAIL_PEER_VERIFY;
	default:
		return TLS_FAIL_PROTOCOL;
	}
}

/* A server connection's first bytes are a text command ("GET ", "DELETE
 * ") rather than a TLS record (0x14..0x17) or an SSLv2 hello (0x80..):
 * someone speaks plaintext to a TLS port. OpenSSL itself recognizes only
 * four such words. */
static bool first_is_text(const struct tls_conn *c)
{
	unsigned i = 0;

	while (i < c->first_len && c->first[i] >= 'A' && c->first[i] <= 'Z')
		i++;
	return i >= 3 && i < c->first_len && c->first[i] == ' ';
}

/* Record a fatal error from the last SSL call's result. */
static int fatal(struct tls_conn *c, int ret)
{
	int se = SSL_get_error(c->ssl, ret);
	unsigned long e = ERR_peek_last_error();
	const char *why;

	if (SSL_is_server(c->ssl) && !c->was_up && first_is_text(c)) {
		/* no alert: the peer reads text, and the caller answers in it */
		(void)BIO_reset(c->wbio);
		c->plaintext = true;
		c->fail = TLS_FAIL_PROTOCOL;
		snprintf(c->error, sizeof(c->error), "plain text (HTTP?) sent to a TLS port");
		ERR_clear_error();
		return -EPROTO;
	}

	if (se == SSL_ERROR_SYSCALL && !e) {
		c->fail = TLS_FAIL_PROTOCOL;
		snprintf(c->error, sizeof(c->error), "unexpected end of the TLS stream");
		return -EPROTO;
	}
	c->fail = e ? classify(c, e) : TLS_FAIL_PROTOCOL;
	why = e ? ERR_reason_error_string(e) : NULL;
	if (!why)
		why = "TLS error";
	long vr = SSL_get_verify_result(c->ssl);
	if (ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED && vr != X509_V_OK)
		snprintf(c->error, sizeof(c->error), "%s: %s", why,
			 X509_verify_cert_error_string(vr));
	else
		snprintf(c->error, sizeof(c->error), "%s", why);
	ERR_clear_error();
	return -EPROTO;
}

ssize_t tls_conn_read(struct tls_conn *c, void *dst, size_t cap)
{
	int n;

	if (c->fail)
		return -EPROTO;
	/* Nothing fed and nothing decrypted waiting: SSL_read would only say
	 * WANT_READ, at the price of the error-queue walk and, with
	 * SSL_MODE_RELEASE_BUFFERS, a 17 KiB read buffer allocated and freed.
	 * (A record split over two feeds sits in OpenSSL's buffer: has_pending.) */
	if (c->was_up && !BIO_ctrl_pending(c->rbio) && !SSL_has_pending(c->ssl))
		return SSL_get_shutdown(c->ssl) & SSL_RECEIVED_SHUTDOWN ? -EPIPE : 0;
	err_clear();
	if (!c->was_up && !SSL_is_init_finished(c->ssl)) {
		n = SSL_do_handshake(c->ssl);
		if (n != 1) {
			int se = SSL_get_error(c->ssl, n);
			if (se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE)
				return 0;
			return fatal(c, n);
		}
	}
	c->was_up = true;
	n = SSL_read(c->ssl, dst, cap > INT32_MAX ? INT32_MAX : (int)cap);
	if (n > 0)
		return n;
	switch (SSL_get_error(c->ssl, n)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		return -EPIPE;
	default:
		return fatal(c, n);
	}
}

ssize_t tls_conn_write(struct tls_conn *c, const void *data, size_t len)
{
	size_t done = 0;

	if (c->fail)
		return -EPROTO;
	if (!c->was_up)
		return 0;
	err_clear();
	while (done < len) {
		size_t w;
		int rc = SSL_write_ex(c->ssl, (const char *)data + done, len - done, &w);
		if (rc != 1) {
			int se = SSL_get_error(c->ssl, rc);
			if (se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE)
				break;
			return fatal(c, rc);
		}
		done += w;
	}
	return (ssize_t)done;
}

void tls_conn_shutdown(struct tls_conn *c)
{
	if (c->fail || !SSL_is_init_finished(c->ssl))
		return;
	SSL_shutdown(c->ssl);
	ERR_clear_error();
}

int tls_conn_drain(struct tls_conn *c, struct buf *out)
{
	size_t pending = BIO_ctrl_pending(c->wbio);

	if (!pending)
		return 0;
	if (buf_reserve(out, pending))
		return -ENOMEM;
	int n = BIO_read(c->wbio, buf_head(out) + out->len, (int)pending);
	if (n > 0)
		out->len += (size_t)n;
	return 0;
}

bool tls_conn_established(const struct tls_conn *c)
{
	return c->was_up;
}

bool tls_conn_is_server(const struct tls_conn *c)
{
	return SSL_is_server(c->ssl);
}

bool tls_conn_resumed(const struct tls_conn *c)
{
	return SSL_session_reused(c->ssl);
}

bool tls_conn_unknown_sni(const struct tls_conn *c)
{
	return c->unknown_sni;
}

const char *tls_conn_version(const struct tls_conn *c)
{
	return SSL_get_version(c->ssl);
}

const char *tls_conn_peer_subject(struct tls_conn *c)
{
	if (c->subject_done)
		return c->subject;
	c->subject_done = true;
	X509 *x = SSL_get0_peer_certificate(c->ssl);
	if (!x || SSL_get_verify_result(c->ssl) != X509_V_OK)
		return NULL;
	BIO *m = BIO_new(BIO_s_mem());
	if (!m)
		return NULL;
	/* RFC 2253 with control and 8-bit bytes escaped: safe in a header */
	X509_NAME_print_ex(m, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
	char *p;
	long n = BIO_get_mem_data(m, &p);
	if (n > 0 && n < SUBJECT_MAX && (c->subject = malloc((size_t)n + 1))) {
		for (long i = 0; i < n; i++)
			c->subject[i] = (p[i] < 0x20 || p[i] == 0x7f) ? '?' : p[i];
		c->subject[n] = 0;
	}
	BIO_free(m);
	ERR_clear_error();
	return c->subject;
}

bool tls_conn_plaintext(const struct tls_conn *c)
{
	return c->plaintext;
}

enum tls_fail tls_conn_fail(const struct tls_conn *c)
{
	return c->fail;
}

const char *tls_conn_error(const struct tls_conn *c)
{
	return c->error[0] ? c->error : "no error";
}

void tls_conn_set_timeout(struct tls_conn *c)
{
	c->fail = TLS_FAIL_TIMEOUT;
	snprintf(c->error, sizeof(c->error), "handshake not finished in time");
}
