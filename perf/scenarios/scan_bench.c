/* scan_bench.c — scan throughput of the reflex detectors, per core.
 *
 * Prompt-like bodies (a chat-completion JSON request: English sentences of
 * the kind orchestrators carry, a bit of code and SQL, numbers, dates, URLs
 * and now and then an email, a phone number or an IP address) of 1 KiB, 10 KiB and 100 KiB are scanned with:
 *   - detect_scan(): the full built-in detector set in one Hyperscan pass,
 *     validators and match delivery included (what the gateway pays);
 *   - the same, streamed in 4 KiB feeds (detect_stream_*);
 *   - PCRE2 with JIT, the same patterns one after the other over the same
 *     bytes, every match found (the baseline a naive gateway would pay).
 * Throughput is bytes over thread CPU time (CLOCK_THREAD_CPUTIME_ID), so it
 * is "per core" even on a shared machine; wall-clock time is longer when
 * other work competes for the core. That clock is a system call (~0.5 us
 * here, half the scan time of a 1 KiB body): it is read once per batch of
 * BATCH_BYTES, not once per body.
 *
 * Usage: build/scan-bench [seconds per cell, default 0.5]
 *        build/scan-bench --count BODY_BYTES MIB [stream]
 *            scan MIB MiB once, without timing (for instruction counts:
 *            valgrind --tool=callgrind, perf stat where the PMU is exposed)
 * Not run by `make test`.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "http/detect.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Bytes scanned between two reads of the CPU clock. */
#define BATCH_BYTES (256 * 1024)

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static unsigned rnd(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned)(rng % n);
}

/* Sentences of the kind orchestrator traffic carries: task statements,
 * retrieved context, code, support tickets. Some mention prompts,
 * instructions and systems, as real prompts do. */
static const char *const sentences[] = {
	"You are a helpful assistant for the billing team.",
	"Summarize the following support ticket in three bullet points.",
	"The customer says the invoice for March was charged twice and asks for a refund.",
	"Please answer using only the context below; if the answer is not there, say so.",
	"Context: the quarterly revenue grew by 12 percent, driven by the enterprise segment.",
	"Our service level objective is 99.9 percent availability measured over 30 days.",
	"Write a Python function that parses the CSV file and returns the total per region.",
	"def total(rows):\n    return sum(r['amount'] for r in rows if r['region'] == 'EU')",
	"The deployment failed because the container image could not be pulled from the registry.",
	"Translate the paragraph into French and keep the product names in English.",
	"Follow the steps in the runbook before escalating to the on-call engineer.",
	"The meeting notes mention that the migration is planned for the second week of June.",
	"Classify the sentiment of each review as positive, negative or neutral.",
	"Review: the delivery was late but the support team was friendly and fixed it quickly.",
	"Explain why the query is slow and suggest an index.",
	"SELECT customer_id, SUM(total) FROM orders WHERE created_at > NOW() - INTERVAL '7 days'",
	"The system prompt for this agent is maintained by the platform team.",
	"Keep answers short, cite the document title, and never invent numbers.",
	"Draft a polite reply that explains the new pricing and links to the FAQ.",
	"The error message says: connection reset by peer while reading response header.",
	"List the action items with an owner and a due date for each.",
	"In the previous version the cache was invalidated on every write, which hurt latency.",
	"Extract the company names, dates and amounts from the contract excerpt.",
	"The agent should ask a clarifying question when the request is ambiguous.",
	"Generate five test cases for the date parser, including leap years.",
	"Rewrite the release notes for a non-technical audience.",
	"Given the instructions in the onboarding guide, what should a new hire do first?",
	"The model returned an empty response; retry with a lower temperature.",
	"Compare the two proposals and recommend one, with reasons.",
	"This document describes the architecture of the payments gateway and its failure modes.",
};

static const char *const extras[] = {
	" contact jane.doe@example.com for details ",
	" call (415) 555-0132 after 5pm ",
	" the host 10.20.30.40 timed out ",
	" see https://docs.example.org/v2/guide?x=1 ",
	" on 2024-05-17 at 10:30:00 ",
	" order #48213 shipped, total $1,249.99 ",
	" version 3.11.4 of the library ",
	" std::vector<int> v; v.push_back(42); ",
	" {\\\"id\\\": 12345, \\\"qty\\\": 7} ",
	" ticket ABC-1234 ",
};

/* Fill buf with a prompt-like JSON request body of exactly len bytes. */
static void make_body(char *buf, size_t len)
{
	static const char head[] =
		"{\"model\":\"orchestrator-large\",\"stream\":false,\"messages\":[{\"role\":"
		"\"user\",\"content\":\"";
	static const char tail[] = "\"}]}";
	size_t k = 0;
	memcpy(buf, head, sizeof(head) - 1);
	k = sizeof(head) - 1;
	size_t stop = len - (sizeof(tail) - 1);
	size_t next_extra = 300 + rnd(400);
	while (k < stop) {
		const char *w;
		if (k >= next_extra) {
			w = extras[rnd(sizeof(extras) / sizeof(extras[0]))];
			next_extra = k + 300 + rnd(600);
		} else {
			w = sentences[rnd(sizeof(sentences) / sizeof(sentences[0]))];
		}
		/* JSON string content: newlines and quotes escaped. */
		for (const char *s = w; *s && k < stop; s++) {
			if (*s == '\n' || *s == '"') {
				if (k + 2 > stop)
					break;
				buf[k++] = '\\';
				buf[k++] = *s == '\n' ? 'n' : '"';
			} else {
				buf[k++] = *s;
			}
		}
		if (k < stop)
			buf[k++] = ' ';
	}
	memcpy(buf + stop, tail, sizeof(tail) - 1);
}

static int count_match(void *arg, const struct detect_match *m)
{
	(*(uint64_t *)arg)++;
	return 0;
}

struct pcre_set {
	pcre2_code **code;
	pcre2_match_data **md;
	unsigned n;
};

static int pcre_build(struct pcre_set *ps)
{
	ps->n = detect_builtin_pattern_count();
	ps->code = calloc(ps->n, sizeof(*ps->code));
	ps->md = calloc(ps->n, sizeof(*ps->md));
	for (unsigned i = 0; i < ps->n; i++) {
		bool ci;
		const char *re = detect_builtin_pattern(i, NULL, &ci);
		int err;
		PCRE2_SIZE eoff;
		ps->code[i] = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED,
					    ci ? PCRE2_CASELESS : 0, &err, &eoff, NULL);
		if (!ps->code[i]) {
			PCRE2_UCHAR msg[256];
			pcre2_get_error_message(err, msg, sizeof(msg));
			fprintf(stderr, "pcre2: pattern %u: %s\n", i, msg);
			return -1;
		}
		if (pcre2_jit_compile(ps->code[i], PCRE2_JIT_COMPLETE) != 0) {
			fprintf(stderr, "pcre2: pattern %u: JIT unavailable\n", i);
			return -1;
		}
		ps->md[i] = pcre2_match_data_create_from_pattern(ps->code[i], NULL);
	}
	return 0;
}

static uint64_t pcre_scan(struct pcre_set *ps, const char *buf, size_t len)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < ps->n; i++) {
		PCRE2_SIZE off = 0;
		while (off <= len && pcre2_jit_match(ps->code[i], (PCRE2_SPTR)buf, len, off, 0,
						     ps->md[i], NULL) > 0) {
			PCRE2_SIZE *ov = pcre2_get_ovector_pointer(ps->md[i]);
			n++;
			off = ov[1] > ov[0] ? ov[1] : ov[1] + 1;
		}
	}
	return n;
}

/* --count: scan `total` bytes of bodies of `len` bytes once, no clock, so
 * that an instruction counter (callgrind, perf stat) sees only the scan
 * plus a fixed set-up: instructions per byte, steady on a busy machine. */
static int count_run(struct detect_db *db, struct detect_scratch *s, size_t len, size_t total,
		     bool stream)
{
	const size_t pool_bytes = 1 << 20;
	size_t nb = pool_bytes / len;
	char *pool = malloc(nb * len);
	uint64_t hits = 0;

	if (!pool)
		return 1;
	for (size_t b = 0; b < nb; b++)
		make_body(pool + b * len, len);
	for (size_t done = 0, b = 0; done < total; done += len, b = (b + 1) % nb) {
		const char *p = pool + b * len;
		struct detect_stream *st;
		if (!stream) {
			detect_scan(db, s, p, len, count_match, &hits);
			continue;
		}
		if (detect_stream_open(db, count_match, &hits, &st))
			return 1;
		for (size_t off = 0; off < len; off += 4096)
			detect_stream_feed(st, s, p + off, len - off < 4096 ? len - off : 4096);
		detect_stream_finish(st, s);
	}
	printf("%s: %zu bytes in %zu-byte bodies, %llu matches\n", stream ? "stream" : "block",
	       total, len, (unsigned long long)hits);
	free(pool);
	return 0;
}

int main(int argc, char **argv)
{
	double cell = argc > 1 ? atof(argv[1]) : 0.5;
	static const size_t sizes[] = {1024, 10 * 1024, 100 * 1024};
	const size_t pool_bytes = 1 << 20;
	struct detect_db *db;
	struct detect_scratch *s;
	struct pcre_set ps;
	char err[256];

	if (cell <= 0 || cell > 10)
		cell = 0.5;
	if (detect_db_build(NULL, &db, err, sizeof(err))) {
		fprintf(stderr, "detect_db_build: %s\n", err);
		return 1;
	}
	if (argc > 3 && !strcmp(argv[1], "--count")) {
		if (detect_scratch_new(db, &s))
			return 1;
		int rc = count_run(db, s, (size_t)atoi(argv[2]), (size_t)atof(argv[3]) << 20,
				   argc > 4 && !strcmp(argv[4], "stream"));
		detect_scratch_free(s);
		detect_db_free(db);
		return rc;
	}
	if (detect_scratch_new(db, &s) || pcre_build(&ps))
		return 1;

	printf("scan-bench: %u detectors, %u patterns, %.2f s CPU per cell\n", detect_count(db),
	       detect_builtin_pattern_count(), cell);
	printf("%-8s %14s %14s %14s %10s %8s %8s\n", "body", "hyperscan", "hs-stream4K",
	       "pcre2-jit", "hs/pcre2", "hs-hits", "pcre-hits");
	for (unsigned si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		size_t len = sizes[si], nb = pool_bytes / len;
		char *pool = malloc(nb * len);
		for (size_t b = 0; b < nb; b++)
			make_body(pool + b * len, len);

		uint64_t hits = 0, bytes = 0;
		double t0 = cpu_now(), t;
		size_t b = 0;
		do {
			for (size_t k = 0; k < BATCH_BYTES; k += len) {
				detect_scan(db, s, pool + b * len, len, count_match, &hits);
				bytes += len;
				b = (b + 1) % nb;
			}
		} while ((t = cpu_now() - t0) < cell);
		double hs_rate = (double)bytes / t;
		double hs_hits = (double)hits / ((double)bytes / (double)len);

		uint64_t shits = 0;
		bytes = 0;
		b = 0;
		t0 = cpu_now();
		do {
			for (size_t k = 0; k < BATCH_BYTES; k += len) {
				struct detect_stream *st;
				if (detect_stream_open(db, count_match, &shits, &st))
					return 1;
				const char *p = pool + b * len;
				for (size_t off = 0; off < len; off += 4096)
					detect_stream_feed(st, s, p + off,
							   len - off < 4096 ? len - off : 4096);
				detect_stream_finish(st, s);
				bytes += len;
				b = (b + 1) % nb;
			}
		} while ((t = cpu_now() - t0) < cell);
		double st_rate = (double)bytes / t;

		uint64_t phits = 0;
		bytes = 0;
		b = 0;
		t0 = cpu_now();
		do {
			for (size_t k = 0; k < BATCH_BYTES; k += len) {
				phits += pcre_scan(&ps, pool + b * len, len);
				bytes += len;
				b = (b + 1) % nb;
			}
		} while ((t = cpu_now() - t0) < cell);
		double pc_rate = (double)bytes / t;
		double pc_hits = (double)phits / ((double)bytes / (double)len);

		char name[32];
		snprintf(name, sizeof(name), "%zu KiB", len / 1024);
		printf("%-8s %9.0f MB/s %9.0f MB/s %9.0f MB/s %9.1fx %8.1f %8.1f\n", name,
		       hs_rate / 1e6, st_rate / 1e6, pc_rate / 1e6, hs_rate / pc_rate, hs_hits,
		       pc_hits);
		free(pool);
	}
	printf("(MB/s = 10^6 bytes per second of thread CPU time; hits = detector matches per "
	       "body after validation vs raw PCRE2 matches)\n");
	for (unsigned i = 0; i < ps.n; i++) {
		pcre2_match_data_free(ps.md[i]);
		pcre2_code_free(ps.code[i]);
	}
	free(ps.code);
	free(ps.md);
	detect_scratch_free(s);
	detect_db_free(db);
	return 0;
}
