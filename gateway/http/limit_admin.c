/* limit_admin.c — the rate limiter's admin endpoints (docs/ratelimit.md):
 *
 *   GET    /limits               {"l7": policy, "kernel": state, counters, events}
 *   PUT    /limits/policy        {"client": {"rate","burst"} | null, "api_key": ..., "escalate":
 *                                 {...}, "kernel": {"syn_rate", ..., "dry_run"}}  (mutation)
 *   GET    /limits/top?n=N       most limited sources with their 429 counts
 *   GET    /limits/{allow,deny,penalty}
 *   POST   /limits/{allow,deny,penalty}   {"cidr": "192.0.2.0/24", "ttl_ms": N} (mutation)
 *   DELETE /limits/{allow,deny,penalty}   {"cidr": ...} or ?cidr=...             (mutation)
 *
 * Registered by main.c (limit_admin_register); they run on the admin thread.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "core/jsonw.h"
#include "gateway.h"
#include "http/limit.h"
#include "http/limit_admin.h"
#include "http/limit_kernel.h"

/* "name=value" in a query string. */
static int query_get(struct http_str q, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	const char *p = q.p, *end = q.p + q.len;

	while (p && p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *stop = amp ? amp : end;
		if ((size_t)(stop - p) > nl && !memcmp(p, name, nl) && p[nl] == '=') {
			size_t n = (size_t)(stop - p - (ptrdiff_t)nl - 1), o = 0;
			for (size_t i = 0; i < n && o + 1 < cap; i++) {
				char c = p[nl + 1 + i];
				if (c == '%' && i + 2 < n) {
					char hex[3] = {p[nl + 2 + i], p[nl + 3 + i], 0};
					c = (char)strtol(hex, NULL, 16);
					i += 2;
				}
				out[o++] = c;
			}
			out[o] = 0;
			return (int)o;
		}
		p = amp ? amp + 1 : NULL;
	}
	return -1;
}

static int h_limits(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	struct buf *b = &resp->body;

	if (buf_appends(b, "{\"l7\":") || limit_policy_json(b) || buf_appends(b, ",\"kernel\":") ||
	    limit_kernel_json(b) || buf_appends(b, "}\n"))
		return -1;
	return 0;
}

static int h_policy(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	char err[256];
	const char *k;
	bool any = false;

	if (!req->body || !req->body_len)
		return admin_error(resp, 400, "expected a JSON object");
	/* the kernel part first: its keys do not overlap the L7 ones */
	if ((k = memmem(req->body, req->body_len, "\"kernel\"", 8)) != NULL) {
		size_t klen = req->body_len - (size_t)(k - req->body);
		const char *end = memchr(k, '}', klen);
		if (limit_kernel_policy_set(k, end ? (size_t)(end - k + 1) : klen, err,
					    sizeof(err)))
			return admin_error(resp, 409, err);
		any = true;
	}
	if (memmem(req->body, req->body_len, "\"client\"", 8) ||
	    memmem(req->body, req->body_len, "\"api_key\"", 9) ||
	    memmem(req->body, req->body_len, "\"escalate\"", 10)) {
		if (limit_policy_set(req->body, req->body_len, err, sizeof(err)))
			return admin_error(resp, 400, err);
		any = true;
	}
	if (!any)
		return admin_error(resp, 400,
				   "expected \"client\", \"api_key\", \"escalate\" or \"kernel\"");
	snprintf(resp->audit, sizeof(resp->audit), "limits policy %.200s",
		 req->body_len < 200 ? req->body : "(long)");
	return h_limits(g, req, resp);
}

static int h_top(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	char v[16];
	unsigned n = 20;

	if (query_get(req->query, "n", v, sizeof(v)) > 0)
		n = (unsigned)strtoul(v, NULL, 10);
	if (!n || n > 1000)
		n = 20;
	if (buf_appends(&resp->body, "{\"top\":") || limit_top_json(&resp->body, n) ||
	    buf_appends(&resp->body, "}\n"))
		return -1;
	return 0;
}

static const char *list_of(const struct admin_req *req)
{
	const char *p = req->path.p + strlen("/limits/");
	size_t n = req->path.len - strlen("/limits/");

	if (n == 5 && !memcmp(p, "allow", 5))
		return "allow";
	if (n == 4 && !memcmp(p, "deny", 4))
		return "deny";
	if (n == 7 && !memcmp(p, "penalty", 7))
		return "penalty";
	return NULL;
}

static int h_list(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	const char *which = list_of(req);

	if (!which)
		return admin_error(resp, 404, "no such list (allow, deny, penalty)");
	if (buf_appendf(&resp->body, "{\"%s\":", which) ||
	    limit_kernel_list_json(&resp->body, which) || buf_appends(&resp->body, "}\n"))
		return -1;
	return 0;
}

static int edit(const struct admin_req *req, struct admin_resp *resp, bool add)
{
	const char *which = list_of(req);
	char cidr[64], ttl[24], err[256];
	uint64_t ttl_ms = 0;

	if (!which)
		return admin_error(resp, 404, "no such list (allow, deny, penalty)");
	if (admin_body_string(req, "cidr", cidr, sizeof(cidr)) <= 0 &&
	    query_get(req->query, "cidr", cidr, sizeof(cidr)) <= 0)
		return admin_error(resp, 400, "expected {\"cidr\": \"ADDRESS[/LEN]\"}");
	if (req->body && req->body_len) {
		const char *t = memmem(req->body, req->body_len, "\"ttl_ms\"", 8);
		if (t) {
			size_t n = 0;
			for (t += 8; t < req->body + req->body_len && (*t == ' ' || *t == ':'); t++)
				;
			while (t < req->body + req->body_len && *t >= '0' && *t <= '9' &&
			       n + 1 < sizeof(ttl))
				ttl[n++] = *t++;
			ttl[n] = 0;
			ttl_ms = strtoull(ttl, NULL, 10);
		}
	}
	int rc = limit_kernel_entry(which, add, cidr, ttl_ms, err, sizeof(err));
	snprintf(resp->audit, sizeof(resp->audit), "limits %s %s %s: %.150s", which,
		 add ? "add" : "remove", cidr, rc ? err : "ok");
	if (rc)
		return admin_error(resp,
				   rc == -ENOENT   ? 404
				   : rc == -EEXIST ? 409
				   : rc == -ENODEV ? 409
						   : 400,
				   err);
	return buf_appendf(&resp->body, "{\"%s\":\"%s\",\"cidr\":", add ? "added" : "removed",
			   which) ||
			       jsonw_buf_str(&resp->body, cidr) || buf_appends(&resp->body, "}\n")
		       ? -1
		       : 0;
}

static int h_add(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	return edit(req, resp, true);
}

static int h_del(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	return edit(req, resp, false);
}

void limit_admin_register(void)
{
	/* -EEXIST on a second call is fine */
	admin_register("GET", "/limits", false, h_limits);
	admin_register("PUT", "/limits/policy", true, h_policy);
	admin_register("POST", "/limits/policy", true, h_policy);
	admin_register("GET", "/limits/top", false, h_top);
	static const char *const lists[] = {"/limits/allow", "/limits/deny", "/limits/penalty"};
	for (unsigned i = 0; i < 3; i++) {
		admin_register("GET", lists[i], false, h_list);
		admin_register("POST", lists[i], true, h_add);
		admin_register("DELETE", lists[i], true, h_del);
	}
}
