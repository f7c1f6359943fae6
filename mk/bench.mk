# make bench (perf/scenarios/bench.sh, docs/bench.md): reflexd beside Debian's nginx,
# HAProxy and Varnish; gnuplot draws the plots.
DEPS_PKGS += haproxy varnish gnuplot-nox

# Installing nginx, haproxy or varnish on Debian starts (and enables) their default
# instances; stop them before measuring so they neither share the CPUs nor the loopback.
.PHONY: bench-services
bench: bench-services
bench-services: deps
	$(Q)perf/scenarios/system-services.sh stop
