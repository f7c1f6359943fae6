/* reflex.h — the reflex rules step (DESIGN.md step 5): rules that match a
 * request by its method, host, path, headers, query and by detector hits
 * (http/detect.h) in its URL, named headers and body, and act on it: block,
 * redact, respond, route, nocache, tag. docs/rules.md has the rule language.
 *
 * Compiled sets
 *  - The `reflex:` section of a snapshot is compiled at load (on the thread
 *    that loads the config, never a worker) into one struct reflex_set:
 *    one detect_db (every built-in detector plus the user ones) and the
 *    rules with their detector names resolved to ids and pools to indexes.
 *    It belongs to the snapshot (config.reflex.compiled) and is freed with
 *    it, so a request that routed with a snapshot keeps its set.
 *  - Rules added or removed through the admin API make a new version of the
 *    snapshot's set (same db, new rule list) that the workers pick up at
 *    their next request. Versions live until their snapshot is freed (a
 *    worker may still read an older one). API-added rules are also kept
 *    (in memory) and put back by every reload after the file's rules; a
 *    file rule of the same name wins, one the new file cannot resolve
 *    refuses the reload (docs/rules.md, "Admin API rules and reloads").
 *  - Per-rule counters (stats rx_rule_hits[]) are indexed by a slot that
 *    belongs to the rule's name, not its position.
 *  - Scratch space is per worker thread and per db (made on first use).
 *
 * Evaluation: rules run in order; block and respond are terminal (the first
 * one that matches answers the request); redact, route (first one wins),
 * nocache and tag accumulate from every matching rule before it. A rule
 * that looks at the body defers the decision until the body has been held
 * and scanned (streaming, so a match split between two reads is found), up
 * to reflex.max_scan_bytes; a larger body is the rule's on_oversize choice.
 *
 * Logs, counters and the access record carry the rule, the detector, where
 * (url, header, body), the offset and the keyed hash — never matched text.
 */
#ifndef REFLEX_HTTP_REFLEX_H
#define REFLEX_HTTP_REFLEX_H

#include <stdbool.h>

#include "http/req.h"

struct reflex_req;

/* Once, before the first config is loaded: hooks the compiler into config
 * loading (config_reflex_build) and registers the admin endpoints
 * GET/POST/DELETE /rules (before admin_start). */
void reflex_install(void);

/* The step: 0..n scans of the head, maybe a held body, then the action. */
enum step_result reflex_step(struct request *r);

/* req_pump_body's hook: true when the reflex step owns the request body
 * (holding it for a scan, or sending the held / rewritten body and what
 * follows); req_pump_body then does nothing else. */
bool reflex_pump_body(struct request *r);

/* Response scanning (DLP, rules with in: [response]); respond.c's hooks.
 * begin: from respond_head before the head is written: 1 when the body will
 * be scanned (then Content-Length is dropped, the body goes out chunked, or
 * close-delimited to HTTP/1.0, and r->out may change from CHUNKED to
 * DECHUNK so that body() gets payload), 0 when not, -1 on failure (the
 * response must not be relayed). body: payload bytes; true when taken.
 * end: the response is complete: flush and terminate; true when taken. */
struct http_response;
int reflex_resp_begin(struct request *r, const struct http_response *res);
bool reflex_resp_body(struct request *r, const char *p, size_t n);
bool reflex_resp_end(struct request *r);

/* Prometheus families reflex_rules_* for GET /metrics (admin thread): the
 * merged counters t, rule and detector names from cfg's current rule set.
 * 0 or -ENOMEM. */
struct buf;
struct config;
struct stats_worker;
int reflex_metrics(const struct config *cfg, const struct stats_worker *t, struct buf *b);

/* The request ended: free its state (NULL-safe on r->rx). */
void reflex_req_end(struct request *r);

/* For the access record: the deciding rule etc., or "" (never NULL). */
const char *reflex_access_status(const struct request *r);

#endif
