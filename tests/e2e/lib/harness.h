/* harness.h — what every e2e scenario (tests/e2e/NN_name.c) is built from.
 *
 * A scenario is one program: it calls h_init() first, starts real processes
 * (reflex-origin, reflexd) on free loopback ports, talks to them through
 * libcurl or raw sockets, reports with tests/lib/test.h, and returns
 * test_exit_code(). Everything it started is stopped at exit — also when a
 * check fails, the scenario crashes on a signal, or the watchdog fires — and
 * when a test failed, the tail of each process's log is printed.
 *
 * Binaries come from $REFLEX_BUILD (default "build"); process logs go to
 * $REFLEX_BUILD/test-logs/e2e-<scenario>-<name>.log, temp configs next to
 * them. All waits have deadlines; nothing here blocks forever.
 *
 * Errors: functions returning int return 0 / -errno (or -1 with a message on
 * stderr where there is no errno); pointers are NULL on failure.
 */
#ifndef REFLEX_E2E_HARNESS_H
#define REFLEX_E2E_HARNESS_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "tests/lib/test.h"

/* ---- lifetime -------------------------------------------------------------- */

/* Call first. Names the scenario (used in log names), installs the exit and
 * signal cleanup, ignores SIGPIPE, initialises libcurl, and arms a watchdog:
 * after watchdog_s seconds the scenario prints a FAIL line, stops its
 * processes and exits 1 (so a hang never waits for the runner's timeout). */
void h_init(const char *scenario, unsigned watchdog_s);

/* $REFLEX_BUILD or "build". */
const char *h_build_dir(void);
/* "<build>/reflexd", "<build>/reflex-origin" (static buffers). */
const char *h_reflexd_path(void);
const char *h_origin_path(void);

/* Monotonic clock in milliseconds. */
double h_now_ms(void);
void h_sleep_ms(unsigned ms);

/* ---- ports and addresses --------------------------------------------------- */

/* A free TCP port on 127.0.0.1 (bind port 0, read it back, close); never one
 * this scenario was handed before (IPv4 or IPv6). */
int h_free_port(void);
/* A free TCP port on ::1, or -1 when IPv6 loopback is unavailable. */
int h_free_port6(void);

/* ---- processes ------------------------------------------------------------- */

struct h_proc {
	pid_t pid;
	char name[64];
	char log[1024]; /* stdout+stderr of the process */
	bool exited;
	int status; /* waitpid status once exited */
};

/* Start argv (argv[0] is the binary path, NULL-terminated) with stdout and
 * stderr appended to the log, stdin from /dev/null. If port > 0, wait up to
 * ready_ms until host:port accepts a connection; fail early (and print the
 * log tail) if the process dies first. Returns NULL on failure. The process
 * is registered for cleanup at exit. */
struct h_proc *h_spawn(const char *name, char *const argv[], const char *host, int port,
		       unsigned ready_ms);

/* reflex-origin --listen 127.0.0.1:port --name name [--workers workers].
 * This and the reflexd starters wait up to 10 s for the port. h_spawn
 * rides out a binary that is being relinked in the shared build tree (waits
 * for it to be executable, retries an exec that failed with status 127). */
struct h_proc *h_start_origin(const char *name, int port, unsigned workers);

/* reflexd with the given arguments (not including argv[0], NULL-terminated),
 * waiting until 127.0.0.1:port accepts and reflexd printed "reflexd: ready".
 * The workers arm their accepts right after that line, each in its own time:
 * /readyz (and reflexctl status) may still say "not ready" for a moment, so a
 * check of readiness or of accept counters polls with a deadline. */
struct h_proc *h_start_reflexd(const char *name, int port, const char *const args[]);

/* reflexd --config path, waiting until 127.0.0.1:port accepts. */
struct h_proc *h_start_reflexd_config(const char *name, int port, const char *config_path);

/* Wait until host:port accepts a TCP connection: 0, or -ETIMEDOUT. */
int h_wait_port(const char *host, int port, unsigned timeout_ms);

/* Send sig; 0 or -errno. */
int h_signal(struct h_proc *p, int sig);
/* Wait up to timeout_ms for the process to exit: 0 (p->status set) or
 * -ETIMEDOUT. */
int h_wait_exit(struct h_proc *p, unsigned timeout_ms);
/* SIGTERM, wait up to timeout_ms, then SIGKILL. Returns the waitpid status
 * (or -1). Safe on NULL and on an already exited process. */
int h_stop(struct h_proc *p, unsigned timeout_ms);
/* True while the process runs (reaps it if it exited). */
bool h_alive(struct h_proc *p);
/* The closing checks of a scenario for a process it owns (usually reflexd):
 * test "<name>_alive" (it did not die during the scenario) and test
 * "<name>_clean_exit" (SIGTERM → exit status 0 within timeout_ms, and no
 * sanitizer report in its log). */
void h_finish(struct h_proc *p, unsigned timeout_ms);
/* True if the process log contains needle. */
bool h_log_contains(const struct h_proc *p, const char *needle);
/* Poll the log (every 20 ms) until it contains needle: true, or false once
 * timeout_ms passed without it. For lines written after an event the test
 * caused (a refused handshake, a reload): the writer is another process. */
bool h_wait_log(const struct h_proc *p, const char *needle, unsigned timeout_ms);
/* True if the log holds an ASan/UBSan/LSan report. */
bool h_log_has_sanitizer_report(const struct h_proc *p);
/* Print the last `lines` lines of the log to stdout, indented. */
void h_log_tail(const struct h_proc *p, int lines);

/* Run argv to completion (up to timeout_ms, then SIGKILL), capturing stdout
 * and stderr together into *out (malloc'd, NUL-terminated; may be NULL).
 * Returns the waitpid status, or -1. */
int h_run(char *const argv[], unsigned timeout_ms, char **out);

/* VmRSS of pid in KiB, or -1. */
long h_rss_kb(pid_t pid);

/* ---- temp files ------------------------------------------------------------ */

/* Write a printf-formatted YAML (or any) file under <build>/test-logs and
 * return its path (static storage per call; up to 16 live paths). */
const char *h_write_config(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- hashing and the origin's body pattern --------------------------------- */

#define H_FNV_INIT 0xcbf29ce484222325ULL
uint64_t h_fnv1a(uint64_t h, const void *data, size_t len);
/* Fill buf with the origin's generated body bytes [offset, offset+len):
 * byte i is 'a' + i % 26. */
void h_pattern_fill(char *buf, size_t len, uint64_t offset);
/* FNV-1a 64 of the first n bytes of the origin pattern. */
uint64_t h_pattern_hash(uint64_t n);
/* "%016llx" of h into out[17]. */
const char *h_hex64(uint64_t h, char out[17]);

/* ---- libcurl client -------------------------------------------------------- */

/* Generates upload bytes on the fly: fill buf[0..len) with the bytes at
 * [offset, offset+len) of the body. */
typedef void (*h_gen_fn)(char *buf, size_t len, uint64_t offset, void *arg);
/* Called with every piece of the response body as it arrives (after the
 * harness hashed/stored it); t_ms is h_now_ms() at arrival. */
typedef void (*h_sink_fn)(const char *data, size_t len, double t_ms, void *arg);

struct h_req {
	const char *method; /* NULL → GET, or POST when a body is given */
	const char *url;
	const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
	const void *body;	    /* request body from memory ... */
	size_t body_len;
	h_gen_fn gen; /* ... or generated: gen_len bytes */
	uint64_t gen_len;
	void *gen_arg;
	bool chunked;	     /* send the body chunked (no Content-Length) */
	bool no_expect;	     /* suppress libcurl's automatic Expect: 100-continue */
	bool head;	     /* HEAD request */
	bool http10;	     /* speak HTTP/1.0 */
	bool count_only;     /* do not keep the body: count + hash only */
	long timeout_ms;     /* whole transfer; 0 → 10000 */
	void *curl;	     /* reuse this CURL easy handle (keeps its
					  connection); NULL → a fresh one */
	const char *resolve; /* CURLOPT_RESOLVE entry, e.g. "api.example.com:80:127.0.0.1" */
	h_sink_fn sink;
	void *sink_arg;
};

struct h_resp {
	int curl_rc; /* CURLcode; 0 is success */
	char error[512];
	long status;   /* final status (after any 1xx) */
	char *headers; /* the final response's header lines, raw */
	size_t headers_len;
	char *body; /* NULL with count_only */
	size_t body_len;
	uint64_t body_bytes;  /* always counted */
	uint64_t body_hash;   /* FNV-1a 64 of the body */
	double time_ms;	      /* whole transfer */
	long num_connects;    /* new connections curl had to open */
	uint64_t upload_hash; /* FNV-1a 64 of what was sent */
	uint64_t upload_bytes;
};

/* Perform the request. Returns 0 when the transfer completed (any status),
 * else -1 with resp->curl_rc / resp->error set. resp is always filled in and
 * must be released with h_resp_free(). */
int h_http(const struct h_req *req, struct h_resp *resp);
void h_resp_free(struct h_resp *resp);
/* Value of the first header `name` (case-insensitive) of the final response,
 * copied into out (trimmed). Returns true when present. */
bool h_resp_header(const struct h_resp *resp, const char *name, char *out, size_t outlen);

/* A reusable client handle (keeps its connection between h_http calls). */
void *h_curl_new(void);
void h_curl_free(void *curl);

/* Convenience: GET url, body kept, 10 s timeout. Returns the status or -1. */
long h_get(const char *url, struct h_resp *resp);

/* ---- raw sockets ----------------------------------------------------------- */

/* Blocking TCP connect to host:port with a deadline: fd or -errno. host may
 * be "127.0.0.1" or "::1". */
int h_connect(const char *host, int port, unsigned timeout_ms);
/* Send all of buf (loops; short on error). Returns 0 or -errno. */
int h_send_all(int fd, const void *buf, size_t len);
/* A scripted upstream: a TCP server on 127.0.0.1 (an ephemeral port, in
 * *port) that runs serve in a thread of its own for every connection, with
 * the socket as (intptr_t)arg; serve closes it. It runs until the test
 * exits. 0 or -1. */
int h_serve_tcp(void *(*serve)(void *arg), int *port);
static inline int h_send_str(int fd, const char *s)
{
	return h_send_all(fd, s, strlen(s));
}

/* How a raw read ended. */
enum h_read_end {
	H_READ_CLOSED = 0, /* orderly EOF from the peer */
	H_READ_RESET,	   /* ECONNRESET */
	H_READ_TIMEOUT,	   /* deadline passed with the connection still open */
	H_READ_ERROR,
	H_READ_DONE, /* stop condition met (see h_read_responses) */
};
const char *h_read_end_name(enum h_read_end e);

struct h_buf {
	char *data;
	size_t len, cap;
};
void h_buf_free(struct h_buf *b);

/* Read everything until the peer closes, or timeout_ms passes (total), or
 * idle_ms passes without a byte (0 = no idle limit). Appends to b. */
enum h_read_end h_read_all(int fd, struct h_buf *b, unsigned timeout_ms, unsigned idle_ms);

/* Read until buf contains needle (H_READ_DONE), the peer closes, or the
 * deadline passes. */
enum h_read_end h_read_until(int fd, struct h_buf *b, const char *needle, unsigned timeout_ms);

/* One response parsed from a raw byte stream. */
struct h_raw_resp {
	int status;
	int minor;  /* HTTP/1.x */
	char *head; /* status line + header lines (malloc'd, NUL-terminated) */
	char *body; /* decoded body (de-chunked), malloc'd, NUL-terminated */
	size_t body_len;
	bool chunked;	  /* framed with Transfer-Encoding: chunked */
	bool has_cl;	  /* framed with Content-Length */
	bool close_delim; /* body ran to the end of the stream */
	bool complete;	  /* framing was complete */
	size_t wire_len;  /* bytes of the stream it used */
};

/* Parse consecutive responses from buf. is_head[i] (may be NULL) says that
 * the i-th final response answers a HEAD. 1xx interim responses are returned
 * as entries too (status 100..199, no body) and do not consume an is_head
 * slot. Returns the number of entries filled (<= max); an incomplete last
 * response is returned with complete = false. */
int h_parse_responses(const char *buf, size_t len, struct h_raw_resp *out, int max,
		      const bool *is_head);
void h_raw_resp_free(struct h_raw_resp *r, int n);
/* Header value from a raw head (case-insensitive name; first match). */
bool h_head_header(const char *head, const char *name, char *out, size_t outlen);

/* Read from fd until `want` complete final (non-1xx) responses are parsed,
 * the peer closes, or the deadline passes. Returns H_READ_DONE when enough
 * responses arrived. */
enum h_read_end h_read_responses(int fd, struct h_buf *b, int want, unsigned timeout_ms);

/* Connect to host:port, send len bytes of req, then read until the peer
 * closes or timeout_ms passes. Returns how the read ended (H_READ_ERROR when
 * the connect or the send failed; the send error is ignored when the peer
 * already answered and closed). */
enum h_read_end h_raw_roundtrip(const char *host, int port, const void *req, size_t len,
				struct h_buf *b, unsigned timeout_ms);

/* GET target from 127.0.0.1:port with Host: host and Connection: close, the
 * target sent exactly as written (curl would resolve "//" and dot segments
 * itself), reading as h_raw_roundtrip does. */
enum h_read_end h_raw_get(int port, const char *host, const char *target, struct h_buf *b,
			  unsigned timeout_ms);

/* Status codes of the responses in buf (interim 1xx included), up to max;
 * returns how many. */
int h_statuses(const char *buf, size_t len, int *codes, int max);

/* Printable, escaped excerpt of bytes (for failure messages). Static buffer. */
const char *h_excerpt(const char *buf, size_t len, size_t max);
/* s is exactly 32 hex digits (a generated X-Request-ID). */
bool h_is_hex32(const char *s);

/* ---- origin helpers -------------------------------------------------------- */

struct h_origin_stats {
	long requests, connections, open;
};
/* GET http://127.0.0.1:port/__stats from the origin directly: 0 or -1. */
int h_origin_stats(int port, struct h_origin_stats *st);
/* The requests the origin at port has answered, or -1. */
long h_origin_requests(int port);

/* The origin's /echo answer. */
#define H_ECHO_MAX_HEADERS 200
struct h_echo {
	char method[64];
	char target[4096];
	char version[16];
	int n_headers;
	char *names[H_ECHO_MAX_HEADERS];
	char *values[H_ECHO_MAX_HEADERS];
	long long body_bytes;
	char body_hash[32];
};
/* Parse /echo JSON: 0 or -1. Free with h_echo_free. */
int h_echo_parse(const char *json, size_t len, struct h_echo *e);
void h_echo_free(struct h_echo *e);
/* First value of header `name` (case-insensitive) as seen by the origin. */
const char *h_echo_header(const struct h_echo *e, const char *name);
/* Number of header fields named `name`. */
int h_echo_count(const struct h_echo *e, const char *name);

#endif
