/* reflex-origin — the reference orchestrator (a configurable HTTP/1.1 origin)
 * used by the demo, the e2e tests and the benchmarks. The interface is
 * documented in docs/origin.md.
 *
 * main parses the flags, creates every listening socket up front (one
 * SO_REUSEPORT socket per worker and address, so a port given as 0 is
 * resolved once and shared), starts the workers, announces readiness on
 * stderr and waits for SIGTERM/SIGINT, on which the process exits 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "worker.h"

#define MAX_LISTEN 16
#define MAX_WORKERS 256

struct listen_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[128]; /* as announced, with the resolved port */
};

static void usage(FILE *f)
{
	fprintf(f, "usage: reflex-origin --listen ADDR:PORT [--listen ...] [--workers N] [--name "
		   "NAME] [--slow MS]\n"
		   "  ADDR is an IPv4 address or [IPv6]; PORT 0 picks a free port.\n"
		   "  Behaviour per request: see docs/origin.md.\n"
		   "  --slow MS: SIGUSR1 adds MS to every response, SIGUSR2 stops it.\n");
}

/* "1.2.3.4:80", "[::1]:80", "*:80" / ":80" (any IPv4). 0 or -1. */
static int parse_addr(const char *s, struct listen_addr *a)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon, *h = s;
	size_t hl;
	char *end;
	long port;

	memset(a, 0, sizeof(*a));
	if (*s == '[') {
		const char *rb = strchr(s, ']');

		if (!rb || rb[1] != ':')
			return -1;
		h = s + 1;
		hl = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -1;
		hl = (size_t)(colon - s);
	}
	if (hl >= sizeof(host))
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || port < 0 || port > 65535)
		return -1;

	if (*s == '[') {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return -1;
		a->len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		if (hl == 0 || strcmp(host, "*") == 0)
			sin->sin_addr.s_addr = htonl(INADDR_ANY);
		else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return -1;
		a->len = sizeof(*sin);
	}
	return 0;
}

static void addr_text(struct listen_addr *a)
{
	char host[INET6_ADDRSTRLEN];

	if (a->ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(a->text, sizeof(a->text), "[%s]:%u", host, ntohs(sin6->sin6_port));
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(a->text, sizeof(a->text), "%s:%u", host, ntohs(sin->sin_port));
	}
}

/* One listening socket on a; the first one of an address resolves port 0
 * into a (later ones bind the same port through SO_REUSEPORT). fd or -errno. */
static int open_listener(struct listen_addr *a)
{
	int one = 1, fd, err;

	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
		goto fail;
	if (a->ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)
		goto fail;
	if (bind(fd, (struct sockaddr *)&a->ss, a->len) != 0)
		goto fail;
	if (listen(fd, 4096) != 0)
		goto fail;
	if (getsockname(fd, (struct sockaddr *)&a->ss, &a->len) != 0)
		goto fail;
	return fd;
fail:
	err = errno;
	close(fd);
	return -err;
}

int main(int argc, char **argv)
{
	static struct listen_addr addrs[MAX_LISTEN];
	unsigned n_addrs = 0, n_workers = 1;
	uint64_t slow_ms = 0;
	const char *name = "origin";
	struct worker_args *wargs;
	pthread_barrier_t ready;
	sigset_t sigs;
	int sig;

	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(opt, "-h") == 0 || strcmp(opt, "--help") == 0) {
			usage(stdout);
			return 0;
		}
		if (!val) {
			usage(stderr);
			return 2;
		}
		i++;
		if (strcmp(opt, "--listen") == 0) {
			if (n_addrs == MAX_LISTEN || parse_addr(val, &addrs[n_addrs]) != 0) {
				fprintf(stderr, "reflex-origin: bad --listen '%s'\n", val);
				return 2;
			}
			n_addrs++;
		} else if (strcmp(opt, "--workers") == 0) {
			char *end;
			long n = strtol(val, &end, 10);

			if (*end || n < 1 || n > MAX_WORKERS) {
				fprintf(stderr, "reflex-origin: bad --workers '%s'\n", val);
				return 2;
			}
			n_workers = (unsigned)n;
		} else if (strcmp(opt, "--slow") == 0) {
			char *end;
			unsigned long long v = strtoull(val, &end, 10);

			if (!*val || *end || v > 600000) {
				fprintf(stderr, "reflex-origin: bad --slow '%s' (ms, up to 600000)\n",
					val);
				return 2;
			}
			slow_ms = v;
		} else if (strcmp(opt, "--name") == 0) {
			if (!*val || strlen(val) > 256 || strpbrk(val, "\r\n")) {
				fprintf(stderr, "reflex-origin: bad --name\n");
				return 2;
			}
			name = val;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!n_addrs) {
		usage(stderr);
		return 2;
	}

	/* Benchmarks open many connections: take all the descriptors allowed. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	/* Workers inherit this mask; only main takes the signals (sigwait). */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGUSR1);
	sigaddset(&sigs, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	wargs = calloc(n_workers, sizeof(*wargs));
	origin_cfg.stats = aligned_alloc(64, n_workers * sizeof(struct worker_stats));
	if (!wargs || !origin_cfg.stats) {
		fprintf(stderr, "reflex-origin: out of memory\n");
		return 1;
	}
	memset(origin_cfg.stats, 0, n_workers * sizeof(struct worker_stats));
	origin_cfg.name = name;
	origin_cfg.n_workers = n_workers;
	origin_cfg.ready = &ready;
	pthread_barrier_init(&ready, NULL, n_workers + 1);

	for (unsigned w = 0; w < n_workers; w++) {
		wargs[w].id = w;
		wargs[w].n_listen = n_addrs;
		wargs[w].listen_fds = calloc(n_addrs, sizeof(int));
		if (!wargs[w].listen_fds) {
			fprintf(stderr, "reflex-origin: out of memory\n");
			return 1;
		}
		for (unsigned i = 0; i < n_addrs; i++) {
			int fd = open_listener(&addrs[i]);

			if (fd < 0) {
				addr_text(&addrs[i]);
				fprintf(stderr, "reflex-origin: listen %s: %s\n", addrs[i].text,
					strerror(-fd));
				return 1;
			}
			wargs[w].listen_fds[i] = fd;
		}
	}
	for (unsigned w = 0; w < n_workers; w++) {
		pthread_t t;
		int r = pthread_create(&t, NULL, worker_main, &wargs[w]);

		if (r) {
			fprintf(stderr, "reflex-origin: pthread_create: %s\n", strerror(r));
			return 1;
		}
		pthread_detach(t);
	}
	pthread_barrier_wait(&ready);
	for (unsigned i = 0; i < n_addrs; i++) {
		addr_text(&addrs[i]);
		fprintf(stderr, "reflex-origin %s listening on %s\n", name, addrs[i].text);
	}
	fflush(stderr);

	do {
		if (sigwait(&sigs, &sig) != 0)
			sig = SIGTERM;
		if (sig == SIGUSR1 || sig == SIGUSR2) {
			atomic_store(&origin_slow_ms, sig == SIGUSR1 ? slow_ms : 0);
			fprintf(stderr, "reflex-origin %s: slow %s (%llu ms)\n", name,
				sig == SIGUSR1 ? "on" : "off", (unsigned long long)slow_ms);
		}
	} while (sig != SIGTERM && sig != SIGINT);
	/* Workers hold no state worth flushing: leave without tearing down
	 * rings under their feet. */
	_exit(0);
}
