#include "http/respond.h"

#include <stdio.h>
#include <string.h>

#include "http/cache.h"
#include "http/reflex.h"
#include "http/req.h"
#include "http/worker.h"

const char *respond_status_text(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 417: return "Expectation Failed";
	case 422: return "Unprocessable Content";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 451: return "Unavailable For Legal Reasons";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
	}
}

size_t respond_error(struct client *c, struct request *r, int status, const char *reason,
		     bool close)
{
	char body[320];
	const char *text = respond_status_text(status);
	int blen = snprintf(body, sizeof(body), "%d %s: %s\n", status, text, reason);
	struct buf *b = conn_outbuf(&c->conn);
	size_t start = b->len;

	if (blen < 0 || (size_t)blen >= sizeof(body))
		blen = (int)strlen(body);
	buf_appendf(b,
		    "HTTP/1.1 %d %s\r\n"
		    "Content-Type: text/plain\r\n"
		    "Content-Length: %d\r\n",
		    status, text, blen);
	if (r && r->id[0])
		buf_appendf(b, "X-Request-ID: %s\r\n", r->id);
	if (r && r->retry_after_s && status == 503)
		buf_appendf(b, "Retry-After: %u\r\n", r->retry_after_s);
	if (r && r->resp_hdrs)
		buf_appends(b, r->resp_hdrs);
	if (close)
		buf_appends(b, "Connection: close\r\n");
	else if (r && r->http10)
		buf_appends(b, "Connection: keep-alive\r\n");
	buf_appends(b, "\r\n");
	if (!r || !r->is_head)
		buf_append(b, body, (size_t)blen);
	conn_wrote(&c->conn);
	return b->len - start;
}

void respond_continue(struct client *c)
{
	conn_write(&c->conn, "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

/* Fields that describe one connection, never forwarded (RFC 9110 §7.6.1). */
static bool hop_by_hop(struct http_str name)
{
	switch (name.len) {
	case 2: return http_str_eq(name, "TE");
	case 7: return http_str_eq(name, "Trailer") ? false : http_str_eq(name, "Upgrade");
	case 10: return http_str_eq(name, "Connection") || http_str_eq(name, "Keep-Alive");
	case 17: return http_str_eq(name, "Transfer-Encoding");
	default: break;
	}
	return name.len > 6 && strncasecmp(name.p, "Proxy-", 6) == 0;
}

int respond_head(struct request *r, const struct http_response *res)
{
	struct client *c = r->c;
	struct buf *b = conn_outbuf(&c->conn);
	bool draining = c->conn.w->draining;

	switch (res->body) {
	case HTTP_BODY_NONE:
		r->out = RESP_OUT_NONE;
		break;
	case HTTP_BODY_LENGTH:
		r->out = res->content_length ? RESP_OUT_RAW : RESP_OUT_NONE;
		r->resp_left = res->content_length;
		break;
	case HTTP_BODY_CHUNKED:
		r->out = r->http10 ? RESP_OUT_DECHUNK : RESP_OUT_CHUNKED;
		http_chunked_init(&r->resp_chunk);
		break;
	case HTTP_BODY_UNTIL_CLOSE:
		r->out = r->http10 ? RESP_OUT_UNTIL_CLOSE : RESP_OUT_ENCODE;
		break;
	}
	if (r->cache && cache_respond_head(r, res))
		return 0; /* the cache answered; the upstream response is swallowed */
	/* response scanning (DLP) re-frames the body: chunked, or close for 1.0 */
	int dlp = r->rx ? reflex_resp_begin(r, res) : 0;
	if (dlp < 0)
		return -1;
	if (dlp && r->cache)
		cache_no_store(r, "scanned"); /* the client gets a rewritten body: never stored */
	if (dlp ? r->http10 : r->out == RESP_OUT_DECHUNK || r->out == RESP_OUT_UNTIL_CLOSE)
		r->close_after = true; /* the body ends where the connection does */
	if (!r->keep_alive || draining || !r->body_done || (c->conn.eof && c->conn.in.len == 0))
		r->close_after = true;

	r->status = res->status;
	r->resp_started = true;
	size_t mark = b->len;
	r->resp_mark = mark;
	r->resp_sends = c->conn.sends;
	/* the status line and our fields without printf: once per response */
	char code[4] = { (char)('0' + res->status / 100 % 10), (char)('0' + res->status / 10 % 10),
			 (char)('0' + res->status % 10), ' ' };
	buf_append(b, "HTTP/1.1 ", 9);
	buf_append(b, code, 4);
	buf_append(b, res->reason.p, res->reason.len);
	buf_append(b, "\r\n", 2);
	for (unsigned i = 0; i < res->n_headers; i++) {
		const struct http_header *h = &res->headers[i];
		/* A HEAD response describes the GET one: keep its framing field. */
		bool head_te = r->is_head && !r->up_get && !r->http10 &&
			       http_str_eq(h->name, "Transfer-Encoding");
		bool is_cl = h->name.len == 14 && http_str_eq(h->name, "Content-Length");
		/* The relayed body is framed by Content-Length: an upstream
		 * Connection that names it must not take it away (the client
		 * would read to the end of a kept-alive connection). */
		if ((hop_by_hop(h->name) && !head_te) || http_str_eq(h->name, "X-Request-ID") ||
		    (dlp && is_cl) ||
		    (!is_cl && http_named_by_connection(res->headers, res->n_headers, h->name)))
			continue;
		buf_append(b, h->name.p, h->name.len);
		buf_append(b, ": ", 2);
		buf_append(b, h->value.p, h->value.len);
		buf_append(b, "\r\n", 2);
	}
	if (r->out == RESP_OUT_CHUNKED || r->out == RESP_OUT_ENCODE || (dlp && !r->http10))
		buf_appends(b, "Transfer-Encoding: chunked\r\n");
	if (r->cache)
		cache_head_fields(r, b);
	buf_appendv(b, "Via: 1.1 reflex\r\nX-Request-ID: ", r->id, "\r\n", NULL);
	if (r->limit_fields[0]) /* the quota left (http/limit.c) */
		buf_appends(b, r->limit_fields);
	if (r->close_after)
		buf_appends(b, "Connection: close\r\n");
	else if (r->http10)
		buf_appends(b, "Connection: keep-alive\r\n");
	if (buf_append(b, "\r\n", 2) != 0) {
		b->len = mark;
		return -1;
	}
	r->bytes_out += b->len - mark;
	conn_wrote(&c->conn);
	return 0;
}

void respond_body(struct request *r, const char *p, size_t n)
{
	struct conn *cn = &r->c->conn;

	if (!n || r->body_discard)
		return;
	if (r->rx && reflex_resp_body(r, p, n)) /* scanned, held, rewritten */
		return;
	if (r->out == RESP_OUT_ENCODE) {
		char hdr[24];
		int hl = snprintf(hdr, sizeof(hdr), "%zx\r\n", n);
		conn_write(cn, hdr, (size_t)hl);
		conn_write(cn, p, n);
		conn_write(cn, "\r\n", 2);
		r->bytes_out += (size_t)hl + n + 2;
		return;
	}
	conn_write(cn, p, n);
	r->bytes_out += n;
}

void respond_end(struct request *r)
{
	if (r->rx && !r->body_discard && reflex_resp_end(r))
		return;
	if (r->out == RESP_OUT_ENCODE && !r->body_discard) {
		conn_write(&r->c->conn, "0\r\n\r\n", 5);
		r->bytes_out += 5;
	}
}
