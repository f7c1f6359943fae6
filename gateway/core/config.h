/* config.h — the gateway's configuration as an immutable snapshot.
 *
 * Built once from the command line and the YAML file (--config), validated,
 * with every address resolved, then never changed: a reload builds a new
 * snapshot and swaps a pointer (STYLE.md §9). Components receive these plain
 * structs, never the YAML.
 *
 * Errors name their place: "FILE:LINE: reason" for the file, "--flag: reason"
 * for the command line. Flags override the file. The schema is in
 * docs/config.md.
 */
#ifndef REFLEX_CORE_CONFIG_H
#define REFLEX_CORE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define CFG_NAME_MAX 64
#define CFG_HOST_MAX 256

struct cfg_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[CFG_HOST_MAX + 8]; /* as written: "127.0.0.1:8080", "[::1]:8080", "name:80" */
};

struct cfg_endpoint {
	struct cfg_addr addr; /* resolved at load (first address of the name) */
	unsigned weight;      /* >= 1; default 1 */
};

enum cfg_balance {
	CFG_BALANCE_P2C = 0,     /* power of two choices on in-flight requests (default) */
	CFG_BALANCE_ROUND_ROBIN, /* weighted round robin */
};

struct cfg_pool {
	char name[CFG_NAME_MAX];
	enum cfg_balance balance;
	unsigned keepalive; /* idle connections kept per endpoint per worker; default 64 */
	struct cfg_endpoint *endpoints;
	unsigned n_endpoints;
};

/* A route sends matching requests to a pool. Routes are tried in order; the
 * first whose host and path prefix match wins; requests no route matches go
 * to the pool named "default" (404 when there is none). */
struct cfg_route {
	char host[CFG_HOST_MAX];   /* lower case, no port; "" matches any host;
				      "*.example.com" matches any subdomain */
	char path_prefix[1024];    /* "" or "/" matches any path */
	unsigned pool;             /* index into config.pools */
	unsigned line;             /* where it was defined (for messages) */
	bool access_log;           /* log requests of this route; default true */
};

struct cfg_limits {
	uint32_t request_line; /* bytes; default 8 KiB → 414 */
	uint32_t header_bytes; /* whole head; default 32 KiB → 431 */
	uint32_t header_count; /* default 100 → 431 */
	uint64_t body;         /* request body bytes; default 1 MiB (nginx); 0 = unlimited → 413 */
};

struct cfg_timeouts { /* all in milliseconds */
	uint32_t header;            /* whole request head must arrive: default 10 s → 408 */
	uint32_t body;              /* between body reads: default 60 s → 408 */
	uint32_t keepalive;         /* idle client connection: default 75 s → close */
	uint32_t upstream_connect;  /* default 5 s → 502 */
	uint32_t upstream_response; /* between upstream reads: default 60 s → 504 */
	uint32_t upstream_idle;     /* idle pooled upstream connection: default 60 s */
	uint32_t send;              /* a send to a client/upstream making no progress: default 60 s */
	uint32_t drain;             /* graceful shutdown deadline: default 30 s */
};

/* The admin API (gateway/admin.c, docs/admin.md). */
struct cfg_admin {
	bool enabled;          /* false with "--admin off" / "admin: {listen: off}" */
	struct cfg_addr listen; /* TCP address, or AF_UNIX (text is the path) */
	char token_file[4096]; /* "NAME SECRET" lines; "" = no tokens: mutations get 401 */
	char audit_log[4096];  /* hash-chained audit file; "" = off */
};

struct config {
	char source[4096]; /* the config file path, or "" when from flags only */
	unsigned workers;  /* default: number of online CPUs */

	struct cfg_addr *listens;
	unsigned n_listens;

	struct cfg_pool *pools;
	unsigned n_pools;

	struct cfg_route *routes;
	unsigned n_routes;

	struct cfg_limits limits;
	struct cfg_timeouts timeouts;

	char access_log[4096]; /* "" = off, "-" = stdout, else a file path */
	double access_log_sample; /* 0..1: share of requests logged; default 1 */
	bool access_log_query;    /* keep the query string in "path"; default false */

	struct cfg_admin admin;
	int log_level;         /* 0 error, 1 warn, 2 info (default), 3 debug */
};

enum config_action {
	CONFIG_RUN = 0,
	CONFIG_CHECK,   /* --check-config: validate and exit */
	CONFIG_VERSION, /* --version */
	CONFIG_HELP,    /* --help */
};

/* Build a snapshot from argv: defaults, then --config FILE if given, then
 * the flags (--listen and --upstream are repeatable; given on the command
 * line they replace the file's listen list / default pool). Returns 0 and
 * *out, or -1 with a message "FILE:LINE: reason" or "--flag: reason" in
 * err. *action tells what main should do. */
int config_from_args(int argc, char **argv, struct config **out, enum config_action *action,
		     char *err, size_t errlen);

/* Load a YAML file on top of defaults (used by reload). */
int config_load_file(const char *path, struct config **out, char *err, size_t errlen);

/* The --help text. */
const char *config_usage(void);

/* Index of the pool named `name`, or -1. */
int config_pool_index(const struct config *c, const char *name);

void config_free(struct config *c);

#endif
