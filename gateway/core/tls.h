/* tls.h — TLS with OpenSSL 3 over memory BIOs, for a caller that owns the
 * socket I/O (the worker's io_uring).
 *
 * No function here does socket I/O or blocks on the network: the caller
 * feeds received ciphertext (tls_conn_feed), takes plaintext out
 * (tls_conn_read), hands plaintext in (tls_conn_write) and moves the
 * ciphertext OpenSSL produced (handshake messages, records, alerts,
 * tickets) to its own send queue (tls_conn_drain). The only file reads
 * are at context creation (certificates, keys, CA, OCSP response, ticket
 * key file) and when a ticket key file is re-read on its rotation schedule.
 *
 * Contexts (struct tls_ctx) are built from the plain config structs
 * (config.h) when a snapshot is loaded, on the loading thread, and are
 * shared by every worker: OpenSSL's SSL_CTX, the session cache and the
 * ticket keys are thread-safe. A context is reference-counted: the config
 * snapshot holds one reference and every connection made from it holds
 * one, so a reload that drops the snapshot never pulls a context from
 * under a live connection.
 *
 * Defaults, not options: TLS 1.2 and 1.3 only; Mozilla "intermediate"
 * (ECDHE with AES-GCM and ChaCha20-Poly1305 for 1.2, the three TLS 1.3
 * suites), the client's preference order; no renegotiation, no
 * compression, no 0-RTT; ALPN offers and accepts only http/1.1.
 *
 * Errors: context builders return NULL with "reason" text in err;
 * connection calls return -EPROTO on a fatal TLS error, after which
 * tls_conn_fail() classifies it and tls_conn_error() describes it, and
 * tls_conn_drain() may still yield the alert to send.
 */
#ifndef REFLEX_CORE_TLS_H
#define REFLEX_CORE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/buf.h"
#include "core/stats.h"

struct cfg_listen_tls;
struct cfg_pool_tls;
struct tls_ctx;
struct tls_conn;

/* A listener's context: every certificate of cfg (the first is the default
 * for clients without SNI or with an unknown name), client certificate
 * verification, OCSP stapling, session cache and tickets. NULL on error. */
struct tls_ctx *tls_server_ctx_new(const struct cfg_listen_tls *cfg, char *err, size_t errlen);
/* A pool's context: verification against cfg->ca (or the system store),
 * session reuse across the pool's connections. NULL on error. */
struct tls_ctx *tls_client_ctx_new(const struct cfg_pool_tls *cfg, char *err, size_t errlen);
/* Rotate the ticket keys now rather than at the next scheduled time (a new
 * generated key, or the key file re-read); the schedule restarts. */
void tls_ctx_rotate_tickets(struct tls_ctx *t);
void tls_ctx_ref(struct tls_ctx *t);
void tls_ctx_unref(struct tls_ctx *t); /* NULL-safe */
/* The header that carries a verified client certificate's subject, or NULL
 * when the context asks for no client certificate. */
const char *tls_ctx_subject_header(const struct tls_ctx *t);

/* tls_ctx_subject_header() of the connection's context. */
const char *tls_conn_subject_header(const struct tls_conn *t);

/* A server-side connection (NULL: out of memory). */
struct tls_conn *tls_conn_server(struct tls_ctx *ctx);
/* A client-side connection to `host` ("name" or "name:port" or an IP
 * address): SNI is sent for names, and the peer is verified against the
 * name (or the configured SNI) unless the context says verify: false. A
 * session kept from an earlier connection to the same name is offered. */
struct tls_conn *tls_conn_client(struct tls_ctx *ctx, const char *host);
void tls_conn_free(struct tls_conn *t); /* NULL-safe */

/* Received ciphertext: 0 or -ENOMEM. Nothing is processed until
 * tls_conn_read(). */
int tls_conn_feed(struct tls_conn *t, const void *data, size_t len);
/* Drive the handshake, then decrypt into dst. Returns bytes (> 0), 0 when
 * nothing more can be had now, -EPIPE when the peer sent close_notify, or
 * -EPROTO on a fatal error. A client starts its handshake by calling this
 * with nothing fed. */
ssize_t tls_conn_read(struct tls_conn *t, void *dst, size_t cap);
/* Encrypt plaintext. Returns bytes taken: all of them once the handshake is
 * done, 0 before; -EPROTO on a fatal error. */
ssize_t tls_conn_write(struct tls_conn *t, const void *data, size_t len);
/* Queue close_notify (after any records already written). */
void tls_conn_shutdown(struct tls_conn *t);
/* Append the ciphertext waiting to be sent to out: 0 or -ENOMEM. */
int tls_conn_drain(struct tls_conn *t, struct buf *out);

bool tls_conn_established(const struct tls_conn *t);
bool tls_conn_is_server(const struct tls_conn *t);
bool tls_conn_resumed(const struct tls_conn *t);
/* The client asked for a name no certificate has (the default was used). */
bool tls_conn_unknown_sni(const struct tls_conn *t);
/* "TLSv1.3", "TLSv1.2", ... once established. */
const char *tls_conn_version(const struct tls_conn *t);
/* The verified client certificate's subject (RFC 2253, control and
 * non-ASCII bytes escaped), or NULL when none was verified. */
const char *tls_conn_peer_subject(struct tls_conn *t);
/* A server handshake failed because the peer's first bytes were a plain
 * text command (an HTTP request line, "GET / HTTP/1.1") instead of a TLS
 * record: no alert was queued, so the caller may answer in plain text. */
bool tls_conn_plaintext(const struct tls_conn *t);
/* After an error: the class (for counters) and the reason text. */
enum tls_fail tls_conn_fail(const struct tls_conn *t);
const char *tls_conn_error(const struct tls_conn *t);
/* Mark a handshake as failed by its deadline (sets fail and error). */
void tls_conn_set_timeout(struct tls_conn *t);

#endif
