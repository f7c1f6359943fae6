/* cache.h — the cache step of the request path (docs/cache.md).
 *
 * Between route and upstream (req.c's table). For a request the cache
 * applies to (config cache.enabled, route cache not false) it:
 *  - answers from L1 (http/cache_store.h) what RFC 9111 allows — fresh
 *    objects, stale ones the client or stale-while-revalidate accepts —
 *    with Age and Cache-Status (RFC 9211), 304 to matching client
 *    conditionals, HEAD from a stored GET; the body is sent from the
 *    stored object (conn_write_ext), never copied;
 *  - coalesces misses: one request per key goes upstream, the others wait
 *    (up to cache.coalesce_timeout) and are woken through their worker's
 *    mailbox (worker_post) when it ends;
 *  - revalidates stale objects with the origin (If-None-Match /
 *    If-Modified-Since; a 304 refreshes the stored headers); inside
 *    stale-while-revalidate the refresh is a detached request owned by the
 *    worker (one per object), so the client's connection goes on at once;
 *  - fetches a HEAD miss as GET (r->up_get) and stores it; the client gets
 *    the head only;
 *  - stores a cacheable response while it streams to the client (a tee on
 *    the relay path, up to cache.max_object: the client is never delayed);
 *  - serves stale objects when the origin fails (stale-if-error, grace);
 *  - invalidates the target (and Location / Content-Location) after a
 *    successful unsafe method.
 *
 * The per-request state (struct cache_req) belongs to the cache; req.c
 * calls cache_req_end() when the request ends however it ends.
 */
#ifndef REFLEX_HTTP_CACHE_H
#define REFLEX_HTTP_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "http/parse.h"
#include "http/req.h"

struct cache_req;

/* The step (req.c's table). */
enum step_result cache_step(struct request *r);

/* The upstream response head arrived (respond.c, before anything is
 * written). Returns true when the cache answered the client itself (a
 * revalidated or stale object); the upstream response is then swallowed
 * (r->body_discard). Otherwise it decides whether to store, and the relay
 * goes on. */
bool cache_respond_head(struct request *r, const struct http_response *res);
/* Do not store this response after all (why: the Cache-Status detail), e.g.
 * response scanning rewrites what the client gets (respond.c). */
void cache_no_store(struct request *r, const char *why);
/* Extra fields for a relayed response head (Cache-Status). */
void cache_head_fields(struct request *r, struct buf *b);
/* Response payload bytes as they are relayed (de-chunked). */
void cache_tee(struct request *r, const char *p, size_t n);
/* The upstream response is complete: store what was teed. */
void cache_upstream_done(struct request *r);
/* The exchange failed with a 5xx (gateway-made) before a response was
 * relayed: true when the cache answered instead (stale-if-error, grace, or
 * the client already had its answer); the caller finishes the request. */
bool cache_on_error(struct request *r, int status);
/* The cache step waits for the request body (an opted-in POST is keyed by
 * it): req.c resumes the request when more of it arrives. */
bool cache_wants_body(const struct request *r);
/* r's client is gone (req.c, before it aborts the exchange). When r is
 * the leader of a fetch whose waiters are sending it as it arrives, the
 * cache takes the exchange over (a detached request, as for a refresh) so
 * that they get all of it and it is stored: returns true, and r no longer
 * has an exchange nor cache state. False: nothing taken. */
bool cache_client_gone(struct request *r);
/* The request ends (reset for the next one, or the client is gone). */
void cache_req_end(struct request *r);
/* "hit", "miss", "stale", "bypass" or "" for the access record. */
const char *cache_access_status(const struct request *r);

/* Stale-while-revalidate refreshes run as detached requests (r->detached:
 * a request owned by the worker, whose client has no socket): req.c hands
 * them back here instead of running the step table. resume: the exchange
 * progressed (upstream.c's req_resume); failed: req_fail was called (the
 * stale object stays, the failure is counted). Either may free r. */
void cache_refresh_resume(struct request *r);
void cache_refresh_failed(struct request *r, int status);
/* The worker drains: cancel its refreshes (their upstream connections
 * close). No new one starts while it drains. Worker thread only. */
struct worker;
void cache_worker_drain(struct worker *w);
/* Refreshes started, failed and cancelled so far (all workers). */
void cache_refresh_stats(uint64_t *started, uint64_t *failed, uint64_t *cancelled);

/* A new configuration is in force (each worker, on reload): the L1 byte
 * budget follows cache.memory (shrinking evicts at once). */
struct config;
void cache_reconfigure(const struct config *cfg);

/* "[http://]host/path?query" → the normalised "host/path?query" the cache
 * keys and purges by; the length or -1. */
int cache_url_normalize(const char *url, size_t len, char *out, size_t cap);

/* Purges (any thread; the admin API). url: "[http://]host/path?query".
 * Returns how many objects were removed from L1. */
size_t cache_purge_url(const char *url, size_t len, bool prefix);
size_t cache_purge_tag(const char *tag, size_t len);

/* Register the admin endpoints (POST /cache/purge, GET /cache): called by
 * main.c before the admin API starts (cache_admin.c). */
void cache_admin_register(void);

#endif
