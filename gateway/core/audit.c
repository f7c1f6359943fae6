/* audit.c — SHA-256 hash chain of admin mutations (see audit.h). */
#include "core/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/jsonw.h"

#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"
/* ,"prev":"<64>","hash":"<64>"} */
#define PREV_KEY ",\"prev\":\""
#define HASH_KEY "\",\"hash\":\""
#define TAIL_LEN (sizeof(PREV_KEY) - 1 + AUDIT_HASH_HEX + sizeof(HASH_KEY) - 1 + AUDIT_HASH_HEX + 2)
#define AUDIT_LINE_MAX (1 << 20)

struct audit {
	pthread_mutex_t lock;
	int fd;
	uint64_t seq; /* of the last record */
	char prev[AUDIT_HASH_HEX + 1];
};

void audit_sha256_hex(const void *data, size_t len, char out[AUDIT_HASH_HEX + 1])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[32];
	unsigned int mdlen = 0;

	if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) {
		memset(out, '?', AUDIT_HASH_HEX); /* never matches: verification fails loudly */
		out[AUDIT_HASH_HEX] = 0;
		return;
	}
	for (unsigned i = 0; i < 32; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[AUDIT_HASH_HEX] = 0;
}

static bool is_hex64(const char *p)
{
	for (int i = 0; i < AUDIT_HASH_HEX; i++)
		if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
			return false;
	return true;
}

/* Check one line (without '\n') against the expected seq and prev. 0, or
 * -1 with why. */
static int check_line(const char *line, size_t len, uint64_t want_seq, const char *want_prev,
		      char *why, size_t whylen)
{
	char got[AUDIT_HASH_HEX + 1], seqtxt[32];
	const char *tail, *p;
	struct buf b = {0};
	uint64_t seq = 0;
	int rc = -1;

	snprintf(seqtxt, sizeof(seqtxt), "{\"seq\":%llu,", (unsigned long long)want_seq);
	if (len < strlen(seqtxt) + TAIL_LEN || memcmp(line, seqtxt, strlen(seqtxt))) {
		/* say what the line claims, if it claims anything */
		if (len > 7 && !memcmp(line, "{\"seq\":", 7))
			seq = strtoull(line + 7, NULL, 10);
		if (seq)
			snprintf(why, whylen, "seq %llu where %llu was expected",
				 (unsigned long long)seq, (unsigned long long)want_seq);
		else
			snprintf(why, whylen, "not an audit record");
		return -1;
	}
	tail = line + len - TAIL_LEN;
	p = tail;
	if (memcmp(p, PREV_KEY, sizeof(PREV_KEY) - 1) || !is_hex64(p + sizeof(PREV_KEY) - 1))
		goto malformed;
	p += sizeof(PREV_KEY) - 1 + AUDIT_HASH_HEX;
	if (memcmp(p, HASH_KEY, sizeof(HASH_KEY) - 1) || !is_hex64(p + sizeof(HASH_KEY) - 1))
		goto malformed;
	p += sizeof(HASH_KEY) - 1 + AUDIT_HASH_HEX;
	if (memcmp(p, "\"}", 2))
		goto malformed;
	if (memcmp(tail + sizeof(PREV_KEY) - 1, want_prev, AUDIT_HASH_HEX)) {
		snprintf(why, whylen, "prev does not match the previous record's hash");
		return -1;
	}
	/* the hashed bytes: everything up to the end of prev's value, then "}" */
	size_t body = (size_t)(tail - line) + sizeof(PREV_KEY) - 1 + AUDIT_HASH_HEX + 1;
	if (buf_append(&b, line, body) || buf_append(&b, "}", 1)) {
		snprintf(why, whylen, "out of memory");
		goto out;
	}
	audit_sha256_hex(buf_head(&b), b.len, got);
	if (memcmp(got, tail + TAIL_LEN - 2 - AUDIT_HASH_HEX, AUDIT_HASH_HEX)) {
		snprintf(why, whylen, "hash does not match the record's content");
		goto out;
	}
	rc = 0;
out:
	buf_free(&b);
	return rc;
malformed:
	snprintf(why, whylen, "malformed prev/hash members");
	return -1;
}

/* Lines of a file, one at a time, in bounded memory: the log grows for as
 * long as the gateway is administered, and verify may be pointed at
 * anything (a pipe, /dev/zero). */
struct line_reader {
	int fd;
	struct buf b; /* unread bytes */
	bool eof;
};

/* 1 with the line in *line and *len (no '\n'; *nl says whether one ended
 * it), 0 at the end, -E2BIG for a line longer than AUDIT_LINE_MAX, or
 * -errno. The line stays valid until the next call. */
static int next_line(struct line_reader *r, const char **line, size_t *len, bool *nl,
		     size_t *consumed)
{
	buf_consume(&r->b, *consumed);
	*consumed = 0;
	for (;;) {
		const char *p = memchr(buf_head(&r->b), '\n', r->b.len);

		if (p || (r->eof && r->b.len)) {
			*line = buf_head(&r->b);
			*len = p ? (size_t)(p - *line) : r->b.len;
			*nl = p != NULL;
			*consumed = *len + (p != NULL);
			return *len > AUDIT_LINE_MAX ? -E2BIG : 1;
		}
		if (r->eof)
			return 0;
		if (r->b.len > AUDIT_LINE_MAX)
			return -E2BIG;
		if (buf_reserve(&r->b, 65536))
			return -ENOMEM;
		ssize_t n = read(r->fd, r->b.data + r->b.off + r->b.len, 65536);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			r->eof = true;
		r->b.len += (size_t)n;
	}
}

int audit_verify(const char *path, uint64_t *first_bad_seq, uint64_t *records, char *err,
		 size_t errlen)
{
	char prev[AUDIT_HASH_HEX + 1] = ZERO_HASH, why[200];
	struct line_reader r = {.fd = -1};
	const char *line = NULL;
	size_t len = 0, consumed = 0;
	uint64_t seq = 0;
	bool nl;
	int rc;

	*first_bad_seq = 0;
	*records = 0;
	if (errlen)
		err[0] = 0;
	r.fd = open(path, O_RDONLY | O_CLOEXEC);
	if (r.fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	while ((rc = next_line(&r, &line, &len, &nl, &consumed)) == 1) {
		seq++;
		if (!nl) {
			*first_bad_seq = seq;
			snprintf(err, errlen, "record %llu: incomplete line (no newline)",
				 (unsigned long long)seq);
			rc = 1;
			goto out;
		}
		if (check_line(line, len, seq, prev, why, sizeof(why))) {
			*first_bad_seq = seq;
			snprintf(err, errlen, "record %llu (line %llu): %s",
				 (unsigned long long)seq, (unsigned long long)seq, why);
			rc = 1;
			goto out;
		}
		audit_sha256_hex(line, len, prev);
	}
	if (rc == -E2BIG) {
		*first_bad_seq = seq + 1;
		snprintf(err, errlen, "record %llu: line longer than %d bytes",
			 (unsigned long long)seq + 1, AUDIT_LINE_MAX);
		rc = 1;
		goto out;
	}
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		goto out;
	}
	*records = seq;
	rc = 0;
out:
	close(r.fd);
	buf_free(&r.b);
	return rc;
}

/* Continue the chain from the file's last line (whatever it holds: a bad
 * line is then caught by verification, not papered over). The file is
 * read once, in chunks: the line count is the seq, and the last line is
 * hashed as it streams by (a torn last line may be of any length). */
static int load_tail(struct audit *a, char *err, size_t errlen, const char *path)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char chunk[65536], dg[32];
	unsigned int dglen = 0;
	bool in_line = false, ended_nl = true;
	int rc = 0;

	a->seq = 0;
	strcpy(a->prev, ZERO_HASH);
	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		snprintf(err, errlen, "audit log %s: cannot hash", path);
		EVP_MD_CTX_free(md);
		return -ENOMEM;
	}
	for (;;) {
		ssize_t n = read(a->fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			snprintf(err, errlen, "audit log %s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		for (const unsigned char *p = chunk, *end = chunk + n; p < end;) {
			const unsigned char *q = memchr(p, '\n', (size_t)(end - p));
			const unsigned char *stop = q ? q : end;

			if (!in_line) { /* a line starts: it may be the last */
				in_line = true;
				a->seq++;
				EVP_DigestInit_ex(md, EVP_sha256(), NULL);
			}
			EVP_DigestUpdate(md, p, (size_t)(stop - p));
			if (q)
				in_line = false;
			ended_nl = q != NULL;
			p = q ? q + 1 : end;
		}
	}
	if (a->seq) {
		static const char hex[] = "0123456789abcdef";

		if (!EVP_DigestFinal_ex(md, dg, &dglen) || dglen != 32) {
			memset(a->prev, '?', AUDIT_HASH_HEX); /* verification fails loudly */
		} else {
			for (unsigned i = 0; i < 32; i++) {
				a->prev[2 * i] = hex[dg[i] >> 4];
				a->prev[2 * i + 1] = hex[dg[i] & 15];
			}
		}
		a->prev[AUDIT_HASH_HEX] = 0;
		/* a torn last line (crash mid-write) is closed so the next record
		 * starts on its own line */
		if (!ended_nl) {
			ssize_t n = write(a->fd, "\n", 1);
			(void)n;
		}
	}
out:
	EVP_MD_CTX_free(md);
	return rc;
}

struct audit *audit_open(const char *path, char *err, size_t errlen)
{
	struct audit *a = calloc(1, sizeof(*a));

	if (!a) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (a->fd < 0) {
		snprintf(err, errlen, "audit log %s: %s", path, strerror(errno));
		free(a);
		return NULL;
	}
	if (load_tail(a, err, errlen, path)) {
		close(a->fd);
		free(a);
		return NULL;
	}
	pthread_mutex_init(&a->lock, NULL);
	return a;
}

static void rfc3339_now(char out[64])
{
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000));
}

int audit_append(struct audit *a, const char *who, const char *what, const char *result)
{
	char now[64], hash[AUDIT_HASH_HEX + 1];
	struct buf b = {0};
	int rc = -ENOMEM;

	pthread_mutex_lock(&a->lock);
	rfc3339_now(now);
	if (buf_appendf(&b, "{\"seq\":%llu,\"time\":\"%s\",\"who\":",
			(unsigned long long)a->seq + 1, now) ||
	    jsonw_buf_str(&b, who ? who : "") || buf_appends(&b, ",\"what\":") ||
	    jsonw_buf_str(&b, what ? what : "") || buf_appends(&b, ",\"result\":") ||
	    jsonw_buf_str(&b, result ? result : "") || buf_appends(&b, PREV_KEY) ||
	    buf_appends(&b, a->prev) || buf_appends(&b, "\"}"))
		goto out;
	if (b.len > AUDIT_LINE_MAX) {
		rc = -E2BIG;
		goto out;
	}
	audit_sha256_hex(buf_head(&b), b.len, hash);
	b.len -= 2; /* reopen prev's value: HASH_KEY closes it */
	if (buf_appends(&b, HASH_KEY) || buf_appends(&b, hash) || buf_appends(&b, "\"}"))
		goto out;
	char line_hash[AUDIT_HASH_HEX + 1];
	audit_sha256_hex(buf_head(&b), b.len, line_hash);
	if (buf_append(&b, "\n", 1))
		goto out;
	/* one write: O_APPEND keeps a record whole next to other writers */
	ssize_t n = write(a->fd, buf_head(&b), b.len);
	if (n != (ssize_t)b.len) {
		rc = n < 0 ? -errno : -EIO;
		goto out;
	}
	a->seq++;
	memcpy(a->prev, line_hash, sizeof(line_hash));
	rc = 0;
out:
	pthread_mutex_unlock(&a->lock);
	buf_free(&b);
	return rc;
}

uint64_t audit_last_seq(const struct audit *a)
{
	return a ? a->seq : 0;
}

void audit_close(struct audit *a)
{
	if (!a)
		return;
	close(a->fd);
	pthread_mutex_destroy(&a->lock);
	free(a);
}
