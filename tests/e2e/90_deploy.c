/* 90_deploy — what `make deb` and `make install` ship (issue 11, docs/deploy.md):
 *   - the package builds, unpacks into a scratch root (dpkg -x) with the
 *     expected files, a conffile for the config, a postinst that creates the
 *     `reflex` user and enables nothing, Depends covering every NEEDED library
 *     of the four binaries (objdump -p, dpkg -S), and no lintian error;
 *   - the installed reflexd accepts the installed example config
 *     (--check-config);
 *   - the unit has the contract (Type=notify, SIGHUP reload, user reflex,
 *     exactly the four ambient capabilities) and `systemd-analyze verify`
 *     passes on it;
 *   - the man pages format without warnings (man -l, mandoc -T lint);
 *   - `make install PREFIX=... DESTDIR=...` rewrites the unit's paths and
 *     never overwrites an edited config;
 *   - the manifests in deploy/k8s parse (libyaml) with the expected kinds and the
 *     edge/in-cluster contracts, and their embedded configs pass --check-config;
 *   - deploy/container/Containerfile: every COPY source exists, every apt
 *     package is a real Debian package (apt-cache show), and the runtime stage
 *     installs every library the package depends on.
 * A missing tool is a SKIP with its name.
 */
#include "lib/harness.h"

#include <dirent.h>
#include <limits.h>
#include <glob.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml.h>

static char scratch[1024]; /* temp dir for everything */
static char root[1100];	   /* the package unpacked */
static char ctrl[1100];	   /* its control files */
static char deb[1024];	   /* the .deb */

static int exit_code(int status)
{
	return status == -1 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Run a shell command; exit code, output in *out (malloc'd) when out. */
static int __attribute__((format(printf, 3, 4)))
sh(unsigned timeout_ms, char **out, const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	char *o = NULL;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	char *argv[] = {"/bin/sh", "-c", cmd, NULL};
	int st = h_run(argv, timeout_ms, &o);
	if (out)
		*out = o ? o : strdup("");
	else
		free(o);
	return exit_code(st);
}

static bool have(const char *tool)
{
	return sh(5000, NULL, "command -v %s >/dev/null 2>&1", tool) == 0;
}

static bool file_has(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	char buf[65536];
	size_t n;

	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, needle) != NULL;
}

/* ---- the package ----------------------------------------------------------- */

static bool build_deb(void)
{
	char *out = NULL;

	test_begin("deb_builds");
	if (!have("dpkg-deb")) {
		test_end();
		return false;
	}
	int rc = sh(600000, &out, "make --no-print-directory -s BUILD=%s deb 2>&1", h_build_dir());
	CHECK_MSG(rc == 0, "make deb: exit %d: %.2000s", rc, out);
	free(out);
	out = NULL;
	sh(5000, &out, "ls -t %s/reflex_*.deb 2>/dev/null | head -1", h_build_dir());
	out[strcspn(out, "\n")] = '\0';
	snprintf(deb, sizeof(deb), "%s", out);
	free(out);
	CHECK_MSG(deb[0], "no %s/reflex_*.deb", h_build_dir());
	if (deb[0]) {
		snprintf(root, sizeof(root), "%s/root", scratch);
		snprintf(ctrl, sizeof(ctrl), "%s/DEBIAN", scratch);
		rc = sh(60000, &out, "dpkg -x '%s' '%s' && dpkg-deb -e '%s' '%s' 2>&1", deb, root,
			deb, ctrl);
		CHECK_MSG(rc == 0, "dpkg -x / -e: %s", out);
		free(out);
	}
	bool ok = !test_failed();
	test_end();
	return ok;
}

static void test_deb_contents(void)
{
	static const char *const files[] = {
		"usr/sbin/reflexd",
		"usr/bin/reflexctl",
		"usr/bin/reflex-bench",
		"usr/bin/reflex-origin",
		"etc/reflex/reflexd.yaml",
		"lib/systemd/system/reflexd.service",
		"usr/share/man/man8/reflexd.8.gz",
		"usr/share/man/man8/reflexctl.8.gz",
		"usr/share/man/man5/reflexd.yaml.5.gz",
		"usr/share/man/man1/reflex-bench.1.gz",
		"usr/share/man/man1/reflex-origin.1.gz",
		"usr/share/doc/reflex/copyright",
		"usr/share/doc/reflex/changelog.Debian.gz",
	};
	char path[2048], *out = NULL;
	struct stat st;

	test_begin("deb_file_list");
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", root, files[i]);
		CHECK_MSG(stat(path, &st) == 0, "missing from the package: /%s", files[i]);
		if (strstr(files[i], "bin/"))
			CHECK_MSG(stat(path, &st) == 0 && (st.st_mode & 0111), "/%s not executable",
				  files[i]);
	}
	/* No BPF object files: the skeletons embed them in reflexd. */
	CHECK(sh(10000, NULL, "find '%s' -name '*.bpf.o' | grep -q .", root) != 0);
	snprintf(path, sizeof(path), "%s/conffiles", ctrl);
	CHECK_MSG(file_has(path, "/etc/reflex/reflexd.yaml"), "the config is not a conffile");
	snprintf(path, sizeof(path), "%s/postinst", ctrl);
	CHECK_MSG(file_has(path, "adduser --system"), "postinst does not create the reflex user");
	CHECK_MSG(sh(5000, NULL, "grep -v '^[[:space:]]*#' '%s' | grep -q enable", path) != 0,
		  "postinst must not enable the unit");
	test_end();

	test_begin("deb_depends_cover_needed_libraries");
	/* Every NEEDED library of every binary, by owning package, must be in Depends. */
	int rc = sh(
		60000, &out,
		"deps=$(dpkg-deb -f '%s' Depends | tr -d ' ' | tr ',' '\\n' | sed 's/(.*//'); "
		"for b in '%s'/usr/sbin/reflexd '%s'/usr/bin/*; do "
		"  objdump -p \"$b\" | awk '/NEEDED/{print $2}'; "
		"done | sort -u | while read -r lib; do "
		"  p=$(ldconfig -p | awk -v l=\"$lib\" '$1==l{print $NF; exit}'); "
		"  [ -n \"$p\" ] || { echo \"unresolved $lib\"; continue; }; "
		"  pkg=$(dpkg -S \"$p\" 2>/dev/null || dpkg -S \"$(readlink -f \"$p\")\" "
		"2>/dev/null "
		"        || dpkg -S \"/usr$p\" 2>/dev/null || dpkg -S \"${p#/usr}\" 2>/dev/null); "
		"  pkg=${pkg%%%%:*}; "
		"  [ -n \"$pkg\" ] || { echo \"no package owns $p\"; continue; }; "
		"  echo \"$deps\" | grep -qx \"$pkg\" || echo \"$lib ($pkg) not in Depends\"; "
		"done",
		deb, root, root);
	CHECK_MSG(rc == 0 && out[0] == '\0', "Depends: %s", out);
	free(out);
	test_end();

	if (!have("lintian")) {
		test_skip("deb_lintian", "lintian is not installed (Debian package lintian)");
		return;
	}
	test_begin("deb_lintian");
	rc = sh(300000, &out, "lintian --no-tag-display-limit '%s' 2>/dev/null", deb);
	CHECK_MSG(!strstr(out, "E: ") && rc == 0, "lintian (exit %d):\n%s", rc, out);
	free(out);
	test_end();
}

static void test_installed_config(void)
{
	char *out = NULL;

	test_begin("installed_check_config");
	int rc = sh(10000, &out,
		    "'%s/usr/sbin/reflexd' --config '%s/etc/reflex/reflexd.yaml' "
		    "--check-config 2>&1",
		    root, root);
	CHECK_MSG(rc == 0 && strstr(out, "is valid"), "exit %d: %s", rc, out);
	free(out);
	test_end();
}

static void test_unit(void)
{
	static const char *const want[] = {
		"Type=notify\n",
		"ExecReload=/bin/kill -HUP $MAINPID\n",
		"ExecStart=/usr/sbin/reflexd --config /etc/reflex/reflexd.yaml\n",
		"User=reflex\n",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_BPF CAP_PERFMON CAP_NET_ADMIN\n",
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_BPF CAP_PERFMON CAP_NET_ADMIN\n",
		"LimitNOFILE=1048576\n",
		"ProtectSystem=strict\n",
		"ProtectHome=yes\n",
		"PrivateTmp=yes\n",
		"NoNewPrivileges=yes\n",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK\n",
		"SystemCallArchitectures=native\n",
		"LockPersonality=yes\n",
		"MemoryDenyWriteExecute=yes\n",
	};
	char unit[2048], *out = NULL;

	test_begin("unit_contract");
	snprintf(unit, sizeof(unit), "%s/lib/systemd/system/reflexd.service", root);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		CHECK_MSG(file_has(unit, want[i]), "the unit lacks \"%.*s\"",
			  (int)strlen(want[i]) - 1, want[i]);
	test_end();

	if (!have("systemd-analyze")) {
		test_skip("unit_verify",
			  "systemd-analyze is not installed (Debian package systemd)");
		return;
	}
	test_begin("unit_verify");
	/* verify wants the binaries and man pages it names: point it at the
	 * unpacked package (a copy of the unit with its paths rewritten). */
	int rc = sh(60000, &out,
		    "mkdir -p '%s/unit' && sed 's|/usr/sbin/reflexd|%s/usr/sbin/reflexd|g' '%s' "
		    ">'%s/unit/reflexd.service' && cd '%s/unit' && "
		    "MANPATH='%s/usr/share/man' systemd-analyze verify ./reflexd.service 2>&1",
		    scratch, root, unit, scratch, scratch, root);
	CHECK_MSG(rc == 0 && out[0] == '\0', "systemd-analyze verify (exit %d):\n%s", rc, out);
	free(out);
	out = NULL;
	/* The exposure score is recorded in docs/deploy.md; here only that it is scored. */
	rc = sh(60000, &out,
		"cd '%s/unit' && systemd-analyze security --offline=yes "
		"./reflexd.service 2>&1 | grep 'Overall exposure level'",
		scratch);
	CHECK_MSG(rc == 0 && strstr(out, "OK"), "systemd-analyze security: %s", out);
	free(out);
	test_end();
}

static void test_man(void)
{
	static const char *const pages[] = {"man8/reflexd.8.gz", "man8/reflexctl.8.gz",
					    "man5/reflexd.yaml.5.gz", "man1/reflex-bench.1.gz",
					    "man1/reflex-origin.1.gz"};
	char *out = NULL;

	if (!have("man")) {
		test_skip("man_pages", "man is not installed (Debian package man-db)");
	} else {
		test_begin("man_pages");
		for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
			int rc = sh(30000, &out,
				    "LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "
				    "'%s/usr/share/man/%s' "
				    "2>&1 >/dev/null",
				    root, pages[i]);
			CHECK_MSG(rc == 0 && out[0] == '\0', "man -l %s (exit %d): %s", pages[i],
				  rc, out);
			free(out);
		}
		test_end();
	}
	if (!have("mandoc")) {
		test_skip("man_pages_lint", "mandoc is not installed (Debian package mandoc)");
		return;
	}
	test_begin("man_pages_lint");
	int rc = sh(30000, &out, "mandoc -T lint -W warning deploy/man/*.[158] 2>&1");
	CHECK_MSG(rc == 0 && out[0] == '\0', "mandoc -T lint (exit %d): %s", rc, out);
	free(out);
	test_end();
}

static void test_make_install(void)
{
	char *out = NULL, dest[1100], path[1300];

	test_begin("make_install_prefix_destdir");
	snprintf(dest, sizeof(dest), "%s/dest", scratch);
	int rc = sh(600000, &out,
		    "make --no-print-directory -s BUILD=%s install PREFIX=/opt/reflex DESTDIR='%s' "
		    "2>&1",
		    h_build_dir(), dest);
	CHECK_MSG(rc == 0, "make install: exit %d: %s", rc, out);
	free(out);
	static const char *const files[] = {"sbin/reflexd",
					    "bin/reflexctl",
					    "bin/reflex-bench",
					    "bin/reflex-origin",
					    "etc/reflex/reflexd.yaml",
					    "share/man/man8/reflexd.8.gz",
					    "share/man/man5/reflexd.yaml.5.gz"};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/opt/reflex/%s", dest, files[i]);
		CHECK_MSG(access(path, F_OK) == 0, "missing /opt/reflex/%s", files[i]);
	}
	snprintf(path, sizeof(path), "%s/opt/reflex/lib/systemd/system/reflexd.service", dest);
	CHECK_MSG(file_has(path, "ExecStart=/opt/reflex/sbin/reflexd --config "
				 "/opt/reflex/etc/reflex/reflexd.yaml\n"),
		  "the installed unit does not name the prefix's paths");
	/* An edited config survives a second install. */
	snprintf(path, sizeof(path), "%s/opt/reflex/etc/reflex/reflexd.yaml", dest);
	FILE *f = fopen(path, "a");
	if (f) {
		fputs("# edited by the admin\n", f);
		fclose(f);
	}
	rc = sh(600000, &out,
		"make --no-print-directory -s BUILD=%s install PREFIX=/opt/reflex DESTDIR='%s' "
		"2>&1",
		h_build_dir(), dest);
	CHECK_MSG(rc == 0, "make install again: exit %d: %s", rc, out);
	free(out);
	CHECK_MSG(file_has(path, "# edited by the admin\n"), "make install overwrote the config");
	test_end();
}

/* ---- Kubernetes manifests -------------------------------------------------- */

static yaml_node_t *get(yaml_document_t *d, yaml_node_t *n, const char *key)
{
	if (!n || n->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(d, p->key);
		if (k && k->type == YAML_SCALAR_NODE && !strcmp((char *)k->data.scalar.value, key))
			return yaml_document_get_node(d, p->value);
	}
	return NULL;
}

/* Follow a dotted path ("spec.template.spec"); a number picks a list item. */
static yaml_node_t *path_get(yaml_document_t *d, yaml_node_t *n, const char *path)
{
	char buf[256], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *t = strtok_r(buf, ".", &save); t && n; t = strtok_r(NULL, ".", &save)) {
		if (n->type == YAML_SEQUENCE_NODE) {
			long i = atol(t);
			yaml_node_item_t *it = n->data.sequence.items.start + i;
			n = it < n->data.sequence.items.top ? yaml_document_get_node(d, *it) : NULL;
		} else {
			n = get(d, n, t);
		}
	}
	return n;
}

static const char *str(yaml_document_t *d, yaml_node_t *n, const char *path)
{
	n = path_get(d, n, path);
	return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static bool seq_has(yaml_document_t *d, yaml_node_t *n, const char *path, const char *value)
{
	n = path_get(d, n, path);
	if (!n || n->type != YAML_SEQUENCE_NODE)
		return false;
	for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
	     it++) {
		yaml_node_t *v = yaml_document_get_node(d, *it);
		if (v && v->type == YAML_SCALAR_NODE &&
		    !strcmp((char *)v->data.scalar.value, value))
			return true;
	}
	return false;
}

static unsigned n_kind[8];
static const char *const kinds[] = {"Namespace", "ConfigMap", "DaemonSet", "Deployment", "Service"};

static void check_configmap(yaml_document_t *d, yaml_node_t *r)
{
	yaml_node_t *data = get(d, r, "data");
	char *out = NULL;

	CHECK_MSG(data && data->type == YAML_MAPPING_NODE, "ConfigMap without data");
	if (!data || data->type != YAML_MAPPING_NODE)
		return;
	for (yaml_node_pair_t *p = data->data.mapping.pairs.start; p < data->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(d, p->key),
			    *v = yaml_document_get_node(d, p->value);
		const char *key = (const char *)k->data.scalar.value;
		char path[1300];

		/* The cluster's Service name does not resolve here: check the rest. */
		snprintf(path, sizeof(path), "%s/%s", scratch, key);
		FILE *f = fopen(path, "w");
		if (!f)
			continue;
		fputs((const char *)v->data.scalar.value, f);
		fclose(f);
		int rc = sh(10000, &out,
			    "sed -i 's/orchestrator\\.reflex\\.svc\\.cluster\\.local/localhost/' "
			    "'%s' && "
			    "'%s' --config '%s' --check-config 2>&1",
			    path, h_reflexd_path(), path);
		CHECK_MSG(rc == 0, "ConfigMap data %s: %s", key, out);
		free(out);
	}
}

static void check_workload(yaml_document_t *d, yaml_node_t *r, bool edge)
{
	yaml_node_t *pod = path_get(d, r, "spec.template.spec");
	yaml_node_t *c = path_get(d, pod, "containers.0");
	const char *host = str(d, pod, "hostNetwork");

	CHECK_MSG(c, "no container");
	/* The annotation keys hold dots: look them up directly, not by path. */
	yaml_node_t *ann = path_get(d, r, "spec.template.metadata.annotations");
	const char *scrape = NULL, *port = NULL;
	if (ann && ann->type == YAML_MAPPING_NODE) {
		yaml_node_t *v = get(d, ann, "prometheus.io/scrape");
		scrape = v && v->type == YAML_SCALAR_NODE ? (const char *)v->data.scalar.value
							  : NULL;
		v = get(d, ann, "prometheus.io/port");
		port = v && v->type == YAML_SCALAR_NODE ? (const char *)v->data.scalar.value : NULL;
	}
	CHECK_MSG(scrape && !strcmp(scrape, "true") && port && !strcmp(port, "9901"),
		  "no Prometheus scrape annotations on the pod template");
	CHECK_STR(str(d, c, "readinessProbe.httpGet.path"), "/readyz");
	CHECK_STR(str(d, c, "livenessProbe.httpGet.path"), "/healthz");
	CHECK_MSG(path_get(d, c, "lifecycle.preStop.exec.command"), "no preStop drain");
	CHECK_MSG(seq_has(d, c, "securityContext.capabilities.drop", "ALL"),
		  "capabilities are not dropped first");
	if (edge) {
		CHECK_MSG(host && !strcmp(host, "true"), "the edge DaemonSet needs hostNetwork");
		static const char *const caps[] = {"NET_BIND_SERVICE", "BPF", "PERFMON",
						   "NET_ADMIN"};
		for (size_t i = 0; i < 4; i++)
			CHECK_MSG(seq_has(d, c, "securityContext.capabilities.add", caps[i]),
				  "the edge DaemonSet lacks CAP_%s", caps[i]);
		bool bpffs = false, btf = false;
		yaml_node_t *vols = path_get(d, pod, "volumes");
		for (int i = 0; vols && i < 16; i++) {
			char p[32];
			snprintf(p, sizeof(p), "%d.hostPath.path", i);
			const char *hp = str(d, vols, p);
			bpffs |= hp && !strcmp(hp, "/sys/fs/bpf");
			btf |= hp && !strcmp(hp, "/sys/kernel/btf");
		}
		CHECK_MSG(bpffs && btf,
			  "the edge DaemonSet must mount /sys/fs/bpf and /sys/kernel/btf");
	} else {
		CHECK_MSG(!host || strcmp(host, "true"),
			  "the in-cluster Deployment needs no host network");
		CHECK_MSG(!path_get(d, c, "securityContext.capabilities.add"),
			  "the in-cluster Deployment adds capabilities");
		const char *nonroot = str(d, pod, "securityContext.runAsNonRoot");
		CHECK_MSG(nonroot && !strcmp(nonroot, "true"),
			  "the Deployment must run as non-root");
	}
}

/* The Service selects the in-cluster Deployment's pods and exposes the admin port. */
static void check_service(yaml_document_t *d, yaml_node_t *r)
{
	yaml_node_t *sel = path_get(d, r, "spec.selector"), *v;

	v = get(d, sel, "app.kubernetes.io/component");
	CHECK_MSG(v && v->type == YAML_SCALAR_NODE &&
			  !strcmp((char *)v->data.scalar.value, "gateway"),
		  "the Service does not select the gateway Deployment");
	bool admin = false;
	for (int i = 0; i < 8; i++) {
		char p[32];
		snprintf(p, sizeof(p), "spec.ports.%d.port", i);
		const char *port = str(d, r, p);
		admin |= port && !strcmp(port, "9901");
	}
	CHECK_MSG(admin, "the Service does not expose the admin port 9901");
}

static void test_manifests(void)
{
	glob_t g;

	test_begin("k8s_manifests");
	memset(n_kind, 0, sizeof(n_kind));
	CHECK(glob("deploy/k8s/*.yaml", 0, NULL, &g) == 0);
	for (size_t i = 0; i < g.gl_pathc; i++) {
		FILE *f = fopen(g.gl_pathv[i], "rb");
		yaml_parser_t p;

		CHECK_MSG(f, "open %s", g.gl_pathv[i]);
		if (!f)
			continue;
		yaml_parser_initialize(&p);
		yaml_parser_set_input_file(&p, f);
		for (int docs = 0; docs < 32; docs++) {
			yaml_document_t d;
			if (!yaml_parser_load(&p, &d)) {
				CHECK_MSG(0, "%s:%zu: %s", g.gl_pathv[i], p.problem_mark.line + 1,
					  p.problem ? p.problem : "YAML error");
				break;
			}
			yaml_node_t *r = yaml_document_get_root_node(&d);
			if (!r) {
				yaml_document_delete(&d);
				break;
			}
			const char *kind = str(&d, r, "kind");
			CHECK_MSG(kind && str(&d, r, "apiVersion") && str(&d, r, "metadata.name"),
				  "%s: a document without apiVersion/kind/metadata.name",
				  g.gl_pathv[i]);
			for (size_t k = 0; kind && k < sizeof(kinds) / sizeof(kinds[0]); k++)
				if (!strcmp(kind, kinds[k]))
					n_kind[k]++;
			if (kind && !strcmp(kind, "ConfigMap"))
				check_configmap(&d, r);
			else if (kind && !strcmp(kind, "DaemonSet"))
				check_workload(&d, r, true);
			else if (kind && !strcmp(kind, "Deployment"))
				check_workload(&d, r, false);
			else if (kind && !strcmp(kind, "Service"))
				check_service(&d, r);
			yaml_document_delete(&d);
		}
		yaml_parser_delete(&p);
		fclose(f);
	}
	globfree(&g);
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
		CHECK_MSG(n_kind[k] >= 1, "no %s in deploy/k8s", kinds[k]);
	test_end();
}

/* ---- the container recipe -------------------------------------------------- */

static void test_containerfile(void)
{
	FILE *f = fopen("deploy/container/Containerfile", "r");
	char line[4096], stmt[16384] = "", *out = NULL;
	char runtime_pkgs[4096] = "", all_pkgs[8192] = "";
	unsigned from = 0, copies = 0;
	bool user_ok = false;

	test_begin("containerfile");
	CHECK_MSG(f, "deploy/container/Containerfile is missing");
	if (!f) {
		test_end();
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		size_t n = strlen(line);
		while (n && (line[n - 1] == '\n' || line[n - 1] == ' '))
			line[--n] = '\0';
		if (line[0] == '#' || (!n && !stmt[0]))
			continue;
		for (char *t = line; *t; t++)
			if (*t == '\t')
				*t = ' ';
		bool cont = n && line[n - 1] == '\\';
		if (cont)
			line[--n] = '\0';
		strncat(stmt, line, sizeof(stmt) - strlen(stmt) - 2);
		strcat(stmt, " ");
		if (cont)
			continue;
		char *s = stmt + strspn(stmt, " \t");
		if (!strncmp(s, "FROM ", 5)) {
			from++;
			CHECK_MSG(strstr(s, "debian:12"), "not Debian 12: %s", s);
		} else if (!strncmp(s, "COPY ", 5) && !strstr(s, "--from=")) {
			/* Every source (all words but the last) exists in the context. */
			char *words[32];
			int nw = 0;
			for (char *t = strtok(s + 5, " \t"); t && nw < 32; t = strtok(NULL, " \t"))
				words[nw++] = t;
			for (int i = 0; i < nw - 1; i++) {
				copies++;
				CHECK_MSG(access(words[i], F_OK) == 0,
					  "COPY source %s does not exist", words[i]);
			}
		} else if (!strncmp(s, "RUN ", 4) && strstr(s, "apt-get install")) {
			char *p = strstr(s, "apt-get install") + strlen("apt-get install");
			char *end = strstr(p, "&&");
			if (end)
				*end = '\0';
			strncat(all_pkgs, p, sizeof(all_pkgs) - strlen(all_pkgs) - 1);
			if (from == 2)
				snprintf(runtime_pkgs, sizeof(runtime_pkgs), " %s ", p);
		} else if (!strncmp(s, "USER ", 5)) {
			user_ok = !strstr(s, "root") && strcmp(s, "USER 0 ");
		}
		stmt[0] = '\0';
	}
	fclose(f);
	CHECK_MSG(from == 2, "expected a two-stage build, found %u FROM", from);
	CHECK_MSG(copies >= 5, "only %u COPY sources", copies);
	CHECK_MSG(user_ok, "the runtime image must run as a non-root USER");
	/* The runtime stage installs every library the package depends on. */
	static const char *const libs[] = {"liburing2",	 "libyaml-0-2",	   "libjemalloc2",
					   "libssl3",	 "libhiredis0.14", "libck0",
					   "libxxhash0", "libhyperscan5",  "libbpf1"};
	for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); i++) {
		char w[64];
		snprintf(w, sizeof(w), " %s ", libs[i]);
		CHECK_MSG(strstr(runtime_pkgs, w), "the runtime stage lacks %s", libs[i]);
	}
	test_end();

	if (!have("apt-cache")) {
		test_skip("containerfile_packages", "apt-cache is not installed");
		return;
	}
	/* without package lists apt-cache knows only what is installed here */
	if (sh(5000, NULL, "ls /var/lib/apt/lists/ 2>/dev/null | grep -q _Packages") != 0) {
		test_skip("containerfile_packages", "no apt package lists (run apt-get update)");
		return;
	}
	test_begin("containerfile_packages");
	int rc = sh(120000, &out,
		    "for p in %s; do case $p in -*) continue;; esac; "
		    "apt-cache show --no-all-versions \"$p\" >/dev/null 2>&1 || echo \"$p\"; done",
		    all_pkgs);
	CHECK_MSG(rc == 0 && out[0] == '\0', "not Debian packages (apt-cache show): %s", out);
	free(out);
	test_end();
}

int main(void)
{
	h_init("90_deploy", 900);
	snprintf(scratch, sizeof(scratch), "%s/test-logs/e2e-90_deploy-XXXXXX", h_build_dir());
	char abs[PATH_MAX];
	if (!mkdtemp(scratch) || !realpath(scratch, abs)) {
		test_skip("deploy", "cannot make a temp dir under %s/test-logs", h_build_dir());
		return test_exit_code();
	}
	snprintf(scratch, sizeof(scratch), "%.1000s", abs); /* the unit wants absolute paths */
	if (!have("dpkg-deb") || !have("objdump")) {
		test_skip("deb", "dpkg-deb or objdump is missing (Debian packages dpkg, binutils)");
	} else if (build_deb()) {
		test_deb_contents();
		test_installed_config();
		test_unit();
		test_man();
	}
	test_make_install();
	test_manifests();
	test_containerfile();
	if (!test_exit_code())
		sh(30000, NULL, "rm -rf '%s'", scratch);
	return test_exit_code();
}
