/* selftest.h — the trivial in-process HTTP server behind `reflex-bench --self-test`.
 *
 * One thread, epoll, answering every request head (anything up to an empty
 * line; request bodies are not supported) with a fixed 200 response carrying
 * 1024 bytes, keep-alive, pipelining in order. It does nothing else, so a run
 * against it measures reflex-bench's own cost plus the loopback TCP stack:
 * the floor under every figure the tool reports on this machine.
 */
#ifndef REFLEX_LOADGEN_SELFTEST_H
#define REFLEX_LOADGEN_SELFTEST_H

/* Listen on 127.0.0.1 (a free port, returned in *port) and serve from a new
 * thread. 0 or -errno. */
int selftest_start(int *port);
/* Stop the thread and close everything. */
void selftest_stop(void);

#endif
