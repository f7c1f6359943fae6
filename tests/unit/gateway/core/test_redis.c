/* test_redis.c — core/redis: the client on a real loop, against a server in
 * this test that answers with bytes that are not what Redis would send
 * (not RESP, too many values, a reply over max_bulk), and against a real
 * redis-server this test starts on a free port (commands, pipelining,
 * timeouts, the server killed mid-flight, the breaker, reconnecting after
 * a restart). */
#include "core/redis.h"
#include "tests/lib/test.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/loop.h"
#include "core/timer.h"

/* ---- against a real redis-server ------------------------------------------------ */

static const char *redis_bin;
static pid_t redis_pid;
static int redis_port;
static struct loop L;
static unsigned live;
static bool stopping;
static unsigned n_fail_hook;
static int last_fail_err;

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);

	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(fd, (struct sockaddr *)&a, &al)) {
		close(fd);
		return -1;
	}
	close(fd);
	return ntohs(a.sin_port);
}

static bool port_open(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;

	if (fd >= 0)
		close(fd);
	return ok;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static bool redis_start(void)
{
	char port[16];

	snprintf(port, sizeof(port), "%d", redis_port);
	redis_pid = fork();
	if (redis_pid < 0)
		return false;
	if (redis_pid == 0) {
		int nul = open("/dev/null", O_RDWR);
		if (nul >= 0) {
			dup2(nul, 1);
			dup2(nul, 2);
		}
		execl(redis_bin, redis_bin, "--port", port, "--bind", "127.0.0.1", "--save", "",
		      "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
		      "--loglevel", "warning", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) { /* 5 s */
		if (port_open(redis_port))
			return true;
		if (waitpid(redis_pid, NULL, WNOHANG) == redis_pid) {
			redis_pid = 0;
			return false;
		}
		sleep_ms(10);
	}
	return false;
}

static void redis_kill(void)
{
	if (redis_pid > 0) {
		kill(redis_pid, SIGKILL);
		waitpid(redis_pid, NULL, 0);
	}
	redis_pid = 0;
}

/* Run the loop until *flag counts to want, or ms pass. */
static const unsigned *wait_flag;
static unsigned wait_want;
static bool wait_below; /* wait for *flag <= want instead */
static struct timer wait_timer;

static void on_wait_timer(struct timer *t)
{
	L.stop = true;
}

static void before_submit(struct loop *l)
{
	if (wait_flag && (wait_below ? *wait_flag <= wait_want : *wait_flag >= wait_want))
		l->stop = true;
}

static bool run_until(const unsigned *flag, unsigned want, bool below, uint32_t ms)
{
	wait_flag = flag;
	wait_want = want;
	wait_below = below;
	L.stop = false;
	timer_arm(&L.timers, &wait_timer, L.now + ms);
	loop_run(&L);
	timer_disarm(&L.timers, &wait_timer);
	wait_flag = NULL;
	return below ? *flag <= want : *flag >= want;
}

static void run_for(uint32_t ms)
{
	static unsigned never;
	run_until(&never, 1, false, ms);
}

struct res {
	unsigned calls;
	int err;
	enum redis_type type;
	long long integer;
	char str[64];
	size_t len;
};

static unsigned n_done;

static void on_res(void *arg, int err, const struct redis_reply *r)
{
	struct res *x = arg;

	x->calls++;
	x->err = err;
	n_done++;
	if (!r)
		return;
	x->type = r->type;
	x->integer = r->integer;
	x->len = r->len;
	if (r->str)
		memcpy(x->str, r->str, r->len < sizeof(x->str) ? r->len : sizeof(x->str));
}

static void on_fail_hook(void *arg, int err, unsigned fails)
{
	n_fail_hook++;
	last_fail_err = err;
}

static struct redis_client *client(uint32_t idle_ms)
{
	struct redis_opts o = {
		.max_pending = 1000,
		.breaker_fails = 3,
		.breaker_ms = 300,
		.idle_ms = idle_ms,
		.live = &live,
		.stopping = &stopping,
		.on_fail = on_fail_hook,
	};
	struct redis_client *cl = redis_client_new(&L, &o);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)redis_port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

	if (cl)
		redis_client_target(cl, (struct sockaddr *)&a, sizeof(a));
	return cl;
}

static int cmd(struct redis_client *cl, uint32_t tmo, const char *a0, const char *a1,
	       const char *a2, struct res *x)
{
	const char *argv[3] = {a0, a1, a2};
	size_t lens[3] = {strlen(a0), a1 ? strlen(a1) : 0, a2 ? strlen(a2) : 0};

	return redis_command(cl, tmo, a2 ? 3 : a1 ? 2 : 1, argv, lens, x ? on_res : NULL, x, NULL);
}

static void test_commands(void)
{
	struct redis_client *cl = client(5000);
	struct res set = {0}, get = {0}, miss = {0}, bad = {0}, bin = {0};

	CHECK(cl);
	if (!cl)
		return;
	n_done = 0;
	CHECK_INT(cmd(cl, 2000, "SET", "test:k", "v1", &set), 0);
	CHECK_INT(cmd(cl, 2000, "GET", "test:k", NULL, &get), 0);
	CHECK_INT(cmd(cl, 2000, "GET", "test:missing", NULL, &miss), 0);
	CHECK_INT(cmd(cl, 2000, "NOSUCHCOMMAND", NULL, NULL, &bad), 0);
	/* binary safe both ways */
	const char *argv[] = {"SET", "test:bin", "a\r\n\0b"};
	size_t lens[] = {3, 8, 6};
	CHECK_INT(redis_command(cl, 2000, 3, argv, lens, NULL, NULL, NULL), 0);
	CHECK_INT(cmd(cl, 2000, "GET", "test:bin", NULL, &bin), 0);
	CHECK_INT(live, 1);
	CHECK(run_until(&n_done, 5, false, 3000));
	CHECK(set.calls == 1 && set.err == 0 && set.type == REDIS_R_STATUS);
	CHECK(set.len == 2 && !memcmp(set.str, "OK", 2));
	CHECK(get.calls == 1 && get.err == 0 && get.type == REDIS_R_BULK);
	CHECK(get.len == 2 && !memcmp(get.str, "v1", 2));
	CHECK(miss.calls == 1 && miss.err == 0 && miss.type == REDIS_R_NIL);
	CHECK(bad.calls == 1 && bad.err == 0 && bad.type == REDIS_R_ERROR);
	CHECK(bin.calls == 1 && bin.type == REDIS_R_BULK && bin.len == 6 &&
	      !memcmp(bin.str, "a\r\n\0b", 6));
	CHECK_INT(n_fail_hook, 0);
	CHECK_INT(redis_client_pending(cl), 0);
	redis_client_free(cl);
	CHECK(run_until(&live, 0, true, 2000));
}

/* 500 INCRs queued before the loop runs once: answered in order. */
static unsigned incr_next, incr_bad;

static void on_incr(void *arg, int err, const struct redis_reply *r)
{
	if (err || r->type != REDIS_R_INT || r->integer != (long long)++incr_next)
		incr_bad++;
	n_done++;
}

static void test_pipeline(void)
{
	struct redis_client *cl = client(5000);
	const char *del[] = {"DEL", "test:cnt"};
	size_t dl[] = {3, 8};
	const char *inc[] = {"INCR", "test:cnt"};
	size_t il[] = {4, 8};

	CHECK(cl);
	if (!cl)
		return;
	n_done = 0;
	incr_next = incr_bad = 0;
	CHECK_INT(redis_command(cl, 3000, 2, del, dl, NULL, NULL, NULL), 0);
	for (int i = 0; i < 500; i++)
		CHECK_INT(redis_command(cl, 3000, 2, inc, il, on_incr, NULL, NULL), 0);
	CHECK_INT(redis_client_pending(cl), 501);
	CHECK(run_until(&n_done, 500, false, 5000));
	CHECK_INT(incr_next, 500);
	CHECK_INT(incr_bad, 0);

	/* a value of 1 MiB: many sends out, many receives in */
	size_t big = 1u << 20;
	char *v = malloc(big);
	struct res get = {0};
	if (v) {
		for (size_t i = 0; i < big; i++)
			v[i] = (char)(i * 7);
		const char *set[] = {"SET", "test:big", v};
		size_t sl[] = {3, 8, big};
		const char *g[] = {"GET", "test:big"};
		size_t gl[] = {3, 8};
		n_done = 0;
		CHECK_INT(redis_command(cl, 5000, 3, set, sl, NULL, NULL, NULL), 0);
		CHECK_INT(redis_command(cl, 5000, 2, g, gl, on_res, &get, NULL), 0);
		CHECK(run_until(&n_done, 1, false, 5000));
		CHECK(get.err == 0 && get.type == REDIS_R_BULK && get.len == big);
		CHECK(!memcmp(get.str, v, sizeof(get.str)));
		free(v);
	}

	/* cancelled: no callback, and the pipeline stays in order */
	struct res c1 = {0}, c2 = {0};
	const char *g[] = {"GET", "test:k"};
	size_t gl[] = {3, 6};
	struct redis_cmd *h = NULL;
	n_done = 0;
	CHECK_INT(redis_command(cl, 2000, 2, g, gl, on_res, &c1, &h), 0);
	CHECK_INT(cmd(cl, 2000, "ECHO", "after", NULL, &c2), 0);
	redis_cancel(h);
	CHECK(run_until(&n_done, 1, false, 3000));
	CHECK_INT(c1.calls, 0);
	CHECK(c2.calls == 1 && c2.type == REDIS_R_BULK && c2.len == 5 &&
	      !memcmp(c2.str, "after", 5));
	CHECK_INT(n_fail_hook, 0);
	redis_client_free(cl);
	CHECK(run_until(&live, 0, true, 2000));
}

/* The idle close, and the close at once while the owner stops. */
static void test_idle(void)
{
	struct redis_client *cl = client(200);
	struct res x = {0};

	CHECK(cl);
	if (!cl)
		return;
	n_done = 0;
	CHECK_INT(cmd(cl, 2000, "PING", NULL, NULL, &x), 0);
	CHECK(run_until(&n_done, 1, false, 3000));
	CHECK_INT(live, 1);
	CHECK(run_until(&live, 0, true, 3000)); /* after ~200 ms idle */
	CHECK_INT(n_fail_hook, 0);
	/* a new command opens a new connection */
	n_done = 0;
	CHECK_INT(cmd(cl, 2000, "PING", NULL, NULL, &x), 0);
	CHECK(run_until(&n_done, 1, false, 3000));
	CHECK(x.calls == 2 && x.err == 0 && x.type == REDIS_R_STATUS);
	stopping = true;
	n_done = 0;
	CHECK_INT(cmd(cl, 2000, "PING", NULL, NULL, &x), 0);
	CHECK(run_until(&n_done, 1, false, 3000));
	CHECK(run_until(&live, 0, true, 100)); /* at once, not after idle_ms */
	stopping = false;
	CHECK_INT(n_fail_hook, 0);
	redis_client_free(cl);
}

/* A command past its deadline fails the connection, with all the others. */
static void test_timeout(void)
{
	struct redis_client *cl = client(5000);
	struct res blk = {0}, behind = {0}, after = {0};

	CHECK(cl);
	if (!cl)
		return;
	n_done = 0;
	n_fail_hook = 0;
	uint64_t t0 = clock_ms();
	CHECK_INT(cmd(cl, 200, "BLPOP", "test:nolist", "5", &blk), 0);
	CHECK_INT(cmd(cl, 5000, "PING", NULL, NULL, &behind), 0);
	CHECK(run_until(&n_done, 2, false, 3000));
	uint64_t dt = clock_ms() - t0;
	CHECK_INT(blk.err, -ETIMEDOUT);
	CHECK_INT(behind.err, -ETIMEDOUT);
	CHECK_MSG(dt >= 190 && dt < 2000, "timed out after %llu ms", (unsigned long long)dt);
	CHECK_INT(n_fail_hook, 1);
	CHECK_INT(last_fail_err, -ETIMEDOUT);
	CHECK(run_until(&live, 0, true, 2000));
	/* the next command gets a new connection */
	n_done = 0;
	CHECK_INT(cmd(cl, 2000, "PING", NULL, NULL, &after), 0);
	CHECK(run_until(&n_done, 1, false, 3000));
	CHECK(after.err == 0 && after.type == REDIS_R_STATUS);
	/* on a connection that sits idle (idle timer at 5 s), a command's own
	 * deadline still holds */
	struct res late = {0};
	n_done = 0;
	t0 = clock_ms();
	CHECK_INT(cmd(cl, 200, "BLPOP", "test:nolist", "5", &late), 0);
	CHECK(run_until(&n_done, 1, false, 3000));
	dt = clock_ms() - t0;
	CHECK_INT(late.err, -ETIMEDOUT);
	CHECK_MSG(dt >= 190 && dt < 2000, "idle connection: timed out after %llu ms",
		  (unsigned long long)dt);
	CHECK(run_until(&live, 0, true, 2000));
	/* freed with a command in flight: it hears -ECANCELED */
	struct res cancelled = {0};
	CHECK_INT(cmd(cl, 5000, "BLPOP", "test:nolist", "5", &cancelled), 0);
	run_for(50);
	redis_client_free(cl);
	CHECK(cancelled.calls == 1 && cancelled.err == -ECANCELED);
	CHECK(run_until(&live, 0, true, 2000));
}

/* The server dies with commands in flight; the breaker; the restart. */
static void test_server_killed(void)
{
	struct redis_client *cl = client(5000);
	struct res r[4] = {{0}};

	CHECK(cl);
	if (!cl)
		return;
	n_done = 0;
	n_fail_hook = 0;
	CHECK_INT(cmd(cl, 5000, "BLPOP", "test:nolist", "10", &r[0]), 0);
	CHECK_INT(cmd(cl, 5000, "PING", NULL, NULL, &r[1]), 0);
	CHECK_INT(cmd(cl, 5000, "GET", "test:k", NULL, &r[2]), 0);
	run_for(100); /* sent, and the server is blocked on the first */
	CHECK_INT(n_done, 0);
	redis_kill();
	CHECK(run_until(&n_done, 3, false, 3000));
	for (int i = 0; i < 3; i++)
		CHECK_MSG(r[i].calls == 1 && r[i].err < 0, "command %d: %u calls, err %d", i,
			  r[i].calls, r[i].err);
	CHECK_INT(n_fail_hook, 1);
	CHECK(run_until(&live, 0, true, 2000));

	/* nobody listens: each try fails at connect; the third opens the breaker */
	for (int i = 0; i < 2; i++) {
		struct res x = {0};
		n_done = 0;
		CHECK_INT(cmd(cl, 1000, "PING", NULL, NULL, &x), 0);
		CHECK(run_until(&n_done, 1, false, 2000));
		CHECK_MSG(x.err == -ECONNREFUSED, "try %d: err %d", i, x.err);
	}
	CHECK_INT(n_fail_hook, 3);
	CHECK_INT(cmd(cl, 1000, "PING", NULL, NULL, &r[3]), -EAGAIN);
	CHECK_INT(redis_client_ready(cl), -EAGAIN);
	CHECK(run_until(&live, 0, true, 2000));

	/* back up, and the breaker closes after breaker_ms: commands work again */
	CHECK(redis_start());
	run_for(350);
	struct res back = {0};
	n_done = 0;
	CHECK_INT(cmd(cl, 2000, "PING", NULL, NULL, &back), 0);
	CHECK(run_until(&n_done, 1, false, 3000));
	CHECK(back.calls == 1 && back.err == 0 && back.type == REDIS_R_STATUS);
	redis_client_free(cl);
	CHECK(run_until(&live, 0, true, 2000));
	for (int i = 0; i < 3; i++)
		CHECK_INT(r[i].calls, 1);
	CHECK_INT(r[3].calls, 0);
}

/* on_connect queues what goes first on every new connection. */
static int on_connect_ping(void *arg, struct redis_client *cl)
{
	const char *argv[] = {"PING"};
	size_t lens[] = {4};

	/* queued first, on every new connection */
	int rc = redis_command(cl, 2000, 1, argv, lens, on_res, arg, NULL);
	return rc ? rc : 0;
}

static void test_on_connect(void)
{
	struct res first = {0}, mine = {0};
	struct redis_opts o = {
		.max_pending = 10,
		.breaker_fails = 3,
		.breaker_ms = 300,
		.idle_ms = 5000,
		.live = &live,
		.on_connect = on_connect_ping,
		.arg = &first,
	};
	struct redis_client *cl = redis_client_new(&L, &o);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons((uint16_t)redis_port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

	CHECK(cl);
	if (!cl)
		return;
	/* no target yet */
	CHECK_INT(redis_client_ready(cl), -EDESTADDRREQ);
	redis_client_target(cl, (struct sockaddr *)&a, sizeof(a));
	n_done = 0;
	CHECK_INT(cmd(cl, 2000, "ECHO", "mine", NULL, &mine), 0);
	CHECK_INT(redis_client_pending(cl), 2);
	CHECK(run_until(&n_done, 2, false, 3000));
	CHECK(first.calls == 1 && first.type == REDIS_R_STATUS);
	CHECK(mine.calls == 1 && mine.type == REDIS_R_BULK && mine.len == 4);
	redis_client_free(cl);
	CHECK(run_until(&live, 0, true, 2000));
}

/* ---- against a server that does not speak RESP ------------------------------------- */

struct fake {
	int lfd;
	const char *reply;
	size_t len;
};

/* One connection: read the command, send the canned reply, wait for the
 * client to hang up. */
static void *fake_serve(void *arg)
{
	struct fake *f = arg;
	char buf[4096];
	int fd = accept(f->lfd, NULL, NULL);

	if (fd < 0)
		return NULL;
	if (read(fd, buf, sizeof(buf)) > 0)
		for (size_t off = 0; off < f->len;) {
			ssize_t n = write(fd, f->reply + off, f->len - off);
			if (n <= 0)
				break;
			off += (size_t)n;
		}
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	return NULL;
}

/* A PING answered with reply gets err -EPROTO (and the owner hears of the
 * failure); the connection is gone afterwards. */
static void check_refused_reply(const char *what, const char *reply, size_t len)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	struct fake f = {.lfd = socket(AF_INET, SOCK_STREAM, 0), .reply = reply, .len = len};
	struct redis_opts o = {.max_bulk = 4096, .live = &live, .on_fail = on_fail_hook};
	struct redis_client *cl = NULL;
	struct res x = {0};
	pthread_t th;

	if (f.lfd < 0 || bind(f.lfd, (struct sockaddr *)&a, sizeof(a)) || listen(f.lfd, 1) ||
	    getsockname(f.lfd, (struct sockaddr *)&a, &al) ||
	    pthread_create(&th, NULL, fake_serve, &f)) {
		CHECK_MSG(false, "%s: cannot start the fake server", what);
		if (f.lfd >= 0)
			close(f.lfd);
		return;
	}
	cl = redis_client_new(&L, &o);
	CHECK(cl);
	n_done = 0;
	n_fail_hook = 0;
	last_fail_err = 0;
	if (cl) {
		redis_client_target(cl, (struct sockaddr *)&a, sizeof(a));
		CHECK_INT(cmd(cl, 5000, "PING", NULL, NULL, &x), 0);
		CHECK(run_until(&n_done, 1, false, 5000));
		CHECK_MSG(x.calls == 1 && x.err == -EPROTO, "%s: %u calls, err %d", what, x.calls,
			  x.err);
		CHECK_MSG(n_fail_hook == 1 && last_fail_err == -EPROTO, "%s: on_fail %u, err %d",
			  what, n_fail_hook, last_fail_err);
		CHECK(run_until(&live, 0, true, 2000));
		redis_client_free(cl);
	}
	shutdown(f.lfd, SHUT_RDWR); /* an accept still waiting (the connect failed) returns */
	pthread_join(th, NULL);
	close(f.lfd);
	n_fail_hook = 0;
	last_fail_err = 0;
}

static void test_refused_replies(void)
{
	static char many[6 + 300 * 4 + 1], big[80000 + 16];
	size_t n;

	check_refused_reply("unknown type byte", "?what\r\n", strlen("?what\r\n"));
	check_refused_reply("RESP3 map", "%1\r\n+a\r\n+b\r\n", strlen("%1\r\n+a\r\n+b\r\n"));
	check_refused_reply("bulk with a bad length", "$x1\r\nab\r\n", strlen("$x1\r\nab\r\n"));
	n = (size_t)snprintf(many, sizeof(many), "*300\r\n");
	for (int i = 0; i < 300; i++)
		n += (size_t)snprintf(many + n, sizeof(many) - n, ":1\r\n");
	check_refused_reply("300 values (256 at most)", many, n);
	/* never complete: refused once more than max_bulk + REDIS_MAX_LINE is buffered */
	n = (size_t)snprintf(big, sizeof(big), "$1000000\r\n");
	memset(big + n, 'x', 80000);
	check_refused_reply("a reply over max_bulk", big, n + 80000);
}

static const char *find_redis(void)
{
	static char path[512];
	const char *env = getenv("PATH");
	char *dup = strdup(env ? env : "/usr/bin:/usr/local/bin");
	char *save = NULL;

	for (char *d = strtok_r(dup, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		snprintf(path, sizeof(path), "%s/redis-server", d);
		if (access(path, X_OK) == 0) {
			free(dup);
			return path;
		}
	}
	free(dup);
	return NULL;
}

static void live_tests(void)
{
	static const char *const names[] = {"redis_commands",	   "redis_pipeline",
					    "redis_idle",	   "redis_timeout",
					    "redis_server_killed", "redis_on_connect"};
	const char *why = NULL;
	int rc;

	if ((rc = loop_init(&L, 256, 8, 4096)) < 0) {
		test_skip("redis_refuses_what_is_not_resp", "%s", strerror(-rc));
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			test_skip(names[i], "%s", strerror(-rc));
		return;
	}
	L.before_submit = before_submit;
	timer_init(&wait_timer, on_wait_timer);
	test_begin("redis_refuses_what_is_not_resp");
	test_refused_replies();
	test_end();

	redis_bin = find_redis();
	if (!redis_bin)
		why = "redis-server not installed (apt-get install redis-server)";
	else if ((redis_port = free_port()) < 0)
		why = "no free port";
	else if (!redis_start())
		why = "redis-server did not start";
	if (why) {
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			test_skip(names[i], "%s", why);
		loop_fini(&L);
		return;
	}

	test_begin("redis_commands");
	test_commands();
	test_end();
	test_begin("redis_pipeline");
	test_pipeline();
	test_end();
	test_begin("redis_idle");
	test_idle();
	test_end();
	test_begin("redis_timeout");
	test_timeout();
	test_end();
	test_begin("redis_server_killed");
	test_server_killed();
	test_end();
	test_begin("redis_on_connect");
	test_on_connect();
	CHECK_INT(live, 0);
	test_end();

	redis_kill();
	loop_fini(&L);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	live_tests();
	return test_exit_code();
}
