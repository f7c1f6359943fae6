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

static int read_all(int fd, struct buf *b)
{
	for (;;) {
		if (buf_reserve(b, 65536))
			return -ENOMEM;
		ssize_t n = read(fd, b->data + b->off + b->len, 65536);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		b->len += (size_t)n;
	}
}

int audit_verify(const char *path, uint64_t *first_bad_seq, uint64_t *records, char *err,
		 size_t errlen)
{
	char prev[AUDIT_HASH_HEX + 1] = ZERO_HASH, why[200];
	struct buf b = {0};
	uint64_t seq = 0;
	size_t off = 0;
	int fd, rc;

	*first_bad_seq = 0;
	*records = 0;
	if (errlen)
		err[0] = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	rc = read_all(fd, &b);
	close(fd);
	if (rc) {
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		goto out;
	}
	while (off < b.len) {
		const char *line = buf_head(&b) + off;
		const char *nl = memchr(line, '\n', b.len - off);
		size_t len = nl ? (size_t)(nl - line) : b.len - off;

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
		off += len + 1;
	}
	*records = seq;
	rc = 0;
out:
	buf_free(&b);
	return rc;
}

/* Continue the chain from the file's last line (whatever it holds: a bad
 * line is then caught by verification, not papered over). */
static int load_tail(struct audit *a, char *err, size_t errlen, const char *path)
{
	struct buf b = {0};
	int rc = read_all(a->fd, &b);
	size_t off = 0, last = 0, last_len = 0;

	if (rc) {
		snprintf(err, errlen, "audit log %s: %s", path, strerror(-rc));
		buf_free(&b);
		return rc;
	}
	a->seq = 0;
	strcpy(a->prev, ZERO_HASH);
	while (off < b.len) {
		const char *nl = memchr(buf_head(&b) + off, '\n', b.len - off);
		size_t len = nl ? (size_t)(nl - buf_head(&b) - off) : b.len - off;

		last = off;
		last_len = len;
		a->seq++;
		off += len + 1;
	}
	if (a->seq) {
		audit_sha256_hex(buf_head(&b) + last, last_len, a->prev);
		/* a torn last line (crash mid-write) is closed so the next record
		 * starts on its own line */
		if (b.data[b.off + b.len - 1] != '\n') {
			ssize_t n = write(a->fd, "\n", 1);
			(void)n;
		}
	}
	buf_free(&b);
	return 0;
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
