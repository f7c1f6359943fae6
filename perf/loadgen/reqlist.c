/* reqlist.c — see reqlist.h. */
#include "reqlist.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void sb_add(struct sbuf *b, const void *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

/* True if the header block has a field named `name` (case-insensitive). */
static bool has_header(const char *block, const char *name)
{
	size_t n = strlen(name);

	for (const char *l = block; l && *l;) {
		if (!strncasecmp(l, name, n) && l[n] == ':')
			return true;
		l = strchr(l, '\n');
		if (l)
			l++;
	}
	return false;
}

int reqlist_add(struct reqlist *l, const char *method, const char *target, const char *headers,
		const void *body, size_t body_len)
{
	struct sbuf b = {0};
	struct sbuf all = {0};
	char num[48];

	/* The header lines the entry and -H give, to check what is already there. */
	if (headers)
		sb_str(&all, headers);
	for (size_t i = 0; i < l->n_extra; i++) {
		sb_str(&all, l->extra[i]);
		sb_str(&all, "\r\n");
	}
	sb_str(&b, method);
	sb_str(&b, " ");
	sb_str(&b, target);
	sb_str(&b, " HTTP/1.1\r\n");
	if (!has_header(all.p, "host") && l->host) {
		sb_str(&b, "Host: ");
		sb_str(&b, l->host);
		sb_str(&b, "\r\n");
	}
	if (all.p)
		sb_str(&b, all.p);
	if (l->close && !has_header(all.p, "connection"))
		sb_str(&b, "Connection: close\r\n");
	if (body_len && !has_header(all.p, "content-length") &&
	    !has_header(all.p, "transfer-encoding")) {
		snprintf(num, sizeof(num), "Content-Length: %zu\r\n", body_len);
		sb_str(&b, num);
	}
	sb_str(&b, "\r\n");
	if (body_len)
		sb_add(&b, body, body_len);
	free(all.p);
	if (b.oom || all.oom)
		goto oom;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		struct req_entry *v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			goto oom;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n].wire = b.p;
	l->v[l->n].len = b.len;
	l->v[l->n].is_head = !strcmp(method, "HEAD");
	l->n++;
	return 0;
oom:
	free(b.p);
	return -ENOMEM;
}

/* The next line of text[*pos..len) without its LF/CRLF; advances *pos. */
static bool next_line(const char *text, size_t len, size_t *pos, const char **line, size_t *n)
{
	if (*pos >= len)
		return false;
	const char *s = text + *pos;
	const char *nl = memchr(s, '\n', len - *pos);
	size_t l = nl ? (size_t)(nl - s) : len - *pos;

	*pos += l + (nl ? 1 : 0);
	if (l && s[l - 1] == '\r')
		l--;
	*line = s;
	*n = l;
	return true;
}

static bool is_token(const char *s, size_t n)
{
	if (!n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("!#$%&'*+-.^_`|~", s[i]))
			return false;
	return true;
}

int reqlist_parse(struct reqlist *l, const char *text, size_t len, unsigned *err_line,
		  const char **err_reason)
{
	size_t pos = 0, n;
	const char *line;
	unsigned lineno = 0;
	int ret = -EINVAL;
	struct sbuf hdrs = {0};
	char *method = NULL, *target = NULL;

	while (next_line(text, len, &pos, &line, &n)) {
		lineno++;
		if (n == 0 || line[0] == '#')
			continue;
		/* METHOD SP TARGET */
		const char *sp = memchr(line, ' ', n);
		if (!sp || !is_token(line, sp - line) || sp + 1 >= line + n ||
		    memchr(sp + 1, ' ', line + n - sp - 1)) {
			*err_reason = "expected a request line \"METHOD TARGET\"";
			goto fail;
		}
		method = strndup(line, sp - line);
		target = strndup(sp + 1, line + n - sp - 1);
		hdrs.len = 0;
		if (hdrs.p)
			hdrs.p[0] = 0;
		long long body_len = 0;
		while (next_line(text, len, &pos, &line, &n)) {
			lineno++;
			if (n == 0)
				break;
			const char *colon = memchr(line, ':', n);
			if (!colon || !is_token(line, colon - line)) {
				*err_reason = "expected a header line \"Name: value\"";
				goto fail;
			}
			if ((size_t)(colon - line) == strlen("content-length") &&
			    !strncasecmp(line, "content-length", colon - line)) {
				char num[32];
				size_t vl = line + n - colon - 1;
				char *end;
				if (vl >= sizeof(num)) {
					*err_reason = "bad Content-Length";
					goto fail;
				}
				memcpy(num, colon + 1, vl);
				num[vl] = 0;
				body_len = strtoll(num, &end, 10);
				while (*end == ' ' || *end == '\t')
					end++;
				if (body_len < 0 || *end || end == num) {
					*err_reason = "bad Content-Length";
					goto fail;
				}
			}
			sb_add(&hdrs, line, n);
			sb_str(&hdrs, "\r\n");
		}
		if ((unsigned long long)body_len > len - pos) {
			*err_reason = "body shorter than its Content-Length";
			goto fail;
		}
		const char *body = text + pos;
		pos += body_len;
		for (long long i = 0; i < body_len; i++)
			lineno += body[i] == '\n';
		/* The newline that ends the body in a text file is not part of it. */
		if (body_len && pos < len && text[pos] == '\r')
			pos++;
		if (body_len && pos < len && text[pos] == '\n')
			pos++;
		if (hdrs.oom || reqlist_add(l, method, target, hdrs.p, body, body_len) < 0) {
			ret = -ENOMEM;
			*err_reason = "out of memory";
			goto fail;
		}
		free(method);
		free(target);
		method = target = NULL;
	}
	free(hdrs.p);
	if (l->n == 0) {
		*err_line = lineno;
		*err_reason = "no requests in the file";
		return -EINVAL;
	}
	return 0;
fail:
	*err_line = lineno;
	free(method);
	free(target);
	free(hdrs.p);
	return ret;
}

void reqlist_free(struct reqlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].wire);
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}
