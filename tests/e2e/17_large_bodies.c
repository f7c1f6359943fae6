/* 17_large_bodies — 1 GiB down and 1 GiB up through one reflexd worker with
 * no body limit: every byte arrives (count + FNV-1a hash, and the download
 * checked byte for byte against the origin pattern), each direction within
 * 60 s, and reflexd's RSS (sampled every 100 ms) grows by less than 16 MiB —
 * bodies stream, they are never buffered whole; also not when the client
 * stops reading for a while (backpressure reaches the origin). */
#include "lib/harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define GIB (1ULL << 30)
#define RSS_BUDGET_KB (16 * 1024)
#define XFER_MS 60000

static int gw_port, o_port;

struct sampler {
	pid_t pid;
	atomic_bool stop;
	long max_kb;
	int samples;
	pthread_t thread;
};

static void *sample_loop(void *arg)
{
	struct sampler *s = arg;

	while (!atomic_load(&s->stop)) {
		long kb = h_rss_kb(s->pid);

		if (kb > s->max_kb)
			s->max_kb = kb;
		s->samples++;
		h_sleep_ms(100);
	}
	return NULL;
}

static void sampler_start(struct sampler *s, pid_t pid)
{
	s->pid = pid;
	atomic_store(&s->stop, false);
	s->max_kb = h_rss_kb(pid);
	s->samples = 0;
	pthread_create(&s->thread, NULL, sample_loop, s);
}

static void sampler_stop(struct sampler *s)
{
	atomic_store(&s->stop, true);
	pthread_join(s->thread, NULL);
	long kb = h_rss_kb(s->pid);
	if (kb > s->max_kb)
		s->max_kb = kb;
}

/* Byte-for-byte check of the download against the origin pattern. */
struct pattern_check {
	uint64_t offset;
	uint64_t first_bad; /* UINT64_MAX while all good */
	char pat[26 * 2048];
};

static void check_sink(const char *data, size_t len, double t_ms, void *arg)
{
	struct pattern_check *pc = arg;

	while (len) {
		size_t k = (size_t)(pc->offset % 26);
		size_t piece = len < sizeof(pc->pat) - 26 ? len : sizeof(pc->pat) - 26;

		if (pc->first_bad == UINT64_MAX && memcmp(data, pc->pat + k, piece) != 0) {
			for (size_t i = 0; i < piece; i++)
				if (data[i] != pc->pat[k + i]) {
					pc->first_bad = pc->offset + i;
					break;
				}
		}
		data += piece;
		len -= piece;
		pc->offset += piece;
	}
}

static void test_download(struct h_proc *gw)
{
	static struct pattern_check pc;
	struct sampler s;
	struct h_resp r;
	char u[256];

	test_begin("download_1gib_bounded_memory");
	h_pattern_fill(pc.pat, sizeof(pc.pat), 0);
	pc.offset = 0;
	pc.first_bad = UINT64_MAX;
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/?size=%llu", gw_port, (unsigned long long)GIB);
	struct h_req q = {.url = u,
			  .count_only = true,
			  .timeout_ms = XFER_MS,
			  .sink = check_sink,
			  .sink_arg = &pc};
	long base = h_rss_kb(gw->pid);
	sampler_start(&s, gw->pid);
	int rc = h_http(&q, &r);
	sampler_stop(&s);
	CHECK_MSG(rc == 0, "download: %s after %.0f ms (%llu bytes)", r.error, r.time_ms,
		  (unsigned long long)r.body_bytes);
	CHECK_INT(r.status, 200);
	CHECK_MSG(r.body_bytes == GIB, "downloaded %llu bytes, want %llu",
		  (unsigned long long)r.body_bytes, (unsigned long long)GIB);
	CHECK_MSG(pc.first_bad == UINT64_MAX, "download differs from the pattern at byte %llu",
		  (unsigned long long)pc.first_bad);
	if (r.body_bytes == GIB)
		CHECK_MSG(r.body_hash == h_pattern_hash(GIB), "download hash differs");
	CHECK_MSG(s.max_kb - base < RSS_BUDGET_KB,
		  "reflexd RSS grew by %ld KiB during the download (before %ld, max %ld, %d "
		  "samples); budget %d KiB",
		  s.max_kb - base, base, s.max_kb, s.samples, RSS_BUDGET_KB);
	printf("  download: %.0f ms, RSS before %ld KiB, max %ld KiB\n", r.time_ms, base, s.max_kb);
	h_resp_free(&r);
	test_end();
}

/* Backpressure: a client that stops reading. The origin could push
 * gigabytes per second; reflexd must stop reading it instead of buffering. */
static void test_paused_client(struct h_proc *gw)
{
	const uint64_t n = 300ULL << 20;
	struct sampler s;
	static char buf[1 << 16];
	uint64_t got = 0, h = H_FNV_INIT;
	char req[256];
	int fd;

	test_begin("paused_client_bounded_memory");
	fd = h_connect("127.0.0.1", gw_port, 2000);
	CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
	if (fd < 0) {
		test_end();
		return;
	}
	int small = 65536;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	snprintf(req, sizeof(req),
		 "GET /?size=%llu HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		 (unsigned long long)n);
	long base = h_rss_kb(gw->pid);
	sampler_start(&s, gw->pid);
	h_send_str(fd, req);
	h_sleep_ms(2000); /* not reading */
	long paused_max = s.max_kb;
	/* Now drain it all: head, then the body bytes, hashed on the fly. */
	double end = h_now_ms() + XFER_MS;
	size_t head_len = 0;
	struct h_buf head = {0};
	if (h_read_until(fd, &head, "\r\n\r\n", 5000) == H_READ_DONE) {
		char *e = memmem(head.data, head.len, "\r\n\r\n", 4);

		head_len = (size_t)(e + 4 - head.data);
		got = head.len - head_len;
		h = h_fnv1a(h, head.data + head_len, (size_t)got);
	}
	while (head_len && got < n && h_now_ms() < end) {
		ssize_t k = read(fd, buf, sizeof(buf));
		if (k <= 0)
			break;
		h = h_fnv1a(h, buf, (size_t)k);
		got += (uint64_t)k;
	}
	sampler_stop(&s);
	close(fd);
	CHECK_MSG(head.len >= 12 && !memcmp(head.data + 9, "200", 3), "response head '%s'",
		  h_excerpt(head.data, head.len, 200));
	CHECK_MSG(got == n, "received %llu body bytes, want %llu", (unsigned long long)got,
		  (unsigned long long)n);
	if (got == n)
		CHECK_MSG(h == h_pattern_hash(n), "body hash differs");
	CHECK_MSG(paused_max - base < RSS_BUDGET_KB,
		  "reflexd RSS grew by %ld KiB while the client did not read (before %ld, max "
		  "%ld); budget %d KiB",
		  paused_max - base, base, paused_max, RSS_BUDGET_KB);
	CHECK_MSG(s.max_kb - base < RSS_BUDGET_KB,
		  "reflexd RSS grew by %ld KiB during the transfer; budget %d KiB", s.max_kb - base,
		  RSS_BUDGET_KB);
	printf("  paused client: RSS before %ld KiB, max while paused %ld KiB, max %ld KiB\n", base,
	       paused_max, s.max_kb);
	h_buf_free(&head);
	test_end();
}

static void gen_upload(char *buf, size_t len, uint64_t off, void *arg)
{
	/* Varied bytes (not the download pattern) so a mix-up cannot match. */
	uint32_t x = (uint32_t)(off * 2654435761u);

	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u + (uint32_t)((off + i) >> 20);
		buf[i] = (char)(x >> 24);
	}
}

static void test_upload(struct h_proc *gw)
{
	struct sampler s;
	struct h_resp r;
	char u[256], bytes[32] = "", hash[64] = "", want[17];

	test_begin("upload_1gib_bounded_memory");
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/", gw_port);
	struct h_req q = {.url = u,
			  .method = "POST",
			  .gen = gen_upload,
			  .gen_len = GIB,
			  .no_expect = true,
			  .timeout_ms = XFER_MS};
	long base = h_rss_kb(gw->pid);
	sampler_start(&s, gw->pid);
	int rc = h_http(&q, &r);
	sampler_stop(&s);
	CHECK_MSG(rc == 0, "upload: %s after %.0f ms (%llu bytes sent)", r.error, r.time_ms,
		  (unsigned long long)r.upload_bytes);
	CHECK_MSG(r.status == 200, "upload status %ld body '%s'", r.status,
		  h_excerpt(r.body, r.body_len, 200));
	CHECK_MSG(h_resp_header(&r, "X-Body-Bytes", bytes, sizeof(bytes)) &&
			  strtoull(bytes, NULL, 10) == GIB,
		  "origin X-Body-Bytes '%s', want %llu", bytes, (unsigned long long)GIB);
	CHECK_MSG(h_resp_header(&r, "X-Body-Hash", hash, sizeof(hash)) &&
			  !strcasecmp(hash, h_hex64(r.upload_hash, want)),
		  "origin X-Body-Hash '%s', sent %s", hash, want);
	CHECK_MSG(s.max_kb - base < RSS_BUDGET_KB,
		  "reflexd RSS grew by %ld KiB during the upload (before %ld, max %ld, %d "
		  "samples); budget %d KiB",
		  s.max_kb - base, base, s.max_kb, s.samples, RSS_BUDGET_KB);
	printf("  upload: %.0f ms, RSS before %ld KiB, max %ld KiB\n", r.time_ms, base, s.max_kb);
	h_resp_free(&r);
	test_end();
}

int main(void)
{
	h_init("17_large_bodies", 240);
	gw_port = h_free_port();
	o_port = h_free_port();
	if (!h_start_origin("origin", o_port, 1)) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflex-origin did not start");
		return test_exit_code();
	}
	const char *cfg = h_write_config("listen: [\"127.0.0.1:%d\"]\n"
					 "upstream: [\"127.0.0.1:%d\"]\n"
					 "limits: {body: 0}\n"
					 "timeouts: {drain: 1s}\n",
					 gw_port, o_port);
	const char *args[] = {"--config", cfg, "--workers", "1", NULL};
	struct h_proc *gw = h_start_reflexd("reflexd", gw_port, args);
	if (!gw) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd did not start (config %s)", cfg);
		return test_exit_code();
	}
	/* Warm up (pools, first buffers) so the baseline is the steady state. */
	for (int i = 0; i < 3; i++) {
		struct h_resp r;
		char u[256];

		snprintf(u, sizeof(u), "http://127.0.0.1:%d/?size=65536", gw_port);
		h_get(u, &r);
		h_resp_free(&r);
	}
	test_download(gw);
	test_paused_client(gw);
	test_upload(gw);
	h_finish(gw, 5000);
	return test_exit_code();
}
