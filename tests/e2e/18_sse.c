/* 18_sse — a text/event-stream passes through reflexd event by event: with
 * the origin emitting 5 events 300 ms apart, the client sees each event when
 * it is sent (consecutive arrivals >= ~200 ms apart, the first well before
 * the stream ends), not all at once at the end. */
#include "lib/harness.h"

#include <stdlib.h>
#include <unistd.h>

#define EVENTS 5
#define INTERVAL_MS 300

static int gw_port, o_port;

struct events {
	struct h_buf stream;
	int n;
	double at[32];
};

/* Record the arrival time of every completed event ("...\n\n"). */
static void sse_sink(const char *data, size_t len, double t_ms, void *arg)
{
	struct events *ev = arg;
	size_t old = ev->stream.len;

	ev->stream.data = realloc(ev->stream.data, old + len + 1);
	memcpy(ev->stream.data + old, data, len);
	ev->stream.len = old + len;
	ev->stream.data[ev->stream.len] = 0;
	for (size_t i = old ? old - 1 : 0; i + 1 < ev->stream.len; i++)
		if (ev->stream.data[i] == '\n' && ev->stream.data[i + 1] == '\n' && ev->n < 32 &&
		    i + 1 >= old)
			ev->at[ev->n++] = t_ms;
}

static void test_sse(void)
{
	static struct events ev;
	struct h_resp r;
	char u[256], ct[128] = "", want[4096] = "";
	size_t off = 0;

	test_begin("sse_event_by_event");
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/?sse=%d&interval=%d", gw_port, EVENTS,
		 INTERVAL_MS);
	struct h_req q = {.url = u, .timeout_ms = 10000, .sink = sse_sink, .sink_arg = &ev};
	double t0 = h_now_ms();
	CHECK_MSG(h_http(&q, &r) == 0, "%s", r.error);
	double t_end = h_now_ms();
	CHECK_INT(r.status, 200);
	CHECK_MSG(h_resp_header(&r, "Content-Type", ct, sizeof(ct)) &&
			  strstr(ct, "text/event-stream"),
		  "Content-Type '%s'", ct);
	/* The origin may count events from 0 or from 1. */
	int base = ev.stream.len > 5 && !memcmp(ev.stream.data, "id: 1\n", 6) ? 1 : 0;
	for (int i = base; i < EVENTS + base; i++)
		off += (size_t)snprintf(want + off, sizeof(want) - off,
					"id: %d\ndata: event %d\n\n", i, i);
	CHECK_MSG(ev.stream.len == off && !memcmp(ev.stream.data, want, off), "stream '%s'",
		  h_excerpt(ev.stream.data, ev.stream.len, 300));
	CHECK_MSG(ev.n == EVENTS, "%d events seen, want %d", ev.n, EVENTS);
	/* A client (or origin) descheduled for a few hundred ms on a busy machine
	 * reads two events at once: one short gap is allowed, buffering shows as
	 * all of them short. */
	int short_gaps = 0, first_short = -1;
	for (int i = 0; i + 1 < ev.n; i++)
		if (ev.at[i + 1] - ev.at[i] < INTERVAL_MS - 100 && !short_gaps++)
			first_short = i;
	CHECK_MSG(short_gaps <= 1,
		  "%d of %d consecutive events arrived closer than %d ms (origin interval %d "
		  "ms), the first %d and %d %.0f ms apart: buffered?",
		  short_gaps, ev.n - 1, INTERVAL_MS - 100, INTERVAL_MS, first_short,
		  first_short + 1,
		  first_short >= 0 ? ev.at[first_short + 1] - ev.at[first_short] : 0.0);
	if (ev.n >= 1)
		CHECK_MSG(t_end - ev.at[0] >= (EVENTS - 2) * INTERVAL_MS,
			  "first event arrived %.0f ms after the start, only %.0f ms before the "
			  "end",
			  ev.at[0] - t0, t_end - ev.at[0]);
	h_resp_free(&r);
	free(ev.stream.data);
	test_end();
}

int main(void)
{
	h_init("18_sse", 60);
	gw_port = h_free_port();
	o_port = h_free_port();
	if (!h_start_origin("origin", o_port, 1)) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflex-origin did not start");
		return test_exit_code();
	}
	const char *cfg = h_write_config("workers: 1\n"
					 "listen: [\"127.0.0.1:%d\"]\n"
					 "upstream: [\"127.0.0.1:%d\"]\n"
					 "timeouts: {drain: 1s}\n",
					 gw_port, o_port);
	struct h_proc *gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd did not start (config %s)", cfg);
		return test_exit_code();
	}
	test_sse();
	h_finish(gw, 5000);
	return test_exit_code();
}
