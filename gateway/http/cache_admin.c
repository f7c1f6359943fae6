/* cache_admin.c — the cache's admin endpoints (docs/cache.md):
 *
 *   POST /cache/purge  {"url": U} | {"prefix": U} | {"tag": T}   (mutation)
 *        → {"purged": N}
 *   GET  /cache        → {"enabled":..., "memory":..., "budget":..., "objects":...,
 *                         "bytes":..., ..., "refreshes":..., "refresh_failures":...}
 *
 * They run on the admin thread; the store is safe to use from any thread.
 */
#include <stdio.h>
#include <string.h>

#include "admin.h"
#include "core/jsonw.h"
#include "gateway.h"
#include "http/cache.h"
#include "http/cache_redis.h"
#include "http/cache_store.h"

static int h_purge(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	char v[4096];
	int n;
	size_t purged;
	const char *kind;

	if ((n = admin_body_string(req, "url", v, sizeof(v))) >= 0) {
		kind = "url";
		purged = cache_purge_url(v, (size_t)n, false);
	} else if ((n = admin_body_string(req, "prefix", v, sizeof(v))) >= 0) {
		char norm[4096];
		/* "" (or "." or "http://": nothing once normalised) is a prefix of
		 * every URL: a typo must not flush the whole cache */
		if (cache_url_normalize(v, (size_t)n, norm, sizeof(norm)) <= 0)
			return admin_error(resp, 400,
					   "\"prefix\" must name at least a host (an empty prefix "
					   "would purge everything)");
		kind = "prefix";
		purged = cache_purge_url(v, (size_t)n, true);
	} else if ((n = admin_body_string(req, "tag", v, sizeof(v))) > 0) {
		kind = "tag";
		purged = cache_purge_tag(v, (size_t)n);
	} else {
		return admin_error(resp, 400,
				   "expected a JSON object with \"url\", \"prefix\" or \"tag\"");
	}
	cache_store_barrier(); /* the purged objects' memory is back before we answer */

	/* L2, and through it every other gateway's L1 */
	const struct config *cfg = g->config_get ? g->config_get(g) : gateway_config(g);
	long l2 = 0;
	if (cfg->cache.redis.len) {
		char norm[4096];
		int nl = strcmp(kind, "tag") ? cache_url_normalize(v, (size_t)n, norm, sizeof(norm))
					     : (int)strlen(strcpy(norm, v));
		l2 = nl < 0 ? -1 : l2_purge(&cfg->cache, kind, norm, (size_t)nl);
	}
	if (g->config_put)
		g->config_put(g, cfg);
	snprintf(resp->audit, sizeof(resp->audit), "cache purge %s %.200s: %zu", kind, v, purged);
	return buf_appendf(&resp->body, "{\"purged\":%zu,\"l2\":%ld,\"%s\":", purged, l2, kind) ||
			       jsonw_buf_str(&resp->body, v) || buf_appends(&resp->body, "}\n")
		       ? -1
		       : 0;
}

static int h_cache(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	const struct config *cfg = g->config_get ? g->config_get(g) : gateway_config(g);
	struct cache_stats_global s;
	uint64_t refreshes, refresh_failures, refresh_cancelled;

	cache_store_stats(&s);
	cache_refresh_stats(&refreshes, &refresh_failures, &refresh_cancelled);
	int rc = buf_appendf(
		&resp->body,
		"{\"enabled\":%s,\"memory\":%llu,\"budget\":%llu,\"objects\":%llu,"
		"\"bytes\":%llu,\"inserts\":%llu,\"evictions\":%llu,\"purged\":%llu,"
		"\"refreshes\":%llu,\"refresh_failures\":%llu,"
		"\"refresh_cancelled\":%llu}\n",
		cfg->cache.enabled ? "true" : "false", (unsigned long long)cfg->cache.memory,
		(unsigned long long)cache_store_budget(), (unsigned long long)s.objects,
		(unsigned long long)s.bytes, (unsigned long long)s.inserts,
		(unsigned long long)s.evictions, (unsigned long long)s.purged,
		(unsigned long long)refreshes, (unsigned long long)refresh_failures,
		(unsigned long long)refresh_cancelled);
	if (g->config_put)
		g->config_put(g, cfg);
	return rc ? -1 : 0;
}

void cache_admin_register(void)
{
	/* -EEXIST on a second call is fine (tests start the admin twice) */
	admin_register("POST", "/cache/purge", true, h_purge);
	admin_register("GET", "/cache", false, h_cache);
}
