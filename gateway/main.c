/* reflexd — the Reflex gateway daemon.
 *
 * The main thread reads the configuration, starts one worker per core (each
 * with its own ring and listeners), then only waits for signals:
 * SIGTERM/SIGINT drain the workers (stop accepting, finish in-flight
 * requests up to timeouts.drain) and exit 0.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "http/worker.h"

#ifndef REFLEX_VERSION
#define REFLEX_VERSION "0.1.0"
#endif

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	struct config *cfg = NULL;
	enum config_action action;
	char err[1024];

	if (config_from_args(argc, argv, &cfg, &action, err, sizeof(err)) != 0) {
		fprintf(stderr, "reflexd: %s\n", err);
		if (action == CONFIG_CHECK)
			fprintf(stderr, "reflexd: configuration is invalid\n");
		return action == CONFIG_CHECK ? 1 : 2;
	}
	switch (action) {
	case CONFIG_HELP:
		fputs(config_usage(), stdout);
		config_free(cfg);
		return 0;
	case CONFIG_VERSION:
		printf("reflexd %s\n", REFLEX_VERSION);
		config_free(cfg);
		return 0;
	case CONFIG_CHECK:
		printf("reflexd: configuration %s is valid\n", cfg->source[0] ? cfg->source : "(flags)");
		config_free(cfg);
		return 0;
	case CONFIG_RUN:
		break;
	}
	log_set_level(cfg->log_level);
	raise_nofile();

	/* Workers inherit this mask: signals are taken only by sigwait below. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct worker *workers = calloc(cfg->workers, sizeof(*workers));
	if (!workers) {
		fprintf(stderr, "reflexd: out of memory\n");
		return 1;
	}
	unsigned started = 0;
	for (; started < cfg->workers; started++) {
		int rc = worker_start(&workers[started], started, cfg);
		if (rc) {
			log_error("worker %u: %s", started, workers[started].start_msg);
			break;
		}
	}
	if (started < cfg->workers) {
		for (unsigned i = 0; i < started; i++)
			worker_drain(&workers[i]);
		for (unsigned i = 0; i < started; i++)
			worker_join(&workers[i]);
		return 1;
	}
	for (unsigned i = 0; i < cfg->n_listens; i++)
		fprintf(stderr, "reflexd: listening on %s\n", cfg->listens[i].text);
	log_info("reflexd %s: %u workers, %u pools", REFLEX_VERSION, cfg->workers, cfg->n_pools);

	for (;;) {
		int sig = 0;
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			/* Reload arrives with the control plane (issue #3); until
			 * then a SIGHUP must not kill the gateway. */
			log_warn("SIGHUP: configuration reload is not available in this build");
			continue;
		}
		log_info("signal %d: draining (deadline %u ms)", sig, cfg->timeouts.drain);
		break;
	}
	for (unsigned i = 0; i < cfg->workers; i++)
		worker_drain(&workers[i]);
	for (unsigned i = 0; i < cfg->workers; i++)
		worker_join(&workers[i]);
	log_info("drained; exiting");
	free(workers);
	config_free(cfg);
	return 0;
}
